//! Interop: tokend against real, widely used token servers that we did not write — npm's
//! `oidc-provider` and `@node-oauth/oauth2-server` for the generic `oauth2` provider, PyPI's
//! `djangorestframework-simplejwt` for `http_json`. Every test asserts on the server's own
//! view (its request log, its introspection endpoint, its JWKS, its own token
//! authentication), not only on the files tokend writes.
//!
//! The servers are small fixtures in tests/interop/ on pinned versions (package.json with its
//! package-lock.json; requirements.txt). The first test that needs them installs them under
//! target/interop/ (`npm ci`; a venv with pip), once, under a file lock shared by concurrent
//! tests and processes; later runs reuse the install until the pinned files change. A missing
//! `node`, `npm` or `python3` fails the test saying what to install: these tests never skip.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use nix::sys::signal::Signal;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::*;

/// A client secret made of characters that form encoding and HTTP Basic both treat specially.
const RESERVED_SECRET: &str = "a:b%c+d e&f=g/h?";
/// oidc-provider's resource indicator that makes it issue JWT access tokens.
const RESOURCE: &str = "urn:tokend:api";

// ---------------------------------------------------------------------------------------
// Installing the peers

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    repo().join("tests/interop")
}

fn cache() -> PathBuf {
    repo().join("target/interop")
}

/// Fails the test with what to install when `program` cannot run.
fn require(program: &str, what: &str, debian: &str) {
    match Command::new(program).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "interop tests need {what}: `{program} --version` failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "interop tests need {what}, but `{program}` could not be run ({e}). Install it \
             (Debian/Ubuntu: `apt-get install {debian}`); these tests never skip."
        ),
    }
}

/// A digest of the pinned files, so an install is redone when they change.
fn stamp(files: &[PathBuf]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.file_name().unwrap().as_encoded_bytes());
        h.update(std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
    }
    format!("{:x}", h.finalize())
}

/// Runs `install` unless `marker` already holds `stamp`, under an exclusive lock on
/// target/interop/.NAME.lock (NAME: the marker's directory): tests in this process and in
/// others wait for one installer, while the npm and PyPI installs may run side by side.
fn install_once(marker: &Path, stamp: &str, what: &str, install: impl FnOnce()) {
    std::fs::create_dir_all(cache()).unwrap();
    let name = marker
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy();
    let path = cache().join(format!(".{name}.lock"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap();
    lock.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    if std::fs::read_to_string(marker).ok().as_deref() == Some(stamp) {
        return;
    }
    let _ = std::fs::remove_file(marker);
    let started = Instant::now();
    install();
    std::fs::write(marker, stamp).unwrap();
    eprintln!(
        "interop: installed {what} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[track_caller]
fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// target/interop/node with the pinned npm packages installed by `npm ci`.
fn node_dir() -> PathBuf {
    let what = "Node.js 20 or later with npm";
    require("node", what, "nodejs npm");
    require("npm", what, "npm");
    let dir = cache().join("node");
    let pinned = [
        fixtures().join("package.json"),
        fixtures().join("package-lock.json"),
    ];
    install_once(&dir.join(".done"), &stamp(&pinned), "npm packages", || {
        std::fs::create_dir_all(&dir).unwrap();
        for f in &pinned {
            std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
        }
        run_ok(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
        );
    });
    dir
}

/// The python of target/interop/venv, with tests/interop/requirements.txt installed.
fn venv_python() -> PathBuf {
    require(
        "python3",
        "Python 3.10 or later with venv and pip",
        "python3 python3-venv",
    );
    let venv = cache().join("venv");
    let pinned = [fixtures().join("requirements.txt")];
    install_once(
        &venv.join(".done"),
        &stamp(&pinned),
        "PyPI packages",
        || {
            run_ok(
                Command::new("python3")
                    .args(["-m", "venv", "--clear"])
                    .arg(&venv),
            );
            run_ok(
                Command::new(venv.join("bin/python"))
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        "--no-input",
                        "-r",
                    ])
                    .arg(&pinned[0]),
            );
        },
    );
    venv.join("bin/python")
}

// ---------------------------------------------------------------------------------------
// Running a peer

/// A fixture server on 127.0.0.1; killed on drop (and it exits by itself when its stdin
/// closes, should this process die first).
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
    log: PathBuf,
}

impl Peer {
    /// Spawns `cmd` and waits for the `{"port": N}` line it prints once listening.
    fn start(mut cmd: Command, log: PathBuf) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(60));
        let port = line
            .ok()
            .flatten()
            .and_then(Result::ok)
            .and_then(|l| serde_json::from_str::<Value>(&l).ok())
            .and_then(|v| v["port"].as_u64());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not report its port; its stderr:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Peer {
            child,
            stdin,
            port: port as u16,
            log,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the peer's admin routes, as JSON (HTTP/1.0: no chunking, closes).
    #[track_caller]
    fn get(&self, path: &str) -> Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to peer");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read peer answer");
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "GET {path}: {head}\n{body}\n--- peer stderr\n{}",
            self.stderr()
        );
        serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The server's verdict on an access token (`/admin/check`).
    fn check(&self, token: &str) -> Value {
        self.get(&format!("/admin/check?token={}", enc(token)))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn enc(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// Starts a fixture from tests/interop/ with node. The script runs from a copy beside
/// target/interop/node/node_modules, since ES modules resolve packages next to the script.
fn node_peer(env: &Env, script: &str, vars: &[(&str, &str)]) -> Peer {
    static COPIES: AtomicU64 = AtomicU64::new(0);
    let dir = node_dir();
    let tmp = dir.join(format!(
        ".{script}.{}.{}",
        std::process::id(),
        COPIES.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::copy(fixtures().join(script), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(script)).unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script)).current_dir(&dir);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    Peer::start(cmd, env.path(&format!("{script}.log")))
}

// ---------------------------------------------------------------------------------------
// Helpers over tokend's side

/// tokend's recorded expiry of `token` (its current one) is the earlier of `expires_in` after
/// issue and the JWT's `exp` — what the server said, neither a default nor a guess.
#[track_caller]
fn assert_expiry(env: &Env, credential: &str, token: &str, expires_in: Option<u64>) {
    let st = env.state(credential);
    assert_eq!(st.token().as_deref(), Some(token), "{st:#}");
    let issued = st
        .issued_time()
        .unwrap_or_else(|| panic!("no token.issued_at: {st}"));
    let expires = st
        .expires_time()
        .unwrap_or_else(|| panic!("no token.expires_at: {st}"));
    let from_expires_in = expires_in.map(|s| issued + Duration::from_secs(s));
    let want = match (from_expires_in, jwt_exp(token)) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).expect("the server gave no lifetime"),
    };
    let off = match expires.duration_since(want) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(
        off <= Duration::from_millis(250),
        "tokend recorded expiry {} but the server's answer says {} (expires_in {expires_in:?}, \
         JWT exp {:?})",
        humantime::format_rfc3339_millis(expires),
        humantime::format_rfc3339_millis(want),
        jwt_exp(token).map(humantime::format_rfc3339),
    );
}

