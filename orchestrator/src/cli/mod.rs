//! The engine commands of the CLI: each loads the project, observes the
//! engine, asks the planner for a plan and runs it (or prints it with
//! `--dry-run`). Everything decided is decided by the library; this module
//! only parses flags and prints.

pub mod balancer;
pub mod image;
pub mod interactive;
mod lock;
pub mod progress;
pub mod watch;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use orchestrator::convert::labels;
use orchestrator::execute::{execute, ExecuteOptions, Outcome};
use orchestrator::loader::{self, LoadOptions};
use orchestrator::model::Project;
use orchestrator::observe::{observe, observe_containers};
use orchestrator::plan::{
    plan_build, plan_down, plan_lifecycle, plan_up, BuildOptions, DownOptions, Lifecycle, Plan,
    Recreate, UpOptions,
};
use runtime_shim::{Container, ContainerState, LabelFilter, LogOptions};

/// Settings shared by the commands that change the engine.
#[derive(Clone)]
pub struct Engine {
    /// Print plans instead of running them.
    pub dry_run: bool,
    /// How to show progress.
    pub progress: progress::Mode,
    /// `--env-file` paths, recorded in a label.
    pub env_files: Vec<String>,
}

/// Runs an async command on a runtime made for it.
pub fn block_on<F: std::future::Future<Output = Result<ExitCode>>>(f: F) -> Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

pub(crate) async fn connect() -> Result<Arc<dyn runtime_shim::Engine>> {
    use runtime_shim::docker::DockerRuntime;
    use runtime_shim::native::NativeRuntime;
    match RUNTIME.get().copied().flatten() {
        Some(RuntimeChoice::Docker) => {
            let rt = DockerRuntime::connect()
                .await
                .context("connecting to the Docker Engine")?;
            Ok(Arc::new(rt))
        }
        Some(RuntimeChoice::Native) => Ok(Arc::new(
            NativeRuntime::open().context("opening the native runtime")?,
        )),
        // Docker when it answers, the native runtime otherwise.
        None => match DockerRuntime::connect().await {
            Ok(rt) => Ok(Arc::new(rt)),
            Err(docker) => match NativeRuntime::open() {
                Ok(rt) => Ok(Arc::new(rt)),
                Err(native) => bail!(
                    "no runtime is available: the Docker Engine: {docker}; the native runtime: {native}"
                ),
            },
        },
    }
}

/// The runtime a command drives (`--runtime`, `RCOMPOSE_RUNTIME`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeChoice {
    /// The Docker Engine, over its socket (`DOCKER_HOST`).
    Docker,
    /// rcompose's own daemonless runtime (state under `RCOMPOSE_ROOT`).
    Native,
}

static RUNTIME: std::sync::OnceLock<Option<RuntimeChoice>> = std::sync::OnceLock::new();

/// The runtime named for the process (`None`: chosen at connection).
pub(crate) fn chosen_runtime() -> Option<RuntimeChoice> {
    RUNTIME.get().copied().flatten()
}

/// Sets the runtime for the process: the given one, or (with `None`) the
/// Docker Engine when it answers and the native runtime otherwise.
pub fn choose_runtime(choice: Option<RuntimeChoice>) {
    let _ = RUNTIME.set(choice);
}

