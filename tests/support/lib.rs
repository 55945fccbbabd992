//! Helpers for black-box tests: find the `rcompose` binary, run it and the
//! reference `docker compose`, and gate tests on what they need.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `rcompose` binary under test: `$RCOMPOSE_BIN`, else the newest of
/// `target/release/rcompose` and `target/debug/rcompose`.
pub fn rcompose_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RCOMPOSE_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let candidates = [
        target.join("release/rcompose"),
        target.join("debug/rcompose"),
    ];
    let newest = candidates
        .iter()
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p.clone())))
        .max();
    match newest {
        Some((_, p)) => p,
        None => panic!("no rcompose binary: run `cargo build --release` first or set RCOMPOSE_BIN"),
    }
}

/// Runs `rcompose ARGS` in `dir` with no `COMPOSE_*` variables inherited.
pub fn rcompose(dir: &Path, args: &[&str]) -> Output {
    run(Command::new(rcompose_bin()), dir, args)
}

fn run(mut cmd: Command, dir: &Path, args: &[&str]) -> Output {
    for (k, _) in std::env::vars() {
        if k.starts_with("COMPOSE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Whether the reference `docker compose` (v2) is installed.
pub fn reference_available() -> bool {
    Command::new("docker")
        .args(["compose", "version"])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("v2."))
        .unwrap_or(false)
}

/// Runs the reference `docker compose ARGS` in `dir`.
pub fn reference(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("docker");
    cmd.arg("compose");
    run(cmd, dir, args)
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether this is a CI run (`CI=true`, as `.ci/run` sets it): the README's
/// test command has installed and started everything the tests use.
pub fn on_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips the calling test when `ok` is false, saying what is missing, and
/// returns `ok`. Under CI a missing resource fails the test instead: the
/// test runner hides what a passing test prints, so a skip there would
/// pass for a test that ran.
pub fn require(ok: bool, what: &str) -> bool {
    gate(ok, what, on_ci())
}

fn gate(ok: bool, what: &str, ci: bool) -> bool {
    if !ok {
        assert!(
            !ci,
            "{what} is not available, and under CI=true every test must run (the README's test command provides it)"
        );
        eprintln!("SKIPPED: {what} is not available here");
    }
    ok
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The local test image: `FROM scratch` with a static busybox.
pub const IMAGE: &str = "local/busybox:latest";

/// Whether the Docker Engine answers: the one test of it, through the
/// `docker` client, so at `DOCKER_HOST` when that is set (where rcompose
/// and the Docker runtime connect too).
pub fn docker_available() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Builds the busybox image once per machine; false when it cannot.
pub fn ensure_image() -> bool {
    let present = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if present {
        return true;
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        return false;
    }
    let dir = std::env::temp_dir().join(format!("rcompose-busybox-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let ok = std::fs::copy(busybox, dir.join("busybox")).is_ok()
        && std::fs::write(
            dir.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCMD [\"sh\"]\n",
        )
        .is_ok()
        && Command::new("docker")
            .args(["build", "-q", "-t", IMAGE, "."])
            .current_dir(&dir)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    let _ = std::fs::remove_dir_all(&dir);
    ok
}

/// Whether the engine tests can run here; prints why not.
pub fn engine_ready() -> bool {
    require(docker_available(), "the Docker Engine")
        && require(
            ensure_image(),
            "the busybox test image (/bin/busybox from busybox-static)",
        )
}

/// A project folder with a compose file, removed from the engine on drop.
pub struct TestProject {
    /// The project name (`rct-<tag>-<pid>`).
    pub name: String,
    /// Its folder.
    pub dir: PathBuf,
}

impl TestProject {
    /// A project named after `tag` and this process, in a fresh folder.
    pub fn new(tag: &str, compose: &str) -> TestProject {
        let name = format!("rct-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::create_dir_all(&dir);
        let p = TestProject { name, dir };
        p.write(compose);
        p
    }

    /// Writes its `compose.yaml`.
    pub fn write(&self, compose: &str) {
        std::fs::write(self.dir.join("compose.yaml"), compose).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs rcompose with `-p <name>` in the project folder.
    pub fn rc(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(rcompose_bin());
        cmd.arg("-p")
            .arg(&self.name)
            .args(args)
            .current_dir(&self.dir)
            .env("NO_COLOR", "1");
        cmd.output()
            .unwrap_or_else(|e| panic!("running rcompose: {e}"))
    }

    /// Runs rcompose and requires success.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.rc(args);
        assert!(
            o.status.success(),
            "rcompose {args:?} failed:\n{}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// Runs the reference `docker compose` with `-p <name>`.
    pub fn dc(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("compose")
            .arg("-p")
            .arg(&self.name)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("running docker compose: {e}"))
    }

    /// Names of the project's containers on the engine (by label), sorted.
    pub fn containers(&self, all: bool) -> Vec<String> {
        let mut args = vec!["ps", "--format", "{{.Names}} {{.State}}", "--filter"];
        let filter = format!("label=com.docker.compose.project={}", self.name);
        args.push(&filter);
        if all {
            args.push("-a");
        }
        let o = Command::new("docker")
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut names: Vec<String> = stdout(&o)
            .lines()
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect();
        names.sort();
        names
    }

    /// Names of the project's networks on the engine (by label).
    pub fn networks(&self) -> Vec<String> {
        let filter = format!("label=com.docker.compose.project={}", self.name);
        let o = Command::new("docker")
            .args([
                "network",
                "ls",
                "--format",
                "{{.Name}}",
                "--filter",
                &filter,
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        stdout(&o).lines().map(str::to_string).collect()
    }
}

impl Drop for TestProject {
    fn drop(&mut self) {
        // Remove everything of the project whatever happened, without relying on rcompose.
        let filter = format!("label=com.docker.compose.project={}", self.name);
        if let Ok(o) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            let ids: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .arg("rm")
                    .arg("-f")
                    .arg("-v")
                    .args(&ids)
                    .output();
            }
        }
        for (kind, fmt) in [("network", "{{.Name}}"), ("volume", "{{.Name}}")] {
            if let Ok(o) = Command::new("docker")
                .args([kind, "ls", "-q", "--format", fmt, "--filter", &filter])
                .output()
            {
                for n in stdout(&o).lines() {
                    let _ = Command::new("docker").args([kind, "rm", n]).output();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::gate;

    #[test]
    fn a_missing_resource_skips_outside_ci() {
        assert!(gate(true, "x", true));
        assert!(!gate(false, "x", false));
    }

    #[test]
    #[should_panic(expected = "x is not available, and under CI=true every test must run")]
    fn a_missing_resource_fails_under_ci() {
        gate(false, "x", true);
    }
}
