//! The admin listener: `/healthz` (alive), `/readyz` (serving and not draining),
//! `/metrics` (Prometheus text), `/policy` (active policy and geo database). Never shares a
//! port with proxied traffic.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::Shared;

/// Readiness shared between the process and the admin listener.
#[derive(Default)]
pub struct Health {
    /// True once listeners are up; false again while draining.
    pub ready: AtomicBool,
    /// Why the last reload failed, while the previous version keeps serving.
    pub reload_error: std::sync::Mutex<Option<String>>,
    /// Unix time the running policy and geo database were loaded.
    pub loaded_at: std::sync::atomic::AtomicU64,
}

impl Health {
    fn degraded(&self) -> Option<String> {
        self.reload_error.lock().ok().and_then(|e| e.clone())
    }
}

/// Serves admin requests until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    health: Arc<Health>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = stop.changed() => return,
        };
        let shared = shared.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| route(shared.clone(), health.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn route(
    shared: Arc<Shared>,
    health: Arc<Health>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body): (StatusCode, &str, Vec<u8>) = match req.uri().path() {
        "/healthz" | "/live" => (StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        "/readyz" | "/ready" => {
            if !shared.audit.healthy() {
                // Flows that need a record fail closed; take this replica out of rotation.
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    b"not ready: the audit log cannot be written\n".to_vec(),
                )
            } else if health.ready.load(Ordering::Relaxed) {
                match health.degraded() {
                    // Still serving on the previous version: ready, but say so.
                    Some(e) => (
                        StatusCode::OK,
                        "text/plain",
                        format!("ready (degraded: last reload failed: {e})\n").into_bytes(),
                    ),
                    None => (StatusCode::OK, "text/plain", b"ready\n".to_vec()),
                }
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    b"not ready: starting or draining\n".to_vec(),
                )
            }
        }
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.metrics.render(),
        ),
        "/policy" => {
            let snap = shared.snapshot.load();
            let info = snap.geo.info();
            let expired: Vec<&str> = snap.policy.expired.iter().map(|e| e.id.as_str()).collect();
            let body = serde_json::json!({
                "policy": {
                    "name": &*snap.policy.name,
                    "hash": snap.policy.hash,
                    "rules": snap.policy.rule_count(),
                    "loaded_at": health.loaded_at.load(Ordering::Relaxed),
                    "expired_exceptions": expired,
                    "last_reload_error": health.degraded(),
                },
                "geo": { "database_type": info.database_type, "build_epoch": info.build_epoch, "origin": info.origin },
            });
            let mut v = serde_json::to_vec_pretty(&body).unwrap_or_default();
            v.push(b'\n');
            (StatusCode::OK, "application/json", v)
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            b"not found; try /healthz /readyz /metrics /policy\n".to_vec(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    Ok(resp)
}
