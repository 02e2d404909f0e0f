//! The HTTP endpoints on `listen`: health, readiness, Prometheus metrics, status, and the
//! rate-limited refresh trigger for consumers that just got a 401. Never serves a token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::mpsc;

use crate::daemon::{Control, MAX_SLEEP};
use crate::observe::Observed;

#[derive(Clone)]
struct App {
    observed: Arc<Observed>,
    control: mpsc::Sender<Control>,
}

/// Binds `listen` now (so a taken port is a start-up error) and serves until the process ends.
pub async fn serve(
    listen: SocketAddr,
    observed: Arc<Observed>,
    control: mpsc::Sender<Control>,
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
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    });
    tracing::info!(%addr, "HTTP endpoints listening");
    Ok(addr)
}

async fn healthz(State(app): State<App>) -> Response {
    if app.observed.is_alive(MAX_SLEEP) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler loop is not running\n",
        )
            .into_response()
    }
}

async fn readyz(State(app): State<App>) -> Response {
    let not_ready = app.observed.not_ready(SystemTime::now());
    if not_ready.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "credentials": not_ready})),
        )
            .into_response()
    }
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
