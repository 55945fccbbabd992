//! The front of the loader: which files, which directory, which environment,
//! which project name; and `include`.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_yaml::{Mapping, Value};

use super::path::YamlPath;
use super::{dotenv, load_file, Ctx};

/// Compose file names looked up, in order of preference.
const FILE_NAMES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];
/// Override file names picked up beside the main file.
const OVERRIDE_NAMES: [&str; 4] = [
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
];

/// What to load: the files in order and the project directory.
pub(crate) struct Plan {
    pub files: Vec<PathBuf>,
    pub working_dir: PathBuf,
}

fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// Lexically removes `.` and `..` from an absolute path.
fn clean(p: &Path) -> PathBuf {
    PathBuf::from(super::canonical::clean_path(&p.to_string_lossy()))
}

/// Reads `.env`-style files in order, later files overriding earlier ones;
/// variables in them are looked up in `base` first. Missing files are errors
/// only when `must_exist`.
fn read_env_files(
    ctx: &mut Ctx<'_>,
    files: &[PathBuf],
    base: &IndexMap<String, String>,
    must_exist: bool,
) -> Option<IndexMap<String, String>> {
    let mut vars = IndexMap::new();
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(text) => {
                let lookup = |k: &str| base.get(k).or_else(|| vars.get(k)).cloned();
                match dotenv::parse(&text, &lookup) {
                    Ok(v) => vars.extend(v),
                    Err(e) => {
                        ctx.error(Some(f), e.to_string());
                        return None;
                    }
                }
            }
            Err(e) if must_exist => {
                ctx.error(Some(f), format!("couldn't read env file: {e}"));
                return None;
            }
            Err(_) => {}
        }
    }
    Some(vars)
}

/// Decides the files, the project directory and the interpolation environment.
pub(crate) fn resolve(ctx: &mut Ctx<'_>) -> Option<Plan> {
    let opts = ctx.options;
    let cwd = opts.cwd.clone();
    let project_dir = opts
        .project_directory
        .as_ref()
        .map(|d| clean(&absolute(&cwd, d)));
    let mut files: Vec<PathBuf> = opts
        .files
        .iter()
        .map(|f| {
            if f.as_os_str() == "-" {
                f.clone()
            } else {
                clean(&absolute(&cwd, f))
            }
        })
        .collect();
    let search_dir = project_dir.clone().unwrap_or_else(|| cwd.clone());
    if files.is_empty() {
        // COMPOSE_FILE may come from the environment or from the `.env`
        // file where the search starts.
        let mut compose_file = opts.environment.get("COMPOSE_FILE").cloned();
        let mut sep = opts.environment.get("COMPOSE_PATH_SEPARATOR").cloned();
        if compose_file.is_none() && opts.env_files.is_empty() {
            let early = read_env_files(ctx, &[search_dir.join(".env")], &opts.environment, false)?;
            compose_file = early.get("COMPOSE_FILE").cloned();
            sep = sep.or_else(|| early.get("COMPOSE_PATH_SEPARATOR").cloned());
        }
        if let Some(list) = compose_file.filter(|l| !l.is_empty()) {
            let sep = sep.unwrap_or_else(|| ":".into());
            files = list
                .split(sep.as_str())
                .filter(|f| !f.is_empty())
                .map(|f| clean(&absolute(&search_dir, Path::new(f))))
                .collect();
        }
    }
    if files.is_empty() {
        files = discover(&search_dir).unwrap_or_default();
        if files.is_empty() {
            ctx.error(
                None,
                "no configuration file provided: not found (looked for compose.yaml, compose.yml, docker-compose.yml, docker-compose.yaml here and in every parent directory)",
            );
            return None;
        }
    }
    let working_dir = match project_dir {
        Some(d) => d,
        None => files
            .iter()
            .find(|f| f.as_os_str() != "-")
            .and_then(|f| f.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| cwd.clone()),
    };
    let (env_files, explicit) = if opts.env_files.is_empty() {
        (vec![working_dir.join(".env")], false)
    } else {
        (
            opts.env_files.iter().map(|f| absolute(&cwd, f)).collect(),
            true,
        )
    };
    let dot_env = read_env_files(ctx, &env_files, &opts.environment, explicit)?;
    let mut environment = opts.environment.clone();
    for (k, v) in dot_env {
        environment.entry(k).or_insert(v);
    }
    ctx.environment = environment;
    Some(Plan { files, working_dir })
}

