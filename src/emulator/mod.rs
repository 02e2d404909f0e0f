//! Emulators of the providers' token APIs (Vandar, Saba Payamak, yaVapteke, generic OAuth2)
//! on one loopback HTTP server, with injectable faults, for tests and `tokend emulate`.
//!
//! By default they answer like the live APIs (PROVIDERS.md, "In reality"); the seed
//! pages' shapes are switches in [`EmulatorConfig`]. Routes (all on one port):
//!
//! | route | imitates |
//! |---|---|
//! | `POST /v3/login` | Vandar login today (form or JSON `mobile`, `password`): an OAuth pair whose refresh token starts a chain; absent with `vandar_v3_login: false` |
//! | `POST /v2/login` | Vandar login of 2020 (JSON or form `mobile`, `password`): `{status, data.token}` |
//! | `POST /v3/refreshtoken` | Vandar refresh (`refreshtoken`; single-use, rotating, 10-day life, refused once the access token it came with expired) |
//! | `POST /api/v1/user/authenticate` | Saba Payamak (keys in any case; camelCase answer with numeric `status` and `{message, code, field, url}` errors; `saba_seed_shape` for the documented shape) |
//! | `POST /YavaptekeAPI/connect/token` | yaVapteke (form `client_id`, `client_secret` or `secret`, `grant_type`) |
//! | `POST /oauth2/token` | generic OAuth2: client_credentials, password, refresh_token (rotating, single-use) |
//! | `GET /_emulator/stats` | [`Stats`] as JSON |
//! | `POST /_emulator/faults` | `{"endpoint":"vandar_refresh","fault":{"kind":"status","code":500},"times":3}`; `"sticky":true` sets (or with `"fault":null` clears) the sticky fault instead |
//! | `DELETE /_emulator/faults` | clears every queued and sticky fault |
//! | `POST /_emulator/refresh_seeds` | `{"token":"..."}` becomes a valid refresh token (Vandar and OAuth2) |
//!
//! Every Vandar route counts against the throttle (`vandar_post_limit` per
//! `vandar_post_window`, 30 per 3 s by default): over it, 429 with `Retry-After` and
//! nothing spent. `/v2/login` and `/v3/login` are one endpoint (`vandar_login`) for faults and
//! counters.
//!
//! Choices where the providers' documentation is silent:
//! - Saba: a `TokenValidDay` outside 1..=365 (or missing, or not an integer) is HTTP 400 with
//!   the error envelope; wrong username/password is HTTP 401 with result code 4001, a
//!   `VirtualNumber` the account does not own HTTP 401 with 4003. A body not declared as
//!   JSON is 415.
//! - Vandar v3 login: wrong credentials are Laravel's 422 `{message, errors}`.
//! - yaVapteke: a missing `grant_type` is accepted (the documentation marks it optional).
//!   A body not declared as a form, or a repeated parameter, is 400 `invalid_request`.
//! - Faulted answers and what they spend: see [`Fault`].

mod admin;
mod config;
mod jwt;
mod oauth2;
mod saba;
mod state;
mod vandar;
mod wire;
mod yavapteke;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

pub use config::EmulatorConfig;
use state::Shared;
use wire::serve;

/// How long a stopping server waits for open connections before it abandons them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The emulated token endpoints, as named in fault requests and [`Stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    VandarLogin,
    VandarRefresh,
    Saba,
    Yavapteke,
    /// `oauth2`, not the `o_auth2` that snake_case would make of it.
    #[serde(rename = "oauth2")]
    OAuth2,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] = [
        Endpoint::VandarLogin,
        Endpoint::VandarRefresh,
        Endpoint::Saba,
        Endpoint::Yavapteke,
        Endpoint::OAuth2,
    ];

    /// The name used on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::VandarLogin => "vandar_login",
            Endpoint::VandarRefresh => "vandar_refresh",
            Endpoint::Saba => "saba",
            Endpoint::Yavapteke => "yavapteke",
            Endpoint::OAuth2 => "oauth2",
        }
    }
}

