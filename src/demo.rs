//! `tokend demo`: the provider emulators on loopback with short token lifetimes, and a real
//! `tokend run` keeping three credentials fresh against them, writing into a directory.
//!
//! A narrator then shows what tokend is for, on the live processes: an outage recovered with
//! backoff, a rotated refresh chain kept across a restart, and a reader that never sees a
//! torn file. The daemon is a child process so that its restart is a real one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::config;
use crate::emulator::{Emulator, EmulatorConfig, Endpoint, Fault};
use crate::error::Error;
use crate::logging;

/// How long the narrator waits for any one thing before saying it did not happen.
const STEP: Duration = Duration::from_secs(60);

pub async fn run(dir: &Path) -> Result<(), Error> {
    logging::init(config::LogFormat::Text, "info");
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let emulator_config = EmulatorConfig {
        vandar_lifetime: Duration::from_secs(20),
        // Saba tokens are asked for 1 day, but the emulator's JWT says 30 s: tokend
        // believes the JWT, which is the point of reading `exp`.
        saba_lifetime_cap: Some(Duration::from_secs(30)),
        yavapteke_lifetime: Duration::from_secs(15),
        ..EmulatorConfig::default()
    };
    let emulator = Emulator::start(
        "127.0.0.1:0".parse().expect("literal address"),
        emulator_config.clone(),
    )
    .await
    .map_err(Error::DemoEmulators)?;
    // Each run starts new emulators that know nothing of the last run's refresh tokens.
    let _ = std::fs::remove_dir_all(dir.join("state"));
    let _ = std::fs::remove_dir_all(dir.join("out"));
    let config_path =
        write_demo_files(&dir, &emulator, &emulator_config).map_err(|source| Error::DemoDir {
            dir: dir.clone(),
            source,
        })?;
    config::load(
        &config_path,
        &crate::secret::ProcessEnv,
        config::Secrets::Resolve,
    )
    .map_err(Error::DemoConfig)?;
    let out = dir.join("out");
    say(&format!(
        "emulators on {}, tokens in {} (lifetimes 15-30 s). In another terminal:\n    \
         watch -n1 'tail -n +1 {o}/vandar.token {o}/saba.header {o}/pharmacy.json {o}/pharmacy/token'\n  \
         Ctrl-C stops.",
        emulator.url(),
        out.display(),
        o = out.display(),
    ));
    let mut daemon = Daemon::start(&config_path).map_err(Error::DemoDaemon)?;
    let reader = Reader::start(&out);
    // Signals are caught from here on: Ctrl-C reaches the daemon too (same process
    // group), and `stop` below waits for its clean exit.
    let stop = crate::signals::wait_for_termination();
    tokio::pin!(stop);
    tokio::select! {
        () = story(&emulator, &mut daemon, &reader, &out) => {
            say("the demo goes on: tokens keep rotating until Ctrl-C.");
            stop.await;
        }
        () = &mut stop => {}
    }
    reader.stop();
    say(&reader.summary());
    match daemon.stop().await {
        Some(0) => Ok(()),
        _ => Err(Error::DemoDaemonExit),
    }
}

/// The narrated part. Every step waits for what it announces, on the live processes.
async fn story(emulator: &Emulator, daemon: &mut Daemon, reader: &Reader, out: &Path) {
    let ready = || {
        [
            "vandar.token",
            "saba.header",
            "pharmacy.json",
            "pharmacy/token",
        ]
        .iter()
        .all(|f| std::fs::metadata(out.join(f)).is_ok_and(|m| m.len() > 0))
    };
    if !until(ready).await {
        return say("no first tokens after a minute: see the log above.");
    }
    say("1/3 every credential has a token; a reader thread re-reads the outputs all the time.");

    say(
        "2/3 an outage: yaVapteke answers 503 to the next 3 requests. tokend backs off \
         (0.5 s, 1 s, 2 s, with jitter), keeps the old token in place, and recovers.",
    );
    let before = emulator.successes(Endpoint::Yavapteke);
    emulator.push_fault(
        Endpoint::Yavapteke,
        Fault::Status {
            code: 503,
            body: None,
            retry_after: None,
        },
        3,
    );
    daemon.signal(Signal::SIGUSR1);
    if !until(|| emulator.successes(Endpoint::Yavapteke) > before).await {
        return say("yaVapteke did not recover within a minute: see the log above.");
    }
    say(&format!(
        "   recovered after {} failed attempts; {}",
        3,
        reader.summary()
    ));

    say(
        "3/3 a restart: the daemon is stopped (SIGTERM) and started again. Vandar's refresh \
         token is single-use; the rotated one comes back from state, so the restart calls no \
         provider at all, and the next refresh continues the chain.",
    );
    let calls = || -> u64 { Endpoint::ALL.iter().map(|e| emulator.requests(*e)).sum() };
    let (rotations, logins) = (
        emulator.successes(Endpoint::VandarRefresh),
        emulator.requests(Endpoint::VandarLogin),
    );
    if daemon.restart().await.is_err() {
        return say("the daemon did not restart: see the log above.");
    }
    let after_restart = calls();
    tokio::time::sleep(Duration::from_secs(2)).await;
    say(&format!(
        "   restarted: {} provider calls in its first 2 s",
        calls() - after_restart
    ));
    daemon.signal(Signal::SIGUSR1);
    if !until(|| emulator.successes(Endpoint::VandarRefresh) > rotations).await {
        return say("Vandar did not refresh after the restart: see the log above.");
    }
    say(&format!(
        "   the chain continued: {} refresh token(s) replayed, {} login(s) needed; {}",
        emulator.reused_refresh_tokens(),
        emulator.requests(Endpoint::VandarLogin) - logins,
        reader.summary()
    ));
}

