//! The Kubernetes client (`tokend::net::kube`) against the fake API server
//! (`kube_fake.rs`): the calls the shared state, the Lease election and the
//! `kubernetes_secret` output are built on (HA.md §3.3-§3.6), and how each failure looks.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokend::net::kube::{
    Credentials, DryRun, KubeClient, KubeConfig, KubeError, KubeOptions, Resource, WatchEvent,
};
use tokend::secret::Secret;

use crate::support::kube_fake::{Fault, KubeFake, Res, Rule};

const NS: &str = "apps";

fn config(server: String, credentials: Credentials) -> KubeConfig {
    KubeConfig {
        server,
        ca_pem: None,
        credentials,
        namespace: NS.to_owned(),
        origin: "test".to_owned(),
    }
}

fn client_with(config: KubeConfig, timeout: Duration) -> KubeClient {
    let mut opts = KubeOptions::new(config);
    opts.timeout = timeout;
    KubeClient::new(opts).expect("kube client")
}

/// A client of `fake` with the static token `t1`.
fn client(fake: &KubeFake) -> KubeClient {
    client_with(
        config(fake.url(), Credentials::Token(Secret::new("t1"))),
        Duration::from_secs(5),
    )
}

fn secret(name: &str, token: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque",
           "data": {"token": token}})
}

fn lease(name: &str, holder: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}})
}

/// `object` with `metadata.resourceVersion` set to `rv`.
fn at(mut object: Value, rv: &str) -> Value {
    object["metadata"]["resourceVersion"] = json!(rv);
    object
}

async fn next_event(watch: &mut tokend::net::kube::Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("a watch event within 5 s")
        .expect("watch event")
        .expect("the watch is still open")
}

#[tokio::test]
async fn kube_replace_is_a_cas_on_resource_version_and_its_replay_conflicts() {
    let fake = KubeFake::start(&["t1"]);
    let kube = client(&fake);
    for (resource, object) in [
        (Resource::Lease, lease("tokend-g", "pod-a")),
        (Resource::Secret, secret("tokend-g-c", "djE=")),
    ] {
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let created = kube
            .create(resource, NS, &object, DryRun::No)
            .await
            .unwrap();
        let rv0 = created.resource_version().to_owned();
        let won = kube
            .replace(resource, NS, &name, &at(object.clone(), &rv0), DryRun::No)
            .await
            .unwrap();
        assert_ne!(won.resource_version(), rv0);
        let replay = kube
            .replace(resource, NS, &name, &at(object.clone(), &rv0), DryRun::No)
            .await
            .unwrap_err();
        assert!(
            matches!(&replay, KubeError::Conflict { message, .. } if message.contains("the object has been modified")),
            "{replay:?}"
        );
        assert!(replay.not_applied());
        let now = kube.get(resource, NS, &name).await.unwrap();
        assert_eq!(now.resource_version(), won.resource_version());

        // Never a blind update: the client refuses before sending anything.
        let sent = fake.requests().len();
        let blind = kube
            .replace(resource, NS, &name, &object, DryRun::No)
            .await
            .unwrap_err();
        assert!(
            matches!(blind, KubeError::NoResourceVersion { .. }),
            "{blind:?}"
        );
        assert_eq!(
            fake.requests().len(),
            sent,
            "a blind replace reached the API server"
        );
    }
    assert_eq!(fake.unconditional_updates(), 0);
    // The fake is as lax as the real server where the client must be strict: a Secret
    // takes an update without resourceVersion, a Lease does not.
    let raw = reqwest::Client::new();
    for (path, body, want) in [
        (
            "/api/v1/namespaces/apps/secrets/tokend-g-c",
            secret("tokend-g-c", "eA=="),
            200,
        ),
        (
            "/apis/coordination.k8s.io/v1/namespaces/apps/leases/tokend-g",
            lease("tokend-g", "x"),
            422,
        ),
    ] {
        let status = raw
            .put(format!("{}{path}", fake.url()))
            .bearer_auth("t1")
            .json(&body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), want, "{path}");
    }
    assert_eq!(fake.unconditional_updates(), 1);
}

