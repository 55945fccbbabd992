//! The planner and the executor on the recording fake runtime: each case
//! loads a project, applies steps and compares every plan's text with its
//! snapshot under `tests/plans/` (`UPDATE_EXPECT=1` rewrites them).

use std::path::PathBuf;
use std::sync::Arc;

use indexmap::IndexMap;
use orchestrator::execute::{execute, ExecuteOptions};
use orchestrator::loader::load_from_str;
use orchestrator::model::Project;
use orchestrator::observe::{observe, observe_limits};
use orchestrator::plan::{
    plan_build, plan_down, plan_lifecycle, plan_pull, plan_up, plan_wait, BuildOptions,
    DownOptions, Lifecycle, Plan, PullOptions, Recreate, UpOptions,
};
use runtime_shim::fake::FakeRuntime;
use runtime_shim::Runtime;

fn project(yaml: &str) -> Project {
    let dir = std::env::temp_dir().join("rcompose-plan-tests");
    let _ = std::fs::create_dir_all(&dir);
    let mut env = IndexMap::new();
    env.insert("HOME".to_string(), "/home/tester".to_string());
    let mut p = match load_from_str(yaml, &dir, env) {
        Ok(l) => l.project,
        Err(e) => panic!("{e}"),
    };
    p.name = "demo".into();
    // Names derived from the project name were computed before the override.
    for (k, n) in p.networks.iter_mut() {
        n.name = format!("demo_{k}");
    }
    for (k, v) in p.volumes.iter_mut() {
        v.name = format!("demo_{k}");
    }
    p
}

/// Runs a plan on the fake; returns the executor's failures as text.
async fn run(rt: &Arc<FakeRuntime>, plan: &Plan) -> String {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let dynrt: Arc<dyn Runtime> = rt.clone();
    let outcome = execute(dynrt, plan, ExecuteOptions::default(), tx).await;
    let mut s = String::new();
    for (i, e) in &outcome.failures {
        s.push_str(&format!("failed #{}: {e}\n", i + 1));
    }
    for i in &outcome.skipped {
        s.push_str(&format!("skipped #{}\n", i + 1));
    }
    s
}

/// Compares `actual` with the snapshot `name`.
fn check(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/plans")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("{e}"));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual, expected,
        "plan snapshot {name} differs (UPDATE_EXPECT=1 to accept)"
    );
}