/// Polls `cond` every 100 ms for at most [`STEP`].
async fn until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cond()
}

fn say(text: &str) {
    eprintln!("\n[demo] {text}\n");
}

/// `tokend run` on the demo config, as a child process.
struct Daemon {
    config: PathBuf,
    child: Child,
}

impl Daemon {
    fn start(config: &Path) -> std::io::Result<Daemon> {
        let exe = std::env::current_exe()?;
        let child = Command::new(exe)
            .arg("--config")
            .arg(config)
            .arg("run")
            .kill_on_drop(true)
            .spawn()?;
        Ok(Daemon {
            config: config.to_path_buf(),
            child,
        })
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    async fn wait(&mut self) -> Option<i32> {
        self.child.wait().await.ok().and_then(|s| s.code())
    }

    /// SIGTERM, and the exit code once it stopped (in-flight refreshes get their 10 s).
    async fn stop(&mut self) -> Option<i32> {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(Duration::from_secs(20), self.wait()).await {
            Ok(code) => code,
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        }
    }

    async fn restart(&mut self) -> std::io::Result<()> {
        if self.stop().await != Some(0) {
            return Err(std::io::Error::other("the daemon did not stop cleanly"));
        }
        *self = Daemon::start(&self.config)?;
        Ok(())
    }
}

/// A reader like any consumer: re-reads the outputs in a loop and counts what it saw. An
/// empty, partial or unparsable file would be counted as torn.
struct Reader {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    torn: Arc<AtomicU64>,
}

impl Reader {
    fn start(out: &Path) -> Reader {
        let reader = Reader {
            stop: Arc::default(),
            reads: Arc::default(),
            torn: Arc::default(),
        };
        let (stop, reads, torn) = (
            reader.stop.clone(),
            reader.reads.clone(),
            reader.torn.clone(),
        );
        let out = out.to_path_buf();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (file, check) in CHECKS {
                    // Not there yet (before the first token): nothing was torn.
                    let Ok(text) = std::fs::read_to_string(out.join(file)) else {
                        continue;
                    };
                    reads.fetch_add(1, Ordering::Relaxed);
                    if !check(&text) {
                        torn.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // A consumer reads now and then; a tight loop would only heat the CPU.
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        reader
    }

    fn summary(&self) -> String {
        format!(
            "reader: {} reads, {} empty or torn",
            self.reads.load(Ordering::Relaxed),
            self.torn.load(Ordering::Relaxed)
        )
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type Check = fn(&str) -> bool;

/// What a whole file of each output looks like.
const CHECKS: [(&str, Check); 4] = [
    ("vandar.token", |t| whole_token(t)),
    ("saba.header", |t| {
        t.strip_prefix("Authorization: Bearer ")
            .and_then(|r| r.strip_suffix('\n'))
            .is_some_and(whole_token)
    }),
    ("pharmacy.json", |t| {
        serde_json::from_str::<serde_json::Value>(t)
            .ok()
            .and_then(|v| v.get("token")?.as_str().map(whole_token))
            .unwrap_or(false)
    }),
    ("pharmacy/token", |t| whole_token(t)),
];

fn whole_token(t: &str) -> bool {
    t.len() >= 16 && !t.chars().any(char::is_whitespace)
}

fn write_demo_files(
    dir: &Path,
    emulator: &Emulator,
    cfg: &EmulatorConfig,
) -> std::io::Result<std::path::PathBuf> {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets)?;
    let write_secret = |name: &str, value: &str| {
        crate::atomic::write_file(
            &secrets.join(name),
            value.as_bytes(),
            crate::atomic::Access::PRIVATE,
        )
    };
    write_secret("vandar-password", &cfg.vandar_password)?;
    write_secret("saba-password", &cfg.saba_password)?;
    write_secret("yavapteke-secret", &cfg.yavapteke_client_secret)?;
    // The seed only matters the first time; afterwards the chain lives in state.
    let seed = cfg
        .vandar_refresh_seeds
        .first()
        .cloned()
        .unwrap_or_default();
    write_secret("vandar-refresh", &seed)?;
    let url = emulator.url();
    let config = format!(
        r#"# Written by `tokend demo`; the emulators' port changes on every run.
state_dir: {dir}/state
log:
  format: text
  level: info
defaults:
  retry:
    initial: 500ms
    max: 5s
credentials:
  - name: vandar-main
    provider: vandar
    base_url: {url}
    refresh_token: {{ file: secrets/vandar-refresh }}
    mobile: "{mobile}"
    password: {{ file: secrets/vandar-password }}
    outputs:
      - file: out/vandar.token
      - file: out/vandar.env
        format: env
  - name: saba-sms
    provider: saba
    base_url: {url}
    username: {saba_user}
    password: {{ file: secrets/saba-password }}
    virtual_number: "{vn}"
    token_valid_days: 1
    outputs:
      - file: out/saba.header
        format: template
        template: "Authorization: Bearer {{{{token}}}}\n"
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: {client_id}
    client_secret: {{ file: secrets/yavapteke-secret }}
    refresh: {{ at: 75% }}
    outputs:
      - file: out/pharmacy.json
        format: json
        mode: "0640"
      - dir: out/pharmacy
"#,
        dir = dir.display(),
        mobile = cfg.vandar_mobile,
        saba_user = cfg.saba_username,
        vn = cfg.saba_virtual_number,
        client_id = cfg.yavapteke_client_id,
    );
    let path = dir.join("config.yaml");
    crate::atomic::write_file(
        &path,
        config.as_bytes(),
        crate::atomic::Access {
            mode: 0o644,
            gid: None,
        },
    )?;
    Ok(path)
}
