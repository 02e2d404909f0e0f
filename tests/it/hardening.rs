//! Hardening (issue 10): a refresh chain is never lost, nothing in the state directory can be
//! planted or clobbered, no secret reaches anyone, and no local user can make tokend hammer
//! a provider. Every test drives the real binary; each was seen failing before its fix.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

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
    assert_eq!(env.total_requests(), 0, "nothing may run without the lock");
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
    assert_eq!(env.total_requests(), 0);
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
    assert_eq!(env.total_requests(), 0);
}

#[test]
fn a_state_file_owned_by_another_user_is_never_trusted() {
    let env = Env::new();
    yavapteke_config(&env, "");
    env.run(&["once"]).assert_code(0);
    // Someone else's file with a still-fresh token of their choosing.
    let file = env.state_file("pharmacy");
    let mut state = env.state("pharmacy").0;
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
    let file = env.state_file("pharmacy");
    let mut state = env.state("pharmacy").0;
    state["token"]["token"] = "planted-token-0123456789".into();
    std::fs::write(&file, serde_json::to_vec(&state).unwrap()).unwrap();
    chmod(&file, 0o666);
    std::fs::remove_file(env.path("out/pharmacy.token")).unwrap();
    let r = env.run(&["once"]);
    r.assert_code(0);
    assert_ne!(env.read("out/pharmacy.token"), "planted-token-0123456789");
    assert!(r.stderr.contains("writable by other users"), "{}", r.stderr);
}

/// A process to be signalled (or, rightly, not): `sleep 30`, reaped on drop.
struct Target(std::process::Child);

