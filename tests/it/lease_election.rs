//! The Kubernetes Lease election of a tokend group (`tokend::ha::lease::LeaseElection`,
//! HA.md §3.4) against the fake API server: one leader among three, a cut-off leader
//! replaced only after it stepped down, hand-over on resign, lost races and lost answers,
//! and expiry judged on the candidate's own clock whatever `renewTime` says.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokend::ha::Leadership;
use tokend::ha::lease::LeaseElection;
use tokend::net::kube::{Credentials, KubeClient, KubeConfig, KubeOptions};
use tokend::secret::Secret;
use tokio::sync::watch;

use crate::support::etcd::TcpProxy;
use crate::support::kube_fake::{Fault, KubeFake, Res, Rule};

const NS: &str = "apps";
const NAME: &str = "tokend-g1";
const LEASE: Duration = Duration::from_secs(2);

fn client(url: String) -> KubeClient {
    let mut opts = KubeOptions::new(KubeConfig {
        server: url,
        ca_pem: None,
        credentials: Credentials::Token(Secret::new("tok")),
        namespace: NS.to_owned(),
        origin: "test".to_owned(),
    });
    opts.timeout = Duration::from_secs(5);
    KubeClient::new(opts).expect("kube client")
}

fn spawn(url: String, identity: &str) -> LeaseElection {
    LeaseElection::spawn(
        client(url),
        NS.to_owned(),
        NAME.to_owned(),
        identity.to_owned(),
        LEASE,
    )
}

fn lease_spec(fake: &KubeFake) -> Value {
    fake.get(Res::Leases, NS, NAME).expect("the Lease exists")["spec"].clone()
}

/// Every published `Leadership` with the instant it was seen, from the moment of spawning.
#[derive(Clone)]
struct Log(Arc<Mutex<Vec<(Instant, Leadership)>>>);

impl Log {
    fn record(mut rx: watch::Receiver<Leadership>) -> Log {
        let first = (Instant::now(), rx.borrow_and_update().clone());
        let log = Log(Arc::new(Mutex::new(vec![first])));
        let out = log.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let l = rx.borrow_and_update().clone();
                out.0.lock().unwrap().push((Instant::now(), l));
            }
        });
        log
    }

    /// Intervals `[from, to)` during which this process said it was leading.
    fn leading_intervals(&self, end: Instant) -> Vec<(Instant, Instant)> {
        let mut out = vec![];
        let mut since = None;
        for (at, l) in self.0.lock().unwrap().iter() {
            match (since, l.leading) {
                (None, true) => since = Some(*at),
                (Some(s), false) => {
                    out.push((s, *at));
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(s) = since {
            out.push((s, end));
        }
        out
    }

    /// The first instant at or after `after` at which `pred` held.
    fn first(&self, after: Instant, pred: impl Fn(&Leadership) -> bool) -> Option<Instant> {
        let log = self.0.lock().unwrap();
        log.iter()
            .find(|(at, l)| *at >= after && pred(l))
            .map(|(at, _)| *at)
    }

    fn all(&self) -> Vec<Leadership> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }
}

fn assert_never_two(logs: &[&Log]) {
    let end = Instant::now();
    for (i, a) in logs.iter().enumerate() {
        for b in &logs[i + 1..] {
            for (a0, a1) in a.leading_intervals(end) {
                for (b0, b1) in b.leading_intervals(end) {
                    assert!(
                        a1 <= b0 || b1 <= a0,
                        "two led at once: {a0:?}..{a1:?} and {b0:?}..{b1:?}"
                    );
                }
            }
        }
    }
}

/// Waits on the channel (no polling) until `pred` holds; panics with `why` after `limit`.
async fn wait_for(
    rx: &mut watch::Receiver<Leadership>,
    limit: Duration,
    why: &str,
    pred: impl FnMut(&Leadership) -> bool,
) -> Leadership {
    let got = match tokio::time::timeout(limit, rx.wait_for(pred)).await {
        Ok(Ok(l)) => Some(l.clone()),
        Ok(Err(_)) => panic!("{why}: the election task ended"),
        Err(_) => None,
    };
    got.unwrap_or_else(|| panic!("{why} (waited {limit:?}; last: {:?})", *rx.borrow()))
}

#[tokio::test]
async fn lease_election_three_candidates_one_leader_on_one_lease() {
    let fake = KubeFake::start(&["tok"]);
    let ids = ["a_00000001", "b_00000002", "c_00000003"];
    let electors: Vec<_> = ids.iter().map(|id| spawn(fake.url(), id)).collect();
    let logs: Vec<_> = electors.iter().map(|e| Log::record(e.watch())).collect();
    let mut rxs: Vec<_> = electors.iter().map(|e| e.watch()).collect();
    for rx in &mut rxs {
        wait_for(rx, 3 * LEASE, "everyone sees a leader", |l| {
            l.leader.is_some()
        })
        .await;
    }
    let leader = rxs[0].borrow().leader.clone().unwrap();
    let spec = lease_spec(&fake);
    assert_eq!(spec["holderIdentity"], json!(leader));
    assert_eq!(spec["leaseDurationSeconds"], json!(2));
    // Created by the winner: leaseTransitions starts at 0 and is the fencing number.
    assert_eq!(spec["leaseTransitions"], json!(0));

    // Several renew periods later: the same single leader, renewing.
    let (renewed, acquired) = (spec["renewTime"].clone(), spec["acquireTime"].clone());
    tokio::time::sleep(LEASE).await;
    for (rx, id) in rxs.iter().zip(ids) {
        let l = rx.borrow().clone();
        assert_eq!(l.leader.as_deref(), Some(&*leader), "{id}: {l:?}");
        assert_eq!(l.leading, id == leader, "{id}: {l:?}");
        assert_eq!(l.leader_rev, l.leading.then_some(0), "{id}: {l:?}");
        assert_eq!(l.error, None, "{id}");
    }
    let spec = lease_spec(&fake);
    assert_ne!(spec["renewTime"], renewed, "the leader renews");
    assert_eq!(spec["acquireTime"], acquired, "renews keep acquireTime");
    assert_never_two(&logs.iter().collect::<Vec<_>>());

    // No write went out without a resourceVersion; every candidate created at most once.
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.verb == "update")
            .all(|r| r.body_rv.is_some() && r.status != 422),
        "{requests:?}"
    );
    let creates = requests.iter().filter(|r| r.verb == "create").count();
    assert!((1..=3).contains(&creates), "{creates} creates");
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.verb == "create" && r.status == 201)
            .count(),
        1
    );
}

