//! Rendering a project the way `docker compose config` prints it.

mod yaml;

use std::collections::BTreeMap;
use std::io;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::ser::{Formatter, PrettyFormatter};
use serde_json::{Map, Value as Json};

use crate::model::{Project, Service};

/// Errors while rendering.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The model could not be turned into JSON.
    #[error("rendering json: {0}")]
    Json(#[from] serde_json::Error),
    /// A value that JSON cannot hold (an infinite number in an extension),
    /// refused in the reference's words.
    #[error("json: unsupported value: {0}")]
    Unsupported(String),
}

/// The project as a JSON tree for the YAML writer, with every `x-` key
/// inlined where it was written: the top level's, the services', and those of
/// nested objects (Compose prints the last two in YAML only).
fn yaml_tree(project: &Project) -> Result<Json, RenderError> {
    let mut v = serde_json::to_value(project)?;
    if let Json::Object(top) = &mut v {
        for (k, ext) in &project.extensions {
            top.insert(k.clone(), serde_json::to_value(SortedKeys(ext))?);
        }
        for nested in &project.nested_extensions {
            insert_extensions(top, nested)?;
        }
        if let Some(Json::Object(services)) = top.get_mut("services") {
            for (name, s) in &project.services {
                if let Some(Json::Object(svc)) = services.get_mut(name) {
                    for (k, ext) in &s.extensions {
                        svc.insert(k.clone(), serde_json::to_value(SortedKeys(ext))?);
                    }
                }
            }
        }
        for (kind, key) in &project.unnamed {
            if let Some(Json::Object(item)) = top.get_mut(kind).and_then(|k| k.get_mut(key)) {
                item.remove("name");
            }
        }
        sort_object(top);
    }
    Ok(v)
}

/// Puts the `x-` keys of an object back where they were written, after the
/// object's other keys (as Go's YAML writes an inline map). An object that is
/// not in the tree (a disabled service's) is skipped.
fn insert_extensions(
    top: &mut Map<String, Json>,
    nested: &crate::model::NestedExtensions,
) -> Result<(), RenderError> {
    use crate::model::Step;
    let Some((Step::Key(first), rest)) = nested.path.split_first() else {
        return Ok(());
    };
    let mut node = match top.get_mut(first) {
        Some(n) => n,
        None => return Ok(()),
    };
    for step in rest {
        let next = match (step, node) {
            (Step::Key(k), Json::Object(m)) => m.get_mut(k),
            (Step::Index(i), Json::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        node = match next {
            Some(n) => n,
            None => return Ok(()),
        };
    }
    if let Json::Object(m) = node {
        for (k, v) in &nested.values {
            m.insert(k.clone(), serde_json::to_value(SortedKeys(v))?);
        }
    }
    Ok(())
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

/// `config --format json`, written as Go's `encoding/json` writes it.
///
/// The project is serialized straight into the text, with no JSON tree in
/// between: on a large project that tree was most of the memory `config` used.
pub fn to_json(project: &Project, options: RenderOptions) -> Result<String, RenderError> {
    // serde_json would write `null`; Go's encoder refuses.
    for (key, value) in &project.extensions {
        if let Some(n) = non_finite(value) {
            return Err(RenderError::Unsupported(format!("{n} (in {key})")));
        }
    }
    let mut out = Vec::with_capacity(64 * 1024);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter::new(options));
    TopLevel(project).serialize(&mut ser)?;
    // The formatter writes only what serde_json hands it and ASCII escapes.
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// The first number that JSON cannot hold in `v`, as Go names it (`+Inf`).
fn non_finite(v: &serde_yaml::Value) -> Option<String> {
    use serde_yaml::Value;
    match v {
        Value::Number(n) => n.as_f64().filter(|f| !f.is_finite()).map(|f| {
            if f.is_nan() {
                "NaN".to_string()
            } else if f > 0.0 {
                "+Inf".to_string()
            } else {
                "-Inf".to_string()
            }
        }),
        Value::Sequence(items) => items.iter().find_map(non_finite),
        Value::Mapping(m) => m.values().find_map(non_finite),
        Value::Tagged(t) => non_finite(&t.value),
        _ => None,
    }
}

/// A project's networks, volumes, secrets or configs (`kind`), those whose
/// name was written empty printed without one.
struct Named<'a, T>(&'a BTreeMap<String, T>, &'a str, &'a Project);

impl<T: Serialize> Serialize for Named<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Named(items, kind, project) = self;
        let mut m = s.serialize_map(Some(items.len()))?;
        for (key, item) in *items {
            if project.unnamed.contains(&(kind.to_string(), key.clone())) {
                let mut v = serde_json::to_value(item).map_err(serde::ser::Error::custom)?;
                if let Json::Object(fields) = &mut v {
                    fields.remove("name");
                }
                m.serialize_entry(key, &v)?;
            } else {
                m.serialize_entry(key, item)?;
            }
        }
        m.end()
    }
}

/// The top level as Compose prints it in JSON: its keys sorted, extensions
/// inline (their keys all start with `x-`, after every other key).
struct TopLevel<'a>(&'a Project);

impl Serialize for TopLevel<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut m = s.serialize_map(None)?;
        if !p.configs.is_empty() {
            m.serialize_entry("configs", &Named(&p.configs, "configs", p))?;
        }
        if !p.name.is_empty() {
            m.serialize_entry("name", &p.name)?;
        }
        if !p.networks.is_empty() {
            m.serialize_entry("networks", &Named(&p.networks, "networks", p))?;
        }
        if !p.secrets.is_empty() {
            m.serialize_entry("secrets", &Named(&p.secrets, "secrets", p))?;
        }
        m.serialize_entry("services", &p.services)?;
        if !p.volumes.is_empty() {
            m.serialize_entry("volumes", &Named(&p.volumes, "volumes", p))?;
        }
        for (k, v) in &p.extensions {
            m.serialize_entry(k, &SortedKeys(v))?;
        }
        m.end()
    }
}

