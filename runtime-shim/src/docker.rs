//! The Docker Engine implementation of [`crate::Runtime`], over `bollard`.
//!
//! [`DockerRuntime`] speaks the Engine API through a unix socket or plain TCP
//! (`DOCKER_HOST`), with the API version negotiated down to the engine's
//! (Docker 20.10 speaks 1.41). Every bollard type stays inside this module:
//! requests are built from rcompose's types and answers converted back.
//!
//! Things a caller must know:
//! - **Networks.** API 1.41 accepts a single endpoint at creation: a
//!   container is created on the *first* entry of [`ContainerSpec::networks`]
//!   (its network mode) and connected to the others before `create_container`
//!   returns; if a connection fails, the container is removed again.
//! - **Mounts.** A bind mount with `create_host_path = false` goes through the
//!   engine's `Mounts` API, which fails when the host path is missing; one
//!   with `create_host_path = true` (or with an SELinux relabel option, which
//!   only that syntax can express) goes through `Binds`, which creates it.
//!   Volumes and tmpfs always use `Mounts`.
//! - **Errors.** 404 becomes [`RuntimeError::NotFound`] (with the kind the
//!   engine's message names: creating a container from a missing image is
//!   `NotFound { kind: "image" }`); 409 becomes [`RuntimeError::Conflict`]
//!   when it means a name is taken (creating or renaming), and
//!   [`RuntimeError::Engine`] with the engine's message otherwise (removing a
//!   running container, a volume in use, killing a stopped container); an
//!   unreachable engine or one that does not answer in time is
//!   [`RuntimeError::Unavailable`].
//! - **Features newer than the engine** (a volume `subpath`, a health check
//!   `start_interval`, a network `gw_priority`, a per-network MAC address
//!   when connecting) are refused with an error naming the API version they
//!   need, rather than silently dropped.
//! - **Streams.** Log lines are the engine's frames (normally one line each,
//!   newline included). The event stream starts at the engine's clock at the
//!   time of the call, so no event after subscribing is missed. Build output
//!   is split into lines; a build error ends the stream with an `Err` item,
//!   and so does a pull error. Archive streams ([`Runtime::copy_from`],
//!   [`Runtime::export`]) fail at the call, not on their first item, when the
//!   container or path is missing (`NotFound { kind: "path" }` for a path).
//! - **Sessions.** Exec and attach output is demultiplexed into
//!   [`LogLine`]s (with a TTY everything is standard output); closing
//!   (shutting down) a session's input ends the process's standard input.
//!   Pulls send no registry credentials.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as BollardError;
use bollard::models as m;
use bollard::query_parameters as q;
use bollard::{BollardRequest, Docker};
use futures_util::{stream, StreamExt};
use tokio::sync::mpsc;

use crate::context::{plan_context, write_context};
use crate::reference;
use crate::{
    Archives, BoxStream, BuildSpec, CommitSpec, Container, ContainerDetails, ContainerEvent,
    ContainerSpec, ContainerState, Device, EventKind, Exec, ExecSpec, ExtraHost, Health,
    HealthTest, HealthcheckSpec, HostPort, Image, Images, LabelFilter, LoadedImage, LogLine,
    LogOptions, Logs, Monitor, Mount, Namespace, Network, NetworkAttachment, NetworkMode,
    NetworkSpec, Process, Protocol, PublishedPort, Resources, RestartPolicy, Result, Runtime,
    RuntimeError, Session, Stats, Status, Volume, VolumeSpec, VolumesFrom,
};

/// Where the engine is when `DOCKER_HOST` is unset.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// How long an ordinary call may take before the engine counts as unavailable.
const CALL_TIMEOUT_SECS: u64 = 300;
/// How long a build may take to send its context and answer.
const BUILD_TIMEOUT_SECS: u64 = 3600;
/// Chunk size of the build context stream.
const CONTEXT_CHUNK: usize = 64 * 1024;

/// An Engine API version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ApiVersion(usize, usize);

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// The API version that first accepted per-endpoint MAC addresses and
/// `StartInterval`, and that always checks network names for duplicates.
const API_1_44: ApiVersion = ApiVersion(1, 44);
/// The API version that first accepted volume sub-paths.
const API_1_45: ApiVersion = ApiVersion(1, 45);
/// The API version that first accepted a gateway priority.
const API_1_48: ApiVersion = ApiVersion(1, 48);

/// A connection to a Docker Engine.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    host: String,
    api: ApiVersion,
}

impl DockerRuntime {
    /// Connects to the engine named by `DOCKER_HOST` (`unix://` or `tcp://`),
    /// by default the local socket `/var/run/docker.sock`, and negotiates the
    /// API version with it.
    pub async fn connect() -> Result<DockerRuntime> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        Self::connect_to(&host).await
    }

    /// Connects to the engine at `host` (`unix:///path` or `tcp://host[:port]`)
    /// and negotiates the API version with it.
    pub async fn connect_to(host: &str) -> Result<DockerRuntime> {
        let unavailable = |why: String| RuntimeError::Unavailable(format!("{host}: {why}"));
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            if !Path::new(path).exists() {
                return Err(unavailable(format!(
                    "no socket at {path}; is the Docker engine running?"
                )));
            }
            Docker::connect_with_unix(path, CALL_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else if let Some(rest) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            if std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty()) {
                return Err(unavailable(
                    "TLS connections (DOCKER_TLS_VERIFY) are not supported".into(),
                ));
            }
            Docker::connect_with_http(
                &with_default_port(rest, 2375),
                CALL_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            )
        } else {
            return Err(unavailable(
                "unsupported address; DOCKER_HOST must be unix:///path or tcp://host:port".into(),
            ));
        }
        .map_err(|e| unavailable(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unavailable(format!("the engine does not answer: {e}")))?;
        let v = docker.client_version();
        Ok(DockerRuntime {
            docker,
            host: host.to_string(),
            api: ApiVersion(v.major_version, v.minor_version),
        })
    }

    /// The engine's address, as given.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The negotiated API version, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        self.api.to_string()
    }

    /// Connects a created container to one more network.
    async fn connect_network(&self, container: &str, attachment: &NetworkAttachment) -> Result<()> {
        let network = attachment.network.as_str();
        if !attachment.mac_address.is_empty() && self.api < API_1_44 {
            return Err(RuntimeError::Engine(format!(
                "a MAC address on network {network} requires Docker Engine API {API_1_44} or later (the engine speaks {}); only the first network can have one at creation",
                self.api
            )));
        }
        let request = m::NetworkConnectRequest {
            container: container.to_string(),
            endpoint_config: Some(endpoint_settings(attachment, self.api)?),
        };
        self.docker
            .connect_network(network, request)
            .await
            .map_err(err("network", network))
    }

    /// Whether every endpoint that network `name` still counts belongs to
    /// a container that no longer exists (the engine has yet to release
    /// it). False when the network cannot be read.
    async fn endpoints_are_of_gone_containers(&self, name: &str) -> bool {
        let Ok(network) = self.docker.inspect_network(name, None).await else {
            return false;
        };
        for id in network.containers.unwrap_or_default().into_keys() {
            match self.docker.inspect_container(&id, None).await {
                Err(e) if is_not_found(&e) => {}
                _ => return false,
            }
        }
        true
    }

    /// A client whose calls may take `secs` seconds.
    fn patient(&self, secs: u64) -> Docker {
        self.docker.clone().with_timeout(Duration::from_secs(secs))
    }

    /// A client that sends `body` as the JSON body of its requests, for
    /// fields that this engine understands but bollard's models lack.
    fn with_json_body(&self, body: &serde_json::Value) -> Result<Docker> {
        let bytes = serde_json::to_vec(body).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        Ok(self
            .docker
            .clone()
            .with_request_modifier(move |req: BollardRequest| {
                let (parts, _) = req.into_parts();
                BollardRequest::from_parts(parts, bollard::body_full(bytes.clone().into()))
            }))
    }

    /// The engine's clock, as `seconds.nanoseconds`, or ours if it won't say.
    async fn engine_now(&self) -> String {
        let engine = self
            .docker
            .info()
            .await
            .ok()
            .and_then(|i| i.system_time)
            .and_then(|t| parse_rfc3339(&t));
        let (secs, nanos) = engine.unwrap_or_else(|| {
            let d = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            (
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
            )
        });
        format!("{secs}.{nanos:09}")
    }
}

/// Appends `:port` to a `host` that has none.
fn with_default_port(addr: &str, port: u16) -> String {
    let authority = addr.split('/').next().unwrap_or(addr);
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port {
        addr.to_string()
    } else {
        format!("{authority}:{port}")
    }
}

// ---------------------------------------------------------------------------
// Errors

/// What a 409 means for the call that got it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum On409 {
    /// A name is taken: [`RuntimeError::Conflict`].
    Exists,
    /// Anything else: [`RuntimeError::Engine`] with the engine's message.
    Refused,
}

/// Converts a bollard error about the object `kind` `name`.
fn convert_error(e: BollardError, kind: &'static str, name: &str, on409: On409) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } => {
            let (kind, name) = not_found_subject(&message, kind, name);
            RuntimeError::NotFound { kind, name }
        }
        BollardError::DockerResponseServerError {
            status_code: 409,
            message,
        } => {
            if on409 == On409::Exists {
                RuntimeError::Conflict {
                    kind,
                    name: name.to_string(),
                }
            } else {
                RuntimeError::Engine(message)
            }
        }
        BollardError::DockerResponseServerError { message, .. } => RuntimeError::Engine(message),
        BollardError::DockerStreamError { error } => RuntimeError::Engine(error),
        BollardError::RequestTimeoutError => {
            RuntimeError::Unavailable("the engine did not answer in time".into())
        }
        e @ (BollardError::HyperLegacyError { .. }
        | BollardError::SocketNotFoundError(_)
        | BollardError::IOError { .. }) => RuntimeError::Unavailable(e.to_string()),
        e => RuntimeError::Engine(e.to_string()),
    }
}

/// A mapper for `map_err` about the object `kind` `name`; 409 is a refusal.
fn err<'a>(kind: &'static str, name: &'a str) -> impl FnOnce(BollardError) -> RuntimeError + 'a {
    move |e| convert_error(e, kind, name, On409::Refused)
}

/// A mapper for `map_err` where 409 means the name is taken.
fn err_exists<'a>(
    kind: &'static str,
    name: &'a str,
) -> impl FnOnce(BollardError) -> RuntimeError + 'a {
    move |e| convert_error(e, kind, name, On409::Exists)
}

