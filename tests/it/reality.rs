//! tokend against the providers as they behave today (PROVIDERS.md, "In reality"), through
//! the real binary and the emulator's default (live) shapes: Saba's camelCase envelope and
//! result codes, block pages in front of Vandar that must not cost a chain, rotated refresh
//! tokens beside unusable access tokens, Vandar's v3 login, chain age, and its rate limit.

use std::time::{Duration, Instant, SystemTime};

use crate::support::*;

const RETRY: &str = "    retry: { initial: 100ms, max: 300ms, permanent: 1h }\n";

fn saba(env: &Env, password: &str, extra: &str) {
    env.secret("saba", &format!("{password}\n"));
    env.config(&format!(
        "credentials:\n  - name: saba-sms\n    provider: saba\n    base_url: {{url}}\n    username: sabauser\n    password: {{ file: {{dir}}/secrets/saba }}\n    virtual_number: \"30001234\"\n    timeout: 2s\n{RETRY}{extra}    outputs:\n      - file: {{dir}}/out/saba.token\n"
    ));
}

/// A Vandar credential `name` with a seed refresh token and/or a login.
fn vandar_block(name: &str, seed: Option<&str>, login: bool, extra: &str) -> String {
    let mut keys = String::new();
    if let Some(seed) = seed {
        keys.push_str(&format!("    refresh_token: \"{seed}\"\n"));
    }
    if login {
        keys.push_str("    mobile: \"09123456789\"\n    password: { file: {dir}/secrets/vpw }\n");
    }
    format!(
        "  - name: {name}\n    provider: vandar\n    base_url: {{url}}\n{keys}    timeout: 5s\n{RETRY}{extra}    outputs:\n      - file: {{dir}}/out/{name}.token\n"
    )
}

fn vandar(env: &Env, seed: Option<&str>, login: bool, extra: &str) {
    env.secret("vpw", "vandar-pass\n");
    env.config(&format!(
        "credentials:\n{}",
        vandar_block("vandar-main", seed, login, extra)
    ));
}

fn issued(env: &Env, path: &str) -> bool {
    let token = env.read(path);
    !token.is_empty() && env.emu.issued_tokens().contains(&token)
}

fn status(code: u16, body: &str) -> Fault {
    Fault::Status {
        code,
        body: Some(body.into()),
        retry_after: None,
    }
}

// ---------------------------------------------------------------------------------------
// Saba

#[test]
fn saba_live_camel_case_answer_is_read() {
    let env = Env::new();
    saba(&env, "saba-pass", "");
    let r = env.run(&["once"]);
    r.assert_code(0);
    assert!(issued(&env, "out/saba.token"), "{}", r.stderr);
    assert_eq!(env.emu.requests(Endpoint::Saba), 1);

    // The documented (seed) shape still works.
    let env = Env::with(EmulatorConfig {
        saba_seed_shape: true,
        ..EmulatorConfig::default()
    });
    saba(&env, "saba-pass", "");
    env.run(&["once"]).assert_code(0);
    assert!(issued(&env, "out/saba.token"));
}

