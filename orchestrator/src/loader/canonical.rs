//! Short syntax to long syntax, on the generic tree of one file.
//!
//! Runs per file before merging, so that later files merge onto entries in one
//! spelling (a port written `"80:80"` in one file and as a mapping in the next
//! are the same port). Each rewrite mirrors one of Compose's canonical forms.

use serde_yaml::{Mapping, Value};

use super::path::YamlPath;

/// A short-syntax entry that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalError {
    /// Where the entry is.
    pub path: YamlPath,
    /// What is wrong with it.
    pub message: String,
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn map_of(entries: &[(&str, Value)]) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(s(k), v.clone());
    }
    Value::Mapping(m)
}

/// Applies `f` to the value inside `!reset`/`!override` tags, keeping the tag.
fn through_tag(v: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    match v {
        Value::Tagged(t) => through_tag(&mut t.value, f),
        other => f(other),
    }
}

/// Rewrites every short-syntax entry of a project tree into its long form,
/// collecting errors for entries that cannot be read.
pub fn canonicalize(root: &mut Value, errors: &mut Vec<CanonicalError>) {
    let Value::Mapping(top) = root else { return };
    if let Some(services) = top.get_mut("services") {
        through_tag(services, &mut |services| {
            if let Value::Mapping(services) = services {
                for (name, service) in services.iter_mut() {
                    let name = name.as_str().unwrap_or_default().to_string();
                    let path = YamlPath::root().key("services").key(name);
                    through_tag(service, &mut |svc| canonical_service(svc, &path, errors));
                }
            }
        });
    }
    for kind in ["volumes", "networks", "secrets", "configs"] {
        if let Some(Value::Mapping(resources)) = top.get_mut(kind) {
            for (name, resource) in resources.iter_mut() {
                let path = YamlPath::root()
                    .key(kind)
                    .key(name.as_str().unwrap_or_default());
                canonical_external(resource, &path, errors);
            }
        }
    }
    if let Some(Value::Sequence(includes)) = top.get_mut("include") {
        for inc in includes.iter_mut() {
            if let Value::String(p) = inc {
                *inc = map_of(&[("path", s(p))]);
            }
        }
    }
}

/// `external: {name: x}` (deprecated) becomes `external: true` plus `name: x`.
fn canonical_external(resource: &mut Value, path: &YamlPath, errors: &mut Vec<CanonicalError>) {
    let Value::Mapping(m) = resource else { return };
    let Some(Value::Mapping(ext)) = m.get("external") else {
        return;
    };
    let ext_name = ext.get("name").cloned();
    m.insert(s("external"), Value::Bool(true));
    if let Some(ext_name) = ext_name {
        match m.get("name") {
            Some(name) if *name != ext_name => errors.push(CanonicalError {
                path: path.clone(),
                message: "name and external.name conflict; only use name".into(),
            }),
            Some(_) => {}
            None => {
                m.insert(s("name"), ext_name);
            }
        }
    }
}

fn canonical_service(service: &mut Value, path: &YamlPath, errors: &mut Vec<CanonicalError>) {
    let Value::Mapping(svc) = service else { return };
    for (key, value) in svc.iter_mut() {
        let Some(key) = key.as_str() else { continue };
        let path = path.key(key);
        through_tag(value, &mut |value| match key {
            "build" => canonical_build(value),
            "depends_on" => {
                if let Value::Mapping(deps) = value {
                    for (dep, d) in deps.iter() {
                        let at = path.key(dep.as_str().unwrap_or_default());
                        match d {
                            Value::Mapping(d) if !d.contains_key("condition") => {
                                errors.push(CanonicalError {
                                    path: at,
                                    message: "missing property 'condition'".into(),
                                })
                            }
                            Value::Mapping(_) => {}
                            _ => errors.push(CanonicalError {
                                path: at,
                                message: "must be a mapping".into(),
                            }),
                        }
                    }
                }
                canonical_depends_on(value)
            }
            "env_file" => canonical_env_file(value),
            "label_file" | "dns" => string_to_list(value),
            "extends" => {
                if let Value::String(name) = value {
                    *value = map_of(&[("service", s(name))]);
                }
            }
            "networks" | "models" => list_to_null_map(value),
            "volumes" => each_item(value, |i, item| {
                canonical_volume(item, &path.index(i), errors)
            }),
            "devices" => each_item(value, |i, item| {
                canonical_device(item, &path.index(i), errors)
            }),
            "secrets" | "configs" => each_item(value, |_, item| {
                if let Value::String(src) = item {
                    *item = map_of(&[("source", s(src))]);
                }
            }),
            "ports" => canonical_ports(value, &path, errors),
            "gpus" => {
                if let Value::String(_) = value {
                    *value = Value::Sequence(vec![map_of(&[("count", s("all"))])]);
                }
            }
            _ => {}
        });
    }
    // The schema wants deploy memory amounts as strings.
    for kind in ["limits", "reservations"] {
        let memory = svc
            .get("deploy")
            .and_then(|d| d.get("resources"))
            .and_then(|r| r.get(kind))
            .and_then(|l| l.get("memory"));
        if matches!(memory, Some(Value::Number(_))) {
            errors.push(CanonicalError {
                path: path.key("deploy").key("resources").key(kind).key("memory"),
                message: "must be a string".into(),
            });
        }
    }
    // `dns: ""` and empty items are dropped, as Compose does.
    if let Some(Value::Sequence(dns)) = svc.get_mut("dns") {
        dns.retain(|d| !matches!(d, Value::Null) && d.as_str() != Some(""));
    }
}

