//! The balancer's discovery: what feeds the balancer the endpoints of its
//! backend services besides rcompose itself.
//!
//! rcompose tells a running balancer about replicas it starts and stops
//! itself (see the `Announce` and `Drain` plan actions, sent to the control
//! socket). The balancer follows everything else from one of two sources:
//! - the engine's container events ([`follow_engine`]), when the compose
//!   file gives the balancer the engine's socket (as the `dockercloud/haproxy`
//!   spelling does): a crash, `docker stop` by hand, a healthcheck turning,
//!   and a full resynchronization whenever the event stream is lost;
//! - otherwise the network's DNS ([`follow_dns`]), which needs no access to
//!   the engine: every member service's name is resolved each second, new
//!   addresses join their backends and addresses that are gone leave them.
//!   Replicas started or killed by another tool are followed within about
//!   a second; the backends' active health checks judge them.
//!
//! Endpoint ids are addresses ([`crate::balancer::endpoint`]), so the same
//! replica found by two sources is one endpoint.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use runtime_shim::{ContainerEvent, ContainerState, EventKind, Health, LabelFilter, Runtime};

use crate::balancer::{endpoint, endpoints_of, BalancerSpec, Member};
use crate::convert::labels;

/// How often [`follow_dns`] asks: often enough that a replica that
/// crashed leaves the rotation within the moment its address is kept
/// after its names (the native runtime's `CRASH_GRACE`), and a query per
/// member service costs next to nothing.
pub const DNS_INTERVAL: Duration = Duration::from_millis(100);

/// The endpoints found for each container, to take out when it goes.
type Known = HashMap<String, Vec<(String, String)>>;

