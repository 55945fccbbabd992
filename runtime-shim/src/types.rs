//! The objects a [`crate::Runtime`] deals in, in rcompose's own terms.

use std::collections::BTreeMap;

/// The lifecycle state of a container, in rcompose's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Waiting to be restarted by its restart policy.
    Restarting,
    /// Stopped (also when the runtime cannot use it any more; its
    /// [`Status::detail`] then says why).
    Exited,
}

impl ContainerState {
    /// The state's name, as Compose's `ps --status` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Exited => "exited",
        }
    }

    /// Whether its main process is there (running, paused or about to restart).
    pub fn is_up(self) -> bool {
        matches!(
            self,
            ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
        )
    }
}

/// The health of a container with a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Health {
    /// No health check.
    #[default]
    None,
    /// Within the start period or not checked yet.
    Starting,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
}

/// What is known of a container's current state, to describe it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// When the current state began, seconds since the epoch (0 when
    /// unknown): the last start of a running or paused container, the end
    /// of the last run of an exited or restarting one.
    pub since: i64,
    /// The exit code of the last run.
    pub exit_code: i64,
    /// Its health.
    pub health: Health,
    /// The runtime's own description, when rcompose's states do not cover
    /// it (an engine's `Removal In Progress` or `Dead`), shown as is.
    pub detail: Option<String>,
}

/// A transport protocol of a port.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The protocol's name, lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Parses a protocol name (`tcp`, `udp`, `sctp`, any case).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A published port of a running container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct PublishedPort {
    /// Host address.
    pub host_ip: String,
    /// Host port (0 when not published).
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// A container as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Engine id.
    pub id: String,
    /// Name, without the leading slash.
    pub name: String,
    /// Image reference it was created from.
    pub image: String,
    /// Image id.
    pub image_id: String,
    /// Command line.
    pub command: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// State.
    pub state: ContainerState,
    /// What is known of its state, for `ps` to describe it.
    pub status: Status,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Ports.
    pub ports: Vec<PublishedPort>,
    /// Networks it is attached to.
    pub networks: Vec<String>,
}

/// A container's details beyond the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDetails {
    /// The listing part.
    pub container: Container,
    /// Health, when it has a health check.
    pub health: Health,
    /// Exit code of the last run.
    pub exit_code: i64,
    /// Whether the engine is restarting it.
    pub restarting: bool,
    /// Addresses per network.
    pub addresses: BTreeMap<String, String>,
    /// The TCP ports it exposes (its image's and its own), ascending.
    pub exposed_tcp_ports: Vec<u16>,
    /// Its resource limits now.
    pub resources: Resources,
}

/// A port a container exposes to the networks it is on, without publishing it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ExposedPort {
    /// Container port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// The host side of a published port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum HostPort {
    /// Any free port, chosen by the runtime.
    #[default]
    Any,
    /// This port.
    Fixed(u16),
    /// A free port of this range (inclusive).
    Range(u16, u16),
}

/// A port to publish.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortBinding {
    /// Container port.
    pub container_port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Host address; empty for all.
    pub host_ip: String,
    /// Host port.
    pub host_port: HostPort,
}

/// When the runtime restarts a container whose main process ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// Always, also after the runtime itself restarts.
    Always,
    /// Always, unless it was stopped by a user.
    UnlessStopped,
    /// After a non-zero exit, at most `max_retries` times when given.
    OnFailure {
        /// The most restarts in a row.
        max_retries: Option<u32>,
    },
}

/// A host device made available in a container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Device {
    /// Path on the host.
    pub host_path: String,
    /// Path in the container.
    pub container_path: String,
    /// Cgroup access: a combination of `r` (read), `w` (write), `m` (mknod).
    pub permissions: String,
}

/// Which network namespace a container has.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum NetworkMode {
    /// Its own, attached to the networks of [`ContainerSpec::networks`].
    #[default]
    Attachments,
    /// The host's.
    Host,
    /// Its own, with a loopback interface only.
    None,
    /// That of another container (name or id).
    Container(String),
    /// Its own, attached to this one network of the runtime (no aliases).
    Network(String),
}