fn each_item(value: &mut Value, mut f: impl FnMut(usize, &mut Value)) {
    if let Value::Sequence(items) = value {
        for (i, item) in items.iter_mut().enumerate() {
            f(i, item);
        }
    }
}

fn string_to_list(value: &mut Value) {
    if let Value::String(v) = value {
        *value = Value::Sequence(vec![s(v)]);
    }
}

fn list_to_null_map(value: &mut Value) {
    if let Value::Sequence(items) = value {
        let mut m = Mapping::new();
        for item in items.iter() {
            m.insert(item.clone(), Value::Null);
        }
        *value = Value::Mapping(m);
    }
}

fn canonical_build(value: &mut Value) {
    if let Value::String(ctx) = value {
        *value = map_of(&[("context", s(ctx))]);
    }
    if let Value::Mapping(b) = value {
        if let Some(Value::Sequence(items)) = b.get("additional_contexts") {
            let mut m = Mapping::new();
            for item in items {
                if let Some((k, v)) = item.as_str().and_then(|i| i.split_once('=')) {
                    m.insert(s(k), s(v));
                }
            }
            b.insert(s("additional_contexts"), Value::Mapping(m));
        }
        for key in ["provenance", "sbom"] {
            if let Some(v) = b.get_mut(key) {
                if let Value::Bool(x) = v {
                    *v = s(&x.to_string());
                }
            }
        }
        if let Some(Value::Sequence(items)) = b.get_mut("secrets") {
            for item in items.iter_mut() {
                if let Value::String(src) = item {
                    *item = map_of(&[("source", s(src))]);
                }
            }
        }
    }
}

/// Only the list form is rewritten here: defaults of the mapping form are
/// filled after merging, so a later file does not override what it left out.
fn canonical_depends_on(value: &mut Value) {
    if let Value::Sequence(items) = value {
        let mut m = Mapping::new();
        for item in items.iter() {
            m.insert(
                item.clone(),
                map_of(&[
                    ("condition", s("service_started")),
                    ("required", Value::Bool(true)),
                ]),
            );
        }
        *value = Value::Mapping(m);
    }
}

fn canonical_env_file(value: &mut Value) {
    if let Value::String(p) = value {
        *value = Value::Sequence(vec![s(p)]);
    }
    each_item(value, |_, item| match item {
        Value::String(p) => *item = map_of(&[("path", s(p)), ("required", Value::Bool(true))]),
        Value::Mapping(m) if !m.contains_key("required") => {
            m.insert(s("required"), Value::Bool(true));
        }
        _ => {}
    });
}

fn canonical_device(item: &mut Value, path: &YamlPath, errors: &mut Vec<CanonicalError>) {
    let Value::String(spec) = item else { return };
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, perms) = match parts.as_slice() {
        [src] => (*src, *src, "rwm"),
        [src, dst] => (*src, *dst, "rwm"),
        [src, dst, perms] => (*src, *dst, *perms),
        _ => {
            errors.push(CanonicalError {
                path: path.clone(),
                message: format!("confusing device mapping, please use long syntax: {spec}"),
            });
            return;
        }
    };
    let dst = if dst.is_empty() { src } else { dst };
    *item = map_of(&[
        ("source", s(src)),
        ("target", s(dst)),
        ("permissions", s(perms)),
    ]);
}

/// Reads a short volume spec `[source:]target[:options]`.
fn canonical_volume(item: &mut Value, path: &YamlPath, errors: &mut Vec<CanonicalError>) {
    let Value::String(spec) = item else { return };
    match parse_volume(spec) {
        Ok(v) => *item = v,
        Err(message) => errors.push(CanonicalError {
            path: path.clone(),
            message,
        }),
    }
}

