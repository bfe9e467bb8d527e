//! End-to-end: graceful shutdown, connection limits and timeouts behave as operators of
//! Envoy or HAProxy expect.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream on 127.0.0.2 that accepts connections and never answers.
async fn silent_upstream() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            keep.push(s);
        }
    });
    addr
}

/// A connection to `proxy` that has sent `request` and had 200 back.
async fn answered_200(proxy: std::net::SocketAddr, request: String) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

/// A keep-alive connection to `proxy` that has made one GET to `upstream`, answered 200.
async fn after_one_get(proxy: std::net::SocketAddr, upstream: std::net::SocketAddr) -> TcpStream {
    answered_200(
        proxy,
        format!("GET http://{upstream}/ HTTP/1.1\r\nHost: {upstream}\r\n\r\n"),
    )
    .await
}

/// Waits (at most `TEST_DEADLINE`) for the server to close `s`; panics with `why` if not.
async fn closed_by_server(s: &mut TcpStream, why: &str) {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(TEST_DEADLINE, s.read(&mut buf))
        .await
        .expect(why)
        .unwrap_or(0);
    assert_eq!(n, 0);
}

async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(TEST_DEADLINE, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn shutdown_drains_a_slow_upload_then_refuses_new_connections() {
    let india = upstream("127.0.0.2", "india").await;
    let sima = start(config(&format!("{GEO_OVERRIDES}timeouts:\n  drain: 10s\n"))).await;
    let proxy = sima.info.proxy;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let body =
        http_body_util::StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let req = Request::post(format!("http://{}/slow", india.addr))
        .body(body)
        .unwrap();
    let upload = tokio::spawn(async move { send_streaming(proxy, req).await.status() });
    tx.send(Ok(Frame::data(Bytes::from_static(b"first half,"))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let shutdown = tokio::spawn(sima.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Draining: the listener is closed to new clients...
    assert!(
        TcpStream::connect(proxy).await.is_err(),
        "new connections must be refused while draining"
    );
    // ...while the upload in flight completes.
    tx.send(Ok(Frame::data(Bytes::from_static(b"second half"))))
        .await
        .unwrap();
    drop(tx);
    assert_eq!(upload.await.unwrap(), StatusCode::OK);
    tokio::time::timeout(TEST_DEADLINE, shutdown)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(india.requests()[0].body, b"first half,second half");
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let india = upstream("127.0.0.2", "india").await;
    // Far longer than the test may take: only closing the idle connection ends the drain.
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}timeouts:\n  drain: 120s\n  header_read: 120s\n"
    )))
    .await;
    let mut s = after_one_get(sima.info.proxy, india.addr).await;
    tokio::time::timeout(TEST_DEADLINE, sima.shutdown())
        .await
        .expect("an idle keep-alive connection held the drain open");
    closed_by_server(&mut s, "idle connection never closed").await;
}

/// A TCP echo server on 127.0.0.2: what a tunnel carries, unread.
async fn echo_upstream() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A tunnel through `proxy` to `target`, opened and answered 200.
async fn tunnel(proxy: std::net::SocketAddr, target: std::net::SocketAddr) -> TcpStream {
    answered_200(
        proxy,
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
    )
    .await
}

/// Sends bytes no HTTP parser would take through a spliced tunnel and reads them back.
async fn echoed(s: &mut TcpStream) {
    s.write_all(b"\x16\x03\x01ping").await.unwrap();
    let mut back = [0u8; 7];
    tokio::time::timeout(TEST_DEADLINE, s.read_exact(&mut back))
        .await
        .expect("tunnel did not echo")
        .unwrap();
    assert_eq!(&back, b"\x16\x03\x01ping");
}

/// A tunnel through a Sima that has begun to shut down with `drain`, shown still carrying
/// bytes 300 ms into the drain, and the shutdown's task.
async fn draining_with_a_tunnel(drain: &str) -> (TcpStream, tokio::task::JoinHandle<()>) {
    let echo = echo_upstream().await;
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}timeouts:\n  drain: {drain}\n"
    )))
    .await;
    let mut s = tunnel(sima.info.proxy, echo).await;
    echoed(&mut s).await;
    let shutdown = tokio::spawn(sima.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !shutdown.is_finished(),
        "the drain did not wait for the tunnel"
    );
    echoed(&mut s).await;
    (s, shutdown)
}

