//! The refresh protocol on a shared store (HA.md §3.3): read → claim → fetch → journal →
//! commit → publish. The claim makes a provider call exclusive; the commit's compare-and-swap
//! keeps the persisted chain linear even when two processes both think they lead.
//!
//! The decisions are pure functions ([`commit_record`], [`after_conflict`], [`claim_decision`])
//! with table tests; [`Engine`]'s methods here only sequence them around store and disk I/O.

use std::time::{Duration, Instant, SystemTime};

use crate::events;
use crate::provider::Provider;
use crate::store::journal::{self, Pending};
use crate::store::{
    Claim, Commit, CredentialState, InDoubt, Purpose, StoreError, Timestamp, Version,
};

use super::{Engine, RefreshError, Slot};

/// Who this process is in its group, and the group's claim timings.
#[derive(Clone, Debug)]
pub struct Member {
    /// The configured identity plus a boot nonce: a restarted process is someone new.
    pub identity: String,
    pub claim_ttl: Duration,
    pub takeover_after: Duration,
}

/// Our claim on a credential's next provider call.
#[derive(Clone, Debug)]
pub struct Held {
    pub id: String,
    /// Taken before the claim was sent: the claimant's deadlines run from here.
    pub t0: Instant,
    pub t0_wall: SystemTime,
    pub base_chain_gen: u64,
    pub base_token_gen: u64,
    /// Fingerprints of what the claimed record held, to tell what the fetch changed.
    base_refresh: Option<String>,
    base_token: Option<String>,
}

impl Held {
    /// Time since the claim went out, by whichever clock says more: a process resumed from
    /// a suspend (or a SIGSTOP) sees its deadline as passed.
    pub fn elapsed(&self, now_wall: SystemTime) -> Duration {
        self.t0
            .elapsed()
            .max(now_wall.duration_since(self.t0_wall).unwrap_or_default())
    }
}

/// What to do about a claim found in the record.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimDecision {
    /// Nobody holds one (or it is ours from before a restart): claim.
    Claim,
    /// Someone else's, not yet silent for long enough: look again after this long.
    Wait(Duration),
    /// Someone else's, seen unchanged for `takeover` on our own clock: replace it.
    TakeOver,
}

/// `seen`: the claim id this process saw before and when it first saw it (monotonic).
pub fn claim_decision(
    claim: Option<&Claim>,
    me: &str,
    seen: Option<(&str, Instant)>,
    takeover: Duration,
    now: Instant,
) -> ClaimDecision {
    let Some(claim) = claim else {
        return ClaimDecision::Claim;
    };
    if claim.holder == me {
        return ClaimDecision::Claim;
    }
    match seen {
        Some((id, first)) if id == claim.id => {
            let silent = now.saturating_duration_since(first);
            if silent >= takeover {
                ClaimDecision::TakeOver
            } else {
                ClaimDecision::Wait(takeover - silent)
            }
        }
        _ => ClaimDecision::Wait(takeover),
    }
}

/// The record a claim's commit writes: what the attempt left in `state`, with the claim
/// gone, each generation moved by at most one, and the commit's id for read-back.
pub fn commit_record(
    state: &CredentialState,
    held: &Held,
    me: &str,
    now: SystemTime,
) -> CredentialState {
    let mut rec = state.clone();
    rec.claim = None;
    let refresh = rec.refresh_token.as_ref().map(|s| s.fingerprint());
    rec.chain_gen =
        held.base_chain_gen + u64::from(refresh.is_some() && refresh != held.base_refresh);
    let token = rec.token.as_ref().map(|t| t.token.fingerprint());
    rec.token_gen = held.base_token_gen + u64::from(token.is_some() && token != held.base_token);
    rec.last_commit = Some(Commit {
        claim_id: held.id.clone(),
        by: me.to_owned(),
        at: Timestamp(now),
    });
    rec
}

/// After a commit met a record it did not expect.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Our commit landed after all (an ambiguous answer that was applied).
    Landed,
    /// Someone committed a newer generation: ours is dropped, never published.
    Superseded,
    /// The chain is still where our claim found it: write ours over the newer version.
    Retry,
}

pub fn after_conflict(remote: &CredentialState, held: &Held, chain: bool) -> Resolution {
    if remote
        .last_commit
        .as_ref()
        .is_some_and(|c| c.claim_id == held.id)
    {
        Resolution::Landed
    } else if remote.chain_gen > held.base_chain_gen
        || (!chain && remote.token_gen > held.base_token_gen)
    {
        Resolution::Superseded
    } else {
        Resolution::Retry
    }
}

