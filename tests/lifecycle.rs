//! `up`, `ps`, `scale`, `down` and the lifecycle commands on the real Docker
//! Engine, and interoperability with Docker Compose. Each test owns its
//! project name and removes what it created even when it fails. Images are
//! built locally from Debian's static busybox (no registry is reachable).

use std::process::Command;
use std::time::{Duration, Instant};

use rcompose_tests::{
    engine_ready, rcompose_bin, reference_available, require, stderr, stdout, TestProject, IMAGE,
};

fn web_stack(port_line: &str) -> String {
    format!(
        r#"services:
  db:
    image: {IMAGE}
    command: ["sh", "-c", "touch /ready; exec sleep 3600"]
    stop_signal: SIGKILL
    healthcheck:
      test: ["CMD", "test", "-f", "/ready"]
      interval: 1s
      start_period: 5s
  web:
    image: {IMAGE}
    command: ["httpd", "-f", "-p", "8080"]
    stop_signal: SIGKILL
    depends_on:
      db:
        condition: service_healthy
    {port_line}
    volumes:
      - data:/data
volumes:
  data:
"#
    )
}

/// Polls until `f` holds or the deadline passes.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn up_ps_scale_down() {
    if !engine_ready() {
        return;
    }
    let p = TestProject::new("life", &web_stack(r#"ports: ["8080"]"#));
    p.ok(&["up", "-d"]);
    let names = p.containers(false);
    assert_eq!(
        names,
        vec![format!("{}-db-1", p.name), format!("{}-web-1", p.name)]
    );

    // A second up changes nothing and says so.
    let again = p.rc(&["up", "-d"]);
    assert!(again.status.success());
    assert!(
        stderr(&again).contains("Nothing to do"),
        "{}",
        stderr(&again)
    );
    let dry = p.ok(&["--dry-run", "up", "-d"]);
    assert!(!dry.contains("create"), "second up plans changes:\n{dry}");

    let ps = p.ok(&["ps"]);
    assert!(
        ps.contains(&format!("{}-web-1", p.name)) && ps.contains("SERVICE"),
        "{ps}"
    );
    let services = p.ok(&["ps", "--services"]);
    assert_eq!(services.lines().collect::<Vec<_>>(), vec!["db", "web"]);
    let port = p.ok(&["port", "web", "8080"]);
    assert!(
        port.trim()
            .rsplit(':')
            .next()
            .and_then(|x| x.parse::<u16>().ok())
            .is_some(),
        "{port}"
    );

    p.ok(&["scale", "web=3"]);
    assert_eq!(p.containers(false).len(), 4);
    p.ok(&["up", "-d", "--scale", "web=1"]);
    let after = p.containers(false);
    assert_eq!(
        after,
        vec![format!("{}-db-1", p.name), format!("{}-web-1", p.name)],
        "scale down keeps the lowest numbers"
    );

    p.ok(&["stop", "web"]);
    assert_eq!(p.containers(false), vec![format!("{}-db-1", p.name)]);
    p.ok(&["start", "web"]);
    assert_eq!(p.containers(false).len(), 2);

    p.ok(&["down", "-v"]);
    assert!(p.containers(true).is_empty());
    assert!(p.networks().is_empty());
}

#[test]
fn only_changed_services_are_recreated() {
    if !engine_ready() {
        return;
    }
    let p = TestProject::new("recreate", &web_stack(""));
    p.ok(&["up", "-d"]);
    let id = |svc: &str| {
        let o = Command::new("docker")
            .args(["inspect", "-f", "{{.Id}}", &format!("{}-{svc}-1", p.name)])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        stdout(&o).trim().to_string()
    };
    let (db, web) = (id("db"), id("web"));
    p.write(&web_stack("environment: [CHANGED=1]"));
    p.ok(&["up", "-d"]);
    assert_eq!(id("db"), db, "db did not change and must be kept");
    assert_ne!(id("web"), web, "web changed and must be recreated");
}

#[test]
fn docker_compose_sees_what_rcompose_created_and_the_converse() {
    if !engine_ready() || !require(reference_available(), "the reference docker compose v2") {
        return;
    }
    let p = TestProject::new("interop", &web_stack(""));
    p.ok(&["up", "-d"]);
    let ps = p.dc(&["ps", "--format", "{{.Name}}"]);
    let mut seen: Vec<String> = stdout(&ps).lines().map(str::to_string).collect();
    seen.sort();
    assert_eq!(
        seen,
        p.containers(false),
        "docker compose ps:\n{}",
        stderr(&ps)
    );
    // Docker Compose finds nothing to change in what rcompose created.
    let up = p.dc(&["up", "-d"]);
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(
        !stderr(&up).contains("Recreate"),
        "docker compose recreated rcompose's containers:\n{}",
        stderr(&up)
    );
    let down = p.dc(&["down", "-v"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(p.containers(true).is_empty());
    assert!(p.networks().is_empty());

    // The converse.
    let up = p.dc(&["up", "-d"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let ps = p.ok(&["ps", "--services"]);
    assert_eq!(ps.lines().collect::<Vec<_>>(), vec!["db", "web"]);
    let dry = p.ok(&["--dry-run", "up", "-d"]);
    assert!(
        !dry.contains("create"),
        "rcompose wants to recreate Docker Compose's containers:\n{dry}"
    );
    p.ok(&["down", "-v"]);
    assert!(p.containers(true).is_empty());
    assert!(p.networks().is_empty());
}

#[test]
fn an_invalid_project_changes_nothing() {
    if !engine_ready() {
        return;
    }
    let p = TestProject::new(
        "invalid",
        &format!("services:\n  a:\n    image: {IMAGE}\n    ports: [\"80:http\"]\n"),
    );
    let o = p.rc(&["up", "-d"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("compose.yaml:4"), "{}", stderr(&o));
    assert!(p.containers(true).is_empty());
    assert!(p.networks().is_empty());
}

#[test]
fn a_failure_is_reported_and_the_rest_goes_on() {
    if !engine_ready() {
        return;
    }
    let compose = format!(
        "services:\n  good:\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n    stop_signal: SIGKILL\n  bad:\n    image: rcompose-test/does-not-exist:1\n    pull_policy: never\n"
    );
    let p = TestProject::new("partial", &compose);
    let o = p.rc(&["up", "-d"]);
    assert!(!o.status.success(), "a missing image must fail the up");
    assert!(stderr(&o).contains("bad"), "{}", stderr(&o));
    assert_eq!(p.containers(false), vec![format!("{}-good-1", p.name)]);
}

#[test]
fn up_after_a_killed_up_converges_without_duplicates() {
    if !engine_ready() {
        return;
    }
    let p = TestProject::new("killed", &web_stack(""));
    p.write(&web_stack("").replace("services:\n", &format!("services:\n  extra:\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n    stop_signal: SIGKILL\n    deploy:\n      replicas: 3\n")));
    let mut child = Command::new(rcompose_bin())
        .args(["-p", &p.name, "up", "-d"])
        .current_dir(&p.dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // Kill it as soon as it has created something.
    eventually("a first container", || !p.containers(true).is_empty());
    let _ = child.kill();
    let _ = child.wait();
    p.ok(&["up", "-d"]);
    let mut expected = vec![
        format!("{}-db-1", p.name),
        format!("{}-extra-1", p.name),
        format!("{}-extra-2", p.name),
        format!("{}-extra-3", p.name),
        format!("{}-web-1", p.name),
    ];
    expected.sort();
    assert_eq!(p.containers(true), expected);
    assert_eq!(p.containers(false), expected, "all of them running");
}

#[test]
fn exec_run_cp_and_wait() {
    if !engine_ready() {
        return;
    }
    let compose = format!(
        "services:\n  app:\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n    stop_signal: SIGKILL\n  job:\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"exit 4\"]\n    restart: \"no\"\n    profiles: [jobs]\n"
    );
    let p = TestProject::new("exec", &compose);
    p.ok(&["up", "-d"]);

    let out = p.ok(&["exec", "-T", "app", "echo", "hello"]);
    assert_eq!(out.trim(), "hello");
    let failed = p.rc(&["exec", "-T", "app", "sh", "-c", "exit 3"]);
    assert_eq!(
        failed.status.code(),
        Some(3),
        "exec returns the command's exit code"
    );
    let mut child = Command::new(rcompose_bin())
        .args(["-p", &p.name, "exec", "-T", "app", "cat"])
        .current_dir(&p.dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(b"piped input\n");
    }
    let piped = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stdout(&piped).trim(), "piped input");

    // A one-off container: its output, its exit code, and --rm.
    let run = p.rc(&[
        "run",
        "--rm",
        "-T",
        "app",
        "sh",
        "-c",
        "echo one-off; exit 5",
    ]);
    assert_eq!(run.status.code(), Some(5), "{}", stderr(&run));
    assert!(
        stdout(&run).contains("one-off"),
        "run output: {:?}",
        stdout(&run)
    );
    assert_eq!(
        p.containers(true),
        vec![format!("{}-app-1", p.name)],
        "--rm removed the one-off container"
    );

    // cp both ways.
    let local = p.dir.join("note.txt");
    std::fs::write(&local, "copied in\n").unwrap_or_else(|e| panic!("{e}"));
    p.ok(&["cp", local.to_str().unwrap_or_default(), "app:/note.txt"]);
    assert_eq!(
        p.ok(&["exec", "-T", "app", "cat", "/note.txt"]),
        "copied in\n"
    );
    let back = p.dir.join("back.txt");
    p.ok(&["cp", "app:/note.txt", back.to_str().unwrap_or_default()]);
    assert_eq!(
        std::fs::read_to_string(&back).unwrap_or_default(),
        "copied in\n"
    );

    // wait returns the exit code of a service's container.
    p.ok(&["--profile", "jobs", "up", "-d", "job"]);
    let waited = p.rc(&["wait", "job"]);
    assert_eq!(waited.status.code(), Some(4), "{}", stderr(&waited));
}

#[test]
fn attached_up_streams_prefixed_logs_and_returns_the_exit_code() {
    if !engine_ready() {
        return;
    }
    let compose = format!(
        "services:\n  server:\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n    stop_signal: SIGKILL\n  tester:\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"echo testing; exit 7\"]\n    depends_on: [server]\n"
    );
    let p = TestProject::new("attached", &compose);
    let o = p.rc(&["up", "--exit-code-from", "tester"]);
    assert_eq!(o.status.code(), Some(7), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("tester-1") && l.ends_with("testing")),
        "prefixed output:\n{out}"
    );
    // The project was stopped on the way out.
    assert!(
        p.containers(false).is_empty(),
        "still running: {:?}",
        p.containers(false)
    );
    // Up again: only this run's output, laid out as Compose lays it out
    // (names padded one past the longest, the exit on a line of its own).
    let o = p.rc(&["up", "--exit-code-from", "tester"]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("tester-1")).collect();
    assert_eq!(
        lines,
        ["tester-1  | testing", "tester-1 exited with code 7"],
        "{out}"
    );
}

#[test]
fn logs_follow_picks_up_replicas_added_later() {
    if !engine_ready() {
        return;
    }
    let compose = format!(
        "services:\n  ticker:\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"while true; do echo tick from $$(hostname); sleep 0.2; done\"]\n    stop_signal: SIGKILL\n"
    );
    let p = TestProject::new("follow", &compose);
    p.ok(&["up", "-d"]);
    let log_path = p.dir.join("follow.log");
    let file = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("{e}"));
    let mut follower = Command::new(rcompose_bin())
        .args(["-p", &p.name, "logs", "-f", "--no-color"])
        .current_dir(&p.dir)
        .stdout(file)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    eventually("the first replica's lines", || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("ticker-1")
    });
    p.ok(&["scale", "ticker=2"]);
    let seen_second = {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut found = false;
        while Instant::now() < deadline && !found {
            found = std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .contains("ticker-2");
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    };
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        seen_second,
        "logs -f did not follow the new replica:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
}

/// `images` and `ls` print what Docker Compose prints of the same project:
/// one-off containers among the images, the running ones only in `ls`
/// unless `--all`.
#[test]
fn images_and_ls_print_as_docker_compose() {
    if !engine_ready() || !require(reference_available(), "the reference docker compose v2") {
        return;
    }
    let p = TestProject::new("listing", &web_stack(""));
    p.ok(&["up", "-d"]);
    // A one-off that has ended.
    p.ok(&["run", "--no-deps", "db", "true"]);
    let dc = |args: &[&str]| {
        let o = p.dc(args);
        assert!(
            o.status.success(),
            "docker compose {args:?}: {}",
            stderr(&o)
        );
        stdout(&o)
    };
    // The same rows, the age of each image aside (the two commands run a
    // moment apart).
    let rows = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .map(|l| l.split_whitespace().take(6).map(str::to_string).collect())
            .collect()
    };
    for args in [&["images"][..], &["images", "web"]] {
        let (ours, theirs) = (p.ok(args), dc(args));
        assert_eq!(rows(&ours), rows(&theirs), "{args:?}:\n{ours}\n{theirs}");
        assert_eq!(ours.lines().next(), theirs.lines().next(), "{args:?}");
        assert_eq!(ours.lines().count(), if args.len() == 1 { 4 } else { 2 });
    }
    assert_eq!(p.ok(&["images", "-q"]), dc(&["images", "-q"]));
    let json = |text: &str| -> Vec<serde_json::Value> {
        let mut list: Vec<serde_json::Value> =
            serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
        for image in &mut list {
            // Docker's time has nanoseconds; rcompose keeps seconds.
            let time = image["LastTagTime"].as_str().unwrap_or_default();
            image["LastTagTime"] = serde_json::json!(time.get(..19).unwrap_or_default());
        }
        list.sort_by_key(|i| i["ContainerName"].to_string());
        list
    };
    assert_eq!(
        json(&p.ok(&["images", "--format", "json"])),
        json(&dc(&["images", "--format", "json"]))
    );
    // Other projects may come and go meanwhile: this one's entry only.
    let entry = |text: &str| -> Option<serde_json::Value> {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
        list.into_iter().find(|e| e["Name"] == p.name.as_str())
    };
    for args in [
        &["ls", "--format", "json"][..],
        &["ls", "-a", "--format", "json"],
    ] {
        let (ours, theirs) = (entry(&p.ok(args)), entry(&dc(args)));
        assert!(ours.is_some(), "{args:?}");
        assert_eq!(ours, theirs, "{args:?}");
    }
    p.ok(&["down", "-v"]);
}

/// `run`'s flags that change the one-off from the service's definition,
/// each compared with what `docker compose run` makes of the same project:
/// `--entrypoint` without a command drops the service's command,
/// `--cap-add`/`--cap-drop` win over the file's opposite lists, and only
/// `--use-aliases` gives the one-off the service's network names.
#[test]
fn run_flags_change_the_one_off_as_docker_compose() {
    if !engine_ready() || !require(reference_available(), "the reference docker compose v2") {
        return;
    }
    let p = TestProject::new(
        "runflags",
        &format!(
            "services:\n  app:\n    image: {IMAGE}\n    command: [\"echo\", \"from the service\"]\n    \
             cap_drop: [NET_RAW]\n    networks:\n      default:\n        aliases: [other-name]\n"
        ),
    );
    let both = |args: &[&str]| -> (String, String) {
        let ours = p.rc(args);
        let theirs = p.dc(args);
        assert!(
            ours.status.success(),
            "rcompose {args:?}: {}",
            stderr(&ours)
        );
        assert!(
            theirs.status.success(),
            "docker compose {args:?}: {}",
            stderr(&theirs)
        );
        (stdout(&ours), stdout(&theirs))
    };
    let (ours, theirs) = both(&["run", "--rm", "-T", "--entrypoint", "echo", "app"]);
    assert_eq!(ours, theirs);
    assert_eq!(ours.trim(), "");
    let caps = [
        "run",
        "--rm",
        "-T",
        "--cap-add",
        "NET_RAW",
        "--cap-drop",
        "CHOWN",
        "app",
        "grep",
        "CapEff",
        "/proc/self/status",
    ];
    let (ours, theirs) = both(&caps);
    assert_eq!(ours, theirs);
    let (plain, _) = both(&[
        "run",
        "--rm",
        "-T",
        "app",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert_ne!(ours, plain, "--cap-add/--cap-drop changed nothing");

    // The names a detached one-off answers to on the project's network,
    // its own name (and the engine's short id) aside.
    // (`run -d` prints the one-off's name, Compose its id.)
    let aliases = |output: &str| -> Vec<String> {
        let printed = output.trim().lines().last().unwrap_or_default().to_string();
        let inspect = |format: &str| {
            let o = Command::new("docker")
                .args(["inspect", "-f", format, &printed])
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                o.status.success(),
                "docker inspect {printed}: {}",
                stderr(&o)
            );
            stdout(&o).trim().to_string()
        };
        let networks: serde_json::Value =
            serde_json::from_str(&inspect("{{json .NetworkSettings.Networks}}"))
                .unwrap_or_else(|e| panic!("{e}"));
        let name = inspect("{{.Name}}").trim_start_matches('/').to_string();
        let id = inspect("{{.Id}}");
        let mut found: Vec<String> = networks
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(|n| n["Aliases"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a.as_str().map(str::to_string))
            .filter(|a| *a != name && !id.starts_with(a.as_str()))
            .collect();
        found.sort();
        found
    };
    for (args, expected) in [
        (&["run", "-d", "app", "sleep", "60"][..], vec![]),
        (
            &["run", "-d", "--use-aliases", "app", "sleep", "60"],
            vec!["app".to_string(), "other-name".to_string()],
        ),
    ] {
        let (ours, theirs) = both(args);
        assert_eq!(aliases(&ours), expected, "rcompose {args:?}");
        assert_eq!(aliases(&theirs), expected, "docker compose {args:?}");
    }
    p.ok(&["down", "-t", "0"]);
}

/// The attached `up`'s ways to end, against `docker compose up` on the same
/// project: the first exit stops the rest and gives its code
/// (--abort-on-container-exit), or the first failure does, a success going
/// by (--abort-on-container-failure); the flags that cannot go together are
/// refused with Compose's words.
#[test]
fn attached_up_aborts_and_exits_as_docker_compose() {
    if !engine_ready() || !require(reference_available(), "the reference docker compose v2") {
        return;
    }
    let compose = format!(
        "services:\n  server:\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n    stop_signal: SIGKILL\n  \
         fine:\n    image: {IMAGE}\n    command: [\"true\"]\n  \
         failing:\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"sleep 2; exit 3\"]\n"
    );
    let p = TestProject::new("abort", &compose);
    for args in [
        &["up", "--abort-on-container-exit"][..],
        &["up", "--abort-on-container-failure"],
        &[
            "up",
            "--abort-on-container-failure",
            "--exit-code-from",
            "server",
        ],
    ] {
        let ours = p.rc(args);
        let theirs = p.dc(args);
        assert_eq!(
            ours.status.code(),
            theirs.status.code(),
            "{args:?}\nrcompose:\n{}{}\ndocker compose:\n{}{}",
            stdout(&ours),
            stderr(&ours),
            stdout(&theirs),
            stderr(&theirs)
        );
        assert!(
            stderr(&ours).contains("Aborting on container exit..."),
            "{args:?}: {}",
            stderr(&ours)
        );
        assert!(p.containers(false).is_empty(), "{args:?}: still running");
    }
    // The failure's own code, a success having gone by.
    assert_eq!(
        p.rc(&["up", "--abort-on-container-failure"]).status.code(),
        Some(3)
    );
    for args in [
        &["up", "-d", "--abort-on-container-exit"][..],
        &["up", "--wait", "--abort-on-container-failure"],
        &[
            "up",
            "--abort-on-container-exit",
            "--abort-on-container-failure",
        ],
        &[
            "up",
            "--exit-code-from",
            "server",
            "--abort-on-container-exit",
            "--abort-on-container-failure",
        ],
    ] {
        let ours = p.rc(args);
        let theirs = p.dc(args);
        assert!(!ours.status.success(), "{args:?} was accepted");
        let said = stderr(&theirs);
        let said = said.trim().trim_start_matches("Error: ").to_string();
        assert!(
            !said.is_empty() && stderr(&ours).contains(&said),
            "{args:?}\nrcompose: {}\ndocker compose: {said}",
            stderr(&ours)
        );
    }
    p.ok(&["down", "-t", "0"]);
}
