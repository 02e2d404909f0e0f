use std::collections::HashMap;
use std::path::Path;

use super::*;

const CA: &str = include_str!("../../tests/fixtures/test-ca.pem");

struct Vars(HashMap<String, String>);

impl Environment for Vars {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

fn vars(pairs: &[(&str, &str)]) -> Vars {
    Vars(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn proxy_urls() {
    // (input, Ok(display) or Err(substring))
    let cases: &[(&str, Result<&str, &str>)] = &[
        ("http://proxy:3128", Ok("http://proxy:3128")),
        ("https://proxy.example", Ok("https://proxy.example")),
        ("socks5://10.8.0.1", Ok("socks5://10.8.0.1:1080")),
        ("socks5h://10.8.0.1:9050", Ok("socks5h://10.8.0.1:9050")),
        (
            "socks5h://me:p%40ss%3Aw@host:1",
            Ok("socks5h://host:1 (user `me`, with a password)"),
        ),
        ("http://me@host:1", Ok("http://host:1 (user `me`)")),
        ("ftp://proxy:21", Err("has scheme `ftp`")),
        ("socks4://proxy:1080", Err("has scheme `socks4`")),
        ("proxy:3128", Err("has scheme `proxy`")),
        ("no url", Err("is not a URL")),
        ("http://proxy:3128/path", Err("has a path or query")),
        ("http://proxy:3128/?q=1", Err("has a path or query")),
    ];
    for (input, want) in cases {
        let got = ProxyUrl::parse(input).map(|(p, _)| p.to_string());
        match (want, &got) {
            (Ok(w), Ok(g)) => assert_eq!(g, w, "{input}"),
            (Err(w), Err(g)) => assert!(g.contains(w), "{input}: {g}"),
            _ => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn a_password_in_the_url_is_decoded_into_a_secret_and_leaves_the_url() {
    let (p, had_password) = ProxyUrl::parse("socks5h://me:p%40ss%3Aw@host:1").unwrap();
    assert!(had_password);
    assert_eq!(p.password.as_ref().unwrap().expose(), "p@ss:w");
    assert_eq!(p.url().as_str(), "socks5h://host:1");
    let debug = format!(
        "{:?}",
        Egress {
            ca: None,
            proxy: Proxy::Url(p.clone())
        }
    );
    assert!(
        !debug.contains("p@ss") && !debug.contains("p%40ss"),
        "{debug}"
    );
    assert!(!p.to_string().contains("p@ss"));
}

#[test]
fn credentials_beside_the_url() {
    let (bare, _) = ProxyUrl::parse("http://proxy:3128").unwrap();
    let with = bare
        .clone()
        .with_auth(Some("tokend".into()), Some(Secret::new("pw")))
        .unwrap();
    assert_eq!(
        with.to_string(),
        "http://proxy:3128 (user `tokend`, with a password)"
    );
    let e = bare
        .clone()
        .with_auth(None, Some(Secret::new("pw")))
        .unwrap_err();
    assert!(e.contains("`username` is missing"), "{e}");
    let long = "x".repeat(256);
    let (socks, _) = ProxyUrl::parse("socks5://proxy:1080").unwrap();
    let e = socks
        .with_auth(Some("u".into()), Some(Secret::new(long.clone())))
        .unwrap()
        .check_auth_lengths()
        .unwrap_err();
    assert!(e.contains("longer than 255 bytes"), "{e}");
    // HTTP proxies take Basic auth of any length.
    bare.clone()
        .with_auth(Some("u".into()), Some(Secret::new(long)))
        .unwrap()
        .check_auth_lengths()
        .unwrap();
    let (inline, _) = ProxyUrl::parse("http://u:p@proxy:3128").unwrap();
    let e = inline.with_auth(Some("x".into()), None).unwrap_err();
    assert!(e.contains("give them once"), "{e}");
}

#[test]
fn clients_are_keyed_by_everything_that_makes_them_differ() {
    let url = |pw: &str| {
        let (p, _) = ProxyUrl::parse("http://proxy:3128").unwrap();
        Proxy::Url(
            p.with_auth(Some("u".into()), Some(Secret::new(pw)))
                .unwrap(),
        )
    };
    let ca = Arc::new(CaBundle::from_pem(Path::new("/ca.pem"), CA.as_bytes()).unwrap());
    let egress = |proxy: Proxy, ca: Option<Arc<CaBundle>>| Egress { ca, proxy };
    let keys = [
        egress(Proxy::Env, None).key(),
        egress(Proxy::Direct, None).key(),
        egress(url("one"), None).key(),
        egress(url("two"), None).key(),
        egress(Proxy::Env, Some(ca.clone())).key(),
        egress(url("one"), Some(ca.clone())).key(),
    ];
    for (i, a) in keys.iter().enumerate() {
        for b in &keys[i + 1..] {
            assert_ne!(a, b);
        }
    }
    assert_eq!(egress(url("one"), None).key(), keys[2]);
    assert_eq!(format!("{:?}", keys[2]), "EgressKey(..)");
}

#[test]
fn ca_bundles_are_parsed_and_checked() {
    let path = Path::new("/etc/tokend/ca.pem");
    let ok = CaBundle::from_pem(path, CA.as_bytes()).unwrap();
    assert_eq!(ok.certificates().len(), 1);
    let two = format!("{CA}\n# comment\n{CA}");
    assert_eq!(
        CaBundle::from_pem(path, two.as_bytes())
            .unwrap()
            .certificates()
            .len(),
        2
    );

    let broken_base64 = CA.replacen("MII", "M!I", 1);
    let garbage_der = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    let key_only = "-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n";
    let cases: &[(&str, &str)] = &[
        ("", "holds no PEM certificate"),
        ("just text\n", "holds no PEM certificate"),
        (key_only, "holds no PEM certificate"),
        (
            &broken_base64,
            "is not a PEM bundle: certificate 1 does not decode",
        ),
        (garbage_der, "certificate 1 is not a usable CA certificate"),
    ];
    for (pem, want) in cases {
        let e = CaBundle::from_pem(path, pem.as_bytes()).unwrap_err();
        assert!(e.contains(want), "{pem:?}: {e}");
        assert!(e.contains("ca_file `/etc/tokend/ca.pem`"), "{e}");
    }
}

#[test]
fn environment_proxies_are_described_as_reqwest_reads_them() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "direct (no `proxy` configured, no HTTPS_PROXY"),
        (
            &[("HTTPS_PROXY", "http://p:3128")],
            "environment: https targets via HTTPS_PROXY=http://p:3128, http targets direct",
        ),
        (
            &[("ALL_PROXY", "socks5h://p:1080")],
            "environment: ALL_PROXY=socks5h://p:1080",
        ),
        (
            &[("https_proxy", "p:3128"), ("http_proxy", "p:3128")],
            "environment: https targets via https_proxy=http://p:3128, http targets via http_proxy=http://p:3128",
        ),
        (
            // The upper-case name wins even when empty, as in reqwest: then ALL_PROXY applies.
            &[
                ("HTTPS_PROXY", ""),
                ("https_proxy", "http://lower:1"),
                ("ALL_PROXY", "http://all:2"),
            ],
            "environment: ALL_PROXY=http://all:2",
        ),
        (
            &[
                ("HTTPS_PROXY", "http://user:hunter22@p:3128"),
                ("HTTP_PROXY", "http://user:hunter22@p:3128"),
                ("NO_PROXY", "localhost,10.0.0.0/8"),
            ],
            "environment: https targets via HTTPS_PROXY=http://p:3128 (with credentials), http targets via HTTP_PROXY=http://p:3128 (with credentials) except NO_PROXY=localhost,10.0.0.0/8",
        ),
        (
            &[("HTTPS_PROXY", "ftp://p:2121")],
            "HTTPS_PROXY=ftp://p:2121 (unusable scheme: these requests go direct)",
        ),
        (
            &[("HTTPS_PROXY", "http://p:1"), ("REQUEST_METHOD", "GET")],
            "direct (REQUEST_METHOD is set",
        ),
    ];
    for (env, want) in cases {
        let got = describe_env(&vars(env));
        assert!(got.contains(want), "{env:?}:\n got  {got}\n want {want}");
        assert!(!got.contains("hunter22"), "{got}");
    }
}

#[test]
fn describe_names_the_route_and_the_trust() {
    let ca = Arc::new(CaBundle::from_pem(Path::new("/ca.pem"), CA.as_bytes()).unwrap());
    let e = Egress {
        ca: Some(ca),
        proxy: Proxy::Direct,
    };
    assert_eq!(
        e.describe(&vars(&[("HTTPS_PROXY", "http://p:1")])),
        "direct (`proxy: direct`; proxy variables in the environment are ignored); also trusts ca_file `/ca.pem` (1 certificate(s))"
    );
}

#[test]
fn credentials_with_the_same_egress_share_one_client() {
    let clients = HttpClients::default();
    let proxy = |pw: &str| {
        let (p, _) = ProxyUrl::parse("socks5h://127.0.0.1:1").unwrap();
        Egress {
            ca: None,
            proxy: Proxy::Url(
                p.with_auth(Some("u".into()), Some(Secret::new(pw)))
                    .unwrap(),
            ),
        }
    };
    let t = std::time::Duration::from_secs(1);
    for e in [Egress::default(), Egress::default(), proxy("a"), proxy("a")] {
        clients.get(&e, t).unwrap();
    }
    assert_eq!(clients.cached(), 2);
    clients.get(&proxy("b"), t).unwrap();
    clients
        .get(
            &Egress {
                ca: None,
                proxy: Proxy::Direct,
            },
            t,
        )
        .unwrap();
    assert_eq!(clients.cached(), 4);
}
