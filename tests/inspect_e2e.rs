//! End-to-end: personal-data inspection on the request path under the embedded
//! `india-strict` policy. 127.0.0.2 is declared Indian, 127.0.0.3 American.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// A Verhoeff-valid Aadhaar number, computed rather than hard-coded.
fn aadhaar() -> String {
    use sima::inspect::detect::Validator;
    (0..10)
        .map(|d| format!("98765432101{d}"))
        .find(|s| Validator::Verhoeff.check(s))
        .unwrap()
}

fn post(url: String, ctype: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", ctype)
        .body(Full::new(body.into()))
        .unwrap()
}

/// A raw TCP upstream that records every byte it receives, per connection, and answers
/// 200 once it has read a whole request it can recognise (or never, if the request breaks).
async fn raw_recorder(ip: &str) -> (std::net::SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut all = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match tokio::time::timeout(TEST_DEADLINE, s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                        Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock().unwrap().push(all);
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn personal_data_to_a_foreign_destination_is_blocked_at_home_allowed() {
    let india = upstream("127.0.0.2", "india").await;
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(GEO_OVERRIDES)).await;
    let body = format!(
        r#"{{"name":"A. Kumar","aadhaar":"{}","city":"Pune"}}"#,
        aadhaar()
    );

    let (status, headers, resp) = send(
        sima.info.proxy,
        post(
            format!("http://{}/kyc", us.addr),
            "application/json",
            body.clone(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(headers["sima-reason"], "personal_data");
    let j = json(&resp);
    assert_eq!(j["rule"], "personal-data-stays-in-india");
    assert_eq!(j["data_classes"], serde_json::json!(["AADHAAR"]));
    assert!(
        !String::from_utf8_lossy(&resp).contains(&aadhaar()),
        "the 451 body must not echo the value"
    );
    assert!(
        us.requests().is_empty(),
        "the US upstream received the request"
    );

    let (status, _, _) = send(
        sima.info.proxy,
        post(
            format!("http://{}/kyc", india.addr),
            "application/json",
            body.clone(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        india.requests()[0].body,
        body.as_bytes(),
        "body must arrive intact"
    );

    // Foreign destination, no personal data: passes untouched.
    let clean = r#"{"order":18273,"items":[{"sku":"A-1","qty":2}],"ts":1732600000000}"#;
    let (status, _, _) = send(
        sima.info.proxy,
        post(
            format!("http://{}/orders", us.addr),
            "application/json",
            clean,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(us.requests()[0].body, clean.as_bytes());

    let metrics = String::from_utf8(sima.shared.metrics.render()).unwrap();
    assert!(
        metrics.contains(
            r#"sima_requests_total{decision="deny",mode="forward",reason="personal_data"} 1"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains(&aadhaar()));
    // The two bodies with inspection to do (both to the US; India needs none) were read.
    assert!(
        metrics.contains(&format!(
            "sima_inspected_bytes_total{{direction=\"request\"}} {}",
            body.len() + clean.len()
        )),
        "{metrics}"
    );
    sima.shutdown().await;
}

#[tokio::test]
async fn identifiers_in_query_headers_and_encoded_bodies_are_found() {
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(GEO_OVERRIDES)).await;
    let url = |q: &str| format!("http://{}/lookup?{q}", us.addr);

    let (status, _, body) = get(sima.info.proxy, &url("pan=ABCPE1234F")).await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(json(&body)["data_classes"], serde_json::json!(["PAN"]));

    // A document stored under the identifier: an object-store PUT, a form upload's
    // file name.
    let req = Request::put(format!("http://{}/bucket/kyc/ABCPE1234F.pdf", us.addr))
        .body(Full::new(Bytes::from_static(b"%PDF-1.7")))
        .unwrap();
    let (status, _, body) = send(sima.info.proxy, req).await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(json(&body)["data_classes"], serde_json::json!(["PAN"]));
    let (status, _, body) = send(
        sima.info.proxy,
        post(
            url("upload=1"),
            "multipart/form-data; boundary=b0",
            "--b0\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"aadhaar_234123412346.jpg\"\r\n\
             Content-Type: image/jpeg\r\n\r\nJFIF\r\n--b0--\r\n",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(json(&body)["data_classes"], serde_json::json!(["AADHAAR"]));

    // A return URL that carries an address, `urlencode`d into a redirect parameter: its
    // `@` arrives as `%2540`, in the query of an authorisation request and in the form
    // body of the token request.
    let ret = "https%3A%2F%2Fapp.example.in%2Fdone%3Femail%3Dasha.verma%2540example.in";
    let (status, _, body) = get(
        sima.info.proxy,
        &url(&format!("client_id=7&redirect_uri={ret}")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(json(&body)["data_classes"], serde_json::json!(["EMAIL"]));
    let (status, _, body) = send(
        sima.info.proxy,
        post(
            url("token=1"),
            "application/x-www-form-urlencoded",
            format!("grant_type=authorization_code&code=x1&redirect_uri={ret}"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(json(&body)["data_classes"], serde_json::json!(["EMAIL"]));

    let req = Request::get(url("x=1"))
        .header("x-gstin", "27AAPFU0939F1ZV")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        send(sima.info.proxy, req).await.0,
        StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS
    );

    // A bearer token whose claims carry a phone number: decoded, found, blocked; the
    // upstream sees none of these requests.
    let claims = URL_SAFE_NO_PAD.encode(r#"{"sub":"u-77","phone_number":"+91 98765 43210"}"#);
    let req = Request::get(url("x=2"))
        .header(
            "authorization",
            format!("Bearer eyJhbGciOiJub25lIn0.{claims}.c2ln"),
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(sima.info.proxy, req).await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(json(&body)["data_classes"], serde_json::json!(["IN_PHONE"]));
    assert!(us.requests().is_empty());

    // Percent-encoded phone in a form body.
    let (status, _, body) = send(
        sima.info.proxy,
        post(
            url("y=1"),
            "application/x-www-form-urlencoded",
            "mobile=%2B91+98765+43210&x=1",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(json(&body)["data_classes"], serde_json::json!(["IN_PHONE"]));

    // An address spelled so the receiver reads it, each read as the receiver does:
    // percent-escaped inside a JSON field and a text body (a callback URL), with character
    // references in HTML and XML (an obfuscated address, a SOAP field), in a JSON field and
    // in a form field, hex-encoded in a JSON field.
    let callback = "https://partner.example/cb?ref=7&email=asha.verma%40example.in";
    let hexed = hex::encode(r#"{"email":"asha.verma@example.in"}"#);
    // Base64 wrapped at 76 characters (Python's `base64.encodebytes`), the address split
    // across the line break: decoded as one block.
    let note = "Customer record for the Pune branch: contact asha.verma@example.in today";
    let b64 = base64::engine::general_purpose::STANDARD.encode(note);
    let (first, rest) = b64.split_at(76);
    let head = base64::engine::general_purpose::STANDARD
        .decode(first)
        .unwrap();
    assert!(!String::from_utf8_lossy(&head).contains("asha.verma@example.in"));
    let mime = format!("{first}\n{rest}\n");
    for (ct, body) in [
        ("text/plain", mime),
        (
            "application/json",
            format!(r#"{{"callback":"{callback}"}}"#),
        ),
        ("text/plain", format!("redirect to {callback} now")),
        (
            "text/html",
            "<p>Contact: asha.verma&#64;example&period;in</p>".to_owned(),
        ),
        (
            "application/soap+xml",
            "<Body><Email>asha.verma&#x40;example.in</Email></Body>".to_owned(),
        ),
        ("application/json", format!(r#"{{"payload":"{hexed}"}}"#)),
        (
            "application/json",
            r#"{"subject":"KYC","html":"<p>Customer: asha.verma&#64;example.in</p>"}"#.to_owned(),
        ),
        (
            // A rich-text form field, its HTML percent-encoded as a browser posts it.
            "application/x-www-form-urlencoded",
            "subject=KYC&note=%3Cp%3ECustomer%3A+asha.verma%26%2364%3Bexample.in%3C%2Fp%3E"
                .to_owned(),
        ),
    ] {
        let (status, _, reply) = send(sima.info.proxy, post(url("w=1"), ct, body)).await;
        assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS, "{ct}");
        assert_eq!(
            json(&reply)["data_classes"],
            serde_json::json!(["EMAIL"]),
            "{ct}"
        );
    }
    // An Aadhaar number as documents and Indian keyboards write it: in Devanagari digits,
    // its groups apart by no-break spaces.
    let a = aadhaar();
    let hindi: String = a
        .chars()
        .map(|c| char::from_u32(0x966 + c.to_digit(10).unwrap()).unwrap())
        .collect();
    let nbsp = format!("{}\u{a0}{}\u{a0}{}", &a[..4], &a[4..8], &a[8..]);
    for (ct, body) in [
        (
            "application/json",
            format!(r#"{{"naam":"Asha","uid":"{hindi}"}}"#),
        ),
        ("text/plain", format!("UID {nbsp}, verified")),
        (
            // An email posted to a mail API abroad: `multipart/alternative` inside `mixed`,
            // its text part quoted-printable, the number wrapped at 76 characters by the
            // mail library (`=` and a line break in the middle of it).
            "multipart/mixed; boundary=outer",
            format!(
                "--outer\r\nContent-Type: multipart/alternative;\r\n boundary=\"inner\"\r\n\r\n\
                 --inner\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: quoted-printable\r\n\r\n\
                 Dear Asha, the Aadhaar number we have on record for your account is {}=C2=A0{}=\r\n{}=C2=A0{}.\r\n\
                 --inner--\r\n--outer--\r\n",
                &a[..4],
                &a[4..7],
                &a[7..8],
                &a[8..]
            ),
        ),
        (
            // The same email uploaded whole (`message/rfc822`).
            "message/rfc822",
            format!(
                "MIME-Version: 1.0\r\nSubject: KYC\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: quoted-printable\r\n\r\n\
                 Your Aadhaar number on record is {}=\r\n{}.\r\n",
                &a[..6],
                &a[6..]
            ),
        ),
        (
            // An email sent through a mail API's JSON `raw` field (base64url of the whole
            // message), its text part base64 inside, as Python's MIMEText writes UTF-8.
            "application/json",
            format!(
                r#"{{"raw":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(format!(
                    "MIME-Version: 1.0\r\nSubject: KYC\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\
                     Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("नमस्ते Asha, your Aadhaar {nbsp} is verified.\n"))
                ))
            ),
        ),
    ] {
        let (status, _, reply) = send(sima.info.proxy, post(url("u=1"), ct, body)).await;
        assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS, "{ct}");
        assert_eq!(
            json(&reply)["data_classes"],
            serde_json::json!(["AADHAAR"]),
            "{ct}"
        );
    }
    // JSON sent with no type at all (`requests.post(url, data=json.dumps(…))`), its
    // Devanagari digits escaped as `\u0968`, as json.dumps writes them.
    let escaped: String = hindi
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    // And a SOAP envelope posted the same way, its Devanagari digits written as
    // character references, as an XML writer with an ASCII encoding writes them.
    let referenced: String = hindi.chars().map(|c| format!("&#{};", c as u32)).collect();
    for body in [
        format!(r#"{{"naam": "Asha", "uid": "{escaped}"}}"#),
        format!(
            "<?xml version=\"1.0\" encoding=\"US-ASCII\"?>\n<soap:Envelope \
             xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>\
             <Verify><Uid>{referenced}</Uid></Verify></soap:Body></soap:Envelope>"
        ),
    ] {
        let req = Request::post(url("t=1"))
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        let (status, _, reply) = send(sima.info.proxy, req).await;
        assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS, "{body}");
        assert_eq!(json(&reply)["data_classes"], serde_json::json!(["AADHAAR"]));
    }
    // The same event as a queue message's body (`json.dumps` twice: SQS's `MessageBody`),
    // and base64 in a stream record's `Data` (Kinesis).
    let event = format!(r#"{{"naam": "Asha", "uid": "{escaped}"}}"#);
    for body in [
        format!(
            r#"{{"QueueUrl": "https://sqs.example/q", "MessageBody": {}}}"#,
            serde_json::to_string(&event).unwrap()
        ),
        format!(
            r#"{{"StreamName": "events", "Data": "{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode(&event)
        ),
        // The same record gzipped first, as compressed log records travel.
        format!(
            r#"{{"StreamName": "logs", "Data": "{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode(gzipped(event.as_bytes()))
        ),
    ] {
        let (status, _, reply) = send(
            sima.info.proxy,
            post(url("q=1"), "application/x-amz-json-1.0", body.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS, "{body}");
        assert_eq!(json(&reply)["data_classes"], serde_json::json!(["AADHAAR"]));
    }
    // The same JSON typed as a form, as `curl -d` and PHP's curl send it.
    let (status, _, reply) = send(
        sima.info.proxy,
        post(
            url("t=2"),
            "application/x-www-form-urlencoded",
            format!(r#"{{"naam": "Asha", "uid": "{escaped}"}}"#),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(json(&reply)["data_classes"], serde_json::json!(["AADHAAR"]));
    assert!(us.requests().is_empty());

    // A gzip-compressed JSON body with a card number.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"card":"4111 1111 1111 1111","cvv":"123"}"#)
        .unwrap();
    let req = Request::post(url("z=1"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Full::new(Bytes::from(gz.finish().unwrap())))
        .unwrap();
    let (status, _, body) = send(sima.info.proxy, req).await;
    assert_eq!(
        status,
        StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(json(&body)["data_classes"], serde_json::json!(["CARD"]));

    // A decompression bomb cannot be inspected: blocked for a foreign destination.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b'a'; 32 * 1024 * 1024]).unwrap();
    let req = Request::post(url("bomb=1"))
        .header("content-type", "text/plain")
        .header("content-encoding", "gzip")
        .body(Full::new(Bytes::from(gz.finish().unwrap())))
        .unwrap();
    let (status, headers, _) = send(sima.info.proxy, req).await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(headers["sima-reason"], "uninspectable");
    assert!(us.requests().is_empty());
    sima.shutdown().await;
}

/// What the raw recorder stored, once it holds `n` connections or after a bounded wait
/// (it stores a connection when the connection closes).
async fn recorded(seen: &Mutex<Vec<Vec<u8>>>, n: usize) -> Vec<Vec<u8>> {
    for _ in 0..100 {
        if seen.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    seen.lock().unwrap().clone()
}

/// Streams `total` bytes of filler in `chunk`-sized frames, with `planted` at `at`.
fn streamed(total: usize, chunk: usize, planted: &str, at: usize) -> Frames {
    let mut body = vec![b'a'; total];
    body[at..at + planted.len()].copy_from_slice(planted.as_bytes());
    body[at - 1] = b' ';
    body[at + planted.len()] = b' ';
    chunked_body(&body, chunk)
}

#[tokio::test]
async fn large_streamed_body_is_stopped_before_the_identifier_leaves() {
    let (addr, seen) = raw_recorder("127.0.0.3").await;
    let sima = start(config(GEO_OVERRIDES)).await;
    let a = aadhaar();
    // 1 MiB body, far past the 64 KiB buffer, identifier split across 1000-byte frames.
    for (at, chunk) in [(600_000usize, 1000usize), (70_001, 7), (900_123, 4096)] {
        let req = Request::post(format!("http://{addr}/upload"))
            .header("content-type", "text/plain")
            .body(streamed(1 << 20, chunk, &a, at))
            .unwrap();
        let resp = send_streaming(sima.info.proxy, req).await;
        assert_eq!(
            resp.status(),
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            "planted at {at}"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(json(&body)["data_classes"], serde_json::json!(["AADHAAR"]));
    }
    let got = recorded(&seen, 3).await;
    assert_eq!(
        got.len(),
        3,
        "each blocked upload reached the upstream as a broken request"
    );
    for raw in got {
        let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body = &raw[head_end..];
        // Filler is 'a' and spaces (plus chunk-size lines): no digit of the identifier got out.
        let digits: Vec<u8> = body
            .split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(|b| b.is_ascii_hexdigit() || *b == b'\r'))
            .flat_map(|l| l.iter().copied())
            .filter(u8::is_ascii_digit)
            .collect();
        assert!(
            digits.is_empty(),
            "identifier bytes reached the upstream: {:?}",
            String::from_utf8_lossy(&digits)
        );
        assert!(
            !body.ends_with(b"0\r\n\r\n"),
            "the upstream request must not be completed"
        );
    }
    sima.shutdown().await;
}

/// The body bytes of a chunked HTTP/1.1 request as far as they arrived (a broken request
/// ends mid-chunk).
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut rest = &raw[raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let mut body = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        rest = &rest[eol + 2..];
        let n = size.min(rest.len());
        body.extend_from_slice(&rest[..n]);
        if size == 0 || n < size || rest.len() < size + 2 {
            break;
        }
        rest = &rest[size + 2..];
    }
    body
}

#[tokio::test]
async fn identifier_in_a_long_base64_upload_is_stopped_before_it_leaves() {
    long_encoded_upload_is_stopped(Encoding::Base64).await;
}

/// The same, with every base64 character spelled as a JSON `\uXXXX` escape (six bytes
/// each): a block read before it is decoded spans 24 KiB, past the plain hold-back.
#[tokio::test]
async fn identifier_in_a_long_escaped_base64_upload_is_stopped_before_it_leaves() {
    long_encoded_upload_is_stopped(Encoding::SpelledBase64).await;
}

/// The same document hex-encoded (300 KB of digits).
#[tokio::test]
async fn identifier_in_a_long_hex_upload_is_stopped_before_it_leaves() {
    long_encoded_upload_is_stopped(Encoding::Hex).await;
}

/// How the document of `long_encoded_upload_is_stopped` is encoded.
#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Base64,
    SpelledBase64,
    Hex,
}

async fn long_encoded_upload_is_stopped(encoding: Encoding) {
    use base64::Engine as _;
    let (addr, seen) = raw_recorder("127.0.0.3").await;
    let sima = start(config(GEO_OVERRIDES)).await;
    // A JSON upload carrying a 150 KB text document as base64 (200 KB of it, one string):
    // streamed, since it is past the 64 KiB buffer, and the identifier deep inside it.
    let mut doc: Vec<u8> = (0..150_000)
        .map(|i| b"name, address, notes; "[i % 22])
        .collect();
    let id = format!(" {} ", aadhaar());
    let at = 100_000;
    doc[at..at + id.len()].copy_from_slice(id.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&doc);
    let (text, first) = match encoding {
        Encoding::Base64 => (b64, at / 3 * 4),
        Encoding::SpelledBase64 => (
            b64.chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect(),
            at / 3 * 4 * 6,
        ),
        Encoding::Hex => (hex::encode(&doc), at * 2),
    };
    let prefix = r#"{"file":"kyc.txt","content":""#;
    let body = format!(r#"{prefix}{text}"}}"#);
    let first_raw = prefix.len() + first;
    let req = Request::post(format!("http://{addr}/upload"))
        .header("content-type", "application/json")
        .body(chunked_body(body.as_bytes(), 4096))
        .unwrap();
    let resp = send_streaming(sima.info.proxy, req).await;
    assert_eq!(resp.status(), StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    let reply = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(json(&reply)["data_classes"], serde_json::json!(["AADHAAR"]));
    let got = recorded(&seen, 1).await;
    assert_eq!(
        got.len(),
        1,
        "the upload reached the upstream as a broken request"
    );
    let received = dechunk(&got[0]);
    assert!(
        body.as_bytes().starts_with(&received),
        "the upstream got other bytes than were sent"
    );
    assert!(
        received.len() <= first_raw,
        "{} bytes reached the upstream; the identifier is encoded from byte {first_raw}",
        received.len()
    );
    sima.shutdown().await;
}

#[tokio::test]
async fn a_body_past_inspect_max_body_bytes_is_uninspectable() {
    let us = upstream("127.0.0.3", "usa").await;
    let india = upstream("127.0.0.2", "india").await;
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}inspect:\n  max_body_bytes: 200000\n"
    )))
    .await;
    let clean = |n: usize| -> Vec<u8> { (0..n).map(|i| b"abcdefghij klmnopq\n"[i % 19]).collect() };
    let post = |addr: std::net::SocketAddr, body: &[u8]| {
        Request::post(format!("http://{addr}/upload"))
            .header("content-type", "text/plain")
            .body(chunked_body(body, 16 * 1024))
            .unwrap()
    };
    // Under the limit: inspected, clean, delivered whole.
    let small = clean(150_000);
    let resp = send_streaming(sima.info.proxy, post(us.addr, &small)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(us.requests()[0].body == small);
    // Past it, to a foreign destination: it cannot be inspected whole, so the policy's
    // `uninspectable` action (block) applies, and the upstream request is broken off.
    let resp = send_streaming(sima.info.proxy, post(us.addr, &clean(300_000))).await;
    assert_eq!(resp.status(), StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(resp.headers()["sima-reason"], "uninspectable");
    let reply = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        json(&reply)["reason"]
            .as_str()
            .unwrap()
            .contains("exceeds the 200000 bytes inspected (inspect.max_body_bytes)"),
        "the reason names the limit: {}",
        String::from_utf8_lossy(&reply)
    );
    assert!(us
        .requests()
        .iter()
        .skip(1)
        .all(|r| r.body == b"<<body aborted>>"));
    // To India no rule needs the body inspected: any size goes.
    let big = clean(300_000);
    let resp = send_streaming(sima.info.proxy, post(india.addr, &big)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(india.requests()[0].body == big);
    sima.shutdown().await;
}

#[tokio::test]
async fn large_clean_body_streams_through_intact() {
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(GEO_OVERRIDES)).await;
    let body: Vec<u8> = (0..(3 << 20))
        .map(|i| b"abcdefghij klmnopqrstuvwxyz\n"[i % 28])
        .collect();
    let req = Request::post(format!("http://{}/big", us.addr))
        .header("content-type", "text/plain")
        .body(chunked_body(&body, 10_000))
        .unwrap();
    let resp = send_streaming(sima.info.proxy, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = us.requests();
    assert_eq!(seen[0].body.len(), body.len());
    assert!(seen[0].body == body, "streamed body altered");
    sima.shutdown().await;
}

#[tokio::test]
async fn curl_chunked_upload_with_identifier_is_blocked() {
    let dir = tempfile::tempdir().unwrap();
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(GEO_OVERRIDES)).await;
    let file = dir.path().join("payload.json");
    let mut data = String::from("[");
    for i in 0..5000 {
        data.push_str(&format!(r#"{{"id":{i},"note":"ok"}},"#));
    }
    data.push_str(r#"{"email":"asha.verma@example.in"}]"#);
    std::fs::write(&file, &data).unwrap();
    let (_, out, err) = curl(vec![
        "-x".into(),
        format!("http://{}", sima.info.proxy),
        "-H".into(),
        "Transfer-Encoding: chunked".into(),
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data-binary".into(),
        format!("@{}", file.display()),
        "-w".into(),
        " %{http_code}".into(),
        format!("http://{}/bulk", us.addr),
    ])
    .await;
    assert!(out.ends_with(" 451"), "{out} {err}");
    assert!(out.contains("EMAIL"), "{out}");
    assert!(!out.contains("asha.verma"), "{out}");
    assert!(us.requests().iter().all(|r| r.body == b"<<body aborted>>"));
    sima.shutdown().await;
}

#[tokio::test]
async fn inspect_always_counts_findings_without_changing_verdicts() {
    let india = upstream("127.0.0.2", "india").await;
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}inspect:\n  always: true\n"
    )))
    .await;
    let body = r#"{"pan":"ABCPE1234F"}"#;
    let (status, _, _) = send(
        sima.info.proxy,
        post(
            format!("http://{}/kyc", india.addr),
            "application/json",
            body,
        ),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "PAN to India is allowed by india-strict"
    );
    assert_eq!(india.requests()[0].body, body.as_bytes());
    let metrics = String::from_utf8(sima.shared.metrics.render()).unwrap();
    assert!(
        metrics.contains(r#"sima_detections_total{data_class="PAN",decision="allow"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"sima_detections_total{data_class="AADHAAR",decision="deny"} 0"#));
    sima.shutdown().await;
}

#[tokio::test]
async fn a_body_in_a_transfer_coding_besides_chunked_is_refused() {
    // `Transfer-Encoding: gzip, chunked`: the body would be de-chunked and passed on still
    // gzip-coded, with no label saying so, and never inspected. It gets 501.
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(GEO_OVERRIDES)).await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(format!(r#"{{"uid":"{}"}}"#, aadhaar()).as_bytes())
        .unwrap();
    let gz = gz.finish().unwrap();
    let mut req = format!(
        "POST http://{}/kyc HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: gzip, chunked\r\n\r\n{:x}\r\n",
        us.addr,
        us.addr,
        gz.len()
    )
    .into_bytes();
    req.extend_from_slice(&gz);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut s = TcpStream::connect(sima.info.proxy).await.unwrap();
    s.write_all(&req).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(TEST_DEADLINE, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&got);
    assert!(head.starts_with("HTTP/1.1 501"), "{head}");
    assert!(us.requests().is_empty(), "the upstream got the request");
    sima.shutdown().await;
}

#[tokio::test]
async fn a_host_named_by_an_identifier_is_read() {
    // In `Host`, and, where a request carries none (HTTP/1.0), in its absolute URI.
    let us = upstream("127.0.0.3", "usa").await;
    let host = "9876543210.tenant.test";
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}resolver:\n  nameservers: []\n  static_hosts:\n    {host}: [127.0.0.3]\n"
    )))
    .await;
    let uri = format!("http://{host}:{}/profile", us.addr.port());
    let (status, _, body) = get(sima.info.proxy, &uri).await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(json(&body)["data_classes"], serde_json::json!(["IN_PHONE"]));
    let reply = raw_exchange(sima.info.proxy, &format!("GET {uri} HTTP/1.0\r\n\r\n")).await;
    assert!(reply.starts_with("HTTP/1.0 451"), "{reply}");
    assert!(reply.contains("IN_PHONE"), "{reply}");
    // And in a tunnel's destination, the one thing of it Sima sees before it opens (HTTPS
    // would carry the name on in its server name indication).
    let authority = format!("{host}:{}", us.addr.port());
    let mut s = TcpStream::connect(sima.info.proxy).await.unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The connection stays open for another request: read the answer up to its classes.
    let mut reply = String::new();
    while !reply
        .split_once("data_classes")
        .is_some_and(|(_, rest)| rest.contains(']'))
    {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(TEST_DEADLINE, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{reply}");
        reply.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(reply.starts_with("HTTP/1.1 451"), "{reply}");
    assert!(reply.contains("IN_PHONE"), "{reply}");
    assert_eq!(us.accepted.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(us.requests().is_empty());
    sima.shutdown().await;
}

/// A CSV export of `rows` rows of pseudo-random ids (gzip cannot shrink them much), with a
/// row carrying `planted` after `at` rows when given.
fn export_csv(rows: usize, planted: Option<(&str, usize)>) -> Vec<u8> {
    let mut out = b"id,ref\n".to_vec();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..rows {
        if let Some((p, _)) = planted.filter(|&(_, at)| at == i) {
            out.extend_from_slice(format!("asha,{p}\n").as_bytes());
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(format!("user-{i},x{x:016x}\n").as_bytes());
    }
    out
}

fn gzipped(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn gzip_files_put_without_a_content_encoding_are_read_decompressed() {
    // `aws s3 cp users.csv.gz s3://…`: the file goes as it is, typed `application/gzip`
    // or not at all, with no Content-Encoding for anything else to open it by.
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(GEO_OVERRIDES)).await;
    let a = aadhaar();
    let url = format!("http://{}/bucket/exports/users.csv.gz", us.addr);
    for ct in [
        Some("application/gzip"),
        Some("application/octet-stream"),
        None,
    ] {
        let mut req = Request::put(&url);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let body = gzipped(&export_csv(200, Some((&a, 150))));
        let (status, _, reply) = send(
            sima.info.proxy,
            req.body(Full::new(Bytes::from(body))).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS, "{ct:?}");
        assert_eq!(json(&reply)["data_classes"], serde_json::json!(["AADHAAR"]));
    }
    assert!(us.requests().is_empty());
    // A clean export passes, byte for byte.
    let clean = gzipped(&export_csv(200, None));
    let req = Request::put(&url)
        .header("content-type", "application/gzip")
        .body(Full::new(Bytes::from(clean.clone())))
        .unwrap();
    assert_eq!(send(sima.info.proxy, req).await.0, StatusCode::OK);
    assert_eq!(us.requests()[0].body, clean);
    // A file that says it is gzip and is not cannot be inspected: refused.
    let mut broken = clean.clone();
    broken.truncate(clean.len() / 2);
    let req = Request::put(&url)
        .header("content-type", "application/gzip")
        .body(Full::new(Bytes::from(broken)))
        .unwrap();
    let (status, headers, _) = send(sima.info.proxy, req).await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(headers["sima-reason"], "uninspectable");
    assert_eq!(us.requests().len(), 1);
    sima.shutdown().await;
}

#[tokio::test]
async fn a_large_gzip_file_streams_and_stops_before_the_identifier_leaves() {
    let (addr, seen) = raw_recorder("127.0.0.3").await;
    let sima = start(config(GEO_OVERRIDES)).await;
    let a = aadhaar();
    // About 330 KiB compressed, past the 64 KiB read whole; the row late in the file.
    let gz = gzipped(&export_csv(20_000, Some((&a, 17_000))));
    assert!(gz.len() > 256 << 10, "{}", gz.len());
    let req = Request::put(format!("http://{addr}/bucket/users.csv.gz"))
        .header("content-type", "application/gzip")
        .body(chunked_body(&gz, 4096))
        .unwrap();
    let resp = send_streaming(sima.info.proxy, req).await;
    assert_eq!(resp.status(), StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    let got = recorded(&seen, 1).await;
    assert_eq!(
        got.len(),
        1,
        "the upload began before the identifier was read"
    );
    let raw = &got[0];
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    // De-chunk what arrived and decompress as much of it as decodes: the identifier is
    // not in it.
    let mut body = Vec::new();
    let mut rest = &raw[head_end..];
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let Ok(n) = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap_or("x"), 16)
        else {
            break;
        };
        let data = &rest[eol + 2..];
        if n == 0 || data.len() < n {
            body.extend_from_slice(&data[..n.min(data.len())]);
            break;
        }
        body.extend_from_slice(&data[..n]);
        rest = &data[n..];
        rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
    }
    assert!(
        !body.is_empty() && body.len() < gz.len(),
        "{} of {}",
        body.len(),
        gz.len()
    );
    let mut text = Vec::new();
    let mut dec = flate2::read::GzDecoder::new(&body[..]);
    let _ = std::io::Read::read_to_end(&mut dec, &mut text);
    assert!(text.len() > 100_000, "{}", text.len());
    assert!(
        !String::from_utf8_lossy(&text).contains(&a),
        "the identifier reached the upstream"
    );
    sima.shutdown().await;
}

#[tokio::test]
async fn bodies_in_utf16_and_latin1_are_read() {
    // .NET's Encoding.Unicode writes UTF-16 with a byte order mark (and Excel's "Unicode
    // Text" export), as a body or as a form's file; a Latin-1 client writes its no-break
    // space as 0xA0.
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(GEO_OVERRIDES)).await;
    let a = aadhaar();
    let url = format!("http://{}/v1/customers", us.addr);
    let utf16 = |text: &str| -> Vec<u8> {
        let mut out = vec![0xff, 0xfe];
        for u in text.encode_utf16() {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out
    };
    let spaced = format!("{} {} {}", &a[..4], &a[4..8], &a[8..]);
    let mut latin = b"name: Asha\nuid: ".to_vec();
    latin.extend_from_slice(spaced.replace(' ', "\u{a0}").as_bytes());
    // As Latin-1: each no-break space one byte.
    let latin: Vec<u8> = String::from_utf8(latin)
        .unwrap()
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap())
        .collect();
    for (ct, body) in [
        (
            "application/json",
            utf16(&format!(r#"{{"name":"Asha","uid":"{a}"}}"#)),
        ),
        ("text/plain; charset=iso-8859-1", latin),
        // A form's file field holding a UTF-16 export, typed with its charset.
        ("multipart/form-data; boundary=b0", {
            let mut b =
                b"--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"u.txt\"\r\n\
                Content-Type: text/plain; charset=utf-16\r\n\r\n"
                    .to_vec();
            b.extend_from_slice(&utf16(&format!("name\tuid\nAsha\t{a}\n")));
            b.extend_from_slice(b"\r\n--b0--\r\n");
            b
        }),
    ] {
        let (status, _, reply) = send(sima.info.proxy, post(url.clone(), ct, body)).await;
        assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS, "{ct}");
        assert_eq!(json(&reply)["data_classes"], serde_json::json!(["AADHAAR"]));
    }
    assert!(us.requests().is_empty());
    let clean = utf16(r#"{"name":"Asha","city":"Pune"}"#);
    let (status, _, _) = send(
        sima.info.proxy,
        post(url.clone(), "application/json", clean.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(us.requests()[0].body, clean, "forwarded as sent");
    sima.shutdown().await;
}

/// A zip file of `(name, content)` entries, deflated, written as a streaming writer writes
/// it (sizes in a descriptor after each entry's data) or as a file.
fn zipped(entries: &[(&str, &[u8])], stream: bool) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    if stream {
        let mut z = zip::ZipWriter::new_stream(Vec::new());
        for (name, content) in entries {
            z.start_file(*name, opts).unwrap();
            z.write_all(content).unwrap();
        }
        z.finish().unwrap().into_inner()
    } else {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, content) in entries {
            z.start_file(*name, opts).unwrap();
            z.write_all(content).unwrap();
        }
        z.finish().unwrap().into_inner()
    }
}

/// The parts of a minimal `.xlsx` whose one shared string is `cell`.
fn xlsx(cell: &str, stream: bool) -> Vec<u8> {
    let strings = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<sst xmlns=\"http://schemas.openxmlformats.org/spreadsheetml/2006/main\" count=\"2\" uniqueCount=\"2\"><si><t>name</t></si><si><t>{cell}</t></si></sst>"
    );
    zipped(
        &[
            ("[Content_Types].xml", b"<?xml version=\"1.0\"?><Types/>"),
            (
                "xl/worksheets/sheet1.xml",
                b"<worksheet><sheetData><row r=\"1\"><c r=\"A1\" t=\"s\"><v>0</v></c><c r=\"B1\" t=\"s\"><v>1</v></c></row></sheetData></worksheet>",
            ),
            ("xl/sharedStrings.xml", strings.as_bytes()),
        ],
        stream,
    )
}

/// The parts of a minimal `.docx` whose one paragraph holds `runs`, one Word run each, as
/// Word splits a run where an edit began.
fn docx(runs: &[&str]) -> Vec<u8> {
    let mut body = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<w:document xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"><w:body><w:p w:rsidR=\"00C2\">",
    );
    for (i, run) in runs.iter().enumerate() {
        body.push_str(&format!(
            "<w:r w:rsidRPr=\"00A{i}B2\"><w:rPr><w:lang w:val=\"en-IN\"/></w:rPr><w:t xml:space=\"preserve\">{run}</w:t></w:r><w:proofErr w:type=\"gramEnd\"/>"
        ));
    }
    body.push_str("</w:p></w:body></w:document>");
    zipped(
        &[
            ("[Content_Types].xml", b"<?xml version=\"1.0\"?><Types/>"),
            ("word/document.xml", body.as_bytes()),
        ],
        false,
    )
}

const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

#[tokio::test]
async fn text_split_across_inline_tags_is_read_whole() {
    // An Aadhaar typed into a letter in two sittings, which Word stores as two runs; the
    // same bolded in part in an email's HTML, sent as it is or in a mail API's JSON. Each
    // piece alone is no identifier.
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(GEO_OVERRIDES)).await;
    let a = aadhaar();
    let (head, tail) = a.split_at(5);
    let url = format!("http://{}/upload", us.addr);
    let letter = docx(&["Customer Aadhaar: ", head, tail, " on file."]);
    let html = format!("<p>Aadhaar: <b>{head}</b>{tail}</p>");
    // The same HTML in an email API's JSON.
    let mail = serde_json::json!({"subject": "KYC", "html": html}).to_string();
    for (ct, body) in [
        (DOCX, letter.clone()),
        ("text/html", html.into_bytes()),
        ("application/json", mail.into_bytes()),
    ] {
        let req = Request::put(&url)
            .header("content-type", ct)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let (status, _, reply) = send(sima.info.proxy, req).await;
        assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS, "{ct}");
        assert_eq!(json(&reply)["data_classes"], serde_json::json!(["AADHAAR"]));
    }
    assert!(us.requests().is_empty());
    // Runs in separate table cells are separate text: the letter passes, byte for byte.
    let cells = format!("<table><tr><td>{head}</td><td>{tail}</td></tr></table>");
    let clean = docx(&["Customer ", "Asha Verma", " on file."]);
    for (ct, body) in [(DOCX, clean), ("text/html", cells.into_bytes())] {
        let req = Request::put(&url)
            .header("content-type", ct)
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        assert_eq!(send(sima.info.proxy, req).await.0, StatusCode::OK, "{ct}");
        assert_eq!(us.requests().last().unwrap().body, body);
    }
    sima.shutdown().await;
}

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

#[tokio::test]
async fn spreadsheets_and_zip_files_are_read() {
    // A spreadsheet of customers uploaded to a foreign service: as the file itself (typed
    // as it is, or as bytes), or as a form's file field, as a browser or `curl -F` sends it.
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(GEO_OVERRIDES)).await;
    let a = aadhaar();
    let url = format!("http://{}/upload", us.addr);
    for (ct, stream) in [
        (Some(XLSX), false),
        (Some("application/octet-stream"), true),
        (Some("application/zip"), true),
        (None, false),
    ] {
        let mut req = Request::put(&url);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let body = Bytes::from(xlsx(&a, stream));
        let (status, _, reply) = send(sima.info.proxy, req.body(Full::new(body)).unwrap()).await;
        assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS, "{ct:?}");
        assert_eq!(json(&reply)["data_classes"], serde_json::json!(["AADHAAR"]));
    }
    let form = |file: &[u8], ct: &str| {
        let mut b = b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nQ3 list\r\n\
            --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"customers.xlsx\"\r\n"
            .to_vec();
        b.extend_from_slice(format!("Content-Type: {ct}\r\n\r\n").as_bytes());
        b.extend_from_slice(file);
        b.extend_from_slice(b"\r\n--XyZ--\r\n");
        b
    };
    let (status, _, reply) = send(
        sima.info.proxy,
        post(
            url.clone(),
            "multipart/form-data; boundary=XyZ",
            form(&xlsx(&a, false), XLSX),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(json(&reply)["data_classes"], serde_json::json!(["AADHAAR"]));
    // A mail API's JSON with the spreadsheet attached as base64, the same.
    let mail = serde_json::json!({
        "subject": "Q3 list",
        "attachments": [{
            "filename": "customers.xlsx",
            "content": base64::engine::general_purpose::STANDARD.encode(xlsx(&a, true)),
        }],
    });
    let (status, _, reply) = send(
        sima.info.proxy,
        post(url.clone(), "application/json", mail.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(json(&reply)["data_classes"], serde_json::json!(["AADHAAR"]));
    // A gzip file in a form field, the same.
    let gz = gzipped(&export_csv(200, Some((&a, 150))));
    let (status, _, _) = send(
        sima.info.proxy,
        post(
            url.clone(),
            "multipart/form-data; boundary=XyZ",
            form(&gz, "application/gzip"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert!(us.requests().is_empty());
    // A clean spreadsheet passes, byte for byte, as a file and in a form.
    let clean = xlsx("Asha Verma", false);
    let req = Request::put(&url)
        .header("content-type", XLSX)
        .body(Full::new(Bytes::from(clean.clone())))
        .unwrap();
    assert_eq!(send(sima.info.proxy, req).await.0, StatusCode::OK);
    assert_eq!(us.requests()[0].body, clean);
    let body = form(&clean, XLSX);
    let req = post(
        url.clone(),
        "multipart/form-data; boundary=XyZ",
        body.clone(),
    );
    assert_eq!(send(sima.info.proxy, req).await.0, StatusCode::OK);
    assert_eq!(us.requests()[1].body, body);
    // A zip cut short, inside an entry's data, cannot be inspected: refused.
    let last = clean.windows(4).rposition(|w| w == b"PK\x03\x04").unwrap();
    let req = Request::put(&url)
        .header("content-type", XLSX)
        .body(Full::new(Bytes::from(clean[..last + 60].to_vec())))
        .unwrap();
    let (status, headers, _) = send(sima.info.proxy, req).await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(headers["sima-reason"], "uninspectable");
    assert_eq!(us.requests().len(), 2);
    sima.shutdown().await;
}

#[tokio::test]
async fn a_large_zip_file_streams_and_stops_before_the_identifier_leaves() {
    let (addr, seen) = raw_recorder("127.0.0.3").await;
    let sima = start(config(GEO_OVERRIDES)).await;
    let a = aadhaar();
    // About 330 KiB compressed, past the 64 KiB read whole; the row late in the file.
    let name = "exports/users.csv";
    let z = zipped(&[(name, &export_csv(20_000, Some((&a, 17_000))))], true);
    assert!(z.len() > 256 << 10, "{}", z.len());
    let req = Request::put(format!("http://{addr}/bucket/users.zip"))
        .header("content-type", "application/zip")
        .body(chunked_body(&z, 4096))
        .unwrap();
    let resp = send_streaming(sima.info.proxy, req).await;
    assert_eq!(resp.status(), StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    let got = recorded(&seen, 1).await;
    assert_eq!(
        got.len(),
        1,
        "the upload began before the identifier was read"
    );
    let body = dechunk(&got[0]);
    // The entry's data starts past its local header, file name and extra field.
    let data = 30
        + usize::from(u16::from_le_bytes([z[26], z[27]]))
        + usize::from(u16::from_le_bytes([z[28], z[29]]));
    assert!(
        body.len() > data && body.len() < z.len(),
        "{} of {}",
        body.len(),
        z.len()
    );
    assert_eq!(body[..data], z[..data]);
    // Inflate as much of the entry as arrived: the identifier is not in it.
    let mut text = Vec::new();
    let mut dec = flate2::read::DeflateDecoder::new(&body[data..]);
    let _ = std::io::Read::read_to_end(&mut dec, &mut text);
    assert!(text.len() > 100_000, "{}", text.len());
    assert!(
        !String::from_utf8_lossy(&text).contains(&a),
        "the identifier reached the upstream"
    );
    sima.shutdown().await;
}

/// Opens a CONNECT tunnel to `to` through `proxy`; the stream is at the tunnel's first byte.
async fn open_tunnel(proxy: std::net::SocketAddr, to: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_to(&mut s, b"\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "CONNECT answer: {head}");
    s
}

#[tokio::test]
async fn plain_http_inside_a_connect_tunnel_is_inspected_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let us = upstream("127.0.0.3", "usa").await;
    let sima = start(config(&format!(
        "audit:\n  dir: {}\n{GEO_OVERRIDES}",
        audit.display()
    )))
    .await;
    let id = aadhaar();
    let leaky = format!(r#"{{"name":"A. Kumar","aadhaar":"{id}"}}"#);
    let clean = r#"{"order":18273,"qty":2}"#;

    // One tunnel, three requests: each is judged on its own, and the tunnel stays usable
    // after a block.
    let (mut tunnel, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(
        open_tunnel(sima.info.proxy, us.addr).await,
    ))
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut ask = async |req: Request<Full<Bytes>>| {
        let resp = tokio::time::timeout(TEST_DEADLINE, tunnel.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    };
    let (status, body) = ask(post("/orders".into(), "application/json", clean)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello from usa");
    let (status, body) = ask(post("/kyc".into(), "application/json", leaky.clone())).await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(json(&body)["data_classes"], serde_json::json!(["AADHAAR"]));
    let (status, _) = ask(Request::get(format!("/users?aadhaar={id}"))
        .header("host", us.addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap())
    .await;
    assert_eq!(status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    let seen = us.requests();
    assert_eq!(seen.len(), 1, "only the clean request may arrive: {seen:?}");
    assert_eq!(
        (seen[0].uri.as_str(), &seen[0].body[..]),
        ("/orders", clean.as_bytes())
    );
    // The connection dialled for the tunnel carried its request: no second one.
    assert_eq!(us.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);

    // HTTP/2 with prior knowledge, as a plaintext gRPC channel through a proxy opens its
    // tunnel: read the same way.
    let to = us.addr;
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(open_tunnel(sima.info.proxy, to).await),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (body, want) in [
        (leaky.clone(), StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS),
        (clean.to_owned(), StatusCode::OK),
    ] {
        let req = Request::post(format!("http://{to}/h2"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = tokio::time::timeout(TEST_DEADLINE, h2.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), want);
    }
    let seen = us.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[1].uri.as_str(), &seen[1].body[..]),
        ("/h2", clean.as_bytes())
    );

    // curl's own tunnelling (`-p`), as a client configured to tunnel everything does it.
    let (ok, out, err) = curl(vec![
        "-p".into(),
        "-x".into(),
        format!("http://{}", sima.info.proxy),
        "-H".into(),
        "content-type: application/json".into(),
        "--data-binary".into(),
        leaky.clone(),
        "-w".into(),
        "\n%{http_code}".into(),
        format!("http://{}/kyc", us.addr),
    ])
    .await;
    assert!(ok, "curl failed: {err}");
    assert!(out.ends_with("\n451"), "{out}");
    assert!(!out.contains(&id), "the 451 must not echo the value");
    assert_eq!(us.requests().len(), 2, "the US upstream received a leak");

    // Counted and audited as requests read inside a tunnel; the value is in neither.
    let metrics = String::from_utf8(sima.shared.metrics.render()).unwrap();
    assert!(
        metrics.contains(
            r#"sima_requests_total{decision="deny",mode="tunnel_http",reason="personal_data"} 4"#
        ),
        "{metrics}"
    );
    sima.shutdown().await;
    let blocks = audit_records_without(&audit, &id);
    assert_eq!(blocks.len(), 4, "{blocks:?}");
    for b in &blocks {
        assert_eq!(b["transport"], "intercepted", "{b}");
        assert_eq!(b["action"], "block", "{b}");
    }
}

#[tokio::test]
async fn trailer_fields_are_read_like_headers() {
    // An HTTP/2 upstream behind a route, and an HTTP/1.1 one reached as a forward proxy:
    // both receive the trailer fields the request declares.
    let dir = tempfile::tempdir().unwrap();
    let us = upstream("127.0.0.3", "usa").await;
    let pki = test_pki(dir.path(), &["partner.test"]);
    let partner = upstream_with_tls("127.0.0.3", "partner", Some(pki.server.clone())).await;
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}resolver:\n  static_hosts:\n    partner.test: [127.0.0.3]\nroutes:\n  - name: partner\n    prefix: /partner/\n    upstream: https://partner.test:{port}/v2\n    ca_bundle: {ca}\n",
        port = partner.addr.port(),
        ca = pki.ca_pem_path.display(),
    )))
    .await;
    let id = aadhaar();
    // A body read whole, and one streamed (past the 64 KiB read whole) whose trailer comes
    // after most of it has gone on.
    let small = b"{\"order\":1}".to_vec();
    let large = format!("{{\"notes\":\"{}\"}}", "lorem ipsum ".repeat(20_000)).into_bytes();
    // POSTs `body` to `uri` in 16 KiB frames, then `x-customer-id: value` as a trailer.
    let post_with_trailer = async |uri: String, body: &[u8], value: &str| {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-customer-id", value.parse().unwrap());
        let mut frames: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = body
            .chunks(16 * 1024)
            .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        frames.push(Ok(hyper::body::Frame::trailers(trailers)));
        let req = Request::post(uri)
            .header("host", "sima.internal")
            .header("content-type", "application/json")
            .header("trailer", "x-customer-id")
            .body(http_body_util::StreamBody::new(futures_util::stream::iter(
                frames,
            )))
            .unwrap();
        send_streaming(sima.info.proxy, req).await.status()
    };
    let blocked = StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS;
    for (value, body, want) in [
        ("A-1827", &small, StatusCode::OK),
        (id.as_str(), &small, blocked),
        (id.as_str(), &large, blocked),
    ] {
        let got = post_with_trailer("/partner/orders".into(), body, value).await;
        assert_eq!(got, want, "trailer {value}");
    }
    // Forward to HTTP/1.1: a clean trailer goes on (declared by `Trailer`, which is end to
    // end), one with an identifier stops the request.
    for (value, want) in [("A-1827", StatusCode::OK), (id.as_str(), blocked)] {
        let got = post_with_trailer(format!("http://{}/orders", us.addr), &small, value).await;
        assert_eq!(got, want, "forward trailer {value}");
    }
    let trailer = |r: &Recorded| r.trailers.as_ref().map(|t| t["x-customer-id"].clone());
    let clean = Some(http::HeaderValue::from_static("A-1827"));
    let seen = us.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(trailer(&seen[0]), clean, "HTTP/1.1 upstream");

    let seen = partner.requests();
    assert_eq!(seen[0].body, small);
    // The streamed body was cut off before its end: the upstream saw it aborted, if at all.
    assert!(seen.len() <= 2, "{} requests", seen.len());
    assert!(seen[1..]
        .iter()
        .all(|r| r.body == b"<<body aborted>>" && r.trailers.is_none()));
    assert_eq!(trailer(&seen[0]), clean, "a clean trailer goes on");
    sima.shutdown().await;
}

/// A WebSocket server on `ip` (over TLS with `tls`): records each handshake head (over TLS,
/// after the protocol ALPN settled on), answers 101 (or 426 for `/refuse`), then echoes what
/// it is sent.
async fn websocket_server(
    ip: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let (addr, heads, _) = recording_websocket_server(ip, tls).await;
    (addr, heads)
}

/// [`websocket_server`], also recording every byte its sessions receive after the
/// handshake.
async fn recording_websocket_server(
    ip: &str,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (
    std::net::SocketAddr,
    Arc<Mutex<Vec<String>>>,
    Arc<Mutex<Vec<u8>>>,
) {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::new(Mutex::new(Vec::new()));
    let (seen, got) = (heads.clone(), received.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (seen, got, tls) = (seen.clone(), got.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => websocket_session(s, String::new(), seen, got).await,
                    Some(cfg) => {
                        let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(s).await else {
                            return;
                        };
                        let alpn = s.get_ref().1.alpn_protocol().unwrap_or_default();
                        let alpn = format!("alpn {}\n", String::from_utf8_lossy(alpn));
                        websocket_session(s, alpn, seen, got).await
                    }
                }
            });
        }
    });
    (addr, heads, received)
}

async fn websocket_session<S>(
    mut s: S,
    mut head: String,
    seen: Arc<Mutex<Vec<String>>>,
    received: Arc<Mutex<Vec<u8>>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut raw = Vec::new();
    while !raw.ends_with(b"\r\n\r\n") && raw.len() < 8192 {
        let mut b = [0u8; 1];
        if s.read_exact(&mut b).await.is_err() {
            return;
        }
        raw.push(b[0]);
    }
    head.push_str(&String::from_utf8_lossy(&raw));
    let refuse = head.contains("GET /refuse ");
    let deflate = head.to_ascii_lowercase().contains("permessage-deflate");
    seen.lock().unwrap().push(head);
    if refuse {
        let _ = s
            .write_all(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 4\r\n\r\nnope")
            .await;
        return;
    }
    // It takes compression when offered, as most servers do.
    let extension = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate\r\n"
    } else {
        ""
    };
    let _ = s
        .write_all(format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extension}\r\n").as_bytes())
        .await;
    let mut buf = [0u8; 4096];
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        received.lock().unwrap().extend_from_slice(&buf[..n]);
        if s.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The audit records in `dir`, oldest first, after checking that `value` is in none.
fn audit_records_without(dir: &std::path::Path, value: &str) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let text: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert!(
        !text.contains(value),
        "a detected value reached the audit log"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Sends a WebSocket handshake for `target` (an absolute URL or a path) on `s`, and returns
/// the response head.
async fn handshake(s: &mut TcpStream, target: &str, host: &str) -> String {
    s.write_all(
        format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame, permessage-deflate; client_max_window_bits\r\nProxy-Connection: keep-alive\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    read_to(s, b"\r\n\r\n").await
}

/// Opens a WebSocket through `proxy` with `target` as the request target (absolute URL or
/// route path) and returns the response head, and the stream when it switched.
async fn open_websocket(
    proxy: std::net::SocketAddr,
    target: &str,
    host: &str,
) -> (String, Option<TcpStream>) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let head = handshake(&mut s, target, host).await;
    let switched = head.starts_with("HTTP/1.1 101 ");
    (head, switched.then_some(s))
}

/// A WebSocket to `server`'s `/chat` through `proxy`, switched (it panics otherwise).
async fn switched(proxy: std::net::SocketAddr, server: std::net::SocketAddr) -> TcpStream {
    let (head, s) =
        open_websocket(proxy, &format!("http://{server}/chat"), &server.to_string()).await;
    s.unwrap_or_else(|| panic!("{head}"))
}

/// A masked text frame, sent and echoed back whole.
async fn frame_echoed(s: &mut TcpStream) {
    let frame = b"\x81\x84abcd\x11\x0b\x0d\x03";
    s.write_all(frame).await.unwrap();
    let mut back = [0u8; 10];
    tokio::time::timeout(TEST_DEADLINE, s.read_exact(&mut back))
        .await
        .expect("frame not echoed")
        .unwrap();
    assert_eq!(&back, frame);
}

/// A client's frame: `first` (FIN, opcode), `payload` masked with `mask`.
fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![first];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    f
}

/// Reads `s` to its end and returns the close frames in it: (code, reason). Other frames
/// (echoes) are skipped.
async fn closes_to_end(s: &mut TcpStream) -> Vec<(u16, String)> {
    let mut got = Vec::new();
    tokio::time::timeout(TEST_DEADLINE, s.read_to_end(&mut got))
        .await
        .expect("the WebSocket was not closed")
        .unwrap();
    let mut closes = Vec::new();
    let mut at = 0;
    while at + 2 <= got.len() {
        let (b0, b1) = (got[at], got[at + 1]);
        let mut len = usize::from(b1 & 0x7f);
        let mut head = 2;
        if len == 126 {
            len = usize::from(u16::from_be_bytes([got[at + 2], got[at + 3]]));
            head = 4;
        }
        assert!(len < 127, "unexpected long frame");
        let mask = (b1 & 0x80 != 0).then(|| {
            [
                got[at + head],
                got[at + head + 1],
                got[at + head + 2],
                got[at + head + 3],
            ]
        });
        if mask.is_some() {
            head += 4;
        }
        let payload: Vec<u8> = got[at + head..at + head + len]
            .iter()
            .enumerate()
            .map(|(i, b)| mask.map_or(*b, |m| b ^ m[i % 4]))
            .collect();
        if b0 & 0x0f == 0x8 {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            closes.push((code, String::from_utf8(payload[2..].to_vec()).unwrap()));
        }
        at += head + len;
    }
    assert_eq!(at, got.len(), "a frame was cut");
    closes
}

#[tokio::test]
async fn websockets_through_the_forward_proxy_and_routes_have_their_messages_judged() {
    let (india, india_heads) = websocket_server("127.0.0.2", None).await;
    let (usa, usa_heads, usa_received) = recording_websocket_server("127.0.0.3", None).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    // It offers h2 first, as a real server does.
    let pki = test_pki(dir.path(), &["chat.test"]);
    let (secure, secure_heads) = websocket_server("127.0.0.2", Some(pki.server.clone())).await;
    // `tunnels: block` is for content Sima cannot read: a WebSocket's messages it reads.
    let strict = start(config(&format!(
        "audit:\n  dir: {}\n{}{GEO_OVERRIDES}resolver:\n  static_hosts:\n    chat.test: [127.0.0.2]\nroutes:\n  - name: chat\n    prefix: /chat-in/\n    upstream: http://{india}/\n  - name: chat-tls\n    prefix: /chat-tls/\n    upstream: https://chat.test:{}/v1\n    ca_bundle: {}\n",
        audit.display(),
        policy_file(
            dir.path(),
            "version: 1\nname: ws\nhome: [IN]\ntunnels: block\nrules:\n  - id: stays-home\n    when: { countries: [foreign, unknown], data: any }\n    action: block\ndefault: allow\n"
        ),
        secure.port(),
        pki.ca_pem_path.display(),
    )))
    .await;
    let proxy = strict.info.proxy;

    // Forward, to India: switched, the handshake forwarded with its upgrade, frames both
    // ways. No rule about data applies at home: the frames pass unread, compressed or not.
    let (head, s) = open_websocket(
        proxy,
        &format!("http://{india}/chat?room=1"),
        &india.to_string(),
    )
    .await;
    let mut first = s.unwrap_or_else(|| panic!("{head}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nupgrade: websocket\r\n"),
        "{head}"
    );
    assert!(
        head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    frame_echoed(&mut first).await;
    let sent = india_heads.lock().unwrap()[0].clone();
    let lower = sent.to_ascii_lowercase();
    assert!(sent.starts_with("GET /chat?room=1 HTTP/1.1\r\n"), "{sent}");
    assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{sent}");
    assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{sent}");
    assert!(
        lower.contains("\r\nsec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n"),
        "{sent}"
    );
    assert!(
        lower.contains("\r\nsec-websocket-extensions: x-webkit-deflate-frame, permessage-deflate"),
        "{sent}"
    );
    assert!(lower.contains("\r\nvia: 1.1 sima\r\n"), "{sent}");
    assert!(!lower.contains("proxy-connection"), "{sent}");

    // A route: the path is rewritten as for any request.
    let (head, s) = open_websocket(proxy, "/chat-in/lobby", "sima.test").await;
    frame_echoed(&mut s.unwrap_or_else(|| panic!("{head}"))).await;
    assert!(india_heads.lock().unwrap()[1].starts_with("GET /lobby HTTP/1.1\r\n"));

    // A route to a TLS upstream: the handshake goes over HTTP/1.1 although the upstream
    // prefers h2 (an h2 connection cannot be upgraded this way).
    let (head, s) = open_websocket(proxy, "/chat-tls/lobby", "sima.test").await;
    frame_echoed(&mut s.unwrap_or_else(|| panic!("{head}"))).await;
    let sent = secure_heads.lock().unwrap()[0].clone();
    assert!(
        sent.starts_with("alpn http/1.1\nGET /v1/lobby HTTP/1.1\r\n"),
        "{sent}"
    );

    // An upstream that refuses the upgrade: its answer, as a response.
    let (head, s) =
        open_websocket(proxy, &format!("http://{india}/refuse"), &india.to_string()).await;
    assert!(s.is_none() && head.starts_with("HTTP/1.1 426 "), "{head}");

    // Inside a CONNECT tunnel read as HTTP, a handshake after a first request is proxied
    // the same way.
    let mut t = TcpStream::connect(proxy).await.unwrap();
    t.write_all(
        format!(
            "CONNECT {india} HTTP/1.1\r\nHost: {india}\r\n\r\nGET /refuse HTTP/1.1\r\nHost: {india}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let got = read_to(&mut t, b"nope").await;
    assert!(
        got.starts_with("HTTP/1.1 200") && got.contains("\r\n\r\nHTTP/1.1 426 "),
        "{got}"
    );
    let head = handshake(&mut t, "/inner", &india.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    frame_echoed(&mut t).await;
    drop(t);

    // Abroad, where the rule about personal data applies: switched, with only the
    // extension Sima can read offered, and each message is judged before it goes on.
    let (head, s) = open_websocket(proxy, &format!("http://{usa}/chat"), &usa.to_string()).await;
    let mut abroad = s.unwrap_or_else(|| panic!("{head}"));
    assert!(
        head.contains("sec-websocket-extensions: permessage-deflate\r\n"),
        "{head}"
    );
    let sent = usa_heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(
        sent.contains(
            "\r\nsec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n"
        ),
        "{sent}"
    );
    frame_echoed(&mut abroad).await;
    // An Aadhaar number cut across two fragments, with a ping between them, each frame
    // masked with its own key.
    let id = aadhaar();
    let text = format!("{{\"customer\":{{\"aadhaar\":\"{id}\"}}}}");
    let (a, b) = text.split_at(text.len() - 7);
    let fragment_a = client_frame(0x01, a.as_bytes(), [0x13, 0x57, 0x9b, 0xdf]);
    let ping = client_frame(0x89, b"still there?", [1, 2, 3, 4]);
    let fragment_b = client_frame(0x80, b.as_bytes(), [0xa5, 0x5a, 0xc3, 0x3c]);
    abroad.write_all(&fragment_a).await.unwrap();
    abroad.write_all(&ping).await.unwrap();
    abroad.write_all(&fragment_b).await.unwrap();
    let closes = closes_to_end(&mut abroad).await;
    let refused = closes
        .iter()
        .find(|(code, _)| *code == 1008)
        .unwrap_or_else(|| panic!("no policy close: {closes:?}"));
    assert!(refused.1.contains("rule stays-home"), "{refused:?}");
    assert!(!refused.1.contains(&id));
    let received = usa_received.lock().unwrap().clone();
    let has = |part: &[u8]| received.windows(part.len()).any(|w| w == part);
    assert!(
        has(b"\x81\x84abcd\x11\x0b\x0d\x03") && has(&ping),
        "the clean frames go on"
    );
    assert!(
        !has(&fragment_a) && !has(&fragment_b),
        "a fragment of the message went abroad"
    );
    assert!(!has(id.as_bytes()));

    // Compressed messages (permessage-deflate, as the server accepted) are inflated to be
    // judged, and sent on as they came.
    let mut packed = switched(proxy, usa).await;
    let mut z = flate2::Compress::new(flate2::Compression::default(), false);
    let mut deflate = |text: &[u8]| {
        let mut out = Vec::with_capacity(text.len() + 64);
        z.compress_vec(text, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - 4);
        out
    };
    let clean = client_frame(0xc1, &deflate(br#"{"order":18273,"qty":2}"#), [3, 1, 4, 1]);
    packed.write_all(&clean).await.unwrap();
    let mut back = vec![0u8; clean.len()];
    tokio::time::timeout(TEST_DEADLINE, packed.read_exact(&mut back))
        .await
        .expect("compressed frame not echoed")
        .unwrap();
    assert_eq!(back, clean);
    let packed_leak = client_frame(0xc1, &deflate(text.as_bytes()), [2, 7, 1, 8]);
    packed.write_all(&packed_leak).await.unwrap();
    let closes = closes_to_end(&mut packed).await;
    assert!(closes.iter().any(|(code, _)| *code == 1008), "{closes:?}");
    let received = usa_received.lock().unwrap().clone();
    assert!(!received
        .windows(packed_leak.len())
        .any(|w| w == packed_leak));

    // A message too large to hold for inspection is refused on its head: 1009, and the
    // policy's `uninspectable` action (block) makes it a recorded block.
    let mut big = switched(proxy, usa).await;
    let before = usa_received.lock().unwrap().len();
    let mut head_only = vec![0x82, 0x80 | 127];
    head_only.extend_from_slice(&(9u64 << 20).to_be_bytes());
    head_only.extend_from_slice(&[7, 7, 7, 7]);
    head_only.extend_from_slice(&[0u8; 1000]);
    big.write_all(&head_only).await.unwrap();
    let closes = closes_to_end(&mut big).await;
    assert!(closes.iter().any(|(code, _)| *code == 1009), "{closes:?}");
    let after = usa_received.lock().unwrap()[before..].to_vec();
    assert!(
        after.is_empty() || after.starts_with(b"\x88"),
        "only a close frame may follow: {after:?}"
    );

    // Blocks are counted as requests (the handshake as allowed, before).
    let metrics = String::from_utf8(strict.shared.metrics.render()).unwrap();
    for m in [
        r#"sima_requests_total{decision="deny",mode="forward",reason="personal_data"} 2"#,
        r#"sima_requests_total{decision="deny",mode="forward",reason="uninspectable"} 1"#,
    ] {
        assert!(metrics.contains(m), "{m} in {metrics}");
    }

    // An open WebSocket counts as a tunnel (the others, closed, soon stop counting). When
    // the drain begins, even one whose frames are not read (at home) is closed with 1001
    // between two frames, and does not hold the drain.
    let mut m = String::new();
    for _ in 0..100 {
        m = String::from_utf8(strict.shared.metrics.render()).unwrap();
        if m.contains("sima_active_tunnels 1\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(m.contains("sima_active_tunnels 1\n"), "{m}");
    let shutdown = tokio::spawn(strict.shutdown());
    let closes = closes_to_end(&mut first).await;
    assert!(
        closes
            .iter()
            .any(|(code, reason)| *code == 1001 && reason.contains("shutting down")),
        "{closes:?}"
    );
    tokio::time::timeout(TEST_DEADLINE, shutdown)
        .await
        .expect("the WebSocket held the drain open")
        .unwrap();

    // Both blocks are audited, with the class but not the value.
    let records = audit_records_without(&audit, &id);
    let blocks: Vec<_> = records.iter().filter(|r| r["action"] == "block").collect();
    assert_eq!(blocks.len(), 3, "{records:?}");
    // Each names its message by number on its WebSocket: the fragmented one after a clean
    // message and the ping, the compressed one after a clean one, the oversized first.
    let numbers: Vec<_> = blocks
        .iter()
        .map(|r| r["websocket_message"].as_u64())
        .collect();
    assert_eq!(numbers, [Some(3), Some(2), Some(1)], "{blocks:?}");
    assert!(blocks.iter().all(|r| r["path"] == "/chat"), "{blocks:?}");
    assert!(
        blocks[0]["data"][0]["class"] == "AADHAAR"
            && blocks[0]["data"][0]["locations"][0] == "body",
        "{blocks:?}"
    );

    // Under the default policy, a WebSocket abroad is let through with its messages read;
    // its URL and headers are read first.
    let lax = start(config(GEO_OVERRIDES)).await;
    let mut s = switched(lax.info.proxy, usa).await;
    frame_echoed(&mut s).await;
    let leak = client_frame(0x81, text_with(&id).as_bytes(), [9, 8, 7, 6]);
    s.write_all(&leak).await.unwrap();
    let closes = closes_to_end(&mut s).await;
    assert!(closes.iter().any(|(code, _)| *code == 1008), "{closes:?}");
    assert!(!usa_received
        .lock()
        .unwrap()
        .windows(leak.len())
        .any(|w| w == leak));
    // A browser sends ws:// through a proxy inside a CONNECT tunnel: the handshake that
    // opens the tunnel is read as a request, and its messages are judged the same way.
    let mut t = TcpStream::connect(lax.info.proxy).await.unwrap();
    t.write_all(format!("CONNECT {usa} HTTP/1.1\r\nHost: {usa}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let got = read_to(&mut t, b"\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let head = handshake(&mut t, "/tunnelled", &usa.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    frame_echoed(&mut t).await;
    t.write_all(&leak).await.unwrap();
    let closes = closes_to_end(&mut t).await;
    assert!(closes.iter().any(|(code, _)| *code == 1008), "{closes:?}");
    let sent = usa_heads.lock().unwrap()[4].to_ascii_lowercase();
    assert!(sent.starts_with("get /tunnelled http/1.1\r\n"), "{sent}");
    assert!(!sent.contains("x-webkit"), "{sent}");
    let metrics = String::from_utf8(lax.shared.metrics.render()).unwrap();
    let m = r#"sima_requests_total{decision="deny",mode="tunnel_http",reason="personal_data"} 1"#;
    assert!(metrics.contains(m), "{m} in {metrics}");

    let (head, s) = open_websocket(
        lax.info.proxy,
        &format!("http://{usa}/chat?aadhaar={id}"),
        &usa.to_string(),
    )
    .await;
    assert!(s.is_none() && head.starts_with("HTTP/1.1 451 "), "{head}");
    assert!(!head.contains(&id), "{head}");
    assert_eq!(
        usa_heads.lock().unwrap().len(),
        5,
        "only the clean handshakes went abroad"
    );
    assert!(!usa_received
        .lock()
        .unwrap()
        .windows(leak.len())
        .any(|w| w == leak));
    lax.shutdown().await;
}

/// A chat message carrying `id` as base64 inside JSON, as an app might send it.
fn text_with(id: &str) -> String {
    format!(
        "{{\"type\":\"message\",\"attachment\":\"{}\"}}",
        base64::engine::general_purpose::STANDARD.encode(format!("Aadhaar: {id}"))
    )
}

#[tokio::test]
async fn report_mode_lets_a_websocket_message_through_and_records_it() {
    let (usa, _, usa_received) = recording_websocket_server("127.0.0.3", None).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit");
    let sima = start(config(&format!(
        "audit:\n  dir: {}\n{}{GEO_OVERRIDES}",
        audit.display(),
        policy_file(
            dir.path(),
            "version: 1\nname: ws-report\nhome: [IN]\nmode: report\nrules:\n  - id: stays-home\n    when: { countries: [foreign, unknown], data: any }\n    action: block\ndefault: allow\n"
        ),
    )))
    .await;
    let mut s = switched(sima.info.proxy, usa).await;
    frame_echoed(&mut s).await;
    // What enforcement would block goes on, recorded first.
    let id = aadhaar();
    let leak = client_frame(0x81, text_with(&id).as_bytes(), [9, 8, 7, 6]);
    s.write_all(&leak).await.unwrap();
    let mut back = vec![0u8; leak.len()];
    tokio::time::timeout(TEST_DEADLINE, s.read_exact(&mut back))
        .await
        .expect("the message did not pass")
        .unwrap();
    assert_eq!(back, leak);
    assert!(usa_received
        .lock()
        .unwrap()
        .windows(leak.len())
        .any(|w| w == leak));
    let m = String::from_utf8(sima.shared.metrics.render()).unwrap();
    let line = r#"sima_requests_total{decision="report",mode="forward",reason="personal_data"} 1"#;
    assert!(m.contains(line), "{m}");
    drop(s);
    sima.shutdown().await;
    let records = audit_records_without(&audit, &id);
    // The message's record names it: the second judged, after the clean frame.
    let message: Vec<_> = records
        .iter()
        .filter(|r| r["websocket_message"] == 2)
        .collect();
    assert_eq!(message.len(), 1, "{records:?}");
    assert_eq!(message[0]["action"], "report");
    assert_eq!(message[0]["reason"], "personal_data");
}

#[tokio::test]
async fn a_websocket_whose_messages_are_read_closes_when_idle() {
    let (usa, _, _) = recording_websocket_server("127.0.0.3", None).await;
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}timeouts:\n  tunnel_idle: 1s\n"
    )))
    .await;
    let mut s = switched(sima.info.proxy, usa).await;
    // Bytes either way keep it open past the idle time...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        frame_echoed(&mut s).await;
    }
    // ...and with none, Sima closes it.
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(TEST_DEADLINE, s.read_to_end(&mut rest))
        .await
        .expect("an idle WebSocket was not closed")
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(start.elapsed() >= Duration::from_millis(900));
    sima.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_a_websocket_whose_messages_are_read_with_1001() {
    let (usa, _, usa_received) = recording_websocket_server("127.0.0.3", None).await;
    // A drain long enough that only the close frame can end the shutdown in time.
    let sima = start(config(&format!(
        "{GEO_OVERRIDES}timeouts:\n  drain: 120s\n"
    )))
    .await;
    let mut s = switched(sima.info.proxy, usa).await;
    frame_echoed(&mut s).await;
    let shutdown = tokio::spawn(sima.shutdown());
    let closes = closes_to_end(&mut s).await;
    assert!(
        closes
            .iter()
            .any(|(code, reason)| *code == 1001 && reason.contains("shutting down")),
        "{closes:?}"
    );
    tokio::time::timeout(TEST_DEADLINE, shutdown)
        .await
        .expect("the WebSocket held the drain open")
        .unwrap();
    // The server was told too: a masked close frame, 1001, after the echoed frame.
    let received = usa_received.lock().unwrap().clone();
    let tail = &received[10..];
    assert_eq!(
        (tail[0], tail[1] & 0x80, tail[1] & 0x7f),
        (0x88, 0x80, 2),
        "{received:?}"
    );
    let code = [tail[2] ^ tail[6], tail[3] ^ tail[7]];
    assert_eq!(u16::from_be_bytes(code), 1001);
}
