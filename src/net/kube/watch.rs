//! A watch stream: the API server answers `GET …?watch=1` with one long chunked body of
//! newline-terminated JSON events (`{"type": "MODIFIED", "object": {…}}`), chunk
//! boundaries anywhere. [`Lines`] cuts the bytes back into lines; [`decode`] reads one.

use serde::Deserialize;
use serde_json::Value;

use super::KubeObject;
use super::error::{KubeError, Verdict, classify};

/// One event of a watch, in the API server's order.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    Added(KubeObject),
    Modified(KubeObject),
    Deleted(KubeObject),
    /// Nothing changed, but everything up to `resource_version` has been sent: a
    /// re-watch may start there instead of at an older, possibly compacted, version.
    Bookmark {
        resource_version: String,
    },
}

impl WatchEvent {
    /// The resourceVersion this event brings the watcher to.
    pub fn resource_version(&self) -> &str {
        match self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
                o.resource_version()
            }
            WatchEvent::Bookmark { resource_version } => resource_version,
        }
    }
}

/// Cuts a byte stream into lines, refusing a line longer than `max` (a stream that never
/// ends its line must not eat the memory).
pub(super) struct Lines {
    buf: Vec<u8>,
    max: usize,
}

impl Lines {
    pub fn new(max: usize) -> Lines {
        Lines {
            buf: Vec::new(),
            max,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<(), String> {
        let pending = self.buf.len()
            - self
                .buf
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
        if pending + chunk.len() > self.max {
            return Err(format!(
                "a watch event is larger than {} KiB",
                self.max / 1024
            ));
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// The next whole, non-blank line without its terminator; `None` if more bytes are needed.
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        loop {
            let end = self.buf.iter().position(|&b| b == b'\n')?;
            let mut line: Vec<u8> = self.buf.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Some(line);
            }
        }
    }

    /// Bytes of an unfinished line (a stream that ends there was cut off).
    pub fn has_partial(&self) -> bool {
        !self.buf.iter().all(u8::is_ascii_whitespace)
    }
}

#[derive(Deserialize)]
struct EventWire {
    #[serde(rename = "type")]
    kind: String,
    object: Value,
}

/// What one line of a watch says.
#[derive(Debug)]
pub(super) enum Decoded {
    Event(WatchEvent),
    /// An ERROR event: its `Status` classified like an error answer.
    Error(Verdict),
}

pub(super) fn decode(line: &[u8]) -> Result<Decoded, String> {
    let wire: EventWire =
        serde_json::from_slice(line).map_err(|e| format!("a watch event is not JSON: {e}"))?;
    let object = || KubeObject::from_value(wire.object.clone());
    Ok(Decoded::Event(match wire.kind.as_str() {
        "ADDED" => WatchEvent::Added(object()?),
        "MODIFIED" => WatchEvent::Modified(object()?),
        "DELETED" => WatchEvent::Deleted(object()?),
        "BOOKMARK" => WatchEvent::Bookmark {
            resource_version: object()?.resource_version().to_owned(),
        },
        "ERROR" => {
            let body = serde_json::to_vec(&wire.object).unwrap_or_default();
            return Ok(Decoded::Error(classify(200, &body, false)));
        }
        other => return Err(format!("unknown watch event type `{other}`")),
    }))
}

/// An open watch. Dropping it closes the HTTP stream.
pub struct Watch {
    pub(super) target: String,
    pub(super) server: String,
    pub(super) response: reqwest::Response,
    pub(super) lines: Lines,
    /// The last resourceVersion seen (events and bookmarks): where to re-watch from.
    pub(super) resource_version: String,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("target", &self.target)
            .field("resource_version", &self.resource_version)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// The resourceVersion of the last event or bookmark (at first, the one watched from).
    pub fn resource_version(&self) -> &str {
        &self.resource_version
    }

    /// The next event; `Ok(None)` when the server ended the watch cleanly (its
    /// `timeoutSeconds` passed): watch again from [`Watch::resource_version`]. Waits as
    /// long as the server is silent, so wrap it in a timeout longer than the bookmark
    /// interval. [`KubeError::Gone`] means: list again.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, KubeError> {
        loop {
            if let Some(line) = self.lines.next_line() {
                match decode(&line).map_err(|r| self.bad(r))? {
                    Decoded::Event(e) => {
                        self.resource_version = e.resource_version().to_owned();
                        return Ok(Some(e));
                    }
                    Decoded::Error(v) => {
                        return Err(super::verdict_error(v, "watch", &self.target, &self.server));
                    }
                }
            }
            let chunk = self
                .response
                .chunk()
                .await
                .map_err(|e| KubeError::Unreachable {
                    server: self.server.clone(),
                    op: "watch",
                    target: self.target.clone(),
                    reason: format!("the stream broke: {}", crate::net::root_cause(&e)),
                })?;
            match chunk {
                Some(bytes) => self.lines.push(&bytes).map_err(|r| self.bad(r))?,
                None if self.lines.has_partial() => {
                    return Err(self.bad("the stream ended inside an event".to_owned()));
                }
                None => return Ok(None),
            }
        }
    }

    fn bad(&self, reason: String) -> KubeError {
        KubeError::BadAnswer {
            op: "watch",
            target: self.target.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODIFIED: &str = r#"{"type":"MODIFIED","object":{"kind":"Secret","metadata":{"name":"s","resourceVersion":"7"},"data":{"k":"dg=="}}}"#;
    const BOOKMARK: &str =
        r#"{"type":"BOOKMARK","object":{"kind":"Secret","metadata":{"resourceVersion":"9"}}}"#;
    const GONE: &str = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 3 (9)","reason":"Expired","code":410}}"#;

    fn describe(line: &[u8]) -> String {
        match decode(line).unwrap() {
            Decoded::Event(WatchEvent::Added(o)) => format!("added@{}", o.resource_version()),
            Decoded::Event(WatchEvent::Modified(o)) => format!("modified@{}", o.resource_version()),
            Decoded::Event(WatchEvent::Deleted(o)) => format!("deleted@{}", o.resource_version()),
            Decoded::Event(WatchEvent::Bookmark { resource_version }) => {
                format!("bookmark@{resource_version}")
            }
            Decoded::Error(v) => format!("error {v:?}"),
        }
    }

    fn drain(l: &mut Lines) -> Vec<String> {
        std::iter::from_fn(|| l.next_line())
            .map(|line| describe(&line))
            .collect()
    }

    #[test]
    fn splits_at_any_chunk_boundary() {
        let stream = format!("{MODIFIED}\n{BOOKMARK}\r\n\n{GONE}\n");
        let want = [
            "modified@7",
            "bookmark@9",
            "error Gone(\"too old resource version: 3 (9)\")",
        ];
        for cut in 0..=stream.len() {
            let mut l = Lines::new(1 << 20);
            let mut got = Vec::new();
            l.push(&stream.as_bytes()[..cut]).unwrap();
            got.extend(drain(&mut l));
            l.push(&stream.as_bytes()[cut..]).unwrap();
            got.extend(drain(&mut l));
            assert_eq!(got, want, "cut at {cut}");
            assert!(!l.has_partial());
        }
    }

    #[test]
    fn decode_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            (MODIFIED, Ok("modified@7")),
            (
                r#"{"type":"ADDED","object":{"metadata":{"resourceVersion":"1"}}}"#,
                Ok("added@1"),
            ),
            (
                r#"{"type":"DELETED","object":{"metadata":{"resourceVersion":"2"}}}"#,
                Ok("deleted@2"),
            ),
            (BOOKMARK, Ok("bookmark@9")),
            (
                r#"{"type":"ERROR","object":{"kind":"Status","code":500,"reason":"InternalError","message":"boom"}}"#,
                Ok("error Status { code: 500, reason: \"InternalError\", message: \"boom\" }"),
            ),
            (
                r#"{"type":"SNAPSHOT","object":{}}"#,
                Err("unknown watch event type `SNAPSHOT`"),
            ),
            (
                r#"{"type":"ADDED","object":{"metadata":{}}}"#,
                Err("no metadata.resourceVersion"),
            ),
            ("<html>", Err("not JSON")),
        ];
        for (line, want) in cases {
            match (decode(line.as_bytes()), want) {
                (Ok(_), Ok(w)) => assert_eq!(describe(line.as_bytes()), *w),
                (Err(e), Err(w)) => assert!(e.contains(w), "{line}: {e}"),
                (got, want) => panic!("{line}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn an_endless_line_is_refused_and_a_cut_line_is_noticed() {
        let mut l = Lines::new(64);
        l.push(&[b'x'; 60]).unwrap();
        assert!(l.push(&[b'x'; 10]).is_err());
        // Complete lines do not count against the limit of the next one.
        let mut l = Lines::new(64);
        l.push(&[b'x'; 60]).unwrap();
        l.push(b"\n").unwrap();
        l.push(&[b'y'; 30]).unwrap();
        assert_eq!(l.next_line().unwrap().len(), 60);
        assert!(l.has_partial());
    }
}