#[tokio::test]
async fn shutdown_waits_for_a_tunnel_until_it_closes() {
    let (s, shutdown) = draining_with_a_tunnel("120s").await;
    // The drain ends as soon as the client closes the tunnel.
    drop(s);
    tokio::time::timeout(TEST_DEADLINE, shutdown)
        .await
        .expect("a closed tunnel held the drain open")
        .unwrap();
}

#[tokio::test]
async fn a_tunnel_still_open_when_the_drain_time_ends_is_cut() {
    let (mut s, shutdown) = draining_with_a_tunnel("1s").await;
    closed_by_server(&mut s, "the tunnel outlived the drain").await;
    tokio::time::timeout(TEST_DEADLINE, shutdown)
        .await
        .expect("shutdown never finished")
        .unwrap();
}

#[tokio::test]
async fn a_request_still_waiting_when_the_drain_time_ends_is_cut() {
    let silent = silent_upstream().await;
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}timeouts:\n  drain: 1s\n  upstream_response: 120s\n"
    )))
    .await;
    let mut s = TcpStream::connect(sima.info.proxy).await.unwrap();
    s.write_all(format!("GET http://{silent}/ HTTP/1.1\r\nHost: {silent}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let shutdown = tokio::spawn(sima.shutdown());
    closed_by_server(&mut s, "a request in flight outlived the drain").await;
    tokio::time::timeout(TEST_DEADLINE, shutdown)
        .await
        .expect("shutdown never finished")
        .unwrap();
}

#[tokio::test]
async fn shutdown_closes_an_idle_http_connection_inside_a_tunnel_at_once() {
    let india = upstream("127.0.0.2", "india").await;
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}timeouts:\n  drain: 120s\n  header_read: 120s\n"
    )))
    .await;
    let mut s = tunnel(sima.info.proxy, india.addr).await;
    s.write_all(format!("GET /in HTTP/1.1\r\nHost: {}\r\n\r\n", india.addr).as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tokio::time::timeout(TEST_DEADLINE, sima.shutdown())
        .await
        .expect("an idle connection inside a tunnel held the drain open");
    closed_by_server(&mut s, "idle connection inside the tunnel never closed").await;
    assert_eq!(india.requests().len(), 1);
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503_and_are_counted() {
    let sima = start(config("limits:\n  max_connections: 2\n")).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(sima.info.proxy).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(sima.info.proxy).await.unwrap();
    let head = read_head(&mut third).await;
    assert!(
        head.starts_with("HTTP/1.1 503") && head.contains("sima-reason: overloaded"),
        "{head}"
    );
    let m = String::from_utf8(sima.shared.metrics.render()).unwrap();
    assert!(m.contains("sima_connections_rejected_total 1"), "{m}");
    drop(held);
    sima.shutdown().await;
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_after_the_header_timeout() {
    let sima = start(config("timeouts:\n  header_read: 300ms\n")).await;
    let mut s = TcpStream::connect(sima.info.proxy).await.unwrap();
    s.write_all(b"GET http://127.0.0.2/ HTTP/1.1\r\nHost: 127.0.0.2\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(TEST_DEADLINE, s.read(&mut buf))
        .await
        .expect("connection kept open")
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 408"),
        "{head}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    sima.shutdown().await;
}

#[tokio::test]
async fn a_silent_upstream_gives_504_after_the_response_timeout() {
    let addr = silent_upstream().await;
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}timeouts:\n  upstream_response: 300ms\n"
    )))
    .await;
    let (status, headers, _) = get(sima.info.proxy, &format!("http://{addr}/never")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(headers["sima-reason"], "upstream_timeout");
    let m = String::from_utf8(sima.shared.metrics.render()).unwrap();
    assert!(
        m.contains(r#"sima_upstream_errors_total{kind="timeout"} 1"#),
        "{m}"
    );
    sima.shutdown().await;
}

#[tokio::test]
async fn a_closed_upstream_port_gives_502_connect_failed() {
    let l = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let sima = start(config(GEO_OVERRIDES)).await;
    let (status, headers, _) = get(sima.info.proxy, &format!("http://{addr}/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["sima-reason"], "connect_failed");
    sima.shutdown().await;
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_the_tunnel_timeout() {
    let addr = silent_upstream().await;
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}timeouts:\n  tunnel_idle: 300ms\n"
    )))
    .await;
    let mut s = tunnel(sima.info.proxy, addr).await;
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(TEST_DEADLINE, s.read(&mut buf))
        .await
        .expect("tunnel never closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "the idle tunnel must be closed");
    assert!(started.elapsed() >= Duration::from_millis(250));
    sima.shutdown().await;
}

#[tokio::test]
async fn a_client_group_at_its_request_limit_gets_503() {
    let dir = tempfile::tempdir().unwrap();
    let addr = silent_upstream().await;
    let policy = "version: 1\nname: g\nclients:\n  batch: { cidrs: [127.0.0.1/32] }\nrules: []\ndefault: allow\n";
    let sima = start(config(&format!(
        "{}{GEO_OVERRIDES}limits:\n  max_requests_per_group: {{ batch: 1 }}\ntimeouts:\n  upstream_response: 2s\n",
        policy_file(dir.path(), policy)
    )))
    .await;
    let proxy = sima.info.proxy;
    let url = format!("http://{addr}/slow");
    let first = tokio::spawn({
        let url = url.clone();
        async move { get(proxy, &url).await.0 }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, headers, body) = get(proxy, &url).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(headers["sima-reason"], "overloaded");
    assert_eq!(first.await.unwrap(), StatusCode::GATEWAY_TIMEOUT);
    sima.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_client_is_closed() {
    let india = upstream("127.0.0.2", "india").await;
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}timeouts:\n  header_read: 300ms\n"
    )))
    .await;
    let mut s = after_one_get(sima.info.proxy, india.addr).await;
    // Keep-alive, then silence: the connection is closed after the header timeout.
    let started = Instant::now();
    closed_by_server(&mut s, "idle connection never closed").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    sima.shutdown().await;
}

