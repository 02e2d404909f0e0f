//! The supervisor behind `tokend run`: one loop owns every credential's schedule, starts
//! refreshes when they are due (bounded concurrency), and handles signals and reloads.
//!
//! Workers send results back over a channel; only this loop decides. Deadlines are wall-clock
//! instants, re-checked at least every [`MAX_SLEEP`], so a suspend or a clock step delays a
//! due refresh by at most that much, while an idle process wakes only a few times a minute.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::{self, Config, Credential, Secrets};
use crate::control::Control;
use crate::deadlines::{Deadlines, Now};
use crate::engine::{Engine, Outcome, RefreshError, Slot};
use crate::error::Error;
use crate::events;
use crate::notify::Notifier;
use crate::observe::{MAX_SLEEP, Observed, View};
use crate::provider::Provider;
use crate::secret::ProcessEnv;

mod group;

use group::GroupInputs;

/// In-flight refreshes get this long to finish on SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// At most this many refreshes talk to providers at once.
const MAX_CONCURRENT: usize = 64;
/// How often every output is looked at (`stat`, no read) and put back from state when it
/// was deleted or replaced. Thousands of credentials cost a few milliseconds per round.
/// As often as the loop wakes anyway ([`MAX_SLEEP`]): the check costs no wake-up of its own.
pub const OUTPUT_CHECK_EVERY: Duration = MAX_SLEEP;
/// At most about this many credentials' outputs are checked per round, in turns: a few
/// hundred credentials are all checked every round, 10 000 each every ~10 minutes, so the
/// idle cost stays a few hundred `stat`s per round whatever the number of credentials.
const OUTPUT_CHECK_BATCH: usize = 512;

pub async fn run(config_path: PathBuf, config: Config) -> Result<(), Error> {
    let runtime = crate::runtime::open(&config, true).await?;
    let (control_tx, control_rx) = mpsc::channel(64);
    forward_signals(control_tx.clone()).map_err(Error::Signals)?;
    let nofile = raise_fd_limit();
    let observed = Arc::new(Observed::default());
    observed.beat();
    if let Some(listen) = config.listen {
        crate::http::serve(
            listen,
            observed.clone(),
            control_tx.clone(),
            crate::http::max_connections(nofile),
        )
        .await
        .map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
    }
    let mut supervisor = Supervisor::new(runtime.engine, config_path, config, observed);
    let mut election = None;
    if let Some(group) = runtime.group {
        let store = group.shared.store();
        store.set_fence(None);
        let leadership = match group.config.role {
            crate::ha::Role::Follower => None,
            crate::ha::Role::Auto => {
                let c = group
                    .shared
                    .campaign(group.identity.clone(), group.config.lease);
                let rx = c.watch();
                election = Some(c);
                Some(rx)
            }
        };
        events::leadership(&group.config.group, false, None);
        let watched = store.watch();
        let names: Vec<String> = supervisor.entries.keys().cloned().collect();
        store.track(&names);
        supervisor.group = Some(Group {
            name: group.config.group.clone(),
            store,
            leadership: crate::ha::Leadership::default(),
            inputs: GroupInputs {
                leadership,
                watched,
            },
        });
        supervisor.publish_role();
    }
    supervisor.run(control_rx).await;
    if let Some(e) = election {
        e.resign().await;
    }
    Ok(())
}

/// The supervisor's view of its `ha` group.
struct Group {
    name: String,
    store: Arc<dyn crate::store::SharedStore>,
    leadership: crate::ha::Leadership,
    inputs: GroupInputs,
}

/// Raises the soft descriptor limit to the hard one (systemd starts services at 1 024 soft,
/// which thousands of credentials with outputs and connections can exceed) and returns
/// the soft limit in force. Under the shipped unit `setrlimit` is filtered out and
/// `LimitNOFILE=` does the same job, so a refusal is not an error.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    // An unlimited hard limit still stops at the kernel's nr_open (1 048 576 by default).
    let target = hard.min(1 << 20);
    if soft < target && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        tracing::debug!(from = soft, to = target, "raised the descriptor limit");
        return target;
    }
    soft
}

