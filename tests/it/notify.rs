//! systemd's notify protocol, spoken to a Unix datagram socket the test owns: READY=1 after
//! the first round, a STATUS= line, WATCHDOG=1 at the period WATCHDOG_USEC asks for.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn ready_status_and_watchdog_reach_the_notify_socket() {
    let env = Env::new();
    yavapteke_config(&env, "");
    let sock_path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let mut cmd = env.tokend(&["run"]);
    // A 2 s watchdog: tokend must ping about every second.
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000");
    let mut daemon = env.daemon_with(&mut cmd);

    let started = Instant::now();
    let mut messages: Vec<(Duration, String)> = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_millis(4500) {
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            messages.push((started.elapsed(), text));
        }
    }
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));
    while let Ok(n) = sock.recv(&mut buf) {
        messages.push((
            started.elapsed(),
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        ));
    }

    let has = |needle: &str| messages.iter().any(|(_, m)| m.lines().any(|l| l == needle));
    assert!(has("READY=1"), "{messages:?}");
    assert!(has("STOPPING=1"), "{messages:?}");
    // The line follows the credential: "0/1 fresh" may come first, then "1/1 fresh".
    let fresh = messages
        .iter()
        .flat_map(|(_, m)| m.lines())
        .any(|l| l.starts_with("STATUS=1/1 fresh, next refresh in "));
    assert!(fresh, "no STATUS=1/1 fresh line in {messages:?}");

    // READY only after the token is on disk.
    assert!(env.read("out/pharmacy.token").len() > 10);
    let pings: Vec<Duration> = messages
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    // Half the period (1 s) over ~4.5 s: at least 3 pings, and never a gap of 2 s or more.
    assert!(
        pings.len() >= 3,
        "only {} watchdog pings: {messages:?}",
        pings.len()
    );
    for pair in pings.windows(2) {
        assert!(
            pair[1] - pair[0] < Duration::from_millis(1900),
            "gap {pair:?}"
        );
    }
}

#[test]
fn without_notify_socket_nothing_is_sent_and_nothing_breaks() {
    let env = Env::new();
    yavapteke_config(&env, "");
    let mut daemon = env.daemon();
    assert!(wait_for(Duration::from_secs(5), || !env
        .read("out/pharmacy.token")
        .is_empty()));
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(0));
}
