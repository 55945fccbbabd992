//! `rcompose-shim`, the monitor of one native container (conmon's job).
//!
//! The runtime starts it, detached, to start a container; it lives as long
//! as the container's main process, and through the restarts of its
//! restart policy:
//!
//! - it runs `runc run --detach` on the bundle, and is the
//!   subreaper the container's init is handed to, so it collects its exit
//!   status (through a pidfd, with no signal handling);
//! - it holds the container's standard streams (pipes, or the terminal's
//!   master side that runc passes over the console socket) and writes
//!   what comes out to the JSON log ([`super::logfile`]);
//! - it records the state in `status.json`, and appends `start`, `die`,
//!   `oom` and `health_status` events to the project's event log;
//! - it applies the restart policy with Docker's backoff (100 ms, doubled
//!   after each run shorter than 10 s, at most a minute) and runs health
//!   checks (`runc exec`) on their schedule;
//! - it answers on its control socket: `stdin` (what follows is the
//!   container's input), `resize W H`, `stop SIGNAL SECONDS` (answered when
//!   the container has ended) and `kill SIGNAL`.
//!
//! It reports to the runtime on its standard output: `ok` once the
//! container runs, or `error: …`, then closes it. One thread does the work,
//! with `poll`; a health check runs in a thread of its own while it lasts.

use std::collections::VecDeque;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{Pid, Signal};

use super::events;
use super::logfile::Writer;
use super::state::{
    now_nanos, read_json, write_json, HealthState, Phase, Probe, ProbeResult, ShimConfig, Status,
};

/// A signal's number from its name (`SIGTERM`, `TERM`) or number.
pub fn signal_number(name: &str) -> Option<i32> {
    let upper = name.trim().to_ascii_uppercase();
    if let Ok(n) = upper.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match bare {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "TRAP" => 5,
        "ABRT" | "IOT" => 6,
        "BUS" => 7,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        "STKFLT" => 16,
        "CHLD" => 17,
        "CONT" => 18,
        "STOP" => 19,
        "TSTP" => 20,
        "TTIN" => 21,
        "TTOU" => 22,
        "URG" => 23,
        "XCPU" => 24,
        "XFSZ" => 25,
        "VTALRM" => 26,
        "PROF" => 27,
        "WINCH" => 28,
        "IO" | "POLL" => 29,
        "PWR" => 30,
        "SYS" => 31,
        _ => {
            let rt = bare.strip_prefix("RTMIN")?;
            let off = if rt.is_empty() {
                0
            } else {
                rt.strip_prefix('+')?.parse::<i32>().ok()?
            };
            return (34 + off <= 64).then_some(34 + off);
        }
    };
    Some(n)
}

/// Sends a signal by number (real-time ones included) to a process.
pub fn send_signal(pid: i32, signal: i32) -> std::io::Result<()> {
    let pid = Pid::from_raw(pid).ok_or(std::io::ErrorKind::InvalidInput)?;
    let signal = Signal::from_named_raw(signal).ok_or(std::io::ErrorKind::InvalidInput)?;
    rustix::process::kill_process(pid, signal).map_err(std::io::Error::from)
}

/// The entry point of the `rcompose-shim` binary: `rcompose-shim DIR`.
/// Its other two uses: `--userns-holder` (see [`super::userns`]) and
/// `--network-hook DIR`, runc's `createRuntime` hook of a container in a
/// user namespace.
pub fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let first = args.next();
    match first.as_ref().and_then(|a| a.to_str()) {
        Some("--userns-holder") => return super::userns::hold(),
        Some("--network-hook") => {
            return match args.next().map(PathBuf::from) {
                Some(dir) => network_hook(&dir),
                None => ExitCode::from(2),
            }
        }
        _ => {}
    }
    let Some(dir) = first.map(PathBuf::from) else {
        eprintln!("usage: rcompose-shim CONTAINER-DIRECTORY");
        return ExitCode::from(2);
    };
    match Monitor::begin(&dir) {
        Ok(mut monitor) => {
            monitor.supervise();
            monitor.finish();
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(&format!("error: {e}"));
            ExitCode::from(1)
        }
    }
}

