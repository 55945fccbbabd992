//! One snapshot of what exists on the engine for a project.

use std::collections::BTreeMap;

use runtime_shim::{
    Container, Image, LabelFilter, Network, Resources, Runtime, RuntimeError, Volume,
};

use crate::convert::labels;
use crate::model::Project;

/// What the engine holds for a project, taken at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The project's containers (one-off ones included), running or not.
    pub containers: Vec<Container>,
    /// Networks the project refers to, and those carrying its label, by
    /// engine name, when they exist.
    pub networks: BTreeMap<String, Network>,
    /// Volumes the project refers to, by engine name, when they exist.
    pub volumes: BTreeMap<String, Volume>,
    /// Images the services run, by reference, when present.
    pub images: BTreeMap<String, Image>,
    /// The resource limits of the containers whose limits `up` may change
    /// in place (see [`observe_limits`]), by container name.
    pub limits: BTreeMap<String, Resources>,
}

impl Observed {
    /// The project's containers of service `name` (not one-off).
    pub fn service_containers<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Container> + 'a {
        self.containers.iter().filter(move |c| {
            c.labels.get(labels::SERVICE).map(String::as_str) == Some(name)
                && !labels::is_oneoff(&c.labels)
        })
    }
}

/// The container number of a container, from its label.
pub fn container_number(c: &Container) -> Option<u32> {
    c.labels.get(labels::CONTAINER_NUMBER)?.parse().ok()
}

/// The project's containers only: enough for `ps`, `logs` and the lifecycle
/// commands, which do not look at networks, volumes or images.
pub async fn observe_containers(
    runtime: &dyn Runtime,
    project: &Project,
) -> Result<Observed, RuntimeError> {
    let filter = [LabelFilter::equals(labels::PROJECT, &project.name)];
    Ok(Observed {
        containers: runtime.list_containers(&filter, true).await?,
        ..Observed::default()
    })
}

/// Adds to `observed` the resource limits of the service containers rcompose
/// made (those carrying the hash without limits): `up` compares them with
/// the file's, as a change in place leaves the creation hash behind.
pub async fn observe_limits(
    runtime: &dyn Runtime,
    observed: &mut Observed,
) -> Result<(), RuntimeError> {
    use futures_util::stream::{self, StreamExt};
    let names: Vec<String> = observed
        .containers
        .iter()
        .filter(|c| {
            c.labels
                .contains_key(crate::convert::CONFIG_HASH_WITHOUT_LIMITS)
                && !labels::is_oneoff(&c.labels)
        })
        .map(|c| c.name.clone())
        .collect();
    let found: Vec<_> = stream::iter(names)
        .map(|name| async move {
            let details = runtime.inspect_container(&name).await;
            (name, details)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (name, details) in found {
        match details {
            Ok(d) => {
                observed.limits.insert(name, d.resources);
            }
            // Removed meanwhile: planned from its listing alone.
            Err(RuntimeError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Takes the snapshot: containers and networks by project label; the
/// project's networks, volumes and images by name, all asked for at once.
pub async fn observe(runtime: &dyn Runtime, project: &Project) -> Result<Observed, RuntimeError> {
    use futures_util::future::try_join_all;
    let filter = [LabelFilter::equals(labels::PROJECT, &project.name)];
    let mut images: Vec<String> = project
        .services
        .iter()
        .map(|(name, s)| crate::convert::image_name(project, name, s))
        .collect();
    images.sort();
    images.dedup();
    let containers = runtime.list_containers(&filter, true);
    let labelled = runtime.list_networks(&filter);
    let networks = try_join_all(
        project
            .networks
            .values()
            .map(|n| runtime.inspect_network(&n.name)),
    );
    let volumes = try_join_all(
        project
            .volumes
            .values()
            .map(|v| runtime.inspect_volume(&v.name)),
    );
    let found = try_join_all(images.iter().map(|i| runtime.inspect_image(i)));
    let (containers, labelled, networks, volumes, found) =
        futures_util::try_join!(containers, labelled, networks, volumes, found)?;
    Ok(Observed {
        containers,
        networks: networks
            .into_iter()
            .flatten()
            .chain(labelled)
            .map(|n| (n.name.clone(), n))
            .collect(),
        volumes: volumes
            .into_iter()
            .flatten()
            .map(|v| (v.name.clone(), v))
            .collect(),
        images: images
            .into_iter()
            .zip(found)
            .filter_map(|(name, img)| Some((name, img?)))
            .collect(),
        limits: BTreeMap::new(),
    })
}
