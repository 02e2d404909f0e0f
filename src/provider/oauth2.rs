//! Generic OAuth2 (RFC 6749): the client_credentials, refresh_token (rotating, like Vandar's
//! chain) and password grants, client_secret_post/basic/none, optional OIDC discovery of the
//! token endpoint, and the standard token-response parser yaVapteke shares.

use std::time::Duration;

use serde_json::Value;

use super::{Answer, AnswerExt, Failure, FetchError, Fetched, Provider, RefreshUpdate};
use crate::net::HttpClient;
use crate::secret::Secret;

#[derive(Clone, Debug, PartialEq)]
pub struct OAuth2 {
    pub endpoint: TokenEndpoint,
    pub client_id: String,
    /// `None` only with `auth: none` (public clients).
    pub client_secret: Option<Secret>,
    pub auth: ClientAuth,
    pub grant: Grant,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
    /// Extra form parameters some servers require, sent as given.
    pub params: Vec<(String, String)>,
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    #[default]
    ClientSecretPost,
    ClientSecretBasic,
    /// A public client: `client_id` in the form, no secret.
    None,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TokenEndpoint {
    Url(String),
    /// Looked up at `{issuer}/.well-known/openid-configuration` before each fetch, so an
    /// identity provider that moves its endpoint is followed without a restart.
    Issuer(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Grant {
    ClientCredentials,
    /// The configured refresh token seeds a chain that lives in state, exactly like Vandar's.
    RefreshToken {
        seed: Secret,
    },
    /// Logs in with the resource owner's credentials, then uses any refresh token the server
    /// returns until it is rejected, and logs in again.
    Password {
        username: String,
        password: Secret,
    },
}

impl Grant {
    pub fn name(&self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::RefreshToken { .. } => "refresh_token",
            Grant::Password { .. } => "password",
        }
    }
}

impl OAuth2 {
    async fn token_url(&self, http: &HttpClient) -> Result<String, FetchError> {
        match &self.endpoint {
            TokenEndpoint::Url(u) => Ok(u.clone()),
            TokenEndpoint::Issuer(issuer) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                parse_discovery(&http.get(&url).await?)
            }
        }
    }

    /// Posts `grant`'s own parameters plus the common ones, authenticating the client.
    async fn post(&self, http: &HttpClient, grant: &[(&str, &str)]) -> Result<Answer, FetchError> {
        let url = self.token_url(http).await?;
        let mut form: Vec<(&str, &str)> = grant.to_vec();
        for (key, value) in [
            ("scope", &self.scope),
            ("audience", &self.audience),
            ("resource", &self.resource),
        ] {
            if let Some(v) = value {
                form.push((key, v));
            }
        }
        for (k, v) in &self.params {
            form.push((k, v));
        }
        let secret = self.client_secret.as_ref().map(Secret::expose);
        let answer = match self.auth {
            ClientAuth::ClientSecretPost => {
                form.push(("client_id", &self.client_id));
                if let Some(s) = secret {
                    form.push(("client_secret", s));
                }
                http.post_form(&url, &form, None).await?
            }
            ClientAuth::ClientSecretBasic => {
                // RFC 6749 §2.3.1: id and secret are form-urlencoded *before* Basic encoding,
                // which most hand-written clients forget (secrets with `:` or `%` then fail).
                let id = form_encode(&self.client_id);
                let secret = form_encode(secret.unwrap_or(""));
                http.post_form(&url, &form, Some((&id, &secret))).await?
            }
            ClientAuth::None => {
                form.push(("client_id", &self.client_id));
                http.post_form(&url, &form, None).await?
            }
        };
        Ok(answer)
    }

    /// Posts a grant and reads the answer; a refresh token in an answer whose access token
    /// is unusable is still handed back, since the server may have rotated the chain.
    async fn grant(
        &self,
        http: &HttpClient,
        grant: &[(&str, &str)],
        flow: &'static str,
    ) -> Result<Fetched, Failure> {
        let answer = self.post(http, grant).await?;
        parse_token_response(&answer, flow)
            .map_err(|e| Failure::salvaging(e, &answer, "/refresh_token"))
    }

    async fn refresh(&self, http: &HttpClient, current: &Secret) -> Result<Fetched, Failure> {
        let grant = [
            ("grant_type", "refresh_token"),
            ("refresh_token", current.expose()),
        ];
        let answer = self.post(http, &grant).await?;
        if !answer.is_success() && is_rejected_grant(&answer) {
            return Err(FetchError::RefreshRejected {
                status: answer.status,
                message: super::provider_message(&answer),
                login_configured: matches!(self.grant, Grant::Password { .. }),
            }
            .into());
        }
        parse_token_response(&answer, "refresh")
            .map_err(|e| Failure::salvaging(e, &answer, "/refresh_token"))
    }
}

/// Only the token endpoint's own verdict ends a chain: `invalid_grant` (RFC 6749 §5.2), or a
/// 401 with a JSON error body (some servers say it that way). A 400/403 page from a proxy
/// or firewall in front of the server is not a verdict.
fn is_rejected_grant(answer: &Answer) -> bool {
    let error = oauth_error(answer);
    error.as_deref() == Some("invalid_grant") || (answer.status == 401 && error.is_some())
}

/// The RFC 6749 §5.2 `error` code of a JSON error body.
fn oauth_error(answer: &Answer) -> Option<String> {
    let v: Value = serde_json::from_slice(&answer.body).ok()?;
    super::get_ci(&v, "error")?.as_str().map(str::to_owned)
}

impl Provider for OAuth2 {
    fn documented_lifetime(&self) -> Option<Duration> {
        None
    }

