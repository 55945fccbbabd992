//! From the merged tree to the normalized [`Project`]: relative paths made
//! absolute, typed decoding, defaults, implied dependencies, the default
//! network, resource names, profiles and environment resolution.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::path::{Segment, YamlPath};
use super::{dotenv, take_extensions, Ctx};
use crate::model::{
    Dependency, MappingWithEquals, NestedExtensions, Network, Project, Service, Step,
};

/// Mappings whose keys are user data, where `x-` is an ordinary key.
pub(crate) const FREE_FORM: [&str; 16] = [
    "environment",
    "labels",
    "args",
    "sysctls",
    "driver_opts",
    "options",
    "annotations",
    "aux_addresses",
    "storage_opt",
    "log_opt",
    "additional_contexts",
    "extra_hosts",
    "depends_on",
    "ulimits",
    "networks",
    "models",
];

/// Joins a relative path onto `base`, expanding `~` first; absolute paths are kept.
fn abs_path(p: &str, base: &Path, home: Option<&str>) -> String {
    let expanded = match (p.strip_prefix('~'), home) {
        (Some(rest), Some(home)) => super::canonical::clean_path(&format!("{home}/{rest}")),
        _ => p.to_string(),
    };
    if expanded.starts_with('/') || expanded.is_empty() {
        return expanded;
    }
    super::canonical::clean_path(&format!("{}/{expanded}", base.display()))
}

fn is_remote_context(v: &str) -> bool {
    v.contains("://")
        || v.starts_with("service:")
        || [
            "https://",
            "http://",
            "git://",
            "ssh://",
            "github.com/",
            "git@",
        ]
        .iter()
        .any(|p| v.starts_with(p))
}

fn rewrite_str(v: &mut Value, f: impl Fn(&str) -> String) {
    if let Value::String(s) = v {
        *s = f(s);
    }
}

/// Makes every path of a tree that Compose resolves absolute against `base`.
pub(crate) fn resolve_relative_paths(tree: &mut Value, base: &Path, home: Option<&str>) {
    let abs = |p: &str| abs_path(p, base, home);
    if let Some(Value::Mapping(services)) = tree.get_mut("services") {
        for (_, svc) in services.iter_mut() {
            let Value::Mapping(svc) = svc else { continue };
            if let Some(Value::Mapping(build)) = svc.get_mut("build") {
                if !build.contains_key("context") {
                    build.insert("context".into(), ".".into());
                }
                if let Some(ctx) = build.get_mut("context") {
                    rewrite_str(ctx, |c| {
                        if is_remote_context(c) {
                            c.to_string()
                        } else {
                            abs(c)
                        }
                    });
                }
                if let Some(Value::Mapping(extra)) = build.get_mut("additional_contexts") {
                    for (_, c) in extra.iter_mut() {
                        rewrite_str(c, |c| {
                            if is_remote_context(c) {
                                c.to_string()
                            } else {
                                abs(c)
                            }
                        });
                    }
                }
                if let Some(Value::Sequence(ssh)) = build.get_mut("ssh") {
                    for entry in ssh.iter_mut() {
                        rewrite_str(entry, |e| match e.split_once('=') {
                            Some((id, p)) => format!("{id}={}", abs(p)),
                            None => e.to_string(),
                        });
                    }
                }
            }
            if let Some(Value::Sequence(env_files)) = svc.get_mut("env_file") {
                for f in env_files.iter_mut() {
                    if let Some(p) = f.get_mut("path") {
                        rewrite_str(p, abs);
                    }
                }
            }
            if let Some(Value::Sequence(files)) = svc.get_mut("label_file") {
                for f in files.iter_mut() {
                    rewrite_str(f, abs);
                }
            }
            if let Some(Value::Sequence(volumes)) = svc.get_mut("volumes") {
                for vol in volumes.iter_mut() {
                    if vol.get("type").and_then(Value::as_str) == Some("bind") {
                        if let Some(src) = vol.get_mut("source") {
                            rewrite_str(src, abs);
                        }
                    }
                }
            }
            if let Some(Value::Mapping(develop)) = svc.get_mut("develop") {
                if let Some(Value::Sequence(watch)) = develop.get_mut("watch") {
                    for w in watch.iter_mut() {
                        if let Some(p) = w.get_mut("path") {
                            rewrite_str(p, abs);
                        }
                    }
                }
            }
        }
    }
    for kind in ["configs", "secrets"] {
        if let Some(Value::Mapping(items)) = tree.get_mut(kind) {
            for (_, item) in items.iter_mut() {
                if let Some(f) = item.get_mut("file") {
                    rewrite_str(f, abs);
                }
            }
        }
    }
    if let Some(Value::Mapping(volumes)) = tree.get_mut("volumes") {
        for (_, vol) in volumes.iter_mut() {
            if vol.get("driver").and_then(Value::as_str) != Some("local") {
                continue;
            }
            if let Some(Value::Mapping(opts)) = vol.get_mut("driver_opts") {
                if opts.get("o").and_then(Value::as_str) == Some("bind") {
                    if let Some(dev) = opts.get_mut("device") {
                        // An empty device is the project directory itself,
                        // as Compose joins it.
                        rewrite_str(dev, |d| match d {
                            "" => base.display().to_string(),
                            d => abs(d),
                        });
                    }
                }
            }
        }
    }
}

