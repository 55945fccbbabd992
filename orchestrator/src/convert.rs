//! From the compose model to runtime objects: what a service's container,
//! a network, a volume and a build look like to the engine, with Docker
//! Compose's labels so that both tools recognise each other's objects.

use std::collections::BTreeMap;

use runtime_shim::{
    BuildSpec, ContainerSpec, Device, ExposedPort, ExtraHost, HealthTest, HealthcheckSpec,
    HostPort, Mount, Namespace, NetworkAttachment, NetworkMode, NetworkSpec, PortBinding, Protocol,
    Resources, RestartPolicy, UlimitSpec, VolumeSpec, VolumesFrom,
};

use crate::model::{Project, Service, Ulimit};
use crate::output::config_hash;

/// Docker Compose's label names.
pub mod labels {
    /// The project a resource belongs to.
    pub const PROJECT: &str = "com.docker.compose.project";
    /// The service of a container.
    pub const SERVICE: &str = "com.docker.compose.service";
    /// The configuration hash of a container's service.
    pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
    /// A container's replica number.
    pub const CONTAINER_NUMBER: &str = "com.docker.compose.container-number";
    /// The key of a volume in the compose file.
    pub const VOLUME: &str = "com.docker.compose.volume";
    /// The key of a network in the compose file.
    pub const NETWORK: &str = "com.docker.compose.network";
    /// The project directory.
    pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
    /// The compose files, comma-separated.
    pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
    /// The env files given with `--env-file`.
    pub const ENVIRONMENT_FILE: &str = "com.docker.compose.project.environment_file";
    /// `True` for `run` containers.
    pub const ONEOFF: &str = runtime_shim::ONEOFF_LABEL;
    /// The image id a container was created from.
    pub const IMAGE: &str = "com.docker.compose.image";
    /// The service's dependencies, `name:condition:restart,...`.
    pub const DEPENDS_ON: &str = "com.docker.compose.depends_on";
    /// The version of the tool that created the resource.
    pub const VERSION: &str = "com.docker.compose.version";

    pub use runtime_shim::is_oneoff;
}

/// rcompose's own label: the configuration hash of the service without its
/// resource limits (see [`without_limits`]). A container whose service
/// changed only in its limits has them changed in place.
pub const CONFIG_HASH_WITHOUT_LIMITS: &str = "io.rcompose.config-hash-without-limits";

/// The version written in [`labels::VERSION`].
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The name of a service's container number `number`.
pub fn container_name(project: &str, service_name: &str, service: &Service, number: u32) -> String {
    if !service.container_name.is_empty() {
        return service.container_name.clone();
    }
    format!("{project}-{service_name}-{number}")
}

/// The number of replicas a service wants.
pub fn replicas(service: &Service) -> u32 {
    let n = service
        .scale
        .or(service.deploy.as_ref().and_then(|d| d.replicas))
        .unwrap_or(1);
    u32::try_from(n.max(0)).unwrap_or(0)
}

/// A service's resource limits: its own keys, else `deploy.resources`.
pub fn resources(service: &Service) -> Resources {
    let deploy = service.deploy.as_ref().map(|d| &d.resources);
    let limits = deploy.and_then(|r| r.limits.as_ref());
    let reservations = deploy.and_then(|r| r.reservations.as_ref());
    let cpus = service.cpus.or(limits.and_then(|l| l.cpus)).unwrap_or(0.0);
    Resources {
        memory: service
            .mem_limit
            .or(limits.and_then(|l| l.memory))
            .map(|b| b.0)
            .unwrap_or(0),
        memory_reservation: service
            .mem_reservation
            .or(reservations.and_then(|r| r.memory))
            .map(|b| b.0)
            .unwrap_or(0),
        memory_swap: service.memswap_limit.map(|b| b.0).unwrap_or(0),
        nano_cpus: (f64::from(cpus) * 1e9).round() as i64,
        cpu_shares: service.cpu_shares,
        cpuset: service.cpuset.clone(),
        pids_limit: if service.pids_limit != 0 {
            service.pids_limit
        } else {
            limits.map(|l| l.pids).unwrap_or(0)
        },
    }
}

