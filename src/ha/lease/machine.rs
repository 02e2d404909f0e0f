//! Who leads a group by a Kubernetes Lease, as a pure state machine over injected
//! `Instant`s (client-go's rules, HA.md §3.4). The driver (`super`) asks [`Machine::poll`]
//! what to do, does it, and feeds the outcome back.
//!
//! Expiry is judged only from what this process observed on its own monotonic clock: the
//! holder's Lease counts as expired once its spec has not changed for
//! `leaseDurationSeconds` since *we* first saw it so, whatever `renewTime` says (another
//! machine's wall clock). The holder, in turn, leads only until `last successful write
//! sent + lease − margin` (the etcd election's [`lead_until`]), which is before anyone
//! else can have seen that write unchanged for a whole lease.

use std::time::{Duration, Instant, SystemTime};

use super::record::{Record, Spec, duration_secs, micro_time};
use crate::ha::election::lead_until;

/// The first retry after an error waits this long; each further one doubles it.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Retries never wait longer than this, nor longer than the retry period.
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// Lost races (409) are re-read at once this many times in a row, then with backoff, so
/// a server that answers 409 to everything cannot make us spin.
const QUICK_REREADS: u32 = 3;

/// How often the leader renews and the others read: a fifth of the lease, so a leader
/// gets about three tries before its deadline at three quarters.
pub fn retry_period(lease: Duration) -> Duration {
    lease / 5
}

/// Why a write is sent (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Renew,
    Acquire,
}

/// The next API request the driver should make.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Read the Lease (a consistent GET).
    Get,
    /// POST the Lease with this spec (it did not exist).
    Create(Spec),
    /// PUT `base` (the Lease as last read) with this spec, if it is still at its
    /// resourceVersion.
    Update {
        base: Record,
        spec: Spec,
        why: Write,
    },
}

/// What to do now, or when to ask again.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub action: Option<Action>,
    /// With no action: call [`Machine::poll`] again at this instant.
    pub wake: Option<Instant>,
}

/// A write decided from the last read, sent on the next poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intent {
    Create,
    Renew,
    Acquire,
}

#[derive(Clone, Debug)]
pub struct Machine {
    identity: String,
    /// What we write as `leaseDurationSeconds` (whole seconds).
    lease: Duration,
    retry: Duration,
    /// The Lease as last read or written.
    record: Option<Record>,
    /// When `record.spec` was first seen as it is now.
    observed_at: Option<Instant>,
    /// While holding: the end of leadership earned by the last successful write.
    lead_until: Option<Instant>,
    pending: Option<Intent>,
    /// The cached `record` may be stale (a lost race, an error): GET before writing.
    need_read: bool,
    next_tick: Instant,
    retry_at: Option<Instant>,
    failures: u32,
    rereads: u32,
}

impl Machine {
    /// A candidate that reads the Lease at once.
    pub fn new(identity: String, lease: Duration, now: Instant) -> Machine {
        let lease = Duration::from_secs(duration_secs(lease) as u64);
        Machine {
            identity,
            lease,
            retry: retry_period(lease),
            record: None,
            observed_at: None,
            lead_until: None,
            pending: None,
            need_read: true,
            next_tick: now,
            retry_at: None,
            failures: 0,
            rereads: 0,
        }
    }

    /// The written lease duration (whole seconds).
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// May this process start claims at `now`?
    pub fn leading(&self, now: Instant) -> bool {
        self.lead_until.is_some_and(|u| now < u)
    }

    /// While leading: the instant leadership ends unless a write succeeds first.
    pub fn step_down_at(&self, now: Instant) -> Option<Instant> {
        self.lead_until.filter(|_| self.leading(now))
    }

    /// The holder as last seen; ourselves only while [`Machine::leading`].
    pub fn leader(&self, now: Instant) -> Option<&str> {
        let holder = self.record.as_ref().map(|r| r.holder.as_str())?;
        if holder.is_empty() || (holder == self.identity && !self.leading(now)) {
            return None;
        }
        Some(holder)
    }

    /// `leaseTransitions` of our tenure while we lead.
    pub fn leader_rev(&self, now: Instant) -> Option<i64> {
        self.record
            .as_ref()
            .filter(|_| self.leading(now))
            .map(|r| r.transitions)
    }

    pub fn poll(&self, now: Instant, wall: SystemTime) -> Step {
        let step_down_at = self.step_down_at(now);
        let wait = |at: Instant| Step {
            action: None,
            wake: Some(step_down_at.map_or(at, |s| s.min(at))),
        };
        if let Some(retry) = self.retry_at.filter(|r| now < *r) {
            return wait(retry);
        }
        let act = |a| Step {
            action: Some(a),
            wake: None,
        };
        if let Some(intent) = self.pending {
            return act(self.write(intent, wall));
        }
        if now < self.next_tick {
            return wait(self.next_tick);
        }
        // The holder's fast path: renew on the cached resourceVersion, no GET.
        if !self.need_read && self.holds_record() {
            return act(self.write(Intent::Renew, wall));
        }
        act(Action::Get)
    }

    fn holds_record(&self) -> bool {
        self.record
            .as_ref()
            .is_some_and(|r| r.holder == self.identity)
    }

