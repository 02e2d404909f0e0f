//! What can go wrong talking to the Kubernetes API, sorted by what the caller must do next,
//! and the pure classification of an answer into it.
//!
//! As with etcd, the split that matters for a compare-and-swap protocol is *was the write
//! applied?* [`Unreachable`](KubeError::Unreachable) was never sent and may be retried;
//! after [`Ambiguous`](KubeError::Ambiguous) the caller must GET the object and decide.

use serde::Deserialize;

/// A Kubernetes API request that failed. No variant carries the bearer token or an
/// object's `data` (state Secrets hold refresh tokens).
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The object's `resourceVersion` moved on since it was read (409 Conflict).
    #[error("{op} of {target} lost a race: {message}; read it again and decide anew")]
    Conflict {
        op: &'static str,
        target: String,
        message: String,
    },
    /// A create found the object already there (409 AlreadyExists).
    #[error("{op} of {target} found it already exists; read it instead")]
    AlreadyExists { op: &'static str, target: String },
    #[error("{target} does not exist (404 on {op})")]
    NotFound { op: &'static str, target: String },
    /// RBAC said no; `message` is the API server's own, which names the user, verb,
    /// resource and name.
    #[error(
        "the Kubernetes API refused {op} of {target}: {message}; grant tokend's ServiceAccount that verb in a Role (see the README's RBAC section)"
    )]
    Forbidden {
        op: &'static str,
        target: String,
        message: String,
    },
    /// The credentials were not accepted (also after re-reading a token file).
    #[error(
        "the Kubernetes API at {server} rejected tokend's credentials on {op} of {target} (401): {hint}"
    )]
    Unauthorized {
        server: String,
        op: &'static str,
        target: String,
        hint: String,
    },
    /// A watch's `resourceVersion` is older than the API server's history (410 Gone).
    #[error(
        "the watch of {target} started too long ago for the API server ({message}); list again and watch from the new resourceVersion"
    )]
    Gone { target: String, message: String },
    /// Possibly applied: the write went out and no readable answer came back.
    #[error(
        "the outcome of {op} of {target} is unknown ({reason}); it may or may not have been applied, so read the object back before deciding"
    )]
    Ambiguous {
        op: &'static str,
        target: String,
        reason: String,
    },
    /// Not sent (connect refused, DNS, TLS), or a read that got no answer: safe to retry.
    #[error(
        "the Kubernetes API at {server} did not answer {op} of {target} ({reason}); check that the API server is reachable from here"
    )]
    Unreachable {
        server: String,
        op: &'static str,
        target: String,
        reason: String,
    },
    /// Any other error status (422 Invalid, 429, a 5xx on a read, …).
    #[error(
        "the Kubernetes API refused {op} of {target}: {message} (HTTP {code}, reason {reason})"
    )]
    Status {
        op: &'static str,
        target: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// An answer that is not what the API server sends.
    #[error(
        "the Kubernetes API answered {op} of {target} with something tokend cannot read ({reason}); check that the server URL is the API server"
    )]
    BadAnswer {
        op: &'static str,
        target: String,
        reason: String,
    },
    /// The client refused to send an update that could overwrite blindly.
    #[error(
        "tokend did not send {op} of {target}: the object carries no metadata.resourceVersion, and an update without one would overwrite whatever is there (a bug in tokend; please report it)"
    )]
    NoResourceVersion { op: &'static str, target: String },
    /// The client could not be set up (in-cluster files, kubeconfig).
    #[error("the Kubernetes client cannot be set up: {reason}")]
    Setup { reason: String },
}

impl KubeError {
    /// True when the request certainly was not applied, so sending it again is safe.
    pub fn not_applied(&self) -> bool {
        !matches!(self, KubeError::Ambiguous { .. })
    }
}

/// `metav1.Status`, the body of every API error (and of a watch's ERROR event).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusWire {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub code: u16,
}

/// What an error answer means, before the request's context is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Conflict(String),
    AlreadyExists,
    NotFound,
    Forbidden(String),
    Unauthorized,
    Gone(String),
    /// A write answered 5xx: a proxy or the API server may have timed out after the
    /// storage committed (the API server's own 504 "request did not complete" does).
    Ambiguous(String),
    Status {
        code: u16,
        reason: String,
        message: String,
    },
}