/// The service with its resource limits unset: what must stay the same
/// for a container to keep running while only its limits change.
pub fn without_limits(service: &Service) -> Service {
    let mut s = service.clone();
    s.mem_limit = None;
    s.mem_reservation = None;
    s.memswap_limit = None;
    s.cpus = None;
    s.cpu_shares = 0;
    s.cpuset.clear();
    s.pids_limit = 0;
    if let Some(d) = &mut s.deploy {
        if let Some(l) = &mut d.resources.limits {
            l.memory = None;
            l.cpus = None;
            l.pids = 0;
        }
        if let Some(r) = &mut d.resources.reservations {
            r.memory = None;
        }
        // Limits given as `deploy` keys or as the service's own are alike.
        let empty = Some(crate::model::Resource::default());
        if d.resources.limits == empty {
            d.resources.limits = None;
        }
        if d.resources.reservations == empty {
            d.resources.reservations = None;
        }
    }
    s
}

/// What the engine needs to know, beyond the project, to create a container.
#[derive(Debug, Clone, Default)]
pub struct ContainerContext {
    /// The id of the image the container runs (for the image label).
    pub image_id: String,
    /// Legacy links, `container:alias`.
    pub links: Vec<String>,
    /// Engine names of the containers or services this one shares namespaces or volumes with,
    /// by service name.
    pub service_containers: BTreeMap<String, String>,
    /// `--env-file` paths, for the project label.
    pub env_files: Vec<String>,
}

/// The labels every container of a service carries.
pub fn service_labels(
    project: &Project,
    name: &str,
    service: &Service,
    env_files: &[String],
) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = service.labels.0.clone();
    l.insert(labels::PROJECT.into(), project.name.clone());
    l.insert(labels::SERVICE.into(), name.into());
    l.insert(labels::VERSION.into(), VERSION.into());
    l.insert(labels::WORKING_DIR.into(), project.working_dir.clone());
    l.insert(labels::CONFIG_FILES.into(), project.config_files.join(","));
    l.insert(labels::ONEOFF.into(), "False".into());
    if !env_files.is_empty() {
        l.insert(labels::ENVIRONMENT_FILE.into(), env_files.join(","));
    }
    l
}

/// The image a service runs.
pub fn image_name(project: &Project, name: &str, service: &Service) -> String {
    crate::output::image_name(project, name, service)
}

fn nanos(d: Option<crate::model::Duration>) -> i64 {
    d.map(|d| d.nanos).unwrap_or(0)
}

