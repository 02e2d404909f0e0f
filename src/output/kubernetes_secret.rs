//! The `kubernetes_secret` output (SPEC.md "Kubernetes Secret output", HA.md §3.5): the
//! `dir` output's files as the `data` of a Secret, written by server-side apply with a
//! `resourceVersion` precondition, never replacing a newer token with an older one.
//!
//! Unlike files, this output is written over the network: [`publish`] is async and runs
//! after the local outputs, so a slow API server never delays them. [`prove_access`] runs
//! the same requests as a dry run at start, so a missing RBAC verb stops `check`, `once`
//! and `run` before any provider call spends a one-time input.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{Value, json};

use super::OutputError;
use super::render;
use crate::net::kube::{DryRun, KubeError, Resource};
use crate::token::Token;
use crate::util::rfc3339;

pub const ANNOTATION_EXPIRES_AT: &str = "tokend.dev/expires-at";
pub const ANNOTATION_ISSUED_AT: &str = "tokend.dev/issued-at";
pub const ANNOTATION_TOKEN_GEN: &str = "tokend.dev/token-gen";
/// The shared record's `token_gen` (with `ha`): orders the tokens of a group whatever the
/// clocks of its members say.
pub const ANNOTATION_SHARED_GEN: &str = "tokend.dev/shared-token-gen";
pub const ANNOTATION_CREDENTIAL: &str = "tokend.dev/credential";

/// How often one write reads the Secret again after losing a race before giving up (the
/// next refresh or restore tries again).
const MAX_ATTEMPTS: usize = 5;

#[derive(Clone, Debug, PartialEq)]
pub struct KubeSecret {
    pub name: String,
    /// `None`: the namespace of the client (the pod's own, or the kubeconfig context's).
    pub namespace: Option<String>,
    /// Added to tokend's own labels and annotations (the config refuses tokend's keys).
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub format: SecretFormat,
    /// `None`: in-cluster, else `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SecretFormat {
    /// `token`, `token.json`, `expires_at`: the `dir` output's files.
    Files,
    /// `<prefix>_TOKEN`, `<prefix>_EXPIRES_AT`, for `envFrom`.
    Env { prefix: String },
}

impl KubeSecret {
    /// What `check` prints for this output.
    pub fn describe(&self) -> String {
        let ns = self.namespace.as_deref().unwrap_or("<pod namespace>");
        let format = match self.format {
            SecretFormat::Files => "files",
            SecretFormat::Env { .. } => "env",
        };
        format!("kubernetes_secret {ns}/{} ({format})", self.name)
    }

    /// The Secret's `data` keys and their (not yet base64) values.
    pub fn data(&self, token: &Token, credential: &str) -> Vec<(String, Vec<u8>)> {
        match &self.format {
            // The same bytes as a `dir` output, from the same function.
            SecretFormat::Files => render::dir_files(token, credential)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            SecretFormat::Env { prefix } => vec![
                (
                    format!("{prefix}_TOKEN"),
                    token.value.expose().as_bytes().to_vec(),
                ),
                (
                    format!("{prefix}_EXPIRES_AT"),
                    rfc3339(token.expires_at).into_bytes(),
                ),
            ],
        }
    }

    /// The object applied: tokend owns these fields (fieldManager `tokend`).
    pub fn manifest(
        &self,
        namespace: &str,
        token: &Token,
        credential: &str,
        resource_version: Option<&str>,
        shared_gen: Option<u64>,
    ) -> Value {
        let b64 = base64::engine::general_purpose::STANDARD;
        let data: serde_json::Map<String, Value> = self
            .data(token, credential)
            .into_iter()
            .map(|(k, v)| (k, Value::String(b64.encode(v))))
            .collect();
        let mut labels = self.labels.clone();
        labels.insert("app.kubernetes.io/managed-by".into(), "tokend".into());
        labels.insert("tokend.dev/credential".into(), credential.into());
        let mut annotations = self.annotations.clone();
        annotations.insert(ANNOTATION_EXPIRES_AT.into(), rfc3339(token.expires_at));
        annotations.insert(ANNOTATION_ISSUED_AT.into(), rfc3339(token.issued_at));
        annotations.insert(ANNOTATION_TOKEN_GEN.into(), generation(token).to_string());
        if let Some(g) = shared_gen {
            annotations.insert(ANNOTATION_SHARED_GEN.into(), g.to_string());
        }
        annotations.insert(ANNOTATION_CREDENTIAL.into(), credential.into());
        let mut metadata = json!({
            "name": self.name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        });
        if let Some(rv) = resource_version {
            metadata["resourceVersion"] = json!(rv);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": "Opaque",
            "data": data,
        })
    }
}

