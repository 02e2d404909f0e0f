//! A tokend group on loopback for the shared-state tests: a real etcd, the provider
//! emulator, N `tokend run` processes with the same config, and the oracles HA.md §5 asks
//! for, recorded while the test runs:
//! - every commit of the shared record, from etcd's own history (a watch from revision 1),
//!   with the instant the test saw it;
//! - every token each process's output held, with the instant it first appeared.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::etcd::{EtcdCluster, TcpProxy, require_etcd};
use crate::support::{BIN, EmulatorConfig, Env};

pub const GROUP: &str = "g1";
pub const CRED: &str = "vandar-main";

/// Short timings so that a test sees several refreshes, leader changes and takeovers in
/// seconds (HA.md §5.2 uses the same proportions).
pub const HA_TIMINGS: &str = "  lease: 2s\n  claim_ttl: 3s\n  takeover_after: 6s\n";

/// One committed version of the shared record.
#[derive(Clone, Debug)]
pub struct Commit {
    pub seen: Instant,
    pub mod_revision: i64,
    pub chain_gen: u64,
    pub token_gen: u64,
    pub token: Option<String>,
    pub refresh_token: Option<String>,
    pub claim_holder: Option<String>,
}

/// What one node's output held, in order: (token, first seen).
pub type Shown = Vec<(String, Instant)>;

pub struct Group {
    pub env: Env,
    pub etcd: EtcdCluster,
    /// One per process; a process talks to etcd through its proxy (to cut it off alone).
    pub proxies: Vec<TcpProxy>,
    pub nodes: Vec<Option<Node>>,
    pub commits: Arc<Mutex<Vec<Commit>>>,
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

    /// `n` processes that list every member of `etcd` directly (no proxies).
    pub fn direct(n: usize, emu: EmulatorConfig, extra: &str, etcd: EtcdCluster) -> Group {
        let mut g = Group::with_etcd(n, emu, extra, etcd);
        g.direct = Some(g.etcd.endpoints());
        for i in 0..n {
            g.write_config(i);
        }
        g
    }

    pub fn with_etcd(n: usize, emu: EmulatorConfig, extra: &str, etcd: EtcdCluster) -> Group {
        let env = Env::with(emu);
        env.secret("vandar-refresh", "def502seed\n");
        let proxies = (0..n)
            .map(|_| TcpProxy::start(etcd.client_addr(0)))
            .collect();
        let mut g = Group {
            env,
            etcd,
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
        g.watch_commits();
        g.watch_outputs();
        g.watch_stalls();
        g
    }

    /// Sleeps 10 ms in a loop and records the worst overshoot: how long the machine kept a
    /// runnable process waiting.
    fn watch_stalls(&mut self) {
        let (stalled, stop) = (self.stalled_us.clone(), self.stop.clone());
        self.watchers.push(std::thread::spawn(move || {
            let tick = Duration::from_millis(10);
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                std::thread::sleep(tick);
                let over = t.elapsed().saturating_sub(tick).as_micros() as u64;
                stalled.fetch_max(over, Ordering::Relaxed);
            }
        }));
    }