impl Target {
    fn start() -> Target {
        Target(Command::new("sleep").arg("30").spawn().unwrap())
    }
    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal_hook_env(pid_dir_mode: u32, pid_owner: Option<u32>) -> (Env, Target, PathBuf) {
    let env = Env::new();
    let target = Target::start();
    let dir = env.path("run");
    mkdir(&dir, pid_dir_mode);
    let pid_file = dir.join("app.pid");
    std::fs::write(&pid_file, format!("{}\n", target.0.id())).unwrap();
    if let Some(uid) = pid_owner {
        chown(&pid_file, uid);
    }
    yavapteke_config(
        &env,
        "    on_refresh:\n      - signal: TERM\n        pid_file: \"{dir}/run/app.pid\"\n",
    );
    (env, target, pid_file)
}

#[test]
fn a_signal_hook_refuses_a_pid_file_owned_by_another_user() {
    let (env, mut target, _) = signal_hook_env(0o755, Some(OTHER_UID));
    let r = env.run(&["once"]);
    r.assert_code(0);
    assert!(target.alive(), "tokend signalled a pid another user chose");
    assert!(r.stderr.contains("owned by uid 65534"), "{}", r.stderr);
}

#[test]
fn a_signal_hook_refuses_a_pid_file_in_a_directory_others_can_write() {
    let (env, mut target, _) = signal_hook_env(0o1777, None);
    let r = env.run(&["once"]);
    r.assert_code(0);
    assert!(
        target.alive(),
        "tokend trusted a pid file in a shared directory"
    );
    assert!(r.stderr.contains("writable by other users"), "{}", r.stderr);
}

#[test]
fn a_signal_hook_still_signals_a_pid_file_it_may_trust() {
    let (env, mut target, _) = signal_hook_env(0o755, None);
    env.run(&["once"]).assert_code(0);
    assert!(
        wait_for(Duration::from_secs(5), || !target.alive()),
        "the hook did not signal its target"
    );
}

// ---------------------------------------------------------------------------------------
// exec hooks get a clean environment (point 10)

fn exec_hook_env(hook_extra: &str) -> Env {
    let env = Env::new();
    env.secret("yav", "yav-secret\n");
    env.config(&format!(
        r#"credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {{url}}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: {{ env: YAV_SECRET }}
    outputs:
      - file: {{dir}}/out/pharmacy.token
    on_refresh:
      - exec: ["/bin/sh", "-c", "env > {{dir}}/hook.env"]
{hook_extra}"#
    ));
    env
}

fn run_with_env(env: &Env) -> Run {
    Run::from(
        env.tokend(&["once"])
            .env("YAV_SECRET", "yav-secret")
            .env("UNRELATED_SECRET", "do-not-pass-0123")
            .env("HOOK_WANTS_THIS", "passed-on")
            .env("LANG", "C.UTF-8")
            .output()
            .unwrap(),
    )
}

#[test]
fn an_exec_hook_does_not_inherit_secrets_from_the_environment() {
    let env = exec_hook_env("");
    run_with_env(&env).assert_code(0);
    let seen = env.read("hook.env");
    assert!(seen.contains("TOKEND_CREDENTIAL=pharmacy"), "{seen}");
    assert!(seen.contains("PATH="), "{seen}");
    assert!(seen.contains("LANG=C.UTF-8"), "{seen}");
    assert!(
        !seen.contains("yav-secret"),
        "the hook saw a secret:\n{seen}"
    );
    assert!(!seen.contains("do-not-pass-0123"), "{seen}");
    assert!(!seen.contains("HOOK_WANTS_THIS"), "{seen}");
}

#[test]
fn an_exec_hook_gets_the_variables_its_config_lists() {
    let env = exec_hook_env("        env: [HOOK_WANTS_THIS, NOT_SET_ANYWHERE]\n");
    run_with_env(&env).assert_code(0);
    let seen = env.read("hook.env");
    assert!(seen.contains("HOOK_WANTS_THIS=passed-on"), "{seen}");
    assert!(!seen.contains("NOT_SET_ANYWHERE"), "{seen}");
    assert!(!seen.contains("do-not-pass-0123"), "{seen}");
}

#[test]
fn an_exec_hook_env_list_is_validated() {
    let env = exec_hook_env("        env: [\"BAD NAME\"]\n");
    let r = env.run(&["check"]);
    r.assert_code(2);
    assert!(r.stderr.contains("BAD NAME"), "{}", r.stderr);
    assert!(r.stderr.contains("env"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------
// Output/state clashes on resolved paths (point 5)

#[test]
fn an_output_reaching_the_state_dir_through_a_symlink_is_a_config_error() {
    let env = Env::new();
    mkdir(&env.path("state"), 0o700);
    symlink(env.path("state"), env.path("link")).unwrap();
    env.secret("yav", "yav-secret\n");
    env.config(
        r#"credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: { file: "{dir}/secrets/yav" }
    outputs:
      - file: "{dir}/link/pharmacy.json"
"#,
    );
    let r = env.run(&["check"]);
    r.assert_code(2);
    assert!(r.stderr.contains("inside state_dir"), "{}", r.stderr);
    assert!(r.stderr.contains("link/pharmacy.json"), "{}", r.stderr);
    let r = env.run(&["once"]);
    r.assert_code(2);
    assert_eq!(env.total_requests(), 0);
}

#[test]
fn two_outputs_meeting_through_a_symlinked_directory_clash() {
    let env = Env::new();
    mkdir(&env.path("real"), 0o755);
    symlink(env.path("real"), env.path("alias")).unwrap();
    env.secret("yav", "yav-secret\n");
    env.config(
        r#"credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: { file: "{dir}/secrets/yav" }
    outputs:
      - file: "{dir}/real/t"
      - file: "{dir}/alias/t"
"#,
    );
    let r = env.run(&["check"]);
    r.assert_code(2);
    assert!(r.stderr.contains("collides"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------
// `check` warns about exposure (point 12)

fn exposure_config(env: &Env, listen: &str) {
    env.secret("yav", "yav-secret\n");
    env.config(&format!(
        r#"listen: {listen}
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {{url}}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: {{ file: "{{dir}}/secrets/yav" }}
    outputs:
      - file: "{{dir}}/out/pharmacy.token"
"#
    ));
}

#[test]
fn check_warns_about_exposure() {
    let env = Env::new();
    exposure_config(&env, "0.0.0.0:9464");
    chmod(&env.path("secrets/yav"), 0o644);
    mkdir(&env.path("out"), 0o777);
    let r = env.run(&["check"]);
    r.assert_code(0);
    let err = &r.stderr;
    assert!(
        err.contains("warning: `listen` (0.0.0.0:9464) is not a loopback address"),
        "{err}"
    );
    assert!(
        err.contains("secret file")
            && err.contains("secrets/yav")
            && err.contains("readable by other users"),
        "{err}"
    );
    assert!(
        err.contains("output directory")
            && err.contains("/out")
            && err.contains("writable by other users"),
        "{err}"
    );
}

#[test]
fn check_is_quiet_about_a_private_setup() {
    let env = Env::new();
    exposure_config(&env, "127.0.0.1:9464");
    chmod(&env.path("secrets/yav"), 0o600);
    mkdir(&env.path("out"), 0o755);
    let r = env.run(&["check"]);
    r.assert_code(0);
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------
// Provider text cannot forge terminal or log lines (point 11)

#[test]
fn control_characters_from_a_provider_are_escaped_in_once_and_status() {
    let env = Env::new();
    yavapteke_config(&env, "");
    env.emu.set_sticky_fault(
        Endpoint::Yavapteke,
        Some(Fault::Status {
            code: 400,
            body: Some(
                r#"{"error":"invalid_client\u001b[2J\r\nINFO forged: all good\u0007"}"#.into(),
            ),
            retry_after: None,
        }),
    );
    let r = env.run(&["once"]);
    r.assert_code(1);
    let status = env.run(&["status"]);
    for (what, text) in [("once", &r.stderr), ("status", &status.stdout)] {
        assert!(text.contains("invalid_client"), "{what}: {text}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{what} printed a control character: {text:?}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with("INFO forged")),
            "{what} let the provider forge a line: {text}"
        );
        assert!(
            text.contains(r"\u001b[2J\r\nINFO forged"),
            "{what}: {text:?}"
        );
    }
    let json = env.run(&["status", "--json"]);
    assert!(!json.stdout.contains('\u{1b}'), "{}", json.stdout);
}

// ---------------------------------------------------------------------------------------
// One local user cannot make tokend hammer a provider (points 13, 14)

#[test]
fn a_trigger_never_retries_a_permanent_error_sooner_than_retry_permanent() {
    let env = Env::new();
    let port = free_port();
    env.secret("yav", "wrong-secret\n");
    env.config(&format!(
        r#"listen: 127.0.0.1:{port}
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {{url}}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: {{ file: "{{dir}}/secrets/yav" }}
    retry: {{ initial: 100ms, max: 300ms, permanent: 30m }}
    outputs:
      - file: "{{dir}}/out/pharmacy.token"
"#
    ));
    let d = env.daemon();
    // The daemon's live view (what the trigger consults), not the state file, which is
    // written a moment before the view is updated.
    assert!(
        wait_for(Duration::from_secs(10), || http(port, "GET", "/v1/status")
            .1
            .contains("\"failures\":1")),
        "no failure recorded:\n{}",
        d.log()
    );
    let (code, body) = http(port, "POST", "/v1/credentials/pharmacy/refresh");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("rejected the credentials"), "{body}");
    assert!(body.contains("retry_at"), "{body}");
    assert!(body.contains("retry.permanent"), "{body}");
    // A window in which a request must NOT happen.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.emu.requests(Endpoint::Yavapteke), 1, "{}", d.log());
}

#[test]
fn a_tiny_lifetime_does_not_make_a_hot_loop() {
    let env = Env::new();
    yavapteke_config(&env, "");
    env.emu.set_sticky_fault(
        Endpoint::Yavapteke,
        Some(Fault::Status {
            code: 200,
            body: Some(
                r#"{"access_token":"tiny-token-0123456789","token_type":"Bearer","expires_in":0.01}"#
                    .into(),
            ),
            retry_after: None,
        }),
    );
    let d = env.daemon();
    assert!(wait_for(Duration::from_secs(5), || env
        .emu
        .requests(Endpoint::Yavapteke)
        >= 1));
    let start = env.emu.requests(Endpoint::Yavapteke);
    let t0 = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let n = env.emu.requests(Endpoint::Yavapteke) - start;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("{n} requests in {secs:.1} s");
    // A floor of 1 s between refreshes: at most one per second (plus one at an edge).
    assert!(
        (n as f64) <= secs + 1.0,
        "{n} requests in {secs:.1} s:\n{}",
        d.log()
    );
    assert!(n >= 1, "the credential stopped refreshing:\n{}", d.log());
    let log = d.log();
    assert!(
        log.contains("expires_in"),
        "the warning names no cause:\n{log}"
    );
    assert_eq!(
        log.matches("no more often than every 1s").count(),
        1,
        "the warning is said once, not at every refresh:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// No secret reaches anyone (point 9)

const SECRET: &str = r#"Zq9Xk2Lm/p+q r&"w\z%"#;

#[test]
fn a_secret_echoed_in_any_encoding_or_across_the_cut_never_leaks() {
    let env = Env::with(EmulatorConfig {
        oauth2_client_secret: SECRET.into(),
        ..EmulatorConfig::default()
    });
    let port = free_port();
    env.secret("idp", SECRET);
    env.config(&format!(
        r#"listen: 127.0.0.1:{port}
credentials:
  - name: any-idp
    provider: oauth2
    token_url: {{url}}/oauth2/token
    client_id: tokend
    client_secret: {{ file: "{{dir}}/secrets/idp" }}
    auth: client_secret_basic
    retry: {{ initial: 100ms, max: 200ms, permanent: 300ms }}
    outputs:
      - file: "{{dir}}/out/idp.token"
"#
    ));
    env.run(&["once"]).assert_code(0);
    assert_eq!(
        env.emu.last_oauth2_auth().as_deref(),
        Some("client_secret_basic")
    );
    // Start over so that the daemon asks the provider at once.
    std::fs::remove_file(env.state_file("any-idp")).unwrap();
    let form: String = form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
    // RFC 6749 §2.3.1: the Basic pair is form-encoded, then Base64-encoded.
    let basic = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("tokend:{form}"))
    };
    let json = serde_json::to_string(SECRET).unwrap();
    let json = json.trim_matches('"').to_owned();
    let echoes = serde_json::json!({
        "error": "invalid_client",
        "error_description": format!(
            "form client_secret={form}; body {{\"client_secret\":\"{json}\"}}; header Basic {basic}"
        ),
    })
    .to_string();
    let straddle = format!("{}{SECRET}", "x".repeat(190));
    let fault = |body: String| Fault::Status {
        code: 400,
        body: Some(body),
        retry_after: None,
    };
    env.emu.push_fault(Endpoint::OAuth2, fault(echoes), 1);
    env.emu
        .set_sticky_fault(Endpoint::OAuth2, Some(fault(straddle)));
    let d = env.daemon();
    assert!(
        wait_for(Duration::from_secs(10), || env
            .emu
            .requests(Endpoint::OAuth2)
            >= 4),
        "{}",
        d.log()
    );
    assert!(wait_for(Duration::from_secs(5), || http(
        port, "GET", "/readyz"
    )
    .0 != 0));
    let mut seen = vec![
        ("log", d.log()),
        ("state", env.state("any-idp").raw()),
        ("status", env.run(&["status"]).all()),
        ("status --json", env.run(&["status", "--json"]).all()),
        ("/v1/status", http(port, "GET", "/v1/status").1),
        ("/readyz", http(port, "GET", "/readyz").1),
    ];
    drop(d);
    let once = env.run(&["once", "--force"]);
    seen.push(("once", once.all()));
    assert!(seen[0].1.contains("invalid_client"), "{}", seen[0].1);
    assert!(seen[0].1.contains("xxxxx"), "{}", seen[0].1);
    for (what, text) in &seen {
        for canary in [SECRET, "Zq9Xk2", &form, &json, &basic] {
            assert!(!text.contains(canary), "{what} shows `{canary}`:\n{text}");
        }
    }
}

#[test]
fn the_warning_for_a_rejected_refresh_is_redacted() {
    let env = Env::new();
    vandar_config(&env, true, "");
    env.emu.push_fault(
        Endpoint::VandarRefresh,
        Fault::Status {
            code: 401,
            body: Some(
                r#"{"message":"refresh_token def502seed is revoked; password vandar-pass"}"#.into(),
            ),
            retry_after: None,
        },
        1,
    );
    let r = env.run(&["once"]);
    r.assert_code(0);
    assert!(r.stderr.contains("is revoked"), "{}", r.stderr);
    assert!(!r.stderr.contains("def502seed"), "{}", r.stderr);
    assert!(!r.stderr.contains("vandar-pass"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------
// A refresh chain is never lost (points 2, 3, 4)

#[test]
fn sigterm_during_a_rotation_in_once_keeps_the_rotated_token() {
    let env = Env::new();
    vandar_config(&env, false, "");
    env.emu
        .push_fault(Endpoint::VandarRefresh, Fault::Delay { ms: 1500 }, 1);
    let mut once = env.daemon_with(&mut env.tokend(&["once"]));
    assert!(wait_for(Duration::from_secs(5), || env
        .emu
        .requests(Endpoint::VandarRefresh)
        >= 1));
    once.signal(nix::sys::signal::Signal::SIGTERM);
    let code = once.wait_exit(Duration::from_secs(15));
    assert!(code.is_some(), "once did not stop:\n{}", once.log());
    let rotated = env.state("vandar-main").refresh_token();
    assert!(
        rotated.as_deref().is_some_and(|t| t != "def502seed"),
        "the rotated refresh token was not saved (exit {code:?}):\n{}",
        once.log()
    );
    assert!(once.log().contains("SIGTERM"), "{}", once.log());
    // The chain goes on from the saved token; nothing is sent twice.
    env.run(&["once", "--force"]).assert_code(0);
    assert_eq!(env.emu.reused_refresh_tokens(), 0);
}

/// Fills the filesystem holding `dir` until it refuses another byte.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = [0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    path
}

/// A tmpfs mounted for one test (as tests/it/faults.rs does), unmounted on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn tmpfs(path: &Path, size: &str) -> Option<Mounted> {
    std::fs::create_dir_all(path).unwrap();
    let ok = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mounted(path.to_path_buf()))
}

#[test]
fn once_with_a_full_state_filesystem_keeps_the_rotated_token_until_it_is_saved() {
    let env = Env::new();
    let config = vandar_config(&env, false, "");
    // Room for the held answer below.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("timeout: 2s", "timeout: 10s")).unwrap();
    let Some(_fs) = tmpfs(&env.path("state"), "64k") else {
        panic!("this test needs `mount -t tmpfs`: run the tests as root, as CI does");
    };
    // The disk is filled while the rotation is in flight: the answer is held 3 s, far more
    // than filling 64 KiB takes even on a loaded machine.
    env.emu
        .push_fault(Endpoint::VandarRefresh, Fault::Delay { ms: 3000 }, 1);
    let mut once = env.daemon_with(&mut env.tokend(&["once"]));
    assert!(wait_for(Duration::from_secs(5), || env
        .emu
        .requests(Endpoint::VandarRefresh)
        >= 1));
    let filler = fill(&env.path("state"));
    assert!(
        wait_for(Duration::from_secs(10), || once
            .log()
            .contains("cannot write state file")),
        "{}",
        once.log()
    );
    assert!(once.is_running(), "once gave up:\n{}", once.log());
    std::fs::remove_file(filler).unwrap();
    let code = once.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{}", once.log());
    assert!(
        env.state("vandar-main")
            .refresh_token()
            .is_some_and(|t| t != "def502seed"),
        "{}",
        once.log()
    );
    env.run(&["once", "--force"]).assert_code(0);
    assert_eq!(env.emu.reused_refresh_tokens(), 0);
}

#[test]
fn renaming_a_credential_never_resends_its_spent_seed() {
    let env = Env::new();
    let config = vandar_config(&env, false, "");
    env.run(&["once"]).assert_code(0);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("vandar-main", "vandar-renamed")).unwrap();
    let r = env.run(&["once"]);
    assert_eq!(env.emu.reused_refresh_tokens(), 0, "{}", r.stderr);
    assert_eq!(env.emu.requests(Endpoint::VandarRefresh), 1, "{}", r.stderr);
    r.assert_code(1);
    assert!(r.stderr.contains("vandar-main"), "{}", r.stderr);
    assert!(r.stderr.contains("already used"), "{}", r.stderr);
    let status = env.run(&["status"]);
    assert!(
        status.all().contains("vandar-main.json")
            && status.all().contains("no configured credential"),
        "{}",
        status.all()
    );
    let check = env.run(&["check"]);
    assert!(
        check.stderr.contains("vandar-main.json"),
        "{}",
        check.stderr
    );
}

#[test]
fn a_renamed_credential_with_a_login_logs_in_instead_of_resending_the_seed() {
    let env = Env::new();
    let config = vandar_config(&env, true, "");
    env.run(&["once"]).assert_code(0);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("vandar-main", "vandar-renamed")).unwrap();
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.emu.reused_refresh_tokens(), 0);
    assert_eq!(env.emu.requests(Endpoint::VandarLogin), 1);
}
