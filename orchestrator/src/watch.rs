//! `develop.watch`: which rules a project's services have, and what a batch
//! of changed host paths asks of them (files to sync into containers,
//! services to rebuild, restart or exec in). Pure: the `.dockerignore` of a
//! build context is read by the caller; the command (`cli/watch.rs`) owns
//! the file events and the runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use runtime_shim::context::IgnoreMatcher;

use crate::model::{Hook, Project, VolumeMount};

/// What a rule does when a path under it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Build the service's image again and recreate its containers.
    Rebuild,
    /// Copy the changed files into the containers.
    Sync,
    /// Restart the containers.
    Restart,
    /// Copy, then restart.
    SyncRestart,
    /// Copy, then run the rule's command in each container.
    SyncExec,
}

impl Action {
    fn read(s: &str) -> Option<Action> {
        Some(match s {
            "rebuild" => Action::Rebuild,
            "sync" => Action::Sync,
            "restart" => Action::Restart,
            "sync+restart" => Action::SyncRestart,
            "sync+exec" => Action::SyncExec,
            _ => return None,
        })
    }

    /// Whether the action copies files.
    pub fn syncs(self) -> bool {
        matches!(self, Action::Sync | Action::SyncRestart | Action::SyncExec)
    }
}

/// Paths editors write beside the files they save, never synced (as
/// Compose leaves them out).
const EDITOR_FILES: &[&str] = &[
    "**/*___jb_old___",
    "**/*___jb_tmp___",
    "**/.idea",
    "**/.#*",
    "**/#*#",
    "**/4913",
    "**/*~",
    "**/.*.swp",
    "**/.*.swx",
    "**/.*.swo",
    "**/.*.swn",
    "**/.*.kate-swp",
    "**/*-go-tmp-umask",
    // Version control, at any depth.
    "**/.git",
    // rcompose's own staging, should a target lead back to the host.
    "**/.rcompose-sync-*",
];

/// One rule of a service, ready to match paths.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The service.
    pub service: String,
    /// Its position in the service's `develop.watch`.
    pub index: usize,
    /// The watched host path (absolute).
    pub path: PathBuf,
    /// What to do.
    pub action: Action,
    /// Where `path` lands in the containers (sync actions).
    pub target: String,
    /// The command of `sync+exec`.
    pub exec: Hook,
    /// Copy everything under `path` once, before watching.
    pub initial_sync: bool,
    include: Option<IgnoreMatcher>,
    ignore: IgnoreMatcher,
    /// The build context and its `.dockerignore`.
    context: Option<(PathBuf, IgnoreMatcher)>,
    /// Host directories the service mounts: what changes there changed
    /// in the containers already (and a sync into them would come back
    /// as a change).
    binds: Vec<PathBuf>,
}

/// Errors are fatal to the watch; warnings are printed and the rest goes on.
#[derive(Debug, Default)]
pub struct Setup {
    /// Every rule, by service then position.
    pub rules: Vec<Rule>,
    /// What was left out, and why.
    pub warnings: Vec<String>,
}

