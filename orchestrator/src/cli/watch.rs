//! `watch` and `up --watch`: file events from the host (notify, batched by
//! its debouncer) sorted by the rules of `develop.watch`
//! (`orchestrator::watch`), then applied to every replica through the
//! runtime: one tar archive per service and batch, removals, restarts,
//! commands, rebuilds that recreate through the planner (so a balanced
//! service is announced before traffic and drained before it stops).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use futures_util::StreamExt;
use notify::RecursiveMode;
use notify_debouncer_full::{
    new_debouncer, new_debouncer_opt, DebounceEventResult, Debouncer, NoCache, RecommendedCache,
};
use orchestrator::execute::ExecuteOptions;
use orchestrator::loader::LoadOptions;
use orchestrator::model::Project;
use orchestrator::observe::{observe, observe_containers};
use orchestrator::plan::{plan_lifecycle, BuildOptions, Lifecycle, Recreate, UpOptions};
use orchestrator::watch::{self, Action, Batch, Copy, Rule};
use runtime_shim::{Container, ContainerState, ExecSpec};
use tokio::sync::mpsc;

use super::{check_services, connect, converge, exit_code, load_project, run_plan, Engine};

/// `watch` flags.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Do not build & start services before watching
    #[arg(long = "no-up")]
    pub no_up: bool,
    /// Prune dangling images on rebuild
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub prune: bool,
    /// Hide build output
    #[arg(long)]
    pub quiet: bool,
    /// Services to watch (and what they depend on); all when none.
    pub services: Vec<String>,
}

/// How long the debouncer holds an event (Compose waits half a second):
/// the events of an editor's save, a few writes and a rename within a
/// millisecond or two, come out together, and a single file lands in the
/// containers well under 100 ms. The batch is `GATHER`'s to make.
const QUIET: Duration = Duration::from_millis(10);

/// The debouncer's tick: a change waits at most this much past `QUIET`.
/// A hundred wake-ups a second: idle, well under 1% of a core (scripts/bench-watch).
const TICK: Duration = Duration::from_millis(10);

/// After a first debounced change, how long more may join its batch (the
/// rest of a tree written at once, whose paths' quiet ends a tick later).
const GATHER: Duration = Duration::from_millis(11);

/// How `watch` ends the error of a project with no rules.
const NO_RULES: &str = "consider setting a 'develop' section";

