//! Black-box tests of the balancer over real sockets on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb::{
    Backend, Balancer, Change, Config, Control, ControlClient, ControlError, Endpoint, Frontend,
    HealthCheck, Mode, Policy, Route, Snapshot, Stats,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use support::*;

#[tokio::test]
async fn round_robin_alternates_over_one_keep_alive_connection_and_forwards_client_facts() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lb = Balancer::start(simple_config(Backend::new("web")))
        .await
        .unwrap();
    let handle = lb.handle();
    add(&handle, "web", a.endpoint()).await;
    add(&handle, "web", b.endpoint()).await;
    let addr = lb.local_addr("web").unwrap();

    let mut conn = Http1::connect(addr).await;
    let mut answered = Vec::new();
    for i in 0..6 {
        let reply = conn
            .send(request(
                Method::GET,
                "shop.example",
                &format!("/item/{i}?q=1"),
                &[
                    ("connection", "x-secret"),
                    ("x-secret", "do not forward"),
                    ("keep-alive", "timeout=5"),
                    ("x-kept", "yes"),
                ],
                "",
            ))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        answered.push(reply.backend());
        let seen = reply.json();
        assert_eq!(seen["uri"], format!("/item/{i}?q=1"));
        assert_eq!(reply.seen("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(reply.seen("x-forwarded-proto"), ["http"]);
        assert_eq!(reply.seen("x-forwarded-host"), ["shop.example"]);
        assert_eq!(reply.seen("x-forwarded-port"), [addr.port().to_string()]);
        assert_eq!(reply.seen("host"), ["shop.example"]);
        assert_eq!(reply.seen("x-kept"), ["yes"]);
        for hop in ["x-secret", "keep-alive"] {
            assert!(reply.seen(hop).is_empty(), "{hop} was forwarded: {seen}");
        }
        assert!(
            !reply
                .seen("connection")
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("x-secret")),
            "the client's Connection header was forwarded: {seen}"
        );
    }
    assert!(
        answered.windows(2).all(|w| w[0] != w[1]),
        "not alternating: {answered:?}"
    );
    assert_eq!((a.hits(), b.hits()), (3, 3));

    let snapshot = handle.snapshot();
    let web = &snapshot.frontends[0];
    assert_eq!(
        (web.connections, web.requests),
        (1, 6),
        "all requests came over one client connection"
    );
    let requests: Vec<u64> = snapshot.backends[0]
        .endpoints
        .iter()
        .map(|e| e.requests)
        .collect();
    assert_eq!(requests, [3, 3]);
}

#[tokio::test]
async fn h2c_clients_are_answered_by_http1_backends() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lb = Balancer::start(simple_config(Backend::new("web")))
        .await
        .unwrap();
    let handle = lb.handle();
    add(&handle, "web", a.endpoint()).await;
    add(&handle, "web", b.endpoint()).await;
    let addr = lb.local_addr("web").unwrap();

    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let request = Request::builder()
                .uri(format!("http://h2.example/two/{i}"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.version(), http::Version::HTTP_2);
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }));
    }
    let mut names = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let (status, body) = within("h2 request", task).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body:?}");
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["version"], "HTTP/1.1");
        assert_eq!(seen["uri"], format!("/two/{i}"));
        assert_eq!(seen["headers"]["host"][0], "h2.example");
        assert_eq!(seen["headers"]["x-forwarded-host"][0], "h2.example");
        names.push(seen["name"].as_str().unwrap().to_string());
    }
    names.sort();
    assert_eq!(names, ["a", "a", "b", "b"]);
    let web = &handle.snapshot().frontends[0];
    assert_eq!((web.connections, web.requests), (1, 4));
}