/// The rules of `services` (every service when empty, with what they depend
/// on). `dockerignore` reads a file, `None` when it does not exist.
pub fn rules(
    project: &Project,
    services: &[String],
    dockerignore: &dyn Fn(&Path) -> Option<String>,
) -> Result<Setup, String> {
    let mut setup = Setup::default();
    for name in selected(project, services) {
        let Some(service) = project.services.get(&name) else {
            continue;
        };
        let Some(develop) = &service.develop else {
            continue;
        };
        let context = match &service.build {
            Some(build) if !build.context.contains("://") => {
                let root = PathBuf::from(&build.context);
                let mut files = vec![root.join(".dockerignore")];
                // An empty dockerfile (an unset variable) is the default one.
                let dockerfile = match build.dockerfile.as_str() {
                    "" if build.dockerfile_inline.is_empty() => "Dockerfile",
                    d => d,
                };
                if !dockerfile.is_empty() {
                    files.insert(0, root.join(format!("{dockerfile}.dockerignore")));
                }
                let read = files
                    .into_iter()
                    .find_map(|f| dockerignore(&f).map(|text| (f, text)));
                let matcher = match read {
                    Some((file, text)) => IgnoreMatcher::parse(&text)
                        .map_err(|e| format!("service {name:?}: {}: {e}", file.display()))?,
                    None => IgnoreMatcher::default(),
                };
                Some((root, matcher))
            }
            _ => None,
        };
        for (index, w) in develop.watch.iter().enumerate() {
            // A rule that cannot work is left out with a warning naming
            // it; the others are watched.
            let where_ = format!("service {name:?}, develop.watch[{index}]");
            let Some(action) = Action::read(&w.action) else {
                setup.warnings.push(format!(
                    "{where_}: unknown action {:?}, this rule is not watched",
                    w.action
                ));
                continue;
            };
            if action == Action::Rebuild && service.build.is_none() {
                setup.warnings.push(format!(
                    "{where_}: can't watch service {name:?} with action rebuild without a build context, this rule is not watched"
                ));
                continue;
            }
            if action.syncs() && w.target.is_empty() {
                setup.warnings.push(format!(
                    "{where_}: target is required for action {}, this rule is not watched",
                    w.action
                ));
                continue;
            }
            if action.syncs() && !w.target.starts_with('/') {
                setup.warnings.push(format!(
                    "{where_}: target {:?} is not absolute: it is taken from the container's root, /{}",
                    w.target,
                    w.target.trim_start_matches("./")
                ));
            }
            let path = PathBuf::from(&w.path);
            if !project.working_dir.is_empty() && !path.starts_with(&project.working_dir) {
                setup.warnings.push(format!(
                    "{where_}: path {} is outside the project directory {}",
                    w.path, project.working_dir
                ));
            }
            if action.syncs() {
                if let Some(bind) = bound(&service.volumes, &path) {
                    setup.warnings.push(format!(
                        "path '{}' also declared by a bind mount volume ({} at {}), this path won't be monitored!",
                        w.path, bind.source, bind.target
                    ));
                    continue;
                }
            }
            let patterns = |list: &[String], what: &str| {
                IgnoreMatcher::parse(&list.join("\n")).map_err(|e| format!("{where_}: {what}: {e}"))
            };
            let ignore = IgnoreMatcher::parse(&EDITOR_FILES.join("\n"))
                .map_err(|e| format!("{where_}: {e}"))?
                .then(patterns(&w.ignore.0, "ignore")?);
            let include = if w.include.0.is_empty() {
                None
            } else {
                Some(patterns(&w.include.0, "include")?)
            };
            let mut target = w.target.clone();
            if action.syncs() && !target.starts_with('/') {
                // Compose extracts at `/`: a relative target is from the root.
                target = format!("/{}", target.trim_start_matches("./"));
            }
            setup.rules.push(Rule {
                service: name.clone(),
                index,
                path,
                action,
                target,
                exec: w.exec.clone(),
                initial_sync: w.initial_sync,
                include,
                ignore,
                context: context.clone(),
                binds: service
                    .volumes
                    .iter()
                    .filter(|v| v.kind == "bind" && !v.source.is_empty())
                    .map(|v| PathBuf::from(&v.source))
                    .collect(),
            });
        }
    }
    Ok(setup)
}

/// The services to watch: those named, with their dependencies; every
/// service when none is named.
fn selected(project: &Project, services: &[String]) -> Vec<String> {
    if services.is_empty() {
        return project.services.keys().cloned().collect();
    }
    let mut out: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = services.to_vec();
    while let Some(name) = todo.pop() {
        if !out.insert(name.clone()) {
            continue;
        }
        if let Some(s) = project.services.get(&name) {
            todo.extend(s.depends_on.keys().cloned());
        }
    }
    out.into_iter().collect()
}

/// The bind mount whose source holds `path`, if any.
fn bound<'a>(volumes: &'a [VolumeMount], path: &Path) -> Option<&'a VolumeMount> {
    volumes
        .iter()
        .find(|v| v.kind == "bind" && !v.source.is_empty() && path.starts_with(&v.source))
}

/// `path` relative to `root`, `/`-separated; `None` when outside.
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    Some(
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
    )
}

