//! The compose loader: files in, a normalized [`Project`] out.
//!
//! The pipeline, in order (the same phases as Compose's own loader):
//!
//! 1. **read**: find the files (`-f`, `COMPOSE_FILE`, or `compose.yaml` and its
//!    override looked up from the working directory upward) and the `.env` files;
//! 2. **parse** each file into `serde_yaml` value trees (`yaml.rs`, on the events
//!    of `saphyr-parser`, scalars resolved as Compose's go-yaml resolves them;
//!    anchors, aliases and `<<` merge keys resolved; `!reset`/`!override` kept
//!    as tags); check the lists that must hold unique items;
//! 3. **interpolate** `${VAR}` forms in every string value;
//! 4. **include** other projects, **canonicalize** short syntax into long syntax,
//!    resolve **extends**;
//! 5. **merge** the files in order, then drop duplicates;
//! 6. **decode** the tree into the typed model (unknown keys and wrong types are
//!    reported here), **validate** its references, **normalize** it (names,
//!    default network, absolute paths, environment) and apply profiles.
//!
//! The loader reads files and nothing else: the process environment is passed
//! in by the caller, so the same inputs always give the same project. Every
//! problem it can find is collected into one [`LoadError`], each
//! [`Diagnostic`] naming its file, line and service.

pub mod canonical;
pub mod diagnostic;
pub mod dotenv;
mod extends;
mod files;
pub mod interpolate;
pub mod locate;
pub mod merge;
mod normalize;
pub mod path;
mod validate;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde_yaml::Value;

pub use diagnostic::{Diagnostic, LoadError};
pub use files::{normalize_project_name, valid_project_name};

use crate::model::Project;
use path::{Segment, YamlPath};

/// Where the compose files come from and how to read them.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Explicit files (`-f`), in order; `-` is standard input. Empty: look them up.
    pub files: Vec<PathBuf>,
    /// The content of standard input, for a `-` file.
    pub stdin: Option<String>,
    /// `--project-directory`.
    pub project_directory: Option<PathBuf>,
    /// `-p`; otherwise `COMPOSE_PROJECT_NAME`, the `name:` key, or the directory's name.
    pub project_name: Option<String>,
    /// `--env-file`, in order; empty means `.env` in the project directory.
    pub env_files: Vec<PathBuf>,
    /// The process environment.
    pub environment: IndexMap<String, String>,
    /// `--profile`; empty means `COMPOSE_PROFILES`.
    pub profiles: Vec<String>,
    /// Services named on the command line: enabled whatever their profiles.
    pub services: Vec<String>,
    /// The directory relative paths on the command line start from.
    pub cwd: PathBuf,
    /// Skip `${VAR}` interpolation (`--no-interpolate`).
    pub no_interpolate: bool,
    /// Skip normalization (`--no-normalize`).
    pub no_normalize: bool,
    /// Keep relative paths as written (`--no-path-resolution`).
    pub no_path_resolution: bool,
    /// Keep networks, volumes, secrets and configs that no service uses.
    pub keep_unused_resources: bool,
}

/// A loaded project and the warnings met on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The normalized project.
    pub project: Project,
    /// Non-fatal remarks (unset variables, obsolete `version`), each once.
    pub warnings: Vec<String>,
    /// The environment used for interpolation (process environment over `.env`).
    pub environment: IndexMap<String, String>,
}

/// The source text of one compose file.
#[derive(Debug, Clone)]
pub(crate) struct SourceFile {
    /// Absolute path (or `-` for standard input).
    pub path: PathBuf,
    /// The text.
    pub text: String,
}

/// Mutable state shared by the phases of one load.
pub(crate) struct Ctx<'a> {
    pub options: &'a LoadOptions,
    pub environment: IndexMap<String, String>,
    pub diagnostics: Vec<Diagnostic>,
    pub warnings: Vec<String>,
    pub sources: Vec<SourceFile>,
    pub home: Option<String>,
}

