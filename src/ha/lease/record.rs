//! The `coordination.k8s.io/v1` Lease as the election reads and writes it: the few spec
//! fields client-go's leader election uses, parsed from and rendered to JSON (pure).

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

/// A Lease as read from (or returned by) the API server.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The whole object: a PUT replaces it all, so it is written back with only the
    /// spec fields the election owns changed (labels, annotations, owners survive).
    pub object: Value,
    /// Opaque; sent back with every write (compare-and-swap).
    pub rv: String,
    /// The whole `spec`, compared raw to see whether the holder still writes it.
    pub spec: Value,
    /// `""`: nobody holds it (released, or never held).
    pub holder: String,
    /// `None`: absent or not positive; the reader then assumes its own duration.
    pub duration: Option<Duration>,
    pub transitions: i64,
    /// Kept as written, so a renew does not change when the holder acquired.
    pub acquire_time: Option<String>,
}

impl Record {
    /// Reads a Lease object; `None` if it has no `metadata.resourceVersion` (never so for
    /// what the API server returns).
    pub fn from_value(object: &Value) -> Option<Record> {
        let rv = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty())?;
        let spec = object.get("spec").cloned().unwrap_or(Value::Null);
        let holder = spec
            .get("holderIdentity")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let duration = spec
            .get("leaseDurationSeconds")
            .and_then(Value::as_i64)
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64));
        let transitions = spec
            .get("leaseTransitions")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let acquire_time = spec
            .get("acquireTime")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(Record {
            object: object.clone(),
            rv: rv.to_owned(),
            spec,
            holder,
            duration,
            transitions,
            acquire_time,
        })
    }
}

/// The spec the election writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub holder: String,
    pub duration_secs: i64,
    /// RFC 3339 with microseconds (`MicroTime`), e.g. `2026-11-29T02:00:00.000000Z`.
    pub acquire_time: String,
    pub renew_time: String,
    pub transitions: i64,
}

/// A wall-clock instant as the API server's `MicroTime` wants it. Only for humans and
/// other tools: expiry is never judged from it.
pub fn micro_time(wall: SystemTime) -> String {
    humantime::format_rfc3339_micros(wall).to_string()
}

/// Lease durations are whole seconds: rounded up, so the Lease never promises less than
/// asked, and at least 1.
pub fn duration_secs(lease: Duration) -> i64 {
    let secs = lease.as_secs() + u64::from(lease.subsec_nanos() > 0);
    secs.clamp(1, i64::MAX as u64) as i64
}

/// The Lease to POST when there is none.
pub fn new_lease(namespace: &str, name: &str, spec: &Spec) -> Value {
    let base = json!({"metadata": {"name": name, "namespace": namespace}});
    with_spec(base, spec)
}

/// The Lease to PUT over `base`: the object as read, with its resourceVersion (the
/// compare-and-swap) and everything the election does not own.
pub fn updated(base: &Record, spec: &Spec) -> Value {
    let mut object = base.object.clone();
    object["metadata"]["resourceVersion"] = json!(base.rv);
    with_spec(object, spec)
}

fn with_spec(mut object: Value, spec: &Spec) -> Value {
    object["apiVersion"] = json!("coordination.k8s.io/v1");
    object["kind"] = json!("Lease");
    if !object["spec"].is_object() {
        object["spec"] = json!({});
    }
    let s = &mut object["spec"];
    s["holderIdentity"] = json!(spec.holder);
    s["leaseDurationSeconds"] = json!(spec.duration_secs);
    s["acquireTime"] = json!(spec.acquire_time);
    s["renewTime"] = json!(spec.renew_time);
    s["leaseTransitions"] = json!(spec.transitions);
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_client_go_writes_and_tolerates_what_it_leaves_out() {
        let full = json!({"metadata": {"name": "tokend-g", "resourceVersion": "41"},
            "spec": {"holderIdentity": "b_2", "leaseDurationSeconds": 15,
                     "acquireTime": "2026-11-29T01:00:00.000000Z",
                     "renewTime": "2026-11-29T02:00:00.000000Z", "leaseTransitions": 3}});
        let r = Record::from_value(&full).unwrap();
        assert_eq!(r.rv, "41");
        assert_eq!(r.holder, "b_2");
        assert_eq!(r.duration, Some(Duration::from_secs(15)));
        assert_eq!(r.transitions, 3);
        assert_eq!(
            r.acquire_time.as_deref(),
            Some("2026-11-29T01:00:00.000000Z")
        );
        assert_eq!(r.spec, full["spec"]);

        // Created by `kubectl` with an empty spec: nobody holds it.
        let bare = json!({"metadata": {"name": "tokend-g", "resourceVersion": "7"}});
        let r = Record::from_value(&bare).unwrap();
        assert_eq!(
            (r.holder.as_str(), r.duration, r.transitions, r.acquire_time),
            ("", None, 0, None)
        );
        let zero = json!({"metadata": {"resourceVersion": "8"},
            "spec": {"holderIdentity": "x", "leaseDurationSeconds": 0}});
        assert_eq!(Record::from_value(&zero).unwrap().duration, None);
        assert_eq!(Record::from_value(&json!({"metadata": {}})), None);
    }

    #[test]
    fn durations_round_up_to_whole_seconds() {
        for (lease, want) in [
            (Duration::ZERO, 1),
            (Duration::from_millis(1), 1),
            (Duration::from_secs(2), 2),
            (Duration::from_millis(2500), 3),
            (Duration::from_secs(15), 15),
        ] {
            assert_eq!(duration_secs(lease), want, "{lease:?}");
        }
    }

    #[test]
    fn writes_a_lease_with_micro_times() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_917_600);
        assert_eq!(micro_time(wall), "2026-11-29T02:00:00.000000Z");
        let spec = Spec {
            holder: "a_1".into(),
            duration_secs: 15,
            acquire_time: micro_time(wall),
            renew_time: micro_time(wall + Duration::from_micros(1500)),
            transitions: 2,
        };
        let read = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "tokend-g", "namespace": "apps", "resourceVersion": "9",
                         "labels": {"app.kubernetes.io/managed-by": "Helm"}},
            "spec": {"holderIdentity": "", "leaseDurationSeconds": 1, "strategy": "OldestEmulationVersion"}});
        let put = updated(&Record::from_value(&read).unwrap(), &spec);
        assert_eq!(
            put,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "tokend-g", "namespace": "apps", "resourceVersion": "9",
                             "labels": {"app.kubernetes.io/managed-by": "Helm"}},
                "spec": {"holderIdentity": "a_1", "leaseDurationSeconds": 15,
                         "acquireTime": "2026-11-29T02:00:00.000000Z",
                         "renewTime": "2026-11-29T02:00:00.001500Z", "leaseTransitions": 2,
                         "strategy": "OldestEmulationVersion"}})
        );
        let post = new_lease("apps", "tokend-g", &spec);
        assert_eq!(
            post["metadata"],
            json!({"name": "tokend-g", "namespace": "apps"})
        );
        assert_eq!(
            post["spec"],
            put["spec"]
                .as_object()
                .map(|s| {
                    let mut s = s.clone();
                    s.remove("strategy");
                    Value::Object(s)
                })
                .unwrap()
        );
        // What we write reads back the same.
        let mut stored = put.clone();
        stored["metadata"]["resourceVersion"] = json!("10");
        let r = Record::from_value(&stored).unwrap();
        assert_eq!((r.holder.as_str(), r.transitions), ("a_1", 2));
    }
}
