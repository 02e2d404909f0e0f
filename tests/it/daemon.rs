//! `tokend run` as an operator runs it: tokens replaced before they expire while readers
//! only ever see whole tokens, retries that neither give up nor hammer a provider, restarts
//! that reuse state, and the signals (TERM, INT, HUP, USR1) with their promised effects.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use crate::support::*;

fn secs(n: f64) -> Duration {
    Duration::from_secs_f64(n)
}

/// A yavapteke credential named `name` writing `{dir}/out/NAME.token` (raw) and, when
/// `json` is set, `{dir}/out/NAME.json`; `extra` is inserted as credential keys.
fn yav_credential(name: &str, json: bool, extra: &str) -> String {
    let mut outputs = format!("      - file: {{dir}}/out/{name}.token\n");
    if json {
        outputs += &format!("      - file: {{dir}}/out/{name}.json\n        format: json\n");
    }
    let cred = Kind::Yavapteke
        .cred()
        .named(name)
        .secret_in("yav", "yav-secret");
    cred.extra(extra).outputs(&outputs).block()
}

fn oauth2_credential(name: &str, extra: &str) -> String {
    format!(
        r#"  - name: {name}
    provider: oauth2
    token_url: {{url}}/oauth2/token
    client_id: tokend
    client_secret: {{ file: {{dir}}/secrets/oauth }}
    timeout: 2s
    retry: {{ initial: 100ms, max: 500ms, permanent: 2s }}
{extra}    outputs:
      - file: {{dir}}/out/{name}.token
"#
    )
}

fn saba_credential(name: &str) -> String {
    format!(
        r#"  - name: {name}
    provider: saba
    base_url: {{url}}
    username: sabauser
    password: {{ file: {{dir}}/secrets/saba }}
    virtual_number: "30001234"
    timeout: 2s
    retry: {{ initial: 100ms, max: 500ms, permanent: 2s }}
    outputs:
      - file: {{dir}}/out/{name}.token
"#
    )
}

fn all_secrets(env: &Env) {
    env.secret("yav", "yav-secret\n");
    env.secret("oauth", "oauth-secret\n");
    env.secret("saba", "saba-pass\n");
}

fn file_id(path: &std::path::Path) -> (u64, i64, i64) {
    let m = std::fs::metadata(path).unwrap();
    (m.ino(), m.mtime(), m.mtime_nsec())
}

