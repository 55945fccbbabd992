//! The L7 frontend: HTTP/1.1 and h2c from clients, HTTP/1.1 with pooled
//! keep-alive connections to endpoints, `Upgrade` tunnels, retries.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::backend::{ActiveGuard, BackendState, Hints, Replica};
use crate::config::{Cidr, Timeouts};
use crate::framing::{Scanner, Verdicts};
use crate::io::{Activity, Tracked};
use crate::pool::{self, Sender, UpstreamBody};
use crate::FrontendCounters;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Formats into a `BytesMut` without an intermediate `String`.
struct IoWriter<'a>(&'a mut bytes::BytesMut);

impl std::fmt::Write for IoWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Endpoints tried for one request before giving up on connecting.
pub(crate) const MAX_CONNECT_TRIES: usize = 3;

/// A routing rule, ready to match.
pub(crate) struct CompiledRoute {
    pub host: Option<String>,
    pub path: Option<String>,
    pub backend: Arc<BackendState>,
}

/// Everything an HTTP frontend needs to serve a request.
pub(crate) struct HttpFrontend {
    pub counters: Arc<FrontendCounters>,
    pub routes: Vec<CompiledRoute>,
    pub default: Option<Arc<BackendState>>,
    pub timeouts: Timeouts,
    /// `port` as an `X-Forwarded-Port` value, made once.
    pub port_value: HeaderValue,
    /// Largest request head accepted; hyper's own limit for HTTP/1.1 cannot
    /// go below 8 KiB, so smaller ones are enforced here.
    pub max_header_bytes: usize,
    /// `X-Forwarded-Proto` of this listener's requests.
    pub scheme: &'static str,
    /// Peers whose `X-Forwarded-Host`, `-Port` and `-Proto` are kept.
    pub trusted_proxies: Vec<Cidr>,
    /// TLS, on a TLS listener.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Every request is redirected to https on this port.
    pub redirect_https: Option<u16>,
}

impl HttpFrontend {
    /// Whether a peer is a trusted proxy.
    pub(crate) fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    pub(crate) fn route(&self, host: Option<&str>, path: &str) -> Option<&Arc<BackendState>> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .find(|r| {
                let host_ok = match (&r.host, host) {
                    (None, _) => true,
                    (Some(p), Some(h)) => glob_match(p.as_bytes(), h.as_bytes()),
                    (Some(_), None) => false,
                };
                host_ok
                    && r.path
                        .as_ref()
                        .is_none_or(|p| glob_match(p.as_bytes(), path.as_bytes()))
            })
            .map(|r| &r.backend)
            .or(self.default.as_ref())
    }
}

/// The host without its port (and without the brackets of an IPv6 literal
/// with a port).
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Matches `text` against `pattern`, where `*` stands for any run of bytes,
/// ignoring ASCII case. Linear apart from backtracking to the last `*`.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p].eq_ignore_ascii_case(&text[t]) {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Accepts connections until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    frontend: Arc<HttpFrontend>,
    limit: Arc<Semaphore>,
    max_header_bytes: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(frontend.timeouts.client_header)
        .max_buf_size(max_header_bytes.max(8192))
        .max_headers(crate::MAX_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let what = format!("frontend {}", frontend.counters.name);
    while let Some((stream, peer, permit)) =
        crate::accept(&listener, &what, Some(&limit), &mut shutdown).await
    {
        let frontend = Arc::clone(&frontend);
        let builder = Arc::clone(&builder);
        tokio::spawn(crate::h1::client(stream, peer, frontend, builder, permit));
    }
}

/// What a client connection shares with its requests.
struct ConnState {
    in_flight: AtomicUsize,
    /// Requests received so far, numbering them for `verdicts`.
    received: std::sync::atomic::AtomicU64,
    verdicts: Arc<Verdicts>,
}

