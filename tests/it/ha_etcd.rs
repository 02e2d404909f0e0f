//! Shared state on a real etcd: three `tokend run` processes with one config behave as one
//! (SPEC "Shared state", HA.md §5.2). Each test asserts HA.md's oracles through
//! [`Group::assert_oracles`]: no replay, generations +1, outputs current within 1 s, never older.

use std::time::Duration;

use crate::support::group::{CRED, Group, emulator};
use crate::support::{Endpoint, http, wait_for};

const REFRESH: &str = "    refresh: { at: 50%, jitter: 0% }\n";
const LAG: Duration = Duration::from_secs(1);

#[test]
fn three_processes_share_one_chain_and_call_the_provider_once_per_refresh() {
    let mut g = Group::start(3, emulator(Duration::from_secs(3)), REFRESH);
    g.start_all();
    assert!(
        g.wait_chain_gen(5, Duration::from_secs(30)),
        "the chain did not reach generation 5\n{}",
        g.logs()
    );
    let refreshes = g.env.emu.requests(Endpoint::VandarRefresh);
    let chain_gen = g.last_commit().unwrap().chain_gen;
    // One group's worth: every provider call is a committed rotation (a call in flight
    // at the end may not have committed yet).
    assert!(
        refreshes <= chain_gen + 1,
        "{refreshes} refresh calls for {chain_gen} rotations\n{}",
        g.logs()
    );
    assert_eq!(g.env.emu.requests(Endpoint::VandarLogin), 0);
    std::thread::sleep(LAG);
    g.assert_oracles(LAG, &[0, 1, 2]);
    let leaders: Vec<usize> = (0..3)
        .filter(|&i| g.log(i).contains("event=\"leading\""))
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one leader\n{}", g.logs());
}

#[test]
fn a_joining_process_is_ready_from_the_shared_token_with_zero_provider_calls() {
    let mut g = Group::start(2, emulator(Duration::from_secs(600)), "");
    g.start_node(0);
    assert!(g.wait_chain_gen(1, Duration::from_secs(20)), "{}", g.logs());
    let calls = g.env.emu.requests(Endpoint::VandarRefresh);
    g.start_node(1);
    let token = g.last_commit().unwrap().token.unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || g.output(1).trim() == token),
        "the joining process did not write the shared token\n{}",
        g.logs()
    );
    assert_eq!(g.env.emu.requests(Endpoint::VandarRefresh), calls);
    g.assert_oracles(LAG, &[0, 1]);
}

