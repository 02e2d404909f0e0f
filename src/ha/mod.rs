//! Shared state across processes (`ha:`): the settings of a group and, in submodules, who
//! leads it. Safety never comes from here: it is the store's compare-and-swap (`crate::store`).

use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// The `ha:` block, checked when the config is built. Absent: one process, state in
/// `state_dir`, exactly as before.
#[derive(Clone, Debug, PartialEq)]
pub struct HaConfig {
    /// Names the election and prefixes the shared state: `[a-z0-9-]`, at most 40 characters.
    pub group: String,
    /// Who this process is in the group (without the boot nonce, added at start).
    pub identity: String,
    pub role: Role,
    /// A silent leader is replaced after this long (etcd lease TTL / Lease duration).
    pub lease: Duration,
    /// How long a claim covers one refresh: the claimant never starts its request after a
    /// third of it and aborts it at half.
    pub claim_ttl: Duration,
    /// Another process replaces a claim it has seen unchanged this long (≥ `claim_ttl`)
    /// for a rotating chain; `claim_ttl` for everything else.
    pub takeover_after: Duration,
    pub backend: Backend,
}

/// Whether this process may talk to providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Campaign; refresh while leading, mirror otherwise.
    Auto,
    /// Never refresh: only mirror the shared state into local outputs.
    Follower,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Backend {
    Etcd(EtcdBackend),
    Kubernetes(KubeBackend),
}

#[derive(Clone, Debug, PartialEq)]
pub struct EtcdBackend {
    pub endpoints: Vec<String>,
    /// Ends with `/`; keys live under `<prefix><group>/`.
    pub prefix: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The deadline of one request to etcd.
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KubeBackend {
    /// `None`: the pod's own namespace (the ServiceAccount's namespace file).
    pub namespace: Option<String>,
    /// `None`: in-cluster, else `$KUBECONFIG` if set.
    pub kubeconfig: Option<PathBuf>,
}

pub mod election;
pub mod etcd_session;
pub mod lease;

pub use etcd_session::Election;
pub use lease::LeaseElection;

/// This process campaigning for its group, on the backend's election.
pub enum Campaign {
    Etcd(etcd_session::Election),
    Lease(lease::LeaseElection),
}

impl Campaign {
    /// Every change of who leads, as this process sees it.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Leadership> {
        match self {
            Campaign::Etcd(e) => e.watch(),
            Campaign::Lease(e) => e.watch(),
        }
    }

    /// Clean stop: hands leadership over now instead of after the lease.
    pub async fn resign(self) {
        match self {
            Campaign::Etcd(e) => e.resign().await,
            Campaign::Lease(e) => e.resign().await,
        }
    }
}

pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
pub const DEFAULT_CLAIM_TTL: Duration = Duration::from_secs(90);
pub const DEFAULT_TAKEOVER_AFTER: Duration = Duration::from_secs(600);
pub const DEFAULT_ETCD_PREFIX: &str = "/tokend/";
pub const DEFAULT_ETCD_TIMEOUT: Duration = Duration::from_secs(5);

impl HaConfig {
    /// One line for `check`: where the group's state lives and who this process is (never
    /// the password).
    pub fn describe(&self) -> String {
        let role = match self.role {
            Role::Auto => "campaigns for leadership and refreshes while it leads",
            Role::Follower => "follower: only mirrors the shared state",
        };
        let store = match &self.backend {
            Backend::Etcd(e) => format!(
                "etcd {} under {}{}/{}",
                e.endpoints.join(", "),
                e.prefix,
                self.group,
                e.username
                    .as_ref()
                    .map(|u| format!(" as user `{u}`"))
                    .unwrap_or_default()
            ),
            Backend::Kubernetes(k) => format!(
                "Kubernetes: Secrets tokend-{g}-<credential> and Lease tokend-{g} in namespace {ns}, {via}",
                g = self.group,
                ns = k
                    .namespace
                    .as_deref()
                    .unwrap_or("of the pod (or the kubeconfig's context)"),
                via = match &k.kubeconfig {
                    Some(p) => format!("through kubeconfig {}", p.display()),
                    None => "in-cluster (or $KUBECONFIG outside a pod)".to_owned(),
                }
            ),
        };
        format!(
            "shared state: group `{}` in {store}; this process is `{}` ({role}); lease {}, claims {}, takeover after {}",
            self.group,
            self.identity,
            humantime::format_duration(self.lease),
            humantime::format_duration(self.claim_ttl),
            humantime::format_duration(self.takeover_after),
        )
    }

    /// The backend's name as written in the config.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Etcd(_) => "etcd",
            Backend::Kubernetes(_) => "kubernetes",
        }
    }
}

/// Who leads the group, as this process last saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Leadership {
    /// This process may start claims now.
    pub leading: bool,
    /// The current leader's identity, as last seen (for status).
    pub leader: Option<String>,
    /// While this process leads, a number only its tenure has (fences its claims): the
    /// etcd leader key's `create_revision`, or the Kubernetes Lease's `leaseTransitions`.
    pub leader_rev: Option<i64>,
    /// The last error of the election, one sentence; `None` when healthy.
    pub error: Option<String>,
}
