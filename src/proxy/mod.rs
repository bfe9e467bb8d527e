//! The request path: one function calling the steps in order (parse target, snapshot,
//! resolve, guard, locate, decide, forward or tunnel, finish). The steps live in their own
//! modules; this one only wires them and carries per-request state in `RequestCtx`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::{Config, ForwardedMode};
use crate::geo::{Country, GeoSource, Locator};
use crate::guard;
use crate::inspect::{Inspector, Report};
use crate::metrics::{GeoResult, Metrics, Transport};
use crate::policy::{self, DataView, Decision, Facts, Outcome, Policy, Reason, Verdict};
use crate::resolve::Resolver;

pub mod forward;
pub mod inspected;
pub mod respond;
pub mod routes;
pub mod target;
pub mod tunnel;
pub mod upstream;
pub mod websocket;

use respond::ProxyError;

/// Added to responses of flows the policy reports (would block in enforce mode).
pub const REPORT_HEADER: &str = "sima-verdict";
use routes::Routes;
use target::{Host, Target};
use upstream::{Dial, UpstreamSettings, Upstreams};

/// Boxed error for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type on both sides of the proxy.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// What a request sees from start to end: replaced whole on reload (invariant I6).
pub struct Snapshot {
    /// The compiled policy.
    pub policy: Arc<Policy>,
    /// Overrides + geo database.
    pub geo: Arc<Locator>,
    /// Detectors and inspection limits.
    pub inspector: Arc<Inspector>,
}

/// State shared by every request.
pub struct Shared {
    /// Current policy and geo database.
    pub snapshot: ArcSwap<Snapshot>,
    resolver: Resolver,
    upstreams: Upstreams,
    routes: Routes,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The coarse timers of the header-read and upstream-response timeouts.
    pub timers: crate::coarse::Coarse,
    /// Client connections and tunnels, drained on shutdown.
    pub drain: crate::drain::Drain,
    /// The host of a request whose target is not parsed yet: shared, not allocated each
    /// time.
    no_host: Arc<str>,
    forwarded: ForwardedMode,
    tunnel_idle: Duration,
    /// Serves the proxy listener's connections, and plain HTTP found inside a tunnel
    /// (HTTP/1.1, or h2c with prior knowledge, as a plaintext gRPC channel through a proxy
    /// sends it), with the same limits.
    pub server: hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    connect_timeout: Duration,
    body_read_timeout: Duration,
    inspect_always: bool,
    own: Vec<SocketAddr>,
    next_id: AtomicU64,
    /// Per-client-group request limits.
    group_limits: HashMap<String, Arc<tokio::sync::Semaphore>>,
    /// The audit log writer.
    pub audit: crate::audit::AuditHandle,
    /// Keyed fingerprints of detected values, for audit records (built once, not per
    /// request).
    fingerprint_fn: crate::inspect::FingerprintFn,
}

/// The audit log writer and the key that fingerprints detected values.
pub struct AuditSink {
    /// Writer handle.
    pub handle: crate::audit::AuditHandle,
    /// HMAC fingerprints.
    pub fingerprinter: Arc<crate::audit::Fingerprinter>,
}

/// Per-request state, filled in as the steps run; read by the final log line and metrics.
#[derive(Clone)]
pub struct RequestCtx {
    /// Request id (also in the `sima-request-id` response header).
    pub id: RequestId,
    /// Client address.
    pub client: SocketAddr,
    /// Method.
    pub method: Method,
    /// How it arrived.
    pub transport: Transport,
    /// Destination host as the policy sees it.
    pub host: Arc<str>,
    /// Destination port.
    pub port: u16,
    /// The address dialled (or judged).
    pub addr: Option<IpAddr>,
    /// Its country.
    pub country: Option<Country>,
    /// Who answered the geo lookup.
    pub geo_source: Option<GeoSource>,
    /// Policy name.
    pub policy_name: Arc<str>,
    /// The decision, once made.
    pub decision: Option<Decision>,
    /// Data classes found (names only, never values).
    pub data_classes: Vec<String>,
    /// Findings per class (counts, places, fingerprints), for the audit record.
    pub findings: inspected::Found,
    /// The request target as the client sent it (query values are stripped for audit).
    /// Kept as the parsed URI, which shares the request's buffer: copying it into a
    /// string cost every request an allocation that only a blocked one uses.
    pub target: http::Uri,
    /// Request body bytes released upstream before a block.
    pub bytes_released: u64,
    /// The WebSocket message being judged, by its number on the WebSocket (from 1).
    pub websocket_message: Option<u64>,
    /// Time spent waiting for the upstream's response head.
    pub upstream_wait: Duration,
    /// Route name for reverse-proxied requests.
    pub route: Option<String>,
    /// Client groups (policy `clients:`).
    pub groups: Vec<Arc<str>>,
    /// Proxy-auth user, when given and accepted.
    pub user: Option<String>,
}

/// One address judged by the policy.
struct Candidate {
    ip: IpAddr,
    country: Option<Country>,
    source: GeoSource,
    outcome: Outcome,
}

// === impl RequestCtx ===

impl RequestCtx {
    fn set_findings(&mut self, found: inspected::Found) {
        self.data_classes = found.iter().map(|f| f.class.clone()).collect();
        self.findings = found;
    }
}

// === impl Shared ===

