//! Fetching tokens: one module per provider behind the [`Provider`] trait, the answer helpers
//! and the transient/permanent error split. The HTTP client itself lives in [`crate::net`].
//!
//! Each provider is two layers: a pure `parse_*` function from an [`Answer`] to a [`Fetched`]
//! (unit-tested and fuzzed), and an async `fetch` that builds the request.

mod answer;
pub mod http_json;
pub mod jwt;
pub mod limit;
pub mod oauth2;
pub mod saba;
pub mod vandar;
pub mod yavapteke;

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use crate::net::HttpClient;
use crate::secret::Secret;
pub use answer::{
    Failure, blocked, code_of, error_list, get_ci, is_block_page, is_json_object,
    salvage_refresh_token,
};

/// A provider's configuration with secrets resolved: the closed set tokend speaks.
#[derive(Clone, Debug, PartialEq)]
pub enum ProviderConfig {
    Vandar(vandar::Vandar),
    Saba(saba::Saba),
    Yavapteke(yavapteke::Yavapteke),
    OAuth2(oauth2::OAuth2),
    HttpJson(http_json::HttpJson),
}

/// What every provider does: fetch a token, given the current refresh token if the
/// provider keeps a refresh chain.
pub trait Provider {
    /// The lifetime the provider's documentation promises, if it says.
    fn documented_lifetime(&self) -> Option<Duration>;

    /// Whether this credential keeps a rotating refresh token in state.
    fn uses_refresh_chain(&self) -> bool {
        false
    }

    /// The refresh token from the configuration that starts a chain, if any.
    fn refresh_seed(&self) -> Option<&Secret> {
        None
    }

    /// How long a refresh token of this provider's chain lives, if the provider says.
    fn refresh_token_lifetime(&self) -> Option<Duration> {
        None
    }

    /// A description of what the provider will be asked, for `check` (never a secret).
    fn plan(&self) -> String;

    /// Every secret this provider sends, so error texts that echo one can be redacted.
    fn secrets(&self) -> Vec<&Secret>;

    fn fetch(
        &self,
        http: &HttpClient,
        refresh_token: Option<&Secret>,
    ) -> impl Future<Output = Result<Fetched, Failure>> + Send;
}

impl Provider for ProviderConfig {
    fn documented_lifetime(&self) -> Option<Duration> {
        match self {
            ProviderConfig::Vandar(p) => p.documented_lifetime(),
            ProviderConfig::Saba(p) => p.documented_lifetime(),
            ProviderConfig::Yavapteke(p) => p.documented_lifetime(),
            ProviderConfig::OAuth2(p) => p.documented_lifetime(),
            ProviderConfig::HttpJson(p) => p.documented_lifetime(),
        }
    }

    fn uses_refresh_chain(&self) -> bool {
        match self {
            ProviderConfig::Vandar(p) => p.uses_refresh_chain(),
            ProviderConfig::Saba(p) => p.uses_refresh_chain(),
            ProviderConfig::Yavapteke(p) => p.uses_refresh_chain(),
            ProviderConfig::OAuth2(p) => p.uses_refresh_chain(),
            ProviderConfig::HttpJson(p) => p.uses_refresh_chain(),
        }
    }

    fn refresh_seed(&self) -> Option<&Secret> {
        match self {
            ProviderConfig::Vandar(p) => p.refresh_seed(),
            ProviderConfig::Saba(p) => p.refresh_seed(),
            ProviderConfig::Yavapteke(p) => p.refresh_seed(),
            ProviderConfig::OAuth2(p) => p.refresh_seed(),
            ProviderConfig::HttpJson(p) => p.refresh_seed(),
        }
    }

    fn refresh_token_lifetime(&self) -> Option<Duration> {
        match self {
            ProviderConfig::Vandar(p) => p.refresh_token_lifetime(),
            ProviderConfig::Saba(p) => p.refresh_token_lifetime(),
            ProviderConfig::Yavapteke(p) => p.refresh_token_lifetime(),
            ProviderConfig::OAuth2(p) => p.refresh_token_lifetime(),
            ProviderConfig::HttpJson(p) => p.refresh_token_lifetime(),
        }
    }

    fn secrets(&self) -> Vec<&Secret> {
        match self {
            ProviderConfig::Vandar(p) => p.secrets(),
            ProviderConfig::Saba(p) => p.secrets(),
            ProviderConfig::Yavapteke(p) => p.secrets(),
            ProviderConfig::OAuth2(p) => p.secrets(),
            ProviderConfig::HttpJson(p) => p.secrets(),
        }
    }

