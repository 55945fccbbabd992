//! Balancer services: a compose service that rcompose serves with its
//! built-in balancer instead of running the service's image.
//!
//! Two spellings select one:
//! - `image: dockercloud/haproxy` (the classic Compose frontend), read with
//!   that image's knobs: `BALANCE`, `MODE`, `HEALTH_CHECK`, `TIMEOUT`,
//!   `MAXCONN`, `STATS_PORT`, `STATS_AUTH`, `SKIP_FORWARDED_PROTO` on the
//!   frontend; `VIRTUAL_HOST`, `VIRTUAL_HOST_WEIGHT`, `BALANCE`, `COOKIE`,
//!   `HEALTH_CHECK`, `HTTP_CHECK`, `TCP_PORTS`, `EXCLUDE_PORTS` on the
//!   linked services;
//! - an `x-rcompose-balancer` block on a service, the same options in
//!   structured form (see [`Structured`]).
//!
//! Everything here is pure: the project in, a [`BalancerSpec`] out, which the
//! balancer's container receives whole. The spec's `members` say which
//! containers feed which backend; [`endpoints_of`] turns one container into
//! its endpoints, for the balancer's own discovery and for the CLI alike.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use runtime_shim::ContainerDetails;
use serde::{Deserialize, Serialize};

use crate::model::{values, Project, Service};

/// The service extension of the structured spelling.
pub const EXTENSION: &str = "x-rcompose-balancer";

/// The environment variable that carries the spec into the container.
pub const SPEC_ENV: &str = "RCOMPOSE_BALANCER_SPEC";

/// Where the balancer's control socket lives inside its container: a
/// directory bind-mounted from the host (see [`Host::control_root`]), so
/// that the control channel is on no network.
pub const CONTROL_DIR: &str = "/run/rcompose-balancer";

/// Where certificate files of the structured spelling are mounted.
pub const TLS_DIR: &str = "/run/rcompose-balancer-tls";

/// The control socket's name in [`CONTROL_DIR`] and in its host directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// The user a balancer runs as unless its service names one: `nobody`,
/// with no capabilities (the engine lets any user bind low ports inside a
/// container's own network namespace).
pub const BALANCER_USER: &str = "65534:65534";

/// What [`prepare`] needs to know of the host, found by the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Host {
    /// The directory under which each balancer gets a control directory,
    /// `<root>/<project>/<service>`; only its owner can enter it.
    pub control_root: String,
    /// The group that owns the engine's socket, for balancers whose file
    /// mounts it.
    pub engine_socket_gid: Option<u32>,
    /// Whether the project runs on the engine behind that socket. The
    /// native runtime has none: a balancer's file that mounts the socket
    /// (the dockercloud frontend's does) runs there without it, following
    /// the network's names instead.
    pub engine_socket: bool,
}

/// The host directory of a balancer's control socket.
pub fn control_dir(host: &Host, project: &str, service: &str) -> String {
    format!("{}/{project}/{service}", host.control_root)
}

/// Everything a balancer container needs to know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BalancerSpec {
    /// The project's name (its containers carry it as a label).
    pub project: String,
    /// The balancer's own service.
    pub service: String,
    /// Listeners, backends, policies.
    pub config: lb::Config,
    /// Which services' containers feed which backend.
    pub members: Vec<Member>,
    /// Engine names of the networks the balancer is on, in order of
    /// preference for reaching an endpoint.
    pub networks: Vec<String>,
    /// The host directory of the control socket (set by [`prepare`]).
    #[serde(default)]
    pub control_dir: Option<String>,
    /// Whether the file gives the balancer the engine's socket: it then
    /// follows the engine's events; otherwise it polls the network's DNS
    /// for the member services' replicas.
    #[serde(default)]
    pub engine_events: bool,
}

/// A service whose containers are endpoints of a backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The backend.
    pub backend: String,
    /// The compose service.
    pub service: String,
    /// The container port; none means every exposed TCP port but `exclude`.
    pub port: Option<u16>,
    /// Ports left out when `port` is none.
    #[serde(default)]
    pub exclude: Vec<u16>,
    /// The service's TCP ports that its compose file names (`expose`,
    /// `ports`), but `exclude`: what discovery without the engine uses when
    /// `port` is none.
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// Whether a service is served by the built-in balancer.
pub fn is_balancer(service: &Service) -> bool {
    service.extensions.contains_key(EXTENSION) || is_dockercloud_image(&service.image)
}

/// Whether a service has been through [`prepare`] (it runs the balancer).
pub fn is_prepared(service: &Service) -> bool {
    service.environment.0.contains_key(SPEC_ENV)
}

/// The spec a prepared balancer service runs with.
pub fn prepared_spec(service: &Service) -> Option<BalancerSpec> {
    let json = service.environment.0.get(SPEC_ENV)?.as_deref()?;
    serde_json::from_str(json).ok()
}

fn is_dockercloud_image(image: &str) -> bool {
    // Under any registry (a mirror's), by any tag or digest.
    let name = runtime_shim::reference::split(image).repository;
    name == "dockercloud/haproxy" || name.ends_with("/dockercloud/haproxy")
}

/// A balancer setting that cannot be used: its message names the service
/// and the setting; `key` leads to it inside the service's YAML, for the
/// caller to find its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SettingError {
    /// The balancer service.
    pub service: String,
    /// The path below `services.<service>`: `["environment", "BALANCE"]`,
    /// `["x-rcompose-balancer", "tcp"]`; empty when no one setting is to
    /// blame.
    pub key: Vec<String>,
    /// What is wrong, naming the service and the setting.
    pub message: String,
}

impl SettingError {
    /// An error in environment variable `var` (or, when it starts with the
    /// extension's name, in that part of the extension).
    fn new(service: &str, var: &str, message: String) -> Self {
        let key = if var.starts_with(EXTENSION) {
            var.split('.').map(str::to_string).collect()
        } else if var.is_empty() {
            Vec::new()
        } else {
            vec!["environment".to_string(), var.to_string()]
        };
        SettingError {
            service: service.to_string(),
            key,
            message,
        }
    }
}

/// Every balancer service of the project with its spec, in service order.
pub fn balancers(project: &Project) -> Vec<(String, Result<BalancerSpec, SettingError>)> {
    project
        .services
        .iter()
        .filter(|(_, s)| is_balancer(s))
        .map(|(name, _)| (name.clone(), spec(project, name)))
        .collect()
}

