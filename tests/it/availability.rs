//! Staying up and saying what is wrong (issue 11): a flooded listener, blocking or endless
//! files, a hook that floods stderr, a pathological YAML, a provider's absurd Retry-After, a
//! wall clock stepping back, failures that must show in metrics and `status`, and outputs
//! deleted behind tokend's back.
//!
//! Tests that would exhaust memory before their fix run tokend under `prlimit --as`, so a
//! regression fails fast instead of taking the machine down.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::support::*;

/// Address space for a tokend that must not eat memory: far above what it needs, far below
/// what an unbounded read of /dev/zero or 300 MB of hook output would take.
const AS_LIMIT: &str = "--as=4000000000";

/// `tokend ARGS` under `prlimit LIMITS`, with the harness's clean environment.
fn limited(env: &Env, limits: &[&str], args: &[&str]) -> Command {
    let mut cmd = Command::new("prlimit");
    cmd.args(limits)
        .arg("--")
        .arg(BIN)
        .arg("--config")
        .arg(env.path("config.yaml"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("TOKEND_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .current_dir(env.dir.path());
    cmd
}

/// Runs `cmd` to its end, or kills it after `timeout` and returns None.
fn run_within(cmd: &mut Command, timeout: Duration) -> Option<Run> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let readers = (
        std::thread::spawn(move || read_all(&mut out)),
        std::thread::spawn(move || read_all(&mut err)),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (readers.0.join().unwrap(), readers.1.join().unwrap());
    status.map(|s| Run {
        code: s.code().unwrap_or(-1),
        stdout,
        stderr,
    })
}

fn state_time(env: &Env, credential: &str, pointer: &str) -> Option<SystemTime> {
    let state = env.state(credential);
    let text = state.pointer(pointer)?.as_str()?;
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).ok()
}

/// Waits until the credential's state holds `n` tokens it did not hold before (each seen).
fn wait_for_new_tokens(env: &Env, credential: &str, n: usize, timeout: Duration) -> bool {
    let mut seen: Vec<String> = env.state(credential).token().into_iter().collect();
    let start = seen.len();
    wait_for(timeout, || {
        if let Some(t) = env.state(credential).token()
            && !seen.contains(&t)
        {
            seen.push(t);
        }
        seen.len() >= start + n
    })
}

fn yav_credential(name: &str, secret: &str, extra: &str) -> String {
    format!(
        r#"  - name: {name}
    provider: yavapteke
    token_url: {{url}}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: {{ file: {secret} }}
    timeout: 2s
    retry: {{ initial: 100ms, max: 500ms, permanent: 30m }}
{extra}    outputs:
      - file: {{dir}}/out/{name}.token
"#
    )
}

fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

// ---- 1. the listener ----------------------------------------------------------------

/// Connects and either sends nothing (`trickle` false) or a request head one header line
/// every 200 ms; returns how long until the server closed the connection (None: still
/// connected after `limit`).
fn cut_off(port: u16, trickle: bool, limit: Duration) -> std::thread::JoinHandle<Option<Duration>> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if trickle {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
        }
        let mut buf = [0u8; 256];
        while started.elapsed() < limit {
            if trickle && s.write_all(b"X-Slow: 1\r\n").is_err() {
                return Some(started.elapsed());
            }
            match s.read(&mut buf) {
                // Closed (or answered and closed): the server cut us off.
                Ok(_) => return Some(started.elapsed()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return Some(started.elapsed()),
            }
        }
        None
    })
}

