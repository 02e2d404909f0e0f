//! The refresh of one credential, shared by `once` and the daemon: decide from state whether
//! a fetch is needed, fetch, make a rotated refresh token durable, write outputs, run hooks.
//!
//! The order is the safety argument: state (with the new refresh token) is saved before any
//! output is touched, and a failed fetch never touches an output at all. On a shared store
//! "saved" means committed under a claim ([`shared`]): outputs never run ahead of a commit.

mod chain;
mod shared;

use chain::{
    chain_death, choose_refresh_token, note_seed, seed_to_send, strip_credential, with_cause,
};

pub use shared::Member;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Credential;
use crate::events;
use crate::hooks::HookContext;
use crate::net::HttpClients;
use crate::output::OutputError;
use crate::provider::{Failure, FetchError, Provider, RefreshUpdate, jwt};
use crate::schedule;
use crate::secret::Secret;
use crate::store::{
    CredentialState, StateDir, StateError, Store, StoreError, StoredError, StoredToken, Timestamp,
    Version,
};
use crate::token::{self, Token};

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("credential `{credential}`: {source}")]
    Fetch {
        credential: String,
        source: FetchError,
    },
    #[error("credential `{credential}`: {message}")]
    BadToken { credential: String, message: String },
    #[error("credential `{credential}`: {source}")]
    Output {
        credential: String,
        source: OutputError,
    },
    #[error("credential `{credential}`: {source}")]
    State {
        credential: String,
        source: StateError,
    },
    #[error("credential `{credential}`: {source}")]
    Store {
        credential: String,
        source: StoreError,
    },
    #[error("credential `{credential}`: {message}")]
    Client { credential: String, message: String },
    /// The refresh chain died; `why` says what killed it (age, an outage) and what to do.
    #[error("credential `{credential}`: {source}; {why}")]
    ChainDied {
        credential: String,
        source: FetchError,
        why: String,
    },
    /// A permanent failure is recorded in state and its retry time has not come: `once` must
    /// not re-send a refused password faster than `retry.permanent` (an account lock-out).
    #[error(
        "credential `{credential}`: not tried again before {} (in {}): the last attempt was refused ({last_error}); \
         fix the credential in the config (a changed secret or account is tried at once) or run `tokend once --force` to try now",
        crate::util::rfc3339(*.until),
        crate::util::human_duration(.until.duration_since(SystemTime::now()).unwrap_or_default())
    )]
    Held {
        credential: String,
        until: SystemTime,
        last_error: String,
    },
}

impl RefreshError {
    /// Output and state errors are the disk's, and disks recover (space freed, volume
    /// remounted): retried like a provider outage.
    pub fn is_transient(&self) -> bool {
        match self {
            RefreshError::Fetch { source, .. } => source.is_transient(),
            RefreshError::BadToken { .. }
            | RefreshError::Output { .. }
            | RefreshError::State { .. }
            | RefreshError::Store { .. } => true,
            RefreshError::Client { .. }
            | RefreshError::ChainDied { .. }
            | RefreshError::Held { .. } => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RefreshError::Fetch { source, .. } => source.retry_after(),
            _ => None,
        }
    }

    /// The `result` label of `tokend_refresh_total` for this failure.
    pub fn result(&self) -> &'static str {
        match self {
            RefreshError::Output { .. } => "output_error",
            RefreshError::State { .. } | RefreshError::Store { .. } => "state_error",
            e if e.is_transient() => "transient_error",
            _ => "permanent_error",
        }
    }
}

/// What `ensure` did.
#[derive(Debug)]
pub enum Outcome {
    /// The token in state was still fresh; outputs were checked and restored if needed.
    /// `written`: an output had to be put back (the daemon logs that it was restored), or
    /// took a token another process of the group committed (`mirrored`).
    Current { written: bool, mirrored: bool },
    /// A new token was fetched, saved and published.
    Refreshed,
    /// Nothing to do before `until`: another process of the group holds the claim, or this
    /// one follows (it never calls the provider). Not a failure.
    Deferred { until: SystemTime },
}

