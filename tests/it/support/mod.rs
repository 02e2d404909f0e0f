//! What every integration test shares: a temp directory, a provider emulator on loopback, a
//! config writer and a builder for the real `tokend` binary, polling helpers (no fixed
//! sleeps), and in submodules the config builder, the state view, the canaries, log helpers,
//! real etcd, the fake Kubernetes API server and the `ha` group harness.

pub mod canary;
pub mod config;
pub mod etcd;
pub mod group;
pub mod kube_fake;
pub mod log;
pub mod state_view;

pub use canary::Canary;
pub use config::{Kind, write_config};
pub use log::{lines_at, plain};
pub use state_view::{StateSource, StateView};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use tokend::emulator::{Emulator, EmulatorConfig, Endpoint, Fault};

pub const BIN: &str = env!("CARGO_BIN_EXE_tokend");

/// One second, so durations read `4 * S`.
pub const S: Duration = Duration::from_secs(1);

pub struct Env {
    pub dir: tempfile::TempDir,
    pub emu: Emulator,
    /// Armed by [`Env::watch_for_leaks`]; checked by [`Env::assert_no_leak`] or on drop.
    leaks: Mutex<Option<Canary>>,
}

impl Env {
    pub fn new() -> Env {
        Env::with(EmulatorConfig::default())
    }

    pub fn with(config: EmulatorConfig) -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
            emu: Emulator::start_background(config).expect("emulator"),
            leaks: Mutex::new(None),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn url(&self) -> String {
        self.emu.url()
    }

