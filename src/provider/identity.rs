//! The fingerprint of who a token is issued to and with which secrets, fed into the hasher
//! part by part so that no text holding a password is ever built. State files keep it: its
//! bytes are the hash of the same `kind|part|part…` text tokend hashed before, so it must
//! never change shape (the test below pins every provider's text).

use std::fmt;

use sha2::{Digest, Sha256};

use super::{Provider, ProviderConfig};
use crate::secret::Secret;

/// Writes formatted text straight into the hasher.
struct Feed<'a>(&'a mut Sha256);

impl fmt::Write for Feed<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// Feeds `value` as `format!("{value}")` would print it.
pub fn display(h: &mut Sha256, value: impl fmt::Display) {
    // Writing into a hasher cannot fail.
    let _ = fmt::Write::write_fmt(&mut Feed(h), format_args!("{value}"));
}

/// Feeds `value` as `format!("{value:?}")` would print it; never for a secret's container
/// (its Debug says `[redacted]`), use [`secret`].
pub fn debug(h: &mut Sha256, value: impl fmt::Debug) {
    let _ = fmt::Write::write_fmt(&mut Feed(h), format_args!("{value:?}"));
}

/// Feeds `parts` joined by `|` as `format!("{:?}", parts.join("|"))` prints them, without
/// joining them into a text that would hold a secret. `str`'s Debug escapes each character
/// on its own, as `char::escape_debug` does except that it leaves `'` alone.
pub fn debug_joined(h: &mut Sha256, parts: &[&str]) {
    text(h, "\"");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            sep(h);
        }
        for c in part.chars() {
            match c {
                '\'' => text(h, "'"),
                c => display(h, c.escape_debug()),
            }
        }
    }
    text(h, "\"");
}

pub fn text(h: &mut Sha256, value: &str) {
    h.update(value.as_bytes());
}

pub fn secret(h: &mut Sha256, value: &Secret) {
    h.update(value.expose().as_bytes());
}

/// The separator between parts.
pub fn sep(h: &mut Sha256) {
    h.update(b"|");
}

