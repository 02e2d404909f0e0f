//! The daemon's live view of every credential, written by the supervisor after each attempt
//! and read by the HTTP endpoints and the systemd status line. Never holds more than state does.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::status::{self, Entry};
use crate::store::Summary;
use crate::util::human_duration;

/// What the supervisor knows about one credential.
#[derive(Clone, Debug)]
pub struct View {
    pub provider: &'static str,
    pub state: Summary,
    /// How long the provider's refresh tokens live, if it says (for the chain's age).
    pub chain_lifetime: Option<Duration>,
    /// Every output holds the current token (as of the last attempt or output check).
    pub outputs_ok: bool,
    /// Why not, when a check found an output missing or altered (else the last attempt's
    /// error says it).
    pub outputs_note: Option<String>,
    /// At least one attempt finished (for systemd's READY=1).
    pub attempted: bool,
    pub next: SystemTime,
}

/// This process in its `ha` group, for `/readyz` and `/v1/status`.
#[derive(Clone, Debug, Serialize)]
pub struct GroupView {
    pub group: String,
    /// Leading: this process calls the providers; following: it mirrors the shared state.
    pub leading: bool,
    pub leader: Option<String>,
    /// The last error of the election or the store, `None` when healthy.
    pub error: Option<String>,
}

pub struct Observed {
    /// Milliseconds since `started` (monotonic: a wall-clock jump must not make a live
    /// loop look dead to a liveness probe).
    heartbeat: AtomicU64,
    started: Instant,
    views: RwLock<BTreeMap<String, View>>,
    triggered: Mutex<HashMap<String, Instant>>,
    group: RwLock<Option<GroupView>>,
}

#[derive(Debug, Serialize)]
pub struct NotReady {
    pub credential: String,
    pub reason: String,
}

/// A triggered refresh of the same credential within this window is refused (429).
pub const TRIGGER_WINDOW: Duration = Duration::from_secs(30);

impl Default for Observed {
    fn default() -> Self {
        Observed {
            heartbeat: AtomicU64::new(0),
            started: Instant::now(),
            views: RwLock::default(),
            triggered: Mutex::default(),
            group: RwLock::default(),
        }
    }
}

/// Longest the supervisor loop sleeps without looking at the wall clock (and beating):
/// the promise [`Observed::is_alive`] checks.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

