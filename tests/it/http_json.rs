//! `provider: http_json` against the emulator: Vandar's and Saba's logins described in the
//! config instead of in code, and configuration errors that name the placeholder at fault.

use crate::support::*;

#[test]
fn vandar_login_and_saba_authenticate_as_http_json() {
    // The documented (seed) shapes: `data.Token` in PascalCase.
    let env = Env::with(EmulatorConfig {
        saba_seed_shape: true,
        ..EmulatorConfig::default()
    });
    env.secret("vandar", "vandar-pass\n");
    env.secret("saba", "saba-pass\n");
    env.config(
        r#"credentials:
  - name: vandar-json
    provider: http_json
    login_request:
      url: "{url}/v2/login"
      body: { mobile: "09123456789", password: "{{password}}" }
    secrets: { password: { file: "{dir}/secrets/vandar" } }
    token_pointer: /data/token
    outputs: [ { file: "{dir}/out/vandar.token" } ]
  - name: saba-json
    provider: http_json
    login_request:
      url: "{url}/api/v1/user/authenticate"
      body: { Username: sabauser, Password: "{{pw}}", VirtualNumber: "30001234", TokenValidDay: 7 }
    secrets: { pw: { file: "{dir}/secrets/saba" } }
    token_pointer: /data/Token
    outputs: [ { file: "{dir}/out/saba.json", format: json } ]
"#,
    );
    env.run(&["once"]).assert_code(0);
    let issued = env.emu.issued_tokens();
    assert!(issued.contains(&env.read("out/vandar.token")));
    assert_eq!(env.emu.last_saba_token_valid_day(), Some(7));
    // No expires_in anywhere: the lifetime comes from the JWT `exp` (7 days here).
    let json: serde_json::Value = serde_json::from_str(&env.read("out/saba.json")).unwrap();
    let exp = humantime::parse_rfc3339(json["expires_at"].as_str().unwrap()).unwrap();
    let left = exp.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(
        left.as_secs() > 6 * 86_400 && left.as_secs() <= 7 * 86_400,
        "{left:?}"
    );
}

#[test]
fn wrong_password_shows_the_providers_message() {
    let env = Env::new();
    env.secret("vandar", "nope\n");
    env.config(
        r#"credentials:
  - name: vandar-json
    provider: http_json
    login_request:
      url: "{url}/v2/login"
      body: { mobile: "09123456789", password: "{{password}}" }
    secrets: { password: { file: "{dir}/secrets/vandar" } }
    token_pointer: /data/token
    outputs: [ { file: "{dir}/out/vandar.token" } ]
"#,
    );
    let r = env.run(&["once"]);
    r.assert_code(1);
    assert!(
        r.stderr.contains("credential `vandar-json`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("HTTP 400"), "{}", r.stderr);
    assert!(!r.stderr.contains("nope"), "{}", r.stderr);
}

#[test]
fn unknown_placeholders_and_missing_pointers_are_config_errors() {
    let env = Env::new();
    env.config(
        r#"credentials:
  - name: api
    provider: http_json
    login_request:
      url: "{url}/login"
      body: { user: alice, password: "{{pasword}}" }
    refresh_request:
      url: "{url}/refresh"
      body: { token: "{{refresh_token}}" }
    secrets: { password: "literal" }
    token_pointer: access
    outputs: [ { file: "{dir}/out/api.token" } ]
"#,
    );
    let r = env.run(&["check"]);
    r.assert_code(2);
    assert!(r.stderr.contains("{{pasword}}"), "{}", r.stderr);
    assert!(r.stderr.contains("refresh_token_pointer"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("`token_pointer` `access` is not a JSON pointer"),
        "{}",
        r.stderr
    );
}
