//! The etcd election of a tokend group (`tokend::ha::Election`, HA.md §3.4/§3.7) against a
//! real etcd on loopback: one leader, hand-over on resign, step-down strictly before anyone
//! else can lead when cut off, and a leader again after etcd restarts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokend::ha::{Election, Leadership};
use tokend::net::etcd::{EtcdClient, EtcdOptions};
use tokio::sync::watch;

use crate::support::etcd::{EtcdCluster, TcpProxy};

const TTL: Duration = Duration::from_secs(2);
const KEY: &[u8] = b"/tokend/g1/leader";

fn client(endpoints: Vec<String>, timeout: Duration) -> EtcdClient {
    let mut opts = EtcdOptions::new(endpoints);
    opts.timeout = timeout;
    EtcdClient::new(opts).expect("etcd client")
}

/// Every published `Leadership` with the instant it was seen, from the moment of spawning.
#[derive(Clone)]
struct Log(Arc<Mutex<Vec<(Instant, Leadership)>>>);

impl Log {
    fn record(mut rx: watch::Receiver<Leadership>) -> Log {
        let log = Log(Arc::new(Mutex::new(vec![(
            Instant::now(),
            rx.borrow_and_update().clone(),
        )])));
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

    /// The first instant after `after` at which `pred` held.
    fn first(&self, after: Instant, pred: impl Fn(&Leadership) -> bool) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(at, l)| *at >= after && pred(l))
            .map(|(at, _)| *at)
    }
}

