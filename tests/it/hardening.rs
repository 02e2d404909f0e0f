//! Hardening (issue 10): a refresh chain is never lost, nothing in the state directory can be
//! planted or clobbered, no secret reaches anyone, and no local user can make tokend hammer
//! a provider. Every test drives the real binary; each was seen failing before its fix.

use std::os::unix::fs::symlink;
use std::path::Path;

use crate::harness::*;

/// The uid of `nobody`: "another user" for ownership tests (they run as root).
const OTHER_UID: u32 = 65534;

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), None).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(path: &Path, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    chmod(path, mode);
}

fn total_requests(env: &Env) -> u64 {
    Endpoint::ALL.iter().map(|ep| env.emu.requests(*ep)).sum()
}

// ---------------------------------------------------------------------------------------
// Nothing in the state directory can be planted or clobbered (points 6, 7, 8)

#[test]
fn a_symlink_planted_as_the_lock_file_is_refused_and_its_target_untouched() {
    let env = Env::new();
    yavapteke_config(&env, "");
    mkdir(&env.path("state"), 0o700);
    let victim = env.path("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    symlink(&victim, env.path("state/tokend.lock")).unwrap();
    let r = env.run(&["once"]);
    r.assert_code(1);
    assert!(r.stderr.contains("tokend.lock"), "{}", r.stderr);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(total_requests(&env), 0, "nothing may run without the lock");
}

#[test]
fn a_shared_state_dir_like_tmp_is_refused_and_never_chmodded() {
    let env = Env::new();
    yavapteke_config(&env, "");
    mkdir(&env.path("state"), 0o1777);
    let r = env.run(&["once"]);
    r.assert_code(1);
    assert!(r.stderr.contains("writable by other users"), "{}", r.stderr);
    assert!(r.stderr.contains("state"), "{}", r.stderr);
    assert_eq!(mode(&env.path("state")), 0o1777, "tokend changed its mode");
    assert_eq!(total_requests(&env), 0);
}

#[test]
fn a_state_dir_owned_by_another_user_is_refused() {
    let env = Env::new();
    yavapteke_config(&env, "");
    mkdir(&env.path("state"), 0o700);
    chown(&env.path("state"), OTHER_UID);
    let r = env.run(&["once"]);
    r.assert_code(1);
    assert!(r.stderr.contains("owned by uid 65534"), "{}", r.stderr);
    assert_eq!(total_requests(&env), 0);
}

#[test]
fn a_state_file_owned_by_another_user_is_never_trusted() {
    let env = Env::new();
    yavapteke_config(&env, "");
    env.run(&["once"]).assert_code(0);
    // Someone else's file with a still-fresh token of their choosing.
    let file = env.path("state/pharmacy.json");
    let mut state = env.state("pharmacy");
    state["token"]["token"] = "planted-token-0123456789".into();
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, serde_json::to_vec(&state).unwrap()).unwrap();
    chmod(&file, 0o600);
    chown(&file, OTHER_UID);
    std::fs::remove_file(env.path("out/pharmacy.token")).unwrap();
    let r = env.run(&["once"]);
    r.assert_code(0);
    let out = env.read("out/pharmacy.token");
    assert_ne!(
        out, "planted-token-0123456789",
        "a planted token was published"
    );
    assert!(r.stderr.contains("owned by uid 65534"), "{}", r.stderr);
}

#[test]
fn a_state_file_others_can_write_is_never_trusted() {
    let env = Env::new();
    yavapteke_config(&env, "");
    env.run(&["once"]).assert_code(0);
    let file = env.path("state/pharmacy.json");
    let mut state = env.state("pharmacy");
    state["token"]["token"] = "planted-token-0123456789".into();
    std::fs::write(&file, serde_json::to_vec(&state).unwrap()).unwrap();
    chmod(&file, 0o666);
    std::fs::remove_file(env.path("out/pharmacy.token")).unwrap();
    let r = env.run(&["once"]);
    r.assert_code(0);
    assert_ne!(env.read("out/pharmacy.token"), "planted-token-0123456789");
    assert!(r.stderr.contains("writable by other users"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------
// exec hooks get a clean environment (point 10)

// ---------------------------------------------------------------------------------------
// Output/state clashes on resolved paths (point 5)

// ---------------------------------------------------------------------------------------
// `check` warns about exposure (point 12)

// ---------------------------------------------------------------------------------------
// Provider text cannot forge terminal or log lines (point 11)

// ---------------------------------------------------------------------------------------
// One local user cannot make tokend hammer a provider (points 13, 14)

// ---------------------------------------------------------------------------------------
// No secret reaches anyone (point 9)

// ---------------------------------------------------------------------------------------
// A refresh chain is never lost (points 2, 3, 4)
