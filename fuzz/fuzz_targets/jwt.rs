//! `jwt::expiry` never panics, and any expiry it reports lies in [UNIX_EPOCH, UNIX_EPOCH + 1e10 s].
//!
//! The first byte picks the mode: even → the rest (as UTF-8) is the token itself; odd → the
//! rest is a JWT payload, base64url-encoded into `header.PAYLOAD.sig`, so the fuzzer works on
//! the JSON `exp` handling instead of having to discover base64.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode & 1 == 0 {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_owned(),
            Err(_) => return,
        }
    } else {
        let engine = if mode & 2 == 0 {
            URL_SAFE_NO_PAD
        } else {
            URL_SAFE
        };
        format!("eyJhbGciOiJIUzI1NiJ9.{}.c2ln", engine.encode(rest))
    };
    if let Some(t) = tokend::provider::jwt::expiry(&token) {
        assert!(t >= UNIX_EPOCH, "expiry before 1970");
        assert!(
            t <= UNIX_EPOCH + Duration::from_secs(10_000_000_000),
            "expiry {t:?} beyond 1e10 s"
        );
    }
});