/// Which IPC or PID namespace a container has.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum Namespace {
    /// The runtime's default (its own; for IPC, private or shareable as the runtime is configured).
    #[default]
    Default,
    /// Its own (IPC: not shareable with others).
    Private,
    /// Its own, and other containers may join it (IPC only).
    Shareable,
    /// None at all (IPC: no /dev/shm).
    None,
    /// The host's.
    Host,
    /// That of another container (name or id).
    Container(String),
}

/// Mount the volumes of another container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct VolumesFrom {
    /// The container (name or id).
    pub container: String,
    /// Mount them read-only (otherwise as the other container has them).
    pub read_only: bool,
}

/// An `/etc/hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ExtraHost {
    /// Host name.
    pub name: String,
    /// Its address (or `host-gateway`).
    pub address: String,
}

/// Selects objects by their labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelFilter {
    /// The label.
    pub key: String,
    /// Its value; `None` for any value.
    pub value: Option<String>,
}

impl LabelFilter {
    /// Objects carrying label `key`, whatever its value.
    pub fn has(key: impl Into<String>) -> LabelFilter {
        LabelFilter {
            key: key.into(),
            value: None,
        }
    }

    /// Objects whose label `key` is `value`.
    pub fn equals(key: impl Into<String>, value: impl Into<String>) -> LabelFilter {
        LabelFilter {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    /// Whether `labels` satisfy this filter.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match (&self.value, labels.get(&self.key)) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(want), Some(have)) => want == have,
        }
    }

    /// Whether `labels` satisfy every filter.
    pub fn all_match(filters: &[LabelFilter], labels: &BTreeMap<String, String>) -> bool {
        filters.iter().all(|f| f.matches(labels))
    }
}

/// A mount into a container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Mount {
    /// A host path.
    Bind {
        /// Host path.
        source: String,
        /// Container path.
        target: String,
        /// Read-only.
        read_only: bool,
        /// Create the host path when missing.
        create_host_path: bool,
        /// Propagation mode.
        propagation: String,
        /// SELinux relabeling.
        selinux: String,
    },
    /// A named or anonymous volume.
    Volume {
        /// Volume name; empty for an anonymous volume.
        source: String,
        /// Container path.
        target: String,
        /// Read-only.
        read_only: bool,
        /// Do not copy the image's content into a new volume.
        nocopy: bool,
        /// Mount a sub-path of the volume.
        subpath: String,
    },
    /// A tmpfs.
    Tmpfs {
        /// Container path.
        target: String,
        /// Size limit in bytes (0 for none).
        size: i64,
        /// File mode (0 for default).
        mode: u32,
    },
}

/// The command of a health check.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum HealthTest {
    /// The image's, with the other settings of the spec.
    #[default]
    Inherit,
    /// No health check, not even the image's.
    Disabled,
    /// A program and its arguments.
    Exec(Vec<String>),
    /// A shell command line, run with the container's shell.
    Shell(String),
}

/// A health check for a container.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct HealthcheckSpec {
    /// What to run.
    pub test: HealthTest,
    /// Between checks, nanoseconds.
    pub interval_ns: i64,
    /// For one check, nanoseconds.
    pub timeout_ns: i64,
    /// Failures before unhealthy.
    pub retries: i64,
    /// Grace period, nanoseconds.
    pub start_period_ns: i64,
    /// Interval during the grace period, nanoseconds.
    pub start_interval_ns: i64,
}

/// A container's attachment to a network.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct NetworkAttachment {
    /// Network name on the engine.
    pub network: String,
    /// DNS aliases.
    pub aliases: Vec<String>,
    /// Static IPv4 address.
    pub ipv4_address: String,
    /// Static IPv6 address.
    pub ipv6_address: String,
    /// Legacy links, `container:alias`.
    pub links: Vec<String>,
    /// Fixed MAC address.
    pub mac_address: String,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// Gateway priority.
    pub gw_priority: i64,
}

