//! What goes in and out of native containers: logs, attach, exec, copies,
//! export, and the counters of `stats` and `top`.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::containers::{refused, Observed};
use super::logfile::{self, Entry, Follower};
use super::state::Phase;
use super::store::failed;
use super::{bundle, cgroup, NativeRuntime};
use crate::{
    BoxStream, ExecSpec, LogLine, LogOptions, Process, Result, RuntimeError, Session, Stats,
};

/// How often a followed log is looked at.
const FOLLOW: Duration = Duration::from_millis(15);

/// Where a followed log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum From {
    /// Everything so far.
    Start,
    /// What comes from now on.
    Now,
}

fn entry_time(e: &Entry) -> i64 {
    e.time
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .unwrap_or(0)
}

fn line(e: Entry, timestamps: bool) -> LogLine {
    LogLine {
        stderr: e.stream == "stderr",
        text: if timestamps {
            format!("{} {}", e.time, e.log)
        } else {
            e.log
        },
    }
}

impl NativeRuntime {
    /// A container's log as `logs` reads it.
    pub(super) fn log_stream(&self, key: &str, options: &LogOptions) -> Result<BoxStream<LogLine>> {
        let o = self.find_container(key)?;
        let options = options.clone();
        let rt = self.clone();
        let path = o.paths.log();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<LogLine>>(256);
        std::thread::spawn(move || {
            let keep = |e: &Entry| {
                let t = entry_time(e);
                options.since.is_none_or(|s| t >= s)
                    && options.until.is_none_or(|u| t <= u)
                    && options.from_nanos.is_none_or(|from| {
                        e.time
                            .parse::<jiff::Timestamp>()
                            .is_ok_and(|t| t.as_nanosecond() >= from)
                    })
            };
            // The rotated files, then the current one through the follower
            // that goes on reading it.
            let mut entries: Vec<Entry> = Vec::new();
            for f in logfile::files(&path) {
                if f != path {
                    entries.extend(logfile::read_all_of(&f));
                }
            }
            let mut follower = Follower::from_start(&path);
            entries.extend(follower.next_entries());
            entries.retain(keep);
            if let Some(n) = options.tail {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                let skip = entries.len().saturating_sub(n);
                entries.drain(..skip);
            }
            for e in entries {
                if tx.blocking_send(Ok(line(e, options.timestamps))).is_err() {
                    return;
                }
            }
            if !options.follow {
                return;
            }
            follow(&rt, &o.record.id, follower, &tx, options.timestamps, false);
        });
        Ok(receiver(rx))
    }

    /// Output of a container for an attach: from its start or from now,
    /// until it ends (waiting for a created one to start).
    fn attach_output(&self, o: &Observed, from: From) -> BoxStream<LogLine> {
        let rt = self.clone();
        let id = o.record.id.clone();
        let path = o.paths.log();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<LogLine>>(256);
        std::thread::spawn(move || {
            let follower = match from {
                From::Start => Follower::from_start(&path),
                From::Now => Follower::at_end(&path),
            };
            follow(&rt, &id, follower, &tx, false, true);
        });
        receiver(rx)
    }

    pub(super) fn attach_to(&self, key: &str, stdin: bool, logs: bool) -> Result<Session> {
        let o = self.find_container(key)?;
        let output = self.attach_output(&o, if logs { From::Start } else { From::Now });
        let input = if stdin && o.record.spec.stdin_open {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            let rt = self.clone();
            let id = o.record.id.clone();
            tokio::spawn(async move {
                let _ = feed(rt, id, theirs).await;
            });
            Some(Box::pin(ours) as crate::Input)
        } else {
            None
        };
        Ok(Session {
            output: Some(output),
            input,
            process: Box::new(MainProcess {
                rt: self.clone(),
                id: o.record.id.clone(),
            }),
        })
    }

