//! Who leads a group on etcd: one lease per process and the key `<prefix><group>/leader`,
//! created only if absent and attached to the lease (HA.md §3.7). Leadership only decides
//! who starts claims; safety stays with the store's compare-and-swap.
//!
//! A process counts itself leader only until its last *successful* keepalive was *sent* plus
//! three quarters of the lease: etcd expires the lease on its own clock, so the margin covers
//! the request's flight and clock-rate differences. Losing the lease never ends the process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::net::etcd::{Compare, EtcdClient, Op, OpResponse};

use super::Leadership;

/// Until when a keepalive sent at `sent` (and answered) lets this process lead.
pub fn leading_until(sent: Instant, lease: Duration) -> Instant {
    sent + lease - lease / 4
}

/// How often the lease is kept alive and the leader key looked at.
fn tick(lease: Duration) -> Duration {
    lease / 4
}

/// The deadline of one etcd call: short, so that the loop re-judges leadership in time.
fn call_limit(lease: Duration) -> Duration {
    (lease / 8).max(Duration::from_millis(250))
}

pub struct Election {
    rx: watch::Receiver<Leadership>,
    task: tokio::task::JoinHandle<()>,
    /// (lease id, leader key create_revision) while this process holds the key.
    held: Arc<Mutex<Option<(i64, i64)>>>,
    client: EtcdClient,
    key: Vec<u8>,
}

struct Session {
    client: EtcdClient,
    key: Vec<u8>,
    identity: String,
    lease: Duration,
    tx: watch::Sender<Leadership>,
    held: Arc<Mutex<Option<(i64, i64)>>>,
    lease_id: Option<i64>,
    /// When the last answered keepalive (or grant) was sent.
    alive_at: Option<Instant>,
    rev: Option<i64>,
    leader: Option<String>,
    error: Option<String>,
    failures: u32,
}

impl Election {
    /// Campaigns for `key` as `identity` (with its boot nonce) with a lease of `lease`.
    pub fn spawn(client: EtcdClient, key: Vec<u8>, identity: String, lease: Duration) -> Election {
        let (tx, rx) = watch::channel(Leadership::default());
        let held = Arc::new(Mutex::new(None));
        let session = Session {
            client: client.clone(),
            key: key.clone(),
            identity,
            lease,
            tx,
            held: held.clone(),
            lease_id: None,
            alive_at: None,
            rev: None,
            leader: None,
            error: None,
            failures: 0,
        };
        Election {
            rx,
            task: tokio::spawn(session.run()),
            held,
            client,
            key,
        }
    }

    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.rx.clone()
    }

    /// Clean stop: the key is deleted only if it is still ours, and the lease revoked, so
    /// another process leads at once instead of after the lease.
    pub async fn resign(self) {
        self.task.abort();
        let held = *self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((lease, rev)) = held {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                self.client.txn(
                    &[Compare::create_revision(&self.key, rev)],
                    &[Op::delete(&self.key)],
                    &[],
                ),
            )
            .await;
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.client.lease_revoke(lease)).await;
        }
    }
}

impl Session {
    async fn run(mut self) {
        loop {
            self.step().await;
            self.publish();
            let mut wake = Instant::now() + tick(self.lease);
            if self.failures > 0 {
                let backoff = Duration::from_millis(200) * 2u32.pow(self.failures.min(4));
                wake = Instant::now() + backoff.min(tick(self.lease));
            }
            // Step down exactly when the lease may be gone, whatever the loop is doing.
            if let Some(until) = self.leading_until().filter(|u| *u < wake) {
                tokio::time::sleep_until(until).await;
                self.publish();
            }
            tokio::time::sleep_until(wake).await;
        }
    }

    fn leading_until(&self) -> Option<Instant> {
        self.rev?;
        self.alive_at.map(|t| leading_until(t, self.lease))
    }

    fn leading(&self) -> bool {
        self.leading_until().is_some_and(|u| Instant::now() < u)
    }

    fn fail(&mut self, what: &str, e: impl std::fmt::Display) {
        self.failures += 1;
        let message = format!("the etcd election cannot {what}: {e}");
        if self.error.as_deref() != Some(&message) {
            tracing::warn!(error = %message, "etcd election");
        }
        self.error = Some(message);
    }

