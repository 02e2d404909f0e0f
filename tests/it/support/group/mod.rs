//! A tokend group on loopback for the shared-state tests: a store (a real etcd, or the fake
//! Kubernetes API server, `backend.rs`), the provider emulator, N `tokend run` processes
//! with the same config, and the oracles HA.md §5 asks for (`oracles.rs`), recorded while
//! the test runs:
//! - every commit of the shared record, from the store's own history, with its instant;
//! - every token each process's output held, with the instant it first appeared.

#![allow(dead_code)]

mod backend;
mod oracles;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use backend::{Backend, KUBE_TOKEN, LEASE, NAMESPACE, STATE_SECRET};
pub use oracles::{Commit, Shown};

use crate::support::etcd::{EtcdCluster, TcpProxy, require_etcd};
use crate::support::kube_fake::KubeFake;
use crate::support::{BIN, EmulatorConfig, Env};

pub const GROUP: &str = "g1";
pub const CRED: &str = "vandar-main";

/// Short timings so that a test sees several refreshes, leader changes and takeovers in
/// seconds (HA.md §5.2 uses the same proportions).
pub const HA_TIMINGS: &str = "  lease: 2s\n  claim_ttl: 3s\n  takeover_after: 6s\n";

pub struct Group {
    pub env: Env,
    pub backend: Backend,
    /// One per process; a process talks to the store through its proxy (to cut it off alone).
    pub proxies: Vec<TcpProxy>,
    pub nodes: Vec<Option<Node>>,
    /// What the etcd recorder saw (the Kubernetes fake keeps its own history).
    commits: Arc<Mutex<Vec<Commit>>>,
    pub outputs: Arc<Mutex<Vec<Shown>>>,
    stop: Arc<AtomicBool>,
    watchers: Vec<JoinHandle<()>>,
    extra: String,
    /// Set: every node lists these etcd endpoints (no proxy), to lose members one by one.
    pub direct: Option<Vec<String>>,
    /// Each node's `listen` port (HTTP endpoints).
    pub ports: Vec<u16>,
    /// The `ha` timing keys ([`HA_TIMINGS`] unless a test needs others).
    pub timings: String,
    /// The longest this test process was kept from running (µs): a machine that stalls
    /// every process for a second under load stalls tokend too, so the lag oracle allows it.
    stalled_us: Arc<std::sync::atomic::AtomicU64>,
}

/// An emulator whose Vandar tokens live `lifetime` and whose refresh tokens stay valid
/// after their access token expired (outages in these tests outlast the tokens).
pub fn emulator(lifetime: Duration) -> EmulatorConfig {
    EmulatorConfig {
        vandar_lifetime: lifetime,
        vandar_refresh_needs_live_access: false,
        ..EmulatorConfig::default()
    }
}

impl Group {
    /// `n` processes against a fresh one-member etcd; `extra` is appended to each
    /// credential (e.g. a `refresh:` policy).
    pub fn start(n: usize, emu: EmulatorConfig, extra: &str) -> Group {
        require_etcd();
        let etcd = EtcdCluster::start(1);
        etcd.wait_all_healthy().expect("etcd healthy");
        Group::with_etcd(n, emu, extra, etcd)
    }

    /// `n` processes sharing state through a fresh fake Kubernetes API server (`ha.backend:
    /// kubernetes`), each through its own proxy and kubeconfig.
    pub fn start_kube(n: usize, emu: EmulatorConfig, extra: &str) -> Group {
        let fake = KubeFake::start(&[KUBE_TOKEN]);
        let g = Group::with_backend(n, emu, extra, Backend::Kube(fake));
        // The test's own view of the state, straight to the fake (no proxy to cut).
        backend::write_kubeconfig(&g.test_kubeconfig(), &g.kube().url());
        g
    }

