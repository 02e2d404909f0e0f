//! The Kubernetes store: one Secret per credential, `tokend-<group>-<credential>`, whose
//! `state.json` key holds the record; every write is a PUT carrying `resourceVersion`.
//!
//! Secrets accept blind updates, so the client never sends one (`KubeClient::replace`
//! refuses to). Unlike etcd, a Secret write cannot also check the Lease in the same
//! request: a claim is refused locally while this process does not lead, and the CAS on
//! the Secret is what keeps a stale leader's claim from landing over a newer one (HA.md
//! §3.3: the safety argument never uses the election).

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::net::kube::{DryRun, KubeClient, KubeError, KubeObject, Resource, WatchEvent};

use super::record::CredentialState;
use super::{
    Change, Purpose, SharedStore, Store, StoreError, StoreFuture, Version, Watched, decode_shared,
    encode_shared, watch_backoff,
};

/// The Secret key that holds the record.
pub const STATE_KEY: &str = "state.json";

/// A claim while this process does not lead is refused before it is sent.
const NOT_LEADING: i64 = -1;

/// The API server ends each watch after this long; it is opened again from the last
/// resourceVersion, losing nothing.
const WATCH_SECONDS: u32 = 290;

/// A watch silent this long (no event, no bookmark; the API server sends bookmarks about
/// every minute) is presumed dead and opened again: a partition can leave a TCP stream open
/// and silent for ever, and a `role: follower` has no election to notice it sooner.
const WATCH_SILENCE: Duration = Duration::from_secs(90);

pub struct KubeStore {
    client: KubeClient,
    namespace: String,
    group: String,
    /// 0: not fenced (`once`); [`NOT_LEADING`]; otherwise this process leads.
    fence: Arc<AtomicI64>,
    /// Bumped to make every watch open again now.
    rewatch: watch::Sender<u64>,
    watcher: Mutex<Watcher>,
}

#[derive(Default)]
struct Watcher {
    tx: Option<mpsc::Sender<Watched>>,
    /// Credentials with a watch task, and those named before [`SharedStore::watch`].
    tracked: HashSet<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KubeStore {
    fn drop(&mut self) {
        let w = self.watcher.get_mut().unwrap_or_else(|e| e.into_inner());
        for t in &w.tasks {
            t.abort();
        }
    }
}

/// The state Secret's name: SPEC "Shared state" fixes it so that RBAC `resourceNames` can
/// list it.
pub fn secret_name(group: &str, credential: &str) -> String {
    format!("tokend-{group}-{credential}")
}

/// Why `tokend-<group>-<credential>` cannot name a Secret (a DNS subdomain), if it cannot.
pub fn secret_name_problem(group: &str, credential: &str) -> Option<String> {
    let name = secret_name(group, credential);
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if name.len() > 253 {
        Some(format!(
            "its state Secret `{name}` would be longer than Kubernetes allows (253)"
        ))
    } else if !name.chars().all(ok) || name.ends_with(['-', '.']) {
        Some(format!(
            "its state Secret would be named `{name}`, which Kubernetes refuses (lowercase letters, digits, `-` and `.` only); rename the credential"
        ))
    } else {
        None
    }
}

impl KubeStore {
    pub fn new(client: KubeClient, namespace: String, group: String) -> KubeStore {
        KubeStore {
            client,
            namespace,
            group,
            fence: Arc::new(AtomicI64::new(0)),
            rewatch: watch::Sender::new(0),
            watcher: Mutex::default(),
        }
    }

    pub fn client(&self) -> &KubeClient {
        &self.client
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The group's Lease (SPEC "Shared state").
    pub fn lease_name(&self) -> String {
        format!("tokend-{}", self.group)
    }

    pub fn secret_name(&self, credential: &str) -> String {
        secret_name(&self.group, credential)
    }

    /// Proves, before anything is spent, that this process may read and write the state
    /// Secrets and (when it campaigns) the Lease: a GET of each, and a dry-run write.
    /// Names the first verb, object and the API server's own message when it may not.
    pub async fn check_access(
        &self,
        credentials: &[String],
        campaign: bool,
    ) -> Result<(), KubeError> {
        for credential in credentials {
            let absent = self.secret_object(credential, None, None);
            self.prove_writable(Resource::Secret, &self.secret_name(credential), absent)
                .await?;
        }
        if campaign {
            let name = self.lease_name();
            let absent = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": {},
            });
            self.prove_writable(Resource::Lease, &name, absent).await?;
        }
        Ok(())
    }

