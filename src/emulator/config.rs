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
            saba_username: "sabauser".into(),
            saba_password: "saba-pass".into(),
            saba_virtual_number: "30001234".into(),
            saba_lifetime_cap: None,
            yavapteke_client_id: "3f37b142-e371-461e-924c-a913ff878534".into(),
            yavapteke_client_secret: "yav-secret".into(),
            yavapteke_lifetime: Duration::from_secs(3600),
            oauth2_client_id: "tokend".into(),
            oauth2_client_secret: "oauth-secret".into(),
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
