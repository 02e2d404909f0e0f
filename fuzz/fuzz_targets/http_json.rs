//! `http_json::HttpJson::parse` with a fixed, Vandar-like description, on arbitrary answers.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tokend::provider::http_json::{HttpJson, Request};
use tokend::secret::Secret;

static PROVIDER: LazyLock<HttpJson> = LazyLock::new(|| HttpJson {
    login: Request {
        url: "https://fuzz.invalid/login".into(),
        body: json!({"user": "u", "password": "{{password}}"}),
    },
    refresh: Some(Request {
        url: "https://fuzz.invalid/refresh".into(),
        body: json!({"refresh": "{{refresh_token}}"}),
    }),
    secrets: vec![("password".into(), Secret::new("p"))],
    token_pointer: "/data/token".into(),
    refresh_token_pointer: Some("/data/refresh_token".into()),
    expires_in_pointer: Some("/data/expires_in".into()),
});

fuzz_target!(|data: &[u8]| {
    tokend_fuzz::run_parser(data, |a| PROVIDER.parse(a, "login"));
});
