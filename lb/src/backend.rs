//! The live state of backends and their endpoints, and the choice of an
//! endpoint for each request or connection.

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{Backend, Policy};
use crate::pool::{Pool, RawConn, Sender};

/// One address that a backend can send traffic to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// A name unique within its backend (a container's id, say).
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its share of traffic relative to the others; 0 sends it none.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// What provides it (a container's id, say), when the feeder knows: a
    /// drain or removal that names another instance leaves it alone, so
    /// that late news of a container that has gone cannot take out the
    /// new one given the same address. An empty name is no name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

fn default_weight() -> u32 {
    1
}

impl Endpoint {
    /// An endpoint of weight 1.
    pub fn new(id: impl Into<String>, addr: SocketAddr) -> Self {
        Endpoint {
            id: id.into(),
            addr,
            weight: 1,
            instance: None,
        }
    }

    /// The same endpoint, provided by `instance`.
    pub fn of_instance(self, instance: impl Into<String>) -> Self {
        Endpoint {
            instance: Some(instance.into()),
            ..self
        }
    }
}

/// A change to the endpoints of one backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Puts an endpoint in rotation (or updates its address and weight).
    Add {
        /// The backend.
        backend: String,
        /// The endpoint.
        endpoint: Endpoint,
    },
    /// Stops sending new work to an endpoint; what it has goes on.
    Drain {
        /// The backend.
        backend: String,
        /// The endpoint's id.
        id: String,
        /// Only if this instance provides it; empty: only if no known
        /// instance does (see [`Endpoint::instance`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
    },
    /// Forgets an endpoint at once, closing its tunnels.
    Remove {
        /// The backend.
        backend: String,
        /// The endpoint's id.
        id: String,
        /// Only if this instance provides it; empty: only if no known
        /// instance does (see [`Endpoint::instance`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
    },
    /// Health learned elsewhere (a container's own healthcheck): an
    /// unhealthy endpoint gets no new work until it is healthy again.
    Health {
        /// The backend.
        backend: String,
        /// The endpoint's id.
        id: String,
        /// Whether it is healthy.
        healthy: bool,
    },
    /// The whole set of a backend's endpoints, after a resynchronization:
    /// the ones not in it are drained and removed, the others added.
    Sync {
        /// The backend.
        backend: String,
        /// Every endpoint it has now.
        endpoints: Vec<Endpoint>,
    },
}

impl Change {
    /// The backend the change is about.
    pub fn backend(&self) -> &str {
        match self {
            Change::Add { backend, .. }
            | Change::Drain { backend, .. }
            | Change::Remove { backend, .. }
            | Change::Health { backend, .. }
            | Change::Sync { backend, .. } => backend,
        }
    }
}

const ACTIVE: u8 = 0;
const DRAINING: u8 = 1;
const GONE: u8 = 2;

/// Latency histogram buckets: bucket `i` counts samples under `2^i` µs.
const BUCKETS: usize = 27;

/// One endpoint as the balancer tracks it.
pub(crate) struct Replica {
    pub id: String,
    pub addr: SocketAddr,
    /// The value of the sticky cookie that pins a client to this endpoint.
    pub key: String,
    weight: AtomicU32,
    /// What provides it, when known (see [`Endpoint::instance`]).
    instance: std::sync::Mutex<Option<String>>,
    added: Instant,
    state: AtomicU8,
    /// Whether it is new and has not accepted a connection yet.
    probing: AtomicBool,
    /// Health reported from outside (a container healthcheck).
    reported_healthy: AtomicBool,
    /// Health as this balancer's own checks see it.
    checked_healthy: AtomicBool,
    /// Consecutive passing and failing health checks.
    check_passes: AtomicU32,
    check_fails: AtomicU32,
    failures: AtomicU32,
    /// Milliseconds since the backend's epoch until which it is ejected.
    ejected_until: AtomicU64,
    /// Requests in flight plus open tunnels.
    active: AtomicUsize,
    tunnels: AtomicUsize,
    requests: AtomicU64,
    errors: AtomicU64,
    /// Exponentially weighted moving average of response latency, in µs.
    latency_ewma: AtomicU64,
    latency: [AtomicU64; BUCKETS],
    /// Turns true when the endpoint's tunnels must close.
    closing: watch::Sender<bool>,
    /// Smooth weighted round robin's running weight.
    current: AtomicI64,
    /// Idle keep-alive connections to the endpoint, for the general path
    /// (hyper) and for the HTTP/1.1 fast path.
    pub pool: Pool<Sender>,
    pub raw: Pool<RawConn>,
}

