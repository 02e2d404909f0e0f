//! Vandar's two token flows: v2 login with mobile + password, and the v3 refresh chain
//! whose refresh tokens are single-use and rotate on every call.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::state::State;
use super::wire::{Api, content_type_is, json as reply};
use super::{EmulatorConfig, Endpoint, jwt};

/// "Wrong username or password entered", verbatim from the v2 login page.
pub(super) const WRONG_CREDENTIALS: &str = "نام کاربری یا رمز عبور اشتباه وارد شده است";

/// Laravel answers its own errors (a 5xx, a 429) with a bare `message`.
fn laravel_error(status: StatusCode) -> String {
    let message = match status {
        StatusCode::TOO_MANY_REQUESTS => "Too Many Attempts.",
        s if s.is_server_error() => "Server Error",
        s => s.canonical_reason().unwrap_or("Error"),
    };
    json!({ "message": message }).to_string()
}

/// The request body as JSON, or `Null` when it is not JSON: Laravel then sees no fields.
fn json_body(headers: &HeaderMap, body: &[u8]) -> Value {
    if content_type_is(headers, "application/json") {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    } else {
        Value::Null
    }
}

fn string_field(body: &Value, name: &str) -> Option<String> {
    body.get(name)?.as_str().map(str::to_owned)
}

pub(super) struct Login;

pub(super) struct LoginRequest {
    mobile: Option<String>,
    password: Option<String>,
}

impl Login {
    fn body(config: &EmulatorConfig, token: &str) -> String {
        json!({
            "status": 1,
            "data": { "token": token, "user": profile(&config.vandar_mobile) },
        })
        .to_string()
    }
}

impl Api for Login {
    const ENDPOINT: Endpoint = Endpoint::VandarLogin;
    type Request = LoginRequest;

    fn parse(headers: &HeaderMap, body: &[u8]) -> LoginRequest {
        let body = json_body(headers, body);
        LoginRequest {
            mobile: string_field(&body, "mobile"),
            password: string_field(&body, "password"),
        }
    }

    fn answer(config: &EmulatorConfig, state: &mut State, request: LoginRequest) -> Response {
        let matches = request.mobile.as_deref() == Some(&config.vandar_mobile)
            && request.password.as_deref() == Some(&config.vandar_password);
        if !matches {
            return reply(
                StatusCode::BAD_REQUEST,
                Self::error_body(StatusCode::BAD_REQUEST),
                false,
            );
        }
        let token = state.issued(Self::mint(config));
        reply(StatusCode::OK, Self::body(config, &token), false)
    }

    fn mint(config: &EmulatorConfig) -> String {
        jwt::jwt("29", config.vandar_lifetime)
    }

    fn success_body(config: &EmulatorConfig, _state: &mut State, token: &str) -> String {
        Self::body(config, token)
    }

    fn error_body(status: StatusCode) -> String {
        if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
            json!({ "status": 0, "error": WRONG_CREDENTIALS }).to_string()
        } else {
            laravel_error(status)
        }
    }
}

pub(super) struct Refresh;

/// The documented failure body: not JSON, though served as JSON.
const UNAUTHORIZED: &str = r#"{"unauthorized"}"#;

impl Refresh {
    fn body(config: &EmulatorConfig, access: &str, refresh: &str) -> String {
        json!({
            "token_type": "Bearer",
            "expires_in": jwt::lifetime_secs(config.vandar_lifetime),
            "access_token": access,
            "refresh_token": refresh,
        })
        .to_string()
    }
}

impl Api for Refresh {
    const ENDPOINT: Endpoint = Endpoint::VandarRefresh;
    /// The presented refresh token, if the body had one.
    type Request = Option<String>;

    fn parse(headers: &HeaderMap, body: &[u8]) -> Option<String> {
        string_field(&json_body(headers, body), "refreshtoken")
    }

    fn answer(config: &EmulatorConfig, state: &mut State, request: Option<String>) -> Response {
        if let Err(rejection) = state.redeem_refresh_token(request.as_deref()) {
            tracing::debug!(?rejection, "vandar refresh token refused");
            return reply(StatusCode::UNAUTHORIZED, UNAUTHORIZED.to_owned(), false);
        }
        let access = state.issued(Self::mint(config));
        let refresh = state.issue_refresh_token();
        reply(StatusCode::OK, Self::body(config, &access, &refresh), false)
    }

    fn mint(config: &EmulatorConfig) -> String {
        jwt::jwt("29", config.vandar_lifetime)
    }

    /// The refresh token in a tampered answer is never redeemable: the presented one stays
    /// valid instead, so a client that rightly discards the answer can simply retry, and one
    /// that wrongly keeps the new refresh token is caught by a 401 on its next call.
    fn success_body(config: &EmulatorConfig, state: &mut State, token: &str) -> String {
        let refresh = state.issued(jwt::refresh_token());
        Self::body(config, token, &refresh)
    }

    fn error_body(status: StatusCode) -> String {
        if status == StatusCode::UNAUTHORIZED {
            UNAUTHORIZED.to_owned()
        } else {
            laravel_error(status)
        }
    }
}

/// The profile from the login page's example, with invented values: clients must ignore it,
/// and it is here so they prove they never store or log it.
fn profile(mobile: &str) -> Value {
    let channels = json!({ "sms": true, "email": true, "telegram": false, "notif": true });
    json!({
        "name": "مریم نبیان",
        "fname": "مریم",
        "lname": "نبیان",
        "email": "maryam@example.com",
        "national_code": "0123456789",
        "mobile": mobile,
        "avatar": null,
        "address": null,
        "postal_code": "0123456789",
        "phone_number": null,
        "wallet": 0,
        "blocked_amount": 0,
        "deductible_amount": 0,
        "birthdate": "1372/7/8",
        "birthdate_year": 1372,
        "birthdate_month": 7,
        "birthdate_day": 8,
        "telegram_chat_id": 0,
        "meta": {
            "onboarding": false,
            "notification": {
                "transaction": channels,
                "settlement": channels,
                "ticket": channels,
                "auth": channels,
            },
        },
        "statusBox": {
            "kyc": true,
            "shahkar": false,
            "mobile": "accepted",
            "email": "accepted",
            "personal_information": "accepted",
            "mobile_owner_national_card": false,
        },
        "invitation": null,
        "status": 1,
        "notification_count": 6,
        "is_whats_new_exists": false,
        "tools": { "requestMoney": { "is_enabled": true, "is_created": false } },
        "business_count": 1,
        "created_at": {
            "date": "2020-05-10 11:59:43.000000",
            "timezone_type": 3,
            "timezone": "Asia/Tehran",
        },
        "updated_at": {
            "date": "2020-05-10 12:12:08.000000",
            "timezone_type": 3,
            "timezone": "Asia/Tehran",
        },
    })
}
