//! vandar: a v3 refresh-token chain, a v2 `mobile` + `password` login, or both.

use crate::config::build::{Errors, SecretReader, url};
use crate::config::raw::RawCredential;
use crate::provider::{ProviderConfig, vandar};
use crate::secret::SecretSource;

/// The provider keys this provider takes.
pub(super) const KEYS: &[&str] = &[
    "base_url",
    "refresh_token",
    "mobile",
    "password",
    "login_version",
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
    let refresh_token = secret("refresh_token", &rc.refresh_token, errors);
    let password = secret("password", &rc.password, errors);
    let login = match (&rc.mobile, rc.password.is_some()) {
        (Some(mobile), true) => password.map(|password| vandar::Login {
            mobile: mobile.clone(),
            password,
        }),
        (None, false) => None,
        (Some(_), false) => {
            errors.push(ctx, "`mobile` is set but `password` is missing");
            None
        }
        (None, true) => {
            errors.push(ctx, "`password` is set but `mobile` is missing");
            None
        }
    };
    if rc.refresh_token.is_none() && rc.mobile.is_none() && rc.password.is_none() {
        errors.push(
            ctx,
            "vandar needs `refresh_token` (v3 chain) or `mobile` + `password` (v2 login), or both",
        );
    }
    ProviderConfig::Vandar(vandar::Vandar {
        base_url: url(
            ctx,
            "base_url",
            rc.base_url.as_deref(),
            vandar::DEFAULT_BASE_URL,
            errors,
            warnings,
        ),
        refresh_token,
        login,
        login_version: rc.login_version.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::*;

    #[test]
    fn vandar_table() {
        let cases: &[(&str, &[&str])] = &[
            ("refresh_token: {env: T}", &[]),
            ("mobile: '0912'\npassword: {env: P}", &[]),
            (
                "refresh_token: {env: T}\nmobile: '0912'\npassword: {env: P}",
                &[],
            ),
            (
                "mobile: '0912'",
                &["c: `mobile` is set but `password` is missing"],
            ),
            (
                "password: {env: P}",
                &["c: `password` is set but `mobile` is missing"],
            ),
            (
                "refresh_token: {env: T}\nmobile: '0912'",
                &["c: `mobile` is set but `password` is missing"],
            ),
            (
                "",
                &[
                    "c: vandar needs `refresh_token` (v3 chain) or `mobile` + `password` (v2 login), or both",
                ],
            ),
            (
                "refresh_token: {env: T}\nbase_url: ftp://v",
                &["c: `base_url` ftp://v has scheme `ftp`; use https"],
            ),
        ];
        for (keys, want) in cases {
            assert_eq!(errors("vandar", keys, build), *want, "{keys}");
        }
    }
}