    fn uses_refresh_chain(&self) -> bool {
        !matches!(self.grant, Grant::ClientCredentials)
    }

    fn refresh_seed(&self) -> Option<&Secret> {
        match &self.grant {
            Grant::RefreshToken { seed } => Some(seed),
            _ => None,
        }
    }

    fn secrets(&self) -> Vec<&Secret> {
        let mut s: Vec<&Secret> = self.client_secret.iter().collect();
        match &self.grant {
            Grant::ClientCredentials => {}
            Grant::RefreshToken { seed } => s.push(seed),
            Grant::Password { password, .. } => s.push(password),
        }
        s
    }

    /// With client_secret_basic, the id and secret as they went in the Authorization header.
    fn encoded_secrets(&self) -> Vec<Secret> {
        use base64::Engine as _;
        match &self.client_secret {
            Some(secret) if self.auth == ClientAuth::ClientSecretBasic => {
                let pair = format!(
                    "{}:{}",
                    form_encode(&self.client_id),
                    form_encode(secret.expose())
                );
                vec![Secret::new(
                    base64::engine::general_purpose::STANDARD.encode(pair),
                )]
            }
            _ => Vec::new(),
        }
    }

    fn identity(&self, h: &mut sha2::Sha256) {
        use super::identity::{debug, debug_joined, secret, sep, text};
        debug(h, &self.endpoint);
        sep(h);
        text(h, &self.client_id);
        sep(h);
        if let Some(s) = &self.client_secret {
            secret(h, s);
        }
        for part in [&self.scope, &self.audience, &self.resource] {
            sep(h);
            debug(h, part);
        }
        sep(h);
        debug(h, &self.params);
        sep(h);
        match &self.grant {
            // The grant's part was hashed in its Debug form (quoted and escaped).
            Grant::ClientCredentials => debug_joined(h, &[]),
            Grant::RefreshToken { seed } => debug_joined(h, &[seed.expose()]),
            Grant::Password { username, password } => {
                debug_joined(h, &[username, password.expose()])
            }
        }
    }