/// A resource limit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UlimitSpec {
    /// Name (`nofile`, `nproc` ...).
    pub name: String,
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// The resource limits of a container that a running container can change
/// (as `docker update` does); 0 or empty is "not set".
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Memory limit, bytes.
    pub memory: i64,
    /// Memory reservation, bytes.
    pub memory_reservation: i64,
    /// Memory plus swap, bytes.
    pub memory_swap: i64,
    /// CPU limit, in billionths of a CPU.
    pub nano_cpus: i64,
    /// CPU shares.
    pub cpu_shares: i64,
    /// CPU set.
    pub cpuset: String,
    /// Process limit.
    pub pids_limit: i64,
}

/// What a container should be.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct ContainerSpec {
    /// Name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Command; `None` keeps the image's.
    pub command: Option<Vec<String>>,
    /// Entrypoint; `None` keeps the image's.
    pub entrypoint: Option<Vec<String>>,
    /// Working directory.
    pub working_dir: String,
    /// User.
    pub user: String,
    /// Host name.
    pub hostname: String,
    /// Domain name.
    pub domainname: String,
    /// Exposed container ports.
    pub exposed: Vec<ExposedPort>,
    /// Published ports.
    pub ports: Vec<PortBinding>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Its network namespace.
    pub network_mode: NetworkMode,
    /// The networks it is attached to (with [`NetworkMode::Attachments`]),
    /// the first one its default route.
    pub networks: Vec<NetworkAttachment>,
    /// Restart policy; `None` for the runtime's default (no restarts).
    pub restart: Option<RestartPolicy>,
    /// Health check; `None` keeps the image's.
    pub healthcheck: Option<HealthcheckSpec>,
    /// Stop signal.
    pub stop_signal: String,
    /// Seconds between the stop signal and SIGKILL.
    pub stop_timeout: Option<i64>,
    /// Run an init process.
    pub init: Option<bool>,
    /// Read-only root filesystem.
    pub read_only: bool,
    /// Privileged.
    pub privileged: bool,
    /// Allocate a TTY.
    pub tty: bool,
    /// Keep stdin open.
    pub stdin_open: bool,
    /// Close the container's stdin when the first attached client detaches
    /// from it (what `run` wants, so that piped input ends).
    pub stdin_once: bool,
    /// Added capabilities.
    pub cap_add: Vec<String>,
    /// Dropped capabilities.
    pub cap_drop: Vec<String>,
    /// Security options.
    pub security_opt: Vec<String>,
    /// tmpfs mounts, path to options.
    pub tmpfs: BTreeMap<String, String>,
    /// Ulimits.
    pub ulimits: Vec<UlimitSpec>,
    /// Kernel parameters.
    pub sysctls: BTreeMap<String, String>,
    /// `/etc/hosts` entries.
    pub extra_hosts: Vec<ExtraHost>,
    /// DNS servers.
    pub dns: Vec<String>,
    /// DNS options.
    pub dns_opt: Vec<String>,
    /// DNS search domains.
    pub dns_search: Vec<String>,
    /// Its resource limits (the ones that can change in place).
    #[serde(flatten)]
    pub resources: Resources,
    /// `/dev/shm` size, bytes.
    pub shm_size: i64,
    /// Log driver.
    pub log_driver: String,
    /// Log options.
    pub log_opts: BTreeMap<String, String>,
    /// IPC namespace.
    pub ipc: Namespace,
    /// PID namespace.
    pub pid: Namespace,
    /// Devices.
    pub devices: Vec<Device>,
    /// Extra groups.
    pub group_add: Vec<String>,
    /// Platform (`linux/amd64`).
    pub platform: String,
    /// OCI runtime.
    pub runtime: String,
    /// Containers whose volumes to mount.
    pub volumes_from: Vec<VolumesFrom>,
    /// MAC address.
    pub mac_address: String,
    /// Stop the OOM killer.
    pub oom_kill_disable: bool,
    /// OOM score adjustment.
    pub oom_score_adj: i64,
    /// User namespace mode.
    pub userns_mode: String,
    /// Cgroup parent.
    pub cgroup_parent: String,
}

