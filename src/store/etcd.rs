//! The etcd store: one key per credential, `<prefix><group>/state/<credential>`, holding the
//! record's JSON; every write is a txn guarded by the key's `mod_revision` (HA.md §3.7).
//!
//! A claim is also guarded by the leader key's `create_revision` while this process leads
//! (true fencing: an ex-leader whose lease expired cannot claim). A commit never is: a
//! successor the provider already handed out must be kept whoever holds it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::net::etcd::{Compare, EtcdClient, EtcdError, EventKind, Op, prefix_end};

use super::record::CredentialState;
use super::{
    Change, Purpose, SharedStore, Store, StoreError, StoreFuture, Version, Watched, decode_shared,
    encode_shared, watch_backoff,
};

pub struct EtcdStore {
    client: EtcdClient,
    /// `<prefix><group>/state/`
    state_prefix: String,
    leader_key: Vec<u8>,
    /// How claims are fenced: 0 not at all (`once`, which joins the claim protocol but not
    /// the election), the leader key's `create_revision` while this process leads, and
    /// [`NOT_LEADING`] while it does not, so that no claim of a non-leader can land.
    fence: Arc<AtomicI64>,
    /// Tells the watch to reconnect now: its stream may be dead without knowing it.
    rewatch: Arc<tokio::sync::Notify>,
}

/// A watch on a silent stream is renewed after this long: a partitioned TCP connection can
/// stay open and silent for ever, and renewal from the last revision loses nothing. Sooner
/// when the election sees etcd come back ([`EtcdStore::rewatch`]).
const WATCH_RENEW: Duration = Duration::from_secs(20);

impl EtcdStore {
    pub fn new(client: EtcdClient, prefix: &str, group: &str) -> EtcdStore {
        EtcdStore {
            client,
            state_prefix: format!("{prefix}{group}/state/"),
            leader_key: leader_key(prefix, group).into_bytes(),
            fence: Arc::new(AtomicI64::new(0)),
            rewatch: Arc::default(),
        }
    }

    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    pub fn leader_key(&self) -> &[u8] {
        &self.leader_key
    }

    /// Called by a campaigning process on every leadership change: claims land only
    /// while the leader key still has this `create_revision`.
    fn fence_to(&self, leading_with: Option<i64>) {
        self.fence
            .store(leading_with.unwrap_or(NOT_LEADING), Ordering::SeqCst);
    }

    /// Renews the watch now (etcd just became reachable again after a failure: a stream
    /// opened before may be silently dead).
    fn renew_watch(&self) {
        self.rewatch.notify_one();
    }

    /// Writes `record` if every guard holds; [`StoreError::Conflict`] if one does not.
    async fn put_if(
        &self,
        record: &CredentialState,
        guards: Vec<Compare>,
    ) -> Result<Version, StoreError> {
        let key = self.key(&record.credential);
        let r = self
            .client
            .txn(&guards, &[Op::put(&key, encode_shared(record), 0)], &[])
            .await
            .map_err(|e| self.unavailable(&record.credential, e))?;
        if r.succeeded {
            Ok(Version(r.revision.to_string()))
        } else {
            Err(StoreError::Conflict {
                credential: record.credential.clone(),
            })
        }
    }

    fn key(&self, credential: &str) -> String {
        format!("{}{credential}", self.state_prefix)
    }

    fn unavailable(&self, credential: &str, e: EtcdError) -> StoreError {
        match e {
            EtcdError::Ambiguous { .. } => StoreError::Ambiguous {
                credential: credential.to_owned(),
                reason: e.to_string(),
            },
            e => StoreError::Unavailable {
                credential: credential.to_owned(),
                reason: e.to_string(),
            },
        }
    }

