//! `rcompose config` against the reference `docker compose config`.
//!
//! Every folder under `tests/fixtures/` is a project: its compose files, an
//! optional `args` file (command-line arguments, one per line; default
//! `config --format json`), an optional `env` file (`KEY=VALUE` lines put in
//! the process environment), an optional `cwd` file (the sub-folder to run
//! in) and `expected.json` (or `expected.yaml`), the reference's output,
//! byte for byte, with the fixture's path written `$FIXTURE`. `UPDATE_EXPECT=1` rewrites the
//! snapshots from the reference. Every folder under `tests/errors/` is a
//! project that must be rejected with the message in `expected.txt`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rcompose_tests::{rcompose_bin, reference_available, require, stderr, stdout, workspace};

fn cases(kind: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(workspace().join("tests").join(kind))
        .map(|rd| {
            rd.filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    assert!(!dirs.is_empty(), "no cases under tests/{kind}");
    dirs
}

fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|s| {
            s.lines()
                .map(str::to_string)
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `program` with the case's arguments and environment, in the case's folder.
fn run_case(dir: &Path, mut cmd: Command) -> Output {
    let mut args = read_lines(&dir.join("args"));
    if args.is_empty() {
        args = vec!["config".into(), "--format".into(), "json".into()];
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("COMPOSE_") {
            cmd.env_remove(k);
        }
    }
    for line in read_lines(&dir.join("env")) {
        if let Some((k, v)) = line.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.env("HOME", "/home/tester");
    let cwd = match read_lines(&dir.join("cwd")).first() {
        Some(sub) => dir.join(sub),
        None => dir.to_path_buf(),
    };
    cmd.args(&args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn reference_cmd() -> Command {
    let mut c = Command::new("docker");
    c.arg("compose");
    c
}

/// Output with the case's folder replaced by `$FIXTURE` (and the folder of
/// all cases by `$CASES`, for paths that lead out of the case).
fn portable(dir: &Path, text: &str) -> String {
    let text = text.replace(&dir.display().to_string(), "$FIXTURE");
    match dir.parent() {
        Some(cases) => text.replace(&cases.display().to_string(), "$CASES"),
        None => text,
    }
}

/// The case's output as it is compared: the text, byte for byte, with the
/// case's folder written `$FIXTURE`.
fn output_text(dir: &Path, out: &Output, who: &str) -> String {
    assert!(
        out.status.success(),
        "{who} failed on {}:\n{}",
        dir.display(),
        stderr(out)
    );
    portable(dir, &stdout(out))
}

/// The snapshot of a case: `expected.json` for JSON output, `expected.yaml`
/// for YAML (the reference's text, as it printed it).
fn snapshot_path(dir: &Path, text: Option<&str>) -> PathBuf {
    let json = dir.join("expected.json");
    let yaml = dir.join("expected.yaml");
    match text {
        Some(t) if serde_json::from_str::<serde_json::Value>(t).is_ok() => json,
        Some(_) => yaml,
        None if yaml.exists() => yaml,
        None => json,
    }
}

/// Where two texts first differ, for a failure message.
fn first_difference(want: &str, got: &str) -> String {
    let line = want
        .lines()
        .zip(got.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| want.lines().count().min(got.lines().count()));
    let at = |t: &str| t.lines().nth(line).unwrap_or("<end>").to_string();
    format!(
        "line {}:\n  expected: {}\n  got:      {}",
        line + 1,
        at(want),
        at(got)
    )
}

#[test]
fn fixtures_match_their_snapshots() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    if update {
        assert!(
            reference_available(),
            "UPDATE_EXPECT needs the reference docker compose"
        );
    }
    let mut failures = Vec::new();
    for dir in cases("fixtures") {
        if update {
            let r = run_case(&dir, reference_cmd());
            let text = output_text(&dir, &r, "docker compose");
            for stale in ["expected.json", "expected.yaml"] {
                let _ = fs::remove_file(dir.join(stale));
            }
            fs::write(snapshot_path(&dir, Some(&text)), text)
                .unwrap_or_else(|e| panic!("writing snapshot: {e}"));
        }
        let expected_path = snapshot_path(&dir, None);
        let expected = fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", expected_path.display()));
        let got = output_text(
            &dir,
            &run_case(&dir, Command::new(rcompose_bin())),
            "rcompose",
        );
        if got != expected {
            failures.push(format!(
                "{}: {}",
                dir.display(),
                first_difference(&expected, &got)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn fixtures_match_the_reference_live() {
    if !require(reference_available(), "the reference docker compose v2") {
        return;
    }
    let mut failures = Vec::new();
    for dir in cases("fixtures") {
        let want = output_text(&dir, &run_case(&dir, reference_cmd()), "docker compose");
        let got = output_text(
            &dir,
            &run_case(&dir, Command::new(rcompose_bin())),
            "rcompose",
        );
        if got != want {
            failures.push(format!(
                "{}: {}",
                dir.display(),
                first_difference(&want, &got)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "differ from the reference:\n{}",
        failures.join("\n")
    );
}

#[test]
fn invalid_projects_are_rejected_with_their_location() {
    let check_reference = require(
        reference_available(),
        "the reference docker compose v2 (that it refuses each case too)",
    );
    let mut failures = Vec::new();
    for dir in cases("errors") {
        let out = run_case(&dir, Command::new(rcompose_bin()));
        let err = portable(&dir, &stderr(&out));
        let expected = fs::read_to_string(dir.join("expected.txt")).unwrap_or_default();
        if out.status.success() {
            failures.push(format!("{}: accepted", dir.display()));
        } else if err.contains("panicked") {
            failures.push(format!("{}: panicked:\n{err}", dir.display()));
        } else if std::env::var_os("UPDATE_EXPECT").is_some() {
            fs::write(dir.join("expected.txt"), &err).unwrap_or_else(|e| panic!("{e}"));
        } else if err != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{err}",
                dir.display()
            ));
        }
        if check_reference && run_case(&dir, reference_cmd()).status.success() {
            failures.push(format!("{}: the reference accepts it", dir.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn awesome_compose_corpus_is_at_parity() {
    let tool = workspace().join("../shared/tools/config-parity");
    let corpus = workspace().join("../shared/corpus/awesome-compose");
    if !require(
        tool.exists() && corpus.exists(),
        "../shared (the parity tool and corpus)",
    ) || !require(reference_available(), "the reference docker compose v2")
    {
        return;
    }
    let out = Command::new(&tool)
        .arg("--rcompose")
        .arg(rcompose_bin())
        .arg(&corpus)
        .output()
        .unwrap_or_else(|e| panic!("running config-parity: {e}"));
    let text = stdout(&out);
    println!("{text}");
    assert!(
        out.status.success(),
        "corpus parity failed:\n{text}{}",
        stderr(&out)
    );
}
