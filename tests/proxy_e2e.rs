//! End-to-end: forward proxy, CONNECT and reverse-proxy routes over real loopback sockets,
//! with recording upstreams declared to be in India (127.0.0.2) and the US (127.0.0.3).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn allowed_request_reaches_upstream_intact_and_hop_by_hop_is_stripped() {
    let dir = tempfile::tempdir().unwrap();
    let up = upstream("127.0.0.2", "india").await;
    let sima = start(config(&format!(
        "{}{GEO_OVERRIDES}",
        policy_file(dir.path(), NO_US_POLICY)
    )))
    .await;

    // A streamed (chunked) body: three frames, no content-length.
    let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = ["first,", "second,", "third"]
        .into_iter()
        .map(|c| Ok(Frame::data(Bytes::from(c))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let req = Request::post(format!("http://{}/submit?x=1", up.addr))
        .header("x-end-to-end", "kept")
        .header("connection", "keep-alive, x-private-hop")
        .header("x-private-hop", "must not pass")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let resp = send_streaming(sima.info.proxy, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["via"], "1.1 sima");
    assert!(
        resp.headers().get("x-upstream-hop").is_none(),
        "response hop-by-hop header leaked"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello from india");

    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.uri, "/submit?x=1");
    assert_eq!(r.body, b"first,second,third");
    assert_eq!(r.headers["x-end-to-end"], "kept");
    assert_eq!(r.headers["host"], up.addr.to_string());
    assert_eq!(r.headers["via"], "1.1 sima");
    for hop in [
        "x-private-hop",
        "proxy-authorization",
        "keep-alive",
        "te",
        "connection",
    ] {
        assert!(r.headers.get(hop).is_none(), "{hop} reached the upstream");
    }
    assert!(
        r.headers.get("x-forwarded-for").is_none(),
        "client address leaked by default"
    );
    sima.shutdown().await;
}

#[tokio::test]
async fn blocked_destination_gets_451_and_upstream_sees_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(&format!(
        "{}{GEO_OVERRIDES}",
        policy_file(dir.path(), NO_US_POLICY)
    )))
    .await;
    let req = Request::post(format!("http://{}/upload", us.addr))
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let (status, headers, body) = send(sima.info.proxy, req).await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(headers["sima-reason"], "destination_rule");
    assert!(headers["link"]
        .to_str()
        .unwrap()
        .ends_with("rel=\"blocked-by\""));
    let j = json(&body);
    assert_eq!(j["error"], "blocked");
    assert_eq!(j["rule"], "no-us");
    assert_eq!(j["reason"], "US destinations are not allowed");
    assert_eq!(j["citation"], "Test rule 1");
    assert_eq!(j["destination"]["country"], "US");
    assert_eq!(j["destination"]["address"], "127.0.0.3");
    assert_eq!(
        j["request_id"],
        headers["sima-request-id"].to_str().unwrap()
    );
    assert!(
        us.requests().is_empty(),
        "blocked request reached the upstream"
    );

    let metrics = String::from_utf8(sima.shared.metrics.render()).unwrap();
    assert!(metrics.contains(
        r#"sima_requests_total{decision="deny",mode="forward",reason="destination_rule"} 1"#
    ));
    assert!(metrics.contains(r#"sima_destination_requests_total{country="US",decision="deny"} 1"#));
    sima.shutdown().await;
}

#[tokio::test]
async fn connect_tunnels_to_india_and_refuses_the_us() {
    let dir = tempfile::tempdir().unwrap();
    let india = upstream("127.0.0.2", "india").await;
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(&format!(
        "{}{GEO_OVERRIDES}",
        policy_file(dir.path(), NO_US_POLICY)
    )))
    .await;

    let (ok, out, err) = curl(vec![
        "-p".into(),
        "-x".into(),
        format!("http://{}", sima.info.proxy),
        format!("http://{}/through-tunnel", india.addr),
    ])
    .await;
    assert!(ok, "curl failed: {err}");
    assert_eq!(out, "hello from india");
    assert_eq!(india.requests()[0].uri, "/through-tunnel");

    // Raw CONNECT to the US address: 451 before any tunnel opens.
    let mut s = TcpStream::connect(sima.info.proxy).await.unwrap();
    s.write_all(format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", us.addr).as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(TEST_DEADLINE, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 451"), "{head}");
    assert!(us.requests().is_empty());
    sima.shutdown().await;
}

