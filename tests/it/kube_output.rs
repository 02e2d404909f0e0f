//! The `kubernetes_secret` output through the real binary against the fake API server
//! (`kube_fake.rs`), reached through a kubeconfig: what the Secret holds, when it is not
//! rewritten, that an older token never replaces a newer one, races, creation, RBAC proven
//! before any provider call, and that the token never reaches the logs.

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::Env;
use crate::support::kube_fake::{Fault, KubeFake, Res, Rule};

const NS: &str = "apps";
const NAME: &str = "pharmacy-token";

/// A kubeconfig for `fake` with the static token `kc-token`, in `env`'s directory.
fn kubeconfig(env: &Env, fake: &KubeFake) -> PathBuf {
    let path = env.path("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: test\n  context:\n    cluster: fake\n    user: me\n    namespace: default\nusers:\n- name: me\n  user:\n    token: kc-token\n",
            fake.url()
        ),
    )
    .unwrap();
    path
}

/// A yaVapteke credential whose only output is the Secret `apps/pharmacy-token`.
fn setup(extra_output: &str) -> (Env, KubeFake) {
    let env = Env::new();
    let fake = KubeFake::start(&["kc-token"]);
    kubeconfig(&env, &fake);
    env.secret("yav", "yav-secret\n");
    env.config(&format!(
        r#"log: {{ level: debug }}
credentials:
  - name: pharmacy
    provider: yavapteke
    token_url: {{url}}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: {{ file: {{dir}}/secrets/yav }}
    timeout: 2s
    outputs:
      - kubernetes_secret:
          name: {NAME}
          namespace: {NS}
          kubeconfig: {{dir}}/kubeconfig
          labels: {{ team: pay }}
{extra_output}"#
    ));
    (env, fake)
}

fn secret(fake: &KubeFake) -> Value {
    fake.get(Res::Secrets, NS, NAME)
        .expect("the output Secret exists")
}

fn data(secret: &Value, key: &str) -> String {
    let b64 = secret["data"][key].as_str().unwrap_or_default();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

fn rv(secret: &Value) -> String {
    secret["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Non-dry-run writes of the output Secret the fake saw: (verb, status).
fn writes(fake: &KubeFake) -> Vec<(String, u16)> {
    fake.requests()
        .into_iter()
        .filter(|r| r.name == NAME || r.verb == "create")
        .filter(|r| r.verb != "get" && !r.query.contains("dryRun"))
        .map(|r| (r.verb, r.status))
        .collect()
}

#[test]
fn kube_output_once_creates_the_secret_with_the_dir_keys_and_never_rewrites_the_same_token() {
    let (env, fake) = setup("");
    env.run(&["once"]).assert_code(0);
    let s = secret(&fake);
    let token = data(&s, "token");
    assert!(!token.is_empty());
    let json: Value = serde_json::from_str(&data(&s, "token.json")).unwrap();
    assert_eq!(json["token"], token.as_str());
    assert_eq!(json["credential"], "pharmacy");
    assert_eq!(data(&s, "expires_at"), json["expires_at"].as_str().unwrap());
    let (labels, notes) = (&s["metadata"]["labels"], &s["metadata"]["annotations"]);
    assert_eq!(labels["app.kubernetes.io/managed-by"], "tokend");
    assert_eq!(labels["tokend.dev/credential"], "pharmacy");
    assert_eq!(labels["team"], "pay");
    assert_eq!(notes["tokend.dev/credential"], "pharmacy");
    assert_eq!(notes["tokend.dev/expires-at"], json["expires_at"]);
    assert_eq!(notes["tokend.dev/issued-at"], json["issued_at"]);
    assert!(
        notes["tokend.dev/token-gen"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    // Absent: created (a dry run at start, then one real create).
    assert_eq!(writes(&fake), [("create".to_owned(), 201)]);

    // The token is still fresh: the second run publishes it again, and the Secret, which
    // already holds it, is not written.
    let before = rv(&s);
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.emu.requests(crate::support::Endpoint::Yavapteke), 1);
    assert_eq!(rv(&secret(&fake)), before);
    assert_eq!(writes(&fake).len(), 1);
}

#[test]
fn kube_output_a_secret_holding_a_newer_token_is_never_overwritten() {
    let (env, fake) = setup("");
    let b64 = base64::engine::general_purpose::STANDARD;
    // Written by a writer whose token is newer than anything this run will get.
    let newer = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": NAME, "annotations": {"tokend.dev/token-gen": u64::MAX.to_string()}},
        "data": {"token": b64.encode("newer-token")}});
    let before = fake.put(Res::Secrets, NS, newer);
    env.run(&["once"]).assert_code(0);
    let s = secret(&fake);
    assert_eq!(data(&s, "token"), "newer-token");
    assert_eq!(rv(&s), before);
    assert_eq!(writes(&fake), Vec::<(String, u16)>::new());
}

#[test]
fn kube_output_a_placeholder_is_taken_over_and_a_lost_race_is_retried() {
    let (env, fake) = setup("");
    // A placeholder a chart created, with another manager's label that must survive.
    fake.put(
        Res::Secrets,
        NS,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": NAME, "labels": {"helm.sh/chart": "x"}}, "data": {}}),
    );
    // The first patch is the start-up dry run (a conflict there still proves RBAC); the
    // second is the real write, which loses a race and must read again and retry.
    fake.inject("patch", Fault::Status(409, "Conflict"));
    fake.inject("patch", Fault::Status(409, "Conflict"));
    env.run(&["once"]).assert_code(0);
    let s = secret(&fake);
    assert!(!data(&s, "token").is_empty());
    assert_eq!(s["metadata"]["labels"]["helm.sh/chart"], "x");
    assert_eq!(
        writes(&fake),
        [("patch".to_owned(), 409), ("patch".to_owned(), 200)]
    );
    // Every real write carried the resourceVersion it read: never a blind overwrite.
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.verb == "patch")
            .all(|r| r.body_rv.is_some())
    );
}

