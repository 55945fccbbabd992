//! The native runtime through the binary: a compose project run with no
//! daemon (up, ps, port, logs, exec, scale, down, with nothing left on the
//! host after), a monitor killed under a running container, bad input
//! refused with nothing half-made, and the workshop's security demos on
//! the native runtime and on the Docker Engine alike.
//!
//! They need root, runc, netavark and /bin/busybox (the
//! README's test command installs them); without one they say SKIPPED,
//! and under `CI=true` they fail instead, as the CI machine has them all.
//! Each test has a state root and a project name of its own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rcompose_tests::{docker_available, is_root, rcompose_bin, require, stderr, stdout};

/// Whether the native runtime can run containers here; says why not
/// (and fails under CI, where it must).
fn native_ready() -> bool {
    require(is_root(), "root")
        && require(
            Command::new("runc").arg("--version").output().is_ok(),
            "runc",
        )
        && require(Path::new("/usr/lib/podman/netavark").exists(), "netavark")
        && require(Path::new("/bin/busybox").exists(), "/bin/busybox")
}

/// Whether the Docker Engine and busybox (for the test images) are here;
/// says why not (and fails under CI, where they must be).
fn docker_ready() -> bool {
    require(docker_available(), "the Docker Engine")
        && require(Path::new("/bin/busybox").exists(), "/bin/busybox")
}

/// A project on the native runtime with a state root of its own; `down`
/// and the root removed when dropped.
struct Project {
    name: String,
    dir: PathBuf,
    root: PathBuf,
    runtime: &'static str,
    /// Variables every command of it gets.
    env: Vec<(&'static str, String)>,
    /// Held while a native project lives (dropped after its `down`).
    _serial: Option<std::fs::File>,
}

impl Project {
    fn new(tag: &str, runtime: &'static str) -> Project {
        // Native projects one at a time, across the test processes: their
        // networks share the host's firewall chains, and a container once
        // reached another network's address under load (ARCHITECTURE.md,
        // native networking, "Isolation and Docker's rules").
        let serial = (runtime == "native").then(|| {
            let lock = std::fs::File::create(std::env::temp_dir().join("rctn-native.lock"))
                .unwrap_or_else(|e| panic!("{e}"));
            lock.lock().unwrap_or_else(|e| panic!("{e}"));
            lock
        });
        let name = format!("rctn-{tag}-{}", std::process::id());
        let base = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("project");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        Project {
            name,
            root: base.join("state"),
            dir,
            runtime,
            env: Vec::new(),
            _serial: serial,
        }
    }

    fn with_env(mut self, key: &'static str, value: &str) -> Project {
        self.env.push((key, value.to_string()));
        self
    }

    fn write(&self, file: &str, content: &str) {
        let path = self.dir.join(file);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(path, content).unwrap_or_else(|e| panic!("{e}"));
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(rcompose_bin());
        cmd.env("RCOMPOSE_ROOT", &self.root)
            .env("NO_COLOR", "1")
            .arg("--runtime")
            .arg(self.runtime)
            .arg("-p")
            .arg(&self.name)
            .current_dir(&self.dir);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn rc(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running rcompose: {e}"))
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.rc(args);
        assert!(
            o.status.success(),
            "rcompose {args:?} failed:\n{}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// A busybox image `rctn-<tag>-<pid>:1` in the project's runtime; its
    /// name.
    fn busybox_image(&self, tag: &str) -> String {
        let image = format!("rctn-{tag}-{}:1", std::process::id());
        let tarball = rootfs_tarball(&self.dir, &[]);
        self.import(&tarball, &image);
        image
    }

    /// Imports a root filesystem tarball into the project's runtime as
    /// `name`.
    fn import(&self, tarball: &Path, name: &str) {
        if self.runtime == "native" {
            let o = self.rc(&["image", "import", &tarball.display().to_string(), name]);
            assert!(o.status.success(), "import: {}", stderr(&o));
        } else {
            let mut docker = Command::new("docker");
            for (k, v) in &self.env {
                docker.env(k, v);
            }
            let o = docker
                .args(["import", &tarball.display().to_string(), name])
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(o.status.success(), "docker import: {}", stderr(&o));
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.rc(&["down", "-v", "-t", "0"]);
        let base = self
            .root
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let _ = std::fs::remove_dir_all(base);
    }
}

/// A root filesystem with busybox (and `extra` host binaries with their
/// libraries), as a tarball in `dir`.
fn rootfs_tarball(dir: &Path, extra: &[&str]) -> PathBuf {
    let root = dir.join("rootfs");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "tmp", "etc", "data"] {
        std::fs::create_dir_all(root.join(d)).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut perms = std::fs::metadata(root.join("tmp"))
        .unwrap_or_else(|e| panic!("{e}"))
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o1777);
    let _ = std::fs::set_permissions(root.join("tmp"), perms);
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap_or_else(|e| panic!("{e}"));
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.contains('/') {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
        .unwrap_or_else(|e| panic!("{e}"));
    // Host binaries with the libraries `ldd` names, at the same paths.
    for binary in extra {
        let mut files = vec![binary.to_string()];
        let ldd = Command::new("ldd")
            .arg(binary)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            if let Some(path) = line
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(str::to_string)
            {
                files.push(path);
            }
        }
        for f in files {
            let target = root.join(f.trim_start_matches('/'));
            if let Some(parent) = target.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let real = std::fs::canonicalize(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
            std::fs::copy(&real, &target).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }
    let tarball = dir.join("rootfs.tar");
    let o = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "tar: {}", stderr(&o));
    tarball
}

/// `GET /` on a host port; the body.
fn http_get(port: u16) -> Option<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not reached in time");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the host holds of a state root: mounts under it, monitors, network
/// namespaces, bridges of its networks.
fn leftovers(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let root_text = root.display().to_string();
    for line in std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
    {
        if line.contains(&root_text) {
            found.push(format!("mount: {line}"));
        }
    }
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let ours = cmdline.contains("rcompose-shim") || cmdline.contains("rcompose-dns");
            if ours && cmdline.contains(&root_text) {
                found.push(format!("process: {cmdline}"));
            }
        }
    }
    if let Ok(names) = std::fs::read_dir(root.join("run/dns")) {
        for n in names.flatten() {
            if n.path().extension().is_some_and(|x| x == "json") {
                found.push(format!("names: {}", n.path().display()));
            }
        }
    }
    if let Ok(netns) = std::fs::read_dir(root.join("run/netns")) {
        for n in netns.flatten() {
            found.push(format!("netns: {}", n.path().display()));
        }
    }
    if let Ok(containers) = std::fs::read_dir(root.join("containers")) {
        for c in containers.flatten() {
            if c.file_name() != "by-name" {
                found.push(format!("container: {}", c.path().display()));
            }
        }
    }
    found
}

#[test]
fn the_busybox_web_example_runs_without_a_daemon() {
    if !native_ready() {
        return;
    }
    let p = Project::new("web", "native");
    let example = rcompose_tests::workspace().join("compose-examples/busybox-web");
    p.write(
        "compose.yaml",
        &std::fs::read_to_string(example.join("compose.yaml")).unwrap_or_else(|e| panic!("{e}")),
    );
    p.write("www/index.html", "<h1>hello natively</h1>\n");
    let tarball = rootfs_tarball(&p.dir, &[]);
    p.import(&tarball, "local/busybox:latest");

    p.ok(&["up", "-d"]);
    let ps = p.ok(&["ps"]);
    assert!(ps.contains("(healthy)"), "db healthy after up: {ps}");
    assert_eq!(ps.lines().filter(|l| l.contains(" Up ")).count(), 2, "{ps}");
    let port = |index: &str| -> u16 {
        let out = p.ok(&["port", "--index", index, "web", "8080"]);
        out.trim()
            .rsplit(':')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("port: {out:?}"))
    };
    let first = port("1");
    eventually("web answers on its published port", || {
        http_get(first).is_some_and(|b| b.contains("hello natively"))
    });
    let out = p.ok(&[
        "exec",
        "-T",
        "web",
        "sh",
        "-c",
        "cat /www/index.html; hostname",
    ]);
    assert!(out.starts_with("<h1>hello natively</h1>\n"), "{out}");
    // The service names resolve on the project network.
    // Names follow a start at once; a container's first lookups may
    // still race its network's first record.
    eventually("db resolves web", || {
        stdout(&p.rc(&["exec", "-T", "db", "nslookup", "web"])).contains("Address: 10.")
    });
    p.ok(&[
        "exec",
        "-T",
        "web",
        "sh",
        "-c",
        "echo to-the-log > /proc/1/fd/1",
    ]);
    eventually("the log holds what the main process wrote", || {
        p.ok(&["logs", "web"]).contains("to-the-log")
    });

    p.ok(&["scale", "web=2"]);
    let ps = p.ok(&["ps", "web"]);
    assert_eq!(ps.lines().filter(|l| l.contains(" Up ")).count(), 2, "{ps}");
    let second = port("2");
    assert_ne!(first, second);
    eventually("the second replica answers", || {
        http_get(second).is_some_and(|b| b.contains("hello natively"))
    });
    eventually("both replicas answer to the service name", || {
        stdout(&p.rc(&["exec", "-T", "db", "nslookup", "web"]))
            .lines()
            .filter(|l| l.starts_with("Address: 10."))
            .count()
            == 2
    });

    p.ok(&["down", "-t", "0"]);
    let left = leftovers(&p.root);
    assert!(left.is_empty(), "down left: {left:#?}");
    assert!(p.ok(&["ps", "-a"]).lines().count() <= 1);
}

#[test]
fn a_killed_monitor_leaves_an_exited_container_and_up_converges() {
    if !native_ready() {
        return;
    }
    let p = Project::new("ghost", "native");
    p.write(
        "compose.yaml",
        "services:\n  app:\n    image: local/busybox:latest\n    command: [\"sleep\", \"300\"]\n",
    );
    let tarball = rootfs_tarball(&p.dir, &[]);
    p.import(&tarball, "local/busybox:latest");
    p.ok(&["up", "-d"]);
    // Kill the monitor with SIGKILL, as a crash would.
    let root = p.root.display().to_string();
    let shims: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
            (cmdline.contains("rcompose-shim") && cmdline.contains(&root)).then_some(pid)
        })
        .collect();
    assert_eq!(shims.len(), 1, "one monitor: {shims:?}");
    let _ = Command::new("kill")
        .arg("-9")
        .arg(shims[0].to_string())
        .status();
    eventually("the container reads as exited", || {
        p.ok(&["ps", "-a"]).contains("Exited")
    });
    assert!(p.ok(&["ps"]).lines().count() <= 1, "no running ghost");
    p.ok(&["up", "-d"]);
    let ps = p.ok(&["ps"]);
    assert!(ps.contains(" Up "), "up converges: {ps}");
    p.ok(&["down", "-t", "0"]);
    let left = leftovers(&p.root);
    assert!(left.is_empty(), "down left: {left:#?}");
}

