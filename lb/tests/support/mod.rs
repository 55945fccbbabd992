//! Test backends, clients and small helpers shared by the integration tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lb::{Backend, Change, Config, Endpoint, EndpointStats, Frontend, Handle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long `/slow` makes a test backend wait before answering.
pub const SLOW: Duration = Duration::from_millis(300);

/// The longest any single network step of a test may take.
const STEP: Duration = Duration::from_secs(5);

/// Runs `f`, failing the test if it takes longer than a few seconds.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {STEP:?}"),
    }
}

/// Polls `cond` until it holds, failing the test after three seconds.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `127.0.0.1:0`.
pub fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An HTTP frontend on a free port.
pub fn http_frontend(name: &str, default_backend: Option<&str>) -> Frontend {
    Frontend {
        name: name.into(),
        listen: any_port(),
        default_backend: default_backend.map(String::from),
        ..Frontend::default()
    }
}

/// A configuration with one HTTP frontend `web` sending everything to
/// the given backend (whose name is kept).
pub fn simple_config(backend: Backend) -> Config {
    Config {
        frontends: vec![http_frontend("web", Some(&backend.name))],
        backends: vec![backend],
        ..Config::default()
    }
}

/// Adds an endpoint through a handle and waits until the balancer has
/// seen it accept a connection (a new endpoint may wait in a "starting"
/// state for that before it joins the rotation).
pub async fn add(handle: &Handle, backend: &str, endpoint: Endpoint) {
    let id = endpoint.id.clone();
    handle
        .apply(&Change::Add {
            backend: backend.into(),
            endpoint,
        })
        .unwrap();
    wait_until(&format!("{backend}/{id} to start"), || {
        endpoint_stats(handle, backend, &id).is_some_and(|e| e.state != "starting")
    })
    .await;
}

/// The statistics of one endpoint, if the backend lists it.
pub fn endpoint_stats(handle: &Handle, backend: &str, id: &str) -> Option<EndpointStats> {
    handle
        .snapshot()
        .backends
        .into_iter()
        .find(|b| b.name == backend)?
        .endpoints
        .into_iter()
        .find(|e| e.id == id)
}

/// What a test backend shares with its connections.
struct BackendShared {
    name: String,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    slow_done: Arc<AtomicBool>,
}

/// A small HTTP/1.1 server that answers with its name (in an `x-backend`
/// header and a JSON body that also lists the request's headers), serves
/// `/health` (200 or 500, switchable), `/slow` (after [`SLOW`]) and echoes
/// bytes after answering an `Upgrade` with 101.
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    /// What `/health` says.
    pub healthy: Arc<AtomicBool>,
    /// Requests served, health checks left out.
    pub hits: Arc<AtomicUsize>,
    /// Turns true when a `/slow` request has waited and is being answered.
    pub slow_done: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        let listener = TcpListener::bind(any_port()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(BackendShared {
            name: name.into(),
            healthy: Arc::new(AtomicBool::new(true)),
            hits: Arc::new(AtomicUsize::new(0)),
            slow_done: Arc::new(AtomicBool::new(false)),
        });
        TestBackend {
            name: name.into(),
            addr,
            healthy: Arc::clone(&shared.healthy),
            hits: Arc::clone(&shared.hits),
            slow_done: Arc::clone(&shared.slow_done),
            task: tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let service =
                            service_fn(move |req| backend_answer(Arc::clone(&shared), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await;
                    });
                }
            }),
        }
    }

    /// This backend as an endpoint of weight 1, with its name as id.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.name.clone(), self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(SeqCst)
    }
}

async fn backend_answer(
    shared: Arc<BackendShared>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let name = HeaderValue::from_str(&shared.name).unwrap();
    if path == "/health" {
        let mut r = Response::new(Full::default());
        if !shared.healthy.load(SeqCst) {
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        return Ok(r);
    }
    shared.hits.fetch_add(1, SeqCst);
    if req.headers().contains_key(header::UPGRADE) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 4096];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut r = Response::new(Full::default());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("echo"));
        h.insert("x-backend", name);
        return Ok(r);
    }
    if path == "/slow" {
        tokio::time::sleep(SLOW).await;
        shared.slow_done.store(true, SeqCst);
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let uri = req.uri().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(e) => format!("<error: {e}>"),
    };
    let json = serde_json::json!({
        "name": shared.name,
        "method": method,
        "version": version,
        "uri": uri,
        "headers": headers,
        "body": body,
    });
    let mut r = Response::new(Full::new(Bytes::from(json.to_string())));
    r.headers_mut().insert("x-backend", name);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// A TCP server that writes its name and a newline, then echoes.