async fn up(
    rt: &Arc<FakeRuntime>,
    p: &Project,
    options: &UpOptions,
    log: &mut String,
    title: &str,
) {
    let observed = observe(rt.as_ref(), p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let build = plan_build(p, &observed, &BuildOptions::default());
    if !build.is_empty() {
        log.push_str(&format!("== {title}: build\n{build}"));
        log.push_str(&run(rt, &build).await);
    }
    let mut observed = observe(rt.as_ref(), p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    observe_limits(rt.as_ref(), &mut observed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let plan = plan_up(p, &observed, options);
    log.push_str(&format!("== {title}\n{plan}"));
    log.push_str(&run(rt, &plan).await);
}

const STACK: &str = r#"
services:
  db:
    image: postgres:16
    volumes: [data:/var/lib/postgresql/data]
    healthcheck:
      test: ["CMD", "pg_isready"]
  web:
    build: .
    depends_on:
      db:
        condition: service_healthy
    networks: [front, default]
    ports: ["8080:80"]
  worker:
    image: worker:1
    depends_on: [db]
networks:
  front:
volumes:
  data:
"#;

#[tokio::test]
async fn up_from_nothing_then_again_changes_nothing() {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("postgres:16");
    rt.add_image("worker:1");
    let p = project(STACK);
    let mut log = String::new();
    up(&rt, &p, &UpOptions::default(), &mut log, "first up").await;
    up(&rt, &p, &UpOptions::default(), &mut log, "second up").await;
    check("up_twice", &log);
}

#[tokio::test]
async fn only_changed_services_are_recreated() {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("postgres:16");
    rt.add_image("worker:1");
    let mut log = String::new();
    up(
        &rt,
        &project(STACK),
        &UpOptions::default(),
        &mut log,
        "first up",
    )
    .await;
    let changed = STACK.replace(
        "image: worker:1",
        "image: worker:1\n    environment: [MODE=fast]",
    );
    up(
        &rt,
        &project(&changed),
        &UpOptions::default(),
        &mut log,
        "worker changed",
    )
    .await;
    check("recreate_changed", &log);
}

#[tokio::test]
async fn limits_change_in_place_and_removing_one_recreates() {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("postgres:16");
    rt.add_image("worker:1");
    let with = |limits: &str| STACK.replace("image: worker:1", &format!("image: worker:1{limits}"));
    let mut log = String::new();
    let steps = [
        ("first up", "\n    mem_limit: 32m\n    cpus: 0.25"),
        ("limits raised", "\n    mem_limit: 64m\n    cpus: 0.5"),
        ("again", "\n    mem_limit: 64m\n    cpus: 0.5"),
        (
            "back to the first file",
            "\n    mem_limit: 32m\n    cpus: 0.25",
        ),
        ("a limit removed", ""),
    ];
    for (title, limits) in steps {
        up(
            &rt,
            &project(&with(limits)),
            &UpOptions::default(),
            &mut log,
            title,
        )
        .await;
    }
    check("limits_in_place", &log);
}

#[tokio::test]
async fn scaling_adds_and_removes_the_highest_numbers() {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("worker:1");
    let p = project("services:\n  worker:\n    image: worker:1\n");
    let mut log = String::new();
    let mut options = UpOptions::default();
    options.scale.insert("worker".into(), 3);
    up(&rt, &p, &options, &mut log, "scale to 3").await;
    options.scale.insert("worker".into(), 1);
    up(&rt, &p, &options, &mut log, "scale to 1").await;
    check("scale", &log);
}

#[tokio::test]
async fn orphans_are_reported_then_removed_on_request() {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("a:1");
    rt.add_image("b:1");
    let mut log = String::new();
    up(
        &rt,
        &project("services:\n  a:\n    image: a:1\n  b:\n    image: b:1\n"),
        &UpOptions::default(),
        &mut log,
        "two services",
    )
    .await;
    let one = project("services:\n  a:\n    image: a:1\n");
    up(
        &rt,
        &one,
        &UpOptions::default(),
        &mut log,
        "b removed from the file",
    )
    .await;
    let options = UpOptions {
        remove_orphans: true,
        ..UpOptions::default()
    };
    up(&rt, &one, &options, &mut log, "with --remove-orphans").await;
    check("orphans", &log);
}

#[tokio::test]
async fn a_failure_skips_dependants_and_the_rest_goes_on() {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("postgres:16");
    rt.add_image("worker:1");
    rt.fail("create demo-db-1", "port is already allocated");
    let mut log = String::new();
    up(
        &rt,
        &project(STACK),
        &UpOptions::default(),
        &mut log,
        "db cannot be created",
    )
    .await;
    check("failure", &log);
}

#[tokio::test]
async fn down_removes_containers_networks_and_volumes() {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("postgres:16");
    rt.add_image("worker:1");
    let p = project(STACK);
    let mut log = String::new();
    up(&rt, &p, &UpOptions::default(), &mut log, "up").await;
    let observed = observe(rt.as_ref(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stop = plan_lifecycle(
        &p,
        &observed,
        &["worker".to_string()],
        &Lifecycle::Stop(None),
    );
    log.push_str(&format!("== stop worker\n{stop}"));
    log.push_str(&run(&rt, &stop).await);
    let observed = observe(rt.as_ref(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let down = plan_down(
        &p,
        &observed,
        &DownOptions {
            volumes: true,
            ..DownOptions::default()
        },
    );
    log.push_str(&format!("== down -v\n{down}"));
    log.push_str(&run(&rt, &down).await);
    log.push_str(&format!("== engine calls\n{}\n", rt.calls().join("\n")));
    check("down", &log);
    assert!(rt
        .list_containers(&[], true)
        .await
        .map(|c| c.is_empty())
        .unwrap_or(false));
}

#[tokio::test]
async fn force_recreate_of_a_service_leaves_its_dependencies_unless_asked() {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("db:1");
    rt.add_image("app:1");
    let p = project(
        "services:\n  db:\n    image: db:1\n  app:\n    image: app:1\n    depends_on: [db]\n",
    );
    let mut log = String::new();
    up(&rt, &p, &UpOptions::default(), &mut log, "up").await;
    let mut options = UpOptions {
        services: vec!["app".into()],
        recreate: Recreate::Force,
        ..UpOptions::default()
    };
    up(&rt, &p, &options, &mut log, "up --force-recreate app").await;
    options.recreate_deps = Recreate::Force;
    up(
        &rt,
        &p,
        &options,
        &mut log,
        "up --force-recreate --always-recreate-deps app",
    )
    .await;
    check("recreate_deps", &log);
}

#[tokio::test]
async fn dependants_with_restart_follow_a_recreated_dependency() {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("db:1");
    rt.add_image("app:1");
    rt.add_image("side:1");
    let base = "services:\n  db:\n    image: db:1\n  app:\n    image: app:1\n    depends_on:\n      db:\n        condition: service_started\n        restart: true\n  side:\n    image: side:1\n    depends_on: [db]\n";
    let mut log = String::new();
    up(&rt, &project(base), &UpOptions::default(), &mut log, "up").await;
    let changed = base.replace("image: db:1", "image: db:1\n    environment: [V=2]");
    up(
        &rt,
        &project(&changed),
        &UpOptions::default(),
        &mut log,
        "db changed",
    )
    .await;
    check("restart_dependants", &log);
}

#[tokio::test]
async fn replicas_behind_a_balancer_are_announced_and_drained() {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("web:1");
    rt.add_image("rcompose-balancer:test");
    let seed = project(
        "services:\n  web:\n    image: web:1\n    expose: [\"80\"]\n  frontend:\n    image: dockercloud/haproxy\n    links: [web]\n    ports: [\"80:80\"]\n",
    );
    let host = orchestrator::balancer::Host {
        control_root: "/var/lib/rcompose/balancers".into(),
        engine_socket_gid: None,
        engine_socket: true,
    };
    let p = orchestrator::balancer::prepare(&seed, "rcompose-balancer:test", &host)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut log = String::new();
    // The balancer starts with the project: rcompose announces the
    // replicas to it once it runs (its own discovery may lack their port).
    up(&rt, &p, &UpOptions::default(), &mut log, "first up").await;
    let mut options = UpOptions::default();
    options.scale.insert("web".into(), 3);
    up(&rt, &p, &options, &mut log, "scale web to 3").await;
    // A forced recreate replaces one replica at a time: each drain waits
    // for the replica before to be announced again.
    options.recreate = Recreate::Force;
    options.services = vec!["web".into()];
    up(&rt, &p, &options, &mut log, "recreate web").await;
    // Recreated and scaled down at once: the replica that goes is drained
    // once the one that stays is back.
    options.scale.insert("web".into(), 2);
    let observed = observe(rt.as_ref(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let plan = plan_up(&p, &observed, &options);
    log.push_str(&format!("== recreate web, scaling it to 2\n{plan}"));
    options.recreate = Recreate::Diverged;
    options.services.clear();
    options.scale.insert("web".into(), 1);
    up(&rt, &p, &options, &mut log, "scale web to 1").await;
    let observed = observe(rt.as_ref(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let restart = plan_lifecycle(&p, &observed, &["web".into()], &Lifecycle::Restart(None));
    log.push_str(&format!("== restart web\n{restart}"));
    check("balancer", &log);
}

#[tokio::test]
async fn a_balancer_left_out_of_the_selection_still_drains_and_announces() {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("web:1");
    rt.add_image("rcompose-balancer:test");
    let yaml = "services:\n  web:\n    image: web:1\n    scale: 2\n    expose: [\"80\"]\n  frontend:\n    image: dockercloud/haproxy\n    links: [web]\n    ports: [\"80:80\"]\n";
    let host = orchestrator::balancer::Host {
        control_root: "/var/lib/rcompose/balancers".into(),
        engine_socket_gid: None,
        engine_socket: false,
    };
    let all = orchestrator::balancer::prepare(&project(yaml), "rcompose-balancer:test", &host)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut log = String::new();
    up(&rt, &all, &UpOptions::default(), &mut log, "first up").await;
    // `up --force-recreate web`: the loader leaves the frontend out.
    let mut selected = project(yaml);
    if let Some(frontend) = selected.services.remove("frontend") {
        selected
            .disabled_services
            .insert("frontend".into(), frontend);
    }
    let selected = orchestrator::balancer::prepare(&selected, "rcompose-balancer:test", &host)
        .unwrap_or_else(|e| panic!("{e}"));
    let options = UpOptions {
        services: vec!["web".into()],
        recreate: Recreate::Force,
        ..UpOptions::default()
    };
    up(
        &rt,
        &selected,
        &options,
        &mut log,
        "recreate web, frontend not selected",
    )
    .await;
    check("balancer_not_selected", &log);
}

#[tokio::test]
async fn healthchecked_replicas_behind_a_balancer_are_replaced_once_healthy() {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("web:1");
    rt.add_image("rcompose-balancer:test");
    let seed = project(
        "services:\n  web:\n    image: web:1\n    scale: 2\n    expose: [\"80\"]\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n  frontend:\n    image: dockercloud/haproxy\n    links: [web]\n    ports: [\"80:80\"]\n",
    );
    let host = orchestrator::balancer::Host {
        control_root: "/var/lib/rcompose/balancers".into(),
        engine_socket_gid: None,
        engine_socket: true,
    };
    let p = orchestrator::balancer::prepare(&seed, "rcompose-balancer:test", &host)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut log = String::new();
    up(&rt, &p, &UpOptions::default(), &mut log, "first up").await;
    let observed = observe(rt.as_ref(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let options = UpOptions {
        services: vec!["web".into()],
        recreate: Recreate::Force,
        ..UpOptions::default()
    };
    log.push_str(&format!(
        "== recreate web\n{}",
        plan_up(&p, &observed, &options)
    ));
    let restart = plan_lifecycle(&p, &observed, &["web".into()], &Lifecycle::Restart(None));
    log.push_str(&format!("== restart web\n{restart}"));
    check("balancer_healthchecked", &log);
}

#[tokio::test]
async fn down_of_some_services_then_of_a_project_named_without_its_file() {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("postgres:16");
    rt.add_image("worker:1");
    let p = project(STACK);
    let mut log = String::new();
    up(&rt, &p, &UpOptions::default(), &mut log, "up").await;
    log.clear();
    let observed = observe(rt.as_ref(), &p)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let wait = plan_wait(&p, &observed, &["db".to_string()]);
    log.push_str(&format!("== up --wait db\n{wait}"));
    let some = plan_down(
        &p,
        &observed,
        &DownOptions {
            services: vec!["worker".to_string()],
            volumes: true,
            ..DownOptions::default()
        },
    );
    log.push_str(&format!("== down -v worker\n{some}"));
    log.push_str(&run(&rt, &some).await);
    // `down -p demo` with no compose file: the project is only a name.
    let named = Project {
        name: "demo".into(),
        ..Project::default()
    };
    let observed = observe(rt.as_ref(), &named)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let all = plan_down(&named, &observed, &DownOptions::default());
    log.push_str(&format!("== down -p demo\n{all}"));
    log.push_str(&run(&rt, &all).await);
    check("down_partial", &log);
    let left = rt.list_containers(&[], true).await.unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let nets = rt.list_networks(&[]).await.unwrap_or_default();
    assert!(nets.is_empty(), "{nets:?}");
}

#[tokio::test]
async fn pull_names_each_image_once_and_can_leave_out_buildable_services() {
    let p = project(
        r#"
services:
  a: {image: "redis:7"}
  b: {image: "redis:7"}
  c: {image: "app:1", build: .}
  d: {build: .}
"#,
    );
    let mut log = String::new();
    let all = plan_pull(&p, &PullOptions::default());
    log.push_str(&format!("== pull\n{all}"));
    let some = plan_pull(
        &p,
        &PullOptions {
            ignore_buildable: true,
            ..PullOptions::default()
        },
    );
    log.push_str(&format!("== pull --ignore-buildable\n{some}"));
    let one = plan_pull(
        &p,
        &PullOptions {
            services: vec!["b".to_string()],
            ..PullOptions::default()
        },
    );
    log.push_str(&format!("== pull b\n{one}"));
    check("pull", &log);
}

#[test]
fn refresh_pull_policies_pull_images_older_than_their_interval() {
    use orchestrator::observe::Observed;
    use orchestrator::plan::refresh_interval;
    assert_eq!(refresh_interval("daily"), Some(86_400));
    assert_eq!(refresh_interval("weekly"), Some(604_800));
    assert_eq!(refresh_interval("every_1d12h"), Some(129_600));
    assert_eq!(refresh_interval("every_30m"), Some(1_800));
    for bad in ["every_", "every_12", "every_1y", "missing", "always"] {
        assert_eq!(refresh_interval(bad), None, "{bad}");
    }
    let p = project(
        r#"
services:
  fresh: {image: "fresh:1", pull_policy: daily}
  stale: {image: "stale:1", pull_policy: daily}
  unknown: {image: "unknown:1", pull_policy: weekly}
  hourly: {image: "hourly:1", pull_policy: every_1h}
  kept: {image: "kept:1", pull_policy: missing}
  absent: {image: "absent:1", pull_policy: every_2d}
"#,
    );
    let now = 1_000_000_000;
    let image = |age: Option<i64>| runtime_shim::Image {
        id: "sha256:1".into(),
        last_tagged: age.map(|a| now - a).unwrap_or(0),
        ..Default::default()
    };
    let mut observed = Observed::default();
    for (name, age) in [
        ("fresh:1", Some(3_600)),
        ("stale:1", Some(2 * 86_400)),
        ("unknown:1", None),
        ("hourly:1", Some(3_600)),
        ("kept:1", Some(365 * 86_400)),
    ] {
        observed.images.insert(name.to_string(), image(age));
    }
    let plan = plan_build(
        &p,
        &observed,
        &BuildOptions {
            now,
            ..BuildOptions::default()
        },
    );
    check("refresh_pull", &format!("{plan}"));
}
