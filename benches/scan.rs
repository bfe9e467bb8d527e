#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    dead_code
)]
//! Scanner throughput on realistic 1 MiB payloads, next to a `memchr` pass over the same
//! bytes (the memory-speed floor): the detector alone, and the whole inspection pipeline
//! (decode + normalise + detect with the hold-back scanner), including a gzip body.

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::HeaderMap;
use sima::inspect::detect::{Detector, Finding};
use sima::inspect::{Inspector, Report};

mod data;
use data::{
    base64_document, clean_json, digit_csv, document_xml, escaped_urls, json_one_percent,
    small_values,
};

fn headers(ct: &str, ce: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        ct.parse()
            .unwrap_or(http::HeaderValue::from_static("text/plain")),
    );
    if let Some(ce) = ce {
        h.insert(
            http::header::CONTENT_ENCODING,
            ce.parse()
                .unwrap_or(http::HeaderValue::from_static("identity")),
        );
    }
    h
}

fn inspect_body(ins: &Inspector, h: &HeaderMap, body: &[u8]) -> usize {
    let mut report = Report::default();
    if let Ok(mut scan) = ins.body(h) {
        for chunk in body.chunks(16 * 1024) {
            if scan.feed(chunk, &mut report).is_err() {
                return usize::MAX;
            }
        }
        let _ = scan.finish(&mut report);
    }
    report.counts().iter().map(|(_, _, n)| *n as usize).sum()
}

fn bench(c: &mut Criterion) {
    let det = Detector::builtin();
    let ins = Inspector::new(Arc::new(Detector::builtin()));
    let inputs = [
        ("clean_json", clean_json(), "application/json"),
        (
            "json_1pct_identifiers",
            json_one_percent(),
            "application/json",
        ),
        ("digit_csv", digit_csv(), "text/csv"),
        ("base64_document", base64_document(), "application/json"),
        ("escaped_urls", escaped_urls(), "application/json"),
        ("document_xml", document_xml(), "application/xml"),
    ];
    for (name, data, ct) in &inputs {
        let mut out: Vec<Finding> = Vec::new();
        det.scan(data, 0, None, &mut out);
        let h = headers(ct, None);
        eprintln!(
            "{name}: {} bytes, {} raw findings, {} via pipeline",
            data.len(),
            out.len(),
            inspect_body(&ins, &h, data)
        );
        let mut g = c.benchmark_group(*name);
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function("detect_scan", |b| {
            let mut out: Vec<Finding> = Vec::with_capacity(1024);
            b.iter(|| {
                out.clear();
                det.scan(black_box(data), 0, None, &mut out);
                black_box(out.len())
            })
        });
        g.bench_function("inspect_pipeline", |b| {
            b.iter(|| black_box(inspect_body(&ins, &h, black_box(data))))
        });
        g.bench_function("memchr_nul", |b| {
            b.iter(|| black_box(memchr::memchr(b'\x00', black_box(data))))
        });
        g.finish();
    }

    // A gzip body: throughput counted in decoded bytes.
    let plain = json_one_percent();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = gz.write_all(&plain);
    let zipped = gz.finish().unwrap_or_default();
    let h = headers("application/json", Some("gzip"));
    eprintln!(
        "gzip_json: {} bytes compressed from {}, {} findings",
        zipped.len(),
        plain.len(),
        inspect_body(&ins, &h, &zipped)
    );
    let mut g = c.benchmark_group("gzip_json");
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.bench_function("inspect_pipeline", |b| {
        b.iter(|| black_box(inspect_body(&ins, &h, black_box(&zipped))))
    });
    g.finish();

    // The same JSON as a spreadsheet-sized upload: a deflated entry of a zip file sent as
    // `application/zip`, read entry by entry; throughput counted in decoded bytes.
    let mut z = zip::ZipWriter::new_stream(Vec::new());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let _ = z.start_file("export/users.json", opts);
    let _ = z.write_all(&plain);
    let archive = z.finish().map(|w| w.into_inner()).unwrap_or_default();
    let h = headers("application/zip", None);
    eprintln!(
        "zip_json: {} bytes compressed from {}, {} findings",
        archive.len(),
        plain.len(),
        inspect_body(&ins, &h, &archive)
    );
    let mut g = c.benchmark_group("zip_json");
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.bench_function("inspect_pipeline", |b| {
        b.iter(|| black_box(inspect_body(&ins, &h, black_box(&archive))))
    });
    g.finish();
}