#[test]
fn an_idle_connection_flood_leaves_refreshes_working_and_slow_headers_are_cut() {
    let env = Env::new();
    let port = free_port();
    let secret = env.secret("yav", "yav-secret\n");
    env.config(&format!(
        "listen: 127.0.0.1:{port}\ncredentials:\n{}",
        yav_credential(
            "pharmacy",
            &secret.display().to_string(),
            "    lifetime: 2s\n"
        )
    ));
    // 128 descriptors, soft and hard: the flood below is ten times that.
    let _d = env.daemon_with(&mut limited(&env, &["--nofile=128:128"], &["run"]));
    assert!(
        wait_for(10 * S, || http(port, "GET", "/readyz").0 == 200),
        "not ready:\n{}",
        env.read("daemon.log")
    );

    // Before the flood: behind it they would wait in the kernel's accept queue instead.
    let (idle, slow) = (cut_off(port, false, 25 * S), cut_off(port, true, 25 * S));
    for (what, cut) in [
        ("an idle client", idle),
        ("a client trickling header lines", slow),
    ] {
        let cut = cut.join().unwrap();
        assert!(
            cut.is_some_and(|d| d <= 20 * S),
            "{what} stayed connected: {cut:?}"
        );
    }
    // 1 100 idle connections (a bounded loop: it stops at the count or after 8 s). Those
    // the kernel's accept queue cannot take time out; the rest are held open.
    let mut flood = Vec::new();
    let until = Instant::now() + 8 * S;
    let mut attempts = 0;
    while attempts < 1100 && Instant::now() < until {
        attempts += 1;
        if let Ok(s) = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_millis(50),
        ) {
            flood.push(s);
        }
    }
    // More than the daemon's 128 descriptors: accepted ones plus the accept queue (128).
    assert!(
        flood.len() > 150,
        "only {} of {attempts} connections: not a flood",
        flood.len()
    );

    // With the flood held open, the 2 s token keeps being replaced and written.
    assert!(
        wait_for_new_tokens(&env, "pharmacy", 3, 15 * S),
        "refreshes stopped under the connection flood:\n{}",
        env.read("daemon.log")
    );
    let latest = env.state("pharmacy").token().unwrap();
    assert!(
        wait_for(3 * S, || env.read("out/pharmacy.token") == latest),
        "the output does not hold the state's token:\n{}",
        env.read("daemon.log")
    );

    drop(flood);
    assert!(
        wait_for(20 * S, || http(port, "GET", "/healthz").0 == 200),
        "/healthz does not answer after the flood ended:\n{}",
        env.read("daemon.log")
    );
}

/// (soft, hard) "Max open files" of a running process.
fn nofile(pid: i32) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
}

#[test]
fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
    let env = Env::new();
    yavapteke_config(&env, "");
    let d = env.daemon_with(&mut limited(&env, &["--nofile=256:4096"], &["run"]));
    assert!(
        wait_for(10 * S, || nofile(d.pid())
            .is_some_and(|(soft, _)| soft == "4096")),
        "soft limit {:?}:\n{}",
        nofile(d.pid()),
        d.log()
    );
}

// ---- 2. bounded reads of config, secrets and CA bundles ---------------------------------

#[test]
fn special_secret_and_ca_files_are_clear_errors_neither_memory_nor_a_hang() {
    let env = Env::new();
    let fifo = env.path("secrets/fifo");
    mkfifo(&fifo);
    let secret = env.secret("yav", "yav-secret\n").display().to_string();
    let zero = PathBuf::from("/dev/zero");
    for (path, ca, what) in [
        (&zero, false, "not a regular file"),
        (&fifo, false, "FIFO"),
        (&zero, true, "not a regular file"),
        (&fifo, true, "FIFO"),
    ] {
        let p = path.display().to_string();
        let credential = if ca {
            yav_credential("pharmacy", &secret, &format!("    ca_file: {p}\n"))
        } else {
            yav_credential("pharmacy", &p, "")
        };
        env.config(&format!("credentials:\n{credential}"));
        // `status` and `check --offline` read no secret, but still the ca_file.
        let commands: &[&[&str]] = if ca {
            &[&["check"], &["check", "--offline"], &["status"]]
        } else {
            &[&["check"]]
        };
        for args in commands {
            let started = Instant::now();
            let r = run_within(&mut limited(&env, &[AS_LIMIT], args), 20 * S)
                .unwrap_or_else(|| panic!("{args:?} with {p} (ca_file: {ca}) hangs"));
            r.assert_code(2);
            assert!(
                r.stderr.contains(&p) && r.stderr.contains(what),
                "{args:?} {p} (ca_file: {ca}): {}",
                r.stderr
            );
            assert!(started.elapsed() < 10 * S, "{:?}", started.elapsed());
        }
    }
}

