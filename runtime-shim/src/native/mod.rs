//! rcompose's own, daemonless runtime. State lives under a root directory
//! (`/var/lib/rcompose`, or `RCOMPOSE_ROOT`), runtime files under
//! `/run/rcompose` (`<root>/run` when `RCOMPOSE_ROOT` moves the root).
//!
//! The pieces: the image store ([`store`]) with archives in and out
//! ([`archive`]) and registries ([`registry`]); containers ([`containers`])
//! as OCI bundles ([`bundle`]) run by runc under a monitor each
//! ([`shim`], the `rcompose-shim` binary), with their state on disk
//! ([`state`]), logs ([`logfile`]), events ([`events`]), volumes
//! ([`volumes`]) and cgroups ([`cgroup`]); networks through netavark
//! ([`network`]) with names of rcompose's own ([`dns`]); Dockerfile builds
//! ([`dockerfile`], and the builder in `build`) on its own containers.

pub mod archive;
mod build;
pub mod bundle;
pub mod cgroup;
pub mod changes;
pub mod containers;
pub mod dns;
pub mod dockerfile;
pub mod events;
mod io;
pub mod layout;
pub mod logfile;
pub mod network;
pub mod registry;
pub mod seccomp;
pub mod shim;
pub mod state;
pub mod store;
pub mod unpack;
pub mod userns;
pub mod volumes;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::reference;
use crate::{
    Archives, BoxStream, BuildSpec, CommitSpec, Container, ContainerDetails, ContainerEvent,
    ContainerSpec, Exec, ExecSpec, Image, Images, LabelFilter, LoadedImage, LogLine, LogOptions,
    Logs, Monitor, Network, NetworkSpec, Result, Runtime, RuntimeError, Session, Stats, Volume,
    VolumeSpec,
};
use layout::Digest;
use std::collections::BTreeSet;
use store::{Store, StoredImage};

/// The state root when `RCOMPOSE_ROOT` does not say.
pub const DEFAULT_ROOT: &str = "/var/lib/rcompose";
/// The runtime files' directory when `RCOMPOSE_ROOT` does not say.
pub const DEFAULT_RUN: &str = "/run/rcompose";

/// The native runtime.
#[derive(Debug, Clone)]
pub struct NativeRuntime {
    root: PathBuf,
    run: PathBuf,
    store: Arc<Store>,
    /// The OCI runtime binary (`RCOMPOSE_RUNC`, or `runc`).
    runc: String,
    /// `RCOMPOSE_USERNS_REMAP`: the user-namespace remap of the
    /// containers it creates (as dockerd's `--userns-remap`), if any.
    remap: Option<String>,
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RuntimeError::Engine(format!("store work failed: {e}")))?
}

impl NativeRuntime {
    /// Opens the runtime at `RCOMPOSE_ROOT`, or the default places. Needs
    /// root for now.
    pub fn open() -> Result<NativeRuntime> {
        let (root, run) = match std::env::var_os("RCOMPOSE_ROOT").filter(|r| !r.is_empty()) {
            Some(r) => {
                let root = PathBuf::from(r);
                let run = root.join("run");
                (root, run)
            }
            None => (PathBuf::from(DEFAULT_ROOT), PathBuf::from(DEFAULT_RUN)),
        };
        Self::open_at(&root, &run)
    }

    /// Opens the runtime with its state under `root` and runtime files
    /// under `run`.
    pub fn open_at(root: &Path, run: &Path) -> Result<NativeRuntime> {
        if !rustix::process::geteuid().is_root() {
            return Err(RuntimeError::Unavailable(
                "the native runtime needs root for now (rootless is later work): run rcompose as root, or use the Docker Engine (--runtime docker)"
                    .to_string(),
            ));
        }
        let store = Store::open(&root.join("images"))?;
        let runc = std::env::var("RCOMPOSE_RUNC")
            .ok()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "runc".to_string());
        Ok(NativeRuntime {
            root: root.to_path_buf(),
            run: run.to_path_buf(),
            store: Arc::new(store),
            runc,
            remap: std::env::var("RCOMPOSE_USERNS_REMAP")
                .ok()
                .filter(|r| !r.trim().is_empty()),
        })
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The runtime files' directory.
    pub fn run_dir(&self) -> &Path {
        &self.run
    }

