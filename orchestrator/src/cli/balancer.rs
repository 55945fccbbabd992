//! The `balancer` command (what a balancer service's container runs) and
//! the image it runs from, made from this very executable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use orchestrator::balancer::{BalancerSpec, SPEC_ENV};
use runtime_shim::Runtime;

/// Arguments of `balancer`.
#[derive(Args, Debug)]
pub struct BalancerArgs {
    /// A balancer spec (JSON), as rcompose gives a balancer service; by
    /// default read from the RCOMPOSE_BALANCER_SPEC variable
    #[arg(long, conflicts_with = "config")]
    spec: Option<PathBuf>,
    /// A plain balancer configuration (JSON) with no discovery, to run the
    /// balancer on its own (endpoints from --endpoint)
    #[arg(long)]
    config: Option<PathBuf>,
    /// A fixed endpoint, BACKEND=HOST:PORT (repeatable)
    #[arg(long = "endpoint", value_name = "BACKEND=ADDR")]
    endpoints: Vec<String>,
    /// Worker threads (default: one per CPU)
    #[arg(long)]
    threads: Option<usize>,
}

/// `balancer`: serves until SIGINT or SIGTERM.
pub fn run(args: BalancerArgs) -> Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let (config, spec) = match (&args.config, &args.spec) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let config: lb::Config = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a balancer configuration", path.display()))?;
            (config, None)
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let spec: BalancerSpec = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a balancer spec", path.display()))?;
            (spec.config.clone(), Some(spec))
        }
        (None, None) => {
            let text = std::env::var(SPEC_ENV).with_context(|| {
                format!("no --config or --spec given, and {SPEC_ENV} is not set")
            })?;
            let spec: BalancerSpec = serde_json::from_str(&text)
                .with_context(|| format!("{SPEC_ENV}: not a balancer spec"))?;
            (spec.config.clone(), Some(spec))
        }
    };
    let mut fixed = Vec::new();
    for e in &args.endpoints {
        let Some((backend, addr)) = e.split_once('=') else {
            bail!("--endpoint {e:?}: expected BACKEND=HOST:PORT");
        };
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("--endpoint {e:?}: bad address"))?;
        fixed.push(lb::Change::Add {
            backend: backend.to_string(),
            endpoint: lb::Endpoint::new(e.clone(), addr),
        });
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .context("starting the async runtime")?;
    runtime.block_on(serve(config, spec, fixed))
}

async fn serve(
    config: lb::Config,
    spec: Option<BalancerSpec>,
    fixed: Vec<lb::Change>,
) -> Result<ExitCode> {
    let balancer = match lb::Balancer::start(config.clone()).await {
        Ok(b) => b,
        // Serving matters more than being told: without its control
        // socket (a directory the engine made in rcompose's place, say)
        // the balancer still discovers its endpoints on its own.
        Err(e @ lb::StartError::BindSocket { .. }) => {
            tracing::error!(
                "{e}; serving without the control channel until the next `rcompose up`"
            );
            lb::Balancer::start(lb::Config {
                control: None,
                ..config.clone()
            })
            .await?
        }
        Err(e) => return Err(e.into()),
    };
    let handle = balancer.handle();
    handle.apply_all(&fixed)?;
    for f in &config.frontends {
        tracing::info!(
            "listening on {} ({:?}, frontend {})",
            f.listen,
            f.mode,
            f.name
        );
    }
    if let Some(addr) = balancer.stats_addr() {
        tracing::info!("statistics on http://{addr}/");
    }
    if let Some(spec) = spec.filter(|s| !s.members.is_empty()) {
        let engine = match spec.engine_events {
            true => match super::connect().await {
                Ok(rt) => Some(rt),
                Err(e) => {
                    tracing::warn!(
                        "cannot follow the engine ({e}); following the network's DNS instead"
                    );
                    None
                }
            },
            false => None,
        };
        match engine {
            Some(rt) => {
                tracing::info!("discovery: the engine's events");
                tokio::spawn(orchestrator::discover::follow_engine(rt, spec, handle));
            }
            None => {
                tracing::info!(
                    "discovery: the network's DNS, every {:?}",
                    orchestrator::discover::DNS_INTERVAL
                );
                tokio::spawn(orchestrator::discover::follow_dns(spec, handle));
            }
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    balancer.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// What the balancer services of a project need to know of this host:
/// where their control directories go and who owns the engine's socket.
pub fn host() -> orchestrator::balancer::Host {
    let engine_socket_gid = std::fs::metadata("/var/run/docker.sock")
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m));
    // The native runtime: chosen, or the default when no engine answers
    // (guessed here from the places `connect` tries).
    let native = match super::chosen_runtime() {
        Some(choice) => choice == super::RuntimeChoice::Native,
        None => {
            engine_socket_gid.is_none()
                && std::env::var("DOCKER_HOST").map_or(true, |h| h.is_empty())
        }
    };
    orchestrator::balancer::Host {
        control_root: control_root().display().to_string(),
        engine_socket_gid,
        engine_socket: !native,
    }
}

/// Where balancers' control directories go: `/var/lib/rcompose/balancers`
/// for root, else under the user's state directory. Persistent rather than
/// under /run, so that a balancer the engine restarts after a reboot still
/// finds its directory with the right permissions.
fn control_root() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/rcompose/balancers");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    state
        .join(format!("rcompose-{}", rustix::process::geteuid().as_raw()))
        .join("balancers")
}