/// The `exp` claim of a JWT, read without verifying.
fn jwt_exp(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(v["exp"].as_u64()?))
}

fn out(env: &Env, credential: &str) -> String {
    env.read(&format!("out/{credential}.token"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap_or_default().to_owned())
        .collect()
}

#[track_caller]
fn assert_distinct(values: &[String], what: &str) {
    let mut seen = HashSet::new();
    for v in values {
        assert!(seen.insert(v), "{what}: `{v}` appears twice in {values:?}");
    }
}

// ---------------------------------------------------------------------------------------
// oidc-provider: client_credentials

fn oidc_provider(env: &Env) -> Peer {
    node_peer(
        env,
        "oidc_provider.mjs",
        &[("CLIENT_SECRET", RESERVED_SECRET), ("TTL", "5")],
    )
}

/// A client_credentials credential `idp`; `endpoint` is the `token_url:`/`issuer:` line.
fn idp_config(env: &Env, endpoint: &str, client: &str, auth: &str, secret: &str, extra: &str) {
    let secret = env.secret("idp", secret);
    env.config(&format!(
        r#"credentials:
  - name: idp
    provider: oauth2
    {endpoint}
    client_id: {client}
    client_secret: {{ file: {secret} }}
    auth: {auth}
    timeout: 5s
    retry: {{ initial: 200ms, max: 1s, permanent: 2s }}
{extra}    outputs:
      - file: {{dir}}/out/idp.token
"#,
        secret = secret.display()
    ));
}

fn client_for(auth: &str) -> &'static str {
    match auth {
        "client_secret_basic" => "tokend-basic",
        _ => "tokend-post",
    }
}

const JWT_EXTRA: &str = "    resource: urn:tokend:api\n    scope: \"read write\"\n";

/// The provider's log of token endpoint requests.
fn token_requests(idp: &Peer) -> Vec<Value> {
    let log = idp.get("/admin/log");
    log.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["path"] == "/token")
        .cloned()
        .collect()
}

