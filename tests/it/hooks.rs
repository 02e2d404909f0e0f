//! `on_refresh` hooks: run after every output is written, told what changed through the
//! environment, bounded by a timeout that really kills, never fatal, and `signal` hooks that
//! read the target's PID afresh every time.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::support::*;

/// A yavapteke credential `name` with a raw and a json output and `hooks` (YAML list items
/// under `on_refresh:`, indented 6 spaces), after the credential `before` (may be empty).
fn hook_config(env: &Env, before: &str, hooks: &str) {
    env.secret("yav", "yav-secret\n");
    env.secret("oauth", "oauth-secret\n");
    env.config(&format!(
        r#"credentials:
{before}  - name: pharmacy
    provider: yavapteke
    token_url: {{url}}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: {{ file: {{dir}}/secrets/yav }}
    timeout: 2s
    retry: {{ initial: 100ms, max: 500ms, permanent: 2s }}
    outputs:
      - file: {{dir}}/out/pharmacy.token
      - file: {{dir}}/out/pharmacy.json
        format: json
    on_refresh:
{hooks}"#
    ));
}

/// `KEY=value` lines of a file written by `env | grep ^TOKEND_`.
fn env_file(env: &Env, rel: &str) -> BTreeMap<String, String> {
    env.read(rel)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

const ENV_HOOK: &str = r#"      - exec: ["/bin/sh", "-c", "env | grep ^TOKEND_ > {dir}/hook.env.tmp; cat {dir}/out/pharmacy.token > {dir}/hook.token; cat {dir}/out/pharmacy.json > {dir}/hook.json; mv {dir}/hook.env.tmp {dir}/hook.env"]
"#;

/// The hook saw this refresh's token in both outputs and was told the right things.
#[track_caller]
fn assert_hook_saw_current_token(env: &Env) {
    let token = env.read("out/pharmacy.token");
    let json = env.read("out/pharmacy.json");
    assert!(env.emu.issued_tokens().contains(&token));
    assert_eq!(
        env.read("hook.token"),
        token,
        "the hook ran before the raw output was written"
    );
    assert_eq!(
        env.read("hook.json"),
        json,
        "the hook ran before the json output was written"
    );
    let vars = env_file(env, "hook.env");
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        vars.get("TOKEND_CREDENTIAL").map(String::as_str),
        Some("pharmacy"),
        "{vars:?}"
    );
    let expires = vars.get("TOKEND_EXPIRES_AT").expect("TOKEND_EXPIRES_AT");
    assert_eq!(Some(expires.as_str()), doc["expires_at"].as_str());
    humantime::parse_rfc3339(expires)
        .unwrap_or_else(|e| panic!("{expires:?} is not RFC 3339: {e}"));
    let outputs = format!(
        "{}:{}",
        env.path("out/pharmacy.token").display(),
        env.path("out/pharmacy.json").display()
    );
    assert_eq!(vars.get("TOKEND_OUTPUTS"), Some(&outputs), "{vars:?}");
}

#[test]
fn exec_hook_runs_after_the_outputs_with_credential_expiry_and_paths() {
    let env = Env::new();
    hook_config(&env, "", ENV_HOOK);
    let d = env.daemon();
    assert!(
        wait_for(5 * S, || env.path("hook.env").exists()),
        "hook did not run:\n{}",
        d.log()
    );
    assert_hook_saw_current_token(&env);

    // The next refresh runs it again, with the new token in place.
    let first = env.read("out/pharmacy.token");
    std::fs::remove_file(env.path("hook.env")).unwrap();
    d.signal(Signal::SIGUSR1);
    assert!(
        wait_for(5 * S, || env.path("hook.env").exists()),
        "hook did not run again:\n{}",
        d.log()
    );
    assert_ne!(env.read("out/pharmacy.token"), first);
    assert_hook_saw_current_token(&env);
}

#[test]
fn exec_hook_runs_under_once() {
    let env = Env::new();
    hook_config(&env, "", ENV_HOOK);
    env.run(&["once"]).assert_code(0);
    assert_hook_saw_current_token(&env);

    // Nothing was written (the token is fresh): no hook.
    std::fs::remove_file(env.path("hook.env")).unwrap();
    env.run(&["once"]).assert_code(0);
    assert!(!env.path("hook.env").exists());
    env.run(&["once", "--force"]).assert_code(0);
    assert_hook_saw_current_token(&env);
}

#[test]
fn a_failing_hook_is_logged_and_not_fatal() {
    let env = Env::new();
    hook_config(
        &env,
        "",
        r#"      - exec: ["/bin/sh", "-c", "echo reload refused >&2; exit 3"]
      - exec: ["/bin/sh", "-c", "touch {dir}/second-hook-ran"]
"#,
    );
    let run = env.run(&["once"]);
    run.assert_code(0);
    assert!(
        env.emu
            .issued_tokens()
            .contains(&env.read("out/pharmacy.token"))
    );
    assert!(
        run.stderr.contains("on_refresh hook failed"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("exit status: 3"), "{}", run.stderr);
    assert!(
        run.stderr.contains("reload refused"),
        "the hook's last stderr line:\n{}",
        run.stderr
    );
    assert!(
        env.path("second-hook-ran").exists(),
        "a failed hook stopped the next one"
    );
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // pid (comm) STATE ...; comm may hold spaces, so look after the last ')'.
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                != Some('Z')
        }
        Err(_) => false,
    }
}

