//! What the native runtime keeps of a container on disk, shared by the
//! runtime (which writes the record and reads the status) and the
//! container's monitor, `rcompose-shim` (which writes the status).
//!
//! ```text
//! <root>/containers/<id>/
//!   container.json   the record: name, image, spec, creation time
//!   shim.json        what the monitor needs to run it
//!   status.json      the monitor's account: state, pid, exit code, health
//!   shim.lock        held (flock) by the live monitor, and only by it
//!   config.json      the OCI runtime spec (the directory is the bundle)
//!   rootfs/ upper/ work/   the overlay mount and its directories
//!   hosts hostname resolv.conf   bind-mounted into the container
//!   container.log[.N]   its output, JSON lines, rotated
//!   paused           present while frozen
//! <root>/containers/by-name/<name> -> <id>
//! <run>/runc/        runc's own state (--root)
//! <run>/s/<id12>.sock   the monitor's control socket
//! ```
//!
//! A status that says running is believed only while `shim.lock` is held:
//! a killed monitor, or a reboot, leaves a container that reads as exited.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::store::failed;
use crate::{ContainerSpec, Result, RuntimeError};

/// A container as created: what never changes until it is removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The id: 64 hexadecimal digits.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// The image id (`sha256:…`).
    pub image_id: String,
    /// The command line, as `ps` shows it.
    pub command: String,
    /// The host name it got.
    pub hostname: String,
    /// The spec it was created from.
    pub spec: ContainerSpec,
    /// The anonymous volumes made for it (removed with `rm -v`).
    #[serde(default)]
    pub anonymous_volumes: Vec<String>,
    /// Ports the image exposes, `80/tcp`.
    #[serde(default)]
    pub image_ports: Vec<String>,
    /// The image's manifest (pinned in the store while the container
    /// exists, named or not).
    #[serde(default)]
    pub image_manifest: String,
    /// Its user namespace's map, when the runtime remaps (fixed at
    /// creation, as the Docker daemon's remap is for its containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<super::userns::IdMap>,
}

/// How a health check runs, resolved from the spec and the image.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Probe {
    /// The command (already a full argument vector).
    pub command: Vec<String>,
    /// Between checks, milliseconds.
    pub interval_ms: u64,
    /// For one check, milliseconds.
    pub timeout_ms: u64,
    /// Failures in a row before unhealthy.
    pub retries: u32,
    /// Grace period, milliseconds.
    pub start_period_ms: u64,
    /// Between checks during the grace period, milliseconds (0: `interval_ms`).
    pub start_interval_ms: u64,
}

/// What the monitor needs to know, written by the runtime before it starts
/// the monitor.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShimConfig {
    /// The container's id.
    pub id: String,
    /// Its name (for events).
    pub name: String,
    /// Its image reference (for events).
    pub image: String,
    /// Its labels (for events).
    pub labels: std::collections::BTreeMap<String, String>,
    /// The OCI runtime binary.
    pub runc: String,
    /// runc's state directory (`--root`).
    pub runc_root: String,
    /// The control socket's path.
    pub socket: String,
    /// The project's event log.
    pub events: String,
    /// A terminal for the main process.
    pub tty: bool,
    /// Keep its standard input open.
    pub stdin_open: bool,
    /// Close it when the first attached client's input ends.
    pub stdin_once: bool,
    /// Restart policy: `no`, `always`, `unless-stopped`, `on-failure`.
    pub restart: String,
    /// The most restarts for `on-failure` (0: no limit).
    pub max_retries: u32,
    /// Its health check.
    pub probe: Option<Probe>,
    /// Log rotation: the largest file, bytes (0: no rotation).
    pub log_max_size: u64,
    /// Log rotation: how many files to keep.
    pub log_max_files: u32,
    /// Where its memory cgroup's counters are (for OOM kills), if known.
    pub memory_cgroup: String,
}

/// The state a monitor reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Never started.
    #[default]
    Created,
    /// Its main process runs.
    Running,
    /// Waiting for the restart policy's delay.
    Restarting,
    /// Stopped.
    Exited,
}

/// One health check's outcome, as Docker's inspect shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Start, RFC 3339.
    pub start: String,
    /// End, RFC 3339.
    pub end: String,
    /// Its exit code (-1 for a timeout).
    pub exit_code: i64,
    /// Its output, cut short.
    pub output: String,
}

/// A container's health as the monitor last judged it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HealthState {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Failures in a row.
    pub failing_streak: u32,
    /// The last results, oldest first.
    pub log: Vec<ProbeResult>,
}

/// The monitor's account of the container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    /// Its state.
    pub phase: Phase,
    /// The main process's host pid while running.
    pub pid: i32,
    /// The last start, nanoseconds since the epoch.
    pub started_at: i64,
    /// The end of the last run, nanoseconds since the epoch.
    pub finished_at: i64,
    /// The last run's exit code.
    pub exit_code: i64,
    /// Whether the last run was killed for lack of memory.
    pub oom_killed: bool,
    /// Restarts by the policy.
    pub restart_count: u32,
    /// Stopped by a user (no restart).
    pub manual_stop: bool,
    /// Its health, when it has a check.
    pub health: Option<HealthState>,
    /// Why it could not start, when it could not.
    pub error: String,
}

/// Nanoseconds since the epoch.
pub fn now_nanos() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// Writes a file whole, through a temporary file and a rename, so that a
/// reader sees the old content or the new, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        failed(format!("writing {}", path.display()), e)
    })
}

/// Writes a value as JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| failed(format!("writing {}", path.display()), e))?;
    write_atomic(path, &bytes)
}

/// Reads a JSON file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            RuntimeError::NotFound {
                kind: "file",
                name: path.display().to_string(),
            }
        } else {
            failed(format!("reading {}", path.display()), e)
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| failed(format!("reading {}", path.display()), e))
}

/// Whether a live monitor holds the container's lock.
pub fn shim_alive(dir: &Path) -> bool {
    let Ok(file) = fs::File::open(dir.join("shim.lock")) else {
        return false;
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared) {
        Ok(()) => false,
        Err(_) => true,
    }
}

/// The paths of one container.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Its directory (also the OCI bundle).
    pub dir: PathBuf,
    /// The monitor's socket.
    pub socket: PathBuf,
}

impl Paths {
    /// The record.
    pub fn record(&self) -> PathBuf {
        self.dir.join("container.json")
    }
    /// The monitor's status.
    pub fn status(&self) -> PathBuf {
        self.dir.join("status.json")
    }
    /// The monitor's configuration.
    pub fn shim_config(&self) -> PathBuf {
        self.dir.join("shim.json")
    }
    /// The log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    /// The root filesystem's mount point.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    /// The overlay's upper directory: what the container changed.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    /// Present while the container is paused.
    pub fn paused(&self) -> PathBuf {
        self.dir.join("paused")
    }
}
