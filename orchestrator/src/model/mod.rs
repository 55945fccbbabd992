//! The normalized compose project that the rest of rcompose works with.
//!
//! The loader produces it; nothing here reads files. Fields follow the
//! compose-spec names; serializing a [`Project`] gives the canonical form that
//! `docker compose config` prints (long syntax everywhere, durations and byte
//! amounts in Compose's spelling, empty fields left out).

pub mod values;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use values::{
    lenient_bool, lenient_i64, lenient_opt_bool, lenient_opt_f32, lenient_opt_i64,
    lenient_opt_string, lenient_opt_u64, lenient_string, lenient_string_list, lenient_u32,
};
pub use values::{
    Bytes, Duration, FileMode, HostsList, Mapping, MappingWithEquals, ShellCommand, StringList,
    Ulimit,
};

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// A whole compose project, after loading and normalization.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// The project name (normalized).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The services, by name.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    /// Networks, by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Network>,
    /// Named volumes, by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Volume>,
    /// Secrets, by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, FileObject>,
    /// Configs, by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, FileObject>,
    /// AI models, by key (kept as written; Compose prints them in YAML only).
    #[serde(default, skip_serializing)]
    pub models: BTreeMap<String, Value>,
    /// Top-level `x-` extensions, kept as written.
    #[serde(skip)]
    pub extensions: BTreeMap<String, Value>,
    /// Services present in the files but not enabled by the active profiles.
    #[serde(skip)]
    pub disabled_services: BTreeMap<String, Service>,
    /// The project directory (absolute).
    #[serde(skip)]
    pub working_dir: String,
    /// The compose files the project was loaded from (absolute).
    #[serde(skip)]
    pub config_files: Vec<String>,
    /// `x-` keys written inside the objects of the project (a network, a
    /// service's build, a volume mount ...), with where they were: Compose
    /// keeps them and prints them in YAML, never in JSON.
    #[serde(skip)]
    pub nested_extensions: Vec<NestedExtensions>,
    /// Networks, volumes, secrets and configs whose `name` was written as
    /// an empty string (an unset variable), as (kind, key): they run under
    /// the default name, and are printed with none, as Compose prints them.
    #[serde(skip)]
    pub unnamed: std::collections::BTreeSet<(String, String)>,
}

/// The `x-` keys of one object below the top level.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NestedExtensions {
    /// Where the object is, from the top of the project (`networks`, `front`).
    pub path: Vec<Step>,
    /// Its `x-` keys, kept as written.
    pub values: BTreeMap<String, Value>,
}

