//! The HTTP endpoints on `listen`: health, readiness, Prometheus metrics, status, and the
//! rate-limited refresh trigger for consumers that just got a 401. Never serves a token.
//!
//! The listener must never cost the refreshes anything: connections are capped (a share of
//! the descriptor limit, so outputs and state can always be opened), a client gets
//! [`HEADER_TIMEOUT`] to send a request head — whether it is idle or trickling header
//! lines — and no connection lives longer than [`CONNECTION_LIFETIME`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::mpsc;

use crate::control::Control;
use crate::observe::Observed;

#[derive(Clone)]
struct App {
    observed: Arc<Observed>,
    control: mpsc::Sender<Control>,
}

/// From accepting a connection (or finishing an answer on it) to a complete request head.
/// Probes and scrapers send theirs at once; keep-alive clients reconnect after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection is held longer than this, whatever it does (a reader that never reads).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// How many connections are served at once with `nofile` descriptors: a quarter of them,
/// so that the rest stay free for state, outputs, hooks and provider connections.
pub fn max_connections(nofile: u64) -> usize {
    usize::try_from(nofile / 4)
        .unwrap_or(usize::MAX)
        .clamp(4, 512)
}

/// Binds `listen` now (so a taken port is a start-up error) and serves until the process ends.
pub async fn serve(
    listen: SocketAddr,
    observed: Arc<Observed>,
    control: mpsc::Sender<Control>,
    max_connections: usize,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/credentials/{name}/refresh", post(trigger))
        .with_state(App { observed, control });
    tokio::spawn(accept_loop(listener, app, max_connections));
    tracing::info!(%addr, max_connections, "HTTP endpoints listening");
    Ok(addr)
}

/// Accepts only while fewer than `max` connections are open: the others wait in the
/// kernel's accept queue, where they cost tokend no descriptor.
async fn accept_loop(listener: tokio::net::TcpListener, app: Router, max: usize) {
    let permits = Arc::new(tokio::sync::Semaphore::new(max));
    let mut warned: Option<Instant> = None;
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset before accept: wait
                // a little rather than spin, and say so once a minute at most.
                if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(error = %e, "the HTTP listener cannot accept connections");
                    warned = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                // The smallest buffer hyper allows: our requests are a line and a few headers.
                .max_buf_size(8192);
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // Errors are the client's (a reset, a timeout, garbage) and not worth a log line.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}

async fn healthz(State(app): State<App>) -> Response {
    if app.observed.is_alive() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler loop is not running\n",
        )
            .into_response()
    }
}

/// Ready while every token works. A credential that needs a person is named in the body but
/// keeps the answer 200: its token still works, and an unready pod would take working
/// consumers out of service days before anything actually breaks. Alerts belong on
/// `tokend_credential_needs_person`, and `status` exits 1.
async fn readyz(State(app): State<App>) -> Response {
    let not_ready = app.observed.not_ready(SystemTime::now());
    let needs_person = app.observed.needs_person();
    let mut body = json!({"ready": not_ready.is_empty()});
    if !not_ready.is_empty() {
        body["credentials"] = json!(not_ready);
    }
    if !needs_person.is_empty() {
        body["needs_person"] = json!(needs_person);
    }
    if let Some(group) = app.observed.group() {
        body["ha"] = json!(group);
    }
    let code = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::get().render(),
    )
        .into_response()
}

async fn status(State(app): State<App>) -> Response {
    Json(app.observed.status(SystemTime::now())).into_response()
}

/// 409 for a credential whose last error was permanent and whose slow retry
/// (`retry.permanent`) is not due: a trigger never retries it sooner.
fn held_back(app: &App, name: &str) -> Option<Response> {
    let now = SystemTime::now();
    let (reason, until) = app.observed.held_back(name, now)?;
    let wait = until.duration_since(now).unwrap_or_default();
    Some(
        (
            StatusCode::CONFLICT,
            [(header::RETRY_AFTER, wait.as_secs().max(1).to_string())],
            Json(json!({
                "error": format!(
                    "`{name}` failed with an error a person must fix; it is retried at {} \
                     (every retry.permanent), not sooner on request",
                    crate::util::rfc3339(until)
                ),
                "reason": reason,
                "retry_at": crate::util::rfc3339(until),
            })),
        )
            .into_response(),
    )
}

async fn trigger(State(app): State<App>, Path(name): Path<String>) -> Response {
    if !app.observed.contains(&name) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no credential named `{name}`")})),
        )
            .into_response();
    }
    if let Some(response) = held_back(&app, &name) {
        return response;
    }
    if !app.observed.try_trigger(&name) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(
                header::RETRY_AFTER,
                crate::observe::TRIGGER_WINDOW.as_secs().to_string(),
            )],
            Json(json!({"error": format!(
                "a refresh of `{name}` was triggered less than {} s ago",
                crate::observe::TRIGGER_WINDOW.as_secs()
            )})),
        )
            .into_response();
    }
    match app.control.send(Control::Refresh(name.clone())).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({"queued": true, "credential": name})),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "tokend is stopping"})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_take_a_quarter_of_the_descriptors_within_bounds() {
        for (nofile, max) in [
            (0, 4),
            (16, 4),
            (128, 32),
            (1024, 256),
            (65_536, 512),
            (u64::MAX, 512),
        ] {
            assert_eq!(max_connections(nofile), max, "{nofile}");
        }
    }
}