impl Shared {
    /// Builds the shared state. `own` are Sima's listener addresses (loop protection).
    pub fn new(
        config: &Config,
        snapshot: Snapshot,
        resolver: Resolver,
        routes: Routes,
        metrics: Arc<Metrics>,
        own: Vec<SocketAddr>,
        audit: AuditSink,
    ) -> Shared {
        let t = &config.timeouts;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let timers = crate::coarse::Coarse::new(t.header_read.min(t.upstream_response));
        let mut server =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        server
            .http1()
            .timer(timers.clone())
            .header_read_timeout(t.header_read)
            .max_buf_size(config.limits.max_header_bytes)
            .max_headers(config.limits.max_headers)
            .keep_alive(true);
        server
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .max_header_list_size(
                u32::try_from(config.limits.max_header_bytes).unwrap_or(u32::MAX),
            );
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            resolver,
            upstreams: Upstreams::new(
                UpstreamSettings {
                    connect_timeout: t.upstream_connect,
                    response_timeout: t.upstream_response,
                    pool_idle: t.pool_idle,
                    max_idle_per_key: config.limits.pool_max_idle_per_host,
                },
                timers.clone(),
            ),
            routes,
            metrics,
            timers,
            drain: crate::drain::Drain::new(),
            no_host: Arc::from(""),
            forwarded: config.forwarded,
            tunnel_idle: t.tunnel_idle,
            server,
            connect_timeout: t.upstream_connect,
            body_read_timeout: t.client_idle,
            inspect_always: config.inspect_always,
            own,
            next_id: AtomicU64::new(seed.rotate_left(17) & 0xffff_ffff_0000_0000),
            group_limits: config
                .limits
                .max_requests_per_group
                .iter()
                .map(|(g, n)| (g.clone(), Arc::new(tokio::sync::Semaphore::new(*n))))
                .collect(),
            audit: audit.handle,
            fingerprint_fn: {
                let fp = audit.fingerprinter;
                Arc::new(move |class: &str, value: &[u8]| fp.fingerprint(class, value))
            },
        }
    }

    fn request_id(&self) -> RequestId {
        RequestId::new(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn is_own(&self, addr: SocketAddr) -> bool {
        self.own.iter().any(|o| {
            o.port() == addr.port()
                && (o.ip() == addr.ip()
                    || (o.ip().is_unspecified() && guard::canonical(addr.ip()).is_loopback()))
        })
    }
}

/// Serves one request; never fails (errors become responses).
pub async fn handle(
    shared: Arc<Shared>,
    client: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let snapshot: Arc<Snapshot> = shared.snapshot.load_full();
    let mut ctx = RequestCtx {
        id: shared.request_id(),
        client,
        method: req.method().clone(),
        transport: Transport::Forward,
        host: shared.no_host.clone(),
        port: 0,
        addr: None,
        country: None,
        geo_source: None,
        policy_name: snapshot.policy.name.clone(),
        decision: None,
        data_classes: Vec::new(),
        findings: Vec::new(),
        target: req.uri().clone(),
        bytes_released: 0,
        websocket_message: None,
        upstream_wait: Duration::ZERO,
        route: None,
        groups: Vec::new(),
        user: None,
    };
    let result = serve(&shared, &snapshot, &mut ctx, req).await;
    let (mut resp, verdict, reason) = match result {
        Ok(resp) => {
            let (v, r) = ctx
                .decision
                .as_ref()
                .map_or((Verdict::Allow, Reason::Allowed), |d| (d.verdict, d.reason));
            (resp, v, r)
        }
        Err(err) => {
            if let ProxyError::Blocked(d) = &err {
                // The record is on disk before the client learns of the block. A block stays
                // a block if the audit log fails; the failure is counted and shown on /readyz.
                let _ = Box::pin(audit_flow(&shared, &snapshot, &ctx, d)).await;
            }
            let resp = respond::error_response(&ctx, &err);
            if let ProxyError::Upstream(e) = &err {
                shared
                    .metrics
                    .upstream_errors
                    .with_label_values(&[upstream_kind(e)])
                    .inc();
            }
            if let ProxyError::Resolve(_) = &err {
                shared
                    .metrics
                    .upstream_errors
                    .with_label_values(&["resolve"])
                    .inc();
            }
            log_error(&ctx, &err);
            (resp, Verdict::Deny, err.reason())
        }
    };
    if let Ok(v) = HeaderValue::from_str(ctx.id.as_str()) {
        resp.headers_mut()
            .entry(respond::request_id_header())
            .or_insert(v);
    }
    finish(&shared, &ctx, verdict, reason, resp.status(), start);
    Ok(resp)
}

fn upstream_kind(e: &upstream::UpstreamError) -> &'static str {
    use upstream::UpstreamError as E;
    match e {
        E::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionReset => {
            "reset"
        }
        E::Connect { .. } => "connect",
        E::Tls { .. } => "tls",
        E::ConnectTimeout { .. } | E::ResponseTimeout { .. } => "timeout",
        E::Http { source, .. } if source.is_incomplete_message() || source.is_canceled() => "reset",
        E::Http { .. } => "protocol",
    }
}

