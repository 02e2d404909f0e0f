//! The local journal of a shared-state refresh: the provider's answer, made durable before
//! it is committed to the store, so a crash or a store outage between the two loses nothing.
//!
//! One file per credential, `<state_dir>/<credential>.pending` (0600, the atomic recipe).
//! On the next attempt it is committed if the store still holds the chain it grew from, and
//! dropped otherwise (someone else's commit won; ours is never published).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{self, Access};

use super::record::CredentialState;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    pub claim_id: String,
    /// The generations of the record the claim was made on.
    pub base_chain_gen: u64,
    pub base_token_gen: u64,
    /// What to commit.
    pub record: CredentialState,
}

pub fn path(dir: &Path, credential: &str) -> PathBuf {
    dir.join(format!("{credential}.pending"))
}

pub fn write(dir: &Path, pending: &Pending) -> io::Result<()> {
    let bytes = serde_json::to_vec(pending).expect("a journal entry always serializes");
    atomic::write_file(
        &path(dir, &pending.record.credential),
        &bytes,
        Access::PRIVATE,
    )
}

/// The journal entry of a credential, if one is there and readable. An unreadable one is
/// moved aside (kept for a person) and reported as absent.
pub fn read(dir: &Path, credential: &str) -> Option<Pending> {
    let path = path(dir, credential);
    let bytes = match super::local::read_trusted(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(credential, path = %path.display(), error = %e, "ignoring an untrusted journal file");
            return None;
        }
    };
    match serde_json::from_slice::<Pending>(&bytes) {
        Ok(p) if p.record.credential == credential => Some(p),
        _ => {
            let aside = path.with_extension("pending.corrupt");
            let _ = std::fs::rename(&path, &aside);
            tracing::warn!(credential, path = %aside.display(), "moved an unreadable journal file aside");
            None
        }
    }
}

pub fn remove(dir: &Path, credential: &str) -> io::Result<()> {
    match std::fs::remove_file(path(dir, credential)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
