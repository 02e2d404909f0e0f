//! The supervisor of `tokend run` survives its own refresh tasks: a task that panics is
//! logged, counted and retried with backoff, and the other credentials keep refreshing.
//!
//! The panic is a test-only fault of debug builds (`TOKEND_TEST_PANIC_CREDENTIAL` names the
//! credential whose refresh task panics on purpose); release binaries do not have it.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of a GET on the daemon's listener, or "" while it is not up.
fn get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(5 * S)).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

fn counter(metrics: &str, credential: &str, result: &str) -> f64 {
    let key = format!("tokend_refresh_total{{credential=\"{credential}\",result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn credential(name: &str) -> String {
    format!(
        r#"  - name: {name}
    provider: yavapteke
    token_url: {{url}}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: {{ file: {{dir}}/secrets/yav }}
    timeout: 2s
    retry: {{ initial: 100ms, max: 300ms, permanent: 30m }}
    outputs:
      - file: {{dir}}/out/{name}.token
"#
    )
}

#[test]
fn a_panicking_refresh_task_is_logged_counted_and_retried_while_others_keep_refreshing() {
    let env = Env::with(EmulatorConfig {
        yavapteke_lifetime: 2 * S,
        ..Default::default()
    });
    env.secret("yav", "yav-secret\n");
    let port = free_port();
    env.config(&format!(
        "listen: 127.0.0.1:{port}\ncredentials:\n{}{}",
        credential("broken"),
        credential("healthy")
    ));
    let d = env.daemon_with(
        env.tokend(&["run"])
            .env("TOKEND_TEST_PANIC_CREDENTIAL", "broken"),
    );

    // Retried with backoff: the panic counter keeps rising, not stuck at one.
    let mut metrics = String::new();
    let retried = wait_for(10 * S, || {
        metrics = get(port, "/metrics");
        counter(&metrics, "broken", "panic") >= 3.0
    });
    assert!(
        retried,
        "the panicking credential was not counted and retried; metrics:\n{metrics}\nlog:\n{}",
        d.log()
    );

    // Logged at ERROR, naming the credential.
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("broken") && l.contains("panicked")),
        "no ERROR line naming the crashed credential:\n{log}"
    );

    // /v1/status says why the credential is not being refreshed.
    let status = get(port, "/v1/status");
    assert!(
        status.contains("panicked"),
        "/v1/status does not show the crash: {status}"
    );

    // The other credential keeps refreshing: its 2-second tokens get replaced.
    let first = env.read("out/healthy.token");
    assert!(!first.is_empty(), "healthy has no token; log:\n{}", d.log());
    assert!(
        wait_for(10 * S, || {
            let now = env.read("out/healthy.token");
            !now.is_empty() && now != first
        }),
        "healthy stopped refreshing; log:\n{}",
        d.log()
    );
    assert!(
        counter(&get(port, "/metrics"), "healthy", "panic") == 0.0,
        "healthy counted a panic"
    );
}