async fn serve(
    shared: &Arc<Shared>,
    snapshot: &Arc<Snapshot>,
    ctx: &mut RequestCtx,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    if let Some(te) = forward::unsupported_transfer_coding(req.headers()) {
        return Err(ProxyError::TransferCoding(te));
    }
    // 1. client identity and target
    if snapshot.policy.has_clients() {
        let creds = proxy_credentials(req.headers())?;
        let id = snapshot.policy.identify(
            ctx.client.ip(),
            creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        )?;
        ctx.groups = id.groups;
        ctx.user = id.user;
    }
    // Per-group concurrency: a permit per limited group the client is in, held until the
    // response head is sent (for tunnels, the tunnel task holds them).
    let mut permits = Vec::new();
    for g in &ctx.groups {
        if let Some(sem) = shared.group_limits.get(&**g) {
            match sem.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => return Err(ProxyError::GroupOverloaded(g.to_string())),
            }
        }
    }
    let target = match req.extensions().get::<InTunnel>() {
        Some(t) => {
            ctx.transport = Transport::Tunnelled;
            target::in_tunnel(&t.to, req.method(), req.uri())?
        }
        None => target::parse(req.method(), req.uri(), req.version())?,
    };
    let mut policy_name = None;
    let (host, port, authority, path_and_query, tls, forwarded) = match target {
        Target::Connect(a) => {
            ctx.transport = Transport::Connect;
            (
                a.host,
                a.port,
                HeaderValue::from_static(""),
                http::uri::PathAndQuery::from_static("/"),
                None,
                shared.forwarded,
            )
        }
        Target::Forward {
            authority,
            path_and_query,
        } => {
            let shown = match req.headers().get(header::HOST) {
                // As clients send it: the request's own `Host` is already the text.
                Some(given) if authority.is_host_header(given.as_bytes(), 80) => given.clone(),
                _ => {
                    let shown = authority.host_header(80);
                    // The normalised host is ASCII (IDNA), so this cannot fail; refuse if
                    // it does.
                    HeaderValue::from_maybe_shared(Bytes::from(shown))
                        .map_err(|_| ProxyError::BadRequest("invalid host".into()))?
                }
            };
            // The policy's name for a host is the header's host part, except for IPv6
            // (bracketed there): no second rendering of the address.
            if !matches!(authority.host, Host::Ip(std::net::IpAddr::V6(_))) {
                if let Ok(text) = shown.to_str() {
                    policy_name = Some(std::sync::Arc::from(strip_port(text)));
                }
            }
            (
                authority.host,
                authority.port,
                shown,
                path_and_query,
                None,
                shared.forwarded,
            )
        }
        Target::Origin => {
            ctx.transport = Transport::Reverse;
            // h2 carries the host in `:authority`; h1 in `Host`.
            let host_header = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri().authority().map(|a| a.as_str()))
                .map(strip_port)
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
            let (route, path) = shared
                .routes
                .find(host_header.as_deref(), req.uri().path(), req.uri().query())
                .ok_or_else(|| ProxyError::NoRoute {
                    path: req.uri().path().to_owned(),
                })?;
            ctx.route = Some(route.name.clone());
            let path = http::uri::PathAndQuery::from_maybe_shared(Bytes::from(path))
                .map_err(|e| ProxyError::BadRequest(format!("rewritten path: {e}")))?;
            (
                route.upstream.clone(),
                route.port,
                route.authority.clone(),
                path,
                route.tls.clone(),
                route.forwarded,
            )
        }
    };
    ctx.host = policy_name.unwrap_or_else(|| host.policy_name());
    ctx.port = port;
    // A WebSocket handshake, also inside a CONNECT tunnel read as HTTP. Where a rule about
    // data applies, its messages are read and judged one by one (see `websocket_flow`).
    let websocket = match ctx.transport {
        Transport::Forward | Transport::Reverse | Transport::Tunnelled
            // hyper attaches an upgrade only to an HTTP/1.1 request with `Upgrade`: most
            // requests are turned away here without a header lookup.
            if req.method() == Method::GET
                && req.extensions().get::<hyper::upgrade::OnUpgrade>().is_some()
                && http_body::Body::is_end_stream(req.body()) =>
        {
            forward::websocket_upgrade(req.headers())
        }
        _ => None,
    };

    // 2-5. resolve, guard, locate, decide per address
    let literal;
    let resolved;
    let ips: &[IpAddr] = match &host {
        Host::Ip(ip) => {
            literal = [*ip];
            &literal
        }
        Host::Name(name) => {
            let t = Instant::now();
            let r = shared.resolver.resolve(name).await;
            shared.metrics.dns_lookup.observe(t.elapsed().as_secs_f64());
            resolved = r?;
            &resolved
        }
    };
    let path = req.uri().path_and_query().cloned();
    let opaque = ctx.transport == Transport::Connect;
    let chosen = choose(
        shared,
        snapshot,
        ctx,
        (ips, port),
        path.as_ref().map_or("", |p| p.path()),
        opaque,
    )?;
    ctx.addr = Some(chosen.ip);
    ctx.country = chosen.country;
    ctx.geo_source = Some(chosen.source);
    let (decision, needs_inspection) = match chosen.outcome {
        Outcome::Decided(d) => (d, false),
        // Judged again once the URL, headers and body have been inspected.
        Outcome::NeedsInspection => (allowed_pending_inspection(), true),
    };
    if decision.verdict == Verdict::Deny {
        ctx.decision = Some(decision.clone());
        return Err(ProxyError::Blocked(decision));
    }
    ctx.decision = Some(decision);
    let addr = SocketAddr::new(chosen.ip, port);

    // 6. connect and stream
    if ctx.transport == Transport::Connect {
        if matches!(host, Host::Name(_)) {
            // What a tunnel shows of its content before it opens: the name it goes to,
            // which a tenant's subdomain can make an identifier (`9876543210.tenant.example`;
            // it would travel on in the TLS server name). Judged as a request's host is.
            let mut report = empty_report(shared, snapshot);
            snapshot.inspector.inspect_host(&ctx.host, &mut report);
            judge_shown(snapshot, ctx, (chosen.ip, chosen.country), &report, false)?;
        }
        record_if_needed(shared, snapshot, ctx).await?;
        let on_upgrade = hyper::upgrade::on(&mut req);
        let stream = tokio::time::timeout(shared.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| upstream::UpstreamError::ConnectTimeout {
                addr,
                after: shared.connect_timeout,
            })?
            .map_err(|source| upstream::UpstreamError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        let tunnel = InTunnel {
            to: target::Authority { host, port },
            dialled: Arc::default(),
        };
        let auth = req.headers().get(header::PROXY_AUTHORIZATION).cloned();
        let (shared2, id, client) = (shared.clone(), ctx.id, ctx.client);
        let work = async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let _open = Open::count(&shared2.metrics.active_tunnels);
                    let io = TokioIo::new(upgraded);
                    run_tunnel(&shared2, client, tunnel, auth, io, stream, permits, id).await;
                }
                Err(e) => {
                    tracing::debug!(sima.request_id = %id, error = %e, "tunnel upgrade failed")
                }
            }
        };
        spawn_tunnel(shared, id, work);
        let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
        *resp.status_mut() = StatusCode::OK;
        mark_report(ctx, resp.headers_mut());
        return Ok(resp);
    }

    if let Some(upgrade) = websocket {
        return Box::pin(websocket_flow(
            shared,
            snapshot,
            ctx,
            req,
            upgrade,
            (addr, tls, chosen.country),
            (&authority, &path_and_query, forwarded),
            needs_inspection || shared.inspect_always,
            permits,
        ))
        .await;
    }

    let (mut parts, body) = req.into_parts();
    let (body, slot) = if needs_inspection || shared.inspect_always {
        let judge = judge(snapshot, ctx, (chosen.ip, chosen.country), path);
        let mut report = empty_report(shared, snapshot);
        let inspector = &snapshot.inspector;
        inspector.inspect_head(
            parts.uri.path(),
            parts.uri.query(),
            &parts.headers,
            &mut report,
        );
        if !parts.headers.contains_key(http::header::HOST) {
            // An absolute URI with no `Host` header (HTTP/1.0, a client that leaves it out)
            // names the host only there: read it as `Host` is (`9876543210.tenant.example`).
            if let Some(a) = parts.uri.authority() {
                inspector.inspect_host(a.host(), &mut report);
            }
        }
        let prepared = if http_body::Body::is_end_stream(&body) {
            // Nothing to read: decided now, with no shared judge for a body to carry.
            inspected::decide_bodiless(&judge, inspector, &report)
        } else {
            inspected::prepare(
                inspector,
                Arc::new(judge),
                &parts.headers,
                body,
                report,
                shared.body_read_timeout,
                shared.metrics.inspected_bytes.clone(),
            )
            .await
            .map_err(|e| ProxyError::BadRequest(e.to_string()))?
        };
        match prepared {
            inspected::Prepared::Whole(b, d, found) => {
                ctx.decision = Some(d);
                ctx.set_findings(found);
                (b, None)
            }
            inspected::Prepared::Streaming(b, d, slot, done) => {
                ctx.decision = Some(d);
                if let Some(done) = done {
                    record_when_passed(
                        shared.clone(),
                        snapshot.clone(),
                        ctx.clone(),
                        slot.clone(),
                        done,
                    );
                }
                (b, Some(slot))
            }
            inspected::Prepared::Blocked(d, found) => {
                ctx.set_findings(found);
                ctx.decision = Some(d.clone());
                return Err(ProxyError::Blocked(d));
            }
        }
    } else {
        (body.map_err(BoxError::from).boxed_unsync(), None)
    };
    record_if_needed(shared, snapshot, ctx).await?;
    forward::strip_hop_by_hop(&mut parts.headers);
    forward::add_via(&mut parts.headers);
    forward::add_forwarded(&mut parts.headers, forwarded, ctx.client.ip());
    let upstream_req = Request::from_parts(parts, body);
    let dial = Dial { addr, tls };
    let sent = Instant::now();
    let result = shared
        .upstreams
        .send(&dial, &authority, &path_and_query, upstream_req, sent)
        .await;
    let arrived = result
        .as_ref()
        .map_or_else(|_| Instant::now(), |(_, at)| *at);
    ctx.upstream_wait = arrived.saturating_duration_since(sent);
    // A streamed body stopped by the inspector aborts the upstream request; the client
    // gets the 451, not whatever the upstream made of a broken request.
    if let Some(slot) = slot {
        let blocked = slot
            .lock()
            .ok()
            .and_then(|mut s| s.blocked.take().map(|b| (b, s.released)));
        if let Some(((d, found), released)) = blocked {
            ctx.set_findings(found);
            ctx.bytes_released = released;
            ctx.decision = Some(d.clone());
            return Err(ProxyError::Blocked(d));
        }
    }
    let (resp, _) = result?;
    let (mut parts, body) = resp.into_parts();
    forward::strip_hop_by_hop(&mut parts.headers);
    forward::add_via(&mut parts.headers);
    mark_report(ctx, &mut parts.headers);
    Ok(Response::from_parts(
        parts,
        body.map_err(BoxError::from).boxed_unsync(),
    ))
}