#[test]
fn a_config_file_that_is_a_fifo_or_a_device_is_a_clear_error() {
    let env = Env::new();
    let fifo = env.path("config.fifo");
    mkfifo(&fifo);
    for (path, what) in [
        (fifo.as_path(), "FIFO"),
        (Path::new("/dev/zero"), "character device"),
    ] {
        let mut cmd = limited(&env, &[AS_LIMIT], &["check"]);
        cmd.arg("--config").arg(path);
        // `--config` given twice: the last one wins, as with every clap option.
        let r = run_within(&mut cmd, 20 * S)
            .unwrap_or_else(|| panic!("`check` of {} hangs", path.display()));
        r.assert_code(2);
        assert!(r.stderr.contains(what), "{}", r.stderr);
        assert!(
            r.stderr.contains(&path.display().to_string()),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn a_fifo_ca_file_or_secret_on_sighup_blocks_neither_other_credentials_nor_sigterm() {
    let env = Env::new();
    let secret = env.secret("yav", "yav-secret\n").display().to_string();
    let fifo = env.path("secrets/fifo");
    mkfifo(&fifo);
    let config = |other: String| {
        env.config(&format!(
            "credentials:\n{}{other}",
            yav_credential("fast", &secret, "    lifetime: 2s\n"),
        ));
    };
    config(yav_credential("other", &secret, ""));
    let mut d = env.daemon();
    assert!(wait_for(10 * S, || env.state("other").token().is_some()));

    let fifo_path = fifo.display().to_string();
    for (n, other) in [
        yav_credential("other", &secret, &format!("    ca_file: {fifo_path}\n")),
        yav_credential("other", &fifo_path, ""),
    ]
    .into_iter()
    .enumerate()
    {
        config(other);
        d.signal(nix::sys::signal::Signal::SIGHUP);
        assert!(
            wait_for(10 * S, || d.log().matches("reload failed").count() > n),
            "a reload meeting a FIFO neither failed nor finished:\n{}",
            d.log()
        );
        assert!(
            wait_for_new_tokens(&env, "fast", 2, 10 * S),
            "refreshes stopped after a reload met a FIFO:\n{}",
            d.log()
        );
    }
    assert_eq!(d.log().matches("FIFO").count(), 2, "{}", d.log());
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(15 * S), Some(0), "{}", d.log());
}

// ---- 3. outputs are read back only when they are regular files -------------------------

#[test]
fn an_output_that_is_a_fifo_is_replaced_not_read() {
    let env = Env::new();
    yavapteke_config(&env, "");
    mkfifo(&env.path("out/pharmacy.token"));
    let r = run_within(&mut limited(&env, &[AS_LIMIT], &["once"]), 20 * S)
        .expect("`once` hangs on an output that is a FIFO");
    r.assert_code(0);
    let meta = std::fs::symlink_metadata(env.path("out/pharmacy.token")).unwrap();
    assert!(meta.is_file());
    assert_eq!(
        env.read("out/pharmacy.token"),
        env.state("pharmacy").token().unwrap()
    );
}

#[test]
fn a_dir_output_whose_data_leads_to_dev_zero_is_replaced_not_read() {
    let env = Env::new();
    env.secret("yav", "yav-secret\n");
    env.config(
        r#"credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {url}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: { file: {dir}/secrets/yav }
    outputs:
      - dir: {dir}/out/pharmacy
"#,
    );
    let dir = env.path("out/pharmacy");
    let evil = dir.join("..evil");
    std::fs::create_dir_all(&evil).unwrap();
    for name in ["token", "token.json", "expires_at"] {
        std::os::unix::fs::symlink("/dev/zero", evil.join(name)).unwrap();
    }
    std::os::unix::fs::symlink("..evil", dir.join("..data")).unwrap();
    // A daemon, so its peak memory can be read once the output is in place. The address
    // space limit turns an unbounded read into an error after 4 GB instead of an OOM.
    let d = env.daemon_with(&mut limited(&env, &[AS_LIMIT], &["run"]));
    assert!(
        wait_for(20 * S, || env
            .state("pharmacy")
            .token()
            .is_some_and(|t| env.read("out/pharmacy/token") == t)),
        "the dir output was not replaced:\n{}",
        d.log()
    );
    let rss = peak_rss_kib(d.pid());
    assert!(
        rss > 0 && rss < 200 * 1024,
        "peak RSS {rss} KiB: ..data/token was read without a bound"
    );
}

// ---- 4. hook output ----------------------------------------------------------------

fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn three_hundred_megabytes_of_hook_stderr_keep_memory_and_the_log_small() {
    let env = Env::new();
    yavapteke_config(
        &env,
        "    on_refresh:\n      - exec: [\"sh\", \"-c\", \"head -c 300000000 /dev/zero | tr '\\\\0' x >&2; echo last-words >&2; exit 3\"]\n        timeout: 60s\n",
    );
    let d = env.daemon();
    assert!(
        wait_for(60 * S, || d.log().contains("hook_failed")),
        "the hook did not finish:\n{}",
        d.log().chars().take(2000).collect::<String>()
    );
    let rss = peak_rss_kib(d.pid());
    assert!(rss > 0, "no VmHWM for the daemon");
    assert!(
        rss < 100 * 1024,
        "peak RSS {rss} KiB after 300 MB of hook stderr"
    );
    let log = d.log();
    assert!(log.len() < 64 * 1024, "the log grew to {} bytes", log.len());
    assert!(log.contains("last-words"), "{log}");
}

// ---- 5. YAML nesting ----------------------------------------------------------------

#[test]
fn yaml_nested_100000_levels_deep_fails_fast_with_a_clear_error() {
    let env = Env::new();
    for text in [
        format!(
            "credentials: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
        format!(
            "credentials: {}1{}\n",
            "{a: ".repeat(100_000),
            "}".repeat(100_000)
        ),
    ] {
        std::fs::write(env.path("config.yaml"), text).unwrap();
        let started = Instant::now();
        let r = run_within(&mut env.tokend(&["check"]), 20 * S)
            .expect("`check` of a deeply nested YAML does not finish");
        r.assert_code(2);
        assert!(r.stderr.contains("nested more than"), "{}", r.stderr);
        assert!(r.stderr.contains("line 1"), "{}", r.stderr);
        assert!(started.elapsed() < 5 * S, "took {:?}", started.elapsed());
    }
}

// ---- 6. Retry-After ----------------------------------------------------------------

#[test]
fn an_absurd_retry_after_is_not_honoured_past_the_tokens_expiry() {
    let env = Env::new();
    yavapteke_config(
        &env,
        "    lifetime: 8s\n    refresh: { at: 50%, jitter: 0% }\n",
    );
    let d = env.daemon();
    assert!(wait_for(10 * S, || env.state("pharmacy").token().is_some()));
    let first = env.state("pharmacy").token().unwrap();
    let expires = state_time(&env, "pharmacy", "/token/expires_at").unwrap();
    env.emu.push_fault(
        Endpoint::Yavapteke,
        Fault::Status {
            code: 429,
            body: None,
            retry_after: Some(999_999_999),
        },
        1,
    );
    assert!(
        wait_for(10 * S, || env.state("pharmacy").failures() >= 1),
        "no 429 seen:\n{}",
        d.log()
    );
    let next = state_time(&env, "pharmacy", "/next_attempt").unwrap();
    assert!(
        next < expires,
        "next attempt {next:?} is after the token's expiry {expires:?}"
    );
    assert!(
        wait_for(15 * S, || env
            .state("pharmacy")
            .token()
            .is_some_and(|t| t != first)),
        "no refresh after the 429:\n{}",
        d.log()
    );
    // Planned 2 s before expiry; a loaded machine may run it a little late, but an
    // honoured Retry-After would have meant days.
    assert!(SystemTime::now() < expires + 5 * S, "refreshed too late");
}

// ---- 7. the wall clock stepping back ---------------------------------------------------

fn libfaketime() -> PathBuf {
    let mut dirs = vec![PathBuf::from("/usr/lib/faketime")];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|e| e.path().join("faketime")));
    }
    dirs.into_iter()
        .map(|d| d.join("libfaketime.so.1"))
        .find(|p| p.is_file())
        .expect("libfaketime.so.1 not found: apt-get install faketime")
}

