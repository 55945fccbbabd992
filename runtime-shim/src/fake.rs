//! An in-memory [`Runtime`] that records every call and can be told to fail,
//! for tests of the planner and the executor.
//!
//! It keeps containers, networks, volumes and images the way an engine does
//! and answers with the same errors (a missing object is `NotFound`, a name
//! taken is `Conflict`, removing a running container without `force` is
//! refused, killing a stopped one too), emits the same events, and `wait`
//! blocks until the container stops. It runs no processes: a container's
//! main process "runs" from start to stop, a stop ends it with code 0 and a
//! kill with 128 + the signal; it has no output, no health check of its own
//! (a container with a health check is healthy while running), no files,
//! and an exec or attach session ends at once with code 0. The conformance
//! suite (`tests/conformance.rs`) says which of its cases do not apply here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{stream, StreamExt};
use tokio::sync::{broadcast, watch};

use crate::{
    Archives, BoxStream, BuildSpec, CommitSpec, Container, ContainerDetails, ContainerEvent,
    ContainerSpec, ContainerState, EventKind, Exec, ExecSpec, Health, HealthTest, Image, Images,
    LabelFilter, LoadedImage, LogLine, LogOptions, Logs, Monitor, Network, NetworkSpec, Process,
    Result, Runtime, RuntimeError, Session, Stats, Status, Volume, VolumeSpec,
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
    /// Containers created with a health check: healthy while running.
    with_healthcheck: BTreeSet<String>,
    /// Exit code of each container's last run.
    exit_codes: BTreeMap<String, i64>,
    /// Named volumes each container mounts.
    mounts: BTreeMap<String, Vec<String>>,
    /// Each container's resource limits.
    resources: BTreeMap<String, crate::Resources>,
}

/// A runtime that keeps containers, networks, volumes and images in memory.
pub struct FakeRuntime {
    state: Mutex<State>,
    events: broadcast::Sender<ContainerEvent>,
    /// Bumped on every state change, for `wait`.
    changed: watch::Sender<u64>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime {
            state: Mutex::default(),
            events: broadcast::channel(1024).0,
            changed: watch::channel(0).0,
        }
    }
}

fn not_found(kind: &'static str, name: &str) -> RuntimeError {
    RuntimeError::NotFound {
        kind,
        name: name.to_string(),
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A signal's number, from `SIGKILL`, `KILL` or `9`.
fn signal_number(signal: &str) -> Option<i32> {
    let name = signal.trim_start_matches("SIG");
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    const NAMES: [&str; 15] = [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM",
    ];
    NAMES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| i32::try_from(i + 1).ok())
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
                platform: "linux/amd64".to_string(),
                last_tagged: 0,
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

    /// The key of a container by id, id prefix or name.
    fn key(s: &State, id: &str) -> Result<String> {
        s.containers
            .iter()
            .find(|(k, c)| k.as_str() == id || c.name == id)
            .or_else(|| {
                let mut by_prefix = s.containers.iter().filter(|(k, _)| k.starts_with(id));
                match (by_prefix.next(), by_prefix.next()) {
                    (Some(only), None) if !id.is_empty() => Some(only),
                    _ => None,
                }
            })
            .map(|(k, _)| k.clone())
            .ok_or_else(|| not_found("container", id))
    }

    fn find<'a>(s: &'a mut State, id: &str) -> Result<&'a mut Container> {
        let key = Self::key(s, id)?;
        s.containers
            .get_mut(&key)
            .ok_or_else(|| not_found("container", id))
    }

    /// Sends an event about container `c` and wakes the waiters.
    fn emit(&self, c: &Container, kind: EventKind) {
        let _ = self.events.send(ContainerEvent {
            time_nanos: now_nanos(),
            id: c.id.clone(),
            name: c.name.clone(),
            image: c.image.clone(),
            labels: c.labels.clone(),
            kind,
        });
        self.changed.send_modify(|n| *n += 1);
    }

    /// Ends a container's main process with `code`, as a stop or kill does.
    fn end(&self, s: &mut State, key: &str, code: i64, kind: Option<EventKind>) {
        let Some(c) = s.containers.get_mut(key) else {
            return;
        };
        c.state = ContainerState::Exited;
        c.status = Status {
            since: now_nanos() / 1_000_000_000,
            exit_code: code,
            ..Status::default()
        };
        let c = c.clone();
        s.exit_codes.insert(key.to_string(), code);
        self.emit(&c, EventKind::Died { exit_code: code });
        if let Some(kind) = kind {
            self.emit(&c, kind);
        }
    }

    fn run(&self, s: &mut State, key: &str) {
        let checked = s.with_healthcheck.contains(key);
        let Some(c) = s.containers.get_mut(key) else {
            return;
        };
        c.state = ContainerState::Running;
        c.status = Status {
            since: now_nanos() / 1_000_000_000,
            health: if checked {
                Health::Healthy
            } else {
                Health::None
            },
            ..Status::default()
        };
        let c = c.clone();
        self.emit(&c, EventKind::Started);
        if checked {
            self.emit(&c, EventKind::Health(Health::Healthy));
        }
    }

    fn refused(message: String) -> RuntimeError {
        RuntimeError::Engine(message)
    }
}

