//! Fetching tokens: one module per provider behind the [`Provider`] trait, the answer helpers
//! and the transient/permanent error split. The HTTP client itself lives in [`crate::net`].
//!
//! Each provider is two layers: a pure `parse_*` function from an [`Answer`] to a [`Fetched`]
//! (unit-tested and fuzzed), and an async `fetch` that builds the request.

mod answer;
mod error;
pub mod fallback;
pub mod http_json;
pub mod identity;
pub mod jwt;
pub mod limit;
pub mod oauth2;
pub mod saba;
pub mod vandar;
pub mod yavapteke;

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use sha2::Sha256;

use crate::net::HttpClient;
use crate::secret::Secret;
pub use answer::{
    Answer, AnswerExt, Failure, blocked, code_of, error_list, expires_in, get_ci, is_block_page,
    is_json_object, parse_retry_after, provider_message, salvage_refresh_token, str_at,
    token_field,
};
pub use error::FetchError;

/// A provider's configuration with secrets resolved: the closed set tokend speaks.
#[derive(Clone, Debug, PartialEq)]
pub enum ProviderConfig {
    Vandar(vandar::Vandar),
    Saba(saba::Saba),
    Yavapteke(yavapteke::Yavapteke),
    OAuth2(oauth2::OAuth2),
    HttpJson(http_json::HttpJson),
}

/// The providers by name, as `provider:` in the config, `status` and the logs say them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Vandar,
    Saba,
    Yavapteke,
    Oauth2,
    #[serde(rename = "http_json")]
    HttpJson,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Vandar => "vandar",
            ProviderKind::Saba => "saba",
            ProviderKind::Yavapteke => "yavapteke",
            ProviderKind::Oauth2 => "oauth2",
            ProviderKind::HttpJson => "http_json",
        }
    }
}

impl ProviderConfig {
    /// The one mapping from a configured provider to its name.
    pub fn kind(&self) -> ProviderKind {
        match self {
            ProviderConfig::Vandar(_) => ProviderKind::Vandar,
            ProviderConfig::Saba(_) => ProviderKind::Saba,
            ProviderConfig::Yavapteke(_) => ProviderKind::Yavapteke,
            ProviderConfig::OAuth2(_) => ProviderKind::Oauth2,
            ProviderConfig::HttpJson(_) => ProviderKind::HttpJson,
        }
    }
}

/// The one `match` over the configured providers for dispatch: `each!(config, p => expr)`
/// evaluates `expr` with `p` bound to whichever provider `config` holds.
macro_rules! each {
    ($config:expr, $p:ident => $body:expr) => {
        match $config {
            ProviderConfig::Vandar($p) => $body,
            ProviderConfig::Saba($p) => $body,
            ProviderConfig::Yavapteke($p) => $body,
            ProviderConfig::OAuth2($p) => $body,
            ProviderConfig::HttpJson($p) => $body,
        }
    };
}

/// What every provider does: fetch a token, given the current refresh token if the
/// provider keeps a refresh chain.
pub trait Provider {
    /// The lifetime the provider's documentation promises, if it says.
    fn documented_lifetime(&self) -> Option<Duration>;

    /// Whether this credential keeps a rotating refresh token in state.
    fn uses_refresh_chain(&self) -> bool {
        false
    }

    /// The refresh token from the configuration that starts a chain, if any.
    fn refresh_seed(&self) -> Option<&Secret> {
        None
    }

    /// How long a refresh token of this provider's chain lives, if the provider says.
    fn refresh_token_lifetime(&self) -> Option<Duration> {
        None
    }

