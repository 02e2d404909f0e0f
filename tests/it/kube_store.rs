//! The Kubernetes store (`tokend::store::kubernetes`) against the fake API server: every
//! write a PUT with the resourceVersion read, create-if-absent, adoption of a pre-created
//! Secret, claims refused while not leading, and the per-Secret watch followers mirror from,
//! across a 410 Gone and a lost answer.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokend::net::kube::{Credentials, KubeClient, KubeConfig, KubeOptions};
use tokend::secret::Secret;
use tokend::store::kubernetes::KubeStore;
use tokend::store::{CredentialState, Purpose, SharedStore, Store, StoreError, Watched};

use crate::support::kube_fake::{Fault, KubeFake, Res};

const NS: &str = "tokend-test";
const SECRET: &str = "tokend-g1-vandar-main";

fn store(fake: &KubeFake) -> KubeStore {
    let config = KubeConfig {
        server: fake.url(),
        ca_pem: None,
        credentials: Credentials::Token(Secret::new("t1")),
        namespace: NS.to_owned(),
        origin: "test".to_owned(),
    };
    let client = KubeClient::new(KubeOptions::new(config)).unwrap();
    KubeStore::new(client, NS.to_owned(), "g1".to_owned())
}

fn record(chain_gen: u64) -> CredentialState {
    CredentialState {
        credential: "vandar-main".into(),
        chain_gen,
        ..Default::default()
    }
}

/// The record as the fake holds it.
fn stored(fake: &KubeFake) -> Value {
    let secret = fake.get(Res::Secrets, NS, SECRET).expect("state Secret");
    let b64 = secret["data"]["state.json"].as_str().expect("state.json");
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

async fn next_change(rx: &mut tokio::sync::mpsc::Receiver<Watched>) -> CredentialState {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(Watched::Changed(c))) => return c.record,
            Ok(Some(Watched::Resync)) => continue,
            other => panic!("no change within 5 s: {other:?}"),
        }
    }
}

#[tokio::test]
async fn every_write_is_a_put_on_the_resource_version_read() {
    let fake = KubeFake::start(&["t1"]);
    let (a, b) = (store(&fake), store(&fake));
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
    // Where SPEC.md says operators find it, labelled, never written blindly.
    let secret = fake.get(Res::Secrets, NS, SECRET).unwrap();
    assert_eq!(secret["metadata"]["labels"]["tokend.dev/group"], "g1");
    assert_eq!(stored(&fake)["chain_gen"], 2);
    assert_eq!(stored(&fake)["version"], 2);
    assert_eq!(fake.unconditional_updates(), 0);
}

