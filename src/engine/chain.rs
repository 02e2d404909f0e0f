//! The refresh chain: which refresh token to send (the configured seed or the chain's
//! latest), which seeds are spent, and why a chain died, in words for an operator.

use std::time::SystemTime;

use crate::provider::{Provider, ProviderConfig};
use crate::secret::Secret;
use crate::store::CredentialState;

/// Why a chain that was just rejected died, when its age explains it: the provider's refresh
/// tokens expire (Vandar: 10 days), or the access token it came with expired first (Vandar
/// refuses a refresh after that). `None` when nothing in state explains it.
pub(super) fn chain_death(
    provider: &ProviderConfig,
    state: &CredentialState,
    now: SystemTime,
) -> Option<String> {
    let lifetime = provider.refresh_token_lifetime()?;
    let what_to_do = provider.dead_chain_remedy();
    let age = state
        .refresh_issued_at
        .and_then(|t| now.duration_since(t.0).ok());
    if let Some(age) = age.filter(|a| *a >= lifetime) {
        return Some(format!(
            "the chain's refresh token was {} old and lives {} (was tokend stopped, or the \
             provider unreachable, that long?); {what_to_do}",
            crate::util::human_duration(age),
            crate::util::human_duration(lifetime)
        ));
    }
    let token = state.token.as_ref()?;
    if now >= token.expires_at.0 {
        return Some(format!(
            "the access token it came with expired at {} ({} ago), and a refresh is accepted \
             only before that (was tokend stopped, or the provider unreachable, that long?); \
             {what_to_do}",
            crate::util::rfc3339(token.expires_at.0),
            crate::util::human_duration(now.duration_since(token.expires_at.0).unwrap_or_default())
        ));
    }
    None
}

pub(super) fn with_cause(message: &str, why: Option<String>) -> String {
    match why {
        Some(why) => format!("{message}; {why}"),
        None => message.to_owned(),
    }
}

/// A stored error message without its leading "credential `x`: ".
pub(super) fn strip_credential(message: &str, credential: &str) -> String {
    message
        .strip_prefix(&format!("credential `{credential}`: "))
        .unwrap_or(message)
        .to_owned()
}

/// The refresh token to send, and the fingerprint of the configured seed it descends from.
///
/// A configured seed that differs from the one the chain grew from is a new dashboard token:
/// it replaces the chain. Otherwise the chain's latest token is used; when the chain is dead
/// (rejected), nothing is sent and the provider logs in if it can.
///
/// `seed_spent`: the state directory records that seed as used by another credential (a
/// rename): it is never sent again, so the provider logs in if it can.
pub(super) fn choose_refresh_token(
    provider: &ProviderConfig,
    state: &CredentialState,
    seed_spent: bool,
) -> (Option<Secret>, Option<String>) {
    if !provider.uses_refresh_chain() {
        return (None, None);
    }
    let seed = provider.refresh_seed();
    let seed_fp = seed.map(|s| s.fingerprint());
    let new_seed = seed_fp.as_deref().is_some_and(|fp| is_new_seed(state, fp));
    match seed {
        Some(_) if new_seed && seed_spent => (None, None),
        Some(seed) if new_seed => (Some(seed.clone()), seed_fp),
        _ => (state.refresh_token.clone(), seed_fp),
    }
}

/// A configured seed no chain in this record has grown from: a new dashboard token. A seed
/// the record has seen before is spent (sending it again is a replay), however the config
/// came to name it again: an old replica in a rolling update, a config rolled back.
fn is_new_seed(state: &CredentialState, fp: &str) -> bool {
    state.refresh_seed.as_deref() != Some(fp) && !state.seen_seeds.iter().any(|s| s == fp)
}

/// Records the seed a chain now descends from and, on a shared store, remembers it as seen.
/// A single instance keeps its rule (a seed other than the chain's restarts it), so an
/// operator who puts a seed back still sees what the provider says of it.
pub(super) fn note_seed(state: &mut CredentialState, seed_fp: Option<String>, remember: bool) {
    if let Some(fp) = seed_fp.as_ref().filter(|_| remember)
        && !state.seen_seeds.contains(fp)
    {
        state.seen_seeds.push(fp.clone());
        // Fingerprints are 8 hex characters; the last few seeds are all that can return.
        if state.seen_seeds.len() > 16 {
            state.seen_seeds.remove(0);
        }
    }
    state.refresh_seed = seed_fp;
}

