//! A fake Kubernetes API server for tests: Secrets and `coordination.k8s.io/v1` Leases
//! per namespace, strict where the real one is (HA.md §3.6, §5), on a loopback port,
//! plain HTTP or TLS with a throw-away CA.
//!
//! What it does like kube-apiserver: one global resourceVersion counter (sent as opaque
//! strings); 409 Conflict on a stale `metadata.resourceVersion`, 409 AlreadyExists on
//! create, 404; PUT without a resourceVersion is 422 on a Lease but **accepted on a
//! Secret** (Secrets allow unconditional updates; [`KubeFake::unconditional_updates`]
//! counts them so a test can prove the client never sends one); `dryRun=All` validates
//! and stores nothing; server-side apply with an optional resourceVersion precondition
//! (merging `data`, `labels` and `annotations` only: no managedFields); watches with a
//! `metadata.name` field selector, bookmarks on request ([`KubeFake::bookmark`]) and 410
//! Gone (as an ERROR event, as the real server sends it) for a resourceVersion older than
//! [`KubeFake::compact`]; 401 without a bearer token from the configured set (or a client
//! certificate on TLS); 403 from a role table, with the real message.
//!
//! Fault injection ([`KubeFake::inject`], [`KubeFake::inject_on`] for one object): the next
//! request of a verb is delayed, answered with an error status without being applied, or
//! applied and then left without an answer (the connection is closed: the ambiguous case).
//! [`KubeFake::set_outage`] answers every request with one status for a while, and
//! [`KubeFake::end_watches`] closes the open watches (as an API server restart does).
//!
//! Every stored version of every object is kept with the instant it was stored
//! ([`KubeFake::versions`]): the shared-state tests judge commits by it.
//!
//! Each connection is served by a thread and closed after one answer.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod conn;
mod tls;
mod verbs;
mod watch;

use conn::*;
use tls::*;
use verbs::*;
use watch::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Res {
    Secrets,
    Leases,
}

impl Res {
    fn group(self) -> &'static str {
        match self {
            Res::Secrets => "",
            Res::Leases => "coordination.k8s.io",
        }
    }
    fn plural(self) -> &'static str {
        match self {
            Res::Secrets => "secrets",
            Res::Leases => "leases",
        }
    }
    fn qualified(self) -> &'static str {
        match self {
            Res::Secrets => "secrets",
            Res::Leases => "leases.coordination.k8s.io",
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Res::Secrets => "Secret",
            Res::Leases => "Lease",
        }
    }
    fn api_version(self) -> &'static str {
        match self {
            Res::Secrets => "v1",
            Res::Leases => "coordination.k8s.io/v1",
        }
    }
}

/// What the next matching request gets instead of normal service.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Served normally, but only after this long (a write commits after the delay).
    Delay(Duration),
    /// Answered with this status and a `Status` body; nothing is applied.
    Status(u16, &'static str),
    /// Applied, then the connection is closed without an answer.
    DropAfterCommit,
    /// Applied, then the connection is held open without an answer for this long and
    /// closed: the client sits in the ambiguous case, not knowing, for a while.
    HoldAfterCommit(Duration),
}

/// One RBAC rule: `verb` on `resource` (`secrets`/`leases`), for `name` or any name.
#[derive(Clone, Debug)]
pub struct Rule {
    pub verb: &'static str,
    pub resource: &'static str,
    pub name: Option<String>,
}

/// A request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub verb: String,
    pub resource: Res,
    pub namespace: String,
    pub name: String,
    pub query: String,
    pub content_type: String,
    /// `metadata.resourceVersion` of the body, if any.
    pub body_rv: Option<String>,
    pub token: Option<String>,
    pub status: u16,
}

type Key = (Res, String, String);

struct Event {
    rv: u64,
    at: Instant,
    key: Key,
    kind: &'static str,
    object: Value,
}

/// One stored version of an object, as [`KubeFake::versions`] lists them.
#[derive(Clone, Debug)]
pub struct Version {
    pub rv: u64,
    /// When the fake stored it (the commit point: a watch could not have seen it earlier).
    pub at: Instant,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Value,
}

