//! etcd v3's JSON as the gRPC gateway speaks it, and the pure decisions about its answers.
//!
//! proto3 JSON has three habits every type here absorbs: int64 fields travel as strings
//! (`"revision":"5"`), fields holding false, zero or an empty list are omitted (a failed
//! txn has no `succeeded`, a PUT event has no `type`), and bytes are base64. So every
//! struct deserializes with defaults and every integer accepts a string or a number.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::secret::Secret;

// ---------------------------------------------------------------- proto3 JSON scalars

#[derive(Deserialize)]
#[serde(untagged)]
enum Int<T> {
    Text(String),
    Num(T),
}

fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Option::<Int<i64>>::deserialize(d)? {
        None => Ok(0),
        Some(Int::Num(n)) => Ok(n),
        Some(Int::Text(s)) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn uint64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Option::<Int<u64>>::deserialize(d)? {
        None => Ok(0),
        Some(Int::Num(n)) => Ok(n),
        Some(Int::Text(s)) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(Vec::new()),
        Some(s) => B64.decode(s).map_err(serde::de::Error::custom),
    }
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .filter(|s| !s.is_empty())
        .map(Secret::new))
}

fn b64(data: &[u8]) -> String {
    B64.encode(data)
}

// ---------------------------------------------------------------- answers

/// The header of every answer; `revision` is the store's revision when it was served.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Header {
    #[serde(deserialize_with = "uint64")]
    pub cluster_id: u64,
    #[serde(deserialize_with = "uint64")]
    pub member_id: u64,
    #[serde(deserialize_with = "int64")]
    pub revision: i64,
    #[serde(deserialize_with = "uint64")]
    pub raft_term: u64,
}

/// One key. `create_revision` 0 means the key does not exist (in a compare).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct KeyValue {
    #[serde(deserialize_with = "bytes")]
    pub key: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    pub create_revision: i64,
    #[serde(deserialize_with = "int64")]
    pub mod_revision: i64,
    #[serde(deserialize_with = "int64")]
    pub version: i64,
    #[serde(deserialize_with = "bytes")]
    pub value: Vec<u8>,
    #[serde(deserialize_with = "int64")]
    pub lease: i64,
}

