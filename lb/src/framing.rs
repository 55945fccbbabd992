//! Request smuggling defence: follows the bytes a client sends on an
//! HTTP/1 connection, message by message, and flags the first request whose
//! framing two parsers could read differently (Content-Length together with
//! Transfer-Encoding, or more than one Content-Length).
//!
//! hyper resolves such requests on its own (Transfer-Encoding wins, equal
//! Content-Lengths merge) before the proxy sees them, so the proxy cannot
//! tell from the parsed request; this scanner reads the raw heads. It runs
//! on the read path ahead of hyper, so a request is judged before it is
//! dispatched, and the proxy answers the flagged one with 400 and closes.
//! An HTTP/2 connection, an upgraded one, or anything it cannot follow is
//! left alone from then on.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

/// Longest head the scanner buffers; hyper refuses longer ones anyway.
const MAX_HEAD: usize = 64 * 1024;

/// What the scanner tells the proxy.
pub(crate) struct Verdicts {
    /// The index (from 0) of the first request with ambiguous framing, or
    /// `u64::MAX`.
    first_bad: AtomicU64,
}

impl Verdicts {
    pub fn new() -> Arc<Self> {
        Arc::new(Verdicts {
            first_bad: AtomicU64::new(u64::MAX),
        })
    }

    /// Whether request number `index` must be refused.
    pub fn is_bad(&self, index: u64) -> bool {
        self.first_bad.load(SeqCst) == index
    }
}

enum State {
    /// Reading a request head into the buffer.
    Head,
    /// Skipping a body of known length.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping chunk data.
    ChunkData(u64),
    /// Skipping the CRLF after chunk data.
    ChunkEnd(u8),
    /// Reading trailer lines; the flag says whether the current line is empty so far.
    Trailers(bool),
    /// No longer following.
    Off,
}

/// The scanner of one connection.
pub(crate) struct Scanner {
    state: State,
    buf: Vec<u8>,
    seen: u64,
    verdicts: Arc<Verdicts>,
}

impl Scanner {
    pub fn new(verdicts: Arc<Verdicts>) -> Self {
        Scanner {
            state: State::Head,
            buf: Vec::new(),
            seen: 0,
            verdicts,
        }
    }

    /// Takes the bytes just read from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Head => {
                    // Empty lines before a request are allowed.
                    if self.buf.is_empty() {
                        let skip = data
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                        // Usually the whole head is in one read: no copy.
                        if let Some(end) = find_head_end(data) {
                            self.state = self.judge_next(&data[..end]);
                            data = &data[end..];
                            continue;
                        }
                    }
                    let searched_from = self.buf.len().saturating_sub(3);
                    self.buf.extend_from_slice(data);
                    let Some(end) =
                        find_head_end(&self.buf[searched_from..]).map(|e| e + searched_from)
                    else {
                        if self.buf.len() > MAX_HEAD {
                            self.state = State::Off;
                        }
                        return;
                    };
                    let rest_start = data.len() - (self.buf.len() - end);
                    let head = std::mem::take(&mut self.buf);
                    self.state = self.judge_next(&head[..end]);
                    self.buf = head;
                    self.buf.clear();
                    data = &data[rest_start..];
                }
                State::Body(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
                State::ChunkSize => {
                    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                        self.buf.extend_from_slice(data);
                        if self.buf.len() > 1024 {
                            self.state = State::Off;
                        }
                        return;
                    };
                    self.buf.extend_from_slice(&data[..nl]);
                    data = &data[nl + 1..];
                    let line = String::from_utf8_lossy(&self.buf).into_owned();
                    self.buf.clear();
                    let size = line.split(';').next().unwrap_or("").trim();
                    self.state = match u64::from_str_radix(size, 16) {
                        Ok(0) => State::Trailers(true),
                        Ok(n) => State::ChunkData(n),
                        Err(_) => State::Off,
                    };
                }
                State::ChunkData(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::ChunkEnd(2);
                    }
                }
                State::ChunkEnd(left) => {
                    let n = usize::from(*left).min(data.len());
                    data = &data[n..];
                    *left -= n as u8;
                    if *left == 0 {
                        self.state = State::ChunkSize;
                    }
                }
                State::Trailers(empty) => {
                    let b = data[0];
                    data = &data[1..];
                    match b {
                        b'\n' if *empty => self.state = State::Head,
                        b'\n' => *empty = true,
                        b'\r' => {}
                        _ => *empty = false,
                    }
                }
            }
        }
    }

    /// Numbers the request whose head this is, flags it when its framing is
    /// ambiguous, and says what follows it.
    fn judge_next(&mut self, head: &[u8]) -> State {
        let index = self.seen;
        self.seen += 1;
        let (state, ambiguous) = judge(head);
        if ambiguous {
            self.verdicts.first_bad.fetch_min(index, SeqCst);
        }
        state
    }
}