#[tokio::test]
async fn requests_are_routed_by_host_and_path() {
    let api = TestBackend::start("api").await;
    let assets = TestBackend::start("static").await;
    let site = TestBackend::start("web").await;
    let config = Config {
        frontends: vec![
            Frontend {
                routes: vec![
                    Route {
                        host: Some("api.example.com".into()),
                        path: None,
                        backend: "api".into(),
                    },
                    Route {
                        host: None,
                        path: Some("/static/*".into()),
                        backend: "static".into(),
                    },
                ],
                ..http_frontend("main", Some("web"))
            },
            Frontend {
                routes: vec![Route {
                    host: Some("api.example.com".into()),
                    path: None,
                    backend: "api".into(),
                }],
                ..http_frontend("strict", None)
            },
        ],
        backends: vec![
            Backend::new("api"),
            Backend::new("static"),
            Backend::new("web"),
        ],
        ..Config::default()
    };
    let lb = Balancer::start(config).await.unwrap();
    let handle = lb.handle();
    add(&handle, "api", api.endpoint()).await;
    add(&handle, "static", assets.endpoint()).await;
    add(&handle, "web", site.endpoint()).await;
    let main = lb.local_addr("main").unwrap();
    let strict = lb.local_addr("strict").unwrap();

    let cases = [
        ("api.example.com", "/users/1", "api"),
        ("API.Example.com:8080", "/x", "api"),
        ("api.example.com", "/static/app.js", "api"),
        ("www.example.com", "/static/app.js", "static"),
        ("www.example.com", "/STATIC/deep/er/x.css", "static"),
        ("www.example.com", "/staticx", "web"),
        ("www.example.com", "/", "web"),
        ("api.example.com.evil", "/", "web"),
    ];
    for (host, path, expected) in cases {
        let reply = get(main, host, path).await;
        assert_eq!(reply.status, StatusCode::OK, "{host}{path}");
        assert_eq!(reply.backend(), expected, "{host}{path}");
        assert_eq!(reply.json()["uri"], path, "the path is passed on as is");
    }
    assert_eq!(
        (api.hits(), assets.hits(), site.hits()),
        (3, 2, 3),
        "each backend got exactly its requests"
    );

    let reply = get(strict, "api.example.com", "/").await;
    assert_eq!(reply.backend(), "api");
    let reply = get(strict, "other.example.com", "/").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.headers.get("x-backend").is_none());
    assert_eq!(
        (api.hits(), assets.hits(), site.hits()),
        (4, 2, 3),
        "the unmatched request reached no backend"
    );
}

#[tokio::test]
async fn an_upgraded_connection_tunnels_bytes_both_ways() {
    let a = TestBackend::start("a").await;
    let lb = Balancer::start(simple_config(Backend::new("web")))
        .await
        .unwrap();
    let handle = lb.handle();
    add(&handle, "web", a.endpoint()).await;
    let addr = lb.local_addr("web").unwrap();

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("\r\nupgrade: echo\r\n"), "{head}");
    assert!(lower.contains("\r\nx-backend: a\r\n"), "{head}");

    for message in ["hello", "through the tunnel", "and back again"] {
        within("echo", async {
            stream.write_all(message.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; message.len()];
            stream.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, message.as_bytes());
        })
        .await;
    }
    assert_eq!(
        endpoint_stats(&handle, "web", "a").unwrap().active,
        1,
        "an open tunnel counts as active"
    );
    drop(stream);
    wait_until("the tunnel to close", || {
        endpoint_stats(&handle, "web", "a").unwrap().active == 0
    })
    .await;
}

/// A balancer with one backend, `a`, behind frontend `web`.
async fn one_backend(config: Config) -> (TestBackend, Balancer, std::net::SocketAddr) {
    let a = TestBackend::start("a").await;
    let lb = Balancer::start(config).await.unwrap();
    add(&lb.handle(), "web", a.endpoint()).await;
    let addr = lb.local_addr("web").unwrap();
    (a, lb, addr)
}

#[tokio::test]
async fn request_heads_over_max_header_bytes_get_431() {
    let config = Config {
        max_header_bytes: 4096,
        ..simple_config(Backend::new("web"))
    };
    let (a, _lb, addr) = one_backend(config).await;
    let with_header = |size: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "b".repeat(size)
        )
    };
    assert_eq!(
        raw_status(addr, with_header(3000).as_bytes()).await,
        200,
        "a head under the limit passes"
    );
    assert_eq!(a.hits(), 1);
    assert_eq!(
        raw_status(addr, with_header(6000).as_bytes()).await,
        431,
        "a head over max_header_bytes (4096)"
    );
    assert_eq!(
        raw_status(addr, with_header(40_000).as_bytes()).await,
        431,
        "a head far over the limit"
    );
    assert_eq!(a.hits(), 1, "no oversized request reached the backend");
}

