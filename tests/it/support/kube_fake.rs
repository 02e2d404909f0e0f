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

// ------------------------------------------------------------------ one connection

enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    raw_query: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    client_cert: bool,
}

fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut conn = match &shared.tls {
        None => Conn::Plain(stream),
        Some(config) => {
            let Ok(tls) = rustls::ServerConnection::new(config.clone()) else {
                return;
            };
            let mut s = rustls::StreamOwned::new(tls, stream);
            while s.conn.is_handshaking() {
                if s.conn.complete_io(&mut s.sock).is_err() {
                    return;
                }
            }
            Conn::Tls(Box::new(s))
        }
    };
    let client_cert = match &conn {
        Conn::Tls(s) => s.conn.peer_certificates().is_some_and(|c| !c.is_empty()),
        Conn::Plain(_) => false,
    };
    let Some(req) = read_request(&mut conn, client_cert) else {
        return;
    };
    handle(&mut conn, req, &shared);
    let _ = conn.flush();
    if let Conn::Tls(s) = &mut conn {
        s.conn.send_close_notify();
        let _ = s.conn.complete_io(&mut s.sock);
    }
    let _ = conn.tcp().shutdown(Shutdown::Both);
}

fn read_request(conn: &mut Conn, client_cert: bool) -> Option<Request> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let (path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
    let query = form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    Some(Request {
        method,
        path: path.to_owned(),
        query,
        raw_query: raw_query.to_owned(),
        headers,
        body,
        client_cert,
    })
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn respond(conn: &mut Conn, code: u16, body: &Value) {
    let text = body.to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// What a handler decided: an answer, or (for a watch) that it already streamed one.
enum Outcome {
    Answer(u16, Value),
    Streamed,
}

fn handle(conn: &mut Conn, req: Request, shared: &Shared) {
    // Route: /api/v1/namespaces/{ns}/secrets[/{name}], /apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let route = match segs.as_slice() {
        ["api", "v1", "namespaces", ns, "secrets", rest @ ..] => {
            Some((Res::Secrets, *ns, rest.first().copied()))
        }
        [
            "apis",
            "coordination.k8s.io",
            "v1",
            "namespaces",
            ns,
            "leases",
            rest @ ..,
        ] => Some((Res::Leases, *ns, rest.first().copied())),
        _ => None,
    };
    let Some((res, ns, name)) = route else {
        respond(
            conn,
            404,
            &status_body(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
        return;
    };
    let watch = req
        .query
        .get("watch")
        .is_some_and(|w| w == "1" || w == "true");
    let selected = req
        .query
        .get("fieldSelector")
        .and_then(|s| s.strip_prefix("metadata.name="))
        .map(str::to_owned);
    let verb = match (req.method.as_str(), name, watch) {
        ("GET", None, true) => "watch",
        ("GET", None, false) => "list",
        ("GET", Some(_), _) => "get",
        ("POST", None, _) => "create",
        ("PUT", Some(_), _) => "update",
        ("PATCH", Some(_), _) => "patch",
        _ => {
            respond(
                conn,
                405,
                &status_body(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                ),
            );
            return;
        }
    };
    let body: Option<Value> = serde_json::from_slice(&req.body).ok();
    let body_name = body
        .as_ref()
        .and_then(|b| b["metadata"]["name"].as_str())
        .map(str::to_owned);
    let obj_name = name
        .map(str::to_owned)
        .or(selected.clone())
        .or(body_name)
        .unwrap_or_default();
    let token = req
        .headers
        .get("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_owned);
    let mut recorded = Recorded {
        verb: verb.to_owned(),
        resource: res,
        namespace: ns.to_owned(),
        name: obj_name.clone(),
        query: req.raw_query.clone(),
        content_type: req.headers.get("content-type").cloned().unwrap_or_default(),
        body_rv: body
            .as_ref()
            .and_then(|b| b["metadata"]["resourceVersion"].as_str())
            .map(str::to_owned),
        token: token.clone(),
        status: 0,
    };

    // Authentication, then faults, then RBAC, as the real chain (authn, filters, authz).
    let fault = {
        let mut st = shared.store.lock().unwrap();
        let authenticated =
            req.client_cert || token.as_ref().is_some_and(|t| st.tokens.contains(t));
        if !authenticated {
            recorded.status = 401;
            st.requests.push(recorded);
            drop(st);
            respond(conn, 401, &status_body(401, "Unauthorized", "Unauthorized"));
            return;
        }
        if let Some((code, reason)) = st.outage {
            recorded.status = code;
            st.requests.push(recorded);
            drop(st);
            respond(
                conn,
                code,
                &status_body(code, reason, &format!("injected outage {code}")),
            );
            return;
        }
        let dry_run = req.query.get("dryRun").is_some_and(|d| d == "All");
        let at = st.faults.iter().position(|f| {
            f.verb == verb
                && match &f.target {
                    None => true,
                    Some((r, n)) => *r == res && *n == obj_name && !dry_run,
                }
                && f.when.is_none_or(|when| body.as_ref().is_some_and(when))
        });
        at.and_then(|i| st.faults.remove(i)).map(|f| f.fault)
    };
    let mut drop_after = false;
    let mut hold = Duration::ZERO;
    match fault {
        Some(Fault::Delay(d)) => std::thread::sleep(d),
        Some(Fault::Status(code, reason)) => {
            recorded.status = code;
            shared.store.lock().unwrap().requests.push(recorded);
            respond(
                conn,
                code,
                &status_body(code, reason, &format!("injected {code}")),
            );
            return;
        }
        Some(Fault::DropAfterCommit) => drop_after = true,
        Some(Fault::HoldAfterCommit(d)) => {
            drop_after = true;
            hold = d;
        }
        None => {}
    }

    let user = if req.client_cert {
        "tokend-client-cert".to_owned()
    } else {
        format!("system:serviceaccount:{ns}:tokend")
    };
    let authz_name =
        if verb == "create" || verb == "list" || (verb == "watch" && selected.is_none()) {
            None
        } else {
            Some(obj_name.clone())
        };
    let forbidden = |v: &str| -> Option<Value> {
        let st = shared.store.lock().unwrap();
        let roles = st.roles.as_ref()?;
        let allowed = roles.iter().any(|r| {
            r.verb == v
                && r.resource == res.plural()
                && (r.name.is_none() || (r.name.is_some() && r.name == authz_name))
        });
        if allowed {
            return None;
        }
        let subject = match &authz_name {
            Some(n) => format!("{} \"{n}\"", res.qualified()),
            None => res.qualified().to_owned(),
        };
        let message = format!(
            "{subject} is forbidden: User \"{user}\" cannot {v} resource \"{}\" in API group \"{}\" in the namespace \"{ns}\"",
            res.plural(),
            res.group()
        );
        Some(status_body(403, "Forbidden", &message))
    };
    if let Some(denied) = forbidden(verb) {
        recorded.status = 403;
        shared.store.lock().unwrap().requests.push(recorded);
        respond(conn, 403, &denied);
        return;
    }

    let dry_run = req.query.get("dryRun").is_some_and(|d| d == "All");
    let key: Key = (res, ns.to_owned(), obj_name.clone());
    let outcome = match verb {
        "get" => {
            let st = shared.store.lock().unwrap();
            match st.objects.get(&key) {
                Some(o) => Outcome::Answer(200, o.clone()),
                None => Outcome::Answer(404, not_found(res, &obj_name)),
            }
        }
        "list" => {
            let st = shared.store.lock().unwrap();
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|((r, n, name), _)| {
                    *r == res && n == ns && selected.as_ref().is_none_or(|s| s == name)
                })
                .map(|(_, o)| o.clone())
                .collect();
            Outcome::Answer(
                200,
                json!({"kind": format!("{}List", res.kind()), "apiVersion": res.api_version(),
                "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
            )
        }
        "watch" => {
            recorded.status = 200;
            shared.store.lock().unwrap().requests.push(recorded.clone());
            stream_watch(conn, shared, &req, res, ns, selected);
            Outcome::Streamed
        }
        "create" => match body {
            None => Outcome::Answer(
                400,
                status_body(400, "BadRequest", "the body is not a JSON object"),
            ),
            Some(obj) => {
                let mut st = shared.store.lock().unwrap();
                if obj_name.is_empty() {
                    Outcome::Answer(
                        422,
                        status_body(
                            422,
                            "Invalid",
                            "metadata.name: Required value: name or generateName is required",
                        ),
                    )
                } else if st.objects.contains_key(&key) {
                    Outcome::Answer(
                        409,
                        status_body(
                            409,
                            "AlreadyExists",
                            &format!("{} \"{obj_name}\" already exists", res.qualified()),
                        ),
                    )
                } else if obj["metadata"]["resourceVersion"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty())
                {
                    Outcome::Answer(
                        400,
                        status_body(
                            400,
                            "BadRequest",
                            "resourceVersion should not be set on objects to be created",
                        ),
                    )
                } else if dry_run {
                    let mut o = obj;
                    o["metadata"]["namespace"] = json!(ns);
                    o["metadata"]["uid"] = json!("uid-dry-run");
                    Outcome::Answer(201, o)
                } else {
                    commit(&mut st, key.clone(), "ADDED", obj, res);
                    Outcome::Answer(201, st.objects[&key].clone())
                }
            }
        },
        "update" => match body {
            None => Outcome::Answer(
                400,
                status_body(400, "BadRequest", "the body is not a JSON object"),
            ),
            Some(obj) => {
                let mut st = shared.store.lock().unwrap();
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                match st.objects.get(&key).cloned() {
                    _ if body_name_mismatch(&obj, &obj_name) => Outcome::Answer(
                        400,
                        status_body(
                            400,
                            "BadRequest",
                            "the name of the object does not match the name on the URL",
                        ),
                    ),
                    None => Outcome::Answer(404, not_found(res, &obj_name)),
                    Some(_) if rv.is_empty() && res == Res::Leases => Outcome::Answer(
                        422,
                        status_body(
                            422,
                            "Invalid",
                            &format!(
                                "Lease.coordination.k8s.io \"{obj_name}\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                            ),
                        ),
                    ),
                    Some(cur)
                        if !rv.is_empty() && cur["metadata"]["resourceVersion"] != json!(rv) =>
                    {
                        Outcome::Answer(409, conflict(res, &obj_name))
                    }
                    Some(cur) => {
                        if rv.is_empty() && !dry_run {
                            st.unconditional_updates += 1;
                        }
                        let mut o = obj;
                        o["metadata"]["uid"] = cur["metadata"]["uid"].clone();
                        o["metadata"]["creationTimestamp"] =
                            cur["metadata"]["creationTimestamp"].clone();
                        if dry_run {
                            o["metadata"]["resourceVersion"] =
                                cur["metadata"]["resourceVersion"].clone();
                            Outcome::Answer(200, o)
                        } else {
                            commit(&mut st, key.clone(), "MODIFIED", o, res);
                            Outcome::Answer(200, st.objects[&key].clone())
                        }
                    }
                }
            }
        },
        "patch" => apply(shared, &req, res, &key, body, dry_run),
        _ => unreachable!(),
    };
    let Outcome::Answer(code, answer) = outcome else {
        return;
    };
    recorded.status = code;
    shared.store.lock().unwrap().requests.push(recorded);
    shared.changed.notify_all();
    if drop_after {
        // Committed; the client never learns it.
        std::thread::sleep(hold);
        return;
    }
    respond(conn, code, &answer);
}

fn body_name_mismatch(obj: &Value, name: &str) -> bool {
    obj["metadata"]["name"].as_str().is_some_and(|n| n != name)
}

fn not_found(res: Res, name: &str) -> Value {
    status_body(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", res.qualified()),
    )
}

fn conflict(res: Res, name: &str) -> Value {
    status_body(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            res.qualified()
        ),
    )
}

/// Server-side apply, simplified: `data`, `metadata.labels` and `metadata.annotations`
/// are merged key by key, `type` and a Lease's `spec` replaced; no managedFields.
fn apply(
    shared: &Shared,
    req: &Request,
    res: Res,
    key: &Key,
    body: Option<Value>,
    dry_run: bool,
) -> Outcome {
    if req.headers.get("content-type").map(String::as_str) != Some("application/apply-patch+yaml") {
        return Outcome::Answer(
            415,
            status_body(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format",
            ),
        );
    }
    if req.query.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Outcome::Answer(
            400,
            status_body(
                400,
                "BadRequest",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ),
        );
    }
    let Some(patch) = body else {
        return Outcome::Answer(
            400,
            status_body(
                400,
                "BadRequest",
                "the body is not JSON (the fake reads JSON-as-YAML only)",
            ),
        );
    };
    if body_name_mismatch(&patch, &key.2) {
        return Outcome::Answer(
            400,
            status_body(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            ),
        );
    }
    let mut st = shared.store.lock().unwrap();
    let precondition = patch["metadata"]["resourceVersion"]
        .as_str()
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    let current = st.objects.get(key).cloned();
    if let Some(rv) = &precondition {
        match &current {
            Some(cur) if cur["metadata"]["resourceVersion"] == json!(rv) => {}
            // A precondition on an absent object cannot hold either.
            _ => return Outcome::Answer(409, conflict(res, &key.2)),
        }
    }
    let existed = current.is_some();
    let mut merged = current.unwrap_or_else(|| json!({"metadata": {"name": key.2}}));
    for field in ["/metadata/labels", "/metadata/annotations", "/data"] {
        if let Some(Value::Object(add)) = patch.pointer(field) {
            let (parent, leaf) = field.rsplit_once('/').unwrap();
            let target = if parent.is_empty() {
                &mut merged
            } else {
                merged.pointer_mut(parent).unwrap()
            };
            let slot = &mut target[leaf];
            if !slot.is_object() {
                *slot = json!({});
            }
            for (k, v) in add {
                slot[k] = v.clone();
            }
        }
    }
    for field in ["type", "spec"] {
        if !patch[field].is_null() {
            merged[field] = patch[field].clone();
        }
    }
    if dry_run {
        return Outcome::Answer(if existed { 200 } else { 201 }, merged);
    }
    let kind = if existed { "MODIFIED" } else { "ADDED" };
    commit(&mut st, key.clone(), kind, merged, res);
    Outcome::Answer(if existed { 200 } else { 201 }, st.objects[key].clone())
}

/// Streams events (chunked) until `timeoutSeconds`, the fake stops, or the client leaves.
fn stream_watch(
    conn: &mut Conn,
    shared: &Shared,
    req: &Request,
    res: Res,
    ns: &str,
    selected: Option<String>,
) {
    let bookmarks = req
        .query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1800u64);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let from = req
        .query
        .get("resourceVersion")
        .cloned()
        .unwrap_or_default();
    if write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").is_err() {
        return;
    }
    let matches =
        |key: &Key| key.0 == res && key.1 == ns && selected.as_ref().is_none_or(|s| *s == key.2);
    let mut st = shared.store.lock().unwrap();
    let mut sent_bookmarks = st.bookmarks;
    let epoch = st.watch_epoch;
    let mut lines: Vec<Value> = Vec::new();
    let mut last: u64;
    if from.is_empty() || from == "0" {
        // "Any version": the current state as ADDED, then changes.
        for (key, obj) in &st.objects {
            if matches(key) {
                lines.push(json!({"type": "ADDED", "object": obj}));
            }
        }
        last = st.rv;
    } else {
        let Ok(n) = from.parse::<u64>() else {
            drop(st);
            let _ = chunk(
                conn,
                &json!({"type": "ERROR", "object": status_body(400, "BadRequest", "invalid resourceVersion")}),
            );
            let _ = write!(conn, "0\r\n\r\n");
            return;
        };
        if n < st.oldest {
            let message = format!("too old resource version: {n} ({})", st.oldest);
            drop(st);
            let _ = chunk(
                conn,
                &json!({"type": "ERROR", "object": status_body(410, "Expired", &message)}),
            );
            let _ = write!(conn, "0\r\n\r\n");
            return;
        }
        last = n;
    }
    loop {
        for e in st.history.iter().filter(|e| e.rv > last) {
            if matches(&e.key) {
                lines.push(json!({"type": e.kind, "object": e.object}));
            }
        }
        last = st.rv;
        if bookmarks && st.bookmarks != sent_bookmarks {
            sent_bookmarks = st.bookmarks;
            lines.push(json!({"type": "BOOKMARK", "object": {"kind": res.kind(), "apiVersion": res.api_version(),
                "metadata": {"resourceVersion": st.rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}}}));
        }
        if !lines.is_empty() {
            drop(st);
            for line in lines.drain(..) {
                if chunk(conn, &line).is_err() {
                    return;
                }
            }
            st = shared.store.lock().unwrap();
            continue;
        }
        if shared.stop.load(Ordering::SeqCst)
            || Instant::now() >= deadline
            || st.watch_epoch != epoch
        {
            drop(st);
            let _ = write!(conn, "0\r\n\r\n");
            return;
        }
        st = shared
            .changed
            .wait_timeout(st, Duration::from_millis(100))
            .unwrap()
            .0;
    }
}

fn chunk(conn: &mut Conn, line: &Value) -> std::io::Result<()> {
    let text = format!("{line}\n");
    write!(conn, "{:x}\r\n{text}\r\n", text.len())?;
    conn.flush()
}

// ------------------------------------------------------------------ TLS

/// A CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI), and
/// the fake's rustls config: client certificates from the CA authenticate, none is needed.
fn make_tls(dir: &Path) -> (TlsFiles, rustls::ServerConfig) {
    // The same test PKI as the etcd cluster's (a CA, a server and a client certificate).
    let files = crate::support::etcd::make_certs(dir);
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.server_cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&files.server_key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.ca).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    (
        TlsFiles {
            ca: files.ca,
            client_cert: files.client_cert,
            client_key: files.client_key,
        },
        config,
    )
}
