//! Running a [`Plan`]: every operation whose prerequisites succeeded, in
//! parallel; an operation whose prerequisite failed is skipped, the rest go
//! on. The executor makes no decisions: everything it does is in the plan.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use runtime_shim::{ContainerState, Health, Runtime, RuntimeError};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use crate::balancer::{endpoints_of, CONTROL_SOCKET};
use crate::plan::{Action, BalancerTarget, Plan};

/// What happens to the operations of a plan, for the progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Operation `i` began.
    Started(usize),
    /// Operation `i` succeeded.
    Done(usize),
    /// Operation `i` failed, with the engine's reason.
    Failed(usize, String),
    /// Operation `i` was not run because a prerequisite failed.
    Skipped(usize),
    /// A line of output of operation `i` (a build's).
    Output(usize, String),
}

/// How a plan ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Failed operations and why.
    pub failures: Vec<(usize, String)>,
    /// Operations skipped because a prerequisite failed.
    pub skipped: Vec<usize>,
    /// Whether a failure came from the engine's state having changed since it
    /// was observed (an object already there, or gone): observing and planning
    /// again may succeed.
    pub stale: bool,
}

impl Outcome {
    /// Whether every operation succeeded.
    pub fn success(&self) -> bool {
        self.failures.is_empty() && self.skipped.is_empty()
    }
}

/// Limits of the waits in a plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecuteOptions {
    /// How long a wait for health or completion may last.
    pub wait_timeout: Option<Duration>,
}

/// An operation's result: the error message and whether it is stale state.
type OpResult = Result<(), (String, bool)>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

/// Runs `plan` on `runtime`, reporting progress on `events`.
pub async fn execute(
    runtime: Arc<dyn Runtime>,
    plan: &Plan,
    options: ExecuteOptions,
    events: UnboundedSender<Progress>,
) -> Outcome {
    let n = plan.ops.len();
    let mut state = vec![State::Pending; n];
    let mut outcome = Outcome::default();
    let mut running: JoinSet<(usize, OpResult)> = JoinSet::new();
    let mut tasks: std::collections::HashMap<tokio::task::Id, usize> =
        std::collections::HashMap::new();
    loop {
        // Launch what is ready; skip what can no longer run.
        let mut changed = true;
        while changed {
            changed = false;
            for i in 0..n {
                if state[i] != State::Pending {
                    continue;
                }
                let after = &plan.ops[i].after;
                if after
                    .iter()
                    .any(|&a| matches!(state.get(a), Some(State::Failed | State::Skipped)))
                {
                    state[i] = State::Skipped;
                    outcome.skipped.push(i);
                    let _ = events.send(Progress::Skipped(i));
                    changed = true;
                } else if after.iter().all(|&a| state.get(a) == Some(&State::Done)) {
                    state[i] = State::Running;
                    let _ = events.send(Progress::Started(i));
                    let action = plan.ops[i].action.clone();
                    let rt = runtime.clone();
                    let tx = events.clone();
                    let handle = running.spawn(async move {
                        (i, run(rt.as_ref(), &action, i, options, &tx).await)
                    });
                    tasks.insert(handle.id(), i);
                }
            }
        }
        let Some(joined) = running.join_next_with_id().await else {
            break;
        };
        let joined = joined.map(|(_, r)| r).map_err(|e| (e.id(), e));
        match joined {
            Ok((i, Ok(()))) => {
                state[i] = State::Done;
                let _ = events.send(Progress::Done(i));
            }
            Ok((i, Err((e, stale)))) => {
                state[i] = State::Failed;
                outcome.stale |= stale;
                outcome.failures.push((i, e.clone()));
                let _ = events.send(Progress::Failed(i, e));
            }
            Err((id, e)) => {
                // A panicked task: only its own operation failed.
                if let Some(&i) = tasks.get(&id) {
                    state[i] = State::Failed;
                    let message = format!("internal error: {e}");
                    outcome.failures.push((i, message.clone()));
                    let _ = events.send(Progress::Failed(i, message));
                }
            }
        }
    }
    outcome
}

