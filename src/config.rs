//! Configuration: `RawConfig` (serde, unknown keys rejected) -> `Config` (validated, typed).
//! Parses from `&str`; reading files is the caller's job. Imports no socket code.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::geo::{Country, GeoOverride};

/// Proxy listener when the config names none: loopback only, the port squid made familiar.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3128";
/// Admin listener (`/metrics`, `/healthz`, `/readyz`): Prometheus' exporter port range.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";
/// DNS answers slower than this fail the request (504) rather than hold a connection.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// Slowloris guard: a client must send its complete request head within this time.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client sending a request body must make progress within this long.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// TCP (and TLS) connect to an upstream must finish within this time.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An upstream must start its response within this time after the request was sent.
pub const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// A CONNECT tunnel with no bytes in either direction for this long is closed.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Idle pooled upstream connections are dropped after this long.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// On SIGTERM, in-flight requests get this long to finish before they are cut.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Audit log folder when the config names none (relative to the working directory).
pub const DEFAULT_AUDIT_DIR: &str = "sima-audit";
/// Records arriving within this window share one fsync; a blocked client waits at most
/// this long plus the fsync for its record to be on disk.
pub const DEFAULT_AUDIT_FSYNC_DELAY: Duration = Duration::from_millis(5);
/// Rotated audit files are kept this long: CERT-In's 2022 directions ask for 180 days.
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 180;
/// Audit files rotate at this size (and at each UTC day).
pub const DEFAULT_AUDIT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Records waiting for the writer; beyond it a record fails (and its flow fails closed).
pub const DEFAULT_AUDIT_QUEUE: usize = 4096;
/// Concurrent client connections; the excess is refused rather than queued without bound.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Request head size limit (request line + headers), as nginx's large_client_header_buffers.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Number of request headers accepted.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default most bytes of one body inspected (see `Config::inspect_max_body_bytes`).
pub const DEFAULT_INSPECT_MAX_BODY_BYTES: usize = 16 << 20;
/// Idle pooled connections kept per upstream address.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 1024;

/// Errors found while loading the configuration; every problem is listed, not just the first.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path that failed.
        path: PathBuf,
        /// The underlying IO error.
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax or an unknown/mistyped key.
    #[error("{file}: {message}")]
    Syntax {
        /// File name (or `<inline>`).
        file: String,
        /// serde's message, with line and column.
        message: String,
    },
    /// Values that parse but are invalid; one line each.
    #[error("{file}: invalid configuration:\n  - {}", .problems.join("\n  - "))]
    Invalid {
        /// File name (or `<inline>`).
        file: String,
        /// One entry per problem, each naming the key and the value.
        problems: Vec<String>,
    },
}

// === raw (serde) types ===

