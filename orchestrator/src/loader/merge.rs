//! Docker Compose's rules for merging compose files and for `extends`.
//!
//! Compose merges the files of a project one after the other
//! (`-f a.yaml -f b.yaml`, `compose.override.yaml`): each later file is laid
//! over the result of the files before it. A service using `extends` is laid
//! over the service it extends in the same way. These functions implement
//! those rules on generic [`Value`] trees, as compose-go v2.9.1 (Docker Compose
//! v2.40.3) does:
//!
//! * mappings are merged key by key, recursively; a key only the later file
//!   has is taken as it is, without any special rule;
//! * sequences are appended, and [`enforce_unicity`] then drops the entries
//!   that a later entry redefines (ports, volumes and secrets by target, ...);
//! * scalars are replaced; a `null` in the later file keeps the earlier value;
//! * some paths have their own rule (see [`merge_project`]).
//!
//! Values tagged `!reset` remove the key from the result, values tagged
//! `!override` replace the earlier value wholesale; no tag survives a merge.

use std::collections::HashMap;

use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};
use thiserror::Error;

use super::path::{Segment, YamlPath};

/// An input compose (Docker Compose v2.40.3) refuses while merging.
///
/// The infallible functions ([`merge_project`], [`merge_service`],
/// [`enforce_unicity`]) never report these: they let the later value win, or
/// keep an entry they cannot index. The `try_` functions report the first one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MergeError {
    /// A later file gives a value of a kind that cannot be merged onto the
    /// earlier one (a mapping or a sequence replaced by something else).
    #[error("cannot override {}", describe(.0))]
    CannotOverride(YamlPath),
    /// A value of a kind compose does not handle at that place.
    #[error("{}: unexpected type {found}", describe(.path))]
    UnexpectedType {
        /// Where the value is.
        path: YamlPath,
        /// The kind of value found there.
        found: &'static str,
    },
    /// A value compose cannot index (an `expose` entry, a secret or config reference).
    #[error("{}: unsupported value {value}", describe(.path))]
    UnsupportedValue {
        /// Where the value is.
        path: YamlPath,
        /// The value, as Go prints it.
        value: String,
    },
    /// A service volume without a string `target`.
    #[error("service volume {} is missing a mount target", describe(.0))]
    MissingVolumeTarget(YamlPath),
    /// A service device without a string `target`.
    #[error("service device {} is missing a mount target", describe(.0))]
    MissingDeviceTarget(YamlPath),
    /// A service port without a `target`.
    #[error("service ports {} is missing a target port", describe(.0))]
    MissingPortTarget(YamlPath),
    /// An `env_file` entry without a string `path`.
    #[error("environment path attribute {} is missing", describe(.0))]
    MissingEnvFilePath(YamlPath),
    /// A short-syntax volume that does not parse.
    #[error("invalid spec: {spec}: {reason}")]
    InvalidVolumeSpec {
        /// The volume as written.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn describe(path: &YamlPath) -> String {
    if path.is_root() {
        "the top level".to_string()
    } else {
        path.to_string()
    }
}

/// Merges `overlay` (a later compose file) onto `base` (the files before it):
/// whole project dicts, both in compose-go's canonical form.
///
/// First the `!reset`/`!override` tags of `overlay` are applied: the earlier
/// value at each tagged path is removed (see [`reset_paths`]), a `!reset` value
/// is dropped and an `!override` value is taken as it is. Tags in `base` are
/// resolved against nothing (see [`strip_tags`]). Then the trees are merged
/// with these rules, besides the generic ones of the module:
///
/// | path | rule |
/// | --- | --- |
/// | `services.*.command`, `entrypoint`, `healthcheck.test` | replaced, even by `null` |
/// | `services.*.environment`, `labels`, `annotations`, `sysctls`, `dns`, `dns_opt`, `dns_search`, `tmpfs`, `env_file`, `label_file`, `deploy.labels`, `build.args`, `build.labels`, `build.additional_contexts`; `networks.*.labels`, `volumes.*.labels` | both sides turned into a sequence (a mapping becomes sorted `key=value` strings, a bare `key` for `null`; a string becomes one entry) and appended |
/// | `services.*.extra_hosts`, `build.extra_hosts` | as above, but later entries equal to an earlier one are dropped |
/// | `services.*.build` | a string is `{context: ...}`; mappings merged |
/// | `services.*.depends_on` | a list becomes `{name: {condition: service_started, required: true}}`; mappings merged |
/// | `services.*.networks`, `models` | a list becomes `{name: null}`; mappings merged |
/// | `services.*.logging` | options merged when the drivers are equal or one is unset; otherwise replaced |
/// | `services.*.ulimits.*` | replaced |
/// | `networks.*.ipam.config` | compose-go's merge by `subnet`, quirks included |
///
/// Call [`enforce_unicity`] on the result, as compose does after each file.
/// A value compose refuses to merge (a mapping replaced by a string, ...) is
/// replaced by the later one; [`try_merge_project`] reports it instead.
pub fn merge_project(base: Value, overlay: Value) -> Value {
    Ctx::default().merge_documents(base, overlay)
}

/// [`merge_project`], failing where compose fails (e.g. `cannot override services.web.deploy`).
pub fn try_merge_project(base: Value, overlay: Value) -> Result<Value, MergeError> {
    let mut ctx = Ctx::default();
    let merged = ctx.merge_documents(base, overlay);
    ctx.finish(merged)
}

/// Merges a service definition onto the service it extends (`extends`):
/// `base` is the extended service, `overlay` the extending one.
///
/// The rules are those of [`merge_project`] for a service; the tags of
/// `overlay` apply to `base`. The `extends` key is removed from the result.
/// When `base` is `null` the overlay is returned unchanged (tags resolved),
/// as compose does.
///
/// The tags of the extending service also apply to the earlier files: when a
/// file's `extends` are resolved before it is merged, collect its
/// [`reset_paths`] first and [`apply_resets`] them to the project it is then
/// merged onto.
pub fn merge_service(base: Value, overlay: Value) -> Value {
    Ctx::default().merge_services("x", base, overlay)
}

/// [`merge_service`], failing where compose fails; `name` is the extending
/// service's name, used in error messages.
pub fn try_merge_service(name: &str, base: Value, overlay: Value) -> Result<Value, MergeError> {
    let mut ctx = Ctx::default();
    let merged = ctx.merge_services(name, base, overlay);
    ctx.finish(merged)
}

/// Removes duplicates compose does not allow after a merge, the later entry
/// winning at the place of the first one, as compose-go's `EnforceUnicity`.
///
/// Only sequences reached through mappings are looked at; entries are keyed:
///
/// | path under `services.*` | key |
/// | --- | --- |
/// | `ports` | `host_ip:published:target/protocol` (`0.0.0.0`, `tcp` by default); a string or an integer as written |
/// | `volumes` | `target` (a short-syntax string is parsed) |
/// | `devices` | `target`; a string `src:dst[:perm]` by `dst` |
/// | `secrets`, `configs` | `target`, else `/run/secrets/<source>` or `/<source>`; a string is a source |
/// | `env_file` | `path`; a string as written |
/// | `expose` | the port, string or integer alike |
/// | `environment`, `labels`, `annotations`, `sysctls`, `dns`, `dns_opt`, `dns_search`, `tmpfs`, `cap_add`, `cap_drop`, `links`, `profiles`, `deploy.labels`, `build.args`, `build.labels`, `build.additional_contexts`, `build.tags`, `networks.*.aliases`, `networks.*.link_local_ips` | the text before the first `=` |
///
/// and at the top level `networks.*.labels` and `networks.*.ipam.options` by
/// the text before the first `=`. Other sequences are left alone. An entry
/// that cannot be keyed is kept; [`try_enforce_unicity`] reports it instead.
pub fn enforce_unicity(project: &mut Value) {
    Ctx::default().unicity(project);
}

/// [`enforce_unicity`], failing where compose fails (e.g. a port without a
/// target). On failure `project` is left as [`enforce_unicity`] leaves it.
pub fn try_enforce_unicity(project: &mut Value) -> Result<(), MergeError> {
    let mut ctx = Ctx::default();
    ctx.unicity(project);
    ctx.finish(())
}

/// Strips any remaining `!reset`/`!override` tags, applying `!reset` as
/// removal: a `!reset` mapping entry or sequence item is dropped (a `!reset`
/// document becomes `null`), an `!override` value is kept as it is. Tags
/// nested in an `!override` value are unwrapped without effect, and any other
/// tag is unwrapped, as compose does.
pub fn strip_tags(value: Value) -> Value {
    if !contains_tags(&value) {
        return value;
    }
    resolve_tags(value).unwrap_or(Value::Null)
}

/// Whether a tag appears anywhere in the tree (most files have none).
fn contains_tags(v: &Value) -> bool {
    match v {
        Value::Tagged(_) => true,
        Value::Mapping(m) => m.iter().any(|(k, v)| contains_tags(k) || contains_tags(v)),
        Value::Sequence(s) => s.iter().any(contains_tags),
        _ => false,
    }
}

/// The paths of the `!reset` and `!override` values of a compose file, which
/// compose removes from the earlier files before merging this one.
///
/// Tags nested in a tagged value are not looked at. An item of a sequence is
/// recorded with its index, which (as in compose) only ever matches a mapping
/// key spelled as that number: sequence items are never removed.
pub fn reset_paths(value: &Value) -> Vec<YamlPath> {
    let mut out = Vec::new();
    collect_resets(value, &mut Vec::new(), &mut out);
    out
}

/// Removes the value at each of `paths` from `base`, following mapping keys
/// only; a path that leads nowhere is ignored. See [`reset_paths`].
pub fn apply_resets(base: &mut Value, paths: &[YamlPath]) {
    for path in paths {
        remove_at(base, &path.0);
    }
}

// ---------------------------------------------------------------------------
// Tags.

#[derive(Clone, Copy, PartialEq, Eq)]
enum TagKind {
    Reset,
    Override,
    Other,
}

fn tag_kind(tag: &Tag) -> TagKind {
    if *tag == "reset" {
        TagKind::Reset
    } else if *tag == "override" {
        TagKind::Override
    } else {
        TagKind::Other
    }
}

/// Applies tags: `None` for a `!reset` value.
fn resolve_tags(value: Value) -> Option<Value> {
    match value {
        Value::Tagged(tagged) => {
            let TaggedValue { tag, value } = *tagged;
            match tag_kind(&tag) {
                TagKind::Reset => None,
                TagKind::Override => Some(untag(value)),
                TagKind::Other => resolve_tags(value),
            }
        }
        Value::Mapping(m) => Some(Value::Mapping(
            m.into_iter()
                .filter_map(|(k, v)| resolve_tags(v).map(|v| (untag(k), v)))
                .collect(),
        )),
        Value::Sequence(items) => Some(Value::Sequence(
            items.into_iter().filter_map(resolve_tags).collect(),
        )),
        other => Some(other),
    }
}

/// Unwraps every tag, without applying any.
fn untag(value: Value) -> Value {
    match value {
        Value::Tagged(tagged) => untag(tagged.value),
        Value::Mapping(m) => {
            Value::Mapping(m.into_iter().map(|(k, v)| (untag(k), untag(v))).collect())
        }
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(untag).collect()),
        other => other,
    }
}