/// A misbehaviour injected into one answer of an endpoint.
///
/// `Status`, `BlockPage`, `Garbage` and `Hang` never reach the provider: they ignore the
/// request and a refresh token presented under them stays valid. The tampered 200s
/// (`EmptyToken`, `TokenWithWhitespace`, `TokenAsNumber`, `LongToken`, `Oversized`) are the
/// provider's real work with the access token mangled: a valid refresh token presented is
/// spent and the answer carries its valid successor (an invalid one gets a successor that is
/// never accepted). `Delay` and `Revoke` answer normally.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer `code` (200..=599) with `body` verbatim, or the provider's typical error body
    /// for that status (e.g. `{"unauthorized"}` for a Vandar refresh 401). A body starting
    /// with `<` is served as text/html, any other as application/json.
    Status {
        code: u16,
        body: Option<String>,
        /// Seconds, sent as a `Retry-After` header.
        retry_after: Option<u64>,
    },
    /// Sleep, then answer normally.
    Delay { ms: u64 },
    /// A 200 whose body is an nginx "502 Bad Gateway" HTML page.
    Garbage,
    /// A 200 shaped like success whose token field is `""`.
    EmptyToken,
    /// A 200 success body of exactly `bytes` bytes: a `"padding"` member leads the object, so
    /// any prefix of it is invalid JSON; below the normal body's size it is cut short.
    Oversized { bytes: usize },
    /// A 200 success body whose token has a space and a newline in the middle.
    TokenWithWhitespace,
    /// A 200 success body whose token is a JSON number.
    TokenAsNumber,
    /// A 200 success body whose token is over 16 KiB long.
    LongToken,
    /// A block page of `code` from something in front of the API (geo-block, WAF, proxy):
    /// HTML, or an empty body for 451. The API never sees the request.
    BlockPage { code: u16 },
    /// Vandar refresh only (a no-op elsewhere): revoke every valid refresh token, then
    /// answer normally, which for the presented token is now a 401.
    Revoke,
    /// Never answer (until the emulator stops; then 503 with `Connection: close`).
    Hang,
}

impl Fault {
    /// The `kind` tag, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Status { .. } => "status",
            Fault::Delay { .. } => "delay",
            Fault::Garbage => "garbage",
            Fault::EmptyToken => "empty_token",
            Fault::Oversized { .. } => "oversized",
            Fault::TokenWithWhitespace => "token_with_whitespace",
            Fault::TokenAsNumber => "token_as_number",
            Fault::LongToken => "long_token",
            Fault::BlockPage { .. } => "block_page",
            Fault::Revoke => "revoke",
            Fault::Hang => "hang",
        }
    }
}

/// Counters and fault state of one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStats {
    /// Every request received, faulted or not.
    pub requests: u64,
    /// Normal (un-tampered) 200 answers that issued a token.
    pub successes: u64,
    pub queued_faults: usize,
    pub sticky_fault: Option<Fault>,
}

/// A snapshot of the emulator, as served by `GET /_emulator/stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub endpoints: BTreeMap<Endpoint, EndpointStats>,
    /// Refresh calls (Vandar v3, OAuth2) that presented an already consumed refresh token:
    /// a replay, which a correct client never sends.
    pub reused_refresh_tokens: u64,
    /// v3 calls that presented a revoked (never consumed) refresh token.
    pub revoked_refresh_tokens_presented: u64,
    /// v3 calls that presented a token never issued or seeded, or none at all.
    pub unknown_refresh_tokens_presented: u64,
    /// Refresh calls that presented a token past its lifetime, or whose access token had
    /// expired (the token is spent by it).
    pub expired_refresh_tokens_presented: u64,
    /// Vandar requests answered 429 by the 30-per-3-s throttle.
    pub vandar_throttled: u64,
    /// Refresh tokens currently valid (unconsumed, unrevoked).
    pub valid_refresh_tokens: usize,
    /// Tokens sent so far (see [`Emulator::issued_tokens`]).
    pub issued_tokens: usize,
    pub last_saba_token_valid_day: Option<i64>,
    pub last_yavapteke_secret_field: Option<String>,
    pub last_oauth2_auth: Option<String>,
    pub last_oauth2_scope: Option<String>,
}

