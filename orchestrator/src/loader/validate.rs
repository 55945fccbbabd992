//! The checks Compose makes across a loaded project: references between
//! services and resources, dependency cycles, conflicting settings.

use std::collections::{BTreeMap, BTreeSet};

use super::path::YamlPath;
use super::{Ctx, Diagnostic};
use crate::convert;
use crate::model::Project;

fn service_path(name: &str) -> YamlPath {
    YamlPath::root().key("services").key(name)
}

/// Reports every inconsistency of `project` into `ctx`.
pub(crate) fn validate(ctx: &mut Ctx<'_>, project: &mut Project) {
    let mut out = Vec::new();
    for s in project.services.values_mut() {
        // `scale` wins over `deploy.replicas` once they agree.
        if let (Some(scale), Some(d)) = (s.scale, s.deploy.as_mut()) {
            if d.replicas.is_none() {
                d.replicas = Some(scale);
            }
        }
    }
    let project = &*project;
    // Required of the merged model (an override file may give a part).
    for (name, model) in &project.models {
        if model.get("model").is_none() {
            out.push(Diagnostic::at(
                None,
                YamlPath::root().key("models").key(name),
                "missing property \"model\"",
            ));
        }
    }
    for (name, s) in &project.services {
        let at = service_path(name);
        if let Some(b) = &s.build {
            if !b.dockerfile.is_empty() && !b.dockerfile_inline.is_empty() {
                out.push(Diagnostic::at(None, at.key("build"), format!("service {name:?} declares mutually exclusive dockerfile and dockerfile_inline")));
            }
            for (i, r) in b.secrets.iter().enumerate() {
                if !project.secrets.contains_key(&r.source) {
                    out.push(Diagnostic::at(
                        None,
                        at.key("build").key("secrets").index(i),
                        format!(
                            "service {name:?} refers to undefined build secret {}",
                            r.source
                        ),
                    ));
                }
            }
            if !b.platforms.is_empty()
                && !s.platform.is_empty()
                && !b.platforms.0.contains(&s.platform)
            {
                out.push(Diagnostic::at(
                    None,
                    at.key("build").key("platforms"),
                    format!(
                        "build.platforms must include service.platform {:?}",
                        s.platform
                    ),
                ));
            }
        }
        if let Some(first) = s.healthcheck.as_ref().and_then(|h| h.test.first()) {
            if !matches!(first.as_str(), "CMD" | "CMD-SHELL" | "NONE") {
                out.push(Diagnostic::at(
                    None,
                    at.key("healthcheck").key("test"),
                    r#"healthcheck.test must start either by "CMD", "CMD-SHELL" or "NONE""#,
                ));
            }
        }
        if let Some(provider) = &s.provider {
            check_provider(provider, at.key("provider"), &mut out);
        }
        if let Some(target) = s.network_mode.strip_prefix("service:") {
            if !project.services.contains_key(target) {
                out.push(Diagnostic::at(
                    None,
                    at.key("network_mode"),
                    format!("service {target:?} not found for network_mode 'service:{target}'"),
                ));
            }
        }
        let replicas = s.scale.or(s.deploy.as_ref().and_then(|d| d.replicas));
        if replicas.is_some_and(|r| r < 0) {
            out.push(Diagnostic::at(
                None,
                at.key("scale"),
                "must be greater than or equal to 0",
            ));
        }
        if replicas.is_some_and(|r| r > 1) && !s.container_name.is_empty() {
            out.push(Diagnostic::at(
                None,
                at.key("container_name"),
                "can't set container_name and scale as container name must be unique",
            ));
        }
        let mut mounts: BTreeMap<String, String> = BTreeMap::new();
        for (i, t) in s.tmpfs.0.iter().enumerate() {
            let target = t.split(':').next().unwrap_or_default().to_string();
            let loc = format!("tmpfs[{i}]");
            if let Some(prev) = mounts.insert(target.clone(), loc) {
                out.push(Diagnostic::at(
                    None,
                    at.key("tmpfs").index(i),
                    format!("target {target} already mounted as {prev}"),
                ));
            }
        }
        for (i, v) in s.volumes.iter().enumerate() {
            if let Some(prev) = mounts.insert(v.target.clone(), format!("volumes[{i}]")) {
                out.push(Diagnostic::at(
                    None,
                    at.key("volumes").index(i),
                    format!("target {} already mounted as {prev}", v.target),
                ));
            }
        }
        for (dep, d) in &s.depends_on {
            let disabled = project.disabled_services.contains_key(dep);
            if !project.services.contains_key(dep) && (d.required || !disabled) {
                out.push(Diagnostic::at(
                    None,
                    at.key("depends_on").key(dep.clone()),
                    format!("service {name:?} depends on undefined service {dep:?}"),
                ));
            }
            if !matches!(
                d.condition.as_str(),
                "service_started" | "service_healthy" | "service_completed_successfully"
            ) {
                out.push(Diagnostic::at(
                    None,
                    at.key("depends_on").key(dep.clone()).key("condition"),
                    format!("invalid condition {:?}: must be one of service_started, service_healthy, service_completed_successfully", d.condition),
                ));
            }
        }
        for net in s.networks.keys() {
            if !project.networks.contains_key(net) {
                out.push(Diagnostic::at(
                    None,
                    at.key("networks").key(net.clone()),
                    format!("service {name:?} refers to undefined network {net}"),
                ));
            }
        }
        // Compose's consistency check: every action but rebuild and
        // restart copies files, and so needs a target.
        if let Some(develop) = &s.develop {
            for (i, w) in develop.watch.iter().enumerate() {
                if !matches!(w.action.as_str(), "rebuild" | "restart") && w.target.is_empty() {
                    out.push(Diagnostic::at(
                        None,
                        at.key("develop").key("watch").index(i),
                        "target is required for non-rebuild actions",
                    ));
                }
            }
        }
        if !s.network_mode.is_empty() && !s.networks.is_empty() {
            out.push(Diagnostic::at(
                None,
                at.key("network_mode"),
                "network_mode and networks cannot be combined",
            ));
        }
        for (i, v) in s.volumes.iter().enumerate() {
            if v.kind == "volume"
                && !v.source.is_empty()
                && !project.volumes.contains_key(&v.source)
            {
                out.push(Diagnostic::at(
                    None,
                    at.key("volumes").index(i),
                    format!("service {name:?} refers to undefined volume {}", v.source),
                ));
            }
            if v.target.is_empty() && v.kind != "npipe" {
                out.push(Diagnostic::at(
                    None,
                    at.key("volumes").index(i),
                    "target is required",
                ));
            }
        }
        for (i, r) in s.secrets.iter().enumerate() {
            if !project.secrets.contains_key(&r.source) {
                out.push(Diagnostic::at(
                    None,
                    at.key("secrets").index(i),
                    format!("service {name:?} refers to undefined secret {}", r.source),
                ));
            }
        }
        for (i, r) in s.configs.iter().enumerate() {
            if !project.configs.contains_key(&r.source) {
                out.push(Diagnostic::at(
                    None,
                    at.key("configs").index(i),
                    format!("service {name:?} refers to undefined config {}", r.source),
                ));
            }
        }
        if let (Some(a), Some(b)) = (
            s.mem_reservation,
            s.deploy
                .as_ref()
                .and_then(|d| d.resources.reservations.as_ref())
                .and_then(|r| r.memory),
        ) {
            if a != b {
                out.push(Diagnostic::at(None, at.key("mem_reservation"), "can't set distinct values on 'mem_reservation' and 'deploy.resources.reservations.memory'"));
            }
        }
        if let Some(limits) = s.deploy.as_ref().and_then(|d| d.resources.limits.as_ref()) {
            if let Some(a) = s.mem_limit.filter(|m| m.0 != 0) {
                if Some(a) != limits.memory {
                    out.push(Diagnostic::at(None, at.key("mem_limit"), "can't set distinct values on 'mem_limit' and 'deploy.resources.limits.memory'"));
                }
            }
            if let Some(a) = s.cpus {
                if Some(a) != limits.cpus {
                    out.push(Diagnostic::at(
                        None,
                        at.key("cpus"),
                        "can't set distinct values on 'cpus' and 'deploy.resources.limits.cpus'",
                    ));
                }
            }
            if s.pids_limit != 0 && s.pids_limit != limits.pids {
                out.push(Diagnostic::at(
                    None,
                    at.key("pids_limit"),
                    "can't set distinct values on 'pids_limit' and 'deploy.resources.limits.pids'",
                ));
            }
        }
        if let (Some(scale), Some(replicas)) = (s.scale, s.deploy.as_ref().and_then(|d| d.replicas))
        {
            if scale != replicas {
                out.push(Diagnostic::at(
                    None,
                    at.key("scale"),
                    "can't set distinct values on 'scale' and 'deploy.replicas'",
                ));
            }
        }
        if s.image.is_empty() && s.build.is_none() && s.provider.is_none() {
            out.push(Diagnostic::at(
                None,
                at.clone(),
                format!("service {name:?} has neither an image nor a build context specified"),
            ));
        }
        // A long-syntax protocol is taken as written, as Compose does.
        for (i, p) in s.ports.iter().enumerate() {
            if p.target == 0 || p.target > 65535 {
                out.push(Diagnostic::at(
                    None,
                    at.key("ports").index(i),
                    format!("invalid target port {}", p.target),
                ));
            }
        }
        // What the runtime needs typed is parsed here once, so that a bad
        // value is refused with its place rather than by the engine.
        for (i, p) in s.ports.iter().enumerate() {
            let at = at.key("ports").index(i);
            if convert::parse_protocol(&p.protocol).is_none() {
                out.push(Diagnostic::at(
                    None,
                    at.clone(),
                    format!("invalid protocol {:?}: tcp, udp or sctp", p.protocol),
                ));
            }
            if let Err(e) = convert::parse_host_port(&p.published) {
                out.push(Diagnostic::at(None, at, e));
            }
        }
        for (i, e) in s.expose.iter().enumerate() {
            if let Err(e) = convert::parse_exposed(e) {
                out.push(Diagnostic::at(None, at.key("expose").index(i), e));
            }
        }
        for (key, value) in [("ipc", &s.ipc), ("pid", &s.pid)] {
            if let Err(e) = convert::parse_namespace(value) {
                out.push(Diagnostic::at(None, at.key(key), e));
            }
        }
        if !s.restart.is_empty() {
            if let Err(e) = convert::parse_restart(&s.restart) {
                out.push(Diagnostic::at(None, at.key("restart"), e));
            }
        }
    }
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, s) in &project.services {
        if s.container_name.is_empty() {
            continue;
        }
        if let Some(other) = names.insert(&s.container_name, name) {
            out.push(Diagnostic::at(
                None,
                service_path(name).key("container_name"),
                format!(
                    "services.{other}: container name {:?} is already in use by service {name}",
                    s.container_name
                ),
            ));
        }
    }
    for (key, v) in &project.volumes {
        if v.external && (!v.driver.is_empty() || !v.driver_opts.is_empty() || !v.labels.is_empty())
        {
            let what = if !v.driver.is_empty() {
                "driver"
            } else if !v.driver_opts.is_empty() {
                "driver_opts"
            } else {
                "labels"
            };
            out.push(Diagnostic::at(
                None,
                YamlPath::root().key("volumes").key(key.clone()),
                format!(
                    "conflicting parameters \"external\" and {what:?} specified for volume {key:?}"
                ),
            ));
        }
    }
    for (name, secret) in &project.secrets {
        if !secret.external && secret.file.is_empty() && secret.environment.is_empty() {
            out.push(Diagnostic::at(
                None,
                YamlPath::root().key("secrets").key(name.clone()),
                format!("secret {name:?} must declare either `file` or `environment`"),
            ));
        }
    }
    if let Some(cycle) = find_cycle(project) {
        out.push(Diagnostic::at(
            None,
            service_path(&cycle[0]).key("depends_on"),
            format!("dependency cycle detected: {}", cycle.join(" -> ")),
        ));
    }
    ctx.diagnostics.extend(out);
}

