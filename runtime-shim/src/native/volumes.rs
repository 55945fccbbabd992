//! Volumes and network records of the native runtime.
//!
//! A volume is a directory, `<root>/volumes/<name>/_data`, with its
//! record beside it (`volume.json`); the local driver's bind form (`type:
//! none`, `o: bind`, `device: PATH`) names a host directory instead. On
//! its first use a volume that is empty gets the content the image has at
//! the mount point, as Docker's do (unless `nocopy`).
//!
//! Networks are records under `<root>/networks/`: a subnet (from the
//! `ipam` config, or the first /24 of 10.89.0.0-10.99.255.0 that no host
//! route and no other network uses), its gateway and bridge name; the
//! addresses containers hold are files under `<name>.ips/`. The bridge
//! itself exists while containers are attached ([`super::network`]).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use std::net::Ipv4Addr;

use super::containers::random_id;
use super::network::{free_subnet, host_routes, Subnet};
use super::state::{read_json, write_json, Record};
use super::store::failed;
use super::NativeRuntime;
use crate::{
    LabelFilter, Mount, Network, NetworkSpec, Result, RuntimeError, Volume, VolumeSpec, VolumesFrom,
};

/// A volume's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Name.
    pub name: String,
    /// Driver (`local`).
    pub driver: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Driver options.
    pub options: BTreeMap<String, String>,
    /// Creation time, RFC 3339.
    pub created: String,
}

/// A network's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Id.
    pub id: String,
    /// The spec it was made from.
    pub name: String,
    /// Driver.
    pub driver: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// No way out.
    pub internal: bool,
    /// Options.
    pub options: BTreeMap<String, String>,
    /// Its IPv4 subnet, `a.b.c.d/n`.
    #[serde(default)]
    pub subnet: String,
    /// Its gateway (the bridge's address, where its DNS answers).
    #[serde(default)]
    pub gateway: String,
    /// The addresses containers get, when narrower than the subnet.
    #[serde(default)]
    pub ip_range: String,
    /// The bridge's name.
    #[serde(default)]
    pub interface: String,
    /// Whether its containers' names are answered (not on the default
    /// `bridge`, as Docker's).
    #[serde(default)]
    pub dns: bool,
}

impl NetworkRecord {
    fn network(&self) -> Network {
        Network {
            id: self.id.clone(),
            name: self.name.clone(),
            driver: self.driver.clone(),
            labels: self.labels.clone(),
            internal: self.internal,
        }
    }
}

fn valid_object_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

impl NativeRuntime {
    fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    fn volume_record(&self, name: &str) -> Option<VolumeRecord> {
        if !valid_object_name(name) {
            return None;
        }
        read_json(&self.volumes_dir().join(name).join("volume.json")).ok()
    }

    /// Where a volume's content is.
    pub(super) fn volume_data(&self, name: &str) -> PathBuf {
        if let Some(r) = self.volume_record(name) {
            let bind = r
                .options
                .get("o")
                .is_some_and(|o| o.split(',').any(|x| x == "bind"));
            if let (true, Some(device)) = (bind, r.options.get("device")) {
                return PathBuf::from(device);
            }
        }
        self.volumes_dir().join(name).join("_data")
    }

    pub(super) fn volume(&self, name: &str) -> Option<Volume> {
        self.volume_record(name).map(|r| Volume {
            name: r.name,
            driver: r.driver,
            labels: r.labels,
        })
    }

    pub(super) fn make_volume(&self, spec: &VolumeSpec) -> Result<()> {
        if !valid_object_name(&spec.name) {
            return Err(RuntimeError::Engine(format!(
                "create {}: volume name is too short or has characters that are not allowed: only [a-zA-Z0-9][a-zA-Z0-9_.-] are",
                spec.name
            )));
        }
        if !matches!(spec.driver.as_str(), "" | "local") {
            return Err(RuntimeError::Engine(format!(
                "create {}: the native runtime has the local volume driver only, not {:?}",
                spec.name, spec.driver
            )));
        }
        if let Some(t) = spec.driver_opts.get("type").filter(|t| *t != "none") {
            return Err(RuntimeError::Engine(format!(
                "create {}: volumes of type {t:?} are not supported by the native runtime (type: none with o: bind is)",
                spec.name
            )));
        }
        let dir = self.volumes_dir().join(&spec.name);
        if dir.join("volume.json").exists() {
            // As Docker's: creating an existing volume is no error.
            return Ok(());
        }
        if let Some(device) = spec.driver_opts.get("device") {
            if !Path::new(device).is_dir() {
                return Err(RuntimeError::Engine(format!(
                    "create {}: the bind device {device} is not a directory",
                    spec.name
                )));
            }
        }
        fs::create_dir_all(dir.join("_data"))
            .map_err(|e| failed(format!("creating volume {}", spec.name), e))?;
        write_json(
            &dir.join("volume.json"),
            &VolumeRecord {
                name: spec.name.clone(),
                driver: "local".into(),
                labels: spec.labels.clone(),
                options: spec.driver_opts.clone(),
                created: jiff::Timestamp::now().to_string(),
            },
        )
    }