/// A fault for the next request of `verb`, on one object only if `target` says so.
struct Injected {
    verb: String,
    target: Option<(Res, String)>,
    /// Set: only a request whose JSON body this accepts.
    when: Option<fn(&Value) -> bool>,
    fault: Fault,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Event>,
    /// Watches from a resourceVersion below this are 410 Gone.
    oldest: u64,
    tokens: HashSet<String>,
    roles: Option<Vec<Rule>>,
    faults: VecDeque<Injected>,
    /// Set: every request is answered with this status (the fake is "down").
    outage: Option<(u16, &'static str)>,
    /// Bumped to end every open watch.
    watch_epoch: u64,
    requests: Vec<Recorded>,
    unconditional_updates: usize,
    bookmarks: u64,
}

struct Shared {
    store: Mutex<Store>,
    changed: Condvar,
    stop: AtomicBool,
    tls: Option<Arc<rustls::ServerConfig>>,
}

pub struct KubeFake {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    dir: tempfile::TempDir,
    tls: Option<TlsFiles>,
}

/// PEM files of a throw-away CA, the fake's certificate and a client certificate.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl KubeFake {
    /// Plain HTTP; accepts bearer tokens from `tokens`.
    pub fn start(tokens: &[&str]) -> KubeFake {
        KubeFake::spawn(tokens, false)
    }

    /// HTTPS with a fresh CA ([`KubeFake::tls`]); a client certificate signed by it also
    /// authenticates.
    pub fn start_tls(tokens: &[&str]) -> KubeFake {
        KubeFake::spawn(tokens, true)
    }