/// One credential's live state, owned by whoever drives it (a `once` task or a daemon worker).
pub struct Slot {
    pub credential: Arc<Credential>,
    pub state: CredentialState,
    /// The random draw for this token's jitter, fixed when the token arrives.
    draw: f64,
    /// `state` holds changes (possibly a rotated refresh token) that are not on disk yet:
    /// they are saved before anything else, and outputs wait for them.
    unsaved: bool,
    /// A forced refresh (SIGUSR1, HTTP trigger, `once --force`) that has not succeeded yet;
    /// its retries must fetch, not settle for the old token.
    force_pending: bool,
    /// The supervisor started this attempt by the monotonic clock at a wall-clock deadline
    /// still ahead: the wall clock stepped back. Judge "due" as of that deadline.
    clock_floor: Option<SystemTime>,
    // Shared state only (all `None` with the local store):
    /// The store's version of `state`; `None` when the store has no record.
    version: Option<Version>,
    /// Our claim on the provider call, from the claim until its commit.
    claim: Option<shared::Held>,
    /// Another process's claim, and when this one first saw it (monotonic).
    foreign: Option<(String, Instant)>,
    /// Not before this: a claim held elsewhere, a lost race.
    deferred: Option<SystemTime>,
    /// A record the store's watch delivered: used instead of reading it again.
    /// Boxed: a record is ~600 bytes that 10 000 idle slots would otherwise all carry.
    incoming: Option<Box<(CredentialState, Version)>>,
    /// The last sync took a newer token another process committed.
    mirrored: bool,
}

impl Slot {
    /// The token in state, unless it has expired (state of another identity was already
    /// discarded when the slot was made).
    pub fn current_token(&self, now: SystemTime) -> Option<Token> {
        let stored = self.state.token.as_ref()?;
        let token = stored.to_token();
        (!token.is_expired(now)).then_some(token)
    }

    /// When the current token should be replaced (with this token's jitter).
    pub fn refresh_at(&self, token: &Token) -> SystemTime {
        schedule::refresh_at(
            token.issued_at,
            token.expires_at,
            &self.credential.refresh,
            self.draw,
        )
    }

    /// Until when a recorded permanent failure holds further attempts, if it does.
    pub fn held_until(&self, now: SystemTime) -> Option<SystemTime> {
        let error = self.state.last_error.as_ref()?;
        let until = self.state.next_attempt?.0;
        (self.state.failures > 0 && !error.transient && now < until).then_some(until)
    }

    /// State that is not on disk yet and holds a refresh token: losing it (a process that
    /// exits now) would lose a rotated chain.
    pub fn holds_unsaved_chain(&self) -> bool {
        self.unsaved && (self.state.refresh_token.is_some() || self.claim.is_some())
    }

    /// The next attempt is judged as if the wall clock read at least `at` (see
    /// [`crate::deadlines`]); the token it fetches is still stamped with the real clock.
    pub fn judge_due_as_of(&mut self, at: SystemTime) {
        self.clock_floor = Some(at);
    }

    /// A record another process committed, seen by the store's watch: the next attempt
    /// starts from it. Returns whether it is newer than what the slot holds.
    pub fn offer(&mut self, record: CredentialState, version: Version) -> bool {
        let newer = record.token_gen > self.state.token_gen
            || record.chain_gen > self.state.chain_gen
            || (record.claim.is_none() && self.state.claim.is_some());
        if newer || self.version.as_ref() != Some(&version) {
            self.incoming = Some(Box::new((record, version)));
        }
        newer
    }

