//! Shared state on etcd under faults (issue 12, HA.md §5.2): the scenarios every backend
//! runs (`ha_scenarios`) and what only etcd has (members restarted). Each is judged by the
//! same oracles: zero replays of a spent refresh token, chain generations +1, every running
//! process's outputs current within 1 s of each commit, never an older token.

use std::time::{Duration, Instant};

use crate::ha_scenarios::{self, ETCD, LAG, REFRESH, advance};
use crate::support::etcd::EtcdCluster;
use crate::support::group::{Group, emulator};

const LIFETIME: Duration = ETCD.lifetime;

#[test]
fn a_paused_leader_is_replaced_and_its_late_work_never_forks_the_chain() {
    ha_scenarios::paused_leader(&ETCD);
}

#[test]
fn kill_9_between_the_providers_answer_and_the_commit_loses_nothing() {
    ha_scenarios::kill_9_after_the_journal(&ETCD);
}

#[test]
fn kill_9_at_random_moments_never_forks_the_chain() {
    ha_scenarios::kill_9_at_random_moments(&ETCD);
}

#[test]
fn a_process_cut_off_from_etcd_keeps_its_token_and_catches_up_when_back() {
    ha_scenarios::cut_off_and_back(&ETCD);
}

#[test]
fn restarting_the_etcd_leader_member_and_then_the_whole_cluster_forks_nothing() {
    crate::support::etcd::require_etcd();
    let etcd = EtcdCluster::start(3);
    etcd.wait_all_healthy().expect("etcd healthy");
    let mut g = Group::direct(3, emulator(LIFETIME), REFRESH, etcd);
    g.start_all();
    advance(&g, 2, "before etcd restarts");
    let member = g.etcd().leader().expect("an etcd leader");
    g.etcd_mut().restart_member(member);
    g.etcd().wait_all_healthy().expect("etcd healthy again");
    advance(&g, 2, "after the etcd leader restarted");
    g.etcd_mut().kill_all();
    std::thread::sleep(Duration::from_secs(2));
    g.etcd_mut().start_all();
    g.etcd().wait_all_healthy().expect("etcd back");
    let back = Instant::now();
    advance(&g, 3, "after the whole cluster restarted");
    std::thread::sleep(LAG);
    g.assert_oracles_since(LAG, &[0, 1, 2], Some(back + Duration::from_secs(5)));
}

#[test]
fn restarting_all_three_at_once_calls_no_provider_for_a_fresh_token() {
    ha_scenarios::restart_all_at_once(&ETCD);
}

#[test]
fn a_rolling_update_with_old_and_new_configs_side_by_side_never_replays_a_seed() {
    ha_scenarios::rolling_update(&ETCD);
}
