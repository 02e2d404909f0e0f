//! The shared-state failure scenarios (HA.md §5.2), written once and run on every backend:
//! `ha_faults` on a real etcd, `ha_kube_faults` on the fake Kubernetes API server, which
//! add what only their backend can check to the group each scenario returns.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::EmulatorConfig;
use crate::support::group::{CRED, Group, emulator};
use crate::support::{Endpoint, wait_for};

pub const REFRESH: &str = "    refresh: { at: 50%, jitter: 0% }\n";
pub const LAG: Duration = Duration::from_secs(1);

/// A backend to run a scenario on: how to start a group, and a token lifetime that gives
/// it several refreshes in a few seconds.
pub struct On {
    pub start: fn(usize, EmulatorConfig, &str) -> Group,
    pub lifetime: Duration,
}

pub const ETCD: On = On {
    start: Group::start,
    lifetime: Duration::from_secs(3),
};

pub const KUBE: On = On {
    start: Group::start_kube,
    lifetime: Duration::from_secs(4),
};

pub fn running(g: &Group) -> Vec<usize> {
    (0..g.nodes.len())
        .filter(|&i| g.nodes[i].is_some())
        .collect()
}

pub fn advance(g: &Group, by: u64, why: &str) {
    let target = g.last_commit().map_or(0, |c| c.chain_gen) + by;
    assert!(
        g.wait_chain_gen(target, Duration::from_secs(40)),
        "the chain did not reach generation {target} {why}\n{}",
        g.logs()
    );
}

/// Seeded by `TOKEND_TEST_SEED` (default 12), so a failure can be replayed.
pub fn rng() -> fastrand::Rng {
    fastrand::Rng::with_seed(
        std::env::var("TOKEND_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(12),
    )
}

/// A paused leader is replaced and its late work never forks the chain.
pub fn paused_leader(on: &On) -> Group {
    let mut g = (on.start)(3, emulator(on.lifetime), REFRESH);
    g.start_all();
    advance(&g, 2, "before the pause");
    let leader = g.wait_leader();
    // Past its lease (2 s) but not past takeover_after (6 s): a GC pause, a stalled VM.
    g.node(leader).signal(Signal::SIGSTOP);
    let paused = Instant::now();
    advance(&g, 2, "while the leader was paused");
    let elapsed = paused.elapsed();
    if elapsed < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_secs(4) - elapsed);
    }
    g.node(leader).signal(Signal::SIGCONT);
    let resumed = Instant::now();
    advance(&g, 3, "after the pause");
    std::thread::sleep(LAG);
    let others: Vec<usize> = running(&g).into_iter().filter(|&i| i != leader).collect();
    g.assert_oracles(LAG, &others);
    // The resumed one may lag while it was stopped, never after, and never regress.
    g.assert_oracles_since(
        LAG + Duration::from_millis(500),
        &[leader],
        Some(resumed + LAG),
    );
    g
}

/// Kill 9 between the providers answer and the commit loses nothing.
pub fn kill_9_after_the_journal(on: &On) -> Group {
    let mut g = (on.start)(1, emulator(Duration::from_secs(600)), "");
    // The failpoint (debug builds only) kills the process right after the journal's fsync.
    g.start_node_with(0, &[("TOKEND_TEST_DIE_AFTER_JOURNAL", CRED)]);
    let journal = g.env.path(&format!("state-0/{CRED}.pending"));
    assert!(
        wait_for(Duration::from_secs(20), || journal.exists()
            && g.nodes[0].as_mut().is_some_and(|n| n
                .child
                .try_wait()
                .ok()
                .flatten()
                .is_some())),
        "the process did not die after journalling\n{}",
        g.logs()
    );
    assert_eq!(g.env.emu.successes(Endpoint::VandarRefresh), 1);
    // The seed is spent at the provider; only the journal holds its successor.
    g.nodes[0] = None;
    g.start_node(0);
    assert!(
        wait_for(Duration::from_secs(20), || g
            .last_commit()
            .is_some_and(|c| c.chain_gen >= 1 && c.token.is_some())),
        "the journalled answer was not committed\n{}",
        g.logs()
    );
    // The log line follows the commit that the test may see first.
    assert!(
        wait_for(Duration::from_secs(5), || g
            .log(0)
            .contains("committed a journalled answer")),
        "{}",
        g.logs()
    );
    // Removed right after that line is logged: wait for it, not for a moment.
    assert!(
        wait_for(Duration::from_secs(5), || !journal.exists()),
        "the journal outlived its commit"
    );
    let state = g.state();
    assert_eq!((state.chain_gen(), state.token_gen()), (1, 1), "{state}");
    assert_eq!(state.claim_holder(), None, "{state}");
    let token = g.last_commit().unwrap().token.unwrap();
    assert!(wait_for(Duration::from_secs(5), || g.output(0).trim() == token));
    // Recovered without another provider call, and without a replay.
    assert_eq!(g.env.emu.requests(Endpoint::VandarRefresh), 1);
    g.assert_oracles(LAG, &[]);
    g
}

