//! `http_json`: token APIs shaped like Vandar's and Saba's (a JSON login, optionally a JSON
//! refresh with a rotating refresh token) described in the config instead of in code.
//!
//! Bodies are JSON templates whose strings may hold `{{name}}` placeholders for the
//! credential's secrets and `{{refresh_token}}`; answers are read with JSON pointers.

use std::time::Duration;

use serde_json::Value;

use super::{Answer, AnswerExt, Failure, FetchError, Fetched, Provider, RefreshUpdate};
use crate::net::HttpClient;
use crate::secret::Secret;

#[derive(Clone, Debug, PartialEq)]
pub struct HttpJson {
    pub login: Request,
    pub refresh: Option<Request>,
    /// Placeholder name → secret, e.g. `password`.
    pub secrets: Vec<(String, Secret)>,
    pub token_pointer: String,
    pub refresh_token_pointer: Option<String>,
    pub expires_in_pointer: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub url: String,
    pub body: Value,
}

pub const REFRESH_PLACEHOLDER: &str = "refresh_token";
pub const DEFAULT_TOKEN_POINTER: &str = "/access_token";

impl HttpJson {
    fn render(&self, body: &Value, refresh_token: Option<&Secret>) -> Value {
        render(body, &|name| {
            if name == REFRESH_PLACEHOLDER {
                return refresh_token.map(|r| r.expose().to_owned());
            }
            self.secrets
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.expose().to_owned())
        })
    }

    async fn login(&self, http: &HttpClient) -> Result<Fetched, Failure> {
        let body = self.render(&self.login.body, None);
        let answer = http.post_json(&self.login.url, &body).await?;
        self.parse(&answer, "login")
            .map_err(|e| self.salvaging(e, &answer))
    }

    /// Sends the refresh request; the API's own rejection of the token is a
    /// `RefreshRejected`, which the caller answers with a login.
    async fn refresh(
        &self,
        http: &HttpClient,
        request: &Request,
        current: &Secret,
    ) -> Result<Fetched, Failure> {
        let body = self.render(&request.body, Some(current));
        let answer = http.post_json(&request.url, &body).await?;
        if refresh_is_rejected(&answer) {
            return Err(FetchError::RefreshRejected {
                status: answer.status,
                message: super::provider_message(&answer),
                login_configured: true,
            }
            .into());
        }
        self.parse(&answer, "refresh")
            .map_err(|e| self.salvaging(e, &answer))
    }

    /// `error`, keeping a rotated refresh token the answer carries at its pointer.
    fn salvaging(&self, error: FetchError, answer: &Answer) -> Failure {
        match &self.refresh_token_pointer {
            Some(p) if self.uses_refresh_chain() => Failure::salvaging(error, answer, p),
            _ => error.into(),
        }
    }

    /// Reads the token, refresh token and lifetime at the configured pointers.
    pub fn parse(&self, answer: &Answer, flow: &'static str) -> Result<Fetched, FetchError> {
        if !answer.is_success() {
            if super::is_block_page(answer) {
                return Err(super::blocked(answer, "the API"));
            }
            return Err(answer.error(super::provider_message(answer)));
        }
        let v = answer.json()?;
        let token = token_at(answer, &v, &self.token_pointer)?;
        let refresh = match &self.refresh_token_pointer {
            Some(p) if v.pointer(p).is_some_and(|r| !r.is_null()) => {
                RefreshUpdate::Rotated(token_at(answer, &v, p)?)
            }
            _ => RefreshUpdate::Unchanged,
        };
        let expires_in = self
            .expires_in_pointer
            .as_deref()
            .and_then(|p| v.pointer(p))
            .and_then(|x| super::expires_in(&serde_json::json!({ "expires_in": x })));
        Ok(Fetched {
            token,
            token_type: "Bearer".into(),
            expires_in,
            refresh,
            flow,
        })
    }
}

fn token_at(answer: &Answer, v: &Value, pointer: &str) -> Result<Secret, FetchError> {
    let bad = |reason: String| FetchError::BadAnswer {
        status: answer.status,
        reason,
    };
    match v.pointer(pointer) {
        None | Some(Value::Null) => Err(bad(format!("the answer has nothing at `{pointer}`"))),
        Some(Value::String(s)) => {
            crate::token::validate_token(s).map_err(|e| bad(format!("`{pointer}`: {e}")))
        }
        Some(_) => Err(bad(format!("`{pointer}` is not a string"))),
    }
}

