//! Pulling images from a registry into the native store, and pushing them
//! back, with `oci-client`. HTTPS by default; plain HTTP for loopback
//! registries and those `/etc/docker/daemon.json` lists as
//! `insecure-registries`. Credentials come from `~/.docker/config.json`
//! (`auths`, basic). Multi-platform indexes resolve to this platform.
//! Layers come down in parallel, each hashed as it arrives and moved into
//! the store only when its digest is right; a pull cut short keeps the
//! blobs it finished, and the next pull fetches only the rest.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::layout::{
    is_index, Compression, ConfigFile, Descriptor, Digest, Hasher, Index, Manifest, Platform,
    DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
use super::store::{failed, Store};
use crate::reference;
use crate::{Result, RuntimeError};

/// Parallel layer downloads.
const PARALLEL: usize = 3;

/// Whether a registry host is this machine.
fn loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => registry.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The registries Docker's daemon configuration calls insecure.
fn insecure_registries() -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/etc/docker/daemon.json") else {
        return vec![];
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("insecure-registries").cloned())
        .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
        .unwrap_or_default()
}

/// Credentials for a registry from `~/.docker/config.json` (`DOCKER_CONFIG`
/// moves its folder).
fn auth_for(registry: &str) -> RegistryAuth {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")));
    let Some(text) = dir.and_then(|d| std::fs::read_to_string(d.join("config.json")).ok()) else {
        return RegistryAuth::Anonymous;
    };
    let Ok(config) = serde_json::from_str::<serde_json::Value>(&text) else {
        return RegistryAuth::Anonymous;
    };
    let keys = [
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        if registry == "docker.io" {
            "https://index.docker.io/v1/".to_string()
        } else {
            String::new()
        },
    ];
    let auths = config.get("auths");
    for k in keys.iter().filter(|k| !k.is_empty()) {
        let encoded = auths
            .and_then(|a| a.get(k))
            .and_then(|e| e.get("auth"))
            .and_then(|a| a.as_str());
        if let Some(encoded) = encoded {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            if let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                return RegistryAuth::Basic(user.to_string(), password.to_string());
            }
        }
    }
    RegistryAuth::Anonymous
}

/// A client for the registry of `image`, and the credentials for it.
fn session(image: &Reference) -> (Client, RegistryAuth) {
    (
        client_for(image.resolve_registry()),
        auth_for(image.registry()),
    )
}

fn client_for(registry: &str) -> Client {
    // reqwest is built without a crypto provider of its own: ring, the
    // workspace's, is the process's default (a second call changes nothing).
    // rustls marks it deprecated for its lack of post-quantum key exchange,
    // which talking to a registry can do without (as the balancer's TLS).
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut plain: Vec<String> = insecure_registries();
    if loopback(registry) {
        plain.push(registry.to_string());
    }
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain),
        platform_resolver: None,
        max_concurrent_download: PARALLEL,
        ..ClientConfig::default()
    })
}

/// An error of the registry client, with its causes (the connection
/// refused under "error sending request").
fn registry_error(name: &str, e: impl std::error::Error) -> RuntimeError {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    RuntimeError::Engine(format!("{name}: {text}"))
}

fn registry_fault(name: &str, why: String) -> RuntimeError {
    RuntimeError::Engine(format!("{name}: {why}"))
}

/// A progress line out; a closed receiver is not an error.
fn say(lines: &mpsc::Sender<Result<String>>, line: String) {
    let _ = lines.try_send(Ok(line));
}

fn short(d: &Digest) -> &str {
    d.hex().get(..12).unwrap_or("")
}

