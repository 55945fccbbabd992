//! The statistics listener: an HTML page for people, JSON for programs and
//! Prometheus text for scrapers, behind optional basic authentication.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::backend::BackendStats;
use crate::config::Mode;
use crate::Handle;

/// A point-in-time view of a balancer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Its listeners.
    pub frontends: Vec<FrontendStats>,
    /// Its backends and their endpoints.
    pub backends: Vec<BackendStats>,
}

/// A point-in-time view of one listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrontendStats {
    /// Its name.
    pub name: String,
    /// The address it is bound to.
    pub listen: SocketAddr,
    /// HTTP or TCP.
    pub mode: Mode,
    /// Client connections open now.
    pub open_connections: usize,
    /// Client connections accepted so far.
    pub connections: u64,
    /// Requests (for TCP: connections) received so far.
    pub requests: u64,
}

pub(crate) async fn serve(
    listener: TcpListener,
    handle: Handle,
    auth: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    let expected = auth.map(|a| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(a)
        )
    });
    let expected = Arc::new(expected);
    while let Some((stream, _, _)) =
        crate::accept(&listener, "the stats listener", None, &mut shutdown).await
    {
        let handle = handle.clone();
        let expected = Arc::clone(&expected);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = answer(&request, &handle, expected.as_deref());
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(
    request: &Request<Incoming>,
    handle: &Handle,
    expected: Option<&str>,
) -> Response<Full<Bytes>> {
    if let Some(expected) = expected {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if !given.is_some_and(|g| crate::same_secret(g, expected.as_bytes())) {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "authentication required\n".into(),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"rcompose balancer\""),
            );
            return r;
        }
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    let snapshot = handle.snapshot();
    match request.uri().path() {
        "/" => text(StatusCode::OK, "text/html; charset=utf-8", html(&snapshot)),
        "/stats.json" => text(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&snapshot).unwrap_or_default(),
        ),
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            prometheus(&snapshot),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /, /stats.json or /metrics\n".into(),
        ),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("≤ {v:.3} ms"))
}