#[tokio::test]
async fn conflicting_content_lengths_get_400() {
    let (a, _lb, addr) = one_backend(simple_config(Backend::new("web"))).await;
    let cases: [(&str, &[u8]); 3] = [
        (
            "two different Content-Length headers",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "a Content-Length list of equal values",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
        ),
        (
            "a Content-Length list of different values",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
        ),
    ];
    for (what, raw) in cases {
        assert_eq!(raw_status(addr, raw).await, 400, "{what}");
    }
    assert_eq!(a.hits(), 0, "no refused request reached the backend");
}

const CL_AND_TE: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
const TE_AND_CL: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
const CL_TWICE: &[u8] =
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";

// hyper resolves these before the proxy sees the parsed headers (it drops
// Content-Length next to Transfer-Encoding, RFC 9112 6.3, and keeps one of
// equal Content-Lengths); the balancer's raw-head scanner refuses them.
#[tokio::test]
async fn content_length_with_transfer_encoding_gets_400() {
    let (a, _lb, addr) = one_backend(simple_config(Backend::new("web"))).await;
    assert_eq!(raw_status(addr, CL_AND_TE).await, 400, "CL then TE");
    assert_eq!(raw_status(addr, TE_AND_CL).await, 400, "TE then CL");
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn a_duplicated_content_length_gets_400() {
    let (a, _lb, addr) = one_backend(simple_config(Backend::new("web"))).await;
    assert_eq!(raw_status(addr, CL_TWICE).await, 400);
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn ambiguous_framing_reaches_a_backend_resolved_or_not_at_all() {
    let (_a, _lb, addr) = one_backend(simple_config(Backend::new("web"))).await;
    for (what, raw) in [
        ("CL then TE", CL_AND_TE),
        ("TE then CL", TE_AND_CL),
        ("CL twice", CL_TWICE),
    ] {
        let (status, body) = raw_exchange(addr, raw).await;
        if status == 400 {
            continue;
        }
        assert_eq!(status, 200, "{what}");
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let headers = &seen["headers"];
        let lengths = headers["content-length"].as_array().map_or(0, Vec::len);
        let encodings = headers["transfer-encoding"].as_array().map_or(0, Vec::len);
        assert!(
            lengths + encodings == 1,
            "{what}: the backend got an ambiguous request: {seen}"
        );
        assert_eq!(seen["body"], "hello", "{what}");
    }
}

#[tokio::test]
async fn a_refused_connection_is_retried_elsewhere_and_the_endpoint_ejected() {
    let live = TestBackend::start("live").await;
    let doomed = closing_listener().await;
    let dead = doomed.local_addr().unwrap();
    let backend = Backend {
        eject_for: Duration::from_secs(60),
        ..Backend::new("web")
    };
    let lb = Balancer::start(simple_config(backend)).await.unwrap();
    let handle = lb.handle();
    add(&handle, "web", Endpoint::new("dead", dead)).await;
    add(&handle, "web", live.endpoint()).await;
    // The endpoint was there when added; now its port refuses connections.
    drop(doomed);
    let addr = lb.local_addr("web").unwrap();

    for i in 0..20 {
        let reply = get(addr, "x", &format!("/{i}")).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "request {i}: {}",
            reply.text()
        );
        assert_eq!(reply.backend(), "live");
    }
    assert_eq!(live.hits(), 20);
    let stats = endpoint_stats(&handle, "web", "dead").unwrap();
    assert!(stats.errors > 0, "{stats:?}");
    assert_eq!(stats.state, "ejected", "{stats:?}");
    assert_eq!(endpoint_stats(&handle, "web", "live").unwrap().state, "up");
}

#[tokio::test]
async fn only_idempotent_requests_are_retried_after_the_endpoint_hangs_up() {
    let good = TestBackend::start("good").await;
    let bad = HangUpServer::start().await;
    let config = Config {
        frontends: vec![Frontend {
            routes: vec![Route {
                host: None,
                path: Some("/only-bad/*".into()),
                backend: "bad-only".into(),
            }],
            ..http_frontend("web", Some("web"))
        }],
        backends: vec![Backend::new("web"), Backend::new("bad-only")],
        ..Config::default()
    };
    let lb = Balancer::start(config).await.unwrap();
    let handle = lb.handle();
    add(&handle, "web", Endpoint::new("bad", bad.addr)).await;
    add(&handle, "web", good.endpoint()).await;
    add(&handle, "bad-only", Endpoint::new("bad", bad.addr)).await;
    let addr = lb.local_addr("web").unwrap();

    for i in 0..10 {
        let reply = get(addr, "x", &format!("/get/{i}")).await;
        assert_eq!(reply.status, StatusCode::OK, "GET {i}: {}", reply.text());
        assert_eq!(reply.backend(), "good");
    }
    assert!(
        bad.requests.load(SeqCst) >= 1,
        "the bad endpoint was tried (and the GETs retried)"
    );
    assert!(endpoint_stats(&handle, "web", "bad").unwrap().errors >= 1);

    let before = bad.requests.load(SeqCst);
    let reply = send(
        addr,
        request(Method::POST, "x", "/only-bad/post", &[], "a body"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(
        bad.requests.load(SeqCst),
        before + 1,
        "the POST was sent exactly once"
    );
}

#[tokio::test]
async fn draining_waits_for_requests_in_flight_and_sends_new_ones_elsewhere() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lb = Balancer::start(simple_config(Backend::new("web")))
        .await
        .unwrap();
    let handle = lb.handle();
    add(&handle, "web", a.endpoint()).await;
    let addr = lb.local_addr("web").unwrap();

    let slow = tokio::spawn(async move { get(addr, "x", "/slow").await });
    wait_until("the slow request to reach a", || {
        endpoint_stats(&handle, "web", "a").unwrap().active == 1
    })
    .await;
    add(&handle, "web", b.endpoint()).await;
    let drain = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.drain("web", "a").await })
    };
    wait_until("a to be draining", || {
        endpoint_stats(&handle, "web", "a").unwrap().state == "draining"
    })
    .await;
    for i in 0..5 {
        let reply = get(addr, "x", &format!("/during/{i}")).await;
        assert_eq!(reply.backend(), "b", "a request while draining");
    }
    let report = within("drain", drain).await.unwrap().unwrap().unwrap();
    assert!(
        a.slow_done.load(SeqCst),
        "drain returned before the request in flight was answered"
    );
    assert!(report.requests >= 1, "{report:?}");
    assert_eq!(report.tunnels, 0, "{report:?}");
    let reply = within("slow request", slow).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.backend(), "a");
    for i in 0..5 {
        let reply = get(addr, "x", &format!("/after/{i}")).await;
        assert_eq!(reply.backend(), "b", "a request after draining");
    }
    assert_eq!(a.hits(), 1);
    assert_eq!(b.hits(), 10);
    assert_eq!(
        endpoint_stats(&handle, "web", "a").unwrap().state,
        "draining",
        "a drained endpoint stays listed until removed"
    );

    handle
        .apply(&Change::Remove {
            backend: "web".into(),
            id: "a".into(),
            instance: None,
        })
        .unwrap();
    let ids: Vec<String> = handle.snapshot().backends[0]
        .endpoints
        .iter()
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(ids, ["b"]);
}