#[test]
fn a_wall_clock_stepping_back_an_hour_does_not_stop_refreshing() {
    let env = Env::new();
    yavapteke_config(&env, "    lifetime: 6s\n");
    let offset = env.path("faketime.rc");
    std::fs::write(&offset, "+0\n").unwrap();
    let mut cmd = env.tokend(&["run"]);
    cmd.env("LD_PRELOAD", libfaketime())
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env_remove("FAKETIME")
        .env_remove("FAKETIME_SHARED");
    let mut d = env.daemon_with(&mut cmd);
    // Stepped once the next refresh is planned (a step in between would be planned in the
    // new time already).
    assert!(wait_for(10 * S, || d
        .log()
        .contains("every credential had its first attempt")));
    let tmp = offset.with_extension("tmp");
    std::fs::write(&tmp, "-3600\n").unwrap();
    std::fs::rename(&tmp, &offset).unwrap();
    // Due ~4.5 s after issue by the monotonic clock, an hour away by the stepped wall clock.
    let ok = wait_for_new_tokens(&env, "pharmacy", 2, 25 * S);
    let pid = d.pid();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(12 * S);
    for name in [
        format!("faketime_shm_{pid}"),
        format!("sem.faketime_sem_{pid}"),
    ] {
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(name));
    }
    assert!(
        ok,
        "refreshing stopped after the clock stepped back:\n{}",
        d.log()
    );
}

