//! The I/O half of the etcd election: one task per process that does what
//! [`election::Machine`](super::election::Machine) decides and publishes [`Leadership`]
//! on a watch channel. Errors never end the task; they back off and show in
//! `Leadership::error`.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::Leadership;
use super::election::{Action, Machine};
use crate::net::etcd::{
    Compare, EtcdClient, EtcdError, EventKind, Op, OpResponse, TxnResponse, Watch, WatchBatch,
};

/// A running campaign. Dropping it stops the task without cleaning up (the lease then
/// expires on its own); [`Election::resign`] hands leadership over at once.
pub struct Election {
    rx: watch::Receiver<Leadership>,
    resign: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Election {
    /// Spawns the session task: grant a lease (TTL = `lease`, whole seconds, at least 1),
    /// campaign on `key` (txn `CREATE(key) == 0` → put `identity` with the lease),
    /// keepalive every TTL/3, watch the key to campaign again on its DELETE, and grant a
    /// new lease after the old one is lost.
    pub fn spawn(client: EtcdClient, key: Vec<u8>, identity: String, lease: Duration) -> Election {
        let (tx, rx) = watch::channel(Leadership::default());
        let (resign_tx, resign_rx) = oneshot::channel();
        let session = Session {
            client,
            key,
            machine: Machine::new(identity.clone()),
            identity,
            ttl_secs: ttl_secs(lease),
            call_limit: call_limit(lease),
            tx,
            error: None,
            watch: None,
        };
        let task = tokio::spawn(session.run(resign_rx));
        Election {
            rx,
            resign: Some(resign_tx),
            task: Some(task),
        }
    }

    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.rx.clone()
    }

