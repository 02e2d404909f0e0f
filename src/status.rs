//! The per-credential status report shared by `tokend status` and `GET /v1/status`:
//! built from state files only, never showing a token (a fingerprint at most).

use std::time::SystemTime;

use serde::Serialize;

use crate::config::Config;
use crate::state::{self, CredentialState};
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
}

impl Entry {
    pub fn is_valid(&self) -> bool {
        self.token == "valid"
    }
}

pub fn entry(
    name: &str,
    provider: &'static str,
    state: Result<Option<CredentialState>, String>,
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
        e.token_fingerprint = Some(t.token.fingerprint());
        e.issued_at = Some(rfc3339(t.issued_at.0));
        e.expires_at = Some(rfc3339(t.expires_at.0));
    }
    e.next_refresh = s.next_attempt.map(|t| rfc3339(t.0));
    e.last_success = s.last_success.map(|t| rfc3339(t.0));
    e.last_error = s.last_error.map(|err| err.message);
    e.failures = s.failures;
    e.refresh_chain = s.refresh_token.is_some();
    e
}

/// Reads every configured credential's state file.
pub fn collect(config: &Config, now: SystemTime) -> Vec<Entry> {
    config
        .credentials
        .iter()
        .map(|c| {
            let provider = provider_name(&c.provider);
            let state = state::load(&config.state_dir, &c.name).map_err(|e| e.to_string());
            entry(&c.name, provider, state, now)
        })
        .collect()
}

pub fn provider_name(p: &crate::provider::ProviderConfig) -> &'static str {
    use crate::provider::ProviderConfig::*;
    match p {
        Vandar(_) => "vandar",
        Saba(_) => "saba",
        Yavapteke(_) => "yavapteke",
        OAuth2(_) => "oauth2",
        HttpJson(_) => "http_json",
    }
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
    out
}