/// Connects through a TCP frontend; returns the echo server's name after
/// checking that bytes come back.
async fn tcp_round_trip(addr: std::net::SocketAddr, message: &str) -> String {
    within("TCP round trip", async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut stream = BufReader::new(stream);
        let mut name = String::new();
        stream.read_line(&mut name).await.unwrap();
        stream
            .get_mut()
            .write_all(message.as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; message.len()];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, message.as_bytes());
        name.trim_end().to_string()
    })
    .await
}

#[tokio::test]
async fn tcp_frontends_proxy_whole_connections() {
    let one = EchoServer::start("one").await;
    let two = EchoServer::start("two").await;
    let tcp = |name: &str, backend: &str| Frontend {
        mode: Mode::Tcp,
        ..http_frontend(name, Some(backend))
    };
    let config = Config {
        frontends: vec![tcp("rr", "echo"), tcp("hash", "echo-hash")],
        backends: vec![
            Backend::new("echo"),
            Backend {
                policy: Policy::SourceHash,
                ..Backend::new("echo-hash")
            },
        ],
        ..Config::default()
    };
    let lb = Balancer::start(config).await.unwrap();
    let handle = lb.handle();
    for backend in ["echo", "echo-hash"] {
        add(&handle, backend, one.endpoint()).await;
        add(&handle, backend, two.endpoint()).await;
    }

    let rr = lb.local_addr("rr").unwrap();
    let mut names = Vec::new();
    for i in 0..4 {
        names.push(tcp_round_trip(rr, &format!("ping {i}")).await);
    }
    assert!(
        names.windows(2).all(|w| w[0] != w[1]),
        "round robin alternates connections: {names:?}"
    );

    let hash = lb.local_addr("hash").unwrap();
    let first = tcp_round_trip(hash, "first").await;
    assert!(first == "one" || first == "two", "{first}");
    for i in 0..6 {
        assert_eq!(
            tcp_round_trip(hash, &format!("again {i}")).await,
            first,
            "the same client address goes to the same server"
        );
    }
    let snapshot = handle.snapshot();
    let hashed = snapshot
        .frontends
        .iter()
        .find(|f| f.name == "hash")
        .unwrap();
    assert_eq!(hashed.connections, 7);
}

