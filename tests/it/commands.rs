//! The commands an operator types: `check` prints the plan, `status` reports from the state
//! directory alone (no secrets needed), `--help` works. Exit codes as in SPEC.md.

use std::time::{Duration, SystemTime};

use crate::support::*;

#[track_caller]
fn status_json(env: &Env, code: i32) -> Vec<serde_json::Value> {
    let r = env.run(&["status", "--json"]);
    r.assert_code(code);
    let v: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{}", r.stdout));
    v.as_array()
        .unwrap_or_else(|| panic!("status --json is not an array:\n{}", r.stdout))
        .clone()
}

/// Canary secrets for the plan test: none may appear in what `check` prints.
const PLAN_SECRETS: [&str; 4] = [
    "PLAN-CANARY-vandar-refresh-91",
    "PLAN-CANARY-vandar-pass-72",
    "PLAN-CANARY-saba-pass-13",
    "PLAN-CANARY-yav-secret-54",
];

#[test]
fn check_prints_the_plan_and_touches_nothing() {
    let env = Env::new();
    env.secret("vandar-refresh", &format!("{}\n", PLAN_SECRETS[0]));
    env.secret("vandar-password", &format!("{}\n", PLAN_SECRETS[1]));
    env.secret("saba", &format!("{}\n", PLAN_SECRETS[2]));
    env.secret("yav", &format!("{}\n", PLAN_SECRETS[3]));
    env.config(
        r#"credentials:
  - name: vandar-main
    provider: vandar
    base_url: {url}
    refresh_token: { file: {dir}/secrets/vandar-refresh }
    mobile: "09123456789"
    password: { file: {dir}/secrets/vandar-password }
    outputs:
      - file: {dir}/out/vandar.token
  - name: saba-sms
    provider: saba
    base_url: {url}
    username: sabauser
    password: { file: {dir}/secrets/saba }
    virtual_number: "30001234"
    token_valid_days: 15
    outputs:
      - file: {dir}/out/saba.header
        format: template
        template: "Authorization: Bearer {{token}}\n"
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: { file: {dir}/secrets/yav }
    refresh: { at: 75% }
    outputs:
      - file: {dir}/out/pharmacy.json
        format: json
        mode: "0640"
      - dir: {dir}/out/pharmacy
    on_refresh:
      - signal: HUP
        pid_file: {dir}/app.pid
      - exec: ["/usr/local/bin/app-reload", "--soft"]
"#,
    );
    let dir = env.dir.path().display().to_string();
    let url = env.url();
    let r = env.run(&["check"]);
    r.assert_code(0);
    let out = &r.stdout;
    for want in [
        env.path("config.yaml").display().to_string(),
        "3 credential(s)".to_owned(),
        format!("{dir}/state"),
        // Each credential with its provider and where it goes.
        format!("vandar-main: vandar at {url}"),
        format!("saba-sms: saba at {url}"),
        format!("pharmacy: yavapteke at {url}/YavaptekeAPI/connect/token"),
        "sabauser".to_owned(),
        "15 day".to_owned(),
        "75%".to_owned(),
        // Outputs with format and mode.
        format!("file {dir}/out/vandar.token (raw, mode 0600)"),
        format!("file {dir}/out/saba.header (template, mode 0600)"),
        format!("file {dir}/out/pharmacy.json (json, mode 0640)"),
        format!("dir {dir}/out/pharmacy"),
        // Hooks.
        format!("SIGHUP to the pid in {dir}/app.pid"),
        "/usr/local/bin/app-reload".to_owned(),
        "--soft".to_owned(),
    ] {
        assert!(out.contains(&want), "plan lacks `{want}`:\n{out}");
    }
    // Hooks are listed under their own credential, after its name.
    let pharmacy = out.find("pharmacy: yavapteke").unwrap();
    assert!(out.find("app-reload").unwrap() > pharmacy, "{out}");
    assert!(r.stderr.is_empty(), "no warnings expected: {}", r.stderr);
    for secret in PLAN_SECRETS {
        assert!(
            !r.all().contains(secret),
            "check printed a secret:\n{}",
            r.all()
        );
    }
    // check validates; it neither fetches nor writes.
    assert_eq!(env.total_requests(), 0);
    assert!(!env.path("out").exists());
}

