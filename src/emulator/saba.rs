//! Saba Payamak's authenticate call: PascalCase JSON in, an envelope whose `status` is a
//! string out, and a JWT that lives `TokenValidDay` days (unless the config caps it).

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::state::State;
use super::wire::{Api, content_type_is, json as reply};
use super::{EmulatorConfig, Endpoint, jwt};

/// "Done successfully", verbatim from the Saba page.
const DONE: &str = "با موفقیت انجام شد";
/// The Saba page shows no error text; Vandar's "wrong username or password entered" is the
/// closest original Persian wording.
const WRONG_CREDENTIALS: &str = super::vandar::WRONG_CREDENTIALS;
/// "The submitted information is invalid."
const INVALID_INPUT: &str = "اطلاعات ارسالی نامعتبر است";

const DAY: u64 = 86_400;

pub(super) struct Authenticate;

/// Field names are matched exactly as documented (PascalCase). The real ASP.NET backend is
/// likely case-insensitive; being strict here catches a client that drifts from the docs.
pub(super) enum Request {
    /// Not declared as JSON: ASP.NET refuses it before looking at the body.
    NotJson,
    Fields {
        username: Option<String>,
        password: Option<String>,
        virtual_number: Option<String>,
        /// Only a JSON integer counts; `"15"` would not bind to an `int`.
        token_valid_day: Option<i64>,
    },
}

fn envelope_error(status: StatusCode, message: &str, errors: &[&str]) -> String {
    json!({
        "status": status.as_str(),
        "message": message,
        "data": null,
        "errors": errors,
    })
    .to_string()
}

impl Authenticate {
    fn body(config: &EmulatorConfig, token: &str) -> String {
        json!({
            "status": "200",
            "message": DONE,
            "id": 1,
            "data": {
                "Id": "1",
                "FirstName": "Saba",
                "LastName": "Emulator",
                "Username": config.saba_username,
                "Domain": "your.domain.com",
                "VirtualNumber": config.saba_virtual_number,
                "Token": token,
            },
            "errors": [],
        })
        .to_string()
    }

    fn lifetime(config: &EmulatorConfig, days: u64) -> Duration {
        let asked = Duration::from_secs(days * DAY);
        config.saba_lifetime_cap.map_or(asked, |cap| cap.min(asked))
    }
}

impl Api for Authenticate {
    const ENDPOINT: Endpoint = Endpoint::Saba;
    type Request = Request;

    fn parse(headers: &HeaderMap, body: &[u8]) -> Request {
        if !content_type_is(headers, "application/json") {
            return Request::NotJson;
        }
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = |name| body.get(name).and_then(Value::as_str).map(str::to_owned);
        Request::Fields {
            username: text("Username"),
            password: text("Password"),
            virtual_number: text("VirtualNumber"),
            token_valid_day: body.get("TokenValidDay").and_then(Value::as_i64),
        }
    }

    fn observe(request: &Request, state: &mut State) {
        state.last_saba_token_valid_day = match request {
            Request::NotJson => None,
            Request::Fields {
                token_valid_day, ..
            } => *token_valid_day,
        };
    }

    /// A bad `TokenValidDay` gets HTTP 400 with the envelope (not a 200 envelope): an
    /// invalid request is the caller's error whatever the credentials.
    fn answer(config: &EmulatorConfig, state: &mut State, request: Request) -> Response {
        let Request::Fields {
            username,
            password,
            virtual_number,
            token_valid_day,
        } = request
        else {
            return reply(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Self::error_body(StatusCode::UNSUPPORTED_MEDIA_TYPE),
                false,
            );
        };
        let mut errors = Vec::new();
        for (value, message) in [
            (&username, "The Username field is required."),
            (&password, "The Password field is required."),
            (&virtual_number, "The VirtualNumber field is required."),
        ] {
            if value.is_none() {
                errors.push(message);
            }
        }
        let days = token_valid_day
            .filter(|days| (1..=365).contains(days))
            .and_then(|days| u64::try_from(days).ok());
        if days.is_none() {
            errors.push("TokenValidDay must be between 1 and 365");
        }
        let Some(days) = days.filter(|_| errors.is_empty()) else {
            let body = envelope_error(StatusCode::BAD_REQUEST, INVALID_INPUT, &errors);
            return reply(StatusCode::BAD_REQUEST, body, false);
        };
        if username.as_deref() != Some(&config.saba_username)
            || password.as_deref() != Some(&config.saba_password)
        {
            return reply(
                StatusCode::UNAUTHORIZED,
                Self::error_body(StatusCode::UNAUTHORIZED),
                false,
            );
        }
        if virtual_number.as_deref() != Some(&config.saba_virtual_number) {
            let body = envelope_error(
                StatusCode::UNAUTHORIZED,
                WRONG_CREDENTIALS,
                &["VirtualNumber is not assigned to this user"],
            );
            return reply(StatusCode::UNAUTHORIZED, body, false);
        }
        let token = state.issued(jwt::jwt("1", Self::lifetime(config, days)));
        reply(StatusCode::OK, Self::body(config, &token), false)
    }

    /// Tampered answers carry a token as if `TokenValidDay` had been 30 (tokend's default).
    fn mint(config: &EmulatorConfig) -> String {
        jwt::jwt("1", Self::lifetime(config, 30))
    }

    fn success_body(config: &EmulatorConfig, _state: &mut State, token: &str) -> String {
        Self::body(config, token)
    }

    fn error_body(status: StatusCode) -> String {
        match status {
            StatusCode::UNAUTHORIZED => envelope_error(
                status,
                WRONG_CREDENTIALS,
                &["Username or password is incorrect"],
            ),
            // ASP.NET Core's own problem details, before the controller runs.
            StatusCode::UNSUPPORTED_MEDIA_TYPE => json!({
                "type": "https://tools.ietf.org/html/rfc7231#section-6.5.13",
                "title": "Unsupported Media Type",
                "status": 415,
            })
            .to_string(),
            s if s.is_client_error() => envelope_error(s, INVALID_INPUT, &[]),
            s => envelope_error(s, s.canonical_reason().unwrap_or("Error"), &[]),
        }
    }
}
