//! The emulator's memory: per-endpoint counters and fault queues, the Vandar refresh-token
//! ledger and the request details tests assert on. One mutex guards all of it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::{EmulatorConfig, Endpoint, EndpointStats, Fault, Stats};

/// Everything the handlers share. The config never changes after start.
pub(super) struct Shared {
    pub(super) config: EmulatorConfig,
    state: Mutex<State>,
    stop: watch::Sender<bool>,
}

impl Shared {
    pub(super) fn new(config: EmulatorConfig) -> Self {
        let mut state = State::default();
        for seed in &config.vandar_refresh_seeds {
            state.add_refresh_seed(seed);
        }
        Self {
            config,
            state: Mutex::new(state),
            stop: watch::Sender::new(false),
        }
    }

    /// A panicking handler must not wedge every later request, so poisoning is ignored: the
    /// state is plain counters and maps, valid after any partial update.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Resolves once a stop was requested; parked `Hang`/`Delay` handlers wait on it so the
    /// graceful shutdown is not held up by them.
    pub(super) async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        // The sender lives in `self`, so the only way out is the flag turning true.
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RefreshStatus {
    Valid,
    Consumed,
    Revoked,
}

/// Why a presented refresh token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rejection {
    Reused,
    Revoked,
    Unknown,
    /// Older than the refresh-token lifetime, or presented after the access token it came
    /// with expired (Vandar: renew before the access token runs out).
    Expired,
}

/// One refresh token in the ledger.
struct RefreshEntry {
    seq: u64,
    status: RefreshStatus,
    issued: SystemTime,
    /// When the access token issued beside it expires (`None` for seeds).
    access_expires: Option<SystemTime>,
}

#[derive(Default)]
struct EndpointState {
    requests: u64,
    successes: u64,
    queue: VecDeque<Fault>,
    sticky: Option<Fault>,
}

#[derive(Default)]
pub(super) struct State {
    endpoints: [EndpointState; Endpoint::ALL.len()],
    /// Every refresh token ever issued or seeded, with the order it appeared in, so that
    /// "reused" can be told from "unknown" and the valid ones listed oldest first.
    refresh: HashMap<String, RefreshEntry>,
    next_refresh_seq: u64,
    issued: Vec<String>,
    reused: u64,
    revoked_presented: u64,
    unknown_presented: u64,
    expired_presented: u64,
    /// Vandar's throttle: the start of the current window and the POSTs counted in it.
    vandar_window: Option<(Instant, u32)>,
    vandar_throttled: u64,
    pub(super) last_saba_token_valid_day: Option<i64>,
    pub(super) last_yavapteke_secret_field: Option<&'static str>,
    pub(super) last_oauth2_auth: Option<&'static str>,
    pub(super) last_oauth2_scope: Option<String>,
}

impl State {
    fn endpoint(&mut self, endpoint: Endpoint) -> &mut EndpointState {
        &mut self.endpoints[endpoint as usize]
    }

    /// Counts the request and picks its fault: the queue first, then the sticky one.
    pub(super) fn begin_request(&mut self, endpoint: Endpoint) -> Option<Fault> {
        let ep = self.endpoint(endpoint);
        ep.requests += 1;
        ep.queue.pop_front().or_else(|| ep.sticky.clone())
    }

    /// Counts a request that no fault sees (one the throttle answered).
    pub(super) fn count_request(&mut self, endpoint: Endpoint) {
        self.endpoint(endpoint).requests += 1;
    }

    pub(super) fn count_success(&mut self, endpoint: Endpoint) {
        self.endpoint(endpoint).successes += 1;
    }

    pub(super) fn push_fault(&mut self, endpoint: Endpoint, fault: Fault, times: usize) {
        self.endpoint(endpoint)
            .queue
            .extend(std::iter::repeat_n(fault, times));
    }

    pub(super) fn set_sticky_fault(&mut self, endpoint: Endpoint, fault: Option<Fault>) {
        self.endpoint(endpoint).sticky = fault;
    }

    pub(super) fn clear_faults(&mut self) {
        for ep in &mut self.endpoints {
            ep.queue.clear();
            ep.sticky = None;
        }
    }

    pub(super) fn requests(&self, endpoint: Endpoint) -> u64 {
        self.endpoints[endpoint as usize].requests
    }

    pub(super) fn successes(&self, endpoint: Endpoint) -> u64 {
        self.endpoints[endpoint as usize].successes
    }

    /// Remembers a token that went out on the wire (canary checks look for these in logs).
    pub(super) fn issued(&mut self, token: String) -> String {
        self.issued.push(token.clone());
        token
    }

    pub(super) fn issued_tokens(&self) -> Vec<String> {
        self.issued.clone()
    }

    /// Seeds are valid again even if they were consumed before: the test says so.
    pub(super) fn add_refresh_seed(&mut self, token: &str) {
        self.add_refresh(token, None);
    }