/// One `tokend once` against oidc-provider; checks the provider's log, its verdict on the
/// written token, and the lifetime tokend took from the answer.
fn oidc_client_credentials(auth: &str, jwt: bool) {
    let env = Env::new();
    let idp = oidc_provider(&env);
    let client = client_for(auth);
    let extra = if jwt { JWT_EXTRA } else { "" };
    idp_config(
        &env,
        &format!("token_url: {}/token", idp.url()),
        client,
        auth,
        RESERVED_SECRET,
        extra,
    );
    env.run(&["once"]).assert_code(0);
    let token = out(&env, "idp");

    let log = token_requests(&idp);
    assert_eq!(log.len(), 1, "{log:#?}");
    let e = &log[0];
    assert_eq!(e["status"], 200, "{e:#}\n{}", idp.stderr());
    assert_eq!(e["grant_type"], "client_credentials");
    assert_eq!(e["client_id"], client);
    let how = if auth == "client_secret_basic" {
        "basic"
    } else {
        "post"
    };
    assert_eq!(e["auth"], how, "the secret travelled the wrong way: {e:#}");
    assert_eq!(e["access_token"].as_str(), Some(token.as_str()));

    let verdict = idp.check(&token);
    assert_eq!(verdict["active"], true, "{verdict:#}");
    if jwt {
        assert_eq!(e["resource"], RESOURCE);
        assert_eq!(verdict["format"], "jwt");
        assert_eq!(verdict["header"]["typ"], "at+jwt");
        assert_eq!(verdict["claims"]["aud"], RESOURCE);
        assert_eq!(verdict["claims"]["client_id"], client);
        assert_eq!(verdict["claims"]["scope"], "read write");
    } else {
        assert_eq!(verdict["format"], "opaque");
        assert_eq!(verdict["client_id"], client);
    }

    assert_eq!(e["expires_in"], 5);
    assert_expiry(&env, "idp", &token, Some(5));
}

#[test]
fn oidc_provider_jwt_access_token_with_client_secret_post() {
    oidc_client_credentials("client_secret_post", true);
}

#[test]
fn oidc_provider_jwt_access_token_with_client_secret_basic() {
    oidc_client_credentials("client_secret_basic", true);
}

#[test]
fn oidc_provider_opaque_token_with_client_secret_post() {
    oidc_client_credentials("client_secret_post", false);
}

#[test]
fn oidc_provider_opaque_token_with_client_secret_basic() {
    oidc_client_credentials("client_secret_basic", false);
}

#[test]
fn oidc_provider_wrong_secret_fails_once_with_the_providers_description() {
    let env = Env::new();
    let idp = oidc_provider(&env);
    for (n, auth) in ["client_secret_post", "client_secret_basic"]
        .into_iter()
        .enumerate()
    {
        // A secret that differs from the right one only in a reserved character.
        let wrong = RESERVED_SECRET.replace('+', " ");
        idp_config(
            &env,
            &format!("token_url: {}/token", idp.url()),
            client_for(auth),
            auth,
            &wrong,
            "",
        );
        let r = env.run(&["once"]);
        r.assert_code(1);
        let log = token_requests(&idp);
        assert_eq!(log.len(), n + 1, "{log:#?}");
        let e = &log[n];
        assert_eq!(e["status"], 401, "{auth}: {e:#}");
        assert_eq!(e["error"], "invalid_client", "{auth}: {e:#}");
        let description = e["error_description"].as_str().unwrap();
        assert!(!description.is_empty());
        assert!(
            r.stderr.contains("credential `idp`")
                && r.stderr.contains(&format!("invalid_client: {description}")),
            "{auth}: stderr does not carry the provider's error and description \
             `{description}`:\n{}",
            r.stderr
        );
        assert!(
            !r.stderr.contains(&wrong) && !r.stderr.contains(&enc(&wrong)),
            "{auth}: the secret leaked:\n{}",
            r.stderr
        );
        assert!(
            !env.path("out/idp.token").exists(),
            "{auth}: a failed fetch wrote an output"
        );
    }
}

#[test]
fn oidc_provider_issuer_discovery_finds_the_token_endpoint_before_each_fetch() {
    let env = Env::new();
    let idp = oidc_provider(&env);
    idp_config(
        &env,
        &format!("issuer: {}", idp.url()),
        "tokend-basic",
        "client_secret_basic",
        RESERVED_SECRET,
        JWT_EXTRA,
    );
    let check = env.run(&["check"]);
    check.assert_code(0);
    env.run(&["once"]).assert_code(0);
    env.run(&["once", "--force"]).assert_code(0);

    let log = idp.get("/admin/log");
    let seen: Vec<(String, String, i64)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
                e["status"].as_i64().unwrap(),
            )
        })
        .collect();
    let discovery = (
        "GET".to_owned(),
        "/.well-known/openid-configuration".to_owned(),
        200,
    );
    let token = ("POST".to_owned(), "/token".to_owned(), 200);
    assert_eq!(
        seen,
        vec![discovery.clone(), token.clone(), discovery, token],
        "expected discovery, then the token request, for each fetch"
    );
    let written = out(&env, "idp");
    assert_eq!(
        token_requests(&idp).last().unwrap()["access_token"].as_str(),
        Some(written.as_str())
    );
    let verdict = idp.check(&written);
    assert_eq!(verdict["active"], true, "{verdict:#}");
}

