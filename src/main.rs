//! The `tokend` binary: parses the command line, runs the command, and is the one place
//! that prints a failure and maps it to the contract's exit code (0 ok, 1 runtime failure,
//! 2 bad configuration; see [`tokend::error::Error::exit_code`]).

use std::process::ExitCode;

use clap::Parser;
use tokend::cli::Cli;
use tokend::commands;
use tokend::error::Error;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for sentence in e.sentences() {
                eprintln!("tokend: {sentence}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Bounds the threads (and their allocator arenas) that fsync outputs and state.
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let result = runtime.block_on(commands::dispatch(cli));
    // Hooks or emulators may leave tasks behind; do not wait on them at exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}
