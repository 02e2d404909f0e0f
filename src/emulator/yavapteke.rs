//! yaVapteke's `connect/token` (an IdentityServer): OAuth2 client_credentials over a form,
//! with the secret accepted under both names the documentation uses.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::state::State;
use super::wire::{Api, content_type_is, form_fields, json as reply};
use super::{EmulatorConfig, Endpoint, jwt};

pub(super) struct Token;

pub(super) enum Request {
    /// Not a form, or a parameter repeated: IdentityServer's `invalid_request`.
    Malformed,
    Form {
        client_id: Option<String>,
        /// The secret and the field name it came in (`client_secret` wins if both are sent).
        secret: Option<(String, &'static str)>,
        grant_type: Option<String>,
    },
}

pub(super) fn oauth_error(error: &str) -> String {
    json!({ "error": error }).to_string()
}

/// The RFC 6749 §5.2 error code a status most plausibly carries.
pub(super) fn oauth_error_for(status: StatusCode) -> String {
    oauth_error(match status {
        StatusCode::UNAUTHORIZED => "invalid_client",
        StatusCode::FORBIDDEN => "unauthorized_client",
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            "temporarily_unavailable"
        }
        s if s.is_server_error() => "server_error",
        _ => "invalid_request",
    })
}

impl Token {
    fn body(config: &EmulatorConfig, token: impl serde::Serialize) -> String {
        json!({
            "access_token": token,
            "expires_in": jwt::lifetime_secs(config.yavapteke_lifetime),
            "token_type": "Bearer",
        })
        .to_string()
    }
}

impl Api for Token {
    const ENDPOINT: Endpoint = Endpoint::Yavapteke;
    const NO_STORE: bool = true;
    type Request = Request;

    fn parse(headers: &HeaderMap, body: &[u8]) -> Request {
        if !content_type_is(headers, "application/x-www-form-urlencoded") {
            return Request::Malformed;
        }
        match form_fields(body, ["client_id", "client_secret", "secret", "grant_type"]) {
            Ok([client_id, client_secret, secret, grant_type]) => Request::Form {
                client_id,
                secret: client_secret
                    .map(|s| (s, "client_secret"))
                    .or(secret.map(|s| (s, "secret"))),
                grant_type,
            },
            Err(_) => Request::Malformed,
        }
    }

    fn observe(request: &Request, state: &mut State) {
        state.last_yavapteke_secret_field = match request {
            Request::Form {
                secret: Some((_, field)),
                ..
            } => Some(field),
            _ => None,
        };
    }

    /// The client is checked before the grant type, as IdentityServer does. A missing
    /// `grant_type` is accepted: the documentation marks it optional and its example omits it.
    fn answer(config: &EmulatorConfig, state: &mut State, request: Request) -> Response {
        let bad_request = |error| reply(StatusCode::BAD_REQUEST, oauth_error(error), true);
        let Request::Form {
            client_id,
            secret,
            grant_type,
        } = request
        else {
            return bad_request("invalid_request");
        };
        let client_ok = client_id.as_deref() == Some(&config.yavapteke_client_id)
            && secret.as_ref().map(|(s, _)| s.as_str()) == Some(&config.yavapteke_client_secret);
        if !client_ok {
            return bad_request("invalid_client");
        }
        if grant_type.is_some_and(|g| g != "client_credentials") {
            return bad_request("unsupported_grant_type");
        }
        let token = state.issued(Self::mint(config));
        reply(StatusCode::OK, Self::body(config, &token), true)
    }

    fn mint(_config: &EmulatorConfig) -> String {
        jwt::opaque_uuid()
    }

    fn success_body(
        config: &EmulatorConfig,
        _state: &mut State,
        _request: Option<&Request>,
        token: serde_json::Value,
    ) -> String {
        Self::body(config, token)
    }

    fn error_body(_config: &EmulatorConfig, status: StatusCode) -> String {
        oauth_error_for(status)
    }
}