#[tokio::test]
async fn kube_create_twice_is_already_exists_and_a_missing_object_is_not_found() {
    let fake = KubeFake::start(&["t1"]);
    let kube = client(&fake);
    let e = kube
        .get(Resource::Secret, NS, "tokend-g-c")
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::NotFound { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "Secret apps/tokend-g-c does not exist (404 on get)"
    );
    let s = secret("tokend-g-c", "djE=");
    let first = kube
        .create(Resource::Secret, NS, &s, DryRun::No)
        .await
        .unwrap();
    assert_eq!(first.name(), "tokend-g-c");
    let again = kube
        .create(Resource::Secret, NS, &s, DryRun::No)
        .await
        .unwrap_err();
    assert!(
        matches!(again, KubeError::AlreadyExists { .. }),
        "{again:?}"
    );
    // A replace of an object that is gone is NotFound, not a create.
    let e = kube
        .replace(
            Resource::Lease,
            NS,
            "nope",
            &at(lease("nope", "a"), "1"),
            DryRun::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::NotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn kube_server_side_apply_merges_and_honours_a_resource_version_precondition() {
    let fake = KubeFake::start(&["t1"]);
    let kube = client(&fake);
    // A placeholder from another manager (Helm, Argo CD) with its own label.
    let rv0 = fake.put(
        Res::Secrets,
        NS,
        json!({"metadata": {"name": "vandar-token", "labels": {"helm.sh/chart": "x"}},
               "data": {"other": "bw=="}}),
    );
    let body = |rv: Option<&str>, token: &str| {
        let mut b = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "vandar-token", "namespace": NS,
                         "labels": {"app.kubernetes.io/managed-by": "tokend"},
                         "annotations": {"tokend.dev/token-gen": "1"}},
            "data": {"token": token}});
        if let Some(rv) = rv {
            b["metadata"]["resourceVersion"] = json!(rv);
        }
        b
    };
    let applied = kube
        .apply(
            Resource::Secret,
            NS,
            "vandar-token",
            &body(Some(&rv0), "djE="),
            DryRun::No,
        )
        .await
        .unwrap();
    let v = applied.value();
    assert_eq!(v["metadata"]["labels"]["helm.sh/chart"], "x");
    assert_eq!(
        v["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "tokend"
    );
    assert_eq!(v["data"], json!({"other": "bw==", "token": "djE="}));
    let last = fake.requests().pop().unwrap();
    assert_eq!(last.verb, "patch");
    assert_eq!(last.content_type, "application/apply-patch+yaml");
    assert_eq!(last.query, "fieldManager=tokend&force=true");

    // The precondition: a stale resourceVersion is a Conflict and changes nothing.
    let stale = kube
        .apply(
            Resource::Secret,
            NS,
            "vandar-token",
            &body(Some(&rv0), "OLD="),
            DryRun::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(stale, KubeError::Conflict { .. }), "{stale:?}");
    let now = fake.get(Res::Secrets, NS, "vandar-token").unwrap();
    assert_eq!(now["data"]["token"], "djE=");
    assert_eq!(
        now["metadata"]["resourceVersion"],
        applied.resource_version()
    );

    // Without a precondition an apply creates.
    let created = kube
        .apply(
            Resource::Secret,
            NS,
            "fresh",
            &json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "fresh"}, "data": {"token": "eA=="}}),
            DryRun::No,
        )
        .await
        .unwrap();
    assert_eq!(created.name(), "fresh");
}

#[tokio::test]
async fn kube_dry_run_writes_validate_but_store_nothing() {
    let fake = KubeFake::start(&["t1"]);
    let kube = client(&fake);
    let created = kube
        .create(Resource::Secret, NS, &secret("out", "djE="), DryRun::All)
        .await
        .unwrap();
    assert_eq!(created.name(), "out");
    assert!(fake.get(Res::Secrets, NS, "out").is_none());
    assert_eq!(fake.resource_version(), 0);

    let rv = fake.put(Res::Secrets, NS, secret("out", "djE="));
    let before = fake.resource_version();
    kube.replace(
        Resource::Secret,
        NS,
        "out",
        &at(secret("out", "djI="), &rv),
        DryRun::All,
    )
    .await
    .unwrap();
    kube.apply(
        Resource::Secret,
        NS,
        "out",
        &at(secret("out", "djM="), &rv),
        DryRun::All,
    )
    .await
    .unwrap();
    assert_eq!(fake.resource_version(), before);
    assert_eq!(
        fake.get(Res::Secrets, NS, "out").unwrap()["data"]["token"],
        "djE="
    );
    // A dry run still checks: the same stale precondition fails as a real write would.
    fake.put(Res::Secrets, NS, secret("out", "djQ="));
    let e = kube
        .replace(
            Resource::Secret,
            NS,
            "out",
            &at(secret("out", "x"), &rv),
            DryRun::All,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::Conflict { .. }), "{e:?}");
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.verb != "get")
            .all(|r| r.query.contains("dryRun=All"))
    );
}