    /// When the driver should call [`Engine::ensure`] next.
    pub fn next_attempt(&self, now: SystemTime) -> SystemTime {
        if let Some(at) = self.deferred {
            return at;
        }
        if let Some(at) = self.state.next_attempt.map(|t| t.0)
            && self.state.failures > 0
        {
            return at;
        }
        match self.current_token(now) {
            Some(token) => self.refresh_at(&token),
            // An expired token still sets the pace (no sooner than the floor after its
            // issue), so a lifetime shorter than a second cannot become a request loop.
            None => self
                .state
                .token
                .as_ref()
                .map_or(now, |t| self.refresh_at(&t.to_token()).max(now)),
        }
    }
}

/// Shared by every credential: the store, the local state directory (the lock, journals,
/// and with a shared store the source of a migration) and the HTTP client pools.
pub struct Engine {
    pub state_dir: Arc<StateDir>,
    store: Arc<dyn Store>,
    /// This process in its `ha` group; `None` with the local store.
    member: Option<Member>,
    clients: HttpClients,
}

use crate::store::local::blocking;

impl Engine {
    /// A single instance: state in the local directory.
    pub fn new(state_dir: StateDir) -> Self {
        let state_dir = Arc::new(state_dir);
        let store = Arc::new(crate::store::local::LocalStore(state_dir.clone()));
        Engine::with_store(state_dir, store, None)
    }

    /// A member of an `ha` group: state in `store`, shared with the other members.
    pub fn with_store(
        state_dir: Arc<StateDir>,
        store: Arc<dyn Store>,
        member: Option<Member>,
    ) -> Self {
        crate::net::install_crypto_provider();
        Engine {
            state_dir,
            store,
            member,
            clients: HttpClients::default(),
        }
    }

    pub fn is_shared(&self) -> bool {
        self.store.is_shared()
    }

    /// The generation a group's members agree on for the slot's token (none alone).
    fn shared_gen(&self, slot: &Slot) -> Option<u64> {
        self.is_shared().then_some(slot.state.token_gen)
    }

