//! Every provider against the emulator through `tokend once`: what a good answer writes, what
//! bad credentials and broken answers print (and that they never touch a good output), and
//! Vandar's rotating refresh chain with its fallback to login.

use std::time::{Duration, SystemTime};

use crate::support::config::*;
use crate::support::*;

/// The newest access token the emulator issued (Vandar refresh tokens, `def502...`, are
/// issued after their access token and are skipped).
fn last_access_token(env: &Env) -> Option<String> {
    env.emu
        .issued_tokens()
        .into_iter()
        .rev()
        .find(|t| !t.starts_with("def502"))
}

fn read_bytes(env: &Env, rel: &str) -> Option<Vec<u8>> {
    std::fs::read(env.path(rel)).ok()
}

/// Runs `f` for every kind in parallel threads, each with its own emulator and temp dir.
fn for_each_kind(f: impl Fn(Kind) + Sync) {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = ALL.iter().map(|&kind| s.spawn(move || f(kind))).collect();
        let mut failed = Vec::new();
        for (kind, h) in ALL.iter().zip(handles) {
            if h.join().is_err() {
                failed.push(*kind);
            }
        }
        assert!(
            failed.is_empty(),
            "failed for {failed:?} (see panics above)"
        );
    });
}

/// What a clear error for a non-JSON or broken body must never look like.
#[track_caller]
fn assert_no_parser_jargon(kind: Kind, stderr: &str) {
    for jargon in [
        "expected value",
        "line 1 column",
        "EOF while parsing",
        "key must be a string",
        "trailing characters",
        "invalid type",
    ] {
        assert!(
            !stderr.contains(jargon),
            "{kind:?}: parser jargon `{jargon}` in:\n{stderr}"
        );
    }
}

#[track_caller]
fn assert_no_token_leaked(kind: Kind, env: &Env, text: &str) {
    for token in env.emu.issued_tokens() {
        assert!(
            !text.contains(&token),
            "{kind:?}: a token leaked into:\n{text}"
        );
    }
}

#[test]
fn every_provider_writes_exactly_an_issued_token() {
    for_each_kind(|kind| {
        let env = Env::with(emulator());
        let scope = matches!(kind, Kind::OAuth2Post | Kind::OAuth2Basic);
        let cred = if scope {
            kind.cred().extra("    scope: \"read write\"\n")
        } else {
            kind.cred()
        };
        write_config(&env, &[cred]);
        let r = env.run(&["once"]);
        r.assert_code(0);
        let token = env.read(&kind.out());
        assert!(!token.is_empty(), "{kind:?}: empty output");
        assert_eq!(
            last_access_token(&env).as_ref(),
            Some(&token),
            "{kind:?}: the output is not the token the provider issued last"
        );
        assert_eq!(env.emu.successes(kind.endpoint()), 1, "{kind:?}");
        assert_eq!(env.total_requests(), 1, "{kind:?}: exactly one request");
        assert_no_token_leaked(kind, &env, &r.all());
        // Secrets and Vandar's personal profile data stay out of logs and state.
        let state = env.state(kind.name()).raw();
        for private in [kind.secret(true), "national_code", "maryam@example.com"] {
            assert!(
                !r.all().contains(private) && !state.contains(private),
                "{kind:?}: `{private}` in the output of `once` or in state:\n{}\n{state}",
                r.all()
            );
        }
        match kind {
            Kind::OAuth2Post => {
                assert_eq!(
                    env.emu.last_oauth2_auth().as_deref(),
                    Some("client_secret_post")
                );
                assert_eq!(env.emu.last_oauth2_scope().as_deref(), Some("read write"));
            }
            Kind::OAuth2Basic => {
                assert_eq!(
                    env.emu.last_oauth2_auth().as_deref(),
                    Some("client_secret_basic")
                );
                assert_eq!(env.emu.last_oauth2_scope().as_deref(), Some("read write"));
            }
            _ => {}
        }
    });
}