/// Makes a balancer's control directory: the root above it is entered by
/// its owner only (that is what keeps everyone but the host's root, or the
/// user who runs rcompose, away from the control socket); the directory
/// itself is writable by the balancer, whatever user it runs as.
pub fn ensure_control_dir(dir: &str) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let dir = Path::new(dir);
    let service_dir = dir;
    let project_dir = dir.parent().context("a control directory has a parent")?;
    let root = project_dir
        .parent()
        .context("a control directory has a root")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| format!("making {}", root.display()))?;
    let meta =
        std::fs::symlink_metadata(root).with_context(|| format!("reading {}", root.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me {
        bail!(
            "{} must be a directory owned by the user running rcompose (uid {me})",
            root.display()
        );
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", root.display()))?;
    }
    for (d, mode) in [(project_dir, 0o700), (service_dir, 0o777)] {
        match std::fs::DirBuilder::new().mode(mode).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("making {}", d.display())),
        }
        let meta =
            std::fs::symlink_metadata(d).with_context(|| format!("reading {}", d.display()))?;
        if !meta.is_dir() {
            bail!("{} must be a directory", d.display());
        }
        // The umask may have taken bits away.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", d.display()))?;
    }
    Ok(())
}

/// Removes a balancer's control directory, and its project's once empty.
pub fn remove_control_dir(dir: &str) {
    let dir = Path::new(dir);
    let _ = std::fs::remove_file(dir.join(orchestrator::balancer::CONTROL_SOCKET));
    let _ = std::fs::remove_dir(dir);
    if let Some(project) = dir.parent() {
        let _ = std::fs::remove_dir(project);
    }
}

/// The tag of the balancer image for this executable: it changes whenever
/// the executable does.
pub fn image_tag() -> String {
    let stamp = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| {
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{:x}{:x}", m.len(), modified)
        })
        .unwrap_or_default();
    format!(
        "rcompose-balancer:{}-{stamp}",
        orchestrator::convert::VERSION
    )
}

/// The shared libraries this process has loaded (the dynamic loader
/// included), which the image needs to run the executable.
fn loaded_libraries() -> Result<Vec<PathBuf>> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
    let mut libs: Vec<PathBuf> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/') && p.contains(".so"))
        .map(PathBuf::from)
        .collect();
    libs.sort();
    libs.dedup();
    Ok(libs)
}

fn copy_into(root: &Path, file: &Path, at: &Path) -> Result<()> {
    let target = root.join(at.strip_prefix("/").unwrap_or(at));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(file, &target).with_context(|| format!("copying {}", file.display()))?;
    Ok(())
}

/// Builds the balancer image unless the engine has it already.
pub async fn ensure_image(rt: &dyn runtime_shim::Engine, tag: &str) -> Result<()> {
    if rt.inspect_image(tag).await?.is_some() {
        return Ok(());
    }
    let dir = build_dir()?;
    let result = build_image(rt, tag, dir.path()).await;
    drop(dir);
    if result.is_ok() {
        prune_older_images(rt, tag).await;
    }
    result
}

/// A directory of our own to build the image in, made anew under a random
/// name (never one that someone could have prepared), private to us, and
/// removed when dropped.
fn build_dir() -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix("rcompose-balancer-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .context("making a directory for the balancer image")
}

/// Removes the balancer images of other rcompose builds, each made when a
/// new rcompose first ran a balancer. One that a container still uses (a
/// balancer of another project, even stopped) is refused by the engine and
/// stays; nothing here is worth failing for.
async fn prune_older_images(rt: &dyn Runtime, tag: &str) {
    let repository = runtime_shim::reference::split(tag).repository;
    let Ok(images) = rt.list_images(repository).await else {
        return;
    };
    let ours = format!("{repository}:");
    for image in images {
        if image.tags.iter().any(|t| t == tag) {
            continue;
        }
        for old in image.tags.iter().filter(|t| t.starts_with(&ours)) {
            if let Err(e) = rt.remove_image(old, false).await {
                tracing::debug!("keeping {old}: {e}");
            }
        }
    }
}

