//! Vandar's token flows: the v2 login with mobile + password (the seed's 2020 shape), the
//! v3 login answering an OAuth pair that starts a chain, and the v3 refresh chain whose
//! refresh tokens are single-use, rotate on every call, live ten days and must be used
//! before the access token they came with expires. All of them count against the
//! 30-POSTs-per-3-s throttle.

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

/// The request body as JSON or as a form (Laravel reads both), or `Null` when it is
/// neither: Laravel then sees no fields.
fn body_fields(headers: &HeaderMap, body: &[u8]) -> Value {
    if content_type_is(headers, "application/json") {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    } else if content_type_is(headers, "application/x-www-form-urlencoded") {
        Value::Object(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect(),
        )
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

impl LoginRequest {
    fn parse(headers: &HeaderMap, body: &[u8]) -> LoginRequest {
        let body = body_fields(headers, body);
        LoginRequest {
            mobile: string_field(&body, "mobile"),
            password: string_field(&body, "password"),
        }
    }

    fn matches(&self, config: &EmulatorConfig) -> bool {
        self.mobile.as_deref() == Some(&config.vandar_mobile)
            && self.password.as_deref() == Some(&config.vandar_password)
    }
}

impl Login {
    fn body(config: &EmulatorConfig, token: Value) -> String {
        json!({
            "status": 1,
            "data": { "token": token, "user": profile(&config.vandar_mobile) },
        })
        .to_string()
    }
}

impl Api for Login {
    const ENDPOINT: Endpoint = Endpoint::VandarLogin;
    const THROTTLED: bool = true;
    type Request = LoginRequest;

    fn parse(headers: &HeaderMap, body: &[u8]) -> LoginRequest {
        LoginRequest::parse(headers, body)
    }

    fn answer(config: &EmulatorConfig, state: &mut State, request: LoginRequest) -> Response {
        if !request.matches(config) {
            return reply(
                StatusCode::BAD_REQUEST,
                Self::error_body(config, StatusCode::BAD_REQUEST),
                false,
            );
        }
        let token = state.issued(Self::mint(config));
        reply(StatusCode::OK, Self::body(config, token.into()), false)
    }

    fn mint(config: &EmulatorConfig) -> String {
        jwt::jwt("29", config.vandar_lifetime)
    }

    fn success_body(
        config: &EmulatorConfig,
        _state: &mut State,
        _request: Option<&LoginRequest>,
        token: Value,
    ) -> String {
        Self::body(config, token)
    }

    fn error_body(_config: &EmulatorConfig, status: StatusCode) -> String {
        if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
            json!({ "status": 0, "error": WRONG_CREDENTIALS }).to_string()
        } else {
            laravel_error(status)
        }
    }
}

/// `POST /v3/login`: what the vendor's Laravel package calls today. Counted under the same
/// endpoint as v2 (`vandar_login`): one login, two versions.
pub(super) struct LoginV3;

impl Api for LoginV3 {
    const ENDPOINT: Endpoint = Endpoint::VandarLogin;
    const THROTTLED: bool = true;
    type Request = LoginRequest;

    fn parse(headers: &HeaderMap, body: &[u8]) -> LoginRequest {
        LoginRequest::parse(headers, body)
    }

    fn answer(config: &EmulatorConfig, state: &mut State, request: LoginRequest) -> Response {
        if request.mobile.is_none() || request.password.is_none() {
            let body = json!({
                "message": "The given data was invalid.",
                "errors": { "mobile": ["The mobile field is required."], "password": ["The password field is required."] },
            });
            return reply(StatusCode::UNPROCESSABLE_ENTITY, body.to_string(), false);
        }
        if !request.matches(config) {
            return reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                Self::error_body(config, StatusCode::UNPROCESSABLE_ENTITY),
                false,
            );
        }
        let access = state.issued(Self::mint(config));
        let refresh = state.issue_refresh_token(config.vandar_lifetime);
        reply(StatusCode::OK, pair(config, access.into(), &refresh), false)
    }

    fn mint(config: &EmulatorConfig) -> String {
        jwt::jwt("29", config.vandar_lifetime)
    }

    /// A login spends nothing, so a tampered answer still starts a valid chain.
    fn success_body(
        config: &EmulatorConfig,
        state: &mut State,
        request: Option<&LoginRequest>,
        token: Value,
    ) -> String {
        let refresh = match request {
            Some(r) if r.matches(config) => state.issue_refresh_token(config.vandar_lifetime),
            _ => state.issued(jwt::refresh_token()),
        };
        pair(config, token, &refresh)
    }

    fn error_body(_config: &EmulatorConfig, status: StatusCode) -> String {
        if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
            json!({
                "message": WRONG_CREDENTIALS,
                "errors": { "password": [WRONG_CREDENTIALS] },
            })
            .to_string()
        } else {
            laravel_error(status)
        }
    }
}

/// The OAuth pair both v3 calls answer.
fn pair(config: &EmulatorConfig, access: Value, refresh: &str) -> String {
    json!({
        "token_type": "Bearer",
        "expires_in": jwt::lifetime_secs(config.vandar_lifetime),
        "access_token": access,
        "refresh_token": refresh,
    })
    .to_string()
}

pub(super) struct Refresh;

/// The documented failure body: not JSON, though served as JSON.
const UNAUTHORIZED: &str = r#"{"unauthorized"}"#;

impl Refresh {
    fn redeem(config: &EmulatorConfig, state: &mut State, token: Option<&str>) -> bool {
        let result = state.redeem_refresh_token(
            token,
            Some(config.vandar_refresh_lifetime),
            config.vandar_refresh_needs_live_access,
        );
        if let Err(rejection) = result {
            tracing::debug!(?rejection, "vandar refresh token refused");
        }
        result.is_ok()
    }
}

impl Api for Refresh {
    const ENDPOINT: Endpoint = Endpoint::VandarRefresh;
    const THROTTLED: bool = true;
    /// The presented refresh token, if the body had one.
    type Request = Option<String>;

    fn parse(headers: &HeaderMap, body: &[u8]) -> Option<String> {
        string_field(&body_fields(headers, body), "refreshtoken")
    }

    fn answer(config: &EmulatorConfig, state: &mut State, request: Option<String>) -> Response {
        if !Self::redeem(config, state, request.as_deref()) {
            return reply(StatusCode::UNAUTHORIZED, UNAUTHORIZED.to_owned(), false);
        }
        let access = state.issued(Self::mint(config));
        let refresh = state.issue_refresh_token(config.vandar_lifetime);
        reply(StatusCode::OK, pair(config, access.into(), &refresh), false)
    }

    fn mint(config: &EmulatorConfig) -> String {
        jwt::jwt("29", config.vandar_lifetime)
    }

    /// The server rotated the chain and the access token got mangled: the presented token is
    /// spent and the successor is valid, so a client must keep it. Without a (valid)
    /// presented token the successor is never redeemable.
    fn success_body(
        config: &EmulatorConfig,
        state: &mut State,
        request: Option<&Option<String>>,
        token: Value,
    ) -> String {
        let refresh = match request {
            Some(presented) if Self::redeem(config, state, presented.as_deref()) => {
                state.issue_refresh_token(config.vandar_lifetime)
            }
            _ => state.issued(jwt::refresh_token()),
        };
        pair(config, token, &refresh)
    }

    fn error_body(_config: &EmulatorConfig, status: StatusCode) -> String {
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