/// Loads the project; commands that work from labels alone accept a missing
/// compose file when `-p` names the project.
pub(crate) fn load_project(options: &LoadOptions, named: bool) -> Result<Project> {
    match loader::load(options) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("WARN[0000] {w}");
            }
            // Balancer services run the built-in balancer.
            orchestrator::balancer::prepare(
                &loaded.project,
                &balancer::image_tag(),
                &balancer::host(),
            )
            .map_err(|e| {
                let place = setting_place(&loaded.project.config_files, &e)
                    .unwrap_or_else(|| loaded.project.config_files.join(", "));
                anyhow::anyhow!("{place}: {e}")
            })
        }
        Err(e)
            if named
                && e.diagnostics
                    .iter()
                    .any(|d| d.message.starts_with("no configuration file")) =>
        {
            Ok(Project {
                name: options.project_name.clone().unwrap_or_default(),
                ..Project::default()
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Where the balancer setting behind `e` is written, as `file:line:column`:
/// the setting itself where it can be found (also as a `- VAR=value` list
/// entry), else the nearest enclosing node, else the service. `None` when
/// no compose file names the service (or none can be read, as with `-f -`).
fn setting_place(files: &[String], e: &orchestrator::balancer::SettingError) -> Option<String> {
    use orchestrator::loader::locate::{locate, Location};
    use orchestrator::loader::path::YamlPath;
    let services = YamlPath::root().key("services");
    let mut paths = vec![services.key(e.service.as_str())];
    for k in &e.key {
        let deeper = paths[paths.len() - 1].key(k.as_str());
        paths.push(deeper);
    }
    let list_var = match e.key.as_slice() {
        [env, var] if env == "environment" => Some(format!("{var}=")),
        _ => None,
    };
    // The deepest node found wins; among equals, the last file.
    let mut best: Option<(usize, &String, Location)> = None;
    for file in files.iter().rev() {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        // `locate` answers with the deepest ancestor it finds, so a path
        // is there only when its answer differs from its parent's.
        let mut parent = locate(&text, &services);
        let mut found: Option<(usize, Location)> = None;
        for (depth, path) in paths.iter().enumerate() {
            let here = locate(&text, path);
            if here.is_none() || here == parent {
                break;
            }
            found = here.map(|l| (depth + 1, l));
            parent = here;
        }
        // `environment: ["VAR=value"]`: the entry that sets it.
        if let (Some(prefix), Some((2, _))) = (&list_var, &found) {
            for i in 0..1024 {
                let Some(loc) =
                    locate(&text, &paths[1].index(i)).filter(|l| Some(l) != parent.as_ref())
                else {
                    break;
                };
                let entry = text
                    .lines()
                    .nth(loc.line.saturating_sub(1))
                    .and_then(|l| l.get(loc.column.saturating_sub(1)..))
                    .unwrap_or("")
                    .trim_start_matches(['-', ' ', '"', '\'']);
                if entry.starts_with(prefix.as_str()) {
                    found = Some((3, loc));
                    break;
                }
            }
        }
        if let Some((depth, loc)) = found {
            if best.as_ref().is_none_or(|(d, _, _)| depth > *d) {
                best = Some((depth, file, loc));
            }
        }
    }
    best.map(|(_, file, loc)| format!("{file}:{}:{}", loc.line, loc.column))
}

/// Runs (or with `--dry-run` prints) a plan, showing progress; returns its outcome.
pub(crate) async fn run_plan(
    rt: &Arc<dyn runtime_shim::Engine>,
    engine: &Engine,
    plan: &Plan,
    title: &str,
    wait: ExecuteOptions,
) -> Outcome {
    for note in &plan.notes {
        if note.starts_with("Found orphan") {
            eprintln!("WARN[0000] {note}");
        }
    }
    if engine.dry_run {
        print!("{plan}");
        return Outcome::default();
    }
    if plan.is_empty() {
        return Outcome::default();
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let display = progress::render(plan, engine.progress, title, rx);
    let run = execute(rt.clone(), plan, wait, tx);
    let (outcome, ()) = tokio::join!(run, display);
    outcome
}

fn exit_code(outcomes: &[&Outcome]) -> ExitCode {
    if outcomes.iter().all(|o| o.success()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn parse_duration_secs(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    orchestrator::model::Duration::parse(s)
        .map(|d| (d.nanos.max(0) / 1_000_000_000) as u64)
        .ok_or_else(|| format!("invalid duration {s:?}"))
}

/// `up` flags.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Detached mode: Run containers in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Build images before starting containers
    #[arg(long, conflicts_with = "no_build")]
    pub build: bool,
    /// Don't build an image, even if it's policy
    #[arg(long = "no-build")]
    pub no_build: bool,
    /// Recreate containers even if their configuration and image haven't changed
    #[arg(long = "force-recreate", conflicts_with = "no_recreate")]
    pub force_recreate: bool,
    /// If containers already exist, don't recreate them
    #[arg(long = "no-recreate")]
    pub no_recreate: bool,
    /// Recreate dependent containers. Incompatible with --no-recreate.
    #[arg(long = "always-recreate-deps", conflicts_with = "no_recreate")]
    pub always_recreate_deps: bool,
    /// Don't start linked services
    #[arg(long = "no-deps")]
    pub no_deps: bool,
    /// Don't start the services after creating them
    #[arg(long = "no-start")]
    pub no_start: bool,
    /// Remove containers for services not defined in the Compose file
    #[arg(long = "remove-orphans")]
    pub remove_orphans: bool,
    /// Scale SERVICE to NUM instances. Overrides the `scale` setting in the Compose file if present
    #[arg(long = "scale", value_name = "SERVICE=NUM")]
    pub scale: Vec<String>,
    /// Wait for services to be running|healthy. Implies detached mode
    #[arg(long)]
    pub wait: bool,
    /// Maximum duration in seconds to wait for the project to be running|healthy
    #[arg(long = "wait-timeout", value_parser = parse_duration_secs)]
    pub wait_timeout: Option<u64>,
    /// Stops all containers if any container was stopped. Incompatible with -d
    #[arg(long = "abort-on-container-exit")]
    pub abort_on_container_exit: bool,
    /// Stops all containers if any container exited with failure. Incompatible with -d
    #[arg(long = "abort-on-container-failure")]
    pub abort_on_container_failure: bool,
    /// Return the exit code of the selected service container. Implies --abort-on-container-exit
    #[arg(long = "exit-code-from")]
    pub exit_code_from: Option<String>,
    /// Use this timeout in seconds for container shutdown
    #[arg(short = 't', long = "timeout")]
    pub timeout: Option<i64>,
    /// Produce monochrome output
    #[arg(long = "no-color")]
    pub no_color: bool,
    /// Don't print prefix in logs
    #[arg(long = "no-log-prefix")]
    pub no_log_prefix: bool,
    /// Pull image before running (only `missing` and `never` work without a registry)
    #[arg(long = "pull")]
    pub pull: Option<String>,
    /// Watch source code and rebuild/refresh containers when files are updated.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Services to start (with their dependencies)
    pub services: Vec<String>,
}

impl UpArgs {
    /// Whether the first container to exit stops the others (an
    /// --exit-code-from implies it, unless failures alone are to).
    fn stops_on_exit(&self) -> bool {
        self.abort_on_container_exit
            || (self.exit_code_from.is_some() && !self.abort_on_container_failure)
    }
}

/// `create` flags.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Build images before starting containers
    #[arg(long)]
    pub build: bool,
    /// Don't build an image, even if it's policy
    #[arg(long = "no-build")]
    pub no_build: bool,
    /// Recreate containers even if their configuration and image haven't changed
    #[arg(long = "force-recreate")]
    pub force_recreate: bool,
    /// If containers already exist, don't recreate them
    #[arg(long = "no-recreate")]
    pub no_recreate: bool,
    /// Remove containers for services not defined in the Compose file
    #[arg(long = "remove-orphans")]
    pub remove_orphans: bool,
    /// Scale SERVICE to NUM instances
    #[arg(long = "scale", value_name = "SERVICE=NUM")]
    pub scale: Vec<String>,
    /// Services to create
    pub services: Vec<String>,
}

/// `down` flags.
#[derive(Args, Debug)]
pub struct DownArgs {
    /// Remove named volumes declared in the "volumes" section of the Compose file and anonymous volumes attached to containers
    #[arg(short = 'v', long)]
    pub volumes: bool,
    /// Remove images used by services. "local" remove only images that don't have a custom tag ("local"|"all")
    #[arg(long)]
    pub rmi: Option<String>,
    /// Remove containers for services not defined in the Compose file
    #[arg(long = "remove-orphans")]
    pub remove_orphans: bool,
    /// Specify a shutdown timeout in seconds
    #[arg(short = 't', long = "timeout")]
    pub timeout: Option<i64>,
    /// Services to stop and remove
    pub services: Vec<String>,
}

/// Output format of `ps`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsFormat {
    /// A table.
    Table,
    /// One JSON object per line.
    Json,
}

/// `ps` flags.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all stopped containers (including those created by the run command)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Display services
    #[arg(long)]
    pub services: bool,
    /// Filter services by status. Values: [paused | restarting | removing | running | dead | created | exited]
    #[arg(long)]
    pub status: Vec<String>,
    /// Format the output
    #[arg(long, value_enum, default_value = "table")]
    pub format: PsFormat,
    /// Services to list
    pub service_names: Vec<String>,
}

/// `scale` arguments.
#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// Don't start linked services
    #[arg(long = "no-deps")]
    pub no_deps: bool,
    /// SERVICE=REPLICAS pairs
    #[arg(required = true)]
    pub scales: Vec<String>,
}

/// `images` flags.
#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Format the output. Values: [table | json]
    #[arg(long, value_enum, default_value = "table")]
    pub format: PsFormat,
    /// Only display IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Services
    pub services: Vec<String>,
}

/// Commands that take only service names.
#[derive(Args, Debug)]
pub struct ServicesArgs {
    /// Services
    pub services: Vec<String>,
}

/// `stop` and `restart` flags.
#[derive(Args, Debug)]
pub struct TimeoutArgs {
    /// Specify a shutdown timeout in seconds
    #[arg(short = 't', long = "timeout")]
    pub timeout: Option<i64>,
    /// Services
    pub services: Vec<String>,
}

/// `kill` flags.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// SIGNAL to send to the container
    #[arg(short = 's', long = "signal", default_value = "SIGKILL")]
    pub signal: String,
    /// Remove containers for services not defined in the Compose file
    #[arg(long = "remove-orphans")]
    pub remove_orphans: bool,
    /// Services
    pub services: Vec<String>,
}