#[test]
fn saba_result_codes_are_named_in_one_sentence_never_raw_json() {
    let cases = [
        (
            r#"{"status":400,"message":"خطا","data":null,"errors":[{"message":"source IP not allowed","code":29,"field":null,"url":"https://docs/29"}]}"#,
            &[
                "source IP not allowed (code 29)",
                "egress problem",
                "`proxy:`",
            ][..],
        ),
        (
            r#"{"status":400,"message":"خطا","data":null,"errors":[{"message":"domain not allowed","code":4002,"field":null,"url":null}]}"#,
            &["(code 4002)", "egress problem"][..],
        ),
        (
            r#"{"status":400,"message":"x","data":null,"errors":[{"message":"account expired","code":17,"field":null,"url":null}]}"#,
            &["account expired (code 17)", "a person must"][..],
        ),
        (
            r#"{"status":400,"message":"x","data":null,"errors":[{"message":"bad sender","code":4003,"field":"virtualNumber","url":null}]}"#,
            &["bad sender (code 4003)", "`virtual_number`"][..],
        ),
    ];
    for (body, want) in cases {
        let env = Env::new();
        saba(&env, "saba-pass", "");
        env.emu.push_fault(Endpoint::Saba, status(200, body), 1);
        let r = env.run(&["once"]);
        r.assert_code(1);
        for w in want {
            assert!(
                r.stderr.contains(w),
                "`{w}` missing for {body}:\n{}",
                r.stderr
            );
        }
        assert!(
            !r.stderr.contains(r#"{""#) && !r.stderr.contains("\"field\""),
            "raw JSON in:\n{}",
            r.stderr
        );
        assert_eq!(env.state("saba-sms").last_error_transient(), Some(false));
    }
    // 23, 15 and 500 are transient: retried soon.
    let env = Env::new();
    saba(&env, "saba-pass", "");
    let busy = r#"{"status":400,"message":"x","data":null,"errors":[{"message":"busy","code":15,"field":null,"url":null}]}"#;
    env.emu.push_fault(Endpoint::Saba, status(200, busy), 1);
    env.run(&["once"]).assert_code(1);
    assert_eq!(env.state("saba-sms").last_error_transient(), Some(true));
    env.run(&["once"]).assert_code(0);
}

#[test]
fn saba_refused_password_is_not_resent_by_repeated_once() {
    let env = Env::new();
    saba(&env, "wrong-pass", "");
    let r = env.run(&["once"]);
    r.assert_code(1);
    assert!(r.stderr.contains("(code 4001)"), "{}", r.stderr);
    assert_eq!(env.emu.requests(Endpoint::Saba), 1);

    // Again and again: the refused password is not sent before `retry.permanent` (1h).
    for _ in 0..3 {
        let r = env.run(&["once"]);
        r.assert_code(1);
        assert!(
            r.stderr.contains("not tried again before")
                && r.stderr.contains("tokend once --force")
                && r.stderr.contains("(code 4001)"),
            "{}",
            r.stderr
        );
    }
    assert_eq!(
        env.emu.requests(Endpoint::Saba),
        1,
        "the password was re-sent"
    );

    // `--force` is the operator's explicit "try now".
    env.run(&["once", "--force"]).assert_code(1);
    assert_eq!(env.emu.requests(Endpoint::Saba), 2);

    // A corrected secret is a new identity: tried at once.
    saba(&env, "saba-pass", "");
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.emu.requests(Endpoint::Saba), 3);
    assert!(issued(&env, "out/saba.token"));
}

#[test]
fn saba_unrecognised_answer_is_not_retried_at_the_transient_pace_in_run() {
    let env = Env::new();
    saba(&env, "saba-pass", "");
    // An envelope tokend cannot place (no `status` at all): it may be a refused password.
    env.emu.set_sticky_fault(
        Endpoint::Saba,
        Some(status(
            200,
            r#"{"message":"عملیات ناموفق بود","data":null}"#,
        )),
    );
    let d = env.daemon();
    assert!(
        wait_for(Duration::from_secs(10), || env.emu.requests(Endpoint::Saba)
            >= 1
            && d.log().contains("credential `saba-sms`")),
        "{}",
        d.log()
    );
    // The transient pace here is 100..300 ms: a second of it would be several requests.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(env.emu.requests(Endpoint::Saba), 1, "{}", d.log());
    assert!(d.log().contains("does not understand"), "{}", d.log());
}

// ---------------------------------------------------------------------------------------
// Block pages in front of the API

