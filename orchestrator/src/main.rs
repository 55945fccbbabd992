//! `rcompose`: the command line. It parses flags, gathers the process
//! environment, calls the library and prints; it makes no decisions of its own.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use orchestrator::loader::{self, LoadOptions, Loaded};
use orchestrator::output;

mod cli;

/// mimalloc: the balancer allocates per request, and glibc's malloc was a
/// tenth of its CPU time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Define and run multi-container applications, Compose-style.
#[derive(Parser, Debug)]
#[command(name = "rcompose", version, about)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Flags shared by every command, with Docker Compose's names.
#[derive(Args, Debug)]
struct GlobalArgs {
    /// Compose configuration files
    #[arg(short = 'f', long = "file", global = true)]
    file: Vec<PathBuf>,
    /// Project name
    #[arg(short = 'p', long = "project-name", global = true)]
    project_name: Option<String>,
    /// Specify an alternate working directory (default: the path of the first compose file)
    #[arg(long = "project-directory", global = true)]
    project_directory: Option<PathBuf>,
    /// Specify an alternate environment file
    #[arg(long = "env-file", global = true)]
    env_file: Vec<PathBuf>,
    /// Specify a profile to enable
    #[arg(long = "profile", global = true)]
    profile: Vec<String>,
    /// Execute command in dry run mode
    #[arg(long = "dry-run", global = true)]
    dry_run: bool,
    /// Set type of progress output (auto, tty, plain, json, quiet)
    #[arg(long = "progress", global = true)]
    progress: Option<String>,
    /// Produce monochrome output
    #[arg(long = "ansi", global = true)]
    ansi: Option<String>,
    /// The runtime to drive (default: the Docker Engine when it answers, the native runtime otherwise)
    #[arg(long = "runtime", global = true, env = "RCOMPOSE_RUNTIME", value_enum)]
    runtime: Option<cli::RuntimeChoice>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse, resolve and render compose file in canonical format
    Config(ConfigArgs),
    /// Create and start containers
    Up(cli::UpArgs),
    /// Creates containers for a service
    Create(cli::CreateArgs),
    /// Stop and remove containers, networks
    Down(cli::DownArgs),
    /// List containers
    Ps(cli::PsArgs),
    /// Scale services
    Scale(cli::ScaleArgs),
    /// Run the built-in load balancer (what balancer services run)
    Balancer(cli::balancer::BalancerArgs),
    /// Start services
    Start(cli::ServicesArgs),
    /// Stop services
    Stop(cli::TimeoutArgs),
    /// Restart service containers
    Restart(cli::TimeoutArgs),
    /// Force stop service containers
    Kill(cli::KillArgs),
    /// Pause services
    Pause(cli::ServicesArgs),
    /// Unpause services
    Unpause(cli::ServicesArgs),
    /// Removes stopped service containers
    Rm(cli::RmArgs),
    /// Build or rebuild services
    Build(cli::BuildArgs),
    /// Watch build context for service and rebuild/refresh containers when files are updated
    Watch(cli::watch::WatchArgs),
    /// View output from containers
    Logs(cli::LogsArgs),
    /// List images used by the created containers
    Images(cli::ServicesArgs),
    /// Print the public port for a port binding
    Port(cli::PortArgs),
    /// Display the running processes
    Top(cli::ServicesArgs),
    /// List running compose projects
    Ls(cli::LsArgs),
    /// Show the rcompose version information
    Version(cli::VersionArgs),
    /// Show which runtime rcompose drives and where its state lives
    Info,
    /// Manage images (load, save, import, ls, inspect, tag, rm, prune)
    Image(cli::image::ImageArgs),
    /// Execute a command in a running container
    Exec(cli::interactive::ExecArgs),
    /// Run a one-off command on a service
    Run(cli::interactive::RunArgs),
    /// Attach local standard input, output, and error streams to a service's running container
    Attach(cli::interactive::AttachArgs),
    /// Copy files/folders between a service container and the local filesystem
    Cp(cli::interactive::CpArgs),
    /// Create a new image from a service container's changes
    Commit(cli::interactive::CommitArgs),
    /// Export a service container's filesystem as a tar archive
    Export(cli::interactive::ExportArgs),
    /// List what a service container changed in its filesystem
    Diff(cli::interactive::DiffArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(cli::interactive::StatsArgs),
    /// Receive real time events from containers
    Events(cli::interactive::EventsArgs),
    /// Block until containers of all (or specified) services stop.
    Wait(cli::interactive::WaitArgs),
    /// Pull service images
    Pull(cli::interactive::PullArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Yaml,
    Json,
}

#[derive(Args, Debug)]
struct ConfigArgs {
    /// Format the output. Values: [yaml | json]
    #[arg(long, value_enum, default_value = "yaml")]
    format: Format,
    /// Only validate the configuration, don't print anything
    #[arg(short, long)]
    quiet: bool,
    /// Print the service names, one per line
    #[arg(long)]
    services: bool,
    /// Print the volume names, one per line
    #[arg(long)]
    volumes: bool,
    /// Print the network names, one per line
    #[arg(long)]
    networks: bool,
    /// Print the profile names, one per line
    #[arg(long)]
    profiles: bool,
    /// Print the image names, one per line
    #[arg(long)]
    images: bool,
    /// Print the model names, one per line
    #[arg(long)]
    models: bool,
    /// Print the service config hash, one per line (`*` for all)
    #[arg(long)]
    hash: Option<String>,
    /// Don't interpolate environment variables
    #[arg(long = "no-interpolate")]
    no_interpolate: bool,
    /// Don't normalize compose model
    #[arg(long = "no-normalize")]
    no_normalize: bool,
    /// Don't resolve file paths
    #[arg(long = "no-path-resolution")]
    no_path_resolution: bool,
    /// Don't check model consistency (accepted for compatibility)
    #[arg(long = "no-consistency")]
    no_consistency: bool,
    /// Print environment used for interpolation
    #[arg(long)]
    environment: bool,
    /// Pin image tags to digests (needs a registry: refused)
    #[arg(long = "resolve-image-digests")]
    resolve_image_digests: bool,
    /// Save to file (default to stdout)
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Services to keep (with their dependencies)
    services_list: Vec<String>,
}

/// Every command but the balancer runs for moments and is judged by its peak
/// memory: there mimalloc gives freed pages back at once instead of keeping
/// them a second for reuse (on a 300-service `config`, 3.5 MB of a 18 MB peak).
/// The balancer keeps the delay, which saves it system calls under load.
#[allow(unsafe_code)]
fn return_freed_memory_at_once() {
    // `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (v2 and v3); the
    // Rust bindings have no name for it.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: mi_option_set stores a number in mimalloc's option table. It
    // takes no pointer and may be called at any time, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

fn main() -> ExitCode {
    // Transparent huge pages speed the balancer's heap up (its L4 proxying by
    // a sixth), but in a short command each is 2 MB resident for a few bytes
    // used. Off before the arguments are parsed, as nearly all memory is still
    // to be touched; the balancer is the only command that takes this word.
    if !std::env::args_os().any(|a| a == "balancer") {
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
    let cli = Cli::parse_from(short_flags_of_subcommands(std::env::args_os().collect()));
    if !matches!(cli.command, Command::Balancer(_)) {
        return_freed_memory_at_once();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// Global options that take a value (what follows them is no subcommand).
const GLOBAL_VALUES: [&str; 8] = [
    "-f",
    "--file",
    "-p",
    "--project-name",
    "--project-directory",
    "--env-file",
    "--profile",
    "--progress",
];

/// The subcommands' own short flags that are also global ones (`-f` is
/// `--file`, `-p` is `--project-name`): (subcommand, short, long, whether
/// it takes a value, whether the flags end at the first argument).
const OWN_SHORT_FLAGS: [(&[&str], char, &str, bool, bool); 6] = [
    (&["logs"], 'f', "--follow", false, false),
    (&["rm"], 'f', "--force", false, false),
    (&["image", "rm"], 'f', "--force", false, false),
    (&["image", "prune"], 'f', "--force", false, false),
    (&["run"], 'p', "--publish", true, true),
    (&["commit"], 'p', "--pause", false, false),
];

/// As in Docker Compose, `-f` and `-p` are the global options before the
/// subcommand and the subcommand's own flags after it: `logs -f` follows,
/// `rm -f` forces, `run -p` publishes. clap cannot give one short name to
/// two flags, so the subcommand's are spelled out long before parsing.
fn short_flags_of_subcommands(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut words = args.into_iter();
    out.extend(words.next());
    let mut path: Vec<String> = Vec::new();
    let mut takes_value = false;
    let mut own: Option<(char, &str, bool, bool)> = None;
    // `run`'s flags that take a value: their value is no service.
    const RUN_VALUES: [&str; 16] = [
        "-e",
        "--env",
        "-l",
        "--label",
        "-u",
        "--user",
        "-w",
        "--workdir",
        "-v",
        "--volume",
        "--name",
        "--entrypoint",
        "--env-from-file",
        "--pull",
        "--cap-add",
        "--cap-drop",
    ];
    let mut value_next = false;
    while let Some(word) = words.next() {
        let text = word.to_string_lossy().into_owned();
        if text == "--" {
            out.push(word);
            out.extend(words);
            break;
        }
        let Some((short, long, with_value, stops)) = own else {
            if takes_value {
                takes_value = false;
            } else if path.is_empty() {
                takes_value = GLOBAL_VALUES.contains(&text.as_str())
                    || text == "--ansi"
                    || text == "--runtime";
                if !text.starts_with('-') {
                    path.push(text.clone());
                }
            } else if path.len() == 1 && path[0] == "image" && !text.starts_with('-') {
                path.push(text.clone());
            }
            own = OWN_SHORT_FLAGS
                .iter()
                .find(|(p, ..)| {
                    *p == path
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .as_slice()
                })
                .map(|(_, short, long, value, stops)| (*short, *long, *value, *stops));
            out.push(word);
            continue;
        };
        if std::mem::take(&mut value_next) {
            out.push(word);
            continue;
        }
        value_next = RUN_VALUES.contains(&text.as_str());
        let Some(cluster) = text.strip_prefix('-').filter(|c| !c.starts_with('-')) else {
            if stops && !text.starts_with('-') {
                // The service: what follows is the container's command.
                out.push(word);
                out.extend(words);
                break;
            }
            out.push(word);
            continue;
        };
        if with_value {
            match cluster.strip_prefix(short) {
                Some("") => {
                    out.push(long.into());
                    value_next = true;
                }
                Some(value) => out.push(format!("{long}={value}").into()),
                None => out.push(word),
            }
        } else if !cluster.contains('=') && cluster.contains(short) {
            out.push(long.into());
            let rest: String = cluster.chars().filter(|c| *c != short).collect();
            if !rest.is_empty() {
                out.push(format!("-{rest}").into());
            }
        } else {
            out.push(word);
        }
    }
    out
}

fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    cli::choose_runtime(g.runtime);
    let engine = || -> Result<cli::Engine> {
        Ok(cli::Engine {
            dry_run: g.dry_run,
            progress: cli::progress::Mode::parse(g.progress.as_deref())
                .map_err(anyhow::Error::msg)?,
            env_files: g.env_file.iter().map(|p| p.display().to_string()).collect(),
        })
    };
    let load = |services: &[String]| -> Result<LoadOptions> { load_options(g, services) };
    match cli.command {
        Command::Config(args) => config(g, args),
        Command::Up(args) => cli::block_on(cli::up(engine()?, load(&args.services)?, args)),
        Command::Create(args) => cli::block_on(cli::create(engine()?, load(&args.services)?, args)),
        Command::Down(args) => cli::block_on(cli::down(
            engine()?,
            load(&args.services)?,
            g.project_name.is_some(),
            args,
        )),
        Command::Ps(args) => cli::block_on(cli::ps(load(&[])?, g.project_name.is_some(), args)),
        Command::Scale(args) => cli::block_on(cli::scale(engine()?, load(&[])?, args)),
        Command::Start(args) => cli::block_on(cli::lifecycle(
            engine()?,
            load(&[])?,
            g.project_name.is_some(),
            args.services,
            orchestrator::plan::Lifecycle::Start,
        )),
        Command::Stop(args) => cli::block_on(cli::lifecycle(
            engine()?,
            load(&[])?,
            g.project_name.is_some(),
            args.services,
            orchestrator::plan::Lifecycle::Stop(args.timeout),
        )),
        Command::Restart(args) => cli::block_on(cli::lifecycle(
            engine()?,
            load(&[])?,
            g.project_name.is_some(),
            args.services,
            orchestrator::plan::Lifecycle::Restart(args.timeout),
        )),
        Command::Kill(args) => cli::block_on(cli::lifecycle(
            engine()?,
            load(&[])?,
            g.project_name.is_some(),
            args.services,
            orchestrator::plan::Lifecycle::Kill(args.signal),
        )),
        Command::Pause(args) => cli::block_on(cli::lifecycle(
            engine()?,
            load(&[])?,
            g.project_name.is_some(),
            args.services,
            orchestrator::plan::Lifecycle::Pause,
        )),
        Command::Unpause(args) => cli::block_on(cli::lifecycle(
            engine()?,
            load(&[])?,
            g.project_name.is_some(),
            args.services,
            orchestrator::plan::Lifecycle::Unpause,
        )),
        Command::Rm(args) => cli::block_on(cli::rm(
            engine()?,
            load(&[])?,
            g.project_name.is_some(),
            args,
        )),
        Command::Build(args) => cli::block_on(cli::build(engine()?, load(&[])?, args)),
        Command::Watch(args) => {
            cli::block_on(cli::watch::watch(engine()?, load(&args.services)?, args))
        }
        Command::Logs(args) => cli::block_on(cli::logs(load(&[])?, g.project_name.is_some(), args)),
        Command::Images(args) => {
            cli::block_on(cli::images(load(&[])?, g.project_name.is_some(), args))
        }
        Command::Port(args) => cli::block_on(cli::port(load(&[])?, g.project_name.is_some(), args)),
        Command::Top(args) => cli::block_on(cli::top(load(&[])?, g.project_name.is_some(), args)),
        Command::Ls(args) => cli::block_on(cli::ls(args)),
        Command::Version(args) => cli::block_on(cli::version(args)),
        Command::Info => cli::block_on(cli::info()),
        Command::Image(args) => cli::block_on(cli::image::run(args)),
        Command::Balancer(args) => cli::balancer::run(args),
        Command::Exec(args) => cli::block_on(cli::interactive::exec(
            load(&[])?,
            g.project_name.is_some(),
            args,
        )),
        Command::Run(args) => cli::block_on(cli::interactive::run(engine()?, load(&[])?, args)),
        Command::Attach(args) => cli::block_on(cli::interactive::attach(
            load(&[])?,
            g.project_name.is_some(),
            args,
        )),
        Command::Cp(args) => cli::block_on(cli::interactive::cp(
            load(&[])?,
            g.project_name.is_some(),
            args,
        )),
        Command::Commit(args) => cli::block_on(cli::interactive::commit(
            load(&[])?,
            g.project_name.is_some(),
            args,
        )),
        Command::Export(args) => cli::block_on(cli::interactive::export(
            load(&[])?,
            g.project_name.is_some(),
            args,
        )),
        Command::Diff(args) => cli::block_on(cli::interactive::diff(
            load(&[])?,
            g.project_name.is_some(),
            args,
        )),
        Command::Stats(args) => cli::block_on(cli::interactive::stats(
            load(&[])?,
            g.project_name.is_some(),
            args,
        )),
        Command::Events(args) => cli::block_on(cli::interactive::events(
            load(&[])?,
            g.project_name.is_some(),
            args,
        )),
        Command::Wait(args) => cli::block_on(cli::interactive::wait(
            engine()?,
            load(&[])?,
            g.project_name.is_some(),
            args,
        )),
        Command::Pull(args) => cli::block_on(cli::interactive::pull(engine()?, load(&[])?, args)),
    }
}

fn load_options(global: &GlobalArgs, services: &[String]) -> Result<LoadOptions> {
    let mut stdin = None;
    if global.file.iter().any(|f| f.as_os_str() == "-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the compose file from standard input")?;
        stdin = Some(s);
    }
    let environment = std::env::vars().collect();
    Ok(LoadOptions {
        files: global.file.clone(),
        stdin,
        project_directory: global.project_directory.clone(),
        project_name: global.project_name.clone(),
        env_files: global.env_file.clone(),
        environment,
        profiles: global
            .profile
            .iter()
            .flat_map(|p| p.split(','))
            .map(str::to_string)
            .collect(),
        services: services.to_vec(),
        cwd: std::env::current_dir().context("reading the current directory")?,
        ..LoadOptions::default()
    })
}

fn print_warnings(loaded: &Loaded) {
    for w in &loaded.warnings {
        eprintln!("WARN[0000] {w}");
    }
}

fn config(global: &GlobalArgs, args: ConfigArgs) -> Result<ExitCode> {
    if args.resolve_image_digests {
        bail!("--resolve-image-digests needs a registry, which rcompose does not contact");
    }
    let mut options = load_options(global, &args.services_list)?;
    options.no_interpolate = args.no_interpolate;
    options.no_normalize = args.no_normalize;
    options.no_path_resolution = args.no_path_resolution;
    if args.no_interpolate
        && !(args.services
            || args.volumes
            || args.networks
            || args.profiles
            || args.images
            || args.models
            || args.environment
            || args.hash.is_some())
    {
        // Compose prints the untyped model in this mode.
        let (model, warnings) = loader::load_model(&options)?;
        for w in &warnings {
            eprintln!("WARN[0000] {w}");
        }
        if args.quiet {
            return Ok(ExitCode::SUCCESS);
        }
        let text = match args.format {
            Format::Json => serde_json::to_string_pretty(&model)?,
            Format::Yaml => output::model_to_yaml(&model),
        };
        return write_output(&args, &text);
    }
    let loaded = loader::load(&options)?;
    print_warnings(&loaded);
    if args.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    let project = &loaded.project;
    let text = if args.services {
        lines(project.services.keys())
    } else if args.volumes {
        lines(project.volumes.keys())
    } else if args.networks {
        lines(project.networks.keys())
    } else if args.models {
        lines(project.models.keys())
    } else if args.profiles {
        let mut all: Vec<&String> = project
            .services
            .values()
            .chain(project.disabled_services.values())
            .flat_map(|s| s.profiles.iter())
            .collect();
        all.sort();
        all.dedup();
        lines(all)
    } else if args.images {
        lines(
            project
                .services
                .iter()
                .map(|(name, s)| output::image_name(project, name, s)),
        )
    } else if args.environment {
        lines(loaded.environment.iter().map(|(k, v)| format!("{k}={v}")))
    } else if let Some(which) = &args.hash {
        let wanted: Vec<&str> = which.split(',').map(str::trim).collect();
        lines(
            project
                .services
                .iter()
                .filter(|(n, _)| wanted.contains(&"*") || wanted.contains(&n.as_str()))
                .map(|(n, s)| format!("{n} {}", output::config_hash(s))),
        )
    } else {
        let render = output::RenderOptions {
            escape_dollars: !args.no_interpolate,
        };
        match args.format {
            Format::Json => output::to_json(project, render)?,
            Format::Yaml => output::to_yaml(project, render)?,
        }
    };
    write_output(&args, &text)
}

fn write_output(args: &ConfigArgs, text: &str) -> Result<ExitCode> {
    match &args.output {
        Some(path) => std::fs::write(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            if std::io::stdout().is_terminal() && !text.ends_with('\n') {
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn lines<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let mut s = String::new();
    for i in items {
        s.push_str(&i.to_string());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(line: &str) -> String {
        short_flags_of_subcommands(line.split(' ').map(Into::into).collect())
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_subcommands_f_is_its_own_flag_and_the_global_one_before_it() {
        assert_eq!(
            rewrite("rcompose logs -f web"),
            "rcompose logs --follow web"
        );
        assert_eq!(
            rewrite("rcompose -f x.yaml logs"),
            "rcompose -f x.yaml logs"
        );
        assert_eq!(
            rewrite("rcompose -f logs logs -ft"),
            "rcompose -f logs logs --follow -t"
        );
        assert_eq!(
            rewrite("rcompose rm -fsv web"),
            "rcompose rm --force -sv web"
        );
        assert_eq!(
            rewrite("rcompose image rm -f a"),
            "rcompose image rm --force a"
        );
        assert_eq!(rewrite("rcompose up -d"), "rcompose up -d");
        assert_eq!(
            rewrite("rcompose exec web ls -f"),
            "rcompose exec web ls -f"
        );
        assert_eq!(rewrite("rcompose logs -- -f"), "rcompose logs -- -f");
        assert_eq!(
            rewrite("rcompose run -p 80:80 -p8080:80 web ls -p"),
            "rcompose run --publish 80:80 --publish=8080:80 web ls -p"
        );
        assert_eq!(
            rewrite("rcompose -p x commit -p web"),
            "rcompose -p x commit --pause web"
        );
        // clap's own checks of the whole command line (unique short names).
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
