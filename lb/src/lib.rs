//! The built-in load balancer of rcompose.
//!
//! It knows nothing of compose or containers: it is given a [`Config`]
//! (listeners, backends, policies) and fed [`Change`]s to the endpoints of
//! each backend, through a [`Handle`] in the same process or through the
//! control listener from another. It never looks for endpoints itself.
//!
//! - L7: HTTP/1.1 and h2c from clients, HTTP/1.1 with pooled keep-alive
//!   connections to endpoints, `Upgrade` tunnels (WebSocket), routing by
//!   host and path, `X-Forwarded-*` headers. Plain HTTP/1.1 takes a fast
//!   path over bytes ([`h1`](crate::h1)); the rest goes through hyper
//!   ([`http`](crate::http)).
//! - L4: TCP connections proxied whole.
//! - Endpoint choice: round robin, least connections, power of two choices
//!   on latency, random, source and URI hashing, weights, sticky cookies,
//!   slow start; active and passive health; draining.
//! - Statistics as HTML, JSON and Prometheus text.

mod backend;
mod config;
mod control;
mod framing;
mod h1;
mod health;
mod http;
mod io;
mod pool;
mod stats;
mod tcp;
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

pub use backend::{BackendStats, Change, DrainReport, Endpoint, EndpointStats};
pub use config::{
    Backend, Certificate, Cidr, Config, ConfigError, Control, Frontend, HealthCheck, Mode, Policy,
    Route, Stats, Timeouts, Tls, MIN_TOKEN_LEN,
};
pub use control::{ControlClient, ControlError};
pub use stats::{FrontendStats, Snapshot};

use backend::BackendState;

/// Header lines in one request head, on every path (the fast path, the
/// framing check and hyper); a request with more is answered 431.
pub(crate) const MAX_HEADERS: usize = 100;