    fn spawn(tokens: &[&str], tls: bool) -> KubeFake {
        let dir = tempfile::tempdir().expect("temp dir");
        let (files, config) = if tls {
            let (files, config) = make_tls(dir.path());
            (Some(files), Some(Arc::new(config)))
        } else {
            (None, None)
        };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake API server");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                tokens: tokens.iter().map(|t| t.to_string()).collect(),
                ..Store::default()
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            tls: config,
        });
        let s = shared.clone();
        let acceptor = std::thread::spawn(move || accept_loop(listener, s));
        KubeFake {
            addr,
            shared,
            acceptor: Some(acceptor),
            dir,
            tls: files,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    pub fn set_tokens(&self, tokens: &[&str]) {
        self.store().tokens = tokens.iter().map(|t| t.to_string()).collect();
    }

    /// RBAC on: only these rules are allowed (`None`: everything is).
    pub fn set_roles(&self, roles: Option<Vec<Rule>>) {
        self.store().roles = roles;
    }

    /// The next request of `verb` (get, list, watch, create, update, patch) gets `fault`.
    pub fn inject(&self, verb: &str, fault: Fault) {
        self.store().faults.push_back(Injected {
            verb: verb.to_owned(),
            target: None,
            when: None,
            fault,
        });
    }

    /// The next request of `verb` on `res` `name` (any namespace) gets `fault`; dry runs
    /// pass it by (a process's start-up permission proof is not the write under test).
    pub fn inject_on(&self, verb: &str, res: Res, name: &str, fault: Fault) {
        self.store().faults.push_back(Injected {
            verb: verb.to_owned(),
            target: Some((res, name.to_owned())),
            when: None,
            fault,
        });
    }

    /// As [`KubeFake::inject_on`], for the next such write whose body `when` accepts (to aim
    /// at one step of a protocol, e.g. the write that sets a claim).
    pub fn inject_on_write(
        &self,
        verb: &str,
        res: Res,
        name: &str,
        when: fn(&Value) -> bool,
        fault: Fault,
    ) {
        self.store().faults.push_back(Injected {
            verb: verb.to_owned(),
            target: Some((res, name.to_owned())),
            when: Some(when),
            fault,
        });
    }

    /// Injected faults no request has met yet.
    pub fn pending_faults(&self) -> usize {
        self.store().faults.len()
    }

    /// `Some`: every request from now on is answered with this status and applies nothing
    /// (open watches go on; [`KubeFake::end_watches`] ends them). `None`: served again.
    pub fn set_outage(&self, outage: Option<(u16, &'static str)>) {
        self.store().outage = outage;
    }

    /// Ends every open watch (the stream closes cleanly, as on an API server restart), so
    /// clients watch again from their last resourceVersion.
    pub fn end_watches(&self) {
        self.store().watch_epoch += 1;
        self.shared.changed.notify_all();
    }

    /// Every version of `res` `ns/name` the fake stored, oldest first (compaction only
    /// hides them from watches).
    pub fn versions(&self, res: Res, ns: &str, name: &str) -> Vec<Version> {
        self.store()
            .history
            .iter()
            .filter(|e| e.key.0 == res && e.key.1 == ns && e.key.2 == name)
            .map(|e| Version {
                rv: e.rv,
                at: e.at,
                kind: e.kind,
                object: e.object.clone(),
            })
            .collect()
    }

    /// The tokend state record held by Secret `ns/name` (`data["state.json"]`, decoded).
    pub fn state(&self, ns: &str, name: &str) -> Option<Value> {
        decode_state(&self.get(Res::Secrets, ns, name)?)
    }

    /// Stores an object directly (as `kubectl apply` would), returning its resourceVersion.
    pub fn put(&self, res: Res, ns: &str, object: Value) -> String {
        let mut st = self.store();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_owned();
        let key = (res, ns.to_owned(), name);
        let kind = if st.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let rv = commit(&mut st, key, kind, object, res);
        self.shared.changed.notify_all();
        rv
    }

    pub fn get(&self, res: Res, ns: &str, name: &str) -> Option<Value> {
        self.store()
            .objects
            .get(&(res, ns.to_owned(), name.to_owned()))
            .cloned()
    }

    pub fn delete(&self, res: Res, ns: &str, name: &str) {
        let mut st = self.store();
        let key = (res, ns.to_owned(), name.to_owned());
        if let Some(mut obj) = st.objects.remove(&key) {
            st.rv += 1;
            let rv = st.rv;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.history.push(Event {
                rv,
                at: Instant::now(),
                key,
                kind: "DELETED",
                object: obj,
            });
        }
        self.shared.changed.notify_all();
    }

    /// Forgets the history: watches from any older resourceVersion are 410 Gone.
    pub fn compact(&self) {
        let mut st = self.store();
        st.oldest = st.rv;
    }

    /// Sends a BOOKMARK (at the current resourceVersion) on every watch that asked for them.
    pub fn bookmark(&self) {
        self.store().bookmarks += 1;
        self.shared.changed.notify_all();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.store().requests.clone()
    }

    /// PUTs of a Secret without `metadata.resourceVersion` that the fake accepted.
    pub fn unconditional_updates(&self) -> usize {
        self.store().unconditional_updates
    }

    pub fn resource_version(&self) -> u64 {
        self.store().rv
    }
}

impl Drop for KubeFake {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Stores `object` under `key` with a new resourceVersion and records the event.
fn commit(st: &mut Store, key: Key, kind: &'static str, mut object: Value, res: Res) -> String {
    st.rv += 1;
    let rv = st.rv;
    let meta = &mut object["metadata"];
    meta["resourceVersion"] = json!(rv.to_string());
    meta["namespace"] = json!(key.1);
    if meta["uid"].is_null() {
        meta["uid"] = json!(format!("uid-{rv}"));
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    object["kind"] = json!(res.kind());
    object["apiVersion"] = json!(res.api_version());
    st.objects.insert(key.clone(), object.clone());
    st.history.push(Event {
        rv,
        at: Instant::now(),
        key,
        kind,
        object,
    });
    rv.to_string()
}

/// The tokend state record in a Secret: `data["state.json"]`, base64 of JSON.
pub fn decode_state(secret: &Value) -> Option<Value> {
    use base64::Engine as _;
    let b64 = secret.pointer("/data/state.json")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let s = shared.clone();
                std::thread::spawn(move || serve(stream, s));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
