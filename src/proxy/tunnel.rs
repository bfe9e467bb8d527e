//! CONNECT tunnels: after the destination was approved and dialled, see what the client
//! opens with. Plain HTTP is read request by request (see [`opening`]); anything else (TLS,
//! another protocol, a server that speaks first) is copied both ways until either side
//! closes or nothing moves for the idle timeout.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Longest method token looked at: past it, the opening is not taken for HTTP.
const MAX_METHOD: usize = 32;

/// Most bytes of the first request head read to tell a WebSocket handshake (see
/// [`websocket_handshake`]); a longer head is served as HTTP, whose parser limits it.
const MAX_FIRST_HEAD: usize = 16 * 1024;

/// What a tunnel opened with.
#[derive(Debug, PartialEq, Eq)]
pub enum Opening {
    /// The client's first bytes are an HTTP/1 request head (or HTTP/2's preface): the
    /// tunnel carries plain HTTP, which is read like forward-proxy traffic.
    Http {
        /// The bytes read so far.
        first: Vec<u8>,
        /// The first request is a WebSocket handshake (see [`websocket_handshake`]).
        websocket: bool,
    },
    /// Anything else (TLS, another protocol): the bytes read so far
    /// from the client, and from the upstream (which may speak first: SMTP, FTP, database
    /// servers).
    Opaque {
        /// Read from the client, not yet sent upstream.
        from_client: Vec<u8>,
        /// Read from the upstream, not yet sent to the client.
        from_upstream: Vec<u8>,
    },
    /// No byte in either direction within the idle timeout.
    Idle,
}

/// Whether `b` opens an HTTP/1 request: a method token, one space, then the start of a
/// request target (`/`, `*`, or a letter of an absolute URI's scheme). `None` while
/// every byte so far fits and more are needed.
///
/// The test is loose on purpose: a client that sends plain HTTP through a tunnel, in any
/// method spelling, must not slip past inspection. A protocol that happens to open like
/// this is then served as HTTP and refused by the parser, which closes the tunnel: closed,
/// not leaked.
pub fn http_opening(b: &[u8]) -> Option<bool> {
    let is_tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    let method = b.iter().take_while(|&&c| is_tchar(c)).count();
    if method > MAX_METHOD {
        return Some(false);
    }
    match (b.get(method), b.get(method + 1)) {
        (None, _) => None,
        (Some(b' '), None) if method > 0 => None,
        (Some(b' '), Some(&t)) if method > 0 => {
            Some(t == b'/' || t == b'*' || t.is_ascii_alphabetic())
        }
        _ => Some(false),
    }
}

