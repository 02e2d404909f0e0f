//! The HTTP client every outbound request uses: one shared reqwest client per egress
//! (trust and proxy), no redirects, size-capped bodies and one deadline per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{Egress, EgressKey, Proxy};

/// An HTTP answer, body already read and capped.
#[derive(Debug, Clone)]
pub struct Answer {
    pub url: String,
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[cfg(test)]
impl Answer {
    /// An answer as parse functions see it, for unit tests.
    pub fn fake(status: u16, body: &str) -> Answer {
        Answer {
            url: "http://127.0.0.1/token".into(),
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }
}

/// Why no answer came back; the provider layer turns it into its own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Nothing (or nothing usable) came back within the deadline.
    Timeout { url: String, timeout: Duration },
    /// The request could not be made or was cut off; `reason` is the root cause.
    Connect { url: String, reason: String },
    /// The body is larger than [`MAX_BODY_BYTES`].
    Oversized { status: u16 },
}

/// `Retry-After` in its seconds form; the HTTP-date form is rare on token endpoints and is
/// ignored (the backoff applies instead). Capped at a day so a bogus header cannot park us.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(86_400)))
}

/// Responses are read up to this many bytes; a token endpoint never needs more.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The HTTP client every provider uses: one shared reqwest client per egress (connection
/// pools are shared across credentials), no redirects, per-request timeout.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    timeout: Duration,
    /// The configured proxy as `check` shows it (no password), for error texts.
    via: Option<Arc<str>>,
}

/// Builds and caches [`HttpClient`]s so thousands of credentials share a few pools.
#[derive(Default, Clone)]
pub struct HttpClients {
    cache: Arc<Mutex<HashMap<EgressKey, reqwest::Client>>>,
}

impl HttpClients {
    pub fn get(&self, egress: &Egress, timeout: Duration) -> Result<HttpClient, String> {
        let via = match &egress.proxy {
            Proxy::Url(p) => Some(Arc::from(p.to_string())),
            Proxy::Env | Proxy::Direct => None,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let key = egress.key();
        if let Some(client) = cache.get(&key) {
            return Ok(HttpClient {
                client: client.clone(),
                timeout,
                via,
            });
        }
        let client = build_client(egress)?;
        cache.insert(key, client.clone());
        Ok(HttpClient {
            client,
            timeout,
            via,
        })
    }

    /// How many distinct clients exist (one per egress in use).
    #[cfg(test)]
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Makes `ring` the process's TLS provider (reqwest is built without one). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn build_client(egress: &Egress) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4);
    if let Some(ca) = &egress.ca {
        for der in ca.certificates() {
            let cert = reqwest::Certificate::from_der(der)
                .map_err(|e| format!("ca_file `{}` cannot be used: {e}", ca.path.display()))?;
            builder = builder.add_root_certificate(cert);
        }
    }
    builder = match &egress.proxy {
        // reqwest reads HTTPS_PROXY and friends itself when no proxy is given.
        Proxy::Env => builder,
        Proxy::Direct => builder.no_proxy(),
        Proxy::Url(p) => builder.proxy(p.to_reqwest()?),
    };
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

impl HttpClient {
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// GETs a JSON document (OIDC discovery).
    pub async fn get(&self, url: &str) -> Result<Answer, SendError> {
        let req = self.client.get(url);
        self.send(url, req).await
    }

    /// POSTs a JSON body.
    pub async fn post_json(&self, url: &str, body: &Value) -> Result<Answer, SendError> {
        let req = self.client.post(url).json(body);
        self.send(url, req).await
    }

    /// POSTs a form body, optionally with HTTP Basic credentials (already encoded).
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<Answer, SendError> {
        let mut req = self.client.post(url).form(form);
        if let Some((user, pass)) = basic {
            req = req.basic_auth(user, Some(pass));
        }
        self.send(url, req).await
    }

    async fn send(&self, url: &str, req: reqwest::RequestBuilder) -> Result<Answer, SendError> {
        let req = req
            .timeout(self.timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        // One deadline covers connect, headers and body, so a slow-loris body cannot
        // hold a refresh forever.
        match tokio::time::timeout(self.timeout, self.exchange(url, req)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout {
                url: url.to_owned(),
                timeout: self.timeout,
            }),
        }
    }

    async fn exchange(&self, url: &str, req: reqwest::RequestBuilder) -> Result<Answer, SendError> {
        let mut resp = req.send().await.map_err(|e| self.transport_error(url, e))?;
        let status = resp.status().as_u16();
        // Only a proxy answers 407 (a forwarding proxy, for http targets; for https the tunnel
        // fails instead). It is about our egress, not the provider: never a provider verdict.
        if status == 407
            && let Some(via) = &self.via
        {
            return Err(SendError::Connect {
                url: url.to_owned(),
                reason: format!(
                    "proxy {via} refused the request (HTTP 407 Proxy Authentication Required): check the proxy's `username` and `password`"
                ),
            });
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(oversized(status));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(url, e))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(oversized(status));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            url: url.to_owned(),
            status,
            retry_after,
            body,
        })
    }

    fn transport_error(&self, url: &str, e: reqwest::Error) -> SendError {
        if e.is_timeout() {
            return SendError::Timeout {
                url: url.to_owned(),
                timeout: self.timeout,
            };
        }
        // reqwest's top-level message is generic ("error sending request"); the cause chain
        // holds the part an operator needs ("connection refused", "invalid peer certificate").
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = s.to_string();
            source = s.source();
        }
        if reason.contains("proxy authorization required") {
            reason.push_str(" (HTTP 407): check the proxy's `username` and `password`");
        }
        match &self.via {
            Some(via) => reason = format!("{reason}, through proxy {via}"),
            // reqwest took a proxy from the environment: say so, `check` says which.
            None if reason.starts_with("tunnel error") || reason.starts_with("SOCKS error") => {
                reason.push_str(", through the proxy from the environment (see `tokend check`)");
            }
            None => {}
        }
        SendError::Connect {
            url: url.to_owned(),
            reason,
        }
    }
}

fn oversized(status: u16) -> SendError {
    SendError::Oversized { status }
}
