//! The etcd store (`tokend::store::etcd`) against a real etcd: compare-and-swap on the
//! record's `mod_revision`, create-if-absent, claims fenced by the leader key, and the watch
//! that followers mirror from (HA.md §3.7).

use std::time::Duration;

use tokend::net::etcd::{EtcdClient, EtcdOptions};
use tokend::store::etcd::EtcdStore;
use tokend::store::{CredentialState, Purpose, Store, StoreError};
use tokend::store::{SharedStore, Watched};

use crate::support::etcd::{EtcdCluster, require_etcd};

fn store(cluster: &EtcdCluster) -> EtcdStore {
    let client = EtcdClient::new(EtcdOptions::new(cluster.endpoints())).unwrap();
    EtcdStore::new(client, "/tokend/", "g1")
}

fn record(chain_gen: u64) -> CredentialState {
    CredentialState {
        credential: "vandar-main".into(),
        chain_gen,
        ..Default::default()
    }
}

#[tokio::test]
async fn every_write_is_a_compare_and_swap_on_the_version_read() {
    require_etcd();
    let cluster = EtcdCluster::start(1);
    cluster.wait_all_healthy().unwrap();
    let (a, b) = (store(&cluster), store(&cluster));
    assert!(a.read("vandar-main").await.unwrap().is_none());
    let v1 = a.create(&record(1)).await.unwrap();
    // Create-if-absent: the second importer loses.
    assert!(matches!(
        b.create(&record(7)).await,
        Err(StoreError::Conflict { .. })
    ));
    let (got, v) = b.read("vandar-main").await.unwrap().unwrap();
    assert_eq!((got.chain_gen, &v), (1, &v1));
    let v2 = b.cas(&v, &record(2), Purpose::Commit).await.unwrap();
    assert_ne!(v2, v1);
    // `a` still holds v1: its write must not land.
    assert!(matches!(
        a.cas(&v1, &record(9), Purpose::Commit).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(a.read("vandar-main").await.unwrap().unwrap().0.chain_gen, 2);
    // The key is where SPEC.md says operators find it.
    let out = cluster.etcdctl(&["get", "/tokend/g1/state/vandar-main", "--print-value-only"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["chain_gen"], 2);
    assert_eq!(value["version"], 2);
}

#[tokio::test]
async fn a_claim_lands_only_while_its_process_leads_but_a_commit_always_can() {
    require_etcd();
    let cluster = EtcdCluster::start(1);
    cluster.wait_all_healthy().unwrap();
    let s = store(&cluster);
    let v = s.create(&record(1)).await.unwrap();
    // A campaigning process that does not lead: no claim of it lands.
    s.set_fence(None);
    assert!(matches!(
        s.cas(&v, &record(1), Purpose::Claim).await,
        Err(StoreError::Conflict { .. })
    ));
    // Leading: the leader key exists with the revision it was created at.
    cluster.etcdctl(&["put", "/tokend/g1/leader", "me"]);
    let rev = {
        let out = cluster.etcdctl(&["get", "/tokend/g1/leader", "-w", "json"]);
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        j["kvs"][0]["create_revision"].as_i64().unwrap()
    };
    s.set_fence(Some(rev));
    let v = s.cas(&v, &record(1), Purpose::Claim).await.unwrap();
    // Leadership lost (the key deleted with the lease): claims fail again…
    cluster.etcdctl(&["del", "/tokend/g1/leader"]);
    assert!(matches!(
        s.cas(&v, &record(1), Purpose::Claim).await,
        Err(StoreError::Conflict { .. })
    ));
    // …but the commit of an answer already received still lands.
    s.cas(&v, &record(2), Purpose::Commit).await.unwrap();
}

#[tokio::test]
async fn the_watch_delivers_every_commit_of_its_own_group_only() {
    require_etcd();
    let cluster = EtcdCluster::start(1);
    cluster.wait_all_healthy().unwrap();
    let (writer, follower) = (store(&cluster), store(&cluster));
    let mut watched = follower.watch();
    // Give the watch time to be created before the first write (it starts from "now").
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut v = writer.create(&record(1)).await.unwrap();
    for g in 2..=4 {
        v = writer.cas(&v, &record(g), Purpose::Commit).await.unwrap();
    }
    let mut gens = Vec::new();
    while gens.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(5), watched.recv()).await {
            Ok(Some(Watched::Changed(c))) => {
                assert_eq!(c.record.credential, "vandar-main");
                gens.push(c.record.chain_gen);
            }
            other => panic!("expected a change, got {other:?} after {gens:?}"),
        }
    }
    assert_eq!(gens, [1, 2, 3, 4]);
    // Another group's keys are not ours.
    let other = EtcdStore::new(
        EtcdClient::new(EtcdOptions::new(cluster.endpoints())).unwrap(),
        "/tokend/",
        "g2",
    );
    other.create(&record(1)).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), watched.recv())
            .await
            .is_err(),
        "a change of another group reached this one"
    );
}
