//! The HTTP/1.1 fast path.
//!
//! Most client connections speak plain HTTP/1.1: a head, perhaps a small
//! body, an answer, and again. For those the whole exchange runs in the
//! client connection's task, over bytes: the request head is parsed in
//! place, written straight into the bytes the endpoint gets (hop-by-hop
//! headers out, `X-Forwarded-*` in), sent on a pooled connection, and the
//! response head is rewritten the same way while its body is passed through
//! as framed (length, chunks, or until the endpoint closes). There are no
//! header maps, no task per upstream connection and no channels between
//! tasks, which is what made the general path slower than HAProxy.
//!
//! Whatever this path does not take on is handed over, at a request boundary
//! and with the bytes already read, to the general path in `http.rs`
//! (hyper): HTTP/1.0, h2c, `Upgrade`, `Expect`, `Transfer-Encoding` on a
//! request, bodies larger than [`MAX_BUFFERED_BODY`], absolute-form
//! targets, and anything malformed, which hyper then answers with the
//! fitting error. Both paths choose endpoints, retry and count the same way.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::StatusCode;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout;

use crate::backend::{ActiveGuard, BackendState, Hints, Replica};
use crate::config::Policy;
use crate::http::{HttpFrontend, MAX_CONNECT_TRIES};
use crate::io::Prefixed;
use crate::pool::{self, RawConn};
use crate::MAX_HEADERS;

/// How much is read from a socket at a time.
const READ_SIZE: usize = 16 * 1024;

/// Request bodies up to this size are read whole and sent with their head;
/// larger ones take the general path, which streams them.
const MAX_BUFFERED_BODY: usize = 64 * 1024;

/// 1xx answers passed on before a final one; an endpoint that sends more
/// is cut off.
const MAX_INTERIM: usize = 8;

/// The answer when no endpoint could be connected to.
const UNREACHABLE: &str = "no endpoint could be reached";

/// Largest response head accepted from an endpoint.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Serves one client connection, first on the fast path, then, if it asks
/// for more, on the general one. A TLS listener's connections are
/// handshaken first, within the client header timeout.
pub(crate) async fn client(
    stream: TcpStream,
    peer: SocketAddr,
    frontend: Arc<HttpFrontend>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    _permit: Option<OwnedSemaphorePermit>,
) {
    // Only a latency hint: a socket that refuses it still works.
    let _ = stream.set_nodelay(true);
    frontend.counters.opened();
    match frontend.tls.clone() {
        Some(acceptor) => {
            match timeout(frontend.timeouts.client_header, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve(tls, peer, &frontend, builder).await,
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake: timed out"),
            }
        }
        None => serve(stream, peer, &frontend, builder).await,
    }
    frontend.counters.closed();
}

async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    frontend: &Arc<HttpFrontend>,
    builder: Arc<auto::Builder<TokioExecutor>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut client = Client {
        stream,
        buf: BytesMut::with_capacity(READ_SIZE),
        peer,
        peer_ip: peer.ip().to_string(),
        trusted: frontend.trusts(peer.ip()),
        frontend,
    };
    // Redirects to https are answered by the general path.
    let next = match frontend.redirect_https {
        Some(_) => Next::HandOver,
        None => client.run().await,
    };
    if let Next::HandOver = next {
        let Client { stream, buf, .. } = client;
        let stream = Prefixed::new(buf.freeze(), stream);
        crate::http::connection(stream, peer, Arc::clone(frontend), builder).await;
    }
}

/// How a client connection goes on after the fast path.
enum Next {
    Close,
    /// To the general path, with what was read and not yet used.
    HandOver,
}

