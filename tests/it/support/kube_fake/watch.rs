//! The fake's watch streams: events after a resourceVersion, bookmarks, 410 Gone.

use super::*;

/// Streams events (chunked) until `timeoutSeconds`, the fake stops, or the client leaves.
pub(super) fn stream_watch(
    conn: &mut Conn,
    shared: &Shared,
    req: &Request,
    res: Res,
    ns: &str,
    selected: Option<String>,
) {
    let bookmarks = req
        .query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1800u64);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let from = req
        .query
        .get("resourceVersion")
        .cloned()
        .unwrap_or_default();
    if write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").is_err() {
        return;
    }
    let matches =
        |key: &Key| key.0 == res && key.1 == ns && selected.as_ref().is_none_or(|s| *s == key.2);
    let mut st = shared.store.lock().unwrap();
    let mut sent_bookmarks = st.bookmarks;
    let epoch = st.watch_epoch;
    let mut lines: Vec<Value> = Vec::new();
    let mut last: u64;
    if from.is_empty() || from == "0" {
        // "Any version": the current state as ADDED, then changes.
        for (key, obj) in &st.objects {
            if matches(key) {
                lines.push(json!({"type": "ADDED", "object": obj}));
            }
        }
        last = st.rv;
    } else {
        let Ok(n) = from.parse::<u64>() else {
            drop(st);
            let _ = chunk(
                conn,
                &json!({"type": "ERROR", "object": status_body(400, "BadRequest", "invalid resourceVersion")}),
            );
            let _ = write!(conn, "0\r\n\r\n");
            return;
        };
        if n < st.oldest {
            let message = format!("too old resource version: {n} ({})", st.oldest);
            drop(st);
            let _ = chunk(
                conn,
                &json!({"type": "ERROR", "object": status_body(410, "Expired", &message)}),
            );
            let _ = write!(conn, "0\r\n\r\n");
            return;
        }
        last = n;
    }
    loop {
        for e in st.history.iter().filter(|e| e.rv > last) {
            if matches(&e.key) {
                lines.push(json!({"type": e.kind, "object": e.object}));
            }
        }
        last = st.rv;
        if bookmarks && st.bookmarks != sent_bookmarks {
            sent_bookmarks = st.bookmarks;
            lines.push(json!({"type": "BOOKMARK", "object": {"kind": res.kind(), "apiVersion": res.api_version(),
                "metadata": {"resourceVersion": st.rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}}}));
        }
        if !lines.is_empty() {
            drop(st);
            for line in lines.drain(..) {
                if chunk(conn, &line).is_err() {
                    return;
                }
            }
            st = shared.store.lock().unwrap();
            continue;
        }
        if shared.stop.load(Ordering::SeqCst)
            || Instant::now() >= deadline
            || st.watch_epoch != epoch
        {
            drop(st);
            let _ = write!(conn, "0\r\n\r\n");
            return;
        }
        st = shared
            .changed
            .wait_timeout(st, Duration::from_millis(100))
            .unwrap()
            .0;
    }
}

pub(super) fn chunk(conn: &mut Conn, line: &Value) -> std::io::Result<()> {
    let text = format!("{line}\n");
    write!(conn, "{:x}\r\n{text}\r\n", text.len())?;
    conn.flush()
}
