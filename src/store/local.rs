//! The local state directory: one JSON file per credential (the record, see
//! [`super::record`]), plus the single-instance lock; a single instance's [`super::Store`].
//!
//! State is what makes restarts free (a valid token is reused without a provider call) and
//! what keeps a rotating refresh token alive across restarts and crashes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use std::sync::Arc;

use crate::atomic::{self, Access};

use super::{Purpose, Store, StoreError, StoreFuture, Version};

use super::record::{CredentialState, VERSION};

pub const LOCK_FILE: &str = "tokend.lock";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use state directory `{}`: {reason}", path.display())]
    Dir { path: PathBuf, reason: String },
    #[error("another tokend is running on state directory `{}`: it holds the lock `{}`{}", dir.display(), lock.display(), holder.as_ref().map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        dir: PathBuf,
        lock: PathBuf,
        holder: Option<String>,
    },
    #[error("cannot write state file `{}`: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
    #[error("cannot read state file `{}`: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
}

/// The state directory, locked for this process.
pub struct StateDir {
    path: PathBuf,
    // Held for the life of the process: the OS releases the flock when we exit or die.
    _lock: File,
    /// Seed fingerprint → the credential whose state records having used that seed. A
    /// refresh token works once: a seed recorded under any name is never sent again. Read
    /// from the files on first need only (a seed about to be sent is rare), so an ordinary
    /// start reads each state file once, not twice.
    seeds: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

impl StateDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory (0700) if needed and takes the single-instance lock.
    ///
    /// An existing directory must be tokend's own: owned by its user and writable by no one
    /// else. A shared one (`/tmp`, a group-writable volume) is refused rather than `chmod`ed,
    /// since changing its mode would break everyone else who uses it, and anyone who can write
    /// there could plant a state file or a lock symlink.
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        let dir_err = |reason: String| StateError::Dir {
            path: path.to_path_buf(),
            reason,
        };
        let io_err = |e: io::Error| dir_err(crate::util::io_reason(&e));
        if !path.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(io_err)?;
        }
        let meta = fs::metadata(path).map_err(io_err)?;
        if let Some(why) = crate::util::untrusted(&meta, &[crate::util::euid()]) {
            return Err(dir_err(format!(
                "{why}; tokend keeps tokens there and needs a directory of its own: point \
                 `state_dir` at one (e.g. /var/lib/tokend) or fix its owner and mode"
            )));
        }
        if meta.mode() & 0o077 != 0 {
            // Ours and not writable by others, merely readable: keep the tokens private.
            fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_err)?;
        }
        let lock_path = path.join(LOCK_FILE);
        let lock_err = |reason: String| StateError::Dir {
            path: lock_path.clone(),
            reason,
        };
        // O_NOFOLLOW: a symlink planted as the lock must not make us open (and truncate) its
        // target. Nothing is truncated at open; only a regular file of ours is written below.
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(|e| {
                lock_err(if e.raw_os_error() == Some(nix::libc::ELOOP) {
                    "it is a symbolic link, and tokend never follows links in its state \
                     directory: remove it"
                        .to_owned()
                } else {
                    crate::util::io_reason(&e)
                })
            })?;
        let meta = lock
            .metadata()
            .map_err(|e| lock_err(crate::util::io_reason(&e)))?;
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(lock_err(
                "it is not a plain file of its own (a device, a FIFO or a hard link to another \
                 file): remove it"
                    .to_owned(),
            ));
        }
        if let Some(why) = crate::util::untrusted(&meta, &[crate::util::euid()]) {
            return Err(lock_err(format!("{why}: remove it")));
        }
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&lock_path)
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty());
                return Err(StateError::Locked {
                    dir: path.to_path_buf(),
                    lock: lock_path,
                    holder,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        // The PID is informational, for the error message of a second instance.
        lock.set_len(0).map_err(io_err)?;
        writeln!(lock, "{}", std::process::id()).map_err(io_err)?;
        Ok(StateDir {
            path: path.to_path_buf(),
            _lock: lock,
            seeds: std::sync::OnceLock::new(),
        })
    }

    /// The other credential (and its state file) that already used the seed with
    /// fingerprint `seed`, if any: sending it again would be a replay (HTTP 401 and, at some
    /// providers, a revoked chain). Typically the credential was renamed.
    pub fn seed_spent_by(&self, seed: &str, credential: &str) -> Option<(String, PathBuf)> {
        let seeds = self
            .seeds
            .get_or_init(|| std::sync::Mutex::new(recorded_seeds(&self.path)))
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let other = seeds.get(seed).filter(|o| *o != credential)?;
        Some((other.clone(), file_path(&self.path, other)))
    }

    pub fn load(&self, credential: &str) -> Result<Option<CredentialState>, StateError> {
        load(&self.path, credential)
    }

    /// Durably replaces the credential's state file (the same recipe as outputs).
    pub fn save(&self, state: &CredentialState) -> Result<(), StateError> {
        let path = file_path(&self.path, &state.credential);
        let mut state = state.clone();
        state.version = VERSION;
        let bytes = serde_json::to_vec_pretty(&state).expect("state always serializes");
        atomic::write_file(&path, &bytes, Access::PRIVATE).map_err(|e| StateError::Write {
            path,
            reason: crate::util::io_reason(&e),
        })?;
        // Not read yet: the file just written will be read with the others.
        if let (Some(seed), Some(seeds)) = (&state.refresh_seed, self.seeds.get()) {
            seeds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(seed.clone())
                .or_insert_with(|| state.credential.clone());
        }
        Ok(())
    }

    /// Moves an unreadable state file aside so the credential can start over, keeping it
    /// for a person to inspect. Returns where it went.
    pub fn quarantine(&self, credential: &str) -> Option<PathBuf> {
        let from = file_path(&self.path, credential);
        let to = self.path.join(format!(
            "{credential}.json.corrupt-{}",
            crate::util::unix_secs(SystemTime::now())
        ));
        fs::rename(&from, &to).ok().map(|_| to)
    }
}

