//! What the fake does with one request: authentication, faults, RBAC, then the verb.

use super::*;

pub(super) fn handle(conn: &mut Conn, req: Request, shared: &Shared) {
    // Route: /api/v1/namespaces/{ns}/secrets[/{name}], /apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let route = match segs.as_slice() {
        ["api", "v1", "namespaces", ns, "secrets", rest @ ..] => {
            Some((Res::Secrets, *ns, rest.first().copied()))
        }
        [
            "apis",
            "coordination.k8s.io",
            "v1",
            "namespaces",
            ns,
            "leases",
            rest @ ..,
        ] => Some((Res::Leases, *ns, rest.first().copied())),
        _ => None,
    };
    let Some((res, ns, name)) = route else {
        respond(
            conn,
            404,
            &status_body(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
        return;
    };
    let watch = req
        .query
        .get("watch")
        .is_some_and(|w| w == "1" || w == "true");
    let selected = req
        .query
        .get("fieldSelector")
        .and_then(|s| s.strip_prefix("metadata.name="))
        .map(str::to_owned);
    let verb = match (req.method.as_str(), name, watch) {
        ("GET", None, true) => "watch",
        ("GET", None, false) => "list",
        ("GET", Some(_), _) => "get",
        ("POST", None, _) => "create",
        ("PUT", Some(_), _) => "update",
        ("PATCH", Some(_), _) => "patch",
        _ => {
            respond(
                conn,
                405,
                &status_body(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                ),
            );
            return;
        }
    };
    let body: Option<Value> = serde_json::from_slice(&req.body).ok();
    let body_name = body
        .as_ref()
        .and_then(|b| b["metadata"]["name"].as_str())
        .map(str::to_owned);
    let obj_name = name
        .map(str::to_owned)
        .or(selected.clone())
        .or(body_name)
        .unwrap_or_default();
    let token = req
        .headers
        .get("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_owned);
    let mut recorded = Recorded {
        verb: verb.to_owned(),
        resource: res,
        namespace: ns.to_owned(),
        name: obj_name.clone(),
        query: req.raw_query.clone(),
        content_type: req.headers.get("content-type").cloned().unwrap_or_default(),
        body_rv: body
            .as_ref()
            .and_then(|b| b["metadata"]["resourceVersion"].as_str())
            .map(str::to_owned),
        token: token.clone(),
        status: 0,
    };

    // Authentication, then faults, then RBAC, as the real chain (authn, filters, authz).
    let fault = {
        let mut st = shared.store.lock().unwrap();
        let authenticated =
            req.client_cert || token.as_ref().is_some_and(|t| st.tokens.contains(t));
        if !authenticated {
            recorded.status = 401;
            st.requests.push(recorded);
            drop(st);
            respond(conn, 401, &status_body(401, "Unauthorized", "Unauthorized"));
            return;
        }
        if let Some((code, reason)) = st.outage {
            recorded.status = code;
            st.requests.push(recorded);
            drop(st);
            respond(
                conn,
                code,
                &status_body(code, reason, &format!("injected outage {code}")),
            );
            return;
        }
        let dry_run = req.query.get("dryRun").is_some_and(|d| d == "All");
        let at = st.faults.iter().position(|f| {
            f.verb == verb
                && match &f.target {
                    None => true,
                    Some((r, n)) => *r == res && *n == obj_name && !dry_run,
                }
                && f.when.is_none_or(|when| body.as_ref().is_some_and(when))
        });
        at.and_then(|i| st.faults.remove(i)).map(|f| f.fault)
    };
    let mut drop_after = false;
    let mut hold = Duration::ZERO;
    match fault {
        Some(Fault::Delay(d)) => std::thread::sleep(d),
        Some(Fault::Status(code, reason)) => {
            recorded.status = code;
            shared.store.lock().unwrap().requests.push(recorded);
            respond(
                conn,
                code,
                &status_body(code, reason, &format!("injected {code}")),
            );
            return;
        }
        Some(Fault::DropAfterCommit) => drop_after = true,
        Some(Fault::HoldAfterCommit(d)) => {
            drop_after = true;
            hold = d;
        }
        None => {}
    }

    let user = if req.client_cert {
        "tokend-client-cert".to_owned()
    } else {
        format!("system:serviceaccount:{ns}:tokend")
    };
    let authz_name =
        if verb == "create" || verb == "list" || (verb == "watch" && selected.is_none()) {
            None
        } else {
            Some(obj_name.clone())
        };
    let forbidden = |v: &str| -> Option<Value> {
        let st = shared.store.lock().unwrap();
        let roles = st.roles.as_ref()?;
        let allowed = roles.iter().any(|r| {
            r.verb == v
                && r.resource == res.plural()
                && (r.name.is_none() || (r.name.is_some() && r.name == authz_name))
        });
        if allowed {
            return None;
        }
        let subject = match &authz_name {
            Some(n) => format!("{} \"{n}\"", res.qualified()),
            None => res.qualified().to_owned(),
        };
        let message = format!(
            "{subject} is forbidden: User \"{user}\" cannot {v} resource \"{}\" in API group \"{}\" in the namespace \"{ns}\"",
            res.plural(),
            res.group()
        );
        Some(status_body(403, "Forbidden", &message))
    };
    if let Some(denied) = forbidden(verb) {
        recorded.status = 403;
        shared.store.lock().unwrap().requests.push(recorded);
        respond(conn, 403, &denied);
        return;
    }

    let dry_run = req.query.get("dryRun").is_some_and(|d| d == "All");
    let key: Key = (res, ns.to_owned(), obj_name.clone());
    let outcome = match verb {
        "get" => {
            let st = shared.store.lock().unwrap();
            match st.objects.get(&key) {
                Some(o) => Outcome::Answer(200, o.clone()),
                None => Outcome::Answer(404, not_found(res, &obj_name)),
            }
        }
        "list" => {
            let st = shared.store.lock().unwrap();
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|((r, n, name), _)| {
                    *r == res && n == ns && selected.as_ref().is_none_or(|s| s == name)
                })
                .map(|(_, o)| o.clone())
                .collect();
            Outcome::Answer(
                200,
                json!({"kind": format!("{}List", res.kind()), "apiVersion": res.api_version(),
                "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
            )
        }
        "watch" => {
            recorded.status = 200;
            shared.store.lock().unwrap().requests.push(recorded.clone());
            stream_watch(conn, shared, &req, res, ns, selected);
            Outcome::Streamed
        }
        "create" => match body {
            None => Outcome::Answer(
                400,
                status_body(400, "BadRequest", "the body is not a JSON object"),
            ),
            Some(obj) => {
                let mut st = shared.store.lock().unwrap();
                if obj_name.is_empty() {
                    Outcome::Answer(
                        422,
                        status_body(
                            422,
                            "Invalid",
                            "metadata.name: Required value: name or generateName is required",
                        ),
                    )
                } else if st.objects.contains_key(&key) {
                    Outcome::Answer(
                        409,
                        status_body(
                            409,
                            "AlreadyExists",
                            &format!("{} \"{obj_name}\" already exists", res.qualified()),
                        ),
                    )
                } else if obj["metadata"]["resourceVersion"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty())
                {
                    Outcome::Answer(
                        400,
                        status_body(
                            400,
                            "BadRequest",
                            "resourceVersion should not be set on objects to be created",
                        ),
                    )
                } else if dry_run {
                    let mut o = obj;
                    o["metadata"]["namespace"] = json!(ns);
                    o["metadata"]["uid"] = json!("uid-dry-run");
                    Outcome::Answer(201, o)
                } else {
                    commit(&mut st, key.clone(), "ADDED", obj, res);
                    Outcome::Answer(201, st.objects[&key].clone())
                }
            }
        },
        "update" => match body {
            None => Outcome::Answer(
                400,
                status_body(400, "BadRequest", "the body is not a JSON object"),
            ),
            Some(obj) => {
                let mut st = shared.store.lock().unwrap();
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                match st.objects.get(&key).cloned() {
                    _ if body_name_mismatch(&obj, &obj_name) => Outcome::Answer(
                        400,
                        status_body(
                            400,
                            "BadRequest",
                            "the name of the object does not match the name on the URL",
                        ),
                    ),
                    None => Outcome::Answer(404, not_found(res, &obj_name)),
                    Some(_) if rv.is_empty() && res == Res::Leases => Outcome::Answer(
                        422,
                        status_body(
                            422,
                            "Invalid",
                            &format!(
                                "Lease.coordination.k8s.io \"{obj_name}\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
                            ),
                        ),
                    ),
                    Some(cur)
                        if !rv.is_empty() && cur["metadata"]["resourceVersion"] != json!(rv) =>
                    {
                        Outcome::Answer(409, conflict(res, &obj_name))
                    }
                    Some(cur) => {
                        if rv.is_empty() && !dry_run {
                            st.unconditional_updates += 1;
                        }
                        let mut o = obj;
                        o["metadata"]["uid"] = cur["metadata"]["uid"].clone();
                        o["metadata"]["creationTimestamp"] =
                            cur["metadata"]["creationTimestamp"].clone();
                        if dry_run {
                            o["metadata"]["resourceVersion"] =
                                cur["metadata"]["resourceVersion"].clone();
                            Outcome::Answer(200, o)
                        } else {
                            commit(&mut st, key.clone(), "MODIFIED", o, res);
                            Outcome::Answer(200, st.objects[&key].clone())
                        }
                    }
                }
            }
        },
        "patch" => apply(shared, &req, res, &key, body, dry_run),
        _ => unreachable!(),
    };
    let Outcome::Answer(code, answer) = outcome else {
        return;
    };
    recorded.status = code;
    shared.store.lock().unwrap().requests.push(recorded);
    shared.changed.notify_all();
    if drop_after {
        // Committed; the client never learns it.
        std::thread::sleep(hold);
        return;
    }
    respond(conn, code, &answer);
}

pub(super) fn body_name_mismatch(obj: &Value, name: &str) -> bool {
    obj["metadata"]["name"].as_str().is_some_and(|n| n != name)
}

pub(super) fn not_found(res: Res, name: &str) -> Value {
    status_body(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", res.qualified()),
    )
}

pub(super) fn conflict(res: Res, name: &str) -> Value {
    status_body(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            res.qualified()
        ),
    )
}

/// Server-side apply, simplified: `data`, `metadata.labels` and `metadata.annotations`
/// are merged key by key, `type` and a Lease's `spec` replaced; no managedFields.
pub(super) fn apply(
    shared: &Shared,
    req: &Request,
    res: Res,
    key: &Key,
    body: Option<Value>,
    dry_run: bool,
) -> Outcome {
    if req.headers.get("content-type").map(String::as_str) != Some("application/apply-patch+yaml") {
        return Outcome::Answer(
            415,
            status_body(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format",
            ),
        );
    }
    if req.query.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Outcome::Answer(
            400,
            status_body(
                400,
                "BadRequest",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ),
        );
    }
    let Some(patch) = body else {
        return Outcome::Answer(
            400,
            status_body(
                400,
                "BadRequest",
                "the body is not JSON (the fake reads JSON-as-YAML only)",
            ),
        );
    };
    if body_name_mismatch(&patch, &key.2) {
        return Outcome::Answer(
            400,
            status_body(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            ),
        );
    }
    let mut st = shared.store.lock().unwrap();
    let precondition = patch["metadata"]["resourceVersion"]
        .as_str()
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    let current = st.objects.get(key).cloned();
    if let Some(rv) = &precondition {
        match &current {
            Some(cur) if cur["metadata"]["resourceVersion"] == json!(rv) => {}
            // A precondition on an absent object cannot hold either.
            _ => return Outcome::Answer(409, conflict(res, &key.2)),
        }
    }
    let existed = current.is_some();
    let mut merged = current.unwrap_or_else(|| json!({"metadata": {"name": key.2}}));
    for field in ["/metadata/labels", "/metadata/annotations", "/data"] {
        if let Some(Value::Object(add)) = patch.pointer(field) {
            let (parent, leaf) = field.rsplit_once('/').unwrap();
            let target = if parent.is_empty() {
                &mut merged
            } else {
                merged.pointer_mut(parent).unwrap()
            };
            let slot = &mut target[leaf];
            if !slot.is_object() {
                *slot = json!({});
            }
            for (k, v) in add {
                slot[k] = v.clone();
            }
        }
    }
    for field in ["type", "spec"] {
        if !patch[field].is_null() {
            merged[field] = patch[field].clone();
        }
    }
    if dry_run {
        return Outcome::Answer(if existed { 200 } else { 201 }, merged);
    }
    let kind = if existed { "MODIFIED" } else { "ADDED" };
    commit(&mut st, key.clone(), kind, merged, res);
    Outcome::Answer(if existed { 200 } else { 201 }, st.objects[key].clone())
}