#[tokio::test]
async fn kube_rbac_refusal_names_the_verb_resource_and_name() {
    let fake = KubeFake::start(&["t1"]);
    let kube = client(&fake);
    let rv = fake.put(Res::Secrets, NS, secret("tokend-g-c", "djE="));
    fake.set_roles(Some(vec![Rule {
        verb: "get",
        resource: "secrets",
        name: Some("tokend-g-c".into()),
    }]));
    kube.get(Resource::Secret, NS, "tokend-g-c").await.unwrap();
    let e = kube
        .replace(
            Resource::Secret,
            NS,
            "tokend-g-c",
            &at(secret("tokend-g-c", "x"), &rv),
            DryRun::All,
        )
        .await
        .unwrap_err();
    let KubeError::Forbidden { message, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        message,
        "secrets \"tokend-g-c\" is forbidden: User \"system:serviceaccount:apps:tokend\" cannot update resource \"secrets\" in API group \"\" in the namespace \"apps\""
    );
    assert!(e.to_string().starts_with("the Kubernetes API refused replace of Secret apps/tokend-g-c: secrets \"tokend-g-c\" is forbidden"), "{e}");
    let e = kube.get(Resource::Lease, NS, "tokend-g").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot get resource \"leases\" in API group \"coordination.k8s.io\""),
        "{e}"
    );
    let e = kube
        .create(Resource::Lease, NS, &lease("tokend-g", "a"), DryRun::No)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:apps:tokend\" cannot create resource \"leases\""), "{e}");
}

#[tokio::test]
async fn kube_watch_sees_modifications_in_order_and_bookmarks_advance_the_resource_version() {
    let fake = KubeFake::start(&["t1"]);
    let kube = client(&fake);
    let rv0 = fake.put(Res::Secrets, NS, secret("tokend-g-c", "djA="));
    let mut watch = kube
        .watch(Resource::Secret, NS, "tokend-g-c", &rv0, 60)
        .await
        .unwrap();
    assert_eq!(watch.resource_version(), rv0);
    let watched = fake.requests().pop().unwrap();
    assert_eq!(watched.verb, "watch");
    assert_eq!(
        watched.query,
        format!(
            "watch=1&fieldSelector=metadata.name%3Dtokend-g-c&resourceVersion={rv0}&allowWatchBookmarks=true&timeoutSeconds=60"
        )
    );

    let mut rv = rv0.clone();
    for token in ["djE=", "djI=", "djM="] {
        rv = kube
            .replace(
                Resource::Secret,
                NS,
                "tokend-g-c",
                &at(secret("tokend-g-c", token), &rv),
                DryRun::No,
            )
            .await
            .unwrap()
            .resource_version()
            .to_owned();
        // Another Secret in the namespace is not this watch's business.
        fake.put(Res::Secrets, NS, secret("unrelated", token));
    }
    for token in ["djE=", "djI=", "djM="] {
        match next_event(&mut watch).await {
            WatchEvent::Modified(o) => assert_eq!(o.value()["data"]["token"], token),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(watch.resource_version(), rv);
    // Past our object's last change: the unrelated writes moved the store on.
    fake.bookmark();
    match next_event(&mut watch).await {
        WatchEvent::Bookmark { resource_version } => {
            assert_eq!(resource_version, fake.resource_version().to_string())
        }
        other => panic!("{other:?}"),
    }
    assert_ne!(watch.resource_version(), rv);
    assert_eq!(
        watch.resource_version(),
        fake.resource_version().to_string()
    );
    // A re-watch from the bookmark sees only what comes after it.
    let mut again = kube
        .watch(
            Resource::Secret,
            NS,
            "tokend-g-c",
            watch.resource_version(),
            60,
        )
        .await
        .unwrap();
    fake.delete(Res::Secrets, NS, "tokend-g-c");
    assert!(matches!(
        next_event(&mut again).await,
        WatchEvent::Deleted(_)
    ));
}

#[tokio::test]
async fn kube_watch_from_a_compacted_resource_version_is_gone() {
    let fake = KubeFake::start(&["t1"]);
    let kube = client(&fake);
    let rv0 = fake.put(Res::Secrets, NS, secret("s", "djA="));
    fake.put(Res::Secrets, NS, secret("s", "djE="));
    fake.compact();
    // As the real server does it: a 200 stream whose first event is an ERROR with 410.
    let mut watch = kube
        .watch(Resource::Secret, NS, "s", &rv0, 60)
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&e, KubeError::Gone { message, .. } if message.contains("too old resource version")),
        "{e:?}"
    );
    assert!(e.to_string().contains("list again"), "{e}");
    // And as an HTTP 410 on the watch request itself.
    fake.inject("watch", Fault::Status(410, "Expired"));
    let e = kube
        .watch(Resource::Secret, NS, "s", &rv0, 60)
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::Gone { .. }), "{e:?}");
    // The current resourceVersion is fine.
    let now = kube.get(Resource::Secret, NS, "s").await.unwrap();
    let mut watch = kube
        .watch(Resource::Secret, NS, "s", now.resource_version(), 60)
        .await
        .unwrap();
    fake.put(Res::Secrets, NS, secret("s", "djI="));
    assert!(matches!(
        next_event(&mut watch).await,
        WatchEvent::Modified(_)
    ));
}

