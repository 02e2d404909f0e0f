//! Shared state on Kubernetes under faults (HA.md §5.3): the etcd suite's scenarios on the
//! fake API server, plus what only Kubernetes does: writes applied whose answer is lost,
//! 5xx from the API server, watches answered 410 Gone. Each test is judged by the same
//! oracles: zero replays of a spent refresh token, chain generations +1, every running
//! process's output current within 1 s of each commit, never an older token, no blind write.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;

use crate::ha_kube::{
    LAG, LIFETIME, REFRESH, assert_lease_oracle, assert_state_writes_are_conditional,
};
use crate::support::group::{CRED, Group, NAMESPACE, STATE_SECRET, emulator};
use crate::support::kube_fake::{Fault, Res, decode_state};
use crate::support::{Endpoint, wait_for};

fn running(g: &Group) -> Vec<usize> {
    (0..g.nodes.len())
        .filter(|&i| g.nodes[i].is_some())
        .collect()
}

fn advance(g: &Group, by: u64, why: &str) {
    let target = g.last_commit().map_or(0, |c| c.chain_gen) + by;
    assert!(
        g.wait_chain_gen(target, Duration::from_secs(40)),
        "the chain did not reach generation {target} {why}\n{}",
        g.logs()
    );
}

fn rng() -> fastrand::Rng {
    fastrand::Rng::with_seed(
        std::env::var("TOKEND_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(12),
    )
}

/// Provider calls stay one group's worth: each committed rotation, plus at most `extra`
/// sends whose answers were lost with a killed process (and one still in flight).
fn assert_one_groups_worth(g: &Group, extra: u64) {
    let refreshes = g.env.emu.requests(Endpoint::VandarRefresh);
    let chain_gen = g.last_commit().unwrap().chain_gen;
    assert!(
        refreshes <= chain_gen + 1 + extra,
        "{refreshes} refresh calls for {chain_gen} rotations\n{}",
        g.logs()
    );
}

#[test]
fn a_paused_leader_is_replaced_and_its_late_work_never_forks_the_chain() {
    let mut g = Group::start_kube(3, emulator(LIFETIME), REFRESH);
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
    g.assert_oracles_since(
        LAG + Duration::from_millis(500),
        &[leader],
        Some(resumed + LAG),
    );
    assert_one_groups_worth(&g, 0);
    assert_state_writes_are_conditional(&g);
    assert_lease_oracle(&g);
}

#[test]
fn kill_9_between_the_providers_answer_and_the_commit_loses_nothing() {
    let mut g = Group::start_kube(1, emulator(Duration::from_secs(600)), "");
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
    assert!(
        wait_for(Duration::from_secs(5), || g
            .log(0)
            .contains("committed a journalled answer")),
        "{}",
        g.logs()
    );
    assert!(!journal.exists(), "the journal outlived its commit");
    let state = g.state();
    assert_eq!((state.chain_gen(), state.token_gen()), (1, 1), "{state}");
    assert_eq!(state.claim_holder(), None, "{state}");
    let token = g.last_commit().unwrap().token.unwrap();
    assert!(wait_for(Duration::from_secs(5), || g.output(0).trim() == token));
    assert_eq!(g.env.emu.requests(Endpoint::VandarRefresh), 1);
    g.assert_oracles(LAG, &[]);
    assert_state_writes_are_conditional(&g);
}

#[test]
fn ambiguous_answers_on_claim_and_commit_are_read_back_never_resent() {
    let mut g = Group::start_kube(1, emulator(LIFETIME), REFRESH);
    g.start_node(0);
    advance(&g, 1, "at start");
    // The next two PUTs of the state Secret, a claim and a commit in some order, are
    // applied and their answers lost: tokend must read back to learn the outcome.
    for _ in 0..2 {
        g.kube()
            .inject_on("update", Res::Secrets, STATE_SECRET, Fault::DropAfterCommit);
    }
    assert!(
        wait_for(Duration::from_secs(20), || g.kube().pending_faults() == 0),
        "tokend wrote the state Secret less than twice\n{}",
        g.logs()
    );
    advance(&g, 3, "after the lost answers");
    std::thread::sleep(LAG);
    g.assert_oracles(LAG, &[0]);
    // A single process: every provider call is a rotation (one may be in flight).
    assert_one_groups_worth(&g, 0);
    assert_state_writes_are_conditional(&g);
}

#[test]
fn kill_9_at_random_moments_never_forks_the_chain() {
    let mut g = Group::start_kube(3, emulator(LIFETIME), REFRESH);
    g.start_all();
    advance(&g, 1, "at start");
    let mut rng = rng();
    for _ in 0..6 {
        let victim = rng.usize(..3);
        std::thread::sleep(Duration::from_millis(rng.u64(100..1500)));
        g.kill_node(victim);
        std::thread::sleep(Duration::from_millis(rng.u64(0..800)));
        g.start_node(victim);
    }
    let restarted = Instant::now();
    advance(&g, 3, "after the kills");
    std::thread::sleep(LAG);
    g.assert_oracles_since(LAG, &[0, 1, 2], Some(restarted + Duration::from_secs(2)));
    // A process killed between the provider's answer and its journal loses that answer
    // (HA.md §3.3); six kills lose at most six.
    assert_one_groups_worth(&g, 6);
    assert_state_writes_are_conditional(&g);
    assert_lease_oracle(&g);
}

/// The node that wrote the record: its claim's holder, else its last commit's author.
fn writer(record: &serde_json::Value) -> Option<usize> {
    let id = record
        .pointer("/claim/holder")
        .or_else(|| record.pointer("/last_commit/by"))?
        .as_str()?;
    id.strip_prefix("node-")?.split('_').next()?.parse().ok()
}

/// Which writes a fault is aimed at.
type BodyTest = fn(&serde_json::Value) -> bool;

/// A state write that sets a claim (R2).
fn sets_a_claim(body: &serde_json::Value) -> bool {
    decode_state(body).is_some_and(|r| !r["claim"].is_null())
}

/// A state write that clears a claim: a commit (R5a), or a release after a failure.
fn clears_a_claim(body: &serde_json::Value) -> bool {
    decode_state(body).is_some_and(|r| r["claim"].is_null() && !r["last_commit"].is_null())
}

#[test]
fn kill_9_right_after_a_write_whose_answer_was_lost_never_forks_the_chain() {
    let mut g = Group::start_kube(3, emulator(LIFETIME), REFRESH);
    g.start_all();
    advance(&g, 1, "at start");
    // Each round, one write of the state Secret lands and its writer never learns it (the
    // answer is dropped, or held back while the writer waits), and the writer is killed:
    // - a claim: killed before it could call the provider (a lost claim with a quick
    //   answer would be read back and used; killing it then could hit the provider call,
    //   whose loss HA.md §3.3 accepts as inherent, so it is aimed at only while held);
    // - a commit: the successor is stored, and nobody may send its predecessor again.
    let rounds: [(&str, BodyTest, Fault); 4] = [
        (
            "claim",
            sets_a_claim,
            Fault::HoldAfterCommit(Duration::from_secs(3)),
        ),
        ("commit", clears_a_claim, Fault::DropAfterCommit),
        (
            "claim",
            sets_a_claim,
            Fault::HoldAfterCommit(Duration::from_secs(3)),
        ),
        (
            "commit",
            clears_a_claim,
            Fault::HoldAfterCommit(Duration::from_secs(3)),
        ),
    ];
    for (round, (what, when, fault)) in rounds.into_iter().enumerate() {
        g.kube()
            .inject_on_write("update", Res::Secrets, STATE_SECRET, when, fault);
        assert!(
            wait_for(Duration::from_secs(30), || g.kube().pending_faults() == 0),
            "round {round}: no {what} was written\n{}",
            g.logs()
        );
        // The write lands just after the fault is taken.
        let mut record = serde_json::Value::Null;
        assert!(
            wait_for(Duration::from_secs(2), || {
                record = g.kube().state(NAMESPACE, STATE_SECRET).unwrap_or_default();
                record["claim"].is_null() == (what == "commit")
            }),
            "round {round}: the {what} did not land: {record}"
        );
        let victim = writer(&record).unwrap_or_else(|| panic!("no writer in {record}"));
        g.kill_node(victim);
        std::thread::sleep(Duration::from_millis(200));
        g.start_node(victim);
    }
    let restarted = Instant::now();
    // A claim left by a killed writer waits out takeover_after (6 s).
    advance(&g, 3, "after the kills");
    std::thread::sleep(LAG);
    g.assert_oracles_since(LAG, &[0, 1, 2], Some(restarted + Duration::from_secs(2)));
    // No kill fell into a provider call: every send became a commit.
    assert_one_groups_worth(&g, 0);
    assert_state_writes_are_conditional(&g);
}

#[test]
fn a_process_cut_off_from_the_api_server_keeps_its_token_and_catches_up_when_back() {
    let mut g = Group::start_kube(3, emulator(LIFETIME), REFRESH);
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
    g.assert_oracles_since(LAG, &[leader], Some(restored + Duration::from_secs(5)));
    assert_one_groups_worth(&g, 0);
    assert_state_writes_are_conditional(&g);
    assert_lease_oracle(&g);
}

#[test]
fn the_api_server_answering_5xx_for_a_while_forks_nothing_and_everyone_catches_up() {
    let mut g = Group::start_kube(3, emulator(LIFETIME), REFRESH);
    g.start_all();
    advance(&g, 2, "before the outage");
    // Longer than the lease, shorter than takeover_after; open watches end as well.
    g.kube().set_outage(Some((503, "ServiceUnavailable")));
    g.kube().end_watches();
    let gen_before = g.last_commit().unwrap().chain_gen;
    let calls_before = g.env.emu.requests(Endpoint::VandarRefresh);
    std::thread::sleep(Duration::from_secs(4));
    // Nothing can commit, so no claim can start: at most one send that was in flight.
    assert_eq!(g.last_commit().unwrap().chain_gen, gen_before);
    assert!(
        g.env.emu.requests(Endpoint::VandarRefresh) <= calls_before + 1,
        "the provider was called during the outage\n{}",
        g.logs()
    );
    assert!((0..3).all(|i| !g.output(i).is_empty()));
    g.kube().set_outage(None);
    let back = Instant::now();
    advance(&g, 3, "after the outage");
    std::thread::sleep(LAG);
    g.assert_oracles_since(LAG, &[0, 1, 2], Some(back + Duration::from_secs(5)));
    assert_one_groups_worth(&g, 0);
    assert_state_writes_are_conditional(&g);
}

/// The `resourceVersion` a watch request started from, if any.
fn watch_from(query: &str) -> Option<u64> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "resourceVersion")
        .and_then(|(_, v)| v.parse().ok())
}