/// Report mode: the flow passes, and the developer can see it would have been blocked.
fn mark_report(ctx: &RequestCtx, headers: &mut http::HeaderMap) {
    if let Some(d) = ctx
        .decision
        .as_ref()
        .filter(|d| d.verdict == Verdict::Report)
    {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "report; rule={}; reason={}",
            d.rule,
            d.reason.as_str()
        )) {
            headers.insert(REPORT_HEADER, v);
        }
    }
}

/// A WebSocket handshake, already allowed to `addr`: its URL and headers are read as any
/// request's are, then it goes upstream on a connection of its own. On a 101 both upgraded
/// connections are relayed: with `read` (a rule about data applies there), each message the
/// client sends is inspected and judged before it goes on (see [`MessageGate`]); otherwise
/// the frames are spliced unread, as a tunnel's bytes. Any other answer is passed back as
/// a response.
#[allow(clippy::too_many_arguments)]
async fn websocket_flow(
    shared: &Arc<Shared>,
    snapshot: &Arc<Snapshot>,
    ctx: &mut RequestCtx,
    mut req: Request<Incoming>,
    upgrade: HeaderValue,
    (addr, tls, country): (SocketAddr, Option<upstream::TlsDial>, Option<Country>),
    (authority, path_and_query, forwarded): (&HeaderValue, &http::uri::PathAndQuery, ForwardedMode),
    read: bool,
    permits: Vec<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Response<Body>, ProxyError> {
    let mut report = empty_report(shared, snapshot);
    let inspector = &snapshot.inspector;
    inspector.inspect_head(
        req.uri().path(),
        req.uri().query(),
        req.headers(),
        &mut report,
    );
    judge_shown(snapshot, ctx, (addr.ip(), country), &report, read)?;
    record_if_needed(shared, snapshot, ctx).await?;
    let from_client = hyper::upgrade::on(&mut req);
    let dialled = req
        .extensions()
        .get::<InTunnel>()
        .and_then(|t| t.dialled.lock().ok()?.take())
        .filter(|s| s.peer_addr().is_ok_and(|a| a == addr));
    let (mut parts, _) = req.into_parts();
    forward::strip_hop_by_hop(&mut parts.headers);
    forward::keep_upgrade(&mut parts.headers, upgrade);
    forward::add_via(&mut parts.headers);
    forward::add_forwarded(&mut parts.headers, forwarded, ctx.client.ip());
    if read {
        // Only extensions whose frames Sima can read may be negotiated.
        match websocket::readable_offer(&parts.headers) {
            Some(offer) => parts
                .headers
                .insert(header::SEC_WEBSOCKET_EXTENSIONS, offer),
            None => parts.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS),
        };
    }
    let empty = Empty::new().map_err(|never| match never {}).boxed_unsync();
    let dial = Dial { addr, tls };
    let sent = Instant::now();
    let result = shared
        .upstreams
        .upgrade(
            &dial,
            dialled,
            authority,
            path_and_query,
            Request::from_parts(parts, empty),
        )
        .await;
    ctx.upstream_wait = sent.elapsed();
    let mut resp = result?;
    let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let from_upstream = switched.then(|| hyper::upgrade::on(&mut resp));
    let (mut parts, body) = resp.into_parts();
    let upgrade_back = parts.headers.get(header::UPGRADE).cloned();
    forward::strip_hop_by_hop(&mut parts.headers);
    forward::add_via(&mut parts.headers);
    mark_report(ctx, &mut parts.headers);
    let Some(from_upstream) = from_upstream else {
        // Refused (401, 426...): an ordinary response, and the client's upgrade lapses.
        return Ok(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed_unsync(),
        ));
    };
    if let Some(u) = upgrade_back {
        forward::keep_upgrade(&mut parts.headers, u);
    }
    let deflate = websocket::deflate_accepted(&parts.headers);
    let (shared2, id, idle) = (shared.clone(), ctx.id, shared.tunnel_idle);
    let mut gate = read.then(|| MessageGate {
        shared: shared.clone(),
        snapshot: snapshot.clone(),
        judge: judge(
            snapshot,
            ctx,
            (addr.ip(), country),
            Some(path_and_query.clone()),
        ),
        ctx: ctx.clone(),
    });
    let work = async move {
        let _permits = permits;
        match tokio::try_join!(from_client, from_upstream) {
            Ok((client, upstream)) => {
                let _open = Open::count(&shared2.metrics.active_tunnels);
                let (client, upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                let stopping = shared2.drain.stopping();
                let (up, down, end) = match &mut gate {
                    Some(gate) => {
                        let limit = gate.snapshot.inspector.max_encoded_body;
                        let frames = websocket::ClientFrames::new(limit);
                        let frames = if deflate {
                            frames.with_deflate()
                        } else {
                            frames
                        };
                        websocket::relay(client, upstream, frames, idle, gate, stopping).await
                    }
                    None => websocket::splice(client, upstream, idle, stopping).await,
                };
                tracing::debug!(sima.request_id = %id, sima.bytes_up = up, sima.bytes_down = down, sima.tunnel_end = ?end, "WebSocket closed");
            }
            Err(e) => {
                tracing::debug!(sima.request_id = %id, error = %e, "WebSocket upgrade failed")
            }
        }
    };
    spawn_tunnel(shared, id, work);
    Ok(Response::from_parts(
        parts,
        Empty::new().map_err(|never| match never {}).boxed_unsync(),
    ))
}

