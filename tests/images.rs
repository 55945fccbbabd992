//! The native runtime's image store through the binary: `docker save`
//! archives loaded, images saved back to Docker, root filesystems imported,
//! layers unpacked with their whiteouts the way Docker's own container
//! sees them, and bad input refused with the store left as it was.
//!
//! These need root (the native runtime does, for now) and, for the
//! comparisons, the Docker Engine; each test uses a state root of its own
//! under the temporary directory and removes it.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rcompose_tests::{engine_ready, is_root, rcompose_bin, require, stderr, stdout, IMAGE};

/// A native state root of one test, and the files it makes.
struct Native {
    root: PathBuf,
    /// Docker image names to remove at the end.
    docker_images: Vec<String>,
    /// Mount points to unmount at the end.
    mounts: Vec<PathBuf>,
}

impl Native {
    fn new(tag: &str) -> Native {
        let root = std::env::temp_dir().join(format!("rct-native-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
        Native {
            root,
            docker_images: vec![],
            mounts: vec![],
        }
    }

    fn name(&self, what: &str) -> String {
        format!("rct-native/{what}-{}", std::process::id())
    }

    /// `rcompose --runtime native ARGS` in the test's root, from a folder
    /// with no compose file.
    fn rc(&self, args: &[&str]) -> Output {
        self.rc_in("state", args)
    }

    fn rc_in(&self, state: &str, args: &[&str]) -> Output {
        let dir = self.root.join("cwd");
        let _ = std::fs::create_dir_all(&dir);
        Command::new(rcompose_bin())
            .env("RCOMPOSE_ROOT", self.root.join(state))
            .arg("--runtime")
            .arg("native")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
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

    fn sh(&self, script: &str) -> Output {
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("RC", rcompose_bin())
            .env("RCOMPOSE_ROOT", self.root.join("state"))
            .current_dir(&self.root)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn sh_ok(&self, script: &str) -> String {
        let o = self.sh(script);
        assert!(
            o.status.success(),
            "{script}:\n{}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg(m).output();
        }
        for i in &self.docker_images {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn docker(args: &[&str]) -> String {
    let o = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "docker {args:?}: {}", stderr(&o));
    stdout(&o)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn a_docker_save_archive_loads_lists_and_goes_back_to_docker() {
    if !require(is_root(), "root") || !engine_ready() {
        return;
    }
    let mut n = Native::new("load");
    let loaded = n.sh_ok(&format!(
        "docker save {IMAGE} | \"$RC\" --runtime native image load"
    ));
    assert_eq!(loaded.trim(), format!("Loaded image: {IMAGE}"));
    let listed = n.ok(&["images"]);
    let docker_id = docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE]);
    let short = &docker_id.trim().trim_start_matches("sha256:")[..12];
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("local/busybox") && l.contains(short)),
        "images lists the loaded image with Docker's id {short}:\n{listed}"
    );
    let inspect = json(&n.ok(&["image", "inspect", IMAGE]));
    assert_eq!(inspect[0]["Id"].as_str(), Some(docker_id.trim()));
    assert_eq!(inspect[0]["Config"]["Cmd"], serde_json::json!(["sh"]));
    // Layers keep set-user-id files and device nodes: only root looks in.
    let mode = std::fs::metadata(n.root.join("state/images")).map(|m| m.permissions().mode());
    assert_eq!(mode.ok().map(|m| m & 0o777), Some(0o700));

    // Back to Docker under another name: the same image.
    let saved = n.name("saved");
    n.docker_images.push(format!("{saved}:1"));
    n.ok(&["image", "tag", IMAGE, &format!("{saved}:1")]);
    let archive = n.root.join("saved.tar");
    let archive_s = archive.to_string_lossy().into_owned();
    n.ok(&["image", "save", "-o", &archive_s, &format!("{saved}:1")]);
    let back = docker(&["load", "-i", &archive_s]);
    assert!(back.contains(&format!("{saved}:1")), "{back}");
    let back_id = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("{saved}:1"),
    ]);
    assert_eq!(back_id.trim(), docker_id.trim());

    // And into an empty store, through the OCI layout of the same archive.
    let o = n.rc_in("other", &["image", "load", "-i", &archive_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = n.rc_in("other", &["image", "inspect", &format!("{saved}:1")]);
    assert_eq!(json(&stdout(&o))[0]["Id"].as_str(), Some(docker_id.trim()));

    // Removing the last name removes the blobs and layers.
    n.ok(&["image", "rm", IMAGE]);
    n.ok(&["image", "rm", &format!("{saved}:1")]);
    let left = std::fs::read_dir(n.root.join("state/images/layers/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "no layer is left once no image names it");
    let blobs = std::fs::read_dir(n.root.join("state/images/blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "no blob is left once no image names it");
}

#[test]
fn a_root_filesystem_tarball_is_imported_with_changes() {
    if !require(is_root(), "root") {
        return;
    }
    let n = Native::new("import");
    n.sh_ok(
        "mkdir -p rootfs/bin rootfs/srv && echo hello > rootfs/srv/index.html \
         && printf '#!/bin/sh\\n' > rootfs/bin/start && chmod 755 rootfs/bin/start \
         && tar -C rootfs -czf rootfs.tgz .",
    );
    let name = n.name("imported");
    let id = n.ok(&[
        "image",
        "import",
        "-c",
        "CMD [\"/bin/start\"]",
        "-c",
        "ENV GREETING=hello",
        "-c",
        "EXPOSE 8080",
        "-c",
        "WORKDIR /srv",
        &n.root.join("rootfs.tgz").to_string_lossy(),
        &format!("{name}:1"),
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let inspect = json(&n.ok(&["image", "inspect", &format!("{name}:1")]));
    let config = &inspect[0]["Config"];
    assert_eq!(config["Cmd"], serde_json::json!(["/bin/start"]));
    assert_eq!(config["Env"], serde_json::json!(["GREETING=hello"]));
    assert!(config["ExposedPorts"]["8080/tcp"].is_object(), "{config}");
    assert_eq!(config["WorkingDir"], "/srv");
    assert_eq!(inspect[0]["Id"].as_str(), Some(id.trim()));
    let diff_id = inspect[0]["RootFS"]["Layers"][0]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("sha256:")
        .to_string();
    let layer = n
        .root
        .join("state/images/layers/sha256")
        .join(diff_id)
        .join("root");
    assert_eq!(
        std::fs::read_to_string(layer.join("srv/index.html"))
            .ok()
            .as_deref(),
        Some("hello\n")
    );
    let mode = std::fs::metadata(layer.join("bin/start")).map(|m| m.permissions().mode());
    assert_eq!(mode.ok().map(|m| m & 0o777), Some(0o755));

    // The name given to another image leaves this one unnamed, to prune.
    n.sh_ok("mkdir -p other && echo other > other/o && tar -C other -cf other.tar .");
    n.ok(&[
        "image",
        "import",
        &n.root.join("other.tar").to_string_lossy(),
        &format!("{name}:1"),
    ]);
    let listed = n.ok(&["image", "ls"]);
    assert!(listed.contains("<none>"), "{listed}");
    let pruned = n.ok(&["image", "prune", "--force"]);
    assert!(pruned.contains(id.trim()), "{pruned}");
    assert!(!n.ok(&["image", "ls"]).contains("<none>"));

    // A change that cannot apply is refused, naming it, and nothing is added.
    let o = n.rc(&[
        "image",
        "import",
        "-c",
        "RUN true",
        &n.root.join("rootfs.tgz").to_string_lossy(),
        &format!("{name}:2"),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("RUN true"), "{}", stderr(&o));
    assert!(!n.ok(&["images"]).contains(":2") && !n.ok(&["images"]).contains(" 2 "));
}

/// A tree as a map from relative path to what matters of it.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let what = if m.file_type().is_symlink() {
                format!(
                    "link {}",
                    std::fs::read_link(&path)
                        .map(|t| t.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )
            } else if m.is_dir() {
                stack.push(path.clone());
                format!("dir {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid())
            } else {
                format!(
                    "file {:o} {}:{} {:?}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    std::fs::read(&path).unwrap_or_default()
                )
            };
            out.insert(rel, what);
        }
    }
    out
}

/// Docker's view of an image (the filesystem of a container made from it)
/// and rcompose's (its unpacked layers stacked by overlayfs, read-only), as
/// trees: they must be the same. Returns rcompose's.
fn same_tree_as_docker(n: &mut Native, name: &str, tag: &str) -> BTreeMap<String, String> {
    let container = docker(&["create", name, "true"]).trim().to_string();
    let exported = n.sh(&format!(
        "mkdir -p docker-{tag} && docker export {container} | tar -C docker-{tag} -xf -"
    ));
    let _ = docker(&["rm", &container]);
    assert!(exported.status.success(), "{}", stderr(&exported));

    let inspect = json(&n.ok(&["image", "inspect", name]));
    let layers: Vec<String> = inspect[0]["RootFS"]["Layers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    assert!(layers.len() >= 2, "{inspect}");
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| {
            n.root
                .join("state/images/layers/sha256")
                .join(l.trim_start_matches("sha256:"))
                .join("root")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let merged = n.root.join(format!("merged-{tag}"));
    std::fs::create_dir_all(&merged).unwrap_or_else(|e| panic!("{e}"));
    let mount = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("ro,lowerdir={}", lower.join(":")))
        .arg(&merged)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(mount.status.success(), "{}", stderr(&mount));
    n.mounts.push(merged.clone());

    let mut docker_tree = tree(&n.root.join(format!("docker-{tag}")));
    // What the engine adds to every container.
    docker_tree.retain(|p, _| {
        let top = p.split('/').next().unwrap_or("");
        !matches!(top, ".dockerenv" | "dev" | "proc" | "sys" | "etc")
    });
    let ours = tree(&merged);
    assert_eq!(
        ours, docker_tree,
        "{name}: rcompose's tree against Docker's"
    );
    ours
}

#[test]
fn whiteouts_and_opaque_directories_unpack_as_docker_shows_the_image() {
    if !require(is_root(), "root") || !engine_ready() {
        return;
    }
    let mut n = Native::new("whiteout");

    // Layers made by hand, so that both kinds of whiteout are there: `.wh.x`
    // hides a file of the layer below, `.wh..wh..opq` everything the
    // directory held below.
    let crafted = format!("{}:1", n.name("crafted"));
    n.docker_images.push(crafted.clone());
    n.sh_ok(&format!(
        r#"set -e
        mkdir -p craft/l1/d/sub craft/l2/d/sub arch
        echo b > craft/l1/d/sub/b; echo x > craft/l1/d/x; echo k > craft/l1/d/keep
        chown 1000:1000 craft/l1/d/keep; chmod 640 craft/l1/d/keep
        touch craft/l2/d/sub/.wh..wh..opq craft/l2/d/.wh.x; echo c > craft/l2/d/sub/c
        for l in l1 l2; do tar --numeric-owner -C craft/$l -cf craft/$l.tar d; done
        d1=$(sha256sum craft/l1.tar | cut -d' ' -f1); d2=$(sha256sum craft/l2.tar | cut -d' ' -f1)
        mkdir arch/$d1 arch/$d2; cp craft/l1.tar arch/$d1/layer.tar; cp craft/l2.tar arch/$d2/layer.tar
        printf '{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:%s","sha256:%s"]}}}}' $d1 $d2 > arch/config.json
        c=$(sha256sum arch/config.json | cut -d' ' -f1); mv arch/config.json arch/$c.json
        printf '[{{"Config":"%s.json","RepoTags":["{crafted}"],"Layers":["%s/layer.tar","%s/layer.tar"]}}]' $c $d1 $d2 > arch/manifest.json
        tar -C arch -cf crafted.tar .
        docker load -q -i crafted.tar
        "$RC" --runtime native image load -i crafted.tar"#
    ));
    let ours = same_tree_as_docker(&mut n, &crafted, "crafted");
    assert!(
        ours.contains_key("d/sub/c") && !ours.contains_key("d/sub/b"),
        "{ours:?}"
    );
    assert!(!ours.contains_key("d/x"), "{ours:?}");
    assert_eq!(
        ours.get("d/keep").map(String::as_str),
        Some("file 640 1000:1000 [107, 10]")
    );

    // And an image Docker built, deleting and replacing files in later steps.
    let built = format!("{}:1", n.name("built"));
    n.docker_images.push(built.clone());
    std::fs::create_dir_all(n.root.join("ctx")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        n.root.join("ctx/Dockerfile"),
        format!(
            "FROM {IMAGE}\n\
             RUN mkdir -p /d/gone && echo a > /d/a && echo g > /d/gone/g && chmod 600 /d/a\n\
             RUN rm /d/a && rm -r /d/gone && ln -s /keep /d/link\n\
             RUN echo a2 > /d/a\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    docker(&[
        "build",
        "-q",
        "-t",
        &built,
        &n.root.join("ctx").to_string_lossy(),
    ]);
    n.sh_ok(&format!(
        "docker save {built} | \"$RC\" --runtime native image load"
    ));
    let ours = same_tree_as_docker(&mut n, &built, "built");
    assert!(!ours.contains_key("d/gone"), "{ours:?}");
    assert_eq!(
        ours.get("d/a").map(String::as_str),
        Some("file 644 0:0 [97, 50, 10]")
    );
}

#[test]
fn bad_input_is_refused_and_leaves_the_store_as_it_was() {
    if !require(is_root(), "root") {
        return;
    }
    let n = Native::new("bad");
    n.sh_ok("head -c 4096 /dev/urandom > noise.tar");
    let o = n.rc(&[
        "image",
        "load",
        "-i",
        &n.root.join("noise.tar").to_string_lossy(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("loading the archive"), "{}", stderr(&o));
    let index = n.root.join("state/images/index.json");
    let before = std::fs::read_to_string(&index).unwrap_or_default();

    // An OCI archive whose blob is not what its name says.
    n.sh_ok(
        "mkdir -p lie/blobs/sha256 && echo '{\"imageLayoutVersion\":\"1.0.0\"}' > lie/oci-layout \
         && echo not-a-manifest > lie/blobs/sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 \
         && echo '{\"schemaVersion\":2,\"manifests\":[]}' > lie/index.json && tar -C lie -cf lie.tar .",
    );
    let o = n.rc(&[
        "image",
        "load",
        "-i",
        &n.root.join("lie.tar").to_string_lossy(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("does not match its digest"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&index).unwrap_or_default(), before);
    assert_eq!(
        std::fs::read_dir(n.root.join("state/images/blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(1),
        0,
        "no blob is kept from a refused archive"
    );

    let o = n.rc(&["image", "tag", "whatever", "Not/Valid"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("invalid reference format"),
        "{}",
        stderr(&o)
    );
    let o = n.rc(&["image", "inspect", "missing:1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("No such image: missing:1"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn without_root_the_native_runtime_says_it_needs_root() {
    if !require(is_root(), "root (to drop it)") {
        return;
    }
    let n = Native::new("nonroot");
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(rcompose_bin())
        .args(["--runtime", "native", "images"])
        .env("RCOMPOSE_ROOT", n.root.join("state"))
        .current_dir("/")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("needs root"), "{}", stderr(&o));
}

#[test]
fn without_a_docker_engine_the_native_runtime_is_chosen() {
    if !require(is_root(), "root") {
        return;
    }
    let n = Native::new("select");
    let o = Command::new(rcompose_bin())
        .arg("info")
        .env(
            "DOCKER_HOST",
            format!("unix://{}/no.sock", n.root.display()),
        )
        .env("RCOMPOSE_ROOT", n.root.join("state"))
        .env_remove("RCOMPOSE_RUNTIME")
        .current_dir(&n.root)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("runtime: native")
            && text.contains(&n.root.join("state").display().to_string()),
        "{text}"
    );
}

/// Debian's `docker-registry` on a free loopback port, storing under the
/// test's root; stopped when dropped.
struct Registry {
    child: std::process::Child,
    address: String,
}

impl Registry {
    fn start(n: &Native) -> Option<Registry> {
        if Command::new("docker-registry")
            .arg("--version")
            .output()
            .is_err()
        {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let address = format!("127.0.0.1:{port}");
        let config = n.root.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
                n.root.join("registry").display()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let registry = Registry { child, address };
        for _ in 0..100 {
            if std::net::TcpStream::connect(&registry.address).is_ok() {
                return Some(registry);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the registry did not start on {}", registry.address);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn images_go_to_a_registry_and_come_back_with_the_same_digests() {
    if !require(is_root(), "root") || !engine_ready() {
        return;
    }
    let n = Native::new("registry");
    let Some(registry) = Registry::start(&n) else {
        require(false, "Debian's docker-registry");
        return;
    };
    let remote = format!("{}/{}:1", registry.address, n.name("pushed"));
    n.sh_ok(&format!(
        "docker save {IMAGE} | \"$RC\" --runtime native image load"
    ));
    n.ok(&["image", "tag", IMAGE, &remote]);
    let pushed = n.ok(&["image", "push", &remote]);
    let digest = pushed
        .lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in the push output:\n{pushed}"))
        .to_string();

    let o = n.rc_in("empty", &["image", "pull", &remote]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("Digest: {digest}")),
        "{}",
        stdout(&o)
    );
    let here = json(&n.ok(&["image", "inspect", IMAGE]));
    let there = json(&stdout(&n.rc_in("empty", &["image", "inspect", &remote])));
    assert_eq!(there[0]["Id"], here[0]["Id"], "the same configuration");
    assert_eq!(there[0]["RootFS"], here[0]["RootFS"], "the same layers");
    assert_eq!(there[0]["Manifest"].as_str(), Some(digest.as_str()));
    let repo_digests = there[0]["RepoDigests"].to_string();
    assert!(repo_digests.contains(&digest), "{repo_digests}");
    // Docker reads what rcompose pushed.
    let from_docker = docker(&["pull", "-q", &remote]);
    assert!(from_docker.contains(&remote), "{from_docker}");
    let docker_id = docker(&["image", "inspect", "--format", "{{.Id}}", &remote]);
    let _ = Command::new("docker").args(["rmi", &remote]).output();
    assert_eq!(Some(docker_id.trim()), here[0]["Id"].as_str());

    // A second pull fetches nothing.
    let again = n.rc_in("empty", &["image", "pull", &remote]);
    assert!(
        stdout(&again).contains("Image is up to date"),
        "{}",
        stdout(&again)
    );

    // Saved by id, a pulled image goes out under its tag only, and loads.
    let id = here[0]["Id"].as_str().unwrap_or_default().to_string();
    let by_id = n.root.join("by-id.tar").to_string_lossy().into_owned();
    let o = n.rc_in("empty", &["image", "save", "-o", &by_id, &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = n.rc_in("from-id", &["image", "load", "-i", &by_id]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("Loaded image: {remote}")),
        "{}",
        stdout(&o)
    );
    // Removed by its tag, a pulled image goes with its digest name.
    let o = n.rc_in("from-id", &["image", "pull", &remote]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = n.rc_in("from-id", &["image", "rm", &remote]);
    assert!(o.status.success(), "{}", stderr(&o));
    let left = stdout(&n.rc_in("from-id", &["image", "ls", "-q"]));
    assert!(left.trim().is_empty(), "left after rm: {left}");

    // A manifest list: the entry for this platform is chosen, not the first.
    let list_ref = format!("{}/{}:multi", registry.address, n.name("pushed"));
    let other = format!("{}/{}:other", registry.address, n.name("pushed"));
    n.sh_ok(&format!(
        "mkdir -p other && echo other > other/o && tar -C other -cf other.tar . \
         && \"$RC\" --runtime native image import other.tar {other}"
    ));
    let pushed_other = n.ok(&["image", "push", &other]);
    let other_digest = pushed_other
        .lines()
        .find_map(|l| l.split("digest: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_string();
    let size_of = |d: &str| {
        std::fs::metadata(
            n.root
                .join("state/images/blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .map(|m| m.len())
        .unwrap_or(0)
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{other_digest}","size":{},"platform":{{"architecture":"s390x","os":"linux"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        size_of(&other_digest),
        size_of(&digest)
    );
    let (repo, _) = list_ref.rsplit_once(':').unwrap_or_default();
    let path = repo.split_once('/').map(|(_, p)| p).unwrap_or_default();
    let put = Command::new("curl")
        .args([
            "-sSf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.index.v1+json",
        ])
        .arg("--data-binary")
        .arg(&index)
        .arg(format!(
            "http://{}/v2/{path}/manifests/multi",
            registry.address
        ))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        put.status.success(),
        "the registry refused the index: {}",
        stderr(&put)
    );
    let o = n.rc_in("multi", &["image", "pull", &list_ref]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let multi = json(&stdout(&n.rc_in("multi", &["image", "inspect", &list_ref])));
    assert_eq!(multi[0]["Id"], here[0]["Id"]);

    // Errors name the image and the cause; nothing is added.
    let missing = format!("{}/{}:nope", registry.address, n.name("pushed"));
    let o = n.rc_in("multi", &["image", "pull", &missing]);
    assert!(!o.status.success());
    let text = stderr(&o);
    assert!(text.contains(&missing) || text.contains("nope"), "{text}");
    assert!(!stdout(&n.rc_in("multi", &["images"])).contains("nope"));
}

/// A registry that misbehaves as `mode` says: `500` answers every request
/// with a server error, `401` refuses every request, `cut` serves a
/// manifest and then stops a layer halfway.
fn hostile_registry(mode: &'static str) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let config = br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#;
    let sha = |b: &[u8]| -> String {
        let mut child = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(b);
        }
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        format!("sha256:{}", &String::from_utf8_lossy(&out.stdout)[..64])
    };
    let layer = vec![7u8; 100_000];
    let (config_digest, layer_digest) = (sha(config), sha(&layer));
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let manifest_digest = sha(manifest.as_bytes());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n")
                && conn.read(&mut byte).map(|n| n == 1).unwrap_or(false)
            {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let reply =
                |conn: &mut std::net::TcpStream, status: &str, headers: &str, body: &[u8]| {
                    let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
                    body.len()
                );
                    let _ = conn.write_all(body);
                };
            match mode {
                "500" => reply(&mut conn, "500 Internal Server Error", "", b"{\"errors\":[{\"code\":\"UNKNOWN\",\"message\":\"storage exploded\"}]}"),
                "401" => reply(&mut conn, "401 Unauthorized", "Content-Type: application/json\r\n", b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}"),
                _ if path.contains("/manifests/") => reply(
                    &mut conn,
                    "200 OK",
                    &format!("Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {manifest_digest}\r\n"),
                    manifest.as_bytes(),
                ),
                _ if path.ends_with(&config_digest) => reply(&mut conn, "200 OK", "", config),
                _ if path.ends_with(&layer_digest) => {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        layer.len()
                    );
                    let _ = conn.write_all(&layer[..layer.len() / 2]);
                    // and the connection goes.
                }
                _ => reply(&mut conn, "200 OK", "", b"{}"),
            }
        }
    });
    address
}

#[test]
fn a_registry_that_fails_or_breaks_off_leaves_the_store_unchanged() {
    if !require(is_root(), "root") {
        return;
    }
    let n = Native::new("hostile");
    n.ok(&["images"]);
    let index = n.root.join("state/images/index.json");
    let before = std::fs::read_to_string(&index).unwrap_or_default();
    for (mode, expect) in [
        ("500", "storage exploded"),
        ("401", "Not authorized"),
        ("cut", "broke off"),
    ] {
        let name = format!("{}/{}:1", hostile_registry(mode), n.name(mode));
        let o = n.rc(&["image", "pull", &name]);
        let text = stderr(&o);
        assert!(!o.status.success(), "{mode}: the pull succeeded");
        assert!(
            text.contains(&name),
            "{mode}: the error names the image: {text}"
        );
        assert!(
            text.contains(expect) || (mode == "cut" && text.contains("content of")),
            "{mode}: the error says why: {text}"
        );
        assert!(!text.contains("panicked"), "{text}");
        assert_eq!(
            std::fs::read_to_string(&index).unwrap_or_default(),
            before,
            "{mode}: the names are unchanged"
        );
        let scratch = std::fs::read_dir(n.root.join("state/images/tmp"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(scratch, 0, "{mode}: no partial download is left");
    }
}

#[test]
fn a_corrupt_blob_is_found_by_its_digest() {
    if !require(is_root(), "root") || !engine_ready() {
        return;
    }
    let n = Native::new("corrupt");
    n.sh_ok(&format!(
        "docker save {IMAGE} | \"$RC\" --runtime native image load"
    ));
    // The largest blob is the busybox layer: change one byte of it.
    n.sh_ok(
        "f=$(ls -S state/images/blobs/sha256/* | head -1) \
         && printf 'X' | dd of=\"$f\" bs=1 seek=600 conv=notrunc 2>/dev/null",
    );
    let out = n.root.join("saved.tar");
    let o = n.rc(&["image", "save", "-o", &out.to_string_lossy(), IMAGE]);
    assert!(!o.status.success(), "saving a corrupt image succeeded");
    assert!(stderr(&o).contains("is corrupt"), "{}", stderr(&o));
    assert!(!out.exists(), "a half-written archive is left");
}

#[test]
fn concurrent_loads_of_one_archive_end_with_one_image() {
    if !require(is_root(), "root") || !engine_ready() {
        return;
    }
    let n = Native::new("concurrent");
    n.sh_ok(&format!("docker save -o image.tar {IMAGE}"));
    let both = n.sh(
        "\"$RC\" --runtime native image load -q -i image.tar & a=$!; \
         \"$RC\" --runtime native image load -q -i image.tar & b=$!; \
         wait $a && wait $b",
    );
    assert!(both.status.success(), "{}", stderr(&both));
    let listed = n.ok(&["image", "ls", "-q"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    let index =
        json(&std::fs::read_to_string(n.root.join("state/images/index.json")).unwrap_or_default());
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(1),
        "one entry for one name: {index}"
    );
    let inspect = json(&n.ok(&["image", "inspect", IMAGE]));
    assert!(inspect[0]["Id"].is_string());
}

#[test]
fn an_unknown_layer_media_type_is_refused() {
    if !require(is_root(), "root") {
        return;
    }
    let n = Native::new("mediatype");
    let o = n.sh(
        r#"set -e
        mkdir -p oci/blobs/sha256 layer && echo x > layer/x && tar -C layer -cf l.tar .
        put() { d=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" oci/blobs/sha256/$d; echo $d; }
        l=$(put l.tar); ls=$(stat -c %s l.tar)
        printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' $l > c.json
        c=$(put c.json); cs=$(stat -c %s c.json)
        printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.example.strange","digest":"sha256:%s","size":%s}]}' $c $cs $l $ls > m.json
        m=$(put m.json); ms=$(stat -c %s m.json)
        printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"docker.io/library/strange:1"}}]}' $m $ms > oci/index.json
        echo '{"imageLayoutVersion":"1.0.0"}' > oci/oci-layout
        tar -C oci -cf strange.tar .
        "$RC" --runtime native image load -i strange.tar"#,
    );
    assert!(!o.status.success(), "{}", stdout(&o));
    let text = stderr(&o);
    assert!(
        text.contains("unknown media type") && text.contains("strange"),
        "{text}"
    );
    assert!(!n.ok(&["images"]).contains("strange"));
}

#[test]
fn a_full_disk_fails_with_its_cause_and_leaves_no_half_image() {
    if !require(is_root(), "root") || !engine_ready() {
        return;
    }
    let mut n = Native::new("full");
    let state = n.root.join("state");
    std::fs::create_dir_all(&state).unwrap_or_else(|e| panic!("{e}"));
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&state)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(mount.status.success(), "{}", stderr(&mount));
    n.mounts.push(state.clone());
    let o = n.sh(&format!(
        "docker save {IMAGE} | \"$RC\" --runtime native image load"
    ));
    assert!(!o.status.success(), "loading 2 MB into 1 MB succeeded");
    let text = stderr(&o);
    assert!(text.contains("No space left on device"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(!n.ok(&["images"]).contains("busybox"));
    let scratch = std::fs::read_dir(state.join("images/tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(scratch, 0, "nothing is left in tmp/");
}

#[test]
fn the_image_commands_work_on_the_docker_engine_too() {
    if !engine_ready() {
        return;
    }
    let mut n = Native::new("docker-side");
    let name = format!("{}:1", n.name("docker-side"));
    let copy = format!("{}:2", n.name("docker-side"));
    // Removed from Docker when the test ends, passed or not.
    n.docker_images.extend([name.clone(), copy.clone()]);
    let dock = |args: &[&str]| -> Output {
        Command::new(rcompose_bin())
            .args(["--runtime", "docker"])
            .args(args)
            .current_dir(&n.root)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let o = dock(&["image", "tag", IMAGE, &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let inspect = json(&stdout(&dock(&["image", "inspect", &name])));
    let id = inspect[0]["Id"].as_str().unwrap_or_default().to_string();
    assert!(id.starts_with("sha256:"), "{inspect}");
    let archive = n
        .root
        .join("docker-side.tar")
        .to_string_lossy()
        .into_owned();
    let o = dock(&["image", "save", "-o", &archive, &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = dock(&["image", "rm", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = dock(&["image", "load", "-i", &archive]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("Loaded image: {name}")),
        "{}",
        stdout(&o)
    );
    n.sh_ok("mkdir -p rootfs && echo hi > rootfs/hi && tar -C rootfs -cf rootfs.tar .");
    let o = dock(&[
        "image",
        "import",
        "-c",
        "CMD [\"/hi\"]",
        &n.root.join("rootfs.tar").to_string_lossy(),
        &copy,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let imported = json(&stdout(&dock(&["image", "inspect", &copy])));
    assert_eq!(imported[0]["Config"]["Cmd"], serde_json::json!(["/hi"]));
    let listed = stdout(&dock(&["image", "ls"]));
    assert!(listed.contains(&n.name("docker-side")), "{listed}");
}
