//! Vandar (payments, Iran): the v3 refresh chain with single-use rotating refresh tokens,
//! the mobile + password login (v3, answering a fresh chain, or the 2020 v2 shape), and the
//! fallback from a rejected chain to login.
//!
//! Reality (PROVIDERS.md, "In reality") shapes three rules here. Only a definitive answer of
//! the API ends a chain: 401, or a JSON 400/422 about the token; a 403/407/451, an HTML page
//! or an empty 4xx comes from a geo-block, WAF or proxy in front of it, and the refresh token
//! it never saw is kept. A rotated refresh token is kept even when the access token beside
//! it is unusable. And every POST goes through a per-host limiter, because Vandar answers
//! more than 30 POSTs in 3 s with 429.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::limit;
use super::{Answer, AnswerExt, Failure, FetchError, Fetched, Provider, RefreshUpdate};
use crate::net::HttpClient;
use crate::secret::Secret;

pub const DEFAULT_BASE_URL: &str = "https://api.vandar.io";
/// "The token lives five days" (seed 001); v3 also says `expires_in: 432000`.
pub const DOCUMENTED_LIFETIME: Duration = Duration::from_secs(5 * 86_400);
/// docs.vandar.io: a refresh token lives ten days (and must be used before the access
/// token it came with expires).
pub const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 86_400);

/// The longest `Retry-After` a fetch waits out itself before sending again.
const MAX_THROTTLE_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq)]
pub struct Vandar {
    pub base_url: String,
    /// The dashboard-issued refresh token that seeds the chain; later ones live in state.
    pub refresh_token: Option<Secret>,
    pub login: Option<Login>,
    pub login_version: LoginVersion,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Login {
    pub mobile: String,
    pub password: Secret,
}

/// Which login endpoint to use (`login_version:` in the config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoginVersion {
    /// `/v3/login`, falling back to `/v2/login` when v3 answers 404, 405 or 410.
    #[default]
    Auto,
    /// `/v3/login` only: an OAuth pair whose refresh token seeds the chain.
    V3,
    /// `/v2/login` only: `{status, data.token}`, no refresh token (the 2020 API).
    V2,
}

impl Vandar {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }

    /// Every POST to Vandar waits its turn in the per-host limiter, and a 429 pauses the
    /// host for its `Retry-After`. The throttle answers before the API looks at the body, so
    /// a throttled request spent nothing and is sent again (twice at most) once the pause
    /// is over; a longer pause is left to the retry schedule.
    async fn post(
        &self,
        http: &HttpClient,
        path: &str,
        body: &Value,
    ) -> Result<Answer, FetchError> {
        let url = self.url(path);
        let host = limit::host_of(&url);
        let mut throttled = 0;
        loop {
            limit::vandar().acquire(&host).await;
            let answer = http.post_json(&url, body).await?;
            if answer.status != 429 {
                return Ok(answer);
            }
            let pause = answer.retry_after.unwrap_or(Duration::from_secs(3));
            limit::vandar().pause(&host, pause);
            throttled += 1;
            if throttled > 2 || pause > MAX_THROTTLE_WAIT {
                return Ok(answer);
            }
            tracing::debug!(url, retry_in = ?pause, "vandar throttled the request; sending it again");
        }
    }

    async fn refresh(&self, http: &HttpClient, current: &Secret) -> Result<Fetched, Failure> {
        let body = json!({"refreshtoken": current.expose()});
        let answer = self.post(http, "/v3/refreshtoken", &body).await?;
        parse_refresh(&answer, self.login.is_some())
            .map_err(|e| Failure::salvaging(e, &answer, "/refresh_token"))
    }

    async fn login(&self, http: &HttpClient, login: &Login) -> Result<Fetched, Failure> {
        let body = json!({"mobile": login.mobile, "password": login.password.expose()});
        if self.login_version != LoginVersion::V2 {
            let answer = self.post(http, "/v3/login", &body).await?;
            let retired = matches!(answer.status, 404 | 405 | 410);
            if !(retired && self.login_version == LoginVersion::Auto) {
                return parse_login_v3(&answer)
                    .map_err(|e| Failure::salvaging(e, &answer, "/refresh_token"));
            }
            tracing::debug!(
                status = answer.status,
                "vandar /v3/login is not there; trying /v2/login"
            );
        }
        Ok(parse_login(&self.post(http, "/v2/login", &body).await?)?)
    }
}

impl Provider for Vandar {
    fn documented_lifetime(&self) -> Option<Duration> {
        Some(DOCUMENTED_LIFETIME)
    }

    /// A chain is kept whenever one can exist: seeded from the config, or started by a v3
    /// login.
    fn uses_refresh_chain(&self) -> bool {
        self.refresh_token.is_some() || self.login_version != LoginVersion::V2
    }

    fn refresh_seed(&self) -> Option<&Secret> {
        self.refresh_token.as_ref()
    }

    fn refresh_token_lifetime(&self) -> Option<Duration> {
        Some(REFRESH_TOKEN_LIFETIME)
    }