/// Sets up the networks of a container whose network namespace runc has
/// just made (in the container's user namespace): binds it where the
/// container's network record says, then runs netavark on it. runc gives
/// the container's state, with its pid, on standard input.
fn network_hook(dir: &Path) -> ExitCode {
    let done = (|| -> Result<(), String> {
        let mut input = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
            .map_err(|e| format!("reading the container's state: {e}"))?;
        let state: serde_json::Value =
            serde_json::from_str(&input).map_err(|e| format!("the container's state: {e}"))?;
        let pid = state["pid"]
            .as_i64()
            .ok_or("the container's state has no pid")?;
        let attached =
            super::network::attached(dir).ok_or("the container has no network record")?;
        rustix::mount::mount_bind(format!("/proc/{pid}/ns/net"), &attached.netns)
            .map_err(|e| format!("binding the network namespace: {e}"))?;
        super::network::setup(&attached).map_err(|e| e.to_string())
    })();
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Tells the runtime how the start went, then lets go of the streams it
/// reads.
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if let Ok(null) = fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}

/// One run of the container's main process.
struct Run {
    pid: i32,
    pidfd: OwnedFd,
    /// Standard output and error (or the terminal), while open.
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    /// Its standard input, while open.
    stdin: Option<OwnedFd>,
    started: Instant,
}

/// A client of the control socket.
struct Client {
    stream: UnixStream,
    /// Its bytes go to the container's input.
    input: bool,
}

/// A health check under way.
struct Check {
    thread: JoinHandle<ProbeResult>,
}

struct Monitor {
    dir: PathBuf,
    config: ShimConfig,
    status: Status,
    log: Writer,
    listener: UnixListener,
    clients: Vec<Client>,
    /// Clients waiting for the container to end (`stop`).
    waiting: Vec<UnixStream>,
    run: Option<Run>,
    /// When a stop's grace period ends.
    kill_at: Option<Instant>,
    /// When the restart policy starts it again.
    restart_at: Option<Instant>,
    backoff: Duration,
    next_probe: Option<Instant>,
    check: Option<Check>,
    /// Keeps `shim.lock` locked while the monitor lives.
    _lock: fs::File,
}

impl Monitor {
    fn begin(dir: &Path) -> Result<Monitor, String> {
        let _ = rustix::process::setsid();
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .map_err(|e| format!("becoming a subreaper: {e}"))?;
        let config: ShimConfig = read_json(&dir.join("shim.json")).map_err(|e| e.to_string())?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("shim.lock"))
            .map_err(|e| format!("opening the lock: {e}"))?;
        let mut locked = false;
        for _ in 0..50 {
            if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .is_ok()
            {
                locked = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !locked {
            return Err("the container already has a monitor".into());
        }
        let _ = fs::remove_file(&config.socket);
        if let Some(parent) = Path::new(&config.socket).parent() {
            let _ = fs::create_dir_all(parent);
        }
        let listener = UnixListener::bind(&config.socket)
            .map_err(|e| format!("listening on {}: {e}", config.socket))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("control socket: {e}"))?;
        let log = Writer::open(
            &dir.join("container.log"),
            config.log_max_size,
            config.log_max_files,
        )
        .map_err(|e| format!("opening the log: {e}"))?;
        let previous: Status = read_json(&dir.join("status.json")).unwrap_or_default();
        let status = Status {
            health: config.probe.as_ref().map(|_| HealthState {
                status: "starting".into(),
                failing_streak: 0,
                log: previous.health.map(|h| h.log).unwrap_or_default(),
            }),
            ..Status::default()
        };
        let mut monitor = Monitor {
            dir: dir.to_path_buf(),
            config,
            status,
            log,
            listener,
            clients: Vec::new(),
            waiting: Vec::new(),
            run: None,
            kill_at: None,
            restart_at: None,
            backoff: Duration::ZERO,
            next_probe: None,
            check: None,
            _lock: lock,
        };
        if let Err(e) = monitor.launch() {
            monitor.status.phase = Phase::Exited;
            monitor.status.exit_code = exit_code_of(&e);
            monitor.status.error = e.clone();
            monitor.status.finished_at = now_nanos();
            monitor.save();
            let _ = fs::remove_file(&monitor.config.socket);
            return Err(e);
        }
        report("ok");
        Ok(monitor)
    }

    fn save(&self) {
        let _ = write_json(&self.dir.join("status.json"), &self.status);
    }

