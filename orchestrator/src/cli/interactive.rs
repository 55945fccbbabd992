//! Commands that talk to one container: `exec`, `run`, `attach`, `cp`,
//! `commit`, `export`, `stats`, `events`, `wait`, `pull`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{IsTerminal, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use futures_util::StreamExt;
use orchestrator::convert::{self, labels, ContainerContext};
use orchestrator::execute::ExecuteOptions;
use orchestrator::loader::LoadOptions;
use orchestrator::model::{Project, ShellCommand};
use orchestrator::observe::{container_number, observe, observe_containers};
use orchestrator::plan::{plan_build, plan_up, BuildOptions, UpOptions};
use runtime_shim::{CommitSpec, Container, EventKind, ExecSpec, Input, LabelFilter, Session};
use tokio::io::AsyncWriteExt;

use super::{connect, load_project, run_plan, Engine};

/// `exec` flags.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Detached mode: Run command in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Give extended privileges to the process
    #[arg(long)]
    pub privileged: bool,
    /// Run the command as this user
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Disable pseudo-TTY allocation. By default a TTY is allocated when attached to one
    #[arg(short = 'T', long = "no-tty", alias = "no-TTY")]
    pub no_tty: bool,
    /// Index of the container if service has multiple replicas
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Path to workdir directory for this command
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// The service
    pub service: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

/// `run` flags.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Automatically remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Add or override a label
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Override the entrypoint of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Disable pseudo-TTY allocation (default: auto-detected)
    #[arg(short = 'T', long = "no-TTY")]
    pub no_tty: bool,
    /// Keep STDIN open even if not attached (`--interactive=false` not to)
    #[arg(
        short = 'i',
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub interactive: bool,
    /// Add Linux capabilities
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Use the service's network aliases in the network(s) the container connects to
    #[arg(long = "use-aliases")]
    pub use_aliases: bool,
    /// Don't start linked services
    #[arg(long = "no-deps")]
    pub no_deps: bool,
    /// Publish a container's port(s) to the host
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Run command with the service's ports enabled and mapped to the host
    #[arg(short = 'P', long = "service-ports")]
    pub service_ports: bool,
    /// Run as specified username or uid
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Bind mount a volume
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Build image before starting container
    #[arg(long)]
    pub build: bool,
    /// The service
    pub service: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `attach` flags.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// Index of the container if service has multiple replicas
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// The service
    pub service: String,
}

/// `cp` arguments.
#[derive(Args, Debug)]
pub struct CpArgs {
    /// Index of the container if service has multiple replicas
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// Source: `SERVICE:PATH` or a local path
    pub source: String,
    /// Destination: `SERVICE:PATH` or a local path
    pub destination: String,
}

/// `commit` flags.
#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author
    #[arg(short = 'a', long)]
    pub author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change")]
    pub change: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Pause container during commit (`--pause=false` not to)
    #[arg(
        short = 'p',
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub pause: bool,
    /// Index of the container if service has multiple replicas
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// The service
    pub service: String,
    /// `REPOSITORY[:TAG]`
    pub reference: Option<String>,
}

/// `export` flags.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Index of the container if service has multiple replicas
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// The service
    pub service: String,
}

/// `diff` flags.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Index of the container if service has multiple replicas
    #[arg(long, default_value_t = 1)]
    pub index: u32,
    /// The service
    pub service: String,
}

/// `stats` flags.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// Services
    pub services: Vec<String>,
}

/// `events` flags.
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Output events as a stream of json objects
    #[arg(long)]
    pub json: bool,
    /// Services
    pub services: Vec<String>,
}

/// `wait` flags.
#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Drops project when the first container stops
    #[arg(long = "down-project")]
    pub down_project: bool,
    /// Services
    #[arg(required = true)]
    pub services: Vec<String>,
}

/// `pull` flags.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Ignore images that can be built
    #[arg(long = "ignore-buildable")]
    pub ignore_buildable: bool,
    /// Pull what it can and ignores images with pull failures
    #[arg(long = "ignore-pull-failures")]
    pub ignore_pull_failures: bool,
    /// Pull without printing progress information
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Services
    pub services: Vec<String>,
}

/// The container number `index` of `service`.
async fn service_container(
    rt: &Arc<dyn runtime_shim::Engine>,
    project: &Project,
    service: &str,
    index: u32,
) -> Result<Container> {
    let observed = observe_containers(rt.as_ref(), project).await?;
    let found = observed
        .service_containers(service)
        .find(|c| container_number(c) == Some(index))
        .cloned();
    match found {
        Some(c) => Ok(c),
        None => bail!("service {service:?} is not running (no container number {index})"),
    }
}

/// Puts the terminal in raw mode for the life of the guard.
struct RawTerminal {
    saved: Option<rustix::termios::Termios>,
}

impl RawTerminal {
    fn enable() -> RawTerminal {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            raw.make_raw();
            let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
        }
        RawTerminal { saved }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    Some((ws.ws_col, ws.ws_row))
}

/// Copies standard input into a session's input until it ends.
fn pump_stdin(input: Option<Input>) {
    let Some(mut input) = input else { return };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if input.write_all(&chunk).await.is_err() {
                return;
            }
            let _ = input.flush().await;
        }
        let _ = input.shutdown().await;
    });
}

