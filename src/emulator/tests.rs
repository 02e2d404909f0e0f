//! End-to-end checks of the emulators over real loopback HTTP, with a tiny blocking client
//! so the tests need neither TLS setup nor a runtime of their own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::*;

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`, so the body ends at EOF).
fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_owned(), value.trim().to_owned())
        })
        .collect();
    let reply = Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    };
    assert!(
        reply.header("transfer-encoding").is_none(),
        "chunked replies are not decoded here"
    );
    Ok(reply)
}

/// With `Accept: application/json`, as Vandar's docs ask of every client.
fn post(emu: &Emulator, path: &str, content_type: &str, body: &str) -> Reply {
    post_with(
        emu,
        path,
        &[
            ("Content-Type", content_type),
            ("Accept", "application/json"),
        ],
        body,
    )
}

fn post_with(emu: &Emulator, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    send(
        emu.addr(),
        "POST",
        path,
        headers,
        body.as_bytes(),
        Duration::from_secs(5),
    )
    .unwrap()
}

fn login(emu: &Emulator, mobile: &str, password: &str) -> Reply {
    let body = json!({ "mobile": mobile, "password": password }).to_string();
    post(emu, "/v2/login", JSON, &body)
}

fn refresh(emu: &Emulator, token: &str) -> Reply {
    let body = json!({ "refreshtoken": token }).to_string();
    post(emu, "/v3/refreshtoken", JSON, &body)
}

fn saba(emu: &Emulator, days: Value) -> Reply {
    let body = json!({
        "Username": "sabauser",
        "Password": "saba-pass",
        "VirtualNumber": "30001234",
        "TokenValidDay": days,
    });
    post(emu, "/api/v1/user/authenticate", JSON, &body.to_string())
}

fn yavapteke(emu: &Emulator, form: &str) -> Reply {
    post(emu, "/YavaptekeAPI/connect/token", FORM, form)
}

const YAV_OK: &str = "client_id=3f37b142-e371-461e-924c-a913ff878534&client_secret=yav-secret&grant_type=client_credentials";
const OAUTH_OK: &str = "grant_type=client_credentials&client_id=tokend&client_secret=oauth-secret";

fn start() -> Emulator {
    Emulator::start_background(EmulatorConfig::default()).unwrap()
}

/// Saba in the seed's documented shape.
fn seed_saba() -> Emulator {
    Emulator::start_background(EmulatorConfig {
        saba_seed_shape: true,
        ..EmulatorConfig::default()
    })
    .unwrap()
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("not a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// `exp - now`, tolerant of the second boundary passing during the test.
fn remaining(token: &str) -> i64 {
    claims(token)["exp"].as_i64().unwrap() - jwt::unix_now() as i64
}

fn assert_remaining(token: &str, secs: i64) {
    let left = remaining(token);
    assert!(
        (secs - 2..=secs).contains(&left),
        "exp is {left}s away, want {secs}s"
    );
}

#[test]
fn vandar_login_answers_with_token_and_profile() {
    let emu = start();
    let reply = login(&emu, "09123456789", "vandar-pass");
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["status"], 1);
    let token = body["data"]["token"].as_str().unwrap();
    assert_remaining(token, 432_000);
    assert_eq!(body["data"]["user"]["national_code"], "0123456789");
    assert_eq!(body["data"]["user"]["mobile"], "09123456789");
    assert!(body["data"]["user"]["email"].is_string());
    assert_eq!(emu.issued_tokens(), [token]);
    assert_eq!(emu.successes(Endpoint::VandarLogin), 1);
}

#[test]
fn vandar_login_refuses_wrong_or_missing_credentials() {
    let emu = start();
    let expected = json!({ "status": 0, "error": "نام کاربری یا رمز عبور اشتباه وارد شده است" });
    for reply in [
        login(&emu, "09123456789", "wrong"),
        post(&emu, "/v2/login", JSON, r#"{"mobile":"09123456789"}"#),
        post(&emu, "/v2/login", JSON, "not json"),
        post(
            &emu,
            "/v2/login",
            "text/plain",
            r#"{"mobile":"09123456789","password":"vandar-pass"}"#,
        ),
    ] {
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json(), expected);
    }
    assert_eq!(emu.requests(Endpoint::VandarLogin), 4);
    assert_eq!(emu.successes(Endpoint::VandarLogin), 0);
}

#[test]
fn vandar_refresh_rotates_and_refuses_reuse() {
    let emu = start();
    assert_eq!(emu.valid_refresh_tokens(), ["def502seed"]);

    let first = refresh(&emu, "def502seed");
    assert_eq!(first.status, 200);
    let body = first.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 432_000);
    assert_remaining(body["access_token"].as_str().unwrap(), 432_000);
    let next = body["refresh_token"].as_str().unwrap().to_owned();
    assert!(next.starts_with("def502") && next.len() > 32);
    assert_eq!(emu.valid_refresh_tokens(), [next.as_str()]);

    let reused = refresh(&emu, "def502seed");
    assert_eq!(reused.status, 401);
    assert_eq!(reused.text(), r#"{"unauthorized"}"#);
    assert!(reused.header("content-type").unwrap().starts_with(JSON));
    assert_eq!(emu.reused_refresh_tokens(), 1);

    assert_eq!(refresh(&emu, "def502never").status, 401);
    assert_eq!(post(&emu, "/v3/refreshtoken", JSON, "{}").status, 401);
    assert_eq!(emu.reused_refresh_tokens(), 1);
    assert_eq!(emu.stats().unknown_refresh_tokens_presented, 2);

    let second = refresh(&emu, &next);
    assert_eq!(second.status, 200);
    let newest = second.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(emu.valid_refresh_tokens(), [newest]);
    assert_eq!(emu.successes(Endpoint::VandarRefresh), 2);
    assert_eq!(emu.requests(Endpoint::VandarRefresh), 5);
    // Two access tokens and two refresh tokens, the seed excluded.
    assert_eq!(emu.issued_tokens().len(), 4);
}

#[test]
fn revoke_fault_invalidates_every_refresh_token() {
    let emu = start();
    emu.add_refresh_seed("def502other");
    emu.push_fault(Endpoint::VandarRefresh, Fault::Revoke, 1);
    let reply = refresh(&emu, "def502seed");
    assert_eq!(reply.status, 401);
    assert_eq!(reply.text(), r#"{"unauthorized"}"#);
    assert!(emu.valid_refresh_tokens().is_empty());
    assert_eq!(refresh(&emu, "def502other").status, 401);
    let stats = emu.stats();
    assert_eq!(stats.revoked_refresh_tokens_presented, 2);
    assert_eq!(stats.reused_refresh_tokens, 0);

    // A seed revives even a revoked token.
    emu.add_refresh_seed("def502other");
    assert_eq!(refresh(&emu, "def502other").status, 200);
}

#[test]
fn saba_answers_with_string_status_envelope() {
    let emu = seed_saba();
    let reply = saba(&emu, json!(15));
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["status"], "200");
    assert_eq!(body["message"], "با موفقیت انجام شد");
    assert_eq!(body["id"], 1);
    assert_eq!(body["errors"], json!([]));
    let data = &body["data"];
    assert_eq!(data["Id"], "1");
    assert_eq!(data["Username"], "sabauser");
    assert_eq!(data["VirtualNumber"], "30001234");
    assert!(data["FirstName"].is_string() && data["LastName"].is_string());
    assert!(data["Domain"].is_string());
    assert_remaining(data["Token"].as_str().unwrap(), 15 * 86_400);
    assert_eq!(emu.last_saba_token_valid_day(), Some(15));
}

#[test]
fn saba_lifetime_cap_shortens_exp_only() {
    let config = EmulatorConfig {
        saba_lifetime_cap: Some(Duration::from_secs(90)),
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start_background(config).unwrap();
    let reply = saba(&emu, json!(365));
    assert_remaining(reply.json()["data"]["token"].as_str().unwrap(), 90);
    assert_eq!(emu.last_saba_token_valid_day(), Some(365));
}

#[test]
fn saba_refuses_bad_token_valid_day_and_credentials() {
    let emu = seed_saba();
    for days in [json!(0), json!(366), json!("15"), Value::Null] {
        let reply = saba(&emu, days);
        assert_eq!(reply.status, 400);
        let body = reply.json();
        assert_eq!(body["status"], "400");
        assert_eq!(body["data"], Value::Null);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .chars()
                .any(|c| ('\u{600}'..='\u{6ff}').contains(&c))
        );
        assert_eq!(
            body["errors"],
            json!(["TokenValidDay must be between 1 and 365"])
        );
    }
    assert_eq!(emu.last_saba_token_valid_day(), None);
    let wrong = json!({"Username":"sabauser","Password":"nope","VirtualNumber":"30001234","TokenValidDay":30});
    let reply = post(&emu, "/api/v1/user/authenticate", JSON, &wrong.to_string());
    assert_eq!(reply.status, 401);
    let body = reply.json();
    assert_eq!(body["status"], "401");
    assert_eq!(body["message"], vandar::WRONG_CREDENTIALS);
    assert_eq!(body["data"], Value::Null);
    assert_eq!(emu.last_saba_token_valid_day(), Some(30));
    assert_eq!(
        post(&emu, "/api/v1/user/authenticate", FORM, "Username=x").status,
        415
    );
    assert_eq!(emu.successes(Endpoint::Saba), 0);
}

#[test]
fn yavapteke_accepts_either_secret_field_name() {
    let emu = start();
    let reply = yavapteke(&emu, YAV_OK);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["token_type"], "Bearer");
    let token = body["access_token"].as_str().unwrap();
    let groups: Vec<usize> = token.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12]);
    assert_eq!(
        emu.last_yavapteke_secret_field().as_deref(),
        Some("client_secret")
    );

    let alias = "client_id=3f37b142-e371-461e-924c-a913ff878534&secret=yav-secret";
    assert_eq!(yavapteke(&emu, alias).status, 200);
    assert_eq!(emu.last_yavapteke_secret_field().as_deref(), Some("secret"));
    assert_eq!(emu.successes(Endpoint::Yavapteke), 2);
}

#[test]
fn yavapteke_refuses_bad_clients_and_grants() {
    let emu = start();
    let cases = [
        (
            "client_id=3f37b142-e371-461e-924c-a913ff878534&client_secret=nope",
            "invalid_client",
        ),
        // The documentation's stray leading space is not the same client.
        (
            "client_id=+3f37b142-e371-461e-924c-a913ff878534&client_secret=yav-secret",
            "invalid_client",
        ),
        ("client_secret=yav-secret", "invalid_client"),
        (
            &*YAV_OK.replace("client_credentials", "password"),
            "unsupported_grant_type",
        ),
        (&*format!("{YAV_OK}&client_secret=again"), "invalid_request"),
    ];
    for (form, error) in cases {
        let reply = yavapteke(&emu, form);
        assert_eq!(
            (reply.status, reply.json()),
            (400, json!({ "error": error })),
            "{form}"
        );
    }
    let json_body = post(&emu, "/YavaptekeAPI/connect/token", JSON, "{}");
    assert_eq!(json_body.json(), json!({ "error": "invalid_request" }));
}

fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[test]
fn oauth2_accepts_post_and_basic_with_reserved_characters() {
    let secret = "p:a%s+s w&rd=/é";
    let config = EmulatorConfig {
        oauth2_client_id: "my:client".into(),
        oauth2_client_secret: secret.into(),
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start_background(config).unwrap();

    let form = format!(
        "grant_type=client_credentials&scope=read+write&client_id={}&client_secret={}",
        form_encode("my:client"),
        form_encode(secret)
    );
    let reply = post(&emu, "/oauth2/token", FORM, &form);
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["scope"], "read write");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_remaining(body["access_token"].as_str().unwrap(), 3600);
    assert_eq!(
        emu.last_oauth2_auth().as_deref(),
        Some("client_secret_post")
    );
    assert_eq!(emu.last_oauth2_scope().as_deref(), Some("read write"));

    let basic = STANDARD.encode(format!(
        "{}:{}",
        form_encode("my:client"),
        form_encode(secret)
    ));
    let auth = format!("Basic {basic}");
    let headers = [("Content-Type", FORM), ("Authorization", auth.as_str())];
    let reply = post_with(
        &emu,
        "/oauth2/token",
        &headers,
        "grant_type=client_credentials",
    );
    assert_eq!(reply.status, 200);
    assert!(reply.json().get("scope").is_none());
    assert_eq!(
        emu.last_oauth2_auth().as_deref(),
        Some("client_secret_basic")
    );
    assert_eq!(emu.last_oauth2_scope(), None);

    // Without the form-encoding step the ':' in the id splits in the wrong place.
    let raw = format!("Basic {}", STANDARD.encode(format!("my:client:{secret}")));
    let headers = [("Content-Type", FORM), ("Authorization", raw.as_str())];
    let reply = post_with(
        &emu,
        "/oauth2/token",
        &headers,
        "grant_type=client_credentials",
    );
    assert_eq!(reply.status, 401);
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(emu.successes(Endpoint::OAuth2), 2);
}

#[test]
fn oauth2_refuses_bad_clients_and_requests() {
    let emu = start();
    let reply = post(
        &emu,
        "/oauth2/token",
        FORM,
        &OAUTH_OK.replace("oauth-secret", "nope"),
    );
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.text(),
        r#"{"error":"invalid_client","error_description":"client authentication failed"}"#
    );
    assert!(reply.header("www-authenticate").is_none());

    let basic = format!("Basic {}", STANDARD.encode("tokend:oauth-secret"));
    let both = [("Content-Type", FORM), ("Authorization", basic.as_str())];
    let reply = post_with(&emu, "/oauth2/token", &both, OAUTH_OK);
    assert_eq!(
        (reply.status, reply.json()),
        (400, json!({ "error": "invalid_request" }))
    );

    let missing_grant = OAUTH_OK.replace("grant_type=client_credentials&", "");
    let reply = post(&emu, "/oauth2/token", FORM, &missing_grant);
    assert_eq!(
        (reply.status, reply.json()),
        (400, json!({ "error": "invalid_request" }))
    );

    let reply = post(
        &emu,
        "/oauth2/token",
        FORM,
        &OAUTH_OK.replace("client_credentials", "authorization_code"),
    );
    assert_eq!(
        (reply.status, reply.json()),
        (400, json!({ "error": "unsupported_grant_type" }))
    );
}

#[test]
fn status_fault_sends_provider_typical_bodies() {
    let emu = start();
    let status = |code| Fault::Status {
        code,
        body: None,
        retry_after: None,
    };
    emu.push_fault(Endpoint::VandarRefresh, status(401), 1);
    emu.push_fault(Endpoint::VandarRefresh, status(500), 1);
    emu.push_fault(Endpoint::VandarLogin, status(400), 1);
    emu.push_fault(Endpoint::Saba, status(503), 1);
    emu.push_fault(Endpoint::Yavapteke, status(500), 1);
    emu.push_fault(Endpoint::OAuth2, status(401), 1);

    assert_eq!(refresh(&emu, "def502seed").text(), r#"{"unauthorized"}"#);
    let reply = refresh(&emu, "def502seed");
    assert_eq!(
        (reply.status, reply.json()),
        (500, json!({ "message": "Server Error" }))
    );
    // A faulted answer does not consume the refresh token.
    assert_eq!(emu.valid_refresh_tokens(), ["def502seed"]);

    let reply = login(&emu, "09123456789", "vandar-pass");
    assert_eq!(
        (reply.status, reply.json()["status"].clone()),
        (400, json!(0))
    );
    let reply = saba(&emu, json!(30));
    assert_eq!(
        (reply.status, reply.json()["status"].clone()),
        (503, json!(503))
    );
    let reply = yavapteke(&emu, YAV_OK);
    assert_eq!(
        (reply.status, reply.json()),
        (500, json!({ "error": "server_error" }))
    );
    let reply = post(&emu, "/oauth2/token", FORM, OAUTH_OK);
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (401, json!("invalid_client"))
    );
    for endpoint in Endpoint::ALL {
        assert_eq!(emu.successes(endpoint), 0, "{endpoint:?}");
    }
}

#[test]
fn status_fault_with_custom_body_and_retry_after() {
    let emu = start();
    let fault = Fault::Status {
        code: 429,
        body: Some("slow down".into()),
        retry_after: Some(7),
    };
    emu.push_fault(Endpoint::Yavapteke, fault, 1);
    let html = Fault::Status {
        code: 502,
        body: Some("<html>bad</html>".into()),
        retry_after: None,
    };
    emu.push_fault(Endpoint::Yavapteke, html, 1);

    let reply = yavapteke(&emu, YAV_OK);
    assert_eq!((reply.status, reply.text()), (429, "slow down"));
    assert_eq!(reply.header("retry-after"), Some("7"));
    let reply = yavapteke(&emu, YAV_OK);
    assert_eq!((reply.status, reply.text()), (502, "<html>bad</html>"));
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(yavapteke(&emu, YAV_OK).status, 200);
}

#[test]
fn garbage_and_tampered_tokens() {
    let emu = seed_saba();
    emu.push_fault(Endpoint::Saba, Fault::Garbage, 1);
    emu.push_fault(Endpoint::Saba, Fault::EmptyToken, 1);
    emu.push_fault(Endpoint::Saba, Fault::TokenWithWhitespace, 1);

    let reply = saba(&emu, json!(30));
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("502 Bad Gateway"));
    assert!(serde_json::from_slice::<Value>(&reply.body).is_err());

    let reply = saba(&emu, json!(30));
    let body = reply.json();
    assert_eq!((reply.status, body["status"].clone()), (200, json!("200")));
    assert_eq!(body["data"]["Token"], "");

    let token = saba(&emu, json!(30)).json()["data"]["Token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(token.contains(' ') && token.contains('\n'));
    assert_eq!(emu.issued_tokens(), [token]);
    assert_eq!(emu.successes(Endpoint::Saba), 0);
    assert_eq!(emu.requests(Endpoint::Saba), 3);
}

#[test]
fn saba_answers_like_the_live_api() {
    let emu = start();
    // Request keys in any case (the vendor's SDKs send them lower case).
    let body = json!({"username":"sabauser","password":"saba-pass","virtualNumber":"30001234","tokenValidDay":15});
    let reply = post(&emu, "/api/v1/user/authenticate", JSON, &body.to_string());
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["status"], 200);
    assert_eq!(body["errors"], Value::Null);
    assert_eq!(body["data"]["virtualNumber"], "30001234");
    assert!(body["data"].get("Token").is_none());
    assert_remaining(body["data"]["token"].as_str().unwrap(), 15 * 86_400);

    let wrong = json!({"Username":"sabauser","Password":"nope","VirtualNumber":"30001234","TokenValidDay":30});
    let reply = post(&emu, "/api/v1/user/authenticate", JSON, &wrong.to_string());
    assert_eq!(reply.status, 401);
    let body = reply.json();
    assert_eq!(body["status"], 401);
    assert_eq!(
        body["errors"],
        json!([{"message": "Username or password is incorrect", "code": 4001, "field": "password", "url": null}])
    );
    let reply = saba(&emu, json!(0));
    assert_eq!(reply.json()["errors"][0]["field"], "tokenValidDay");

    // The seed shape does not see lower-case keys at all.
    let seed = seed_saba();
    let body = json!({"username":"sabauser","password":"saba-pass","virtualNumber":"30001234","tokenValidDay":15});
    let reply = post(&seed, "/api/v1/user/authenticate", JSON, &body.to_string());
    assert_eq!(reply.status, 400);
}

#[test]
fn tampered_vandar_refresh_spends_the_presented_token_and_sends_a_valid_successor() {
    let emu = start();
    for fault in [
        Fault::EmptyToken,
        Fault::TokenAsNumber,
        Fault::LongToken,
        Fault::TokenWithWhitespace,
    ] {
        emu.push_fault(Endpoint::VandarRefresh, fault, 1);
    }
    let mut current = "def502seed".to_owned();
    for want in [json!(""), json!(8_675_309)] {
        let body = refresh(&emu, &current).json();
        assert_eq!(body["access_token"], want);
        let next = body["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(emu.valid_refresh_tokens(), std::slice::from_ref(&next));
        current = next;
    }
    let body = refresh(&emu, &current).json();
    assert!(body["access_token"].as_str().unwrap().len() > 16 * 1024);
    current = body["refresh_token"].as_str().unwrap().to_owned();
    let body = refresh(&emu, &current).json();
    assert!(body["access_token"].as_str().unwrap().contains(' '));
    let previous = current;
    current = body["refresh_token"].as_str().unwrap().to_owned();
    // The spent one is a replay now; the successor works.
    assert_eq!(refresh(&emu, &previous).status, 401);
    assert_eq!(emu.reused_refresh_tokens(), 1);
    assert_eq!(refresh(&emu, &current).status, 200);

    // Presented an invalid token, a tampered answer's successor is never accepted.
    emu.push_fault(Endpoint::VandarRefresh, Fault::EmptyToken, 1);
    let bogus = refresh(&emu, "def502never").json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(refresh(&emu, &bogus).status, 401);
}

#[test]
fn vandar_answers_html_errors_to_a_client_that_does_not_ask_for_json() {
    let emu = start();
    let body = json!({ "refreshtoken": "def502never" }).to_string();
    let reply = post_with(&emu, "/v3/refreshtoken", &[("Content-Type", JSON)], &body);
    assert_eq!(reply.status, 401);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(refresh(&emu, "def502never").text(), r#"{"unauthorized"}"#);
}

#[test]
fn block_pages_never_reach_the_api() {
    let emu = start();
    for code in [403, 400, 451] {
        emu.push_fault(Endpoint::VandarRefresh, Fault::BlockPage { code }, 1);
    }
    for code in [403, 400] {
        let reply = refresh(&emu, "def502seed");
        assert_eq!(reply.status, code);
        assert!(
            reply
                .header("content-type")
                .unwrap()
                .starts_with("text/html")
        );
        assert!(reply.text().contains("<html>"));
    }
    let reply = refresh(&emu, "def502seed");
    assert_eq!((reply.status, reply.text()), (451, ""));
    assert_eq!(emu.valid_refresh_tokens(), ["def502seed"]);
}

#[test]
fn vandar_v3_login_starts_a_chain_from_json_or_form() {
    let emu = start();
    let json_body = json!({"mobile":"09123456789","password":"vandar-pass"}).to_string();
    let reply = post(&emu, "/v3/login", JSON, &json_body);
    assert_eq!(reply.status, 200);
    let pair = reply.json();
    assert_eq!(pair["token_type"], "Bearer");
    let rt = pair["refresh_token"].as_str().unwrap();
    assert_eq!(refresh(&emu, rt).status, 200);
    let reply = post(
        &emu,
        "/v3/login",
        FORM,
        "mobile=09123456789&password=vandar-pass",
    );
    assert_eq!(reply.status, 200);
    let reply = post(&emu, "/v3/login", FORM, "mobile=09123456789&password=nope");
    assert_eq!(reply.status, 422);
    assert!(reply.json()["errors"]["password"].is_array());
    // The seed's API has no v3 login.
    let old = Emulator::start_background(EmulatorConfig {
        vandar_v3_login: false,
        ..EmulatorConfig::default()
    })
    .unwrap();
    assert_eq!(post(&old, "/v3/login", JSON, &json_body).status, 404);
}

#[test]
fn vandar_throttles_posts_with_retry_after() {
    let emu = Emulator::start_background(EmulatorConfig {
        vandar_post_limit: 3,
        vandar_post_window: Duration::from_secs(30),
        ..EmulatorConfig::default()
    })
    .unwrap();
    for _ in 0..3 {
        assert_eq!(login(&emu, "09123456789", "vandar-pass").status, 200);
    }
    let reply = refresh(&emu, "def502seed");
    assert_eq!(reply.status, 429);
    let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    // The throttled refresh spent nothing.
    assert_eq!(emu.valid_refresh_tokens(), ["def502seed"]);
    assert_eq!(emu.stats().vandar_throttled, 1);
    // Saba is not Vandar.
    assert_eq!(saba(&emu, json!(30)).status, 200);
}

#[test]
fn vandar_refresh_tokens_expire() {
    let emu = Emulator::start_background(EmulatorConfig {
        vandar_lifetime: Duration::from_secs(1),
        vandar_refresh_lifetime: Duration::from_secs(60),
        ..EmulatorConfig::default()
    })
    .unwrap();
    let rt = refresh(&emu, "def502seed").json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // After the access token it came with expired, the refresh token is refused.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(refresh(&emu, &rt).status, 401);
    assert_eq!(emu.stats().expired_refresh_tokens_presented, 1);

    let emu = Emulator::start_background(EmulatorConfig {
        vandar_refresh_lifetime: Duration::from_millis(1),
        ..EmulatorConfig::default()
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(refresh(&emu, "def502seed").status, 401);
}

#[test]
fn oauth2_refresh_and_password_grants_rotate() {
    let emu = start();
    let reply = post(
        &emu,
        "/oauth2/token",
        FORM,
        "grant_type=password&username=alice&password=alice-pass&client_id=tokend&client_secret=oauth-secret",
    );
    assert_eq!(reply.status, 200);
    let rt = reply.json()["refresh_token"].as_str().unwrap().to_owned();
    let form = |rt: &str| {
        format!(
            "grant_type=refresh_token&refresh_token={rt}&client_id=tokend&client_secret=oauth-secret"
        )
    };
    let reply = post(&emu, "/oauth2/token", FORM, &form(&rt));
    assert_eq!(reply.status, 200);
    let next = reply.json()["refresh_token"].as_str().unwrap().to_owned();
    let reply = post(&emu, "/oauth2/token", FORM, &form(&rt));
    assert_eq!(
        (reply.status, reply.json()["error"].clone()),
        (400, json!("invalid_grant"))
    );
    assert_eq!(emu.reused_refresh_tokens(), 1);
    assert_eq!(post(&emu, "/oauth2/token", FORM, &form(&next)).status, 200);
}

#[test]
fn oversized_body_has_exact_size_and_a_valid_token() {
    let emu = start();
    let bytes = 2 * 1024 * 1024;
    emu.push_fault(Endpoint::OAuth2, Fault::Oversized { bytes }, 1);
    emu.push_fault(Endpoint::OAuth2, Fault::Oversized { bytes: 10 }, 1);
    let reply = post(&emu, "/oauth2/token", FORM, OAUTH_OK);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), bytes);
    assert_eq!(reply.header("content-length"), Some(&*bytes.to_string()));
    assert_remaining(reply.json()["access_token"].as_str().unwrap(), 3600);
    let reply = post(&emu, "/oauth2/token", FORM, OAUTH_OK);
    assert_eq!(reply.body.len(), 10);
}

#[test]
fn delay_answers_normally_after_the_pause() {
    let emu = start();
    emu.push_fault(Endpoint::VandarLogin, Fault::Delay { ms: 150 }, 1);
    let started = Instant::now();
    let reply = login(&emu, "09123456789", "vandar-pass");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(reply.status, 200);
    assert_eq!(emu.successes(Endpoint::VandarLogin), 1);
}

#[test]
fn hang_never_answers_until_stop() {
    let emu = start();
    emu.push_fault(Endpoint::Yavapteke, Fault::Hang, 2);
    let headers = [("Content-Type", FORM)];
    let path = "/YavaptekeAPI/connect/token";
    let timeout = Duration::from_millis(200);
    let error = send(
        emu.addr(),
        "POST",
        path,
        &headers,
        YAV_OK.as_bytes(),
        timeout,
    )
    .err()
    .expect("a hung request must time out");
    assert!(matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));

    // A request parked when the emulator stops is let go at once.
    let addr = emu.addr();
    let parked = std::thread::spawn(move || {
        send(
            addr,
            "POST",
            path,
            &headers,
            YAV_OK.as_bytes(),
            Duration::from_secs(5),
        )
    });
    while emu.requests(Endpoint::Yavapteke) < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    emu.stop();
    // Under the grace period: the parked request was released, not waited out.
    assert!(started.elapsed() < SHUTDOWN_GRACE);
    match parked.join().unwrap() {
        Ok(reply) => assert_eq!(reply.status, 503),
        Err(error) => panic!("parked request failed: {error}"),
    }
}

#[test]
fn queued_faults_go_first_in_order_then_sticky() {
    let emu = start();
    let status = |code| Fault::Status {
        code,
        body: None,
        retry_after: None,
    };
    emu.set_sticky_fault(Endpoint::Yavapteke, Some(status(503)));
    emu.push_fault(Endpoint::Yavapteke, status(500), 2);
    emu.push_fault(Endpoint::Yavapteke, status(429), 1);
    let codes: Vec<u16> = (0..5).map(|_| yavapteke(&emu, YAV_OK).status).collect();
    assert_eq!(codes, [500, 500, 429, 503, 503]);
    emu.set_sticky_fault(Endpoint::Yavapteke, None);
    assert_eq!(yavapteke(&emu, YAV_OK).status, 200);
    assert_eq!(emu.requests(Endpoint::Yavapteke), 6);
    assert_eq!(emu.successes(Endpoint::Yavapteke), 1);
    // Faults are per endpoint.
    assert_eq!(post(&emu, "/oauth2/token", FORM, OAUTH_OK).status, 200);
}

#[test]
fn admin_endpoints_drive_faults_seeds_and_stats() {
    let emu = start();
    let admin = |method, path, body: &str| {
        let headers = [("Content-Type", JSON)];
        send(
            emu.addr(),
            method,
            path,
            &headers,
            body.as_bytes(),
            Duration::from_secs(5),
        )
        .unwrap()
    };
    let push = r#"{"endpoint":"vandar_refresh","fault":{"kind":"status","code":500},"times":3}"#;
    assert_eq!(admin("POST", "/_emulator/faults", push).status, 204);
    let sticky = r#"{"endpoint":"oauth2","fault":{"kind":"hang"},"sticky":true}"#;
    assert_eq!(admin("POST", "/_emulator/faults", sticky).status, 204);
    let bad_code = r#"{"endpoint":"saba","fault":{"kind":"status","code":99}}"#;
    assert_eq!(admin("POST", "/_emulator/faults", bad_code).status, 400);
    assert!(admin("POST", "/_emulator/faults", r#"{"endpoint":"nope"}"#).status >= 400);

    assert_eq!(refresh(&emu, "def502seed").status, 500);
    assert_eq!(
        admin(
            "POST",
            "/_emulator/refresh_seeds",
            r#"{"token":"def502admin"}"#
        )
        .status,
        204
    );

    let stats: Stats = serde_json::from_slice(&admin("GET", "/_emulator/stats", "").body).unwrap();
    assert_eq!(stats, emu.stats());
    let refresh_stats = &stats.endpoints[&Endpoint::VandarRefresh];
    assert_eq!(
        (refresh_stats.requests, refresh_stats.queued_faults),
        (1, 2)
    );
    assert_eq!(
        stats.endpoints[&Endpoint::OAuth2].sticky_fault,
        Some(Fault::Hang)
    );
    assert_eq!(stats.valid_refresh_tokens, 2);
    let raw = admin("GET", "/_emulator/stats", "").json();
    assert_eq!(
        raw["endpoints"]["oauth2"]["sticky_fault"],
        json!({ "kind": "hang" })
    );

    assert_eq!(admin("DELETE", "/_emulator/faults", "").status, 204);
    assert_eq!(refresh(&emu, "def502admin").status, 200);
    assert_eq!(post(&emu, "/oauth2/token", FORM, OAUTH_OK).status, 200);
    let raw = admin("GET", "/_emulator/stats", "").json();
    assert_eq!(raw["reused_refresh_tokens"], 0);
    assert_eq!(raw["last_oauth2_auth"], "client_secret_post");
    assert_eq!(raw["endpoints"]["vandar_refresh"]["successes"], 1);
}

#[test]
fn every_issued_token_is_unique() {
    let emu = Emulator::start_background(EmulatorConfig {
        vandar_post_limit: 0,
        ..EmulatorConfig::default()
    })
    .unwrap();
    for _ in 0..20 {
        assert_eq!(login(&emu, "09123456789", "vandar-pass").status, 200);
        assert_eq!(yavapteke(&emu, YAV_OK).status, 200);
    }
    let mut token = "def502seed".to_owned();
    for _ in 0..20 {
        token = refresh(&emu, &token).json()["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    let issued = emu.issued_tokens();
    let distinct: std::collections::HashSet<_> = issued.iter().collect();
    assert_eq!((issued.len(), distinct.len()), (80, 80));
}

#[test]
fn config_reads_humantime_durations_and_refuses_typos() {
    let config: EmulatorConfig =
        serde_json::from_str(r#"{"vandar_lifetime":"4d","saba_lifetime_cap":"90s"}"#).unwrap();
    assert_eq!(config.vandar_lifetime, Duration::from_secs(4 * 86_400));
    assert_eq!(config.saba_lifetime_cap, Some(Duration::from_secs(90)));
    assert_eq!(config.oauth2_client_id, "tokend");
    assert!(serde_json::from_str::<EmulatorConfig>(r#"{"vandar_lifetme":"4d"}"#).is_err());
    let fault: Fault = serde_json::from_str(r#"{"kind":"status","code":500}"#).unwrap();
    assert_eq!(
        fault,
        Fault::Status {
            code: 500,
            body: None,
            retry_after: None
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_serve_until_on_the_current_runtime() {
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let emu = Emulator::start(listen, EmulatorConfig::default())
        .await
        .unwrap();
    assert!(emu.url().starts_with("http://127.0.0.1:"));
    emu.push_fault(Endpoint::VandarLogin, Fault::Hang, 1);
    let addr = emu.addr();
    let body = br#"{"mobile":"09123456789","password":"vandar-pass"}"#;
    let hung = tokio::task::spawn_blocking(move || {
        send(
            addr,
            "POST",
            "/v2/login",
            &[("Content-Type", JSON)],
            body,
            Duration::from_secs(5),
        )
    });
    while emu.requests(Endpoint::VandarLogin) < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    emu.shutdown().await;
    assert_eq!(hung.await.unwrap().unwrap().status, 503);

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve_until(listen, EmulatorConfig::default(), async {
        let _ = rx.await;
    }));
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), served)
        .await
        .expect("serve_until did not stop")
        .unwrap()
        .unwrap();
}
