//! Vandar (payments, Iran): the v3 refresh chain with single-use rotating refresh tokens,
//! the v2 mobile + password login, and the fallback from a rejected chain to login.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Answer, FetchError, Fetched, Provider, RefreshUpdate};
use crate::net::HttpClient;
use crate::secret::Secret;

pub const DEFAULT_BASE_URL: &str = "https://api.vandar.io";
/// "The token lives five days" (seed 001); v3 also says `expires_in: 432000`.
pub const DOCUMENTED_LIFETIME: Duration = Duration::from_secs(5 * 86_400);

#[derive(Clone, Debug, PartialEq)]
pub struct Vandar {
    pub base_url: String,
    /// The dashboard-issued refresh token that seeds the chain; later ones live in state.
    pub refresh_token: Option<Secret>,
    pub login: Option<Login>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Login {
    pub mobile: String,
    pub password: Secret,
}

impl Vandar {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }

    async fn login(&self, http: &HttpClient, login: &Login) -> Result<Fetched, FetchError> {
        let body = json!({"mobile": login.mobile, "password": login.password.expose()});
        parse_login(&http.post_json(&self.url("/v2/login"), &body).await?)
    }
}

impl Provider for Vandar {
    fn documented_lifetime(&self) -> Option<Duration> {
        Some(DOCUMENTED_LIFETIME)
    }

    fn uses_refresh_chain(&self) -> bool {
        self.refresh_token.is_some()
    }

    fn refresh_seed(&self) -> Option<&Secret> {
        self.refresh_token.as_ref()
    }

    fn secrets(&self) -> Vec<&Secret> {
        let mut s: Vec<&Secret> = self.refresh_token.iter().collect();
        s.extend(self.login.as_ref().map(|l| &l.password));
        s
    }

    fn plan(&self) -> String {
        let flows = match (&self.refresh_token, &self.login) {
            (Some(_), Some(l)) => format!(
                "v3 refresh chain, falling back to v2 login as {} when the chain is rejected",
                l.mobile
            ),
            (Some(_), None) => "v3 refresh chain (no login fallback configured)".to_owned(),
            (None, Some(l)) => format!("v2 login as {}", l.mobile),
            (None, None) => "nothing (no refresh token, no login)".to_owned(),
        };
        format!("vandar at {}: {flows}", self.base_url)
    }

    async fn fetch(
        &self,
        http: &HttpClient,
        refresh_token: Option<&Secret>,
    ) -> Result<Fetched, FetchError> {
        let Some(current) = refresh_token else {
            return match &self.login {
                Some(login) => self.login(http, login).await,
                None => Err(FetchError::Misconfigured(
                    "no usable refresh token is left and no mobile + password are configured \
                     to log in with; create a new token in the Vandar dashboard and put its \
                     refresh token in the config"
                        .into(),
                )),
            };
        };
        let body = json!({"refreshtoken": current.expose()});
        let answer = http.post_json(&self.url("/v3/refreshtoken"), &body).await?;
        match parse_refresh(&answer, self.login.is_some()) {
            Err(FetchError::RefreshRejected {
                status, message, ..
            }) if self.login.is_some() => {
                let login = self.login.as_ref().expect("checked above");
                let mut fetched = self.login(http, login).await?;
                fetched.refresh = RefreshUpdate::Rejected {
                    message: format!("HTTP {status}: {message}"),
                };
                Ok(fetched)
            }
            other => other,
        }
    }
}

/// v2 login answer: `{"status": 1, "data": {"token": ...}}`; failures carry `error`.
pub fn parse_login(answer: &Answer) -> Result<Fetched, FetchError> {
    if !answer.is_success() {
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

fn status_is_one(v: &Value) -> bool {
    match v.get("status") {
        Some(Value::Number(n)) => n.as_f64() == Some(1.0),
        Some(Value::String(s)) => s.trim() == "1",
        Some(Value::Bool(b)) => *b,
        _ => false,
    }
}

/// v3 refresh answer: an OAuth2-shaped body with a **new** refresh token. A rejection is
/// 401 with the non-JSON body `{"unauthorized"}`.
pub fn parse_refresh(answer: &Answer, login_configured: bool) -> Result<Fetched, FetchError> {
    match answer.status {
        400 | 401 | 403 => {
            return Err(FetchError::RefreshRejected {
                status: answer.status,
                message: super::provider_message(answer),
                login_configured,
            });
        }
        s if !(200..300).contains(&s) => {
            return Err(answer.error(super::provider_message(answer)));
        }
        _ => {}
    }
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
        flow: "refresh",
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
