//! oauth2: the grant, client authentication, token endpoint (or issuer) and extra form fields.

use super::{required, required_secret};
use crate::config::build::{Errors, SecretReader, url};
use crate::config::raw::GrantKind;
use crate::config::raw::RawCredential;
use crate::provider::ProviderConfig;
use crate::provider::oauth2::{self, ClientAuth};
use crate::secret::Secret;
use crate::secret::SecretSource;

/// The provider keys this provider takes.
pub(super) const KEYS: &[&str] = &[
    "token_url",
    "issuer",
    "client_id",
    "client_secret",
    "scope",
    "auth",
    "grant",
    "audience",
    "resource",
    "params",
    "refresh_token",
    "username",
    "password",
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
    let client_id = required(ctx, "client_id", rc.client_id.clone(), errors);
    let auth: ClientAuth = rc.auth.unwrap_or_default().into();
    let client_secret = match (auth, &rc.client_secret) {
        (ClientAuth::None, Some(_)) => {
            errors.push(
                ctx,
                "`auth: none` is a public client: remove `client_secret`",
            );
            None
        }
        (ClientAuth::None, None) => None,
        (_, source) => {
            required_secret(ctx, "client_secret", source, errors);
            secret("client_secret", source, errors)
        }
    };
    let grant_kind = rc.grant.unwrap_or_default();
    let grant = match grant_kind {
        GrantKind::ClientCredentials => {
            for (key, set) in [
                ("refresh_token", rc.refresh_token.is_some()),
                ("username", rc.username.is_some()),
                ("password", rc.password.is_some()),
            ] {
                if set {
                    errors.push(
                        ctx,
                        format!("`{key}` does not apply to `grant: client_credentials`"),
                    );
                }
            }
            oauth2::Grant::ClientCredentials
        }
        GrantKind::RefreshToken => {
            required_secret(ctx, "refresh_token", &rc.refresh_token, errors);
            oauth2::Grant::RefreshToken {
                seed: secret("refresh_token", &rc.refresh_token, errors)
                    .unwrap_or_else(|| Secret::new("")),
            }
        }
        GrantKind::Password => {
            let username = required(ctx, "username", rc.username.clone(), errors);
            required_secret(ctx, "password", &rc.password, errors);
            oauth2::Grant::Password {
                username: username.unwrap_or_default(),
                password: secret("password", &rc.password, errors)
                    .unwrap_or_else(|| Secret::new("")),
            }
        }
    };
    if grant_kind != GrantKind::Password
        && rc.username.is_some()
        && grant_kind != GrantKind::ClientCredentials
    {
        errors.push(ctx, "`username` only applies to `grant: password`");
    }
    let endpoint = match (&rc.token_url, &rc.issuer) {
        (Some(u), None) => {
            oauth2::TokenEndpoint::Url(url(ctx, "token_url", Some(u), "", errors, warnings))
        }
        (None, Some(i)) => {
            oauth2::TokenEndpoint::Issuer(url(ctx, "issuer", Some(i), "", errors, warnings))
        }
        (Some(_), Some(_)) => {
            errors.push(ctx, "set `token_url` or `issuer` (discovery), not both");
            oauth2::TokenEndpoint::Url(String::new())
        }
        (None, None) => {
            errors.push(
                ctx,
                "`token_url` is required for provider oauth2 (or `issuer`, to discover it)",
            );
            oauth2::TokenEndpoint::Url(String::new())
        }
    };
    let params: Vec<(String, String)> = rc.params.clone().unwrap_or_default().into_iter().collect();
    for (key, _) in &params {
        const RESERVED: [&str; 9] = [
            "grant_type",
            "client_id",
            "client_secret",
            "refresh_token",
            "username",
            "password",
            "scope",
            "audience",
            "resource",
        ];
        if RESERVED.contains(&key.as_str()) {
            errors.push(
                ctx,
                format!("`params.{key}` is set by tokend itself; use the `{key}` key instead"),
            );
        }
    }
    ProviderConfig::OAuth2(oauth2::OAuth2 {
        endpoint,
        client_id: client_id.unwrap_or_default(),
        client_secret,
        auth,
        grant,
        scope: rc.scope.clone().filter(|s| !s.is_empty()),
        audience: rc.audience.clone(),
        resource: rc.resource.clone(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::*;

    #[test]
    fn oauth2_table() {
        const OK: &str = "token_url: https://o/t\nclient_id: i\nclient_secret: {env: S}\n";
        let cases: &[(String, &[&str])] = &[
            (OK.to_owned(), &[]),
            (
                "issuer: https://o\nclient_id: i\nauth: none".to_owned(),
                &[],
            ),
            (
                format!("{OK}auth: none"),
                &["c: `auth: none` is a public client: remove `client_secret`"],
            ),
            (
                "token_url: https://o/t\nclient_id: i".to_owned(),
                &["c: `client_secret` is required"],
            ),
            (
                format!("{OK}refresh_token: {{env: R}}"),
                &["c: `refresh_token` does not apply to `grant: client_credentials`"],
            ),
            (
                format!("{OK}grant: refresh_token"),
                &["c: `refresh_token` is required"],
            ),
            (
                format!("{OK}grant: refresh_token\nrefresh_token: {{env: R}}\nusername: u"),
                &["c: `username` only applies to `grant: password`"],
            ),
            (
                format!("{OK}grant: password"),
                &["c: `username` is required", "c: `password` is required"],
            ),
            (
                format!("{OK}grant: password\nusername: u\npassword: {{env: P}}"),
                &[],
            ),
            (
                format!("{OK}issuer: https://o"),
                &["c: set `token_url` or `issuer` (discovery), not both"],
            ),
            (
                "client_id: i\nclient_secret: {env: S}".to_owned(),
                &["c: `token_url` is required for provider oauth2 (or `issuer`, to discover it)"],
            ),
            (
                format!("{OK}params: {{scope: x, tenant: t}}"),
                &["c: `params.scope` is set by tokend itself; use the `scope` key instead"],
            ),
        ];
        for (keys, want) in cases {
            assert_eq!(errors("oauth2", keys, build), *want, "{keys}");
        }
    }
}