/// `rm` flags.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Don't ask to confirm removal
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Stop the containers, if required, before removing
    #[arg(short = 's', long)]
    pub stop: bool,
    /// Remove any anonymous volumes attached to containers
    #[arg(short = 'v', long)]
    pub volumes: bool,
    /// Services
    pub services: Vec<String>,
}

/// `build` flags.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Do not use cache when building the image
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Set build-time variables for services
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_arg: Vec<String>,
    /// Don't print anything to STDOUT
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Services to build
    pub services: Vec<String>,
}

/// `logs` flags.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs for each container
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m for 42 minutes)
    #[arg(long)]
    pub since: Option<String>,
    /// Produce monochrome output
    #[arg(long = "no-color")]
    pub no_color: bool,
    /// Don't print prefix in logs
    #[arg(long = "no-log-prefix")]
    pub no_log_prefix: bool,
    /// Services
    pub services: Vec<String>,
}

/// `port` arguments.
#[derive(Args, Debug)]
pub struct PortArgs {
    /// tcp or udp
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
    /// Index of the container if service has multiple replicas
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// The service
    pub service: String,
    /// The private port
    pub private_port: u16,
}

/// `ls` flags.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Show all stopped Compose projects
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display project names
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Format the output
    #[arg(long, value_enum, default_value = "table")]
    pub format: PsFormat,
}

/// `version` flags.
#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Format the output. Values: [pretty | json]. (Default: pretty)
    #[arg(short = 'f', long, value_enum)]
    pub format: Option<VersionFormat>,
    /// Shows only rcompose's version number
    #[arg(long)]
    pub short: bool,
}

/// `version --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VersionFormat {
    /// `rcompose version vX.Y.Z`.
    Pretty,
    /// `{"version":"vX.Y.Z"}`, as Compose prints it.
    Json,
}

fn parse_scale(pairs: &[String]) -> Result<BTreeMap<String, u32>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let Some((svc, n)) = p.split_once('=') else {
            bail!("invalid scale specifier {p:?}: expected SERVICE=NUM");
        };
        let n: u32 = n
            .parse()
            .with_context(|| format!("invalid number of replicas in {p:?}"))?;
        out.insert(svc.to_string(), n);
    }
    Ok(out)
}

fn check_services(project: &Project, services: &[String]) -> Result<()> {
    for s in services {
        if !project.services.contains_key(s) && !project.disabled_services.contains_key(s) {
            bail!("no such service: {s}");
        }
    }
    Ok(())
}

/// `--force-recreate` / `--no-recreate` as a policy.
fn recreate_policy(force: bool, never: bool) -> Recreate {
    match (force, never) {
        (true, _) => Recreate::Force,
        (_, true) => Recreate::Never,
        _ => Recreate::Diverged,
    }
}

/// The image phase then the container phase of `up` and `create`.
async fn converge(
    engine: &Engine,
    rt: &Arc<dyn runtime_shim::Engine>,
    project: &Project,
    build: &BuildOptions,
    up: &UpOptions,
    wait: ExecuteOptions,
) -> Result<(Outcome, Outcome)> {
    let _lock = lock::lock_project(rt.as_ref(), &project.name, engine.dry_run).await?;
    if !engine.dry_run
        && project
            .services
            .values()
            .any(orchestrator::balancer::is_prepared)
    {
        balancer::ensure_image(rt.as_ref(), &balancer::image_tag()).await?;
        for service in project.services.values() {
            if let Some(dir) =
                orchestrator::balancer::prepared_spec(service).and_then(|spec| spec.control_dir)
            {
                balancer::ensure_control_dir(&dir)?;
            }
        }
    }
    let observed = observe(rt.as_ref(), project).await?;
    let build_plan = plan_build(project, &observed, build);
    let built = run_plan(rt, engine, &build_plan, "Building", wait).await;
    if !built.success() {
        // Compose stops at a failed build or pull: no container is touched.
        for (i, e) in &built.failures {
            eprintln!("Error: {}: {e}", build_plan.ops[*i].action.subject());
        }
        return Ok((built, Outcome::default()));
    }
    // Image ids may have changed: observe again before planning containers.
    let mut observed = if build_plan.is_empty() {
        observed
    } else {
        observe(rt.as_ref(), project).await?
    };
    orchestrator::observe::observe_limits(rt.as_ref(), &mut observed).await?;
    let mut plan = plan_up(project, &observed, up);
    if plan.is_empty() && !engine.dry_run && build_plan.is_empty() {
        eprintln!("Nothing to do: every container is up to date");
    }
    let mut ran = run_plan(rt, engine, &plan, "Running", wait).await;
    // Someone else changed the engine meanwhile (another up, or the calls of
    // an up that was killed still landing): observe and plan again.
    let mut attempts = 1;
    while ran.stale && attempts < 3 && !engine.dry_run {
        attempts += 1;
        let mut observed = observe(rt.as_ref(), project).await?;
        orchestrator::observe::observe_limits(rt.as_ref(), &mut observed).await?;
        plan = plan_up(project, &observed, up);
        ran = run_plan(rt, engine, &plan, "Running", wait).await;
    }
    for (i, e) in &ran.failures {
        eprintln!("Error: {}: {e}", plan.ops[*i].action.subject());
    }
    Ok((built, ran))
}