/// The container for replica `number` of service `name`.
pub fn container_spec(
    project: &Project,
    name: &str,
    service: &Service,
    number: u32,
    ctx: &ContainerContext,
) -> ContainerSpec {
    let container = container_name(&project.name, name, service, number);
    let mut labels = service_labels(project, name, service, &ctx.env_files);
    labels.insert(labels::CONFIG_HASH.into(), config_hash(service));
    labels.insert(
        CONFIG_HASH_WITHOUT_LIMITS.into(),
        config_hash(&without_limits(service)),
    );
    labels.insert(labels::CONTAINER_NUMBER.into(), number.to_string());
    labels.insert(labels::IMAGE.into(), ctx.image_id.clone());
    let deps: Vec<String> = service
        .depends_on
        .iter()
        .map(|(d, dep)| format!("{d}:{}:{}", dep.condition, dep.restart))
        .collect();
    labels.insert(labels::DEPENDS_ON.into(), deps.join(","));

    let env = service
        .environment
        .0
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect();

    // The loader has refused what does not parse (see `loader::validate`).
    let mut exposed: Vec<ExposedPort> = service
        .expose
        .iter()
        .filter_map(|e| parse_exposed(e).ok())
        .flatten()
        .collect();
    let mut ports = Vec::new();
    for p in &service.ports {
        let (Ok(port), Some(protocol), Ok(host_port)) = (
            u16::try_from(p.target),
            parse_protocol(&p.protocol),
            parse_host_port(&p.published),
        ) else {
            continue;
        };
        exposed.push(ExposedPort { port, protocol });
        ports.push(PortBinding {
            container_port: port,
            protocol,
            host_ip: p.host_ip.clone(),
            host_port,
        });
    }
    exposed.sort();
    exposed.dedup();

    let mut mounts = Vec::new();
    for v in &service.volumes {
        match v.kind.as_str() {
            "bind" => {
                let bind = v.bind.clone().unwrap_or_default();
                mounts.push(Mount::Bind {
                    source: v.source.clone(),
                    target: v.target.clone(),
                    read_only: v.read_only,
                    create_host_path: bind.create_host_path,
                    propagation: bind.propagation,
                    selinux: bind.selinux,
                });
            }
            "tmpfs" => {
                let t = v.tmpfs.clone().unwrap_or_default();
                mounts.push(Mount::Tmpfs {
                    target: v.target.clone(),
                    size: t.size.map(|b| b.0).unwrap_or(0),
                    mode: t.mode.unwrap_or(0),
                });
            }
            _ => {
                let opts = v.volume.clone().unwrap_or_default();
                let source = project
                    .volumes
                    .get(&v.source)
                    .map(|vol| vol.name.clone())
                    .unwrap_or_else(|| v.source.clone());
                mounts.push(Mount::Volume {
                    source,
                    target: v.target.clone(),
                    read_only: v.read_only,
                    nocopy: opts.nocopy,
                    subpath: opts.subpath,
                });
            }
        }
    }
    for s in &service.secrets {
        if let Some(secret) = project.secrets.get(&s.source) {
            if !secret.file.is_empty() {
                let target = if s.target.starts_with('/') {
                    s.target.clone()
                } else {
                    format!("/run/secrets/{}", s.target)
                };
                mounts.push(Mount::Bind {
                    source: secret.file.clone(),
                    target,
                    read_only: true,
                    create_host_path: false,
                    propagation: String::new(),
                    selinux: String::new(),
                });
            }
        }
    }
    for c in &service.configs {
        if let Some(config) = project.configs.get(&c.source) {
            if !config.file.is_empty() {
                let target = if c.target.is_empty() {
                    format!("/{}", c.source)
                } else {
                    c.target.clone()
                };
                mounts.push(Mount::Bind {
                    source: config.file.clone(),
                    target,
                    read_only: true,
                    create_host_path: false,
                    propagation: String::new(),
                    selinux: String::new(),
                });
            }
        }
    }

    // `service:x` names the service's first container.
    let peer = |svc: &str| match ctx.service_containers.get(svc) {
        Some(c) => c.clone(),
        None => match project.services.get(svc) {
            Some(s) => container_name(&project.name, svc, s, 1),
            None => svc.to_string(),
        },
    };
    let namespace = |ns: &str| match parse_namespace(ns) {
        Ok(NamespaceRef::Service(svc)) => Namespace::Container(peer(&svc)),
        Ok(NamespaceRef::Mode(mode)) => mode,
        Err(_) => Namespace::Default,
    };
    let network_mode = match service.network_mode.as_str() {
        "" => NetworkMode::Attachments,
        "host" => NetworkMode::Host,
        "none" => NetworkMode::None,
        mode => match (
            mode.strip_prefix("service:"),
            mode.strip_prefix("container:"),
        ) {
            (Some(svc), _) => NetworkMode::Container(peer(svc)),
            (_, Some(c)) => NetworkMode::Container(c.to_string()),
            _ => NetworkMode::Network(mode.to_string()),
        },
    };
    let mut networks = Vec::new();
    if network_mode == NetworkMode::Attachments {
        // Compose attaches networks by priority, then by name.
        let mut keys: Vec<(&String, i64)> = service
            .networks
            .iter()
            .map(|(k, cfg)| (k, cfg.as_ref().map(|c| c.priority).unwrap_or(0)))
            .collect();
        keys.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (key, _) in keys {
            let cfg = service
                .networks
                .get(key)
                .cloned()
                .flatten()
                .unwrap_or_default();
            let net_name = project
                .networks
                .get(key)
                .map(|n| n.name.clone())
                .unwrap_or_else(|| key.clone());
            let mut aliases = vec![container.clone(), name.to_string()];
            aliases.extend(cfg.aliases.iter().cloned());
            networks.push(NetworkAttachment {
                network: net_name,
                aliases,
                ipv4_address: cfg.ipv4_address.clone(),
                ipv6_address: cfg.ipv6_address.clone(),
                links: ctx.links.clone(),
                mac_address: cfg.mac_address.clone(),
                driver_opts: cfg.driver_opts.0.clone(),
                gw_priority: cfg.gw_priority,
            });
        }
    }

    let healthcheck = service.healthcheck.as_ref().map(|h| {
        if h.disable {
            HealthcheckSpec {
                test: HealthTest::Disabled,
                ..HealthcheckSpec::default()
            }
        } else {
            HealthcheckSpec {
                test: health_test(&h.test),
                interval_ns: nanos(h.interval),
                timeout_ns: nanos(h.timeout),
                retries: h.retries.map(|r| r as i64).unwrap_or(0),
                start_period_ns: nanos(h.start_period),
                start_interval_ns: nanos(h.start_interval),
            }
        }
    });

    let restart = if !service.restart.is_empty() {
        parse_restart(&service.restart).ok()
    } else {
        service
            .deploy
            .as_ref()
            .and_then(|d| d.restart_policy.as_ref())
            .map(|rp| match rp.condition.as_str() {
                "any" => RestartPolicy::Always,
                "on-failure" => RestartPolicy::OnFailure {
                    max_retries: rp.max_attempts.and_then(|n| u32::try_from(n).ok()),
                },
                _ => RestartPolicy::No,
            })
    };
    let (log_driver, log_opts) = match &service.logging {
        Some(l) => (l.driver.clone(), l.options.0.clone()),
        None => Default::default(),
    };
    let tmpfs = service
        .tmpfs
        .0
        .iter()
        .map(|t| match t.split_once(':') {
            Some((p, o)) => (p.to_string(), o.to_string()),
            None => (t.clone(), String::new()),
        })
        .collect();
    let ulimits = service
        .ulimits
        .iter()
        .map(|(n, u)| match *u {
            Ulimit::Single(v) => UlimitSpec {
                name: n.clone(),
                soft: v,
                hard: v,
            },
            Ulimit::Pair { soft, hard } => UlimitSpec {
                name: n.clone(),
                soft,
                hard,
            },
        })
        .collect();

    ContainerSpec {
        name: container,
        image: image_name(project, name, service),
        labels,
        env,
        command: service.command.as_ref().map(|c| c.0.clone()),
        entrypoint: service.entrypoint.as_ref().map(|c| c.0.clone()),
        working_dir: service.working_dir.clone(),
        user: service.user.clone(),
        hostname: service.hostname.clone(),
        domainname: service.domainname.clone(),
        exposed,
        ports,
        mounts,
        network_mode,
        networks,
        restart,
        healthcheck,
        stop_signal: service.stop_signal.clone(),
        stop_timeout: service.stop_grace_period.map(|d| d.nanos / 1_000_000_000),
        init: service.init,
        read_only: service.read_only,
        privileged: service.privileged,
        tty: service.tty,
        stdin_open: service.stdin_open,
        stdin_once: false,
        cap_add: service.cap_add.clone(),
        cap_drop: service.cap_drop.clone(),
        security_opt: service.security_opt.clone(),
        tmpfs,
        ulimits,
        sysctls: service.sysctls.0.clone(),
        extra_hosts: extra_hosts(&service.extra_hosts),
        dns: service.dns.0.clone(),
        dns_opt: service.dns_opt.clone(),
        dns_search: service.dns_search.0.clone(),
        resources: resources(service),
        shm_size: service.shm_size.map(|b| b.0).unwrap_or(0),
        log_driver,
        log_opts,
        ipc: namespace(&service.ipc),
        pid: namespace(&service.pid),
        devices: service
            .devices
            .iter()
            .map(|d| Device {
                host_path: d.source.clone(),
                container_path: if d.target.is_empty() {
                    d.source.clone()
                } else {
                    d.target.clone()
                },
                permissions: if d.permissions.is_empty() {
                    "rwm".into()
                } else {
                    d.permissions.clone()
                },
            })
            .collect(),
        group_add: service.group_add.clone(),
        platform: service.platform.clone(),
        runtime: service.runtime.clone(),
        volumes_from: service
            .volumes_from
            .iter()
            .map(|v| {
                let (from, mode) = match v.rsplit_once(':') {
                    Some((from, mode @ ("ro" | "rw"))) => (from, mode),
                    _ => (v.as_str(), ""),
                };
                let container = match from.strip_prefix("container:") {
                    Some(c) => c.to_string(),
                    None => ctx
                        .service_containers
                        .get(from)
                        .cloned()
                        .unwrap_or_else(|| from.to_string()),
                };
                VolumesFrom {
                    container,
                    read_only: mode == "ro",
                }
            })
            .collect(),
        mac_address: service.mac_address.clone(),
        oom_kill_disable: service.oom_kill_disable,
        oom_score_adj: service.oom_score_adj,
        userns_mode: service.userns_mode.clone(),
        cgroup_parent: service.cgroup_parent.clone(),
    }
}