/// The last chunk printed of each stream (`None`: nothing yet).
#[derive(Default)]
struct LastChunks {
    stdout: Option<String>,
    stderr: Option<String>,
}

/// Prints one chunk of container output on the stream it came from.
fn print_chunk(line: &runtime_shim::LogLine) {
    if line.stderr {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(line.text.as_bytes());
        let _ = e.flush();
    } else {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(line.text.as_bytes());
        let _ = o.flush();
    }
}

/// Prints a session's output until it ends; returns the last chunk of
/// each stream.
async fn drain(session: &mut Session) -> LastChunks {
    let mut last = LastChunks::default();
    let Some(output) = session.output.as_mut() else {
        return last;
    };
    while let Some(Ok(line)) = output.next().await {
        print_chunk(&line);
        let slot = if line.stderr {
            &mut last.stderr
        } else {
            &mut last.stdout
        };
        *slot = Some(line.text);
    }
    last
}

/// After a one-off has exited: a last line without a newline reaches the
/// Docker Engine's log only as its output closes, and a log follower that
/// ended at the container's exit can miss it. The log's final entries say
/// what each stream ended with; one not printed yet is printed now.
async fn print_missed_ending(rt: &Arc<dyn runtime_shim::Engine>, id: &str, printed: &LastChunks) {
    let tail = runtime_shim::LogOptions {
        tail: Some(4),
        ..runtime_shim::LogOptions::default()
    };
    let Ok(mut stream) = rt.logs(id, &tail).await else {
        return;
    };
    let mut ending = LastChunks::default();
    while let Some(Ok(line)) = stream.next().await {
        let slot = if line.stderr {
            &mut ending.stderr
        } else {
            &mut ending.stdout
        };
        *slot = Some(line.text);
    }
    for (stderr, ended, seen) in [
        (false, ending.stdout, &printed.stdout),
        (true, ending.stderr, &printed.stderr),
    ] {
        let Some(text) = ended.filter(|t| !t.ends_with('\n')) else {
            continue;
        };
        if seen.as_deref() != Some(text.as_str()) {
            print_chunk(&runtime_shim::LogLine { stderr, text });
        }
    }
}

/// `exec`.
pub async fn exec(options: LoadOptions, named: bool, args: ExecArgs) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    let rt = connect().await?;
    let c = service_container(&rt, &project, &args.service, args.index).await?;
    let tty = !args.no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let spec = ExecSpec {
        command: args.command.clone(),
        env: args.env.clone(),
        user: args.user.clone().unwrap_or_default(),
        working_dir: args.workdir.clone().unwrap_or_default(),
        tty,
        stdin: !args.detach && (tty || !std::io::stdin().is_terminal()),
        privileged: args.privileged,
        detach: args.detach,
    };
    let mut session = rt.exec(&c.id, &spec).await?;
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    let _raw = tty.then(RawTerminal::enable);
    if tty {
        if let Some((w, h)) = terminal_size() {
            let _ = session.process.resize(w, h).await;
        }
    }
    pump_stdin(session.input.take());
    drain(&mut session).await;
    drop(_raw);
    let code = session.process.wait().await?;
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    ))
}

/// Twelve hex digits, as Compose names a one-off container
/// (`project-web-run-0a1b2c3d4e5f`): only unlikely to clash.
fn random_slug() -> String {
    format!("{:012x}", fastrand::u64(..1 << 48))
}