/// `up`.
pub async fn up(engine: Engine, options: LoadOptions, args: UpArgs) -> Result<ExitCode> {
    let project = load_project(&options, false)?;
    check_services(&project, &args.services)?;
    if args.pull.as_deref().is_some_and(|p| p == "always") {
        bail!("--pull always needs a registry, which rcompose does not contact");
    }
    let mut watch_setup = None;
    // Compose's checks of the attached modes, in its order.
    if args.stops_on_exit() && args.abort_on_container_failure {
        bail!("--abort-on-container-failure cannot be combined with --abort-on-container-exit");
    }
    if args.wait && args.stops_on_exit() {
        bail!("--wait cannot be combined with --abort-on-container-exit, --attach or --attach-dependencies");
    }
    if (args.detach || args.wait)
        && (args.stops_on_exit() || args.abort_on_container_failure || args.watch)
    {
        let flag = if args.wait { "--wait" } else { "--detach" };
        bail!("{flag} cannot be combined with --abort-on-container-exit, --abort-on-container-failure, --attach, --attach-dependencies or --watch");
    }
    if args.watch {
        if args.no_build {
            bail!("--no-build and --watch are incompatible");
        }
        // Before anything starts: a project with bad rules or nothing to watch.
        watch_setup = Some(watch::setup(
            &project,
            &args.services,
            "see https://docs.docker.com/compose/how-tos/file-watch/",
        )?);
    }
    let rt = connect().await?;
    let up_options = UpOptions {
        services: args.services.clone(),
        no_deps: args.no_deps,
        recreate: recreate_policy(args.force_recreate, args.no_recreate),
        recreate_deps: recreate_policy(args.always_recreate_deps, args.no_recreate),
        scale: parse_scale(&args.scale)?,
        remove_orphans: args.remove_orphans,
        no_start: args.no_start,
        timeout: args.timeout,
        env_files: engine.env_files.clone(),
    };
    let build = BuildOptions {
        services: args.services.clone(),
        always: args.build,
        never: args.no_build,
        no_cache: false,
        with_deps: !args.no_deps,
        now: now_seconds(),
        ..BuildOptions::default()
    };
    let wait = ExecuteOptions {
        wait_timeout: args.wait_timeout.map(Duration::from_secs),
    };
    // The logs attached to are those from now on, as Compose attaches
    // before it starts the containers.
    let since = now_nanos();
    let (built, ran) = converge(&engine, &rt, &project, &build, &up_options, wait).await?;
    if !built.success() || !ran.success() || engine.dry_run {
        return Ok(exit_code(&[&built, &ran]));
    }
    if args.wait {
        let observed = observe(rt.as_ref(), &project).await?;
        let plan = orchestrator::plan::plan_wait(&project, &observed, &args.services);
        let waited = run_plan(&rt, &engine, &plan, "Waiting", wait).await;
        return Ok(exit_code(&[&waited]));
    }
    if args.detach || args.no_start {
        return Ok(ExitCode::SUCCESS);
    }
    let Some(setup) = watch_setup else {
        return attach(&engine, &rt, &project, &args, since).await;
    };
    // Logs and the watch side by side; the watch ends with the attachment.
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let options = watch::Options {
        prune: false,
        quiet: false,
        no_deps: args.no_deps,
        // Where the logs' `|` is, as Compose puts it.
        mark: if args.no_log_prefix {
            String::new()
        } else {
            let observed = observe_containers(rt.as_ref(), &project).await?;
            let containers = orchestrator::plan::target_containers(&observed, &args.services);
            watch::log_mark(log_width(&project, &containers, true), plain(args.no_color))
        },
    };
    let watching = watch::run(&engine, &rt, &project, setup, &options, async {
        let _ = ended.await;
    });
    let attached = async {
        let code = attach(&engine, &rt, &project, &args, since).await;
        let _ = done.send(());
        code
    };
    // A watch that fails is said at once; the logs go on.
    let watching = async {
        if let Err(e) = watching.await {
            eprintln!("Error: watch: {e:#}");
        }
    };
    let (code, ()) = tokio::join!(attached, watching);
    code
}

/// Attached `up`: streams prefixed logs until Ctrl-C (or a container exit with
/// `--abort-on-container-exit`), then stops the project.
async fn attach(
    engine: &Engine,
    rt: &Arc<dyn runtime_shim::Engine>,
    project: &Project,
    args: &UpArgs,
    since: i128,
) -> Result<ExitCode> {
    let observed = observe(rt.as_ref(), project).await?;
    let containers: Vec<Container> =
        orchestrator::plan::target_containers(&observed, &args.services)
            .into_iter()
            .cloned()
            .collect();
    eprintln!(
        "Attaching to {}",
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, i64)>();
    let refs: Vec<&Container> = containers.iter().collect();
    let width = log_width(project, &refs, args.watch);
    // A container followed again (restarted under `--watch`) shows its
    // output from then on.
    let follow = |c: &Container,
                  i: usize,
                  from: i128,
                  tx: tokio::sync::mpsc::UnboundedSender<(String, String, i64)>| {
        let rt = rt.clone();
        let name = c.id.clone();
        let service = c.labels.get(labels::SERVICE).cloned().unwrap_or_default();
        let short = short_name(project, c);
        let prefix = log_prefix(&short, width, i, args.no_color, args.no_log_prefix);
        let status = log_status(&short, i, args.no_color);
        tokio::spawn(async move {
            let opts = LogOptions {
                follow: true,
                from_nanos: Some(from),
                ..LogOptions::default()
            };
            if let Ok(mut stream) = rt.logs(&name, &opts).await {
                while let Some(Ok(line)) = stream.next().await {
                    print_log(&prefix, &line.text);
                }
            }
            let code = rt.wait_container(&name).await.unwrap_or(-1);
            println!("{}", status(&format!("exited with code {code}")));
            let _ = tx.send((name, service, code));
        });
    };
    for (i, c) in containers.iter().enumerate() {
        follow(c, i, since, tx.clone());
    }
    // Under `--watch`, containers come and go (a rebuild recreates them,
    // a restart ends their log): the new ones are followed too, and the
    // session lasts until Ctrl-C.
    let mut watching = tokio::time::interval(Duration::from_secs(1));
    let mut followed: std::collections::HashSet<String> =
        containers.iter().map(|c| c.id.clone()).collect();
    let keep = args.watch.then(|| tx.clone());
    drop(tx);
    // The code of the container whose exit stopped the rest, and of the
    // first container of --exit-code-from's service to exit: the latter
    // wins, as in Compose.
    let mut aborted: Option<i64> = None;
    let mut chosen: Option<i64> = None;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                eprintln!("Gracefully stopping... (press Ctrl+C again to force)");
                break;
            }
            _ = watching.tick(), if keep.is_some() => {
                if let (Some(tx), Ok(now)) = (&keep, observe_containers(rt.as_ref(), project).await) {
                    let running = orchestrator::plan::target_containers(&now, &args.services)
                        .into_iter()
                        .filter(|c| c.state == ContainerState::Running && !followed.contains(&c.id))
                        .cloned()
                        .collect::<Vec<_>>();
                    for c in running {
                        followed.insert(c.id.clone());
                        follow(&c, followed.len(), i128::from(now_seconds()) * 1_000_000_000, tx.clone());
                    }
                }
            }
            ended = rx.recv() => {
                match ended {
                    Some((id, service, code)) => {
                        followed.remove(&id);
                        if chosen.is_none() && args.exit_code_from.as_ref() == Some(&service) {
                            chosen = Some(code);
                        }
                        if args.stops_on_exit() || (args.abort_on_container_failure && code != 0) {
                            aborted = Some(code);
                            eprintln!("Aborting on container exit...");
                            break;
                        }
                    }
                    None => break,
                }
            }
        }
    }
    let observed = observe(rt.as_ref(), project).await?;
    let plan = plan_lifecycle(
        project,
        &observed,
        &args.services,
        &Lifecycle::Stop(args.timeout),
    );
    let stopped = run_plan(rt, engine, &plan, "Stopping", ExecuteOptions::default()).await;
    if !stopped.success() {
        return Ok(ExitCode::from(1));
    }
    if let (Some(from), None) = (&args.exit_code_from, chosen) {
        // Its container ended with the stop: that is its code.
        let now = observe_containers(rt.as_ref(), project).await?;
        let mut ended: Vec<&Container> = now.service_containers(from).collect();
        ended.sort_by_key(|c| orchestrator::observe::container_number(c));
        if let Some(c) = ended.first() {
            chosen = Some(rt.inspect_container(&c.id).await?.exit_code);
        }
    }
    let code = chosen.or(aborted).unwrap_or(0);
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    ))
}