// ---- 8. every attempt is counted ----------------------------------------------------

fn metric(text: &str, credential: &str, result: &str) -> f64 {
    let key = format!("tokend_refresh_total{{credential=\"{credential}\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn refresh_total_counts_every_attempt_by_its_result() {
    let env = Env::new();
    let port = free_port();
    env.secret("saba", "saba-pass\n");
    env.secret("wrong", "not-the-secret\n");
    let secret = env.secret("yav", "yav-secret\n").display().to_string();
    std::fs::write(env.path("blocker"), "a file where a directory should be").unwrap();
    env.emu.set_sticky_fault(
        Endpoint::Yavapteke,
        Some(Fault::Status {
            code: 503,
            body: None,
            retry_after: None,
        }),
    );
    let saba = |name: &str, output: &str| {
        format!(
            r#"  - name: {name}
    provider: saba
    base_url: {{url}}
    username: sabauser
    password: {{ file: {{dir}}/secrets/saba }}
    virtual_number: "30001234"
    retry: {{ initial: 100ms, max: 300ms, permanent: 30m }}
    outputs:
      - file: {output}
"#
        )
    };
    env.config(&format!(
        r#"listen: 127.0.0.1:{port}
credentials:
{}{}{}  - name: bad
    provider: oauth2
    token_url: {{url}}/oauth2/token
    client_id: tokend
    client_secret: {{ file: {{dir}}/secrets/wrong }}
    retry: {{ initial: 100ms, max: 300ms, permanent: 30m }}
    outputs:
      - file: {{dir}}/out/bad.token
"#,
        saba("good", "{dir}/out/good.token"),
        saba("unwritable", "{dir}/blocker/unwritable.token"),
        yav_credential("flaky", &secret, ""),
    ));
    let d = env.daemon();
    let want = [
        ("good", "success"),
        ("flaky", "transient_error"),
        ("bad", "permanent_error"),
        ("unwritable", "output_error"),
    ];
    let ok = wait_for(10 * S, || {
        let text = http(port, "GET", "/metrics").1;
        want.iter().all(|(c, r)| metric(&text, c, r) >= 1.0)
    });
    let text = http(port, "GET", "/metrics").1;
    assert!(ok, "missing failure counts:\n{text}\n{}", d.log());
    // One result per attempt: a failure is never also counted as a success, not even a
    // fetch that succeeded before its output could not be written.
    assert_eq!(metric(&text, "bad", "success"), 0.0, "{text}");
    assert_eq!(metric(&text, "unwritable", "success"), 0.0, "{text}");
}

// ---- 9. a credential that needs a person is not healthy ---------------------------------

#[test]
fn a_rejected_chain_without_login_is_unhealthy_while_its_token_is_still_valid() {
    let env = Env::new();
    let port = free_port();
    vandar_config(&env, false, "");
    let text = std::fs::read_to_string(env.path("config.yaml")).unwrap();
    std::fs::write(
        env.path("config.yaml"),
        text.replacen(
            "credentials:",
            &format!("listen: 127.0.0.1:{port}\ncredentials:"),
            1,
        ),
    )
    .unwrap();
    let d = env.daemon();
    assert!(
        wait_for(10 * S, || http(port, "GET", "/readyz").0 == 200),
        "{}",
        d.log()
    );
    env.run(&["status"]).assert_code(0);

    env.emu
        .push_fault(Endpoint::VandarRefresh, Fault::Revoke, 1);
    d.signal(nix::sys::signal::Signal::SIGUSR1);
    assert!(
        wait_for(10 * S, || env.state("vandar-main").failures() >= 1),
        "{}",
        d.log()
    );

    let r = env.run(&["status"]);
    r.assert_code(1);
    assert!(r.stdout.contains("needs a person"), "{}", r.stdout);
    assert!(r.stdout.contains("refresh token"), "{}", r.stdout);
    let json = env.run(&["status", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(entries[0]["token"], "valid", "{entries}");
    assert_eq!(entries[0]["health"], "needs_person", "{entries}");

    let (_, status) = http(port, "GET", "/v1/status");
    assert!(status.contains("\"needs_person\""), "{status}");
    let metrics = http(port, "GET", "/metrics").1;
    assert!(
        metrics.contains("tokend_credential_needs_person{credential=\"vandar-main\"} 1"),
        "{metrics}"
    );
    let (code, body) = http(port, "GET", "/readyz");
    // The token still works: readiness stays, and says what is coming.
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("needs_person") && body.contains("vandar-main"),
        "{body}"
    );
}

// ---- 10. outputs are restored from state ----------------------------------------------

#[test]
fn a_deleted_or_altered_output_is_restored_from_state() {
    let env = Env::new();
    let port = free_port();
    yavapteke_config(&env, "");
    let text = std::fs::read_to_string(env.path("config.yaml")).unwrap();
    std::fs::write(
        env.path("config.yaml"),
        text.replacen(
            "credentials:",
            &format!("listen: 127.0.0.1:{port}\ncredentials:"),
            1,
        ),
    )
    .unwrap();
    let d = env.daemon();
    assert!(
        wait_for(10 * S, || http(port, "GET", "/readyz").0 == 200),
        "{}",
        d.log()
    );
    let token = env.state("pharmacy").token().unwrap();
    let out = env.path("out/pharmacy.token");

    // Deleted: put back by the periodic check, without calling the provider.
    std::fs::remove_file(&out).unwrap();
    // The check runs every 30 s (when the loop wakes anyway).
    assert!(
        wait_for(45 * S, || env.read("out/pharmacy.token") == token),
        "a deleted output was not restored:\n{}",
        d.log()
    );

    // Something in its way: not ready, and saying which output, until it is restored.
    // The periodic check may restore the file between the two calls: try again then.
    while {
        let _ = std::fs::remove_file(&out);
        std::fs::create_dir(&out).is_err()
    } {}
    assert!(
        wait_for(45 * S, || {
            let (code, body) = http(port, "GET", "/readyz");
            code == 503 && body.contains("pharmacy")
        }),
        "/readyz still says ready with the output missing:\n{}",
        d.log()
    );
    std::fs::remove_dir(&out).unwrap();
    // Writing into the obstacle failed a few times meanwhile: the retry backoff (capped at
    // retry.max) decides when the next write comes.
    assert!(
        wait_for(40 * S, || env.read("out/pharmacy.token") == token
            && http(port, "GET", "/readyz").0 == 200),
        "not restored after the obstacle went away:\n{}",
        d.log()
    );

    // Altered to the same length: SIGHUP compares contents and restores at once.
    std::fs::write(&out, "x".repeat(token.len())).unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_for(5 * S, || env.read("out/pharmacy.token") == token),
        "an altered output was not restored on SIGHUP:\n{}",
        d.log()
    );
    assert_eq!(env.emu.requests(Endpoint::Yavapteke), 1, "{}", d.log());
}