/// Parses the short volume syntax into the long form.
pub fn parse_volume(spec: &str) -> Result<Value, String> {
    if spec.is_empty() {
        return Err("invalid empty volume spec".into());
    }
    let mut source = String::new();
    let target;
    let mut options: Option<String> = None;
    if spec.chars().count() <= 2 {
        target = spec.to_string();
    } else {
        // Split on colons outside `${...}` and after a Windows drive letter.
        let mut fields: Vec<String> = Vec::new();
        let mut buf = String::new();
        let mut depth = 0usize;
        let chars: Vec<char> = spec.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '$' && chars.get(i + 1) == Some(&'{') {
                depth += 1;
                buf.push(c);
            } else if c == '}' && depth > 0 {
                depth -= 1;
                buf.push(c);
            } else if c == ':' && buf.chars().count() == 1 && buf.chars().all(char::is_alphabetic) {
                buf.push(c);
            } else if c == ':' && depth == 0 {
                fields.push(std::mem::take(&mut buf));
            } else {
                buf.push(c);
            }
            i += 1;
        }
        fields.push(buf);
        if fields.iter().any(String::is_empty) {
            return Err(format!(
                "invalid spec: {spec}: empty section between colons"
            ));
        }
        match fields.len() {
            1 => target = fields.remove(0),
            2 => {
                source = fields.remove(0);
                target = fields.remove(0);
            }
            3 => {
                source = fields.remove(0);
                target = fields.remove(0);
                options = Some(fields.remove(0));
            }
            _ => return Err(format!("invalid spec: {spec}: too many colons")),
        }
    }
    let is_path = is_file_path(&source);
    let mut read_only = false;
    let mut nocopy = false;
    let mut selinux = None;
    let mut propagation = None;
    for opt in options.iter().flat_map(|o| o.split(',')) {
        match opt {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "nocopy" => nocopy = true,
            "z" | "Z" => selinux = Some(opt),
            "rprivate" | "private" | "rshared" | "shared" | "rslave" | "slave" => {
                propagation = Some(opt)
            }
            _ => {}
        }
    }
    let mut m = Mapping::new();
    m.insert(s("type"), s(if is_path { "bind" } else { "volume" }));
    if !source.is_empty() {
        m.insert(s("source"), s(&source));
    }
    m.insert(s("target"), s(&clean_path(&target)));
    if read_only {
        m.insert(s("read_only"), Value::Bool(true));
    }
    let mut bind = Mapping::new();
    if let Some(z) = selinux {
        bind.insert(s("selinux"), s(z));
    }
    if let Some(p) = propagation {
        bind.insert(s("propagation"), s(p));
    }
    if is_path {
        bind.insert(s("create_host_path"), Value::Bool(true));
        m.insert(s("bind"), Value::Mapping(bind));
        if nocopy {
            let mut vol = Mapping::new();
            vol.insert(s("nocopy"), Value::Bool(true));
            m.insert(s("volume"), Value::Mapping(vol));
        }
    } else {
        let mut vol = Mapping::new();
        if nocopy {
            vol.insert(s("nocopy"), Value::Bool(true));
        }
        if !bind.is_empty() {
            m.insert(s("bind"), Value::Mapping(bind));
        }
        m.insert(s("volume"), Value::Mapping(vol));
    }
    Ok(Value::Mapping(m))
}

fn is_file_path(source: &str) -> bool {
    if source.starts_with(['.', '/', '~']) || source.starts_with("\\\\") {
        return true;
    }
    let mut chars = source.chars();
    matches!((chars.next(), chars.next()), (Some(d), Some(':')) if d.is_alphabetic())
}

/// Lexically cleans a slash-separated path as Go's `path.Clean` does (the
/// build context's rules use the same).
pub use runtime_shim::context::clean_path;

fn canonical_ports(value: &mut Value, path: &YamlPath, errors: &mut Vec<CanonicalError>) {
    let Value::Sequence(items) = value else {
        return;
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let spec = match item {
            Value::Number(n) => n.to_string(),
            Value::String(v) => v.clone(),
            other => {
                out.push(other.clone());
                continue;
            }
        };
        match parse_port(&spec) {
            Ok(ports) => out.extend(ports),
            Err(message) => {
                errors.push(CanonicalError {
                    path: path.index(i),
                    message,
                });
                out.push(item.clone());
            }
        }
    }
    *items = out;
}

