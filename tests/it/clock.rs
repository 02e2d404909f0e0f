//! Wall-clock jumps (suspend/resume, an NTP step): deadlines are wall-clock instants, so a
//! refresh that became due by a jump runs within the daemon's 30 s re-check, not after the
//! monotonic sleep it had planned.
//!
//! The daemon runs under libfaketime (Debian package `faketime`) with an offset read from a
//! file on every call, so the test moves tokend's CLOCK_REALTIME mid-run while its monotonic
//! clock (tokio's timers) keeps real time. The emulator runs in the test process on the real
//! clock, so only tokend sees the jump.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::support::*;

const INSTALL: &str = "install the `faketime` Debian package (apt-get install faketime): the \
                       clock-jump tests run tokend under libfaketime";

/// The libfaketime library to preload. Fails (never skips) when faketime is missing.
fn libfaketime() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("faketime").is_file()))
        .unwrap_or(false);
    assert!(on_path, "`faketime` is not on PATH; {INSTALL}");
    let mut dirs = vec![
        PathBuf::from("/usr/lib/faketime"),
        PathBuf::from("/usr/lib64/faketime"),
        PathBuf::from("/usr/local/lib/faketime"),
    ];
    // Debian's multiarch directories: /usr/lib/x86_64-linux-gnu/faketime, ...
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|e| e.path().join("faketime")));
    }
    dirs.into_iter()
        .map(|d| d.join("libfaketime.so.1"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`faketime` is on PATH but libfaketime.so.1 was not found; {INSTALL}")
        })
}

/// Sets tokend's clock offset (libfaketime syntax: `+0`, `+50m`, `+2d`).
fn set_offset(file: &Path, offset: &str) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{offset}\n")).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// `(token, issued_at)` from the credential's record, in tokend's (faked) time.
fn state_token(env: &Env) -> Option<(String, SystemTime)> {
    let state = env.state("pharmacy");
    Some((state.token()?, state.issued_time()?))
}

fn offset_of(t: SystemTime) -> f64 {
    let now = SystemTime::now();
    match t.duration_since(now) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// A daemon under libfaketime. libfaketime keeps shared memory named after the PID and
/// removes it only on a clean exit; a stale one makes a later process with the same PID
/// fail. So stop it with SIGTERM, and remove what a killed one left behind.
struct Faked(Daemon);

impl Drop for Faked {
    fn drop(&mut self) {
        let pid = self.0.pid();
        if self.0.is_running() {
            self.0.signal(nix::sys::signal::Signal::SIGTERM);
            self.0.wait_exit(12 * S);
        }
        self.0.kill();
        for name in [
            format!("faketime_shm_{pid}"),
            format!("sem.faketime_sem_{pid}"),
        ] {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(name));
        }
    }
}

/// Starts the daemon on a 1 h yavapteke token (refresh at 80 %, jitter 5 %: due 45..48 min
/// after issue) at offset +0, waits for the first token, jumps tokend's clock by `jump`
/// (`jump_secs` in seconds), and asserts a new token is fetched within the loop's re-check.
fn jump_makes_the_token_due(jump: &str, jump_secs: f64) {
    let lib = libfaketime();
    let env = Env::new();
    yavapteke_config(&env, "");
    let offset_file = env.path("faketime.rc");
    set_offset(&offset_file, "+0");
    let mut cmd = env.tokend(&["run"]);
    cmd.env("LD_PRELOAD", &lib)
        .env("FAKETIME_TIMESTAMP_FILE", &offset_file)
        .env("FAKETIME_NO_CACHE", "1")
        // Only the wall clock jumps: tokio's timers keep real (monotonic) time, as they
        // would across an NTP step.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env_remove("FAKETIME")
        .env_remove("FAKETIME_SHARED");
    let d = Faked(env.daemon_with(&mut cmd));
    let d = &d.0;

    assert!(
        wait_for(10 * S, || state_token(&env).is_some()),
        "no first token:\n{}",
        d.log()
    );
    let (first, issued) = state_token(&env).unwrap();
    assert!(
        offset_of(issued).abs() < 5.0,
        "at +0 tokend's clock is off by {:.0} s: is libfaketime reading {}?",
        offset_of(issued),
        offset_file.display()
    );
    assert_eq!(env.emu.requests(Endpoint::Yavapteke), 1);

    set_offset(&offset_file, jump);
    let jumped = Instant::now();
    // SPEC: due refreshes run within a minute of a jump. The loop re-checks the wall clock
    // every 30 s, so ~30 s is typical; the bound is the contract's, not the typical value,
    // so a loaded machine has 30 s of margin.
    assert!(
        wait_for(75 * S, || state_token(&env)
            .is_some_and(|(t, _)| t != first)),
        "no refresh within 75 s of a {jump} clock jump that made the token due:\n{}",
        d.log()
    );
    let took = jumped.elapsed();
    let (second, issued) = state_token(&env).unwrap();
    assert!(env.emu.issued_tokens().contains(&second));
    assert!(wait_for(2 * S, || env.read("out/pharmacy.token") == second));
    // Issued by tokend's jumped clock: the refresh happened because of the jump.
    let ahead = offset_of(issued);
    assert!(
        (ahead - jump_secs).abs() < 60.0,
        "the new token was issued {ahead:.0} s ahead of real time, expected ~{jump_secs} s"
    );
    assert!(
        took <= 60 * S,
        "the due refresh waited {took:?} after the jump (SPEC: within a minute)"
    );
    assert_eq!(env.emu.requests(Endpoint::Yavapteke), 2, "{}", d.log());
}

#[test]
fn a_forward_clock_jump_past_the_refresh_point_refreshes_within_a_minute() {
    jump_makes_the_token_due("+50m", 3000.0);
}

#[test]
fn a_forward_clock_jump_past_expiry_refreshes_within_a_minute() {
    jump_makes_the_token_due("+2d", 172_800.0);
}
