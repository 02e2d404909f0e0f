//! http_json: login and refresh requests as JSON templates, and where the answer holds the token.

use crate::config::build::{Errors, SecretReader, url};
use crate::config::raw::RawCredential;
use crate::config::raw::RawRequest;
use crate::provider::{ProviderConfig, http_json};
use crate::secret::SecretSource;

/// The provider keys this provider takes.
pub(super) const KEYS: &[&str] = &[
    "login_request",
    "refresh_request",
    "secrets",
    "token_pointer",
    "refresh_token_pointer",
    "expires_in_pointer",
];

pub(super) fn build(
    rc: &RawCredential,
    ctx: &str,
    reader: &SecretReader,
    errors: &mut Errors,
    warnings: &mut Vec<String>,
) -> ProviderConfig {
    let mut secret = |field: &str, source: &Option<SecretSource>, errors: &mut Errors| {
        reader.read(field, source.as_ref()?, errors, warnings)
    };
    let mut secrets_list = Vec::new();
    for (name, source) in rc.secrets.iter().flatten() {
        if name == http_json::REFRESH_PLACEHOLDER || name.is_empty() {
            errors.push(
                ctx,
                format!("`secrets.{name}` is a reserved placeholder name"),
            );
        }
        if let Some(value) = secret(&format!("secrets.{name}"), &Some(source.clone()), errors) {
            secrets_list.push((name.clone(), value));
        }
    }
    let known: Vec<&str> = rc
        .secrets
        .iter()
        .flatten()
        .map(|(n, _)| n.as_str())
        .collect();
    let mut request = |field: &str, raw: &Option<RawRequest>, allow_refresh: bool| {
        let raw = raw.as_ref()?;
        let body = match serde_json::to_value(&raw.body) {
            Ok(b) => b,
            Err(e) => {
                errors.push(
                    ctx,
                    format!("`{field}.body` is not expressible as JSON: {e}"),
                );
                return None;
            }
        };
        for name in http_json::placeholders(&body) {
            let ok = known.contains(&name.as_str())
                || (allow_refresh && name == http_json::REFRESH_PLACEHOLDER);
            if !ok {
                errors.push(
                    ctx,
                    format!(
                        "`{field}.body` uses {{{{{name}}}}}, which is not one of `secrets`{}",
                        if allow_refresh {
                            " or {{refresh_token}}"
                        } else {
                            ""
                        }
                    ),
                );
            }
        }
        let url = url(
            ctx,
            &format!("{field}.url"),
            Some(&raw.url),
            "",
            errors,
            warnings,
        );
        Some(http_json::Request { url, body })
    };
    let login = request("login_request", &rc.login_request, false);
    let refresh = request("refresh_request", &rc.refresh_request, true);
    if rc.login_request.is_none() {
        errors.push(ctx, "provider http_json needs `login_request: {url, body}`");
    }
    if let Some(r) = &refresh {
        if !http_json::placeholders(&r.body)
            .iter()
            .any(|p| p == http_json::REFRESH_PLACEHOLDER)
        {
            errors.push(ctx, "`refresh_request.body` never uses {{refresh_token}}");
        }
        if rc.refresh_token_pointer.is_none() {
            errors.push(ctx, "`refresh_request` needs `refresh_token_pointer` to find the refresh token in answers");
        }
    }
    for (field, pointer) in [
        ("token_pointer", &rc.token_pointer),
        ("refresh_token_pointer", &rc.refresh_token_pointer),
        ("expires_in_pointer", &rc.expires_in_pointer),
    ] {
        if let Some(p) = pointer
            && !p.starts_with('/')
        {
            errors.push(
                ctx,
                format!("`{field}` `{p}` is not a JSON pointer; write it like /data/token"),
            );
        }
    }
    ProviderConfig::HttpJson(http_json::HttpJson {
        login: login.unwrap_or(http_json::Request {
            url: String::new(),
            body: serde_json::Value::Null,
        }),
        refresh,
        secrets: secrets_list,
        token_pointer: rc
            .token_pointer
            .clone()
            .unwrap_or_else(|| http_json::DEFAULT_TOKEN_POINTER.to_owned()),
        refresh_token_pointer: rc.refresh_token_pointer.clone(),
        expires_in_pointer: rc.expires_in_pointer.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::*;

    #[test]
    fn http_json_table() {
        const LOGIN: &str = "login_request: {url: 'https://h/l', body: {u: '{{user}}'}}\nsecrets: {user: {env: U}}\n";
        let cases: &[(String, &[&str])] = &[
            (LOGIN.to_owned(), &[]),
            (
                format!(
                    "{LOGIN}refresh_request: {{url: 'https://h/r', body: {{r: '{{{{refresh_token}}}}'}}}}\nrefresh_token_pointer: /r"
                ),
                &[],
            ),
            (
                String::new(),
                &["c: provider http_json needs `login_request: {url, body}`"],
            ),
            (
                "login_request: {url: 'https://h/l', body: {u: '{{nope}}'}}".to_owned(),
                &["c: `login_request.body` uses {{nope}}, which is not one of `secrets`"],
            ),
            (
                format!(
                    "{LOGIN}refresh_request: {{url: 'https://h/r', body: {{r: '{{{{other}}}}'}}}}"
                ),
                &[
                    "c: `refresh_request.body` uses {{other}}, which is not one of `secrets` or {{refresh_token}}",
                    "c: `refresh_request.body` never uses {{refresh_token}}",
                    "c: `refresh_request` needs `refresh_token_pointer` to find the refresh token in answers",
                ],
            ),
            (
                format!("{LOGIN}token_pointer: data"),
                &["c: `token_pointer` `data` is not a JSON pointer; write it like /data/token"],
            ),
            (
                "login_request: {url: 'https://h/l', body: {}}\nsecrets: {refresh_token: {env: R}}"
                    .to_owned(),
                &["c: `secrets.refresh_token` is a reserved placeholder name"],
            ),
        ];
        for (keys, want) in cases {
            assert_eq!(errors("http_json", keys, build), *want, "{keys}");
        }
    }
}
