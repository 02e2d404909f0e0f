//! The `ha:` block → [`HaConfig`]: the group, this process's identity and role, the claim
//! timings and the store backend, checked so that a group cannot form on a typo.

use std::time::Duration;

use crate::config::Credential;
use crate::config::raw::RawHa;
use crate::ha::{
    Backend, DEFAULT_CLAIM_TTL, DEFAULT_ETCD_PREFIX, DEFAULT_ETCD_TIMEOUT, DEFAULT_LEASE,
    DEFAULT_TAKEOVER_AFTER, EtcdBackend, HaConfig, KubeBackend, Role,
};

use super::{Errors, SecretReader, Sources, paths::resolve};

const MIN_LEASE: Duration = Duration::from_secs(2);

/// `[a-z0-9-]`, 1–40 characters, alphanumeric at both ends: the group becomes part of etcd
/// keys and of Kubernetes object names (`tokend-<group>-<credential>`).
fn group_problem(group: &str) -> Option<String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if group.is_empty() || group.len() > 40 {
        Some(format!("`{group}` must be 1 to 40 characters"))
    } else if !group.chars().all(ok_char) {
        Some(format!(
            "`{group}` may hold only lowercase letters, digits and `-` (it names etcd keys and Kubernetes objects)"
        ))
    } else if !alnum(group.chars().next()) || !alnum(group.chars().last()) {
        Some(format!(
            "`{group}` must start and end with a letter or a digit"
        ))
    } else {
        None
    }
}

/// An etcd client URL. One with a user name or password in it is refused without being
/// echoed: `check` prints the endpoints, and the password belongs in `password` (a secret).
fn endpoint_problem(index: usize, ep: &str) -> Option<String> {
    if !(ep.starts_with("http://") || ep.starts_with("https://")) {
        if ep.contains('@') {
            return Some(format!(
                "endpoint {} is not an http:// or https:// URL (not shown: it holds an `@`)",
                index + 1
            ));
        }
        return Some(format!("`{ep}` is not an http:// or https:// URL"));
    }
    match reqwest::Url::parse(ep) {
        Ok(u) if !u.username().is_empty() || u.password().is_some() => Some(format!(
            "endpoint {} holds a user name or password (not shown); write it as `{}://host:port` and set `username` and `password` (a secret)",
            index + 1,
            u.scheme()
        )),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => {
            Some(format!("`{ep}` names no host, like https://10.0.0.5:2379"))
        }
        Ok(_) => None,
        Err(_) if ep.contains('@') => Some(format!(
            "endpoint {} is not a URL (not shown: it holds an `@`)",
            index + 1
        )),
        Err(e) => Some(format!("`{ep}` is not a URL: {e}")),
    }
}

/// On Kubernetes each credential's state lives in a Secret named after the group and the
/// credential; a name Kubernetes would refuse is a config error now, not at the first write.
pub(super) fn check_state_names(ha: &HaConfig, credentials: &[Credential], errors: &mut Errors) {
    if let Backend::Kubernetes(k) = &ha.backend {
        for c in credentials {
            if let Some(p) = crate::store::kubernetes::secret_name_problem(&ha.group, &c.name) {
                errors.push(&format!("credential `{}`", c.name), p);
            }
        }
        if let Some(ns) = &k.namespace
            && !namespace_ok(ns)
        {
            errors.push(
                "`ha.kubernetes.namespace`",
                format!("`{ns}` is not a valid namespace name: lower-case letters, digits and `-`, at most 63 characters"),
            );
        }
    }
}

fn namespace_ok(ns: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (1..=63).contains(&ns.len())
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && alnum(ns.chars().next())
        && alnum(ns.chars().last())
}