enum Runner {
    Task(tokio::task::JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

/// A running emulator. Dropping it (or [`Emulator::stop`]) stops the server.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runner: Option<Runner>,
}

fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new();
    if shared.config.vandar_v3_login {
        router = router.route("/v3/login", post(serve::<vandar::LoginV3>));
    }
    router
        .route("/v2/login", post(serve::<vandar::Login>))
        .route("/v3/refreshtoken", post(serve::<vandar::Refresh>))
        .route(
            "/api/v1/user/authenticate",
            post(serve::<saba::Authenticate>),
        )
        .route(
            "/YavaptekeAPI/connect/token",
            post(serve::<yavapteke::Token>),
        )
        .route("/oauth2/token", post(serve::<oauth2::Token>))
        .route("/_emulator/stats", get(admin::stats))
        .route(
            "/_emulator/faults",
            post(admin::push_fault).delete(admin::clear_faults),
        )
        .route("/_emulator/refresh_seeds", post(admin::add_refresh_seed))
        .with_state(shared)
}

/// Binds `listen` and returns the server future, which runs until a stop is requested and
/// then at most [`SHUTDOWN_GRACE`] longer.
async fn bind(
    listen: SocketAddr,
    config: EmulatorConfig,
) -> std::io::Result<(
    SocketAddr,
    Arc<Shared>,
    impl Future<Output = ()> + Send + 'static,
)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(config));
    let app = router(Arc::clone(&shared));
    let signal = {
        let shared = Arc::clone(&shared);
        async move { shared.stopped().await }
    };
    let server = {
        let shared = Arc::clone(&shared);
        async move {
            let graceful = axum::serve(listener, app).with_graceful_shutdown(signal);
            tokio::select! {
                result = graceful => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "emulator server failed");
                    }
                }
                () = async {
                    shared.stopped().await;
                    tokio::time::sleep(SHUTDOWN_GRACE).await;
                } => tracing::debug!("emulator connections abandoned after the grace period"),
            }
        }
    };
    Ok((addr, shared, server))
}

impl Emulator {
    /// Serves on `listen` (`127.0.0.1:0` for an ephemeral port) on the current tokio runtime.
    pub async fn start(listen: SocketAddr, config: EmulatorConfig) -> std::io::Result<Emulator> {
        let (addr, shared, server) = bind(listen, config).await?;
        Ok(Emulator {
            addr,
            shared,
            runner: Some(Runner::Task(tokio::spawn(server))),
        })
    }

