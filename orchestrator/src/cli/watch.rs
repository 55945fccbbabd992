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

/// How long a path must stay quiet before its change is handled (Compose
/// waits half a second): an editor's save of several writes is one change,
/// and a single file lands in the containers well under 100 ms.
const QUIET: Duration = Duration::from_millis(20);

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
    let setup = watch::rules(&project, &args.services, &|p| {
        std::fs::read_to_string(p).ok()
    })
    .map_err(|e| anyhow!(e))?;
    if setup.rules.is_empty() {
        bail!("none of the selected services is configured for watch, {NO_RULES}");
    }
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
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    run(
        &engine,
        &rt,
        &project,
        &args.services,
        &options,
        stop,
        NO_RULES,
    )
    .await?;
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
}

/// Watches until `stop` completes. `hint` ends the error given when no
/// service has rules.
pub async fn run(
    engine: &Engine,
    rt: &Arc<dyn runtime_shim::Engine>,
    project: &Project,
    services: &[String],
    options: &Options,
    stop: impl std::future::Future<Output = ()>,
    hint: &str,
) -> Result<()> {
    let setup = watch::rules(project, services, &|p| std::fs::read_to_string(p).ok())
        .map_err(|e| anyhow!(e))?;
    for w in &setup.warnings {
        eprintln!("WARN[0000] {w}");
    }
    let rules = setup.rules;
    if rules.is_empty() {
        bail!("none of the selected services is configured for watch, {hint}");
    }
    let applier = Applier {
        engine,
        rt,
        project,
        rules: &rules,
        options,
    };
    // The first copies, before anything is watched.
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
        watching.tree(root, &rules)?;
    }
    println!("Watch enabled");
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
        while let Ok(Some(more)) = tokio::time::timeout(GATHER, rx.recv()).await {
            results.push(more);
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
                            watching = watching.poll(&roots, &rules, &e)?;
                        } else {
                            eprintln!("Watch error: {e}");
                        }
                    }
                }
            }
        }
        // A new directory: watch it, and take what is already in it.
        let mut found = Vec::new();
        for p in &paths {
            if p.is_dir() && !watching.has(p) {
                watching.tree(p, &rules)?;
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
    println!("Watch disabled");
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

/// The file watcher: inotify, or polling once inotify's watches run out.
enum Watching {
    Events {
        debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
        tx: mpsc::UnboundedSender<DebounceEventResult>,
        watched: HashSet<PathBuf>,
    },
    Polling {
        debouncer: Debouncer<notify::PollWatcher, NoCache>,
        watched: HashSet<PathBuf>,
    },
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
        Ok(Watching::Events {
            debouncer,
            tx,
            watched: HashSet::new(),
        })
    }

    fn has(&self, dir: &Path) -> bool {
        match self {
            Watching::Events { watched, .. } | Watching::Polling { watched, .. } => {
                watched.contains(dir)
            }
        }
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
                if is_dir && rules.iter().any(|r| !r.skips_dir(&p)) {
                    dirs.push(p);
                }
            }
        }
        Ok(())
    }

    fn one(&mut self, path: &Path) -> Result<()> {
        let (result, watched) = match self {
            Watching::Events {
                debouncer, watched, ..
            } => {
                if watched.contains(path) {
                    return Ok(());
                }
                (debouncer.watch(path, RecursiveMode::NonRecursive), watched)
            }
            Watching::Polling { debouncer, watched } => {
                if watched.contains(path) {
                    return Ok(());
                }
                (debouncer.watch(path, RecursiveMode::NonRecursive), watched)
            }
        };
        match result {
            Ok(()) => {
                watched.insert(path.to_path_buf());
                Ok(())
            }
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                Err(anyhow!(WatchesExhausted))
            }
            // Gone meanwhile: its parent's events tell.
            Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => Ok(()),
            Err(e) => Err(anyhow!("watching {}: {e}", path.display())),
        }
    }

    /// Falls back to polling (inotify's watches are exhausted).
    fn poll(
        self,
        roots: &BTreeSet<PathBuf>,
        rules: &[Rule],
        why: &notify::Error,
    ) -> Result<Watching> {
        let tx = match self {
            Watching::Events { tx, .. } => tx,
            polling @ Watching::Polling { .. } => return Ok(polling),
        };
        eprintln!(
            "WARN[0000] {why}: inotify's watches are used up (fs.inotify.max_user_watches); polling the watched paths every second instead"
        );
        let sender = tx.clone();
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
        let mut polling = Watching::Polling {
            debouncer,
            watched: HashSet::new(),
        };
        for root in roots {
            polling.tree(root, rules)?;
        }
        Ok(polling)
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
}