#[test]
fn short_tokens_are_replaced_before_expiry_and_readers_only_ever_see_whole_tokens() {
    let env = Env::with(EmulatorConfig {
        yavapteke_lifetime: 4 * S,
        ..Default::default()
    });
    all_secrets(&env);
    env.config(&format!(
        "credentials:\n{}",
        yav_credential("pharmacy", true, "")
    ));
    let _d = env.daemon();
    let raw = env.path("out/pharmacy.token");
    let json = env.path("out/pharmacy.json");
    assert!(
        wait_for(5 * S, || json.exists() && raw.exists()),
        "no output; log:\n{}",
        _d.log()
    );

    let emu_tokens =
        |env: &Env| -> HashSet<String> { env.emu.issued_tokens().into_iter().collect() };
    let mut issued = emu_tokens(&env);
    let started = Instant::now();
    let mut reads = 0u64;
    // Tokens in the order the reader first saw them, and when; their times from state.
    let mut seen: Vec<(String, SystemTime)> = Vec::new();
    let mut times: BTreeMap<String, (SystemTime, SystemTime)> = BTreeMap::new();
    while started.elapsed() < secs(13.0) {
        let now = SystemTime::now();
        let r = std::fs::read_to_string(&raw).expect("raw output vanished");
        let j = std::fs::read_to_string(&json).expect("json output vanished");
        reads += 2;
        if !issued.contains(&r) {
            issued = emu_tokens(&env);
        }
        assert!(
            issued.contains(&r),
            "raw output holds {r:?}, not an issued token"
        );
        let doc: serde_json::Value = serde_json::from_str(&j)
            .unwrap_or_else(|e| panic!("json output is not whole JSON ({e}): {j:?}"));
        let jt = doc["token"].as_str().unwrap_or_default().to_owned();
        if !issued.contains(&jt) {
            issued = emu_tokens(&env);
        }
        assert!(
            issued.contains(&jt),
            "json output holds {jt:?}, not an issued token"
        );
        parse_time(doc["expires_at"].as_str().expect("expires_at"));
        if seen.last().map(|(t, _)| t) != Some(&r) {
            seen.push((r.clone(), now));
            // The state file is saved before the outputs, so it holds this token (a newer
            // one would need another refresh, seconds away).
            let st = env.state("pharmacy");
            if let (Some(t), Some(i), Some(e)) = (st.token(), st.issued_time(), st.expires_time()) {
                times.insert(t, (i, e));
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }

    assert!(
        seen.len() >= 4,
        "only {} tokens in 13 s of 4 s tokens: {seen:?}",
        seen.len()
    );
    for pair in seen.windows(2) {
        let (prev, _) = &pair[0];
        let (next, next_seen) = &pair[1];
        let (_, prev_expires) = times
            .get(prev)
            .unwrap_or_else(|| panic!("no state times for {prev}"));
        let (next_issued, _) = times
            .get(next)
            .unwrap_or_else(|| panic!("no state times for {next}"));
        assert!(
            next_issued < prev_expires,
            "{next} issued at {next_issued:?}, after {prev} expired at {prev_expires:?}"
        );
        assert!(
            next_seen < prev_expires,
            "readers first saw {next} at {next_seen:?}, after {prev} expired at {prev_expires:?}"
        );
    }
    let requests = env.emu.requests(Endpoint::Yavapteke);
    assert!(
        (seen.len() as u64..=seen.len() as u64 + 2).contains(&requests),
        "{requests} requests for {} tokens",
        seen.len()
    );
    assert!(reads > 2000, "the reader managed only {reads} reads");
    eprintln!("{reads} reads, {} tokens, {requests} requests", seen.len());
}

#[test]
fn transient_errors_are_retried_quickly_until_success() {
    let env = Env::new();
    yavapteke_config(&env, "");
    let fault = Fault::Status {
        code: 500,
        body: None,
        retry_after: None,
    };
    env.emu.push_fault(Endpoint::Yavapteke, fault, 5);
    let started = Instant::now();
    let d = env.daemon();
    assert!(
        wait_for(5 * S, || env.path("out/pharmacy.token").exists()),
        "no token 5 s after 5 transient faults (retry 100ms..500ms); log:\n{}",
        d.log()
    );
    let took = started.elapsed();
    let token = env.read("out/pharmacy.token");
    assert!(env.emu.issued_tokens().contains(&token));
    assert_eq!(env.emu.requests(Endpoint::Yavapteke), 6);
    let warns: Vec<String> = lines_at(&d.log(), "WARN")
        .into_iter()
        .filter(|l| l.contains("HTTP 500"))
        .collect();
    assert_eq!(warns.len(), 5, "one WARN per failure:\n{}", d.log());
    assert!(took < 4 * S, "took {took:?}");
}

#[test]
fn bad_credentials_are_retried_at_the_permanent_pace() {
    let env = Env::new();
    env.secret("yav", "wrong-secret\n");
    env.config(&format!(
        "credentials:\n{}",
        yav_credential("pharmacy", false, "").replace(
            "retry: { initial: 100ms, max: 500ms, permanent: 2s }",
            "retry: { initial: 100ms, max: 500ms, permanent: 3s }"
        )
    ));
    let started = Instant::now();
    let d = env.daemon();
    assert!(wait_for(2 * S, || env.emu.requests(Endpoint::Yavapteke) == 1));
    // permanent: 3s (+ up to 10 % jitter): the second attempt at 3..3.3 s, the third not
    // before 6 s.
    assert!(
        wait_for(5 * S, || env.emu.requests(Endpoint::Yavapteke) >= 2),
        "no second attempt within 5 s; log:\n{}",
        d.log()
    );
    assert!(
        started.elapsed() >= secs(2.9),
        "second attempt too soon: {:?}",
        started.elapsed()
    );
    std::thread::sleep((started + secs(5.5)).saturating_duration_since(Instant::now()));
    assert_eq!(
        env.emu.requests(Endpoint::Yavapteke),
        2,
        "log:\n{}",
        d.log()
    );
    let errors = lines_at(&d.log(), "ERROR");
    assert!(
        errors.iter().any(|l| l.contains("invalid_client")),
        "no ERROR line with the provider's message:\n{}",
        d.log()
    );
    assert!(!env.path("out/pharmacy.token").exists());
}

#[test]
fn bad_credentials_with_the_default_permanent_delay_are_tried_once() {
    let env = Env::new();
    env.secret("yav", "wrong-secret\n");
    env.config(&format!(
        "credentials:\n{}",
        yav_credential("pharmacy", false, "").replace(
            "retry: { initial: 100ms, max: 500ms, permanent: 2s }",
            "retry: { initial: 100ms, max: 500ms }"
        )
    ));
    let d = env.daemon();
    assert!(wait_for(2 * S, || env.emu.requests(Endpoint::Yavapteke) == 1));
    std::thread::sleep(3 * S);
    assert_eq!(
        env.emu.requests(Endpoint::Yavapteke),
        1,
        "log:\n{}",
        d.log()
    );
    assert!(
        lines_at(&d.log(), "ERROR")
            .iter()
            .any(|l| l.contains("invalid_client")),
        "{}",
        d.log()
    );
}

#[test]
fn a_restart_reuses_the_token_in_state_without_calling_the_provider() {
    let env = Env::new();
    yavapteke_config(&env, "");
    let out = env.path("out/pharmacy.token");
    let mut d = env.daemon();
    assert!(wait_for(5 * S, || out.exists()), "{}", d.log());
    let token = env.read("out/pharmacy.token");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(10 * S), Some(0), "{}", d.log());
    drop(d);
    std::fs::remove_file(&out).unwrap();
    let requests = env.emu.requests(Endpoint::Yavapteke);

    let d = env.daemon();
    assert!(
        wait_for(S, || out.exists()),
        "output not restored within 1 s:\n{}",
        d.log()
    );
    assert_eq!(env.read("out/pharmacy.token"), token);
    // Give a needless fetch the chance to happen.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        env.emu.requests(Endpoint::Yavapteke),
        requests,
        "{}",
        d.log()
    );
}