impl Rule {
    /// Whether a change of `path` concerns this rule: under its path,
    /// included, and ignored neither by the rule, by the editors' and
    /// version control's files, nor by the build context's
    /// `.dockerignore`.
    pub fn matches(&self, path: &Path) -> bool {
        let Some(rel) = relative(&self.path, path) else {
            return false;
        };
        if self.binds.iter().any(|b| path.starts_with(b)) {
            return false;
        }
        if !rel.is_empty() {
            if self.ignore.excluded(&rel) {
                return false;
            }
            if let Some(include) = &self.include {
                if !include.excluded(&rel) {
                    return false;
                }
            }
        }
        !self.ignored_by_context(path)
    }

    /// Whether a directory can hold nothing this rule wants (so that its
    /// tree need not be watched): ignored itself, by a pattern that covers
    /// what is under it.
    pub fn skips_dir(&self, dir: &Path) -> bool {
        match relative(&self.path, dir) {
            Some(rel) if !rel.is_empty() => {
                self.ignore.excluded(&rel)
                    || self.ignored_by_context(dir)
                    || self.binds.iter().any(|b| dir.starts_with(b))
            }
            Some(_) => false,
            None => true,
        }
    }

    fn ignored_by_context(&self, path: &Path) -> bool {
        match &self.context {
            Some((root, matcher)) => match relative(root, path) {
                Some(rel) if !rel.is_empty() => matcher.excluded(&rel),
                _ => false,
            },
            None => false,
        }
    }

    /// Where a host path under the rule lands in the containers.
    pub fn container_path(&self, path: &Path) -> Option<String> {
        let rel = relative(&self.path, path)?;
        let joined = if rel.is_empty() {
            self.target.clone()
        } else {
            format!("{}/{rel}", self.target.trim_end_matches('/'))
        };
        Some(runtime_shim::context::clean_path(&joined))
    }
}

/// A file to copy: from the host, to a path in the service's containers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Copy {
    /// The host path (it may be gone: then the container's is removed).
    pub host: PathBuf,
    /// The path in the containers.
    pub container: String,
}

/// What a batch of changes asks for, service by service.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    /// Services to build and recreate.
    pub rebuild: BTreeSet<String>,
    /// Files to copy (or remove) per service.
    pub sync: BTreeMap<String, BTreeSet<Copy>>,
    /// Services to restart.
    pub restart: BTreeSet<String>,
    /// `sync+exec` rules to run, per service, by position.
    pub exec: BTreeMap<String, BTreeSet<usize>>,
}

impl Batch {
    /// Whether the batch asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.rebuild.is_empty()
            && self.sync.is_empty()
            && self.restart.is_empty()
            && self.exec.is_empty()
    }
}

/// Sorts changed paths into what the rules ask for.
pub fn triage<'a>(rules: &[Rule], paths: impl IntoIterator<Item = &'a Path>) -> Batch {
    let mut batch = Batch::default();
    for path in paths {
        for rule in rules.iter().filter(|r| r.matches(path)) {
            let service = rule.service.clone();
            if rule.action.syncs() {
                if let Some(container) = rule.container_path(path) {
                    batch.sync.entry(service.clone()).or_default().insert(Copy {
                        host: path.to_path_buf(),
                        container,
                    });
                }
            }
            match rule.action {
                Action::Rebuild => {
                    batch.rebuild.insert(service);
                }
                Action::Restart | Action::SyncRestart => {
                    batch.restart.insert(service);
                }
                Action::SyncExec => {
                    batch.exec.entry(service).or_default().insert(rule.index);
                }
                Action::Sync => {}
            }
        }
    }
    batch
}

/// Services as Compose lists them in its messages: `["a" "b"]`.
pub fn quoted(services: &BTreeSet<String>) -> String {
    let inner: Vec<String> = services.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", inner.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(yaml: &str) -> Project {
        let dir = std::env::temp_dir();
        match crate::loader::load_from_str(yaml, &dir, indexmap::IndexMap::new()) {
            Ok(l) => l.project,
            Err(e) => panic!("{e}"),
        }
    }

    fn rules_of(yaml: &str, ignore: Option<&str>) -> Setup {
        let p = project(yaml);
        let text = ignore.map(str::to_string);
        rules(&p, &[], &|_| text.clone()).unwrap_or_else(|e| panic!("{e}"))
    }

    const APP: &str = r#"
