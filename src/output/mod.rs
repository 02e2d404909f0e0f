//! Outputs: where a credential's token is written and in which shape. Rendering is pure
//! (`render.rs`); writing is a plain file ([`crate::atomic`]) or a kubelet-style directory (`dir.rs`).

pub mod dir;
pub mod kubernetes_secret;
pub mod render;

use std::path::{Path, PathBuf};

use crate::atomic::{self, Access};
use crate::token::Token;

#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub target: Target,
    pub access: Access,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    File {
        path: PathBuf,
        format: Format,
    },
    /// A directory holding `token`, `token.json` and `expires_at`, swapped as a whole.
    Dir {
        path: PathBuf,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Format {
    Raw,
    Json,
    Env { prefix: String },
    Template(String),
}

impl Output {
    pub fn path(&self) -> &Path {
        match &self.target {
            Target::File { path, .. } | Target::Dir { path } => path,
        }
    }

    /// What `check` prints for this output.
    pub fn describe(&self) -> String {
        let mode = crate::units::Mode(self.access.mode);
        let group = self
            .access
            .gid
            .map(|g| format!(", group {g}"))
            .unwrap_or_default();
        match &self.target {
            Target::File { path, format } => {
                let format = match format {
                    Format::Raw => "raw",
                    Format::Json => "json",
                    Format::Env { .. } => "env",
                    Format::Template(_) => "template",
                };
                format!("file {} ({format}, mode {mode}{group})", path.display())
            }
            Target::Dir { path } => format!("dir {} (mode {mode}{group})", path.display()),
        }
    }

    /// Writes `token` unless the output already holds exactly it. Returns whether anything
    /// was written, so hooks run only when readers have something new.
    pub fn write(&self, token: &Token, credential: &str) -> Result<bool, OutputError> {
        let fail = |source: std::io::Error| OutputError {
            path: self.path().to_path_buf(),
            reason: crate::util::io_reason(&source),
        };
        match &self.target {
            Target::File { path, format } => {
                let bytes = render::render(format, token, credential);
                if atomic::is_current(path, &bytes, self.access) {
                    return Ok(false);
                }
                atomic::write_file(path, &bytes, self.access).map_err(fail)?;
                Ok(true)
            }
            Target::Dir { path } => {
                let files = render::dir_files(token, credential);
                dir::write(path, &files, self.access).map_err(fail)
            }
        }
    }
}

impl Output {
    /// A cheap look (`stat`, no read) at whether the output still has the shape tokend
    /// wrote: present, a regular file of the rendered size and the configured mode (a `dir`:
    /// `..data` and every file through its link). `Err` says what is wrong, for `/readyz`.
    /// Catches a deleted or replaced output; same-size edits are left to SIGHUP, which
    /// compares contents.
    pub fn check_in_place(&self, token: &Token, credential: &str) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let shaped = |path: &Path, len: usize| -> Result<(), String> {
            let meta = std::fs::metadata(path).map_err(|e| {
                format!(
                    "output `{}` is gone ({}); restoring it from state",
                    path.display(),
                    crate::util::io_reason(&e)
                )
            })?;
            if let Some(kind) = crate::fsread::kind(&meta) {
                return Err(format!(
                    "output `{}` is {kind}, not the file tokend wrote; restoring it from state",
                    path.display()
                ));
            }
            if meta.len() != len as u64 || meta.mode() & 0o7777 != self.access.mode {
                return Err(format!(
                    "output `{}` was changed behind tokend's back; restoring it from state",
                    path.display()
                ));
            }
            Ok(())
        };
        match &self.target {
            Target::File { path, format } => {
                shaped(path, render::render(format, token, credential).len())
            }
            Target::Dir { path } => {
                for (name, bytes) in render::dir_files(token, credential) {
                    shaped(&path.join(name), bytes.len())?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write output `{}`: {reason}", path.display())]
pub struct OutputError {
    pub path: PathBuf,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, SystemTime};

    fn token() -> Token {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        Token {
            value: crate::secret::Secret::new("tok-123"),
            token_type: "Bearer".into(),
            issued_at: now,
            expires_at: now + Duration::from_secs(3600),
        }
    }

    #[test]
    fn check_in_place_sees_what_a_stat_can_see() {
        let tmp = tempfile::tempdir().unwrap();
        let file = Output {
            target: Target::File {
                path: tmp.path().join("t"),
                format: Format::Json,
            },
            access: Access::PRIVATE,
        };
        let dir = Output {
            target: Target::Dir {
                path: tmp.path().join("d"),
            },
            access: Access::PRIVATE,
        };
        let t = token();
        for o in [&file, &dir] {
            assert!(o.check_in_place(&t, "c").unwrap_err().contains("is gone"));
            assert!(o.write(&t, "c").unwrap());
            assert_eq!(o.check_in_place(&t, "c"), Ok(()));
        }
        let path = tmp.path().join("t");
        // (what is done to the file, what the check says)
        let cases: [(&dyn Fn(), &str); 3] = [
            (
                &|| std::fs::write(&path, "short").unwrap(),
                "changed behind",
            ),
            (
                &|| {
                    file.write(&t, "c").unwrap();
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap()
                },
                "changed behind",
            ),
            (
                &|| {
                    std::fs::remove_file(&path).unwrap();
                    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                        .unwrap()
                },
                "is a FIFO (named pipe), not the file tokend wrote",
            ),
        ];
        for (damage, want) in cases {
            damage();
            let err = file.check_in_place(&t, "c").unwrap_err();
            assert!(err.contains(want), "{err}");
            // A write puts it back (and never reads the FIFO).
            assert!(file.write(&t, "c").unwrap());
            assert_eq!(file.check_in_place(&t, "c"), Ok(()));
        }
        std::fs::remove_file(tmp.path().join("d/token")).unwrap();
        assert!(
            dir.check_in_place(&t, "c")
                .unwrap_err()
                .contains("d/token` is gone")
        );
    }
}
