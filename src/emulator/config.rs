//! What the emulators accept as valid credentials and how long the tokens they issue live.
//! Deserializable so `tokend emulate` can take it from a file; durations are humantime strings.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Credentials the emulated providers accept and the lifetimes of what they issue.
///
/// Every field has a default (see [`Default`]), so a config file only names what it changes;
/// unknown keys are rejected so a typo does not silently fall back to a default. Durations
/// are written as `"5d"`, `"3600s"`, `"500ms"`. Issued lifetimes are rounded down to whole
/// seconds (every wire format counts in seconds), with a floor of one second.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    /// Vandar v2 login: the accepted mobile number.
    pub vandar_mobile: String,
    /// Vandar v2 login: the accepted password.
    pub vandar_password: String,
    /// Vandar v3: refresh tokens valid from the start (as if created in the dashboard).
    pub vandar_refresh_seeds: Vec<String>,
    /// Lifetime of Vandar access tokens (JWT `exp` of both flows, `expires_in` of v3).
    #[serde(deserialize_with = "duration")]
    pub vandar_lifetime: Duration,
    /// Lifetime of Vandar refresh tokens (docs.vandar.io: 10 days); an older one is 401.
    #[serde(deserialize_with = "duration")]
    pub vandar_refresh_lifetime: Duration,
    /// A refresh token is refused (401) once the access token issued with it has expired:
    /// docs.vandar.io says to renew before it does. Seeds have no such access token.
    pub vandar_refresh_needs_live_access: bool,
    /// Serve `POST /v3/login` (an OAuth pair whose refresh token starts a chain), as the
    /// vendor's package uses today. `false`: only the seed's `/v2/login` exists (404).
    pub vandar_v3_login: bool,
    /// Vandar's throttle: at most this many POSTs per `vandar_post_window`, then 429 with
    /// `Retry-After` (Laravel's throttle: the window starts with its first request). 0: off.
    pub vandar_post_limit: u32,
    #[serde(deserialize_with = "duration")]
    pub vandar_post_window: Duration,
    /// Saba Payamak answers in the seed's shape (PascalCase `data.Token`, a string
    /// `status`, `errors` as strings) and matches request keys exactly, instead of the live
    /// API's camelCase, numeric status, `{message, code, field, url}` errors and
    /// case-insensitive request keys.
    pub saba_seed_shape: bool,
    /// Saba Payamak: the accepted username.
    pub saba_username: String,
    /// Saba Payamak: the accepted password.
    pub saba_password: String,
    /// Saba Payamak: the sender number the account owns.
    pub saba_virtual_number: String,
    /// When shorter than `TokenValidDay` days, the JWT `exp` uses this instead, so tests can
    /// check that a client trusts `exp` over the lifetime it asked for.
    #[serde(deserialize_with = "optional_duration")]
    pub saba_lifetime_cap: Option<Duration>,
    /// yaVapteke: the accepted `client_id`.
    pub yavapteke_client_id: String,
    /// yaVapteke: the accepted secret (sent as `client_secret` or `secret`).
    pub yavapteke_client_secret: String,
    /// yaVapteke: `expires_in` of issued tokens.
    #[serde(deserialize_with = "duration")]
    pub yavapteke_lifetime: Duration,
    /// Generic OAuth2: the accepted `client_id`.
    pub oauth2_client_id: String,
    /// Generic OAuth2: the accepted `client_secret`.
    pub oauth2_client_secret: String,
    /// Generic OAuth2 password grant: the accepted resource owner.
    pub oauth2_username: String,
    pub oauth2_password: String,
    /// Generic OAuth2: `expires_in` and JWT `exp` of issued tokens.
    #[serde(deserialize_with = "duration")]
    pub oauth2_lifetime: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            vandar_mobile: "09123456789".into(),
            vandar_password: "vandar-pass".into(),
            vandar_refresh_seeds: vec!["def502seed".into()],
            // Both Vandar pages document five days.
            vandar_lifetime: Duration::from_secs(432_000),
            vandar_refresh_lifetime: Duration::from_secs(10 * 86_400),
            vandar_refresh_needs_live_access: true,
            vandar_v3_login: true,
            vandar_post_limit: 30,
            vandar_post_window: Duration::from_secs(3),
            saba_seed_shape: false,
            saba_username: "sabauser".into(),
            saba_password: "saba-pass".into(),
            saba_virtual_number: "30001234".into(),
            saba_lifetime_cap: None,
            yavapteke_client_id: "3f37b142-e371-461e-924c-a913ff878534".into(),
            yavapteke_client_secret: "yav-secret".into(),
            yavapteke_lifetime: Duration::from_secs(3600),
            oauth2_client_id: "tokend".into(),
            oauth2_client_secret: "oauth-secret".into(),
            oauth2_username: "alice".into(),
            oauth2_password: "alice-pass".into(),
            oauth2_lifetime: Duration::from_secs(3600),
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    match Option::<String>::deserialize(de)? {
        None => Ok(None),
        Some(text) => humantime::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}
