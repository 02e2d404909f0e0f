//! What can go wrong talking to etcd, sorted by what the caller must do next.
//!
//! The split that matters is *was the request applied?* A compare-and-swap protocol may
//! retry anything that was [`Unreachable`](EtcdError::Unreachable) (never sent), but after
//! [`Ambiguous`](EtcdError::Ambiguous) it must read the key back before it decides, because
//! the write may have landed.

/// An etcd request that failed. No variant carries a password, an auth token or a value
/// (values hold refresh tokens).
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// Not sent: every endpoint refused the connection or failed DNS or TLS (or, for a
    /// read, gave no answer). Safe to retry.
    #[error(
        "no etcd endpoint answered {op} ({endpoints}; last: {reason}); check that etcd runs and that `endpoints` lists its client URLs"
    )]
    Unreachable {
        op: &'static str,
        endpoints: String,
        reason: String,
    },
    /// Possibly applied: the request went out and no readable answer came back in time.
    #[error(
        "the outcome of {op} at etcd {endpoint} is unknown ({reason}); it may or may not have been applied, so read the key back before deciding"
    )]
    Ambiguous {
        endpoint: String,
        op: &'static str,
        reason: String,
    },
    /// etcd answered with a gRPC error (permission denied, lease not found, …).
    #[error("etcd at {endpoint} refused {op}: {message} (gRPC code {code}); {}", advice(*.code, .message))]
    Status {
        endpoint: String,
        op: &'static str,
        code: i32,
        message: String,
    },
    /// A watch asked for history etcd has already compacted away.
    #[error(
        "etcd at {endpoint} has compacted its history up to revision {compact_revision}; re-read the current state and watch from its revision"
    )]
    Compacted {
        endpoint: String,
        compact_revision: i64,
    },
    /// The endpoint speaks HTTP but serves no `/v3/*` API.
    #[error(
        "etcd at {endpoint} has no HTTP/JSON gateway: start it with --enable-grpc-gateway (etcd ≥ 3.4 default) or `enable-grpc-gateway: true` in its config file, and check that the endpoint is etcd's client URL"
    )]
    NoGateway { endpoint: String },
    /// An answer that is not what etcd's gateway sends.
    #[error(
        "etcd at {endpoint} answered {op} with something tokend cannot read ({reason}); check that the endpoint is an etcd ≥ 3.4 client URL"
    )]
    BadAnswer {
        endpoint: String,
        op: &'static str,
        reason: String,
    },
    /// Wrong username or password (the server's message never contains either).
    #[error(
        "etcd at {endpoint} rejected user `{username}`: {message}; check the etcd username and password"
    )]
    AuthFailed {
        endpoint: String,
        username: String,
        message: String,
    },
    /// The client could not be built (endpoint URL, ca_file, cert_file, key_file).
    #[error("the etcd client cannot be set up: {reason}")]
    Setup { reason: String },
}

impl EtcdError {
    /// True when the request certainly was not applied, so sending it again is safe.
    pub fn not_applied(&self) -> bool {
        !matches!(self, EtcdError::Ambiguous { .. })
    }
}

/// The "what to do" half of a gRPC error, by code (google.golang.org/grpc/codes).
fn advice(code: i32, message: &str) -> &'static str {
    match code {
        7 => "grant tokend's etcd role readwrite on its prefix (etcdctl role grant-permission)",
        3 if message.contains("user name is empty") => {
            "etcd has authentication enabled: configure an etcd username and password"
        }
        5 if message.contains("lease not found") => {
            "the lease has expired; grant a new one and campaign again"
        }
        8 => "the request or answer exceeds etcd's size limits; keep values small",
        14 => "etcd is unavailable (no leader or shutting down); retry after a short wait",
        _ => "see etcd's log for details",
    }
}
