//! What readers of the outputs see: the exact bytes of each format, file modes whatever the
//! umask, the kubelet-style directory layout, and that a reader racing the writer never sees
//! an empty, partial or mixed token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokend::atomic::Access;
use tokend::output::{Format, Output, Target};
use tokend::secret::Secret;
use tokend::token::Token;

use crate::support::*;

/// `tokend --config ... ARGS` started by `sh` after `umask UMASK`, with the harness's clean
/// environment.
fn run_with_umask(env: &Env, umask: &str, args: &[&str]) -> Run {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
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
    Run::from(cmd.output().expect("run tokend under sh"))
}

/// An oauth2 credential (emulator defaults) named `name` with the given output items.
fn oauth2_config(env: &Env, name: &str, outputs: &str) -> PathBuf {
    env.secret("idp", "oauth-secret\n");
    env.config(&format!(
        "credentials:
  - name: {name}
    provider: oauth2
    token_url: {{url}}/oauth2/token
    client_id: tokend
    client_secret: {{ file: {{dir}}/secrets/idp }}
    timeout: 2s
    outputs:
{outputs}"
    ))
}

fn is_rfc3339_seconds_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn every_format_has_the_documented_bytes() {
    let env = Env::new();
    oauth2_config(
        &env,
        "any-idp.x",
        "      - file: {dir}/out/raw
      - file: {dir}/out/json
        format: json
      - file: {dir}/out/env
        format: env
      - file: {dir}/out/env-prefixed
        format: env
        env_prefix: IDP
      - file: {dir}/out/tpl
        format: template
        template: \"Authorization: {{token_type}} {{ token }}\\n# {{credential}} until {{expires_at}}\\n\"
",
    );
    let before = SystemTime::now();
    env.run(&["once"]).assert_code(0);
    let token = env.emu.issued_tokens().last().cloned().expect("a token");

    // issued_at and expires_at as the state recorded them, in whole seconds, UTC.
    let state = env.state("any-idp.x");
    let at = |key: &str| {
        let t = humantime::parse_rfc3339(state["token"][key].as_str().unwrap()).unwrap();
        humantime::format_rfc3339_seconds(t).to_string()
    };
    let (issued, expires) = (at("issued_at"), at("expires_at"));
    assert!(is_rfc3339_seconds_utc(&issued), "{issued}");
    assert!(is_rfc3339_seconds_utc(&expires), "{expires}");
    let exp_time = humantime::parse_rfc3339(&expires).unwrap();
    assert!(
        exp_time >= before + Duration::from_secs(3598)
            && exp_time <= SystemTime::now() + Duration::from_secs(3601),
        "expires_at {expires} is not an hour from now"
    );

    assert_eq!(env.read("out/raw"), token, "raw: the token, no newline");
    assert_eq!(
        env.read("out/json"),
        format!(
            "{{\"token\":\"{token}\",\"token_type\":\"Bearer\",\"expires_at\":\"{expires}\",\"issued_at\":\"{issued}\",\"credential\":\"any-idp.x\"}}\n"
        )
    );
    assert_eq!(
        env.read("out/env"),
        format!("ANY_IDP_X_TOKEN={token}\nANY_IDP_X_EXPIRES_AT={expires}\n")
    );
    assert_eq!(
        env.read("out/env-prefixed"),
        format!("IDP_TOKEN={token}\nIDP_EXPIRES_AT={expires}\n")
    );
    assert_eq!(
        env.read("out/tpl"),
        format!("Authorization: Bearer {token}\n# any-idp.x until {expires}\n")
    );
}

fn modes_config(env: &Env) {
    oauth2_config(
        env,
        "idp",
        "      - file: {dir}/out/new/sub/default.token
      - file: {dir}/out/new/shared.json
        format: json
        mode: \"0640\"
      - dir: {dir}/out/new/dir
        mode: \"0640\"
",
    );
}