/// The token's generation for a single writer, which only grows: the issue time in
/// milliseconds. Members of an `ha` group also write the shared record's `token_gen`
/// ([`ANNOTATION_SHARED_GEN`]), which two members with skewed clocks cannot disagree on.
pub fn generation(token: &Token) -> u64 {
    token
        .issued_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The generation a stored Secret says it holds; `None` if it has none tokend can read
/// (a placeholder created by a chart), which any token may replace.
pub fn held_generation(secret: &Value) -> Option<u64> {
    secret
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION_TOKEN_GEN))
        .and_then(Value::as_str)
        .and_then(|g| g.parse().ok())
}

/// What one write does next, given what a GET returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The Secret already holds this token or a newer one.
    Skip,
    /// Apply with this `resourceVersion` as a precondition.
    Apply(String),
    /// Absent: create it.
    Create,
}

fn held_shared(secret: &Value) -> Option<u64> {
    secret
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION_SHARED_GEN))
        .and_then(Value::as_str)
        .and_then(|g| g.parse().ok())
}

/// `ours`: the token's issue-time generation and, in a group, the shared `token_gen`. Two
/// shared generations are compared when both sides have one; issue times otherwise (a
/// Secret written before `ha` was configured, or by a single instance).
pub fn decide(existing: Option<&Value>, ours: u64, ours_shared: Option<u64>) -> Step {
    let Some(secret) = existing else {
        return Step::Create;
    };
    let newer_held = match (ours_shared, held_shared(secret)) {
        (Some(ours), Some(held)) => held >= ours,
        _ => held_generation(secret).is_some_and(|held| held >= ours),
    };
    if newer_held {
        return Step::Skip;
    }
    let rv = secret
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Step::Apply(rv.to_owned())
}

fn target(ns: &str, name: &str) -> PathBuf {
    PathBuf::from(format!("kubernetes_secret {ns}/{name}"))
}

/// Writes `token` to every `kubernetes_secret` output of `credential`; whether any changed.
pub async fn publish(
    outputs: &[KubeSecret],
    credential: &str,
    token: &Token,
    shared_gen: Option<u64>,
) -> Result<bool, OutputError> {
    let mut written = false;
    for out in outputs {
        written |= write(out, token, credential, shared_gen).await?;
    }
    Ok(written)
}

/// GET → skip if it holds this token or a newer one → apply with its resourceVersion;
/// 409 → GET again; absent → create (409 AlreadyExists → GET again).
pub async fn write(
    out: &KubeSecret,
    token: &Token,
    credential: &str,
    shared_gen: Option<u64>,
) -> Result<bool, OutputError> {
    let fail = |ns: &str, reason: String| OutputError {
        path: target(ns, &out.name),
        reason,
    };
    let client = crate::net::kube::shared_client(out.kubeconfig.as_deref())
        .map_err(|r| fail(out.namespace.as_deref().unwrap_or("<pod namespace>"), r))?;
    let ns = out
        .namespace
        .clone()
        .unwrap_or_else(|| client.namespace().to_owned());
    let ours = generation(token);
    let mut last = String::new();
    // A write whose answer was lost may have landed: if the next GET shows our token, it did.
    let mut maybe_written = false;
    for _ in 0..MAX_ATTEMPTS {
        let existing = match client.get(Resource::Secret, &ns, &out.name).await {
            Ok(o) => Some(o.into_value()),
            Err(KubeError::NotFound { .. }) => None,
            Err(e) => return Err(fail(&ns, e.to_string())),
        };
        let result = match decide(existing.as_ref(), ours, shared_gen) {
            Step::Skip => {
                let ours_landed = existing.as_ref().and_then(held_generation) == Some(ours);
                return Ok(maybe_written && ours_landed);
            }
            Step::Apply(rv) => {
                let object = out.manifest(&ns, token, credential, Some(&rv), shared_gen);
                client
                    .apply(Resource::Secret, &ns, &out.name, &object, DryRun::No)
                    .await
            }
            Step::Create => {
                let object = out.manifest(&ns, token, credential, None, shared_gen);
                client
                    .create(Resource::Secret, &ns, &object, DryRun::No)
                    .await
            }
        };
        match result {
            Ok(_) => {
                crate::events::secret_written(credential, &format!("{ns}/{}", out.name), ours);
                return Ok(true);
            }
            // Someone wrote in between, or the answer was lost: read again and decide.
            Err(e @ KubeError::Ambiguous { .. }) => {
                maybe_written = true;
                last = e.to_string();
            }
            Err(
                e @ (KubeError::Conflict { .. }
                | KubeError::AlreadyExists { .. }
                | KubeError::NotFound { .. }),
            ) => last = e.to_string(),
            Err(e) => return Err(fail(&ns, e.to_string())),
        }
    }
    Err(fail(
        &ns,
        format!(
            "lost the race {MAX_ATTEMPTS} times in a row ({last}); the next refresh tries again"
        ),
    ))
}