    /// The image store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether containers can run here: the OCI runtime is there and the
    /// kernel has overlayfs; otherwise one clear error.
    fn ready(&self) -> Result<()> {
        let found = if self.runc.contains('/') {
            Path::new(&self.runc).is_file()
        } else {
            std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(&self.runc).is_file()))
        };
        if !found {
            return Err(RuntimeError::Unavailable(format!(
                "the OCI runtime {:?} is not installed (Debian's runc package provides it; RCOMPOSE_RUNC names another)",
                self.runc
            )));
        }
        let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !filesystems
            .lines()
            .any(|l| l.trim_end().ends_with("overlay"))
        {
            return Err(RuntimeError::Unavailable(
                "the kernel has no overlay filesystem (modprobe overlay), which native containers need".into(),
            ));
        }
        Ok(())
    }

    fn summary(image: &StoredImage) -> Image {
        let created = image
            .config_file
            .created
            .as_deref()
            .and_then(|c| c.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second())
            .unwrap_or(0);
        Image {
            id: image.id.to_string(),
            tags: image
                .names
                .iter()
                .filter(|n| !n.contains('@'))
                .map(|n| reference::familiar_tagged(n))
                .collect(),
            size: image.size as i64,
            created,
            platform: Image::platform_text(
                &image.config_file.os,
                &image.config_file.architecture,
                &image.config_file.variant,
            ),
            last_tagged: image.named_at,
        }
    }

    async fn find(&self, reference: &str) -> Result<Option<StoredImage>> {
        let store = self.store.clone();
        let reference = reference.to_string();
        blocking(move || store.find(&reference)).await
    }
}

/// Docker's `image inspect` shape of a stored image.
pub fn inspect_json(image: &StoredImage) -> serde_json::Value {
    let config = &image.config;
    serde_json::json!({
        "Id": image.id,
        "RepoTags": image.names.iter().filter(|n| !n.contains('@')).map(|n| reference::familiar_tagged(n)).collect::<Vec<_>>(),
        "RepoDigests": image.names.iter().filter(|n| n.contains('@')).map(|n| reference::familiar_digest(n)).collect::<Vec<_>>(),
        "Created": config.get("created").cloned().unwrap_or_default(),
        "Author": config.get("author").cloned().unwrap_or_default(),
        "Architecture": image.config_file.architecture,
        "Os": image.config_file.os,
        "Size": image.size,
        "Config": config.get("config").cloned().unwrap_or_else(|| serde_json::json!({})),
        "RootFS": {"Type": "layers", "Layers": image.config_file.rootfs.diff_ids},
        "Manifest": image.manifest,
    })
}

#[async_trait::async_trait]
impl Runtime for NativeRuntime {
    fn lock_dir(&self) -> Option<PathBuf> {
        Some(self.run.join("locks"))
    }

    async fn version(&self) -> Result<String> {
        Ok(format!(
            "native {} (state {}, runtime files {})",
            env!("CARGO_PKG_VERSION"),
            self.root.display(),
            self.run.display()
        ))
    }

