//! Planning: a pure function from (project, observed state, options) to the
//! operations that converge the engine to the project.
//!
//! Each [`Op`] is one runtime call and records why it exists; [`Plan`]'s text
//! form is both the test snapshot and the `--dry-run` output. The executor
//! runs a plan and decides nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use runtime_shim::{
    BuildSpec, Container, ContainerSpec, ContainerState, NetworkSpec, Resources, RuntimeError,
    VolumeSpec,
};

use crate::balancer::{self, BalancerSpec};
use crate::convert::{self, labels, ContainerContext};
use crate::model::{Project, Service};
use crate::observe::{container_number, Observed};
use crate::output::config_hash;

/// What one operation does: exactly one runtime call.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create a network.
    CreateNetwork(NetworkSpec),
    /// Remove a network.
    RemoveNetwork(String),
    /// Create a volume.
    CreateVolume(VolumeSpec),
    /// Remove a volume.
    RemoveVolume(String),
    /// Build a service's image.
    Build {
        /// The service.
        service: String,
        /// The build.
        spec: BuildSpec,
    },
    /// Pull an image.
    Pull {
        /// The service.
        service: String,
        /// The image reference.
        image: String,
    },
    /// Remove an image.
    RemoveImage(String),
    /// Create a container.
    CreateContainer {
        /// Its service.
        service: String,
        /// The container.
        spec: Box<ContainerSpec>,
    },
    /// Start a container.
    Start {
        /// Its service.
        service: String,
        /// The container.
        container: String,
    },
    /// Stop a container.
    Stop {
        /// Its service.
        service: String,
        /// The container.
        container: String,
        /// Seconds before SIGKILL.
        timeout: Option<i64>,
    },
    /// Change a container's resource limits in place.
    Update {
        /// Its service.
        service: String,
        /// The container.
        container: String,
        /// Its limits from now on.
        resources: Resources,
    },
    /// Restart a container.
    Restart {
        /// Its service.
        service: String,
        /// The container.
        container: String,
        /// Seconds before SIGKILL.
        timeout: Option<i64>,
    },
    /// Send a signal to a container.
    Kill {
        /// Its service.
        service: String,
        /// The container.
        container: String,
        /// The signal.
        signal: String,
    },
    /// Pause a container.
    Pause {
        /// Its service.
        service: String,
        /// The container.
        container: String,
    },
    /// Resume a container.
    Unpause {
        /// Its service.
        service: String,
        /// The container.
        container: String,
    },
    /// Remove a container.
    Remove {
        /// Its service.
        service: String,
        /// The container.
        container: String,
        /// Remove its anonymous volumes too.
        volumes: bool,
    },
    /// Wait until a container is healthy (or, unless `require_healthcheck`,
    /// running when it has no health check).
    WaitHealthy {
        /// Its service.
        service: String,
        /// The container.
        container: String,
        /// A container without a health check is an error (`service_healthy`),
        /// rather than healthy once running (`--wait`).
        require_healthcheck: bool,
        /// Set for a replica replaced one at a time behind a balancer: how
        /// long its health may take (past it, and restarting by its
        /// policy, it failed, and the replicas after it stay as they are).
        limit: Option<std::time::Duration>,
    },
    /// Wait until a container has exited with status 0.
    WaitCompleted {
        /// Its service.
        service: String,
        /// The container.
        container: String,
    },
    /// Tell a running balancer about a container that has just started, so
    /// that it gets traffic at once. Best effort: when the balancer cannot
    /// be told, it still learns from the engine's events.
    Announce {
        /// Its service.
        service: String,
        /// The container.
        container: String,
        /// The balancer.
        balancer: BalancerTarget,
    },
    /// Have a running balancer drain a container before it stops: no new
    /// requests go to it, and the ones in flight finish. Best effort, as
    /// `Announce`.
    Drain {
        /// Its service.
        service: String,
        /// The container.
        container: String,
        /// The balancer.
        balancer: BalancerTarget,
    },
}

/// A running balancer container and what it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct BalancerTarget {
    /// The balancer's container.
    pub container: String,
    /// Its spec (control port, token, members).
    pub spec: Box<BalancerSpec>,
}

impl Action {
    /// The service the action is about, for container, build and pull actions.
    pub fn service(&self) -> Option<&str> {
        match self {
            Action::Build { service, .. }
            | Action::Pull { service, .. }
            | Action::CreateContainer { service, .. }
            | Action::Start { service, .. }
            | Action::Stop { service, .. }
            | Action::Restart { service, .. }
            | Action::Update { service, .. }
            | Action::Kill { service, .. }
            | Action::Pause { service, .. }
            | Action::Unpause { service, .. }
            | Action::Remove { service, .. }
            | Action::WaitHealthy { service, .. }
            | Action::WaitCompleted { service, .. }
            | Action::Announce { service, .. }
            | Action::Drain { service, .. } => Some(service),
            _ => None,
        }
    }

    /// The resource the action is about, as the progress display names it.
    pub fn subject(&self) -> String {
        match self {
            Action::CreateNetwork(n) => format!("Network {}", n.name),
            Action::RemoveNetwork(n) => format!("Network {n}"),
            Action::CreateVolume(v) => format!("Volume {}", v.name),
            Action::RemoveVolume(v) => format!("Volume {v}"),
            Action::Build { service, .. } | Action::Pull { service, .. } => {
                format!("Service {service}")
            }
            Action::RemoveImage(i) => format!("Image {i}"),
            Action::CreateContainer { spec, .. } => format!("Container {}", spec.name),
            Action::Start { container, .. }
            | Action::Stop { container, .. }
            | Action::Restart { container, .. }
            | Action::Update { container, .. }
            | Action::Kill { container, .. }
            | Action::Pause { container, .. }
            | Action::Unpause { container, .. }
            | Action::Remove { container, .. }
            | Action::WaitHealthy { container, .. }
            | Action::WaitCompleted { container, .. }
            | Action::Announce { container, .. }
            | Action::Drain { container, .. } => format!("Container {container}"),
        }
    }

    /// Whether the runtime's answer `error` means that what the action was
    /// for holds already: an object to create exists (made concurrently by
    /// someone else), an object to stop or remove is gone. The executor
    /// counts the action done; any other error fails it.
    pub fn already_done(&self, error: &RuntimeError) -> bool {
        match error {
            RuntimeError::Conflict { .. } => {
                matches!(self, Action::CreateNetwork(_) | Action::CreateVolume(_))
            }
            RuntimeError::NotFound { .. } => matches!(
                self,
                Action::RemoveNetwork(_)
                    | Action::RemoveVolume(_)
                    | Action::RemoveImage(_)
                    | Action::Stop { .. }
                    | Action::Remove { .. }
            ),
            _ => false,
        }
    }

