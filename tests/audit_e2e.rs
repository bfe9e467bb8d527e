//! End-to-end: every block and report is in the audit log before the client hears of it,
//! the chain verifies across restarts, and no detected value is ever written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;

fn aadhaar() -> String {
    (0..10)
        .map(|d| format!("98765432101{d}"))
        .find(|s| sima::inspect::detect::Validator::Verhoeff.check(s))
        .unwrap()
}

fn records(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn all_text(dir: &std::path::Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect()
}

#[tokio::test]
async fn blocks_and_reports_are_recorded_without_values_and_the_chain_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let us = upstream("127.0.0.3", "usa").await;
    let cfg = || {
        config(&format!(
            "audit:\n  dir: {}\n{GEO_OVERRIDES}",
            audit.display()
        ))
    };
    let a = aadhaar();

    let sima = start(cfg()).await;
    let req = Request::post(format!("http://{}/kyc?user=42&token=abc", us.addr))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!(
            r#"{{"aadhaar":"{a}","pan":"ABCPE1234F"}}"#
        ))))
        .unwrap();
    let (status, headers, _) = send(sima.info.proxy, req).await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    // The record is on disk by the time the 451 arrived.
    let recs = records(&audit);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(
        r["request_id"],
        headers["sima-request-id"].to_str().unwrap()
    );
    assert_eq!(r["action"], "block");
    assert_eq!(r["rule"], "personal-data-stays-in-india");
    assert_eq!(r["reason"], "personal_data");
    assert_eq!(r["country"], "US");
    assert_eq!(r["transport"], "http");
    assert_eq!(r["address"], "127.0.0.3");
    assert_eq!(
        r["path"], "/kyc?user=&token=",
        "query values must be stripped"
    );
    assert_eq!(r["policy"]["name"], "india-strict");
    let classes: Vec<&str> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["AADHAAR", "PAN"]);
    assert_eq!(r["data"][0]["locations"], serde_json::json!(["body"]));
    let aadhaar_print = r["data"][0]["fingerprints"][0].as_str().unwrap().to_owned();
    assert_eq!(aadhaar_print.len(), 16, "a 16-hex-digit keyed fingerprint");
    let m = String::from_utf8(sima.shared.metrics.render()).unwrap();
    assert!(
        m.contains(r#"sima_audit_records_total{action="block"} 1"#),
        "{m}"
    );
    assert!(!m.contains(&a) && !m.contains("ABCPE1234F"));
    sima.shutdown().await;

    // Restart on the same folder: the chain continues.
    let sima = start(cfg()).await;
    // The same Aadhaar, spelled with spaces, in the query: the same fingerprint.
    let spaced = format!("{}+{}+{}", &a[..4], &a[4..8], &a[8..]);
    let (status, _, _) = get(
        sima.info.proxy,
        &format!("http://{}/q?id={spaced}", us.addr),
    )
    .await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    sima.shutdown().await;
    let recs = records(&audit);
    assert_eq!(recs.len(), 2);
    assert_eq!(
        recs[1]["seq"].as_u64(),
        recs[0]["seq"].as_u64().map(|s| s + 1)
    );
    assert_eq!(recs[1]["prev"], recs[0]["hash"]);
    assert_eq!(recs[1]["data"][0]["class"], "AADHAAR");
    assert_eq!(
        recs[1]["data"][0]["fingerprints"][0],
        aadhaar_print.as_str(),
        "repeats must correlate across restarts"
    );
    let report = sima::audit::verify(std::slice::from_ref(&audit)).unwrap();
    assert!(report.is_intact(), "{:?}", report.broken);
    assert_eq!(report.records, 2);

    let text = all_text(&audit);
    assert!(
        !text.contains(&a) && !text.contains("ABCPE1234F"),
        "a detected value reached the audit log"
    );
    assert!(us.requests().is_empty());
}

