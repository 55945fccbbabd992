//! User-namespace remapping, as the Docker daemon's `--userns-remap`
//! gives it: with `RCOMPOSE_USERNS_REMAP` set, a container's root is an
//! unprivileged id range of the host, read from `/etc/subuid` and
//! `/etc/subgid` (`default` takes Docker's `dockremap` entries, so that
//! both runtimes map alike); `userns_mode: host` opts a service out.
//!
//! The image's layers stay as they are in the store: the container sees
//! them through idmapped mounts (a host root file is its root's), which
//! overlayfs takes as lower layers. Its network namespace is made by runc
//! inside the user namespace (so that `exec` can join both), and set up
//! from a `createRuntime` hook of the monitor's binary.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::store::failed;
use crate::{Result, RuntimeError};

/// The name of `RCOMPOSE_USERNS_REMAP`'s `default`, Docker's.
const DEFAULT_USER: &str = "dockremap";

/// A container's ids on the host: its 0 is `uid`/`gid`, for `size` ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// The host user id of the container's root.
    pub uid: u32,
    /// The host group id of the container's root group.
    pub gid: u32,
    /// How many ids the container has.
    pub size: u32,
}

impl IdMap {
    /// The map a setting names (`default`, `user`, `user:group`, ids
    /// allowed), from the host's subordinate id files.
    pub fn from_setting(setting: &str) -> Result<IdMap> {
        Self::from_files(
            setting,
            &fs::read_to_string("/etc/subuid").unwrap_or_default(),
            &fs::read_to_string("/etc/subgid").unwrap_or_default(),
            &fs::read_to_string("/etc/passwd").unwrap_or_default(),
            &fs::read_to_string("/etc/group").unwrap_or_default(),
        )
    }

    fn from_files(
        setting: &str,
        subuid: &str,
        subgid: &str,
        passwd: &str,
        group: &str,
    ) -> Result<IdMap> {
        let setting = setting.trim();
        let (user, group_name) = match setting {
            "default" => (DEFAULT_USER, DEFAULT_USER),
            s => s.split_once(':').unwrap_or((s, s)),
        };
        if user.is_empty() || group_name.is_empty() {
            return Err(remap_error(setting, "it names no user"));
        }
        let (uid, uid_size) = range(subuid, user, passwd).ok_or_else(|| {
            remap_error(
                setting,
                &format!(
                    "/etc/subuid has no range for {user} (a line such as {user}:100000:65536)"
                ),
            )
        })?;
        let (gid, gid_size) = range(subgid, group_name, group).ok_or_else(|| {
            remap_error(
                setting,
                &format!(
                    "/etc/subgid has no range for {group_name} (a line such as {group_name}:100000:65536)"
                ),
            )
        })?;
        let size = uid_size.min(gid_size);
        if uid == 0 || gid == 0 || size == 0 {
            return Err(remap_error(setting, "its range starts at 0 or is empty"));
        }
        Ok(IdMap { uid, gid, size })
    }

    /// The runtime spec's `uidMappings` and `gidMappings`.
    pub fn oci(&self) -> (serde_json::Value, serde_json::Value) {
        let one =
            |host: u32| serde_json::json!([{"containerID": 0, "hostID": host, "size": self.size}]);
        (one(self.uid), one(self.gid))
    }
}

/// Which way ids go through a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the host's ids to the container's (what it sees leaving it).
    ToContainer,
    /// From the container's ids to the host's (what goes into it).
    ToHost,
}

impl IdMap {
    /// One id through the map: host ids outside the range are left alone
    /// (a stopped container's lower layers keep the image's own ids), and
    /// container ids beyond the range become the overflow id, as the
    /// kernel shows them.
    fn shift(&self, id: u64, base: u32, way: Direction) -> u64 {
        let (base, size) = (u64::from(base), u64::from(self.size));
        match way {
            Direction::ToContainer if (base..base + size).contains(&id) => id - base,
            Direction::ToContainer => id,
            Direction::ToHost if id < size => id + base,
            Direction::ToHost => 65534,
        }
    }

