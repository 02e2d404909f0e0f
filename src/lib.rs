//! tokend keeps API access tokens fresh and writes them atomically to files.
//!
//! The binary (`src/main.rs`) is a thin shell over these modules; they are a library so
//! integration tests, benchmarks and fuzz targets can reach the pure parts directly.
#![forbid(unsafe_code)]

pub mod atomic;
pub mod cli;
pub mod commands;
pub mod config;
mod control;
pub mod daemon;
pub mod deadlines;
#[cfg(feature = "emulator")]
pub mod demo;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod engine;
pub mod error;
pub mod events;
pub mod fsread;
pub mod hooks;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod observe;
pub mod output;
mod preflight;
pub mod provider;
pub mod redact;
pub mod schedule;
pub mod secret;
mod signals;
pub mod state;
pub mod status;
pub mod token;
pub mod util;
