//! A small etcd v3 client over etcd's HTTP/JSON gateway, on the reqwest tokend already has.
//!
//! Why not the `etcd-client` crate (gRPC): it needs `protoc` and `libprotobuf-dev` at
//! build time and adds about 0.5 MB to the release binary, for calls that are a POST of a
//! JSON body each (HA.md §0.8 measured both). The gateway serves every call tokend needs —
//! range, put, txn, leases, watch, status, authenticate — on etcd ≥ 3.4, where it is on by
//! default. What it cannot do: authenticate by TLS client-certificate common name
//! ("gRPC-gateway does not support authentication using TLS Common Name"), so with etcd
//! auth on, tokend logs in with a username and password; client certificates still
//! secure the transport.
//!
//! Requests go straight to etcd, never through `HTTPS_PROXY` and friends (see
//! [`EtcdClient::new`]).
//!
//! Failure semantics are the point of this module (see [`EtcdError`]). Endpoints are tried
//! in turn, starting with the last one that answered, but only while the request was
//! certainly **not sent** (connection refused, DNS, TLS, or a member without a leader).
//! Once a write may have reached a member, the client stops and says
//! [`EtcdError::Ambiguous`]: a compare-and-swap caller must read back before deciding,
//! and a blind retry on another member could apply a claim twice. Reads move on to the
//! next endpoint after a timeout, since reading twice is harmless.

mod error;
mod watch;
mod wire;

use std::path::PathBuf;

use super::{Transport, read_capped, transport};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::secret::Secret;

pub use error::EtcdError;
pub use watch::{Watch, WatchBatch};
pub use wire::{
    Compare, CompareOp, DeleteResponse, Event, EventKind, Header, KeyValue, MemberStatus, Op,
    OpResponse, PutResponse, RangeResponse, Target, TxnResponse, prefix_end,
};

use wire::{Disposition, Reply, WatchMessage};

/// Answers (a prefix range can be large) are read up to this many bytes by default.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// How to reach an etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs, `http://host:2379` or `https://host:2379`.
    pub endpoints: Vec<String>,
    /// PEM bundle of the CAs that sign etcd's server certificates (else the system roots).
    pub ca_file: Option<PathBuf>,
    /// A client certificate for etcd's `--client-cert-auth`, with its key.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The deadline of one HTTP request (connect, send, answer); a watch's only covers
    /// its creation.
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

impl EtcdOptions {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password: None,
            timeout: Duration::from_secs(5),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// A lease: etcd deletes the keys attached to it `ttl` seconds after the last keepalive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub ttl: i64,
}

/// The etcd client. Cheap to clone; clones share connections and the auth token.
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint that answered last; the next request starts there.
    preferred: AtomicUsize,
    timeout: Duration,
    max_bytes: usize,
    auth: Option<Auth>,
    /// A client certificate is configured (decides a hint on closed TLS connections).
    has_identity: bool,
}

struct Auth {
    username: String,
    password: Secret,
    token: Mutex<Token>,
}

#[derive(Clone)]
enum Token {
    Unknown,
    /// etcd has authentication disabled: it answered "authentication is not enabled".
    NotNeeded,
    Have(Secret),
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.inner.endpoints)
            .field("timeout", &self.inner.timeout)
            .field(
                "username",
                &self.inner.auth.as_ref().map(|a| a.username.as_str()),
            )
            .finish_non_exhaustive()
    }
}

/// Whether a request changes state: decides retry-on-next-endpoint after a timeout.
#[derive(Clone, Copy)]
struct Call {
    name: &'static str,
    path: &'static str,
    write: bool,
}