services:
  web:
    build: /src/app
    develop:
      watch:
        - path: /src/app/web
          target: /srv
          action: sync
          ignore: [node_modules/, "*.tmp"]
        - path: /src/app/package.json
          action: rebuild
        - path: /src/app/conf
          target: /etc/app
          action: sync+exec
          include: ["*.conf"]
          exec:
            command: reload
        - path: /src/app/web/restart.txt
          action: restart
"#;

    #[test]
    fn changes_are_sorted_into_actions() {
        let setup = rules_of(APP, Some("web/secret.txt\n"));
        assert_eq!(setup.rules.len(), 4);
        let paths = [
            "/src/app/web/index.php",
            "/src/app/web/node_modules/x/y.js",
            "/src/app/web/a.tmp",
            "/src/app/web/.git/HEAD",
            "/src/app/web/sub/.index.php.swp",
            "/src/app/web/secret.txt",
            "/src/app/package.json",
            "/src/app/conf/a.conf",
            "/src/app/conf/a.bak",
            "/elsewhere/file",
        ];
        let batch = triage(&setup.rules, paths.iter().map(Path::new));
        let synced: Vec<(&str, &str)> = batch.sync["web"]
            .iter()
            .map(|c| (c.host.to_str().unwrap_or(""), c.container.as_str()))
            .collect();
        assert_eq!(
            synced,
            [
                ("/src/app/conf/a.conf", "/etc/app/a.conf"),
                ("/src/app/web/index.php", "/srv/index.php"),
            ]
        );
        assert_eq!(batch.rebuild, BTreeSet::from(["web".to_string()]));
        assert_eq!(batch.exec["web"], BTreeSet::from([2]));
        assert!(batch.restart.is_empty());
        let restart = triage(&setup.rules, [Path::new("/src/app/web/restart.txt")]);
        assert_eq!(restart.restart, BTreeSet::from(["web".to_string()]));
        assert_eq!(quoted(&restart.restart), r#"["web"]"#);
    }

    #[test]
    fn ignored_trees_are_not_watched() {
        let setup = rules_of(APP, None);
        let sync = &setup.rules[0];
        assert!(sync.skips_dir(Path::new("/src/app/web/node_modules")));
        assert!(sync.skips_dir(Path::new("/src/app/web/.git")));
        assert!(sync.skips_dir(Path::new("/src/app/other")));
        assert!(!sync.skips_dir(Path::new("/src/app/web/src")));
        assert!(!sync.skips_dir(Path::new("/src/app/web")));
    }

    #[test]
    fn bad_rules_are_named() {
        let p = project(
            "services:\n  db:\n    image: x\n    develop:\n      watch:\n        - path: /a\n          action: rebuild\n",
        );
        let setup = rules(&p, &[], &|_| None).unwrap_or_else(|e| panic!("{e}"));
        assert!(setup.rules.is_empty());
        assert_eq!(
            setup.warnings,
            ["service \"db\", develop.watch[0]: can't watch service \"db\" with action rebuild without a build context, this rule is not watched"]
        );
        let p = project(
            "services:\n  web:\n    image: x\n    develop:\n      watch:\n        - path: /elsewhere\n          target: srv\n          action: sync\n        - path: /tmp/x\n          action: restart\n",
        );
        let setup = rules(&p, &[], &|_| None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(setup.rules.len(), 2, "the other rules are watched");
        assert_eq!(setup.rules[0].target, "/srv");
        assert!(
            setup
                .warnings
                .iter()
                .any(|w| w.contains("develop.watch[0]: target \"srv\" is not absolute")),
            "{:?}",
            setup.warnings
        );
        assert!(
            setup.warnings.iter().any(|w| w
                .contains("develop.watch[0]: path /elsewhere is outside the project directory")),
            "{:?}",
            setup.warnings
        );
        let p = project(
            "services:\n  db:\n    image: x\n    volumes: [/src:/src]\n    develop:\n      watch:\n        - path: /src/a\n          target: /a\n          action: sync\n",
        );
        let setup = rules(&p, &[], &|_| None).unwrap_or_else(|e| panic!("{e}"));
        assert!(setup.rules.is_empty());
        assert!(
            setup
                .warnings
                .iter()
                .any(|w| w.starts_with("path '/src/a' also declared by a bind mount volume")),
            "{:?}",
            setup.warnings
        );
    }
}