#[test]
fn oidc_provider_daemon_refreshes_5s_jwts_before_they_expire() {
    let env = Env::new();
    let idp = oidc_provider(&env);
    idp_config(
        &env,
        &format!("token_url: {}/token", idp.url()),
        "tokend-post",
        "client_secret_post",
        RESERVED_SECRET,
        JWT_EXTRA,
    );
    let started = Instant::now();
    let mut daemon = env.daemon();
    // Every distinct token the output held, and when it was first seen there.
    let mut seen: Vec<(String, SystemTime)> = Vec::new();
    let grants = |idp: &Peer| token_requests(idp).len();
    let refreshed = wait_for(Duration::from_secs(14), || {
        let t = out(&env, "idp");
        if !t.is_empty() && seen.last().map(|(s, _)| s != &t).unwrap_or(true) {
            seen.push((t, SystemTime::now()));
        }
        grants(&idp) >= 3
    });
    assert!(
        refreshed,
        "the daemon fetched {} times in 14 s (want the first token and two refreshes)\n{}",
        grants(&idp),
        daemon.log()
    );
    let elapsed = started.elapsed();
    let last = token_requests(&idp).last().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        wait_for(Duration::from_secs(3), || out(&env, "idp") == last),
        "the output never held the newest token\n{}",
        daemon.log()
    );
    seen.push((last.clone(), SystemTime::now()));
    let verdict = idp.check(&last);
    assert_eq!(verdict["active"], true, "{verdict:#}");
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(12)), Some(0));

    let log = token_requests(&idp);
    for e in &log {
        assert_eq!(e["status"], 200, "{e:#}");
        assert_eq!(e["resource"], RESOURCE);
    }
    let issued: Vec<String> = log
        .iter()
        .map(|e| e["access_token"].as_str().unwrap().to_owned())
        .collect();
    assert_distinct(&issued, "access tokens");
    // Each refresh came before the previous token expired, and not needlessly early.
    for pair in log.windows(2) {
        let gap = pair[1]["at_ms"].as_u64().unwrap() - pair[0]["at_ms"].as_u64().unwrap();
        let exp = jwt_exp(pair[0]["access_token"].as_str().unwrap()).unwrap();
        let next_at = UNIX_EPOCH + Duration::from_millis(pair[1]["at_ms"].as_u64().unwrap());
        assert!(
            next_at < exp,
            "a refresh came after the token expired: {log:#?}"
        );
        assert!(gap >= 2000, "refreshed after only {gap} ms of a 5 s token");
    }
    // Every token the output ever held was one the provider issued, and unexpired when seen.
    for (token, when) in &seen {
        assert!(
            issued.contains(token),
            "the output held a token never issued"
        );
        assert!(
            *when < jwt_exp(token).unwrap(),
            "the output held an expired token"
        );
    }
    assert!(
        elapsed < Duration::from_secs(13),
        "two refreshes took {elapsed:?}"
    );
}

// ---------------------------------------------------------------------------------------
// @node-oauth/oauth2-server: password and refresh_token grants with rotation

const APP_SECRET: &str = "app-secret";
const ALICE_PASSWORD: &str = "alice-pass";
const SEED: &str = "seed-refresh-5b1c0a77e2";

fn node_oauth2_server(env: &Env, ttl: &str, seed: Option<&str>) -> Peer {
    let mut vars = vec![
        ("TTL", ttl),
        ("CLIENT_SECRET", APP_SECRET),
        ("USER_PASSWORD", ALICE_PASSWORD),
    ];
    if let Some(seed) = seed {
        vars.push(("SEED_REFRESH_TOKEN", seed));
    }
    node_peer(env, "node_oauth2_server.cjs", &vars)
}

/// A credential `app` of client `tokend`; `grant` is the grant-specific keys.
fn app_config(env: &Env, server: &Peer, auth: &str, grant: &str) {
    env.secret("app", APP_SECRET);
    env.config(&format!(
        r#"credentials:
  - name: app
    provider: oauth2
    token_url: {url}/token
    client_id: tokend
    client_secret: {{ file: {{dir}}/secrets/app }}
    auth: {auth}
{grant}    timeout: 5s
    retry: {{ initial: 200ms, max: 1s, permanent: 2s }}
    outputs:
      - file: {{dir}}/out/app.token
"#,
        url = server.url()
    ));
}

fn password_grant(env: &Env, password: &str) -> String {
    env.secret("alice", &format!("{password}\n"));
    "    grant: password\n    username: alice\n    password: { file: {dir}/secrets/alice }\n"
        .to_owned()
}

fn refresh_grant(env: &Env) -> String {
    env.secret("seed", &format!("{SEED}\n"));
    "    grant: refresh_token\n    refresh_token: { file: {dir}/secrets/seed }\n".to_owned()
}

/// The server's log: token requests, refresh tokens presented, password logins.
struct ServerLog {
    requests: Vec<Value>,
    presented: Vec<String>,
    logins: usize,
}

