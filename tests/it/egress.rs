//! Egress per credential (SPEC "Egress: proxies"): real proxies on loopback — an HTTP proxy
//! (forwarding and CONNECT) and a SOCKS5 proxy, both with username/password — that record
//! what they were asked, so each test proves which way a request went. Targets use host
//! names that only the proxy resolves (`*.only-proxy.test`), so a request that bypassed the
//! proxy could not have succeeded at all.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;

use crate::support::*;

const PROXY_PASSWORD: &str = "CANARY-proxy-pw-9b1e@:/x";
const YAV_SECRET: &str = "yav-secret";
const PROXY_VARS: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// What a proxy was asked to reach, and with which credentials.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// `CONNECT`, `GET`/`POST` (forwarding), or `SOCKS5`.
    pub how: String,
    /// host:port as the client named it (a host name for remote DNS, an IP for local).
    pub target: String,
    /// `user:password` as received, if any.
    pub auth: Option<String>,
}

/// A proxy on 127.0.0.1 that serves each connection on a thread, resolves the names in
/// `hosts` itself, requires `user:password` if given, and records every request.
pub struct TestProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

#[derive(Clone)]
struct Rules {
    hosts: HashMap<String, SocketAddr>,
    auth: Option<(String, String)>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

#[derive(Clone, Copy)]
pub enum Kind {
    Http,
    Socks5,
}

impl TestProxy {
    pub fn start(kind: Kind, hosts: &[(&str, SocketAddr)], auth: Option<(&str, &str)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rules = Rules {
            hosts: hosts.iter().map(|(h, a)| (h.to_string(), *a)).collect(),
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
            seen: seen.clone(),
        };
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let rules = rules.clone();
                std::thread::spawn(move || {
                    let _ = match kind {
                        Kind::Http => http_conn(conn, &rules),
                        Kind::Socks5 => socks_conn(conn, &rules),
                    };
                });
            }
        });
        TestProxy { addr, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }
}

impl Rules {
    fn resolve(&self, target: &str) -> std::io::Result<TcpStream> {
        let (host, port) = target.rsplit_once(':').expect("host:port");
        let addr = match self.hosts.get(host) {
            Some(a) => SocketAddr::new(a.ip(), port.parse().unwrap()),
            None => format!("{host}:{port}")
                .parse()
                .map_err(|_| std::io::Error::other("unknown host"))?,
        };
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
    }

    fn record(&self, how: &str, target: &str, auth: Option<String>) {
        self.seen.lock().unwrap().push(Seen {
            how: how.to_owned(),
            target: target.to_owned(),
            auth,
        });
    }

    fn accepts(&self, auth: &Option<String>) -> bool {
        match &self.auth {
            None => true,
            Some((u, p)) => auth.as_deref() == Some(&format!("{u}:{p}")),
        }
    }
}

/// Copies both ways until either side closes.
fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(Shutdown::Write);
    });
    let (mut a, mut b) = (a, b);
    let _ = std::io::copy(&mut b, &mut a);
    let _ = a.shutdown(Shutdown::Write);
    let _ = t.join();
}

