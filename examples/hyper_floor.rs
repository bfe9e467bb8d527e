//! The floor for `bench/run.sh`: the least any proxy built on hyper and tokio does per
//! request, with none of Sima's work. It accepts HTTP/1.1, forwards every request to one
//! upstream over pooled keep-alive connections and streams the response back: no target
//! parsing, resolution, geolocation, policy, inspection, header rewriting, timeouts, log or
//! metrics. It is a measuring stick, not a proxy to deploy.
//!
//! It runs on one thread (as Sima does in the benchmark), with the same hyper, tokio and
//! allocator as Sima, so `Sima / floor` is what Sima's own work costs and `floor / nginx`
//! is the most a hyper-based proxy can reach on the machine.
//!
//! Usage: `hyper_floor LISTEN_ADDR UPSTREAM_ADDR` (e.g. `127.0.0.1:18082 127.0.0.1:18080`).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Body = UnsyncBoxBody<Bytes, hyper::Error>;
/// Idle upstream connections, newest last. One thread: no lock.
type Pool = Rc<RefCell<Vec<SendRequest<Incoming>>>>;

async fn forward(
    pool: Pool,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let pooled = {
        let mut idle = pool.borrow_mut();
        idle.retain(|s| !s.is_closed());
        idle.iter()
            .rposition(|s| s.is_ready())
            .map(|i| idle.remove(i))
    };
    let mut sender = match pooled {
        Some(s) => s,
        None => match dial(upstream).await {
            Some(s) => s,
            None => return Ok(bad_gateway()),
        },
    };
    let (mut parts, body) = req.into_parts();
    // Absolute-form targets become origin-form, as any forwarder must.
    if parts.uri.scheme().is_some() {
        if let Some(pq) = parts.uri.path_and_query() {
            parts.uri = pq.clone().into();
        }
    }
    let resp = sender
        .send_request(Request::from_parts(parts, body))
        .await?;
    // Back in the pool as soon as the head is in; hyper marks it ready once the body ends.
    pool.borrow_mut().push(sender);
    Ok(resp.map(BodyExt::boxed_unsync))
}

async fn dial(upstream: SocketAddr) -> Option<SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::task::spawn_local(conn);
    Some(sender)
}

fn bad_gateway() -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from_static(b"upstream unreachable\n"))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(upstream)) = (
        args.first().and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
    ) else {
        eprintln!(
            "usage: hyper_floor LISTEN_ADDR UPSTREAM_ADDR (e.g. 127.0.0.1:18082 127.0.0.1:18080)"
        );
        std::process::exit(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hyper_floor: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("hyper_floor: cannot listen on {listen}: {e}");
                std::process::exit(1);
            }
        };
        eprintln!("hyper_floor: {listen} -> {upstream}");
        let pool: Pool = Rc::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let pool = pool.clone();
            tokio::task::spawn_local(async move {
                let svc =
                    hyper::service::service_fn(move |req| forward(pool.clone(), upstream, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