    /// Names of the containers that mount a volume.
    fn volume_users(&self, name: &str) -> Vec<String> {
        self.all_containers()
            .into_iter()
            .filter(|o| {
                o.record
                    .spec
                    .mounts
                    .iter()
                    .any(|m| matches!(m, Mount::Volume { source, .. } if source == name))
            })
            .map(|o| o.record.name)
            .collect()
    }

    pub(super) fn drop_volume(&self, name: &str) -> Result<()> {
        if self.volume_record(name).is_none() {
            return Err(RuntimeError::NotFound {
                kind: "volume",
                name: name.to_string(),
            });
        }
        let users = self.volume_users(name);
        if !users.is_empty() {
            return Err(RuntimeError::Engine(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        fs::remove_dir_all(self.volumes_dir().join(name))
            .map_err(|e| failed(format!("removing volume {name}"), e))
    }

    /// Names anonymous volumes, creates missing named ones and adds the
    /// mounts of `volumes_from`; returns the anonymous volumes made.
    pub(super) fn prepare_volumes(
        &self,
        spec: &mut crate::ContainerSpec,
        id: &str,
    ) -> Result<Vec<String>> {
        let mut anonymous = Vec::new();
        for from in std::mem::take(&mut spec.volumes_from) {
            let VolumesFrom {
                container,
                read_only,
            } = &from;
            let other = self.find_container(container)?;
            for m in &other.record.spec.mounts {
                let mut m = m.clone();
                match &mut m {
                    Mount::Bind { read_only: ro, .. } | Mount::Volume { read_only: ro, .. } => {
                        *ro = *ro || *read_only;
                    }
                    Mount::Tmpfs { .. } => continue,
                }
                spec.mounts.push(m);
            }
            spec.volumes_from.push(from);
        }
        for m in &mut spec.mounts {
            if let Mount::Volume { source, .. } = m {
                if source.is_empty() {
                    *source = random_id();
                    self.make_volume(&VolumeSpec {
                        name: source.clone(),
                        labels: BTreeMap::from([(
                            "com.docker.volume.anonymous".to_string(),
                            id.to_string(),
                        )]),
                        ..Default::default()
                    })?;
                    anonymous.push(source.clone());
                } else if self.volume_record(source).is_none() {
                    self.make_volume(&VolumeSpec {
                        name: source.clone(),
                        ..Default::default()
                    })?;
                }
            }
        }
        Ok(anonymous)
    }

    /// Copies the image's content at each volume's mount point into the
    /// volume, on its first use, when it is empty.
    pub(super) fn populate_volumes(&self, record: &Record, rootfs: &Path) -> Result<()> {
        for m in &record.spec.mounts {
            let Mount::Volume {
                source,
                target,
                nocopy,
                subpath,
                ..
            } = m
            else {
                continue;
            };
            let dir = self.volumes_dir().join(source);
            let marker = dir.join("populated");
            let data = self.volume_data(source);
            // A new volume of a remapped container is its root's, as the
            // Docker daemon makes them under its remapped root.
            if let (Some(map), false) = (record.userns, marker.exists()) {
                if fs::metadata(&data).is_ok_and(|m| m.uid() == 0) {
                    let _ = lchown(&data, Some(map.uid), Some(map.gid));
                }
            }
            if *nocopy || !subpath.is_empty() || marker.exists() {
                continue;
            }
            let empty = fs::read_dir(&data)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            let from = rootfs.join(target.trim_start_matches('/'));
            // Only a real directory of the image (no symbolic link out).
            let is_dir = fs::symlink_metadata(&from).is_ok_and(|m| m.is_dir());
            if empty && is_dir {
                copy_tree(&from, &data).map_err(|e| {
                    failed(
                        format!("copying the image's {target} into volume {source}"),
                        e,
                    )
                })?;
                if let Ok(meta) = fs::metadata(&from) {
                    let _ = lchown(&data, Some(meta.uid()), Some(meta.gid()));
                    let _ = fs::set_permissions(&data, fs::Permissions::from_mode(meta.mode()));
                }
            }
            let _ = fs::write(&marker, b"");
        }
        Ok(())
    }

    fn networks_dir(&self) -> PathBuf {
        self.root.join("networks")
    }

    pub(super) fn network(&self, name: &str) -> Option<NetworkRecord> {
        if !valid_object_name(name) {
            return None;
        }
        read_json(&self.networks_dir().join(format!("{name}.json"))).ok()
    }

    pub(super) fn networks(&self, filter: &[LabelFilter]) -> Vec<Network> {
        let mut out: Vec<Network> = fs::read_dir(self.networks_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| read_json::<NetworkRecord>(&e.path()).ok())
                    .filter(|r| LabelFilter::all_match(filter, &r.labels))
                    .map(|r| r.network())
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub(super) fn make_network(&self, spec: &NetworkSpec) -> Result<String> {
        if !valid_object_name(&spec.name) {
            return Err(RuntimeError::Engine(format!(
                "invalid network name {:?}",
                spec.name
            )));
        }
        if !matches!(spec.driver.as_str(), "" | "bridge") {
            return Err(RuntimeError::Engine(format!(
                "network {}: the native runtime has the bridge driver only, not {:?}",
                spec.name, spec.driver
            )));
        }
        fs::create_dir_all(self.networks_dir()).map_err(|e| failed("creating networks", e))?;
        // One creation at a time on the host (subnets are the host's,
        // whatever the state root): two must not pick one subnet.
        fs::create_dir_all(SUBNETS).map_err(|e| failed("creating the subnets' directory", e))?;
        let _lock = lock(&Path::new(SUBNETS).join(".lock"))?;
        if self.network(&spec.name).is_some() {
            return Err(RuntimeError::Conflict {
                kind: "network",
                name: spec.name.clone(),
            });
        }
        let id = random_id();
        let what = |why: String| RuntimeError::Engine(format!("network {}: {why}", spec.name));
        let (subnet, gateway, ip_range) = match spec.ipam_pools.first() {
            Some((subnet, gateway, range)) if !subnet.is_empty() => {
                let parsed = Subnet::parse(subnet).ok_or_else(|| {
                    what(format!(
                        "invalid IPv4 subnet {subnet:?} (IPv6 is not supported natively yet)"
                    ))
                })?;
                let taken = self.subnets_taken();
                if taken.iter().any(|t| t.overlaps(&parsed)) {
                    return Err(what(format!(
                        "Pool overlaps with other one on this address space ({subnet})"
                    )));
                }
                let gw = if gateway.is_empty() {
                    parsed
                        .nth(1)
                        .ok_or_else(|| what("the subnet is too small".into()))?
                } else {
                    gateway
                        .parse::<Ipv4Addr>()
                        .ok()
                        .filter(|g| parsed.contains(*g))
                        .ok_or_else(|| what(format!("invalid gateway {gateway:?}")))?
                };
                if !range.is_empty() {
                    Subnet::parse(range)
                        .filter(|r| parsed.overlaps(r) && r.prefix >= parsed.prefix)
                        .ok_or_else(|| what(format!("invalid ip_range {range:?}")))?;
                }
                (parsed, gw, range.clone())
            }
            _ => {
                let subnet = free_subnet(&self.subnets_taken())
                    .ok_or_else(|| what("no free subnet left in 10.89.0.0-10.99.255.0".into()))?;
                let gateway = subnet
                    .nth(1)
                    .ok_or_else(|| what("the subnet is too small".into()))?;
                (subnet, gateway, String::new())
            }
        };
        let interface = spec
            .driver_opts
            .get("com.docker.network.bridge.name")
            .cloned()
            .unwrap_or_else(|| format!("rc-{}", &id[..10]));
        let record = NetworkRecord {
            id: id.clone(),
            name: spec.name.clone(),
            driver: "bridge".into(),
            labels: spec.labels.clone(),
            internal: spec.internal,
            options: spec.driver_opts.clone(),
            subnet: subnet.to_string(),
            gateway: gateway.to_string(),
            ip_range,
            interface,
            dns: spec.name != "bridge",
        };
        let file = self.networks_dir().join(format!("{}.json", spec.name));
        write_json(&file, &record)?;
        // Seen by the other state roots of the host until it goes.
        let holder = std::path::absolute(&file).unwrap_or_else(|_| file.clone());
        let _ = fs::write(subnet_entry(&subnet), holder.display().to_string());
        Ok(id)
    }

    /// The subnets in use: the host's routes and the native networks'.
    fn subnets_taken(&self) -> Vec<Subnet> {
        let mut taken = host_routes();
        // Those of every state root's networks, a bridge or not yet.
        for entry in fs::read_dir(SUBNETS).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().replace('-', "/");
            let Some(subnet) = Subnet::parse(&name) else {
                continue;
            };
            let holder = fs::read_to_string(entry.path()).unwrap_or_default();
            let held = read_json::<NetworkRecord>(Path::new(holder.trim()))
                .is_ok_and(|r| Subnet::parse(&r.subnet) == Some(subnet));
            if held {
                taken.push(subnet);
            } else {
                let _ = fs::remove_file(entry.path());
            }
        }
        for n in self.network_records() {
            if let Some(s) = Subnet::parse(&n.subnet) {
                taken.push(s);
            }
        }
        taken
    }

    fn network_records(&self) -> Vec<NetworkRecord> {
        fs::read_dir(self.networks_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .filter_map(|e| read_json::<NetworkRecord>(&e.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The directory of a network's address reservations.
    pub(super) fn addresses_dir(&self, name: &str) -> PathBuf {
        self.networks_dir().join(format!("{name}.ips"))
    }

    /// The default network of a container that names none (Docker's
    /// `bridge`: no names answered on it), made on first use.
    pub(super) fn default_network(&self) -> Result<NetworkRecord> {
        if let Some(n) = self.network("bridge") {
            return Ok(n);
        }
        match self.make_network(&NetworkSpec {
            name: "bridge".into(),
            driver_opts: BTreeMap::from([(
                "com.docker.network.bridge.name".to_string(),
                "rcompose0".to_string(),
            )]),
            ..Default::default()
        }) {
            Ok(_) | Err(RuntimeError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        self.network("bridge")
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "network",
                name: "bridge".into(),
            })
    }

    pub(super) fn drop_network(&self, name: &str) -> Result<()> {
        if self.network(name).is_none() {
            return Err(RuntimeError::NotFound {
                kind: "network",
                name: name.to_string(),
            });
        }
        let users: Vec<String> = self
            .all_containers()
            .into_iter()
            .filter(|o| {
                o.running()
                    && super::network::attached(&o.paths.dir)
                        .is_some_and(|a| a.addresses.contains_key(name))
            })
            .map(|o| o.record.name)
            .collect();
        if !users.is_empty() {
            return Err(RuntimeError::Engine(format!(
                "error while removing network: network {name} has active endpoints ({})",
                users.join(", ")
            )));
        }
        let _ = fs::remove_dir_all(self.addresses_dir(name));
        let file = self.networks_dir().join(format!("{name}.json"));
        let record = read_json::<NetworkRecord>(&file).ok();
        fs::remove_file(&file).map_err(|e| failed(format!("removing network {name}"), e))?;
        if let Some(subnet) = record.and_then(|r| Subnet::parse(&r.subnet)) {
            let entry = subnet_entry(&subnet);
            let holder = std::path::absolute(&file).unwrap_or_else(|_| file.clone());
            if fs::read_to_string(&entry).is_ok_and(|h| Path::new(h.trim()) == holder) {
                let _ = fs::remove_file(entry);
            }
        }
        // netavark removed the network's own rules with its last
        // container; what its networks share goes with the last of them.
        super::network::prune_global_rules();
        Ok(())
    }
}

/// The host's subnet reservations: one file per subnet of a native
/// network (`10.89.0.0-24`), holding the path of the network's record,
/// so that state roots side by side never pick one subnet. In /run: gone
/// with the bridges at a reboot.
const SUBNETS: &str = "/run/rcompose-subnets";

fn subnet_entry(subnet: &Subnet) -> PathBuf {
    Path::new(SUBNETS).join(subnet.to_string().replace('/', "-"))
}

/// Holds an exclusive advisory lock on a file while the value lives.
pub(super) fn lock(path: &Path) -> Result<fs::File> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| failed(format!("locking {}", path.display()), e))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| failed(format!("locking {}", path.display()), e))?;
    Ok(file)
}

/// Copies a directory tree, keeping modes, owners and symbolic links.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta = fs::symlink_metadata(&src)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            fs::create_dir_all(&dst)?;
            copy_tree(&src, &dst)?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode()))?;
        } else if kind.is_symlink() {
            symlink(fs::read_link(&src)?, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)?;
        } else {
            // Devices, sockets and pipes are not content.
            continue;
        }
        lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}