async fn build_image(rt: &dyn runtime_shim::Engine, tag: &str, dir: &Path) -> Result<()> {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(&root)?;
    let exe = std::env::current_exe().context("finding the rcompose executable")?;
    copy_into(&root, &exe, Path::new("/rcompose"))?;
    let mut library_dirs: Vec<String> = Vec::new();
    for lib in loaded_libraries()? {
        copy_into(&root, &lib, &lib)?;
        let name = lib
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("ld-linux") {
            // The interpreter path written in the executable.
            copy_into(&root, &lib, &Path::new("/lib64").join(&name))?;
            copy_into(&root, &lib, &Path::new("/lib").join(&name))?;
        }
        if let Some(parent) = lib.parent().map(|p| p.display().to_string()) {
            if !library_dirs.contains(&parent) {
                library_dirs.push(parent);
            }
        }
    }
    // An import with its configuration as changes, not a build: every
    // runtime imports (the native one builds no Dockerfile yet).
    let mut archive = tar::Builder::new(Vec::new());
    archive.follow_symlinks(false);
    // Owned by root with plain modes, whoever runs this and whatever the
    // umask: the balancer, as nobody, must traverse and run it.
    archive.mode(tar::HeaderMode::Deterministic);
    archive
        .append_dir_all(".", &root)
        .and_then(|()| archive.finish())
        .context("packing the balancer image")?;
    let archive = archive.into_inner().context("packing the balancer image")?;
    let changes = [
        format!("ENV LD_LIBRARY_PATH={}", library_dirs.join(":")),
        "EXPOSE 80 1936".to_string(),
        r#"ENTRYPOINT ["/rcompose", "balancer"]"#.to_string(),
        "LABEL io.rcompose.balancer=true".to_string(),
    ];
    rt.import_image(
        Box::new(std::io::Cursor::new(archive)),
        Some(tag),
        &changes,
        "rcompose's built-in balancer",
    )
    .await
    .context("making the balancer image")?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use runtime_shim::fake::FakeRuntime;

    #[test]
    fn the_image_is_built_in_a_fresh_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        // What an attacker would prepare at the old, predictable place.
        let predictable =
            std::env::temp_dir().join(format!("rcompose-balancer-{}", std::process::id()));
        let decoy = tempfile::tempdir().unwrap();
        let _ = std::fs::remove_file(&predictable);
        std::os::unix::fs::symlink(decoy.path(), &predictable).unwrap();
        let a = build_dir().unwrap();
        let b = build_dir().unwrap();
        assert_ne!(a.path(), b.path());
        for d in [&a, &b] {
            assert_ne!(d.path(), predictable);
            let meta = std::fs::symlink_metadata(d.path()).unwrap();
            assert!(meta.is_dir() && !meta.file_type().is_symlink());
            assert_eq!(meta.permissions().mode() & 0o777, 0o700);
            assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        }
        let _ = std::fs::remove_file(&predictable);
    }

    #[test]
    fn a_control_directory_is_reachable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("balancers");
        let dir = root.join("proj").join("lb");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_control_dir(&dir.display().to_string()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700, "a loose root is tightened");
        assert_eq!(mode(&root.join("proj")), 0o700);
        assert_eq!(mode(&dir), 0o777, "the balancer may be any user");
        remove_control_dir(&dir.display().to_string());
        assert!(!root.join("proj").exists());
    }

    #[tokio::test]
    async fn older_balancer_images_are_pruned_and_nothing_else() {
        let rt = FakeRuntime::new();
        for image in [
            "rcompose-balancer:0.1.0-aa",
            "rcompose-balancer:0.1.0-bb",
            "rcompose-balancer:0.1.0-cc",
            "rcompose-balancerx:1",
            "web:1",
        ] {
            rt.add_image(image);
        }
        prune_older_images(&rt, "rcompose-balancer:0.1.0-cc").await;
        let mut left: Vec<String> = Vec::new();
        for image in ["aa", "bb", "cc"] {
            let reference = format!("rcompose-balancer:0.1.0-{image}");
            if rt.inspect_image(&reference).await.unwrap().is_some() {
                left.push(reference);
            }
        }
        assert_eq!(left, ["rcompose-balancer:0.1.0-cc"]);
        assert!(rt
            .inspect_image("rcompose-balancerx:1")
            .await
            .unwrap()
            .is_some());
        assert!(rt.inspect_image("web:1").await.unwrap().is_some());
    }
}