    fn plan(&self) -> String {
        match self {
            ProviderConfig::Vandar(p) => p.plan(),
            ProviderConfig::Saba(p) => p.plan(),
            ProviderConfig::Yavapteke(p) => p.plan(),
            ProviderConfig::OAuth2(p) => p.plan(),
            ProviderConfig::HttpJson(p) => p.plan(),
        }
    }

    async fn fetch(
        &self,
        http: &HttpClient,
        refresh_token: Option<&Secret>,
    ) -> Result<Fetched, Failure> {
        match self {
            ProviderConfig::Vandar(p) => p.fetch(http, refresh_token).await,
            ProviderConfig::Saba(p) => p.fetch(http, refresh_token).await,
            ProviderConfig::Yavapteke(p) => p.fetch(http, refresh_token).await,
            ProviderConfig::OAuth2(p) => p.fetch(http, refresh_token).await,
            ProviderConfig::HttpJson(p) => p.fetch(http, refresh_token).await,
        }
    }
}

/// A provider's successful answer, validated but not yet turned into a [`crate::token::Token`]
/// (that needs the clock and the lifetime rules).
#[derive(Debug)]
pub struct Fetched {
    pub token: Secret,
    pub token_type: String,
    pub expires_in: Option<Duration>,
    pub refresh: RefreshUpdate,
    /// Which flow produced it ("login", "refresh", "client_credentials"), for logs.
    pub flow: &'static str,
}

/// What happened to the refresh chain during a fetch.
#[derive(Debug, PartialEq)]
pub enum RefreshUpdate {
    /// No refresh token involved, or the provider did not rotate it.
    Unchanged,
    /// A new refresh token came back; the one sent is dead from now on.
    Rotated(Secret),
    /// The refresh token was rejected and the fetch fell back to a login: the chain is dead
    /// and must not be used again until the configuration provides a new seed.
    Rejected { message: String },
    /// The refresh token was rejected and the login that followed started a new chain
    /// (Vandar's v3 login, OAuth2's password grant): `next` replaces the dead chain.
    Restarted { next: Secret, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot reach {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("no answer from {url} within {}", humantime::format_duration(*.timeout))]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered HTTP {status}{}", detail(.message))]
    Unavailable {
        url: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("provider rejected the credentials (HTTP {status}){}", detail(.message))]
    Rejected { status: u16, message: String },
    #[error(
        "provider rejected the refresh token (HTTP {status}){}; {}",
        detail(.message),
        if *.login_configured { "falling back to login" } else {
            "it cannot be renewed without a person: create a new token in the provider's dashboard and put its refresh token in the config"
        }
    )]
    RefreshRejected {
        status: u16,
        message: String,
        login_configured: bool,
    },
    #[error("unusable answer from provider (HTTP {status}): {reason}")]
    BadAnswer { status: u16, reason: String },
    #[error("{0}")]
    Misconfigured(String),
}

fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl FetchError {
    /// Redacts the error's texts with `redactor` (built for the request that failed), a
    /// second pass after the one in [`provider_message`]: URLs and transport errors can echo
    /// what was sent too.
    pub fn redact(&mut self, redactor: &crate::redact::Redactor) {
        let texts: Vec<&mut String> = match self {
            FetchError::Connect { url, reason } => vec![url, reason],
            FetchError::Timeout { url, .. } => vec![url],
            FetchError::Unavailable { url, message, .. } => vec![url, message],
            FetchError::Rejected { message, .. } | FetchError::RefreshRejected { message, .. } => {
                vec![message]
            }
            FetchError::BadAnswer { reason, .. } => vec![reason],
            FetchError::Misconfigured(m) => vec![m],
        };
        for text in texts {
            *text = crate::util::escape_control(&redactor.redact(text));
        }
    }

    /// Transient errors are retried with fast backoff; permanent ones (a person must act)
    /// slowly, so that an account is never locked by a retry storm.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FetchError::Connect { .. }
                | FetchError::Timeout { .. }
                | FetchError::Unavailable { .. }
                | FetchError::BadAnswer { .. }
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            FetchError::Unavailable { status, .. }
            | FetchError::Rejected { status, .. }
            | FetchError::RefreshRejected { status, .. }
            | FetchError::BadAnswer { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An HTTP answer, body already read and capped.
#[derive(Debug, Clone)]
pub struct Answer {
    pub url: String,
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON, or the reason it is not, phrased for an operator.
    pub fn json(&self) -> Result<Value, FetchError> {
        serde_json::from_slice(&self.body).map_err(|_| FetchError::BadAnswer {
            status: self.status,
            reason: format!("the body is not JSON ({})", body_kind(&self.body)),
        })
    }

    /// The standard classification of a non-success status; `rejected` builds the error for
    /// a 4xx that means "these credentials are wrong".
    pub fn error(&self, message: String) -> FetchError {
        match self.status {
            408 | 425 | 429 | 500..=599 => FetchError::Unavailable {
                url: self.url.clone(),
                status: self.status,
                message,
                retry_after: self.retry_after,
            },
            300..=399 => FetchError::Misconfigured(format!(
                "{} answered HTTP {} (a redirect); token requests are never redirected, so \
                 point the URL at the final address",
                self.url, self.status
            )),
            status => FetchError::Rejected { status, message },
        }
    }

    /// A short, printable excerpt of an error body for the log: providers put their
    /// reason there. Only used for non-2xx answers, which carry no token. Redacted before
    /// anything else, so a secret straddling the cut cannot leave its head behind.
    pub fn excerpt(&self) -> String {
        let text = crate::redact::redact(&String::from_utf8_lossy(&self.body));
        let clean = text.split_whitespace().collect::<Vec<_>>().join(" ");
        cut(&crate::util::escape_control(&clean), EXCERPT_CHARS)
    }
}

/// An error body excerpt is cut here; a provider's own message fields get more room.
const EXCERPT_CHARS: usize = 200;
const MESSAGE_CHARS: usize = 500;

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        format!("{}…", text.chars().take(max).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// The provider's own explanation of an error answer: the usual JSON fields when the body
/// is JSON, else a short excerpt of the body (Vandar's 401 body `{"unauthorized"}` is not JSON).
/// Keys are matched case-insensitively (Saba's ASP.NET answers camelCase or PascalCase), and
/// `errors` is shown as sentences, never as raw JSON: a list of strings or of Saba's
/// `{message, code, field, url}` objects, or Laravel's `{field: [messages]}`.
/// Redacted (see [`crate::redact`]) and with control characters escaped, then cut.
pub fn provider_message(answer: &Answer) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(&answer.body) else {
        return answer.excerpt();
    };
    let mut parts: Vec<String> = Vec::new();
    // OAuth2 (`error`, `error_description`), Saba and Vandar (`message`, `error`), Django
    // REST framework (`detail`).
    for key in ["error", "error_description", "message", "detail"] {
        if let Some(text) = get_ci(&v, key)
            .and_then(Value::as_str)
            .filter(|t| !t.trim().is_empty())
        {
            parts.push(answer::one_line(text));
        }
    }
    let errors = error_list(&v);
    if !errors.is_empty() {
        parts.push(errors.join("; "));
    }
    if parts.is_empty() {
        answer.excerpt()
    } else {
        let text = crate::redact::redact(&parts.join(": "));
        cut(&crate::util::escape_control(&text), MESSAGE_CHARS)
    }
}

/// The redactor for one request of `provider`: its secrets, the refresh token sent, and the
/// Basic credentials as they went on the wire.
pub fn redactor(
    provider: &ProviderConfig,
    refresh_token: Option<&Secret>,
    proxy_password: Option<&Secret>,
) -> crate::redact::Redactor {
    use base64::Engine as _;
    let mut secrets: Vec<&str> = provider.secrets().into_iter().map(Secret::expose).collect();
    secrets.extend(refresh_token.map(Secret::expose));
    secrets.extend(proxy_password.map(Secret::expose));
    let mut composites = Vec::new();
    if let ProviderConfig::OAuth2(o) = provider
        && o.auth == crate::config::raw::ClientAuth::ClientSecretBasic
        && let Some(secret) = &o.client_secret
    {
        let pair = format!(
            "{}:{}",
            oauth2::form_encode(&o.client_id),
            oauth2::form_encode(secret.expose())
        );
        composites.push(base64::engine::general_purpose::STANDARD.encode(pair));
    }
    crate::redact::Redactor::new(secrets, composites)
}

pub(crate) fn body_kind(body: &[u8]) -> String {
    let trimmed = body.trim_ascii_start();
    if trimmed.is_empty() {
        "it is empty".into()
    } else if trimmed.starts_with(b"<") {
        "it looks like HTML".into()
    } else if std::str::from_utf8(body).is_err() {
        "it is not even UTF-8".into()
    } else {
        format!("{} bytes of text", body.len())
    }
}

/// A string field reached by a path of keys, for parse functions.
pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// `expires_in` as providers send it: a number, or sometimes a numeric string.
pub fn expires_in(v: &Value) -> Option<Duration> {
    let secs = match v.get("expires_in")? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e10)))
}

