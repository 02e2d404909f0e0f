//! Who leads a group, as a pure state machine over injected `Instant`s. The I/O driver
//! (`super::etcd_session`) asks [`Machine::poll`] what to do, does it, and feeds the outcome
//! back. Leadership only gates *starting* claims: safety is the store's compare-and-swap.
//!
//! The one rule that matters: we lead only until `last keepalive sent + TTL − margin` on our
//! own monotonic clock. etcd starts its TTL when it *receives* the keepalive (later than we
//! sent it) and, without lease checkpointing (3.4), a leader change of etcd only extends it.
//! So we stop before etcd can hand the key to anyone else, even while etcd is unreachable.

use std::time::{Duration, Instant};

/// The first retry after an error waits this long; each further one doubles it.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Retries never wait longer than this (and never longer than a quarter of the TTL, so a
/// lease in trouble still gets several keepalives before it lapses).
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// The smallest safety margin, for very short TTLs (tests).
const MIN_MARGIN: Duration = Duration::from_millis(200);

/// How much earlier than etcd we give up leadership: a quarter of the TTL, at least 200 ms,
/// at most half of it. It covers the time the engine needs to notice and clock-rate
/// differences between us and etcd (ppm in practice; the rest is latency, already
/// on our side because the deadline counts from *sending*).
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 4).max(MIN_MARGIN).min(ttl / 2)
}

/// The end of leadership earned by a grant or keepalive sent at `sent` for `ttl`.
pub fn lead_until(sent: Instant, ttl: Duration) -> Instant {
    sent + ttl - margin(ttl)
}

/// The next etcd request the driver should make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Grant a fresh lease (none held, or it was lost).
    Grant,
    /// Refresh the lease with this id.
    Keepalive(i64),
    /// Txn `CREATE(key) == 0 → put(identity, lease)`, else read the key.
    Campaign(i64),
    /// Watch the leader key from [`Machine::watch_from`], to see its DELETE.
    Watch,
}

/// What to do now, or when to ask again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub action: Option<Action>,
    /// With no action: call [`Machine::poll`] again at this instant (or on any event).
    pub wake: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    NoLease,
    Campaign,
    Leading,
    Following,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LeaseState {
    id: i64,
    ttl: Duration,
    /// `sent + ttl − margin` of the last successful grant or keepalive.
    valid_until: Instant,
    next_keepalive: Instant,
}

