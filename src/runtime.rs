//! The one place that turns a [`Config`] into the pieces `once`, `run` and `status` share:
//! the local state directory, the store (local or shared) and the engine over them.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::engine::{Engine, Member};
use crate::error::Error;
use crate::ha::{Backend, Campaign, HaConfig};
use crate::net::etcd::{EtcdClient, EtcdError, EtcdOptions};
use crate::store::etcd::EtcdStore;
use crate::store::kubernetes::KubeStore;
use crate::store::{SharedStore, StateDir, Store};

pub struct Runtime {
    pub engine: Arc<Engine>,
    /// Set with an `ha` block.
    pub group: Option<Group>,
}

/// This process as a member of its `ha` group.
pub struct Group {
    pub config: HaConfig,
    /// The configured identity plus this boot's nonce.
    pub identity: String,
    pub shared: Shared,
}

/// The group's store, by backend: the daemon needs each one's election too.
#[derive(Clone)]
pub enum Shared {
    Etcd(Arc<EtcdStore>),
    Kubernetes(Arc<KubeStore>),
}

impl Shared {
    /// Starts campaigning for the group's leadership, on the backend's own election.
    pub fn campaign(&self, identity: String, lease: Duration) -> Campaign {
        match self {
            Shared::Etcd(etcd) => Campaign::Etcd(crate::ha::etcd_session::Election::spawn(
                etcd.client().clone(),
                etcd.leader_key().to_vec(),
                identity,
                lease,
            )),
            Shared::Kubernetes(kube) => Campaign::Lease(crate::ha::LeaseElection::spawn(
                kube.client().clone(),
                kube.namespace().to_owned(),
                kube.lease_name(),
                identity,
                lease,
            )),
        }
    }

    pub fn store(&self) -> Arc<dyn SharedStore> {
        match self {
            Shared::Etcd(s) => s.clone(),
            Shared::Kubernetes(s) => s.clone(),
        }
    }
}

/// Opens the state directory (taking its lock) and the store. `campaigns`: this process
/// may run for leadership (`run`, not `once`), so its access to the election is proven too.
pub async fn open(config: &Config, campaigns: bool) -> Result<Runtime, Error> {
    let state_dir = StateDir::open(&config.state_dir)?;
    let Some(ha) = &config.ha else {
        return Ok(Runtime {
            engine: Arc::new(Engine::new(state_dir)),
            group: None,
        });
    };
    let identity = format!("{}_{:08x}", ha.identity, fastrand::u32(..));
    let shared = shared_store(ha)?;
    match &shared {
        Shared::Etcd(etcd) => probe(etcd.client()).await?,
        Shared::Kubernetes(kube) => {
            let names: Vec<String> = config.credentials.iter().map(|c| c.name.clone()).collect();
            probe_kube(kube, &names, campaigns && ha.role == crate::ha::Role::Auto).await?;
        }
    }
    let store: Arc<dyn Store> = shared.store();
    let member = Member {
        identity: identity.clone(),
        claim_ttl: ha.claim_ttl,
        takeover_after: ha.takeover_after,
    };
    tracing::info!(
        group = %ha.group,
        identity = %identity,
        store = %store.describe(),
        "shared state: this process is a member of its group"
    );
    Ok(Runtime {
        engine: Arc::new(Engine::with_store(Arc::new(state_dir), store, Some(member))),
        group: Some(Group {
            config: ha.clone(),
            identity,
            shared,
        }),
    })
}

/// The group's shared store, without the local lock (`status` reads it while `run` works).
pub fn shared_store(ha: &HaConfig) -> Result<Shared, Error> {
    match &ha.backend {
        Backend::Etcd(e) => {
            let client = EtcdClient::new(EtcdOptions {
                endpoints: e.endpoints.clone(),
                ca_file: e.ca_file.clone(),
                cert_file: e.cert_file.clone(),
                key_file: e.key_file.clone(),
                username: e.username.clone(),
                password: e.password.clone(),
                timeout: e.timeout,
                max_response_bytes: crate::net::etcd::DEFAULT_MAX_RESPONSE_BYTES,
            })
            .map_err(|e| Error::Store(e.to_string()))?;
            Ok(Shared::Etcd(Arc::new(EtcdStore::new(
                client, &e.prefix, &ha.group,
            ))))
        }
        Backend::Kubernetes(k) => {
            let client = crate::net::kube::shared_client(k.kubeconfig.as_deref())
                .map_err(|e| Error::Store(format!("ha.backend kubernetes: {e}")))?;
            let namespace = k
                .namespace
                .clone()
                .unwrap_or_else(|| client.namespace().to_owned());
            Ok(Shared::Kubernetes(Arc::new(KubeStore::new(
                client,
                namespace,
                ha.group.clone(),
            ))))
        }
    }
}

/// RBAC is proven before any provider call can spend a one-time input: a refusal stops
/// the start naming the verb and object. An API server that is merely unreachable is
/// waited for, as etcd is.
async fn probe_kube(
    store: &KubeStore,
    credentials: &[String],
    campaign: bool,
) -> Result<(), Error> {
    use crate::net::kube::KubeError;
    match tokio::time::timeout(
        Duration::from_secs(10),
        store.check_access(credentials, campaign),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(
            e @ (KubeError::Forbidden { .. }
            | KubeError::Unauthorized { .. }
            | KubeError::Setup { .. }
            | KubeError::NotFound { .. }
            | KubeError::BadAnswer { .. }),
        )) => Err(Error::Store(format!(
            "the shared state in Kubernetes cannot be used: {e}"
        ))),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the Kubernetes API is unreachable at start; outputs keep their tokens, and tokend keeps trying");
            Ok(())
        }
        Err(_) => {
            tracing::error!(
                "the Kubernetes API did not answer within 10s at start; outputs keep their tokens, and tokend keeps trying"
            );
            Ok(())
        }
    }
}

/// A store that is merely down is waited for (outputs keep their tokens meanwhile); one
/// that can never work as configured (no gateway, wrong password) stops the start.
async fn probe(client: &EtcdClient) -> Result<(), Error> {
    match tokio::time::timeout(Duration::from_secs(10), client.status()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(
            e @ (EtcdError::NoGateway { .. }
            | EtcdError::AuthFailed { .. }
            | EtcdError::Setup { .. }),
        )) => Err(Error::Store(e.to_string())),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the shared store is unreachable at start; outputs keep their tokens, and tokend keeps trying");
            Ok(())
        }
        Err(_) => {
            tracing::error!(
                "the shared store did not answer within 10s at start; outputs keep their tokens, and tokend keeps trying"
            );
            Ok(())
        }
    }
}