/// `watch`.
pub async fn watch(engine: Engine, options: LoadOptions, args: WatchArgs) -> Result<ExitCode> {
    let project = load_project(&options, false)?;
    check_services(&project, &args.services)?;
    // Nothing starts for a project with bad rules or none.
    let setup = setup(&project, &args.services, NO_RULES)?;
    let rt = connect().await?;
    if !args.no_up {
        // Services built for watching are built again at start, as
        // Compose does (the build cache makes that cheap).
        let build = BuildOptions {
            services: args.services.clone(),
            always: true,
            with_deps: true,
            now: super::now_seconds(),
            ..BuildOptions::default()
        };
        let up = UpOptions {
            services: args.services.clone(),
            env_files: engine.env_files.clone(),
            ..UpOptions::default()
        };
        let (built, ran) = converge(
            &engine,
            &rt,
            &project,
            &build,
            &up,
            ExecuteOptions::default(),
        )
        .await?;
        if !built.success() || !ran.success() {
            return Ok(exit_code(&[&built, &ran]));
        }
    }
    let options = Options {
        prune: args.prune,
        quiet: args.quiet,
        no_deps: true,
        mark: String::new(),
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    run(&engine, &rt, &project, setup, &options, stop).await?;
    Ok(ExitCode::from(130))
}

/// How the changes are applied.
pub struct Options {
    /// Remove the image a rebuild replaced.
    pub prune: bool,
    /// No build output.
    pub quiet: bool,
    /// A rebuild leaves the service's dependencies alone.
    pub no_deps: bool,
    /// What each message starts with: nothing for `watch`, Compose's mark
    /// among the containers' logs under `up --watch`.
    pub mark: String,
}

/// The mark of watch messages among the logs of `up --watch`, as Compose
/// prints it: under the logs' `|` (their names `width` wide), green on a
/// terminal.
pub fn log_mark(width: usize, no_color: bool) -> String {
    let pad = " ".repeat(width + 1);
    if no_color {
        format!("{pad}\u{29bf} ")
    } else {
        format!("\x1b[92m{pad}\u{29bf} \x1b[0m")
    }
}

/// The watch rules of `services` (all when empty), read before anything
/// starts: an error for a bad rule, or when no selected service has one
/// (`hint` ends that message).
pub fn setup(project: &Project, services: &[String], hint: &str) -> Result<watch::Setup> {
    let setup = watch::rules(project, services, &|p| std::fs::read_to_string(p).ok())
        .map_err(|e| anyhow!(e))?;
    if setup.rules.is_empty() {
        bail!("none of the selected services is configured for watch, {hint}");
    }
    Ok(setup)
}

/// Watches by `setup`'s rules until `stop` completes.
pub async fn run(
    engine: &Engine,
    rt: &Arc<dyn runtime_shim::Engine>,
    project: &Project,
    setup: watch::Setup,
    options: &Options,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    for w in &setup.warnings {
        eprintln!("WARN[0000] {w}");
    }
    let rules = setup.rules;
    let applier = Applier {
        engine,
        rt,
        project,
        rules: &rules,
        options,
        shells: std::sync::Mutex::new(BTreeMap::new()),
    };
    // The first copies, before anything is watched: every file the rule
    // takes (as Compose since its fix ea8d9bc; v2.40 skipped the files
    // older than the image, which are the ones the image may lack).
    let mut initial = Batch::default();
    for rule in rules
        .iter()
        .filter(|r| r.initial_sync && matches!(r.action, Action::Sync | Action::SyncRestart))
    {
        let mut files = Vec::new();
        if let Err(e) = walk(rule, &rule.path, &mut files) {
            bail!(
                "initial sync of service {:?}: {}: {e}",
                rule.service,
                rule.path.display()
            );
        }
        for file in files {
            if let Some(container) = rule.container_path(&file) {
                initial
                    .sync
                    .entry(rule.service.clone())
                    .or_default()
                    .insert(Copy {
                        host: file,
                        container,
                    });
            }
        }
    }
    for (service, copies) in &initial.sync {
        applier.sync(service, copies).await?;
    }

    let (tx, mut rx) = mpsc::unbounded_channel::<DebounceEventResult>();
    let mut watching = Watching::start(tx)?;
    let roots: BTreeSet<PathBuf> = rules.iter().map(|r| r.path.clone()).collect();
    for root in &roots {
        watching.cover(root, &roots, &rules)?;
    }
    println!("{}Watch enabled", options.mark);
    tokio::pin!(stop);
    loop {
        let first = tokio::select! {
            _ = &mut stop => break,
            got = rx.recv() => match got {
                Some(got) => got,
                None => break,
            },
        };
        // What follows closely belongs to the same batch.
        let mut results = vec![first];
        let gathering = std::time::Instant::now();
        while gathering.elapsed() < Duration::from_secs(1) {
            match tokio::time::timeout(GATHER, rx.recv()).await {
                Ok(Some(more)) => results.push(more),
                _ => break,
            }
        }
        let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
        for result in results {
            match result {
                Ok(events) => {
                    // Reads (the archive's own among them) change nothing.
                    for e in events.iter().filter(|e| !e.event.kind.is_access()) {
                        paths.extend(e.event.paths.iter().cloned());
                    }
                }
                Err(errors) => {
                    for e in errors {
                        if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                            watching.poll(&roots, &rules)?;
                        } else {
                            eprintln!("Watch error: {e}");
                        }
                    }
                }
            }
        }
        // A removed directory's watch went with it; a new directory (or
        // one on the way to a rule's path) is watched, and what is already
        // in it taken.
        let mut found = Vec::new();
        for p in &paths {
            if !p.is_dir() {
                watching.forget(p);
                continue;
            }
            let wanted = rules
                .iter()
                .any(|r| !r.skips_dir(p) || (r.path.starts_with(p) && r.path != *p));
            if wanted && !watching.has(p) {
                watching.cover(p, &roots, &rules)?;
                for rule in rules.iter().filter(|r| r.matches(p)) {
                    let _ = walk(rule, p, &mut found);
                }
            }
        }
        paths.extend(found);
        let batch = watch::triage(&rules, paths.iter().map(PathBuf::as_path));
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = applier.apply(&batch).await {
            eprintln!("WARN[0000] Error handling changed files: {e:#}");
        }
    }
    println!("{}Watch disabled", options.mark);
    Ok(())
}

