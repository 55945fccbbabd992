//! Rendering a project the way `docker compose config` prints it.

mod yaml;

use serde_json::{Map, Value as Json};

use crate::model::{Project, Service};

/// Errors while rendering.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The model could not be turned into JSON.
    #[error("rendering json: {0}")]
    Json(#[from] serde_json::Error),
}

/// The project as a JSON tree with top-level extensions inlined and, when
/// `with_service_extensions`, the services' `x-` keys too (Compose prints
/// those in YAML only).
fn tree(project: &Project, with_service_extensions: bool) -> Result<Json, RenderError> {
    let mut v = serde_json::to_value(project)?;
    if let Json::Object(top) = &mut v {
        for (k, ext) in &project.extensions {
            top.insert(k.clone(), serde_json::to_value(ext)?);
        }
        if with_service_extensions {
            if let Some(Json::Object(services)) = top.get_mut("services") {
                for (name, s) in &project.services {
                    if let Some(Json::Object(svc)) = services.get_mut(name) {
                        for (k, ext) in &s.extensions {
                            svc.insert(k.clone(), serde_json::to_value(ext)?);
                        }
                    }
                }
            }
        }
        sort_object(top);
    }
    Ok(v)
}

/// Compose prints the top-level keys of its JSON in sorted order.
fn sort_object(m: &mut Map<String, Json>) {
    let mut entries: Vec<(String, Json)> = std::mem::take(m).into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    m.extend(entries);
}

/// How to render a project.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// Write every literal `$` as `$$`, so that the output reads back as the
    /// same project (Compose does this unless interpolation was skipped).
    pub escape_dollars: bool,
}

/// Doubles every `$` of every key and string of a tree.
fn escape_dollars(v: &mut Json) {
    match v {
        Json::String(s) if s.contains('$') => *s = s.replace('$', "$$"),
        Json::Array(items) => items.iter_mut().for_each(escape_dollars),
        Json::Object(m) if m.keys().any(|k| k.contains('$')) => {
            let entries: Vec<(String, Json)> = std::mem::take(m).into_iter().collect();
            for (k, mut child) in entries {
                escape_dollars(&mut child);
                m.insert(k.replace('$', "$$"), child);
            }
        }
        Json::Object(m) => m.values_mut().for_each(escape_dollars),
        _ => {}
    }
}

/// Go writes every float without a fraction as an integer (`1`, not `1.0`).
fn integral_floats(v: &mut Json) {
    match v {
        Json::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    *v = Json::from(f as i64);
                }
            }
        }
        Json::Array(items) => items.iter_mut().for_each(integral_floats),
        Json::Object(m) => m.values_mut().for_each(integral_floats),
        _ => {}
    }
}

/// `config --format json`, escaped as Go escapes JSON.
pub fn to_json(project: &Project, options: RenderOptions) -> Result<String, RenderError> {
    let mut v = tree(project, false)?;
    if options.escape_dollars {
        escape_dollars(&mut v);
    }
    integral_floats(&mut v);
    Ok(go_json_escape(&serde_json::to_string_pretty(&v)?))
}

/// `config --format yaml`: name first, then services, networks, volumes,
/// secrets, configs and extensions.
pub fn to_yaml(project: &Project, options: RenderOptions) -> Result<String, RenderError> {
    let mut v = tree(project, true)?;
    if options.escape_dollars {
        escape_dollars(&mut v);
    }
    let Json::Object(mut top) = v else {
        return Ok(String::new());
    };
    let mut ordered = Map::new();
    for key in [
        "name", "services", "networks", "volumes", "secrets", "configs", "models",
    ] {
        if let Some(v) = top.remove(key) {
            ordered.insert(key.to_string(), v);
        }
    }
    ordered.extend(top);
    // YAML leaves out what JSON prints as null or as an empty object: a
    // command or entrypoint left to the image, empty placement and ipam.
    if let Some(Json::Object(services)) = ordered.get_mut("services") {
        for svc in services.values_mut() {
            if let Json::Object(svc) = svc {
                svc.retain(|k, v| !(matches!(k.as_str(), "command" | "entrypoint") && v.is_null()));
                if let Some(Json::Object(deploy)) = svc.get_mut("deploy") {
                    deploy.retain(|k, v| !(k == "placement" && is_empty_object(v)));
                }
            }
        }
    }
    if let Some(Json::Object(networks)) = ordered.get_mut("networks") {
        for net in networks.values_mut() {
            if let Json::Object(net) = net {
                net.retain(|k, v| !(k == "ipam" && is_empty_object(v)));
            }
        }
    }
    Ok(yaml::to_string(&Json::Object(ordered)))
}

/// A plain model tree (`config --no-interpolate`) as YAML, name first.
pub fn model_to_yaml(model: &Json) -> String {
    let Json::Object(top) = model else {
        return yaml::to_string(model);
    };
    let mut ordered = Map::new();
    if let Some(name) = top.get("name") {
        ordered.insert("name".into(), name.clone());
    }
    for (k, v) in top {
        if k != "name" {
            ordered.insert(k.clone(), v.clone());
        }
    }
    yaml::to_string(&Json::Object(ordered))
}

fn is_empty_object(v: &Json) -> bool {
    matches!(v, Json::Object(m) if m.is_empty())
}

/// The image a service runs: its `image`, or `<project>-<service>` when it is built.
pub fn image_name(project: &Project, name: &str, service: &Service) -> String {
    if service.image.is_empty() {
        format!("{}-{}", project.name, name)
    } else {
        service.image.clone()
    }
}

/// A digest of a service's configuration, computed as Docker Compose computes
/// its `com.docker.compose.config-hash` label (so that either tool sees the
/// other's containers as up to date): SHA-256 of the service's JSON without
/// the fields that do not change its containers, with Go's HTML escaping.
pub fn config_hash(service: &Service) -> String {
    use sha2::{Digest, Sha256};
    let mut s = service.clone();
    s.build = None;
    s.pull_policy.clear();
    s.scale = None;
    if let Some(d) = &mut s.deploy {
        d.replicas = None;
    }
    s.depends_on.clear();
    s.profiles.clear();
    let json = serde_json::to_string(&s).unwrap_or_default();
    let json = go_json_escape(&json);
    let digest = Sha256::digest(json.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Go's `encoding/json` writes `<`, `>`, `&`, U+2028 and U+2029 as escapes;
/// they can only occur inside strings, so replacing them is safe.
fn go_json_escape(json: &str) -> String {
    if !json.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return json.to_string();
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}