    fn write(&self, intent: Intent, wall: SystemTime) -> Action {
        let now = micro_time(wall);
        let mut spec = Spec {
            holder: self.identity.clone(),
            duration_secs: self.lease.as_secs() as i64,
            acquire_time: now.clone(),
            renew_time: now,
            transitions: 0,
        };
        let Some(record) = self.record.as_ref().filter(|_| intent != Intent::Create) else {
            return Action::Create(spec);
        };
        let why = if intent == Intent::Renew && record.holder == self.identity {
            if let Some(at) = &record.acquire_time {
                spec.acquire_time = at.clone();
            }
            spec.transitions = record.transitions;
            Write::Renew
        } else {
            spec.transitions = record.transitions.saturating_add(1);
            Write::Acquire
        };
        Action::Update {
            base: record.clone(),
            spec,
            why,
        }
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
        self.need_read = false;
    }

    fn schedule(&mut self, now: Instant, jitter: f64) {
        self.next_tick = now + self.retry.mul_f64(jitter.clamp(1.0, 2.0));
    }

    /// Remembers `record`, restarting the expiry clock if its spec changed.
    fn remember(&mut self, now: Instant, record: Record) {
        if self
            .record
            .as_ref()
            .is_none_or(|old| old.spec != record.spec)
        {
            self.observed_at = Some(now);
        }
        self.record = Some(record);
    }

    /// A GET answered at `now` (`None`: 404). `jitter` ∈ [1, 1.2] spreads the next read.
    pub fn observed(&mut self, now: Instant, record: Option<Record>, jitter: f64) {
        self.succeeded();
        let Some(record) = record else {
            // Deleted: whoever creates it next leads at once, so we must not.
            self.record = None;
            self.observed_at = None;
            self.lead_until = None;
            self.pending = Some(Intent::Create);
            return;
        };
        self.remember(now, record);
        let record = self.record.as_ref().expect("just remembered");
        let duration = record.duration.unwrap_or(self.lease);
        let expired = self.observed_at.is_some_and(|at| at + duration < now);
        self.pending = if record.holder == self.identity {
            Some(Intent::Renew)
        } else {
            // Someone else's (or nobody's): it may act on it now, so we must not.
            self.lead_until = None;
            (record.holder.is_empty() || expired).then_some(Intent::Acquire)
        };
        if self.pending.is_none() {
            self.rereads = 0;
            self.schedule(now, jitter);
        }
    }

    /// A create or update sent at `sent` succeeded at `now`, returning `record`.
    pub fn written(&mut self, sent: Instant, now: Instant, record: Record, jitter: f64) {
        self.succeeded();
        self.rereads = 0;
        self.pending = None;
        self.lead_until = (record.holder == self.identity).then(|| lead_until(sent, self.lease));
        self.remember(now, record);
        self.schedule(now, jitter);
    }

    /// A write lost a race (409 Conflict or AlreadyExists) or its outcome is unknown
    /// (ambiguous): read the Lease again, at once unless this keeps happening.
    pub fn reread(&mut self, now: Instant, jitter: f64) {
        self.pending = None;
        self.rereads = self.rereads.saturating_add(1);
        if self.rereads > QUICK_REREADS {
            // Reads in between succeed, so count the lost races, not the failures.
            self.back_off(now, jitter, self.rereads - QUICK_REREADS - 1);
            return;
        }
        self.need_read = true;
        self.retry_at = None;
        self.next_tick = now;
    }

    /// Any other failure (unreachable, refused, forbidden, a bad answer): back off, capped
    /// and jittered by `jitter`, then read again. Leadership runs out on its own deadline.
    pub fn failed(&mut self, now: Instant, jitter: f64) {
        self.back_off(now, jitter, self.failures);
        self.failures = self.failures.saturating_add(1);
    }

    /// Read again after the `attempt`th doubling of the base delay.
    fn back_off(&mut self, now: Instant, jitter: f64, attempt: u32) {
        let delay = BACKOFF_BASE
            .saturating_mul(1 << attempt.min(10))
            .min(BACKOFF_CAP.min(self.retry))
            .mul_f64(jitter.clamp(1.0, 2.0));
        self.pending = None;
        self.need_read = true;
        self.retry_at = Some(now + delay);
        self.next_tick = now + delay;
    }

    /// On clean stop, while the last record we saw is ours: the PUT that hands the Lease
    /// back (holder empty, 1 s), so another candidate acquires at its next read instead of
    /// after a whole lease. Safe even after a step-down: the write is conditional on `rv`.
    pub fn release(&self, wall: SystemTime) -> Option<(Record, Spec)> {
        let record = self.record.as_ref().filter(|_| self.holds_record())?;
        let now = micro_time(wall);
        Some((
            record.clone(),
            Spec {
                holder: String::new(),
                duration_secs: 1,
                acquire_time: now.clone(),
                renew_time: now,
                transitions: record.transitions,
            },
        ))
    }

    /// The release was sent (whatever came of it): lead no more.
    pub fn released(&mut self) {
        self.lead_until = None;
        self.pending = None;
        self.need_read = true;
    }
}

#[cfg(test)]
mod tests;