struct Client<'a, S> {
    stream: S,
    /// Bytes read from the client and not yet used.
    buf: BytesMut,
    peer: SocketAddr,
    /// The client's address as `X-Forwarded-For` gets it, made once.
    peer_ip: String,
    /// Whether the client is a trusted proxy, whose X-Forwarded-Host,
    /// -Port and -Proto are kept.
    trusted: bool,
    frontend: &'a HttpFrontend,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<'_, S> {
    async fn run(&mut self) -> Next {
        loop {
            let request = match self.read_request().await {
                Read::Ready(r) => r,
                Read::Closed => return Next::Close,
                Read::Other => return Next::HandOver,
            };
            self.frontend.counters.request();
            match self.proxy(request).await {
                Ok(true) => {}
                Ok(false) => return Next::Close,
                Err(e) => {
                    tracing::debug!(peer = %self.peer, "client connection: {e}");
                    return Next::Close;
                }
            }
        }
    }

    /// Reads until the buffer holds a whole request: its head within the
    /// client header timeout once it has begun, its body within the idle
    /// timeout once the head is in.
    async fn read_request(&mut self) -> Read {
        let timeouts = &self.frontend.timeouts;
        let mut head_started: Option<Instant> = None;
        let mut body_started: Option<Instant> = None;
        loop {
            let wait = if self.buf.is_empty() {
                timeouts.idle
            } else {
                match parse_request(&self.buf, self.frontend, &self.peer_ip, self.trusted) {
                    Parsed::Ready(r) => return Read::Ready(r),
                    Parsed::Other => return Read::Other,
                    Parsed::NeedBody => {
                        let started = *body_started.get_or_insert_with(Instant::now);
                        timeouts.idle.saturating_sub(started.elapsed())
                    }
                    Parsed::Partial => {
                        let started = *head_started.get_or_insert_with(Instant::now);
                        timeouts.client_header.saturating_sub(started.elapsed())
                    }
                }
            };
            self.buf.reserve(READ_SIZE);
            match timeout(wait, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                // Closed, reset, or too slow: nothing to answer on.
                _ => return Read::Closed,
            }
        }
    }

    /// Sends a request to an endpoint and relays its answer. Returns
    /// whether the client connection stays open.
    async fn proxy(&mut self, request: Request) -> io::Result<bool> {
        self.buf.advance(request.consumed);
        let keep_alive = !request.close;
        let Some(backend) = &request.backend else {
            self.answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "no backend for this request",
                request.close,
            )
            .await?;
            return Ok(keep_alive);
        };
        let mut tried: Vec<Arc<Replica>> = Vec::new();
        let mut replayed = false;
        let (status, why) = loop {
            let hints = Hints {
                client: Some(self.peer.ip()),
                uri: request.uri_key.as_deref(),
                sticky: request.sticky.as_deref(),
                exclude: &tried,
            };
            let Some(replica) = backend.pick(&hints) else {
                backend.unavailable.fetch_add(1, Relaxed);
                break if tried.is_empty() {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no endpoint available".into(),
                    )
                } else {
                    (StatusCode::BAD_GATEWAY, UNREACHABLE.into())
                };
            };
            let guard = replica.begin(false);
            let (mut upstream, reused) = match replica.raw.take() {
                Some(conn) => (conn, true),
                None => match pool::connect_tcp(replica.addr, self.frontend.timeouts.connect).await
                {
                    Ok(stream) => (RawConn::new(stream), false),
                    Err(e) => {
                        tracing::debug!(backend = %backend.config.name, endpoint = %replica.id, "{e}");
                        replica.failed(backend);
                        tried.push(replica);
                        if tried.len() >= MAX_CONNECT_TRIES {
                            break (StatusCode::BAD_GATEWAY, UNREACHABLE.into());
                        }
                        continue;
                    }
                },
            };
            let sent = Instant::now();
            let exchanged = timeout(
                self.frontend.timeouts.server,
                exchange(&mut upstream, &request.bytes),
            )
            .await;
            let failure: (StatusCode, String) = match exchanged {
                Ok(Ok(())) => {
                    replica.observe_latency(sent.elapsed());
                    replica.succeeded();
                    return self
                        .relay(upstream, guard, backend, &request)
                        .await
                        .map(|open| open && keep_alive);
                }
                Ok(Err(Failure::Unanswered(_))) if reused => {
                    // The endpoint had closed this idle connection before
                    // the request reached it: send it again on another one.
                    // Only when repeating it is harmless, since nothing
                    // tells "closed before" from "closed while handling".
                    if request.idempotent {
                        continue;
                    }
                    // Not the endpoint's fault: it may just have reached
                    // its keep-alive timeout.
                    break (
                        StatusCode::BAD_GATEWAY,
                        "the endpoint closed the connection".into(),
                    );
                }
                Ok(Err(Failure::Unsent(_))) if reused => continue,
                Ok(Err(e)) => (StatusCode::BAD_GATEWAY, e.to_string()),
                Err(_) => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "the endpoint did not answer in time".into(),
                ),
            };
            tracing::debug!(backend = %backend.config.name, endpoint = %replica.id, "{}", failure.1);
            replica.failed(backend);
            if request.idempotent && !replayed {
                // Idempotent and held whole: safe to send once more,
                // elsewhere.
                replayed = true;
                tried.push(replica);
                continue;
            }
            break failure;
        };
        self.answer(status, &why, request.close).await?;
        Ok(keep_alive)
    }

    /// Relays the response whose head is in `upstream`'s buffer, then pools
    /// the connection when it can serve again. Returns whether the client
    /// connection stays open.
    async fn relay(
        &mut self,
        mut upstream: RawConn,
        guard: ActiveGuard,
        backend: &BackendState,
        request: &Request,
    ) -> io::Result<bool> {
        let idle = self.frontend.timeouts.idle;
        let set_cookie = backend.config.sticky_cookie.as_deref().and_then(|name| {
            let key = &guard.replica().key;
            (request.sticky.as_deref() != Some(key.as_str())).then(|| format!("{name}={key}"))
        });
        let mut interim = 0;
        let head = loop {
            match rewrite_response(&upstream.buf, request, set_cookie.as_deref()) {
                Ok(Some(head)) if head.interim && interim < MAX_INTERIM => {
                    interim += 1;
                    // 1xx: passed on as it is; the final answer follows.
                    write_within(&mut self.stream, &upstream.buf[..head.len], idle).await?;
                    upstream.buf.advance(head.len);
                    let read = timeout(self.frontend.timeouts.server, read_head(&mut upstream));
                    if !matches!(read.await, Ok(Ok(()))) {
                        guard.replica().errored();
                        return Ok(false);
                    }
                }
                Ok(Some(head)) if head.interim => {
                    tracing::debug!(endpoint = %guard.replica().id, "too many 1xx answers");
                    guard.replica().errored();
                    return Ok(false);
                }
                Ok(Some(head)) => break head,
                Ok(None) | Err(_) => {
                    // The head was complete when `exchange` returned, so
                    // this is an answer no proxy should relay.
                    guard.replica().failed(backend);
                    self.answer(
                        StatusCode::BAD_GATEWAY,
                        "malformed response from the endpoint",
                        request.close,
                    )
                    .await?;
                    return Ok(!request.close);
                }
            }
        };
        upstream.buf.advance(head.len);
        let mut out = head.bytes;
        let mut body = head.body;
        let Ok(n) = body.take(&upstream.buf) else {
            guard.replica().errored();
            return Ok(false);
        };
        out.extend_from_slice(&upstream.buf[..n]);
        upstream.buf.advance(n);
        write_within(&mut self.stream, &out, idle).await?;
        while !body.is_done() {
            upstream.buf.clear();
            upstream.buf.reserve(READ_SIZE);
            let read = timeout(idle, upstream.stream.read_buf(&mut upstream.buf)).await;
            match read {
                Ok(Ok(0)) if matches!(body, Framing::UntilClose) => break,
                Ok(Ok(n)) if n > 0 => {}
                _ => {
                    // Cut short: the client can only learn it by a close.
                    tracing::debug!(endpoint = %guard.replica().id, "response body cut short");
                    guard.replica().errored();
                    return Ok(false);
                }
            }
            let Ok(n) = body.take(&upstream.buf) else {
                guard.replica().errored();
                return Ok(false);
            };
            write_within(&mut self.stream, &upstream.buf[..n], idle).await?;
            upstream.buf.advance(n);
        }
        let until_close = matches!(body, Framing::UntilClose);
        // Bytes past the response's end are an endpoint out of step.
        if head.reusable
            && !until_close
            && upstream.buf.is_empty()
            && !guard.replica().is_draining()
        {
            upstream.idle();
            guard.replica().raw.put(upstream);
        }
        Ok(!head.close)
    }

    /// Answers with a short plain-text error made here.
    async fn answer(&mut self, status: StatusCode, why: &str, close: bool) -> io::Result<()> {
        let text = crate::http::error_text(status, why);
        let mut out = BytesMut::with_capacity(160 + text.len());
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(status.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.put_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
        out.put_slice(text.len().to_string().as_bytes());
        if close {
            out.put_slice(b"\r\nconnection: close");
        }
        out.put_slice(b"\r\n\r\n");
        out.put_slice(text.as_bytes());
        write_within(&mut self.stream, &out, self.frontend.timeouts.idle).await
    }
}

