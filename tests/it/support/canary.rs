//! The one leak check: every text a test showed to an operator (logs, stderr, stdout,
//! status) is searched for every secret the config holds and every token the emulator
//! issued or still holds valid. A long value is also searched by its last 20 characters,
//! so a truncated token is caught too.

use crate::support::{Env, Run};

/// Collects texts during a test and checks them all at the end ([`Canary::check`]), or
/// checks one text at once ([`Canary::assert_clean`]). An [`Env`] carries one: armed by
/// [`Env::watch_for_leaks`], it records every `env.run` and every daemon log by itself and
/// checks when the test ends.
#[derive(Default)]
pub struct Canary {
    texts: Vec<(String, String)>,
    secrets: Vec<String>,
}

impl Canary {
    pub fn new(secrets: &[&str]) -> Canary {
        Canary {
            texts: Vec::new(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn add(&mut self, what: &str, text: impl Into<String>) {
        self.texts.push((what.to_owned(), text.into()));
    }

    pub fn run(&mut self, what: &str, r: &Run) {
        self.add(what, r.all());
    }

    pub fn secret(&mut self, s: &str) {
        self.secrets.push(s.to_owned());
    }

    /// Every value that must never be printed.
    pub fn needles(&self, env: &Env) -> Vec<String> {
        let mut all = self.secrets.clone();
        all.extend(env.emu.issued_tokens());
        all.extend(env.emu.valid_refresh_tokens());
        all.sort();
        all.dedup();
        all.retain(|s| !s.is_empty());
        all
    }

    /// Fails naming the first secret or token found in `text`.
    #[track_caller]
    pub fn assert_clean(&self, env: &Env, what: &str, text: &str) {
        for c in self.needles(env) {
            let tail = &c[c.len().saturating_sub(20)..];
            let needles = if c.len() >= 40 {
                vec![&c[..], tail]
            } else {
                vec![&c[..]]
            };
            for n in needles {
                // A token is long and random; a hit is a leak, never a coincidence.
                assert!(
                    !text.contains(n),
                    "{what} shows a secret or token (`{n}`):\n{text}"
                );
            }
        }
    }

    /// Adds `status --json` and checks everything collected.
    #[track_caller]
    pub fn check(&mut self, env: &Env) {
        let status = env.run(&["status", "--json"]);
        self.run("status --json", &status);
        for (what, text) in &self.texts {
            self.assert_clean(env, what, text);
        }
    }
}

/// The watch needs no call at the end: a test whose daemon printed a watched secret fails
/// when its `Env` goes away.
#[test]
#[should_panic(expected = "shows a secret or token")]
fn a_watched_env_fails_on_drop_when_its_daemon_log_shows_a_secret() {
    let env = Env::new();
    env.watch_for_leaks(&["canary-0123456789abcdef"]);
    std::fs::write(
        env.path("daemon.log"),
        "INFO sent canary-0123456789abcdef\n",
    )
    .unwrap();
}

/// A daemon started again truncates `daemon.log`; what the earlier one printed still counts.
#[test]
#[should_panic(expected = "an earlier daemon log shows a secret")]
fn the_leak_watch_keeps_the_log_of_a_daemon_that_was_replaced() {
    let env = Env::new();
    env.config("credentials: []\n");
    env.watch_for_leaks(&["canary-0123456789abcdef"]);
    std::fs::write(
        env.path("daemon.log"),
        "INFO sent canary-0123456789abcdef\n",
    )
    .unwrap();
    drop(env.daemon());
    env.assert_no_leak();
}
