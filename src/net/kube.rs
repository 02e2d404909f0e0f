//! A small Kubernetes API client on the reqwest tokend already has: Secrets and
//! `coordination.k8s.io/v1` Leases, read, created, replaced, applied and watched, which is
//! all the shared state, the Lease election and the `kubernetes_secret` output need
//! (HA.md §3.6).
//!
//! Why not the `kube` crate: with `k8s-openapi` it adds about 3.6 MB (+65 %) and 35
//! packages to the release binary, including a second YAML stack, for a handful of JSON
//! requests (HA.md §0.8). This module, with every call reachable from `main`, added
//! 158 KB (+2.7 %) to the release binary and no crate.
//!
//! What the callers rely on:
//! * **No blind writes.** [`KubeClient::replace`] refuses to send an object without
//!   `metadata.resourceVersion` ([`KubeError::NoResourceVersion`]): Secrets accept
//!   unconditional updates, so the API server would not stop one.
//! * **Typed outcomes** ([`KubeError`]): a lost race is `Conflict`, a write whose answer
//!   was lost is `Ambiguous` (read back before deciding), a write that never left is
//!   `Unreachable`, a watch too far behind is `Gone` (list again).
//! * **Rotating credentials.** A token file (the in-cluster ServiceAccount token, which
//!   the kubelet replaces about hourly) is read again at least every
//!   [`config::TOKEN_REREAD`] and after any 401; a 401 is retried once with a changed token.
//! * Requests go straight to the API server, never through `HTTPS_PROXY` and friends
//!   (meant for the providers): a proxy hop can swallow answers and turn clean "not sent"
//!   failures into ambiguous ones. Each has a deadline and a cap on the answer's size.

pub mod config;
mod error;
mod object;
mod token;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Transport, read_capped, root_cause, transport};
use std::time::Duration;

use serde_json::Value;

use crate::secret::Secret;

pub use config::{Credentials, KubeConfig, SERVICE_ACCOUNT_DIR, TOKEN_REREAD};
pub use error::KubeError;
pub use object::{DryRun, KubeObject, Resource};
pub use watch::{Watch, WatchEvent};

use error::{Verdict, classify};
use token::TokenSource;

/// Answers are read up to this many bytes by default (a Secret is at most 1 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 2 * 1024 * 1024;

/// The `fieldManager` of tokend's server-side applies.
pub const FIELD_MANAGER: &str = "tokend";

/// How to reach the API server.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    pub config: KubeConfig,
    /// The deadline of one request (connect, send, answer); a watch's covers its opening.
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