/// The YAML file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    listen: Option<String>,
    admin_listen: Option<String>,
    policy: Option<OneOrMany>,
    #[serde(default)]
    packs: Vec<String>,
    #[serde(default)]
    geo: RawGeo,
    #[serde(default)]
    resolver: RawResolver,
    #[serde(default)]
    routes: Vec<RawRoute>,
    forwarded: Option<ForwardedMode>,
    log_format: Option<LogFormat>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    inspect: RawInspect,
    #[serde(default)]
    audit: RawAudit,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    dir: Option<PathBuf>,
    key_file: Option<PathBuf>,
    max_file_bytes: Option<u64>,
    fsync_delay: Option<String>,
    retention_days: Option<u32>,
    queue: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInspect {
    always: Option<bool>,
    max_body_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGeo {
    database: Option<PathBuf>,
    #[serde(default)]
    overrides: Vec<RawOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    cidr: String,
    country: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResolver {
    nameservers: Option<Vec<String>>,
    #[serde(default)]
    static_hosts: BTreeMap<String, Vec<String>>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    prefix: Option<String>,
    host: Option<String>,
    upstream: String,
    upstream_host: Option<String>,
    sni: Option<String>,
    ca_bundle: Option<PathBuf>,
    forwarded: Option<ForwardedMode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<usize>,
    #[serde(default)]
    max_requests_per_group: BTreeMap<String, usize>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    pool_max_idle_per_host: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    header_read: Option<String>,
    client_idle: Option<String>,
    upstream_connect: Option<String>,
    upstream_response: Option<String>,
    tunnel_idle: Option<String>,
    pool_idle: Option<String>,
    drain: Option<String>,
}

// === validated types ===

/// Which client-address headers Sima adds to requests it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedMode {
    /// Add nothing: the client's internal address does not leave the network (default).
    #[default]
    None,
    /// Append the client address to `X-Forwarded-For`.
    XForwardedFor,
    /// Append an RFC 7239 `Forwarded: for=...` element.
    Forwarded,
    /// Both headers.
    Both,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable key=value lines (default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Geolocation settings.
#[derive(Debug, Clone, Default)]
pub struct GeoConfig {
    /// mmdb file; `None` uses the embedded database.
    pub database: Option<PathBuf>,
    /// Declared networks, checked before the database.
    pub overrides: Vec<GeoOverride>,
}

/// Resolver settings.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// Nameservers to ask; `None` reads the system configuration (`/etc/resolv.conf`).
    pub nameservers: Option<Vec<SocketAddr>>,
    /// Names answered from config, like `/etc/hosts`; lower-case, no trailing dot.
    pub static_hosts: HashMap<String, Vec<IpAddr>>,
    /// Per-lookup timeout.
    pub timeout: Duration,
}

/// One reverse-proxy route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Route name, used in logs and errors.
    pub name: String,
    /// Path prefix matched against the request path (`/partner/`).
    pub prefix: Option<String>,
    /// `Host` header matched (lower-case, no port).
    pub host: Option<String>,
    /// `http` or `https`.
    pub upstream_tls: bool,
    /// Upstream host (name or IP literal), lower-case.
    pub upstream_host: String,
    /// Upstream port.
    pub upstream_port: u16,
    /// Base path prepended to the rest of the request path (no trailing slash).
    pub upstream_base_path: String,
    /// `Host` header to send instead of the upstream host.
    pub host_header: Option<String>,
    /// TLS server name to send and verify instead of the upstream host.
    pub sni: Option<String>,
    /// Extra CA bundle (PEM) trusted for this route, besides the webpki roots.
    pub ca_bundle: Option<PathBuf>,
    /// Client-address headers for this route.
    pub forwarded: ForwardedMode,
}

/// Size limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent client connections.
    pub max_connections: usize,
    /// Request head size.
    pub max_header_bytes: usize,
    /// Header count.
    pub max_headers: usize,
    /// Idle pooled upstream connections per address.
    pub pool_max_idle_per_host: usize,
    /// Concurrent requests (tunnels included) per client group; the excess gets 503.
    pub max_requests_per_group: HashMap<String, usize>,
}

/// Every wait Sima makes has one of these.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Request head must arrive within this.
    pub header_read: Duration,
    /// A client sending a body must make progress within this (idle keep-alive
    /// connections are closed by `header_read`).
    pub client_idle: Duration,
    /// Upstream TCP + TLS connect.
    pub upstream_connect: Duration,
    /// Upstream response head after the request was sent.
    pub upstream_response: Duration,
    /// CONNECT tunnel or WebSocket without traffic.
    pub tunnel_idle: Duration,
    /// Idle pooled upstream connection.
    pub pool_idle: Duration,
    /// Shutdown drain.
    pub drain: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Policy files, in precedence order.
    pub policy_paths: Vec<PathBuf>,
    /// Embedded packs enabled by name, after the files; with no files and no packs the
    /// embedded default pack applies.
    pub packs: Vec<String>,
    /// Geolocation.
    pub geo: GeoConfig,
    /// DNS.
    pub resolver: ResolverConfig,
    /// Reverse-proxy routes, in match order.
    pub routes: Vec<RouteConfig>,
    /// Client-address headers on forward-proxied requests.
    pub forwarded: ForwardedMode,
    /// Log format.
    pub log_format: LogFormat,
    /// Size limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Inspect every request (findings logged), not only those a rule about data could
    /// decide. Verdicts are the same either way.
    pub inspect_always: bool,
    /// Most bytes of one request body inspected (decoded bytes, for a content-encoded
    /// body); a larger body is uninspectable.
    pub inspect_max_body_bytes: usize,
    /// Audit log.
    pub audit: AuditSettings,
}