/// The files under `path` a rule takes (directories it ignores skipped).
fn walk(rule: &Rule, path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let md = std::fs::symlink_metadata(path)?;
    if !md.is_dir() {
        if rule.matches(path) {
            out.push(path.to_path_buf());
        }
        return Ok(());
    }
    for entry in std::fs::read_dir(path)? {
        let p = entry?.path();
        if p.is_dir() && !p.is_symlink() {
            if !rule.skips_dir(&p) {
                walk(rule, &p, out)?;
            }
        } else if rule.matches(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// The file watcher (inotify, or polling once inotify's watches run out)
/// and the directories it watches.
struct Watching {
    watcher: Watcher,
    /// Where the debouncer sends, kept for a polling one.
    tx: mpsc::UnboundedSender<DebounceEventResult>,
    watched: HashSet<PathBuf>,
}

enum Watcher {
    Events(Debouncer<notify::RecommendedWatcher, RecommendedCache>),
    Polling(Debouncer<notify::PollWatcher, NoCache>),
}

impl Watching {
    fn start(tx: mpsc::UnboundedSender<DebounceEventResult>) -> Result<Watching> {
        let sender = tx.clone();
        let debouncer = new_debouncer(QUIET, Some(TICK), move |r| {
            let _ = sender.send(r);
        })
        .map_err(|e| {
            if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                anyhow!(
                    "hit OS limits creating a watcher.\nRun 'sysctl fs.inotify.max_user_instances' to check your inotify limits.\nTo raise them, run 'sudo sysctl fs.inotify.max_user_instances=1024'"
                )
            } else {
                anyhow!("starting the file watcher: {e}")
            }
        })?;
        Ok(Watching {
            watcher: Watcher::Events(debouncer),
            tx,
            watched: HashSet::new(),
        })
    }

    /// `tree`, falling back to polling when inotify's watches run out.
    fn cover(&mut self, root: &Path, roots: &BTreeSet<PathBuf>, rules: &[Rule]) -> Result<()> {
        match self.tree(root, rules) {
            Err(e) if e.downcast_ref::<WatchesExhausted>().is_some() => self.poll(roots, rules),
            done => done,
        }
    }

    /// Drops what was watched at or under a path that is gone.
    fn forget(&mut self, gone: &Path) {
        self.watched.retain(|w| !w.starts_with(gone));
    }

    fn has(&self, dir: &Path) -> bool {
        self.watched.contains(dir)
    }

    /// Watches `root` and the directories under it that some rule wants;
    /// a path that does not exist yet is watched through its nearest
    /// existing parent.
    fn tree(&mut self, root: &Path, rules: &[Rule]) -> Result<()> {
        // A file is watched through its directory: an editor's save that
        // renames a new file over it would end a watch of the file itself.
        let mut at = root.to_path_buf();
        while !at.is_dir() {
            match at.parent() {
                Some(p) => at = p.to_path_buf(),
                None => bail!("cannot watch root directory"),
            }
        }
        let descend = at == root;
        self.one(&at)?;
        if !descend {
            return Ok(());
        }
        let mut dirs = vec![at];
        while let Some(dir) = dirs.pop() {
            self.one(&dir)?;
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let p = entry.path();
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                let wanted = rules
                    .iter()
                    .any(|r| !r.skips_dir(&p) || (r.path.starts_with(&p) && r.path != p));
                if is_dir && wanted {
                    dirs.push(p);
                }
            }
        }
        Ok(())
    }

    fn one(&mut self, path: &Path) -> Result<()> {
        if self.watched.contains(path) {
            return Ok(());
        }
        let result = match &mut self.watcher {
            Watcher::Events(d) => d.watch(path, RecursiveMode::NonRecursive),
            Watcher::Polling(d) => d.watch(path, RecursiveMode::NonRecursive),
        };
        match result {
            Ok(()) => {
                self.watched.insert(path.to_path_buf());
                Ok(())
            }
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                Err(anyhow!(WatchesExhausted))
            }
            // Gone meanwhile: its parent's events tell.
            Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => Ok(()),
            // Unreadable (a container's own data under a bind mount, say):
            // said, and the rest watched.
            Err(e) => {
                eprintln!("WARN[0000] not watching {}: {e}", path.display());
                Ok(())
            }
        }
    }

    /// Falls back to polling (inotify's watches are exhausted): every root
    /// watched again by the polling watcher.
    fn poll(&mut self, roots: &BTreeSet<PathBuf>, rules: &[Rule]) -> Result<()> {
        if matches!(self.watcher, Watcher::Polling(_)) {
            return Ok(());
        }
        eprintln!(
            "WARN[0000] inotify's watches are used up (fs.inotify.max_user_watches): polling the watched paths every second instead"
        );
        let sender = self.tx.clone();
        let config = notify::Config::default().with_poll_interval(Duration::from_secs(1));
        let debouncer = new_debouncer_opt::<_, notify::PollWatcher, NoCache>(
            QUIET,
            Some(TICK),
            move |r| {
                let _ = sender.send(r);
            },
            NoCache,
            config,
        )
        .map_err(|e| anyhow!("starting the polling watcher: {e}"))?;
        // The inotify watcher (and its watches) go with the old value.
        self.watcher = Watcher::Polling(debouncer);
        self.watched.clear();
        for root in roots {
            self.tree(root, rules)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct WatchesExhausted;

impl std::fmt::Display for WatchesExhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("inotify watch limit reached")
    }
}

impl std::error::Error for WatchesExhausted {}

/// Applies batches to the project's containers.
struct Applier<'a> {
    engine: &'a Engine,
    rt: &'a Arc<dyn runtime_shim::Engine>,
    project: &'a Project,
    rules: &'a [Rule],
    options: &'a Options,
    /// Each container's open shell; `None` when it has none.
    shells: std::sync::Mutex<BTreeMap<String, Option<Shell>>>,
}