/// Kill 9 at random moments never forks the chain.
pub fn kill_9_at_random_moments(on: &On) -> Group {
    let mut g = (on.start)(3, emulator(on.lifetime), REFRESH);
    g.start_all();
    advance(&g, 1, "at start");
    let mut rng = rng();
    for round in 0..6 {
        let victim = rng.usize(..3);
        std::thread::sleep(Duration::from_millis(rng.u64(100..1500)));
        g.kill_node(victim);
        std::thread::sleep(Duration::from_millis(rng.u64(0..800)));
        g.start_node(victim);
        let _ = round;
    }
    let restarted = Instant::now();
    advance(&g, 3, "after the kills");
    std::thread::sleep(LAG);
    g.assert_oracles_since(LAG, &[0, 1, 2], Some(restarted + Duration::from_secs(2)));
    g
}

/// Restarting all three at once calls no provider for a fresh token.
pub fn restart_all_at_once(on: &On) -> Group {
    let mut g = (on.start)(3, emulator(Duration::from_secs(600)), "");
    g.start_all();
    advance(&g, 1, "at start");
    let token = g.last_commit().unwrap().token.unwrap();
    assert!(wait_for(Duration::from_secs(5), || (0..3)
        .all(|i| g.output(i).trim() == token)));
    let calls = g.env.emu.requests(Endpoint::VandarRefresh);
    for i in 0..3 {
        g.kill_node(i);
    }
    for i in 0..3 {
        let _ = std::fs::remove_file(g.output_path(i));
    }
    g.start_all();
    assert!(
        wait_for(Duration::from_secs(10), || (0..3)
            .all(|i| g.output(i).trim() == token)),
        "not every process wrote the shared token back\n{}",
        g.logs()
    );
    assert_eq!(g.env.emu.requests(Endpoint::VandarRefresh), calls);
    // The outputs were deleted by the test: judge the lag of what was committed after.
    g.assert_oracles_since(LAG, &[0, 1, 2], Some(Instant::now()));
    g
}

/// A rolling update with old and new configs side by side never replays a seed.
pub fn rolling_update(on: &On) -> Group {
    let mut g = (on.start)(3, emulator(on.lifetime), REFRESH);
    g.start_all();
    advance(&g, 2, "on the old config");
    // The operator puts a new dashboard token into the new config, and rolls it out one
    // process at a time: old and new run side by side, and leadership moves between them.
    g.env.emu.add_refresh_seed("def502seed-two");
    g.env.secret("vandar-refresh-2", "def502seed-two\n");
    for i in 0..3 {
        g.write_config_with(
            i,
            "vandar-refresh-2",
            "    refresh: { at: 60%, jitter: 0% }\n",
        );
        g.stop_node(i);
        g.start_node(i);
        advance(&g, 1, &format!("after updating process {i}"));
    }
    let updated = Instant::now();
    advance(&g, 2, "on the new config");
    std::thread::sleep(LAG);
    g.assert_oracles_since(LAG, &[0, 1, 2], Some(updated + Duration::from_secs(2)));
    // The new seed was sent once at most; the old one never again.
    assert_eq!(g.env.emu.reused_refresh_tokens(), 0);
    g
}

/// A process cut off from the store keeps its token and catches up when back.
pub fn cut_off_and_back(on: &On) -> Group {
    let mut g = (on.start)(3, emulator(on.lifetime), REFRESH);
    g.start_all();
    advance(&g, 2, "before the cut");
    let leader = g.wait_leader();
    g.proxies[leader].blackhole();
    // The rest of the group carries on; the cut-off one keeps its last good token.
    advance(&g, 3, "while one process was cut off");
    assert!(!g.output(leader).is_empty());
    assert!(
        g.log(leader).contains("event=\"following\""),
        "the cut-off leader did not step down\n{}",
        g.logs()
    );
    g.proxies[leader].restore();
    let restored = Instant::now();
    advance(&g, 2, "after the cut healed");
    std::thread::sleep(LAG);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    g.assert_oracles(LAG, &others);
    // Back within a few seconds (the watch reconnects), then current like the others.
    g.assert_oracles_since(LAG, &[leader], Some(restored + Duration::from_secs(5)));
    g
}
