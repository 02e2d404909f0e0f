//! Shared plumbing of the fuzz targets: turning fuzzer bytes into a provider [`Answer`], and
//! the invariants every successful parse must hold.

use std::time::Duration;

use tokend::provider::{Answer, FetchError, Fetched, RefreshUpdate};
use tokend::token::MAX_TOKEN_BYTES;

/// An environment with no variables: `Secrets::Skip` never asks, and if it did, nothing is set.
pub struct NoEnv;

impl tokend::secret::Environment for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

/// The HTTP status encoded by the first two bytes of an input (big endian): raw values below
/// 60000 map onto 100..=599 (`100 + raw % 500`), so every real status is equally easy to hit;
/// the rest are passed through unchanged so odd statuses (≥ 60000) are exercised too.
///
/// Seed files start with the two bytes of `raw = status - 100`, e.g. `\x00\x64` for 200,
/// `\x01\x2d` for 401 (see `seeds/make_seeds.py`).
pub fn status_of(raw: u16) -> u16 {
    if raw < 60_000 { 100 + raw % 500 } else { raw }
}

/// The answer a provider parser sees: status from the first two bytes, the rest as body.
/// Inputs shorter than two bytes are skipped (`None`).
pub fn answer(data: &[u8]) -> Option<Answer> {
    let (head, body) = data.split_first_chunk::<2>()?;
    Some(Answer {
        url: "https://fuzz.invalid/token".into(),
        status: status_of(u16::from_be_bytes(*head)),
        retry_after: None,
        body: body.to_vec(),
    })
}

/// What `tokend::token::validate_token` promises about every token it lets through.
pub fn assert_valid_token(what: &str, token: &str) {
    assert!(!token.is_empty(), "{what}: empty token accepted");
    assert!(
        token.len() <= MAX_TOKEN_BYTES,
        "{what}: {} bytes accepted, more than {MAX_TOKEN_BYTES}",
        token.len()
    );
    assert!(
        !token.chars().any(|c| c.is_whitespace() || c.is_control()),
        "{what}: token with whitespace or a control character accepted: {token:?}"
    );
}

/// Invariants of a successful parse: a 2xx answer, a valid token, a valid rotated refresh
/// token, and a lifetime within the 1e10 s cap of `provider::expires_in`.
pub fn check_fetched(answer: &Answer, fetched: &Fetched) {
    assert!(
        answer.is_success(),
        "a token was accepted from an HTTP {} answer",
        answer.status
    );
    assert_valid_token("access token", fetched.token.expose());
    if let RefreshUpdate::Rotated(r) = &fetched.refresh {
        assert_valid_token("refresh token", r.expose());
    }
    if let Some(d) = fetched.expires_in {
        assert!(
            d <= Duration::from_secs(10_000_000_000),
            "expires_in {d:?} beyond the 1e10 s cap"
        );
    }
    // Formatting is what the logs do with it; it must not panic either.
    let _ = format!("{:?}", fetched);
}

/// Errors are fine; printing and classifying them must not panic.
pub fn check_error(e: &FetchError) {
    assert!(
        !e.to_string().is_empty(),
        "an error without a message: {e:?}"
    );
    let _ = (e.is_transient(), e.retry_after(), e.status());
}

/// Runs a provider parser on the answer encoded in `data` and checks the result.
pub fn run_parser(data: &[u8], parse: impl Fn(&Answer) -> Result<Fetched, FetchError>) {
    let Some(answer) = answer(data) else { return };
    match parse(&answer) {
        Ok(fetched) => check_fetched(&answer, &fetched),
        Err(e) => check_error(&e),
    }
}
