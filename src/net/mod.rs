//! Network egress: how a credential reaches its provider. An [`Egress`] (extra trust anchors
//! and a proxy choice) is built and checked with the configuration, so a bad `ca_file` or
//! proxy is a config error, not a failure at every refresh; [`client`] turns it into shared
//! HTTP clients.

mod ca;
pub mod client;
pub mod etcd;
pub mod kube;
mod proxy;

pub use ca::CaBundle;
pub use client::{HttpClient, HttpClients, install_crypto_provider};
pub use proxy::{ProxyUrl, describe_env};

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::secret::{Environment, Secret};

/// Everything about how one credential's requests leave the machine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Egress {
    /// Trust anchors added to the built-in roots.
    pub ca: Option<Arc<CaBundle>>,
    pub proxy: Proxy,
}

/// Which proxy a credential uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Proxy {
    /// Nothing configured: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY` apply.
    #[default]
    Env,
    /// `proxy: direct`: no proxy, whatever the environment says.
    Direct,
    Url(ProxyUrl),
}

/// Which shared HTTP client serves an [`Egress`]: a SHA-256 over everything that makes two
/// clients differ, because [`Secret`] deliberately has no `Hash`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EgressKey([u8; 32]);

impl fmt::Debug for EgressKey {
    // A full hash of a proxy password is not something to print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EgressKey(..)")
    }
}

impl Egress {
    pub fn key(&self) -> EgressKey {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        match &self.ca {
            Some(ca) => field(&ca.digest),
            None => field(b""),
        }
        match &self.proxy {
            Proxy::Env => field(b"env"),
            Proxy::Direct => field(b"direct"),
            Proxy::Url(p) => {
                field(b"url");
                field(p.url.as_str().as_bytes());
                field(p.username.as_deref().unwrap_or("").as_bytes());
                field(p.password.as_ref().map_or("", |s| s.expose()).as_bytes());
            }
        }
        EgressKey(h.finalize().into())
    }

    /// The proxy password, so error texts can be redacted like any other secret.
    pub fn secret(&self) -> Option<&Secret> {
        match &self.proxy {
            Proxy::Url(p) => p.password.as_ref(),
            _ => None,
        }
    }

    /// One line for `check`: where requests go, read against `env` for `Proxy::Env`.
    /// Never a password.
    pub fn describe(&self, env: &dyn Environment) -> String {
        let route = match &self.proxy {
            Proxy::Direct => {
                "direct (`proxy: direct`; proxy variables in the environment are ignored)"
                    .to_owned()
            }
            Proxy::Url(p) => format!("proxy {p}"),
            Proxy::Env => describe_env(env),
        };
        match &self.ca {
            Some(ca) => format!(
                "{route}; also trusts ca_file `{}` ({} certificate(s))",
                ca.path.display(),
                ca.certificates().len()
            ),
            None => route,
        }
    }
}

#[cfg(test)]
mod tests;

/// How one HTTP exchange with a store (etcd, the Kubernetes API) failed before an answer:
/// a CAS protocol must know whether the request may have been applied.
pub(crate) enum Transport {
    NotSent(String),
    MaybeSent(String),
    /// The server answered, but more than the size cap: every member would.
    TooLarge(String),
}

/// reqwest's connect errors (refused, DNS, TLS handshake, connect timeout) happen before a
/// byte of the request is written; everything after may have reached the server.
pub(crate) fn transport(e: reqwest::Error) -> Transport {
    if e.is_connect() || e.is_builder() {
        Transport::NotSent(root_cause(&e))
    } else {
        Transport::MaybeSent(root_cause(&e))
    }
}

/// reqwest's top-level text is generic ("error sending request"); the innermost cause
/// says what an operator can act on ("Connection refused").
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    match reason.split_once(" (os error") {
        Some((text, _)) => text.to_owned(),
        None => reason,
    }
}

/// A whole answer body, up to `max_bytes`; a larger one is [`Transport::TooLarge`].
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    max_bytes: usize,
) -> Result<Vec<u8>, Transport> {
    let mut raw = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Transport::MaybeSent(root_cause(&e)))?
    {
        if raw.len() + chunk.len() > max_bytes {
            return Err(Transport::TooLarge(format!(
                "the answer is larger than {} KiB",
                max_bytes / 1024
            )));
        }
        raw.extend_from_slice(&chunk);
    }
    Ok(raw)
}
