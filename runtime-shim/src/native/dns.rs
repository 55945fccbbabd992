//! The names of native networks: rcompose's own DNS server, one process
//! per state root (`rcompose-dns DIR`), answering on the gateway of every
//! network that has names.
//!
//! Each container with names has a file in the state root's `dns/`
//! directory, `<id>.json` ([`Names`]): per network, its address and the
//! names it answers to (container name, short id, service name and other
//! aliases) and the `links` aliases it sees. The file is written when the
//! container's networks are set up and removed when they are torn down;
//! the server watches the directory (inotify) and reads it again at once,
//! so a name follows a replica's start and end within the time it takes
//! to read a few small files. The server is started by the first record
//! and ends by itself after the last one goes (under the directory's lock,
//! so that a record written meanwhile starts a new one).
//!
//! Answers follow Docker's embedded DNS: every replica behind a service
//! name, in an order that rotates from one query to the next; the names
//! of every network of the container that asks; a `links` alias only for
//! the container that declared it (after the networks' names, unlike
//! Docker, so that `links: [web]` follows `scale`); reverse lookups of the
//! network's addresses; other names forwarded to the host's resolvers
//! (except on `internal` networks, which reach nothing outside). Over
//! UDP and TCP, for answers longer than a client's UDP size.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde::{Deserialize, Serialize};

use super::state::{read_json, write_json};

/// Time to live of an answer: none, so that a client that caches follows
/// a scale as promptly as one that does not.
const TTL: u32 = 0;
/// How long a forwarded query waits for one upstream resolver.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded queries in flight at once; more are dropped (the client
/// asks again).
const MAX_FORWARDS: usize = 64;

/// One container's names, as its record file holds them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Names {
    /// The container's id (the record's file name).
    pub id: String,
    /// The container's name (reverse lookups answer it).
    pub container: String,
    /// Its attachments to networks that have names.
    pub entries: Vec<Entry>,
}

/// A container on one network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The network's name.
    pub network: String,
    /// Where the network's DNS answers.
    pub gateway: Ipv4Addr,
    /// The container's address on it.
    pub address: Ipv4Addr,
    /// Whether the network reaches nothing outside (no forwarding).
    #[serde(default)]
    pub internal: bool,
    /// The names that resolve to `address` on this network.
    pub names: Vec<String>,
    /// `links` of this container: (alias, the linked container's name).
    #[serde(default)]
    pub links: Vec<(String, String)>,
}

/// Where a state root's records are, and the binary that serves them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Publisher {
    /// The records' directory.
    pub dir: String,
    /// `rcompose-dns`, started with the directory when no server runs.
    pub server: String,
}

impl Publisher {
    fn record(&self, id: &str) -> PathBuf {
        Path::new(&self.dir).join(format!("{id}.json"))
    }

    /// Publishes a container's names and makes sure a server answers
    /// them; then waits (bounded) until it does on each network.
    pub fn publish(&self, names: &Names) -> crate::Result<()> {
        if names.entries.is_empty() {
            return Ok(());
        }
        let dir = Path::new(&self.dir);
        fs::create_dir_all(dir)
            .map_err(|e| super::store::failed("creating the DNS records' directory", e))?;
        {
            let _lock = super::volumes::lock(&dir.join("lock"))?;
            write_json(&self.record(&names.id), names)?;
            self.ensure_server(dir)?;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for entry in &names.entries {
            while !answers(entry.gateway, &names.container) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    /// Withdraws a container's names. The server ends after the last:
    /// then this waits (bounded) until it has, so that nothing of a
    /// project runs on after its `down`.
    pub fn withdraw(&self, id: &str) {
        let dir = Path::new(&self.dir);
        if !dir.is_dir() {
            return;
        }
        let last = match super::volumes::lock(&dir.join("lock")) {
            Ok(_lock) => {
                let _ = fs::remove_file(self.record(id));
                Table::read(dir).records.is_empty()
            }
            Err(_) => false,
        };
        if !last {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match open_lock(&dir.join("server.lock")).map(|l| l.try_lock().is_ok()) {
                Ok(false) => std::thread::sleep(Duration::from_millis(2)),
                _ => return,
            }
        }
    }

    /// Starts a server when there are records and none answers them.
    pub fn heal(&self) {
        let dir = Path::new(&self.dir);
        let any = |dir: &Path| {
            fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "json"))
        };
        if !any(dir) {
            return;
        }
        if let Ok(_lock) = super::volumes::lock(&dir.join("lock")) {
            if any(dir) {
                let _ = self.ensure_server(dir);
            }
        }
    }

    /// Starts a server unless one holds `server.lock`. Called under the
    /// directory's lock.
    fn ensure_server(&self, dir: &Path) -> crate::Result<()> {
        let lock = open_lock(&dir.join("server.lock"))
            .map_err(|e| super::store::failed("opening the DNS server's lock", e))?;
        if lock.try_lock().is_err() {
            return Ok(());
        }
        drop(lock);
        let mut child = Command::new(&self.server)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| super::store::failed(format!("starting {}", self.server), e))?;
        // Collected when it ends, so a long-lived caller keeps no zombie.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(())
    }
}