fn http_conn(conn: TcpStream, rules: &Rules) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n";
        head.push(line);
        if end {
            break;
        }
    }
    let mut parts = head[0].split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let auth = head.iter().find_map(|h| {
        let (name, value) = h.split_once(':')?;
        let value = value.trim().strip_prefix("Basic ")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?;
        name.eq_ignore_ascii_case("proxy-authorization")
            .then(|| String::from_utf8_lossy(&bytes).into_owned())
    });
    let mut conn = conn;
    let host_port = match method {
        "CONNECT" => target.to_owned(),
        _ => {
            let rest = target.strip_prefix("http://").unwrap_or(target);
            rest.split('/').next().unwrap_or("").to_owned()
        }
    };
    rules.record(method, &host_port, auth.clone());
    let refuse = |reader: &mut BufReader<TcpStream>, conn: &mut TcpStream, status: &str| {
        // Read the request body first: closing a socket with unread data resets the
        // connection, and the client would see a reset instead of our answer.
        let length = head.iter().find_map(|h| {
            let (name, value) = h.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        });
        let mut body = vec![0u8; length.unwrap_or(0)];
        reader.read_exact(&mut body)?;
        conn.write_all(format!("HTTP/1.1 {status}\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
    };
    if !rules.accepts(&auth) {
        return refuse(&mut reader, &mut conn, "407 Proxy Authentication Required");
    }
    let mut upstream = match rules.resolve(&host_port) {
        Ok(u) => u,
        Err(_) => return refuse(&mut reader, &mut conn, "502 Bad Gateway"),
    };
    if method == "CONNECT" {
        conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    } else {
        // Forwarding: the first request in origin form, the rest of the connection as is.
        let path = &target[target.find(&host_port).unwrap() + host_port.len()..];
        let mut first = format!("{method} {path} HTTP/1.1\r\n");
        for h in &head[1..] {
            if !h.to_ascii_lowercase().starts_with("proxy-") {
                first.push_str(h);
            }
        }
        upstream.write_all(first.as_bytes())?;
    }
    // Whatever the reader buffered past the head belongs to the upstream.
    let buffered = reader.buffer().to_vec();
    upstream.write_all(&buffered)?;
    pipe(conn, upstream);
    Ok(())
}

fn socks_conn(mut conn: TcpStream, rules: &Rules) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    let read_n = |conn: &mut TcpStream, n: usize| -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        conn.read_exact(&mut buf)?;
        Ok(buf)
    };
    let greeting = read_n(&mut conn, 2)?;
    assert_eq!(greeting[0], 5, "not SOCKS5");
    let methods = read_n(&mut conn, greeting[1] as usize)?;
    let mut auth = None;
    if rules.auth.is_some() {
        if !methods.contains(&2) {
            conn.write_all(&[5, 0xff])?;
            rules.record("SOCKS5", "", None);
            return Ok(());
        }
        conn.write_all(&[5, 2])?;
        conn.read_exact(&mut byte)?; // sub-negotiation version 1
        conn.read_exact(&mut byte)?;
        let user = read_n(&mut conn, byte[0] as usize)?;
        conn.read_exact(&mut byte)?;
        let pass = read_n(&mut conn, byte[0] as usize)?;
        auth = Some(format!(
            "{}:{}",
            String::from_utf8_lossy(&user),
            String::from_utf8_lossy(&pass)
        ));
        if !rules.accepts(&auth) {
            rules.record("SOCKS5", "", auth);
            conn.write_all(&[1, 1])?;
            return Ok(());
        }
        conn.write_all(&[1, 0])?;
    } else {
        conn.write_all(&[5, 0])?;
    }
    let req = read_n(&mut conn, 4)?;
    assert_eq!(&req[..2], &[5, 1], "not a SOCKS5 CONNECT");
    let host = match req[3] {
        1 => {
            let ip = read_n(&mut conn, 4)?;
            format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])
        }
        3 => {
            conn.read_exact(&mut byte)?;
            String::from_utf8_lossy(&read_n(&mut conn, byte[0] as usize)?).into_owned()
        }
        other => panic!("address type {other} not handled by the test proxy"),
    };
    let port = read_n(&mut conn, 2)?;
    let target = format!("{host}:{}", u16::from_be_bytes([port[0], port[1]]));
    rules.record("SOCKS5", &target, auth);
    match rules.resolve(&target) {
        Ok(upstream) => {
            conn.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])?;
            pipe(conn, upstream);
        }
        Err(_) => conn.write_all(&[5, 4, 0, 1, 0, 0, 0, 0, 0, 0])?,
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------

/// A yavapteke credential at `host` (the emulator's port), with `extra` lines (4 spaces).
fn credential(name: &str, env: &Env, host: &str, extra: &str) -> String {
    format!(
        r#"  - name: {name}
    provider: yavapteke
    token_url: http://{host}:{port}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: {{ file: {{dir}}/secrets/yav }}
    timeout: 5s
    retry: {{ initial: 100ms, max: 500ms, permanent: 2s }}
{extra}    outputs:
      - file: {{dir}}/out/{name}.token
"#,
        port = env.emu.addr().port()
    )
}

/// The `egress:` line `check` prints for credential `name`.
fn egress_of(stdout: &str, name: &str) -> String {
    let block = stdout
        .split(&format!("\n{name}: "))
        .nth(1)
        .unwrap_or_else(|| panic!("no credential `{name}` in:\n{stdout}"));
    let line = block.lines().find_map(|l| l.strip_prefix("  egress: "));
    line.unwrap_or_else(|| panic!("no egress line for `{name}`:\n{stdout}"))
        .to_owned()
}

