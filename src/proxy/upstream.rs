//! Upstream connections: dials only a checked `SocketAddr` (never a name), originates TLS
//! with rustls, negotiates h2 or http/1.1 by ALPN, and pools idle connections per
//! (address, TLS name).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use http::{header, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Body;

/// TLS to originate on a connection.
#[derive(Clone)]
pub struct TlsDial {
    /// rustls config (roots, ALPN).
    pub config: Arc<ClientConfig>,
    /// Name sent as SNI and verified against the certificate.
    pub server_name: ServerName<'static>,
    /// Distinguishes configs in the pool key (routes with different CA bundles).
    pub config_id: usize,
}

/// Where to connect: a checked address, with or without TLS.
#[derive(Clone)]
pub struct Dial {
    /// The address the policy approved.
    pub addr: SocketAddr,
    /// TLS, for https upstreams.
    pub tls: Option<TlsDial>,
}

/// Failures talking to an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed.
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// Address.
        addr: SocketAddr,
        /// IO error.
        #[source]
        source: std::io::Error,
    },
    /// TCP or TLS connect took too long.
    #[error("connect to {addr} timed out after {after:?}")]
    ConnectTimeout {
        /// Address.
        addr: SocketAddr,
        /// Timeout.
        after: Duration,
    },
    /// TLS handshake or certificate verification failed.
    #[error("TLS with {name} at {addr} failed: {detail}")]
    Tls {
        /// Address.
        addr: SocketAddr,
        /// Server name.
        name: String,
        /// rustls' message (e.g. invalid peer certificate: UnknownIssuer).
        detail: String,
    },
    /// The upstream did not send a response head in time.
    #[error("upstream {addr} sent no response within {after:?}")]
    ResponseTimeout {
        /// Address.
        addr: SocketAddr,
        /// Timeout.
        after: Duration,
    },
    /// HTTP-level failure (reset, malformed response, aborted request).
    #[error("upstream {addr}: {source}")]
    Http {
        /// Address.
        addr: SocketAddr,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    addr: SocketAddr,
    tls: Option<(String, usize)>,
}

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
    fn is_ready(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_ready(),
            Sender::H2(s) => s.is_ready(),
        }
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed for the response head.
    pub response_timeout: Duration,
    /// Idle pooled connection lifetime.
    pub pool_idle: Duration,
    /// Idle connections kept per key.
    pub max_idle_per_key: usize,
}

/// Expired or closed connections dropped from the old end of a key's list per checkout.
const STALE_DROPS_PER_CHECKOUT: usize = 4;

/// The pool of upstream connections.
pub struct Upstreams {
    /// Per key, oldest first. Looked up twice per request, so hashed with foldhash
    /// (randomly seeded) rather than SipHash, which cost more than the rest of the pool.
    idle: Mutex<HashMap<Key, Vec<Idle>, foldhash::fast::RandomState>>,
    settings: UpstreamSettings,
    timers: crate::coarse::Coarse,
}

// === impl Upstreams ===

impl Upstreams {
    /// An empty pool.
    pub fn new(settings: UpstreamSettings, timers: crate::coarse::Coarse) -> Upstreams {
        Upstreams {
            idle: Mutex::new(HashMap::default()),
            settings,
            timers,
        }
    }

