//! Saba: `username`, `password` and `virtual_number`, and how many days a token lasts.

use super::{required, required_secret};
use crate::config::build::{Errors, SecretReader, url};
use crate::config::raw::RawCredential;
use crate::provider::{ProviderConfig, saba};
use crate::secret::Secret;
use crate::secret::SecretSource;

/// The provider keys this provider takes.
pub(super) const KEYS: &[&str] = &[
    "base_url",
    "username",
    "password",
    "virtual_number",
    "token_valid_days",
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
    let days = rc
        .token_valid_days
        .unwrap_or(i64::from(saba::DEFAULT_VALID_DAYS));
    if !(1..=365).contains(&days) {
        errors.push(
            ctx,
            format!("`token_valid_days` is {days}; Saba accepts 1 to 365"),
        );
    }
    let username = required(ctx, "username", rc.username.clone(), errors);
    let virtual_number = required(ctx, "virtual_number", rc.virtual_number.clone(), errors);
    required_secret(ctx, "password", &rc.password, errors);
    let password = secret("password", &rc.password, errors);
    ProviderConfig::Saba(saba::Saba {
        base_url: url(
            ctx,
            "base_url",
            rc.base_url.as_deref(),
            saba::DEFAULT_BASE_URL,
            errors,
            warnings,
        ),
        username: username.unwrap_or_default(),
        password: password.unwrap_or_else(|| Secret::new("")),
        virtual_number: virtual_number.unwrap_or_default(),
        token_valid_days: days.clamp(1, 365) as u16,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::errors;
    use super::*;

    #[test]
    fn saba_table() {
        const OK: &str = "username: u\npassword: {env: P}\nvirtual_number: '1'\n";
        let cases: &[(String, &[&str])] = &[
            (OK.to_owned(), &[]),
            (format!("{OK}token_valid_days: 365"), &[]),
            (
                format!("{OK}token_valid_days: 0"),
                &["c: `token_valid_days` is 0; Saba accepts 1 to 365"],
            ),
            (
                format!("{OK}token_valid_days: 366"),
                &["c: `token_valid_days` is 366; Saba accepts 1 to 365"],
            ),
            (
                "username: ''\npassword: {env: P}\nvirtual_number: '1'".to_owned(),
                &["c: `username` is empty"],
            ),
            (
                String::new(),
                &[
                    "c: `username` is required",
                    "c: `virtual_number` is required",
                    "c: `password` is required",
                ],
            ),
        ];
        for (keys, want) in cases {
            assert_eq!(errors("saba", keys, build), *want, "{keys}");
        }
    }
}