#[track_caller]
fn assert_modes(env: &Env, umask: &str) {
    assert_eq!(
        mode(&env.path("out/new/sub/default.token")),
        0o600,
        "default mode under umask {umask}"
    );
    assert_eq!(
        mode(&env.path("out/new/shared.json")),
        0o640,
        "mode 0640 under umask {umask}"
    );
    // `mode` follows the symlinks `token -> ..data/token -> ..<version>/token`.
    for name in ["token", "token.json", "expires_at"] {
        assert_eq!(
            mode(&env.path(&format!("out/new/dir/{name}"))),
            0o640,
            "dir file {name} under umask {umask}"
        );
    }
}

#[test]
fn modes_are_exact_under_umask_000() {
    let env = Env::new();
    modes_config(&env);
    run_with_umask(&env, "000", &["once"]).assert_code(0);
    assert_modes(&env, "000");
    for dir in ["out", "out/new", "out/new/sub", "out/new/dir"] {
        assert_eq!(
            mode(&env.path(dir)),
            0o755,
            "created dir {dir} under umask 000"
        );
    }
    // A rewrite keeps them.
    run_with_umask(&env, "000", &["once", "--force"]).assert_code(0);
    assert_modes(&env, "000");
}

#[test]
fn modes_are_exact_under_umask_077() {
    let env = Env::new();
    modes_config(&env);
    run_with_umask(&env, "077", &["once"]).assert_code(0);
    assert_modes(&env, "077");
    run_with_umask(&env, "077", &["once", "--force"]).assert_code(0);
    assert_modes(&env, "077");
}

#[test]
fn created_output_directories_are_0755_under_umask_077() {
    // SPEC: "Output directories are created (mode 0755) when missing." Under a strict umask a
    // 0700 directory hides a `mode: 0640` file from the group it was meant for.
    let env = Env::new();
    modes_config(&env);
    run_with_umask(&env, "077", &["once"]).assert_code(0);
    for dir in ["out", "out/new", "out/new/sub", "out/new/dir"] {
        assert_eq!(
            mode(&env.path(dir)),
            0o755,
            "created dir {dir} under umask 077"
        );
    }
}

/// Every entry under `dir`, recursively, as paths relative to it (symlinks not followed).
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn dir_output_is_a_kubelet_style_atomic_directory() {
    let env = Env::new();
    oauth2_config(
        &env,
        "idp",
        "      - dir: {dir}/out/tokens/idp
      - file: {dir}/out/idp.token
",
    );
    let dir = env.path("out/tokens/idp");
    let mut previous = String::new();
    for run in 0..3 {
        let args: &[&str] = if run == 0 {
            &["once"]
        } else {
            &["once", "--force"]
        };
        env.run(args).assert_code(0);
        let token = env.emu.issued_tokens().last().cloned().unwrap();
        assert_ne!(token, previous);
        previous = token.clone();

        let data = std::fs::read_link(dir.join("..data")).expect("..data is a symlink");
        let version = data.to_str().unwrap().to_owned();
        assert!(
            version.starts_with("..")
                && version.len() > 2
                && version.as_bytes()[2].is_ascii_digit()
                && !version.contains('/'),
            "..data -> {version}: not a sibling `..<timestamp>` directory"
        );
        assert!(dir.join(&version).is_dir());
        for name in ["token", "token.json", "expires_at"] {
            assert_eq!(
                std::fs::read_link(dir.join(name)).unwrap(),
                Path::new("..data").join(name),
                "{name} is not a symlink through ..data"
            );
        }
        assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), token);
        assert_eq!(env.read("out/idp.token"), token);
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("token.json")).unwrap()).unwrap();
        assert_eq!(doc["token"], token.as_str());
        let expires = std::fs::read_to_string(dir.join("expires_at")).unwrap();
        assert_eq!(doc["expires_at"], expires.as_str());
        assert!(is_rfc3339_seconds_utc(&expires), "{expires}");

        let versions: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(versions, vec![version.clone()], "run {run}: stale versions");
        let entries = walk(&env.path("out"));
        let temps: Vec<&String> = entries
            .iter()
            .filter(|p| p.ends_with(".tmp") || p.contains("..data_tmp"))
            .collect();
        assert!(temps.is_empty(), "run {run}: temp files left: {temps:?}");
    }
    let mut top: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("..2"))
        .collect();
    top.sort();
    assert_eq!(top, ["..data", "expires_at", "token", "token.json"]);
}

