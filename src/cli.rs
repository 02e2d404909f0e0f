//! The command line, as clap definitions: one place that also feeds `--help`, shell
//! completions and the man page.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tokend",
    version,
    about = "Keeps API access tokens fresh and writes them atomically to files"
)]
pub struct Cli {
    /// Configuration file [default: $TOKEND_CONFIG, else /etc/tokend/config.yaml]
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: keep every credential fresh until SIGTERM/SIGINT
    Run,
    /// Make every credential's outputs hold a fresh token, then exit
    Once {
        /// Fetch a new token for every credential, even those still fresh
        #[arg(long)]
        force: bool,
    },
    /// Validate the config, resolve every secret (never printed) and print the plan
    Check {
        /// Validate without reading any secret (for CI lints and admins who cannot read them)
        #[arg(long)]
        offline: bool,
    },
    /// Show, from the state directory, each credential's token expiry, next refresh and last error
    Status {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon against built-in provider emulators with short token lifetimes
    #[cfg(feature = "emulator")]
    Demo {
        /// Where the demo writes its config, state and tokens
        #[arg(long, default_value = "./tokend-demo", value_name = "DIR")]
        dir: PathBuf,
    },
    /// Serve only the provider emulators, for your own integration tests
    #[cfg(feature = "emulator")]
    Emulate {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// YAML or JSON file of emulator settings (credentials, lifetimes, shapes, limits)
        #[arg(long, value_name = "FILE")]
        settings: Option<std::path::PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout: `tokend man > /usr/share/man/man1/tokend.1`
    Man,
}

/// The clap command, for completions and the man page.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}