/// One step of a [`NestedExtensions`] path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// One service of a project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Profiles that enable this service; none means always enabled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// OCI annotations.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub annotations: Mapping,
    /// Whether `up` attaches to this service's output.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_bool"
    )]
    pub attach: Option<bool>,
    /// How to build the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    /// `develop`: the watch rules of `rcompose watch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub develop: Option<Develop>,
    /// Block IO limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blkio_config: Option<Blkio>,
    /// Added kernel capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Dropped kernel capabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Parent cgroup.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cgroup_parent: String,
    /// Cgroup namespace (`host` or `private`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cgroup: String,
    /// Number of usable CPUs (Windows).
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "lenient_i64"
    )]
    pub cpu_count: i64,
    /// Usable CPU percentage (Windows).
    #[serde(
        default,
        skip_serializing_if = "values::no_f32",
        serialize_with = "values::go_f32",
        deserialize_with = "lenient_opt_f32"
    )]
    pub cpu_percent: Option<f32>,
    /// CFS period.
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "lenient_i64"
    )]
    pub cpu_period: i64,
    /// CFS quota.
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "lenient_i64"
    )]
    pub cpu_quota: i64,
    /// Real-time period.
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "lenient_i64"
    )]
    pub cpu_rt_period: i64,
    /// Real-time runtime.
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "lenient_i64"
    )]
    pub cpu_rt_runtime: i64,
    /// CPU limit.
    #[serde(
        default,
        skip_serializing_if = "values::no_f32",
        serialize_with = "values::go_f32",
        deserialize_with = "lenient_opt_f32"
    )]
    pub cpus: Option<f32>,
    /// CPUs the service may run on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpuset: String,
    /// Relative CPU weight.
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "lenient_i64"
    )]
    pub cpu_shares: i64,
    /// The command; `None` means the image's default (printed as `null`).
    #[serde(default)]
    pub command: Option<ShellCommand>,
    /// Configs mounted into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileReference>,
    /// Fixed container name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_name: String,
    /// Credential spec (Windows), kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_spec: Option<Value>,
    /// Services this one depends on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, Dependency>,
    /// Deployment settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
    /// Device cgroup rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_cgroup_rules: Vec<String>,
    /// Devices mapped into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// DNS servers.
    #[serde(default, skip_serializing_if = "StringList::is_empty")]
    pub dns: StringList,
    /// DNS options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    /// DNS search domains.
    #[serde(default, skip_serializing_if = "StringList::is_empty")]
    pub dns_search: StringList,
    /// Domain name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domainname: String,
    /// The entrypoint; `None` means the image's default (printed as `null`).
    #[serde(default)]
    pub entrypoint: Option<ShellCommand>,
    /// A provider service, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Value>,
    /// Environment variables; `None` values are taken from the caller's environment at run time.
    #[serde(default, skip_serializing_if = "MappingWithEquals::is_empty")]
    pub environment: MappingWithEquals,
    /// Env files; emptied by normalization, which folds them into `environment`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_file: Vec<EnvFile>,
    /// Exposed ports (container side only).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient_string_list"
    )]
    pub expose: Vec<String>,
    /// `extends`; resolved by the loader, so always `None` in a loaded project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<Extends>,
    /// Links to containers outside the project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_links: Vec<String>,
    /// Extra `/etc/hosts` entries.
    #[serde(default, skip_serializing_if = "HostsList::is_empty")]
    pub extra_hosts: HostsList,
    /// Additional groups.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient_string_list"
    )]
    pub group_add: Vec<String>,
    /// GPU requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<DeviceRequest>,
    /// Host name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Image reference.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "lenient_string"
    )]
    pub image: String,
    /// Run an init process.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_bool"
    )]
    pub init: Option<bool>,
    /// IPC namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipc: String,
    /// Isolation technology.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub isolation: String,
    /// Container labels.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub labels: Mapping,
    /// Files of labels.
    #[serde(default, skip_serializing_if = "StringList::is_empty")]
    pub label_file: StringList,
    /// Links (`service` or `service:alias`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// Logging driver and options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Memory limit.
    #[serde(default, skip_serializing_if = "values::no_bytes")]
    pub mem_limit: Option<Bytes>,
    /// Memory soft limit.
    #[serde(default, skip_serializing_if = "values::no_bytes")]
    pub mem_reservation: Option<Bytes>,
    /// Memory plus swap limit.
    #[serde(default, skip_serializing_if = "values::no_bytes")]
    pub memswap_limit: Option<Bytes>,
    /// Swappiness.
    #[serde(default, skip_serializing_if = "values::no_bytes")]
    pub mem_swappiness: Option<Bytes>,
    /// MAC address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
    /// Models used by the service, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Value>,
    /// Network mode (`host`, `none`, `service:x`, `container:x`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network_mode: String,
    /// Networks the service joins; a `None` value means default settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Option<ServiceNetwork>>,
    /// Disable the OOM killer.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub oom_kill_disable: bool,
    /// OOM score adjustment.
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "lenient_i64"
    )]
    pub oom_score_adj: i64,
    /// PID namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pid: String,
    /// Process limit.
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "lenient_i64"
    )]
    pub pids_limit: i64,
    /// Target platform.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub platform: String,
    /// Published ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Privileged mode.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub privileged: bool,
    /// When to pull the image.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pull_policy: String,
    /// How old a pulled image may be before `pull_policy: refresh` pulls it
    /// again. Compose v2.40 reads it and does not print it.
    #[serde(default, skip_serializing)]
    pub pull_refresh_after: String,
    /// Read-only root filesystem.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub read_only: bool,
    /// Restart policy.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restart: String,
    /// OCI runtime.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runtime: String,
    /// Number of replicas.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_i64"
    )]
    pub scale: Option<i64>,
    /// Secrets mounted into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileReference>,
    /// Security options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Size of `/dev/shm`.
    #[serde(default, skip_serializing_if = "values::no_bytes")]
    pub shm_size: Option<Bytes>,
    /// Keep stdin open.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub stdin_open: bool,
    /// Time to wait after the stop signal before killing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<Duration>,
    /// Signal that stops the container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    /// Storage driver options.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub storage_opt: Mapping,
    /// Kernel parameters.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub sysctls: Mapping,
    /// tmpfs mounts.
    #[serde(default, skip_serializing_if = "StringList::is_empty")]
    pub tmpfs: StringList,
    /// Allocate a TTY.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub tty: bool,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// Mount the engine's API socket.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub use_api_socket: bool,
    /// User to run as.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "lenient_string"
    )]
    pub user: String,
    /// User namespace mode.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub userns_mode: String,
    /// UTS namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uts: String,
    /// Mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// Mount the volumes of other services or containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<String>,
    /// Working directory inside the container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// Commands run in the container after it starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_start: Vec<Hook>,
    /// Commands run in the container before it stops.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_stop: Vec<Hook>,
    /// The service's `x-` extensions, kept as written.
    #[serde(skip)]
    pub extensions: BTreeMap<String, Value>,
}