#[tokio::test]
async fn lease_election_cut_off_leader_steps_down_before_another_acquires() {
    let fake = KubeFake::start(&["tok"]);
    let proxy = TcpProxy::start(fake.addr());
    let a = spawn(proxy.url(), "a_00000001");
    let mut rx_a = a.watch();
    wait_for(&mut rx_a, 2 * LEASE, "a leads", |l| l.leading).await;
    let b = spawn(fake.url(), "b_00000002");
    let mut rx_b = b.watch();
    wait_for(&mut rx_b, 2 * LEASE, "b follows a", |l| {
        l.leader.as_deref() == Some("a_00000001")
    })
    .await;
    let (log_a, log_b) = (Log::record(a.watch()), Log::record(b.watch()));

    let cut = Instant::now();
    proxy.blackhole();
    wait_for(&mut rx_b, 3 * LEASE, "b leads after a was cut off", |l| {
        l.leading
    })
    .await;
    let a_down = log_a
        .first(cut, |l| !l.leading)
        .expect("a still led when b started leading");
    let b_up = log_b.first(cut, |l| l.leading).unwrap();
    eprintln!(
        "cut → a steps down {:?}, cut → b leads {:?}",
        a_down - cut,
        b_up - cut
    );
    assert!(a_down < b_up, "a stepped down {a_down:?}, b led {b_up:?}");
    // b waited for the Lease to stay unchanged a whole lease on its own clock.
    assert!(
        b_up - cut >= LEASE - Duration::from_millis(500),
        "{:?}",
        b_up - cut
    );
    assert_never_two(&[&log_a, &log_b]);
    let l = wait_for(&mut rx_a, LEASE, "a says why", |l| l.error.is_some()).await;
    assert!(!l.leading, "{l:?}");
    assert!(l.error.unwrap().contains("Lease apps/tokend-g1"));
    let spec = lease_spec(&fake);
    assert_eq!(spec["holderIdentity"], json!("b_00000002"));
    assert_eq!(spec["leaseTransitions"], json!(1));
    assert_eq!(rx_b.borrow().leader_rev, Some(1));

    // Healed: a follows b, without an error, and never led meanwhile.
    proxy.restore();
    let l = wait_for(&mut rx_a, 2 * LEASE, "a follows b after the heal", |l| {
        l.leader.as_deref() == Some("b_00000002") && l.error.is_none()
    })
    .await;
    assert!(!l.leading);
    assert!(rx_b.borrow().leading);
    assert_never_two(&[&log_a, &log_b]);
}