/// Writes `token` to the token file the way the kubelet does: a new file renamed over.
fn rotate(path: &Path, token: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn kube_a_rotated_token_file_is_used_after_a_401_and_within_the_reread_period() {
    let fake = KubeFake::start(&["t1"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    rotate(&file, "t1\n");
    let kube = client_with(
        config(
            fake.url(),
            Credentials::TokenFile {
                path: file.clone(),
                reread: Duration::from_secs(3600),
            },
        ),
        Duration::from_secs(5),
    );
    fake.put(Res::Secrets, NS, secret("s", "djA="));
    kube.get(Resource::Secret, NS, "s").await.unwrap();

    // The kubelet rotates, the old token stops working: one 401, then the new token.
    rotate(&file, "t2");
    fake.set_tokens(&["t2"]);
    kube.get(Resource::Secret, NS, "s").await.unwrap();
    let seen: Vec<(Option<String>, u16)> = fake
        .requests()
        .into_iter()
        .map(|r| (r.token, r.status))
        .collect();
    assert_eq!(
        seen,
        [
            (Some("t1".into()), 200),
            (Some("t1".into()), 401),
            (Some("t2".into()), 200)
        ]
    );

    // A token that stays wrong after the re-read is Unauthorized, and no token shows.
    fake.set_tokens(&["t9"]);
    let e = kube.get(Resource::Secret, NS, "s").await.unwrap_err();
    assert!(matches!(e, KubeError::Unauthorized { .. }), "{e:?}");
    let text = format!("{e} {e:?} {kube:?}");
    assert!(
        text.contains("token file was read again") && !text.contains("t2"),
        "{text}"
    );

    // Without any 401, a new file is picked up once the re-read period has passed.
    let kube = client_with(
        config(
            fake.url(),
            Credentials::TokenFile {
                path: file.clone(),
                reread: Duration::from_millis(200),
            },
        ),
        Duration::from_secs(5),
    );
    fake.set_tokens(&["t2", "t3"]);
    kube.get(Resource::Secret, NS, "s").await.unwrap();
    rotate(&file, "t3");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        kube.get(Resource::Secret, NS, "s").await.unwrap();
        let last = fake.requests().pop().unwrap();
        assert_eq!(last.status, 200);
        if last.token.as_deref() == Some("t3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated token file was never read again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kube_a_write_whose_answer_is_lost_is_ambiguous_and_one_never_sent_is_unreachable() {
    let fake = KubeFake::start(&["t1"]);
    let kube = client_with(
        config(fake.url(), Credentials::Token(Secret::new("t1"))),
        Duration::from_millis(1500),
    );
    let rv = fake.put(Res::Leases, NS, lease("tokend-g", "pod-a"));

    // Committed, then the connection dies: the client cannot know, and says so.
    fake.inject("update", Fault::DropAfterCommit);
    let e = kube
        .replace(
            Resource::Lease,
            NS,
            "tokend-g",
            &at(lease("tokend-g", "pod-b"), &rv),
            DryRun::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::Ambiguous { .. }), "{e:?}");
    assert!(!e.not_applied());
    let now = kube.get(Resource::Lease, NS, "tokend-g").await.unwrap();
    assert_eq!(
        now.value()["spec"]["holderIdentity"],
        "pod-b",
        "the lost write landed"
    );

    // A 5xx on a write is ambiguous too; on a read it is a plain status.
    fake.inject("update", Fault::Status(504, "Timeout"));
    let e = kube
        .replace(
            Resource::Lease,
            NS,
            "tokend-g",
            &at(lease("tokend-g", "pod-c"), now.resource_version()),
            DryRun::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::Ambiguous { .. }), "{e:?}");
    fake.inject("get", Fault::Status(503, "ServiceUnavailable"));
    let e = kube.get(Resource::Lease, NS, "tokend-g").await.unwrap_err();
    assert!(matches!(e, KubeError::Status { code: 503, .. }), "{e:?}");

    // Slower than the deadline: ambiguous for a write (it commits after all), not for a read.
    fake.inject("create", Fault::Delay(Duration::from_secs(4)));
    let e = kube
        .create(Resource::Secret, NS, &secret("slow", "eA=="), DryRun::No)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, KubeError::Ambiguous { reason, .. } if reason.contains("no answer within")),
        "{e:?}"
    );
    fake.inject("get", Fault::Delay(Duration::from_secs(4)));
    let e = kube.get(Resource::Lease, NS, "tokend-g").await.unwrap_err();
    assert!(matches!(e, KubeError::Unreachable { .. }), "{e:?}");

    // Nothing listens: never sent.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = client_with(
        config(
            format!("http://127.0.0.1:{port}"),
            Credentials::Token(Secret::new("t1")),
        ),
        Duration::from_secs(2),
    );
    let e = nowhere
        .replace(
            Resource::Lease,
            NS,
            "tokend-g",
            &at(lease("tokend-g", "x"), "1"),
            DryRun::No,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, KubeError::Unreachable { .. }) && e.not_applied(),
        "{e:?}"
    );
}