/// Whether the request head that begins `b` is a WebSocket handshake: a `GET` with
/// `Upgrade: websocket` and no body. `None` until the head is complete (or
/// [`MAX_FIRST_HEAD`] long, when it is taken for plain HTTP).
///
/// A tunnel that opens with one (a plain `ws://` connection through a proxy, as browsers
/// send it) is read as HTTP like any other, and the connection dialled for it is kept for
/// the handshake rather than pooled: an upgraded connection is the upstream half of the
/// WebSocket.
pub fn websocket_handshake(b: &[u8]) -> Option<bool> {
    // The head ends at an empty line, CRLF or bare LF as HTTP/1 parsers accept.
    let end = [&b"\n\r\n"[..], b"\n\n"]
        .iter()
        .filter_map(|end| memchr::memmem::find(b, end))
        .min();
    let Some(end) = end else {
        return (b.len() >= MAX_FIRST_HEAD).then_some(false);
    };
    let head = b.get(..end).unwrap_or_default();
    if !head.starts_with(b"GET ") {
        return Some(false);
    }
    let mut websocket = false;
    for line in head.split(|&c| c == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default().trim_ascii();
        if name.eq_ignore_ascii_case(b"upgrade") {
            websocket = value.eq_ignore_ascii_case(b"websocket");
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || (name.eq_ignore_ascii_case(b"content-length") && value != b"0")
        {
            return Some(false);
        }
    }
    Some(websocket)
}

/// Waits for the first bytes of a tunnel and tells what it carries. The client's bytes are
/// read until [`http_opening`] can tell, and for HTTP until its first head is in (see
/// [`websocket_handshake`]); an upstream that speaks first makes the tunnel opaque at once
/// (HTTP clients speak first). Whatever was read is returned, to be
/// replayed or sent on.
pub async fn opening<A, B>(
    client: &mut A,
    upstream: &mut B,
    idle: Duration,
) -> std::io::Result<Opening>
where
    A: AsyncRead + Unpin,
    B: AsyncRead + Unpin,
{
    let deadline = Instant::now() + idle;
    let mut from_client = Vec::new();
    // On the heap and freed once the tunnel is told: a buffer on the stack of this future
    // would stay in every tunnel task's state for the tunnel's whole life.
    let mut buf = vec![0u8; 1024];
    let mut up = vec![0u8; 1024];
    // Set once the client has begun an HTTP request: from then on the upstream is not
    // listened to, so that bytes it sends cannot turn the request into opaque bytes.
    let mut http = false;
    loop {
        tokio::select! {
            // The client's bytes first: what it sent is told before the upstream is heard.
            biased;
            r = client.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    // The client closed before it could be told: nothing more to judge.
                    return Ok(Opening::Opaque { from_client, from_upstream: Vec::new() });
                }
                from_client.extend_from_slice(buf.get(..n).unwrap_or_default());
                match http_opening(&from_client) {
                    Some(true) => {
                        http = true;
                        if let Some(websocket) = websocket_handshake(&from_client) {
                            return Ok(Opening::Http { first: from_client, websocket });
                        }
                        // The head goes on: read more of it.
                    }
                    Some(false) => {
                        return Ok(Opening::Opaque { from_client, from_upstream: Vec::new() })
                    }
                    None => {}
                }
            }
            r = upstream.read(&mut up), if !http => {
                let n = r?;
                let from_upstream = up.get(..n).unwrap_or_default().to_vec();
                return Ok(Opening::Opaque { from_client, from_upstream });
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(Opening::Idle),
        }
    }
}

/// Sends on what [`opening`] read from each side of an opaque tunnel, then [`splice`]s.
pub async fn splice_after<A, B>(
    mut client: A,
    mut upstream: B,
    from_client: &[u8],
    from_upstream: &[u8],
    idle: Duration,
) -> (u64, u64, TunnelEnd)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let sent = async {
        upstream.write_all(from_client).await?;
        client.write_all(from_upstream).await
    };
    match tokio::time::timeout(idle, sent).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return (0, 0, TunnelEnd::Error),
        Err(_) => return (0, 0, TunnelEnd::Idle),
    }
    let (up, down, end) = splice(client, upstream, idle).await;
    (
        up + from_client.len() as u64,
        down + from_upstream.len() as u64,
        end,
    )
}

