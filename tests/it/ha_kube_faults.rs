//! Shared state on Kubernetes under faults (HA.md §5.3): the etcd suite's scenarios on the
//! fake API server, plus what only Kubernetes does: writes applied whose answer is lost,
//! 5xx from the API server, watches answered 410 Gone. Each test is judged by the same
//! oracles: zero replays of a spent refresh token, chain generations +1, every running
//! process's output current within 1 s of each commit, never an older token, no blind write.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::ha_kube::{
    LAG, LIFETIME, REFRESH, assert_lease_oracle, assert_state_writes_are_conditional,
};
use crate::ha_scenarios::{self, KUBE, advance};
use crate::support::group::{Group, NAMESPACE, STATE_SECRET, emulator};
use crate::support::kube_fake::{Fault, Res, decode_state};
use crate::support::{Endpoint, wait_for};

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
    let g = ha_scenarios::paused_leader(&KUBE);
    assert_one_groups_worth(&g, 0);
    assert_state_writes_are_conditional(&g);
    assert_lease_oracle(&g);
}

#[test]
fn kill_9_between_the_providers_answer_and_the_commit_loses_nothing() {
    let g = ha_scenarios::kill_9_after_the_journal(&KUBE);
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
    let g = ha_scenarios::kill_9_at_random_moments(&KUBE);
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
    let g = ha_scenarios::cut_off_and_back(&KUBE);
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
    // Newer versions elsewhere, then compaction, then a bookmark at the newest version: a
    // watch that keeps the bookmark's resourceVersion is not too old, so it resumes without
    // a 410; one that ignored it would resume from its last event, from before the
    // compaction. (Compacting after the bookmark would be unfair: the Lease renewals move
    // the resourceVersion on every 400 ms, and no bookmark can keep up with a compaction to
    // "now".)
    g.kube().put(
        Res::Secrets,
        NAMESPACE,
        json!({"metadata": {"name": "unrelated"}, "type": "Opaque"}),
    );
    g.kube().compact();
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
    // The bookmark reaches every open watch at once; give the processes a moment to read it.
    std::thread::sleep(Duration::from_secs(1));
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
    let g = ha_scenarios::restart_all_at_once(&KUBE);
    assert_state_writes_are_conditional(&g);
}

#[test]
fn a_rolling_update_with_old_and_new_configs_side_by_side_never_replays_a_seed() {
    let g = ha_scenarios::rolling_update(&KUBE);
    assert_state_writes_are_conditional(&g);
}