/// `run`: a one-off container of a service, its dependencies started first.
pub async fn run(engine: Engine, options: LoadOptions, args: RunArgs) -> Result<ExitCode> {
    let project = load_project(&options, false)?;
    let Some(service) = project.services.get(&args.service).cloned() else {
        bail!("no such service: {}", args.service);
    };
    let rt = connect().await?;
    // The project's networks and volumes, and the dependencies, as `up`
    // would start them (under the project's lock); not the service itself,
    // which runs as a one-off.
    let lock = super::lock::lock_project(rt.as_ref(), &project.name, engine.dry_run).await?;
    let observed = observe(rt.as_ref(), &project).await?;
    let deps: Vec<String> = service.depends_on.keys().cloned().collect();
    let build = plan_build(
        &project,
        &observed,
        &BuildOptions {
            services: deps.clone(),
            now: super::now_seconds(),
            ..BuildOptions::default()
        },
    );
    let built = run_plan(&rt, &engine, &build, "Building", ExecuteOptions::default()).await;
    let mut observed = observe(rt.as_ref(), &project).await?;
    orchestrator::observe::observe_limits(rt.as_ref(), &mut observed).await?;
    let up = UpOptions {
        services: vec![args.service.clone()],
        no_deps: args.no_deps,
        env_files: engine.env_files.clone(),
        ..UpOptions::default()
    };
    let plan = plan_up(&project, &observed, &up)
        .without(|op| op.action.service() == Some(args.service.as_str()));
    let ran = run_plan(&rt, &engine, &plan, "Running", ExecuteOptions::default()).await;
    if !built.success() || !ran.success() {
        bail!("the dependencies of {} could not be started", args.service);
    }
    drop(lock);
    let observed = observe(rt.as_ref(), &project).await?;
    let build_only = plan_build(
        &project,
        &observed,
        &BuildOptions {
            services: vec![args.service.clone()],
            always: args.build,
            now: super::now_seconds(),
            ..BuildOptions::default()
        },
    );
    let built = run_plan(
        &rt,
        &engine,
        &build_only,
        "Building",
        ExecuteOptions::default(),
    )
    .await;
    if !built.success() {
        return Ok(ExitCode::from(1));
    }
    let mut svc = service.clone();
    if !args.command.is_empty() {
        svc.command = Some(ShellCommand(args.command.clone()));
    }
    if let Some(ep) = &args.entrypoint {
        svc.entrypoint = Some(ShellCommand(
            orchestrator::model::values::shell_split(ep).unwrap_or_else(|| vec![ep.clone()]),
        ));
        // A new entrypoint runs without the service's command, as Compose's.
        if args.command.is_empty() {
            svc.command = Some(ShellCommand(Vec::new()));
        }
    }
    // Each flag wins over the file's opposite list.
    if !args.cap_add.is_empty() {
        svc.cap_add.extend(args.cap_add.iter().cloned());
        svc.cap_drop.retain(|c| !args.cap_add.contains(c));
    }
    if !args.cap_drop.is_empty() {
        svc.cap_drop.extend(args.cap_drop.iter().cloned());
        svc.cap_add.retain(|c| !args.cap_drop.contains(c));
    }
    if let Some(u) = &args.user {
        svc.user = u.clone();
    }
    if let Some(w) = &args.workdir {
        svc.working_dir = w.clone();
    }
    for e in &args.env {
        match e.split_once('=') {
            Some((k, v)) => svc.environment.0.insert(k.to_string(), Some(v.to_string())),
            None => svc
                .environment
                .0
                .insert(e.clone(), options.environment.get(e).cloned()),
        };
    }
    if !args.service_ports {
        svc.ports.clear();
    }
    for p in &args.publish {
        let ports = orchestrator::loader::canonical::parse_port(p).map_err(anyhow::Error::msg)?;
        for v in ports {
            let port: orchestrator::model::Port =
                serde_yaml::from_value(v).context("reading --publish")?;
            svc.ports.push(port);
        }
    }
    for v in &args.volume {
        let parsed =
            orchestrator::loader::canonical::parse_volume(v).map_err(anyhow::Error::msg)?;
        let mut mount: orchestrator::model::VolumeMount =
            serde_yaml::from_value(parsed).context("reading --volume")?;
        if mount.kind == "bind" && !mount.source.starts_with('/') {
            mount.source = options.cwd.join(&mount.source).display().to_string();
        }
        svc.volumes.push(mount);
    }
    let tty = !args.no_tty
        && !args.detach
        && std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal();
    svc.tty = tty;
    svc.stdin_open = args.interactive && !args.detach;
    let image_id = rt
        .inspect_image(&convert::image_name(&project, &args.service, &svc))
        .await?
        .map(|i| i.id)
        .unwrap_or_default();
    let mut spec = convert::container_spec(
        &project,
        &args.service,
        &svc,
        0,
        &ContainerContext {
            image_id,
            env_files: engine.env_files.clone(),
            ..ContainerContext::default()
        },
    );
    let slug = random_slug();
    spec.name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}-run-{slug}", project.name, args.service));
    spec.labels.insert(labels::ONEOFF.into(), "True".into());
    spec.labels.insert("com.docker.compose.slug".into(), slug);
    spec.labels.remove(labels::CONTAINER_NUMBER);
    for l in &args.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        spec.labels.insert(k.to_string(), v.to_string());
    }
    if spec.restart.is_none() || args.rm {
        spec.restart = Some(runtime_shim::RestartPolicy::No);
    }
    spec.stdin_once = svc.stdin_open;
    // A one-off answers to its own name only, unless --use-aliases: then
    // to the service's name and aliases too (`container_spec` gave the
    // replica's name first, then those).
    for a in &mut spec.networks {
        let service_aliases = a.aliases.split_off(1.min(a.aliases.len()));
        a.aliases = vec![spec.name.clone()];
        if args.use_aliases {
            a.aliases.extend(service_aliases);
        }
    }
    if engine.dry_run {
        println!(
            "create container {} (one-off of service {})",
            spec.name, args.service
        );
        return Ok(ExitCode::SUCCESS);
    }
    let id = rt.create_container(&spec).await?;
    if args.detach {
        rt.start_container(&id).await?;
        println!("{}", spec.name);
        return Ok(ExitCode::SUCCESS);
    }
    // Input goes through an attach; output comes from the container's log,
    // which holds everything from the start and ends when the container
    // stops, whatever happens to the input side.
    let mut session = rt.attach(&id, svc.stdin_open, false).await?;
    if let Err(e) = rt.start_container(&id).await {
        if args.rm {
            let _ = rt.remove_container(&id, true, true).await;
        }
        return Err(e.into());
    }
    let _raw = tty.then(RawTerminal::enable);
    if tty {
        if let Some((w, h)) = terminal_size() {
            let _ = session.process.resize(w, h).await;
        }
    }
    pump_stdin(session.input.take());
    let follow = runtime_shim::LogOptions {
        follow: true,
        ..runtime_shim::LogOptions::default()
    };
    session.output = Some(rt.logs(&id, &follow).await?);
    let printed = drain(&mut session).await;
    let code = rt.wait_container(&id).await.unwrap_or(-1);
    print_missed_ending(&rt, &id, &printed).await;
    drop(_raw);
    if args.rm {
        let _ = rt.remove_container(&id, true, true).await;
    }
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    ))
}

