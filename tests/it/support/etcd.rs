//! Real etcd for tests: a 1- or 3-member cluster on free loopback ports in a temp dir
//! (Debian's `etcd` on PATH), members that can be killed, stopped and restarted, and a
//! TCP proxy the test controls for partitions.
//!
//! No process outlives the test: each member runs under a tiny `sh` that holds a pipe
//! from this process and kills its etcd when the pipe closes — on drop, and also when
//! the test binary itself is killed (where no destructor runs).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a fresh cluster may take to elect a leader on a loaded machine.
const HEALTH_DEADLINE: Duration = Duration::from_secs(40);

/// Fails (not skips) the test when etcd is missing: CI installs it.
pub fn require_etcd() {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("etcd").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`etcd` is not on PATH: install etcd-server (apt-get install etcd-server); etcdctl comes with etcd-client"
    );
}

pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    extra: Vec<String>,
    tls: Option<Tls>,
}

/// PEM files of a throw-away CA, etcd's server certificate and a client certificate.
#[derive(Clone, Debug)]
pub struct Tls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    /// Plain-HTTP /health and /metrics, also when the client URL is https.
    metrics: u16,
    running: Option<Running>,
}

struct Running {
    /// The `sh` wrapper; closing its stdin makes it kill etcd.
    wrapper: Child,
    stdin: Option<ChildStdin>,
    pid: Pid,
}

impl EtcdCluster {
    /// `n` members (1 or 3), healthy (a leader elected) when this returns.
    pub fn start(n: usize) -> EtcdCluster {
        EtcdCluster::start_with(n, &[])
    }

    /// With extra etcd flags for every member (`--auth-token-ttl=1`, …).
    pub fn start_with(n: usize, extra: &[&str]) -> EtcdCluster {
        EtcdCluster::start_opts(n, extra, false)
    }

    /// Client URLs on https with a fresh CA, and client certificates required
    /// (`--client-cert-auth`); [`EtcdCluster::tls`] has the files.
    pub fn start_tls(n: usize) -> EtcdCluster {
        EtcdCluster::start_opts(n, &[], true)
    }

    fn start_opts(n: usize, extra: &[&str], tls: bool) -> EtcdCluster {
        require_etcd();
        // Free ports are found by binding and releasing them, so another process may grab
        // one in between; then etcd exits at once and a fresh set of ports is tried.
        let mut errors = Vec::new();
        for _ in 0..3 {
            let cluster = EtcdCluster::spawn(n, extra, tls);
            match cluster.wait_all_healthy() {
                Ok(()) => return cluster,
                Err(e) => errors.push(e),
            }
        }
        panic!("etcd cluster did not start:\n{}", errors.join("\n---\n"));
    }