/// Runs the binary with only the given proxy variables set.
fn run(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut cmd = env.tokend(args);
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    cmd.env_remove("REQUEST_METHOD");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    Run::from(cmd.output().expect("run tokend"))
}

fn proxy_auth(password_file: &str) -> String {
    format!(
        "    proxy:\n      url: {{url}}\n      username: tokend\n      password: {{ file: {{dir}}/secrets/{password_file} }}\n"
    )
}

#[test]
fn an_http_proxy_forwards_with_basic_auth_and_a_socks5h_proxy_resolves_remotely() {
    // Two credentials, two proxies: each proxy knows only its own credential's host name.
    let env = Env::new();
    let emu = env.emu.addr();
    let http = TestProxy::start(
        Kind::Http,
        &[("a.only-proxy.test", emu)],
        Some(("tokend", PROXY_PASSWORD)),
    );
    let socks = TestProxy::start(
        Kind::Socks5,
        &[("b.only-proxy.test", emu)],
        Some(("tokend", PROXY_PASSWORD)),
    );
    let creds = [
        credential(
            "via-http",
            &env,
            "a.only-proxy.test",
            &proxy_auth("proxy-pw").replace("{url}", &http.url("http")),
        ),
        credential(
            "via-socks",
            &env,
            "b.only-proxy.test",
            &proxy_auth("proxy-pw").replace("{url}", &socks.url("socks5h")),
        ),
    ];
    env.secret("yav", &format!("{YAV_SECRET}\n"));
    env.secret("proxy-pw", &format!("{PROXY_PASSWORD}\n"));
    env.config(&format!("credentials:\n{}", creds.concat()));

    // An environment proxy that would break everything must not matter: explicit wins.
    let r = run(&env, &["once"], &[("HTTP_PROXY", "http://127.0.0.1:9")]);
    r.assert_code(0);
    assert_eq!(env.emu.successes(Endpoint::Yavapteke), 2);
    let auth = Some(format!("tokend:{PROXY_PASSWORD}"));
    let port = env.emu.addr().port();
    let a = format!("a.only-proxy.test:{port}");
    let b = format!("b.only-proxy.test:{port}");
    assert_eq!(
        http.seen(),
        vec![Seen {
            how: "POST".into(),
            target: a,
            auth: auth.clone()
        }],
        "the HTTP proxy saw something else"
    );
    assert_eq!(
        socks.seen(),
        vec![Seen {
            how: "SOCKS5".into(),
            target: b,
            auth
        }],
        "the SOCKS5 proxy saw something else (socks5h must send the name, not an address)"
    );
    assert!(env.read("out/via-http.token").len() > 10);
    assert!(env.read("out/via-socks.token").len() > 10);

    let r = run(&env, &["check"], &[]);
    r.assert_code(0);
    assert_eq!(
        egress_of(&r.stdout, "via-http"),
        format!(
            "proxy {} (user `tokend`, with a password)",
            http.url("http")
        )
    );
    assert_eq!(
        egress_of(&r.stdout, "via-socks"),
        format!(
            "proxy {} (user `tokend`, with a password)",
            socks.url("socks5h")
        )
    );
    assert!(!r.all().contains(PROXY_PASSWORD), "{}", r.all());
}

#[test]
fn socks5_resolves_locally_and_sends_the_address() {
    let env = Env::new();
    let socks = TestProxy::start(Kind::Socks5, &[], None);
    let extra = format!("    proxy: {}\n", socks.url("socks5"));
    let creds = [credential("local-dns", &env, "localhost", &extra)];
    env.secret("yav", &format!("{YAV_SECRET}\n"));
    env.config(&format!("credentials:\n{}", creds.concat()));
    run(&env, &["once"], &[]).assert_code(0);
    let seen = socks.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].target,
        format!("127.0.0.1:{}", env.emu.addr().port()),
        "socks5 (not socks5h) resolves on this side and sends an address"
    );
}