    async fn list_containers(&self, filter: &[LabelFilter], all: bool) -> Result<Vec<Container>> {
        let rt = self.clone();
        let filter = filter.to_vec();
        blocking(move || {
            Ok(rt
                .all_containers()
                .into_iter()
                .map(|o| o.container())
                .filter(|c| (all || c.state.is_up()) && LabelFilter::all_match(&filter, &c.labels))
                .collect())
        })
        .await
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails> {
        let rt = self.clone();
        let id = id.to_string();
        blocking(move || Ok(rt.find_container(&id)?.details())).await
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        self.ready()?;
        let rt = self.clone();
        let spec = spec.clone();
        blocking(move || rt.create(&spec)).await
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        self.ready()?;
        let rt = self.clone();
        let id = id.to_string();
        blocking(move || rt.start(&id)).await
    }

    async fn stop_container(&self, id: &str, timeout_secs: Option<i64>) -> Result<()> {
        let rt = self.clone();
        let id = id.to_string();
        blocking(move || rt.stop(&id, timeout_secs)).await
    }

    async fn restart_container(&self, id: &str, timeout_secs: Option<i64>) -> Result<()> {
        let rt = self.clone();
        let id = id.to_string();
        blocking(move || {
            rt.stop(&id, timeout_secs)?;
            rt.start(&id)
        })
        .await
    }

    async fn update_container(&self, id: &str, resources: &crate::Resources) -> Result<()> {
        let rt = self.clone();
        let id = id.to_string();
        let resources = resources.clone();
        blocking(move || rt.update(&id, &resources)).await
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<()> {
        let rt = self.clone();
        let (id, signal) = (id.to_string(), signal.to_string());
        blocking(move || rt.kill(&id, &signal)).await
    }

    async fn pause_container(&self, id: &str) -> Result<()> {
        let rt = self.clone();
        let id = id.to_string();
        blocking(move || rt.pause(&id)).await
    }

    async fn unpause_container(&self, id: &str) -> Result<()> {
        let rt = self.clone();
        let id = id.to_string();
        blocking(move || rt.unpause(&id)).await
    }

    async fn remove_container(&self, id: &str, force: bool, volumes: bool) -> Result<()> {
        let rt = self.clone();
        let id = id.to_string();
        blocking(move || rt.remove(&id, force, volumes)).await
    }

    async fn wait_container(&self, id: &str) -> Result<i64> {
        self.wait(id).await
    }

    async fn list_networks(&self, filter: &[LabelFilter]) -> Result<Vec<Network>> {
        Ok(self.networks(filter))
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<Network>> {
        Ok(self.networks(&[]).into_iter().find(|n| n.name == name))
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<String> {
        self.make_network(spec)
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        let rt = self.clone();
        let name = name.to_string();
        blocking(move || rt.drop_network(&name)).await
    }

    async fn inspect_volume(&self, name: &str) -> Result<Option<Volume>> {
        Ok(self.volume(name))
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> Result<()> {
        self.make_volume(spec)
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        let rt = self.clone();
        let name = name.to_string();
        blocking(move || rt.drop_volume(&name)).await
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<Image>> {
        Ok(self.find(reference).await?.as_ref().map(Self::summary))
    }

    async fn list_images(&self, repository: &str) -> Result<Vec<Image>> {
        let store = self.store.clone();
        let images = blocking(move || store.images()).await?;
        let wanted = if repository.is_empty() {
            None
        } else {
            Some(reference::familiar(&reference::normalize(repository)?).0)
        };
        Ok(images
            .iter()
            .map(Self::summary)
            .filter(|i| {
                wanted
                    .as_ref()
                    .is_none_or(|w| i.tags.iter().any(|t| reference::split(t).repository == w))
            })
            .collect())
    }

    async fn build_image(&self, spec: &BuildSpec) -> Result<BoxStream<String>> {
        self.ready()?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(256);
        let rt = self.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            if let Err(e) = build::build(&rt, &spec, tx.clone()).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Box::pin(futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))
    }

    async fn remove_image(&self, reference: &str, force: bool) -> Result<()> {
        let rt = self.clone();
        let reference = reference.to_string();
        blocking(move || {
            // As Docker: an image a container uses goes only by force (and
            // then only its name goes: the container keeps it).
            if let Some(image) = rt.store.find(&reference)? {
                let user = rt
                    .all_containers()
                    .into_iter()
                    .find(|o| o.record.image_id == image.id.to_string());
                if let (Some(user), false) = (user, force) {
                    return Err(RuntimeError::Engine(format!(
                        "conflict: unable to remove repository reference \"{reference}\" (must force) - container {} is using its referenced image {}",
                        user.record.id.get(..12).unwrap_or(""),
                        image.id.hex().get(..12).unwrap_or("")
                    )));
                }
            }
            remove(&rt.store, &reference, force)
        })
        .await
    }

    async fn events(&self, filter: &[LabelFilter]) -> Result<BoxStream<ContainerEvent>> {
        events::stream(&self.events_dir(), filter)
    }

    async fn pull_image(&self, reference: &str) -> Result<BoxStream<String>> {
        reference::normalize(reference)?;
        Ok(progress(self.store.clone(), reference, registry::pull))
    }
}

/// Runs a registry transfer in a task of its own; its progress lines, and
/// its error last, come out of the stream.
fn progress<F, Fut>(store: Arc<Store>, reference: &str, transfer: F) -> BoxStream<String>
where
    F: FnOnce(Arc<Store>, String, tokio::sync::mpsc::Sender<Result<String>>) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let work = transfer(store, reference.to_string(), tx.clone());
    tokio::spawn(async move {
        if let Err(e) = work.await {
            let _ = tx.send(Err(e)).await;
        }
    });
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// `image rm`, as Docker does it: a name removes that name (and the image
/// with its last one); an id removes the image, which needs `force` when it
/// has several names.
fn remove(store: &Store, reference: &str, force: bool) -> Result<()> {
    let Some(image) = store.find(reference)? else {
        // A name whose image cannot be read any more still goes.
        if let Ok(name) = reference::normalize(reference) {
            if store.untag(&name)? {
                return Ok(());
            }
        }
        return Err(RuntimeError::NotFound {
            kind: "image",
            name: reference.to_string(),
        });
    };
    // Tags count; names by digest (`repo@sha256:…`, from pulls) go with the
    // image, as Docker's do.
    let tags: Vec<&String> = image.names.iter().filter(|n| !n.contains('@')).collect();
    let by_name = reference::normalize(reference)
        .ok()
        .filter(|n| image.names.contains(n));
    match by_name {
        Some(name) if tags.len() > 1 && !name.contains('@') => {
            store.untag(&name)?;
            return Ok(());
        }
        Some(_) => {}
        None if tags.len() > 1 && !force => {
            return Err(RuntimeError::Engine(format!(
                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                image.id.hex().get(..12).unwrap_or("")
            )))
        }
        None => {}
    }
    store.forget(&image.manifest)?;
    // Gone as Docker's: not kept (and found by its id) for a build to give
    // again; the build's steps stay cached.
    store.unpin_all(build::FINAL_PIN, &image.manifest);
    store.collect_garbage()?;
    Ok(())
}

#[async_trait::async_trait]
impl Images for NativeRuntime {
    async fn load_images(&self, archive: Box<dyn Read + Send>) -> Result<Vec<LoadedImage>> {
        let store = self.store.clone();
        let loaded = blocking(move || archive::load(&store, archive)).await?;
        Ok(loaded
            .into_iter()
            .map(|l| LoadedImage {
                id: l.id.to_string(),
                tags: l
                    .names
                    .iter()
                    .map(|n| reference::familiar_tagged(n))
                    .collect(),
            })
            .collect())
    }

    async fn save_images(&self, references: &[String], out: Box<dyn Write + Send>) -> Result<()> {
        let store = self.store.clone();
        let references = references.to_vec();
        blocking(move || {
            let mut images = Vec::new();
            for r in &references {
                let image = store.find(r)?.ok_or_else(|| RuntimeError::NotFound {
                    kind: "image",
                    name: r.clone(),
                })?;
                // Tags only: a name by digest is no tag to load under.
                let names = match reference::normalize(r) {
                    Ok(n) if image.names.contains(&n) && !n.contains('@') => vec![n],
                    _ => image
                        .names
                        .iter()
                        .filter(|n| !n.contains('@'))
                        .cloned()
                        .collect(),
                };
                images.push((image, names));
            }
            archive::save(&store, &images, out)
        })
        .await
    }

    async fn import_image(
        &self,
        tarball: Box<dyn Read + Send>,
        reference: Option<&str>,
        changes: &[String],
        message: &str,
    ) -> Result<String> {
        let store = self.store.clone();
        let reference = reference.map(str::to_string);
        let changes = changes.to_vec();
        let message = message.to_string();
        let id = blocking(move || {
            archive::import(&store, tarball, reference.as_deref(), &changes, &message)
        })
        .await?;
        Ok(id.to_string())
    }

    async fn tag_image(&self, source: &str, target: &str) -> Result<()> {
        let store = self.store.clone();
        let (source, target) = (source.to_string(), reference::normalize(target)?);
        blocking(move || {
            // As a writer: no collection may remove the image between
            // finding it and naming it.
            let _writing = store.writing()?;
            let image = store.find(&source)?.ok_or_else(|| RuntimeError::NotFound {
                kind: "image",
                name: source.clone(),
            })?;
            let descriptor = store.complete(&image.manifest, &source)?;
            store.name(&descriptor, &[target])
        })
        .await
    }

    async fn prune_images(&self, all: bool) -> Result<(Vec<String>, u64)> {
        let store = self.store.clone();
        let pinned = self.store.pinned();
        blocking(move || {
            // Decided and done in one edit of the names, so that a name a
            // load gives meanwhile is not lost. `all` removes every image
            // no container uses.
            let dangling = store.edit_index(|entries| {
                let tagged: BTreeSet<Digest> = entries
                    .iter()
                    .filter(|d| {
                        d.annotations
                            .get(layout::REF_NAME)
                            .is_some_and(|n| !n.contains('@'))
                    })
                    .map(|d| d.digest.clone())
                    .collect();
                let gone: BTreeSet<Digest> = entries
                    .iter()
                    .map(|d| d.digest.clone())
                    .filter(|d| all || !tagged.contains(d))
                    .filter(|d| !pinned.contains(d))
                    .collect();
                entries.retain(|d| !gone.contains(&d.digest));
                Ok(gone)
            })?;
            let mut removed = Vec::new();
            for manifest in &dangling {
                if let Ok(doc) = store.read_json::<layout::Manifest>(manifest, "manifest") {
                    removed.push(doc.config.digest.to_string());
                }
            }
            let freed = store.collect_garbage()?;
            Ok((removed, freed))
        })
        .await
    }

    async fn push_image(&self, reference: &str) -> Result<BoxStream<String>> {
        reference::normalize(reference)?;
        Ok(progress(self.store.clone(), reference, registry::push))
    }

    async fn image_details(&self, reference: &str) -> Result<serde_json::Value> {
        let image = self
            .find(reference)
            .await?
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "image",
                name: reference.to_string(),
            })?;
        Ok(inspect_json(&image))
    }
}

#[async_trait::async_trait]
impl Logs for NativeRuntime {
    async fn logs(&self, id: &str, options: &LogOptions) -> Result<BoxStream<LogLine>> {
        self.log_stream(id, options)
    }

    async fn attach(&self, container: &str, stdin: bool, logs: bool) -> Result<Session> {
        self.attach_to(container, stdin, logs)
    }
}

#[async_trait::async_trait]
impl Exec for NativeRuntime {
    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<Session> {
        self.exec_in(container, spec).await
    }
}

/// A whole archive as a stream of one chunk.
fn one_chunk(bytes: Vec<u8>) -> BoxStream<Vec<u8>> {
    Box::pin(futures_util::stream::iter([Ok(bytes)]))
}

#[async_trait::async_trait]
impl Archives for NativeRuntime {
    async fn copy_from(&self, container: &str, path: &str) -> Result<BoxStream<Vec<u8>>> {
        let rt = self.clone();
        let (c, p) = (container.to_string(), path.to_string());
        Ok(one_chunk(blocking(move || rt.archive_of(&c, &p)).await?))
    }

    async fn copy_to(&self, container: &str, path: &str, tar: Vec<u8>) -> Result<()> {
        let rt = self.clone();
        let (c, p) = (container.to_string(), path.to_string());
        blocking(move || rt.extract_into(&c, &p, tar)).await
    }

    async fn export(&self, container: &str) -> Result<BoxStream<Vec<u8>>> {
        let rt = self.clone();
        let c = container.to_string();
        Ok(one_chunk(blocking(move || rt.export_tar(&c)).await?))
    }

    async fn commit(&self, container: &str, spec: &CommitSpec) -> Result<String> {
        let rt = self.clone();
        let (c, spec) = (container.to_string(), spec.clone());
        blocking(move || rt.commit_container(&c, &spec)).await
    }

    async fn changes(&self, container: &str) -> Result<Vec<crate::Change>> {
        let rt = self.clone();
        let c = container.to_string();
        blocking(move || rt.container_changes(&c)).await
    }
}

#[async_trait::async_trait]
impl Monitor for NativeRuntime {
    async fn stats(&self, container: &str) -> Result<Stats> {
        self.sample(container).await
    }

    async fn top(&self, container: &str) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        let rt = self.clone();
        let c = container.to_string();
        blocking(move || rt.processes(&c)).await
    }
}
