//! The per-credential status report shared by `tokend status` and `GET /v1/status`:
//! built from state files only, never showing a token (a fingerprint at most).

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Config;
use crate::provider::Provider;
use crate::store::{self, Summary};
use crate::util::{human_duration, rfc3339};

#[derive(Debug, Serialize)]
pub struct Entry {
    pub credential: String,
    pub provider: &'static str,
    /// `valid`, `expired`, `missing` or `unreadable`.
    pub token: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_refresh: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// Always present (null when the last attempt succeeded), for scripts.
    pub last_error: Option<String>,
    pub failures: u32,
    pub refresh_chain: bool,
    /// `healthy`, `retrying` (failing, and tokend will keep trying on its own), `down` (no
    /// valid token, nothing a person must do yet) or `needs_person` (SPEC "Health of a
    /// credential": it cannot renew without one, whatever its token's expiry).
    pub health: &'static str,
    /// What the operator must do, when `health` is `needs_person`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The age of the refresh chain, for providers whose refresh tokens expire (Vandar).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainAge>,
    /// The shared record's generations and claim (`ha` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<Shared>,
}

/// Where a credential stands in its `ha` group's shared state.
#[derive(Debug, Default, Serialize)]
pub struct Shared {
    pub chain_gen: u64,
    pub token_gen: u64,
    /// `leader` or `follower`, from the daemon's live view (absent from `tokend status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Who holds the claim on the next provider call, if anyone.
    pub claim_holder: Option<String>,
    /// Why the current refresh token may already be spent, if it may.
    pub in_doubt: Option<String>,
}

/// How old a refresh chain is and when it dies of age.
#[derive(Debug, Serialize)]
pub struct ChainAge {
    /// When the current refresh token was issued; null for a seed from the config, whose
    /// age tokend cannot know.
    pub issued_at: Option<String>,
    pub age_seconds: Option<u64>,
    /// When the refresh token dies of age (issued + the provider's refresh-token lifetime).
    pub expires_at: Option<String>,
    /// Vandar refuses a refresh once the access token it came with has expired.
    pub use_before: Option<String>,
    /// Set when the chain is about to die, or has: what to do about it.
    pub warning: Option<String>,
}

/// Warn when less than this share of the refresh token's life is left: 3 of Vandar's 10 days,
/// time enough for a person to fix an egress or a host before the chain dies.
const WARN_SHARE: f64 = 0.3;

/// The chain's age and, when it is close to dying (or dead), a warning. Pure: time is given.
pub fn chain_age(
    issued: Option<SystemTime>,
    lifetime: Duration,
    access_expires: Option<SystemTime>,
    now: SystemTime,
) -> ChainAge {
    let expires = issued.map(|t| t + lifetime);
    let days = lifetime.as_secs() / 86_400;
    let warning = match (issued, expires) {
        (Some(issued), Some(expires)) if now >= expires => Some(format!(
            "the chain's refresh token was issued {} ago and refresh tokens live {days} days: it is dead; \
             log in (mobile + password) or put a new dashboard token in the config",
            human_duration(now.duration_since(issued).unwrap_or_default())
        )),
        (Some(_), Some(expires))
            if expires.duration_since(now).unwrap_or_default() < lifetime.mul_f64(WARN_SHARE) =>
        {
            Some(format!(
                "the chain's refresh token dies in {} (refresh tokens live {days} days) unless tokend refreshes before then",
                human_duration(expires.duration_since(now).unwrap_or_default())
            ))
        }
        _ => None,
    };
    let warning = warning.or_else(|| match access_expires {
        Some(at) if now >= at => Some(format!(
            "the access token expired {} ago, and a refresh is accepted only before that: the chain is probably dead; \
             log in (mobile + password) or put a new dashboard token in the config",
            human_duration(now.duration_since(at).unwrap_or_default())
        )),
        _ => None,
    });
    ChainAge {
        issued_at: issued.map(rfc3339),
        age_seconds: issued.map(|t| now.duration_since(t).unwrap_or_default().as_secs()),
        expires_at: expires.map(rfc3339),
        use_before: access_expires.map(rfc3339),
        warning,
    }
}

impl Entry {
    pub fn is_valid(&self) -> bool {
        self.token == "valid"
    }

    /// What `status` exits 0 for: a valid token that tokend can keep renewing by itself.
    pub fn is_healthy(&self) -> bool {
        self.is_valid() && self.health != "needs_person"
    }
}

/// A credential whose last attempt failed in a way only a person can fix: the provider
/// rejected its credentials or refresh token (and no login can replace it), or its
/// configuration cannot work (a `ca_file` that is not a bundle). Transient failures (the
/// provider or the disk being down) recover on their own and do not count.
pub fn needs_person(state: &Summary) -> bool {
    state.last_error.as_ref().is_some_and(|e| !e.transient)
}