async fn run(
    rt: &dyn Runtime,
    action: &Action,
    index: usize,
    options: ExecuteOptions,
    events: &UnboundedSender<Progress>,
) -> OpResult {
    let r: Result<(), RuntimeError> = match action {
        Action::CreateNetwork(spec) => rt.create_network(spec).await.map(|_| ()),
        Action::RemoveNetwork(name) => rt.remove_network(name).await,
        Action::CreateVolume(spec) => rt.create_volume(spec).await,
        Action::RemoveVolume(name) => rt.remove_volume(name).await,
        Action::Build { spec, .. } => match rt.build_image(spec).await {
            Ok(stream) => forward(stream, index, events).await,
            Err(e) => Err(e),
        },
        Action::Pull { image, .. } => match rt.pull_image(image).await {
            Ok(stream) => forward(stream, index, events).await,
            Err(e) => Err(e),
        },
        Action::RemoveImage(image) => rt.remove_image(image, false).await,
        Action::CreateContainer { spec, .. } => rt.create_container(spec).await.map(|_| ()),
        Action::Start { container, .. } => rt.start_container(container).await,
        Action::Stop {
            container, timeout, ..
        } => rt.stop_container(container, *timeout).await,
        Action::Restart {
            container, timeout, ..
        } => rt.restart_container(container, *timeout).await,
        Action::Update {
            container,
            resources,
            ..
        } => rt.update_container(container, resources).await,
        Action::Kill {
            container, signal, ..
        } => rt.kill_container(container, signal).await,
        Action::Pause { container, .. } => rt.pause_container(container).await,
        Action::Unpause { container, .. } => rt.unpause_container(container).await,
        Action::Remove {
            container, volumes, ..
        } => rt.remove_container(container, true, *volumes).await,
        Action::WaitHealthy {
            container,
            require_healthcheck,
            limit,
            ..
        } => wait_healthy(rt, container, *require_healthcheck, *limit, options).await,
        Action::Announce {
            container,
            balancer,
            ..
        } => {
            if let Err(e) = announce(rt, container, balancer).await {
                let _ = events.send(Progress::Output(index, format!("balancer not told: {e}")));
            }
            Ok(())
        }
        Action::Drain {
            container,
            balancer,
            ..
        } => {
            if let Err(e) = drain(rt, container, balancer).await {
                let _ = events.send(Progress::Output(index, format!("balancer not told: {e}")));
            }
            Ok(())
        }
        Action::WaitCompleted { container, .. } => match rt.wait_container(container).await {
            Ok(0) => Ok(()),
            Ok(code) => Err(RuntimeError::Engine(format!(
                "container {container} exited with code {code}"
            ))),
            Err(e) => Err(e),
        },
    };
    match r {
        Err(e) if action.already_done(&e) => Ok(()),
        Err(e) => {
            let stale = matches!(
                e,
                RuntimeError::NotFound { .. } | RuntimeError::Conflict { .. }
            );
            Err((e.to_string(), stale))
        }
        Ok(()) => Ok(()),
    }
}

/// Passes the output lines of a build or a pull on as progress, until the
/// stream ends or reports an error.
async fn forward(
    mut stream: runtime_shim::BoxStream<String>,
    index: usize,
    events: &UnboundedSender<Progress>,
) -> Result<(), RuntimeError> {
    while let Some(item) = stream.next().await {
        let _ = events.send(Progress::Output(index, item?));
    }
    Ok(())
}

