//! From the compose model to runtime objects: what a service's container,
//! a network, a volume and a build look like to the engine, with Docker
//! Compose's labels so that both tools recognise each other's objects.

use std::collections::BTreeMap;

use runtime_shim::{
    BuildSpec, ContainerSpec, HealthcheckSpec, Mount, NetworkAttachment, NetworkSpec, PortBinding,
    UlimitSpec, VolumeSpec,
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
    pub const ONEOFF: &str = "com.docker.compose.oneoff";
    /// The image id a container was created from.
    pub const IMAGE: &str = "com.docker.compose.image";
    /// The service's dependencies, `name:condition:restart,...`.
    pub const DEPENDS_ON: &str = "com.docker.compose.depends_on";
    /// The version of the tool that created the resource.
    pub const VERSION: &str = "com.docker.compose.version";
}

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

    let mut exposed: Vec<String> = service
        .expose
        .iter()
        .map(|e| {
            if e.contains('/') {
                e.clone()
            } else {
                format!("{e}/tcp")
            }
        })
        .collect();
    let mut ports = Vec::new();
    for p in &service.ports {
        let Ok(port) = u16::try_from(p.target) else {
            continue;
        };
        exposed.push(format!("{port}/{}", p.protocol));
        ports.push(PortBinding {
            container_port: port,
            protocol: p.protocol.clone(),
            host_ip: p.host_ip.clone(),
            host_port: p.published.clone(),
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

    let resolve_ns = |ns: &str| -> String {
        match ns.strip_prefix("service:") {
            Some(svc) => match ctx.service_containers.get(svc) {
                Some(c) => format!("container:{c}"),
                None => ns.to_string(),
            },
            None => ns.to_string(),
        }
    };
    let network_mode = resolve_ns(&service.network_mode);
    let mut networks = Vec::new();
    if network_mode.is_empty() {
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
                test: vec!["NONE".into()],
                ..HealthcheckSpec::default()
            }
        } else {
            HealthcheckSpec {
                test: h.test.clone(),
                interval_ns: nanos(h.interval),
                timeout_ns: nanos(h.timeout),
                retries: h.retries.map(|r| r as i64).unwrap_or(0),
                start_period_ns: nanos(h.start_period),
                start_interval_ns: nanos(h.start_interval),
            }
        }
    });

    let limits = service
        .deploy
        .as_ref()
        .and_then(|d| d.resources.limits.clone());
    let reservations = service
        .deploy
        .as_ref()
        .and_then(|d| d.resources.reservations.clone());
    let memory = service
        .mem_limit
        .or(limits.as_ref().and_then(|l| l.memory))
        .map(|b| b.0)
        .unwrap_or(0);
    let cpus = service
        .cpus
        .or(limits.as_ref().and_then(|l| l.cpus))
        .unwrap_or(0.0);
    let pids = if service.pids_limit != 0 {
        service.pids_limit
    } else {
        limits.as_ref().map(|l| l.pids).unwrap_or(0)
    };
    let restart = if !service.restart.is_empty() {
        service.restart.clone()
    } else {
        match service
            .deploy
            .as_ref()
            .and_then(|d| d.restart_policy.as_ref())
        {
            Some(rp) => match rp.condition.as_str() {
                "any" => "always".into(),
                "on-failure" => match rp.max_attempts {
                    Some(n) => format!("on-failure:{n}"),
                    None => "on-failure".into(),
                },
                _ => "no".into(),
            },
            None => String::new(),
        }
    };
    let (log_driver, log_opts) = match &service.logging {
        Some(l) => (l.driver.clone(), l.options.0.clone()),
        None => (service.log_driver.clone(), service.log_opt.0.clone()),
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
        extra_hosts: service.extra_hosts.as_list(":"),
        dns: service.dns.0.clone(),
        dns_opt: service.dns_opt.clone(),
        dns_search: service.dns_search.0.clone(),
        memory,
        memory_reservation: service
            .mem_reservation
            .or(reservations.as_ref().and_then(|r| r.memory))
            .map(|b| b.0)
            .unwrap_or(0),
        memory_swap: service.memswap_limit.map(|b| b.0).unwrap_or(0),
        nano_cpus: (f64::from(cpus) * 1e9).round() as i64,
        cpu_shares: service.cpu_shares,
        cpuset: service.cpuset.clone(),
        pids_limit: pids,
        shm_size: service.shm_size.map(|b| b.0).unwrap_or(0),
        log_driver,
        log_opts,
        ipc: resolve_ns(&service.ipc),
        pid: resolve_ns(&service.pid),
        devices: service
            .devices
            .iter()
            .map(|d| {
                format!(
                    "{}:{}:{}",
                    d.source,
                    d.target,
                    if d.permissions.is_empty() {
                        "rwm"
                    } else {
                        &d.permissions
                    }
                )
            })
            .collect(),
        group_add: service.group_add.clone(),
        platform: service.platform.clone(),
        runtime: service.runtime.clone(),
        volumes_from: service
            .volumes_from
            .iter()
            .map(|v| match v.strip_prefix("container:") {
                Some(c) => c.to_string(),
                None => {
                    let (svc, mode) = v.split_once(':').unwrap_or((v.as_str(), ""));
                    let target = ctx
                        .service_containers
                        .get(svc)
                        .cloned()
                        .unwrap_or_else(|| svc.to_string());
                    if mode.is_empty() {
                        target
                    } else {
                        format!("{target}:{mode}")
                    }
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
        extra_hosts: b.extra_hosts.as_list(":"),
        shm_size: b.shm_size.map(|s| s.0).unwrap_or(0),
        platform: service.platform.clone(),
    })
}
