use serde_json::{Value, json};

use super::super::record::{new_lease, updated};
use super::*;

const ME: &str = "a_00000001";
const OTHER: &str = "b_00000002";
/// Lease 10 s: retry period 2 s, margin 2.5 s, so a leader leads 7.5 s past a write.
const LEASE: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn wall(at_secs: u64) -> SystemTime {
    // 2026-11-29T02:00:00Z plus `at_secs`.
    SystemTime::UNIX_EPOCH + secs(1_795_917_600 + at_secs)
}

fn lease_json(rv: u64, holder: &str, duration: i64, renew: &str, transitions: i64) -> Value {
    json!({"metadata": {"name": "tokend-g", "namespace": "apps", "resourceVersion": rv.to_string()},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                 "acquireTime": "2026-11-29T01:00:00.000000Z", "renewTime": renew,
                 "leaseTransitions": transitions}})
}

fn record(rv: u64, holder: &str, duration: i64, renew: &str, transitions: i64) -> Record {
    Record::from_value(&lease_json(rv, holder, duration, renew, transitions)).unwrap()
}

/// The record the API server would store for `action`'s write, at resourceVersion `rv`.
fn stored(action: &Action, rv: u64) -> Record {
    let mut value = match action {
        Action::Create(spec) => new_lease("apps", "tokend-g", spec),
        Action::Update { base, spec, .. } => updated(base, spec),
        Action::Get => panic!("not a write"),
    };
    value["metadata"]["resourceVersion"] = json!(rv.to_string());
    Record::from_value(&value).unwrap()
}

fn action(m: &Machine, now: Instant) -> Action {
    let step = m.poll(now, wall(0));
    match step.action {
        Some(a) => a,
        None => panic!("no action at {now:?}: wake {:?}", step.wake),
    }
}

/// A machine that acquired an empty Lease at `t0`: its write is stored at rv 11 with
/// `leaseTransitions` 5.
fn leader(t0: Instant) -> Machine {
    let mut m = Machine::new(ME.into(), LEASE, t0);
    assert_eq!(action(&m, t0), Action::Get);
    m.observed(
        t0,
        Some(record(10, "", 1, "2026-11-29T01:59:00.000000Z", 4)),
        1.0,
    );
    let write = action(&m, t0);
    m.written(t0, t0 + ms(20), stored(&write, 11), 1.0);
    assert!(m.leading(t0 + ms(20)));
    m
}

/// A machine that has seen `OTHER` hold the Lease at `t0` (rv 20, 10 s).
fn follower(t0: Instant) -> Machine {
    let mut m = Machine::new(ME.into(), LEASE, t0);
    assert_eq!(action(&m, t0), Action::Get);
    m.observed(
        t0,
        Some(record(20, OTHER, 10, "2026-11-29T02:00:00.000000Z", 3)),
        1.0,
    );
    assert_eq!(m.poll(t0, wall(0)).action, None);
    m
}

#[test]
fn acquires_an_empty_lease_with_a_transition() {
    let t0 = Instant::now();
    let mut m = Machine::new(ME.into(), LEASE, t0);
    assert_eq!(m.poll(t0, wall(0)).action, Some(Action::Get));
    m.observed(
        t0,
        Some(record(10, "", 1, "2026-11-29T01:59:00.000000Z", 4)),
        1.0,
    );
    assert!(!m.leading(t0), "not before the write succeeded");
    let write = action(&m, t0);
    assert_eq!(
        write,
        Action::Update {
            base: record(10, "", 1, "2026-11-29T01:59:00.000000Z", 4),
            spec: Spec {
                holder: ME.into(),
                duration_secs: 10,
                acquire_time: "2026-11-29T02:00:00.000000Z".into(),
                renew_time: "2026-11-29T02:00:00.000000Z".into(),
                transitions: 5,
            },
            why: Write::Acquire,
        }
    );
    m.written(t0, t0 + ms(20), stored(&write, 11), 1.0);
    assert!(m.leading(t0 + ms(20)));
    assert_eq!(m.leader(t0 + ms(20)), Some(ME));
    assert_eq!(m.leader_rev(t0 + ms(20)), Some(5));
}

