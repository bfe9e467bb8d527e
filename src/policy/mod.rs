//! Policy: the compiled, immutable rule set (`Policy`), the facts about one request
//! (`Facts`) and the answer (`Decision`, `Reason`). Pure: no tokio, no hyper, no sockets.

use std::net::IpAddr;
use std::sync::Arc;

use crate::geo::Country;
/// What inspection hands the policy: classes seen, each with its best confidence.
pub use crate::inspect::{detect::Confidence, DataSeen};

/// An `Arc<str>` for a string literal, allocated once per call site: decisions built on
/// every request share their text instead of allocating it.
#[macro_export]
macro_rules! shared_str {
    ($s:literal) => {{
        static TEXT: std::sync::LazyLock<std::sync::Arc<str>> =
            std::sync::LazyLock::new(|| std::sync::Arc::from($s));
        std::sync::Arc::clone(&TEXT)
    }};
}
pub use shared_str;

pub mod compile;
pub mod decide;
pub mod lint;
pub mod model;

pub use compile::{compile, compile_at, load, today, PolicyError, PolicySource};
pub use decide::{decide, trace};

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forward.
    Allow,
    /// Refuse with 451 (or pass and audit, in report mode).
    Block,
    /// Forward and audit as a would-be block.
    Report,
}

/// `enforce` blocks; `report` lets would-be blocks pass and marks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Blocks are blocks.
    #[default]
    Enforce,
    /// Blocks become reports.
    Report,
}

/// What happens to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded.
    Allow,
    /// Refused.
    Deny,
    /// Forwarded, but recorded as a flow the policy would block.
    Report,
}

/// Why a request ended the way it did: a closed set, used as a metric label and in the
/// `sima-reason` response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No rule objected.
    Allowed,
    /// A destination rule (host, country, method, path) matched.
    DestinationRule,
    /// A rule about personal data in the request matched.
    PersonalData,
    /// The destination's country could not be determined.
    UnknownCountry,
    /// The body could not be inspected (too large, corrupt, too deeply encoded).
    Uninspectable,
    /// The address is in a range the guard forbids (loopback, private, metadata, …).
    ForbiddenAddress,
    /// The request was aimed at Sima itself.
    ProxyLoop,
    /// The request could not be understood.
    BadRequest,
    /// An origin-form request matched no route.
    NoRoute,
    /// The name did not resolve.
    ResolveFailed,
    /// DNS did not answer in time.
    ResolveTimeout,
    /// TCP connect to the upstream failed.
    ConnectFailed,
    /// TLS with the upstream failed (certificate, handshake).
    TlsFailed,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The upstream broke the protocol or reset.
    UpstreamProtocol,
    /// Too many connections.
    Overloaded,
    /// A fault inside Sima.
    Internal,
    /// Proxy credentials were malformed or rejected.
    ProxyAuth,
    /// A flow that must be recorded could not be (the audit log failed).
    AuditUnavailable,
}

/// Every reason, for pre-creating metric series.
pub const ALL_REASONS: [Reason; 19] = [
    Reason::Allowed,
    Reason::DestinationRule,
    Reason::PersonalData,
    Reason::UnknownCountry,
    Reason::Uninspectable,
    Reason::ForbiddenAddress,
    Reason::ProxyLoop,
    Reason::BadRequest,
    Reason::NoRoute,
    Reason::ResolveFailed,
    Reason::ResolveTimeout,
    Reason::ConnectFailed,
    Reason::TlsFailed,
    Reason::UpstreamTimeout,
    Reason::UpstreamProtocol,
    Reason::Overloaded,
    Reason::Internal,
    Reason::ProxyAuth,
    Reason::AuditUnavailable,
];

/// What is known about the personal data a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataView<'a> {
    /// Not inspected yet: a rule about data makes `decide` ask for inspection.
    NotInspected,
    /// A CONNECT tunnel without interception: the content cannot be seen.
    Tunnel,
    /// Inspection failed (too large, corrupt, too deeply encoded).
    Uninspectable,
    /// Inspected; these classes were found.
    Seen(&'a [DataSeen]),
}

/// Everything `decide` may look at. Borrowed: building one allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Destination host as normalised (name or IP literal text).
    pub host: &'a str,
    /// The address that would be dialled.
    pub addr: IpAddr,
    /// Its country, if known.
    pub country: Option<Country>,
    /// Request method.
    pub method: &'a str,
    /// Request path (no query).
    pub path: &'a str,
    /// Client groups the client belongs to.
    pub client_groups: &'a [Arc<str>],
    /// What is known about personal data in the request.
    pub data: DataView<'a>,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What happens.
    pub verdict: Verdict,
    /// Why, as a closed label.
    pub reason: Reason,
    /// The rule id (`default` and `unknown_country` for the built-in steps).
    pub rule: Arc<str>,
    /// Human explanation shown to the client.
    pub message: Arc<str>,
    /// Legal citation, when the rule gives one.
    pub citation: Option<Arc<str>>,
    /// Record this flow in the audit log even when allowed (exceptions).
    pub audit: bool,
}

/// `decide`'s answer: a decision, or "look at the body first".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Final for these facts.
    Decided(Decision),
    /// A rule about personal data could match; inspect the request, then decide again.
    NeedsInspection,
}