/// Pulls `name` into the store, sending progress lines as Docker words
/// them.
pub async fn pull(
    store: Arc<Store>,
    name: String,
    lines: mpsc::Sender<Result<String>>,
) -> Result<()> {
    let name = name.as_str();
    let full = reference::normalize(name)?;
    let image: Reference = full.parse().map_err(|e| registry_error(name, e))?;
    let (client, auth) = session(&image);
    let writing = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.writing())
            .await
            .map_err(|e| failed("pull", e))??
    };
    let accepted = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
    let (bytes, top_digest) = client
        .pull_manifest_raw(&image, &auth, &accepted)
        .await
        .map_err(|e| registry_error(name, e))?;
    let top = store.put_bytes(&bytes, &format!("the manifest of {name}"))?;
    if top.as_str() != top_digest {
        return Err(registry_fault(
            name,
            format!("the registry's manifest digest {top_digest} is not its content's {top}"),
        ));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| registry_error(name, e))?;
    let media = value
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or(if value.get("manifests").is_some() {
            OCI_INDEX
        } else {
            OCI_MANIFEST
        })
        .to_string();
    let manifest_digest = if is_index(&media) {
        let index: Index = serde_json::from_value(value).map_err(|e| registry_error(name, e))?;
        let host = Platform::host();
        let chosen = index
            .manifests
            .iter()
            .find(|d| Platform::is_host(d))
            .ok_or_else(|| {
                registry_fault(
                    name,
                    format!(
                        "no matching manifest for {}/{} in the manifest list entries",
                        host.os, host.architecture
                    ),
                )
            })?;
        let by_digest = Reference::with_digest(
            image.registry().to_string(),
            image.repository().to_string(),
            chosen.digest.to_string(),
        );
        let (bytes, _) = client
            .pull_manifest_raw(&by_digest, &auth, &accepted)
            .await
            .map_err(|e| registry_error(name, e))?;
        let digest = Digest::of(&bytes);
        if digest != chosen.digest {
            return Err(registry_fault(
                name,
                format!("manifest {} has content {digest}", chosen.digest),
            ));
        }
        store.put_bytes(&bytes, &format!("the manifest of {name}"))?;
        digest
    } else {
        top.clone()
    };
    let manifest: Manifest = store.read_json(&manifest_digest, "manifest")?;
    let tag = image
        .digest()
        .or(image.tag())
        .unwrap_or("latest")
        .to_string();
    say(
        &lines,
        format!("{tag}: Pulling from {}", image.repository()),
    );
    // The configuration first: it names each layer's uncompressed digest,
    // so that layers are unpacked as they arrive.
    let mut fresh = false;
    if !store.has_blob(&manifest.config.digest) {
        fetch(
            store.clone(),
            &client,
            &image,
            &manifest.config,
            None,
            &lines,
        )
        .await?;
        fresh = true;
    }
    let config: ConfigFile = store.read_json(&manifest.config.digest, "configuration")?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(registry_fault(
            name,
            format!(
                "the manifest lists {} layers but the configuration {}",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    let layers = manifest
        .layers
        .iter()
        .cloned()
        .zip(config.rootfs.diff_ids.iter().cloned());
    let downloads = futures_util::stream::iter(layers.map(|(blob, diff_id)| {
        let (store, client, image, lines) = (store.clone(), &client, &image, lines.clone());
        async move {
            if store.has_blob(&blob.digest) {
                say(&lines, format!("{}: Already exists", short(&blob.digest)));
                return Ok(false);
            }
            say(&lines, format!("{}: Pulling fs layer", short(&blob.digest)));
            fetch(store, client, image, &blob, Some(diff_id), &lines).await?;
            say(&lines, format!("{}: Pull complete", short(&blob.digest)));
            Ok::<bool, RuntimeError>(true)
        }
    }))
    .buffer_unordered(PARALLEL);
    let fetched: Vec<bool> = downloads.try_collect().await?;
    fresh |= fetched.iter().any(|f| *f);
    let what = reference::familiar_tagged(&full);
    let complete = {
        let (store, manifest_digest, what) = (store.clone(), manifest_digest.clone(), what.clone());
        tokio::task::spawn_blocking(move || store.complete(&manifest_digest, &what))
            .await
            .map_err(|e| failed("pull", e))??
    };
    // Named by tag (unless pulled by digest) and by the digest it came as.
    let repository = format!("{}/{}", image.registry(), image.repository());
    let mut names = vec![format!("{repository}@{top}")];
    if image.digest().is_none() {
        names.push(full.clone());
    }
    store.name(&complete, &names)?;
    drop(writing);
    say(&lines, format!("Digest: {top}"));
    say(
        &lines,
        if fresh {
            format!("Status: Downloaded newer image for {what}")
        } else {
            format!("Status: Image is up to date for {what}")
        },
    );
    Ok(())
}

/// Chunks of a download, read by the thread that unpacks them.
struct ChannelReader {
    chunks: mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use bytes::Buf;
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Downloads one blob into the store, checking its digest. A layer whose
/// uncompressed digest is given is unpacked as it arrives, by a thread of
/// its own, so that unpacking hides behind the download.
async fn fetch(
    store: Arc<Store>,
    client: &Client,
    image: &Reference,
    blob: &Descriptor,
    diff_id: Option<Digest>,
    lines: &mpsc::Sender<Result<String>>,
) -> Result<()> {
    let name = image.whole();
    let mut stream = client
        .pull_blob_stream(image, blob.digest.as_str())
        .await
        .map_err(|e| registry_error(&name, e))?;
    let scratch = store.scratch()?;
    let path = scratch.path().join("blob");
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| failed("downloading", e))?;
    let streamed = diff_id
        .filter(|d| store.layer_size(d).is_none())
        .and_then(|d| Compression::of_media_type(&blob.media_type).map(|c| (d, c)));
    let (mut feed, unpacking) = match streamed {
        Some((diff_id, compression)) => {
            let (tx, rx) = mpsc::channel::<bytes::Bytes>(8);
            let (store, layer, what) = (store.clone(), blob.clone(), name.clone());
            let reader = ChannelReader {
                chunks: rx,
                current: bytes::Bytes::new(),
            };
            let task = tokio::task::spawn_blocking(move || {
                store.unpack_from(reader, compression, &layer, &diff_id, &what)
            });
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    let mut hasher = Hasher::default();
    let mut got: u64 = 0;
    let mut reported = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            registry_fault(
                &name,
                format!("blob {}: the download broke off: {e}", blob.digest),
            )
        })?;
        hasher.update(&chunk);
        got += chunk.len() as u64;
        if blob.size > 0 && got > blob.size {
            return Err(registry_fault(
                &name,
                format!(
                    "blob {} is larger than its {} bytes",
                    blob.digest, blob.size
                ),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| failed(format!("{name}: storing blob {}", blob.digest), e))?;
        if let Some(tx) = &feed {
            if tx.send(chunk).await.is_err() {
                // The unpacking stopped; its error comes out below.
                feed = None;
            }
        }
        if blob.size > 0 && got * 10 / blob.size > reported {
            reported = got * 10 / blob.size;
            say(
                lines,
                format!("{}: Downloading {got}/{}", short(&blob.digest), blob.size),
            );
        }
    }
    drop(feed);
    file.flush().await.map_err(|e| failed("downloading", e))?;
    drop(file);
    let digest = hasher.finish();
    if digest != blob.digest {
        return Err(registry_fault(
            &name,
            format!(
                "blob {} came with the content of {digest} ({got} bytes)",
                blob.digest
            ),
        ));
    }
    store.install(&path, &digest)?;
    if let Some(task) = unpacking {
        task.await.map_err(|e| failed("unpacking", e))??;
    }
    Ok(())
}

/// Pushes `name` from the store to its registry.
pub async fn push(
    store: Arc<Store>,
    name: String,
    lines: mpsc::Sender<Result<String>>,
) -> Result<()> {
    let name = name.as_str();
    let full = reference::normalize(name)?;
    let image = store.find(&full)?.ok_or_else(|| RuntimeError::NotFound {
        kind: "image",
        name: name.to_string(),
    })?;
    let target: Reference = full.parse().map_err(|e| registry_error(name, e))?;
    let (client, auth) = session(&target);
    say(
        &lines,
        format!(
            "The push refers to repository [{}]",
            reference::split(&full).repository
        ),
    );
    client
        .auth(&target, &auth, oci_client::RegistryOperation::Push)
        .await
        .map_err(|e| registry_error(name, e))?;
    let mut blobs = image.manifest_doc.layers.clone();
    blobs.push(image.manifest_doc.config.clone());
    for blob in &blobs {
        let exists = client
            .blob_exists(&target, blob.digest.as_str())
            .await
            .map_err(|e| registry_error(name, e))?;
        if exists {
            say(
                &lines,
                format!("{}: Layer already exists", short(&blob.digest)),
            );
            continue;
        }
        say(&lines, format!("{}: Preparing", short(&blob.digest)));
        let file = tokio::fs::File::open(store.blob_path(&blob.digest))
            .await
            .map_err(|e| failed(format!("reading blob {}", blob.digest), e))?;
        let chunks = futures_util::stream::unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 1 << 20];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(bytes::Bytes::from(buf)), file))
                }
                Err(e) => Some((
                    Err(oci_client::errors::OciDistributionError::IoError(e)),
                    file,
                )),
            }
        });
        client
            .push_blob_stream(&target, chunks, blob.digest.as_str())
            .await
            .map_err(|e| registry_error(name, e))?;
        say(&lines, format!("{}: Pushed", short(&blob.digest)));
    }
    let bytes = store.read_blob(&image.manifest)?;
    let media = image
        .manifest_doc
        .media_type
        .clone()
        .unwrap_or_else(|| OCI_MANIFEST.to_string());
    let content_type = media
        .parse()
        .map_err(|_| registry_fault(name, format!("bad media type {media:?}")))?;
    client
        .push_manifest_raw(&target, bytes.clone(), content_type)
        .await
        .map_err(|e| registry_error(name, e))?;
    let tag = target.tag().unwrap_or("latest");
    say(
        &lines,
        format!("{tag}: digest: {} size: {}", image.manifest, bytes.len()),
    );
    Ok(())
}