#[test]
fn vandar_chain_survives_three_block_pages_in_a_row() {
    let env = Env::new();
    vandar(&env, Some("def502seed"), false, "");
    env.run(&["once"]).assert_code(0);
    let chain = env.state("vandar-main").refresh_token().unwrap();

    env.emu
        .push_fault(Endpoint::VandarRefresh, Fault::BlockPage { code: 403 }, 1);
    env.emu
        .push_fault(Endpoint::VandarRefresh, Fault::BlockPage { code: 400 }, 1);
    env.emu
        .push_fault(Endpoint::VandarRefresh, Fault::BlockPage { code: 451 }, 1);
    env.emu
        .push_fault(Endpoint::VandarRefresh, status(403, ""), 1);
    for code in [403, 400, 451, 403] {
        let r = env.run(&["once", "--force"]);
        r.assert_code(1);
        assert!(
            r.stderr.contains(&format!("HTTP {code}"))
                && r.stderr
                    .contains("blocked before reaching Vandar (egress IP, proxy or firewall?)"),
            "{}",
            r.stderr
        );
        assert!(!r.stderr.contains("dashboard"), "{}", r.stderr);
        assert_eq!(
            env.state("vandar-main").refresh_token().as_ref(),
            Some(&chain)
        );
        assert_eq!(env.state("vandar-main").last_error_transient(), Some(true));
    }
    let r = env.run(&["once", "--force"]);
    r.assert_code(0);
    assert_eq!(
        env.emu.successes(Endpoint::VandarRefresh),
        2,
        "{}",
        r.stderr
    );
    assert_eq!(env.emu.reused_refresh_tokens(), 0);
    assert!(issued(&env, "out/vandar-main.token"));
}

#[test]
fn a_block_page_does_not_make_vandar_fall_back_to_login() {
    let env = Env::new();
    vandar(&env, Some("def502seed"), true, "");
    env.run(&["once"]).assert_code(0);
    env.emu
        .push_fault(Endpoint::VandarRefresh, Fault::BlockPage { code: 403 }, 1);
    env.run(&["once", "--force"]).assert_code(1);
    assert_eq!(env.emu.requests(Endpoint::VandarLogin), 0);
    env.run(&["once", "--force"]).assert_code(0);
    assert_eq!(env.emu.successes(Endpoint::VandarRefresh), 2);
    assert_eq!(env.emu.requests(Endpoint::VandarLogin), 0);
}

fn http_json(env: &Env) {
    env.secret("vpw", "vandar-pass\n");
    env.config(&format!(
        r#"credentials:
  - name: hj
    provider: http_json
    login_request:
      url: "{{url}}/v3/login"
      body: {{ mobile: "09123456789", password: "{{{{password}}}}" }}
    refresh_request:
      url: "{{url}}/v3/refreshtoken"
      body: {{ refreshtoken: "{{{{refresh_token}}}}" }}
    secrets: {{ password: {{ file: "{{dir}}/secrets/vpw" }} }}
    token_pointer: /access_token
    refresh_token_pointer: /refresh_token
    timeout: 5s
{RETRY}    outputs: [ {{ file: "{{dir}}/out/hj.token" }} ]
"#
    ));
}

fn oauth2(env: &Env, grant: &str) {
    env.secret("cs", "oauth-secret\n");
    env.secret("rt", "oauth-seed\n");
    env.secret("pw", "alice-pass\n");
    let keys = match grant {
        "refresh_token" => {
            "    grant: refresh_token\n    refresh_token: { file: {dir}/secrets/rt }\n"
        }
        _ => "    grant: password\n    username: alice\n    password: { file: {dir}/secrets/pw }\n",
    };
    env.emu.add_refresh_seed("oauth-seed");
    env.config(&format!(
        "credentials:\n  - name: idp\n    provider: oauth2\n    token_url: {{url}}/oauth2/token\n    client_id: tokend\n    client_secret: {{ file: {{dir}}/secrets/cs }}\n{keys}    timeout: 5s\n{RETRY}    outputs:\n      - file: {{dir}}/out/idp.token\n"
    ));
}

