//! Hostile clients against the balancer: slow readers and stalled bodies on
//! the general (hyper) path, client faults that must not eject endpoints,
//! forged forwarded headers, bad Host headers and header-count limits.
//! Everything runs on loopback against the test's own servers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use lb::{Backend, Config, Timeouts};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A script whose `/big` answer is far larger than any socket buffer, and
/// whose `/stall` answer stops after part of its body.
fn big_or_stalled(path: &str) -> (Vec<Vec<u8>>, bool) {
    match path {
        "/big" => {
            let size = 64 << 20;
            let mut answer =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n").into_bytes();
            answer.resize(answer.len() + size, b'x');
            (vec![answer], false)
        }
        "/stall" => (
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec()],
            false,
        ),
        _ => (
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()],
            false,
        ),
    }
}

fn short_timeouts() -> Timeouts {
    Timeouts {
        idle: Duration::from_millis(800),
        server: Duration::from_millis(800),
        client_header: Duration::from_millis(800),
        ..Timeouts::default()
    }
}

/// A balancer with short timeouts and `max_connections`, in front of a
/// [`big_or_stalled`] endpoint.
async fn behind_short_timeouts(max_connections: usize) -> (ScriptedServer, lb::Balancer) {
    let server = ScriptedServer::start(big_or_stalled).await;
    let balancer = lb::Balancer::start(Config {
        max_connections,
        timeouts: short_timeouts(),
        ..simple_config(Backend::new("web"))
    })
    .await
    .unwrap();
    add(
        &balancer.handle(),
        "web",
        lb::Endpoint::new("a", server.addr),
    )
    .await;
    (server, balancer)
}

#[tokio::test]
async fn slow_readers_on_the_general_path_cannot_hold_every_connection_slot() {
    let (_server, balancer) = behind_short_timeouts(2).await;
    let addr = balancer.local_addr("web").unwrap();
    // HTTP/1.0 takes the general path; these clients never read a byte.
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.0\r\n\r\n").await.unwrap();
        hogs.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Both slots are taken; the client timeout must free them.
    let started = std::time::Instant::now();
    let (status, body) = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));
    eprintln!(
        "a new client was served {:.0} ms after two slow readers took every slot (client timeout 800 ms)",
        started.elapsed().as_secs_f64() * 1000.0
    );
    drop(hogs);
}

#[tokio::test]
async fn an_endpoint_stalling_mid_body_is_cut_off_after_the_server_timeout() {
    let (_server, balancer) = behind_short_timeouts(4096).await;
    let addr = balancer.local_addr("web").unwrap();
    for request in [
        &b"GET /stall HTTP/1.0\r\n\r\n"[..],
        b"GET /stall HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut got = Vec::new();
        // The connection must end (EOF or reset) rather than hang.
        let _ = within("the stalled response to end", s.read_to_end(&mut got)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.") && text[8..].starts_with(" 200"),
            "{text:?}"
        );
        assert!(!text.ends_with(&"x".repeat(90)), "{text:?}");
    }
}

#[tokio::test]
async fn client_faults_do_not_eject_healthy_endpoints() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let balancer = lb::Balancer::start(Config {
        timeouts: Timeouts {
            idle: Duration::from_millis(300),
            ..Timeouts::default()
        },
        ..simple_config(Backend::new("web"))
    })
    .await
    .unwrap();
    let handle = balancer.handle();
    add(&handle, "web", a.endpoint()).await;
    add(&handle, "web", b.endpoint()).await;
    let addr = balancer.local_addr("web").unwrap();
    // Malformed chunked bodies: the chunk size is not hexadecimal.
    for _ in 0..6 {
        let status = raw_status(
            addr,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        )
        .await;
        assert!(
            status == 400 || status == 0,
            "a malformed body got {status}"
        );
    }
    // Uploads that stall past the client timeout.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nsome")
            .await
            .unwrap();
        stalled.push(s);
    }
    for mut s in stalled {
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 408"), "{head:?}");
    }
    for id in [a.endpoint().id, b.endpoint().id] {
        let state = endpoint_stats(&handle, "web", &id).map(|e| e.state);
        assert_eq!(state.as_deref(), Some("up"), "endpoint {id}");
    }
    assert_eq!(get(addr, "a", "/").await.status, 200);
}

#[tokio::test]
async fn forwarded_headers_cannot_be_forged_on_either_path() {
    let backend = TestBackend::start("a").await;
    let balancer = lb::Balancer::start(simple_config(Backend::new("web")))
        .await
        .unwrap();
    add(&balancer.handle(), "web", backend.endpoint()).await;
    let addr = balancer.local_addr("web").unwrap();
    let port = addr.port().to_string();
    let forged = "X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\
                  X-Forwarded-Host: evil.test\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 1\r\n";
    // The fast path (HTTP/1.1) and the general one (HTTP/1.0).
    for version in ["1.1", "1.0"] {
        let raw =
            format!("GET / HTTP/{version}\r\nHost: good.test\r\n{forged}Connection: close\r\n\r\n");
        let (status, body) = raw_exchange(addr, raw.as_bytes()).await;
        assert_eq!(status, 200, "HTTP/{version}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let seen = |name: &str| json["headers"][name].clone();
        assert_eq!(
            seen("x-forwarded-for"),
            serde_json::json!(["1.1.1.1, 2.2.2.2, 127.0.0.1"]),
            "HTTP/{version}"
        );
        assert_eq!(seen("x-forwarded-host"), serde_json::json!(["good.test"]));
        assert_eq!(seen("x-forwarded-proto"), serde_json::json!(["http"]));
        assert_eq!(seen("x-forwarded-port"), serde_json::json!([port.clone()]));
    }
}

#[tokio::test]
async fn a_trusted_proxy_keeps_its_forwarded_headers() {
    let backend = TestBackend::start("a").await;
    let balancer = lb::Balancer::start(Config {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..simple_config(Backend::new("web"))
    })
    .await
    .unwrap();
    add(&balancer.handle(), "web", backend.endpoint()).await;
    let addr = balancer.local_addr("web").unwrap();
    let raw = "GET / HTTP/1.1\r\nHost: inner\r\nX-Forwarded-Host: outer.test\r\n\
               X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\nConnection: close\r\n\r\n";
    let (_, body) = raw_exchange(addr, raw.as_bytes()).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["headers"]["x-forwarded-host"],
        serde_json::json!(["outer.test"])
    );
    assert_eq!(
        json["headers"]["x-forwarded-proto"],
        serde_json::json!(["https"])
    );
    assert_eq!(
        json["headers"]["x-forwarded-port"],
        serde_json::json!(["443"])
    );
}