/// SIGTERM: Kubernetes and systemd stop us with it. SIGINT: Ctrl-C. SIGHUP: reload, as
/// `systemctl reload` sends. SIGUSR1: refresh everything now.
fn forward_signals(tx: mpsc::Sender<Control>) -> std::io::Result<()> {
    let mut signals = crate::signals::Daemon::install()?;
    tokio::spawn(async move {
        loop {
            let control = match signals.recv().await {
                crate::signals::Received::Reload => Control::Reload,
                crate::signals::Received::RefreshAll => Control::RefreshAll,
                crate::signals::Received::Stop => Control::Shutdown,
            };
            if tx.send(control).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}

struct Entry {
    credential: Arc<Credential>,
    /// `None` while a refresh task holds the slot. Boxed: a slot is ~1.4 KB, and inline it
    /// made every bucket of the 10 000-entry map that big, empty ones included (24 MB, and
    /// 36 MB while the map grew).
    slot: Option<Box<Slot>>,
    next: SystemTime,
    force: bool,
    /// Every output held the current token after the last attempt (or output check).
    outputs_ok: bool,
    /// What the last output check found wrong, until a write puts it right.
    outputs_note: Option<String>,
    /// A changed or removed credential whose refresh was in flight: apply on return.
    pending: Pending,
    /// Another process committed while this credential's attempt was in flight: look again
    /// as soon as it returns.
    store_changed: bool,
}

enum Pending {
    None,
    Replace(Arc<Credential>),
    Remove,
}

type Done = (String, Box<Slot>, Result<Outcome, RefreshError>);
/// Work done off the loop reports back over one of these.
type Channel<T> = (mpsc::Sender<T>, mpsc::Receiver<T>);

struct Supervisor {
    engine: Arc<Engine>,
    config_path: PathBuf,
    config: Config,
    entries: HashMap<String, Entry>,
    queue: Deadlines,
    tasks: JoinSet<Done>,
    /// Which credential each refresh task holds: a task that panics returns no `Done`, and
    /// its credential must not stay silently unscheduled.
    running: HashMap<tokio::task::Id, String>,
    /// A SIGHUP's config load runs off this loop and reports here.
    reloads: Channel<Result<Config, String>>,
    reloading: bool,
    /// Another SIGHUP came while a load was running: load again after it.
    reload_again: bool,
    /// The periodic output check runs off this loop and reports credentials whose outputs
    /// are not in place, with what is wrong.
    checks: Channel<Vec<(String, String)>>,
    checking: bool,
    next_check: Instant,
    /// Which share of the credentials the next output check covers.
    check_turn: usize,
    observed: Arc<Observed>,
    notifier: Notifier,
    ready_sent: bool,
    /// Credentials whose first attempt has not finished yet (READY=1 waits for them).
    first_round: HashSet<String>,
    /// The systemd STATUS= line is due an update; sent at most once a second.
    status_dirty: bool,
    status_sent: Option<Instant>,
    /// Set with an `ha` block.
    group: Option<Group>,
}

impl Supervisor {
    fn new(
        engine: Arc<Engine>,
        config_path: PathBuf,
        mut config: Config,
        observed: Arc<Observed>,
    ) -> Self {
        // Credentials live in the entries (one Arc each); `config` keeps the rest.
        let credentials = std::mem::take(&mut config.credentials);
        let mut s = Supervisor {
            engine,
            config_path,
            config,
            entries: HashMap::with_capacity(credentials.len()),
            queue: Deadlines::default(),
            tasks: JoinSet::new(),
            running: HashMap::new(),
            reloads: mpsc::channel(1),
            reloading: false,
            reload_again: false,
            checks: mpsc::channel(1),
            checking: false,
            next_check: Instant::now() + OUTPUT_CHECK_EVERY,
            check_turn: 0,
            observed,
            notifier: Notifier::from_env(),
            ready_sent: false,
            first_round: HashSet::new(),
            status_dirty: true,
            status_sent: None,
            group: None,
        };
        for c in credentials {
            s.add(Arc::new(c));
        }
        s.check_ready();
        s
    }

    async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        tracing::info!(
            credentials = self.entries.len(),
            config = %self.config_path.display(),
            state_dir = %self.config.state_dir.display(),
            "tokend started"
        );
        loop {
            self.observed.beat();
            self.notifier.watchdog();
            self.notify_status();
            self.start_output_check();
            self.start_due();
            let sleep = self.sleep_duration();
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    match done {
                        Ok((id, done)) => {
                            self.running.remove(&id);
                            self.finish(done);
                        }
                        Err(e) => self.crashed(e),
                    }
                }
                Some(loaded) = self.reloads.1.recv() => self.finish_reload(loaded),
                Some(found) = self.checks.1.recv() => self.finish_output_check(found),
                event = async {
                    match self.group.as_mut() {
                        Some(g) => g.inputs.next().await,
                        None => std::future::pending().await,
                    }
                } => self.group_event(event),
                msg = control.recv() => match msg {
                    Some(Control::Shutdown) | None => break,
                    Some(Control::Reload) => {
                        // Outputs first: putting them back needs no config, and works even
                        // when the new config turns out to be invalid.
                        self.restore_outputs();
                        self.start_reload();
                    }
                    Some(Control::RefreshAll) => {
                        tracing::info!("refreshing every credential now (SIGUSR1)");
                        let names: Vec<String> = self.entries.keys().cloned().collect();
                        for name in names {
                            self.force(&name);
                        }
                    }
                    Some(Control::Refresh(name)) => self.force(&name),
                },
            }
        }
        self.shutdown().await
    }

    fn add(&mut self, credential: Arc<Credential>) {
        let name = credential.name.clone();
        let slot = self.engine.slot(credential.clone());
        let now = SystemTime::now();
        // A fresh token in state is published at once (outputs may be missing); the
        // engine's `ensure` does that without calling the provider.
        let next = match slot.current_token(now) {
            Some(token) if now < slot.refresh_at(&token) && slot.state.failures == 0 => {
                crate::events::token_reused(
                    &name,
                    &token,
                    slot.refresh_at(&token),
                    slot.state.last_success.map(|t| t.0),
                );
                now
            }
            _ => slot.next_attempt(now),
        };
        // A failure recorded before a restart counts as the first attempt (for READY=1):
        // its backoff is honoured, so a crash loop cannot become a login storm.
        let waiting = slot.state.failures > 0 && next > now;
        if waiting {
            tracing::info!(
                credential = %name,
                event = "waiting",
                last_error = slot.state.last_error.as_ref().map(|e| e.message.as_str()).unwrap_or(""),
                next_attempt = %crate::util::rfc3339(next),
                "the last attempt before the restart failed; waiting for its retry time"
            );
        }
        events::tracked(&name);
        publish_view(&self.observed, &name, &slot, false, None, waiting, next);
        events::scheduled(&name, next);
        if !waiting {
            self.first_round.insert(name.clone());
        }
        self.entries.insert(
            name.clone(),
            Entry {
                credential,
                slot: Some(Box::new(slot)),
                next,
                force: false,
                outputs_ok: false,
                outputs_note: None,
                pending: Pending::None,
                store_changed: false,
            },
        );
        self.queue.insert(&name, next, Now::read());
    }

    /// Sends STATUS= when something changed, at most once a second: building the line
    /// walks every credential, which must not happen per refresh with thousands of them.
    fn notify_status(&mut self) {
        if !self.notifier.is_enabled() || !self.status_dirty {
            return;
        }
        if self
            .status_sent
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.notifier
            .status(&self.observed.summary(SystemTime::now()));
        self.status_sent = Some(Instant::now());
        self.status_dirty = false;
    }

    fn force(&mut self, name: &str) {
        let now = Now::read();
        if let Some(entry) = self.entries.get_mut(name) {
            entry.force = true;
            if entry.slot.is_some() {
                entry.next = now.wall;
                self.queue.insert(name, now.wall, now);
            }
        }
    }

    fn sleep_duration(&self) -> Duration {
        let now = Now::read();
        // The watchdog is pinged from this loop, so the loop must wake often enough for it.
        let mut cap = self
            .notifier
            .watchdog_interval()
            .map_or(MAX_SLEEP, |w| w.min(MAX_SLEEP));
        if !self.checking {
            cap = cap.min(self.next_check.saturating_duration_since(now.mono));
        }
        if self.status_dirty && self.notifier.is_enabled() {
            // A throttled STATUS= update goes out within a second.
            cap = cap.min(Duration::from_secs(1));
        }
        if self.tasks.len() >= MAX_CONCURRENT {
            // At capacity: the next thing that can happen is a task finishing.
            return cap;
        }
        self.queue.until_next(now).map_or(cap, |d| d.min(cap))
    }

    /// Starts refreshes whose deadline has passed (by either clock, see
    /// [`crate::deadlines`]), at most `MAX_CONCURRENT` at a time. The rest stay queued, not
    /// spawned: ten thousand waiting tasks would cost megabytes that the allocator then keeps.
    fn start_due(&mut self) {
        let now = Now::read();
        while self.tasks.len() < MAX_CONCURRENT {
            let Some((name, at)) = self.queue.pop_due(now) else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&name) else {
                continue;
            };
            let Some(mut slot) = entry.slot.take() else {
                continue;
            };
            if at > now.wall {
                // Due by the monotonic clock only: the wall clock stepped back.
                slot.judge_due_as_of(at);
            }
            let force = std::mem::take(&mut entry.force);
            entry.store_changed = false;
            let may_fetch = self.may_fetch();
            let engine = self.engine.clone();
            let task_name = name.clone();
            let handle = self.tasks.spawn(async move {
                let name = task_name;
                #[cfg(debug_assertions)]
                test_fault::maybe_panic(&name);
                let result = engine.ensure(&mut slot, force, may_fetch).await;
                (name, slot, result)
            });
            self.running.insert(handle.id(), name);
        }
    }

    /// A refresh task panicked (a bug): its slot went down with it. The credential gets a
    /// fresh slot from the state on disk (what the task held in memory and had not saved is
    /// lost, as in a crash of the process), counts as failed with the transient backoff, and
    /// is scheduled again, so one bad path can neither stop its refreshes for good nor
    /// become a retry loop; `/v1/status` and `/readyz` show the failure like any other.
    fn crashed(&mut self, error: tokio::task::JoinError) {
        let Some(name) = self.running.remove(&error.id()) else {
            tracing::error!(error = %error, "a task of unknown origin crashed");
            return;
        };
        if !error.is_panic() {
            // Only shutdown aborts tasks, and it does not come back here.
            return;
        }
        let Some(entry) = self.entries.get_mut(&name) else {
            return;
        };
        let credential = match std::mem::replace(&mut entry.pending, Pending::None) {
            Pending::Remove => {
                self.entries.remove(&name);
                self.observed.remove(&name);
                events::removed(&name);
                return;
            }
            Pending::Replace(credential) => credential,
            Pending::None => entry.credential.clone(),
        };
        let mut slot = self.engine.slot(credential.clone());
        let now = SystemTime::now();
        let message = format!(
            "the refresh of {name} panicked ({}); this is a bug in tokend, please report it with the log; retrying",
            panic_message(error)
        );
        slot.state.failures = slot.state.failures.saturating_add(1);
        let delay = crate::schedule::retry_delay(
            slot.state.failures,
            true,
            None,
            &credential.retry,
            fastrand::f64(),
        );
        slot.state.next_attempt = Some(crate::store::Timestamp(now + delay));
        slot.state.last_error = Some(crate::store::StoredError {
            at: crate::store::Timestamp(now),
            message: message.clone(),
            transient: true,
        });
        events::refresh_panicked(&name, &message, slot.state.failures, delay);
        entry.credential = credential;
        entry.force = false;
        self.settle(name, Box::new(slot));
    }

    fn finish(&mut self, (name, slot, result): Done) {
        let Some(entry) = self.entries.get_mut(&name) else {
            return;
        };
        match std::mem::replace(&mut entry.pending, Pending::None) {
            Pending::Remove => {
                self.entries.remove(&name);
                self.observed.remove(&name);
                events::removed(&name);
                return;
            }
            Pending::Replace(credential) => {
                self.entries.remove(&name);
                self.add(credential);
                return;
            }
            Pending::None => {}
        }
        entry.outputs_ok = match &result {
            Ok(_) => true,
            Err(RefreshError::Output { .. }) => false,
            // A failed fetch leaves the outputs as they were.
            Err(_) => entry.outputs_ok,
        };
        if entry.outputs_ok {
            entry.outputs_note = None;
        }
        if let Ok(Outcome::Current {
            written: true,
            mirrored: false,
        }) = &result
            && !self.first_round.contains(&name)
        {
            events::outputs_restored(&name);
        }
        self.settle(name, slot);
    }

    /// Puts a slot back after an attempt and schedules its next one.
    fn settle(&mut self, name: String, slot: Box<Slot>) {
        let Some(entry) = self.entries.get_mut(&name) else {
            return;
        };
        let now = SystemTime::now();
        let next = if entry.force || std::mem::take(&mut entry.store_changed) {
            now
        } else {
            slot.next_attempt(now)
        };
        entry.next = next;
        publish_view(
            &self.observed,
            &name,
            &slot,
            entry.outputs_ok,
            entry.outputs_note.clone(),
            true,
            next,
        );
        events::scheduled(&name, next);
        entry.slot = Some(slot);
        self.first_round.remove(&name);
        self.queue.insert(&name, next, Now::read());
        self.check_ready();
        self.status_dirty = true;
        self.notify_status();
    }

    /// READY=1 once every credential has a token or has failed its first attempt.
    fn check_ready(&mut self) {
        if !self.ready_sent && self.first_round.is_empty() {
            self.ready_sent = true;
            self.notifier.ready();
            tracing::info!(
                summary = %self.observed.summary(SystemTime::now()),
                "every credential had its first attempt"
            );
        }
    }

    /// SIGHUP: the config and its secrets are read off this loop, with a deadline
    /// ([`config::load_within`]), so a secret on a hung mount or a FIFO never stops the other
    /// credentials, `/healthz` or SIGTERM. The result comes back to [`Self::finish_reload`].
    fn start_reload(&mut self) {
        if self.reloading {
            self.reload_again = true;
            return;
        }
        self.reloading = true;
        self.notifier.reloading();
        let path = self.config_path.clone();
        let tx = self.reloads.0.clone();
        tokio::spawn(async move {
            let loaded = tokio::task::spawn_blocking(move || {
                config::load_within(&path, ProcessEnv, Secrets::Resolve)
            })
            .await;
            let loaded = match loaded {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send(loaded).await;
        });
    }

    fn finish_reload(&mut self, loaded: Result<Config, String>) {
        self.reloading = false;
        match loaded {
            Ok(new) => self.apply(new),
            Err(e) => {
                tracing::error!(error = %e, "reload failed: the new config is invalid; keeping the running one");
            }
        }
        self.notifier.ready();
        self.status_dirty = true;
        if std::mem::take(&mut self.reload_again) {
            self.start_reload();
        }
    }

    /// Applies a reloaded config: diff by name. An invalid config never gets here.
    fn apply(&mut self, mut new: Config) {
        if new.state_dir != self.config.state_dir
            || new.listen != self.config.listen
            || new.log != self.config.log
            || new.ha != self.config.ha
        {
            tracing::warn!(
                "state_dir, listen, log and ha changes take effect only after a restart"
            );
        }
        let (mut added, mut changed, mut removed, mut kept) = (0, 0, 0, 0);
        let credentials = std::mem::take(&mut new.credentials);
        let new_names: HashSet<&str> = credentials.iter().map(|c| c.name.as_str()).collect();
        let old_names: Vec<String> = self.entries.keys().cloned().collect();
        for name in old_names {
            if !new_names.contains(name.as_str()) {
                removed += 1;
                self.remove(&name);
            }
        }
        for c in &credentials {
            let credential = Arc::new(c.clone());
            match self.entries.get_mut(&c.name) {
                None => {
                    added += 1;
                    self.add(credential);
                }
                Some(entry) if *entry.credential == *c => {
                    kept += 1;
                    // Removed by an earlier reload while its refresh was in flight, and back
                    // now: it stays.
                    if matches!(entry.pending, Pending::Remove) {
                        entry.pending = Pending::None;
                    }
                }
                Some(entry) => {
                    changed += 1;
                    if entry.slot.is_some() {
                        self.queue.remove(&c.name);
                        self.entries.remove(&c.name);
                        self.add(credential);
                    } else {
                        entry.credential = credential.clone();
                        entry.pending = Pending::Replace(credential);
                    }
                }
            }
        }
        if let Some(g) = &self.group {
            g.store.track(
                &credentials
                    .iter()
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>(),
            );
        }
        tracing::info!(added, changed, removed, unchanged = kept, "config reloaded");
        self.config = new;
    }

    fn remove(&mut self, name: &str) {
        if let Some(entry) = self.entries.get_mut(name) {
            if entry.slot.is_some() {
                self.queue.remove(name);
                self.entries.remove(name);
                self.first_round.remove(name);
                self.observed.remove(name);
                events::removed(name);
            } else {
                entry.pending = Pending::Remove;
            }
        }
    }

    /// SIGHUP: every credential that is not backing off gets an immediate `ensure`. With a
    /// fresh token that only compares each output with the state (contents, not just
    /// `stat`) and rewrites what differs, so an edited output is put back at once.
    fn restore_outputs(&mut self) {
        let now = Now::read();
        for (name, entry) in &mut self.entries {
            if entry.slot.as_ref().is_some_and(|s| s.state.failures == 0) {
                entry.next = now.wall;
                self.queue.insert(name, now.wall, now);
            }
        }
    }

    /// Every [`OUTPUT_CHECK_EVERY`], `stat`s the outputs of every settled credential off this
    /// loop (one check at a time: a hung mount delays checks, never the loop).
    fn start_output_check(&mut self) {
        if self.checking || Instant::now() < self.next_check {
            return;
        }
        self.next_check = Instant::now() + OUTPUT_CHECK_EVERY;
        let now = SystemTime::now();
        let shares = self.entries.len().div_ceil(OUTPUT_CHECK_BATCH).max(1);
        let turn = self.check_turn % shares;
        self.check_turn = self.check_turn.wrapping_add(1);
        let settled: Vec<_> = self
            .entries
            .iter()
            .filter(|(name, _)| share_of(name, shares) == turn)
            .filter(|(_, e)| e.outputs_ok)
            .filter_map(|(name, e)| {
                let slot = e.slot.as_ref().filter(|s| s.state.failures == 0)?;
                Some((name.clone(), e.credential.clone(), slot.current_token(now)?))
            })
            .collect();
        if settled.is_empty() {
            return;
        }
        self.checking = true;
        let tx = self.checks.0.clone();
        tokio::task::spawn_blocking(move || {
            let found: Vec<(String, String)> = settled
                .iter()
                .filter_map(|(name, credential, token)| {
                    let problem = credential
                        .outputs
                        .iter()
                        .find_map(|o| o.check_in_place(token, name).err())?;
                    Some((name.clone(), problem))
                })
                .collect();
            let _ = tx.blocking_send(found);
        });
    }

    /// Outputs found missing or altered: not ready until an immediate `ensure` (the state's
    /// token, no provider call) has written them back.
    fn finish_output_check(&mut self, found: Vec<(String, String)>) {
        self.checking = false;
        let now = Now::read();
        for (name, problem) in found {
            let Some(entry) = self.entries.get_mut(&name) else {
                continue;
            };
            // A refresh in flight is writing them anyway.
            let Some(slot) = entry.slot.as_ref() else {
                continue;
            };
            events::output_not_in_place(&name, &problem);
            entry.outputs_ok = false;
            entry.outputs_note = Some(problem);
            entry.next = now.wall;
            publish_view(
                &self.observed,
                &name,
                slot,
                false,
                entry.outputs_note.clone(),
                true,
                now.wall,
            );
            self.queue.insert(&name, now.wall, now);
        }
    }

    /// Start nothing new; give in-flight refreshes the grace period to land (a rotated
    /// refresh token must reach the state file), then stop.
    async fn shutdown(mut self) {
        let in_flight = self.tasks.len();
        self.notifier.stopping();
        tracing::info!(in_flight, "stopping");
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                abandoned = self.tasks.len(),
                "in-flight refreshes did not finish within {}s; stopping anyway",
                SHUTDOWN_GRACE.as_secs()
            );
            self.tasks.abort_all();
        }
        tracing::info!("stopped");
    }
}