#[test]
fn check_plan_names_an_oauth2_credential() {
    let env = Env::new();
    env.secret("oauth", "oauth-secret\n");
    env.config(
        r#"credentials:
  - name: any-idp
    provider: oauth2
    token_url: {url}/oauth2/token
    client_id: tokend
    client_secret: { file: {dir}/secrets/oauth }
    scope: "read write"
    auth: client_secret_basic
    outputs:
      - file: {dir}/out/idp.env
        format: env
"#,
    );
    let r = env.run(&["check"]);
    r.assert_code(0);
    let url = env.url();
    for want in [
        format!("any-idp: oauth2 at {url}/oauth2/token"),
        "client_secret_basic".to_owned(),
        "read write".to_owned(),
        "(env, mode 0600)".to_owned(),
    ] {
        assert!(
            r.stdout.contains(&want),
            "plan lacks `{want}`:\n{}",
            r.stdout
        );
    }
    assert!(!r.all().contains("oauth-secret"), "{}", r.all());
}

#[test]
fn status_without_state_is_missing_and_exit_1() {
    let env = Env::new();
    yavapteke_config(&env, "");
    let r = env.run(&["status"]);
    r.assert_code(1);
    assert!(r.stdout.contains("pharmacy"), "{}", r.stdout);
    assert!(r.stdout.contains("missing"), "{}", r.stdout);

    let entries = status_json(&env, 1);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["credential"], "pharmacy");
    assert_eq!(entries[0]["token"], "missing");
    assert_eq!(env.total_requests(), 0, "status never fetches");
}

