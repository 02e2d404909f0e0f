//! tokend keeps API access tokens fresh and writes them atomically to files.
//!
//! The binary (`src/main.rs`) is a thin shell over these modules; they are a library so
//! integration tests, benchmarks and fuzz targets can reach the pure parts directly.
#![forbid(unsafe_code)]

pub mod emulator;