#[tokio::test]
async fn active_health_checks_take_an_endpoint_out_and_bring_it_back() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    a.healthy.store(false, SeqCst);
    let backend = Backend {
        health_check: Some(HealthCheck {
            http_path: Some("/health".into()),
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 1,
            ..HealthCheck::default()
        }),
        ..Backend::new("web")
    };
    let lb = Balancer::start(simple_config(backend)).await.unwrap();
    let handle = lb.handle();
    add(&handle, "web", a.endpoint()).await;
    add(&handle, "web", b.endpoint()).await;
    let addr = lb.local_addr("web").unwrap();

    wait_until("a to be found unhealthy", || {
        endpoint_stats(&handle, "web", "a").unwrap().state == "unhealthy"
    })
    .await;
    assert_eq!(endpoint_stats(&handle, "web", "b").unwrap().state, "up");
    let a_before = a.hits();
    for i in 0..10 {
        let reply = get(addr, "x", &format!("/{i}")).await;
        assert_eq!(reply.backend(), "b", "request {i}");
    }
    assert_eq!(a.hits(), a_before, "the unhealthy endpoint got no traffic");

    a.healthy.store(true, SeqCst);
    wait_until("a to be healthy again", || {
        endpoint_stats(&handle, "web", "a").unwrap().state == "up"
    })
    .await;
    let mut to_a = 0;
    for i in 0..10 {
        if get(addr, "x", &format!("/back/{i}")).await.backend() == "a" {
            to_a += 1;
        }
    }
    assert!(
        (1..10).contains(&to_a),
        "a is back in rotation and shares it with b: {to_a} of 10"
    );
}

#[tokio::test]
async fn a_sticky_cookie_pins_a_client_to_its_endpoint() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let backend = Backend {
        sticky_cookie: Some("SRV".into()),
        ..Backend::new("web")
    };
    let lb = Balancer::start(simple_config(backend)).await.unwrap();
    let handle = lb.handle();
    add(&handle, "web", a.endpoint()).await;
    add(&handle, "web", b.endpoint()).await;
    let addr = lb.local_addr("web").unwrap();

    let first = get(addr, "x", "/").await;
    let pinned = first.backend();
    let set_cookie = first
        .headers
        .get(header::SET_COOKIE)
        .expect("the first answer sets the cookie")
        .to_str()
        .unwrap()
        .to_string();
    let cookie = set_cookie.split(';').next().unwrap().trim().to_string();
    assert!(cookie.starts_with("SRV="), "{set_cookie}");
    assert!(cookie.len() > "SRV=".len(), "{set_cookie}");
    assert_ne!(
        cookie,
        format!("SRV={pinned}"),
        "the cookie does not give the endpoint id away"
    );

    let with_cookie = format!("theme=dark; {cookie}");
    for i in 0..8 {
        let reply = send(
            addr,
            request(
                Method::GET,
                "x",
                &format!("/{i}"),
                &[("cookie", &with_cookie)],
                "",
            ),
        )
        .await;
        assert_eq!(reply.backend(), pinned, "request {i}");
        assert!(
            reply.headers.get(header::SET_COOKIE).is_none(),
            "the cookie is not set again"
        );
    }

    let mut without: Vec<String> = Vec::new();
    for i in 0..4 {
        without.push(get(addr, "x", &format!("/free/{i}")).await.backend());
    }
    assert!(
        without.iter().any(|n| *n != pinned),
        "without the cookie requests spread: {without:?}"
    );

    let reply = send(
        addr,
        request(Method::GET, "x", "/", &[("cookie", "SRV=bogus")], ""),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let fresh = reply
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        fresh.starts_with("SRV=") && !fresh.starts_with("SRV=bogus"),
        "{fresh}"
    );
}

