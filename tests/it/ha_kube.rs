//! Shared state on Kubernetes (`ha.backend: kubernetes`) against the strict fake API server:
//! three `tokend run` processes with one config behave as one, keeping the chain in Secret
//! `tokend-g1-vandar-main` and electing through Lease `tokend-g1` (SPEC "Shared state",
//! HA.md §3.4, §3.6, §5.3). Every test is judged by the etcd suite's oracles
//! ([`Group::assert_oracles`]), which on this backend also demand zero blind Secret writes.
//! Faults are in `ha_kube_faults.rs`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::group::{Group, KUBE_TOKEN, LEASE, NAMESPACE, STATE_SECRET, emulator};
use crate::support::kube_fake::{KubeFake, Recorded, Res, Rule, decode_state};
use crate::support::{Endpoint, http, wait_for};

pub const REFRESH: &str = "    refresh: { at: 50%, jitter: 0% }\n";
pub const LAG: Duration = Duration::from_secs(1);
/// Long enough for a claim, a provider call and a commit through the fake, short enough
/// for several refreshes per test.
pub const LIFETIME: Duration = Duration::from_secs(4);

/// The Lease's `spec.holderIdentity` ("" or absent when nobody holds it).
pub fn lease_holder(fake: &KubeFake) -> Option<String> {
    fake.get(Res::Leases, NAMESPACE, LEASE)?
        .pointer("/spec/holderIdentity")?
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// `node-<i>_<8 hex>`: the identity of a node with its boot nonce.
pub fn is_identity_of(holder: &str, i: usize) -> bool {
    holder
        .strip_prefix(&format!("node-{i}_"))
        .is_some_and(|nonce| {
            nonce.len() == 8
                && nonce
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        })
}

/// The requests that stored something in the state Secret (not dry runs).
pub fn state_writes(fake: &KubeFake) -> Vec<Recorded> {
    fake.requests()
        .into_iter()
        .filter(|r| {
            r.resource == Res::Secrets
                && r.name == STATE_SECRET
                && !matches!(r.verb.as_str(), "get" | "list" | "watch")
                && !r.query.contains("dryRun=All")
        })
        .collect()
}

/// The contract of every state write: a PUT with the resourceVersion read, or a POST
/// create; never an apply or a blind PUT.
pub fn assert_state_writes_are_conditional(g: &Group) {
    let writes = state_writes(g.kube());
    assert!(!writes.is_empty(), "no write of the state Secret");
    for w in &writes {
        match w.verb.as_str() {
            "update" => assert!(
                w.body_rv.as_deref().is_some_and(|rv| !rv.is_empty()),
                "a PUT of the state Secret without resourceVersion: {w:?}"
            ),
            "create" => {}
            other => panic!("the state Secret was written with `{other}`: {w:?}"),
        }
    }
    assert_eq!(g.kube().unconditional_updates(), 0);
    // Nothing but the group's own two objects is ever written.
    for r in g.kube().requests() {
        if matches!(r.verb.as_str(), "create" | "update" | "patch") && !r.query.contains("dryRun") {
            assert!(
                r.name == STATE_SECRET || r.name == LEASE,
                "tokend wrote an object that is not its state or Lease: {r:?}"
            );
        }
    }
}

/// `metav1.MicroTime` as the API server parses it (RFC3339 with exactly six fractional
/// digits): the fake stores any string, a real server refuses anything else.
fn is_micro_time(v: &Value) -> bool {
    v.as_str().is_some_and(|t| {
        let b = t.as_bytes();
        b.len() == 27
            && b[26] == b'Z'
            && b[19] == b'.'
            && b[20..26].iter().all(u8::is_ascii_digit)
            && humantime::parse_rfc3339_weak(&t[..26]).is_ok()
    })
}

/// The Lease as client-go keeps it (HA.md §3.4): every held version names when it was
/// acquired and renewed in MicroTime and how long it lasts, and `leaseTransitions` grows by
/// exactly one each time a new holder takes it.
pub fn assert_lease_oracle(g: &Group) {
    let versions = g.kube().versions(Res::Leases, NAMESPACE, LEASE);
    assert!(!versions.is_empty(), "no Lease `{LEASE}` was ever stored");
    let holder = |v: &Value| {
        v.pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let transitions = |v: &Value| {
        v.pointer("/spec/leaseTransitions")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    for v in versions.iter().filter(|v| v.kind != "DELETED") {
        let spec = &v.object["spec"];
        if holder(&v.object).is_empty() {
            continue;
        }
        assert!(
            is_micro_time(&spec["renewTime"]) && is_micro_time(&spec["acquireTime"]),
            "a Lease time that a real API server refuses (MicroTime needs 6 fractional digits): {spec}"
        );
        assert!(
            spec["leaseDurationSeconds"]
                .as_u64()
                .is_some_and(|d| d >= 1),
            "{spec}"
        );
    }
    for w in versions.windows(2) {
        let (a, b) = (&w[0].object, &w[1].object);
        let (ha, hb) = (holder(a), holder(b));
        let expected = if !hb.is_empty() && hb != ha {
            transitions(a) + 1
        } else {
            transitions(a)
        };
        assert_eq!(
            transitions(b),
            expected,
            "leaseTransitions from `{ha}` to `{hb}`: {} then {}",
            a["spec"],
            b["spec"]
        );
    }
}

/// Waits up to `timeout` for node `i` to exit, and returns its exit code.
pub fn wait_exit(g: &mut Group, i: usize, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let node = g.nodes[i].as_mut().expect("node started");
        if let Ok(Some(s)) = node.child.try_wait() {
            g.nodes[i] = None;
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn three_processes_share_one_chain_in_one_secret_and_call_the_provider_once_per_refresh() {
    let mut g = Group::start_kube(3, emulator(LIFETIME), REFRESH);
    g.start_all();
    assert!(
        g.wait_chain_gen(5, Duration::from_secs(40)),
        "the chain did not reach generation 5\n{}",
        g.logs()
    );
    let refreshes = g.env.emu.requests(Endpoint::VandarRefresh);
    let chain_gen = g.last_commit().unwrap().chain_gen;
    assert!(
        refreshes <= chain_gen + 1,
        "{refreshes} refresh calls for {chain_gen} rotations\n{}",
        g.logs()
    );
    assert_eq!(g.env.emu.requests(Endpoint::VandarLogin), 0);
    std::thread::sleep(LAG);
    g.assert_oracles(LAG, &[0, 1, 2]);
    let leaders: Vec<usize> = (0..3)
        .filter(|&i| g.log(i).contains("event=\"leading\""))
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one leader\n{}", g.logs());
    // The Lease names the leader with its boot nonce.
    let holder = lease_holder(g.kube()).expect("the Lease has a holder");
    assert!(
        is_identity_of(&holder, leaders[0]),
        "Lease holder `{holder}`, leader node-{}",
        leaders[0]
    );
    // The state Secret as the contract shapes it, read through tokend's own client too.
    let secret = g.kube().get(Res::Secrets, NAMESPACE, STATE_SECRET).unwrap();
    assert_eq!(secret["type"], "Opaque", "{secret}");
    let labels = &secret["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "tokend", "{secret}");
    assert_eq!(labels["tokend.dev/group"], "g1", "{secret}");
    let state = g.state();
    assert!(state.exists(), "no record in data[\"state.json\"]");
    assert_eq!(state.chain_gen(), g.last_commit().unwrap().chain_gen);
    assert!(state.refresh_token().is_some(), "{state}");
    assert_state_writes_are_conditional(&g);
    assert_lease_oracle(&g);
    // Reads as HA.md §3.4/§3.6 has them: consistent GETs (never `resourceVersion=0`, which
    // the watch cache serves), and watches of the one Secret by name, with bookmarks.
    let requests = g.kube().requests();
    for r in requests.iter().filter(|r| r.resource == Res::Secrets) {
        match r.verb.as_str() {
            "get" => assert!(!r.query.contains("resourceVersion=0"), "{r:?}"),
            "watch" => assert!(
                r.name == STATE_SECRET && r.query.contains("allowWatchBookmarks=true"),
                "{r:?}"
            ),
            "list" => panic!("tokend listed Secrets: {r:?}"),
            _ => {}
        }
    }
    assert!(requests.iter().any(|r| r.verb == "watch"), "no watch");
    let lease = g.kube().get(Res::Leases, NAMESPACE, LEASE).unwrap();
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 2, "{lease}");
}

#[test]
fn a_joining_process_is_ready_from_the_shared_secret_with_zero_provider_calls() {
    let mut g = Group::start_kube(2, emulator(Duration::from_secs(600)), "");
    g.start_node(0);
    assert!(g.wait_chain_gen(1, Duration::from_secs(20)), "{}", g.logs());
    let calls = g.env.emu.requests(Endpoint::VandarRefresh);
    let token = g.last_commit().unwrap().token.unwrap();
    let joined = Instant::now();
    g.start_node(1);
    assert!(
        wait_for(Duration::from_secs(10), || g.output(1).trim() == token),
        "the joining process did not write the shared token\n{}",
        g.logs()
    );
    assert!(
        joined.elapsed() < Duration::from_secs(5),
        "the joining process took {:?} to be ready",
        joined.elapsed()
    );
    assert_eq!(g.env.emu.requests(Endpoint::VandarRefresh), calls);
    g.assert_oracles(LAG, &[0, 1]);
    assert_state_writes_are_conditional(&g);
}

#[test]
fn a_pre_created_state_secret_without_a_record_is_adopted() {
    let mut g = Group::start_kube(2, emulator(LIFETIME), REFRESH);
    // As a chart pre-creates it, so that tokend needs no `create`: no `state.json` yet.
    g.kube().put(
        Res::Secrets,
        NAMESPACE,
        json!({"metadata": {"name": STATE_SECRET,
                            "labels": {"app.kubernetes.io/managed-by": "tokend", "tokend.dev/group": "g1"}},
               "type": "Opaque"}),
    );
    let uid =
        g.kube().get(Res::Secrets, NAMESPACE, STATE_SECRET).unwrap()["metadata"]["uid"].clone();
    g.start_all();
    assert!(
        g.wait_chain_gen(2, Duration::from_secs(30)),
        "the pre-created Secret was not adopted\n{}",
        g.logs()
    );
    let secret = g.kube().get(Res::Secrets, NAMESPACE, STATE_SECRET).unwrap();
    assert_eq!(
        secret["metadata"]["uid"], uid,
        "the Secret was replaced, not adopted"
    );
    assert_eq!(secret["type"], "Opaque", "{secret}");
    assert_eq!(
        secret["metadata"]["labels"]["tokend.dev/group"], "g1",
        "{secret}"
    );
    assert!(
        state_writes(g.kube())
            .iter()
            .all(|w| !(w.verb == "create" && w.status == 201)),
        "tokend created a Secret that existed"
    );
    std::thread::sleep(LAG);
    g.assert_oracles(LAG, &[0, 1]);
    assert_state_writes_are_conditional(&g);
}

/// Roles as HA.md §3.6 lists them for a pre-created Secret and Lease, minus `drop`.
fn roles_without(drop: (&str, &str)) -> Vec<Rule> {
    let mut rules = Vec::new();
    for verb in ["get", "list", "watch", "update"] {
        rules.push(Rule {
            verb,
            resource: "secrets",
            name: Some(STATE_SECRET.to_owned()),
        });
    }
    for verb in ["get", "update"] {
        rules.push(Rule {
            verb,
            resource: "leases",
            name: Some(LEASE.to_owned()),
        });
    }
    for resource in ["secrets", "leases"] {
        rules.push(Rule {
            verb: "create",
            resource,
            name: None,
        });
    }
    rules
        .into_iter()
        .filter(|r| (r.verb, r.resource) != drop)
        .collect()
}

/// `run` with roles missing `verb` on `resource`: exits 1 at start, naming what is
/// missing, before the provider sees anything; nothing was stored.
fn assert_refused_at_start(verb: &'static str, resource: &'static str, name: &str) {
    let mut g = Group::start_kube(1, emulator(Duration::from_secs(600)), "");
    // Pre-created as a chart would, so that every write tokend proves is an update.
    g.kube().put(
        Res::Secrets,
        NAMESPACE,
        json!({"metadata": {"name": STATE_SECRET}, "type": "Opaque"}),
    );
    g.kube().put(
        Res::Leases,
        NAMESPACE,
        json!({"metadata": {"name": LEASE}, "spec": {}}),
    );
    g.kube().set_roles(Some(roles_without((verb, resource))));
    let rv = g.kube().resource_version();
    g.start_node(0);
    let code = wait_exit(&mut g, 0, Duration::from_secs(20));
    let log = g.log(0);
    // A missing permission is a configuration error, as for a `kubernetes_secret` output.
    assert_eq!(code, Some(2), "`run` did not exit 2\n{log}");
    for word in [verb, resource, name] {
        assert!(
            log.contains(word),
            "the error does not name `{word}` ({verb} {resource} {name})\n{log}"
        );
    }
    assert_eq!(g.env.total_requests(), 0, "the provider was called");
    assert_eq!(g.kube().resource_version(), rv, "something was stored");
    assert_eq!(g.kube().unconditional_updates(), 0);
}

#[test]
fn run_without_update_on_the_state_secret_exits_2_naming_it_before_any_provider_call() {
    assert_refused_at_start("update", "secrets", STATE_SECRET);
}

#[test]
fn run_without_update_on_the_lease_exits_2_naming_it_before_any_provider_call() {
    assert_refused_at_start("update", "leases", LEASE);
}

#[test]
fn status_readyz_and_metrics_show_role_leader_generation_and_store_errors() {
    let mut g = Group::start_kube(2, emulator(Duration::from_secs(600)), "");
    g.start_all();
    assert!(g.wait_chain_gen(1, Duration::from_secs(20)), "{}", g.logs());
    let leader = g.wait_leader();
    let follower = 1 - leader;
    let token = g.last_commit().unwrap().token.unwrap();
    assert!(wait_for(Duration::from_secs(5), || g
        .output(follower)
        .trim()
        == token));
    for (i, leading) in [(leader, true), (follower, false)] {
        let (code, body) = http(g.ports[i], "GET", "/readyz");
        assert_eq!(code, 200, "{body}");
        let ready: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(ready["ha"]["group"], "g1", "{body}");
        assert_eq!(ready["ha"]["leading"], leading, "{body}");
        let named = ready["ha"]["leader"].as_str().unwrap_or_default();
        assert!(is_identity_of(named, leader), "{body}");
        let (_, metrics) = http(g.ports[i], "GET", "/metrics");
        assert!(
            metrics.contains(&format!("tokend_ha_leader {}", u8::from(leading))),
            "{metrics}"
        );
        assert!(
            metrics.contains("tokend_ha_chain_generation{credential=\"vandar-main\"} 1"),
            "{metrics}"
        );
        let (_, status) = http(g.ports[i], "GET", "/v1/status");
        let status: Value = serde_json::from_str(&status).unwrap();
        let shared = &status[0]["shared"];
        assert_eq!(shared["chain_gen"], 1, "{status}");
        assert_eq!(shared["token_gen"], 1, "{status}");
        assert_eq!(
            shared["role"],
            if leading { "leader" } else { "follower" },
            "{status}"
        );
    }
    // `tokend status` reads the shared Secret, not the (empty) local state directory.
    let out = std::process::Command::new(crate::support::BIN)
        .arg("--config")
        .arg(g.config_path(follower))
        .args(["status", "--json"])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["token"], "valid", "{status}");
    assert_eq!(status[0]["shared"]["chain_gen"], 1, "{status}");
    // Cut off from the API server, a process counts store errors.
    g.proxies[follower].refuse();
    g.proxies[follower].cut();
    assert!(
        wait_for(Duration::from_secs(10), || {
            let (_, m) = http(g.ports[follower], "GET", "/metrics");
            m.lines()
                .any(|l| l.starts_with("tokend_ha_store_errors_total ") && !l.ends_with(" 0"))
        }),
        "no store error counted\n{}",
        g.logs()
    );
    assert_state_writes_are_conditional(&g);
}

#[test]
fn a_leader_stopped_cleanly_releases_the_lease_and_one_cut_off_says_why() {
    let mut g = Group::start_kube(2, emulator(Duration::from_secs(600)), "");
    // A lease long enough that waiting it out and a released Lease are far apart in time.
    g.set_timings("  lease: 12s\n  claim_ttl: 3s\n  takeover_after: 6s\n");
    g.start_all();
    assert!(g.wait_chain_gen(1, Duration::from_secs(20)), "{}", g.logs());
    let leader = g.wait_leader();
    let other = 1 - leader;
    let stopped = Instant::now();
    assert_eq!(g.stop_node(leader), Some(0), "{}", g.logs());
    // SIGTERM: the leader gives the Lease up on the way out (client-go's ReleaseOnCancel),
    // unless the other already took it.
    let holder = lease_holder(g.kube());
    assert!(
        holder.as_deref().is_none_or(|h| is_identity_of(h, other)),
        "the stopped leader still holds the Lease: {holder:?}\n{}",
        g.logs()
    );
    assert!(
        wait_for(Duration::from_secs(15), || {
            let (_, body) = http(g.ports[other], "GET", "/readyz");
            body.contains("\"leading\":true")
        }),
        "the other process did not take over\n{}",
        g.logs()
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "the handover took {:?}, as long as the lease: the Lease was not released",
        stopped.elapsed()
    );
    assert!(
        lease_holder(g.kube()).is_some_and(|h| is_identity_of(&h, other)),
        "{:?}",
        g.kube().get(Res::Leases, NAMESPACE, LEASE)
    );
    // Cut off from the API server, the remaining leader steps down and /readyz names the
    // problem, while its output keeps the last good token.
    g.proxies[other].blackhole();
    assert!(
        wait_for(Duration::from_secs(20), || {
            let (_, body) = http(g.ports[other], "GET", "/readyz");
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            v["ha"]["leading"] == false
                && v["ha"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("Lease"))
        }),
        "no step-down or no reason in /readyz\n{}",
        g.logs()
    );
    assert!(!g.output(other).trim().is_empty());
    assert_state_writes_are_conditional(&g);
    assert_lease_oracle(&g);
}

#[test]
fn check_describes_the_kubernetes_group_and_the_api_token_appears_nowhere() {
    let mut g = Group::start_kube(1, emulator(Duration::from_secs(600)), "");
    let path = g.config_path(0);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("log: {{ level: trace }}\n{text}")).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(crate::support::BIN)
            .arg("--config")
            .arg(&path)
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    };
    for args in [&["check"][..], &["check", "--offline"][..]] {
        let out = run(args);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {all}");
        assert!(
            all.contains(&format!(
                "shared state: group `g1` in Kubernetes: Secrets tokend-g1-<credential> and Lease {LEASE} in namespace {NAMESPACE}"
            )) && all.contains("this process is `node-0`"),
            "{args:?}: {all}"
        );
        assert!(
            !all.contains(KUBE_TOKEN),
            "{args:?} printed the API token: {all}"
        );
    }
    g.start_node(0);
    assert!(g.wait_chain_gen(1, Duration::from_secs(20)), "{}", g.logs());
    let status = run(&["status", "--json"]);
    assert!(status.status.success());
    g.stop_node(0);
    let everything = format!(
        "{}{}{}",
        g.log(0),
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        everything.contains("TRACE"),
        "the log is not at trace level"
    );
    assert!(!everything.contains(KUBE_TOKEN), "the API token leaked");
    // Nor in anything tokend stored.
    for v in g.kube().versions(Res::Secrets, NAMESPACE, STATE_SECRET) {
        assert!(!v.object.to_string().contains(KUBE_TOKEN));
        let record = decode_state(&v.object).unwrap_or_default();
        assert!(!record.to_string().contains(KUBE_TOKEN));
    }
    for entry in std::fs::read_dir(g.env.path("state-0")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains(KUBE_TOKEN));
    }
}

#[test]
fn a_state_secret_deleted_while_the_group_runs_is_written_again_without_a_replay() {
    let mut g = Group::start_kube(3, emulator(LIFETIME), REFRESH);
    g.start_all();
    assert!(g.wait_chain_gen(2, Duration::from_secs(30)), "{}", g.logs());
    // An operator deletes the state Secret (by mistake, or to "reset" it): the group still
    // holds the live chain, and must put it back rather than send a spent seed.
    g.kube().delete(Res::Secrets, NAMESPACE, STATE_SECRET);
    let deleted = Instant::now();
    let gen_before = g.last_commit().unwrap().chain_gen;
    assert!(
        g.wait_chain_gen(gen_before + 2, Duration::from_secs(40)),
        "the chain did not go on after its Secret was deleted\n{}",
        g.logs()
    );
    let kinds: Vec<&str> = g
        .kube()
        .versions(Res::Secrets, NAMESPACE, STATE_SECRET)
        .iter()
        .map(|v| v.kind)
        .skip_while(|k| *k != "DELETED")
        .take(2)
        .collect();
    assert_eq!(
        kinds,
        ["DELETED", "ADDED"],
        "the Secret was not created again"
    );
    std::thread::sleep(LAG);
    // The oracles see the chain go on from where it was (a record made anew would start
    // again at generation 0, and a resent seed is a replay).
    g.assert_oracles_since(LAG, &[0, 1, 2], Some(deleted + Duration::from_secs(2)));
    assert_eq!(g.env.emu.reused_refresh_tokens(), 0);
    assert_state_writes_are_conditional(&g);
}

#[test]
fn a_follower_only_process_mirrors_the_group_and_never_campaigns() {
    let mut g = Group::start_kube(2, emulator(LIFETIME), REFRESH);
    let path = g.config_path(1);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "  identity: node-1\n",
        "  identity: node-1\n  role: follower\n",
    );
    assert!(text.contains("role: follower"), "{text}");
    std::fs::write(&path, text).unwrap();
    g.start_all();
    assert!(g.wait_chain_gen(3, Duration::from_secs(30)), "{}", g.logs());
    std::thread::sleep(LAG);
    g.assert_oracles(LAG, &[0, 1]);
    // Without its leader, the group stands still: a follower never campaigns nor refreshes.
    g.kill_node(0);
    let calls = g.env.emu.requests(Endpoint::VandarRefresh);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(g.env.emu.requests(Endpoint::VandarRefresh), calls);
    let held: Vec<String> = g
        .kube()
        .versions(Res::Leases, NAMESPACE, LEASE)
        .iter()
        .filter_map(|v| {
            v.object
                .pointer("/spec/holderIdentity")?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(
        held.iter().all(|h| !h.starts_with("node-1_")),
        "the follower-only process took the Lease: {held:?}"
    );
    assert!(!g.log(1).contains("event=\"leading\""), "{}", g.logs());
    assert_state_writes_are_conditional(&g);
}