#[test]
fn commands_on_one_project_wait_for_each_other() {
    if !native_ready() {
        return;
    }
    let p = Project::new("serial", "native");
    p.write(
        "compose.yaml",
        "services:\n  a:\n    image: local/busybox:latest\n    command: [\"sleep\", \"300\"]\n    stop_signal: SIGKILL\n  b:\n    image: local/busybox:latest\n    command: [\"sleep\", \"300\"]\n    stop_signal: SIGKILL\n",
    );
    let tarball = rootfs_tarball(&p.dir, &[]);
    p.import(&tarball, "local/busybox:latest");
    // Hold the project's lock as another command would: `up` waits for it,
    // says so, and changes nothing meanwhile.
    let locks = p.root.join("run").join("locks");
    std::fs::create_dir_all(&locks).unwrap_or_else(|e| panic!("{e}"));
    let held = std::fs::File::create(locks.join(format!("{}.lock", p.name)))
        .unwrap_or_else(|e| panic!("{e}"));
    held.lock().unwrap_or_else(|e| panic!("{e}"));
    let err_path = p.dir.join("up.err");
    let mut up = p
        .command()
        .args(["up", "-d"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap_or_else(|e| panic!("{e}")))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    eventually("up says it waits", || {
        std::fs::read_to_string(&err_path)
            .unwrap_or_default()
            .contains("Waiting for another rcompose command on project")
    });
    assert_eq!(
        p.ok(&["ps", "-a", "-q"]).trim(),
        "",
        "nothing is created while another command holds the project"
    );
    drop(held);
    let status = up.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        status.success(),
        "up: {}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    // Three at once: one set of containers, every command succeeds.
    p.ok(&["down", "-t", "0"]);
    let ups: Vec<_> = (0..3)
        .map(|_| {
            p.command()
                .args(["up", "-d"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    for up in ups {
        let o = up.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        assert!(o.status.success(), "concurrent up: {}", stderr(&o));
    }
    let ps = p.ok(&["ps", "-a", "--format", "json"]);
    let mut lines: Vec<String> = ps
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            format!(
                "{} {}",
                v["Name"].as_str().unwrap_or(""),
                v["State"].as_str().unwrap_or("")
            )
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("{}-a-1 running", p.name),
            format!("{}-b-1 running", p.name)
        ],
        "one container per service"
    );
}

#[test]
fn bad_input_is_one_clear_error_with_nothing_half_made() {
    if !native_ready() {
        return;
    }
    let p = Project::new("bad", "native");
    let tarball = rootfs_tarball(&p.dir, &[]);
    p.import(&tarball, "local/busybox:latest");
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("{e}"));
    let busy = held.local_addr().map(|a| a.port()).unwrap_or(0);
    p.write("afile", "not a directory\n");
    let cases = [
        (
            "services:\n  app:\n    image: local/nothing-here:1\n    pull_policy: never\n",
            "local/nothing-here",
        ),
        (
            &*format!("services:\n  app:\n    image: local/busybox:latest\n    command: [\"sleep\", \"300\"]\n    ports: [\"{busy}:80\"]\n"),
            "port is already allocated",
        ),
        (
            "services:\n  app:\n    image: local/busybox:latest\n    command: [\"sleep\", \"300\"]\n    volumes: [\"./afile:/tmp\"]\n",
            "app",
        ),
    ];
    for (compose, says) in cases {
        p.write("compose.yaml", compose);
        let o = p.rc(&["up", "-d"]);
        let err = stderr(&o);
        assert!(!o.status.success(), "up should fail for:\n{compose}");
        assert!(err.contains(says), "the error names {says:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        let left: Vec<String> = leftovers(&p.root)
            .into_iter()
            .filter(|l| !l.starts_with("container:"))
            .collect();
        assert!(left.is_empty(), "a failed up left: {left:#?}");
        p.ok(&["down", "-t", "0"]);
    }
    drop(held);
}

/// The workshop's security demos, on one runtime: capabilities, seccomp,
/// process and memory limits, read-only volumes and root filesystems.
fn security_demos(runtime: &'static str) {
    let p = Project::new(&format!("sec-{runtime}"), runtime);
    let image = format!("rctn-secure-{}:1", std::process::id());
    let tarball = rootfs_tarball(&p.dir, &["/usr/bin/keyctl"]);
    p.import(&tarball, &image);
    p.write(
        "compose.yaml",
        &format!(
            r#"services:
  nocap:
    image: {image}
    command: ["hostname", "rct-demo"]
  cap:
    image: {image}
    cap_add: [SYS_ADMIN]
    command: ["hostname", "rct-demo"]
  keys:
    image: {image}
    command: ["keyctl", "show"]
  keysfree:
    image: {image}
    security_opt: ["seccomp=unconfined"]
    command: ["keyctl", "show"]
  forkbomb:
    image: {image}
    pids_limit: 20
    command: ["sh", "-c", "i=0; while [ $$i -lt 60 ]; do sleep 1 & i=$$((i+1)); done; wait; echo all-forked"]
  forks:
    image: {image}
    command: ["sh", "-c", "i=0; while [ $$i -lt 60 ]; do sleep 1 & i=$$((i+1)); done; wait; echo all-forked"]
  oom:
    image: {image}
    mem_limit: 32m
    memswap_limit: 32m
    command: ["sh", "-c", "x=$$(head -c 60000000 /dev/zero | tr '\\0' a); echo survived"]
  rovol:
    image: {image}
    volumes: ["data:/data:ro"]
    command: ["touch", "/data/x"]
  init:
    image: {image}
    init: true
    command: ["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo"]
  rofs:
    image: {image}
    read_only: true
    tmpfs: ["/tmp"]
    command: ["sh", "-c", "touch /tmp/fine && touch /x"]
volumes:
  data: {{}}
"#
        ),
    );
    let run = |service: &str| -> Output { p.rc(&["run", "--rm", "-T", service]) };
    let o = run("nocap");
    assert!(!o.status.success(), "{runtime}: hostname without SYS_ADMIN");
    let o = run("cap");
    assert!(
        o.status.success(),
        "{runtime}: hostname with SYS_ADMIN: {}",
        stderr(&o)
    );
    let o = run("keys");
    assert!(
        !o.status.success(),
        "{runtime}: keyctl under the default seccomp profile: {}",
        stdout(&o)
    );
    let o = run("keysfree");
    assert!(
        o.status.success(),
        "{runtime}: keyctl with seccomp=unconfined: {}{}",
        stdout(&o),
        stderr(&o)
    );
    // 60 processes: fine without a limit, held at the 20th with one.
    let o = run("forks");
    assert!(
        o.status.success() && stdout(&o).contains("all-forked"),
        "{runtime}: 60 processes without a limit: {}",
        stderr(&o)
    );
    let o = run("forkbomb");
    assert!(
        !o.status.success() && stderr(&o).contains("can't fork"),
        "{runtime}: the fork bomb is held by pids_limit: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = p.rc(&["run", "--name", &format!("{}-oom", p.name), "-T", "oom"]);
    assert_eq!(
        o.status.code(),
        Some(137),
        "{runtime}: 60 MB under a 32 MB limit is killed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let oom_recorded = if runtime == "native" {
        std::fs::read_dir(p.root.join("containers"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|c| {
                std::fs::read_to_string(c.path().join("status.json"))
                    .is_ok_and(|s| s.contains("\"oom_killed\": true"))
            })
    } else {
        let o = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{.State.OOMKilled}}",
                &format!("{}-oom", p.name),
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        stdout(&o).trim() == "true"
    };
    assert!(oom_recorded, "{runtime}: the kill is recorded as OOM");
    let o = run("rovol");
    assert!(!o.status.success(), "{runtime}: a write to a :ro volume");
    let o = run("rofs");
    assert!(
        !o.status.success() && stderr(&o).contains("Read-only"),
        "{runtime}: a write to a read-only root filesystem: {}",
        stderr(&o)
    );
    let o = run("init");
    assert!(
        stdout(&o).starts_with("/sbin/docker-init -- sh -c"),
        "{runtime}: init: true puts an init as PID 1: {}{}",
        stdout(&o),
        stderr(&o)
    );
    let _ = p.rc(&["rm", "-f", "oom"]);
    if runtime == "docker" {
        let _ = Command::new("docker")
            .args(["rm", "-f", &format!("{}-oom", p.name)])
            .output();
        let _ = Command::new("docker").args(["rmi", &image]).output();
    }
}

#[test]
fn the_security_demos_hold_natively() {
    if !native_ready() {
        return;
    }
    if !require(
        Path::new("/usr/bin/keyctl").exists(),
        "keyctl (Debian's keyutils)",
    ) {
        return;
    }
    security_demos("native");
}

#[test]
fn the_security_demos_hold_on_docker() {
    if !docker_ready()
        || !require(
            Path::new("/usr/bin/keyctl").exists(),
            "keyctl (Debian's keyutils)",
        )
    {
        return;
    }
    security_demos("docker");
}

/// The host ids of Docker's `dockremap` in /etc/subuid and /etc/subgid
/// (the README's test command writes them when the host has none).
fn dockremap() -> Option<(u32, u32)> {
    let first = |file: &str| -> Option<u32> {
        std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
            l.strip_prefix("dockremap:")?
                .split(':')
                .next()?
                .parse()
                .ok()
        })
    };
    Some((first("/etc/subuid")?, first("/etc/subgid")?))
}

/// The workshop's user-namespace remap, on one runtime (with the remap
/// on: rcompose's `RCOMPOSE_USERNS_REMAP`, or a Docker daemon's
/// `--userns-remap`): the container's root is the host's `dockremap`
/// range, what it writes to a bind mount is that id's on the host, `top`
/// shows its processes under it, it can still write its own root
/// filesystem and volumes, `exec` joins it, and `userns_mode: host` opts
/// a service out.
fn userns_demo(p: &Project) {
    let runtime = p.runtime;
    let (uid, gid) = dockremap().unwrap_or_else(|| panic!("no dockremap range in /etc/subuid"));
    let image = p.busybox_image("remap");
    let shared = p.dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap_or_else(|e| panic!("{e}"));
    let mut perms = std::fs::metadata(&shared)
        .unwrap_or_else(|e| panic!("{e}"))
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o1777);
    std::fs::set_permissions(&shared, perms).unwrap_or_else(|e| panic!("{e}"));
    p.write(
        "compose.yaml",
        &format!(
            r#"services:
  remapped:
    image: {image}
    stop_signal: SIGKILL
    command: ["sh", "-c", "touch /etc/made && touch /shared/made && cat /proc/self/uid_map && exec sleep 2147483647"]
    volumes: ["./shared:/shared", "data:/data"]
  web:
    image: {image}
    stop_signal: SIGKILL
    command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]
  host:
    image: {image}
    userns_mode: host
    command: ["cat", "/proc/self/uid_map"]
  privileged:
    image: {image}
    privileged: true
    command: ["true"]
volumes:
  data: {{}}
"#
        ),
    );
    p.ok(&["up", "-d", "remapped", "web"]);
    eventually(&format!("{runtime}: the remapped container's map"), || {
        let logs = p.ok(&["logs", "--no-log-prefix", "remapped"]);
        let map: Vec<&str> = logs.split_whitespace().collect();
        map.len() == 3 && map[0] == "0" && map[1] == uid.to_string()
    });
    let made = std::fs::metadata(shared.join("made")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&made),
            std::os::unix::fs::MetadataExt::gid(&made)
        ),
        (uid, gid),
        "{runtime}: a file the container's root writes is the remapped id's"
    );
    let top = p.ok(&["top", "remapped"]);
    assert!(
        top.lines()
            .any(|l| l.starts_with(&uid.to_string()) && l.contains("sleep")),
        "{runtime}: top shows the process under the remapped id:\n{top}"
    );
    let id = p.ok(&[
        "exec",
        "-T",
        "remapped",
        "sh",
        "-c",
        "touch /data/x && id -u",
    ]);
    assert_eq!(
        id.trim(),
        "0",
        "{runtime}: exec joins the namespace as its root"
    );
    // Files cross the namespace with the owners the container sees.
    p.write("in.txt", "in\n");
    p.ok(&["cp", "in.txt", "remapped:/tmp/in.txt"]);
    let owner = p.ok(&[
        "exec",
        "-T",
        "remapped",
        "stat",
        "-c",
        "%u:%g",
        "/tmp/in.txt",
    ]);
    assert_eq!(
        owner.trim(),
        "0:0",
        "{runtime}: cp writes files the container's root owns"
    );
    let exported = p.dir.join("remapped.tar");
    p.ok(&["export", "-o", &exported.display().to_string(), "remapped"]);
    let listing = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-tvf")
        .arg(&exported)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let listing = stdout(&listing);
    for file in ["etc/made", "bin/busybox", "tmp/in.txt"] {
        assert!(
            listing
                .lines()
                .any(|l| l.ends_with(file) && l.split_whitespace().nth(1) == Some("0/0")),
            "{runtime}: export shows {file} owned by the container's root:\n{listing}"
        );
    }
    // And from a stopped container.
    p.ok(&["stop", "remapped"]);
    let copied = p.dir.join("made.out");
    p.ok(&["cp", "remapped:/etc/made", &copied.display().to_string()]);
    assert!(copied.exists(), "{runtime}: cp from a stopped container");
    p.ok(&["start", "remapped"]);
    if runtime == "native" {
        // Names and addresses work from inside the namespace.
        eventually("native: web answers by name from the namespace", || {
            let o = p.rc(&[
                "exec",
                "-T",
                "remapped",
                "sh",
                "-c",
                "printf 'GET /passwd HTTP/1.0\\r\\n\\r\\n' | nc web 8080",
            ]);
            stdout(&o).contains("root:x:0:0")
        });
        let o = p.rc(&["run", "--rm", "-T", "privileged"]);
        assert!(
            !o.status.success() && stderr(&o).contains("userns_mode: host"),
            "native: privileged with the remap is refused with the way out: {}",
            stderr(&o)
        );
    }
    let o = p.rc(&["run", "--rm", "-T", "host"]);
    assert!(
        o.status.success() && stdout(&o).contains("4294967295"),
        "{runtime}: userns_mode: host runs with the host's ids: {}{}",
        stdout(&o),
        stderr(&o)
    );
    p.ok(&["down", "-v", "-t", "0"]);
    if runtime == "native" {
        let left = leftovers(&p.root);
        assert!(left.is_empty(), "native: down left: {left:#?}");
    }
}