/// The network `key` of the project, as the engine should create it.
pub fn network_spec(project: &Project, key: &str) -> Option<NetworkSpec> {
    let n = project.networks.get(key)?;
    let mut labels = n.labels.0.clone();
    labels.insert(labels::NETWORK.into(), key.into());
    labels.insert(labels::PROJECT.into(), project.name.clone());
    labels.insert(labels::VERSION.into(), VERSION.into());
    Some(NetworkSpec {
        name: n.name.clone(),
        driver: n.driver.clone(),
        driver_opts: n.driver_opts.0.clone(),
        labels,
        internal: n.internal,
        attachable: n.attachable,
        enable_ipv6: n.enable_ipv6.unwrap_or(false),
        ipam_driver: n.ipam.driver.clone(),
        ipam_pools: n
            .ipam
            .config
            .iter()
            .map(|p| (p.subnet.clone(), p.gateway.clone(), p.ip_range.clone()))
            .collect(),
        ipam_options: n.ipam.options.0.clone(),
    })
}

/// The volume `key` of the project, as the engine should create it.
pub fn volume_spec(project: &Project, key: &str) -> Option<VolumeSpec> {
    let v = project.volumes.get(key)?;
    let mut labels = v.labels.0.clone();
    labels.insert(labels::VOLUME.into(), key.into());
    labels.insert(labels::PROJECT.into(), project.name.clone());
    labels.insert(labels::VERSION.into(), VERSION.into());
    Some(VolumeSpec {
        name: v.name.clone(),
        driver: v.driver.clone(),
        driver_opts: v.driver_opts.0.clone(),
        labels,
    })
}