#[test]
fn status_after_once_is_valid_with_expiry() {
    let env = Env::new();
    vandar_config(&env, false, "");
    env.run(&["once"]).assert_code(0);
    let token = env.read("out/vandar.token");
    assert!(!token.is_empty());
    let chain = env.state("vandar-main")["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let entries = status_json(&env, 0);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!(e["credential"], "vandar-main");
    assert_eq!(e["token"], "valid");
    // Vandar documents five days; the expiry is about now + 5d.
    let expires = parse_time(e["expires_at"].as_str().expect("expires_at"));
    let now = SystemTime::now();
    let five_days = Duration::from_secs(5 * 86400);
    assert!(expires > now + five_days - Duration::from_secs(60), "{e}");
    assert!(expires <= now + five_days + Duration::from_secs(1), "{e}");
    // Agrees with the state file, to the second.
    let stored = parse_time(
        &env.state("vandar-main")
            .expires_at()
            .expect("an expiry in state"),
    );
    let diff = stored
        .duration_since(expires)
        .unwrap_or_else(|e| e.duration());
    assert!(diff < Duration::from_secs(1), "{e} vs state");
    // The next refresh is planned, before the expiry.
    let next = parse_time(e["next_refresh"].as_str().expect("next_refresh"));
    assert!(next > now && next < expires, "{e}");
    assert!(
        e.get("last_error").is_none_or(|v| v.is_null()),
        "no error after a success: {e}"
    );

    let r = env.run(&["status"]);
    r.assert_code(0);
    assert!(r.stdout.contains("vandar-main"), "{}", r.stdout);
    assert!(r.stdout.contains("valid"), "{}", r.stdout);
    assert!(
        r.stdout.contains(e["expires_at"].as_str().unwrap()),
        "the table shows the expiry:\n{}",
        r.stdout
    );

    for text in [&r.all(), &env.run(&["status", "--json"]).all()] {
        assert!(!text.contains(&token), "status shows the token:\n{text}");
        assert!(
            !text.contains(&chain),
            "status shows the refresh token:\n{text}"
        );
        assert!(
            !text.contains("def502seed"),
            "status shows the seed:\n{text}"
        );
    }
}

#[test]
fn status_after_expiry_is_expired_and_exit_1() {
    let env = Env::new();
    yavapteke_config(&env, "    lifetime: 1s\n");
    env.run(&["once"]).assert_code(0);
    let state = env.state("pharmacy");
    let expires = state.expires_time().unwrap();
    assert!(
        wait_for(Duration::from_secs(3), || SystemTime::now()
            > expires + Duration::from_millis(50)),
        "the 1s token did not expire"
    );
    let r = env.run(&["status"]);
    r.assert_code(1);
    assert!(r.stdout.contains("expired"), "{}", r.stdout);
    assert!(
        r.stdout.contains("ago"),
        "the expiry is in the past:\n{}",
        r.stdout
    );
    let entries = status_json(&env, 1);
    assert_eq!(entries[0]["token"], "expired");
    assert!(entries[0]["expires_at"].is_string());
}

#[test]
fn status_after_a_failed_once_shows_the_error() {
    let env = Env::new();
    yavapteke_config(&env, "");
    env.emu.set_sticky_fault(
        Endpoint::Yavapteke,
        Some(Fault::Status {
            code: 500,
            body: None,
            retry_after: None,
        }),
    );
    let r = env.run(&["once"]);
    r.assert_code(1);
    assert!(r.stderr.contains("credential `pharmacy`"), "{}", r.stderr);
    assert!(r.stderr.contains("HTTP 500"), "{}", r.stderr);

    let entries = status_json(&env, 1);
    let e = &entries[0];
    assert_eq!(e["credential"], "pharmacy");
    assert_eq!(e["token"], "missing");
    let err = e["last_error"].as_str().expect("last_error");
    assert!(err.contains("HTTP 500"), "{e}");
    assert!(e["failures"].as_u64().unwrap_or(0) >= 1, "{e}");

    let r = env.run(&["status"]);
    r.assert_code(1);
    assert!(r.stdout.contains("HTTP 500"), "{}", r.stdout);

    // A later success clears the error.
    env.emu.set_sticky_fault(Endpoint::Yavapteke, None);
    env.run(&["once"]).assert_code(0);
    let entries = status_json(&env, 0);
    assert!(
        entries[0].get("last_error").is_none_or(|v| v.is_null()),
        "{}",
        entries[0]
    );
    assert_eq!(entries[0]["failures"], 0);
}

#[test]
fn status_needs_no_secrets() {
    let env = Env::new();
    saba_config(&env, "");
    env.run(&["once"]).assert_code(0);

    // The operator running `status` may not be able to read the secrets.
    std::fs::remove_file(env.path("secrets/saba")).unwrap();
    env.run(&["once", "--force"]).assert_code(2);
    let r = env.run(&["status"]);
    r.assert_code(0);
    assert!(r.stdout.contains("saba-sms"), "{}", r.stdout);
    assert!(r.stdout.contains("valid"), "{}", r.stdout);
    assert_eq!(status_json(&env, 0)[0]["token"], "valid");

    // Nor the environment that holds them.
    let text = std::fs::read_to_string(env.path("config.yaml"))
        .unwrap()
        .replace(
            &format!("{{ file: {}/secrets/saba }}", env.dir.path().display()),
            "{ env: TOKEND_TEST_UNSET_SECRET }",
        );
    assert!(text.contains("TOKEND_TEST_UNSET_SECRET"), "{text}");
    std::fs::write(env.path("config.yaml"), text).unwrap();
    let r = env.run(&["status"]);
    r.assert_code(0);
    assert!(r.stdout.contains("valid"), "{}", r.stdout);

    // But it still refuses an invalid config.
    std::fs::write(env.path("config.yaml"), "credentails: []\n").unwrap();
    env.run(&["status"]).assert_code(2);
}

#[test]
fn status_lists_every_credential() {
    let env = Env::new();
    env.secret("yav", "yav-secret\n");
    env.secret("saba", "saba-pass\n");
    env.config(
        r#"credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/out/pharmacy.token
  - name: saba-sms
    provider: saba
    base_url: {url}
    username: sabauser
    password: { file: {dir}/secrets/saba }
    virtual_number: "30001234"
    retry: { initial: 100ms, max: 500ms, permanent: 2s }
    outputs:
      - file: {dir}/out/saba.token
"#,
    );
    env.emu.set_sticky_fault(
        Endpoint::Saba,
        Some(Fault::Status {
            code: 503,
            body: None,
            retry_after: None,
        }),
    );
    // One fails, the other is still written, and status says which is which.
    env.run(&["once"]).assert_code(1);
    assert!(!env.read("out/pharmacy.token").is_empty());
    let entries = status_json(&env, 1);
    let by_name = |n: &str| {
        entries
            .iter()
            .find(|e| e["credential"] == n)
            .unwrap_or_else(|| panic!("{n} missing from {entries:?}"))
            .clone()
    };
    assert_eq!(by_name("pharmacy")["token"], "valid");
    assert_eq!(by_name("pharmacy")["provider"], "yavapteke");
    assert_eq!(by_name("saba-sms")["token"], "missing");
    assert_eq!(by_name("saba-sms")["provider"], "saba");
    assert!(
        by_name("saba-sms")["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("503")
    );
}

#[test]
fn help_exits_0() {
    for args in [
        &["--help"][..],
        &["once", "--help"][..],
        &["help"][..],
        &["status", "--help"][..],
        &["--version"][..],
    ] {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env_remove("TOKEND_CONFIG")
            .output()
            .unwrap();
        let r = Run::from(out);
        r.assert_code(0);
        assert!(!r.stdout.is_empty(), "`{}` printed nothing", args.join(" "));
    }
    let r = Run::from(
        std::process::Command::new(BIN)
            .arg("--help")
            .output()
            .unwrap(),
    );
    for cmd in ["run", "once", "check", "status", "--config"] {
        assert!(
            r.stdout.contains(cmd),
            "--help lacks `{cmd}`:\n{}",
            r.stdout
        );
    }
    let r = Run::from(
        std::process::Command::new(BIN)
            .args(["once", "--help"])
            .output()
            .unwrap(),
    );
    assert!(r.stdout.contains("--force"), "{}", r.stdout);
    // An unknown command is a usage error, not a success.
    let r = Run::from(
        std::process::Command::new(BIN)
            .arg("onse")
            .output()
            .unwrap(),
    );
    assert_ne!(r.code, 0);
}

/// stderr is usually a file, a pipe, journald or `kubectl logs`: terminal colour codes
/// there are noise that breaks grep and log shippers.
#[test]
fn logs_to_a_pipe_or_file_have_no_colour_escapes() {
    let env = Env::new();
    yavapteke_config(&env, "    lifetime: 2s\n");
    let r = env.run(&["once"]);
    r.assert_code(0);
    assert!(!r.stderr.is_empty(), "once logged nothing to check");
    assert!(
        !r.stderr.contains('\u{1b}'),
        "escape codes in:\n{:?}",
        r.stderr
    );

    let mut d = env.daemon();
    assert!(wait_for(Duration::from_secs(10), || env
        .emu
        .successes(Endpoint::Yavapteke)
        >= 2));
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(12)), Some(0));
    let log = d.log();
    assert!(!log.is_empty());
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in daemon.log:\n{log:?}"
    );
}