impl Applier<'_> {
    /// Rebuilds, then copies, then restarts, then runs commands: Compose's
    /// order. The first failure ends the batch.
    async fn apply(&self, batch: &Batch) -> Result<()> {
        if !batch.rebuild.is_empty() {
            self.rebuild(&batch.rebuild).await?;
            // The new containers have it all: nothing more for them.
            let mut rest = Batch {
                sync: batch.sync.clone(),
                restart: batch.restart.clone(),
                exec: batch.exec.clone(),
                ..Batch::default()
            };
            rest.sync.retain(|s, _| !batch.rebuild.contains(s));
            rest.restart.retain(|s| !batch.rebuild.contains(s));
            rest.exec.retain(|s, _| !batch.rebuild.contains(s));
            return Box::pin(self.apply(&rest)).await;
        }
        for (service, copies) in &batch.sync {
            println!(
                "{}Syncing service {service:?} after {} changes were detected",
                self.options.mark,
                copies.len()
            );
            self.sync(service, copies).await?;
        }
        if !batch.restart.is_empty() {
            let services: Vec<String> = batch.restart.iter().cloned().collect();
            let observed = observe(self.rt.as_ref(), self.project).await?;
            let plan = plan_lifecycle(
                self.project,
                &observed,
                &services,
                &Lifecycle::Restart(None),
            );
            let outcome = run_plan(
                self.rt,
                self.engine,
                &plan,
                "Restarting",
                ExecuteOptions::default(),
            )
            .await;
            if !outcome.success() {
                bail!("restarting {}", watch::quoted(&batch.restart));
            }
            println!(
                "{}service(s) {} restarted",
                self.options.mark,
                watch::quoted(&batch.restart)
            );
        }
        for (service, indexes) in &batch.exec {
            for index in indexes {
                let rule = self
                    .rules
                    .iter()
                    .find(|r| &r.service == service && r.index == *index);
                if let Some(rule) = rule {
                    self.exec(rule).await?;
                }
            }
        }
        Ok(())
    }

    /// The service's containers, one-offs left out.
    async fn containers(&self, service: &str) -> Result<Vec<Container>> {
        let observed = observe_containers(self.rt.as_ref(), self.project).await?;
        Ok(
            orchestrator::plan::target_containers(&observed, &[service.to_string()])
                .into_iter()
                .cloned()
                .collect(),
        )
    }

    async fn rebuild(&self, services: &BTreeSet<String>) -> Result<()> {
        println!(
            "{}Rebuilding service(s) {} after changes were detected...",
            self.options.mark,
            watch::quoted(services)
        );
        let names: Vec<String> = services.iter().cloned().collect();
        let (before, old) = tokio::join!(
            observe_containers(self.rt.as_ref(), self.project),
            self.image_ids(services)
        );
        let before = before?;
        let build = BuildOptions {
            services: names.clone(),
            always: true,
            with_deps: !self.options.no_deps,
            now: super::now_seconds(),
            ..BuildOptions::default()
        };
        // The replicas running now are replaced, as many as there are
        // (Compose goes back to the file's count, undoing a `scale`).
        let scale = names
            .iter()
            .filter_map(|name| {
                let n = before.service_containers(name).count();
                Some((name.clone(), u32::try_from(n).ok().filter(|n| *n > 0)?))
            })
            .collect();
        let up = UpOptions {
            services: names.clone(),
            no_deps: self.options.no_deps,
            recreate: Recreate::Force,
            scale,
            env_files: self.engine.env_files.clone(),
            ..UpOptions::default()
        };
        let engine = Engine {
            progress: if self.options.quiet {
                super::progress::Mode::Quiet
            } else {
                self.engine.progress
            },
            ..self.engine.clone()
        };
        let (built, ran) = converge(
            &engine,
            self.rt,
            self.project,
            &build,
            &up,
            ExecuteOptions::default(),
        )
        .await?;
        if !built.success() {
            println!(
                "{}Build failed. Error: the build of {} failed",
                self.options.mark,
                watch::quoted(services)
            );
            bail!("the build failed");
        }
        println!(
            "{}service(s) {} successfully built",
            self.options.mark,
            watch::quoted(services)
        );
        // Shells of the replaced containers are gone with them.
        if let Ok(mut m) = self.shells.lock() {
            m.clear();
        }
        if !ran.success() {
            println!(
                "{}Application failed to start after update.",
                self.options.mark
            );
        }
        if self.options.prune {
            // The images the rebuild replaced, unless something still uses
            // them.
            let after = self.image_ids(services).await;
            for (name, id) in old {
                if after.get(&name).is_some_and(|now| *now != id) {
                    let _ = self.rt.remove_image(&id, false).await;
                }
            }
        }
        Ok(())
    }

    /// The ids of the images `services` run, by name, where present.
    async fn image_ids(&self, services: &BTreeSet<String>) -> BTreeMap<String, String> {
        let names: BTreeSet<String> = services
            .iter()
            .filter_map(|name| {
                let service = self.project.services.get(name)?;
                Some(orchestrator::convert::image_name(
                    self.project,
                    name,
                    service,
                ))
            })
            .collect();
        let found = futures_util::future::join_all(names.into_iter().map(|name| async move {
            let image = self.rt.inspect_image(&name).await.ok().flatten()?;
            Some((name, image.id))
        }))
        .await;
        found.into_iter().flatten().collect()
    }

    /// Copies (and removes) files in every container of the service. A
    /// file is never seen missing or half-written by the container's
    /// processes: files land under a staging name beside their place and
    /// are renamed over it, with the removals, by one shell command per
    /// container (a container without a shell gets them written in place,
    /// as Compose does, and no removal).
    async fn sync(&self, service: &str, copies: &BTreeSet<Copy>) -> Result<()> {
        let copies: Vec<Copy> = copies.iter().cloned().collect();
        let nonce = format!("{:08x}", fastrand::u32(..));
        // The files are read while the engine lists the containers.
        let (staged, containers) = tokio::join!(
            tokio::task::spawn_blocking(move || archive(&copies, &nonce)),
            self.containers(service)
        );
        let staged = staged.map_err(|e| anyhow!("{e}"))??;
        let containers = containers?;
        if containers.is_empty() {
            eprintln!("WARN[0000] service {service:?} has no container: nothing synced");
            return Ok(());
        }
        let jobs = containers.iter().map(|c| {
            let staged = &staged;
            async move {
                let running = c.state == ContainerState::Running;
                let work = !staged.renames.is_empty() || !staged.gone.is_empty();
                // A shell in the container places staged files; without
                // one (or stopped) they are written in place.
                let shell = running && work && self.shell_ready(&c.id).await;
                let tar = if shell {
                    staged.staged.clone()
                } else {
                    staged.direct.clone()
                };
                if let Some(tar) = tar {
                    self.rt
                        .copy_to(&c.id, "/", tar)
                        .await
                        .map_err(|e| anyhow!("copying files to {}: {e}", c.name))?;
                }
                if !shell {
                    if !staged.gone.is_empty() && running {
                        eprintln!(
                            "WARN[0000] {}: no shell to remove {} in",
                            c.name,
                            staged.gone.join(", ")
                        );
                    }
                    return Ok(());
                }
                let code = self.in_shell(&c.id, &staged.script()).await?;
                if code != 0 {
                    bail!("placing the synced files in {}: exit code {code}", c.name);
                }
                Ok(())
            }
        });
        let results = futures_util::future::join_all(jobs).await;
        let errors: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.err().map(|e| format!("{e:#}")))
            .collect();
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        Ok(())
    }

    /// Whether a shell with `mv`, `rm` and `rmdir` runs in the container
    /// (kept open for the next batches: a command per batch costs the
    /// Docker Engine an exec each, about 60 ms).
    async fn shell_ready(&self, id: &str) -> bool {
        if let Some(known) = self
            .shells
            .lock()
            .ok()
            .and_then(|m| m.get(id).map(Option::is_some))
        {
            return known;
        }
        match self.open_shell(id).await {
            Ok(shell) => {
                let ready = shell.is_some();
                if let Ok(mut m) = self.shells.lock() {
                    m.insert(id.to_string(), shell);
                }
                ready
            }
            // Not known yet (the container restarting, say): asked again
            // next time.
            Err(_) => false,
        }
    }

    /// A shell in the container, as root (files are placed where the
    /// archive put them, owned by root); `None` when it has no `sh` with
    /// `mv`, `rm` and `rmdir`, an error when that could not be asked.
    async fn open_shell(&self, id: &str) -> Result<Option<Shell>> {
        let root = ExecDefaults {
            user: "0:0".to_string(),
            ..ExecDefaults::default()
        };
        let spec = root.spec(vec!["sh".to_string()], true);
        let session = match self.rt.exec(id, &spec).await {
            Ok(session) => session,
            // No `sh` to start: the runtime says so in its own words.
            Err(e)
                if e.to_string().contains("not found")
                    || e.to_string().contains("no such file") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(anyhow!("{e}")),
        };
        let (Some(input), Some(output)) = (session.input, session.output) else {
            return Ok(None);
        };
        let mut shell = Shell {
            input,
            output,
            _process: session.process,
            seen: String::new(),
        };
        match shell.run("command -v mv rm rmdir >/dev/null").await {
            Ok(0) => Ok(Some(shell)),
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs a script in the container's shell (opened again once if the
    /// container has restarted since); its exit code.
    async fn in_shell(&self, id: &str, script: &str) -> Result<i64> {
        let taken = self
            .shells
            .lock()
            .ok()
            .and_then(|mut m| m.remove(id))
            .flatten();
        let mut shell = match taken {
            Some(shell) => shell,
            None => self
                .open_shell(id)
                .await?
                .ok_or_else(|| anyhow!("no shell in the container"))?,
        };
        let code = match shell.run(script).await {
            Ok(code) => code,
            Err(_) => {
                shell = self
                    .open_shell(id)
                    .await?
                    .ok_or_else(|| anyhow!("no shell in the container"))?;
                shell.run(script).await?
            }
        };
        if let Ok(mut m) = self.shells.lock() {
            m.insert(id.to_string(), Some(shell));
        }
        Ok(code)
    }

    async fn exec(&self, rule: &Rule) -> Result<()> {
        let command = rule_command(rule);
        if command.is_empty() {
            bail!(
                "service {:?}, develop.watch[{}]: sync+exec has no exec.command",
                rule.service,
                rule.index
            );
        }
        let defaults = ExecDefaults {
            user: rule.exec.user.clone(),
            working_dir: rule.exec.working_dir.clone(),
            privileged: rule.exec.privileged,
            env: rule
                .exec
                .environment
                .0
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
                .collect(),
        };
        let containers = self.containers(&rule.service).await?;
        let jobs = containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .map(|c| {
                let command = command.clone();
                let defaults = &defaults;
                async move {
                    let code = self.run_in(&c.id, command, defaults).await?;
                    if code != 0 {
                        bail!("{:?} in {}: exit code {code}", rule_command(rule), c.name);
                    }
                    Ok(())
                }
            });
        for r in futures_util::future::join_all(jobs).await {
            r?;
        }
        Ok(())
    }

    /// Runs a command in a container, its output printed; its exit code.
    async fn run_in(&self, id: &str, command: Vec<String>, d: &ExecDefaults) -> Result<i64> {
        let mut session = self.rt.exec(id, &d.spec(command, false)).await?;
        if let Some(output) = session.output.as_mut() {
            while let Some(Ok(chunk)) = output.next().await {
                if chunk.stderr {
                    eprint!("{}", chunk.text);
                } else {
                    print!("{}", chunk.text);
                }
            }
        }
        Ok(session.process.wait().await?)
    }
}

fn rule_command(rule: &Rule) -> Vec<String> {
    rule.exec.command.clone().map(|c| c.0).unwrap_or_default()
}

/// A shell kept running in a container, fed scripts on its input.
struct Shell {
    input: runtime_shim::Input,
    output: runtime_shim::BoxStream<runtime_shim::LogLine>,
    _process: Box<dyn runtime_shim::Process>,
    /// Output read and not yet matched.
    seen: String,
}

/// Ends each script's output, with its status.
const DONE: &str = "__rcompose_sync_done__";

impl Shell {
    /// Runs a script in a subshell (so `set -e` ends only it); its status.
    async fn run(&mut self, script: &str) -> Result<i64> {
        use tokio::io::AsyncWriteExt;
        let text = format!("(\n{script}\n)\nprintf '\\n{DONE} %s\\n' \"$?\"\n");
        self.input.write_all(text.as_bytes()).await?;
        self.input.flush().await?;
        let read = async {
            loop {
                if let Some(at) = self.seen.find(&format!("\n{DONE} ")) {
                    let rest = &self.seen[at + DONE.len() + 2..];
                    if let Some(end) = rest.find('\n') {
                        let code = rest[..end].trim().parse().unwrap_or(-1);
                        let before = self.seen[..at].to_string();
                        if !before.trim().is_empty() {
                            print!("{before}");
                        }
                        self.seen = rest[end + 1..].to_string();
                        return Ok(code);
                    }
                }
                match self.output.next().await {
                    Some(Ok(chunk)) if chunk.stderr => eprint!("{}", chunk.text),
                    Some(Ok(chunk)) => self.seen.push_str(&chunk.text),
                    Some(Err(e)) => bail!("the container's shell: {e}"),
                    None => bail!("the container's shell ended"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .map_err(|_| anyhow!("the container's shell did not answer in 60 s"))?
    }
}

/// How a watch runs a command in a container (a rule's `exec`, or the
/// shell that places synced files).
#[derive(Default)]
struct ExecDefaults {
    user: String,
    working_dir: String,
    privileged: bool,
    env: Vec<String>,
}

impl ExecDefaults {
    /// `command` without a terminal, attached to its output (and its
    /// input with `stdin`).
    fn spec(&self, command: Vec<String>, stdin: bool) -> ExecSpec {
        ExecSpec {
            command,
            env: self.env.clone(),
            user: self.user.clone(),
            working_dir: self.working_dir.clone(),
            tty: false,
            stdin,
            privileged: self.privileged,
            detach: false,
        }
    }
}

/// A batch's files as archives: `staged` puts each regular file in a
/// directory `.rcompose-sync-<nonce>` beside its place (`renames`: from
/// which staging directory to which directory, what names), `direct` at its
/// place; directories and links are in both as they are. `gone`: container
/// paths whose host files are gone.
struct Staged {
    staged: Option<Vec<u8>>,
    direct: Option<Vec<u8>>,
    renames: BTreeMap<(String, String), Vec<String>>,
    gone: Vec<String>,
}

impl Staged {
    /// The shell script that removes what is gone and moves the staged
    /// files over their places (each file renamed, so never seen missing
    /// or half-written; a few hundred to an `mv`), then removes the
    /// staging directories whatever happened; its status says whether all
    /// went well.
    fn script(&self) -> String {
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let mut lines = vec!["s=0".to_string()];
        for chunk in self.gone.chunks(200) {
            let paths: Vec<String> = chunk.iter().map(|p| quote(p)).collect();
            lines.push(format!("rm -rf -- {} || s=1", paths.join(" ")));
        }
        for ((stage, dir), names) in &self.renames {
            for chunk in names.chunks(200) {
                let sources: Vec<String> = chunk
                    .iter()
                    .map(|n| quote(&format!("{stage}/{n}")))
                    .collect();
                lines.push(format!(
                    "mv -f -- {} {} || s=1",
                    sources.join(" "),
                    quote(&format!("{}/", dir.trim_end_matches('/')))
                ));
            }
        }
        for (stage, _) in self.renames.keys() {
            lines.push(format!("rm -rf -- {}", quote(stage)));
        }
        lines.push("exit $s".to_string());
        lines.join("\n")
    }
}

fn archive(copies: &[Copy], nonce: &str) -> Result<Staged> {
    let mut staged = tar::Builder::new(Vec::new());
    let mut direct = tar::Builder::new(Vec::new());
    let mut renames: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut gone = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut any = false;
    for copy in copies {
        let name = copy.container.trim_start_matches('/');
        // The container's root itself is no entry; a path twice, once.
        if name.is_empty() || !seen.insert(name) {
            continue;
        }
        let md = match std::fs::symlink_metadata(&copy.host) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                gone.push(copy.container.clone());
                continue;
            }
            Err(e) => bail!("{}: {e}", copy.host.display()),
        };
        let mut header = tar::Header::new_gnu();
        header.set_metadata(&md);
        // A directory is the directory alone: what it holds comes as
        // changes of its own, filtered by the rules.
        if md.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            staged.append_data(&mut header.clone(), name, std::io::empty())?;
            direct.append_data(&mut header, name, std::io::empty())?;
        } else if md.is_file() {
            // Read once, so both archives hold the same bytes.
            let bytes = match std::fs::read(&copy.host) {
                Ok(b) => b,
                // Removed while being read: the next batch tells.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => bail!("reading {}: {e}", copy.host.display()),
            };
            header.set_size(bytes.len() as u64);
            let (dir, file) = name.rsplit_once('/').unwrap_or(("", name));
            let stage = format!("/{dir}/.rcompose-sync-{nonce}").replace("//", "/");
            let temporary = format!("{}/{file}", stage.trim_start_matches('/'));
            staged.append_data(&mut header.clone(), &temporary, bytes.as_slice())?;
            direct.append_data(&mut header, name, bytes.as_slice())?;
            renames
                .entry((stage, format!("/{dir}")))
                .or_default()
                .push(file.to_string());
        } else if md.file_type().is_symlink() {
            let target = std::fs::read_link(&copy.host)?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            staged.append_link(&mut header.clone(), name, &target)?;
            direct.append_link(&mut header, name, &target)?;
        } else {
            // Sockets, pipes, devices: nothing a tar carries.
            continue;
        }
        any = true;
    }
    let staged = staged.into_inner()?;
    let direct = direct.into_inner()?;
    Ok(Staged {
        staged: any.then_some(staged),
        direct: any.then_some(direct),
        renames,
        gone,
    })
}