#[derive(Clone, Debug)]
pub struct Machine {
    identity: String,
    lease: Option<LeaseState>,
    phase: Phase,
    leader: Option<String>,
    leader_rev: Option<i64>,
    watching: bool,
    watch_from: i64,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Machine {
    pub fn new(identity: String) -> Machine {
        Machine {
            identity,
            lease: None,
            phase: Phase::NoLease,
            leader: None,
            leader_rev: None,
            watching: false,
            watch_from: 0,
            failures: 0,
            retry_at: None,
        }
    }

    /// May this process start claims at `now`?
    pub fn leading(&self, now: Instant) -> bool {
        self.phase == Phase::Leading && self.lease.is_some_and(|l| now < l.valid_until)
    }

    /// The leader as last seen (ourselves only while [`Machine::leading`]).
    pub fn leader(&self, now: Instant) -> Option<&str> {
        if self.phase == Phase::Leading && !self.leading(now) {
            return None;
        }
        self.leader.as_deref()
    }

    /// The leader key's create_revision while we lead: the fence for claim txns.
    pub fn leader_rev(&self, now: Instant) -> Option<i64> {
        self.leader_rev.filter(|_| self.leading(now))
    }

    /// While leading: the instant leadership ends unless a keepalive succeeds first.
    pub fn step_down_at(&self, now: Instant) -> Option<Instant> {
        self.lease
            .filter(|_| self.leading(now))
            .map(|l| l.valid_until)
    }

    /// The leader key's create_revision if our campaign created it, whether or not the
    /// lease is still trusted: a delete fenced on it is always safe.
    pub fn own_key_rev(&self) -> Option<i64> {
        self.leader_rev.filter(|_| self.phase == Phase::Leading)
    }

    pub fn lease_id(&self) -> Option<i64> {
        self.lease.map(|l| l.id)
    }

    /// Revision to start the leader-key watch from (after the campaign's read).
    pub fn watch_from(&self) -> i64 {
        self.watch_from
    }

    pub fn watching(&self) -> bool {
        self.watching
    }

    pub fn poll(&self, now: Instant) -> Step {
        let wait = |at: Instant| Step {
            action: None,
            wake: Some(at),
        };
        let step_down_at = self.step_down_at(now);
        let soonest = |at: Instant| step_down_at.map_or(at, |s| s.min(at));
        if let Some(retry) = self.retry_at.filter(|r| now < *r) {
            return wait(soonest(retry));
        }
        let act = |a| Step {
            action: Some(a),
            wake: None,
        };
        let Some(lease) = self.lease else {
            return act(Action::Grant);
        };
        if now >= lease.next_keepalive {
            return act(Action::Keepalive(lease.id));
        }
        if self.phase == Phase::Campaign {
            return act(Action::Campaign(lease.id));
        }
        if !self.watching {
            return act(Action::Watch);
        }
        wait(soonest(lease.next_keepalive))
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    /// Any request failed (etcd unreachable, refused, ambiguous): back off, capped and
    /// jittered by `jitter` (the driver passes U(1, 1.2); tests 1.0).
    pub fn failed(&mut self, now: Instant, jitter: f64) {
        let cap = self
            .lease
            .map_or(BACKOFF_CAP, |l| BACKOFF_CAP.min(l.ttl / 4));
        let delay = BACKOFF_BASE
            .saturating_mul(1 << self.failures.min(10))
            .min(cap)
            .mul_f64(jitter.clamp(1.0, 2.0));
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + delay);
    }

    /// A lease was granted by a request sent at `sent`.
    pub fn granted(&mut self, sent: Instant, id: i64, ttl_secs: i64) {
        self.succeeded();
        let ttl = Duration::from_secs(ttl_secs.max(1) as u64);
        self.lease = Some(LeaseState {
            id,
            ttl,
            valid_until: lead_until(sent, ttl),
            next_keepalive: sent + ttl / 3,
        });
        self.phase = Phase::Campaign;
        self.leader_rev = None;
        self.watching = false;
    }

    /// A keepalive sent at `sent` was answered with the lease's remaining TTL (0: expired).
    pub fn keepalive_ok(&mut self, sent: Instant, ttl_left_secs: i64) {
        self.succeeded();
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        if ttl_left_secs <= 0 {
            self.lease_lost();
            return;
        }
        let ttl = Duration::from_secs(ttl_left_secs as u64);
        lease.valid_until = lead_until(sent, ttl);
        lease.next_keepalive = sent + lease.ttl / 3;
    }

    /// etcd says the lease is gone (expired or revoked): its key is gone too.
    pub fn lease_lost(&mut self) {
        self.lease = None;
        if self.phase == Phase::Leading {
            self.leader = None;
        }
        self.phase = Phase::NoLease;
        self.leader_rev = None;
        self.watching = false;
    }

    /// The campaign txn put our key: `create_rev` is its create_revision, `revision` the
    /// store's revision after the txn.
    pub fn campaign_won(&mut self, create_rev: i64, revision: i64) {
        self.succeeded();
        self.phase = Phase::Leading;
        self.leader = Some(self.identity.clone());
        self.leader_rev = Some(create_rev);
        self.watch_from = revision + 1;
        self.watching = false;
    }

    /// The key exists: held by `holder` under `holder_lease`. If that lease is ours, an
    /// earlier campaign whose answer was lost did land: we lead.
    pub fn campaign_lost(
        &mut self,
        holder: Option<String>,
        holder_lease: i64,
        create_rev: i64,
        revision: i64,
    ) {
        if holder_lease != 0 && self.lease_id() == Some(holder_lease) {
            self.campaign_won(create_rev, revision);
            return;
        }
        self.succeeded();
        self.phase = Phase::Following;
        self.leader = holder;
        self.leader_rev = None;
        self.watch_from = revision + 1;
        self.watching = false;
    }

    pub fn watch_opened(&mut self) {
        self.succeeded();
        self.watching = true;
    }

    /// The watch ended with an error: read the key again (a campaign does) and re-watch.
    pub fn watch_broken(&mut self) {
        self.watching = false;
        if self.lease.is_some() {
            self.phase = Phase::Campaign;
        }
    }

    /// The leader key was deleted (resigned or its lease expired): campaign.
    pub fn key_deleted(&mut self) {
        self.leader = None;
        self.leader_rev = None;
        self.watching = false;
        self.phase = if self.lease.is_some() {
            Phase::Campaign
        } else {
            Phase::NoLease
        };
    }

    /// The leader key was written by `holder_lease`'s owner.
    /// After a DELETE in the same batch the campaign due reads the key anyway.
    pub fn key_put(&mut self, holder: Option<String>, holder_lease: i64) {
        if self.lease_id() == Some(holder_lease) || self.phase == Phase::Campaign {
            return;
        }
        self.phase = Phase::Following;
        self.leader = holder;
        self.leader_rev = None;
    }
}

#[cfg(test)]
mod tests;
