//! What a fetch produces and every output renders: a validated access token with the moment
//! it was issued and the moment it expires, and the rules that decide that expiry.

use std::time::{Duration, SystemTime};

use crate::secret::Secret;

/// Upper bound on an accepted token: JWTs with many claims reach a few KiB; anything past
/// this is a provider answering something other than a token.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Used when neither the provider, the token nor the config says how long a token lives.
pub const FALLBACK_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub value: Secret,
    pub token_type: String,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
}

impl Token {
    pub fn lifetime(&self) -> Duration {
        self.expires_at
            .duration_since(self.issued_at)
            .unwrap_or_default()
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }
}

/// A token is accepted only if it is non-empty, at most 16 KiB and free of whitespace and
/// control characters: anything else would corrupt a header or an env file downstream.
pub fn validate_token(raw: &str) -> Result<Secret, String> {
    if raw.is_empty() {
        return Err("the token is empty".into());
    }
    if raw.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "the token is {} bytes long, more than the {} allowed",
            raw.len(),
            MAX_TOKEN_BYTES
        ));
    }
    if let Some(c) = raw.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the token contains a whitespace or control character (U+{:04X})",
            c as u32
        ));
    }
    Ok(Secret::new(raw))
}

/// Where a lifetime came from, for logs and `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifetimeSource {
    Config,
    ExpiresIn,
    JwtExp,
    Documented,
    Fallback,
}

impl LifetimeSource {
    /// Where the lifetime came from, for a warning an operator can act on.
    pub fn describe(self) -> &'static str {
        match self {
            LifetimeSource::Config => "`lifetime:` in the config",
            LifetimeSource::ExpiresIn => "the answer's expires_in",
            LifetimeSource::JwtExp => "the token's JWT exp, against this host's clock",
            LifetimeSource::Documented => "the provider's documented lifetime",
            LifetimeSource::Fallback => "the 1h fallback",
        }
    }
}

/// Lifetime = the config's `lifetime:` if set, else the smallest of `expires_in`, the JWT
/// `exp` claim (relative to `now`) and the provider's documented lifetime.
pub fn lifetime(
    now: SystemTime,
    configured: Option<Duration>,
    expires_in: Option<Duration>,
    jwt_exp: Option<SystemTime>,
    documented: Option<Duration>,
) -> Result<(Duration, LifetimeSource), String> {
    if let Some(d) = configured {
        return Ok((d, LifetimeSource::Config));
    }
    let from_jwt = match jwt_exp {
        Some(exp) => match exp.duration_since(now) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => return Err("the token's JWT `exp` claim is already in the past".into()),
        },
        None => None,
    };
    let candidates = [
        (expires_in, LifetimeSource::ExpiresIn),
        (from_jwt, LifetimeSource::JwtExp),
        (documented, LifetimeSource::Documented),
    ];
    match candidates
        .iter()
        .filter_map(|(d, src)| d.map(|d| (d, *src)))
        .min_by_key(|(d, _)| *d)
    {
        Some((d, _)) if d.is_zero() => Err("the provider says the token expires at once".into()),
        Some(found) => Ok(found),
        None => Ok((FALLBACK_LIFETIME, LifetimeSource::Fallback)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    #[test]
    fn token_validation() {
        assert!(validate_token("abc.def-ghi_jkl").is_ok());
        assert_eq!(validate_token("").unwrap_err(), "the token is empty");
        assert!(validate_token("a b").unwrap_err().contains("U+0020"));
        assert!(validate_token("ab\n").unwrap_err().contains("U+000A"));
        assert!(validate_token("a\u{7f}").is_err());
        assert!(validate_token(&"x".repeat(MAX_TOKEN_BYTES)).is_ok());
        assert!(validate_token(&"x".repeat(MAX_TOKEN_BYTES + 1)).is_err());
    }

    #[test]
    fn lifetime_is_the_smallest_known() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let l = |cfg, ei, jwt: Option<u64>, doc| {
            lifetime(now, cfg, ei, jwt.map(|s| now + Duration::from_secs(s)), doc)
        };
        assert_eq!(
            l(None, Some(H), None, None),
            Ok((H, LifetimeSource::ExpiresIn))
        );
        assert_eq!(
            l(None, Some(2 * H), Some(1800), Some(5 * H)),
            Ok((H / 2, LifetimeSource::JwtExp))
        );
        assert_eq!(
            l(None, None, None, Some(5 * H)),
            Ok((5 * H, LifetimeSource::Documented))
        );
        assert_eq!(
            l(Some(H / 4), Some(2 * H), Some(60), None),
            Ok((H / 4, LifetimeSource::Config))
        );
        assert_eq!(l(None, None, None, None), Ok((H, LifetimeSource::Fallback)));
        assert!(l(None, Some(Duration::ZERO), None, None).is_err());
        let past = lifetime(now, None, Some(H), Some(now - H), None);
        assert!(past.unwrap_err().contains("past"));
    }
}