/// Follows the engine's events forever.
pub async fn follow_engine(rt: Arc<dyn Runtime>, spec: BalancerSpec, handle: lb::Handle) {
    let filter = vec![LabelFilter::equals(labels::PROJECT, &spec.project)];
    let mut known = Known::new();
    loop {
        // Subscribe first, then list: nothing falls between the two.
        let events = match rt.events(&filter).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("cannot follow the engine's events: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = resync(rt.as_ref(), &spec, &handle, &mut known).await {
            tracing::warn!("cannot list the project's containers: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let mut events = events;
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => on_event(rt.as_ref(), &spec, &handle, &mut known, &event).await,
                Err(e) => {
                    tracing::warn!("engine events: {e}");
                    break;
                }
            }
        }
        tracing::warn!("the engine's event stream ended; resynchronizing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn is_member(spec: &BalancerSpec, labels_of: &BTreeMap<String, String>) -> bool {
    !labels::is_oneoff(labels_of)
        && labels_of
            .get(labels::SERVICE)
            .is_some_and(|s| spec.members.iter().any(|m| &m.service == s))
}

/// Replaces every backend's endpoints with what runs now.
async fn resync(
    rt: &dyn Runtime,
    spec: &BalancerSpec,
    handle: &lb::Handle,
    known: &mut Known,
) -> runtime_shim::Result<()> {
    let filter = vec![LabelFilter::equals(labels::PROJECT, &spec.project)];
    let containers = rt.list_containers(&filter, false).await?;
    let mut sets: BTreeMap<String, Vec<lb::Endpoint>> = spec
        .config
        .backends
        .iter()
        .map(|b| (b.name.clone(), Vec::new()))
        .collect();
    known.clear();
    for c in containers {
        if c.state != ContainerState::Running || !is_member(spec, &c.labels) {
            continue;
        }
        let Ok(details) = rt.inspect_container(&c.id).await else {
            continue;
        };
        if matches!(details.health, Health::Starting | Health::Unhealthy) {
            continue;
        }
        for (backend, endpoint) in endpoints_of(spec, &details) {
            known
                .entry(c.id.clone())
                .or_default()
                .push((backend.clone(), endpoint.id.clone()));
            sets.entry(backend).or_default().push(endpoint);
        }
    }
    for (backend, endpoints) in sets {
        tracing::info!(backend, endpoints = endpoints.len(), "resynchronized");
        let _ = handle.apply(&lb::Change::Sync { backend, endpoints });
    }
    Ok(())
}

async fn add(
    rt: &dyn Runtime,
    spec: &BalancerSpec,
    handle: &lb::Handle,
    known: &mut Known,
    id: &str,
) {
    let Ok(details) = rt.inspect_container(id).await else {
        return;
    };
    if details.container.state != ContainerState::Running
        || matches!(details.health, Health::Starting | Health::Unhealthy)
    {
        return;
    }
    for (backend, endpoint) in endpoints_of(spec, &details) {
        let entry = known.entry(id.to_string()).or_default();
        if !entry
            .iter()
            .any(|(b, e)| *b == backend && *e == endpoint.id)
        {
            entry.push((backend.clone(), endpoint.id.clone()));
        }
        let _ = handle.apply(&lb::Change::Add { backend, endpoint });
    }
}

async fn on_event(
    rt: &dyn Runtime,
    spec: &BalancerSpec,
    handle: &lb::Handle,
    known: &mut Known,
    event: &ContainerEvent,
) {
    if !is_member(spec, &event.labels) {
        return;
    }
    let of_container = |known: &Known| known.get(&event.id).cloned().unwrap_or_default();
    match event.kind {
        EventKind::Started | EventKind::Unpaused | EventKind::Health(Health::Healthy) => {
            add(rt, spec, handle, known, &event.id).await;
        }
        EventKind::Health(Health::Unhealthy) => {
            for (backend, id) in of_container(known) {
                let _ = handle.apply(&lb::Change::Health {
                    backend,
                    id,
                    healthy: false,
                });
            }
        }
        // A stop begins with a signal: stop sending new work at once.
        EventKind::Killed { .. } => {
            for (backend, id) in of_container(known) {
                let _ = handle.apply(&lb::Change::Drain {
                    backend,
                    id,
                    instance: Some(event.id.clone()),
                });
            }
        }
        EventKind::Died { .. }
        | EventKind::Stopped
        | EventKind::Paused
        | EventKind::Removed
        | EventKind::OutOfMemory => {
            for (backend, id) in known.remove(&event.id).unwrap_or_default() {
                let _ = handle.apply(&lb::Change::Remove {
                    backend,
                    id,
                    instance: Some(event.id.clone()),
                });
            }
        }
        _ => {}
    }
}

/// The addresses a name resolves to; `None` when the resolver failed (as
/// opposed to the name having no address, which is an empty set).
pub type Resolved = Option<BTreeSet<IpAddr>>;

/// Polls the network's DNS for the member services forever.
pub async fn follow_dns(spec: BalancerSpec, handle: lb::Handle) {
    let resolver = match resolver() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot read this container's DNS configuration: {e}; only rcompose's announcements feed the balancer");
            return;
        }
    };
    let services: BTreeSet<String> = spec.members.iter().map(|m| m.service.clone()).collect();
    let mut warned: BTreeSet<String> = BTreeSet::new();
    loop {
        // What the balancer holds before asking: only those can be judged
        // gone by the answers (a replica announced meanwhile is left be).
        let before = handle.snapshot();
        let mut answers: BTreeMap<String, Resolved> = BTreeMap::new();
        for service in &services {
            answers.insert(service.clone(), lookup(&resolver, service).await);
        }
        let changes = dns_changes(&spec, &before, &answers, &mut warned);
        for change in &changes {
            tracing::info!("dns: {}", describe(change));
            let _ = handle.apply(change);
        }
        tokio::time::sleep(DNS_INTERVAL).await;
    }
}

fn describe(change: &lb::Change) -> String {
    match change {
        lb::Change::Add { backend, endpoint } => format!("{backend}: {} found", endpoint.id),
        lb::Change::Remove { backend, id, .. } => format!("{backend}: {id} gone"),
        other => format!("{other:?}"),
    }
}