    /// Writes `secrets/NAME` (mode 0600, as an operator makes a secret file; `check` warns
    /// about one other users can read) and returns its path.
    pub fn secret(&self, name: &str, value: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path(&format!("secrets/{name}"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, value).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// Writes `config.yaml`: `state_dir` in the temp dir, then `body` with `{url}` and
    /// `{dir}` replaced. Returns the path.
    pub fn config(&self, body: &str) -> PathBuf {
        self.config_at("config.yaml", body)
    }

    pub fn config_at(&self, name: &str, body: &str) -> PathBuf {
        let text = format!(
            "state_dir: {{dir}}/state\n{}",
            body.replace("{url}", &self.url())
        )
        .replace("{dir}", &self.dir.path().display().to_string());
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes a raw config file (no state_dir added, only `{url}`/`{dir}` replaced).
    pub fn raw_config(&self, body: &str) -> PathBuf {
        let text = body
            .replace("{url}", &self.url())
            .replace("{dir}", &self.dir.path().display().to_string());
        let p = self.path("config.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `tokend --config <dir>/config.yaml ARGS...` with a clean environment.
    pub fn tokend(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(self.path("config.yaml"))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("TOKEND_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("STATE_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .current_dir(self.dir.path());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let r = Run::from(self.tokend(args).output().expect("run tokend"));
        self.leak_text(&format!("`tokend {}`", args.join(" ")), r.all());
        r
    }

    /// Starts `tokend run` in the background; stderr goes to `daemon.log`.
    pub fn daemon(&self) -> Daemon {
        self.daemon_with(&mut self.tokend(&["run"]))
    }

    pub fn daemon_with(&self, cmd: &mut Command) -> Daemon {
        let log = self.path("daemon.log");
        // The next daemon truncates the log: the leak watch keeps what the last one wrote.
        self.leak_text("an earlier daemon log", self.read("daemon.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn tokend run");
        Daemon {
            child: Some(child),
            log,
        }
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    /// Where this env's `tokend` keeps its records (`state_dir: {dir}/state`).
    pub fn state_source(&self) -> StateSource {
        StateSource::Local {
            dir: self.path("state"),
        }
    }

    /// The record of `credential`, read through the store (see [`state_view`]).
    pub fn state(&self, credential: &str) -> StateView {
        self.state_source().read(credential)
    }

    /// The local state file itself, for the tests that plant, corrupt or age one on purpose.
    pub fn state_file(&self, credential: &str) -> PathBuf {
        self.path(&format!("state/{credential}.json"))
    }
}

/// A finished run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A background `tokend run`; killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit; returns its code, or None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    s
}

/// A standard single-credential config per provider, pointing at the emulator.
pub fn yavapteke_config(env: &Env, extra: &str) -> PathBuf {
    write_config(
        env,
        &[Kind::Yavapteke
            .cred()
            .secret_in("yav", "yav-secret")
            .extra(extra)],
    )
}

pub fn vandar_config(env: &Env, with_login: bool, extra: &str) -> PathBuf {
    env.secret("vandar-password", "vandar-pass\n");
    let login = if with_login {
        "    mobile: \"09123456789\"\n    password: { file: {dir}/secrets/vandar-password }\n"
    } else {
        ""
    };
    write_config(
        env,
        &[Kind::VandarChain
            .cred()
            .named("vandar-main")
            .secret_in("vandar-refresh", "def502seed")
            .extra(login)
            .extra(extra)
            .outputs("      - file: {dir}/out/vandar.token\n")],
    )
}

pub fn saba_config(env: &Env, extra: &str) -> PathBuf {
    write_config(
        env,
        &[Kind::Saba
            .cred()
            .secret_in("saba", "saba-pass")
            .extra(extra)
            .outputs("      - file: {dir}/out/saba.token\n")],
    )
}

/// A tmpfs mounted over `path` for one test, unmounted (lazily) on drop. Tests run as root
/// in CI and in the development sandbox, where `mount -t tmpfs` works; elsewhere `mount`
/// fails and the tests that need it fall back or say they skipped.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                path: path.to_path_buf(),
            }),
            Ok(o) => {
                eprintln!(
                    "note: cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("note: cannot run mount: {e}");
                None
            }
        }
    }

    #[track_caller]
    pub fn remount(&self, mode: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount {mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A free loopback port (bound, then released: good enough for a test's own listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.1 request to 127.0.0.1: (status, body); (0, "") when nothing answers.
/// Bodies may be chunked; the tests only search them, so chunk sizes do no harm.
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    use std::io::Write;
    use std::net::{SocketAddr, TcpStream};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

/// An RFC 3339 time as tokend writes it (state files, JSON outputs, status).
pub fn parse_time(text: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .unwrap_or_else(|e| panic!("`{text}` is not RFC 3339: {e}"))
}

impl Env {
    /// Requests the emulator received, all endpoints together.
    pub fn total_requests(&self) -> u64 {
        Endpoint::ALL.iter().map(|ep| self.emu.requests(*ep)).sum()
    }
}

/// The leak watch (see [`canary`]): one per test, over every channel an operator sees.
impl Env {
    /// From now on, every `env.run`, every daemon log and `status --json` at the end are
    /// searched for `secrets` and for every token the emulator issued or still accepts.
    pub fn watch_for_leaks(&self, secrets: &[&str]) {
        let mut leaks = self.leaks.lock().unwrap();
        let canary = leaks.get_or_insert_with(Canary::default);
        for s in secrets {
            canary.secret(s);
        }
    }

    /// Another value that must never be printed (a seed added during the test).
    pub fn leak_secret(&self, secret: &str) {
        if let Some(c) = self.leaks.lock().unwrap().as_mut() {
            c.secret(secret);
        }
    }

    /// A text the operator saw that `env.run` and the daemon log do not cover.
    pub fn leak_text(&self, what: &str, text: impl Into<String>) {
        if let Some(c) = self.leaks.lock().unwrap().as_mut() {
            c.add(what, text);
        }
    }

    /// Checks everything recorded, the current daemon log and `status --json` now, and
    /// disarms the watch (a test that does not call it is checked when its `Env` drops).
    #[track_caller]
    pub fn assert_no_leak(&self) {
        let Some(mut canary) = self.leaks.lock().unwrap().take() else {
            panic!("assert_no_leak without watch_for_leaks: nothing was watched");
        };
        canary.add("daemon log", self.read("daemon.log"));
        canary.check(self);
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // A test that already failed says why; a second panic would abort the run.
        if !std::thread::panicking() && self.leaks.get_mut().unwrap().is_some() {
            self.assert_no_leak();
        }
    }
}