#[test]
fn sigterm_waits_for_an_in_flight_rotation_and_exits_0() {
    let env = Env::new();
    env.secret("vandar-refresh", "def502seed\n");
    env.config(
        r#"credentials:
  - name: vandar-main
    provider: vandar
    base_url: {url}
    refresh_token: { file: {dir}/secrets/vandar-refresh }
    timeout: 10s
    retry: { initial: 100ms, max: 500ms, permanent: 2s }
    outputs:
      - file: {dir}/out/vandar.token
"#,
    );
    env.emu
        .push_fault(Endpoint::VandarRefresh, Fault::Delay { ms: 3000 }, 1);
    let mut d = env.daemon();
    assert!(
        wait_for(5 * S, || env.emu.requests(Endpoint::VandarRefresh) == 1),
        "{}",
        d.log()
    );
    let sent = Instant::now();
    d.signal(Signal::SIGTERM);
    let code = d.wait_exit(10 * S);
    assert_eq!(code, Some(0), "no clean exit within 10 s:\n{}", d.log());
    assert!(
        sent.elapsed() >= secs(2.0),
        "exited before the refresh landed: {:?}",
        sent.elapsed()
    );

    // The delayed answer consumed the seed and issued the chain's next refresh token: it
    // must be in state, or the chain is lost.
    let valid = env.emu.valid_refresh_tokens();
    assert_eq!(valid.len(), 1, "{valid:?}");
    let state = env.state("vandar-main");
    assert_eq!(
        state["refresh_token"].as_str(),
        valid.last().map(String::as_str),
        "{state}"
    );
    let token = env.read("out/vandar.token");
    assert!(
        env.emu.issued_tokens().contains(&token),
        "output: {token:?}\n{}",
        d.log()
    );
    drop(d);

    env.run(&["once", "--force"]).assert_code(0);
    assert_eq!(env.emu.reused_refresh_tokens(), 0);
    assert_eq!(env.emu.requests(Endpoint::VandarRefresh), 2);
}