    /// Streams every change of a state key (a record another process committed) until the
    /// receiver is dropped. Reconnects from the last revision seen; after a compaction it
    /// cannot know what it missed and sends [`Watched::Resync`].
    fn watch_prefix(&self) -> mpsc::Receiver<Watched> {
        let (tx, rx) = mpsc::channel(256);
        let client = self.client.clone();
        let prefix = self.state_prefix.clone();
        let rewatch = self.rewatch.clone();
        tokio::spawn(async move {
            let end = prefix_end(prefix.as_bytes());
            let mut from = 0i64;
            let mut failures = 0u32;
            loop {
                let mut watch = match client.watch(prefix.as_bytes(), Some(&end), from).await {
                    Ok(w) => w,
                    Err(EtcdError::Compacted { .. }) => {
                        from = 0;
                        if tx.send(Watched::Resync).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(e) => {
                        failures += 1;
                        crate::events::store_failed();
                        if failures == 1 {
                            tracing::warn!(error = %e, "cannot watch the shared state; retrying");
                        }
                        if tx.is_closed() {
                            return;
                        }
                        tokio::time::sleep(watch_backoff(failures)).await;
                        continue;
                    }
                };
                if failures > 0 {
                    tracing::info!("watching the shared state again");
                    // Changes made while the watch was down are replayed from `from`; if it
                    // was never set, nothing was seen yet and everything must be read.
                    if from == 0 && tx.send(Watched::Resync).await.is_err() {
                        return;
                    }
                    failures = 0;
                }
                if from == 0 {
                    from = watch.created_revision() + 1;
                }
                loop {
                    let next = tokio::select! {
                        next = tokio::time::timeout(WATCH_RENEW, watch.next()) => next,
                        () = rewatch.notified() => break,
                    };
                    let batch = match next {
                        Err(_) => break,
                        Ok(Ok(b)) => b,
                        Ok(Err(EtcdError::Compacted { .. })) => {
                            from = 0;
                            if tx.send(Watched::Resync).await.is_err() {
                                return;
                            }
                            break;
                        }
                        Ok(Err(e)) => {
                            failures += 1;
                            crate::events::store_failed();
                            tracing::warn!(error = %e, "the shared-state watch broke; resuming");
                            break;
                        }
                    };
                    for event in batch.events {
                        from = from.max(event.kv.mod_revision + 1);
                        if event.kind != EventKind::Put {
                            continue;
                        }
                        match decode_shared(&event.kv.value) {
                            Ok(record) => {
                                let change = Change {
                                    version: Version(event.kv.mod_revision.to_string()),
                                    record,
                                };
                                if tx.send(Watched::Changed(Box::new(change))).await.is_err() {
                                    return;
                                }
                            }
                            Err(reason) => tracing::warn!(
                                key = %String::from_utf8_lossy(&event.kv.key),
                                "ignoring a shared-state change: {reason}"
                            ),
                        }
                    }
                    from = from.max(batch.revision + 1);
                }
            }
        });
        rx
    }
}

/// A `create_revision` no key has: a claim guarded by it always fails.
pub const NOT_LEADING: i64 = -1;

pub fn leader_key(prefix: &str, group: &str) -> String {
    format!("{prefix}{group}/leader")
}

fn revision(v: &Version) -> i64 {
    v.0.parse().unwrap_or(-1)
}

impl Store for EtcdStore {
    fn read<'a>(
        &'a self,
        credential: &'a str,
    ) -> StoreFuture<'a, Result<Option<(CredentialState, Version)>, StoreError>> {
        Box::pin(async move {
            let r = self
                .client
                .get(self.key(credential))
                .await
                .map_err(|e| self.unavailable(credential, e))?;
            let Some(kv) = r.kvs.first() else {
                return Ok(None);
            };
            let record = decode_shared(&kv.value).map_err(|reason| StoreError::Corrupt {
                credential: credential.to_owned(),
                reason: format!("key {}: {reason}", self.key(credential)),
            })?;
            if record.credential != credential {
                return Err(StoreError::Corrupt {
                    credential: credential.to_owned(),
                    reason: format!(
                        "key {} holds credential `{}`",
                        self.key(credential),
                        record.credential
                    ),
                });
            }
            Ok(Some((record, Version(kv.mod_revision.to_string()))))
        })
    }

    fn create<'a>(
        &'a self,
        record: &'a CredentialState,
    ) -> StoreFuture<'a, Result<Version, StoreError>> {
        let key = self.key(&record.credential);
        Box::pin(async move {
            self.put_if(record, vec![Compare::create_revision(&key, 0)])
                .await
        })
    }

    fn cas<'a>(
        &'a self,
        version: &'a Version,
        record: &'a CredentialState,
        purpose: Purpose,
    ) -> StoreFuture<'a, Result<Version, StoreError>> {
        let key = self.key(&record.credential);
        let mut guards = vec![Compare::mod_revision(&key, revision(version))];
        let fence = self.fence.load(Ordering::SeqCst);
        if purpose == Purpose::Claim && fence != 0 {
            guards.push(Compare::create_revision(&self.leader_key, fence));
        }
        Box::pin(async move { self.put_if(record, guards).await })
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "etcd {} under {}",
            self.client.endpoints().join(","),
            self.state_prefix
        )
    }
}

impl SharedStore for EtcdStore {
    fn watch(&self) -> mpsc::Receiver<Watched> {
        self.watch_prefix()
    }

    /// One watch covers the group's prefix, whatever the credentials.
    fn track(&self, _credentials: &[String]) {}

    fn set_fence(&self, leading_with: Option<i64>) {
        self.fence_to(leading_with);
    }

    fn rewatch(&self) {
        self.renew_watch();
    }
}