#[test]
fn a_user_namespace_remap_maps_root_to_an_unprivileged_id_natively() {
    if !native_ready() {
        return;
    }
    if !require(
        dockremap().is_some(),
        "a dockremap range in /etc/subuid and /etc/subgid",
    ) {
        return;
    }
    let p = Project::new("remap-native", "native").with_env("RCOMPOSE_USERNS_REMAP", "default");
    userns_demo(&p);
}

/// A second Docker daemon with `--userns-remap=default`, state of its own
/// under `dir`, a default bridge of its own, no firewall rules; stopped and
/// removed when dropped.
struct RemapDaemon {
    dir: PathBuf,
    bridge: String,
    child: std::process::Child,
}

impl RemapDaemon {
    fn start(dir: &Path) -> RemapDaemon {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        // Its own configuration file: the host's may name a data root.
        std::fs::write(dir.join("daemon.json"), "{}").unwrap_or_else(|e| panic!("{e}"));
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap_or_else(|e| panic!("{e}"));
        // Not `--bridge=none`: a daemon without a default bridge deletes
        // `docker0`, the host daemon's. A bridge of its own, made here.
        let bridge = format!("rctnrm{}", std::process::id() % 100_000);
        let o = Command::new("ip")
            .args(["link", "add", &bridge, "type", "bridge"])
            .output()
            .unwrap_or_else(|e| panic!("ip link add: {e}"));
        assert!(o.status.success(), "ip link add {bridge}: {}", stderr(&o));
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--userns-remap=default")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .arg(format!("--bridge={bridge}"))
            .args(["--iptables=false", "--ip6tables=false", "--ip-masq=false"])
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting dockerd: {e}"));
        let daemon = RemapDaemon {
            dir: dir.to_path_buf(),
            bridge,
            child,
        };
        eventually("the remapping Docker daemon answers", || {
            Command::new("docker")
                .env("DOCKER_HOST", daemon.host())
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        daemon
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }
}

impl Drop for RemapDaemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .output();
        let _ = self.child.wait();
        // What the daemon may have left mounted under its state.
        let dir = self.dir.display().to_string();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&dir))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = Command::new("umount").arg("-l").arg(m).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