/// The spec of balancer service `name`; an error names the service and the
/// setting that is wrong.
pub fn spec(project: &Project, name: &str) -> Result<BalancerSpec, SettingError> {
    let service = project
        .services
        .get(name)
        .ok_or_else(|| SettingError::new(name, "", format!("no service {name:?}")))?;
    let mut spec = match service.extensions.get(EXTENSION) {
        Some(value) => structured(project, name, service, value)?,
        None => dockercloud(project, name, service)?,
    };
    spec.config.control = Some(lb::Control {
        socket: Some(format!("{CONTROL_DIR}/{CONTROL_SOCKET}").into()),
        listen: None,
        token: None,
    });
    for m in &mut spec.members {
        if let Some(svc) = project.services.get(&m.service) {
            m.ports = declared_ports(svc)
                .into_iter()
                .filter(|p| !m.exclude.contains(p))
                .collect();
        }
    }
    spec.engine_events = service.volumes.iter().any(|v| v.target == DOCKER_SOCKET);
    spec.config
        .validate()
        .map_err(|e| SettingError::new(name, "", format!("service {name:?}: {e}")))?;
    Ok(spec)
}

/// The TCP ports a service's compose file names: `expose` (single ports
/// and ranges) and the container side of `ports`, in order, each once.
fn declared_ports(service: &Service) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::new();
    let mut push = |p: u16| {
        if p != 0 && !out.contains(&p) {
            out.push(p);
        }
    };
    for e in &service.expose {
        let (number, proto) = e.split_once('/').unwrap_or((e, "tcp"));
        if !proto.eq_ignore_ascii_case("tcp") {
            continue;
        }
        let (low, high) = number.split_once('-').unwrap_or((number, number));
        if let (Ok(low), Ok(high)) = (low.trim().parse::<u16>(), high.trim().parse::<u16>()) {
            // A range is capped: a balancer is no port scanner.
            for p in (low..=high).take(64) {
                push(p);
            }
        }
    }
    for p in &service.ports {
        if p.protocol.is_empty() || p.protocol.eq_ignore_ascii_case("tcp") {
            push(u16::try_from(p.target).unwrap_or(0));
        }
    }
    out
}

fn any(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
}

/// The services a balancer sends to by default: its links and its
/// dependencies, each once, in name order.
fn default_backends(name: &str, service: &Service) -> Vec<String> {
    let mut names: Vec<String> = service
        .links
        .iter()
        .map(|l| l.split(':').next().unwrap_or(l).to_string())
        .chain(service.depends_on.keys().cloned())
        .filter(|s| s != name)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn networks(project: &Project, service: &Service) -> Vec<String> {
    let mut keys: Vec<&String> = service.networks.keys().collect();
    if keys.is_empty() {
        return Vec::new();
    }
    // Highest priority first, as the engine attaches them.
    keys.sort_by_key(|k| {
        std::cmp::Reverse(service.networks[*k].as_ref().map_or(0, |n| n.priority))
    });
    keys.iter()
        .map(|k| {
            project
                .networks
                .get(*k)
                .map_or_else(|| (*k).clone(), |n| n.name.clone())
        })
        .collect()
}

fn env<'a>(service: &'a Service, key: &str) -> Option<&'a str> {
    service
        .environment
        .0
        .get(key)
        .and_then(|v| v.as_deref())
        .filter(|v| !v.trim().is_empty())
}

/// Reads a balancing algorithm in HAProxy's spelling or rcompose's.
fn policy(value: &str) -> Option<lb::Policy> {
    let first = value.split_whitespace().next().unwrap_or("");
    Some(
        match first.to_ascii_lowercase().replace('-', "_").as_str() {
            "roundrobin" | "round_robin" | "static_rr" | "first" => lb::Policy::RoundRobin,
            "leastconn" | "least_conn" => lb::Policy::LeastConn,
            "p2c" | "power_of_two" => lb::Policy::PowerOfTwo,
            "random" => lb::Policy::Random,
            "source" | "source_hash" => lb::Policy::SourceHash,
            "uri" | "uri_hash" => lb::Policy::UriHash,
            _ => return None,
        },
    )
}

fn policy_of(service: &str, var: &str, value: &str) -> Result<lb::Policy, SettingError> {
    policy(value).ok_or_else(|| {
        let message = format!(
            "service {service:?}: {var}={value:?} is not a balancing algorithm rcompose knows \
             (roundrobin, leastconn, p2c, random, source, uri)"
        );
        SettingError::new(service, var, message)
    })
}

/// HAProxy's time syntax: a number of milliseconds, or with a unit.
fn haproxy_time(value: &str) -> Option<Duration> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "" | "ms" => Duration::from_millis(n),
        "us" => Duration::from_micros(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        _ => return None,
    })
}

/// `HEALTH_CHECK` (`check inter 2000 rise 2 fall 3`): an active TCP check
/// when it says `check`, none otherwise.
fn health_check(service: &str, value: &str) -> Result<Option<lb::HealthCheck>, SettingError> {
    let words: Vec<&str> = value.split_whitespace().collect();
    if !words.contains(&"check") {
        return Ok(None);
    }
    let mut check = lb::HealthCheck::default();
    let bad = |w: &str| {
        let message = format!("service {service:?}: HEALTH_CHECK={value:?}: cannot read {w:?}");
        SettingError::new(service, "HEALTH_CHECK", message)
    };
    let mut i = 0;
    while i < words.len() {
        let arg = words.get(i + 1).copied().unwrap_or("");
        match words[i] {
            "inter" => check.interval = haproxy_time(arg).ok_or_else(|| bad(arg))?,
            "rise" => check.rise = arg.parse().map_err(|_| bad(arg))?,
            "fall" => check.fall = arg.parse().map_err(|_| bad(arg))?,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    check.timeout = check.interval.min(Duration::from_secs(2));
    Ok(Some(check))
}

/// `HTTP_CHECK` (`OPTIONS /health HTTP/1.1...`): the path of an HTTP check.
fn http_check_path(value: &str) -> Option<String> {
    let mut words = value.split_whitespace();
    let first = words.next()?;
    let path = if first.starts_with('/') {
        first
    } else {
        words.next()?
    };
    path.starts_with('/').then(|| path.to_string())
}

/// `TIMEOUT` (`connect 5000, client 50000, server 50000`).
fn timeouts(service: &str, value: &str) -> Result<lb::Timeouts, SettingError> {
    let mut t = lb::Timeouts::default();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (what, time) = part.split_once(char::is_whitespace).unwrap_or((part, ""));
        let time = haproxy_time(time).ok_or_else(|| {
            let message = format!("service {service:?}: TIMEOUT: cannot read {part:?}");
            SettingError::new(service, "TIMEOUT", message)
        })?;
        match what {
            "connect" => t.connect = time,
            "client" => t.idle = time,
            "server" => t.server = time,
            "http-request" => t.client_header = time,
            "tunnel" => t.tunnel = time,
            // Other HAProxy timeouts have no counterpart; they are harmless.
            _ => {}
        }
    }
    Ok(t)
}

fn ports(service: &str, var: &str, value: Option<&str>) -> Result<Vec<u16>, SettingError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let number = p.split('/').next().unwrap_or(p);
            number.parse().map_err(|_| {
                let message = format!("service {service:?}: {var}: {p:?} is not a port");
                SettingError::new(service, var, message)
            })
        })
        .collect()
}