    /// `n` processes that list every member of `etcd` directly (no proxies).
    pub fn direct(n: usize, emu: EmulatorConfig, extra: &str, etcd: EtcdCluster) -> Group {
        let mut g = Group::with_etcd(n, emu, extra, etcd);
        g.direct = Some(g.etcd().endpoints());
        for i in 0..n {
            g.write_config(i);
        }
        g
    }

    pub fn with_etcd(n: usize, emu: EmulatorConfig, extra: &str, etcd: EtcdCluster) -> Group {
        let endpoint = etcd.endpoint(0);
        let mut g = Group::with_backend(n, emu, extra, Backend::Etcd(etcd));
        let recorder = backend::record_etcd_commits(endpoint, g.commits.clone(), g.stop.clone());
        g.watchers.push(recorder);
        g
    }

    fn with_backend(n: usize, emu: EmulatorConfig, extra: &str, backend: Backend) -> Group {
        let env = Env::with(emu);
        env.secret("vandar-refresh", "def502seed\n");
        let proxies = (0..n)
            .map(|_| TcpProxy::start(backend.upstream()))
            .collect();
        let mut g = Group {
            env,
            backend,
            proxies,
            nodes: (0..n).map(|_| None).collect(),
            commits: Arc::default(),
            outputs: Arc::new(Mutex::new(vec![Vec::new(); n])),
            stop: Arc::default(),
            watchers: Vec::new(),
            extra: extra.to_owned(),
            direct: None,
            ports: (0..n).map(|_| crate::support::free_port()).collect(),
            timings: HA_TIMINGS.to_owned(),
            stalled_us: Arc::default(),
        };
        for i in 0..n {
            g.write_config(i);
        }
        g.watch_outputs();
        g.watch_stalls();
        g
    }

    /// The etcd cluster of an etcd group.
    pub fn etcd(&self) -> &EtcdCluster {
        match &self.backend {
            Backend::Etcd(etcd) => etcd,
            Backend::Kube(_) => panic!("this group keeps its state in Kubernetes, not etcd"),
        }
    }

    pub fn etcd_mut(&mut self) -> &mut EtcdCluster {
        match &mut self.backend {
            Backend::Etcd(etcd) => etcd,
            Backend::Kube(_) => panic!("this group keeps its state in Kubernetes, not etcd"),
        }
    }

    /// The fake API server of a Kubernetes group.
    pub fn kube(&self) -> &KubeFake {
        match &self.backend {
            Backend::Kube(fake) => fake,
            Backend::Etcd(_) => panic!("this group keeps its state in etcd, not Kubernetes"),
        }
    }

    /// A kubeconfig straight to the fake, for the test's own reads and for `tokend` commands
    /// that must not go through a node's proxy.
    pub fn test_kubeconfig(&self) -> PathBuf {
        self.env.path("kubeconfig-test")
    }

    pub fn config_path(&self, i: usize) -> PathBuf {
        self.env.path(&format!("config-{i}.yaml"))
    }

    pub fn output_path(&self, i: usize) -> PathBuf {
        self.env.path(&format!("out-{i}/vandar.token"))
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.env.path(&format!("daemon-{i}.log"))
    }

    /// Other `ha` timings for every node (rewrites the configs).
    pub fn set_timings(&mut self, timings: &str) {
        self.timings = timings.to_owned();
        for i in 0..self.nodes.len() {
            self.write_config(i);
        }
    }

    pub fn write_config(&self, i: usize) {
        self.write_config_with(i, "vandar-refresh", &self.extra.clone());
    }

