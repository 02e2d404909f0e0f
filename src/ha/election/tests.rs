use super::*;

const TTL: i64 = 3;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A machine that has won the campaign at `t0` with lease 7 (TTL 3 s).
fn leader(t0: Instant) -> Machine {
    let mut m = Machine::new("a_00000001".into());
    assert_eq!(m.poll(t0).action, Some(Action::Grant));
    m.granted(t0, 7, TTL);
    assert_eq!(m.poll(t0).action, Some(Action::Campaign(7)));
    m.campaign_won(42, 42);
    assert_eq!(m.poll(t0).action, Some(Action::Watch));
    m.watch_opened();
    m
}

#[test]
fn margin_is_a_quarter_of_the_ttl_within_bounds() {
    for (ttl, want) in [
        (ms(500), ms(200)),
        (ms(300), ms(150)),
        (Duration::from_secs(2), ms(500)),
        (Duration::from_secs(3), ms(750)),
        (Duration::from_secs(15), ms(3750)),
        (Duration::from_secs(60), Duration::from_secs(15)),
    ] {
        assert_eq!(margin(ttl), want, "ttl {ttl:?}");
    }
}

#[test]
fn leads_from_campaign_until_sent_plus_ttl_minus_margin() {
    let t0 = Instant::now();
    let m = leader(t0);
    let until = t0 + Duration::from_secs(3) - ms(750);
    assert!(m.leading(t0));
    assert_eq!(m.leader_rev(t0), Some(42));
    assert_eq!(m.leader(t0), Some("a_00000001"));
    assert!(m.leading(until - ms(1)));
    assert!(!m.leading(until));
    assert_eq!(m.leader_rev(until), None);
    // Waiting: the next wake is the keepalive at TTL/3, well before the deadline.
    assert_eq!(
        m.poll(t0 + ms(10)),
        Step {
            action: None,
            wake: Some(t0 + ms(1000))
        }
    );
    assert_eq!(m.poll(t0 + ms(1000)).action, Some(Action::Keepalive(7)));
}

#[test]
fn keepalive_ok_extends_from_the_time_it_was_sent_not_answered() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    let sent = t0 + ms(1000);
    // The answer comes 900 ms later: the deadline still counts from `sent`.
    m.keepalive_ok(sent, TTL);
    assert!(m.leading(sent + ms(2249)));
    assert!(!m.leading(sent + ms(2250)));
    assert_eq!(m.poll(sent + ms(900)).wake, Some(sent + ms(1000)));
}

#[test]
fn keepalive_lost_steps_down_before_etcd_can_expire_the_lease() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    let mut now = t0 + ms(1000);
    let mut wakes = vec![];
    // etcd unreachable: every keepalive fails, with backoff.
    while now < t0 + Duration::from_secs(4) {
        match m.poll(now) {
            Step {
                action: Some(Action::Keepalive(7)),
                ..
            } => m.failed(now, 1.0),
            Step {
                action: None,
                wake: Some(w),
            } => {
                wakes.push(w);
                now = w;
            }
            other => panic!("unexpected {other:?} at {:?}", now - t0),
        }
    }
    // etcd expires the lease at the earliest at t0 + 3 s (its TTL starts on receipt).
    let etcd_expiry = t0 + Duration::from_secs(3);
    assert!(!m.leading(etcd_expiry - ms(750)));
    assert!(m.leading(etcd_expiry - ms(751)));
    // The driver is woken exactly at the step-down instant, whatever the backoff.
    assert!(wakes.contains(&(etcd_expiry - ms(750))), "{wakes:?}");
    // Backoff grows and is capped at TTL/4.
    let gaps: Vec<_> = wakes.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g <= ms(750)), "{gaps:?}");
}

#[test]
fn backoff_doubles_and_caps_and_jitters() {
    let t0 = Instant::now();
    let mut m = Machine::new("a".into());
    let mut got = vec![];
    for _ in 0..7 {
        m.failed(t0, 1.0);
        got.push(m.poll(t0).wake.unwrap() - t0);
    }
    assert_eq!(got, [100, 200, 400, 800, 1600, 2000, 2000].map(ms).to_vec());
    m.failed(t0, 1.2);
    assert_eq!(m.poll(t0).wake.unwrap() - t0, ms(2400));
    // A success resets it.
    m.granted(t0, 1, TTL);
    m.failed(t0, 1.0);
    assert_eq!(m.poll(t0).wake.unwrap() - t0, ms(100));
}