/// What `/readyz`, `/v1/status`, `/metrics` and STATUS= know about a credential.
fn publish_view(
    observed: &Observed,
    name: &str,
    slot: &Slot,
    outputs_ok: bool,
    outputs_note: Option<String>,
    attempted: bool,
    next: SystemTime,
) {
    let summary = slot.state.summary();
    events::health(name, crate::status::needs_person(&summary));
    observed.set(
        name,
        View {
            provider: slot.credential.provider.kind().as_str(),
            state: summary,
            chain_lifetime: slot.credential.provider.refresh_token_lifetime(),
            outputs_ok,
            outputs_note,
            attempted,
            next,
        },
    );
}

/// What a panicking task said, for the log and the status (panics carry a `&str` or a
/// `String`; anything else is named as such).
fn panic_message(error: tokio::task::JoinError) -> String {
    let payload = error.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// A fault for the integration tests only (debug builds): the refresh task of the
/// credential named by `TOKEND_TEST_PANIC_CREDENTIAL` panics, as a bug in a provider or the
/// engine would, so the supervisor's recovery can be tested through the real binary.
#[cfg(debug_assertions)]
mod test_fault {
    pub fn maybe_panic(credential: &str) {
        if std::env::var_os("TOKEND_TEST_PANIC_CREDENTIAL").is_some_and(|v| v == credential) {
            panic!("test fault: the refresh task of {credential} panicked on purpose");
        }
    }
}

/// Which of `shares` output-check turns a credential belongs to: stable across rounds and
/// reloads (`DefaultHasher::new` has fixed keys), so every credential is checked once a cycle.
fn share_of(name: &str, shares: usize) -> usize {
    use std::hash::{Hash, Hasher};
    if shares <= 1 {
        return 0;
    }
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    (h.finish() % shares as u64) as usize
}

#[cfg(test)]
mod output_check_tests {
    use super::*;

    #[test]
    fn every_credential_is_checked_once_a_cycle_in_batches_of_about_the_limit() {
        let names: Vec<String> = (0..10_000).map(|i| format!("cred-{i}")).collect();
        let shares = names.len().div_ceil(OUTPUT_CHECK_BATCH);
        let mut per_turn = vec![0usize; shares];
        for n in &names {
            let turn = share_of(n, shares);
            assert_eq!(turn, share_of(n, shares), "stable");
            per_turn[turn] += 1;
        }
        assert_eq!(per_turn.iter().sum::<usize>(), names.len());
        assert!(
            per_turn
                .iter()
                .all(|&n| n > 0 && n < 2 * OUTPUT_CHECK_BATCH),
            "{per_turn:?}"
        );
        assert_eq!(share_of("only", 1), 0);
    }
}