#[test]
fn missing_output_directories_are_created() {
    let env = Env::new();
    oauth2_config(
        &env,
        "idp",
        "      - file: {dir}/out/a/b/c/idp.token
      - dir: {dir}/out/x/y/z
",
    );
    env.run(&["once"]).assert_code(0);
    let token = env.emu.issued_tokens().last().cloned().unwrap();
    assert_eq!(env.read("out/a/b/c/idp.token"), token);
    assert_eq!(env.read("out/x/y/z/token"), token);
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[test]
fn readers_racing_200_rewrites_never_see_a_partial_or_mixed_token() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("out/raw.token");
    let dir = tmp.path().join("out/dir");
    let outputs = [
        Output {
            target: Target::File {
                path: file.clone(),
                format: Format::Raw,
            },
            access: Access::PRIVATE,
        },
        Output {
            target: Target::Dir { path: dir.clone() },
            access: Access::PRIVATE,
        },
    ];
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    // Different lengths, and an expiry unique to each token, so a mix shows.
    let tokens: Vec<Token> = (0..200u64)
        .map(|i| Token {
            value: Secret::new(format!("tok{i}-{}", "x".repeat((i * 37 % 300) as usize))),
            token_type: "Bearer".into(),
            issued_at: base + Duration::from_secs(i * 100),
            expires_at: base + Duration::from_secs(i * 100 + 3600),
        })
        .collect();
    let expected: HashMap<String, String> = tokens
        .iter()
        .map(|t| (t.value.expose().to_owned(), rfc3339(t.expires_at)))
        .collect();
    for o in &outputs {
        o.write(&tokens[0], "race").unwrap();
    }

    let done = AtomicBool::new(false);
    let (reads, misses) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut reads, mut misses) = (0u64, 0u64);
            while !done.load(Ordering::Acquire) {
                // The plain file: rename is atomic, so it always exists and is whole.
                let raw = std::fs::read_to_string(&file).expect("raw output vanished");
                assert!(expected.contains_key(&raw), "raw read `{raw}`");
                reads += 1;

                // Through the visible name. A version directory removed between path lookup
                // steps gives NotFound (as with the kubelet); never a wrong value.
                match std::fs::read_to_string(dir.join("token")) {
                    Ok(t) => {
                        assert!(expected.contains_key(&t), "dir token read `{t}`");
                        reads += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => misses += 1,
                    Err(e) => panic!("dir token: {e}"),
                }

                // `..data` resolved once: token, expires_at and token.json from one write.
                let Ok(version) = std::fs::read_link(dir.join("..data")) else {
                    panic!("..data is missing");
                };
                let v = dir.join(version);
                let files = (
                    std::fs::read_to_string(v.join("token")),
                    std::fs::read_to_string(v.join("expires_at")),
                    std::fs::read_to_string(v.join("token.json")),
                );
                match files {
                    (Ok(t), Ok(exp), Ok(json)) => {
                        let want = expected
                            .get(&t)
                            .unwrap_or_else(|| panic!("dir token read `{t}`"));
                        assert_eq!(&exp, want, "expires_at of another write than `{t}`");
                        let doc: serde_json::Value = serde_json::from_str(&json)
                            .unwrap_or_else(|e| panic!("token.json `{json}`: {e}"));
                        assert_eq!(doc["token"], t.as_str(), "token.json of another write");
                        reads += 1;
                    }
                    _ => misses += 1,
                }
            }
            (reads, misses)
        });
        for t in &tokens[1..] {
            for o in &outputs {
                assert!(o.write(t, "race").unwrap(), "a new token was not written");
            }
        }
        done.store(true, Ordering::Release);
        reader.join().expect("reader saw a bad value")
    });
    let last = tokens.last().unwrap().value.expose();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), last);
    assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), last);
    assert!(
        reads > 1000,
        "only {reads} reads ({misses} misses): the race was not exercised"
    );
    assert!(misses < reads, "{misses} misses for {reads} reads");
}
