//! The Kubernetes backend's election: one task per process that keeps the group's
//! `coordination.k8s.io/v1` Lease as [`machine::Machine`] decides and publishes
//! [`Leadership`] on a watch channel. Errors never end the task; they back off and show
//! in `Leadership::error`.
//!
//! Every write is a PUT on the resourceVersion last read (or a POST when there is none),
//! so two candidates never both win; a lost race (409) or a write whose answer was lost
//! is read back before anything else is decided.

mod machine;
mod record;

use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::Leadership;
use crate::net::kube::{DryRun, KubeClient, KubeError, Resource};
use machine::{Action, Machine, Write};
use record::{Record, Spec, new_lease, updated};

/// A running candidate. Dropping it stops the task without cleaning up (the Lease then
/// expires on its own); [`LeaseElection::resign`] hands leadership over at once.
pub struct LeaseElection {
    rx: watch::Receiver<Leadership>,
    resign: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LeaseElection {
    /// Spawns the candidate for the Lease `namespace/name` as `identity`: read the Lease
    /// every fifth of `lease` (jittered), create it if missing, renew it while holding
    /// it, acquire it once it is empty or has not changed for its duration.
    pub fn spawn(
        client: KubeClient,
        namespace: String,
        name: String,
        identity: String,
        lease: Duration,
    ) -> LeaseElection {
        let (tx, rx) = watch::channel(Leadership::default());
        let (resign_tx, resign_rx) = oneshot::channel();
        let machine = Machine::new(identity.clone(), lease, Instant::now().into_std());
        let driver = Driver {
            target: format!("Lease {namespace}/{name}"),
            client,
            namespace,
            name,
            identity,
            call_limit: call_limit(machine.lease()),
            machine,
            tx,
            error: None,
        };
        let task = tokio::spawn(driver.run(resign_rx));
        LeaseElection {
            rx,
            resign: Some(resign_tx),
            task: Some(task),
        }
    }

    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.rx.clone()
    }

