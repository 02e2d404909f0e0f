//! Network egress: how tokend reaches the outside (HTTP clients, trust, proxies).

pub mod client;
pub mod etcd;

pub use client::{HttpClient, HttpClients, install_crypto_provider};