/// The single instance's [`Store`]: the state directory, written under its lock. Nobody else
/// writes it, so there is nothing to compare: every version is the same.
pub struct LocalStore(pub Arc<StateDir>);

const LOCAL: &str = "local";

impl Store for LocalStore {
    fn read<'a>(
        &'a self,
        credential: &'a str,
    ) -> StoreFuture<'a, Result<Option<(CredentialState, Version)>, StoreError>> {
        let (dir, name) = (self.0.clone(), credential.to_owned());
        Box::pin(async move {
            let loaded = blocking(move || dir.load(&name)).await?;
            Ok(loaded.map(|r| (r, Version(LOCAL.to_owned()))))
        })
    }

    fn create<'a>(
        &'a self,
        record: &'a CredentialState,
    ) -> StoreFuture<'a, Result<Version, StoreError>> {
        self.cas(&LOCAL_VERSION, record, Purpose::Commit)
    }

    fn cas<'a>(
        &'a self,
        _version: &'a Version,
        record: &'a CredentialState,
        _purpose: Purpose,
    ) -> StoreFuture<'a, Result<Version, StoreError>> {
        let (dir, record) = (self.0.clone(), record.clone());
        Box::pin(async move {
            blocking(move || dir.save(&record)).await?;
            Ok(Version(LOCAL.to_owned()))
        })
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!("state directory {}", self.0.path.display())
    }
}

static LOCAL_VERSION: Version = Version(String::new());

/// Runs file I/O on tokio's blocking pool: thousands of credentials then fsync in
/// parallel (the filesystem journal batches them) instead of two at a time on the workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Every state file's credential name (`NAME.json`; quarantined copies and the lock aside).
fn state_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Which credential recorded each seed fingerprint, from the state files present now.
fn recorded_seeds(dir: &Path) -> std::collections::HashMap<String, String> {
    let mut seeds = std::collections::HashMap::new();
    for name in state_files(dir) {
        if let Ok(Some(state)) = load(dir, &name)
            && let Some(seed) = state.refresh_seed
        {
            seeds.entry(seed).or_insert(name);
        }
    }
    seeds
}

/// State files of credentials the configuration no longer has (renamed or removed), with
/// the path of each. Their refresh chains are not used by anyone.
pub fn orphans(dir: &Path, configured: &[&str]) -> Vec<(String, PathBuf)> {
    let configured: std::collections::HashSet<&str> = configured.iter().copied().collect();
    state_files(dir)
        .into_iter()
        .filter(|n| !configured.contains(n.as_str()))
        .map(|n| {
            let path = file_path(dir, &n);
            (n, path)
        })
        .collect()
}

/// What to tell an operator about an orphaned state file.
pub fn orphan_message(name: &str, path: &Path) -> String {
    format!(
        "state file `{}` belongs to no configured credential (it is `{name}`'s); if the \
         credential was renamed, stop tokend and rename the file to NEW-NAME.json to keep its \
         refresh chain, otherwise delete it",
        path.display()
    )
}