/// `build`: how to build a service's image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// Build context (absolute path or URL).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub context: String,
    /// Dockerfile, relative to the context.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dockerfile: String,
    /// Inline Dockerfile content.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dockerfile_inline: String,
    /// Extra privileges for the build.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entitlements: Vec<String>,
    /// Build arguments.
    #[serde(default, skip_serializing_if = "MappingWithEquals::is_empty")]
    pub args: MappingWithEquals,
    /// Provenance attestation.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_string"
    )]
    pub provenance: Option<String>,
    /// SBOM attestation.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_string"
    )]
    pub sbom: Option<String>,
    /// SSH agent sockets or keys, as `id=path` (`default` alone allowed).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "values::ssh_list"
    )]
    pub ssh: Vec<String>,
    /// Image labels.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub labels: Mapping,
    /// Cache sources.
    #[serde(default, skip_serializing_if = "StringList::is_empty")]
    pub cache_from: StringList,
    /// Cache destinations.
    #[serde(default, skip_serializing_if = "StringList::is_empty")]
    pub cache_to: StringList,
    /// Disable the cache.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub no_cache: bool,
    /// Named additional contexts.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub additional_contexts: Mapping,
    /// Always pull base images.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub pull: bool,
    /// Extra hosts during the build.
    #[serde(default, skip_serializing_if = "HostsList::is_empty")]
    pub extra_hosts: HostsList,
    /// Isolation technology.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub isolation: String,
    /// Network during the build.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// Stage to build.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Build secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileReference>,
    /// `/dev/shm` size during the build.
    #[serde(default, skip_serializing_if = "values::no_bytes")]
    pub shm_size: Option<Bytes>,
    /// Extra image tags.
    #[serde(default, skip_serializing_if = "StringList::is_empty")]
    pub tags: StringList,
    /// Ulimits during the build.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// Target platforms.
    #[serde(default, skip_serializing_if = "StringList::is_empty")]
    pub platforms: StringList,
    /// Privileged build.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub privileged: bool,
}

/// One `depends_on` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// `service_started`, `service_healthy` or `service_completed_successfully`.
    #[serde(default = "default_condition")]
    pub condition: String,
    /// Restart this service when the dependency is updated.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub restart: bool,
    /// Whether a missing dependency is an error.
    #[serde(default = "default_true", deserialize_with = "lenient_bool")]
    pub required: bool,
}

fn default_condition() -> String {
    "service_started".into()
}

fn default_true() -> bool {
    true
}

/// A lifecycle hook: a command run inside the container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    /// The command (always printed, `null` when unset).
    #[serde(default)]
    pub command: Option<ShellCommand>,
    /// User to run as.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "lenient_string"
    )]
    pub user: String,
    /// Run privileged.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub privileged: bool,
    /// Working directory.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// Extra environment.
    #[serde(default, skip_serializing_if = "MappingWithEquals::is_empty")]
    pub environment: MappingWithEquals,
}

/// `develop`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Develop {
    /// Watch rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<WatchRule>,
}

/// One `develop.watch` rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRule {
    /// Watched path (absolute).
    pub path: String,
    /// `sync`, `rebuild`, `restart`, `sync+restart`, `sync+exec`.
    pub action: String,
    /// Destination in the container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Command for `sync+exec` (Compose always prints it).
    #[serde(default)]
    pub exec: Hook,
    /// Patterns to include.
    #[serde(default, skip_serializing_if = "StringList::is_empty")]
    pub include: StringList,
    /// Patterns to ignore.
    #[serde(default, skip_serializing_if = "StringList::is_empty")]
    pub ignore: StringList,
    /// Sync everything when starting.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub initial_sync: bool,
}

/// `blkio_config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blkio {
    /// Relative weight.
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "lenient_i64"
    )]
    pub weight: i64,
    /// Per-device weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weight_device: Vec<WeightDevice>,
    /// Read rate limits, bytes per second.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_read_bps: Vec<ThrottleDevice>,
    /// Read rate limits, operations per second.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_read_iops: Vec<ThrottleDevice>,
    /// Write rate limits, bytes per second.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_write_bps: Vec<ThrottleDevice>,
    /// Write rate limits, operations per second.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_write_iops: Vec<ThrottleDevice>,
}

