//! The L4 frontend: TCP connections proxied whole to an endpoint.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::backend::{BackendState, Hints, Replica};
use crate::config::Timeouts;
use crate::io::{Activity, Tracked};
use crate::{pool, FrontendCounters};

/// Endpoints tried for one connection before giving up.
const MAX_CONNECT_TRIES: usize = 3;

/// Copies both ways until both sides are done, or until nothing has moved
/// either way for `idle`.
pub(crate) async fn splice<A, B>(a: &mut A, b: &mut B, idle: Duration) -> io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut tracked = Tracked::new(a, Arc::clone(&activity));
    let mut forth = Pump::new();
    let mut back = Pump::new();
    let copy = std::future::poll_fn(|cx| {
        let there = forth.poll(cx, &mut tracked, b);
        let here = back.poll(cx, b, &mut tracked);
        match (there, here) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => Poll::Ready(Err(e)),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    });
    tokio::pin!(copy);
    loop {
        let check = idle
            .saturating_sub(activity.quiet_for())
            .max(Duration::from_millis(100));
        tokio::select! {
            r = copy.as_mut() => return r,
            _ = tokio::time::sleep(check) => {
                if activity.quiet_for() >= idle {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle"));
                }
            }
        }
    }
}

/// Bytes read at a time in each direction (as much as tokio's own copy).
const PUMP_BUFFER: usize = 8 * 1024;

/// Bytes on their way from one side of a connection to the other.
struct Pump {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The reading side has closed; the writing side is then shut down.
    eof: bool,
    done: bool,
    /// Bytes just read wait for one turn of the scheduler before they are
    /// written: the other connections' reads of the same wake-up go first
    /// and the writes leave closer together, as from an event loop that
    /// reads everything ready before it writes. On a busy machine that costs
    /// the receiving processes less (see `scripts/bench-lb`).
    waited: bool,
}

impl Pump {
    fn new() -> Self {
        Pump {
            buf: vec![0; PUMP_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            done: false,
            waited: false,
        }
    }

    fn poll<R, W>(&mut self, cx: &mut Context<'_>, from: &mut R, to: &mut W) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if self.start < self.end {
                if !self.waited {
                    self.waited = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let n = ready!(Pin::new(&mut *to).poll_write(cx, &self.buf[self.start..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
                continue;
            }
            if self.eof {
                ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                self.done = true;
                continue;
            }
            let mut read = ReadBuf::new(&mut self.buf);
            ready!(Pin::new(&mut *from).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            (self.start, self.end, self.waited) = (0, n, false);
            self.eof = n == 0;
        }
    }
}

/// Accepts connections until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    counters: Arc<FrontendCounters>,
    backend: Arc<BackendState>,
    timeouts: Timeouts,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let what = format!("frontend {}", counters.name);
    while let Some((stream, peer, permit)) =
        crate::accept(&listener, &what, Some(&limit), &mut shutdown).await
    {
        tokio::spawn(connection(
            stream,
            peer,
            Arc::clone(&counters),
            Arc::clone(&backend),
            timeouts.clone(),
            permit,
        ));
    }
}

async fn connection(
    mut client: TcpStream,
    peer: SocketAddr,
    counters: Arc<FrontendCounters>,
    backend: Arc<BackendState>,
    timeouts: Timeouts,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let _ = client.set_nodelay(true);
    counters.opened();
    counters.request();
    let mut tried: Vec<Arc<Replica>> = Vec::new();
    let (mut upstream, replica) = loop {
        let hints = Hints {
            client: Some(peer.ip()),
            exclude: &tried,
            ..Hints::default()
        };
        let Some(replica) = backend.pick(&hints) else {
            backend
                .unavailable
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            counters.closed();
            return;
        };
        match pool::connect_tcp(replica.addr, timeouts.connect).await {
            Ok(stream) => break (stream, replica),
            Err(e) => {
                tracing::debug!(backend = %backend.config.name, endpoint = %replica.id, "{e}");
                replica.failed(&backend);
                tried.push(replica);
                if tried.len() >= MAX_CONNECT_TRIES {
                    counters.closed();
                    return;
                }
            }
        }
    };
    replica.succeeded();
    let guard = replica.begin(true);
    let mut closing = replica.closing();
    tokio::select! {
        r = splice(&mut client, &mut upstream, timeouts.tunnel) => {
            if let Err(e) = r {
                tracing::debug!(%peer, "TCP connection ended: {e}");
            }
        }
        _ = closing.wait_for(|c| *c) => {
            tracing::debug!(endpoint = %replica.id, "TCP connection closed: endpoint drained");
        }
    }
    drop(guard);
    counters.closed();
}