    /// Sends `req` to `dial.addr`. `authority` is the Host (h1) / `:authority` (h2) value;
    /// `path_and_query` the origin-form target. `sent` is the caller's reading of the clock
    /// just before: the pool and the response timeout reuse it, and the response comes back
    /// with the instant its head arrived. A clock read costs about 30 ns on a VM, and a
    /// request used to make five of them here.
    pub async fn send(
        &self,
        dial: &Dial,
        authority: &HeaderValue,
        path_and_query: &PathAndQuery,
        mut req: Request<Body>,
        sent: Instant,
    ) -> Result<(Response<Incoming>, Instant), UpstreamError> {
        let key = Key {
            addr: dial.addr,
            tls: dial
                .tls
                .as_ref()
                .map(|t| (t.server_name.to_str().into_owned(), t.config_id)),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (sender, reused) = match self.checkout(&key, sent) {
                Some(s) => (s, true),
                // Boxed: dialling (TCP, TLS, an h2 handshake) is a 6 KiB future, and inline
                // it made every request's future that much larger, dial or not.
                None => (Box::pin(self.connect(dial)).await?, false),
            };
            // The response timeout runs from when the request can go out: after the dial,
            // if there was one.
            let ready = if reused { sent } else { Instant::now() };
            let deadline = ready + self.settings.response_timeout;
            let result = match sender {
                Sender::H1(mut s) => {
                    set_target(
                        &mut req,
                        false,
                        dial.tls.is_some(),
                        authority,
                        path_and_query,
                    );
                    let fut = s.try_send_request(req);
                    let r = self.timed(dial.addr, deadline, fut).await;
                    let arrived = Instant::now();
                    if r.as_ref().is_ok_and(|r| r.is_ok()) {
                        self.checkin(&key, Sender::H1(s), arrived);
                    }
                    r?.map(|resp| (resp, arrived))
                }
                Sender::H2(mut s) => {
                    set_target(
                        &mut req,
                        true,
                        dial.tls.is_some(),
                        authority,
                        path_and_query,
                    );
                    let fut = s.try_send_request(req);
                    self.checkin(&key, Sender::H2(s), ready);
                    let r = self.timed(dial.addr, deadline, fut).await?;
                    r.map(|resp| (resp, Instant::now()))
                }
            };
            match result {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    // A pooled connection closed under us before the request went out:
                    // the request is intact, so one retry on a fresh connection is safe.
                    Some(back) if reused && attempt == 1 => req = back,
                    _ => {
                        return Err(UpstreamError::Http {
                            addr: dial.addr,
                            source: e.into_error(),
                        })
                    }
                },
            }
        }
    }

    async fn timed<F, T>(
        &self,
        addr: SocketAddr,
        deadline: Instant,
        fut: F,
    ) -> Result<T, UpstreamError>
    where
        F: std::future::Future<Output = T>,
    {
        // A coarse timer: the response timeout is long and almost never reached, and a
        // tokio timer per request cost a wheel insertion and removal (see `coarse`).
        let expiry = self.timers.sleep_until(deadline);
        tokio::pin!(fut);
        tokio::select! {
            biased;
            r = &mut fut => Ok(r),
            () = expiry => Err(UpstreamError::ResponseTimeout {
                addr,
                after: self.settings.response_timeout,
            }),
        }
    }

    fn checkout(&self, key: &Key, now: Instant) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        // One subtraction per checkout; then each entry costs a comparison of instants.
        let cutoff = now.checked_sub(self.settings.pool_idle);
        let fresh = |i: &Idle| cutoff.is_none_or(|c| i.since > c) && !i.sender.is_closed();
        // The oldest entries are the likeliest to have expired or been closed by the server.
        // Dropping a few from the front per checkout keeps the list clean without walking
        // all of it on every request (with hundreds pooled, that walk was the pool's cost).
        let stale = list
            .iter()
            .take(STALE_DROPS_PER_CHECKOUT)
            .take_while(|i| !fresh(i))
            .count();
        list.drain(..stale);
        // Newest first: the connection most recently used is the least likely to have been
        // closed by the server. An h1 connection still streaming its previous response is
        // not ready: leave it. h2 connections multiplex: hand out a clone, keep the original.
        let mut pos = list.len();
        while pos > 0 {
            pos -= 1;
            let entry = &list[pos];
            if !entry.sender.is_ready() {
                if entry.sender.is_closed() {
                    list.remove(pos);
                }
                continue;
            }
            if !fresh(entry) {
                list.remove(pos);
                continue;
            }
            return match &entry.sender {
                Sender::H2(s) => Some(Sender::H2(s.clone())),
                Sender::H1(_) => Some(list.remove(pos).sender),
            };
        }
        None
    }

    fn checkin(&self, key: &Key, sender: Sender, now: Instant) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        // Look up before inserting: `entry` would clone the key (a String for TLS) each time.
        if !idle.contains_key(key) {
            idle.insert(key.clone(), Vec::new());
        }
        let Some(list) = idle.get_mut(key) else {
            return;
        };
        if let Sender::H2(_) = sender {
            // An h2 connection stays pooled while it serves requests: each use renews it,
            // or a busy connection would count as idle since its first request and be
            // replaced by a new one (a TLS handshake) every `pool_idle`.
            if let Some(open) = list
                .iter_mut()
                .find(|i| matches!(&i.sender, Sender::H2(s) if !s.is_closed()))
            {
                open.since = now;
                return;
            }
        }
        // h1 connections are checked in as soon as the response head arrives, while the
        // body still streams: a busy connection is kept (it is idle again in a moment), and
        // the cap applies to the idle ones. Capping the whole list instead closed a
        // connection after nearly every response once more requests were in flight than
        // the cap, and opened a new one for the next.
        list.push(Idle { sender, since: now });
        let max = self.settings.max_idle_per_key;
        if list.len() > max {
            list.retain(|i| !i.sender.is_closed());
            let mut idle = list.iter().filter(|i| i.sender.is_ready()).count();
            // Oldest first: they are the ones the server is likeliest to close.
            list.retain(|i| {
                if idle > max && i.sender.is_ready() {
                    idle -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    async fn connect(&self, dial: &Dial) -> Result<Sender, UpstreamError> {
        let tcp = self.tcp(dial.addr).await?;
        let http_err = |source| UpstreamError::Http {
            addr: dial.addr,
            source,
        };
        match &dial.tls {
            None => {
                let (sender, conn) = http1::Builder::new()
                    .handshake(TokioIo::new(tcp))
                    .await
                    .map_err(http_err)?;
                tokio::spawn(conn);
                Ok(Sender::H1(sender))
            }
            Some(tls) => {
                let stream = self.tls(dial.addr, tls, tls.config.clone(), tcp).await?;
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                if h2 {
                    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                        .timer(TokioTimer::new())
                        .handshake(TokioIo::new(stream))
                        .await
                        .map_err(http_err)?;
                    tokio::spawn(conn);
                    Ok(Sender::H2(sender))
                } else {
                    let (sender, conn) = http1::Builder::new()
                        .handshake(TokioIo::new(stream))
                        .await
                        .map_err(http_err)?;
                    tokio::spawn(conn);
                    Ok(Sender::H1(sender))
                }
            }
        }
    }

    /// Pools a plain TCP connection dialled for a tunnel that turned out to carry plain
    /// HTTP: its requests are sent through the pool, and the first finds this one there
    /// instead of dialling again (the upstream would have seen a connection open and close
    /// unused).
    pub async fn adopt(&self, addr: SocketAddr, tcp: TcpStream) {
        match http1::Builder::new().handshake(TokioIo::new(tcp)).await {
            Ok((mut sender, conn)) => {
                tokio::spawn(conn);
                // Ready once its task has run; a checkout finds an unready one busy. The
                // tunnel's first request is usually read already and about to check out.
                if sender.ready().await.is_err() {
                    return;
                }
                let key = Key { addr, tls: None };
                self.checkin(&key, Sender::H1(sender), Instant::now());
            }
            Err(e) => {
                tracing::debug!(upstream.address = %addr, error = %e, "tunnel connection not pooled")
            }
        }
    }

    /// Sends an upgrade request (a WebSocket handshake) on a connection of its own (`tcp`
    /// when one is dialled to `dial.addr` already: a tunnel's), over HTTP/1.1 even where
    /// the upstream would choose h2: an upgraded connection is the upstream half of a
    /// tunnel, never pooled. The response (101 or a refusal) comes back as any other; its
    /// upgrade is taken with `hyper::upgrade::on`.
    pub async fn upgrade(
        &self,
        dial: &Dial,
        tcp: Option<TcpStream>,
        authority: &HeaderValue,
        path_and_query: &PathAndQuery,
        mut req: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let addr = dial.addr;
        let http_err = |source| UpstreamError::Http { addr, source };
        let tcp = match tcp {
            Some(tcp) => tcp,
            None => self.tcp(addr).await?,
        };
        let mut sender = match &dial.tls {
            None => upgradeable(tcp).await,
            Some(tls) => {
                let mut config = (*tls.config).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                upgradeable(self.tls(addr, tls, Arc::new(config), tcp).await?).await
            }
        }
        .map_err(http_err)?;
        set_target(
            &mut req,
            false,
            dial.tls.is_some(),
            authority,
            path_and_query,
        );
        let deadline = Instant::now() + self.settings.response_timeout;
        self.timed(addr, deadline, sender.send_request(req))
            .await?
            .map_err(http_err)
    }

    /// A TCP connection to a checked address, within the connect timeout.
    async fn tcp(&self, addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
        let after = self.settings.connect_timeout;
        let tcp = tokio::time::timeout(after, TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout { addr, after })?
            .map_err(|source| UpstreamError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// TLS on `tcp` with `config`, verifying `tls.server_name`, within the connect timeout.
    async fn tls(
        &self,
        addr: SocketAddr,
        tls: &TlsDial,
        config: Arc<ClientConfig>,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
        let after = self.settings.connect_timeout;
        tokio::time::timeout(
            after,
            TlsConnector::from(config).connect(tls.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| UpstreamError::ConnectTimeout { addr, after })?
        .map_err(|e| UpstreamError::Tls {
            addr,
            name: tls.server_name.to_str().into_owned(),
            detail: e.to_string(),
        })
    }
}

/// An HTTP/1.1 client connection on `io` whose task hands the connection over on a 101.
async fn upgradeable<T>(io: T) -> Result<http1::SendRequest<Body>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn.with_upgrades());
    Ok(sender)
}

/// h1 wants origin-form plus `Host`; h2 wants the absolute URI (`:authority`) and no `Host`.
/// Both share the parsed request's buffers: no copy, no re-parse.
fn set_target(
    req: &mut Request<Body>,
    h2: bool,
    tls: bool,
    authority: &HeaderValue,
    path_and_query: &PathAndQuery,
) {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path_and_query.clone());
    if h2 {
        parts.scheme = Some(if tls {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        });
        parts.authority = http::uri::Authority::try_from(authority.as_bytes()).ok();
        req.headers_mut().remove(header::HOST);
        *req.version_mut() = http::Version::HTTP_2;
    } else {
        if req.headers().get(header::HOST) != Some(authority) {
            req.headers_mut().insert(header::HOST, authority.clone());
        }
        *req.version_mut() = http::Version::HTTP_11;
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}