#[test]
fn a_wrong_proxy_password_fails_clearly_without_showing_it() {
    const WRONG: &str = "CANARY-wrong-proxy-pw";
    let env = Env::new();
    let emu = env.emu.addr();
    let http = TestProxy::start(
        Kind::Http,
        &[("a.only-proxy.test", emu)],
        Some(("tokend", PROXY_PASSWORD)),
    );
    let socks = TestProxy::start(
        Kind::Socks5,
        &[("b.only-proxy.test", emu)],
        Some(("tokend", PROXY_PASSWORD)),
    );
    let creds = [
        credential(
            "via-http",
            &env,
            "a.only-proxy.test",
            &proxy_auth("wrong-pw").replace("{url}", &http.url("http")),
        ),
        credential(
            "via-socks",
            &env,
            "b.only-proxy.test",
            &proxy_auth("wrong-pw").replace("{url}", &socks.url("socks5h")),
        ),
    ];
    env.secret("yav", &format!("{YAV_SECRET}\n"));
    env.secret("wrong-pw", &format!("{WRONG}\n"));
    env.config(&format!(
        "log: {{ level: trace }}\ncredentials:\n{}",
        creds.concat()
    ));

    let r = run(&env, &["once"], &[]);
    r.assert_code(1);
    assert_eq!(env.emu.requests(Endpoint::Yavapteke), 0);
    let err = &r.stderr;
    assert!(
        err.contains("credential `via-http`")
            && err.contains("HTTP 407")
            && err.contains(&format!("proxy {}", http.url("http")))
            && err.contains("check the proxy's `username` and `password`"),
        "no clear error for the HTTP proxy:\n{err}"
    );
    assert!(
        err.contains("credential `via-socks`")
            && err.contains("credentials not accepted")
            && err.contains(&format!("through proxy {}", socks.url("socks5h"))),
        "no clear error for the SOCKS5 proxy:\n{err}"
    );
    let status = run(&env, &["status", "--json"], &[]);
    let plain = run(&env, &["status"], &[]);
    let check = run(&env, &["check"], &[]);
    let states = env.state("via-http").raw() + &env.state("via-socks").raw();
    for (what, text) in [
        ("once", r.all()),
        ("status --json", status.all()),
        ("status", plain.all()),
        ("check", check.all()),
        ("state files", states),
    ] {
        assert!(
            !text.contains(WRONG),
            "{what} shows the proxy password:\n{text}"
        );
    }
    // The proxies did see it: the canary is real.
    assert!(
        http.seen()
            .iter()
            .any(|s| s.auth.as_deref() == Some(&format!("tokend:{WRONG}")))
    );
}