#[tokio::test]
async fn lease_election_resign_hands_over_well_before_the_lease_runs_out() {
    let fake = KubeFake::start(&["tok"]);
    let a = spawn(fake.url(), "a_00000001");
    let mut rx_a = a.watch();
    wait_for(&mut rx_a, 2 * LEASE, "a leads", |l| l.leading).await;
    let b = spawn(fake.url(), "b_00000002");
    let mut rx_b = b.watch();
    wait_for(&mut rx_b, 2 * LEASE, "b follows a", |l| {
        l.leader.as_deref() == Some("a_00000001")
    })
    .await;
    let log_b = Log::record(b.watch());

    let t = Instant::now();
    a.resign().await;
    assert!(!rx_a.borrow().leading, "{:?}", *rx_a.borrow());
    // The release is the last write until b acquires (b reads first).
    let requests = fake.requests();
    let release = requests.iter().rev().find(|r| r.verb == "update").unwrap();
    assert_eq!(release.status, 200, "{requests:?}");
    let l = wait_for(&mut rx_b, LEASE, "b leads after a resigned", |l| l.leading).await;
    let took = t.elapsed();
    eprintln!("hand-over after resign took {took:?}");
    assert_eq!(l.leader.as_deref(), Some("b_00000002"));
    // One read period (400-480 ms), not the 2 s lease: the release did it.
    assert!(
        took < Duration::from_millis(1200),
        "hand-over took {took:?}"
    );
    let spec = lease_spec(&fake);
    assert_eq!(spec["holderIdentity"], json!("b_00000002"));
    assert_eq!(spec["leaseTransitions"], json!(1));
    assert!(log_b.all().iter().all(|l| l.error.is_none()));
}

/// The index of the first request after `after` of `verb` answered `status` (polled: the
/// fake has no notification for requests).
async fn answered(fake: &KubeFake, verb: &str, status: u16, after: usize) -> usize {
    let deadline = Instant::now() + 2 * LEASE;
    while Instant::now() < deadline {
        let r = fake.requests();
        if let Some(i) = r[after..]
            .iter()
            .position(|r| r.verb == verb && r.status == status)
        {
            return after + i;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no {verb} answered {status} after request {after}");
}

#[tokio::test]
async fn lease_election_resign_after_a_label_change_still_hands_back() {
    let fake = KubeFake::start(&["tok"]);
    let a = spawn(fake.url(), "a_00000001");
    let mut rx_a = a.watch();
    wait_for(&mut rx_a, 2 * LEASE, "a leads", |l| l.leading).await;
    // Labelled between two renews: a's cached resourceVersion is stale when it stops.
    let mut touched = fake.get(Res::Leases, NS, NAME).unwrap();
    touched["metadata"]["labels"] = json!({"team": "payments"});
    fake.put(Res::Leases, NS, touched);
    let from = fake.requests().len();
    a.resign().await;
    let r = fake.requests();
    let release: Vec<_> = r[from..]
        .iter()
        .map(|r| (r.verb.as_str(), r.status))
        .collect();
    assert_eq!(release, [("update", 409), ("get", 200), ("update", 200)]);
    let lease = fake.get(Res::Leases, NS, NAME).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], json!(""));
    assert_eq!(lease["spec"]["leaseDurationSeconds"], json!(1));
    assert_eq!(lease["spec"]["leaseTransitions"], json!(0));
    assert_eq!(lease["metadata"]["labels"]["team"], json!("payments"));
}