#[tokio::test]
async fn too_many_headers_are_refused() {
    let sima = start(config("limits:\n  max_headers: 20\n")).await;
    let mut s = TcpStream::connect(sima.info.proxy).await.unwrap();
    let mut req = String::from("GET http://127.0.0.2:9/ HTTP/1.1\r\nHost: 127.0.0.2\r\n");
    for i in 0..40 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    sima.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_never_accepts_gives_504_after_the_connect_timeout() {
    // A listener whose accept queue is full and never drained: new SYNs are dropped, so a
    // connect hangs until Sima's connect timeout.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let listener = sock.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}timeouts:\n  upstream_connect: 300ms\n"
    )))
    .await;
    let started = Instant::now();
    let (status, headers, body) = get(sima.info.proxy, &format!("http://{addr}/")).await;
    assert_eq!(
        status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(headers["sima-reason"], "upstream_timeout");
    assert!(
        json(&body)["message"].as_str().unwrap().contains("connect"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
    sima.shutdown().await;
}

/// An upstream on 127.0.0.2 that counts the connections it accepts and serves each with
/// `serve`.
async fn counting_upstream<F, Fut>(
    serve: F,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(serve(s));
        }
    });
    (addr, accepted)
}

/// Answers each GET on a keep-alive connection with its head at once and its 5-byte body
/// after `delay`.
async fn slow_body(mut s: TcpStream, delay: Duration) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..end + 4);
            let head = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(delay).await;
            if s.write_all(b"hello").await.is_err() {
                return;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn connections_still_streaming_do_not_count_against_the_idle_pool_cap() {
    // Four requests at once against a cap of two idle connections: all four upstream
    // connections are kept (none is idle while its body streams) and reused by the next
    // four, instead of two being closed and reopened on every round.
    let (addr, accepted) = counting_upstream(|s| slow_body(s, Duration::from_millis(200))).await;
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}limits:\n  pool_max_idle_per_host: 2\n"
    )))
    .await;
    let proxy = sima.info.proxy;
    for round in 0..2 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..4 {
            let url = format!("http://{addr}/r{round}-{i}");
            set.spawn(async move { get(proxy, &url).await });
        }
        while let Some(r) = set.join_next().await {
            let (status, _, body) = r.unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, b"hello");
        }
        // The upstream connections turn idle once the proxy has relayed the last byte.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "upstream connections opened for 2 rounds of 4 concurrent requests"
    );
    sima.shutdown().await;
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_reused() {
    // The upstream answers on a keep-alive connection, then closes it while it is idle in
    // Sima's pool: the next request must go out on a fresh connection, not fail.
    let (addr, accepted) = counting_upstream(|mut s| async move {
        let _ = read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    })
    .await;
    let sima = start(config(GEO_OVERRIDES)).await;
    for i in 0..2 {
        let (status, _, body) = get(sima.info.proxy, &format!("http://{addr}/{i}")).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    sima.shutdown().await;
}

#[tokio::test]
async fn a_pooled_connection_idle_past_pool_idle_is_closed_and_not_reused() {
    // `timeouts.pool_idle` is the lifetime of an idle pooled connection: after it, Sima
    // dials anew and lets the old connection go (the upstream sees it closed).
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen_closed = closed.clone();
    let (addr, accepted) = counting_upstream(move |mut s| {
        let closed = seen_closed.clone();
        async move {
            let mut chunk = [0u8; 4096];
            let mut buf = Vec::new();
            loop {
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    buf.drain(..end + 4);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if s.write_all(ok).await.is_err() {
                        return;
                    }
                }
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    })
    .await;
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}timeouts:\n  pool_idle: 300ms\n"
    )))
    .await;
    let proxy = sima.info.proxy;
    // Within the idle lifetime the connection is reused ...
    for i in 0..2 {
        let (status, _, body) = get(proxy, &format!("http://{addr}/warm{i}")).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    // ... past it, the next request dials a new one and the stale one is closed.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _, body) = get(proxy, &format!("http://{addr}/late")).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    let mut waited = 0;
    while closed.load(std::sync::atomic::Ordering::SeqCst) == 0 && waited < 40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    assert_eq!(
        closed.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the expired connection is closed"
    );
    sima.shutdown().await;
}