    fn add_refresh(&mut self, token: &str, access_expires: Option<SystemTime>) {
        let seq = self.next_refresh_seq;
        self.next_refresh_seq += 1;
        let entry = RefreshEntry {
            seq,
            status: RefreshStatus::Valid,
            issued: SystemTime::now(),
            access_expires,
        };
        self.refresh.insert(token.to_owned(), entry);
    }

    /// Mints a refresh token that the next refresh may redeem, issued beside an access
    /// token that lives `access_lifetime`.
    pub(super) fn issue_refresh_token(&mut self, access_lifetime: Duration) -> String {
        let token = self.issued(super::jwt::refresh_token());
        // The same whole second as the JWT `exp` minted beside it.
        let expires = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                super::jwt::unix_now() + super::jwt::lifetime_secs(access_lifetime),
            );
        self.add_refresh(&token, Some(expires));
        token
    }

    /// Single use: a valid token is consumed by being presented. No token at all counts as
    /// an unknown one. With `lifetime`, a token older than that is expired; with
    /// `needs_live_access`, so is one whose access token has expired.
    pub(super) fn redeem_refresh_token(
        &mut self,
        token: Option<&str>,
        lifetime: Option<Duration>,
        needs_live_access: bool,
    ) -> Result<(), Rejection> {
        let now = SystemTime::now();
        let rejection = match token.and_then(|token| self.refresh.get_mut(token)) {
            Some(entry) if entry.status == RefreshStatus::Valid => {
                let too_old = lifetime
                    .is_some_and(|l| now.duration_since(entry.issued).unwrap_or_default() >= l);
                let access_dead =
                    needs_live_access && entry.access_expires.is_some_and(|e| now >= e);
                // Presenting it spends it either way: the server revokes what it refuses.
                entry.status = RefreshStatus::Consumed;
                if too_old || access_dead {
                    self.expired_presented += 1;
                    Rejection::Expired
                } else {
                    return Ok(());
                }
            }
            Some(entry) if entry.status == RefreshStatus::Consumed => {
                self.reused += 1;
                Rejection::Reused
            }
            Some(_) => {
                self.revoked_presented += 1;
                Rejection::Revoked
            }
            None => {
                self.unknown_presented += 1;
                Rejection::Unknown
            }
        };
        Err(rejection)
    }

    pub(super) fn revoke_refresh_tokens(&mut self) {
        for entry in self.refresh.values_mut() {
            if entry.status == RefreshStatus::Valid {
                entry.status = RefreshStatus::Revoked;
            }
        }
    }

    /// Laravel's throttle: `limit` requests per window that starts with the first request;
    /// over it, how long until the window ends (the `Retry-After`). A limit of 0 is off.
    pub(super) fn vandar_throttle(&mut self, limit: u32, window: Duration) -> Option<Duration> {
        if limit == 0 {
            return None;
        }
        let now = Instant::now();
        let (start, count) = match self.vandar_window {
            Some((start, count)) if now.duration_since(start) < window => (start, count),
            _ => (now, 0),
        };
        if count >= limit {
            self.vandar_throttled += 1;
            self.vandar_window = Some((start, count));
            return Some(window.saturating_sub(now.duration_since(start)));
        }
        self.vandar_window = Some((start, count + 1));
        None
    }

    pub(super) fn reused_refresh_tokens(&self) -> u64 {
        self.reused
    }

    pub(super) fn valid_refresh_tokens(&self) -> Vec<String> {
        let mut valid: Vec<_> = self
            .refresh
            .iter()
            .filter(|(_, e)| e.status == RefreshStatus::Valid)
            .map(|(token, e)| (e.seq, token.clone()))
            .collect();
        valid.sort_unstable();
        valid.into_iter().map(|(_, token)| token).collect()
    }

    pub(super) fn stats(&self) -> Stats {
        Stats {
            endpoints: Endpoint::ALL
                .iter()
                .map(|&endpoint| {
                    let ep = &self.endpoints[endpoint as usize];
                    let stats = EndpointStats {
                        requests: ep.requests,
                        successes: ep.successes,
                        queued_faults: ep.queue.len(),
                        sticky_fault: ep.sticky.clone(),
                    };
                    (endpoint, stats)
                })
                .collect(),
            reused_refresh_tokens: self.reused,
            revoked_refresh_tokens_presented: self.revoked_presented,
            unknown_refresh_tokens_presented: self.unknown_presented,
            expired_refresh_tokens_presented: self.expired_presented,
            vandar_throttled: self.vandar_throttled,
            valid_refresh_tokens: self
                .refresh
                .values()
                .filter(|e| e.status == RefreshStatus::Valid)
                .count(),
            issued_tokens: self.issued.len(),
            last_saba_token_valid_day: self.last_saba_token_valid_day,
            last_yavapteke_secret_field: self.last_yavapteke_secret_field.map(Into::into),
            last_oauth2_auth: self.last_oauth2_auth.map(Into::into),
            last_oauth2_scope: self.last_oauth2_scope.clone(),
        }
    }
}