/// Where and how the audit log is written.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Folder of `audit-YYYYMMDD-NNN.jsonl` files.
    pub dir: PathBuf,
    /// HMAC key for fingerprints (created 0600 on first use).
    pub key_file: PathBuf,
    /// Rotation size.
    pub max_file_bytes: u64,
    /// fsync batching window.
    pub fsync_delay: Duration,
    /// Retention of rotated files, days (0 keeps everything).
    pub retention_days: u32,
    /// Writer queue.
    pub queue: usize,
}

// === impl Config ===

impl Default for Config {
    fn default() -> Self {
        // The embedded defaults are valid by construction; the unit test below proves it.
        Config::from_yaml("{}", "<defaults>", Path::new("."))
            .unwrap_or_else(|_| unreachable_defaults())
    }
}

#[cold]
fn unreachable_defaults() -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 3128)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        policy_paths: Vec::new(),
        packs: Vec::new(),
        geo: GeoConfig::default(),
        resolver: ResolverConfig {
            nameservers: None,
            static_hosts: HashMap::new(),
            timeout: DEFAULT_DNS_TIMEOUT,
        },
        routes: Vec::new(),
        forwarded: ForwardedMode::None,
        log_format: LogFormat::Text,
        limits: Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
            max_requests_per_group: HashMap::new(),
        },
        timeouts: Timeouts {
            header_read: DEFAULT_HEADER_READ_TIMEOUT,
            client_idle: DEFAULT_CLIENT_IDLE_TIMEOUT,
            upstream_connect: DEFAULT_UPSTREAM_CONNECT_TIMEOUT,
            upstream_response: DEFAULT_UPSTREAM_RESPONSE_TIMEOUT,
            tunnel_idle: DEFAULT_TUNNEL_IDLE_TIMEOUT,
            pool_idle: DEFAULT_POOL_IDLE_TIMEOUT,
            drain: DEFAULT_DRAIN_TIMEOUT,
        },
        inspect_always: false,
        inspect_max_body_bytes: DEFAULT_INSPECT_MAX_BODY_BYTES,
        audit: AuditSettings {
            dir: PathBuf::from(DEFAULT_AUDIT_DIR),
            key_file: PathBuf::from(format!("{DEFAULT_AUDIT_DIR}.key")),
            max_file_bytes: DEFAULT_AUDIT_MAX_FILE_BYTES,
            fsync_delay: DEFAULT_AUDIT_FSYNC_DELAY,
            retention_days: DEFAULT_AUDIT_RETENTION_DAYS,
            queue: DEFAULT_AUDIT_QUEUE,
        },
    }
}

impl Config {
    /// Reads and validates a config file; relative paths inside it are relative to its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_yaml(&text, &path.display().to_string(), base)
    }

    /// Parses and validates YAML text. `file` names the source in errors; `base` resolves
    /// relative paths.
    pub fn from_yaml(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax {
                file: file.to_owned(),
                message: e.to_string(),
            })?
        };
        let mut problems = Vec::new();
        let config = raw.validate(base, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                file: file.to_owned(),
                problems,
            })
        }
    }
}