/// A network as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Engine id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Driver.
    pub driver: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Internal network.
    pub internal: bool,
}

/// What a network should be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkSpec {
    /// Name.
    pub name: String,
    /// Driver; empty for the engine's default.
    pub driver: String,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// No outside connectivity.
    pub internal: bool,
    /// Standalone containers may attach.
    pub attachable: bool,
    /// Enable IPv6.
    pub enable_ipv6: bool,
    /// IPAM driver.
    pub ipam_driver: String,
    /// Address pools: subnet, gateway, ip range.
    pub ipam_pools: Vec<(String, String, String)>,
    /// IPAM options.
    pub ipam_options: BTreeMap<String, String>,
}

/// A volume as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Name.
    pub name: String,
    /// Driver.
    pub driver: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// What a volume should be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeSpec {
    /// Name.
    pub name: String,
    /// Driver; empty for `local`.
    pub driver: String,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// An image present on the engine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    /// Image id.
    pub id: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Size in bytes.
    pub size: i64,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// The platform it is for, as Docker shows it: `os/architecture`
    /// (`/variant` when it has one), `unknown` without an os; empty where
    /// the runtime did not say (a listing).
    pub platform: String,
    /// When it was last given a name here (pulled, loaded, tagged), seconds
    /// since the epoch; 0 when the runtime does not know. `pull_policy:
    /// daily` and its kin measure from it.
    pub last_tagged: i64,
}

impl Image {
    /// A platform as Docker shows it (containerd's `platforms.Format`).
    pub fn platform_text(os: &str, architecture: &str, variant: &str) -> String {
        if os.is_empty() {
            return "unknown".to_string();
        }
        [os, architecture, variant]
            .iter()
            .filter(|part| !part.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// An image an archive held, as loaded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadedImage {
    /// Its id.
    pub id: String,
    /// The names it was loaded under, as Docker shows them (`redis:7`).
    pub tags: Vec<String>,
}

/// An image to build.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildSpec {
    /// Context directory.
    pub context: String,
    /// Dockerfile, relative to the context.
    pub dockerfile: String,
    /// Inline Dockerfile content, instead of `dockerfile`.
    pub dockerfile_inline: String,
    /// Tags to give the image.
    pub tags: Vec<String>,
    /// Build arguments.
    pub args: BTreeMap<String, String>,
    /// Stage to build.
    pub target: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Do not use the cache.
    pub no_cache: bool,
    /// Always pull base images.
    pub pull: bool,
    /// Network during the build.
    pub network: String,
    /// Extra hosts.
    pub extra_hosts: Vec<ExtraHost>,
    /// `/dev/shm` size, bytes.
    pub shm_size: i64,
    /// Target platform.
    pub platform: String,
}

/// Which logs to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogOptions {
    /// Keep streaming new output.
    pub follow: bool,
    /// Only the last N lines (`None`: all).
    pub tail: Option<u64>,
    /// Prefix each line with its timestamp.
    pub timestamps: bool,
    /// Only output since this time (seconds since the epoch).
    pub since: Option<i64>,
    /// Only output until this time (seconds since the epoch).
    pub until: Option<i64>,
    /// Only output from this instant on (nanoseconds since the epoch): a
    /// finer `since`, for output since a command began.
    pub from_nanos: Option<i128>,
}

/// One line (or chunk) of container output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// From standard error rather than standard output.
    pub stderr: bool,
    /// The bytes, as text.
    pub text: String,
}