    /// The lag oracle's allowance: `lag` of tokend's own time plus what the machine stole.
    fn allowed(&self, lag: Duration) -> Duration {
        lag + Duration::from_micros(self.stalled_us.load(Ordering::Relaxed))
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
        let etcd = match &self.direct {
            Some(endpoints) => endpoints.join(", "),
            None => self.proxies[i].url(),
        };
        let text = format!(
            "state_dir: {dir}/state-{i}\nlisten: 127.0.0.1:{port}\nha:\n  backend: etcd\n  group: {GROUP}\n  identity: node-{i}\n{timings}  etcd:\n    endpoints: [{etcd}]\n    timeout: 1s\ncredentials:\n  - name: {CRED}\n    provider: vandar\n    base_url: {url}\n    refresh_token: {{ file: {dir}/secrets/{seed} }}\n    timeout: 1s\n    retry: {{ initial: 100ms, max: 500ms, permanent: 2s }}\n{extra}    outputs:\n      - file: {dir}/out-{i}/vandar.token\n",
            dir = self.env.dir.path().display(),
            url = self.env.url(),
            port = self.ports[i],
            timings = self.timings,
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

    /// The shared record of the group's credential, read from etcd like any state.
    pub fn state(&self) -> crate::support::StateView {
        crate::support::StateSource::Etcd {
            endpoints: self.etcd.endpoints(),
            prefix: "/tokend/".to_owned(),
            group: GROUP.to_owned(),
        }
        .read(CRED)
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
        self.commits.lock().unwrap().clone()
    }

    pub fn last_commit(&self) -> Option<Commit> {
        self.commits.lock().unwrap().last().cloned()
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

    fn watch_commits(&mut self) {
        let (commits, stop) = (self.commits.clone(), self.stop.clone());
        let endpoint = self.etcd.endpoint(0);
        let key = format!("/tokend/{GROUP}/state/{CRED}");
        self.watchers.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client =
                    tokend::net::etcd::EtcdClient::new(tokend::net::etcd::EtcdOptions::new([
                        endpoint,
                    ]))
                    .unwrap();
                let mut from = 1;
                while !stop.load(Ordering::SeqCst) {
                    let Ok(mut w) = client.watch(key.as_bytes(), None, from).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    while !stop.load(Ordering::SeqCst) {
                        let batch = match tokio::time::timeout(Duration::from_millis(200), w.next())
                            .await
                        {
                            Err(_) => continue,
                            Ok(Ok(b)) => b,
                            Ok(Err(_)) => break,
                        };
                        for ev in batch.events {
                            from = ev.kv.mod_revision + 1;
                            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&ev.kv.value)
                            else {
                                continue;
                            };
                            let s =
                                |p: &str| v.pointer(p).and_then(|x| x.as_str()).map(str::to_owned);
                            commits.lock().unwrap().push(Commit {
                                seen: Instant::now(),
                                mod_revision: ev.kv.mod_revision,
                                chain_gen: v["chain_gen"].as_u64().unwrap_or(0),
                                token_gen: v["token_gen"].as_u64().unwrap_or(0),
                                token: s("/token/token"),
                                refresh_token: s("/refresh_token"),
                                claim_holder: s("/claim/holder"),
                            });
                        }
                    }
                }
            });
        }));
    }

    fn watch_outputs(&mut self) {
        let paths: Vec<PathBuf> = (0..self.nodes.len()).map(|i| self.output_path(i)).collect();
        let (outputs, stop) = (self.outputs.clone(), self.stop.clone());
        self.watchers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for (i, p) in paths.iter().enumerate() {
                    let Ok(t) = std::fs::read_to_string(p) else {
                        continue;
                    };
                    let mut o = outputs.lock().unwrap();
                    if o[i].last().map(|(l, _)| l.as_str()) != Some(t.as_str()) {
                        o[i].push((t, Instant::now()));
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }

    /// HA.md's oracles over everything recorded so far:
    /// - generations move by exactly one and never back;
    /// - the provider never saw a spent refresh token again;
    /// - every running node's output held each committed token within `lag` (unless a
    ///   newer one was committed within `lag`), and never went back to an older token.
    pub fn assert_oracles(&self, lag: Duration, nodes: &[usize]) {
        self.assert_oracles_since(lag, nodes, None);
    }

    /// As [`Group::assert_oracles`], judging lag only for commits seen after `since` (a
    /// node that was stopped or cut off cannot have written while it was).
    pub fn assert_oracles_since(&self, lag: Duration, nodes: &[usize], since: Option<Instant>) {
        // Judge the commits seen so far, each once its deadline has passed.
        let judged = self.commits();
        assert!(!judged.is_empty(), "no commit seen\n{}", self.logs());
        let last_judged = judged.last().unwrap().seen;
        let deadline = last_judged + self.allowed(lag) + Duration::from_millis(50);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let lag = self.allowed(lag);
        let outputs = self.outputs.lock().unwrap().clone();
        // Every token an output showed was committed, so the commit recorder (a watch that
        // may run behind under load) must have seen it too: wait for it to catch up.
        let shown: Vec<String> = outputs
            .iter()
            .flatten()
            .map(|(t, _)| t.trim().to_owned())
            .collect();
        let mut commits = self.commits();
        for _ in 0..50 {
            let known: HashSet<&str> = commits.iter().filter_map(|c| c.token.as_deref()).collect();
            if shown.iter().all(|t| known.contains(t.as_str())) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            commits = self.commits();
        }
        for w in commits.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            assert!(
                b.chain_gen == a.chain_gen || b.chain_gen == a.chain_gen + 1,
                "chain_gen jumped {} → {}\n{}",
                a.chain_gen,
                b.chain_gen,
                self.logs()
            );
            assert!(
                b.token_gen == a.token_gen || b.token_gen == a.token_gen + 1,
                "token_gen jumped {} → {}",
                a.token_gen,
                b.token_gen
            );
            if b.chain_gen == a.chain_gen {
                assert_eq!(
                    a.refresh_token, b.refresh_token,
                    "the refresh token changed without a new chain generation"
                );
            }
        }
        assert_eq!(
            self.env.emu.reused_refresh_tokens(),
            0,
            "the provider saw a spent refresh token again\n{}",
            self.logs()
        );
        // Each token's generation, to judge regressions.
        let mut gen_of: HashMap<String, u64> = HashMap::new();
        for c in &commits {
            if let Some(t) = &c.token {
                gen_of.entry(t.clone()).or_insert(c.token_gen);
            }
        }
        for &i in nodes {
            let gens: Vec<u64> = outputs[i]
                .iter()
                .map(|(t, _)| {
                    *gen_of.get(t.trim()).unwrap_or_else(|| {
                        panic!("node {i} output a token never committed\n{}", self.logs())
                    })
                })
                .collect();
            assert!(
                gens.windows(2).all(|w| w[0] < w[1]),
                "node {i}'s output went back to an older token: generations {gens:?}"
            );
        }
        // Lag: for each new token committed, every node shows it (or a newer one) in time.
        let mut firsts: Vec<&Commit> = Vec::new();
        for c in &commits {
            if c.token.is_some() && firsts.last().is_none_or(|l| l.token_gen < c.token_gen) {
                firsts.push(c);
            }
        }
        for (k, c) in firsts.iter().enumerate() {
            if since.is_some_and(|s| c.seen < s) || c.seen > last_judged {
                continue;
            }
            let superseded = firsts.get(k + 1).is_some_and(|n| n.seen < c.seen + lag);
            if superseded {
                continue;
            }
            for &i in nodes {
                let shown = outputs[i]
                    .iter()
                    .find(|(t, _)| gen_of.get(t.trim()).is_some_and(|g| *g >= c.token_gen));
                let at = shown.map(|(_, at)| *at);
                assert!(
                    at.is_some_and(|at| at <= c.seen + lag),
                    "node {i} showed token generation {} {} after its commit (limit {lag:?}, \
                     with what the machine stalled this test); it showed generations {:?}\n{}",
                    c.token_gen,
                    at.map(|at| format!("{:?}", at.saturating_duration_since(c.seen)))
                        .unwrap_or("never".into()),
                    outputs[i]
                        .iter()
                        .map(|(t, _)| gen_of.get(t.trim()))
                        .collect::<Vec<_>>(),
                    self.logs()
                );
            }
        }
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