#[test]
fn a_local_state_directory_is_imported_on_first_start() {
    // A single instance made the chain first.
    let g = Group::start(1, emulator(Duration::from_secs(600)), "");
    let single = g.env.path("single.yaml");
    let text = std::fs::read_to_string(g.config_path(0)).unwrap();
    let without_ha: String = {
        let mut out = String::new();
        let mut skipping = false;
        for line in text.lines() {
            if line.starts_with("ha:") {
                skipping = true;
                continue;
            }
            if skipping && line.starts_with("  ") {
                continue;
            }
            skipping = false;
            out.push_str(line);
            out.push('\n');
        }
        out
    };
    std::fs::write(&single, without_ha).unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .arg("--config")
        .arg(&single)
        .arg("once")
        .current_dir(g.env.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = g.env.emu.requests(Endpoint::VandarRefresh);
    // The same machine joins a group: its chain moves to etcd, without a provider call.
    let mut g = g;
    g.start_node(0);
    assert!(
        wait_for(Duration::from_secs(10), || g.last_commit().is_some()),
        "nothing imported\n{}",
        g.logs()
    );
    assert_eq!(g.env.emu.requests(Endpoint::VandarRefresh), calls);
    // The log line follows the write that the test may see first.
    assert!(
        wait_for(Duration::from_secs(5), || g
            .log(0)
            .contains("imported the local state")),
        "{}",
        g.logs()
    );
    // The chain as the single instance left it: the same refresh token, generation 0.
    let imported = g.state();
    assert!(imported.refresh_token().is_some(), "{imported}");
    assert_eq!(imported.chain_gen(), 0);
    assert_eq!(imported.token_gen(), 0);
    // The local file is set aside (just after that line is logged) so it is never imported
    // again.
    let local = g.env.path(&format!("state-0/{CRED}.json"));
    assert!(
        wait_for(Duration::from_secs(5), || !local.exists()),
        "the local state file was not set aside"
    );
}

#[test]
fn status_readyz_and_metrics_show_role_leader_generation_and_store_errors() {
    let mut g = Group::start(2, emulator(Duration::from_secs(600)), "");
    g.start_all();
    assert!(g.wait_chain_gen(1, Duration::from_secs(20)), "{}", g.logs());
    let leader = g.wait_leader();
    let follower = 1 - leader;
    let token = g.last_commit().unwrap().token.unwrap();
    assert!(wait_for(Duration::from_secs(5), || g
        .output(follower)
        .trim()
        == token));
    for (i, leading) in [(leader, true), (follower, false)] {
        let (code, body) = http(g.ports[i], "GET", "/readyz");
        assert_eq!(code, 200, "{body}");
        let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(ready["ha"]["group"], "g1", "{body}");
        assert_eq!(ready["ha"]["leading"], leading, "{body}");
        let named = ready["ha"]["leader"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(named.starts_with(&format!("node-{leader}_")), "{body}");
        let (_, metrics) = http(g.ports[i], "GET", "/metrics");
        assert!(
            metrics.contains(&format!("tokend_ha_leader {}", u8::from(leading))),
            "{metrics}"
        );
        assert!(
            metrics.contains("tokend_ha_chain_generation{credential=\"vandar-main\"} 1"),
            "{metrics}"
        );
        let (_, status) = http(g.ports[i], "GET", "/v1/status");
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        let shared = &status[0]["shared"];
        assert_eq!(shared["chain_gen"], 1, "{status}");
        assert_eq!(shared["token_gen"], 1, "{status}");
        assert_eq!(
            shared["role"],
            if leading { "leader" } else { "follower" },
            "{status}"
        );
    }
    // `tokend status` reads the shared store, not the (empty) local state directory.
    let out = std::process::Command::new(crate::support::BIN)
        .arg("--config")
        .arg(g.config_path(follower))
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["token"], "valid");
    assert_eq!(status[0]["shared"]["chain_gen"], 1);
    // Cut off from etcd, a process says so: its watch and election count store errors.
    g.proxies[follower].refuse();
    g.proxies[follower].cut();
    assert!(
        wait_for(Duration::from_secs(10), || {
            let (_, m) = http(g.ports[follower], "GET", "/metrics");
            m.lines()
                .any(|l| l.starts_with("tokend_ha_store_errors_total ") && !l.ends_with(" 0"))
        }),
        "no store error counted\n{}",
        g.logs()
    );
}

#[test]
fn a_leader_stopped_cleanly_hands_over_at_once_and_one_cut_off_says_why() {
    let mut g = Group::start(2, emulator(Duration::from_secs(600)), "");
    // A lease long enough that waiting it out and a released key are far apart in time.
    g.set_timings("  lease: 12s\n  claim_ttl: 3s\n  takeover_after: 6s\n");
    g.start_all();
    assert!(g.wait_chain_gen(1, Duration::from_secs(20)), "{}", g.logs());
    let leader = g.wait_leader();
    let other = 1 - leader;
    // SIGTERM: the leader deletes its key and revokes its lease on the way out, so the other
    // leads at its next look (a quarter of the lease), long before the lease runs out.
    let stopped = std::time::Instant::now();
    assert_eq!(g.stop_node(leader), Some(0));
    assert!(
        wait_for(Duration::from_secs(15), || {
            let (_, body) = http(g.ports[other], "GET", "/readyz");
            body.contains("\"leading\":true")
        }),
        "the other process did not take over\n{}",
        g.logs()
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "the handover took {:?}, as long as the lease: the key was not released",
        stopped.elapsed()
    );
    // Cut off from etcd, the remaining leader steps down and /readyz names the problem,
    // while its output keeps the last good token.
    g.proxies[other].blackhole();
    assert!(
        wait_for(Duration::from_secs(20), || {
            let (_, body) = http(g.ports[other], "GET", "/readyz");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            v["ha"]["leading"] == false
                && v["ha"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("etcd election"))
        }),
        "no step-down or no reason in /readyz\n{}",
        g.logs()
    );
    assert!(!g.output(other).trim().is_empty());
}

#[test]
fn check_describes_the_group_and_the_etcd_password_appears_nowhere() {
    const CANARY: &str = "canary-etcd-pw-5f3a9c";
    let mut g = Group::start(1, emulator(Duration::from_secs(600)), "");
    g.env.secret("etcd-password", &format!("{CANARY}\n"));
    let path = g.config_path(0);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "    timeout: 1s\ncredentials:",
        &format!(
            "    timeout: 1s\n    username: tokend\n    password: {{ file: {}/secrets/etcd-password }}\ncredentials:",
            g.env.dir.path().display()
        ),
    );
    assert!(text.contains("username: tokend"), "{text}");
    std::fs::write(&path, format!("log: {{ level: trace }}\n{text}")).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(crate::support::BIN)
            .arg("--config")
            .arg(&path)
            .args(args)
            .output()
            .unwrap()
    };
    for args in [&["check"][..], &["check", "--offline"][..]] {
        let out = run(args);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {all}");
        assert!(
            all.contains("shared state: group `g1` in etcd http://127.0.0.1:")
                && all.contains("as user `tokend`")
                && all.contains("this process is `node-0`"),
            "{args:?}: {all}"
        );
        assert!(
            !all.contains(CANARY),
            "{args:?} printed the etcd password: {all}"
        );
    }
    g.start_node(0);
    assert!(g.wait_chain_gen(1, Duration::from_secs(20)), "{}", g.logs());
    let status = run(&["status", "--json"]);
    assert!(status.status.success());
    g.stop_node(0);
    let everything = format!(
        "{}{}{}",
        g.log(0),
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        everything.contains("TRACE"),
        "the log is not at trace level"
    );
    assert!(!everything.contains(CANARY), "the etcd password leaked");
    // Nor in the shared record, nor in the local state directory.
    let out = g.etcd().etcdctl(&["get", "--prefix", "/tokend/"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(CANARY));
    for entry in std::fs::read_dir(g.env.path("state-0")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains(CANARY));
    }
}