async fn write_within<S: AsyncWrite + Unpin>(
    stream: &mut S,
    data: &[u8],
    limit: Duration,
) -> io::Result<()> {
    // A TLS stream takes bytes into its buffer: the flush sends them (on a
    // plain socket it does nothing).
    let write = async {
        stream.write_all(data).await?;
        stream.flush().await
    };
    match timeout(limit, write).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client not reading",
        )),
    }
}

/// What went wrong talking to an endpoint.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The request could not be written.
    #[error("sending to the endpoint: {0}")]
    Unsent(io::Error),
    /// The connection closed or broke before any byte of an answer.
    #[error("the endpoint closed the connection without answering ({0})")]
    Unanswered(String),
    #[error("the endpoint's response: {0}")]
    Bad(String),
}

/// Sends a request and reads until its response head is in the buffer.
async fn exchange(upstream: &mut RawConn, request: &[u8]) -> Result<(), Failure> {
    upstream
        .stream
        .write_all(request)
        .await
        .map_err(Failure::Unsent)?;
    read_head(upstream).await
}

/// Reads until the buffer holds a whole response head.
async fn read_head(upstream: &mut RawConn) -> Result<(), Failure> {
    loop {
        if !upstream.buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::Response::new(&mut headers).parse(&upstream.buf) {
                Ok(httparse::Status::Complete(_)) => return Ok(()),
                Ok(httparse::Status::Partial) if upstream.buf.len() <= MAX_RESPONSE_HEAD => {}
                Ok(httparse::Status::Partial) => return Err(Failure::Bad("head too large".into())),
                Err(e) => return Err(Failure::Bad(e.to_string())),
            }
        }
        let empty = upstream.buf.is_empty();
        upstream.buf.reserve(READ_SIZE);
        match upstream.stream.read_buf(&mut upstream.buf).await {
            Ok(n) if n > 0 => {}
            Ok(_) if empty => return Err(Failure::Unanswered("closed".into())),
            Err(e) if empty => return Err(Failure::Unanswered(e.to_string())),
            Ok(_) => return Err(Failure::Bad("closed within the head".into())),
            Err(e) => return Err(Failure::Bad(e.to_string())),
        }
    }
}