/// The head of a request as a service's HTTP client sends it (the headers of
/// `bench/lib.sh`'s "typical" set, a JWT bearer token among them), inspected as Sima
/// inspects every request to a destination a data rule covers.
fn bench_head(c: &mut Criterion) {
    let ins = Inspector::new(Arc::new(Detector::builtin()));
    let mut h = HeaderMap::new();
    for (n, v) in [
        ("host", "api.partner.example"),
        ("user-agent", "okhttp/4.12.0 payments-service/2.31.4 (build 20261120.3)"),
        ("accept", "application/json, text/plain, */*"),
        ("accept-encoding", "gzip, deflate, br"),
        ("authorization", "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"),
        ("x-request-id", "3f6c1d2e-8b4a-4c2f-9e1d-7a5b6c4d3e2f"),
        ("x-client-version", "2.31.4"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ] {
        h.insert(n, v.parse().unwrap());
    }
    let mut g = c.benchmark_group("request_head");
    g.throughput(Throughput::Elements(1));
    g.bench_function("typical_headers", |b| {
        b.iter(|| {
            let mut r = Report::default();
            ins.inspect_head(
                black_box("/v2/payments/9f3a"),
                Some("limit=20&cursor=abc"),
                black_box(&h),
                &mut r,
            );
            black_box(r.items().len())
        })
    });
    g.finish();
}

fn bench_small(c: &mut Criterion) {
    let det = Detector::builtin();
    let values = small_values();
    let mut g = c.benchmark_group("small_values");
    g.throughput(Throughput::Elements(values.len() as u64));
    g.bench_function("detect_scan_per_value_with_key", |b| {
        let mut out: Vec<Finding> = Vec::with_capacity(64);
        b.iter(|| {
            out.clear();
            for (k, v) in &values {
                det.scan(black_box(v.as_bytes()), 0, Some(k.as_bytes()), &mut out);
            }
            black_box(out.len())
        })
    });
    g.finish();
}

/// WebSocket messages as a chat or event client sends them (small JSON, each its own
/// masked frame), read as Sima reads a client's messages where a data rule applies:
/// framed, unmasked, and each inspected as an untyped body. The policy decision that
/// follows is left out (a lookup, see `cargo bench --bench geo` for its neighbours).
fn bench_websocket(c: &mut Criterion) {
    use sima::proxy::websocket::ClientFrames;
    let ins = Inspector::new(Arc::new(Detector::builtin()));
    let mut stream = Vec::new();
    let n = 1000u64;
    for i in 0..n {
        let text = format!(
            r#"{{"type":"message","room":"support-{}","seq":{i},"at":"2026-11-27T10:{:02}:{:02}Z","text":"Order 4{:05} was delivered to the Pune hub; please confirm the pickup slot."}}"#,
            i % 17,
            i % 60,
            (i * 7) % 60,
            i * 37 % 100_000
        );
        let mask = (i as u32).wrapping_mul(0x9e37_79b9).to_be_bytes();
        stream.push(0x81);
        stream.push(0x80 | 126);
        stream.extend_from_slice(&(text.len() as u16).to_be_bytes());
        stream.extend_from_slice(&mask);
        stream.extend(text.bytes().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    }
    let empty = HeaderMap::new();
    let mut g = c.benchmark_group("websocket");
    g.throughput(Throughput::Elements(n));
    g.bench_function("chat_messages_read_and_inspected", |b| {
        b.iter(|| {
            let mut frames = ClientFrames::new(8 << 20);
            let mut found = 0;
            for read in black_box(&stream).chunks(16 * 1024) {
                frames.push(read);
                while let Ok(Some(ready)) = frames.next_ready() {
                    let mut report = Report::default();
                    if let Ok(mut scan) = ins.body(&empty) {
                        let _ = scan.feed(&ready.payload, &mut report);
                        let _ = scan.finish(&mut report);
                    }
                    found += report.seen().len();
                }
            }
            black_box(found)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench, bench_small, bench_head, bench_websocket
}
criterion_main!(benches);