#[test]
fn a_user_namespace_remap_maps_root_to_an_unprivileged_id_on_docker() {
    if !docker_ready()
        || !require(
            Command::new("dockerd").arg("--version").output().is_ok(),
            "dockerd",
        )
        || !require(
            dockremap().is_some(),
            "a dockremap range in /etc/subuid and /etc/subgid",
        )
    {
        return;
    }
    let docker0 = || Path::new("/sys/class/net/docker0").exists();
    let had_docker0 = docker0();
    let daemon = RemapDaemon::start(
        &std::env::temp_dir().join(format!("rctn-dockerd-{}", std::process::id())),
    );
    let p = Project::new("remap-docker", "docker").with_env("DOCKER_HOST", &daemon.host());
    userns_demo(&p);
    drop(p);
    drop(daemon);
    assert!(
        !had_docker0 || docker0(),
        "the second daemon leaves the host daemon's docker0 in place"
    );
}

/// The workshop's copy-on-write demo, on one runtime: `diff` lists what a
/// container added, changed and deleted; `commit` makes an image with it;
/// `image rm` of an image a container uses needs force.
fn cow_demo(runtime: &'static str) {
    let p = Project::new(&format!("cow-{runtime}"), runtime);
    let image = format!("rctn-cow-{}:1", std::process::id());
    let committed = format!("rctn-cow-{}:committed", std::process::id());
    let tarball = rootfs_tarball(&p.dir, &[]);
    p.import(&tarball, &image);
    p.write(
        "compose.yaml",
        &format!(
            "services:\n  app:\n    image: {image}\n    command: [\"sh\", \"-c\", \"echo new > /tmp/new && echo more >> /etc/passwd && rm /etc/group && exec sleep 300\"]\n    stop_signal: SIGKILL\n"
        ),
    );
    p.ok(&["up", "-d"]);
    eventually("the changes are made", || {
        !p.ok(&["exec", "-T", "app", "ls", "/etc"]).contains("group")
    });
    let diff = p.ok(&["diff", "app"]);
    for line in [
        "A /tmp/new",
        "C /etc/passwd",
        "D /etc/group",
        "C /etc",
        "C /tmp",
    ] {
        assert!(
            diff.lines().any(|l| l == line),
            "{runtime}: diff lists {line:?}:\n{diff}"
        );
    }
    p.ok(&[
        "commit",
        "-c",
        "CMD [\"cat\", \"/tmp/new\"]",
        "app",
        &committed,
    ]);
    let o = p.rc(&["image", "rm", &image]);
    let refused = if runtime == "native" {
        !o.status.success() && stderr(&o).contains("must force")
    } else {
        // `rcompose image` is the native store's command; Docker's own
        // refuses the same.
        let o = Command::new("docker")
            .args(["image", "rm", &image])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        !o.status.success()
    };
    assert!(
        refused,
        "{runtime}: an image a container uses is not removed without force"
    );
    p.ok(&["down", "-t", "0"]);
    p.write(
        "compose.yaml",
        &format!("services:\n  again:\n    image: {committed}\n"),
    );
    let o = p.rc(&["run", "--rm", "-T", "again"]);
    assert_eq!(
        stdout(&o),
        "new\n",
        "{runtime}: the committed image holds the change and its CMD: {}",
        stderr(&o)
    );
    let o = p.rc(&[
        "run",
        "--rm",
        "-T",
        "again",
        "sh",
        "-c",
        "tail -n 1 /etc/passwd; ls /etc/group",
    ]);
    assert!(
        stdout(&o).starts_with("more\n") && !o.status.success(),
        "{runtime}: the change and the deletion are in the layer: {}{}",
        stdout(&o),
        stderr(&o)
    );
    if runtime == "docker" {
        let _ = Command::new("docker")
            .args(["rmi", &committed, &image])
            .output();
    }
}

#[test]
fn diff_and_commit_show_the_copy_on_write_natively() {
    if !native_ready() {
        return;
    }
    cow_demo("native");
}

#[test]
fn diff_and_commit_show_the_copy_on_write_on_docker() {
    if !docker_ready() {
        return;
    }
    cow_demo("docker");
}

/// The workshop's `docker update --memory`, from the file: changing only
/// resource limits changes them in the running container (same container,
/// same process); removing one recreates it.
fn limits_demo(runtime: &'static str) {
    let p = Project::new(&format!("limits-{runtime}"), runtime);
    let image = p.busybox_image("limits");
    let file = |limits: &str| {
        format!(
            "services:\n  app:\n    image: {image}\n    command: [\"sleep\", \"300\"]\n    stop_signal: SIGKILL\n{limits}"
        )
    };
    // The container's own cgroup, as it sees it (v1 or v2).
    let read_limits = || {
        p.ok(&[
            "exec",
            "-T",
            "app",
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max",
        ])
    };
    p.write("compose.yaml", &file("    mem_limit: 32m\n"));
    p.ok(&["up", "-d"]);
    let id = p.ok(&["ps", "-q", "app"]);
    let pid = p.ok(&["exec", "-T", "app", "sh", "-c", "pidof sleep"]);
    assert_eq!(
        read_limits(),
        "33554432\nmax\n",
        "{runtime}: the first limits"
    );

    p.write(
        "compose.yaml",
        &file("    mem_limit: 64m\n    pids_limit: 50\n"),
    );
    let o = p.rc(&["up", "-d"]);
    assert!(
        o.status.success() && stderr(&o).contains("Updated"),
        "{runtime}: up updates the limits: {}",
        stderr(&o)
    );
    assert_eq!(
        p.ok(&["ps", "-q", "app"]),
        id,
        "{runtime}: the same container"
    );
    assert_eq!(
        p.ok(&["exec", "-T", "app", "sh", "-c", "pidof sleep"]),
        pid,
        "{runtime}: the same process"
    );
    assert_eq!(read_limits(), "67108864\n50\n", "{runtime}: the new limits");
    let o = p.rc(&["up", "-d"]);
    assert!(
        o.status.success() && !stderr(&o).contains("Updat") && !stderr(&o).contains("Recreat"),
        "{runtime}: a second up changes nothing: {}",
        stderr(&o)
    );

    // Back to the first file: the creation hash matches again, the
    // limits do not; they go back in place.
    p.write(
        "compose.yaml",
        &file("    mem_limit: 32m\n    pids_limit: 50\n"),
    );
    p.ok(&["up", "-d"]);
    assert_eq!(
        p.ok(&["ps", "-q", "app"]),
        id,
        "{runtime}: still the same container"
    );
    assert_eq!(
        read_limits(),
        "33554432\n50\n",
        "{runtime}: the limits lowered"
    );

    // A limit removed: only a new container drops it.
    p.write("compose.yaml", &file("    mem_limit: 32m\n"));
    p.ok(&["up", "-d"]);
    assert_ne!(p.ok(&["ps", "-q", "app"]), id, "{runtime}: recreated");
    assert_eq!(read_limits(), "33554432\nmax\n", "{runtime}: no pids limit");
    p.ok(&["down", "-t", "0"]);
}

#[test]
fn limits_change_in_place_natively() {
    if !native_ready() {
        return;
    }
    limits_demo("native");
}

#[test]
fn limits_change_in_place_on_docker() {
    if !docker_ready() {
        return;
    }
    limits_demo("docker");
}

/// `run` prints everything a one-off wrote, a last line without a newline
/// included (on Docker it reaches the log only as the output closes).
fn last_line_demo(runtime: &'static str) {
    let p = Project::new(&format!("lastline-{runtime}"), runtime);
    let image = p.busybox_image("lastline");
    p.write(
        "compose.yaml",
        &format!("services:\n  app:\n    image: {image}\n"),
    );
    for _ in 0..5 {
        let o = p.rc(&[
            "run",
            "--rm",
            "-T",
            "app",
            "sh",
            "-c",
            "echo first; printf last; printf oops >&2",
        ]);
        assert!(o.status.success(), "{runtime}: run: {}", stderr(&o));
        assert_eq!(stdout(&o), "first\nlast", "{runtime}: all of stdout");
        assert!(
            stderr(&o).ends_with("oops"),
            "{runtime}: all of stderr: {}",
            stderr(&o)
        );
    }
}

#[test]
fn run_prints_a_last_line_without_a_newline_natively() {
    if !native_ready() {
        return;
    }
    last_line_demo("native");
}

#[test]
fn run_prints_a_last_line_without_a_newline_on_docker() {
    if !docker_ready() {
        return;
    }
    last_line_demo("docker");
}

/// The addresses a name resolves to inside `service`'s container.
fn resolve(p: &Project, service: &str, name: &str) -> Vec<String> {
    let o = p.rc(&["exec", "-T", service, "nslookup", name]);
    stdout(&o)
        .lines()
        .filter_map(|l| l.strip_prefix("Address: "))
        .map(|a| a.trim().to_string())
        .collect()
}