#[test]
fn creates_a_missing_lease_and_reads_again_when_someone_was_faster() {
    let t0 = Instant::now();
    let mut m = Machine::new(ME.into(), LEASE, t0);
    m.observed(t0, None, 1.0);
    let Action::Create(spec) = action(&m, t0) else {
        panic!("expected a create")
    };
    assert_eq!((spec.holder.as_str(), spec.transitions), (ME, 0));
    // AlreadyExists: read, and follow the one who created it.
    m.reread(t0 + ms(5), 1.0);
    assert_eq!(action(&m, t0 + ms(5)), Action::Get);
    m.observed(t0 + ms(10), Some(record(3, OTHER, 10, "x", 0)), 1.0);
    assert!(!m.leading(t0 + ms(10)));
    assert_eq!(m.leader(t0 + ms(10)), Some(OTHER));

    // And when we are the first: we lead with leaseTransitions 0.
    let mut m = Machine::new(ME.into(), LEASE, t0);
    m.observed(t0, None, 1.0);
    let create = action(&m, t0);
    m.written(t0, t0 + ms(5), stored(&create, 1), 1.0);
    assert!(m.leading(t0 + ms(5)));
    assert_eq!(m.leader_rev(t0 + ms(5)), Some(0));
}

#[test]
fn expiry_is_judged_on_our_clock_not_the_holders_renew_time() {
    // The holder's clock runs a century ahead: its renewTime is always "in the future".
    let future = "2126-01-01T00:00:00.000000Z";
    let t0 = Instant::now();
    let mut m = Machine::new(ME.into(), LEASE, t0);
    m.observed(t0, Some(record(20, OTHER, 10, future, 3)), 1.0);
    // Unchanged for exactly the lease is not yet expired (client-go: strictly after).
    for at in [secs(2), secs(8), secs(10)] {
        assert_eq!(action(&m, t0 + at), Action::Get, "+{at:?}");
        m.observed(t0 + at, Some(record(20, OTHER, 10, future, 3)), 1.0);
        assert_eq!(m.poll(t0 + at, wall(0)).action, None, "+{at:?}");
        assert_eq!(m.leader(t0 + at), Some(OTHER));
    }
    let late = t0 + secs(10) + ms(1);
    m.observed(late, Some(record(20, OTHER, 10, future, 3)), 1.0);
    let Action::Update { base, spec, why } = action(&m, late) else {
        panic!("expected an acquire")
    };
    assert_eq!(
        (base.rv.as_str(), why, spec.transitions),
        ("20", Write::Acquire, 4)
    );

    // The other way round: a renewTime long past means nothing if the spec just changed.
    let mut m = Machine::new(ME.into(), LEASE, t0);
    m.observed(
        t0,
        Some(record(20, OTHER, 10, "2000-01-01T00:00:00.000000Z", 3)),
        1.0,
    );
    assert_eq!(m.poll(t0, wall(0)).action, None);
    assert_eq!(m.poll(t0, wall(0)).wake, Some(t0 + secs(2)));
}

#[test]
fn no_acquire_while_the_holder_keeps_renewing() {
    let t0 = Instant::now();
    let mut m = follower(t0);
    // Renewed (renewTime changes) every 3 s for a minute: never ours, never "expired",
    // even though each observation is more than the retry period apart.
    for i in 1..=20u64 {
        let at = t0 + secs(3 * i);
        assert_eq!(action(&m, at), Action::Get, "read {i}");
        let renew = format!("2026-11-29T02:00:{:02}.000000Z", 3 * i);
        m.observed(at, Some(record(20 + i, OTHER, 10, &renew, 3)), 1.0);
        assert_eq!(m.poll(at, wall(0)).action, None, "read {i}");
    }
    // It stops renewing: acquired only once unchanged for longer than the lease.
    let last = t0 + secs(60);
    let frozen = record(40, OTHER, 10, "2026-11-29T02:01:00.000000Z", 3);
    m.observed(last + secs(6), Some(frozen.clone()), 1.0);
    assert_eq!(m.poll(last + secs(6), wall(0)).action, None);
    m.observed(last + secs(16), Some(frozen.clone()), 1.0);
    assert_eq!(m.poll(last + secs(16), wall(0)).action, None);
    m.observed(last + secs(17), Some(frozen), 1.0);
    assert!(matches!(
        action(&m, last + secs(17)),
        Action::Update {
            why: Write::Acquire,
            ..
        }
    ));
}

#[test]
fn the_leader_renews_on_the_cached_resource_version_without_reading() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    // Next: at t0 + 20 ms + the retry period (2 s); meanwhile nothing.
    let tick = t0 + ms(20) + secs(2);
    assert_eq!(
        m.poll(t0 + secs(1), wall(1)),
        Step {
            action: None,
            wake: Some(tick)
        }
    );
    let renew = m.poll(tick, wall(2)).action.unwrap();
    let Action::Update { base, spec, why } = &renew else {
        panic!("expected a renew: {renew:?}")
    };
    assert_eq!((base.rv.as_str(), *why), ("11", Write::Renew));
    assert_eq!(
        *spec,
        Spec {
            holder: ME.into(),
            duration_secs: 10,
            // Kept from the acquire; only renewTime moves.
            acquire_time: "2026-11-29T02:00:00.000000Z".into(),
            renew_time: "2026-11-29T02:00:02.000000Z".into(),
            transitions: 5,
        }
    );
    // Answered 900 ms later: leadership counts from the send.
    m.written(tick, tick + ms(900), stored(&renew, 12), 1.0);
    let until = tick + LEASE - crate::ha::election::margin(LEASE);
    assert!(m.leading(until - ms(1)));
    assert!(!m.leading(until));
    assert_eq!(m.leader_rev(tick + ms(900)), Some(5));
}