#[test]
fn the_environment_proxy_applies_unless_the_credential_says_direct() {
    let env = Env::new();
    let emu = env.emu.addr();
    let proxy = TestProxy::start(Kind::Http, &[("env.only-proxy.test", emu)], None);
    let creds = [
        credential("from-env", &env, "env.only-proxy.test", ""),
        credential("bypass", &env, "127.0.0.1", "    proxy: direct\n"),
        credential("excluded", &env, "localhost", ""),
    ];
    env.secret("yav", &format!("{YAV_SECRET}\n"));
    env.config(&format!("credentials:\n{}", creds.concat()));
    let vars = [
        ("HTTP_PROXY", proxy.url("http")),
        ("NO_PROXY", "localhost".to_owned()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let r = run(&env, &["check"], &vars);
    r.assert_code(0);
    assert_eq!(
        egress_of(&r.stdout, "from-env"),
        format!(
            "environment: https targets direct, http targets via HTTP_PROXY={} except NO_PROXY=localhost",
            proxy.url("http")
        )
    );
    assert_eq!(
        egress_of(&r.stdout, "bypass"),
        "direct (`proxy: direct`; proxy variables in the environment are ignored)"
    );

    run(&env, &["once"], &vars).assert_code(0);
    assert_eq!(env.emu.successes(Endpoint::Yavapteke), 3);
    let seen = proxy.seen();
    assert_eq!(
        seen.iter().map(|s| s.target.as_str()).collect::<Vec<_>>(),
        vec![format!("env.only-proxy.test:{}", env.emu.addr().port())],
        "only `from-env` goes through the environment's proxy (`bypass` is direct, `excluded` in NO_PROXY)"
    );
}

#[test]
fn check_rejects_unknown_proxy_schemes_and_half_given_credentials() {
    let env = Env::new();
    let creds = [
        credential(
            "ftp-proxy",
            &env,
            "127.0.0.1",
            "    proxy: ftp://127.0.0.1:21\n",
        ),
        credential(
            "half-auth",
            &env,
            "127.0.0.1",
            "    proxy: { url: \"socks5://127.0.0.1:1080\", password: { file: {dir}/secrets/yav } }\n",
        ),
        credential(
            "fine",
            &env,
            "127.0.0.1",
            "    proxy: socks5h://127.0.0.1:1080\n",
        ),
    ];
    env.secret("yav", &format!("{YAV_SECRET}\n"));
    env.config(&format!("credentials:\n{}", creds.concat()));
    for args in [&["check"][..], &["once"][..]] {
        let r = run(&env, args, &[]);
        r.assert_code(2);
        assert_eq!(
            r.stderr,
            format!(
                "tokend: invalid config `{}` (2 problems):\n  \
                 - credential `ftp-proxy` (line 3): `proxy` `ftp://127.0.0.1:21` has scheme `ftp`; use http, https, socks5 or socks5h (or `direct`)\n  \
                 - credential `half-auth` (line 13): `proxy`: `password` is set but `username` is missing\n",
                env.path("config.yaml").display()
            )
        );
    }
    assert_eq!(
        env.emu.requests(Endpoint::Yavapteke),
        0,
        "no request on a bad config"
    );
}

/// REVIEW row 13: a `ca_file` that is not PEM used to pass `check` and then fail every
/// refresh; it is parsed when the config is built now.
#[test]
fn check_refuses_a_ca_file_that_is_not_pem() {
    let env = Env::new();
    std::fs::write(env.path("not-a-bundle.pem"), "this is not PEM\n").unwrap();
    let creds = [credential(
        "bad-ca",
        &env,
        "127.0.0.1",
        "    ca_file: not-a-bundle.pem\n",
    )];
    env.secret("yav", &format!("{YAV_SECRET}\n"));
    env.config(&format!("credentials:\n{}", creds.concat()));
    for args in [&["check"][..], &["once"][..]] {
        let r = run(&env, args, &[]);
        r.assert_code(2);
        assert!(
            r.stderr.contains(&format!(
                "credential `bad-ca` (line 3): ca_file `{}` holds no PEM certificate",
                env.path("not-a-bundle.pem").display()
            )),
            "{}",
            r.stderr
        );
    }
    assert_eq!(env.emu.requests(Endpoint::Yavapteke), 0);

    // A real certificate is accepted, and `check` says it is trusted.
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/test-ca.pem"),
        env.path("not-a-bundle.pem"),
    )
    .unwrap();
    let r = run(&env, &["check"], &[]);
    r.assert_code(0);
    assert!(
        r.stdout.contains(&format!(
            "also trusts ca_file `{}` (1 certificate(s))",
            env.path("not-a-bundle.pem").display()
        )),
        "{}",
        r.stdout
    );
}

/// The real providers are https: through an HTTP proxy that is a CONNECT tunnel, with the
/// proxy credentials on the CONNECT and TLS (trusting `ca_file`) end to end inside it.
#[test]
fn an_https_target_is_reached_through_a_connect_tunnel_trusting_ca_file() {
    let env = Env::new();
    let (cert, key) = crate::faults::self_signed(env.dir.path()).expect("openssl for a test cert");
    let token = format!("tls-{:016x}", fastrand::u64(..));
    let server =
        crate::faults::TlsServer::start(&cert, &key, &token).expect("python3 for the TLS server");
    let proxy = TestProxy::start(Kind::Http, &[], Some(("tokend", PROXY_PASSWORD)));
    env.secret("yav", &format!("{YAV_SECRET}\n"));
    env.secret("proxy-pw", &format!("{PROXY_PASSWORD}\n"));
    let write = |proxy: &str| {
        env.config(&format!(
            r#"credentials:
  - name: tunnelled
    provider: yavapteke
    token_url: https://127.0.0.1:{port}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: {{ file: {{dir}}/secrets/yav }}
    ca_file: {cert}
    timeout: 5s
{proxy}    outputs:
      - file: {{dir}}/out/tunnelled.token
"#,
            port = server.port,
            cert = cert.display(),
        ))
    };
    write(&proxy_auth("proxy-pw").replace("{url}", &proxy.url("http")));
    let r = run(&env, &["once"], &[]);
    r.assert_code(0);
    assert_eq!(env.read("out/tunnelled.token"), token);
    assert_eq!(
        proxy.seen(),
        vec![Seen {
            how: "CONNECT".into(),
            target: format!("127.0.0.1:{}", server.port),
            auth: Some(format!("tokend:{PROXY_PASSWORD}")),
        }]
    );
    assert!(!r.all().contains(PROXY_PASSWORD));

    // A refused CONNECT says so, names the proxy, and keeps the (wrong) password to itself.
    env.secret("proxy-pw", "CANARY-wrong-proxy-pw\n");
    let r = run(&env, &["once", "--force"], &[]);
    r.assert_code(1);
    assert!(
        r.stderr.contains("credential `tunnelled`")
            && r.stderr.contains("proxy authorization required (HTTP 407): check the proxy's `username` and `password`")
            && r.stderr.contains(&format!("through proxy {}", proxy.url("http"))),
        "{}",
        r.stderr
    );
    assert!(!r.all().contains("CANARY-wrong-proxy-pw"), "{}", r.all());
    assert_eq!(proxy.seen().len(), 2);

    // The same through HTTPS_PROXY, credentials in the variable: refused, then accepted.
    write("");
    let at = |pw: &str| {
        format!(
            "http://tokend:{}@{}",
            pw.replace('@', "%40")
                .replace(':', "%3A")
                .replace('/', "%2F"),
            proxy.addr
        )
    };
    let r = run(
        &env,
        &["once", "--force"],
        &[("HTTPS_PROXY", &at("CANARY-wrong-env-pw"))],
    );
    r.assert_code(1);
    assert!(
        r.stderr.contains("proxy authorization required (HTTP 407)")
            && r.stderr
                .contains("through the proxy from the environment (see `tokend check`)"),
        "{}",
        r.stderr
    );
    assert!(!r.all().contains("CANARY-wrong-env-pw"), "{}", r.all());
    let r = run(
        &env,
        &["once", "--force"],
        &[("HTTPS_PROXY", &at(PROXY_PASSWORD))],
    );
    r.assert_code(0);
    let seen = proxy.seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[3].auth, Some(format!("tokend:{PROXY_PASSWORD}")));
    assert_eq!(seen[3].how, "CONNECT");
}