    fn event(&self, action: &str, exit_code: Option<i64>) {
        events::append(
            Path::new(&self.config.events),
            &events::Record {
                time: now_nanos(),
                id: self.config.id.clone(),
                name: self.config.name.clone(),
                image: self.config.image.clone(),
                labels: self.config.labels.clone(),
                action: action.to_string(),
                exit_code,
                signal: None,
            },
        );
    }

    fn runc(&self) -> Command {
        let mut c = Command::new(&self.config.runc);
        c.arg("--root").arg(&self.config.runc_root);
        c
    }

    /// Runs a runc command to its end; its error as runc logged it.
    fn runc_call(&self, args: &[&str]) -> Result<(), String> {
        let log = self.dir.join("runc.log");
        let _ = fs::write(&log, b"");
        let status = self
            .runc()
            .arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("running {}: {e}", self.config.runc))?;
        if status.success() {
            Ok(())
        } else {
            Err(runc_error(&log).unwrap_or_else(|| format!("runc {}: {status}", args[0])))
        }
    }

    /// Creates and starts the container's main process.
    fn launch(&mut self) -> Result<(), String> {
        let id = self.config.id.clone();
        // What a previous run left with runc, if anything.
        if Path::new(&self.config.runc_root).join(&id).exists() {
            let _ = self.runc_call(&["delete", "--force", &id]);
        }
        let pid_file = self.dir.join("init.pid");
        let _ = fs::remove_file(&pid_file);
        let log = self.dir.join("runc.log");
        let _ = fs::write(&log, b"");
        let mut command = self.runc();
        command
            .arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("--detach")
            .arg("--bundle")
            .arg(&self.dir)
            .arg("--pid-file")
            .arg(&pid_file);
        let (mut out, mut err, mut stdin) = (None, None, None);
        let console = if self.config.tty {
            let path = PathBuf::from(format!("{}.tty", self.config.socket));
            let _ = fs::remove_file(&path);
            let listener = UnixListener::bind(&path).map_err(|e| format!("console socket: {e}"))?;
            command.arg("--console-socket").arg(&path);
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            Some((listener, path))
        } else {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            command
                .stdout(Stdio::from(out_w))
                .stderr(Stdio::from(err_w));
            if self.config.stdin_open {
                let (in_r, in_w) = pipe()?;
                command.stdin(Stdio::from(in_r));
                stdin = Some(in_w);
            } else {
                command.stdin(Stdio::null());
            }
            out = Some(out_r);
            err = Some(err_r);
            None
        };
        command.arg(&id);
        // `runc run --detach`: created and started in one call (one Go
        // process less than create then start). Run to its end, then
        // dropped: the container holds the only writing ends of its
        // output pipes.
        let created = command.status();
        drop(command);
        let created = created.map_err(|e| format!("running {}: {e}", self.config.runc))?;
        if !created.success() {
            if let Some((_, path)) = &console {
                let _ = fs::remove_file(path);
            }
            return Err(runc_error(&log).unwrap_or_else(|| format!("runc run: {created}")));
        }
        if let Some((listener, path)) = console {
            let master = receive_fd(&listener);
            let _ = fs::remove_file(&path);
            let master = master.map_err(|e| format!("receiving the terminal: {e}"))?;
            if self.config.stdin_open {
                stdin = Some(rustix::io::dup(&master).map_err(|e| format!("terminal input: {e}"))?);
            }
            out = Some(master);
        }
        let pid: i32 = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or("runc wrote no pid")?;
        let pidfd = Pid::from_raw(pid)
            .ok_or("a bad pid")
            .and_then(|p| {
                rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                    .map_err(|_| "the container's process is gone")
            })
            .map_err(str::to_string)?;
        for fd in [&out, &err].into_iter().flatten() {
            let _ = rustix::io::ioctl_fionbio(fd, true);
        }
        wait_for_exec(pid);
        self.run = Some(Run {
            pid,
            pidfd,
            out,
            err,
            stdin,
            started: Instant::now(),
        });
        self.status.phase = Phase::Running;
        self.status.pid = pid;
        self.status.started_at = now_nanos();
        self.status.error.clear();
        if let (Some(probe), Some(health)) = (&self.config.probe, self.status.health.as_mut()) {
            health.status = "starting".into();
            health.failing_streak = 0;
            self.next_probe = Some(Instant::now() + first_interval(probe));
        }
        self.save();
        self.event("start", None);
        Ok(())
    }

    /// Watches the container until it has ended for good.
    fn supervise(&mut self) {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            if self.run.is_none() && self.restart_at.is_none() {
                return;
            }
            let now = Instant::now();
            let mut deadlines: Vec<Instant> = [self.kill_at, self.restart_at, self.next_probe]
                .into_iter()
                .flatten()
                .collect();
            if self.check.is_some() {
                deadlines.push(now + Duration::from_millis(20));
            }
            let timeout = deadlines.into_iter().min().map(|d| {
                let left = d.saturating_duration_since(now);
                rustix::fs::Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: i64::from(left.subsec_nanos()),
                }
            });
            // The poll set: the listener, the clients, then the run's fds.
            let (ready, clients_ready, run_ready) = {
                let mut fds: Vec<PollFd> = vec![PollFd::new(&self.listener, PollFlags::IN)];
                for c in &self.clients {
                    fds.push(PollFd::new(&c.stream, PollFlags::IN));
                }
                let mut run_slots = [None; 3];
                if let Some(run) = &self.run {
                    run_slots[0] = Some(fds.len());
                    fds.push(PollFd::new(&run.pidfd, PollFlags::IN));
                    if let Some(out) = &run.out {
                        run_slots[1] = Some(fds.len());
                        fds.push(PollFd::new(out, PollFlags::IN));
                    }
                    if let Some(err) = &run.err {
                        run_slots[2] = Some(fds.len());
                        fds.push(PollFd::new(err, PollFlags::IN));
                    }
                }
                if poll(&mut fds, timeout.as_ref()).is_err() {
                    continue;
                }
                let flags: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
                let clients: Vec<bool> = flags[1..1 + self.clients.len()].to_vec();
                let run: [bool; 3] = run_slots.map(|s| s.is_some_and(|i| flags[i]));
                (flags[0], clients, run)
            };
            if run_ready[1] {
                self.read_output(false, &mut buf);
            }
            if run_ready[2] {
                self.read_output(true, &mut buf);
            }
            if ready {
                self.accept();
            }
            for (i, r) in clients_ready.iter().enumerate().rev() {
                if *r {
                    self.serve(i, &mut buf);
                }
            }
            if run_ready[0] {
                self.reap(&mut buf);
            }
            let now = Instant::now();
            if self.kill_at.is_some_and(|t| t <= now) {
                self.kill_at = None;
                if let Some(run) = &self.run {
                    let _ = send_signal(run.pid, 9);
                }
            }
            if self.restart_at.is_some_and(|t| t <= now) {
                self.restart_at = None;
                self.status.restart_count += 1;
                if let Err(e) = self.launch() {
                    self.status.phase = Phase::Exited;
                    self.status.error = e;
                    self.status.exit_code = 128;
                    self.status.finished_at = now_nanos();
                    self.save();
                }
            }
            self.health(now);
        }
    }

    fn read_output(&mut self, stderr: bool, buf: &mut [u8]) {
        let Some(run) = self.run.as_mut() else { return };
        let slot = if stderr { &mut run.err } else { &mut run.out };
        let Some(fd) = slot.as_ref() else { return };
        match rustix::io::read(fd, &mut *buf) {
            Ok(0) => *slot = None,
            Ok(n) => self.log.write(stderr, &buf[..n]),
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => {}
            // A terminal whose other side is closed reads EIO.
            Err(_) => *slot = None,
        }
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let Some(request) = read_line(&stream) else {
                continue;
            };
            let words: Vec<&str> = request.split_whitespace().collect();
            match words.as_slice() {
                ["stdin"] => {
                    let open = self.run.as_ref().is_some_and(|r| r.stdin.is_some());
                    if open {
                        let _ = stream.set_nonblocking(true);
                        self.clients.push(Client {
                            stream,
                            input: true,
                        });
                    }
                    // Otherwise dropped: the client sees its input closed.
                }
                ["resize", w, h] => {
                    if let (Some(run), Ok(w), Ok(h)) =
                        (self.run.as_ref(), w.parse::<u16>(), h.parse::<u16>())
                    {
                        if let Some(master) = run.out.as_ref().filter(|_| self.config.tty) {
                            let _ = rustix::termios::tcsetwinsize(
                                master,
                                rustix::termios::Winsize {
                                    ws_row: h,
                                    ws_col: w,
                                    ws_xpixel: 0,
                                    ws_ypixel: 0,
                                },
                            );
                        }
                    }
                    answer(stream, "ok");
                }
                ["stop", signal, seconds] => {
                    self.status.manual_stop = true;
                    self.save();
                    let signal = signal_number(signal).unwrap_or(15);
                    let seconds: u64 = seconds.parse().unwrap_or(10);
                    if self.run.is_none() {
                        // Waiting to restart: it stays down.
                        self.restart_at = None;
                        answer(stream, "ok");
                        continue;
                    }
                    if let Some(run) = &self.run {
                        let _ = send_signal(run.pid, signal);
                    }
                    let kill_at = Instant::now() + Duration::from_secs(seconds);
                    self.kill_at = Some(self.kill_at.map_or(kill_at, |k| k.min(kill_at)));
                    self.waiting.push(stream);
                }
                ["kill", signal] => {
                    let Some(signal) = signal_number(signal) else {
                        answer(stream, "error: unknown signal");
                        continue;
                    };
                    match &self.run {
                        Some(run) => {
                            // As Docker: a container a user killed is not
                            // brought back by its restart policy.
                            self.status.manual_stop = true;
                            self.save();
                            match send_signal(run.pid, signal) {
                                Ok(()) => answer(stream, "ok"),
                                Err(e) => answer(stream, &format!("error: {e}")),
                            }
                        }
                        None => answer(stream, "error: not running"),
                    }
                }
                _ => answer(stream, "error: unknown request"),
            }
        }
    }

    /// Input from a client to the container.
    fn serve(&mut self, i: usize, buf: &mut [u8]) {
        let n = match self.clients[i].stream.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => 0,
        };
        if n == 0 {
            let client = self.clients.remove(i);
            if client.input && self.config.stdin_once {
                if let Some(run) = self.run.as_mut() {
                    if self.config.tty {
                        // The terminal stays; its input ends with ^D.
                        if let Some(stdin) = run.stdin.as_ref() {
                            let _ = rustix::io::write(stdin, b"\x04");
                        }
                    } else {
                        run.stdin = None;
                    }
                }
            }
            return;
        }
        if let Some(stdin) = self.run.as_ref().and_then(|r| r.stdin.as_ref()) {
            let mut left = &buf[..n];
            while !left.is_empty() {
                match rustix::io::write(stdin, left) {
                    Ok(k) => left = &left[k..],
                    Err(rustix::io::Errno::INTR) => {}
                    Err(_) => break,
                }
            }
        }
    }

    /// The main process ended: record it, then restart or finish.
    fn reap(&mut self, buf: &mut [u8]) {
        let Some(pid) = self.run.as_ref().map(|r| r.pid) else {
            return;
        };
        let Some(raw) = Pid::from_raw(pid) else {
            return;
        };
        let code = match rustix::process::waitpid(Some(raw), rustix::process::WaitOptions::NOHANG) {
            Ok(Some((_, status))) => match (status.exit_status(), status.terminating_signal()) {
                (Some(code), _) => i64::from(code),
                (None, Some(sig)) => 128 + i64::from(sig),
                _ => return,
            },
            Ok(None) => return,
            // Not our child after all (it cannot be waited for): gone.
            Err(_) => 255,
        };
        // What it wrote last: the pipes close as soon as the rest of the
        // container is gone, which follows its init at once.
        let deadline = Instant::now() + Duration::from_millis(500);
        while self
            .run
            .as_ref()
            .is_some_and(|r| r.out.is_some() || r.err.is_some())
            && Instant::now() < deadline
        {
            let (o, e) = {
                let Some(run) = self.run.as_ref() else { break };
                let mut fds = Vec::new();
                if let Some(o) = &run.out {
                    fds.push(PollFd::new(o, PollFlags::IN));
                }
                if let Some(e) = &run.err {
                    fds.push(PollFd::new(e, PollFlags::IN));
                }
                let t = rustix::fs::Timespec {
                    tv_sec: 0,
                    tv_nsec: 50_000_000,
                };
                if poll(&mut fds, Some(&t)).unwrap_or(0) == 0 {
                    break;
                }
                let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
                let mut it = ready.into_iter();
                (
                    if run.out.is_some() {
                        it.next().unwrap_or(false)
                    } else {
                        false
                    },
                    if run.err.is_some() {
                        it.next().unwrap_or(false)
                    } else {
                        false
                    },
                )
            };
            if o {
                self.read_output(false, buf);
            }
            if e {
                self.read_output(true, buf);
            }
        }
        self.log.flush();
        let Some(run) = self.run.take() else { return };
        let oom = oom_killed(&self.config.memory_cgroup);
        let _ = self.runc_call(&["delete", "--force", &self.config.id]);
        // Inputs of this run end with it.
        self.clients.retain(|c| !c.input);
        self.kill_at = None;
        self.next_probe = None;
        self.status.pid = 0;
        self.status.exit_code = code;
        self.status.oom_killed = oom;
        self.status.finished_at = now_nanos();
        if oom {
            self.event("oom", None);
        }
        self.event("die", Some(code));
        let again = !self.status.manual_stop
            && match self.config.restart.as_str() {
                "always" | "unless-stopped" => true,
                "on-failure" => {
                    code != 0
                        && (self.config.max_retries == 0
                            || self.status.restart_count < self.config.max_retries)
                }
                _ => false,
            };
        if again {
            // Docker's backoff: doubled after a short run, reset after a
            // long one.
            self.backoff =
                if run.started.elapsed() >= Duration::from_secs(10) || self.backoff.is_zero() {
                    Duration::from_millis(100)
                } else {
                    (self.backoff * 2).min(Duration::from_secs(60))
                };
            self.restart_at = Some(Instant::now() + self.backoff);
            self.status.phase = Phase::Restarting;
        } else {
            self.status.phase = Phase::Exited;
        }
        self.save();
    }

    fn health(&mut self, now: Instant) {
        let Some(probe) = self.config.probe.clone() else {
            return;
        };
        if let Some(check) = self.check.take() {
            if !check.thread.is_finished() {
                self.check = Some(check);
                return;
            }
            let result = check.thread.join().unwrap_or_default();
            let Some(run) = &self.run else { return };
            let in_start_period =
                run.started.elapsed() < Duration::from_millis(probe.start_period_ms);
            let Some(health) = self.status.health.as_mut() else {
                return;
            };
            let before = health.status.clone();
            if result.exit_code == 0 {
                health.status = "healthy".into();
                health.failing_streak = 0;
            } else if !(in_start_period && health.status == "starting") {
                health.failing_streak += 1;
                if health.failing_streak >= probe.retries.max(1) {
                    health.status = "unhealthy".into();
                }
            }
            health.log.push(result);
            while health.log.len() > 5 {
                health.log.remove(0);
            }
            let after = health.status.clone();
            let interval = if in_start_period && after == "starting" {
                first_interval(&probe)
            } else {
                Duration::from_millis(probe.interval_ms)
            };
            self.next_probe = Some(now + interval);
            self.save();
            if after != before {
                self.event(&format!("health_status: {after}"), None);
            }
            return;
        }
        if self.next_probe.is_none_or(|t| t > now) || self.run.is_none() {
            return;
        }
        if self.dir.join("paused").exists() {
            self.next_probe = Some(now + Duration::from_millis(probe.interval_ms));
            return;
        }
        self.next_probe = None;
        let mut command = self.runc();
        command
            .arg("exec")
            .arg(&self.config.id)
            .args(&probe.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let timeout = Duration::from_millis(probe.timeout_ms.max(1));
        let thread = std::thread::spawn(move || check(command, timeout));
        self.check = Some(Check { thread });
    }

    /// The container has ended for good: answer the stops, let go of the
    /// root filesystem and the socket.
    fn finish(&mut self) {
        if let Some(check) = self.check.take() {
            let _ = check.thread.join();
        }
        // Nobody asked for this end of a service's container: balancers
        // get a moment to follow the names before the address goes. Not
        // for a one-off of `run`, whose end its command waits for.
        let oneoff = crate::is_oneoff(&self.config.labels);
        let grace = if self.waiting.is_empty() && !oneoff {
            super::network::CRASH_GRACE
        } else {
            Duration::ZERO
        };
        super::network::teardown_after(&self.dir, grace);
        let _ = super::bundle::unmount_rootfs(&self.dir);
        let _ = fs::remove_file(&self.config.socket);
        self.status.phase = Phase::Exited;
        self.save();
        // A stop is answered once nothing of the run is left.
        for w in self.waiting.drain(..) {
            answer(w, "ok");
        }
    }
}