fn collect_resets(value: &Value, path: &mut Vec<Segment>, out: &mut Vec<YamlPath>) {
    match value {
        Value::Tagged(tagged) => match tag_kind(&tagged.tag) {
            TagKind::Reset | TagKind::Override => out.push(YamlPath(path.clone())),
            TagKind::Other => collect_resets(&tagged.value, path, out),
        },
        Value::Mapping(m) => {
            for (k, v) in m {
                path.push(Segment::Key(key_string(k)));
                collect_resets(v, path, out);
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(Segment::Index(i));
                collect_resets(v, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn segment_key(segment: &Segment) -> String {
    match segment {
        Segment::Key(k) => k.clone(),
        Segment::Index(i) => i.to_string(),
    }
}

fn entry_mut<'a>(m: &'a mut Mapping, key: &str) -> Option<&'a mut Value> {
    m.iter_mut()
        .find(|(k, _)| key_string(k) == key)
        .map(|(_, v)| v)
}

fn remove_at(value: &mut Value, path: &[Segment]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = value;
    for segment in parents {
        current = match current {
            Value::Mapping(m) => match entry_mut(m, &segment_key(segment)) {
                Some(next) => next,
                None => return,
            },
            _ => return,
        };
    }
    if let Value::Mapping(m) = current {
        let last = segment_key(last);
        let found = m.keys().find(|k| key_string(k) == last).cloned();
        if let Some(key) = found {
            m.shift_remove(&key);
        }
    }
}

// ---------------------------------------------------------------------------
// Merge rules.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MergeRule {
    /// The later value, even `null`.
    Replace,
    /// Both sides as sequences, appended.
    ToSequence,
    /// Both sides as sequences, later entries equal to an earlier one dropped.
    ExtraHosts,
    /// A string is `{context: ...}`; mappings merged.
    Build,
    /// A list of names becomes a mapping of default conditions; mappings merged.
    DependsOn,
    /// A list of names becomes a mapping of nulls; mappings merged.
    NamedMapping,
    /// Merged when the drivers agree, replaced otherwise.
    Logging,
    /// compose-go's `networks.*.ipam.config` merge.
    IpamConfig,
}

const MERGE_RULES: &[(&str, MergeRule)] = &[
    ("networks.*.ipam.config", MergeRule::IpamConfig),
    ("networks.*.labels", MergeRule::ToSequence),
    ("volumes.*.labels", MergeRule::ToSequence),
    ("services.*.annotations", MergeRule::ToSequence),
    ("services.*.build", MergeRule::Build),
    ("services.*.build.args", MergeRule::ToSequence),
    (
        "services.*.build.additional_contexts",
        MergeRule::ToSequence,
    ),
    ("services.*.build.extra_hosts", MergeRule::ExtraHosts),
    ("services.*.build.labels", MergeRule::ToSequence),
    ("services.*.command", MergeRule::Replace),
    ("services.*.depends_on", MergeRule::DependsOn),
    ("services.*.deploy.labels", MergeRule::ToSequence),
    ("services.*.dns", MergeRule::ToSequence),
    ("services.*.dns_opt", MergeRule::ToSequence),
    ("services.*.dns_search", MergeRule::ToSequence),
    ("services.*.entrypoint", MergeRule::Replace),
    ("services.*.env_file", MergeRule::ToSequence),
    ("services.*.label_file", MergeRule::ToSequence),
    ("services.*.environment", MergeRule::ToSequence),
    ("services.*.extra_hosts", MergeRule::ExtraHosts),
    ("services.*.healthcheck.test", MergeRule::Replace),
    ("services.*.labels", MergeRule::ToSequence),
    ("services.*.volumes.*.volume.labels", MergeRule::ToSequence),
    ("services.*.logging", MergeRule::Logging),
    ("services.*.models", MergeRule::NamedMapping),
    ("services.*.networks", MergeRule::NamedMapping),
    ("services.*.sysctls", MergeRule::ToSequence),
    ("services.*.tmpfs", MergeRule::ToSequence),
    ("services.*.ulimits.*", MergeRule::Replace),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Indexer {
    KeyValue,
    Volume,
    Device,
    Expose,
    Mount(&'static str),
    Port,
    EnvFile,
}

const UNIQUE_RULES: &[(&str, Indexer)] = &[
    ("networks.*.labels", Indexer::KeyValue),
    ("networks.*.ipam.options", Indexer::KeyValue),
    ("services.*.annotations", Indexer::KeyValue),
    ("services.*.build.args", Indexer::KeyValue),
    ("services.*.build.additional_contexts", Indexer::KeyValue),
    ("services.*.build.platform", Indexer::KeyValue),
    ("services.*.build.tags", Indexer::KeyValue),
    ("services.*.build.labels", Indexer::KeyValue),
    ("services.*.cap_add", Indexer::KeyValue),
    ("services.*.cap_drop", Indexer::KeyValue),
    ("services.*.configs", Indexer::Mount("")),
    ("services.*.deploy.labels", Indexer::KeyValue),
    ("services.*.dns", Indexer::KeyValue),
    ("services.*.dns_opt", Indexer::KeyValue),
    ("services.*.dns_search", Indexer::KeyValue),
    ("services.*.environment", Indexer::KeyValue),
    ("services.*.env_file", Indexer::EnvFile),
    ("services.*.expose", Indexer::Expose),
    ("services.*.labels", Indexer::KeyValue),
    ("services.*.links", Indexer::KeyValue),
    ("services.*.networks.*.aliases", Indexer::KeyValue),
    ("services.*.networks.*.link_local_ips", Indexer::KeyValue),
    ("services.*.ports", Indexer::Port),
    ("services.*.profiles", Indexer::KeyValue),
    ("services.*.secrets", Indexer::Mount("/run/secrets")),
    ("services.*.sysctls", Indexer::KeyValue),
    ("services.*.tmpfs", Indexer::KeyValue),
    ("services.*.volumes", Indexer::Volume),
    ("services.*.devices", Indexer::Device),
];

/// The largest number of keys of a [`UNIQUE_RULES`] pattern.
const UNIQUE_DEPTH: usize = 5;

/// Whether `path` matches a dotted `pattern` where `*` stands for any key.
fn matches(path: &[Segment], pattern: &str) -> bool {
    let mut parts = pattern.split('.');
    for segment in path {
        let Some(part) = parts.next() else {
            return false;
        };
        let ok = part == "*"
            || match segment {
                Segment::Key(k) => k == part,
                Segment::Index(_) => false,
            };
        if !ok {
            return false;
        }
    }
    parts.next().is_none()
}

fn lookup<T: Copy>(rules: &[(&str, T)], path: &[Segment]) -> Option<T> {
    rules
        .iter()
        .find(|(pattern, _)| matches(path, pattern))
        .map(|(_, rule)| *rule)
}

// ---------------------------------------------------------------------------
// Merging.

/// The state of one merge: where it is, and what compose would refuse.
#[derive(Default)]
struct Ctx {
    path: Vec<Segment>,
    errors: Vec<MergeError>,
}

impl Ctx {
    fn here(&self) -> YamlPath {
        YamlPath(self.path.clone())
    }

    fn fail(&mut self, error: MergeError) {
        self.errors.push(error);
    }

    fn unexpected(&mut self, found: &Value) {
        let error = MergeError::UnexpectedType {
            path: self.here(),
            found: kind(found),
        };
        self.fail(error);
    }

    fn cannot_override(&mut self) {
        let error = MergeError::CannotOverride(self.here());
        self.fail(error);
    }

    fn finish<T>(self, value: T) -> Result<T, MergeError> {
        match self.errors.into_iter().next() {
            Some(error) => Err(error),
            None => Ok(value),
        }
    }

    fn merge_documents(&mut self, base: Value, overlay: Value) -> Value {
        let mut base = strip_tags(base);
        apply_resets(&mut base, &reset_paths(&overlay));
        let overlay = strip_tags(overlay);
        if !base.is_mapping() && !base.is_null() && !overlay.is_null() {
            // compose starts from an empty mapping: a project is never a scalar.
            self.cannot_override();
            return overlay;
        }
        self.merge(base, overlay)
    }

    fn merge_services(&mut self, name: &str, base: Value, overlay: Value) -> Value {
        let mut base = strip_tags(base);
        apply_resets(&mut base, &reset_paths(&overlay));
        let overlay = strip_tags(overlay);
        self.path = vec![
            Segment::Key("services".to_string()),
            Segment::Key(name.to_string()),
        ];
        if base.is_null() || overlay.is_null() {
            return overlay;
        }
        if !overlay.is_mapping() {
            self.unexpected(&overlay);
            return overlay;
        }
        if !base.is_mapping() {
            self.unexpected(&base);
            return overlay;
        }
        let mut merged = self.merge(base, overlay);
        if let Value::Mapping(m) = &mut merged {
            m.shift_remove("extends");
        }
        merged
    }

    /// Merges `overlay` onto `base` at the current path.
    fn merge(&mut self, base: Value, overlay: Value) -> Value {
        match lookup(MERGE_RULES, &self.path) {
            Some(rule) => self.merge_special(rule, base, overlay),
            None => self.merge_plain(base, overlay),
        }
    }

    fn merge_plain(&mut self, base: Value, overlay: Value) -> Value {
        if overlay.is_null() {
            return base;
        }
        match (base, overlay) {
            (Value::Mapping(b), Value::Mapping(o)) => Value::Mapping(self.merge_mappings(b, o)),
            (Value::Sequence(mut b), Value::Sequence(o)) => {
                b.extend(o);
                Value::Sequence(b)
            }
            (Value::Mapping(_) | Value::Sequence(_), o) => {
                self.cannot_override();
                o
            }
            (_, o) => o,
        }
    }

    fn merge_mappings(&mut self, mut base: Mapping, overlay: Mapping) -> Mapping {
        for (key, value) in overlay {
            match base.get_mut(&key) {
                Some(slot) => {
                    let current = std::mem::take(slot);
                    self.path.push(Segment::Key(key_string(&key)));
                    *slot = self.merge(current, value);
                    self.path.pop();
                }
                None => {
                    base.insert(key, value);
                }
            }
        }
        base
    }

    fn merge_special(&mut self, rule: MergeRule, base: Value, overlay: Value) -> Value {
        match rule {
            MergeRule::Replace => overlay,
            MergeRule::ToSequence => {
                let right = to_sequence(base);
                let left = to_sequence(overlay);
                concat(right, left)
            }
            MergeRule::ExtraHosts => {
                let right = to_sequence(base);
                let left = to_sequence(overlay).map(|left| {
                    left.into_iter()
                        .filter(|v| !right.as_ref().is_some_and(|r| r.contains(v)))
                        .collect()
                });
                concat(right, left)
            }
            MergeRule::Build => {
                let right = build_mapping(base);
                let left = build_mapping(overlay);
                self.merge_optional_mappings(right, left)
            }
            MergeRule::DependsOn => {
                let mut default = Mapping::new();
                default.insert("condition".into(), "service_started".into());
                default.insert("required".into(), Value::Bool(true));
                let default = Value::Mapping(default);
                let right = self.named_mapping(base, &default);
                let left = self.named_mapping(overlay, &default);
                self.merge_optional_mappings(right, left)
            }
            MergeRule::NamedMapping => {
                let right = self.named_mapping(base, &Value::Null);
                let left = self.named_mapping(overlay, &Value::Null);
                self.merge_optional_mappings(right, left)
            }
            MergeRule::Logging => self.merge_logging(base, overlay),
            MergeRule::IpamConfig => self.merge_ipam_config(base, overlay),
        }
    }

    /// Merges two converted mappings; `None` stands for Go's nil map, which
    /// compose cannot write into.
    fn merge_optional_mappings(
        &mut self,
        base: Option<Mapping>,
        overlay: Option<Mapping>,
    ) -> Value {
        match (base, overlay) {
            (Some(b), Some(o)) => Value::Mapping(self.merge_mappings(b, o)),
            (Some(b), None) => Value::Mapping(b),
            (None, Some(o)) if !o.is_empty() => {
                self.cannot_override();
                Value::Mapping(o)
            }
            (None, _) => Value::Null,
        }
    }

    /// A mapping as is, or a list of names as a mapping of each name to `default`.
    fn named_mapping(&mut self, value: Value, default: &Value) -> Option<Mapping> {
        match value {
            Value::Mapping(m) => Some(m),
            Value::Sequence(items) => {
                let mut m = Mapping::new();
                for item in items {
                    let name = match item {
                        Value::String(s) => s,
                        other => {
                            self.unexpected(&other);
                            key_string(&other)
                        }
                    };
                    m.insert(Value::String(name), default.clone());
                }
                Some(m)
            }
            _ => None,
        }
    }

    fn merge_logging(&mut self, base: Value, overlay: Value) -> Value {
        match (base, overlay) {
            (Value::Mapping(b), Value::Mapping(o)) => {
                if let (Some(before), Some(after)) = (b.get("driver"), o.get("driver")) {
                    if before != after {
                        return Value::Mapping(o);
                    }
                }
                Value::Mapping(self.merge_mappings(b, o))
            }
            (b, o) => {
                let found = if b.is_mapping() { &o } else { &b };
                self.unexpected(found);
                if o.is_null() {
                    b
                } else {
                    o
                }
            }
        }
    }

    /// compose-go's merge of `networks.*.ipam.config`: every earlier pool is
    /// merged with every later pool of the same subnet, in place, and a later
    /// pool of a new subnet is added. Go's shared references are reproduced,
    /// so the (surprising) results match compose's.
    fn merge_ipam_config(&mut self, base: Value, overlay: Value) -> Value {
        let (configs, overrides) = match (base, overlay) {
            (Value::Sequence(c), Value::Sequence(o)) => (c, o),
            (b, o) => {
                let found = if b.is_sequence() { &o } else { &b };
                self.unexpected(found);
                return if o.is_null() { b } else { o };
            }
        };
        let mut heap = Heap::default();
        let overrides: Vec<PoolSource> = overrides
            .into_iter()
            .map(|o| match o {
                Value::Mapping(m) => PoolSource::Shared(heap.alloc_mapping(m)),
                other => PoolSource::Fresh(other),
            })
            .collect();
        let mut pools: Vec<usize> = Vec::new();
        for original in configs {
            let right = self.heap_convert(&mut heap, original);
            for source in &overrides {
                let left = match source {
                    PoolSource::Shared(id) => *id,
                    PoolSource::Fresh(v) => self.heap_convert(&mut heap, v.clone()),
                };
                let left_subnet = heap.subnet(left);
                if left_subnet != heap.subnet(right)
                    && !pools.iter().any(|&id| heap.subnet(id) == left_subnet)
                {
                    pools.push(left);
                    continue;
                }
                self.heap_merge_mappings(&mut heap, right, left);
                let merged_subnet = heap.subnet(right);
                match pools
                    .iter()
                    .position(|&id| heap.subnet(id) == merged_subnet)
                {
                    Some(i) => pools[i] = right,
                    None => pools.push(right),
                }
            }
        }
        if pools.is_empty() {
            Value::Null
        } else {
            Value::Sequence(pools.iter().map(|&id| heap.object_value(id)).collect())
        }
    }

    fn heap_convert(&mut self, heap: &mut Heap, value: Value) -> usize {
        match value {
            Value::Mapping(m) => heap.alloc_mapping(m),
            Value::Sequence(items) => {
                let mut entries: Vec<(Value, Node)> = Vec::new();
                for item in items {
                    let name = match item {
                        Value::String(s) => s,
                        other => {
                            self.unexpected(&other);
                            key_string(&other)
                        }
                    };
                    let key = Value::String(name);
                    if !entries.iter().any(|(k, _)| *k == key) {
                        entries.push((key, Node::Leaf(Value::Null)));
                    }
                }
                heap.push(entries, false)
            }
            _ => heap.push(Vec::new(), true),
        }
    }

    fn heap_merge_mappings(&mut self, heap: &mut Heap, right: usize, left: usize) {
        let entries = heap.entries(left).to_vec();
        for (key, value) in entries {
            if heap.is_nil(right) {
                self.cannot_override();
                heap.set_nil(right, false);
            }
            match heap.position(right, &key) {
                None => heap.push_entry(right, key, value),
                Some(i) => {
                    let current = heap.entry_node(right, i);
                    self.path.push(Segment::Key(key_string(&key)));
                    let merged = self.heap_merge(heap, current, value);
                    self.path.pop();
                    heap.set_entry_node(right, i, merged);
                }
            }
        }
    }

    fn heap_merge(&mut self, heap: &mut Heap, base: Node, overlay: Node) -> Node {
        if matches!(overlay, Node::Leaf(Value::Null)) {
            return base;
        }
        match (base, overlay) {
            (Node::Obj(b), Node::Obj(o)) => {
                self.heap_merge_mappings(heap, b, o);
                Node::Obj(b)
            }
            (Node::Leaf(Value::Sequence(mut b)), Node::Leaf(Value::Sequence(o))) => {
                b.extend(o);
                Node::Leaf(Value::Sequence(b))
            }
            (Node::Obj(_) | Node::Leaf(Value::Sequence(_)), o) => {
                self.cannot_override();
                o
            }
            (Node::Leaf(_), o) => o,
        }
    }

    // -----------------------------------------------------------------------
    // Unicity.

    fn unicity(&mut self, value: &mut Value) {
        match value {
            Value::Mapping(m) => {
                // No rule reaches deeper than five keys, and all of them start
                // under `services` or `networks`: skip what none can match.
                if self.path.len() >= UNIQUE_DEPTH {
                    return;
                }
                for (k, v) in m.iter_mut() {
                    if self.path.is_empty() && !matches!(k.as_str(), Some("services" | "networks"))
                    {
                        continue;
                    }
                    self.path.push(Segment::Key(key_string(k)));
                    self.unicity(v);
                    self.path.pop();
                }
            }
            Value::Sequence(items) => {
                if let Some(indexer) = lookup(UNIQUE_RULES, &self.path) {
                    self.dedupe(items, indexer);
                }
            }
            Value::Tagged(tagged) => self.unicity(&mut tagged.value),
            _ => {}
        }
    }

    fn dedupe(&mut self, items: &mut Vec<Value>, indexer: Indexer) {
        let mut keys = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            self.path.push(Segment::Index(i));
            keys.push(self.index_key(indexer, item));
            self.path.pop();
        }
        let mut out: Vec<Value> = Vec::with_capacity(items.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (item, key) in std::mem::take(items).into_iter().zip(keys) {
            if let Some(key) = key {
                if let Some(&at) = seen.get(&key) {
                    out[at] = item;
                    continue;
                }
                seen.insert(key, out.len());
            }
            out.push(item);
        }
        *items = out;
    }

    /// The key compose indexes a sequence entry by; `None` when it cannot.
    fn index_key(&mut self, indexer: Indexer, item: &Value) -> Option<String> {
        let item = untagged(item);
        match indexer {
            Indexer::KeyValue => match item {
                Value::String(s) => {
                    Some(s.split_once('=').map_or(s.as_str(), |(k, _)| k).to_string())
                }
                other => {
                    self.unexpected(other);
                    None
                }
            },
            Indexer::Volume => match item {
                Value::Mapping(m) => match m.get("target").map(untagged) {
                    Some(Value::String(t)) => Some(t.clone()),
                    _ => {
                        let error = MergeError::MissingVolumeTarget(self.here());
                        self.fail(error);
                        None
                    }
                },
                Value::String(spec) => match volume_target(spec) {
                    Ok(target) => Some(target),
                    Err(reason) => {
                        self.fail(MergeError::InvalidVolumeSpec {
                            spec: spec.clone(),
                            reason,
                        });
                        None
                    }
                },
                _ => Some(String::new()),
            },
            Indexer::Device => match item {
                Value::Mapping(m) => match m.get("target").map(untagged) {
                    Some(Value::String(t)) => Some(t.clone()),
                    _ => {
                        let error = MergeError::MissingDeviceTarget(self.here());
                        self.fail(error);
                        None
                    }
                },
                Value::String(s) => {
                    let parts: Vec<&str> = s.split(':').collect();
                    let target = if parts.len() == 1 { parts[0] } else { parts[1] };
                    Some(target.to_string())
                }
                _ => Some(String::new()),
            },
            Indexer::Expose => match item {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) if !n.is_f64() => Some(n.to_string()),
                other => {
                    let error = MergeError::UnsupportedValue {
                        path: self.here(),
                        value: go_format(other, Verb::V),
                    };
                    self.fail(error);
                    None
                }
            },
            Indexer::Mount(default_dir) => match item {
                Value::String(s) => Some(format!("{default_dir}/{s}")),
                Value::Mapping(m) => match m.get("target").map(untagged) {
                    Some(Value::String(t)) => Some(t.clone()),
                    Some(other) => {
                        self.unexpected(other);
                        None
                    }
                    None => {
                        let source = m.get("source").map(untagged).unwrap_or(&Value::Null);
                        Some(format!("{default_dir}/{}", go_format(source, Verb::S)))
                    }
                },
                other => {
                    let error = MergeError::UnsupportedValue {
                        path: self.here(),
                        value: go_format(other, Verb::V),
                    };
                    self.fail(error);
                    None
                }
            },
            Indexer::Port => match item {
                Value::Number(n) if !n.is_f64() => Some(n.to_string()),
                Value::String(s) => Some(s.clone()),
                Value::Mapping(m) => {
                    let Some(target) = m.get("target").map(untagged) else {
                        let error = MergeError::MissingPortTarget(self.here());
                        self.fail(error);
                        return None;
                    };
                    let field = |name: &str, default: &str| match m.get(name) {
                        Some(v) => go_format(untagged(v), Verb::S),
                        None => default.to_string(),
                    };
                    let host = field("host_ip", "0.0.0.0");
                    let published = field("published", "%!s(<nil>)");
                    let protocol = field("protocol", "tcp");
                    let target = go_format(target, Verb::D);
                    Some(format!("{host}:{published}:{target}/{protocol}"))
                }
                _ => Some(String::new()),
            },
            Indexer::EnvFile => match item {
                Value::String(s) => Some(s.clone()),
                Value::Mapping(m) => match m.get("path").map(untagged) {
                    Some(Value::String(p)) => Some(p.clone()),
                    Some(other) => {
                        self.unexpected(other);
                        None
                    }
                    None => {
                        let error = MergeError::MissingEnvFilePath(self.here());
                        self.fail(error);
                        None
                    }
                },
                _ => Some(String::new()),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// A small model of Go's shared maps, for `networks.*.ipam.config`.

/// A value in the heap: a shared mapping, or any other value (held by value).
#[derive(Debug, Clone)]
enum Node {
    Obj(usize),
    Leaf(Value),
}

/// A mapping in the heap; `nil` marks Go's nil map (read as empty, not writable).
#[derive(Debug, Default)]
struct Obj {
    entries: Vec<(Value, Node)>,
    nil: bool,
}

#[derive(Debug, Default)]
struct Heap {
    objs: Vec<Obj>,
}

/// A later IPAM pool: a mapping is one shared object, anything else is
/// converted afresh at each use.
enum PoolSource {
    Shared(usize),
    Fresh(Value),
}

impl Heap {
    fn push(&mut self, entries: Vec<(Value, Node)>, nil: bool) -> usize {
        self.objs.push(Obj { entries, nil });
        self.objs.len() - 1
    }

    fn alloc(&mut self, value: Value) -> Node {
        match value {
            Value::Mapping(m) => Node::Obj(self.alloc_mapping(m)),
            other => Node::Leaf(other),
        }
    }

    fn alloc_mapping(&mut self, m: Mapping) -> usize {
        let entries = m.into_iter().map(|(k, v)| (k, self.alloc(v))).collect();
        self.push(entries, false)
    }

    fn obj(&self, id: usize) -> Option<&Obj> {
        self.objs.get(id)
    }

    fn entries(&self, id: usize) -> &[(Value, Node)] {
        self.obj(id).map_or(&[], |o| o.entries.as_slice())
    }

    fn is_nil(&self, id: usize) -> bool {
        self.obj(id).is_some_and(|o| o.nil)
    }

    fn set_nil(&mut self, id: usize, nil: bool) {
        if let Some(o) = self.objs.get_mut(id) {
            o.nil = nil;
        }
    }

    fn position(&self, id: usize, key: &Value) -> Option<usize> {
        self.entries(id).iter().position(|(k, _)| k == key)
    }

    fn entry_node(&self, id: usize, i: usize) -> Node {
        self.entries(id)
            .get(i)
            .map_or(Node::Leaf(Value::Null), |(_, n)| n.clone())
    }

    fn set_entry_node(&mut self, id: usize, i: usize, node: Node) {
        if let Some(entry) = self.objs.get_mut(id).and_then(|o| o.entries.get_mut(i)) {
            entry.1 = node;
        }
    }

    fn push_entry(&mut self, id: usize, key: Value, node: Node) {
        if let Some(o) = self.objs.get_mut(id) {
            o.entries.push((key, node));
        }
    }

    /// The pool's `subnet`, `null` when unset (Go's nil).
    fn subnet(&self, id: usize) -> Value {
        self.entries(id)
            .iter()
            .find(|(k, _)| k.as_str() == Some("subnet"))
            .map_or(Value::Null, |(_, n)| self.value(n, 0))
    }

    fn object_value(&self, id: usize) -> Value {
        self.value(&Node::Obj(id), 0)
    }

    fn value(&self, node: &Node, depth: usize) -> Value {
        match node {
            Node::Leaf(v) => v.clone(),
            // Merges only link objects found at the same depth, so there are
            // no cycles; the bound is a guard all the same.
            Node::Obj(_) if depth > 256 => Value::Null,
            Node::Obj(id) => match self.obj(*id) {
                Some(o) if !o.nil => Value::Mapping(
                    o.entries
                        .iter()
                        .map(|(k, n)| (k.clone(), self.value(n, depth + 1)))
                        .collect(),
                ),
                _ => Value::Null,
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers.

/// Turns a value into compose's sequence form; `None` stands for Go's nil slice.
fn to_sequence(value: Value) -> Option<Vec<Value>> {
    match value {
        Value::Mapping(m) => {
            let mut items: Vec<String> = Vec::new();
            for (k, v) in m {
                let key = key_string(&k);
                match v {
                    Value::Null => items.push(key),
                    Value::Sequence(values) => {
                        for v in values {
                            items.push(format!("{key}={}", go_format(&v, Verb::V)));
                        }
                    }
                    other => items.push(format!("{key}={}", go_format(&other, Verb::V))),
                }
            }
            if items.is_empty() {
                return None;
            }
            items.sort();
            Some(items.into_iter().map(Value::String).collect())
        }
        Value::Sequence(items) => Some(items),
        Value::String(s) => Some(vec![Value::String(s)]),
        _ => None,
    }
}

/// Go's `append(right, left...)`: nil when `right` is nil and nothing is added.
fn concat(right: Option<Vec<Value>>, left: Option<Vec<Value>>) -> Value {
    match right {
        Some(mut right) => {
            right.extend(left.unwrap_or_default());
            Value::Sequence(right)
        }
        None => match left {
            Some(left) if !left.is_empty() => Value::Sequence(left),
            _ => Value::Null,
        },
    }
}

fn build_mapping(value: Value) -> Option<Mapping> {
    match value {
        Value::String(context) => {
            let mut m = Mapping::new();
            m.insert("context".into(), Value::String(context));
            Some(m)
        }
        Value::Mapping(m) => Some(m),
        _ => None,
    }
}

fn untagged(value: &Value) -> &Value {
    match value {
        Value::Tagged(tagged) => untagged(&tagged.value),
        other => other,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Sequence(_) => "sequence",
        Value::Mapping(_) => "mapping",
        Value::Tagged(_) => "tagged value",
    }
}

/// A mapping key as text.
fn key_string(key: &Value) -> String {
    match untagged(key) {
        Value::String(s) => s.clone(),
        other => go_format(other, Verb::V),
    }
}

/// The verbs of Go's `fmt` that compose uses on untyped values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    V,
    S,
    D,
}

/// Formats a value as Go's `fmt` does with `%v`, `%s` or `%d`.
fn go_format(value: &Value, verb: Verb) -> String {
    let bad = |ty: &str, text: &str| match verb {
        Verb::V => text.to_string(),
        Verb::S => format!("%!s({ty}={text})"),
        Verb::D => format!("%!d({ty}={text})"),
    };
    match value {
        Value::Null => match verb {
            Verb::V => "<nil>".to_string(),
            Verb::S => "%!s(<nil>)".to_string(),
            Verb::D => "%!d(<nil>)".to_string(),
        },
        Value::Bool(b) => bad("bool", &b.to_string()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                if verb == Verb::D {
                    i.to_string()
                } else {
                    bad("int", &i.to_string())
                }
            } else if let Some(u) = n.as_u64() {
                if verb == Verb::D {
                    u.to_string()
                } else {
                    bad("uint64", &u.to_string())
                }
            } else {
                bad("float64", &go_float(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Value::String(s) => match verb {
            Verb::D => format!("%!d(string={s})"),
            _ => s.clone(),
        },
        Value::Sequence(items) => {
            let parts: Vec<String> = items.iter().map(|v| go_format(v, verb)).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Mapping(m) => {
            let mut parts: Vec<(String, String)> = m
                .iter()
                .map(|(k, v)| (go_format(k, verb), go_format(v, verb)))
                .collect();
            parts.sort();
            let parts: Vec<String> = parts.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", parts.join(" "))
        }
        Value::Tagged(tagged) => go_format(&tagged.value, verb),
    }
}

/// A float as Go's `%v` prints it: the shortest exact digits, in exponent
/// form below 1e-4 and from 1e6 on (`1e+06`, `1.5e-05`).
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0");
    }
    let scientific = format!("{:e}", f.abs());
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return f.to_string();
    };
    let Ok(exponent) = exponent.parse::<i64>() else {
        return f.to_string();
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if !(-4..6).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{fraction}e{exp_sign}{:02}", exponent.abs());
    }
    if exponent < 0 {
        let zeros = "0".repeat(usize::try_from(-exponent - 1).unwrap_or(0));
        return format!("{sign}0.{zeros}{digits}");
    }
    let int_len = usize::try_from(exponent + 1).unwrap_or(1);
    if digits.len() <= int_len {
        format!("{sign}{digits}{}", "0".repeat(int_len - digits.len()))
    } else {
        let (int, fraction) = digits.split_at(int_len);
        format!("{sign}{int}.{fraction}")
    }
}

/// The target of a short-syntax volume (`src:dst[:opts]`, or `dst` alone), as
/// compose-go's volume parser finds it.
fn volume_target(spec: &str) -> Result<String, &'static str> {
    match spec.len() {
        0 => return Err("invalid empty volume spec"),
        1 | 2 => return Ok(spec.to_string()),
        _ => {}
    }
    let chars: Vec<char> = spec.chars().collect();
    let mut source = String::new();
    let mut target = String::new();
    let mut buffer: Vec<char> = Vec::new();
    let mut depth = 0usize;
    for i in 0..=chars.len() {
        let c = chars.get(i).copied();
        if c == Some('$') && chars.get(i + 1) == Some(&'{') {
            depth += 1;
            buffer.push('$');
            continue;
        }
        if c == Some('}') && depth > 0 {
            depth -= 1;
            buffer.push('}');
            continue;
        }
        let windows_drive = c == Some(':')
            && buffer.len() == 1
            && buffer.first().is_some_and(|b| b.is_alphabetic());
        if windows_drive {
            buffer.push(':');
        } else if (c == Some(':') || c.is_none()) && depth == 0 {
            if buffer.is_empty() {
                return Err("empty section between colons");
            }
            let section: String = buffer.drain(..).collect();
            if source.is_empty() && c.is_none() {
                target = section;
            } else if source.is_empty() {
                source = section;
            } else if target.is_empty() {
                target = section;
            } else if c.is_some() {
                return Err("too many colons");
            }
        } else if let Some(c) = c {
            buffer.push(c);
        }
    }
    Ok(target)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! Expected results are those of `docker compose config` (v2.40.3) on
    //! equivalent files, before compose's later normalization (defaults,
    //! `KEY=VALUE` lists folded into mappings, ...), which is not this
    //! module's job. Inputs are in compose-go's canonical form.

    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).expect("test yaml parses")
    }

    fn show(v: &Value) -> String {
        serde_yaml::to_string(v).unwrap_or_default()
    }

    /// Merges two projects then enforces unicity, strictly and leniently.
    fn check(base: &str, overlay: &str, expected: &str) {
        let mut merged = try_merge_project(yaml(base), yaml(overlay))
            .unwrap_or_else(|e| panic!("merge failed: {e}\nbase: {base}\noverlay: {overlay}"));
        try_enforce_unicity(&mut merged).unwrap();
        let expected = yaml(expected);
        assert_eq!(
            merged,
            expected,
            "\nbase: {base}\noverlay: {overlay}\ngot:\n{}\nwant:\n{}",
            show(&merged),
            show(&expected)
        );
        let mut lenient = merge_project(yaml(base), yaml(overlay));
        enforce_unicity(&mut lenient);
        assert_eq!(lenient, merged);
        assert!(!has_tags(&merged), "tags left in {}", show(&merged));
    }

    /// [`check`] on one service, `web`, given as flow mappings.
    fn web(base: &str, overlay: &str, expected: &str) {
        check(
            &format!("services: {{web: {base}}}"),
            &format!("services: {{web: {overlay}}}"),
            &format!("services: {{web: {expected}}}"),
        );
    }

    /// Merges several files in turn, as compose does.
    fn check_files(files: &[&str], expected: &str) {
        let mut project = Value::Mapping(Mapping::new());
        for file in files {
            project = try_merge_project(project, yaml(file)).unwrap();
            try_enforce_unicity(&mut project).unwrap();
        }
        assert_eq!(project, yaml(expected), "got:\n{}", show(&project));
    }

    fn check_err(base: &str, overlay: &str, message: &str) {
        let err = try_merge_project(yaml(base), yaml(overlay)).unwrap_err();
        assert_eq!(err.to_string(), message);
    }

    fn check_service(base: &str, overlay: &str, expected: &str) {
        let merged = try_merge_service("web", yaml(base), yaml(overlay)).unwrap();
        try_merge_service("web", yaml(base), yaml(overlay)).unwrap();
        let mut project = yaml("services: {}");
        if let Value::Mapping(m) = &mut project {
            m.insert("services".into(), {
                let mut s = Mapping::new();
                s.insert("web".into(), merged.clone());
                Value::Mapping(s)
            });
        }
        enforce_unicity(&mut project);
        let merged = project["services"]["web"].clone();
        assert_eq!(merged, yaml(expected), "got:\n{}", show(&merged));
        assert_eq!(merge_service(yaml(base), yaml(overlay)), {
            let mut v = try_merge_service("x", yaml(base), yaml(overlay)).unwrap();
            strip_extends(&mut v);
            v
        });
    }

    fn strip_extends(v: &mut Value) {
        if let Value::Mapping(m) = v {
            m.shift_remove("extends");
        }
    }

    fn unicity(input: &str, expected: &str) {
        let mut v = yaml(input);
        try_enforce_unicity(&mut v).unwrap();
        assert_eq!(v, yaml(expected), "got:\n{}", show(&v));
    }

    fn unicity_err(input: &str, message: &str) {
        let mut v = yaml(input);
        let err = try_enforce_unicity(&mut v).expect_err(input);
        assert_eq!(err.to_string(), message);
        // The lenient form keeps what it cannot index and does not fail.
        let mut lenient = yaml(input);
        enforce_unicity(&mut lenient);
        assert_eq!(lenient, v);
    }

    fn has_tags(v: &Value) -> bool {
        match v {
            Value::Tagged(_) => true,
            Value::Mapping(m) => m.iter().any(|(k, v)| has_tags(k) || has_tags(v)),
            Value::Sequence(s) => s.iter().any(has_tags),
            _ => false,
        }
    }

    // --- generic rules -----------------------------------------------------

    #[test]
    fn scalars_are_replaced_and_null_keeps_the_earlier_value() {
        web(
            "{image: a, restart: always, stop_grace_period: 10s, tty: true}",
            "{image: b, restart: null, tty: false, init: true}",
            "{image: b, restart: always, stop_grace_period: 10s, tty: false, init: true}",
        );
    }

    #[test]
    fn new_keys_are_taken_as_written() {
        // No special rule applies when the earlier file lacks the key.
        web(
            "{image: a}",
            "{environment: {A: 1}, labels: {l: x}, depends_on: {db: {condition: service_healthy}}}",
            "{image: a, environment: {A: 1}, labels: {l: x}, depends_on: {db: {condition: service_healthy}}}",
        );
    }

    #[test]
    fn mappings_merge_recursively_and_sequences_append() {
        web(
            "{image: a, deploy: {replicas: 2, resources: {limits: {cpus: '1'}}, placement: {constraints: [a]}}, security_opt: [s], group_add: [g], volumes_from: [v]}",
            "{deploy: {replicas: 3, resources: {limits: {memory: 1g}}, placement: {constraints: [b]}}, security_opt: [s2], group_add: [g2], volumes_from: [db]}",
            "{image: a, deploy: {replicas: 3, resources: {limits: {cpus: '1', memory: 1g}}, placement: {constraints: [a, b]}}, security_opt: [s, s2], group_add: [g, g2], volumes_from: [v, db]}",
        );
    }

    #[test]
    fn new_keys_keep_their_order_after_the_earlier_ones() {
        let merged = merge_project(
            yaml("services: {web: {image: a, tty: true}}"),
            yaml("services: {web: {init: true, image: b}, db: {image: d}}"),
        );
        assert_eq!(
            show(&merged),
            "services:\n  web:\n    image: b\n    tty: true\n    init: true\n  db:\n    image: d\n"
        );
    }

    #[test]
    fn a_missing_or_null_base_takes_the_overlay() {
        let overlay = yaml("services: {web: {image: a, environment: {A: '1'}}}");
        assert_eq!(merge_project(Value::Null, overlay.clone()), overlay);
        assert_eq!(
            merge_project(Value::Mapping(Mapping::new()), overlay.clone()),
            overlay
        );
        assert_eq!(merge_project(overlay.clone(), Value::Null), overlay);
    }

    #[test]
    fn mismatched_kinds_cannot_be_merged() {
        // `docker compose`: "cannot override services.web.deploy".
        let base = "services: {web: {image: a, deploy: {replicas: 2}, cap_add: [A]}}";
        check_err(
            base,
            "services: {web: {deploy: x}}",
            "cannot override services.web.deploy",
        );
        check_err(
            base,
            "services: {web: {cap_add: B}}",
            "cannot override services.web.cap_add",
        );
        check_err("{x-a: [1]}", "{x-a: {b: 1}}", "cannot override x-a");
        // The lenient form lets the later value win.
        assert_eq!(
            merge_project(yaml(base), yaml("services: {web: {deploy: x}}")),
            yaml("services: {web: {image: a, deploy: x, cap_add: [A]}}")
        );
        // A scalar may be replaced by anything.
        web(
            "{image: a, x-e: 1}",
            "{x-e: [1, 2]}",
            "{image: a, x-e: [1, 2]}",
        );
    }

    // --- replaced keys -----------------------------------------------------

    #[test]
    fn command_entrypoint_and_healthcheck_test_are_replaced() {
        web(
            "{image: a, command: [a, b], entrypoint: [sh, -c], healthcheck: {test: [CMD, a, b], interval: 10s, retries: 3}}",
            "{command: [c], entrypoint: [bash], healthcheck: {test: [CMD, c], retries: 5}}",
            "{image: a, command: [c], entrypoint: [bash], healthcheck: {test: [CMD, c], interval: 10s, retries: 5}}",
        );
    }

    #[test]
    fn replaced_keys_are_replaced_even_by_null() {
        // `command: null` in the later file unsets the command.
        web(
            "{image: a, command: [a, b], entrypoint: [x], healthcheck: {test: [CMD, a]}}",
            "{command: null, entrypoint: null, healthcheck: {test: null}}",
            "{image: a, command: null, entrypoint: null, healthcheck: {test: null}}",
        );
    }

    #[test]
    fn ulimits_entries_are_replaced() {
        web(
            "{image: a, ulimits: {nofile: {soft: 1, hard: 2}, nproc: 10, x: {soft: 1, hard: 2}}}",
            "{ulimits: {nofile: {soft: 5, hard: 6}, nproc: {soft: 1, hard: 2}, core: 0, x: 7}}",
            "{image: a, ulimits: {nofile: {soft: 5, hard: 6}, nproc: {soft: 1, hard: 2}, x: 7, core: 0}}",
        );
        // Only the later mapping counts: `hard` is not inherited.
        web(
            "{image: a, ulimits: {nofile: {soft: 1, hard: 2}}}",
            "{ulimits: {nofile: {soft: 5}}}",
            "{image: a, ulimits: {nofile: {soft: 5}}}",
        );
        web(
            "{image: a, ulimits: {nofile: 10}}",
            "{ulimits: null}",
            "{image: a, ulimits: {nofile: 10}}",
        );
    }

    // --- key=value sequences ---------------------------------------------

    #[test]
    fn environment_mappings_become_sorted_key_value_lists() {
        // compose: A unset (null), B=x, C=3.
        web(
            "{image: a, environment: {B: x, A: '1'}}",
            "{environment: {A: null, C: 3}}",
            "{image: a, environment: [A, B=x, C=3]}",
        );
    }

    #[test]
    fn environment_values_are_printed_as_go_does() {
        web(
            "{image: a, environment: {A: 1000000.0, B: 1.5, C: true, D: 0.00001, E: 123456.0, F: 1.0}}",
            "{environment: {Z: 1}}",
            "{image: a, environment: [A=1e+06, B=1.5, C=true, D=1e-05, E=123456, F=1, Z=1]}",
        );
    }

    #[test]
    fn environment_lists_and_mappings_mix() {
        web(
            "{image: a, environment: [X=1, A=1, B]}",
            "{environment: {A: 2, C: null}}",
            "{image: a, environment: [X=1, A=2, B, C]}",
        );
        web(
            "{image: a, environment: {A: '1'}}",
            "{environment: [A=2, A=3, D=x=y]}",
            "{image: a, environment: [A=3, D=x=y]}",
        );
    }

    #[test]
    fn key_value_lists_with_null_or_empty_overlay() {
        // A null overlay keeps the earlier entries, now as a list.
        web(
            "{image: a, environment: {A: '1'}}",
            "{environment: null}",
            "{image: a, environment: [A=1]}",
        );
        web(
            "{image: a, environment: {A: '1'}}",
            "{environment: []}",
            "{image: a, environment: [A=1]}",
        );
        // Two empty mappings make Go's nil slice.
        web(
            "{image: a, environment: {}}",
            "{environment: {}}",
            "{image: a, environment: null}",
        );
        web(
            "{image: a, environment: []}",
            "{environment: {}}",
            "{image: a, environment: []}",
        );
    }

    #[test]
    fn a_mapping_value_that_is_a_list_adds_one_entry_per_item() {
        web(
            "{image: a, labels: {a: '1'}}",
            "{labels: {b: [x, y], c: {d: 1}}}",
            "{image: a, labels: [a=1, b=y, 'c=map[d:1]']}",
        );
    }

    #[test]
    fn labels_strings_and_lists() {
        // compose: a=1, b="", c="", x=1.
        web(
            "{image: a, labels: {a: '1'}}",
            "{labels: [b, c=]}",
            "{image: a, labels: [a=1, b, c=]}",
        );
        web(
            "{image: a, labels: {a: '1'}}",
            "{labels: x=1}",
            "{image: a, labels: [a=1, x=1]}",
        );
    }

    #[test]
    fn other_key_value_keys() {
        // compose: annotations {a:1, b:2}, sysctls {net.a: 2, net.b: 3},
        // deploy.labels {l:1, m:2}.
        web(
            "{image: a, annotations: {a: '1'}, sysctls: [net.a=1], deploy: {labels: [l=1], replicas: 2}}",
            "{annotations: [b=2], sysctls: {net.a: 2, net.b: 3}, deploy: {labels: {m: '2'}, replicas: 3}}",
            "{image: a, annotations: [a=1, b=2], sysctls: [net.a=2, net.b=3], deploy: {labels: [l=1, m=2], replicas: 3}}",
        );
    }

    #[test]
    fn dns_and_friends_append_and_deduplicate() {
        // compose: dns [8.8.8.8, 1.1.1.1], dns_search [a.com, b.com],
        // dns_opt [x, y], tmpfs [/t, /u], cap_add [A, B, C], expose [80, 81],
        // links [db, db:db].
        web(
            "{image: a, dns: [8.8.8.8], dns_search: [a.com], dns_opt: [x], tmpfs: [/t], cap_add: [A, B], cap_drop: [N], expose: ['80', 81], links: [db], profiles: [p]}",
            "{dns: [8.8.8.8, 1.1.1.1], dns_search: [a.com, b.com], dns_opt: [x, y], tmpfs: [/t, /u], cap_add: [B, C], cap_drop: [N], expose: [80, '81'], links: ['db:db'], profiles: [p, q]}",
            "{image: a, dns: [8.8.8.8, 1.1.1.1], dns_search: [a.com, b.com], dns_opt: [x, y], tmpfs: [/t, /u], cap_add: [A, B, C], cap_drop: [N], expose: [80, '81'], links: [db, 'db:db'], profiles: [p, q]}",
        );
        // A string is one entry (non-canonical input is accepted too).
        web(
            "{image: a, dns: 8.8.8.8, dns_search: a.com, tmpfs: /t}",
            "{dns: 1.1.1.1, dns_search: [b.com], tmpfs: /u}",
            "{image: a, dns: [8.8.8.8, 1.1.1.1], dns_search: [a.com, b.com], tmpfs: [/t, /u]}",
        );
    }

    #[test]
    fn env_files_append_and_the_later_path_wins() {
        web(
            "{image: a, env_file: [{path: ./a.env, required: true}, {path: ./b.env, required: false}], label_file: [./l1]}",
            "{env_file: [{path: ./a.env, required: false}, {path: ./c.env, required: true}], label_file: [./l2]}",
            "{image: a, env_file: [{path: ./a.env, required: false}, {path: ./b.env, required: false}, {path: ./c.env, required: true}], label_file: [./l1, ./l2]}",
        );
    }

    // --- extra_hosts -------------------------------------------------------

    #[test]
    fn extra_hosts_drop_only_exact_repeats_of_earlier_entries() {
        // compose: [a=1.1.1.1, a=1.1.1.1, b=2.2.2.2, b=3.3.3.3, c=4.4.4.4, c=5.5.5.5]
        web(
            "{image: a, extra_hosts: ['a:1.1.1.1', b=2.2.2.2]}",
            "{extra_hosts: {a: 1.1.1.1, b: 3.3.3.3, c: [4.4.4.4, 5.5.5.5]}}",
            "{image: a, extra_hosts: ['a:1.1.1.1', b=2.2.2.2, a=1.1.1.1, b=3.3.3.3, c=4.4.4.4, c=5.5.5.5]}",
        );
        // compose: [a=1.1.1.1, a=1.1.1.1, a=9.9.9.9]
        web(
            "{image: a, extra_hosts: {a: 1.1.1.1}}",
            "{extra_hosts: [a=1.1.1.1, 'a:1.1.1.1', a=9.9.9.9, a=9.9.9.9]}",
            "{image: a, extra_hosts: [a=1.1.1.1, 'a:1.1.1.1', a=9.9.9.9, a=9.9.9.9]}",
        );
        web(
            "{image: a, extra_hosts: [a=1.1.1.1], build: {context: ., extra_hosts: [b=2.2.2.2]}}",
            "{extra_hosts: null, build: {extra_hosts: {b: 2.2.2.2, c: 3.3.3.3}}}",
            "{image: a, extra_hosts: [a=1.1.1.1], build: {context: ., extra_hosts: [b=2.2.2.2, c=3.3.3.3]}}",
        );
    }

    // --- sequences keyed by unicity ---------------------------------------

    #[test]
    fn ports_are_deduplicated_by_canonical_key() {
        // Base `["8080:80", "443"]`, overlay `["8080:80/tcp", {target: 80,
        // published: 8080, mode: host}, "9000-9001:90-91",
        // "127.0.0.1:8080:80"]`: compose keeps five ports, the long-syntax
        // one apart because its `published` is an integer.
        web(
            "{image: a, ports: [{mode: ingress, target: 80, published: '8080', protocol: tcp}, {mode: ingress, target: 443, protocol: tcp}]}",
            "{ports: [{mode: ingress, target: 80, published: '8080', protocol: tcp}, {target: 80, published: 8080, mode: host}, {mode: ingress, target: 90, published: '9000', protocol: tcp}, {mode: ingress, target: 91, published: '9001', protocol: tcp}, {mode: ingress, host_ip: 127.0.0.1, target: 80, published: '8080', protocol: tcp}]}",
            "{image: a, ports: [{mode: ingress, target: 80, published: '8080', protocol: tcp}, {mode: ingress, target: 443, protocol: tcp}, {target: 80, published: 8080, mode: host}, {mode: ingress, target: 90, published: '9000', protocol: tcp}, {mode: ingress, target: 91, published: '9001', protocol: tcp}, {mode: ingress, host_ip: 127.0.0.1, target: 80, published: '8080', protocol: tcp}]}",
        );
    }

    #[test]
    fn ports_published_as_string_or_integer_differ() {
        // compose prints two identical ports for the first pair, one for the second.
        web(
            "{image: a, ports: [{target: 80, published: 8080}]}",
            "{ports: [{mode: ingress, target: 80, published: '8080', protocol: tcp}]}",
            "{image: a, ports: [{target: 80, published: 8080}, {mode: ingress, target: 80, published: '8080', protocol: tcp}]}",
        );
        web(
            "{image: a, ports: [{target: 80, published: '8080'}]}",
            "{ports: [{mode: ingress, target: 80, published: '8080', protocol: tcp}]}",
            "{image: a, ports: [{mode: ingress, target: 80, published: '8080', protocol: tcp}]}",
        );
        // "80", 80 and {target: 80} are one port (host 0.0.0.0, tcp by default).
        web(
            "{image: a, ports: [{mode: ingress, target: 80, protocol: tcp}]}",
            "{ports: [{mode: ingress, target: 80, protocol: tcp}, {target: 80}]}",
            "{image: a, ports: [{target: 80}]}",
        );
        web(
            "{image: a, ports: [{target: 80, host_ip: 0.0.0.0}]}",
            "{ports: [{target: 80, protocol: udp}]}",
            "{image: a, ports: [{target: 80, host_ip: 0.0.0.0}, {target: 80, protocol: udp}]}",
        );
    }

    #[test]
    fn volumes_are_deduplicated_by_target() {
        // compose: /data from ./b, /y from /x read-only, /z from v2.
        web(
            "{image: a, volumes: [{type: bind, source: ./a, target: /data, bind: {create_host_path: true}}, {type: bind, source: /x, target: /y, read_only: true, bind: {create_host_path: true}}, {type: volume, source: vol, target: /z, volume: {}}]}",
            "{volumes: [{type: bind, source: ./b, target: /data, bind: {create_host_path: true}}, {type: volume, source: v2, target: /z}]}",
            "{image: a, volumes: [{type: bind, source: ./b, target: /data, bind: {create_host_path: true}}, {type: bind, source: /x, target: /y, read_only: true, bind: {create_host_path: true}}, {type: volume, source: v2, target: /z}]}",
        );
        web(
            "{image: a, volumes: [{type: bind, source: ./a, target: /data}]}",
            "{volumes: null}",
            "{image: a, volumes: [{type: bind, source: ./a, target: /data}]}",
        );
    }

    #[test]
    fn secrets_and_configs_are_deduplicated_by_target() {
        // compose: configs [c1 -> /c1, c2]; secrets [s1 (mode 0400), s1 -> /t].
        check(
            "services: {web: {image: a, secrets: [{source: s1}, {source: s2, target: /t}], configs: [{source: c1}]}}\nsecrets: {s1: {file: ./s1}, s2: {file: ./s2}}\nconfigs: {c1: {file: ./c1}, c2: {file: ./c2}}",
            "services: {web: {secrets: [{source: s1, mode: 0400}, {source: s1, target: /t}], configs: [{source: c1, target: /c1}, {source: c2}]}}\nsecrets: {s1: {name: foo}}\nconfigs: {c2: {external: true}}",
            "services: {web: {image: a, secrets: [{source: s1, mode: 0400}, {source: s1, target: /t}], configs: [{source: c1, target: /c1}, {source: c2}]}}\nsecrets: {s1: {file: ./s1, name: foo}, s2: {file: ./s2}}\nconfigs: {c1: {file: ./c1}, c2: {file: ./c2, external: true}}",
        );
    }

    #[test]
    fn devices_are_deduplicated_by_target() {
        // compose: [/dev/z -> /dev/x rw, /dev/b, /dev/y].
        web(
            "{image: a, devices: [{source: /dev/a, target: /dev/x, permissions: rwm}, {source: /dev/b, target: /dev/b, permissions: rwm}, {source: /dev/c, target: /dev/y, permissions: r}]}",
            "{devices: [{source: /dev/z, target: /dev/x, permissions: rw}, {source: /dev/y, target: /dev/y, permissions: rwm}]}",
            "{image: a, devices: [{source: /dev/z, target: /dev/x, permissions: rw}, {source: /dev/b, target: /dev/b, permissions: rwm}, {source: /dev/y, target: /dev/y, permissions: rwm}]}",
        );
    }

    #[test]
    fn unlisted_sequences_keep_duplicates() {
        // compose: platforms [p1, p1, p2], tags [x, y, z].
        web(
            "{image: a, gpus: [{count: all}], build: {context: ., platforms: [p1], tags: [x, y], cache_from: [c]}}",
            "{gpus: [{driver: nvidia, count: 1}], build: {platforms: [p1, p2], tags: [x, z], cache_from: [c]}}",
            "{image: a, gpus: [{count: all}, {driver: nvidia, count: 1}], build: {context: ., platforms: [p1, p1, p2], tags: [x, y, z], cache_from: [c, c]}}",
        );
    }

    // --- depends_on, networks, models -------------------------------------

    #[test]
    fn depends_on_merges_per_service() {
        // The later file as written: what it leaves out is inherited.
        web(
            "{image: a, depends_on: {db: {condition: service_healthy, required: false, restart: true}}}",
            "{depends_on: {db: {condition: service_started}}}",
            "{image: a, depends_on: {db: {condition: service_started, required: false, restart: true}}}",
        );
        // A list means the default condition, `required: true`.
        web(
            "{image: a, depends_on: {db: {condition: service_healthy, required: false}}}",
            "{depends_on: [db, c]}",
            "{image: a, depends_on: {db: {condition: service_started, required: true}, c: {condition: service_started, required: true}}}",
        );
        web(
            "{image: a, depends_on: [db]}",
            "{depends_on: {c: {condition: service_healthy}}}",
            "{image: a, depends_on: {db: {condition: service_started, required: true}, c: {condition: service_healthy}}}",
        );
        web(
            "{image: a, depends_on: {db: {condition: service_started, required: true}}}",
            "{depends_on: {db: null}}",
            "{image: a, depends_on: {db: {condition: service_started, required: true}}}",
        );
        web(
            "{image: a, depends_on: {db: {condition: service_started, required: true}}}",
            "{depends_on: null}",
            "{image: a, depends_on: {db: {condition: service_started, required: true}}}",
        );
    }

    #[test]
    fn service_networks_merge_per_network() {
        check(
            "services: {web: {image: a, networks: {front: null, back: null}}}\nnetworks: {front: {}, back: {}, x: {}}",
            "services: {web: {networks: {front: {aliases: [a1], ipv4_address: 10.0.0.2}, x: null}}}",
            "services: {web: {image: a, networks: {front: {aliases: [a1], ipv4_address: 10.0.0.2}, back: null, x: null}}}\nnetworks: {front: {}, back: {}, x: {}}",
        );
        // compose: front {aliases [a1, a2, a3], priority 1}, back null.
        check_files(
            &[
                "services: {web: {image: a, networks: {front: {aliases: [a1, a2], priority: 1}}}}",
                "services: {web: {networks: {front: {aliases: [a2, a3]}}}}",
                "services: {web: {networks: [back]}}",
            ],
            "services: {web: {image: a, networks: {front: {aliases: [a1, a2, a3], priority: 1}, back: null}}}",
        );
        web(
            "{image: a, networks: {default: {}}}",
            "{networks: null}",
            "{image: a, networks: {default: {}}}",
        );
        web(
            "{image: a, models: {m1: {endpoint_var: U}}}",
            "{models: [m1, m2]}",
            "{image: a, models: {m1: {endpoint_var: U}, m2: null}}",
        );
    }

    // --- build, logging ----------------------------------------------------

    #[test]
    fn build_merges_and_a_string_is_the_context() {
        web(
            "{image: a, build: .}",
            "{build: {dockerfile: D, args: {A: 1}}}",
            "{image: a, build: {context: ., dockerfile: D, args: {A: 1}}}",
        );
        // compose: context ./sub, args {A: 2} (B and C unset), labels {l, m},
        // platforms [p1, p1, p2], tags [x, y, z].
        web(
            "{image: a, build: {context: ., args: [A=1, B], labels: {l: v}, additional_contexts: {x: ./x}}}",
            "{build: {context: ./sub, args: {A: 2, C: null}, labels: [m=w], additional_contexts: {x: ./y, z: ./z}}}",
            "{image: a, build: {context: ./sub, args: [A=2, B, C], labels: [l=v, m=w], additional_contexts: [x=./y, z=./z]}}",
        );
        web(
            "{image: a, build: {context: .}}",
            "{build: null}",
            "{image: a, build: {context: .}}",
        );
        web(
            "{image: a, build: .}",
            "{build: ./b}",
            "{image: a, build: {context: ./b}}",
        );
    }

    #[test]
    fn build_ssh_list_onto_mapping_cannot_be_merged() {
        // The later file as written, as compose merges it.
        check_err(
            "services: {web: {build: {context: ., ssh: {default: null}}}}",
            "services: {web: {build: {ssh: [a=/x]}}}",
            "cannot override services.web.build.ssh",
        );
    }

    #[test]
    fn logging_options_merge_only_for_the_same_driver() {
        web(
            "{image: a, logging: {driver: json-file, options: {max-size: 1m, max-file: '3'}}}",
            "{logging: {driver: json-file, options: {max-size: 2m}}}",
            "{image: a, logging: {driver: json-file, options: {max-size: 2m, max-file: '3'}}}",
        );
        web(
            "{image: a, logging: {driver: json-file, options: {max-size: 1m, max-file: '3'}}}",
            "{logging: {driver: syslog, options: {tag: x}}}",
            "{image: a, logging: {driver: syslog, options: {tag: x}}}",
        );
        web(
            "{image: a, logging: {driver: json-file, options: {max-size: 1m}}}",
            "{logging: {options: {tag: x}}}",
            "{image: a, logging: {driver: json-file, options: {max-size: 1m, tag: x}}}",
        );
        web(
            "{image: a, logging: {options: {max-size: 1m}}}",
            "{logging: {driver: syslog}}",
            "{image: a, logging: {options: {max-size: 1m}, driver: syslog}}",
        );
    }

    #[test]
    fn logging_set_to_null_is_refused() {
        // compose panics: "interface conversion: interface {} is nil".
        let base = "services: {web: {image: a, logging: {driver: syslog}}}";
        let overlay = "services: {web: {logging: null}}";
        check_err(base, overlay, "services.web.logging: unexpected type null");
        assert_eq!(merge_project(yaml(base), yaml(overlay)), yaml(base));
    }

    // --- top level ---------------------------------------------------------

    #[test]
    fn top_level_resources_and_extensions() {
        // compose: volume labels {a: 1, b: 2}, driver_opts {o, p}; x-top
        // {a: 1, b: 2, l: [1, 2, 3]}.
        check(
            "name: p1\nvolumes: {v1: {driver: local, labels: {a: '1'}, driver_opts: {o: '1'}}}\nnetworks: {n: {driver: bridge, labels: [a=1], driver_opts: {o: '1'}}}\nmodels: {m: {model: ai/x}}\nx-top: {a: 1, l: [1, 2]}",
            "name: p2\nvolumes: {v1: {labels: [b=2], driver_opts: {p: '2'}}, v2: null}\nnetworks: {n: {labels: {b: '2'}, external: true}}\nmodels: {m: {context_size: 10}}\nx-top: {b: 2, l: [3]}",
            "name: p2\nvolumes: {v1: {driver: local, labels: [a=1, b=2], driver_opts: {o: '1', p: '2'}}, v2: null}\nnetworks: {n: {driver: bridge, labels: [a=1, b=2], driver_opts: {o: '1'}, external: true}}\nmodels: {m: {model: ai/x, context_size: 10}}\nx-top: {a: 1, l: [1, 2, 3], b: 2}",
        );
        check(
            "networks: {n: null}\nvolumes: {v: {}}",
            "networks: {n: {driver: overlay}}\nvolumes: {v: null}",
            "networks: {n: {driver: overlay}}\nvolumes: {v: {}}",
        );
        check(
            "networks: {n: {ipam: {options: [a=1]}}}",
            "networks: {n: {ipam: {options: [a=2, b=3]}}}",
            "networks: {n: {ipam: {options: [a=2, b=3]}}}",
        );
    }

    #[test]
    fn ipam_pools_merge_by_subnet_with_compose_quirks() {
        let net = |config: &str| format!("networks: {{n: {{ipam: {{config: {config}}}}}}}");
        // compose: [{subnet: 10.2.0.0/24, ip_range: 10.0.0.0/25}, {subnet: 10.2.0.0/24}]
        check(
            &net("[{subnet: 10.0.0.0/24, gateway: 10.0.0.1}, {subnet: 10.1.0.0/24}]"),
            &net("[{subnet: 10.0.0.0/24, ip_range: 10.0.0.0/25}, {subnet: 10.2.0.0/24}]"),
            &net("[{subnet: 10.2.0.0/24, ip_range: 10.0.0.0/25}, {subnet: 10.2.0.0/24}]"),
        );
        // compose: [{gateway: 10.0.0.9}]
        check(
            &net("[{subnet: 10.0.0.0/24, gateway: 10.0.0.1}]"),
            &net("[{gateway: 10.0.0.9}]"),
            &net("[{gateway: 10.0.0.9}]"),
        );
        // compose: [{subnet: 10.0.0.0/24, gateway: 10.1.0.1, ip_range: 10.0.0.0/25},
        //           {subnet: 10.0.0.0/24, gateway: 10.0.0.1, ip_range: 10.0.0.0/25}]
        check(
            &net("[{subnet: 10.0.0.0/24, gateway: 10.0.0.1}, {subnet: 10.1.0.0/24}]"),
            &net("[{subnet: 10.1.0.0/24, gateway: 10.1.0.1}, {subnet: 10.0.0.0/24, ip_range: 10.0.0.0/25}]"),
            &net("[{subnet: 10.0.0.0/24, gateway: 10.1.0.1, ip_range: 10.0.0.0/25}, {subnet: 10.0.0.0/24, gateway: 10.0.0.1, ip_range: 10.0.0.0/25}]"),
        );
        // compose: no pool at all when the earlier list is empty.
        check(&net("[]"), &net("[{subnet: 10.0.0.0/24}]"), &net("null"));
        // compose: [{subnet: 10.1.0.0/24, aux_addresses: {b, c}}, {subnet: 10.1.0.0/24, aux_addresses: {c}}]
        check(
            &net("[{subnet: 10.0.0.0/24, aux_addresses: {a: 10.0.0.5}}, {subnet: 10.1.0.0/24}]"),
            &net("[{subnet: 10.0.0.0/24, aux_addresses: {b: 10.0.0.6}}, {subnet: 10.1.0.0/24, aux_addresses: {c: 10.1.0.6}}]"),
            &net("[{subnet: 10.1.0.0/24, aux_addresses: {b: 10.0.0.6, c: 10.1.0.6}}, {subnet: 10.1.0.0/24, aux_addresses: {c: 10.1.0.6}}]"),
        );
        // The common case behaves: same subnet merged, new subnet added.
        check(
            &net("[{subnet: 10.0.0.0/24, gateway: 10.0.0.1}]"),
            &net("[{subnet: 10.0.0.0/24, ip_range: 10.0.0.0/25}, {subnet: 10.5.0.0/24}]"),
            &net("[{subnet: 10.0.0.0/24, gateway: 10.0.0.1, ip_range: 10.0.0.0/25}, {subnet: 10.5.0.0/24}]"),
        );
    }

    #[test]
    fn ipam_config_set_to_null_is_refused() {
        // compose: "networks.n.ipam.config: unexpected type []interface {}".
        let base = "networks: {n: {ipam: {config: [{subnet: 10.0.0.0/24}]}}}";
        let overlay = "networks: {n: {ipam: {config: null}}}";
        check_err(
            base,
            overlay,
            "networks.n.ipam.config: unexpected type null",
        );
        assert_eq!(merge_project(yaml(base), yaml(overlay)), yaml(base));
    }

    // --- tags --------------------------------------------------------------

    #[test]
    fn override_and_reset_tags() {
        // compose: build {context: .}, environment {C: 3}, ports [81:81], no labels.
        web(
            "{image: a, environment: {A: '1', B: '2'}, labels: {l: '1'}, ports: [{target: 80, published: '80'}], build: {context: ., args: {X: '1'}}}",
            "{environment: !override {C: '3'}, labels: !reset {}, ports: !override [{target: 81, published: '81'}], build: {args: !reset null}}",
            "{image: a, environment: {C: '3'}, ports: [{target: 81, published: '81'}], build: {context: .}}",
        );
        // compose: environment {B: x}.
        web(
            "{image: a, environment: {A: '1', B: '2'}}",
            "{environment: {A: !reset null, B: !override x, C: !reset c}}",
            "{image: a, environment: [B=x]}",
        );
        web(
            "{image: a, environment: {A: '1', B: '2'}}",
            "!override {image: b}",
            "{image: b}",
        );
    }

    #[test]
    fn a_reset_service_or_list_removes_it() {
        check(
            "services: {web: {image: a, depends_on: {db: {condition: service_started, required: true}}}, db: {image: x}}",
            "services: {web: {depends_on: !reset []}, db: !reset {}}",
            "services: {web: {image: a}}",
        );
        check(
            "services: {web: {image: a, volumes: [{type: bind, source: ./a, target: /data}]}}",
            "services: {web: {volumes: !reset []}}",
            "services: {web: {image: a}}",
        );
    }

    #[test]
    fn a_reset_item_of_a_sequence_is_only_dropped_from_its_own_file() {
        // compose keeps 80, 81 and 82.
        web(
            "{image: a, ports: [{target: 80, published: '80'}, {target: 81, published: '81'}]}",
            "{ports: [!reset {target: 80, published: '80'}, {target: 82, published: '82'}]}",
            "{image: a, ports: [{target: 80, published: '80'}, {target: 81, published: '81'}, {target: 82, published: '82'}]}",
        );
    }

    #[test]
    fn reset_of_a_key_after_a_merge_turned_the_mapping_into_a_list() {
        // compose keeps FOO=1 with three files, but removes it with two.
        check_files(
            &[
                "services: {web: {image: a, environment: {FOO: '1'}}}",
                "services: {web: {environment: {BAR: 2}}}",
                "services: {web: {environment: {FOO: !reset null}}}",
            ],
            "services: {web: {image: a, environment: [FOO=1, BAR=2]}}",
        );
        check_files(
            &[
                "services: {web: {image: a, environment: {FOO: '1'}}}",
                "services: {web: {environment: {FOO: !reset null}}}",
            ],
            "services: {web: {image: a, environment: null}}",
        );
        check_files(
            &[
                "services: {web: {image: a, environment: [FOO=1]}}",
                "services: {web: {environment: {FOO: !reset null}}}",
            ],
            "services: {web: {image: a, environment: [FOO=1]}}",
        );
    }

    #[test]
    fn tags_in_the_first_file_apply_to_nothing() {
        // compose: image b, environment {A: 1}, labels {c: d}.
        check_files(
            &[
                "services: {web: {image: !reset a, environment: !override {A: 1}, labels: {a: !reset b, c: d}}}",
                "services: {web: {image: b}}",
            ],
            "services: {web: {environment: {A: 1}, labels: {c: d}, image: b}}",
        );
        // Tags nested in an `!override` value are ignored (compose: A=1, B=2).
        assert_eq!(
            strip_tags(yaml(
                "{environment: !override {A: !reset '1', B: '2'}, x: !foo {y: !reset 1}}"
            )),
            yaml("{environment: {A: '1', B: '2'}, x: {}}")
        );
        web(
            "{image: a, environment: {A: '0', C: '1'}}",
            "{environment: !override {A: !reset '1', B: '2'}}",
            "{image: a, environment: {A: '1', B: '2'}}",
        );
        assert_eq!(strip_tags(yaml("!reset {a: 1}")), Value::Null);
        assert_eq!(
            strip_tags(yaml("[!reset 1, !override 2, !x 3]")),
            yaml("[2, 3]")
        );
    }

    #[test]
    fn reset_paths_and_apply_resets() {
        let overlay = yaml(
            "services: {web: {environment: !reset {}, ports: [!reset {target: 1}], x: !override {a: !reset 1}}}",
        );
        let paths: Vec<String> = reset_paths(&overlay)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            paths,
            [
                "services.web.environment",
                "services.web.ports[0]",
                "services.web.x"
            ]
        );
        let mut base = yaml(
            "services: {web: {environment: {A: 1}, ports: {'0': kept-only-as-a-key}, x: 1, y: 2}}",
        );
        apply_resets(&mut base, &reset_paths(&overlay));
        assert_eq!(base, yaml("services: {web: {ports: {}, y: 2}}"));
        let mut scalar = yaml("1");
        apply_resets(&mut scalar, &reset_paths(&overlay));
        assert_eq!(scalar, yaml("1"));
    }

    // --- extends -----------------------------------------------------------

    #[test]
    fn extends_merges_onto_the_base_service() {
        // compose: command unset, db required false with service_started,
        // environment {B: 2, C: 3}, logging syslog {a: b, c: d}, ports [81],
        // volumes [./b:/a].
        check_service(
            "{image: a, environment: {A: '1', B: '2'}, command: [x, y], ports: [{target: 80, published: '80'}], depends_on: {db: {condition: service_healthy, required: false}}, logging: {driver: syslog, options: {a: b}}, volumes: [{type: bind, source: ./a, target: /a}]}",
            "{extends: base, environment: {A: !reset null, C: '3'}, command: !reset [], ports: !override [{target: 81, published: '81'}], depends_on: {db: {condition: service_started}}, logging: {options: {c: d}}, volumes: [{type: bind, source: ./b, target: /a}]}",
            "{image: a, environment: [B=2, C=3], ports: [{target: 81, published: '81'}], depends_on: {db: {condition: service_started, required: false}}, logging: {driver: syslog, options: {a: b, c: d}}, volumes: [{type: bind, source: ./b, target: /a}]}",
        );
        // compose: environment {A, B, Z}, labels {l: 1, m: 2}, image a.
        check_service(
            "{image: a, environment: [Z=1, A=1, B=2], labels: {l: '1'}}",
            "{extends: {service: base}, labels: [m=2]}",
            "{image: a, environment: [Z=1, A=1, B=2], labels: [l=1, m=2]}",
        );
    }

    #[test]
    fn extends_edge_cases() {
        assert_eq!(
            merge_service(Value::Null, yaml("{extends: base, image: !override a}")),
            yaml("{extends: base, image: a}")
        );
        assert_eq!(merge_service(yaml("{image: a}"), Value::Null), Value::Null);
        let err = try_merge_service("web", yaml("[1]"), yaml("{image: b}")).unwrap_err();
        assert_eq!(err.to_string(), "services.web: unexpected type sequence");
        assert_eq!(
            merge_service(yaml("[1]"), yaml("{image: b}")),
            yaml("{image: b}")
        );
        let err = try_merge_service("api", yaml("{deploy: {}}"), yaml("{deploy: 1}")).unwrap_err();
        assert_eq!(
            err,
            MergeError::CannotOverride(YamlPath::root().key("services").key("api").key("deploy"))
        );
    }

    // --- unicity -----------------------------------------------------------

    #[test]
    fn unicity_keeps_the_first_place_and_the_last_value() {
        unicity(
            "services: {web: {environment: [A=1, B=2, A=3, B], cap_add: [X, Y, X], profiles: [p, p]}}",
            "services: {web: {environment: [A=3, B], cap_add: [X, Y], profiles: [p]}}",
        );
    }

    #[test]
    fn unicity_of_short_syntax_entries() {
        // Strings are keyed the way compose keys them before canonicalization.
        unicity(
            "services: {web: {volumes: ['./a:/data', '/data', 'C:\\x:/w', 'vol:/data:ro', {type: volume, target: /w}], devices: ['/dev/a', '/dev/b:/dev/a', '/dev/c:/dev/d:r'], secrets: [s, {source: s}, {source: s, target: /run/secrets/s}], configs: [c, {source: c, target: /c}], env_file: [a.env, {path: a.env, required: false}], expose: [80, '80', '81'], ports: ['80:80', '80:80', 8080, '8080']}}",
            "services: {web: {volumes: ['vol:/data:ro', {type: volume, target: /w}], devices: ['/dev/b:/dev/a', '/dev/c:/dev/d:r'], secrets: [{source: s, target: /run/secrets/s}], configs: [{source: c, target: /c}], env_file: [{path: a.env, required: false}], expose: ['80', '81'], ports: ['80:80', '8080']}}",
        );
    }

    #[test]
    fn unicity_only_looks_at_known_paths() {
        unicity(
            "services: {web: {security_opt: [a, a], networks: {n: {aliases: [x, x], link_local_ips: ['1', '1']}}, build: {tags: [t, t], args: [A=1, A=2]}}}\nnetworks: {n: {labels: [a=1, a=2]}}\nx-list: [1, 1]",
            "services: {web: {security_opt: [a, a], networks: {n: {aliases: [x], link_local_ips: ['1']}}, build: {tags: [t], args: [A=2]}}}\nnetworks: {n: {labels: [a=2]}}\nx-list: [1, 1]",
        );
    }

    #[test]
    fn unicity_errors() {
        unicity_err(
            "services: {web: {ports: [{published: '80'}]}}",
            "service ports services.web.ports[0] is missing a target port",
        );
        unicity_err(
            "services: {web: {volumes: [{source: a}]}}",
            "service volume services.web.volumes[0] is missing a mount target",
        );
        unicity_err(
            "services: {web: {devices: [{source: a}]}}",
            "service device services.web.devices[0] is missing a mount target",
        );
        unicity_err(
            "services: {web: {env_file: [{required: true}]}}",
            "environment path attribute services.web.env_file[0] is missing",
        );
        unicity_err(
            "services: {web: {environment: [1]}}",
            "services.web.environment[0]: unexpected type number",
        );
        unicity_err(
            "services: {web: {expose: [1.5]}}",
            "services.web.expose[0]: unsupported value 1.5",
        );
        unicity_err(
            "services: {web: {volumes: ['ab::c']}}",
            "invalid spec: ab::c: empty section between colons",
        );
        unicity_err(
            "services: {web: {volumes: ['ab:bc:cd:de']}}",
            "invalid spec: ab:bc:cd:de: too many colons",
        );
    }

    // --- helpers -----------------------------------------------------------

    #[test]
    fn go_float_formatting() {
        let cases = [
            (1.0, "1"),
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (0.0, "0"),
            (100.0, "100"),
            (123456.0, "123456"),
            (1000000.0, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000123, "0.000123"),
            (1e21, "1e+21"),
            (1.5e-300, "1.5e-300"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (f, want) in cases {
            assert_eq!(go_float(f), want, "{f}");
        }
    }

    #[test]
    fn go_value_formatting() {
        assert_eq!(
            go_format(&yaml("[1, a, null, true]"), Verb::V),
            "[1 a <nil> true]"
        );
        assert_eq!(
            go_format(&yaml("{b: 1, a: [x]}"), Verb::V),
            "map[a:[x] b:1]"
        );
        assert_eq!(go_format(&yaml("8080"), Verb::S), "%!s(int=8080)");
        assert_eq!(go_format(&yaml("'80'"), Verb::D), "%!d(string=80)");
        assert_eq!(go_format(&Value::Null, Verb::S), "%!s(<nil>)");
    }

    #[test]
    fn volume_targets() {
        let cases = [
            ("/data", "/data"),
            ("ab", "ab"),
            ("./a:/data", "/data"),
            ("vol:/data:ro,z", "/data"),
            ("C:\\x:/w", "/w"),
            ("${HOME:-/h}:/home", "/home"),
            ("a:b", "a:b"),
        ];
        for (spec, want) in cases {
            assert_eq!(volume_target(spec), Ok(want.to_string()), "{spec}");
        }
        assert_eq!(volume_target(""), Err("invalid empty volume spec"));
    }

    #[test]
    fn path_patterns() {
        let path = YamlPath::root()
            .key("services")
            .key("web")
            .key("ulimits")
            .key("nofile");
        assert!(matches(&path.0, "services.*.ulimits.*"));
        assert!(!matches(&path.0, "services.*.ulimits"));
        assert!(!matches(&path.0, "services.*.ulimits.*.x"));
        assert_eq!(lookup(MERGE_RULES, &path.0), Some(MergeRule::Replace));
        let dotted = YamlPath::root().key("services").key("a.b").key("command");
        assert_eq!(lookup(MERGE_RULES, &dotted.0), Some(MergeRule::Replace));
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd = [
            "null",
            "1",
            "[1, 2]",
            "{services: 1}",
            "{services: {web: 1}}",
            "{services: {web: {build: 1, depends_on: 1, networks: 1, logging: 1, environment: 1, ports: 1, extra_hosts: 1}}}",
            "{services: {web: {build: {context: [x]}, depends_on: [1, {a: b}], networks: [[x]], ulimits: 1, logging: {driver: [1]}}}}",
            "{services: {web: {ports: [1.5, {target: x}, null], volumes: [1, null], secrets: [1, {target: 1}], configs: [{}], env_file: [1, {path: 1}], devices: [1], expose: [{}]}}}",
            "{networks: {n: {ipam: {config: [1, [a, 2], null, {subnet: [x]}]}}}}",
            "{networks: {n: {ipam: {config: 1}}}}",
            "!reset {}",
            "{1: 2, ~: 3, [a]: {b: c}}",
        ];
        for base in odd {
            for overlay in odd {
                let mut merged = merge_project(yaml(base), yaml(overlay));
                enforce_unicity(&mut merged);
                assert!(!has_tags(&merged));
                let _ = try_merge_project(yaml(base), yaml(overlay));
                let _ = merge_service(yaml(base), yaml(overlay));
                let _ = try_merge_service("web", yaml(base), yaml(overlay));
                let mut v = yaml(base);
                let _ = try_enforce_unicity(&mut v);
            }
        }
    }

    #[test]
    fn nil_maps_are_refused_where_compose_cannot_write() {
        check_err(
            "services: {web: {build: null}}",
            "services: {web: {build: {context: .}}}",
            "cannot override services.web.build",
        );
        check_err(
            "services: {web: {networks: 1}}",
            "services: {web: {networks: [a]}}",
            "cannot override services.web.networks",
        );
        check_err(
            "networks: {n: {ipam: {config: [1]}}}",
            "networks: {n: {ipam: {config: [{gateway: x}]}}}",
            "cannot override networks.n.ipam.config",
        );
        check_err(
            "services: {web: {depends_on: [1]}}",
            "services: {web: {depends_on: [a]}}",
            "services.web.depends_on: unexpected type number",
        );
        check_err("1", "{a: 1}", "cannot override the top level");
    }
}