    /// Clean stop: if leading, delete the key (only if it is still ours: a txn on its
    /// create_revision) and revoke the lease. Each request is bounded by the client's
    /// timeout; a failure is logged and the lease left to expire.
    pub async fn resign(mut self) {
        if let Some(tx) = self.resign.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// etcd leases are whole seconds; round up so the lease is never shorter than asked, and
/// ask for at least etcd's own minimum (2 s with its default timings).
fn ttl_secs(lease: Duration) -> i64 {
    let secs = lease.as_secs() + u64::from(lease.subsec_nanos() > 0);
    secs.clamp(2, i64::MAX as u64) as i64
}

/// The deadline of one etcd call: short, so that a lost keepalive is retried while the
/// lease still lives instead of waiting out the client's (longer) timeout.
fn call_limit(lease: Duration) -> Duration {
    (lease / 8).max(Duration::from_millis(250))
}

/// An etcd failure as the operator reads it in status and logs.
#[derive(Debug)]
struct Failure {
    text: String,
    /// etcd said the lease does not exist (expired or revoked).
    lease_gone: bool,
}

impl Failure {
    fn new(what: &str, e: impl std::fmt::Display) -> Failure {
        Failure {
            text: format!("the etcd election cannot {what}: {e}"),
            lease_gone: false,
        }
    }

    fn etcd(what: &str, e: EtcdError) -> Failure {
        let lease_gone = matches!(e, EtcdError::Status { code: 5, .. });
        Failure {
            lease_gone,
            ..Failure::new(what, e)
        }
    }
}

struct Session {
    client: EtcdClient,
    key: Vec<u8>,
    identity: String,
    machine: Machine,
    ttl_secs: i64,
    call_limit: Duration,
    tx: watch::Sender<Leadership>,
    error: Option<String>,
    watch: Option<Watch>,
}

impl Session {
    async fn run(mut self, mut resign: oneshot::Receiver<()>) {
        loop {
            let now = Instant::now().into_std();
            self.publish();
            let step = self.machine.poll(now);
            if !self.machine.watching() {
                self.watch = None;
            }
            match step.action {
                Some(action) => self.act(action).await,
                None => {
                    let wake = step.wake.map_or_else(
                        || Instant::now() + Duration::from_secs(3600),
                        Instant::from_std,
                    );
                    tokio::select! {
                        _ = tokio::time::sleep_until(wake) => {}
                        _ = &mut resign => break,
                        batch = next_batch(&mut self.watch) => self.on_watch(batch),
                    }
                }
            }
            if matches!(
                resign.try_recv(),
                Ok(()) | Err(oneshot::error::TryRecvError::Closed)
            ) {
                break;
            }
        }
        self.resign().await;
    }

    async fn act(&mut self, action: Action) {
        let sent = Instant::now().into_std();
        match action {
            Action::Grant => match self
                .guarded("grant a lease", self.client.lease_grant(self.ttl_secs))
                .await
            {
                Ok(lease) => {
                    self.healthy();
                    self.machine.granted(sent, lease.id, lease.ttl);
                }
                Err(e) => self.failed(e),
            },
            Action::Keepalive(id) => match self
                .guarded("keep its lease alive", self.client.lease_keepalive(id))
                .await
            {
                Ok(ttl) => {
                    self.healthy();
                    if ttl <= 0 {
                        tracing::warn!(
                            lease = id,
                            "the etcd lease of this process expired; granting a new one and campaigning again"
                        );
                    }
                    self.machine.keepalive_ok(sent, ttl);
                }
                Err(Failure {
                    lease_gone: true, ..
                }) => {
                    self.healthy();
                    tracing::warn!(
                        lease = id,
                        "the etcd lease of this process is gone; granting a new one and campaigning again"
                    );
                    self.machine.lease_lost();
                }
                Err(e) => self.failed(e),
            },
            Action::Campaign(lease) => {
                let compare = [Compare::create_revision(&self.key, 0)];
                let success = [Op::put(&self.key, self.identity.as_bytes(), lease)];
                let failure = [Op::range(&self.key)];
                match self
                    .guarded("campaign", self.client.txn(&compare, &success, &failure))
                    .await
                {
                    Ok(r) => {
                        self.healthy();
                        self.on_campaign(r);
                    }
                    Err(e) => self.failed(e),
                }
            }
            Action::Watch => {
                let from = self.machine.watch_from();
                let watch = self.client.watch(&self.key, None, from);
                match self.guarded("watch the leader key", watch).await {
                    Ok(w) => {
                        self.healthy();
                        self.watch = Some(w);
                        self.machine.watch_opened();
                    }
                    Err(e) => {
                        // Compacted or not, the campaign re-reads the key.
                        self.machine.watch_broken();
                        self.failed(e);
                    }
                }
            }
        }
    }

    fn on_campaign(&mut self, r: TxnResponse) {
        if r.succeeded {
            // Our put created the key: its create_revision is the txn's revision.
            self.machine.campaign_won(r.revision, r.revision);
            return;
        }
        let kv = r.responses.into_iter().find_map(|op| match op {
            OpResponse::Range(range) => range.kvs.into_iter().next(),
            _ => None,
        });
        match kv {
            Some(kv) => self.machine.campaign_lost(
                Some(String::from_utf8_lossy(&kv.value).into_owned()),
                kv.lease,
                kv.create_revision,
                r.revision,
            ),
            // Deleted between the compare and the read cannot happen in one txn; an empty
            // answer means it is gone now: campaign again.
            None => self.machine.key_deleted(),
        }
    }

    fn on_watch(&mut self, batch: Result<WatchBatch, EtcdError>) {
        match batch {
            Ok(batch) => {
                for event in batch.events {
                    match event.kind {
                        EventKind::Delete => self.machine.key_deleted(),
                        EventKind::Put => self.machine.key_put(
                            Some(String::from_utf8_lossy(&event.kv.value).into_owned()),
                            event.kv.lease,
                        ),
                    }
                }
            }
            Err(e) => {
                self.machine.watch_broken();
                self.failed(Failure::new("watch the leader key", e));
            }
        }
    }

    /// Awaits one etcd request for at most the call limit, publishing the step-down on
    /// time if it comes due meanwhile (the limit is short, but a loaded machine is slow).
    async fn guarded<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, EtcdError>>,
    ) -> Result<T, Failure> {
        let limit = self.call_limit;
        let request = tokio::time::timeout(limit, request);
        tokio::pin!(request);
        loop {
            let deadline = self
                .machine
                .step_down_at(Instant::now().into_std())
                .map(Instant::from_std);
            tokio::select! {
                r = &mut request => return match r {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(Failure::etcd(what, e)),
                    Err(_) => Err(Failure::new(what, format!("no answer within {limit:?}"))),
                },
                _ = sleep_opt(deadline) => self.publish(),
            }
        }
    }

    fn publish(&self) {
        let now = Instant::now().into_std();
        let next = Leadership {
            leading: self.machine.leading(now),
            leader: self.machine.leader(now).map(str::to_owned),
            leader_rev: self.machine.leader_rev(now),
            error: self.error.clone(),
        };
        self.tx.send_if_modified(|cur| {
            if *cur == next {
                return false;
            }
            if cur.leading != next.leading {
                if next.leading {
                    tracing::info!(leader = %self.identity, "this process leads its tokend group now");
                } else {
                    tracing::warn!(leader = ?next.leader, "this process no longer leads its tokend group; it starts no refreshes until it leads again");
                }
            }
            *cur = next;
            true
        });
    }

    fn failed(&mut self, Failure { text, .. }: Failure) {
        if self.error.as_deref() != Some(&text) {
            tracing::warn!(error = %text, "etcd election: retrying with backoff");
        }
        self.error = Some(text);
        self.machine
            .failed(Instant::now().into_std(), 1.0 + fastrand::f64() * 0.2);
    }

    fn healthy(&mut self) {
        if self.error.take().is_some() {
            tracing::info!("etcd election: etcd answers again");
        }
    }

    /// Best effort: delete the key if it is still ours, then revoke the lease.
    async fn resign(mut self) {
        self.watch = None;
        if let Some(rev) = self.machine.own_key_rev() {
            let compare = [Compare::create_revision(&self.key, rev)];
            if let Err(e) = self
                .client
                .txn(&compare, &[Op::delete(&self.key)], &[])
                .await
            {
                tracing::warn!(error = %e, "could not delete the tokend group's leader key on shutdown; the other processes take over when its lease expires");
            }
        }
        if let Some(id) = self.machine.lease_id() {
            if let Err(e) = bounded(self.client.lease_revoke(id)).await {
                tracing::warn!(error = %e, "could not revoke this process's etcd lease on shutdown; it expires on its own");
            }
            self.machine.lease_lost();
        }
        self.publish();
    }
}

/// A shutdown step waits at most 2 s: the lease expires on its own anyway.
async fn bounded<T>(request: impl Future<Output = Result<T, EtcdError>>) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(2), request).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("no answer within 2s".to_owned()),
    }
}

async fn next_batch(watch: &mut Option<Watch>) -> Result<WatchBatch, EtcdError> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        for (lease, want) in [
            (Duration::from_millis(1), 2),
            (Duration::ZERO, 2),
            (Duration::from_secs(2), 2),
            (Duration::from_millis(2500), 3),
            (Duration::from_secs(15), 15),
        ] {
            assert_eq!(ttl_secs(lease), want, "{lease:?}");
        }
    }

    #[test]
    fn a_hanging_call_ends_inside_the_margin() {
        for lease in [2, 3, 15, 60].map(Duration::from_secs) {
            let limit = call_limit(lease);
            assert!(limit >= Duration::from_millis(250), "{lease:?}");
            assert!(limit < super::super::election::margin(lease), "{lease:?}");
        }
    }
}