#[test]
fn bad_credentials_show_the_providers_message_and_touch_no_output() {
    for_each_kind(|kind| {
        let env = Env::with(emulator());
        let out = kind.out();

        // Wrong from the start: no output file at all.
        write_config(&env, &[kind.cred().bad()]);
        let r = env.run(&["once"]);
        r.assert_code(1);
        assert!(
            r.stderr.contains(&format!("credential `{}`", kind.name())),
            "{kind:?}: the credential is not named:\n{}",
            r.stderr
        );
        for want in kind.rejection() {
            assert!(
                r.stderr.contains(want),
                "{kind:?}: `{want}` missing from:\n{}",
                r.stderr
            );
        }
        assert_no_parser_jargon(kind, &r.stderr);
        assert!(
            !env.path(&out).exists(),
            "{kind:?}: an output was created by a failed run"
        );

        // Good, then wrong again: the good output stays byte for byte.
        write_config(&env, &[kind.cred()]);
        env.run(&["once"]).assert_code(0);
        let good = read_bytes(&env, &out).expect("good output");
        write_config(&env, &[kind.cred().bad()]);
        let r = env.run(&["once", "--force"]);
        r.assert_code(1);
        for want in kind.rejection() {
            assert!(
                r.stderr.contains(want),
                "{kind:?}: `{want}` missing from:\n{}",
                r.stderr
            );
        }
        assert_eq!(
            read_bytes(&env, &out).as_ref(),
            Some(&good),
            "{kind:?}: a rejected run changed the output"
        );
        assert_no_token_leaked(kind, &env, &r.all());
    });
}

/// A good run, then `fault` on the next request: exit 1 with every `expect` in stderr, and
/// the good output untouched.
fn fault_keeps_the_good_output(fault: Fault, timeout: &'static str, expect: &[&str]) {
    for_each_kind(|kind| {
        let env = Env::with(emulator());
        write_config(&env, &[kind.cred().timeout(timeout)]);
        env.run(&["once"]).assert_code(0);
        let good = read_bytes(&env, &kind.out()).expect("good output");

        env.emu.push_fault(kind.endpoint(), fault.clone(), 1);
        let r = env.run(&["once", "--force"]);
        r.assert_code(1);
        assert_eq!(
            env.emu.requests(kind.endpoint()),
            2,
            "{kind:?}: the fault was not met"
        );
        assert!(
            r.stderr.contains(&format!("credential `{}`", kind.name())),
            "{kind:?}: the credential is not named:\n{}",
            r.stderr
        );
        for want in expect {
            assert!(
                r.stderr.contains(want),
                "{kind:?}: `{want}` missing from:\n{}",
                r.stderr
            );
        }
        assert_no_parser_jargon(kind, &r.stderr);
        assert_no_token_leaked(kind, &env, &r.all());
        assert_eq!(
            read_bytes(&env, &kind.out()).as_ref(),
            Some(&good),
            "{kind:?}: a failed run changed the output"
        );
    });
}

#[test]
fn http_500_is_reported_and_keeps_the_output() {
    fault_keeps_the_good_output(
        Fault::Status {
            code: 500,
            body: None,
            retry_after: None,
        },
        "2s",
        &["HTTP 500"],
    );
}

#[test]
fn html_500_is_reported_without_parser_jargon() {
    fault_keeps_the_good_output(
        Fault::Status {
            code: 500,
            body: Some("<html><body><h1>500 Internal Server Error</h1></body></html>".into()),
            retry_after: None,
        },
        "2s",
        &["HTTP 500"],
    );
}

