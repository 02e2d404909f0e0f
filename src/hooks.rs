//! `on_refresh` hooks: after every output of a credential was written, signal a process
//! (PID read fresh from its pid file) or run a program without a shell, under a timeout.

use std::path::PathBuf;
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
    },
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
            Hook::Exec { argv, timeout } => format!(
                "run {:?} (timeout {})",
                argv,
                humantime::format_duration(*timeout)
            ),
        }
    }

    /// Runs the hook. Failures are returned as one sentence for the caller to log; a hook
    /// never fails a refresh.
    pub async fn run(&self, ctx: &HookContext<'_>) -> Result<(), String> {
        match self {
            Hook::Signal { signal, pid_file } => {
                // Read fresh every time: the target may have restarted with a new PID.
                let text = tokio::fs::read_to_string(pid_file).await.map_err(|e| {
                    format!(
                        "cannot read pid file `{}`: {}",
                        pid_file.display(),
                        crate::util::io_reason(&e)
                    )
                })?;
                let pid: i32 = text.trim().parse().ok().filter(|p| *p > 1).ok_or_else(|| {
                    format!("pid file `{}` holds no valid pid", pid_file.display())
                })?;
                nix::sys::signal::kill(Pid::from_raw(pid), *signal)
                    .map_err(|e| format!("cannot send {signal} to pid {pid}: {e}"))
            }
            Hook::Exec { argv, timeout } => {
                let mut cmd = tokio::process::Command::new(&argv[0]);
                cmd.args(&argv[1..])
                    .env("TOKEND_CREDENTIAL", ctx.credential)
                    .env("TOKEND_EXPIRES_AT", &ctx.expires_at)
                    .env("TOKEND_OUTPUTS", ctx.outputs.join(":"))
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
}
