//! The etcd client (`tokend::net::etcd`) against a real etcd 3.4 cluster on loopback: the
//! calls the shared-state protocol (HA.md §3.7) is built on, and how each failure looks.

use std::time::{Duration, Instant};

use tokend::net::etcd::{
    Compare, EtcdClient, EtcdError, EtcdOptions, EventKind, Op, OpResponse, TxnResponse,
};
use tokend::secret::Secret;

use crate::support::etcd::{EtcdCluster, TcpProxy};

fn client(endpoints: Vec<String>, timeout: Duration) -> EtcdClient {
    let mut opts = EtcdOptions::new(endpoints);
    opts.timeout = timeout;
    EtcdClient::new(opts).expect("etcd client")
}

/// `if MOD(key) == rev then put(key, value) else range(key)`.
async fn cas(
    etcd: &EtcdClient,
    key: &str,
    rev: i64,
    value: &str,
) -> Result<TxnResponse, EtcdError> {
    etcd.txn(
        &[Compare::mod_revision(key, rev)],
        &[Op::put(key, value, 0)],
        &[Op::range(key)],
    )
    .await
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

/// Waits for `what` to hold, polling; panics with `why` after `limit`.
async fn eventually<F, Fut>(limit: Duration, why: &str, what: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_every(limit, Duration::from_millis(50), why, what).await
}

async fn eventually_every<F, Fut>(limit: Duration, every: Duration, why: &str, mut what: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !what().await {
        assert!(Instant::now() < deadline, "{why} (waited {limit:?})");
        tokio::time::sleep(every).await;
    }
}

#[tokio::test]
async fn etcd_cas_txn_on_mod_revision_succeeds_once_and_its_replay_fails() {
    let cluster = EtcdCluster::start(1);
    let etcd = client(cluster.endpoints(), Duration::from_secs(5));
    let key = "/tokend/g1/state/vandar-main";

    assert!(etcd.get(key).await.unwrap().kvs.is_empty());
    let created = etcd
        .txn(
            &[Compare::create_revision(key, 0)],
            &[Op::put(key, r#"{"chain_gen":1}"#, 0)],
            &[],
        )
        .await
        .unwrap();
    assert!(created.succeeded);
    let r0 = etcd.get(key).await.unwrap().kvs[0].mod_revision;
    assert_eq!(r0, created.revision);

    let claimed = r#"{"chain_gen":1,"claim":"a"}"#;
    let won = cas(&etcd, key, r0, claimed).await.unwrap();
    assert!(won.succeeded, "{won:?}");
    assert!(matches!(won.responses[..], [OpResponse::Put(_)]));

    let replay = cas(&etcd, key, r0, claimed).await.unwrap();
    assert!(!replay.succeeded, "a replayed CAS must fail: {replay:?}");
    let [OpResponse::Range(current)] = &replay.responses[..] else {
        panic!("the failure branch's range: {replay:?}")
    };
    assert_eq!(current.kvs[0].mod_revision, won.revision);
    assert_eq!(current.kvs[0].value, br#"{"chain_gen":1,"claim":"a"}"#);

    // Loopback latency of a CAS txn (reported, not asserted: the machine is shared).
    let mut rev = won.revision;
    let mut samples = Vec::new();
    for i in 0..40 {
        let t = Instant::now();
        let r = etcd
            .txn(
                &[Compare::mod_revision(key, rev)],
                &[Op::put(key, format!(r#"{{"chain_gen":{i}}}"#), 0)],
                &[],
            )
            .await
            .unwrap();
        samples.push(t.elapsed());
        assert!(r.succeeded);
        rev = r.revision;
    }
    eprintln!(
        "etcd CAS txn on loopback: p50 {:?}, p90 {:?} (n={})",
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.9),
        samples.len()
    );
}

#[tokio::test]
async fn etcd_txn_fenced_by_leader_create_revision_fails_once_the_lease_expired() {
    let cluster = EtcdCluster::start(1);
    let etcd = client(cluster.endpoints(), Duration::from_secs(5));
    let (leader, state) = ("/tokend/g1/leader", "/tokend/g1/state/c");
    let state_rev = etcd.put(state, "{}", 0).await.unwrap();

    let lease = etcd.lease_grant(2).await.unwrap();
    assert_eq!(lease.ttl, 2);
    let campaign = etcd
        .txn(
            &[Compare::create_revision(leader, 0)],
            &[Op::put(leader, "pod-a", lease.id)],
            &[Op::range(leader)],
        )
        .await
        .unwrap();
    assert!(campaign.succeeded);
    let leader_rev = campaign.revision;
    let kv = &etcd.get(leader).await.unwrap().kvs[0];
    assert_eq!((kv.create_revision, kv.lease), (leader_rev, lease.id));

    let fenced_claim = |rev| {
        let etcd = &etcd;
        async move {
            etcd.txn(
                &[
                    Compare::mod_revision(state, rev),
                    Compare::create_revision(leader, leader_rev),
                ],
                &[Op::put(state, r#"{"claim":"pod-a"}"#, 0)],
                &[],
            )
            .await
        }
    };
    // Kept alive past its TTL, the lease (and so the leadership) lives on.
    let kept_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < kept_until {
        let ttl = etcd.lease_keepalive(lease.id).await.unwrap();
        assert!(ttl > 0, "a kept-alive lease reported TTL {ttl}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let claimed = fenced_claim(state_rev).await.unwrap();
    assert!(claimed.succeeded, "the leader's fenced claim: {claimed:?}");

    // Left alone, the lease expires and takes the leader key with it.
    eventually(
        Duration::from_secs(15),
        "the leader key outlived its 2 s lease",
        || async { etcd.get(leader).await.unwrap().kvs.is_empty() },
    )
    .await;
    assert_eq!(etcd.lease_keepalive(lease.id).await.unwrap(), 0);
    let late = fenced_claim(claimed.revision).await.unwrap();
    assert!(
        !late.succeeded,
        "an ex-leader's claim must fail after its lease expired"
    );
    // Revoking an expired lease is not an error.
    etcd.lease_revoke(lease.id).await.unwrap();
}

#[tokio::test]
async fn etcd_watch_sees_puts_and_deletes_in_order_and_a_compacted_start_is_typed() {
    let cluster = EtcdCluster::start(1);
    let etcd = client(cluster.endpoints(), Duration::from_secs(5));
    let prefix = "/tokend/g1/state/";
    let key = format!("{prefix}c1");

    let first = etcd.put(&key, "v1", 0).await.unwrap();
    etcd.put(&key, "v2", 0).await.unwrap();
    etcd.txn(&[], &[Op::delete(&key)], &[]).await.unwrap();

    let end = tokend::net::etcd::prefix_end(prefix.as_bytes());
    let mut watch = etcd.watch(prefix, Some(&end), first).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("history events")
            .unwrap();
        for e in batch.events {
            seen.push((
                e.kind,
                String::from_utf8(e.kv.value).unwrap(),
                e.kv.mod_revision,
            ));
        }
    }
    assert_eq!(
        seen,
        [
            (EventKind::Put, "v1".into(), first),
            (EventKind::Put, "v2".into(), first + 1),
            (EventKind::Delete, String::new(), first + 2),
        ]
    );

    // Live events, and how long a put takes to reach the watcher.
    let mut delays = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let rev = etcd.put(&key, format!("live{i}"), 0).await.unwrap();
        let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("a live event")
            .unwrap();
        delays.push(t.elapsed());
        assert_eq!(batch.events[0].kv.mod_revision, rev);
        assert_eq!(batch.events[0].kind, EventKind::Put);
    }
    eprintln!(
        "etcd watch, put sent → event received: p50 {:?}, p90 {:?} (n={})",
        percentile(&mut delays, 0.5),
        percentile(&mut delays, 0.9),
        delays.len()
    );
    drop(watch);

    let now = etcd.get(&key).await.unwrap().header.revision;
    cluster.etcdctl(&["compact", &now.to_string()]);
    let compacted = match etcd.watch(prefix, Some(&end), first).await {
        Err(e) => e,
        Ok(mut w) => tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("the compaction answer")
            .unwrap_err(),
    };
    let EtcdError::Compacted {
        compact_revision, ..
    } = compacted
    else {
        panic!("want Compacted, got {compacted:?}")
    };
    assert_eq!(compact_revision, now);
    assert!(compacted.to_string().contains("re-read the current state"));
}

#[tokio::test]
async fn etcd_three_members_killing_the_first_keeps_reads_and_txns_working() {
    let mut cluster = EtcdCluster::start(3);
    // The hard case: the first endpoint is the raft leader, so its death needs an election.
    cluster.make_leader(0);
    let etcd = client(cluster.endpoints(), Duration::from_secs(3));
    let key = "/tokend/g1/state/c";
    let rev = etcd.put(key, "before", 0).await.unwrap();

    cluster.kill_member(0);
    // The other two elect a new leader first (election timeout 1 s).
    let t = Instant::now();
    eventually(
        Duration::from_secs(20),
        "reads after killing member 0",
        || async { etcd.get(key).await.is_ok() },
    )
    .await;
    eprintln!(
        "etcd failover: first read served {:?} after kill -9 of member 0",
        t.elapsed()
    );
    let kvs = etcd.get(key).await.unwrap().kvs;
    assert_eq!(
        (kvs[0].value.as_slice(), kvs[0].mod_revision),
        (&b"before"[..], rev)
    );
    // A fresh client (no pooled connections) starts at the dead first endpoint: its
    // refused connection means "not sent", so even a write moves on to the next member.
    let fresh = client(cluster.endpoints(), Duration::from_secs(3));
    let t = Instant::now();
    let swapped = cas(&fresh, key, rev, "after").await.unwrap();
    assert!(swapped.succeeded);
    assert_ne!(cluster.leader(), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "txn took {:?}",
        t.elapsed()
    );

    // The member comes back and catches up.
    cluster.start_member(0);
    cluster.wait_healthy(0).unwrap();
    let only_first = client(vec![cluster.endpoint(0)], Duration::from_secs(3));
    eventually(
        Duration::from_secs(20),
        "restarted member 0 serves the new value",
        || async {
            only_first
                .get(key)
                .await
                .is_ok_and(|r| r.kvs.first().is_some_and(|kv| kv.value == b"after"))
        },
    )
    .await;
}

#[tokio::test]
async fn etcd_a_whole_cluster_restart_keeps_the_data_and_clients_reconnect() {
    let mut cluster = EtcdCluster::start(3);
    let etcd = client(cluster.endpoints(), Duration::from_secs(3));
    let key = "/tokend/g1/state/c";
    let rev = etcd.put(key, "v", 0).await.unwrap();

    cluster.restart_member(1);
    cluster.kill_all();
    let e = etcd.get(key).await.unwrap_err();
    assert!(matches!(e, EtcdError::Unreachable { .. }), "{e:?}");
    cluster.start_all();
    eventually(
        Duration::from_secs(20),
        "reads after a full restart",
        || async { etcd.get(key).await.is_ok() },
    )
    .await;
    let kv = &etcd.get(key).await.unwrap().kvs[0];
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"v"[..], rev));
    assert!(cas(&etcd, key, rev, "w").await.unwrap().succeeded);
}

#[tokio::test]
async fn etcd_a_paused_member_costs_reads_one_deadline_and_makes_writes_ambiguous() {
    let cluster = EtcdCluster::start(3);
    let key = "/tokend/g1/state/c";
    let rev = client(cluster.endpoints(), Duration::from_secs(3))
        .put(key, "v", 0)
        .await
        .unwrap();
    let paused = (0..3).find(|&i| cluster.leader() != Some(i)).unwrap();
    let other = (0..3).find(|&i| i != paused).unwrap();
    cluster.pause_member(paused, true);

    // The kernel still accepts connections for a stopped process: requests go out and
    // nothing comes back. A read moves on after the deadline; a write cannot.
    let timeout = Duration::from_secs(1);
    let ordered = || {
        client(
            vec![cluster.endpoint(paused), cluster.endpoint(other)],
            timeout,
        )
    };
    let t = Instant::now();
    let kvs = ordered().get(key).await.unwrap().kvs;
    assert_eq!(kvs[0].value, b"v");
    let took = t.elapsed();
    assert!(took >= timeout && took < timeout * 3, "read took {took:?}");
    let t = Instant::now();
    let e = cas(&ordered(), key, rev, "w").await.unwrap_err();
    assert!(matches!(e, EtcdError::Ambiguous { .. }), "{e:?}");
    assert!(t.elapsed() < timeout * 3, "write took {:?}", t.elapsed());
    cluster.pause_member(paused, false);
}

#[tokio::test]
async fn etcd_partition_through_a_proxy_fails_fast_and_typed() {
    let cluster = EtcdCluster::start(1);
    let proxy = TcpProxy::start(cluster.client_addr(0));
    let timeout = Duration::from_millis(1500);
    let etcd = client(vec![proxy.url()], timeout);
    let key = "/tokend/g1/state/c";
    let rev = etcd.put(key, "v", 0).await.unwrap();
    let mut watch = etcd.watch(key, None, 0).await.unwrap();

    // Packets vanish: a write is ambiguous, a read unreachable, both within the deadline.
    proxy.blackhole();
    let t = Instant::now();
    let e = cas(&etcd, key, rev, "w").await.unwrap_err();
    assert!(matches!(e, EtcdError::Ambiguous { .. }), "{e:?}");
    assert!(!e.not_applied());
    assert!(e.to_string().contains("read the key back"), "{e}");
    let e = etcd.get(key).await.unwrap_err();
    assert!(matches!(e, EtcdError::Unreachable { .. }), "{e:?}");
    let slack = Duration::from_secs(2);
    assert!(t.elapsed() < 2 * timeout + slack, "took {:?}", t.elapsed());

    // Connections cut and new ones refused: nothing was sent, and it is said at once.
    proxy.cut();
    proxy.refuse();
    let t = Instant::now();
    let e = watch.next().await.unwrap_err();
    assert!(matches!(e, EtcdError::Unreachable { .. }), "{e:?}");
    let e = cas(&etcd, key, rev, "w").await.unwrap_err();
    assert!(
        matches!(
            e,
            EtcdError::Unreachable { .. } | EtcdError::Ambiguous { .. }
        ),
        "{e:?}"
    );
    let e = cas(&etcd, key, rev, "w").await.unwrap_err();
    assert!(matches!(e, EtcdError::Unreachable { .. }), "{e:?}");
    assert!(e.not_applied());
    let text = e.to_string();
    assert!(
        text.contains(&proxy.url()) && text.contains("refused"),
        "{text}"
    );
    assert!(
        t.elapsed() < timeout,
        "refused connections took {:?}",
        t.elapsed()
    );

    // Healed: the ambiguous write above never reached etcd (the blackhole ate it).
    proxy.restore();
    let r = cas(&etcd, key, rev, "w").await.unwrap();
    assert!(r.succeeded, "{r:?}");
}

#[tokio::test]
async fn etcd_auth_right_password_works_wrong_one_fails_clearly_and_tokens_renew() {
    let cluster = EtcdCluster::start_with(1, &["--auth-token-ttl=1"]);
    for args in [
        &["user", "add", "root", "--new-user-password=root-pw-canary"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "tokend"],
        &[
            "role",
            "grant-permission",
            "tokend",
            "--prefix=true",
            "readwrite",
            "/tokend/",
        ],
        &[
            "user",
            "add",
            "tokend",
            "--new-user-password=tokend-pw-canary",
        ],
        &["user", "grant-role", "tokend", "tokend"],
        &["auth", "enable"],
    ] {
        cluster.etcdctl(args);
    }
    let with = |user: Option<&str>, password: &str| {
        let mut opts = EtcdOptions::new(cluster.endpoints());
        opts.username = user.map(str::to_owned);
        opts.password = user.map(|_| Secret::new(password));
        EtcdClient::new(opts).unwrap()
    };

    let good = with(Some("tokend"), "tokend-pw-canary");
    let rev = good.put("/tokend/g1/state/c", "v", 0).await.unwrap();
    assert!(
        cas(&good, "/tokend/g1/state/c", rev, "w")
            .await
            .unwrap()
            .succeeded
    );
    let e = good.get("/elsewhere").await.unwrap_err();
    assert!(matches!(e, EtcdError::Status { code: 7, .. }), "{e:?}");
    assert!(e.to_string().contains("grant tokend's etcd role"), "{e}");

    let bad = with(Some("tokend"), "wrong-pw-canary");
    let e = bad.get("/tokend/g1/state/c").await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, EtcdError::AuthFailed { .. }), "{e:?}");
    assert!(
        text.contains("rejected user `tokend`")
            && text.contains("check the etcd username and password"),
        "{text}"
    );
    assert!(
        !text.contains("canary") && !format!("{e:?}").contains("canary"),
        "{text}"
    );

    let anonymous = with(None, "");
    let e = anonymous.get("/tokend/g1/state/c").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("configure an etcd username and password"),
        "{e}"
    );

    // Simple tokens expire when idle (here after 1 s): the client logs in again by itself.
    // A token taken after the client's own expires no earlier, so wait for that one,
    // probing less often than the TTL (each use renews a simple token).
    tokend::net::install_crypto_provider();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let login = http
        .post(format!("{}/v3/auth/authenticate", cluster.endpoint(0)))
        .body(r#"{"name":"tokend","password":"tokend-pw-canary"}"#)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let probe_token = login["token"].as_str().unwrap().to_owned();
    let every = Duration::from_millis(2500);
    eventually_every(
        Duration::from_secs(20),
        every,
        "the probe token never expired",
        || {
            let (http, token, url) = (&http, &probe_token, cluster.endpoint(0));
            async move {
                http.post(format!("{url}/v3/kv/range"))
                    .header("Authorization", token)
                    .body(r#"{"key":"L3Rva2VuZC8="}"#)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 401)
            }
        },
    )
    .await;
    // First a watch (its expired-token answer comes inside the stream), then a read.
    let mut watch = good.watch("/tokend/g1/state/c", None, rev).await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("a watch event with a renewed token")
        .unwrap();
    assert_eq!(batch.events[0].kv.value, b"v");
    let kvs = good.get("/tokend/g1/state/c").await.unwrap().kvs;
    assert_eq!(kvs[0].value, b"w");
}

#[tokio::test]
async fn etcd_answers_beyond_the_size_cap_are_refused_not_retried() {
    let cluster = EtcdCluster::start(1);
    let etcd = client(cluster.endpoints(), Duration::from_secs(5));
    let big = "x".repeat(1500);
    for i in 0..2 {
        etcd.put(format!("/tokend/g1/state/c{i}"), &big, 0)
            .await
            .unwrap();
    }
    let mut opts = EtcdOptions::new(cluster.endpoints());
    opts.max_response_bytes = 4096;
    let capped = EtcdClient::new(opts).unwrap();
    assert_eq!(
        capped.get("/tokend/g1/state/c0").await.unwrap().kvs.len(),
        1
    );
    let e = capped.range_prefix("/tokend/g1/state/").await.unwrap_err();
    assert!(matches!(e, EtcdError::BadAnswer { .. }), "{e:?}");
    assert!(e.to_string().contains("larger than 4 KiB"), "{e}");
    // A write whose answer is cut off may have been applied: ambiguous.
    let small = capped
        .txn(&[], &[Op::put("/tokend/g1/state/c2", "v", 0)], &[])
        .await;
    assert!(small.is_ok(), "a small txn answer fits: {small:?}");
    let e = capped
        .txn(
            &[],
            &[
                Op::range("/tokend/g1/state/c0"),
                Op::range("/tokend/g1/state/c1"),
                Op::range("/tokend/g1/state/c0"),
            ],
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, EtcdError::Ambiguous { .. }), "{e:?}");
}

#[tokio::test]
async fn etcd_without_the_gateway_is_named_as_such() {
    let cluster = EtcdCluster::start_with(1, &["--enable-grpc-gateway=false"]);
    let etcd = client(cluster.endpoints(), Duration::from_secs(5));
    let e = etcd.status().await.unwrap_err();
    assert!(matches!(e, EtcdError::NoGateway { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "etcd at {} has no HTTP/JSON gateway: start it with --enable-grpc-gateway",
            cluster.endpoint(0)
        )),
        "{text}"
    );

    // And with the gateway, the probe answers.
    let with_gateway = EtcdCluster::start(1);
    let status = client(with_gateway.endpoints(), Duration::from_secs(5))
        .status()
        .await
        .unwrap();
    assert!(status.version.starts_with("3."), "{status:?}");
    assert!(status.is_leader());
}

#[tokio::test]
async fn etcd_over_tls_with_a_ca_file_and_a_client_certificate() {
    let cluster = EtcdCluster::start_tls(1);
    let tls = cluster.tls().unwrap().clone();
    let with = |ca: bool, cert: bool| {
        let mut opts = EtcdOptions::new(cluster.endpoints());
        opts.timeout = Duration::from_secs(5);
        opts.ca_file = ca.then(|| tls.ca.clone());
        if cert {
            opts.cert_file = Some(tls.client_cert.clone());
            opts.key_file = Some(tls.client_key.clone());
        }
        EtcdClient::new(opts).unwrap()
    };

    let etcd = with(true, true);
    let rev = etcd.put("/tokend/g1/state/c", "v", 0).await.unwrap();
    assert!(
        cas(&etcd, "/tokend/g1/state/c", rev, "w")
            .await
            .unwrap()
            .succeeded
    );
    let mut watch = etcd.watch("/tokend/g1/state/c", None, rev).await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("an event over TLS")
        .unwrap();
    assert_eq!(batch.events[0].kv.value, b"v");

    // Without the CA, etcd's certificate is not trusted: not sent, said so.
    let e = with(false, true)
        .get("/tokend/g1/state/c")
        .await
        .unwrap_err();
    assert!(matches!(e, EtcdError::Unreachable { .. }), "{e:?}");
    assert!(
        e.to_string().contains("check that ca_file holds the CA"),
        "{e}"
    );

    // Without a client certificate, etcd (--client-cert-auth) closes the connection
    // after the TLS 1.3 handshake, which looks like any closed connection; the text
    // names the likely cause.
    let e = with(true, false)
        .get("/tokend/g1/state/c")
        .await
        .unwrap_err();
    assert!(matches!(e, EtcdError::Unreachable { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("if etcd runs with --client-cert-auth, configure cert_file and key_file"),
        "{e}"
    );
}
