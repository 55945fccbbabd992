//! What the balancer is asked to do: its listeners, backends, and policies.
//!
//! The configuration is plain data (serializable, so that a process can hand
//! it to another) and carries no endpoints: those arrive as [`Change`]s.
//!
//! [`Change`]: crate::Change

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything a balancer serves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listeners.
    #[serde(default)]
    pub frontends: Vec<Frontend>,
    /// The backends the frontends route to, by name.
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// The statistics listener; none by default.
    #[serde(default)]
    pub stats: Option<Stats>,
    /// The control listener, through which endpoint changes arrive from
    /// another process; none by default (changes then come through a
    /// [`Handle`](crate::Handle)).
    #[serde(default)]
    pub control: Option<Control>,
    /// Timeouts shared by every frontend.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Most client connections open at once, over all frontends; further
    /// connections wait in the listen queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest request head (request line and headers) accepted, in bytes;
    /// a larger one is answered with 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// How long a draining endpoint's tunnels (WebSocket, TCP) may go on
    /// before they are closed.
    #[serde(default = "default_drain_grace", with = "millis")]
    pub drain_grace: Duration,
    /// Peers (addresses or CIDR blocks) trusted to say what the original
    /// request was: their `X-Forwarded-Host`, `-Port` and `-Proto` are
    /// kept. Everyone else's are replaced. `X-Forwarded-For` always keeps
    /// the client's chain and adds the peer.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
}

/// The same defaults as an empty JSON object gets (a derived `Default`
/// would give 0 for the limits: one connection at a time, no h2c header).
impl Default for Config {
    fn default() -> Self {
        Config {
            frontends: Vec::new(),
            backends: Vec::new(),
            stats: None,
            control: None,
            timeouts: Timeouts::default(),
            max_connections: default_max_connections(),
            max_header_bytes: default_max_header_bytes(),
            drain_grace: default_drain_grace(),
            trusted_proxies: Vec::new(),
        }
    }
}

fn default_max_connections() -> usize {
    4096
}

fn default_max_header_bytes() -> usize {
    16 * 1024
}

fn default_drain_grace() -> Duration {
    Duration::from_secs(10)
}

/// A block of addresses: `10.0.0.0/8`, `::1/128`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4 address in its IPv6-mapped
    /// form too).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One listening socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frontend {
    /// A name for logs and statistics.
    pub name: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// HTTP (L7) or TCP (L4).
    #[serde(default)]
    pub mode: Mode,
    /// Routing rules, tried in order (HTTP only).
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Where requests go that no route matches (for TCP: every connection).
    /// Without one, an unmatched HTTP request gets 503.
    #[serde(default)]
    pub default_backend: Option<String>,
    /// TLS on this listener (HTTP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// Answer every request with a redirect to the same URL in https (on
    /// this port): HTTP only, for a listener without TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_https: Option<u16>,
}

/// TLS on a listener: the certificates offered, chosen by the name the
/// client asks for (SNI); the first one for any other name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificates, the default first.
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    /// Directories whose `.pem` and `.crt` files are each a chain and its
    /// key (read in name order, after `certificates`).
    #[serde(default)]
    pub directories: Vec<std::path::PathBuf>,
}

/// One certificate chain and its private key, in PEM.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// The chain and the key, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    /// Or a file with the chain (and the key, unless `key` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<std::path::PathBuf>,
    /// A file with the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<std::path::PathBuf>,
}

/// The protocol of a frontend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// HTTP/1.1 and h2c, proxied request by request.
    #[default]
    Http,
    /// Any TCP protocol, proxied connection by connection.
    Tcp,
}

/// A routing rule: every given condition must hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// A pattern for the request's host (its port left out), compared
    /// without case; `*` matches any run of characters (`*.example.com`).
    #[serde(default)]
    pub host: Option<String>,
    /// A pattern for the request's path (its query left out), compared
    /// without case; `*` matches any run of characters, so `/api/*` is a
    /// prefix and `/api` only that path.
    #[serde(default)]
    pub path: Option<String>,
    /// The backend the matching requests go to.
    pub backend: String,
}

/// A set of interchangeable endpoints and how to choose among them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// The name that routes and endpoint changes use.
    pub name: String,
    /// How an endpoint is chosen.
    #[serde(default)]
    pub policy: Policy,
    /// Sticky sessions: the cookie that pins a client to an endpoint.
    #[serde(default)]
    pub sticky_cookie: Option<String>,
    /// Active health checks; none by default.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Consecutive failures (refused connection, reset, timeout) after which
    /// an endpoint is taken out of rotation for `eject_for`; 0 never ejects.
    #[serde(default = "default_eject_after")]
    pub eject_after: u32,
    /// How long a passively ejected endpoint stays out of rotation.
    #[serde(default = "default_eject_for", with = "millis")]
    pub eject_for: Duration,
    /// A new endpoint's share of traffic grows linearly to its full weight
    /// over this time; zero gives it full weight at once.
    #[serde(default, with = "millis")]
    pub slow_start: Duration,
}

