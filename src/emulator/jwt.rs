//! Minting of the tokens the emulators hand out: unsigned-in-spirit JWTs, Vandar-style
//! refresh tokens and yaVapteke's opaque UUID-like tokens, each unique in the process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Shared by every emulator in the process, so tokens never collide even across instances.
static SERIAL: AtomicU64 = AtomicU64::new(0);

/// 64 bits that differ for every call. Multiplying by an odd constant is a bijection modulo
/// 2^64, so distinct serials give distinct values while the output still looks random.
fn unique_bits() -> u64 {
    SERIAL
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ 0x5DEE_CE66_D1CE_4E5B
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Lifetimes go on the wire in whole seconds; a sub-second lifetime would otherwise mint a
/// token that is expired on arrival.
pub(super) fn lifetime_secs(lifetime: Duration) -> u64 {
    lifetime.as_secs().max(1)
}

/// A JWT with `exp = now + lifetime`. The signature is random bytes: clients only read the
/// claims, and nothing about HS256 verification is being emulated.
pub(super) fn jwt(sub: &str, lifetime: Duration) -> String {
    let iat = unix_now();
    let claims = serde_json::json!({
        "sub": sub,
        "iat": iat,
        "exp": iat + lifetime_secs(lifetime),
        "jti": format!("{:016x}{:016x}", unique_bits(), fastrand::u64(..)),
    });
    let mut signature = [0u8; 32];
    fastrand::fill(&mut signature);
    format!(
        "{}.{}.{}",
        // Constant header: {"alg":"HS256","typ":"JWT"}.
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature),
    )
}

/// Laravel Passport refresh tokens start with `def502`; the rest is opaque hex.
pub(super) fn refresh_token() -> String {
    let mut token = format!("def502{:016x}", unique_bits());
    for _ in 0..7 {
        token.push_str(&format!("{:016x}", fastrand::u64(..)));
    }
    token
}

/// Shaped like the documented example `08da627f-6773-4112-8355-47c94c7ac717`.
pub(super) fn opaque_uuid() -> String {
    let u = unique_bits();
    let r = fastrand::u64(..);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u >> 32,
        (u >> 16) & 0xffff,
        u & 0xfff,
        // RFC 4122 variant bits, so it parses as a v4 UUID.
        0x8000 | (r >> 48) & 0x3fff,
        // The 4 bits of `u` displaced by the version nibble: all 64 must survive.
        ((u >> 12) & 0xf) << 44 | r & 0xfff_ffff_ffff,
    )
}

/// The same token with a space and a newline in the middle, where trimming cannot save it.
pub(super) fn with_whitespace(token: String) -> String {
    let mid = token.len() / 2;
    format!("{} \n{}", &token[..mid], &token[mid..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_keeps_the_unique_bits() {
        let tokens: std::collections::HashSet<_> = (0..10_000).map(|_| opaque_uuid()).collect();
        assert_eq!(tokens.len(), 10_000);
    }

    #[test]
    fn jwt_header_is_hs256() {
        let token = jwt("1", Duration::from_secs(60));
        let header = token.split('.').next().unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(header).unwrap(),
            br#"{"alg":"HS256","typ":"JWT"}"#
        );
    }
}