#[tokio::test]
async fn tls_websockets_and_server_first_protocols_pass_through_tunnels() {
    let dir = tempfile::tempdir().unwrap();
    let pki = test_pki(dir.path(), &["partner.test"]);
    let partner = upstream_with_tls("127.0.0.2", "partner", Some(pki.server.clone())).await;
    // A server that speaks first (SMTP's shape): greets, then answers one line.
    let mail = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let mail_addr = mail.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = mail.accept().await.unwrap();
        s.write_all(b"220 mail ready\r\n").await.unwrap();
        let mut line = [0u8; 8];
        s.read_exact(&mut line).await.unwrap();
        s.write_all(b"250 ").await.unwrap();
        s.write_all(&line).await.unwrap();
    });
    // A WebSocket server: answers the handshake with 101, then echoes.
    let ws = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let ws_addr = ws.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = ws.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        assert!(head.starts_with(b"GET /chat "), "{head:?}");
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            .await
            .unwrap();
        let mut frame = [0u8; 6];
        s.read_exact(&mut frame).await.unwrap();
        s.write_all(&frame).await.unwrap();
    });
    let sima = start(config(&format!(
        "{}{GEO_OVERRIDES}resolver:\n  static_hosts:\n    partner.test: [127.0.0.2]\n",
        policy_file(dir.path(), NO_US_POLICY)
    )))
    .await;

    let (ok, out, err) = curl(vec![
        "-x".into(),
        format!("http://{}", sima.info.proxy),
        "--cacert".into(),
        pki.ca_pem_path.display().to_string(),
        format!("https://partner.test:{}/over-tls", partner.addr.port()),
    ])
    .await;
    assert!(ok, "curl failed: {err}");
    assert_eq!(out, "hello from partner");
    // curl and the upstream agree on h2 inside the tunnel: the URI is absolute there.
    assert!(partner.requests()[0].uri.ends_with("/over-tls"));

    // The client waits for the greeting: a tunnel that waited for the client's first bytes
    // would hang here.
    let mut s = TcpStream::connect(sima.info.proxy).await.unwrap();
    s.write_all(format!("CONNECT {mail_addr} HTTP/1.1\r\nHost: {mail_addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let got = read_to(&mut s, b"\r\n\r\n220 mail ready\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    s.write_all(b"EHLO x\r\n").await.unwrap();
    let mut reply = [0u8; 12];
    tokio::time::timeout(TEST_DEADLINE, s.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply, b"250 EHLO x\r\n");
    // Closed by the client, the tunnel ends: the drain below would wait for it.
    drop(s);

    // A plain ws:// connection through the proxy, as browsers send it: the handshake that
    // opens the tunnel is read as a request and goes upstream on the connection dialled
    // for the tunnel (the server accepts one). At home no rule about data applies, so the
    // frames are copied unread.
    let mut s = TcpStream::connect(sima.info.proxy).await.unwrap();
    s.write_all(
        format!(
            "CONNECT {ws_addr} HTTP/1.1\r\nHost: {ws_addr}\r\n\r\nGET /chat HTTP/1.1\r\nHost: {ws_addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let text = read_to(&mut s, b"\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let text = read_to(&mut s, b"\r\n\r\n").await;
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nupgrade: websocket\r\n"), "{text}");
    s.write_all(b"\x81\x04ping").await.unwrap();
    let mut echo = [0u8; 6];
    tokio::time::timeout(TEST_DEADLINE, s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"\x81\x04ping");
    drop(s);
    tokio::time::timeout(TEST_DEADLINE, sima.shutdown())
        .await
        .expect("a tunnel its client closed held the drain open");
}

#[tokio::test]
async fn curl_forward_proxy_and_static_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let india = upstream("127.0.0.2", "india").await;
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(&format!(
        "{}{GEO_OVERRIDES}resolver:\n  nameservers: []\n  static_hosts:\n    api.india.test: [127.0.0.2]\n    API.USA.test.: [127.0.0.3]\n",
        policy_file(dir.path(), NO_US_POLICY)
    )))
    .await;
    let proxy = format!("http://{}", sima.info.proxy);
    let (ok, out, err) = curl(vec![
        "-x".into(),
        proxy.clone(),
        format!("http://api.india.test:{}/hello", india.addr.port()),
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, "hello from india");
    assert_eq!(
        india.requests()[0].headers["host"],
        format!("api.india.test:{}", india.addr.port())
    );

    let (_, out, _) = curl(vec![
        "-x".into(),
        proxy.clone(),
        "-w".into(),
        "%{http_code}".into(),
        format!("http://api.usa.test:{}/hello", us.addr.port()),
    ])
    .await;
    assert!(out.ends_with("451"), "{out}");
    assert!(us.requests().is_empty());

    let (_, out, _) = curl(vec![
        "-x".into(),
        proxy,
        "-w".into(),
        " %{http_code}".into(),
        "http://unknown.test/".into(),
    ])
    .await;
    assert!(
        out.ends_with(" 502") && out.contains("resolve_failed"),
        "{out}"
    );
    sima.shutdown().await;
}

#[tokio::test]
async fn multi_country_name_dials_only_the_allowed_address() {
    let dir = tempfile::tempdir().unwrap();
    let india = upstream("127.0.0.2", "india").await;
    // Same port on both addresses, so the name's two addresses are one service.
    let us_listener = tokio::net::TcpListener::bind(("127.0.0.3", india.addr.port())).await;
    let sima = start(config(&format!(
        "{}{GEO_OVERRIDES}resolver:\n  static_hosts:\n    split.test: [127.0.0.3, 127.0.0.2]\n",
        policy_file(dir.path(), NO_US_POLICY)
    )))
    .await;
    for i in 0..5 {
        let (status, _, body) = get(
            sima.info.proxy,
            &format!("http://split.test:{}/{i}", india.addr.port()),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"hello from india");
    }
    assert_eq!(india.requests().len(), 5);
    if let Ok(l) = us_listener {
        // Nothing ever connected to the US address.
        let accepted = tokio::time::timeout(std::time::Duration::from_millis(50), l.accept()).await;
        assert!(accepted.is_err(), "Sima connected to the US address");
    }
    sima.shutdown().await;
}

#[tokio::test]
async fn guarded_addresses_are_denied_in_every_spelling() {
    // Default policy and no overrides: every one of these must be refused before dialling.
    let sima = start(config("resolver:\n  nameservers: []\n  static_hosts:\n    metadata.test: [169.254.169.254]\n    private.test: [10.1.2.3, 192.168.1.1]\n")).await;
    let targets = [
        "http://127.0.0.1:9/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.0.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://192.0.2.1/",
        "http://[::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://[2001::1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://metadata.test/",
        "http://private.test/",
    ];
    for t in targets {
        let (status, headers, body) = get(sima.info.proxy, t).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{t}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(headers["sima-reason"], "forbidden_address", "{t}");
    }
    // Ambiguous numeric spellings are refused outright (curl would normalise them; hyper does not).
    for t in [
        "http://2130706433/",
        "http://0x7f.1/",
        "http://017700000001/",
        "http://127.1/",
    ] {
        let (status, headers, _) = get(sima.info.proxy, t).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{t}");
        assert_eq!(headers["sima-reason"], "bad_request", "{t}");
    }
    sima.shutdown().await;
}

#[tokio::test]
async fn ipv6_upstream_and_corrupt_geo_database() {
    let dir = tempfile::tempdir().unwrap();
    let v6 = upstream("::1", "v6").await;
    let allow_all = "version: 1\nname: open\nrules: []\ndefault: allow\n";
    let sima = start(config(&format!(
        "{}{GEO_OVERRIDES}",
        policy_file(dir.path(), allow_all)
    )))
    .await;
    let (status, _, body) = get(
        sima.info.proxy,
        &format!("http://[::1]:{}/v6", v6.addr.port()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(v6.requests()[0].uri, "/v6");
    sima.shutdown().await;

    // A corrupt geo database stops start-up with a message naming the file.
    let bad = dir.path().join("bad.mmdb");
    std::fs::write(&bad, b"definitely not a maxmind db").unwrap();
    let err = app::start(config(&format!("geo:\n  database: {}\n", bad.display())))
        .await
        .err()
        .expect("corrupt database must not start")
        .to_string();
    assert!(
        err.contains("bad.mmdb") && err.contains("not a valid MaxMind DB"),
        "{err}"
    );
}

#[tokio::test]
async fn requests_aimed_at_sima_itself_are_refused() {
    let sima = start(config(GEO_OVERRIDES)).await;
    let (status, headers, _) =
        get(sima.info.proxy, &format!("http://{}/loop", sima.info.proxy)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["sima-reason"], "proxy_loop");
    let (status, headers, _) = get(
        sima.info.proxy,
        &format!("http://{}/metrics", sima.info.admin),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(headers["sima-reason"], "proxy_loop");
    sima.shutdown().await;
}

#[tokio::test]
async fn origin_form_without_route_is_400() {
    let sima = start(config("")).await;
    let (status, headers, body) = get(sima.info.proxy, "/some/path").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers["sima-reason"], "no_route");
    assert!(json(&body)["message"]
        .as_str()
        .unwrap()
        .contains("no route matches /some/path"));
    sima.shutdown().await;
}

#[tokio::test]
async fn routes_originate_tls_with_the_configured_ca_and_refuse_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = test_pki(dir.path(), &["partner.test"]);
    let partner = upstream_with_tls("127.0.0.2", "partner", Some(pki.server.clone())).await;
    let us = upstream("127.0.0.3", "usa").await;
    let port = partner.addr.port();
    let sima = start(config(&format!(
        "{policy}{GEO_OVERRIDES}resolver:\n  static_hosts:\n    partner.test: [127.0.0.2]\n    us.test: [127.0.0.3]\nroutes:\n  - name: partner\n    prefix: /partner/\n    upstream: https://partner.test:{port}/v2\n    ca_bundle: {ca}\n    forwarded: both\n  - name: partner-untrusted\n    prefix: /untrusted/\n    upstream: https://partner.test:{port}/v2\n  - name: foreign\n    host: us.internal\n    upstream: http://us.test:{us_port}\n",
        policy = policy_file(dir.path(), NO_US_POLICY),
        ca = pki.ca_pem_path.display(),
        us_port = us.addr.port(),
    )))
    .await;
    let base = format!("http://{}", sima.info.proxy);

    let (ok, out, err) = curl(vec![format!("{base}/partner/users/7?full=1")]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "hello from partner");
    let seen = partner.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].version,
        http::Version::HTTP_2,
        "ALPN should pick h2"
    );
    assert!(
        seen[0].uri.ends_with("/v2/users/7?full=1"),
        "{}",
        seen[0].uri
    );
    assert_eq!(seen[0].headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen[0].headers["forwarded"], "for=127.0.0.1");

    // The same upstream without the CA: certificate error -> 502 with the reason.
    let (_, out, _) = curl(vec![
        "-w".into(),
        " %{http_code}".into(),
        format!("{base}/untrusted/x"),
    ])
    .await;
    assert!(out.ends_with(" 502"), "{out}");
    assert!(
        out.contains("tls_failed") && out.contains("certificate"),
        "{out}"
    );
    assert_eq!(partner.requests().len(), 1);

    // A Host-matched route to a foreign upstream is blocked like any other request.
    let (_, out, _) = curl(vec![
        "-H".into(),
        "Host: us.internal".into(),
        "-w".into(),
        " %{http_code}".into(),
        format!("{base}/anything"),
    ])
    .await;
    assert!(out.ends_with(" 451"), "{out}");
    assert!(us.requests().is_empty());

    // h2c prior knowledge from the client works on the proxy port too.
    let (ok, out, err) = curl(vec![
        "--http2-prior-knowledge".into(),
        format!("{base}/partner/h2c"),
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, "hello from partner");
    sima.shutdown().await;
}

#[tokio::test]
async fn dns_answers_are_reused_until_their_ttl_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let india = upstream("127.0.0.2", "india").await;
    let policy = policy_file(dir.path(), NO_US_POLICY);
    let (dns, a_queries) =
        fake_dns_with_ttl(DnsMode::Answer, "api.ttl.test", [127, 0, 0, 2], 1).await;
    let sima = start(config(&format!(
        "{policy}{GEO_OVERRIDES}resolver:\n  nameservers: ['{dns}']\n"
    )))
    .await;
    let url = format!("http://api.ttl.test:{}/x", india.addr.port());
    let queries = || a_queries.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..5 {
        let (status, _, body) = get(sima.info.proxy, &url).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!(queries(), 1, "one DNS query while the 1 s TTL lasts");
    // Past the TTL the name is looked up again, not served from a stale answer.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (status, _, _) = get(sima.info.proxy, &url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(queries(), 2, "a fresh query once the TTL has run out");
    assert_eq!(india.requests().len(), 6);
    sima.shutdown().await;
}

#[tokio::test]
async fn dns_failures_and_timeouts_fail_closed_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let india = upstream("127.0.0.2", "india").await;
    let policy = policy_file(dir.path(), NO_US_POLICY);

    let dns = fake_dns(DnsMode::Answer, "api.dns.test", [127, 0, 0, 2]).await;
    let sima = start(config(&format!(
        "{policy}{GEO_OVERRIDES}resolver:\n  nameservers: ['{dns}']\n"
    )))
    .await;
    let (status, _, body) = get(
        sima.info.proxy,
        &format!("http://api.dns.test:{}/x", india.addr.port()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (status, headers, _) = get(sima.info.proxy, "http://nx.dns.test/").await;
    assert_eq!(
        (status, &headers["sima-reason"]),
        (
            StatusCode::BAD_GATEWAY,
            &"resolve_failed".parse::<http::HeaderValue>().unwrap()
        )
    );
    sima.shutdown().await;

    let dns = fake_dns(DnsMode::ServFail, "api.dns.test", [127, 0, 0, 2]).await;
    let sima = start(config(&format!(
        "{policy}{GEO_OVERRIDES}resolver:\n  nameservers: ['{dns}']\n"
    )))
    .await;
    let (status, headers, _) = get(sima.info.proxy, "http://api.dns.test/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers["sima-reason"], "resolve_failed");
    sima.shutdown().await;

    let dns = fake_dns(DnsMode::Silent, "api.dns.test", [127, 0, 0, 2]).await;
    let sima = start(config(&format!(
        "{policy}{GEO_OVERRIDES}resolver:\n  nameservers: ['{dns}']\n  timeout: 300ms\n"
    )))
    .await;
    let (status, headers, body) = get(sima.info.proxy, "http://api.dns.test/").await;
    assert_eq!(
        status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(headers["sima-reason"], "resolve_timeout");
    sima.shutdown().await;
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let sima = start(config(GEO_OVERRIDES)).await;
    let mut s = TcpStream::connect(sima.info.proxy).await.unwrap();
    let big = "a".repeat(100 * 1024);
    let req =
        format!("GET http://127.0.0.2:9/ HTTP/1.1\r\nHost: 127.0.0.2\r\nX-Big: {big}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(TEST_DEADLINE, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    sima.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints() {
    let sima = start(config("")).await;
    let admin = sima.info.admin;
    let raw = |path: &'static str| async move {
        raw_exchange(
            admin,
            &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        )
        .await
    };
    assert!(raw("/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(raw("/readyz").await.starts_with("HTTP/1.1 200"));
    let m = raw("/metrics").await;
    assert!(
        m.contains("sima_build_info") && m.contains("sima_policy_info{hash="),
        "{m}"
    );
    let p = raw("/policy").await;
    assert!(
        p.contains("\"india-strict\"") && p.contains("\"embedded\""),
        "{p}"
    );
    sima.shutdown().await;
}

#[tokio::test]
async fn the_upstream_host_is_the_target_authority_whatever_host_the_client_sent() {
    let up = upstream("127.0.0.2", "india").await;
    let sima = start(config(GEO_OVERRIDES)).await;
    let canonical = up.addr.to_string();
    let port = up.addr.port();
    // The client's own Host is forwarded only when it already is the canonical text;
    // anything else (another name, another spelling, the default port spelled out) is
    // replaced by the target's authority.
    for given in [
        canonical.clone(),
        "other.example".to_owned(),
        format!("127.0.0.02:{port}"),
        format!("127.0.0.2:0{port}"),
        "127.0.0.2".to_owned(),
    ] {
        let resp = raw_exchange(
            sima.info.proxy,
            &format!(
                "GET http://{canonical}/h HTTP/1.1\r\nHost: {given}\r\nConnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{given}: {resp}");
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 5);
    for r in &seen {
        assert_eq!(r.headers["host"], canonical);
    }
    sima.shutdown().await;
}
