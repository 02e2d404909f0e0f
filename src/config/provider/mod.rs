//! Each provider's keys: which it takes (`KEYS`, checked for every credential) and how they
//! become its [`ProviderConfig`].

mod http_json;
mod oauth2;
mod saba;
mod vandar;
mod yavapteke;

use super::build::{Errors, SecretReader};
use super::raw::{ProviderKind, RawCredential};
use crate::provider::ProviderConfig;
use crate::secret::SecretSource;

/// The provider-specific keys `kind` takes; any other provider key is an error.
pub(super) fn keys(kind: ProviderKind) -> &'static [&'static str] {
    match kind {
        ProviderKind::Vandar => vandar::KEYS,
        ProviderKind::Saba => saba::KEYS,
        ProviderKind::Yavapteke => yavapteke::KEYS,
        ProviderKind::Oauth2 => oauth2::KEYS,
        ProviderKind::HttpJson => http_json::KEYS,
    }
}

pub(super) fn build(
    rc: &RawCredential,
    ctx: &str,
    reader: &SecretReader,
    errors: &mut Errors,
    warnings: &mut Vec<String>,
) -> ProviderConfig {
    match rc.provider {
        ProviderKind::Vandar => vandar::build(rc, ctx, reader, errors, warnings),
        ProviderKind::Saba => saba::build(rc, ctx, reader, errors, warnings),
        ProviderKind::Yavapteke => yavapteke::build(rc, ctx, reader, errors, warnings),
        ProviderKind::Oauth2 => oauth2::build(rc, ctx, reader, errors, warnings),
        ProviderKind::HttpJson => http_json::build(rc, ctx, reader, errors, warnings),
    }
}

pub(super) fn required(
    ctx: &str,
    field: &str,
    value: Option<String>,
    errors: &mut Errors,
) -> Option<String> {
    match value {
        Some(v) if !v.is_empty() => Some(v),
        Some(_) => {
            errors.push(ctx, format!("`{field}` is empty"));
            None
        }
        None => {
            errors.push(ctx, format!("`{field}` is required"));
            None
        }
    }
}

pub(super) fn required_secret(
    ctx: &str,
    field: &str,
    value: &Option<SecretSource>,
    errors: &mut Errors,
) {
    if value.is_none() {
        errors.push(ctx, format!("`{field}` is required"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::build::testing;

    /// The errors one provider's `build` reports for a credential with these keys.
    pub(super) fn errors(
        provider: &str,
        keys: &str,
        build: fn(
            &RawCredential,
            &str,
            &SecretReader,
            &mut Errors,
            &mut Vec<String>,
        ) -> ProviderConfig,
    ) -> Vec<String> {
        let rc = testing::credential(provider, keys);
        testing::run(|reader, errors, warnings| build(&rc, "c", reader, errors, warnings)).1
    }

    /// Every provider key belongs to some provider, and the lists have no duplicates.
    #[test]
    fn keys_are_listed_once_per_provider() {
        for kind in [
            ProviderKind::Vandar,
            ProviderKind::Saba,
            ProviderKind::Yavapteke,
            ProviderKind::Oauth2,
            ProviderKind::HttpJson,
        ] {
            let keys = keys(kind);
            let mut sorted = keys.to_vec();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), keys.len(), "{kind:?}");
        }
    }
}