pub fn file_path(dir: &Path, credential: &str) -> PathBuf {
    dir.join(format!("{credential}.json"))
}

/// Reads a credential's state without the lock (`status` reads while `run` writes; every
/// write is an atomic rename, so a read sees one whole version).
pub fn load(dir: &Path, credential: &str) -> Result<Option<CredentialState>, StateError> {
    let path = file_path(dir, credential);
    let bytes = match read_trusted(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StateError::Read {
                path,
                reason: crate::util::io_reason(&e),
            });
        }
    };
    match serde_json::from_slice::<CredentialState>(&bytes) {
        Ok(s) if s.version > VERSION => Err(StateError::Read {
            path,
            reason: format!(
                "it was written by a newer tokend (record version {}, this one reads up to {VERSION}); run that version, or move the file aside to start over",
                s.version
            ),
        }),
        Ok(s) if s.credential == credential => Ok(Some(s)),
        Ok(s) => Err(StateError::Read {
            path,
            reason: format!("it belongs to credential `{}`", s.credential),
        }),
        Err(e) => Err(StateError::Read {
            path,
            reason: format!("it is not valid state JSON ({e})"),
        }),
    }
}

/// Reads a state file only if tokend may trust it: a regular file (not a symlink), owned by
/// tokend's user and writable by no one else. Anything else could carry a planted token.
pub(super) fn read_trusted(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                io::Error::other("it is a symbolic link, so it is not trusted")
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("it is not a regular file"));
    }
    // The directory's owner too: `tokend status` run by root (or an admin) reads the state
    // of a tokend running as its own user. `StateDir::open` has already made sure the
    // directory is tokend's own before anything is published from it.
    let dir_owner = path
        .parent()
        .and_then(|d| fs::metadata(d).ok())
        .map(|m| m.uid());
    let owners: Vec<u32> = std::iter::once(crate::util::euid())
        .chain(dir_owner)
        .collect();
    if let Some(why) = crate::util::untrusted(&meta, &owners) {
        return Err(io::Error::other(format!("{why}, so it is not trusted")));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::store::record::{StoredToken, Timestamp};
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    fn sample() -> CredentialState {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        CredentialState {
            credential: "vandar-main".into(),
            token: Some(StoredToken {
                token: Secret::new("tok"),
                token_type: "Bearer".into(),
                issued_at: Timestamp(t0),
                expires_at: Timestamp(t0 + Duration::from_secs(432_000)),
            }),
            refresh_token: Some(Secret::new("def502next")),
            refresh_seed: Some("abcd1234".into()),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let sd = StateDir::open(&dir).unwrap();
        sd.save(&sample()).unwrap();
        let mut loaded = sd.load("vandar-main").unwrap().unwrap();
        loaded.version = 0;
        assert_eq!(loaded, sample());
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let file = file_path(&dir, "vandar-main");
        assert_eq!(fs::metadata(file).unwrap().mode() & 0o777, 0o600);
        assert!(sd.load("other").unwrap().is_none());
    }

    #[test]
    fn second_open_is_refused_naming_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = StateDir::open(tmp.path()).unwrap();
        let err = StateDir::open(tmp.path()).err().unwrap().to_string();
        assert!(err.contains("tokend.lock"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
    }

    #[test]
    fn a_seed_used_under_one_name_is_spent_for_every_other() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(tmp.path()).unwrap();
        sd.save(&sample()).unwrap();
        assert_eq!(
            sd.seed_spent_by("abcd1234", "renamed").map(|(n, _)| n),
            Some("vandar-main".to_owned())
        );
        assert_eq!(sd.seed_spent_by("abcd1234", "vandar-main"), None);
        assert_eq!(sd.seed_spent_by("other", "renamed"), None);
        drop(sd);
        // Recorded again from the files when the directory is opened anew.
        let sd = StateDir::open(tmp.path()).unwrap();
        assert!(sd.seed_spent_by("abcd1234", "renamed").is_some());
        let orphans = orphans(tmp.path(), &["renamed"]);
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].0, "vandar-main");
        assert!(super::orphans(tmp.path(), &["vandar-main"]).is_empty());
    }

    #[test]
    fn corrupt_state_is_an_error_and_can_be_quarantined() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(tmp.path()).unwrap();
        fs::write(file_path(tmp.path(), "x"), b"{not json").unwrap();
        let err = sd.load("x").unwrap_err().to_string();
        assert!(err.contains("not valid state JSON"), "{err}");
        let moved = sd.quarantine("x").unwrap();
        assert!(moved.exists());
        assert!(sd.load("x").unwrap().is_none());
    }
}
