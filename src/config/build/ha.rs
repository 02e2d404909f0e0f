//! The `ha:` block → [`HaConfig`] (provisional minimal builder; see the README's `ha` keys).

use crate::config::raw::RawHa;
use crate::ha::{
    Backend, DEFAULT_CLAIM_TTL, DEFAULT_ETCD_PREFIX, DEFAULT_ETCD_TIMEOUT, DEFAULT_LEASE,
    DEFAULT_TAKEOVER_AFTER, EtcdBackend, HaConfig, KubeBackend, Role,
};

use super::{Errors, SecretReader, Sources, paths::resolve};

pub(super) fn build(
    raw: RawHa,
    sources: &Sources,
    errors: &mut Errors,
    warnings: &mut Vec<String>,
) -> Option<HaConfig> {
    let identity = raw
        .identity
        .or_else(|| sources.env.var("POD_NAME").filter(|v| !v.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "tokend".to_owned());
    let role = match raw.role.as_deref() {
        None | Some("auto") => Role::Auto,
        Some("follower") => Role::Follower,
        Some(other) => {
            errors.push(
                "`ha.role`",
                format!("`{other}` is not a role; use auto or follower"),
            );
            Role::Auto
        }
    };
    let backend = match raw.backend.as_str() {
        "etcd" => {
            let Some(e) = raw.etcd else {
                errors.push(
                    "`ha.etcd`",
                    "backend etcd needs an `etcd:` block with `endpoints`",
                );
                return None;
            };
            let reader = SecretReader {
                sources,
                ctx: "`ha.etcd`",
            };
            let password = e
                .password
                .as_ref()
                .and_then(|p| reader.read("password", p, errors, warnings));
            Backend::Etcd(EtcdBackend {
                endpoints: e.endpoints,
                prefix: e.prefix.unwrap_or_else(|| DEFAULT_ETCD_PREFIX.to_owned()),
                ca_file: e.ca_file.map(|p| resolve(sources.base, &p)),
                cert_file: e.cert_file.map(|p| resolve(sources.base, &p)),
                key_file: e.key_file.map(|p| resolve(sources.base, &p)),
                username: e.username,
                password,
                timeout: e.timeout.map_or(DEFAULT_ETCD_TIMEOUT, |d| d.0),
            })
        }
        "kubernetes" => Backend::Kubernetes(KubeBackend {
            namespace: raw.kubernetes.as_ref().and_then(|k| k.namespace.clone()),
            kubeconfig: raw.kubernetes.and_then(|k| k.kubeconfig),
        }),
        other => {
            errors.push(
                "`ha.backend`",
                format!("`{other}` is not a backend; use etcd or kubernetes"),
            );
            return None;
        }
    };
    Some(HaConfig {
        group: raw.group,
        identity,
        role,
        lease: raw.lease.map_or(DEFAULT_LEASE, |d| d.0),
        claim_ttl: raw.claim_ttl.map_or(DEFAULT_CLAIM_TTL, |d| d.0),
        takeover_after: raw.takeover_after.map_or(DEFAULT_TAKEOVER_AFTER, |d| d.0),
        backend,
    })
}