/// Serves a client connection with hyper: HTTP/1.x and h2c, everything the
/// fast path hands over.
pub(crate) async fn connection<T>(
    stream: T,
    peer: SocketAddr,
    frontend: Arc<HttpFrontend>,
    builder: Arc<auto::Builder<TokioExecutor>>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let verdicts = Verdicts::new();
    let state = Arc::new(ConnState {
        in_flight: AtomicUsize::new(0),
        received: std::sync::atomic::AtomicU64::new(0),
        verdicts: Arc::clone(&verdicts),
    });
    let service = Proxy {
        frontend: Arc::clone(&frontend),
        peer,
        conn: Arc::clone(&state),
    };
    let io = TokioIo::new(Tracked::scanned(
        stream,
        Arc::clone(&activity),
        Scanner::new(verdicts),
    ));
    let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service));
    tokio::pin!(conn);
    let idle = frontend.timeouts.idle;
    let mut closing = false;
    loop {
        let check = idle
            .saturating_sub(activity.quiet_for())
            .max(Duration::from_millis(100));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, "client connection: {e}");
                }
                break;
            }
            _ = tokio::time::sleep(check) => {
                let quiet = activity.quiet_for();
                if quiet < idle {
                    continue;
                }
                if activity.write_blocked() || (closing && quiet >= idle * 2) {
                    // A client that reads nothing of its answer for the
                    // client timeout, or a connection that would not
                    // close: cut it, freeing its slot.
                    tracing::debug!(%peer, "client timeout: closing the connection");
                    break;
                }
                if !closing && state.in_flight.load(Relaxed) == 0 {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// The proxy as a tower service, one per client connection.
#[derive(Clone)]
struct Proxy {
    frontend: Arc<HttpFrontend>,
    peer: SocketAddr,
    conn: Arc<ConnState>,
}

impl tower::Service<Request<Incoming>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            this.conn.in_flight.fetch_add(1, Relaxed);
            let index = this.conn.received.fetch_add(1, Relaxed);
            let response = if this.conn.verdicts.is_bad(index) {
                let mut r = error(
                    StatusCode::BAD_REQUEST,
                    "ambiguous framing: Content-Length with Transfer-Encoding, or several Content-Lengths",
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            } else {
                this.handle(request).await
            };
            this.conn.in_flight.fetch_sub(1, Relaxed);
            Ok(response)
        })
    }
}

pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether the request asks to switch protocols (WebSocket and the like).
fn wants_upgrade(request: &Request<Incoming>) -> bool {
    request.version() == Version::HTTP_11
        && request.headers().contains_key(header::UPGRADE)
        && connection_tokens(request.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes the headers that concern one connection only (RFC 9110 §7.6.1),
/// keeping the upgrade handshake when asked to.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter(|t| !(keep_upgrade && t.eq_ignore_ascii_case("upgrade")))
        // Host is end to end whatever Connection says.
        .filter(|t| !t.eq_ignore_ascii_case("host"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// Rejects framing that two parsers could read differently (request
/// smuggling): both Content-Length and Transfer-Encoding, or several
/// Content-Lengths.
fn ambiguous_framing(headers: &HeaderMap) -> Option<&'static str> {
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    if lengths > 0 && headers.contains_key(header::TRANSFER_ENCODING) {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if lengths > 1
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().contains(&b','))
    {
        return Some("more than one Content-Length");
    }
    None
}

/// The size of a request's head as HTTP/1.1 would put it on the wire.
fn head_size<B>(request: &Request<B>) -> usize {
    // "METHOD target HTTP/1.1\r\n", each "name: value\r\n", "\r\n".
    let target = request
        .uri()
        .path_and_query()
        .map_or(1, |pq| pq.as_str().len())
        + request.uri().authority().map_or(0, |a| a.as_str().len());
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    request.method().as_str().len() + target + 12 + headers + 2
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| cookie_in(v, name))
}

/// The value of cookie `name` in one `Cookie` header's value.
pub(crate) fn cookie_in<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The parts of a request with an empty body, kept to send it again.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Replay {
    fn request(&self) -> Request<UpstreamBody> {
        let mut r = Request::new(Either::Right(Empty::new()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

impl Proxy {
    async fn handle(&self, mut request: Request<Incoming>) -> Response<ProxyBody> {
        self.frontend.counters.request();
        if head_size(&request) > self.frontend.max_header_bytes {
            return error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large",
            );
        }
        if let Some(why) = ambiguous_framing(request.headers()) {
            return error(StatusCode::BAD_REQUEST, why);
        }
        if let Some(port) = self.frontend.redirect_https {
            return redirect_https(&request, port);
        }
        // RFC 9112 §3.2: one Host header, and HTTP/1.1 requests must have it.
        let hosts = request.headers().get_all(header::HOST).iter().count();
        if hosts > 1 {
            return error(StatusCode::BAD_REQUEST, "more than one Host header");
        }
        if hosts == 0 && request.version() == Version::HTTP_11 {
            return error(StatusCode::BAD_REQUEST, "no Host header");
        }
        // A clone of a header value shares its bytes: no copy.
        let host: Option<HeaderValue> = match request.headers().get(header::HOST) {
            Some(h) => Some(h.clone()),
            None => request
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        let host_str = host.as_ref().and_then(|h| h.to_str().ok());
        let Some(backend) = self.frontend.route(host_str, request.uri().path()).cloned() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no backend for this request",
            );
        };
        let upgrade = wants_upgrade(&request);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));

        let (mut parts, body) = request.into_parts();
        let uri_key = (backend.config.policy == crate::config::Policy::UriHash)
            .then(|| parts.uri.path_and_query().map(|pq| pq.as_str().to_string()))
            .flatten();
        let sticky = backend
            .config
            .sticky_cookie
            .as_deref()
            .and_then(|name| cookie_value(&parts.headers, name))
            .map(str::to_string);
        self.prepare(&mut parts, host, upgrade);
        let replay =
            (!upgrade && is_idempotent(&parts.method) && body.is_end_stream()).then(|| Replay {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                headers: parts.headers.clone(),
            });
        let upload = Arc::new(Upload::new(body.is_end_stream()));
        let body = ClientBody::new(body, self.frontend.timeouts.idle, Arc::clone(&upload));
        let mut outgoing = Some(Request::from_parts(parts, Either::Left(body)));
        let mut tried: Vec<Arc<Replica>> = Vec::new();
        let mut replayed = false;
        loop {
            let hints = Hints {
                client: Some(self.peer.ip()),
                uri: uri_key.as_deref(),
                sticky: sticky.as_deref(),
                exclude: &tried,
            };
            let Some(replica) = backend.pick(&hints) else {
                backend.unavailable.fetch_add(1, Relaxed);
                return if tried.is_empty() {
                    error(StatusCode::SERVICE_UNAVAILABLE, "no endpoint available")
                } else {
                    error(StatusCode::BAD_GATEWAY, "no endpoint could be reached")
                };
            };
            let guard = replica.begin(false);
            let sender = if upgrade {
                pool::connect(replica.addr, self.frontend.timeouts.connect).await
            } else {
                self.connection(&replica).await
            };
            let mut sender = match sender {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(backend = %backend.config.name, endpoint = %replica.id, "{e}");
                    replica.failed(&backend);
                    tried.push(replica);
                    if tried.len() >= MAX_CONNECT_TRIES {
                        return error(StatusCode::BAD_GATEWAY, "no endpoint could be reached");
                    }
                    continue;
                }
            };
            let Some(mut req) = outgoing.take() else {
                return error(StatusCode::BAD_GATEWAY, "request lost");
            };
            // HTTP/1.1 wants a Host: an HTTP/1.0 client that sent none
            // gets the endpoint's address there (RFC 9112 §3.2).
            if !req.headers().contains_key(header::HOST) {
                if let Ok(h) = HeaderValue::from_str(&replica.addr.to_string()) {
                    req.headers_mut().insert(header::HOST, h);
                }
            }
            let sent = Instant::now();
            let result = answer_within(
                sender.try_send_request(req),
                &upload,
                self.frontend.timeouts.server,
            )
            .await;
            if let Some(fault) = upload.fault() {
                // The client's body failed (malformed, or stalled past the
                // client timeout): the endpoint is not to blame.
                drop(guard);
                let mut r = error(fault.status(), fault.why());
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
            let failure = match result {
                Some(Ok(response)) => {
                    replica.observe_latency(sent.elapsed());
                    replica.succeeded();
                    return self.respond(
                        response,
                        sender,
                        guard,
                        &backend,
                        sticky.as_deref(),
                        client_upgrade,
                    );
                }
                Some(Err(mut e)) => {
                    if let Some(unsent) = e.take_message() {
                        // The connection closed before the request went out
                        // (an idle keep-alive the endpoint had just dropped):
                        // nothing was sent, so any request may go again.
                        outgoing = Some(unsent);
                        continue;
                    }
                    (StatusCode::BAD_GATEWAY, format!("{}", e.into_error()))
                }
                None => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "the endpoint did not answer in time".to_string(),
                ),
            };
            tracing::debug!(backend = %backend.config.name, endpoint = %replica.id, "{}", failure.1);
            replica.failed(&backend);
            match &replay {
                Some(replay) if !replayed => {
                    // Idempotent and bodiless: safe to send once more,
                    // elsewhere.
                    replayed = true;
                    outgoing = Some(replay.request());
                    tried.push(replica);
                }
                _ => return error(failure.0, &failure.1),
            }
        }
    }

    /// An idle pooled connection, or a new one.
    async fn connection(&self, replica: &Replica) -> Result<Sender, pool::ConnectError> {
        while let Some(mut sender) = replica.pool.take() {
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        pool::connect(replica.addr, self.frontend.timeouts.connect).await
    }

    /// Turns the client's request into the one the endpoint gets.
    fn prepare(&self, parts: &mut http::request::Parts, host: Option<HeaderValue>, upgrade: bool) {
        if parts.version == Version::HTTP_2 && !parts.headers.contains_key(header::HOST) {
            if let Some(host) = &host {
                parts.headers.insert(header::HOST, host.clone());
            }
        }
        parts.version = Version::HTTP_11;
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let origin = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            if let Ok(uri) = origin.parse() {
                parts.uri = uri;
            }
        }
        strip_hop_by_hop(&mut parts.headers, upgrade);
        let headers = &mut parts.headers;
        // The client's whole chain, every line in order, then the peer.
        let mut forwarded_for = bytes::BytesMut::with_capacity(48);
        for earlier in headers.get_all(&X_FORWARDED_FOR) {
            if !earlier.is_empty() {
                forwarded_for.extend_from_slice(earlier.as_bytes());
                forwarded_for.extend_from_slice(b", ");
            }
        }
        let _ = write!(IoWriter(&mut forwarded_for), "{}", self.peer.ip());
        if let Ok(v) = HeaderValue::from_maybe_shared(forwarded_for.freeze()) {
            headers.insert(X_FORWARDED_FOR, v);
        }
        // What a client says of the original request counts only from a
        // trusted proxy; anyone else's is replaced.
        let trusted = self.frontend.trusts(self.peer.ip());
        if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
            headers.insert(
                X_FORWARDED_PROTO,
                HeaderValue::from_static(self.frontend.scheme),
            );
        }
        if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
            match host {
                Some(host) => {
                    headers.insert(X_FORWARDED_HOST, host);
                }
                None => {
                    headers.remove(&X_FORWARDED_HOST);
                }
            }
        }
        if !(trusted && headers.contains_key(&X_FORWARDED_PORT)) {
            headers.insert(X_FORWARDED_PORT, self.frontend.port_value.clone());
        }
    }

    fn respond(
        &self,
        response: Response<Incoming>,
        sender: Sender,
        guard: ActiveGuard,
        backend: &BackendState,
        sticky: Option<&str>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        strip_hop_by_hop(&mut parts.headers, switching);
        if let Some(name) = &backend.config.sticky_cookie {
            let key = &guard.replica().key;
            if sticky != Some(key.as_str()) {
                if let Ok(v) = HeaderValue::from_str(&format!("{name}={key}; Path=/")) {
                    parts.headers.append(header::SET_COOKIE, v);
                }
            }
        }
        if switching {
            return self.tunnel(parts, body, sender, guard, client_upgrade);
        }
        if body.is_end_stream() {
            // Nothing more to read: the connection is free again.
            if !guard.replica().is_draining() {
                guard.replica().pool.put(sender);
            }
            return Response::from_parts(parts, ProxyBody::Empty);
        }
        let server = self.frontend.timeouts.server;
        Response::from_parts(
            parts,
            ProxyBody::Upstream {
                body,
                done: Some((sender, guard)),
                server,
                stalled: Box::pin(tokio::time::sleep(server)),
                waiting: false,
            },
        )
    }

    /// Joins the client and the endpoint once both have switched protocols.
    fn tunnel(
        &self,
        parts: http::response::Parts,
        body: Incoming,
        sender: Sender,
        guard: ActiveGuard,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<ProxyBody> {
        let Some(client_upgrade) = client_upgrade else {
            return error(
                StatusCode::BAD_GATEWAY,
                "the endpoint switched protocols unasked",
            );
        };
        // hyper keeps the endpoint's side of the upgrade in the response's
        // extensions, which are in `parts`, not with the body.
        let mut upstream_response = Response::from_parts(parts, body);
        let upstream_upgrade = hyper::upgrade::on(&mut upstream_response);
        let (parts, _) = upstream_response.into_parts();
        let replica = Arc::clone(guard.replica());
        let idle = self.frontend.timeouts.tunnel;
        let tunnel_guard = guard.into_tunnel();
        tokio::spawn(async move {
            let _sender = sender;
            let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!("upgrade failed: {e}");
                    return;
                }
            };
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            let mut closing = replica.closing();
            tokio::select! {
                r = crate::tcp::splice(&mut client, &mut upstream, idle) => {
                    if let Err(e) = r {
                        tracing::debug!("tunnel ended: {e}");
                    }
                }
                _ = closing.wait_for(|c| *c) => {
                    tracing::debug!(endpoint = %replica.id, "tunnel closed: endpoint drained");
                }
            }
            drop(tunnel_guard);
        });
        Response::from_parts(parts, ProxyBody::Empty)
    }
}