fn server_log(server: &Peer) -> ServerLog {
    let v = server.get("/admin/log");
    let logins = v["logins"].as_array().unwrap();
    assert!(
        logins.iter().all(|l| l["ok"] == true),
        "a login was refused: {v:#}"
    );
    ServerLog {
        requests: v["requests"].as_array().unwrap().clone(),
        presented: strs(&v["presented"]),
        logins: logins.len(),
    }
}

/// The refresh token the server's last successful answer issued.
fn last_issued_refresh(log: &ServerLog) -> String {
    log.requests
        .iter()
        .rev()
        .find(|r| r["status"] == 200)
        .and_then(|r| r["issued_refresh_token"].as_str())
        .unwrap()
        .to_owned()
}

#[track_caller]
fn assert_active(server: &Peer, token: &str) {
    let verdict = server.check(token);
    assert_eq!(verdict["active"], true, "{verdict:#}");
    assert_eq!(verdict["user"], "alice");
}

#[test]
fn node_oauth2_server_daemon_logs_in_once_then_follows_the_rotating_chain() {
    let env = Env::new();
    let server = node_oauth2_server(&env, "2", None);
    let grant = password_grant(&env, ALICE_PASSWORD);
    app_config(&env, &server, "client_secret_basic", &grant);
    let mut daemon = env.daemon();

    // Check each token as soon as it appears: the server must accept what tokend writes.
    let mut written: Vec<String> = Vec::new();
    // (refreshes so far, the newest access token issued)
    let progress = |server: &Peer| {
        let log = server_log(server);
        let n = log
            .requests
            .iter()
            .filter(|r| r["grant_type"] == "refresh_token")
            .count();
        let last = log.requests.last().map(|r| r["access_token"].clone());
        (n, last)
    };
    let refreshes = |server: &Peer| progress(server).0;
    let done = wait_for(Duration::from_secs(15), || {
        let t = out(&env, "app");
        if !t.is_empty() && written.last() != Some(&t) {
            assert_active(&server, &t);
            written.push(t.clone());
        }
        // Done once the third refresh's token reached the output.
        let (n, last) = progress(&server);
        n >= 3 && last.as_ref().and_then(Value::as_str) == Some(t.as_str())
    });
    assert!(
        done,
        "{} refreshes in 15 s of 2 s tokens\n{}",
        refreshes(&server),
        daemon.log()
    );
    daemon.signal(Signal::SIGTERM);
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(12)),
        Some(0),
        "{}",
        daemon.log()
    );

    let log = server_log(&server);
    assert_eq!(
        log.logins, 1,
        "logged in again needlessly: {:#?}",
        log.requests
    );
    assert_eq!(log.requests[0]["grant_type"], "password");
    for (i, r) in log.requests.iter().enumerate() {
        assert_eq!(r["status"], 200, "request {i}: {r:#}");
        if i > 0 {
            assert_eq!(r["grant_type"], "refresh_token", "request {i}: {r:#}");
            assert_eq!(
                r["refresh_token"],
                log.requests[i - 1]["issued_refresh_token"],
                "request {i} did not present the newest refresh token"
            );
        }
    }
    assert_distinct(&log.presented, "refresh tokens presented to the server");
    assert_eq!(
        env.state("app").refresh_token(),
        Some(last_issued_refresh(&log))
    );
    let last_access = log.requests.last().unwrap()["access_token"]
        .as_str()
        .unwrap();
    assert_eq!(out(&env, "app"), last_access);
    assert!(written.len() >= 3, "{written:?}");
}

#[test]
fn node_oauth2_server_refresh_token_chain_rotates_across_processes() {
    let env = Env::new();
    let server = node_oauth2_server(&env, "60", Some(SEED));
    let grant = refresh_grant(&env);
    app_config(&env, &server, "client_secret_post", &grant);

    let mut expected_presented = vec![SEED.to_owned()];
    for run in 1..=3 {
        let r = env.run(&["once", "--force"]);
        r.assert_code(0);
        let log = server_log(&server);
        assert_eq!(
            log.presented, expected_presented,
            "run {run}: the server saw the wrong refresh tokens\n{}",
            r.stderr
        );
        let last = log.requests.last().unwrap();
        assert_eq!(last["status"], 200, "run {run}: {last:#}");
        assert_eq!(last["auth"], "post");
        let issued = last_issued_refresh(&log);
        assert_eq!(
            env.state("app").refresh_token().as_deref(),
            Some(issued.as_str()),
            "run {run}"
        );
        let token = out(&env, "app");
        assert_eq!(last["access_token"].as_str(), Some(token.as_str()));
        assert_active(&server, &token);
        expected_presented.push(issued);
    }
    let log = server_log(&server);
    assert_distinct(&log.presented, "refresh tokens presented");
    assert_eq!(log.logins, 0);
}