#[test]
fn sigint_exits_0() {
    let env = Env::new();
    yavapteke_config(&env, "");
    let mut d = env.daemon();
    assert!(
        wait_for(5 * S, || env.path("out/pharmacy.token").exists()),
        "{}",
        d.log()
    );
    d.signal(Signal::SIGINT);
    assert_eq!(d.wait_exit(10 * S), Some(0), "{}", d.log());
}

#[test]
fn sighup_starts_added_stops_removed_and_leaves_unchanged_credentials_alone() {
    let env = Env::with(EmulatorConfig {
        // B refreshes every second or two, so "no more requests" means something.
        oauth2_lifetime: 2 * S,
        ..Default::default()
    });
    all_secrets(&env);
    let a = yav_credential("a", false, "");
    let b = oauth2_credential("b", "");
    let c = saba_credential("c");
    env.config(&format!("credentials:\n{a}{b}"));
    let d = env.daemon();
    let (out_a, out_b, out_c) = (
        env.path("out/a.token"),
        env.path("out/b.token"),
        env.path("out/c.token"),
    );
    assert!(
        wait_for(5 * S, || out_a.exists() && out_b.exists()),
        "{}",
        d.log()
    );
    // B is really being refreshed before the reload.
    assert!(
        wait_for(5 * S, || env.emu.requests(Endpoint::OAuth2) >= 2),
        "{}",
        d.log()
    );
    let a_requests = env.emu.requests(Endpoint::Yavapteke);
    let a_file = file_id(&out_a);
    let a_token = env.read("out/a.token");

    env.config(&format!("credentials:\n{a}{c}"));
    let log_before = d.log().len();
    d.signal(Signal::SIGHUP);
    assert!(
        wait_for(5 * S, || out_c.exists()),
        "C not started:\n{}",
        d.log()
    );
    assert!(env.emu.issued_tokens().contains(&env.read("out/c.token")));
    assert!(
        wait_for(2 * S, || d.log().contains("config reloaded")),
        "{}",
        d.log()
    );
    let b_requests = env.emu.requests(Endpoint::OAuth2);
    // Two of B's refresh intervals.
    std::thread::sleep(secs(3.5));
    assert_eq!(
        env.emu.requests(Endpoint::OAuth2),
        b_requests,
        "B still refreshed after removal"
    );
    assert_eq!(
        env.emu.requests(Endpoint::Yavapteke),
        a_requests,
        "A was refetched"
    );
    assert_eq!(file_id(&out_a), a_file, "A's output was rewritten");
    assert_eq!(env.read("out/a.token"), a_token);
    let after = plain(&d.log()[log_before..]);
    assert!(after.contains("config reloaded"), "{after}");
    assert!(
        !after.lines().any(|l| l.contains("credential=\"a\"")),
        "A was restarted on reload:\n{after}"
    );

    // A change to A restarts it: its output is rewritten with the new mode.
    assert_eq!(mode(&out_a), 0o600);
    let a2 = a.replace(
        "      - file: {dir}/out/a.token\n",
        "      - file: {dir}/out/a.token\n        mode: \"0640\"\n",
    );
    assert_ne!(a2, a);
    env.config(&format!("credentials:\n{a2}{c}"));
    let log_before = d.log().len();
    d.signal(Signal::SIGHUP);
    assert!(
        wait_for(5 * S, || mode(&out_a) == 0o640),
        "A not restarted after its config changed:\n{}",
        d.log()
    );
    assert_eq!(
        env.read("out/a.token"),
        a_token,
        "a restart reuses the fresh token"
    );
    let after = plain(&d.log()[log_before..]);
    assert!(
        after.lines().any(|l| l.contains("credential=\"a\"")),
        "{after}"
    );
    assert_eq!(env.emu.requests(Endpoint::Yavapteke), a_requests);
}