/// `attach`.
pub async fn attach(options: LoadOptions, named: bool, args: AttachArgs) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    let rt = connect().await?;
    let c = service_container(&rt, &project, &args.service, args.index).await?;
    let mut session = rt.attach(&c.id, !args.no_stdin, false).await?;
    pump_stdin(session.input.take());
    drain(&mut session).await;
    Ok(ExitCode::SUCCESS)
}

/// `cp`: between a service container and the host, either way.
pub async fn cp(options: LoadOptions, named: bool, args: CpArgs) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    let split = |s: &str| -> Option<(String, String)> {
        let (svc, path) = s.split_once(':')?;
        (!svc.contains('/') && project.services.contains_key(svc))
            .then(|| (svc.to_string(), path.to_string()))
    };
    let rt = connect().await?;
    match (split(&args.source), split(&args.destination)) {
        (Some((svc, path)), None) => {
            let c = service_container(&rt, &project, &svc, args.index).await?;
            let mut stream = rt.copy_from(&c.id, &path).await?;
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                bytes.extend(chunk?);
            }
            let dest = PathBuf::from(&args.destination);
            extract(bytes.as_slice(), &dest, Path::new(&path))?;
            eprintln!("Copied {}:{path} to {}", c.name, dest.display());
        }
        (None, Some((svc, path))) => {
            let c = service_container(&rt, &project, &svc, args.index).await?;
            let src = PathBuf::from(&args.source);
            let tar = archive(&src, &path)?;
            let dir = if path.ends_with('/') { path.clone() } else {
                Path::new(&path).parent().map(|p| p.display().to_string()).filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into())
            };
            rt.copy_to(&c.id, &dir, tar).await?;
            eprintln!("Copied {} to {}:{path}", src.display(), c.name);
        }
        _ => bail!("copying between two containers or two local paths is not supported: use SERVICE:PATH on exactly one side"),
    }
    Ok(ExitCode::SUCCESS)
}

/// A tar holding `src` under the name the destination path asks for.
fn archive(src: &Path, dest: &str) -> Result<Vec<u8>> {
    let name = if dest.ends_with('/') {
        src.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    } else {
        Path::new(dest)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    };
    let mut builder = tar::Builder::new(Vec::new());
    if src.is_dir() {
        builder
            .append_dir_all(&name, src)
            .with_context(|| format!("archiving {}", src.display()))?;
    } else {
        builder
            .append_path_with_name(src, &name)
            .with_context(|| format!("archiving {}", src.display()))?;
    }
    builder.into_inner().context("finishing the archive")
}

/// Extracts the archive of the container path `src` to `dest`, as `docker cp`
/// does: into `dest` when it is a directory already (the copy keeps its
/// name), else as `dest` itself (a file written there, or a directory made
/// there with the contents of the source).
///
/// The archive comes from the container, so no entry of it is trusted to
/// stay in the destination: a name that climbs out with `..` is refused, and
/// a leading `/` is dropped, so that the name is taken from the destination.
/// Nothing is written through a symbolic link that leads out of the
/// destination, whether the archive made it or it was there before, and an
/// entry that lands on a link replaces the link. A hard link's target is an
/// archive name too, found from the destination (never from the working
/// directory), and must be a file inside it.
fn extract(archive: impl Read, dest: &Path, src: &Path) -> Result<()> {
    let into_dir = dest.is_dir();
    // Entries are named from the copied item: `app/conf` for `/etc/app`.
    // Copied to a new name, `app` is `dest` itself; copied into a directory,
    // it keeps its name.
    let base = if into_dir { None } else { src.file_name() };
    let destination = Destination::new(dest, into_dir)?;
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        let name = entry.path().context("reading the archive")?.into_owned();
        let refuse = |why: &str| anyhow!("refusing archive entry {}: {why}", name.display());
        let rel = archive_relative(&name, base)
            .ok_or_else(|| refuse("its name leads out of the destination"))?;
        if into_dir && rel.as_os_str().is_empty() {
            // The archive's own top (`./`): the destination is that already.
            if kind.is_dir() || entry.path_bytes().ends_with(b"/") {
                continue;
            }
            return Err(refuse("a file with no name"));
        }
        let target = destination.place(&rel, &name)?;
        if kind.is_hard_link() {
            let link = entry
                .link_name()
                .context("reading the archive")?
                .ok_or_else(|| refuse("a hard link with no target"))?
                .into_owned();
            let source = destination.link_source(&link, base).ok_or_else(|| {
                refuse(&format!(
                    "its hard link target {} is not a file in the destination",
                    link.display()
                ))
            })?;
            // As tar does, a file already at the name gives way.
            if std::fs::symlink_metadata(&target).is_ok() {
                std::fs::remove_file(&target)
                    .with_context(|| format!("replacing {}", target.display()))?;
            }
            std::fs::hard_link(&source, &target)
                .with_context(|| format!("linking {} to {}", target.display(), source.display()))?;
        } else {
            entry
                .unpack(&target)
                .with_context(|| format!("writing {}", target.display()))?;
        }
    }
    Ok(())
}