    /// GET, then a dry-run PUT of the object as it is (validated and authorized, not
    /// stored), or a dry-run create of `absent` when there is none.
    async fn prove_writable(
        &self,
        resource: Resource,
        name: &str,
        absent: Value,
    ) -> Result<(), KubeError> {
        let ns = &self.namespace;
        match self.client.get(resource, ns, name).await {
            Ok(obj) => self
                .client
                .replace(resource, ns, name, obj.value(), DryRun::All)
                .await
                .map(drop),
            Err(KubeError::NotFound { .. }) => self
                .client
                .create(resource, ns, &absent, DryRun::All)
                .await
                .map(drop),
            Err(e) => Err(e),
        }
    }

    /// The state Secret holding `record` (or no record), at `version` if it exists.
    fn secret_object(
        &self,
        credential: &str,
        record: Option<&CredentialState>,
        version: Option<&str>,
    ) -> Value {
        let mut metadata = json!({
            "name": self.secret_name(credential),
            "namespace": self.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "tokend",
                "tokend.dev/group": self.group,
            },
            "annotations": {
                "tokend.dev/credential": credential,
            },
        });
        if let Some(v) = version {
            metadata["resourceVersion"] = json!(v);
        }
        let mut secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": metadata,
        });
        if let Some(r) = record {
            let b64 = base64::engine::general_purpose::STANDARD.encode(encode_shared(r));
            secret["data"] = json!({ STATE_KEY: b64 });
        }
        secret
    }

    fn error(&self, credential: &str, e: KubeError) -> StoreError {
        match e {
            KubeError::Conflict { .. } | KubeError::AlreadyExists { .. } => StoreError::Conflict {
                credential: credential.to_owned(),
            },
            KubeError::Ambiguous { .. } => StoreError::Ambiguous {
                credential: credential.to_owned(),
                reason: e.to_string(),
            },
            e => StoreError::Unavailable {
                credential: credential.to_owned(),
                reason: e.to_string(),
            },
        }
    }

    /// Replaces the state Secret at `version` with one holding `record`.
    async fn put(&self, record: &CredentialState, version: &str) -> Result<Version, StoreError> {
        let credential = &record.credential;
        let object = self.secret_object(credential, Some(record), Some(version));
        self.client
            .replace(
                Resource::Secret,
                &self.namespace,
                &self.secret_name(credential),
                &object,
                DryRun::No,
            )
            .await
            .map(|o| Version(o.resource_version().to_owned()))
            .map_err(|e| self.error(credential, e))
    }

    /// Watches one state Secret until the receiver is dropped, as client-go's reflector
    /// does: a broken stream is resumed from the last version seen (events or bookmarks),
    /// which loses nothing; only `410 Gone` starts over with a watch without a version,
    /// which the API server opens with the Secret as it is now (a synthetic ADDED). Never a
    /// GET then a watch from the object's own version: that version can be older than the
    /// compaction, and would be answered 410 again, for ever.
    fn spawn_watch(
        &self,
        credential: String,
        tx: mpsc::Sender<Watched>,
    ) -> tokio::task::JoinHandle<()> {
        let client = self.client.clone();
        let namespace = self.namespace.clone();
        let name = self.secret_name(&credential);
        let mut rewatch = self.rewatch.subscribe();
        tokio::spawn(async move {
            // `None`: start from the current state.
            let mut from: Option<String> = None;
            let mut failures = 0u32;
            loop {
                if tx.is_closed() {
                    return;
                }
                let rv = from.clone().unwrap_or_default();
                let mut stream = match client
                    .watch(Resource::Secret, &namespace, &name, &rv, WATCH_SECONDS)
                    .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        if matches!(e, KubeError::Gone { .. }) && from.take().is_some() {
                            // Too old: start over from the current state, at once.
                            continue;
                        }
                        failures += 1;
                        watch_failed(&name, failures, &e);
                        pause(&mut rewatch, failures).await;
                        continue;
                    }
                };
                loop {
                    let next = tokio::select! {
                        next = tokio::time::timeout(WATCH_SILENCE, stream.next()) => next,
                        r = rewatch.changed() => {
                            if r.is_err() {
                                return;
                            }
                            break;
                        }
                    };
                    match next {
                        Err(_) | Ok(Ok(None)) => break,
                        Ok(Ok(Some(event))) => {
                            // Counted as healthy only once something arrives: a server
                            // that opens streams and breaks them at once is backed off.
                            if failures > 0 {
                                tracing::info!(secret = %name, "watching the shared state again");
                                failures = 0;
                            }
                            let rv = event.resource_version();
                            if !rv.is_empty() {
                                from = Some(rv.to_owned());
                            }
                            if let WatchEvent::Added(obj) | WatchEvent::Modified(obj) = &event
                                && let Some(w) = changed(&credential, obj)
                                && tx.send(w).await.is_err()
                            {
                                return;
                            }
                        }
                        Ok(Err(KubeError::Gone { .. })) => {
                            from = None;
                            break;
                        }
                        Ok(Err(e)) => {
                            failures += 1;
                            watch_failed(&name, failures, &e);
                            pause(&mut rewatch, failures).await;
                            break;
                        }
                    }
                }
            }
        })
    }
}