/// The outcome of reading a client's request.
enum Read {
    Ready(Request),
    Closed,
    Other,
}

/// A request ready to go to an endpoint.
struct Request {
    /// Bytes of the client buffer it took (head and body).
    consumed: usize,
    /// What the endpoint gets: the rewritten head and the body.
    bytes: Bytes,
    backend: Option<Arc<BackendState>>,
    /// Safe to send twice (RFC 9110 §9.2.2); its body is held whole, so
    /// it can be.
    idempotent: bool,
    /// A HEAD request, whose response has no body whatever it says.
    head: bool,
    /// The client asked to close after the response.
    close: bool,
    sticky: Option<String>,
    uri_key: Option<String>,
}

enum Parsed {
    Ready(Request),
    /// The head is not complete yet.
    Partial,
    /// The head is complete, the body not yet.
    NeedBody,
    /// Not for the fast path.
    Other,
}

/// Whether `name` is `lower` (given in lower case), ignoring case.
fn is(name: &str, lower: &str) -> bool {
    name.len() == lower.len() && name.eq_ignore_ascii_case(lower)
}

/// Headers that concern one connection only (RFC 9110 §7.6.1), apart from
/// `Transfer-Encoding`, which the fast path keeps with the bytes it frames.
fn is_hop_by_hop(name: &str) -> bool {
    match name.len() {
        2 => is(name, "te"),
        7 => is(name, "trailer") || is(name, "upgrade"),
        10 => is(name, "connection") || is(name, "keep-alive"),
        16 => is(name, "proxy-connection"),
        _ => false,
    }
}

/// Whether a Connection token names a header that frames the message (or
/// routes it): those must never be dropped as hop-by-hop.
fn is_framing(token: &str) -> bool {
    ["content-length", "transfer-encoding", "host"]
        .iter()
        .any(|h| token.eq_ignore_ascii_case(h))
}