fn default_eject_after() -> u32 {
    3
}

fn default_eject_for() -> Duration {
    Duration::from_secs(5)
}

impl Backend {
    /// A backend with the default policy and no checks.
    pub fn new(name: impl Into<String>) -> Self {
        Backend {
            name: name.into(),
            policy: Policy::default(),
            sticky_cookie: None,
            health_check: None,
            eject_after: default_eject_after(),
            eject_for: default_eject_for(),
            slow_start: Duration::ZERO,
        }
    }
}

/// How an endpoint is chosen for a request or connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// In turn, in proportion to the weights (smooth weighted round robin).
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests in flight per unit of weight.
    LeastConn,
    /// Of two endpoints drawn at random, the one with the lower latency
    /// estimate times load.
    PowerOfTwo,
    /// At random, in proportion to the weights.
    Random,
    /// The same client address to the same endpoint while the set holds.
    SourceHash,
    /// The same path and query to the same endpoint while the set holds.
    UriHash,
}

/// An active health check, run against every endpoint of a backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// A TCP connection, or an HTTP request when a path is given.
    #[serde(default)]
    pub http_path: Option<String>,
    /// The status an HTTP check expects; any 2xx or 3xx when none is given.
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// Time between checks.
    #[serde(default = "default_check_interval", with = "millis")]
    pub interval: Duration,
    /// How long one check may take.
    #[serde(default = "default_check_timeout", with = "millis")]
    pub timeout: Duration,
    /// Consecutive successes that bring a failed endpoint back.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take an endpoint out.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            http_path: None,
            expect_status: None,
            interval: default_check_interval(),
            timeout: default_check_timeout(),
            rise: default_rise(),
            fall: default_fall(),
        }
    }
}

fn default_check_interval() -> Duration {
    Duration::from_secs(2)
}

fn default_check_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_rise() -> u32 {
    2
}

fn default_fall() -> u32 {
    3
}

/// The statistics listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// Where to listen.
    pub listen: SocketAddr,
    /// `user:password` for HTTP basic authentication; none lets anyone in.
    #[serde(default)]
    pub auth: Option<String>,
}

/// The control listener: a Unix socket, or a TCP address with a token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// A Unix socket to listen on (made anew, readable and writable by
    /// all: the permissions of the directories above it decide who can
    /// reach it). No token is needed there.
    #[serde(default)]
    pub socket: Option<std::path::PathBuf>,
    /// A TCP address to listen on instead; every request must then carry
    /// `token`.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The bearer token: required on TCP (at least
    /// [`MIN_TOKEN_LEN`] characters), checked on the socket too when given.
    #[serde(default)]
    pub token: Option<String>,
}

/// The shortest control token accepted on a TCP control listener.
pub const MIN_TOKEN_LEN: usize = 32;

/// Timeouts; each bounds one wait.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Connecting to an endpoint.
    #[serde(with = "millis")]
    pub connect: Duration,
    /// Reading a request's head from a client (against slowloris).
    #[serde(with = "millis")]
    pub client_header: Duration,
    /// A client connection with nothing to send or receive.
    #[serde(with = "millis")]
    pub idle: Duration,
    /// An endpoint's response head, from the request being sent.
    #[serde(with = "millis")]
    pub server: Duration,
    /// A TCP connection or tunnel with no traffic either way.
    #[serde(with = "millis")]
    pub tunnel: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            client_header: Duration::from_secs(10),
            idle: Duration::from_secs(50),
            server: Duration::from_secs(50),
            tunnel: Duration::from_secs(3600),
        }
    }
}

impl Default for Frontend {
    fn default() -> Self {
        Frontend {
            name: String::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            mode: Mode::Http,
            routes: Vec::new(),
            default_backend: None,
            tls: None,
            redirect_https: None,
        }
    }
}