#[test]
fn a_watch_answered_410_gone_reads_again_and_converges() {
    let mut g = Group::start_kube(3, emulator(LIFETIME), REFRESH);
    g.start_all();
    advance(&g, 2, "before the compaction");
    // Something newer than the state Secret, then compaction: the resourceVersion every
    // watch holds is now too old, and ending the watches makes them come back with it.
    g.kube().put(
        Res::Secrets,
        NAMESPACE,
        json!({"metadata": {"name": "unrelated"}, "type": "Opaque"}),
    );
    let compacted = g.kube().resource_version();
    g.kube().compact();
    g.kube().end_watches();
    let gone = Instant::now();
    advance(&g, 3, "after the compaction");
    let stale_watches = g
        .kube()
        .requests()
        .iter()
        .filter(|r| r.verb == "watch" && r.name == STATE_SECRET)
        .filter(|r| watch_from(&r.query).is_some_and(|rv| rv > 0 && rv < compacted))
        .count();
    assert!(
        stale_watches > 0,
        "no watch came back from an old resourceVersion: the 410 path was not exercised"
    );
    // Once more with 410 as the HTTP status of the watch request itself.
    for _ in 0..3 {
        g.kube().inject("watch", Fault::Status(410, "Expired"));
    }
    g.kube().end_watches();
    advance(&g, 2, "after watches answered 410");
    std::thread::sleep(LAG);
    g.assert_oracles_since(LAG, &[0, 1, 2], Some(gone + Duration::from_secs(2)));
    assert_one_groups_worth(&g, 0);
    assert_state_writes_are_conditional(&g);
}