    fn spawn(n: usize, extra: &[&str], tls: bool) -> EtcdCluster {
        let ports = free_ports(3 * n);
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: ports[3 * i],
                peer: ports[3 * i + 1],
                metrics: ports[3 * i + 2],
                running: None,
            })
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = tls.then(|| make_certs(dir.path()));
        let mut cluster = EtcdCluster {
            dir,
            members,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls,
        };
        for i in 0..n {
            cluster.start_member(i);
        }
        cluster
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client)
    }

    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.endpoint(i)).collect()
    }

    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].client))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    /// (Re)starts member `i` on its ports and data dir; does not wait for health.
    pub fn start_member(&mut self, i: usize) {
        assert!(self.members[i].running.is_none(), "member {i} is running");
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        // One token per cluster (its first peer port): members of other test clusters that
        // reach these ports by accident are rejected instead of joining.
        let token = format!("tokend-test-{}", self.members[0].peer);
        let m = &self.members[i];
        let client = self.endpoint(i);
        let metrics = format!("http://127.0.0.1:{}", m.metrics);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let data = self.dir.path().join(format!("{}.data", m.name));
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"etcd "$@" >>"$ETCD_LOG" 2>&1 & echo $!; read _; kill -9 $! 2>/dev/null; wait"#)
            .arg("sh")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &token])
            .args(["--listen-metrics-urls", &metrics])
            .args(["--logger", "zap"])
            .args(&self.extra)
            .env("ETCD_LOG", self.log_path(i))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let mut wrapper = cmd.spawn().expect("spawn sh for etcd");
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("etcd pid from the wrapper");
        let pid = Pid::from_raw(line.trim().parse().expect("etcd pid"));
        let stdin = wrapper.stdin.take();
        self.members[i].running = Some(Running {
            wrapper,
            stdin,
            pid,
        });
    }

    /// `kill -9` member `i` (a crash: no graceful leader transfer).
    pub fn kill_member(&mut self, i: usize) {
        self.end(i, Signal::SIGKILL);
    }

    /// SIGTERM member `i` and wait for it to exit (a clean shutdown).
    pub fn stop_member(&mut self, i: usize) {
        self.end(i, Signal::SIGTERM);
    }

    pub fn restart_member(&mut self, i: usize) {
        self.stop_member(i);
        self.start_member(i);
        self.wait_healthy(i).unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn kill_all(&mut self) {
        for i in 0..self.len() {
            if self.members[i].running.is_some() {
                self.kill_member(i);
            }
        }
    }

    pub fn start_all(&mut self) {
        for i in 0..self.len() {
            if self.members[i].running.is_none() {
                self.start_member(i);
            }
        }
        self.wait_all_healthy().unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGSTOP / SIGCONT member `i` (a GC pause or a VM freeze).
    pub fn pause_member(&self, i: usize, paused: bool) {
        let pid = self.members[i].running.as_ref().expect("running").pid;
        let sig = if paused {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        kill(pid, sig).expect("signal etcd");
    }

    fn end(&mut self, i: usize, signal: Signal) {
        let Some(mut running) = self.members[i].running.take() else {
            return;
        };
        let _ = kill(running.pid, Signal::SIGCONT);
        let _ = kill(running.pid, signal);
        let deadline = Instant::now() + Duration::from_secs(20);
        while alive(running.pid) {
            if Instant::now() > deadline {
                let _ = kill(running.pid, Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(running.stdin.take());
        let _ = running.wrapper.wait();
    }

    /// Waits until member `i` answers /health with a leader.
    pub fn wait_healthy(&self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + HEALTH_DEADLINE;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.members[i].metrics));
        loop {
            if let Some(running) = &self.members[i].running
                && !alive(running.pid)
            {
                return Err(format!(
                    "etcd member {i} exited; its log {}:\n{}",
                    self.log_path(i).display(),
                    tail(&self.log_path(i))
                ));
            }
            if let Ok(body) = http_get(addr, "/health")
                && body.contains(r#""health":"true""#)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd member {i} not healthy after {HEALTH_DEADLINE:?}; its log:\n{}",
                    tail(&self.log_path(i))
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_all_healthy(&self) -> Result<(), String> {
        (0..self.len())
            .filter(|&i| self.members[i].running.is_some())
            .try_for_each(|i| self.wait_healthy(i))
    }

    /// The index of the member that leads, from `etcdctl endpoint status`.
    pub fn leader(&self) -> Option<usize> {
        assert!(self.tls.is_none(), "leader() speaks plain HTTP");
        (0..self.len()).find(|&i| {
            self.members[i].running.is_some()
                && http_post(self.client_addr(i), "/v3/maintenance/status", "{}")
                    .ok()
                    .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                    .is_some_and(|v| {
                        v["leader"].is_string() && v["leader"] == v["header"]["member_id"]
                    })
        })
    }

    /// Moves raft leadership to member `i` (etcd's own `move-leader`), so a test can
    /// kill the leader on purpose.
    pub fn make_leader(&self, i: usize) {
        let deadline = Instant::now() + HEALTH_DEADLINE;
        while self.leader() != Some(i) {
            assert!(Instant::now() < deadline, "member {i} never became leader");
            let status = http_post(self.client_addr(i), "/v3/maintenance/status", "{}")
                .expect("status of the new leader");
            let v: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
            let id: u64 = v["header"]["member_id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("member_id");
            // Fails harmlessly while an election is running; the loop retries.
            let _ = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", self.endpoints().join(",")))
                .args(["move-leader", &format!("{id:x}")])
                .output();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `etcdctl --endpoints=<all> ARGS`, asserting success.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints().join(",")))
            .args(args)
            .output()
            .expect("etcdctl (apt-get install etcd-client)");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.end(i, Signal::SIGKILL);
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 (also usable as a client certificate: with
/// `--client-cert-auth`, etcd's gateway presents it to etcd's own gRPC server) and a
/// client certificate, made with the openssl CLI.
pub(crate) fn make_certs(dir: &Path) -> Tls {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=tokend test CA",
            ],
        ]
        .concat(),
    );
    for (name, usage) in [
        ("server", "serverAuth,clientAuth"),
        ("client", "clientAuth"),
    ] {
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"),
        )
        .unwrap();
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
    Tls {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

/// Alive and not a zombie (a killed etcd stays a zombie until its `sh` reaps it).
fn alive(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Ports for etcd members, below the kernel's ephemeral range (32768+): a port chosen by
/// `bind(0)` and released can be handed out again to another test, or become the source
/// port of etcd's own outgoing peer connections, and then two clusters cross-talk
/// ("cluster ID mismatch"). Each test binary starts at a pid-dependent offset and hands
/// out each port once; a port some other program holds is skipped.
fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::AtomicU32;
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(
        0,
        1 + std::process::id() * 97 % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    http(
        addr,
        &format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n"),
    )
}

fn http_post(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<String> {
    http(
        addr,
        &format!(
            "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// A one-shot HTTP/1.0 exchange; returns the body.
fn http(addr: SocketAddr, request: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(request.as_bytes())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

// ------------------------------------------------------------------ TCP proxy

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Forward,
    /// Connections are accepted and bytes read, but nothing is passed on in either
    /// direction: a partition where packets vanish (the client can only time out).
    Blackhole,
}

/// A loopback TCP proxy to one upstream, for partitions the test controls.
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    acceptor: Option<JoinHandle<()>>,
}

struct ProxyState {
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    listener: Mutex<Option<TcpListener>>,
    conns: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

impl TcpProxy {
    pub fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            upstream,
            mode: Mutex::new(Mode::Forward),
            listener: Mutex::new(Some(listener)),
            conns: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let s = state.clone();
        let acceptor = std::thread::spawn(move || accept_loop(s));
        TcpProxy {
            addr,
            state,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every open connection (both directions); new ones are still handled.
    pub fn cut(&self) {
        for c in self.state.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Silently drops all traffic, on open and new connections.
    pub fn blackhole(&self) {
        *self.state.mode.lock().unwrap() = Mode::Blackhole;
    }

    /// Closes the listening socket: new connections are refused.
    pub fn refuse(&self) {
        self.state.listener.lock().unwrap().take();
    }

    /// Forwards again (and listens again on the same port).
    pub fn restore(&self) {
        *self.state.mode.lock().unwrap() = Mode::Forward;
        let mut listener = self.state.listener.lock().unwrap();
        if listener.is_none() {
            let l = TcpListener::bind(self.addr).expect("re-bind proxy port");
            l.set_nonblocking(true).unwrap();
            *listener = Some(l);
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(state: Arc<ProxyState>) {
    while !state.stop.load(Ordering::SeqCst) {
        let accepted = match &*state.listener.lock().unwrap() {
            Some(l) => l.accept().ok(),
            None => None,
        };
        let Some((client, _)) = accepted else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let _ = client.set_nonblocking(false);
        let Ok(upstream) = TcpStream::connect(state.upstream) else {
            continue;
        };
        let mut conns = state.conns.lock().unwrap();
        for s in [&client, &upstream] {
            if let Ok(c) = s.try_clone() {
                conns.push(c);
            }
        }
        drop(conns);
        for (from, to) in [
            (client.try_clone(), upstream.try_clone()),
            (Ok(upstream), Ok(client)),
        ] {
            if let (Ok(from), Ok(to)) = (from, to) {
                let s = state.clone();
                std::thread::spawn(move || pump(from, to, s));
            }
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<ProxyState>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if *state.mode.lock().unwrap() == Mode::Blackhole {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
