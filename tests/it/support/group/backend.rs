//! Where a test group keeps its shared state: a real etcd, or the fake Kubernetes API
//! server. Each says how a node's config names it and where the commit oracle reads from.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{CRED, Commit, GROUP};
use crate::support::etcd::EtcdCluster;
use crate::support::kube_fake::{KubeFake, Res, decode_state};

/// The namespace of the Kubernetes group's Secret and Lease.
pub const NAMESPACE: &str = "tokend-test";
/// The bearer token every node's kubeconfig presents to the fake.
pub const KUBE_TOKEN: &str = "tokend-sa-token";
/// The Lease of the group (`tokend-<group>`).
pub const LEASE: &str = "tokend-g1";
/// The state Secret of the group's credential (`tokend-<group>-<credential>`).
pub const STATE_SECRET: &str = "tokend-g1-vandar-main";

pub enum Backend {
    Etcd(EtcdCluster),
    Kube(KubeFake),
}

impl Backend {
    /// Where the nodes' proxies forward to.
    pub fn upstream(&self) -> SocketAddr {
        match self {
            Backend::Etcd(etcd) => etcd.client_addr(0),
            Backend::Kube(fake) => fake.addr(),
        }
    }

    /// The `ha:` block of node `i`, which reaches the store at `server` (its proxy, or
    /// etcd's endpoints); `timings` are the `lease`/`claim_ttl`/`takeover_after` lines.
    /// A Kubernetes node also gets its kubeconfig, written into `dir`.
    pub fn ha_block(&self, i: usize, server: &str, timings: &str, dir: &Path) -> String {
        match self {
            Backend::Etcd(_) => format!(
                "ha:\n  backend: etcd\n  group: {GROUP}\n  identity: node-{i}\n{timings}  etcd:\n    endpoints: [{server}]\n    timeout: 1s\n"
            ),
            Backend::Kube(_) => {
                let kubeconfig = dir.join(format!("kubeconfig-{i}"));
                write_kubeconfig(&kubeconfig, server);
                format!(
                    "ha:\n  backend: kubernetes\n  group: {GROUP}\n  identity: node-{i}\n{timings}  kubernetes:\n    namespace: {NAMESPACE}\n    kubeconfig: {}\n",
                    kubeconfig.display()
                )
            }
        }
    }

    /// Every committed version of the record, oldest first. Kubernetes: from the fake's
    /// history (exact instants); etcd: what the recorder's watch saw so far.
    pub fn commits(&self, recorded: &Mutex<Vec<Commit>>) -> Vec<Commit> {
        match self {
            Backend::Etcd(_) => recorded.lock().unwrap().clone(),
            Backend::Kube(fake) => fake
                .versions(Res::Secrets, NAMESPACE, STATE_SECRET)
                .iter()
                .filter(|v| v.kind != "DELETED")
                .filter_map(|v| {
                    // A pre-created Secret without `state.json` holds no record yet.
                    let record = decode_state(&v.object)?;
                    Some(Commit::of_record(&record, v.at, v.rv as i64))
                })
                .collect(),
        }
    }
}

/// A kubeconfig for the fake at `server` with [`KUBE_TOKEN`], namespace [`NAMESPACE`].
pub fn write_kubeconfig(path: &Path, server: &str) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: fake\n  cluster:\n    server: {server}\ncontexts:\n- name: test\n  context:\n    cluster: fake\n    user: tokend\n    namespace: {NAMESPACE}\nusers:\n- name: tokend\n  user:\n    token: {KUBE_TOKEN}\n"
        ),
    )
    .unwrap();
}

/// Records every version of the group's etcd key, from revision 1, with the instant the
/// watch delivered it.
pub fn record_etcd_commits(
    endpoint: String,
    commits: Arc<Mutex<Vec<Commit>>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let key = format!("/tokend/{GROUP}/state/{CRED}");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client =
                tokend::net::etcd::EtcdClient::new(tokend::net::etcd::EtcdOptions::new([endpoint]))
                    .unwrap();
            let mut from = 1;
            while !stop.load(Ordering::SeqCst) {
                let Ok(mut w) = client.watch(key.as_bytes(), None, from).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                while !stop.load(Ordering::SeqCst) {
                    let batch =
                        match tokio::time::timeout(Duration::from_millis(200), w.next()).await {
                            Err(_) => continue,
                            Ok(Ok(b)) => b,
                            Ok(Err(_)) => break,
                        };
                    for ev in batch.events {
                        from = ev.kv.mod_revision + 1;
                        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&ev.kv.value)
                        else {
                            continue;
                        };
                        commits.lock().unwrap().push(Commit::of_record(
                            &v,
                            Instant::now(),
                            ev.kv.mod_revision,
                        ));
                    }
                }
            }
        });
    })
}
