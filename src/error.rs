//! Every way a command can end in failure, and the exit code each one means (SPEC.md: 1 a
//! runtime failure, 2 a bad configuration). Commands return these; `main` alone prints them
//! and exits, so a message and its code cannot drift apart.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::ConfigError;
use crate::store::StateError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file, or a secret it names, is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state directory cannot be used (missing, read-only, locked by another tokend).
    #[error(transparent)]
    State(#[from] StateError),
    /// The shared store (`ha`) cannot work as configured.
    #[error("cannot use the shared store: {0}")]
    Store(String),
    /// The API server of a `kubernetes_secret` output did not answer the start-up check.
    #[error("cannot reach the Kubernetes API for the Secret outputs: {0}")]
    Kubernetes(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
    #[error("cannot render the man page: {0}")]
    Man(std::io::Error),
    /// `tokend emulate --settings FILE`: unreadable or not valid settings (exit 2, like a
    /// bad config).
    #[error("cannot use emulator settings `{}`: {reason}", path.display())]
    EmulatorSettings { path: PathBuf, reason: String },
    #[error("cannot start the demo emulators: {0}")]
    DemoEmulators(std::io::Error),
    #[error("cannot prepare the demo directory `{}`: {source}", dir.display())]
    DemoDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("the demo config is invalid (a bug): {0}")]
    DemoConfig(ConfigError),
    #[error("cannot start the demo daemon: {0}")]
    DemoDaemon(std::io::Error),
    /// The demo's daemon did not stop cleanly; its log already said why.
    #[error("the demo daemon did not exit cleanly")]
    DemoDaemonExit,
    /// `once`: these credentials failed (one sentence each, sorted); the others were written.
    #[error("{} of {total} credentials failed", failed.len())]
    Refresh { failed: Vec<String>, total: usize },
    /// `status`: some credential is not healthy; the table on stdout says which and why.
    #[error("a credential is not healthy")]
    Unhealthy,
}

impl Error {
    /// The exit code of SPEC.md "Exit codes".
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::EmulatorSettings { .. } | Error::Store(_) => 2,
            _ => 1,
        }
    }

    /// What `main` prints to stderr, one sentence per line, each after `tokend: `. Empty
    /// where stdout or the log has already said it all.
    pub fn sentences(&self) -> Vec<String> {
        match self {
            Error::Refresh { failed, total } => {
                let mut out = failed.clone();
                if failed.len() < *total {
                    out.push(format!(
                        "{} of {total} credentials failed; the others were written",
                        failed.len()
                    ));
                }
                out
            }
            Error::Unhealthy | Error::DemoDaemonExit => Vec::new(),
            e => vec![e.to_string()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io() -> std::io::Error {
        std::io::Error::other("boom")
    }

    #[test]
    fn exit_codes_and_sentences() {
        let config = ConfigError::Read {
            path: "/etc/tokend.yaml".into(),
            reason: "no such file".into(),
        };
        let cases: Vec<(Error, u8, Vec<&str>)> = vec![
            (
                Error::Config(config),
                2,
                vec!["cannot read config file `/etc/tokend.yaml`: no such file"],
            ),
            (
                Error::Signals(io()),
                1,
                vec!["cannot install signal handlers: boom"],
            ),
            (
                Error::Listen {
                    addr: "127.0.0.1:9".parse().unwrap(),
                    source: io(),
                },
                1,
                vec!["cannot listen on 127.0.0.1:9: boom"],
            ),
            (
                Error::Refresh {
                    failed: vec!["a failed".into()],
                    total: 1,
                },
                1,
                vec!["a failed"],
            ),
            (
                Error::Refresh {
                    failed: vec!["a failed".into(), "b failed".into()],
                    total: 3,
                },
                1,
                vec![
                    "a failed",
                    "b failed",
                    "2 of 3 credentials failed; the others were written",
                ],
            ),
            (
                Error::EmulatorSettings {
                    path: "/tmp/emu.yaml".into(),
                    reason: "unknown field `x`".into(),
                },
                2,
                vec!["cannot use emulator settings `/tmp/emu.yaml`: unknown field `x`"],
            ),
            (Error::Unhealthy, 1, vec![]),
            (Error::DemoDaemonExit, 1, vec![]),
        ];
        for (error, code, sentences) in cases {
            assert_eq!(error.exit_code(), code, "{error:?}");
            assert_eq!(error.sentences(), sentences, "{error:?}");
        }
    }
}
