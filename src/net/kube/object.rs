//! The objects tokend reads and writes, as the API server sends them.

use serde_json::Value;

/// The kinds of object tokend touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Secret,
    /// `coordination.k8s.io/v1`
    Lease,
}

impl Resource {
    pub(super) fn collection(self, namespace: &str) -> String {
        match self {
            Resource::Secret => format!("/api/v1/namespaces/{namespace}/secrets"),
            Resource::Lease => {
                format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases")
            }
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Resource::Secret => "Secret",
            Resource::Lease => "Lease",
        }
    }
}

/// Whether a write is only validated (`dryRun=All`: admission and RBAC run, nothing is
/// stored), which proves permissions before a one-time input is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DryRun {
    #[default]
    No,
    All,
}

/// An object as the API server returned it. Its `Debug` shows kind, name and
/// resourceVersion only: a Secret's `data` may hold a refresh token.
#[derive(Clone)]
pub struct KubeObject {
    pub(super) value: Value,
}

impl KubeObject {
    /// Requires `metadata.resourceVersion`, which every stored object has.
    pub fn from_value(value: Value) -> Result<KubeObject, String> {
        match value.pointer("/metadata/resourceVersion") {
            Some(Value::String(rv)) if !rv.is_empty() => Ok(KubeObject { value }),
            _ => Err("the object has no metadata.resourceVersion".to_owned()),
        }
    }

    /// Opaque: compare for equality only, never order.
    pub fn resource_version(&self) -> &str {
        self.str_at("/metadata/resourceVersion")
    }

    pub fn name(&self) -> &str {
        self.str_at("/metadata/name")
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    pub fn into_value(self) -> Value {
        self.value
    }

    fn str_at(&self, pointer: &str) -> &str {
        self.value
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

impl std::fmt::Debug for KubeObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeObject")
            .field("kind", &self.str_at("/kind"))
            .field("name", &self.name())
            .field("resource_version", &self.resource_version())
            .finish_non_exhaustive()
    }
}