/// What follows a request head, and whether its framing is ambiguous.
fn judge(head: &[u8]) -> (State, bool) {
    if head.starts_with(b"PRI * HTTP/2.0") {
        return (State::Off, false);
    }
    let mut headers = [httparse::EMPTY_HEADER; crate::MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        // hyper will refuse it, or it is something else: stop following.
        return (State::Off, false);
    }
    let mut lengths = 0;
    let mut length: Option<&[u8]> = None;
    let mut coding: Option<&[u8]> = None;
    let mut upgrade = request.method == Some("CONNECT");
    for h in request.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coding = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    let ambiguous = (lengths > 0 && coding.is_some())
        || lengths > 1
        || length.is_some_and(|v| v.contains(&b','));
    if ambiguous || upgrade {
        return (State::Off, ambiguous);
    }
    if let Some(last) = coding {
        let text = String::from_utf8_lossy(last);
        let chunked = text
            .rsplit(',')
            .next()
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        return (
            if chunked {
                State::ChunkSize
            } else {
                State::Off
            },
            false,
        );
    }
    let state = match length {
        Some(v) => match std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(0) => State::Head,
            Some(n) => State::Body(n),
            None => State::Off,
        },
        None => State::Head,
    };
    (state, false)
}

/// The end of the first `\r\n\r\n` (or bare `\n\n`) in `bytes`.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(nl) = bytes[from..].iter().position(|b| *b == b'\n') {
        let i = from + nl;
        if bytes[i + 1..].first() == Some(&b'\n') {
            return Some(i + 2);
        }
        if bytes[i + 1..].starts_with(b"\r\n") {
            return Some(i + 3);
        }
        from = i + 1;
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the first bad index.
    fn first_bad(input: &[u8], step: usize) -> u64 {
        let verdicts = Verdicts::new();
        let mut s = Scanner::new(Arc::clone(&verdicts));
        for piece in input.chunks(step) {
            s.feed(piece);
        }
        verdicts.first_bad.load(SeqCst)
    }

    #[test]
    fn clean_keep_alive_traffic_is_never_flagged() {
        let traffic = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 26\r\n\r\nTransfer-Encoding: chunked\
            POST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n1d\r\nContent-Length: 5\r\n\r\nabcdefgh\r\n0\r\nX-Trailer: 1\r\n\r\n\
            GET /z HTTP/1.1\r\nHost: a\r\n\r\n";
        for step in [1, 3, 7, 64, traffic.len()] {
            assert_eq!(first_bad(traffic, step), u64::MAX, "step {step}");
        }
    }

    #[test]
    fn ambiguous_framing_is_flagged_at_its_index() {
        let traffic = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for step in [1, 5, traffic.len()] {
            assert_eq!(first_bad(traffic, step), 1, "step {step}");
        }
        let dup = b"POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc";
        assert_eq!(first_bad(dup, 4), 0);
        let list = b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc";
        assert_eq!(first_bad(list, 4), 0);
    }

    #[test]
    fn http2_and_upgrades_are_left_alone() {
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00Content-Length: 1\r\nTransfer-Encoding: x\r\n\r\n";
        assert_eq!(first_bad(h2, 3), u64::MAX);
        let ws = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\
            POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(first_bad(ws, 3), u64::MAX);
    }
}