    /// A tar archive with its owners moved through the map.
    pub fn shift_archive(&self, tar: &[u8], way: Direction) -> std::io::Result<Vec<u8>> {
        let mut input = tar::Archive::new(tar);
        let mut out = tar::Builder::new(Vec::with_capacity(tar.len()));
        out.follow_symlinks(false);
        for entry in input.entries()? {
            let entry = entry?;
            let mut header = entry.header().clone();
            header.set_uid(self.shift(header.uid()?, self.uid, way));
            header.set_gid(self.shift(header.gid()?, self.gid, way));
            let path = entry.path()?.into_owned();
            match entry.link_name()? {
                Some(target) => {
                    let target = target.into_owned();
                    out.append_link(&mut header, &path, &target)?;
                }
                None => out.append_data(&mut header, &path, entry)?,
            }
        }
        out.into_inner()
    }
}

fn remap_error(setting: &str, why: &str) -> RuntimeError {
    RuntimeError::Engine(format!("RCOMPOSE_USERNS_REMAP={setting}: {why}"))
}

/// The first range of `name` (or of its numeric id, as `ids`, an
/// `/etc/passwd` or `/etc/group`, gives it) in a subordinate id file.
fn range(file: &str, name: &str, ids: &str) -> Option<(u32, u32)> {
    let number = if name.chars().all(|c| c.is_ascii_digit()) {
        Some(name.to_string())
    } else {
        ids.lines().find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(name)).then(|| f.nth(1).map(str::to_string))?
        })
    };
    let by_name = ids
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            (f.nth(1) == Some(name)).then(|| n.to_string())
        })
        .unwrap_or_else(|| name.to_string());
    file.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let who = f.next()?;
        if who != name && who != by_name && Some(who) != number.as_deref() {
            return None;
        }
        let start = f.next()?.parse().ok()?;
        let count = f.next()?.parse().ok()?;
        Some((start, count))
    })
}

/// A user namespace with `map`, held by an open file: a helper (the
/// monitor's binary, as `--userns-holder`) enters a new one, the map is
/// written from here, and the helper is let go.
pub fn namespace(helper: &Path, map: &IdMap) -> Result<OwnedFd> {
    let mut child = Command::new(helper)
        .arg("--userns-holder")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| failed(format!("starting {}", helper.display()), e))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let pid = child.id();
    let made = (|| -> Result<OwnedFd> {
        if line.trim() != "ready" {
            return Err(RuntimeError::Engine(
                "making a user namespace failed (does the kernel allow them?)".into(),
            ));
        }
        let write = |file: &str, host: u32| {
            fs::write(
                format!("/proc/{pid}/{file}"),
                format!("0 {host} {}\n", map.size),
            )
            .map_err(|e| failed(format!("writing the user namespace's {file}"), e))
        };
        write("uid_map", map.uid)?;
        write("gid_map", map.gid)?;
        fs::File::open(format!("/proc/{pid}/ns/user"))
            .map(OwnedFd::from)
            .map_err(|e| failed("opening the user namespace", e))
    })();
    // Its end of input closed, the helper ends.
    drop(child.stdin.take());
    let _ = child.wait();
    made
}

/// The helper's side: enters a new user namespace, says so, and waits
/// for its input to close. Runs at the start of a single-threaded process.
pub fn hold() -> std::process::ExitCode {
    #[allow(deprecated)]
    if rustix::thread::unshare(rustix::thread::UnshareFlags::NEWUSER).is_err() {
        return std::process::ExitCode::from(1);
    }
    println!("ready");
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
    std::process::ExitCode::SUCCESS
}

/// Mounts `source` at `target` (an existing directory) with its owners
/// seen through `userns`'s map.
pub fn idmapped_bind(source: &Path, target: &Path, userns: &OwnedFd) -> Result<()> {
    use rustix::mount::{MoveMountFlags, OpenTreeFlags};
    let what = || format!("an idmapped mount of {}", source.display());
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        source,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| failed(what(), e))?;
    set_idmap(&tree, userns).map_err(|e| failed(what(), e))?;
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| failed(what(), e))
}