const RANGE: Call = Call {
    name: "range",
    path: "/v3/kv/range",
    write: false,
};
const PUT: Call = Call {
    name: "put",
    path: "/v3/kv/put",
    write: true,
};
const TXN: Call = Call {
    name: "txn",
    path: "/v3/kv/txn",
    write: true,
};
const GRANT: Call = Call {
    name: "lease grant",
    path: "/v3/lease/grant",
    write: true,
};
// A keepalive and a revoke repeat harmlessly, so they count as reads for failover.
const KEEPALIVE: Call = Call {
    name: "lease keepalive",
    path: "/v3/lease/keepalive",
    write: false,
};
const REVOKE: Call = Call {
    name: "lease revoke",
    path: "/v3/lease/revoke",
    write: false,
};
const STATUS: Call = Call {
    name: "status",
    path: "/v3/maintenance/status",
    write: false,
};
const AUTHENTICATE: Call = Call {
    name: "authenticate",
    path: "/v3/auth/authenticate",
    write: false,
};
const WATCH: Call = Call {
    name: "watch",
    path: "/v3/watch",
    write: false,
};

impl EtcdClient {
    pub fn new(opts: EtcdOptions) -> Result<EtcdClient, EtcdError> {
        let setup = |reason: String| EtcdError::Setup { reason };
        if opts.endpoints.is_empty() {
            return Err(setup("no endpoints are configured".to_owned()));
        }
        let endpoints = opts
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(setup)?;
        let auth = match (opts.username, opts.password) {
            (Some(username), Some(password)) => Some(Auth {
                username,
                password,
                token: Mutex::new(Token::Unknown),
            }),
            (None, None) => None,
            (Some(u), None) => {
                return Err(setup(format!(
                    "etcd user `{u}` has no password: configure both or neither"
                )));
            }
            (None, Some(_)) => {
                return Err(setup(
                    "an etcd password is configured without a username: configure both or neither"
                        .to_owned(),
                ));
            }
        };
        crate::net::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")))
            // Below the request deadline, so a connect that times out is classified as
            // "not sent" and the next endpoint is tried.
            .connect_timeout(opts.timeout / 2)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            // etcd is the cluster's own infrastructure: a proxy from the environment
            // (meant for the providers) would add a hop that can swallow answers, and
            // turn clean "not sent" failures into ambiguous ones.
            .no_proxy();
        if let Some(path) = &opts.ca_file {
            let pem = read_file("ca_file", path).map_err(setup)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                setup(format!(
                    "etcd ca_file `{}` is not a PEM bundle: {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(setup(format!(
                    "etcd ca_file `{}` holds no certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let has_identity = opts.cert_file.is_some();
        match (&opts.cert_file, &opts.key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = read_file("cert_file", cert).map_err(setup)?;
                pem.push(b'\n');
                pem.extend(read_file("key_file", key).map_err(setup)?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    setup(format!(
                        "etcd cert_file `{}` and key_file `{}` are not a PEM certificate and its key: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => {
                return Err(setup(
                    "etcd cert_file and key_file go together: configure both or neither".to_owned(),
                ));
            }
        }
        let http = builder
            .build()
            .map_err(|e| setup(format!("cannot build the HTTP client: {e}")))?;
        Ok(EtcdClient {
            inner: Arc::new(Inner {
                http,
                endpoints,
                preferred: AtomicUsize::new(0),
                timeout: opts.timeout,
                max_bytes: opts.max_response_bytes,
                auth,
                has_identity,
            }),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    // ------------------------------------------------------------ KV

    /// One key (`kvs` empty if it does not exist); the header's revision is the store's.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<RangeResponse, EtcdError> {
        self.call(RANGE, &wire::range_body(key.as_ref(), None))
            .await
    }

    /// Every key in `[key, range_end)`; `range_end = prefix_end(prefix)` gives a prefix.
    pub async fn range(
        &self,
        key: impl AsRef<[u8]>,
        range_end: impl AsRef<[u8]>,
    ) -> Result<RangeResponse, EtcdError> {
        let body = wire::range_body(key.as_ref(), Some(range_end.as_ref()));
        self.call(RANGE, &body).await
    }

    /// Every key starting with `prefix`.
    pub async fn range_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<RangeResponse, EtcdError> {
        let prefix = prefix.as_ref();
        self.range(prefix, prefix_end(prefix)).await
    }

    /// An unconditional put; `lease` 0 for none. Returns the store's new revision.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        lease: i64,
    ) -> Result<i64, EtcdError> {
        let body = wire::put_body(key.as_ref(), value.as_ref(), lease);
        let r: PutResponse = self.call(PUT, &body).await?;
        Ok(r.header.revision)
    }

    /// `if all(compare) then success else failure`, atomically.
    pub async fn txn(
        &self,
        compare: &[Compare],
        success: &[Op],
        failure: &[Op],
    ) -> Result<TxnResponse, EtcdError> {
        let body = wire::txn_body(compare, success, failure);
        let (endpoint, raw) = self.call_raw(TXN, &body).await?;
        wire::parse_txn(&raw).map_err(|reason| EtcdError::BadAnswer {
            endpoint,
            op: TXN.name,
            reason,
        })
    }

    // ------------------------------------------------------------ leases

    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<Lease, EtcdError> {
        let (endpoint, raw) = self
            .call_raw(GRANT, &json!({ "TTL": ttl_secs.to_string() }))
            .await?;
        let g: wire::LeaseGrantWire = parse(&endpoint, GRANT, &raw)?;
        if !g.error.is_empty() || g.id == 0 {
            return Err(EtcdError::Status {
                endpoint,
                op: GRANT.name,
                code: 2,
                message: if g.error.is_empty() {
                    "no lease ID in the answer".to_owned()
                } else {
                    g.error
                },
            });
        }
        Ok(Lease {
            id: g.id,
            ttl: g.ttl,
        })
    }

    /// One keepalive; returns the remaining TTL in seconds, 0 when the lease has expired
    /// (then its keys are gone, and so is any leadership held through it).
    pub async fn lease_keepalive(&self, id: i64) -> Result<i64, EtcdError> {
        let (endpoint, raw) = self
            .call_raw(KEEPALIVE, &json!({ "ID": id.to_string() }))
            .await?;
        wire::parse_keepalive(&raw).map_err(|reason| EtcdError::BadAnswer {
            endpoint,
            op: KEEPALIVE.name,
            reason,
        })
    }

    /// Revokes a lease (deleting its keys). An already expired lease is not an error.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), EtcdError> {
        match self
            .call_raw(REVOKE, &json!({ "ID": id.to_string() }))
            .await
        {
            Ok(_) => Ok(()),
            Err(EtcdError::Status { code: 5, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    // ------------------------------------------------------------ watch and status

    /// Watches `key` (or `[key, range_end)`) from `start_revision` (0: from now on).
    /// Returns once etcd has confirmed the watch, so nothing after `created_revision`
    /// can be missed. A start revision older than the last compaction fails here or on
    /// the first [`Watch::next`] with [`EtcdError::Compacted`].
    pub async fn watch(
        &self,
        key: impl AsRef<[u8]>,
        range_end: Option<&[u8]>,
        start_revision: i64,
    ) -> Result<Watch, EtcdError> {
        let body = wire::watch_body(key.as_ref(), range_end, start_revision);
        let mut reauthenticated = false;
        loop {
            let token = self.token().await?;
            let mut watch = match self.open_watch(&body, token.as_ref()).await {
                Ok(watch) => watch,
                Err(Reauth) if !reauthenticated && self.forget_token() => {
                    reauthenticated = true;
                    continue;
                }
                Err(Reauth) => return Err(reauth_failed(WATCH)),
                Err(Failed(e)) => return Err(e),
            };
            let deadline = self.inner.timeout;
            let first = tokio::time::timeout(deadline, watch.read_message())
                .await
                .map_err(|_| EtcdError::Unreachable {
                    op: WATCH.name,
                    endpoints: watch.endpoint.clone(),
                    reason: format!("no watch confirmation within {deadline:?}"),
                })??;
            match first {
                WatchMessage::Created { revision } => {
                    watch.created_revision = revision;
                    return Ok(watch);
                }
                WatchMessage::Canceled { code, reason } => {
                    if wire::disposition(code, &reason, false) == Disposition::Reauthenticate
                        && !reauthenticated
                        && self.forget_token()
                    {
                        reauthenticated = true;
                        continue;
                    }
                    return Err(EtcdError::Status {
                        endpoint: watch.endpoint,
                        op: WATCH.name,
                        code,
                        message: reason,
                    });
                }
                WatchMessage::Compacted { compact_revision } => {
                    return Err(EtcdError::Compacted {
                        endpoint: watch.endpoint,
                        compact_revision,
                    });
                }
                WatchMessage::Events { .. } => {
                    return Err(EtcdError::BadAnswer {
                        endpoint: watch.endpoint,
                        op: WATCH.name,
                        reason: "events before the watch was confirmed".to_owned(),
                    });
                }
            }
        }
    }

    /// The answering member's status; a start-up probe that also tells a missing gateway
    /// ([`EtcdError::NoGateway`]) from a missing etcd.
    pub async fn status(&self) -> Result<MemberStatus, EtcdError> {
        self.call(STATUS, &json!({})).await
    }

    // ------------------------------------------------------------ plumbing

    async fn call<T: DeserializeOwned>(&self, call: Call, body: &Value) -> Result<T, EtcdError> {
        let (endpoint, raw) = self.call_raw(call, body).await?;
        parse(&endpoint, call, &raw)
    }

    /// Sends with the auth token, logging in again once if etcd says it has expired.
    async fn call_raw(&self, call: Call, body: &Value) -> Result<(String, Vec<u8>), EtcdError> {
        let token = self.token().await?;
        match self.round(call, body, token.as_ref()).await {
            Err(Reauth) if self.forget_token() => {
                let token = self.token().await?;
                match self.round(call, body, token.as_ref()).await {
                    Err(Reauth) => Err(reauth_failed(call)),
                    Err(Failed(e)) => Err(e),
                    Ok(answer) => Ok(answer),
                }
            }
            Err(Reauth) => Err(reauth_failed(call)),
            Err(Failed(e)) => Err(e),
            Ok(answer) => Ok(answer),
        }
    }

    /// One request, tried on each endpoint in turn while it was certainly not applied.
    async fn round(
        &self,
        call: Call,
        body: &Value,
        token: Option<&Secret>,
    ) -> Result<(String, Vec<u8>), RoundError> {
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed) % n;
        let mut last = String::new();
        for i in 0..n {
            let index = (start + i) % n;
            let endpoint = &self.inner.endpoints[index];
            let failed = |e: EtcdError| Err(Failed(e));
            match self.exchange(endpoint, call, body, token).await {
                Ok((status, raw)) => match wire::classify_reply(status, &raw) {
                    Reply::Ok => {
                        self.inner.preferred.store(index, Ordering::Relaxed);
                        return Ok((endpoint.clone(), raw));
                    }
                    Reply::Status(e) => match wire::disposition(e.code, &e.message, call.write) {
                        Disposition::Final => {
                            return failed(status_error(endpoint, call, e, self.username()));
                        }
                        Disposition::Reauthenticate => return Err(Reauth),
                        Disposition::NextEndpoint => last = format!("{endpoint}: {}", e.message),
                        Disposition::Ambiguous => {
                            return failed(EtcdError::Ambiguous {
                                endpoint: endpoint.clone(),
                                op: call.name,
                                reason: e.message,
                            });
                        }
                    },
                    Reply::NoGateway => {
                        return failed(EtcdError::NoGateway {
                            endpoint: endpoint.clone(),
                        });
                    }
                    Reply::Bad(reason) => {
                        return failed(EtcdError::BadAnswer {
                            endpoint: endpoint.clone(),
                            op: call.name,
                            reason,
                        });
                    }
                },
                Err(Transport::NotSent(reason)) => last = format!("{endpoint}: {reason}"),
                Err(Transport::MaybeSent(reason)) if !call.write => {
                    last = format!("{endpoint}: {reason}")
                }
                Err(Transport::TooLarge(reason)) if !call.write => {
                    return failed(EtcdError::BadAnswer {
                        endpoint: endpoint.clone(),
                        op: call.name,
                        reason: format!("{reason}; read fewer keys or raise the response limit"),
                    });
                }
                // Answered, so applied or rejected; but which is lost with the answer.
                Err(Transport::MaybeSent(reason) | Transport::TooLarge(reason)) => {
                    return failed(EtcdError::Ambiguous {
                        endpoint: endpoint.clone(),
                        op: call.name,
                        reason,
                    });
                }
            }
        }
        Err(Failed(EtcdError::Unreachable {
            op: call.name,
            endpoints: self.inner.endpoints.join(", "),
            reason: last,
        }))
    }

    /// One POST under the deadline, its answer read up to the size cap.
    async fn exchange(
        &self,
        endpoint: &str,
        call: Call,
        body: &Value,
        token: Option<&Secret>,
    ) -> Result<(u16, Vec<u8>), Transport> {
        let timeout = self.inner.timeout;
        let request = async {
            let response = self
                .request(endpoint, call, body, token)?
                .send()
                .await
                .map_err(transport)?;
            let status = response.status().as_u16();
            Ok((status, read_capped(response, self.inner.max_bytes).await?))
        };
        match tokio::time::timeout(timeout, request).await {
            Ok(result) => result.map_err(|t| self.hint(endpoint, t)),
            Err(_) => Err(Transport::MaybeSent(format!(
                "no answer within {timeout:?}"
            ))),
        }
    }

    fn request(
        &self,
        endpoint: &str,
        call: Call,
        body: &Value,
        token: Option<&Secret>,
    ) -> Result<reqwest::RequestBuilder, Transport> {
        let mut request = self
            .inner
            .http
            .post(format!("{endpoint}{}", call.path))
            .json(body);
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(token.expose())
                .map_err(|_| Transport::NotSent("etcd sent an unusable auth token".to_owned()))?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        Ok(request)
    }

    /// Opens the watch stream on the first endpoint that answers 200.
    async fn open_watch(&self, body: &Value, token: Option<&Secret>) -> Result<Watch, RoundError> {
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed) % n;
        let timeout = self.inner.timeout;
        let mut last = String::new();
        for i in 0..n {
            let index = (start + i) % n;
            let endpoint = &self.inner.endpoints[index];
            let request = match self.request(endpoint, WATCH, body, token) {
                Ok(request) => request,
                Err(Transport::NotSent(r) | Transport::MaybeSent(r) | Transport::TooLarge(r)) => {
                    return Err(Failed(EtcdError::BadAnswer {
                        endpoint: endpoint.clone(),
                        op: WATCH.name,
                        reason: r,
                    }));
                }
            };
            // A watch only reads: any failure before the stream is open moves on.
            let response = match tokio::time::timeout(timeout, request.send()).await {
                Err(_) => {
                    last = format!("{endpoint}: no answer within {timeout:?}");
                    continue;
                }
                Ok(Err(e)) => {
                    let (Transport::NotSent(r) | Transport::MaybeSent(r) | Transport::TooLarge(r)) =
                        self.hint(endpoint, transport(e));
                    last = format!("{endpoint}: {r}");
                    continue;
                }
                Ok(Ok(response)) => response,
            };
            let status = response.status().as_u16();
            if status == 200 {
                self.inner.preferred.store(index, Ordering::Relaxed);
                return Ok(Watch {
                    endpoint: endpoint.clone(),
                    response,
                    splitter: watch::Splitter::new(self.inner.max_bytes),
                    queued: Default::default(),
                    created_revision: 0,
                });
            }
            let raw =
                match tokio::time::timeout(timeout, read_capped(response, self.inner.max_bytes))
                    .await
                {
                    Ok(Ok(raw)) => raw,
                    Ok(Err(
                        Transport::NotSent(r) | Transport::MaybeSent(r) | Transport::TooLarge(r),
                    )) => {
                        last = format!("{endpoint}: {r}");
                        continue;
                    }
                    Err(_) => {
                        last = format!("{endpoint}: no answer within {timeout:?}");
                        continue;
                    }
                };
            let failed = |e: EtcdError| Err(Failed(e));
            match wire::classify_reply(status, &raw) {
                Reply::Ok => unreachable!("status 200 returned above"),
                Reply::Status(e) => match wire::disposition(e.code, &e.message, false) {
                    Disposition::Reauthenticate => return Err(Reauth),
                    Disposition::NextEndpoint | Disposition::Ambiguous => {
                        last = format!("{endpoint}: {}", e.message)
                    }
                    Disposition::Final => {
                        return failed(status_error(endpoint, WATCH, e, self.username()));
                    }
                },
                Reply::NoGateway => {
                    return failed(EtcdError::NoGateway {
                        endpoint: endpoint.clone(),
                    });
                }
                Reply::Bad(reason) => {
                    return failed(EtcdError::BadAnswer {
                        endpoint: endpoint.clone(),
                        op: WATCH.name,
                        reason,
                    });
                }
            }
        }
        Err(Failed(EtcdError::Unreachable {
            op: WATCH.name,
            endpoints: self.inner.endpoints.join(", "),
            reason: last,
        }))
    }

    fn hint(&self, endpoint: &str, t: Transport) -> Transport {
        let has_identity = self.inner.has_identity;
        match t {
            Transport::NotSent(r) => Transport::NotSent(tls_hint(endpoint, has_identity, r)),
            Transport::MaybeSent(r) => Transport::MaybeSent(tls_hint(endpoint, has_identity, r)),
            too_large @ Transport::TooLarge(_) => too_large,
        }
    }

    fn username(&self) -> Option<&str> {
        self.inner.auth.as_ref().map(|a| a.username.as_str())
    }

    /// The auth token to send, logging in first when there is none yet.
    async fn token(&self) -> Result<Option<Secret>, EtcdError> {
        let Some(auth) = &self.inner.auth else {
            return Ok(None);
        };
        let current = auth.token.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match current {
            Token::Have(token) => return Ok(Some(token)),
            Token::NotNeeded => return Ok(None),
            Token::Unknown => {}
        }
        let body = json!({ "name": auth.username, "password": auth.password.expose() });
        let fresh = match self.round(AUTHENTICATE, &body, None).await {
            Ok((endpoint, raw)) => {
                let answer: wire::AuthenticateWire = parse(&endpoint, AUTHENTICATE, &raw)?;
                let token = answer.token.ok_or_else(|| EtcdError::BadAnswer {
                    endpoint,
                    op: AUTHENTICATE.name,
                    reason: "no token in the answer".to_owned(),
                })?;
                Token::Have(token)
            }
            // Auth is off in etcd: requests work without a token.
            Err(Failed(EtcdError::Status {
                code: 9, message, ..
            })) if message.contains("authentication is not enabled") => Token::NotNeeded,
            Err(Failed(e)) => return Err(e),
            Err(Reauth) => return Err(reauth_failed(AUTHENTICATE)),
        };
        *auth.token.lock().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Ok(match fresh {
            Token::Have(t) => Some(t),
            _ => None,
        })
    }

    /// Drops the token so the next request logs in again; false without auth configured.
    fn forget_token(&self) -> bool {
        match &self.inner.auth {
            Some(auth) => {
                *auth.token.lock().unwrap_or_else(|e| e.into_inner()) = Token::Unknown;
                true
            }
            None => false,
        }
    }
}

enum RoundError {
    Reauth,
    Failed(EtcdError),
}
use RoundError::{Failed, Reauth};

fn reauth_failed(call: Call) -> EtcdError {
    EtcdError::Status {
        endpoint: "every endpoint".to_owned(),
        op: call.name,
        code: 16,
        message: "etcd keeps rejecting a fresh auth token".to_owned(),
    }
}

fn status_error(
    endpoint: &str,
    call: Call,
    e: wire::ErrorWire,
    username: Option<&str>,
) -> EtcdError {
    let message = if e.message.is_empty() {
        e.error
    } else {
        e.message
    };
    if call.path == AUTHENTICATE.path && e.code == 3 {
        return EtcdError::AuthFailed {
            endpoint: endpoint.to_owned(),
            username: username.unwrap_or_default().to_owned(),
            message,
        };
    }
    EtcdError::Status {
        endpoint: endpoint.to_owned(),
        op: call.name,
        code: e.code,
        message,
    }
}

fn parse<T: DeserializeOwned>(endpoint: &str, call: Call, raw: &[u8]) -> Result<T, EtcdError> {
    serde_json::from_slice(raw).map_err(|e| EtcdError::BadAnswer {
        endpoint: endpoint.to_owned(),
        op: call.name,
        reason: e.to_string(),
    })
}

/// Adds the likely fix to a TLS failure's text. With TLS 1.3 a server that requires a
/// client certificate rejects its absence only after the handshake, so the client sees
/// a closed connection or an alert, never a clear "certificate required".
fn tls_hint(endpoint: &str, has_identity: bool, reason: String) -> String {
    if !endpoint.starts_with("https://") {
        return reason;
    }
    if reason.contains("invalid peer certificate") {
        return format!(
            "{reason}; check that ca_file holds the CA that signed etcd's certificate and that the endpoint's host is in it"
        );
    }
    // Which of these the client sees is a race between its write and the server's close
    // (a loaded machine turns "closed" into "reset").
    let refused = [
        "connection closed",
        "onnection reset",
        "roken pipe",
        "unexpected EOF",
        "BadCertificate",
        "CertificateRequired",
    ];
    if !has_identity && refused.iter().any(|sign| reason.contains(sign)) {
        return format!(
            "{reason}; if etcd runs with --client-cert-auth, configure cert_file and key_file"
        );
    }
    reason
}

fn read_file(field: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "cannot read etcd {field} `{}`: {}",
            path.display(),
            crate::util::io_reason(&e)
        )
    })
}

/// `http(s)://host:port` with nothing after it: the client appends `/v3/...` itself.
fn normalize_endpoint(endpoint: &str) -> Result<String, String> {
    if !endpoint.contains("://") {
        return Err(format!(
            "etcd endpoint `{endpoint}` must start with http:// or https://"
        ));
    }
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| format!("etcd endpoint `{endpoint}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "etcd endpoint `{endpoint}` must start with http:// or https://"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "etcd endpoint `{}` must not carry credentials: use username and password",
            url.host_str().unwrap_or("?")
        ));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(format!(
            "etcd endpoint `{endpoint}` must be a client URL without a path (like http://10.0.0.5:2379)"
        ));
    }
    Ok(endpoint.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("http://127.0.0.1:2379", Ok("http://127.0.0.1:2379")),
            (
                "https://etcd.example:2379/",
                Ok("https://etcd.example:2379"),
            ),
            ("127.0.0.1:2379", Err("must start with http")),
            ("unix:///run/etcd.sock", Err("must start with http")),
            ("http://127.0.0.1:2379/v3", Err("without a path")),
            (
                "http://root:pw@127.0.0.1:2379",
                Err("must not carry credentials"),
            ),
            ("http://", Err("is not a URL")),
        ];
        for (input, want) in cases {
            match (normalize_endpoint(input), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want),
                (Err(got), Err(want)) => assert!(got.contains(want), "{input}: {got}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
        // The password in a rejected URL is not echoed.
        let e = normalize_endpoint("http://root:hunter2@127.0.0.1:2379").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn setup_errors_table() {
        let mut no_password = EtcdOptions::new(["http://127.0.0.1:2379"]);
        no_password.username = Some("tokend".into());
        let mut no_user = EtcdOptions::new(["http://127.0.0.1:2379"]);
        no_user.password = Some(Secret::new("pw-canary"));
        let mut half_cert = EtcdOptions::new(["http://127.0.0.1:2379"]);
        half_cert.cert_file = Some("/etc/tokend/etcd.pem".into());
        let mut missing_ca = EtcdOptions::new(["http://127.0.0.1:2379"]);
        missing_ca.ca_file = Some("/nonexistent/ca.pem".into());
        let cases = [
            (EtcdOptions::new(Vec::<String>::new()), "no endpoints"),
            (no_password, "user `tokend` has no password"),
            (no_user, "without a username"),
            (half_cert, "cert_file and key_file go together"),
            (missing_ca, "cannot read etcd ca_file `/nonexistent/ca.pem`"),
        ];
        for (opts, want) in cases {
            let e = EtcdClient::new(opts).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("canary"), "{e}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let mut opts = EtcdOptions::new(["http://127.0.0.1:2379"]);
        opts.username = Some("tokend".into());
        opts.password = Some(Secret::new("pw-canary"));
        assert!(!format!("{opts:?}").contains("canary"));
        let client = EtcdClient::new(opts).unwrap();
        let text = format!("{client:?}");
        assert!(
            text.contains("tokend") && !text.contains("canary"),
            "{text}"
        );
    }

    #[test]
    fn error_text_table() {
        let cases = [
            (
                EtcdError::Status {
                    endpoint: "http://e1:2379".into(),
                    op: "txn",
                    code: 7,
                    message: "etcdserver: permission denied".into(),
                },
                "etcd at http://e1:2379 refused txn: etcdserver: permission denied (gRPC code 7); grant tokend's etcd role readwrite on its prefix (etcdctl role grant-permission)",
            ),
            (
                EtcdError::NoGateway {
                    endpoint: "http://e1:2379".into(),
                },
                "etcd at http://e1:2379 has no HTTP/JSON gateway: start it with --enable-grpc-gateway (etcd ≥ 3.4 default)",
            ),
            (
                EtcdError::Ambiguous {
                    endpoint: "http://e1:2379".into(),
                    op: "txn",
                    reason: "no answer within 2s".into(),
                },
                "the outcome of txn at etcd http://e1:2379 is unknown (no answer within 2s); it may or may not have been applied, so read the key back before deciding",
            ),
            (
                EtcdError::Compacted {
                    endpoint: "http://e1:2379".into(),
                    compact_revision: 9,
                },
                "etcd at http://e1:2379 has compacted its history up to revision 9; re-read",
            ),
        ];
        for (error, want) in cases {
            let text = error.to_string();
            assert!(text.starts_with(want), "{text}");
        }
    }

    #[test]
    fn tls_hint_table() {
        let cases = [
            (
                "https://e:2379",
                false,
                "connection closed",
                "configure cert_file and key_file",
            ),
            (
                "https://e:2379",
                false,
                "received fatal alert: BadCertificate",
                "configure cert_file",
            ),
            ("https://e:2379", true, "connection closed", ""),
            ("http://e:2379", false, "connection closed", ""),
            (
                "https://e:2379",
                true,
                "invalid peer certificate: UnknownIssuer",
                "check that ca_file holds the CA",
            ),
            ("https://e:2379", false, "Connection refused", ""),
        ];
        for (endpoint, identity, reason, want) in cases {
            let got = tls_hint(endpoint, identity, reason.to_owned());
            let added = got.strip_prefix(reason).unwrap();
            if want.is_empty() {
                assert_eq!(added, "", "{endpoint} {reason}");
            } else {
                assert!(added.contains(want), "{endpoint} {reason}: {got}");
            }
        }
    }

    #[test]
    fn transport_classification() {
        // A refused connection is classified "not sent" by reqwest itself.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        crate::net::install_crypto_provider();
        let e = rt
            .block_on(
                reqwest::Client::new()
                    .post(format!("http://127.0.0.1:{port}/v3/kv/range"))
                    .send(),
            )
            .unwrap_err();
        assert!(matches!(transport(e), Transport::NotSent(_)));
    }
}