#[tokio::test]
async fn kube_in_cluster_config_from_a_service_account_dir_over_tls() {
    let fake = KubeFake::start_tls(&["sa-token"]);
    let sa = tempfile::tempdir().unwrap();
    std::fs::copy(&fake.tls().unwrap().ca, sa.path().join("ca.crt")).unwrap();
    std::fs::write(sa.path().join("namespace"), "apps\n").unwrap();
    std::fs::write(sa.path().join("token"), "sa-token\n").unwrap();
    let port = fake.addr().port().to_string();
    let env = |k: &str| match k {
        "KUBERNETES_SERVICE_HOST" => Some("127.0.0.1".to_owned()),
        "KUBERNETES_SERVICE_PORT" => Some(port.clone()),
        _ => None,
    };
    let cfg = KubeConfig::in_cluster(&env, sa.path()).unwrap();
    assert_eq!(cfg.server, fake.url());
    let kube = client_with(cfg, Duration::from_secs(5));
    assert_eq!(kube.namespace(), "apps");
    let created = kube
        .create(
            Resource::Lease,
            kube.namespace(),
            &lease("tokend-g", "pod-a"),
            DryRun::No,
        )
        .await
        .unwrap();
    assert_eq!(created.value()["metadata"]["namespace"], "apps");
    assert_eq!(
        fake.requests().pop().unwrap().token.as_deref(),
        Some("sa-token")
    );

    // The system roots are not trusted for the cluster: a CA that did not sign it fails.
    let other = KubeFake::start_tls(&[]);
    std::fs::copy(&other.tls().unwrap().ca, sa.path().join("ca.crt")).unwrap();
    let kube = client_with(
        KubeConfig::in_cluster(&env, sa.path()).unwrap(),
        Duration::from_secs(5),
    );
    let e = kube
        .get(Resource::Lease, "apps", "tokend-g")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, KubeError::Unreachable { reason, .. } if reason.contains("certificate")),
        "{e:?}"
    );
}