/// Judges each message a WebSocket's client sends, where a rule about data applies to its
/// destination: inspected as a request body of no declared type is (so JSON, base64 and
/// the rest are read), then decided with the handshake's destination, path and client. A
/// blocked message never goes upstream; it is audited, logged and counted as a blocked
/// request (status 451) under the WebSocket's request id, and both sides are closed (the
/// client with 1008 and the reason).
struct MessageGate {
    shared: Arc<Shared>,
    snapshot: Arc<Snapshot>,
    judge: inspected::Judge,
    /// The handshake's context, for the records of its messages.
    ctx: RequestCtx,
}

impl MessageGate {
    /// Counts the next message (or control frame) on the WebSocket, for its records.
    fn next_message(&mut self) {
        self.ctx.websocket_message = Some(self.ctx.websocket_message.map_or(1, |n| n + 1));
    }

    /// Audits, logs and counts a blocked message (or one that could not be read).
    async fn blocked(&mut self, d: Decision, found: inspected::Found, start: Instant) {
        self.ctx.set_findings(found);
        self.ctx.decision = Some(d.clone());
        // A failed record is counted and logged by the audit writer; the message is not
        // sent either way.
        let _ = Box::pin(audit_flow(&self.shared, &self.snapshot, &self.ctx, &d)).await;
        tracing::debug!(sima.request_id = %self.ctx.id, rule = %d.rule, "WebSocket message blocked: {}", d.message);
        finish(
            &self.shared,
            &self.ctx,
            Verdict::Deny,
            d.reason,
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            start,
        );
    }
}

impl websocket::Gate for MessageGate {
    async fn judge(&mut self, ready: &websocket::Ready) -> Result<(), websocket::Refusal> {
        let start = Instant::now();
        self.next_message();
        let inspector = self.snapshot.inspector.clone();
        let mut report = empty_report(&self.shared, &self.snapshot);
        // A close frame's first two bytes are its code.
        let text = match ready.kind {
            Some(websocket::Kind::Close) => ready.payload.get(2..).unwrap_or_default(),
            _ => &ready.payload,
        };
        self.shared
            .metrics
            .inspected_bytes
            .inc_by(text.len() as u64);
        let read = inspector
            .body(&http::HeaderMap::new())
            .and_then(|mut scan| {
                scan.feed(text, &mut report)?;
                scan.finish(&mut report)
            });
        let d = match read {
            Ok(()) => self.judge.decide(DataView::Seen(report.seen())),
            Err(_) => self.judge.decide(DataView::Uninspectable),
        };
        let found = inspected::found(&report, inspector.detector());
        match d.verdict {
            Verdict::Deny => {
                let reason = format!(
                    "Sima blocked this message: rule {}, request {}",
                    d.rule, self.ctx.id
                );
                self.blocked(d, found, start).await;
                Err(websocket::Refusal {
                    code: websocket::code::POLICY_VIOLATION,
                    reason,
                })
            }
            _ if needs_record(&d, &found) => {
                self.ctx.set_findings(found);
                self.ctx.decision = Some(d.clone());
                let recorded = Box::pin(audit_flow(&self.shared, &self.snapshot, &self.ctx, &d))
                    .await
                    .map_err(|_| websocket::Refusal {
                        code: websocket::code::INTERNAL_ERROR,
                        reason: "Sima: the audit log cannot be written, so this message cannot be recorded".into(),
                    });
                if recorded.is_ok() && d.verdict == Verdict::Report {
                    // Counted as a report-mode request is, for a rollout's dashboards.
                    finish(
                        &self.shared,
                        &self.ctx,
                        Verdict::Report,
                        d.reason,
                        StatusCode::SWITCHING_PROTOCOLS,
                        start,
                    );
                }
                recorded
            }
            _ => Ok(()),
        }
    }

    async fn fault(&mut self, fault: &websocket::Fault) {
        match fault {
            websocket::Fault::Protocol(why) => {
                tracing::debug!(sima.request_id = %self.ctx.id, "WebSocket closed: {why}")
            }
            // A message Sima cannot read: the policy's `uninspectable` action says whether
            // that is a block to record. It is not sent either way.
            websocket::Fault::TooBig { .. }
            | websocket::Fault::Extension
            | websocket::Fault::Corrupt => {
                // The message it would have been.
                self.next_message();
                let d = self.judge.decide(DataView::Uninspectable);
                if d.verdict == Verdict::Deny {
                    self.blocked(d, Vec::new(), Instant::now()).await;
                } else {
                    tracing::warn!(sima.request_id = %self.ctx.id, "WebSocket closed: {}", fault.close().1);
                }
            }
        }
    }
}