    /// Runs a command in a running container through `runc exec`.
    pub(super) async fn exec_in(&self, key: &str, spec: &ExecSpec) -> Result<Session> {
        let o = self.find_container(key)?;
        if !o.running() {
            return Err(refused(format!("container {} is not running", o.record.id)));
        }
        if o.paused {
            return Err(refused(format!(
                "container {} is paused, unpause the container before exec",
                o.record.id
            )));
        }
        if spec.command.is_empty() {
            return Err(refused("no command to run"));
        }
        let mut command = tokio::process::Command::new(&self.runc);
        command.arg("--root").arg(self.run.join("runc")).arg("exec");
        if !spec.user.is_empty() {
            let (uid, gid, _) = bundle::resolve_user(&o.paths.rootfs(), &spec.user)?;
            command.arg("--user").arg(format!("{uid}:{gid}"));
        }
        if !spec.working_dir.is_empty() {
            command.arg("--cwd").arg(&spec.working_dir);
        }
        for e in &spec.env {
            command.arg("--env").arg(e);
        }
        if spec.privileged {
            for c in bundle::capabilities(&crate::ContainerSpec {
                privileged: true,
                ..Default::default()
            })? {
                command.arg("--cap").arg(c.to_string());
            }
        }
        if spec.detach {
            command.arg("--detach");
        }
        if spec.tty && !spec.detach {
            command.arg("--tty");
        }
        command.arg(&o.record.id).args(&spec.command);
        command.kill_on_drop(false);
        if spec.detach {
            let status = command
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .output()
                .await
                .map_err(|e| failed(format!("running {}", self.runc), e))?;
            if !status.status.success() {
                return Err(refused(String::from_utf8_lossy(&status.stderr).trim()));
            }
            return Ok(Session {
                output: None,
                input: None,
                process: Box::new(Done),
            });
        }
        if spec.tty {
            return self.exec_tty(command, spec.stdin);
        }
        command
            .stdin(if spec.stdin {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| failed(format!("running {}", self.runc), e))?;
        let input = child
            .stdin
            .take()
            .map(|i| Box::pin(Closing(Some(i))) as crate::Input);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<LogLine>>(64);
        let readers = [
            child.stdout.take().map(|s| {
                (
                    false,
                    Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                )
            }),
            child.stderr.take().map(|s| {
                (
                    true,
                    Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                )
            }),
        ];
        for (stderr, mut reader) in readers.into_iter().flatten() {
            let tx = tx.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                            if tx.send(Ok(LogLine { stderr, text })).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
        drop(tx);
        Ok(Session {
            output: Some(receiver(rx)),
            input,
            process: Box::new(ExecProcess {
                child: tokio::sync::Mutex::new(child),
                terminal: None,
            }),
        })
    }

    /// An exec with a terminal: runc's standard streams are the replica
    /// side of a pseudo-terminal of ours, whose size runc passes on when
    /// it gets SIGWINCH.
    fn exec_tty(&self, mut command: tokio::process::Command, stdin: bool) -> Result<Session> {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
            .map_err(|e| failed("opening a terminal", e))?;
        grantpt(&master).map_err(|e| failed("opening a terminal", e))?;
        unlockpt(&master).map_err(|e| failed("opening a terminal", e))?;
        let name = ptsname(&master, Vec::new()).map_err(|e| failed("opening a terminal", e))?;
        let replica = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(Path::new(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.as_bytes()),
            ))
            .map_err(|e| failed("opening a terminal", e))?;
        let stdio = |f: &fs::File| -> Result<std::process::Stdio> {
            Ok(std::process::Stdio::from(
                f.try_clone().map_err(|e| failed("opening a terminal", e))?,
            ))
        };
        command
            .stdin(stdio(&replica)?)
            .stdout(stdio(&replica)?)
            .stderr(stdio(&replica)?);
        let child = command
            .spawn()
            .map_err(|e| failed(format!("running {}", self.runc), e))?;
        drop(command);
        drop(replica);
        let reader =
            fs::File::from(rustix::io::dup(&master).map_err(|e| failed("opening a terminal", e))?);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<LogLine>>(64);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut reader = reader;
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if tx
                    .blocking_send(Ok(LogLine {
                        stderr: false,
                        text,
                    }))
                    .is_err()
                {
                    break;
                }
            }
        });
        let input = if stdin {
            let writer = fs::File::from(
                rustix::io::dup(&master).map_err(|e| failed("opening a terminal", e))?,
            );
            Some(Box::pin(tokio::fs::File::from_std(writer)) as crate::Input)
        } else {
            None
        };
        Ok(Session {
            output: Some(receiver(rx)),
            input,
            process: Box::new(ExecProcess {
                child: tokio::sync::Mutex::new(child),
                terminal: Some(master),
            }),
        })
    }

    /// Runs `f` on a container's root: a running one's as its processes
    /// see it (volumes and tmpfs included), through `/proc`; a stopped
    /// one's root filesystem, mounted for the while.
    pub(super) fn with_root<T>(
        &self,
        o: &Observed,
        f: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        if o.running() && o.status.pid > 0 {
            return f(Path::new(&format!("/proc/{}/root", o.status.pid)));
        }
        if o.status.phase == Phase::Restarting {
            return Err(refused(format!(
                "container {} is restarting: try again once it runs",
                o.record.name
            )));
        }
        let image = self.image_of(&o.record)?;
        let rootfs = bundle::mount_rootfs(&self.store, &image, &o.paths.dir, None, None)?;
        let result = f(&rootfs);
        let _ = bundle::unmount_rootfs(&o.paths.dir);
        result
    }

    /// Opens `path` inside a container's root, never leaving it.
    fn open_inside(&self, o: &Observed, root: &Path, path: &str) -> Result<OwnedFd> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        let root_fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| failed(format!("container {}", o.record.name), e))?;
        let rel = path.trim_start_matches('/');
        let rel = if rel.is_empty() { "." } else { rel };
        openat2(
            &root_fd,
            rel,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| {
            if e == rustix::io::Errno::NOENT {
                RuntimeError::NotFound {
                    kind: "path",
                    name: path.to_string(),
                }
            } else {
                failed(format!("container {}: {path}", o.record.name), e)
            }
        })
    }

    /// A tar archive as the container sees its owners (under a user
    /// namespace remap, the host's ids are the container's moved up).
    fn as_inside(&self, o: &Observed, tar: Vec<u8>) -> Result<Vec<u8>> {
        match &o.record.userns {
            Some(map) => map
                .shift_archive(&tar, super::userns::Direction::ToContainer)
                .map_err(|e| failed(format!("container {}", o.record.name), e)),
            None => Ok(tar),
        }
    }

    pub(super) fn archive_of(&self, key: &str, path: &str) -> Result<Vec<u8>> {
        let o = self.find_container(key)?;
        let tar = self.with_root(&o, |root| {
            let fd = self.open_inside(&o, root, path)?;
            let through = PathBuf::from(format!("/proc/self/fd/{}", fd_number(&fd)));
            let name = Path::new(path)
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_else(|| ".".into());
            let mut builder = tar::Builder::new(Vec::new());
            builder.follow_symlinks(false);
            // `through` is a link to what was opened; what it names is what
            // goes in (`X/.` is the directory itself).
            let meta = fs::metadata(&through).map_err(|e| failed(path, e))?;
            let result = if meta.is_dir() {
                builder.append_dir_all(&name, through.join("."))
            } else if meta.is_file() {
                fs::File::open(&through).and_then(|mut f| builder.append_file(&name, &mut f))
            } else {
                builder.append_path_with_name(&through, &name)
            };
            result.map_err(|e| failed(format!("copying {path}"), e))?;
            builder
                .into_inner()
                .map_err(|e| failed(format!("copying {path}"), e))
        })?;
        self.as_inside(&o, tar)
    }

    pub(super) fn extract_into(&self, key: &str, path: &str, tar: Vec<u8>) -> Result<()> {
        let o = self.find_container(key)?;
        // Owners as the container means them: its root is the map's.
        let tar = match &o.record.userns {
            Some(map) => map
                .shift_archive(&tar, super::userns::Direction::ToHost)
                .map_err(|e| failed(format!("copying into {path}"), e))?,
            None => tar,
        };
        self.with_root(&o, |root| {
            let fd = self.open_inside(&o, root, path)?;
            let through = PathBuf::from(format!("/proc/self/fd/{}", fd_number(&fd)));
            if !through.is_dir() {
                return Err(refused(format!(
                    "{path} is not a directory in the container"
                )));
            }
            super::unpack::unpack_tree(tar.as_slice(), &through)
                .map_err(|e| failed(format!("copying into {path}"), e))?;
            Ok(())
        })
    }

    /// The whole filesystem of a container as a tar archive (its root
    /// filesystem, mounted for the while when it is stopped), with the
    /// owners the container sees.
    pub(super) fn export_tar(&self, key: &str) -> Result<Vec<u8>> {
        let o = self.find_container(key)?;
        let image = self.image_of(&o.record)?;
        let mounted_here = !o.running();
        let rootfs = if mounted_here {
            bundle::mount_rootfs(&self.store, &image, &o.paths.dir, None, None)?
        } else {
            o.paths.rootfs()
        };
        let mut builder = tar::Builder::new(Vec::new());
        builder.follow_symlinks(false);
        let result = builder.append_dir_all(".", &rootfs);
        if mounted_here {
            let _ = bundle::unmount_rootfs(&o.paths.dir);
        }
        result.map_err(|e| failed(format!("exporting {}", o.record.name), e))?;
        let tar = builder
            .into_inner()
            .map_err(|e| failed(format!("exporting {}", o.record.name), e))?;
        self.as_inside(&o, tar)
    }

    /// `diff`: what the container changed, from its upper directory.
    pub(super) fn container_changes(&self, key: &str) -> Result<Vec<crate::Change>> {
        let o = self.find_container(key)?;
        let image = self.image_of(&o.record)?;
        let lower: Vec<PathBuf> = image
            .config_file
            .rootfs
            .diff_ids
            .iter()
            .rev()
            .map(|d| self.store.layer_root(d))
            .collect();
        Ok(super::changes::list(&o.paths.upper(), &lower))
    }

    /// `commit`: the image plus the container's changes as a layer, with
    /// the container's configuration.
    pub(super) fn commit_container(&self, key: &str, spec: &crate::CommitSpec) -> Result<String> {
        let o = self.find_container(key)?;
        let image = self.image_of(&o.record)?;
        let pause = spec.pause && o.running() && !o.paused;
        if pause {
            self.pause(key)?;
        }
        let mut layer = Vec::new();
        let written = super::changes::layer(&o.paths.upper(), &mut layer);
        if pause {
            let _ = self.unpause(key);
        }
        written.map_err(|e| failed(format!("committing {}", o.record.name), e))?;
        let layer = self.as_inside(&o, layer)?;
        let c = &o.record.spec;
        let mut config = image
            .config
            .get("config")
            .and_then(|v| v.as_object())
            .cloned()
            .unwrap_or_default();
        if !c.env.is_empty() {
            let mut env: Vec<String> = config
                .get("Env")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            for kv in &c.env {
                let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
                env.push(kv.clone());
            }
            config.insert("Env".into(), serde_json::json!(env));
        }
        if let Some(cmd) = &c.command {
            config.insert("Cmd".into(), serde_json::json!(cmd));
        }
        if let Some(ep) = &c.entrypoint {
            config.insert("Entrypoint".into(), serde_json::json!(ep));
        }
        if !c.working_dir.is_empty() {
            config.insert("WorkingDir".into(), serde_json::json!(c.working_dir));
        }
        if !c.user.is_empty() {
            config.insert("User".into(), serde_json::json!(c.user));
        }
        let reference = (!spec.reference.is_empty()).then_some(spec.reference.as_str());
        let id = super::archive::commit(
            &self.store,
            &image,
            layer.as_slice(),
            super::archive::Commit {
                config,
                changes: &spec.changes,
                name: reference,
                author: &spec.author,
                comment: &spec.message,
            },
        )?;
        Ok(id.to_string())
    }

    pub(super) async fn sample(&self, key: &str) -> Result<Stats> {
        let o = self.find_container(key)?;
        if !o.running() {
            return Ok(Stats::default());
        }
        let id = o.record.id.clone();
        let first = cgroup::read(&id);
        let t0 = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = cgroup::read(&id)
            .ok_or_else(|| refused(format!("container {}: no cgroup to read", o.record.name)))?;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        let elapsed = t0.elapsed().as_nanos() as f64;
        let used = second
            .cpu_ns
            .saturating_sub(first.map(|f| f.cpu_ns).unwrap_or(0)) as f64;
        let host_limit = host_memory();
        Ok(Stats {
            cpu_percent: if elapsed > 0.0 {
                used / elapsed * 100.0
            } else {
                0.0
            }
            .min(100.0 * cpus),
            memory_usage: second.memory,
            memory_limit: if second.memory_limit == 0 || second.memory_limit > host_limit {
                host_limit
            } else {
                second.memory_limit
            },
            net_io: net_io(o.status.pid),
            block_io: second.block_io,
            pids: second.pids,
        })
    }

    pub(super) fn processes(&self, key: &str) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        let o = self.find_container(key)?;
        if !o.running() {
            return Err(refused(format!("container {} is not running", o.record.id)));
        }
        let titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
            .map(str::to_string)
            .to_vec();
        let mut rows = Vec::new();
        for pid in cgroup::processes(&o.record.id) {
            if let Some(row) = ps_row(pid) {
                rows.push(row);
            }
        }
        Ok((titles, rows))
    }
}