/// A device weight (Compose prints these fields capitalized).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightDevice {
    /// Device path.
    #[serde(rename(serialize = "Path"))]
    pub path: String,
    /// Weight.
    #[serde(rename(serialize = "Weight"), deserialize_with = "lenient_i64")]
    pub weight: i64,
}

/// A device rate limit (Compose prints these fields capitalized).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleDevice {
    /// Device path.
    #[serde(rename(serialize = "Path"))]
    pub path: String,
    /// Rate.
    #[serde(rename(serialize = "Rate"))]
    pub rate: Bytes,
}

/// `deploy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// `replicated` or `global`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Number of replicas.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_i64"
    )]
    pub replicas: Option<i64>,
    /// Service labels.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub labels: Mapping,
    /// Update settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
    /// Rollback settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    /// Resource limits and reservations.
    #[serde(default)]
    pub resources: Resources,
    /// Restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// Placement (always printed, as Compose does).
    #[serde(default)]
    pub placement: Placement,
    /// `vip` or `dnsrr`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint_mode: String,
}

/// `deploy.update_config` and `deploy.rollback_config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// Containers updated at once.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_u64"
    )]
    pub parallelism: Option<u64>,
    /// Wait between batches.
    #[serde(default, skip_serializing_if = "values::no_duration")]
    pub delay: Option<Duration>,
    /// `continue`, `rollback` or `pause`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failure_action: String,
    /// Time to watch for failure.
    #[serde(default, skip_serializing_if = "values::no_duration")]
    pub monitor: Option<Duration>,
    /// Tolerated failure rate.
    #[serde(
        default,
        skip_serializing_if = "values::no_f32",
        serialize_with = "values::go_f32",
        deserialize_with = "lenient_opt_f32"
    )]
    pub max_failure_ratio: Option<f32>,
    /// `stop-first` or `start-first`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub order: String,
}

/// `deploy.placement`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Constraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Preferences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PlacementPreference>,
    /// Replicas per node.
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "lenient_i64"
    )]
    pub max_replicas_per_node: i64,
}

/// One placement preference.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementPreference {
    /// The label to spread over.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub spread: String,
}

/// A device request (GPUs), in `deploy.resources.reservations.devices` or `gpus`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRequest {
    /// Capabilities (`gpu`, `utility` ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Driver.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// How many devices; -1 for all.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::device_count"
    )]
    pub count: Option<i64>,
    /// Specific devices.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient_string_list"
    )]
    pub device_ids: Vec<String>,
    /// Driver options.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub options: Mapping,
}

/// `deploy.resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Upper limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Resource>,
    /// Guaranteed amounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Resource>,
}

/// One set of resource amounts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// CPUs.
    #[serde(
        default,
        skip_serializing_if = "values::no_f32",
        serialize_with = "values::go_f32",
        deserialize_with = "lenient_opt_f32"
    )]
    pub cpus: Option<f32>,
    /// Memory.
    #[serde(default, skip_serializing_if = "values::no_bytes")]
    pub memory: Option<Bytes>,
    /// Processes.
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "lenient_i64"
    )]
    pub pids: i64,
    /// Device requests (GPUs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceRequest>,
    /// Generic resources, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_resources: Option<Value>,
}

/// `deploy.restart_policy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// `none`, `on-failure` or `any`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub condition: String,
    /// Delay between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// Maximum attempts.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_u64"
    )]
    pub max_attempts: Option<u64>,
    /// Window to decide success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// A device mapping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Host path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Container path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// cgroup permissions (`rwm`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub permissions: String,
}

/// One `env_file` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvFile {
    /// Path of the file.
    pub path: String,
    /// Whether a missing file is an error.
    #[serde(default = "default_true", deserialize_with = "lenient_bool")]
    pub required: bool,
    /// `raw` to take values literally.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub format: String,
}

/// `extends`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extends {
    /// The file holding the base service.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file: String,
    /// The base service.
    pub service: String,
}

/// `healthcheck`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    /// The test: `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", "..."]`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "healthcheck_test"
    )]
    pub test: Vec<String>,
    /// Time allowed for one check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Time between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Consecutive failures before unhealthy.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_u64"
    )]
    pub retries: Option<u64>,
    /// Grace period after start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<Duration>,
    /// Interval during the start period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<Duration>,
    /// Disable the image's health check.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub disable: bool,
}

