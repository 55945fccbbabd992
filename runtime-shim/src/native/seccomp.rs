//! The seccomp filter of native containers.
//!
//! rcompose's default profile denies (with `EPERM`) the system calls that
//! Docker's documentation lists as blocked by Docker's default profile,
//! and lets a container that holds the capability a call needs make it,
//! as Docker's does: kernel keyrings (`keyctl`, `add_key`,
//! `request_key`), modules, `mount` and the new mount API, `unshare`,
//! `setns` and `clone` with namespace flags, `reboot`, the clock, swap,
//! `bpf`, `perf_event_open`, NUMA policy, `ptrace`'s neighbours
//! (`process_vm_*`, `kcmp`), `userfaultfd`, `io_uring`, and the obsolete
//! ones. `clone3` answers `ENOSYS`, so that the C library falls back to
//! `clone`, whose flags a filter can see.
//!
//! `security_opt: [seccomp=unconfined]` (and `privileged`) run without a
//! filter; `seccomp=FILE` loads a profile in Docker's format (rules whose
//! `includes`/`excludes` name capabilities are kept or dropped by the
//! container's capabilities; architectures are the host's).

use std::collections::HashSet;

use oci_spec::runtime::Capability;
use serde_json::{json, Value};

use crate::{ContainerSpec, Result, RuntimeError};

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Denied calls, and the capability that allows them (`None`: always
/// denied).
const DENIED: &[(&[&str], Option<Capability>)] = &[
    (&["add_key", "keyctl", "request_key"], None),
    (
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
        ],
        Some(Capability::SysAdmin),
    ),
    (
        &["init_module", "finit_module", "delete_module"],
        Some(Capability::SysModule),
    ),
    (
        &[
            "create_module",
            "get_kernel_syms",
            "query_module",
            "nfsservctl",
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "vm86",
            "vm86old",
        ],
        None,
    ),
    (
        &["kexec_load", "kexec_file_load", "reboot"],
        Some(Capability::SysBoot),
    ),
    (
        &["settimeofday", "stime", "clock_settime", "clock_adjtime"],
        Some(Capability::SysTime),
    ),
    (&["acct"], Some(Capability::SysPacct)),
    (&["swapon", "swapoff"], Some(Capability::SysAdmin)),
    (&["iopl", "ioperm"], Some(Capability::SysRawio)),
    (
        &["get_mempolicy", "set_mempolicy", "mbind", "move_pages"],
        Some(Capability::SysNice),
    ),
    (
        &[
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "userfaultfd",
        ],
        Some(Capability::SysPtrace),
    ),
    (&["bpf"], Some(Capability::SysAdmin)),
    (&["perf_event_open"], Some(Capability::SysAdmin)),
    (
        &["name_to_handle_at", "open_by_handle_at"],
        Some(Capability::DacReadSearch),
    ),
    (&["syslog"], Some(Capability::Syslog)),
    (&["vhangup"], Some(Capability::SysTtyConfig)),
    (
        &["io_uring_setup", "io_uring_enter", "io_uring_register"],
        None,
    ),
];

/// The namespace flags of `clone` that need `CAP_SYS_ADMIN`.
const CLONE_NAMESPACES: [u64; 7] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

fn architectures() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => vec![],
    }
}

/// rcompose's default profile for a container with these capabilities.
pub fn default_profile(caps: &HashSet<Capability>) -> Value {
    let mut rules = Vec::new();
    let mut denied: Vec<&str> = Vec::new();
    for (names, cap) in DENIED {
        if cap.is_none_or(|c| !caps.contains(&c)) {
            denied.extend(names.iter());
        }
    }
    rules.push(json!({"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}));
    if !caps.contains(&Capability::SysAdmin) {
        // clone with a namespace flag: one rule per flag (rules of one
        // call are alternatives).
        for flag in CLONE_NAMESPACES {
            rules.push(json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }));
        }
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures(),
        "syscalls": rules,
    })
}

