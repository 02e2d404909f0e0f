//! The `tokend` binary: parses the command line and maps each command's outcome to the
//! exit codes of the contract (0 ok, 1 runtime failure, 2 bad configuration).

use std::process::ExitCode;

use clap::Parser;
use tokend::cli::Cli;
use tokend::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Bounds the threads (and their allocator arenas) that fsync outputs and state.
        .max_blocking_threads(64)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokend: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(commands::dispatch(cli));
    // Hooks or emulators may leave tasks behind; do not wait on them at exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::from(code as u8)
}