#[test]
fn a_lost_race_reads_again_at_once_and_follows_the_winner() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    let tick = t0 + ms(20) + secs(2);
    assert!(matches!(
        action(&m, tick),
        Action::Update {
            why: Write::Renew,
            ..
        }
    ));
    m.reread(tick + ms(5), 1.0);
    // Still within its deadline, so still leading until the read says otherwise.
    assert!(m.leading(tick + ms(5)));
    assert_eq!(action(&m, tick + ms(5)), Action::Get);
    m.observed(tick + ms(10), Some(record(30, OTHER, 10, "x", 6)), 1.0);
    assert!(!m.leading(tick + ms(10)));
    assert_eq!(m.leader(tick + ms(10)), Some(OTHER));
    assert_eq!(m.leader_rev(tick + ms(10)), None);

    // Two candidates race for a released Lease: the loser re-reads and follows.
    let mut m = Machine::new(ME.into(), LEASE, t0);
    m.observed(t0, Some(record(10, "", 1, "x", 2)), 1.0);
    assert!(matches!(
        action(&m, t0),
        Action::Update {
            why: Write::Acquire,
            ..
        }
    ));
    m.reread(t0 + ms(5), 1.0);
    assert_eq!(action(&m, t0 + ms(5)), Action::Get);
    m.observed(t0 + ms(8), Some(record(11, OTHER, 10, "y", 3)), 1.0);
    assert_eq!(m.poll(t0 + ms(8), wall(0)).action, None);
    assert_eq!(m.leader(t0 + ms(8)), Some(OTHER));
}

#[test]
fn endless_conflicts_back_off_instead_of_spinning() {
    let t0 = Instant::now();
    let mut m = Machine::new(ME.into(), LEASE, t0);
    let mut now = t0;
    let mut gets = 0;
    while now < t0 + secs(1) {
        match m.poll(now, wall(0)) {
            Step {
                action: Some(Action::Get),
                ..
            } => {
                gets += 1;
                m.observed(now, Some(record(10, "", 1, "x", 0)), 1.0);
            }
            Step {
                action: Some(Action::Update { .. }),
                ..
            } => m.reread(now, 1.0),
            Step { wake: Some(w), .. } => now = w,
            s => panic!("{s:?}"),
        }
    }
    // 4 quick reads, then 100, 200, 400 ms apart.
    assert_eq!(gets, 7, "reads in the first second");
}

#[test]
fn a_leader_that_cannot_renew_steps_down_at_its_deadline_and_comes_back() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    let until = t0 + LEASE - crate::ha::election::margin(LEASE);
    let mut now = t0 + ms(20) + secs(2);
    let mut wakes = vec![];
    // The API server is down: every request fails, with backoff.
    while now < t0 + secs(12) {
        let step = m.poll(now, wall(0));
        match step.action {
            Some(_) => m.failed(now, 1.0),
            None => {
                let w = step.wake.unwrap();
                wakes.push(w);
                now = w;
            }
        }
    }
    assert!(m.leading(until - ms(1)));
    assert!(!m.leading(until));
    assert_eq!(m.leader(until), None, "not ourselves once stepped down");
    assert_eq!(m.leader_rev(until), None);
    assert!(
        wakes.contains(&until),
        "the step-down is a wake-up: {wakes:?}"
    );
    // Retries back off, capped at the retry period (2 s).
    let gaps: Vec<_> = wakes.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g <= secs(2)), "{gaps:?}");
    assert!(gaps.contains(&secs(2)), "{gaps:?}");

    // Back: the Lease still names us (nobody took it): renew, and lead again.
    assert_eq!(action(&m, now), Action::Get);
    m.observed(now, Some(record(11, ME, 10, "x", 5)), 1.0);
    let renew = action(&m, now);
    assert!(
        matches!(
            renew,
            Action::Update {
                why: Write::Renew,
                ..
            }
        ),
        "{renew:?}"
    );
    m.written(now, now + ms(5), stored(&renew, 12), 1.0);
    assert!(m.leading(now + ms(5)));
}