/// A reload that changes a credential's proxy takes effect: the next refresh goes through
/// the new proxy (the shared clients are keyed by egress, not by credential).
#[test]
fn a_reload_moves_a_credential_to_its_new_proxy() {
    let env = Env::new();
    let emu = env.emu.addr();
    let old = TestProxy::start(Kind::Http, &[("r.only-proxy.test", emu)], None);
    let new = TestProxy::start(Kind::Socks5, &[("r.only-proxy.test", emu)], None);
    env.secret("yav", &format!("{YAV_SECRET}\n"));
    let write = |proxy: &str| {
        let extra = format!("    proxy: {proxy}\n");
        env.config(&format!(
            "credentials:\n{}",
            credential("moving", &env, "r.only-proxy.test", &extra)
        ));
    };
    write(&old.url("http"));
    let mut cmd = env.tokend(&["run"]);
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    let d = env.daemon_with(&mut cmd);
    assert!(
        wait_for(Duration::from_secs(10), || env
            .path("out/moving.token")
            .exists()),
        "no first token:\n{}",
        d.log()
    );
    assert_eq!(old.seen().len(), 1);

    write(&new.url("socks5h"));
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || d
            .log()
            .contains("config reloaded")),
        "{}",
        d.log()
    );
    d.signal(nix::sys::signal::Signal::SIGUSR1);
    assert!(
        wait_for(Duration::from_secs(10), || env
            .emu
            .successes(Endpoint::Yavapteke)
            >= 2),
        "no refresh after the reload:\n{}",
        d.log()
    );
    assert_eq!(
        old.seen().len(),
        1,
        "the old proxy was used after the reload"
    );
    let seen = new.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target, format!("r.only-proxy.test:{}", emu.port()));
}