/// Replaces `{{name}}` in every string of `template` with `lookup(name)`.
pub fn render(template: &Value, lookup: &dyn Fn(&str) -> Option<String>) -> Value {
    match template {
        Value::String(s) => Value::String(substitute(s, lookup)),
        Value::Array(items) => Value::Array(items.iter().map(|i| render(i, lookup)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render(v, lookup)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn substitute(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        match lookup(after[..end].trim()) {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[start..start + end + 4]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Every placeholder name used in `template`, for config validation.
pub fn placeholders(template: &Value) -> Vec<String> {
    // `render` takes `Fn`, so names are collected through a cell.
    let found = std::cell::RefCell::new(Vec::new());
    let _ = render(template, &|name| {
        found.borrow_mut().push(name.to_owned());
        None
    });
    let mut found = found.into_inner();
    found.sort();
    found.dedup();
    found
}

impl Provider for HttpJson {
    fn documented_lifetime(&self) -> Option<Duration> {
        None
    }

    fn uses_refresh_chain(&self) -> bool {
        self.refresh.is_some() && self.refresh_token_pointer.is_some()
    }

    fn secrets(&self) -> Vec<&Secret> {
        self.secrets.iter().map(|(_, s)| s).collect()
    }

    fn identity(&self, h: &mut sha2::Sha256) {
        use super::identity::{debug, display, secret, sep, text};
        text(h, &self.login.url);
        sep(h);
        display(h, &self.login.body);
        sep(h);
        debug(h, self.refresh.as_ref().map(|r| &r.url));
        sep(h);
        for (i, (name, value)) in self.secrets.iter().enumerate() {
            if i > 0 {
                sep(h);
            }
            text(h, name);
            text(h, "=");
            secret(h, value);
        }
    }

    fn plan(&self) -> String {
        let refresh = match &self.refresh {
            Some(r) => format!(
                ", refresh at {} (falling back to login when rejected)",
                r.url
            ),
            None => String::new(),
        };
        format!(
            "http_json: login at {}{refresh}; token at {}",
            self.login.url, self.token_pointer
        )
    }

    async fn fetch(
        &self,
        http: &HttpClient,
        refresh_token: Option<&Secret>,
    ) -> Result<Fetched, Failure> {
        let (Some(request), Some(current)) = (&self.refresh, refresh_token) else {
            return self.login(http).await;
        };
        let login = move || self.login(http);
        super::fallback::refresh_or_login(self.refresh(http, request, current), Some(login)).await
    }
}

/// The API's own verdict on a refresh token: 401, or a JSON 400/422. A 403/407/451 or a
/// non-JSON 4xx is a block page in front of the API, which never saw the token.
pub fn refresh_is_rejected(answer: &Answer) -> bool {
    answer.status == 401
        || (matches!(answer.status, 400 | 422) && super::is_json_object(&answer.body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider() -> HttpJson {
        HttpJson {
            login: Request {
                url: "http://x/login".into(),
                body: json!({"username": "alice", "password": "{{password}}"}),
            },
            refresh: Some(Request {
                url: "http://x/refresh".into(),
                body: json!({"refresh": "{{ refresh_token }}"}),
            }),
            secrets: vec![("password".into(), Secret::new("p@ss {w}"))],
            token_pointer: "/access".into(),
            refresh_token_pointer: Some("/refresh".into()),
            expires_in_pointer: Some("/data/ttl".into()),
        }
    }

    #[test]
    fn bodies_are_rendered_with_secrets_and_the_refresh_token() {
        let p = provider();
        assert_eq!(
            p.render(&p.login.body, None),
            json!({"username": "alice", "password": "p@ss {w}"})
        );
        let rt = Secret::new("r1");
        assert_eq!(
            p.render(&p.refresh.as_ref().unwrap().body, Some(&rt)),
            json!({"refresh": "r1"})
        );
    }

    #[test]
    fn answers_are_read_at_the_pointers() {
        let f = provider()
            .parse(
                &Answer::fake(
                    200,
                    r#"{"access":"a.b.c","refresh":"r2","data":{"ttl":300}}"#,
                ),
                "login",
            )
            .unwrap();
        assert_eq!(f.token.expose(), "a.b.c");
        assert_eq!(f.refresh, RefreshUpdate::Rotated(Secret::new("r2")));
        assert_eq!(f.expires_in, Some(Duration::from_secs(300)));
        let e = provider()
            .parse(&Answer::fake(200, r#"{"token":"x"}"#), "login")
            .unwrap_err();
        assert!(e.to_string().contains("nothing at `/access`"), "{e}");
    }

    #[test]
    fn drf_style_errors_show_their_detail() {
        let e = provider()
            .parse(
                &Answer::fake(
                    401,
                    r#"{"detail":"No active account found with the given credentials"}"#,
                ),
                "login",
            )
            .unwrap_err();
        assert!(e.to_string().contains("No active account found"), "{e}");
    }

    #[test]
    fn only_the_apis_verdict_rejects_a_refresh() {
        for (status, body, dead) in [
            (401, "", true),
            (401, "<html>401</html>", true),
            (400, r#"{"detail":"token expired"}"#, true),
            (
                422,
                r#"{"message":"invalid","errors":{"refresh":["bad"]}}"#,
                true,
            ),
            (400, "<html>bad request</html>", false),
            (403, r#"{"detail":"forbidden"}"#, false),
            (403, "<html>forbidden</html>", false),
            (451, "", false),
            (429, r#"{"detail":"slow down"}"#, false),
            (500, r#"{"detail":"oops"}"#, false),
        ] {
            assert_eq!(
                refresh_is_rejected(&Answer::fake(status, body)),
                dead,
                "HTTP {status} {body}"
            );
        }
    }

    #[test]
    fn placeholders_are_listed() {
        assert_eq!(
            placeholders(&json!({"a": ["{{x}} and {{ y }}"], "b": {"c": "{{x}}"}})),
            ["x", "y"]
        );
    }
}
