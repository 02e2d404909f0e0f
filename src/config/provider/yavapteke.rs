//! yaVapteke: client credentials, with the secret under a configurable form field.

use super::{required, required_secret};
use crate::config::build::{Errors, SecretReader, url};
use crate::config::raw::RawCredential;
use crate::provider::{ProviderConfig, yavapteke};
use crate::secret::Secret;
use crate::secret::SecretSource;

/// The provider keys this provider takes.
pub(super) const KEYS: &[&str] = &[
    "token_url",
    "client_id",
    "client_secret",
    "client_secret_param",
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
    required_secret(ctx, "client_secret", &rc.client_secret, errors);
    let client_secret = secret("client_secret", &rc.client_secret, errors);
    let param = rc
        .client_secret_param
        .clone()
        .unwrap_or_else(|| yavapteke::DEFAULT_SECRET_PARAM.to_owned());
    if param.is_empty() || !param.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        errors.push(
            ctx,
            format!("`client_secret_param` `{param}` is not a form field name"),
        );
    }
    ProviderConfig::Yavapteke(yavapteke::Yavapteke {
        token_url: url(
            ctx,
            "token_url",
            rc.token_url.as_deref(),
            yavapteke::DEFAULT_TOKEN_URL,
            errors,
            warnings,
        ),
        client_id: client_id.unwrap_or_default(),
        client_secret: client_secret.unwrap_or_else(|| Secret::new("")),
        client_secret_param: param,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::*;

    #[test]
    fn yavapteke_table() {
        const OK: &str = "client_id: i\nclient_secret: {env: S}\n";
        let cases: &[(String, &[&str])] = &[
            (OK.to_owned(), &[]),
            (format!("{OK}client_secret_param: app_secret2"), &[]),
            (
                format!("{OK}client_secret_param: a-b"),
                &["c: `client_secret_param` `a-b` is not a form field name"],
            ),
            (
                format!("{OK}client_secret_param: ''"),
                &["c: `client_secret_param` `` is not a form field name"],
            ),
            (
                String::new(),
                &[
                    "c: `client_id` is required",
                    "c: `client_secret` is required",
                ],
            ),
        ];
        for (keys, want) in cases {
            assert_eq!(errors("yavapteke", keys, build), *want, "{keys}");
        }
    }
}