/// `healthcheck.test`: a string means `CMD-SHELL`.
fn healthcheck_test<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::String(s) => Ok(vec!["CMD-SHELL".to_string(), s]),
        other => StringList::deserialize(other)
            .map(|l| l.0)
            .map_err(serde::de::Error::custom),
    }
}

/// `logging`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    /// Logging driver.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// Driver options.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub options: Mapping,
}

/// A service's settings on one network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNetwork {
    /// Extra DNS names on this network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Driver options for the endpoint.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub driver_opts: Mapping,
    /// Gateway priority.
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "lenient_i64"
    )]
    pub gw_priority: i64,
    /// Interface name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    /// Static IPv4 address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipv4_address: String,
    /// Static IPv6 address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipv6_address: String,
    /// Link-local addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_local_ips: Vec<String>,
    /// MAC address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
    /// Connection order priority.
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "lenient_i64"
    )]
    pub priority: i64,
}

/// A port, in long syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// A name for the port.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `ingress` or `host`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Host address to bind.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
    /// Container port.
    #[serde(default, deserialize_with = "lenient_u32")]
    pub target: u32,
    /// Host port or range; empty for a random one.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "lenient_string"
    )]
    pub published: String,
    /// `tcp` or `udp`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Application protocol.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app_protocol: String,
}

/// A mount, in long syntax.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// `bind`, `volume`, `tmpfs`, `image`, `npipe` or `cluster`.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Host path, volume name or image.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Path in the container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Mount read-only.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub read_only: bool,
    /// Consistency (macOS).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub consistency: String,
    /// Bind options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<BindOptions>,
    /// Volume options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeOptions>,
    /// tmpfs options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsOptions>,
    /// Image mount options, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Value>,
}

/// Options of a bind mount.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindOptions {
    /// SELinux relabeling (`z` or `Z`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selinux: String,
    /// Mount propagation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub propagation: String,
    /// Create the host path when missing (set by the short syntax).
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub create_host_path: bool,
    /// Recursive read-only handling.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recursive: String,
}

/// Options of a volume mount.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeOptions {
    /// Labels for the volume.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub labels: Mapping,
    /// Do not copy the image's data into a new volume.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub nocopy: bool,
    /// Mount a sub-path of the volume.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subpath: String,
}

/// Options of a tmpfs mount.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TmpfsOptions {
    /// Size limit.
    #[serde(default, skip_serializing_if = "values::no_bytes")]
    pub size: Option<Bytes>,
    /// File mode.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "values::file_mode_number"
    )]
    pub mode: Option<u32>,
}

/// A secret or config mounted into a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileReference {
    /// The top-level secret or config.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Path in the container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Owner user id.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "lenient_string"
    )]
    pub uid: String,
    /// Owner group id.
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "lenient_string"
    )]
    pub gid: String,
    /// File mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
}

/// A top-level network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Name on the engine.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Network driver.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// Driver options.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub driver_opts: Mapping,
    /// Address management (always printed, as Compose does).
    #[serde(default)]
    pub ipam: Ipam,
    /// Created outside the project.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub external: bool,
    /// No outside connectivity.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub internal: bool,
    /// Standalone containers may attach.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub attachable: bool,
    /// Labels.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub labels: Mapping,
    /// Enable IPv4.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_bool"
    )]
    pub enable_ipv4: Option<bool>,
    /// Enable IPv6.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt_bool"
    )]
    pub enable_ipv6: Option<bool>,
}

/// A network's address management.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipam {
    /// IPAM driver.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// Address pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<IpamPool>,
    /// Driver options (Compose does not print them).
    #[serde(default, skip_serializing)]
    pub options: Mapping,
}

/// One IPAM address pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamPool {
    /// Subnet in CIDR form.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    /// Gateway address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// Range to allocate from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip_range: String,
    /// Reserved addresses.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub aux_addresses: Mapping,
}

/// A top-level named volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// Name on the engine.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Volume driver.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// Driver options.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub driver_opts: Mapping,
    /// Created outside the project.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub external: bool,
    /// Labels.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub labels: Mapping,
}

/// A top-level secret or config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileObject {
    /// Name on the engine.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Source file (absolute).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file: String,
    /// Source environment variable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub environment: String,
    /// Inline content.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
    /// Created outside the project.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "lenient_bool"
    )]
    pub external: bool,
    /// Labels.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub labels: Mapping,
    /// Driver.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    /// Driver options.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub driver_opts: Mapping,
    /// Template driver.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub template_driver: String,
}