/// Removes `x-` keys from every schema object below `v` (not from free-form
/// maps), recording each object's keys in `out` with its place, `path`.
fn strip_nested_extensions(
    v: &mut Value,
    parent_key: Option<&str>,
    path: &mut Vec<Step>,
    out: &mut Vec<NestedExtensions>,
) {
    match v {
        Value::Mapping(m) => {
            let free = parent_key.is_some_and(|k| FREE_FORM.contains(&k));
            if !free {
                let values = take_extensions(m);
                if !values.is_empty() {
                    out.push(NestedExtensions {
                        path: path.clone(),
                        values,
                    });
                }
            }
            for (k, child) in m.iter_mut() {
                let Some(key) = k.as_str().map(str::to_string) else {
                    continue;
                };
                // Entries of a name-keyed map are schema objects again.
                let child_parent = if free { None } else { Some(key.as_str()) };
                path.push(Step::Key(key.clone()));
                strip_nested_extensions(child, child_parent, path, out);
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Step::Index(i));
                strip_nested_extensions(item, None, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn to_yaml_path(p: &serde_path_to_error::Path, prefix: &YamlPath) -> YamlPath {
    let mut out = prefix.clone();
    for seg in p.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => out = out.index(*index),
            serde_path_to_error::Segment::Map { key } => out = out.key(key.clone()),
            serde_path_to_error::Segment::Enum { variant } => out = out.key(variant.clone()),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

fn decode_error_message(e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((field, _)) = rest.split_once('`') {
            return format!("additional property {field:?} is not allowed");
        }
    }
    msg
}

fn decode_one<T: serde::de::DeserializeOwned>(
    ctx: &mut Ctx<'_>,
    value: Value,
    at: &YamlPath,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut path = to_yaml_path(e.path(), at);
            let message = decode_error_message(e.inner());
            // An unknown field's path ends at the field itself; keep it.
            if message.starts_with("additional property") {
                if let Some(Segment::Key(_)) = path.0.last() {
                } else {
                    path = at.clone();
                }
            }
            ctx.diagnostics
                .push(super::Diagnostic::at(None, path, message));
            None
        }
    }
}

/// Decodes the merged tree into the typed model, one item at a time so that
/// every broken service or resource is reported.
pub(crate) fn decode(ctx: &mut Ctx<'_>, tree: Value) -> Option<Project> {
    let Value::Mapping(mut top) = tree else {
        return None;
    };
    let mut project = Project {
        extensions: take_extensions(&mut top),
        ..Project::default()
    };
    let root = YamlPath::root();
    for (key, value) in top {
        let Some(key) = key.as_str().map(str::to_string) else {
            ctx.diagnostics.push(super::Diagnostic::at(
                None,
                root.clone(),
                "top-level keys must be strings",
            ));
            continue;
        };
        let at = root.key(key.clone());
        let items = match value {
            Value::Mapping(m) => m,
            Value::Null => Mapping::new(),
            _ if ![
                "services", "networks", "volumes", "secrets", "configs", "models",
            ]
            .contains(&key.as_str()) =>
            {
                ctx.diagnostics.push(super::Diagnostic::at(
                    None,
                    at,
                    format!("additional property {key:?} is not allowed"),
                ));
                continue;
            }
            _ => {
                ctx.diagnostics
                    .push(super::Diagnostic::at(None, at, "must be a mapping"));
                continue;
            }
        };
        for (name, item) in items {
            let Some(name) = name.as_str().map(str::to_string) else {
                ctx.diagnostics.push(super::Diagnostic::at(
                    None,
                    at.clone(),
                    "names must be strings",
                ));
                continue;
            };
            let item_at = at.key(name.clone());
            let mut item = match item {
                Value::Null => Value::Mapping(Mapping::new()),
                other => other,
            };
            let mut extensions = BTreeMap::new();
            if let Value::Mapping(m) = &mut item {
                extensions = take_extensions(m);
            }
            let mut path = vec![Step::Key(key.clone()), Step::Key(name.clone())];
            if key != "services" && key != "models" && !extensions.is_empty() {
                project.nested_extensions.push(NestedExtensions {
                    path: path.clone(),
                    values: std::mem::take(&mut extensions),
                });
            }
            // Models are printed as written, less their `x-` keys.
            let mut dropped = Vec::new();
            let out = if key == "models" {
                &mut dropped
            } else {
                &mut project.nested_extensions
            };
            strip_nested_extensions(&mut item, None, &mut path, out);
            match key.as_str() {
                "services" => {
                    if !item.is_mapping() {
                        ctx.diagnostics.push(super::Diagnostic::at(
                            None,
                            item_at,
                            "must be a mapping",
                        ));
                        continue;
                    }
                    if let Some(mut s) = decode_one::<Service>(ctx, item, &item_at) {
                        s.extensions = extensions;
                        project.services.insert(name, s);
                    }
                }
                "networks" => {
                    if let Some(n) = decode_one(ctx, item, &item_at) {
                        project.networks.insert(name, n);
                    }
                }
                "volumes" => {
                    if let Some(v) = decode_one(ctx, item, &item_at) {
                        project.volumes.insert(name, v);
                    }
                }
                "secrets" => {
                    if let Some(v) = decode_one(ctx, item, &item_at) {
                        project.secrets.insert(name, v);
                    }
                }
                "configs" => {
                    if let Some(v) = decode_one(ctx, item, &item_at) {
                        project.configs.insert(name, v);
                    }
                }
                "models" => {
                    project.models.insert(name, item);
                }
                _ => unreachable_key(ctx, &at, &key),
            }
        }
    }
    ctx.diagnostics.is_empty().then_some(project)
}

fn unreachable_key(ctx: &mut Ctx<'_>, at: &YamlPath, key: &str) {
    ctx.diagnostics.push(super::Diagnostic::at(
        None,
        at.clone(),
        format!("additional property {key:?} is not allowed"),
    ));
}

/// Compose's default values for fields left out.
pub(crate) fn apply_defaults(project: &mut Project) {
    for service in project.services.values_mut() {
        for secret in &mut service.secrets {
            if secret.target.is_empty() {
                secret.target = format!("/run/secrets/{}", secret.source);
            }
        }
        for port in &mut service.ports {
            if port.protocol.is_empty() {
                port.protocol = "tcp".into();
            }
            if port.mode.is_empty() {
                port.mode = "ingress".into();
            }
        }
        if let Some(deploy) = &mut service.deploy {
            if let Some(r) = &mut deploy.resources.reservations {
                device_request_defaults(&mut r.devices);
            }
        }
        device_request_defaults(&mut service.gpus);
        if let Some(provider) = &mut service.provider {
            provider_options_as_lists(provider);
        }
    }
}

/// A provider's options are lists of strings to Compose (each is passed
/// as `--name value`, as many times as it has values): a single value is a
/// list of one, and numbers and booleans are their text.
fn provider_options_as_lists(provider: &mut Value) {
    let Some(Value::Mapping(options)) = provider.get_mut("options") else {
        return;
    };
    // As Go's fmt prints them: `1`, not `1.0`.
    let text = |v: &Value| match v {
        Value::Tagged(_) => None,
        v => crate::model::values::scalar_to_string(v),
    };
    for (_, value) in options.iter_mut() {
        // Anything else is left for validation to refuse.
        let items: Option<Vec<String>> = match &*value {
            Value::Sequence(items) => items.iter().map(text).collect(),
            other => text(other).map(|t| vec![t]),
        };
        if let Some(items) = items {
            *value = Value::Sequence(items.into_iter().map(Value::String).collect());
        }
    }
    // Printed in the order of their names, as Go prints a map.
    let mut sorted: Vec<(Value, Value)> = std::mem::take(options).into_iter().collect();
    sorted.sort_by(|a, b| a.0.as_str().cmp(&b.0.as_str()));
    options.extend(sorted);
}

/// Device requests without `count` or `device_ids` ask for all devices (-1).
fn device_request_defaults(devices: &mut [crate::model::DeviceRequest]) {
    for d in devices {
        if d.count.is_none() && d.device_ids.is_empty() {
            d.count = Some(-1);
        }
    }
}

fn implied_dependency(deps: &mut BTreeMap<String, Dependency>, name: &str, restart: bool) {
    deps.entry(name.to_string()).or_insert(Dependency {
        condition: "service_started".into(),
        restart,
        required: true,
    });
}

/// Compose's normalization: implied dependencies, cleaned mount targets,
/// the default network and resource names.
pub(crate) fn normalize(ctx: &mut Ctx<'_>, project: &mut Project) {
    let env = ctx.environment.clone();
    let mut uses_default_network = false;
    for service in project.services.values_mut() {
        if service.pull_policy == "if_not_present" {
            service.pull_policy = "missing".into();
        }
        if let Some(build) = &mut service.build {
            if build.context.is_empty() {
                build.context = ".".into();
            }
            let args = std::mem::take(&mut build.args.0);
            build.args = MappingWithEquals(
                args.into_iter()
                    .filter_map(|(k, v)| match v {
                        Some(v) => Some((k, Some(v))),
                        None => env.get(&k).map(|v| (k, Some(v.clone()))),
                    })
                    .collect(),
            );
        }
        for (k, v) in service.environment.0.iter_mut() {
            if v.is_none() {
                *v = env.get(k).cloned();
            }
        }
        for link in service.links.clone() {
            let name = link.split(':').next().unwrap_or_default();
            implied_dependency(&mut service.depends_on, name, true);
        }
        for ns in [
            &service.network_mode,
            &service.ipc,
            &service.pid,
            &service.uts,
            &service.cgroup,
        ] {
            if let Some(shared) = ns.strip_prefix("service:") {
                let shared = shared.to_string();
                implied_dependency(&mut service.depends_on, &shared, true);
            }
        }
        for vol in &mut service.volumes {
            vol.target = super::canonical::clean_path(&vol.target);
        }
        for from in service.volumes_from.clone() {
            if !from.starts_with("container:") {
                let name = from.split(':').next().unwrap_or_default();
                implied_dependency(&mut service.depends_on, name, false);
            }
        }
        if service.provider.is_none() && service.network_mode.is_empty() {
            if service.networks.is_empty() {
                service.networks.insert("default".into(), None);
            }
            if service.networks.contains_key("default") {
                uses_default_network = true;
            }
        }
    }
    if uses_default_network && !project.networks.contains_key("default") {
        project
            .networks
            .insert("default".into(), Network::default());
    }
    let name = project.name.clone();
    let resource_name = |key: &str, external: bool| {
        if external {
            key.to_string()
        } else {
            format!("{name}_{key}")
        }
    };
    for (key, n) in project.networks.iter_mut() {
        if n.name.is_empty() {
            n.name = resource_name(key, n.external);
        }
    }
    for (key, v) in project.volumes.iter_mut() {
        if v.name.is_empty() {
            v.name = resource_name(key, v.external);
        }
    }
    for (key, s) in project.secrets.iter_mut().chain(project.configs.iter_mut()) {
        if s.name.is_empty() {
            s.name = resource_name(key, s.external);
        }
    }
}

fn active_profiles(ctx: &Ctx<'_>) -> Vec<String> {
    if !ctx.options.profiles.is_empty() {
        return ctx.options.profiles.clone();
    }
    ctx.environment
        .get("COMPOSE_PROFILES")
        .map(|p| {
            p.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Enables exactly the services whose profiles are active (or that have
/// none); the others move to `disabled_services`.
fn enable_profiles(project: &mut Project, active: &[String]) {
    let all = active.iter().any(|p| p == "*");
    let enabled =
        |s: &Service| all || s.profiles.is_empty() || s.profiles.iter().any(|p| active.contains(p));
    let mut services = std::mem::take(&mut project.services);
    services.append(&mut project.disabled_services);
    for (name, s) in services {
        if enabled(&s) {
            project.services.insert(name, s);
        } else {
            project.disabled_services.insert(name, s);
        }
    }
}

/// Keeps the services enabled by the active profiles (`--profile`, else
/// `COMPOSE_PROFILES`); the others move to `disabled_services`.
pub(crate) fn apply_profiles(ctx: &mut Ctx<'_>, project: &mut Project) {
    let active = active_profiles(ctx);
    enable_profiles(project, &active);
}

/// Services named on the command line: their profiles are enabled too, then
/// only they and what they depend on are kept, and dependencies on services
/// left out are dropped.
pub(crate) fn select_services(ctx: &mut Ctx<'_>, project: &mut Project) {
    let names = &ctx.options.services;
    if names.is_empty() {
        return;
    }
    let mut active = active_profiles(ctx);
    for name in names {
        match (
            project.services.get(name),
            project.disabled_services.get(name),
        ) {
            (Some(_), _) => {}
            (None, Some(s)) => active.extend(s.profiles.iter().cloned()),
            (None, None) => ctx.error(None, format!("no such service: {name}")),
        }
    }
    enable_profiles(project, &active);
    let mut selected = BTreeSet::new();
    let mut queue: Vec<String> = names.clone();
    while let Some(name) = queue.pop() {
        let Some(s) = project.services.get(&name) else {
            continue;
        };
        if selected.insert(name) {
            queue.extend(s.depends_on.keys().cloned());
        }
    }
    let services = std::mem::take(&mut project.services);
    for (name, mut s) in services {
        if selected.contains(&name) {
            s.depends_on.retain(|d, _| selected.contains(d));
            project.services.insert(name, s);
        } else {
            project.disabled_services.insert(name, s);
        }
    }
}

/// Folds `env_file` into `environment` (environment wins; variables in the
/// files are looked up in the project environment first, then in the
/// service's environment) and `label_file` into `labels` (labels win).
pub(crate) fn resolve_environment(ctx: &mut Ctx<'_>, project: &mut Project) {
    let env = ctx.environment.clone();
    let mut unset = Vec::new();
    for (name, service) in project.services.iter_mut() {
        let at = YamlPath::root().key("services").key(name.clone());
        if !service.env_file.is_empty() {
            let declared = service.environment.0.clone();
            let mut merged: indexmap::IndexMap<String, String> = declared
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                .collect();
            let lookup = |k: &str| {
                env.get(k)
                    .cloned()
                    .or_else(|| declared.get(k).cloned().flatten())
            };
            for (i, f) in std::mem::take(&mut service.env_file)
                .into_iter()
                .enumerate()
            {
                let text = match std::fs::read_to_string(&f.path) {
                    Ok(t) => t,
                    Err(_) if !f.required => continue,
                    Err(e) => {
                        ctx.diagnostics.push(super::Diagnostic::at(
                            None,
                            at.key("env_file").index(i),
                            format!("env file {} not found: {e}", f.path),
                        ));
                        continue;
                    }
                };
                let parsed = if f.format == "raw" {
                    dotenv::parse_raw_with_lookup(&text, &lookup).map(|vars| merged.extend(vars))
                } else {
                    dotenv::parse_into(&text, &lookup, &mut merged, &mut |v: &str| {
                        unset.push(v.to_string())
                    })
                };
                if let Err(e) = parsed {
                    ctx.diagnostics.push(super::Diagnostic::file(
                        Some(f.path.clone().into()),
                        e.to_string(),
                    ));
                }
            }
            let mut out: BTreeMap<String, Option<String>> =
                merged.into_iter().map(|(k, v)| (k, Some(v))).collect();
            out.extend(declared);
            service.environment = MappingWithEquals(out);
        }
        if !service.label_file.is_empty() {
            let mut labels: indexmap::IndexMap<String, String> = indexmap::IndexMap::new();
            for (i, f) in std::mem::take(&mut service.label_file.0)
                .into_iter()
                .enumerate()
            {
                let text = match std::fs::read_to_string(&f) {
                    Ok(t) => t,
                    Err(e) => {
                        ctx.diagnostics.push(super::Diagnostic::at(
                            None,
                            at.key("label_file").index(i),
                            format!("label file {f} not found: {e}"),
                        ));
                        continue;
                    }
                };
                let known = labels.clone();
                if let Err(e) =
                    dotenv::parse_into(&text, &|k| known.get(k).cloned(), &mut labels, &mut |_| {})
                {
                    ctx.diagnostics.push(super::Diagnostic::file(
                        Some(f.clone().into()),
                        e.to_string(),
                    ));
                }
            }
            for (k, v) in labels {
                service.labels.0.entry(k).or_insert(v);
            }
        }
    }
    for name in unset {
        ctx.warn(format!(
            "The \"{name}\" variable is not set. Defaulting to a blank string."
        ));
    }
}

/// Drops networks, volumes, secrets and configs that no enabled service uses.
pub(crate) fn drop_unused_resources(project: &mut Project) {
    let mut networks = BTreeSet::new();
    let mut volumes = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let mut configs = BTreeSet::new();
    let mut models = BTreeSet::new();
    for s in project.services.values() {
        if let Some(Value::Mapping(m)) = &s.models {
            models.extend(m.keys().filter_map(|k| k.as_str().map(str::to_string)));
        }
        networks.extend(s.networks.keys().cloned());
        for v in &s.volumes {
            if v.kind == "volume" && !v.source.is_empty() {
                volumes.insert(v.source.clone());
            }
        }
        secrets.extend(s.secrets.iter().map(|r| r.source.clone()));
        if let Some(b) = &s.build {
            secrets.extend(b.secrets.iter().map(|r| r.source.clone()));
        }
        configs.extend(s.configs.iter().map(|r| r.source.clone()));
    }
    project.networks.retain(|k, _| networks.contains(k));
    project.volumes.retain(|k, _| volumes.contains(k));
    project.secrets.retain(|k, _| secrets.contains(k));
    project.configs.retain(|k, _| configs.contains(k));
    project.models.retain(|k, _| models.contains(k));
}

fn dependency_entry(restart: bool) -> Value {
    let mut m = Mapping::new();
    m.insert("condition".into(), "service_started".into());
    m.insert("restart".into(), Value::Bool(restart));
    m.insert("required".into(), Value::Bool(true));
    Value::Mapping(m)
}

/// Compose's defaults and normalization applied to the plain tree, for
/// `config --no-interpolate`, which prints the model before it is typed.
/// `Dockerfile` for a build that names no Dockerfile. Compose decides this on
/// the tree, before the values are read: a `dockerfile` given as an empty
/// string (an unset variable) stays empty, is printed as absent, and the
/// builder reads `Dockerfile` anyway.
pub(crate) fn default_dockerfiles(tree: &mut Value) {
    let Some(Value::Mapping(services)) = tree.get_mut("services") else {
        return;
    };
    for (_, svc) in services.iter_mut() {
        if let Some(Value::Mapping(build)) = svc.get_mut("build") {
            if !build.contains_key("dockerfile") && !build.contains_key("dockerfile_inline") {
                build.insert("dockerfile".into(), "Dockerfile".into());
            }
        }
    }
}

/// The networks, volumes, secrets and configs whose `name` is an empty
/// string: Compose gives a name only to those that have none written.
pub(crate) fn written_empty_names(tree: &Value) -> std::collections::BTreeSet<(String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for kind in ["networks", "volumes", "secrets", "configs"] {
        let Some(Value::Mapping(items)) = tree.get(kind) else {
            continue;
        };
        for (key, item) in items {
            if item.get("name").and_then(Value::as_str) == Some("") {
                if let Some(key) = key.as_str() {
                    out.insert((kind.to_string(), key.to_string()));
                }
            }
        }
    }
    out
}

pub(crate) fn normalize_tree(ctx: &Ctx<'_>, tree: &mut Value, project: &str) {
    default_dockerfiles(tree);
    let env = &ctx.environment;
    let Value::Mapping(top) = tree else { return };
    let mut uses_default = false;
    if let Some(Value::Mapping(services)) = top.get_mut("services") {
        for (_, svc) in services.iter_mut() {
            let Value::Mapping(svc) = svc else { continue };
            if svc.get("pull_policy").and_then(Value::as_str) == Some("if_not_present") {
                svc.insert("pull_policy".into(), "missing".into());
            }
            if let Some(Value::Sequence(ports)) = svc.get_mut("ports") {
                for p in ports.iter_mut().filter_map(Value::as_mapping_mut) {
                    if !p.contains_key("protocol") {
                        p.insert("protocol".into(), "tcp".into());
                    }
                    if !p.contains_key("mode") {
                        p.insert("mode".into(), "ingress".into());
                    }
                }
            }
            if let Some(Value::Sequence(secrets)) = svc.get_mut("secrets") {
                for r in secrets.iter_mut().filter_map(Value::as_mapping_mut) {
                    if !r.contains_key("target") {
                        let src = r.get("source").and_then(Value::as_str).unwrap_or_default();
                        let target = format!("/run/secrets/{src}");
                        r.insert("target".into(), target.into());
                    }
                }
            }
            if let Some(Value::Sequence(items)) = svc.get_mut("environment") {
                for item in items.iter_mut() {
                    if let Value::String(e) = item {
                        if !e.contains('=') {
                            if let Some(v) = env.get(e.as_str()) {
                                *e = format!("{e}={v}");
                            }
                        }
                    }
                }
            }
            let mut deps = match svc.remove("depends_on") {
                Some(Value::Mapping(m)) => m,
                _ => Mapping::new(),
            };
            for (_, d) in deps.iter_mut() {
                if let Value::Mapping(d) = d {
                    if !d.contains_key("condition") {
                        d.insert("condition".into(), "service_started".into());
                    }
                    if !d.contains_key("required") {
                        d.insert("required".into(), Value::Bool(true));
                    }
                }
            }
            if let Some(Value::Sequence(links)) = svc.get("links") {
                for l in links.iter().filter_map(Value::as_str) {
                    let name = l.split(':').next().unwrap_or_default();
                    if !deps.contains_key(name) {
                        deps.insert(name.into(), dependency_entry(true));
                    }
                }
            }
            for ns in ["network_mode", "ipc", "pid", "uts", "cgroup"] {
                if let Some(shared) = svc
                    .get(ns)
                    .and_then(Value::as_str)
                    .and_then(|v| v.strip_prefix("service:"))
                {
                    if !deps.contains_key(shared) {
                        deps.insert(shared.into(), dependency_entry(true));
                    }
                }
            }
            if let Some(Value::Sequence(from)) = svc.get("volumes_from") {
                for f in from.iter().filter_map(Value::as_str) {
                    if !f.starts_with("container:") {
                        let name = f.split(':').next().unwrap_or_default();
                        if !deps.contains_key(name) {
                            deps.insert(name.into(), dependency_entry(false));
                        }
                    }
                }
            }
            if !deps.is_empty() {
                svc.insert("depends_on".into(), Value::Mapping(deps));
            }
            if let Some(Value::Sequence(vols)) = svc.get_mut("volumes") {
                for v in vols.iter_mut().filter_map(Value::as_mapping_mut) {
                    if let Some(Value::String(t)) = v.get_mut("target") {
                        *t = super::canonical::clean_path(t);
                    }
                }
            }
            if svc.contains_key("provider") || svc.contains_key("network_mode") {
                continue;
            }
            let empty = match svc.get("networks") {
                None | Some(Value::Null) => true,
                Some(Value::Mapping(m)) => m.is_empty(),
                _ => false,
            };
            if empty {
                let mut m = Mapping::new();
                m.insert("default".into(), Value::Null);
                svc.insert("networks".into(), Value::Mapping(m));
                uses_default = true;
            } else if svc
                .get("networks")
                .and_then(Value::as_mapping)
                .is_some_and(|m| m.contains_key("default"))
            {
                uses_default = true;
            }
        }
    }
    if uses_default {
        let networks = top
            .entry("networks".into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if let Value::Mapping(n) = networks {
            if !n.contains_key("default") {
                n.insert("default".into(), Value::Null);
            }
        }
    }
    for kind in ["networks", "volumes", "configs", "secrets"] {
        let Some(Value::Mapping(items)) = top.get_mut(kind) else {
            continue;
        };
        for (key, item) in items.iter_mut() {
            if item.is_null() {
                *item = Value::Mapping(Mapping::new());
            }
            let Value::Mapping(m) = item else { continue };
            if m.get("name").is_none_or(Value::is_null) {
                let key = key.as_str().unwrap_or_default();
                let external = m.get("external").is_some_and(|e| e.as_bool() == Some(true));
                let name = if external {
                    key.to_string()
                } else {
                    format!("{project}_{key}")
                };
                m.insert("name".into(), name.into());
            }
        }
    }
}
