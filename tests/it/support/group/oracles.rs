//! The oracles of the shared-state tests (HA.md §5), recorded while a test runs and judged
//! at its end: commits in order, each node's outputs in order, and how long the machine stalled.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Group;

/// One committed version of the shared record.
#[derive(Clone, Debug)]
pub struct Commit {
    /// When the store held it: the watch saw it (etcd), or the fake stored it (Kubernetes).
    pub seen: Instant,
    /// etcd's mod_revision, or the Secret's resourceVersion.
    pub mod_revision: i64,
    pub chain_gen: u64,
    pub token_gen: u64,
    pub token: Option<String>,
    pub refresh_token: Option<String>,
    pub claim_holder: Option<String>,
}

impl Commit {
    /// The commit of a record's JSON, as any backend stores it.
    pub fn of_record(v: &serde_json::Value, seen: Instant, mod_revision: i64) -> Commit {
        let s = |p: &str| v.pointer(p).and_then(|x| x.as_str()).map(str::to_owned);
        Commit {
            seen,
            mod_revision,
            chain_gen: v["chain_gen"].as_u64().unwrap_or(0),
            token_gen: v["token_gen"].as_u64().unwrap_or(0),
            token: s("/token/token"),
            refresh_token: s("/refresh_token"),
            claim_holder: s("/claim/holder"),
        }
    }
}

/// What one node's output held, in order: (token, first seen).
pub type Shown = Vec<(String, Instant)>;

impl Group {
    /// Sleeps 10 ms in a loop and records the worst overshoot: how long the machine kept a
    /// runnable process waiting.
    pub(super) fn watch_stalls(&mut self) {
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

    pub(super) fn watch_outputs(&mut self) {
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
        if let super::Backend::Kube(fake) = &self.backend {
            assert_eq!(
                fake.unconditional_updates(),
                0,
                "a Secret was updated without a resourceVersion (a blind write)\n{}",
                self.logs()
            );
        }
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