#[test]
fn node_oauth2_server_revoked_chain_falls_back_to_password_login() {
    let env = Env::new();
    let server = node_oauth2_server(&env, "60", None);
    let grant = password_grant(&env, ALICE_PASSWORD);
    app_config(&env, &server, "client_secret_post", &grant);

    env.run(&["once"]).assert_code(0);
    env.run(&["once", "--force"]).assert_code(0);
    let log = server_log(&server);
    assert_eq!(
        (log.logins, log.presented.len()),
        (1, 1),
        "{:#?}",
        log.requests
    );
    let live = last_issued_refresh(&log);

    let revoked = server.get("/admin/revoke?user=alice");
    assert_eq!(strs(&revoked["revoked"]), vec![live.clone()]);

    let r = env.run(&["once", "--force"]);
    r.assert_code(0);
    let log = server_log(&server);
    let n = log.requests.len();
    assert_eq!(n, 4, "{:#?}", log.requests);
    assert_eq!(
        log.requests[2]["refresh_token"].as_str(),
        Some(live.as_str())
    );
    assert_eq!(log.requests[2]["error"], "invalid_grant");
    assert_eq!(log.requests[3]["grant_type"], "password");
    assert_eq!(log.requests[3]["status"], 200);
    assert_eq!(log.logins, 2);
    let token = out(&env, "app");
    assert_eq!(
        log.requests[3]["access_token"].as_str(),
        Some(token.as_str())
    );
    assert_active(&server, &token);
    let fresh = last_issued_refresh(&log);
    assert_eq!(
        env.state("app").refresh_token().as_deref(),
        Some(fresh.as_str())
    );

    // The new chain is used from then on.
    env.run(&["once", "--force"]).assert_code(0);
    let log = server_log(&server);
    assert_eq!(log.logins, 2);
    assert_eq!(log.presented.last(), Some(&fresh));
    assert_eq!(log.requests.last().unwrap()["status"], 200);
    assert_distinct(&log.presented, "refresh tokens presented");
    assert_active(&server, &out(&env, "app"));
}

#[test]
fn node_oauth2_server_rejected_chain_is_reported_and_never_resent() {
    let env = Env::new();
    let server = node_oauth2_server(&env, "60", Some(SEED));
    let grant = refresh_grant(&env);
    app_config(&env, &server, "client_secret_basic", &grant);

    env.run(&["once"]).assert_code(0);
    let good = out(&env, "app");
    server.get("/admin/revoke?user=alice");

    let r = env.run(&["once", "--force"]);
    r.assert_code(1);
    let log = server_log(&server);
    let rejected = log.requests.last().unwrap();
    assert_eq!(rejected["error"], "invalid_grant", "{rejected:#}");
    let description = rejected["error_description"].as_str().unwrap();
    assert!(
        r.stderr.contains("credential `app`") && r.stderr.contains(description),
        "stderr lacks the server's `{description}`:\n{}",
        r.stderr
    );
    assert_eq!(
        out(&env, "app"),
        good,
        "a failed refresh touched the output"
    );

    // Neither the dead token nor the already-spent seed is ever presented again.
    let r = env.run(&["once", "--force"]);
    r.assert_code(1);
    let log = server_log(&server);
    assert_eq!(log.presented.len(), 2, "{:?}\n{}", log.presented, r.stderr);
    assert_distinct(&log.presented, "refresh tokens presented");
    assert!(
        r.stderr.contains("refresh token"),
        "the second failure should say a new refresh token is needed:\n{}",
        r.stderr
    );
}