    fn secrets(&self) -> Vec<&Secret> {
        let mut s: Vec<&Secret> = self.refresh_token.iter().collect();
        s.extend(self.login.as_ref().map(|l| &l.password));
        s
    }

    fn dead_chain_remedy(&self) -> &'static str {
        if self.login.is_some() {
            "tokend logs in with mobile + password, which starts a new chain"
        } else {
            "create a new token in the provider's dashboard and put its refresh token in the \
             config; with `mobile` + `password` configured tokend would log in instead"
        }
    }

    fn identity(&self, h: &mut sha2::Sha256) {
        use super::identity::{secret, sep, text};
        text(h, &self.base_url);
        sep(h);
        if let Some(l) = &self.login {
            text(h, &l.mobile);
            sep(h);
            secret(h, &l.password);
        }
        sep(h);
        if let Some(r) = &self.refresh_token {
            secret(h, r);
        }
    }

    fn plan(&self) -> String {
        let login = |l: &Login| match self.login_version {
            LoginVersion::Auto => format!(
                "login as {} (/v3/login, whose refresh token starts a new chain; /v2/login if v3 is gone)",
                l.mobile
            ),
            LoginVersion::V3 => format!(
                "login as {} (/v3/login, whose refresh token starts a new chain)",
                l.mobile
            ),
            LoginVersion::V2 => format!("login as {} (/v2/login)", l.mobile),
        };
        let flows = match (&self.refresh_token, &self.login) {
            (Some(_), Some(l)) => format!(
                "v3 refresh chain, falling back to {} when the chain is rejected",
                login(l)
            ),
            (Some(_), None) => "v3 refresh chain (no login fallback configured)".to_owned(),
            (None, Some(l)) => login(l),
            (None, None) => "nothing (no refresh token, no login)".to_owned(),
        };
        format!("vandar at {}: {flows}", self.base_url)
    }

    async fn fetch(
        &self,
        http: &HttpClient,
        refresh_token: Option<&Secret>,
    ) -> Result<Fetched, Failure> {
        let Some(current) = refresh_token else {
            return match &self.login {
                Some(login) => self.login(http, login).await,
                None => Err(FetchError::Misconfigured(
                    "no usable refresh token is left and no mobile + password are configured \
                     to log in with; create a new token in the Vandar dashboard and put its \
                     refresh token in the config"
                        .into(),
                )
                .into()),
            };
        };
        let login = self.login.as_ref().map(|l| move || self.login(http, l));
        super::fallback::refresh_or_login(self.refresh(http, current), login).await
    }
}

/// v2 login answer: `{"status": 1, "data": {"token": ...}}`; failures carry `error`.
pub fn parse_login(answer: &Answer) -> Result<Fetched, FetchError> {
    if !answer.is_success() {
        if super::is_block_page(answer) {
            return Err(super::blocked(answer, "Vandar"));
        }
        return Err(answer.error(super::provider_message(answer)));
    }
    let v = answer.json()?;
    if !status_is_one(&v) {
        return Err(FetchError::Rejected {
            status: answer.status,
            message: super::provider_message(answer),
        });
    }
    // Only data.token is read: data.user holds personal data that must never be kept.
    let token = super::token_field(answer, &v, &["data", "token"])?;
    Ok(Fetched {
        token,
        token_type: "Bearer".into(),
        expires_in: None,
        refresh: RefreshUpdate::Unchanged,
        flow: "login",
    })
}

/// v3 login answer: an OAuth pair `{token_type, expires_in, access_token, refresh_token}`
/// whose refresh token starts a chain. Wrong credentials are a JSON 4xx (Laravel's 422
/// `{message, errors}` or a 400/401 with `message`).
pub fn parse_login_v3(answer: &Answer) -> Result<Fetched, FetchError> {
    if !answer.is_success() {
        if super::is_block_page(answer) {
            return Err(super::blocked(answer, "Vandar"));
        }
        return Err(answer.error(super::provider_message(answer)));
    }
    let mut f = parse_pair(answer, "login")?;
    if matches!(f.refresh, RefreshUpdate::Rejected { .. }) {
        // A login without a refresh token is simply not a chain.
        f.refresh = RefreshUpdate::Unchanged;
    }
    Ok(f)
}

fn status_is_one(v: &Value) -> bool {
    match v.get("status") {
        Some(Value::Number(n)) => n.as_f64() == Some(1.0),
        Some(Value::String(s)) => s.trim() == "1",
        Some(Value::Bool(b)) => *b,
        _ => false,
    }
}

