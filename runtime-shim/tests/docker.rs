//! The Docker runtime against the real engine at `/var/run/docker.sock`.
//!
//! Nothing can be pulled here, so the tests build their image locally from
//! the static busybox of Debian's `busybox-static` package (`/bin/busybox`).
//! Without the engine or busybox they print `SKIPPED:` and pass. Every test
//! names what it makes after the process id and removes it on the way out,
//! even when an assertion fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use runtime_shim::docker::DockerRuntime;
use runtime_shim::{
    BuildSpec, CommitSpec, ContainerSpec, ContainerState, ExecSpec, Health, HealthcheckSpec,
    LogOptions, Mount, NetworkAttachment, NetworkSpec, PortBinding, Runtime, RuntimeError, Session,
    VolumeSpec,
};
use tokio::io::AsyncWriteExt;
use tokio::time::{timeout, Instant};

const SOCKET: &str = "/var/run/docker.sock";
const HOST: &str = "unix:///var/run/docker.sock";
const BUSYBOX: &str = "/bin/busybox";
const DEADLINE: Duration = Duration::from_secs(60);

/// The engine, or `None` (after saying why) when the tests cannot run.
async fn engine() -> Option<DockerRuntime> {
    if !Path::new(SOCKET).exists() {
        println!("SKIPPED: docker engine not available");
        return None;
    }
    if !Path::new(BUSYBOX).exists() {
        println!("SKIPPED: {BUSYBOX} not found (Debian's busybox-static package provides it)");
        return None;
    }
    match DockerRuntime::connect_to(HOST).await {
        Ok(rt) => Some(rt),
        Err(e) => {
            println!("SKIPPED: docker engine not available ({e})");
            None
        }
    }
}

/// A unique name for something a test makes.
fn unique(test: &str, what: &str) -> String {
    format!("rcs-{}-{test}-{what}", std::process::id())
}

/// What a test made; removed when dropped, whether the test passed or not.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    networks: Vec<String>,
    volumes: Vec<String>,
    images: Vec<String>,
    dirs: Vec<PathBuf>,
}

/// The things to remove, handed to the cleaning thread.
struct Leftovers {
    containers: Vec<String>,
    networks: Vec<String>,
    volumes: Vec<String>,
    images: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let todo = Leftovers {
            containers: std::mem::take(&mut self.containers),
            networks: std::mem::take(&mut self.networks),
            volumes: std::mem::take(&mut self.volumes),
            images: std::mem::take(&mut self.images),
            dirs: std::mem::take(&mut self.dirs),
        };
        let nothing = todo.containers.is_empty()
            && todo.networks.is_empty()
            && todo.volumes.is_empty()
            && todo.images.is_empty()
            && todo.dirs.is_empty();
        if nothing {
            return;
        }
        // Drop may run inside the test's runtime: clean up from another thread.
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(d) = DockerRuntime::connect_to(HOST).await {
                    for c in &todo.containers {
                        let _ = d.remove_container(c, true, true).await;
                    }
                    for n in &todo.networks {
                        let _ = d.remove_network(n).await;
                    }
                    for v in &todo.volumes {
                        let _ = d.remove_volume(v).await;
                    }
                    for i in &todo.images {
                        let _ = d.remove_image(i, true).await;
                    }
                }
            });
            for dir in &todo.dirs {
                let _ = std::fs::remove_dir_all(dir);
            }
        });
        let _ = done.join();
    }
}

fn temp_dir(cleanup: &mut Cleanup, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    cleanup.dirs.push(dir.clone());
    dir
}

/// The test image's Dockerfile; `{unique}` becomes a label with the test's
/// tag so that no two tests share a layer: tests run in parallel and remove
/// their images, and a removed layer must not be one that another test's
/// build is reusing from the cache at that moment.
const DOCKERFILE: &str = r#"FROM scratch AS base
LABEL rcs.test.unique={unique}
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ARG GREETING=unset
RUN echo "$GREETING" > /greeting
ENTRYPOINT ["/bin/echo", "from-entrypoint"]

FROM base AS broken
RUN false
"#;

/// Builds the busybox test image under `tag` (and `tag-alt`), returning the
/// build's output lines.
async fn build_busybox(rt: &DockerRuntime, cleanup: &mut Cleanup, tag: &str) -> Vec<String> {
    let ctx = temp_dir(cleanup, &format!("{tag}-ctx").replace([':', '/'], "-"));
    std::fs::copy(BUSYBOX, ctx.join("busybox")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile.test"),
        DOCKERFILE.replace("{unique}", tag),
    )
    .unwrap();
    std::fs::write(ctx.join("junk-1"), "x").unwrap();
    std::fs::write(ctx.join("junk-keep"), "kept").unwrap();
    std::fs::create_dir_all(ctx.join("logs/deep")).unwrap();
    std::fs::write(ctx.join("logs/deep/a.log"), "x").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "junk*\n!junk-keep\n**/*.log\n").unwrap();
    let alt = format!("{tag}-alt");
    cleanup.images.push(tag.to_string());
    cleanup.images.push(alt.clone());
    let spec = BuildSpec {
        context: ctx.to_string_lossy().into_owned(),
        dockerfile: "Dockerfile.test".into(),
        tags: vec![tag.to_string(), alt],
        args: BTreeMap::from([("GREETING".into(), "hi-from-arg".into())]),
        target: "base".into(),
        labels: BTreeMap::from([("rcs.test".into(), "build".into())]),
        ..Default::default()
    };
    let mut output = rt.build_image(&spec).await.expect("build starts");
    let mut lines = Vec::new();
    while let Some(line) = timeout(DEADLINE, output.next())
        .await
        .expect("build in time")
    {
        lines.push(line.unwrap_or_else(|e| panic!("build failed: {e}\n{}", lines.join("\n"))));
    }
    lines
}