    /// What happens, or what a person must do, once the refresh chain is dead, for the
    /// message that explains why it died.
    fn dead_chain_remedy(&self) -> &'static str {
        "create a new token in the provider's dashboard and put its refresh token in the config"
    }

    /// A description of what the provider will be asked, for `check` (never a secret).
    fn plan(&self) -> String;

    /// Every secret this provider sends, so error texts that echo one can be redacted.
    fn secrets(&self) -> Vec<&Secret>;

    /// Secrets as they go on the wire in another encoding (Basic credentials), so that an
    /// error text echoing them is redacted too.
    fn encoded_secrets(&self) -> Vec<Secret> {
        Vec::new()
    }

    /// Feeds who a token is issued to and with which secrets into `h`, `|` between parts
    /// (see [`identity`]): a change means a stored token must not be reused.
    fn identity(&self, h: &mut Sha256);

    fn fetch(
        &self,
        http: &HttpClient,
        refresh_token: Option<&Secret>,
    ) -> impl Future<Output = Result<Fetched, Failure>> + Send;
}

impl Provider for ProviderConfig {
    fn documented_lifetime(&self) -> Option<Duration> {
        each!(self, p => p.documented_lifetime())
    }

    fn uses_refresh_chain(&self) -> bool {
        each!(self, p => p.uses_refresh_chain())
    }

    fn refresh_seed(&self) -> Option<&Secret> {
        each!(self, p => p.refresh_seed())
    }

    fn refresh_token_lifetime(&self) -> Option<Duration> {
        each!(self, p => p.refresh_token_lifetime())
    }

    fn secrets(&self) -> Vec<&Secret> {
        each!(self, p => p.secrets())
    }

    fn encoded_secrets(&self) -> Vec<Secret> {
        each!(self, p => p.encoded_secrets())
    }

    /// The provider's name first, so that two providers' parts can never collide.
    fn identity(&self, h: &mut Sha256) {
        identity::text(h, self.kind().as_str());
        identity::sep(h);
        each!(self, p => p.identity(h))
    }

    fn dead_chain_remedy(&self) -> &'static str {
        each!(self, p => p.dead_chain_remedy())
    }

    fn plan(&self) -> String {
        each!(self, p => p.plan())
    }

    async fn fetch(
        &self,
        http: &HttpClient,
        refresh_token: Option<&Secret>,
    ) -> Result<Fetched, Failure> {
        each!(self, p => p.fetch(http, refresh_token).await)
    }
}

/// A provider's successful answer, validated but not yet turned into a [`crate::token::Token`]
/// (that needs the clock and the lifetime rules).
#[derive(Debug)]
pub struct Fetched {
    pub token: Secret,
    pub token_type: String,
    pub expires_in: Option<Duration>,
    pub refresh: RefreshUpdate,
    /// Which flow produced it ("login", "refresh", "client_credentials"), for logs.
    pub flow: &'static str,
}

/// What happened to the refresh chain during a fetch.
#[derive(Debug, PartialEq)]
pub enum RefreshUpdate {
    /// No refresh token involved, or the provider did not rotate it.
    Unchanged,
    /// A new refresh token came back; the one sent is dead from now on.
    Rotated(Secret),
    /// The refresh token was rejected and the fetch fell back to a login: the chain is dead
    /// and must not be used again until the configuration provides a new seed.
    Rejected { message: String },
    /// The refresh token was rejected and the login that followed started a new chain
    /// (Vandar's v3 login, OAuth2's password grant): `next` replaces the dead chain.
    Restarted { next: Secret, message: String },
}

/// The redactor for one request of `provider`: its secrets, the refresh token sent, and the
/// secrets as they went on the wire in another encoding.
pub fn redactor(
    provider: &ProviderConfig,
    refresh_token: Option<&Secret>,
    proxy_password: Option<&Secret>,
) -> crate::redact::Redactor {
    let mut secrets: Vec<&str> = provider.secrets().into_iter().map(Secret::expose).collect();
    secrets.extend(refresh_token.map(Secret::expose));
    secrets.extend(proxy_password.map(Secret::expose));
    let composites = provider
        .encoded_secrets()
        .iter()
        .map(|s| s.expose().to_owned())
        .collect::<Vec<_>>();
    crate::redact::Redactor::new(secrets, composites)
}