impl RawConfig {
    fn validate(self, base: &Path, problems: &mut Vec<String>) -> Config {
        let mut out = unreachable_defaults();
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

        let listen = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        out.listen = socket_addr("listen", listen, problems).unwrap_or(out.listen);
        let admin = self.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
        out.admin_listen = socket_addr("admin_listen", admin, problems).unwrap_or(out.admin_listen);
        if out.listen == out.admin_listen && out.listen.port() != 0 {
            problems.push(format!(
                "listen and admin_listen are both {}: the admin listener never shares a port with proxied traffic",
                out.listen
            ));
        }

        out.policy_paths = match self.policy {
            None => Vec::new(),
            Some(OneOrMany::One(p)) => vec![abs(p)],
            Some(OneOrMany::Many(v)) => v.into_iter().map(abs).collect(),
        };

        out.packs = self.packs;
        out.geo.database = self.geo.database.map(abs);
        for (i, o) in self.geo.overrides.iter().enumerate() {
            let net = match o.cidr.parse::<IpNet>() {
                Ok(n) => Some(n.trunc()),
                Err(_) => match o.cidr.parse::<IpAddr>() {
                    Ok(ip) => Some(IpNet::from(ip)),
                    Err(_) => {
                        problems.push(format!(
                            "geo.overrides[{i}].cidr: `{}` is not a network (write e.g. 10.20.0.0/16 or 2001:db8::/32)",
                            o.cidr
                        ));
                        None
                    }
                },
            };
            let country = match Country::parse(&o.country) {
                Some(c) => Some(c),
                None => {
                    problems.push(format!(
                        "geo.overrides[{i}].country: `{}` is not an ISO 3166-1 alpha-2 code (write e.g. IN)",
                        o.country
                    ));
                    None
                }
            };
            if let (Some(net), Some(country)) = (net, country) {
                out.geo.overrides.push(GeoOverride { net, country });
            }
        }

        if let Some(ns) = self.resolver.nameservers {
            let mut list = Vec::new();
            for (i, s) in ns.iter().enumerate() {
                let parsed = s
                    .parse::<SocketAddr>()
                    .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
                match parsed {
                    Ok(a) => list.push(a),
                    Err(_) => problems.push(format!(
                        "resolver.nameservers[{i}]: `{s}` is not an IP address or IP:port"
                    )),
                }
            }
            out.resolver.nameservers = Some(list);
        }
        for (name, ips) in self.resolver.static_hosts {
            let key = name.trim_end_matches('.').to_ascii_lowercase();
            let mut addrs = Vec::new();
            for ip in &ips {
                match ip.parse::<IpAddr>() {
                    Ok(a) => addrs.push(a),
                    Err(_) => problems.push(format!(
                        "resolver.static_hosts.{name}: `{ip}` is not an IP address"
                    )),
                }
            }
            if ips.is_empty() {
                problems.push(format!(
                    "resolver.static_hosts.{name}: list at least one address"
                ));
            }
            out.resolver.static_hosts.insert(key, addrs);
        }
        if let Some(t) = self.resolver.timeout {
            out.resolver.timeout =
                duration("resolver.timeout", &t, problems).unwrap_or(DEFAULT_DNS_TIMEOUT);
        }

        out.forwarded = self.forwarded.unwrap_or_default();
        out.log_format = self.log_format.unwrap_or_default();

        for (i, r) in self.routes.into_iter().enumerate() {
            if let Some(route) = validate_route(i, r, &abs, out.forwarded, problems) {
                out.routes.push(route);
            }
        }

        let l = self.limits;
        out.limits.max_connections = positive(
            "limits.max_connections",
            l.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            problems,
        );
        out.limits.max_header_bytes = positive(
            "limits.max_header_bytes",
            l.max_header_bytes,
            DEFAULT_MAX_HEADER_BYTES,
            problems,
        );
        if out.limits.max_header_bytes < 8192 {
            problems.push(format!(
                "limits.max_header_bytes: {} is below hyper's minimum of 8192",
                out.limits.max_header_bytes
            ));
        }
        out.limits.max_headers = positive(
            "limits.max_headers",
            l.max_headers,
            DEFAULT_MAX_HEADERS,
            problems,
        );
        out.limits.pool_max_idle_per_host = l
            .pool_max_idle_per_host
            .unwrap_or(DEFAULT_POOL_MAX_IDLE_PER_HOST);
        for (group, n) in l.max_requests_per_group {
            if n == 0 {
                problems.push(format!(
                    "limits.max_requests_per_group.{group}: must be at least 1"
                ));
            }
            out.limits.max_requests_per_group.insert(group, n);
        }

        let t = self.timeouts;
        let mut set = |key: &str, v: Option<String>, slot: &mut Duration| {
            if let Some(v) = v {
                if let Some(d) = duration(key, &v, problems) {
                    *slot = d;
                }
            }
        };
        set(
            "timeouts.header_read",
            t.header_read,
            &mut out.timeouts.header_read,
        );
        set(
            "timeouts.client_idle",
            t.client_idle,
            &mut out.timeouts.client_idle,
        );
        set(
            "timeouts.upstream_connect",
            t.upstream_connect,
            &mut out.timeouts.upstream_connect,
        );
        set(
            "timeouts.upstream_response",
            t.upstream_response,
            &mut out.timeouts.upstream_response,
        );
        set(
            "timeouts.tunnel_idle",
            t.tunnel_idle,
            &mut out.timeouts.tunnel_idle,
        );
        set(
            "timeouts.pool_idle",
            t.pool_idle,
            &mut out.timeouts.pool_idle,
        );
        set("timeouts.drain", t.drain, &mut out.timeouts.drain);
        out.inspect_always = self.inspect.always.unwrap_or(false);
        out.inspect_max_body_bytes = positive(
            "inspect.max_body_bytes",
            self.inspect.max_body_bytes,
            DEFAULT_INSPECT_MAX_BODY_BYTES,
            problems,
        );
        if out.inspect_max_body_bytes < crate::inspect::DEFAULT_BUFFER_LIMIT {
            problems.push(format!(
                "inspect.max_body_bytes: {} is below the {} bytes a body is buffered to be \
                 inspected whole",
                out.inspect_max_body_bytes,
                crate::inspect::DEFAULT_BUFFER_LIMIT
            ));
        }
        let a = self.audit;
        if let Some(d) = a.dir {
            let d = abs(d);
            // The key sits beside the folder, not in it: the folder is what gets shipped.
            out.audit.key_file = PathBuf::from(format!("{}.key", d.display()));
            out.audit.dir = d;
        }
        if let Some(k) = a.key_file {
            out.audit.key_file = abs(k);
        }
        if let Some(n) = a.max_file_bytes {
            if n < 4096 {
                problems.push(format!(
                    "audit.max_file_bytes: {n} is too small (at least 4096)"
                ));
            }
            out.audit.max_file_bytes = n;
        }
        if let Some(t) = a.fsync_delay {
            if let Some(d) = duration("audit.fsync_delay", &t, problems) {
                out.audit.fsync_delay = d;
            }
        }
        if let Some(r) = a.retention_days {
            out.audit.retention_days = r;
        }
        out.audit.queue = positive("audit.queue", a.queue, DEFAULT_AUDIT_QUEUE, problems);
        out
    }
}