    /// The words the progress display shows while the action runs and once it is done.
    pub fn verbs(&self) -> (&'static str, &'static str) {
        match self {
            Action::CreateNetwork(_) | Action::CreateVolume(_) | Action::CreateContainer { .. } => {
                ("Creating", "Created")
            }
            Action::RemoveNetwork(_)
            | Action::RemoveVolume(_)
            | Action::RemoveImage(_)
            | Action::Remove { .. } => ("Removing", "Removed"),
            Action::Build { .. } => ("Building", "Built"),
            Action::Pull { .. } => ("Pulling", "Pulled"),
            Action::Start { .. } => ("Starting", "Started"),
            Action::Stop { .. } => ("Stopping", "Stopped"),
            Action::Restart { .. } => ("Restarting", "Restarted"),
            Action::Update { .. } => ("Updating", "Updated"),
            Action::Kill { .. } => ("Killing", "Killed"),
            Action::Pause { .. } => ("Pausing", "Paused"),
            Action::Unpause { .. } => ("Unpausing", "Unpaused"),
            Action::WaitHealthy { .. } => ("Waiting", "Healthy"),
            Action::WaitCompleted { .. } => ("Waiting", "Exited"),
            Action::Announce { .. } => ("Announcing", "In rotation"),
            Action::Drain { .. } => ("Draining", "Drained"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateNetwork(n) => write!(f, "create network {}", n.name),
            Action::RemoveNetwork(n) => write!(f, "remove network {n}"),
            Action::CreateVolume(v) => write!(f, "create volume {}", v.name),
            Action::RemoveVolume(v) => write!(f, "remove volume {v}"),
            Action::Build { spec, .. } => {
                write!(
                    f,
                    "build image {}",
                    spec.tags.first().map(String::as_str).unwrap_or("")
                )
            }
            Action::Pull { image, .. } => write!(f, "pull image {image}"),
            Action::RemoveImage(i) => write!(f, "remove image {i}"),
            Action::CreateContainer { spec, .. } => write!(f, "create container {}", spec.name),
            Action::Start { container, .. } => write!(f, "start container {container}"),
            Action::Stop { container, .. } => write!(f, "stop container {container}"),
            Action::Restart { container, .. } => write!(f, "restart container {container}"),
            Action::Update {
                container,
                resources,
                ..
            } => write!(
                f,
                "update container {container} to {}",
                describe_limits(resources)
            ),
            Action::Kill {
                container, signal, ..
            } => write!(f, "kill container {container} with {signal}"),
            Action::Pause { container, .. } => write!(f, "pause container {container}"),
            Action::Unpause { container, .. } => write!(f, "unpause container {container}"),
            Action::Remove { container, .. } => write!(f, "remove container {container}"),
            Action::WaitHealthy { container, .. } => {
                write!(f, "wait for container {container} to be healthy")
            }
            Action::WaitCompleted { container, .. } => {
                write!(f, "wait for container {container} to complete")
            }
            Action::Announce {
                container,
                balancer,
                ..
            } => write!(
                f,
                "announce container {container} to balancer {}",
                balancer.container
            ),
            Action::Drain {
                container,
                balancer,
                ..
            } => write!(
                f,
                "drain container {container} in balancer {}",
                balancer.container
            ),
        }
    }
}

/// One operation of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// What to do.
    pub action: Action,
    /// Why.
    pub reason: String,
    /// Operations (indexes into the plan) that must succeed first.
    pub after: Vec<usize>,
}

/// Operations in an order that respects their `after` edges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The operations.
    pub ops: Vec<Op>,
    /// Things the user should know that change nothing (orphans, kept containers).
    pub notes: Vec<String>,
}

impl Plan {
    fn push(&mut self, action: Action, reason: impl Into<String>, after: Vec<usize>) -> usize {
        let mut after = after;
        after.sort_unstable();
        after.dedup();
        self.ops.push(Op {
            action,
            reason: reason.into(),
            after,
        });
        self.ops.len() - 1
    }

    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The plan without the operations `drop` selects; edges to them are dropped
    /// too (use it only to remove operations nothing kept depends on).
    pub fn without(self, drop: impl Fn(&Op) -> bool) -> Plan {
        let mut index = vec![None; self.ops.len()];
        let mut ops = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            if !drop(op) {
                index[i] = Some(ops.len());
                ops.push(op.clone());
            }
        }
        for op in &mut ops {
            op.after = op
                .after
                .iter()
                .filter_map(|a| index.get(*a).copied().flatten())
                .collect();
        }
        Plan {
            ops,
            notes: self.notes,
        }
    }
}

