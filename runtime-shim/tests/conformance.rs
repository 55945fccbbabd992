//! One conformance suite for every runtime: the same cases, written against
//! `&dyn Engine`, run on the in-memory fake always, on the Docker Engine
//! when its socket answers, and on the native runtime when the tests run as
//! root with runc (in a state root of the test's own, removed after).
//!
//! Each runtime gets one test, which runs every case and prints one line,
//! `conformance: <runtime> N passed, M failed` (written to the process's
//! standard output directly, so that `cargo test` shows it), then the
//! failures. A case that cannot apply to a runtime (the fake runs no
//! processes) is counted apart, with the reason. Nothing can be pulled on
//! the test machines: the image is built from the static busybox of
//! Debian's `busybox-static` package. Every case names what it makes after
//! the process id and the case, and removes it whatever the outcome.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rcompose_tests::{docker_available, is_root, require};
use runtime_shim::docker::DockerRuntime;
use runtime_shim::fake::FakeRuntime;
use runtime_shim::{
    BoxStream, BuildSpec, ContainerDetails, ContainerEvent, ContainerSpec, ContainerState, Engine,
    EventKind, ExecSpec, Health, HealthTest, HealthcheckSpec, LabelFilter, LogLine, LogOptions,
    Mount, NetworkAttachment, NetworkSpec, RestartPolicy, RuntimeError, VolumeSpec,
};
use tokio::io::AsyncWriteExt;
use tokio::time::{timeout, Instant};

const BUSYBOX: &str = "/bin/busybox";
/// How long anything a case waits for may take.
const DEADLINE: Duration = Duration::from_secs(60);
/// Cases run at the same time on one runtime.
const PARALLEL: usize = 4;

/// A runtime under test.
struct Subject {
    name: &'static str,
    rt: Arc<dyn Engine>,
    /// The busybox image, built through the runtime itself.
    image: String,
    /// Whether containers run real processes (output, files, exit codes).
    processes: bool,
}

/// What a case made, removed after it whatever happened.
#[derive(Default)]
struct Made {
    containers: Vec<String>,
    networks: Vec<String>,
    volumes: Vec<String>,
}

impl Made {
    async fn clean(self, rt: &dyn Engine) {
        for c in &self.containers {
            let _ = rt.remove_container(c, true, true).await;
        }
        for n in &self.networks {
            let _ = rt.remove_network(n).await;
        }
        for v in &self.volumes {
            let _ = rt.remove_volume(v).await;
        }
    }
}

/// An error as a case's failure message.
trait Msg<T> {
    fn msg(self) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Msg<T> for Result<T, E> {
    fn msg(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

type Outcome = Result<(), String>;
type CaseFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One case: its name, whether it needs real processes, and its body.
struct Case {
    name: &'static str,
    needs_processes: bool,
    run: for<'a> fn(&'a Subject, &'a mut Made, String) -> CaseFuture<'a>,
}

macro_rules! case {
    ($f:ident) => {
        Case {
            name: stringify!($f),
            needs_processes: false,
            run: |s, m, n| Box::pin($f(s, m, n)),
        }
    };
    ($f:ident, processes) => {
        Case {
            name: stringify!($f),
            needs_processes: true,
            run: |s, m, n| Box::pin($f(s, m, n)),
        }
    };
}

/// Fails the case with a message when `cond` is false.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn cases() -> Vec<Case> {
    vec![
        case!(missing_objects_are_not_found),
        case!(names_and_images_are_checked_at_create),
        case!(a_container_goes_through_its_states),
        case!(removing_a_running_container_needs_force),
        case!(wait_returns_when_the_container_stops),
        case!(events_come_in_order_and_filtered_by_label),
        case!(labels_select_containers),
        case!(networks_are_created_listed_and_removed),
        case!(volumes_are_created_shared_and_removed),
        case!(a_container_joins_every_network_of_its_spec),
        case!(exec_in_a_stopped_container_is_refused),
        case!(exit_codes_are_reported_by_wait_and_inspect, processes),
        case!(a_container_gets_what_its_spec_says, processes),
        case!(restart_policies_restart_what_they_say, processes),
        case!(healthchecks_turn_healthy_and_unhealthy, processes),
        case!(
            logs_separate_streams_and_honour_tail_since_follow,
            processes
        ),
        case!(exec_streams_input_output_and_exit_code, processes),
        case!(attach_carries_input_and_output, processes),
        case!(containers_reach_each_other_by_alias, processes),
        case!(named_volumes_keep_data_between_containers, processes),
        case!(files_are_copied_in_and_out, processes),
        case!(stats_and_top_see_the_processes, processes),
    ]
}

// ---------------------------------------------------------------------------
// Helpers

fn name(prefix: &str, what: &str) -> String {
    format!("{prefix}-{what}")
}

/// A container of the test image running `script` with `sh -c`; a stop
/// ends it at once with code 0.
fn shell(s: &Subject, name: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: s.image.clone(),
        entrypoint: Some(vec![]),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            format!("trap 'exit 0' TERM; {script}"),
        ]),
        ..Default::default()
    }
}

/// A container that runs until stopped.
fn idle(s: &Subject, name: &str) -> ContainerSpec {
    shell(s, name, "sleep 300 & wait")
}

