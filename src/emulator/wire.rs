//! What every emulated endpoint shares: the request pipeline that counts, applies faults and
//! logs, plus the small HTTP helpers (JSON replies, form parsing) the providers build on.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::state::{Shared, State};
use super::{EmulatorConfig, Endpoint, Fault, jwt};

/// One emulated token endpoint. The pipeline in [`serve`] owns faults and counting; an
/// implementation only knows its provider's wire format.
pub(super) trait Api: 'static {
    const ENDPOINT: Endpoint;
    /// OAuth2 token responses must not be cached (RFC 6749 §5.1).
    const NO_STORE: bool = false;
    /// Counted against Vandar's POST throttle (`vandar_post_limit`).
    const THROTTLED: bool = false;
    /// The request as far as the provider could make sense of it; parsing never fails, a
    /// malformed request is just one the answer will refuse.
    type Request: Send + 'static;

    fn parse(headers: &HeaderMap, body: &[u8]) -> Self::Request;
    /// Records what tests assert on (e.g. Saba's `TokenValidDay`), faulted or not.
    fn observe(_request: &Self::Request, _state: &mut State) {}
    /// The provider's real behaviour: validate, mint, answer.
    fn answer(config: &EmulatorConfig, state: &mut State, request: Self::Request) -> Response;
    /// A fresh access token of this provider's kind (not yet recorded as issued).
    fn mint(config: &EmulatorConfig) -> String;
    /// A well-formed success body carrying `token` (any JSON value) as the access token, for
    /// the faults that tamper with the token. With `request`, the server did its job and the
    /// access token got mangled: a refresh flow spends the presented refresh token (if valid)
    /// and sends a valid successor. Without it (or when the presented one was not valid) the
    /// successor is one that is never accepted, and nothing changes.
    fn success_body(
        config: &EmulatorConfig,
        state: &mut State,
        request: Option<&Self::Request>,
        token: serde_json::Value,
    ) -> String;
    /// The body a provider would send with `status` when a `Status` fault names none.
    fn error_body(config: &EmulatorConfig, status: StatusCode) -> String;
}

/// The axum handler behind every emulated endpoint.
pub(super) async fn serve<A: Api>(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = A::parse(&headers, &body);
    let fault = {
        let mut state = shared.lock();
        A::observe(&request, &mut state);
        let config = &shared.config;
        let throttled = if A::THROTTLED {
            state.vandar_throttle(config.vandar_post_limit, config.vandar_post_window)
        } else {
            None
        };
        if let Some(wait) = throttled {
            state.count_request(A::ENDPOINT);
            drop(state);
            return too_many_attempts(wait);
        }
        state.begin_request(A::ENDPOINT)
    };
    let kind = fault.as_ref().map_or("none", Fault::kind);
    let response = match fault {
        None => answer::<A>(&shared, request),
        Some(Fault::Delay { ms }) => {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(ms)) => answer::<A>(&shared, request),
                () = shared.stopped() => stopping(),
            }
        }
        Some(Fault::Hang) => {
            shared.stopped().await;
            stopping()
        }
        Some(Fault::Revoke) => {
            // Only Vandar has refresh tokens; elsewhere the fault is a no-op by design.
            if A::ENDPOINT == Endpoint::VandarRefresh {
                shared.lock().revoke_refresh_tokens();
            }
            answer::<A>(&shared, request)
        }
        Some(Fault::Status {
            code,
            body,
            retry_after,
        }) => status_fault::<A>(&shared.config, code, body, retry_after),
        Some(Fault::BlockPage { code }) => block_page(code),
        Some(Fault::Garbage) => garbage(),
        Some(Fault::EmptyToken) => tampered::<A>(&shared, Some(&request), "".into(), None),
        Some(Fault::TokenWithWhitespace) => {
            let token = shared
                .lock()
                .issued(jwt::with_whitespace(A::mint(&shared.config)));
            tampered::<A>(&shared, Some(&request), token.into(), None)
        }
        Some(Fault::TokenAsNumber) => {
            tampered::<A>(&shared, Some(&request), serde_json::json!(8_675_309), None)
        }
        Some(Fault::LongToken) => {
            let token = format!("{}{}", A::mint(&shared.config), "x".repeat(LONG_TOKEN));
            let token = shared.lock().issued(token);
            tampered::<A>(&shared, Some(&request), token.into(), None)
        }
        // An oversized body is the transport's problem: the provider's state is untouched.
        Some(Fault::Oversized { bytes }) => {
            let token = shared.lock().issued(A::mint(&shared.config));
            tampered::<A>(&shared, None, token.into(), Some(bytes))
        }
    };
    // Laravel renders its errors as HTML for a client that does not ask for JSON (Vandar's
    // docs tell clients to send `Accept: application/json`).
    let response = if A::THROTTLED && !response.status().is_success() && !accepts_json(&headers) {
        laravel_html(response.status())
    } else {
        response
    };
    tracing::debug!(
        endpoint = A::ENDPOINT.as_str(),
        fault = kind,
        status = response.status().as_u16(),
        "emulator answered"
    );
    response
}