fn short_name(project: &Project, c: &Container) -> String {
    c.name
        .strip_prefix(&format!("{}-", project.name))
        .unwrap_or(&c.name)
        .to_string()
}

/// The width of the names before the logs' `|`, as Compose pads them:
/// the longest container name (and under `--watch` the watch's, Compose's
/// `#watch`), and one more.
fn log_width(project: &Project, containers: &[&Container], watching: bool) -> usize {
    containers
        .iter()
        .map(|c| short_name(project, c).len())
        .chain(watching.then_some("#watch".len()))
        .max()
        .unwrap_or(0)
        + 1
}

/// Each log color, in turn, as Compose gives them.
const LOG_COLORS: [u8; 10] = [36, 33, 32, 35, 34, 96, 93, 92, 95, 94];

/// A line about a container among its logs (its exit), as Compose writes
/// it: its name and the news, in its color, on a line of its own.
fn log_status(name: &str, index: usize, no_color: bool) -> impl Fn(&str) -> String {
    let color = (!plain(no_color)).then(|| LOG_COLORS[index % LOG_COLORS.len()]);
    let name = name.to_string();
    move |news| match color {
        Some(c) => format!("\r\x1b[K\x1b[{c}m{name} {news}\x1b[0m"),
        None => format!("{name} {news}"),
    }
}

/// Whether the logs go without colors: off a terminal, when asked, and
/// when NO_COLOR is set (to anything but nothing).
fn plain(no_color: bool) -> bool {
    no_color
        || std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
        || !std::io::IsTerminal::is_terminal(&std::io::stdout())
}

fn log_prefix(name: &str, width: usize, index: usize, no_color: bool, none: bool) -> String {
    if none {
        return String::new();
    }
    if plain(no_color) {
        format!("{name:<width$} | ")
    } else {
        format!(
            "\x1b[{}m{name:<width$} | \x1b[0m",
            LOG_COLORS[index % LOG_COLORS.len()]
        )
    }
}

fn print_log(prefix: &str, text: &str) {
    let mut out = std::io::stdout().lock();
    for line in text.split_inclusive('\n') {
        let _ = write!(out, "{prefix}{line}");
        if !line.ends_with('\n') {
            let _ = writeln!(out);
        }
    }
}

/// `create`.
pub async fn create(engine: Engine, options: LoadOptions, args: CreateArgs) -> Result<ExitCode> {
    let project = load_project(&options, false)?;
    check_services(&project, &args.services)?;
    let rt = connect().await?;
    let up_options = UpOptions {
        services: args.services.clone(),
        recreate: recreate_policy(args.force_recreate, args.no_recreate),
        recreate_deps: recreate_policy(false, args.no_recreate),
        scale: parse_scale(&args.scale)?,
        remove_orphans: args.remove_orphans,
        no_start: true,
        env_files: engine.env_files.clone(),
        ..UpOptions::default()
    };
    let build = BuildOptions {
        services: args.services.clone(),
        always: args.build,
        never: args.no_build,
        no_cache: false,
        with_deps: true,
        now: now_seconds(),
        ..BuildOptions::default()
    };
    let (b, r) = converge(
        &engine,
        &rt,
        &project,
        &build,
        &up_options,
        ExecuteOptions::default(),
    )
    .await?;
    Ok(exit_code(&[&b, &r]))
}

/// `down`.
pub async fn down(
    engine: Engine,
    options: LoadOptions,
    named: bool,
    args: DownArgs,
) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    if let Some(rmi) = &args.rmi {
        if rmi != "local" && rmi != "all" {
            bail!("invalid --rmi value {rmi:?}: use local or all");
        }
    }
    let rt = connect().await?;
    let _lock = lock::lock_project(rt.as_ref(), &project.name, engine.dry_run).await?;
    let observed = observe(rt.as_ref(), &project).await?;
    let options = DownOptions {
        volumes: args.volumes,
        rmi: args.rmi.clone(),
        remove_orphans: args.remove_orphans,
        timeout: args.timeout,
        services: args.services.clone(),
    };
    let plan = plan_down(&project, &observed, &options);
    let outcome = run_plan(&rt, &engine, &plan, "Running", ExecuteOptions::default()).await;
    for (i, e) in &outcome.failures {
        eprintln!("Error: {}: {e}", plan.ops[*i].action.subject());
    }
    if outcome.success() && !engine.dry_run {
        for (name, service) in &project.services {
            let removed = args.services.is_empty() || args.services.contains(name);
            if let (true, Some(dir)) = (
                removed,
                orchestrator::balancer::prepared_spec(service).and_then(|s| s.control_dir),
            ) {
                balancer::remove_control_dir(&dir);
            }
        }
    }
    Ok(exit_code(&[&outcome]))
}

/// `scale`.
pub async fn scale(engine: Engine, options: LoadOptions, args: ScaleArgs) -> Result<ExitCode> {
    let project = load_project(&options, false)?;
    let scale = parse_scale(&args.scales)?;
    let services: Vec<String> = scale.keys().cloned().collect();
    check_services(&project, &services)?;
    let rt = connect().await?;
    let up_options = UpOptions {
        services,
        no_deps: args.no_deps,
        scale,
        env_files: engine.env_files.clone(),
        ..UpOptions::default()
    };
    let build = BuildOptions {
        services: up_options.services.clone(),
        with_deps: !args.no_deps,
        now: now_seconds(),
        ..BuildOptions::default()
    };
    let (b, r) = converge(
        &engine,
        &rt,
        &project,
        &build,
        &up_options,
        ExecuteOptions::default(),
    )
    .await?;
    Ok(exit_code(&[&b, &r]))
}

/// `start`, `stop`, `restart`, `kill`, `pause`, `unpause`.
pub async fn lifecycle(
    engine: Engine,
    options: LoadOptions,
    named: bool,
    services: Vec<String>,
    command: Lifecycle,
) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    if !project.services.is_empty() {
        check_services(&project, &services)?;
    }
    let rt = connect().await?;
    let _lock = lock::lock_project(rt.as_ref(), &project.name, engine.dry_run).await?;
    let observed = observe_containers(rt.as_ref(), &project).await?;
    let title = match command {
        Lifecycle::Start => "Running",
        Lifecycle::Stop(_) => "Stopping",
        Lifecycle::Restart(_) => "Restarting",
        Lifecycle::Kill(_) => "Killing",
        Lifecycle::Pause => "Pausing",
        Lifecycle::Unpause => "Unpausing",
        Lifecycle::Remove { .. } => "Removing",
    };
    let plan = plan_lifecycle(&project, &observed, &services, &command);
    let outcome = run_plan(&rt, &engine, &plan, title, ExecuteOptions::default()).await;
    for (i, e) in &outcome.failures {
        eprintln!("Error: {}: {e}", plan.ops[*i].action.subject());
    }
    Ok(exit_code(&[&outcome]))
}