pub(super) fn build(
    raw: RawHa,
    sources: &Sources,
    errors: &mut Errors,
    warnings: &mut Vec<String>,
) -> Option<HaConfig> {
    let before = errors.0.len();
    if let Some(p) = group_problem(&raw.group) {
        errors.push("`ha.group`", p);
    }
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
    if identity
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        errors.push(
            "`ha.identity`",
            "must not contain spaces or control characters",
        );
    }
    let role = match raw.role.as_deref() {
        None | Some("auto") => Role::Auto,
        Some("follower") => Role::Follower,
        Some(other) => {
            errors.push(
                "`ha.role`",
                format!("`{other}` is not a role; use auto (campaign and refresh while leading) or follower (only mirror)"),
            );
            Role::Auto
        }
    };
    let lease = raw.lease.map_or(DEFAULT_LEASE, |d| d.0);
    let claim_ttl = raw.claim_ttl.map_or(DEFAULT_CLAIM_TTL, |d| d.0);
    let takeover_after = raw.takeover_after.map_or(DEFAULT_TAKEOVER_AFTER, |d| d.0);
    for (key, d) in [("lease", lease), ("claim_ttl", claim_ttl)] {
        if d < MIN_LEASE {
            errors.push(
                &format!("`ha.{key}`"),
                format!(
                    "must be at least 2s (it is {})",
                    humantime::format_duration(d)
                ),
            );
        }
    }
    if takeover_after < claim_ttl {
        errors.push(
            "`ha.takeover_after`",
            format!(
                "{} is shorter than `claim_ttl` ({}): a claim could be taken over while its holder may still be sending",
                humantime::format_duration(takeover_after),
                humantime::format_duration(claim_ttl)
            ),
        );
    }
    let backend = match (raw.backend.as_str(), raw.etcd, raw.kubernetes) {
        ("etcd", Some(e), None) => {
            if e.endpoints.is_empty() {
                errors.push(
                    "`ha.etcd.endpoints`",
                    "lists no endpoint; give etcd's client URLs, like https://10.0.0.5:2379",
                );
            }
            for (i, ep) in e.endpoints.iter().enumerate() {
                if let Some(p) = endpoint_problem(i, ep) {
                    errors.push("`ha.etcd.endpoints`", p);
                }
            }
            let prefix = e.prefix.unwrap_or_else(|| DEFAULT_ETCD_PREFIX.to_owned());
            if !prefix.starts_with('/') || !prefix.ends_with('/') {
                errors.push(
                    "`ha.etcd.prefix`",
                    format!("`{prefix}` must start and end with `/`, like /tokend/"),
                );
            }
            if e.username.is_some() != e.password.is_some() {
                errors.push(
                    "`ha.etcd`",
                    "`username` and `password` go together: configure both or neither",
                );
            }
            if e.cert_file.is_some() != e.key_file.is_some() {
                errors.push(
                    "`ha.etcd`",
                    "`cert_file` and `key_file` go together: configure both or neither",
                );
            }
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
                prefix,
                ca_file: e.ca_file.map(|p| resolve(sources.base, &p)),
                cert_file: e.cert_file.map(|p| resolve(sources.base, &p)),
                key_file: e.key_file.map(|p| resolve(sources.base, &p)),
                username: e.username,
                password,
                timeout: e.timeout.map_or(DEFAULT_ETCD_TIMEOUT, |d| d.0),
            })
        }
        ("etcd", None, _) => {
            errors.push(
                "`ha.etcd`",
                "backend etcd needs an `etcd:` block with `endpoints`",
            );
            return None;
        }
        ("etcd", Some(_), Some(_)) | ("kubernetes", Some(_), _) => {
            errors.push(
                "`ha`",
                "configure the block of the chosen backend only (`etcd:` for etcd, `kubernetes:` for kubernetes)",
            );
            return None;
        }
        ("kubernetes", None, k) => Backend::Kubernetes(KubeBackend {
            namespace: k.as_ref().and_then(|k| k.namespace.clone()),
            kubeconfig: k
                .and_then(|k| k.kubeconfig)
                .map(|p| resolve(sources.base, &p)),
        }),
        (other, _, _) => {
            errors.push(
                "`ha.backend`",
                format!("`{other}` is not a backend; use etcd or kubernetes"),
            );
            return None;
        }
    };
    (errors.0.len() == before).then(|| HaConfig {
        group: raw.group,
        identity,
        role,
        lease,
        claim_ttl,
        takeover_after,
        backend,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_urls_without_credentials_in_them() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http://127.0.0.1:2379", None),
            ("https://10.0.0.5:2379", None),
            ("https://etcd-0.etcd:2379/", None),
            (
                "127.0.0.1:2379",
                Some("`127.0.0.1:2379` is not an http:// or https:// URL"),
            ),
            (
                "https://root:s3cret@10.0.0.5:2379",
                Some(
                    "endpoint 1 holds a user name or password (not shown); write it as `https://host:port` and set `username` and `password` (a secret)",
                ),
            ),
            (
                "http://root@10.0.0.5:2379",
                Some(
                    "endpoint 1 holds a user name or password (not shown); write it as `http://host:port` and set `username` and `password` (a secret)",
                ),
            ),
            (
                "root:s3cret@10.0.0.5:2379",
                Some("endpoint 1 is not an http:// or https:// URL (not shown: it holds an `@`)"),
            ),
            (
                "https://root:s3cret@[zz]:2379",
                Some("endpoint 1 is not a URL (not shown: it holds an `@`)"),
            ),
        ];
        for (ep, want) in cases {
            let got = endpoint_problem(0, ep);
            assert_eq!(got.as_deref(), *want, "{ep}");
            if let Some(g) = got {
                assert!(!g.contains("s3cret"), "{g}");
            }
        }
    }

    #[test]
    fn group_names_fit_keys_and_kubernetes_names() {
        let cases = [
            ("payments-api", None),
            ("a", None),
            ("g1", None),
            ("", Some("1 to 40")),
            ("Payments", Some("lowercase")),
            ("pay_ments", Some("lowercase")),
            ("-pay", Some("start and end")),
            ("pay-", Some("start and end")),
            (&"x".repeat(41), Some("1 to 40")),
        ];
        for (group, want) in cases {
            let got = group_problem(group);
            match want {
                None => assert_eq!(got, None, "{group}"),
                Some(w) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(w)),
                    "{group}: {got:?}"
                ),
            }
        }
    }
}
