//! OCI bundles for the native runtime: a container's root filesystem (the
//! image's unpacked layers as overlayfs lower directories, with an upper
//! and a work directory of its own) and its `config.json`, the OCI runtime
//! spec, made from the typed container spec and the image's configuration
//! with Docker's defaults: its capability set, its masked and read-only
//! paths, its mounts of /proc, /dev, /sys and the rest.
//!
//! ```text
//! <container dir>/
//!   config.json     the runtime spec
//!   rootfs/         the overlay mount, the container's /
//!   upper/, work/   overlayfs's upper and work directories (what `diff`
//!                   will read)
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

use super::store::{failed, Store, StoredImage};
use crate::{ContainerSpec, Result, RuntimeError};

/// The capabilities Docker gives a container that asks for none.
pub const DOCKER_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Paths Docker hides from a container (a null device or an empty
/// read-only tmpfs over them).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only in a container.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The `PATH` Docker gives a container whose image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn bad(what: impl std::fmt::Display) -> impl FnOnce(oci_spec::OciSpecError) -> RuntimeError {
    move |e| RuntimeError::Engine(format!("{what}: {e}"))
}

/// A capability from its compose spelling (`SYS_ADMIN` or `CAP_SYS_ADMIN`).
pub fn capability(name: &str) -> Result<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    serde_json::from_value(serde_json::Value::String(full.clone()))
        .map_err(|_| RuntimeError::Engine(format!("unknown capability {name:?}")))
}

/// Every capability the kernel knows, for `privileged` and `cap_add: ALL`.
fn all_capabilities() -> Vec<Capability> {
    let mut out = Vec::new();
    for name in [
        "AUDIT_CONTROL",
        "AUDIT_READ",
        "AUDIT_WRITE",
        "BLOCK_SUSPEND",
        "BPF",
        "CHECKPOINT_RESTORE",
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "IPC_LOCK",
        "IPC_OWNER",
        "KILL",
        "LEASE",
        "LINUX_IMMUTABLE",
        "MAC_ADMIN",
        "MAC_OVERRIDE",
        "MKNOD",
        "NET_ADMIN",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_RAW",
        "PERFMON",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYSLOG",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_CHROOT",
        "SYS_MODULE",
        "SYS_NICE",
        "SYS_PACCT",
        "SYS_PTRACE",
        "SYS_RAWIO",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "WAKE_ALARM",
    ] {
        if let Ok(c) = capability(name) {
            out.push(c);
        }
    }
    out
}

/// The container's capability set: Docker's defaults, with `cap_add` and
/// `cap_drop` applied (`ALL` in either), or all of them when privileged.
pub fn capabilities(spec: &ContainerSpec) -> Result<Vec<Capability>> {
    if spec.privileged {
        return Ok(all_capabilities());
    }
    let is_all = |n: &String| n.eq_ignore_ascii_case("ALL") || n.eq_ignore_ascii_case("CAP_ALL");
    let mut set: Vec<Capability> = if spec.cap_drop.iter().any(is_all) {
        vec![]
    } else {
        DOCKER_CAPABILITIES.to_vec()
    };
    for name in spec.cap_drop.iter().filter(|n| !is_all(n)) {
        let c = capability(name)?;
        set.retain(|x| *x != c);
    }
    if spec.cap_add.iter().any(is_all) {
        return Ok(all_capabilities());
    }
    for name in &spec.cap_add {
        let c = capability(name)?;
        if !set.contains(&c) {
            set.push(c);
        }
    }
    Ok(set)
}

/// A user and group from `user` (`name`, `uid`, `name:group`, `uid:gid`),
/// names looked up in the root filesystem's /etc/passwd and /etc/group,
/// as Docker does; with the user's home directory.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, String)> {
    let read = |file: &str| fs::read_to_string(rootfs.join(file)).unwrap_or_default();
    let passwd = read("etc/passwd");
    let group = read("etc/group");
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = |name_or_id: &str| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6 && (f[0] == name_or_id || f[2] == name_or_id)).then(|| {
                (
                    f[2].parse::<u32>().unwrap_or(0),
                    f[3].parse::<u32>().unwrap_or(0),
                    f[5].to_string(),
                )
            })
        })
    };
    let (uid, mut gid, home) = if u.is_empty() {
        entry("0").unwrap_or((0, 0, "/root".to_string()))
    } else if let Some(found) = entry(u) {
        found
    } else if let Ok(uid) = u.parse::<u32>() {
        (uid, 0, "/".to_string())
    } else {
        return Err(RuntimeError::Engine(format!(
            "unable to find user {u}: no matching entries in passwd file"
        )));
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(id) => id,
            Err(_) => group
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 3 && f[0] == g)
                        .then(|| f[2].parse::<u32>().ok())
                        .flatten()
                })
                .ok_or_else(|| {
                    RuntimeError::Engine(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        };
    }
    Ok((uid, gid, home))
}