/// Whether `from` gets an HTTP answer from `target` (a name or an address)
/// on port 8080.
fn reaches(p: &Project, from: &str, target: &str) -> bool {
    let o = p.rc(&[
        "exec",
        "-T",
        from,
        "sh",
        "-c",
        &format!("printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {target} 8080"),
    ]);
    stdout(&o).contains("200 OK")
}

/// A network namespace of the test's own behind a veth pair, outside every
/// container network, serving HTTP on port 8080 at `address`; removed
/// when dropped.
struct Outside {
    name: String,
    link: String,
    server: std::process::Child,
    address: String,
}

impl Outside {
    fn new() -> Outside {
        let id = std::process::id();
        let name = format!("rctn-out-{id}");
        let link = format!("rctno{}", id % 100_000);
        let net = format!("10.251.{}", id % 250);
        let ip = |args: &[&str]| {
            let o = Command::new("ip")
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("ip: {e}"));
            assert!(o.status.success(), "ip {args:?}: {}", stderr(&o));
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        ip(&["addr", "add", &format!("{net}.1/30"), "dev", &link]);
        ip(&["link", "set", &link, "up"]);
        let inside = [
            format!("addr add {net}.2/30 dev eth0"),
            "link set eth0 up".to_string(),
            "link set lo up".to_string(),
            format!("route add default via {net}.1"),
        ];
        for args in &inside {
            let mut all = vec!["netns", "exec", name.as_str(), "ip"];
            all.extend(args.split_whitespace());
            ip(&all);
        }
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &name,
                "/bin/busybox",
                "httpd",
                "-f",
                "-p",
                "8080",
                "-h",
                "/etc",
            ])
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        Outside {
            name,
            link,
            server,
            address: format!("{net}.2"),
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Compose's networking as users rely on it, on one runtime: names per
/// network, isolation between networks (even by address), replicas behind
/// one name, `links` aliases, an `internal` network with no way out, and
/// published ports and port ranges from loopback.
fn networks_demo(runtime: &'static str) {
    let p = Project::new(&format!("net-{runtime}"), runtime);
    let image = p.busybox_image("net");
    // Host ports of this test's own: a range of two from the process id.
    let base = 21000 + (std::process::id() % 4000) as u16 * 2;
    let httpd = r#"["httpd", "-f", "-p", "8080", "-h", "/etc"]"#;
    p.write(
        "compose.yaml",
        &format!(
            r#"services:
  left:
    image: {image}
    command: {httpd}
    stop_signal: SIGKILL
    networks: [front]
  right:
    image: {image}
    command: {httpd}
    stop_signal: SIGKILL
    networks: [back]
  middle:
    image: {image}
    command: {httpd}
    stop_signal: SIGKILL
    networks: [front, back]
    links: ["right:r-alias"]
  web:
    image: {image}
    command: {httpd}
    stop_signal: SIGKILL
    networks: [back]
  sealed:
    image: {image}
    command: ["sleep", "300"]
    stop_signal: SIGKILL
    networks: [inside]
  published:
    image: {image}
    command: ["sh", "-c", "httpd -p 8081 -h /etc; exec httpd -f -p 8080 -h /etc"]
    stop_signal: SIGKILL
    networks: [front]
    ports: ["127.0.0.1:{base}-{}:8080-8081"]
networks:
  front: {{}}
  back: {{}}
  inside:
    internal: true
"#,
            base + 1
        ),
    );
    p.ok(&["up", "-d"]);
    // As Docker sets it in a container's own network namespace: any user
    // may bind a low port (a balancer running as nobody on port 80).
    let start = p.ok(&[
        "exec",
        "-T",
        "left",
        "cat",
        "/proc/sys/net/ipv4/ip_unprivileged_port_start",
    ]);
    assert_eq!(start.trim(), "0", "{runtime}: unprivileged low ports");

    // The middle one reaches both sides by name.
    eventually(&format!("{runtime}: middle reaches left and right"), || {
        reaches(&p, "middle", "left") && reaches(&p, "middle", "right")
    });
    if runtime == "native" {
        // A DNS server that is killed comes back with the next command
        // that looks at the containers.
        let root = p.root.display().to_string();
        let mut killed = Vec::new();
        for proc in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = std::fs::read(proc.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("rcompose-dns") && cmdline.contains(&root) {
                let pid = proc.file_name().to_string_lossy().into_owned();
                let _ = Command::new("kill").args(["-9", &pid]).status();
                killed.push(pid);
            }
        }
        assert_eq!(killed.len(), 1, "native: one DNS server: {killed:?}");
        eventually("native: the killed DNS server is gone", || {
            std::fs::read_to_string(format!("/proc/{}/stat", killed[0])).map_or(true, |s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
        });
        p.ok(&["ps"]);
        eventually("native: names answer again after ps", || {
            resolve(&p, "middle", "left").len() == 1
        });
    }
    // The outer ones do not know each other's names, nor reach the address.
    assert!(
        resolve(&p, "left", "right").is_empty(),
        "{runtime}: left does not resolve right"
    );
    let right = resolve(&p, "middle", "right");
    assert_eq!(
        right.len(),
        1,
        "{runtime}: right has one address: {right:?}"
    );
    if reaches(&p, "left", &right[0]) {
        let host = |cmd: &[&str]| {
            Command::new(cmd[0])
                .args(&cmd[1..])
                .output()
                .map(|o| stdout(&o))
                .unwrap_or_default()
        };
        panic!(
            "{runtime}: left cannot reach right's address {}\nleft: {}\nright: {}\nFORWARD:\n{}\nroutes:\n{}\nlinks:\n{}",
            right[0],
            p.ok(&["exec", "-T", "left", "sh", "-c", "ip -4 addr; ip route"]),
            p.ok(&["exec", "-T", "right", "sh", "-c", "ip -4 addr"]),
            host(&["iptables", "-S"]),
            host(&["ip", "-4", "route"]),
            host(&["ip", "-br", "-4", "addr"]),
        );
    }
    assert!(
        reaches(&p, "middle", &right[0]),
        "{runtime}: middle reaches right's address"
    );
    // A links alias.
    assert!(
        reaches(&p, "middle", "r-alias"),
        "{runtime}: the links alias r-alias names right"
    );

    // Three replicas behind one name.
    p.ok(&["scale", "web=3"]);
    eventually(&format!("{runtime}: web has three addresses"), || {
        resolve(&p, "middle", "web").len() == 3
    });

    // The internal network has no way out: an address outside the host's
    // networks (a namespace of this test's) answers the others, not it.
    let outside = Outside::new();
    eventually(&format!("{runtime}: left reaches the outside"), || {
        reaches(&p, "left", &outside.address)
    });
    assert!(
        !reaches(&p, "sealed", &outside.address),
        "{runtime}: an internal network reaches nothing outside"
    );
    drop(outside);

    // A published range answers from loopback, port by port.
    for port in [base, base + 1] {
        eventually(&format!("{runtime}: 127.0.0.1:{port} answers"), || {
            http_get(port).is_some()
        });
    }

    // What the host holds of the project's networks, gone with down.
    let subnets: Vec<String> = ["left", "right", "sealed"]
        .iter()
        .flat_map(|s| {
            p.ok(&["exec", "-T", s, "ip", "route"])
                .lines()
                .filter(|l| l.contains("scope link"))
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(subnets.len(), 3, "{runtime}: three subnets: {subnets:?}");
    p.ok(&["down", "-t", "0"]);
    let routes = Command::new("ip")
        .args(["route", "show"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let rules = Command::new("iptables-save")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let nat = Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    for subnet in &subnets {
        for (what, text) in [
            ("route", stdout(&routes)),
            ("rule", stdout(&rules)),
            ("nat rule", stdout(&nat)),
        ] {
            assert!(
                !text.contains(subnet.as_str()),
                "{runtime}: a {what} for {subnet} is left after down:\n{text}"
            );
        }
    }
    for port in [base, base + 1] {
        assert!(
            !stdout(&nat).contains(&format!("--dport {port} ")),
            "{runtime}: the forwarding of port {port} is left after down"
        );
    }
    if runtime == "native" {
        let left = leftovers(&p.root);
        assert!(left.is_empty(), "native: down left: {left:#?}");
    }
}

#[test]
fn networks_names_isolation_and_ports_natively() {
    if !native_ready() {
        return;
    }
    networks_demo("native");
}

#[test]
fn networks_names_isolation_and_ports_on_docker() {
    if !docker_ready() {
        return;
    }
    networks_demo("docker");
}

/// Requests to a service's name spread across its replicas, as the name
/// answers with every replica in rotating order.
fn replicas_demo(runtime: &'static str) {
    let p = Project::new(&format!("spread-{runtime}"), runtime);
    let image = p.busybox_image("spread");
    p.write(
        "compose.yaml",
        &format!(
            "services:\n  web:\n    image: {image}\n    command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/etc\"]\n    stop_signal: SIGKILL\n    scale: 3\n  client:\n    image: {image}\n    command: [\"sleep\", \"300\"]\n    stop_signal: SIGKILL\n"
        ),
    );
    p.ok(&["up", "-d"]);
    eventually(&format!("{runtime}: web has three addresses"), || {
        resolve(&p, "client", "web").len() == 3
    });
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let o = p.rc(&[
            "exec",
            "-T",
            "client",
            "sh",
            "-c",
            "printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 2 web 8080 | tail -n 1",
        ]);
        answered.insert(stdout(&o).trim().to_string());
        if answered.len() == 3 {
            break;
        }
    }
    assert_eq!(
        answered.len(),
        3,
        "{runtime}: requests to web reach every replica: {answered:?}"
    );
    p.ok(&["down", "-t", "0"]);
}

#[test]
fn replicas_share_requests_by_name_natively() {
    if !native_ready() {
        return;
    }
    replicas_demo("native");
}

#[test]
fn replicas_share_requests_by_name_on_docker() {
    if !docker_ready() {
        return;
    }
    replicas_demo("docker");
}

/// Clients sending `GET /` to `addr` in a loop, each on a new connection,
/// counting answers other than 200 (and connection errors) as failures.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let (mut ok, mut failures) = (0u64, Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let asked = chrono_now();
                        match http_status(port) {
                            Ok(200) => ok += 1,
                            Ok(status) => failures.push(format!("status {status} (asked {asked})")),
                            Err(e) => failures.push(format!("{e} (asked {asked})")),
                        }
                    }
                    (ok, failures)
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the clients: requests that succeeded, and the failures.
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut ok = 0;
        let mut failures = Vec::new();
        for t in self.threads {
            let (o, f) = t
                .join()
                .unwrap_or_else(|_| panic!("a load client panicked"));
            ok += o;
            failures.extend(f);
        }
        (ok, failures)
    }
}

/// The time of day, to set a failure beside the logs.
fn chrono_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", now.as_secs() % 86_400, now.subsec_millis())
}

/// The status of one `GET /` on loopback `port`.
fn http_status(port: u16) -> std::io::Result<u16> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {answer:?}")))
}