#[test]
fn an_invalid_config_on_sighup_keeps_the_daemon_serving() {
    let env = Env::with(EmulatorConfig {
        yavapteke_lifetime: 2 * S,
        ..Default::default()
    });
    yavapteke_config(&env, "");
    let mut d = env.daemon();
    assert!(
        wait_for(5 * S, || env.path("out/pharmacy.token").exists()),
        "{}",
        d.log()
    );
    env.raw_config("credentials: [ {name: : ::\n\t- garbage\n");
    d.signal(Signal::SIGHUP);
    assert!(
        wait_for(3 * S, || lines_at(&d.log(), "ERROR")
            .iter()
            .any(|l| l.contains("reload failed"))),
        "no ERROR \"reload failed\":\n{}",
        d.log()
    );
    assert!(d.is_running());
    let n = env.emu.requests(Endpoint::Yavapteke);
    // 2 s tokens are refreshed every ~1.5 s: two more refreshes under the old config.
    assert!(
        wait_for(6 * S, || env.emu.requests(Endpoint::Yavapteke) >= n + 2),
        "refreshes stopped after a failed reload:\n{}",
        d.log()
    );
    assert!(d.is_running());
    assert!(
        env.emu
            .issued_tokens()
            .contains(&env.read("out/pharmacy.token"))
    );
}

#[test]
fn sigusr1_refreshes_every_credential_now() {
    let env = Env::new();
    all_secrets(&env);
    env.config(&format!(
        "credentials:\n{}{}",
        yav_credential("a", false, ""),
        oauth2_credential("b", "")
    ));
    let d = env.daemon();
    assert!(
        wait_for(5 * S, || env.path("out/a.token").exists()
            && env.path("out/b.token").exists()),
        "{}",
        d.log()
    );
    assert_eq!(env.emu.requests(Endpoint::Yavapteke), 1);
    assert_eq!(env.emu.requests(Endpoint::OAuth2), 1);
    let (ta, tb) = (env.read("out/a.token"), env.read("out/b.token"));
    d.signal(Signal::SIGUSR1);
    assert!(
        wait_for(2 * S, || {
            env.emu.requests(Endpoint::Yavapteke) == 2 && env.emu.requests(Endpoint::OAuth2) == 2
        }),
        "{}",
        d.log()
    );
    assert!(wait_for(S, || env.read("out/a.token") != ta
        && env.read("out/b.token") != tb));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        env.emu.requests(Endpoint::Yavapteke),
        2,
        "one refresh each, not more"
    );
    assert_eq!(
        env.emu.requests(Endpoint::OAuth2),
        2,
        "one refresh each, not more"
    );
}

