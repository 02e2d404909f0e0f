//! The state record: everything tokend remembers about one credential, the same JSON in a
//! local state file, an etcd key or a Kubernetes Secret. Secrets are written only here.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::token::Token;

/// The record format written now. Version 1 (before shared state) reads as version 2 with
/// generations 0 and no claim; a record from a newer tokend is refused, not misread.
pub const VERSION: u32 = 2;

/// Everything tokend remembers about one credential.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CredentialState {
    pub version: u32,
    pub credential: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<StoredToken>,
    /// The refresh token to send next. Single-use: replaced before anything else happens.
    #[serde(default, with = "opt_secret", skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    /// Fingerprint of the configured seed this chain grew from. When the configuration
    /// provides a different seed (a new dashboard token), the chain restarts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_seed: Option<String>,
    /// Fingerprints of every configured seed a chain in this record grew from: such a seed
    /// is spent and never sent again (a rolling update runs old configs beside new ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen_seeds: Vec<String>,
    /// When the provider issued `refresh_token` (absent for a seed from the config, whose
    /// age tokend cannot know): how old the chain is, for providers whose refresh tokens
    /// expire (Vandar: 10 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_issued_at: Option<Timestamp>,
    /// Fingerprint of who the token was issued to (provider, URL, account); a token from
    /// another identity is never reused after a config change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<StoredError>,
    /// Consecutive failed attempts; 0 after a success.
    #[serde(default)]
    pub failures: u32,
    /// When the next attempt is planned: the jittered refresh time, or the retry time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<Timestamp>,
    /// A refresh token the provider rejected: no longer sent, but kept (never destroyed by
    /// a rejection, HA.md I5) so a person, or a late commit of its successor, can recover.
    #[serde(default, with = "opt_secret", skip_serializing_if = "Option::is_none")]
    pub rejected_refresh_token: Option<Secret>,
    /// +1 per committed rotation of the refresh chain, never otherwise (shared state).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chain_gen: u64,
    /// +1 per committed access token (refresh or login): outputs are written only when it
    /// rises, so they never go back to an older token.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub token_gen: u64,
    /// Who is talking to the provider for this credential right now (shared state only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
    /// A request that carried the current refresh token got no answer, or a claim was taken
    /// over: the provider may have spent it. Said when the next send is rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_doubt: Option<InDoubt>,
    /// The claim whose commit wrote this record: makes an ambiguous commit decidable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit: Option<Commit>,
}

/// What a person or a probe may see of a record: no secret (the token only as its
/// fingerprint). The daemon's live view keeps this, not the record, so a copy of every
/// refresh token does not sit in the HTTP layer's memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub token: Option<TokenSummary>,
    /// A refresh token is held (the chain is alive).
    pub refresh_chain: bool,
    pub refresh_issued_at: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub last_error: Option<StoredError>,
    pub failures: u32,
    pub next_attempt: Option<Timestamp>,
    pub chain_gen: u64,
    pub token_gen: u64,
    pub claim_holder: Option<String>,
    /// Why the refresh token may already be spent, with who and which generation.
    pub in_doubt: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TokenSummary {
    pub fingerprint: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

impl CredentialState {
    pub fn summary(&self) -> Summary {
        Summary {
            token: self.token.as_ref().map(|t| TokenSummary {
                fingerprint: t.token.fingerprint(),
                issued_at: t.issued_at,
                expires_at: t.expires_at,
            }),
            refresh_chain: self.refresh_token.is_some(),
            refresh_issued_at: self.refresh_issued_at,
            last_success: self.last_success,
            last_error: self.last_error.clone(),
            failures: self.failures,
            next_attempt: self.next_attempt,
            chain_gen: self.chain_gen,
            token_gen: self.token_gen,
            claim_holder: self.claim.as_ref().map(|c| c.holder.clone()),
            in_doubt: self.in_doubt.as_ref().map(|d| {
                format!(
                    "{} (holder {}, generation {})",
                    d.why, d.holder, d.chain_gen
                )
            }),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A process's claim on the next provider call of one credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub id: String,
    pub holder: String,
    /// The chain generation whose refresh token the holder is about to send.
    pub chain_gen: u64,
    pub ttl_ms: u64,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InDoubt {
    pub chain_gen: u64,
    pub holder: String,
    pub claim_id: String,
    pub at: Timestamp,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub claim_id: String,
    pub by: String,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredToken {
    #[serde(with = "secret")]
    pub token: Secret,
    pub token_type: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredError {
    pub at: Timestamp,
    pub message: String,
    pub transient: bool,
}

/// A wall-clock instant stored as RFC 3339 with milliseconds, readable by people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
            .map(Timestamp)
            .map_err(serde::de::Error::custom)
    }
}

impl From<&Token> for StoredToken {
    fn from(t: &Token) -> Self {
        StoredToken {
            token: t.value.clone(),
            token_type: t.token_type.clone(),
            issued_at: Timestamp(t.issued_at),
            expires_at: Timestamp(t.expires_at),
        }
    }
}

impl StoredToken {
    pub fn to_token(&self) -> Token {
        Token {
            value: self.token.clone(),
            token_type: self.token_type.clone(),
            issued_at: self.issued_at.0,
            expires_at: self.expires_at.0,
        }
    }
}

// Secrets have no Serialize impl on purpose; only the state file may write them out.
mod secret {
    use super::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Secret, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.expose())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

mod opt_secret {
    use super::Secret;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(v.expose()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        Option::<String>::deserialize(d).map(|o| o.map(Secret::new))
    }
}