/// Looks for a compose file from `dir` upward, with its override beside it.
fn discover(dir: &Path) -> Option<Vec<PathBuf>> {
    let mut dir = Some(dir);
    while let Some(d) = dir {
        if let Some(main) = FILE_NAMES.iter().map(|n| d.join(n)).find(|p| p.is_file()) {
            let mut files = vec![main];
            if let Some(o) = OVERRIDE_NAMES
                .iter()
                .map(|n| d.join(n))
                .find(|p| p.is_file())
            {
                files.push(o);
            }
            return Some(files);
        }
        dir = d.parent();
    }
    None
}

/// Reads one compose file (or standard input for `-`).
pub(crate) fn read_source(ctx: &mut Ctx<'_>, file: &Path) -> Option<String> {
    if file.as_os_str() == "-" {
        return match &ctx.options.stdin {
            Some(s) => Some(s.clone()),
            None => {
                ctx.error(Some(file), "no compose content on standard input");
                None
            }
        };
    }
    match std::fs::read_to_string(file) {
        Ok(s) => Some(s),
        Err(e) => {
            ctx.error(Some(file), format!("cannot read file: {e}"));
            None
        }
    }
}

/// Lower-cases a name and keeps only `[a-z0-9_-]`, as Compose does.
pub fn normalize_project_name(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect::<String>()
        .trim_start_matches(['_', '-'])
        .to_string()
}

/// Whether a project name is valid: `[a-z0-9][a-z0-9_-]*`.
pub fn valid_project_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn invalid_name(name: &str) -> String {
    format!("invalid project name {name:?}: must consist only of lowercase alphanumeric characters, hyphens, and underscores as well as start with a letter or number")
}

/// The project name: `-p` or `COMPOSE_PROJECT_NAME` (which must be valid as
/// written), else the last `name:` of the files (interpolated, then
/// normalized), else the project directory's name (normalized).
pub(crate) fn project_name(
    ctx: &mut Ctx<'_>,
    plan: &Plan,
    parsed: &[(PathBuf, Value)],
) -> Option<String> {
    let explicit = ctx
        .options
        .project_name
        .clone()
        .or_else(|| ctx.environment.get("COMPOSE_PROJECT_NAME").cloned())
        .filter(|n| !n.is_empty());
    if let Some(name) = explicit {
        if !valid_project_name(&name) {
            ctx.error(None, invalid_name(&name));
            return None;
        }
        return Some(name);
    }
    let mut from_files = None;
    for (file, tree) in parsed {
        let Some(raw) = tree
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        let name = if ctx.options.no_interpolate {
            raw.to_string()
        } else {
            let env = &ctx.environment;
            match super::interpolate::substitute(raw, &|k| env.get(k).cloned()) {
                Ok(n) => n,
                Err(e) => {
                    ctx.error_at(file, YamlPath::root().key("name"), e.to_string());
                    return None;
                }
            }
        };
        from_files = Some(name);
    }
    let name = match from_files {
        Some(n) if ctx.options.no_normalize => n,
        Some(n) => normalize_project_name(&n),
        None => normalize_project_name(
            &plan
                .working_dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
        ),
    };
    if name.is_empty() {
        ctx.error(None, "project name must not be empty");
        return None;
    }
    Some(name)
}