#[test]
fn http_429_is_reported_and_its_retry_after_is_honoured() {
    fault_keeps_the_good_output(
        Fault::Status {
            code: 429,
            body: None,
            retry_after: Some(30),
        },
        "2s",
        &["HTTP 429"],
    );
    // The next attempt respects Retry-After, not the 100ms..500ms backoff; with no token to
    // protect, a Retry-After (30 s) longer than `retry.permanent` (2 s here) is cut to it.
    let env = Env::with(emulator());
    write_config(&env, &[Kind::Yavapteke.cred()]);
    env.emu.push_fault(
        Endpoint::Yavapteke,
        Fault::Status {
            code: 429,
            body: None,
            retry_after: Some(30),
        },
        1,
    );
    let before = SystemTime::now();
    env.run(&["once"]).assert_code(1);
    let state = env.state("pharmacy");
    let next = state["next_attempt"]
        .as_str()
        .unwrap_or_else(|| panic!("no next_attempt in {state}"));
    let next = parse_time(next);
    assert!(
        next >= before + Duration::from_millis(1900),
        "next attempt {next:?} ignores Retry-After (state {state})"
    );
    assert!(
        next < before + Duration::from_secs(25),
        "next attempt {next:?} waits longer than retry.permanent without a token (state {state})"
    );
}

#[test]
fn a_hanging_provider_times_out() {
    fault_keeps_the_good_output(Fault::Hang, "1s", &["no answer", "within 1s"]);
}

#[test]
fn a_garbage_body_is_not_json() {
    fault_keeps_the_good_output(Fault::Garbage, "2s", &["not JSON"]);
}

#[test]
fn an_empty_token_is_refused() {
    fault_keeps_the_good_output(Fault::EmptyToken, "2s", &["token is empty"]);
}

#[test]
fn an_oversized_body_is_refused() {
    fault_keeps_the_good_output(
        Fault::Oversized {
            bytes: 2 * 1024 * 1024,
        },
        "2s",
        &["larger than"],
    );
}

#[test]
fn a_token_with_whitespace_is_refused() {
    fault_keeps_the_good_output(Fault::TokenWithWhitespace, "2s", &["whitespace"]);
}

fn vandar_chain_env(with_login: bool) -> Env {
    vandar_chain_env_with(with_login, EmulatorConfig::default())
}

fn vandar_chain_env_with(with_login: bool, config: EmulatorConfig) -> Env {
    let env = Env::with(config);
    let cred = if with_login {
        env.secret("vandar-password", "vandar-pass\n");
        Kind::VandarChain.cred().extra(
            "    mobile: \"09123456789\"\n    password: { file: {dir}/secrets/vandar-password }\n",
        )
    } else {
        Kind::VandarChain.cred()
    };
    write_config(&env, &[cred]);
    env
}