/// An archive name as a path below the destination: `.` parts and a leading
/// `/` dropped, and the copied item's own name `base`, if given, too. `None`
/// for a name with a `..` part.
fn archive_relative(name: &Path, base: Option<&OsStr>) -> Option<PathBuf> {
    let mut parts = Vec::new();
    for part in name.components() {
        match part {
            Component::Normal(p) => parts.push(p),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    if base.is_some() && parts.first().copied() == base {
        parts.remove(0);
    }
    Some(parts.into_iter().collect())
}

/// Where `cp` extracts to, and the same place with its links resolved, which
/// every resolved path written to must lie in.
struct Destination {
    root: PathBuf,
    resolved: PathBuf,
}

impl Destination {
    fn new(dest: &Path, into_dir: bool) -> Result<Self> {
        let resolved = if into_dir {
            std::fs::canonicalize(dest).with_context(|| format!("resolving {}", dest.display()))?
        } else {
            // `dest` is made by the copy: resolve the folder it goes in. Its
            // own name is not resolved, even if a link is there now: the
            // archive must not be able to make it one and so move the root.
            let name = dest
                .file_name()
                .ok_or_else(|| anyhow!("{} does not name a file", dest.display()))?;
            let parent = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
            std::fs::canonicalize(parent)
                .with_context(|| format!("resolving {}", parent.display()))?
                .join(name)
        };
        Ok(Destination {
            root: dest.to_path_buf(),
            resolved,
        })
    }

    /// Whether a path, its links resolved, lies in the destination.
    fn holds(&self, path: &Path) -> bool {
        std::fs::canonicalize(path).is_ok_and(|p| p.starts_with(&self.resolved))
    }

    /// The path the entry `name` at `rel` is written to, with the folders
    /// above it made. Each folder on the way that is a link must lead to a
    /// folder in the destination; a link at the path itself is removed, so
    /// that the entry replaces it rather than being written through it.
    fn place(&self, rel: &Path, name: &Path) -> Result<PathBuf> {
        let parts: Vec<Component<'_>> = rel.components().collect();
        let Some((last, above)) = parts.split_last() else {
            return Ok(self.root.clone());
        };
        let mut dir = self.root.clone();
        self.enter(&dir, name)?;
        for part in above {
            dir.push(part);
            self.enter(&dir, name)?;
        }
        let target = dir.join(last);
        if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&target)
                .with_context(|| format!("replacing the link {}", target.display()))?;
        }
        Ok(target)
    }

    /// Makes `dir` if it is missing; refuses it if it is a link that leads
    /// out of the destination.
    fn enter(&self, dir: &Path, name: &Path) -> Result<()> {
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(dir)
                .with_context(|| format!("creating {}", dir.display())),
            Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
            Ok(m) if m.file_type().is_symlink() && !self.holds(dir) => bail!(
                "refusing archive entry {}: it would be written through {}, a link that leads out of the destination",
                name.display(),
                dir.display()
            ),
            Ok(_) => Ok(()),
        }
    }

    /// The file a hard link named `link` in the archive points to, its links
    /// resolved, if it is in the destination.
    fn link_source(&self, link: &Path, base: Option<&OsStr>) -> Option<PathBuf> {
        let rel = archive_relative(link, base)?;
        let path = if rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        };
        let source = std::fs::canonicalize(path).ok()?;
        source.starts_with(&self.resolved).then_some(source)
    }
}

/// `commit`.
pub async fn commit(options: LoadOptions, named: bool, args: CommitArgs) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    let rt = connect().await?;
    let c = service_container(&rt, &project, &args.service, args.index).await?;
    let id = rt
        .commit(
            &c.id,
            &CommitSpec {
                reference: args.reference.clone().unwrap_or_default(),
                message: args.message.clone().unwrap_or_default(),
                author: args.author.clone().unwrap_or_default(),
                pause: args.pause,
                changes: args.change.clone(),
            },
        )
        .await?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// `export`.
pub async fn export(options: LoadOptions, named: bool, args: ExportArgs) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    let rt = connect().await?;
    let c = service_container(&rt, &project, &args.service, args.index).await?;
    if args.output.is_none() && std::io::stdout().is_terminal() {
        bail!("refusing to write an archive to a terminal: use -o FILE or redirect the output");
    }
    let mut stream = rt.export(&c.id).await?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk?)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `diff`: what a service container changed in its filesystem, as
/// `docker diff` prints it (A added, C changed, D deleted).
pub async fn diff(options: LoadOptions, named: bool, args: DiffArgs) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    let rt = connect().await?;
    let c = service_container(&rt, &project, &args.service, args.index).await?;
    let mut out = std::io::stdout().lock();
    for change in rt.changes(&c.id).await? {
        writeln!(out, "{} {}", change.kind.letter(), change.path)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", units[i]).replace(".000", "")
    }
}

fn decimal_bytes(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", units[i])
    }
}

