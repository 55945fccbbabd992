//! Containers of the native runtime: records on disk ([`super::state`]),
//! bundles ([`super::bundle`]) run by runc under a monitor each
//! ([`super::shim`]), and the calls of the runtime seam on them.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::events;
use super::network::{self, Attached, Subnet};
use super::state::{
    self, now_nanos, read_json, write_json, Paths, Phase, Record, ShimConfig, Status,
};
use super::store::{failed, StoredImage};
use super::{bundle, NativeRuntime};
use crate::{
    Container, ContainerDetails, ContainerSpec, ContainerState, Health, HealthTest, Mount,
    NetworkMode, Result, RuntimeError,
};

pub(super) fn no_container(id: &str) -> RuntimeError {
    RuntimeError::NotFound {
        kind: "container",
        name: id.to_string(),
    }
}

pub(super) fn refused(what: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Engine(what.to_string())
}

/// A container as observed now.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Its record.
    pub record: Record,
    /// Its monitor's account, corrected for a monitor that is gone.
    pub status: Status,
    /// Frozen.
    pub paused: bool,
    /// Its paths.
    pub paths: Paths,
}

impl Observed {
    /// Its state in rcompose's terms.
    pub fn state(&self) -> ContainerState {
        match self.status.phase {
            Phase::Created => ContainerState::Created,
            Phase::Running if self.paused => ContainerState::Paused,
            Phase::Running => ContainerState::Running,
            Phase::Restarting => ContainerState::Restarting,
            Phase::Exited => ContainerState::Exited,
        }
    }

    /// Whether its main process is there.
    pub fn running(&self) -> bool {
        self.status.phase == Phase::Running
    }

    fn health(&self) -> Health {
        match self.status.health.as_ref().map(|h| h.status.as_str()) {
            Some("healthy") => Health::Healthy,
            Some("unhealthy") => Health::Unhealthy,
            Some(_) => Health::Starting,
            None => Health::None,
        }
    }