fn pids(env: &Env, rel: &str) -> Vec<i32> {
    env.read(rel)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn a_hanging_hook_is_killed_at_its_timeout_and_blocks_nothing() {
    let env = Env::with(EmulatorConfig {
        yavapteke_lifetime: 3 * S,
        ..Default::default()
    });
    let other = r#"  - name: other
    provider: oauth2
    token_url: {url}/oauth2/token
    client_id: tokend
    client_secret: { file: {dir}/secrets/oauth }
    outputs:
      - file: {dir}/out/other.token
"#;
    hook_config(
        &env,
        other,
        r#"      - exec: ["/bin/sh", "-c", "echo $$ >> {dir}/sleep.pids; exec /bin/sleep 30"]
        timeout: 1s
"#,
    );
    let mut d = env.daemon();
    assert!(
        wait_for(5 * S, || !pids(&env, "sleep.pids").is_empty()),
        "{}",
        d.log()
    );
    let started = Instant::now();
    let first = pids(&env, "sleep.pids")[0];
    assert!(alive(first));
    // The other credential is served while this hook hangs.
    assert!(
        wait_for(S / 2, || env.path("out/other.token").exists()),
        "{}",
        d.log()
    );
    assert!(
        alive(first),
        "the hook was gone before the other credential was written"
    );

    assert!(
        wait_for(3 * S, || !alive(first)),
        "the hook was not killed:\n{}",
        d.log()
    );
    let killed_after = started.elapsed();
    assert!(killed_after >= S / 2, "killed too early: {killed_after:?}");
    assert!(killed_after <= 5 * S / 2, "killed late: {killed_after:?}");
    assert!(
        wait_for(S, || d.log().contains("on_refresh hook failed")),
        "the kill is not logged:\n{}",
        d.log()
    );
    assert!(d.log().contains("killed"), "{}", d.log());

    // The next refresh of the 3 s token still comes, and runs the hook again.
    assert!(
        wait_for(5 * S, || pids(&env, "sleep.pids").len() >= 2),
        "no refresh after the hanging hook:\n{}",
        d.log()
    );
    assert!(env.emu.requests(Endpoint::Yavapteke) >= 2);
    assert!(d.is_running());

    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(10 * S), Some(0), "{}", d.log());
    for pid in pids(&env, "sleep.pids") {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// A stand-in application that appends to `hup_file` on every SIGHUP and writes its PID to
/// `{dir}/app.pid`; killed on drop.
struct App(Child);

impl App {
    fn start(env: &Env, hup_file: &str) -> App {
        let script = format!(
            "trap 'echo got >> {}' HUP; echo $$ > {}.tmp; mv {}.tmp {}; while :; do sleep 0.1; done",
            env.path(hup_file).display(),
            env.path("app.pid").display(),
            env.path("app.pid").display(),
            env.path("app.pid").display(),
        );
        // A shell cannot trap a signal that was ignored when it started (POSIX), and a
        // test runner under `nohup` ignores SIGHUP: reset it, so the test does not depend
        // on the dispositions it inherits.
        let child = Command::new("env")
            .args(["--default-signal=HUP", "/bin/sh", "-c"])
            .arg(script)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let app = App(child);
        let pid = app.pid().to_string();
        assert!(
            wait_for(5 * S, || env.read("app.pid").trim() == pid),
            "app did not start"
        );
        app
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hups(env: &Env, rel: &str) -> usize {
    env.read(rel).lines().filter(|l| *l == "got").count()
}

#[test]
fn signal_hook_reads_the_pid_file_afresh_each_time() {
    let env = Env::new();
    hook_config(
        &env,
        "",
        "      - signal: HUP\n        pid_file: {dir}/app.pid\n",
    );
    let first = App::start(&env, "hup1");
    env.run(&["once"]).assert_code(0);
    assert!(
        wait_for(2 * S, || hups(&env, "hup1") == 1),
        "first app got no SIGHUP"
    );
    let first_pid = first.pid();
    drop(first);

    // The application restarts with a new PID; the next refresh signals the new one.
    let second = App::start(&env, "hup2");
    assert_ne!(second.pid(), first_pid);
    let run = env.run(&["once", "--force"]);
    run.assert_code(0);
    assert!(
        wait_for(2 * S, || hups(&env, "hup2") == 1),
        "the restarted app got no SIGHUP:\n{}",
        run.stderr
    );
    assert_eq!(hups(&env, "hup1"), 1);
    assert!(!run.stderr.contains("hook failed"), "{}", run.stderr);
}

#[test]
fn sigterm_during_a_hanging_hook_exits_0_and_leaves_no_hook_behind() {
    let env = Env::new();
    // Default hook timeout (30 s) is longer than the shutdown grace period (10 s).
    hook_config(
        &env,
        "",
        r#"      - exec: ["/bin/sh", "-c", "echo $$ >> {dir}/sleep.pids; exec /bin/sleep 60"]
"#,
    );
    let mut d = env.daemon();
    assert!(
        wait_for(5 * S, || !pids(&env, "sleep.pids").is_empty()),
        "{}",
        d.log()
    );
    let pid = pids(&env, "sleep.pids")[0];
    let sent = Instant::now();
    d.signal(Signal::SIGTERM);
    let code = d.wait_exit(13 * S);
    let took = sent.elapsed();
    let gone = wait_for(S, || !alive(pid));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    assert_eq!(code, Some(0), "no clean exit after {took:?}:\n{}", d.log());
    assert!(took <= 12 * S, "took {took:?}");
    assert!(
        gone,
        "the hook's process (pid {pid}) outlived tokend:\n{}",
        d.log()
    );
}