/// A dependency cycle among services, as the list of names around it.
fn find_cycle(project: &Project) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        name: &str,
        project: &Project,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(name) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(name.to_string(), Mark::Visiting);
        stack.push(name.to_string());
        let deps: BTreeSet<&String> = project
            .services
            .get(name)
            .map(|s| s.depends_on.keys().collect())
            .unwrap_or_default();
        for dep in deps {
            if project.services.contains_key(dep) {
                if let Some(c) = visit(dep, project, marks, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        marks.insert(name.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for name in project.services.keys() {
        let mut stack = Vec::new();
        if let Some(c) = visit(name, project, &mut marks, &mut stack) {
            return Some(c);
        }
    }
    None
}

/// The values of one service that the reference's schema (and its checks
/// right after it) refuse: required keys of long-syntax items, values out
/// of an enumeration, `pull_policy` out of its pattern, a `host_ip` that is
/// no address.
fn value_faults(service: &serde_yaml::Value, at: &YamlPath, out: &mut Vec<(YamlPath, String)>) {
    use serde_yaml::Value;
    let missing = |key: &str| format!("missing property {key:?}");
    let items = |v: Option<&Value>| match v {
        Some(Value::Sequence(items)) => items.clone(),
        _ => Vec::new(),
    };
    // Items in long syntax (mappings) and the key each needs.
    let required: [(&[&str], &str); 5] = [
        (&["volumes"], "type"),
        (&["devices"], "source"),
        (
            &["deploy", "resources", "reservations", "devices"],
            "capabilities",
        ),
        (&["post_start"], "command"),
        (&["pre_stop"], "command"),
    ];
    for (path, key) in required {
        let list = path.iter().try_fold(service, |n, k| n.get(*k));
        for (i, item) in items(list).iter().enumerate() {
            if item.is_mapping() && item.get(key).is_none() {
                let here = path.iter().fold(at.clone(), |a, k| a.key(*k)).index(i);
                out.push((here, missing(key)));
            }
        }
    }
    let one_of = |value: Option<&Value>,
                  here: YamlPath,
                  allowed: &[&str],
                  out: &mut Vec<(YamlPath, String)>| {
        if let Some(Value::String(v)) = value {
            if !allowed.contains(&v.as_str()) {
                let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
                out.push((here, format!("{v:?} is not one of {}", allowed.join(", "))));
            }
        }
    };
    one_of(
        service.get("cgroup"),
        at.key("cgroup"),
        &["host", "private"],
        out,
    );
    one_of(service.get("gpus"), at.key("gpus"), &["all"], out);
    for config in ["update_config", "rollback_config"] {
        let order = service
            .get("deploy")
            .and_then(|d| d.get(config))
            .and_then(|c| c.get("order"));
        one_of(
            order,
            at.key("deploy").key(config).key("order"),
            &["start-first", "stop-first"],
            out,
        );
    }
    for (i, volume) in items(service.get("volumes")).iter().enumerate() {
        one_of(
            volume.get("type"),
            at.key("volumes").index(i).key("type"),
            &["bind", "volume", "tmpfs", "cluster", "npipe", "image"],
            out,
        );
    }
    for (i, port) in items(service.get("ports")).iter().enumerate() {
        if let Some(Value::String(ip)) = port.get("host_ip") {
            if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
                out.push((
                    at.key("ports").index(i).key("host_ip"),
                    format!("invalid ip address: {ip}"),
                ));
            }
        }
    }
    if let Some(Value::String(policy)) = service.get("pull_policy") {
        if !is_pull_policy(policy) {
            out.push((
                at.key("pull_policy"),
                format!("{policy:?} is not a pull policy (always, never, build, missing, refresh, daily, weekly, every_<duration>)"),
            ));
        }
    }
}

/// The schema's pattern of `pull_policy`, unanchored as it is written:
/// a policy's word, or `every_` and a duration, anywhere in the value.
fn is_pull_policy(policy: &str) -> bool {
    const WORDS: [&str; 8] = [
        "always",
        "never",
        "build",
        "if_not_present",
        "missing",
        "refresh",
        "daily",
        "weekly",
    ];
    WORDS.iter().any(|w| policy.contains(w))
        || policy.match_indices("every_").any(|(i, m)| {
            let after = &policy[i + m.len()..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            digits > 0 && after[digits..].starts_with(['w', 'd', 'h', 'm', 's'])
        })
}

/// Whether a container name passes the compose-spec's pattern,
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, which the schema does not anchor: some
/// letter or digit followed by a letter, digit, `_`, `.` or `-`. (The
/// engine refuses the rest of what it lets through.)
fn is_container_name(name: &str) -> bool {
    name.as_bytes().windows(2).any(|w| {
        w[0].is_ascii_alphanumeric() && (w[1].is_ascii_alphanumeric() || b"_.-".contains(&w[1]))
    })
}

/// The keys of the compose-spec's top level.
const TOP_LEVEL: [&str; 9] = [
    "version", "name", "include", "services", "networks", "volumes", "secrets", "configs", "models",
];

/// Keys of a service that the typed model shares between two places while
/// the compose-spec allows them in one only: (where, key).
const NOT_HERE: [(&[&str], &str); 3] = [
    (&["deploy", "resources", "limits"], "devices"),
    (&["deploy", "resources", "limits"], "generic_resources"),
    (&["deploy", "resources", "reservations"], "pids"),
];

/// What one file (interpolated) has that the compose-spec schema refuses
/// and the typed model cannot tell, as the reference checks each file: a
/// top-level key of no meaning (even empty), a key of a sibling object
/// (`pids` of a reservation, `content` of a secret, `driver` of a
/// config), a `container_name` that breaks its pattern (an empty one
/// included).
pub(crate) fn schema_faults(tree: &serde_yaml::Value) -> Vec<(YamlPath, String)> {
    use serde_yaml::Value;
    let mut out = Vec::new();
    let unknown = |key: &str| format!("additional property {key:?} is not allowed");
    if let Value::Mapping(top) = tree {
        for key in top.keys().filter_map(Value::as_str) {
            if !TOP_LEVEL.contains(&key) && !key.starts_with("x-") {
                out.push((YamlPath::root().key(key), unknown(key)));
            }
        }
    }
    // Services, volumes, secrets and configs are named by the schema's
    // `^[a-zA-Z0-9._-]+$` (networks by anything).
    for kind in ["services", "volumes", "secrets", "configs"] {
        if let Some(Value::Mapping(items)) = tree.get(kind) {
            for name in items.keys().filter_map(Value::as_str) {
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if !valid {
                    out.push((
                        YamlPath::root().key(kind).key(name),
                        format!(
                            "{name:?} is not a valid name: use letters, digits, '.', '_' and '-'"
                        ),
                    ));
                }
            }
        }
    }
    // A config comes from one of a file, a variable or its content.
    if let Some(Value::Mapping(configs)) = tree.get("configs") {
        for (name, config) in configs {
            let Some(name) = name.as_str() else { continue };
            let sources = ["file", "environment", "content"]
                .iter()
                .filter(|k| config.get(**k).is_some())
                .count();
            if sources > 1 {
                out.push((
                    YamlPath::root().key("configs").key(name),
                    "file|environment|content attributes are mutually exclusive".into(),
                ));
            }
        }
    }
    // Secrets may have no `content`; configs no `driver` or `driver_opts`.
    for (kind, refused) in [
        ("secrets", &["content"][..]),
        ("configs", &["driver", "driver_opts"]),
    ] {
        if let Some(Value::Mapping(items)) = tree.get(kind) {
            for (name, item) in items {
                let Some(name) = name.as_str() else { continue };
                for key in refused.iter().filter(|k| item.get(**k).is_some()) {
                    out.push((YamlPath::root().key(kind).key(name).key(*key), unknown(key)));
                }
            }
        }
    }
    // Objects the model keeps as written: their keys are checked here.
    fn only(node: &Value, at: YamlPath, known: &[&str], out: &mut Vec<(YamlPath, String)>) {
        if let Value::Mapping(m) = node {
            for key in m.keys().filter_map(Value::as_str) {
                if !known.contains(&key) && !key.starts_with("x-") {
                    out.push((
                        at.key(key),
                        format!("additional property {key:?} is not allowed"),
                    ));
                }
            }
        }
    }
    if let Some(Value::Mapping(models)) = tree.get("models") {
        for (name, model) in models {
            let Some(name) = name.as_str() else { continue };
            only(
                model,
                YamlPath::root().key("models").key(name),
                &["name", "model", "context_size", "runtime_flags"],
                &mut out,
            );
        }
    }
    let Some(Value::Mapping(services)) = tree.get("services") else {
        return out;
    };
    for (name, service) in services {
        let Some(name) = name.as_str() else { continue };
        let at = service_path(name);
        if let Some(spec) = service.get("credential_spec") {
            only(
                spec,
                at.key("credential_spec"),
                &["config", "file", "registry"],
                &mut out,
            );
        }
        if let Some(Value::Mapping(models)) = service.get("models") {
            for (model, uses) in models {
                let Some(model) = model.as_str() else {
                    continue;
                };
                only(
                    uses,
                    at.key("models").key(model),
                    &["endpoint_var", "model_var"],
                    &mut out,
                );
            }
        }
        if let Some(Value::Sequence(volumes)) = service.get("volumes") {
            for (i, volume) in volumes.iter().enumerate() {
                if let Some(image) = volume.get("image") {
                    only(
                        image,
                        at.key("volumes").index(i).key("image"),
                        &["subpath"],
                        &mut out,
                    );
                }
            }
        }
        value_faults(service, &at, &mut out);
        for (path, key) in NOT_HERE {
            let node = path.iter().try_fold(service, |n, k| n.get(*k));
            if node.and_then(|n| n.get(key)).is_some() {
                let at = path.iter().fold(service_path(name), |at, k| at.key(*k));
                out.push((at.key(key.to_string()), unknown(key)));
            }
        }
        if let Some(Value::String(c)) = service.get("container_name") {
            if !is_container_name(c) {
                out.push((
                    service_path(name).key("container_name"),
                    format!("{c:?} is not a valid container name: it needs a letter or digit followed by a letter, digit, '_', '.' or '-'"),
                ));
            }
        }
    }
    out
}

/// A provider as the compose-spec has it: a `type`, and `options` whose
/// values are strings (lists of them once loaded).
fn check_provider(provider: &serde_yaml::Value, at: YamlPath, out: &mut Vec<Diagnostic>) {
    use serde_yaml::Value;
    let Value::Mapping(m) = provider else {
        out.push(Diagnostic::at(None, at, "provider must be a mapping"));
        return;
    };
    for key in m.keys() {
        let key = key.as_str().unwrap_or_default();
        if !matches!(key, "type" | "options") {
            out.push(Diagnostic::at(
                None,
                at.key(key),
                format!("additional property {key:?} is not allowed"),
            ));
        }
    }
    match m.get("type") {
        Some(Value::String(_)) => {}
        Some(_) => out.push(Diagnostic::at(
            None,
            at.key("type"),
            "type must be a string",
        )),
        None => out.push(Diagnostic::at(
            None,
            at.clone(),
            "missing property \"type\"",
        )),
    }
    match m.get("options") {
        None => {}
        Some(Value::Mapping(options)) => {
            for (key, value) in options {
                let ok = matches!(value, Value::Sequence(items)
                    if items.iter().all(|i| matches!(i, Value::String(_))));
                if !ok {
                    let key = key.as_str().unwrap_or_default();
                    out.push(Diagnostic::at(
                        None,
                        at.key("options").key(key),
                        "must be a boolean, number or string, or a list of them",
                    ));
                }
            }
        }
        Some(_) => out.push(Diagnostic::at(
            None,
            at.key("options"),
            "options must be a mapping",
        )),
    }
}

/// Service lists whose items the compose-spec schema requires to be unique
/// (found by asking the reference, key by key: most lists may repeat items).
const UNIQUE_LISTS: [&[&str]; 10] = [
    &["device_cgroup_rules"],
    &["external_links"],
    &["group_add"],
    &["networks"],
    &["security_opt"],
    &["volumes_from"],
    &["depends_on"],
    &["extra_hosts"],
    &["build", "extra_hosts"],
    &["build", "ssh"],
];

/// Lists of one file whose items must be unique and are not, each reported at
/// its second item. This runs on each file as written (interpolated), as the
/// schema check of Compose does, before merging folds duplicates together.
pub(crate) fn unique_items(tree: &serde_yaml::Value) -> Vec<(YamlPath, String)> {
    use serde_yaml::Value;
    let mut out = Vec::new();
    let Some(Value::Mapping(services)) = tree.get("services") else {
        return out;
    };
    let mut check = |items: &[Value], at: YamlPath| {
        for (j, item) in items.iter().enumerate() {
            if let Some(i) = items[..j].iter().position(|earlier| earlier == item) {
                out.push((at.index(j), format!("items at {i} and {j} are equal")));
                break;
            }
        }
    };
    for (name, service) in services {
        let Some(name) = name.as_str() else { continue };
        let at = service_path(name);
        for path in UNIQUE_LISTS {
            let mut node = Some(service);
            let mut here = at.clone();
            for key in path {
                node = node.and_then(|n| n.get(*key));
                here = here.key(*key);
            }
            if let Some(Value::Sequence(items)) = node {
                check(items, here);
            }
        }
        // Each GPU reservation's capabilities.
        let devices = ["deploy", "resources", "reservations", "devices"]
            .iter()
            .try_fold(service, |n, k| n.get(*k));
        if let Some(Value::Sequence(devices)) = devices {
            for (d, device) in devices.iter().enumerate() {
                if let Some(Value::Sequence(caps)) = device.get("capabilities") {
                    let here = at
                        .key("deploy")
                        .key("resources")
                        .key("reservations")
                        .key("devices")
                        .index(d)
                        .key("capabilities");
                    check(caps, here);
                }
            }
        }
    }
    out
}
