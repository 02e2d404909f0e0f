//! `on_refresh` hooks: after every output of a credential was written, signal a process
//! (PID read fresh from its pid file) or run a program without a shell, under a timeout.
//!
//! Both are guarded against other local users: a pid file is trusted only as systemd trusts
//! `PIDFile=` (owned by root or tokend's user, in a directory no one else can write), and a
//! program gets a clean environment, not tokend's, which holds `{env: ...}` secrets.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// How much of a hook's stderr is kept: enough for its last words in the log, however
/// much it writes (a hook that dumps 300 MB must not cost 300 MB, nor a 300 MB log line).
pub const STDERR_TAIL: usize = 4096;

/// Reads `pipe` to its end (so the writer never blocks on a full pipe) and keeps only its
/// last `keep` bytes.
async fn keep_tail(mut pipe: impl tokio::io::AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut tail = Vec::with_capacity(2 * keep);
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * keep {
                    tail.drain(..tail.len() - keep);
                }
            }
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    tail
}

#[derive(Clone, Debug, PartialEq)]
pub enum Hook {
    Signal {
        signal: Signal,
        pid_file: PathBuf,
    },
    Exec {
        argv: Vec<String>,
        timeout: Duration,
        /// tokend's environment variables the program may see, by name (`env:` in the config).
        env: Vec<String>,
    },
}

/// Where a program is looked up when tokend itself has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment of an `exec` hook: `PATH`, the locale (`LANG`, `LC_*`) and `TZ`, then
/// the variables its config lists, then the `TOKEND_*` variables. Nothing else: tokend's
/// environment may hold the secrets of every credential.
fn hook_env(
    inherited: impl Iterator<Item = (String, String)>,
    listed: &[String],
    ctx: &HookContext<'_>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = inherited
        .filter(|(k, _)| {
            k == "PATH"
                || k == "LANG"
                || k == "TZ"
                || k.starts_with("LC_")
                || listed.iter().any(|l| l == k)
        })
        .filter(|(k, _)| !k.starts_with("TOKEND_"))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env.push(("TOKEND_CREDENTIAL".into(), ctx.credential.to_owned()));
    env.push(("TOKEND_EXPIRES_AT".into(), ctx.expires_at.clone()));
    env.push(("TOKEND_OUTPUTS".into(), ctx.outputs.join(":")));
    env
}