#[tokio::test]
async fn a_pre_created_empty_secret_is_adopted_without_create() {
    let fake = KubeFake::start(&["t1"]);
    fake.put(
        Res::Secrets,
        NS,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": SECRET, "namespace": NS}}),
    );
    let s = store(&fake);
    assert!(s.read("vandar-main").await.unwrap().is_none());
    s.create(&record(1)).await.unwrap();
    assert_eq!(stored(&fake)["chain_gen"], 1);
    assert!(
        fake.requests().iter().all(|r| r.verb != "create"),
        "{:?}",
        fake.requests()
    );
    // A second adoption finds a record there and loses.
    assert!(matches!(
        store(&fake).create(&record(5)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(fake.unconditional_updates(), 0);
}

#[tokio::test]
async fn a_claim_is_refused_while_not_leading_but_a_commit_always_lands() {
    let fake = KubeFake::start(&["t1"]);
    let s = store(&fake);
    let v = s.create(&record(1)).await.unwrap();
    let writes = |fake: &KubeFake| {
        fake.requests()
            .iter()
            .filter(|r| r.verb == "update")
            .count()
    };
    s.set_fence(None);
    let before = writes(&fake);
    assert!(matches!(
        s.cas(&v, &record(1), Purpose::Claim).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(writes(&fake), before, "a refused claim is never sent");
    s.set_fence(Some(0));
    let v = s.cas(&v, &record(1), Purpose::Claim).await.unwrap();
    s.set_fence(None);
    s.cas(&v, &record(2), Purpose::Commit).await.unwrap();
    assert_eq!(stored(&fake)["chain_gen"], 2);
}

#[tokio::test]
async fn a_write_whose_answer_is_lost_is_ambiguous_and_reads_back() {
    let fake = KubeFake::start(&["t1"]);
    let s = store(&fake);
    let v = s.create(&record(1)).await.unwrap();
    fake.inject("update", Fault::DropAfterCommit);
    assert!(matches!(
        s.cas(&v, &record(2), Purpose::Commit).await,
        Err(StoreError::Ambiguous { .. })
    ));
    // It landed: the read-back says so, and the old version no longer writes.
    let (got, v2) = s.read("vandar-main").await.unwrap().unwrap();
    assert_eq!(got.chain_gen, 2);
    assert_ne!(v2, v);
    assert!(matches!(
        s.cas(&v, &record(3), Purpose::Commit).await,
        Err(StoreError::Conflict { .. })
    ));
    // A 5xx on a write is not applied: unavailable, and the record is unchanged.
    fake.inject("update", Fault::Status(503, "ServiceUnavailable"));
    let e = s.cas(&v2, &record(3), Purpose::Commit).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Unavailable { .. } | StoreError::Ambiguous { .. }
        ),
        "{e}"
    );
    assert_eq!(stored(&fake)["chain_gen"], 2);
}

#[tokio::test]
async fn the_watch_delivers_every_commit_and_survives_410_gone() {
    let fake = KubeFake::start(&["t1"]);
    let (writer, follower) = (store(&fake), store(&fake));
    let mut watched = follower.watch();
    follower.track(&["vandar-main".to_owned()]);
    // The Secret does not exist yet: whether the watch opens before or after the create,
    // it reports the record (a watch without a version starts with the current state).
    let mut v = writer.create(&record(1)).await.unwrap();
    assert_eq!(next_change(&mut watched).await.chain_gen, 1);
    for g in 2..=3 {
        v = writer.cas(&v, &record(g), Purpose::Commit).await.unwrap();
        assert_eq!(next_change(&mut watched).await.chain_gen, g);
    }
    // Another group's Secret is not this watch's business.
    let other = KubeStore::new(
        store(&fake).client().clone(),
        NS.to_owned(),
        "g2".to_owned(),
    );
    other.create(&record(99)).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(500), watched.recv()).await;
    assert!(quiet.is_err(), "{quiet:?}");
    // History compacted past the last version the watcher saw, and its stream renewed (as
    // after the API server comes back): the re-watch is 410 Gone, so it starts over from
    // the current state (a watch without a version) — once, not in a loop.
    let fresh_starts = |fake: &KubeFake| {
        fake.requests()
            .iter()
            .filter(|r| r.verb == "watch" && r.name == SECRET)
            .filter(|r| {
                form_urlencoded::parse(r.query.as_bytes())
                    .any(|(k, v)| k == "resourceVersion" && v.is_empty())
            })
            .count()
    };
    let before = fresh_starts(&fake);
    fake.compact();
    follower.rewatch();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fresh_starts(&fake) == before && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // …and then stays there: a window in which a loop on 410 would show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fresh_starts(&fake), before + 1, "{:?}", fake.requests());
    writer.cas(&v, &record(4), Purpose::Commit).await.unwrap();
    let mut latest = 3;
    while latest < 4 {
        latest = next_change(&mut watched).await.chain_gen;
    }
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.query.contains("watch=1"))
            .all(|r| r.query.contains("fieldSelector=metadata.name")),
        "every watch names its Secret (RBAC resourceNames)"
    );
    assert_eq!(fake.unconditional_updates(), 0);
}