    /// Serves on an ephemeral loopback port from a dedicated thread with its own runtime, for
    /// synchronous tests. Dropping the handle stops the server and joins the thread.
    pub fn start_background(config: EmulatorConfig) -> std::io::Result<Emulator> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tokend-emulator".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => return drop(tx.send(Err(error))),
                };
                runtime.block_on(async move {
                    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
                    match bind(listen, config).await {
                        Ok((addr, shared, server)) => {
                            let _ = tx.send(Ok((addr, shared)));
                            server.await;
                        }
                        Err(error) => drop(tx.send(Err(error))),
                    }
                });
                // Dropping the runtime here also drops connections still open after the grace.
            })?;
        let (addr, shared) = rx
            .recv()
            .map_err(|_| std::io::Error::other("the emulator thread exited before binding"))??;
        Ok(Emulator {
            addr,
            shared,
            runner: Some(Runner::Thread(thread)),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues `times` copies of `fault`; each later request to `endpoint` takes one, in order.
    pub fn push_fault(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        self.shared.lock().push_fault(endpoint, fault, times);
    }

    /// Applies `fault` to every request to `endpoint` that finds the queue empty, until
    /// cleared with `None`.
    pub fn set_sticky_fault(&self, endpoint: Endpoint, fault: Option<Fault>) {
        self.shared.lock().set_sticky_fault(endpoint, fault);
    }

    /// Drops every queued and sticky fault on every endpoint.
    pub fn clear_faults(&self) {
        self.shared.lock().clear_faults();
    }

    /// Every request received on `endpoint`, faulted or not.
    pub fn requests(&self, endpoint: Endpoint) -> u64 {
        self.shared.lock().requests(endpoint)
    }

    /// Normal 200 answers on `endpoint` that issued a token (tampered 200s do not count).
    pub fn successes(&self, endpoint: Endpoint) -> u64 {
        self.shared.lock().successes(endpoint)
    }

    /// v3 calls that presented an already consumed refresh token.
    pub fn reused_refresh_tokens(&self) -> u64 {
        self.shared.lock().reused_refresh_tokens()
    }

    /// Refresh tokens currently valid (unconsumed, unrevoked), oldest first.
    pub fn valid_refresh_tokens(&self) -> Vec<String> {
        self.shared.lock().valid_refresh_tokens()
    }

    /// Makes `token` a valid refresh token (again, if it was consumed or revoked).
    pub fn add_refresh_seed(&self, token: &str) {
        self.shared.lock().add_refresh_seed(token);
    }

    /// Every non-empty access and refresh token sent so far, in order, including tampered
    /// ones (whitespace, oversized) but not the seeds: what must never show up in logs.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.lock().issued_tokens()
    }

    /// `TokenValidDay` of the last Saba request (`None` if it had none, or not an integer).
    pub fn last_saba_token_valid_day(&self) -> Option<i64> {
        self.shared.lock().last_saba_token_valid_day
    }

    /// `"client_secret"` or `"secret"`: where the last yaVapteke request put its secret.
    pub fn last_yavapteke_secret_field(&self) -> Option<String> {
        self.shared
            .lock()
            .last_yavapteke_secret_field
            .map(Into::into)
    }

    /// `"client_secret_basic"` (an `Authorization: Basic` header was sent) or
    /// `"client_secret_post"` (a form `client_secret`) for the last OAuth2 request.
    pub fn last_oauth2_auth(&self) -> Option<String> {
        self.shared.lock().last_oauth2_auth.map(Into::into)
    }

    /// The `scope` form field of the last OAuth2 request.
    pub fn last_oauth2_scope(&self) -> Option<String> {
        self.shared.lock().last_oauth2_scope.clone()
    }

    /// Everything above in one snapshot.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats()
    }

    /// Stops the server. From [`Emulator::start_background`] this waits for the thread; from
    /// [`Emulator::start`] it only requests the stop (use [`Emulator::shutdown`] to wait).
    pub fn stop(self) {}

    /// Stops the server and waits until it has let go of its port and connections.
    pub async fn shutdown(mut self) {
        self.shared.request_stop();
        match self.runner.take() {
            Some(Runner::Task(task)) => {
                let _ = task.await;
            }
            Some(Runner::Thread(thread)) => {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            None => {}
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.request_stop();
        if let Some(Runner::Thread(thread)) = self.runner.take() {
            let _ = thread.join();
        }
    }
}

/// Serves the emulators on `listen` until `shutdown` resolves, then stops gracefully; the
/// body of `tokend emulate`. Logs the bound address at info level.
pub async fn serve_until(
    listen: SocketAddr,
    config: EmulatorConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let emulator = Emulator::start(listen, config).await?;
    tracing::info!(addr = %emulator.addr(), url = %emulator.url(), "emulators listening");
    shutdown.await;
    emulator.shutdown().await;
    Ok(())
}