/// What the image's configuration says (`config` of the config blob).
fn image_config<'a>(image: &'a StoredImage, key: &str) -> Option<&'a serde_json::Value> {
    image
        .config
        .get("config")
        .and_then(|c| c.get(key))
        .filter(|v| !v.is_null())
}

fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    v.and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
        .unwrap_or_default()
}

/// The process's arguments: the entrypoint and command, from the spec
/// where it gives them and from the image otherwise (a new entrypoint
/// drops the image's command, as Docker does).
pub fn arguments(spec: &ContainerSpec, image: &StoredImage) -> Result<Vec<String>> {
    let entrypoint = match &spec.entrypoint {
        Some(e) => e.clone(),
        None => strings(image_config(image, "Entrypoint")),
    };
    let command = match (&spec.command, &spec.entrypoint) {
        (Some(c), _) => c.clone(),
        (None, Some(_)) => vec![],
        (None, None) => strings(image_config(image, "Cmd")),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(command).collect();
    if args.is_empty() {
        return Err(RuntimeError::Engine(format!(
            "container {}: no command specified",
            spec.name
        )));
    }
    Ok(args)
}

/// The environment: the image's, then the spec's over it (by name), with a
/// `PATH`, `HOSTNAME` and `HOME` when none is given.
pub fn environment(
    spec: &ContainerSpec,
    image: &StoredImage,
    hostname: &str,
    home: &str,
) -> Vec<String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut put = |env: &mut BTreeMap<String, String>, kv: &str| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if env.insert(k.to_string(), v.to_string()).is_none() {
            order.push(k.to_string());
        }
    };
    put(&mut env, &format!("PATH={DEFAULT_PATH}"));
    put(&mut env, &format!("HOSTNAME={hostname}"));
    for kv in strings(image_config(image, "Env")).iter().chain(&spec.env) {
        put(&mut env, kv);
    }
    if !env.contains_key("HOME") {
        put(&mut env, &format!("HOME={home}"));
    }
    order
        .into_iter()
        .map(|k| format!("{k}={}", env.get(&k).map(String::as_str).unwrap_or("")))
        .collect()
}

/// The compose `ulimits` as OCI rlimits (`nofile` is `RLIMIT_NOFILE`).
fn rlimits(spec: &ContainerSpec) -> Result<Vec<oci_spec::runtime::PosixRlimit>> {
    spec.ulimits
        .iter()
        .map(|u| {
            let typ: PosixRlimitType = serde_json::from_value(serde_json::Value::String(format!(
                "RLIMIT_{}",
                u.name.to_ascii_uppercase()
            )))
            .map_err(|_| {
                RuntimeError::Engine(format!(
                    "container {}: unknown ulimit {:?}",
                    spec.name, u.name
                ))
            })?;
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(u.soft.max(0) as u64)
                .hard(u.hard.max(0) as u64)
                .build()
                .map_err(bad(format!("container {}", spec.name)))
        })
        .collect()
}

