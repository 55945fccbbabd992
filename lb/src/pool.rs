//! Keep-alive connections to endpoints, kept per endpoint for reuse.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The body of a request sent to an endpoint: the client's, or none (for a
/// retried request, whose body was known to be empty, and health checks).
pub(crate) type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// One HTTP/1.1 connection to an endpoint.
pub(crate) type Sender = http1::SendRequest<UpstreamBody>;

/// Idle connections kept per endpoint; more than this are closed.
const MAX_IDLE: usize = 512;

/// An endpoint's idle connections, most recently used last.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<Sender>>,
}

impl Pool {
    /// An idle connection that is still open, if there is one.
    pub fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps a connection whose last response has been read in full.
    pub fn put(&self, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE && !sender.is_closed() {
            idle.push(sender);
        }
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connecting to {0} timed out")]
    Timeout(SocketAddr),
    #[error("connecting to {0}: {1}")]
    Io(SocketAddr, io::Error),
    #[error("HTTP handshake with {0}: {1}")]
    Handshake(SocketAddr, hyper::Error),
}

/// Opens a TCP connection within `timeout`, with Nagle's algorithm off.
pub(crate) async fn connect_tcp(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Io(addr, e)),
        Err(_) => return Err(ConnectError::Timeout(addr)),
    };
    // Only a latency hint: a socket that refuses it still works.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Opens a new HTTP/1.1 connection; its driver runs on a task of its own
/// and ends when the connection does.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Sender, ConnectError> {
    let stream = connect_tcp(addr, timeout).await?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ConnectError::Handshake(addr, e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(%addr, "upstream connection ended: {e}");
        }
    });
    Ok(sender)
}