/// v3 refresh answer: an OAuth2-shaped body with a **new** refresh token. Only the API's own
/// verdict ends the chain: 401 (documented body `{"unauthorized"}`, not JSON), or a JSON
/// 400/422 about the token. Block pages, 429 and 5xx keep it.
pub fn parse_refresh(answer: &Answer, login_configured: bool) -> Result<Fetched, FetchError> {
    let rejected = || FetchError::RefreshRejected {
        status: answer.status,
        message: super::provider_message(answer),
        login_configured,
    };
    match answer.status {
        200..=299 => parse_pair(answer, "refresh"),
        401 => Err(rejected()),
        400 | 422 if about_the_token(answer) => Err(rejected()),
        404 | 405 | 410 if super::is_json_object(&answer.body) => {
            Err(FetchError::Misconfigured(format!(
                "{} answered HTTP {}: the refresh endpoint is gone (is `base_url` right?); \
                 the refresh token is kept",
                answer.url, answer.status
            )))
        }
        _ if super::is_block_page(answer) => Err(super::blocked(answer, "Vandar")),
        400..=499 if !matches!(answer.status, 408 | 425 | 429) => {
            // The API answered, but not about the token: nothing says the chain is dead.
            Err(FetchError::Unavailable {
                url: answer.url.clone(),
                status: answer.status,
                message: format!(
                    "{}; not a verdict on the refresh token, which is kept",
                    super::provider_message(answer)
                ),
                retry_after: answer.retry_after,
            })
        }
        _ => Err(answer.error(super::provider_message(answer))),
    }
}

/// Whether a JSON 400/422 speaks about the refresh token (OAuth's `invalid_grant` and
/// `invalid_request`, or Laravel's message or validation errors naming the token).
fn about_the_token(answer: &Answer) -> bool {
    let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(&answer.body) else {
        return false;
    };
    if matches!(
        super::get_ci(&v, "error").and_then(Value::as_str),
        Some("invalid_grant" | "invalid_request")
    ) {
        return true;
    }
    super::provider_message(answer)
        .to_lowercase()
        .contains("token")
        || super::get_ci(&v, "errors")
            .and_then(Value::as_object)
            .is_some_and(|e| e.keys().any(|k| k.to_lowercase().contains("token")))
}

/// `{token_type, expires_in, access_token, refresh_token}`, as both v3 calls answer.
fn parse_pair(answer: &Answer, flow: &'static str) -> Result<Fetched, FetchError> {
    let v = answer.json()?;
    let token = super::token_field(answer, &v, &["access_token"])?;
    let refresh = match v.get("refresh_token") {
        Some(Value::String(_)) => {
            RefreshUpdate::Rotated(super::token_field(answer, &v, &["refresh_token"])?)
        }
        // The sent token is spent either way; without a successor the chain ends here
        // rather than re-sending a token the provider already consumed.
        _ => RefreshUpdate::Rejected {
            message: "the refresh answer carried no new refresh token".into(),
        },
    };
    Ok(Fetched {
        token,
        token_type: super::str_at(&v, &["token_type"])
            .unwrap_or("Bearer")
            .to_owned(),
        expires_in: super::expires_in(&v),
        refresh,
        flow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_success_reads_only_the_token() {
        let f = parse_login(&Answer::fake(
            200,
            r#"{"status":1,"data":{"token":"eyJ.a.b","user":{"national_code":"0012345678"}}}"#,
        ))
        .unwrap();
        assert_eq!(f.token.expose(), "eyJ.a.b");
        assert_eq!(f.expires_in, None);
        assert_eq!(f.refresh, RefreshUpdate::Unchanged);
    }

    #[test]
    fn login_failure_shows_the_persian_message() {
        let e = parse_login(&Answer::fake(
            400,
            r#"{"status":0,"error":"نام کاربری یا رمز عبور اشتباه است"}"#,
        ))
        .unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "provider rejected the credentials (HTTP 400): نام کاربری یا رمز عبور اشتباه است"
        );
        // status 0 inside a 200 is a rejection too.
        let e = parse_login(&Answer::fake(200, r#"{"status":0,"error":"x"}"#)).unwrap_err();
        assert!(matches!(e, FetchError::Rejected { .. }));
    }

    #[test]
    fn refresh_rotates() {
        let f = parse_refresh(
            &Answer::fake(
                200,
                r#"{"token_type":"Bearer","expires_in":432000,"access_token":"a.b.c","refresh_token":"def502new"}"#,
            ),
            false,
        )
        .unwrap();
        assert_eq!(f.expires_in, Some(DOCUMENTED_LIFETIME));
        assert_eq!(f.refresh, RefreshUpdate::Rotated(Secret::new("def502new")));
    }

    #[test]
    fn refresh_401_with_non_json_body_is_a_rejection_not_a_parse_error() {
        let e = parse_refresh(&Answer::fake(401, r#"{"unauthorized"}"#), false).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(r#"provider rejected the refresh token (HTTP 401): {"unauthorized"}"#),
            "{text}"
        );
        assert!(text.contains("dashboard"), "{text}");
        assert!(!text.contains("JSON"), "{text}");
        assert!(!e.is_transient());
    }

    #[test]
    fn refresh_500_is_transient() {
        assert!(
            parse_refresh(&Answer::fake(502, "<html>bad gateway</html>"), true)
                .unwrap_err()
                .is_transient()
        );
    }

    #[test]
    fn refresh_without_successor_ends_the_chain() {
        let f = parse_refresh(&Answer::fake(200, r#"{"access_token":"a.b.c"}"#), true).unwrap();
        assert!(matches!(f.refresh, RefreshUpdate::Rejected { .. }));
    }
}