impl Plan {
    /// Adds the balancer operations: a container of a service that a running
    /// balancer sends to is drained in it before it stops, restarts or is
    /// removed, and announced to it once started (when it has no
    /// healthcheck; a healthy one is picked up from the engine's events).
    ///
    /// Replicas that go out and come back (recreated or restarted) are
    /// replaced one at a time: the next one is drained only once the one
    /// before is back in rotation (announced, after its healthcheck passed
    /// when it has one), so the service always has a replica serving, and a
    /// replacement that fails to start leaves the remaining ones running.
    fn with_balancers(self, project: &Project, observed: &Observed) -> Plan {
        let touched: BTreeSet<&str> = self
            .ops
            .iter()
            .filter_map(|op| match &op.action {
                Action::Stop { container, .. }
                | Action::Remove { container, .. }
                | Action::Kill { container, .. }
                | Action::Restart { container, .. } => Some(container.as_str()),
                _ => None,
            })
            .collect();
        let mut targets: Vec<BalancerTarget> = Vec::new();
        // Balancers this plan starts: (target, index of the start).
        let mut starting: Vec<(BalancerTarget, usize)> = Vec::new();
        // A running balancer left out of the selection still sends to the
        // services selected.
        for (name, service) in project.services.iter().chain(&project.disabled_services) {
            let Some(spec) = balancer::prepared_spec(service) else {
                continue;
            };
            for c in observed.service_containers(name) {
                if c.state == ContainerState::Running && !touched.contains(c.name.as_str()) {
                    targets.push(BalancerTarget {
                        container: c.name.clone(),
                        spec: Box::new(spec.clone()),
                    });
                }
            }
            for (i, op) in self.ops.iter().enumerate() {
                if let Action::Start { service, container } = &op.action {
                    if service == name {
                        let target = BalancerTarget {
                            container: container.clone(),
                            spec: Box::new(spec.clone()),
                        };
                        starting.push((target, i));
                    }
                }
            }
        }
        if targets.is_empty() && starting.is_empty() {
            return self;
        }
        let feeds = |service: &str| -> Vec<&BalancerTarget> {
            targets
                .iter()
                .filter(|t| t.spec.members.iter().any(|m| m.service == service))
                .collect()
        };
        let running: BTreeSet<&str> = observed
            .containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .map(|c| c.name.as_str())
            .collect();
        let stopped: BTreeSet<&str> = self
            .ops
            .iter()
            .filter_map(|op| match &op.action {
                Action::Stop { container, .. } => Some(container.as_str()),
                _ => None,
            })
            .collect();
        // Containers this plan stops and starts again (a recreate).
        let returning: BTreeSet<&str> = self
            .ops
            .iter()
            .filter_map(|op| match &op.action {
                Action::Start { container, .. } if stopped.contains(container.as_str()) => {
                    Some(container.as_str())
                }
                _ => None,
            })
            .collect();
        // Per service: the ops after which its last replaced replica is
        // back in rotation.
        let mut back: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut ops: Vec<Op> = Vec::new();
        let mut index = vec![0; self.ops.len()];
        for (i, op) in self.ops.iter().enumerate() {
            let (service, container, before, after) = match &op.action {
                Action::Stop {
                    service, container, ..
                }
                | Action::Restart {
                    service, container, ..
                } => (
                    service,
                    container,
                    running.contains(container.as_str()),
                    matches!(op.action, Action::Restart { .. }),
                ),
                Action::Remove {
                    service, container, ..
                } => (
                    service,
                    container,
                    running.contains(container.as_str()) && !stopped.contains(container.as_str()),
                    false,
                ),
                Action::Start { service, container } => (service, container, false, true),
                _ => {
                    index[i] = ops.len();
                    let mut this = op.clone();
                    this.after = op.after.iter().map(|a| index[*a]).collect();
                    ops.push(this);
                    continue;
                }
            };
            let healthcheck = project
                .services
                .get(service)
                .and_then(|s| s.healthcheck.as_ref());
            let checked = is_checked(healthcheck);
            let fed = feeds(service);
            // Whether the container comes back after going out of rotation
            // (a recreate, a restart): the service's next drain waits for it.
            let returns = !fed.is_empty()
                && match &op.action {
                    Action::Restart { .. } => before,
                    Action::Start { .. } => returning.contains(container.as_str()),
                    _ => false,
                };
            let mut drains = Vec::new();
            if before {
                for t in &fed {
                    // Not while a replica before is still being replaced
                    // (nor, scaling down, before the replacements are in).
                    let mut wait: Vec<usize> = op.after.iter().map(|a| index[*a]).collect();
                    wait.extend(back.get(service).into_iter().flatten());
                    drains.push(ops.len());
                    ops.push(Op {
                        action: Action::Drain {
                            service: service.clone(),
                            container: container.clone(),
                            balancer: (*t).clone(),
                        },
                        reason: format!("balancer {} sends to it", t.container),
                        after: wait,
                    });
                }
            }
            index[i] = ops.len();
            let mut this = op.clone();
            this.after = op.after.iter().map(|a| index[*a]).chain(drains).collect();
            ops.push(this);
            if !after || fed.is_empty() || (checked && !returns) {
                continue;
            }
            let mut ready = index[i];
            if checked || returns {
                // The next replica waits for this one's healthcheck (the
                // file's or the image's), or for it to run.
                ready = ops.len();
                ops.push(Op {
                    action: Action::WaitHealthy {
                        service: service.clone(),
                        container: container.clone(),
                        require_healthcheck: false,
                        limit: returns.then(|| health_limit(healthcheck)),
                    },
                    reason: "replicas behind a balancer are replaced one at a time".into(),
                    after: vec![index[i]],
                });
            }
            let mut announced = Vec::new();
            for t in fed {
                announced.push(ops.len());
                ops.push(Op {
                    action: Action::Announce {
                        service: service.clone(),
                        container: container.clone(),
                        balancer: t.clone(),
                    },
                    reason: format!("balancer {} sends to it", t.container),
                    after: vec![ready],
                });
            }
            if returns {
                back.insert(service.clone(), announced);
            }
        }
        // A balancer that starts now learns of its services' containers
        // that run (or start in this plan) from rcompose too: what its
        // discovery cannot tell by itself (the image's exposed port, when
        // the file declares none, and no engine to ask) it knows at once.
        for (t, start) in &starting {
            for m in &t.spec.members {
                if is_checked(
                    project
                        .services
                        .get(&m.service)
                        .and_then(|s| s.healthcheck.as_ref()),
                ) {
                    continue;
                }
                let mut members: Vec<(String, Vec<usize>)> = Vec::new();
                for c in observed.service_containers(&m.service) {
                    if c.state == ContainerState::Running && !touched.contains(c.name.as_str()) {
                        members.push((c.name.clone(), vec![index[*start]]));
                    }
                }
                for (i, op) in self.ops.iter().enumerate() {
                    if let Action::Start { service, container } = &op.action {
                        if *service == m.service {
                            members.push((container.clone(), vec![index[*start], index[i]]));
                        }
                    }
                }
                for (container, after) in members {
                    let known = ops.iter().any(|o| {
                        matches!(&o.action, Action::Announce { container: c, balancer, .. }
                            if *c == container && balancer.container == t.container)
                    });
                    if known {
                        continue;
                    }
                    ops.push(Op {
                        action: Action::Announce {
                            service: m.service.clone(),
                            container,
                            balancer: t.clone(),
                        },
                        reason: format!("balancer {} starts and sends to it", t.container),
                        after,
                    });
                }
            }
        }
        Plan {
            ops,
            notes: self.notes,
        }
    }
}

impl fmt::Display for Plan {
    /// One line per operation: `#3 start container demo-web-1 (new replica) after #1, #2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, op) in self.ops.iter().enumerate() {
            write!(f, "#{} {} ({})", i + 1, op.action, op.reason)?;
            if !op.after.is_empty() {
                let after: Vec<String> = op.after.iter().map(|a| format!("#{}", a + 1)).collect();
                write!(f, " after {}", after.join(", "))?;
            }
            writeln!(f)?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

/// When to recreate containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recreate {
    /// When their configuration or image changed.
    #[default]
    Diverged,
    /// Always (`--force-recreate`).
    Force,
    /// Never (`--no-recreate`).
    Never,
}

/// Options of `up` and `create`.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Services to converge (with their dependencies unless `no_deps`); empty for all.
    pub services: Vec<String>,
    /// Do not converge dependencies of the named services.
    pub no_deps: bool,
    /// When to recreate the named services' containers (all services'
    /// when none is named).
    pub recreate: Recreate,
    /// When to recreate the containers of their dependencies
    /// (`--always-recreate-deps` forces it, as Compose).
    pub recreate_deps: Recreate,
    /// Replicas per service, overriding the project (`--scale`).
    pub scale: BTreeMap<String, u32>,
    /// Remove containers of services no longer in the project.
    pub remove_orphans: bool,
    /// Create containers without starting them (`create`).
    pub no_start: bool,
    /// Seconds to wait when stopping.
    pub timeout: Option<i64>,
    /// `--env-file` paths, recorded in a label.
    pub env_files: Vec<String>,
}

/// Options of `build` and of the image phase of `up`.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Services to build; empty for all.
    pub services: Vec<String>,
    /// Build even when the image is present (`--build`, `build`).
    pub always: bool,
    /// Never build (`--no-build`).
    pub never: bool,
    /// Do not use the build cache.
    pub no_cache: bool,
    /// Build and pull what the named services depend on too.
    pub with_deps: bool,
    /// Build arguments given on the command line (`--build-arg`), over the
    /// file's; `None` unsets one.
    pub args: BTreeMap<String, Option<String>>,
    /// The time, seconds since the epoch, from which `pull_policy: daily`,
    /// `weekly` and `every_<duration>` measure an image's age (an input, so
    /// that planning stays pure).
    pub now: i64,
}

