//! The `/_emulator/*` control endpoints, so tests in any language can inject faults and
//! read counters over HTTP (the same operations as the `Emulator` methods).

use std::sync::Arc;

use axum::Json;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::state::Shared;
use super::{Endpoint, Fault, Stats};

pub(super) async fn stats(AxumState(shared): AxumState<Arc<Shared>>) -> Json<Stats> {
    Json(shared.lock().stats())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PushFault {
    endpoint: Endpoint,
    /// `null` with `sticky: true` clears that endpoint's sticky fault.
    fault: Option<Fault>,
    #[serde(default = "one")]
    times: usize,
    /// Set (or clear) the sticky fault instead of queueing `times` copies.
    #[serde(default)]
    sticky: bool,
}

fn one() -> usize {
    1
}

pub(super) async fn push_fault(
    AxumState(shared): AxumState<Arc<Shared>>,
    Json(push): Json<PushFault>,
) -> Response {
    if let Some(Fault::Status { code, .. }) = push.fault
        && !(200..=599).contains(&code)
    {
        return (
            StatusCode::BAD_REQUEST,
            format!("status fault code {code} is not a final HTTP status (200..=599)"),
        )
            .into_response();
    }
    let kind = push.fault.as_ref().map_or("none", Fault::kind);
    let mut state = shared.lock();
    match (push.sticky, push.fault) {
        (true, fault) => state.set_sticky_fault(push.endpoint, fault),
        (false, Some(fault)) => state.push_fault(push.endpoint, fault, push.times),
        (false, None) => {
            return (
                StatusCode::BAD_REQUEST,
                "`fault` is required unless `sticky` is true",
            )
                .into_response();
        }
    }
    tracing::debug!(
        endpoint = push.endpoint.as_str(),
        fault = kind,
        times = push.times,
        sticky = push.sticky,
        "emulator fault set"
    );
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn clear_faults(AxumState(shared): AxumState<Arc<Shared>>) -> StatusCode {
    shared.lock().clear_faults();
    tracing::debug!("emulator faults cleared");
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Seed {
    token: String,
}

pub(super) async fn add_refresh_seed(
    AxumState(shared): AxumState<Arc<Shared>>,
    Json(seed): Json<Seed>,
) -> StatusCode {
    shared.lock().add_refresh_seed(&seed.token);
    tracing::debug!("emulator refresh seed added");
    StatusCode::NO_CONTENT
}
