//! What a *valid* configuration does downstream. `config/mod.rs` says "validated in one
//! place ... Nothing downstream re-validates", so every value `config::parse` accepts must be
//! one the engine's pure arithmetic and the renderers can take. This target parses like
//! `config`, and for each accepted credential replays what `engine.rs` does with it, using
//! the clock of now: the token's expiry (`started + lifetime`), the refresh moment, the retry
//! delays (`now + delay`) and every output's bytes (which print `expires_at` as RFC 3339).
#![no_main]

use std::path::Path;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use tokend::config::{Secrets, parse};
use tokend::output::Target;
use tokend::output::render::{dir_files, render};
use tokend::provider::Provider;
use tokend::schedule::{refresh_at, retry_delay};
use tokend::secret::Secret;
use tokend::token::{self, Token};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = parse(
        &text,
        Path::new("/fuzz/config.yaml"),
        &tokend_fuzz::NoEnv,
        Secrets::Skip,
    ) else {
        return;
    };
    let now = SystemTime::now();
    for c in &config.credentials {
        let _ = c.provider.plan();
        // The longest lifetime the engine can compute: the configured one wins outright;
        // otherwise expires_in and JWT exp are capped at 1e10 s, the documented one is fixed.
        let cap = Duration::from_secs(10_000_000_000);
        let lifetime = match c.lifetime {
            Some(l) => l,
            None => c.provider.documented_lifetime().unwrap_or(cap),
        };
        let (lifetime, _) = token::lifetime(now, c.lifetime, Some(lifetime), None, None)
            .expect("a positive lifetime");
        let expires_at = now.checked_add(lifetime).unwrap_or_else(|| {
            panic!(
                "`{}`: issued now + lifetime {lifetime:?} overflows SystemTime",
                c.name
            )
        });
        let token = Token {
            value: Secret::new("fuzz.token"),
            token_type: "Bearer".into(),
            issued_at: now,
            expires_at,
        };
        for draw in [0.0, 0.5, 0.999_999] {
            let _ = refresh_at(now, expires_at, &c.refresh, draw);
        }
        for failures in [1, 2, 10, 33, u32::MAX] {
            for transient in [true, false] {
                for draw in [0.0, 0.999_999] {
                    let delay = retry_delay(failures, transient, None, &c.retry, draw);
                    assert!(
                        now.checked_add(delay).is_some(),
                        "`{}`: now + retry delay {delay:?} overflows SystemTime",
                        c.name
                    );
                }
            }
        }
        for output in &c.outputs {
            match &output.target {
                Target::File { format, .. } => {
                    let _ = render(format, &token, &c.name);
                }
                Target::Dir { .. } => {
                    let _ = dir_files(&token, &c.name);
                }
            }
        }
        // The hook context and the state file print the expiry too.
        let _ = tokend::util::rfc3339(token.expires_at);
    }
});