impl KubeOptions {
    pub fn new(config: KubeConfig) -> KubeOptions {
        KubeOptions {
            config,
            timeout: Duration::from_secs(10),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// The client. Cheap to clone; clones share connections and the token cache.
#[derive(Clone)]
pub struct KubeClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    server: String,
    namespace: String,
    timeout: Duration,
    max_bytes: usize,
    token: Option<TokenSource>,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("server", &self.inner.server)
            .field("namespace", &self.inner.namespace)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// One request's identity in errors, and whether it changes state.
struct Op<'a> {
    name: &'static str,
    write: bool,
    target: &'a str,
}

impl KubeClient {
    pub fn new(opts: KubeOptions) -> Result<KubeClient, KubeError> {
        let setup = |reason: String| KubeError::Setup { reason };
        let cfg = opts.config;
        crate::net::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")))
            // Below the request deadline, so a connect that times out is "not sent".
            .connect_timeout(opts.timeout / 2)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .no_proxy();
        if let Some(pem) = &cfg.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                setup(format!(
                    "the cluster CA of {} is not a PEM bundle: {e}",
                    cfg.origin
                ))
            })?;
            if certs.is_empty() {
                return Err(setup(format!(
                    "the cluster CA of {} holds no certificate",
                    cfg.origin
                )));
            }
            // The cluster's own CA only: a public CA has no business vouching for it.
            builder = builder.tls_certs_only(certs);
        }
        let token = match cfg.credentials {
            Credentials::None => None,
            Credentials::Token(t) => Some(TokenSource::Static(t)),
            Credentials::TokenFile { path, reread } => Some(TokenSource::File {
                path,
                reread,
                cached: Mutex::new(None),
            }),
            Credentials::ClientCertificate { pem } => {
                let identity = reqwest::Identity::from_pem(pem.expose().as_bytes()).map_err(|e| {
                    setup(format!(
                        "the client certificate and key of {} are not a PEM certificate and its key: {}",
                        cfg.origin,
                        root_cause(&e)
                    ))
                })?;
                builder = builder.identity(identity);
                None
            }
        };
        let http = builder
            .build()
            .map_err(|e| setup(format!("cannot build the HTTP client: {}", root_cause(&e))))?;
        Ok(KubeClient {
            inner: Arc::new(Inner {
                http,
                server: cfg.server,
                namespace: cfg.namespace,
                timeout: opts.timeout,
                max_bytes: opts.max_response_bytes,
                token,
            }),
        })
    }

    /// The namespace of the pod (or of the kubeconfig context).
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// A consistent read (never `resourceVersion=0`, which the watch cache would serve).
    pub async fn get(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
    ) -> Result<KubeObject, KubeError> {
        let target = target(resource, namespace, name);
        let op = Op {
            name: "get",
            write: false,
            target: &target,
        };
        let url = format!("{}/{name}", resource.collection(namespace));
        self.object(op, reqwest::Method::GET, &url, &[], None).await
    }

    /// POST: creates `object` (its `metadata.name` names it); [`KubeError::AlreadyExists`]
    /// if there is one.
    pub async fn create(
        &self,
        resource: Resource,
        namespace: &str,
        object: &Value,
        dry_run: DryRun,
    ) -> Result<KubeObject, KubeError> {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let target = target(resource, namespace, name);
        let op = Op {
            name: "create",
            write: true,
            target: &target,
        };
        let body = (
            "application/json",
            serde_json::to_vec(object).unwrap_or_default(),
        );
        let query = dry_run_query(dry_run);
        self.object(
            op,
            reqwest::Method::POST,
            &resource.collection(namespace),
            &query,
            Some(body),
        )
        .await
    }

    /// PUT: replaces the whole object if its `metadata.resourceVersion` is still current
    /// ([`KubeError::Conflict`] otherwise). Never sent without one.
    pub async fn replace(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        object: &Value,
        dry_run: DryRun,
    ) -> Result<KubeObject, KubeError> {
        let target = target(resource, namespace, name);
        let op = Op {
            name: "replace",
            write: true,
            target: &target,
        };
        match object.pointer("/metadata/resourceVersion") {
            Some(Value::String(rv)) if !rv.is_empty() => {}
            _ => {
                return Err(KubeError::NoResourceVersion {
                    op: op.name,
                    target,
                });
            }
        }
        let body = (
            "application/json",
            serde_json::to_vec(object).unwrap_or_default(),
        );
        let url = format!("{}/{name}", resource.collection(namespace));
        self.object(
            op,
            reqwest::Method::PUT,
            &url,
            &dry_run_query(dry_run),
            Some(body),
        )
        .await
    }

    /// Server-side apply as `fieldManager=tokend` with `force=true`: tokend owns the
    /// fields it sends and leaves other managers' labels and annotations alone. A
    /// `metadata.resourceVersion` in `object` is a precondition (a stale one is
    /// [`KubeError::Conflict`]); without one the apply is unconditional, and creates.
    pub async fn apply(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        object: &Value,
        dry_run: DryRun,
    ) -> Result<KubeObject, KubeError> {
        let target = target(resource, namespace, name);
        let op = Op {
            name: "apply",
            write: true,
            target: &target,
        };
        // JSON is YAML, so the apply body needs no YAML writer.
        let body = (
            "application/apply-patch+yaml",
            serde_json::to_vec(object).unwrap_or_default(),
        );
        let url = format!("{}/{name}", resource.collection(namespace));
        let mut query = vec![("fieldManager", FIELD_MANAGER), ("force", "true")];
        query.extend(dry_run_query(dry_run));
        self.object(op, reqwest::Method::PATCH, &url, &query, Some(body))
            .await
    }

    /// Watches the one object `name` from `resource_version` (events after it), with
    /// bookmarks; the server ends the stream after `timeout_secs`. RBAC `resourceNames`
    /// allows a watch only with this `metadata.name` field selector.
    pub async fn watch(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        resource_version: &str,
        timeout_secs: u32,
    ) -> Result<Watch, KubeError> {
        let target = target(resource, namespace, name);
        let op = Op {
            name: "watch",
            write: false,
            target: &target,
        };
        let url = resource.collection(namespace);
        let selector = format!("metadata.name={name}");
        let timeout = timeout_secs.to_string();
        let query = [
            ("watch", "1"),
            ("fieldSelector", selector.as_str()),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", timeout.as_str()),
        ];
        let mut retried = false;
        loop {
            let token = self.token(false)?;
            let request = self.request(reqwest::Method::GET, &url, &query, None, token.as_ref());
            let response = match tokio::time::timeout(self.inner.timeout, request.send()).await {
                Err(_) => {
                    return Err(self.failed(
                        &op,
                        Transport::MaybeSent(format!("no answer within {:?}", self.inner.timeout)),
                    ));
                }
                Ok(Err(e)) => return Err(self.failed(&op, transport(e))),
                Ok(Ok(r)) => r,
            };
            let status = response.status().as_u16();
            if status == 200 {
                return Ok(Watch {
                    target,
                    server: self.inner.server.clone(),
                    response,
                    lines: watch::Lines::new(self.inner.max_bytes),
                    resource_version: resource_version.to_owned(),
                });
            }
            let raw = match tokio::time::timeout(
                self.inner.timeout,
                read_capped(response, self.inner.max_bytes),
            )
            .await
            {
                Ok(Ok(raw)) => raw,
                Ok(Err(t)) => return Err(self.failed(&op, t)),
                Err(_) => {
                    return Err(self.failed(
                        &op,
                        Transport::MaybeSent("the error answer did not finish".to_owned()),
                    ));
                }
            };
            if status == 401 && !retried && self.token_changed(token.as_ref()) {
                retried = true;
                continue;
            }
            return Err(self.status_error(&op, status, &raw));
        }
    }

    // ------------------------------------------------------------ plumbing

    async fn object(
        &self,
        op: Op<'_>,
        method: reqwest::Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<KubeObject, KubeError> {
        let dry_run = query.contains(&("dryRun", "All"));
        let raw = self.call(&op, method, url, query, body).await?;
        let bad = |reason: String| KubeError::BadAnswer {
            op: op.name,
            target: op.target.to_owned(),
            reason,
        };
        let value: Value =
            serde_json::from_slice(&raw).map_err(|e| bad(format!("not JSON: {e}")))?;
        if dry_run {
            // A dry-run create is never stored, so it has no resourceVersion.
            return Ok(KubeObject { value });
        }
        KubeObject::from_value(value).map_err(bad)
    }

    /// One request under the deadline; after a 401 with a token file, once more if the
    /// file now holds another token.
    async fn call(
        &self,
        op: &Op<'_>,
        method: reqwest::Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Vec<u8>, KubeError> {
        let mut retried = false;
        loop {
            let token = self.token(false)?;
            let request = self.request(method.clone(), url, query, body.clone(), token.as_ref());
            let (status, raw) = self
                .exchange(request)
                .await
                .map_err(|t| self.failed(op, t))?;
            if (200..300).contains(&status) {
                return Ok(raw);
            }
            // A 401 is decided before anything is applied, so a retry is safe for writes.
            if status == 401 && !retried && self.token_changed(token.as_ref()) {
                retried = true;
                continue;
            }
            return Err(self.status_error(op, status, &raw));
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<(&'static str, Vec<u8>)>,
        token: Option<&Secret>,
    ) -> reqwest::RequestBuilder {
        let mut full = format!("{}{url}", self.inner.server);
        if !query.is_empty() {
            full.push('?');
            full.push_str(
                &form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(query)
                    .finish(),
            );
        }
        let mut request = self
            .inner
            .http
            .request(method, full)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some((content_type, bytes)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        if let Some(token) = token
            && let Ok(mut value) =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        {
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        request
    }

    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), Transport> {
        let timeout = self.inner.timeout;
        let exchange = async {
            let response = request.send().await.map_err(transport)?;
            let status = response.status().as_u16();
            Ok((status, read_capped(response, self.inner.max_bytes).await?))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Transport::MaybeSent(format!(
                "no answer within {timeout:?}"
            ))),
        }
    }

    fn failed(&self, op: &Op<'_>, t: Transport) -> KubeError {
        let target = op.target.to_owned();
        match t {
            Transport::NotSent(reason) => KubeError::Unreachable {
                server: self.inner.server.clone(),
                op: op.name,
                target,
                reason,
            },
            Transport::MaybeSent(reason) | Transport::TooLarge(reason) if op.write => {
                KubeError::Ambiguous {
                    op: op.name,
                    target,
                    reason,
                }
            }
            Transport::MaybeSent(reason) => KubeError::Unreachable {
                server: self.inner.server.clone(),
                op: op.name,
                target,
                reason,
            },
            Transport::TooLarge(reason) => KubeError::BadAnswer {
                op: op.name,
                target,
                reason,
            },
        }
    }

    fn status_error(&self, op: &Op<'_>, status: u16, raw: &[u8]) -> KubeError {
        match verdict_error(
            classify(status, raw, op.write),
            op.name,
            op.target,
            &self.inner.server,
        ) {
            KubeError::Unauthorized {
                server, op, target, ..
            } => KubeError::Unauthorized {
                server,
                op,
                target,
                hint: self.unauthorized_hint().to_owned(),
            },
            e => e,
        }
    }

    fn token(&self, force: bool) -> Result<Option<Secret>, KubeError> {
        token::current(self.inner.token.as_ref(), force)
    }

    fn token_changed(&self, sent: Option<&Secret>) -> bool {
        token::changed(self.inner.token.as_ref(), sent)
    }

    fn unauthorized_hint(&self) -> &'static str {
        token::hint(self.inner.token.as_ref())
    }
}

fn target(resource: Resource, namespace: &str, name: &str) -> String {
    format!("{} {namespace}/{name}", resource.kind())
}

fn dry_run_query(dry_run: DryRun) -> Vec<(&'static str, &'static str)> {
    match dry_run {
        DryRun::No => vec![],
        DryRun::All => vec![("dryRun", "All")],
    }
}

/// One client per kubeconfig (or in-cluster), shared by every output and the shared store
/// of the process.
static CLIENTS: Mutex<Vec<(Option<PathBuf>, KubeClient)>> = Mutex::new(Vec::new());

/// The client for `kubeconfig` (`None`: in-cluster, else `$KUBECONFIG`).
pub fn shared_client(kubeconfig: Option<&Path>) -> Result<KubeClient, String> {
    let mut clients = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, c)) = clients.iter().find(|(k, _)| k.as_deref() == kubeconfig) {
        return Ok(c.clone());
    }
    let config = match kubeconfig {
        Some(path) => KubeConfig::from_kubeconfig(path, None)?,
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => KubeConfig::in_cluster(
            &|k| std::env::var(k).ok(),
            Path::new(crate::net::kube::SERVICE_ACCOUNT_DIR),
        )?,
        None => match std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
            Some(path) => KubeConfig::from_kubeconfig(Path::new(&path), None)?,
            None => {
                return Err("tokend does not run in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set) and neither a `kubeconfig` is set in the config nor KUBECONFIG in the environment".to_owned());
            }
        },
    };
    let client = KubeClient::new(KubeOptions::new(config)).map_err(|e| e.to_string())?;
    clients.push((kubeconfig.map(Path::to_path_buf), client.clone()));
    Ok(client)
}

pub(crate) fn verdict_error(v: Verdict, op: &'static str, target: &str, server: &str) -> KubeError {
    let target = target.to_owned();
    match v {
        Verdict::Conflict(message) => KubeError::Conflict {
            op,
            target,
            message,
        },
        Verdict::AlreadyExists => KubeError::AlreadyExists { op, target },
        Verdict::NotFound => KubeError::NotFound { op, target },
        Verdict::Forbidden(message) => KubeError::Forbidden {
            op,
            target,
            message,
        },
        Verdict::Unauthorized => KubeError::Unauthorized {
            server: server.to_owned(),
            op,
            target,
            hint: "check tokend's credentials".to_owned(),
        },
        Verdict::Gone(message) => KubeError::Gone { target, message },
        Verdict::Ambiguous(reason) => KubeError::Ambiguous { op, target, reason },
        Verdict::Status {
            code,
            reason,
            message,
        } => KubeError::Status {
            op,
            target,
            code,
            reason,
            message,
        },
    }
}
