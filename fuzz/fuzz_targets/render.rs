//! Output rendering with arbitrary template text, token and credential name, and the small
//! config value parsers (`parse_duration`, `parse_share`, `parse_mode`) on arbitrary text.
//!
//! Input: up to six NUL-separated fields, each read as lossy UTF-8 — template, token,
//! token_type, credential, issued_at and expires_at (decimal Unix seconds, taken modulo the
//! formatter's range; 1800000000 when missing or not a number). Seeds stay human-writable.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use tokend::units::{Mode, parse_duration, parse_mode, parse_share};
use tokend::output::Format;
use tokend::output::render::{dir_files, env_prefix, render, template_unknown};
use tokend::secret::Secret;
use tokend::token::Token;

/// The last second humantime's RFC 3339 formatter can print (9999-12-31T23:59:59Z): the
/// renderer's domain. Whether a token can get an expiry past it is the config's business
/// (see the `config_schedule` target).
const MAX_SECS: u64 = 253_402_300_799;

fuzz_target!(|data: &[u8]| {
    let mut fields = data
        .split(|&b| b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned());
    let mut next = || fields.next().unwrap_or_default();
    let (template, token, token_type, credential) = (next(), next(), next(), next());
    let secs = |f: String| f.trim().parse::<u64>().unwrap_or(1_800_000_000);
    let (issued, expires) = (secs(next()), secs(next()));
    let token = Token {
        value: Secret::new(token),
        token_type,
        issued_at: UNIX_EPOCH + Duration::from_secs(issued % (MAX_SECS + 1)),
        expires_at: UNIX_EPOCH + Duration::from_secs(expires % (MAX_SECS + 1)),
    };

    let raw = render(&Format::Raw, &token, &credential);
    assert_eq!(raw, token.value.expose().as_bytes());

    let json = render(&Format::Json, &token, &credential);
    let doc: serde_json::Value = serde_json::from_slice(&json).expect("json output parses");
    assert_eq!(doc["token"].as_str(), Some(token.value.expose()));
    assert_eq!(doc["credential"].as_str(), Some(credential.as_str()));

    let prefix = env_prefix(&credential);
    let env = render(&Format::Env { prefix }, &token, &credential);
    assert!(env.ends_with(b"\n"));

    let out = render(&Format::Template(template.clone()), &token, &credential);
    let out = String::from_utf8(out).expect("template output is UTF-8");
    if !template.contains("{{") {
        assert_eq!(
            out, template,
            "a template without placeholders must be copied as is"
        );
    }
    if template_unknown(&template).is_empty() && template.contains("{{token}}") {
        assert!(out.contains(token.value.expose()));
    }
    let _ = dir_files(&token, &credential);

    // The config value parsers, on all four strings.
    for text in [
        &template,
        token.value.expose(),
        &token.token_type,
        &credential,
    ] {
        if let Ok(d) = parse_duration(text) {
            let _ = humantime_free_format(d);
        }
        if let Ok(share) = parse_share(text) {
            assert!(share.0.is_finite(), "`{text}` gave a non-finite share");
            let _ = share.to_string();
        }
        if let Ok(Mode(m)) = parse_mode(text) {
            assert!(m <= 0o777, "`{text}` gave mode {m:o}");
            assert_eq!(parse_mode(&Mode(m).to_string()), Ok(Mode(m)), "`{text}`");
        }
    }
});

/// What logs do with a configured duration.
fn humantime_free_format(d: Duration) -> String {
    tokend::util::human_duration(d)
}