/// A session's process in the fake: it has ended already.
struct Ended;

#[async_trait::async_trait]
impl Process for Ended {
    async fn resize(&self, _width: u16, _height: u16) -> Result<()> {
        Ok(())
    }

    async fn wait(&self) -> Result<i64> {
        Ok(0)
    }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    async fn version(&self) -> Result<String> {
        Ok("fake".into())
    }

    async fn list_containers(&self, filter: &[LabelFilter], all: bool) -> Result<Vec<Container>> {
        let s = self.lock();
        Ok(s.containers
            .values()
            .filter(|c| LabelFilter::all_match(filter, &c.labels))
            .filter(|c| {
                all || matches!(
                    c.state,
                    ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
                )
            })
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
            exit_code: s.exit_codes.get(&c.id).copied().unwrap_or(0),
            restarting: false,
            addresses: BTreeMap::new(),
            exposed_tcp_ports: Vec::new(),
            resources: s.resources.get(&c.id).cloned().unwrap_or_default(),
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
        let image = match s.images.get(&spec.image).or_else(|| {
            (!spec.image.contains(':'))
                .then(|| s.images.get(&format!("{}:latest", spec.image)))
                .flatten()
        }) {
            Some(image) => image.id.clone(),
            None => return Err(not_found("image", &spec.image)),
        };
        for network in &spec.networks {
            if !s.networks.contains_key(&network.network) {
                return Err(not_found("network", &network.network));
            }
        }
        s.next_id += 1;
        let created = s.next_id as i64;
        let id = format!("{created:012x}");
        if spec
            .healthcheck
            .as_ref()
            .is_some_and(|h| matches!(h.test, HealthTest::Exec(_) | HealthTest::Shell(_)))
        {
            s.with_healthcheck.insert(id.clone());
        }
        s.resources.insert(id.clone(), spec.resources.clone());
        let volumes: Vec<String> = spec
            .mounts
            .iter()
            .filter_map(|m| match m {
                crate::Mount::Volume { source, .. } if !source.is_empty() => Some(source.clone()),
                _ => None,
            })
            .collect();
        for v in &volumes {
            if !s.volumes.contains_key(v) {
                s.volumes.insert(
                    v.clone(),
                    Volume {
                        name: v.clone(),
                        driver: "local".into(),
                        labels: BTreeMap::new(),
                    },
                );
            }
        }
        s.mounts.insert(id.clone(), volumes);
        let mut networks: Vec<String> = spec.networks.iter().map(|n| n.network.clone()).collect();
        networks.sort();
        let container = Container {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            image_id: image,
            command: spec.command.clone().unwrap_or_default().join(" "),
            labels: spec.labels.clone(),
            state: ContainerState::Created,
            status: Status::default(),
            created,
            ports: Vec::new(),
            networks,
        };
        s.containers.insert(id.clone(), container.clone());
        self.emit(&container, EventKind::Created);
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let mut s = self.record(format!("start {id}"))?;
        let key = Self::key(&s, id)?;
        match s.containers[&key].state {
            ContainerState::Running | ContainerState::Restarting => Ok(()),
            ContainerState::Paused => Err(Self::refused(format!(
                "cannot start a paused container {id}, try unpause instead"
            ))),
            _ => {
                self.run(&mut s, &key);
                Ok(())
            }
        }
    }

    async fn stop_container(&self, id: &str, _timeout: Option<i64>) -> Result<()> {
        let mut s = self.record(format!("stop {id}"))?;
        let key = Self::key(&s, id)?;
        if matches!(
            s.containers[&key].state,
            ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
        ) {
            let c = s.containers[&key].clone();
            self.emit(&c, EventKind::Killed { signal: Some(15) });
            self.end(&mut s, &key, 0, Some(EventKind::Stopped));
        }
        Ok(())
    }

    async fn restart_container(&self, id: &str, _timeout: Option<i64>) -> Result<()> {
        let mut s = self.record(format!("restart {id}"))?;
        let key = Self::key(&s, id)?;
        if s.containers[&key].state == ContainerState::Running {
            self.end(&mut s, &key, 0, Some(EventKind::Stopped));
        }
        self.run(&mut s, &key);
        Ok(())
    }

    async fn update_container(&self, id: &str, resources: &crate::Resources) -> Result<()> {
        let mut s = self.record(format!("update {id}"))?;
        let key = Self::key(&s, id)?;
        s.resources.insert(key, resources.clone());
        Ok(())
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<()> {
        let mut s = self.record(format!("kill -s {signal} {id}"))?;
        let key = Self::key(&s, id)?;
        let number = signal_number(signal)
            .ok_or_else(|| Self::refused(format!("invalid signal: {signal}")))?;
        if s.containers[&key].state != ContainerState::Running {
            return Err(Self::refused(format!("container {id} is not running")));
        }
        let c = s.containers[&key].clone();
        self.emit(
            &c,
            EventKind::Killed {
                signal: Some(number),
            },
        );
        self.end(&mut s, &key, 128 + i64::from(number), None);
        Ok(())
    }

    async fn pause_container(&self, id: &str) -> Result<()> {
        let mut s = self.record(format!("pause {id}"))?;
        let c = Self::find(&mut s, id)?;
        match c.state {
            ContainerState::Running => {
                c.state = ContainerState::Paused;
                let c = c.clone();
                self.emit(&c, EventKind::Paused);
                Ok(())
            }
            ContainerState::Paused => {
                Err(Self::refused(format!("container {id} is already paused")))
            }
            _ => Err(Self::refused(format!("container {id} is not running"))),
        }
    }

    async fn unpause_container(&self, id: &str) -> Result<()> {
        let mut s = self.record(format!("unpause {id}"))?;
        let c = Self::find(&mut s, id)?;
        if c.state != ContainerState::Paused {
            return Err(Self::refused(format!("container {id} is not paused")));
        }
        c.state = ContainerState::Running;
        let c = c.clone();
        self.emit(&c, EventKind::Unpaused);
        Ok(())
    }

    async fn remove_container(&self, id: &str, force: bool, _volumes: bool) -> Result<()> {
        let mut s = self.record(format!("remove {id}"))?;
        let key = Self::key(&s, id)?;
        let running = matches!(
            s.containers[&key].state,
            ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
        );
        if running && !force {
            return Err(Self::refused(format!(
                "cannot remove container {id}: container is running: stop the container before removing or force remove"
            )));
        }
        if running {
            let c = s.containers[&key].clone();
            self.emit(&c, EventKind::Killed { signal: Some(9) });
            self.end(&mut s, &key, 137, None);
        }
        if let Some(c) = s.containers.remove(&key) {
            s.mounts.remove(&key);
            s.with_healthcheck.remove(&key);
            self.emit(&c, EventKind::Removed);
        }
        Ok(())
    }

    async fn wait_container(&self, id: &str) -> Result<i64> {
        let key = {
            let s = self.record(format!("wait {id}"))?;
            Self::key(&s, id)?
        };
        let mut changed = self.changed.subscribe();
        loop {
            {
                let s = self.lock();
                let Some(c) = s.containers.get(&key) else {
                    return Err(not_found("container", id));
                };
                if !matches!(
                    c.state,
                    ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
                ) {
                    return Ok(s.exit_codes.get(&key).copied().unwrap_or(0));
                }
            }
            if changed.changed().await.is_err() {
                return Err(RuntimeError::Unavailable("the fake runtime is gone".into()));
            }
        }
    }

    async fn list_networks(&self, filter: &[LabelFilter]) -> Result<Vec<Network>> {
        let s = self.lock();
        Ok(s.networks
            .values()
            .filter(|n| LabelFilter::all_match(filter, &n.labels))
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
                driver: if spec.driver.is_empty() {
                    "bridge".into()
                } else {
                    spec.driver.clone()
                },
                labels: spec.labels.clone(),
                internal: spec.internal,
            },
        );
        Ok(id)
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        let mut s = self.record(format!("remove network {name}"))?;
        if !s.networks.contains_key(name) {
            return Err(not_found("network", name));
        }
        if s.containers
            .values()
            .any(|c| c.networks.iter().any(|n| n == name))
        {
            return Err(Self::refused(format!(
                "error while removing network: network {name} has active endpoints"
            )));
        }
        s.networks.remove(name);
        Ok(())
    }

    async fn inspect_volume(&self, name: &str) -> Result<Option<Volume>> {
        Ok(self.lock().volumes.get(name).cloned())
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> Result<()> {
        let mut s = self.record(format!("create volume {}", spec.name))?;
        // As an engine does: creating an existing volume is not an error.
        s.volumes
            .entry(spec.name.clone())
            .or_insert_with(|| Volume {
                name: spec.name.clone(),
                driver: if spec.driver.is_empty() {
                    "local".into()
                } else {
                    spec.driver.clone()
                },
                labels: spec.labels.clone(),
            });
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        let mut s = self.record(format!("remove volume {name}"))?;
        if !s.volumes.contains_key(name) {
            return Err(not_found("volume", name));
        }
        if s.mounts.values().any(|m| m.iter().any(|v| v == name)) {
            return Err(Self::refused(format!("remove {name}: volume is in use")));
        }
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
            .filter(|(name, _)| crate::reference::split(name).repository == repository)
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
        match s.images.remove(reference) {
            Some(_) => Ok(()),
            None => Err(not_found("image", reference)),
        }
    }

    async fn events(&self, filter: &[LabelFilter]) -> Result<BoxStream<ContainerEvent>> {
        let filter = filter.to_vec();
        let events = tokio_stream_of(self.events.subscribe());
        Ok(Box::pin(events.filter_map(move |e| {
            let keep = LabelFilter::all_match(&filter, &e.labels);
            async move { keep.then_some(Ok(e)) }
        })))
    }

    async fn pull_image(&self, reference: &str) -> Result<BoxStream<String>> {
        drop(self.record(format!("pull {reference}"))?);
        self.add_image(reference);
        Ok(Box::pin(stream::iter(vec![Ok(format!(
            "pulled {reference}"
        ))])))
    }
}

#[async_trait::async_trait]
impl Logs for FakeRuntime {
    async fn logs(&self, id: &str, _options: &LogOptions) -> Result<BoxStream<LogLine>> {
        let mut s = self.record(format!("logs {id}"))?;
        Self::find(&mut s, id)?;
        Ok(Box::pin(stream::empty()))
    }

    async fn attach(&self, container: &str, _stdin: bool, _logs: bool) -> Result<Session> {
        let mut s = self.record(format!("attach {container}"))?;
        Self::find(&mut s, container)?;
        Ok(Session {
            output: Some(Box::pin(stream::empty())),
            input: None,
            process: Box::new(Ended),
        })
    }
}

#[async_trait::async_trait]
impl Exec for FakeRuntime {
    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<Session> {
        let mut s = self.record(format!("exec {container} {}", spec.command.join(" ")))?;
        if Self::find(&mut s, container)?.state != ContainerState::Running {
            return Err(Self::refused(format!(
                "container {container} is not running"
            )));
        }
        Ok(Session {
            output: (!spec.detach).then(|| Box::pin(stream::empty()) as BoxStream<LogLine>),
            input: None,
            process: Box::new(Ended),
        })
    }
}

#[async_trait::async_trait]
impl Archives for FakeRuntime {
    async fn copy_from(&self, container: &str, path: &str) -> Result<BoxStream<Vec<u8>>> {
        drop(self.record(format!("copy from {container}:{path}"))?);
        Ok(Box::pin(stream::empty()))
    }

    async fn copy_to(&self, container: &str, path: &str, _tar: Vec<u8>) -> Result<()> {
        drop(self.record(format!("copy to {container}:{path}"))?);
        Ok(())
    }

    async fn export(&self, container: &str) -> Result<BoxStream<Vec<u8>>> {
        drop(self.record(format!("export {container}"))?);
        Ok(Box::pin(stream::empty()))
    }

    async fn commit(&self, container: &str, spec: &CommitSpec) -> Result<String> {
        drop(self.record(format!("commit {container} {}", spec.reference))?);
        if !spec.reference.is_empty() {
            self.add_image(&spec.reference);
        }
        Ok("sha256:fake".into())
    }

    async fn changes(&self, container: &str) -> Result<Vec<crate::Change>> {
        drop(self.record(format!("diff {container}"))?);
        Ok(vec![])
    }
}

#[async_trait::async_trait]
impl Monitor for FakeRuntime {
    async fn stats(&self, container: &str) -> Result<Stats> {
        let mut s = self.lock();
        Self::find(&mut s, container)?;
        Ok(Stats::default())
    }

    async fn top(&self, id: &str) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        let mut s = self.record(format!("top {id}"))?;
        if Self::find(&mut s, id)?.state != ContainerState::Running {
            return Err(Self::refused(format!("container {id} is not running")));
        }
        Ok((vec!["PID".into(), "CMD".into()], vec![]))
    }
}

/// A broadcast receiver as a stream; a receiver that fell behind skips on.
fn tokio_stream_of(
    rx: broadcast::Receiver<ContainerEvent>,
) -> impl futures_core::Stream<Item = ContainerEvent> + Send {
    stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// The fake keeps images as names only: it has no archives to read or
/// write, and says so.
#[async_trait::async_trait]
impl Images for FakeRuntime {
    async fn load_images(
        &self,
        _archive: Box<dyn std::io::Read + Send>,
    ) -> Result<Vec<LoadedImage>> {
        Err(RuntimeError::Engine(
            "the fake runtime reads no archives".into(),
        ))
    }

    async fn save_images(
        &self,
        _references: &[String],
        _out: Box<dyn std::io::Write + Send>,
    ) -> Result<()> {
        Err(RuntimeError::Engine(
            "the fake runtime writes no archives".into(),
        ))
    }

    async fn import_image(
        &self,
        _tarball: Box<dyn std::io::Read + Send>,
        _reference: Option<&str>,
        _changes: &[String],
        _message: &str,
    ) -> Result<String> {
        Err(RuntimeError::Engine(
            "the fake runtime reads no archives".into(),
        ))
    }

    async fn tag_image(&self, source: &str, target: &str) -> Result<()> {
        let mut s = self.lock();
        let image = s
            .images
            .get(source)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "image",
                name: source.to_string(),
            })?;
        s.images.insert(target.to_string(), image);
        Ok(())
    }