/// The fingerprint of the configured seed when this refresh would send it (a chain not yet
/// started from it), else `None`.
pub(super) fn seed_to_send(provider: &ProviderConfig, state: &CredentialState) -> Option<String> {
    let fp = provider
        .refresh_seed()
        .filter(|_| provider.uses_refresh_chain())?
        .fingerprint();
    is_new_seed(state, &fp).then_some(fp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::vandar::Vandar;
    use crate::secret::fingerprint;
    use crate::store::CredentialState;

    fn vandar(seed: Option<&str>) -> ProviderConfig {
        ProviderConfig::Vandar(Vandar {
            base_url: "http://x".into(),
            refresh_token: seed.map(Secret::new),
            login: None,
            login_version: crate::provider::vandar::LoginVersion::V2,
        })
    }

    #[test]
    fn first_use_takes_the_seed() {
        let (rt, fp) =
            choose_refresh_token(&vandar(Some("seed")), &CredentialState::default(), false);
        assert_eq!(rt, Some(Secret::new("seed")));
        assert_eq!(fp, Some(fingerprint("seed")));
    }

    #[test]
    fn chain_continues_from_state_never_from_the_seed_again() {
        let state = CredentialState {
            refresh_token: Some(Secret::new("rotated")),
            refresh_seed: Some(fingerprint("seed")),
            ..Default::default()
        };
        let (rt, _) = choose_refresh_token(&vandar(Some("seed")), &state, false);
        assert_eq!(rt, Some(Secret::new("rotated")));
    }

    #[test]
    fn dead_chain_sends_nothing_until_a_new_seed() {
        let state = CredentialState {
            refresh_token: None,
            refresh_seed: Some(fingerprint("seed")),
            ..Default::default()
        };
        assert_eq!(
            choose_refresh_token(&vandar(Some("seed")), &state, false).0,
            None
        );
        assert_eq!(
            choose_refresh_token(&vandar(Some("new-seed")), &state, false).0,
            Some(Secret::new("new-seed"))
        );
    }

    #[test]
    fn a_dead_chain_is_explained_by_its_age_or_its_expired_access_token() {
        use crate::store::{StoredToken, Timestamp};
        use std::time::Duration;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(86_400);
        let state = |issued: Option<Duration>, access_left: Option<i64>| CredentialState {
            refresh_issued_at: issued.map(|a| Timestamp(now - a)),
            token: access_left.map(|secs| StoredToken {
                token: Secret::new("t"),
                token_type: "Bearer".into(),
                issued_at: Timestamp(now - day),
                expires_at: Timestamp(if secs >= 0 {
                    now + Duration::from_secs(secs as u64)
                } else {
                    now - Duration::from_secs(secs.unsigned_abs())
                }),
            }),
            ..Default::default()
        };
        let cases = [
            (
                state(Some(11 * day), Some(3600)),
                Some("11d old and lives 10d"),
            ),
            (state(Some(2 * day), Some(-3600)), Some("expired at")),
            (state(None, Some(-60)), Some("expired at")),
            (state(Some(2 * day), Some(3600)), None),
            (state(None, None), None),
        ];
        for (st, want) in cases {
            let why = chain_death(&vandar(Some("seed")), &st, now);
            match want {
                Some(w) => assert!(
                    why.as_deref()
                        .is_some_and(|t| t.contains(w) && t.contains("dashboard")),
                    "{why:?}"
                ),
                None => assert_eq!(why, None),
            }
        }
    }

    #[test]
    fn a_seed_spent_under_another_name_is_never_sent() {
        let fresh = CredentialState::default();
        assert_eq!(
            seed_to_send(&vandar(Some("seed")), &fresh),
            Some(fingerprint("seed"))
        );
        assert_eq!(
            choose_refresh_token(&vandar(Some("seed")), &fresh, true),
            (None, None)
        );
        // A chain already grown from this seed is ours: the seed is not about to be sent.
        let grown = CredentialState {
            refresh_token: Some(Secret::new("rotated")),
            refresh_seed: Some(fingerprint("seed")),
            ..Default::default()
        };
        assert_eq!(seed_to_send(&vandar(Some("seed")), &grown), None);
        assert_eq!(
            choose_refresh_token(&vandar(Some("seed")), &grown, false).0,
            Some(Secret::new("rotated"))
        );
    }

    #[test]
    fn a_seed_seen_before_is_never_sent_again() {
        // An old replica still configured with the first seed, after a new one took over.
        let mut state = CredentialState::default();
        note_seed(&mut state, Some(fingerprint("seed-1")), true);
        note_seed(&mut state, Some(fingerprint("seed-2")), true);
        state.refresh_token = Some(Secret::new("rotated-from-2"));
        let (rt, _) = choose_refresh_token(&vandar(Some("seed-1")), &state, false);
        assert_eq!(rt, Some(Secret::new("rotated-from-2")));
        assert_eq!(seed_to_send(&vandar(Some("seed-1")), &state), None);
        // A truly new one still restarts the chain.
        let (rt, _) = choose_refresh_token(&vandar(Some("seed-3")), &state, false);
        assert_eq!(rt, Some(Secret::new("seed-3")));
    }

    #[test]
    fn login_only_has_no_chain() {
        let state = CredentialState {
            refresh_token: Some(Secret::new("leftover")),
            ..Default::default()
        };
        assert_eq!(choose_refresh_token(&vandar(None), &state, false).0, None);
    }
}