/// The one sentence `status` prints for a credential that needs a person.
fn action(name: &str, expires_at: Option<&str>) -> String {
    format!(
        "tokend cannot renew `{name}` on its own: fix what the last error names (the \
         credentials, a secret file, a new refresh token from the provider's dashboard, \
         ca_file), then reload tokend (SIGHUP, `systemctl reload tokend`; a secret that \
         comes through LoadCredential= needs `systemctl restart tokend`){}",
        match expires_at {
            Some(at) => format!("; the current token expires at {at}"),
            None => String::new(),
        }
    )
}

/// `chain_lifetime`: how long the provider's refresh tokens live, if it says (Vandar).
pub fn entry(
    name: &str,
    provider: &'static str,
    chain_lifetime: Option<Duration>,
    state: Result<Option<Summary>, String>,
    now: SystemTime,
) -> Entry {
    let mut e = Entry {
        credential: name.to_owned(),
        provider,
        token: "missing",
        token_fingerprint: None,
        issued_at: None,
        expires_at: None,
        next_refresh: None,
        last_success: None,
        last_error: None,
        failures: 0,
        refresh_chain: false,
        chain: None,
        shared: None,
        health: "down",
        action: None,
    };
    let s = match state {
        Ok(Some(s)) => s,
        Ok(None) => return e,
        Err(reason) => {
            e.token = "unreadable";
            e.last_error = Some(reason);
            return e;
        }
    };
    if let Some(t) = &s.token {
        e.token = if now < t.expires_at.0 {
            "valid"
        } else {
            "expired"
        };
        e.token_fingerprint = Some(t.fingerprint.clone());
        e.issued_at = Some(rfc3339(t.issued_at.0));
        e.expires_at = Some(rfc3339(t.expires_at.0));
    }
    e.health = if needs_person(&s) {
        e.action = Some(action(
            name,
            e.expires_at.as_deref().filter(|_| e.is_valid()),
        ));
        "needs_person"
    } else if !e.is_valid() {
        "down"
    } else if s.failures > 0 {
        "retrying"
    } else {
        "healthy"
    };
    e.next_refresh = s.next_attempt.map(|t| rfc3339(t.0));
    e.last_success = s.last_success.map(|t| rfc3339(t.0));
    e.last_error = s.last_error.map(|err| err.message);
    e.failures = s.failures;
    e.refresh_chain = s.refresh_chain;
    if s.chain_gen > 0 || s.token_gen > 0 || s.claim_holder.is_some() || s.in_doubt.is_some() {
        e.shared = Some(Shared {
            chain_gen: s.chain_gen,
            token_gen: s.token_gen,
            claim_holder: s.claim_holder,
            in_doubt: s.in_doubt,
            ..Shared::default()
        });
    }
    if let Some(lifetime) = chain_lifetime.filter(|_| e.refresh_chain) {
        e.chain = Some(chain_age(
            s.refresh_issued_at.map(|t| t.0),
            lifetime,
            s.token.as_ref().map(|t| t.expires_at.0),
            now,
        ));
    }
    e
}

/// Reads every configured credential's state file.
pub fn collect(config: &Config, now: SystemTime) -> Vec<Entry> {
    config
        .credentials
        .iter()
        .map(|c| {
            let provider = c.provider.kind().as_str();
            let state = store::local::load(&config.state_dir, &c.name)
                .map(|s| s.map(|s| s.summary()))
                .map_err(|e| e.to_string());
            entry(
                &c.name,
                provider,
                c.provider.refresh_token_lifetime(),
                state,
                now,
            )
        })
        .collect()
}

/// Reads every configured credential's record from a shared store (`ha`).
pub async fn collect_shared(
    config: &Config,
    store: &dyn crate::store::Store,
    now: SystemTime,
) -> Vec<Entry> {
    let mut out = Vec::with_capacity(config.credentials.len());
    for c in &config.credentials {
        let state = store
            .read(&c.name)
            .await
            .map(|r| r.map(|(s, _)| s.summary()))
            .map_err(|e| e.to_string());
        out.push(entry(
            &c.name,
            c.provider.kind().as_str(),
            c.provider.refresh_token_lifetime(),
            state,
            now,
        ));
    }
    out
}