#[tokio::test]
async fn an_h2_upstream_connection_in_use_outlives_pool_idle() {
    // h2 multiplexes every request on one pooled connection. `pool_idle` counts from its
    // last use: a connection serving a request every 100 ms is kept, not replaced (with a
    // new TLS handshake) once `pool_idle` has passed since its first request.
    let dir = tempfile::tempdir().unwrap();
    let pki = test_pki(dir.path(), &["partner.test"]);
    let partner = upstream_with_tls("127.0.0.2", "partner", Some(pki.server.clone())).await;
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}timeouts:\n  pool_idle: 300ms\nresolver:\n  static_hosts:\n    partner.test: [127.0.0.2]\nroutes:\n  - name: partner\n    prefix: /partner/\n    upstream: https://partner.test:{port}/v2\n    ca_bundle: {ca}\n",
        port = partner.addr.port(),
        ca = pki.ca_pem_path.display(),
    )))
    .await;
    let started = Instant::now();
    for i in 0..8 {
        let (ok, out, err) = curl(vec![format!("http://{}/partner/{i}", sima.info.proxy)]).await;
        assert!(ok, "{err}");
        assert_eq!(out, "hello from partner");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() > Duration::from_millis(600));
    let seen = partner.requests();
    assert_eq!(seen.len(), 8);
    assert!(seen.iter().all(|r| r.version == http::Version::HTTP_2));
    assert_eq!(
        partner.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one h2 connection for all requests"
    );
    sima.shutdown().await;
}