/// A value kept as written, with the keys of its mappings sorted at every
/// depth: Compose holds it as Go maps, whose keys `encoding/json` sorts.
struct SortedKeys<'a>(&'a serde_yaml::Value);

impl Serialize for SortedKeys<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self.0 {
            serde_yaml::Value::Mapping(map) => {
                let mut entries: Vec<(Option<String>, &serde_yaml::Value, &serde_yaml::Value)> =
                    map.iter()
                        .map(|(k, v)| (crate::model::values::scalar_to_string(k), k, v))
                        .collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                let mut m = s.serialize_map(Some(entries.len()))?;
                for (_, k, v) in entries {
                    m.serialize_entry(k, &SortedKeys(v))?;
                }
                m.end()
            }
            serde_yaml::Value::Sequence(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&SortedKeys(item))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// A finite float as Go's `encoding/json` writes it: the shortest digits
/// that read back as the same number, in plain decimal (`1`, `-0`, `0.5`,
/// `100000000000000000000`), or with an exponent below 1e-6 and from 1e21 on
/// (`1e-7`, `1e+21`).
fn go_json_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

/// serde_json's pretty layout with Go's spellings: `<`, `>`, `&`, U+2028 and
/// U+2029 escaped, floats as Go writes them, and (when asked) every `$` of a
/// key or string doubled.
struct GoFormatter {
    pretty: PrettyFormatter<'static>,
    escape_dollars: bool,
}

impl GoFormatter {
    fn new(options: RenderOptions) -> Self {
        GoFormatter {
            pretty: PrettyFormatter::new(),
            escape_dollars: options.escape_dollars,
        }
    }
}

impl Formatter for GoFormatter {
    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(w, f64::from(value))
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(go_json_float(value).as_bytes())
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut rest = fragment;
        while let Some(i) = rest.find(['<', '>', '&', '$', '\u{2028}', '\u{2029}']) {
            w.write_all(&rest.as_bytes()[..i])?;
            let c = rest[i..].chars().next().unwrap_or('$');
            w.write_all(match c {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ if self.escape_dollars => b"$$",
                _ => b"$",
            })?;
            rest = &rest[i + c.len_utf8()..];
        }
        w.write_all(rest.as_bytes())
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_array(w)
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_array(w)
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_array_value(w, first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_array_value(w)
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_object(w)
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_object(w)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.pretty.begin_object_key(w, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_object_value(w)
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_object_value(w)
    }
}

/// `config --format yaml`: name first, then services, networks, volumes,
/// secrets, configs and extensions.
pub fn to_yaml(project: &Project, options: RenderOptions) -> Result<String, RenderError> {
    let mut v = yaml_tree(project)?;
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
        if let Some(v) = top.shift_remove(key) {
            ordered.insert(key.to_string(), v);
        }
    }
    ordered.extend(top);
    // YAML leaves out what JSON prints as null or as an empty object: a
    // command or entrypoint left to the image, empty placement and ipam.
    if let Some(Json::Object(services)) = ordered.get_mut("services") {
        for svc in services.values_mut() {
            if let Json::Object(svc) = svc {
                yaml_field_names(svc);
                svc.retain(|k, v| !(matches!(k.as_str(), "command" | "entrypoint") && v.is_null()));
                if let Some(Json::Object(deploy)) = svc.get_mut("deploy") {
                    deploy.retain(|k, v| {
                        !(matches!(k.as_str(), "placement" | "resources") && is_empty_object(v))
                    });
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

/// Where Compose's YAML and JSON spell a service's fields differently: Go's
/// YAML writer lowercases the untagged fields of the block IO devices
/// (`path`, `rate`, `weight`; JSON has `Path`, `Rate`, `Weight`), and leaves
/// out a watch rule's `exec` when it has no command.
fn yaml_field_names(svc: &mut Map<String, Json>) {
    if let Some(Json::Object(blkio)) = svc.get_mut("blkio_config") {
        for (key, devices) in blkio.iter_mut() {
            let (true, Json::Array(devices)) = (key != "weight", devices) else {
                continue;
            };
            for device in devices {
                if let Json::Object(d) = device {
                    let fields: Vec<(String, Json)> = std::mem::take(d).into_iter().collect();
                    d.extend(fields.into_iter().map(|(k, v)| (k.to_lowercase(), v)));
                }
            }
        }
    }
    if let Some(Json::Object(develop)) = svc.get_mut("develop") {
        if let Some(Json::Array(rules)) = develop.get_mut("watch") {
            for rule in rules {
                if let Json::Object(rule) = rule {
                    rule.retain(|k, v| {
                        !(k == "exec"
                            && matches!(v, Json::Object(e) if e.values().all(Json::is_null)))
                    });
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::go_json_float;

    #[test]
    fn floats_are_written_as_go_writes_them() {
        for (f, want) in [
            (1.0, "1"),
            (-0.0, "-0"),
            (0.5, "0.5"),
            (1.234567891, "1.234567891"),
            (1e20, "100000000000000000000"),
            (-9.223372036854776e18, "-9223372036854776000"),
            (1e21, "1e+21"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (1e-10, "1e-10"),
        ] {
            assert_eq!(go_json_float(f), want, "{f}");
        }
    }
}