impl Replica {
    fn new(endpoint: &Endpoint) -> Self {
        Replica {
            key: sticky_key(&endpoint.id),
            id: endpoint.id.clone(),
            addr: endpoint.addr,
            weight: AtomicU32::new(endpoint.weight),
            instance: std::sync::Mutex::new(endpoint.instance.clone().filter(|i| !i.is_empty())),
            added: Instant::now(),
            state: AtomicU8::new(ACTIVE),
            probing: AtomicBool::new(false),
            reported_healthy: AtomicBool::new(true),
            checked_healthy: AtomicBool::new(true),
            check_passes: AtomicU32::new(0),
            check_fails: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            tunnels: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency_ewma: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            closing: watch::channel(false).0,
            current: AtomicI64::new(0),
            pool: Pool::default(),
            raw: Pool::default(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.state.load(Relaxed) != ACTIVE
    }

    fn instance(&self) -> Option<String> {
        match self.instance.lock() {
            Ok(i) => i.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether a drain or removal naming `instance` is about this replica:
    /// none names any; an empty name only a replica whose instance is not
    /// known (a feeder that found it without one, by DNS say, and judges
    /// it gone, leaves alone the container announced there meanwhile);
    /// another name, unless the replica is known to be another instance.
    fn is_instance(&self, instance: Option<&str>) -> bool {
        match (instance, self.instance()) {
            (None, _) => true,
            (Some(""), mine) => mine.is_none(),
            (Some(wanted), Some(mine)) => wanted == mine,
            (Some(_), None) => true,
        }
    }

    /// Marks the start of a request (or, with `tunnel`, a connection).
    pub fn begin(self: &Arc<Self>, tunnel: bool) -> ActiveGuard {
        self.active.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        if tunnel {
            self.tunnels.fetch_add(1, Relaxed);
        }
        ActiveGuard {
            replica: Arc::clone(self),
            tunnel,
        }
    }

    /// Records a response's latency.
    pub fn observe_latency(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = self.latency_ewma.load(Relaxed);
        let new = if old == 0 {
            micros
        } else {
            (old * 7 + micros) / 8
        };
        self.latency_ewma.store(new, Relaxed);
        let bucket = (64 - micros.leading_zeros() as usize).min(BUCKETS - 1);
        self.latency[bucket].fetch_add(1, Relaxed);
    }

    /// Records a failure that speaks against the endpoint itself (refused
    /// connection, reset, timeout); enough in a row eject it for a while.
    pub fn failed(&self, backend: &BackendState) {
        self.errors.fetch_add(1, Relaxed);
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        let limit = backend.config.eject_after;
        if limit > 0 && n >= limit {
            let until = backend.now_ms() + duration_ms(backend.config.eject_for);
            self.ejected_until.store(until, Relaxed);
            self.failures.store(0, Relaxed);
            tracing::warn!(backend = %backend.config.name, endpoint = %self.id, "ejected after {n} failures");
        }
    }

    /// Records an error answered to the client that is not the endpoint's
    /// fault (a bad request, say).
    pub fn errored(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// Records a success, which ends a run of failures.
    pub fn succeeded(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
    }

    /// Records an active health check's result; `rise` passes in a row
    /// bring the endpoint back, `fall` failures take it out. Returns the
    /// new state when it changed.
    pub fn checked(&self, passed: bool, rise: u32, fall: u32) -> Option<bool> {
        let healthy = self.checked_healthy.load(Relaxed);
        if passed {
            self.check_fails.store(0, Relaxed);
            let n = self.check_passes.fetch_add(1, Relaxed) + 1;
            if !healthy && n >= rise.max(1) {
                self.checked_healthy.store(true, Relaxed);
                return Some(true);
            }
        } else {
            self.check_passes.store(0, Relaxed);
            let n = self.check_fails.fetch_add(1, Relaxed) + 1;
            if healthy && n >= fall.max(1) {
                self.checked_healthy.store(false, Relaxed);
                return Some(false);
            }
        }
        None
    }

    /// Whether it has left the backend.
    pub fn is_gone(&self) -> bool {
        self.state.load(Relaxed) == GONE
    }

    /// A receiver that turns true when tunnels to the endpoint must close.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Whether it is still waiting for its first accepted connection.
    pub fn is_probing(&self) -> bool {
        self.probing.load(Relaxed)
    }

    fn in_rotation(&self, now_ms: u64) -> bool {
        self.state.load(Relaxed) == ACTIVE
            && !self.probing.load(Relaxed)
            && self.reported_healthy.load(Relaxed)
            && self.checked_healthy.load(Relaxed)
            && self.weight.load(Relaxed) > 0
            && self.ejected_until.load(Relaxed) <= now_ms
    }

    /// The weight it gets now, growing during slow start; never zero for a
    /// positive weight.
    fn effective_weight(&self, slow_start: Duration) -> f64 {
        let weight = f64::from(self.weight.load(Relaxed));
        if slow_start.is_zero() {
            return weight;
        }
        let share = self.added.elapsed().as_secs_f64() / slow_start.as_secs_f64();
        weight * share.clamp(0.05, 1.0)
    }

    fn latency_quantile(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self.latency.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                // The bucket's upper bound, in milliseconds.
                return Some((1u64 << i) as f64 / 1000.0);
            }
        }
        None
    }
}

/// How long a new endpoint may take to accept its first connection before
/// it joins the rotation anyway (health checks then judge it).
const PROBE_LIMIT: Duration = Duration::from_secs(5);

/// Connects to a new endpoint until it accepts, then puts it in rotation.
async fn probe(replica: Arc<Replica>) {
    let started = Instant::now();
    while started.elapsed() < PROBE_LIMIT && !replica.is_draining() {
        let attempt = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(replica.addr),
        );
        if let Ok(Ok(_)) = attempt.await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    replica.probing.store(false, SeqCst);
}

/// Counts a request or tunnel as active on an endpoint until dropped.
pub(crate) struct ActiveGuard {
    replica: Arc<Replica>,
    tunnel: bool,
}

impl ActiveGuard {
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// Goes on counting, as a tunnel now (draining gives tunnels a grace
    /// period, then closes them).
    pub fn into_tunnel(mut self) -> ActiveGuard {
        if !self.tunnel {
            self.replica.tunnels.fetch_add(1, Relaxed);
            self.tunnel = true;
        }
        self
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.tunnel {
            self.replica.tunnels.fetch_sub(1, Relaxed);
        }
        self.replica.active.fetch_sub(1, Relaxed);
    }
}

/// The value of the sticky cookie for an endpoint id: short, stable, and
/// not the id itself.
fn sticky_key(id: &str) -> String {
    format!("{:016x}", hash_of(&[id.as_bytes()]))
}

fn hash_of(parts: &[&[u8]]) -> u64 {
    // SipHash with fixed keys: the same on every run and in every process.
    let mut h =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    for p in parts {
        h.write(p);
        h.write_u8(0xff);
    }
    h.finish()
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a request offers for choosing its endpoint.
#[derive(Default)]
pub(crate) struct Hints<'a> {
    pub client: Option<IpAddr>,
    pub uri: Option<&'a str>,
    pub sticky: Option<&'a str>,
    /// Endpoints already tried for this request.
    pub exclude: &'a [Arc<Replica>],
}

/// A backend's endpoints and counters.
pub(crate) struct BackendState {
    pub config: Backend,
    replicas: RwLock<Arc<[Arc<Replica>]>>,
    /// Serializes smooth round robin's updates.
    rr: Mutex<()>,
    rotor: AtomicUsize,
    epoch: Instant,
    /// Requests or connections that found no endpoint.
    pub unavailable: AtomicU64,
}

impl BackendState {
    pub fn new(config: Backend) -> Self {
        BackendState {
            config,
            replicas: RwLock::new(Arc::from(Vec::new())),
            rr: Mutex::new(()),
            rotor: AtomicUsize::new(0),
            epoch: Instant::now(),
            unavailable: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        duration_ms(self.epoch.elapsed())
    }

    /// Every endpoint, draining ones included.
    pub fn replicas(&self) -> Arc<[Arc<Replica>]> {
        match self.replicas.read() {
            Ok(r) => Arc::clone(&r),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn replace(&self, f: impl FnOnce(&mut Vec<Arc<Replica>>)) {
        let mut guard = match self.replicas.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut list = guard.to_vec();
        f(&mut list);
        *guard = Arc::from(list);
    }

    pub fn find(&self, id: &str) -> Option<Arc<Replica>> {
        self.replicas().iter().find(|r| r.id == id).cloned()
    }

    /// The replica `id`, if `instance` provides it.
    fn find_of(&self, id: &str, instance: Option<&str>) -> Option<Arc<Replica>> {
        self.find(id).filter(|r| r.is_instance(instance))
    }

    /// Applies one change; the backend name has been matched already.
    pub fn apply(&self, change: &Change) {
        match change {
            Change::Add { endpoint, .. } => self.add(endpoint),
            Change::Drain { id, instance, .. } => {
                if let Some(r) = self.find_of(id, instance.as_deref()) {
                    self.start_draining(&r);
                }
            }
            Change::Remove { id, instance, .. } => self.remove(id, instance.as_deref()),
            Change::Health { id, healthy, .. } => {
                if let Some(r) = self.find(id) {
                    r.reported_healthy.store(*healthy, Relaxed);
                }
            }
            Change::Sync { endpoints, .. } => {
                for r in self.replicas().iter() {
                    if !endpoints.iter().any(|e| e.id == r.id) {
                        self.start_draining(r);
                        self.remove(&r.id, None);
                    }
                }
                for e in endpoints {
                    self.add(e);
                }
            }
        }
    }

    /// Adds an endpoint, or updates it in place; atomic under the list's
    /// lock, so that two feeders (engine events and rcompose) adding the
    /// same endpoint at once make one replica.
    fn add(&self, endpoint: &Endpoint) {
        let mut added = None;
        let mut replaced = None;
        self.replace(|list| {
            let instance = endpoint.instance.as_deref().filter(|i| !i.is_empty());
            if let Some(i) = list.iter().position(|r| r.id == endpoint.id) {
                let r = &list[i];
                if r.addr == endpoint.addr && !r.is_draining() && r.is_instance(instance) {
                    r.weight.store(endpoint.weight, Relaxed);
                    if let Some(instance) = instance {
                        if let Ok(mut i) = r.instance.lock() {
                            *i = Some(instance.to_string());
                        }
                    }
                    return;
                }
                // A new address, a new instance at the same address, or a
                // comeback after draining: a new replica.
                replaced = Some(list.remove(i));
            }
            let replica = Arc::new(Replica::new(endpoint));
            // A replica that has just started may not listen yet: it joins
            // the rotation once it accepts a connection, so that no client
            // request is the one that finds out.
            if tokio::runtime::Handle::try_current().is_ok() {
                replica.probing.store(true, SeqCst);
            }
            list.push(Arc::clone(&replica));
            added = Some(replica);
        });
        if let Some(old) = replaced {
            self.retire(&old);
        }
        if let Some(replica) = added {
            tracing::info!(backend = %self.config.name, endpoint = %endpoint.id, addr = %endpoint.addr, "endpoint added");
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(probe(replica));
            }
        }
    }

    fn start_draining(&self, r: &Replica) {
        if r.state.swap(DRAINING, SeqCst) == ACTIVE {
            tracing::info!(backend = %self.config.name, endpoint = %r.id, "endpoint draining");
        }
        r.pool.clear();
        r.raw.clear();
    }

    fn remove(&self, id: &str, instance: Option<&str>) {
        let mut removed = None;
        self.replace(|list| {
            if let Some(i) = list
                .iter()
                .position(|r| r.id == id && r.is_instance(instance))
            {
                removed = Some(list.remove(i));
            }
        });
        if let Some(r) = removed {
            self.retire(&r);
        }
    }

    /// Closes what is left of a replica taken out of the list.
    fn retire(&self, r: &Replica) {
        r.state.store(GONE, SeqCst);
        r.pool.clear();
        r.raw.clear();
        r.closing.send_replace(true);
        tracing::info!(backend = %self.config.name, endpoint = %r.id, "endpoint removed");
    }

    /// Waits until a draining endpoint has no request in flight and then,
    /// once `grace` has passed, closes its tunnels; gives up on requests
    /// after `limit`. Returns what was still open when it was called.
    pub async fn drain(&self, id: &str, grace: Duration, limit: Duration) -> Option<DrainReport> {
        let replica = self.find(id)?;
        self.start_draining(&replica);
        let started = Instant::now();
        let report = DrainReport {
            requests: replica.active.load(SeqCst) - replica.tunnels.load(SeqCst),
            tunnels: replica.tunnels.load(SeqCst),
            waited_ms: 0,
        };
        let mut closed = false;
        loop {
            let active = replica.active.load(SeqCst);
            let tunnels = replica.tunnels.load(SeqCst);
            if active == 0 {
                break;
            }
            let waited = started.elapsed();
            if !closed && waited >= grace && active == tunnels {
                replica.closing.send_replace(true);
                closed = true;
            }
            if waited >= limit {
                tracing::warn!(backend = %self.config.name, endpoint = %id, "{active} still active after draining for {waited:?}");
                replica.closing.send_replace(true);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Some(DrainReport {
            waited_ms: duration_ms(started.elapsed()),
            ..report
        })
    }

    /// Chooses an endpoint, or none when nothing is in rotation. Allocates
    /// nothing: the candidates are walked as often as the policy needs.
    pub fn pick(&self, hints: &Hints<'_>) -> Option<Arc<Replica>> {
        let all = self.replicas();
        let now = self.now_ms();
        let excluded = |r: &Arc<Replica>| hints.exclude.iter().any(|x| Arc::ptr_eq(x, r));
        let strict = |r: &&Arc<Replica>| r.in_rotation(now) && !excluded(r);
        let n = all.iter().filter(strict).count();
        if n > 0 {
            return Some(Arc::clone(self.choose(all.iter().filter(strict), n, hints)));
        }
        // Everything is ejected: better to try an ejected endpoint than to
        // refuse outright (a passive ejection may be a false alarm).
        let loose = |r: &&Arc<Replica>| r.in_rotation(u64::MAX) && !excluded(r);
        let n = all.iter().filter(loose).count();
        (n > 0).then(|| Arc::clone(self.choose(all.iter().filter(loose), n, hints)))
    }

    /// Chooses among `n > 0` candidates.
    fn choose<'a, I>(&self, candidates: I, n: usize, hints: &Hints<'_>) -> &'a Arc<Replica>
    where
        I: Iterator<Item = &'a Arc<Replica>> + Clone,
    {
        let mut first = candidates.clone();
        if self.config.sticky_cookie.is_some() {
            if let Some(value) = hints.sticky {
                if let Some(r) = candidates.clone().find(|r| r.key == value) {
                    return r;
                }
            }
        }
        if n == 1 {
            if let Some(only) = first.next() {
                return only;
            }
        }
        let slow = self.config.slow_start;
        match self.config.policy {
            Policy::RoundRobin => self.round_robin(candidates, slow),
            Policy::LeastConn => self.least_conn(candidates, n, slow),
            Policy::PowerOfTwo => power_of_two(candidates, n, slow),
            Policy::Random => weighted_random(candidates, slow),
            Policy::SourceHash => match hints.client {
                Some(ip) => rendezvous(candidates, &ip_bytes(ip), slow),
                None => self.round_robin(candidates, slow),
            },
            Policy::UriHash => match hints.uri {
                Some(uri) => rendezvous(candidates, uri.as_bytes(), slow),
                None => self.round_robin(candidates, slow),
            },
        }
    }

    /// Smooth weighted round robin: each pick raises every candidate by its
    /// weight and lowers the chosen one by the total, which interleaves
    /// endpoints in proportion to their weights.
    fn round_robin<'a>(
        &self,
        mut candidates: impl Iterator<Item = &'a Arc<Replica>>,
        slow: Duration,
    ) -> &'a Arc<Replica> {
        let _serial = self.rr.lock();
        let mut total = 0i64;
        let Some(mut best) = candidates.next() else {
            unreachable!("choose is never called without candidates")
        };
        let w = (best.effective_weight(slow) * 100.0) as i64;
        let mut best_current = best.current.load(Relaxed) + w;
        best.current.store(best_current, Relaxed);
        total += w;
        for r in candidates {
            let w = (r.effective_weight(slow) * 100.0) as i64;
            let current = r.current.load(Relaxed) + w;
            r.current.store(current, Relaxed);
            total += w;
            if current > best_current {
                best_current = current;
                best = r;
            }
        }
        best.current.fetch_sub(total, Relaxed);
        best
    }

    fn least_conn<'a>(
        &self,
        candidates: impl Iterator<Item = &'a Arc<Replica>> + Clone,
        n: usize,
        slow: Duration,
    ) -> &'a Arc<Replica> {
        // Start at a rotating position so that ties are spread out.
        let start = self.rotor.fetch_add(1, Relaxed) % n;
        let rotated = candidates.clone().skip(start).chain(candidates.take(start));
        let mut best = None;
        let mut best_load = f64::INFINITY;
        for r in rotated {
            let load = (r.active.load(Relaxed) + 1) as f64 / r.effective_weight(slow);
            if best.is_none() || load < best_load {
                best_load = load;
                best = Some(r);
            }
        }
        best.unwrap_or_else(|| unreachable!("choose is never called without candidates"))
    }
}

fn power_of_two<'a>(
    candidates: impl Iterator<Item = &'a Arc<Replica>> + Clone,
    n: usize,
    slow: Duration,
) -> &'a Arc<Replica> {
    let a = fastrand::usize(..n);
    let mut b = fastrand::usize(..n - 1);
    if b >= a {
        b += 1;
    }
    let nth = |i: usize| {
        candidates
            .clone()
            .nth(i)
            .unwrap_or_else(|| unreachable!("{i} < {n} candidates"))
    };
    let (ra, rb) = (nth(a), nth(b));
    let cost = |r: &Replica| {
        // An endpoint with no sample yet looks as fast as the fastest.
        let latency = r.latency_ewma.load(Relaxed).max(1) as f64;
        latency * (r.active.load(Relaxed) + 1) as f64 / r.effective_weight(slow)
    };
    if cost(ra) <= cost(rb) {
        ra
    } else {
        rb
    }
}