/// A stream whose first reads return bytes already taken from it: the opening of a tunnel
/// that is served as HTTP.
pub struct Replay<S> {
    first: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Replay<S> {
    /// `first` is read before `inner`.
    pub fn new(first: Vec<u8>, inner: S) -> Self {
        Replay {
            first,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let rest = self.first.get(self.at..).unwrap_or_default();
        if rest.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(rest.get(..n).unwrap_or_default());
        self.at += n;
        if self.at == self.first.len() {
            self.first = Vec::new();
            self.at = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

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
    let activity = Arc::new(Activity::new());
    let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut a = Tracked {
        inner: client,
        activity: activity.clone(),
        count: up.clone(),
    };
    let mut b = Tracked {
        inner: upstream,
        activity: activity.clone(),
        count: down.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    let end = match activity.until_idle(copy, idle).await {
        Some(Ok(_)) => TunnelEnd::Closed,
        Some(Err(_)) => TunnelEnd::Error,
        None => TunnelEnd::Idle,
    };
    (
        up.load(Ordering::Relaxed),
        down.load(Ordering::Relaxed),
        end,
    )
}

/// When bytes last moved through a tunnel (or a WebSocket), either way: what its idle
/// timeout is measured from.
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Activity {
    /// No bytes yet; the idle time counts from now.
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// Bytes moved now.
    pub fn stamp(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.last.load(Ordering::Relaxed)))
    }

    /// Runs `work` to its end, or until no bytes have moved for `idle`: then `None` (and
    /// `work` is dropped, its connections with it).
    pub async fn until_idle<F: std::future::Future>(
        &self,
        work: F,
        idle: Duration,
    ) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            let since = Duration::from_millis(self.last.load(Ordering::Relaxed));
            tokio::select! {
                out = &mut work => return Some(out),
                _ = tokio::time::sleep_until(self.start + since + idle) => {
                    if self.idle_for() >= idle {
                        return None;
                    }
                }
            }
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

/// Stamps the last-activity time on every successful read, and counts bytes read.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
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
            self.activity.stamp();
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

    #[test]
    fn http_openings_are_told_from_tls_and_other_protocols() {
        for http in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /kyc HTTP/1.1",
            b"post /lower-case",
            b"OPTIONS * HTTP/1.1",
            b"GET http://example.com/ HTTP/1.1",
            b"M-SEARCH / HTTP/1.1",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(
                http_opening(http),
                Some(true),
                "{}",
                String::from_utf8_lossy(http)
            );
        }
        for other in [
            &b"\x16\x03\x01\x02\x00\x01"[..],
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b" GET /",
            b"GET  /",
            b"GET \x00",
            b"\r\n",
            &[b'A'; MAX_METHOD + 1],
        ] {
            assert_eq!(http_opening(other), Some(false), "{other:?}");
        }
        // Undecided until the byte after the first space is in.
        for partial in [&b""[..], b"G", b"GET", b"GET ", b"PROPFIND"] {
            assert_eq!(http_opening(partial), None, "{partial:?}");
        }
        // Every cut of a request line decides the same way once decided.
        let line = b"PATCH /v1/users/7 HTTP/1.1\r\n";
        for cut in 0..line.len() {
            let got = http_opening(&line[..cut]);
            assert!(got.is_none() || got == Some(true), "cut {cut}: {got:?}");
        }
    }

    #[test]
    fn websocket_handshakes_are_told_from_other_requests() {
        let ws =
            "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        assert_eq!(websocket_handshake(ws.as_bytes()), Some(true));
        assert_eq!(
            websocket_handshake(ws.replace("\r\n", "\n").as_bytes()),
            Some(true),
            "bare line feeds"
        );
        assert_eq!(websocket_handshake(&ws.as_bytes()[..ws.len() - 2]), None);
        for other in [
            ws.replace("GET", "POST"),
            ws.replace("websocket", "h2c"),
            ws.replace("Upgrade: websocket\r\n", ""),
            ws.replace("Host: x", "Host: x\r\nContent-Length: 12"),
            ws.replace("Host: x", "Host: x\r\nTransfer-Encoding: chunked"),
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".into(),
        ] {
            assert_eq!(
                websocket_handshake(other.as_bytes()),
                Some(false),
                "{other}"
            );
        }
        assert_eq!(
            websocket_handshake(&ws.replace("GET", "get").into_bytes()),
            Some(false),
            "methods are case-sensitive"
        );
        // A head that does not end is not waited for past the limit.
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_FIRST_HEAD));
        assert_eq!(websocket_handshake(long.as_bytes()), Some(false));
    }