/// Services named plus, transitively, what they depend on (all when none named).
pub fn selected_services(project: &Project, names: &[String], with_deps: bool) -> BTreeSet<String> {
    if names.is_empty() {
        return project.services.keys().cloned().collect();
    }
    let mut out = BTreeSet::new();
    let mut queue: Vec<String> = names.to_vec();
    while let Some(n) = queue.pop() {
        if !project.services.contains_key(&n) || !out.insert(n.clone()) {
            continue;
        }
        if with_deps {
            if let Some(s) = project.services.get(&n) {
                queue.extend(s.depends_on.keys().cloned());
                queue.extend(
                    s.links
                        .iter()
                        .map(|l| l.split(':').next().unwrap_or_default().to_string()),
                );
            }
        }
    }
    out
}

/// Services in dependency order (dependencies first), ties by name.
pub fn dependency_order(project: &Project) -> Vec<String> {
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    fn visit(
        p: &Project,
        n: &str,
        done: &mut BTreeSet<String>,
        order: &mut Vec<String>,
        depth: usize,
    ) {
        if done.contains(n) || depth > p.services.len() {
            return;
        }
        if let Some(s) = p.services.get(n) {
            for d in s.depends_on.keys() {
                visit(p, d, done, order, depth + 1);
            }
        }
        if done.insert(n.to_string()) && p.services.contains_key(n) {
            order.push(n.to_string());
        }
    }
    for n in project.services.keys() {
        visit(project, n, &mut done, &mut order, 0);
    }
    order
}

/// Builds and pulls needed before `up` can create containers, following each
/// service's `pull_policy` (`missing` by default, `always`, `never`, `build`).
pub fn plan_build(project: &Project, observed: &Observed, options: &BuildOptions) -> Plan {
    let mut plan = Plan::default();
    let selected = selected_services(project, &options.services, options.with_deps);
    let mut pulled = BTreeSet::new();
    for (name, s) in &project.services {
        if !selected.contains(name) {
            continue;
        }
        let image = convert::image_name(project, name, s);
        let present = observed.images.contains_key(&image);
        let policy = s.pull_policy.as_str();
        if let Some(mut spec) = convert::build_spec(project, name, s, options.no_cache) {
            for (key, value) in &options.args {
                match value {
                    Some(v) => spec.args.insert(key.clone(), v.clone()),
                    None => spec.args.remove(key),
                };
            }
            if options.never || (present && !options.always && policy != "build") {
                continue;
            }
            let reason = if !present {
                "image is missing"
            } else if policy == "build" {
                "pull_policy is build"
            } else {
                "build requested"
            };
            plan.push(
                Action::Build {
                    service: name.clone(),
                    spec,
                },
                format!("service {name}: {reason}"),
                vec![],
            );
            continue;
        }
        let stale = |interval: i64| {
            observed
                .images
                .get(&image)
                .is_none_or(|i| i.last_tagged == 0 || options.now - i.last_tagged >= interval)
        };
        let wanted = match policy {
            "always" => true,
            "never" => false,
            p => match refresh_interval(p) {
                Some(interval) => !present || stale(interval),
                None => !present,
            },
        };
        if wanted && pulled.insert(image.clone()) {
            let reason = if !present {
                "image is missing".to_string()
            } else if policy == "always" {
                "pull_policy is always".to_string()
            } else {
                format!("pull_policy is {policy} and the image is older")
            };
            plan.push(
                Action::Pull {
                    service: name.clone(),
                    image,
                },
                format!("service {name}: {reason}"),
                vec![],
            );
        }
    }
    plan
}

/// How old an image may get under `pull_policy: daily`, `weekly` or
/// `every_<duration>` (units w, d, h, m, s, combined as in `every_1d12h`),
/// in seconds; `None` for the other policies.
pub fn refresh_interval(policy: &str) -> Option<i64> {
    match policy {
        "daily" => return Some(86_400),
        "weekly" => return Some(7 * 86_400),
        _ => {}
    }
    let spec = policy.strip_prefix("every_")?;
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in spec.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'w' => 7 * 86_400,
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: i64 = number.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        number.clear();
    }
    (number.is_empty() && total > 0).then_some(total)
}

/// What `up` does with an existing container of a service.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    /// It is up to date.
    Keep,
    /// Only its resource limits differ: they change in place.
    Update(Resources),
    /// It must be replaced, and why.
    Recreate(&'static str),
}

/// The service as a container should have it: its configuration hash, that
/// hash without the limits, its limits, its image id.
struct Wanted<'a> {
    hash: &'a str,
    without_limits: &'a str,
    limits: &'a Resources,
    image_id: &'a str,
}

/// What to do with container `c` (whose limits, when observed, are `now`).
fn verdict(want: &Wanted, c: &Container, now: Option<&Resources>, policy: Recreate) -> Verdict {
    let label = |key: &str| c.labels.get(key).map(String::as_str);
    match policy {
        Recreate::Never => Verdict::Keep,
        Recreate::Force => Verdict::Recreate("recreate forced"),
        Recreate::Diverged => {
            let same_shape =
                label(convert::CONFIG_HASH_WITHOUT_LIMITS) == Some(want.without_limits);
            if label(labels::CONFIG_HASH) != Some(want.hash) && !same_shape {
                return Verdict::Recreate("configuration changed");
            }
            if !want.image_id.is_empty() && label(labels::IMAGE) != Some(want.image_id) {
                return Verdict::Recreate("image changed");
            }
            match now {
                // Limits changed in place earlier make the creation hash
                // stale: the limits themselves are compared.
                Some(now) if same_shape => {
                    if limits_hold(now, want.limits) {
                        Verdict::Keep
                    } else if limits_settable(now, want.limits) {
                        Verdict::Update(want.limits.clone())
                    } else {
                        Verdict::Recreate("resource limits removed")
                    }
                }
                _ if label(labels::CONFIG_HASH) != Some(want.hash) => {
                    Verdict::Recreate("configuration changed")
                }
                _ => Verdict::Keep,
            }
        }
    }
}

/// Whether a container's limits `now` are those `wanted`. Swap unset is
/// the engine's default (none, unlimited, or twice the memory); -1 is also
/// what an engine without swap accounting keeps whatever it was asked.
fn limits_hold(now: &Resources, wanted: &Resources) -> bool {
    let swap = match wanted.memory_swap {
        0 => [0, -1, now.memory.saturating_mul(2)].contains(&now.memory_swap),
        w => now.memory_swap == w || now.memory_swap == -1,
    };
    now.memory == wanted.memory
        && now.memory_reservation == wanted.memory_reservation
        && swap
        && now.nano_cpus == wanted.nano_cpus
        && now.cpu_shares == wanted.cpu_shares
        && now.cpuset == wanted.cpuset
        && now.pids_limit.max(0) == wanted.pids_limit.max(0)
}