/// Whether two secrets are equal, in a time that depends on their lengths
/// only, not on where they differ.
pub(crate) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    std::hint::black_box(diff) == 0
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// The next connection on `listener`, holding a permit of `limit` when one
/// is given; `None` once `shutdown` turns true. An accept error (out of
/// descriptors, say) is logged and waited out rather than spun on.
async fn accept(
    listener: &TcpListener,
    what: &str,
    limit: Option<&Arc<Semaphore>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(
    tokio::net::TcpStream,
    SocketAddr,
    Option<OwnedSemaphorePermit>,
)> {
    let permit = match limit {
        Some(limit) => tokio::select! {
            p = Arc::clone(limit).acquire_owned() => Some(p.ok()?),
            _ = stopped(shutdown) => return None,
        },
        None => None,
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => return Some((stream, peer, permit)),
                Err(e) => {
                    tracing::warn!("accept on {what}: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            _ = stopped(shutdown) => return None,
        }
    }
}

/// Counters of one listener.
pub(crate) struct FrontendCounters {
    name: String,
    listen: SocketAddr,
    mode: Mode,
    open: AtomicUsize,
    connections: AtomicU64,
    requests: AtomicU64,
}

impl FrontendCounters {
    fn opened(&self) {
        self.open.fetch_add(1, Relaxed);
        self.connections.fetch_add(1, Relaxed);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    fn stats(&self) -> FrontendStats {
        FrontendStats {
            name: self.name.clone(),
            listen: self.listen,
            mode: self.mode,
            open_connections: self.open.load(Relaxed),
            connections: self.connections.load(Relaxed),
            requests: self.requests.load(Relaxed),
        }
    }
}

/// What the parts of a running balancer share.
struct Shared {
    backends: Vec<Arc<BackendState>>,
    frontends: Vec<Arc<FrontendCounters>>,
    drain_grace: Duration,
    /// The longest a drain waits for requests in flight.
    drain_limit: Duration,
}

impl Shared {
    fn backend(&self, name: &str) -> Option<&Arc<BackendState>> {
        self.backends.iter().find(|b| b.config.name == name)
    }
}

/// A change named a backend the balancer does not have.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no backend named {0:?}")]
pub struct UnknownBackend(pub String);

/// Why a balancer did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration does not hold together.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An address could not be listened on.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// What was to listen there.
        what: String,
        /// The address.
        addr: SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
    /// A listener's certificates could not be used.
    #[error("frontend {frontend}: TLS: {message}")]
    Tls {
        /// The frontend.
        frontend: String,
        /// What is wrong, naming the certificate.
        message: String,
    },
    /// The control socket could not be made.
    #[error("cannot listen on {} (control): {source}", path.display())]
    BindSocket {
        /// The socket's path.
        path: std::path::PathBuf,
        /// Why not.
        source: std::io::Error,
    },
}

/// Feeds a running balancer and reads its state; cheap to clone.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Applies one change.
    pub fn apply(&self, change: &Change) -> Result<(), UnknownBackend> {
        let backend = self
            .shared
            .backend(change.backend())
            .ok_or_else(|| UnknownBackend(change.backend().to_string()))?;
        backend.apply(change);
        Ok(())
    }

    /// Applies every change, or none when one names an unknown backend.
    pub fn apply_all(&self, changes: &[Change]) -> Result<(), UnknownBackend> {
        if let Some(unknown) = changes
            .iter()
            .find(|c| self.shared.backend(c.backend()).is_none())
        {
            return Err(UnknownBackend(unknown.backend().to_string()));
        }
        for change in changes {
            self.apply(change)?;
        }
        Ok(())
    }

    /// Applies every change (or none, as [`Handle::apply_all`]), then waits
    /// until each endpoint added has accepted a connection and joined the
    /// rotation (a few seconds at most).
    pub async fn apply_and_wait(&self, changes: &[Change]) -> Result<(), UnknownBackend> {
        self.apply_all(changes)?;
        for change in changes {
            let Change::Add { backend, endpoint } = change else {
                continue;
            };
            let Some(state) = self.shared.backend(backend) else {
                continue;
            };
            while state.find(&endpoint.id).is_some_and(|r| r.is_probing()) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(())
    }

    /// Drains an endpoint: no new work goes to it; this returns once its
    /// requests in flight are done and, after the configured grace, its
    /// tunnels are closed. The endpoint stays listed (as draining) until a
    /// [`Change::Remove`]. `None` when the backend has no such endpoint.
    pub async fn drain(
        &self,
        backend: &str,
        id: &str,
    ) -> Result<Option<DrainReport>, UnknownBackend> {
        let state = self
            .shared
            .backend(backend)
            .ok_or_else(|| UnknownBackend(backend.to_string()))?;
        Ok(state
            .drain(id, self.shared.drain_grace, self.shared.drain_limit)
            .await)
    }

    /// The balancer's state now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            frontends: self.shared.frontends.iter().map(|f| f.stats()).collect(),
            backends: self.shared.backends.iter().map(|b| b.stats()).collect(),
        }
    }
}

/// A running balancer; it stops when dropped or shut down.
pub struct Balancer {
    handle: Handle,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    stats_addr: Option<SocketAddr>,
    control_addr: Option<SocketAddr>,
}

pub(crate) async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            what: what.to_string(),
            addr,
            source,
        })
}