impl Applier<'_> {
    /// Rebuilds, then copies, then restarts, then runs commands: Compose's
    /// order. The first failure ends the batch.
    async fn apply(&self, batch: &Batch) -> Result<()> {
        if !batch.rebuild.is_empty() {
            self.rebuild(&batch.rebuild).await?;
        }
        for (service, copies) in &batch.sync {
            println!(
                "Syncing service {service:?} after {} changes were detected",
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
            println!("service(s) {} restarted", watch::quoted(&batch.restart));
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
            "Rebuilding service(s) {} after changes were detected...",
            watch::quoted(services)
        );
        let names: Vec<String> = services.iter().cloned().collect();
        let before = observe(self.rt.as_ref(), self.project).await?;
        let old: BTreeMap<String, String> = before
            .images
            .iter()
            .map(|(name, image)| (name.clone(), image.id.clone()))
            .collect();
        let build = BuildOptions {
            services: names.clone(),
            always: true,
            with_deps: !self.options.no_deps,
            now: super::now_seconds(),
            ..BuildOptions::default()
        };
        let up = UpOptions {
            services: names.clone(),
            no_deps: self.options.no_deps,
            recreate: Recreate::Force,
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
                "Build failed. Error: the build of {} failed",
                watch::quoted(services)
            );
            bail!("the build failed");
        }
        println!("service(s) {} successfully built", watch::quoted(services));
        if !ran.success() {
            println!("Application failed to start after update.");
        }
        if self.options.prune {
            // The images the rebuild replaced, unless something still uses
            // them.
            let after = observe(self.rt.as_ref(), self.project).await?;
            for (name, id) in old {
                if after.images.get(&name).is_some_and(|i| i.id != id) {
                    let _ = self.rt.remove_image(&id, false).await;
                }
            }
        }
        Ok(())
    }

    /// Copies (and removes) files in every container of the service.
    async fn sync(&self, service: &str, copies: &BTreeSet<Copy>) -> Result<()> {
        let copies: Vec<Copy> = copies.iter().cloned().collect();
        let (tar, gone) = tokio::task::spawn_blocking(move || archive(&copies))
            .await
            .map_err(|e| anyhow!("{e}"))??;
        let containers = self.containers(service).await?;
        let jobs = containers.iter().map(|c| {
            let tar = tar.clone();
            let gone = gone.clone();
            async move {
                if !gone.is_empty() {
                    if c.state != ContainerState::Running {
                        return Ok(());
                    }
                    let mut command = vec!["rm".to_string(), "-rf".to_string(), "--".to_string()];
                    command.extend(gone);
                    let code = self
                        .run_in(&c.id, command, &ExecDefaults::default())
                        .await?;
                    if code != 0 {
                        bail!("deleting paths in {}: exit code {code}", c.name);
                    }
                }
                if let Some(tar) = tar {
                    self.rt
                        .copy_to(&c.id, "/", tar)
                        .await
                        .map_err(|e| anyhow!("copying files to {}: {e}", c.name))?;
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
        let spec = ExecSpec {
            command,
            env: d.env.clone(),
            user: d.user.clone(),
            working_dir: d.working_dir.clone(),
            tty: false,
            stdin: false,
            privileged: d.privileged,
            detach: false,
        };
        let mut session = self.rt.exec(id, &spec).await?;
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

#[derive(Default)]
struct ExecDefaults {
    user: String,
    working_dir: String,
    privileged: bool,
    env: Vec<String>,
}

/// One tar archive of the copies that exist on the host (directories with
/// what they hold, symbolic links as links), named by their paths in the
/// container; and the container paths whose host files are gone.
fn archive(copies: &[Copy]) -> Result<(Option<Vec<u8>>, Vec<String>)> {
    let mut gone = Vec::new();
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut any = false;
    let mut seen: HashSet<String> = HashSet::new();
    for copy in copies {
        let name = copy.container.trim_start_matches('/').to_string();
        match std::fs::symlink_metadata(&copy.host) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone.push(copy.container.clone()),
            Err(e) => bail!("{}: {e}", copy.host.display()),
            Ok(md) => {
                if !seen.insert(name.clone()) {
                    continue;
                }
                let added = if md.is_dir() {
                    builder.append_dir_all(&name, &copy.host)
                } else {
                    builder.append_path_with_name(&copy.host, &name)
                };
                match added {
                    Ok(()) => any = true,
                    // Removed while being read: the next batch tells.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => bail!("adding {} to the archive: {e}", copy.host.display()),
                }
            }
        }
    }
    let bytes = builder.into_inner()?;
    Ok((any.then_some(bytes), gone))
}
