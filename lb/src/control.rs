//! The control listener, through which another process feeds endpoint
//! changes and drains endpoints, and its client.
//!
//! It listens on a Unix socket, whose directory's permissions decide who
//! may reach it (rcompose puts it in a directory only the host's root can
//! enter, bind-mounted into the balancer's container: it is on no
//! network), or on TCP, where every request must carry
//! `Authorization: Bearer <token>` (compared in constant time).
//! - `POST /v1/changes` with a JSON array of [`Change`]s applies them all,
//!   or none when one names an unknown backend, and answers once the
//!   endpoints added accept connections;
//! - `POST /v1/drain` with `{"backend": ..., "id": ...}` answers once the
//!   endpoint has drained, with a [`DrainReport`];
//! - `GET /v1/state` answers a [`Snapshot`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::backend::{Change, DrainReport};
use crate::config::Control;
use crate::stats::Snapshot;
use crate::{Handle, StartError};

/// Largest control request body.
const MAX_BODY: usize = 4 << 20;

#[derive(Serialize, Deserialize)]
struct DrainRequest {
    backend: String,
    id: String,
}

/// A bound control listener.
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    pub(crate) fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }
}

/// Listens where `control` says. A socket left by an earlier balancer is
/// replaced; the new one is open to every user, the directories above it
/// being what keeps others out.
pub(crate) async fn bind(control: &Control) -> Result<Listener, StartError> {
    if let Some(addr) = control.listen {
        return Ok(Listener::Tcp(crate::bind("control", addr).await?));
    }
    let Some(path) = &control.socket else {
        return Err(crate::config::ConfigError::Control.into());
    };
    let failed = |source| StartError::BindSocket {
        path: path.clone(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    let listener = UnixListener::bind(path).map_err(failed)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(failed)?;
    Ok(Listener::Unix(listener, path.clone()))
}

pub(crate) async fn serve(
    listener: Listener,
    handle: Handle,
    token: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let expected = Arc::new(token.map(|t| format!("Bearer {t}")));
    match listener {
        Listener::Tcp(listener) => {
            while let Some((stream, _, _)) =
                crate::accept(&listener, "the control listener", None, &mut shutdown).await
            {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, handle.clone(), Arc::clone(&expected)));
            }
        }
        Listener::Unix(listener, path) => {
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            tokio::spawn(connection(stream, handle.clone(), Arc::clone(&expected)));
                        }
                        Err(e) => {
                            tracing::warn!("accept on the control socket: {e}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    },
                    _ = crate::stopped(&mut shutdown) => break,
                }
            }
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn connection<S>(stream: S, handle: Handle, expected: Arc<Option<String>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let handle = handle.clone();
        let expected = Arc::clone(&expected);
        async move { Ok::<_, Infallible>(answer(request, &handle, expected.as_deref()).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn failure(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message }).to_string())
}

async fn answer(
    request: Request<Incoming>,
    handle: &Handle,
    expected: Option<&str>,
) -> Response<Full<Bytes>> {
    let authorized = expected.is_none_or(|expected| {
        request
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| crate::same_secret(v.as_bytes(), expected.as_bytes()))
    });
    if !authorized {
        return failure(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let route = (request.method().clone(), request.uri().path().to_string());
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return failure(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")),
    };
    match (&route.0, route.1.as_str()) {
        (&Method::POST, "/v1/changes") => {
            let changes: Vec<Change> = match serde_json::from_slice(&body) {
                Ok(c) => c,
                Err(e) => return failure(StatusCode::BAD_REQUEST, &e.to_string()),
            };
            match handle.apply_and_wait(&changes).await {
                Ok(()) => json(
                    StatusCode::OK,
                    serde_json::json!({ "applied": changes.len() }).to_string(),
                ),
                Err(e) => failure(StatusCode::NOT_FOUND, &e.to_string()),
            }
        }
        (&Method::POST, "/v1/drain") => {
            let drain: DrainRequest = match serde_json::from_slice(&body) {
                Ok(d) => d,
                Err(e) => return failure(StatusCode::BAD_REQUEST, &e.to_string()),
            };
            match handle.drain(&drain.backend, &drain.id).await {
                Ok(Some(report)) => json(
                    StatusCode::OK,
                    serde_json::to_string(&report).unwrap_or_default(),
                ),
                Ok(None) => failure(
                    StatusCode::NOT_FOUND,
                    &format!("no endpoint {:?} in {:?}", drain.id, drain.backend),
                ),
                Err(e) => failure(StatusCode::NOT_FOUND, &e.to_string()),
            }
        }
        (&Method::GET, "/v1/state") => json(
            StatusCode::OK,
            serde_json::to_string(&handle.snapshot()).unwrap_or_default(),
        ),
        _ => failure(StatusCode::NOT_FOUND, "no such control endpoint"),
    }
}

/// A failed control request.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The balancer could not be reached.
    #[error("cannot reach the balancer at {addr}: {message}")]
    Unreachable {
        /// Its control address or socket.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// The balancer refused the request.
    #[error("the balancer refused the request ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Its explanation.
        message: String,
    },
}

/// Where a control listener is.
#[derive(Clone, Debug)]
enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "{addr}"),
            Target::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Talks to a balancer's control listener.
#[derive(Clone, Debug)]
pub struct ControlClient {
    target: Target,
    token: Option<String>,
    timeout: Duration,
}

impl ControlClient {
    /// A client for the TCP listener at `addr`; requests give up after
    /// `timeout` (draining may take as long as the balancer's grace).
    pub fn new(addr: SocketAddr, token: impl Into<String>, timeout: Duration) -> Self {
        ControlClient {
            target: Target::Tcp(addr),
            token: Some(token.into()),
            timeout,
        }
    }

    /// A client for the control socket at `path`.
    pub fn unix(path: impl AsRef<Path>, timeout: Duration) -> Self {
        ControlClient {
            target: Target::Unix(path.as_ref().to_path_buf()),
            token: None,
            timeout,
        }
    }

    /// Applies endpoint changes.
    pub async fn apply(&self, changes: &[Change]) -> Result<(), ControlError> {
        let body = serde_json::to_vec(changes).unwrap_or_default();
        self.call(Method::POST, "/v1/changes", body)
            .await
            .map(|_| ())
    }

    /// Drains an endpoint and waits until it is done; `None` when the
    /// balancer does not know it.
    pub async fn drain(
        &self,
        backend: &str,
        id: &str,
    ) -> Result<Option<DrainReport>, ControlError> {
        let body = serde_json::to_vec(&DrainRequest {
            backend: backend.into(),
            id: id.into(),
        })
        .unwrap_or_default();
        match self.call(Method::POST, "/v1/drain", body).await {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(ControlError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The balancer's state.
    pub async fn state(&self) -> Result<Snapshot, ControlError> {
        let bytes = self.call(Method::GET, "/v1/state", Vec::new()).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.unreachable(format!("unreadable state: {e}")))
    }

    fn unreachable(&self, message: String) -> ControlError {
        ControlError::Unreachable {
            addr: self.target.to_string(),
            message,
        }
    }

    async fn handshake<S>(
        &self,
        stream: S,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ControlError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn call(&self, method: Method, path: &str, body: Vec<u8>) -> Result<Bytes, ControlError> {
        let work = async {
            let mut sender = match &self.target {
                Target::Tcp(addr) => {
                    let stream = tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(|e| self.unreachable(e.to_string()))?;
                    self.handshake(stream).await?
                }
                Target::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(|e| self.unreachable(e.to_string()))?;
                    self.handshake(stream).await?
                }
            };
            let mut request = Request::new(Full::new(Bytes::from(body)));
            *request.method_mut() = method;
            *request.uri_mut() = path
                .parse()
                .map_err(|e: http::uri::InvalidUri| self.unreachable(e.to_string()))?;
            let headers = request.headers_mut();
            headers.insert(header::HOST, HeaderValue::from_static("balancer"));
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Some(token) = &self.token {
                if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
                    headers.insert(header::AUTHORIZATION, v);
                }
            }
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| self.unreachable(e.to_string()))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| self.unreachable(e.to_string()))?
                .to_bytes();
            if status.is_success() {
                Ok(bytes)
            } else {
                let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
                Err(ControlError::Refused {
                    status: status.as_u16(),
                    message,
                })
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(self.unreachable(format!("no answer within {:?}", self.timeout))),
        }
    }
}