/// systemd's rule for `PIDFile=`: otherwise a local user who can write the file (or replace
/// it) chooses which process tokend signals.
fn check_pid_file(pid_file: &Path, file: &std::fs::Metadata) -> Result<(), String> {
    let owners = [0, crate::util::euid()];
    if let Some(why) = crate::util::untrusted(file, &owners) {
        return Err(format!(
            "refusing pid file `{}`: {why}; only a pid file that root or tokend's user wrote is trusted",
            pid_file.display()
        ));
    }
    let dir = pid_file.parent().unwrap_or(Path::new("/"));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let meta = std::fs::metadata(dir).map_err(|e| {
        format!(
            "cannot check directory `{}` of pid file `{}`: {}",
            dir.display(),
            pid_file.display(),
            crate::util::io_reason(&e)
        )
    })?;
    if let Some(why) = crate::util::untrusted(&meta, &owners) {
        return Err(format!(
            "refusing pid file `{}`: its directory `{}` is not safe ({why}); anyone who can \
             write there could replace the file",
            pid_file.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// What a hook is told about the refresh that triggered it.
pub struct HookContext<'a> {
    pub credential: &'a str,
    pub expires_at: String,
    /// Output paths, joined with `:` into `TOKEND_OUTPUTS`.
    pub outputs: Vec<String>,
}

impl Hook {
    pub fn describe(&self) -> String {
        match self {
            Hook::Signal { signal, pid_file } => {
                format!("send {signal} to the pid in {}", pid_file.display())
            }
            Hook::Exec { argv, timeout, env } => format!(
                "run {:?} (timeout {}{})",
                argv,
                humantime::format_duration(*timeout),
                if env.is_empty() {
                    String::new()
                } else {
                    format!(", with {}", env.join(", "))
                }
            ),
        }
    }

    /// Runs the hook. Failures are returned as one sentence for the caller to log; a hook
    /// never fails a refresh.
    pub async fn run(&self, ctx: &HookContext<'_>) -> Result<(), String> {
        match self {
            Hook::Signal { signal, pid_file } => {
                // Read fresh every time: the target may have restarted with a new PID.
                let read_err = |e: std::io::Error| {
                    format!(
                        "cannot read pid file `{}`: {}",
                        pid_file.display(),
                        crate::util::io_reason(&e)
                    )
                };
                let mut file = tokio::fs::File::open(pid_file).await.map_err(read_err)?;
                // Checked on the opened file, so a swap after the check changes nothing.
                let meta = file.metadata().await.map_err(read_err)?;
                check_pid_file(pid_file, &meta)?;
                let mut text = String::new();
                tokio::io::AsyncReadExt::read_to_string(&mut file, &mut text)
                    .await
                    .map_err(read_err)?;
                let pid: i32 = text.trim().parse().ok().filter(|p| *p > 1).ok_or_else(|| {
                    format!("pid file `{}` holds no valid pid", pid_file.display())
                })?;
                nix::sys::signal::kill(Pid::from_raw(pid), *signal)
                    .map_err(|e| format!("cannot send {signal} to pid {pid}: {e}"))
            }
            Hook::Exec { argv, timeout, env } => {
                let mut cmd = tokio::process::Command::new(&argv[0]);
                cmd.args(&argv[1..])
                    .env_clear()
                    .envs(hook_env(std::env::vars(), env, ctx))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true);
                let mut child = cmd.spawn().map_err(|e| {
                    format!("cannot start `{}`: {}", argv[0], crate::util::io_reason(&e))
                })?;
                let stderr = child.stderr.take();
                let finished = async {
                    tokio::join!(child.wait(), async {
                        match stderr {
                            Some(pipe) => keep_tail(pipe, STDERR_TAIL).await,
                            None => Vec::new(),
                        }
                    })
                };
                match tokio::time::timeout(*timeout, finished).await {
                    Err(_) => Err(format!(
                        "`{}` did not finish within {} and was killed",
                        argv[0],
                        humantime::format_duration(*timeout)
                    )),
                    Ok((Err(e), _)) => Err(format!("waiting for `{}` failed: {e}", argv[0])),
                    Ok((Ok(status), _)) if status.success() => Ok(()),
                    Ok((Ok(status), tail)) => {
                        let stderr = String::from_utf8_lossy(&tail);
                        let last = stderr.lines().last().unwrap_or("").trim();
                        Err(format!(
                            "`{}` exited with {}{}",
                            argv[0],
                            status,
                            if last.is_empty() {
                                String::new()
                            } else {
                                format!(": {last}")
                            }
                        ))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_tail_of_a_stream_is_kept() {
        let long: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for (input, keep) in [
            (&b""[..], 4),
            (&b"abc"[..], 4),
            (&b"abcdef"[..], 4),
            (&long[..], 4096),
            (&long[..], 1),
        ] {
            let tail = keep_tail(input, keep).await;
            let want = &input[input.len().saturating_sub(keep)..];
            assert_eq!(tail, want, "{} bytes, keep {keep}", input.len());
        }
    }

    #[test]
    fn hook_env_keeps_only_what_is_safe_or_listed() {
        let ctx = HookContext {
            credential: "c",
            expires_at: "2030-01-01T00:00:00Z".into(),
            outputs: vec!["/a".into(), "/b".into()],
        };
        let inherited = [
            ("PATH", "/bin"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C"),
            ("TZ", "UTC"),
            ("VANDAR_PASSWORD", "hunter2"),
            ("LISTED", "yes"),
            ("TOKEND_CREDENTIAL", "forged"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let env = hook_env(inherited.into_iter(), &["LISTED".into()], &ctx);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/bin"));
        assert_eq!(get("LANG"), Some("C.UTF-8"));
        assert_eq!(get("LC_ALL"), Some("C"));
        assert_eq!(get("TZ"), Some("UTC"));
        assert_eq!(get("LISTED"), Some("yes"));
        assert_eq!(get("VANDAR_PASSWORD"), None);
        assert_eq!(get("HOME"), None);
        assert_eq!(get("TOKEND_CREDENTIAL"), Some("c"));
        assert_eq!(get("TOKEND_OUTPUTS"), Some("/a:/b"));
        assert_eq!(
            env.iter().filter(|(k, _)| k == "TOKEND_CREDENTIAL").count(),
            1
        );
    }

    #[test]
    fn hook_env_has_a_path_even_without_one() {
        let ctx = HookContext {
            credential: "c",
            expires_at: String::new(),
            outputs: vec![],
        };
        let env = hook_env(std::iter::empty(), &[], &ctx);
        assert!(env.contains(&("PATH".into(), DEFAULT_PATH.into())));
    }
}