/// A state Secret's record as a change to report; `None` for one without a record (a
/// pre-created empty Secret) or one that cannot be read (logged).
fn changed(credential: &str, obj: &KubeObject) -> Option<Watched> {
    match decode_secret(credential, obj) {
        Ok(Some(record)) => Some(Watched::Changed(Box::new(Change {
            record,
            version: Version(obj.resource_version().to_owned()),
        }))),
        Ok(None) => None,
        Err(reason) => {
            tracing::warn!(secret = %obj.name(), "ignoring a shared-state change: {reason}");
            None
        }
    }
}

fn watch_failed(name: &str, failures: u32, e: &KubeError) {
    crate::events::store_failed();
    if failures == 1 {
        tracing::warn!(secret = %name, error = %e, "cannot watch the shared state; retrying");
    }
}

/// Waits out a failed watch's backoff, or less when told to try again now.
async fn pause(rewatch: &mut watch::Receiver<u64>, failures: u32) {
    tokio::select! {
        () = tokio::time::sleep(watch_backoff(failures)) => {}
        _ = rewatch.changed() => {}
    }
}

/// The record in a state Secret; `None` when the Secret holds none yet.
fn decode_secret(credential: &str, obj: &KubeObject) -> Result<Option<CredentialState>, String> {
    let Some(b64) = obj.value().get("data").and_then(|d| d.get(STATE_KEY)) else {
        return Ok(None);
    };
    let bytes = b64
        .as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(|| format!("Secret {}: `{STATE_KEY}` is not base64", obj.name()))?;
    let record =
        decode_shared(&bytes).map_err(|reason| format!("Secret {}: {reason}", obj.name()))?;
    if record.credential != credential {
        return Err(format!(
            "Secret {} holds credential `{}`",
            obj.name(),
            record.credential
        ));
    }
    Ok(Some(record))
}

