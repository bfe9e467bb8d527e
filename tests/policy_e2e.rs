//! End-to-end: policy hot reload, report mode, client groups by source address and by
//! proxy-auth user.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

const ALLOW_ALL: &str = "version: 1\nname: open\nrules: []\ndefault: allow\n";

/// Replaces a file the way ConfigMaps and editors do: write aside, then rename.
fn atomic_write(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    for _ in 0..250 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn rewritten_policy_applies_to_the_next_request_without_dropping_an_upload() {
    let dir = tempfile::tempdir().unwrap();
    let us = upstream("127.0.0.3", "usa").await;
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, ALLOW_ALL).unwrap();
    let sima = start(config(&format!(
        "policy: {}\n{GEO_OVERRIDES}",
        policy_path.display()
    )))
    .await;
    let old_hash = sima.shared.snapshot.load().policy.hash.clone();

    // A slow upload to the US, allowed by the policy it started under.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let body = StreamBody::new(tokio_stream_from(rx));
    let req = Request::post(format!("http://{}/upload", us.addr))
        .body(body)
        .unwrap();
    let proxy = sima.info.proxy;
    let upload = tokio::spawn(async move { send_streaming(proxy, req).await.status() });
    tx.send(Ok(Frame::data(Bytes::from_static(b"part one,"))))
        .await
        .unwrap();

    atomic_write(&policy_path, NO_US_POLICY);
    let shared = sima.shared.clone();
    wait_for(
        || shared.snapshot.load().policy.hash != old_hash,
        "the reload",
    )
    .await;

    tx.send(Ok(Frame::data(Bytes::from_static(b"part two"))))
        .await
        .unwrap();
    drop(tx);
    assert_eq!(
        upload.await.unwrap(),
        StatusCode::OK,
        "in-flight upload must finish on its policy"
    );
    assert_eq!(us.requests()[0].body, b"part one,part two");

    let (status, _, body) = get(sima.info.proxy, &format!("http://{}/after", us.addr)).await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(json(&body)["rule"], "no-us");
    let m = String::from_utf8(sima.shared.metrics.render()).unwrap();
    assert!(
        m.contains(r#"sima_policy_reloads_total{result="success"} 1"#),
        "{m}"
    );
    sima.shutdown().await;
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_broken_rewrite_keeps_the_old_policy_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let us = upstream("127.0.0.3", "usa").await;
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, NO_US_POLICY).unwrap();
    let sima = start(config(&format!(
        "policy: {}\n{GEO_OVERRIDES}",
        policy_path.display()
    )))
    .await;

    atomic_write(&policy_path, "version: 1\nname: broken\nrules:\n  - id: x\n    when: { countries: [Atlantis] }\n    action: block\n");
    let shared = sima.shared.clone();
    wait_for(
        || {
            String::from_utf8(shared.metrics.render())
                .unwrap()
                .contains(r#"sima_policy_reloads_total{result="failure"} 1"#)
        },
        "the failed reload",
    )
    .await;
    assert_eq!(sima.shared.snapshot.load().policy.name, "no-us".into());
    let (status, _, _) = get(sima.info.proxy, &format!("http://{}/x", us.addr)).await;
    assert_eq!(
        status,
        StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
        "the old policy stays in force"
    );

    let (ok, out, _) = curl(vec![format!("http://{}/readyz", sima.info.admin)]).await;
    assert!(
        ok && out.contains("degraded") && out.contains("Atlantis"),
        "{out}"
    );
    let (_, out, _) = curl(vec![format!("http://{}/policy", sima.info.admin)]).await;
    assert!(
        out.contains("\"no-us\"") && out.contains("Atlantis"),
        "{out}"
    );

    // SIGHUP-style reload after fixing the file clears the degraded state.
    atomic_write(&policy_path, ALLOW_ALL);
    wait_for(
        || &*shared.snapshot.load().policy.name == "open",
        "the good reload",
    )
    .await;
    let (_, out, _) = curl(vec![format!("http://{}/readyz", sima.info.admin)]).await;
    assert_eq!(out, "ready\n");
    sima.shutdown().await;
}

#[tokio::test]
async fn report_mode_passes_traffic_and_marks_it() {
    let dir = tempfile::tempdir().unwrap();
    let us = upstream("127.0.0.3", "usa").await;
    let policy = NO_US_POLICY.replace("home: [IN]", "home: [IN]\nmode: report");
    let sima = start(config(&format!(
        "{}{GEO_OVERRIDES}",
        policy_file(dir.path(), &policy)
    )))
    .await;
    let (status, headers, body) = get(sima.info.proxy, &format!("http://{}/r", us.addr)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"hello from usa");
    assert_eq!(
        headers["sima-verdict"],
        "report; rule=no-us; reason=destination_rule"
    );
    assert_eq!(us.requests().len(), 1);
    let m = String::from_utf8(sima.shared.metrics.render()).unwrap();
    assert!(
        m.contains(
            r#"sima_requests_total{decision="report",mode="forward",reason="destination_rule"} 1"#
        ),
        "{m}"
    );
    // A tunnel that report mode lets open is marked the same way.
    let to = us.addr;
    let mut s = tokio::net::TcpStream::connect(sima.info.proxy)
        .await
        .unwrap();
    s.write_all(format!("CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_to(&mut s, b"\r\n\r\n").await;
    drop(s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("sima-verdict: report; rule=no-us; reason=destination_rule\r\n"),
        "{head}"
    );
    sima.shutdown().await;
}

/// GET through the proxy from a chosen loopback source address.
async fn get_from(
    source: &str,
    proxy: std::net::SocketAddr,
    url: &str,
    auth: Option<&str>,
) -> StatusCode {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = sock.connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(url);
    if let Some(a) = auth {
        use base64::Engine;
        req = req.header(
            "proxy-authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(a)
            ),
        );
    }
    let resp = tokio::time::timeout(
        TEST_DEADLINE,
        sender.send_request(req.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test]
async fn client_groups_by_source_address_and_proxy_auth_user() {
    let dir = tempfile::tempdir().unwrap();
    let us = upstream("127.0.0.3", "usa").await;
    // sha256("s3cret")
    let policy = r#"
version: 1
name: per-client
home: [IN]
clients:
  batch-jobs:
    cidrs: [127.0.0.5/32]
  partner-bot:
    users:
      - { name: bot, password_sha256: 2e7b4e2cde9c2b3dd0b1c6d7f5f2b3e7d9c1f8a6b4e3d2c1b0a9f8e7d6c5b4a3 }
  taggers:
    users:
      - { name: tagger }
rules:
  - id: batch-jobs-stay-home
    when: { clients: [batch-jobs], countries: [foreign] }
    action: block
  - id: bot-stays-home
    when: { clients: [partner-bot], countries: [foreign] }
    action: block
default: allow
"#;
    let real_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b"s3cret"))
    };
    let policy = policy.replace(
        "2e7b4e2cde9c2b3dd0b1c6d7f5f2b3e7d9c1f8a6b4e3d2c1b0a9f8e7d6c5b4a3",
        &real_hash,
    );
    let sima = start(config(&format!(
        "{}{GEO_OVERRIDES}",
        policy_file(dir.path(), &policy)
    )))
    .await;
    let url = format!("http://{}/c", us.addr);
    let p = sima.info.proxy;
    assert_eq!(
        get_from("127.0.0.5", p, &url, None).await,
        StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS
    );
    assert_eq!(get_from("127.0.0.1", p, &url, None).await, StatusCode::OK);
    assert_eq!(
        get_from("127.0.0.1", p, &url, Some("bot:s3cret")).await,
        StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS
    );
    assert_eq!(
        get_from("127.0.0.1", p, &url, Some("bot:wrong")).await,
        StatusCode::PROXY_AUTHENTICATION_REQUIRED
    );
    assert_eq!(
        get_from("127.0.0.1", p, &url, Some("nobody:x")).await,
        StatusCode::PROXY_AUTHENTICATION_REQUIRED
    );
    // A user listed without a password hash is identified by name alone.
    assert_eq!(
        get_from("127.0.0.1", p, &url, Some("tagger:anything")).await,
        StatusCode::OK
    );
    // Upstream saw only the allowed ones, never the proxy credentials.
    let seen = us.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|r| r.headers.get("proxy-authorization").is_none()));
    sima.shutdown().await;
}