/// A random claim id (128 bits, hex).
fn claim_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

impl Engine {
    fn member(&self) -> &Member {
        self.member.as_ref().expect("a shared store has a member")
    }

    fn store_error(slot: &Slot, source: StoreError) -> RefreshError {
        events::store_failed();
        RefreshError::Store {
            credential: slot.credential.name.clone(),
            source,
        }
    }

    /// Brings the slot up to the store's record: replays a journal left by a crash, imports
    /// local state on first use (migration), adopts what others committed.
    pub(super) async fn sync(&self, slot: &mut Slot) -> Result<(), RefreshError> {
        if slot.claim.is_some() {
            // A commit of ours is pending (the store was unreachable): it goes first and
            // decides from what it reads.
            return self.commit(slot).await.map(|_| ());
        }
        let name = slot.credential.name.clone();
        let read = match slot.incoming.take() {
            Some(change) => Some(*change),
            None => self
                .store
                .read(&name)
                .await
                .map_err(|e| Self::store_error(slot, e))?,
        };
        let Some((mut remote, mut version)) = read else {
            return self.migrate(slot).await;
        };
        let dir = self.state_dir.path().to_path_buf();
        if let Some(pending) = journal::read(&dir, &name) {
            let chain = slot.credential.provider.uses_refresh_chain();
            let moved = remote.chain_gen != pending.base_chain_gen
                || (!chain && remote.token_gen != pending.base_token_gen);
            if moved {
                tracing::warn!(credential = %name, "dropping a journalled answer: the shared chain moved on while this process was down");
            } else {
                let mut rec = pending.record;
                rec.claim = None;
                match self.store.cas(&version, &rec, Purpose::Commit).await {
                    Ok(v) => {
                        tracing::info!(credential = %name, chain_gen = rec.chain_gen, "committed a journalled answer left by a crash");
                        (remote, version) = (rec, v);
                    }
                    Err(StoreError::Conflict { .. }) => {
                        // Read again on the next attempt; the journal stays until decided.
                        slot.deferred = Some(SystemTime::now() + Duration::from_millis(200));
                        return Ok(());
                    }
                    Err(e) => return Err(Self::store_error(slot, e)),
                }
            }
            let _ = journal::remove(&dir, &name);
        }
        self.adopt(slot, remote, version);
        Ok(())
    }

    /// Takes the store's record as the slot's state.
    fn adopt(&self, slot: &mut Slot, mut remote: CredentialState, version: Version) {
        if slot.version.as_ref() == Some(&version) {
            return;
        }
        if (remote.chain_gen, remote.token_gen) < (slot.state.chain_gen, slot.state.token_gen) {
            // A watch event older than what this slot already holds (its own commit, or a
            // later read): outputs never go back to an older token.
            return;
        }
        let identity = slot.state.identity.clone();
        if remote.identity.is_some() && remote.identity != identity {
            // Another config (a rolling update that changed the account): its token is not
            // ours to publish; our next refresh, under a claim, replaces it.
            remote.token = None;
        }
        if remote.token_gen > slot.state.token_gen && remote.token.is_some() {
            slot.draw = fastrand::f64();
            slot.mirrored = true;
            events::adopted(&slot.credential.name, remote.token_gen, remote.chain_gen);
        }
        events::chain_generation(&slot.credential.name, remote.chain_gen);
        remote.identity = identity;
        slot.state = remote;
        slot.version = Some(version);
        slot.unsaved = false;
    }