    /// Node `i`'s config with the refresh seed from `secrets/<seed>` and `extra` in the
    /// credential (a rolling update gives nodes different ones).
    pub fn write_config_with(&self, i: usize, seed: &str, extra: &str) {
        let server = match &self.direct {
            Some(endpoints) => endpoints.join(", "),
            None => self.proxies[i].url(),
        };
        let ha = self
            .backend
            .ha_block(i, &server, &self.timings, self.env.dir.path());
        let text = format!(
            "state_dir: {dir}/state-{i}\nlisten: 127.0.0.1:{port}\n{ha}credentials:\n  - name: {CRED}\n    provider: vandar\n    base_url: {url}\n    refresh_token: {{ file: {dir}/secrets/{seed} }}\n    timeout: 1s\n    retry: {{ initial: 100ms, max: 500ms, permanent: 2s }}\n{extra}    outputs:\n      - file: {dir}/out-{i}/vandar.token\n",
            dir = self.env.dir.path().display(),
            url = self.env.url(),
            port = self.ports[i],
        );
        std::fs::write(self.config_path(i), text).unwrap();
    }

    pub fn command(&self, i: usize) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(self.config_path(i))
            .arg("run")
            .env_remove("RUST_LOG")
            .env_remove("TOKEND_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("POD_NAME")
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .current_dir(self.env.dir.path());
        cmd
    }

    pub fn start_node(&mut self, i: usize) {
        self.start_node_with(i, &[]);
    }

    pub fn start_node_with(&mut self, i: usize, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        let mut cmd = self.command(i);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tokend run");
        self.nodes[i] = Some(Node { child });
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start_node(i);
        }
    }

    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node running")
    }

    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut n) = self.nodes[i].take() {
            n.kill();
        }
    }

    /// SIGTERM, and waits for the exit (the clean stop: resign, in-flight commits land).
    pub fn stop_node(&mut self, i: usize) -> Option<i32> {
        let mut n = self.nodes[i].take()?;
        n.signal(nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = n.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        n.kill();
        None
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| format!("--- node {i}\n{}", self.log(i)))
            .collect()
    }

    /// The node whose log says it leads now (the last leading/following line decides).
    pub fn leader(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.nodes[i].is_some()
                && self
                    .log(i)
                    .lines()
                    .rev()
                    .find(|l| l.contains("event=\"leading\"") || l.contains("event=\"following\""))
                    .is_some_and(|l| l.contains("event=\"leading\""))
        })
    }

    /// The shared record of the group's credential, read from the store like any state.
    pub fn state(&self) -> crate::support::StateView {
        let source = match &self.backend {
            Backend::Etcd(etcd) => crate::support::StateSource::Etcd {
                endpoints: etcd.endpoints(),
                prefix: "/tokend/".to_owned(),
                group: GROUP.to_owned(),
            },
            Backend::Kube(_) => crate::support::StateSource::Kube {
                kubeconfig: self.test_kubeconfig(),
                namespace: NAMESPACE.to_owned(),
                group: GROUP.to_owned(),
            },
        };
        source.read(CRED)
    }

    /// Waits until a node says it leads, and returns it.
    pub fn wait_leader(&self) -> usize {
        let mut leader = None;
        assert!(
            crate::support::wait_for(Duration::from_secs(20), || {
                leader = self.leader();
                leader.is_some()
            }),
            "no leader\n{}",
            self.logs()
        );
        leader.unwrap()
    }

    pub fn commits(&self) -> Vec<Commit> {
        self.backend.commits(&self.commits)
    }

    pub fn last_commit(&self) -> Option<Commit> {
        self.commits().pop()
    }

    pub fn output(&self, i: usize) -> String {
        std::fs::read_to_string(self.output_path(i)).unwrap_or_default()
    }

    /// Waits until the shared chain has reached `chain_gen`.
    pub fn wait_chain_gen(&self, chain_gen: u64, timeout: Duration) -> bool {
        crate::support::wait_for(timeout, || {
            self.last_commit().is_some_and(|c| c.chain_gen >= chain_gen)
        })
    }
}

/// One `tokend run` process of the group.
pub struct Node {
    pub child: std::process::Child,
}

impl Node {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for n in self.nodes.iter_mut().flatten() {
            n.kill();
        }
        for w in self.watchers.drain(..) {
            let _ = w.join();
        }
    }
}