/// A permanent redirect to the same URL in https (on `port`, unless 443).
fn redirect_https<B>(request: &Request<B>, port: u16) -> Response<ProxyBody> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .map(strip_port);
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "no Host header");
    };
    // An IPv6 literal keeps its brackets.
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = match port {
        443 => format!("https://{host}{target}"),
        _ => format!("https://{host}:{port}{target}"),
    };
    let mut r = error(StatusCode::MOVED_PERMANENTLY, "see the https URL");
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// A short plain-text answer made by the balancer itself.
fn error(status: StatusCode, why: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Full(Some(Bytes::from(error_text(status, why)))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The body of the balancer's own answers.
pub(crate) fn error_text(status: StatusCode, why: &str) -> String {
    format!(
        "{} {}: {why}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

/// The body of an answer to a client.
pub(crate) enum ProxyBody {
    /// No body.
    Empty,
    /// A body made here.
    Full(Option<Bytes>),
    /// An endpoint's body; once read in full, its connection goes back to
    /// the pool and the request stops counting as in flight. An endpoint
    /// that sends nothing for the server timeout is cut off.
    Upstream {
        body: Incoming,
        done: Option<(Sender, ActiveGuard)>,
        server: Duration,
        /// Runs from the first poll that found nothing, so that a client
        /// that paused reading (an h2 window) does not count against the
        /// endpoint.
        stalled: Pin<Box<tokio::time::Sleep>>,
        waiting: bool,
    },
}

/// What a body can fail with on its way through the balancer.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Upstream {
                body,
                done,
                server,
                stalled,
                waiting,
            } => {
                let frame = Pin::new(&mut *body).poll_frame(cx);
                match &frame {
                    // The server stops polling once the body says it has
                    // ended, so release on the last frame, not after it.
                    Poll::Ready(None) | Poll::Ready(Some(Ok(_)))
                        if body.is_end_stream() || matches!(frame, Poll::Ready(None)) =>
                    {
                        if let Some((sender, guard)) = done.take() {
                            if !guard.replica().is_draining() {
                                guard.replica().pool.put(sender);
                            }
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        if let Some((_, guard)) = done.take() {
                            guard.replica().errored();
                        }
                    }
                    Poll::Ready(Some(Ok(_))) | Poll::Ready(None) => *waiting = false,
                    Poll::Pending => {
                        if !std::mem::replace(waiting, true) {
                            stalled
                                .as_mut()
                                .reset(tokio::time::Instant::now() + *server);
                        }
                        if stalled.as_mut().poll(cx).is_ready() {
                            if let Some((_, guard)) = done.take() {
                                guard.replica().errored();
                            }
                            return Poll::Ready(Some(Err("the endpoint stalled mid-body".into())));
                        }
                    }
                }
                frame.map(|f| f.map(|r| r.map_err(BoxError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(data) => data.is_none(),
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Upstream { body, .. } => body.size_hint(),
        }
    }
}

/// How a client's request body went, shared by the body on its way to the
/// endpoint and the request handler that judges the outcome.
pub(crate) struct Upload {
    opened: Instant,
    /// When the body ended, in milliseconds after `opened`, plus one; 0
    /// while it flows.
    finished: std::sync::atomic::AtomicU64,
    /// When the body last moved, in milliseconds after `opened`.
    moved: std::sync::atomic::AtomicU64,
    /// A [`ClientFault`] as a number; 0 for none.
    fault: std::sync::atomic::AtomicU8,
}

/// A request body that failed through the client's doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientFault {
    /// Malformed (a bad chunk, a short body).
    Malformed = 1,
    /// Nothing sent for the client timeout.
    Stalled = 2,
}

impl ClientFault {
    fn status(self) -> StatusCode {
        match self {
            ClientFault::Malformed => StatusCode::BAD_REQUEST,
            ClientFault::Stalled => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn why(self) -> &'static str {
        match self {
            ClientFault::Malformed => "the request body could not be read",
            ClientFault::Stalled => "the request body stalled",
        }
    }
}

impl Upload {
    fn new(finished: bool) -> Self {
        let upload = Upload {
            opened: Instant::now(),
            finished: std::sync::atomic::AtomicU64::new(0),
            moved: std::sync::atomic::AtomicU64::new(0),
            fault: std::sync::atomic::AtomicU8::new(0),
        };
        if finished {
            upload.finish();
        }
        upload
    }

    fn finish(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let _ = self.finished.compare_exchange(0, ms + 1, Relaxed, Relaxed);
    }

    fn progressed(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.moved.store(ms, Relaxed);
    }

    /// How long the body has not moved (or since the request began).
    fn still_for(&self) -> Duration {
        self.opened
            .elapsed()
            .saturating_sub(Duration::from_millis(self.moved.load(Relaxed)))
    }

    /// How long ago the body ended; `None` while it flows.
    fn finished_ago(&self) -> Option<Duration> {
        match self.finished.load(Relaxed) {
            0 => None,
            n => Some(
                self.opened
                    .elapsed()
                    .saturating_sub(Duration::from_millis(n - 1)),
            ),
        }
    }

    fn failed(&self, fault: ClientFault) {
        self.fault.store(fault as u8, Relaxed);
    }

    fn fault(&self) -> Option<ClientFault> {
        match self.fault.load(Relaxed) {
            1 => Some(ClientFault::Malformed),
            2 => Some(ClientFault::Stalled),
            _ => None,
        }
    }
}

/// Waits for an endpoint's answer: the server timeout runs from the end of
/// the request's body, or from its last move while it flows (a slow upload
/// is the client's business, bounded by the client timeout on each of its
/// reads; an endpoint that stops reading it is the endpoint's).
async fn answer_within<F: Future>(send: F, upload: &Upload, server: Duration) -> Option<F::Output> {
    tokio::pin!(send);
    loop {
        let quiet = upload.finished_ago().unwrap_or_else(|| upload.still_for());
        if quiet >= server || upload.fault().is_some() {
            return None;
        }
        if let Ok(out) = tokio::time::timeout(server - quiet, send.as_mut()).await {
            return Some(out);
        }
    }
}

/// A client's request body on its way to an endpoint: every read must
/// bring something within the client timeout, and a failure is recorded as
/// the client's, not the endpoint's.
pub(crate) struct ClientBody {
    body: Incoming,
    idle: Duration,
    /// Runs from the first poll that found nothing (an endpoint that reads
    /// slowly is not the client's fault).
    stalled: Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
    upload: Arc<Upload>,
}

impl ClientBody {
    fn new(body: Incoming, idle: Duration, upload: Arc<Upload>) -> Self {
        ClientBody {
            body,
            idle,
            stalled: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            upload,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(None) => {
                this.upload.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.body.is_end_stream() {
                    this.upload.finish();
                }
                this.upload.progressed();
                this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.upload.failed(ClientFault::Malformed);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                if !std::mem::replace(&mut this.waiting, true) {
                    this.stalled
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.idle);
                }
                if this.stalled.as_mut().poll(cx).is_ready() {
                    this.upload.failed(ClientFault::Stalled);
                    return Poll::Ready(Some(Err("the client's body stalled".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_hosts_and_paths() {
        assert!(glob_match(b"example.com", b"Example.COM"));
        assert!(!glob_match(b"example.com", b"www.example.com"));
        assert!(glob_match(b"*.example.com", b"www.example.com"));
        assert!(!glob_match(b"*.example.com", b"example.com"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"/api/*", b"/api/users/1"));
        assert!(!glob_match(b"/api/*", b"/apix"));
        assert!(glob_match(b"/path*", b"/pathology"));
        assert!(glob_match(b"*/*.js", b"/static/app.js"));
        assert!(!glob_match(b"*/*.js", b"/static/app.css"));
        assert!(glob_match(b"a*b*c", b"aXXbYYbZZc"));
        assert!(!glob_match(b"a*b*c", b"aXXbYY"));
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("[::1]"), "::1");
    }

    #[test]
    fn smuggling_prone_framing_is_found() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert_eq!(ambiguous_framing(&h), None);
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(ambiguous_framing(&h).is_some());
        h.remove(header::CONTENT_LENGTH);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5, 5"));
        assert!(ambiguous_framing(&h).is_some());
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(ambiguous_framing(&h).is_some());
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let mut upgrade = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
        strip_hop_by_hop(&mut upgrade, true);
        assert_eq!(upgrade.get(header::CONNECTION).unwrap(), "upgrade");
        assert_eq!(upgrade.get(header::UPGRADE).unwrap(), "websocket");
        assert!(!upgrade.contains_key("x-secret"));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; SRV=abc; b=2"),
        );
        assert_eq!(cookie_value(&h, "SRV"), Some("abc"));
        assert_eq!(cookie_value(&h, "srv"), None);
    }
}