    /// Clean stop: lead no more, and if the Lease is still ours hand it back (holder
    /// empty, conditional on its resourceVersion), waiting at most 2 s for the answer.
    pub async fn resign(mut self) {
        if let Some(tx) = self.resign.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LeaseElection {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A clean stop waits at most this long for the Lease to be handed back.
const RELEASE_LIMIT: Duration = Duration::from_secs(2);

/// The deadline of one API call: short, so that a lost renew is retried while the lease
/// still lives instead of waiting out the client's (longer) timeout.
fn call_limit(lease: Duration) -> Duration {
    (lease / 8).max(Duration::from_millis(250))
}

/// U(1, 1.2): spreads the candidates' requests (client-go's jitter factor).
fn jitter() -> f64 {
    1.0 + fastrand::f64() * 0.2
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

struct Driver {
    client: KubeClient,
    namespace: String,
    name: String,
    /// `Lease <ns>/<name>`, as the client names it in errors.
    target: String,
    identity: String,
    machine: Machine,
    call_limit: Duration,
    tx: watch::Sender<Leadership>,
    error: Option<String>,
}

impl Driver {
    async fn run(mut self, mut resign: oneshot::Receiver<()>) {
        loop {
            self.publish();
            let step = self.machine.poll(now(), SystemTime::now());
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
        let sent = now();
        let (what, result) = match action {
            Action::Get => {
                let get = self
                    .client
                    .get(Resource::Lease, &self.namespace, &self.name);
                match self.guarded("get", get).await {
                    Ok(object) => match Record::from_value(object.value()) {
                        Some(r) => {
                            self.healthy();
                            self.machine.observed(now(), Some(r), jitter());
                        }
                        None => self.failed("read", "the answer has no resourceVersion"),
                    },
                    Err(KubeError::NotFound { .. }) => {
                        self.healthy();
                        self.machine.observed(now(), None, jitter());
                    }
                    Err(e) => self.failed("read", e),
                }
                return;
            }
            Action::Create(spec) => {
                let object = new_lease(&self.namespace, &self.name, &spec);
                let create =
                    self.client
                        .create(Resource::Lease, &self.namespace, &object, DryRun::No);
                ("create", self.guarded("create", create).await)
            }
            Action::Update { base, spec, why } => {
                let object = updated(&base, &spec);
                let replace = self.client.replace(
                    Resource::Lease,
                    &self.namespace,
                    &self.name,
                    &object,
                    DryRun::No,
                );
                let what = match why {
                    Write::Renew => "renew",
                    Write::Acquire => "acquire",
                };
                (what, self.guarded("replace", replace).await)
            }
        };
        match result {
            Ok(object) => match Record::from_value(object.value()) {
                Some(r) => {
                    self.healthy();
                    self.machine.written(sent, now(), r, jitter());
                }
                // Stored, but we cannot tell what: read it back.
                None => {
                    self.failed(what, "the answer has no resourceVersion");
                }
            },
            // Lost a race (or the Lease was deleted meanwhile): read and decide anew.
            Err(
                e @ (KubeError::Conflict { .. }
                | KubeError::AlreadyExists { .. }
                | KubeError::NotFound { .. }),
            ) => {
                tracing::debug!(lease = %self.target, error = %e, "Lease election: lost a race; reading the Lease again");
                self.machine.reread(now(), jitter());
            }
            Err(KubeError::Ambiguous { reason, .. }) => {
                let text = format!(
                    "the Kubernetes Lease election lost the answer to its {what} of {} ({reason}); it reads the Lease back and decides again",
                    self.target
                );
                self.show(text);
                self.machine.reread(now(), jitter());
            }
            Err(e) => self.failed(what, e),
        }
    }

    /// Awaits one request for at most the call limit, publishing the step-down on time
    /// if it comes due meanwhile. A write without an answer in time is ambiguous.
    async fn guarded<T>(
        &self,
        op: &'static str,
        request: impl Future<Output = Result<T, KubeError>>,
    ) -> Result<T, KubeError> {
        let limit = self.call_limit;
        let request = tokio::time::timeout(limit, request);
        tokio::pin!(request);
        loop {
            let deadline = self.machine.step_down_at(now()).map(Instant::from_std);
            tokio::select! {
                r = &mut request => return match r {
                    Ok(r) => r,
                    Err(_) if op != "get" => Err(KubeError::Ambiguous {
                        op,
                        target: self.target.clone(),
                        reason: format!("no answer within {limit:?}"),
                    }),
                    Err(_) => Err(KubeError::Unreachable {
                        server: self.client.server().to_owned(),
                        op,
                        target: self.target.clone(),
                        reason: format!("no answer within {limit:?}"),
                    }),
                },
                _ = sleep_opt(deadline) => self.publish(),
            }
        }
    }

    fn publish(&self) {
        let now = now();
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
                    tracing::info!(leader = %self.identity, lease = %self.target, "this process leads its tokend group now");
                } else {
                    tracing::warn!(leader = ?next.leader, lease = %self.target, "this process no longer leads its tokend group; it starts no refreshes until it leads again");
                }
            }
            *cur = next;
            true
        });
    }

    /// Shows `text` in status (and logs it once), without changing what happens next.
    fn show(&mut self, text: String) {
        if self.error.as_deref() != Some(&text) {
            tracing::warn!(error = %text, "Lease election: retrying with backoff");
        }
        self.error = Some(text);
    }

    fn failed(&mut self, what: &str, e: impl std::fmt::Display) {
        self.show(format!(
            "the Kubernetes Lease election cannot {what} its Lease: {e}"
        ));
        self.machine.failed(now(), jitter());
    }

    fn healthy(&mut self) {
        if self.error.take().is_some() {
            tracing::info!(lease = %self.target, "Lease election: the Kubernetes API answers again");
        }
    }

    /// Best effort: stop leading, then hand the Lease back if it is still ours, waiting
    /// at most [`RELEASE_LIMIT`] (it expires on its own anyway).
    async fn resign(mut self) {
        let release = self.machine.release(SystemTime::now());
        self.machine.released();
        // Published before the release is sent: once it lands, another may lead.
        self.publish();
        let Some((base, spec)) = release else {
            return;
        };
        match tokio::time::timeout(RELEASE_LIMIT, self.hand_back(base, spec)).await {
            Ok(Ok(true)) => {
                tracing::info!(lease = %self.target, "handed the tokend group's Lease back on shutdown");
            }
            Ok(Ok(false)) => {
                tracing::debug!(lease = %self.target, "the tokend group's Lease changed hands already; nothing to hand back");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not hand the tokend group's Lease back on shutdown; the other processes take over when it expires");
            }
            Err(_) => {
                tracing::warn!(lease = %self.target, "could not hand the tokend group's Lease back on shutdown (no answer within {RELEASE_LIMIT:?}); the other processes take over when it expires");
            }
        }
    }

    /// PUTs the release over `base`. After a lost race (someone labelled the Lease, or
    /// our last renew's answer was lost) reads it once and tries again if it is still
    /// ours. `Ok(false)`: someone else holds it.
    async fn hand_back(&self, base: Record, mut spec: Spec) -> Result<bool, KubeError> {
        let put = |base: &Record, spec: &Spec| {
            let object = updated(base, spec);
            let client = self.client.clone();
            let (namespace, name) = (self.namespace.clone(), self.name.clone());
            async move {
                client
                    .replace(Resource::Lease, &namespace, &name, &object, DryRun::No)
                    .await
            }
        };
        match put(&base, &spec).await {
            Ok(_) => return Ok(true),
            Err(KubeError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        let fresh = self
            .client
            .get(Resource::Lease, &self.namespace, &self.name)
            .await?;
        let Some(fresh) = Record::from_value(fresh.value()) else {
            return Ok(false);
        };
        if fresh.holder != self.identity {
            return Ok(false);
        }
        spec.transitions = fresh.transitions;
        match put(&fresh, &spec).await {
            Ok(_) => Ok(true),
            Err(KubeError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
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
    fn a_hanging_call_ends_inside_the_margin() {
        for lease in [2, 3, 15, 60].map(Duration::from_secs) {
            let limit = call_limit(lease);
            assert!(limit >= Duration::from_millis(250), "{lease:?}");
            assert!(limit < super::super::election::margin(lease), "{lease:?}");
        }
    }
}