/// The runtime spec of a container whose root filesystem is `rootfs`.
pub fn runtime_spec(
    spec: &ContainerSpec,
    image: &StoredImage,
    id: &str,
    rootfs: &Path,
) -> Result<Spec> {
    let what = format!("container {}", spec.name);
    let hostname = if spec.hostname.is_empty() {
        id.get(..12).unwrap_or(id).to_string()
    } else {
        spec.hostname.clone()
    };
    let user = if spec.user.is_empty() {
        image_config(image, "User")
            .and_then(|u| u.as_str())
            .unwrap_or("")
            .to_string()
    } else {
        spec.user.clone()
    };
    let (uid, gid, home) = resolve_user(rootfs, &user)?;
    let mut additional = Vec::new();
    for g in &spec.group_add {
        let (_, gid, _) = resolve_user(rootfs, &format!("0:{g}"))?;
        additional.push(gid);
    }
    let cwd = if !spec.working_dir.is_empty() {
        spec.working_dir.clone()
    } else {
        image_config(image, "WorkingDir")
            .and_then(|w| w.as_str())
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
            .to_string()
    };
    let caps = capabilities(spec)?;
    let caps_set: std::collections::HashSet<Capability> = caps.iter().copied().collect();
    let process = ProcessBuilder::default()
        .terminal(spec.tty)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .additional_gids(additional)
                .build()
                .map_err(bad(&what))?,
        )
        .args(arguments(spec, image)?)
        .env(environment(spec, image, &hostname, &home))
        .cwd(cwd)
        .capabilities(
            // Nothing inheritable or ambient, as Docker since 20.10.14
            // (left unset, the builder's defaults would put three there,
            // which runc cannot raise past an emptier bounding set).
            LinuxCapabilitiesBuilder::default()
                .bounding(caps_set.clone())
                .effective(caps_set.clone())
                .permitted(caps_set)
                .inheritable(std::collections::HashSet::new())
                .ambient(std::collections::HashSet::new())
                .build()
                .map_err(bad(&what))?,
        )
        // Without ulimits, the limits rcompose runs with, as a container
        // gets the daemon's.
        .rlimits(rlimits(spec)?)
        .no_new_privileges(spec.security_opt.iter().any(|o| {
            o == "no-new-privileges"
                || o == "no-new-privileges:true"
                || o == "no-new-privileges=true"
        }))
        .build()
        .map_err(bad(&what))?;
    let mount = |dest: &str, typ: &str, source: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
            .map_err(bad(&what))
    };
    let shm = if spec.shm_size > 0 {
        spec.shm_size
    } else {
        64 << 20
    };
    let mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &[
                "nosuid",
                "noexec",
                "nodev",
                "mode=1777",
                &format!("size={shm}"),
            ],
        )?,
    ];
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|t| {
        LinuxNamespaceBuilder::default()
            .typ(t)
            .build()
            .map_err(bad(&what))
    })
    .collect::<Result<Vec<_>>>()?;
    let mut linux = LinuxBuilder::default().namespaces(namespaces);
    if !spec.privileged {
        linux = linux
            .masked_paths(
                MASKED_PATHS
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>(),
            )
            .readonly_paths(
                READONLY_PATHS
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>(),
            );
    }
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(rootfs.to_path_buf())
                .readonly(spec.read_only)
                .build()
                .map_err(bad(&what))?,
        )
        .hostname(hostname)
        .process(process)
        .mounts(mounts)
        .linux(linux.build().map_err(bad(&what))?)
        .build()
        .map_err(bad(&what))
}

/// Mounts the image's layers, with `dir`'s `upper/` and `work/`, at
/// `dir/rootfs`; returns that path. With a user namespace, the layers are
/// seen through its map (the image's root files are the container's
/// root's) and the upper directory belongs to the container's root.
pub fn mount_rootfs(
    store: &Store,
    image: &StoredImage,
    dir: &Path,
    userns: Option<&std::os::fd::OwnedFd>,
    map: Option<super::userns::IdMap>,
) -> Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    for sub in ["rootfs", "upper", "work"] {
        fs::create_dir_all(dir.join(sub)).map_err(|e| failed(format!("creating {sub}"), e))?;
    }
    if let Some(map) = map {
        let upper = dir.join("upper");
        if fs::metadata(&upper).is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0) {
            rustix::fs::chown(
                &upper,
                Some(rustix::fs::Uid::from_raw(map.uid)),
                Some(rustix::fs::Gid::from_raw(map.gid)),
            )
            .map_err(|e| failed("giving the upper directory to the container's root", e))?;
        }
    }
    // overlayfs wants at least two lower directories without an upper one,
    // and takes the topmost first.
    let mut lower: Vec<String> = Vec::new();
    for diff_id in image.config_file.rootfs.diff_ids.iter().rev() {
        if store.layer_size(diff_id).is_none() {
            return Err(RuntimeError::Engine(format!(
                "image {}: layer {diff_id} is not unpacked",
                image.id
            )));
        }
        lower.push(store.layer_root(diff_id).to_string_lossy().into_owned());
    }
    if lower.is_empty() {
        // An image with no layer (FROM scratch and nothing added).
        let empty = dir.join("empty");
        fs::create_dir_all(&empty).map_err(|e| failed("creating a lower directory", e))?;
        lower.push(empty.to_string_lossy().into_owned());
    }
    // The idmapped views of the layers, needed only while overlayfs is
    // mounted on them (it keeps private copies of its layers' mounts).
    let mapped = dir.join("lower");
    let _ = unmount_views(&mapped);
    if let Some(userns) = userns {
        let views = (|| -> Result<Vec<String>> {
            let mut views = Vec::new();
            for (i, layer) in lower.iter().enumerate() {
                let view = mapped.join(i.to_string());
                fs::create_dir_all(&view).map_err(|e| failed("creating a layer's view", e))?;
                super::userns::idmapped_bind(Path::new(layer), &view, userns)?;
                views.push(view.to_string_lossy().into_owned());
            }
            Ok(views)
        })();
        match views {
            Ok(v) => lower = v,
            Err(e) => {
                let _ = unmount_views(&mapped);
                return Err(e);
            }
        }
    }
    let mounted = mount_overlay(&rootfs, &lower, dir);
    if userns.is_some() {
        unmount_views(&mapped).map_err(|e| failed("unmounting the layers' views", e))?;
    }
    mounted?;
    Ok(rootfs)
}