#[tokio::test]
async fn report_mode_flows_are_recorded_before_they_are_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let us = upstream("127.0.0.3", "usa").await;
    let policy = NO_US_POLICY.replace("home: [IN]", "home: [IN]\nmode: report");
    let sima = start(config(&format!(
        "audit:\n  dir: {}\n{}{GEO_OVERRIDES}",
        audit.display(),
        policy_file(dir.path(), &policy)
    )))
    .await;
    let (status, _, _) = get(sima.info.proxy, &format!("http://{}/r", us.addr)).await;
    assert_eq!(status, StatusCode::OK);
    let recs = records(&audit);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["action"], "report");
    assert_eq!(recs[0]["mode"], "report");
    assert_eq!(recs[0]["rule"], "no-us");
    assert_eq!(us.requests().len(), 1);
    sima.shutdown().await;
}

#[tokio::test]
async fn connect_blocks_are_recorded_as_tunnels() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(&format!(
        "audit:\n  dir: {}\n{}{GEO_OVERRIDES}",
        audit.display(),
        policy_file(dir.path(), NO_US_POLICY)
    )))
    .await;
    let (ok, _, _) = curl(vec![
        "-p".into(),
        "-x".into(),
        format!("http://{}", sima.info.proxy),
        format!("http://{}/t", us.addr),
    ])
    .await;
    assert!(!ok, "the tunnel must be refused");
    let recs = records(&audit);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["transport"], "tunnel");
    assert_eq!(recs[0]["method"], "CONNECT");
    sima.shutdown().await;
}

#[tokio::test]
async fn an_unusable_audit_folder_stops_start_up_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    let cfg = config(&format!(
        "audit:\n  dir: {}\n",
        file.join("audit").display()
    ));
    let err = sima::app::start(cfg)
        .await
        .err()
        .expect("must not start without an audit log")
        .to_string();
    assert!(err.contains("audit"), "{err}");
}

#[tokio::test]
async fn the_binary_logs_no_value_and_exits_0_on_sigterm() {
    require_private_netns();
    let dir = tempfile::tempdir().unwrap();
    let us = upstream("127.0.0.3", "usa").await;
    let cfg = dir.path().join("sima.yaml");
    // Fixed ports inside the private namespace: nothing else listens there.
    std::fs::write(
        &cfg,
        format!("listen: 127.0.0.1:23129\nadmin_listen: 127.0.0.1:29469\nlog_format: json\naudit:\n  dir: {}\n{GEO_OVERRIDES}", dir.path().join("audit").display()),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_sima"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect("127.0.0.1:29469")
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up, "sima did not start");
    let a = aadhaar();
    let (_, out, _) = curl(vec![
        "-x".into(),
        "http://127.0.0.1:23129".into(),
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data".into(),
        format!(r#"{{"aadhaar":"{a}"}}"#),
        "-w".into(),
        " %{http_code}".into(),
        format!("http://{}/kyc", us.addr),
    ])
    .await;
    assert!(out.ends_with(" 451"), "{out}");
    let (_, metrics, _) = curl(vec!["http://127.0.0.1:29469/metrics".into()]).await;
    assert!(!metrics.contains(&a));
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "SIGTERM must drain and exit 0");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains(r#""sima.data_classes":"AADHAAR""#), "{logs}");
    assert!(
        logs.contains("shutting down") && logs.contains("stopped"),
        "{logs}"
    );
    assert!(!logs.contains(&a), "a detected value reached the log");
    assert!(!all_text(&dir.path().join("audit")).contains(&a));
}

#[tokio::test]
async fn route_blocks_are_recorded_with_the_rules_reason_and_citation() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(&format!(
        "audit:\n  dir: {}\n{}{GEO_OVERRIDES}routes:\n  - {{ name: vendor, prefix: /vendor/, upstream: 'http://127.0.0.3:{}' }}\n",
        audit.display(),
        policy_file(dir.path(), NO_US_POLICY),
        us.addr.port()
    )))
    .await;
    let (status, _, _) = get(sima.info.proxy, "/vendor/x").await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    let recs = records(&audit);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["transport"], "route");
    assert_eq!(recs[0]["message"], "US destinations are not allowed");
    assert_eq!(recs[0]["citation"], "Test rule 1");
    assert!(sima::audit::verify(std::slice::from_ref(&audit))
        .unwrap()
        .is_intact());
    sima.shutdown().await;
}