/// Parses Docker's short port syntax `[[ip:]published[-range]:]target[-range][/proto]`
/// into long-form entries, one per container port.
pub fn parse_port(spec: &str) -> Result<Vec<Value>, String> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((rest, proto)) => (rest, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let parts: Vec<&str> = rest.split(':').collect();
    let n = parts.len();
    let container = parts[n - 1];
    let (ip, host) = match n {
        1 => (String::new(), ""),
        2 => (String::new(), parts[0]),
        3 => (parts[0].to_string(), parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2]),
    };
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .map(str::to_string)
        .unwrap_or(ip);
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("invalid IP address: {ip}"));
    }
    if container.is_empty() {
        return Err(format!("no port specified: {spec}<empty>"));
    }
    let (c_start, c_end) =
        parse_range(container).ok_or_else(|| format!("invalid containerPort: {container}"))?;
    let host_range = if host.is_empty() {
        None
    } else {
        Some(parse_range(host).ok_or_else(|| format!("invalid hostPort: {host}"))?)
    };
    if let Some((h_start, h_end)) = host_range {
        if h_end - h_start != c_end - c_start && c_end != c_start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {container} and {host}"
            ));
        }
    }
    // Docker keys its port map by "port/proto" strings, which sort as strings.
    let mut ports: Vec<u32> = (c_start..=c_end).collect();
    ports.sort_by_key(|p| p.to_string());
    let mut out = Vec::with_capacity(ports.len());
    for port in ports {
        let published = match host_range {
            None => String::new(),
            Some((h_start, h_end)) if c_start == c_end && h_start != h_end => {
                format!("{h_start}-{h_end}")
            }
            Some((h_start, _)) => (h_start + (port - c_start)).to_string(),
        };
        let mut m = Mapping::new();
        m.insert(s("mode"), s("ingress"));
        if !ip.is_empty() {
            m.insert(s("host_ip"), s(&ip));
        }
        m.insert(s("target"), Value::Number(port.into()));
        if !published.is_empty() {
            m.insert(s("published"), s(&published));
        }
        m.insert(s("protocol"), s(&proto));
        out.push(Value::Mapping(m));
    }
    Ok(out)
}

fn parse_range(r: &str) -> Option<(u32, u32)> {
    let parse = |p: &str| p.parse::<u32>().ok().filter(|p| *p <= 65535);
    match r.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            (a <= b).then_some((a, b))
        }
        None => parse(r).map(|p| (p, p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(src: &str) -> Value {
        serde_yaml::from_str(src).unwrap_or(Value::Null)
    }

    fn check_ports(spec: &str, expected: &str) {
        let got = parse_port(spec).map(Value::Sequence);
        assert_eq!(got, Ok(yaml(expected)), "{spec}");
    }

    #[test]
    fn short_ports() {
        check_ports("80", "[{mode: ingress, target: 80, protocol: tcp}]");
        check_ports(
            "8080:80",
            "[{mode: ingress, target: 80, published: '8080', protocol: tcp}]",
        );
        check_ports(
            "127.0.0.1:8080-8081:80-81/udp",
            "[{mode: ingress, host_ip: 127.0.0.1, target: 80, published: '8080', protocol: udp},
              {mode: ingress, host_ip: 127.0.0.1, target: 81, published: '8081', protocol: udp}]",
        );
        check_ports(
            "[::1]:7000:7000",
            "[{mode: ingress, host_ip: '::1', target: 7000, published: '7000', protocol: tcp}]",
        );
        check_ports(
            "8000-8010:80",
            "[{mode: ingress, target: 80, published: 8000-8010, protocol: tcp}]",
        );
        for bad in [
            "x",
            "80:y",
            "1.2.3:80:80",
            "80/xyz",
            "81-80",
            "70000",
            "8000-8001:80-82",
        ] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    fn check_volume(spec: &str, expected: &str) {
        assert_eq!(parse_volume(spec), Ok(yaml(expected)), "{spec}");
    }

    #[test]
    fn short_volumes() {
        check_volume("/data", "{type: volume, target: /data, volume: {}}");
        check_volume(
            "data:/data:ro,nocopy",
            "{type: volume, source: data, target: /data, read_only: true, volume: {nocopy: true}}",
        );
        check_volume(
            "./src:/src:rw,z",
            "{type: bind, source: ./src, target: /src, bind: {selinux: z, create_host_path: true}}",
        );
        check_volume(
            "/etc/pihole/:/etc/pihole/",
            "{type: bind, source: /etc/pihole/, target: /etc/pihole, bind: {create_host_path: true}}",
        );
        assert!(parse_volume("/a:/b:ro:extra").is_err());
        assert!(parse_volume("/a::/b").is_err());
        assert!(parse_volume("").is_err());
    }
}