/// The comma-separated tokens of a header value.
fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(value)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Parses a request at the start of `buf` and, when it is whole and fit for
/// the fast path, routes it and makes the bytes the endpoint gets.
fn parse_request(buf: &[u8], frontend: &HttpFrontend, peer_ip: &str, trusted: bool) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= frontend.max_header_bytes => n,
        Ok(httparse::Status::Partial) if buf.len() <= frontend.max_header_bytes => {
            return Parsed::Partial
        }
        // Too large, malformed, too many headers, another version (h2c's
        // preface among them): the general path answers.
        _ => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Parsed::Other;
    };
    if !(target.starts_with('/') || target == "*") || method == "CONNECT" {
        return Parsed::Other;
    }
    let mut host: Option<&str> = None;
    let mut length: Option<usize> = None;
    let mut close = false;
    let mut named: Vec<&str> = Vec::new();
    for h in parsed.headers.iter() {
        let name = h.name;
        if is(name, "host") {
            // Two Host headers: the general path answers 400.
            if host.is_some() {
                return Parsed::Other;
            }
            let Ok(value) = std::str::from_utf8(h.value) else {
                return Parsed::Other;
            };
            host = Some(value);
        } else if is(name, "content-length") {
            // One plain decimal length; anything else may be read
            // differently by the endpoint (request smuggling).
            if length.is_some()
                || h.value.is_empty()
                || h.value.len() > 18
                || !h.value.iter().all(u8::is_ascii_digit)
            {
                return Parsed::Other;
            }
            let digits = std::str::from_utf8(h.value).unwrap_or("0");
            length = Some(digits.parse().unwrap_or(usize::MAX));
        } else if is(name, "transfer-encoding") || is(name, "upgrade") || is(name, "expect") {
            return Parsed::Other;
        } else if is(name, "connection") {
            if std::str::from_utf8(h.value).is_err() {
                return Parsed::Other;
            }
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("upgrade") || is_framing(token) {
                    // Naming a framing header as hop-by-hop would have it
                    // dropped while its body is sent: the general path
                    // frames the body itself.
                    return Parsed::Other;
                } else if !token.eq_ignore_ascii_case("keep-alive") {
                    named.push(token);
                }
            }
        }
    }
    // An HTTP/1.1 request must name its host (RFC 9112 §3.2): the general
    // path answers 400.
    if host.is_none() {
        return Parsed::Other;
    }
    let body_len = length.unwrap_or(0);
    if body_len > MAX_BUFFERED_BODY {
        return Parsed::Other;
    }
    if buf.len() < head_len + body_len {
        return Parsed::NeedBody;
    }

    let path = target.split('?').next().unwrap_or(target);
    let backend = frontend.route(host, path).cloned();
    let idempotent = matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    );
    let mut request = Request {
        consumed: head_len + body_len,
        bytes: Bytes::new(),
        backend: None,
        idempotent,
        head: method == "HEAD",
        close,
        sticky: None,
        uri_key: None,
    };
    let Some(backend) = backend else {
        return Parsed::Ready(request);
    };
    let config = &backend.config;
    if config.policy == Policy::UriHash {
        request.uri_key = Some(target.to_string());
    }

    let mut out = BytesMut::with_capacity(head_len + body_len + 128);
    out.put_slice(method.as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    // The client's X-Forwarded-For lines, joined in order; the peer is
    // added after them.
    let mut forwarded_for = BytesMut::new();
    let mut proto = false;
    let mut forwarded_host = false;
    let mut forwarded_port = false;
    for h in parsed.headers.iter() {
        let name = h.name;
        if is_hop_by_hop(name) || named.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            continue;
        }
        match name.len() {
            6 if is(name, "cookie") => {
                if let (Some(cookie), None) = (&config.sticky_cookie, &request.sticky) {
                    let value = std::str::from_utf8(h.value).unwrap_or("");
                    request.sticky = crate::http::cookie_in(value, cookie).map(str::to_string);
                }
            }
            15 if is(name, "x-forwarded-for") => {
                if !h.value.is_empty() {
                    forwarded_for.put_slice(h.value);
                    forwarded_for.put_slice(b", ");
                }
                continue;
            }
            // A client's word on these counts only from a trusted proxy.
            17 if is(name, "x-forwarded-proto") => {
                if !trusted || proto {
                    continue;
                }
                proto = true;
            }
            16 if is(name, "x-forwarded-host") => {
                if !trusted || forwarded_host {
                    continue;
                }
                forwarded_host = true;
            }
            16 if is(name, "x-forwarded-port") => {
                if !trusted || forwarded_port {
                    continue;
                }
                forwarded_port = true;
            }
            _ => {}
        }
        put_header(&mut out, name.as_bytes(), h.value);
    }
    forwarded_for.put_slice(peer_ip.as_bytes());
    put_header(&mut out, b"x-forwarded-for", &forwarded_for);
    if !proto {
        put_header(&mut out, b"x-forwarded-proto", frontend.scheme.as_bytes());
    }
    if let (false, Some(host)) = (forwarded_host, host) {
        put_header(&mut out, b"x-forwarded-host", host.as_bytes());
    }
    if !forwarded_port {
        put_header(
            &mut out,
            b"x-forwarded-port",
            frontend.port_value.as_bytes(),
        );
    }
    out.put_slice(b"\r\n");
    out.put_slice(&buf[head_len..head_len + body_len]);
    request.bytes = out.freeze();
    request.backend = Some(backend);
    Parsed::Ready(request)
}

/// A response head rewritten for the client.
#[derive(Debug)]
struct ResponseHead {
    /// Length of the endpoint's head in its buffer.
    len: usize,
    /// A 1xx answer, passed on as it is before the final one.
    interim: bool,
    /// What the client gets.
    bytes: BytesMut,
    body: Framing,
    /// The endpoint connection can serve another request afterwards.
    reusable: bool,
    /// The client connection closes after this response.
    close: bool,
}

/// Parses the response head at the start of `buf` and rewrites it for the
/// client. `Ok(None)` while it is incomplete.
fn rewrite_response(
    buf: &[u8],
    request: &Request,
    set_cookie: Option<&str>,
) -> Result<Option<ResponseHead>, String> {
    let head_request = request.head;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let (Some(version), Some(status)) = (parsed.version, parsed.code) else {
        return Err("no status".into());
    };
    if status == 101 {
        return Err("switched protocols unasked".into());
    }
    if (100..200).contains(&status) {
        return Ok(Some(ResponseHead {
            len,
            interim: true,
            bytes: BytesMut::new(),
            body: Framing::Length(0),
            reusable: false,
            close: false,
        }));
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut encoded = false;
    let mut closing = false;
    let mut keep_alive = false;
    let mut named: Vec<&str> = Vec::new();
    for h in parsed.headers.iter() {
        let name = h.name;
        if is(name, "content-length") {
            let value = std::str::from_utf8(h.value).unwrap_or("");
            let n: u64 = match value.trim().parse() {
                Ok(n) if value.trim().bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("bad Content-Length {value:?}")),
            };
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Lengths".into());
            }
            length = Some(n);
        } else if is(name, "transfer-encoding") {
            encoded = true;
            chunked = tokens(h.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        } else if is(name, "connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case("close") {
                    closing = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                } else if !is_framing(token) {
                    // The framing headers stay whatever Connection says:
                    // the body is passed on as they frame it.
                    named.push(token);
                }
            }
        }
    }
    // Both framings at once is how responses get split (RFC 9112 §6.3):
    // relayed by Transfer-Encoding, but not trusted again.
    let reusable = !closing && (version == 1 || keep_alive) && !(encoded && length.is_some());
    let body = if head_request || status == 204 || status == 304 {
        Framing::Length(0)
    } else if encoded {
        if chunked {
            Framing::Chunked(Chunked::default())
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let close = request.close || matches!(body, Framing::UntilClose);

    let mut out = BytesMut::with_capacity(len + 64);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.to_string().as_bytes());
    out.put_u8(b' ');
    out.put_slice(parsed.reason.unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    let mut length_sent = false;
    for h in parsed.headers.iter() {
        let name = h.name;
        if is_hop_by_hop(name) || named.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            continue;
        }
        if is(name, "content-length") {
            // Once, and never beside Transfer-Encoding.
            if encoded || length_sent {
                continue;
            }
            length_sent = true;
        }
        put_header(&mut out, name.as_bytes(), h.value);
    }
    if let Some(cookie) = set_cookie {
        out.put_slice(b"set-cookie: ");
        out.put_slice(cookie.as_bytes());
        out.put_slice(b"; Path=/\r\n");
    }
    if close {
        out.put_slice(b"connection: close\r\n");
    }
    out.put_slice(b"\r\n");
    Ok(Some(ResponseHead {
        len,
        interim: false,
        bytes: out,
        body,
        reusable,
        close,
    }))
}