fn answer<A: Api>(shared: &Shared, request: A::Request) -> Response {
    let mut state = shared.lock();
    let response = A::answer(&shared.config, &mut state, request);
    if response.status() == StatusCode::OK {
        state.count_success(A::ENDPOINT);
    }
    response
}

/// Bytes appended to a minted token by [`Fault::LongToken`]: over tokend's 16 KiB cap.
const LONG_TOKEN: usize = 17 * 1024;

fn tampered<A: Api>(
    shared: &Shared,
    request: Option<&A::Request>,
    token: serde_json::Value,
    oversized: Option<usize>,
) -> Response {
    let body = A::success_body(&shared.config, &mut shared.lock(), request, token);
    let body = match oversized {
        Some(bytes) => pad(body, bytes),
        None => body,
    };
    json(StatusCode::OK, body, A::NO_STORE)
}

/// Grows a JSON object to exactly `bytes` bytes with a leading `padding` member, so a client
/// that truncates the body instead of refusing it parses invalid JSON rather than a token.
/// Below the size of the body itself, the body is cut short (and is then not JSON at all).
fn pad(body: String, bytes: usize) -> String {
    const OPEN: &str = r#"{"padding":""#;
    const CLOSE: &str = r#"","#;
    let rest = &body[1..];
    let fixed = OPEN.len() + CLOSE.len() + rest.len();
    if bytes >= fixed {
        let mut out = String::with_capacity(bytes);
        out.push_str(OPEN);
        out.extend(std::iter::repeat_n('x', bytes - fixed));
        out.push_str(CLOSE);
        out.push_str(rest);
        out
    } else {
        let mut cut = bytes.min(body.len());
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut out = body[..cut].to_owned();
        out.extend(std::iter::repeat_n(' ', bytes - cut));
        out
    }
}

