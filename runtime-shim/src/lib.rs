//! The container runtime seam of rcompose.
//!
//! [`Runtime`] is a narrow trait in rcompose's own terms: containers, images,
//! networks, volumes, logs and events. Nothing of the engine behind it leaks
//! out: the Docker implementation ([`docker::DockerRuntime`]) converts to and
//! from the engine's API types inside its module, and the recording fake
//! ([`fake::FakeRuntime`]) lets the planner and executor be tested without an
//! engine. A native, daemonless runtime will be a third implementation.

pub mod context;
pub mod docker;
pub mod fake;
pub mod native;
pub mod reference;
mod types;

use std::pin::Pin;

use futures_core::Stream;

pub use types::*;

/// Compose's label on a one-off container (`run`), `True` there and
/// `False` on a service's replicas.
pub const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";

/// Whether a container with these labels is a one-off (`run`), not a
/// replica of its service.
pub fn is_oneoff(labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels.get(ONEOFF_LABEL).map(String::as_str) == Some("True")
}

/// Why a runtime call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The engine cannot be reached.
    #[error("cannot connect to the container engine: {0}")]
    Unavailable(String),
    /// The object does not exist.
    #[error("{kind} {name} not found")]
    NotFound {
        /// What kind of object (container, image, network, volume).
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// The object exists already.
    #[error("{kind} {name} already exists")]
    Conflict {
        /// What kind of object.
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// The engine refused the call; the message is the engine's reason.
    #[error("{0}")]
    Engine(String),
}

/// Result of a runtime call.
pub type Result<T> = std::result::Result<T, RuntimeError>;

/// A stream of items from the engine (log lines, events, build output).
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T>> + Send>>;

/// A container runtime, as rcompose sees it: the core that observing,
/// planning and executing use (containers, networks, volumes, images and
/// builds, events). The other capabilities are traits of their own
/// ([`Logs`], [`Exec`], [`Archives`], [`Monitor`]); [`Engine`] is all of them.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// The engine's name and version, e.g. `docker 20.10.24 (api 1.41)`.
    async fn version(&self) -> Result<String>;

    /// The directory of the lock files that serialize commands changing
    /// one project on this engine (one per Docker host, one per native
    /// state root); `None` when the engine needs none.
    fn lock_dir(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// Containers matching every label filter;
    /// stopped ones too when `all`.
    async fn list_containers(&self, filter: &[LabelFilter], all: bool) -> Result<Vec<Container>>;

    /// Details of one container (state, health, exit code).
    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails>;

    /// Creates a container; returns its id.
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String>;

    /// Starts a created or stopped container.
    async fn start_container(&self, id: &str) -> Result<()>;

    /// Stops a container: its stop signal, then SIGKILL after `timeout_secs`.
    async fn stop_container(&self, id: &str, timeout_secs: Option<i64>) -> Result<()>;

    /// Restarts a container.
    async fn restart_container(&self, id: &str, timeout_secs: Option<i64>) -> Result<()>;

    /// Changes a container's resource limits in place (`docker update`);
    /// running or not, it keeps them from now on.
    async fn update_container(&self, id: &str, resources: &Resources) -> Result<()>;

    /// Sends a signal to a running container.
    async fn kill_container(&self, id: &str, signal: &str) -> Result<()>;

    /// Pauses a running container.
    async fn pause_container(&self, id: &str) -> Result<()>;

    /// Resumes a paused container.
    async fn unpause_container(&self, id: &str) -> Result<()>;

    /// Removes a container (`force` kills a running one; `volumes` removes its anonymous volumes).
    async fn remove_container(&self, id: &str, force: bool, volumes: bool) -> Result<()>;

    /// Waits for a container to stop; returns its exit code.
    async fn wait_container(&self, id: &str) -> Result<i64>;

    /// Networks carrying every label of `filter`.
    async fn list_networks(&self, filter: &[LabelFilter]) -> Result<Vec<Network>>;

    /// One network by name, if it exists.
    async fn inspect_network(&self, name: &str) -> Result<Option<Network>>;

    /// Creates a network; returns its id.
    async fn create_network(&self, spec: &NetworkSpec) -> Result<String>;

    /// Removes a network.
    async fn remove_network(&self, name: &str) -> Result<()>;

    /// One volume by name, if it exists.
    async fn inspect_volume(&self, name: &str) -> Result<Option<Volume>>;

    /// Creates a volume.
    async fn create_volume(&self, spec: &VolumeSpec) -> Result<()>;

    /// Removes a volume.
    async fn remove_volume(&self, name: &str) -> Result<()>;

    /// One image by reference, if it is present.
    async fn inspect_image(&self, reference: &str) -> Result<Option<Image>>;

    /// The images of a repository (`name`, without a tag), every tag.
    async fn list_images(&self, repository: &str) -> Result<Vec<Image>>;

    /// Builds an image; the stream carries the build's output lines.
    async fn build_image(&self, spec: &BuildSpec) -> Result<BoxStream<String>>;

    /// Removes an image.
    async fn remove_image(&self, reference: &str, force: bool) -> Result<()>;

    /// Events of the containers matching every label filter, from now on.
    async fn events(&self, filter: &[LabelFilter]) -> Result<BoxStream<ContainerEvent>>;

    /// Pulls an image from its registry; the stream carries progress lines.
    async fn pull_image(&self, reference: &str) -> Result<BoxStream<String>>;
}

/// A container's output streams: its log and its main process.
#[async_trait::async_trait]
pub trait Logs: Send + Sync {
    /// The container's output.
    async fn logs(&self, id: &str, options: &LogOptions) -> Result<BoxStream<LogLine>>;

    /// Attaches to a container's main process (its output, and its input
    /// when `stdin`). With `logs`, the output starts with everything the
    /// container printed so far: attaching to a created container before
    /// starting it then loses nothing, however fast it runs.
    async fn attach(&self, container: &str, stdin: bool, logs: bool) -> Result<Session>;
}

/// Commands run in running containers.
#[async_trait::async_trait]
pub trait Exec: Send + Sync {
    /// Runs a command in a running container. With `spec.detach` the session
    /// has no streams; otherwise its output (and input, when `spec.stdin`)
    /// are connected until the command ends.
    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<Session>;
}

/// Files in and out of containers.
#[async_trait::async_trait]
pub trait Archives: Send + Sync {
    /// A tar archive of `path` in the container.
    async fn copy_from(&self, container: &str, path: &str) -> Result<BoxStream<Vec<u8>>>;

    /// Extracts a tar archive into directory `path` of the container.
    async fn copy_to(&self, container: &str, path: &str, tar: Vec<u8>) -> Result<()>;

    /// A tar archive of a container's whole filesystem.
    async fn export(&self, container: &str) -> Result<BoxStream<Vec<u8>>>;

    /// Makes an image of a container's filesystem; returns the image id.
    async fn commit(&self, container: &str, spec: &CommitSpec) -> Result<String>;

    /// What the container changed in its filesystem, by path.
    async fn changes(&self, container: &str) -> Result<Vec<Change>>;
}

/// What runs in a container and what it uses.
#[async_trait::async_trait]
pub trait Monitor: Send + Sync {
    /// One sample of a container's resource usage.
    async fn stats(&self, container: &str) -> Result<Stats>;

    /// Processes running in a container (`ps` columns and rows).
    async fn top(&self, id: &str) -> Result<(Vec<String>, Vec<Vec<String>>)>;
}

/// Images as archives and names: `image load`, `save`, `import`, `tag`,
/// `prune` and `inspect`.
#[async_trait::async_trait]
pub trait Images: Send + Sync {
    /// Loads the images of an archive (`docker save` or OCI layout).
    async fn load_images(&self, archive: Box<dyn std::io::Read + Send>)
        -> Result<Vec<LoadedImage>>;

    /// Writes the images, by name or id, as one archive.
    async fn save_images(
        &self,
        references: &[String],
        out: Box<dyn std::io::Write + Send>,
    ) -> Result<()>;

    /// Makes an image of a root filesystem tarball; `changes` are
    /// Dockerfile instructions for its configuration. Returns its id.
    async fn import_image(
        &self,
        tarball: Box<dyn std::io::Read + Send>,
        reference: Option<&str>,
        changes: &[String],
        message: &str,
    ) -> Result<String>;

    /// Gives an image another name.
    async fn tag_image(&self, source: &str, target: &str) -> Result<()>;

    /// Removes unnamed images (every unused one with `all`); returns their
    /// ids and the bytes freed.
    async fn prune_images(&self, all: bool) -> Result<(Vec<String>, u64)>;

    /// Pushes an image to its registry; progress lines as Docker's.
    async fn push_image(&self, reference: &str) -> Result<BoxStream<String>>;

    /// The image as Docker's `image inspect` shows it.
    async fn image_details(&self, reference: &str) -> Result<serde_json::Value>;
}

/// A runtime with every capability: what the CLI drives.
pub trait Engine: Runtime + Logs + Exec + Archives + Monitor + Images {}

impl<T: Runtime + Logs + Exec + Archives + Monitor + Images + ?Sized> Engine for T {}