#[test]
fn check_offline_validates_without_reading_any_secret() {
    let env = Env::new();
    env.config(
        r#"credentials:
  - name: vandar-main
    provider: vandar
    base_url: {url}
    refresh_token: { file: {dir}/secrets/not-here }
    outputs:
      - file: {dir}/out/vandar.token
  - name: saba-sms
    provider: saba
    base_url: {url}
    username: sabauser
    password: { env: TOKEND_TEST_UNSET_VARIABLE }
    virtual_number: "30001234"
    outputs:
      - file: {dir}/out/saba.token
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { credential: yav }
    ca_file: {dir}/not-here-ca.pem
    outputs:
      - file: {dir}/out/pharmacy.token
        group: tokend-test-no-such-group
"#,
    );
    // Online, every unreadable secret is an error, and so is a group this host lacks ...
    let online = env.run(&["check"]);
    online.assert_code(2);
    for field in [
        "refresh_token",
        "password",
        "client_secret",
        "tokend-test-no-such-group",
    ] {
        assert!(online.stderr.contains(field), "{}", online.stderr);
    }
    // ... offline, none is read, and the rest is still validated.
    let offline = env.run(&["check", "--offline"]);
    offline.assert_code(0);
    assert!(
        offline.stdout.contains("is valid: 3 credential(s)"),
        "{}",
        offline.stdout
    );
    assert!(
        offline.stdout.contains("offline: no secret was read"),
        "{}",
        offline.stdout
    );
    // ... the config is usually linted on another host than the one it is for.
    assert!(
        offline.stderr.contains("ca_file `")
            && offline
                .stderr
                .contains("not-here-ca.pem` not checked offline: no such file"),
        "{}",
        offline.stderr
    );
    assert!(
        offline.stderr.contains("warning: credential `pharmacy` (line 17): outputs[0]: group `tokend-test-no-such-group` does not exist on this host"),
        "{}",
        offline.stderr
    );
    assert_eq!(env.total_requests(), 0);

    env.config("credentials:\n  - name: x\n    provider: nope\n");
    let bad = env.run(&["check", "--offline"]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("provider"), "{}", bad.stderr);
}