impl Ctx<'_> {
    pub(crate) fn warn(&mut self, w: String) {
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    /// Records an error at `path` of `file`.
    pub(crate) fn error_at(&mut self, file: &Path, path: YamlPath, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::at(Some(file.to_path_buf()), path, message));
    }

    /// Records an error about a whole file.
    pub(crate) fn error(&mut self, file: Option<&Path>, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::file(file.map(Path::to_path_buf), message));
    }

    /// Fills in line and column of every diagnostic whose file and path are known,
    /// and attributes path-only diagnostics to the last file that has that path.
    fn locate_diagnostics(&mut self) {
        for d in &mut self.diagnostics {
            let Some(path) = d.path.clone() else { continue };
            if d.file.is_none() || d.position.is_none() {
                let candidates: Vec<&SourceFile> = match &d.file {
                    Some(f) => self.sources.iter().filter(|s| &s.path == f).collect(),
                    None => self.sources.iter().rev().collect(),
                };
                for src in candidates {
                    if let Some(loc) = locate::locate(&src.text, &path) {
                        d.file = Some(src.path.clone());
                        d.position = Some((loc.line, loc.column));
                        break;
                    }
                }
            }
        }
    }
}

/// Loads a project from YAML text, as `-f -` does, with `dir` as the project
/// directory and `environment` as the process environment.
pub fn load_from_str(
    text: &str,
    dir: &Path,
    environment: IndexMap<String, String>,
) -> Result<Loaded, LoadError> {
    load(&LoadOptions {
        files: vec![PathBuf::from("-")],
        stdin: Some(text.to_string()),
        project_directory: Some(dir.to_path_buf()),
        environment,
        cwd: dir.to_path_buf(),
        ..LoadOptions::default()
    })
}

impl<'a> Ctx<'a> {
    fn new(options: &'a LoadOptions) -> Self {
        Ctx {
            options,
            environment: IndexMap::new(),
            diagnostics: Vec::new(),
            warnings: Vec::new(),
            sources: Vec::new(),
            home: options.environment.get("HOME").cloned(),
        }
    }

    /// The result of a load: `value` when nothing went wrong, else every
    /// diagnostic with its position.
    fn finish<T>(mut self, value: Option<T>) -> Result<(T, Ctx<'a>), LoadError> {
        self.locate_diagnostics();
        match value {
            Some(v) if self.diagnostics.is_empty() => Ok((v, self)),
            _ => {
                if self.diagnostics.is_empty() {
                    self.error(None, "the project could not be loaded");
                }
                Err(LoadError {
                    diagnostics: self.diagnostics,
                })
            }
        }
    }
}

/// Loads a project as `docker compose config` would.
pub fn load(options: &LoadOptions) -> Result<Loaded, LoadError> {
    let mut ctx = Ctx::new(options);
    let result = load_in(&mut ctx);
    let (project, ctx) = ctx.finish(result)?;
    Ok(Loaded {
        project,
        warnings: ctx.warnings,
        environment: ctx.environment,
    })
}

/// The front half of loading: files found, parsed, interpolated, extended,
/// included and merged into one tree with absolute paths.
fn merged_tree(ctx: &mut Ctx<'_>) -> Option<(files::Plan, String, Value)> {
    let plan = files::resolve(ctx)?;
    let mut parsed = Vec::with_capacity(plan.files.len());
    for file in &plan.files {
        let text = files::read_source(ctx, file)?;
        let docs = parse(ctx, file, &text)?;
        ctx.sources.push(SourceFile {
            path: file.clone(),
            text,
        });
        for d in &docs {
            if let Some(v) = d.get("version") {
                if !v.is_string() {
                    ctx.error_at(
                        file,
                        YamlPath::root().key("version"),
                        "version must be a string",
                    );
                }
            }
        }
        if docs.iter().any(|d| d.get("version").is_some()) {
            ctx.warn(format!(
                "{}: the attribute `version` is obsolete, it will be ignored, please remove it to avoid potential confusion",
                file.display()
            ));
        }
        // Each document of a file is merged like a file of its own.
        parsed.extend(docs.into_iter().map(|d| (file.clone(), d)));
    }
    let name = files::project_name(ctx, &plan, &parsed)?;
    // Compose offers the project name to interpolation.
    ctx.environment
        .insert("COMPOSE_PROJECT_NAME".into(), name.clone());
    let mut merged: Option<Value> = None;
    for (file, tree) in parsed {
        // Tags that `extends` consumes must still clear the earlier files.
        let resets = merge::reset_paths(&tree);
        let tree = process_file(ctx, &file, tree, &plan.working_dir, &mut Vec::new())?;
        merged = Some(match merged {
            None => merge::strip_tags(tree),
            Some(mut base) => {
                merge::apply_resets(&mut base, &resets);
                merge_or_report(ctx, &file, base, tree)?
            }
        });
    }
    let mut tree = merged?;
    if let Err(e) = merge::try_enforce_unicity(&mut tree) {
        ctx.error(None, e.to_string());
    }
    if !ctx.diagnostics.is_empty() {
        return None;
    }
    let first = plan.files.first().cloned();
    let Value::Mapping(top) = &mut tree else {
        ctx.error(first.as_deref(), "top-level object must be a mapping");
        return None;
    };
    if top.is_empty() {
        ctx.error(first.as_deref(), "empty compose file");
        return None;
    }
    top.remove("version");
    top.remove("name");
    if !ctx.options.no_path_resolution {
        normalize::resolve_relative_paths(&mut tree, &plan.working_dir, ctx.home.as_deref());
    }
    Some((plan, name, tree))
}