    async fn prune_images(&self, _all: bool) -> Result<(Vec<String>, u64)> {
        Ok((vec![], 0))
    }

    async fn push_image(&self, reference: &str) -> Result<BoxStream<String>> {
        Err(RuntimeError::Engine(format!(
            "the fake runtime has no registry to push {reference} to"
        )))
    }

    async fn image_details(&self, reference: &str) -> Result<serde_json::Value> {
        let image =
            self.lock()
                .images
                .get(reference)
                .cloned()
                .ok_or_else(|| RuntimeError::NotFound {
                    kind: "image",
                    name: reference.to_string(),
                })?;
        Ok(serde_json::json!({"Id": image.id, "RepoTags": image.tags, "Size": image.size}))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn images_are_listed_by_repository_a_registry_port_included() {
        let rt = FakeRuntime::new();
        rt.add_image("reg:5000/app");
        rt.add_image("reg:5000/app:2");
        rt.add_image("app:1");
        let tags = |images: Vec<Image>| {
            let mut tags: Vec<String> = images.into_iter().flat_map(|i| i.tags).collect();
            tags.sort();
            tags
        };
        assert_eq!(
            tags(rt.list_images("reg:5000/app").await.unwrap()),
            ["reg:5000/app", "reg:5000/app:2"]
        );
        assert_eq!(tags(rt.list_images("app").await.unwrap()), ["app:1"]);
    }
}
