//! yaVapteke (pharmacy API, Russia): OAuth2 client_credentials by form POST, answering an
//! opaque one-hour token. The secret's form field name is configurable (docs disagree).

use std::time::Duration;

use super::{Failure, Fetched, Provider, oauth2};
use crate::net::HttpClient;
use crate::secret::Secret;

pub const DEFAULT_TOKEN_URL: &str = "https://yavapteke.ru/YavaptekeAPI/connect/token";
pub const DOCUMENTED_LIFETIME: Duration = Duration::from_secs(3600);
/// The examples send `client_secret` (the OAuth2 name); the parameter table says `secret`.
pub const DEFAULT_SECRET_PARAM: &str = "client_secret";

#[derive(Clone, Debug, PartialEq)]
pub struct Yavapteke {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub client_secret_param: String,
}

impl Provider for Yavapteke {
    fn documented_lifetime(&self) -> Option<Duration> {
        Some(DOCUMENTED_LIFETIME)
    }

    fn secrets(&self) -> Vec<&Secret> {
        vec![&self.client_secret]
    }

    fn plan(&self) -> String {
        format!(
            "yavapteke at {}: client_credentials for client {} (secret sent as `{}`)",
            self.token_url, self.client_id, self.client_secret_param
        )
    }

    async fn fetch(&self, http: &HttpClient, _: Option<&Secret>) -> Result<Fetched, Failure> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            (
                self.client_secret_param.as_str(),
                self.client_secret.expose(),
            ),
        ];
        let answer = http.post_form(&self.token_url, &form, None).await?;
        Ok(oauth2::parse_token_response(&answer, "client_credentials")?)
    }
}