#[test]
fn vandar_refresh_rejected_without_login_says_a_person_must_act() {
    let env = vandar_chain_env(false);
    env.run(&["once"]).assert_code(0);
    let good = read_bytes(&env, "out/vandar-chain.token").unwrap();

    env.emu
        .push_fault(Endpoint::VandarRefresh, Fault::Revoke, 1);
    let r = env.run(&["once", "--force"]);
    r.assert_code(1);
    assert!(
        r.stderr.contains("credential `vandar-chain`")
            && r.stderr
                .contains("provider rejected the refresh token (HTTP 401)")
            && r.stderr.contains("dashboard"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("JSON") && !r.stderr.to_lowercase().contains("parse"),
        "a 401 `{{\"unauthorized\"}}` is not a parse error:\n{}",
        r.stderr
    );
    assert_eq!(read_bytes(&env, "out/vandar-chain.token"), Some(good));

    // The dead token is never sent again.
    let r = env.run(&["once", "--force"]);
    r.assert_code(1);
    assert_eq!(env.emu.requests(Endpoint::VandarRefresh), 2, "{}", r.stderr);
    assert!(r.stderr.contains("dashboard"), "{}", r.stderr);
}

#[test]
fn vandar_rotation_sends_the_latest_refresh_token_across_processes() {
    let env = vandar_chain_env(false);
    let mut previous = String::new();
    for run in 1..=3u64 {
        env.run(&["once", "--force"]).assert_code(0);
        assert_eq!(env.emu.successes(Endpoint::VandarRefresh), run);
        assert_eq!(
            env.emu.reused_refresh_tokens(),
            0,
            "run {run} sent a spent refresh token"
        );
        let valid = env.emu.valid_refresh_tokens();
        assert_eq!(valid.len(), 1, "run {run}: {valid:?}");
        assert_eq!(
            env.state("vandar-chain").refresh_token().as_ref(),
            valid.last(),
            "run {run}: state does not hold the newest refresh token"
        );
        let token = env.read("out/vandar-chain.token");
        assert!(env.emu.issued_tokens().contains(&token));
        assert_ne!(token, previous, "run {run} did not write a new token");
        previous = token;
    }
}

#[test]
fn vandar_falls_back_to_login_and_never_resends_the_dead_refresh_token() {
    // The seed's API: only /v2/login, which starts no chain.
    let env = vandar_chain_env_with(
        true,
        EmulatorConfig {
            vandar_v3_login: false,
            ..EmulatorConfig::default()
        },
    );
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.emu.successes(Endpoint::VandarRefresh), 1);

    env.emu
        .push_fault(Endpoint::VandarRefresh, Fault::Revoke, 1);
    let r = env.run(&["once", "--force"]);
    r.assert_code(0);
    assert_eq!(env.emu.successes(Endpoint::VandarLogin), 1, "{}", r.stderr);
    assert_eq!(env.emu.requests(Endpoint::VandarRefresh), 2);
    let token = env.read("out/vandar-chain.token");
    assert_eq!(last_access_token(&env).as_ref(), Some(&token));
    assert_eq!(env.state("vandar-chain").refresh_token(), None);

    let r = env.run(&["once", "--force"]);
    r.assert_code(0);
    assert_eq!(
        env.emu.requests(Endpoint::VandarRefresh),
        2,
        "the dead refresh token was sent again: {}",
        r.stderr
    );
    assert_eq!(env.emu.successes(Endpoint::VandarLogin), 2);
    assert_eq!(env.emu.reused_refresh_tokens(), 0);
    let token = env.read("out/vandar-chain.token");
    assert_eq!(last_access_token(&env).as_ref(), Some(&token));
}

#[test]
fn vandar_new_seed_after_the_chain_died_is_used() {
    let env = vandar_chain_env(false);
    env.run(&["once"]).assert_code(0);
    env.emu
        .push_fault(Endpoint::VandarRefresh, Fault::Revoke, 1);
    env.run(&["once", "--force"]).assert_code(1);
    assert!(env.emu.valid_refresh_tokens().is_empty());

    env.emu.add_refresh_seed("def502fresh");
    env.secret("vandar-chain", "def502fresh\n");
    let r = env.run(&["once", "--force"]);
    r.assert_code(0);
    assert_eq!(env.emu.requests(Endpoint::VandarRefresh), 3, "{}", r.stderr);
    assert_eq!(env.emu.successes(Endpoint::VandarRefresh), 2);
    assert_eq!(env.emu.reused_refresh_tokens(), 0);
    assert_eq!(
        env.state("vandar-chain").refresh_token().as_ref(),
        env.emu.valid_refresh_tokens().last()
    );
    let token = env.read("out/vandar-chain.token");
    assert_eq!(last_access_token(&env).as_ref(), Some(&token));

    // And the chain goes on from there.
    env.run(&["once", "--force"]).assert_code(0);
    assert_eq!(env.emu.successes(Endpoint::VandarRefresh), 3);
    assert_eq!(env.emu.reused_refresh_tokens(), 0);
}

