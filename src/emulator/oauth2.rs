//! A generic OAuth2 token endpoint: the client_credentials (RFC 6749 §4.4), password (§4.3)
//! and refresh_token (§6) grants, with client authentication by form fields or by HTTP Basic
//! over form-url-encoded id and secret. Refresh tokens rotate and are single-use (a replay is
//! `invalid_grant` and counted, as for Vandar).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::state::State;
use super::wire::{Api, content_type_is, form_decode, form_fields, json as reply};
use super::yavapteke::{oauth_error, oauth_error_for};
use super::{EmulatorConfig, Endpoint, jwt};

pub(super) struct Token;

pub(super) const POST: &str = "client_secret_post";
pub(super) const BASIC: &str = "client_secret_basic";

// One short-lived value per request: boxing the form would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Request {
    /// Not a form, or a parameter repeated.
    Malformed,
    Form {
        grant_type: Option<String>,
        scope: Option<String>,
        /// From the Authorization header: `Some(None)` when it is Basic but undecodable.
        basic: Option<Option<(String, String)>>,
        client_id: Option<String>,
        client_secret: Option<String>,
        refresh_token: Option<String>,
        username: Option<String>,
        password: Option<String>,
    },
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, per RFC 6749 §2.3.1. `None` if the
/// header is not Basic at all, `Some(None)` if it is Basic but broken.
fn basic_credentials(headers: &HeaderMap) -> Option<Option<(String, String)>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    Some((|| {
        let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
        // The encoded id cannot hold a raw ':', so the first one is the separator.
        let (id, secret) = decoded.split_once(':')?;
        Some((form_decode(id)?, form_decode(secret)?))
    })())
}

impl Token {
    fn body(
        config: &EmulatorConfig,
        token: impl serde::Serialize,
        scope: Option<&str>,
        refresh: Option<&str>,
    ) -> String {
        let mut body = json!({
            "access_token": token,
            "expires_in": jwt::lifetime_secs(config.oauth2_lifetime),
            "token_type": "Bearer",
        });
        if let Some(scope) = scope {
            body["scope"] = scope.into();
        }
        if let Some(refresh) = refresh {
            body["refresh_token"] = refresh.into();
        }
        body.to_string()
    }

    /// Spends a presented refresh token (single use; no expiry here).
    fn redeem(state: &mut State, token: Option<&str>) -> bool {
        state.redeem_refresh_token(token, None, false).is_ok()
    }

    fn invalid_client(basic_attempted: bool) -> Response {
        let body = json!({
            "error": "invalid_client",
            "error_description": "client authentication failed",
        });
        let mut response = reply(StatusCode::UNAUTHORIZED, body.to_string(), true);
        // RFC 6749 §5.2: a failed Basic attempt must be answered with the challenge.
        if basic_attempted {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="tokend-emulator""#),
            );
        }
        response
    }
}

impl Api for Token {
    const ENDPOINT: Endpoint = Endpoint::OAuth2;
    const NO_STORE: bool = true;
    type Request = Request;

    fn parse(headers: &HeaderMap, body: &[u8]) -> Request {
        if !content_type_is(headers, "application/x-www-form-urlencoded") {
            return Request::Malformed;
        }
        let names = [
            "grant_type",
            "scope",
            "client_id",
            "client_secret",
            "refresh_token",
            "username",
            "password",
        ];
        match form_fields(body, names) {
            Ok(
                [
                    grant_type,
                    scope,
                    client_id,
                    client_secret,
                    refresh_token,
                    username,
                    password,
                ],
            ) => Request::Form {
                grant_type,
                scope,
                basic: basic_credentials(headers),
                client_id,
                client_secret,
                refresh_token,
                username,
                password,
            },
            Err(_) => Request::Malformed,
        }
    }

