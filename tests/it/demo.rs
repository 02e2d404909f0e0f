//! `tokend demo`, the first command of the README: it must run from a clean clone and show
//! what tokend is for — an outage recovered, a chain kept across a restart, no torn read.

use std::time::Duration;

use crate::support::*;

#[test]
fn the_demo_tells_its_story_and_stops_cleanly_on_ctrl_c() {
    let env = Env::new();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["demo", "--dir"])
        .arg(env.path("demo"))
        .env_remove("RUST_LOG")
        .current_dir(env.path(""));
    let mut d = env.daemon_with(&mut cmd);
    assert!(
        wait_for(Duration::from_secs(90), || d
            .log()
            .contains("the demo goes on")),
        "the demo did not finish its story:\n{}",
        d.log()
    );
    let log = d.log();
    for want in [
        "1/3 every credential has a token",
        "recovered after 3 failed attempts",
        "restarted: ",
        "the chain continued: 0 refresh token(s) replayed, 0 login(s) needed",
        // The `watch` hint names files, not the `dir` output's directory.
        "/demo/out/pharmacy/token'",
    ] {
        assert!(log.contains(want), "missing `{want}`:\n{log}");
    }
    let readers: Vec<&str> = log.lines().filter(|l| l.contains("reader: ")).collect();
    assert!(readers.len() >= 2, "{log}");
    assert!(
        readers.iter().all(|l| l.ends_with(", 0 empty or torn")),
        "a reader saw a torn file:\n{log}"
    );
    // Three 503s, each logged as a retried failure.
    assert!(log.matches("HTTP 503").count() >= 3, "{log}");

    d.signal(nix::sys::signal::Signal::SIGINT);
    assert_eq!(d.wait_exit(Duration::from_secs(30)), Some(0), "{}", d.log());
}