/// Whether the limits can go from `now` to `wanted` in place: an engine
/// sets new values, but does not unset one (that takes a new container).
fn limits_settable(now: &Resources, wanted: &Resources) -> bool {
    let set = |now: i64, wanted: i64| now == wanted || wanted > 0;
    set(now.memory, wanted.memory)
        && set(now.memory_reservation, wanted.memory_reservation)
        && set(now.nano_cpus, wanted.nano_cpus)
        && set(now.cpu_shares, wanted.cpu_shares)
        && set(now.pids_limit.max(0), wanted.pids_limit.max(0))
        && (now.cpuset == wanted.cpuset || !wanted.cpuset.is_empty())
}

/// Limits as `docker update` options would spell them.
fn describe_limits(r: &Resources) -> String {
    let size = |bytes: i64| {
        for (unit, shift) in [("g", 30), ("m", 20), ("k", 10)] {
            if bytes > 0 && bytes % (1 << shift) == 0 {
                return format!("{}{unit}", bytes >> shift);
            }
        }
        bytes.to_string()
    };
    let mut parts = Vec::new();
    if r.memory > 0 {
        parts.push(format!("memory={}", size(r.memory)));
    }
    if r.memory_swap != 0 {
        parts.push(format!("memory-swap={}", size(r.memory_swap)));
    }
    if r.memory_reservation > 0 {
        parts.push(format!("memory-reservation={}", size(r.memory_reservation)));
    }
    if r.nano_cpus > 0 {
        parts.push(format!("cpus={}", r.nano_cpus as f64 / 1e9));
    }
    if r.cpu_shares > 0 {
        parts.push(format!("cpu-shares={}", r.cpu_shares));
    }
    if !r.cpuset.is_empty() {
        parts.push(format!("cpuset-cpus={}", r.cpuset));
    }
    if r.pids_limit != 0 {
        parts.push(format!("pids-limit={}", r.pids_limit));
    }
    if parts.is_empty() {
        "no limits".into()
    } else {
        parts.join(" ")
    }
}

/// State shared while planning the services of an `up`.
struct UpPlanner<'a> {
    project: &'a Project,
    observed: &'a Observed,
    options: &'a UpOptions,
    plan: Plan,
    /// Ops that must precede container creation (networks, volumes).
    infra: Vec<usize>,
    /// Per service: ops after which its containers count as started.
    started: BTreeMap<String, Vec<usize>>,
    /// Per service: ops after which it is healthy.
    healthy: BTreeMap<String, Vec<usize>>,
    /// Per service: ops after which it has completed.
    completed: BTreeMap<String, Vec<usize>>,
    /// Per service: its container names after the plan, by number.
    names: BTreeMap<String, Vec<String>>,
    /// Services whose containers this plan recreates, with the ops after
    /// which the new ones run (dependants with `restart: true` follow them).
    recreated: BTreeMap<String, Vec<usize>>,
}

/// Plans `up` (and `create` with `no_start`): networks, volumes, then the
/// containers of each service in dependency order.
pub fn plan_up(project: &Project, observed: &Observed, options: &UpOptions) -> Plan {
    let mut p = UpPlanner {
        project,
        observed,
        options,
        plan: Plan::default(),
        infra: Vec::new(),
        started: BTreeMap::new(),
        healthy: BTreeMap::new(),
        completed: BTreeMap::new(),
        names: BTreeMap::new(),
        recreated: BTreeMap::new(),
    };
    p.plan_infra();
    p.plan_orphans();
    let selected = selected_services(project, &options.services, !options.no_deps);
    for name in dependency_order(project) {
        if selected.contains(&name) {
            p.plan_service(&name);
        } else {
            p.keep_service(&name);
        }
    }
    p.plan.with_balancers(project, observed)
}

