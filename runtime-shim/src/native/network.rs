//! Networking of native containers. Podman's network stack, `netavark`,
//! makes the bridge, the veth pair into the container's network
//! namespace, the addresses, NAT, isolation between networks and the
//! published ports (its rules sit before Docker's in the FORWARD chain and
//! leave Docker's alone). Names are rcompose's own ([`super::dns`]): a
//! server per state root on each network's gateway, following the
//! containers' records. rcompose does the addressing (subnets and
//! addresses, recorded under the state root) and owns each container's
//! network namespace, a bind mount under `<run>/netns/` that outlives the
//! container's restarts.
//!
//! A container's network state is `network.json` in its directory: the
//! input it was set up with (which tears it down again), its namespace,
//! its names, and the address and port files it holds. Whoever sees the
//! container end for good (its monitor, or the runtime after a monitor
//! that is gone) tears it down with [`teardown`].

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::state::{read_json, write_json};
use super::store::failed;
use super::volumes::lock;
use crate::{Result, RuntimeError};

/// Where Debian's podman network stack is.
const NETAVARK: &str = "/usr/lib/podman/netavark";

/// netavark: `RCOMPOSE_NETAVARK`, Debian's place, or the PATH.
pub fn netavark() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RCOMPOSE_NETAVARK").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if Path::new(NETAVARK).is_file() {
        return Some(PathBuf::from(NETAVARK));
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("netavark"))
            .find(|c| c.is_file())
    })
}

/// A container's network state, as set up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Attached {
    /// netavark's binary.
    pub netavark: String,
    /// netavark's configuration directory.
    pub config: String,
    /// The network namespace's bind mount.
    pub netns: String,
    /// The input netavark was given.
    pub setup: serde_json::Value,
    /// Address per network.
    pub addresses: BTreeMap<String, String>,
    /// Files that hold an address or a host port for it.
    pub held: Vec<String>,
    /// Published ports: (host ip, host port, container port, protocol).
    pub ports: Vec<(String, u16, u16, String)>,
    /// Where its names are published (empty: nowhere).
    #[serde(default)]
    pub dns: super::dns::Publisher,
    /// Its names on the networks that have names.
    #[serde(default)]
    pub names: super::dns::Names,
}

impl Attached {
    /// Runs netavark's `setup` or `teardown` with the recorded input.
    fn netavark(&self, verb: &str) -> std::result::Result<(), String> {
        run(&self.netavark, &self.config, verb, &self.netns, &self.setup)
    }
}

/// The empty file a network namespace is bound on.
pub fn netns_target(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| failed("creating the namespaces' directory", e))?;
    }
    fs::write(path, b"").map_err(|e| failed(format!("creating {}", path.display()), e))
}

/// Makes a network namespace, bound at `path`.
pub fn create_netns(path: &Path) -> Result<()> {
    netns_target(path)?;
    let target = path.to_path_buf();
    // A thread of its own enters a new namespace, which the bind mount
    // keeps when the thread ends.
    let made = std::thread::spawn(move || -> std::io::Result<()> {
        #[allow(deprecated)]
        rustix::thread::unshare(rustix::thread::UnshareFlags::NEWNET)?;
        rustix::mount::mount_bind("/proc/thread-self/ns/net", &target)?;
        Ok(())
    })
    .join()
    .map_err(|_| RuntimeError::Engine("making a network namespace failed".into()))?;
    made.map_err(|e| {
        let _ = fs::remove_file(path);
        failed("making a network namespace", e)
    })
}

/// Removes a network namespace's bind mount.
pub fn remove_netns(path: &Path) {
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
    let _ = fs::remove_file(path);
}

/// The host's lock on netavark and the firewall chains its networks
/// share: every state root's calls take it.
const NETAVARK_LOCK: &str = "/run/rcompose-netavark.lock";