    /// The listing.
    pub fn container(&self) -> Container {
        let r = &self.record;
        let since = match self.status.phase {
            Phase::Running => self.status.started_at,
            Phase::Created => 0,
            _ => self.status.finished_at,
        } / 1_000_000_000;
        let networks = match &r.spec.network_mode {
            NetworkMode::Attachments => r.spec.networks.iter().map(|n| n.network.clone()).collect(),
            NetworkMode::Network(n) => vec![n.clone()],
            NetworkMode::Host => vec!["host".into()],
            NetworkMode::None => vec!["none".into()],
            NetworkMode::Container(_) => vec![],
        };
        Container {
            id: r.id.clone(),
            name: r.name.clone(),
            image: r.spec.image.clone(),
            image_id: r.image_id.clone(),
            command: r.command.clone(),
            labels: r.spec.labels.clone(),
            state: self.state(),
            status: crate::Status {
                since,
                exit_code: self.status.exit_code,
                health: if self.running() {
                    self.health()
                } else {
                    Health::None
                },
                detail: None,
            },
            created: r.created,
            ports: if self.running() {
                network::attached(&self.paths.dir)
                    .map(|a| {
                        a.ports
                            .iter()
                            .map(|(ip, host, container, proto)| crate::PublishedPort {
                                host_ip: if ip.is_empty() {
                                    "0.0.0.0".into()
                                } else {
                                    ip.clone()
                                },
                                host_port: *host,
                                container_port: *container,
                                protocol: crate::Protocol::parse(proto).unwrap_or_default(),
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
            networks,
        }
    }

    /// The details.
    pub fn details(&self) -> ContainerDetails {
        let mut exposed: Vec<u16> = self
            .record
            .spec
            .exposed
            .iter()
            .filter(|p| p.protocol == crate::Protocol::Tcp)
            .map(|p| p.port)
            .chain(self.record.image_ports.iter().filter_map(|p| {
                let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                (proto == "tcp").then(|| port.parse().ok()).flatten()
            }))
            .collect();
        exposed.sort_unstable();
        exposed.dedup();
        ContainerDetails {
            container: self.container(),
            health: if self.running() {
                self.health()
            } else {
                Health::None
            },
            exit_code: self.status.exit_code,
            restarting: self.status.phase == Phase::Restarting,
            addresses: if self.running() {
                network::attached(&self.paths.dir)
                    .map(|a| a.addresses)
                    .unwrap_or_default()
            } else {
                BTreeMap::new()
            },
            exposed_tcp_ports: exposed,
            resources: self.record.spec.resources.clone(),
        }
    }
}

impl NativeRuntime {
    pub(super) fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    fn names_dir(&self) -> PathBuf {
        self.containers_dir().join("by-name")
    }

    pub(super) fn events_dir(&self) -> PathBuf {
        self.root.join("events")
    }

    pub(super) fn paths(&self, id: &str) -> Paths {
        Paths {
            dir: self.containers_dir().join(id),
            socket: self
                .run
                .join("s")
                .join(format!("{}.sock", id.get(..12).unwrap_or(id))),
        }
    }

    fn runc_root(&self) -> PathBuf {
        self.run.join("runc")
    }

    /// The id of a container named by id, unique id prefix or name.
    pub(super) fn resolve(&self, key: &str) -> Result<String> {
        let key = key.strip_prefix('/').unwrap_or(key);
        if key.is_empty() {
            return Err(no_container(key));
        }
        if key.len() == 64
            && self
                .containers_dir()
                .join(key)
                .join("container.json")
                .exists()
        {
            return Ok(key.to_string());
        }
        if let Ok(target) = fs::read_link(self.names_dir().join(key)) {
            if let Some(id) = target.file_name().and_then(|n| n.to_str()) {
                if self
                    .containers_dir()
                    .join(id)
                    .join("container.json")
                    .exists()
                {
                    return Ok(id.to_string());
                }
            }
        }
        if key.chars().all(|c| c.is_ascii_hexdigit()) && key.len() >= 4 {
            let found: Vec<String> = self
                .ids()
                .into_iter()
                .filter(|id| id.starts_with(key))
                .collect();
            if found.len() == 1 {
                return Ok(found[0].clone());
            }
        }
        Err(no_container(key))
    }

    fn ids(&self) -> Vec<String> {
        fs::read_dir(self.containers_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| n.len() == 64)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A container as it is now; a monitor found gone is cleaned up after.
    pub(super) fn observe(&self, id: &str) -> Result<Observed> {
        let paths = self.paths(id);
        let record: Record = read_json(&paths.record()).map_err(|_| no_container(id))?;
        let mut status: Status = read_json(&paths.status()).unwrap_or_default();
        let up = matches!(status.phase, Phase::Running | Phase::Restarting);
        if up && !state::shim_alive(&paths.dir) {
            // Its monitor was killed, or the machine rebooted: no ghost.
            self.clean_up_run(id, &paths);
            status.phase = Phase::Exited;
            status.pid = 0;
            if status.finished_at < status.started_at {
                status.finished_at = now_nanos();
                status.exit_code = 255;
                status.error = "its monitor is gone".into();
            }
            let _ = write_json(&paths.status(), &status);
            let _ = fs::remove_file(paths.paused());
        }
        let paused = status.phase == Phase::Running && paths.paused().exists();
        Ok(Observed {
            record,
            status,
            paused,
            paths,
        })
    }

    /// What a run leaves when its monitor is gone: runc's state, the
    /// process, the mount.
    fn clean_up_run(&self, id: &str, paths: &Paths) {
        if self.runc_root().join(id).exists() {
            let _ = std::process::Command::new(&self.runc)
                .arg("--root")
                .arg(self.runc_root())
                .args(["delete", "--force", id])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        network::teardown(&paths.dir);
        let _ = bundle::unmount_rootfs(&paths.dir);
        let _ = fs::remove_file(&paths.socket);
    }

    pub(super) fn find_container(&self, key: &str) -> Result<Observed> {
        let id = self.resolve(key)?;
        self.observe(&id)
    }

    pub(super) fn all_containers(&self) -> Vec<Observed> {
        let mut out: Vec<Observed> = self
            .ids()
            .iter()
            .filter_map(|id| self.observe(id).ok())
            .collect();
        out.sort_by_key(|o| std::cmp::Reverse(o.record.created));
        // Names of running containers with no server (it was killed):
        // every command that looks at the containers brings it back.
        if let Ok(server) = self.dns_binary() {
            super::dns::Publisher {
                dir: self.run.join("dns").display().to_string(),
                server: server.display().to_string(),
            }
            .heal();
        }
        out
    }

    pub(super) fn event(&self, record: &Record, action: &str, signal: Option<i32>) {
        let dir = self.events_dir();
        let _ = fs::create_dir_all(&dir);
        events::append(
            &events::log_for(&dir, &record.spec.labels),
            &events::Record {
                time: now_nanos(),
                id: record.id.clone(),
                name: record.name.clone(),
                image: record.spec.image.clone(),
                labels: record.spec.labels.clone(),
                action: action.to_string(),
                exit_code: None,
                signal,
            },
        );
    }

    /// Creates a container's record; nothing runs yet.
    pub(super) fn create(&self, spec: &ContainerSpec) -> Result<String> {
        // As a writer: no collection between finding the image and
        // pinning it for the container.
        let _writing = self.store.writing()?;
        let image = self
            .store
            .find(&spec.image)?
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "image",
                name: spec.image.clone(),
            })?;
        let id = random_id();
        let name = if spec.name.is_empty() {
            format!("rcompose_{}", &id[..8])
        } else {
            spec.name.clone()
        };
        if !valid_name(&name) {
            return Err(refused(format!(
                "invalid container name ({name}): only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        for a in &spec.networks {
            if !matches!(spec.network_mode, NetworkMode::Attachments) {
                break;
            }
            if self.network(&a.network).is_none() {
                return Err(RuntimeError::NotFound {
                    kind: "network",
                    name: a.network.clone(),
                });
            }
        }
        let userns = self.userns_for(spec, &name)?;
        let command = bundle::arguments(spec, &image)
            .unwrap_or_default()
            .join(" ");
        let paths = self.paths(&id);
        fs::create_dir_all(&paths.dir)
            .map_err(|e| failed(format!("creating {}", paths.dir.display()), e))?;
        fs::create_dir_all(self.names_dir()).map_err(|e| failed("creating the names", e))?;
        // The name is taken by making its link: one of two creates wins.
        let link = self.names_dir().join(&name);
        if let Err(e) = symlink(Path::new("..").join(&id), &link) {
            let _ = fs::remove_dir_all(&paths.dir);
            return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                RuntimeError::Conflict {
                    kind: "container",
                    name,
                }
            } else {
                failed(format!("naming container {name}"), e)
            });
        }
        let made = (|| -> Result<Record> {
            let mut spec = spec.clone();
            spec.name = name.clone();
            let anonymous = self.prepare_volumes(&mut spec, &id)?;
            let hostname = if spec.hostname.is_empty() {
                id[..12].to_string()
            } else {
                spec.hostname.clone()
            };
            let image_ports = image
                .config
                .get("config")
                .and_then(|c| c.get("ExposedPorts"))
                .and_then(|p| p.as_object())
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            let record = Record {
                id: id.clone(),
                name: name.clone(),
                created: jiff::Timestamp::now().as_second(),
                image_id: image.id.to_string(),
                command,
                hostname,
                spec,
                anonymous_volumes: anonymous,
                image_ports,
                image_manifest: image.manifest.to_string(),
                userns,
            };
            self.store.pin(&id, &image.manifest)?;
            write_json(&paths.status(), &Status::default())?;
            write_json(&paths.record(), &record)?;
            Ok(record)
        })();
        match made {
            Ok(record) => {
                self.event(&record, "create", None);
                Ok(id)
            }
            Err(e) => {
                self.store.unpin(&id);
                let _ = fs::remove_file(&link);
                let _ = fs::remove_dir_all(&paths.dir);
                Err(e)
            }
        }
    }

    /// The user namespace of a new container: the runtime's remap, unless
    /// the spec opts out with `userns_mode: host`; what cannot share the
    /// host's namespaces with one is refused, as the Docker daemon does.
    fn userns_for(&self, spec: &ContainerSpec, name: &str) -> Result<Option<super::userns::IdMap>> {
        match spec.userns_mode.as_str() {
            "" => {}
            "host" => return Ok(None),
            other => {
                return Err(refused(format!(
                    "container {name}: userns_mode {other:?} is not known (only \"host\" is)"
                )))
            }
        }
        let Some(setting) = &self.remap else {
            return Ok(None);
        };
        let map = super::userns::IdMap::from_setting(setting)?;
        let host = |what: &str| {
            refused(format!(
                "container {name}: {what} cannot go with the user-namespace remap; add userns_mode: host to the service"
            ))
        };
        if spec.privileged {
            return Err(host("privileged"));
        }
        if matches!(spec.network_mode, NetworkMode::Host) {
            return Err(host("network_mode: host"));
        }
        if matches!(spec.pid, crate::Namespace::Host) {
            return Err(host("pid: host"));
        }
        Ok(Some(map))
    }

    /// Starts a container under a new monitor.
    pub(super) fn start(&self, key: &str) -> Result<()> {
        let o = self.find_container(key)?;
        if matches!(o.status.phase, Phase::Running | Phase::Restarting) {
            return Ok(());
        }
        let record = &o.record;
        let spec = &record.spec;
        if matches!(spec.network_mode, NetworkMode::Attachments) {
            for a in &spec.networks {
                if self.network(&a.network).is_none() {
                    return Err(RuntimeError::NotFound {
                        kind: "network",
                        name: a.network.clone(),
                    });
                }
            }
        }
        let image = self.image_of(record)?;
        let dir = &o.paths.dir;
        // What a run that did not end cleanly may have left.
        self.clean_up_run(&record.id, &o.paths);
        let userns = match &record.userns {
            Some(map) => Some(super::userns::namespace(&self.shim_binary()?, map)?),
            None => None,
        };
        let rootfs =
            bundle::mount_rootfs(&self.store, &image, dir, userns.as_ref(), record.userns)?;
        drop(userns);
        let started = (|| -> Result<()> {
            let attached = self.attach_networks(record, &o.paths)?;
            self.populate_volumes(record, &rootfs)?;
            self.write_etc_files(record, attached.as_ref())?;
            let config = self.oci_config(record, &image, &rootfs, attached.as_ref())?;
            let bytes = serde_json::to_vec_pretty(&config)
                .map_err(|e| failed("writing the runtime spec", e))?;
            state::write_atomic(&dir.join("config.json"), &bytes)?;
            write_json(
                &o.paths.shim_config(),
                &self.shim_config(record, &image, &o.paths),
            )?;
            let _ = fs::remove_file(o.paths.paused());
            self.spawn_monitor(&o.paths)
        })();
        if let Err(e) = started {
            network::teardown(dir);
            let _ = bundle::unmount_rootfs(dir);
            return Err(RuntimeError::Engine(format!(
                "container {}: {}",
                record.name,
                e.to_string().trim_start_matches("error: ")
            )));
        }
        Ok(())
    }

    fn spawn_monitor(&self, paths: &Paths) -> Result<()> {
        let shim = self.shim_binary()?;
        let _ = fs::create_dir_all(self.run.join("s"));
        let _ = fs::create_dir_all(self.runc_root());
        let child = std::process::Command::new(&shim)
            .arg(&paths.dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| failed(format!("starting {}", shim.display()), e))?;
        let mut child = child;
        let mut report = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut report);
        }
        // The monitor lives on; a thread collects it when it ends, so that
        // a long-lived rcompose keeps no zombie.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        match report.trim() {
            "ok" => Ok(()),
            "" => Err(refused("its monitor ended without a word")),
            other => Err(refused(other.trim_start_matches("error: "))),
        }
    }

    fn shim_binary(&self) -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("RCOMPOSE_SHIM").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let exe = std::env::current_exe().ok();
        let mut candidates = Vec::new();
        if let Some(dir) = exe.as_ref().and_then(|e| e.parent()) {
            candidates.push(dir.join("rcompose-shim"));
            // Test binaries live in target/<profile>/deps.
            if let Some(up) = dir.parent() {
                candidates.push(up.join("rcompose-shim"));
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join("rcompose-shim")));
        }
        candidates.into_iter().find(|c| c.is_file()).ok_or_else(|| {
            refused("rcompose-shim, the container monitor, is not installed next to rcompose or on the PATH (or set RCOMPOSE_SHIM)")
        })
    }

    /// `rcompose-dns`, the names' server: beside the monitor's binary.
    fn dns_binary(&self) -> Result<PathBuf> {
        let dns = self.shim_binary()?.with_file_name("rcompose-dns");
        if dns.is_file() {
            Ok(dns)
        } else {
            Err(refused(format!(
                "{}, the DNS of native networks, is missing (it is built and installed with rcompose-shim)",
                dns.display()
            )))
        }
    }

    fn shim_config(&self, record: &Record, image: &StoredImage, paths: &Paths) -> ShimConfig {
        let spec = &record.spec;
        let (restart, max_retries) = match spec.restart.unwrap_or_default() {
            crate::RestartPolicy::No => ("no", 0),
            crate::RestartPolicy::Always => ("always", 0),
            crate::RestartPolicy::UnlessStopped => ("unless-stopped", 0),
            crate::RestartPolicy::OnFailure { max_retries } => {
                ("on-failure", max_retries.unwrap_or(0))
            }
        };
        let size = spec
            .log_opts
            .get("max-size")
            .and_then(|s| parse_size(s))
            .unwrap_or(0);
        let files = spec
            .log_opts
            .get("max-file")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        ShimConfig {
            id: record.id.clone(),
            name: record.name.clone(),
            image: spec.image.clone(),
            labels: spec.labels.clone(),
            runc: self.runc_for(spec),
            runc_root: self.runc_root().display().to_string(),
            socket: paths.socket.display().to_string(),
            events: events::log_for(&self.events_dir(), &spec.labels)
                .display()
                .to_string(),
            tty: spec.tty,
            stdin_open: spec.stdin_open,
            stdin_once: spec.stdin_once,
            restart: restart.to_string(),
            max_retries,
            probe: probe(spec, image),
            log_max_size: size,
            log_max_files: files,
            memory_cgroup: super::cgroup::controller_dir("memory", &record.id)
                .display()
                .to_string(),
        }
    }

    /// The OCI runtime binary for a container: the runtime's, or the one
    /// its `runtime:` names.
    fn runc_for(&self, spec: &ContainerSpec) -> String {
        match spec.runtime.as_str() {
            "" | "runc" | "io.containerd.runc.v2" => self.runc.clone(),
            other => other.to_string(),
        }
    }

    /// `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` of a container.
    fn write_etc_files(&self, record: &Record, attached: Option<&Attached>) -> Result<()> {
        let dir = self.paths(&record.id).dir;
        let spec = &record.spec;
        let mut hosts = String::from(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
        );
        for h in &spec.extra_hosts {
            let address = if h.address == "host-gateway" {
                "127.0.0.1"
            } else {
                h.address.as_str()
            };
            hosts.push_str(&format!("{address}\t{}\n", h.name));
        }
        let fqdn = if spec.domainname.is_empty() {
            record.hostname.clone()
        } else {
            format!(
                "{}.{} {}",
                record.hostname, spec.domainname, record.hostname
            )
        };
        let own = attached
            .and_then(|a| a.addresses.values().next().cloned())
            .unwrap_or_else(|| "127.0.1.1".into());
        hosts.push_str(&format!("{own}\t{fqdn}\n"));
        // Legacy links: the linked container's address under its alias,
        // on networks without names (Docker's default `bridge`); where
        // the network's DNS answers, it answers the aliases too, and
        // follows the linked service's replicas.
        for a in &spec.networks {
            if self.network(&a.network).is_none_or(|n| n.dns) {
                continue;
            }
            for link in &a.links {
                let (target, alias) = link.split_once(':').unwrap_or((link, link));
                let Ok(other) = self.find_container(target) else {
                    continue;
                };
                if let Some(ip) = network::attached(&other.paths.dir)
                    .and_then(|n| n.addresses.get(&a.network).cloned())
                {
                    hosts.push_str(&format!("{ip}\t{alias} {}\n", other.record.name));
                }
            }
        }
        let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let mut resolv = String::new();
        // The DNS of the first network that answers names (rcompose's, on
        // its gateway), which forwards the rest to the host's resolvers.
        let embedded: Option<String> = attached.and_then(|a| {
            a.addresses
                .keys()
                .filter_map(|n| self.network(n))
                .find(|n| n.dns)
                .map(|n| n.gateway)
        });
        let servers: Vec<String> = if let (true, Some(gw)) = (spec.dns.is_empty(), &embedded) {
            vec![gw.clone()]
        } else if spec.dns.is_empty() {
            host_resolv
                .lines()
                .filter_map(|l| l.trim().strip_prefix("nameserver"))
                .map(|s| s.trim().to_string())
                // A resolver on the host's loopback is no use from inside.
                .filter(|s| !s.starts_with("127.") && s != "::1")
                .collect()
        } else {
            spec.dns.clone()
        };
        for s in &servers {
            resolv.push_str(&format!("nameserver {s}\n"));
        }
        let search: Vec<String> = if spec.dns_search.is_empty() {
            host_resolv
                .lines()
                .filter_map(|l| l.trim().strip_prefix("search"))
                .flat_map(|s| s.split_whitespace().map(str::to_string))
                .collect()
        } else {
            spec.dns_search.clone()
        };
        if !search.is_empty() {
            resolv.push_str(&format!("search {}\n", search.join(" ")));
        }
        if !spec.dns_opt.is_empty() {
            resolv.push_str(&format!("options {}\n", spec.dns_opt.join(" ")));
        }
        for (file, content) in [
            ("hosts", hosts),
            ("hostname", format!("{}\n", record.hostname)),
            ("resolv.conf", resolv),
        ] {
            fs::write(dir.join(file), content).map_err(|e| failed(format!("writing {file}"), e))?;
        }
        Ok(())
    }

    /// The bundle's `config.json`.
    fn oci_config(
        &self,
        record: &Record,
        image: &StoredImage,
        rootfs: &Path,
        attached: Option<&Attached>,
    ) -> Result<Value> {
        let spec = &record.spec;
        let what = format!("container {}", record.name);
        let base = bundle::runtime_spec(spec, image, &record.id, rootfs)?;
        let mut config = serde_json::to_value(&base).map_err(|e| failed(&what, e))?;
        config["hostname"] = json!(record.hostname);
        if !spec.domainname.is_empty() {
            config["domainname"] = json!(spec.domainname);
        }
        let dir = self.paths(&record.id).dir;
        let mut mounts: Vec<Value> = config["mounts"].as_array().cloned().unwrap_or_default();
        let mut targets: Vec<String> = Vec::new();
        for m in &spec.mounts {
            let (target, value) = self.mount_json(record, m)?;
            targets.push(target);
            mounts.push(value);
        }
        for (target, options) in &spec.tmpfs {
            let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
            opts.extend(
                options
                    .split(',')
                    .filter(|o| !o.is_empty())
                    .map(str::to_string),
            );
            targets.push(target.clone());
            mounts.push(
                json!({"destination": target, "type": "tmpfs", "source": "tmpfs", "options": opts}),
            );
        }
        for file in ["hosts", "hostname", "resolv.conf"] {
            let target = format!("/etc/{file}");
            if targets.contains(&target) {
                continue;
            }
            mounts.push(json!({
                "destination": target,
                "type": "bind",
                "source": dir.join(file),
                "options": ["rbind", "rprivate"],
            }));
        }
        config["mounts"] = json!(mounts);
        let caps: std::collections::HashSet<_> = bundle::capabilities(spec)?.into_iter().collect();
        let seccomp = super::seccomp::for_container(spec, &caps)?;
        let linux = &mut config["linux"];
        if let Some(profile) = seccomp {
            linux["seccomp"] = profile;
        }
        linux["cgroupsPath"] = json!(format!("/rcompose/{}", record.id));
        linux["resources"] = resources(spec);
        // Docker's defaults for a container with a network namespace of its
        // own: any user may bind low ports and ping; the file's win.
        let mut sysctls = BTreeMap::new();
        if matches!(
            spec.network_mode,
            NetworkMode::Attachments | NetworkMode::None | NetworkMode::Network(_)
        ) {
            sysctls.insert(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "0".to_string(),
            );
            // No IPv6 on IPv4 networks, as Docker leaves it: a link-local
            // address would also make glibc sort a name's addresses by
            // their likeness to the container's own (RFC 6724's rule 9),
            // so every client would pick the same replica.
            for scope in ["all", "default"] {
                sysctls.insert(format!("net.ipv6.conf.{scope}.disable_ipv6"), "1".into());
            }
            // Under a remap only the map's groups exist in the namespace.
            let last_group = record.userns.map_or(2_147_483_647, |m| m.size - 1);
            sysctls.insert(
                "net.ipv4.ping_group_range".to_string(),
                format!("0 {last_group}"),
            );
        }
        sysctls.extend(spec.sysctls.clone());
        if !sysctls.is_empty() {
            linux["sysctl"] = json!(sysctls);
        }
        // Namespaces the spec shares or leaves out.
        let mut namespaces: Vec<Value> =
            linux["namespaces"].as_array().cloned().unwrap_or_default();
        let mut share = |kind: &str, with: Option<String>| {
            namespaces.retain(|n| n["type"] != kind);
            if let Some(path) = with {
                namespaces.push(json!({"type": kind, "path": path}));
            }
        };
        match &spec.network_mode {
            NetworkMode::Host => share("network", None),
            NetworkMode::Container(other) => {
                let o = self.find_container(other)?;
                let path = network::attached(&o.paths.dir)
                    .map(|a| a.netns)
                    .map_or_else(|| self.namespace_of(other, "net"), Ok)?;
                share("network", Some(path));
            }
            _ => {
                // In a user namespace, runc makes the network namespace
                // (inside it) and a hook sets it up.
                if let (Some(a), None) = (attached, record.userns) {
                    share("network", Some(a.netns.clone()));
                }
            }
        }
        match &spec.pid {
            crate::Namespace::Host => share("pid", None),
            crate::Namespace::Container(other) => {
                share("pid", Some(self.namespace_of(other, "pid")?))
            }
            _ => {}
        }
        match &spec.ipc {
            crate::Namespace::Host => share("ipc", None),
            crate::Namespace::Container(other) => {
                share("ipc", Some(self.namespace_of(other, "ipc")?))
            }
            _ => {}
        }
        if let Some(map) = record.userns {
            namespaces.push(json!({"type": "user"}));
            let (uids, gids) = map.oci();
            linux["uidMappings"] = uids;
            linux["gidMappings"] = gids;
            if attached.is_some() {
                let shim = self.shim_binary()?;
                config["hooks"] = json!({"createRuntime": [{
                    "path": shim,
                    "args": ["rcompose-shim", "--network-hook", dir],
                }]});
            }
        }
        let linux = &mut config["linux"];
        linux["namespaces"] = json!(namespaces);
        let (devices, rules) = devices(spec)?;
        if !devices.is_empty() {
            linux["devices"] = json!(devices);
            linux["resources"]["devices"] = json!(rules);
        }
        if spec.init == Some(true) {
            // A minimal init as PID 1 (Podman's catatonit, as Docker has
            // tini), which reaps orphans and passes signals on.
            let init = init_binary().ok_or_else(|| {
                refused(format!(
                    "container {}: init: true needs catatonit (Debian's catatonit package; RCOMPOSE_INIT names another init)",
                    record.name
                ))
            })?;
            let mounts = config["mounts"].as_array_mut();
            if let Some(mounts) = mounts {
                mounts.push(json!({
                    "destination": "/sbin/docker-init",
                    "type": "bind",
                    "source": init,
                    "options": ["rbind", "ro", "rprivate"],
                }));
            }
            let args: Vec<Value> = config["process"]["args"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut with_init = vec![json!("/sbin/docker-init"), json!("--")];
            with_init.extend(args);
            config["process"]["args"] = json!(with_init);
        }
        if spec.oom_score_adj != 0 {
            config["process"]["oomScoreAdj"] = json!(spec.oom_score_adj);
        }
        Ok(config)
    }

    /// The namespace file of another (running) container.
    fn namespace_of(&self, key: &str, kind: &str) -> Result<String> {
        let o = self.find_container(key)?;
        if !o.running() || o.status.pid == 0 {
            return Err(refused(format!("container {key} is not running")));
        }
        Ok(format!("/proc/{}/ns/{kind}", o.status.pid))
    }

    fn mount_json(&self, record: &Record, m: &Mount) -> Result<(String, Value)> {
        Ok(match m {
            Mount::Bind {
                source,
                target,
                read_only,
                create_host_path,
                propagation,
                ..
            } => {
                let path = Path::new(source);
                if !path.exists() {
                    if *create_host_path {
                        fs::create_dir_all(path)
                            .map_err(|e| failed(format!("creating {source}"), e))?;
                    } else {
                        return Err(refused(format!(
                            "invalid mount config for type \"bind\": bind source path does not exist: {source}"
                        )));
                    }
                }
                let mut options = vec!["rbind".to_string()];
                options.push(if propagation.is_empty() {
                    "rprivate".to_string()
                } else {
                    propagation.clone()
                });
                if *read_only {
                    options.push("ro".into());
                }
                (
                    target.clone(),
                    json!({"destination": target, "type": "bind", "source": source, "options": options}),
                )
            }
            Mount::Volume {
                source,
                target,
                read_only,
                subpath,
                ..
            } => {
                let mut path = self.volume_data(source);
                if !subpath.is_empty() {
                    path = path.join(subpath.trim_start_matches('/'));
                }
                let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
                if *read_only {
                    options.push("ro".into());
                }
                (
                    target.clone(),
                    json!({"destination": target, "type": "bind", "source": path, "options": options}),
                )
            }
            Mount::Tmpfs { target, size, mode } => {
                let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
                if *size > 0 {
                    options.push(format!("size={size}"));
                }
                if *mode > 0 {
                    options.push(format!("mode={mode:o}"));
                }
                let _ = record;
                (
                    target.clone(),
                    json!({"destination": target, "type": "tmpfs", "source": "tmpfs", "options": options}),
                )
            }
        })
    }

    /// The image a container was created from, by its pinned manifest
    /// (named or not any more).
    pub(super) fn image_of(&self, record: &Record) -> Result<StoredImage> {
        let missing = || RuntimeError::NotFound {
            kind: "image",
            name: record.spec.image.clone(),
        };
        match super::layout::Digest::parse(&record.image_manifest) {
            Some(manifest) => self.store.image(&manifest, vec![]).map_err(|_| missing()),
            None => self.store.find(&record.image_id)?.ok_or_else(missing),
        }
    }

    /// Gives a container its addresses and ports, and sets its networks up
    /// in a namespace of its own; `None` when it uses another's (or the
    /// host's, or none).
    fn attach_networks(&self, record: &Record, paths: &Paths) -> Result<Option<Attached>> {
        let spec = &record.spec;
        let attachments: Vec<crate::NetworkAttachment> = match &spec.network_mode {
            NetworkMode::Attachments if spec.networks.is_empty() => {
                vec![crate::NetworkAttachment {
                    network: self.default_network()?.name,
                    ..Default::default()
                }]
            }
            NetworkMode::Attachments => spec.networks.clone(),
            NetworkMode::Network(n) => vec![crate::NetworkAttachment {
                network: n.clone(),
                ..Default::default()
            }],
            _ => return Ok(None),
        };
        let netavark = network::netavark().ok_or_else(|| {
            RuntimeError::Unavailable(
                "netavark, the network stack native containers use, is not installed (Debian's netavark package; RCOMPOSE_NETAVARK names another netavark)".into(),
            )
        })?;
        let mut attached = Attached {
            dns: super::dns::Publisher {
                dir: self.run.join("dns").display().to_string(),
                server: self.dns_binary()?.display().to_string(),
            },
            names: super::dns::Names {
                id: record.id.clone(),
                container: record.name.clone(),
                entries: Vec::new(),
            },
            netavark: netavark.display().to_string(),
            config: self.run.join("netavark").display().to_string(),
            netns: self
                .run
                .join("netns")
                .join(&record.id)
                .display()
                .to_string(),
            ..Default::default()
        };
        let made = (|| -> Result<()> {
            let mut networks = serde_json::Map::new();
            let mut info = serde_json::Map::new();
            for (i, a) in attachments.iter().enumerate() {
                let net = self
                    .network(&a.network)
                    .ok_or_else(|| RuntimeError::NotFound {
                        kind: "network",
                        name: a.network.clone(),
                    })?;
                let subnet = Subnet::parse(&net.subnet)
                    .ok_or_else(|| refused(format!("network {} has no subnet", net.name)))?;
                let gateway: std::net::Ipv4Addr = net
                    .gateway
                    .parse()
                    .map_err(|_| refused(format!("network {} has no gateway", net.name)))?;
                let (ip, held) =
                    self.reserve_address(&net, &subnet, gateway, &a.ipv4_address, &record.id)?;
                attached.held.push(held.display().to_string());
                attached.addresses.insert(net.name.clone(), ip.to_string());
                if net.dns {
                    let mut names: Vec<String> = a.aliases.clone();
                    names.push(record.id[..12].to_string());
                    names.sort();
                    names.dedup();
                    attached.names.entries.push(super::dns::Entry {
                        network: net.name.clone(),
                        gateway,
                        address: ip,
                        internal: net.internal,
                        names,
                        links: a
                            .links
                            .iter()
                            .map(|l| {
                                let (target, alias) = l.split_once(':').unwrap_or((l, l));
                                (alias.to_string(), target.to_string())
                            })
                            .collect(),
                    });
                }
                let mut entry = json!({
                    "interface_name": format!("eth{i}"),
                    "static_ips": [ip.to_string()],
                });
                let mac = if a.mac_address.is_empty() && i == 0 {
                    &spec.mac_address
                } else {
                    &a.mac_address
                };
                if !mac.is_empty() {
                    entry["static_mac"] = json!(mac);
                }
                networks.insert(net.name.clone(), entry);
                info.insert(
                    net.name.clone(),
                    network::network_info(&net, &subnet, gateway),
                );
            }
            let mut mappings = Vec::new();
            for p in &spec.ports {
                let (port, held) = self.reserve_port(p, &record.id)?;
                attached.held.push(held.display().to_string());
                attached.ports.push((
                    p.host_ip.clone(),
                    port,
                    p.container_port,
                    p.protocol.as_str().to_string(),
                ));
                mappings.push(json!({
                    "host_ip": p.host_ip,
                    "container_port": p.container_port,
                    "host_port": port,
                    "range": 1,
                    "protocol": p.protocol.as_str(),
                }));
            }
            attached.setup = json!({
                "container_id": record.id,
                "container_name": record.name,
                "networks": networks,
                "network_info": info,
                "port_mappings": mappings,
            });
            if record.userns.is_some() {
                // Set up by the hook, once runc has made the namespace:
                // here only the file its bind mount goes on.
                network::netns_target(Path::new(&attached.netns))?;
                return network::record(&paths.dir, &attached);
            }
            network::create_netns(Path::new(&attached.netns))?;
            if let Err(e) = network::setup(&attached) {
                network::remove_netns(Path::new(&attached.netns));
                return Err(e);
            }
            network::record(&paths.dir, &attached)
        })();
        if let Err(e) = made {
            for h in &attached.held {
                let _ = fs::remove_file(h);
            }
            return Err(e);
        }
        Ok(Some(attached))
    }

    /// Whether a reservation file belongs to a container that still holds
    /// it: one whose networks are set up, or one being started now (its
    /// networks are recorded once set up, and two containers that start
    /// together must not take each other's address in between). A start
    /// that died on the way lets go of its reservations after a minute.
    fn held_by_live(&self, file: &Path) -> bool {
        let Ok(id) = fs::read_to_string(file) else {
            return false;
        };
        let dir = self.containers_dir().join(id.trim());
        if dir.join("network.json").exists() {
            return true;
        }
        let recent = fs::metadata(file)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < Duration::from_secs(60)));
        recent && dir.exists()
    }