/// The page people read; it refreshes itself every two seconds.
pub(crate) fn html(s: &Snapshot) -> String {
    let mut page = String::from(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"refresh\" content=\"2\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>rcompose balancer</title><style>",
        "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}",
        "table{border-collapse:collapse;margin:.5em 0 1.5em}",
        "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}",
        "th{background:#eee}td.l,th.l{text-align:left}",
        ".up{background:#c8f0c8}.draining{background:#f6e3a1}",
        ".unhealthy,.ejected{background:#f4b8b8}",
        "</style></head><body>\n<h1>rcompose balancer</h1>\n<h2>Frontends</h2>\n",
        "<table><tr><th class=\"l\">name</th><th class=\"l\">listen</th><th class=\"l\">mode</th>",
        "<th>open</th><th>connections</th><th>requests</th></tr>\n",
    ));
    for f in &s.frontends {
        let _ = writeln!(
            page,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape_html(&f.name),
            f.listen,
            if f.mode == Mode::Http { "http" } else { "tcp" },
            f.open_connections,
            f.connections,
            f.requests
        );
    }
    page.push_str("</table>\n");
    for b in &s.backends {
        let _ = writeln!(
            page,
            "<h2>Backend {}</h2>\n<p>policy {:?}, {} endpoint(s), {} request(s) found no endpoint</p>",
            escape_html(&b.name),
            b.policy,
            b.endpoints.len(),
            b.unavailable
        );
        page.push_str(concat!(
            "<table><tr><th class=\"l\">endpoint</th><th class=\"l\">address</th><th class=\"l\">state</th>",
            "<th>weight</th><th>active</th><th>requests</th><th>errors</th>",
            "<th>latency p50</th><th>latency p99</th></tr>\n"
        ));
        for e in &b.endpoints {
            let short: String = e.id.chars().take(12).collect();
            let _ = writeln!(
                page,
                "<tr><td class=\"l\" title=\"{}\">{}</td><td class=\"l\">{}</td><td class=\"l {}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape_html(&e.id),
                escape_html(&short),
                e.addr,
                escape_html(&e.state),
                escape_html(&e.state),
                e.weight,
                e.active,
                e.requests,
                e.errors,
                ms(e.latency_p50_ms),
                ms(e.latency_p99_ms)
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str("<p><a href=\"/stats.json\">JSON</a> · <a href=\"/metrics\">Prometheus</a></p>\n</body></html>\n");
    page
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition format.
pub(crate) fn prometheus(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let fe = |f: &FrontendStats| format!("frontend=\"{}\"", label(&f.name));
    family(
        "rcompose_lb_frontend_connections_open",
        "gauge",
        "Client connections open now.",
        s.frontends
            .iter()
            .map(|f| (fe(f), f.open_connections.to_string()))
            .collect(),
    );
    family(
        "rcompose_lb_frontend_connections_total",
        "counter",
        "Client connections accepted.",
        s.frontends
            .iter()
            .map(|f| (fe(f), f.connections.to_string()))
            .collect(),
    );
    family(
        "rcompose_lb_frontend_requests_total",
        "counter",
        "Requests (TCP: connections) received.",
        s.frontends
            .iter()
            .map(|f| (fe(f), f.requests.to_string()))
            .collect(),
    );
    family(
        "rcompose_lb_backend_unavailable_total",
        "counter",
        "Requests or connections that found no endpoint.",
        s.backends
            .iter()
            .map(|b| {
                (
                    format!("backend=\"{}\"", label(&b.name)),
                    b.unavailable.to_string(),
                )
            })
            .collect(),
    );
    let endpoints: Vec<_> = s
        .backends
        .iter()
        .flat_map(|b| b.endpoints.iter().map(move |e| (b, e)))
        .collect();
    let el = |b: &BackendStats, e: &crate::backend::EndpointStats| {
        format!(
            "backend=\"{}\",endpoint=\"{}\",address=\"{}\"",
            label(&b.name),
            label(&e.id),
            e.addr
        )
    };
    family(
        "rcompose_lb_endpoint_up",
        "gauge",
        "1 when the endpoint is in rotation.",
        endpoints
            .iter()
            .map(|(b, e)| (el(b, e), u8::from(e.state == "up").to_string()))
            .collect(),
    );
    family(
        "rcompose_lb_endpoint_active",
        "gauge",
        "Requests in flight and open tunnels.",
        endpoints
            .iter()
            .map(|(b, e)| (el(b, e), e.active.to_string()))
            .collect(),
    );
    family(
        "rcompose_lb_endpoint_requests_total",
        "counter",
        "Requests and connections sent to the endpoint.",
        endpoints
            .iter()
            .map(|(b, e)| (el(b, e), e.requests.to_string()))
            .collect(),
    );
    family(
        "rcompose_lb_endpoint_errors_total",
        "counter",
        "Requests and connections to the endpoint that failed.",
        endpoints
            .iter()
            .map(|(b, e)| (el(b, e), e.errors.to_string()))
            .collect(),
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::backend::EndpointStats;
    use crate::config::Policy;

    fn snapshot() -> Snapshot {
        Snapshot {
            frontends: vec![FrontendStats {
                name: "web".into(),
                listen: "127.0.0.1:80".parse().unwrap(),
                mode: Mode::Http,
                open_connections: 1,
                connections: 2,
                requests: 3,
            }],
            backends: vec![BackendStats {
                name: "php<x>".into(),
                policy: Policy::RoundRobin,
                unavailable: 4,
                endpoints: vec![EndpointStats {
                    id: "abc\"def".into(),
                    addr: "10.0.0.2:80".parse().unwrap(),
                    instance: None,
                    state: "up".into(),
                    weight: 1,
                    active: 0,
                    requests: 5,
                    errors: 1,
                    latency_p50_ms: Some(0.5),
                    latency_p99_ms: None,
                }],
            }],
        }
    }

    #[test]
    fn the_page_escapes_names() {
        let page = html(&snapshot());
        assert!(page.contains("Backend php&lt;x&gt;"), "{page}");
        assert!(page.contains("title=\"abc&quot;def\""), "{page}");
        assert!(page.contains("≤ 0.500 ms"));
    }

    #[test]
    fn metrics_follow_the_exposition_format() {
        let text = prometheus(&snapshot());
        assert!(text.contains("# TYPE rcompose_lb_endpoint_requests_total counter\n"));
        assert!(text.contains(
            "rcompose_lb_endpoint_requests_total{backend=\"php<x>\",endpoint=\"abc\\\"def\",address=\"10.0.0.2:80\"} 5\n"
        ));
        assert!(text.contains("rcompose_lb_backend_unavailable_total{backend=\"php<x>\"} 4\n"));
        assert!(text.contains("rcompose_lb_frontend_requests_total{frontend=\"web\"} 3\n"));
    }
}
