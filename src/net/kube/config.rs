//! Where the API server is and how tokend proves who it is: in a pod, from the
//! ServiceAccount files the kubelet mounts; outside, from a kubeconfig.
//!
//! The kubeconfig reader is deliberately small: one cluster with `server` and its CA, one
//! user with a static token (or `tokenFile`) or a client certificate. Exec plugins and
//! auth providers run programs or speak OAuth to cloud services; tokend refuses them by
//! name instead of half-supporting them, so an operator knows to make a ServiceAccount
//! token or a client certificate for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::secret::Secret;

/// Where the kubelet mounts a pod's ServiceAccount: `token`, `ca.crt`, `namespace`.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How often a token file is read again even without a 401. Bound ServiceAccount tokens
/// live about an hour and the kubelet replaces the file at 80 % of that; kube-rs and
/// client-go re-read at least once a minute too.
pub const TOKEN_REREAD: Duration = Duration::from_secs(60);

/// Everything needed to reach and authenticate to one API server.
#[derive(Clone)]
pub struct KubeConfig {
    /// `https://host:port`, no trailing slash.
    pub server: String,
    /// PEM CA bundle for the server's certificate; `None`: the system roots.
    pub ca_pem: Option<Vec<u8>>,
    pub credentials: Credentials,
    /// The namespace of the pod, or of the kubeconfig context (`default` if it names none).
    pub namespace: String,
    /// Where the configuration came from, for error texts.
    pub origin: String,
}

#[derive(Clone)]
pub enum Credentials {
    None,
    Token(Secret),
    /// Read again every `reread` and after a 401 (the kubelet rotates it).
    TokenFile {
        path: PathBuf,
        reread: Duration,
    },
    /// PEM certificate chain followed by its private key.
    ClientCertificate {
        pem: Secret,
    },
}

impl std::fmt::Debug for KubeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credentials = match &self.credentials {
            Credentials::None => "none".to_owned(),
            Credentials::Token(_) => "static token".to_owned(),
            Credentials::TokenFile { path, .. } => format!("token file {}", path.display()),
            Credentials::ClientCertificate { .. } => "client certificate".to_owned(),
        };
        f.debug_struct("KubeConfig")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .field("credentials", &credentials)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl KubeConfig {
    /// The pod's own config: `KUBERNETES_SERVICE_HOST`/`_PORT` from `env`, and `token`,
    /// `ca.crt` and `namespace` from `dir` (normally [`SERVICE_ACCOUNT_DIR`]).
    pub fn in_cluster(
        env: &dyn Fn(&str) -> Option<String>,
        dir: &Path,
    ) -> Result<KubeConfig, String> {
        let host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty()).ok_or_else(|| {
            "KUBERNETES_SERVICE_HOST is not set, so tokend does not run in a Kubernetes pod; set `ha.kubernetes.kubeconfig` (or KUBECONFIG) to run outside a cluster".to_owned()
        })?;
        let port = env("KUBERNETES_SERVICE_PORT")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "443".to_owned());
        if port.parse::<u16>().is_err() {
            return Err(format!(
                "KUBERNETES_SERVICE_PORT `{port}` is not a port number"
            ));
        }
        // An IPv6 service address needs brackets in a URL.
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| {
                format!(
                    "cannot read the ServiceAccount's `{}`: {}; check that the pod mounts its ServiceAccount token (automountServiceAccountToken must not be false)",
                    path.display(),
                    crate::util::io_reason(&e)
                )
            })
        };
        let ca = read("ca.crt")?;
        let namespace = String::from_utf8_lossy(&read("namespace")?)
            .trim()
            .to_owned();
        if namespace.is_empty() {
            return Err(format!(
                "the ServiceAccount's `{}` is empty",
                dir.join("namespace").display()
            ));
        }
        let token = dir.join("token");
        // Read once now, so a missing token is a start-up error and not a 401 later.
        read("token")?;
        Ok(KubeConfig {
            server: format!("https://{host}:{port}"),
            ca_pem: Some(ca),
            credentials: Credentials::TokenFile {
                path: token,
                reread: TOKEN_REREAD,
            },
            namespace,
            origin: format!("in-cluster ServiceAccount in {}", dir.display()),
        })
    }

    /// The current context of the kubeconfig at `path` (or `context` if given).
    pub fn from_kubeconfig(path: &Path, context: Option<&str>) -> Result<KubeConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the kubeconfig `{}`: {}",
                path.display(),
                crate::util::io_reason(&e)
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        parse_kubeconfig(&text, base, context)
            .map_err(|e| format!("kubeconfig `{}`: {e}", path.display()))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawKubeconfig {
    #[serde(default)]
    clusters: Vec<Named<RawCluster>>,
    #[serde(default)]
    users: Vec<Named<RawUser>>,
    #[serde(default)]
    contexts: Vec<Named<RawContext>>,
    #[serde(default)]
    current_context: String,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "user", alias = "context")]
    cluster: T,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawCluster {
    server: Option<String>,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    proxy_url: Option<String>,
    #[serde(flatten)]
    _rest: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawUser {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Deserialize)]
