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

/// The project's flags, with Docker Compose's names. As in Compose they come
/// before the subcommand (whose own `-f` and `-p` mean other things: `logs
/// -f` follows, `run -p` publishes); only `--dry-run` and `--runtime` may also
/// come after it.
#[derive(Args, Debug)]
struct GlobalArgs {
    /// Compose configuration files
    #[arg(short = 'f', long = "file")]
    file: Vec<PathBuf>,
    /// Project name
    #[arg(short = 'p', long = "project-name")]
    project_name: Option<String>,
    /// Specify an alternate working directory (default: the path of the first compose file)
    #[arg(long = "project-directory")]
    project_directory: Option<PathBuf>,
    /// Specify an alternate environment file
    #[arg(long = "env-file")]
    env_file: Vec<PathBuf>,
    /// Specify a profile to enable
    #[arg(long = "profile")]
    profile: Vec<String>,
    /// Execute command in dry run mode
    #[arg(long = "dry-run", global = true)]
    dry_run: bool,
    /// Set type of progress output (auto, tty, plain, json, quiet)
    #[arg(long = "progress")]
    progress: Option<String>,
    /// Produce monochrome output
    #[arg(long = "ansi")]
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
    Images(cli::ImagesArgs),
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
    let cli = Cli::parse();
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

    fn parse(line: &str) -> Cli {
        Cli::try_parse_from(line.split(' ')).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn a_subcommands_short_flags_are_its_own_and_the_projects_come_before_it() {
        let cli = parse("rcompose -f x.yaml logs -ft web");
        assert_eq!(cli.global.file, [PathBuf::from("x.yaml")]);
        let Command::Logs(logs) = cli.command else {
            panic!("not logs")
        };
        assert!(logs.follow && logs.timestamps);
        assert_eq!(logs.services, ["web"]);

        let Command::Rm(rm) = parse("rcompose rm -fsv web").command else {
            panic!("not rm")
        };
        assert!(rm.force && rm.stop && rm.volumes);

        let cli = parse("rcompose -p x run -p 80:80 -T web ls -p");
        assert_eq!(cli.global.project_name.as_deref(), Some("x"));
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.publish, ["80:80"]);
        assert_eq!(run.command, ["ls", "-p"]);

        // exec's flag as Compose spells it, and the earlier spelling.
        for line in [
            "rcompose exec -T web ls",
            "rcompose exec --no-tty web ls",
            "rcompose exec --no-TTY web ls",
        ] {
            let Command::Exec(exec) = parse(line).command else {
                panic!("not exec")
            };
            assert!(exec.no_tty, "{line}");
        }
        let Command::Commit(commit) = parse("rcompose commit --pause=false web").command else {
            panic!("not commit")
        };
        assert!(!commit.pause);
        let Command::Commit(commit) = parse("rcompose commit -p web").command else {
            panic!("not commit")
        };
        assert!(commit.pause && commit.service == "web");
        let Command::Version(version) = parse("rcompose version -f json").command else {
            panic!("not version")
        };
        assert_eq!(version.format, Some(cli::VersionFormat::Json));
        // A project flag after the subcommand is refused, as Compose does;
        // --dry-run may come anywhere.
        assert!(Cli::try_parse_from(["rcompose", "up", "--profile", "x"]).is_err());
        assert!(parse("rcompose up --dry-run -d").global.dry_run);
        // clap's own checks of the whole command line (unique short names).
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn help_shows_the_subcommands_short_flags() {
        let mut cli = <Cli as clap::CommandFactory>::command();
        for (path, flag) in [
            (&["logs"][..], "-f, --follow"),
            (&["rm"], "-f, --force"),
            (&["exec"], "-T, --no-tty"),
            (&["run"], "-p, --publish"),
            (&["image", "rm"], "-f, --force"),
            (&["version"], "-f, --format"),
        ] {
            let mut cmd = &mut cli;
            for word in path {
                cmd = cmd
                    .find_subcommand_mut(word)
                    .unwrap_or_else(|| panic!("no {word}"));
            }
            let help = cmd.render_help().to_string();
            assert!(help.contains(flag), "{path:?}:\n{help}");
            // exec's earlier spelling is accepted, not shown (run's is
            // Compose's own spelling there).
            if path == ["exec"] {
                assert!(!help.contains("--no-TTY"), "{help}");
            }
        }
    }
}
