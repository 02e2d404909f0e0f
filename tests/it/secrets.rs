//! Secrets never leave through the front door: canary values for every secret and every
//! token the emulator issued are searched for in everything tokend prints, in success,
//! failure and at trace level. Also each way of naming a secret (file, env, systemd
//! credential, literal) and its exact reading rules.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::*;

const VANDAR_PASSWORD: &str = "CANARY-vandar-pw-7f3a91";
const VANDAR_SEED: &str = "def502CANARYseed4be1c0de";
const SABA_PASSWORD: &str = "CANARY-saba-pw-2c9d44";
const YAV_SECRET: &str = "CANARY-yav-secret-55aa17";
const OAUTH_SECRET: &str = "CANARY-oauth-secret-e1f038";

const SECRETS: [&str; 5] = [
    VANDAR_PASSWORD,
    VANDAR_SEED,
    SABA_PASSWORD,
    YAV_SECRET,
    OAUTH_SECRET,
];

/// An emulator that accepts exactly the canary secrets.
fn canary_emulator() -> EmulatorConfig {
    EmulatorConfig {
        vandar_password: VANDAR_PASSWORD.into(),
        vandar_refresh_seeds: vec![VANDAR_SEED.into()],
        saba_password: SABA_PASSWORD.into(),
        yavapteke_client_secret: YAV_SECRET.into(),
        oauth2_client_secret: OAUTH_SECRET.into(),
        ..EmulatorConfig::default()
    }
}

/// All four providers, each secret in a file holding its canary. `extra` is added to every
/// credential (indented 4 spaces).
fn canary_config(env: &Env, top: &str, extra: &str) {
    env.secret("vandar-password", &format!("{VANDAR_PASSWORD}\n"));
    env.secret("vandar-refresh", &format!("{VANDAR_SEED}\n"));
    env.secret("saba", &format!("{SABA_PASSWORD}\n"));
    env.secret("yav", &format!("{YAV_SECRET}\n"));
    env.secret("oauth", &format!("{OAUTH_SECRET}\n"));
    env.config(&format!(
        r#"{top}credentials:
  - name: vandar-main
    provider: vandar
    base_url: {{url}}
    refresh_token: {{ file: {{dir}}/secrets/vandar-refresh }}
    mobile: "09123456789"
    password: {{ file: {{dir}}/secrets/vandar-password }}
    timeout: 2s
    retry: {{ initial: 100ms, max: 500ms, permanent: 2s }}
{extra}    outputs:
      - file: {{dir}}/out/vandar.token
  - name: saba-sms
    provider: saba
    base_url: {{url}}
    username: sabauser
    password: {{ file: {{dir}}/secrets/saba }}
    virtual_number: "30001234"
    timeout: 2s
    retry: {{ initial: 100ms, max: 500ms, permanent: 2s }}
{extra}    outputs:
      - file: {{dir}}/out/saba.token
  - name: pharmacy
    provider: yavapteke
    token_url: {{url}}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: {{ file: {{dir}}/secrets/yav }}
    timeout: 2s
    retry: {{ initial: 100ms, max: 500ms, permanent: 2s }}
{extra}    outputs:
      - file: {{dir}}/out/pharmacy.token
        format: json
  - name: any-idp
    provider: oauth2
    token_url: {{url}}/oauth2/token
    client_id: tokend
    client_secret: {{ file: {{dir}}/secrets/oauth }}
    timeout: 2s
    retry: {{ initial: 100ms, max: 500ms, permanent: 2s }}
{extra}    outputs:
      - dir: {{dir}}/out/idp
"#
    ));
}

/// Every value that must never be printed: the configured secrets, every token the
/// emulator issued, and the refresh tokens it currently holds valid.
fn canaries(env: &Env) -> Vec<String> {
    Canary::new(&SECRETS).needles(env)
}

#[test]
fn no_secret_or_token_in_any_command_output() {
    let env = Env::with(canary_emulator());
    canary_config(&env, "", "");
    env.watch_for_leaks(&SECRETS);
    let run = |args: &[&str], code: i32| {
        env.run(args).assert_code(code);
    };
    run(&["check"], 0);
    run(&["status"], 1);
    run(&["once"], 0);
    run(&["once"], 0);
    run(&["once", "--force"], 0);
    run(&["status"], 0);
    run(&["status", "--json"], 0);
    run(&["check"], 0);

    // The canaries are real: logins used the secrets, and the outputs hold issued tokens.
    for ep in [
        Endpoint::VandarRefresh,
        Endpoint::Saba,
        Endpoint::Yavapteke,
        Endpoint::OAuth2,
    ] {
        assert!(env.emu.successes(ep) >= 2, "{ep:?} never succeeded twice");
    }
    let issued = env.emu.issued_tokens();
    assert!(issued.contains(&env.read("out/vandar.token")));
    assert!(issued.contains(&env.read("out/saba.token")));
    assert!(issued.contains(&env.read("out/idp/token")));
    // The rotated refresh token is a canary too; it sits in the state file, nowhere else.
    let chain = env.state("vandar-main")["refresh_token"]
        .as_str()
        .map(str::to_owned);
    assert!(chain.is_some(), "{}", env.state("vandar-main"));
    assert!(canaries(&env).contains(&chain.unwrap()));
    env.assert_no_leak();
}