#[test]
fn kube_output_a_missing_rbac_verb_stops_check_and_once_before_any_provider_call() {
    let (env, fake) = setup("");
    fake.put(
        Res::Secrets,
        NS,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": NAME}, "data": {}}),
    );
    // May read the Secret, not patch it.
    fake.set_roles(Some(vec![Rule {
        verb: "get",
        resource: "secrets",
        name: Some(NAME.to_owned()),
    }]));
    for args in [&["check"][..], &["once"]] {
        let run = env.run(args);
        run.assert_code(2);
        for word in [
            "`patch`",
            "namespace `apps`",
            "`pharmacy-token`",
            "pharmacy",
        ] {
            assert!(
                run.stderr.contains(word),
                "{args:?}: {word}: {}",
                run.stderr
            );
        }
    }
    // `run` refuses to start.
    let mut daemon = env.daemon();
    assert_eq!(
        daemon.wait_exit(std::time::Duration::from_secs(20)),
        Some(2),
        "{}",
        daemon.log()
    );
    assert!(daemon.log().contains("`patch`"), "{}", daemon.log());
    assert_eq!(
        env.total_requests(),
        0,
        "no provider request before RBAC is proven"
    );
    assert_eq!(writes(&fake), Vec::<(String, u16)>::new());
}

#[test]
fn kube_output_the_token_never_reaches_the_logs() {
    let (env, fake) = setup("");
    env.watch_for_leaks(&["yav-secret", "kc-token"]);
    let first = env.run(&["once"]);
    first.assert_code(0);
    assert!(
        first.stderr.contains("Kubernetes Secret written")
            && first.stderr.contains("apps/pharmacy-token"),
        "{}",
        first.stderr
    );
    let token = data(&secret(&fake), "token");
    // A forced refresh writes over it (an apply), logging at debug.
    let second = env.run(&["once", "--force"]);
    second.assert_code(0);
    let newer = data(&secret(&fake), "token");
    assert_ne!(newer, token);
    env.leak_secret(&token);
    env.leak_secret(&newer);
    env.assert_no_leak();
}

#[test]
fn kube_output_check_warns_when_the_refresh_margin_is_shorter_than_the_kubelet_sync() {
    let (env, _fake) = setup("    refresh: { at: 95% }\n    lifetime: 1h\n");
    let run = env.run(&["check", "--offline"]);
    run.assert_code(0);
    assert!(run.stderr.contains("kubelet's sync"), "{}", run.stderr);
    assert!(run.stdout.contains("kubernetes_secret apps/pharmacy-token"));
    let (env, _fake) = setup("");
    let run = env.run(&["check", "--offline"]);
    run.assert_code(0);
    assert!(!run.stderr.contains("kubelet"), "{}", run.stderr);
}