/// How a response body ends, and how much of it is still to come.
#[derive(Debug)]
enum Framing {
    /// This many bytes.
    Length(u64),
    /// Chunked transfer coding, passed through as it is.
    Chunked(Chunked),
    /// When the endpoint closes the connection.
    UntilClose,
}

impl Framing {
    /// How many bytes at the start of `data` belong to the body; after a
    /// call, `is_done` tells whether the body has ended.
    fn take(&mut self, data: &[u8]) -> Result<usize, ()> {
        match self {
            Framing::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                *left -= n as u64;
                Ok(n)
            }
            Framing::Chunked(chunks) => chunks.take(data),
            Framing::UntilClose => Ok(data.len()),
        }
    }

    fn is_done(&self) -> bool {
        match self {
            Framing::Length(left) => *left == 0,
            Framing::Chunked(chunks) => chunks.state == ChunkState::Done,
            Framing::UntilClose => false,
        }
    }
}

/// Follows a chunked body (RFC 9112 §7.1) byte by byte to find its end,
/// strictly: CRLF line ends, hexadecimal sizes that fit in 64 bits.
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    /// The size being read, then what is left of the chunk's data.
    size: u64,
    digits: u8,
}

#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

impl Chunked {
    fn take(&mut self, data: &[u8]) -> Result<usize, ()> {
        use ChunkState::*;
        let mut i = 0;
        while i < data.len() && self.state != Done {
            if self.state == Data {
                let n = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - i);
                self.size -= n as u64;
                i += n;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match self.state {
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits >= 16 {
                            return Err(());
                        }
                        self.digits += 1;
                        let digit = char::from(b).to_digit(16).unwrap_or(0);
                        self.size = self.size * 16 + u64::from(digit);
                        Size
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => Extension,
                    b'\r' if self.digits > 0 => SizeLf,
                    _ => return Err(()),
                },
                Extension => match b {
                    b'\r' => SizeLf,
                    b'\n' => return Err(()),
                    _ => Extension,
                },
                SizeLf if b == b'\n' => {
                    self.digits = 0;
                    if self.size == 0 {
                        TrailerStart
                    } else {
                        Data
                    }
                }
                DataCr if b == b'\r' => DataLf,
                DataLf if b == b'\n' => Size,
                TrailerStart if b == b'\r' => FinalLf,
                TrailerStart | Trailer if b != b'\r' && b != b'\n' => Trailer,
                Trailer if b == b'\r' => TrailerLf,
                TrailerLf if b == b'\n' => TrailerStart,
                FinalLf if b == b'\n' => Done,
                _ => return Err(()),
            };
        }
        Ok(i)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::{Backend, Mode, Timeouts};
    use crate::http::CompiledRoute;
    use crate::FrontendCounters;

    fn frontend(sticky: Option<&str>) -> HttpFrontend {
        let backend = Arc::new(BackendState::new(Backend {
            sticky_cookie: sticky.map(str::to_string),
            ..Backend::new("web")
        }));
        let api = Arc::new(BackendState::new(Backend::new("api")));
        HttpFrontend {
            counters: Arc::new(FrontendCounters {
                name: "web".into(),
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                mode: Mode::Http,
                open: Default::default(),
                connections: Default::default(),
                requests: Default::default(),
            }),
            routes: vec![CompiledRoute {
                host: Some("api.*".into()),
                path: None,
                backend: api,
            }],
            default: Some(backend),
            timeouts: Timeouts::default(),
            port_value: http::HeaderValue::from(8080u16),
            max_header_bytes: 1024,
            scheme: "http",
            trusted_proxies: Vec::new(),
            tls: None,
            redirect_https: None,
        }
    }

