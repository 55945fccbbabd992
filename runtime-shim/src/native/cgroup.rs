//! The cgroups of native containers, on either hierarchy: runc puts a
//! container in `rcompose/<id>` (`cgroupsPath` of its spec), under every
//! v1 controller's mount, or under the v2 mount when the host has the
//! unified hierarchy. This module reads what `stats`, `top` and the OOM
//! check need.

use std::fs;
use std::path::{Path, PathBuf};

const MOUNT: &str = "/sys/fs/cgroup";

/// Whether the host has the unified (v2) hierarchy at /sys/fs/cgroup.
pub fn unified() -> bool {
    Path::new(MOUNT).join("cgroup.controllers").exists()
}

/// A container's directory for one controller (`memory`, `pids`, …).
pub fn controller_dir(controller: &str, id: &str) -> PathBuf {
    if unified() {
        Path::new(MOUNT).join("rcompose").join(id)
    } else {
        Path::new(MOUNT).join(controller).join("rcompose").join(id)
    }
}

/// Whether a memory limit may also limit swap (v1 needs swap accounting
/// in the kernel).
pub fn swap_accounted() -> bool {
    unified()
        || Path::new(MOUNT)
            .join("memory/memory.memsw.limit_in_bytes")
            .exists()
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn keyed(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// One reading of a container's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    /// CPU time used, nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use (page cache excluded as Docker does), bytes.
    pub memory: u64,
    /// The memory limit, bytes (0: none).
    pub memory_limit: u64,
    /// Processes.
    pub pids: u64,
    /// Bytes read and written on block devices.
    pub block_io: (u64, u64),
}

/// Reads a container's counters; `None` when it has no cgroup.
pub fn read(id: &str) -> Option<Reading> {
    let mut r = Reading::default();
    if unified() {
        let dir = controller_dir("", id);
        if !dir.is_dir() {
            return None;
        }
        r.cpu_ns = keyed(&dir.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000;
        let current = read_u64(&dir.join("memory.current")).unwrap_or(0);
        let inactive = keyed(&dir.join("memory.stat"), "inactive_file").unwrap_or(0);
        r.memory = current.saturating_sub(inactive);
        r.memory_limit = read_u64(&dir.join("memory.max")).unwrap_or(0);
        r.pids = read_u64(&dir.join("pids.current")).unwrap_or(0);
        for line in fs::read_to_string(dir.join("io.stat"))
            .unwrap_or_default()
            .lines()
        {
            for field in line.split_whitespace() {
                if let Some(v) = field
                    .strip_prefix("rbytes=")
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    r.block_io.0 += v;
                }
                if let Some(v) = field
                    .strip_prefix("wbytes=")
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    r.block_io.1 += v;
                }
            }
        }
    } else {
        let memory = controller_dir("memory", id);
        if !memory.is_dir() {
            return None;
        }
        r.cpu_ns = read_u64(&controller_dir("cpuacct", id).join("cpuacct.usage")).unwrap_or(0);
        let usage = read_u64(&memory.join("memory.usage_in_bytes")).unwrap_or(0);
        let inactive = keyed(&memory.join("memory.stat"), "total_inactive_file").unwrap_or(0);
        r.memory = usage.saturating_sub(inactive);
        let limit = read_u64(&memory.join("memory.limit_in_bytes")).unwrap_or(0);
        // v1 writes "no limit" as a huge page-aligned number.
        r.memory_limit = if limit >= (1 << 62) { 0 } else { limit };
        r.pids = read_u64(&controller_dir("pids", id).join("pids.current")).unwrap_or(0);
        let blkio = controller_dir("blkio", id).join("blkio.throttle.io_service_bytes");
        for line in fs::read_to_string(blkio).unwrap_or_default().lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() == 3 {
                let v: u64 = f[2].parse().unwrap_or(0);
                match f[1] {
                    "Read" => r.block_io.0 += v,
                    "Write" => r.block_io.1 += v,
                    _ => {}
                }
            }
        }
    }
    Some(r)
}

/// The processes of a container (host pids).
pub fn processes(id: &str) -> Vec<i32> {
    let dir = if unified() {
        controller_dir("", id)
    } else {
        controller_dir("pids", id)
    };
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