impl UpPlanner<'_> {
    fn plan_infra(&mut self) {
        for (key, n) in &self.project.networks {
            if n.external || self.observed.networks.contains_key(&n.name) {
                continue;
            }
            if let Some(spec) = convert::network_spec(self.project, key) {
                let op = self.plan.push(
                    Action::CreateNetwork(spec),
                    format!("network {key} is missing"),
                    vec![],
                );
                self.infra.push(op);
            }
        }
        for (key, v) in &self.project.volumes {
            if v.external || self.observed.volumes.contains_key(&v.name) {
                continue;
            }
            if let Some(spec) = convert::volume_spec(self.project, key) {
                let op = self.plan.push(
                    Action::CreateVolume(spec),
                    format!("volume {key} is missing"),
                    vec![],
                );
                self.infra.push(op);
            }
        }
    }

    fn plan_orphans(&mut self) {
        let known = |s: &str| {
            self.project.services.contains_key(s) || self.project.disabled_services.contains_key(s)
        };
        let mut orphans: Vec<&Container> = self
            .observed
            .containers
            .iter()
            .filter(|c| !labels::is_oneoff(&c.labels))
            .filter(|c| {
                !known(
                    c.labels
                        .get(labels::SERVICE)
                        .map(String::as_str)
                        .unwrap_or(""),
                )
            })
            .collect();
        orphans.sort_by(|a, b| a.name.cmp(&b.name));
        if orphans.is_empty() {
            return;
        }
        if !self.options.remove_orphans {
            let names: Vec<&str> = orphans.iter().map(|c| c.name.as_str()).collect();
            self.plan.notes.push(format!(
                "Found orphan containers ({}) for this project. If you removed or renamed this service in your compose file, you can run this command with the --remove-orphans flag to clean it up.",
                names.join(", ")
            ));
            return;
        }
        for c in orphans {
            let service = c.labels.get(labels::SERVICE).cloned().unwrap_or_default();
            let mut after = vec![];
            if c.state == ContainerState::Running || c.state == ContainerState::Paused {
                after.push(self.plan.push(
                    Action::Stop {
                        service: service.clone(),
                        container: c.name.clone(),
                        timeout: self.options.timeout,
                    },
                    "orphan container",
                    vec![],
                ));
            }
            self.plan.push(
                Action::Remove {
                    service,
                    container: c.name.clone(),
                    volumes: false,
                },
                "orphan container",
                after,
            );
        }
    }

    /// A service left alone: its current containers still count for the
    /// services that depend on it.
    fn keep_service(&mut self, name: &str) {
        let names = self
            .observed
            .service_containers(name)
            .map(|c| c.name.clone())
            .collect();
        self.names.insert(name.to_string(), names);
    }

    /// A dependency with `restart: true` that this plan recreates, and the ops
    /// a restart of `service`'s running containers must follow.
    fn restart_for(&self, service: &Service) -> Option<(String, Vec<usize>)> {
        if self.options.no_start {
            return None;
        }
        service
            .depends_on
            .iter()
            .filter(|(_, d)| d.restart)
            .find_map(|(dep, _)| Some((dep.clone(), self.recreated.get(dep)?.clone())))
    }

    /// What a container of `service` must wait for before it starts (the
    /// waits are planned once, when a first start needs them).
    fn start_prerequisites(&mut self, service: &Service) -> Vec<usize> {
        let mut after = Vec::new();
        for (dep, d) in &service.depends_on {
            if !self.project.services.contains_key(dep) {
                continue;
            }
            let ops = match d.condition.as_str() {
                "service_healthy" => self.wait_for(dep, true),
                "service_completed_successfully" => self.wait_for(dep, false),
                _ => self.started.get(dep).cloned().unwrap_or_default(),
            };
            after.extend(ops);
        }
        after
    }

    /// One wait op per container of `dep`, planned once per condition.
    fn wait_for(&mut self, dep: &str, healthy: bool) -> Vec<usize> {
        let cache = if healthy {
            &self.healthy
        } else {
            &self.completed
        };
        if let Some(ops) = cache.get(dep) {
            return ops.clone();
        }
        let started = self.started.get(dep).cloned().unwrap_or_default();
        let names = self.names.get(dep).cloned().unwrap_or_default();
        let mut ops = Vec::new();
        for container in names {
            let action = if healthy {
                Action::WaitHealthy {
                    service: dep.to_string(),
                    container,
                    require_healthcheck: true,
                    limit: None,
                }
            } else {
                Action::WaitCompleted {
                    service: dep.to_string(),
                    container,
                }
            };
            let reason = if healthy {
                format!("a dependant needs {dep} healthy")
            } else {
                format!("a dependant needs {dep} completed")
            };
            ops.push(self.plan.push(action, reason, started.clone()));
        }
        let cache = if healthy {
            &mut self.healthy
        } else {
            &mut self.completed
        };
        cache.insert(dep.to_string(), ops.clone());
        ops
    }

    fn plan_service(&mut self, name: &str) {
        let Some(service) = self.project.services.get(name) else {
            return;
        };
        let desired = self
            .options
            .scale
            .get(name)
            .copied()
            .unwrap_or_else(|| convert::replicas(service));
        let image = convert::image_name(self.project, name, service);
        let image_id = self
            .observed
            .images
            .get(&image)
            .map(|i| i.id.clone())
            .unwrap_or_default();
        let hash = config_hash(service);
        let without_limits = config_hash(&convert::without_limits(service));
        let limits = convert::resources(service);
        let policy = if self.options.services.is_empty()
            || self.options.services.iter().any(|s| s == name)
        {
            self.options.recreate
        } else {
            self.options.recreate_deps
        };
        let want = Wanted {
            hash: &hash,
            without_limits: &without_limits,
            limits: &limits,
            image_id: &image_id,
        };
        let mut existing: Vec<(Verdict, &Container)> = self
            .observed
            .service_containers(name)
            .map(|c| {
                let now = self.observed.limits.get(&c.name);
                (verdict(&want, c, now, policy), c)
            })
            .collect();
        // Obsolete containers first, then the highest numbers: they go first when scaling down.
        existing.sort_by_key(|(verdict, c)| {
            (
                !matches!(verdict, Verdict::Recreate(_)),
                std::cmp::Reverse(container_number(c).unwrap_or(0)),
            )
        });
        existing.reverse();
        let mut started = Vec::new();
        let mut names: Vec<(u32, String)> = Vec::new();
        let desired_usize = desired as usize;
        let next = existing
            .iter()
            .filter_map(|(_, c)| container_number(c))
            .max()
            .unwrap_or(0)
            + 1;
        let kept = existing.len().min(desired_usize);
        for (i, (verdict, c)) in existing.iter().enumerate() {
            let c = *c;
            let number = container_number(c).unwrap_or(0);
            if i >= desired_usize {
                let stop = self.plan.push(
                    Action::Stop {
                        service: name.into(),
                        container: c.name.clone(),
                        timeout: self.options.timeout,
                    },
                    format!("service {name}: scale to {desired}"),
                    vec![],
                );
                self.plan.push(
                    Action::Remove {
                        service: name.into(),
                        container: c.name.clone(),
                        volumes: false,
                    },
                    format!("service {name}: scale to {desired}"),
                    vec![stop],
                );
                continue;
            }
            names.push((number, c.name.clone()));
            if let Verdict::Recreate(why) = *verdict {
                let stop = self.plan.push(
                    Action::Stop {
                        service: name.into(),
                        container: c.name.clone(),
                        timeout: self.options.timeout,
                    },
                    format!("service {name}: {why}"),
                    vec![],
                );
                let remove = self.plan.push(
                    Action::Remove {
                        service: name.into(),
                        container: c.name.clone(),
                        volumes: false,
                    },
                    format!("service {name}: {why}"),
                    vec![stop],
                );
                if let Some(s) = self.create(name, service, number, &image_id, vec![remove], why) {
                    started.push(s);
                    self.recreated.entry(name.to_string()).or_default().push(s);
                }
                continue;
            }
            let updated = match verdict {
                Verdict::Update(resources) => Some(self.plan.push(
                    Action::Update {
                        service: name.into(),
                        container: c.name.clone(),
                        resources: resources.clone(),
                    },
                    format!("service {name}: resource limits changed"),
                    vec![],
                )),
                _ => None,
            };
            if !self.options.no_start
                && !matches!(
                    c.state,
                    ContainerState::Running | ContainerState::Restarting
                )
            {
                let op = if c.state == ContainerState::Paused {
                    Action::Unpause {
                        service: name.into(),
                        container: c.name.clone(),
                    }
                } else {
                    Action::Start {
                        service: name.into(),
                        container: c.name.clone(),
                    }
                };
                let mut prerequisites = self.start_prerequisites(service);
                prerequisites.extend(updated);
                started.push(self.plan.push(
                    op,
                    format!("service {name}: container is {}", c.state.as_str()),
                    prerequisites,
                ));
            } else if let Some((dep, mut after)) = self.restart_for(service) {
                // A restart after the limits change, so it starts with them.
                after.extend(updated);
                let restart = self.plan.push(
                    Action::Restart {
                        service: name.into(),
                        container: c.name.clone(),
                        timeout: self.options.timeout,
                    },
                    format!("service {name}: dependency {dep} was recreated"),
                    after,
                );
                started.push(restart);
            } else if updated.is_none() && (policy != Recreate::Never || self.options.no_start) {
                self.plan
                    .notes
                    .push(format!("container {} is up to date", c.name));
            }
        }
        for i in 0..desired_usize.saturating_sub(kept) {
            let number = next + i as u32;
            names.push((
                number,
                convert::container_name(&self.project.name, name, service, number),
            ));
            let infra = self.infra.clone();
            if let Some(s) = self.create(name, service, number, &image_id, infra, "new replica") {
                started.push(s);
            }
        }
        names.sort();
        self.names.insert(
            name.to_string(),
            names.into_iter().map(|(_, n)| n).collect(),
        );
        self.started.insert(name.to_string(), started);
    }

    /// Plans create (+ connect, + start) of one container; returns the op
    /// after which it counts as started.
    fn create(
        &mut self,
        name: &str,
        service: &Service,
        number: u32,
        image_id: &str,
        after: Vec<usize>,
        why: &str,
    ) -> Option<usize> {
        let ctx = ContainerContext {
            image_id: image_id.to_string(),
            links: self.links(service),
            service_containers: self
                .names
                .iter()
                .filter_map(|(s, n)| Some((s.clone(), n.first()?.clone())))
                .collect(),
            env_files: self.options.env_files.clone(),
        };
        let spec = convert::container_spec(self.project, name, service, number, &ctx);
        let container = spec.name.clone();
        let mut after = after;
        after.extend(self.infra.iter().copied());
        // A container sharing another's namespaces or volumes needs it created first.
        for dep in service.depends_on.keys() {
            if let Some(ops) = self.started.get(dep) {
                if service.network_mode.starts_with("service:") || !service.volumes_from.is_empty()
                {
                    after.extend(ops.iter().copied());
                }
            }
        }
        let reason = format!("service {name}: {why}");
        let created = self.plan.push(
            Action::CreateContainer {
                service: name.into(),
                spec: Box::new(spec),
            },
            reason.clone(),
            after,
        );
        if self.options.no_start {
            return Some(created);
        }
        let mut start_after = vec![created];
        start_after.extend(self.start_prerequisites(service));
        Some(self.plan.push(
            Action::Start {
                service: name.into(),
                container,
            },
            reason,
            start_after,
        ))
    }

    /// Legacy links of a service, `container:alias`, to the containers its
    /// linked services will have.
    fn links(&self, service: &Service) -> Vec<String> {
        let mut out = Vec::new();
        for link in &service.links {
            let (svc, alias) = link.split_once(':').unwrap_or((link, link));
            for (i, c) in self.names.get(svc).into_iter().flatten().enumerate() {
                out.push(format!("{c}:{alias}"));
                out.push(format!("{c}:{svc}-{}", i + 1));
                out.push(format!("{c}:{}-{svc}-{}", self.project.name, i + 1));
            }
        }
        for link in &service.external_links {
            let (c, alias) = link.split_once(':').unwrap_or((link, link));
            out.push(format!("{c}:{alias}"));
        }
        out
    }
}