fn open_lock(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// Whether the DNS on `server`:53 answers `name` with an address within
/// 100 ms.
pub fn answers(server: Ipv4Addr, name: &str) -> bool {
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
    let Ok(qname) = Name::from_ascii(name) else {
        return false;
    };
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(qname, RecordType::A));
    let id = query.metadata.id;
    let Ok(bytes) = query.to_vec() else {
        return false;
    };
    if socket.send_to(&bytes, (server, 53)).is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + Duration::from_millis(100);
    while Instant::now() < deadline {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => {
                if let Ok(reply) = Message::from_vec(&buf[..n]) {
                    if reply.metadata.id == id {
                        return !reply.answers.is_empty();
                    }
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// What to do with a query.
#[derive(Debug, PartialEq)]
enum Reply {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Not a name of the network: ask the host's resolvers.
    Forward,
    /// Not a DNS query: say nothing.
    Ignore,
}

/// The names of one state root, as read from its records.
#[derive(Debug, Default)]
struct Table {
    records: Vec<Names>,
    /// How far each (gateway, name)'s answers have rotated.
    rotation: HashMap<(Ipv4Addr, String), usize>,
}

impl Table {
    fn read(dir: &Path) -> Table {
        let mut records: Vec<Names> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| read_json::<Names>(&p).ok())
            .collect();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Table {
            records,
            rotation: HashMap::new(),
        }
    }

    fn gateways(&self) -> Vec<Ipv4Addr> {
        let mut all: Vec<Ipv4Addr> = self
            .records
            .iter()
            .flat_map(|r| r.entries.iter().map(|e| e.gateway))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    fn on(&self, gateway: Ipv4Addr) -> impl Iterator<Item = (&Names, &Entry)> {
        self.records.iter().flat_map(move |r| {
            r.entries
                .iter()
                .filter(move |e| e.gateway == gateway)
                .map(move |e| (r, e))
        })
    }

    /// The container that asks: the one with the query's source address
    /// on the network it arrived on.
    fn asker(&self, gateway: Ipv4Addr, source: IpAddr) -> Option<&Names> {
        self.on(gateway)
            .find(|(_, e)| IpAddr::V4(e.address) == source)
            .map(|(r, _)| r)
    }

    /// The networks (by gateway) whose names a query sees: every network
    /// of the container that asks, the one it asked on first, as Docker's
    /// resolver answers names of all of a container's networks.
    fn scope(&self, gateway: Ipv4Addr, source: IpAddr) -> Vec<Ipv4Addr> {
        let mut scope = vec![gateway];
        if let Some(asker) = self.asker(gateway, source) {
            for e in &asker.entries {
                if !scope.contains(&e.gateway) {
                    scope.push(e.gateway);
                }
            }
        }
        scope
    }

    /// The addresses `name` resolves to for a query from `source`, in an
    /// order that turns once per `rotate`.
    fn resolve(
        &mut self,
        gateway: Ipv4Addr,
        source: IpAddr,
        name: &str,
        rotate: bool,
    ) -> Vec<Ipv4Addr> {
        let lookup = |table: &Table, wanted: &str, found: &mut Vec<Ipv4Addr>| {
            for network in table.scope(gateway, source) {
                let mut here: Vec<Ipv4Addr> = table
                    .on(network)
                    .filter(|(r, e)| {
                        r.container.eq_ignore_ascii_case(wanted)
                            || e.names.iter().any(|n| n.eq_ignore_ascii_case(wanted))
                    })
                    .map(|(_, e)| e.address)
                    .filter(|a| !found.contains(a))
                    .collect();
                here.sort();
                found.extend(here);
            }
        };
        let mut found: Vec<Ipv4Addr> = Vec::new();
        lookup(self, name, &mut found);
        if found.is_empty() {
            // A `links` alias, seen only by the container that declared
            // it, and after the networks' own names: `links: [web]` names
            // every replica of web, those that scale adds later included.
            let targets: Vec<String> = self
                .asker(gateway, source)
                .map(|r| {
                    r.entries
                        .iter()
                        .flat_map(|e| &e.links)
                        .filter(|(alias, _)| alias.eq_ignore_ascii_case(name))
                        .map(|(_, target)| target.clone())
                        .collect()
                })
                .unwrap_or_default();
            for target in targets {
                lookup(self, &target, &mut found);
            }
        }
        if found.len() > 1 {
            let turn = self
                .rotation
                .entry((gateway, name.to_ascii_lowercase()))
                .or_default();
            let len = found.len();
            found.rotate_left(*turn % len);
            if rotate {
                *turn = turn.wrapping_add(1);
            }
        }
        found
    }

    /// The container name behind an address a query can see.
    fn reverse(&self, gateway: Ipv4Addr, source: IpAddr, address: Ipv4Addr) -> Option<&str> {
        self.scope(gateway, source).into_iter().find_map(|network| {
            self.on(network)
                .find(|(_, e)| e.address == address)
                .map(|(r, _)| r.container.as_str())
        })
    }

    /// Whether a query reaches nothing outside: every network of the
    /// container that asks is internal.
    fn internal(&self, gateway: Ipv4Addr, source: IpAddr) -> bool {
        let scope = self.scope(gateway, source);
        self.records
            .iter()
            .flat_map(|r| &r.entries)
            .filter(|e| scope.contains(&e.gateway))
            .all(|e| e.internal)
    }

    /// The reply to a query that arrived on `gateway` from `source`,
    /// over a stream (TCP, no size limit) or not (UDP: truncated past the
    /// size the client takes, which then asks again over TCP).
    fn reply(&mut self, gateway: Ipv4Addr, source: IpAddr, bytes: &[u8], stream: bool) -> Reply {
        let Ok(request) = Message::from_vec(bytes) else {
            return Reply::Ignore;
        };
        if request.metadata.message_type != MessageType::Query {
            return Reply::Ignore;
        }
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            response.set_edns(edns);
        }
        let query = match (request.metadata.op_code, request.queries.as_slice()) {
            (OpCode::Query, [query]) => query.clone(),
            _ => {
                response.metadata.response_code = ResponseCode::NotImp;
                return Reply::Answer(response.to_vec().unwrap_or_default());
            }
        };
        response.add_query(query.clone());
        let asked = query.name.to_ascii();
        let asked = asked.trim_end_matches('.');
        let answers: Option<Vec<RData>> = match query.query_type {
            RecordType::PTR => reverse_address(asked)
                .and_then(|ip| self.reverse(gateway, source, ip))
                .and_then(|n| Name::from_ascii(format!("{n}.")).ok())
                .map(|n| vec![RData::PTR(PTR(n))]),
            kind => {
                let address = matches!(kind, RecordType::A | RecordType::ANY);
                let found = self.resolve(gateway, source, asked, address);
                if found.is_empty() {
                    None
                } else if address {
                    Some(found.into_iter().map(|ip| RData::A(A(ip))).collect())
                } else {
                    // The name is ours, with no record of that type
                    // (IPv6 included): no data, not "no such name".
                    Some(Vec::new())
                }
            }
        };
        match answers {
            Some(data) => {
                response.metadata.authoritative = true;
                for d in data {
                    response.add_answer(Record::from_rdata(query.name.clone(), TTL, d));
                }
            }
            None if self.internal(gateway, source) => {
                response.metadata.response_code = ResponseCode::Refused;
            }
            None => return Reply::Forward,
        }
        let limit = if stream {
            usize::from(u16::MAX)
        } else {
            usize::from(request.max_payload().max(512))
        };
        match response.to_vec() {
            Ok(b) if b.len() <= limit => Reply::Answer(b),
            Ok(_) => Reply::Answer(response.truncate().to_vec().unwrap_or_default()),
            Err(_) => Reply::Ignore,
        }
    }
}

/// The address of an `in-addr.arpa` name.
fn reverse_address(name: &str) -> Option<Ipv4Addr> {
    let lower = name.to_ascii_lowercase();
    let digits = lower.strip_suffix(".in-addr.arpa")?;
    let mut octets: Vec<u8> = digits
        .split('.')
        .map(|o| o.parse().ok())
        .collect::<Option<_>>()?;
    if octets.len() != 4 {
        return None;
    }
    octets.reverse();
    Some(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
}

/// The host's resolvers, from its `/etc/resolv.conf` (the server runs in
/// the host's network namespace, so one on loopback works too).
fn upstream() -> Vec<IpAddr> {
    fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|s| s.trim().split('%').next()?.parse().ok())
        .collect()
}

/// Asks the host's resolvers on a thread of its own and passes the
/// answer (or a failure) back to the client.
fn forward(reply_on: &UdpSocket, client: SocketAddr, query: Vec<u8>, in_flight: &Arc<AtomicUsize>) {
    if in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_FORWARDS {
        in_flight.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let Ok(socket) = reply_on.try_clone() else {
        in_flight.fetch_sub(1, Ordering::SeqCst);
        return;
    };
    let in_flight = in_flight.clone();
    std::thread::spawn(move || {
        let answer = upstream().into_iter().find_map(|server| {
            let local: SocketAddr = match server {
                IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let s = UdpSocket::bind(local).ok()?;
            s.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
            s.connect((server, 53)).ok()?;
            s.send(&query).ok()?;
            let mut buf = vec![0u8; 4096];
            let n = s.recv(&mut buf).ok()?;
            buf.truncate(n);
            Some(buf)
        });
        let answer = answer.unwrap_or_else(|| failure(&query));
        if !answer.is_empty() {
            let _ = socket.send_to(&answer, client);
        }
        in_flight.fetch_sub(1, Ordering::SeqCst);
    });
}

/// The DNS port.
const PORT: u16 = 53;

/// A socket on `gateway`:`port`. Bound freely: the address may not be on
/// its bridge yet when the server reads a new network's first record.
fn bind(gateway: Ipv4Addr, port: u16, kind: rustix::net::SocketType) -> std::io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags};
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        kind,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::sockopt::set_ip_freebind(&fd, true)?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &SocketAddr::from((gateway, port)))?;
    Ok(fd)
}

/// What answers on one gateway: UDP, and TCP for answers UDP truncates.
struct Listener {
    gateway: Ipv4Addr,
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Listener {
    fn bind(gateway: Ipv4Addr, port: u16) -> std::io::Result<Listener> {
        use rustix::net::SocketType;
        let udp = UdpSocket::from(bind(gateway, port, SocketType::DGRAM)?);
        let tcp = bind(gateway, port, SocketType::STREAM)?;
        rustix::net::listen(&tcp, 64)?;
        Ok(Listener {
            gateway,
            udp,
            tcp: TcpListener::from(tcp),
        })
    }
}

/// Answers the queries of one TCP client (two-byte length, then the
/// message, as many as it sends), on a thread of its own.
fn serve_stream(
    mut stream: TcpStream,
    gateway: Ipv4Addr,
    table: Arc<Mutex<Table>>,
    in_flight: Arc<AtomicUsize>,
) {
    if in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_FORWARDS {
        in_flight.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    std::thread::spawn(move || {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let source = stream.peer_addr().map(|a| a.ip()).ok();
        while let (Some(source), Some(query)) = (source, read_framed(&mut stream)) {
            let reply = match table.lock() {
                Ok(mut t) => t.reply(gateway, source, &query, true),
                Err(_) => break,
            };
            let answer = match reply {
                Reply::Answer(bytes) => bytes,
                Reply::Forward => upstream()
                    .into_iter()
                    .find_map(|server| ask_over_tcp(server, &query))
                    .unwrap_or_else(|| failure(&query)),
                Reply::Ignore => break,
            };
            if write_framed(&mut stream, &answer).is_err() {
                break;
            }
        }
        in_flight.fetch_sub(1, Ordering::SeqCst);
    });
}

fn read_framed(stream: &mut impl Read) -> Option<Vec<u8>> {
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).ok()?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut message).ok()?;
    Some(message)
}

fn write_framed(stream: &mut impl Write, message: &[u8]) -> std::io::Result<()> {
    let length = u16::try_from(message.len()).map_err(std::io::Error::other)?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    stream.write_all(&framed)
}

/// A query asked of an upstream resolver over TCP.
fn ask_over_tcp(server: IpAddr, query: &[u8]) -> Option<Vec<u8>> {
    let mut s =
        TcpStream::connect_timeout(&SocketAddr::from((server, 53)), UPSTREAM_TIMEOUT).ok()?;
    s.set_read_timeout(Some(UPSTREAM_TIMEOUT)).ok()?;
    write_framed(&mut s, query).ok()?;
    read_framed(&mut s)
}

/// SERVFAIL for a query nobody could answer.
fn failure(query: &[u8]) -> Vec<u8> {
    let Ok(request) = Message::from_vec(query) else {
        return Vec::new();
    };
    let mut failure = Message::error_msg(
        request.metadata.id,
        request.metadata.op_code,
        ResponseCode::ServFail,
    );
    failure.add_queries(request.queries);
    failure.to_vec().unwrap_or_default()
}

/// `rcompose-dns DIR`: serves the records of `DIR` until none is left.
pub fn serve(dir: &Path) -> ExitCode {
    let _ = rustix::process::setsid();
    serve_on(dir, PORT)
}

fn serve_on(dir: &Path, port: u16) -> ExitCode {
    let Ok(server_lock) = open_lock(&dir.join("server.lock")) else {
        return ExitCode::from(1);
    };
    if server_lock.try_lock().is_err() {
        // Another server answers these records.
        return ExitCode::SUCCESS;
    }
    let mut server_lock = Some(server_lock);
    use rustix::fs::inotify;
    let Ok(watch) = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
    else {
        return ExitCode::from(1);
    };
    let events = inotify::WatchFlags::CREATE
        | inotify::WatchFlags::DELETE
        | inotify::WatchFlags::MOVED_TO
        | inotify::WatchFlags::MOVED_FROM
        | inotify::WatchFlags::CLOSE_WRITE
        | inotify::WatchFlags::DELETE_SELF;
    if inotify::add_watch(&watch, dir, events).is_err() {
        return ExitCode::from(1);
    }
    let in_flight = Arc::new(AtomicUsize::new(0));
    let table = Arc::new(Mutex::new(Table::default()));
    let mut listeners: Vec<Listener> = Vec::new();
    let mut wanted: Vec<Ipv4Addr> = Vec::new();
    let mut reload = true;
    let mut buf = vec![0u8; 4096];
    loop {
        if reload {
            reload = false;
            let read = Table::read(dir);
            if read.records.is_empty() {
                // The last record went: end, unless one is being written
                // (its writer holds the lock and then finds no server).
                let Ok(_lock) = super::volumes::lock(&dir.join("lock")) else {
                    return ExitCode::SUCCESS;
                };
                if Table::read(dir).records.is_empty() {
                    server_lock.take();
                    return ExitCode::SUCCESS;
                }
                reload = true;
                continue;
            }
            wanted = read.gateways();
            if let Ok(mut t) = table.lock() {
                t.records = read.records;
            }
            listeners.retain(|l| wanted.contains(&l.gateway));
            for g in &wanted {
                if !listeners.iter().any(|l| l.gateway == *g) {
                    if let Ok(l) = Listener::bind(*g, port) {
                        listeners.push(l);
                    }
                }
            }
        }
        let ready: Vec<bool> = {
            use rustix::event::{poll, PollFd, PollFlags};
            let mut fds = vec![PollFd::new(&watch, PollFlags::IN)];
            for l in &listeners {
                fds.push(PollFd::new(&l.udp, PollFlags::IN));
                fds.push(PollFd::new(&l.tcp, PollFlags::IN));
            }
            // A gateway whose sockets could not be bound is tried again.
            let retry = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            let unbound = listeners.len() < wanted.len();
            match poll(&mut fds, unbound.then_some(&retry)) {
                Ok(0) => {
                    reload = true;
                    continue;
                }
                Ok(_) => fds.iter().map(|f| !f.revents().is_empty()).collect(),
                Err(_) => continue,
            }
        };
        if ready[0] {
            // The events themselves do not matter: the directory is read
            // again.
            while rustix::io::read(&watch, &mut buf).is_ok_and(|n| n > 0) {}
            reload = true;
        }
        for (i, l) in listeners.iter().enumerate() {
            if ready[1 + 2 * i] {
                while let Ok((n, client)) = l.udp.recv_from(&mut buf) {
                    let reply = match table.lock() {
                        Ok(mut t) => t.reply(l.gateway, client.ip(), &buf[..n], false),
                        Err(_) => Reply::Ignore,
                    };
                    match reply {
                        Reply::Answer(bytes) => {
                            let _ = l.udp.send_to(&bytes, client);
                        }
                        Reply::Forward => forward(&l.udp, client, buf[..n].to_vec(), &in_flight),
                        Reply::Ignore => {}
                    }
                }
            }
            if ready[2 + 2 * i] {
                while let Ok((stream, _)) = l.tcp.accept() {
                    serve_stream(stream, l.gateway, table.clone(), in_flight.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
    const OTHER: Ipv4Addr = Ipv4Addr::new(10, 8, 0, 1);

    fn container(id: &str, name: &str, gw: Ipv4Addr, ip: [u8; 4], names: &[&str]) -> Names {
        Names {
            id: id.into(),
            container: name.into(),
            entries: vec![Entry {
                network: format!("net-{gw}"),
                gateway: gw,
                address: ip.into(),
                internal: false,
                names: names.iter().map(|n| n.to_string()).collect(),
                links: Vec::new(),
            }],
        }
    }

    fn table() -> Table {
        let mut web2 = container("b", "p-web-2", GW, [10, 9, 0, 3], &["web"]);
        web2.entries[0].links = vec![("cache".into(), "p-redis-1".into())];
        Table {
            records: vec![
                container("a", "p-web-1", GW, [10, 9, 0, 2], &["web"]),
                web2,
                container("c", "p-web-3", GW, [10, 9, 0, 4], &["web"]),
                container("d", "p-redis-1", GW, [10, 9, 0, 5], &["redis"]),
                container("e", "p-db-1", OTHER, [10, 8, 0, 2], &["db"]),
            ],
            rotation: HashMap::new(),
        }
    }

    fn ask(table: &mut Table, gw: Ipv4Addr, from: [u8; 4], name: &str, kind: RecordType) -> Reply {
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii(name).unwrap_or_default(),
            kind,
        ));
        table.reply(
            gw,
            IpAddr::from(from),
            &q.to_vec().unwrap_or_default(),
            false,
        )
    }

    fn decoded(reply: Reply) -> (ResponseCode, Vec<String>) {
        let Reply::Answer(bytes) = reply else {
            return (ResponseCode::Unknown(999), vec![format!("{reply:?}")]);
        };
        let m = Message::from_vec(&bytes).unwrap_or_else(|_| Message::query());
        let answers = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => a.0.to_string(),
                RData::PTR(p) => p.0.to_ascii(),
                other => format!("{other:?}"),
            })
            .collect();
        (m.metadata.response_code, answers)
    }

    #[test]
    fn every_replica_answers_in_rotating_order() {
        let mut t = table();
        let mut firsts = Vec::new();
        for _ in 0..3 {
            let (code, answers) = decoded(ask(&mut t, GW, [10, 9, 0, 5], "web", RecordType::A));
            assert_eq!(code, ResponseCode::NoError);
            let mut sorted = answers.clone();
            sorted.sort();
            assert_eq!(sorted, ["10.9.0.2", "10.9.0.3", "10.9.0.4"]);
            firsts.push(answers[0].clone());
        }
        assert_eq!(firsts, ["10.9.0.2", "10.9.0.3", "10.9.0.4"]);
    }

    #[test]
    fn container_names_are_case_blind_and_scoped_to_the_network() {
        let mut t = table();
        let (_, a) = decoded(ask(&mut t, GW, [10, 9, 0, 2], "P-Redis-1.", RecordType::A));
        assert_eq!(a, ["10.9.0.5"]);
        // db is on another network: not answered here, but forwarded.
        assert_eq!(
            ask(&mut t, GW, [10, 9, 0, 2], "db", RecordType::A),
            Reply::Forward
        );
        let (_, a) = decoded(ask(&mut t, OTHER, [10, 8, 0, 2], "db", RecordType::A));
        assert_eq!(a, ["10.8.0.2"]);
    }

    #[test]
    fn a_container_on_two_networks_sees_the_names_of_both() {
        let mut t = table();
        t.records[3].entries.push(Entry {
            network: "other".into(),
            gateway: OTHER,
            address: Ipv4Addr::new(10, 8, 0, 9),
            internal: false,
            names: vec!["redis".into()],
            links: Vec::new(),
        });
        // redis asks on its first network for db, on its second.
        let (_, a) = decoded(ask(&mut t, GW, [10, 9, 0, 5], "db", RecordType::A));
        assert_eq!(a, ["10.8.0.2"]);
        // db sees redis by its address on their shared network only.
        let (_, a) = decoded(ask(&mut t, OTHER, [10, 8, 0, 2], "redis", RecordType::A));
        assert_eq!(a, ["10.8.0.9"]);
        let (_, a) = decoded(ask(
            &mut t,
            GW,
            [10, 9, 0, 5],
            "2.0.8.10.in-addr.arpa",
            RecordType::PTR,
        ));
        assert_eq!(a, ["p-db-1."]);
    }

    #[test]
    fn links_aliases_only_for_the_container_that_declared_them() {
        let mut t = table();
        let (_, a) = decoded(ask(&mut t, GW, [10, 9, 0, 3], "cache", RecordType::A));
        assert_eq!(a, ["10.9.0.5"]);
        assert_eq!(
            ask(&mut t, GW, [10, 9, 0, 2], "cache", RecordType::A),
            Reply::Forward
        );
    }

    #[test]
    fn our_names_have_no_ipv6_and_reverse_to_the_container() {
        let mut t = table();
        let (code, a) = decoded(ask(&mut t, GW, [10, 9, 0, 2], "redis", RecordType::AAAA));
        assert_eq!((code, a.len()), (ResponseCode::NoError, 0));
        let (_, a) = decoded(ask(
            &mut t,
            GW,
            [10, 9, 0, 2],
            "5.0.9.10.in-addr.arpa",
            RecordType::PTR,
        ));
        assert_eq!(a, ["p-redis-1."]);
        assert_eq!(
            ask(
                &mut t,
                GW,
                [10, 9, 0, 2],
                "9.9.9.10.in-addr.arpa",
                RecordType::PTR
            ),
            Reply::Forward
        );
    }

    #[test]
    fn internal_networks_forward_nothing() {
        let mut t = table();
        for r in &mut t.records {
            for e in &mut r.entries {
                e.internal = true;
            }
        }
        let (code, _) = decoded(ask(&mut t, GW, [10, 9, 0, 2], "example.org", RecordType::A));
        assert_eq!(code, ResponseCode::Refused);
        let (_, a) = decoded(ask(&mut t, GW, [10, 9, 0, 2], "redis", RecordType::A));
        assert_eq!(a, ["10.9.0.5"]);
    }

    #[test]
    fn garbage_gets_no_reply() {
        let mut t = table();
        assert_eq!(
            t.reply(GW, IpAddr::from([10, 9, 0, 2]), b"\x01\x02", false),
            Reply::Ignore
        );
    }

    #[test]
    fn records_are_read_from_their_directory() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let names = container("abc", "p-web-1", GW, [10, 9, 0, 2], &["web"]);
        write_json(&dir.path().join("abc.json"), &names).unwrap_or_else(|e| panic!("{e}"));
        fs::write(dir.path().join("abc.tmp1"), "{").unwrap_or_else(|e| panic!("{e}"));
        fs::write(dir.path().join("lock"), "").unwrap_or_else(|e| panic!("{e}"));
        let t = Table::read(dir.path());
        assert_eq!(t.records, vec![names]);
        assert_eq!(t.gateways(), vec![GW]);
    }

    /// The server itself, on a loopback address and a port of the test's
    /// own: a name with more replicas than UDP carries is truncated there
    /// and answered whole over TCP; a record written later is answered at
    /// once; the server ends after the last record goes.
    #[test]
    fn the_server_answers_over_udp_and_tcp_and_ends_with_its_records() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let gateway = Ipv4Addr::new(127, 88, fastrand::u8(1..255), 1);
        let port = fastrand::u16(20_000..60_000);
        for i in 0..70u8 {
            let names = container(
                &format!("c{i}"),
                &format!("p-web-{i}"),
                gateway,
                [10, 7, 0, i + 2],
                &["web"],
            );
            write_json(&dir.path().join(format!("c{i}.json")), &names)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let path = dir.path().to_path_buf();
        let server = std::thread::spawn(move || serve_on(&path, port));
        let query = |name: &str| {
            let mut q = Message::query();
            q.add_query(Query::query(
                Name::from_ascii(name).unwrap_or_default(),
                RecordType::A,
            ));
            q.to_vec().unwrap_or_default()
        };
        let udp = |name: &str| -> Option<Message> {
            let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
            s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
            s.send_to(&query(name), (gateway, port)).ok()?;
            let mut buf = [0u8; 1500];
            let n = s.recv(&mut buf).ok()?;
            Message::from_vec(&buf[..n]).ok()
        };
        let mut answered = None;
        for _ in 0..100 {
            answered = udp("web");
            if answered.is_some() {
                break;
            }
        }
        let truncated = answered.unwrap_or_else(|| panic!("no answer over UDP"));
        assert!(
            truncated.metadata.truncation,
            "70 addresses do not fit 512 bytes"
        );
        let mut tcp = TcpStream::connect((gateway, port)).unwrap_or_else(|e| panic!("{e}"));
        write_framed(&mut tcp, &query("web")).unwrap_or_else(|e| panic!("{e}"));
        let whole = read_framed(&mut tcp)
            .and_then(|b| Message::from_vec(&b).ok())
            .unwrap_or_else(|| panic!("no answer over TCP"));
        assert_eq!(whole.answers.len(), 70);
        drop(tcp);
        // A container that starts now is answered at once.
        let late = container("late", "p-api-1", gateway, [10, 7, 1, 2], &["api"]);
        write_json(&dir.path().join("late.json"), &late).unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + Duration::from_secs(2);
        while udp("api").is_none_or(|m| m.answers.is_empty()) {
            assert!(Instant::now() < deadline, "the new record was not answered");
        }
        for entry in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            if entry.path().extension().is_some_and(|x| x == "json") {
                let _ = fs::remove_file(entry.path());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !server.is_finished() {
            assert!(Instant::now() < deadline, "the server outlived its records");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(server.join().ok(), Some(ExitCode::SUCCESS));
    }

    #[test]
    fn reverse_names_parse() {
        assert_eq!(
            reverse_address("4.3.2.1.IN-ADDR.ARPA"),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(reverse_address("3.2.1.in-addr.arpa"), None);
        assert_eq!(reverse_address("example.org"), None);
    }
}
