//! The only mapping from errors and decisions to HTTP responses: 451 for policy blocks
//! (RFC 7725, with `Link: rel="blocked-by"`), 4xx/5xx with a one-line reason otherwise.
//! Every response Sima makes itself carries `sima-reason`.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use super::target::TargetError;
use super::upstream::UpstreamError;
use super::{Body, RequestCtx};
use crate::guard::Forbidden;
use crate::policy::{Decision, Reason};
use crate::resolve::ResolveError;

/// Response header carrying the `Reason` label.
pub const REASON_HEADER: &str = "sima-reason";
/// Response header carrying the request id.
const REQUEST_ID_HEADER: &str = "sima-request-id";

/// [`REQUEST_ID_HEADER`] as a header name. Inserting by `&str` made every response
/// allocate the (non-standard) name anew; a static one is shared.
pub fn request_id_header() -> HeaderName {
    static NAME: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
    NAME.clone()
}

/// Which side a failure belongs to (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong, or policy refused it.
    Client,
    /// The upstream (or DNS) failed.
    Upstream,
    /// Sima itself failed.
    Internal,
}

/// Everything that ends a request without the upstream's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// A request body in a transfer coding other than `chunked` (RFC 9112 §6.1: 501).
    #[error("Transfer-Encoding {0:?} is not supported: only chunked is; send gzip and the like as Content-Encoding, which Sima decodes to inspect")]
    TransferCoding(String),
    /// Unusable request target.
    #[error(transparent)]
    BadTarget(#[from] TargetError),
    /// Origin-form request with no matching route.
    #[error(
        "no route matches {path}; send absolute-form requests (HTTP_PROXY) or configure a route"
    )]
    NoRoute {
        /// The path asked for.
        path: String,
    },
    /// DNS failure.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Every address of the destination is in a forbidden range.
    #[error("{host} resolves only to forbidden addresses ({addr} is {})", class.as_str())]
    ForbiddenAddress {
        /// Host.
        host: String,
        /// First forbidden address.
        addr: std::net::IpAddr,
        /// Its range.
        class: Forbidden,
    },
    /// The destination is Sima's own listener.
    #[error("{addr} is this proxy's own listener; refusing to loop")]
    ProxyLoop {
        /// Address.
        addr: std::net::SocketAddr,
    },
    /// The policy blocked the request.
    #[error("{}", .0.message)]
    Blocked(Decision),
    /// Upstream failure.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// Sima failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// Proxy credentials malformed or rejected.
    #[error(transparent)]
    Auth(#[from] crate::policy::AuthError),
    /// The client's group is at its concurrent request limit.
    #[error("client group {0} is at its limit of concurrent requests; retry later")]
    GroupOverloaded(String),
    /// A flow that must be recorded could not be: it does not pass.
    #[error("the audit log cannot be written, so this flow cannot be recorded and does not pass")]
    AuditUnavailable(String),
}

#[derive(Serialize)]
struct BlockedBody<'a> {
    error: &'static str,
    request_id: &'a str,
    policy: &'a str,
    rule: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    citation: Option<&'a str>,
    destination: Destination<'a>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    data_classes: &'a [String],
}

#[derive(Serialize)]
struct Destination<'a> {
    host: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    country: &'a str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    request_id: &'a str,
    message: String,
}

// === impl ProxyError ===

impl ProxyError {
    /// The closed reason label.
    pub fn reason(&self) -> Reason {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::BadTarget(_)
            | ProxyError::TransferCoding(_) => Reason::BadRequest,
            ProxyError::NoRoute { .. } => Reason::NoRoute,
            ProxyError::Resolve(ResolveError::Timeout { .. }) => Reason::ResolveTimeout,
            ProxyError::Resolve(_) => Reason::ResolveFailed,
            ProxyError::ForbiddenAddress { .. } => Reason::ForbiddenAddress,
            ProxyError::ProxyLoop { .. } => Reason::ProxyLoop,
            ProxyError::Blocked(d) => d.reason,
            ProxyError::Upstream(UpstreamError::Connect { .. }) => Reason::ConnectFailed,
            ProxyError::Upstream(UpstreamError::Tls { .. }) => Reason::TlsFailed,
            ProxyError::Upstream(
                UpstreamError::ConnectTimeout { .. } | UpstreamError::ResponseTimeout { .. },
            ) => Reason::UpstreamTimeout,
            ProxyError::Upstream(UpstreamError::Http { .. }) => Reason::UpstreamProtocol,
            ProxyError::Internal(_) => Reason::Internal,
            ProxyError::Auth(_) => Reason::ProxyAuth,
            ProxyError::AuditUnavailable(_) => Reason::AuditUnavailable,
            ProxyError::GroupOverloaded(_) => Reason::Overloaded,
        }
    }

    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::Resolve(_) | ProxyError::Upstream(_) => Side::Upstream,
            ProxyError::Internal(_) | ProxyError::AuditUnavailable(_) => Side::Internal,
            _ => Side::Client,
        }
    }

    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::BadTarget(_) | ProxyError::NoRoute { .. } => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::TransferCoding(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::Resolve(ResolveError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Resolve(_) => StatusCode::BAD_GATEWAY,
            ProxyError::ForbiddenAddress { .. } | ProxyError::ProxyLoop { .. } => {
                StatusCode::FORBIDDEN
            }
            ProxyError::Blocked(_) => StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            ProxyError::Upstream(
                UpstreamError::ConnectTimeout { .. } | UpstreamError::ResponseTimeout { .. },
            ) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Auth(_) => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            ProxyError::AuditUnavailable(_) | ProxyError::GroupOverloaded(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

/// Builds the response for `err`.
pub fn error_response(ctx: &RequestCtx, err: &ProxyError) -> Response<Body> {
    let status = err.status();
    let reason = err.reason();
    let body = match err {
        ProxyError::Blocked(d) => serde_json::to_vec(&BlockedBody {
            error: "blocked",
            request_id: ctx.id.as_str(),
            policy: &ctx.policy_name,
            rule: &d.rule,
            reason: &d.message,
            citation: d.citation.as_deref(),
            destination: Destination {
                host: &ctx.host,
                address: ctx.addr.map(|a| a.to_string()),
                country: ctx.country.as_ref().map_or("unknown", |c| c.as_str()),
            },
            data_classes: &ctx.data_classes,
        }),
        // Internal details stay in the log; the client learns the kind, not the innards.
        ProxyError::Internal(_) => serde_json::to_vec(&ErrorBody {
            error: reason.as_str(),
            request_id: ctx.id.as_str(),
            message: "internal error; the request id is in Sima's log".into(),
        }),
        other => serde_json::to_vec(&ErrorBody {
            error: reason.as_str(),
            request_id: ctx.id.as_str(),
            message: other.to_string(),
        }),
    };
    let mut body = body.unwrap_or_default();
    body.push(b'\n');
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(REASON_HEADER, HeaderValue::from_static(reason.as_str()));
    if let Ok(v) = HeaderValue::from_str(ctx.id.as_str()) {
        h.insert(request_id_header(), v);
    }
    if let ProxyError::Auth(_) = err {
        h.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sima\""),
        );
    }
    if let ProxyError::Blocked(d) = err {
        let link = format!(
            "<urn:sima:policy:{}:rule:{}>; rel=\"blocked-by\"",
            ctx.policy_name, d.rule
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.insert(header::LINK, v);
        }
    }
    resp
}
