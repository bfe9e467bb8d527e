//! Policy: the compiled, immutable rule set (`Policy`), the facts about one request
//! (`Facts`) and the answer (`Decision`, `Reason`). Pure: no tokio, no hyper, no sockets.

use std::net::IpAddr;
use std::sync::Arc;

use crate::geo::Country;

pub mod compile;
pub mod decide;
pub mod model;

pub use compile::{compile, PolicyError, PolicySource};
pub use decide::decide;

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
}

/// Every reason, for pre-creating metric series.
pub const ALL_REASONS: [Reason; 17] = [
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
];

/// How sure a detector is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Confidence {
    /// Shape only.
    Low,
    /// Shape plus context, or a shape that rarely occurs by chance.
    Medium,
    /// Validated (check digit) or unambiguous.
    High,
}

/// One data class seen in the request, with the highest confidence seen for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSeen {
    /// Index into the class table the policy was compiled against.
    pub class: u16,
    /// Highest confidence among its findings.
    pub confidence: Confidence,
}

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
    pub name: String,
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
        }
    }
}

impl Confidence {
    /// Label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
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
}