    async fn step(&mut self) {
        let limit = call_limit(self.lease);
        let Some(id) = self.lease_id else {
            let sent = Instant::now();
            let ttl = self.lease.as_secs().max(2) as i64;
            match tokio::time::timeout(limit, self.client.lease_grant(ttl)).await {
                Ok(Ok(l)) => {
                    self.lease_id = Some(l.id);
                    self.alive_at = Some(sent);
                    self.rev = None;
                }
                Ok(Err(e)) => return self.fail("grant a lease", e),
                Err(_) => return self.fail("grant a lease", format!("no answer within {limit:?}")),
            }
            return self.campaign().await;
        };
        let sent = Instant::now();
        match tokio::time::timeout(limit, self.client.lease_keepalive(id)).await {
            Ok(Ok(ttl)) if ttl > 0 => self.alive_at = Some(sent),
            Ok(Ok(_)) => {
                // Expired on etcd's clock: the key went with it.
                self.lease_id = None;
                self.rev = None;
                self.set_held(None);
                return self.fail("keep its lease", "the lease expired");
            }
            Ok(Err(e)) => return self.fail("keep its lease alive", e),
            Err(_) => {
                return self.fail(
                    "keep its lease alive",
                    format!("no answer within {limit:?}"),
                );
            }
        }
        self.campaign().await;
    }

    /// Creates the leader key if absent, else learns who holds it.
    async fn campaign(&mut self) {
        let Some(id) = self.lease_id else { return };
        let limit = call_limit(self.lease);
        let compare = [Compare::create_revision(&self.key, 0)];
        let put = [Op::put(&self.key, self.identity.as_bytes(), id)];
        let range = [Op::range(&self.key)];
        let txn = self.client.txn(&compare, &put, &range);
        match tokio::time::timeout(limit, txn).await {
            Ok(Ok(r)) if r.succeeded => {
                self.rev = Some(r.revision);
                self.leader = Some(self.identity.clone());
            }
            Ok(Ok(r)) => {
                let kv = match r.responses.first() {
                    Some(OpResponse::Range(rr)) => rr.kvs.first().cloned(),
                    _ => None,
                };
                match kv {
                    Some(kv) if kv.lease == id => {
                        self.rev = Some(kv.create_revision);
                        self.leader = Some(self.identity.clone());
                    }
                    Some(kv) => {
                        self.rev = None;
                        self.leader = Some(String::from_utf8_lossy(&kv.value).into_owned());
                    }
                    // Deleted between compare and range: campaign again on the next tick.
                    None => self.rev = None,
                }
            }
            Ok(Err(e)) => return self.fail("campaign", e),
            Err(_) => return self.fail("campaign", format!("no answer within {limit:?}")),
        }
        self.set_held(self.rev.map(|r| (id, r)));
        if self.failures > 0 {
            tracing::info!("the etcd election works again");
        }
        self.failures = 0;
        self.error = None;
    }

    fn set_held(&self, held: Option<(i64, i64)>) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = held;
    }

    fn publish(&self) {
        let leading = self.leading();
        let new = Leadership {
            leading,
            leader: if leading {
                Some(self.identity.clone())
            } else {
                self.leader.clone().filter(|l| *l != self.identity)
            },
            leader_rev: self.rev.filter(|_| leading),
            error: self.error.clone(),
        };
        self.tx.send_if_modified(|cur| {
            let changed = *cur != new;
            *cur = new;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_steps_down_before_etcd_can_expire_its_lease() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // (lease, keepalive answered at, now) -> still leading?
        let cases = [
            (s(15), 0, 0, true),
            (s(15), 0, 11, true),
            (s(15), 0, 12, false), // 15 s − 15/4: a quarter of the lease is the margin
            (s(15), 0, 15, false),
            (s(2), 0, 1, true),
            (s(2), 0, 2, false),
        ];
        for (lease, sent, now, want) in cases {
            let until = leading_until(t0 + s(sent), lease);
            assert_eq!(t0 + s(now) < until, want, "lease {lease:?} at {now}s");
        }
        // The loop re-judges well within the margin: a tick and a call fit in it.
        for lease in [s(2), s(15), s(60)] {
            assert!(tick(lease) + call_limit(lease) < lease / 2, "{lease:?}");
        }
    }
}