/// A fixed-width table for people.
pub fn table(entries: &[Entry], now: SystemTime) -> String {
    let relative = |t: &Option<String>| -> String {
        let Some(text) = t else { return "-".into() };
        match humantime::parse_rfc3339(text) {
            Ok(at) if at >= now => format!(
                "{text} (in {})",
                human_duration(at.duration_since(now).unwrap_or_default())
            ),
            Ok(at) => format!(
                "{text} ({} ago)",
                human_duration(now.duration_since(at).unwrap_or_default())
            ),
            Err(_) => text.clone(),
        }
    };
    let width = entries
        .iter()
        .map(|e| e.credential.len())
        .max()
        .unwrap_or(10)
        .max(10);
    let mut out = format!(
        "{:<width$}  {:<10}  {:<38}  {:<38}  LAST ERROR\n",
        "CREDENTIAL", "TOKEN", "EXPIRES", "NEXT REFRESH"
    );
    for e in entries {
        out.push_str(&format!(
            "{:<width$}  {:<10}  {:<38}  {:<38}  {}\n",
            e.credential,
            e.token,
            relative(&e.expires_at),
            relative(&e.next_refresh),
            // State written by an older tokend may hold raw provider text.
            crate::util::escape_control(e.last_error.as_deref().unwrap_or("-"))
        ));
    }
    for e in entries {
        if let Some(line) = chain_line(e) {
            out.push_str(&format!("{}: {line}\n", e.credential));
        }
        if let Some(action) = &e.action {
            out.push_str(&format!("\n{} needs a person: {action}\n", e.credential));
        }
    }
    out
}

/// One line on a refresh chain's age for people (`status` and `check`), with its warning.
pub fn chain_line(e: &Entry) -> Option<String> {
    let c = e.chain.as_ref()?;
    let age = match (c.age_seconds, &c.expires_at) {
        (Some(age), Some(expires)) => format!(
            "refresh chain {} old, its refresh token dies at {expires}",
            human_duration(Duration::from_secs(age))
        ),
        _ => "refresh chain from the configured seed (its age is unknown)".to_owned(),
    };
    Some(match &c.warning {
        Some(w) => format!("{age}; warning: {w}"),
        None => age,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoredError, StoredToken, Timestamp};
    use crate::token::Token;
    use std::time::Duration;

    fn state(valid_for: i64, failures: u32, transient: Option<bool>) -> Summary {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let expires = if valid_for >= 0 {
            now + Duration::from_secs(valid_for as u64)
        } else {
            now - Duration::from_secs(valid_for.unsigned_abs())
        };
        let token = Token {
            value: crate::secret::Secret::new("tok"),
            token_type: "Bearer".into(),
            issued_at: now - Duration::from_secs(3600),
            expires_at: expires,
        };
        crate::store::CredentialState {
            token: Some(StoredToken::from(&token)),
            failures,
            last_error: transient.map(|transient| StoredError {
                at: Timestamp(now),
                message: "boom".into(),
                transient,
            }),
            ..Default::default()
        }
        .summary()
    }

    #[test]
    fn health_follows_the_token_and_who_must_act() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        // (token valid for, failures, last error transient?) -> (health, status exits 0)
        let cases = [
            (60, 0, None, "healthy", true),
            (60, 2, Some(true), "retrying", true),
            (60, 1, Some(false), "needs_person", false),
            (-60, 3, Some(true), "down", false),
            (-60, 1, Some(false), "needs_person", false),
        ];
        for (valid_for, failures, transient, health, ok) in cases {
            let e = entry(
                "c",
                "vandar",
                None,
                Ok(Some(state(valid_for, failures, transient))),
                now,
            );
            assert_eq!(e.health, health, "{valid_for} {failures} {transient:?}");
            assert_eq!(e.is_healthy(), ok, "{valid_for} {failures} {transient:?}");
            assert_eq!(e.action.is_some(), health == "needs_person");
        }
        let e = entry("c", "vandar", None, Ok(None), now);
        assert_eq!((e.health, e.is_healthy()), ("down", false));
        let e = entry(
            "c",
            "vandar",
            None,
            Ok(Some(state(60, 1, Some(false)))),
            now,
        );
        let text = table(&[e], now);
        assert!(
            text.contains("c needs a person: tokend cannot renew `c`"),
            "{text}"
        );
        assert!(text.contains("the current token expires at"), "{text}");
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn chain_warnings_by_age() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let live = Some(now + DAY);
        let cases: &[(Option<Duration>, Option<SystemTime>, Option<&str>)] = &[
            (Some(DAY), live, None),
            (Some(6 * DAY), live, None),
            (
                Some(7 * DAY + Duration::from_secs(3600)),
                live,
                Some("dies in 2d 23h"),
            ),
            (Some(10 * DAY), live, Some("it is dead")),
            (
                Some(DAY),
                Some(now - 3600 * Duration::from_secs(1)),
                Some("expired 1h ago"),
            ),
            (None, live, None),
            (None, Some(now - DAY), Some("probably dead")),
        ];
        for (age, access, want) in cases {
            let c = chain_age(age.map(|a| now - a), 10 * DAY, *access, now);
            match want {
                None => assert_eq!(c.warning, None, "{age:?}"),
                Some(w) => assert!(
                    c.warning.as_deref().is_some_and(|t| t.contains(w)),
                    "{age:?}: {:?}",
                    c.warning
                ),
            }
            assert_eq!(c.age_seconds, age.map(|a| a.as_secs()));
        }
    }
}