impl Observed {
    /// The supervisor loop calls this every time it wakes.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.heartbeat.store(ms.max(1), Ordering::Relaxed);
    }

    /// Alive if the supervisor loop woke recently; it wakes at least every [`MAX_SLEEP`].
    pub fn is_alive(&self) -> bool {
        let last = self.heartbeat.load(Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64;
        last != 0
            && now.saturating_sub(last)
                <= (MAX_SLEEP * 2 + Duration::from_secs(5)).as_millis() as u64
    }

    pub fn set(&self, name: &str, view: View) {
        self.views
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), view);
    }

    pub fn set_group(&self, view: GroupView) {
        *self.group.write().unwrap_or_else(|e| e.into_inner()) = Some(view);
    }

    pub fn group(&self) -> Option<GroupView> {
        self.group.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn remove(&self, name: &str) {
        self.views
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }

    fn with_views<T>(&self, f: impl FnOnce(&BTreeMap<String, View>) -> T) -> T {
        f(&self.views.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Credentials without an unexpired token in all their outputs, with the reason.
    pub fn not_ready(&self, now: SystemTime) -> Vec<NotReady> {
        self.with_views(|views| {
            views
                .iter()
                .filter_map(|(name, v)| {
                    let reason = match v.state.token.as_ref() {
                        None if !v.attempted => {
                            "no token yet: the first attempt is running".to_owned()
                        }
                        None => "no token: every attempt so far failed".to_owned(),
                        Some(t) if now >= t.expires_at.0 => "the token has expired".to_owned(),
                        Some(_) if !v.outputs_ok => v
                            .outputs_note
                            .clone()
                            .unwrap_or_else(|| "the outputs could not be written".to_owned()),
                        Some(_) => return None,
                    };
                    let reason = match &v.state.last_error {
                        Some(e) => format!("{reason} (last error: {})", e.message),
                        None => reason,
                    };
                    Some(NotReady {
                        credential: name.clone(),
                        reason,
                    })
                })
                .collect()
        })
    }

    /// Credentials that cannot renew without a person, with their last error: `/readyz`
    /// names them while their tokens still work.
    pub fn needs_person(&self) -> Vec<NotReady> {
        self.with_views(|views| {
            views
                .iter()
                .filter(|(_, v)| status::needs_person(&v.state))
                .map(|(name, v)| NotReady {
                    credential: name.clone(),
                    reason: v
                        .state
                        .last_error
                        .as_ref()
                        .map(|e| e.message.clone())
                        .unwrap_or_default(),
                })
                .collect()
        })
    }

    pub fn status(&self, now: SystemTime) -> Vec<Entry> {
        let group = self.group();
        self.with_views(|views| {
            views
                .iter()
                .map(|(name, v)| {
                    let mut e = status::entry(
                        name,
                        v.provider,
                        v.chain_lifetime,
                        Ok(Some(v.state.clone())),
                        now,
                    );
                    if let (Some(shared), Some(g)) = (e.shared.as_mut(), &group) {
                        shared.role = Some(if g.leading { "leader" } else { "follower" });
                        shared.leader = g.leader.clone();
                    }
                    e
                })
                .collect()
        })
    }

    /// systemd's one-line STATUS=: "3/3 fresh, next refresh in 41m".
    pub fn summary(&self, now: SystemTime) -> String {
        self.with_views(|views| {
            let total = views.len();
            let fresh = views
                .values()
                .filter(|v| {
                    v.outputs_ok && v.state.token.as_ref().is_some_and(|t| now < t.expires_at.0)
                })
                .count();
            let failing: Vec<&str> = views
                .iter()
                .filter(|(_, v)| v.state.failures > 0)
                .map(|(n, _)| n.as_str())
                .collect();
            let mut line = format!("{fresh}/{total} fresh");
            let stuck = views
                .values()
                .filter(|v| status::needs_person(&v.state))
                .count();
            if stuck > 0 {
                line.push_str(&format!(", {stuck} need a person"));
            }
            if !failing.is_empty() {
                let shown: Vec<&str> = failing.iter().take(3).copied().collect();
                line.push_str(&format!(
                    ", {} failing ({}{})",
                    failing.len(),
                    shown.join(", "),
                    if failing.len() > 3 { ", ..." } else { "" }
                ));
            }
            if let Some(next) = views.values().map(|v| v.next).min() {
                line.push_str(&format!(
                    ", next refresh in {}",
                    human_duration(next.duration_since(now).unwrap_or_default())
                ));
            }
            line
        })
    }

    /// Why a triggered refresh of `name` must wait, and until when: the credential is in a
    /// permanent-error state (a rejected password or chain) and its slow retry is not due.
    /// Retrying sooner on request would let any local user lock the account.
    pub fn held_back(&self, name: &str, now: SystemTime) -> Option<(String, SystemTime)> {
        self.with_views(|views| {
            let state = &views.get(name)?.state;
            let error = state.last_error.as_ref().filter(|e| !e.transient)?;
            let until = state.next_attempt.map(|t| t.0).filter(|at| *at > now)?;
            (state.failures > 0).then(|| (error.message.clone(), until))
        })
    }

    /// Rate limit for consumer-triggered refreshes: `true` if this one may go ahead.
    pub fn try_trigger(&self, name: &str) -> bool {
        let mut last = self.triggered.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match last.get(name) {
            Some(at) if now.duration_since(*at) < TRIGGER_WINDOW => false,
            _ => {
                last.insert(name.to_owned(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{StoredError, StoredToken, Timestamp};
    use crate::token::Token;

    fn view(transient: Option<bool>, outputs_note: Option<&str>, now: SystemTime) -> View {
        let token = Token {
            value: crate::secret::Secret::new("tok"),
            token_type: "Bearer".into(),
            issued_at: now - Duration::from_secs(60),
            expires_at: now + Duration::from_secs(3600),
        };
        View {
            provider: "vandar",
            state: crate::store::CredentialState {
                token: Some(StoredToken::from(&token)),
                failures: u32::from(transient.is_some()),
                last_error: transient.map(|transient| StoredError {
                    at: Timestamp(now),
                    message: "provider rejected the refresh token".into(),
                    transient,
                }),
                ..Default::default()
            }
            .summary(),
            chain_lifetime: None,
            outputs_ok: outputs_note.is_none(),
            outputs_note: outputs_note.map(str::to_owned),
            attempted: true,
            next: now + Duration::from_secs(60),
        }
    }

    #[test]
    fn needs_person_is_named_but_not_unready_and_a_missing_output_is_unready() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let o = Observed::default();
        o.set("ok", view(None, None, now));
        o.set("flaky", view(Some(true), None, now));
        o.set("stuck", view(Some(false), None, now));
        o.set("gone", view(None, Some("output `/o` is gone"), now));
        let names = |v: Vec<NotReady>| v.into_iter().map(|n| n.credential).collect::<Vec<_>>();
        assert_eq!(names(o.needs_person()), ["stuck"]);
        let not_ready = o.not_ready(now);
        assert_eq!(not_ready.len(), 1);
        assert_eq!(not_ready[0].credential, "gone");
        assert_eq!(not_ready[0].reason, "output `/o` is gone");
        assert!(
            o.summary(now)
                .starts_with("3/4 fresh, 1 need a person, 2 failing"),
            "{}",
            o.summary(now)
        );
    }
}
