//! The one place that turns a [`Config`] into the pieces `once`, `run` and `status` share:
//! the local state directory, the store (local or shared) and the engine over them.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::engine::{Engine, Member};
use crate::error::Error;
use crate::ha::{Backend, HaConfig};
use crate::net::etcd::{EtcdClient, EtcdError, EtcdOptions};
use crate::store::etcd::EtcdStore;
use crate::store::{StateDir, Store};

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
    pub etcd: Option<Arc<EtcdStore>>,
}

/// Opens the state directory (taking its lock) and the store.
pub async fn open(config: &Config) -> Result<Runtime, Error> {
    let state_dir = StateDir::open(&config.state_dir)?;
    let Some(ha) = &config.ha else {
        return Ok(Runtime {
            engine: Arc::new(Engine::new(state_dir)),
            group: None,
        });
    };
    let identity = format!("{}_{:08x}", ha.identity, fastrand::u32(..));
    let etcd = shared_store(ha)?;
    probe(etcd.client()).await?;
    let store: Arc<dyn Store> = etcd.clone();
    let etcd = Some(etcd);
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
            etcd,
        }),
    })
}

/// The group's shared store, without the local lock (`status` reads it while `run` works).
pub fn shared_store(ha: &HaConfig) -> Result<Arc<EtcdStore>, Error> {
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
            Ok(Arc::new(EtcdStore::new(client, &e.prefix, &ha.group)))
        }
        Backend::Kubernetes(_) => Err(Error::Store(
            "ha.backend `kubernetes` is not available yet in this version; use `etcd`, or run without `ha`".to_owned(),
        )),
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
