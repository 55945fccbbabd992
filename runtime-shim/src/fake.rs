//! An in-memory [`Runtime`] that records every call and can be told to fail,
//! for tests of the planner and the executor.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use futures_util::stream;

use crate::{
    BoxStream, BuildSpec, CommitSpec, Container, ContainerDetails, ContainerSpec, ContainerState,
    Event, ExecSpec, Health, Image, LogLine, LogOptions, Network, NetworkAttachment, NetworkSpec,
    Result, Runtime, RuntimeError, Session, Stats, Volume, VolumeSpec,
};

#[derive(Default)]
struct State {
    calls: Vec<String>,
    containers: BTreeMap<String, Container>,
    networks: BTreeMap<String, Network>,
    volumes: BTreeMap<String, Volume>,
    images: BTreeMap<String, Image>,
    failures: BTreeMap<String, String>,
    next_id: u64,
    /// Containers created with a health check: healthy once running.
    with_healthcheck: std::collections::BTreeSet<String>,
}

/// A runtime that keeps containers, networks, volumes and images in memory.
#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

fn matches(labels: &BTreeMap<String, String>, filter: &[String]) -> bool {
    filter.iter().all(|f| match f.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|l| l == v),
        None => labels.contains_key(f),
    })
}

impl FakeRuntime {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call made so far, as `verb target` lines.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Makes calls whose `verb target` line starts with `prefix` fail with `message`.
    pub fn fail(&self, prefix: &str, message: &str) {
        self.lock()
            .failures
            .insert(prefix.to_string(), message.to_string());
    }

    /// Adds an image, as if it had been pulled or built.
    pub fn add_image(&self, reference: &str) {
        let mut s = self.lock();
        let id = format!("sha256:{:064x}", s.images.len() + 1);
        s.images.insert(
            reference.to_string(),
            Image {
                id,
                tags: vec![reference.to_string()],
                size: 1,
                created: 0,
            },
        );
    }

    /// Adds a container directly (for observed state in tests).
    pub fn add_container(&self, container: Container) {
        self.lock()
            .containers
            .insert(container.id.clone(), container);
    }

