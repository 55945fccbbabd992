//! The Docker runtime against the real engine (at `DOCKER_HOST`, by default
//! `/var/run/docker.sock`).
//!
//! Nothing can be pulled here, so the tests build their image locally from
//! the static busybox of Debian's `busybox-static` package (`/bin/busybox`).
//! Without the engine or busybox they print `SKIPPED:` and pass, except
//! under `CI=true`, where they fail. Every test
//! names what it makes after the process id and removes it on the way out,
//! even when an assertion fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use rcompose_tests::{docker_available, require};
use runtime_shim::docker::DockerRuntime;
use runtime_shim::{
    Archives, BuildSpec, CommitSpec, ContainerSpec, ContainerState, LogOptions, Logs, Mount,
    Runtime, RuntimeError, Session,
};
use tokio::io::AsyncWriteExt;
use tokio::time::{timeout, Instant};

const SOCKET: &str = "/var/run/docker.sock";
const HOST: &str = "unix:///var/run/docker.sock";
const BUSYBOX: &str = "/bin/busybox";
const DEADLINE: Duration = Duration::from_secs(60);

/// The engine, or `None` (after saying why) when the tests cannot run.
async fn engine() -> Option<DockerRuntime> {
    if !require(docker_available(), "the Docker Engine")
        || !require(
            Path::new(BUSYBOX).exists(),
            "/bin/busybox (Debian's busybox-static)",
        )
    {
        return None;
    }
    // The docker client may reach an engine through a context or TLS,
    // which the runtime does not follow: that engine is not this one's.
    match DockerRuntime::connect().await {
        Ok(rt) => Some(rt),
        Err(e) => {
            require(false, &format!("the engine at DOCKER_HOST ({e})"));
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
                if let Ok(d) = DockerRuntime::connect().await {
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
    if require(
        Path::new(SOCKET).exists(),
        "the engine's socket at /var/run/docker.sock",
    ) {
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
    session.process.resize(101, 33).await.unwrap();
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