#[test]
fn no_secret_in_failing_once_provider_500() {
    let env = Env::with(canary_emulator());
    canary_config(&env, "", "");
    env.watch_for_leaks(&SECRETS);
    // Seed real tokens first so that issued tokens exist as canaries, then fail everything.
    env.run(&["once"]).assert_code(0);
    for ep in Endpoint::ALL {
        env.emu.set_sticky_fault(
            ep,
            Some(Fault::Status {
                code: 500,
                body: None,
                retry_after: None,
            }),
        );
    }
    let r = env.run(&["once", "--force"]);
    r.assert_code(1);
    assert!(r.stderr.contains("HTTP 500"), "{}", r.stderr);
    for name in ["vandar-main", "saba-sms", "pharmacy", "any-idp"] {
        assert!(
            r.stderr.contains(&format!("credential `{name}`")),
            "{}",
            r.stderr
        );
    }
    env.run(&["status"]);
    env.assert_no_leak();
}

#[test]
fn no_secret_in_failing_once_bad_credentials() {
    // The emulator accepts other secrets than the canaries the config sends.
    let env = Env::with(EmulatorConfig {
        vandar_refresh_seeds: vec![],
        ..EmulatorConfig::default()
    });
    canary_config(&env, "", "");
    env.watch_for_leaks(&SECRETS);
    let r = env.run(&["once"]);
    r.assert_code(1);
    for name in ["vandar-main", "saba-sms", "pharmacy", "any-idp"] {
        assert!(
            r.stderr.contains(&format!("credential `{name}`")),
            "{}",
            r.stderr
        );
    }
    assert!(
        env.emu.requests(Endpoint::VandarLogin) >= 1,
        "the password was never tried"
    );
    env.assert_no_leak();
}

#[test]
fn no_secret_in_trace_logs_of_the_daemon() {
    let env = Env::with(canary_emulator());
    canary_config(&env, "log: { level: trace }\n", "    lifetime: 2s\n");
    env.watch_for_leaks(&SECRETS);
    let mut cmd = env.tokend(&["run"]);
    cmd.env("RUST_LOG", "trace");
    let mut d = env.daemon_with(&mut cmd);
    // Two refreshes of each: the first fetch and one scheduled refresh (80% of 2s).
    let refreshed = wait_for(Duration::from_secs(15), || {
        [
            Endpoint::VandarRefresh,
            Endpoint::Saba,
            Endpoint::Yavapteke,
            Endpoint::OAuth2,
        ]
        .iter()
        .all(|ep| env.emu.successes(*ep) >= 2)
    });
    assert!(refreshed, "no second refresh:\n{}", d.log());
    // A reload and a forced refresh run more code paths at trace level.
    d.signal(Signal::SIGUSR1);
    let before = env.emu.successes(Endpoint::OAuth2);
    assert!(wait_for(Duration::from_secs(5), || env
        .emu
        .successes(Endpoint::OAuth2)
        > before));
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(12)), Some(0), "{}", d.log());
    let log = d.log();
    // Trace level is really on, or the test proves nothing.
    assert!(log.contains("TRACE"), "no trace lines:\n{log}");
    assert!(env.emu.reused_refresh_tokens() == 0);
    env.assert_no_leak();
}

#[test]
fn no_secret_in_json_logs_at_debug() {
    let env = Env::with(canary_emulator());
    canary_config(&env, "log: { format: json, level: debug }\n", "");
    env.watch_for_leaks(&SECRETS);
    let r = env.run(&["once", "--force"]);
    r.assert_code(0);
    assert!(r.stderr.contains('{'), "no JSON log lines: {}", r.stderr);
    env.assert_no_leak();
}

/// An OAuth2 credential whose client secret comes from `source` (a YAML secret value).
fn oauth_config(env: &Env, source: &str) {
    env.config(&format!(
        r#"credentials:
  - name: any-idp
    provider: oauth2
    token_url: {{url}}/oauth2/token
    client_id: tokend
    client_secret: {source}
    timeout: 2s
    retry: {{ initial: 100ms, max: 500ms, permanent: 2s }}
    outputs:
      - file: {{dir}}/out/idp.token
"#
    ));
}