/// Judges what a flow shows before its content goes (a tunnel's host name, a WebSocket
/// handshake's URL and headers): when that holds personal data, or `always` (the content
/// will be judged too, so the flow has a decision of its own from the start).
fn judge_shown(
    snapshot: &Arc<Snapshot>,
    ctx: &mut RequestCtx,
    at: (IpAddr, Option<Country>),
    report: &Report,
    always: bool,
) -> Result<(), ProxyError> {
    if report.seen().is_empty() && !always {
        return Ok(());
    }
    let d = judge(snapshot, ctx, at, None).decide(DataView::Seen(report.seen()));
    ctx.set_findings(inspected::found(report, snapshot.inspector.detector()));
    ctx.decision = Some(d.clone());
    if d.verdict == Verdict::Deny {
        return Err(ProxyError::Blocked(d));
    }
    Ok(())
}

/// The judge of a request's data at the address chosen for it.
fn judge(
    snapshot: &Arc<Snapshot>,
    ctx: &RequestCtx,
    (addr, country): (IpAddr, Option<Country>),
    path: Option<http::uri::PathAndQuery>,
) -> inspected::Judge {
    inspected::Judge {
        snapshot: snapshot.clone(),
        host: ctx.host.clone(),
        addr,
        country,
        method: ctx.method.clone(),
        path,
        groups: ctx.groups.clone(),
    }
}

/// An empty report that fingerprints the values it will hold.
fn empty_report(shared: &Shared, snapshot: &Snapshot) -> Report {
    Report::with_fingerprints(crate::inspect::Fingerprints(
        shared.fingerprint_fn.clone(),
        snapshot.inspector.detector().clone(),
    ))
}

/// [`handle`] behind a pointer: a tunnel's requests are handled from inside a request's
/// own future, and the compiler cannot see through that cycle to prove it `Send`.
fn handle_boxed(
    shared: Arc<Shared>,
    client: SocketAddr,
    req: Request<Incoming>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>>
{
    Box::pin(handle(shared, client, req))
}

/// Runs a tunnel (or a WebSocket) as a task of its own, watched by the drain from now:
/// before the client connection hands over to it, so that a drain never finds neither of
/// the two live. A tunnel cannot be asked to close: the drain waits for it, and cuts it
/// when the drain time is over.
fn spawn_tunnel(
    shared: &Shared,
    id: RequestId,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let watched = shared.drain.watch(crate::drain::Lasting(Box::pin(work)));
    tokio::spawn(async move {
        if watched.await.is_none() {
            tracing::debug!(sima.request_id = %id, "tunnel cut: drain time over");
        }
    });
}

/// Counts one open tunnel in a gauge for as long as it lives, however its task ends
/// (a tunnel cut at the end of the drain is dropped mid-way).
struct Open<'a>(&'a prometheus::IntGauge);