/// `rm`.
pub async fn rm(
    engine: Engine,
    options: LoadOptions,
    named: bool,
    args: RmArgs,
) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    let rt = connect().await?;
    let observed = observe_containers(rt.as_ref(), &project).await?;
    let plan = plan_lifecycle(
        &project,
        &observed,
        &args.services,
        &Lifecycle::Remove {
            stop: args.stop,
            volumes: args.volumes,
        },
    );
    if plan.is_empty() {
        eprintln!("No stopped containers");
        return Ok(ExitCode::SUCCESS);
    }
    if !args.force && !engine.dry_run {
        let names: Vec<String> = plan
            .ops
            .iter()
            .filter(|o| matches!(o.action, orchestrator::plan::Action::Remove { .. }))
            .map(|o| o.action.subject())
            .collect();
        eprintln!("Going to remove {}", names.join(", "));
        eprint!("Are you sure? [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(ExitCode::SUCCESS);
        }
    }
    // Not held at the question: a container gone meanwhile counts as removed.
    let _lock = lock::lock_project(rt.as_ref(), &project.name, engine.dry_run).await?;
    let outcome = run_plan(&rt, &engine, &plan, "Removing", ExecuteOptions::default()).await;
    Ok(exit_code(&[&outcome]))
}

/// `build`.
pub async fn build(engine: Engine, options: LoadOptions, args: BuildArgs) -> Result<ExitCode> {
    let project = load_project(&options, false)?;
    check_services(&project, &args.services)?;
    // `--build-arg KEY` takes KEY's value from the environment.
    let build_args = args
        .build_arg
        .iter()
        .map(|arg| match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (arg.clone(), options.environment.get(arg).cloned()),
        })
        .collect();
    let rt = connect().await?;
    let observed = observe(rt.as_ref(), &project).await?;
    let plan = plan_build(
        &project,
        &observed,
        &BuildOptions {
            services: args.services.clone(),
            always: true,
            never: false,
            no_cache: args.no_cache,
            with_deps: false,
            args: build_args,
            now: now_seconds(),
        },
    );
    let engine = Engine {
        progress: if args.quiet {
            progress::Mode::Quiet
        } else {
            engine.progress
        },
        ..engine
    };
    let outcome = run_plan(&rt, &engine, &plan, "Building", ExecuteOptions::default()).await;
    for (i, e) in &outcome.failures {
        eprintln!("Error: {}: {e}", plan.ops[*i].action.subject());
    }
    Ok(exit_code(&[&outcome]))
}

fn human_ago(secs: i64) -> String {
    format!("{} ago", human_duration(now_seconds() - secs))
}

fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

pub(crate) fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A duration as Docker (and so Compose) words it: `Less than a second`,
/// `3 seconds`, `About a minute`, `2 hours`, `3 days` ...
fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let minutes = secs / 60;
    // Hours are rounded, the smaller units truncated, as Docker's are.
    let hours = (secs + 1800) / 3600;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// A container's STATUS as `docker compose ps` shows it: `Up 3 seconds
/// (healthy)`, `Exited (0) 5 minutes ago`, `Created` ...
fn status_text(state: ContainerState, status: &runtime_shim::Status, now: i64) -> String {
    use runtime_shim::Health;
    if let Some(detail) = &status.detail {
        return detail.clone();
    }
    let since = human_duration(now - status.since);
    match state {
        ContainerState::Created => "Created".into(),
        ContainerState::Paused => format!("Up {since} (Paused)"),
        ContainerState::Running => match status.health {
            Health::None => format!("Up {since}"),
            Health::Starting => format!("Up {since} (health: starting)"),
            Health::Healthy => format!("Up {since} (healthy)"),
            Health::Unhealthy => format!("Up {since} (unhealthy)"),
        },
        ContainerState::Restarting => format!("Restarting ({}) {since} ago", status.exit_code),
        ContainerState::Exited if status.since == 0 => format!("Exited ({})", status.exit_code),
        ContainerState::Exited => format!("Exited ({}) {since} ago", status.exit_code),
    }
}

fn ports_text(c: &Container) -> String {
    let mut parts: Vec<String> = c
        .ports
        .iter()
        .map(|p| {
            if p.host_port == 0 {
                format!("{}/{}", p.container_port, p.protocol)
            } else {
                let ip = if p.host_ip.contains(':') {
                    format!("[{}]", p.host_ip)
                } else {
                    p.host_ip.clone()
                };
                format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.protocol)
            }
        })
        .collect();
    parts.sort();
    parts.dedup();
    parts.join(", ")
}

fn truncate_command(cmd: &str) -> String {
    let chars: Vec<char> = cmd.chars().collect();
    if chars.len() > 20 {
        format!("\"{}…\"", chars[..19].iter().collect::<String>())
    } else {
        format!("\"{cmd}\"")
    }
}

pub(crate) fn print_table(rows: &[Vec<String>]) {
    print_table_wide(rows, 0);
}

/// [`print_table`] with columns at least `min` wide, gap included: Compose's
/// own tables (`ls`, `images`) are 20.
pub(crate) fn print_table_wide(rows: &[Vec<String>], min: usize) {
    let cols = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            let widest = rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
            widest.max(min.saturating_sub(3))
        })
        .collect();
    let mut out = std::io::stdout().lock();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(
                    ' ',
                    widths[i] - cell.chars().count() + 3,
                ));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// `ps`.