/// `stats`.
pub async fn stats(options: LoadOptions, named: bool, args: StatsArgs) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    let rt = connect().await?;
    loop {
        let observed = observe_containers(rt.as_ref(), &project).await?;
        let containers: Vec<&Container> =
            orchestrator::plan::target_containers(&observed, &args.services)
                .into_iter()
                .filter(|c| args.all || c.state == runtime_shim::ContainerState::Running)
                .collect();
        let mut rows = vec![[
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "NET I/O",
            "BLOCK I/O",
            "PIDS",
        ]
        .map(String::from)
        .to_vec()];
        for c in containers {
            let s = rt.stats(&c.id).await.unwrap_or_default();
            let mem_pct = if s.memory_limit > 0 {
                s.memory_usage as f64 / s.memory_limit as f64 * 100.0
            } else {
                0.0
            };
            rows.push(vec![
                c.id.chars().take(12).collect(),
                c.name.clone(),
                format!("{:.2}%", s.cpu_percent),
                format!(
                    "{} / {}",
                    human_bytes(s.memory_usage),
                    human_bytes(s.memory_limit)
                ),
                format!("{mem_pct:.2}%"),
                format!(
                    "{} / {}",
                    decimal_bytes(s.net_io.0),
                    decimal_bytes(s.net_io.1)
                ),
                format!(
                    "{} / {}",
                    decimal_bytes(s.block_io.0),
                    decimal_bytes(s.block_io.1)
                ),
                s.pids.to_string(),
            ]);
        }
        if !args.no_stream {
            print!("\x1b[2J\x1b[H");
        }
        super::print_table(&rows);
        if args.no_stream {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// `events`.
pub async fn events(options: LoadOptions, named: bool, args: EventsArgs) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    let rt = connect().await?;
    let filter = [LabelFilter::equals(labels::PROJECT, &project.name)];
    let mut stream = rt.events(&filter).await?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            item = stream.next() => {
                let Some(item) = item else { return Ok(ExitCode::SUCCESS) };
                let e = item?;
                let service = e.labels.get(labels::SERVICE).cloned().unwrap_or_default();
                if !args.services.is_empty() && !args.services.contains(&service) {
                    continue;
                }
                // As the engine reports them: the container's own labels,
                // its name and image, and what the event carries.
                let mut attrs: BTreeMap<String, String> = e
                    .labels
                    .iter()
                    .filter(|(k, _)| !k.starts_with("com.docker.compose."))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                attrs.insert("name".into(), e.name.clone());
                attrs.insert("image".into(), e.image.clone());
                match e.kind {
                    EventKind::Died { exit_code } => {
                        attrs.insert("exitCode".into(), exit_code.to_string());
                    }
                    EventKind::Killed { signal: Some(signal) } => {
                        attrs.insert("signal".into(), signal.to_string());
                    }
                    _ => {}
                }
                let time = e.time_nanos.div_euclid(1_000_000_000);
                let action = e.kind.action();
                if args.json {
                    let v = serde_json::json!({
                        "time": time, "type": "container", "action": action,
                        "id": e.id, "service": service, "attributes": attrs,
                    });
                    println!("{v}");
                } else {
                    let a: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!("{time} container {action} {} ({})", e.id, a.join(", "));
                }
            }
        }
    }
}

/// `wait`: blocks until the services' first containers stop; returns the first exit code.
pub async fn wait(
    engine: Engine,
    options: LoadOptions,
    named: bool,
    args: WaitArgs,
) -> Result<ExitCode> {
    let project = load_project(&options, named)?;
    let rt = connect().await?;
    let observed = observe_containers(rt.as_ref(), &project).await?;
    let targets: Vec<Container> = orchestrator::plan::target_containers(&observed, &args.services)
        .into_iter()
        .cloned()
        .collect();
    if targets.is_empty() {
        bail!("no containers for {}", args.services.join(", "));
    }
    let mut set = tokio::task::JoinSet::new();
    for c in targets {
        let rt = rt.clone();
        set.spawn(async move { rt.wait_container(&c.id).await });
    }
    let code = match set.join_next().await {
        Some(Ok(Ok(code))) => code,
        Some(Ok(Err(e))) => return Err(e.into()),
        _ => 1,
    };
    if args.down_project {
        let observed = observe(rt.as_ref(), &project).await?;
        let plan = orchestrator::plan::plan_down(
            &project,
            &observed,
            &orchestrator::plan::DownOptions::default(),
        );
        run_plan(&rt, &engine, &plan, "Running", ExecuteOptions::default()).await;
    }
    println!("{code}");
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    ))
}