/// The build of service `name`, when it has one.
pub fn build_spec(
    project: &Project,
    name: &str,
    service: &Service,
    no_cache: bool,
) -> Option<BuildSpec> {
    let b = service.build.as_ref()?;
    let mut tags = vec![image_name(project, name, service)];
    tags.extend(b.tags.0.iter().cloned());
    let mut labels = b.labels.0.clone();
    labels.insert(labels::PROJECT.into(), project.name.clone());
    labels.insert(labels::SERVICE.into(), name.into());
    labels.insert(labels::VERSION.into(), VERSION.into());
    Some(BuildSpec {
        context: b.context.clone(),
        dockerfile: b.dockerfile.clone(),
        dockerfile_inline: b.dockerfile_inline.clone(),
        tags,
        args: b
            .args
            .0
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect(),
        target: b.target.clone(),
        labels,
        no_cache: no_cache || b.no_cache,
        pull: b.pull,
        network: b.network.clone(),
        extra_hosts: extra_hosts(&b.extra_hosts),
        shm_size: b.shm_size.map(|s| s.0).unwrap_or(0),
        platform: service.platform.clone(),
    })
}

/// `extra_hosts` as entries, one per address.
fn extra_hosts(hosts: &crate::model::HostsList) -> Vec<ExtraHost> {
    hosts
        .0
        .iter()
        .flat_map(|(name, addresses)| {
            addresses.iter().map(|address| ExtraHost {
                name: name.clone(),
                address: address.clone(),
            })
        })
        .collect()
}