#[test]
fn http_json_and_oauth2_chains_survive_block_pages() {
    for (name, endpoint) in [("hj", Endpoint::VandarRefresh), ("idp", Endpoint::OAuth2)] {
        let env = Env::new();
        if name == "hj" {
            http_json(&env);
        } else {
            oauth2(&env, "refresh_token");
        }
        env.run(&["once"]).assert_code(0);
        let chain = env.state(name).refresh_token().unwrap();
        let logins = env.emu.requests(Endpoint::VandarLogin);
        for fault in [
            Fault::BlockPage { code: 403 },
            Fault::BlockPage { code: 400 },
            Fault::BlockPage { code: 451 },
        ] {
            env.emu.push_fault(endpoint, fault, 1);
            let r = env.run(&["once", "--force"]);
            r.assert_code(1);
            assert!(
                r.stderr.contains("blocked before reaching"),
                "{name}: {}",
                r.stderr
            );
            assert_eq!(
                env.state(name).refresh_token().as_ref(),
                Some(&chain),
                "{name}"
            );
        }
        assert_eq!(
            env.emu.requests(Endpoint::VandarLogin),
            logins,
            "{name}: logged in"
        );
        env.run(&["once", "--force"]).assert_code(0);
        assert_ne!(
            env.state(name).refresh_token().as_ref(),
            Some(&chain),
            "{name}"
        );
        assert_eq!(env.emu.reused_refresh_tokens(), 0, "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// A rotated refresh token beside an unusable access token

/// Writes the config of one credential under test.
type Configure = dyn Fn(&Env) + Sync;

#[test]
fn a_rotated_refresh_token_is_kept_when_the_access_token_is_unusable() {
    let faults = [
        Fault::EmptyToken,
        Fault::TokenWithWhitespace,
        Fault::LongToken,
        Fault::TokenAsNumber,
    ];
    // (credential, endpoint of its refresh, how to configure it)
    let kinds: [(&str, Endpoint, &Configure); 4] = [
        ("vandar-main", Endpoint::VandarRefresh, &|env| {
            vandar(env, Some("def502seed"), false, "")
        }),
        ("idp", Endpoint::OAuth2, &|env| oauth2(env, "refresh_token")),
        ("idp", Endpoint::OAuth2, &|env| oauth2(env, "password")),
        ("hj", Endpoint::VandarRefresh, &|env| http_json(env)),
    ];
    std::thread::scope(|s| {
        for (name, endpoint, configure) in kinds {
            let faults = faults.clone();
            s.spawn(move || {
                let env = Env::new();
                configure(&env);
                env.run(&["once"]).assert_code(0);
                let logins = env.emu.requests(Endpoint::VandarLogin);
                for fault in faults {
                    let good = env.read(&format!("out/{name}.token"));
                    let what = format!("{name} {fault:?}");
                    let before = env.state(name).refresh_token();
                    env.emu.push_fault(endpoint, fault, 1);
                    let r = env.run(&["once", "--force"]);
                    r.assert_code(1);
                    assert_eq!(env.read(&format!("out/{name}.token")), good, "{what}");
                    assert_ne!(env.state(name).refresh_token(), before, "{what}: not kept");
                    // The next refresh presents the rotated token, not the spent one.
                    let r = env.run(&["once", "--force"]);
                    r.assert_code(0);
                    assert_eq!(env.emu.reused_refresh_tokens(), 0, "{what}: {}", r.stderr);
                    assert_eq!(env.emu.requests(Endpoint::VandarLogin), logins, "{what}");
                }
            });
        }
    });
}

// ---------------------------------------------------------------------------------------
// Vandar login

#[test]
fn vandar_v3_login_seeds_the_chain_and_later_renewals_refresh() {
    let env = Env::new();
    vandar(&env, None, true, "");
    let r = env.run(&["once"]);
    r.assert_code(0);
    assert_eq!(env.emu.successes(Endpoint::VandarLogin), 1);
    assert!(issued(&env, "out/vandar-main.token"));
    let chain = env.state("vandar-main").refresh_token();
    assert_eq!(chain.as_ref(), env.emu.valid_refresh_tokens().last());
    for run in 1..=2 {
        env.run(&["once", "--force"]).assert_code(0);
        assert_eq!(env.emu.successes(Endpoint::VandarRefresh), run);
    }
    assert_eq!(
        env.emu.successes(Endpoint::VandarLogin),
        1,
        "logged in again"
    );
    assert_eq!(env.emu.reused_refresh_tokens(), 0);
    let check = env.run(&["check"]);
    assert!(check.stdout.contains("/v3/login"), "{}", check.stdout);
}

#[test]
fn vandar_login_falls_back_to_v2_when_v3_is_gone_unless_pinned() {
    let old_api = EmulatorConfig {
        vandar_v3_login: false,
        ..EmulatorConfig::default()
    };
    let env = Env::with(old_api.clone());
    vandar(&env, None, true, "");
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.emu.successes(Endpoint::VandarLogin), 1);
    assert!(issued(&env, "out/vandar-main.token"));
    assert_eq!(env.state("vandar-main").refresh_token(), None);

    let env = Env::with(old_api);
    vandar(&env, None, true, "    login_version: v3\n");
    let r = env.run(&["once"]);
    r.assert_code(1);
    assert!(r.stderr.contains("HTTP 404"), "{}", r.stderr);
    assert_eq!(env.emu.successes(Endpoint::VandarLogin), 0);
}

#[test]
fn a_rejected_chain_falls_back_to_a_v3_login_that_starts_a_new_one() {
    let env = Env::new();
    vandar(&env, Some("def502seed"), true, "");
    env.run(&["once"]).assert_code(0);
    env.emu
        .push_fault(Endpoint::VandarRefresh, Fault::Revoke, 1);
    let r = env.run(&["once", "--force"]);
    r.assert_code(0);
    assert!(
        r.stderr.contains("started a new refresh chain"),
        "{}",
        r.stderr
    );
    assert_eq!(env.emu.successes(Endpoint::VandarLogin), 1);
    let chain = env.state("vandar-main").refresh_token();
    assert_eq!(chain.as_ref(), env.emu.valid_refresh_tokens().last());
    env.run(&["once", "--force"]).assert_code(0);
    assert_eq!(env.emu.successes(Endpoint::VandarRefresh), 2);
    assert_eq!(env.emu.successes(Endpoint::VandarLogin), 1);
}

// ---------------------------------------------------------------------------------------
// Chain age

#[test]
fn status_and_check_show_the_chain_age_and_warn_early() {
    let env = Env::with(EmulatorConfig {
        // Refresh tokens that live 10 s: after one refresh the chain is "old" at once.
        vandar_refresh_lifetime: Duration::from_secs(10),
        ..EmulatorConfig::default()
    });
    vandar(&env, Some("def502seed"), false, "");
    env.run(&["once"]).assert_code(0);
    let r = env.run(&["status", "--json"]);
    r.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let e = &v[0];
    let issued_at = humantime::parse_rfc3339(e["chain"]["issued_at"].as_str().unwrap())
        .unwrap_or_else(|_| panic!("{e}"));
    let expires = humantime::parse_rfc3339(e["chain"]["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        expires.duration_since(issued_at).unwrap(),
        Duration::from_secs(10 * 86_400),
        "{e}"
    );
    assert!(e["chain"]["age_seconds"].as_u64().unwrap() < 60, "{e}");
    assert_eq!(e["chain"]["warning"], serde_json::Value::Null, "{e}");
    let text = env.run(&["status"]);
    assert!(text.stdout.contains("refresh chain"), "{}", text.stdout);
    let check = env.run(&["check"]);
    assert!(check.stdout.contains("refresh chain"), "{}", check.stdout);

    // An old chain is warned about: rewrite its issue time 8 days back.
    let path = env.state_file("vandar-main");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let old = SystemTime::now() - Duration::from_secs(8 * 86_400);
    state["refresh_issued_at"] = humantime::format_rfc3339_millis(old).to_string().into();
    std::fs::write(&path, state.to_string()).unwrap();
    let r = env.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let warning = v[0]["chain"]["warning"].as_str().unwrap_or_default();
    assert!(warning.contains("10 days"), "{}", r.stdout);
    let text = env.run(&["status"]);
    assert!(text.stdout.contains("warning"), "{}", text.stdout);
    let check = env.run(&["check"]);
    assert!(check.all().contains("10 days"), "{}", check.all());
}

#[test]
fn a_chain_that_died_in_an_outage_says_why_and_what_to_do() {
    let env = Env::with(EmulatorConfig {
        vandar_lifetime: Duration::from_secs(1),
        ..EmulatorConfig::default()
    });
    vandar(&env, Some("def502seed"), false, "");
    env.run(&["once"]).assert_code(0);
    // The outage: nothing refreshes until the access token has expired.
    let expired = || {
        let at = env
            .state("vandar-main")
            .expires_at()
            .map(|t| humantime::parse_rfc3339(&t).unwrap());
        at.is_some_and(|at| SystemTime::now() > at + Duration::from_millis(200))
    };
    assert!(wait_for(Duration::from_secs(5), expired));
    let r = env.run(&["once"]);
    r.assert_code(1);
    assert!(
        r.stderr.contains("rejected the refresh token (HTTP 401)")
            && r.stderr.contains("expired at")
            && r.stderr.contains("dashboard"),
        "{}",
        r.stderr
    );
    assert_eq!(env.emu.stats().expired_refresh_tokens_presented, 1);
}

// ---------------------------------------------------------------------------------------
// Rate limit

#[test]
fn forty_five_vandar_credentials_cold_start_under_the_rate_limit() {
    const N: usize = 45;
    let seeds: Vec<String> = (0..N).map(|i| format!("def502cold{i:02}")).collect();
    let env = Env::with(EmulatorConfig {
        vandar_refresh_seeds: seeds.clone(),
        ..EmulatorConfig::default()
    });
    let blocks: String = seeds
        .iter()
        .enumerate()
        .map(|(i, seed)| vandar_block(&format!("v{i:02}"), Some(seed), false, ""))
        .collect();
    env.config(&format!("credentials:\n{blocks}"));
    let started = Instant::now();
    let r = env.run(&["once"]);
    let took = started.elapsed();
    r.assert_code(0);
    let stats = env.emu.stats();
    eprintln!(
        "45 vandar credentials: {} refreshes, {} answered 429, in {took:?}",
        stats.endpoints[&Endpoint::VandarRefresh].successes,
        stats.vandar_throttled
    );
    assert_eq!(env.emu.successes(Endpoint::VandarRefresh), N as u64);
    assert!(
        stats.vandar_throttled <= 2,
        "{} 429s",
        stats.vandar_throttled
    );
    assert_eq!(env.emu.reused_refresh_tokens(), 0);
    for i in 0..N {
        let name = format!("v{i:02}");
        assert!(
            env.state(&name).refresh_token().is_some(),
            "{name} lost its chain"
        );
        assert!(issued(&env, &format!("out/{name}.token")), "{name}");
    }
    assert_eq!(env.emu.valid_refresh_tokens().len(), N);
}

#[test]
fn a_429_never_costs_a_chain_and_its_retry_after_is_honoured() {
    let env = Env::new();
    vandar(&env, Some("def502seed"), true, "");
    env.run(&["once"]).assert_code(0);
    let throttled = |secs| Fault::Status {
        code: 429,
        body: None,
        retry_after: Some(secs),
    };
    // A short Retry-After is waited out within the fetch: the throttle spent nothing.
    env.emu.push_fault(Endpoint::VandarRefresh, throttled(1), 1);
    let started = Instant::now();
    env.run(&["once", "--force"]).assert_code(0);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(env.emu.successes(Endpoint::VandarRefresh), 2);

    // A long one is left to the schedule, and the chain stays.
    let chain = env.state("vandar-main").refresh_token();
    env.emu
        .push_fault(Endpoint::VandarRefresh, throttled(60), 1);
    let before = SystemTime::now();
    let r = env.run(&["once", "--force"]);
    r.assert_code(1);
    assert!(r.stderr.contains("HTTP 429"), "{}", r.stderr);
    assert_eq!(env.state("vandar-main").refresh_token(), chain);
    let next = env
        .state("vandar-main")
        .next_attempt()
        .map(|t| humantime::parse_rfc3339(&t).unwrap())
        .unwrap();
    assert!(next >= before + Duration::from_secs(59));
    assert_eq!(env.emu.requests(Endpoint::VandarLogin), 0);
    env.run(&["once", "--force"]).assert_code(0);
    assert_eq!(env.emu.reused_refresh_tokens(), 0);
}

// ---------------------------------------------------------------------------------------
// The emulator's settings file

#[test]
fn emulate_refuses_a_settings_file_with_a_typo() {
    let env = Env::new();
    let file = env.path("emu.yaml");
    std::fs::write(&file, "saba_seed_shap: true\n").unwrap();
    let r = Run::from(
        std::process::Command::new(BIN)
            .args(["emulate", "--listen", "127.0.0.1:0", "--settings"])
            .arg(&file)
            .output()
            .unwrap(),
    );
    r.assert_code(2);
    assert!(
        r.stderr.contains("emu.yaml") && r.stderr.contains("saba_seed_shap"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_chain_that_outlived_its_ten_days_says_so() {
    let env = Env::with(EmulatorConfig {
        vandar_refresh_lifetime: Duration::from_secs(2),
        ..EmulatorConfig::default()
    });
    vandar(&env, Some("def502seed"), true, "    login_version: v2\n");
    env.run(&["once"]).assert_code(0);
    // Pretend the chain's refresh token was issued 11 days ago (the emulator's is 2 s).
    let path = env.state_file("vandar-main");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let old = SystemTime::now() - Duration::from_secs(11 * 86_400);
    state["refresh_issued_at"] = humantime::format_rfc3339_millis(old).to_string().into();
    std::fs::write(&path, state.to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    // With a login configured, tokend logs in and says why the chain died.
    let r = env.run(&["once", "--force"]);
    r.assert_code(0);
    assert!(
        r.stderr.contains("refresh token was rejected")
            && r.stderr.contains("11d old and lives 10d")
            && r.stderr.contains("logs in with mobile + password"),
        "{}",
        r.stderr
    );
    assert_eq!(env.emu.successes(Endpoint::VandarLogin), 1);
}

#[test]
fn a_cold_daemon_with_forty_five_vandar_credentials_stays_under_the_rate_limit() {
    const N: usize = 45;
    let seeds: Vec<String> = (0..N).map(|i| format!("def502run{i:02}")).collect();
    let env = Env::with(EmulatorConfig {
        vandar_refresh_seeds: seeds.clone(),
        ..EmulatorConfig::default()
    });
    let blocks: String = seeds
        .iter()
        .enumerate()
        .map(|(i, seed)| vandar_block(&format!("v{i:02}"), Some(seed), false, ""))
        .collect();
    env.config(&format!("credentials:\n{blocks}"));
    let d = env.daemon();
    assert!(
        wait_for(Duration::from_secs(20), || env
            .emu
            .successes(Endpoint::VandarRefresh)
            == N as u64),
        "{}",
        d.log()
    );
    let throttled = env.emu.stats().vandar_throttled;
    eprintln!("daemon, 45 vandar credentials: {throttled} answered 429");
    assert!(throttled <= 2, "{throttled} 429s:\n{}", d.log());
    assert_eq!(env.emu.reused_refresh_tokens(), 0);
    assert!(wait_for(Duration::from_secs(5), || (0..N)
        .all(|i| issued(&env, &format!("out/v{i:02}.token")))));
}

#[test]
fn login_version_is_checked() {
    let env = Env::new();
    vandar(&env, None, true, "    login_version: v4\n");
    let r = env.run(&["check"]);
    r.assert_code(2);
    assert!(
        r.stderr.contains("login_version") || r.stderr.contains("v4"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("v3"), "{}", r.stderr);
}