fn weighted_random<'a>(
    candidates: impl Iterator<Item = &'a Arc<Replica>> + Clone,
    slow: Duration,
) -> &'a Arc<Replica> {
    let total: f64 = candidates.clone().map(|r| r.effective_weight(slow)).sum();
    let mut point = fastrand::f64() * total;
    let mut last = None;
    for r in candidates {
        point -= r.effective_weight(slow);
        if point < 0.0 {
            return r;
        }
        last = Some(r);
    }
    last.unwrap_or_else(|| unreachable!("choose is never called without candidates"))
}

/// Weighted rendezvous hashing: each key goes to the endpoint with the
/// highest score, so adding or removing one endpoint moves only the keys
/// that belong to it.
fn rendezvous<'a>(
    candidates: impl Iterator<Item = &'a Arc<Replica>>,
    key: &[u8],
    slow: Duration,
) -> &'a Arc<Replica> {
    let mut best = None;
    let mut best_score = f64::NEG_INFINITY;
    for r in candidates {
        let h = hash_of(&[key, r.id.as_bytes()]);
        // A uniform number in (0, 1), then -w / ln(u).
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -r.effective_weight(slow) / u.ln();
        if best.is_none() || score > best_score {
            best_score = score;
            best = Some(r);
        }
    }
    best.unwrap_or_else(|| unreachable!("choose is never called without candidates"))
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// What was still open on an endpoint when its draining began.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// Requests in flight.
    pub requests: usize,
    /// Open tunnels and TCP connections.
    pub tunnels: usize,
    /// How long draining took.
    pub waited_ms: u64,
}

