//! The emulator's memory: per-endpoint counters and fault queues, the Vandar refresh-token
//! ledger and the request details tests assert on. One mutex guards all of it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

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
    refresh: HashMap<String, (u64, RefreshStatus)>,
    next_refresh_seq: u64,
    issued: Vec<String>,
    reused: u64,
    revoked_presented: u64,
    unknown_presented: u64,
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
        let seq = self.next_refresh_seq;
        self.next_refresh_seq += 1;
        self.refresh
            .insert(token.to_owned(), (seq, RefreshStatus::Valid));
    }

    /// Mints a refresh token that the next v3 call may redeem.
    pub(super) fn issue_refresh_token(&mut self) -> String {
        let token = self.issued(super::jwt::refresh_token());
        self.add_refresh_seed(&token);
        token
    }

    /// Single use: a valid token is consumed by being presented. No token at all counts as
    /// an unknown one.
    pub(super) fn redeem_refresh_token(&mut self, token: Option<&str>) -> Result<(), Rejection> {
        let rejection = match token.and_then(|token| self.refresh.get_mut(token)) {
            Some((_, status @ RefreshStatus::Valid)) => {
                *status = RefreshStatus::Consumed;
                return Ok(());
            }
            Some((_, RefreshStatus::Consumed)) => {
                self.reused += 1;
                Rejection::Reused
            }
            Some((_, RefreshStatus::Revoked)) => {
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
        for (_, status) in self.refresh.values_mut() {
            if *status == RefreshStatus::Valid {
                *status = RefreshStatus::Revoked;
            }
        }
    }

    pub(super) fn reused_refresh_tokens(&self) -> u64 {
        self.reused
    }

    pub(super) fn valid_refresh_tokens(&self) -> Vec<String> {
        let mut valid: Vec<_> = self
            .refresh
            .iter()
            .filter(|(_, (_, status))| *status == RefreshStatus::Valid)
            .map(|(token, (seq, _))| (*seq, token.clone()))
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
            valid_refresh_tokens: self
                .refresh
                .values()
                .filter(|(_, status)| *status == RefreshStatus::Valid)
                .count(),
            issued_tokens: self.issued.len(),
            last_saba_token_valid_day: self.last_saba_token_valid_day,
            last_yavapteke_secret_field: self.last_yavapteke_secret_field.map(Into::into),
            last_oauth2_auth: self.last_oauth2_auth.map(Into::into),
            last_oauth2_scope: self.last_oauth2_scope.clone(),
        }
    }
}
