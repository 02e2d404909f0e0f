//! The state directory seen from outside: private modes, the single-instance lock, recovery
//! from a corrupted file, reuse of a fresh token across runs, and discarding a token when
//! the credential's identity changes.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn oauth2_config(env: &Env, token_url: &str, scope: &str) {
    env.secret("idp", "oauth-secret\n");
    env.config(&format!(
        "credentials:
  - name: idp
    provider: oauth2
    token_url: {token_url}
    client_id: tokend
    client_secret: {{ file: {{dir}}/secrets/idp }}
    scope: \"{scope}\"
    timeout: 2s
    outputs:
      - file: {{dir}}/out/idp.token
      - dir: {{dir}}/out/idp
"
    ));
}

#[test]
fn state_dir_is_0700_and_state_file_0600_even_under_umask_000() {
    let env = Env::new();
    yavapteke_config(&env, "");
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(BIN)
        .arg("--config")
        .arg(env.path("config.yaml"))
        .arg("once")
        .env_remove("RUST_LOG")
        .env_remove("STATE_DIRECTORY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    Run::from(out).assert_code(0);
    assert_eq!(mode(&env.path("state")), 0o700);
    assert_eq!(mode(&env.state_file("pharmacy")), 0o600);
    let state = env.state("pharmacy");
    assert_eq!(
        state["token"]["token"].as_str(),
        env.emu.issued_tokens().last().map(String::as_str),
        "{state}"
    );
}

#[test]
fn a_stale_lock_file_does_not_block() {
    let env = Env::new();
    yavapteke_config(&env, "");
    std::fs::create_dir_all(env.path("state")).unwrap();
    std::fs::write(env.path("state/tokend.lock"), "999999\n").unwrap();
    env.run(&["once"]).assert_code(0);
}

#[test]
fn two_onces_on_one_state_dir_the_second_names_the_lock() {
    let env = Env::new();
    yavapteke_config(&env, "");
    env.emu
        .push_fault(Endpoint::Yavapteke, Fault::Delay { ms: 1500 }, 1);
    let spawn = || {
        env.tokend(&["once"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn();
    // The first holds the lock from before its request until it exits.
    assert!(wait_for(Duration::from_secs(10), || env
        .emu
        .requests(Endpoint::Yavapteke)
        == 1));
    let second = Run::from(spawn().wait_with_output().unwrap());
    let first = Run::from(first.wait_with_output().unwrap());
    first.assert_code(0);
    second.assert_code(1);
    assert!(
        second.stderr.contains("tokend.lock"),
        "the lock file is not named:\n{}",
        second.stderr
    );
    assert_eq!(
        env.emu.requests(Endpoint::Yavapteke),
        1,
        "the locked-out run asked the provider"
    );
    assert_eq!(
        env.read("out/pharmacy.token"),
        env.emu.issued_tokens().last().cloned().unwrap()
    );
}

#[test]
fn a_corrupted_state_file_is_quarantined_and_once_still_succeeds() {
    let env = Env::new();
    yavapteke_config(&env, "");
    env.run(&["once"]).assert_code(0);
    let garbage = "{\"version\": 1, \"credential\": \"pharm\u{0}";
    std::fs::write(env.state_file("pharmacy"), garbage).unwrap();

    let r = env.run(&["once"]);
    r.assert_code(0);
    assert!(
        r.stderr.contains("WARN") && r.stderr.contains("pharmacy.json.corrupt-"),
        "no warning naming where the state went:\n{}",
        r.stderr
    );
    let quarantined: Vec<_> = std::fs::read_dir(env.path("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pharmacy.json.corrupt-"))
        .collect();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(env.read(&format!("state/{}", quarantined[0])), garbage);

    let token = env.read("out/pharmacy.token");
    assert_eq!(env.emu.issued_tokens().last(), Some(&token));
    assert_eq!(env.state("pharmacy")["token"]["token"], token.as_str());
}

#[test]
fn a_fresh_token_in_state_is_reused_and_restored_to_outputs() {
    let env = Env::new();
    oauth2_config(&env, "{url}/oauth2/token", "read");
    env.run(&["once"]).assert_code(0);
    let token = env.read("out/idp.token");
    assert_eq!(env.total_requests(), 1);

    // Deleted outputs come back from state, without asking the provider.
    std::fs::remove_file(env.path("out/idp.token")).unwrap();
    std::fs::remove_dir_all(env.path("out/idp")).unwrap();
    let r = env.run(&["once"]);
    r.assert_code(0);
    assert_eq!(env.total_requests(), 1, "{}", r.stderr);
    assert_eq!(env.read("out/idp.token"), token);
    assert_eq!(env.read("out/idp/token"), token);

    // So does an output someone overwrote.
    std::fs::write(env.path("out/idp.token"), "stale").unwrap();
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.total_requests(), 1);
    assert_eq!(env.read("out/idp.token"), token);
    assert_eq!(mode(&env.path("out/idp.token")), 0o600);

    // An output added to the config gets the stored token too.
    let config = env.read("config.yaml")
        + "      - file: {dir}/out/added.env\n        format: env\n"
            .replace("{dir}", &env.dir.path().display().to_string())
            .as_str();
    std::fs::write(env.path("config.yaml"), config).unwrap();
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.total_requests(), 1);
    assert!(
        env.read("out/added.env")
            .starts_with(&format!("IDP_TOKEN={token}\n")),
        "{}",
        env.read("out/added.env")
    );
}

#[test]
fn a_scope_change_discards_the_stored_token() {
    let env = Env::new();
    oauth2_config(&env, "{url}/oauth2/token", "read");
    env.run(&["once"]).assert_code(0);
    let first = env.read("out/idp.token");

    oauth2_config(&env, "{url}/oauth2/token", "read write");
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.emu.requests(Endpoint::OAuth2), 2);
    assert_eq!(env.emu.last_oauth2_scope().as_deref(), Some("read write"));
    let second = env.read("out/idp.token");
    assert_ne!(second, first);
    assert_eq!(env.emu.issued_tokens().last(), Some(&second));

    // Unchanged from here on: reused.
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.emu.requests(Endpoint::OAuth2), 2);
}

#[test]
fn a_token_url_change_discards_the_stored_token() {
    let env = Env::new();
    oauth2_config(&env, "{url}/oauth2/token", "read");
    env.run(&["once"]).assert_code(0);
    let first = env.read("out/idp.token");

    // Another tenant on the same server: the query string changes, the route does not.
    oauth2_config(&env, "{url}/oauth2/token?tenant=2", "read");
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.emu.requests(Endpoint::OAuth2), 2);
    let second = env.read("out/idp.token");
    assert_ne!(second, first);
    assert_eq!(env.emu.issued_tokens().last(), Some(&second));
}