fn resolver() -> Result<hickory_resolver::TokioResolver, String> {
    let mut builder = hickory_resolver::Resolver::builder_tokio().map_err(|e| e.to_string())?;
    let options = builder.options_mut();
    // Every poll must see the network as it is now.
    options.cache_size = 0;
    options.timeout = Duration::from_millis(500);
    options.attempts = 1;
    builder.build().map_err(|e| e.to_string())
}

async fn lookup(resolver: &hickory_resolver::TokioResolver, name: &str) -> Resolved {
    // The name as the network's DNS has it, never under a search domain of
    // the host's (a wildcard record there would stand in for the service).
    match resolver.lookup_ip(format!("{name}.")).await {
        Ok(found) => Some(found.iter().collect()),
        Err(e) if e.is_nx_domain() || e.is_no_records_found() => Some(BTreeSet::new()),
        Err(e) => {
            tracing::debug!("dns: {name}: {e}");
            None
        }
    }
}

/// The ports of a member's replicas when its spec does not name one: those
/// the compose file declares, else those the balancer already has for the
/// backend (learnt from rcompose's announcements, which saw the image).
fn member_ports(member: &Member, before: &lb::Snapshot) -> Vec<u16> {
    if let Some(p) = member.port {
        return vec![p];
    }
    if !member.ports.is_empty() {
        return member.ports.clone();
    }
    let mut learnt: Vec<u16> = before
        .backends
        .iter()
        .filter(|b| b.name == member.backend)
        .flat_map(|b| b.endpoints.iter().map(|e| e.addr.port()))
        .collect();
    learnt.sort_unstable();
    learnt.dedup();
    learnt
}