    fn observe(request: &Request, state: &mut State) {
        let (auth, scope) = match request {
            Request::Malformed => (None, None),
            Request::Form {
                basic,
                client_secret,
                scope,
                ..
            } => {
                let auth = if basic.is_some() {
                    Some(BASIC)
                } else {
                    client_secret.as_ref().map(|_| POST)
                };
                (auth, scope.clone())
            }
        };
        state.last_oauth2_auth = auth;
        state.last_oauth2_scope = scope;
    }

    fn answer(config: &EmulatorConfig, state: &mut State, request: Request) -> Response {
        let bad_request = |error| reply(StatusCode::BAD_REQUEST, oauth_error(error), true);
        let Request::Form {
            grant_type,
            scope,
            basic,
            client_id,
            client_secret,
            refresh_token,
            username,
            password,
        } = request
        else {
            return bad_request("invalid_request");
        };
        let Some(grant_type) = grant_type else {
            return bad_request("invalid_request");
        };
        let basic_attempted = basic.is_some();
        let (id, secret) = match (basic, client_secret) {
            // RFC 6749 §2.3: a client must not use more than one authentication method.
            (Some(_), Some(_)) => return bad_request("invalid_request"),
            (Some(Some((id, secret))), None) => {
                // A form client_id beside Basic is tolerated only if it names the same client.
                if client_id.as_ref().is_some_and(|form_id| *form_id != id) {
                    return bad_request("invalid_request");
                }
                (Some(id), Some(secret))
            }
            (Some(None), None) => (None, None),
            (None, secret) => (client_id, secret),
        };
        if id.as_deref() != Some(&config.oauth2_client_id)
            || secret.as_deref() != Some(&config.oauth2_client_secret)
        {
            return Self::invalid_client(basic_attempted);
        }
        let refresh = match grant_type.as_str() {
            "client_credentials" => None,
            "password" => {
                if username.as_deref() != Some(&config.oauth2_username)
                    || password.as_deref() != Some(&config.oauth2_password)
                {
                    return bad_request("invalid_grant");
                }
                Some(state.issue_refresh_token(config.oauth2_lifetime))
            }
            "refresh_token" => {
                if !Self::redeem(state, refresh_token.as_deref()) {
                    return bad_request("invalid_grant");
                }
                Some(state.issue_refresh_token(config.oauth2_lifetime))
            }
            _ => return bad_request("unsupported_grant_type"),
        };
        let token = state.issued(Self::mint(config));
        let scope = scope.as_deref().filter(|s| !s.is_empty());
        reply(
            StatusCode::OK,
            Self::body(config, &token, scope, refresh.as_deref()),
            true,
        )
    }

    fn mint(config: &EmulatorConfig) -> String {
        jwt::jwt(&config.oauth2_client_id, config.oauth2_lifetime)
    }

    /// A refresh grant spends a valid presented token and sends a valid successor; a
    /// password grant starts a chain; client_credentials has none.
    fn success_body(
        config: &EmulatorConfig,
        state: &mut State,
        request: Option<&Request>,
        token: serde_json::Value,
    ) -> String {
        let refresh = match request {
            Some(Request::Form {
                grant_type: Some(g),
                refresh_token,
                ..
            }) if g == "refresh_token" => Some(if Self::redeem(state, refresh_token.as_deref()) {
                state.issue_refresh_token(config.oauth2_lifetime)
            } else {
                state.issued(jwt::refresh_token())
            }),
            Some(Request::Form {
                grant_type: Some(g),
                ..
            }) if g == "password" => Some(state.issue_refresh_token(config.oauth2_lifetime)),
            _ => None,
        };
        let scope = state.last_oauth2_scope.clone();
        Self::body(config, token, scope.as_deref(), refresh.as_deref())
    }

    fn error_body(_config: &EmulatorConfig, status: StatusCode) -> String {
        if status == StatusCode::UNAUTHORIZED {
            json!({
                "error": "invalid_client",
                "error_description": "client authentication failed",
            })
            .to_string()
        } else {
            oauth_error_for(status)
        }
    }
}
