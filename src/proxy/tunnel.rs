//! CONNECT tunnels: after the destination was approved and dialled, copy bytes both ways
//! until either side closes or nothing moves for the idle timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// One side closed.
    Closed,
    /// No bytes in either direction for the idle timeout.
    Idle,
    /// An IO error.
    Error,
}

/// Copies between `client` and `upstream`; returns (client->upstream, upstream->client)
/// bytes and how it ended.
pub async fn splice<A, B>(client: A, upstream: B, idle: Duration) -> (u64, u64, TunnelEnd)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut a = Tracked {
        inner: client,
        last: last.clone(),
        start,
        count: up.clone(),
    };
    let mut b = Tracked {
        inner: upstream,
        last: last.clone(),
        start,
        count: down.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        let since = Duration::from_millis(last.load(Ordering::Relaxed));
        let deadline = start + since + idle;
        tokio::select! {
            r = &mut copy => {
                let end = if r.is_ok() { TunnelEnd::Closed } else { TunnelEnd::Error };
                return (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed), end);
            }
            _ = tokio::time::sleep_until(deadline) => {
                let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                if now_ms.saturating_sub(last.load(Ordering::Relaxed)) >= u64::try_from(idle.as_millis()).unwrap_or(u64::MAX) {
                    return (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed), TunnelEnd::Idle);
                }
            }
        }
    }
}

/// Stamps the last-activity time on every successful read, and counts bytes read.
struct Tracked<S> {
    inner: S,
    last: Arc<AtomicU64>,
    start: Instant,
    count: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.count.fetch_add(n as u64, Ordering::Relaxed);
            let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn idle_tunnel_is_closed() {
        let (client, _client_peer) = tokio::io::duplex(64);
        let (upstream, _upstream_peer) = tokio::io::duplex(64);
        let (up, down, end) = splice(client, upstream, Duration::from_secs(30)).await;
        assert_eq!((up, down, end), (0, 0, TunnelEnd::Idle));
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_are_counted() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let task = tokio::spawn(splice(client, upstream, Duration::from_secs(5)));
        client_peer.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        upstream_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        upstream_peer.write_all(b"world!").await.unwrap();
        let mut buf = [0u8; 6];
        client_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"world!");
        drop(client_peer);
        drop(upstream_peer);
        let (up, down, end) = task.await.unwrap();
        assert_eq!((up, down, end), (5, 6, TunnelEnd::Closed));
    }
}
