//! Active health checks: a TCP connection or an HTTP request to every
//! endpoint of a backend, at an interval.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request};
use http_body_util::{Either, Empty};
use tokio::sync::watch;

use crate::backend::{BackendState, Replica};
use crate::config::HealthCheck;
use crate::pool;

/// Checks a backend's endpoints until `shutdown` turns true.
pub(crate) async fn run(
    backend: Arc<BackendState>,
    check: HealthCheck,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(check.interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        for replica in backend.replicas().iter() {
            if replica.is_draining() {
                continue;
            }
            let replica = Arc::clone(replica);
            let backend = Arc::clone(&backend);
            let check = check.clone();
            tokio::spawn(async move {
                let passed = probe(&replica, &check).await;
                if replica.is_gone() {
                    return;
                }
                if let Some(healthy) = replica.checked(passed, check.rise, check.fall) {
                    let state = if healthy {
                        "passes its checks again"
                    } else {
                        "fails its checks"
                    };
                    tracing::warn!(backend = %backend.config.name, endpoint = %replica.id, "endpoint {state}");
                }
            });
        }
    }
}

/// One check of one endpoint.
async fn probe(replica: &Replica, check: &HealthCheck) -> bool {
    let work = async {
        let Some(path) = &check.http_path else {
            return pool::connect_tcp(replica.addr, check.timeout).await.is_ok();
        };
        let Ok(mut sender) = pool::connect(replica.addr, check.timeout).await else {
            return false;
        };
        let mut request = Request::new(Either::Right(Empty::new()));
        let Ok(uri) = path.parse() else {
            return false;
        };
        *request.uri_mut() = uri;
        if let Ok(host) = HeaderValue::from_str(&replica.addr.to_string()) {
            request.headers_mut().insert(header::HOST, host);
        }
        request.headers_mut().insert(
            header::USER_AGENT,
            HeaderValue::from_static("rcompose-health-check"),
        );
        match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                match check.expect_status {
                    Some(expected) => status == expected,
                    None => (200..400).contains(&status),
                }
            }
            Err(_) => false,
        }
    };
    tokio::time::timeout(check.timeout, work)
        .await
        .unwrap_or(false)
}