/// A problem with a configuration, found before anything listens.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A route or default names a backend that is not defined.
    #[error("frontend {frontend:?} routes to undefined backend {backend:?}")]
    UndefinedBackend {
        /// The frontend.
        frontend: String,
        /// The missing backend.
        backend: String,
    },
    /// Two backends share a name.
    #[error("backend {0:?} is defined twice")]
    DuplicateBackend(String),
    /// TLS or a redirect to https on a TCP frontend, or both on one.
    #[error("frontend {0:?}: TLS and redirects to https are for HTTP listeners, one or the other")]
    TlsMode(String),
    /// A TCP frontend without a default backend, or with routes.
    #[error("TCP frontend {0:?} needs a default backend and no routes")]
    TcpRouting(String),
    /// Two listeners on one address.
    #[error("{0} is listened on twice")]
    DuplicateListen(SocketAddr),
    /// A control listener with neither or both of a socket and an address,
    /// or on TCP without a long enough token.
    #[error("the control listener needs a socket, or an address and a token of at least {MIN_TOKEN_LEN} characters")]
    Control,
}

impl Config {
    /// Checks that every name resolves and no address is taken twice.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for b in &self.backends {
            if !names.insert(b.name.as_str()) {
                return Err(ConfigError::DuplicateBackend(b.name.clone()));
            }
        }
        let mut addrs = std::collections::HashSet::new();
        let listens = self
            .frontends
            .iter()
            .map(|f| f.listen)
            .chain(self.stats.iter().map(|s| s.listen))
            .chain(self.control.iter().filter_map(|c| c.listen));
        // Port 0 asks for any free port: those never clash.
        for addr in listens.filter(|a| a.port() != 0) {
            if !addrs.insert(addr) {
                return Err(ConfigError::DuplicateListen(addr));
            }
        }
        if let Some(c) = &self.control {
            let token_ok = c.token.as_ref().is_some_and(|t| t.len() >= MIN_TOKEN_LEN);
            match (&c.socket, &c.listen) {
                (Some(_), None) => {}
                (None, Some(_)) if token_ok => {}
                _ => return Err(ConfigError::Control),
            }
        }
        for f in &self.frontends {
            let https = f.tls.is_some() || f.redirect_https.is_some();
            if (f.mode == Mode::Tcp && https) || (f.tls.is_some() && f.redirect_https.is_some()) {
                return Err(ConfigError::TlsMode(f.name.clone()));
            }
            if f.mode == Mode::Tcp && (f.default_backend.is_none() || !f.routes.is_empty()) {
                return Err(ConfigError::TcpRouting(f.name.clone()));
            }
            let targets = f
                .routes
                .iter()
                .map(|r| &r.backend)
                .chain(f.default_backend.as_ref());
            for t in targets {
                if !names.contains(t.as_str()) {
                    return Err(ConfigError::UndefinedBackend {
                        frontend: f.name.clone(),
                        backend: t.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Durations as whole milliseconds, which every JSON reader understands.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn http(name: &str, port: u16, default: Option<&str>) -> Frontend {
        Frontend {
            name: name.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            default_backend: default.map(String::from),
            ..Frontend::default()
        }
    }

    #[test]
    fn a_config_reads_back_what_it_wrote_with_defaults_filled_in() {
        let json = r#"{"frontends":[{"name":"web","listen":"0.0.0.0:80"}],
                       "backends":[{"name":"php","slow_start":1500}]}"#;
        let config: Config = serde_json::from_str(json).unwrap();
        assert_eq!(config.backends[0].slow_start, Duration::from_millis(1500));
        assert_eq!(config.backends[0].eject_after, 3);
        assert_eq!(config.timeouts, Timeouts::default());
        assert_eq!(config.max_header_bytes, 16 * 1024);
        let again: Config = serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<Config>(r#"{"backend":[]}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `backend`"), "{err}");
    }

    #[test]
    fn validation_finds_dangling_names_and_clashes() {
        let mut config = Config {
            frontends: vec![http("web", 80, Some("php"))],
            backends: vec![Backend::new("api")],
            ..Config::default()
        };
        assert_eq!(
            config.validate(),
            Err(ConfigError::UndefinedBackend {
                frontend: "web".into(),
                backend: "php".into()
            })
        );
        config.backends.push(Backend::new("php"));
        assert_eq!(config.validate(), Ok(()));
        config.frontends.push(http("again", 80, None));
        assert!(matches!(
            config.validate(),
            Err(ConfigError::DuplicateListen(_))
        ));
        config.frontends.pop();
        config.backends.push(Backend::new("php"));
        assert_eq!(
            config.validate(),
            Err(ConfigError::DuplicateBackend("php".into()))
        );
        config.backends.pop();
        config.frontends.push(Frontend {
            mode: Mode::Tcp,
            ..http("redis", 6379, None)
        });
        assert_eq!(
            config.validate(),
            Err(ConfigError::TcpRouting("redis".into()))
        );
    }
}