fn oauth_emulator(secret: &str) -> Env {
    Env::with(EmulatorConfig {
        oauth2_client_secret: secret.into(),
        ..EmulatorConfig::default()
    })
}

#[test]
fn file_secret_loses_exactly_one_trailing_newline() {
    // "pass\n\n" in the file is the secret "pass\n".
    let env = oauth_emulator("pass\n");
    env.secret("oauth", "pass\n\n");
    oauth_config(&env, "{ file: {dir}/secrets/oauth }");
    env.run(&["once"]).assert_code(0);
    assert!(!env.read("out/idp.token").is_empty());

    // "pass\n" in the file is "pass", which this provider rejects: no more is stripped.
    let env = oauth_emulator("pass\n");
    env.secret("oauth", "pass\n");
    oauth_config(&env, "{ file: {dir}/secrets/oauth }");
    let r = env.run(&["once"]);
    r.assert_code(1);
    assert_eq!(env.emu.requests(Endpoint::OAuth2), 1);
    assert!(r.stderr.contains("credential `any-idp`"), "{}", r.stderr);

    // Leading and inner whitespace are part of the secret.
    let env = oauth_emulator(" pass word ");
    env.secret("oauth", " pass word \n");
    oauth_config(&env, "{ file: {dir}/secrets/oauth }");
    env.run(&["once"]).assert_code(0);

    // No newline at all is fine too.
    let env = oauth_emulator("pass");
    env.secret("oauth", "pass");
    oauth_config(&env, "{ file: {dir}/secrets/oauth }");
    env.run(&["once"]).assert_code(0);
}

#[test]
fn relative_secret_file_is_read_against_the_config_directory() {
    let env = oauth_emulator(OAUTH_SECRET);
    env.secret("oauth", &format!("{OAUTH_SECRET}\n"));
    oauth_config(&env, "{ file: secrets/oauth }");
    // Run from elsewhere, so the working directory cannot be what makes it work.
    let mut cmd = env.tokend(&["once"]);
    cmd.current_dir("/");
    let r = Run::from(cmd.output().unwrap());
    r.assert_code(0);
}