#[tokio::test]
async fn the_stats_listener_serves_html_json_and_metrics_behind_basic_auth() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let config = Config {
        stats: Some(Stats {
            listen: any_port(),
            auth: Some("u:p".into()),
        }),
        ..simple_config(Backend::new("shopfront"))
    };
    let lb = Balancer::start(config).await.unwrap();
    let handle = lb.handle();
    add(&handle, "shopfront", a.endpoint()).await;
    add(&handle, "shopfront", b.endpoint()).await;
    let addr = lb.local_addr("web").unwrap();
    for i in 0..5 {
        assert_eq!(
            get(addr, "x", &format!("/{i}")).await.status,
            StatusCode::OK
        );
    }
    let stats = lb.stats_addr().unwrap();

    let reply = get(stats, "stats", "/").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let challenge = reply
        .headers
        .get(header::WWW_AUTHENTICATE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(challenge.starts_with("Basic"), "{challenge}");
    let wrong = send(
        stats,
        request(
            Method::GET,
            "stats",
            "/",
            &[("authorization", "Basic dTpx")],
            "",
        ),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "u:x is not u:p");

    // base64("u:p")
    let auth = [("authorization", "Basic dTpw")];
    let page = send(stats, request(Method::GET, "stats", "/", &auth, "")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().contains("shopfront"), "{}", page.text());

    let json = send(
        stats,
        request(Method::GET, "stats", "/stats.json", &auth, ""),
    )
    .await;
    assert_eq!(json.status, StatusCode::OK);
    let snapshot: Snapshot = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(snapshot.frontends[0].requests, 5);
    let backend = &snapshot.backends[0];
    assert_eq!(backend.name, "shopfront");
    let mut counts: Vec<(String, u64)> = backend
        .endpoints
        .iter()
        .map(|e| (e.id.clone(), e.requests))
        .collect();
    counts.sort();
    assert_eq!(counts, [("a".to_string(), 3), ("b".to_string(), 2)]);

    let metrics = send(stats, request(Method::GET, "stats", "/metrics", &auth, "")).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = metrics.text();
    assert!(
        text.contains("# TYPE rcompose_lb_endpoint_requests_total counter"),
        "{text}"
    );
    let line = format!(
        "rcompose_lb_endpoint_requests_total{{backend=\"shopfront\",endpoint=\"a\",address=\"{}\"}} 3\n",
        a.addr
    );
    assert!(text.contains(&line), "no {line:?} in {text}");
}

/// A control token long enough for a TCP control listener.
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn the_control_listener_applies_changes_and_drains() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let config = Config {
        control: Some(Control {
            socket: None,
            listen: Some(any_port()),
            token: Some(TOKEN.into()),
        }),
        ..simple_config(Backend::new("web"))
    };
    let lb = Balancer::start(config).await.unwrap();
    let handle = lb.handle();
    let addr = lb.local_addr("web").unwrap();
    let control = lb.control_addr().unwrap();
    let client = ControlClient::new(control, TOKEN, Duration::from_secs(5));

    assert_eq!(
        get(addr, "x", "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no endpoint yet"
    );
    client
        .apply(&[Change::Add {
            backend: "web".into(),
            endpoint: a.endpoint(),
        }])
        .await
        .unwrap();
    let reply = get(addr, "x", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.backend(), "a");

    let intruder = ControlClient::new(control, &TOKEN[1..], Duration::from_secs(5));
    let add_b = Change::Add {
        backend: "web".into(),
        endpoint: b.endpoint(),
    };
    match intruder.apply(std::slice::from_ref(&add_b)).await {
        Err(ControlError::Refused { status: 401, .. }) => {}
        other => panic!("a wrong token: {other:?}"),
    }
    assert!(endpoint_stats(&handle, "web", "b").is_none());

    let unknown = Change::Add {
        backend: "nope".into(),
        endpoint: Endpoint::new("c", b.addr),
    };
    match client.apply(&[add_b.clone(), unknown]).await {
        Err(ControlError::Refused { status, message }) => {
            assert_eq!(status, 404, "{message}");
            assert!(message.contains("nope"), "{message}");
        }
        other => panic!("an unknown backend: {other:?}"),
    }
    assert!(
        endpoint_stats(&handle, "web", "b").is_none(),
        "nothing was applied"
    );

    client.apply(&[add_b]).await.unwrap();
    let state = client.state().await.unwrap();
    let ids: Vec<&str> = state.backends[0]
        .endpoints
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b"]);

    let report = client.drain("web", "a").await.unwrap().unwrap();
    assert_eq!((report.requests, report.tunnels), (0, 0));
    assert_eq!(
        endpoint_stats(&handle, "web", "a").unwrap().state,
        "draining"
    );
    for i in 0..4 {
        assert_eq!(get(addr, "x", &format!("/{i}")).await.backend(), "b");
    }
    assert_eq!(client.drain("web", "zzz").await.unwrap(), None);
}

