//! The bytes of each output format, as pure functions of a token and the credential name.

use serde::Serialize;

use super::Format;
use crate::token::Token;
use crate::util::rfc3339;

/// The placeholders a `template` may use.
pub const PLACEHOLDERS: [&str; 4] = ["token", "token_type", "expires_at", "credential"];

pub fn render(format: &Format, token: &Token, credential: &str) -> Vec<u8> {
    match format {
        Format::Raw => token.value.expose().as_bytes().to_vec(),
        Format::Json => json(token, credential),
        Format::Env { prefix } => format!(
            "{prefix}_TOKEN={}\n{prefix}_EXPIRES_AT={}\n",
            token.value.expose(),
            rfc3339(token.expires_at)
        )
        .into_bytes(),
        Format::Template(template) => template_render(template, token, credential).into_bytes(),
    }
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    token: &'a str,
    token_type: &'a str,
    expires_at: String,
    issued_at: String,
    credential: &'a str,
}

fn json(token: &Token, credential: &str) -> Vec<u8> {
    let doc = JsonOutput {
        token: token.value.expose(),
        token_type: &token.token_type,
        expires_at: rfc3339(token.expires_at),
        issued_at: rfc3339(token.issued_at),
        credential,
    };
    let mut bytes = serde_json::to_vec(&doc).expect("plain strings always serialize");
    bytes.push(b'\n');
    bytes
}

/// The files of a `dir` output, in the order they are written.
pub fn dir_files(token: &Token, credential: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("token", token.value.expose().as_bytes().to_vec()),
        ("token.json", json(token, credential)),
        ("expires_at", rfc3339(token.expires_at).into_bytes()),
    ]
}

/// The env variable prefix for a credential name: upper-cased, `-` and `.` become `_`.
pub fn env_prefix(credential: &str) -> String {
    credential
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// Substitutes `{{name}}` placeholders (spaces inside the braces allowed). Unknown names
/// are rejected at config time by [`template_unknown`], so here they cannot occur.
fn template_render(template: &str, token: &Token, credential: &str) -> String {
    let mut out = String::with_capacity(template.len() + token.value.expose().len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                match after[..end].trim() {
                    "token" => out.push_str(token.value.expose()),
                    "token_type" => out.push_str(&token.token_type),
                    "expires_at" => out.push_str(&rfc3339(token.expires_at)),
                    "credential" => out.push_str(credential),
                    _ => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Placeholders in `template` that tokend does not know, for config validation.
pub fn template_unknown(template: &str) -> Vec<String> {
    let mut unknown = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim();
        if !PLACEHOLDERS.contains(&name) {
            unknown.push(name.to_owned());
        }
        rest = &after[end + 2..];
    }
    unknown
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use std::time::{Duration, UNIX_EPOCH};

    fn token() -> Token {
        Token {
            value: Secret::new("tok.en-1"),
            token_type: "Bearer".into(),
            issued_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            expires_at: UNIX_EPOCH + Duration::from_secs(1_800_003_600),
        }
    }

    fn text(f: &Format) -> String {
        String::from_utf8(render(f, &token(), "any-idp")).unwrap()
    }

    #[test]
    fn exact_bytes_of_every_format() {
        assert_eq!(text(&Format::Raw), "tok.en-1");
        assert_eq!(
            text(&Format::Json),
            "{\"token\":\"tok.en-1\",\"token_type\":\"Bearer\",\"expires_at\":\"2027-01-15T09:00:00Z\",\"issued_at\":\"2027-01-15T08:00:00Z\",\"credential\":\"any-idp\"}\n"
        );
        assert_eq!(
            text(&Format::Env {
                prefix: env_prefix("any-idp")
            }),
            "ANY_IDP_TOKEN=tok.en-1\nANY_IDP_EXPIRES_AT=2027-01-15T09:00:00Z\n"
        );
        assert_eq!(
            text(&Format::Template(
                "Authorization: {{token_type}} {{ token }}\n# {{credential}} until {{expires_at}}, {{x}} {{".into()
            )),
            "Authorization: Bearer tok.en-1\n# any-idp until 2027-01-15T09:00:00Z, {{x}} {{"
        );
    }

    #[test]
    fn dir_files_are_consistent() {
        let files = dir_files(&token(), "c");
        assert_eq!(files[0], ("token", b"tok.en-1".to_vec()));
        assert_eq!(files[2], ("expires_at", b"2027-01-15T09:00:00Z".to_vec()));
    }

    #[test]
    fn env_prefix_rules() {
        assert_eq!(env_prefix("vandar-main.v2"), "VANDAR_MAIN_V2");
    }

    #[test]
    fn unknown_placeholders_are_found() {
        assert_eq!(
            template_unknown("{{token}} {{ tokn }} {{expires}}"),
            ["tokn", "expires"]
        );
        assert!(template_unknown("Bearer {{token}}").is_empty());
    }
}