/// Loads the project model as a plain tree, without interpolation, typing,
/// profiles or environment resolution: what `config --no-interpolate` prints.
pub fn load_model(options: &LoadOptions) -> Result<(serde_json::Value, Vec<String>), LoadError> {
    let mut ctx = Ctx::new(options);
    let result = merged_tree(&mut ctx).and_then(|(_, name, mut tree)| {
        if !options.no_normalize {
            normalize::normalize_tree(&ctx, &mut tree, &name);
        }
        let mut json = serde_json::to_value(&tree).ok()?;
        if let serde_json::Value::Object(m) = &mut json {
            m.insert("name".into(), serde_json::Value::String(name));
        }
        sort_keys(&mut json);
        Some(json)
    });
    let (model, ctx) = ctx.finish(result)?;
    Ok((model, ctx.warnings))
}

/// Sorts every object's keys, as Go prints its maps.
fn sort_keys(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            let mut entries: Vec<(String, serde_json::Value)> =
                std::mem::take(m).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, mut child) in entries {
                sort_keys(&mut child);
                m.insert(k, child);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

fn load_in(ctx: &mut Ctx<'_>) -> Option<Project> {
    let (plan, name, mut tree) = merged_tree(ctx)?;
    let mut unnamed = Default::default();
    if !ctx.options.no_normalize {
        normalize::default_dockerfiles(&mut tree);
        unnamed = normalize::written_empty_names(&tree);
    }
    let mut project = normalize::decode(ctx, tree)?;
    project.unnamed = unnamed;
    project.name = name;
    project.working_dir = plan.working_dir.display().to_string();
    project.config_files = plan.files.iter().map(|f| f.display().to_string()).collect();
    normalize::apply_defaults(&mut project);
    if !ctx.options.no_normalize {
        normalize::normalize(ctx, &mut project);
    }
    normalize::apply_profiles(ctx, &mut project);
    validate::validate(ctx, &mut project);
    if !ctx.diagnostics.is_empty() {
        return None;
    }
    normalize::select_services(ctx, &mut project);
    if !ctx.diagnostics.is_empty() {
        return None;
    }
    if !ctx.options.no_normalize {
        normalize::resolve_environment(ctx, &mut project);
    }
    if !ctx.options.keep_unused_resources {
        normalize::drop_unused_resources(&mut project);
    }
    Some(project)
}

/// Merges a later file onto the earlier ones, reporting what cannot be merged.
pub(crate) fn merge_or_report(
    ctx: &mut Ctx<'_>,
    file: &Path,
    base: Value,
    tree: Value,
) -> Option<Value> {
    match merge::try_merge_project(base, tree) {
        Ok(v) => Some(v),
        Err(e) => {
            ctx.error(Some(file), e.to_string());
            None
        }
    }
}

/// Reads, parses, interpolates, includes, canonicalizes and extends one file.
/// `included` holds the files on the current include chain, to detect cycles.
pub(crate) fn load_file(
    ctx: &mut Ctx<'_>,
    file: &Path,
    working_dir: &Path,
    included: &mut Vec<PathBuf>,
) -> Option<Value> {
    let text = files::read_source(ctx, file)?;
    let docs = parse(ctx, file, &text)?;
    ctx.sources.push(SourceFile {
        path: file.to_path_buf(),
        text,
    });
    let mut merged: Option<Value> = None;
    for doc in docs {
        let resets = merge::reset_paths(&doc);
        let tree = process_file(ctx, file, doc, working_dir, included)?;
        merged = Some(match merged {
            None => merge::strip_tags(tree),
            Some(mut base) => {
                merge::apply_resets(&mut base, &resets);
                merge_or_report(ctx, file, base, tree)?
            }
        });
    }
    merged
}

/// What a plain YAML timestamp (`2001-12-14`) becomes, as in Compose, which
/// reads it as a time: under an `x-` key, the time as Go writes it
/// (`2001-12-14T00:00:00Z`); anywhere else (where the schema wants a string
/// or a number), an error. An `x-` key among user data (a label named
/// `x-built`) is no extension.
fn resolve_timestamps(ctx: &mut Ctx<'_>, file: &Path, tree: &mut Value) {
    fn walk(
        v: &mut Value,
        path: &mut Vec<Segment>,
        extension: bool,
        free: bool,
        faults: &mut Vec<YamlPath>,
    ) {
        match v {
            Value::Tagged(t) if t.tag == serde_yaml::value::Tag::new(yaml::TIMESTAMP) => {
                let text = t.value.as_str().unwrap_or_default().to_string();
                if !extension {
                    faults.push(YamlPath(path.clone()));
                }
                *v = Value::String(yaml::timestamp(&text).filter(|_| extension).unwrap_or(text));
            }
            Value::Tagged(t) => walk(&mut t.value, path, extension, free, faults),
            Value::Mapping(m) => {
                for (k, child) in m.iter_mut() {
                    let key = k.as_str().unwrap_or_default();
                    let child_extension = extension || (!free && key.starts_with("x-"));
                    let child_free = normalize::FREE_FORM.contains(&key);
                    path.push(Segment::Key(key.to_string()));
                    walk(child, path, child_extension, child_free, faults);
                    path.pop();
                }
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    path.push(Segment::Index(i));
                    walk(item, path, extension, false, faults);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut faults = Vec::new();
    walk(tree, &mut Vec::new(), false, false, &mut faults);
    for at in faults {
        ctx.error_at(
            file,
            at,
            "a plain date or time is a timestamp to Compose, not text: quote it",
        );
    }
}

/// Interpolates, includes, canonicalizes and extends one parsed file.
fn process_file(
    ctx: &mut Ctx<'_>,
    file: &Path,
    mut tree: Value,
    working_dir: &Path,
    included: &mut Vec<PathBuf>,
) -> Option<Value> {
    if !matches!(tree, Value::Mapping(_)) {
        ctx.error(Some(file), "top-level object must be a mapping");
        return None;
    }
    resolve_timestamps(ctx, file, &mut tree);
    interpolate_tree(ctx, file, &mut tree);
    let duplicates = validate::unique_items(&tree);
    let written_once = duplicates.is_empty();
    for (path, message) in duplicates.into_iter().chain(validate::schema_faults(&tree)) {
        ctx.error_at(file, path, message);
    }
    let mut errors = Vec::new();
    canonical::canonicalize(&mut tree, &mut errors);
    for e in errors {
        ctx.error_at(file, e.path, e.message);
    }
    // Compose v2.40 resolves extends before include.
    extends::apply_extends(ctx, file, &mut tree);
    // As the reference checks the schema again once extends are resolved:
    // an item that a base service brings twice is refused too.
    if written_once {
        for (path, message) in validate::unique_items(&tree) {
            ctx.error_at(file, path, message);
        }
    }
    included.push(file.to_path_buf());
    files::apply_include(ctx, file, working_dir, &mut tree, included);
    included.pop();
    Some(tree)
}

/// Parses YAML text into one tree per document, with anchors, aliases and
/// merge keys resolved. A file with no document (empty, or only comments) is
/// one empty mapping; a document that is not a mapping, even one with no
/// content (a `---` with nothing after it), is refused where it starts, as
/// Compose refuses it.
pub(crate) fn parse(ctx: &mut Ctx<'_>, file: &Path, text: &str) -> Option<Vec<Value>> {
    let located = match yaml::parse_located_documents(text) {
        Ok(docs) => docs,
        Err(e) => {
            let mut d = Diagnostic::file(Some(file.to_path_buf()), e.message);
            d.position = e.position;
            ctx.diagnostics.push(d);
            return None;
        }
    };
    let mut docs = Vec::with_capacity(located.len().max(1));
    for (mut v, start) in located {
        if !matches!(v, Value::Mapping(_)) {
            let mut d = Diagnostic::file(
                Some(file.to_path_buf()),
                "top-level object must be a mapping",
            );
            d.position = Some(start);
            ctx.diagnostics.push(d);
            return None;
        }
        if let Err(e) = v.apply_merge() {
            ctx.error(Some(file), format!("invalid merge key: {e}"));
            return None;
        }
        docs.push(v);
    }
    if docs.is_empty() {
        docs.push(Value::Mapping(Default::default()));
    }
    Some(docs)
}

fn interpolate_tree(ctx: &mut Ctx<'_>, file: &Path, tree: &mut Value) {
    if ctx.options.no_interpolate {
        return;
    }
    let env = &ctx.environment;
    let lookup = |name: &str| env.get(name).cloned();
    let mut errors = Vec::new();
    let mut unset = Vec::new();
    interpolate::interpolate_value_with(
        tree,
        &lookup,
        &YamlPath::root(),
        &mut errors,
        &mut |_, name| unset.push(name.to_string()),
    );
    for (path, e) in errors {
        ctx.error_at(file, path, e.to_string());
    }
    for name in unset {
        ctx.warn(format!(
            "The \"{name}\" variable is not set. Defaulting to a blank string."
        ));
    }
}

/// Extracts the `x-` keys of a mapping.
pub(crate) fn take_extensions(m: &mut serde_yaml::Mapping) -> BTreeMap<String, Value> {
    let keys: Vec<Value> = m
        .keys()
        .filter(|k| k.as_str().is_some_and(|k| k.starts_with("x-")))
        .cloned()
        .collect();
    keys.into_iter()
        .filter_map(|k| {
            let v = m.remove(&k)?;
            Some((k.as_str()?.to_string(), v))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Loaded, LoadError> {
        load_from_str(text, &std::env::temp_dir(), IndexMap::new())
    }

    #[test]
    fn the_documents_of_a_file_merge_as_compose_merges_them() {
        let loaded = load_text(
            "services:\n  a:\n    image: a\n---\nservices:\n  a:\n    image: b\n  c:\n    image: c\n",
        )
        .unwrap();
        let images: Vec<(&str, &str)> = loaded
            .project
            .services
            .iter()
            .map(|(name, s)| (name.as_str(), s.image.as_str()))
            .collect();
        assert_eq!(images, [("a", "b"), ("c", "c")]);
    }

    #[test]
    fn a_document_that_is_not_a_mapping_is_refused_where_it_starts() {
        // Compose refuses a document with no content, even after others
        // (`---` at the end of a file), as it refuses a list; a file with no
        // document is empty.
        let a = "services:\n  a:\n    image: a\n";
        for (text, position) in [
            (format!("{a}---\n"), (4, 1)),
            (format!("---\n---\n{a}"), (1, 1)),
            (format!("{a}---\n# nothing\n---\n{a}"), (4, 1)),
            ("~\n".to_string(), (1, 1)),
            (format!("{a}---\n- x\n"), (4, 1)),
        ] {
            let e = load_text(&text).expect_err(&text);
            let d = &e.diagnostics[0];
            assert_eq!(
                (d.message.as_str(), d.position),
                ("top-level object must be a mapping", Some(position)),
                "{text:?}"
            );
        }
        let e = load_text("# only a comment\n").unwrap_err();
        assert_eq!(e.diagnostics[0].message, "empty compose file");
    }
}
