//! A watch stream: the gateway answers `POST /v3/watch` with one long HTTP body of
//! concatenated JSON objects (newline-separated in 3.4, but chunk boundaries fall
//! anywhere), which [`Splitter`] cuts back into messages.

use std::collections::VecDeque;

use super::error::EtcdError;
use super::wire::{Event, WatchMessage, WatchMessageWire, decode_watch};

/// Events of one revision batch, in etcd's order, and the store revision when sent.
#[derive(Debug, Clone)]
pub struct WatchBatch {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// Cuts a byte stream of concatenated JSON values into whole values.
pub(super) struct Splitter {
    buf: Vec<u8>,
    max: usize,
}

impl Splitter {
    pub fn new(max: usize) -> Splitter {
        Splitter {
            buf: Vec::new(),
            max,
        }
    }

    /// Adds bytes; an unfinished message longer than `max` is an error (a body that never
    /// closes its object must not eat the memory).
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), String> {
        if self.buf.len() + chunk.len() > self.max {
            return Err(format!(
                "a watch message is larger than {} KiB",
                self.max / 1024
            ));
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// The next whole message, `None` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<WatchMessageWire>, String> {
        let mut stream =
            serde_json::Deserializer::from_slice(&self.buf).into_iter::<WatchMessageWire>();
        match stream.next() {
            None => {
                self.buf.clear();
                Ok(None)
            }
            Some(Ok(msg)) => {
                let used = stream.byte_offset();
                self.buf.drain(..used);
                Ok(Some(msg))
            }
            Some(Err(e)) if e.is_eof() => Ok(None),
            Some(Err(e)) => Err(e.to_string()),
        }
    }
}

/// An open watch. Dropping it closes the HTTP stream (and so the server-side watch).
pub struct Watch {
    pub(super) endpoint: String,
    pub(super) response: reqwest::Response,
    pub(super) splitter: Splitter,
    pub(super) queued: VecDeque<WatchBatch>,
    /// The store revision when the watch was created.
    pub(super) created_revision: i64,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("endpoint", &self.endpoint)
            .field("created_revision", &self.created_revision)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// The endpoint this watch streams from.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The store's revision when the watch was created: events up to it were already
    /// visible to a read made before.
    pub fn created_revision(&self) -> i64 {
        self.created_revision
    }

    /// The next batch of events. Waits as long as etcd is silent: wrap it in a timeout
    /// that suits the caller (a partitioned TCP connection can stay silent forever).
    /// Any error ends the watch; the caller re-reads and watches again from there.
    pub async fn next(&mut self) -> Result<WatchBatch, EtcdError> {
        loop {
            if let Some(batch) = self.queued.pop_front() {
                return Ok(batch);
            }
            match self.read_message().await? {
                WatchMessage::Events { revision, events } => {
                    self.queued.push_back(WatchBatch { revision, events })
                }
                // A second `created` cannot come on a one-watch stream; ignore it.
                WatchMessage::Created { .. } => {}
                WatchMessage::Compacted { compact_revision } => {
                    return Err(EtcdError::Compacted {
                        endpoint: self.endpoint.clone(),
                        compact_revision,
                    });
                }
                WatchMessage::Canceled { code, reason } => {
                    return Err(EtcdError::Status {
                        endpoint: self.endpoint.clone(),
                        op: "watch",
                        code,
                        message: reason,
                    });
                }
            }
        }
    }

    pub(super) async fn read_message(&mut self) -> Result<WatchMessage, EtcdError> {
        loop {
            let next = self
                .splitter
                .next_message()
                .map_err(|reason| self.bad(reason))?;
            if let Some(wire) = next {
                return decode_watch(wire).map_err(|reason| self.bad(reason));
            }
            let chunk = self.response.chunk().await.map_err(|e| {
                self.closed(format!("the stream broke: {}", crate::net::root_cause(&e)))
            })?;
            match chunk {
                Some(bytes) => self.splitter.push(&bytes).map_err(|r| self.bad(r))?,
                None => return Err(self.closed("etcd closed the stream".to_owned())),
            }
        }
    }

    fn bad(&self, reason: String) -> EtcdError {
        EtcdError::BadAnswer {
            endpoint: self.endpoint.clone(),
            op: "watch",
            reason,
        }
    }

    // A watch only reads, so a broken stream is never ambiguous.
    fn closed(&self, reason: String) -> EtcdError {
        EtcdError::Unreachable {
            op: "watch",
            endpoints: self.endpoint.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &mut Splitter) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(m) = s.next_message().unwrap() {
            out.push(match decode_watch(m).unwrap() {
                WatchMessage::Created { revision } => format!("created@{revision}"),
                WatchMessage::Events { revision, events } => {
                    format!("events@{revision}x{}", events.len())
                }
                WatchMessage::Compacted { compact_revision } => {
                    format!("compacted@{compact_revision}")
                }
                WatchMessage::Canceled { code, .. } => format!("canceled/{code}"),
            });
        }
        out
    }

    const CREATED: &str = r#"{"result":{"header":{"revision":"5"},"created":true}}"#;
    const EVENTS: &str = r#"{"result":{"header":{"revision":"6"},"events":[{"kv":{"key":"L2s=","mod_revision":"6"}},{"type":"DELETE","kv":{"key":"L2s=","mod_revision":"6"}}]}}"#;
    const COMPACTED: &str =
        r#"{"result":{"header":{"revision":"5"},"canceled":true,"compact_revision":"3"}}"#;

    #[test]
    fn splits_at_any_chunk_boundary() {
        let stream = format!("{CREATED}\n{EVENTS}\n{COMPACTED}\n");
        let want = ["created@5", "events@6x2", "compacted@3"];
        // Every split point, including inside strings, escapes and numbers.
        for cut in 0..=stream.len() {
            let mut s = Splitter::new(1 << 20);
            let mut got = Vec::new();
            s.push(&stream.as_bytes()[..cut]).unwrap();
            got.extend(kinds(&mut s));
            s.push(&stream.as_bytes()[cut..]).unwrap();
            got.extend(kinds(&mut s));
            assert_eq!(got, want, "cut at {cut}");
        }
    }

    #[test]
    fn splitter_table() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("\n\n", &[]),
            (&format!("{CREATED}{EVENTS}"), &["created@5", "events@6x2"]),
            (
                &format!("  {CREATED} \r\n\t{EVENTS}"),
                &["created@5", "events@6x2"],
            ),
            (&CREATED[..20], &[]),
        ];
        for (input, want) in cases {
            let mut s = Splitter::new(1 << 20);
            s.push(input.as_bytes()).unwrap();
            assert_eq!(kinds(&mut s), *want, "{input:?}");
        }
    }

    #[test]
    fn splitter_rejects_garbage_and_oversize() {
        let mut s = Splitter::new(1 << 20);
        s.push(b"<html>").unwrap();
        assert!(s.next_message().is_err());

        let mut s = Splitter::new(40);
        s.push(&CREATED.as_bytes()[..30]).unwrap();
        assert!(s.push(&CREATED.as_bytes()[30..]).is_err());
    }
}