/// The shipped unit has ProtectSystem=strict: an output outside its writable paths fails
/// every refresh. `check` and `run` say so before the first one, naming ReadWritePaths=.
#[test]
fn an_output_on_a_read_only_mount_is_named_before_the_first_refresh() {
    let env = Env::new();
    let Some(ro) = Tmpfs::mount(&env.path("ro"), "64k") else {
        panic!("this test needs `mount -t tmpfs` (tests run as root)");
    };
    ro.remount("ro");
    env.secret("yav", "s3cret");
    env.config(
        r#"credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: abc
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - file: {dir}/ro/tokens/pharmacy.token
"#,
    );
    let want = format!(
        "credential `pharmacy`: output `{0}/tokens/pharmacy.token`: `{0}` is on a read-only file system; under systemd (ProtectSystem=strict) add `ReadWritePaths={0}/tokens` to the unit",
        env.path("ro").display()
    );
    let check = env.run(&["check"]);
    check.assert_code(0);
    assert!(
        check.stderr.contains(&format!("warning: {want}")),
        "{}",
        check.stderr
    );
    // Offline checks run on other hosts: no probing there.
    let offline = env.run(&["check", "--offline"]);
    assert!(!offline.stderr.contains("read-only"), "{}", offline.stderr);

    let d = env.daemon();
    assert!(
        wait_for(10 * Duration::from_secs(1), || d.log().contains(&want)),
        "run did not name the read-only output at start:\n{}",
        d.log()
    );
}

/// Found by fuzzing the config: tracing-subscriber panics slicing this filter directive at
/// a non-ASCII character (byte 43). In `log.level` it is a config error; in RUST_LOG it is
/// ignored (the config's level applies) rather than a crash at start.
#[test]
fn a_non_ascii_log_filter_is_refused_or_ignored_never_a_panic() {
    const FILTER: &str = " permanentin_pointeexpires_in \u{5d0}vtputs\u{fffd}\u{fffd}[ { fi*e: /run/ { file: /run/token : { refresormat: env";
    let env = Env::new();
    yavapteke_config(&env, "");
    let mut cmd = env.tokend(&["once"]);
    cmd.env("RUST_LOG", FILTER);
    let r = Run::from(cmd.output().unwrap());
    assert_eq!(r.code, 0, "{}", r.stderr);

    let text = std::fs::read_to_string(env.path("config.yaml")).unwrap();
    std::fs::write(
        env.path("config.yaml"),
        format!("log: {{ level: \"{FILTER}\" }}\n{text}"),
    )
    .unwrap();
    let r = env.run(&["check"]);
    r.assert_code(2);
    assert!(r.stderr.contains("log.level"), "{}", r.stderr);
}
