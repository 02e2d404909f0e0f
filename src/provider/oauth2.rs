//! Generic OAuth2 client_credentials (RFC 6749 §4.4) with `client_secret_post` or
//! `client_secret_basic`, and the standard token-response parser yaVapteke shares.

use std::time::Duration;

use super::{Answer, FetchError, Fetched, HttpClient, Provider, RefreshUpdate};
use crate::config::raw::ClientAuth;
use crate::secret::Secret;

#[derive(Clone, Debug, PartialEq)]
pub struct OAuth2 {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: Option<String>,
    pub auth: ClientAuth,
}

impl Provider for OAuth2 {
    fn documented_lifetime(&self) -> Option<Duration> {
        None
    }

    fn plan(&self) -> String {
        let auth = match self.auth {
            ClientAuth::ClientSecretPost => "client_secret_post",
            ClientAuth::ClientSecretBasic => "client_secret_basic",
        };
        let scope = self
            .scope
            .as_deref()
            .map(|s| format!(", scope \"{s}\""))
            .unwrap_or_default();
        format!(
            "oauth2 at {}: client_credentials for client {} ({auth}{scope})",
            self.token_url, self.client_id
        )
    }

    async fn fetch(&self, http: &HttpClient, _: Option<&Secret>) -> Result<Fetched, FetchError> {
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let answer = match self.auth {
            ClientAuth::ClientSecretPost => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", self.client_secret.expose()));
                http.post_form(&self.token_url, &form, None).await?
            }
            ClientAuth::ClientSecretBasic => {
                // RFC 6749 §2.3.1: id and secret are form-urlencoded *before* Basic encoding,
                // which most hand-written clients forget (secrets with `:` or `%` then fail).
                let id = form_encode(&self.client_id);
                let secret = form_encode(self.client_secret.expose());
                http.post_form(&self.token_url, &form, Some((&id, &secret)))
                    .await?
            }
        };
        parse_token_response(&answer, "client_credentials")
    }
}

pub fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The RFC 6749 §5.1 success body (`access_token`, `token_type`, `expires_in`, optional
/// `refresh_token`) or §5.2 error body (`error`, `error_description`).
pub fn parse_token_response(answer: &Answer, flow: &'static str) -> Result<Fetched, FetchError> {
    if !answer.is_success() {
        return Err(answer.error(super::provider_message(answer)));
    }
    let v = answer.json()?;
    let token = super::token_field(answer, &v, &["access_token"])?;
    let refresh = match v.get("refresh_token") {
        Some(serde_json::Value::String(_)) => {
            RefreshUpdate::Rotated(super::token_field(answer, &v, &["refresh_token"])?)
        }
        _ => RefreshUpdate::Unchanged,
    };
    Ok(Fetched {
        token,
        token_type: super::str_at(&v, &["token_type"])
            .filter(|t| !t.is_empty())
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

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            url: "http://127.0.0.1/t".into(),
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn yavapteke_example_answer() {
        let f = parse_token_response(
            &answer(
                200,
                r#"{"access_token":"08da627f-6773-4112-8355-47c94c7ac717","expires_in":3600,"token_type":"Bearer"}"#,
            ),
            "client_credentials",
        )
        .unwrap();
        assert_eq!(f.token.expose(), "08da627f-6773-4112-8355-47c94c7ac717");
        assert_eq!(f.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(f.token_type, "Bearer");
    }

    #[test]
    fn standard_error_body_is_shown() {
        let e = parse_token_response(
            &answer(
                401,
                r#"{"error":"invalid_client","error_description":"client authentication failed"}"#,
            ),
            "client_credentials",
        )
        .unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(
            e.to_string(),
            "provider rejected the credentials (HTTP 401): invalid_client: client authentication failed"
        );
    }

    #[test]
    fn token_as_number_is_a_bad_answer() {
        let e = parse_token_response(&answer(200, r#"{"access_token":12345}"#), "x").unwrap_err();
        assert!(e.is_transient());
        assert!(e.to_string().contains("`access_token` is not a string"));
    }

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        assert_eq!(form_encode("a:b%c+d e"), "a%3Ab%25c%2Bd+e");
    }
}