/// The fingerprint kept in state as `identity`.
pub fn fingerprint(provider: &ProviderConfig) -> String {
    let mut h = Sha256::new();
    provider.identity(&mut h);
    crate::secret::short_fingerprint(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::http_json::{HttpJson, Request};
    use crate::provider::oauth2::{Grant, OAuth2, TokenEndpoint};
    use crate::provider::saba::Saba;
    use crate::provider::vandar::{Login, LoginVersion, Vandar};
    use crate::provider::yavapteke::Yavapteke;
    use crate::secret::fingerprint as text_fingerprint;

    /// `engine::identity` as it was before the parts moved into the providers, verbatim.
    fn before(provider: &ProviderConfig) -> String {
        let text = match provider {
            ProviderConfig::Vandar(v) => format!(
                "vandar|{}|{}|{}",
                v.base_url,
                v.login
                    .as_ref()
                    .map(|l| format!("{}|{}", l.mobile, l.password.expose()))
                    .unwrap_or_default(),
                v.refresh_token
                    .as_ref()
                    .map(|r| r.expose())
                    .unwrap_or_default()
            ),
            ProviderConfig::Saba(s) => format!(
                "saba|{}|{}|{}|{}|{}",
                s.base_url,
                s.username,
                s.password.expose(),
                s.virtual_number,
                s.token_valid_days
            ),
            ProviderConfig::Yavapteke(y) => format!(
                "yavapteke|{}|{}|{}",
                y.token_url,
                y.client_id,
                y.client_secret.expose()
            ),
            ProviderConfig::OAuth2(o) => format!(
                "oauth2|{:?}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}",
                o.endpoint,
                o.client_id,
                o.client_secret.as_ref().map(|s| s.expose()).unwrap_or(""),
                o.scope,
                o.audience,
                o.resource,
                o.params,
                match &o.grant {
                    Grant::ClientCredentials => String::new(),
                    Grant::RefreshToken { seed } => seed.expose().to_owned(),
                    Grant::Password { username, password } =>
                        format!("{username}|{}", password.expose()),
                }
            ),
            ProviderConfig::HttpJson(h) => format!(
                "http_json|{}|{}|{:?}|{}",
                h.login.url,
                h.login.body,
                h.refresh.as_ref().map(|r| &r.url),
                h.secrets
                    .iter()
                    .map(|(n, s)| format!("{n}={}", s.expose()))
                    .collect::<Vec<_>>()
                    .join("|")
            ),
        };
        text_fingerprint(&text)
    }

    fn s(text: &str) -> Secret {
        Secret::new(text)
    }

    /// Every provider with every optional part present and absent, with texts that need
    /// escaping in Debug form and a `|` inside a secret.
    fn providers() -> Vec<ProviderConfig> {
        let vandar = |refresh: Option<&str>, login: bool| {
            ProviderConfig::Vandar(Vandar {
                base_url: "https://api.vandar.io".into(),
                refresh_token: refresh.map(s),
                login: login.then(|| Login {
                    mobile: "09120000000".into(),
                    password: s("p|ss\"ω"),
                }),
                login_version: LoginVersion::Auto,
            })
        };
        let oauth2 = |endpoint: TokenEndpoint, secret: Option<&str>, grant: Grant, extra: bool| {
            ProviderConfig::OAuth2(OAuth2 {
                endpoint,
                client_id: "client-1".into(),
                client_secret: secret.map(s),
                // Not part of the identity; `Default` so this compiles wherever `ClientAuth` lives.
                auth: Default::default(),
                grant,
                scope: extra.then(|| "read \"all\"".into()),
                audience: extra.then(|| "https://api".into()),
                resource: None,
                params: if extra {
                    vec![("k".into(), "v w".into()), ("x".into(), String::new())]
                } else {
                    Vec::new()
                },
            })
        };
        let http_json = |refresh: bool, secrets: &[(&str, &str)]| {
            ProviderConfig::HttpJson(HttpJson {
                login: Request {
                    url: "https://x/login".into(),
                    body: serde_json::json!({"user": "a", "password": "{{password}}", "n": [1, true]}),
                },
                refresh: refresh.then(|| Request {
                    url: "https://x/refresh".into(),
                    body: serde_json::json!({"r": "{{refresh_token}}"}),
                }),
                secrets: secrets.iter().map(|(n, v)| ((*n).into(), s(v))).collect(),
                token_pointer: "/access".into(),
                refresh_token_pointer: Some("/refresh".into()),
                expires_in_pointer: None,
            })
        };
        vec![
            vandar(Some("def502seed"), true),
            vandar(Some("def502seed"), false),
            vandar(None, true),
            vandar(None, false),
            ProviderConfig::Saba(Saba {
                base_url: "https://api.sabapayamak.com".into(),
                username: "user".into(),
                password: s("hunter2"),
                virtual_number: "3000".into(),
                token_valid_days: 30,
            }),
            ProviderConfig::Yavapteke(Yavapteke {
                token_url: "https://yavapteke.ru/token".into(),
                client_id: "id".into(),
                client_secret: s("sec"),
                client_secret_param: "secret".into(),
            }),
            oauth2(
                TokenEndpoint::Url("https://idp/token".into()),
                Some("cs"),
                Grant::ClientCredentials,
                true,
            ),
            oauth2(
                TokenEndpoint::Issuer("https://idp/\"q\"".into()),
                None,
                Grant::RefreshToken { seed: s("seed") },
                false,
            ),
            oauth2(
                TokenEndpoint::Url("https://idp/token".into()),
                Some("cs"),
                Grant::Password {
                    username: "alice".into(),
                    password: s("pw|x'\"\\\u{301}\n"),
                },
                true,
            ),
            http_json(true, &[("password", "pw"), ("key", "k|y")]),
            http_json(false, &[("password", "pw")]),
            http_json(false, &[]),
        ]
    }

    #[test]
    fn fingerprints_are_byte_identical_to_the_text_hashed_before() {
        for p in providers() {
            assert_eq!(fingerprint(&p), before(&p), "{p:?}");
        }
    }

    #[test]
    fn debug_joined_prints_what_debug_of_the_joined_text_prints() {
        let texts = [
            "",
            "plain",
            "it's",
            "\"q\"",
            "back\\slash",
            "\t\n\r\0\u{7f}\u{1b}",
            "ω پسورد",
            "\u{301}leading mark",
            "e\u{301}",
            "zero\u{200b}width",
            "\u{feff}",
            "|",
        ];
        for a in texts {
            for b in texts {
                let mut h = Sha256::new();
                debug_joined(&mut h, &[a, b]);
                assert_eq!(
                    crate::secret::short_fingerprint(h),
                    text_fingerprint(&format!("{:?}", format!("{a}|{b}"))),
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn every_part_counts() {
        let all: Vec<String> = providers().iter().map(fingerprint).collect();
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len(), "{all:?}");
    }
}
