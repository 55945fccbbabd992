//! TLS on HTTP frontends, with rustls (ring): certificates chosen by the
//! name the client asks for (SNI), ALPN offering h2 and http/1.1, session
//! resumption by tickets and by a session cache.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::{Certificate, Tls};

/// Names remembered with the certificate chosen for them.
const MAX_REMEMBERED: usize = 4096;

/// Builds a listener's TLS configuration; an error names the certificate.
pub(crate) fn server_config(tls: &Tls) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut keys = Vec::new();
    for c in &tls.certificates {
        keys.push(load(c)?);
    }
    for dir in &tls.directories {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pem" || x == "crt"))
            .collect();
        files.sort();
        for file in files {
            keys.push(load(&Certificate {
                cert: Some(file),
                ..Certificate::default()
            })?);
        }
    }
    if keys.is_empty() {
        return Err("no certificate".into());
    }
    // ring rather than aws-lc-rs: no C toolchain beyond cc to build, and the
    // same suites HAProxy offers here. rustls marks it deprecated for its
    // lack of post-quantum key exchange, which a dev stack can do without.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ByName {
            keys,
            chosen: RwLock::new(HashMap::new()),
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
    Ok(Arc::new(config))
}

/// What a certificate entry is called in errors.
fn label(c: &Certificate) -> String {
    match (&c.cert, &c.key) {
        (Some(cert), _) => cert.display().to_string(),
        (None, _) => "an inline certificate".into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// A certificate chain and its key, from PEM (the chain and the key in one
/// text, as `dockercloud/haproxy` takes them, or the key apart).
fn load(c: &Certificate) -> Result<(Arc<CertifiedKey>, CertificateDer<'static>), String> {
    let what = label(c);
    let chain_pem = match (&c.pem, &c.cert) {
        (Some(pem), _) => pem.as_bytes().to_vec(),
        (None, Some(path)) => read(path)?,
        (None, None) => return Err("a certificate needs a pem or a cert".into()),
    };
    let key_pem = match &c.key {
        Some(path) => read(path)?,
        None => chain_pem.clone(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: cannot read the certificates: {e:?}"))?;
    let Some(leaf) = chain.first().cloned() else {
        return Err(format!("{what}: no certificate in it"));
    };
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{what}: cannot read the private key: {e:?}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{what}: unusable private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| format!("{what}: the key does not match the certificate: {e}"))?;
    Ok((Arc::new(certified), leaf))
}

/// Chooses the first certificate valid for the name the client asks for,
/// else the first one.
#[derive(Debug)]
struct ByName {
    keys: Vec<(Arc<CertifiedKey>, CertificateDer<'static>)>,
    /// Index into `keys` by name, once found.
    chosen: RwLock<HashMap<String, usize>>,
}

impl ByName {
    fn find(&self, name: &str) -> usize {
        if let Ok(chosen) = self.chosen.read() {
            if let Some(i) = chosen.get(name) {
                return *i;
            }
        }
        let found = ServerName::try_from(name)
            .ok()
            .and_then(|server| {
                self.keys.iter().position(|(_, leaf)| {
                    webpki::EndEntityCert::try_from(leaf)
                        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&server).is_ok())
                })
            })
            .unwrap_or(0);
        if let Ok(mut chosen) = self.chosen.write() {
            if chosen.len() >= MAX_REMEMBERED {
                chosen.clear();
            }
            chosen.insert(name.to_string(), found);
        }
        found
    }
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = hello.server_name().map_or(0, |name| self.find(name));
        self.keys.get(i).map(|(k, _)| Arc::clone(k))
    }
}
