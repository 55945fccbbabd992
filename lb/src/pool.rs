//! Keep-alive connections to endpoints, kept per endpoint for reuse.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{Either, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The body of a request sent to an endpoint: the client's, or none (for a
/// retried request, whose body was known to be empty, and health checks).
pub(crate) type UpstreamBody = Either<crate::http::ClientBody, Empty<Bytes>>;

/// One HTTP/1.1 connection to an endpoint.
pub(crate) type Sender = http1::SendRequest<UpstreamBody>;

/// Idle connections kept per endpoint; more than this are closed.
const MAX_IDLE: usize = 512;

/// A connection that can wait in a [`Pool`].
pub(crate) trait Reusable {
    /// Whether it still looks usable (not closed by the endpoint).
    fn usable(&mut self) -> bool;
}

impl Reusable for Sender {
    fn usable(&mut self) -> bool {
        !self.is_closed()
    }
}

/// An endpoint's idle connections, most recently used last.
pub(crate) struct Pool<T> {
    idle: Mutex<Vec<T>>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Reusable> Pool<T> {
    /// An idle connection that is still open, if there is one.
    pub fn take(&self) -> Option<T> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(mut conn) = idle.pop() {
            if conn.usable() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection whose last response has been read in full.
    pub fn put(&self, mut conn: T) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE && conn.usable() {
            idle.push(conn);
        }
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// A plain TCP connection to an endpoint for the HTTP/1.1 fast path, with
/// the bytes read from it and not yet used.
pub(crate) struct RawConn {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl RawConn {
    pub fn new(stream: TcpStream) -> Self {
        RawConn {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Readies it for the pool (its response read in full).
    pub fn idle(&mut self) {
        self.buf.clear();
    }
}

impl Reusable for RawConn {
    /// Whether the endpoint has not closed the connection, nor sent
    /// anything unasked (which would be taken for the next answer). Free
    /// when the socket has not turned readable since the last read: tokio
    /// answers from the readiness it keeps, without a system call.
    fn usable(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
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