/// Classifies a non-2xx answer from its HTTP status and `Status` body. The body's `code`
/// wins over the HTTP status where both exist (a watch ERROR event has only the body).
pub(crate) fn classify(http: u16, body: &[u8], write: bool) -> Verdict {
    let status: StatusWire = serde_json::from_slice(body).unwrap_or_default();
    let code = if status.kind == "Status" && status.code != 0 {
        status.code
    } else {
        http
    };
    let message = if status.message.is_empty() {
        String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_owned()
    } else {
        status.message.clone()
    };
    match (code, status.reason.as_str()) {
        (409, "AlreadyExists") => Verdict::AlreadyExists,
        (409, _) => Verdict::Conflict(message),
        (404, _) => Verdict::NotFound,
        (403, _) => Verdict::Forbidden(message),
        (401, _) => Verdict::Unauthorized,
        (410, _) => Verdict::Gone(message),
        (500..=599, _) if write => Verdict::Ambiguous(format!("HTTP {code}: {message}")),
        _ => Verdict::Status {
            code,
            reason: if status.reason.is_empty() {
                "none".to_owned()
            } else {
                status.reason
            },
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> Vec<u8> {
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": message, "reason": reason, "code": code,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn classification_table() {
        let conflict = "Operation cannot be fulfilled on leases.coordination.k8s.io \"tokend-g\": the object has been modified; please apply your changes to the latest version and try again";
        let forbidden = "secrets \"tokend-g-c\" is forbidden: User \"system:serviceaccount:apps:tokend\" cannot update resource \"secrets\" in API group \"\" in the namespace \"apps\"";
        let cases: Vec<(u16, Vec<u8>, bool, Verdict)> = vec![
            (409, status(409, "Conflict", conflict), true, Verdict::Conflict(conflict.into())),
            (409, status(409, "AlreadyExists", "secrets \"x\" already exists"), true, Verdict::AlreadyExists),
            (404, status(404, "NotFound", "secrets \"x\" not found"), false, Verdict::NotFound),
            (403, status(403, "Forbidden", forbidden), true, Verdict::Forbidden(forbidden.into())),
            (401, status(401, "Unauthorized", "Unauthorized"), false, Verdict::Unauthorized),
            (410, status(410, "Expired", "too old resource version: 5 (9)"), false, Verdict::Gone("too old resource version: 5 (9)".into())),
            // A watch ERROR event arrives on an HTTP 200 stream: the body's code decides.
            (200, status(410, "Expired", "too old"), false, Verdict::Gone("too old".into())),
            (504, status(504, "Timeout", "request did not complete"), true, Verdict::Ambiguous("HTTP 504: request did not complete".into())),
            (504, status(504, "Timeout", "request did not complete"), false, Verdict::Status { code: 504, reason: "Timeout".into(), message: "request did not complete".into() }),
            (422, status(422, "Invalid", "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"), true, Verdict::Status { code: 422, reason: "Invalid".into(), message: "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update".into() }),
            // A proxy's HTML page: the HTTP status still decides, a short excerpt is kept.
            (502, b"<html>bad gateway</html>".to_vec(), true, Verdict::Ambiguous("HTTP 502: <html>bad gateway</html>".into())),
            (429, b"".to_vec(), false, Verdict::Status { code: 429, reason: "none".into(), message: String::new() }),
        ];
        for (http, body, write, want) in cases {
            assert_eq!(
                classify(http, &body, write),
                want,
                "{http} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn error_text_table() {
        let cases = [
            (
                KubeError::Forbidden {
                    op: "update",
                    target: "Secret apps/tokend-g-c".into(),
                    message: "User \"u\" cannot update resource \"secrets\"".into(),
                },
                "the Kubernetes API refused update of Secret apps/tokend-g-c: User \"u\" cannot update resource \"secrets\"; grant",
            ),
            (
                KubeError::Ambiguous {
                    op: "replace",
                    target: "Lease apps/tokend-g".into(),
                    reason: "no answer within 2s".into(),
                },
                "the outcome of replace of Lease apps/tokend-g is unknown (no answer within 2s); it may or may not have been applied, so read the object back before deciding",
            ),
            (
                KubeError::NoResourceVersion {
                    op: "replace",
                    target: "Secret a/b".into(),
                },
                "tokend did not send replace of Secret a/b: the object carries no metadata.resourceVersion",
            ),
        ];
        for (e, want) in cases {
            let text = e.to_string();
            assert!(text.starts_with(want), "{text}");
        }
        assert!(
            !KubeError::Ambiguous {
                op: "x",
                target: "y".into(),
                reason: "z".into()
            }
            .not_applied()
        );
        assert!(
            KubeError::Conflict {
                op: "x",
                target: "y".into(),
                message: "z".into()
            }
            .not_applied()
        );
    }
}