/// Which object a 404 message is about: the engine says `No such image: x`
/// when creating a container from a missing image, `network x not found`
/// when connecting to a missing network.
fn not_found_subject(message: &str, kind: &'static str, name: &str) -> (&'static str, String) {
    let lower = message.to_ascii_lowercase();
    let after_colon = || {
        message
            .split_once(": ")
            .map(|(_, n)| n.trim().to_string())
            .unwrap_or_else(|| name.to_string())
    };
    if lower.starts_with("no such image") {
        ("image", after_colon())
    } else if lower.starts_with("no such container") {
        ("container", after_colon())
    } else if lower.contains("no such volume") {
        ("volume", name.to_string())
    } else if lower.starts_with("network ") && lower.contains("not found") {
        let n = message
            .strip_prefix("network ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or(name);
        ("network", n.to_string())
    } else {
        (kind, name.to_string())
    }
}

fn is_not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

// ---------------------------------------------------------------------------
// Small conversions

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn nonempty_vec(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn nonempty_map(map: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    (!map.is_empty()).then(|| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn nonzero(n: i64) -> Option<i64> {
    (n != 0).then_some(n)
}

fn sorted(map: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    map.unwrap_or_default().into_iter().collect()
}

/// Label filters as the engine's `filters` parameter (`key` or `key=value`).
fn label_filters(filter: &[LabelFilter]) -> HashMap<String, Vec<String>> {
    let mut filters = HashMap::new();
    if !filter.is_empty() {
        let labels = filter
            .iter()
            .map(|f| match &f.value {
                Some(v) => format!("{}={v}", f.key),
                None => f.key.clone(),
            })
            .collect();
        filters.insert("label".to_string(), labels);
    }
    filters
}

/// Seconds since the epoch of an RFC 3339 time (`2024-05-01T12:00:00.5+02:00`),
/// with its nanoseconds.
fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let t: jiff::Timestamp = s.parse().ok()?;
    // Whole seconds down, so that the nanoseconds are never negative
    // (before 1970 jiff counts both toward zero).
    let total = t.as_nanosecond();
    let seconds = i64::try_from(total.div_euclid(1_000_000_000)).ok()?;
    let nanos = u32::try_from(total.rem_euclid(1_000_000_000)).ok()?;
    Some((seconds, nanos))
}

fn epoch_seconds(time: Option<&str>) -> i64 {
    time.and_then(parse_rfc3339).map(|(s, _)| s).unwrap_or(0)
}

fn to_i32(n: i64, what: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| RuntimeError::Engine(format!("{what} {n} is out of range")))
}

fn timeout_i32(secs: Option<i64>) -> Option<i32> {
    secs.map(|s| i32::try_from(s.max(-1)).unwrap_or(i32::MAX))
}

fn timeout_budget(secs: Option<i64>) -> u64 {
    CALL_TIMEOUT_SECS + secs.and_then(|s| u64::try_from(s).ok()).unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Container creation

/// A create request: the body, and the container-level MAC address for
/// engines older than API 1.44 (which bollard's model cannot carry).
#[derive(Debug)]
struct CreateRequest {
    body: m::ContainerCreateBody,
    config_mac: Option<String>,
}

fn port_key(port: u16, protocol: Protocol) -> String {
    format!("{port}/{protocol}")
}

fn host_port(port: HostPort) -> String {
    match port {
        HostPort::Any => String::new(),
        HostPort::Fixed(p) => p.to_string(),
        HostPort::Range(a, b) => format!("{a}-{b}"),
    }
}

fn restart_policy(policy: RestartPolicy) -> m::RestartPolicy {
    use m::RestartPolicyNameEnum as N;
    let (name, count) = match policy {
        RestartPolicy::No => (N::NO, None),
        RestartPolicy::Always => (N::ALWAYS, None),
        RestartPolicy::UnlessStopped => (N::UNLESS_STOPPED, None),
        RestartPolicy::OnFailure { max_retries } => (N::ON_FAILURE, max_retries.map(i64::from)),
    };
    m::RestartPolicy {
        name: Some(name),
        maximum_retry_count: count,
    }
}

fn device_mapping(device: &Device) -> m::DeviceMapping {
    m::DeviceMapping {
        path_on_host: Some(device.host_path.clone()),
        path_in_container: Some(device.container_path.clone()),
        cgroup_permissions: Some(device.permissions.clone()),
    }
}

/// `host:ip`, the engine's form.
fn extra_host(entry: &ExtraHost) -> String {
    format!("{}:{}", entry.name, entry.address)
}

/// The engine's `IpcMode` or `PidMode`.
fn namespace_mode(ns: &Namespace) -> Option<String> {
    Some(match ns {
        Namespace::Default => return None,
        Namespace::Private => "private".into(),
        Namespace::Shareable => "shareable".into(),
        Namespace::None => "none".into(),
        Namespace::Host => "host".into(),
        Namespace::Container(c) => format!("container:{c}"),
    })
}

fn volumes_from(v: &VolumesFrom) -> String {
    if v.read_only {
        format!("{}:ro", v.container)
    } else {
        v.container.clone()
    }
}

fn health_test(test: &HealthTest) -> Option<Vec<String>> {
    match test {
        HealthTest::Inherit => None,
        HealthTest::Disabled => Some(vec!["NONE".into()]),
        HealthTest::Exec(args) => Some(
            std::iter::once("CMD".to_string())
                .chain(args.iter().cloned())
                .collect(),
        ),
        HealthTest::Shell(line) => Some(vec!["CMD-SHELL".into(), line.clone()]),
    }
}

fn healthcheck(h: &HealthcheckSpec, api: ApiVersion) -> Result<m::HealthConfig> {
    if h.start_interval_ns != 0 && api < API_1_44 {
        return Err(RuntimeError::Engine(format!(
            "healthcheck start_interval requires Docker Engine API {API_1_44} or later (the engine speaks {api})"
        )));
    }
    Ok(m::HealthConfig {
        test: health_test(&h.test),
        interval: nonzero(h.interval_ns),
        timeout: nonzero(h.timeout_ns),
        retries: nonzero(h.retries),
        start_period: nonzero(h.start_period_ns),
        start_interval: nonzero(h.start_interval_ns),
    })
}

/// The endpoint settings of an attachment. The MAC address is included only
/// where the engine reads it from the endpoint (API 1.44 and later).
fn endpoint_settings(att: &NetworkAttachment, api: ApiVersion) -> Result<m::EndpointSettings> {
    if att.gw_priority != 0 && api < API_1_48 {
        return Err(RuntimeError::Engine(format!(
            "gw_priority on network {} requires Docker Engine API {API_1_48} or later (the engine speaks {api})",
            att.network
        )));
    }
    let ipam = (!att.ipv4_address.is_empty() || !att.ipv6_address.is_empty()).then(|| {
        m::EndpointIpamConfig {
            ipv4_address: nonempty(&att.ipv4_address),
            ipv6_address: nonempty(&att.ipv6_address),
            link_local_ips: None,
        }
    });
    Ok(m::EndpointSettings {
        ipam_config: ipam,
        links: nonempty_vec(&att.links),
        aliases: nonempty_vec(&att.aliases),
        driver_opts: nonempty_map(&att.driver_opts),
        gw_priority: nonzero(att.gw_priority),
        mac_address: if api >= API_1_44 {
            nonempty(&att.mac_address)
        } else {
            None
        },
        ..Default::default()
    })
}

/// Splits the mounts into `Binds` strings and `Mounts` entries.
fn mounts(spec: &[Mount], api: ApiVersion) -> Result<(Vec<String>, Vec<m::Mount>)> {
    let mut binds = Vec::new();
    let mut mounts = Vec::new();
    for mount in spec {
        match mount {
            Mount::Bind {
                source,
                target,
                read_only,
                create_host_path,
                propagation,
                selinux,
            } => {
                if *create_host_path || !selinux.is_empty() {
                    let mut opts: Vec<&str> = Vec::new();
                    if *read_only {
                        opts.push("ro");
                    }
                    if !propagation.is_empty() {
                        opts.push(propagation);
                    }
                    if !selinux.is_empty() {
                        opts.push(selinux);
                    }
                    binds.push(if opts.is_empty() {
                        format!("{source}:{target}")
                    } else {
                        format!("{source}:{target}:{}", opts.join(","))
                    });
                } else {
                    let propagation = if propagation.is_empty() {
                        None
                    } else {
                        Some(
                            propagation
                                .parse::<m::MountBindOptionsPropagationEnum>()
                                .map_err(|_| {
                                    RuntimeError::Engine(format!(
                                        "invalid bind propagation {propagation:?} for {target}"
                                    ))
                                })?,
                        )
                    };
                    mounts.push(m::Mount {
                        target: Some(target.clone()),
                        source: Some(source.clone()),
                        typ: Some(m::MountType::BIND),
                        read_only: read_only.then_some(true),
                        bind_options: propagation.map(|p| m::MountBindOptions {
                            propagation: Some(p),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            }
            Mount::Volume {
                source,
                target,
                read_only,
                nocopy,
                subpath,
            } => {
                if !subpath.is_empty() && api < API_1_45 {
                    return Err(RuntimeError::Engine(format!(
                        "volume subpath for {target} requires Docker Engine API {API_1_45} or later (the engine speaks {api})"
                    )));
                }
                let options = (*nocopy || !subpath.is_empty()).then(|| m::MountVolumeOptions {
                    no_copy: nocopy.then_some(true),
                    subpath: nonempty(subpath),
                    ..Default::default()
                });
                mounts.push(m::Mount {
                    target: Some(target.clone()),
                    source: nonempty(source),
                    typ: Some(m::MountType::VOLUME),
                    read_only: read_only.then_some(true),
                    volume_options: options,
                    ..Default::default()
                });
            }
            Mount::Tmpfs { target, size, mode } => {
                let options = (*size != 0 || *mode != 0).then(|| m::MountTmpfsOptions {
                    size_bytes: nonzero(*size),
                    mode: (*mode != 0).then_some(i64::from(*mode)),
                    options: None,
                });
                mounts.push(m::Mount {
                    target: Some(target.clone()),
                    typ: Some(m::MountType::TMPFS),
                    tmpfs_options: options,
                    ..Default::default()
                });
            }
        }
    }
    Ok((binds, mounts))
}

/// The engine's create request for a container spec (all of it but the
/// name and platform, which are query parameters).
fn create_request(spec: &ContainerSpec, api: ApiVersion) -> Result<CreateRequest> {
    // Ports: every published port is exposed too, as the Docker CLI does.
    let mut exposed: Vec<String> = Vec::new();
    let mut push_exposed = |key: String| {
        if !exposed.contains(&key) {
            exposed.push(key);
        }
    };
    for e in &spec.exposed {
        push_exposed(port_key(e.port, e.protocol));
    }
    let mut bindings: m::PortMap = HashMap::new();
    for p in &spec.ports {
        let key = port_key(p.container_port, p.protocol);
        push_exposed(key.clone());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(m::PortBinding {
                host_ip: Some(p.host_ip.clone()),
                host_port: Some(host_port(p.host_port)),
            });
    }

    let (binds, mount_list) = mounts(&spec.mounts, api)?;

    // Networks: the first attachment at creation, the others connected after.
    let network_mode = match &spec.network_mode {
        NetworkMode::Attachments => spec.networks.first().map(|n| n.network.clone()),
        NetworkMode::Host => Some("host".into()),
        NetworkMode::None => Some("none".into()),
        NetworkMode::Container(c) => Some(format!("container:{c}")),
        NetworkMode::Network(n) => Some(n.clone()),
    };
    let primary = spec
        .networks
        .first()
        .filter(|_| spec.network_mode == NetworkMode::Attachments);
    let mut links = None;
    let networking_config = match primary {
        Some(att) => {
            links = nonempty_vec(&att.links);
            let mut settings = endpoint_settings(att, api)?;
            if api >= API_1_44 && settings.mac_address.is_none() {
                settings.mac_address = nonempty(&spec.mac_address);
            }
            Some(m::NetworkingConfig {
                endpoints_config: Some(HashMap::from([(att.network.clone(), settings)])),
            })
        }
        None => None,
    };
    let config_mac = if api < API_1_44 {
        nonempty(&spec.mac_address).or_else(|| primary.and_then(|a| nonempty(&a.mac_address)))
    } else if primary.is_none() {
        nonempty(&spec.mac_address)
    } else {
        None
    };

    let log_config = (!spec.log_driver.is_empty() || !spec.log_opts.is_empty()).then(|| {
        m::HostConfigLogConfig {
            typ: nonempty(&spec.log_driver),
            config: nonempty_map(&spec.log_opts),
        }
    });
    let devices: Vec<m::DeviceMapping> = spec.devices.iter().map(device_mapping).collect();
    let ulimits: Vec<m::ResourcesUlimits> = spec
        .ulimits
        .iter()
        .map(|u| m::ResourcesUlimits {
            name: Some(u.name.clone()),
            soft: Some(u.soft),
            hard: Some(u.hard),
        })
        .collect();

    let host_config = m::HostConfig {
        binds: (!binds.is_empty()).then_some(binds),
        mounts: (!mount_list.is_empty()).then_some(mount_list),
        network_mode,
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        restart_policy: spec.restart.map(restart_policy),
        init: spec.init,
        readonly_rootfs: spec.read_only.then_some(true),
        privileged: spec.privileged.then_some(true),
        cap_add: nonempty_vec(&spec.cap_add),
        cap_drop: nonempty_vec(&spec.cap_drop),
        security_opt: nonempty_vec(&spec.security_opt),
        tmpfs: nonempty_map(&spec.tmpfs),
        ulimits: (!ulimits.is_empty()).then_some(ulimits),
        sysctls: nonempty_map(&spec.sysctls),
        extra_hosts: (!spec.extra_hosts.is_empty())
            .then(|| spec.extra_hosts.iter().map(extra_host).collect()),
        dns: nonempty_vec(&spec.dns),
        dns_options: nonempty_vec(&spec.dns_opt),
        dns_search: nonempty_vec(&spec.dns_search),
        memory: nonzero(spec.resources.memory),
        memory_reservation: nonzero(spec.resources.memory_reservation),
        memory_swap: nonzero(spec.resources.memory_swap),
        nano_cpus: nonzero(spec.resources.nano_cpus),
        cpu_shares: nonzero(spec.resources.cpu_shares),
        cpuset_cpus: nonempty(&spec.resources.cpuset),
        pids_limit: nonzero(spec.resources.pids_limit),
        shm_size: nonzero(spec.shm_size),
        log_config,
        ipc_mode: namespace_mode(&spec.ipc),
        pid_mode: namespace_mode(&spec.pid),
        devices: (!devices.is_empty()).then_some(devices),
        group_add: nonempty_vec(&spec.group_add),
        runtime: nonempty(&spec.runtime),
        volumes_from: (!spec.volumes_from.is_empty())
            .then(|| spec.volumes_from.iter().map(volumes_from).collect()),
        oom_kill_disable: spec.oom_kill_disable.then_some(true),
        oom_score_adj: nonzero(spec.oom_score_adj),
        userns_mode: nonempty(&spec.userns_mode),
        cgroup_parent: nonempty(&spec.cgroup_parent),
        links,
        ..Default::default()
    };

    let body = m::ContainerCreateBody {
        image: Some(spec.image.clone()),
        hostname: nonempty(&spec.hostname),
        domainname: nonempty(&spec.domainname),
        user: nonempty(&spec.user),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        tty: Some(spec.tty),
        open_stdin: Some(spec.stdin_open),
        stdin_once: Some(spec.stdin_once),
        env: nonempty_vec(&spec.env),
        cmd: spec.command.clone(),
        // An explicit empty entrypoint is sent as `[]`, which overrides the image's.
        entrypoint: spec.entrypoint.clone(),
        healthcheck: spec
            .healthcheck
            .as_ref()
            .map(|h| healthcheck(h, api))
            .transpose()?,
        working_dir: nonempty(&spec.working_dir),
        labels: nonempty_map(&spec.labels),
        stop_signal: nonempty(&spec.stop_signal),
        stop_timeout: spec.stop_timeout,
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    };
    Ok(CreateRequest { body, config_mac })
}

// ---------------------------------------------------------------------------
// Containers: engine answers to rcompose's types

/// The engine's state word in rcompose's terms; what rcompose has no state
/// for (`removing`, `dead`) is stopped, with the engine's word as detail.
fn container_state(word: Option<String>) -> (ContainerState, Option<String>) {
    match word.as_deref().unwrap_or("") {
        "created" => (ContainerState::Created, None),
        "running" => (ContainerState::Running, None),
        "paused" => (ContainerState::Paused, None),
        "restarting" => (ContainerState::Restarting, None),
        "exited" => (ContainerState::Exited, None),
        "removing" => (ContainerState::Exited, Some("Removal In Progress".into())),
        "dead" => (ContainerState::Exited, Some("Dead".into())),
        other => (ContainerState::Exited, Some(other.to_string())),
    }
}

/// Seconds from the engine's human duration (`3 seconds`, `About a minute`,
/// `Less than a second` ...), the inverse of what it printed.
fn human_seconds(text: &str) -> Option<i64> {
    let text = text.trim();
    let fixed = match text {
        "Less than a second" => Some(0),
        "About a minute" => Some(60),
        "About an hour" => Some(3600),
        _ => None,
    };
    if fixed.is_some() {
        return fixed;
    }
    let (n, unit) = text.split_once(' ')?;
    let n: i64 = n.parse().ok()?;
    let unit = match unit.trim_end_matches('s') {
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        "week" => 7 * 86_400,
        "month" => 30 * 86_400,
        "year" => 365 * 86_400,
        _ => return None,
    };
    Some(n * unit)
}

/// A listed container's status from the engine's text (`Up 3 seconds
/// (healthy)`, `Exited (3) 5 minutes ago`): the list carries no times.
fn status_from_text(text: &str, now: i64, detail: Option<String>) -> Status {
    let mut status = Status {
        detail,
        ..Status::default()
    };
    if let Some(rest) = text.strip_prefix("Up ") {
        let (duration, note) = match rest.split_once(" (") {
            Some((d, note)) => (d, note.trim_end_matches(')')),
            None => (rest, ""),
        };
        status.since = human_seconds(duration).map_or(0, |s| now - s);
        status.health = match note {
            "healthy" => Health::Healthy,
            "unhealthy" => Health::Unhealthy,
            "health: starting" => Health::Starting,
            _ => Health::None,
        };
    } else if let Some(rest) = text
        .strip_prefix("Exited (")
        .or_else(|| text.strip_prefix("Restarting ("))
    {
        if let Some((code, ago)) = rest.split_once(") ") {
            status.exit_code = code.parse().unwrap_or(0);
            status.since = human_seconds(ago.trim_end_matches(" ago")).map_or(0, |s| now - s);
        }
    }
    status
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn published_ports(map: Option<m::PortMap>) -> Vec<PublishedPort> {
    let mut ports = Vec::new();
    for (key, bindings) in map.unwrap_or_default() {
        let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let (Ok(container_port), Some(protocol)) = (port.parse::<u16>(), Protocol::parse(protocol))
        else {
            continue;
        };
        match bindings {
            Some(list) if !list.is_empty() => {
                for b in list {
                    ports.push(PublishedPort {
                        host_ip: b.host_ip.unwrap_or_default(),
                        host_port: b
                            .host_port
                            .as_deref()
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(0),
                        container_port,
                        protocol,
                    });
                }
            }
            _ => ports.push(PublishedPort {
                host_ip: String::new(),
                host_port: 0,
                container_port,
                protocol,
            }),
        }
    }
    ports.sort();
    ports
}

fn container_from_summary(c: m::ContainerSummary) -> Container {
    let names = c.names.unwrap_or_default();
    let name = names
        .iter()
        .find(|n| n.trim_start_matches('/').find('/').is_none())
        .or(names.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default();
    let mut ports: Vec<PublishedPort> = c
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| PublishedPort {
            host_ip: p.ip.unwrap_or_default(),
            host_port: p.public_port.unwrap_or(0),
            container_port: p.private_port,
            protocol: p
                .typ
                .and_then(|t| Protocol::parse(t.as_ref()))
                .unwrap_or_default(),
        })
        .collect();
    ports.sort();
    ports.dedup();
    let mut networks: Vec<String> = c
        .network_settings
        .and_then(|n| n.networks)
        .map(|n| n.into_keys().collect())
        .unwrap_or_default();
    networks.sort();
    let (state, detail) = container_state(c.state.map(|s| s.to_string()));
    let status = status_from_text(c.status.as_deref().unwrap_or(""), now_seconds(), detail);
    Container {
        id: c.id.unwrap_or_default(),
        name,
        image: c.image.unwrap_or_default(),
        image_id: c.image_id.unwrap_or_default(),
        command: c.command.unwrap_or_default(),
        labels: sorted(c.labels),
        state,
        status,
        created: c.created.unwrap_or(0),
        ports,
        networks,
    }
}

fn details_from_inspect(i: m::ContainerInspectResponse) -> ContainerDetails {
    let host = i.host_config.unwrap_or_default();
    let resources = Resources {
        memory: host.memory.unwrap_or(0),
        memory_reservation: host.memory_reservation.unwrap_or(0),
        memory_swap: host.memory_swap.unwrap_or(0),
        nano_cpus: host.nano_cpus.unwrap_or(0),
        cpu_shares: host.cpu_shares.unwrap_or(0),
        cpuset: host.cpuset_cpus.unwrap_or_default(),
        pids_limit: host.pids_limit.unwrap_or(0),
    };
    let state = i.state.unwrap_or_default();
    let config = i.config.unwrap_or_default();
    let settings = i.network_settings.unwrap_or_default();
    let endpoints = settings.networks.unwrap_or_default();
    let mut networks: Vec<String> = endpoints.keys().cloned().collect();
    networks.sort();
    let addresses = endpoints
        .into_iter()
        .filter_map(|(name, ep)| {
            let addr = ep
                .ip_address
                .filter(|a| !a.is_empty())
                .or(ep.global_ipv6_address.filter(|a| !a.is_empty()))?;
            Some((name, addr))
        })
        .collect();
    let mut exposed_tcp_ports: Vec<u16> = config
        .exposed_ports
        .iter()
        .flatten()
        .filter_map(|key| match key.split_once('/') {
            Some((port, "tcp")) => port.parse().ok(),
            None => key.parse().ok(),
            _ => None,
        })
        .collect();
    exposed_tcp_ports.sort_unstable();
    exposed_tcp_ports.dedup();
    let mut command = i.path.unwrap_or_default();
    for arg in i.args.unwrap_or_default() {
        command.push(' ');
        command.push_str(&arg);
    }
    let (container_state, detail) = container_state(state.status.map(|s| s.to_string()));
    let health = match state
        .health
        .and_then(|h| h.status)
        .map(|s| s.to_string())
        .as_deref()
    {
        Some("starting") => Health::Starting,
        Some("healthy") => Health::Healthy,
        Some("unhealthy") => Health::Unhealthy,
        _ => Health::None,
    };
    ContainerDetails {
        container: Container {
            id: i.id.unwrap_or_default(),
            name: i
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            image: config.image.unwrap_or_default(),
            image_id: i.image.unwrap_or_default(),
            command,
            labels: sorted(config.labels),
            state: container_state,
            status: Status {
                since: epoch_seconds(
                    if matches!(
                        container_state,
                        ContainerState::Running | ContainerState::Paused
                    ) {
                        state.started_at.as_deref()
                    } else {
                        state.finished_at.as_deref()
                    },
                )
                .max(0),
                exit_code: state.exit_code.unwrap_or(0),
                health,
                detail,
            },
            created: epoch_seconds(i.created.as_deref()),
            ports: published_ports(settings.ports),
            networks,
        },
        health,
        exit_code: state.exit_code.unwrap_or(0),
        restarting: state.restarting.unwrap_or(false),
        addresses,
        exposed_tcp_ports,
        resources,
    }
}

fn log_line(out: bollard::container::LogOutput) -> LogLine {
    use bollard::container::LogOutput as L;
    let stderr = matches!(out, L::StdErr { .. });
    LogLine {
        stderr,
        text: String::from_utf8_lossy(&out.into_bytes()).into_owned(),
    }
}

/// A line the engine gave with its time: kept if logged at `from` or later
/// (nanoseconds since the epoch), its time taken off unless `stamped`.
fn logged_from(line: LogLine, from: i128, stamped: bool) -> Option<LogLine> {
    let (time, text) = line.text.split_once(' ')?;
    let t = time.parse::<jiff::Timestamp>().ok()?;
    if t.as_nanosecond() < from {
        return None;
    }
    Some(LogLine {
        text: if stamped {
            line.text.clone()
        } else {
            text.to_string()
        },
        ..line
    })
}

/// A container event in rcompose's terms; `None` for what rcompose does
/// not follow (exec sessions, attaches, archive copies ...).
fn event_from(e: m::EventMessage) -> Option<ContainerEvent> {
    let actor = e.actor.unwrap_or_default();
    // The engine mixes the container's labels with a few attributes of its own.
    let mut labels = sorted(actor.attributes);
    let name = labels.remove("name").unwrap_or_default();
    let image = labels.remove("image").unwrap_or_default();
    let exit_code = labels.remove("exitCode");
    let signal = labels.remove("signal");
    let action = e.action.unwrap_or_default();
    let kind = match action.as_str() {
        "create" => EventKind::Created,
        "start" => EventKind::Started,
        "kill" => EventKind::Killed {
            signal: signal.and_then(|s| s.parse().ok()),
        },
        "die" => EventKind::Died {
            exit_code: exit_code.and_then(|c| c.parse().ok()).unwrap_or(0),
        },
        "stop" => EventKind::Stopped,
        "oom" => EventKind::OutOfMemory,
        "pause" => EventKind::Paused,
        "unpause" => EventKind::Unpaused,
        "rename" => EventKind::Renamed,
        "destroy" => EventKind::Removed,
        "health_status: healthy" => EventKind::Health(Health::Healthy),
        "health_status: unhealthy" => EventKind::Health(Health::Unhealthy),
        "health_status: starting" => EventKind::Health(Health::Starting),
        _ => return None,
    };
    Some(ContainerEvent {
        time_nanos: e
            .time_nano
            .unwrap_or_else(|| e.time.unwrap_or(0).saturating_mul(1_000_000_000)),
        id: actor.id.unwrap_or_default(),
        name,
        image,
        labels,
        kind,
    })
}

fn network_from(n: m::Network) -> Network {
    Network {
        id: n.id.unwrap_or_default(),
        name: n.name.unwrap_or_default(),
        driver: n.driver.unwrap_or_default(),
        labels: sorted(n.labels),
        internal: n.internal.unwrap_or(false),
    }
}

fn volume_from(v: m::Volume) -> Volume {
    Volume {
        name: v.name,
        driver: v.driver,
        labels: v.labels.into_iter().collect(),
    }
}

// ---------------------------------------------------------------------------
// Streams

/// A stream fed by a task: `work` gets the sending end and runs until it is
/// done or the stream is dropped.
fn channel_stream<T, F>(work: impl FnOnce(mpsc::Sender<Result<T>>) -> F) -> BoxStream<T>
where
    T: Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let watcher = tx.clone();
    let work = work(tx);
    tokio::spawn(async move {
        tokio::select! {
            () = work => {}
            () = watcher.closed() => {}
        }
    });
    Box::pin(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Splits a stream of text chunks into lines.
#[derive(Default)]
struct LineSplitter {
    partial: String,
}

impl LineSplitter {
    fn push(&mut self, chunk: &str) -> Vec<String> {
        self.partial.push_str(chunk);
        let mut lines = Vec::new();
        while let Some(pos) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=pos).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if !line.trim().is_empty() {
                lines.push(line.to_string());
            }
        }
        lines
    }

    fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.partial);
        let rest = rest.trim_end_matches(['\n', '\r']);
        (!rest.trim().is_empty()).then(|| rest.to_string())
    }
}

// ---------------------------------------------------------------------------
// Build contexts (the archive itself is made by `crate::context`)

/// Sends what it is given down a channel in chunks.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CONTEXT_CHUNK));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the engine stopped reading the build context",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CONTEXT_CHUNK {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

/// A query value escaped: everything but letters, digits and `-._~`.
fn query_escape(s: &str) -> String {
    const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// The query parameters of a build that bollard's options cannot carry:
/// more than one tag, more than one extra host, and a `/dev/shm` size of
/// 2 GiB or more.
fn extra_build_query(spec: &BuildSpec) -> String {
    let mut pairs: Vec<String> = Vec::new();
    for tag in spec.tags.iter().skip(1) {
        pairs.push(format!("t={}", query_escape(tag)));
    }
    for host in &spec.extra_hosts {
        pairs.push(format!("extrahosts={}", query_escape(&extra_host(host))));
    }
    if spec.shm_size > 0 {
        pairs.push(format!("shmsize={}", spec.shm_size));
    }
    pairs.join("&")
}

fn build_options(spec: &BuildSpec, dockerfile: &str) -> q::BuildImageOptions {
    q::BuildImageOptions {
        dockerfile: dockerfile.to_string(),
        t: spec.tags.first().cloned(),
        nocache: spec.no_cache,
        pull: spec.pull.then(|| "1".to_string()),
        rm: true,
        // A step that fails leaves no container behind either (BuildKit,
        // which Compose uses, leaves none).
        forcerm: true,
        buildargs: nonempty_map(&spec.args),
        labels: nonempty_map(&spec.labels),
        networkmode: nonempty(&spec.network),
        platform: spec.platform.clone(),
        target: spec.target.clone(),
        ..Default::default()
    }
}

/// The lines of one message of a build's output.
fn build_message_lines(info: m::BuildInfo, lines: &mut LineSplitter) -> Result<Vec<String>> {
    if let Some(detail) = info.error_detail {
        return Err(RuntimeError::Engine(detail.message.unwrap_or_default()));
    }
    let mut out = Vec::new();
    if let Some(text) = info.stream {
        out.extend(lines.push(&text));
    }
    if let Some(status) = info.status {
        out.push(match info.id {
            Some(id) if !id.is_empty() => format!("{id}: {status}"),
            _ => status,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Exec, stats, archives, commit and pull

/// One line of pull progress (`id: status current/total`), `None` for a
/// message without a status, or the pull's error.
fn pull_line(info: m::CreateImageInfo) -> Result<Option<String>> {
    if let Some(detail) = info.error_detail {
        return Err(RuntimeError::Engine(
            detail
                .message
                .unwrap_or_else(|| "the pull failed".to_string()),
        ));
    }
    let Some(status) = info.status else {
        return Ok(None);
    };
    let mut line = match info.id {
        Some(id) if !id.is_empty() => format!("{id}: {status}"),
        _ => status,
    };
    if let Some(m::ProgressDetail {
        current: Some(current),
        total: Some(total),
    }) = info.progress_detail
    {
        if total > 0 {
            line.push_str(&format!(" {current}/{total}"));
        }
    }
    Ok(Some(line))
}

/// A TTY dimension as the engine takes it.
fn tty_size(width: u16, height: u16) -> (i32, i32) {
    (i32::from(width), i32::from(height))
}

/// A session's output stream, errors about the object `kind` `name`.
fn session_output(
    output: std::pin::Pin<
        Box<
            dyn futures_core::Stream<
                    Item = std::result::Result<bollard::container::LogOutput, BollardError>,
                > + Send,
        >,
    >,
    kind: &'static str,
    name: &str,
) -> BoxStream<LogLine> {
    let name = name.to_string();
    Box::pin(output.map(move |item| {
        item.map(log_line)
            .map_err(|e| convert_error(e, kind, &name, On409::Refused))
    }))
}

/// An exec'd command, by its engine id.
struct ExecProcess {
    docker: Docker,
    id: String,
}

#[async_trait::async_trait]
impl Process for ExecProcess {
    async fn resize(&self, width: u16, height: u16) -> Result<()> {
        let (w, h) = tty_size(width, height);
        self.docker
            .resize_exec(&self.id, q::ResizeExecOptions { h, w })
            .await
            .map_err(err("exec", &self.id))
    }

    async fn wait(&self) -> Result<i64> {
        // The engine has no wait for an exec: ask until it has ended. Its
        // output has usually closed by now, and the end is a few
        // milliseconds behind: ask soon, then less often.
        let mut delay = Duration::from_millis(2);
        loop {
            let inspect = self
                .docker
                .inspect_exec(&self.id)
                .await
                .map_err(err("exec", &self.id))?;
            if !inspect.running.unwrap_or(false) {
                return Ok(inspect.exit_code.unwrap_or(0));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }
}

/// A container's main process, attached to.
struct MainProcess {
    runtime: DockerRuntime,
    container: String,
}

#[async_trait::async_trait]
impl Process for MainProcess {
    async fn resize(&self, width: u16, height: u16) -> Result<()> {
        let (w, h) = tty_size(width, height);
        self.runtime
            .docker
            .resize_container_tty(&self.container, q::ResizeContainerTTYOptions { h, w })
            .await
            .map_err(err("container", &self.container))
    }

    async fn wait(&self) -> Result<i64> {
        self.runtime.wait_container(&self.container).await
    }
}

/// A stream that fails now, rather than on its first item, when the engine
/// refuses the request (a missing container or path).
async fn eager<T: Send + 'static>(
    items: impl futures_core::Stream<Item = Result<T>> + Send + 'static,
) -> Result<BoxStream<T>> {
    let mut items = Box::pin(items);
    match items.next().await {
        None => Ok(Box::pin(stream::empty())),
        Some(Err(e)) => Err(e),
        Some(Ok(first)) => Ok(Box::pin(
            stream::once(async move { Ok(first) }).chain(items),
        )),
    }
}

/// Memory in use as the docker CLI shows it: usage less the inactive file
/// cache (`total_inactive_file` on cgroup v1, `inactive_file` on v2).
fn memory_usage(mem: &m::ContainerMemoryStats) -> u64 {
    let usage = mem.usage.unwrap_or(0);
    let stats = mem.stats.as_ref();
    let stat = |key: &str| stats.and_then(|s| s.get(key)).copied();
    if let Some(v) = stat("total_inactive_file") {
        if v < usage {
            return usage - v;
        }
    }
    match stat("inactive_file") {
        Some(v) if v < usage => usage - v,
        _ => usage,
    }
}

/// CPU use as the docker CLI computes it: the container's share of the
/// system's CPU time since the previous sample, times the online CPUs.
fn cpu_percent(cpu: Option<&m::ContainerCpuStats>, pre: Option<&m::ContainerCpuStats>) -> f64 {
    let total = |c: Option<&m::ContainerCpuStats>| {
        c.and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
            .unwrap_or(0) as f64
    };
    let system =
        |c: Option<&m::ContainerCpuStats>| c.and_then(|c| c.system_cpu_usage).unwrap_or(0) as f64;
    let cpu_delta = total(cpu) - total(pre);
    let system_delta = system(cpu) - system(pre);
    let mut online = f64::from(cpu.and_then(|c| c.online_cpus).unwrap_or(0));
    if online == 0.0 {
        online = cpu
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.percpu_usage.as_ref())
            .map_or(0, Vec::len) as f64;
    }
    if system_delta > 0.0 && cpu_delta > 0.0 {
        cpu_delta / system_delta * online * 100.0
    } else {
        0.0
    }
}

/// rcompose's [`Stats`] of the engine's sample.
fn stats_from(s: &m::ContainerStatsResponse) -> Stats {
    let mem = s.memory_stats.clone().unwrap_or_default();
    let net_io = s
        .networks
        .iter()
        .flatten()
        .fold((0u64, 0u64), |(rx, tx), (_, n)| {
            (
                rx.saturating_add(n.rx_bytes.unwrap_or(0)),
                tx.saturating_add(n.tx_bytes.unwrap_or(0)),
            )
        });
    let block_io = s
        .blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref())
        .into_iter()
        .flatten()
        .fold((0u64, 0u64), |(read, write), e| {
            let value = e.value.unwrap_or(0);
            match e.op.as_deref().and_then(|op| op.chars().next()) {
                Some('r' | 'R') => (read.saturating_add(value), write),
                Some('w' | 'W') => (read, write.saturating_add(value)),
                _ => (read, write),
            }
        });
    Stats {
        cpu_percent: cpu_percent(s.cpu_stats.as_ref(), s.precpu_stats.as_ref()),
        memory_usage: memory_usage(&mem),
        memory_limit: mem.limit.unwrap_or(0),
        net_io,
        block_io,
        pids: s.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0),
    }
}

// ---------------------------------------------------------------------------
// The runtime

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn lock_dir(&self) -> Option<PathBuf> {
        // Per user (root's under /run), per engine address.
        let base = if rustix::process::geteuid().is_root() {
            PathBuf::from("/run/rcompose")
        } else if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            PathBuf::from(dir).join("rcompose")
        } else {
            std::env::temp_dir().join(format!("rcompose-{}", rustix::process::geteuid().as_raw()))
        };
        let host: String = self
            .host
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Some(base.join("docker-locks").join(host))
    }

    async fn version(&self) -> Result<String> {
        let v = self
            .docker
            .version()
            .await
            .map_err(err("engine", &self.host))?;
        Ok(format!(
            "docker {} (api {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_else(|| self.api.to_string())
        ))
    }

    async fn list_containers(&self, filter: &[LabelFilter], all: bool) -> Result<Vec<Container>> {
        let options = q::ListContainersOptions {
            all,
            filters: Some(label_filters(filter)),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(err("container", "list"))?;
        Ok(list.into_iter().map(container_from_summary).collect())
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails> {
        let inspect = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(err("container", id))?;
        Ok(details_from_inspect(inspect))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        let request = create_request(spec, self.api)?;
        let options = q::CreateContainerOptions {
            name: nonempty(&spec.name),
            platform: spec.platform.clone(),
        };
        let client = match &request.config_mac {
            Some(mac) => {
                let mut body = serde_json::to_value(&request.body)
                    .map_err(|e| RuntimeError::Engine(e.to_string()))?;
                if let Some(obj) = body.as_object_mut() {
                    obj.insert("MacAddress".into(), serde_json::Value::String(mac.clone()));
                }
                self.with_json_body(&body)?
            }
            None => self.docker.clone(),
        };
        let name = if spec.name.is_empty() {
            spec.image.as_str()
        } else {
            spec.name.as_str()
        };
        let created = client
            .create_container(Some(options), request.body)
            .await
            .map_err(err_exists("container", name))?;
        if spec.network_mode == NetworkMode::Attachments {
            for attachment in spec.networks.iter().skip(1) {
                if let Err(e) = self.connect_network(&created.id, attachment).await {
                    // Not half-made: a container missing a network is removed.
                    let _ = self.remove_container(&created.id, true, true).await;
                    return Err(e);
                }
            }
        }
        Ok(created.id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(err("container", id))
    }

    async fn stop_container(&self, id: &str, timeout_secs: Option<i64>) -> Result<()> {
        let options = q::StopContainerOptions {
            t: timeout_i32(timeout_secs),
            signal: None,
        };
        self.patient(timeout_budget(timeout_secs))
            .stop_container(id, Some(options))
            .await
            .map_err(err("container", id))
    }

    async fn restart_container(&self, id: &str, timeout_secs: Option<i64>) -> Result<()> {
        let options = q::RestartContainerOptions {
            t: timeout_i32(timeout_secs),
            signal: None,
        };
        self.patient(timeout_budget(timeout_secs))
            .restart_container(id, Some(options))
            .await
            .map_err(err("container", id))
    }

    async fn update_container(&self, id: &str, r: &Resources) -> Result<()> {
        // Swap follows memory as at creation (twice the memory) unless it
        // is set: Docker refuses a memory limit above the current swap one.
        let swap = match (r.memory, r.memory_swap) {
            (_, s) if s != 0 => Some(s),
            (m, _) if m > 0 => Some(m.saturating_mul(2)),
            _ => None,
        };
        let body = m::ContainerUpdateBody {
            memory: nonzero(r.memory),
            memory_swap: swap,
            memory_reservation: nonzero(r.memory_reservation),
            nano_cpus: nonzero(r.nano_cpus),
            cpu_shares: nonzero(r.cpu_shares),
            cpuset_cpus: nonempty(&r.cpuset),
            pids_limit: nonzero(r.pids_limit),
            ..Default::default()
        };
        self.docker
            .update_container(id, body)
            .await
            .map_err(err("container", id))
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<()> {
        let options = q::KillContainerOptions {
            signal: if signal.is_empty() { "SIGKILL" } else { signal }.to_string(),
        };
        self.docker
            .kill_container(id, Some(options))
            .await
            .map_err(err("container", id))
    }

    async fn pause_container(&self, id: &str) -> Result<()> {
        self.docker
            .pause_container(id)
            .await
            .map_err(err("container", id))
    }

    async fn unpause_container(&self, id: &str) -> Result<()> {
        self.docker
            .unpause_container(id)
            .await
            .map_err(err("container", id))
    }

    async fn remove_container(&self, id: &str, force: bool, volumes: bool) -> Result<()> {
        let options = q::RemoveContainerOptions {
            v: volumes,
            force,
            link: false,
        };
        self.docker
            .remove_container(id, Some(options))
            .await
            .map_err(err("container", id))
    }

    async fn wait_container(&self, id: &str) -> Result<i64> {
        let options = q::WaitContainerOptions {
            condition: "not-running".to_string(),
        };
        let mut waiting = Box::pin(self.docker.wait_container(id, Some(options)));
        match waiting.next().await {
            Some(Ok(answer)) => Ok(answer.status_code),
            // bollard reports a non-zero exit as an error; it is the answer.
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(convert_error(e, "container", id, On409::Refused)),
            None => Err(RuntimeError::Engine(format!(
                "the engine ended the wait for {id} without an exit code"
            ))),
        }
    }

    async fn list_networks(&self, filter: &[LabelFilter]) -> Result<Vec<Network>> {
        let options = q::ListNetworksOptions {
            filters: Some(label_filters(filter)),
        };
        let list = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(err("network", "list"))?;
        Ok(list.into_iter().map(network_from).collect())
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<Network>> {
        match self.docker.inspect_network(name, None).await {
            Ok(n) => Ok(Some(Network {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                driver: n.driver.unwrap_or_default(),
                labels: sorted(n.labels),
                internal: n.internal.unwrap_or(false),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(convert_error(e, "network", name, On409::Refused)),
        }
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<String> {
        let pools: Vec<m::IpamConfig> = spec
            .ipam_pools
            .iter()
            .map(|(subnet, gateway, range)| m::IpamConfig {
                subnet: nonempty(subnet),
                gateway: nonempty(gateway),
                ip_range: nonempty(range),
                auxiliary_addresses: None,
            })
            .collect();
        let ipam =
            (!spec.ipam_driver.is_empty() || !pools.is_empty() || !spec.ipam_options.is_empty())
                .then(|| m::Ipam {
                    driver: nonempty(&spec.ipam_driver),
                    config: (!pools.is_empty()).then_some(pools),
                    options: nonempty_map(&spec.ipam_options),
                });
        let request = m::NetworkCreateRequest {
            name: spec.name.clone(),
            driver: nonempty(&spec.driver),
            internal: spec.internal.then_some(true),
            attachable: spec.attachable.then_some(true),
            enable_ipv6: spec.enable_ipv6.then_some(true),
            ipam,
            options: nonempty_map(&spec.driver_opts),
            labels: nonempty_map(&spec.labels),
            ..Default::default()
        };
        // Engines before API 1.44 allow two networks of one name unless asked
        // to check.
        let client = if self.api < API_1_44 {
            let mut body =
                serde_json::to_value(&request).map_err(|e| RuntimeError::Engine(e.to_string()))?;
            if let Some(obj) = body.as_object_mut() {
                obj.insert("CheckDuplicate".into(), serde_json::Value::Bool(true));
            }
            self.with_json_body(&body)?
        } else {
            self.docker.clone()
        };
        let created = client
            .create_network(request)
            .await
            .map_err(err_exists("network", &spec.name))?;
        Ok(created.id)
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        // The engine releases a stopped container's endpoint as it handles
        // the exit, which can come after the container's removal has been
        // answered: for a short while the network still counts an endpoint
        // of a container that is gone. Only that is waited out; an endpoint
        // of a container that exists is the engine's refusal, at once.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let e = match self.docker.remove_network(name).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let releasing = matches!(&e, BollardError::DockerResponseServerError { message, .. }
                if message.contains("active endpoints"))
                && tokio::time::Instant::now() < deadline
                && self.endpoints_are_of_gone_containers(name).await;
            if !releasing {
                return Err(convert_error(e, "network", name, On409::Refused));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn inspect_volume(&self, name: &str) -> Result<Option<Volume>> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(volume_from(v))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(convert_error(e, "volume", name, On409::Refused)),
        }
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> Result<()> {
        let request = m::VolumeCreateRequest {
            name: Some(spec.name.clone()),
            driver: nonempty(&spec.driver),
            driver_opts: nonempty_map(&spec.driver_opts),
            labels: nonempty_map(&spec.labels),
            cluster_volume_spec: None,
        };
        self.docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(err_exists("volume", &spec.name))
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        self.docker
            .remove_volume(name, None::<q::RemoveVolumeOptions>)
            .await
            .map_err(err("volume", name))
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<Image>> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => Ok(Some(Image {
                id: i.id.unwrap_or_default(),
                tags: i.repo_tags.unwrap_or_default(),
                size: i.size.unwrap_or(0),
                created: epoch_seconds(i.created.as_deref()),
                platform: Image::platform_text(
                    i.os.as_deref().unwrap_or_default(),
                    i.architecture.as_deref().unwrap_or_default(),
                    i.variant.as_deref().unwrap_or_default(),
                ),
                last_tagged: epoch_seconds(i.metadata.and_then(|m| m.last_tag_time).as_deref()),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(convert_error(e, "image", reference, On409::Refused)),
        }
    }

    async fn list_images(&self, repository: &str) -> Result<Vec<Image>> {
        // Every image when no repository is named.
        let options = q::ListImagesOptions {
            filters: (!repository.is_empty())
                .then(|| HashMap::from([("reference".to_string(), vec![repository.to_string()])])),
            ..Default::default()
        };
        let list = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(err("image", "list"))?;
        Ok(list
            .into_iter()
            .map(|i| Image {
                id: i.id,
                tags: i.repo_tags,
                size: i.size,
                created: i.created,
                platform: String::new(),
                last_tagged: 0,
            })
            .collect())
    }

    async fn build_image(&self, spec: &BuildSpec) -> Result<BoxStream<String>> {
        let owned = spec.clone();
        let plan = tokio::task::spawn_blocking(move || plan_context(&owned))
            .await
            .map_err(|e| RuntimeError::Engine(format!("preparing the build context: {e}")))??;

        // The context, written by a blocking task and streamed to the engine.
        let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(4);
        let options = build_options(spec, &plan.dockerfile);
        let writer = tokio::task::spawn_blocking(move || {
            let out = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CONTEXT_CHUNK),
            };
            let result = write_context(&plan, out).and_then(|mut w| w.flush());
            if let Err(e) = &result {
                // Aborts the upload; the build then fails with this reason.
                let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
            }
            result
        });
        let body = bollard::body_try_stream(stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk.map(Into::into), rx))
        }));

        let extra = extra_build_query(spec);
        let mut client = self.patient(BUILD_TIMEOUT_SECS);
        if !extra.is_empty() {
            client = client.with_request_modifier(move |mut req: BollardRequest| {
                let uri = req.uri().to_string();
                let sep = if uri.contains('?') { '&' } else { '?' };
                if let Ok(with_extra) = format!("{uri}{sep}{extra}").parse() {
                    *req.uri_mut() = with_extra;
                }
                req
            });
        }
        let tag = spec.tags.first().cloned().unwrap_or_default();
        Ok(channel_stream(move |out| async move {
            let mut lines = LineSplitter::default();
            let mut failed = None;
            {
                let mut build = Box::pin(client.build_image(options, None, Some(body)));
                while let Some(item) = build.next().await {
                    let message = item
                        .map_err(|e| convert_error(e, "image", &tag, On409::Refused))
                        .and_then(|info| build_message_lines(info, &mut lines));
                    match message {
                        Ok(batch) => {
                            for line in batch {
                                if out.send(Ok(line)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
            }
            if let Some(line) = lines.finish() {
                if out.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            // A context that could not be read explains the failure best; an
            // upload cut short because the engine refused the build does not.
            let context_error = match tokio::time::timeout(Duration::from_secs(10), writer).await {
                Ok(Ok(Err(e))) if e.kind() != io::ErrorKind::BrokenPipe => Some(
                    RuntimeError::Engine(format!("cannot send the build context: {e}")),
                ),
                _ => None,
            };
            if let Some(e) = context_error.or(failed) {
                let _ = out.send(Err(e)).await;
            }
        }))
    }

    async fn remove_image(&self, reference: &str, force: bool) -> Result<()> {
        let options = q::RemoveImageOptions {
            force,
            noprune: false,
            platforms: None,
        };
        self.docker
            .remove_image(reference, Some(options), None)
            .await
            .map(|_| ())
            .map_err(err("image", reference))
    }

    async fn events(&self, filter: &[LabelFilter]) -> Result<BoxStream<ContainerEvent>> {
        let mut filters = label_filters(filter);
        filters.insert("type".to_string(), vec!["container".to_string()]);
        let options = q::EventsOptions {
            // Replayed from the engine's buffer: nothing between this call
            // and the subscription is lost.
            since: Some(self.engine_now().await),
            until: None,
            filters: Some(filters),
        };
        let docker = self.docker.clone();
        Ok(channel_stream(move |out| async move {
            let mut events = Box::pin(docker.events(Some(options)));
            while let Some(item) = events.next().await {
                let item = match item {
                    Ok(e) => match event_from(e) {
                        Some(e) => Ok(e),
                        None => continue,
                    },
                    Err(e) => Err(convert_error(e, "events", "", On409::Refused)),
                };
                let end = item.is_err();
                if out.send(item).await.is_err() || end {
                    return;
                }
            }
        }))
    }

    async fn pull_image(&self, reference: &str) -> Result<BoxStream<String>> {
        let parts = reference::split(reference);
        let (name, tag) = (parts.repository, parts.tag_or_digest());
        let options = q::CreateImageOptions {
            from_image: Some(name.to_string()),
            tag: Some(tag.unwrap_or("latest").to_string()),
            ..Default::default()
        };
        let reference = reference.to_string();
        let lines = self
            .docker
            .create_image(Some(options), None, None)
            .filter_map(move |item| {
                let line = match item {
                    Ok(info) => pull_line(info).transpose(),
                    Err(e) => Some(Err(convert_error(e, "image", &reference, On409::Refused))),
                };
                std::future::ready(line)
            });
        // Nothing follows an error.
        let mut failed = false;
        let lines = lines.take_while(move |item| {
            let go = !failed;
            failed |= item.is_err();
            std::future::ready(go)
        });
        Ok(Box::pin(lines))
    }
}

#[async_trait::async_trait]
impl Logs for DockerRuntime {
    async fn logs(&self, id: &str, options: &LogOptions) -> Result<BoxStream<LogLine>> {
        // Fail now, not on the first item, when the container is missing.
        self.docker
            .inspect_container(id, None)
            .await
            .map_err(err("container", id))?;
        // The engine counts in whole seconds: a finer start is asked for
        // from its second, with each line's time to judge it by.
        let from = options.from_nanos;
        let from_second = from.map(|n| i64::try_from(n.div_euclid(1_000_000_000)).unwrap_or(0));
        let since = options.since.max(from_second);
        let opts = q::LogsOptions {
            follow: options.follow,
            stdout: true,
            stderr: true,
            since: to_i32(since.unwrap_or(0), "log start time")?,
            until: to_i32(options.until.unwrap_or(0), "log end time")?,
            timestamps: options.timestamps || from.is_some(),
            tail: options
                .tail
                .map(|n| n.to_string())
                .unwrap_or_else(|| "all".into()),
        };
        let name = id.to_string();
        let stamped = options.timestamps;
        let lines = self
            .docker
            .logs(id, Some(opts))
            .map(move |item| {
                item.map(log_line)
                    .map_err(|e| convert_error(e, "container", &name, On409::Refused))
            })
            .filter_map(move |item| {
                let kept = match (item, from) {
                    (Ok(line), Some(from)) => logged_from(line, from, stamped).map(Ok),
                    (item, _) => Some(item),
                };
                std::future::ready(kept)
            });
        Ok(Box::pin(lines))
    }

    async fn attach(&self, container: &str, stdin: bool, logs: bool) -> Result<Session> {
        let options = q::AttachContainerOptions {
            detach_keys: None,
            logs,
            stream: true,
            stdin,
            stdout: true,
            stderr: true,
        };
        let attached = self
            .docker
            .attach_container(container, Some(options))
            .await
            .map_err(err("container", container))?;
        Ok(Session {
            output: Some(session_output(attached.output, "container", container)),
            input: stdin.then_some(attached.input),
            process: Box::new(MainProcess {
                runtime: self.clone(),
                container: container.to_string(),
            }),
        })
    }
}

#[async_trait::async_trait]
impl Exec for DockerRuntime {
    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<Session> {
        let attached = !spec.detach;
        let config = m::ExecConfig {
            attach_stdin: Some(attached && spec.stdin),
            attach_stdout: Some(attached),
            attach_stderr: Some(attached),
            tty: Some(spec.tty),
            env: nonempty_vec(&spec.env),
            cmd: Some(spec.command.clone()),
            privileged: Some(spec.privileged),
            user: nonempty(&spec.user),
            working_dir: nonempty(&spec.working_dir),
            ..Default::default()
        };
        let id = self
            .docker
            .create_exec(container, config)
            .await
            .map_err(err("container", container))?
            .id;
        let options = bollard::exec::StartExecOptions {
            detach: spec.detach,
            tty: spec.tty,
            output_capacity: None,
        };
        let started = self
            .docker
            .start_exec(&id, Some(options))
            .await
            .map_err(err("exec", &id))?;
        let (output, input) = match started {
            bollard::exec::StartExecResults::Attached { output, input } => (
                Some(session_output(output, "exec", &id)),
                spec.stdin.then_some(input),
            ),
            bollard::exec::StartExecResults::Detached => (None, None),
        };
        Ok(Session {
            output,
            input,
            process: Box::new(ExecProcess {
                docker: self.docker.clone(),
                id,
            }),
        })
    }
}

#[async_trait::async_trait]
impl Archives for DockerRuntime {
    async fn copy_from(&self, container: &str, path: &str) -> Result<BoxStream<Vec<u8>>> {
        let options = q::DownloadFromContainerOptions {
            path: path.to_string(),
        };
        let subject = format!("{container}:{path}");
        let chunks = self
            .docker
            .download_from_container(container, Some(options))
            .map(move |item| {
                item.map(|b| b.to_vec())
                    .map_err(|e| convert_error(e, "path", &subject, On409::Refused))
            });
        eager(chunks).await
    }

    async fn copy_to(&self, container: &str, path: &str, tar: Vec<u8>) -> Result<()> {
        let options = q::UploadToContainerOptions {
            path: path.to_string(),
            no_overwrite_dir_non_dir: Some("false".to_string()),
            copy_uidgid: None,
        };
        self.patient(BUILD_TIMEOUT_SECS)
            .upload_to_container(container, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(err("path", &format!("{container}:{path}")))
    }

    async fn export(&self, container: &str) -> Result<BoxStream<Vec<u8>>> {
        let name = container.to_string();
        let chunks = self.docker.export_container(container).map(move |item| {
            item.map(|b| b.to_vec())
                .map_err(|e| convert_error(e, "container", &name, On409::Refused))
        });
        eager(chunks).await
    }

    async fn commit(&self, container: &str, spec: &CommitSpec) -> Result<String> {
        let (repo, tag) = if spec.reference.is_empty() {
            (None, None)
        } else {
            let parts = reference::split(&spec.reference);
            let (repo, tag) = (parts.repository, parts.tag_or_digest());
            (Some(repo.to_string()), tag.map(str::to_string))
        };
        let options = q::CommitContainerOptions {
            container: Some(container.to_string()),
            repo,
            tag,
            comment: nonempty(&spec.message),
            author: nonempty(&spec.author),
            pause: spec.pause,
            changes: (!spec.changes.is_empty()).then(|| spec.changes.join("\n")),
        };
        let id = self
            .patient(BUILD_TIMEOUT_SECS)
            .commit_container(options, m::ContainerConfig::default())
            .await
            .map_err(err("container", container))?;
        Ok(id.id)
    }

    async fn changes(&self, container: &str) -> Result<Vec<crate::Change>> {
        let list = self
            .docker
            .container_changes(container)
            .await
            .map_err(err("container", container))?
            .unwrap_or_default();
        let mut out: Vec<crate::Change> = list
            .into_iter()
            .map(|c| crate::Change {
                kind: match c.kind {
                    m::ChangeType::_1 => crate::ChangeKind::Added,
                    m::ChangeType::_2 => crate::ChangeKind::Deleted,
                    _ => crate::ChangeKind::Changed,
                },
                path: c.path,
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Monitor for DockerRuntime {
    async fn stats(&self, container: &str) -> Result<Stats> {
        // Not one-shot: the engine then fills in the previous CPU sample.
        let options = q::StatsOptions {
            stream: false,
            one_shot: false,
        };
        let mut samples = Box::pin(self.docker.stats(container, Some(options)));
        match samples.next().await {
            Some(Ok(sample)) => Ok(stats_from(&sample)),
            Some(Err(e)) => Err(convert_error(e, "container", container, On409::Refused)),
            None => Err(RuntimeError::Engine(format!(
                "the engine sent no statistics for {container}"
            ))),
        }
    }

    async fn top(&self, id: &str) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        let top = self
            .docker
            .top_processes(id, None)
            .await
            .map_err(err("container", id))?;
        Ok((
            top.titles.unwrap_or_default(),
            top.processes.unwrap_or_default(),
        ))
    }
}

/// A blocking reader as a stream of chunks, read on a blocking thread.
fn read_stream(
    mut input: Box<dyn std::io::Read + Send>,
) -> impl futures_util::Stream<Item = std::result::Result<bytes::Bytes, io::Error>> + Send + 'static
{
    let (tx, rx) = mpsc::channel::<std::result::Result<bytes::Bytes, io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match input.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(bytes::Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[async_trait::async_trait]
impl Images for DockerRuntime {
    async fn load_images(
        &self,
        archive: Box<dyn std::io::Read + Send>,
    ) -> Result<Vec<LoadedImage>> {
        let options = q::ImportImageOptions {
            quiet: true,
            ..Default::default()
        };
        let body = bollard::body_try_stream(read_stream(archive));
        let mut replies = self.docker.import_image(options, body, None);
        let mut loaded = Vec::new();
        while let Some(reply) = replies.next().await {
            let info = reply.map_err(err("image", "archive"))?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(RuntimeError::Engine(e));
            }
            let line = info.stream.unwrap_or_default();
            let line = line.trim();
            if let Some(tag) = line.strip_prefix("Loaded image: ") {
                loaded.push(LoadedImage {
                    id: String::new(),
                    tags: vec![tag.to_string()],
                });
            } else if let Some(id) = line.strip_prefix("Loaded image ID: ") {
                loaded.push(LoadedImage {
                    id: id.to_string(),
                    tags: vec![],
                });
            }
        }
        for l in loaded.iter_mut().filter(|l| l.id.is_empty()) {
            if let Some(tag) = l.tags.first() {
                if let Ok(i) = self.docker.inspect_image(tag).await {
                    l.id = i.id.unwrap_or_default();
                }
            }
        }
        Ok(loaded)
    }

    async fn save_images(
        &self,
        references: &[String],
        mut out: Box<dyn std::io::Write + Send>,
    ) -> Result<()> {
        for r in references {
            self.docker
                .inspect_image(r)
                .await
                .map_err(err("image", r))?;
        }
        let names: Vec<&str> = references.iter().map(String::as_str).collect();
        let mut chunks = self.docker.export_images(&names);
        let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(4);
        let writer = tokio::task::spawn_blocking(move || -> io::Result<()> {
            while let Some(chunk) = rx.blocking_recv() {
                out.write_all(&chunk)?;
            }
            out.flush()
        });
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(err("image", &references.join(" ")))?;
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
        drop(tx);
        writer
            .await
            .map_err(|e| RuntimeError::Engine(e.to_string()))?
            .map_err(|e| RuntimeError::Engine(format!("writing the archive: {e}")))
    }

    async fn import_image(
        &self,
        tarball: Box<dyn std::io::Read + Send>,
        reference: Option<&str>,
        changes: &[String],
        message: &str,
    ) -> Result<String> {
        let (repo, tag) = match reference {
            Some(r) => {
                let parts = reference::split(r);
                let (name, tag) = (parts.repository, parts.tag_or_digest());
                (
                    Some(name.to_string()),
                    Some(tag.unwrap_or("latest").to_string()),
                )
            }
            None => (None, None),
        };
        let options = q::CreateImageOptions {
            from_src: Some("-".to_string()),
            repo,
            tag,
            message: (!message.is_empty()).then(|| message.to_string()),
            changes: changes.to_vec(),
            ..Default::default()
        };
        let body = bollard::body_try_stream(read_stream(tarball));
        let mut replies = self.docker.create_image(Some(options), Some(body), None);
        let mut id = String::new();
        while let Some(reply) = replies.next().await {
            let info = reply.map_err(err("image", reference.unwrap_or("import")))?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                return Err(RuntimeError::Engine(e));
            }
            if let Some(status) = info.status.filter(|s| s.starts_with("sha256:")) {
                id = status;
            }
        }
        Ok(id)
    }

    async fn tag_image(&self, source: &str, target: &str) -> Result<()> {
        let parts = reference::split(target);
        let (repo, tag) = (parts.repository, parts.tag_or_digest());
        let options = q::TagImageOptions {
            repo: Some(repo.to_string()),
            tag: Some(tag.unwrap_or("latest").to_string()),
        };
        self.docker
            .tag_image(source, Some(options))
            .await
            .map_err(err("image", source))
    }

    async fn prune_images(&self, all: bool) -> Result<(Vec<String>, u64)> {
        let mut filters = HashMap::new();
        filters.insert(
            "dangling".to_string(),
            vec![if all { "false" } else { "true" }.to_string()],
        );
        let report = self
            .docker
            .prune_images(Some(q::PruneImagesOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(err("image", "prune"))?;
        let removed = report
            .images_deleted
            .unwrap_or_default()
            .into_iter()
            .filter_map(|d| d.deleted)
            .collect();
        Ok((removed, report.space_reclaimed.unwrap_or(0).max(0) as u64))
    }

    async fn push_image(&self, reference: &str) -> Result<BoxStream<String>> {
        let parts = reference::split(reference);
        let (name, tag) = (parts.repository, parts.tag_or_digest());
        let options = q::PushImageOptions {
            tag: Some(tag.unwrap_or("latest").to_string()),
            ..Default::default()
        };
        let reference = reference.to_string();
        let lines = self
            .docker
            .push_image(name, Some(options), None)
            .filter_map(move |item| {
                let line = match item {
                    Ok(info) => match info.error_detail.and_then(|d| d.message) {
                        Some(e) => Some(Err(RuntimeError::Engine(e))),
                        None => info.status.map(Ok),
                    },
                    Err(e) => Some(Err(convert_error(e, "image", &reference, On409::Refused))),
                };
                std::future::ready(line)
            });
        Ok(Box::pin(lines))
    }

    async fn image_details(&self, reference: &str) -> Result<serde_json::Value> {
        let image = self
            .docker
            .inspect_image(reference)
            .await
            .map_err(err("image", reference))?;
        serde_json::to_value(image).map_err(|e| RuntimeError::Engine(e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::{ExposedPort, PortBinding, UlimitSpec};

    const OLD: ApiVersion = ApiVersion(1, 41);
    const NEW: ApiVersion = ApiVersion(1, 48);

    #[test]
    fn computes_stats_as_the_cli_does() {
        let cpu = |total: u64, system: u64| m::ContainerCpuStats {
            cpu_usage: Some(m::ContainerCpuUsage {
                total_usage: Some(total),
                percpu_usage: Some(vec![0, 0]),
                ..Default::default()
            }),
            system_cpu_usage: Some(system),
            online_cpus: None,
            ..Default::default()
        };
        let entry = |op: &str, value: u64| m::ContainerBlkioStatEntry {
            op: Some(op.to_string()),
            value: Some(value),
            ..Default::default()
        };
        let net = |rx: u64, tx: u64| m::ContainerNetworkStats {
            rx_bytes: Some(rx),
            tx_bytes: Some(tx),
            ..Default::default()
        };
        let sample = m::ContainerStatsResponse {
            cpu_stats: Some(cpu(300, 2000)),
            precpu_stats: Some(cpu(100, 1000)),
            memory_stats: Some(m::ContainerMemoryStats {
                usage: Some(1000),
                limit: Some(4000),
                stats: Some(HashMap::from([("inactive_file".to_string(), 300)])),
                ..Default::default()
            }),
            networks: Some(HashMap::from([
                ("eth0".to_string(), net(10, 20)),
                ("eth1".to_string(), net(1, 2)),
            ])),
            blkio_stats: Some(m::ContainerBlkioStats {
                io_service_bytes_recursive: Some(vec![
                    entry("Read", 5),
                    entry("write", 7),
                    entry("read", 1),
                    entry("Total", 13),
                ]),
                ..Default::default()
            }),
            pids_stats: Some(m::ContainerPidsStats {
                current: Some(3),
                limit: None,
            }),
            ..Default::default()
        };
        let stats = stats_from(&sample);
        // 200 of 1000 system units, on the 2 CPUs listed.
        assert!((stats.cpu_percent - 40.0).abs() < 1e-9, "{stats:?}");
        assert_eq!(stats.memory_usage, 700);
        assert_eq!(stats.memory_limit, 4000);
        assert_eq!(stats.net_io, (11, 22));
        assert_eq!(stats.block_io, (6, 7));
        assert_eq!(stats.pids, 3);

        // cgroup v1 subtracts total_inactive_file; no delta, no CPU.
        let v1 = m::ContainerMemoryStats {
            usage: Some(1000),
            stats: Some(HashMap::from([
                ("total_inactive_file".to_string(), 100),
                ("inactive_file".to_string(), 300),
            ])),
            ..Default::default()
        };
        assert_eq!(memory_usage(&v1), 900);
        assert_eq!(
            cpu_percent(Some(&cpu(100, 1000)), Some(&cpu(100, 1000))),
            0.0
        );
        assert_eq!(cpu_percent(None, None), 0.0);
    }

    #[test]
    fn pull_progress_lines_and_errors() {
        let info = m::CreateImageInfo {
            id: Some("abc".into()),
            status: Some("Downloading".into()),
            progress_detail: Some(m::ProgressDetail {
                current: Some(5),
                total: Some(10),
            }),
            error_detail: None,
        };
        assert_eq!(
            pull_line(info).unwrap().as_deref(),
            Some("abc: Downloading 5/10")
        );
        let failed = m::CreateImageInfo {
            error_detail: Some(m::ErrorDetail {
                code: None,
                message: Some("manifest unknown".into()),
            }),
            ..Default::default()
        };
        assert_eq!(
            pull_line(failed),
            Err(RuntimeError::Engine("manifest unknown".into()))
        );
    }

    #[test]
    fn listed_status_text_becomes_a_status() {
        let now = 1_000_000;
        let s = status_from_text("Up 3 seconds (healthy)", now, None);
        assert_eq!((s.since, s.health), (now - 3, Health::Healthy));
        let s = status_from_text("Up About an hour (health: starting)", now, None);
        assert_eq!((s.since, s.health), (now - 3600, Health::Starting));
        let s = status_from_text("Up Less than a second (Paused)", now, None);
        assert_eq!((s.since, s.health), (now, Health::None));
        let s = status_from_text("Exited (137) 2 days ago", now, None);
        assert_eq!((s.since, s.exit_code), (now - 2 * 86_400, 137));
        let s = status_from_text("Restarting (1) 5 minutes ago", now, None);
        assert_eq!((s.since, s.exit_code), (now - 300, 1));
        let s = status_from_text(
            "Removal In Progress",
            now,
            Some("Removal In Progress".into()),
        );
        assert_eq!(s.detail.as_deref(), Some("Removal In Progress"));
        assert_eq!(status_from_text("Created", now, None), Status::default());
        assert_eq!(
            container_state(Some("dead".into())),
            (ContainerState::Exited, Some("Dead".into()))
        );
    }

    #[test]
    fn events_of_interest_become_typed() {
        let event = |action: &str, attributes: &[(&str, &str)]| m::EventMessage {
            action: Some(action.to_string()),
            actor: Some(m::EventActor {
                id: Some("abc".into()),
                attributes: Some(
                    attributes
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            time_nano: Some(5),
            ..Default::default()
        };
        let died = event_from(event(
            "die",
            &[
                ("exitCode", "3"),
                ("name", "web-1"),
                ("image", "img"),
                ("app", "x"),
            ],
        ))
        .unwrap();
        assert_eq!(died.kind, EventKind::Died { exit_code: 3 });
        assert_eq!((died.name.as_str(), died.image.as_str()), ("web-1", "img"));
        assert_eq!(
            died.labels,
            BTreeMap::from([("app".to_string(), "x".to_string())])
        );
        assert_eq!(died.time_nanos, 5);
        let killed = event_from(event("kill", &[("signal", "15")])).unwrap();
        assert_eq!(killed.kind, EventKind::Killed { signal: Some(15) });
        let healthy = event_from(event("health_status: healthy", &[])).unwrap();
        assert_eq!(healthy.kind, EventKind::Health(Health::Healthy));
        assert!(event_from(event("exec_start: sh", &[])).is_none());
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2026-12-01T00:58:53.918821972Z"),
            Some((1_796_086_733, 918_821_972))
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T14:00:00.5+02:00"),
            Some((1_714_564_800, 500_000_000))
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59.5Z"),
            Some((-1, 500_000_000))
        );
    }

    #[test]
    fn default_ports_and_extra_hosts() {
        assert_eq!(with_default_port("1.2.3.4", 2375), "1.2.3.4:2375");
        assert_eq!(with_default_port("h:1234", 2375), "h:1234");
        assert_eq!(with_default_port("[::1]", 2375), "[::1]:2375");
        assert_eq!(with_default_port("[::1]:5", 2375), "[::1]:5");
        let v6 = ExtraHost {
            name: "v6".into(),
            address: "::1".into(),
        };
        assert_eq!(extra_host(&v6), "v6:::1");
    }

    #[test]
    fn not_found_names_the_missing_object() {
        assert_eq!(
            not_found_subject("No such image: foo:1", "container", "c"),
            ("image", "foo:1".to_string())
        );
        assert_eq!(
            not_found_subject("network nope not found", "network", "nope"),
            ("network", "nope".to_string())
        );
        assert_eq!(
            not_found_subject("get v: no such volume", "volume", "v"),
            ("volume", "v".to_string())
        );
        assert_eq!(
            not_found_subject("No such container: abc", "network", "n"),
            ("container", "abc".to_string())
        );
    }

    /// Every field of the spec is set: adding a field to `ContainerSpec`
    /// breaks this test until the mapping handles it.
    fn full_spec() -> ContainerSpec {
        ContainerSpec {
            name: "web".into(),
            image: "img:1".into(),
            labels: BTreeMap::from([("l".into(), "v".into())]),
            env: vec!["A=1".into()],
            command: Some(vec!["run".into()]),
            entrypoint: Some(vec![]),
            working_dir: "/w".into(),
            user: "1000:1000".into(),
            hostname: "h".into(),
            domainname: "example.org".into(),
            exposed: vec![
                ExposedPort {
                    port: 9000,
                    protocol: Protocol::Udp,
                },
                ExposedPort {
                    port: 9001,
                    protocol: Protocol::Udp,
                },
            ],
            ports: vec![
                PortBinding {
                    container_port: 80,
                    protocol: Protocol::Tcp,
                    host_ip: "127.0.0.1".into(),
                    host_port: HostPort::Range(8000, 8010),
                },
                PortBinding {
                    container_port: 80,
                    protocol: Protocol::Tcp,
                    host_ip: String::new(),
                    host_port: HostPort::Any,
                },
            ],
            mounts: vec![
                Mount::Bind {
                    source: "/src".into(),
                    target: "/a".into(),
                    read_only: true,
                    create_host_path: true,
                    propagation: "rprivate".into(),
                    selinux: "z".into(),
                },
                Mount::Bind {
                    source: "/strict".into(),
                    target: "/b".into(),
                    read_only: false,
                    create_host_path: false,
                    propagation: "rshared".into(),
                    selinux: String::new(),
                },
                Mount::Volume {
                    source: String::new(),
                    target: "/anon".into(),
                    read_only: false,
                    nocopy: true,
                    subpath: String::new(),
                },
                Mount::Tmpfs {
                    target: "/t".into(),
                    size: 1024,
                    mode: 0o1777,
                },
            ],
            network_mode: NetworkMode::Attachments,
            networks: vec![
                NetworkAttachment {
                    network: "front".into(),
                    aliases: vec!["web".into()],
                    ipv4_address: "10.5.0.5".into(),
                    ipv6_address: "fd00::5".into(),
                    links: vec!["db:database".into()],
                    mac_address: "02:42:ac:11:00:09".into(),
                    driver_opts: BTreeMap::from([("o".into(), "1".into())]),
                    gw_priority: 0,
                },
                NetworkAttachment {
                    network: "back".into(),
                    ..Default::default()
                },
            ],
            restart: Some(RestartPolicy::OnFailure {
                max_retries: Some(5),
            }),
            healthcheck: Some(HealthcheckSpec {
                test: HealthTest::Exec(vec!["true".into()]),
                interval_ns: 1_000_000_000,
                timeout_ns: 2_000_000_000,
                retries: 3,
                start_period_ns: 4_000_000_000,
                start_interval_ns: 0,
            }),
            stop_signal: "SIGINT".into(),
            stop_timeout: Some(7),
            init: Some(true),
            read_only: true,
            privileged: true,
            tty: true,
            stdin_open: true,
            stdin_once: true,
            cap_add: vec!["NET_ADMIN".into()],
            cap_drop: vec!["ALL".into()],
            security_opt: vec!["no-new-privileges".into()],
            tmpfs: BTreeMap::from([("/run".into(), "size=1m".into())]),
            ulimits: vec![UlimitSpec {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048,
            }],
            sysctls: BTreeMap::from([("net.core.somaxconn".into(), "1024".into())]),
            extra_hosts: vec![ExtraHost {
                name: "db".into(),
                address: "10.0.0.1".into(),
            }],
            dns: vec!["1.1.1.1".into()],
            dns_opt: vec!["ndots:1".into()],
            dns_search: vec!["example.org".into()],
            resources: Resources {
                memory: 1 << 30,
                memory_reservation: 1 << 29,
                memory_swap: 1 << 31,
                nano_cpus: 1_500_000_000,
                cpu_shares: 512,
                cpuset: "0-1".into(),
                pids_limit: 100,
            },
            shm_size: 1 << 26,
            log_driver: "json-file".into(),
            log_opts: BTreeMap::from([("max-size".into(), "1m".into())]),
            ipc: Namespace::Shareable,
            pid: Namespace::Host,
            devices: vec![Device {
                host_path: "/dev/fuse".into(),
                container_path: "/dev/fuse".into(),
                permissions: "rwm".into(),
            }],
            group_add: vec!["audio".into()],
            platform: "linux/amd64".into(),
            runtime: "runc".into(),
            volumes_from: vec![VolumesFrom {
                container: "other".into(),
                read_only: true,
            }],
            mac_address: String::new(),
            oom_kill_disable: true,
            oom_score_adj: -500,
            userns_mode: "host".into(),
            cgroup_parent: "/parent".into(),
        }
    }

    #[test]
    fn maps_every_container_field() {
        let spec = full_spec();
        let r = create_request(&spec, OLD).unwrap();
        let json = serde_json::to_value(&r.body).unwrap();
        let c = &json;
        let h = &json["HostConfig"];
        assert_eq!(c["Image"], "img:1");
        assert_eq!(c["Labels"]["l"], "v");
        assert_eq!(c["Env"][0], "A=1");
        assert_eq!(c["Cmd"][0], "run");
        assert_eq!(c["Entrypoint"], serde_json::json!([]));
        assert_eq!(c["WorkingDir"], "/w");
        assert_eq!(c["User"], "1000:1000");
        assert_eq!(c["Hostname"], "h");
        assert_eq!(c["Domainname"], "example.org");
        for port in ["9000/udp", "9001/udp", "80/tcp"] {
            assert!(c["ExposedPorts"].get(port).is_some(), "{port} exposed");
        }
        assert_eq!(
            h["PortBindings"]["80/tcp"],
            serde_json::json!([
                {"HostIp": "127.0.0.1", "HostPort": "8000-8010"},
                {"HostIp": "", "HostPort": ""}
            ])
        );
        assert_eq!(h["Binds"], serde_json::json!(["/src:/a:ro,rprivate,z"]));
        assert_eq!(h["Mounts"][0]["Type"], "bind");
        assert_eq!(h["Mounts"][0]["Source"], "/strict");
        assert_eq!(h["Mounts"][0]["BindOptions"]["Propagation"], "rshared");
        assert_eq!(h["Mounts"][1]["Type"], "volume");
        assert!(h["Mounts"][1].get("Source").is_none());
        assert_eq!(h["Mounts"][1]["VolumeOptions"]["NoCopy"], true);
        assert_eq!(h["Mounts"][2]["Type"], "tmpfs");
        assert_eq!(h["Mounts"][2]["TmpfsOptions"]["SizeBytes"], 1024);
        assert_eq!(h["Mounts"][2]["TmpfsOptions"]["Mode"], 0o1777);
        assert_eq!(h["NetworkMode"], "front");
        let endpoints = c["NetworkingConfig"]["EndpointsConfig"]
            .as_object()
            .unwrap();
        assert_eq!(endpoints.len(), 1, "only the first network at creation");
        let ep = &endpoints["front"];
        assert_eq!(ep["Aliases"][0], "web");
        assert_eq!(ep["IPAMConfig"]["IPv4Address"], "10.5.0.5");
        assert_eq!(ep["IPAMConfig"]["IPv6Address"], "fd00::5");
        assert_eq!(ep["Links"][0], "db:database");
        assert_eq!(ep["DriverOpts"]["o"], "1");
        assert!(
            ep.get("MacAddress").is_none(),
            "API 1.41 reads it from Config"
        );
        assert_eq!(r.config_mac.as_deref(), Some("02:42:ac:11:00:09"));
        assert_eq!(h["Links"][0], "db:database");
        assert_eq!(h["RestartPolicy"]["Name"], "on-failure");
        assert_eq!(h["RestartPolicy"]["MaximumRetryCount"], 5);
        assert_eq!(c["Healthcheck"]["Test"], serde_json::json!(["CMD", "true"]));
        assert_eq!(c["Healthcheck"]["Interval"], 1_000_000_000_i64);
        assert_eq!(c["Healthcheck"]["Timeout"], 2_000_000_000_i64);
        assert_eq!(c["Healthcheck"]["Retries"], 3);
        assert_eq!(c["Healthcheck"]["StartPeriod"], 4_000_000_000_i64);
        assert_eq!(c["StopSignal"], "SIGINT");
        assert_eq!(c["StopTimeout"], 7);
        assert_eq!(h["Init"], true);
        assert_eq!(h["ReadonlyRootfs"], true);
        assert_eq!(h["Privileged"], true);
        assert_eq!(c["Tty"], true);
        assert_eq!(c["OpenStdin"], true);
        assert_eq!(c["StdinOnce"], true);
        assert_eq!(h["CapAdd"][0], "NET_ADMIN");
        assert_eq!(h["CapDrop"][0], "ALL");
        assert_eq!(h["SecurityOpt"][0], "no-new-privileges");
        assert_eq!(h["Tmpfs"]["/run"], "size=1m");
        assert_eq!(
            h["Ulimits"][0],
            serde_json::json!({"Name": "nofile", "Soft": 1024, "Hard": 2048})
        );
        assert_eq!(h["Sysctls"]["net.core.somaxconn"], "1024");
        assert_eq!(h["ExtraHosts"][0], "db:10.0.0.1");
        assert_eq!(h["Dns"][0], "1.1.1.1");
        assert_eq!(h["DnsOptions"][0], "ndots:1");
        assert_eq!(h["DnsSearch"][0], "example.org");
        assert_eq!(h["Memory"], 1_i64 << 30);
        assert_eq!(h["MemoryReservation"], 1_i64 << 29);
        assert_eq!(h["MemorySwap"], 1_i64 << 31);
        assert_eq!(h["NanoCpus"], 1_500_000_000_i64);
        assert_eq!(h["CpuShares"], 512);
        assert_eq!(h["CpusetCpus"], "0-1");
        assert_eq!(h["PidsLimit"], 100);
        assert_eq!(h["ShmSize"], 1_i64 << 26);
        assert_eq!(h["LogConfig"]["Type"], "json-file");
        assert_eq!(h["LogConfig"]["Config"]["max-size"], "1m");
        assert_eq!(h["IpcMode"], "shareable");
        assert_eq!(h["PidMode"], "host");
        assert_eq!(
            h["Devices"][0],
            serde_json::json!({"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"})
        );
        assert_eq!(h["GroupAdd"][0], "audio");
        assert_eq!(h["Runtime"], "runc");
        assert_eq!(h["VolumesFrom"][0], "other:ro");
        assert_eq!(h["OomKillDisable"], true);
        assert_eq!(h["OomScoreAdj"], -500);
        assert_eq!(h["UsernsMode"], "host");
        assert_eq!(h["CgroupParent"], "/parent");
    }

    #[test]
    fn mac_address_goes_where_the_engine_reads_it() {
        let mut spec = full_spec();
        spec.mac_address = "02:00:00:00:00:01".into();
        let old = create_request(&spec, OLD).unwrap();
        assert_eq!(old.config_mac.as_deref(), Some("02:00:00:00:00:01"));
        let new = create_request(&spec, NEW).unwrap();
        assert_eq!(new.config_mac, None);
        let json = serde_json::to_value(&new.body).unwrap();
        assert_eq!(
            json["NetworkingConfig"]["EndpointsConfig"]["front"]["MacAddress"],
            "02:42:ac:11:00:09"
        );
    }

    #[test]
    fn refuses_what_the_engine_would_ignore() {
        let mut spec = full_spec();
        spec.mounts = vec![Mount::Volume {
            source: "data".into(),
            target: "/d".into(),
            read_only: false,
            nocopy: false,
            subpath: "sub".into(),
        }];
        assert!(create_request(&spec, OLD).is_err());
        assert!(create_request(&spec, NEW).is_ok());
        let mut spec = full_spec();
        if let Some(h) = spec.healthcheck.as_mut() {
            h.start_interval_ns = 1;
        }
        assert!(create_request(&spec, OLD).is_err());
        let mut spec = full_spec();
        spec.networks[0].gw_priority = 10;
        assert!(create_request(&spec, OLD).is_err());
        assert!(create_request(&spec, NEW).is_ok());
    }

    #[test]
    fn network_modes_other_than_a_network_skip_endpoints() {
        let mut spec = full_spec();
        spec.network_mode = NetworkMode::Host;
        let json = serde_json::to_value(create_request(&spec, OLD).unwrap().body).unwrap();
        assert_eq!(json["HostConfig"]["NetworkMode"], "host");
        assert!(json.get("NetworkingConfig").is_none());
        let spec = ContainerSpec {
            image: "x".into(),
            healthcheck: Some(HealthcheckSpec {
                test: HealthTest::Disabled,
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = serde_json::to_value(create_request(&spec, OLD).unwrap().body).unwrap();
        assert_eq!(json["Healthcheck"]["Test"], serde_json::json!(["NONE"]));
        assert!(json.get("Entrypoint").is_none(), "None keeps the image's");
        assert!(json["HostConfig"].get("NetworkMode").is_none());
    }

    #[test]
    fn build_query_carries_the_repeated_parameters() {
        let spec = BuildSpec {
            tags: vec!["a:1".into(), "b/c:2".into()],
            extra_hosts: vec![
                ExtraHost {
                    name: "h".into(),
                    address: "1.2.3.4".into(),
                },
                ExtraHost {
                    name: "g".into(),
                    address: "::1".into(),
                },
            ],
            shm_size: 3 << 30,
            ..Default::default()
        };
        assert_eq!(
            extra_build_query(&spec),
            "t=b%2Fc%3A2&extrahosts=h%3A1.2.3.4&extrahosts=g%3A%3A%3A1&shmsize=3221225472"
        );
        let options = build_options(&spec, "Dockerfile");
        assert_eq!(options.t.as_deref(), Some("a:1"));
    }

    #[test]
    fn splits_build_output_into_lines() {
        let mut s = LineSplitter::default();
        assert_eq!(
            s.push("Step 1/2 : FROM scratch\n ---> abc"),
            vec!["Step 1/2 : FROM scratch"]
        );
        assert_eq!(s.push("\n\n"), vec![" ---> abc"]);
        assert_eq!(s.push("tail"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("tail"));
    }
}