#[test]
fn kube_output_an_api_server_that_does_not_answer_stops_once_before_any_provider_call() {
    let (env, fake) = setup("");
    // The kubeconfig now names a port nobody listens on.
    let dead = format!("http://127.0.0.1:{}", crate::support::free_port());
    let text = std::fs::read_to_string(env.path("kubeconfig")).unwrap();
    std::fs::write(env.path("kubeconfig"), text.replace(&fake.url(), &dead)).unwrap();
    let run = env.run(&["once"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("cannot reach the Kubernetes API") && run.stderr.contains(NAME),
        "{}",
        run.stderr
    );
    assert_eq!(env.total_requests(), 0);
}

#[test]
fn kube_output_env_format_gives_envfrom_keys() {
    let env = Env::new();
    let fake = KubeFake::start(&["kc-token"]);
    kubeconfig(&env, &fake);
    env.secret("yav", "yav-secret\n");
    env.config(&format!(
        r#"credentials:
  - name: pharmacy-api
    provider: yavapteke
    token_url: {{url}}/YavaptekeAPI/connect/token
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: {{ file: {{dir}}/secrets/yav }}
    outputs:
      - kubernetes_secret: {{ name: {NAME}, format: env, kubeconfig: {{dir}}/kubeconfig }}
"#
    ));
    env.run(&["once"]).assert_code(0);
    // No namespace: the kubeconfig context's (the pod's own, in a cluster).
    let s = fake.get(Res::Secrets, "default", NAME).expect("the Secret");
    let keys: Vec<&String> = s["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["PHARMACY_API_EXPIRES_AT", "PHARMACY_API_TOKEN"]);
    let run = env.run(&["check", "--offline"]);
    assert!(
        run.stderr.contains("never change in a running pod"),
        "{}",
        run.stderr
    );
}

#[test]
fn kube_output_two_credentials_cannot_write_one_secret() {
    let env = Env::new();
    env.secret("yav", "yav-secret\n");
    let cred = |name: &str| {
        format!(
            "  - name: {name}\n    provider: yavapteke\n    client_id: x\n    client_secret: {{ file: {{dir}}/secrets/yav }}\n    outputs: [ {{ kubernetes_secret: {{ name: shared, namespace: apps }} }} ]\n"
        )
    };
    env.config(&format!("credentials:\n{}{}", cred("a"), cred("b")));
    let run = env.run(&["check", "--offline"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains(
            "credential `b`: output kubernetes_secret apps/shared (files) is also an output of credential `a`; two outputs cannot write the same Secret"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn kube_output_a_write_whose_answer_was_lost_is_read_back_and_runs_the_hooks() {
    let (env, fake) =
        setup("    on_refresh:\n      - exec: [\"/bin/sh\", \"-c\", \"echo x >> hooked\"]\n");
    fake.put(
        Res::Secrets,
        NS,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": NAME}, "data": {}}),
    );
    // The start-up dry run gets a conflict (still proves RBAC); the real apply is committed
    // and its answer lost.
    fake.inject("patch", Fault::Status(409, "Conflict"));
    fake.inject("patch", Fault::DropAfterCommit);
    env.run(&["once"]).assert_code(0);
    assert!(!data(&secret(&fake), "token").is_empty());
    // Read back, not written twice.
    assert_eq!(writes(&fake), [("patch".to_owned(), 200)]);
    assert_eq!(
        env.read("hooked"),
        "x\n",
        "the hook runs: the Secret did change"
    );
}

#[test]
fn kube_output_run_writes_the_secret() {
    let (env, fake) = setup("");
    let mut daemon = env.daemon();
    let written = crate::support::wait_for(std::time::Duration::from_secs(20), || {
        fake.get(Res::Secrets, NS, NAME).is_some()
    });
    assert!(written, "{}", daemon.log());
    let token = data(&secret(&fake), "token");
    assert_eq!(
        env.emu.issued_tokens().last().map(String::as_str),
        Some(token.as_str())
    );
    assert!(daemon.is_running());
    daemon.kill();
}