/// `pull`.
pub async fn pull(engine: Engine, options: LoadOptions, args: PullArgs) -> Result<ExitCode> {
    let project = load_project(&options, false)?;
    let rt = connect().await?;
    let plan = orchestrator::plan::plan_pull(
        &project,
        &orchestrator::plan::PullOptions {
            services: args.services.clone(),
            ignore_buildable: args.ignore_buildable,
        },
    );
    let engine = Engine {
        progress: if args.quiet {
            super::progress::Mode::Quiet
        } else {
            engine.progress
        },
        ..engine
    };
    let outcome = run_plan(&rt, &engine, &plan, "Pulling", ExecuteOptions::default()).await;
    for (i, e) in &outcome.failures {
        eprintln!("Error: {}: {e}", plan.ops[*i].action.subject());
    }
    if outcome.success() || args.ignore_pull_failures {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    /// A fresh folder for one test, with `dest/` and `outside/` in it.
    fn workspace(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rcompose-cp-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("dest")).unwrap();
        fs::create_dir_all(dir.join("outside")).unwrap();
        dir
    }

    /// An archive written entry by entry, with names set byte for byte, as a
    /// hostile container could send them (`Builder::append_data` would
    /// refuse `..` and absolute names).
    #[derive(Default)]
    struct Archive(Vec<(String, tar::EntryType, String, Vec<u8>)>);

    impl Archive {
        fn dir(mut self, name: &str) -> Self {
            self.0.push((
                name.into(),
                tar::EntryType::Directory,
                String::new(),
                vec![],
            ));
            self
        }
        fn file(mut self, name: &str, data: &str) -> Self {
            self.0.push((
                name.into(),
                tar::EntryType::Regular,
                String::new(),
                data.into(),
            ));
            self
        }
        fn symlink(mut self, name: &str, to: &str) -> Self {
            self.0
                .push((name.into(), tar::EntryType::Symlink, to.into(), vec![]));
            self
        }
        fn hard_link(mut self, name: &str, to: &str) -> Self {
            self.0
                .push((name.into(), tar::EntryType::Link, to.into(), vec![]));
            self
        }
        fn bytes(&self) -> Vec<u8> {
            let mut builder = tar::Builder::new(Vec::new());
            for (name, kind, link, data) in &self.0 {
                let mut header = tar::Header::new_gnu();
                let slot = &mut header.as_old_mut().name;
                assert!(name.len() < slot.len(), "name too long: {name}");
                slot[..name.len()].copy_from_slice(name.as_bytes());
                header.set_entry_type(*kind);
                header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
                header.set_size(data.len() as u64);
                if !link.is_empty() {
                    header.set_link_name_literal(link).unwrap();
                }
                header.set_cksum();
                builder.append(&header, data.as_slice()).unwrap();
            }
            builder.into_inner().unwrap()
        }
        fn extract(&self, dest: &Path, src: &str) -> Result<()> {
            extract(self.bytes().as_slice(), dest, Path::new(src))
        }
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// What is left in `dir`, sorted, as relative paths.
    fn listing(dir: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                out.push(path.strip_prefix(root).unwrap().display().to_string());
                if fs::symlink_metadata(&path).unwrap().is_dir() {
                    walk(root, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    fn refusal_names(result: Result<()>, entry: &str) {
        let message = format!("{:#}", result.expect_err("the archive must be refused"));
        assert!(
            message.contains(&format!("refusing archive entry {entry}")),
            "{message}"
        );
    }

    #[test]
    fn cp_refuses_entries_that_climb_out_with_dot_dot() {
        let w = workspace("dotdot");
        let dest = w.join("dest");
        let archive = Archive::default()
            .file("app", "ok")
            .file("../escape", "pwned")
            .file("../outside/escape", "pwned");
        refusal_names(archive.extract(&dest, "/srv/app"), "../escape");
        assert!(!w.join("escape").exists());
        assert!(listing(&w.join("outside")).is_empty());
        // Copied to a new name, the same.
        let new = w.join("new");
        refusal_names(archive.extract(&new, "/srv/app"), "../escape");
        assert!(!w.join("escape").exists());
        let _ = fs::remove_dir_all(&w);
    }

    #[test]
    fn cp_keeps_absolute_names_inside_the_destination() {
        let w = workspace("absolute");
        let dest = w.join("dest");
        let outside = w.join("outside").join("escape");
        let name = outside.display().to_string();
        Archive::default()
            .file(&name, "stays in")
            .extract(&dest, "/srv/escape")
            .unwrap();
        assert!(!outside.exists(), "{name} was written outside");
        let inside = dest.join(name.trim_start_matches('/'));
        assert_eq!(read(&inside), "stays in");
        // `/abs/escape` too: under the destination, never at the root.
        let new = w.join("new");
        Archive::default()
            .dir("/abs/")
            .file("/abs/escape", "stays in")
            .extract(&new, "/abs")
            .unwrap();
        assert_eq!(read(&new.join("escape")), "stays in");
        let _ = fs::remove_dir_all(&w);
    }

    #[test]
    fn cp_refuses_to_write_through_a_link_that_leads_out() {
        let w = workspace("symlink");
        let dest = w.join("dest");
        let outside = w.join("outside");
        // An absolute link to a folder of the temporary directory, then a
        // file written through it.
        let archive = Archive::default()
            .dir("app/")
            .symlink("app/link", &outside.display().to_string())
            .file("app/link/pwned", "pwned");
        refusal_names(archive.extract(&dest, "/app"), "app/link/pwned");
        assert!(listing(&outside).is_empty());
        // The link itself is copied as docker cp copies it.
        assert!(fs::symlink_metadata(dest.join("app/link"))
            .unwrap()
            .file_type()
            .is_symlink());
        // Relative, climbing, and as the destination itself.
        let archive = Archive::default()
            .symlink("up", "../outside")
            .file("up/pwned", "pwned");
        fs::create_dir(w.join("dest2")).unwrap();
        refusal_names(archive.extract(&w.join("dest2"), "/up"), "up/pwned");
        let archive = Archive::default()
            .symlink("app", &outside.display().to_string())
            .file("app/pwned", "pwned");
        refusal_names(archive.extract(&w.join("new"), "/app"), "app/pwned");
        assert!(listing(&outside).is_empty());
        // A directory entry on a link replaces the link; it does not change
        // what the link points to.
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
        let dest3 = w.join("dest3");
        Archive::default()
            .dir("app/")
            .symlink("app/d", &outside.display().to_string())
            .dir("app/d/")
            .file("app/d/f", "in")
            .extract(&dest3, "/app")
            .unwrap();
        assert_eq!(read(&dest3.join("d/f")), "in");
        assert!(listing(&outside).is_empty());
        assert_eq!(fs::metadata(&outside).unwrap().mode() & 0o777, 0o700);
        let _ = fs::remove_dir_all(&w);
    }

    #[test]
    fn cp_refuses_hard_links_to_files_outside() {
        let w = workspace("hardlink");
        let dest = w.join("dest");
        let passwd = w.join("outside").join("passwd");
        fs::write(&passwd, "root:x:0:0").unwrap();
        let absolute = passwd.display().to_string();
        for (link, archive) in [
            (
                "app/h1",
                Archive::default()
                    .dir("app/")
                    .hard_link("app/h1", &absolute),
            ),
            (
                "app/h2",
                Archive::default()
                    .dir("app/")
                    .hard_link("app/h2", "../outside/passwd"),
            ),
            (
                "app/h3",
                Archive::default()
                    .dir("app/")
                    .symlink("app/l", &w.join("outside").display().to_string())
                    .hard_link("app/h3", "app/l/passwd"),
            ),
            (
                "app/h4",
                Archive::default()
                    .dir("app/")
                    .symlink("app/l", &absolute)
                    .hard_link("app/h4", "app/l"),
            ),
        ] {
            refusal_names(archive.extract(&dest, "/app"), link);
            assert_eq!(fs::metadata(&passwd).unwrap().nlink(), 1, "{link}");
        }
        // A relative name is found from the destination, not from the
        // working directory (the crate's folder under cargo test).
        let here = fs::metadata("Cargo.toml").unwrap().nlink();
        let archive = Archive::default()
            .dir("app/")
            .hard_link("app/h5", "Cargo.toml");
        refusal_names(archive.extract(&dest, "/app"), "app/h5");
        assert_eq!(fs::metadata("Cargo.toml").unwrap().nlink(), here);
        assert_eq!(read(&passwd), "root:x:0:0");
        let _ = fs::remove_dir_all(&w);
    }

    #[test]
    fn cp_copies_files_and_directories_as_docker_cp_does() {
        let w = workspace("normal");
        let tree = Archive::default()
            .dir("app/")
            .file("app/a", "A")
            .dir("app/sub/")
            .file("app/sub/b", "B")
            .symlink("app/ln", "a")
            .symlink("app/abs", "/etc/hostname")
            .hard_link("app/sub/h", "app/a");
        let contents = ["a", "abs", "ln", "sub", "sub/b", "sub/h"];
        // A directory to a new path: the path is the directory.
        let new = w.join("new");
        tree.extract(&new, "/srv/app").unwrap();
        assert_eq!(listing(&new), contents);
        assert_eq!(read(&new.join("sub/b")), "B");
        assert_eq!(read(&new.join("ln")), "A");
        assert_eq!(
            fs::read_link(new.join("abs")).unwrap(),
            Path::new("/etc/hostname")
        );
        assert_eq!(
            fs::metadata(new.join("sub/h")).unwrap().ino(),
            fs::metadata(new.join("a")).unwrap().ino()
        );
        // Into an existing directory: it keeps its name.
        let dest = w.join("dest");
        tree.extract(&dest, "/srv/app").unwrap();
        let mut inside = vec!["app".to_string()];
        inside.extend(contents.iter().map(|c| format!("app/{c}")));
        assert_eq!(listing(&dest), inside);
        // Again: what is there is overwritten.
        tree.extract(&dest, "/srv/app").unwrap();
        assert_eq!(listing(&dest), inside);
        // A file into a directory, to a new file, over a file.
        let file = Archive::default().file("f.txt", "F");
        file.extract(&dest, "/srv/f.txt").unwrap();
        assert_eq!(read(&dest.join("f.txt")), "F");
        let out = w.join("deeper/out.txt");
        file.extract(&out, "/srv/f.txt").unwrap();
        assert_eq!(read(&out), "F");
        fs::write(&out, "old").unwrap();
        file.extract(&out, "/srv/f.txt").unwrap();
        assert_eq!(read(&out), "F");
        // The contents of a directory (`/srv/app/.`): entries named `./x`.
        let dot = w.join("dot");
        Archive::default()
            .dir("./")
            .file("./x", "X")
            .extract(&dot, "/srv/app/.")
            .unwrap();
        assert_eq!(read(&dot.join("x")), "X");
        let _ = fs::remove_dir_all(&w);
    }
}