/// A compose health check `test` (`[CMD, ...]`, `[CMD-SHELL, line]`, `[NONE]`).
fn health_test(test: &[String]) -> HealthTest {
    match test.split_first() {
        None => HealthTest::Inherit,
        Some((first, rest)) => match first.as_str() {
            "NONE" => HealthTest::Disabled,
            "CMD" => HealthTest::Exec(rest.to_vec()),
            "CMD-SHELL" => HealthTest::Shell(rest.join(" ")),
            // The loader turns a string into CMD-SHELL; a list without a
            // keyword is a command.
            _ => HealthTest::Exec(test.to_vec()),
        },
    }
}

/// A port protocol as compose writes it (empty for TCP).
pub fn parse_protocol(s: &str) -> Option<Protocol> {
    if s.is_empty() {
        Some(Protocol::Tcp)
    } else {
        Protocol::parse(s)
    }
}

/// The `published` part of a port: empty, a port, or a range `a-b`.
pub fn parse_host_port(s: &str) -> Result<HostPort, String> {
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("invalid published port {s:?}"))
    };
    match s.split_once('-') {
        _ if s.is_empty() => Ok(HostPort::Any),
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if b < a {
                return Err(format!("invalid published port range {s:?}"));
            }
            Ok(HostPort::Range(a, b))
        }
        None => Ok(match port(s)? {
            0 => HostPort::Any,
            p => HostPort::Fixed(p),
        }),
    }
}

/// An `expose` entry: `port[-end][/protocol]`.
pub fn parse_exposed(s: &str) -> Result<Vec<ExposedPort>, String> {
    let bad = || format!("invalid exposed port {s:?}");
    let (ports, protocol) = match s.split_once('/') {
        Some((p, proto)) => (p, parse_protocol(proto).ok_or_else(bad)?),
        None => (s, Protocol::Tcp),
    };
    let port = |p: &str| p.trim().parse::<u16>().map_err(|_| bad());
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if end < start {
        return Err(bad());
    }
    Ok((start..=end)
        .map(|port| ExposedPort { port, protocol })
        .collect())
}

/// `no`, `always`, `unless-stopped`, `on-failure[:N]`.
pub fn parse_restart(s: &str) -> Result<RestartPolicy, String> {
    Ok(match s {
        "no" => RestartPolicy::No,
        "always" => RestartPolicy::Always,
        "unless-stopped" => RestartPolicy::UnlessStopped,
        "on-failure" => RestartPolicy::OnFailure { max_retries: None },
        other => match other.strip_prefix("on-failure:").map(|n| n.trim().parse()) {
            Some(Ok(n)) => RestartPolicy::OnFailure {
                max_retries: Some(n),
            },
            Some(Err(_)) => {
                return Err(format!(
                    "invalid restart policy {other:?}: the maximum retry count must be a non-negative integer"
                ))
            }
            None => return Err(format!("invalid restart policy {other:?}")),
        },
    })
}

/// An `ipc` or `pid` mode, before `service:` is resolved to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceRef {
    /// A mode of its own or another container's.
    Mode(Namespace),
    /// The namespace of a service's first container.
    Service(String),
}