fn assert_never_both(a: &Log, b: &Log) {
    let end = Instant::now();
    for (a0, a1) in a.leading_intervals(end) {
        for (b0, b1) in b.leading_intervals(end) {
            assert!(
                a1 <= b0 || b1 <= a0,
                "both led at once: a {a0:?}..{a1:?}, b {b0:?}..{b1:?}"
            );
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

async fn leader_key_value(etcd: &EtcdClient) -> Option<String> {
    let r = etcd.get(KEY).await.expect("get leader key");
    r.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

#[tokio::test]
async fn election_two_on_one_key_exactly_one_leads() {
    let cluster = EtcdCluster::start(1);
    let etcd = client(cluster.endpoints(), Duration::from_secs(2));
    let a = Election::spawn(etcd.clone(), KEY.to_vec(), "a_00000001".into(), TTL);
    let b = Election::spawn(etcd.clone(), KEY.to_vec(), "b_00000002".into(), TTL);
    let (log_a, log_b) = (Log::record(a.watch()), Log::record(b.watch()));
    let (mut rx_a, mut rx_b) = (a.watch(), b.watch());

    let limit = Duration::from_secs(5);
    let la = wait_for(&mut rx_a, limit, "a sees a leader", |l| l.leader.is_some()).await;
    let lb = wait_for(&mut rx_b, limit, "b sees a leader", |l| l.leader.is_some()).await;
    assert_eq!(la.leader, lb.leader, "a: {la:?} b: {lb:?}");
    let leader = la.leader.clone().unwrap();
    assert_eq!(leader_key_value(&etcd).await.as_deref(), Some(&*leader));
    let (winner, loser) = if leader == "a_00000001" {
        (la, lb)
    } else {
        (lb, la)
    };
    assert!(winner.leading && winner.leader_rev.is_some(), "{winner:?}");
    assert!(!loser.leading && loser.leader_rev.is_none(), "{loser:?}");
    assert_eq!(winner.error, None);

    // Several keepalive periods later: still the same single leader, never both.
    let settle = Instant::now() + 2 * TTL;
    while Instant::now() < settle {
        let _ = tokio::time::timeout(TTL, rx_a.changed()).await;
    }
    assert_eq!(rx_a.borrow().leader.as_deref(), Some(&*leader));
    assert_eq!(rx_b.borrow().leader.as_deref(), Some(&*leader));
    assert!(rx_a.borrow().leading != rx_b.borrow().leading);
    assert_never_both(&log_a, &log_b);
}

#[tokio::test]
async fn election_leader_resigns_and_the_other_leads_within_a_second() {
    let cluster = EtcdCluster::start(1);
    let etcd = client(cluster.endpoints(), Duration::from_secs(2));
    let a = Election::spawn(etcd.clone(), KEY.to_vec(), "a_00000001".into(), TTL);
    let mut rx_a = a.watch();
    wait_for(&mut rx_a, Duration::from_secs(5), "a leads", |l| l.leading).await;
    let b = Election::spawn(etcd.clone(), KEY.to_vec(), "b_00000002".into(), TTL);
    let mut rx_b = b.watch();
    wait_for(&mut rx_b, Duration::from_secs(5), "b follows a", |l| {
        l.leader.as_deref() == Some("a_00000001")
    })
    .await;

    let t = Instant::now();
    a.resign().await;
    assert!(!rx_a.borrow().leading, "{:?}", *rx_a.borrow());
    let l = wait_for(
        &mut rx_b,
        Duration::from_secs(3),
        "b leads after a resigned",
        |l| l.leading,
    )
    .await;
    let took = t.elapsed();
    eprintln!("hand-over after resign took {took:?}");
    assert_eq!(l.leader.as_deref(), Some("b_00000002"));
    // Far below the TTL: the DELETE, not the lease expiry, triggered it.
    assert!(
        took < Duration::from_millis(1500),
        "hand-over took {took:?}"
    );
    assert_eq!(leader_key_value(&etcd).await.as_deref(), Some("b_00000002"));
}

#[tokio::test]
async fn election_cut_off_leader_steps_down_before_the_other_leads() {
    let cluster = EtcdCluster::start(1);
    let proxy = TcpProxy::start(cluster.client_addr(0));
    // Longer than the TTL: a keepalive that hangs must not delay the step-down.
    let timeout = TTL + Duration::from_secs(1);
    let via_proxy = client(vec![proxy.url()], timeout);
    let direct = client(cluster.endpoints(), timeout);
    let a = Election::spawn(via_proxy, KEY.to_vec(), "a_00000001".into(), TTL);
    let mut rx_a = a.watch();
    wait_for(&mut rx_a, Duration::from_secs(5), "a leads", |l| l.leading).await;
    let b = Election::spawn(direct, KEY.to_vec(), "b_00000002".into(), TTL);
    let mut rx_b = b.watch();
    wait_for(&mut rx_b, Duration::from_secs(5), "b follows a", |l| {
        l.leader.as_deref() == Some("a_00000001")
    })
    .await;
    let (log_a, log_b) = (Log::record(a.watch()), Log::record(b.watch()));

    let cut = Instant::now();
    proxy.blackhole();
    wait_for(&mut rx_b, 3 * TTL, "b leads after a was cut off", |l| {
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
    assert!(
        a_down - cut <= TTL,
        "a stepped down {:?} after the cut",
        a_down - cut
    );
    assert_never_both(&log_a, &log_b);
    let l = wait_for(&mut rx_a, 2 * TTL, "a says why", |l| l.error.is_some()).await;
    assert!(!l.leading, "{l:?}");

    // Healed: a learns its lease is gone and follows b, without an error.
    proxy.restore();
    let l = wait_for(&mut rx_a, 3 * TTL, "a follows b after the heal", |l| {
        l.leader.as_deref() == Some("b_00000002") && l.error.is_none()
    })
    .await;
    assert!(!l.leading);
    assert!(rx_b.borrow().leading);
    assert_never_both(&log_a, &log_b);
}

#[tokio::test]
async fn election_etcd_restarted_elects_a_leader_again() {
    let mut cluster = EtcdCluster::start(1);
    let etcd = client(cluster.endpoints(), Duration::from_secs(1));
    let a = Election::spawn(etcd.clone(), KEY.to_vec(), "a_00000001".into(), TTL);
    let b = Election::spawn(etcd.clone(), KEY.to_vec(), "b_00000002".into(), TTL);
    let (log_a, log_b) = (Log::record(a.watch()), Log::record(b.watch()));
    let (mut rx_a, mut rx_b) = (a.watch(), b.watch());
    let limit = Duration::from_secs(5);
    wait_for(&mut rx_a, limit, "a sees a leader", |l| l.leader.is_some()).await;
    wait_for(&mut rx_b, limit, "b sees a leader", |l| l.leader.is_some()).await;

    // etcd gone: nobody leads once the lease could have run out, and both say why.
    cluster.kill_member(0);
    wait_for(&mut rx_a, 2 * TTL, "a reports etcd down", |l| {
        !l.leading && l.error.is_some()
    })
    .await;
    wait_for(&mut rx_b, 2 * TTL, "b reports etcd down", |l| {
        !l.leading && l.error.is_some()
    })
    .await;

    cluster.start_member(0);
    cluster.wait_healthy(0).expect("etcd back");
    let limit = Duration::from_secs(8);
    let la = wait_for(&mut rx_a, limit, "a healthy again", |l| {
        l.error.is_none() && l.leader.is_some()
    })
    .await;
    let lb = wait_for(&mut rx_b, limit, "b healthy again", |l| {
        l.error.is_none() && l.leader.is_some()
    })
    .await;
    let leader = la.leader.clone().unwrap();
    assert_eq!(lb.leader.as_deref(), Some(&*leader));
    let leading = if leader == "a_00000001" {
        &mut rx_a
    } else {
        &mut rx_b
    };
    wait_for(leading, limit, "the leader leads again", |l| l.leading).await;
    assert_eq!(leader_key_value(&etcd).await.as_deref(), Some(&*leader));
    assert_never_both(&log_a, &log_b);
}