/// One `ps -ef` row of a process, from /proc.
fn ps_row(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ppid = f.get(1)?.to_string();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let ticks = 100u64;
    let secs = (utime + stime) / ticks;
    let uid = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = cmdline
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    // As ps shows a process with no arguments (one between exec's steps,
    // or a zombie): its name in brackets.
    let cmd = if cmd.is_empty() {
        let comm = stat.split_once('(')?.1.rsplit_once(')')?.0;
        format!("[{comm}]")
    } else {
        cmd
    };
    Some(vec![
        uid,
        pid.to_string(),
        ppid,
        "0".into(),
        "-".into(),
        "?".into(),
        format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60),
        cmd,
    ])
}

/// Bytes received and sent on the interfaces of a process's network
/// namespace, loopback aside.
fn net_io(pid: i32) -> (u64, u64) {
    let text = fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            if name.trim() == "lo" {
                return None;
            }
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            Some((*f.first()?, *f.get(8)?))
        })
        .fold((0, 0), |(r, t), (a, b)| (r + a, t + b))
}

fn host_memory() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn fd_number(fd: &OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_fd().as_raw_fd()
}

/// Follows a container's log until the container is not running (with
/// `wait_for_start`, a created one is waited for first).
fn follow(
    rt: &NativeRuntime,
    id: &str,
    mut follower: Follower,
    tx: &tokio::sync::mpsc::Sender<Result<LogLine>>,
    timestamps: bool,
    wait_for_start: bool,
) {
    let mut started = !wait_for_start;
    loop {
        // Looked at before reading: what was written before it ended is
        // read after.
        let up = match rt.observe(id) {
            Ok(o) => {
                if o.status.phase != Phase::Created || o.status.started_at > 0 {
                    started = true;
                }
                matches!(o.status.phase, Phase::Running | Phase::Restarting)
                    || (!started && o.status.phase == Phase::Created)
            }
            Err(_) => false,
        };
        for e in follower.next_entries() {
            if tx.blocking_send(Ok(line(e, timestamps))).is_err() {
                return;
            }
        }
        if !up || tx.is_closed() {
            return;
        }
        std::thread::sleep(FOLLOW);
    }
}

