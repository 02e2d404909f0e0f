//! The signals tokend reacts to, as tokio streams. tokio's handlers (via
//! signal-hook-registry) install on first use and survive an inherited `SIG_IGN`, so no
//! separate signal crate is needed.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGTERM (Kubernetes, systemd, a cancelled CI job) and SIGINT (Ctrl-C).
pub struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    pub fn install() -> io::Result<Stop> {
        Ok(Stop {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves when either arrives, with its name for the log.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Resolves on SIGTERM or SIGINT (for commands without a supervisor).
#[cfg(feature = "emulator")]
pub async fn wait_for_termination() {
    if let Ok(mut signals) = Stop::install() {
        signals.recv().await;
    } else {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What the daemon does on a signal.
pub enum Received {
    Stop,
    /// SIGHUP, as `systemctl reload` sends.
    Reload,
    /// SIGUSR1.
    RefreshAll,
}

/// Every signal `tokend run` handles.
pub struct Daemon {
    stop: Stop,
    hup: Signal,
    usr1: Signal,
}

impl Daemon {
    pub fn install() -> io::Result<Daemon> {
        Ok(Daemon {
            stop: Stop::install()?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }

    pub async fn recv(&mut self) -> Received {
        tokio::select! {
            _ = self.stop.recv() => Received::Stop,
            _ = self.hup.recv() => Received::Reload,
            _ = self.usr1.recv() => Received::RefreshAll,
        }
    }
}
