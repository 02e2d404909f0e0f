//! Where credential state lives: the local state directory for a single instance, or a
//! shared store (etcd) whose compare-and-swap keeps one refresh chain linear across processes.
//!
//! Every backend stores the same [`CredentialState`] record. A shared backend versions each
//! record (`mod_revision`, `resourceVersion`); a write carries the version it read and fails
//! with [`StoreError::Conflict`] when someone else wrote in between. Versions are opaque:
//! compared for equality only; ordering comes from the record's `chain_gen` and `token_gen`.

pub mod etcd;
pub mod journal;
pub mod local;
pub mod record;

use std::future::Future;
use std::pin::Pin;

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
