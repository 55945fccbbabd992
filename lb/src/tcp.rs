//! The L4 frontend: TCP connections proxied whole to an endpoint.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
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
    let copy = tokio::io::copy_bidirectional(&mut tracked, b);
    tokio::pin!(copy);
    loop {
        let check = idle
            .saturating_sub(activity.quiet_for())
            .max(Duration::from_millis(100));
        tokio::select! {
            r = copy.as_mut() => return r.map(|_| ()),
            _ = tokio::time::sleep(check) => {
                if activity.quiet_for() >= idle {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle"));
                }
            }
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