#[test]
fn a_second_daemon_on_the_same_state_dir_exits_1_naming_the_lock() {
    let env = Env::new();
    yavapteke_config(&env, "");
    let d = env.daemon();
    assert!(
        wait_for(5 * S, || env.path("out/pharmacy.token").exists()),
        "{}",
        d.log()
    );
    let mut second = env
        .tokend(&["run"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut code = None;
    wait_for(5 * S, || {
        code = second.try_wait().unwrap().map(|s| s.code());
        code.is_some()
    });
    if code.is_none() {
        let _ = second.kill();
        let _ = second.wait();
        panic!("the second daemon kept running");
    }
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(code, Some(Some(1)), "{stderr}");
    assert!(stderr.contains("tokend.lock"), "{stderr}");
    assert_eq!(env.emu.requests(Endpoint::Yavapteke), 1);
}

#[test]
fn text_logs_written_to_a_file_carry_no_colour_codes() {
    let env = Env::new();
    yavapteke_config(&env, "");
    let d = env.daemon();
    assert!(
        wait_for(5 * S, || env.path("out/pharmacy.token").exists()),
        "{}",
        d.log()
    );
    assert!(
        wait_for(S, || d.log().contains("token refreshed")),
        "{}",
        d.log()
    );
    let log = d.log();
    assert!(
        !log.contains('\u{1b}'),
        "stderr is not a terminal, yet:\n{log:?}"
    );
}

#[test]
fn sigterm_with_a_hung_provider_exits_0_after_the_grace_period() {
    let env = Env::new();
    env.secret("yav", "yav-secret\n");
    env.config(&format!(
        "credentials:\n{}",
        yav_credential("pharmacy", false, "").replace("timeout: 2s", "timeout: 60s")
    ));
    env.emu
        .set_sticky_fault(Endpoint::Yavapteke, Some(Fault::Hang));
    let mut d = env.daemon();
    assert!(
        wait_for(5 * S, || env.emu.requests(Endpoint::Yavapteke) == 1),
        "{}",
        d.log()
    );
    let sent = Instant::now();
    d.signal(Signal::SIGTERM);
    let code = d.wait_exit(13 * S);
    assert_eq!(
        code,
        Some(0),
        "no clean exit after {:?}:\n{}",
        sent.elapsed(),
        d.log()
    );
    assert!(sent.elapsed() <= 12 * S, "took {:?}", sent.elapsed());
    assert!(!env.path("out/pharmacy.token").exists());
}

#[test]
fn fixing_a_rejected_secret_and_sighup_retries_at_once() {
    let env = Env::new();
    env.secret("yav", "wrong-secret\n");
    // The default `permanent` retry is 30 min: only the reload can explain a quick retry.
    env.config(&format!(
        "credentials:\n{}",
        yav_credential("pharmacy", false, "").replace(
            "retry: { initial: 100ms, max: 500ms, permanent: 2s }",
            "retry: { initial: 100ms, max: 500ms }"
        )
    ));
    let d = env.daemon();
    assert!(
        wait_for(5 * S, || lines_at(&d.log(), "ERROR")
            .iter()
            .any(|l| l.contains("invalid_client"))),
        "{}",
        d.log()
    );
    assert_eq!(env.emu.requests(Endpoint::Yavapteke), 1);
    env.secret("yav", "yav-secret\n");
    d.signal(Signal::SIGHUP);
    assert!(
        wait_for(3 * S, || env.path("out/pharmacy.token").exists()),
        "the corrected secret was not tried after SIGHUP:\n{}",
        d.log()
    );
    assert_eq!(env.emu.requests(Endpoint::Yavapteke), 2);
}

#[test]
fn a_credential_removed_and_restored_during_its_refresh_keeps_being_refreshed() {
    let env = Env::with(EmulatorConfig {
        yavapteke_lifetime: 2 * S,
        ..Default::default()
    });
    all_secrets(&env);
    let p = yav_credential("pharmacy", false, "");
    let q = oauth2_credential("other", "");
    env.emu
        .push_fault(Endpoint::Yavapteke, Fault::Delay { ms: 1500 }, 1);
    env.config(&format!("credentials:\n{p}{q}"));
    let d = env.daemon();
    assert!(
        wait_for(5 * S, || env.emu.requests(Endpoint::Yavapteke) == 1),
        "{}",
        d.log()
    );
    let reloads = || plain(&d.log()).matches("config reloaded").count();

    // Removed while its first fetch is in flight, then put back (an operator undoing a
    // mistake): the second reload sees the same credential as before.
    env.config(&format!("credentials:\n{q}"));
    d.signal(Signal::SIGHUP);
    assert!(wait_for(2 * S, || reloads() == 1), "{}", d.log());
    env.config(&format!("credentials:\n{p}{q}"));
    d.signal(Signal::SIGHUP);
    assert!(wait_for(2 * S, || reloads() == 2), "{}", d.log());
    assert_eq!(
        env.emu.requests(Endpoint::Yavapteke),
        1,
        "still the first fetch"
    );

    // 2 s tokens: after the delayed first answer (1.5 s), a refresh every ~1.5 s.
    assert!(
        wait_for(8 * S, || env.emu.requests(Endpoint::Yavapteke) >= 3),
        "`pharmacy` is in the config but no longer refreshed:\n{}",
        plain(&d.log())
    );
    let token = env.read("out/pharmacy.token");
    assert!(env.emu.issued_tokens().contains(&token));
}