#[tokio::test]
async fn lease_election_lost_races_and_lost_answers_are_read_back() {
    let fake = KubeFake::start(&["tok"]);
    let a = spawn(fake.url(), "a_00000001");
    let mut rx_a = a.watch();
    wait_for(&mut rx_a, 2 * LEASE, "a leads", |l| l.leading).await;
    let log = Log::record(a.watch());
    let from = fake.requests().len();

    // Someone else touches the Lease (a label, as kubectl would): the leader's next
    // renew on its cached resourceVersion is a real 409, read back and renewed.
    let mut touched = fake.get(Res::Leases, NS, NAME).unwrap();
    touched["metadata"]["labels"] = json!({"team": "payments"});
    fake.put(Res::Leases, NS, touched);
    let conflict = answered(&fake, "update", 409, from).await;
    let renewed = answered(&fake, "update", 200, conflict).await;
    let r = fake.requests();
    let after: Vec<_> = r[conflict..=renewed]
        .iter()
        .map(|r| (r.verb.as_str(), r.status))
        .collect();
    assert_eq!(after, [("update", 409), ("get", 200), ("update", 200)]);
    assert_eq!(
        fake.get(Res::Leases, NS, NAME).unwrap()["metadata"]["labels"]["team"],
        json!("payments"),
        "the renew kept what it read"
    );

    // Then the answer to a renew is lost after it was stored (ambiguous), and the read
    // that follows gets a 500: both show in status, leadership never lapses, and the
    // renew after a good read clears the error.
    fake.inject("update", Fault::DropAfterCommit);
    fake.inject("get", Fault::Status(500, "InternalError"));
    let l = wait_for(&mut rx_a, LEASE, "a shows the trouble", |l| {
        l.error.is_some()
    })
    .await;
    assert!(l.leading, "{l:?}");
    let failed_get = answered(&fake, "get", 500, renewed).await;
    let l = wait_for(&mut rx_a, LEASE, "a renews again, healthy", |l| {
        l.leading && l.error.is_none()
    })
    .await;
    assert_eq!(l.leader_rev, Some(0));
    let healed = answered(&fake, "update", 200, failed_get).await;
    let r = fake.requests();
    let around: Vec<_> = r[failed_get - 1..=healed]
        .iter()
        .map(|r| (r.verb.as_str(), r.status))
        .collect();
    // The dropped update was stored (200 on the fake's side), then read back.
    assert_eq!(
        around,
        [("update", 200), ("get", 500), ("get", 200), ("update", 200)]
    );
    let errors: Vec<_> = log.all().into_iter().filter_map(|l| l.error).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("lost the answer to its renew") || e.contains("HTTP 500")),
        "{errors:?}"
    );
    assert!(log.all().iter().all(|l| l.leading), "{:?}", log.all());
    assert_eq!(lease_spec(&fake)["holderIdentity"], json!("a_00000001"));
}

#[tokio::test]
async fn lease_election_expiry_is_judged_locally_not_from_renew_time() {
    let fake = KubeFake::start(&["tok"]);
    // A dead holder whose clock ran a century ahead.
    fake.put(
        Res::Leases,
        NS,
        json!({"metadata": {"name": NAME}, "spec": {"holderIdentity": "ghost",
            "leaseDurationSeconds": 2, "acquireTime": "2126-01-01T00:00:00.000000Z",
            "renewTime": "2126-01-01T00:00:00.000000Z", "leaseTransitions": 7}}),
    );
    let t = Instant::now();
    let a = spawn(fake.url(), "a_00000001");
    let mut rx_a = a.watch();
    let l = wait_for(&mut rx_a, LEASE, "a follows the ghost", |l| {
        l.leader.is_some()
    })
    .await;
    assert_eq!((l.leader.as_deref(), l.leading), (Some("ghost"), false));
    let l = wait_for(
        &mut rx_a,
        2 * LEASE,
        "a takes the silent ghost's Lease",
        |l| l.leading,
    )
    .await;
    let took = t.elapsed();
    assert!(
        took >= LEASE,
        "acquired after {took:?}, before the lease ran out"
    );
    assert_eq!(l.leader_rev, Some(8));
    let spec = lease_spec(&fake);
    assert_eq!(spec["holderIdentity"], json!("a_00000001"));
    assert_eq!(spec["leaseTransitions"], json!(8));
    assert_eq!(spec["acquireTime"], spec["renewTime"]);
    assert!(spec["renewTime"].as_str().unwrap().starts_with("20"));
    assert_ne!(spec["renewTime"], json!("2126-01-01T00:00:00.000000Z"));
}

#[tokio::test]
async fn lease_election_without_rbac_reports_it_and_recovers_when_granted() {
    let fake = KubeFake::start(&["tok"]);
    // The chart did not pre-create the Lease and the Role lacks `create`.
    fake.set_roles(Some(vec![
        Rule {
            verb: "get",
            resource: "leases",
            name: Some(NAME.to_owned()),
        },
        Rule {
            verb: "update",
            resource: "leases",
            name: Some(NAME.to_owned()),
        },
    ]));
    let a = spawn(fake.url(), "a_00000001");
    let mut rx_a = a.watch();
    let l = wait_for(&mut rx_a, LEASE, "a says it may not create", |l| {
        l.error.is_some()
    })
    .await;
    let error = l.error.unwrap();
    assert!(!l.leading);
    assert!(
        error.contains("cannot create its Lease")
            && error.contains("forbidden")
            && error.contains("grant tokend's ServiceAccount that verb in a Role"),
        "{error}"
    );
    fake.set_roles(None);
    let l = wait_for(&mut rx_a, 2 * LEASE, "a leads once allowed", |l| l.leading).await;
    assert_eq!(l.error, None);
}