/// Reads a container's whole output.
async fn logs_of(rt: &DockerRuntime, id: &str, options: &LogOptions) -> (String, String) {
    let mut stream = rt.logs(id, options).await.unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    while let Some(line) = timeout(DEADLINE, stream.next())
        .await
        .expect("logs in time")
    {
        let line = line.unwrap();
        if line.stderr {
            err.push_str(&line.text);
        } else {
            out.push_str(&line.text);
        }
    }
    (out, err)
}

/// Waits until `check` holds for the container's details.
async fn poll_until(
    rt: &DockerRuntime,
    id: &str,
    what: &str,
    check: impl Fn(&runtime_shim::ContainerDetails) -> bool,
) -> runtime_shim::ContainerDetails {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let details = rt.inspect_container(id).await.unwrap();
        if check(&details) {
            return details;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached in time: {details:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A container of the test image running `script` with `sh -c`.
fn shell_container(name: &str, image: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: image.to_string(),
        entrypoint: Some(vec![]),
        command: Some(vec!["sh".into(), "-c".into(), script.to_string()]),
        ..Default::default()
    }
}

#[tokio::test]
async fn connection_errors_are_unavailable() {
    for host in [
        "unix:///nonexistent/rcompose.sock",
        "ssh://somewhere",
        "tcp://127.0.0.1:1",
    ] {
        match DockerRuntime::connect_to(host).await {
            Err(RuntimeError::Unavailable(msg)) => assert!(msg.contains(host), "{msg}"),
            other => panic!("{host}: expected Unavailable, got {other:?}"),
        }
    }
}

/// `connect()` reads `DOCKER_HOST`; checked in a child process so that no
/// test changes the environment of this (multi-threaded) one.
#[tokio::test]
async fn connect_honours_docker_host() {
    if let Ok(expect) = std::env::var("RCS_DOCKER_HOST_CHILD") {
        let result = DockerRuntime::connect().await;
        if expect == "ok" {
            let rt = result.expect("connects through DOCKER_HOST");
            assert_eq!(rt.host(), HOST);
            assert!(!rt.api_version().is_empty());
        } else {
            match result {
                Err(RuntimeError::Unavailable(msg)) => {
                    assert!(msg.contains("127.0.0.1:1"), "{msg}")
                }
                other => panic!("expected Unavailable, got {other:?}"),
            }
        }
        return;
    }
    let mut cases = vec![("tcp://127.0.0.1:1", "unavailable")];
    if Path::new(SOCKET).exists() {
        cases.push((HOST, "ok"));
    }
    for (host, expect) in cases {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "connect_honours_docker_host"])
            .env("DOCKER_HOST", host)
            .env("RCS_DOCKER_HOST_CHILD", expect)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "DOCKER_HOST={host}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
}

#[tokio::test]
async fn builds_inspects_and_removes_images() {
    let Some(rt) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    assert!(rt.version().await.unwrap().starts_with("docker "));
    let tag = format!("{}:1", unique("build", "img"));
    let lines = build_busybox(&rt, &mut cleanup, &tag).await;
    assert!(
        lines.iter().any(|l| l.starts_with("Successfully built")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("RUN false")),
        "target stage ignored: {lines:?}"
    );

    let image = rt.inspect_image(&tag).await.unwrap().expect("image built");
    assert!(image.id.starts_with("sha256:"));
    assert!(image.tags.contains(&tag), "{:?}", image.tags);
    assert!(
        image.tags.contains(&format!("{tag}-alt")),
        "second tag: {:?}",
        image.tags
    );
    assert!(image.size > 1_000_000);
    assert!(image.created > 1_600_000_000);
    assert_eq!(rt.inspect_image("rcs-no-such-image:0").await.unwrap(), None);
    let repository = tag.split(':').next().unwrap();
    let listed = rt.list_images(repository).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, image.id);
    assert!(listed[0].tags.contains(&tag), "{listed:?}");
    assert!(rt
        .list_images("rcs-no-such-image")
        .await
        .unwrap()
        .is_empty());

    // An inline Dockerfile, with the context filtered by .dockerignore.
    let ctx = cleanup.dirs[0].clone();
    let copy_tag = format!("{}:1", unique("build", "copy"));
    cleanup.images.push(copy_tag.clone());
    let spec = BuildSpec {
        context: ctx.to_string_lossy().into_owned(),
        dockerfile_inline: format!("FROM {tag}\nCOPY . /ctx/\n"),
        tags: vec![copy_tag.clone()],
        no_cache: true,
        ..Default::default()
    };
    let mut output = rt.build_image(&spec).await.unwrap();
    while let Some(line) = output.next().await {
        line.unwrap();
    }
    let name = unique("build", "ls");
    cleanup.containers.push(name.clone());
    let id = rt
        .create_container(&shell_container(
            &name,
            &copy_tag,
            "cd /ctx && find . -type f | sort; cat /greeting",
        ))
        .await
        .unwrap();
    rt.start_container(&id).await.unwrap();
    assert_eq!(rt.wait_container(&id).await.unwrap(), 0);
    let (out, _) = logs_of(&rt, &id, &LogOptions::default()).await;
    assert!(out.contains("./junk-keep"), "{out}");
    assert!(out.contains("./busybox"), "{out}");
    assert!(!out.contains("junk-1"), "ignored file sent: {out}");
    assert!(!out.contains("a.log"), "ignored file sent: {out}");
    assert!(
        !out.contains(".dockerfile."),
        "generated Dockerfile copied: {out}"
    );
    assert!(out.contains("hi-from-arg"), "build arg: {out}");

    // A failing build ends its stream with an error.
    let broken = BuildSpec {
        context: ctx.to_string_lossy().into_owned(),
        dockerfile_inline: format!("FROM {tag}\nRUN exit 7\n"),
        tags: vec![format!("{}:1", unique("build", "broken"))],
        ..Default::default()
    };
    let mut output = rt.build_image(&broken).await.unwrap();
    let mut failure = None;
    while let Some(line) = output.next().await {
        if let Err(e) = line {
            failure = Some(e);
        }
    }
    match failure {
        Some(RuntimeError::Engine(msg)) => assert!(msg.contains("non-zero code"), "{msg}"),
        other => panic!("expected a build error, got {other:?}"),
    }
    // A build the engine refuses outright reports the engine's reason.
    let refused = BuildSpec {
        context: ctx.to_string_lossy().into_owned(),
        dockerfile: "Dockerfile.test".into(),
        tags: vec!["Not A Valid Tag".into()],
        ..Default::default()
    };
    let mut output = rt.build_image(&refused).await.unwrap();
    let mut failure = None;
    while let Some(line) = output.next().await {
        if let Err(e) = line {
            failure = Some(e);
        }
    }
    match failure {
        Some(RuntimeError::Engine(msg)) => assert!(msg.contains("invalid reference"), "{msg}"),
        other => panic!("expected the engine's refusal, got {other:?}"),
    }
    let missing = BuildSpec {
        context: ctx.to_string_lossy().into_owned(),
        dockerfile: "Nope".into(),
        ..Default::default()
    };
    assert!(rt.build_image(&missing).await.is_err());

    rt.remove_image(&copy_tag, true).await.unwrap();
    assert_eq!(rt.inspect_image(&copy_tag).await.unwrap(), None);
    assert!(matches!(
        rt.remove_image(&copy_tag, false).await,
        Err(RuntimeError::NotFound { .. })
    ));
}