/// One `VIRTUAL_HOST` entry: `[scheme://]host[:port][/path]`.
#[derive(Debug, PartialEq)]
struct VirtualHost {
    port: u16,
    host: Option<String>,
    path: Option<String>,
    /// Written `https://` (or `wss://`): served with TLS.
    https: bool,
}

fn virtual_hosts(service: &str, value: &str) -> Result<Vec<VirtualHost>, SettingError> {
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (scheme, rest) = match entry.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("http".to_string(), entry),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_string())),
            None => (rest, None),
        };
        let default_port = if scheme == "https" || scheme == "wss" {
            443
        } else {
            80
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse().map_err(|_| {
                    let message =
                        format!("service {service:?}: VIRTUAL_HOST: bad port in {entry:?}");
                    SettingError::new(service, "VIRTUAL_HOST", message)
                })?,
            ),
            None => (authority, default_port),
        };
        out.push(VirtualHost {
            port,
            host: (!host.is_empty()).then(|| host.to_string()),
            path,
            https: scheme == "https" || scheme == "wss",
        });
    }
    Ok(out)
}

/// The `dockercloud/haproxy` spelling.
fn dockercloud(
    project: &Project,
    name: &str,
    service: &Service,
) -> Result<BalancerSpec, SettingError> {
    let global_policy = match env(service, "BALANCE") {
        Some(v) => policy_of(name, "BALANCE", v)?,
        None => lb::Policy::RoundRobin,
    };
    let global_mode = match env(service, "MODE").map(str::to_ascii_lowercase).as_deref() {
        None | Some("http") => lb::Mode::Http,
        Some("tcp") => lb::Mode::Tcp,
        Some(other) => {
            let message = format!("service {name:?}: MODE={other:?}: expected http or tcp");
            return Err(SettingError::new(name, "MODE", message));
        }
    };
    let global_check = health_check(
        name,
        env(service, "HEALTH_CHECK").unwrap_or("check inter 2000 rise 2 fall 3"),
    )?;
    let mut config = lb::Config {
        timeouts: timeouts(
            name,
            env(service, "TIMEOUT").unwrap_or("connect 5000, client 50000, server 50000"),
        )?,
        ..lb::Config::default()
    };
    if let Some(max) = env(service, "MAXCONN") {
        config.max_connections = max.trim().parse().map_err(|_| {
            let message = format!("service {name:?}: MAXCONN={max:?} is not a number");
            SettingError::new(name, "MAXCONN", message)
        })?;
    }
    let stats_port = match env(service, "STATS_PORT") {
        Some(p) => p.trim().parse().map_err(|_| {
            let message = format!("service {name:?}: STATS_PORT={p:?} is not a port");
            SettingError::new(name, "STATS_PORT", message)
        })?,
        None => 1936,
    };
    config.stats = Some(lb::Stats {
        listen: any(stats_port),
        auth: Some(
            env(service, "STATS_AUTH")
                .unwrap_or("stats:stats")
                .to_string(),
        ),
    });
    // dockercloud/haproxy's "another balancer is in front": its forwarded
    // headers are kept, whoever the peer.
    if env(service, "SKIP_FORWARDED_PROTO").is_some() {
        config.trusted_proxies = ["0.0.0.0/0", "::/0"]
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
    }

    let mut members = Vec::new();
    let mut backends: Vec<lb::Backend> = Vec::new();
    let mut frontends: Vec<lb::Frontend> = Vec::new();
    let make_backend = |backend_name: String,
                        svc: &Service,
                        svc_name: &str|
     -> Result<lb::Backend, SettingError> {
        let mut check = match env(svc, "HEALTH_CHECK") {
            Some(v) => health_check(svc_name, v)?,
            None => global_check.clone(),
        };
        if let (Some(check), Some(path)) = (
            check.as_mut(),
            env(svc, "HTTP_CHECK").and_then(http_check_path),
        ) {
            check.http_path = Some(path);
        }
        Ok(lb::Backend {
            policy: match env(svc, "BALANCE") {
                Some(v) => policy_of(svc_name, "BALANCE", v)?,
                None => global_policy,
            },
            sticky_cookie: env(svc, "COOKIE")
                .and_then(|c| c.split_whitespace().next())
                .map(str::to_string),
            health_check: check,
            ..lb::Backend::new(backend_name)
        })
    };

    let linked = default_backends(name, service);
    let mut vhosts: Vec<(i64, String, Vec<VirtualHost>)> = Vec::new();
    let mut plain: Vec<String> = Vec::new();
    for svc_name in &linked {
        let Some(svc) = project.services.get(svc_name) else {
            continue;
        };
        let tcp_ports = ports(svc_name, "TCP_PORTS", env(svc, "TCP_PORTS"))?;
        let mut exclude = ports(svc_name, "EXCLUDE_PORTS", env(svc, "EXCLUDE_PORTS"))?;
        for &p in &tcp_ports {
            let backend = format!("port_{p}");
            if !backends.iter().any(|b| b.name == backend) {
                backends.push(make_backend(backend.clone(), svc, svc_name)?);
                frontends.push(lb::Frontend {
                    name: backend.clone(),
                    listen: any(p),
                    mode: lb::Mode::Tcp,
                    routes: Vec::new(),
                    default_backend: Some(backend.clone()),
                    ..lb::Frontend::default()
                });
            }
            members.push(Member {
                backend,
                service: svc_name.clone(),
                port: Some(p),
                exclude: Vec::new(),
                ports: Vec::new(),
            });
        }
        exclude.extend(&tcp_ports);
        match env(svc, "VIRTUAL_HOST") {
            Some(v) => {
                let weight = env(svc, "VIRTUAL_HOST_WEIGHT")
                    .and_then(|w| w.trim().parse().ok())
                    .unwrap_or(0);
                let backend = format!("SERVICE_{svc_name}");
                backends.push(make_backend(backend.clone(), svc, svc_name)?);
                members.push(Member {
                    backend,
                    service: svc_name.clone(),
                    port: None,
                    exclude,
                    ports: Vec::new(),
                });
                vhosts.push((weight, svc_name.clone(), virtual_hosts(svc_name, v)?));
            }
            None => {
                plain.push(svc_name.clone());
                members.push(Member {
                    backend: "default_service".into(),
                    service: svc_name.clone(),
                    port: None,
                    exclude,
                    ports: Vec::new(),
                });
            }
        }
    }
    if vhosts.is_empty() {
        // Without VIRTUAL_HOST, every linked service is one pool on port 80;
        // its settings come from the first service that sets them.
        if !plain.is_empty() {
            let mut backend = lb::Backend {
                policy: global_policy,
                health_check: global_check.clone(),
                ..lb::Backend::new("default_service")
            };
            for svc_name in &plain {
                let svc = &project.services[svc_name];
                let own = make_backend("default_service".into(), svc, svc_name)?;
                if env(svc, "BALANCE").is_some() && backend.policy == global_policy {
                    backend.policy = own.policy;
                }
                if backend.sticky_cookie.is_none() {
                    backend.sticky_cookie = own.sticky_cookie;
                }
                if env(svc, "HEALTH_CHECK").is_some() || env(svc, "HTTP_CHECK").is_some() {
                    backend.health_check = own.health_check;
                }
            }
            backends.push(backend);
            frontends.push(lb::Frontend {
                name: "default_port_80".into(),
                listen: any(80),
                mode: global_mode,
                routes: Vec::new(),
                default_backend: Some("default_service".into()),
                ..lb::Frontend::default()
            });
        }
    } else {
        // With VIRTUAL_HOST, services without one are not reachable (as with
        // the image), and rules go by weight, highest first.
        members.retain(|m| m.backend != "default_service");
        vhosts.sort_by_key(|(weight, _, _)| std::cmp::Reverse(*weight));
        for (_, svc_name, entries) in &vhosts {
            for vh in entries {
                // A port in some TCP_PORTS stays TCP, as with the image: its
                // routes would mean nothing there.
                if frontends
                    .iter()
                    .any(|f| f.mode == lb::Mode::Tcp && f.listen.port() == vh.port)
                {
                    continue;
                }
                let frontend_name = format!("port_{}", vh.port);
                if !frontends.iter().any(|f| f.name == frontend_name) {
                    frontends.push(lb::Frontend {
                        name: frontend_name.clone(),
                        listen: any(vh.port),
                        mode: lb::Mode::Http,
                        routes: Vec::new(),
                        default_backend: None,
                        ..lb::Frontend::default()
                    });
                }
                if let Some(f) = frontends.iter_mut().find(|f| f.name == frontend_name) {
                    f.routes.push(lb::Route {
                        host: vh.host.clone(),
                        path: vh.path.clone(),
                        backend: format!("SERVICE_{svc_name}"),
                    });
                }
            }
        }
    }
    // A TCP port that is also an HTTP port stays TCP, as with the image.
    let tcp: Vec<u16> = frontends
        .iter()
        .filter(|f| f.mode == lb::Mode::Tcp && f.name.starts_with("port_"))
        .map(|f| f.listen.port())
        .collect();
    frontends.retain(|f| f.mode == lb::Mode::Tcp || !tcp.contains(&f.listen.port()));
    dockercloud_tls(project, name, service, &linked, &vhosts, &mut frontends)?;
    config.frontends = frontends;
    config.backends = backends;
    Ok(BalancerSpec {
        project: project.name.clone(),
        service: name.to_string(),
        config,
        members,
        networks: networks(project, service),
        control_dir: None,
        engine_events: false,
    })
}

