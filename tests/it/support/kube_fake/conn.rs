//! One connection of the fake: reading a request and writing an answer.

use super::*;

pub(super) enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

pub(super) struct Request {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: BTreeMap<String, String>,
    pub(super) raw_query: String,
    pub(super) headers: BTreeMap<String, String>,
    pub(super) body: Vec<u8>,
    pub(super) client_cert: bool,
}

pub(super) fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut conn = match &shared.tls {
        None => Conn::Plain(stream),
        Some(config) => {
            let Ok(tls) = rustls::ServerConnection::new(config.clone()) else {
                return;
            };
            let mut s = rustls::StreamOwned::new(tls, stream);
            while s.conn.is_handshaking() {
                if s.conn.complete_io(&mut s.sock).is_err() {
                    return;
                }
            }
            Conn::Tls(Box::new(s))
        }
    };
    let client_cert = match &conn {
        Conn::Tls(s) => s.conn.peer_certificates().is_some_and(|c| !c.is_empty()),
        Conn::Plain(_) => false,
    };
    let Some(req) = read_request(&mut conn, client_cert) else {
        return;
    };
    handle(&mut conn, req, &shared);
    let _ = conn.flush();
    if let Conn::Tls(s) = &mut conn {
        s.conn.send_close_notify();
        let _ = s.conn.complete_io(&mut s.sock);
    }
    let _ = conn.tcp().shutdown(Shutdown::Both);
}

pub(super) fn read_request(conn: &mut Conn, client_cert: bool) -> Option<Request> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let (path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
    let query = form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    Some(Request {
        method,
        path: path.to_owned(),
        query,
        raw_query: raw_query.to_owned(),
        headers,
        body,
        client_cert,
    })
}

pub(super) fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

pub(super) fn respond(conn: &mut Conn, code: u16, body: &Value) {
    let text = body.to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// What a handler decided: an answer, or (for a watch) that it already streamed one.
pub(super) enum Outcome {
    Answer(u16, Value),
    Streamed,
}
