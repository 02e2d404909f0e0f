//! Where credential state lives: the local state directory for a single instance, or a
//! shared store (etcd) whose compare-and-swap keeps one refresh chain linear across processes.
//!
//! Every backend stores the same [`CredentialState`] record. A shared backend versions each
//! record (`mod_revision`, `resourceVersion`); a write carries the version it read and fails
//! with [`StoreError::Conflict`] when someone else wrote in between. Versions are opaque:
//! compared for equality only; ordering comes from the record's `chain_gen` and `token_gen`.

pub mod etcd;
pub mod journal;
pub mod kubernetes;
pub mod local;
pub mod record;

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;

pub use local::{StateDir, StateError};
pub use record::{
    Claim, Commit, CredentialState, InDoubt, StoredError, StoredToken, Summary, Timestamp,
};

/// A boxed future, so that `dyn Store` works without another crate.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The version of a record as its store knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version(pub String);

/// A record that changed in a shared store (seen by a watch).
#[derive(Debug)]
pub struct Change {
    pub record: CredentialState,
    pub version: Version,
}

/// Why a store operation failed, sorted by what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote the record since it was read: read again and decide anew.
    #[error("the record of credential `{credential}` changed in the store since it was read")]
    Conflict { credential: String },
    /// The write may or may not have landed: read it back before deciding.
    #[error("the store write for credential `{credential}` has an unknown outcome: {reason}")]
    Ambiguous { credential: String, reason: String },
    /// Nothing was written (unreachable, refused, not permitted).
    #[error("the store is unavailable for credential `{credential}`: {reason}")]
    Unavailable { credential: String, reason: String },
    /// The stored record cannot be read (not tokend's JSON, a newer record version).
    #[error("the stored record of credential `{credential}` is unreadable: {reason}")]
    Corrupt { credential: String, reason: String },
    #[error(transparent)]
    Local(#[from] StateError),
}

/// Whether a write claims a provider call (fenced by leadership where the backend can) or
/// commits its result (never fenced: a successor already received must be kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Claim,
    Commit,
}

/// One credential record per name, read and written by compare-and-swap.
pub trait Store: Send + Sync {
    /// `None` when the store has no record for the credential.
    fn read<'a>(
        &'a self,
        credential: &'a str,
    ) -> StoreFuture<'a, Result<Option<(CredentialState, Version)>, StoreError>>;
    /// Writes a record that must not exist yet; [`StoreError::Conflict`] if it does.
    fn create<'a>(
        &'a self,
        record: &'a CredentialState,
    ) -> StoreFuture<'a, Result<Version, StoreError>>;
    /// Replaces the record if it is still at `version`.
    fn cas<'a>(
        &'a self,
        version: &'a Version,
        record: &'a CredentialState,
        purpose: Purpose,
    ) -> StoreFuture<'a, Result<Version, StoreError>>;
    /// True for a store other processes write too: the engine claims before a provider call
    /// and commits after it, and mirrors what others commit.
    fn is_shared(&self) -> bool;
    /// Where the records are, for logs and `status` (never a password).
    fn describe(&self) -> String;
}

/// What a shared-state watch reports.
#[derive(Debug)]
pub enum Watched {
    Changed(Box<Change>),
    /// Changes may have been missed: read every record again.
    Resync,
}

/// A store other processes write too, as the supervisor of a group uses it: what others
/// commit arrives on a watch, and claims are refused while this process does not lead.
pub trait SharedStore: Store {
    /// Streams every record another process commits, from now on, until the receiver is
    /// dropped. Called once; [`SharedStore::track`] names the records to follow.
    fn watch(&self) -> mpsc::Receiver<Watched>;
    /// The credentials of the config (again after a reload): a backend that watches
    /// record by record (Kubernetes, where RBAC `resourceNames` allows nothing wider)
    /// starts watching the new ones; one that watches a prefix (etcd) has nothing to do.
    fn track(&self, credentials: &[String]);
    /// Every leadership change of a campaigning process: `Some(term)` while it leads, with
    /// the election's term (etcd: the leader key's `create_revision`). Claims land only
    /// while leading: atomically in one transaction where the store can (etcd), checked
    /// just before the write where it cannot (Kubernetes); the claim's own CAS keeps it
    /// safe either way.
    fn set_fence(&self, leading_with: Option<i64>);
    /// The store answers again after a failure: a watch opened before may be silently dead.
    fn rewatch(&self);
}

/// The record as a shared store holds it (JSON, at this build's record version).
pub fn encode_shared(record: &CredentialState) -> Vec<u8> {
    let mut record = record.clone();
    record.version = record::VERSION;
    serde_json::to_vec(&record).expect("state always serializes")
}

/// A record read from a shared store; refuses one a newer tokend wrote.
pub fn decode_shared(bytes: &[u8]) -> Result<CredentialState, String> {
    let record: CredentialState =
        serde_json::from_slice(bytes).map_err(|e| format!("not tokend's JSON ({e})"))?;
    if record.version > record::VERSION {
        return Err(format!(
            "written by a newer tokend (record version {}, this one reads up to {})",
            record.version,
            record::VERSION
        ));
    }
    Ok(record)
}

/// The pause before the next try of a failed watch: 0.4 s doubling to 5 s, jittered.
pub(crate) fn watch_backoff(failures: u32) -> std::time::Duration {
    let base = std::time::Duration::from_millis(200) * 2u32.saturating_pow(failures.min(5));
    base.min(std::time::Duration::from_secs(5))
        .mul_f64(1.0 + fastrand::f64() * 0.2)
}