/// `host`, `private`, `shareable`, `none`, `container:x`, `service:x` (or empty).
pub fn parse_namespace(s: &str) -> Result<NamespaceRef, String> {
    let mode = match s {
        "" => Namespace::Default,
        "host" => Namespace::Host,
        "private" => Namespace::Private,
        "shareable" => Namespace::Shareable,
        "none" => Namespace::None,
        other => match (
            other.strip_prefix("service:"),
            other.strip_prefix("container:"),
        ) {
            (Some(svc), _) if !svc.is_empty() => return Ok(NamespaceRef::Service(svc.into())),
            (_, Some(c)) if !c.is_empty() => Namespace::Container(c.into()),
            _ => return Err(format!("invalid namespace mode {other:?}")),
        },
    };
    Ok(NamespaceRef::Mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_restart_policies_once() {
        assert_eq!(parse_restart("no"), Ok(RestartPolicy::No));
        assert_eq!(
            parse_restart("on-failure:3"),
            Ok(RestartPolicy::OnFailure {
                max_retries: Some(3)
            })
        );
        assert_eq!(
            parse_restart("on-failure"),
            Ok(RestartPolicy::OnFailure { max_retries: None })
        );
        assert_eq!(
            parse_restart("unless-stopped"),
            Ok(RestartPolicy::UnlessStopped)
        );
        assert!(parse_restart("on-failure:x").is_err());
        assert!(parse_restart("on-failure:-1").is_err());
        assert!(parse_restart("sometimes").is_err());
    }

    #[test]
    fn expands_exposed_ranges_and_protocols() {
        let tcp = |port| ExposedPort {
            port,
            protocol: Protocol::Tcp,
        };
        assert_eq!(parse_exposed("80"), Ok(vec![tcp(80)]));
        assert_eq!(
            parse_exposed("53-54/udp"),
            Ok(vec![
                ExposedPort {
                    port: 53,
                    protocol: Protocol::Udp
                },
                ExposedPort {
                    port: 54,
                    protocol: Protocol::Udp
                }
            ])
        );
        assert!(parse_exposed("x/tcp").is_err());
        assert!(parse_exposed("80/carrier-pigeon").is_err());
        assert!(parse_exposed("90-80").is_err());
    }

    #[test]
    fn host_ports_are_any_fixed_or_a_range() {
        assert_eq!(parse_host_port(""), Ok(HostPort::Any));
        assert_eq!(parse_host_port("0"), Ok(HostPort::Any));
        assert_eq!(parse_host_port("8080"), Ok(HostPort::Fixed(8080)));
        assert_eq!(
            parse_host_port("8000-8010"),
            Ok(HostPort::Range(8000, 8010))
        );
        assert!(parse_host_port("8010-8000").is_err());
        assert!(parse_host_port("http").is_err());
        assert_eq!(parse_protocol(""), Some(Protocol::Tcp));
        assert_eq!(parse_protocol("UDP"), Some(Protocol::Udp));
        assert_eq!(parse_protocol("icmp"), None);
    }

    #[test]
    fn namespaces_name_a_mode_a_container_or_a_service() {
        assert_eq!(
            parse_namespace(""),
            Ok(NamespaceRef::Mode(Namespace::Default))
        );
        assert_eq!(
            parse_namespace("shareable"),
            Ok(NamespaceRef::Mode(Namespace::Shareable))
        );
        assert_eq!(
            parse_namespace("container:abc"),
            Ok(NamespaceRef::Mode(Namespace::Container("abc".into())))
        );
        assert_eq!(
            parse_namespace("service:db"),
            Ok(NamespaceRef::Service("db".into()))
        );
        assert!(parse_namespace("service:").is_err());
        assert!(parse_namespace("shared").is_err());
    }

    #[test]
    fn health_tests_are_typed() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(health_test(&[]), HealthTest::Inherit);
        assert_eq!(health_test(&v(&["NONE"])), HealthTest::Disabled);
        assert_eq!(
            health_test(&v(&["CMD", "pg_isready", "-q"])),
            HealthTest::Exec(v(&["pg_isready", "-q"]))
        );
        assert_eq!(
            health_test(&v(&["CMD-SHELL", "curl -f localhost"])),
            HealthTest::Shell("curl -f localhost".into())
        );
    }
}
