//! The HTTP endpoints of `tokend run`: readiness that follows the tokens, metrics that match
//! the outputs, the rate-limited refresh trigger, and no token in any answer.

use std::time::Duration;

use crate::support::*;

/// A daemon with one yavapteke credential and `listen` set, once /readyz says 200.
fn ready_daemon() -> (Env, u16, Daemon) {
    let env = Env::new();
    let port = free_port();
    config_with_listen(&env, port, "");
    let d = env.daemon();
    assert!(wait_for(Duration::from_secs(5), || http(
        port, "GET", "/readyz"
    )
    .0 == 200));
    (env, port, d)
}

fn config_with_listen(env: &Env, port: u16, lifetime_extra: &str) {
    env.secret("yav", "yav-secret\n");
    env.config(&format!(
        r#"listen: 127.0.0.1:{port}
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {{url}}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: {{ file: {{dir}}/secrets/yav }}
    timeout: 2s
    retry: {{ initial: 100ms, max: 300ms, permanent: 30m }}
{lifetime_extra}    outputs:
      - file: {{dir}}/out/pharmacy.json
        format: json
      - dir: {{dir}}/out/pharmacy
"#
    ));
}

#[test]
fn readiness_flips_to_200_after_the_first_token_and_to_503_when_it_expires() {
    let env = Env::new();
    let port = free_port();
    // The first answer is delayed, so readiness can be seen failing before it.
    env.emu
        .push_fault(Endpoint::Yavapteke, Fault::Delay { ms: 800 }, 1);
    config_with_listen(&env, port, "    lifetime: 3s\n");
    let _d = env.daemon();
    assert!(wait_for(Duration::from_secs(5), || http(
        port, "GET", "/healthz"
    )
    .0 == 200));
    let (code, body) = http(port, "GET", "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("pharmacy"), "{body}");
    assert!(wait_for(Duration::from_secs(5), || http(
        port, "GET", "/readyz"
    )
    .0 == 200));

    // From now on every fetch fails; the 3 s token expires and readiness must say why.
    env.emu.set_sticky_fault(
        Endpoint::Yavapteke,
        Some(Fault::Status {
            code: 503,
            body: None,
            retry_after: None,
        }),
    );
    assert!(
        wait_for(Duration::from_secs(6), || http(port, "GET", "/readyz").0
            == 503),
        "readiness never dropped after expiry"
    );
    let (_, body) = http(port, "GET", "/readyz");
    assert!(body.contains("\"credential\":\"pharmacy\""), "{body}");
    assert!(body.contains("expired"), "{body}");
    assert!(body.contains("HTTP 503"), "{body}");
    // The scheduler is still alive even though the token is not.
    assert_eq!(http(port, "GET", "/healthz").0, 200);
}

#[test]
fn metrics_match_the_outputs_and_state() {
    let (env, port, _d) = ready_daemon();
    let (code, metrics) = http(port, "GET", "/metrics");
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&env.read("out/pharmacy.json")).unwrap();
    let expires_at = humantime::parse_rfc3339(json["expires_at"].as_str().unwrap()).unwrap();
    let expiry_secs = expires_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let gauge = metric_value(
        &metrics,
        "tokend_token_expiry_timestamp_seconds{credential=\"pharmacy\"}",
    );
    // The json output is rounded to whole seconds.
    assert!(
        (gauge - expiry_secs).abs() < 1.0,
        "{gauge} vs {expiry_secs}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "tokend_refresh_total{credential=\"pharmacy\",result=\"success\"}"
        ),
        1.0
    );
    let next = metric_value(
        &metrics,
        "tokend_next_refresh_timestamp_seconds{credential=\"pharmacy\"}",
    );
    assert!(next < expiry_secs && next > expiry_secs - 3600.0, "{next}");
    assert!(metrics.contains("tokend_refresh_duration_seconds_count{credential=\"pharmacy\"} 1"));
    assert!(metrics.contains("tokend_last_success_timestamp_seconds{credential=\"pharmacy\"}"));
    assert!(metrics.contains("tokend_build_info{version="));
    assert!(metrics.contains("# TYPE tokend_refresh_total counter"));
}

fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn refresh_trigger_answers_202_then_429_and_404_and_coalesces() {
    let (env, port, _d) = ready_daemon();
    let before = env.emu.requests(Endpoint::Yavapteke);
    let first = env.read("out/pharmacy.json");

    let (code, body) = http(port, "POST", "/v1/credentials/pharmacy/refresh");
    assert_eq!(code, 202, "{body}");
    // Within 30 s a second trigger is refused, so a consumer stuck on 401s cannot storm.
    let (code, body) = http(port, "POST", "/v1/credentials/pharmacy/refresh");
    assert_eq!(code, 429, "{body}");
    assert_eq!(http(port, "POST", "/v1/credentials/nope/refresh").0, 404);
    assert!(wait_for(Duration::from_secs(5), || env
        .read("out/pharmacy.json")
        != first));
    // Exactly one refresh came of the two triggers.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(env.emu.requests(Endpoint::Yavapteke), before + 1);
}

#[test]
fn no_endpoint_ever_shows_a_token_or_secret() {
    let (env, port, _d) = ready_daemon();
    let mut canaries = env.emu.issued_tokens();
    canaries.push("yav-secret".into());
    assert!(!canaries.is_empty());
    for path in ["/healthz", "/readyz", "/metrics", "/v1/status"] {
        let (code, body) = http(port, "GET", path);
        assert_eq!(code, 200, "{path}");
        for c in &canaries {
            assert!(!body.contains(c.as_str()), "{path} leaks a secret or token");
        }
    }
    let (_, status) = http(port, "GET", "/v1/status");
    assert!(status.contains("\"credential\":\"pharmacy\""), "{status}");
    assert!(status.contains("\"token\":\"valid\""), "{status}");
}

#[test]
fn a_taken_listen_port_is_a_startup_error() {
    let env = Env::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    config_with_listen(&env, port, "");
    let mut d = env.daemon();
    assert_eq!(d.wait_exit(Duration::from_secs(5)), Some(1));
    assert!(
        d.log()
            .contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        d.log()
    );
}
