//! tokend keeps API access tokens fresh and writes them atomically to files.
//!
//! The binary (`src/main.rs`) is a thin shell over these modules; they are a library so
//! integration tests, benchmarks and fuzz targets can reach the pure parts directly. Only
//! what those (and `main.rs`) use is `pub`; the rest is private so rustc reports dead code.
//! `unsafe_code = "forbid"` is in Cargo.toml's `[lints]`, covering `main.rs` too.

pub mod atomic;
pub mod cli;
pub mod commands;
pub mod config;
mod control;
mod daemon;
mod deadlines;
#[cfg(feature = "emulator")]
mod demo;
#[cfg(feature = "emulator")]
pub mod emulator;
mod engine;
pub mod error;
mod events;
mod fsread;
pub mod ha;
mod hooks;
mod http;
mod logging;
mod metrics;
pub mod net;
mod notify;
mod observe;
pub mod output;
mod preflight;
pub mod provider;
mod redact;
mod runtime;
pub mod schedule;
pub mod secret;
mod signals;
mod status;
pub mod store;
pub mod token;
pub mod units;
pub mod util;