/// `mount_setattr(2)` with `MOUNT_ATTR_IDMAP`, which rustix does not wrap.
#[allow(unsafe_code)]
fn set_idmap(tree: &OwnedFd, userns: &OwnedFd) -> std::io::Result<()> {
    /// The kernel's `struct mount_attr`.
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: the call reads `size_of::<MountAttr>()` bytes from `attr`,
    // a live value laid out as the kernel's struct, and the empty C
    // string; both outlive the call, which keeps no pointer to either.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn archives_move_through_the_map_both_ways() {
        let map = IdMap {
            uid: 100_000,
            gid: 200_000,
            size: 65536,
        };
        let mut b = tar::Builder::new(Vec::new());
        for (name, uid, gid) in [
            ("a", 100_000, 200_000),
            ("b", 101_000, 200_033),
            ("c", 0, 0),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_cksum();
            b.append_data(&mut h, name, &b"x"[..]).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(100_007);
        h.set_gid(200_007);
        b.append_link(&mut h, "l", "a".repeat(150)).unwrap();
        let host = b.into_inner().unwrap();
        let owners = |tar: &[u8]| -> Vec<(String, u64, u64)> {
            tar::Archive::new(tar)
                .entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let h = e.header();
                    (
                        e.path().unwrap().display().to_string(),
                        h.uid().unwrap(),
                        h.gid().unwrap(),
                    )
                })
                .collect()
        };
        let inside = map.shift_archive(&host, Direction::ToContainer).unwrap();
        assert_eq!(
            owners(&inside),
            [
                ("a".to_string(), 0, 0),
                ("b".to_string(), 1000, 33),
                ("c".to_string(), 0, 0),
                ("l".to_string(), 7, 7)
            ]
        );
        let link = tar::Archive::new(inside.as_slice())
            .entries()
            .unwrap()
            .last()
            .unwrap()
            .unwrap()
            .link_name()
            .unwrap()
            .unwrap()
            .display()
            .to_string();
        assert_eq!(link, "a".repeat(150), "long link targets survive");
        let back = map.shift_archive(&inside, Direction::ToHost).unwrap();
        assert_eq!(
            owners(&back),
            [
                ("a".to_string(), 100_000, 200_000),
                ("b".to_string(), 101_000, 200_033),
                ("c".to_string(), 100_000, 200_000),
                ("l".to_string(), 100_007, 200_007)
            ]
        );
    }

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\ndockremap:x:999:999::/:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\ndockremap:x:999:\nalice:x:1000:\nstaff:x:50:\n";

    #[test]
    fn ranges_come_from_the_subordinate_id_files() {
        let sub = "alice:100000:65536\ndockremap:165536:65536\n50:300000:1000\n";
        let m = |s: &str| IdMap::from_files(s, sub, sub, PASSWD, GROUP).map_err(|e| e.to_string());
        assert_eq!(
            m("default"),
            Ok(IdMap {
                uid: 165536,
                gid: 165536,
                size: 65536
            })
        );
        assert_eq!(
            m("alice:staff"),
            Ok(IdMap {
                uid: 100000,
                gid: 300000,
                size: 1000
            })
        );
        // By number, for a line written with the user's name.
        assert_eq!(m("1000").map(|m| m.uid), Ok(100000));
        let missing = m("bob");
        assert!(
            missing
                .as_ref()
                .is_err_and(|e| e.contains("/etc/subuid has no range for bob")),
            "{missing:?}"
        );
        assert!(m(":").is_err());
    }

    #[test]
    fn a_range_at_zero_is_refused() {
        let sub = "dockremap:0:65536\n";
        assert!(IdMap::from_files("default", sub, sub, PASSWD, GROUP).is_err());
    }
}