struct RawContext {
    cluster: String,
    user: Option<String>,
    namespace: Option<String>,
}

/// Fields of a kubeconfig user that need something tokend does not do, and what to do instead.
const UNSUPPORTED_USER: &[(&str, &str)] = &[
    ("exec", "exec credential plugins are not supported"),
    ("auth-provider", "auth providers are not supported"),
    (
        "username",
        "basic authentication is not supported (Kubernetes removed it in 1.19)",
    ),
    (
        "password",
        "basic authentication is not supported (Kubernetes removed it in 1.19)",
    ),
    ("as", "impersonation is not supported"),
    ("as-groups", "impersonation is not supported"),
];

pub(crate) fn parse_kubeconfig(
    text: &str,
    base: &Path,
    context: Option<&str>,
) -> Result<KubeConfig, String> {
    let raw: RawKubeconfig =
        serde_yaml::from_str(text).map_err(|e| format!("not a kubeconfig: {e}"))?;
    let want = match context {
        Some(c) => c.to_owned(),
        None if raw.current_context.is_empty() => {
            return Err(
                "has no current-context; set one with `kubectl config use-context`".to_owned(),
            );
        }
        None => raw.current_context.clone(),
    };
    let ctx = raw
        .contexts
        .iter()
        .find(|c| c.name == want)
        .map(|c| &c.cluster)
        .ok_or_else(|| {
            format!(
                "context `{want}` is not among its contexts ({})",
                names(&raw.contexts)
            )
        })?;
    let cluster = raw
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .map(|c| &c.cluster)
        .ok_or_else(|| {
            format!(
                "context `{want}` names cluster `{}`, which is not among its clusters ({})",
                ctx.cluster,
                names(&raw.clusters)
            )
        })?;
    let server = cluster
        .server
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("cluster `{}` has no server", ctx.cluster))?;
    let url = reqwest::Url::parse(server).map_err(|e| {
        format!(
            "cluster `{}` server `{server}` is not a URL: {e}",
            ctx.cluster
        )
    })?;
    if !matches!(url.scheme(), "https" | "http")
        || url.query().is_some()
        || !url.username().is_empty()
    {
        return Err(format!(
            "cluster `{}` server `{server}` must be an http(s) URL without credentials or query",
            ctx.cluster
        ));
    }
    if cluster.insecure_skip_tls_verify {
        return Err(format!(
            "cluster `{}` sets insecure-skip-tls-verify, which tokend does not support: give it certificate-authority or certificate-authority-data",
            ctx.cluster
        ));
    }
    if cluster.proxy_url.is_some() {
        return Err(format!(
            "cluster `{}` sets proxy-url, which tokend does not support: tokend talks to the API server directly",
            ctx.cluster
        ));
    }
    let ca_pem = pem_field(
        base,
        "certificate-authority",
        &cluster.certificate_authority,
        &cluster.certificate_authority_data,
    )?;
    let credentials = match &ctx.user {
        None => Credentials::None,
        Some(user_name) => {
            let user = raw.users.iter().find(|u| &u.name == user_name).map(|u| &u.cluster).ok_or_else(|| {
                format!("context `{want}` names user `{user_name}`, which is not among its users ({})", names(&raw.users))
            })?;
            user_credentials(user_name, user, base)?
        }
    };
    Ok(KubeConfig {
        server: server.trim_end_matches('/').to_owned(),
        ca_pem,
        credentials,
        namespace: ctx
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned()),
        origin: format!("kubeconfig context `{want}`"),
    })
}