/// Runs netavark with a JSON input; its error message when it fails.
/// One call at a time on the host, whatever the state root: netavark 1.4
/// creates its firewall chains without a lock of its own, and two setups
/// race (and a pruning of the shared chains must not run between).
fn run(
    netavark: &str,
    config: &str,
    verb: &str,
    netns: &str,
    input: &serde_json::Value,
) -> std::result::Result<(), String> {
    let _ = fs::create_dir_all(config);
    let _lock = lock(Path::new(NETAVARK_LOCK)).map_err(|e| e.to_string())?;
    let mut child = Command::new(netavark)
        .arg("--config")
        .arg(config)
        .arg(verb)
        .arg(netns)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {netavark}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.to_string().as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running {netavark}: {e}"))?;
    if out.status.success() {
        if verb == "setup" {
            pin_bridge_addresses(input);
            isolation_first();
        }
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let message = text
        .lines()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()?
                .get("error")?
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| text.trim().to_string());
    Err(message)
}

/// Keeps netavark's isolation jump before its forwarding one in FORWARD.
/// netavark inserts both at the top when it makes its chains; once they
/// were found the other way round (with Docker's rules between, while
/// Docker's own network test ran), and then NETAVARK_FORWARD's accept of a
/// network's source subnet let its containers reach another network's
/// addresses before isolation could drop it. Called under netavark's lock.
fn isolation_first() {
    let Some(rules) = iptables(&["-S", "FORWARD"]) else {
        return;
    };
    let rules: Vec<&str> = rules
        .lines()
        .filter(|l| l.starts_with("-A FORWARD"))
        .collect();
    let forward = rules
        .iter()
        .position(|l| l.ends_with("-j NETAVARK_FORWARD"));
    let isolation = rules
        .iter()
        .position(|l| l.ends_with("-j NETAVARK_ISOLATION_1"));
    if let (Some(f), Some(i)) = (forward, isolation) {
        if i > f {
            // Inserted before the forwarding jump first, then the late one
            // removed by its number (one further down by then): never a
            // moment without isolation.
            let before = (f + 1).to_string();
            if iptables(&["-I", "FORWARD", &before, "-j", "NETAVARK_ISOLATION_1"]).is_some() {
                let late = (i + 2).to_string();
                let _ = iptables(&["-D", "FORWARD", &late]);
            }
        }
    }
}