/// A profile in Docker's format, made an OCI runtime spec's `seccomp`.
pub fn from_file(text: &str, caps: &HashSet<Capability>) -> std::result::Result<Value, String> {
    let profile: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let default = profile
        .get("defaultAction")
        .and_then(|a| a.as_str())
        .ok_or("it has no defaultAction")?;
    let cap_names = |v: Option<&Value>| -> Vec<String> {
        v.and_then(|v| v.get("caps"))
            .and_then(|c| serde_json::from_value::<Vec<String>>(c.clone()).ok())
            .unwrap_or_default()
    };
    let has = |name: &str| {
        super::bundle::capability(name)
            .map(|c| caps.contains(&c))
            .unwrap_or(false)
    };
    let mut rules = Vec::new();
    for rule in profile
        .get("syscalls")
        .and_then(|s| s.as_array())
        .cloned()
        .unwrap_or_default()
    {
        if !cap_names(rule.get("includes")).iter().all(|c| has(c)) {
            continue;
        }
        if cap_names(rule.get("excludes")).iter().any(|c| has(c)) {
            continue;
        }
        let mut r = serde_json::Map::new();
        for key in ["names", "action", "errnoRet", "args"] {
            if let Some(v) = rule.get(key) {
                r.insert(key.to_string(), v.clone());
            }
        }
        if let Some(name) = rule.get("name") {
            r.insert("names".into(), json!([name]));
        }
        rules.push(Value::Object(r));
    }
    let mut out = json!({
        "defaultAction": default,
        "architectures": architectures(),
        "syscalls": rules,
    });
    if let Some(errno) = profile.get("defaultErrnoRet") {
        out["defaultErrnoRet"] = errno.clone();
    }
    Ok(out)
}

/// The filter of a container: `None` for none at all.
pub fn for_container(spec: &ContainerSpec, caps: &HashSet<Capability>) -> Result<Option<Value>> {
    if spec.privileged {
        return Ok(None);
    }
    for opt in &spec.security_opt {
        let Some(value) = opt
            .strip_prefix("seccomp=")
            .or_else(|| opt.strip_prefix("seccomp:"))
        else {
            continue;
        };
        if value == "unconfined" {
            return Ok(None);
        }
        let text = std::fs::read_to_string(value).map_err(|e| {
            RuntimeError::Engine(format!(
                "container {}: opening seccomp profile ({value}) failed: {e}",
                spec.name
            ))
        })?;
        return from_file(&text, caps).map(Some).map_err(|e| {
            RuntimeError::Engine(format!(
                "container {}: decoding seccomp profile ({value}) failed: {e}",
                spec.name
            ))
        });
    }
    Ok(Some(default_profile(caps)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(profile: &Value) -> Vec<String> {
        profile["syscalls"][0]["names"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn capabilities_open_what_they_allow() {
        let none = default_profile(&HashSet::new());
        let d = denied(&none);
        assert!(d.contains(&"keyctl".to_string()) && d.contains(&"mount".to_string()));
        let admin = default_profile(&HashSet::from([Capability::SysAdmin]));
        let d = denied(&admin);
        assert!(d.contains(&"keyctl".to_string()));
        assert!(!d.contains(&"mount".to_string()) && !d.contains(&"unshare".to_string()));
        // Without SYS_ADMIN, clone's namespace flags are filtered.
        assert_eq!(none["syscalls"].as_array().map(Vec::len), Some(9));
        assert_eq!(admin["syscalls"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn a_docker_profile_is_read_with_its_capability_conditions() {
        let text = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
            {"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
            {"names":["chown"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_CHOWN"]}}]}"#;
        let p = from_file(text, &HashSet::from([Capability::Chown])).unwrap_or_default();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["syscalls"].as_array().map(Vec::len), Some(1));
        assert!(from_file("{}", &HashSet::new()).is_err());
    }
}