#[tokio::test]
async fn a_large_body_in_report_mode_passes_and_is_recorded_once_judged() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let us = upstream("127.0.0.3", "usa").await;
    let policy = "version: 1\nname: r\nmode: report\nrules:\n  - id: pd-abroad\n    when: { countries: [foreign], data: any }\n    action: block\ndefault: allow\n";
    let sima = start(config(&format!(
        "audit:\n  dir: {}\n{}{GEO_OVERRIDES}",
        audit.display(),
        policy_file(dir.path(), policy)
    )))
    .await;
    let a = aadhaar();
    let mut body = vec![b'x'; 300_000];
    body[200_000] = b' ';
    body[200_001..200_013].copy_from_slice(a.as_bytes());
    body[200_013] = b' ';
    let req = Request::post(format!("http://{}/big", us.addr))
        .header("content-type", "text/plain")
        .body(chunked_body(&body, 8192))
        .unwrap();
    let resp = send_streaming(sima.info.proxy, req).await;
    assert_eq!(resp.status(), StatusCode::OK, "report mode lets it pass");
    assert_eq!(us.requests()[0].body.len(), body.len());
    let mut recs = Vec::new();
    for _ in 0..100 {
        recs = if audit.exists() {
            records(&audit)
        } else {
            Vec::new()
        };
        if !recs.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(recs.len(), 1, "the report must be recorded");
    assert_eq!(recs[0]["action"], "report");
    assert_eq!(recs[0]["rule"], "pd-abroad");
    assert_eq!(recs[0]["data"][0]["class"], "AADHAAR");
    assert!(!all_text(&audit).contains(&a));
    sima.shutdown().await;
}

#[tokio::test]
async fn audited_exceptions_record_allowed_flows_and_expired_ones_stop_applying() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let us = upstream("127.0.0.3", "usa").await;
    let policy = r#"
version: 1
name: exceptions
rules:
  - id: old-vendor-exception
    when: { data: any, path_prefix: [/old] }
    action: allow
    expires: 2020-01-01
    owner: someone@example.in
    justification: ended long ago
  - id: processing-abroad
    when: { data: any, path_prefix: [/process] }
    action: allow
    audit: true
    expires: 2099-12-31
    owner: payments-compliance@example.in
    justification: cross-border authorisation, data returns within one business day
  - id: personal-data-stays-home
    when: { countries: [foreign], data: any }
    action: block
default: allow
"#;
    let sima = start(config(&format!(
        "audit:\n  dir: {}\n{}{GEO_OVERRIDES}",
        audit.display(),
        policy_file(dir.path(), policy)
    )))
    .await;
    let (status, _, _) = get(
        sima.info.proxy,
        &format!("http://{}/process?pan=ABCPE1234F", us.addr),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the exception allows it");
    let (status, _, body) = get(
        sima.info.proxy,
        &format!("http://{}/old?pan=ABCPE1234F", us.addr),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
        "an expired exception no longer applies"
    );
    assert_eq!(json(&body)["rule"], "personal-data-stays-home");
    let recs = records(&audit);
    assert_eq!(recs.len(), 2);
    assert_eq!(
        (recs[0]["action"].as_str(), recs[0]["rule"].as_str()),
        (Some("allow"), Some("processing-abroad"))
    );
    assert_eq!(recs[0]["data"][0]["class"], "PAN");
    assert_eq!(recs[1]["action"], "block");
    let m = String::from_utf8(sima.shared.metrics.render()).unwrap();
    assert!(m.contains("sima_policy_expired_exceptions 1"), "{m}");
    assert!(
        m.contains(r#"sima_audit_records_total{action="allow"} 1"#),
        "{m}"
    );
    sima.shutdown().await;
}