impl Store for KubeStore {
    fn read<'a>(
        &'a self,
        credential: &'a str,
    ) -> StoreFuture<'a, Result<Option<(CredentialState, Version)>, StoreError>> {
        Box::pin(async move {
            let obj = match self
                .client
                .get(
                    Resource::Secret,
                    &self.namespace,
                    &self.secret_name(credential),
                )
                .await
            {
                Ok(obj) => obj,
                Err(KubeError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.error(credential, e)),
            };
            let record = decode_secret(credential, &obj).map_err(|reason| StoreError::Corrupt {
                credential: credential.to_owned(),
                reason,
            })?;
            Ok(record.map(|r| (r, Version(obj.resource_version().to_owned()))))
        })
    }

    /// POST; a Secret that exists without a record (pre-created with the Role, so that
    /// tokend needs no `create`) is adopted with a PUT at the version just read.
    fn create<'a>(
        &'a self,
        record: &'a CredentialState,
    ) -> StoreFuture<'a, Result<Version, StoreError>> {
        Box::pin(async move {
            let credential = &record.credential;
            let name = self.secret_name(credential);
            let existing = match self
                .client
                .get(Resource::Secret, &self.namespace, &name)
                .await
            {
                Ok(obj) => Some(obj),
                Err(KubeError::NotFound { .. }) => None,
                Err(e) => return Err(self.error(credential, e)),
            };
            match existing {
                Some(obj) => match decode_secret(credential, &obj) {
                    Ok(None) => self.put(record, obj.resource_version()).await,
                    // Someone wrote a record since this process read none.
                    _ => Err(StoreError::Conflict {
                        credential: credential.clone(),
                    }),
                },
                None => self
                    .client
                    .create(
                        Resource::Secret,
                        &self.namespace,
                        &self.secret_object(credential, Some(record), None),
                        DryRun::No,
                    )
                    .await
                    .map(|o| Version(o.resource_version().to_owned()))
                    .map_err(|e| self.error(credential, e)),
            }
        })
    }

    fn cas<'a>(
        &'a self,
        version: &'a Version,
        record: &'a CredentialState,
        purpose: Purpose,
    ) -> StoreFuture<'a, Result<Version, StoreError>> {
        Box::pin(async move {
            if purpose == Purpose::Claim && self.fence.load(Ordering::SeqCst) == NOT_LEADING {
                return Err(StoreError::Conflict {
                    credential: record.credential.clone(),
                });
            }
            self.put(record, &version.0).await
        })
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!(
            "Kubernetes Secrets tokend-{}-<credential> in namespace {} at {}",
            self.group,
            self.namespace,
            self.client.server()
        )
    }
}

impl SharedStore for KubeStore {
    fn watch(&self) -> mpsc::Receiver<Watched> {
        let (tx, rx) = mpsc::channel(256);
        let mut w = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        let names: Vec<String> = w.tracked.iter().cloned().collect();
        w.tx = Some(tx.clone());
        for name in names {
            let task = self.spawn_watch(name, tx.clone());
            w.tasks.push(task);
        }
        rx
    }

    /// One watch per state Secret: RBAC `resourceNames` allows a watch only with the
    /// `metadata.name` field selector. A credential removed by a reload keeps its watch
    /// (an idle connection) until the process restarts.
    fn track(&self, credentials: &[String]) {
        let mut w = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        for c in credentials {
            if w.tracked.insert(c.clone())
                && let Some(tx) = w.tx.clone()
            {
                let task = self.spawn_watch(c.clone(), tx);
                w.tasks.push(task);
            }
        }
    }

    fn set_fence(&self, leading_with: Option<i64>) {
        self.fence.store(
            leading_with.map_or(NOT_LEADING, |t| t.max(1)),
            Ordering::SeqCst,
        );
    }

    fn rewatch(&self) {
        self.rewatch.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_secret_names_follow_the_spec_and_kubernetes_rules() {
        assert_eq!(
            secret_name("payments-api", "vandar-main"),
            "tokend-payments-api-vandar-main"
        );
        assert_eq!(secret_name_problem("g1", "vandar.main"), None);
        assert!(
            secret_name_problem("g1", "vandar_main")
                .unwrap()
                .contains("rename the credential")
        );
        assert!(secret_name_problem("g1", "a-").is_some());
        assert!(
            secret_name_problem("g1", &"a".repeat(250))
                .unwrap()
                .contains("253")
        );
    }

    #[test]
    fn a_secret_without_a_record_reads_as_none_and_a_foreign_one_is_refused() {
        let rv = json!({"metadata": {"name": "tokend-g-c", "resourceVersion": "7"}});
        let empty = KubeObject::from_value(rv.clone()).unwrap();
        assert!(decode_secret("c", &empty).unwrap().is_none());
        let other = CredentialState {
            credential: "d".to_owned(),
            chain_gen: 3,
            ..CredentialState::default()
        };
        let mut v = rv.clone();
        v["data"] = json!({STATE_KEY: base64::engine::general_purpose::STANDARD.encode(encode_shared(&other))});
        let obj = KubeObject::from_value(v).unwrap();
        assert!(
            decode_secret("c", &obj)
                .unwrap_err()
                .contains("holds credential `d`")
        );
        assert_eq!(decode_secret("d", &obj).unwrap().unwrap().chain_gen, 3);
        let mut bad = rv;
        bad["data"] = json!({STATE_KEY: "%%%"});
        let obj = KubeObject::from_value(bad).unwrap();
        assert!(decode_secret("c", &obj).unwrap_err().contains("not base64"));
    }
}