fn user_credentials(name: &str, user: &RawUser, base: &Path) -> Result<Credentials, String> {
    for (field, why) in UNSUPPORTED_USER {
        if user.rest.contains_key(*field) {
            return Err(format!(
                "user `{name}` uses `{field}`: {why}; give tokend a ServiceAccount token (`token` or `tokenFile`) or a client certificate in this user instead"
            ));
        }
    }
    let cert = pem_field(
        base,
        "client-certificate",
        &user.client_certificate,
        &user.client_certificate_data,
    )?;
    let key = pem_field(base, "client-key", &user.client_key, &user.client_key_data)?;
    let token = user.token.as_deref().filter(|t| !t.is_empty());
    match (token, &user.token_file, cert, key) {
        (Some(_), Some(_), ..) => Err(format!(
            "user `{name}` sets both token and tokenFile; keep one"
        )),
        (Some(t), None, None, None) => Ok(Credentials::Token(Secret::new(t))),
        (None, Some(f), None, None) => Ok(Credentials::TokenFile {
            path: base.join(f),
            reread: TOKEN_REREAD,
        }),
        (None, None, Some(mut cert), Some(key)) => {
            cert.push(b'\n');
            cert.extend(key);
            Ok(Credentials::ClientCertificate {
                pem: Secret::new(String::from_utf8_lossy(&cert).into_owned()),
            })
        }
        (None, None, None, None) => Ok(Credentials::None),
        (None, None, Some(_), None) | (None, None, None, Some(_)) => Err(format!(
            "user `{name}` needs both a client certificate and its key"
        )),
        _ => Err(format!(
            "user `{name}` sets both a token and a client certificate; keep one"
        )),
    }
}

/// A `<field>` path (relative to the kubeconfig) or a base64 `<field>-data`.
fn pem_field(
    base: &Path,
    field: &str,
    path: &Option<String>,
    data: &Option<String>,
) -> Result<Option<Vec<u8>>, String> {
    match (
        path.as_deref().filter(|p| !p.is_empty()),
        data.as_deref().filter(|d| !d.is_empty()),
    ) {
        (Some(_), Some(_)) => Err(format!(
            "both `{field}` and `{field}-data` are set; keep one"
        )),
        (Some(p), None) => {
            let path = base.join(p);
            std::fs::read(&path).map(Some).map_err(|e| {
                format!(
                    "cannot read {field} `{}`: {}",
                    path.display(),
                    crate::util::io_reason(&e)
                )
            })
        }
        (None, Some(d)) => {
            let clean: String = d.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean)
                .map(Some)
                .map_err(|_| format!("`{field}-data` is not base64"))
        }
        (None, None) => Ok(None),
    }
}