pub async fn ps(options: LoadOptions, named: bool, args: PsArgs) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    let rt = connect().await?;
    let observed = observe_containers(rt.as_ref(), &project).await?;
    let mut containers: Vec<&Container> = observed
        .containers
        .iter()
        .filter(|c| args.all || !labels::is_oneoff(&c.labels))
        .filter(|c| {
            args.service_names.is_empty()
                || c.labels
                    .get(labels::SERVICE)
                    .is_some_and(|s| args.service_names.contains(s))
        })
        .filter(|c| {
            if args.status.is_empty() {
                args.all
                    || matches!(
                        c.state,
                        ContainerState::Running
                            | ContainerState::Restarting
                            | ContainerState::Paused
                    )
            } else {
                args.status.iter().any(|s| s == c.state.as_str())
            }
        })
        .collect();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    if args.services {
        let mut names: Vec<&str> = containers
            .iter()
            .filter_map(|c| c.labels.get(labels::SERVICE).map(String::as_str))
            .collect();
        names.sort();
        names.dedup();
        for n in names {
            println!("{n}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.quiet {
        for c in containers {
            println!("{}", c.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    match args.format {
        PsFormat::Json => {
            for c in containers {
                let v = serde_json::json!({
                    "ID": c.id,
                    "Name": c.name,
                    "Image": c.image,
                    "Command": c.command,
                    "Project": c.labels.get(labels::PROJECT),
                    "Service": c.labels.get(labels::SERVICE),
                    "State": c.state.as_str(),
                    "Status": status_text(c.state, &c.status, now_seconds()),
                    "Health": match c.status.health {
                        runtime_shim::Health::None => "",
                        runtime_shim::Health::Starting => "starting",
                        runtime_shim::Health::Healthy => "healthy",
                        runtime_shim::Health::Unhealthy => "unhealthy",
                    },
                    "ExitCode": c.status.exit_code,
                    "CreatedAt": c.created,
                    "RunningFor": human_ago(c.created),
                    "Labels": c.labels,
                    "Networks": c.networks.join(","),
                    "Ports": ports_text(c),
                    "Publishers": c.ports.iter().map(|p| serde_json::json!({
                        "URL": p.host_ip, "TargetPort": p.container_port,
                        "PublishedPort": p.host_port, "Protocol": p.protocol.as_str(),
                    })).collect::<Vec<_>>(),
                });
                println!("{v}");
            }
        }
        PsFormat::Table => {
            let mut rows = vec![[
                "NAME", "IMAGE", "COMMAND", "SERVICE", "CREATED", "STATUS", "PORTS",
            ]
            .map(String::from)
            .to_vec()];
            for c in containers {
                rows.push(vec![
                    c.name.clone(),
                    c.image.clone(),
                    truncate_command(&c.command),
                    c.labels.get(labels::SERVICE).cloned().unwrap_or_default(),
                    human_ago(c.created),
                    status_text(c.state, &c.status, now_seconds()),
                    ports_text(c),
                ]);
            }
            print_table(&rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `logs`: each container's output with its name as prefix; with `-f`,
/// containers that appear later (after `scale`) are followed too.
pub async fn logs(options: LoadOptions, named: bool, args: LogsArgs) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    let rt = connect().await?;
    let tail = if args.tail == "all" {
        None
    } else {
        Some(
            args.tail
                .parse::<u64>()
                .with_context(|| format!("invalid --tail value {:?}", args.tail))?,
        )
    };
    let since = match &args.since {
        None => None,
        Some(s) => Some(parse_since(s)?),
    };
    let mut followed: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut index = 0usize;
    loop {
        let observed = observe_containers(rt.as_ref(), &project).await?;
        let containers: Vec<Container> =
            orchestrator::plan::target_containers(&observed, &args.services)
                .into_iter()
                .filter(|c| !followed.contains(&c.id))
                .cloned()
                .collect();
        let all: Vec<&Container> = observed.containers.iter().collect();
        let width = log_width(&project, &all, false);
        for c in containers {
            followed.insert(c.id.clone());
            let rt = rt.clone();
            let prefix = log_prefix(
                &short_name(&project, &c),
                width,
                index,
                args.no_color,
                args.no_log_prefix,
            );
            index += 1;
            let opts = LogOptions {
                follow: args.follow,
                tail,
                timestamps: args.timestamps,
                since,
                until: None,
                from_nanos: None,
            };
            tasks.spawn(async move {
                if let Ok(mut stream) = rt.logs(&c.id, &opts).await {
                    while let Some(Ok(line)) = stream.next().await {
                        print_log(&prefix, &line.text);
                    }
                }
            });
        }
        if !args.follow {
            while tasks.join_next().await.is_some() {}
            return Ok(ExitCode::SUCCESS);
        }
        // New containers (scale, restarts) are picked up on the next look.
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn parse_since(s: &str) -> Result<i64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if let Some(d) = orchestrator::model::Duration::parse(s) {
        return Ok(now - d.nanos / 1_000_000_000);
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    bail!("invalid --since value {s:?}: use a relative duration (42m) or seconds since the epoch")
}

/// `images`.
pub async fn images(options: LoadOptions, named: bool, args: ImagesArgs) -> Result<ExitCode> {
    let project = match load_project(&options, named) {
        Ok(p) => p,
        // Outside any project, every image of the runtime, as `image ls`.
        Err(e)
            if !named
                && args.services.is_empty()
                && format!("{e:#}").contains("no configuration file provided") =>
        {
            image::list(connect().await?.as_ref(), args.quiet).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e),
    };
    let rt = connect().await?;
    let observed = observe_containers(rt.as_ref(), &project).await?;
    // Every container of the services, one-off ones too, as Compose lists
    // them: by name.
    let mut containers: Vec<&Container> = observed
        .containers
        .iter()
        .filter(|c| {
            args.services.is_empty()
                || c.labels
                    .get(labels::SERVICE)
                    .is_some_and(|s| args.services.contains(s))
        })
        .collect();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    let inspected =
        futures_util::future::try_join_all(containers.iter().map(|c| rt.inspect_image(&c.image)))
            .await?;
    let rows: Vec<ImageRow> = containers
        .iter()
        .zip(inspected)
        .map(|(c, image)| ImageRow::new(c, image.unwrap_or_default()))
        .collect();
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for row in &rows {
            let id = row
                .image
                .id
                .split_once(':')
                .map_or(row.image.id.as_str(), |(_, hex)| hex);
            if seen.insert(id) {
                println!("{id}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.format == PsFormat::Json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "ID": r.image.id,
                    "ContainerName": r.container,
                    "Repository": r.repository,
                    "Tag": r.tag,
                    "Platform": r.image.platform,
                    "Size": r.image.size,
                    "LastTagTime": rfc3339(r.tagged()),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = vec![[
        "CONTAINER",
        "REPOSITORY",
        "TAG",
        "PLATFORM",
        "IMAGE ID",
        "SIZE",
        "CREATED",
    ]
    .map(String::from)
    .to_vec()];
    let or_none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    for r in &rows {
        table.push(vec![
            r.container.clone(),
            or_none(&r.repository),
            or_none(&r.tag),
            r.image.platform.clone(),
            image::short_id(&r.image.id),
            image::human_size(u64::try_from(r.image.size).unwrap_or(0)),
            human_ago(r.tagged()),
        ]);
    }
    print_table_wide(&table, 20);
    Ok(ExitCode::SUCCESS)
}

/// What `images` shows of a container's image.
struct ImageRow {
    container: String,
    /// The name the container was made with, shortened as Docker shows it
    /// (empty for an image id); `tag` is `latest` when it names none, empty
    /// for a name by digest.
    repository: String,
    tag: String,
    image: runtime_shim::Image,
}

impl ImageRow {
    fn new(c: &Container, image: runtime_shim::Image) -> ImageRow {
        let by_id = c.image.starts_with("sha256:")
            || (c.image.len() == 64 && c.image.bytes().all(|b| b.is_ascii_hexdigit()));
        let (repository, tag) = match runtime_shim::reference::normalize(&c.image) {
            Ok(full) if !by_id => {
                let (name, tag) = runtime_shim::reference::familiar(&full);
                (name, if tag == "<none>" { String::new() } else { tag })
            }
            _ => (String::new(), String::new()),
        };
        ImageRow {
            container: c.name.clone(),
            repository,
            tag,
            image,
        }
    }

    /// When the image was last named, else made: Compose's `LastTagTime`.
    fn tagged(&self) -> i64 {
        if self.image.last_tagged != 0 {
            self.image.last_tagged
        } else {
            self.image.created
        }
    }
}

/// Seconds since the epoch as RFC 3339, as Go prints a time in JSON.
fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| String::new(), |t| t.to_string())
}

/// `port`.
pub async fn port(options: LoadOptions, named: bool, args: PortArgs) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    let rt = connect().await?;
    let observed = observe_containers(rt.as_ref(), &project).await?;
    let c = observed
        .service_containers(&args.service)
        .find(|c| orchestrator::observe::container_number(c) == Some(args.index))
        .with_context(|| {
            format!(
                "service {:?} has no container number {}",
                args.service, args.index
            )
        })?;
    match c.ports.iter().find(|p| {
        p.container_port == args.private_port
            && p.protocol.as_str() == args.protocol
            && p.host_port != 0
    }) {
        Some(p) => {
            println!("{}:{}", p.host_ip, p.host_port);
            Ok(ExitCode::SUCCESS)
        }
        None => bail!(
            "no port {}/{} for container {}",
            args.private_port,
            args.protocol,
            c.name
        ),
    }
}

/// `top`.
pub async fn top(options: LoadOptions, named: bool, args: ServicesArgs) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    let rt = connect().await?;
    let observed = observe_containers(rt.as_ref(), &project).await?;
    for c in orchestrator::plan::target_containers(&observed, &args.services) {
        if c.state != ContainerState::Running {
            continue;
        }
        let (titles, procs) = rt.top(&c.id).await?;
        println!("{}", c.name);
        let mut rows = vec![titles];
        rows.extend(procs);
        print_table(&rows);
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// `ls`: projects found by their containers' labels.
pub async fn ls(args: LsArgs) -> Result<ExitCode> {
    let rt = connect().await?;
    // As Compose: the containers it made (those with a configuration
    // hash), the running ones only unless --all.
    let containers = rt
        .list_containers(
            &[
                LabelFilter::has(labels::PROJECT),
                LabelFilter::has(labels::CONFIG_HASH),
            ],
            args.all,
        )
        .await?;
    let mut projects: BTreeMap<String, (BTreeMap<String, usize>, String)> = BTreeMap::new();
    for c in &containers {
        let Some(p) = c.labels.get(labels::PROJECT) else {
            continue;
        };
        let entry = projects.entry(p.clone()).or_default();
        *entry.0.entry(c.state.as_str().to_string()).or_default() += 1;
        if let Some(files) = c.labels.get(labels::CONFIG_FILES) {
            entry.1 = files.clone();
        }
    }
    if args.quiet {
        for p in projects.keys() {
            println!("{p}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let status = |states: &BTreeMap<String, usize>| {
        states
            .iter()
            .map(|(s, n)| format!("{s}({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match args.format {
        PsFormat::Json => {
            let list: Vec<serde_json::Value> = projects
                .iter()
                .map(|(name, (states, files))| serde_json::json!({"Name": name, "Status": status(states), "ConfigFiles": files}))
                .collect();
            println!("{}", serde_json::Value::Array(list));
        }
        PsFormat::Table => {
            let mut rows = vec![["NAME", "STATUS", "CONFIG FILES"]
                .map(String::from)
                .to_vec()];
            for (name, (states, files)) in &projects {
                rows.push(vec![name.clone(), status(states), files.clone()]);
            }
            print_table_wide(&rows, 20);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `version`: rcompose's, and with `--runtime` (or `RCOMPOSE_RUNTIME`)
/// given, the runtime's and where its state lives.
pub async fn version(args: VersionArgs) -> Result<ExitCode> {
    if args.short {
        println!("{}", env!("CARGO_PKG_VERSION"));
        return Ok(ExitCode::SUCCESS);
    }
    if args.format == Some(VersionFormat::Json) {
        let version = serde_json::json!({ "version": format!("v{}", env!("CARGO_PKG_VERSION")) });
        println!("{version}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("rcompose version v{}", env!("CARGO_PKG_VERSION"));
    if RUNTIME.get().copied().flatten().is_some() {
        let rt = connect().await?;
        println!("runtime: {}", rt.version().await?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `info`: which runtime commands drive, its version, and where its state
/// lives.
pub async fn info() -> Result<ExitCode> {
    println!("rcompose version v{}", env!("CARGO_PKG_VERSION"));
    let rt = connect().await?;
    println!("runtime: {}", rt.version().await?);
    let images = rt.list_images("").await?;
    println!("images: {}", images.len());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_shim::{Health, Status};

    #[test]
    fn durations_are_worded_as_docker_words_them() {
        let cases = [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (3599, "59 minutes"),
            (3600, "About an hour"),
            (5399, "About an hour"),
            (5400, "2 hours"),
            (47 * 3600, "47 hours"),
            (48 * 3600, "2 days"),
            (14 * 86_400, "2 weeks"),
            (61 * 86_400, "2 months"),
            (800 * 86_400, "2 years"),
        ];
        for (secs, words) in cases {
            assert_eq!(human_duration(secs), words, "{secs}s");
        }
    }

    #[test]
    fn status_reads_as_compose_prints_it() {
        let now = 10_000;
        let status = |since, exit_code, health| Status {
            since,
            exit_code,
            health,
            detail: None,
        };
        let cases = [
            (
                ContainerState::Created,
                status(0, 0, Health::None),
                "Created",
            ),
            (
                ContainerState::Running,
                status(now - 3, 0, Health::None),
                "Up 3 seconds",
            ),
            (
                ContainerState::Running,
                status(now - 70, 0, Health::Healthy),
                "Up About a minute (healthy)",
            ),
            (
                ContainerState::Running,
                status(now, 0, Health::Starting),
                "Up Less than a second (health: starting)",
            ),
            (
                ContainerState::Paused,
                status(now - 5, 0, Health::Healthy),
                "Up 5 seconds (Paused)",
            ),
            (
                ContainerState::Exited,
                status(now - 300, 137, Health::None),
                "Exited (137) 5 minutes ago",
            ),
            (
                ContainerState::Restarting,
                status(now - 1, 1, Health::None),
                "Restarting (1) 1 second ago",
            ),
        ];
        for (state, s, text) in cases {
            assert_eq!(status_text(state, &s, now), text);
        }
        let dead = Status {
            detail: Some("Dead".into()),
            ..Status::default()
        };
        assert_eq!(status_text(ContainerState::Exited, &dead, now), "Dead");
    }
}