/// A point-in-time view of one endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointStats {
    /// Its id.
    pub id: String,
    /// Its address.
    pub addr: SocketAddr,
    /// What provides it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// `up`, `starting` (not yet accepting connections), `draining`,
    /// `unhealthy` or `ejected`.
    pub state: String,
    /// Its configured weight.
    pub weight: u32,
    /// Requests in flight and open tunnels.
    pub active: usize,
    /// Requests and connections sent to it.
    pub requests: u64,
    /// Of those, the ones that failed.
    pub errors: u64,
    /// Median response latency, in milliseconds (an upper bound).
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile response latency, in milliseconds (an upper bound).
    pub latency_p99_ms: Option<f64>,
}

/// A point-in-time view of one backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStats {
    /// Its name.
    pub name: String,
    /// Its policy.
    pub policy: Policy,
    /// Requests or connections that found no endpoint.
    pub unavailable: u64,
    /// Its endpoints.
    pub endpoints: Vec<EndpointStats>,
}

impl BackendState {
    pub fn stats(&self) -> BackendStats {
        let now = self.now_ms();
        let endpoints = self
            .replicas()
            .iter()
            .map(|r| {
                let state = if r.is_draining() {
                    "draining"
                } else if r.is_probing() {
                    "starting"
                } else if !r.reported_healthy.load(Relaxed) || !r.checked_healthy.load(Relaxed) {
                    "unhealthy"
                } else if r.ejected_until.load(Relaxed) > now {
                    "ejected"
                } else {
                    "up"
                };
                EndpointStats {
                    id: r.id.clone(),
                    addr: r.addr,
                    instance: r.instance(),
                    state: state.to_string(),
                    weight: r.weight.load(Relaxed),
                    active: r.active.load(Relaxed),
                    requests: r.requests.load(Relaxed),
                    errors: r.errors.load(Relaxed),
                    latency_p50_ms: r.latency_quantile(0.5),
                    latency_p99_ms: r.latency_quantile(0.99),
                }
            })
            .collect();
        BackendStats {
            name: self.config.name.clone(),
            policy: self.config.policy,
            unavailable: self.unavailable.load(Relaxed),
            endpoints,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn backend(policy: Policy) -> BackendState {
        BackendState::new(Backend {
            policy,
            ..Backend::new("web")
        })
    }

    fn add(b: &BackendState, id: &str, port: u16, weight: u32) {
        b.apply(&Change::Add {
            backend: "web".into(),
            endpoint: Endpoint {
                id: id.into(),
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                weight,
                instance: None,
            },
        });
    }

    #[test]
    fn news_of_an_old_instance_leaves_the_new_one_at_its_address_alone() {
        let b = backend(Policy::RoundRobin);
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let endpoint = |instance: &str| Change::Add {
            backend: "web".into(),
            endpoint: Endpoint::new("a", addr).of_instance(instance),
        };
        b.apply(&endpoint("old"));
        b.apply(&Change::Drain {
            backend: "web".into(),
            id: "a".into(),
            instance: Some("old".into()),
        });
        // The address is given to a new container before the old one's
        // stop and removal are reported.
        b.apply(&endpoint("new"));
        b.apply(&Change::Drain {
            backend: "web".into(),
            id: "a".into(),
            instance: Some("old".into()),
        });
        b.apply(&Change::Remove {
            backend: "web".into(),
            id: "a".into(),
            instance: Some("old".into()),
        });
        let stats = b.stats();
        assert_eq!(stats.endpoints.len(), 1);
        assert_eq!(stats.endpoints[0].instance.as_deref(), Some("new"));
        assert_ne!(stats.endpoints[0].state, "draining");
        // A new instance at an address still held by an active one replaces it.
        b.apply(&endpoint("newer"));
        assert_eq!(b.stats().endpoints[0].instance.as_deref(), Some("newer"));
        // News naming no instance, or the right one, applies.
        b.apply(&Change::Remove {
            backend: "web".into(),
            id: "a".into(),
            instance: Some("newer".into()),
        });
        assert!(b.stats().endpoints.is_empty());
    }

    #[test]
    fn news_of_an_endpoint_found_without_instance_leaves_an_announced_one_alone() {
        let b = backend(Policy::RoundRobin);
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let remove = || Change::Remove {
            backend: "web".into(),
            id: "a".into(),
            instance: Some(String::new()),
        };
        // Found by DNS (no instance), then announced by rcompose.
        b.apply(&Change::Add {
            backend: "web".into(),
            endpoint: Endpoint::new("a", addr),
        });
        b.apply(&Change::Add {
            backend: "web".into(),
            endpoint: Endpoint::new("a", addr).of_instance("new"),
        });
        // DNS, judging from its earlier view, says the one it found is gone.
        b.apply(&remove());
        assert_eq!(b.stats().endpoints[0].instance.as_deref(), Some("new"));
        // What only DNS knows of goes.
        b.apply(&Change::Add {
            backend: "web".into(),
            endpoint: Endpoint::new("b", addr).of_instance(""),
        });
        assert_eq!(b.stats().endpoints.len(), 2);
        b.apply(&Change::Remove {
            backend: "web".into(),
            id: "b".into(),
            instance: Some(String::new()),
        });
        assert_eq!(b.stats().endpoints.len(), 1);
    }

    fn picks(b: &BackendState, n: usize, hints: impl Fn(usize) -> Hints<'static>) -> Vec<String> {
        (0..n)
            .map(|i| b.pick(&hints(i)).map(|r| r.id.clone()).unwrap_or_default())
            .collect()
    }

    fn count(ids: &[String], id: &str) -> usize {
        ids.iter().filter(|x| *x == id).count()
    }

    #[test]
    fn round_robin_interleaves_in_proportion_to_weight() {
        let b = backend(Policy::RoundRobin);
        add(&b, "a", 1, 1);
        add(&b, "b", 2, 1);
        assert_eq!(picks(&b, 4, |_| Hints::default()), ["a", "b", "a", "b"]);
        add(&b, "c", 3, 2);
        let got = picks(&b, 8, |_| Hints::default());
        assert_eq!(
            (count(&got, "a"), count(&got, "b"), count(&got, "c")),
            (2, 2, 4)
        );
        // Smooth: the heavy endpoint never gets more than two in a row.
        assert!(
            !got.windows(3).any(|w| w.iter().all(|x| x == "c")),
            "{got:?}"
        );
    }

    #[test]
    fn draining_unhealthy_and_zero_weight_endpoints_get_nothing() {
        let b = backend(Policy::RoundRobin);
        add(&b, "a", 1, 1);
        add(&b, "b", 2, 1);
        add(&b, "c", 3, 1);
        add(&b, "z", 4, 0);
        b.apply(&Change::Drain {
            backend: "web".into(),
            id: "a".into(),
            instance: None,
        });
        b.apply(&Change::Health {
            backend: "web".into(),
            id: "b".into(),
            healthy: false,
        });
        assert_eq!(picks(&b, 3, |_| Hints::default()), ["c", "c", "c"]);
        b.apply(&Change::Health {
            backend: "web".into(),
            id: "b".into(),
            healthy: true,
        });
        assert_eq!(count(&picks(&b, 4, |_| Hints::default()), "b"), 2);
        b.apply(&Change::Remove {
            backend: "web".into(),
            id: "c".into(),
            instance: None,
        });
        b.apply(&Change::Remove {
            backend: "web".into(),
            id: "b".into(),
            instance: None,
        });
        assert_eq!(b.pick(&Hints::default()).map(|r| r.id.clone()), None);
        assert_eq!(
            b.replicas().len(),
            2,
            "draining and zero-weight ones are still listed"
        );
    }

    #[test]
    fn a_drained_endpoint_that_is_added_again_returns_to_rotation() {
        let b = backend(Policy::RoundRobin);
        add(&b, "a", 1, 1);
        b.apply(&Change::Drain {
            backend: "web".into(),
            id: "a".into(),
            instance: None,
        });
        assert!(b.pick(&Hints::default()).is_none());
        add(&b, "a", 1, 1);
        assert_eq!(
            b.pick(&Hints::default()).map(|r| r.id.clone()),
            Some("a".into())
        );
    }

    #[test]
    fn feeders_adding_the_same_endpoint_at_once_make_one_replica() {
        let b = Arc::new(backend(Policy::RoundRobin));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || {
                    for i in 0..200u16 {
                        add(&b, &format!("e{}", i % 5), 1 + i % 5, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut ids: Vec<String> = b.replicas().iter().map(|r| r.id.clone()).collect();
        ids.sort();
        assert_eq!(ids, ["e0", "e1", "e2", "e3", "e4"]);
    }

    #[test]
    fn sync_replaces_the_whole_set() {
        let b = backend(Policy::RoundRobin);
        add(&b, "a", 1, 1);
        add(&b, "b", 2, 1);
        let old_b = b.find("b").unwrap();
        b.apply(&Change::Sync {
            backend: "web".into(),
            endpoints: vec![
                Endpoint::new("b", SocketAddr::from(([127, 0, 0, 1], 2))),
                Endpoint::new("c", SocketAddr::from(([127, 0, 0, 1], 3))),
            ],
        });
        let ids: Vec<String> = b.replicas().iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert!(
            Arc::ptr_eq(&old_b, &b.find("b").unwrap()),
            "an unchanged endpoint keeps its state"
        );
        assert!(!*b.find("b").unwrap().closing().borrow());
    }

    #[test]
    fn least_conn_prefers_the_least_loaded() {
        let b = backend(Policy::LeastConn);
        add(&b, "a", 1, 1);
        add(&b, "b", 2, 1);
        let a = b.find("a").unwrap();
        let _g1 = a.begin(false);
        let _g2 = a.begin(false);
        assert_eq!(picks(&b, 3, |_| Hints::default()), ["b", "b", "b"]);
        let bb = b.find("b").unwrap();
        let _g3 = bb.begin(false);
        let _g4 = bb.begin(false);
        let _g5 = bb.begin(false);
        assert_eq!(
            b.pick(&Hints::default()).map(|r| r.id.clone()),
            Some("a".into())
        );
    }

    #[test]
    fn power_of_two_avoids_the_slow_endpoint() {
        let b = backend(Policy::PowerOfTwo);
        add(&b, "fast", 1, 1);
        add(&b, "slow", 2, 1);
        b.find("fast")
            .unwrap()
            .observe_latency(Duration::from_millis(1));
        b.find("slow")
            .unwrap()
            .observe_latency(Duration::from_millis(50));
        let got = picks(&b, 100, |_| Hints::default());
        assert_eq!(
            count(&got, "fast"),
            100,
            "with two endpoints both are always drawn"
        );
    }

    #[test]
    fn random_spreads_by_weight() {
        let b = backend(Policy::Random);
        add(&b, "a", 1, 1);
        add(&b, "b", 2, 3);
        let got = picks(&b, 4000, |_| Hints::default());
        let a = count(&got, "a");
        assert!(
            (700..1300).contains(&a),
            "a got {a} of 4000, expected about 1000"
        );
    }

    #[test]
    fn hashing_is_stable_and_moves_few_keys_when_an_endpoint_goes() {
        let b = backend(Policy::UriHash);
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            add(&b, id, i as u16 + 1, 1);
        }
        let uris: Vec<String> = (0..400).map(|i| format!("/item/{i}")).collect();
        let before: Vec<String> = uris
            .iter()
            .map(|u| {
                b.pick(&Hints {
                    uri: Some(u),
                    ..Hints::default()
                })
                .unwrap()
                .id
                .clone()
            })
            .collect();
        let again: Vec<String> = uris
            .iter()
            .map(|u| {
                b.pick(&Hints {
                    uri: Some(u),
                    ..Hints::default()
                })
                .unwrap()
                .id
                .clone()
            })
            .collect();
        assert_eq!(before, again);
        for id in ["a", "b", "c", "d"] {
            let n = count(&before, id);
            assert!((60..140).contains(&n), "{id} got {n} of 400");
        }
        b.apply(&Change::Remove {
            backend: "web".into(),
            id: "d".into(),
            instance: None,
        });
        let after: Vec<String> = uris
            .iter()
            .map(|u| {
                b.pick(&Hints {
                    uri: Some(u),
                    ..Hints::default()
                })
                .unwrap()
                .id
                .clone()
            })
            .collect();
        let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
        assert_eq!(moved, count(&before, "d"), "only d's keys move");
    }

    #[test]
    fn source_hash_pins_a_client() {
        let b = backend(Policy::SourceHash);
        add(&b, "a", 1, 1);
        add(&b, "b", 2, 1);
        add(&b, "c", 3, 1);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let first = b
            .pick(&Hints {
                client: Some(ip),
                ..Hints::default()
            })
            .unwrap()
            .id
            .clone();
        for _ in 0..20 {
            assert_eq!(
                b.pick(&Hints {
                    client: Some(ip),
                    ..Hints::default()
                })
                .unwrap()
                .id,
                first
            );
        }
    }

    #[test]
    fn a_sticky_cookie_wins_while_its_endpoint_is_in_rotation() {
        let b = BackendState::new(Backend {
            sticky_cookie: Some("SRV".into()),
            ..Backend::new("web")
        });
        add(&b, "a", 1, 1);
        add(&b, "b", 2, 1);
        let key = b.find("b").unwrap().key.clone();
        for _ in 0..4 {
            let got = b
                .pick(&Hints {
                    sticky: Some(&key),
                    ..Hints::default()
                })
                .unwrap();
            assert_eq!(got.id, "b");
        }
        b.apply(&Change::Drain {
            backend: "web".into(),
            id: "b".into(),
            instance: None,
        });
        assert_eq!(
            b.pick(&Hints {
                sticky: Some(&key),
                ..Hints::default()
            })
            .unwrap()
            .id,
            "a"
        );
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_forgives() {
        let b = BackendState::new(Backend {
            eject_after: 2,
            eject_for: Duration::from_secs(60),
            ..Backend::new("web")
        });
        add(&b, "a", 1, 1);
        add(&b, "b", 2, 1);
        let a = b.find("a").unwrap();
        a.failed(&b);
        a.succeeded();
        a.failed(&b);
        assert_eq!(
            count(&picks(&b, 4, |_| Hints::default()), "a"),
            2,
            "one failure in a row"
        );
        a.failed(&b);
        assert_eq!(
            count(&picks(&b, 4, |_| Hints::default()), "a"),
            0,
            "ejected"
        );
        assert_eq!(b.stats().endpoints[0].state, "ejected");
        let bb = b.find("b").unwrap();
        bb.failed(&b);
        bb.failed(&b);
        assert!(
            b.pick(&Hints::default()).is_some(),
            "all ejected: still try"
        );
    }

    #[test]
    fn slow_start_gives_a_new_endpoint_a_small_share() {
        let b = BackendState::new(Backend {
            slow_start: Duration::from_secs(3600),
            ..Backend::new("web")
        });
        add(&b, "old", 1, 1);
        // Pretend "old" has been there for the whole slow start.
        b.replace(|list| {
            let old = Replica {
                added: Instant::now() - Duration::from_secs(7200),
                ..Replica::new(&Endpoint::new("old", SocketAddr::from(([127, 0, 0, 1], 1))))
            };
            list[0] = Arc::new(old);
        });
        add(&b, "new", 2, 1);
        let got = picks(&b, 200, |_| Hints::default());
        let new = count(&got, "new");
        assert!((1..=20).contains(&new), "new got {new} of 200");
    }

    #[test]
    fn excluded_endpoints_are_skipped() {
        let b = backend(Policy::RoundRobin);
        add(&b, "a", 1, 1);
        add(&b, "b", 2, 1);
        let a = b.find("a").unwrap();
        let exclude = [a];
        for _ in 0..3 {
            assert_eq!(
                b.pick(&Hints {
                    exclude: &exclude,
                    ..Hints::default()
                })
                .unwrap()
                .id,
                "b"
            );
        }
    }

    #[tokio::test]
    async fn draining_waits_for_requests_and_closes_tunnels_after_the_grace() {
        let b = backend(Policy::RoundRobin);
        add(&b, "a", 1, 1);
        let a = b.find("a").unwrap();
        let request = a.begin(false);
        let tunnel = a.begin(true);
        let mut closing = a.closing();
        let released = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(request);
            closing.wait_for(|c| *c).await.unwrap();
            drop(tunnel);
        });
        let report = b
            .drain("a", Duration::from_millis(100), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!((report.requests, report.tunnels), (1, 1));
        assert!(report.waited_ms >= 100, "{report:?}");
        released.await.unwrap();
        assert_eq!(b.drain("nope", Duration::ZERO, Duration::ZERO).await, None);
    }

    #[test]
    fn stats_report_quantiles_from_the_histogram() {
        let b = backend(Policy::RoundRobin);
        add(&b, "a", 1, 1);
        let a = b.find("a").unwrap();
        for _ in 0..98 {
            a.observe_latency(Duration::from_micros(900));
        }
        a.observe_latency(Duration::from_millis(40));
        a.observe_latency(Duration::from_millis(40));
        let s = &b.stats().endpoints[0];
        assert_eq!(s.latency_p50_ms, Some(1.024));
        assert_eq!(s.latency_p99_ms, Some(65.536));
    }
}