#[test]
fn the_seed_frontend_drops_no_request_while_scaling_natively() {
    if !native_ready() {
        return;
    }
    let p = Project::new("seed", "native");
    let tarball = rootfs_tarball(&p.dir, &[]);
    p.import(&tarball, "local/busybox:latest");
    // The workshop's frontend as its file has it, socket volume included:
    // there is no engine natively, and the balancer follows names instead.
    p.write(
        "compose.yaml",
        r#"services:
  web:
    image: local/busybox:latest
    command: ["sh", "-c", "hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    expose: ["80"]
    tmpfs: [/www]
    stop_grace_period: 2s
  frontend:
    image: dockercloud/haproxy
    links:
      - web
    ports:
      - "80"
    environment:
      BALANCE: roundrobin
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock
"#,
    );
    p.ok(&["up", "-d"]);
    let out = p.ok(&["port", "frontend", "80"]);
    let port: u16 = out
        .trim()
        .rsplit(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("port: {out:?}"));
    eventually("the frontend serves web", || {
        http_status(port).ok() == Some(200)
    });

    let scale = |arg: &str| {
        eprintln!("scale {arg} from {}", chrono_now());
        let o = p.rc(&["scale", arg]);
        eprintln!("scale {arg} done {}", chrono_now());
        assert!(o.status.success(), "scale {arg}: {}", stderr(&o));
        assert!(
            !stderr(&o).contains("balancer not told"),
            "scale {arg} told the balancer: {}",
            stderr(&o)
        );
    };
    let load = Load::start(port, 4);
    std::thread::sleep(Duration::from_millis(500));
    scale("web=3");
    // Every replica serves, through the frontend.
    let mut hosts = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while hosts.len() < 3 {
        if let Some(body) = http_get(port) {
            hosts.insert(body.trim().to_string());
        }
        assert!(
            Instant::now() < deadline,
            "three replicas answer through the frontend: {hosts:?}\n{}\n{}",
            p.ok(&["ps"]),
            p.ok(&["logs", "frontend"])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    scale("web=1");
    std::thread::sleep(Duration::from_millis(500));
    scale("web=2");
    std::thread::sleep(Duration::from_millis(500));
    // A crash that rcompose did not cause: the replica's process killed
    // from the host.
    let ps = p.ok(&["ps", "--format", "json", "web"]);
    let id = ps
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["Name"].as_str().is_some_and(|n| n.ends_with("-web-2")))
        .and_then(|v| v["ID"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("web-2 in {ps}"));
    let dir = std::fs::read_dir(p.root.join("containers"))
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&id))
        .unwrap_or_else(|| panic!("the state of {id}"));
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("status.json")).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pid = status["pid"].as_i64().unwrap_or(0);
    assert!(pid > 0, "web-2's process: {status}");
    eprintln!("SIGKILL to web-2 at {}", chrono_now());
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    std::thread::sleep(Duration::from_millis(500));
    scale("web=1");
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failures) = load.finish();
    eprintln!(
        "native, under load, scaling 1 -> 3 -> 1 -> 2, SIGKILL of a replica, -> 1: {ok} requests succeeded, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests: {failures:?} (seconds of the day)\n{}",
        p.ok(&["logs", "-t", "frontend"])
    );
    assert!(ok > 50, "too few requests to prove anything: {ok}");
    p.ok(&["down", "-t", "0"]);
    let left = leftovers(&p.root);
    assert!(left.is_empty(), "down left: {left:#?}");
}