    /// The store has no record: the first process to get there imports its local state
    /// (create-if-absent); everyone else's local chain is set aside.
    async fn migrate(&self, slot: &mut Slot) -> Result<(), RefreshError> {
        slot.version = None;
        let local = &slot.state;
        if local.token.is_none() && local.refresh_token.is_none() {
            return Ok(());
        }
        let name = slot.credential.name.clone();
        match self.store.create(&slot.state).await {
            Ok(v) => {
                slot.version = Some(v);
                tracing::info!(credential = %name, store = %self.store.describe(), "imported the local state into the shared store");
                self.retire_local(&name, "migrated");
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => {
                tracing::warn!(credential = %name, "another process imported its state first; this process's local chain is set aside and the shared one used");
                self.retire_local(&name, "superseded");
                slot.state.token = None;
                slot.state.refresh_token = None;
                slot.deferred = Some(SystemTime::now());
                Ok(())
            }
            Err(e) => Err(Self::store_error(slot, e)),
        }
    }

    /// Moves a local state file aside once the shared store owns the credential: it must
    /// never be imported again (its refresh token would be a spent one).
    fn retire_local(&self, name: &str, why: &str) {
        let from = crate::store::local::file_path(self.state_dir.path(), name);
        let to = from.with_extension(format!(
            "json.{why}-{}",
            crate::util::unix_secs(SystemTime::now())
        ));
        let _ = std::fs::rename(from, to);
    }

    /// Claims the next provider call. `Ok(None)`: claimed; `Ok(Some(until))`: not now.
    pub(super) async fn claim(&self, slot: &mut Slot) -> Result<Option<SystemTime>, RefreshError> {
        let me = self.member().clone();
        let chain = slot.credential.provider.uses_refresh_chain();
        let takeover = if chain {
            me.takeover_after
        } else {
            me.claim_ttl
        };
        let now = Instant::now();
        let wall = SystemTime::now();
        let seen = slot.foreign.as_ref().map(|(id, at)| (id.as_str(), *at));
        let decision = claim_decision(slot.state.claim.as_ref(), &me.identity, seen, takeover, now);
        let mut rec = slot.state.clone();
        match decision {
            ClaimDecision::Wait(d) => {
                let c = slot.state.claim.as_ref().expect("waiting on a claim");
                if seen.map(|s| s.0) != Some(c.id.as_str()) {
                    slot.foreign = Some((c.id.clone(), now));
                    events::claim_busy(&slot.credential.name, &c.holder);
                }
                return Ok(Some(wall + d));
            }
            ClaimDecision::TakeOver => {
                let c = slot.state.claim.clone().expect("taking over a claim");
                events::claim_taken_over(&slot.credential.name, &c.holder, takeover);
                rec.in_doubt = Some(InDoubt {
                    chain_gen: c.chain_gen,
                    holder: c.holder.clone(),
                    claim_id: c.id.clone(),
                    at: Timestamp(wall),
                    why: format!(
                        "its claim was silent for {} and was taken over; it may have sent the refresh token without committing the answer",
                        crate::util::human_duration(takeover)
                    ),
                });
            }
            ClaimDecision::Claim => {}
        }
        let id = claim_id();
        rec.claim = Some(Claim {
            id: id.clone(),
            holder: me.identity.clone(),
            chain_gen: rec.chain_gen,
            ttl_ms: me.claim_ttl.as_millis() as u64,
            at: Timestamp(wall),
        });
        let held = Held {
            id: id.clone(),
            t0: now,
            t0_wall: wall,
            base_chain_gen: rec.chain_gen,
            base_token_gen: rec.token_gen,
            base_refresh: rec.refresh_token.as_ref().map(|s| s.fingerprint()),
            base_token: rec.token.as_ref().map(|t| t.token.fingerprint()),
        };
        let written = match &slot.version {
            Some(v) => self.store.cas(v, &rec, Purpose::Claim).await,
            None => self.store.create(&rec).await,
        };
        let version = match written {
            Ok(v) => v,
            // Someone else wrote first: read again, never call the provider on a lost race.
            Err(StoreError::Conflict { .. }) => {
                events::claim_lost(&slot.credential.name);
                return Ok(Some(
                    wall + Duration::from_millis(100 + fastrand::u64(..400)),
                ));
            }
            Err(StoreError::Ambiguous { .. }) => {
                match self.store.read(&slot.credential.name).await {
                    Ok(Some((r, v))) if r.claim.as_ref().is_some_and(|c| c.id == id) => v,
                    Ok(_) => return Ok(Some(wall + Duration::from_millis(200))),
                    Err(e) => return Err(Self::store_error(slot, e)),
                }
            }
            Err(e) => return Err(Self::store_error(slot, e)),
        };
        events::claim_won(&slot.credential.name, rec.chain_gen);
        slot.state = rec;
        slot.version = Some(version);
        slot.claim = Some(held);
        slot.foreign = None;
        Ok(None)
    }

    /// How long the provider call under our claim may still take: it is never started
    /// after a third of the claim's time and is cut off at half (HA.md's timing rule).
    pub(super) fn claim_budget(&self, slot: &Slot) -> Option<Result<Duration, ()>> {
        let held = slot.claim.as_ref()?;
        let ttl = self.member().claim_ttl;
        let elapsed = held.elapsed(SystemTime::now());
        Some(if elapsed >= ttl / 3 {
            Err(())
        } else {
            Ok(ttl / 2 - elapsed)
        })
    }

    /// Commits what the attempt left in the slot, releasing our claim. `Ok(true)`: it is
    /// the store's record now; `Ok(false)`: someone else's newer commit won, ours is gone.
    pub(super) async fn commit(&self, slot: &mut Slot) -> Result<bool, RefreshError> {
        let Some(held) = slot.claim.clone() else {
            // Nothing claimed, nothing to commit: local bookkeeping stays local.
            slot.unsaved = false;
            return Ok(true);
        };
        let me = self.member().identity.clone();
        let chain = slot.credential.provider.uses_refresh_chain();
        let name = slot.credential.name.clone();
        let rec = commit_record(&slot.state, &held, &me, SystemTime::now());
        let dir = self.state_dir.path().to_path_buf();
        let fetched = rec.chain_gen != held.base_chain_gen || rec.token_gen != held.base_token_gen;
        if fetched {
            // The provider's answer is durable before the commit: a crash or a store
            // outage from here on loses nothing.
            let pending = Pending {
                claim_id: held.id.clone(),
                base_chain_gen: held.base_chain_gen,
                base_token_gen: held.base_token_gen,
                record: rec.clone(),
            };
            let d = dir.clone();
            if let Err(e) =
                crate::store::local::blocking(move || journal::write(&d, &pending)).await
            {
                slot.unsaved = true;
                return Err(RefreshError::State {
                    credential: name,
                    source: crate::store::StateError::Write {
                        path: journal::path(&dir, &slot.credential.name),
                        reason: crate::util::io_reason(&e),
                    },
                });
            }
            #[cfg(debug_assertions)]
            test_fault::maybe_die_after_journal(&name);
        }
        let mut version = slot.version.clone().expect("a claim has a version");
        for _ in 0..5 {
            let result = self.store.cas(&version, &rec, Purpose::Commit).await;
            let (remote, v) = match result {
                Ok(v) => {
                    self.committed(slot, rec, v, &held);
                    return Ok(true);
                }
                Err(StoreError::Conflict { .. } | StoreError::Ambiguous { .. }) => {
                    match self.store.read(&name).await {
                        Ok(Some(found)) => found,
                        Ok(None) => {
                            // Deleted under us: put back the whole record we hold.
                            match self.store.create(&rec).await {
                                Ok(v) => {
                                    self.committed(slot, rec, v, &held);
                                    return Ok(true);
                                }
                                Err(StoreError::Conflict { .. }) => continue,
                                Err(e) => return Err(self.commit_failed(slot, e)),
                            }
                        }
                        Err(e) => return Err(self.commit_failed(slot, e)),
                    }
                }
                Err(e) => return Err(self.commit_failed(slot, e)),
            };
            match after_conflict(&remote, &held, chain) {
                Resolution::Landed => {
                    self.committed(slot, rec, v, &held);
                    return Ok(true);
                }
                Resolution::Superseded => {
                    if rec.chain_gen > held.base_chain_gen {
                        events::successor_discarded(&name, remote.chain_gen);
                    }
                    let _ = journal::remove(&dir, &name);
                    slot.claim = None;
                    slot.unsaved = false;
                    self.adopt(slot, remote, v);
                    return Ok(false);
                }
                Resolution::Retry => version = v,
            }
        }
        Err(self.commit_failed(
            slot,
            StoreError::Unavailable {
                credential: name.clone(),
                reason: "the record kept changing under five commits in a row".to_owned(),
            },
        ))
    }

    fn committed(&self, slot: &mut Slot, rec: CredentialState, v: Version, held: &Held) {
        let name = slot.credential.name.clone();
        let _ = journal::remove(self.state_dir.path(), &name);
        events::committed(
            &name,
            rec.chain_gen,
            rec.token_gen,
            held.base_token_gen != rec.token_gen,
        );
        slot.state = rec;
        slot.version = Some(v);
        slot.claim = None;
        slot.unsaved = false;
    }

    fn commit_failed(&self, slot: &mut Slot, e: StoreError) -> RefreshError {
        // The journal keeps the answer; the claim stays ours, and the next attempt commits
        // before anything else.
        slot.unsaved = true;
        Self::store_error(slot, e)
    }
}

/// Failure injection for the crash tests, compiled into debug builds only.
#[cfg(debug_assertions)]
mod test_fault {
    /// `kill -9` of this process between the journal and the commit (HA.md §5.2).
    pub fn maybe_die_after_journal(credential: &str) {
        if std::env::var_os("TOKEND_TEST_DIE_AFTER_JOURNAL").is_some_and(|v| v == credential) {
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::store::StoredToken;

    fn held(chain_gen: u64, token_gen: u64, rt: Option<&str>, tok: Option<&str>) -> Held {
        Held {
            id: "c1".into(),
            t0: Instant::now(),
            t0_wall: SystemTime::now(),
            base_chain_gen: chain_gen,
            base_token_gen: token_gen,
            base_refresh: rt.map(crate::secret::fingerprint),
            base_token: tok.map(crate::secret::fingerprint),
        }
    }

    fn record(rt: Option<&str>, tok: Option<&str>) -> CredentialState {
        let t = SystemTime::UNIX_EPOCH;
        CredentialState {
            credential: "v".into(),
            refresh_token: rt.map(Secret::new),
            token: tok.map(|v| StoredToken {
                token: Secret::new(v),
                token_type: "Bearer".into(),
                issued_at: Timestamp(t),
                expires_at: Timestamp(t),
            }),
            claim: Some(Claim {
                id: "c1".into(),
                holder: "me".into(),
                chain_gen: 4,
                ttl_ms: 1,
                at: Timestamp(t),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_commit_moves_each_generation_by_at_most_one() {
        // (what the attempt left, expected chain_gen, expected token_gen)
        let cases = [
            (record(Some("rt4"), Some("t9")), 4, 9), // failure: nothing changed
            (record(Some("rt5"), Some("t10")), 5, 10), // rotation and a new token
            (record(Some("rt5"), Some("t9")), 5, 9), // rotation kept from an unusable answer
            (record(Some("rt4"), Some("t10")), 4, 10), // non-rotating provider
            (record(None, Some("t10")), 4, 10),      // rejected chain, login token
            (record(None, None), 4, 9),              // rejected chain, no login
        ];
        let h = held(4, 9, Some("rt4"), Some("t9"));
        for (state, chain_gen, token_gen) in cases {
            let rec = commit_record(&state, &h, "me", SystemTime::UNIX_EPOCH);
            assert_eq!((rec.chain_gen, rec.token_gen), (chain_gen, token_gen));
            assert_eq!(rec.claim, None);
            assert_eq!(rec.last_commit.unwrap().claim_id, "c1");
        }
    }

    #[test]
    fn after_a_conflict_the_first_commit_wins() {
        let h = held(4, 9, Some("rt4"), Some("t9"));
        let remote = |chain_gen, token_gen, by: Option<&str>| CredentialState {
            chain_gen,
            token_gen,
            last_commit: by.map(|id| Commit {
                claim_id: id.into(),
                by: "x".into(),
                at: Timestamp(SystemTime::UNIX_EPOCH),
            }),
            ..Default::default()
        };
        let cases = [
            (remote(5, 10, Some("c1")), true, Resolution::Landed),
            (remote(5, 10, Some("other")), true, Resolution::Superseded),
            // Someone touched the record (a takeover's claim, a rejection): ours still goes.
            (remote(4, 9, Some("other")), true, Resolution::Retry),
            (remote(4, 10, None), true, Resolution::Retry),
            (remote(4, 10, None), false, Resolution::Superseded),
            (remote(4, 9, None), false, Resolution::Retry),
        ];
        for (r, chain, want) in cases {
            assert_eq!(after_conflict(&r, &h, chain), want, "{r:?}");
        }
    }

    #[test]
    fn a_foreign_claim_is_taken_over_only_after_being_seen_unchanged_long_enough() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let claim = |holder: &str, id: &str| Claim {
            id: id.into(),
            holder: holder.into(),
            chain_gen: 1,
            ttl_ms: 1,
            at: Timestamp(SystemTime::UNIX_EPOCH),
        };
        let other = claim("b", "x");
        let cases = [
            (None, None, 0, ClaimDecision::Claim),
            (Some(claim("me", "old")), None, 0, ClaimDecision::Claim),
            (Some(other.clone()), None, 0, ClaimDecision::Wait(s(60))),
            (
                Some(other.clone()),
                Some("x"),
                59,
                ClaimDecision::Wait(s(1)),
            ),
            (Some(other.clone()), Some("x"), 60, ClaimDecision::TakeOver),
            // A new claim id restarts the count: the holder is alive and working.
            (
                Some(other.clone()),
                Some("y"),
                600,
                ClaimDecision::Wait(s(60)),
            ),
        ];
        for (c, seen_id, ago, want) in cases {
            let seen = seen_id.map(|id| (id, t));
            let got = claim_decision(c.as_ref(), "me", seen, s(60), t + s(ago));
            assert_eq!(got, want, "{c:?} seen {seen_id:?} {ago}s ago");
        }
    }
}