#[test]
fn node_oauth2_server_wrong_password_shows_the_servers_message() {
    let env = Env::new();
    let server = node_oauth2_server(&env, "60", None);
    let grant = password_grant(&env, "not-alices-password");
    app_config(&env, &server, "client_secret_basic", &grant);

    let r = env.run(&["once"]);
    r.assert_code(1);
    let v = server.get("/admin/log");
    let req = &v["requests"][0];
    assert_eq!(req["grant_type"], "password");
    assert_eq!(req["error"], "invalid_grant");
    let description = req["error_description"].as_str().unwrap();
    assert!(
        r.stderr.contains(&format!("invalid_grant: {description}")),
        "stderr lacks the server's `{description}`:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("not-alices-password"), "{}", r.stderr);
    assert!(!env.path("out/app.token").exists());
}

// ---------------------------------------------------------------------------------------
// djangorestframework-simplejwt through `http_json`: no expires_in, the lifetime comes from
// the access token's `exp`; ROTATE_REFRESH_TOKENS with BLACKLIST_AFTER_ROTATION.

fn simplejwt(env: &Env, ttl: &str) -> Peer {
    let python = venv_python();
    let db = env.path("simplejwt.sqlite3");
    let mut cmd = Command::new(python);
    cmd.arg(fixtures().join("simplejwt_server.py"))
        .env("DB", &db)
        .env("TTL", ttl)
        .env("USER_PASSWORD", ALICE_PASSWORD)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    Peer::start(cmd, env.path("simplejwt.log"))
}

/// An `http_json` credential `api` against simplejwt's stock views, as the README shows it.
fn simplejwt_config(env: &Env, server: &Peer, password: &str) {
    env.secret("alice", &format!("{password}\n"));
    let body = r#"credentials:
  - name: api
    provider: http_json
    login_request:
      url: PEER/api/token/
      body: { username: alice, password: "{{password}}" }
    refresh_request:
      url: PEER/api/token/refresh/
      body: { refresh: "{{refresh_token}}" }
    secrets:
      password: { file: {dir}/secrets/alice }
    token_pointer: /access
    refresh_token_pointer: /refresh
    timeout: 5s
    retry: { initial: 200ms, max: 1s, permanent: 2s }
    outputs:
      - file: {dir}/out/api.token
"#;
    env.config(&body.replace("PEER", &server.url()));
}

fn simplejwt_log(server: &Peer) -> Vec<Value> {
    server.get("/admin/log").as_array().unwrap().clone()
}

const LOGIN: &str = "/api/token/";
const REFRESH: &str = "/api/token/refresh/";

#[track_caller]
fn assert_simplejwt_active(server: &Peer, token: &str) {
    let verdict = server.check(token);
    assert_eq!(verdict["active"], true, "{verdict:#}");
    assert_eq!(verdict["user"], "alice");
}

#[test]
fn simplejwt_daemon_logs_in_then_rotates_with_the_lifetime_from_the_jwt() {
    let env = Env::new();
    let server = simplejwt(&env, "5");
    simplejwt_config(&env, &server, ALICE_PASSWORD);
    let mut daemon = env.daemon();

    let mut written: Vec<String> = Vec::new();
    // (refreshes so far, the newest access token issued)
    let progress = |server: &Peer| {
        let log = simplejwt_log(server);
        let n = log.iter().filter(|r| r["path"] == REFRESH).count();
        (n, log.last().map(|r| r["access_token"].clone()))
    };
    let refreshes = |server: &Peer| progress(server).0;
    let done = wait_for(Duration::from_secs(14), || {
        let t = out(&env, "api");
        if !t.is_empty() && written.last() != Some(&t) {
            assert_simplejwt_active(&server, &t);
            written.push(t.clone());
        }
        // Done once the second refresh's token reached the output.
        let (n, last) = progress(&server);
        n >= 2 && last.as_ref().and_then(Value::as_str) == Some(t.as_str())
    });
    assert!(
        done,
        "{} refreshes in 14 s of 5 s tokens\n{}",
        refreshes(&server),
        daemon.log()
    );
    daemon.signal(Signal::SIGTERM);
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(12)),
        Some(0),
        "{}",
        daemon.log()
    );

    let log = simplejwt_log(&server);
    assert_eq!(log[0]["path"], LOGIN);
    assert_eq!(log[0]["content_type"], "application/json");
    for (i, r) in log.iter().enumerate() {
        assert_eq!(r["status"], 200, "request {i}: {r:#}");
        if i > 0 {
            assert_eq!(r["path"], REFRESH, "logged in again needlessly: {log:#?}");
            assert_eq!(
                r["refresh_token"],
                log[i - 1]["issued_refresh_token"],
                "request {i} did not present the newest refresh token"
            );
        }
    }
    for pair in log.windows(2) {
        let exp = jwt_exp(pair[0]["access_token"].as_str().unwrap()).unwrap();
        let next_at = UNIX_EPOCH + Duration::from_millis(pair[1]["at_ms"].as_u64().unwrap());
        assert!(
            next_at < exp,
            "a refresh came after the token expired: {log:#?}"
        );
    }
    let presented: Vec<String> = log[1..]
        .iter()
        .map(|r| r["refresh_token"].as_str().unwrap().to_owned())
        .collect();
    assert_distinct(&presented, "refresh tokens presented");
    let last = log.last().unwrap();
    assert_eq!(
        env.state("api")["refresh_token"],
        last["issued_refresh_token"]
    );
    let token = last["access_token"].as_str().unwrap();
    assert_eq!(out(&env, "api"), token);
    // simplejwt sends no expires_in: the expiry is the access token's exp, not a default.
    assert_expiry(&env, "api", token, None);
    assert!(written.len() >= 3, "{written:?}");
}