#[test]
fn env_secret_is_read_from_the_environment() {
    let env = oauth_emulator(OAUTH_SECRET);
    oauth_config(&env, "{ env: TOKEND_TEST_OAUTH_SECRET }");
    env.watch_for_leaks(&SECRETS);
    let r = Run::from(
        env.tokend(&["once"])
            .env("TOKEND_TEST_OAUTH_SECRET", OAUTH_SECRET)
            .output()
            .unwrap(),
    );
    r.assert_code(0);
    assert!(env.emu.issued_tokens().contains(&env.read("out/idp.token")));
    env.leak_text("`once` with an env secret", r.all());

    // Unset: a config error naming the variable, and nothing sent.
    let r = env.run(&["once", "--force"]);
    r.assert_code(2);
    assert!(
        r.stderr.contains("TOKEND_TEST_OAUTH_SECRET"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("`client_secret`"), "{}", r.stderr);
    assert_eq!(env.emu.requests(Endpoint::OAuth2), 1);
}

#[test]
fn credential_secret_is_read_from_credentials_directory() {
    let env = oauth_emulator(OAUTH_SECRET);
    let creds = env.path("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("idp-secret"), format!("{OAUTH_SECRET}\n")).unwrap();
    oauth_config(&env, "{ credential: idp-secret }");
    env.watch_for_leaks(&SECRETS);
    let r = Run::from(
        env.tokend(&["once"])
            .env("CREDENTIALS_DIRECTORY", &creds)
            .output()
            .unwrap(),
    );
    r.assert_code(0);
    assert!(env.emu.issued_tokens().contains(&env.read("out/idp.token")));
    env.leak_text("`once` with a systemd credential", r.all());

    // A name the directory lacks: exit 2 naming the file that is not there.
    oauth_config(&env, "{ credential: other-secret }");
    let r = Run::from(
        env.tokend(&["check"])
            .env("CREDENTIALS_DIRECTORY", &creds)
            .output()
            .unwrap(),
    );
    r.assert_code(2);
    let expected = creds.join("other-secret").display().to_string();
    assert!(r.stderr.contains(&expected), "{}", r.stderr);
}

#[test]
fn literal_secret_works_and_check_warns_about_it() {
    let env = oauth_emulator(OAUTH_SECRET);
    oauth_config(&env, &format!("\"{OAUTH_SECRET}\""));
    env.watch_for_leaks(&SECRETS);
    let r = env.run(&["check"]);
    r.assert_code(0);
    assert!(r.stderr.contains("warning"), "{}", r.stderr);
    assert!(r.stderr.contains("`client_secret`"), "{}", r.stderr);
    assert!(r.stderr.contains("any-idp"), "{}", r.stderr);
    assert!(r.stderr.contains("config file"), "{}", r.stderr);

    let r = env.run(&["once"]);
    r.assert_code(0);
    assert!(env.emu.issued_tokens().contains(&env.read("out/idp.token")));

    // A secret from a file gets no such warning.
    env.secret("oauth", OAUTH_SECRET);
    oauth_config(&env, "{ file: {dir}/secrets/oauth }");
    let r = env.run(&["check"]);
    r.assert_code(0);
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
}

#[test]
fn missing_secret_file_is_exit_2_naming_path_and_credential() {
    let env = Env::with(canary_emulator());
    canary_config(&env, "", "");
    env.watch_for_leaks(&SECRETS);
    let missing = env.path("secrets/saba");
    std::fs::remove_file(&missing).unwrap();
    for args in [&["check"][..], &["once"][..], &["once", "--force"][..]] {
        let r = env.run(args);
        r.assert_code(2);
        assert!(
            r.stderr.contains(&missing.display().to_string()),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("credential `saba-sms`"), "{}", r.stderr);
        assert!(r.stderr.contains("`password`"), "{}", r.stderr);
    }
    let mut d = env.daemon();
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(2), "{}", d.log());
    assert!(
        d.log().contains(&missing.display().to_string()),
        "{}",
        d.log()
    );
    // The other credentials are not fetched either: a bad config changes nothing.
    assert_eq!(env.total_requests(), 0);
}

#[test]
fn a_provider_echoing_a_secret_in_its_error_does_not_leak_it() {
    let env = Env::new();
    saba_config(&env, "");
    env.emu.push_fault(
        Endpoint::Saba,
        Fault::Status {
            code: 400,
            body: Some(
                r#"{"status":"400","message":"bad password saba-pass for sabauser","errors":[]}"#
                    .into(),
            ),
            retry_after: None,
        },
        1,
    );
    let r = env.run(&["once"]);
    r.assert_code(1);
    assert!(r.stderr.contains("bad password [redacted]"), "{}", r.stderr);
    assert!(!r.stderr.contains("saba-pass"), "{}", r.stderr);
    let status = env.run(&["status", "--json"]);
    assert!(!status.stdout.contains("saba-pass"), "{}", status.stdout);
    assert!(!env.state("saba-sms").raw().contains("saba-pass"));
}

/// A proxy password is a secret like the others: every provider goes through an
/// authenticating proxy, and nothing tokend prints or stores, at trace level, shows it.
#[test]
fn no_proxy_password_in_any_output_at_trace_level() {
    const PROXY_PASSWORD: &str = "CANARY-proxy-pw-41d07e";
    let proxy = crate::egress::TestProxy::start(
        crate::egress::Kind::Http,
        &[],
        Some(("tokend", PROXY_PASSWORD)),
    );
    let env = Env::with(canary_emulator());
    env.secret("proxy", &format!("{PROXY_PASSWORD}\n"));
    canary_config(
        &env,
        &format!(
            "log: {{ level: trace }}\ndefaults:\n  proxy:\n    url: {}\n    username: tokend\n    password: {{ file: {{dir}}/secrets/proxy }}\n",
            proxy.url("http")
        ),
        "",
    );
    env.watch_for_leaks(&SECRETS);
    env.leak_secret(PROXY_PASSWORD);
    let mut outputs = Vec::new();
    for (args, code) in [
        (&["check"][..], 0),
        (&["once"], 0),
        (&["status"], 0),
        (&["status", "--json"], 0),
    ] {
        let mut cmd = env.tokend(args);
        cmd.env("RUST_LOG", "trace");
        let r = Run::from(cmd.output().unwrap());
        r.assert_code(code);
        env.leak_text(&format!("`tokend {}` at trace", args.join(" ")), r.all());
        outputs.push((args.join(" "), r.all()));
    }
    let seen = proxy.seen();
    assert!(!seen.is_empty(), "nothing went through the proxy");
    assert!(
        seen.iter()
            .all(|s| s.auth.as_deref() == Some(&format!("tokend:{PROXY_PASSWORD}")))
    );
    assert!(
        outputs.iter().any(|(_, t)| t.contains("TRACE")),
        "trace is off"
    );
    env.assert_no_leak();
    // State files hold tokens by design, never the proxy password.
    for name in ["vandar-main", "saba-sms", "pharmacy", "any-idp"] {
        outputs.push((format!("state/{name}.json"), env.state(name).raw()));
    }
    for (what, text) in &outputs {
        assert!(
            !text.contains(PROXY_PASSWORD),
            "{what} shows the proxy password:\n{text}"
        );
    }
}