#[test]
fn losing_the_lease_to_someone_else_or_a_delete_ends_leadership_at_once() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    m.failed(t0 + secs(2), 1.0);
    let at = t0 + secs(3);
    assert_eq!(action(&m, at), Action::Get);
    m.observed(at, None, 1.0);
    assert!(
        !m.leading(at),
        "a deleted Lease can be created and led by anyone"
    );
    assert!(matches!(action(&m, at), Action::Create(_)));

    let mut m = leader(t0);
    m.failed(t0 + secs(2), 1.0);
    m.observed(at, Some(record(12, "", 1, "x", 5)), 1.0);
    assert!(!m.leading(at), "an emptied Lease can be acquired by anyone");
}

#[test]
fn a_released_lease_is_acquired_at_the_next_read() {
    let t0 = Instant::now();
    let mut m = follower(t0);
    // The holder released it 300 ms later (holder empty, 1 s); we read it at our next
    // tick, long before its old 10 s lease would have run out.
    let tick = t0 + secs(2);
    assert_eq!(action(&m, tick), Action::Get);
    m.observed(
        tick,
        Some(record(21, "", 1, "2026-11-29T02:00:00.300000Z", 3)),
        1.0,
    );
    let Action::Update { base, spec, why } = action(&m, tick) else {
        panic!("expected an acquire")
    };
    assert_eq!(
        (base.rv.as_str(), why, spec.transitions),
        ("21", Write::Acquire, 4)
    );
    assert_eq!(m.leader(tick), None, "nobody holds it");
}

#[test]
fn release_hands_the_lease_back_only_when_it_is_ours() {
    let t0 = Instant::now();
    let mut m = leader(t0);
    let (base, spec) = m.release(wall(5)).unwrap();
    assert_eq!(base.rv, "11");
    assert_eq!(
        spec,
        Spec {
            holder: String::new(),
            duration_secs: 1,
            acquire_time: "2026-11-29T02:00:05.000000Z".into(),
            renew_time: "2026-11-29T02:00:05.000000Z".into(),
            transitions: 5,
        }
    );
    m.released();
    assert!(!m.leading(t0 + ms(30)));
    assert_eq!(follower(t0).release(wall(5)), None);
    assert_eq!(Machine::new(ME.into(), LEASE, t0).release(wall(5)), None);
}

#[test]
fn lease_transitions_count_acquisitions_only() {
    let t0 = Instant::now();
    let mut m = Machine::new(ME.into(), LEASE, t0);
    let mut now = t0;
    let mut rv = 1;
    let mut seen = vec![];
    let write = |m: &mut Machine, now: Instant, rv: &mut u64| {
        let a = action(m, now);
        *rv += 1;
        m.written(now, now, stored(&a, *rv), 1.0);
        match a {
            Action::Create(s) => ("create", s.transitions),
            Action::Update { spec, why, .. } => (
                if why == Write::Renew {
                    "renew"
                } else {
                    "acquire"
                },
                spec.transitions,
            ),
            Action::Get => unreachable!(),
        }
    };
    m.observed(now, None, 1.0);
    seen.push(write(&mut m, now, &mut rv));
    for _ in 0..3 {
        now += secs(2);
        seen.push(write(&mut m, now, &mut rv));
    }
    // Taken over by b (transition 1), which then goes silent: we acquire (2) and renew.
    now += secs(2);
    m.failed(now, 1.0);
    now += secs(2);
    m.observed(now, Some(record(50, OTHER, 10, "x", 1)), 1.0);
    now += secs(11);
    m.observed(now, Some(record(50, OTHER, 10, "x", 1)), 1.0);
    seen.push(write(&mut m, now, &mut rv));
    now += secs(2);
    seen.push(write(&mut m, now, &mut rv));
    assert_eq!(
        seen,
        [
            ("create", 0),
            ("renew", 0),
            ("renew", 0),
            ("renew", 0),
            ("acquire", 2),
            ("renew", 2),
        ]
    );
    assert_eq!(m.leader_rev(now), Some(2));
}

#[test]
fn a_lease_without_a_duration_is_judged_by_ours() {
    let t0 = Instant::now();
    let mut m = Machine::new(ME.into(), LEASE, t0);
    let odd = json!({"metadata": {"resourceVersion": "5"}, "spec": {"holderIdentity": OTHER}});
    let r = Record::from_value(&odd).unwrap();
    m.observed(t0, Some(r.clone()), 1.0);
    m.observed(t0 + secs(10), Some(r.clone()), 1.0);
    assert_eq!(m.poll(t0 + secs(10), wall(0)).action, None);
    m.observed(t0 + secs(10) + ms(1), Some(r), 1.0);
    assert!(matches!(
        action(&m, t0 + secs(10) + ms(1)),
        Action::Update {
            why: Write::Acquire,
            ..
        }
    ));
}
