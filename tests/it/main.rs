//! Integration tests: the real `tokend` binary against the provider emulators on 127.0.0.1,
//! asserting what an operator sees — files, modes, exit codes and logs.

mod harness;
mod smoke;