pub struct EchoServer {
    pub name: String,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoServer {
    pub async fn start(name: &str) -> EchoServer {
        let listener = TcpListener::bind(any_port()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let prefix = format!("{name}\n");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let prefix = prefix.clone();
                tokio::spawn(async move {
                    if stream.write_all(prefix.as_bytes()).await.is_err() {
                        return;
                    }
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        EchoServer {
            name: name.into(),
            addr,
            task,
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.name.clone(), self.addr)
    }
}

/// An endpoint that reads each request (head and `Content-Length` body) and
/// closes the connection without answering.
pub struct HangUpServer {
    pub addr: SocketAddr,
    /// Requests read.
    pub requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for HangUpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HangUpServer {
    pub async fn start() -> HangUpServer {
        let listener = TcpListener::bind(any_port()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    if read_request(&mut stream).await.is_some() {
                        counter.fetch_add(1, SeqCst);
                    }
                    drop(stream);
                });
            }
        });
        HangUpServer {
            addr,
            requests,
            task,
        }
    }
}

/// Reads one request head and its `Content-Length` body; `None` at EOF.
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&data, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    Some(data)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A listener that accepts and drops connections, to be closed later.
pub async fn closing_listener() -> TcpListener {
    TcpListener::bind(any_port()).await.unwrap()
}

/// A response, read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The test backend that answered.
    pub fn backend(&self) -> String {
        self.headers
            .get("x-backend")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no x-backend in {self:?}"))
    }

    /// The test backend's JSON echo of the request.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The values the backend saw for a request header (lower-case name).
    pub fn seen(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|vs| vs.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request with a body and extra headers.
pub fn request(
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let mut r = Request::new(Full::new(Bytes::from(body.to_string())));
    *r.method_mut() = method;
    *r.uri_mut() = path.parse().unwrap();
    r.headers_mut()
        .insert(header::HOST, HeaderValue::from_str(host).unwrap());
    for (k, v) in headers {
        r.headers_mut().append(
            header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    r
}

/// One HTTP/1.1 client connection, kept alive across requests.
pub struct Http1 {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Http1 {
    pub async fn connect(addr: SocketAddr) -> Http1 {
        let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Http1 { sender }
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Reply {
        within("HTTP/1.1 exchange", async {
            self.sender.ready().await.unwrap();
            let response = self.sender.send_request(request).await.unwrap();
            let (parts, body) = response.into_parts();
            Reply {
                status: parts.status,
                headers: parts.headers,
                body: body.collect().await.unwrap().to_bytes(),
            }
        })
        .await
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        self.send(request(Method::GET, host, path, &[], "")).await
    }
}

/// One request on a connection of its own.
pub async fn send(addr: SocketAddr, request: Request<Full<Bytes>>) -> Reply {
    Http1::connect(addr).await.send(request).await
}

/// One GET on a connection of its own.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    send(addr, request(Method::GET, host, path, &[], "")).await
}

/// Reads a response head (up to the blank line) from a raw stream.
pub async fn read_head(stream: &mut TcpStream) -> String {
    within("response head", async {
        let mut data = Vec::new();
        let mut byte = [0u8; 1];
        while !data.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(0) => break,
                Ok(_) => data.push(byte[0]),
                Err(e) => panic!(
                    "reading a response head: {e} (after {:?})",
                    String::from_utf8_lossy(&data)
                ),
            }
        }
        String::from_utf8_lossy(&data).into_owned()
    })
    .await
}

/// Sends raw bytes as a request and returns the status code of the answer
/// (0 when the connection closed without one).
pub async fn raw_status(addr: SocketAddr, raw: &[u8]) -> u16 {
    let mut stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    // The server may answer and close before reading everything.
    let _ = stream.write_all(raw).await;
    let head = read_head(&mut stream).await;
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Sends raw bytes as a request and returns the answer's status and body
/// (read by its Content-Length).
pub async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    let _ = stream.write_all(raw).await;
    let (head, body) = read_sized(&mut stream).await;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body)
}

/// What a [`ScriptedServer`] answers to a request for a path: the pieces
/// it writes (flushed one by one, a little apart), and whether it closes
/// the connection right after, without a word.
pub type Script = fn(&str) -> (Vec<Vec<u8>>, bool);

/// An endpoint that answers with raw bytes chosen by the request's path,
/// for framings and misbehaviour a well-behaved server never shows.
pub struct ScriptedServer {
    pub addr: SocketAddr,
    /// Connections that carried a request (the balancer's probe of a new
    /// endpoint carries none).
    pub connections: Arc<AtomicUsize>,
    /// Requests read.
    pub requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedServer {
    pub async fn start(script: Script) -> ScriptedServer {
        let listener = TcpListener::bind(any_port()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (conns, reqs) = (Arc::clone(&connections), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let (conns, reqs) = (Arc::clone(&conns), Arc::clone(&reqs));
                tokio::spawn(async move {
                    let mut first = true;
                    while let Some(request) = read_request(&mut stream).await {
                        if std::mem::take(&mut first) {
                            conns.fetch_add(1, SeqCst);
                        }
                        reqs.fetch_add(1, SeqCst);
                        let head = String::from_utf8_lossy(&request).into_owned();
                        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                        let (pieces, close) = script(&path);
                        for (i, piece) in pieces.iter().enumerate() {
                            if i > 0 {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            if stream.write_all(piece).await.is_err() {
                                return;
                            }
                        }
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        ScriptedServer {
            addr,
            connections,
            requests,
            task,
        }
    }
}

/// Reads a response whose body has a `Content-Length` from `stream`;
/// returns its head and body.
pub async fn read_sized(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let head = read_head(stream).await;
    let length: usize = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    within("response body", stream.read_exact(&mut body))
        .await
        .unwrap();
    (head, body)
}