// Values hold refresh tokens: Debug shows the key and the value's length only.
impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .field("value", &format_args!("[{} bytes]", self.value.len()))
            .field("lease", &self.lease)
            .finish()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RangeResponse {
    pub header: Header,
    pub kvs: Vec<KeyValue>,
    #[serde(deserialize_with = "int64")]
    pub count: i64,
    pub more: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PutResponse {
    pub header: Header,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeleteResponse {
    pub header: Header,
    #[serde(deserialize_with = "int64")]
    pub deleted: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct ResponseOpWire {
    response_range: Option<RangeResponse>,
    response_put: Option<PutResponse>,
    response_delete_range: Option<DeleteResponse>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct TxnWire {
    header: Header,
    succeeded: bool,
    responses: Vec<ResponseOpWire>,
}

/// The answer to one operation of a txn branch, in the order they were given.
#[derive(Debug, Clone)]
pub enum OpResponse {
    Range(RangeResponse),
    Put(PutResponse),
    Delete(DeleteResponse),
}

/// A txn's outcome: which branch ran, its answers, and the store's revision after it
/// (a successful put's key has `mod_revision == revision`).
#[derive(Debug, Clone)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub revision: i64,
    pub responses: Vec<OpResponse>,
}

pub(super) fn parse_txn(body: &[u8]) -> Result<TxnResponse, String> {
    let wire: TxnWire = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let responses = wire
        .responses
        .into_iter()
        .map(|r| match r {
            ResponseOpWire {
                response_range: Some(r),
                ..
            } => Ok(OpResponse::Range(r)),
            ResponseOpWire {
                response_put: Some(p),
                ..
            } => Ok(OpResponse::Put(p)),
            ResponseOpWire {
                response_delete_range: Some(d),
                ..
            } => Ok(OpResponse::Delete(d)),
            _ => Err("a txn response of unknown kind".to_owned()),
        })
        .collect::<Result<_, _>>()?;
    Ok(TxnResponse {
        succeeded: wire.succeeded,
        revision: wire.header.revision,
        responses,
    })
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct LeaseGrantWire {
    #[serde(rename = "ID", deserialize_with = "int64")]
    pub id: i64,
    #[serde(rename = "TTL", deserialize_with = "int64")]
    pub ttl: i64,
    pub error: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct KeepAliveResult {
    #[serde(rename = "TTL", deserialize_with = "int64")]
    ttl: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct KeepAliveWire {
    result: Option<KeepAliveResult>,
}

/// The remaining TTL in seconds from a one-shot keepalive; 0 (the field absent) means the
/// lease is gone. The gateway wraps this streaming RPC's single answer in `result`.
pub(super) fn parse_keepalive(body: &[u8]) -> Result<i64, String> {
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<KeepAliveWire>();
    match stream.next() {
        Some(Ok(KeepAliveWire { result: Some(r) })) => Ok(r.ttl.max(0)),
        Some(Ok(_)) => Err("no `result` in the keepalive answer".to_owned()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("an empty keepalive answer".to_owned()),
    }
}

/// What `/v3/maintenance/status` says about the member that answered.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MemberStatus {
    pub header: Header,
    pub version: String,
    #[serde(deserialize_with = "uint64")]
    pub leader: u64,
    #[serde(rename = "dbSize", deserialize_with = "int64")]
    pub db_size: i64,
    #[serde(rename = "raftIndex", deserialize_with = "uint64")]
    pub raft_index: u64,
}

impl MemberStatus {
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.header.member_id
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct AuthenticateWire {
    #[serde(deserialize_with = "secret")]
    pub token: Option<Secret>,
}

/// A gRPC error as the gateway renders it on a non-2xx answer.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub(super) struct ErrorWire {
    pub error: String,
    pub message: String,
    pub code: i32,
}

// ---------------------------------------------------------------- watch messages

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct EventWire {
    #[serde(rename = "type")]
    kind: Option<String>,
    kv: KeyValue,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct WatchResponseWire {
    header: Header,
    created: bool,
    canceled: bool,
    #[serde(deserialize_with = "int64")]
    compact_revision: i64,
    cancel_reason: String,
    events: Vec<EventWire>,
}

/// A streaming error (grpc-gateway's shape for errors inside a stream).
#[derive(Default, Deserialize)]
#[serde(default)]
struct StreamErrorWire {
    #[serde(alias = "code")]
    grpc_code: i32,
    message: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct WatchMessageWire {
    result: Option<WatchResponseWire>,
    error: Option<StreamErrorWire>,
}

/// One message of a watch stream, decoded.
#[derive(Debug, Clone)]
pub(super) enum WatchMessage {
    Created { revision: i64 },
    Events { revision: i64, events: Vec<Event> },
    Compacted { compact_revision: i64 },
    Canceled { code: i32, reason: String },
}

pub(super) fn decode_watch(msg: WatchMessageWire) -> Result<WatchMessage, String> {
    if let Some(e) = msg.error {
        return Ok(WatchMessage::Canceled {
            code: e.grpc_code,
            reason: e.message,
        });
    }
    let r = msg
        .result
        .ok_or("a watch message with neither result nor error")?;
    if r.canceled {
        if r.compact_revision > 0 {
            return Ok(WatchMessage::Compacted {
                compact_revision: r.compact_revision,
            });
        }
        return Ok(WatchMessage::Canceled {
            code: grpc_code_in(&r.cancel_reason),
            reason: r.cancel_reason,
        });
    }
    if r.created {
        return Ok(WatchMessage::Created {
            revision: r.header.revision,
        });
    }
    let events = r
        .events
        .into_iter()
        .map(|e| {
            let kind = match e.kind.as_deref() {
                None | Some("PUT") => EventKind::Put,
                Some("DELETE") => EventKind::Delete,
                Some(other) => return Err(format!("an event of unknown type `{other}`")),
            };
            Ok(Event { kind, kv: e.kv })
        })
        .collect::<Result<_, _>>()?;
    Ok(WatchMessage::Events {
        revision: r.header.revision,
        events,
    })
}

/// A cancel reason is Go's error text: "rpc error: code = Unauthenticated desc = …".
fn grpc_code_in(reason: &str) -> i32 {
    const NAMES: [(&str, i32); 6] = [
        ("code = InvalidArgument", 3),
        ("code = NotFound", 5),
        ("code = PermissionDenied", 7),
        ("code = FailedPrecondition", 9),
        ("code = Unavailable", 14),
        ("code = Unauthenticated", 16),
    ];
    NAMES
        .iter()
        .find(|(name, _)| reason.contains(name))
        .map_or(2, |&(_, code)| code)
}

// ---------------------------------------------------------------- requests

/// `range_end` for "every key starting with `prefix`": the prefix with its last byte
/// below 0xff incremented. An all-0xff (or empty) prefix has no such key, and etcd's
/// convention for "to the end of the keyspace" is `\0`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub(super) fn range_body(key: &[u8], range_end: Option<&[u8]>) -> Value {
    let mut body = json!({ "key": b64(key) });
    if let Some(end) = range_end {
        body["range_end"] = b64(end).into();
    }
    body
}

pub(super) fn put_body(key: &[u8], value: &[u8], lease: i64) -> Value {
    let mut body = json!({ "key": b64(key), "value": b64(value) });
    if lease != 0 {
        body["lease"] = lease.to_string().into();
    }
    body
}

/// What a compare looks at, with the value it is compared to.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// The key's last modification revision (0: the key does not exist).
    Mod(i64),
    /// The key's creation revision (0: the key does not exist).
    Create(i64),
    /// How often the key was written since its creation (0: the key does not exist).
    Version(i64),
    Value(Vec<u8>),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Mod(r) => write!(f, "MOD {r}"),
            Target::Create(r) => write!(f, "CREATE {r}"),
            Target::Version(v) => write!(f, "VERSION {v}"),
            Target::Value(v) => write!(f, "VALUE [{} bytes]", v.len()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// One guard of a txn: `target(key) op value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: Target,
}

impl Compare {
    pub fn new(key: impl AsRef<[u8]>, op: CompareOp, target: Target) -> Compare {
        Compare {
            key: key.as_ref().to_vec(),
            op,
            target,
        }
    }

    /// `MOD(key) == revision`: the compare-and-swap guard.
    pub fn mod_revision(key: impl AsRef<[u8]>, revision: i64) -> Compare {
        Compare::new(key, CompareOp::Equal, Target::Mod(revision))
    }

    /// `CREATE(key) == revision`: fencing by a leader key (0: the key must not exist).
    pub fn create_revision(key: impl AsRef<[u8]>, revision: i64) -> Compare {
        Compare::new(key, CompareOp::Equal, Target::Create(revision))
    }

    fn to_json(&self) -> Value {
        let result = match self.op {
            CompareOp::Equal => "EQUAL",
            CompareOp::Greater => "GREATER",
            CompareOp::Less => "LESS",
            CompareOp::NotEqual => "NOT_EQUAL",
        };
        let mut c = json!({ "key": b64(&self.key), "result": result });
        let (target, field, value): (&str, &str, Value) = match &self.target {
            Target::Mod(r) => ("MOD", "mod_revision", r.to_string().into()),
            Target::Create(r) => ("CREATE", "create_revision", r.to_string().into()),
            Target::Version(v) => ("VERSION", "version", v.to_string().into()),
            Target::Value(v) => ("VALUE", "value", b64(v).into()),
        };
        c["target"] = target.into();
        c[field] = value;
        c
    }
}

/// One operation of a txn branch.
#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
        range_end: Option<Vec<u8>>,
    },
    Range {
        key: Vec<u8>,
        range_end: Option<Vec<u8>>,
    },
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put { key, value, lease } => write!(
                f,
                "put {} [{} bytes] lease {lease}",
                String::from_utf8_lossy(key),
                value.len()
            ),
            Op::Delete { key, .. } => write!(f, "delete {}", String::from_utf8_lossy(key)),
            Op::Range { key, .. } => write!(f, "range {}", String::from_utf8_lossy(key)),
        }
    }
}

impl Op {
    pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, lease: i64) -> Op {
        Op::Put {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            lease,
        }
    }

    pub fn delete(key: impl AsRef<[u8]>) -> Op {
        Op::Delete {
            key: key.as_ref().to_vec(),
            range_end: None,
        }
    }

    pub fn range(key: impl AsRef<[u8]>) -> Op {
        Op::Range {
            key: key.as_ref().to_vec(),
            range_end: None,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Op::Put { key, value, lease } => json!({ "request_put": put_body(key, value, *lease) }),
            Op::Delete { key, range_end } => {
                json!({ "request_delete_range": range_body(key, range_end.as_deref()) })
            }
            Op::Range { key, range_end } => {
                json!({ "request_range": range_body(key, range_end.as_deref()) })
            }
        }
    }
}

pub(super) fn txn_body(compare: &[Compare], success: &[Op], failure: &[Op]) -> Value {
    json!({
        "compare": compare.iter().map(Compare::to_json).collect::<Vec<_>>(),
        "success": success.iter().map(Op::to_json).collect::<Vec<_>>(),
        "failure": failure.iter().map(Op::to_json).collect::<Vec<_>>(),
    })
}

pub(super) fn watch_body(key: &[u8], range_end: Option<&[u8]>, start_revision: i64) -> Value {
    let mut create = range_body(key, range_end);
    if start_revision > 0 {
        create["start_revision"] = start_revision.to_string().into();
    }
    json!({ "create_request": create })
}

// ---------------------------------------------------------------- classification

/// What an HTTP answer from the gateway is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reply {
    Ok,
    Status(ErrorWire),
    NoGateway,
    Bad(String),
}

pub(super) fn classify_reply(status: u16, body: &[u8]) -> Reply {
    if (200..300).contains(&status) {
        return Reply::Ok;
    }
    // Error bodies are followed by a trailer on chunked answers; read the first value only.
    let first = serde_json::Deserializer::from_slice(body)
        .into_iter::<ErrorWire>()
        .next();
    match first {
        Some(Ok(e)) if e.code != 0 || !e.message.is_empty() => Reply::Status(e),
        // A plain "404 page not found": an etcd without the gateway (or not etcd at all).
        _ if status == 404 => Reply::NoGateway,
        _ => Reply::Bad(format!("HTTP {status} without an etcd error")),
    }
}

/// What to do after a gRPC error, for a request that changes state (`write`) or not.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(super) enum Disposition {
    /// The answer stands.
    Final,
    /// This member could not serve it and applied nothing: ask the next endpoint.
    NextEndpoint,
    /// The proposal may have been committed: the caller must read back.
    Ambiguous,
    /// The auth token has expired (simple tokens do after 5 idle minutes): log in again.
    Reauthenticate,
}