/// What the start-up dry run found, one sentence per output.
#[derive(Debug, Default)]
pub struct Access {
    /// Can never work as configured (a missing RBAC verb, rejected credentials, an unknown
    /// namespace, a kubeconfig tokend cannot use): a configuration error.
    pub refused: Vec<String>,
    /// The API server did not answer usefully (unreachable, 5xx): may pass by itself.
    pub unreachable: Vec<String>,
}

/// Proves, with a GET and a dry-run write of each output Secret, that tokend may write them.
/// `credentials`: each credential's name and its `kubernetes_secret` outputs.
pub async fn prove_access<'a>(
    credentials: impl IntoIterator<Item = (&'a str, &'a [KubeSecret])>,
) -> Access {
    let mut access = Access::default();
    for (name, outputs) in credentials {
        for out in outputs {
            if let Err((refused, why)) = prove_one(out, name).await {
                let line = format!("credential `{name}`: output {}: {why}", out.describe());
                if refused {
                    access.refused.push(line);
                } else {
                    access.unreachable.push(line);
                }
            }
        }
    }
    access
}

/// Whether an error of the dry run means the configuration (or RBAC) is wrong, rather
/// than the API server being away for now.
fn is_refusal(e: &KubeError) -> bool {
    match e {
        KubeError::Forbidden { .. }
        | KubeError::Unauthorized { .. }
        | KubeError::NotFound { .. }
        | KubeError::Setup { .. }
        | KubeError::NoResourceVersion { .. } => true,
        KubeError::Status { code, .. } => *code < 500 && *code != 429,
        _ => false,
    }
}

