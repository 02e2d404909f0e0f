//! What tokend remembers about a credential, as a test sees it: read through the store the
//! process used (the local state directory, the `ha` group's etcd key or its Kubernetes
//! Secret), never by a path
//! the test builds itself, so a scenario can run on any backend.
//!
//! Tests that plant or corrupt a state file on purpose (hardening) use
//! [`crate::support::Env::state_file`] instead; grep for it to find every exception.

use std::ops::Deref;
use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::Value;

use crate::support::parse_time;

/// Where a process keeps its records.
#[derive(Clone, Debug)]
pub enum StateSource {
    /// `state_dir`: one `<credential>.json` per credential.
    Local { dir: PathBuf },
    /// An `ha` group on etcd: `<prefix><group>/state/<credential>`.
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        group: String,
    },
    /// An `ha` group on Kubernetes: `data["state.json"]` of Secret `tokend-<group>-<credential>`
    /// in `namespace`, read with tokend's own client through `kubeconfig`.
    Kube {
        kubeconfig: PathBuf,
        namespace: String,
        group: String,
    },
}

impl StateSource {
    /// The record of `credential` (`Value::Null` when there is none).
    pub fn read(&self, credential: &str) -> StateView {
        let raw = match self {
            StateSource::Local { dir } => {
                std::fs::read_to_string(dir.join(format!("{credential}.json")))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
            }
            StateSource::Etcd {
                endpoints,
                prefix,
                group,
            } => read_etcd(endpoints, &format!("{prefix}{group}/state/{credential}")),
            StateSource::Kube {
                kubeconfig,
                namespace,
                group,
            } => read_kube(
                kubeconfig,
                namespace,
                &format!("tokend-{group}-{credential}"),
            ),
        };
        StateView(raw.unwrap_or(Value::Null))
    }
}

fn read_etcd(endpoints: &[String], key: &str) -> Option<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let client = tokend::net::etcd::EtcdClient::new(tokend::net::etcd::EtcdOptions::new(
            endpoints.to_vec(),
        ))
        .ok()?;
        let r = client.get(key).await.ok()?;
        serde_json::from_slice(&r.kvs.first()?.value).ok()
    })
}

fn read_kube(kubeconfig: &std::path::Path, namespace: &str, name: &str) -> Option<Value> {
    use tokend::net::kube::{KubeClient, KubeConfig, KubeOptions, Resource};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let config = KubeConfig::from_kubeconfig(kubeconfig, None).ok()?;
        let client = KubeClient::new(KubeOptions::new(config)).ok()?;
        let secret = client.get(Resource::Secret, namespace, name).await.ok()?;
        crate::support::kube_fake::decode_state(secret.value())
    })
}

/// One credential's record. Derefs to the JSON for anything the accessors do not cover.
#[derive(Clone, Debug)]
pub struct StateView(pub Value);

impl Deref for StateView {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

impl std::fmt::Display for StateView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl StateView {
    fn text(&self, pointer: &str) -> Option<String> {
        self.0.pointer(pointer)?.as_str().map(str::to_owned)
    }

    pub fn exists(&self) -> bool {
        !self.0.is_null()
    }

    /// The access token in the record.
    pub fn token(&self) -> Option<String> {
        self.text("/token/token")
    }

    pub fn expires_at(&self) -> Option<String> {
        self.text("/token/expires_at")
    }

    /// When the recorded access token was issued, with the record's millisecond precision.
    pub fn issued_time(&self) -> Option<SystemTime> {
        self.text("/token/issued_at").map(|t| parse_time(&t))
    }

    /// When the recorded access token expires, with the record's millisecond precision.
    pub fn expires_time(&self) -> Option<SystemTime> {
        self.expires_at().map(|t| parse_time(&t))
    }

    /// The refresh token to send next (the live chain).
    pub fn refresh_token(&self) -> Option<String> {
        self.text("/refresh_token")
    }

    pub fn failures(&self) -> u64 {
        self.0["failures"].as_u64().unwrap_or(0)
    }

    pub fn next_attempt(&self) -> Option<String> {
        self.text("/next_attempt")
    }

    /// Whether the last failure was transient (`None` when there is none).
    pub fn last_error_transient(&self) -> Option<bool> {
        self.0.pointer("/last_error/transient")?.as_bool()
    }

    /// +1 per committed rotation (shared state; 0 for a single instance).
    pub fn chain_gen(&self) -> u64 {
        self.0["chain_gen"].as_u64().unwrap_or(0)
    }

    /// +1 per committed access token (shared state; 0 for a single instance).
    pub fn token_gen(&self) -> u64 {
        self.0["token_gen"].as_u64().unwrap_or(0)
    }

    pub fn claim_holder(&self) -> Option<String> {
        self.text("/claim/holder")
    }

    /// Everything in the record as text (secret-leak checks search it).
    pub fn raw(&self) -> String {
        if self.exists() {
            self.0.to_string()
        } else {
            String::new()
        }
    }
}