/// Options of `down`.
#[derive(Debug, Clone, Default)]
pub struct DownOptions {
    /// Remove named volumes and anonymous volumes (`-v`).
    pub volumes: bool,
    /// Remove images: `local` (built ones without a custom tag) or `all`.
    pub rmi: Option<String>,
    /// Remove containers of services no longer in the project.
    pub remove_orphans: bool,
    /// Seconds to wait when stopping.
    pub timeout: Option<i64>,
    /// Only these services' containers; networks, volumes and images stay,
    /// as other services may use them. Empty for the whole project.
    pub services: Vec<String>,
}

/// Plans `down`: containers stopped and removed (dependants first), then
/// networks, volumes and images. Without a compose file (a project named by
/// `-p` alone), its containers and networks are those observed with its
/// label; its volumes are not known, so they stay.
pub fn plan_down(project: &Project, observed: &Observed, options: &DownOptions) -> Plan {
    let mut plan = plan_down_all(project, observed, options);
    if !options.services.is_empty() {
        let keep: BTreeSet<String> = observed
            .containers
            .iter()
            .filter(|c| {
                c.labels
                    .get(labels::SERVICE)
                    .is_some_and(|s| options.services.contains(s))
            })
            .map(|c| c.name.clone())
            .collect();
        plan = plan.without(|o| match &o.action {
            Action::Stop { container, .. } | Action::Remove { container, .. } => {
                !keep.contains(container)
            }
            _ => true,
        });
    }
    plan
}

fn plan_down_all(project: &Project, observed: &Observed, options: &DownOptions) -> Plan {
    let mut plan = Plan::default();
    // A project named by `-p` alone, with no compose file: every container
    // carrying its label belongs to it, as in Compose.
    let fileless = project.services.is_empty() && project.networks.is_empty();
    let known = |s: &str| {
        fileless || project.services.contains_key(s) || project.disabled_services.contains_key(s)
    };
    let mut removed = Vec::new();
    let mut order = dependency_order(project);
    order.reverse();
    // Dependants before their dependencies: stops wait on the dependants' stops.
    let mut stops: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut containers: Vec<&Container> = observed.containers.iter().collect();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    let rank = |c: &Container| {
        let svc = c
            .labels
            .get(labels::SERVICE)
            .map(String::as_str)
            .unwrap_or("");
        order.iter().position(|n| n == svc).unwrap_or(0)
    };
    containers.sort_by_key(|c| rank(c));
    for c in containers {
        let service = c.labels.get(labels::SERVICE).cloned().unwrap_or_default();
        let oneoff = labels::is_oneoff(&c.labels);
        if !known(&service) && !oneoff && !options.remove_orphans {
            plan.notes
                .push(format!("orphan container {} left in place", c.name));
            continue;
        }
        let mut after: Vec<usize> = Vec::new();
        for (other, ops) in &stops {
            let depends = project
                .services
                .get(other)
                .is_some_and(|s| s.depends_on.contains_key(&service));
            if depends {
                after.extend(ops.iter().copied());
            }
        }
        let reason = if known(&service) || oneoff {
            "project is going down".to_string()
        } else {
            "orphan container".to_string()
        };
        let mut rm_after = Vec::new();
        if matches!(
            c.state,
            ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
        ) {
            let stop = plan.push(
                Action::Stop {
                    service: service.clone(),
                    container: c.name.clone(),
                    timeout: options.timeout,
                },
                reason.clone(),
                after,
            );
            stops.entry(service.clone()).or_default().push(stop);
            rm_after.push(stop);
        }
        removed.push(plan.push(
            Action::Remove {
                service,
                container: c.name.clone(),
                volumes: options.volumes,
            },
            reason,
            rm_after,
        ));
    }
    for (key, n) in &project.networks {
        if n.external || !observed.networks.contains_key(&n.name) {
            continue;
        }
        plan.push(
            Action::RemoveNetwork(n.name.clone()),
            format!("network {key} of the project"),
            removed.clone(),
        );
    }
    if fileless {
        for (name, n) in &observed.networks {
            if n.labels.get(labels::PROJECT) == Some(&project.name) {
                plan.push(
                    Action::RemoveNetwork(name.clone()),
                    "network of the project".to_string(),
                    removed.clone(),
                );
            }
        }
    }
    if options.volumes {
        for (key, v) in &project.volumes {
            if v.external || !observed.volumes.contains_key(&v.name) {
                continue;
            }
            plan.push(
                Action::RemoveVolume(v.name.clone()),
                format!("volume {key} of the project"),
                removed.clone(),
            );
        }
    }
    if let Some(rmi) = &options.rmi {
        let mut images = BTreeSet::new();
        for (name, s) in &project.services {
            let local = s.build.is_some() && s.image.is_empty();
            if rmi == "all" || local {
                let image = convert::image_name(project, name, s);
                if observed.images.contains_key(&image) {
                    images.insert(image);
                }
            }
        }
        for image in images {
            plan.push(
                Action::RemoveImage(image),
                format!("--rmi {rmi}"),
                removed.clone(),
            );
        }
    }
    plan
}