#[tokio::test]
async fn creates_lists_and_removes_networks_and_volumes() {
    let Some(rt) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let label = format!("rcs.test={}-netvol", std::process::id());
    let labels = BTreeMap::from([(
        "rcs.test".to_string(),
        format!("{}-netvol", std::process::id()),
    )]);

    let net = unique("netvol", "net");
    cleanup.networks.push(net.clone());
    let third = 100 + std::process::id() % 150;
    let spec = NetworkSpec {
        name: net.clone(),
        labels: labels.clone(),
        internal: true,
        attachable: true,
        ipam_pools: vec![(
            format!("10.213.{third}.0/24"),
            format!("10.213.{third}.1"),
            String::new(),
        )],
        driver_opts: BTreeMap::from([("com.docker.network.driver.mtu".into(), "1400".into())]),
        ..Default::default()
    };
    let id = rt.create_network(&spec).await.unwrap();
    assert!(!id.is_empty());
    match rt.create_network(&spec).await {
        Err(RuntimeError::Conflict { kind, name }) => {
            assert_eq!((kind, name.as_str()), ("network", net.as_str()))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let found = rt.inspect_network(&net).await.unwrap().expect("network");
    assert_eq!(found.id, id);
    assert_eq!(found.driver, "bridge");
    assert!(found.internal);
    assert_eq!(found.labels, labels);
    let listed = rt
        .list_networks(std::slice::from_ref(&label))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, net);
    rt.remove_network(&net).await.unwrap();
    assert_eq!(rt.inspect_network(&net).await.unwrap(), None);
    assert!(matches!(
        rt.remove_network(&net).await,
        Err(RuntimeError::NotFound {
            kind: "network",
            ..
        })
    ));

    let vol = unique("netvol", "vol");
    cleanup.volumes.push(vol.clone());
    rt.create_volume(&VolumeSpec {
        name: vol.clone(),
        labels: labels.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let found = rt.inspect_volume(&vol).await.unwrap().expect("volume");
    assert_eq!(found.driver, "local");
    assert_eq!(found.labels, labels);
    let listed = rt.list_volumes(std::slice::from_ref(&label)).await.unwrap();
    assert_eq!(
        listed.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        vec![vol.as_str()]
    );
    assert!(rt
        .list_volumes(&["rcs.test=nothing-has-this".to_string()])
        .await
        .unwrap()
        .is_empty());
    rt.remove_volume(&vol).await.unwrap();
    assert_eq!(rt.inspect_volume(&vol).await.unwrap(), None);
}

#[tokio::test]
async fn runs_a_container_through_its_lifecycle() {
    let Some(rt) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let test = "life";
    let image = format!("{}:1", unique(test, "img"));
    build_busybox(&rt, &mut cleanup, &image).await;

    let net = unique(test, "net");
    let net2 = unique(test, "net2");
    cleanup.networks.push(net.clone());
    cleanup.networks.push(net2.clone());
    for n in [&net, &net2] {
        rt.create_network(&NetworkSpec {
            name: n.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let vol = unique(test, "vol");
    cleanup.volumes.push(vol.clone());
    let bound = temp_dir(&mut cleanup, &unique(test, "bind"));
    std::fs::write(bound.join("bound.txt"), "bound-content\n").unwrap();
    let created_path = std::env::temp_dir().join(unique(test, "created"));
    cleanup.dirs.push(created_path.clone());

    let name = unique(test, "web");
    cleanup.containers.push(name.clone());
    let label_value = format!("{}-{test}", std::process::id());
    let script = "echo hello $FOO; cat /data/bound.txt; echo oops >&2; hostname; \
                  cat /sys/class/net/eth0/address; echo vol > /vol/f; touch /scratch/ready; \
                  trap 'exit 3' TERM; while true; do sleep 0.2; done";
    let mut spec = shell_container(&name, &image, script);
    spec.labels = BTreeMap::from([("rcs.test".into(), label_value.clone())]);
    spec.env = vec!["FOO=bar".into()];
    spec.hostname = "rcs-host".into();
    spec.mac_address = "02:42:ac:11:99:01".into();
    spec.ports = vec![PortBinding {
        container_port: 8080,
        protocol: "tcp".into(),
        host_ip: "127.0.0.1".into(),
        host_port: String::new(),
    }];
    spec.mounts = vec![
        Mount::Bind {
            source: bound.to_string_lossy().into_owned(),
            target: "/data".into(),
            read_only: true,
            create_host_path: false,
            propagation: String::new(),
            selinux: String::new(),
        },
        Mount::Bind {
            source: created_path.to_string_lossy().into_owned(),
            target: "/created".into(),
            read_only: false,
            create_host_path: true,
            propagation: String::new(),
            selinux: String::new(),
        },
        Mount::Volume {
            source: vol.clone(),
            target: "/vol".into(),
            read_only: false,
            nocopy: false,
            subpath: String::new(),
        },
        Mount::Tmpfs {
            target: "/scratch".into(),
            size: 1 << 20,
            mode: 0o755,
        },
    ];
    spec.networks = vec![NetworkAttachment {
        network: net.clone(),
        aliases: vec!["web".into()],
        ..Default::default()
    }];
    spec.healthcheck = Some(HealthcheckSpec {
        test: vec![
            "CMD".into(),
            "test".into(),
            "-f".into(),
            "/scratch/ready".into(),
        ],
        interval_ns: 300_000_000,
        timeout_ns: 2_000_000_000,
        retries: 3,
        ..Default::default()
    });
    spec.stop_timeout = Some(10);
    spec.restart = "no".into();

    let id = rt.create_container(&spec).await.unwrap();
    match rt.create_container(&spec).await {
        Err(RuntimeError::Conflict { kind, name: n }) => {
            assert_eq!((kind, n.as_str()), ("container", name.as_str()))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let created = rt.inspect_container(&id).await.unwrap();
    assert_eq!(created.container.state, ContainerState::Created);
    assert_eq!(created.container.name, name);
    rt.connect_network(
        &net2,
        &id,
        &NetworkAttachment {
            network: net2.clone(),
            aliases: vec!["web2".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();

    rt.start_container(&id).await.unwrap();
    let running = poll_until(&rt, &id, "healthy", |d| d.health == Health::Healthy).await;
    let c = &running.container;
    assert_eq!(c.state, ContainerState::Running);
    assert!(c.status.starts_with("Up"), "{}", c.status);
    assert_eq!(c.image, image);
    assert!(c.image_id.starts_with("sha256:"));
    assert_eq!(c.labels.get("rcs.test"), Some(&label_value));
    assert_eq!(c.networks, {
        let mut n = vec![net.clone(), net2.clone()];
        n.sort();
        n
    });
    assert!(
        running.addresses.contains_key(&net),
        "{:?}",
        running.addresses
    );
    assert!(
        running.addresses.contains_key(&net2),
        "{:?}",
        running.addresses
    );
    let port = c
        .ports
        .iter()
        .find(|p| p.container_port == 8080)
        .expect("published port");
    assert_eq!(
        (port.protocol.as_str(), port.host_ip.as_str()),
        ("tcp", "127.0.0.1")
    );
    assert_ne!(port.host_port, 0, "a random host port was chosen");
    assert!(created_path.is_dir(), "create_host_path made the directory");

    let listed = rt
        .list_containers(&[format!("rcs.test={label_value}")], false)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].name, name);
    assert_eq!(listed[0].state, ContainerState::Running);
    assert!(listed[0]
        .ports
        .iter()
        .any(|p| p.host_port == port.host_port));

    let deadline = Instant::now() + DEADLINE;
    let (out, err) = loop {
        let (out, err) = logs_of(&rt, &id, &LogOptions::default()).await;
        if out.contains("02:42:ac:11:99:01") || Instant::now() > deadline {
            break (out, err);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(out.contains("hello bar\n"), "{out}");
    assert!(out.contains("bound-content\n"), "{out}");
    assert!(out.contains("rcs-host\n"), "{out}");
    assert!(out.contains("02:42:ac:11:99:01"), "mac address: {out}");
    assert_eq!(err, "oops\n");
    // The engine copies stdout and stderr separately, so the stderr line may
    // be stamped last: the tail counts lines of both streams.
    let (tail_out, tail_err) = logs_of(
        &rt,
        &id,
        &LogOptions {
            tail: Some(1),
            timestamps: true,
            ..Default::default()
        },
    )
    .await;
    let tail = tail_out + &tail_err;
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.starts_with("20"), "timestamped: {tail}");

    let (titles, processes) = rt.top(&id).await.unwrap();
    assert!(titles.iter().any(|t| t == "PID"), "{titles:?}");
    assert!(!processes.is_empty());

    rt.pause_container(&id).await.unwrap();
    assert_eq!(
        rt.inspect_container(&id).await.unwrap().container.state,
        ContainerState::Paused
    );
    rt.unpause_container(&id).await.unwrap();

    let renamed = unique(test, "renamed");
    cleanup.containers.push(renamed.clone());
    rt.rename_container(&id, &renamed).await.unwrap();
    assert_eq!(
        rt.inspect_container(&renamed).await.unwrap().container.id,
        id
    );

    // The stop signal is trapped: the exit code is the script's.
    rt.stop_container(&id, Some(10)).await.unwrap();
    assert_eq!(rt.wait_container(&id).await.unwrap(), 3);
    assert_eq!(rt.wait_container(&id).await.unwrap(), 3, "already stopped");
    let stopped = rt.inspect_container(&id).await.unwrap();
    assert_eq!(stopped.container.state, ContainerState::Exited);
    assert_eq!(stopped.exit_code, 3);
    assert!(stopped.container.status.starts_with("Exited (3)"));
    assert!(rt
        .list_containers(&[format!("rcs.test={label_value}")], false)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        rt.list_containers(&[format!("rcs.test={label_value}")], true)
            .await
            .unwrap()
            .len(),
        1
    );

    rt.restart_container(&id, Some(1)).await.unwrap();
    poll_until(&rt, &id, "running", |d| {
        d.container.state == ContainerState::Running
    })
    .await;
    rt.kill_container(&id, "SIGKILL").await.unwrap();
    assert_eq!(rt.wait_container(&id).await.unwrap(), 137);
    assert!(matches!(
        rt.kill_container(&id, "SIGKILL").await,
        Err(RuntimeError::Engine(_))
    ));

    rt.remove_container(&id, false, true).await.unwrap();
    match rt.inspect_container(&id).await {
        Err(RuntimeError::NotFound { kind, .. }) => assert_eq!(kind, "container"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        rt.logs(&id, &LogOptions::default()).await,
        Err(RuntimeError::NotFound { .. })
    ));
    // The named volume outlives the container and kept what it wrote.
    assert!(rt.inspect_volume(&vol).await.unwrap().is_some());
}

#[tokio::test]
async fn create_reports_missing_images_and_bind_sources() {
    let Some(rt) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let test = "create";
    let image = format!("{}:1", unique(test, "img"));
    build_busybox(&rt, &mut cleanup, &image).await;

    let spec = ContainerSpec {
        name: unique(test, "noimage"),
        image: "rcs-no-such-image:0".into(),
        ..Default::default()
    };
    match rt.create_container(&spec).await {
        Err(RuntimeError::NotFound { kind, name }) => {
            assert_eq!(kind, "image");
            assert!(name.contains("rcs-no-such-image"), "{name}");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }

    let name = unique(test, "nobind");
    cleanup.containers.push(name.clone());
    let mut spec = shell_container(&name, &image, "true");
    spec.mounts = vec![Mount::Bind {
        source: "/nonexistent/rcompose/source".into(),
        target: "/x".into(),
        read_only: false,
        create_host_path: false,
        propagation: String::new(),
        selinux: String::new(),
    }];
    match rt.create_container(&spec).await {
        Err(RuntimeError::Engine(msg)) => assert!(msg.contains("does not exist"), "{msg}"),
        other => panic!("expected the engine to refuse, got {other:?}"),
    }

    // The image's entrypoint is kept when the spec has none.
    let name = unique(test, "entry");
    cleanup.containers.push(name.clone());
    let spec = ContainerSpec {
        name: name.clone(),
        image: image.clone(),
        command: Some(vec!["hello".into()]),
        ..Default::default()
    };
    let id = rt.create_container(&spec).await.unwrap();
    rt.start_container(&id).await.unwrap();
    assert_eq!(rt.wait_container(&id).await.unwrap(), 0);
    let (out, _) = logs_of(&rt, &id, &LogOptions::default()).await;
    assert_eq!(out, "from-entrypoint hello\n");
    rt.remove_container(&id, false, false).await.unwrap();
}

#[tokio::test]
async fn events_report_a_container_started_after_subscribing() {
    let Some(rt) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let test = "events";
    let image = format!("{}:1", unique(test, "img"));
    build_busybox(&rt, &mut cleanup, &image).await;

    let label = format!("rcs.events={}", std::process::id());
    let mut events = rt.events(std::slice::from_ref(&label)).await.unwrap();

    // An unlabelled container: its events are filtered out.
    let other = unique(test, "other");
    cleanup.containers.push(other.clone());
    let other_id = rt
        .create_container(&shell_container(&other, &image, "true"))
        .await
        .unwrap();
    rt.start_container(&other_id).await.unwrap();

    let name = unique(test, "watched");
    cleanup.containers.push(name.clone());
    let mut spec = shell_container(&name, &image, "exit 5");
    spec.labels = BTreeMap::from([("rcs.events".into(), std::process::id().to_string())]);
    let id = rt.create_container(&spec).await.unwrap();
    rt.start_container(&id).await.unwrap();

    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while !seen.iter().any(|(a, _): &(String, _)| a == "die") {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no start/die events in time; saw {seen:?}"))
            .expect("stream open")
            .unwrap();
        assert_eq!(event.kind, "container");
        assert_ne!(event.id, other_id, "label filter");
        assert_eq!(event.id, id);
        assert!(event.time > 1_600_000_000);
        assert_eq!(event.attributes.get("name"), Some(&name));
        seen.push((
            event.action.clone(),
            event.attributes.get("exitCode").cloned(),
        ));
    }
    let actions: Vec<&str> = seen.iter().map(|(a, _)| a.as_str()).collect();
    assert!(actions.contains(&"start"), "{actions:?}");
    assert!(actions.contains(&"create"), "{actions:?}");
    let die = seen.iter().find(|(a, _)| a == "die").unwrap();
    assert_eq!(die.1.as_deref(), Some("5"));
    assert_eq!(rt.wait_container(&id).await.unwrap(), 5);
}

/// Builds the test image and starts a container of it running `script`;
/// returns the container's id.
async fn running_container(
    rt: &DockerRuntime,
    cleanup: &mut Cleanup,
    test: &str,
    script: &str,
) -> String {
    let image = format!("{}:1", unique(test, "img"));
    build_busybox(rt, cleanup, &image).await;
    let name = unique(test, "box");
    cleanup.containers.push(name.clone());
    let id = rt
        .create_container(&shell_container(&name, &image, script))
        .await
        .unwrap();
    rt.start_container(&id).await.unwrap();
    poll_until(rt, &id, "running", |d| {
        d.container.state == ContainerState::Running
    })
    .await;
    id
}

/// Reads a session's whole output, standard output and error apart.
async fn output_of(session: &mut Session) -> (String, String) {
    let stream = session.output.as_mut().expect("attached output");
    let (mut out, mut err) = (String::new(), String::new());
    while let Some(line) = timeout(DEADLINE, stream.next())
        .await
        .expect("output in time")
    {
        let line = line.unwrap();
        if line.stderr {
            err.push_str(&line.text);
        } else {
            out.push_str(&line.text);
        }
    }
    (out, err)
}

/// Waits for an exec session to end; returns its exit code.
async fn exit_code_of(rt: &DockerRuntime, exec_id: &str) -> i64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(code) = rt.exec_exit_code(exec_id).await.unwrap() {
            return code;
        }
        assert!(Instant::now() < deadline, "exec {exec_id} did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn command(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.to_string()]
}

#[tokio::test]
async fn execs_commands_with_output_input_and_exit_codes() {
    let Some(rt) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let id = running_container(&rt, &mut cleanup, "exec", "while true; do sleep 0.2; done").await;

    // Output on both streams, a non-zero exit code, environment, user and
    // working directory.
    let spec = ExecSpec {
        command: command("echo out $FOO; pwd; id -u; echo err >&2; exit 3"),
        env: vec!["FOO=bar".into()],
        user: "1234".into(),
        working_dir: "/bin".into(),
        ..Default::default()
    };
    let mut session = rt.exec(&id, &spec).await.unwrap();
    assert!(!session.id.is_empty());
    assert!(session.input.is_none(), "no input unless asked");
    let (out, err) = output_of(&mut session).await;
    assert_eq!(out, "out bar\n/bin\n1234\n");
    assert_eq!(err, "err\n");
    assert_eq!(exit_code_of(&rt, &session.id).await, 3);

    let mut ok = rt
        .exec(
            &id,
            &ExecSpec {
                command: vec!["true".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (out, err) = output_of(&mut ok).await;
    assert_eq!((out.as_str(), err.as_str()), ("", ""));
    assert_eq!(exit_code_of(&rt, &ok.id).await, 0);

    // Standard input, closed by shutting the writer down.
    let mut cat = rt
        .exec(
            &id,
            &ExecSpec {
                command: vec!["cat".into()],
                stdin: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut input = cat.input.take().expect("input asked for");
    input.write_all(b"through stdin\n").await.unwrap();
    input.shutdown().await.unwrap();
    let (out, _) = output_of(&mut cat).await;
    assert_eq!(out, "through stdin\n");
    assert_eq!(exit_code_of(&rt, &cat.id).await, 0);

    // Detached: no streams; its effect shows once it has ended.
    let detached = rt
        .exec(
            &id,
            &ExecSpec {
                command: command("sleep 0.3; echo done > /detached"),
                detach: true,
                stdin: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(detached.output.is_none() && detached.input.is_none());
    assert_eq!(rt.exec_exit_code(&detached.id).await.unwrap(), None);
    assert_eq!(exit_code_of(&rt, &detached.id).await, 0);
    let mut check = rt
        .exec(
            &id,
            &ExecSpec {
                command: vec!["cat".into(), "/detached".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(output_of(&mut check).await.0, "done\n");

    // A TTY: everything is standard output, and it can be resized.
    let mut tty = rt
        .exec(
            &id,
            &ExecSpec {
                command: command("sleep 1; stty size; echo to-stderr >&2"),
                tty: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    rt.exec_resize(&tty.id, 123, 45).await.unwrap();
    let (out, err) = output_of(&mut tty).await;
    assert_eq!(err, "");
    assert_eq!(out, "45 123\r\nto-stderr\r\n");

    match rt.exec_exit_code("rcs-no-such-exec").await {
        Err(RuntimeError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    match rt.exec(&unique("exec", "missing"), &spec).await {
        Err(RuntimeError::NotFound { kind, .. }) => assert_eq!(kind, "container"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn samples_the_stats_of_a_running_container() {
    let Some(rt) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let id = running_container(&rt, &mut cleanup, "stats", "while true; do sleep 0.2; done").await;
    let stats = timeout(DEADLINE, rt.stats(&id))
        .await
        .expect("stats in time")
        .unwrap();
    assert!(stats.pids >= 1, "{stats:?}");
    assert!(stats.memory_usage > 0, "{stats:?}");
    assert!(stats.memory_limit >= stats.memory_usage, "{stats:?}");
    assert!(stats.cpu_percent >= 0.0, "{stats:?}");
    match rt.stats(&unique("stats", "missing")).await {
        Err(RuntimeError::NotFound { kind, .. }) => assert_eq!(kind, "container"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

/// The files of a tar archive, by path, with their contents.
fn tar_files(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        files.insert(path, content);
    }
    files
}

/// Reads a byte stream to its end.
async fn collect_bytes(mut stream: runtime_shim::BoxStream<Vec<u8>>) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(chunk) = timeout(DEADLINE, stream.next())
        .await
        .expect("bytes in time")
    {
        bytes.extend(chunk.unwrap());
    }
    bytes
}

#[tokio::test]
async fn copies_files_into_and_out_of_a_container() {
    let Some(rt) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let id = running_container(&rt, &mut cleanup, "copy", "while true; do sleep 0.2; done").await;

    let content = b"copied in\n";
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    builder
        .append_data(&mut header, "hello.txt", &content[..])
        .unwrap();
    let archive = builder.into_inner().unwrap();
    rt.copy_to(&id, "/", archive).await.unwrap();

    let mut cat = rt
        .exec(
            &id,
            &ExecSpec {
                command: vec!["cat".into(), "/hello.txt".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(output_of(&mut cat).await.0, "copied in\n");

    let back = collect_bytes(rt.copy_from(&id, "/hello.txt").await.unwrap()).await;
    let files = tar_files(&back);
    assert_eq!(
        files.get("hello.txt").map(Vec::as_slice),
        Some(&content[..]),
        "{:?}",
        files.keys()
    );

    match rt.copy_from(&id, "/no/such/path").await {
        Err(RuntimeError::NotFound { kind, .. }) => assert_eq!(kind, "path"),
        Err(e) => panic!("expected NotFound, got {e:?}"),
        Ok(_) => panic!("expected NotFound, got a stream"),
    }
    match rt.copy_to(&id, "/no/such/dir", Vec::new()).await {
        Err(RuntimeError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn commits_and_exports_a_container() {
    let Some(rt) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let id = running_container(
        &rt,
        &mut cleanup,
        "commit",
        "echo marked > /marker; while true; do sleep 0.2; done",
    )
    .await;

    let tag = format!("{}:v2", unique("commit", "snap"));
    cleanup.images.push(tag.clone());
    let image_id = rt
        .commit(
            &id,
            &CommitSpec {
                reference: tag.clone(),
                message: "a snapshot".into(),
                author: "rcompose tests".into(),
                pause: true,
                changes: vec!["ENV RCS_COMMITTED=1".into(), "LABEL rcs.commit=yes".into()],
            },
        )
        .await
        .unwrap();
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    let image = rt.inspect_image(&tag).await.unwrap().expect("committed");
    assert_eq!(image.id, image_id);
    assert!(image.tags.contains(&tag), "{:?}", image.tags);

    // The committed image runs with the change applied and the file kept.
    let name = unique("commit", "from-snap");
    cleanup.containers.push(name.clone());
    let from = rt
        .create_container(&shell_container(
            &name,
            &tag,
            "echo $RCS_COMMITTED; cat /marker",
        ))
        .await
        .unwrap();
    rt.start_container(&from).await.unwrap();
    assert_eq!(rt.wait_container(&from).await.unwrap(), 0);
    let (out, _) = logs_of(&rt, &from, &LogOptions::default()).await;
    assert_eq!(out, "1\nmarked\n");
    rt.remove_container(&from, true, true).await.unwrap();
    rt.remove_image(&tag, true).await.unwrap();
    assert_eq!(rt.inspect_image(&tag).await.unwrap(), None);

    let exported = collect_bytes(rt.export(&id).await.unwrap()).await;
    assert!(exported.len() > 1_000_000, "{} bytes", exported.len());
    let files = tar_files(&exported);
    assert_eq!(
        files.get("marker").map(Vec::as_slice),
        Some(&b"marked\n"[..])
    );
    assert!(files.contains_key("bin/busybox"), "{:?}", files.keys());
    match rt.export(&unique("commit", "missing")).await {
        Err(RuntimeError::NotFound { kind, .. }) => assert_eq!(kind, "container"),
        Err(e) => panic!("expected NotFound, got {e:?}"),
        Ok(_) => panic!("expected NotFound, got a stream"),
    }
}

#[tokio::test]
async fn attach_receives_a_containers_output() {
    let Some(rt) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let id = running_container(
        &rt,
        &mut cleanup,
        "attach",
        "i=0; while true; do i=$((i+1)); echo tick $i; echo tock $i >&2; sleep 0.2; done",
    )
    .await;
    let mut session = rt.attach(&id, false, false).await.unwrap();
    assert!(session.input.is_none());
    let output = session.output.as_mut().expect("output");
    let (mut ticks, mut tocks) = (0, 0);
    let deadline = Instant::now() + DEADLINE;
    while ticks < 2 || tocks < 2 {
        let line = tokio::time::timeout_at(deadline, output.next())
            .await
            .expect("output in time")
            .expect("stream open")
            .unwrap();
        if line.stderr {
            assert!(line.text.starts_with("tock "), "{line:?}");
            tocks += 1;
        } else {
            assert!(line.text.starts_with("tick "), "{line:?}");
            ticks += 1;
        }
    }
    match rt.attach(&unique("attach", "missing"), false, false).await {
        Err(RuntimeError::NotFound { kind, .. }) => assert_eq!(kind, "container"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn attach_with_stdin_and_a_tty_resizes() {
    let Some(rt) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let test = "attach-in";
    let image = format!("{}:1", unique(test, "img"));
    build_busybox(&rt, &mut cleanup, &image).await;
    let name = unique(test, "box");
    cleanup.containers.push(name.clone());
    let mut spec = shell_container(&name, &image, "read line; stty size; echo got $line");
    spec.tty = true;
    spec.stdin_open = true;
    let id = rt.create_container(&spec).await.unwrap();
    let mut session = rt.attach(&id, true, false).await.unwrap();
    rt.start_container(&id).await.unwrap();
    rt.resize(&id, 101, 33).await.unwrap();
    let mut input = session.input.take().expect("input");
    input.write_all(b"hello\n").await.unwrap();
    input.flush().await.unwrap();
    let (out, err) = output_of(&mut session).await;
    assert_eq!(err, "");
    assert!(out.contains("33 101\r\n"), "{out:?}");
    assert!(out.contains("got hello\r\n"), "{out:?}");
    assert_eq!(rt.wait_container(&id).await.unwrap(), 0);
}

#[tokio::test]
async fn pulling_from_an_unreachable_registry_fails() {
    let Some(rt) = engine().await else { return };
    let started = Instant::now();
    let failed = match rt.pull_image("127.0.0.1:9/none/none:1").await {
        Err(_) => true,
        Ok(mut lines) => {
            let mut failed = false;
            while let Some(line) = timeout(DEADLINE, lines.next())
                .await
                .expect("pull ends in time")
            {
                if line.is_err() {
                    failed = true;
                }
            }
            failed
        }
    };
    assert!(failed, "the pull did not fail");
    assert!(started.elapsed() < DEADLINE);
}