#[tokio::test]
async fn host_headers_are_checked_as_rfc_9112_asks() {
    let backend = TestBackend::start("a").await;
    let balancer = lb::Balancer::start(simple_config(Backend::new("web")))
        .await
        .unwrap();
    add(&balancer.handle(), "web", backend.endpoint()).await;
    let addr = balancer.local_addr("web").unwrap();
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
    ] {
        let status = raw_status(addr, raw).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(raw));
    }
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Connection: host does not take the Host header away.
    let (status, body) = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: kept.test\r\nConnection: host, close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["headers"]["host"], serde_json::json!(["kept.test"]));
    // HTTP/1.0 may leave it out; the endpoint, asked in HTTP/1.1, gets
    // one (its own address, as nginx sends by default): Apache, for one,
    // refuses an HTTP/1.1 request without.
    let (status, body) = raw_exchange(addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        json["headers"]["host"],
        serde_json::json!([backend.endpoint().addr.to_string()])
    );
}

#[tokio::test]
async fn the_header_limit_is_the_same_on_every_path() {
    let backend = TestBackend::start("a").await;
    let balancer = lb::Balancer::start(Config {
        max_header_bytes: 64 * 1024,
        ..simple_config(Backend::new("web"))
    })
    .await
    .unwrap();
    add(&balancer.handle(), "web", backend.endpoint()).await;
    let addr = balancer.local_addr("web").unwrap();
    let filler = |n: usize| (0..n).map(|i| format!("X-F{i}: v\r\n")).collect::<String>();
    // Between 64 and 100 headers, ambiguous framing is still caught.
    let raw = format!(
        "POST / HTTP/1.1\r\nHost: a\r\n{}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        filler(80)
    );
    assert_eq!(raw_status(addr, raw.as_bytes()).await, 400);
    // Over the limit: 431.
    let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", filler(120));
    assert_eq!(raw_status(addr, raw.as_bytes()).await, 431);
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_control_socket_needs_no_network_and_a_tcp_listener_a_real_token() {
    let a = TestBackend::start("a").await;
    let dir = std::env::temp_dir().join(format!("lb-control-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("control.sock");
    // A stale socket from an earlier balancer is replaced.
    std::fs::write(&socket, b"stale").unwrap();
    let balancer = lb::Balancer::start(Config {
        control: Some(lb::Control {
            socket: Some(socket.clone()),
            listen: None,
            token: None,
        }),
        ..simple_config(Backend::new("web"))
    })
    .await
    .unwrap();
    assert_eq!(balancer.control_addr(), None, "nothing listens on TCP");
    let client = lb::ControlClient::unix(&socket, Duration::from_secs(5));
    client
        .apply(&[lb::Change::Add {
            backend: "web".into(),
            endpoint: a.endpoint(),
        }])
        .await
        .unwrap();
    let addr = balancer.local_addr("web").unwrap();
    assert_eq!(get(addr, "x", "/").await.status, 200);
    balancer.shutdown().await;
    assert!(!socket.exists(), "the socket goes with the balancer");
    let _ = std::fs::remove_dir_all(&dir);

    // On TCP, a short or missing token is refused before anything listens.
    for token in [None, Some("short")] {
        let refused = lb::Balancer::start(Config {
            control: Some(lb::Control {
                socket: None,
                listen: Some(any_port()),
                token: token.map(String::from),
            }),
            ..simple_config(Backend::new("web"))
        })
        .await;
        assert!(refused.is_err(), "token {token:?}");
    }
}

#[tokio::test]
async fn an_endpoint_that_stops_reading_an_upload_gets_the_server_timeout() {
    // Accepts and never reads.
    let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
    let endpoint_addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
        }
    });
    let balancer = lb::Balancer::start(Config {
        timeouts: short_timeouts(),
        ..simple_config(Backend::new("web"))
    })
    .await
    .unwrap();
    add(
        &balancer.handle(),
        "web",
        lb::Endpoint::new("a", endpoint_addr),
    )
    .await;
    let addr = balancer.local_addr("web").unwrap();
    let size = 16 << 20;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let upload = tokio::spawn(async move {
        let head = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n");
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(&vec![b'x'; size]).await;
        writer
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    within("an answer while the endpoint does not read", async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = reader.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    upload.abort();
    held.abort();
}