fn names<T>(items: &[Named<T>]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items
        .iter()
        .map(|i| format!("`{}`", i.name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const B64_PEM: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="; // "-----BEGIN CERTIFICATE-----\n"

    fn kubeconfig(user: &str, cluster_extra: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: ctx\nclusters:\n- name: c1\n  cluster:\n    server: https://10.0.0.1:6443/\n    certificate-authority-data: {B64_PEM}\n{cluster_extra}contexts:\n- name: ctx\n  context:\n    cluster: c1\n    user: u1\n    namespace: apps\n- name: other\n  context:\n    cluster: c1\nusers:\n- name: u1\n  user:\n{user}"
        )
    }

    fn describe(c: &KubeConfig) -> String {
        let cred = match &c.credentials {
            Credentials::None => "none".to_owned(),
            Credentials::Token(t) => format!("token {}", t.expose()),
            Credentials::TokenFile { path, .. } => format!("file {}", path.display()),
            Credentials::ClientCertificate { pem } => {
                format!("cert {}", pem.expose().lines().count())
            }
        };
        format!(
            "{} {} ca={} {cred}",
            c.server,
            c.namespace,
            c.ca_pem.as_ref().map_or(0, Vec::len)
        )
    }

    #[test]
    fn kubeconfig_table() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.pem"), "-----BEGIN CERTIFICATE-----\nx\n").unwrap();
        std::fs::write(dir.path().join("k.pem"), "-----BEGIN PRIVATE KEY-----\ny\n").unwrap();
        let cases: Vec<(String, Option<&str>, Result<&str, &str>)> = vec![
            (
                kubeconfig("    token: tok-canary\n", ""),
                None,
                Ok("https://10.0.0.1:6443 apps ca=28 token tok-canary"),
            ),
            (
                kubeconfig("    tokenFile: t.jwt\n", ""),
                None,
                Ok("https://10.0.0.1:6443 apps ca=28 file DIR/t.jwt"),
            ),
            (
                kubeconfig("    client-certificate: c.pem\n    client-key: k.pem\n", ""),
                None,
                Ok("https://10.0.0.1:6443 apps ca=28 cert 5"),
            ),
            (
                kubeconfig(
                    &format!("    client-certificate-data: {B64_PEM}\n    client-key: k.pem\n"),
                    "",
                ),
                None,
                Ok("https://10.0.0.1:6443 apps ca=28 cert 4"),
            ),
            (
                kubeconfig("    token: t\n", ""),
                Some("other"),
                Ok("https://10.0.0.1:6443 default ca=28 none"),
            ),
            (
                kubeconfig("    exec:\n      command: aws\n", ""),
                None,
                Err("user `u1` uses `exec`: exec credential plugins are not supported"),
            ),
            (
                kubeconfig("    auth-provider:\n      name: gcp\n", ""),
                None,
                Err("uses `auth-provider`"),
            ),
            (
                kubeconfig("    username: admin\n    password: pw-canary\n", ""),
                None,
                Err("basic authentication is not supported"),
            ),
            (
                kubeconfig("    client-certificate: c.pem\n", ""),
                None,
                Err("needs both a client certificate and its key"),
            ),
            (
                kubeconfig(
                    "    token: t\n    client-key: k.pem\n    client-certificate: c.pem\n",
                    "",
                ),
                None,
                Err("both a token and a client certificate"),
            ),
            (
                kubeconfig("    token: t\n", "    insecure-skip-tls-verify: true\n"),
                None,
                Err("insecure-skip-tls-verify"),
            ),
            (
                kubeconfig("    token: t\n", "    proxy-url: http://p:3128\n"),
                None,
                Err("proxy-url"),
            ),
            (
                kubeconfig("    token: t\n", "    certificate-authority: c.pem\n"),
                None,
                Err("both `certificate-authority` and `certificate-authority-data`"),
            ),
            (
                kubeconfig(
                    "    client-certificate: nope.pem\n    client-key: k.pem\n",
                    "",
                ),
                None,
                Err("cannot read client-certificate `DIR/nope.pem`: no such file"),
            ),
            (
                kubeconfig("    token: t\n", ""),
                Some("prod"),
                Err("context `prod` is not among its contexts (`ctx`, `other`)"),
            ),
            (
                "clusters: []\n".to_owned(),
                None,
                Err("has no current-context"),
            ),
            (
                "current-context: a\ncontexts:\n- name: a\n  context:\n    cluster: gone\n"
                    .to_owned(),
                None,
                Err("names cluster `gone`, which is not among its clusters (none)"),
            ),
            ("- [".to_owned(), None, Err("not a kubeconfig")),
        ];
        let base = dir.path().display().to_string();
        for (text, context, want) in cases {
            match (parse_kubeconfig(&text, dir.path(), context), want) {
                (Ok(c), Ok(w)) => assert_eq!(describe(&c), w.replace("DIR", &base)),
                (Err(e), Err(w)) => {
                    assert!(e.contains(&w.replace("DIR", &base)), "{text}\n{e}");
                    assert!(!e.contains("canary"), "{e}");
                }
                (got, want) => panic!("{text}\ngot {:?}, want {want:?}", got.map(|c| describe(&c))),
            }
        }
    }

    #[test]
    fn in_cluster_table() {
        let dir = tempfile::tempdir().unwrap();
        let sa = dir.path();
        std::fs::write(sa.join("ca.crt"), "CA").unwrap();
        std::fs::write(sa.join("namespace"), "apps\n").unwrap();
        std::fs::write(sa.join("token"), "tok-canary").unwrap();
        let env = |host: &'static str, port: &'static str| {
            move |k: &str| match k {
                "KUBERNETES_SERVICE_HOST" => Some(host.to_owned()),
                "KUBERNETES_SERVICE_PORT" => Some(port.to_owned()),
                _ => None,
            }
        };
        let c = KubeConfig::in_cluster(&env("10.96.0.1", "443"), sa).unwrap();
        assert_eq!(c.server, "https://10.96.0.1:443");
        assert_eq!(c.namespace, "apps");
        assert!(!format!("{c:?}").contains("canary"));
        let c = KubeConfig::in_cluster(&env("fd00::1", "6443"), sa).unwrap();
        assert_eq!(c.server, "https://[fd00::1]:6443");
        let e = KubeConfig::in_cluster(&env("", "443"), sa).unwrap_err();
        assert!(e.contains("does not run in a Kubernetes pod"), "{e}");
        let e = KubeConfig::in_cluster(&env("h", "http"), sa).unwrap_err();
        assert!(e.contains("not a port number"), "{e}");
        std::fs::remove_file(sa.join("token")).unwrap();
        let e = KubeConfig::in_cluster(&env("h", "443"), sa).unwrap_err();
        assert!(
            e.contains("token`: no such file") && e.contains("automountServiceAccountToken"),
            "{e}"
        );
    }
}