/// Turns a raw token field into a validated secret, or a BadAnswer naming the field.
pub fn token_field(answer: &Answer, v: &Value, path: &[&str]) -> Result<Secret, FetchError> {
    let field = path.join(".");
    let bad = |reason: String| FetchError::BadAnswer {
        status: answer.status,
        reason,
    };
    match path.iter().try_fold(v, |v, k| v.get(k)) {
        None | Some(Value::Null) => Err(bad(format!("the answer has no `{field}`"))),
        Some(Value::String(s)) => {
            crate::token::validate_token(s).map_err(|e| bad(format!("`{field}`: {e}")))
        }
        Some(_) => Err(bad(format!("`{field}` is not a string"))),
    }
}

#[cfg(test)]
impl Answer {
    /// An answer as parse functions see it, for unit tests.
    pub fn fake(status: u16, body: &str) -> Answer {
        Answer {
            url: "http://127.0.0.1/token".into(),
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }
}

/// `Retry-After` in its seconds form; the HTTP-date form is rare on token endpoints and is
/// ignored (the backoff applies instead). Capped at a day so a bogus header cannot park us.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(86_400)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classification() {
        assert!(Answer::fake(500, "").error(String::new()).is_transient());
        assert!(Answer::fake(503, "").error(String::new()).is_transient());
        assert!(Answer::fake(429, "").error(String::new()).is_transient());
        assert!(!Answer::fake(400, "").error(String::new()).is_transient());
        assert!(!Answer::fake(401, "").error(String::new()).is_transient());
        assert!(!Answer::fake(302, "").error(String::new()).is_transient());
    }

    #[test]
    fn non_json_is_described_not_parsed() {
        let e = Answer::fake(200, "<html>502</html>").json().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unusable answer from provider (HTTP 200): the body is not JSON (it looks like HTML)"
        );
        assert!(
            Answer::fake(200, "")
                .json()
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }

    #[test]
    fn excerpt_is_single_line_and_short() {
        let a = Answer::fake(401, "{\"unauthorized\"}\n\r\t");
        assert_eq!(a.excerpt(), "{\"unauthorized\"}");
        assert_eq!(
            Answer::fake(500, &"x".repeat(500))
                .excerpt()
                .chars()
                .count(),
            201
        );
    }

    #[test]
    fn redact_hides_echoed_secrets() {
        let mut e = Answer::fake(
            400,
            r#"{"error":"password hunter22 is wrong for def502abc"}"#,
        )
        .error(provider_message(&Answer::fake(
            400,
            r#"{"error":"password hunter22 is wrong for def502abc"}"#,
        )));
        e.redact(&crate::redact::Redactor::new(
            ["hunter22", "def502abc", "x"],
            [],
        ));
        let text = e.to_string();
        assert!(
            !text.contains("hunter22") && !text.contains("def502abc"),
            "{text}"
        );
        assert!(
            text.contains("password [redacted] is wrong for [redacted]"),
            "{text}"
        );
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("99999999"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn expires_in_forms() {
        let v: Value = serde_json::json!({"expires_in": 3600});
        assert_eq!(expires_in(&v), Some(Duration::from_secs(3600)));
        let v: Value = serde_json::json!({"expires_in": "60"});
        assert_eq!(expires_in(&v), Some(Duration::from_secs(60)));
        let v: Value = serde_json::json!({"expires_in": -5});
        assert_eq!(expires_in(&v), None);
    }

    #[test]
    fn token_field_errors_name_the_field() {
        let a = Answer::fake(200, "");
        let v = serde_json::json!({"data": {"token": 5}, "t": ""});
        let e = token_field(&a, &v, &["data", "token"]).unwrap_err();
        assert!(
            e.to_string().contains("`data.token` is not a string"),
            "{e}"
        );
        let e = token_field(&a, &v, &["t"]).unwrap_err();
        assert!(e.to_string().contains("`t`: the token is empty"), "{e}");
        let e = token_field(&a, &v, &["missing"]).unwrap_err();
        assert!(e.to_string().contains("no `missing`"), "{e}");
    }
}