    /// Takes a reservation file; a stale one (its holder gone) is taken over.
    fn take(&self, file: &Path, id: &str) -> bool {
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(file)
            {
                Ok(mut f) => {
                    let _ = f.write_all(id.as_bytes());
                    return true;
                }
                Err(_) if !self.held_by_live(file) => {
                    let _ = fs::remove_file(file);
                }
                Err(_) => return false,
            }
        }
        false
    }

    fn reserve_address(
        &self,
        net: &super::volumes::NetworkRecord,
        subnet: &Subnet,
        gateway: std::net::Ipv4Addr,
        wanted: &str,
        id: &str,
    ) -> Result<(std::net::Ipv4Addr, PathBuf)> {
        let dir = self.addresses_dir(&net.name);
        fs::create_dir_all(&dir).map_err(|e| failed("reserving an address", e))?;
        if !wanted.is_empty() {
            let ip: std::net::Ipv4Addr = wanted
                .parse()
                .map_err(|_| refused(format!("invalid IPv4 address {wanted:?}")))?;
            if !subnet.contains(ip) || ip == gateway {
                return Err(refused(format!(
                    "invalid address {ip}: it does not belong to any of network {}'s subnets",
                    net.name
                )));
            }
            let file = dir.join(ip.to_string());
            if !self.take(&file, id) {
                return Err(refused(format!(
                    "Address already in use: {ip} on network {}",
                    net.name
                )));
            }
            return Ok((ip, file));
        }
        // In turn, after the last address given (as netavark's allocator
        // does), not the lowest free one: a container made again would get
        // its predecessor's address at once, which its peers (a balancer)
        // still have in their neighbour caches for the interface that is
        // gone, and their connections stall. The cursor and the stale
        // reservations taken over are the network's, under its lock.
        let _lock = super::volumes::lock(&dir.join("lock"))?;
        let range = Subnet::parse(&net.ip_range).unwrap_or(*subnet);
        let cursor = dir.join("last");
        let last = fs::read_to_string(&cursor)
            .ok()
            .and_then(|s| s.trim().parse::<std::net::Ipv4Addr>().ok());
        for ip in in_turn(subnet, &range, gateway, last) {
            let file = dir.join(ip.to_string());
            if self.take(&file, id) {
                let _ = fs::write(&cursor, ip.to_string());
                return Ok((ip, file));
            }
        }
        Err(refused(format!("no address left on network {}", net.name)))
    }

    /// Reserves the host port of a published port (checking that nothing
    /// on the host holds it).
    fn reserve_port(&self, p: &crate::PortBinding, id: &str) -> Result<(u16, PathBuf)> {
        let dir = self.root.join("ports");
        fs::create_dir_all(&dir).map_err(|e| failed("reserving a port", e))?;
        let ip = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &p.host_ip
        };
        let udp = p.protocol == crate::Protocol::Udp;
        let free = |port: u16| -> std::io::Result<u16> {
            if udp {
                std::net::UdpSocket::bind((ip, port))?
                    .local_addr()
                    .map(|a| a.port())
            } else {
                std::net::TcpListener::bind((ip, port))?
                    .local_addr()
                    .map(|a| a.port())
            }
        };
        let candidates: Vec<u16> = match p.host_port {
            crate::HostPort::Fixed(port) => vec![port],
            crate::HostPort::Range(a, b) => (a..=b).collect(),
            crate::HostPort::Any => vec![0; 20],
        };
        for candidate in candidates {
            let Ok(port) = free(candidate) else { continue };
            let file = dir.join(format!("{}-{port}", p.protocol.as_str()));
            if self.take(&file, id) {
                return Ok((port, file));
            }
        }
        Err(refused(match p.host_port {
            crate::HostPort::Fixed(port) => {
                format!("Bind for {ip}:{port} failed: port is already allocated")
            }
            _ => format!("no free host port for container port {}", p.container_port),
        }))
    }

    /// Stops a container: its stop signal, SIGKILL after the timeout.
    pub(super) fn stop(&self, key: &str, timeout: Option<i64>) -> Result<()> {
        let o = self.find_container(key)?;
        if !matches!(o.status.phase, Phase::Running | Phase::Restarting) {
            return Ok(());
        }
        if o.paused {
            self.thaw(&o)?;
        }
        let spec = &o.record.spec;
        let signal = if spec.stop_signal.is_empty() {
            self.image_of(&o.record)
                .ok()
                .and_then(|i| {
                    i.config
                        .get("config")
                        .and_then(|c| c.get("StopSignal"))
                        .and_then(|s| s.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "SIGTERM".into())
        } else {
            spec.stop_signal.clone()
        };
        let seconds = timeout.or(spec.stop_timeout).unwrap_or(10).max(0);
        if o.running() {
            self.event(&o.record, "kill", super::shim::signal_number(&signal));
        }
        self.ask(
            &o,
            &format!("stop {signal} {seconds}"),
            Duration::from_secs(seconds as u64 + 60),
        )?;
        self.wait_until_down(&o.record.id, Duration::from_secs(30));
        self.event(&o.record, "stop", None);
        Ok(())
    }

    fn wait_until_down(&self, id: &str, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            match self.observe(id) {
                Ok(o) if o.status.phase == Phase::Running || state::shim_alive(&o.paths.dir) => {}
                _ => return,
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends a request to a container's monitor; its answer.
    fn ask(&self, o: &Observed, request: &str, limit: Duration) -> Result<String> {
        let mut stream = match std::os::unix::net::UnixStream::connect(&o.paths.socket) {
            Ok(s) => s,
            // Gone between the look and the call: it has ended.
            Err(_) if !state::shim_alive(&o.paths.dir) => return Ok("ok".into()),
            Err(e) => return Err(failed(format!("container {}", o.record.name), e)),
        };
        let _ = stream.set_read_timeout(Some(limit));
        writeln!(stream, "{request}")
            .map_err(|e| failed(format!("container {}", o.record.name), e))?;
        let mut answer = String::new();
        let _ = BufReader::new(&stream).read_line(&mut answer);
        let answer = answer.trim().to_string();
        match answer.strip_prefix("error: ") {
            Some(e) => Err(refused(format!("container {}: {e}", o.record.name))),
            None => Ok(answer),
        }
    }

    /// Sends a signal to a running container.
    pub(super) fn kill(&self, key: &str, signal: &str) -> Result<()> {
        let o = self.find_container(key)?;
        if !o.running() {
            return Err(refused(format!(
                "cannot kill container {}: container {} is not running",
                o.record.name, o.record.id
            )));
        }
        let number = super::shim::signal_number(signal)
            .ok_or_else(|| refused(format!("invalid signal: {signal}")))?;
        if o.paused && number == 9 {
            self.thaw(&o)?;
        }
        self.event(&o.record, "kill", Some(number));
        self.ask(&o, &format!("kill {number}"), Duration::from_secs(10))?;
        Ok(())
    }

    fn runc_command(&self, args: &[&str]) -> Result<()> {
        let out = std::process::Command::new(&self.runc)
            .arg("--root")
            .arg(self.runc_root())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| failed(format!("running {}", self.runc), e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(refused(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }

    /// Changes a container's resource limits: its record (for its next
    /// start), its bundle (for the monitor's restarts) and, when it runs,
    /// its cgroup through `runc update`.
    pub(super) fn update(&self, key: &str, resources: &crate::Resources) -> Result<()> {
        let o = self.find_container(key)?;
        let mut record = o.record.clone();
        record.spec.resources = resources.clone();
        let linux = self::resources(&record.spec);
        if o.running() {
            let file = o.paths.dir.join("resources.json");
            write_json(&file, &linux)?;
            let file = file.display().to_string();
            let updated = self.runc_command(&["update", "--resources", &file, &record.id]);
            let _ = fs::remove_file(&file);
            updated.map_err(|e| {
                refused(format!(
                    "cannot update container {}: {}",
                    record.name,
                    e.to_string().trim_start_matches("error: ")
                ))
            })?;
        }
        let bundle = o.paths.dir.join("config.json");
        if let Ok(mut config) = read_json::<Value>(&bundle) {
            if let Some(current) = config
                .pointer_mut("/linux/resources")
                .and_then(Value::as_object_mut)
            {
                for key in ["memory", "cpu", "pids"] {
                    match linux.get(key) {
                        Some(v) => current.insert(key.into(), v.clone()),
                        None => current.remove(key),
                    };
                }
                let bytes = serde_json::to_vec_pretty(&config)
                    .map_err(|e| failed("writing the runtime spec", e))?;
                state::write_atomic(&bundle, &bytes)?;
            }
        }
        write_json(&o.paths.record(), &record)?;
        self.event(&record, "update", None);
        Ok(())
    }

    /// Freezes a running container.
    pub(super) fn pause(&self, key: &str) -> Result<()> {
        let o = self.find_container(key)?;
        if !o.running() {
            return Err(refused(format!("container {} is not running", o.record.id)));
        }
        if o.paused {
            return Err(refused(format!(
                "container {} is already paused",
                o.record.id
            )));
        }
        self.runc_command(&["pause", &o.record.id])?;
        fs::write(o.paths.paused(), b"").map_err(|e| failed("marking it paused", e))?;
        self.event(&o.record, "pause", None);
        Ok(())
    }

    fn thaw(&self, o: &Observed) -> Result<()> {
        self.runc_command(&["resume", &o.record.id])?;
        let _ = fs::remove_file(o.paths.paused());
        Ok(())
    }

    /// Thaws a paused container.
    pub(super) fn unpause(&self, key: &str) -> Result<()> {
        let o = self.find_container(key)?;
        if !o.paused {
            return Err(refused(format!("container {} is not paused", o.record.id)));
        }
        self.thaw(&o)?;
        self.event(&o.record, "unpause", None);
        Ok(())
    }

    /// Removes a container and what is its own.
    pub(super) fn remove(&self, key: &str, force: bool, volumes: bool) -> Result<()> {
        let o = self.find_container(key)?;
        if matches!(o.status.phase, Phase::Running | Phase::Restarting) {
            if !force {
                return Err(refused(format!(
                    "cannot remove container {}: container is running: stop the container before removing or force remove",
                    o.record.name
                )));
            }
            if o.paused {
                self.thaw(&o)?;
            }
            self.ask(&o, "stop SIGKILL 0", Duration::from_secs(60))?;
            self.wait_until_down(&o.record.id, Duration::from_secs(30));
        }
        self.clean_up_run(&o.record.id, &o.paths);
        let rootfs = o.paths.rootfs();
        if fs::read_dir(&rootfs).is_ok_and(|mut d| d.next().is_some()) {
            return Err(refused(format!(
                "cannot remove container {}: its root filesystem is still mounted at {}",
                o.record.name,
                rootfs.display()
            )));
        }
        let _ = fs::remove_file(self.names_dir().join(&o.record.name));
        fs::remove_dir_all(&o.paths.dir)
            .map_err(|e| failed(format!("removing container {}", o.record.name), e))?;
        self.store.unpin(&o.record.id);
        if volumes {
            for v in &o.record.anonymous_volumes {
                let _ = self.drop_volume(v);
            }
        }
        self.event(&o.record, "destroy", None);
        Ok(())
    }

    /// Waits until a container is not running; its exit code.
    pub(super) async fn wait(&self, key: &str) -> Result<i64> {
        let id = self.resolve(key)?;
        let mut last = None;
        loop {
            match self.observe(&id) {
                Ok(o) => {
                    if matches!(o.status.phase, Phase::Created | Phase::Exited) {
                        return Ok(o.status.exit_code);
                    }
                    last = Some(o.status.exit_code);
                }
                // Removed meanwhile: what it ended with, if seen.
                Err(e) => return last.ok_or(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The health check a container runs: its spec's, over its image's.
fn probe(spec: &ContainerSpec, image: &StoredImage) -> Option<state::Probe> {
    let from_image = image
        .config
        .get("config")
        .and_then(|c| c.get("Healthcheck"))
        .filter(|h| !h.is_null());
    let image_ns = |key: &str| -> i64 {
        from_image
            .and_then(|h| h.get(key))
            .and_then(|v| v.as_i64())
            .unwrap_or(0)
    };
    let shell: Vec<String> = image
        .config
        .get("config")
        .and_then(|c| c.get("Shell"))
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .filter(|s: &Vec<String>| !s.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
    let test: Vec<String> = match spec.healthcheck.as_ref().map(|h| &h.test) {
        Some(HealthTest::Disabled) => return None,
        Some(HealthTest::Exec(argv)) => argv.clone(),
        Some(HealthTest::Shell(line)) => shell.iter().cloned().chain([line.clone()]).collect(),
        Some(HealthTest::Inherit) | None => {
            let list: Vec<String> = from_image
                .and_then(|h| h.get("Test"))
                .and_then(|t| serde_json::from_value(t.clone()).ok())
                .unwrap_or_default();
            match list.first().map(String::as_str) {
                Some("CMD") => list[1..].to_vec(),
                Some("CMD-SHELL") => shell
                    .iter()
                    .cloned()
                    .chain(list[1..].iter().cloned())
                    .collect(),
                _ => return None,
            }
        }
    };
    if test.is_empty() {
        return None;
    }
    let h = spec.healthcheck.clone().unwrap_or_default();
    let pick = |mine: i64, key: &str, default_ms: u64| -> u64 {
        let ns = if mine > 0 { mine } else { image_ns(key) };
        if ns > 0 {
            (ns / 1_000_000) as u64
        } else {
            default_ms
        }
    };
    Some(state::Probe {
        command: test,
        interval_ms: pick(h.interval_ns, "Interval", 30_000),
        timeout_ms: pick(h.timeout_ns, "Timeout", 30_000),
        retries: if h.retries > 0 {
            h.retries as u32
        } else {
            from_image
                .and_then(|i| i.get("Retries"))
                .and_then(|v| v.as_u64())
                .filter(|r| *r > 0)
                .unwrap_or(3) as u32
        },
        start_period_ms: pick(h.start_period_ns, "StartPeriod", 0),
        start_interval_ms: pick(h.start_interval_ns, "StartInterval", 5_000),
    })
}

/// The init binary `init: true` runs as PID 1.
fn init_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RCOMPOSE_INIT").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/bin/catatonit",
        "/usr/libexec/podman/catatonit",
        "/usr/bin/tini-static",
        "/usr/bin/tini",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// The host devices a container gets (`linux.devices`) and the cgroup
/// rules that let it use them.
fn devices(spec: &ContainerSpec) -> Result<(Vec<Value>, Vec<Value>)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut devices = Vec::new();
    let mut rules = Vec::new();
    for d in &spec.devices {
        let meta = fs::metadata(&d.host_path).map_err(|e| {
            refused(format!(
                "container {}: error gathering device information while adding custom device {:?}: {e}",
                spec.name, d.host_path
            ))
        })?;
        let kind = if meta.file_type().is_char_device() {
            "c"
        } else if meta.file_type().is_block_device() {
            "b"
        } else {
            return Err(refused(format!(
                "container {}: {} is not a device",
                spec.name, d.host_path
            )));
        };
        let rdev = meta.rdev();
        let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
        let target = if d.container_path.is_empty() {
            &d.host_path
        } else {
            &d.container_path
        };
        devices.push(json!({
            "path": target, "type": kind, "major": major, "minor": minor,
            "fileMode": meta.mode() & 0o777, "uid": meta.uid(), "gid": meta.gid(),
        }));
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            &d.permissions
        };
        rules.push(
            json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": access}),
        );
    }
    Ok((devices, rules))
}

/// `linux.resources` of the runtime spec.
fn resources(spec: &ContainerSpec) -> Value {
    let mut r = json!({});
    let mut memory = serde_json::Map::new();
    if spec.resources.memory > 0 {
        memory.insert("limit".into(), json!(spec.resources.memory));
        // Docker's default: as much swap as memory, when the kernel
        // accounts for swap at all.
        if super::cgroup::swap_accounted() {
            let swap = match spec.resources.memory_swap {
                0 => spec.resources.memory * 2,
                s => s,
            };
            memory.insert("swap".into(), json!(swap));
        }
    }
    if spec.resources.memory_reservation > 0 {
        memory.insert(
            "reservation".into(),
            json!(spec.resources.memory_reservation),
        );
    }
    if spec.oom_kill_disable {
        memory.insert("disableOOMKiller".into(), json!(true));
    }
    if !memory.is_empty() {
        r["memory"] = Value::Object(memory);
    }
    let mut cpu = serde_json::Map::new();
    if spec.resources.nano_cpus > 0 {
        cpu.insert("period".into(), json!(100_000));
        cpu.insert("quota".into(), json!(spec.resources.nano_cpus / 10_000));
    }
    if spec.resources.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(spec.resources.cpu_shares));
    }
    if !spec.resources.cpuset.is_empty() {
        cpu.insert("cpus".into(), json!(spec.resources.cpuset));
    }
    if !cpu.is_empty() {
        r["cpu"] = Value::Object(cpu);
    }
    if spec.resources.pids_limit > 0 {
        r["pids"] = json!({"limit": spec.resources.pids_limit});
    }
    r
}

/// A size as Docker's options write it (`10m`, `1g`, `512k`, bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (digits, unit) = match s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != '.')
    {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let n: f64 = digits.parse().ok()?;
    let mult = match unit {
        "" => 1u64,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    Some((n * mult as f64) as u64)
}

/// Docker's rule for container names.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// A new id: 64 random hexadecimal digits.
pub(super) fn random_id() -> String {
    let mut s = String::with_capacity(64);
    for _ in 0..4 {
        s.push_str(&format!("{:016x}", fastrand::u64(..)));
    }
    s
}

/// The addresses of `range` (the part of it in `subnet`, the network's and
/// broadcast addresses and the gateway left out) in turn after `last`, from
/// its first when `last` is not in it.
fn in_turn(
    subnet: &Subnet,
    range: &Subnet,
    gateway: std::net::Ipv4Addr,
    last: Option<std::net::Ipv4Addr>,
) -> impl Iterator<Item = std::net::Ipv4Addr> {
    let subnet = *subnet;
    let offset =
        |ip: std::net::Ipv4Addr| u64::from(u32::from(ip).wrapping_sub(u32::from(subnet.base)));
    let size = 1u64 << (32 - subnet.prefix);
    let (lo, hi) = if subnet.contains(range.base) {
        let start = offset(range.base);
        (
            start.max(1),
            (start + (1u64 << (32 - range.prefix)) - 1).min(size - 2),
        )
    } else {
        (1, size - 2)
    };
    let count = (hi + 1).saturating_sub(lo);
    let first = last
        .filter(|ip| subnet.contains(*ip))
        .map(offset)
        .filter(|n| (lo..=hi).contains(n))
        .map_or(0, |n| n - lo + 1);
    (0..count)
        .filter_map(move |k| u32::try_from(lo + (first + k) % count).ok())
        .filter_map(move |n| subnet.nth(n))
        .filter(move |ip| *ip != gateway)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_given_in_turn_within_the_range() {
        let subnet = Subnet::parse("10.1.0.0/16").unwrap();
        let gateway = "10.1.0.1".parse().unwrap();
        let ips = |range: &Subnet, last: Option<&str>| -> Vec<String> {
            in_turn(&subnet, range, gateway, last.map(|l| l.parse().unwrap()))
                .map(|ip| ip.to_string())
                .take(3)
                .collect()
        };
        // From the start (past the gateway), and after the last given.
        assert_eq!(ips(&subnet, None), ["10.1.0.2", "10.1.0.3", "10.1.0.4"]);
        assert_eq!(
            ips(&subnet, Some("10.1.0.7")),
            ["10.1.0.8", "10.1.0.9", "10.1.0.10"]
        );
        // Round past the broadcast address, back to the first.
        assert_eq!(
            ips(&subnet, Some("10.1.255.253")),
            ["10.1.255.254", "10.1.0.2", "10.1.0.3"]
        );
        // A range: only its addresses, wrapping within it; a cursor outside
        // it (or not an address of the subnet) starts at its first.
        let range = Subnet::parse("10.1.4.0/30").unwrap();
        let all: Vec<String> = in_turn(&subnet, &range, gateway, Some("10.1.4.2".parse().unwrap()))
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(all, ["10.1.4.3", "10.1.4.0", "10.1.4.1", "10.1.4.2"]);
        assert_eq!(
            ips(&range, Some("10.1.9.9")),
            ["10.1.4.0", "10.1.4.1", "10.1.4.2"]
        );
        assert_eq!(
            ips(&range, Some("192.168.0.1")),
            ["10.1.4.0", "10.1.4.1", "10.1.4.2"]
        );
        // A range outside the subnet counts as none.
        let elsewhere = Subnet::parse("10.2.0.0/24").unwrap();
        assert_eq!(ips(&elsewhere, None), ["10.1.0.2", "10.1.0.3", "10.1.0.4"]);
    }

    #[test]
    fn sizes_are_read_as_docker_writes_them() {
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("512K"), Some(512 << 10));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("ten"), None);
    }

    #[test]
    fn names_follow_dockers_rule() {
        assert!(valid_name("web-1"));
        assert!(valid_name("a.b_c"));
        assert!(!valid_name(""));
        assert!(!valid_name("-web"));
        assert!(!valid_name("we/b"));
    }
}