fn validate_route(
    i: usize,
    r: RawRoute,
    abs: &dyn Fn(PathBuf) -> PathBuf,
    default_forwarded: ForwardedMode,
    problems: &mut Vec<String>,
) -> Option<RouteConfig> {
    let at = format!("routes[{i}] ({})", r.name);
    if r.prefix.is_none() && r.host.is_none() {
        problems.push(format!("{at}: give a `prefix`, a `host`, or both"));
    }
    if let Some(p) = &r.prefix {
        if !p.starts_with('/') {
            problems.push(format!("{at}.prefix: `{p}` must start with /"));
        }
    }
    let uri: http::Uri = match r.upstream.parse() {
        Ok(u) => u,
        Err(_) => {
            problems.push(format!(
                "{at}.upstream: `{}` is not a URL (write e.g. https://api.partner.example/v2)",
                r.upstream
            ));
            return None;
        }
    };
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            problems.push(format!(
                "{at}.upstream: `{}` must start with http:// or https://",
                r.upstream
            ));
            return None;
        }
    };
    let Some(auth) = uri.authority() else {
        problems.push(format!("{at}.upstream: `{}` has no host", r.upstream));
        return None;
    };
    if auth.as_str().contains('@') {
        problems.push(format!(
            "{at}.upstream: credentials in the URL are not supported"
        ));
        return None;
    }
    if uri.query().is_some() {
        problems.push(format!(
            "{at}.upstream: `{}` must not carry a query",
            r.upstream
        ));
    }
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let base = uri.path().trim_end_matches('/').to_owned();
    if r.ca_bundle.is_some() && !tls {
        problems.push(format!(
            "{at}.ca_bundle: only meaningful for an https:// upstream"
        ));
    }
    Some(RouteConfig {
        name: r.name,
        prefix: r.prefix,
        host: r.host.map(|h| h.trim_end_matches('.').to_ascii_lowercase()),
        upstream_tls: tls,
        upstream_host: host,
        upstream_port: port,
        upstream_base_path: base,
        host_header: r.upstream_host,
        sni: r.sni,
        ca_bundle: r.ca_bundle.map(abs),
        forwarded: r.forwarded.unwrap_or(default_forwarded),
    })
}

