//! `extends`: a service built on another one, from the same file or another.

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::path::YamlPath;
use super::{merge, normalize, parse, Ctx};

/// One link of an extends chain, to detect cycles.
#[derive(Clone, PartialEq)]
struct Link {
    file: PathBuf,
    service: String,
}

/// Resolves `extends` for every service of a (canonical) file tree.
pub(crate) fn apply_extends(ctx: &mut Ctx<'_>, file: &Path, tree: &mut Value) {
    let Some(Value::Mapping(services)) = tree.get_mut("services") else {
        return;
    };
    let names: Vec<String> = services
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    for name in names {
        let mut chain = Vec::new();
        if let Some(resolved) = resolve_service(ctx, file, services, &name, &mut chain) {
            services.insert(Value::String(name), resolved);
        }
    }
}

/// The service `name` of `services` (from `file`) with its extends chain merged in.
fn resolve_service(
    ctx: &mut Ctx<'_>,
    file: &Path,
    services: &Mapping,
    name: &str,
    chain: &mut Vec<Link>,
) -> Option<Value> {
    let service = services.get(name)?.clone();
    let Some(extends) = service.get("extends").cloned() else {
        return Some(service);
    };
    let at = YamlPath::root().key("services").key(name).key("extends");
    let link = Link {
        file: file.to_path_buf(),
        service: name.to_string(),
    };
    if chain.contains(&link) {
        let names: Vec<String> = chain.iter().map(|l| l.service.clone()).collect();
        ctx.error_at(
            file,
            at,
            format!(
                "circular reference with extends: {} -> {name}",
                names.join(" -> ")
            ),
        );
        return None;
    }
    chain.push(link);
    let base_name = match extends.get("service").and_then(Value::as_str) {
        Some(s) => s.to_string(),
        None => {
            ctx.error_at(file, at, "extends.service is required");
            return None;
        }
    };
    let base = match extends.get("file").and_then(Value::as_str) {
        None => {
            if !services.contains_key(base_name.as_str()) {
                ctx.error_at(
                    file,
                    at,
                    format!("cannot extend service {name:?}: service {base_name:?} not found"),
                );
                return None;
            }
            resolve_service(ctx, file, services, &base_name, chain)?
        }
        Some(other) => {
            let dir = file.parent().unwrap_or(Path::new("/"));
            let other_path = if Path::new(other).is_absolute() {
                PathBuf::from(other)
            } else {
                dir.join(other)
            };
            let other_path =
                PathBuf::from(super::canonical::clean_path(&other_path.to_string_lossy()));
            let text = match std::fs::read_to_string(&other_path) {
                Ok(t) => t,
                Err(e) => {
                    ctx.error_at(
                        file,
                        at,
                        format!("cannot read {}: {e}", other_path.display()),
                    );
                    return None;
                }
            };
            // Only the first document of an extended file is read.
            let mut tree = parse(ctx, &other_path, &text)?.into_iter().next()?;
            ctx.sources.push(super::SourceFile {
                path: other_path.clone(),
                text,
            });
            super::interpolate_tree(ctx, &other_path, &mut tree);
            let mut errors = Vec::new();
            super::canonical::canonicalize(&mut tree, &mut errors);
            for e in errors {
                ctx.error_at(&other_path, e.path, e.message);
            }
            let Some(Value::Mapping(other_services)) = tree.get("services").cloned() else {
                ctx.error_at(
                    file,
                    at,
                    format!(
                        "cannot extend service {name:?}: no services section in {}",
                        other_path.display()
                    ),
                );
                return None;
            };
            if !other_services.contains_key(base_name.as_str()) {
                ctx.error_at(
                    file,
                    at,
                    format!(
                        "cannot extend service {name:?}: service {base_name:?} not found in {}",
                        other_path.display()
                    ),
                );
                return None;
            }
            let base = resolve_service(ctx, &other_path, &other_services, &base_name, chain)?;
            // Paths in the base are relative to its own file.
            let mut wrapper = Mapping::new();
            let mut svcs = Mapping::new();
            svcs.insert(Value::String(base_name.clone()), base);
            wrapper.insert(Value::String("services".into()), Value::Mapping(svcs));
            let mut wrapper = Value::Mapping(wrapper);
            let other_dir = other_path.parent().unwrap_or(Path::new("/")).to_path_buf();
            normalize::resolve_relative_paths(&mut wrapper, &other_dir, ctx.home.as_deref());
            wrapper
                .get("services")
                .and_then(|s| s.get(base_name.as_str()))
                .cloned()?
        }
    };
    chain.pop();
    let mut merged = match merge::try_merge_service(name, base, service) {
        Ok(m) => m,
        Err(e) => {
            ctx.error_at(file, at, e.to_string());
            return None;
        }
    };
    if let Value::Mapping(m) = &mut merged {
        m.remove("extends");
    }
    Some(merged)
}
