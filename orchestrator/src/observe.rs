//! One snapshot of what exists on the engine for a project.

use std::collections::BTreeMap;

use runtime_shim::{Container, Image, Network, Runtime, RuntimeError, Volume};

use crate::convert::labels;
use crate::model::Project;

/// What the engine holds for a project, taken at one moment.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The project's containers (one-off ones included), running or not.
    pub containers: Vec<Container>,
    /// Networks the project refers to, by engine name, when they exist.
    pub networks: BTreeMap<String, Network>,
    /// Volumes the project refers to, by engine name, when they exist.
    pub volumes: BTreeMap<String, Volume>,
    /// Images the services run, by reference, when present.
    pub images: BTreeMap<String, Image>,
}

impl Observed {
    /// The project's containers of service `name` (not one-off).
    pub fn service_containers<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Container> + 'a {
        self.containers.iter().filter(move |c| {
            c.labels.get(labels::SERVICE).map(String::as_str) == Some(name)
                && c.labels.get(labels::ONEOFF).map(String::as_str) != Some("True")
        })
    }
}

/// The container number of a container, from its label.
pub fn container_number(c: &Container) -> Option<u32> {
    c.labels.get(labels::CONTAINER_NUMBER)?.parse().ok()
}

/// Takes the snapshot: containers by project label; the project's networks,
/// volumes and images by name.
pub async fn observe(runtime: &dyn Runtime, project: &Project) -> Result<Observed, RuntimeError> {
    let filter = [format!("{}={}", labels::PROJECT, project.name)];
    let containers = runtime.list_containers(&filter, true).await?;
    let mut observed = Observed {
        containers,
        ..Observed::default()
    };
    for n in project.networks.values() {
        if let Some(net) = runtime.inspect_network(&n.name).await? {
            observed.networks.insert(n.name.clone(), net);
        }
    }
    for v in project.volumes.values() {
        if let Some(vol) = runtime.inspect_volume(&v.name).await? {
            observed.volumes.insert(v.name.clone(), vol);
        }
    }
    for (name, s) in &project.services {
        let image = crate::convert::image_name(project, name, s);
        if observed.images.contains_key(&image) {
            continue;
        }
        if let Some(img) = runtime.inspect_image(&image).await? {
            observed.images.insert(image, img);
        }
    }
    Ok(observed)
}