async fn prove_one(out: &KubeSecret, credential: &str) -> Result<(), (bool, String)> {
    let client =
        crate::net::kube::shared_client(out.kubeconfig.as_deref()).map_err(|e| (true, e))?;
    let ns = out
        .namespace
        .clone()
        .unwrap_or_else(|| client.namespace().to_owned());
    // Authorization comes before the object's checks in the API server: a conflict or an
    // existing name means the verb was allowed, which is all this proves.
    let allowed = |r: Result<_, KubeError>| match r {
        Ok(_) | Err(KubeError::Conflict { .. } | KubeError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    };
    let denied = |verb: &str, e: &KubeError| {
        let why = match e {
            KubeError::Forbidden { message, .. } => format!(
                "tokend may not `{verb}` secrets in namespace `{ns}` (name `{}`): {message}; grant its ServiceAccount `{verb}` on this Secret in a Role (README, \"Kubernetes\")",
                out.name
            ),
            e => e.to_string(),
        };
        (is_refusal(e), why)
    };
    // A dry-run token: nothing is stored, and no real token is ever sent for it.
    let probe = Token {
        value: crate::secret::Secret::new("dry-run"),
        token_type: "Bearer".into(),
        issued_at: std::time::SystemTime::now(),
        expires_at: std::time::SystemTime::now(),
    };
    match client.get(Resource::Secret, &ns, &out.name).await {
        Ok(existing) => {
            let object = out.manifest(
                &ns,
                &probe,
                credential,
                Some(existing.resource_version()),
                None,
            );
            allowed(
                client
                    .apply(Resource::Secret, &ns, &out.name, &object, DryRun::All)
                    .await,
            )
            .map_err(|e| denied("patch", &e))?;
        }
        Err(KubeError::NotFound { .. }) => {
            let object = out.manifest(&ns, &probe, credential, None, None);
            allowed(
                client
                    .create(Resource::Secret, &ns, &object, DryRun::All)
                    .await,
            )
            .map_err(|e| denied("create", &e))?;
        }
        Err(e) => return Err(denied("get", &e)),
    }
    Ok(())
}

/// Mounted Secrets reach consumers after the kubelet's sync (about 60–90 s, never with
/// `subPath` or env vars); under this refresh margin a consumer may see an expired token.
pub const PROPAGATION_MARGIN: std::time::Duration = std::time::Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn token() -> Token {
        Token {
            value: crate::secret::Secret::new("tok-1"),
            token_type: "Bearer".into(),
            issued_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            expires_at: UNIX_EPOCH + Duration::from_secs(1_800_003_600),
        }
    }

    fn out(format: SecretFormat) -> KubeSecret {
        KubeSecret {
            name: "vandar-token".into(),
            namespace: Some("apps".into()),
            labels: [("team".to_owned(), "x".to_owned())].into(),
            annotations: BTreeMap::new(),
            format,
            kubeconfig: None,
        }
    }

    #[test]
    fn manifest_has_the_dir_keys_annotations_and_labels() {
        let m = out(SecretFormat::Files).manifest("apps", &token(), "vandar", Some("7"), None);
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(m["metadata"]["resourceVersion"], "7");
        assert_eq!(m["data"]["token"], b64.encode("tok-1"));
        assert_eq!(m["data"]["expires_at"], b64.encode("2027-01-15T09:00:00Z"));
        assert!(m["data"]["token.json"].is_string());
        let a = &m["metadata"]["annotations"];
        assert_eq!(a[ANNOTATION_TOKEN_GEN], "1800000000000");
        assert_eq!(a[ANNOTATION_ISSUED_AT], "2027-01-15T08:00:00Z");
        assert_eq!(a[ANNOTATION_EXPIRES_AT], "2027-01-15T09:00:00Z");
        assert_eq!(a[ANNOTATION_CREDENTIAL], "vandar");
        let l = &m["metadata"]["labels"];
        assert_eq!(l["app.kubernetes.io/managed-by"], "tokend");
        assert_eq!(l["tokend.dev/credential"], "vandar");
        assert_eq!(l["team"], "x");
        let env = out(SecretFormat::Env {
            prefix: "VANDAR".into(),
        })
        .manifest("apps", &token(), "vandar", None, None);
        let keys: Vec<&String> = env["data"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["VANDAR_EXPIRES_AT", "VANDAR_TOKEN"]);
        assert!(env["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn what_stops_the_start_and_what_may_pass() {
        let status = |code| KubeError::Status {
            op: "apply",
            target: "t".into(),
            code,
            reason: "r".into(),
            message: "m".into(),
        };
        let (op, target) = ("get", "secret apps/x".to_owned());
        let cases = [
            (
                KubeError::Forbidden {
                    op,
                    target: target.clone(),
                    message: "m".into(),
                },
                true,
            ),
            (
                KubeError::NotFound {
                    op,
                    target: target.clone(),
                },
                true,
            ),
            (status(422), true),
            (status(429), false),
            (status(503), false),
            (
                KubeError::Unreachable {
                    server: "s".into(),
                    op,
                    target: target.clone(),
                    reason: "refused".into(),
                },
                false,
            ),
            (
                KubeError::Ambiguous {
                    op,
                    target,
                    reason: "reset".into(),
                },
                false,
            ),
        ];
        for (e, refused) in cases {
            assert_eq!(is_refusal(&e), refused, "{e:?}");
        }
    }

    #[test]
    fn in_a_group_the_shared_generation_decides_whatever_the_clocks_say() {
        let secret = |issued: &str, shared: Option<&str>| {
            let mut s = json!({"metadata": {"name": "s", "resourceVersion": "5",
                "annotations": {ANNOTATION_TOKEN_GEN: issued}}});
            if let Some(g) = shared {
                s["metadata"]["annotations"][ANNOTATION_SHARED_GEN] = json!(g);
            }
            s
        };
        // (held issue time, held shared gen, our issue time, our shared gen, the step)
        let cases = [
            // A member with a slow clock writes the newer token (gen 8 over 7).
            ("2000", Some("7"), 1000, Some(8), Step::Apply("5".into())),
            // A member with a fast clock does not put an older token back.
            ("1000", Some("8"), 2000, Some(7), Step::Skip),
            ("1000", Some("8"), 2000, Some(8), Step::Skip),
            // Written before `ha`: issue times decide.
            ("1000", None, 2000, Some(1), Step::Apply("5".into())),
            ("3000", None, 2000, Some(1), Step::Skip),
            // A single instance over a group's Secret: issue times too.
            ("1000", Some("8"), 2000, None, Step::Apply("5".into())),
        ];
        for (issued, shared, ours, ours_shared, want) in cases {
            let s = secret(issued, shared);
            assert_eq!(
                decide(Some(&s), ours, ours_shared),
                want,
                "{s} {ours} {ours_shared:?}"
            );
        }
    }

    #[test]
    fn never_an_older_token_over_a_newer_one() {
        let secret = |held: Option<&str>| {
            let mut s =
                json!({"metadata": {"name": "s", "resourceVersion": "5", "annotations": {}}});
            if let Some(g) = held {
                s["metadata"]["annotations"][ANNOTATION_TOKEN_GEN] = json!(g);
            }
            s
        };
        // (what the GET returned, our generation, the step)
        let cases = [
            (None, 10, Step::Create),
            (Some(secret(None)), 10, Step::Apply("5".into())),
            (Some(secret(Some("garbage"))), 10, Step::Apply("5".into())),
            (Some(secret(Some("9"))), 10, Step::Apply("5".into())),
            (Some(secret(Some("10"))), 10, Step::Skip),
            (Some(secret(Some("11"))), 10, Step::Skip),
        ];
        for (existing, ours, want) in cases {
            assert_eq!(
                decide(existing.as_ref(), ours, None),
                want,
                "{existing:?} {ours}"
            );
        }
    }
}