/// The interval before the first check, and between checks during the
/// start period.
fn first_interval(probe: &Probe) -> Duration {
    if probe.start_period_ms > 0 && probe.start_interval_ms > 0 {
        Duration::from_millis(probe.start_interval_ms)
    } else {
        Duration::from_millis(probe.interval_ms)
    }
}

/// Runs one health check: its exit code (-1 when it timed out) and output.
fn check(mut command: Command, timeout: Duration) -> ProbeResult {
    let start = jiff::Timestamp::now().to_string();
    let mut result = ProbeResult {
        start,
        ..Default::default()
    };
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            result.exit_code = 1;
            result.output = format!("cannot run the check: {e}");
            result.end = jiff::Timestamp::now().to_string();
            return result;
        }
    };
    let readers: Vec<JoinHandle<Vec<u8>>> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if kept.len() < 4096 {
                    kept.extend_from_slice(&buf[..n.min(4096 - kept.len())]);
                }
            }
            kept
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break i64::from(status.code().unwrap_or(1)),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break -1;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break 1,
        }
    };
    let mut output = Vec::new();
    for r in readers {
        output.extend(r.join().unwrap_or_default());
    }
    result.exit_code = code;
    result.output = if code == -1 {
        format!("Health check exceeded timeout ({}s)", timeout.as_secs_f64())
    } else {
        String::from_utf8_lossy(&output).into_owned()
    };
    result.end = jiff::Timestamp::now().to_string();
    result
}