fn receiver<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<Result<T>>) -> BoxStream<T> {
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// Passes an attach's input to the container's monitor once it runs.
async fn feed(
    rt: NativeRuntime,
    id: String,
    mut input: tokio::io::DuplexStream,
) -> std::io::Result<()> {
    let socket = rt.paths(&id).socket;
    loop {
        match rt.observe(&id) {
            Ok(o) if o.running() => break,
            Ok(o) if o.status.phase == Phase::Created && o.status.started_at == 0 => {}
            _ => return Ok(()),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut stream = tokio::net::UnixStream::connect(&socket).await?;
    stream.write_all(b"stdin\n").await?;
    tokio::io::copy(&mut input, &mut stream).await?;
    stream.shutdown().await?;
    // Held open until the monitor lets go, so that the input is not cut
    // short.
    let mut rest = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest).await;
    Ok(())
}

/// A process's input whose shutdown closes it (tokio's `ChildStdin` only
/// closes when dropped, and the session's user may hold it longer).
struct Closing<W>(Option<W>);

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Closing<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.0.as_mut() {
            Some(w) => std::pin::Pin::new(w).poll_write(cx, buf),
            None => std::task::Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.0.as_mut() {
            Some(w) => std::pin::Pin::new(w).poll_flush(cx),
            None => std::task::Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(w) = self.0.as_mut() {
            if std::pin::Pin::new(w).poll_flush(cx).is_pending() {
                return std::task::Poll::Pending;
            }
        }
        self.0 = None;
        std::task::Poll::Ready(Ok(()))
    }
}

/// A container's main process, as an attach sees it.
struct MainProcess {
    rt: NativeRuntime,
    id: String,
}

#[async_trait::async_trait]
impl Process for MainProcess {
    async fn resize(&self, width: u16, height: u16) -> Result<()> {
        let o = self.rt.observe(&self.id)?;
        if !o.running() {
            return Ok(());
        }
        let mut stream = tokio::net::UnixStream::connect(&o.paths.socket)
            .await
            .map_err(|e| failed("resizing the terminal", e))?;
        stream
            .write_all(format!("resize {width} {height}\n").as_bytes())
            .await
            .map_err(|e| failed("resizing the terminal", e))?;
        Ok(())
    }

    async fn wait(&self) -> Result<i64> {
        self.rt.wait(&self.id).await
    }
}

/// An exec'd command.
struct ExecProcess {
    child: tokio::sync::Mutex<tokio::process::Child>,
    terminal: Option<OwnedFd>,
}

#[async_trait::async_trait]
impl Process for ExecProcess {
    async fn resize(&self, width: u16, height: u16) -> Result<()> {
        let Some(master) = &self.terminal else {
            return Ok(());
        };
        rustix::termios::tcsetwinsize(
            master,
            rustix::termios::Winsize {
                ws_row: height,
                ws_col: width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .map_err(|e| failed("resizing the terminal", e))?;
        if let Some(pid) = self.child.lock().await.id() {
            let _ = super::shim::send_signal(pid as i32, 28);
        }
        Ok(())
    }

    async fn wait(&self) -> Result<i64> {
        let status = self
            .child
            .lock()
            .await
            .wait()
            .await
            .map_err(|e| failed("waiting for the command", e))?;
        use std::os::unix::process::ExitStatusExt;
        Ok(match (status.code(), status.signal()) {
            (Some(c), _) => i64::from(c),
            (None, Some(s)) => 128 + i64::from(s),
            _ => -1,
        })
    }
}

/// A detached exec: nothing to wait for.
struct Done;

#[async_trait::async_trait]
impl Process for Done {
    async fn resize(&self, _: u16, _: u16) -> Result<()> {
        Ok(())
    }
    async fn wait(&self) -> Result<i64> {
        Ok(0)
    }
}