    fn record(&self, call: String) -> Result<MutexGuard<'_, State>> {
        let mut s = self.lock();
        if let Some((_, msg)) = s
            .failures
            .iter()
            .find(|(p, _)| call.starts_with(p.as_str()))
        {
            let msg = msg.clone();
            s.calls.push(format!("{call} (failed)"));
            return Err(RuntimeError::Engine(msg));
        }
        s.calls.push(call);
        Ok(s)
    }

    fn find<'a>(s: &'a mut State, id: &str) -> Result<&'a mut Container> {
        let key = s
            .containers
            .iter()
            .find(|(k, c)| k.as_str() == id || c.name == id)
            .map(|(k, _)| k.clone());
        match key {
            Some(k) => s.containers.get_mut(&k).ok_or(RuntimeError::NotFound {
                kind: "container",
                name: id.to_string(),
            }),
            None => Err(RuntimeError::NotFound {
                kind: "container",
                name: id.to_string(),
            }),
        }
    }

    fn set_state(&self, verb: &str, id: &str, state: ContainerState) -> Result<()> {
        let mut s = self.record(format!("{verb} {id}"))?;
        let c = Self::find(&mut s, id)?;
        c.state = state;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    async fn version(&self) -> Result<String> {
        Ok("fake".into())
    }

    async fn list_containers(&self, filter: &[String], all: bool) -> Result<Vec<Container>> {
        let s = self.lock();
        Ok(s.containers
            .values()
            .filter(|c| matches(&c.labels, filter))
            .filter(|c| all || c.state == ContainerState::Running)
            .cloned()
            .collect())
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails> {
        let mut s = self.lock();
        let c = Self::find(&mut s, id)?.clone();
        let health = match (s.with_healthcheck.contains(&c.id), c.state) {
            (true, ContainerState::Running) => Health::Healthy,
            (true, _) => Health::Starting,
            (false, _) => Health::None,
        };
        Ok(ContainerDetails {
            health,
            exit_code: 0,
            restarting: false,
            addresses: BTreeMap::new(),
            exposed_tcp_ports: Vec::new(),
            container: c,
        })
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        let mut s = self.record(format!("create {}", spec.name))?;
        if s.containers.values().any(|c| c.name == spec.name) {
            return Err(RuntimeError::Conflict {
                kind: "container",
                name: spec.name.clone(),
            });
        }
        s.next_id += 1;
        let created = s.next_id as i64;
        let id = format!("{created:012x}");
        if spec
            .healthcheck
            .as_ref()
            .is_some_and(|h| h.test.first().map(String::as_str) != Some("NONE"))
        {
            s.with_healthcheck.insert(id.clone());
        }
        s.containers.insert(
            id.clone(),
            Container {
                id: id.clone(),
                name: spec.name.clone(),
                image: spec.image.clone(),
                image_id: String::new(),
                command: spec.command.clone().unwrap_or_default().join(" "),
                labels: spec.labels.clone(),
                state: ContainerState::Created,
                status: "Created".into(),
                created,
                ports: Vec::new(),
                networks: spec.networks.iter().map(|n| n.network.clone()).collect(),
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        self.set_state("start", id, ContainerState::Running)
    }

    async fn stop_container(&self, id: &str, _timeout: Option<i64>) -> Result<()> {
        self.set_state("stop", id, ContainerState::Exited)
    }

    async fn restart_container(&self, id: &str, _timeout: Option<i64>) -> Result<()> {
        self.set_state("restart", id, ContainerState::Running)
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<()> {
        self.set_state(&format!("kill -s {signal}"), id, ContainerState::Exited)
    }

    async fn pause_container(&self, id: &str) -> Result<()> {
        self.set_state("pause", id, ContainerState::Paused)
    }

    async fn unpause_container(&self, id: &str) -> Result<()> {
        self.set_state("unpause", id, ContainerState::Running)
    }

    async fn remove_container(&self, id: &str, _force: bool, _volumes: bool) -> Result<()> {
        let mut s = self.record(format!("remove {id}"))?;
        let key = Self::find(&mut s, id)?.id.clone();
        s.containers.remove(&key);
        Ok(())
    }

    async fn rename_container(&self, id: &str, name: &str) -> Result<()> {
        let mut s = self.record(format!("rename {id} {name}"))?;
        Self::find(&mut s, id)?.name = name.to_string();
        Ok(())
    }

    async fn wait_container(&self, id: &str) -> Result<i64> {
        self.set_state("wait", id, ContainerState::Exited)?;
        Ok(0)
    }

    async fn connect_network(
        &self,
        network: &str,
        container: &str,
        _attachment: &NetworkAttachment,
    ) -> Result<()> {
        let mut s = self.record(format!("connect {network} {container}"))?;
        Self::find(&mut s, container)?
            .networks
            .push(network.to_string());
        Ok(())
    }

    async fn logs(&self, id: &str, _options: &LogOptions) -> Result<BoxStream<LogLine>> {
        drop(self.record(format!("logs {id}"))?);
        Ok(Box::pin(stream::empty()))
    }

    async fn top(&self, id: &str) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        drop(self.record(format!("top {id}"))?);
        Ok((vec!["PID".into(), "CMD".into()], vec![]))
    }

    async fn list_networks(&self, filter: &[String]) -> Result<Vec<Network>> {
        let s = self.lock();
        Ok(s.networks
            .values()
            .filter(|n| matches(&n.labels, filter))
            .cloned()
            .collect())
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<Network>> {
        Ok(self.lock().networks.get(name).cloned())
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<String> {
        let mut s = self.record(format!("create network {}", spec.name))?;
        if s.networks.contains_key(&spec.name) {
            return Err(RuntimeError::Conflict {
                kind: "network",
                name: spec.name.clone(),
            });
        }
        let id = format!("net-{}", spec.name);
        s.networks.insert(
            spec.name.clone(),
            Network {
                id: id.clone(),
                name: spec.name.clone(),
                driver: spec.driver.clone(),
                labels: spec.labels.clone(),
                internal: spec.internal,
            },
        );
        Ok(id)
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        let mut s = self.record(format!("remove network {name}"))?;
        s.networks.remove(name);
        Ok(())
    }

    async fn list_volumes(&self, filter: &[String]) -> Result<Vec<Volume>> {
        let s = self.lock();
        Ok(s.volumes
            .values()
            .filter(|v| matches(&v.labels, filter))
            .cloned()
            .collect())
    }

    async fn inspect_volume(&self, name: &str) -> Result<Option<Volume>> {
        Ok(self.lock().volumes.get(name).cloned())
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> Result<()> {
        let mut s = self.record(format!("create volume {}", spec.name))?;
        s.volumes.insert(
            spec.name.clone(),
            Volume {
                name: spec.name.clone(),
                driver: spec.driver.clone(),
                labels: spec.labels.clone(),
            },
        );
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        let mut s = self.record(format!("remove volume {name}"))?;
        s.volumes.remove(name);
        Ok(())
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<Image>> {
        Ok(self.lock().images.get(reference).cloned())
    }

    async fn list_images(&self, repository: &str) -> Result<Vec<Image>> {
        let s = self.lock();
        Ok(s.images
            .iter()
            .filter(|(reference, _)| {
                reference
                    .rsplit_once(':')
                    .map_or(reference.as_str(), |(r, _)| r)
                    == repository
            })
            .map(|(_, image)| image.clone())
            .collect())
    }

    async fn build_image(&self, spec: &BuildSpec) -> Result<BoxStream<String>> {
        let tag = spec.tags.first().cloned().unwrap_or_default();
        drop(self.record(format!("build {tag}"))?);
        for t in &spec.tags {
            self.add_image(t);
        }
        Ok(Box::pin(stream::iter(vec![Ok(format!("built {tag}"))])))
    }

    async fn remove_image(&self, reference: &str, _force: bool) -> Result<()> {
        let mut s = self.record(format!("remove image {reference}"))?;
        s.images.remove(reference);
        Ok(())
    }

    async fn events(&self, _filter: &[String]) -> Result<BoxStream<Event>> {
        Ok(Box::pin(stream::pending()))
    }

    async fn pull_image(&self, reference: &str) -> Result<BoxStream<String>> {
        drop(self.record(format!("pull {reference}"))?);
        self.add_image(reference);
        Ok(Box::pin(stream::iter(vec![Ok(format!(
            "pulled {reference}"
        ))])))
    }

    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<Session> {
        let mut s = self.record(format!("exec {container} {}", spec.command.join(" ")))?;
        Self::find(&mut s, container)?;
        Ok(Session {
            id: format!("exec-{container}"),
            output: (!spec.detach).then(|| Box::pin(stream::empty()) as BoxStream<LogLine>),
            input: None,
        })
    }

    async fn exec_exit_code(&self, _exec_id: &str) -> Result<Option<i64>> {
        Ok(Some(0))
    }

    async fn exec_resize(&self, _exec_id: &str, _width: u16, _height: u16) -> Result<()> {
        Ok(())
    }

    async fn attach(&self, container: &str, _stdin: bool, _logs: bool) -> Result<Session> {
        let mut s = self.record(format!("attach {container}"))?;
        Self::find(&mut s, container)?;
        Ok(Session {
            id: String::new(),
            output: Some(Box::pin(stream::empty())),
            input: None,
        })
    }

    async fn resize(&self, _container: &str, _width: u16, _height: u16) -> Result<()> {
        Ok(())
    }

    async fn stats(&self, container: &str) -> Result<Stats> {
        let mut s = self.lock();
        Self::find(&mut s, container)?;
        Ok(Stats::default())
    }

    async fn copy_from(&self, container: &str, path: &str) -> Result<BoxStream<Vec<u8>>> {
        drop(self.record(format!("copy from {container}:{path}"))?);
        Ok(Box::pin(stream::empty()))
    }

    async fn copy_to(&self, container: &str, path: &str, _tar: Vec<u8>) -> Result<()> {
        drop(self.record(format!("copy to {container}:{path}"))?);
        Ok(())
    }

    async fn commit(&self, container: &str, spec: &CommitSpec) -> Result<String> {
        drop(self.record(format!("commit {container} {}", spec.reference))?);
        if !spec.reference.is_empty() {
            self.add_image(&spec.reference);
        }
        Ok("sha256:fake".into())
    }

    async fn export(&self, container: &str) -> Result<BoxStream<Vec<u8>>> {
        drop(self.record(format!("export {container}"))?);
        Ok(Box::pin(stream::empty()))
    }
}