/// What happened to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// It was created.
    Created,
    /// Its main process started (also after a restart).
    Started,
    /// A signal was sent to it (a stop begins with one).
    Killed {
        /// The signal's number, when known.
        signal: Option<i32>,
    },
    /// Its main process ended.
    Died {
        /// The exit code.
        exit_code: i64,
    },
    /// It was stopped on request (after it died).
    Stopped,
    /// Its kernel ran out of memory for it.
    OutOfMemory,
    /// It was paused.
    Paused,
    /// It was resumed.
    Unpaused,
    /// Its health changed.
    Health(Health),
    /// It was renamed.
    Renamed,
    /// It was removed.
    Removed,
}

impl EventKind {
    /// The action word Docker Compose prints for it (`start`, `die`, `health_status: healthy`).
    pub fn action(&self) -> &'static str {
        match self {
            EventKind::Created => "create",
            EventKind::Started => "start",
            EventKind::Killed { .. } => "kill",
            EventKind::Died { .. } => "die",
            EventKind::Stopped => "stop",
            EventKind::OutOfMemory => "oom",
            EventKind::Paused => "pause",
            EventKind::Unpaused => "unpause",
            EventKind::Health(Health::Healthy) => "health_status: healthy",
            EventKind::Health(Health::Unhealthy) => "health_status: unhealthy",
            EventKind::Health(Health::Starting) => "health_status: starting",
            EventKind::Health(Health::None) => "health_status: none",
            EventKind::Renamed => "rename",
            EventKind::Removed => "destroy",
        }
    }
}

/// Something that happened to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// When, nanoseconds since the epoch.
    pub time_nanos: i64,
    /// The container's id.
    pub id: String,
    /// Its name (the new one after a rename).
    pub name: String,
    /// The image it runs.
    pub image: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// What happened.
    pub kind: EventKind,
}

/// A command to run in a running container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecSpec {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Extra environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// User to run as.
    pub user: String,
    /// Working directory.
    pub working_dir: String,
    /// Allocate a TTY.
    pub tty: bool,
    /// Connect standard input.
    pub stdin: bool,
    /// Extended privileges.
    pub privileged: bool,
    /// Start it and return at once.
    pub detach: bool,
}

/// A byte stream to write into a session (a process's standard input).
pub type Input = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// The process behind a [`Session`]: an exec'd command, or a container's
/// main process for an attach.
#[async_trait::async_trait]
pub trait Process: Send + Sync {
    /// Resizes its terminal (when it has one).
    async fn resize(&self, width: u16, height: u16) -> crate::Result<()>;
    /// Waits until it ends; its exit code.
    async fn wait(&self) -> crate::Result<i64>;
}

/// A process's streams, and the process itself.
pub struct Session {
    /// Its output, as it comes (`None` when detached).
    pub output: Option<crate::BoxStream<LogLine>>,
    /// Its input, when asked for.
    pub input: Option<Input>,
    /// The process.
    pub process: Box<dyn Process>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("output", &self.output.is_some())
            .field("input", &self.input.is_some())
            .finish_non_exhaustive()
    }
}

/// One sample of a container's resource usage.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stats {
    /// CPU use, percent of one CPU times the number of CPUs.
    pub cpu_percent: f64,
    /// Memory in use, bytes.
    pub memory_usage: u64,
    /// Memory limit, bytes.
    pub memory_limit: u64,
    /// Bytes received and sent over all networks.
    pub net_io: (u64, u64),
    /// Bytes read and written on block devices.
    pub block_io: (u64, u64),
    /// Number of processes.
    pub pids: u64,
}

/// How to commit a container to an image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitSpec {
    /// `repository[:tag]`; empty for an untagged image.
    pub reference: String,
    /// Commit message.
    pub message: String,
    /// Author.
    pub author: String,
    /// Pause the container while committing.
    pub pause: bool,
    /// Dockerfile instructions to apply (`CMD ...`, `ENV ...`).
    pub changes: Vec<String>,
}

/// How a path of a container's filesystem differs from its image's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// Added.
    Added,
    /// Changed (its content, metadata, or something under it).
    Changed,
    /// Deleted.
    Deleted,
}

impl ChangeKind {
    /// The letter `docker diff` prints.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One change of a container's filesystem.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The absolute path in the container.
    pub path: String,
}