impl<'a> Open<'a> {
    fn count(gauge: &'a prometheus::IntGauge) -> Open<'a> {
        gauge.inc();
        Open(gauge)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Marks a request read inside a `CONNECT` tunnel to this destination.
#[derive(Clone)]
struct InTunnel {
    to: target::Authority,
    /// The connection dialled for the tunnel, when its first request is a WebSocket
    /// handshake: kept for that handshake, since an upgraded connection is never pooled.
    dialled: Arc<std::sync::Mutex<Option<TcpStream>>>,
}

/// Runs an approved tunnel. When the client opens it with plain HTTP, the dialled stream
/// goes to the upstream pool (or to the WebSocket handshake it opens with) and each
/// request inside is served like a forward-proxy
/// request to the tunnel's destination: resolved, located, decided, inspected, audited and logged on its own, with
/// the tunnel's client and `Proxy-Authorization`. Anything else is spliced unread.
#[allow(clippy::too_many_arguments)]
async fn run_tunnel<S>(
    shared: &Arc<Shared>,
    client: SocketAddr,
    tunnel: InTunnel,
    auth: Option<HeaderValue>,
    mut io: S,
    mut stream: TcpStream,
    permits: Vec<tokio::sync::OwnedSemaphorePermit>,
    id: RequestId,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let idle = shared.tunnel_idle;
    let (up, down, end) = match tunnel::opening(&mut io, &mut stream, idle).await {
        Ok(tunnel::Opening::Http { first, websocket }) => {
            if websocket {
                if let Ok(mut slot) = tunnel.dialled.lock() {
                    *slot = Some(stream);
                }
            } else if let Ok(addr) = stream.peer_addr() {
                shared.upstreams.adopt(addr, stream).await;
            }
            // Each request inside takes its own permits.
            drop(permits);
            tracing::debug!(sima.request_id = %id, "tunnel carries plain HTTP: read per request");
            let shared2 = shared.clone();
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(tunnel.clone());
                let h = req.headers_mut();
                h.remove(header::PROXY_AUTHORIZATION);
                if let Some(a) = &auth {
                    h.insert(header::PROXY_AUTHORIZATION, a.clone());
                }
                handle_boxed(shared2.clone(), client, req)
            });
            let io = TokioIo::new(tunnel::Replay::new(first, io));
            // Drained as a client connection is: its requests finish, then it closes.
            let conn = shared.server.serve_connection_with_upgrades(io, svc);
            if let Some(Err(e)) = shared.drain.watch(conn).await {
                tracing::debug!(sima.request_id = %id, error = %e, "HTTP inside tunnel ended with error");
            }
            return;
        }
        Ok(tunnel::Opening::Opaque {
            from_client,
            from_upstream,
        }) => {
            let _permits = permits;
            tunnel::splice_after(io, stream, &from_client, &from_upstream, idle).await
        }
        Ok(tunnel::Opening::Idle) => (0, 0, tunnel::TunnelEnd::Idle),
        Err(_) => (0, 0, tunnel::TunnelEnd::Error),
    };
    tracing::debug!(sima.request_id = %id, sima.bytes_up = up, sima.bytes_down = down, sima.tunnel_end = ?end, "tunnel closed");
}

/// A streamed body whose final decision lets it pass but wants a record (report mode,
/// audited exceptions) is recorded once the body has been judged whole. The bytes are
/// already on their way by then, so a failed record is counted and logged, not enforced.
fn record_when_passed(
    shared: Arc<Shared>,
    snapshot: Arc<Snapshot>,
    mut ctx: RequestCtx,
    slot: inspected::VerdictSlot,
    done: tokio::sync::oneshot::Receiver<()>,
) {
    tokio::spawn(async move {
        if done.await.is_err() {
            return;
        }
        let passed = slot.lock().ok().and_then(|mut s| s.passed.take());
        if let Some((d, found)) = passed {
            if needs_record(&d, &found) {
                ctx.set_findings(found);
                let _ = Box::pin(audit_flow(&shared, &snapshot, &ctx, &d)).await;
            }
        }
    });
}

/// A flow that passes but must be recorded (report mode, audited exceptions) is only
/// let through once its record is on disk: no record, no flow.
async fn record_if_needed(
    shared: &Shared,
    snapshot: &Snapshot,
    ctx: &RequestCtx,
) -> Result<(), ProxyError> {
    match ctx
        .decision
        .as_ref()
        .filter(|d| needs_record(d, &ctx.findings))
    {
        Some(d) => Box::pin(audit_flow(shared, snapshot, ctx, d)).await,
        None => Ok(()),
    }
}

/// Report-mode flows always; allowed flows only when their rule asks for an audit and
/// personal data was found.
fn needs_record(d: &Decision, found: &inspected::Found) -> bool {
    match d.verdict {
        Verdict::Report => true,
        Verdict::Allow => d.audit && !found.is_empty(),
        Verdict::Deny => false,
    }
}

/// Writes the audit record for a flow and waits until it is on disk.
/// Callers box this future: a record is rare next to the requests that pass without one,
/// and inline it would enlarge every request's future.
async fn audit_flow(
    shared: &Shared,
    snapshot: &Snapshot,
    ctx: &RequestCtx,
    d: &Decision,
) -> Result<(), ProxyError> {
    use crate::audit;
    let action = match d.verdict {
        Verdict::Deny => audit::Action::Block,
        Verdict::Report => audit::Action::Report,
        Verdict::Allow => audit::Action::Allow,
    };
    let rec = audit::AuditRecord {
        time: audit::Timestamp::now(),
        request_id: ctx.id.as_str().to_owned(),
        client: audit::Client {
            address: ctx.client.ip(),
            group: (!ctx.groups.is_empty()).then(|| ctx.groups.join(",")),
            identity: ctx.user.clone(),
        },
        method: ctx.method.to_string(),
        host: ctx.host.to_string(),
        port: ctx.port,
        address: ctx.addr,
        country: ctx
            .country
            .map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
        transport: match ctx.transport {
            Transport::Forward => audit::Transport::Http,
            Transport::Connect => audit::Transport::Tunnel,
            Transport::Reverse => audit::Transport::Route,
            Transport::Tunnelled => audit::Transport::Intercepted,
        },
        path: match ctx.target.path_and_query() {
            Some(p) => audit::strip_query_values(p.as_str()),
            // Authority form (CONNECT): the target is `host:port`.
            None => audit::strip_query_values(&ctx.target.to_string()),
        },
        rule: d.rule.to_string(),
        mode: if snapshot.policy.mode == policy::Mode::Report || d.verdict == Verdict::Report {
            audit::Mode::Report
        } else {
            audit::Mode::Enforce
        },
        action,
        reason: d.reason.as_str().to_owned(),
        message: Some(d.message.to_string()),
        citation: d.citation.as_deref().map(str::to_owned),
        data: ctx.findings.clone(),
        bytes_released: ctx.bytes_released,
        websocket_message: ctx.websocket_message,
        policy: audit::PolicyRef {
            name: snapshot.policy.name.to_string(),
            hash: snapshot.policy.hash.clone(),
        },
        sima_version: crate::VERSION.to_owned(),
    };
    match shared.audit.record(rec).await {
        Ok(()) => {
            shared
                .metrics
                .audit_records
                .with_label_values(&[action.as_str()])
                .inc();
            Ok(())
        }
        Err(e) => {
            let kind = match &e {
                audit::AuditError::DiskFull { .. } => "disk_full",
                audit::AuditError::QueueFull { .. } => "queue_full",
                audit::AuditError::Serialize { .. } => "serialize",
                _ => "io",
            };
            shared
                .metrics
                .audit_failures
                .with_label_values(&[kind])
                .inc();
            tracing::error!(sima.request_id = %ctx.id, error = %e, "audit record could not be written; failing closed");
            Err(ProxyError::AuditUnavailable(e.to_string()))
        }
    }
}

/// `Proxy-Authorization: Basic base64(user:password)`, if present.
fn proxy_credentials(headers: &http::HeaderMap) -> Result<Option<(String, String)>, ProxyError> {
    use base64::Engine;
    let Some(v) = headers.get(header::PROXY_AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || ProxyError::Auth(policy::AuthError::Malformed);
    let v = v.to_str().map_err(|_| malformed())?;
    let (scheme, b64) = v.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| malformed())?;
    let text = String::from_utf8(raw).map_err(|_| malformed())?;
    let (u, p) = text.split_once(':').ok_or_else(malformed)?;
    Ok(Some((u.to_owned(), p.to_owned())))
}

fn allowed_pending_inspection() -> Decision {
    Decision {
        verdict: Verdict::Allow,
        reason: Reason::Allowed,
        rule: policy::shared_str!("pending-inspection"),
        message: policy::shared_str!("allowed so far; the request is being inspected"),
        citation: None,
        audit: false,
    }
}

/// Locates an address outside the guarded ranges (overrides, then the database), timing
/// it for the geo histogram. A guarded address passes only by an override, which is then
/// its location: no lookup, and no timing (two clock reads and an observation would cost
/// more than the match).
fn locate(
    shared: &Shared,
    geo: &crate::geo::Locator,
    ip: IpAddr,
) -> (Option<crate::geo::Country>, GeoSource) {
    let t = Instant::now();
    let (located, result) = match geo.locate(ip) {
        Ok(l) => {
            let result = if l.country.is_some() {
                GeoResult::Hit
            } else {
                GeoResult::Miss
            };
            ((l.country, l.source), result)
        }
        Err(e) => {
            tracing::warn!(error = %e, "geo lookup failed; treating the country as unknown");
            ((None, GeoSource::Database), GeoResult::Error)
        }
    };
    shared.metrics.geo_lookup(result, t.elapsed().as_secs_f64());
    located
}

/// Judges every address; returns the best one the policy allows, or why none is allowed.
/// `opaque`: the flow's content will pass unread (a tunnel, a WebSocket), so the policy's
/// `tunnels` action stands for the rules about data.
fn choose(
    shared: &Shared,
    snapshot: &Snapshot,
    ctx: &RequestCtx,
    (ips, port): (&[IpAddr], u16),
    path: &str,
    opaque: bool,
) -> Result<Candidate, ProxyError> {
    let mut forbidden = None;
    let mut denied: Option<Candidate> = None;
    let mut best: Option<(u8, Candidate)> = None;
    let method = ctx.method.as_str();
    for &ip in ips {
        let sock = SocketAddr::new(ip, port);
        if shared.is_own(sock) {
            return Err(ProxyError::ProxyLoop { addr: sock });
        }
        let geo = &snapshot.geo;
        // A guarded address passes only when `geo.overrides` declares it; that answer is
        // its location too (no second walk of the override table).
        let declared = match guard::classify(ip) {
            Some(class) => match geo.override_for(ip) {
                Some(country) => Some(country),
                None => {
                    forbidden.get_or_insert((ip, class));
                    continue;
                }
            },
            None => None,
        };
        let (country, source) = match declared {
            Some(country) => (Some(country), GeoSource::Override),
            None => locate(shared, geo, ip),
        };
        let facts = Facts {
            host: &ctx.host,
            addr: ip,
            country,
            method,
            path,
            client_groups: &ctx.groups,
            data: if opaque {
                DataView::Tunnel
            } else {
                DataView::NotInspected
            },
        };
        let outcome = policy::decide(&snapshot.policy, &facts);
        let rank = match &outcome {
            Outcome::Decided(d) if d.verdict == Verdict::Allow => 0,
            Outcome::Decided(d) if d.verdict == Verdict::Report => 1,
            Outcome::NeedsInspection => 2,
            Outcome::Decided(_) => {
                if denied.is_none() {
                    denied = Some(Candidate {
                        ip,
                        country,
                        source,
                        outcome,
                    });
                }
                continue;
            }
        };
        let cand = Candidate {
            ip,
            country,
            source,
            outcome,
        };
        if best.as_ref().is_none_or(|(r, _)| rank < *r) {
            best = Some((rank, cand));
        }
    }
    if let Some((_, c)) = best {
        return Ok(c);
    }
    if let Some(c) = denied {
        return Ok(c);
    }
    match forbidden {
        Some((addr, class)) => Err(ProxyError::ForbiddenAddress {
            host: ctx.host.to_string(),
            addr,
            class,
        }),
        None => Err(ProxyError::Internal("no address to judge".into())),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    // A byte scan: `str`'s char searcher cost about 150 instructions on every forwarded
    // request's host.
    host.bytes()
        .rposition(|b| b == b':')
        .map_or(host, |i| &host[..i])
}

fn log_error(ctx: &RequestCtx, err: &ProxyError) {
    match err.side() {
        respond::Side::Internal => {
            tracing::error!(sima.request_id = %ctx.id, error = %err, "request failed")
        }
        respond::Side::Upstream => {
            tracing::warn!(sima.request_id = %ctx.id, error = %err, "upstream failed")
        }
        respond::Side::Client => {
            tracing::debug!(sima.request_id = %ctx.id, error = %err, "request refused")
        }
    }
}

/// Step 9: one canonical log line and the metrics, on every exit path.
fn finish(
    shared: &Shared,
    ctx: &RequestCtx,
    verdict: Verdict,
    reason: Reason,
    status: StatusCode,
    start: Instant,
) {
    let now = Instant::now();
    let elapsed = now.saturating_duration_since(start);
    shared
        .metrics
        .overhead
        .observe(elapsed.saturating_sub(ctx.upstream_wait).as_secs_f64());
    let country = ctx.country.as_ref().map_or("unknown", |c| c.as_str());
    let counted_country = if ctx.addr.is_some() {
        Some(country)
    } else {
        None
    };
    shared.metrics.request(
        verdict,
        reason,
        ctx.transport,
        elapsed.as_secs_f64(),
        counted_country,
    );
    for class in &ctx.data_classes {
        shared.metrics.detection(class, verdict);
    }
    let rule = ctx.decision.as_ref().map_or("-", |d| &*d.rule);
    let classes = ctx.data_classes.join(",");
    let line = crate::telemetry::AccessLine {
        request_id: ctx.id.as_str(),
        client: ctx.client.ip(),
        method: ctx.method.as_str(),
        transport: ctx.transport.as_str(),
        host: &ctx.host,
        port: ctx.port,
        peer: ctx.addr,
        country,
        decision: verdict.as_str(),
        reason: reason.as_str(),
        rule,
        data_classes: &classes,
        status: status.as_u16(),
        duration_ms: elapsed.as_secs_f64() * 1000.0,
    };
    if !crate::telemetry::access(&line, now) {
        tracing::info!(
            target: "sima::request",
            request_id = line.request_id,
            decision = line.decision,
            reason = line.reason,
            rule = line.rule,
            status = line.status,
            "request"
        );
    }
}

/// A request id: 16 lower-case hex digits, held inline (this is on every request, and a
/// `String` was an allocation each).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 16]);

impl RequestId {
    fn new(n: u64) -> Self {
        // Not `format!` or `hex::encode`, which push one `char` at a time.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 16];
        for (i, d) in text.iter_mut().enumerate() {
            *d = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
        }
        Self(text)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written; the fallback is unreachable.
        std::str::from_utf8(&self.0).unwrap_or("0000000000000000")
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn request_ids_are_sixteen_hex_digits(n: u64) {
            let id = super::RequestId::new(n);
            prop_assert_eq!(id.as_str(), format!("{n:016x}"));
            prop_assert_eq!(id.to_string(), format!("{n:016x}"));
        }
    }
}