/// A PEM as `dockercloud/haproxy` takes it from the environment: one line,
/// with `\n` for each line break.
fn pem_from_env(value: &str) -> String {
    let mut pem = value.trim().replace("\\n", "\n");
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    pem
}

/// `dockercloud/haproxy`'s TLS: `DEFAULT_SSL_CERT` and `CERT_FOLDER` on the
/// frontend, `SSL_CERT` and `FORCE_SSL` on the linked services. With a
/// certificate, port 443 (and every `https://` entry's port) is served with
/// TLS, and with `FORCE_SSL` the plain HTTP listeners redirect to https.
fn dockercloud_tls(
    project: &Project,
    name: &str,
    service: &Service,
    linked: &[String],
    vhosts: &[(i64, String, Vec<VirtualHost>)],
    frontends: &mut Vec<lb::Frontend>,
) -> Result<(), SettingError> {
    let mut tls = lb::Tls::default();
    let mut force = false;
    if let Some(pem) = env(service, "DEFAULT_SSL_CERT") {
        tls.certificates.push(lb::Certificate {
            pem: Some(pem_from_env(pem)),
            ..lb::Certificate::default()
        });
    }
    for svc_name in linked {
        let Some(svc) = project.services.get(svc_name) else {
            continue;
        };
        if let Some(pem) = env(svc, "SSL_CERT") {
            tls.certificates.push(lb::Certificate {
                pem: Some(pem_from_env(pem)),
                ..lb::Certificate::default()
            });
        }
        force |= env(svc, "FORCE_SSL").is_some();
    }
    if let Some(dir) = env(service, "CERT_FOLDER") {
        tls.directories.push(dir.trim().into());
    }
    let mut https_ports: Vec<u16> = vhosts
        .iter()
        .flat_map(|(_, _, entries)| entries.iter().filter(|v| v.https).map(|v| v.port))
        .collect();
    if tls.certificates.is_empty() && tls.directories.is_empty() {
        if let Some((_, svc_name, _)) = vhosts.iter().find(|(_, _, e)| e.iter().any(|v| v.https)) {
            let message = format!(
                "service {svc_name:?}: VIRTUAL_HOST has https:// entries, but the balancer \
                 {name:?} has no certificate (SSL_CERT, DEFAULT_SSL_CERT or CERT_FOLDER)"
            );
            return Err(SettingError::new(svc_name, "VIRTUAL_HOST", message));
        }
        return Ok(());
    }
    https_ports.push(443);
    if vhosts.is_empty() && frontends.iter().any(|f| f.name == "default_port_80") {
        frontends.push(lb::Frontend {
            name: "default_port_443".into(),
            listen: any(443),
            default_backend: Some("default_service".into()),
            ..lb::Frontend::default()
        });
    }
    for f in frontends.iter_mut() {
        if f.mode != lb::Mode::Http {
            continue;
        }
        if https_ports.contains(&f.listen.port()) {
            f.tls = Some(tls.clone());
        } else if force {
            f.redirect_https = Some(443);
        }
    }
    Ok(())
}