    fn plan(&self) -> String {
        let auth = match self.auth {
            ClientAuth::ClientSecretPost => "client_secret_post",
            ClientAuth::ClientSecretBasic => "client_secret_basic",
            ClientAuth::None => "public client",
        };
        let endpoint = match &self.endpoint {
            TokenEndpoint::Url(u) => u.clone(),
            TokenEndpoint::Issuer(i) => format!("the token endpoint discovered from {i}"),
        };
        let who = match &self.grant {
            Grant::Password { username, .. } => format!(" as {username}"),
            _ => String::new(),
        };
        let scope = self
            .scope
            .as_deref()
            .map(|s| format!(", scope \"{s}\""))
            .unwrap_or_default();
        format!(
            "oauth2 at {endpoint}: {} grant{who} for client {} ({auth}{scope})",
            self.grant.name(),
            self.client_id
        )
    }

    async fn fetch(
        &self,
        http: &HttpClient,
        refresh_token: Option<&Secret>,
    ) -> Result<Fetched, Failure> {
        match &self.grant {
            Grant::ClientCredentials => {
                let mut f = self
                    .grant(
                        http,
                        &[("grant_type", "client_credentials")],
                        "client_credentials",
                    )
                    .await
                    .map_err(|f| Failure::from(f.error))?;
                // RFC 6749 §4.4.3: no refresh token here; ignore one if a server sends it.
                f.refresh = RefreshUpdate::Unchanged;
                Ok(f)
            }
            Grant::RefreshToken { .. } => match refresh_token {
                Some(current) => self.refresh(http, current).await,
                None => Err(FetchError::Misconfigured(
                    "the refresh token chain was rejected and this credential has no other way \
                     to get a token; put a new refresh token in the config"
                        .into(),
                )
                .into()),
            },
            Grant::Password { username, password } => match refresh_token {
                Some(current) => {
                    let login = move || self.login(http, username, password);
                    super::fallback::refresh_or_login(self.refresh(http, current), Some(login))
                        .await
                }
                None => self.login(http, username, password).await,
            },
        }
    }
}

impl OAuth2 {
    async fn login(
        &self,
        http: &HttpClient,
        username: &str,
        password: &Secret,
    ) -> Result<Fetched, Failure> {
        let grant = [
            ("grant_type", "password"),
            ("username", username),
            ("password", password.expose()),
        ];
        self.grant(http, &grant, "password").await
    }
}

pub fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The `token_endpoint` of an OpenID Provider Configuration document.
pub fn parse_discovery(answer: &Answer) -> Result<String, FetchError> {
    if !answer.is_success() {
        return Err(answer.error(super::provider_message(answer)));
    }
    let v = answer.json()?;
    match v.get("token_endpoint").and_then(Value::as_str) {
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
            Ok(url.to_owned())
        }
        _ => Err(FetchError::BadAnswer {
            status: answer.status,
            reason: "the discovery document has no usable `token_endpoint`".into(),
        }),
    }
}