#[tokio::test]
async fn weights_split_round_robin_traffic_in_proportion() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lb = Balancer::start(simple_config(Backend::new("web")))
        .await
        .unwrap();
    let handle = lb.handle();
    add(
        &handle,
        "web",
        Endpoint {
            weight: 1,
            ..a.endpoint()
        },
    )
    .await;
    add(
        &handle,
        "web",
        Endpoint {
            weight: 3,
            ..b.endpoint()
        },
    )
    .await;
    let addr = lb.local_addr("web").unwrap();
    let mut conn = Http1::connect(addr).await;
    for i in 0..40 {
        assert_eq!(conn.get("x", &format!("/{i}")).await.status, StatusCode::OK);
    }
    assert_eq!((a.hits(), b.hits()), (10, 30));

    // A weight of zero takes an endpoint out of rotation.
    add(
        &handle,
        "web",
        Endpoint {
            weight: 0,
            ..a.endpoint()
        },
    )
    .await;
    for i in 0..8 {
        assert_eq!(conn.get("x", &format!("/zero/{i}")).await.backend(), "b");
    }
    assert_eq!(a.hits(), 10);
    assert_eq!(endpoint_stats(&handle, "web", "a").unwrap().weight, 0);
}

#[test]
fn a_default_config_has_the_same_limits_as_an_empty_json_one() {
    let from_json: Config = serde_json::from_str("{}").unwrap();
    assert_eq!(Config::default(), from_json);
    assert_eq!(Config::default().max_connections, 4096);
}

#[tokio::test]
async fn several_listeners_may_all_ask_for_port_zero() {
    let config = Config {
        frontends: vec![http_frontend("one", None), http_frontend("two", None)],
        stats: Some(Stats {
            listen: any_port(),
            auth: None,
        }),
        control: Some(Control {
            socket: None,
            listen: Some(any_port()),
            token: Some(TOKEN.into()),
        }),
        ..Config::default()
    };
    let lb = Balancer::start(config).await.unwrap();
    let mut ports = vec![
        lb.local_addr("one").unwrap().port(),
        lb.local_addr("two").unwrap().port(),
        lb.stats_addr().unwrap().port(),
        lb.control_addr().unwrap().port(),
    ];
    assert!(ports.iter().all(|p| *p != 0), "{ports:?}");
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4);
}

#[tokio::test]
async fn an_idle_client_connection_does_not_hold_up_others() {
    let (_a, _lb, addr) = one_backend(simple_config(Backend::new("web"))).await;
    let mut first = Http1::connect(addr).await;
    assert_eq!(first.get("x", "/").await.status, StatusCode::OK);
    // `first` stays open and idle while others come and go.
    for i in 0..3 {
        assert_eq!(
            get(addr, "x", &format!("/{i}")).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(first.get("x", "/again").await.status, StatusCode::OK);
}

fn framings(path: &str) -> (Vec<Vec<u8>>, bool) {
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
    match path {
        "/chunked" => (
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhel"
                    .to_vec(),
                b"lo\r\n6;x=y\r\n world\r\n0\r\nX-Sum: 11\r\n".to_vec(),
                b"\r\n".to_vec(),
            ],
            false,
        ),
        "/big" => {
            let body: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            (vec![head.into_bytes(), body], false)
        }
        "/early" => (
            vec![
                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n".to_vec(),
                ok,
            ],
            false,
        ),
        "/until-close" => (
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ".to_vec(),
                b"the end".to_vec(),
            ],
            true,
        ),
        // Answers, then closes without saying so.
        "/bye" => (vec![ok], true),
        _ => (vec![ok], false),
    }
}

