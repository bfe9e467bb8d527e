//! Listeners: the proxy accept loop (connection limit, hyper HTTP/1.1 + h2c, upgrades for
//! CONNECT, graceful drain) and the admin accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::proxy::{self, Shared};

/// What the accept loop needs from config (the HTTP limits are in [`Shared::server`]).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Connections at once.
    pub max_connections: usize,
    /// Drain time on shutdown.
    pub drain: Duration,
}

impl HttpSettings {
    /// From the validated config.
    pub fn from_config(c: &Config) -> HttpSettings {
        HttpSettings {
            max_connections: c.limits.max_connections,
            drain: c.timeouts.drain,
        }
    }
}

const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nsima-reason: overloaded\r\nconnection: close\r\ncontent-length: 69\r\n\r\n{\"error\":\"overloaded\",\"message\":\"too many connections; retry later\"}\n";

/// Accepts proxy connections until `stop` turns true, then drains for `drain`.
pub async fn serve_proxy(
    listener: TcpListener,
    shared: Arc<Shared>,
    http: HttpSettings,
    mut stop: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(http.max_connections));
    let drain = shared.drain.clone();
    // The header-read and response timeouts hang on this sweep, through the drain too.
    let _sweep = shared.timers.start();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared.metrics.connections_rejected.inc();
            tokio::spawn(reject(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared2 = shared.clone();
        let svc = service_fn(move |req| proxy::handle(shared2.clone(), peer, req));
        let conn = shared
            .server
            .serve_connection_with_upgrades(TokioIo::new(stream), svc);
        let conn = drain.watch(conn.into_owned());
        let metrics = shared.metrics.clone();
        tokio::spawn(async move {
            metrics.active_connections.inc();
            match conn.await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::debug!(client.address = %peer, error = %e, "client connection closed with error")
                }
                None => {
                    tracing::debug!(client.address = %peer, "client connection cut: drain time over")
                }
            }
            metrics.active_connections.dec();
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = drain.drain() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(http.drain) => {
            tracing::warn!(drain = ?http.drain, live = drain.live(), "drain timeout reached; cutting remaining connections and tunnels");
            drain.cut();
            // Each closes at its next poll, which the cut has scheduled.
            let _ = tokio::time::timeout(Duration::from_secs(1), drain.drain()).await;
        }
    }
}

async fn reject(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(OVERLOADED)).await;
    let _ = stream.shutdown().await;
}

/// Binds a listener with a clear error.
pub async fn bind(addr: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}"))
    })
}
