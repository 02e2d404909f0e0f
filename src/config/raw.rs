//! The configuration file exactly as written: serde types with `deny_unknown_fields`, no
//! defaults applied and nothing validated. `build/` turns this into [`super::Config`].
//!
//! A credential is one flat struct rather than an enum tagged by `provider`, on purpose:
//! serde buffers tagged enums, which throws away the line and column of every error inside
//! a credential. Which keys belong to which provider is checked when it is built (each
//! provider's `KEYS` in `config/provider/`).

use std::path::PathBuf;

use serde::Deserialize;

use crate::secret::SecretSource;
use crate::units::{Dur, Mode, Share};
// The provider list lives with the providers; the config names it here for `RawCredential`.
pub use crate::provider::ProviderKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub state_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub log: Option<RawLog>,
    pub defaults: Option<RawDefaults>,
    pub credentials: Option<Vec<RawCredential>>,
    pub ha: Option<RawHa>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHa {
    pub backend: String,
    pub group: String,
    pub identity: Option<String>,
    pub role: Option<String>,
    pub lease: Option<Dur>,
    pub claim_ttl: Option<Dur>,
    pub takeover_after: Option<Dur>,
    pub etcd: Option<RawEtcd>,
    pub kubernetes: Option<RawKube>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    pub endpoints: Vec<String>,
    pub prefix: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    pub timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKube {
    pub namespace: Option<String>,
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub refresh: Option<RawRefresh>,
    pub retry: Option<RawRetry>,
    pub timeout: Option<Dur>,
    pub ca_file: Option<PathBuf>,
    pub proxy: Option<RawProxy>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRefresh {
    pub at: Option<Share>,
    /// `every: null` is allowed and means "use `at`", so this is Option<Option<_>>.
    #[serde(default, deserialize_with = "explicit_null")]
    pub every: Option<Option<Dur>>,
    pub jitter: Option<Share>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub initial: Option<Dur>,
    pub max: Option<Dur>,
    /// Delay between attempts after a permanent error (rejected credentials).
    pub permanent: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    pub name: String,
    pub provider: ProviderKind,
    pub refresh: Option<RawRefresh>,
    pub retry: Option<RawRetry>,
    pub timeout: Option<Dur>,
    pub ca_file: Option<PathBuf>,
    pub proxy: Option<RawProxy>,
    pub lifetime: Option<Dur>,
    pub outputs: Option<Vec<RawOutput>>,
    pub on_refresh: Option<Vec<RawHook>>,

    // Provider-specific keys; validation rejects those that do not apply.
    pub base_url: Option<String>,
    pub token_url: Option<String>,
    pub refresh_token: Option<SecretSource>,
    pub mobile: Option<String>,
    /// Vandar: which login endpoint (`auto`, `v3`, `v2`).
    pub login_version: Option<crate::provider::vandar::LoginVersion>,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    pub virtual_number: Option<String>,
    pub token_valid_days: Option<i64>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretSource>,
    pub client_secret_param: Option<String>,
    pub scope: Option<String>,
    pub auth: Option<RawClientAuth>,
    pub grant: Option<GrantKind>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
    /// Extra form parameters for the token request.
    pub params: Option<std::collections::BTreeMap<String, String>>,

    // http_json
    pub login_request: Option<RawRequest>,
    pub refresh_request: Option<RawRequest>,
    pub secrets: Option<std::collections::BTreeMap<String, SecretSource>>,
    pub token_pointer: Option<String>,
    pub refresh_token_pointer: Option<String>,
    pub expires_in_pointer: Option<String>,
}

/// One JSON POST of an `http_json` credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequest {
    pub url: String,
    pub body: serde_yaml::Value,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    #[default]
    ClientCredentials,
    RefreshToken,
    Password,
}

/// `auth:` as written; the builder maps it into [`crate::provider::oauth2::ClientAuth`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawClientAuth {
    #[default]
    ClientSecretPost,
    ClientSecretBasic,
    /// A public client: `client_id` in the form, no secret.
    None,
}

impl From<RawClientAuth> for crate::provider::oauth2::ClientAuth {
    fn from(auth: RawClientAuth) -> Self {
        match auth {
            RawClientAuth::ClientSecretPost => Self::ClientSecretPost,
            RawClientAuth::ClientSecretBasic => Self::ClientSecretBasic,
            RawClientAuth::None => Self::None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    pub file: Option<PathBuf>,
    pub dir: Option<PathBuf>,
    pub format: Option<OutputFormat>,
    pub template: Option<String>,
    pub env_prefix: Option<String>,
    pub mode: Option<Mode>,
    pub group: Option<String>,
    pub kubernetes_secret: Option<RawKubeSecret>,
}

/// `kubernetes_secret:` of an output (SPEC.md "Kubernetes Secret output").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubeSecret {
    pub name: String,
    pub namespace: Option<String>,
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    /// `env` for `NAME_TOKEN`/`NAME_EXPIRES_AT` keys; absent: the `dir` output's keys.
    pub format: Option<OutputFormat>,
    pub env_prefix: Option<String>,
    /// `None`: in-cluster (the pod's ServiceAccount), else `$KUBECONFIG` if set.
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Raw,
    Json,
    Env,
    Template,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    pub signal: Option<String>,
    pub pid_file: Option<PathBuf>,
    pub exec: Option<Vec<String>>,
    pub timeout: Option<Dur>,
    /// Names of tokend's environment variables an `exec` hook may see (it gets no others).
    pub env: Option<Vec<String>>,
}

/// `proxy:` as written: a URL or `direct` as a string, or a map with the password as a secret.
/// Deserialized by hand rather than `#[serde(untagged)]`, which would replace every error
/// inside the map (and its line and column) with "did not match any variant".
#[derive(Debug)]
pub enum RawProxy {
    Text(String),
    Auth(RawProxyAuth),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyAuth {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
}

impl<'de> Deserialize<'de> for RawProxy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawProxy;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a proxy URL, `direct`, or a map with `url`, `username`, `password`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawProxy, E> {
                Ok(RawProxy::Text(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawProxy, A::Error> {
                RawProxyAuth::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawProxy::Auth)
            }
        }
        d.deserialize_any(V)
    }
}

fn explicit_null<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