pub(super) fn disposition(code: i32, message: &str, write: bool) -> Disposition {
    match code {
        16 if message.contains("invalid auth token") => Disposition::Reauthenticate,
        // Checked before a request is proposed: nothing was applied.
        14 if message.contains("no leader") || message.contains("not capable") => {
            Disposition::NextEndpoint
        }
        // "request timed out", "… due to leader failure", "… connection lost", "server
        // stopped", "leader changed": for a write, the proposal may still commit.
        14 | 4 if write => Disposition::Ambiguous,
        14 | 4 => Disposition::NextEndpoint,
        _ => Disposition::Final,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"/tokend/", b"/tokend0"),
            (b"a", b"b"),
            (b"a\xff", b"b"),
            (b"a\xff\xff", b"b"),
            (b"\xff", b"\0"),
            (b"", b"\0"),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_end(prefix), *end, "prefix {prefix:?}");
        }
    }

    #[test]
    fn compare_json_table() {
        let k = b64(b"/k");
        let cases = [
            (
                Compare::mod_revision("/k", 7),
                json!({"key": k, "result": "EQUAL", "target": "MOD", "mod_revision": "7"}),
            ),
            (
                Compare::create_revision("/k", 0),
                json!({"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}),
            ),
            (
                Compare::new("/k", CompareOp::Greater, Target::Version(2)),
                json!({"key": k, "result": "GREATER", "target": "VERSION", "version": "2"}),
            ),
            (
                Compare::new("/k", CompareOp::Less, Target::Mod(9)),
                json!({"key": k, "result": "LESS", "target": "MOD", "mod_revision": "9"}),
            ),
            (
                Compare::new("/k", CompareOp::NotEqual, Target::Value(b"v".to_vec())),
                json!({"key": k, "result": "NOT_EQUAL", "target": "VALUE", "value": b64(b"v")}),
            ),
        ];
        for (compare, want) in cases {
            assert_eq!(compare.to_json(), want, "{compare:?}");
        }
    }

    #[test]
    fn txn_body_carries_ops_in_order() {
        let body = txn_body(
            &[Compare::mod_revision("/s", 3)],
            &[Op::put("/s", "v", 0x1f), Op::delete("/c")],
            &[Op::range("/s")],
        );
        assert_eq!(
            body,
            json!({
                "compare": [{"key": b64(b"/s"), "result": "EQUAL", "target": "MOD", "mod_revision": "3"}],
                "success": [
                    {"request_put": {"key": b64(b"/s"), "value": b64(b"v"), "lease": "31"}},
                    {"request_delete_range": {"key": b64(b"/c")}},
                ],
                "failure": [{"request_range": {"key": b64(b"/s")}}],
            })
        );
    }

    #[test]
    fn watch_and_range_bodies() {
        assert_eq!(
            watch_body(b"/p/", Some(b"/p0"), 5),
            json!({"create_request": {"key": b64(b"/p/"), "range_end": b64(b"/p0"), "start_revision": "5"}})
        );
        assert_eq!(
            watch_body(b"/k", None, 0),
            json!({"create_request": {"key": b64(b"/k")}})
        );
        assert_eq!(
            put_body(b"/k", b"", 0),
            json!({"key": b64(b"/k"), "value": ""})
        );
    }

    // Answers as etcd 3.4.23's gateway sent them (captured on loopback).
    #[test]
    fn txn_answers_table() {
        let ok = br#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"4","raft_term":"2"},"succeeded":true,"responses":[{"response_delete_range":{"header":{"revision":"4"},"deleted":"1"}}]}"#;
        let t = parse_txn(ok).unwrap();
        assert!(t.succeeded);
        assert_eq!(t.revision, 4);
        assert!(matches!(&t.responses[..], [OpResponse::Delete(d)] if d.deleted == 1));

        // A failed txn omits `succeeded`; its range answer carries the current key.
        let failed = br#"{"header":{"revision":"3"},"responses":[{"response_range":{"header":{"revision":"3"},"kvs":[{"key":"L2s=","create_revision":"2","mod_revision":"3","version":"2","value":"djI="}],"count":"1"}}]}"#;
        let t = parse_txn(failed).unwrap();
        assert!(!t.succeeded);
        let OpResponse::Range(r) = &t.responses[0] else {
            panic!("{t:?}")
        };
        assert_eq!(r.kvs[0].key, b"/k");
        assert_eq!(r.kvs[0].value, b"v2");
        assert_eq!(
            (
                r.kvs[0].create_revision,
                r.kvs[0].mod_revision,
                r.kvs[0].version
            ),
            (2, 3, 2)
        );

        let put = br#"{"header":{"revision":"9"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"9"}}}]}"#;
        assert!(
            matches!(&parse_txn(put).unwrap().responses[..], [OpResponse::Put(p)] if p.header.revision == 9)
        );
        assert!(parse_txn(br#"{"responses":[{}]}"#).is_err());
        // Integers as numbers are accepted too (other gateways, other versions).
        assert_eq!(
            parse_txn(br#"{"header":{"revision":12}}"#)
                .unwrap()
                .revision,
            12
        );
    }

    #[test]
    fn range_answers_table() {
        let missing: RangeResponse =
            serde_json::from_slice(br#"{"header":{"revision":"3"}}"#).unwrap();
        assert!(missing.kvs.is_empty());
        assert_eq!((missing.count, missing.header.revision), (0, 3));
        let leased: RangeResponse = serde_json::from_slice(
            br#"{"kvs":[{"key":"L2s=","create_revision":"5","mod_revision":"5","version":"1","lease":"2324035673634815012"}],"count":"1","more":true}"#,
        )
        .unwrap();
        assert_eq!(leased.kvs[0].lease, 2324035673634815012);
        assert!(leased.kvs[0].value.is_empty());
        assert!(leased.more);
    }

    #[test]
    fn keepalive_answers_table() {
        let cases: &[(&[u8], Result<i64, ()>)] = &[
            (
                br#"{"result":{"header":{"revision":"4"},"ID":"7","TTL":"30"}}"#,
                Ok(30),
            ),
            // Expired or unknown lease: TTL absent.
            (
                br#"{"result":{"header":{"revision":"4"},"ID":"123"}}"#,
                Ok(0),
            ),
            (br#"{"result":{"ID":"1","TTL":"-1"}}"#, Ok(0)),
            (br#"{"error":{"grpc_code":14,"message":"x"}}"#, Err(())),
            (b"", Err(())),
        ];
        for (body, want) in cases {
            let got = parse_keepalive(body).map_err(|_| ());
            assert_eq!(got, *want, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn status_and_grant_answers() {
        let s: MemberStatus = serde_json::from_slice(br#"{"header":{"member_id":"3319814642761637952","revision":"4"},"version":"3.4.23","dbSize":"20480","leader":"3319814642761637952","raftIndex":"9"}"#).unwrap();
        assert!(s.is_leader());
        assert_eq!(
            (s.version.as_str(), s.db_size, s.raft_index),
            ("3.4.23", 20480, 9)
        );
        let g: LeaseGrantWire =
            serde_json::from_slice(br#"{"ID":"2324035673634814988","TTL":"5"}"#).unwrap();
        assert_eq!((g.id, g.ttl), (2324035673634814988, 5));
    }

    #[test]
    fn reply_classification_table() {
        let lease = br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#;
        let cases: &[(u16, &[u8], Reply)] = &[
            (200, b"{}", Reply::Ok),
            (
                404,
                lease,
                Reply::Status(ErrorWire {
                    error: "etcdserver: requested lease not found".into(),
                    message: "etcdserver: requested lease not found".into(),
                    code: 5,
                }),
            ),
            (404, b"Not Found\n", Reply::NoGateway),
            (404, b"404 page not found\n", Reply::NoGateway),
            (
                502,
                b"<html>bad gateway</html>",
                Reply::Bad("HTTP 502 without an etcd error".into()),
            ),
            (
                500,
                b"",
                Reply::Bad("HTTP 500 without an etcd error".into()),
            ),
        ];
        for (status, body, want) in cases {
            assert_eq!(classify_reply(*status, body), *want, "{status}");
        }
    }

    #[test]
    fn disposition_table() {
        use Disposition::*;
        let cases = [
            (16, "etcdserver: invalid auth token", true, Reauthenticate),
            (16, "etcdserver: invalid auth token", false, Reauthenticate),
            (14, "etcdserver: no leader", true, NextEndpoint),
            (14, "etcdserver: not capable", true, NextEndpoint),
            (14, "etcdserver: request timed out", true, Ambiguous),
            (14, "etcdserver: request timed out", false, NextEndpoint),
            (14, "etcdserver: leader changed", false, NextEndpoint),
            (4, "context deadline exceeded", true, Ambiguous),
            (7, "etcdserver: permission denied", true, Final),
            (3, "etcdserver: user name is empty", false, Final),
            (5, "etcdserver: requested lease not found", true, Final),
            (
                11,
                "etcdserver: mvcc: required revision has been compacted",
                false,
                Final,
            ),
        ];
        for (code, message, write, want) in cases {
            assert_eq!(
                disposition(code, message, write),
                want,
                "{code} {message} write={write}"
            );
        }
    }

    fn watch(json: &str) -> Result<WatchMessage, String> {
        decode_watch(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn watch_messages_table() {
        assert!(matches!(
            watch(r#"{"result":{"header":{"revision":"5"},"created":true}}"#),
            Ok(WatchMessage::Created { revision: 5 })
        ));
        let Ok(WatchMessage::Events { revision, events }) = watch(
            r#"{"result":{"header":{"revision":"5"},"events":[{"type":"DELETE","kv":{"key":"L2s=","mod_revision":"4"}},{"kv":{"key":"L2s=","create_revision":"5","mod_revision":"5","version":"1","value":"djU="}}]}}"#,
        ) else {
            panic!("events")
        };
        assert_eq!(revision, 5);
        assert_eq!(events[0].kind, EventKind::Delete);
        assert_eq!(events[0].kv.mod_revision, 4);
        assert_eq!(events[1].kind, EventKind::Put);
        assert_eq!(events[1].kv.value, b"v5");
        assert!(matches!(
            watch(
                r#"{"result":{"header":{"revision":"5"},"canceled":true,"compact_revision":"3"}}"#
            ),
            Ok(WatchMessage::Compacted {
                compact_revision: 3
            })
        ));
        assert!(matches!(
            watch(
                r#"{"result":{"watch_id":"-1","created":true,"canceled":true,"cancel_reason":"rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"}}"#
            ),
            Ok(WatchMessage::Canceled { code: 16, .. })
        ));
        assert!(matches!(
            watch(
                r#"{"result":{"canceled":true,"cancel_reason":"rpc error: code = InvalidArgument desc = etcdserver: user name is empty"}}"#
            ),
            Ok(WatchMessage::Canceled { code: 3, .. })
        ));
        assert!(matches!(
            watch(r#"{"error":{"grpc_code":14,"http_code":503,"message":"transport is closing"}}"#),
            Ok(WatchMessage::Canceled { code: 14, .. })
        ));
        assert!(watch(r#"{"result":{"events":[{"type":"MERGE"}]}}"#).is_err());
        assert!(watch(r#"{}"#).is_err());
    }

    #[test]
    fn debug_never_shows_values() {
        let kv = KeyValue {
            key: b"/tokend/g/state/c".to_vec(),
            value: b"refresh-token-canary".to_vec(),
            ..KeyValue::default()
        };
        let op = Op::put("/k", "refresh-token-canary", 0);
        let cmp = Compare::new(
            "/k",
            CompareOp::Equal,
            Target::Value(b"refresh-token-canary".to_vec()),
        );
        for text in [format!("{kv:?}"), format!("{op:?}"), format!("{cmp:?}")] {
            assert!(!text.contains("canary"), "{text}");
        }
        let auth: AuthenticateWire = serde_json::from_str(r#"{"token":"tok-canary.24"}"#).unwrap();
        assert!(!format!("{:?}", auth.token).contains("canary"));
    }
}