    #[tokio::test]
    async fn opening_reads_an_http_request_line_in_pieces() {
        let (mut client, mut client_peer) = tokio::io::duplex(64);
        let (mut upstream, _upstream_peer) = tokio::io::duplex(64);
        let sender = tokio::spawn(async move {
            for piece in [
                &b"PO"[..],
                b"ST",
                b" ",
                b"/kyc HTTP/1.1\r\n",
                b"Host: x\r\n\r",
                b"\n",
            ] {
                client_peer.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            client_peer
        });
        let got = opening(&mut client, &mut upstream, Duration::from_secs(5))
            .await
            .unwrap();
        let Opening::Http { first, .. } = got else {
            panic!("not taken for HTTP: {got:?}")
        };
        assert!(first.starts_with(b"POST /"), "{first:?}");
        // What was read is read again, then the rest of the stream.
        let mut client_peer = sender.await.unwrap();
        client_peer.write_all(b"{}").await.unwrap();
        assert_eq!(first, b"POST /kyc HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut replay = Replay::new(first.clone(), client);
        let mut buf = vec![0u8; first.len() + 2];
        replay.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf[..first.len()], &first[..]);
        assert_eq!(&buf[first.len()..], b"{}");
    }

    #[tokio::test]
    async fn tls_and_a_server_that_speaks_first_make_a_tunnel_opaque() {
        let (mut client, mut client_peer) = tokio::io::duplex(64);
        let (mut upstream, _upstream_peer) = tokio::io::duplex(64);
        client_peer.write_all(b"\x16\x03\x01").await.unwrap();
        let got = opening(&mut client, &mut upstream, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            got,
            Opening::Opaque {
                from_client: b"\x16\x03\x01".to_vec(),
                from_upstream: Vec::new()
            }
        );

        // An SMTP server greets first; the client waits for it. Nothing may wait forever,
        // and the greeting reaches the client.
        let (mut client, client_peer) = tokio::io::duplex(64);
        let (mut upstream, mut upstream_peer) = tokio::io::duplex(64);
        upstream_peer
            .write_all(b"220 mail ready\r\n")
            .await
            .unwrap();
        let got = opening(&mut client, &mut upstream, Duration::from_secs(5))
            .await
            .unwrap();
        let Opening::Opaque {
            from_client,
            from_upstream,
        } = got
        else {
            panic!("{got:?}")
        };
        assert_eq!(from_upstream, b"220 mail ready\r\n");
        let task = tokio::spawn(splice_after(
            client,
            upstream,
            &[],
            b"220 mail ready\r\n",
            Duration::from_secs(5),
        ));
        let mut client_peer = client_peer;
        let mut buf = [0u8; 16];
        client_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"220 mail ready\r\n");
        client_peer.write_all(b"QUIT\r\n").await.unwrap();
        let mut buf = [0u8; 6];
        upstream_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"QUIT\r\n");
        drop(client_peer);
        drop(upstream_peer);
        let (up, down, _) = task.await.unwrap();
        assert_eq!((up, down, from_client.len()), (6, 16, 0));
    }

    #[tokio::test]
    async fn an_upstream_heard_mid_request_does_not_make_it_opaque() {
        let (mut client, mut client_peer) = tokio::io::duplex(64);
        let (mut upstream, mut upstream_peer) = tokio::io::duplex(64);
        client_peer
            .write_all(b"POST /kyc HTTP/1.1\r\n")
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            let got = opening(&mut client, &mut upstream, Duration::from_secs(5)).await;
            (got, client, upstream)
        });
        // The upstream speaks while the head is still coming (a server that greets, or
        // one playing for a splice): the request is read as HTTP all the same.
        tokio::task::yield_now().await;
        upstream_peer.write_all(b"220 hello\r\n").await.unwrap();
        tokio::task::yield_now().await;
        client_peer.write_all(b"Host: x\r\n\r\n").await.unwrap();
        let (got, ..) = task.await.unwrap();
        assert_eq!(
            got.unwrap(),
            Opening::Http {
                first: b"POST /kyc HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                websocket: false,
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_tunnel_is_idle_before_it_is_told() {
        let (mut client, _client_peer) = tokio::io::duplex(64);
        let (mut upstream, _upstream_peer) = tokio::io::duplex(64);
        let got = opening(&mut client, &mut upstream, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(got, Opening::Idle);
    }

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