/// Unmounts and removes the layers' views under `dir` (nothing when there
/// are none).
fn unmount_views(dir: &Path) -> std::io::Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        match rustix::mount::unmount(e.path(), rustix::mount::UnmountFlags::DETACH) {
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
        fs::remove_dir(e.path())?;
    }
    fs::remove_dir(dir)
}

fn mount_overlay(rootfs: &Path, lower: &[String], dir: &Path) -> Result<()> {
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    rustix::mount::mount(
        "overlay",
        rootfs,
        "overlay",
        rustix::mount::MountFlags::empty(),
        Some(
            std::ffi::CString::new(options)
                .map_err(|e| failed("mounting a root filesystem", e))?
                .as_c_str(),
        ),
    )
    .map_err(|e| {
        failed(
            format!("mounting the root filesystem of {}", dir.display()),
            e,
        )
    })
}

/// Unmounts a container's root filesystem (nothing when it is not
/// mounted).
pub fn unmount_rootfs(dir: &Path) -> Result<()> {
    let rootfs = dir.join("rootfs");
    match rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(failed(format!("unmounting {}", rootfs.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "web".into(),
            ..Default::default()
        }
    }

    #[test]
    fn capabilities_follow_dockers_defaults_and_the_spec() {
        let base = capabilities(&spec()).unwrap_or_default();
        assert_eq!(base, DOCKER_CAPABILITIES.to_vec());
        let mut s = spec();
        s.cap_add = vec!["SYS_ADMIN".into(), "cap_net_admin".into()];
        s.cap_drop = vec!["NET_RAW".into()];
        let c = capabilities(&s).unwrap_or_default();
        assert!(c.contains(&Capability::SysAdmin) && c.contains(&Capability::NetAdmin));
        assert!(!c.contains(&Capability::NetRaw));
        s.cap_drop = vec!["ALL".into()];
        s.cap_add = vec!["CHOWN".into()];
        assert_eq!(
            capabilities(&s).unwrap_or_default(),
            vec![Capability::Chown]
        );
        s.cap_add = vec!["NOT_A_CAP".into()];
        assert!(capabilities(&s).is_err());
        s.privileged = true;
        assert!(capabilities(&s).unwrap_or_default().len() > 30);
    }

    #[test]
    fn users_are_looked_up_in_the_root_filesystem() {
        let dir = std::env::temp_dir().join(format!("rcompose-bundle-user-{}", std::process::id()));
        let _ = fs::create_dir_all(dir.join("etc"));
        let _ = fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www:/var/www:/usr/sbin/nologin\n",
        );
        let _ = fs::write(
            dir.join("etc/group"),
            "root:x:0:\nwww-data:x:33:\nstaff:x:50:\n",
        );
        let r = |u: &str| resolve_user(&dir, u).map_err(|e| e.to_string());
        assert_eq!(r(""), Ok((0, 0, "/root".into())));
        assert_eq!(r("www-data"), Ok((33, 33, "/var/www".into())));
        assert_eq!(r("33:staff"), Ok((33, 50, "/var/www".into())));
        assert_eq!(r("1000:1000"), Ok((1000, 1000, "/".into())));
        assert!(r("nobody-here").is_err());
        assert!(r("www-data:nogroup").is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
