//! Reads the `exp` claim of a JWT, without verifying it: tokend only needs to know when a
//! token stops working, and the provider, not tokend, is the one that checks signatures.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

/// The expiry of `token` if it is a JWT with a numeric `exp`; `None` for anything else
/// (opaque tokens are normal, so this never fails loudly).
pub fn expiry(token: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 16 * 1024 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .or_else(|_| URL_SAFE.decode(payload))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    // Reject nonsense rather than overflow: before 1970 or after year ~2286.
    if !(0.0..=1e10).contains(&exp) {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_secs_f64(exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "eyJhbGciOiJIUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn reads_exp() {
        assert_eq!(
            expiry(&jwt(r#"{"exp":1612186922,"sub":"29"}"#)),
            Some(UNIX_EPOCH + Duration::from_secs(1_612_186_922))
        );
        assert_eq!(
            expiry(&jwt(r#"{"exp":1.5e9}"#)),
            Some(UNIX_EPOCH + Duration::from_secs(1_500_000_000))
        );
    }

    #[test]
    fn the_vandar_seed_example_decodes() {
        // The payload of the access token in the Vandar documentation (seed 000).
        let payload = "eyJhdWQiOiIyIiwianRpIjoiYjlkODRhNjc1MmVhZWUxMzI1NTZjNTNhMzIwMThiNGNkMDk3MDY4NzJkNGZkMzJmNDJjOGQ1NzZkNGIyZjhiZTYzM2Q1YjFhYjY0NWRmMGYiLCJpYXQiOjE2MTE3NTQ5MjIsIm5iZiI6MTYxMTc1NDkyMiwiZXhwIjoxNjEyMTg2OTIyLCJzdWIiOiIyOSIsInNjb3BlcyI6WyIqIl19";
        let t = format!("eyJ0eXAiOiJKV1QifQ.{payload}.sig");
        // exp - iat = 432000 s: the five days the documentation promises.
        assert_eq!(
            expiry(&t),
            Some(UNIX_EPOCH + Duration::from_secs(1_611_754_922 + 432_000))
        );
    }

    #[test]
    fn opaque_and_malformed_tokens_have_no_expiry() {
        for t in [
            "08da627f-6773-4112-8355-47c94c7ac717",
            "a.b",
            "a.b.c.d",
            "a.!!!.c",
            &jwt("not json"),
            &jwt(r#"{"exp":"soon"}"#),
            &jwt(r#"{"exp":-1}"#),
            &jwt(r#"{"exp":1e300}"#),
            &jwt(r#"[1,2]"#),
        ] {
            assert_eq!(expiry(t), None, "{t}");
        }
    }
}
