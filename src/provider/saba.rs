//! Saba Payamak (SMS, Iran): one authenticate call with PascalCase keys, a token bound to a
//! virtual number that lives `TokenValidDay` days (1..365), inside a string-status envelope.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Answer, FetchError, Fetched, Provider, RefreshUpdate};
use crate::net::HttpClient;
use crate::secret::Secret;

pub const DEFAULT_BASE_URL: &str = "https://api.sabapayamak.com";
pub const DEFAULT_VALID_DAYS: u16 = 30;

#[derive(Clone, Debug, PartialEq)]
pub struct Saba {
    pub base_url: String,
    pub username: String,
    pub password: Secret,
    pub virtual_number: String,
    /// 1..=365, checked by the config layer.
    pub token_valid_days: u16,
}

impl Provider for Saba {
    fn documented_lifetime(&self) -> Option<Duration> {
        Some(Duration::from_secs(
            u64::from(self.token_valid_days) * 86_400,
        ))
    }

    fn secrets(&self) -> Vec<&Secret> {
        vec![&self.password]
    }

    fn plan(&self) -> String {
        format!(
            "saba at {}: authenticate as {} for virtual number {}, tokens valid {} day(s)",
            self.base_url, self.username, self.virtual_number, self.token_valid_days
        )
    }

    async fn fetch(&self, http: &HttpClient, _: Option<&Secret>) -> Result<Fetched, FetchError> {
        let url = format!(
            "{}/api/v1/user/authenticate",
            self.base_url.trim_end_matches('/')
        );
        let body = json!({
            "Username": self.username,
            "Password": self.password.expose(),
            "VirtualNumber": self.virtual_number,
            "TokenValidDay": self.token_valid_days,
        });
        parse_authenticate(&http.post_json(&url, &body).await?)
    }
}

/// Success needs HTTP 2xx, envelope `status` 200 (a string in the documentation, a number
/// accepted too) and a non-empty `data.Token`; anything else reports `message` and `errors`.
pub fn parse_authenticate(answer: &Answer) -> Result<Fetched, FetchError> {
    if !answer.is_success() {
        return Err(answer.error(super::provider_message(answer)));
    }
    let v = answer.json()?;
    let envelope_status = match v.get("status") {
        Some(Value::String(s)) => s.trim().parse::<u16>().ok(),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        _ => None,
    };
    match envelope_status {
        Some(200) => {}
        Some(code) => {
            // The envelope speaks for itself: classify by its status as if it were HTTP's.
            let shadow = Answer {
                status: code,
                ..answer.clone()
            };
            return Err(shadow.error(super::provider_message(answer)));
        }
        None => {
            return Err(FetchError::BadAnswer {
                status: answer.status,
                reason: "the envelope has no `status`".into(),
            });
        }
    }
    let token = super::token_field(answer, &v, &["data", "Token"])?;
    Ok(Fetched {
        token,
        token_type: "Bearer".into(),
        expires_in: None,
        refresh: RefreshUpdate::Unchanged,
        flow: "authenticate",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_and_number_status_both_succeed() {
        for status in [r#""200""#, "200"] {
            let body = format!(
                r#"{{"status":{status},"message":"عملیات با موفقیت انجام شد","id":1,"data":{{"Id":"1","VirtualNumber":"30001234","Token":"eyJ.x.y"}},"errors":[]}}"#
            );
            let f = parse_authenticate(&Answer::fake(200, &body)).unwrap();
            assert_eq!(f.token.expose(), "eyJ.x.y");
        }
    }

    #[test]
    fn envelope_error_carries_message_and_errors() {
        let e = parse_authenticate(&Answer::fake(
            200,
            r#"{"status":"401","message":"نام کاربری یا رمز عبور اشتباه است","data":null,"errors":["invalid credentials"]}"#,
        ))
        .unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "provider rejected the credentials (HTTP 401): نام کاربری یا رمز عبور اشتباه است: invalid credentials"
        );
        let e = parse_authenticate(&Answer::fake(200, r#"{"status":"500","message":"m"}"#))
            .unwrap_err();
        assert!(e.is_transient());
    }

    #[test]
    fn empty_token_is_rejected() {
        let e = parse_authenticate(&Answer::fake(
            200,
            r#"{"status":"200","data":{"Token":""}}"#,
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("`data.Token`: the token is empty"),
            "{e}"
        );
    }
}