#[test]
fn a_paused_process_is_not_leading_when_it_wakes() {
    let t0 = Instant::now();
    let m = leader(t0);
    let woke = t0 + Duration::from_secs(60);
    assert!(!m.leading(woke));
    assert_eq!(m.leader(woke), None);
    assert_eq!(m.leader_rev(woke), None);
    // It asks etcd first; nothing else.
    assert_eq!(m.poll(woke).action, Some(Action::Keepalive(7)));
}

#[test]
fn a_paused_process_whose_lease_expired_grants_and_campaigns_again() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    let woke = t0 + Duration::from_secs(60);
    m.keepalive_ok(woke, 0);
    assert!(!m.leading(woke));
    assert_eq!(m.poll(woke).action, Some(Action::Grant));
    m.granted(woke, 8, TTL);
    assert_eq!(m.poll(woke).action, Some(Action::Campaign(8)));
    m.campaign_lost(Some("b_00000002".into()), 99, 50, 51);
    assert!(!m.leading(woke));
    assert_eq!(m.leader(woke), Some("b_00000002"));
    assert_eq!(m.poll(woke).action, Some(Action::Watch));
    assert_eq!(m.watch_from(), 52);
}

#[test]
fn a_follower_campaigns_again_after_the_delete() {
    let t0 = Instant::now();
    let mut m = Machine::new("b".into());
    m.granted(t0, 9, TTL);
    m.campaign_lost(Some("a".into()), 7, 42, 43);
    assert_eq!(m.poll(t0).action, Some(Action::Watch));
    m.watch_opened();
    assert_eq!(m.poll(t0).action, None);
    assert_eq!(m.leader(t0), Some("a"));
    m.key_deleted();
    assert_eq!(m.leader(t0), None);
    assert_eq!(m.poll(t0).action, Some(Action::Campaign(9)));
    m.campaign_won(60, 60);
    assert!(m.leading(t0));
    assert_eq!(m.leader_rev(t0), Some(60));
}

#[test]
fn a_lost_campaign_answer_that_landed_is_recognised_by_the_lease() {
    let t0 = Instant::now();
    let mut m = Machine::new("a".into());
    m.granted(t0, 7, TTL);
    // The first campaign was ambiguous; the retry finds our own key.
    m.failed(t0, 1.0);
    assert_eq!(m.poll(t0 + ms(100)).action, Some(Action::Campaign(7)));
    m.campaign_lost(Some("a".into()), 7, 42, 45);
    assert!(m.leading(t0 + ms(100)));
    assert_eq!(m.leader_rev(t0), Some(42));
}

#[test]
fn the_leaders_own_key_deleted_stops_leading_at_once() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    m.key_deleted();
    assert!(!m.leading(t0));
    assert_eq!(m.poll(t0).action, Some(Action::Campaign(7)));
}

#[test]
fn another_holders_put_makes_a_follower_and_our_own_is_ignored() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    m.key_put(Some("a_00000001".into()), 7);
    assert!(m.leading(t0));
    m.key_put(Some("b".into()), 8);
    assert!(!m.leading(t0));
    assert_eq!(m.leader(t0), Some("b"));
}

#[test]
fn a_broken_watch_reads_the_key_again_through_a_campaign() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    m.watch_broken();
    assert!(!m.leading(t0));
    assert_eq!(m.poll(t0).action, Some(Action::Campaign(7)));
    m.campaign_lost(Some("a_00000001".into()), 7, 42, 50);
    assert!(m.leading(t0));
}

#[test]
fn a_keepalive_answer_of_zero_loses_the_lease_and_leadership() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    m.keepalive_ok(t0 + ms(1000), 0);
    assert!(!m.leading(t0 + ms(1000)));
    assert_eq!(m.lease_id(), None);
    assert_eq!(m.poll(t0 + ms(1000)).action, Some(Action::Grant));
}

#[test]
fn a_delete_and_a_new_holder_in_one_batch_lead_to_a_campaign_that_reads_the_key() {
    let t0 = Instant::now();
    let mut m = Machine::new("b".into());
    m.granted(t0, 9, TTL);
    m.campaign_lost(Some("a".into()), 7, 42, 43);
    m.watch_opened();
    m.key_deleted();
    m.key_put(Some("c".into()), 11);
    assert_eq!(m.poll(t0).action, Some(Action::Campaign(9)));
    m.campaign_lost(Some("c".into()), 11, 50, 50);
    assert_eq!(m.leader(t0), Some("c"));
    assert_eq!(m.watch_from(), 51);
}