/// What the DNS answers change in the balancer that held `before`: an
/// address of a member service that no endpoint has joins its backend; an
/// endpoint whose address no member service of its backend resolves to any
/// more leaves it. A backend one of whose services could not be resolved is
/// left as it is.
pub fn dns_changes(
    spec: &BalancerSpec,
    before: &lb::Snapshot,
    answers: &BTreeMap<String, Resolved>,
    warned: &mut BTreeSet<String>,
) -> Vec<lb::Change> {
    let mut changes = Vec::new();
    for backend in &spec.config.backends {
        let members: Vec<&Member> = spec
            .members
            .iter()
            .filter(|m| m.backend == backend.name)
            .collect();
        let mut found: BTreeSet<SocketAddr> = BTreeSet::new();
        let mut complete = true;
        for m in &members {
            let Some(Some(ips)) = answers.get(&m.service) else {
                complete = false;
                continue;
            };
            let ports = member_ports(m, before);
            if ports.is_empty() && !ips.is_empty() && warned.insert(m.service.clone()) {
                tracing::warn!(
                    "service {:?} declares no port (expose or ports) and none was announced: \
                     its replicas cannot join backend {:?} until rcompose announces one",
                    m.service,
                    backend.name
                );
            }
            for ip in ips {
                for port in &ports {
                    found.insert(SocketAddr::new(*ip, *port));
                }
            }
        }
        let held: Vec<&lb::EndpointStats> = before
            .backends
            .iter()
            .filter(|b| b.name == backend.name)
            .flat_map(|b| b.endpoints.iter())
            .collect();
        for addr in &found {
            if !held.iter().any(|e| e.addr == *addr) {
                changes.push(lb::Change::Add {
                    backend: backend.name.clone(),
                    endpoint: endpoint(*addr),
                });
            }
        }
        if complete {
            let ips: BTreeSet<IpAddr> = found.iter().map(SocketAddr::ip).collect();
            for e in held {
                if !ips.contains(&e.addr.ip()) {
                    // Only the instance the answers were judged against
                    // (none known: only a replica with none): a container
                    // announced at the address meanwhile stays.
                    changes.push(lb::Change::Remove {
                        backend: backend.name.clone(),
                        id: e.id.clone(),
                        instance: Some(e.instance.clone().unwrap_or_default()),
                    });
                }
            }
        }
    }
    changes
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn spec() -> BalancerSpec {
        BalancerSpec {
            project: "p".into(),
            service: "lb".into(),
            config: lb::Config {
                backends: vec![lb::Backend::new("web"), lb::Backend::new("api")],
                ..lb::Config::default()
            },
            members: vec![
                Member {
                    backend: "web".into(),
                    service: "web".into(),
                    port: None,
                    exclude: Vec::new(),
                    ports: vec![80],
                },
                Member {
                    backend: "api".into(),
                    service: "api".into(),
                    port: None,
                    exclude: Vec::new(),
                    ports: Vec::new(),
                },
            ],
            networks: Vec::new(),
            control_dir: None,
            engine_events: false,
        }
    }

    fn held(backend: &str, addrs: &[&str]) -> lb::BackendStats {
        lb::BackendStats {
            name: backend.into(),
            endpoints: addrs
                .iter()
                .map(|a| lb::EndpointStats {
                    id: (*a).into(),
                    addr: a.parse().unwrap(),
                    instance: None,
                    state: "up".into(),
                    weight: 100,
                    active: 0,
                    requests: 0,
                    errors: 0,
                    latency_p50_ms: None,
                    latency_p99_ms: None,
                })
                .collect(),
            policy: lb::Policy::RoundRobin,
            unavailable: 0,
        }
    }

    fn ips(list: &[&str]) -> Resolved {
        Some(list.iter().map(|i| i.parse().unwrap()).collect())
    }

    #[test]
    fn new_addresses_join_and_vanished_ones_leave() {
        let before = lb::Snapshot {
            frontends: Vec::new(),
            backends: vec![
                held("web", &["10.0.0.2:80", "10.0.0.3:80"]),
                held("api", &["10.0.1.2:8080"]),
            ],
        };
        let answers = BTreeMap::from([
            ("web".to_string(), ips(&["10.0.0.3", "10.0.0.4"])),
            ("api".to_string(), ips(&["10.0.1.2", "10.0.1.3"])),
        ]);
        let changes = dns_changes(&spec(), &before, &answers, &mut BTreeSet::new());
        let text: Vec<String> = changes.iter().map(describe).collect();
        assert_eq!(
            text,
            [
                "web: 10.0.0.4:80 found",
                "web: 10.0.0.2:80 gone",
                // api declares no port: it is learnt from the endpoint held.
                "api: 10.0.1.3:8080 found",
            ]
        );
    }

    #[test]
    fn a_failed_lookup_removes_nothing_and_no_answer_removes_all() {
        let before = lb::Snapshot {
            frontends: Vec::new(),
            backends: vec![held("web", &["10.0.0.2:80"]), held("api", &[])],
        };
        let failed = BTreeMap::from([("web".to_string(), None)]);
        assert!(dns_changes(&spec(), &before, &failed, &mut BTreeSet::new()).is_empty());
        let none = BTreeMap::from([("web".to_string(), ips(&[])), ("api".to_string(), ips(&[]))]);
        let text: Vec<String> = dns_changes(&spec(), &before, &none, &mut BTreeSet::new())
            .iter()
            .map(describe)
            .collect();
        assert_eq!(text, ["web: 10.0.0.2:80 gone"]);
    }

    #[test]
    fn a_removal_names_the_instance_judged_gone() {
        let mut web = held("web", &["10.0.0.2:80", "10.0.0.3:80"]);
        web.endpoints[1].instance = Some("c3".into());
        let before = lb::Snapshot {
            frontends: Vec::new(),
            backends: vec![web],
        };
        let answers = BTreeMap::from([("web".to_string(), ips(&[]))]);
        let instances: Vec<Option<String>> =
            dns_changes(&spec(), &before, &answers, &mut BTreeSet::new())
                .into_iter()
                .filter_map(|c| match c {
                    lb::Change::Remove { instance, .. } => Some(instance),
                    _ => None,
                })
                .collect();
        // Found without one: only a replica still without one goes.
        assert_eq!(instances, [Some(String::new()), Some("c3".to_string())]);
    }
}