#[test]
fn saba_sends_token_valid_days_defaulting_to_30() {
    let env = Env::new();
    write_config(&env, &[Kind::Saba.cred()]);
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.emu.last_saba_token_valid_day(), Some(30));

    write_config(
        &env,
        &[Kind::Saba.cred().extra("    token_valid_days: 15\n")],
    );
    let before = SystemTime::now();
    env.run(&["once", "--force"]).assert_code(0);
    assert_eq!(env.emu.last_saba_token_valid_day(), Some(15));
    let state = env.state("saba-sms");
    let expires = state.expires_time().unwrap();
    let days15 = Duration::from_secs(15 * 86_400);
    assert!(
        expires >= before + days15 - Duration::from_secs(5)
            && expires <= SystemTime::now() + days15 + Duration::from_secs(1),
        "a 15-day token expires at {}",
        state["token"]["expires_at"]
    );
}

#[test]
fn saba_expiry_follows_the_jwt_exp_when_sooner() {
    let env = Env::with(EmulatorConfig {
        saba_lifetime_cap: Some(Duration::from_secs(60)),
        ..EmulatorConfig::default()
    });
    write_config(
        &env,
        &[Kind::Saba
            .cred()
            .extra("    token_valid_days: 15\n")
            .outputs("      - file: {dir}/out/saba.json\n        format: json\n")],
    );
    let before = SystemTime::now();
    env.run(&["once"]).assert_code(0);
    let after = SystemTime::now();
    let doc: serde_json::Value = serde_json::from_str(&env.read("out/saba.json")).unwrap();
    let expires = parse_time(doc["expires_at"].as_str().unwrap());
    assert!(
        expires >= before + Duration::from_secs(55) && expires <= after + Duration::from_secs(61),
        "expires_at {} is not about a minute from now",
        doc["expires_at"]
    );
}

#[test]
fn yavapteke_can_send_the_secret_as_secret() {
    let env = Env::new();
    write_config(
        &env,
        &[Kind::Yavapteke
            .cred()
            .extra("    client_secret_param: secret\n")],
    );
    env.run(&["once"]).assert_code(0);
    assert_eq!(
        env.emu.last_yavapteke_secret_field().as_deref(),
        Some("secret")
    );
    let token = env.read("out/pharmacy.token");
    assert_eq!(last_access_token(&env).as_ref(), Some(&token));
}

#[test]
fn once_writes_the_others_when_one_credential_fails() {
    let env = Env::with(emulator());
    write_config(&env, &[Kind::Yavapteke.cred(), Kind::OAuth2Post.cred()]);
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
    assert!(
        r.stderr.contains("credential `pharmacy`") && r.stderr.contains("HTTP 500"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("credential `idp-post`:"),
        "the good credential is reported failed:\n{}",
        r.stderr
    );
    let token = env.read("out/idp-post.token");
    assert_eq!(env.emu.issued_tokens(), vec![token]);
    assert!(!env.path("out/pharmacy.token").exists());
}

#[test]
fn once_reuses_a_fresh_token_and_force_fetches_one() {
    for_each_kind(|kind| {
        let env = Env::with(emulator());
        write_config(&env, &[kind.cred()]);
        env.run(&["once"]).assert_code(0);
        let first = env.read(&kind.out());
        assert_eq!(env.total_requests(), 1, "{kind:?}");

        let r = env.run(&["once"]);
        r.assert_code(0);
        assert_eq!(
            env.total_requests(),
            1,
            "{kind:?}: a second `once` asked the provider again:\n{}",
            r.stderr
        );
        assert_eq!(env.read(&kind.out()), first, "{kind:?}");

        env.run(&["once", "--force"]).assert_code(0);
        assert_eq!(env.total_requests(), 2, "{kind:?}");
        assert_eq!(env.emu.requests(kind.endpoint()), 2, "{kind:?}");
        let forced = env.read(&kind.out());
        assert_ne!(forced, first, "{kind:?}: --force did not write a new token");
        assert_eq!(last_access_token(&env).as_ref(), Some(&forced), "{kind:?}");
    });
}