/// Waits until an idle container's shell has set its trap (its `sleep`
/// runs): a stop sent before that finds PID 1 with no handler, which the
/// kernel does not end with SIGTERM.
async fn settled(s: &Subject, id: &str) -> Result<(), String> {
    if !s.processes {
        return Ok(());
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok((_, rows)) = s.rt.top(id).await {
            if rows.iter().flatten().any(|c| c.contains("sleep")) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("container {id}: its sleep never ran"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create(s: &Subject, made: &mut Made, spec: &ContainerSpec) -> Result<String, String> {
    made.containers.push(spec.name.clone());
    s.rt.create_container(spec)
        .await
        .map_err(|e| format!("create {}: {e}", spec.name))
}

async fn run(s: &Subject, made: &mut Made, spec: &ContainerSpec) -> Result<String, String> {
    let id = create(s, made, spec).await?;
    s.rt.start_container(&id)
        .await
        .map_err(|e| format!("start {}: {e}", spec.name))?;
    Ok(id)
}

async fn inspect(s: &Subject, id: &str) -> Result<ContainerDetails, String> {
    s.rt.inspect_container(id)
        .await
        .map_err(|e| format!("inspect {id}: {e}"))
}

/// Waits until `check` holds for the container's details.
async fn until(
    s: &Subject,
    id: &str,
    what: &str,
    check: impl Fn(&ContainerDetails) -> bool,
) -> Result<ContainerDetails, String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let d = inspect(s, id).await?;
        if check(&d) {
            return Ok(d);
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: not reached in time; last seen {d:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Seconds since the epoch, an hour from now.
fn in_an_hour() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(now).unwrap_or(i64::MAX) + 3600
}

fn is_not_found<T: std::fmt::Debug>(r: &runtime_shim::Result<T>, kind: &str) -> bool {
    matches!(r, Err(RuntimeError::NotFound { kind: k, .. }) if *k == kind)
}

fn is_refused<T: std::fmt::Debug>(r: &runtime_shim::Result<T>) -> bool {
    matches!(r, Err(RuntimeError::Engine(_)))
}

/// Reads a stream of output to its end: (stdout, stderr).
async fn read_all(mut stream: BoxStream<LogLine>) -> Result<(String, String), String> {
    let (mut out, mut err) = (String::new(), String::new());
    loop {
        match timeout(DEADLINE, stream.next()).await {
            Err(_) => {
                return Err(format!(
                    "output did not end in time; so far {out:?} {err:?}"
                ))
            }
            Ok(None) => return Ok((out, err)),
            Ok(Some(Err(e))) => return Err(format!("output: {e}")),
            Ok(Some(Ok(line))) if line.stderr => err.push_str(&line.text),
            Ok(Some(Ok(line))) => out.push_str(&line.text),
        }
    }
}

async fn logs(s: &Subject, id: &str, options: LogOptions) -> Result<(String, String), String> {
    let stream =
        s.rt.logs(id, &options)
            .await
            .map_err(|e| format!("logs: {e}"))?;
    read_all(stream).await
}

/// Runs a command in a running container: (stdout, stderr, exit code).
async fn exec(s: &Subject, id: &str, command: &[&str]) -> Result<(String, String, i64), String> {
    let spec = ExecSpec {
        command: command.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    };
    let mut session =
        s.rt.exec(id, &spec)
            .await
            .map_err(|e| format!("exec {command:?}: {e}"))?;
    let (out, err) = match session.output.take() {
        Some(output) => read_all(output).await?,
        None => Default::default(),
    };
    let code = timeout(DEADLINE, session.process.wait())
        .await
        .map_err(|_| format!("exec {command:?} did not end in time"))?
        .map_err(|e| format!("exec {command:?}: {e}"))?;
    Ok((out, err, code))
}

// ---------------------------------------------------------------------------
// Cases that every runtime must pass

async fn missing_objects_are_not_found(s: &Subject, _: &mut Made, p: String) -> Outcome {
    let ghost = name(&p, "ghost");
    let r = s.rt.inspect_container(&ghost).await;
    ensure!(is_not_found(&r, "container"), "inspect: {r:?}");
    let r = s.rt.start_container(&ghost).await;
    ensure!(is_not_found(&r, "container"), "start: {r:?}");
    let r = s.rt.stop_container(&ghost, Some(1)).await;
    ensure!(is_not_found(&r, "container"), "stop: {r:?}");
    let r = s.rt.kill_container(&ghost, "SIGKILL").await;
    ensure!(is_not_found(&r, "container"), "kill: {r:?}");
    let r = s.rt.remove_container(&ghost, true, false).await;
    ensure!(is_not_found(&r, "container"), "remove: {r:?}");
    let r = s.rt.wait_container(&ghost).await;
    ensure!(is_not_found(&r, "container"), "wait: {r:?}");
    let r = s.rt.logs(&ghost, &LogOptions::default()).await.map(|_| ());
    ensure!(is_not_found(&r, "container"), "logs: {r:?}");
    let r = s.rt.remove_network(&ghost).await;
    ensure!(is_not_found(&r, "network"), "remove network: {r:?}");
    let r = s.rt.remove_volume(&ghost).await;
    ensure!(is_not_found(&r, "volume"), "remove volume: {r:?}");
    let r = s.rt.inspect_network(&ghost).await;
    ensure!(matches!(r, Ok(None)), "inspect network: {r:?}");
    let r = s.rt.inspect_volume(&ghost).await;
    ensure!(matches!(r, Ok(None)), "inspect volume: {r:?}");
    let r = s.rt.inspect_image(&format!("{ghost}:0")).await;
    ensure!(matches!(r, Ok(None)), "inspect image: {r:?}");
    Ok(())
}

async fn names_and_images_are_checked_at_create(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let spec = idle(s, &name(&p, "one"));
    let id = create(s, m, &spec).await?;
    let r = s.rt.create_container(&spec).await;
    ensure!(
        matches!(&r, Err(RuntimeError::Conflict { kind: "container", name }) if *name == spec.name),
        "the same name again: {r:?}"
    );
    let mut no_image = idle(s, &name(&p, "no-image"));
    no_image.image = format!("{}:0", name(&p, "no-such-image"));
    m.containers.push(no_image.name.clone());
    let r = s.rt.create_container(&no_image).await;
    ensure!(is_not_found(&r, "image"), "a missing image: {r:?}");
    let mut no_net = idle(s, &name(&p, "no-net"));
    no_net.networks = vec![NetworkAttachment {
        network: name(&p, "no-such-net"),
        ..Default::default()
    }];
    m.containers.push(no_net.name.clone());
    // At create, or at the latest at start (an engine may take the name
    // of a network it has not got until then).
    let r = match s.rt.create_container(&no_net).await {
        Ok(id) => s.rt.start_container(&id).await,
        Err(e) => Err(e),
    };
    ensure!(is_not_found(&r, "network"), "a missing network: {r:?}");
    let d = inspect(s, &id).await?;
    ensure!(
        d.container.id == id,
        "inspect by id gives {}",
        d.container.id
    );
    ensure!(d.container.name == spec.name, "name {}", d.container.name);
    let by_name = inspect(s, &spec.name).await?;
    ensure!(by_name.container.id == id, "inspect by name");
    ensure!(
        d.container.state == ContainerState::Created,
        "state {:?}",
        d.container.state
    );
    let image = s.rt.inspect_image(&s.image).await.msg()?;
    let image = image.ok_or("the test image is not there")?;
    ensure!(
        d.container.image_id == image.id,
        "image id {} (image is {})",
        d.container.image_id,
        image.id
    );
    Ok(())
}

async fn a_container_goes_through_its_states(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let id = run(s, m, &idle(s, &name(&p, "c"))).await?;
    let state = |d: &ContainerDetails| d.container.state;
    ensure!(
        state(&inspect(s, &id).await?) == ContainerState::Running,
        "started"
    );
    s.rt.start_container(&id)
        .await
        .map_err(|e| format!("starting a running container is no error: {e}"))?;
    s.rt.pause_container(&id).await.msg()?;
    ensure!(
        state(&inspect(s, &id).await?) == ContainerState::Paused,
        "paused"
    );
    let r = s.rt.pause_container(&id).await;
    ensure!(is_refused(&r), "pausing twice: {r:?}");
    s.rt.unpause_container(&id).await.msg()?;
    let r = s.rt.unpause_container(&id).await;
    ensure!(is_refused(&r), "unpausing a running container: {r:?}");
    settled(s, &id).await?;
    s.rt.stop_container(&id, Some(5)).await.msg()?;
    let d = inspect(s, &id).await?;
    ensure!(state(&d) == ContainerState::Exited, "stopped: {d:?}");
    ensure!(
        d.exit_code == 0,
        "a stop it traps ends with 0: {}",
        d.exit_code
    );
    s.rt.stop_container(&id, Some(5))
        .await
        .map_err(|e| format!("stopping a stopped container is no error: {e}"))?;
    let r = s.rt.kill_container(&id, "SIGKILL").await;
    ensure!(is_refused(&r), "killing a stopped container: {r:?}");
    let r = s.rt.pause_container(&id).await;
    ensure!(is_refused(&r), "pausing a stopped container: {r:?}");
    s.rt.start_container(&id).await.msg()?;
    ensure!(
        state(&inspect(s, &id).await?) == ContainerState::Running,
        "started again"
    );
    s.rt.restart_container(&id, Some(5)).await.msg()?;
    ensure!(
        state(&inspect(s, &id).await?) == ContainerState::Running,
        "restarted"
    );
    s.rt.kill_container(&id, "SIGKILL").await.msg()?;
    let d = until(s, &id, "killed", |d| {
        d.container.state == ContainerState::Exited
    })
    .await?;
    ensure!(d.exit_code == 137, "SIGKILL ends with 137: {}", d.exit_code);
    Ok(())
}

async fn removing_a_running_container_needs_force(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let id = run(s, m, &idle(s, &name(&p, "c"))).await?;
    let r = s.rt.remove_container(&id, false, false).await;
    ensure!(is_refused(&r), "removing a running container: {r:?}");
    ensure!(
        inspect(s, &id).await?.container.state == ContainerState::Running,
        "still running after a refused remove"
    );
    s.rt.remove_container(&id, true, true).await.msg()?;
    let r = s.rt.inspect_container(&id).await;
    ensure!(is_not_found(&r, "container"), "removed: {r:?}");
    let id = create(s, m, &idle(s, &name(&p, "created"))).await?;
    s.rt.remove_container(&id, false, false)
        .await
        .map_err(|e| format!("a created container needs no force: {e}"))?;
    Ok(())
}

async fn wait_returns_when_the_container_stops(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let created = create(s, m, &idle(s, &name(&p, "created"))).await?;
    let r = timeout(DEADLINE, s.rt.wait_container(&created)).await;
    ensure!(
        matches!(r, Ok(Ok(0))),
        "waiting for a container never started returns at once: {r:?}"
    );
    let id = run(s, m, &idle(s, &name(&p, "c"))).await?;
    let rt = s.rt.clone();
    let waiting = {
        let id = id.clone();
        tokio::spawn(async move { rt.wait_container(&id).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        !waiting.is_finished(),
        "wait returned while the container runs"
    );
    s.rt.kill_container(&id, "SIGKILL").await.msg()?;
    let code = timeout(DEADLINE, waiting)
        .await
        .map_err(|_| "wait did not return after the kill".to_string())?
        .msg()?
        .msg()?;
    ensure!(code == 137, "wait after SIGKILL: {code}");
    Ok(())
}

async fn events_come_in_order_and_filtered_by_label(
    s: &Subject,
    m: &mut Made,
    p: String,
) -> Outcome {
    let filter = [LabelFilter::equals("rcs.conformance", &p)];
    let mut events = s.rt.events(&filter).await.msg()?;
    let other = run(s, m, &idle(s, &name(&p, "other"))).await?;
    let mut spec = idle(s, &name(&p, "watched"));
    spec.labels = BTreeMap::from([("rcs.conformance".to_string(), p.clone())]);
    let id = run(s, m, &spec).await?;
    settled(s, &id).await?;
    s.rt.stop_container(&id, Some(5)).await.msg()?;
    s.rt.remove_container(&id, false, false).await.msg()?;
    let mut seen: Vec<ContainerEvent> = Vec::new();
    while !seen.iter().any(|e| e.kind == EventKind::Removed) {
        let e = match timeout(DEADLINE, events.next()).await {
            Ok(Some(Ok(e))) => e,
            other => {
                let kinds: Vec<_> = seen.iter().map(|e| &e.kind).collect();
                return Err(format!("events ended early ({other:?}); saw {kinds:?}"));
            }
        };
        ensure!(
            e.id != other,
            "an unlabelled container's event passed the filter"
        );
        ensure!(e.id == id, "an event of another container: {e:?}");
        ensure!(e.name == spec.name, "event name {}", e.name);
        ensure!(
            e.labels.get("rcs.conformance") == Some(&p),
            "event labels {:?}",
            e.labels
        );
        seen.push(e);
    }
    let kinds: Vec<&EventKind> = seen.iter().map(|e| &e.kind).collect();
    let at = |want: fn(&EventKind) -> bool| kinds.iter().position(|k| want(k));
    let created = at(|k| *k == EventKind::Created);
    let started = at(|k| *k == EventKind::Started);
    let died = at(|k| matches!(k, EventKind::Died { exit_code: 0 }));
    let removed = at(|k| *k == EventKind::Removed);
    ensure!(
        matches!((created, started, died, removed), (Some(a), Some(b), Some(c), Some(d)) if a < b && b < c && c < d),
        "created, started, died (0), removed in this order: {kinds:?}"
    );
    let times: Vec<i64> = seen.iter().map(|e| e.time_nanos).collect();
    ensure!(
        times.windows(2).all(|w| w[0] <= w[1]) && times[0] > 1_600_000_000_000_000_000,
        "event times: {times:?}"
    );
    Ok(())
}

async fn labels_select_containers(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let key = "rcs.conformance.select";
    let labelled = |n: &str, value: &str| {
        let mut spec = idle(s, &name(&p, n));
        spec.labels = BTreeMap::from([(key.to_string(), value.to_string())]);
        spec
    };
    let a = run(s, m, &labelled("a", &format!("{p}-1"))).await?;
    let b = run(s, m, &labelled("b", &format!("{p}-2"))).await?;
    let c = create(s, m, &labelled("c", &format!("{p}-1"))).await?;
    let ids = |list: Vec<runtime_shim::Container>| {
        let mut ids: Vec<String> = list.into_iter().map(|c| c.id).collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let one = [LabelFilter::equals(key, format!("{p}-1"))];
    let running = ids(s.rt.list_containers(&one, false).await.msg()?);
    ensure!(
        running == vec![a.clone()],
        "running with {key}={p}-1: {running:?}"
    );
    let all = ids(s.rt.list_containers(&one, true).await.msg()?);
    ensure!(
        all == sorted(vec![a.clone(), c.clone()]),
        "all with {key}={p}-1: {all:?}"
    );
    let listed = s.rt.list_containers(&one, true).await.msg()?;
    ensure!(
        listed
            .iter()
            .all(|c| c.labels.get(key) == Some(&format!("{p}-1"))),
        "labels as listed: {listed:?}"
    );
    let both = [
        LabelFilter::has(key),
        LabelFilter::equals("rcs.conformance.none", "x"),
    ];
    let none = s.rt.list_containers(&both, true).await.msg()?;
    ensure!(none.is_empty(), "every filter must match: {none:?}");
    let any: Vec<String> = ids(s
        .rt
        .list_containers(&[LabelFilter::has(key)], true)
        .await
        .msg()?)
    .into_iter()
    .filter(|id| [&a, &b, &c].contains(&id))
    .collect();
    ensure!(any.len() == 3, "has({key}) finds all three: {any:?}");
    Ok(())
}

async fn networks_are_created_listed_and_removed(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let net = name(&p, "net");
    m.networks.push(net.clone());
    let spec = NetworkSpec {
        name: net.clone(),
        labels: BTreeMap::from([("rcs.conformance".to_string(), p.clone())]),
        ..Default::default()
    };
    let id = s.rt.create_network(&spec).await.msg()?;
    ensure!(!id.is_empty(), "a network id");
    let r = s.rt.create_network(&spec).await;
    ensure!(
        matches!(
            r,
            Err(RuntimeError::Conflict {
                kind: "network",
                ..
            })
        ),
        "the same network again: {r:?}"
    );
    let found = s.rt.inspect_network(&net).await.msg()?;
    let found = found.ok_or("created network not found")?;
    ensure!(
        found.name == net && found.labels == spec.labels,
        "{found:?}"
    );
    let listed =
        s.rt.list_networks(&[LabelFilter::equals("rcs.conformance", &p)])
            .await
            .msg()?;
    ensure!(
        listed.iter().map(|n| n.name.as_str()).collect::<Vec<_>>() == vec![net.as_str()],
        "listed by label: {listed:?}"
    );
    let mut c = idle(s, &name(&p, "c"));
    c.networks = vec![NetworkAttachment {
        network: net.clone(),
        ..Default::default()
    }];
    let cid = run(s, m, &c).await?;
    let r = s.rt.remove_network(&net).await;
    ensure!(is_refused(&r), "removing a network in use: {r:?}");
    s.rt.remove_container(&cid, true, false).await.msg()?;
    s.rt.remove_network(&net).await.msg()?;
    let gone = s.rt.inspect_network(&net).await.msg()?;
    ensure!(gone.is_none(), "removed network still there: {gone:?}");
    Ok(())
}

async fn volumes_are_created_shared_and_removed(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let vol = name(&p, "vol");
    m.volumes.push(vol.clone());
    let spec = VolumeSpec {
        name: vol.clone(),
        labels: BTreeMap::from([("rcs.conformance".to_string(), p.clone())]),
        ..Default::default()
    };
    s.rt.create_volume(&spec).await.msg()?;
    s.rt.create_volume(&spec)
        .await
        .map_err(|e| format!("creating an existing volume is no error: {e}"))?;
    let found = s.rt.inspect_volume(&vol).await.msg()?;
    let found = found.ok_or("created volume not found")?;
    ensure!(found.driver == "local", "driver {}", found.driver);
    ensure!(found.labels == spec.labels, "labels {:?}", found.labels);
    let mut c = idle(s, &name(&p, "c"));
    c.mounts = vec![Mount::Volume {
        source: vol.clone(),
        target: "/data".into(),
        read_only: false,
        nocopy: false,
        subpath: String::new(),
    }];
    let cid = create(s, m, &c).await?;
    let r = s.rt.remove_volume(&vol).await;
    ensure!(is_refused(&r), "removing a volume in use: {r:?}");
    s.rt.remove_container(&cid, true, false).await.msg()?;
    s.rt.remove_volume(&vol).await.msg()?;
    let r = s.rt.remove_volume(&vol).await;
    ensure!(is_not_found(&r, "volume"), "removing it again: {r:?}");
    Ok(())
}

async fn a_container_joins_every_network_of_its_spec(
    s: &Subject,
    m: &mut Made,
    p: String,
) -> Outcome {
    let nets = [name(&p, "front"), name(&p, "back")];
    for n in &nets {
        m.networks.push(n.clone());
        s.rt.create_network(&NetworkSpec {
            name: n.clone(),
            ..Default::default()
        })
        .await
        .msg()?;
    }
    let mut c = idle(s, &name(&p, "c"));
    c.networks = nets
        .iter()
        .map(|n| NetworkAttachment {
            network: n.clone(),
            aliases: vec!["svc".into()],
            ..Default::default()
        })
        .collect();
    let id = create(s, m, &c).await?;
    let mut want = nets.to_vec();
    want.sort();
    let d = inspect(s, &id).await?;
    let mut have = d.container.networks.clone();
    have.sort();
    ensure!(have == want, "networks after create: {have:?}");
    s.rt.start_container(&id).await.msg()?;
    if s.processes {
        let d = inspect(s, &id).await?;
        for n in &nets {
            ensure!(
                d.addresses.get(n).is_some_and(|a| !a.is_empty()),
                "an address on {n}: {:?}",
                d.addresses
            );
        }
    }
    Ok(())
}

async fn exec_in_a_stopped_container_is_refused(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let id = create(s, m, &idle(s, &name(&p, "c"))).await?;
    let spec = ExecSpec {
        command: vec!["true".into()],
        ..Default::default()
    };
    let r = s.rt.exec(&id, &spec).await.map(|_| ());
    ensure!(is_refused(&r), "exec in a created container: {r:?}");
    let r = s.rt.exec(&name(&p, "ghost"), &spec).await.map(|_| ());
    ensure!(
        is_not_found(&r, "container"),
        "exec in a missing container: {r:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Cases that need containers running real processes

async fn exit_codes_are_reported_by_wait_and_inspect(
    s: &Subject,
    m: &mut Made,
    p: String,
) -> Outcome {
    let id = run(s, m, &shell(s, &name(&p, "c"), "exit 3")).await?;
    let code = timeout(DEADLINE, s.rt.wait_container(&id))
        .await
        .map_err(|_| "wait in time".to_string())?
        .msg()?;
    ensure!(code == 3, "wait: {code}");
    let d = inspect(s, &id).await?;
    ensure!(d.exit_code == 3, "inspect: {}", d.exit_code);
    ensure!(d.container.state == ContainerState::Exited, "{d:?}");
    Ok(())
}

async fn a_container_gets_what_its_spec_says(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let dir = std::env::temp_dir().join(name(&p, "bind"));
    let created = std::env::temp_dir().join(name(&p, "created"));
    let _ = std::fs::remove_dir_all(&created);
    std::fs::create_dir_all(&dir).msg()?;
    std::fs::write(dir.join("bound.txt"), "bound\n").msg()?;
    let outcome = spec_is_honoured(s, m, &p, &dir, &created).await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&created);
    outcome
}

async fn spec_is_honoured(
    s: &Subject,
    m: &mut Made,
    p: &str,
    dir: &Path,
    created: &Path,
) -> Outcome {
    let net = name(p, "net");
    m.networks.push(net.clone());
    s.rt.create_network(&NetworkSpec {
        name: net.clone(),
        ..Default::default()
    })
    .await
    .msg()?;
    let bind = |source: &Path, target: &str, read_only, create_host_path| Mount::Bind {
        source: source.display().to_string(),
        target: target.into(),
        read_only,
        create_host_path,
        propagation: String::new(),
        selinux: String::new(),
    };
    let script = "echo ok > /scratch/index.html; httpd -p 8080 -h /scratch; sleep 300 & wait";
    let mut spec = shell(s, &name(p, "c"), script);
    spec.env = vec!["FOO=bar".into()];
    spec.hostname = "rcs-host".into();
    spec.working_dir = "/scratch".into();
    spec.mounts = vec![
        bind(dir, "/data", true, false),
        bind(created, "/created", false, true),
        Mount::Tmpfs {
            target: "/scratch".into(),
            size: 1 << 20,
            mode: 0o1777,
        },
    ];
    spec.ports = vec![runtime_shim::PortBinding {
        container_port: 8080,
        protocol: runtime_shim::Protocol::Tcp,
        host_ip: "127.0.0.1".into(),
        host_port: runtime_shim::HostPort::Any,
    }];
    spec.networks = vec![NetworkAttachment {
        network: net,
        mac_address: "02:42:ac:11:99:01".into(),
        ..Default::default()
    }];
    let id = run(s, m, &spec).await?;
    let (out, _, _) = exec(
        s,
        &id,
        &[
            "sh",
            "-c",
            "echo $FOO; hostname; pwd; cat /data/bound.txt; cat /sys/class/net/eth0/address; touch /data/x || echo read-only",
        ],
    )
    .await?;
    ensure!(
        out == "bar\nrcs-host\n/scratch\nbound\n02:42:ac:11:99:01\nread-only\n",
        "inside: {out:?}"
    );
    ensure!(
        created.is_dir(),
        "create_host_path made {}",
        created.display()
    );
    let (_, _, code) = exec(s, &id, &["sh", "-c", "df /scratch | grep -q tmpfs"]).await?;
    ensure!(code == 0, "/scratch is a tmpfs");
    let d = inspect(s, &id).await?;
    let port = d
        .container
        .ports
        .iter()
        .find(|p| p.container_port == 8080 && p.host_port != 0)
        .ok_or(format!("published port: {:?}", d.container.ports))?;
    ensure!(port.host_ip == "127.0.0.1", "host ip {}", port.host_ip);
    let addr = format!("127.0.0.1:{}", port.host_port);
    let deadline = Instant::now() + DEADLINE;
    loop {
        match fetch(&addr).await {
            Ok(body) if body.ends_with("ok\n") => break,
            other => ensure!(Instant::now() < deadline, "GET {addr}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// `GET /` on the host, the whole answer.
async fn fetch(addr: &str) -> Result<String, String> {
    use tokio::io::AsyncReadExt;
    let mut conn = tokio::net::TcpStream::connect(addr).await.msg()?;
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await.msg()?;
    let mut answer = String::new();
    timeout(Duration::from_secs(5), conn.read_to_string(&mut answer))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .msg()?;
    Ok(answer)
}

async fn restart_policies_restart_what_they_say(s: &Subject, m: &mut Made, p: String) -> Outcome {
    // on-failure:2 runs the failing command three times, then stays down.
    let mut spec = shell(s, &name(&p, "fails"), "echo run; exit 1");
    spec.restart = Some(RestartPolicy::OnFailure {
        max_retries: Some(2),
    });
    let id = run(s, m, &spec).await?;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (out, _) = logs(s, &id, LogOptions::default()).await?;
        let runs = out.lines().filter(|l| *l == "run").count();
        let d = inspect(s, &id).await?;
        if runs == 3 && d.container.state == ContainerState::Exited && !d.restarting {
            ensure!(d.exit_code == 1, "exit code {}", d.exit_code);
            break;
        }
        ensure!(runs <= 3, "more than 1 + 2 runs: {runs}");
        ensure!(
            Instant::now() < deadline,
            "3 runs then exited: saw {runs}, {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No policy: a failure stays down.
    let id = run(s, m, &shell(s, &name(&p, "once"), "echo run; exit 1")).await?;
    s.rt.wait_container(&id).await.msg()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (out, _) = logs(s, &id, LogOptions::default()).await?;
    ensure!(out == "run\n", "no restart without a policy: {out:?}");
    // always: a clean exit restarts too; a stop by the user does not.
    let mut spec = shell(s, &name(&p, "always"), "echo run; sleep 0.2; exit 0");
    spec.restart = Some(RestartPolicy::Always);
    let id = run(s, m, &spec).await?;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (out, _) = logs(s, &id, LogOptions::default()).await?;
        if out.lines().filter(|l| *l == "run").count() >= 2 {
            break;
        }
        ensure!(Instant::now() < deadline, "always restarts: {out:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.rt.stop_container(&id, Some(5)).await.msg()?;
    let before = logs(s, &id, LogOptions::default()).await?.0;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let d = inspect(s, &id).await?;
    let after = logs(s, &id, LogOptions::default()).await?.0;
    ensure!(
        d.container.state == ContainerState::Exited && before == after,
        "a stopped container stays stopped: {d:?}"
    );
    Ok(())
}

async fn healthchecks_turn_healthy_and_unhealthy(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let filter = [LabelFilter::equals("rcs.conformance", &p)];
    let mut events = s.rt.events(&filter).await.msg()?;
    let mut spec = idle(s, &name(&p, "c"));
    spec.labels = BTreeMap::from([("rcs.conformance".to_string(), p.clone())]);
    spec.healthcheck = Some(HealthcheckSpec {
        test: HealthTest::Exec(vec!["test".into(), "-f".into(), "/tmp/ready".into()]),
        interval_ns: 200_000_000,
        timeout_ns: 2_000_000_000,
        retries: 2,
        // Failures before the first success do not count: no race with the touch.
        start_period_ns: 60_000_000_000,
        ..Default::default()
    });
    let id = run(s, m, &spec).await?;
    let d = inspect(s, &id).await?;
    ensure!(
        d.health == Health::Starting,
        "before the first check: {:?}",
        d.health
    );
    exec(s, &id, &["touch", "/tmp/ready"]).await?;
    until(s, &id, "healthy", |d| d.health == Health::Healthy).await?;
    exec(s, &id, &["rm", "/tmp/ready"]).await?;
    until(s, &id, "unhealthy", |d| d.health == Health::Unhealthy).await?;
    let mut health = Vec::new();
    while !health.contains(&Health::Unhealthy) {
        match timeout(DEADLINE, events.next()).await {
            Ok(Some(Ok(ContainerEvent {
                kind: EventKind::Health(h),
                ..
            }))) => health.push(h),
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("health events: {other:?}; saw {health:?}")),
        }
    }
    ensure!(
        health.iter().position(|h| *h == Health::Healthy)
            < health.iter().position(|h| *h == Health::Unhealthy),
        "healthy, then unhealthy: {health:?}"
    );
    // Disabled: no health at all, not even the image's.
    let mut spec = idle(s, &name(&p, "none"));
    spec.healthcheck = Some(HealthcheckSpec {
        test: HealthTest::Disabled,
        ..Default::default()
    });
    let id = run(s, m, &spec).await?;
    ensure!(inspect(s, &id).await?.health == Health::None, "disabled");
    Ok(())
}

async fn logs_separate_streams_and_honour_tail_since_follow(
    s: &Subject,
    m: &mut Made,
    p: String,
) -> Outcome {
    let script = "echo one; echo two >&2; echo three; sleep 2; echo late";
    let id = run(s, m, &shell(s, &name(&p, "c"), script)).await?;
    let follow =
        s.rt.logs(
            &id,
            &LogOptions {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .msg()?;
    // Follow: everything so far, then what comes, until the container ends.
    let (out, err) = read_all(follow).await?;
    ensure!(out == "one\nthree\nlate\n", "followed stdout {out:?}");
    ensure!(err == "two\n", "followed stderr {err:?}");
    let (out, _) = logs(
        s,
        &id,
        LogOptions {
            tail: Some(1),
            ..Default::default()
        },
    )
    .await?;
    ensure!(out == "late\n", "tail 1: {out:?}");
    let (out, err) = logs(
        s,
        &id,
        LogOptions {
            since: Some(in_an_hour()),
            ..Default::default()
        },
    )
    .await?;
    ensure!(
        out.is_empty() && err.is_empty(),
        "since the future: {out:?} {err:?}"
    );
    let (out, _) = logs(
        s,
        &id,
        LogOptions {
            timestamps: true,
            ..Default::default()
        },
    )
    .await?;
    ensure!(
        out.lines().all(|l| l.starts_with("20") && l.contains('T')),
        "timestamps: {out:?}"
    );
    Ok(())
}

async fn exec_streams_input_output_and_exit_code(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let id = run(s, m, &idle(s, &name(&p, "c"))).await?;
    let (out, err, code) = exec(s, &id, &["sh", "-c", "echo out; echo err >&2; exit 7"]).await?;
    ensure!(
        (out.as_str(), err.as_str(), code) == ("out\n", "err\n", 7),
        "{out:?} {err:?} {code}"
    );
    let spec = ExecSpec {
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo $GREETING; pwd; id -u".into(),
        ],
        env: vec!["GREETING=hello".into()],
        working_dir: "/tmp".into(),
        user: "1234".into(),
        ..Default::default()
    };
    let mut session = s.rt.exec(&id, &spec).await.msg()?;
    let (out, _) = read_all(session.output.take().ok_or("no output")?).await?;
    ensure!(
        out == "hello\n/tmp\n1234\n",
        "env, working dir, user: {out:?}"
    );
    let spec = ExecSpec {
        command: vec!["cat".into()],
        stdin: true,
        ..Default::default()
    };
    let mut session = s.rt.exec(&id, &spec).await.msg()?;
    let mut input = session.input.take().ok_or("no input")?;
    input.write_all(b"piped\n").await.msg()?;
    input.shutdown().await.msg()?;
    let (out, _) = read_all(session.output.take().ok_or("no output")?).await?;
    ensure!(out == "piped\n", "stdin: {out:?}");
    let code = session.process.wait().await.msg()?;
    ensure!(code == 0, "cat ends with 0: {code}");
    let (_, _, code) = exec(s, &id, &["sh", "-c", "exit 0"]).await?;
    ensure!(code == 0, "{code}");
    Ok(())
}

async fn attach_carries_input_and_output(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let mut spec = shell(s, &name(&p, "c"), "read line; echo got $line; exit 4");
    spec.stdin_open = true;
    spec.stdin_once = true;
    let id = create(s, m, &spec).await?;
    let mut session = s.rt.attach(&id, true, true).await.msg()?;
    s.rt.start_container(&id).await.msg()?;
    let mut input = session.input.take().ok_or("no input")?;
    input.write_all(b"hi\n").await.msg()?;
    let (out, _) = read_all(session.output.take().ok_or("no output")?).await?;
    ensure!(out == "got hi\n", "attached output: {out:?}");
    let code = timeout(DEADLINE, session.process.wait())
        .await
        .map_err(|_| "attach wait in time".to_string())?
        .msg()?;
    ensure!(code == 4, "the main process's exit code: {code}");
    Ok(())
}

async fn containers_reach_each_other_by_alias(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let net = name(&p, "net");
    let other = name(&p, "other");
    for n in [&net, &other] {
        m.networks.push(n.clone());
        s.rt.create_network(&NetworkSpec {
            name: n.clone(),
            ..Default::default()
        })
        .await
        .msg()?;
    }
    let on = |c: &mut ContainerSpec, network: &str, alias: &str| {
        c.networks = vec![NetworkAttachment {
            network: network.to_string(),
            aliases: vec![alias.to_string()],
            ..Default::default()
        }];
    };
    let mut server = shell(
        s,
        &name(&p, "server"),
        "echo ok > /tmp/index.html; httpd -f -p 8080 -h /tmp",
    );
    on(&mut server, &net, "web");
    run(s, m, &server).await?;
    let mut client = idle(s, &name(&p, "client"));
    on(&mut client, &net, "client");
    let client = run(s, m, &client).await?;
    let mut outsider = idle(s, &name(&p, "outsider"));
    on(&mut outsider, &other, "outsider");
    let outsider = run(s, m, &outsider).await?;
    // busybox's own resolver and nc (its static wget crashes in the C
    // library's resolver).
    let script = "ip=$(nslookup web 2>/dev/null | awk '/^Address: /{print $2}' | tail -n 1); \
                  [ -n \"$ip\" ] && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 $ip 8080 | grep -q '^ok'";
    let fetch = ["sh", "-c", script];
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (_, err, code) = exec(s, &client, &fetch).await?;
        if code == 0 {
            break;
        }
        ensure!(Instant::now() < deadline, "client reaches web: {err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, _, code) = exec(s, &outsider, &fetch).await?;
    ensure!(code != 0, "a container of another network reached web");
    Ok(())
}

async fn named_volumes_keep_data_between_containers(
    s: &Subject,
    m: &mut Made,
    p: String,
) -> Outcome {
    let vol = name(&p, "vol");
    m.volumes.push(vol.clone());
    let mount = |read_only| Mount::Volume {
        source: vol.clone(),
        target: "/data".into(),
        read_only,
        nocopy: false,
        subpath: String::new(),
    };
    let mut writer = shell(s, &name(&p, "writer"), "echo kept > /data/file");
    writer.mounts = vec![mount(false)];
    let id = run(s, m, &writer).await?;
    let code = s.rt.wait_container(&id).await.msg()?;
    ensure!(code == 0, "writer exited {code}");
    let mut reader = shell(s, &name(&p, "reader"), "cat /data/file; touch /data/x");
    reader.mounts = vec![mount(true)];
    let id = run(s, m, &reader).await?;
    let code = s.rt.wait_container(&id).await.msg()?;
    let (out, err) = logs(s, &id, LogOptions::default()).await?;
    ensure!(out == "kept\n", "read back {out:?}");
    ensure!(code != 0 && !err.is_empty(), "read-only mount written to");
    Ok(())
}

async fn files_are_copied_in_and_out(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let id = run(s, m, &idle(s, &name(&p, "c"))).await?;
    let mut archive = tar::Builder::new(Vec::new());
    let body = b"copied in\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(body.len() as u64);
    header.set_mode(0o640);
    header.set_cksum();
    archive
        .append_data(&mut header, "sub/in.txt", &body[..])
        .msg()?;
    let tar = archive.into_inner().msg()?;
    s.rt.copy_to(&id, "/tmp", tar).await.msg()?;
    let (out, _, _) = exec(s, &id, &["cat", "/tmp/sub/in.txt"]).await?;
    ensure!(out == "copied in\n", "in: {out:?}");
    exec(s, &id, &["sh", "-c", "echo out > /tmp/out.txt"]).await?;
    let mut bytes = Vec::new();
    let mut stream = s.rt.copy_from(&id, "/tmp/out.txt").await.msg()?;
    while let Some(chunk) = stream.next().await {
        bytes.extend(chunk.msg()?);
    }
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut found = Vec::new();
    for entry in archive.entries().msg()? {
        let mut entry = entry.msg()?;
        let path = entry.path().msg()?.display().to_string();
        let mut content = String::new();
        std::io::Read::read_to_string(&mut entry, &mut content).msg()?;
        found.push((path, content));
    }
    ensure!(
        found == vec![("out.txt".to_string(), "out\n".to_string())],
        "out: {found:?}"
    );
    let r = s.rt.copy_from(&id, "/no/such/path").await.map(|_| ());
    ensure!(is_not_found(&r, "path"), "a missing path: {r:?}");
    Ok(())
}

async fn stats_and_top_see_the_processes(s: &Subject, m: &mut Made, p: String) -> Outcome {
    let id = run(s, m, &idle(s, &name(&p, "c"))).await?;
    // The shell forks its sleep after it starts.
    settled(s, &id).await?;
    let (titles, rows) = s.rt.top(&id).await.msg()?;
    let cmd = titles
        .iter()
        .position(|t| t == "CMD" || t == "COMMAND")
        .ok_or(format!("a command column: {titles:?}"))?;
    ensure!(
        rows.iter()
            .any(|r| r.get(cmd).is_some_and(|c| c.contains("sleep 300"))),
        "top lists sleep: {rows:?}"
    );
    let stats = s.rt.stats(&id).await.msg()?;
    ensure!(stats.memory_usage > 0, "memory in use: {stats:?}");
    ensure!(stats.pids >= 2, "sh and sleep: {stats:?}");
    s.rt.stop_container(&id, Some(5)).await.msg()?;
    let r = s.rt.top(&id).await;
    ensure!(is_refused(&r), "top of a stopped container: {r:?}");
    Ok(())
}

// ---------------------------------------------------------------------------
// The runner

/// Builds the busybox image through the runtime (imports it, on the
/// native runtime, which has no builder yet).
async fn test_image(rt: &dyn Engine, runtime: &str, dir: &Path) -> Result<String, String> {
    let tag = format!("rcs-conformance-{runtime}-{}:1", std::process::id());
    std::fs::create_dir_all(dir).msg()?;
    if runtime == "native" {
        return import_busybox(rt, &tag, dir).await;
    }
    if Path::new(BUSYBOX).exists() {
        std::fs::copy(BUSYBOX, dir.join("busybox")).msg()?;
    }
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nRUN mkdir -m 1777 /tmp\n",
    )
    .msg()?;
    let spec = BuildSpec {
        context: dir.display().to_string(),
        tags: vec![tag.clone()],
        ..Default::default()
    };
    let mut output = rt.build_image(&spec).await.msg()?;
    while let Some(line) = timeout(DEADLINE, output.next())
        .await
        .map_err(|_| "the test image did not build in time".to_string())?
    {
        line.map_err(|e| format!("building the test image: {e}"))?;
    }
    Ok(tag)
}

/// The busybox image as `docker import` would make it from a root
/// filesystem: /bin/busybox with a link per applet, and /tmp.
async fn import_busybox(rt: &dyn Engine, tag: &str, dir: &Path) -> Result<String, String> {
    let applets = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .msg()?;
    let mut archive = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    };
    for (path, mode) in [("bin", 0o755), ("tmp", 0o1777), ("etc", 0o755)] {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        archive.append_data(&mut h, path, std::io::empty()).msg()?;
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
    let mut h = header(tar::EntryType::Regular, 0o644, passwd.len() as u64);
    archive
        .append_data(&mut h, "etc/passwd", &passwd[..])
        .msg()?;
    let busybox = std::fs::read(BUSYBOX).msg()?;
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    archive
        .append_data(&mut h, "bin/busybox", busybox.as_slice())
        .msg()?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet == "busybox" || applet.contains('/') {
            continue;
        }
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        archive
            .append_link(&mut h, format!("bin/{applet}"), "busybox")
            .msg()?;
    }
    let bytes = archive.into_inner().msg()?;
    let _ = dir;
    rt.import_image(Box::new(std::io::Cursor::new(bytes)), Some(tag), &[], "")
        .await
        .msg()?;
    Ok(tag.to_string())
}

/// Runs every case on a runtime, prints its line, and fails when a case did.
async fn conform(name: &'static str, rt: Arc<dyn Engine>, processes: bool) {
    let dir = std::env::temp_dir().join(format!("rcs-conformance-{name}-{}", std::process::id()));
    let image = test_image(rt.as_ref(), name, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let image = image.unwrap_or_else(|e| panic!("conformance: {name}: {e}"));
    let subject = Arc::new(Subject {
        name,
        rt: rt.clone(),
        image: image.clone(),
        processes,
    });
    let mut skipped = Vec::new();
    let mut runnable = Vec::new();
    for case in cases() {
        if case.needs_processes && !subject.processes {
            skipped.push(case.name);
        } else {
            runnable.push(case);
        }
    }
    let results: Vec<(&'static str, Outcome)> = futures_util::stream::iter(runnable)
        .map(|case| {
            let subject = subject.clone();
            async move {
                let prefix = format!("rcs-{}-{}-{}", subject.name, std::process::id(), case.name)
                    .replace('_', "-");
                let task = tokio::spawn(async move {
                    let mut made = Made::default();
                    let outcome = (case.run)(&subject, &mut made, prefix).await;
                    made.clean(subject.rt.as_ref()).await;
                    outcome
                });
                let outcome = match task.await {
                    Ok(outcome) => outcome,
                    Err(e) => Err(format!("panicked: {e}")),
                };
                (case.name, outcome)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let _ = rt.remove_image(&image, true).await;
    let failed: Vec<&(&str, Outcome)> = results.iter().filter(|(_, o)| o.is_err()).collect();
    let mut line = format!(
        "conformance: {name} {} passed, {} failed",
        results.len() - failed.len(),
        failed.len()
    );
    if !skipped.is_empty() {
        line.push_str(&format!(
            ", {} not applying (it runs no processes: {})",
            skipped.len(),
            skipped.join(", ")
        ));
    }
    // Past the test harness's capture: the line is the suite's report.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    for (case, outcome) in &failed {
        if let Err(e) = outcome {
            let _ = writeln!(stdout, "  {name} {case}: {e}");
        }
    }
    let _ = stdout.flush();
    assert!(failed.is_empty(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake() {
    conform("fake", Arc::new(FakeRuntime::new()), false).await;
}

/// Says on standard output that a runtime's suite did not run, and why
/// (which fails under CI=true, where everything it needs is there).
fn skipped(runtime: &str, why: &str) {
    let _ = writeln!(std::io::stdout(), "conformance: {runtime} SKIPPED: {why}");
    require(false, why);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker() {
    if !docker_available() {
        return skipped("docker", "the Docker Engine");
    }
    if !Path::new(BUSYBOX).exists() {
        return skipped("docker", "/bin/busybox (Debian's busybox-static)");
    }
    match DockerRuntime::connect().await {
        Ok(rt) => conform("docker", Arc::new(rt), true).await,
        Err(e) => skipped("docker", &format!("the engine at DOCKER_HOST ({e})")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native() {
    if !is_root() {
        return skipped("native", "root (the native runtime needs it)");
    }
    if std::process::Command::new("runc")
        .arg("--version")
        .output()
        .is_err()
    {
        return skipped("native", "runc (Debian's runc)");
    }
    if !Path::new(BUSYBOX).exists() {
        return skipped("native", "/bin/busybox (Debian's busybox-static)");
    }
    std::env::set_var("RCOMPOSE_SHIM", env!("CARGO_BIN_EXE_rcompose-shim"));
    let root = std::env::temp_dir().join(format!("rcs-native-{}", std::process::id()));
    let rt = runtime_shim::native::NativeRuntime::open_at(&root, &root.join("run"))
        .expect("the native runtime opens");
    let result = tokio::spawn(conform("native", Arc::new(rt), true)).await;
    // Whatever the outcome: nothing mounted, nothing left.
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "grep -o ' {0}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
            root.display()
        ))
        .output();
    let _ = std::fs::remove_dir_all(&root);
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
