//! TLS listeners: certificates by SNI, ALPN, `X-Forwarded-Proto: https`,
//! session resumption, and redirects to https. Loopback only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use lb::{Backend, Certificate, Config, Tls};
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A self-signed chain and key for `name`, as one PEM text.
fn self_signed(name: &str) -> (String, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let pem = format!("{}{}", made.cert.pem(), made.signing_key.serialize_pem());
    (pem, made.cert.der().clone())
}

fn client_config(trusted: &[CertificateDer<'static>], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in trusted {
        roots.add(c.clone()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn tls_balancer(pems: &[String]) -> (lb::Balancer, TestBackend) {
    let backend = TestBackend::start("a").await;
    let mut config = simple_config(Backend::new("web"));
    config.frontends[0].tls = Some(Tls {
        certificates: pems
            .iter()
            .map(|p| Certificate {
                pem: Some(p.clone()),
                ..Certificate::default()
            })
            .collect(),
        directories: Vec::new(),
    });
    let balancer = lb::Balancer::start(config).await.unwrap();
    add(&balancer.handle(), "web", backend.endpoint()).await;
    (balancer, backend)
}

#[tokio::test]
async fn a_tls_listener_picks_the_certificate_by_name_and_says_https() {
    let (a_pem, a_der) = self_signed("a.test");
    let (b_pem, b_der) = self_signed("b.test");
    let (balancer, _backend) = tls_balancer(&[a_pem, b_pem]).await;
    let addr = balancer.local_addr("web").unwrap();
    let trusted = [a_der.clone(), b_der.clone()];
    for (name, want) in [("a.test", &a_der), ("b.test", &b_der)] {
        let connector = tokio_rustls::TlsConnector::from(client_config(&trusted, &[b"http/1.1"]));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let server = ServerName::try_from(name.to_string()).unwrap();
        let mut tls = within("handshake", connector.connect(server, tcp))
            .await
            .unwrap();
        let (_, session) = tls.get_ref();
        assert_eq!(session.peer_certificates().unwrap()[0], *want, "{name}");
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
        tls.write_all(format!("GET / HTTP/1.1\r\nHost: {name}\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = within("answer", tls.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains(r#""x-forwarded-proto":["https"]"#), "{text}");
    }
}

#[tokio::test]
async fn h2_is_offered_by_alpn_and_sessions_resume() {
    let (pem, der) = self_signed("a.test");
    let (balancer, _backend) = tls_balancer(&[pem]).await;
    let addr = balancer.local_addr("web").unwrap();
    let config = client_config(&[der], &[b"h2", b"http/1.1"]);
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&config));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = within(
            "handshake",
            connector.connect(ServerName::try_from("a.test").unwrap(), tcp),
        )
        .await
        .unwrap();
        let (_, session) = tls.get_ref();
        assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
        kinds.push(session.handshake_kind());
        // An h2 request through hyper's client over the TLS stream.
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut request = http::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
        *request.uri_mut() = "https://a.test/".parse().unwrap();
        let response = within("h2 answer", sender.send_request(request))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        kinds,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}

#[tokio::test]
async fn a_bad_certificate_is_refused_at_start_with_its_name() {
    let mut config = simple_config(Backend::new("web"));
    config.frontends[0].tls = Some(Tls {
        certificates: vec![Certificate {
            cert: Some("/nonexistent/site.pem".into()),
            ..Certificate::default()
        }],
        directories: Vec::new(),
    });
    let err = lb::Balancer::start(config).await.err().unwrap().to_string();
    assert!(err.contains("/nonexistent/site.pem"), "{err}");
    let (pem, _) = self_signed("a.test");
    let (_, other) = self_signed("b.test");
    let mut config = simple_config(Backend::new("web"));
    let cert_only: String = pem
        .lines()
        .take_while(|l| !l.contains("PRIVATE"))
        .collect::<Vec<_>>()
        .join("\n");
    let _ = other;
    config.frontends[0].tls = Some(Tls {
        certificates: vec![Certificate {
            pem: Some(cert_only),
            ..Certificate::default()
        }],
        directories: Vec::new(),
    });
    let err = lb::Balancer::start(config).await.err().unwrap().to_string();
    assert!(err.contains("private key"), "{err}");
}

#[tokio::test]
async fn a_plain_listener_can_redirect_everything_to_https() {
    let backend = TestBackend::start("a").await;
    let config = Config {
        frontends: vec![lb::Frontend {
            redirect_https: Some(443),
            ..http_frontend("web", Some("web"))
        }],
        backends: vec![Backend::new("web")],
        ..Config::default()
    };
    let balancer = lb::Balancer::start(config).await.unwrap();
    add(&balancer.handle(), "web", backend.endpoint()).await;
    let addr = balancer.local_addr("web").unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /a/b?c=1 HTTP/1.1\r\nHost: shop.test:8080\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 301"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("location: https://shop.test/a/b?c=1\r\n"),
        "{head}"
    );
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A 1 MiB answer, for reads over TLS that must arrive whole.
fn large(_: &str) -> (Vec<Vec<u8>>, bool) {
    let size = 1 << 20;
    let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n").into_bytes();
    answer.resize(answer.len() + size, b'y');
    (vec![answer], false)
}

#[tokio::test]
async fn a_keep_alive_download_over_tls_arrives_whole() {
    let (pem, der) = self_signed("a.test");
    let server = ScriptedServer::start(large).await;
    let mut config = simple_config(Backend::new("web"));
    config.frontends[0].tls = Some(Tls {
        certificates: vec![Certificate {
            pem: Some(pem),
            ..Certificate::default()
        }],
        directories: Vec::new(),
    });
    let balancer = lb::Balancer::start(config).await.unwrap();
    add(
        &balancer.handle(),
        "web",
        lb::Endpoint::new("a", server.addr),
    )
    .await;
    let addr = balancer.local_addr("web").unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(&[der], &[b"http/1.1"]));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("a.test").unwrap(), tcp)
        .await
        .unwrap();
    // Twice on one connection: the fast path must flush what TLS buffers.
    for _ in 0..2 {
        tls.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        within("the whole answer over TLS", async {
            loop {
                let n = tls.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed early after {} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(&[b'y'; 16]) && got.len() >= (1 << 20) {
                    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    if got.len() - head_end == 1 << 20 {
                        break;
                    }
                }
            }
        })
        .await;
    }
}