#[tokio::test]
async fn responses_of_every_framing_are_relayed_whole_on_one_connection() {
    let server = ScriptedServer::start(framings).await;
    let lb = Balancer::start(simple_config(Backend::new("web")))
        .await
        .unwrap();
    add(&lb.handle(), "web", Endpoint::new("s", server.addr)).await;
    let mut client = TcpStream::connect(lb.local_addr("web").unwrap())
        .await
        .unwrap();

    client
        .write_all(b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    let wanted = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n";
    let mut body = vec![0u8; wanted.len()];
    within("chunked body", client.read_exact(&mut body))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(wanted)
    );

    // Two requests in one write, answered in order, one of them large.
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /early HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_sized(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, framings("/big").0[1]);
    let early = read_head(&mut client).await;
    assert!(early.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{early}");
    assert!(early.contains("Link: </s.css>"), "{early}");
    let (head, body) = read_sized(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok");
    assert_eq!(
        server.connections.load(SeqCst),
        1,
        "one endpoint connection served all, kept alive"
    );

    // A body that ends when the endpoint closes: the client connection
    // closes after it, and says so.
    client
        .write_all(b"GET /until-close HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut client).await;
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let mut rest = Vec::new();
    within("body until close", client.read_to_end(&mut rest))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rest), "until the end");
}

#[tokio::test]
async fn an_endpoint_closing_its_idle_connections_costs_no_request() {
    let server = ScriptedServer::start(framings).await;
    let lb = Balancer::start(simple_config(Backend::new("web")))
        .await
        .unwrap();
    add(&lb.handle(), "web", Endpoint::new("s", server.addr)).await;
    let mut client = Http1::connect(lb.local_addr("web").unwrap()).await;
    for i in 0..5 {
        let reply = client.get("x", "/bye").await;
        assert_eq!(reply.status, StatusCode::OK, "GET {i}: {}", reply.text());
        let reply = client
            .send(request(Method::POST, "x", "/bye", &[], "form=1"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "POST {i}: {}", reply.text());
    }
    assert_eq!(
        server.requests.load(SeqCst),
        10,
        "each request reached the endpoint once"
    );
}

#[tokio::test]
async fn requests_the_fast_path_leaves_are_served_on_the_same_connection() {
    let backend = TestBackend::start("a").await;
    let lb = Balancer::start(simple_config(Backend::new("web")))
        .await
        .unwrap();
    add(&lb.handle(), "web", backend.endpoint()).await;
    let addr = lb.local_addr("web").unwrap();
    let mut client = TcpStream::connect(addr).await.unwrap();
    let body_of = |body: &[u8]| -> serde_json::Value { serde_json::from_slice(body).unwrap() };

    client
        .write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_sized(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body_of(&body)["uri"], "/one");
    // A chunked request body is beyond the fast path: the rest of the
    // connection goes to the general one, which still serves it.
    client
        .write_all(
            b"POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, body) = read_sized(&mut client).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body_of(&body)["body"], "abc");
    client
        .write_all(b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (_, body) = read_sized(&mut client).await;
    assert_eq!(body_of(&body)["uri"], "/three");

    // HTTP/1.0, and a body too large to hold.
    let (status, body) = raw_exchange(addr, b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 200);
    assert_eq!(body_of(&body)["uri"], "/old");
    let large = "b".repeat(200_000);
    let reply = send(addr, request(Method::PUT, "x", "/large", &[], &large)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json()["body"].as_str().map(str::len),
        Some(large.len())
    );
}

#[tokio::test]
async fn a_framing_header_named_in_connection_does_not_split_the_request() {
    let backend = TestBackend::start("a").await;
    let lb = Balancer::start(simple_config(Backend::new("web")))
        .await
        .unwrap();
    add(&lb.handle(), "web", backend.endpoint()).await;
    let smuggled = "GET /admin HTTP/1.1\r\nHost: internal\r\n\r\n";
    let raw = format!(
        "POST /form HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let (status, body) = raw_exchange(lb.local_addr("web").unwrap(), raw.as_bytes()).await;
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["uri"], "/form");
    assert_eq!(seen["body"], smuggled, "the body stayed a body");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(backend.hits(), 1, "one request reached the backend");
}