#[tokio::test]
async fn kube_kubeconfig_with_a_token_and_with_a_client_certificate() {
    let fake = KubeFake::start_tls(&["kc-token"]);
    let tls = fake.tls().unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, user: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: fake\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: test\n  context:\n    cluster: fake\n    user: me\n    namespace: apps\nusers:\n- name: me\n  user:\n{user}",
                fake.url(),
                tls.ca.display()
            ),
        )
        .unwrap();
        path
    };
    let with_token = write("token.yaml", "    token: kc-token\n");
    let with_cert = write(
        "cert.yaml",
        &format!(
            "    client-certificate: {}\n    client-key: {}\n",
            tls.client_cert.display(),
            tls.client_key.display()
        ),
    );
    let anonymous = write("none.yaml", "    {}\n");
    for (path, expect_token) in [(&with_token, Some("kc-token")), (&with_cert, None)] {
        let cfg = KubeConfig::from_kubeconfig(path, None).unwrap();
        let kube = client_with(cfg, Duration::from_secs(5));
        let name = format!("s-{}", path.file_stem().unwrap().to_string_lossy());
        kube.create(
            Resource::Secret,
            kube.namespace(),
            &secret(&name, "eA=="),
            DryRun::No,
        )
        .await
        .unwrap();
        let last = fake.requests().pop().unwrap();
        assert_eq!(
            (last.status, last.token.as_deref()),
            (201, expect_token),
            "{}",
            path.display()
        );
    }
    let kube = client_with(
        KubeConfig::from_kubeconfig(&anonymous, None).unwrap(),
        Duration::from_secs(5),
    );
    let e = kube.get(Resource::Secret, NS, "s-token").await.unwrap_err();
    assert!(matches!(e, KubeError::Unauthorized { .. }), "{e:?}");
}

#[tokio::test]
async fn kube_answers_beyond_the_cap_are_refused_and_objects_never_print_their_data() {
    let fake = KubeFake::start(&["t1"]);
    let mut opts = KubeOptions::new(config(
        fake.url(),
        Credentials::Token(Secret::new("t1-canary")),
    ));
    opts.max_response_bytes = 4096;
    fake.set_tokens(&["t1-canary"]);
    let kube = KubeClient::new(opts).unwrap();
    let big = "A".repeat(8192);
    let rv = fake.put(Res::Secrets, NS, secret("big", &big));
    let e = kube.get(Resource::Secret, NS, "big").await.unwrap_err();
    assert!(
        matches!(&e, KubeError::BadAnswer { reason, .. } if reason.contains("larger than 4 KiB")),
        "{e:?}"
    );
    // A write whose answer is too large was applied or not: the client cannot tell.
    let e = kube
        .replace(
            Resource::Secret,
            NS,
            "big",
            &at(secret("big", &big), &rv),
            DryRun::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::Ambiguous { .. }), "{e:?}");

    let small = kube
        .create(
            Resource::Secret,
            NS,
            &secret("small", "cmVmcmVzaC1jYW5hcnk="),
            DryRun::No,
        )
        .await
        .unwrap();
    let text = format!("{small:?} {kube:?}");
    assert!(
        text.contains("small") && !text.contains("cmVmcmVzaC1jYW5hcnk") && !text.contains("canary"),
        "{text}"
    );
}

#[tokio::test]
async fn kube_a_watch_ends_cleanly_at_its_timeout_and_rbac_allows_it_by_name() {
    let fake = KubeFake::start(&["t1"]);
    let kube = client(&fake);
    let rv = fake.put(Res::Secrets, NS, secret("tokend-g-c", "djA="));
    fake.set_roles(Some(vec![Rule {
        verb: "watch",
        resource: "secrets",
        name: Some("tokend-g-c".into()),
    }]));
    let e = kube
        .watch(Resource::Secret, NS, "other", &rv, 1)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("cannot watch resource \"secrets\""),
        "{e}"
    );
    let mut watch = kube
        .watch(Resource::Secret, NS, "tokend-g-c", &rv, 1)
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap();
    assert!(end.is_none(), "{end:?}");
    assert_eq!(watch.resource_version(), rv);
}
