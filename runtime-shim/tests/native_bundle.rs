//! The native runtime's OCI bundles run by runc: a busybox image imported
//! into a store of the test's own, its layers mounted with overlayfs, and
//! the runtime spec made as Docker would make it. The workshop's first
//! security demo is the check: with Docker's default capabilities a
//! container cannot set its host name; with `cap_add: [SYS_ADMIN]` it can.
//!
//! Needs root, runc and /bin/busybox; says SKIPPED otherwise. Leaves no
//! mount, container or directory behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use rcompose_tests::{is_root, require};
use runtime_shim::native::archive;
use runtime_shim::native::bundle::{mount_rootfs, runtime_spec, unmount_rootfs};
use runtime_shim::native::store::Store;
use runtime_shim::reference;
use runtime_shim::ContainerSpec;

fn ready() -> bool {
    require(is_root(), "root")
        && require(
            Command::new("runc").arg("--version").output().is_ok(),
            "runc",
        )
        && require(Path::new("/bin/busybox").exists(), "/bin/busybox")
}

/// A state root, removed (after unmounting what is under it) when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {0}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.0.display()
            ))
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A busybox root filesystem as a tarball, imported into the store.
fn busybox_image(store: &Store, dir: &Path) -> String {
    let rootfs = dir.join("busybox-rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for tool in ["sh", "id", "hostname", "cat", "grep", "echo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).unwrap();
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.append_dir_all(".", &rootfs).unwrap();
    let bytes = tar.into_inner().unwrap();
    let name = format!("rct-bundle/busybox-{}:1", std::process::id());
    archive::import(
        store,
        bytes.as_slice(),
        Some(&name),
        &["CMD [\"sh\"]".to_string()],
        "",
    )
    .unwrap();
    reference::normalize(&name).unwrap()
}

/// Runs `command` in a container of the image made with `spec`; returns
/// its output and whether it succeeded.
fn run(
    store: &Store,
    root: &Path,
    image: &str,
    mut spec: ContainerSpec,
    command: &str,
) -> (String, bool) {
    let image = store.find(image).unwrap().expect("the imported image");
    let id = format!("rctbundle{}{}", std::process::id(), spec.name);
    let dir = root.join("containers").join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let rootfs = mount_rootfs(store, &image, &dir, None, None).unwrap();
    spec.command = Some(vec!["sh".into(), "-c".into(), command.into()]);
    let config = runtime_spec(&spec, &image, &id, &rootfs).unwrap();
    config.save(dir.join("config.json")).unwrap();
    let out = Command::new("runc")
        .arg("--root")
        .arg(root.join("runc"))
        .args(["run", "--bundle"])
        .arg(&dir)
        .arg(&id)
        .output()
        .unwrap();
    let _ = Command::new("runc")
        .arg("--root")
        .arg(root.join("runc"))
        .args(["delete", "--force", &id])
        .output();
    unmount_rootfs(&dir).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.success())
}

#[test]
fn a_container_gets_dockers_capabilities_and_what_cap_add_adds() {
    if !ready() {
        return;
    }
    let scratch = Scratch(std::env::temp_dir().join(format!("rct-bundle-{}", std::process::id())));
    let store = Store::open(&scratch.0.join("images")).unwrap();
    let image = busybox_image(&store, &scratch.0);

    let plain = ContainerSpec {
        name: "plain".into(),
        hostname: "web".into(),
        env: vec!["GREETING=hello".into()],
        ..Default::default()
    };
    let (out, ok) = run(
        &store,
        &scratch.0,
        &image,
        plain,
        "id -u; hostname; echo $GREETING; grep CapEff /proc/self/status; hostname other",
    );
    assert!(
        !ok,
        "setting the host name succeeded without SYS_ADMIN:\n{out}"
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"), "{out}");
    assert_eq!(lines.next(), Some("web"), "{out}");
    assert_eq!(lines.next(), Some("hello"), "{out}");
    // Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID
    // SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE
    // SETFCAP.
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(
        out.contains("hostname: sethostname: Operation not permitted"),
        "{out}"
    );

    let admin = ContainerSpec {
        name: "admin".into(),
        cap_add: vec!["SYS_ADMIN".into()],
        ..Default::default()
    };
    let (out, ok) = run(
        &store,
        &scratch.0,
        &image,
        admin,
        "hostname other && hostname",
    );
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "other");

    // The balancer's confinement: no capability at all, not root, no new
    // privileges; nothing inheritable or ambient either, as on Docker.
    let bare = ContainerSpec {
        name: "bare".into(),
        user: "65534:65534".into(),
        cap_drop: vec!["ALL".into()],
        security_opt: vec!["no-new-privileges:true".into()],
        ..Default::default()
    };
    let (out, ok) = run(
        &store,
        &scratch.0,
        &image,
        bare,
        "id -u; grep -E 'Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status",
    );
    assert!(ok, "a container with every capability dropped runs: {out}");
    assert!(out.starts_with("65534\n"), "{out}");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            out.contains(&format!("{set}:\t0000000000000000")),
            "{set} is empty: {out}"
        );
    }
}