/// Polls a container until it is healthy (or running, without a health
/// check), for at most `limit` and `--wait-timeout`; with a `limit`, a
/// container restarting by its policy has failed.
async fn wait_healthy(
    rt: &dyn Runtime,
    container: &str,
    require_healthcheck: bool,
    limit: Option<Duration>,
    options: ExecuteOptions,
) -> Result<(), RuntimeError> {
    let start = tokio::time::Instant::now();
    let limit = match (limit, options.wait_timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut delay = Duration::from_millis(50);
    loop {
        let d = rt.inspect_container(container).await?;
        match (d.container.state, d.health) {
            (_, Health::Healthy) => return Ok(()),
            (ContainerState::Running, Health::None) if !require_healthcheck => return Ok(()),
            (_, Health::None) if require_healthcheck => {
                return Err(RuntimeError::Engine(format!(
                    "container {container} has no healthcheck configured"
                )))
            }
            (_, Health::Unhealthy) => {
                return Err(RuntimeError::Engine(format!(
                    "container {container} is unhealthy"
                )))
            }
            (ContainerState::Exited, _) => {
                return Err(RuntimeError::Engine(format!(
                    "container {container} exited ({})",
                    d.exit_code
                )))
            }
            (ContainerState::Restarting, _) if limit.is_some() => {
                return Err(RuntimeError::Engine(format!(
                    "container {container} is restarting ({})",
                    d.exit_code
                )))
            }
            _ => {}
        }
        if let Some(limit) = limit {
            if start.elapsed() > limit {
                return Err(RuntimeError::Engine(format!(
                    "timeout waiting for container {container} to be healthy"
                )));
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// How long a balancer may take to drain a container: requests in flight
/// finish first (the balancer gives up after its server timeout and grace).
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// A control client for a running balancer: its control socket, in the
/// host directory that is bind-mounted into its container.
fn control(balancer: &BalancerTarget) -> Result<lb::ControlClient, String> {
    let dir = balancer
        .spec
        .control_dir
        .as_deref()
        .ok_or_else(|| format!("balancer {} has no control directory", balancer.container))?;
    Ok(lb::ControlClient::unix(
        std::path::Path::new(dir).join(CONTROL_SOCKET),
        DRAIN_LIMIT,
    ))
}

/// Puts a started container's endpoints in the balancer's rotation (unless
/// its image's own healthcheck has not passed yet: the balancer then takes
/// it from the engine's events once healthy).
async fn announce(
    rt: &dyn Runtime,
    container: &str,
    balancer: &BalancerTarget,
) -> Result<(), String> {
    let details = rt
        .inspect_container(container)
        .await
        .map_err(|e| e.to_string())?;
    if matches!(details.health, Health::Starting | Health::Unhealthy) {
        return Ok(());
    }
    let changes: Vec<lb::Change> = endpoints_of(&balancer.spec, &details)
        .into_iter()
        .map(|(backend, endpoint)| lb::Change::Add { backend, endpoint })
        .collect();
    if changes.is_empty() {
        return Ok(());
    }
    let client = control(balancer)?;
    // A balancer that has just started may not listen on its control
    // socket yet.
    let deadline = tokio::time::Instant::now() + CONTROL_WAIT;
    let mut delay = Duration::from_millis(20);
    loop {
        match client.apply(&changes).await {
            Ok(_) => return Ok(()),
            Err(e @ lb::ControlError::Refused { .. }) => return Err(e.to_string()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(250));
            }
        }
    }
}

/// How long an announcement waits for a balancer's control socket.
const CONTROL_WAIT: Duration = Duration::from_secs(10);

/// Drains a container's endpoints in the balancer (every endpoint on one
/// of its addresses, however the balancer learnt of it), all at once, and
/// waits until they are drained.
async fn drain(rt: &dyn Runtime, container: &str, balancer: &BalancerTarget) -> Result<(), String> {
    let details = rt
        .inspect_container(container)
        .await
        .map_err(|e| e.to_string())?;
    let ips: Vec<std::net::IpAddr> = details
        .addresses
        .values()
        .filter_map(|a| a.parse().ok())
        .collect();
    let client = control(balancer)?;
    let state = client.state().await.map_err(|e| e.to_string())?;
    let mut drains = JoinSet::new();
    for b in state.backends {
        for e in b
            .endpoints
            .into_iter()
            .filter(|e| ips.contains(&e.addr.ip()))
        {
            let client = client.clone();
            let backend = b.name.clone();
            drains.spawn(async move { client.drain(&backend, &e.id).await });
        }
    }
    while let Some(done) = drains.join_next().await {
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}