impl Balancer {
    /// Listens on every configured address (all or none) and starts serving.
    /// Backends start with no endpoints.
    pub async fn start(config: Config) -> Result<Balancer, StartError> {
        config.validate()?;
        let mut listeners = Vec::new();
        for f in &config.frontends {
            listeners.push(bind(&format!("frontend {}", f.name), f.listen).await?);
        }
        let stats_listener = match &config.stats {
            Some(s) => Some(bind("statistics", s.listen).await?),
            None => None,
        };
        let mut tls_configs = std::collections::HashMap::new();
        for f in &config.frontends {
            if let Some(tls) = &f.tls {
                let built = tls::server_config(tls).map_err(|message| StartError::Tls {
                    frontend: f.name.clone(),
                    message,
                })?;
                tls_configs.insert(f.name.clone(), built);
            }
        }
        let control_listener = match &config.control {
            Some(c) => Some(control::bind(c).await?),
            None => None,
        };

        let backends: Vec<Arc<BackendState>> = config
            .backends
            .iter()
            .map(|b| Arc::new(BackendState::new(b.clone())))
            .collect();
        let find = |name: &str| backends.iter().find(|b| b.config.name == name).cloned();
        let mut frontends = Vec::new();
        for (f, listener) in config.frontends.iter().zip(&listeners) {
            frontends.push(Arc::new(FrontendCounters {
                name: f.name.clone(),
                listen: listener.local_addr().unwrap_or(f.listen),
                mode: f.mode,
                open: AtomicUsize::new(0),
                connections: AtomicU64::new(0),
                requests: AtomicU64::new(0),
            }));
        }
        let shared = Arc::new(Shared {
            backends: backends.clone(),
            frontends: frontends.clone(),
            drain_grace: config.drain_grace,
            drain_limit: config.timeouts.server + config.drain_grace,
        });
        let handle = Handle {
            shared: Arc::clone(&shared),
        };
        let (shutdown, stop) = watch::channel(false);
        let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let mut tasks = Vec::new();
        for ((f, listener), counters) in config.frontends.iter().zip(listeners).zip(frontends) {
            let default = f.default_backend.as_deref().and_then(find);
            match f.mode {
                Mode::Http => {
                    let tls = tls_configs
                        .remove(&f.name)
                        .map(tokio_rustls::TlsAcceptor::from);
                    let routes = f
                        .routes
                        .iter()
                        .filter_map(|r| {
                            Some(http::CompiledRoute {
                                host: r.host.clone(),
                                path: r.path.clone(),
                                backend: find(&r.backend)?,
                            })
                        })
                        .collect();
                    let frontend = Arc::new(http::HttpFrontend {
                        port_value: ::http::HeaderValue::from(counters.listen.port()),
                        counters,
                        routes,
                        default,
                        timeouts: config.timeouts.clone(),
                        max_header_bytes: config.max_header_bytes,
                        scheme: if tls.is_some() { "https" } else { "http" },
                        trusted_proxies: config.trusted_proxies.clone(),
                        tls,
                        redirect_https: f.redirect_https,
                    });
                    tasks.push(tokio::spawn(http::serve(
                        listener,
                        frontend,
                        Arc::clone(&limit),
                        config.max_header_bytes,
                        stop.clone(),
                    )));
                }
                Mode::Tcp => {
                    // Validation guarantees a default backend.
                    let Some(backend) = default else { continue };
                    tasks.push(tokio::spawn(tcp::serve(
                        listener,
                        counters,
                        backend,
                        config.timeouts.clone(),
                        Arc::clone(&limit),
                        stop.clone(),
                    )));
                }
            }
        }
        for b in &backends {
            if let Some(check) = &b.config.health_check {
                tasks.push(tokio::spawn(health::run(
                    Arc::clone(b),
                    check.clone(),
                    stop.clone(),
                )));
            }
        }
        let stats_addr = stats_listener.as_ref().and_then(|l| l.local_addr().ok());
        if let (Some(listener), Some(s)) = (stats_listener, &config.stats) {
            tasks.push(tokio::spawn(stats::serve(
                listener,
                handle.clone(),
                s.auth.clone(),
                stop.clone(),
            )));
        }
        let control_addr = control_listener
            .as_ref()
            .and_then(control::Listener::tcp_addr);
        if let (Some(listener), Some(c)) = (control_listener, &config.control) {
            tasks.push(tokio::spawn(control::serve(
                listener,
                handle.clone(),
                c.token.clone(),
                stop.clone(),
            )));
        }
        Ok(Balancer {
            handle,
            shutdown,
            tasks,
            stats_addr,
            control_addr,
        })
    }

    /// A handle that feeds this balancer.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The address a frontend is bound to (useful after binding port 0).
    pub fn local_addr(&self, frontend: &str) -> Option<SocketAddr> {
        self.handle
            .shared
            .frontends
            .iter()
            .find(|f| f.name == frontend)
            .map(|f| f.listen)
    }

    /// The statistics listener's address, when there is one.
    pub fn stats_addr(&self) -> Option<SocketAddr> {
        self.stats_addr
    }

    /// The control listener's address, when it listens on TCP.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// Stops listening; connections already open finish on their own.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_are_equal_only_when_every_byte_and_the_length_are() {
        assert!(same_secret(b"Bearer abc", b"Bearer abc"));
        assert!(same_secret(b"", b""));
        for given in [
            &b"Bearer abd"[..],
            b"Bearer ab",
            b"Bearer abcd",
            b"",
            b"bearer abc",
        ] {
            assert!(!same_secret(given, b"Bearer abc"), "{given:?}");
        }
    }
}