/// Whether the kernel killed a process of the memory cgroup for lack of
/// memory (v2's `memory.events`, v1's `memory.oom_control`).
fn oom_killed(cgroup: &str) -> bool {
    if cgroup.is_empty() {
        return false;
    }
    let dir = Path::new(cgroup);
    let count = |file: &str| -> u64 {
        fs::read_to_string(dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    };
    count("memory.events") > 0 || count("memory.oom_control") > 0
}

/// The error runc logged last (its log is JSON lines with `level` and
/// `msg`).
pub fn runc_error(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v.get("level")?.as_str()? == "error")
            .then(|| v.get("msg")?.as_str().map(str::to_string))?
    })
}

/// The exit code Docker gives a container whose process could not start.
fn exit_code_of(error: &str) -> i64 {
    if error.contains("executable file not found") || error.contains("no such file or directory") {
        127
    } else if error.contains("permission denied") {
        126
    } else {
        128
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

fn read_line(mut stream: &UnixStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 256 {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return String::from_utf8(line).ok(),
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    None
}

fn answer(mut stream: UnixStream, line: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = writeln!(stream, "{line}");
}

/// Waits, briefly, until the container's first process has left runc's
/// init for its own program. `runc run --detach` returns once it has
/// released the process, which execs its command an instant later; the
/// container counts as started (for `top`, `exec`, a healthcheck) only
/// when it runs its command. Bounded: a process that never leaves runc
/// is runc's business, and the monitor goes on.
fn wait_for_exec(pid: i32) {
    let exe = format!("/proc/{pid}/exe");
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        match fs::read_link(&exe) {
            Ok(target) if !target.to_string_lossy().contains("runc") => return,
            Ok(_) => std::thread::sleep(Duration::from_micros(500)),
            Err(_) => return,
        }
    }
}

/// Receives the terminal's master side that runc sends over the console
/// socket.
fn receive_fd(listener: &UnixListener) -> std::io::Result<OwnedFd> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    use std::mem::MaybeUninit;
    listener.set_nonblocking(false)?;
    let (stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 4096];
    rustix::net::recvmsg(
        stream.as_fd(),
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut found = VecDeque::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            found.extend(fds);
        }
    }
    found
        .pop_front()
        .ok_or_else(|| std::io::Error::other("no terminal was sent"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_known_by_name_and_number() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("kill"), Some(9));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGRTMIN+3"), Some(37));
        assert_eq!(signal_number("SIGNOPE"), None);
        assert_eq!(signal_number("0"), None);
    }
}