/// The structured spelling, `x-rcompose-balancer` on a service:
///
/// ```yaml
/// x-rcompose-balancer:
///   listen: 80                  # the HTTP port (default 80)
///   balance: least_conn         # default round_robin
///   stats: { port: 8404, auth: "admin:secret" }   # off by default
///   health_check: { http_path: /health, interval: 2s, rise: 2, fall: 3 }
///   slow_start: 5s
///   timeouts: { connect: 5s, client_header: 10s, idle: 50s, server: 50s }
///   max_connections: 4096
///   trusted_proxies: [10.0.0.0/8]   # peers whose X-Forwarded-Host, -Port
///                               # and -Proto are kept (default: none)
///   tls:                        # an HTTPS listener with the same routes
///     port: 443                 # (default 443)
///     cert: ./certs/site.pem    # chain (and key, unless `key` is given)
///     key: ./certs/site.key
///     certificates: [{ cert: ./certs/other.pem }]   # more, chosen by SNI
///     redirect: true            # the HTTP listener redirects to https
///   backends:                   # default: links and depends_on, on
///     - service: api            # every exposed port
///       port: 8080
///       host: api.example.com   # routing (optional); an entry without
///       path: /v1/*             # host and path is the default
///       balance: p2c
///       sticky_cookie: SRV
///   tcp:
///     - { listen: 6379, service: redis, port: 6379 }
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Structured {
    #[serde(default)]
    listen: Option<u16>,
    #[serde(default)]
    balance: Option<String>,
    #[serde(default)]
    stats: Option<StructuredStats>,
    #[serde(default)]
    health_check: Option<StructuredCheck>,
    #[serde(default)]
    slow_start: Option<values::Duration>,
    #[serde(default)]
    timeouts: Option<StructuredTimeouts>,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    backends: Option<Vec<StructuredBackend>>,
    #[serde(default)]
    tcp: Vec<StructuredTcp>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    tls: Option<StructuredTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StructuredTls {
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    certificates: Vec<StructuredCert>,
    #[serde(default)]
    redirect: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StructuredCert {
    cert: String,
    #[serde(default)]
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StructuredStats {
    port: u16,
    #[serde(default)]
    auth: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StructuredCheck {
    #[serde(default)]
    http_path: Option<String>,
    #[serde(default)]
    expect_status: Option<u16>,
    #[serde(default)]
    interval: Option<values::Duration>,
    #[serde(default)]
    timeout: Option<values::Duration>,
    #[serde(default)]
    rise: Option<u32>,
    #[serde(default)]
    fall: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StructuredTimeouts {
    #[serde(default)]
    connect: Option<values::Duration>,
    #[serde(default)]
    client_header: Option<values::Duration>,
    #[serde(default)]
    idle: Option<values::Duration>,
    #[serde(default)]
    server: Option<values::Duration>,
    #[serde(default)]
    tunnel: Option<values::Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StructuredBackend {
    service: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    balance: Option<String>,
    #[serde(default)]
    sticky_cookie: Option<String>,
    #[serde(default)]
    health_check: Option<StructuredCheck>,
    #[serde(default)]
    slow_start: Option<values::Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StructuredTcp {
    listen: u16,
    service: String,
    port: u16,
    #[serde(default)]
    balance: Option<String>,
}

fn std_duration(d: &values::Duration) -> Duration {
    Duration::from_nanos(u64::try_from(d.nanos).unwrap_or(0))
}

impl StructuredCheck {
    fn to_lb(&self) -> lb::HealthCheck {
        let mut c = lb::HealthCheck {
            http_path: self.http_path.clone(),
            expect_status: self.expect_status,
            ..lb::HealthCheck::default()
        };
        if let Some(d) = &self.interval {
            c.interval = std_duration(d);
        }
        if let Some(d) = &self.timeout {
            c.timeout = std_duration(d);
        }
        c.rise = self.rise.unwrap_or(c.rise);
        c.fall = self.fall.unwrap_or(c.fall);
        c
    }
}

fn structured(
    project: &Project,
    name: &str,
    service: &Service,
    value: &serde_yaml::Value,
) -> Result<BalancerSpec, SettingError> {
    let s: Structured = serde_yaml::from_value(value.clone()).map_err(|e| {
        SettingError::new(
            name,
            EXTENSION,
            format!("service {name:?}: {EXTENSION}: {e}"),
        )
    })?;
    let policy = match &s.balance {
        Some(b) => policy_of(name, &format!("{EXTENSION}.balance"), b)?,
        None => lb::Policy::RoundRobin,
    };
    let mut config = lb::Config::default();
    if let Some(t) = &s.timeouts {
        let set = |slot: &mut Duration, v: &Option<values::Duration>| {
            if let Some(v) = v {
                *slot = std_duration(v);
            }
        };
        set(&mut config.timeouts.connect, &t.connect);
        set(&mut config.timeouts.client_header, &t.client_header);
        set(&mut config.timeouts.idle, &t.idle);
        set(&mut config.timeouts.server, &t.server);
        set(&mut config.timeouts.tunnel, &t.tunnel);
    }
    if let Some(max) = s.max_connections {
        config.max_connections = max;
    }
    for p in &s.trusted_proxies {
        let cidr = p.parse().map_err(|e| {
            SettingError::new(
                name,
                &format!("{EXTENSION}.trusted_proxies"),
                format!("service {name:?}: {EXTENSION}.trusted_proxies: {e}"),
            )
        })?;
        config.trusted_proxies.push(cidr);
    }
    config.stats = s.stats.as_ref().map(|st| lb::Stats {
        listen: any(st.port),
        auth: st.auth.clone(),
    });
    let entries: Vec<StructuredBackend> = match s.backends {
        Some(b) => b,
        None => default_backends(name, service)
            .into_iter()
            .map(|service| StructuredBackend {
                service,
                port: None,
                host: None,
                path: None,
                balance: None,
                sticky_cookie: None,
                health_check: None,
                slow_start: None,
            })
            .collect(),
    };
    let mut members = Vec::new();
    let mut frontend = lb::Frontend {
        name: "http".into(),
        listen: any(s.listen.unwrap_or(80)),
        ..lb::Frontend::default()
    };
    let mut pooled: Option<String> = None;
    for (i, e) in entries.iter().enumerate() {
        if !project.services.contains_key(&e.service) {
            let message = format!(
                "service {name:?}: {EXTENSION}: backend service {:?} is not defined",
                e.service
            );
            return Err(SettingError::new(
                name,
                &format!("{EXTENSION}.backends"),
                message,
            ));
        }
        let routed = e.host.is_some() || e.path.is_some();
        let unique = e.balance.is_some()
            || e.sticky_cookie.is_some()
            || e.health_check.is_some()
            || e.slow_start.is_some();
        // Entries with neither routing nor options of their own share one
        // default backend, so that several plain services are one pool.
        let backend_name = if !routed && !unique {
            pooled.get_or_insert_with(|| "default".to_string()).clone()
        } else {
            format!("{}-{i}", e.service)
        };
        if !config.backends.iter().any(|b| b.name == backend_name) {
            config.backends.push(lb::Backend {
                policy: match &e.balance {
                    Some(b) => policy_of(name, &format!("{EXTENSION}.backends.balance"), b)?,
                    None => policy,
                },
                sticky_cookie: e.sticky_cookie.clone(),
                health_check: e
                    .health_check
                    .as_ref()
                    .or(s.health_check.as_ref())
                    .map(StructuredCheck::to_lb),
                slow_start: e
                    .slow_start
                    .as_ref()
                    .or(s.slow_start.as_ref())
                    .map(std_duration)
                    .unwrap_or_default(),
                ..lb::Backend::new(backend_name.clone())
            });
        }
        if routed {
            frontend.routes.push(lb::Route {
                host: e.host.clone(),
                path: e.path.clone(),
                backend: backend_name.clone(),
            });
        } else if frontend.default_backend.is_none() {
            frontend.default_backend = Some(backend_name.clone());
        }
        members.push(Member {
            backend: backend_name,
            service: e.service.clone(),
            port: e.port,
            exclude: Vec::new(),
            ports: Vec::new(),
        });
    }
    if !config.backends.is_empty() {
        if let Some(t) = &s.tls {
            let port = t.port.unwrap_or(443);
            let host_path = |p: &str| -> std::path::PathBuf {
                let p = std::path::Path::new(p);
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    std::path::Path::new(&project.working_dir).join(p)
                }
            };
            let mut certificates = Vec::new();
            let first = t.cert.as_ref().map(|c| StructuredCert {
                cert: c.clone(),
                key: t.key.clone(),
            });
            for c in first.iter().chain(&t.certificates) {
                certificates.push(lb::Certificate {
                    pem: None,
                    cert: Some(host_path(&c.cert)),
                    key: c.key.as_deref().map(host_path),
                });
            }
            if certificates.is_empty() {
                let message = format!(
                    "service {name:?}: {EXTENSION}.tls: no certificate (cert, or certificates)"
                );
                return Err(SettingError::new(
                    name,
                    &format!("{EXTENSION}.tls"),
                    message,
                ));
            }
            config.frontends.push(lb::Frontend {
                name: "https".into(),
                listen: any(port),
                tls: Some(lb::Tls {
                    certificates,
                    directories: Vec::new(),
                }),
                ..frontend.clone()
            });
            if t.redirect {
                frontend.redirect_https = Some(port);
            }
        }
        config.frontends.push(frontend);
    }
    for t in &s.tcp {
        if !project.services.contains_key(&t.service) {
            let message = format!(
                "service {name:?}: {EXTENSION}: tcp service {:?} is not defined",
                t.service
            );
            return Err(SettingError::new(
                name,
                &format!("{EXTENSION}.tcp"),
                message,
            ));
        }
        let backend = format!("tcp-{}", t.listen);
        config.backends.push(lb::Backend {
            policy: match &t.balance {
                Some(b) => policy_of(name, &format!("{EXTENSION}.tcp.balance"), b)?,
                None => policy,
            },
            ..lb::Backend::new(backend.clone())
        });
        config.frontends.push(lb::Frontend {
            name: backend.clone(),
            listen: any(t.listen),
            mode: lb::Mode::Tcp,
            routes: Vec::new(),
            default_backend: Some(backend.clone()),
            ..lb::Frontend::default()
        });
        members.push(Member {
            backend,
            service: t.service.clone(),
            port: Some(t.port),
            exclude: Vec::new(),
            ports: Vec::new(),
        });
    }
    Ok(BalancerSpec {
        project: project.name.clone(),
        service: name.to_string(),
        config,
        members,
        networks: networks(project, service),
        control_dir: None,
        engine_events: false,
    })
}

/// Where the engine's socket is; a balancer whose file mounts it there
/// follows the engine's events.
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The project as rcompose runs it: each balancer service runs the built-in
/// balancer from `image` (built from rcompose itself) with its spec in the
/// environment, restarts unless stopped (unless told otherwise), and is
/// given as little as it needs: its control directory from the host, no
/// engine socket unless its file mounts one, a user with no capabilities
/// (unless the file names a user), a read-only root filesystem and no
/// privilege escalation. The spec is part of the service's config, so a
/// change to the balancer's backends or options recreates it.
///
/// A balancer that a selection of services left out (`up web`) is prepared
/// too, when its spec can be made: it may run, and still send to the
/// services selected, which the planner then drains and announces in it.
pub fn prepare(project: &Project, image: &str, host: &Host) -> Result<Project, SettingError> {
    let mut out = project.clone();
    let mut whole = project.clone();
    whole.services.extend(
        project
            .disabled_services
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    for (name, spec) in balancers(&whole) {
        let selected = project.services.contains_key(&name);
        let mut spec = match spec {
            Ok(spec) => spec,
            Err(e) if selected => return Err(e),
            Err(_) => continue,
        };
        let service = if selected {
            out.services.get_mut(&name)
        } else {
            out.disabled_services.get_mut(&name)
        };
        let Some(service) = service else {
            continue;
        };
        let dir = control_dir(host, &project.name, &name);
        spec.control_dir = Some(dir.clone());
        if !host.engine_socket {
            service.volumes.retain(|v| v.target != DOCKER_SOCKET);
            spec.engine_events = false;
        }
        // Certificate files named in the structured spelling are host
        // paths: each is mounted read-only and the spec points at it there.
        let mut cert_mounts: Vec<(String, String)> = Vec::new();
        for f in &mut spec.config.frontends {
            for c in f.tls.iter_mut().flat_map(|t| t.certificates.iter_mut()) {
                for path in [&mut c.cert, &mut c.key].into_iter().flatten() {
                    let inside = format!("{TLS_DIR}/{}.pem", cert_mounts.len());
                    cert_mounts.push((path.display().to_string(), inside.clone()));
                    *path = inside.into();
                }
            }
        }
        service.image = image.to_string();
        service.build = None;
        service.pull_policy = "never".to_string();
        service.entrypoint = Some(values::ShellCommand(vec![
            "/rcompose".into(),
            "balancer".into(),
        ]));
        service.command = None;
        let json = serde_json::to_string(&spec)
            .map_err(|e| SettingError::new(&name, "", format!("service {name:?}: {e}")))?;
        service
            .environment
            .0
            .insert(SPEC_ENV.to_string(), Some(json));
        if service.restart.is_empty() {
            service.restart = "unless-stopped".to_string();
        }
        service.volumes.push(crate::model::VolumeMount {
            kind: "bind".into(),
            source: dir,
            target: CONTROL_DIR.into(),
            ..Default::default()
        });
        for (source, target) in cert_mounts {
            service.volumes.push(crate::model::VolumeMount {
                kind: "bind".into(),
                source,
                target,
                read_only: true,
                ..Default::default()
            });
        }
        if service.user.is_empty() {
            service.user = BALANCER_USER.to_string();
            if let (true, Some(gid)) = (spec.engine_events, host.engine_socket_gid) {
                let gid = gid.to_string();
                if !service.group_add.contains(&gid) {
                    service.group_add.push(gid);
                }
            }
        }
        if !service
            .cap_drop
            .iter()
            .any(|c| c.eq_ignore_ascii_case("ALL"))
        {
            service.cap_drop.push("ALL".to_string());
        }
        service.read_only = true;
        if !service
            .security_opt
            .iter()
            .any(|o| o.starts_with("no-new-privileges"))
        {
            service
                .security_opt
                .push("no-new-privileges:true".to_string());
        }
    }
    Ok(out)
}

/// An endpoint at `addr`. Its id is the address, whoever found it (rcompose
/// announcing a replica, the engine's events, the network's DNS), so that
/// two sources make one endpoint.
pub fn endpoint(addr: SocketAddr) -> lb::Endpoint {
    lb::Endpoint::new(addr.to_string(), addr)
}

/// The endpoints a container provides, by backend: one per member its
/// service is, on the address it has on the first network it shares with
/// the balancer.
pub fn endpoints_of(
    spec: &BalancerSpec,
    details: &ContainerDetails,
) -> Vec<(String, lb::Endpoint)> {
    let c = &details.container;
    let Some(service) = c.labels.get(crate::convert::labels::SERVICE) else {
        return Vec::new();
    };
    if crate::convert::labels::is_oneoff(&c.labels) {
        return Vec::new();
    }
    let address = spec
        .networks
        .iter()
        .find_map(|n| details.addresses.get(n))
        .or_else(|| details.addresses.values().next())
        .and_then(|a| a.parse::<IpAddr>().ok());
    let Some(ip) = address else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in spec.members.iter().filter(|m| &m.service == service) {
        let ports: Vec<u16> = match m.port {
            Some(p) => vec![p],
            None => details
                .exposed_tcp_ports
                .iter()
                .copied()
                .filter(|p| !m.exclude.contains(p))
                .collect(),
        };
        for port in ports {
            let e = endpoint(SocketAddr::new(ip, port)).of_instance(&c.id);
            out.push((m.backend.clone(), e));
        }
    }
    out
}

/// The services whose containers feed some balancer of the project.
pub fn backend_services(project: &Project) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (balancer, spec) in balancers(project) {
        let Ok(spec) = spec else { continue };
        for m in spec.members {
            let list = out.entry(m.service).or_default();
            if !list.contains(&balancer) {
                list.push(balancer.clone());
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_dockercloud_image_is_recognised_in_its_spellings() {
        for image in [
            "dockercloud/haproxy",
            "dockercloud/haproxy:1.6.7",
            "docker.io/dockercloud/haproxy",
            "dockercloud/haproxy@sha256:abc",
        ] {
            assert!(is_dockercloud_image(image), "{image}");
        }
        for image in ["haproxy", "dockercloud/haproxyx", "me/dockercloud-haproxy"] {
            assert!(!is_dockercloud_image(image), "{image}");
        }
    }

    #[test]
    fn haproxy_settings_are_read() {
        assert_eq!(policy("leastconn"), Some(lb::Policy::LeastConn));
        assert_eq!(policy("source"), Some(lb::Policy::SourceHash));
        assert_eq!(policy("uri whole"), Some(lb::Policy::UriHash));
        assert_eq!(policy("bogus"), None);
        let check = health_check("f", "check inter 500 rise 1 fall 4")
            .unwrap()
            .unwrap();
        assert_eq!(
            (check.interval, check.rise, check.fall),
            (Duration::from_millis(500), 1, 4)
        );
        assert_eq!(health_check("f", "").unwrap(), None);
        assert!(health_check("f", "check inter soon").is_err());
        let t = timeouts("f", "connect 2s, client 1m, server 3000").unwrap();
        assert_eq!(
            (t.connect, t.idle, t.server),
            (
                Duration::from_secs(2),
                Duration::from_secs(60),
                Duration::from_secs(3)
            )
        );
        assert_eq!(
            http_check_path("OPTIONS /health HTTP/1.1\\r\\nHost:\\ www"),
            Some("/health".into())
        );
    }

    fn load(yaml: &str) -> Project {
        let dir = std::env::temp_dir();
        match crate::loader::load_from_str(yaml, &dir, indexmap::IndexMap::new()) {
            Ok(l) => l.project,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_tcp_port_that_is_also_a_virtual_host_port_stays_tcp() {
        let p = load(
            "services:\n  db:\n    image: db\n    environment:\n      TCP_PORTS: \"8080\"\n  \
             web:\n    image: web\n    environment:\n      VIRTUAL_HOST: \"a.test:8080, b.test\"\n  \
             lb:\n    image: dockercloud/haproxy\n    links: [db, web]\n",
        );
        let spec = spec(&p, "lb").unwrap();
        let on = |port: u16| {
            spec.config
                .frontends
                .iter()
                .filter(|f| f.listen.port() == port)
                .collect::<Vec<_>>()
        };
        let tcp = on(8080);
        assert_eq!(tcp.len(), 1, "{:?}", spec.config.frontends);
        assert_eq!(tcp[0].mode, lb::Mode::Tcp);
        assert!(tcp[0].routes.is_empty(), "{:?}", tcp[0].routes);
        let http = on(80);
        assert_eq!(http.len(), 1);
        assert_eq!(http[0].mode, lb::Mode::Http);
        assert_eq!(http[0].routes.len(), 1);
        assert_eq!(http[0].routes[0].host.as_deref(), Some("b.test"));
        spec.config.validate().unwrap();
    }

    #[test]
    fn the_control_channel_is_a_socket_in_the_hosts_directory_and_no_secret_of_the_file() {
        let p = load(
            "name: p\nservices:\n  web:\n    image: web\n    expose: [\"80\", \"9000-9001/tcp\", \"53/udp\"]\n  \
             lb:\n    image: dockercloud/haproxy\n    links: [web]\n",
        );
        let host = Host {
            control_root: "/var/lib/rcompose/balancers".into(),
            engine_socket_gid: Some(999),
            engine_socket: true,
        };
        let prepared = prepare(&p, "rcompose-balancer:t", &host).unwrap();
        let service = &prepared.services["lb"];
        let spec = prepared_spec(service).unwrap();
        let control = spec.config.control.clone().unwrap();
        assert_eq!(control.listen, None, "nothing listens on a network");
        assert_eq!(control.token, None);
        assert_eq!(
            control.socket.unwrap().display().to_string(),
            format!("{CONTROL_DIR}/{CONTROL_SOCKET}")
        );
        assert_eq!(
            spec.control_dir.as_deref(),
            Some("/var/lib/rcompose/balancers/p/lb")
        );
        let mounts: Vec<(&str, &str)> = service
            .volumes
            .iter()
            .map(|v| (v.source.as_str(), v.target.as_str()))
            .collect();
        assert_eq!(mounts, [("/var/lib/rcompose/balancers/p/lb", CONTROL_DIR)]);
        assert!(
            !spec.engine_events,
            "no engine socket unless the file mounts it"
        );
        assert_eq!(service.user, BALANCER_USER);
        assert!(service.group_add.is_empty());
        assert_eq!(service.cap_drop, ["ALL"]);
        assert!(service.read_only);
        assert_eq!(spec.members[0].ports, [80, 9000, 9001]);
    }

    #[test]
    fn a_balancer_given_the_engine_socket_gets_its_group_only() {
        let p = load(
            "name: p\nservices:\n  web:\n    image: web\n  lb:\n    image: dockercloud/haproxy\n    \
             links: [web]\n    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n",
        );
        let host = Host {
            control_root: "/r".into(),
            engine_socket_gid: Some(999),
            engine_socket: true,
        };
        let prepared = prepare(&p, "rcompose-balancer:t", &host).unwrap();
        let service = &prepared.services["lb"];
        assert!(prepared_spec(service).unwrap().engine_events);
        assert_eq!(service.user, BALANCER_USER);
        assert_eq!(service.group_add, ["999"]);
        assert_eq!(service.cap_drop, ["ALL"]);

        // On the native runtime there is no engine: no socket, no group,
        // and the names of the network to follow.
        let native = Host {
            engine_socket: false,
            ..host
        };
        let prepared = prepare(&p, "rcompose-balancer:t", &native).unwrap();
        let service = &prepared.services["lb"];
        assert!(!prepared_spec(service).unwrap().engine_events);
        assert!(service.volumes.iter().all(|v| v.target != DOCKER_SOCKET));
        assert!(service.group_add.is_empty());
    }

    #[test]
    fn dockercloud_certificates_turn_on_tls_on_443_and_force_ssl_redirects() {
        let p = load(
            "services:\n  web:\n    image: web\n    environment:\n      FORCE_SSL: \"yes\"\n      \
             SSL_CERT: 'B\\nC'\n  lb:\n    image: dockercloud/haproxy\n    links: [web]\n    \
             environment:\n      DEFAULT_SSL_CERT: 'A\\nB'\n      CERT_FOLDER: /certs\n",
        );
        let spec = spec(&p, "lb").unwrap();
        let by_port = |port: u16| {
            spec.config
                .frontends
                .iter()
                .find(|f| f.listen.port() == port)
                .unwrap_or_else(|| panic!("no listener on {port}: {:?}", spec.config.frontends))
        };
        let tls = by_port(443).tls.clone().unwrap();
        let pems: Vec<_> = tls
            .certificates
            .iter()
            .map(|c| c.pem.clone().unwrap())
            .collect();
        assert_eq!(
            pems,
            ["A\nB\n", "B\nC\n"],
            "the default first, newlines restored"
        );
        assert_eq!(tls.directories, [std::path::PathBuf::from("/certs")]);
        assert_eq!(
            by_port(443).default_backend.as_deref(),
            Some("default_service")
        );
        assert_eq!(by_port(80).redirect_https, Some(443));
        assert!(by_port(80).tls.is_none());
        spec.config.validate().unwrap();
    }

    #[test]
    fn an_https_virtual_host_without_a_certificate_is_refused() {
        let p = load(
            "services:\n  web:\n    image: web\n    environment:\n      VIRTUAL_HOST: https://a.test\n  \
             lb:\n    image: dockercloud/haproxy\n    links: [web]\n",
        );
        let e = spec(&p, "lb").unwrap_err();
        assert_eq!(e.key, ["environment", "VIRTUAL_HOST"]);
        assert!(e.message.contains("no certificate"), "{}", e.message);
    }

    #[test]
    fn structured_tls_mounts_its_certificate_files_read_only() {
        let p = load(
            "name: p\nservices:\n  web:\n    image: web\n    expose: [\"80\"]\n  lb:\n    image: x\n    \
             depends_on: [web]\n    x-rcompose-balancer:\n      tls:\n        cert: /etc/site.pem\n        \
             key: /etc/site.key\n        redirect: true\n",
        );
        let host = Host {
            control_root: "/r".into(),
            engine_socket_gid: None,
            engine_socket: true,
        };
        let prepared = prepare(&p, "rcompose-balancer:t", &host).unwrap();
        let service = &prepared.services["lb"];
        let spec = prepared_spec(service).unwrap();
        let https = spec
            .config
            .frontends
            .iter()
            .find(|f| f.name == "https")
            .unwrap();
        assert_eq!(https.listen.port(), 443);
        let cert = &https.tls.as_ref().unwrap().certificates[0];
        assert_eq!(
            (cert.cert.clone().unwrap(), cert.key.clone().unwrap()),
            (
                format!("{TLS_DIR}/0.pem").into(),
                format!("{TLS_DIR}/1.pem").into()
            )
        );
        let http = spec
            .config
            .frontends
            .iter()
            .find(|f| f.name == "http")
            .unwrap();
        assert_eq!(http.redirect_https, Some(443));
        let mounts: Vec<(&str, &str, bool)> = service
            .volumes
            .iter()
            .skip(1)
            .map(|v| (v.source.as_str(), v.target.as_str(), v.read_only))
            .collect();
        assert_eq!(
            mounts,
            [
                ("/etc/site.pem", "/run/rcompose-balancer-tls/0.pem", true),
                ("/etc/site.key", "/run/rcompose-balancer-tls/1.pem", true)
            ]
        );
    }

    #[test]
    fn virtual_hosts_are_parsed() {
        let v = virtual_hosts("web", "a.com, https://b.com, c.com:8080/api*, /static").unwrap();
        assert_eq!(
            v,
            [
                VirtualHost {
                    port: 80,
                    host: Some("a.com".into()),
                    path: None,
                    https: false
                },
                VirtualHost {
                    port: 443,
                    host: Some("b.com".into()),
                    path: None,
                    https: true
                },
                VirtualHost {
                    port: 8080,
                    host: Some("c.com".into()),
                    path: Some("/api*".into()),
                    https: false
                },
                VirtualHost {
                    port: 80,
                    host: None,
                    path: Some("/static".into()),
                    https: false
                },
            ]
        );
    }
}