/// The workshop's stack as compose-examples/workshop has it, built and run
/// by one runtime: the counter climbs by one per request through the
/// frontend, three replicas answer after `scale php=3` and no request fails
/// while scaling 1 -> 3 -> 1, `down` removes everything, and a second
/// `up -d --build` takes every step from the build cache.
fn workshop_demo(runtime: &'static str) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose-examples/workshop");
    // A free port for the frontend.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let p = Project::new(&format!("ws-{runtime}"), runtime)
        .with_env("WORKSHOP_PORT", &port.to_string());
    for file in [
        "compose.yaml",
        "php/Dockerfile",
        "php/index.php",
        "redis/Dockerfile",
    ] {
        let text = std::fs::read_to_string(example.join(file)).unwrap_or_else(|e| panic!("{e}"));
        p.write(file, &text);
    }
    // The Debian base the Dockerfiles start from, in this runtime.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/base-image");
    let base = Command::new(&script)
        .env("RCOMPOSE_ROOT", &p.root)
        .env("RCOMPOSE_RUNTIME", runtime)
        .env("RCOMPOSE_BIN", rcompose_bin())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        base.status.success(),
        "scripts/base-image: {}{}",
        stdout(&base),
        stderr(&base)
    );

    let built = p.rc(&["up", "-d", "--build"]);
    assert!(
        built.status.success(),
        "{runtime}: up -d --build:\n{}{}",
        stdout(&built),
        stderr(&built)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_status(port).ok() != Some(200) {
        assert!(
            Instant::now() < deadline,
            "{runtime}: the frontend does not serve php: {:?}\n{}\n{}",
            http_get(port),
            p.ok(&["ps", "-a"]),
            p.ok(&["logs", "-t"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // One visit per request, counted in Redis.
    let visits = |body: &str| -> (u64, String) {
        let count = body
            .lines()
            .find_map(|l| l.strip_prefix("visits: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{runtime}: no counter in {body:?}"));
        let host = body
            .lines()
            .find_map(|l| l.strip_prefix("served by: "))
            .unwrap_or_default()
            .trim()
            .to_string();
        (count, host)
    };
    let counts: Vec<u64> = (0..5)
        .map(|_| visits(&http_get(port).unwrap_or_default()).0)
        .collect();
    for pair in counts.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{runtime}: the counter: {counts:?}");
    }

    // Scaling 1 -> 3 -> 1 under load: three replicas answer, nothing fails.
    let load = Load::start(port, 2);
    p.ok(&["scale", "php=3"]);
    let mut hosts = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while hosts.len() < 3 {
        if let Some(body) = http_get(port) {
            hosts.insert(visits(&body).1);
        }
        assert!(
            Instant::now() < deadline,
            "{runtime}: three replicas answer: {hosts:?}\n{}",
            p.ok(&["ps"])
        );
    }
    p.ok(&["scale", "php=1"]);
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failures) = load.finish();
    eprintln!(
        "{runtime}: the workshop under load, scaling php 1 -> 3 -> 1: {ok} requests succeeded, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{runtime}: failed requests: {failures:?}\n{}",
        p.ok(&["logs", "-t", "--tail", "80"])
    );
    assert!(
        ok > 20,
        "{runtime}: too few requests to prove anything: {ok}"
    );

    p.ok(&["down", "-t", "1"]);
    assert!(
        p.ok(&["ps", "-a", "-q"]).trim().is_empty(),
        "{runtime}: containers left after down"
    );
    if runtime == "native" {
        let left = leftovers(&p.root);
        assert!(left.is_empty(), "native: down left: {left:#?}");
    }

    // Again: every step from the cache, nothing installed anew.
    let again = p.rc(&["up", "-d", "--build"]);
    let text = stdout(&again) + &stderr(&again);
    assert!(again.status.success(), "{runtime}: second up:\n{text}");
    let cached = text
        .lines()
        .filter(|l| l.contains("CACHED") || l.contains("Using cache"))
        .count();
    assert!(
        cached >= 3 && !text.contains("Setting up "),
        "{runtime}: the second build is not served from the cache:\n{text}"
    );
    eventually(&format!("{runtime}: served again"), || {
        http_status(port).ok() == Some(200)
    });

    // `watch` under load: an edit of index.php reaches both replicas
    // through the frontend, and no request fails meanwhile.
    p.ok(&["scale", "php=2"]);
    let log = p.dir.join("watch.log");
    let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let mut watcher = p
        .command()
        .args(["watch", "--no-up"])
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let output = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually(&format!("{runtime}: Watch enabled"), || {
        output().contains("Watch enabled")
    });
    let load = Load::start(port, 2);
    std::thread::sleep(Duration::from_millis(300));
    let page = std::fs::read_to_string(p.dir.join("php/index.php")).unwrap_or_default();
    for round in 1..=3 {
        p.write(
            "php/index.php",
            &format!("{page}echo \"edited: {round}\\n\";\n"),
        );
        let wanted = format!("edited: {round}");
        let mut hosts = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while hosts.len() < 2 {
            if let Some(body) = http_get(port) {
                if body.contains(&wanted) {
                    hosts.insert(visits(&body).1);
                }
            }
            assert!(
                Instant::now() < deadline,
                "{runtime}: edit {round} not served by both replicas: {hosts:?}\n{}",
                output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // A Dockerfile edit: the image is rebuilt (its packages from the
    // cache) and both replicas replaced, one at a time behind the
    // frontend, with no request lost.
    let before: std::collections::BTreeSet<String> = p
        .ok(&["ps", "-q", "php"])
        .lines()
        .map(str::to_string)
        .collect();
    let dockerfile = std::fs::read_to_string(p.dir.join("php/Dockerfile")).unwrap_or_default();
    p.write("php/Dockerfile", &format!("{dockerfile}LABEL edited=yes\n"));
    let mut hosts = std::collections::BTreeSet::new();
    let mut odd = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while hosts.len() < 2 {
        match http_get(port) {
            Some(body) if body.contains("visits: ") => {
                let host = visits(&body).1;
                if !before.iter().any(|id| id.starts_with(&host)) {
                    hosts.insert(host);
                }
            }
            other => odd.push(other),
        }
        assert!(
            Instant::now() < deadline,
            "{runtime}: the rebuilt replicas do not both answer: {hosts:?}\n{}",
            output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ok, failures) = load.finish();
    let _ = Command::new("kill")
        .args(["-INT", &watcher.id().to_string()])
        .status();
    let _ = watcher.wait();
    eprintln!(
        "{runtime}: the workshop under load, index.php edited 3 times and the Dockerfile once under watch: {ok} requests succeeded, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty() && odd.is_empty(),
        "{runtime}: failed requests while watching: {failures:?} {odd:?}\n{}",
        output()
    );
    assert!(
        output().contains("Syncing service \"php\" after 1 changes were detected"),
        "{}",
        output()
    );
    assert!(
        output().contains("service(s) [\"php\"] successfully built"),
        "{}",
        output()
    );
    p.ok(&["down", "-t", "1", "--rmi", "local"]);
}

#[test]
fn the_workshop_stack_builds_and_scales_natively() {
    if !native_ready() {
        return;
    }
    workshop_demo("native");
}

#[test]
fn the_workshop_stack_builds_and_scales_on_docker() {
    if !docker_ready() {
        return;
    }
    workshop_demo("docker");
}

/// A Dockerfile built natively, instruction by instruction: multi-stage
/// with `COPY --from`, build arguments and environment in the expansion,
/// `WORKDIR`, `--chown` by name (from the image's own /etc/passwd),
/// `--chmod`, a glob, `.dockerignore`, `ADD` of a local archive, deletions
/// across steps, `LABEL`/`EXPOSE`/`CMD` in the image; then the cache: an
/// unchanged rebuild runs nothing, a changed file reruns from its `COPY`
/// on; and a bad line is an error naming it, with nothing named.
#[test]
fn native_builds_follow_the_dockerfile() {
    if !native_ready() {
        return;
    }
    let p = Project::new("build", "native");
    let base = p.busybox_image("build");
    p.write("ctx/app/a.txt", "hello\n");
    p.write("ctx/app/sub/b.txt", "deep\n");
    p.write("ctx/app/skip.log", "left out\n");
    p.write("ctx/app/c.php", "<?php\n");
    p.write("ctx/.dockerignore", "app/*.log\n");
    p.write("ctx/payload/inner.txt", "from the archive\n");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(p.dir.join("ctx/payload"))
        .arg("-czf")
        .arg(p.dir.join("ctx/payload.tar.gz"))
        .arg("inner.txt")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(tar.status.success(), "tar: {}", stderr(&tar));
    p.write(
        "ctx/Dockerfile",
        r#"ARG BASE
FROM ${BASE} AS build
ARG GREETING=hi
ENV WHO=world
WORKDIR /work
RUN echo "$GREETING $WHO" > greet && mkdir -p /gone && touch /gone/x \
 && echo 'app:x:1001:1002::/:/bin/sh' >> /etc/passwd && echo 'app:x:1002:' >> /etc/group
COPY --chown=app:app app/ ./app/
COPY --chmod=700 app/a.txt /single
COPY app/*.php /php/
ADD payload.tar.gz /extracted/
RUN rm -rf /gone

FROM ${BASE}
COPY --from=build /work /copied
COPY --from=build /single /extracted/ /from-build/
LABEL made.by=rcompose
EXPOSE 8080
CMD ["cat", "/copied/greet"]
"#,
    );
    p.write(
        "compose.yaml",
        &format!(
            "services:\n  app:\n    build:\n      context: ./ctx\n      args:\n        BASE: {base}\n        GREETING: hello\n    image: rctn-built-{}\n",
            std::process::id()
        ),
    );
    let first = p.rc(&["build"]);
    let text = stdout(&first) + &stderr(&first);
    assert!(first.status.success(), "build:\n{text}");
    assert!(text.contains("RUN rm -rf /gone"), "progress: {text}");
    assert_eq!(p.ok(&["run", "--rm", "-T", "app"]).trim(), "hello world");
    let check = p.ok(&[
        "run",
        "--rm",
        "-T",
        "app",
        "sh",
        "-c",
        "cd /copied && find . | sort | tr '\\n' ' '; echo; \
         stat -c '%u:%g %n' app/a.txt app/sub; stat -c '%a %n' /from-build/single; \
         cat /from-build/inner.txt; test -e /gone && echo gone-is-there; echo end",
    ]);
    let lines: Vec<&str> = check.lines().collect();
    assert_eq!(
        lines[0].trim(),
        ". ./app ./app/a.txt ./app/c.php ./app/sub ./app/sub/b.txt ./greet",
        "{check}"
    );
    assert_eq!(lines[1], "1001:1002 app/a.txt", "{check}");
    assert_eq!(lines[2], "1001:1002 app/sub", "{check}");
    assert_eq!(lines[3], "700 /from-build/single", "{check}");
    assert_eq!(lines[4], "from the archive", "{check}");
    assert_eq!(lines[5], "end", "the deleted /gone came back: {check}");
    let inspect = p.ok(&[
        "image",
        "inspect",
        &format!("rctn-built-{}", std::process::id()),
    ]);
    assert!(
        inspect.contains("\"made.by\": \"rcompose\"") && inspect.contains("8080/tcp"),
        "{inspect}"
    );

    // Unchanged: every step from the cache, and the very same image.
    let image_id = |inspect: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(inspect).unwrap_or_else(|e| panic!("{e}: {inspect}"));
        v[0]["Id"].as_str().unwrap_or_default().to_string()
    };
    let first = image_id(&inspect);
    let again = p.rc(&["build"]);
    let text = stdout(&again) + &stderr(&again);
    assert!(again.status.success(), "{text}");
    let cached = text.lines().filter(|l| l.ends_with("CACHED")).count();
    let done = text.lines().filter(|l| l.contains(" DONE ")).count();
    assert_eq!(cached, 8, "every layer step cached:\n{text}");
    // The FROMs of the two stages and the export.
    assert_eq!(done, 3, "nothing else ran:\n{text}");
    let second = image_id(&p.ok(&[
        "image",
        "inspect",
        &format!("rctn-built-{}", std::process::id()),
    ]));
    assert!(first.starts_with("sha256:"), "{inspect}");
    assert_eq!(first, second, "an unchanged rebuild made another image");
    // The archive changed: its ADD and what follows run again.
    p.write("ctx/payload/inner.txt", "changed\n");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(p.dir.join("ctx/payload"))
        .arg("-czf")
        .arg(p.dir.join("ctx/payload.tar.gz"))
        .arg("inner.txt")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(tar.status.success(), "tar: {}", stderr(&tar));
    let changed = p.rc(&["build"]);
    let text = stdout(&changed) + &stderr(&changed);
    assert!(changed.status.success(), "{text}");
    let cached = text.lines().filter(|l| l.ends_with("CACHED")).count();
    assert_eq!(cached, 4, "the steps before ADD cached:\n{text}");
    let inner = p.ok(&["run", "--rm", "-T", "app", "cat", "/from-build/inner.txt"]);
    assert_eq!(inner.trim(), "changed");

    // A bad line: the error names the file and the line; no image is made.
    p.write("ctx/Dockerfile", "FROM scratch\nCOPY a b\nBOGUS x\n");
    p.write(
        "compose.yaml",
        "services:\n  bad:\n    build: ./ctx\n    image: rctn-never\n",
    );
    let bad = p.rc(&["build"]);
    let text = stdout(&bad) + &stderr(&bad);
    assert!(!bad.status.success(), "{text}");
    assert!(
        text.contains("Dockerfile: line 3: unknown instruction: BOGUS"),
        "{text}"
    );
    assert!(!p.rc(&["image", "inspect", "rctn-never"]).status.success());
    let left = leftovers(&p.root);
    assert!(left.is_empty(), "a build left: {left:#?}");
}

/// `watch` on a running project: files synced into the container as they
/// are written, renamed and removed (ignored ones left out), a sync+exec
/// command run, a sync+restart restarting, a Dockerfile edit rebuilding
/// and recreating; then a project without rules, refused.
fn watch_demo(runtime: &'static str) {
    let p = Project::new("watch", runtime);
    let image = p.busybox_image("watch");
    p.write("app/Dockerfile", &format!("FROM {image}\nLABEL v=1\n"));
    p.write("src/first.txt", "first\n");
    p.write("conf/c.conf", "c1\n");
    p.write("restart.txt", "0\n");
    p.write(
        "compose.yaml",
        &format!("services:\n  app:\n    build: ./app\n    \
         command: [\"sh\", \"-c\", \"echo start >> /tmp/starts; exec sleep 3600\"]\n    \
         develop:\n      watch:\n        \
         - path: ./src\n          target: /srv\n          action: sync\n          \
           ignore: [node_modules/]\n          initial_sync: true\n        \
         - path: ./conf\n          target: /etc/app\n          action: sync+exec\n          \
           exec:\n            command: sh -c \"cat c.conf > /tmp/ran; echo $$(id -u) $$WHO >> /tmp/ran\"\n            \
             user: nobody\n            working_dir: /etc/app\n            \
             environment: [WHO=watcher]\n        \
         - path: ./restart.txt\n          target: /srv/restart.txt\n          action: sync+restart\n        \
         - path: ./app/Dockerfile\n          action: rebuild\n        \
         - path: ./restart-only.txt\n          action: restart\n  \
         plain:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n    \
         develop:\n      watch:\n        - path: ./plain\n          action: rebuild\n"),
    );
    let log = p.dir.join("watch.log");
    let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let mut child = p
        .command()
        .args(["watch", "--prune"])
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let output = || std::fs::read_to_string(&log).unwrap_or_default();
    let cat = |path: &str| -> Option<String> {
        let o = p.rc(&["exec", "-T", "app", "cat", path]);
        o.status.success().then(|| stdout(&o))
    };
    let exists = |path: &str| {
        p.rc(&["exec", "-T", "app", "test", "-e", path])
            .status
            .success()
    };
    eventually("Watch enabled", || output().contains("Watch enabled"));
    // The initial sync copied what was there.
    assert_eq!(
        cat("/srv/first.txt").as_deref(),
        Some("first\n"),
        "{}",
        output()
    );

    p.write("src/a.txt", "one\n");
    eventually("a new file synced", || {
        cat("/srv/a.txt").as_deref() == Some("one\n")
    });
    p.write("src/a.txt", "two\n");
    eventually("a changed file synced", || {
        cat("/srv/a.txt").as_deref() == Some("two\n")
    });
    p.write("src/d/e/f.txt", "deep\n");
    eventually("a new tree synced", || {
        cat("/srv/d/e/f.txt").as_deref() == Some("deep\n")
    });
    p.write("src/d/e/g.txt", "in the new tree\n");
    eventually("a file in a new directory synced", || {
        cat("/srv/d/e/g.txt").as_deref() == Some("in the new tree\n")
    });
    std::fs::rename(p.dir.join("src/a.txt"), p.dir.join("src/b.txt"))
        .unwrap_or_else(|e| panic!("{e}"));
    eventually("a rename synced", || {
        cat("/srv/b.txt").as_deref() == Some("two\n") && !exists("/srv/a.txt")
    });
    std::fs::remove_dir_all(p.dir.join("src/d")).unwrap_or_else(|e| panic!("{e}"));
    eventually("a removed tree removed", || !exists("/srv/d"));
    // Made again: watched again.
    p.write("src/d/e/h.txt", "again\n");
    eventually("a tree made again synced", || {
        cat("/srv/d/e/h.txt").is_some()
    });
    p.write("src/d/e/h.txt", "and changed\n");
    eventually("a file in a tree made again synced", || {
        cat("/srv/d/e/h.txt").as_deref() == Some("and changed\n")
    });
    p.write("src/node_modules/x.js", "ignored\n");
    p.write("src/.b.txt.swp", "an editor's\n");
    p.write("src/last.txt", "last\n");
    eventually("the last file synced", || cat("/srv/last.txt").is_some());
    assert!(!exists("/srv/node_modules"), "an ignored tree was synced");
    assert!(!exists("/srv/.b.txt.swp"), "an editor's file was synced");

    p.write("conf/c.conf", "c2\n");
    // As its user, in its directory, with its environment.
    eventually("the sync+exec command ran", || {
        cat("/tmp/ran").as_deref() == Some("c2\n65534 watcher\n")
    });

    p.write("restart.txt", "1\n");
    eventually("sync+restart restarted", || {
        cat("/tmp/starts").is_some_and(|s| s.lines().count() == 2)
    });
    assert_eq!(cat("/srv/restart.txt").as_deref(), Some("1\n"));
    p.write("restart-only.txt", "x\n");
    eventually("restart restarted", || {
        cat("/tmp/starts").is_some_and(|s| s.lines().count() == 3)
    });
    // No staging left behind.
    let listing = p.ok(&["exec", "-T", "app", "ls", "-a", "/srv"]);
    assert!(!listing.contains(".rcompose-sync"), "{listing}");

    let before = p.ok(&["ps", "-q", "app"]);
    let built = format!("{}-app", p.name);
    let image_id = |name: &str| -> Option<String> {
        let o = p.rc(&["image", "inspect", name]);
        let found: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        Some(found[0]["Id"].as_str()?.to_string())
    };
    let old = image_id(&built).unwrap_or_else(|| panic!("no image {built}"));
    p.write("app/Dockerfile", &format!("FROM {image}\nLABEL v=2\n"));
    eventually("the rebuild recreated the container", || {
        let now = p.ok(&["ps", "-q", "app"]);
        !now.trim().is_empty() && now != before
    });
    // `--prune`: the image the rebuild replaced is removed.
    assert_ne!(image_id(&built).as_deref(), Some(old.as_str()));
    eventually("the replaced image pruned", || image_id(&old).is_none());
    let text = output();
    for expected in [
        "service \"plain\", develop.watch[0]: can't watch service \"plain\" with action rebuild without a build context, this rule is not watched",
        "Syncing service \"app\" after ",
        "service(s) [\"app\"] restarted",
        "Rebuilding service(s) [\"app\"] after changes were detected...",
        "service(s) [\"app\"] successfully built",
    ] {
        eventually(expected, || output().contains(expected));
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("watch did not end on SIGINT:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The containers stay up after the watch, as Compose leaves them.
    assert!(!p.ok(&["ps", "-q", "app"]).trim().is_empty());

    // `up --watch`: the watch's messages among the logs, with Compose's
    // mark under the logs' `|` (names padded to `#watch` and one more;
    // uncoloured, off a terminal).
    let log = p.dir.join("up-watch.log");
    let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let mut child = p
        .command()
        .args(["up", "--watch", "app"])
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let output = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("up --watch: Watch enabled", || {
        output()
            .lines()
            .any(|l| l == "        \u{29bf} Watch enabled")
    });
    p.write("src/up.txt", "under up\n");
    eventually("up --watch: synced", || {
        cat("/srv/up.txt").as_deref() == Some("under up\n")
    });
    assert!(
        output()
            .lines()
            .any(|l| l == "        \u{29bf} Syncing service \"app\" after 1 changes were detected"),
        "{}",
        output()
    );
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("up --watch did not end on SIGINT:\n{}", output());
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // No rules: a clear error, and nothing started.
    p.write("other/compose.yaml", "services:\n  plain:\n    image: x\n");
    let o = Command::new(rcompose_bin())
        .env("RCOMPOSE_ROOT", &p.root)
        .args(["--runtime", runtime, "-f", "other/compose.yaml", "watch"])
        .current_dir(&p.dir)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(
            "none of the selected services is configured for watch, consider setting a 'develop' section"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn watch_syncs_restarts_and_rebuilds_natively() {
    if !native_ready() {
        return;
    }
    watch_demo("native");
}

#[test]
fn watch_syncs_restarts_and_rebuilds_on_docker() {
    if !docker_ready() {
        return;
    }
    watch_demo("docker");
}