/// Keeps each bridge of a setup at the hardware address it has. A Linux
/// bridge whose address was never set takes the lowest of its ports', so
/// it changed as containers came and went: the containers' ARP entries for
/// the gateway (their name server) then pointed at a port that had gone,
/// and their lookups went unanswered for seconds. Called under netavark's
/// lock, right after the setup that may have made the bridge (before any
/// container on it runs a process, for a new one).
fn pin_bridge_addresses(input: &serde_json::Value) {
    let Some(networks) = input.get("network_info").and_then(|n| n.as_object()) else {
        return;
    };
    for net in networks.values() {
        let Some(bridge) = net.get("network_interface").and_then(|b| b.as_str()) else {
            continue;
        };
        let sys = Path::new("/sys/class/net").join(bridge);
        // 3: NET_ADDR_SET, pinned already.
        if fs::read_to_string(sys.join("addr_assign_type")).is_ok_and(|t| t.trim() == "3") {
            continue;
        }
        let Ok(address) = fs::read_to_string(sys.join("address")) else {
            continue;
        };
        let _ = Command::new("ip")
            .args(["link", "set", "dev", bridge, "address", address.trim()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Sets a container's networks up in its namespace and publishes its
/// names; on failure, undoes what was done.
pub fn setup(attached: &Attached) -> Result<()> {
    fs::create_dir_all(&attached.config).map_err(|e| failed("creating netavark's directory", e))?;
    if let Err(e) = attached.netavark("setup") {
        // netavark leaves what it did before failing.
        let _ = attached.netavark("teardown");
        return Err(RuntimeError::Engine(format!(
            "setting up its networks: {e}"
        )));
    }
    if !attached.dns.dir.is_empty() {
        if let Err(e) = attached.dns.publish(&attached.names) {
            attached.dns.withdraw(&attached.names.id);
            let _ = attached.netavark("teardown");
            return Err(e);
        }
    }
    Ok(())
}

/// Tears a container's networks down (as recorded in `network.json` of
/// its directory), removes its namespace and lets go of its addresses and
/// ports. Nothing when it has none.
pub fn teardown(dir: &Path) {
    teardown_after(dir, std::time::Duration::ZERO);
}

/// How long the address of a container that ended unasked (a crash, a
/// kill) stays after its names went: connections to it are refused
/// meanwhile, which a balancer that follows names retries elsewhere,
/// rather than left unanswered until they time out. A few of the
/// balancer's DNS intervals.
pub const CRASH_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

/// [`teardown`], with the names withdrawn `grace` before the address.
pub fn teardown_after(dir: &Path, grace: std::time::Duration) {
    let file = dir.join("network.json");
    let Ok(attached) = read_json::<Attached>(&file) else {
        return;
    };
    if !attached.dns.dir.is_empty() {
        attached.dns.withdraw(&attached.names.id);
        std::thread::sleep(grace);
    }
    let _ = attached.netavark("teardown");
    remove_netns(Path::new(&attached.netns));
    for held in &attached.held {
        let _ = fs::remove_file(held);
    }
    let _ = fs::remove_file(&file);
}

fn iptables(args: &[&str]) -> Option<String> {
    let out = Command::new("iptables")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// netavark leaves its chains that every network shares (the FORWARD
/// jump, the port-forwarding chains) when its last network goes. When no
/// network of anyone uses them any more, they go too: nothing of a
/// container stays on the host after it.
pub fn prune_global_rules() {
    let Ok(_lock) = lock(Path::new(NETAVARK_LOCK)) else {
        return;
    };
    let (Some(nat), Some(filter)) = (iptables(&["-t", "nat", "-S"]), iptables(&["-S"])) else {
        return;
    };
    // A network's own chains (NETAVARK-<hash>), or rules in the shared
    // ones: still in use.
    let in_use = nat
        .lines()
        .any(|l| l.starts_with("-N NETAVARK-") && !l.starts_with("-N NETAVARK-HOSTPORT-"))
        || nat
            .lines()
            .any(|l| l.starts_with("-A NETAVARK-HOSTPORT-DNAT"))
        || filter.lines().any(|l| {
            l.starts_with("-A NETAVARK_FORWARD") || l.starts_with("-A NETAVARK_ISOLATION")
        });
    if in_use {
        return;
    }
    for rule in filter.lines().filter(|l| {
        l.starts_with("-A FORWARD")
            && (l.contains("-j NETAVARK_FORWARD") || l.contains("-j NETAVARK_ISOLATION"))
    }) {
        delete_rule(&[], rule);
    }
    for chain in [
        "NETAVARK_FORWARD",
        "NETAVARK_ISOLATION_1",
        "NETAVARK_ISOLATION_2",
    ] {
        let _ = iptables(&["-F", chain]);
        let _ = iptables(&["-X", chain]);
    }
    for rule in nat.lines().filter(|l| {
        (l.starts_with("-A PREROUTING")
            || l.starts_with("-A OUTPUT")
            || l.starts_with("-A POSTROUTING"))
            && l.contains("-j NETAVARK-HOSTPORT-")
    }) {
        delete_rule(&["-t", "nat"], rule);
    }
    for chain in [
        "NETAVARK-HOSTPORT-DNAT",
        "NETAVARK-HOSTPORT-MASQ",
        "NETAVARK-HOSTPORT-SETMARK",
    ] {
        let _ = iptables(&["-t", "nat", "-F", chain]);
        let _ = iptables(&["-t", "nat", "-X", chain]);
    }
}

/// Deletes a rule as `iptables -S` printed it (`-A CHAIN …`).
fn delete_rule(table: &[&str], rule: &str) {
    let Some(spec) = rule.strip_prefix("-A ") else {
        return;
    };
    let mut args: Vec<String> = table.iter().map(|s| s.to_string()).collect();
    args.push("-D".into());
    args.extend(shell_words(spec));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let _ = iptables(&refs);
}

/// Splits a rule into words, with double quotes (comments) kept whole.
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

/// Records a container's network state.
pub fn record(dir: &Path, attached: &Attached) -> Result<()> {
    write_json(&dir.join("network.json"), attached)
}

/// The network state of a running container, if it has one.
pub fn attached(dir: &Path) -> Option<Attached> {
    read_json(&dir.join("network.json")).ok()
}

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// Its first address.
    pub base: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/n`.
    pub fn parse(s: &str) -> Option<Subnet> {
        let (ip, prefix) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 30)?;
        let mask = Self::mask_of(prefix);
        Some(Subnet {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }

    fn mask_of(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    /// Whether two subnets share addresses.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let p = self.prefix.min(other.prefix);
        let m = Self::mask_of(p);
        u32::from(self.base) & m == u32::from(other.base) & m
    }

    /// Whether it holds an address.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_of(self.prefix) == u32::from(self.base)
    }

    /// The `n`th address (1 is the first usable one).
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - self.prefix);
        // Neither the network's address nor its broadcast address.
        (u64::from(n) >= 1 && u64::from(n) < size - 1)
            .then(|| Ipv4Addr::from(u32::from(self.base) + n))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// The subnets the host routes to (its own networks, Docker's bridges),
/// from /proc/net/route.
pub fn host_routes() -> Vec<Subnet> {
    let text = fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The file holds them in the host's byte order (little endian).
            let dest = Ipv4Addr::from(dest.swap_bytes());
            let mask = mask.swap_bytes();
            (mask != 0).then(|| Subnet {
                base: dest,
                prefix: mask.count_ones() as u8,
            })
        })
        .collect()
}

/// The first free /24 of rcompose's pool (10.89.0.0/16 up to 10.99.0.0/16)
/// that overlaps none of `taken`.
pub fn free_subnet(taken: &[Subnet]) -> Option<Subnet> {
    for second in 89u8..=99 {
        for third in 0u8..=255 {
            let candidate = Subnet {
                base: Ipv4Addr::new(10, second, third, 0),
                prefix: 24,
            };
            if !taken.iter().any(|t| t.overlaps(&candidate)) {
                return Some(candidate);
            }
        }
    }
    None
}

/// The JSON of one network for netavark.
pub fn network_info(
    net: &super::volumes::NetworkRecord,
    subnet: &Subnet,
    gateway: Ipv4Addr,
) -> serde_json::Value {
    let options = &net.options;
    let mut opts = serde_json::Map::new();
    // Containers reach only the networks they are on, as with Docker.
    opts.insert("isolate".into(), json!("true"));
    if let Some(mtu) = options
        .get("com.docker.network.driver.mtu")
        .or(options.get("mtu"))
    {
        opts.insert("mtu".into(), json!(mtu));
    }
    json!({
        "name": net.name,
        "id": net.id,
        "driver": "bridge",
        "network_interface": net.interface,
        "subnets": [{"subnet": subnet.to_string(), "gateway": gateway.to_string()}],
        "ipv6_enabled": false,
        "internal": net.internal,
        // Names are rcompose's own (`super::dns`), not aardvark-dns's.
        "dns_enabled": false,
        "options": opts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_split_as_iptables_prints_them() {
        assert_eq!(
            shell_words(
                r#"FORWARD -m comment --comment "netavark firewall plugin rules" -j NETAVARK_FORWARD"#
            ),
            vec![
                "FORWARD",
                "-m",
                "comment",
                "--comment",
                "netavark firewall plugin rules",
                "-j",
                "NETAVARK_FORWARD"
            ]
        );
    }

    #[test]
    fn subnets_overlap_contain_and_count() {
        let a = Subnet::parse("10.89.3.0/24").unwrap_or(Subnet {
            base: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
        });
        let b = Subnet::parse("10.89.0.0/16").unwrap_or(a);
        let c = Subnet::parse("10.90.0.0/24").unwrap_or(a);
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(a.contains(Ipv4Addr::new(10, 89, 3, 77)));
        assert_eq!(a.nth(1), Some(Ipv4Addr::new(10, 89, 3, 1)));
        assert_eq!(a.nth(255), None);
        assert_eq!(a.nth(0), None);
        let taken = [b];
        assert_eq!(
            free_subnet(&taken).map(|s| s.to_string()),
            Some("10.90.0.0/24".to_string())
        );
        assert_eq!(Subnet::parse("10.1.2.3/33"), None);
    }
}