    fn ready(raw: &str, f: &HttpFrontend) -> Request {
        match parse_request(raw.as_bytes(), f, "10.0.0.9", false) {
            Parsed::Ready(r) => r,
            Parsed::Partial => panic!("partial: {raw:?}"),
            Parsed::NeedBody => panic!("needs body: {raw:?}"),
            Parsed::Other => panic!("handed over: {raw:?}"),
        }
    }

    fn text(r: &Request) -> &str {
        std::str::from_utf8(&r.bytes).unwrap()
    }

    #[test]
    fn a_request_is_rewritten_for_the_endpoint() {
        let f = frontend(None);
        let raw = "GET /a?b=1 HTTP/1.1\r\nHost: example.test:8080\r\nConnection: keep-alive, X-Secret\r\n\
                   X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-Proto: https\r\n\
                   X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nAccept: */*\r\n\r\nGET /next";
        let r = ready(raw, &f);
        assert_eq!(r.consumed, raw.len() - "GET /next".len());
        assert!(r.idempotent && !r.head && !r.close);
        assert_eq!(r.backend.as_ref().unwrap().config.name, "web");
        assert_eq!(
            text(&r),
            "GET /a?b=1 HTTP/1.1\r\nHost: example.test:8080\r\n\
             Accept: */*\r\nx-forwarded-for: 1.2.3.4, 5.6.7.8, 10.0.0.9\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: example.test:8080\r\n\
             x-forwarded-port: 8080\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_headers_from_an_untrusted_client_are_replaced() {
        let f = frontend(None);
        let raw =
            "GET / HTTP/1.1\r\nhost: a\r\nx-forwarded-proto: https\r\nx-forwarded-host: evil\r\n\
                   x-forwarded-port: 443\r\nX-Forwarded-For: \r\n\r\n";
        let r = ready(raw, &f);
        assert_eq!(
            text(&r),
            "GET / HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 10.0.0.9\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: a\r\nx-forwarded-port: 8080\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_headers_from_a_trusted_proxy_are_kept() {
        let f = frontend(None);
        let raw =
            "POST /form HTTP/1.1\r\nhost: a\r\nx-forwarded-proto: https\r\nx-forwarded-host: b\r\n\
                   x-forwarded-port: 443\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
        let Parsed::Ready(r) = parse_request(raw.as_bytes(), &f, "10.0.0.9", true) else {
            panic!("not ready: {raw:?}");
        };
        assert!(!r.idempotent && r.close);
        assert_eq!(r.consumed, raw.len());
        assert_eq!(
            text(&r),
            "POST /form HTTP/1.1\r\nhost: a\r\nx-forwarded-proto: https\r\nx-forwarded-host: b\r\n\
             x-forwarded-port: 443\r\ncontent-length: 5\r\nx-forwarded-for: 10.0.0.9\r\n\r\nhello"
        );
    }

    #[test]
    fn requests_are_routed_and_sticky_cookies_read() {
        let f = frontend(Some("SRV"));
        let r = ready("GET / HTTP/1.1\r\nHost: api.example\r\n\r\n", &f);
        assert_eq!(r.backend.unwrap().config.name, "api");
        let r = ready(
            "HEAD / HTTP/1.1\r\nHost: www\r\nCookie: a=1; SRV=\"abc\"\r\n\r\n",
            &f,
        );
        assert_eq!(r.sticky.as_deref(), Some("abc"));
        assert!(r.head);
        let mut no_default = frontend(None);
        no_default.default = None;
        let r = ready("GET / HTTP/1.1\r\nHost: www\r\n\r\n", &no_default);
        assert!(r.backend.is_none());
    }

    #[test]
    fn incomplete_requests_wait_and_the_rest_is_handed_over() {
        let f = frontend(None);
        let parse = |raw: &str| parse_request(raw.as_bytes(), &f, "10.0.0.9", false);
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: a\r\n"),
            Parsed::Partial
        ));
        assert!(matches!(
            parse("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"),
            Parsed::NeedBody
        ));
        for other in [
            "GET / HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab",
            "POST / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\nab",
            "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nab",
            "POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "GET /\x01 HTTP/1.1\r\n\r\n",
            "CONNECT /x HTTP/1.1\r\n\r\n",
            // Framing or routing headers named as hop-by-hop.
            "POST / HTTP/1.1\r\nConnection: content-length\r\nContent-Length: 1\r\n\r\na",
            "GET / HTTP/1.1\r\nConnection: Transfer-Encoding\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, host\r\n\r\n",
            // No Host: the general path answers 400.
            "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
        ] {
            assert!(matches!(parse(other), Parsed::Other), "{other:?}");
        }
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: \xff\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nConnection: \xff, close\r\n\r\n",
        ] {
            assert!(
                matches!(parse_request(raw, &f, "10.0.0.9", false), Parsed::Other),
                "{raw:?}"
            );
        }
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(2000));
        assert!(
            matches!(parse(&big), Parsed::Other),
            "over max_header_bytes"
        );
        assert!(
            matches!(parse(&big[..1500]), Parsed::Other),
            "growing past it"
        );
    }

    fn request(head: bool, close: bool) -> Request {
        Request {
            consumed: 0,
            bytes: Bytes::new(),
            backend: None,
            idempotent: true,
            head,
            close,
            sticky: None,
            uri_key: None,
        }
    }

    fn response(raw: &str, head: bool, cookie: Option<&str>) -> ResponseHead {
        rewrite_response(raw.as_bytes(), &request(head, false), cookie)
            .unwrap()
            .expect("complete")
    }

    #[test]
    fn a_response_is_rewritten_for_the_client() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive, X-Hop\r\n\
                   X-Hop: 1\r\nKeep-Alive: timeout=5\r\nServer: t\r\n\r\nabc";
        let r = response(raw, false, Some("SRV=k1"));
        assert_eq!(r.len, raw.len() - 3);
        assert!(r.reusable && !r.close && !r.interim);
        assert!(matches!(r.body, Framing::Length(3)));
        assert_eq!(
            std::str::from_utf8(&r.bytes).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nServer: t\r\nset-cookie: SRV=k1; Path=/\r\n\r\n"
        );
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let chunked = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
            None,
        );
        assert!(matches!(chunked.body, Framing::Chunked(_)));
        assert_eq!(
            std::str::from_utf8(&chunked.bytes).unwrap(),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Content-Length never goes with Transfer-Encoding"
        );
        let until_close = response("HTTP/1.1 200 OK\r\n\r\n", false, None);
        assert!(matches!(until_close.body, Framing::UntilClose) && until_close.close);
        assert!(std::str::from_utf8(&until_close.bytes)
            .unwrap()
            .ends_with("connection: close\r\n\r\n"));
        let gzip_only = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            false,
            None,
        );
        assert!(matches!(gzip_only.body, Framing::UntilClose));
        for bodiless in [
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
        ] {
            let r = response(bodiless, false, None);
            assert!(r.body.is_done() && r.reusable, "{bodiless:?}");
        }
        let head = response("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true, None);
        assert!(head.body.is_done());
        let closing = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            false,
            None,
        );
        assert!(!closing.reusable && !closing.close);
        let asked = rewrite_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            &request(false, true),
            None,
        )
        .unwrap()
        .unwrap();
        assert!(asked.close && asked.reusable);
        assert!(std::str::from_utf8(&asked.bytes)
            .unwrap()
            .ends_with("connection: close\r\n\r\n"));
        let named = response(
            "HTTP/1.1 200 OK\r\nConnection: Content-Length, X-A\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n",
            false,
            None,
        );
        assert_eq!(
            std::str::from_utf8(&named.bytes).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
            "framing headers stay whatever Connection names"
        );
        let both = response(
            "HTTP/1.1 200 OK\r\nConnection: close, keep-alive\r\nContent-Length: 0\r\n\r\n",
            false,
            None,
        );
        assert!(!both.reusable, "close wins");
        let split = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            None,
        );
        assert!(matches!(split.body, Framing::Chunked(_)) && !split.reusable);
        let old = response("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false, None);
        assert!(!old.reusable);
        assert!(
            response(
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                false,
                None
            )
            .interim
        );
        assert!(
            rewrite_response(b"HTTP/1.1 200 OK\r\nContent", &request(false, false), None)
                .unwrap()
                .is_none()
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
        ] {
            assert!(
                rewrite_response(bad.as_bytes(), &request(false, false), None).is_err(),
                "{bad:?}"
            );
        }
    }

    fn chunked_end(parts: &[&str]) -> Result<Option<usize>, ()> {
        let mut c = Chunked::default();
        let mut total = 0;
        for p in parts {
            total += c.take(p.as_bytes())?;
            if c.state == ChunkState::Done {
                return Ok(Some(total));
            }
        }
        Ok(None)
    }

    #[test]
    fn chunked_bodies_are_followed_to_their_end() {
        let body =
            "4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(chunked_end(&[body]), Ok(Some(body.len())));
        assert_eq!(
            chunked_end(&[&format!("{body}GET /")]),
            Ok(Some(body.len()))
        );
        // Split anywhere, the end is found at the same place.
        for at in 0..body.len() {
            let (a, b) = body.split_at(at);
            assert_eq!(chunked_end(&[a, b]), Ok(Some(body.len())), "split at {at}");
        }
        assert_eq!(chunked_end(&["5\r\nab"]), Ok(None));
        for bad in [
            "x\r\n",
            "\r\n",
            "5\nhello\r\n",
            "5\r\nhelloXX",
            "11111111111111111\r\n",
            "0\r\n\n",
            "0\r\nX\n",
        ] {
            assert_eq!(chunked_end(&[bad]), Err(()), "{bad:?}");
        }
    }
}