#[test]
fn simplejwt_blacklisted_chain_falls_back_to_login() {
    let env = Env::new();
    let server = simplejwt(&env, "300");
    simplejwt_config(&env, &server, ALICE_PASSWORD);

    env.run(&["once"]).assert_code(0);
    env.run(&["once", "--force"]).assert_code(0);
    let log = simplejwt_log(&server);
    let paths: Vec<&str> = log.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths, [LOGIN, REFRESH]);
    let live = log[1]["issued_refresh_token"].as_str().unwrap().to_owned();
    let revoked = server.get("/admin/blacklist?user=alice");
    assert!(strs(&revoked["revoked"]).contains(&live), "{revoked:#}");

    let r = env.run(&["once", "--force"]);
    r.assert_code(0);
    let log = simplejwt_log(&server);
    assert_eq!(log.len(), 4, "{log:#?}");
    assert_eq!(log[2]["path"], REFRESH);
    assert_eq!(log[2]["refresh_token"].as_str(), Some(live.as_str()));
    assert_eq!(log[2]["status"], 401);
    assert_eq!(log[2]["code"], "token_not_valid");
    assert_eq!(log[3]["path"], LOGIN);
    assert_eq!(log[3]["status"], 200);
    let token = out(&env, "api");
    assert_eq!(log[3]["access_token"].as_str(), Some(token.as_str()));
    assert_simplejwt_active(&server, &token);
    assert_eq!(
        env.state("api")["refresh_token"],
        log[3]["issued_refresh_token"]
    );

    // The new chain is used from then on.
    env.run(&["once", "--force"]).assert_code(0);
    let log = simplejwt_log(&server);
    assert_eq!(log.len(), 5, "{log:#?}");
    assert_eq!(log[4]["path"], REFRESH);
    assert_eq!(log[4]["status"], 200);
    assert_eq!(log[4]["refresh_token"], log[3]["issued_refresh_token"]);
    assert_simplejwt_active(&server, &out(&env, "api"));
}

#[test]
fn simplejwt_wrong_password_shows_the_servers_detail() {
    let env = Env::new();
    let server = simplejwt(&env, "300");
    simplejwt_config(&env, &server, "not-alices-password");

    let r = env.run(&["once"]);
    r.assert_code(1);
    let log = simplejwt_log(&server);
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["status"], 401);
    let detail = log[0]["detail"].as_str().unwrap();
    assert!(
        r.stderr.contains("credential `api`") && r.stderr.contains(detail),
        "stderr lacks the server's `{detail}`:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("not-alices-password"), "{}", r.stderr);
    assert!(!env.path("out/api.token").exists());
}

#[test]
fn node_oauth2_server_daemon_logs_in_again_when_the_chain_is_revoked() {
    let env = Env::new();
    let server = node_oauth2_server(&env, "2", None);
    let grant = password_grant(&env, ALICE_PASSWORD);
    app_config(&env, &server, "client_secret_post", &grant);
    let mut daemon = env.daemon();

    let count = |server: &Peer, grant: &str| {
        server_log(server)
            .requests
            .iter()
            .filter(|r| r["grant_type"] == grant && r["status"] == 200)
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(10), || count(&server, "refresh_token")
            >= 1),
        "no refresh\n{}",
        daemon.log()
    );
    let revoked = server.get("/admin/revoke?user=alice");
    assert_eq!(strs(&revoked["revoked"]).len(), 1, "{revoked:#}");
    // The next refresh is refused; the daemon logs in again and follows the new chain.
    assert!(
        wait_for(Duration::from_secs(10), || count(&server, "password") >= 2
            && count(&server, "refresh_token") >= 2),
        "{:#?}\n{}",
        server_log(&server).requests,
        daemon.log()
    );
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(12)), Some(0));

    let log = server_log(&server);
    assert_eq!(log.logins, 2, "{:#?}", log.requests);
    assert_distinct(&log.presented, "refresh tokens presented");
    let refused: Vec<&Value> = log.requests.iter().filter(|r| r["status"] != 200).collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["error"], "invalid_grant");
    assert_eq!(refused[0]["refresh_token"], revoked["revoked"][0]);
    let last = log.requests.last().unwrap();
    assert_eq!(last["grant_type"], "refresh_token");
    assert_eq!(
        env.state("app").refresh_token(),
        Some(last_issued_refresh(&log))
    );
}

#[test]
fn node_oauth2_server_daemon_never_resends_a_rejected_refresh_token() {
    let env = Env::new();
    let server = node_oauth2_server(&env, "2", Some(SEED));
    let grant = refresh_grant(&env);
    app_config(&env, &server, "client_secret_post", &grant);
    let mut daemon = env.daemon();

    let first = |server: &Peer| server_log(server).requests.len();
    assert!(
        wait_for(Duration::from_secs(10), || first(&server) >= 1),
        "{}",
        daemon.log()
    );
    server.get("/admin/revoke?user=alice");
    // retry.permanent is 2 s: give the daemon room for several attempts.
    assert!(
        wait_for(Duration::from_secs(12), || env.state("app")["failures"]
            .as_u64()
            .unwrap_or(0)
            >= 3),
        "the daemon did not keep trying: {:#}\n{}",
        env.state("app"),
        daemon.log()
    );
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(12)), Some(0));

    let log = server_log(&server);
    assert_distinct(&log.presented, "refresh tokens presented");
    assert!(
        log.requests.iter().filter(|r| r["status"] != 200).count() <= 1,
        "a dead refresh token was presented again: {:#?}",
        log.requests
    );
    assert_eq!(log.logins, 0);
}
