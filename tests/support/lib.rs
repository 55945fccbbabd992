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

/// Skips the calling test, saying why, when `ok` is false. Returns `ok`.
pub fn require(ok: bool, what: &str) -> bool {
    if !ok {
        eprintln!("SKIPPED: {what} is not available here");
    }
    ok
}
