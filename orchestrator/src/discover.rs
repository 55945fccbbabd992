//! The balancer's discovery: follows the engine's container events for a
//! project and feeds the balancer the endpoints of its backend services.
//!
//! rcompose tells a running balancer about replicas it starts and stops
//! itself (see the `Announce` and `Drain` plan actions); this loop covers
//! everything else: a crash, `docker stop` by hand, a healthcheck turning,
//! and a full resynchronization whenever the event stream is lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use runtime_shim::{ContainerState, Event, Health, Runtime};

use crate::balancer::{endpoints_of, BalancerSpec};
use crate::convert::labels;

/// Follows the engine forever.
pub async fn follow(rt: Arc<dyn Runtime>, spec: BalancerSpec, handle: lb::Handle) {
    let filter = vec![format!("{}={}", labels::PROJECT, spec.project)];
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
        if let Err(e) = resync(rt.as_ref(), &spec, &handle).await {
            tracing::warn!("cannot list the project's containers: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let mut events = events;
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => on_event(rt.as_ref(), &spec, &handle, &event).await,
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
    labels_of.get(labels::ONEOFF).map(String::as_str) != Some("True")
        && labels_of
            .get(labels::SERVICE)
            .is_some_and(|s| spec.members.iter().any(|m| &m.service == s))
}

/// Replaces every backend's endpoints with what runs now.
pub async fn resync(
    rt: &dyn Runtime,
    spec: &BalancerSpec,
    handle: &lb::Handle,
) -> runtime_shim::Result<()> {
    let filter = vec![format!("{}={}", labels::PROJECT, spec.project)];
    let containers = rt.list_containers(&filter, false).await?;
    let mut sets: BTreeMap<String, Vec<lb::Endpoint>> = spec
        .config
        .backends
        .iter()
        .map(|b| (b.name.clone(), Vec::new()))
        .collect();
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
            sets.entry(backend).or_default().push(endpoint);
        }
    }
    for (backend, endpoints) in sets {
        tracing::info!(backend, endpoints = endpoints.len(), "resynchronized");
        let _ = handle.apply(&lb::Change::Sync { backend, endpoints });
    }
    Ok(())
}

/// The ids of a container's endpoints as the balancer has them.
fn endpoints_of_container(handle: &lb::Handle, container_id: &str) -> Vec<(String, String)> {
    let prefix = format!("{container_id}:");
    handle
        .snapshot()
        .backends
        .into_iter()
        .flat_map(|b| {
            let name = b.name;
            b.endpoints
                .into_iter()
                .filter(|e| e.id.starts_with(&prefix))
                .map(move |e| (name.clone(), e.id))
        })
        .collect()
}

async fn add(rt: &dyn Runtime, spec: &BalancerSpec, handle: &lb::Handle, id: &str) {
    let Ok(details) = rt.inspect_container(id).await else {
        return;
    };
    if details.container.state != ContainerState::Running
        || matches!(details.health, Health::Starting | Health::Unhealthy)
    {
        return;
    }
    for (backend, endpoint) in endpoints_of(spec, &details) {
        let _ = handle.apply(&lb::Change::Add { backend, endpoint });
    }
}

async fn on_event(rt: &dyn Runtime, spec: &BalancerSpec, handle: &lb::Handle, event: &Event) {
    if event.kind != "container" || !is_member(spec, &event.attributes) {
        return;
    }
    let action = event.action.as_str();
    match action {
        "start" | "unpause" | "health_status: healthy" => add(rt, spec, handle, &event.id).await,
        "health_status: unhealthy" => {
            for (backend, id) in endpoints_of_container(handle, &event.id) {
                let _ = handle.apply(&lb::Change::Health {
                    backend,
                    id,
                    healthy: false,
                });
            }
        }
        // A stop begins with a signal: stop sending new work at once.
        "kill" => {
            for (backend, id) in endpoints_of_container(handle, &event.id) {
                let _ = handle.apply(&lb::Change::Drain { backend, id });
            }
        }
        "die" | "stop" | "pause" | "destroy" | "oom" => {
            for (backend, id) in endpoints_of_container(handle, &event.id) {
                let _ = handle.apply(&lb::Change::Remove { backend, id });
            }
        }
        _ => {}
    }
}
