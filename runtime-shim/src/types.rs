//! The objects a [`crate::Runtime`] deals in, in rcompose's own terms.

use std::collections::BTreeMap;

/// The lifecycle state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Restarting after a failure.
    Restarting,
    /// Being removed.
    Removing,
    /// Stopped.
    Exited,
    /// Stopped and unusable.
    Dead,
}

impl ContainerState {
    /// The engine's word for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
        }
    }

    /// Parses the engine's word; unknown words count as `Dead`.
    pub fn parse(s: &str) -> ContainerState {
        match s {
            "created" => ContainerState::Created,
            "running" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "restarting" => ContainerState::Restarting,
            "removing" => ContainerState::Removing,
            "exited" => ContainerState::Exited,
            _ => ContainerState::Dead,
        }
    }
}

/// The health of a container with a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No health check.
    None,
    /// Within the start period or not checked yet.
    Starting,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
}

/// A published port of a running container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublishedPort {
    /// Host address.
    pub host_ip: String,
    /// Host port (0 when not published).
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
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
    /// The engine's human status (`Up 3 seconds (healthy)`).
    pub status: String,
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
}

/// A port to publish.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortBinding {
    /// Container port.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Host address; empty for all.
    pub host_ip: String,
    /// Host port or range; empty for a random one.
    pub host_port: String,
}

/// A mount into a container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// A health check for a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthcheckSpec {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UlimitSpec {
    /// Name (`nofile`, `nproc` ...).
    pub name: String,
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// What a container should be.
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// Exposed container ports, `port/proto`.
    pub exposed: Vec<String>,
    /// Published ports.
    pub ports: Vec<PortBinding>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// `host`, `none`, `container:<id>`, or empty for the attachments below.
    pub network_mode: String,
    /// Networks, the first one given at creation.
    pub networks: Vec<NetworkAttachment>,
    /// `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub restart: String,
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
    /// `/etc/hosts` entries, `host:ip`.
    pub extra_hosts: Vec<String>,
    /// DNS servers.
    pub dns: Vec<String>,
    /// DNS options.
    pub dns_opt: Vec<String>,
    /// DNS search domains.
    pub dns_search: Vec<String>,
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
    /// `/dev/shm` size, bytes.
    pub shm_size: i64,
    /// Log driver.
    pub log_driver: String,
    /// Log options.
    pub log_opts: BTreeMap<String, String>,
    /// IPC namespace.
    pub ipc: String,
    /// PID namespace.
    pub pid: String,
    /// Devices, `host:container:perms`.
    pub devices: Vec<String>,
    /// Extra groups.
    pub group_add: Vec<String>,
    /// Platform (`linux/amd64`).
    pub platform: String,
    /// OCI runtime.
    pub runtime: String,
    /// Containers whose volumes to mount.
    pub volumes_from: Vec<String>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Image id.
    pub id: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Size in bytes.
    pub size: i64,
    /// Creation time, seconds since the epoch.
    pub created: i64,
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
    /// Extra hosts, `host:ip`.
    pub extra_hosts: Vec<String>,
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
}

/// One line (or chunk) of container output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// From standard error rather than standard output.
    pub stderr: bool,
    /// The bytes, as text.
    pub text: String,
}

/// An engine event about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Seconds since the epoch.
    pub time: i64,
    /// The object kind (`container`, `network` ...).
    pub kind: String,
    /// What happened (`start`, `die`, `health_status: healthy` ...).
    pub action: String,
    /// The object id.
    pub id: String,
    /// The object's attributes (labels, name, exit code ...).
    pub attributes: BTreeMap<String, String>,
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

/// A running process's streams.
pub struct Session {
    /// The exec id (empty for an attach).
    pub id: String,
    /// Its output, as it comes.
    pub output: Option<crate::BoxStream<LogLine>>,
    /// Its input, when asked for.
    pub input: Option<Input>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
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