/// Whether the file gives a service a healthcheck of its own.
fn is_checked(healthcheck: Option<&crate::model::Healthcheck>) -> bool {
    healthcheck.is_some_and(|h| !h.disable && !h.test.is_empty())
}

/// How long a container may take to become healthy: its start period,
/// then a check failing by timeout as many times as it may (the engine's
/// defaults where the file says nothing, the image's healthcheck being
/// unknown here), and one more.
fn health_limit(healthcheck: Option<&crate::model::Healthcheck>) -> std::time::Duration {
    use std::time::Duration;
    let given = |d: Option<crate::model::Duration>, default: u64| {
        d.and_then(|d| u64::try_from(d.nanos).ok())
            .map_or(Duration::from_secs(default), Duration::from_nanos)
    };
    let h = healthcheck.filter(|h| !h.disable);
    let interval = given(h.and_then(|h| h.interval), 30);
    let timeout = given(h.and_then(|h| h.timeout), 30);
    let start = given(h.and_then(|h| h.start_period), 0);
    let retries = h.and_then(|h| h.retries).unwrap_or(3).min(100);
    start + (interval + timeout) * (retries as u32 + 1)
}

/// Plans `up --wait`: every container of the services (all when none are
/// named) healthy, or running when it has no health check.
pub fn plan_wait(project: &Project, observed: &Observed, services: &[String]) -> Plan {
    let mut plan = Plan::default();
    for c in target_containers(observed, services) {
        let service = c.labels.get(labels::SERVICE).cloned().unwrap_or_default();
        if !project.services.contains_key(&service) {
            continue;
        }
        plan.push(
            Action::WaitHealthy {
                service,
                container: c.name.clone(),
                require_healthcheck: false,
                limit: None,
            },
            "--wait".to_string(),
            vec![],
        );
    }
    plan
}

/// Options of `pull`.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Services whose images to pull; empty for all.
    pub services: Vec<String>,
    /// Leave out services that have a build section.
    pub ignore_buildable: bool,
}

/// Plans `pull`: each image named by a selected service, once.
pub fn plan_pull(project: &Project, options: &PullOptions) -> Plan {
    let mut plan = Plan::default();
    let mut seen = BTreeSet::new();
    for (name, s) in &project.services {
        if !options.services.is_empty() && !options.services.contains(name) {
            continue;
        }
        if s.image.is_empty()
            || (options.ignore_buildable && s.build.is_some())
            || !seen.insert(s.image.clone())
        {
            continue;
        }
        plan.push(
            Action::Pull {
                service: name.clone(),
                image: s.image.clone(),
            },
            "pull requested".to_string(),
            vec![],
        );
    }
    plan
}

/// Which containers a lifecycle command acts on.
pub fn target_containers<'a>(observed: &'a Observed, services: &[String]) -> Vec<&'a Container> {
    let mut out: Vec<&Container> = observed
        .containers
        .iter()
        .filter(|c| !labels::is_oneoff(&c.labels))
        .filter(|c| {
            services.is_empty()
                || c.labels
                    .get(labels::SERVICE)
                    .is_some_and(|s| services.contains(s))
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A lifecycle command applied to containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// `start`.
    Start,
    /// `stop`.
    Stop(Option<i64>),
    /// `restart`.
    Restart(Option<i64>),
    /// `kill -s SIGNAL`.
    Kill(String),
    /// `pause`.
    Pause,
    /// `unpause`.
    Unpause,
    /// `rm` (with `-s` to stop first, `-v` for anonymous volumes).
    Remove {
        /// Stop running containers first.
        stop: bool,
        /// Remove anonymous volumes.
        volumes: bool,
    },
}

/// Plans a lifecycle command over the containers of `services` (all when empty),
/// skipping containers already in the wanted state. Starts follow dependency
/// order; stops go dependants first.
pub fn plan_lifecycle(
    project: &Project,
    observed: &Observed,
    services: &[String],
    command: &Lifecycle,
) -> Plan {
    let mut plan = Plan::default();
    let mut order = dependency_order(project);
    if matches!(
        command,
        Lifecycle::Stop(_) | Lifecycle::Remove { .. } | Lifecycle::Kill(_)
    ) {
        order.reverse();
    }
    let mut targets = target_containers(observed, services);
    let rank = |c: &Container| {
        let svc = c
            .labels
            .get(labels::SERVICE)
            .map(String::as_str)
            .unwrap_or("");
        order.iter().position(|n| n == svc).unwrap_or(usize::MAX)
    };
    targets.sort_by_key(|c| rank(c));
    let mut previous_service: Option<String> = None;
    let mut previous_ops: Vec<usize> = Vec::new();
    let mut current_ops: Vec<usize> = Vec::new();
    for c in targets {
        let service = c.labels.get(labels::SERVICE).cloned().unwrap_or_default();
        if previous_service.as_deref() != Some(service.as_str()) {
            previous_ops = std::mem::take(&mut current_ops);
            previous_service = Some(service.clone());
        }
        let running = matches!(
            c.state,
            ContainerState::Running | ContainerState::Restarting
        );
        let container = c.name.clone();
        let (action, applies) = match command {
            Lifecycle::Start => (
                Action::Start {
                    service: service.clone(),
                    container,
                },
                matches!(c.state, ContainerState::Created | ContainerState::Exited),
            ),
            Lifecycle::Stop(t) => (
                Action::Stop {
                    service: service.clone(),
                    container,
                    timeout: *t,
                },
                running || c.state == ContainerState::Paused,
            ),
            Lifecycle::Restart(t) => (
                Action::Restart {
                    service: service.clone(),
                    container,
                    timeout: *t,
                },
                true,
            ),
            Lifecycle::Kill(s) => (
                Action::Kill {
                    service: service.clone(),
                    container,
                    signal: s.clone(),
                },
                running,
            ),
            Lifecycle::Pause => (
                Action::Pause {
                    service: service.clone(),
                    container,
                },
                c.state == ContainerState::Running,
            ),
            Lifecycle::Unpause => (
                Action::Unpause {
                    service: service.clone(),
                    container,
                },
                c.state == ContainerState::Paused,
            ),
            Lifecycle::Remove { stop, volumes } => {
                let mut after = previous_ops.clone();
                if running || c.state == ContainerState::Paused {
                    if !*stop {
                        plan.notes.push(format!(
                            "container {} is running: use -s to stop it first",
                            c.name
                        ));
                        continue;
                    }
                    after.push(plan.push(
                        Action::Stop {
                            service: service.clone(),
                            container: c.name.clone(),
                            timeout: None,
                        },
                        "stop before removal",
                        previous_ops.clone(),
                    ));
                }
                current_ops.push(plan.push(
                    Action::Remove {
                        service: service.clone(),
                        container: c.name.clone(),
                        volumes: *volumes,
                    },
                    "removal requested",
                    after,
                ));
                continue;
            }
        };
        if !applies {
            continue;
        }
        let reason = format!("service {service}");
        current_ops.push(plan.push(action, reason, previous_ops.clone()));
    }
    plan.with_balancers(project, observed)
}