#[test]
fn a_watch_resumes_from_its_last_bookmark_and_needs_no_read_after_compaction() {
    let mut g = Group::start_kube(2, emulator(LIFETIME), REFRESH);
    g.start_all();
    advance(&g, 1, "at start");
    // Newer versions elsewhere, announced by a bookmark: a watch that keeps the bookmark's
    // resourceVersion is not too old after the compaction, so it resumes without a 410.
    g.kube().put(
        Res::Secrets,
        NAMESPACE,
        json!({"metadata": {"name": "unrelated"}, "type": "Opaque"}),
    );
    let compacted = g.kube().resource_version();
    let watches = || {
        g.kube()
            .requests()
            .iter()
            .filter(|r| r.verb == "watch" && r.name == STATE_SECRET)
            .count()
    };
    let open = watches();
    g.kube().bookmark();
    // The bookmark reaches every open watch at once; give the processes a moment to read it
    // (a process that missed it would resume from before the compaction and start over,
    // which the assertion below would report as a product bug).
    std::thread::sleep(Duration::from_secs(1));
    g.kube().compact();
    g.kube().end_watches();
    assert!(
        wait_for(Duration::from_secs(5), || watches() >= open + 2),
        "the watches were not opened again\n{}",
        g.logs()
    );
    let resumed: Vec<Option<u64>> = g
        .kube()
        .requests()
        .iter()
        .filter(|r| r.verb == "watch" && r.name == STATE_SECRET)
        .skip(open)
        .map(|r| watch_from(&r.query))
        .collect();
    assert!(
        resumed
            .iter()
            .all(|rv| rv.is_some_and(|rv| rv >= compacted)),
        "a watch resumed from before its last bookmark ({compacted}): {resumed:?}"
    );
    let back = Instant::now();
    advance(&g, 2, "after the compaction");
    std::thread::sleep(LAG);
    g.assert_oracles_since(LAG, &[0, 1], Some(back));
    assert_state_writes_are_conditional(&g);
}

#[test]
fn restarting_all_three_at_once_calls_no_provider_for_a_fresh_token() {
    let mut g = Group::start_kube(3, emulator(Duration::from_secs(600)), "");
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
    g.assert_oracles_since(LAG, &[0, 1, 2], Some(Instant::now()));
    assert_state_writes_are_conditional(&g);
}

#[test]
fn a_rolling_update_with_old_and_new_configs_side_by_side_never_replays_a_seed() {
    let mut g = Group::start_kube(3, emulator(LIFETIME), REFRESH);
    g.start_all();
    advance(&g, 2, "on the old config");
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
    assert_eq!(g.env.emu.reused_refresh_tokens(), 0);
    assert_state_writes_are_conditional(&g);
}