fn status_fault<A: Api>(
    config: &EmulatorConfig,
    code: u16,
    body: Option<String>,
    retry_after: Option<u64>,
) -> Response {
    let status = match StatusCode::from_u16(code) {
        Ok(status) if (200..=599).contains(&code) => status,
        _ => {
            tracing::warn!(code, "status fault with an unusable code, answering 500");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let mut response = match body {
        // A proxy's error page is HTML; anything else is labelled JSON whether or not it is,
        // as Vandar does with its `{"unauthorized"}`.
        Some(body) if body.trim_start().starts_with('<') => html(status, body),
        Some(body) => json(status, body, false),
        None => json(status, A::error_body(config, status), false),
    };
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// A page from something in front of the API (a geo-block, WAF or proxy): HTML for 403,
/// 400 and the like, an empty body for 451 (as some filtering boxes send).
fn block_page(code: u16) -> Response {
    let status = StatusCode::from_u16(code)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::FORBIDDEN);
    if status == StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS {
        return (status, "").into_response();
    }
    let reason = status.canonical_reason().unwrap_or("Blocked");
    html(
        status,
        format!(
            "<!DOCTYPE html>\r\n<html><head><title>{code} {reason}</title></head>\r\n<body>\
             <h1>{code} {reason}</h1><p>Access from your region is not allowed.</p>\
             <hr><center>firewall</center></body></html>\r\n"
        ),
    )
}

/// Vandar's throttle answer (Laravel's `ThrottleRequests`).
fn too_many_attempts(wait: Duration) -> Response {
    let mut response = json(
        StatusCode::TOO_MANY_REQUESTS,
        r#"{"message":"Too Many Attempts."}"#.to_owned(),
        false,
    );
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

/// What an nginx in front of the API sends when the upstream is down, but with a 200.
fn garbage() -> Response {
    html(
        StatusCode::OK,
        "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
         <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n\
         </body>\r\n</html>\r\n"
            .to_owned(),
    )
}

/// The answer of a parked request when the emulator stops under it.
fn stopping() -> Response {
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, "emulator stopping").into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

pub(super) fn json(status: StatusCode, body: String, no_store: bool) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if no_store {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    response
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// Whether the request's `Accept` asks for JSON (`application/json` or `*/*+json` types).
fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.split(';').next().unwrap_or("").trim();
            t.eq_ignore_ascii_case("application/json") || t.ends_with("+json")
        })
}

/// Laravel's error page for a client that did not ask for JSON.
fn laravel_html(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    html(
        status,
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><title>{reason}</title></head>\n\
             <body><div class=\"code\">{}</div><div class=\"message\">{reason}</div></body></html>\n",
            status.as_u16()
        ),
    )
}

/// Whether the request declared `essence` (e.g. `application/json`) as its media type.
pub(super) fn content_type_is(headers: &HeaderMap, essence: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(essence))
}

/// The fields named in `names` from a form-urlencoded body. A field sent twice is an error:
/// RFC 6749 §3.2 forbids repeating a parameter, and silently taking one would hide a bug.
pub(super) fn form_fields<const N: usize>(
    body: &[u8],
    names: [&str; N],
) -> Result<[Option<String>; N], &'static str> {
    let mut values = [const { None }; N];
    for (key, value) in form_urlencoded::parse(body) {
        if let Some(i) = names.iter().position(|name| *name == key) {
            if values[i].is_some() {
                return Err("repeated parameter");
            }
            values[i] = Some(value.into_owned());
        }
    }
    Ok(values)
}

/// Decodes one application/x-www-form-urlencoded component (`+` is a space), as RFC 6749
/// §2.3.1 requires of the client id and secret inside HTTP Basic. `None` on a broken escape
/// or invalid UTF-8.
pub(super) fn form_decode(component: &str) -> Option<String> {
    let mut out = Vec::with_capacity(component.len());
    let mut bytes = component.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                (hi * 16 + lo) as u8
            }
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_hits_the_exact_size_and_stays_json() {
        let body = r#"{"access_token":"t","expires_in":1}"#.to_owned();
        for bytes in [body.len() + 13, body.len() + 14, 4096] {
            let padded = pad(body.clone(), bytes);
            assert_eq!(padded.len(), bytes);
            let value: serde_json::Value = serde_json::from_str(&padded).unwrap();
            assert_eq!(value["access_token"], "t");
        }
        assert_eq!(pad(body.clone(), 5), r#"{"acc"#);
    }

    #[test]
    fn pad_cuts_on_a_char_boundary() {
        // Byte 7 falls inside the two-byte "ب".
        let padded = pad(r#"{"m":"با"}"#.to_owned(), 7);
        assert_eq!(padded, r#"{"m":" "#);
    }

    #[test]
    fn form_decode_handles_reserved_characters() {
        assert_eq!(form_decode("a%3Ab%25c%2Bd+e").as_deref(), Some("a:b%c+d e"));
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%4"), None);
    }
}
