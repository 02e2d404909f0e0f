//! `on_refresh` hooks: after every output of a credential was written, signal a process
//! (PID read fresh from its pid file) or run a program without a shell, under a timeout.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

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
                let child = cmd.spawn().map_err(|e| {
                    format!("cannot start `{}`: {}", argv[0], crate::util::io_reason(&e))
                })?;
                match tokio::time::timeout(*timeout, child.wait_with_output()).await {
                    Err(_) => Err(format!(
                        "`{}` did not finish within {} and was killed",
                        argv[0],
                        humantime::format_duration(*timeout)
                    )),
                    Ok(Err(e)) => Err(format!("waiting for `{}` failed: {e}", argv[0])),
                    Ok(Ok(out)) if out.status.success() => Ok(()),
                    Ok(Ok(out)) => {
                        let stderr = String::from_utf8_lossy(&out.stderr);
                        let last = stderr.lines().last().unwrap_or("").trim();
                        Err(format!(
                            "`{}` exited with {}{}",
                            argv[0],
                            out.status,
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