fn socket_addr(key: &str, v: &str, problems: &mut Vec<String>) -> Option<SocketAddr> {
    match v.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(format!(
                "{key}: `{v}` is not IP:port (write e.g. 0.0.0.0:3128 or [::]:3128)"
            ));
            None
        }
    }
}

fn positive(key: &str, v: Option<usize>, default: usize, problems: &mut Vec<String>) -> usize {
    match v {
        Some(0) => {
            problems.push(format!("{key}: must be at least 1"));
            default
        }
        Some(n) => n,
        None => default,
    }
}

fn duration(key: &str, v: &str, problems: &mut Vec<String>) -> Option<Duration> {
    match parse_duration(v) {
        Some(d) => Some(d),
        None => {
            problems.push(format!(
                "{key}: `{v}` is not a duration (write e.g. 500ms, 10s, 5m, 1h)"
            ));
            None
        }
    }
}

/// Parses `250ms`, `10s`, `5m`, `1h`, `7d` (one number, one unit).
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = |m: u64| n.checked_mul(m).map(Duration::from_secs);
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_yaml("", "<t>", Path::new("/")).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert!(c.policy_paths.is_empty());
    }

    #[test]
    fn unknown_key_is_named_with_line() {
        let err = Config::from_yaml("listen: 127.0.0.1:1\nlisen: x\n", "c.yaml", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.starts_with("c.yaml"), "{err}");
    }

    #[test]
    fn every_problem_is_listed() {
        let y = "listen: nope\ngeo:\n  overrides:\n    - { cidr: 10.0.0.0/33, country: India }\nresolver:\n  static_hosts:\n    a.test: [not-an-ip]\n";
        let err = Config::from_yaml(y, "c.yaml", Path::new("/"))
            .unwrap_err()
            .to_string();
        for needle in ["listen", "10.0.0.0/33", "India", "not-an-ip"] {
            assert!(err.contains(needle), "missing {needle}: {err}");
        }
    }

    #[test]
    fn inspect_max_body_bytes() {
        let c = Config::from_yaml("", "<t>", Path::new("/")).unwrap();
        assert_eq!(c.inspect_max_body_bytes, 16 << 20);
        let y = "inspect:\n  max_body_bytes: 104857600\n";
        let c = Config::from_yaml(y, "c.yaml", Path::new("/")).unwrap();
        assert_eq!(c.inspect_max_body_bytes, 100 << 20);
        for (v, want) in [
            ("0", "must be at least 1"),
            ("1000", "is below the 65536 bytes"),
        ] {
            let y = format!("inspect:\n  max_body_bytes: {v}\n");
            let err = Config::from_yaml(&y, "c.yaml", Path::new("/"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("inspect.max_body_bytes") && err.contains(want),
                "{err}"
            );
        }
    }

    #[test]
    fn routes_parse_upstream_url() {
        let y = "routes:\n  - name: partner\n    prefix: /partner/\n    upstream: https://API.Partner.example:8443/v2/\n    ca_bundle: ca.pem\n";
        let c = Config::from_yaml(y, "c.yaml", Path::new("/etc/sima")).unwrap();
        let r = &c.routes[0];
        assert!(r.upstream_tls);
        assert_eq!(r.upstream_host, "api.partner.example");
        assert_eq!(r.upstream_port, 8443);
        assert_eq!(r.upstream_base_path, "/v2");
        assert_eq!(r.ca_bundle.as_deref(), Some(Path::new("/etc/sima/ca.pem")));
    }

    #[test]
    fn route_without_match_is_rejected() {
        let y = "routes:\n  - name: r\n    upstream: ftp://x\n";
        let err = Config::from_yaml(y, "c.yaml", Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("prefix"), "{err}");
        assert!(err.contains("http://"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("x5s"), None);
    }
}