    /// Loads a credential's state. Unreadable state is moved aside (and logged): refusing
    /// to start would leave outputs to expire, and the chain may still be recoverable by
    /// login. State from another identity keeps nothing but the failure history.
    pub fn slot(&self, credential: Arc<Credential>) -> Slot {
        let name = credential.name.clone();
        let identity = crate::provider::identity::fingerprint(&credential.provider);
        let mut state = match self.state_dir.load(&name) {
            Ok(Some(s)) => s,
            Ok(None) => CredentialState::default(),
            Err(e) => {
                let moved = self.state_dir.quarantine(&name);
                events::state_discarded(
                    &name,
                    &format!(
                        "{e}; moved to {}",
                        moved
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "nowhere (rename failed)".into())
                    ),
                );
                CredentialState::default()
            }
        };
        if state.identity.as_deref().is_some_and(|id| id != identity) {
            events::state_discarded(
                &name,
                "the credential's provider, URL or account changed since the token was issued",
            );
            state.token = None;
            state.failures = 0;
            state.next_attempt = None;
        }
        state.credential = name;
        state.identity = Some(identity);
        Slot {
            credential,
            state,
            draw: fastrand::f64(),
            unsaved: false,
            force_pending: false,
            clock_floor: None,
            version: None,
            claim: None,
            foreign: None,
            deferred: None,
            incoming: None,
            mirrored: false,
        }
    }

    /// Makes the credential's outputs hold a token that is not due for refresh: reuse the
    /// token in state when it is fresh (and `force` is false), else fetch a new one.
    ///
    /// A permanent failure recorded in state holds further fetches until its retry time
    /// (across processes: repeated `once` runs honour it too) unless `force` is set; the
    /// identity check in [`Engine::slot`] already lifted it if the credential changed.
    ///
    /// `may_fetch`: false for a follower of a shared store, which only mirrors what others
    /// commit and never calls the provider.
    pub async fn ensure(
        &self,
        slot: &mut Slot,
        force: bool,
        may_fetch: bool,
    ) -> Result<Outcome, RefreshError> {
        slot.force_pending |= force && may_fetch;
        slot.deferred = None;
        let result = self.attempt(slot, may_fetch).await;
        match &result {
            Ok(Outcome::Refreshed) => {
                slot.force_pending = false;
                // Counted here, once the outputs hold it: an attempt has one result.
                events::refresh_succeeded(&slot.credential.name);
            }
            Ok(Outcome::Current { .. }) => {}
            Ok(Outcome::Deferred { until }) => slot.deferred = Some(*until),
            // Nothing was attempted: the recorded failure and its retry time stand.
            Err(RefreshError::Held { .. }) => {}
            // Every failure, wherever it happened, is recorded and backed off the same way.
            Err(e) => self.record_failure(slot, e).await,
        }
        result
    }

    async fn attempt(&self, slot: &mut Slot, may_fetch: bool) -> Result<Outcome, RefreshError> {
        if self.is_shared() {
            self.sync(slot).await?;
            if let Some(until) = slot.deferred.take() {
                return Ok(Outcome::Deferred { until });
            }
        }
        let now = SystemTime::now();
        let judged = slot.clock_floor.take().map_or(now, |floor| floor.max(now));
        let cred = slot.credential.clone();
        if !slot.force_pending
            && let Some(token) = slot.current_token(judged)
            && judged < slot.refresh_at(&token)
        {
            // A save that failed earlier goes first: outputs never run ahead of the state
            // that holds the refresh token they descend from.
            if slot.unsaved {
                self.save(slot).await?;
            }
            let written = self.publish(&cred, &token, self.shared_gen(slot)).await?;
            if slot.state.failures > 0 {
                // A previous attempt failed after the fetch (disk): it is resolved now.
                slot.state.failures = 0;
                slot.state.last_error = None;
                slot.state.next_attempt = Some(Timestamp(slot.refresh_at(&token)));
                self.save(slot).await?;
            }
            let mirrored = std::mem::take(&mut slot.mirrored);
            return Ok(Outcome::Current { written, mirrored });
        }
        if !slot.force_pending
            && let Some(until) = slot.held_until(now)
        {
            // The outputs keep (or get back) the last token while the hold lasts.
            if let Some(token) = slot.current_token(now) {
                self.publish(&cred, &token, self.shared_gen(slot)).await?;
            }
            return Err(RefreshError::Held {
                credential: cred.name.clone(),
                until,
                last_error: slot
                    .state
                    .last_error
                    .as_ref()
                    .map(|e| strip_credential(&e.message, &cred.name))
                    .unwrap_or_default(),
            });
        }
        if self.is_shared() {
            if !may_fetch {
                // A follower: whoever leads refreshes; the watch brings the commit. Look
                // again in a while in case no one leads.
                if let Some(token) = slot.current_token(now) {
                    self.publish(&cred, &token, self.shared_gen(slot)).await?;
                }
                return Ok(Outcome::Deferred {
                    until: now + crate::observe::MAX_SLEEP,
                });
            }
            if let Some(until) = self.claim(slot).await? {
                if let Some(token) = slot.current_token(now) {
                    self.publish(&cred, &token, self.shared_gen(slot)).await?;
                }
                return Ok(Outcome::Deferred { until });
            }
        }
        self.refresh(slot, now).await
    }

    async fn refresh(&self, slot: &mut Slot, started: SystemTime) -> Result<Outcome, RefreshError> {
        let cred = slot.credential.clone();
        let name = cred.name.as_str();
        let http = self
            .clients
            .get(&cred.egress, cred.timeout)
            .map_err(|message| RefreshError::Client {
                credential: name.to_owned(),
                message,
            })?;
        let spent = seed_to_send(&cred.provider, &slot.state)
            .and_then(|fp| self.state_dir.seed_spent_by(&fp, name));
        if let Some((other, path)) = &spent {
            events::seed_spent(name, other, path);
        }
        let (refresh_token, seed_fp) =
            choose_refresh_token(&cred.provider, &slot.state, spent.is_some());

        let clock = Instant::now();
        // Every text the provider sends back is redacted of what this request carried.
        let redactor = Arc::new(crate::provider::redactor(
            &cred.provider,
            refresh_token.as_ref(),
            cred.egress.secret(),
        ));
        let fetch = crate::redact::scope(
            redactor.clone(),
            cred.provider.fetch(&http, refresh_token.as_ref()),
        );
        let result = match self.claim_budget(slot) {
            None => fetch.await,
            Some(Err(())) => {
                // Too late to start under this claim (a pause, a slow store): hand it back.
                self.save(slot).await?;
                return Ok(Outcome::Deferred {
                    until: SystemTime::now(),
                });
            }
            Some(Ok(budget)) => match tokio::time::timeout(budget, fetch).await {
                Ok(r) => r,
                Err(_) => Err(Failure {
                    error: FetchError::Timeout {
                        url: "the provider".to_owned(),
                        timeout: budget,
                    },
                    rotated: None,
                }),
            },
        };
        let took = clock.elapsed();

        let fetched = match result {
            Ok(f) => f,
            Err(Failure { mut error, rotated }) => {
                error.redact(&redactor);
                if let Some(held) = &slot.claim
                    && refresh_token.is_some()
                    && maybe_spent(&error)
                {
                    // The provider may have spent the token without our hearing the answer.
                    slot.state.in_doubt = Some(crate::store::InDoubt {
                        chain_gen: held.base_chain_gen,
                        holder: self
                            .member
                            .as_ref()
                            .map(|m| m.identity.clone())
                            .unwrap_or_default(),
                        claim_id: held.id.clone(),
                        at: Timestamp(SystemTime::now()),
                        why: format!("no usable answer to the refresh ({error})"),
                    });
                }
                if let Some(next) = rotated.filter(|_| cred.provider.uses_refresh_chain()) {
                    // The answer was unusable, but the provider rotated the chain: the token
                    // sent is spent and this one is the only way on.
                    self.keep_rotated(slot, next, seed_fp).await?;
                } else if matches!(error, FetchError::RefreshRejected { .. }) {
                    let why = chain_death(&cred.provider, &slot.state, started);
                    // Dead chain: never send that token again (it is kept aside, never
                    // destroyed); a new seed restarts it.
                    slot.state.rejected_refresh_token = slot.state.refresh_token.take();
                    slot.state.refresh_issued_at = None;
                    note_seed(&mut slot.state, seed_fp, self.is_shared());
                    if let Some(why) = why {
                        return Err(RefreshError::ChainDied {
                            credential: name.to_owned(),
                            source: error,
                            why,
                        });
                    }
                }
                return Err(RefreshError::Fetch {
                    credential: name.to_owned(),
                    source: error,
                });
            }
        };

        // The refresh token first: the one we sent is spent, whatever happens next.
        match &fetched.refresh {
            RefreshUpdate::Rotated(next) if cred.provider.uses_refresh_chain() => {
                slot.state.refresh_token = Some(next.clone());
                slot.state.rejected_refresh_token = None;
                slot.state.refresh_issued_at = Some(Timestamp(started));
                note_seed(&mut slot.state, seed_fp, self.is_shared());
                events::chain_rotated(name, &next.fingerprint());
            }
            RefreshUpdate::Restarted { next, message } if cred.provider.uses_refresh_chain() => {
                let why = chain_death(&cred.provider, &slot.state, started);
                slot.state.rejected_refresh_token = slot.state.refresh_token.take();
                slot.state.refresh_token = Some(next.clone());
                slot.state.refresh_issued_at = Some(Timestamp(started));
                note_seed(&mut slot.state, seed_fp, self.is_shared());
                events::chain_restarted(name, &with_cause(message, why), &next.fingerprint());
            }
            RefreshUpdate::Rejected { message } | RefreshUpdate::Restarted { message, .. } => {
                let why = chain_death(&cred.provider, &slot.state, started);
                slot.state.rejected_refresh_token = slot.state.refresh_token.take();
                slot.state.refresh_issued_at = None;
                note_seed(&mut slot.state, seed_fp, self.is_shared());
                events::chain_rejected(name, &with_cause(message, why));
            }
            _ => {}
        }

        let jwt_exp = jwt::expiry(fetched.token.expose());
        let lifetime = token::lifetime(
            started,
            cred.lifetime,
            fetched.expires_in,
            jwt_exp,
            cred.provider.documented_lifetime(),
        );
        let (lifetime, source) = match lifetime {
            Ok(l) => l,
            Err(message) => {
                // Persist the rotation even though this token is unusable.
                self.save(slot).await?;
                return Err(RefreshError::BadToken {
                    credential: name.to_owned(),
                    message,
                });
            }
        };
        if source == token::LifetimeSource::Fallback {
            events::lifetime_warning(
                name,
                &format!(
                    "the provider said nothing about the token's lifetime; assuming {} (set `lifetime:` to be sure)",
                    crate::util::human_duration(lifetime)
                ),
            );
        }
        if let (_, Some(w)) = schedule::interval(lifetime, &cred.refresh) {
            let w = format!("{w} (lifetime from {})", source.describe());
            // Once per condition, not once per refresh: a floored credential refreshes every
            // second and would otherwise flood the log with the same sentence.
            let previous = slot.state.token.as_ref().map(|t| {
                let t = t.to_token();
                t.expires_at.duration_since(t.issued_at).unwrap_or_default()
            });
            if previous.is_some_and(|p| schedule::interval(p, &cred.refresh).1.is_some()) {
                tracing::debug!(credential = name, "{w}");
            } else {
                events::lifetime_warning(name, &w);
            }
        }
        let token = Token {
            value: fetched.token,
            token_type: fetched.token_type,
            issued_at: started,
            expires_at: started + lifetime,
        };
        slot.draw = fastrand::f64();
        slot.state.token = Some(StoredToken::from(&token));
        slot.state.last_success = Some(Timestamp(SystemTime::now()));
        slot.state.last_error = None;
        slot.state.failures = 0;
        slot.state.next_attempt = Some(Timestamp(slot.refresh_at(&token)));
        // The forced fetch happened; if the state write or an output fails now, retries
        // save and re-publish this token instead of spending another refresh token.
        slot.force_pending = false;
        slot.state.in_doubt = None;
        if !self.persist(slot).await? {
            // Another process committed a newer token first: ours is never published.
            return Ok(Outcome::Deferred {
                until: SystemTime::now(),
            });
        }
        events::token_refreshed(name, &token, fetched.flow, source, took);

        self.publish(&cred, &token, self.shared_gen(slot)).await?;
        Ok(Outcome::Refreshed)
    }

    /// Retries a state write that failed; `Ok` once nothing is left unsaved.
    pub async fn flush(&self, slot: &mut Slot) -> Result<(), RefreshError> {
        if slot.unsaved {
            self.save(slot).await
        } else {
            Ok(())
        }
    }

    /// Writes every output, then runs the hooks if any output changed. `shared_gen`: the
    /// shared record's `token_gen` in a group (orders Secret writes across members).
    async fn publish(
        &self,
        cred: &Arc<Credential>,
        token: &Token,
        shared_gen: Option<u64>,
    ) -> Result<bool, RefreshError> {
        let failed = |source| {
            events::output_failed(&cred.name);
            RefreshError::Output {
                credential: cred.name.clone(),
                source,
            }
        };
        let (c, t) = (cred.clone(), token.clone());
        let written = blocking(move || {
            let mut written = false;
            for output in &c.outputs {
                written |= output.write(&t, &c.name)?;
            }
            Ok::<bool, OutputError>(written)
        })
        .await
        .map_err(failed)?;
        // Remote outputs (Kubernetes Secrets) after the files, so a slow API server never delays them.
        let written = written
            | crate::output::kubernetes_secret::publish(
                &cred.kube_outputs,
                &cred.name,
                token,
                shared_gen,
            )
            .await
            .map_err(failed)?;
        if written {
            let paths: Vec<String> = cred
                .outputs
                .iter()
                .map(|o| o.path().display().to_string())
                .collect();
            events::outputs_written(&cred.name, &paths);
            let ctx = HookContext {
                credential: &cred.name,
                expires_at: crate::util::rfc3339(token.expires_at),
                outputs: paths,
            };
            for hook in &cred.hooks {
                match hook.run(&ctx).await {
                    Ok(()) => events::hook_ran(&cred.name, &hook.describe()),
                    Err(e) => events::hook_failed(&cred.name, &hook.describe(), &e),
                }
            }
        }
        Ok(written)
    }

    /// Saves a rotated refresh token from an answer that was otherwise unusable.
    async fn keep_rotated(
        &self,
        slot: &mut Slot,
        next: Secret,
        seed_fp: Option<String>,
    ) -> Result<(), RefreshError> {
        events::chain_rotated(&slot.credential.name, &next.fingerprint());
        slot.state.refresh_token = Some(next);
        slot.state.refresh_issued_at = Some(Timestamp(SystemTime::now()));
        note_seed(&mut slot.state, seed_fp, self.is_shared());
        self.save(slot).await
    }

    async fn record_failure(&self, slot: &mut Slot, error: &RefreshError) {
        let now = SystemTime::now();
        slot.state.failures = slot.state.failures.saturating_add(1);
        let left = slot
            .current_token(now)
            .and_then(|t| t.expires_at.duration_since(now).ok());
        let retry_after = schedule::honoured_retry_after(
            error.retry_after(),
            left,
            slot.credential.timeout,
            slot.credential.retry.permanent,
        );
        let delay = schedule::retry_delay(
            slot.state.failures,
            error.is_transient(),
            retry_after,
            &slot.credential.retry,
            fastrand::f64(),
        );
        slot.state.next_attempt = Some(Timestamp(now + delay));
        slot.state.last_error = Some(StoredError {
            at: Timestamp(now),
            message: error.to_string(),
            transient: error.is_transient(),
        });
        events::refresh_failed(
            &slot.credential.name,
            &error.to_string(),
            error.result(),
            error.is_transient(),
            slot.state.failures,
            delay,
            left,
        );
        // Best effort: the error is already in the log, and the state file may be the
        // very thing that is failing.
        if let Err(e) = self.save(slot).await {
            tracing::warn!(credential = %slot.credential.name, error = %e, "cannot record the failure in state");
        }
    }

    async fn save(&self, slot: &mut Slot) -> Result<(), RefreshError> {
        self.persist(slot).await.map(|_| ())
    }

    /// Saves the slot's state: the state file, or on a shared store the commit of our
    /// claim. `Ok(false)`: a shared store already holds a newer commit, which the slot now
    /// holds instead (ours is dropped).
    async fn persist(&self, slot: &mut Slot) -> Result<bool, RefreshError> {
        if self.is_shared() {
            return self.commit(slot).await;
        }
        self.save_local(slot).await.map(|_| true)
    }

    async fn save_local(&self, slot: &mut Slot) -> Result<(), RefreshError> {
        let (dir, state) = (self.state_dir.clone(), slot.state.clone());
        let result = blocking(move || dir.save(&state)).await;
        slot.unsaved = result.is_err();
        result.map_err(|source| RefreshError::State {
            credential: slot.credential.name.clone(),
            source,
        })
    }
}

/// After this error the provider may have received and spent the refresh token: the
/// request went out and no usable answer came back.
fn maybe_spent(error: &FetchError) -> bool {
    match error {
        FetchError::Timeout { .. } | FetchError::BadAnswer { .. } => true,
        FetchError::Unavailable { status, .. } => *status >= 500,
        _ => false,
    }
}