/// A compiled policy: immutable, shared by `Arc`, swapped whole on reload.
#[derive(Debug)]
pub struct Policy {
    /// Name from the first file.
    pub name: Arc<str>,
    /// Short content hash (sha256 of every file, hex, 12 chars).
    pub hash: String,
    /// Home countries.
    pub home: Vec<Country>,
    /// Whole-policy mode.
    pub mode: Mode,
    pub(crate) unknown_country: Action,
    pub(crate) tunnels: Action,
    pub(crate) uninspectable: Action,
    pub(crate) rules: Vec<compile::Rule>,
    pub(crate) default: Action,
    pub(crate) classes: Vec<String>,
    pub(crate) clients: Vec<ClientGroup>,
    pub(crate) destinations: Vec<Declared>,
    /// Exceptions that expired and no longer apply.
    pub expired: Vec<Expired>,
    /// The date the policy was compiled for (YYYY-MM-DD).
    pub loaded_on: String,
}

/// A named client group.
#[derive(Debug, Clone)]
pub struct ClientGroup {
    /// Group name.
    pub name: Arc<str>,
    pub(crate) nets: Vec<ipnet::IpNet>,
    pub(crate) users: Vec<(String, Option<[u8; 32]>)>,
}

/// A destination's declared residency.
#[derive(Debug, Clone)]
pub struct Declared {
    pub(crate) pattern: compile::HostPattern,
    pub(crate) country: Country,
}

/// An exception rule whose `expires` date has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Rule id.
    pub id: String,
    /// Its expiry date.
    pub expires: String,
    /// Its owner.
    pub owner: Option<String>,
}

/// Who the client is, as far as the policy can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Groups the client belongs to.
    pub groups: Vec<Arc<str>>,
    /// Proxy-auth user name, when one was given and accepted.
    pub user: Option<String>,
}

/// Proxy credentials that do not match the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user or wrong password.
    #[error("proxy authentication failed for user `{0}`")]
    Rejected(String),
    /// Not `Basic base64(user:password)`.
    #[error("Proxy-Authorization must be Basic credentials")]
    Malformed,
}

// === impl Verdict ===

impl Verdict {
    /// Metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Report => "report",
        }
    }
}

// === impl Reason ===

impl Reason {
    /// Metric label and `sima-reason` header value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::DestinationRule => "destination_rule",
            Reason::PersonalData => "personal_data",
            Reason::UnknownCountry => "unknown_country",
            Reason::Uninspectable => "uninspectable",
            Reason::ForbiddenAddress => "forbidden_address",
            Reason::ProxyLoop => "proxy_loop",
            Reason::BadRequest => "bad_request",
            Reason::NoRoute => "no_route",
            Reason::ResolveFailed => "resolve_failed",
            Reason::ResolveTimeout => "resolve_timeout",
            Reason::ConnectFailed => "connect_failed",
            Reason::TlsFailed => "tls_failed",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::UpstreamProtocol => "upstream_protocol",
            Reason::Overloaded => "overloaded",
            Reason::Internal => "internal",
            Reason::ProxyAuth => "proxy_auth",
            Reason::AuditUnavailable => "audit_unavailable",
        }
    }
}

// === impl Policy ===

impl Policy {
    /// The class names this policy was compiled against (index = `DataSeen::class`).
    pub fn class_names(&self) -> &[String] {
        &self.classes
    }

    /// Whether any rule looks at request data: if none does, bodies need no inspection.
    pub fn uses_data(&self) -> bool {
        self.rules.iter().any(|r| r.data.is_some())
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Whether any client group is defined (then clients are identified per request).
    pub fn has_clients(&self) -> bool {
        !self.clients.is_empty()
    }

    /// The declared residency of `host`, if a `destinations` entry matches it.
    pub fn declared_country(&self, host: &str) -> Option<Country> {
        self.destinations
            .iter()
            .find(|d| decide::host_matches(&d.pattern, host))
            .map(|d| d.country)
    }

    /// Identifies a client by source address and optional proxy credentials
    /// (`user`, `password`). A user the policy does not know, or a wrong password, is an
    /// error (407); no credentials means groups by address only.
    pub fn identify(
        &self,
        addr: std::net::IpAddr,
        creds: Option<(&str, &str)>,
    ) -> Result<Identity, AuthError> {
        let addr = crate::guard::canonical(addr);
        let mut id = Identity::default();
        if let Some((user, password)) = creds {
            let mut known = false;
            for g in &self.clients {
                for (name, hash) in &g.users {
                    if name == user {
                        let ok = match hash {
                            None => true,
                            Some(h) => constant_time_eq(&sha256(password.as_bytes()), h),
                        };
                        if !ok {
                            return Err(AuthError::Rejected(user.to_owned()));
                        }
                        known = true;
                        if !id.groups.contains(&g.name) {
                            id.groups.push(g.name.clone());
                        }
                    }
                }
            }
            if !known {
                return Err(AuthError::Rejected(user.to_owned()));
            }
            id.user = Some(user.to_owned());
        }
        for g in &self.clients {
            if g.nets.iter().any(|n| n.contains(&addr)) && !id.groups.contains(&g.name) {
                id.groups.push(g.name.clone());
            }
        }
        Ok(id)
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