/// Resolves the `include` section of a file: each entry is loaded as a project of
/// its own (own directory, own `.env`) and its resources are added to this file.
pub(crate) fn apply_include(
    ctx: &mut Ctx<'_>,
    file: &Path,
    working_dir: &Path,
    tree: &mut Value,
    included: &mut Vec<PathBuf>,
) {
    let Value::Mapping(top) = tree else { return };
    let Some(includes) = top.remove("include") else {
        return;
    };
    let Value::Sequence(includes) = includes else {
        ctx.error_at(
            file,
            YamlPath::root().key("include"),
            "`include` must be a list",
        );
        return;
    };
    for (i, inc) in includes.into_iter().enumerate() {
        let at = YamlPath::root().key("include").index(i);
        let Value::Mapping(inc) = inc else {
            ctx.error_at(file, at, "must be a string or a mapping");
            continue;
        };
        let paths: Vec<PathBuf> = match inc.get("path") {
            Some(Value::String(p)) => vec![PathBuf::from(p)],
            Some(Value::Sequence(ps)) => ps
                .iter()
                .filter_map(Value::as_str)
                .map(PathBuf::from)
                .collect(),
            _ => {
                ctx.error_at(file, at, "`path` is required");
                continue;
            }
        };
        let paths: Vec<PathBuf> = paths
            .iter()
            .map(|p| clean(&absolute(working_dir, p)))
            .collect();
        let Some(first) = paths.first() else { continue };
        if included.contains(first) {
            let chain: Vec<String> = included.iter().map(|p| p.display().to_string()).collect();
            ctx.error_at(
                file,
                at,
                format!(
                    "include cycle detected: {} include {}",
                    chain.join(" include "),
                    first.display()
                ),
            );
            continue;
        }
        let project_dir = match inc.get("project_directory").and_then(Value::as_str) {
            Some(d) => clean(&absolute(working_dir, Path::new(d))),
            None => first.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        let env_files: Vec<PathBuf> = match inc.get("env_file") {
            Some(Value::String(f)) => vec![absolute(working_dir, Path::new(f))],
            Some(Value::Sequence(fs)) => fs
                .iter()
                .filter_map(Value::as_str)
                .map(|f| absolute(working_dir, Path::new(f)))
                .collect(),
            _ => vec![project_dir.join(".env")],
        };
        let saved_env = ctx.environment.clone();
        // The included project's env files override the environment, later
        // files overriding earlier ones, as Compose does.
        let mut included_env: IndexMap<String, String> = IndexMap::new();
        for f in env_files.iter().filter(|f| f.is_file()) {
            if let Ok(text) = std::fs::read_to_string(f) {
                let base = ctx.environment.clone();
                let known = included_env.clone();
                let lookup = |k: &str| base.get(k).or_else(|| known.get(k)).cloned();
                match dotenv::parse(&text, &lookup) {
                    Ok(vars) => included_env.extend(vars),
                    Err(e) => ctx.error(Some(f), e.to_string()),
                }
            }
        }
        ctx.environment.extend(included_env);
        let mut merged: Option<Value> = None;
        for p in &paths {
            let Some(sub) = load_file(ctx, p, &project_dir, included) else {
                continue;
            };
            merged = match merged {
                None => Some(super::merge::strip_tags(sub)),
                Some(base) => super::merge_or_report(ctx, p, base, sub),
            };
        }
        ctx.environment = saved_env;
        let Some(mut sub) = merged else { continue };
        super::normalize::resolve_relative_paths(&mut sub, &project_dir, ctx.home.as_deref());
        import_resources(ctx, file, top, sub);
    }
}

/// Adds the included project's resources, rejecting conflicting definitions.
fn import_resources(ctx: &mut Ctx<'_>, file: &Path, top: &mut Mapping, sub: Value) {
    let Value::Mapping(mut sub) = sub else { return };
    for kind in [
        "services", "volumes", "networks", "secrets", "configs", "models",
    ] {
        let Some(Value::Mapping(items)) = sub.remove(kind) else {
            continue;
        };
        let target = top
            .entry(Value::String(kind.into()))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if matches!(target, Value::Null) {
            *target = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(target) = target else {
            continue;
        };
        for (name, def) in items {
            match target.get(&name) {
                Some(existing) if *existing != def => {
                    let n = name.as_str().unwrap_or_default().to_string();
                    ctx.error_at(
                        file,
                        YamlPath::root().key(kind).key(n.clone()),
                        format!("{kind}.{n} conflicts with imported resource"),
                    );
                }
                Some(_) => {}
                None => {
                    target.insert(name, def);
                }
            }
        }
    }
}