/// The RFC 6749 §5.1 success body (`access_token`, `token_type`, `expires_in`, optional
/// `refresh_token`) or §5.2 error body (`error`, `error_description`).
pub fn parse_token_response(answer: &Answer, flow: &'static str) -> Result<Fetched, FetchError> {
    if !answer.is_success() {
        // A 403 with an RFC 6749 error body (`unauthorized_client`) is the server's verdict;
        // without one it is a page from something in front of the server.
        if super::is_block_page(answer) && oauth_error(answer).is_none() {
            return Err(super::blocked(answer, "the token endpoint"));
        }
        return Err(answer.error(super::provider_message(answer)));
    }
    let v = answer.json()?;
    let token = super::token_field(answer, &v, &["access_token"])?;
    let refresh = match v.get("refresh_token") {
        Some(Value::String(_)) => {
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

    #[test]
    fn only_basic_auth_sends_the_secret_in_another_encoding() {
        let client = |auth, secret: Option<&str>| OAuth2 {
            endpoint: TokenEndpoint::Url("http://x/token".into()),
            client_id: "id:1".into(),
            client_secret: secret.map(Secret::new),
            auth,
            grant: Grant::ClientCredentials,
            scope: None,
            audience: None,
            resource: None,
            params: Vec::new(),
        };
        // RFC 6749 §2.3.1: form-encoded, then Base64 ("id%3A1:s%25+c" here).
        let basic = client(ClientAuth::ClientSecretBasic, Some("s% c")).encoded_secrets();
        assert_eq!(basic, [Secret::new("aWQlM0ExOnMlMjUrYw==")]);
        assert!(
            client(ClientAuth::ClientSecretPost, Some("s"))
                .encoded_secrets()
                .is_empty()
        );
        assert!(
            client(ClientAuth::ClientSecretBasic, None)
                .encoded_secrets()
                .is_empty()
        );
    }

    #[test]
    fn yavapteke_example_answer() {
        let f = parse_token_response(
            &Answer::fake(
                200,
                r#"{"access_token":"08da627f-6773-4112-8355-47c94c7ac717","expires_in":3600,"token_type":"Bearer"}"#,
            ),
            "client_credentials",
        )
        .unwrap();
        assert_eq!(f.token.expose(), "08da627f-6773-4112-8355-47c94c7ac717");
        assert_eq!(f.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(f.token_type, "Bearer");
        assert_eq!(f.refresh, RefreshUpdate::Unchanged);
    }

    #[test]
    fn a_rotated_refresh_token_is_reported() {
        let f = parse_token_response(
            &Answer::fake(
                200,
                r#"{"access_token":"a","refresh_token":"r2","token_type":"bearer"}"#,
            ),
            "refresh",
        )
        .unwrap();
        assert_eq!(f.refresh, RefreshUpdate::Rotated(Secret::new("r2")));
    }

    #[test]
    fn standard_error_body_is_shown() {
        let e = parse_token_response(
            &Answer::fake(
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
    fn only_the_servers_own_verdict_ends_a_chain() {
        let cases = [
            (
                400,
                r#"{"error":"invalid_grant","error_description":"expired"}"#,
                true,
            ),
            (401, r#"{"error":"invalid_client"}"#, true),
            (401, r#"{"error":"invalid_grant"}"#, true),
            (400, r#"{"error":"invalid_request"}"#, false),
            (401, "unauthorized", false),
            (401, "<html>401</html>", false),
            (403, r#"{"error":"invalid_grant"}"#, true),
            (403, "<html>forbidden</html>", false),
            (400, "<html>bad request</html>", false),
            (451, "", false),
        ];
        for (status, body, dead) in cases {
            assert_eq!(
                is_rejected_grant(&Answer::fake(status, body)),
                dead,
                "HTTP {status} {body}"
            );
        }
    }

    #[test]
    fn block_pages_are_transient() {
        for (status, body) in [
            (403, "<html>no</html>"),
            (400, "<h1>x</h1>"),
            (451, ""),
            (407, ""),
        ] {
            let e = parse_token_response(&Answer::fake(status, body), "refresh").unwrap_err();
            assert!(e.is_transient(), "HTTP {status}: {e}");
            assert!(e.to_string().contains("blocked before reaching"), "{e}");
        }
        // The server's own 403 stays a verdict.
        let e = parse_token_response(
            &Answer::fake(403, r#"{"error":"unauthorized_client"}"#),
            "client_credentials",
        )
        .unwrap_err();
        assert!(!e.is_transient(), "{e}");
    }

    #[test]
    fn token_as_number_is_a_bad_answer() {
        let e =
            parse_token_response(&Answer::fake(200, r#"{"access_token":12345}"#), "x").unwrap_err();
        assert!(e.is_transient());
        assert!(e.to_string().contains("`access_token` is not a string"));
    }

    #[test]
    fn discovery_reads_the_token_endpoint() {
        let url = parse_discovery(&Answer::fake(
            200,
            r#"{"issuer":"https://idp","token_endpoint":"https://idp/oauth2/token"}"#,
        ))
        .unwrap();
        assert_eq!(url, "https://idp/oauth2/token");
        assert!(parse_discovery(&Answer::fake(200, r#"{"issuer":"x"}"#)).is_err());
        assert!(parse_discovery(&Answer::fake(404, "")).is_err());
    }

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        assert_eq!(form_encode("a:b%c+d e"), "a%3Ab%25c%2Bd+e");
    }
}
