//! Saba Payamak's authenticate call, as the live API answers (PROVIDERS.md, "In reality"):
//! request keys in any case, an envelope with a numeric `status`, camelCase `data` with
//! `token`, and `errors` as `null` or `{message, code, field, url}` objects carrying the
//! vendor's result codes. `saba_seed_shape` switches to the documented shape instead
//! (PascalCase keys matched exactly, `status` as a string, `data.Token`, string errors). The
//! JWT lives `TokenValidDay` days unless the config caps it.

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

/// One entry of `errors`: its text, and the vendor's result code if it has one.
struct ErrorItem<'a> {
    message: &'a str,
    code: Option<i64>,
    field: Option<&'a str>,
}

fn item<'a>(message: &'a str, code: Option<i64>, field: Option<&'a str>) -> ErrorItem<'a> {
    ErrorItem {
        message,
        code,
        field,
    }
}

fn envelope_error(seed: bool, status: StatusCode, message: &str, errors: &[ErrorItem]) -> String {
    if seed {
        let errors: Vec<&str> = errors.iter().map(|e| e.message).collect();
        return json!({
            "status": status.as_str(),
            "message": message,
            "data": null,
            "errors": errors,
        })
        .to_string();
    }
    let errors: Vec<Value> = errors
        .iter()
        .map(|e| json!({ "message": e.message, "code": e.code, "field": e.field, "url": null }))
        .collect();
    json!({
        "status": status.as_u16(),
        "message": message,
        "data": null,
        "errors": if errors.is_empty() { Value::Null } else { Value::Array(errors) },
    })
    .to_string()
}

pub(super) struct Authenticate;

/// Field names are matched in any case, as the live ASP.NET backend does; with
/// `saba_seed_shape` exactly as documented (PascalCase), which catches a client that drifts.
pub(super) enum Request {
    /// Not declared as JSON: ASP.NET refuses it before looking at the body.
    NotJson,
    Fields {
        username: Option<String>,
        password: Option<String>,
        virtual_number: Option<String>,
        /// Only a JSON integer counts; `"15"` would not bind to an `int`.
        token_valid_day: Option<i64>,
        /// A key was not in the documented PascalCase (refused under `saba_seed_shape`).
        loose_case: bool,
    },
}

impl Authenticate {
    fn body(config: &EmulatorConfig, token: Value) -> String {
        if config.saba_seed_shape {
            return json!({
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
            .to_string();
        }
        json!({
            "status": 200,
            "message": DONE,
            "id": 1,
            "data": {
                "id": 1,
                "firstName": "Saba",
                "lastName": "Emulator",
                "username": config.saba_username,
                "domain": "your.domain.com",
                "virtualNumber": config.saba_virtual_number,
                "token": token,
            },
            "errors": null,
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
        let mut loose_case = false;
        let mut get = |name: &str| {
            let obj = body.as_object()?;
            obj.get(name).or_else(|| {
                let found = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))?;
                loose_case = true;
                Some(found.1)
            })
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let username = text(get("Username"));
        let password = text(get("Password"));
        let virtual_number = text(get("VirtualNumber"));
        let token_valid_day = get("TokenValidDay").and_then(Value::as_i64);
        Request::Fields {
            username,
            password,
            virtual_number,
            token_valid_day,
            loose_case,
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
        let seed = config.saba_seed_shape;
        let Request::Fields {
            mut username,
            mut password,
            mut virtual_number,
            mut token_valid_day,
            loose_case,
        } = request
        else {
            return reply(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Self::error_body(config, StatusCode::UNSUPPORTED_MEDIA_TYPE),
                false,
            );
        };
        if seed && loose_case {
            // The documented binding is exact: other spellings are simply not seen.
            (username, password, virtual_number, token_valid_day) = (None, None, None, None);
        }
        let mut errors = Vec::new();
        for (value, message, field) in [
            (&username, "The Username field is required.", "username"),
            (&password, "The Password field is required.", "password"),
            (
                &virtual_number,
                "The VirtualNumber field is required.",
                "virtualNumber",
            ),
        ] {
            if value.is_none() {
                errors.push(item(message, None, Some(field)));
            }
        }
        let days = token_valid_day
            .filter(|days| (1..=365).contains(days))
            .and_then(|days| u64::try_from(days).ok());
        if days.is_none() {
            errors.push(item(
                "TokenValidDay must be between 1 and 365",
                None,
                Some("tokenValidDay"),
            ));
        }
        let Some(days) = days.filter(|_| errors.is_empty()) else {
            let body = envelope_error(seed, StatusCode::BAD_REQUEST, INVALID_INPUT, &errors);
            return reply(StatusCode::BAD_REQUEST, body, false);
        };
        if username.as_deref() != Some(&config.saba_username)
            || password.as_deref() != Some(&config.saba_password)
        {
            return reply(
                StatusCode::UNAUTHORIZED,
                Self::error_body(config, StatusCode::UNAUTHORIZED),
                false,
            );
        }
        if virtual_number.as_deref() != Some(&config.saba_virtual_number) {
            let body = envelope_error(
                seed,
                StatusCode::UNAUTHORIZED,
                WRONG_CREDENTIALS,
                &[item(
                    "VirtualNumber is not assigned to this user",
                    Some(4003),
                    Some("virtualNumber"),
                )],
            );
            return reply(StatusCode::UNAUTHORIZED, body, false);
        }
        let token = state.issued(jwt::jwt("1", Self::lifetime(config, days)));
        reply(StatusCode::OK, Self::body(config, token.into()), false)
    }

    /// Tampered answers carry a token as if `TokenValidDay` had been 30 (tokend's default).
    fn mint(config: &EmulatorConfig) -> String {
        jwt::jwt("1", Self::lifetime(config, 30))
    }

    fn success_body(
        config: &EmulatorConfig,
        _state: &mut State,
        _request: Option<&Request>,
        token: Value,
    ) -> String {
        Self::body(config, token)
    }

    fn error_body(config: &EmulatorConfig, status: StatusCode) -> String {
        let seed = config.saba_seed_shape;
        match status {
            StatusCode::UNAUTHORIZED => envelope_error(
                seed,
                status,
                WRONG_CREDENTIALS,
                &[item(
                    "Username or password is incorrect",
                    Some(4001),
                    Some("password"),
                )],
            ),
            // ASP.NET Core's own problem details, before the controller runs.
            StatusCode::UNSUPPORTED_MEDIA_TYPE => json!({
                "type": "https://tools.ietf.org/html/rfc7231#section-6.5.13",
                "title": "Unsupported Media Type",
                "status": 415,
            })
            .to_string(),
            s if s.is_client_error() => envelope_error(seed, s, INVALID_INPUT, &[]),
            s => envelope_error(seed, s, s.canonical_reason().unwrap_or("Error"), &[]),
        }
    }
}
