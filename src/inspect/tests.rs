use super::*;
use proptest::prelude::*;
use std::io::Write;

fn inspector() -> Inspector {
    Inspector::new(Arc::new(Detector::builtin()))
}

/// A valid Aadhaar: the first Verhoeff-valid completion of a fixed prefix.
fn aadhaar() -> String {
    (0..10)
        .map(|d| format!("23456789012{d}"))
        .find(|s| detect::Validator::Verhoeff.check(s))
        .unwrap()
}

/// Quoted-printable encoding (RFC 2045 §6.7) with lines of at most 76 characters.
fn quoted_printable(data: &[u8]) -> String {
    let mut out = String::new();
    let mut col = 0;
    for &b in data {
        let piece = if (b' '..=b'~').contains(&b) && b != b'=' {
            (b as char).to_string()
        } else {
            format!("={b:02X}")
        };
        if col + piece.len() > 75 {
            out.push_str("=\r\n");
            col = 0;
        }
        col += piece.len();
        out.push_str(&piece);
    }
    out
}

fn hdrs(ct: &str, ce: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
    if let Some(ce) = ce {
        h.insert(http::header::CONTENT_ENCODING, ce.parse().unwrap());
    }
    h
}

fn scan_chunked(
    ins: &Inspector,
    headers: &HeaderMap,
    body: &[u8],
    cuts: &[usize],
) -> Result<Vec<Item>, DecodeError> {
    let mut scan = ins.body(headers)?;
    let mut report = Report::default();
    let mut start = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    for c in cuts {
        scan.feed(&body[start..c], &mut report)?;
        start = c;
    }
    scan.feed(&body[start..], &mut report)?;
    scan.finish(&mut report)?;
    let mut items = report.items().to_vec();
    items.sort_by_key(|i| (i.offset, i.class));
    Ok(items)
}

/// The class names of `items`, in order.
fn class_names<'a>(ins: &'a Inspector, items: &[Item]) -> Vec<&'a str> {
    items
        .iter()
        .map(|i| ins.detector().class_name(i.class))
        .collect()
}

/// The names of the classes found, each once, sorted.
fn distinct_classes<'a>(ins: &'a Inspector, items: &[Item]) -> Vec<&'a str> {
    let mut classes = class_names(ins, items);
    classes.sort_unstable();
    classes.dedup();
    classes
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `text` with every character spelled as a JSON `\uXXXX` escape.
fn json_escaped(text: &str) -> String {
    text.chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect()
}

/// Feeds `body` (of type `ct`) 1 KiB at a time until something is found; asserts that it
/// is an AADHAAR found while the raw bytes from `first_raw` on are still held back.
fn found_within_hold_back(ins: &Inspector, ct: &str, body: &str, first_raw: usize, what: &str) {
    let mut scan = ins.body(&hdrs(ct, None)).unwrap();
    let hold_back = scan.hold_back(DEFAULT_HOLD_BACK);
    let mut report = Report::default();
    let mut fed = 0;
    let mut found_at = None;
    for chunk in body.as_bytes().chunks(1024) {
        scan.feed(chunk, &mut report).unwrap();
        fed += chunk.len();
        if !report.items().is_empty() {
            found_at = Some(fed);
            break;
        }
    }
    let found_at = found_at.unwrap_or_else(|| panic!("{what}: not found before the end"));
    assert!(
        found_at <= first_raw + hold_back,
        "{what}: found after {found_at} bytes, identifier from byte {first_raw}, \
         {hold_back} held back"
    );
    assert_eq!(
        ins.detector().class_name(report.items()[0].class),
        "AADHAAR",
        "{what}"
    );
}

/// An identifier that Word split across two runs deep in a long document, or that sits in
/// the attributes of an inline tag (held until the next tag that breaks the text, its
/// characters spelled as references or not), is found while its raw bytes are still held
/// back; so is one in a tag too long to be read as one, and one in a held tag of HTML in
/// JSON spelled in escapes.
#[test]
fn identifier_in_markup_found_within_the_hold_back() {
    let ins = inspector();
    let a = aadhaar();
    let filler: String = (0..2_000)
        .map(|i| format!("<w:r w:rsidRPr=\"00{i:04X}\"><w:t>order {i} shipped </w:t></w:r>"))
        .collect();
    let refs: String = a.chars().map(|c| format!("&#{};", c as u32)).collect();
    let tag = |pad: usize| format!("<w:r w:x=\"{} {refs}\">", "y".repeat(pad));
    for (at, tail) in [
        (
            "<w:r><w:t>aadhaar ".len(),
            format!(
                "<w:r><w:t>aadhaar {}</w:t></w:r><w:r w:rsidR=\"0A\"><w:t>{} </w:t></w:r>",
                &a[..5],
                &a[5..]
            ),
        ),
        (
            "<w:r w:note=\"".len(),
            format!(
                "<w:r w:note=\"{a}\"><w:t>x</w:t></w:r>{}",
                "text ".repeat(10_000)
            ),
        ),
        // Held (shorter than MAX_TAG), and read as text (longer).
        ("<w:r w:x=\"".len() + 401, tag(400)),
        ("<w:r w:x=\"".len() + 601, tag(600)),
    ] {
        let body =
            format!("<w:document><w:body><w:p>{filler}{tail}{filler}</w:p></w:body></w:document>");
        let first_raw =
            body.len() - filler.len() - tail.len() - "</w:p></w:body></w:document>".len() + at;
        found_within_hold_back(&ins, "application/xml", &body, first_raw, &tail[..40]);
    }
    // HTML in an email API's JSON, every character spelled as a `\uXXXX` escape: an
    // identifier in a held tag's attribute, with 50 KB of text after it.
    let html = format!(
        "<p><span title=\"{a}\">x</span>{}</p>",
        "text ".repeat(10_000)
    );
    let prefix = r#"{"subject":"KYC","html":""#;
    let body = format!("{prefix}{}\"}}", json_escaped(&html));
    let first_raw = prefix.len() + "<p><span title=\"".len() * 6;
    found_within_hold_back(
        &ins,
        "application/json",
        &body,
        first_raw,
        "escaped HTML in JSON",
    );
}

/// An identifier deep inside a long base64 blob (a document sent as base64, 53 KiB of it)
/// is found while the characters that encode it are still within the hold-back window of a
/// streamed body: fed 1 KiB at a time, as raw text, as a JSON string, and as a JSON string
/// spelled in `\uXXXX` escapes, nothing of them would have gone upstream before the finding.
/// The same document hex-encoded (80 KB of digits), as text and in JSON.
#[test]
fn identifier_in_long_base64_found_within_the_hold_back() {
    use base64::Engine as _;
    let ins = inspector();
    let id = format!(" aadhaar {} ", aadhaar());
    let mut doc: Vec<u8> = (0..40_000).map(|i| b"lorem ipsum dolor "[i % 18]).collect();
    // Its digits straddle the end of a 57-byte line of wrapped base64 (below).
    let at = 25_008;
    doc[at..at + id.len()].copy_from_slice(id.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&doc);
    // The same characters each spelled as a JSON escape: six bytes a character.
    let spelled = json_escaped(&b64);
    for (ct, prefix, text, width, suffix) in [
        ("text/plain", "doc=", &b64, 1, ""),
        (
            "application/json",
            r#"{"name":"scan.txt","doc":""#,
            &b64,
            1,
            r#""}"#,
        ),
        ("application/json", r#"{"doc":""#, &spelled, 6, r#""}"#),
    ] {
        let body = format!("{prefix}{text}{suffix}");
        // The first raw byte that encodes a byte of the identifier.
        let first_raw = prefix.len() + at / 3 * 4 * width;
        let what = format!("{ct}, {width} bytes a character");
        found_within_hold_back(&ins, ct, &body, first_raw, &what);
    }
    // Wrapped at 76 characters a line, as MIME and Python's `base64.encodebytes` write it.
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    let body = format!("doc:\r\n{}\r\n", lines.join("\r\n"));
    let c = at / 3 * 4;
    found_within_hold_back(&ins, "text/plain", &body, 6 + c + c / 76 * 2, "wrapped");
    // In an HTML body, each character spelled as a reference (`&#x41;`): six bytes too.
    let refs: String = b64
        .chars()
        .map(|c| format!("&#x{:02x};", c as u32))
        .collect();
    let body = format!("<pre>{refs}</pre>");
    found_within_hold_back(
        &ins,
        "text/html",
        &body,
        5 + at / 3 * 4 * 6,
        "html, references",
    );
    let hex = hex::encode(&doc);
    for (ct, prefix, suffix) in [
        ("text/plain", "doc=", ""),
        ("application/json", r#"{"doc":""#, r#""}"#),
    ] {
        let body = format!("{prefix}{hex}{suffix}");
        let what = format!("{ct}, hex");
        found_within_hold_back(&ins, ct, &body, prefix.len() + at * 2, &what);
    }
}

/// Identifiers spelled with character references in HTML and XML bodies (an address
/// obfuscated as `&#64;`, a SOAP field), in JSON string values and in form values are
/// found as the receiver reads them.
#[test]
fn identifiers_spelled_with_character_references_are_found() {
    let ins = inspector();
    let a = aadhaar();
    let spaced = format!("{}&#32;{}&nbsp;{}", &a[..4], &a[4..8], &a[8..]);
    for (ct, body) in [
        (
            "text/html; charset=utf-8",
            format!("<p>Write to asha.verma&#64;example&period;in, UID {spaced}</p>"),
        ),
        (
            "application/soap+xml",
            format!(
                "<soap:Body><KycRequest><Email>asha.verma&#x40;example.in</Email>\
                 <Uid>{spaced}</Uid></KycRequest></soap:Body>"
            ),
        ),
        (
            "application/json",
            format!(
                r#"{{"template":"kyc","html":"<p>Customer asha.verma&#64;example.in, UID {spaced}</p>"}}"#
            ),
        ),
        (
            // A rich-text field posted by a browser: its HTML percent-encoded.
            "application/x-www-form-urlencoded",
            format!(
                "subject=KYC&note={}",
                format!("<p>Customer asha.verma&#64;example.in, UID {spaced}</p>")
                    .replace('&', "%26")
                    .replace('#', "%23")
                    .replace(';', "%3B")
                    .replace('<', "%3C")
                    .replace('>', "%3E")
                    .replace(' ', "+")
            ),
        ),
    ] {
        let items = scan_chunked(&ins, &hdrs(ct, None), body.as_bytes(), &[3, 17]).unwrap();
        let classes = distinct_classes(&ins, &items);
        assert_eq!(classes, ["AADHAAR", "EMAIL"], "{ct}");
    }
}

/// A payload an app hex-encodes (a JSON field, a text body, a form value, a header) is
/// read decoded: its identifiers are found, whichever case the digits are in.
#[test]
fn hex_encoded_identifiers_are_found() {
    let ins = inspector();
    let payload = format!(
        r#"{{"email":"asha.verma@example.in","aadhaar":"{}","vpa":"asha@okaxis"}}"#,
        aadhaar()
    );
    let lower = hex::encode(&payload);
    let upper = lower.to_ascii_uppercase();
    for h in [&lower, &upper] {
        for (ct, body) in [
            ("application/json", format!(r#"{{"payload":"{h}","v":2}}"#)),
            ("text/plain", format!("payload {h}\n")),
            (
                "application/x-www-form-urlencoded",
                format!("v=2&payload={h}"),
            ),
        ] {
            let items = scan_chunked(&ins, &hdrs(ct, None), body.as_bytes(), &[5, 33]).unwrap();
            let classes = distinct_classes(&ins, &items);
            assert_eq!(classes, ["AADHAAR", "EMAIL", "UPI_VPA"], "{ct}");
        }
    }
    let mut headers = http::HeaderMap::new();
    headers.insert("x-context", lower.parse().unwrap());
    let mut report = Report::default();
    ins.inspect_head(
        "/orders",
        Some(&format!("ctx={upper}")),
        &headers,
        &mut report,
    );
    let classes = distinct_classes(&ins, report.items());
    assert_eq!(classes, ["AADHAAR", "EMAIL", "UPI_VPA"]);
}

/// Identifiers percent-escaped inside a JSON field or a text body (a callback URL, a query
/// string logged as text) are found as the receiver would read them decoded.
#[test]
fn percent_escaped_identifiers_in_json_and_text_are_found() {
    let ins = inspector();
    let a = aadhaar();
    let url = format!(
        "https://partner.example/cb?email=asha.verma%40example.in&uid={}%20{}%20{}&vpa=asha%40okaxis",
        &a[..4],
        &a[4..8],
        &a[8..]
    );
    for (ct, body) in [
        ("application/json", format!(r#"{{"callback":"{url}"}}"#)),
        ("text/plain", format!("GET {url} 200")),
    ] {
        let items = scan_chunked(&ins, &hdrs(ct, None), body.as_bytes(), &[7, 60]).unwrap();
        let classes = distinct_classes(&ins, &items);
        assert_eq!(classes, ["AADHAAR", "EMAIL", "UPI_VPA"], "{ct}");
    }
}

#[test]
fn urls_encoded_twice_are_decoded_twice() {
    // `urlencode` of a return URL that carries an address and a phone number: the address's
    // `@` arrives as `%2540`. Read in the query, a header, a JSON field, a form and text.
    let ins = inspector();
    let ret = "https%3A%2F%2Fapp.example.in%2Fw%3Fphone%3D9876543210%26email%3Dasha%2540example.in";
    let count = |r: &Report, class: ClassId| -> u32 {
        r.counts()
            .iter()
            .filter(|(c, _, _)| *c == class)
            .map(|(_, _, n)| n)
            .sum()
    };
    let mut r = Report::default();
    ins.inspect_head(
        "/oauth",
        Some(&format!("redirect_uri={ret}")),
        &HeaderMap::new(),
        &mut r,
    );
    assert_eq!(r.class_names(ins.detector()), ["EMAIL", "IN_PHONE"]);
    assert_eq!(count(&r, ClassId::IN_PHONE), 1, "the phone is read once");
    let mut h = HeaderMap::new();
    h.insert("x-return-to", ret.parse().unwrap());
    let mut r = Report::default();
    ins.inspect_head("/", None, &h, &mut r);
    assert_eq!(r.class_names(ins.detector()), ["EMAIL", "IN_PHONE"]);
    // Three layers (`%252540`), the most read.
    let mut r = Report::default();
    ins.inspect_head(
        "/",
        Some("next=%252Fw%253Femail%253Dasha%252540example.in"),
        &HeaderMap::new(),
        &mut r,
    );
    assert_eq!(r.class_names(ins.detector()), ["EMAIL"]);
    let mut r = Report::default();
    ins.inspect_head("/cb/asha%2540example.in", None, &HeaderMap::new(), &mut r);
    assert_eq!(r.class_names(ins.detector()), ["EMAIL"], "a path");
    for (ct, body) in [
        ("application/json", format!(r#"{{"redirect_uri":"{ret}"}}"#)),
        (
            "application/x-www-form-urlencoded",
            format!("state=x&redirect_uri={}", ret.replace('%', "%25")),
        ),
        ("text/plain", format!("GET /oauth?redirect_uri={ret} 302")),
    ] {
        let items = scan_chunked(&ins, &hdrs(ct, None), body.as_bytes(), &[7, 60]).unwrap();
        assert_eq!(
            distinct_classes(&ins, &items),
            ["EMAIL", "IN_PHONE"],
            "{ct}"
        );
        assert_eq!(
            class_names(&ins, &items)
                .iter()
                .filter(|c| **c == "IN_PHONE")
                .count(),
            1,
            "{ct}: the phone is read once"
        );
    }
}

/// Raw base64 with its own `+` in a long percent run (a `%` before it in the same run of
/// URL text): past 4 KiB the run goes on decoded, and its base64 still decodes.
#[test]
fn base64_keeps_its_plus_in_a_long_percent_run() {
    use base64::Engine as _;
    let ins = inspector();
    let a = aadhaar();
    let doc = format!(
        "{} आधार {} {}",
        "नमस्ते दुनिया ".repeat(300),
        a,
        "धन्यवाद ".repeat(50)
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(&doc);
    assert!(b64.contains('+'), "the test needs a '+' in the base64");
    let body = format!("ratio=50%25&doc={b64} end");
    let items = scan_chunked(&ins, &hdrs("text/plain", None), body.as_bytes(), &[4000]).unwrap();
    let classes: Vec<&str> = class_names(&ins, &items);
    assert_eq!(classes, ["AADHAAR"]);
}

/// An identifier deep inside a long run of percent-escaped text (a form-encoded export
/// sent as text, 40 KiB with no white space) is found while its bytes are still within the
/// hold-back window, fed 1 KiB at a time, as a text body and as a JSON string (plain, and
/// spelled in `\uXXXX` escapes).
#[test]
fn identifier_in_a_long_percent_run_found_within_the_hold_back() {
    let ins = inspector();
    let a = aadhaar();
    let mut run = String::from("a=1");
    while run.len() < 25_000 {
        run.push_str("&name=Asha+Verma&city=New%20Delhi");
    }
    let first = run.len() + "&uid=".len();
    run.push_str(&format!("&uid={}%20{}%20{}", &a[..4], &a[4..8], &a[8..]));
    while run.len() < 40_000 {
        run.push_str("&name=Asha+Verma&city=New%20Delhi");
    }
    let spelled = json_escaped(&run);
    for (ct, prefix, text, width, suffix) in [
        ("text/plain", "", &run, 1, ""),
        ("application/json", r#"{"export":""#, &run, 1, r#""}"#),
        ("application/json", r#"{"export":""#, &spelled, 6, r#""}"#),
    ] {
        let body = format!("{prefix}{text}{suffix}");
        let first_raw = prefix.len() + first * width;
        let what = format!("{ct}, {width} bytes a character");
        found_within_hold_back(&ins, ct, &body, first_raw, &what);
    }
}

/// The classes found in a head, per location.
fn head_classes(
    ins: &Inspector,
    path: &str,
    query: Option<&str>,
    headers: &[(&str, String)],
) -> Vec<(Location, String)> {
    let mut h = HeaderMap::new();
    for (n, v) in headers {
        h.append(
            http::header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let mut r = Report::default();
    ins.inspect_head(path, query, &h, &mut r);
    let mut out: Vec<(Location, String)> = r
        .items()
        .iter()
        .map(|i| (i.location, ins.detector().class_name(i.class).to_string()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Base64 in the path, a query parameter, a header or a cookie is decoded as in a body: a
/// JWT's claims, a base64 `state`, a base64 path segment.
#[test]
fn base64_in_the_head_is_decoded() {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as URL};
    use base64::Engine as _;
    let ins = inspector();
    let claims = format!(
        r#"{{"sub":"u-123","email":"asha.verma@example.in","aadhaar":"{}"}}"#,
        aadhaar()
    );
    let jwt = format!(
        "{}.{}.{}",
        URL.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        URL.encode(&claims),
        URL.encode([7u8, 200, 13, 99, 1, 250, 31, 77, 180, 2, 66, 140, 5, 230, 17, 91])
    );
    let both = |loc| vec![(loc, "AADHAAR".to_string()), (loc, "EMAIL".to_string())];
    let hdr = head_classes(
        &ins,
        "/",
        None,
        &[("authorization", format!("Bearer {jwt}"))],
    );
    assert_eq!(hdr, both(Location::Header));
    let q = format!("state={}&x=1", URL.encode(&claims));
    assert_eq!(
        head_classes(&ins, "/cb", Some(&q), &[]),
        both(Location::Url)
    );
    let path = format!("/v1/profile/{}/view", URL.encode(&claims));
    assert_eq!(head_classes(&ins, &path, None, &[]), both(Location::Url));
    // Standard base64 in a path segment, its '+' as it is (in a path, no space): a '+'
    // read as a space would leave the rest of the run out of step, undecodable.
    let early = STANDARD.encode(format!("#आशा {claims}"));
    assert_eq!(early.as_bytes()[1], b'+', "{early}");
    let path = format!("/v1/ctx/{}/view", early.replace('/', "%2F"));
    assert_eq!(head_classes(&ins, &path, None, &[]), both(Location::Url));
    // Standard base64 in a cookie, its '+', '/' and '=' percent-encoded as they must be.
    let std = STANDARD
        .encode(format!("{claims}??>>"))
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let cookie = format!("theme=dark; ctx={std}");
    assert_eq!(
        head_classes(&ins, "/", None, &[("cookie", cookie)]),
        both(Location::Header)
    );
    // A percent-encoded header value is read decoded; a '+' in it stays (base64 keeps it).
    let plus = STANDARD.encode(format!("{claims}>>>"));
    assert!(plus.contains('+'), "{plus}");
    assert_eq!(
        head_classes(
            &ins,
            "/",
            None,
            &[
                ("x-user", "asha.verma%40example.in".to_owned()),
                ("x-ctx", format!("v1%3A{plus}")),
            ]
        ),
        both(Location::Header)
    );
    // Base64 that is not text (a signature, a hash) and a JWT with no personal data in it
    // find nothing; neither do ordinary header values.
    let clean_jwt = format!(
        "{}.{}.sig",
        URL.encode(r#"{"alg":"none"}"#),
        URL.encode(r#"{"sub":"u-123","scope":"read write"}"#)
    );
    assert_eq!(
        head_classes(
            &ins,
            "/",
            None,
            &[
                ("authorization", format!("Bearer {clean_jwt}")),
                ("x-signature", STANDARD.encode([9u8; 48])),
                ("accept", "application/xhtml+xml,text/html;q=0.9".to_owned()),
            ]
        ),
        vec![]
    );
}

#[test]
fn finds_identifiers_in_json_form_and_text() {
    let ins = inspector();
    let a = aadhaar();
    let json =
        format!(r#"{{"user":{{"aadhaar":"{a}","pan":"ABCPE1234F","note":"\u0032\u0033"}}}}"#);
    let items = scan_chunked(&ins, &hdrs("application/json", None), json.as_bytes(), &[]).unwrap();
    let classes: Vec<&str> = class_names(&ins, &items);
    assert!(
        classes.contains(&"AADHAAR") && classes.contains(&"PAN"),
        "{classes:?}"
    );

    let form = format!("name=x&aadhaar={}&gst=27AAPFU0939F1ZV", a.as_str());
    let items = scan_chunked(
        &ins,
        &hdrs("application/x-www-form-urlencoded", None),
        form.as_bytes(),
        &[],
    )
    .unwrap();
    let classes: Vec<&str> = class_names(&ins, &items);
    assert!(
        classes.contains(&"AADHAAR") && classes.contains(&"GSTIN"),
        "{classes:?}"
    );

    // JSON escapes spelling the digits one by one are decoded before detection.
    let escaped: String = a.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
    let json = format!(r#"{{"id":"{escaped}"}}"#);
    let items = scan_chunked(&ins, &hdrs("application/json", None), json.as_bytes(), &[]).unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(ins.detector().class_name(items[0].class), "AADHAAR");
}

/// `a` written in Devanagari digits.
fn devanagari(a: &str) -> String {
    a.chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from_u32(0x966 + d).unwrap_or(c),
            None => c,
        })
        .collect()
}

/// Identifiers written with the spaces, dashes and digits documents and Indian keyboards
/// produce (a no-break space between an Aadhaar's groups, an en dash in a phone number, a
/// zero-width space inside an address, Devanagari digits) are found, in a body of each
/// kind and in the head.
#[test]
fn identifiers_written_with_other_spaces_dashes_and_digits_are_found() {
    let ins = inspector();
    let a = aadhaar();
    let nbsp = format!("{}\u{a0}{}\u{a0}{}", &a[..4], &a[4..8], &a[8..]);
    let thin = format!("{}\u{2009}{}\u{202f}{}", &a[..4], &a[4..8], &a[8..]);
    let hindi = devanagari(&a);
    let phone = "+91 98765\u{2013}43210";
    let email = "asha.verma@exa\u{200b}mple.in";
    for (what, id, class) in [
        ("no-break spaces", nbsp.as_str(), "AADHAAR"),
        ("thin spaces", thin.as_str(), "AADHAAR"),
        ("Devanagari digits", hindi.as_str(), "AADHAAR"),
        ("en dash", phone, "IN_PHONE"),
        ("zero-width space", email, "EMAIL"),
        ("fullwidth forms", "ＡＢＣＰＥ１２３４Ｆ", "PAN"),
    ] {
        let escaped: String = id
            .chars()
            .map(|c| {
                if c.is_ascii() {
                    c.to_string()
                } else {
                    format!("\\u{:04x}", c as u32)
                }
            })
            .collect();
        let pct: String = id
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        for (ct, body) in [
            ("text/plain", format!("customer {id} today")),
            ("application/json", format!(r#"{{"note":"customer {id}"}}"#)),
            (
                "application/json",
                format!(r#"{{"note":"customer {escaped}"}}"#),
            ),
            (
                "application/x-www-form-urlencoded",
                format!("note=customer+{pct}&x=1"),
            ),
        ] {
            let items = scan_chunked(&ins, &hdrs(ct, None), body.as_bytes(), &[1, 9, 23]).unwrap();
            assert_eq!(
                distinct_classes(&ins, &items),
                [class],
                "{what} in {ct}: {body}"
            );
        }
        let q = format!("note={pct}");
        assert_eq!(
            head_classes(&ins, "/v1/kyc", Some(&q), &[]),
            [(Location::Url, class.to_string())],
            "{what} in a query"
        );
    }
}

#[test]
fn url_query_and_headers_are_inspected() {
    let ins = inspector();
    let mut h = HeaderMap::new();
    h.insert("x-customer-pan", "ABCPE1234F".parse().unwrap());
    h.insert(
        "cookie",
        "session=abc; mobile=%2B91%2098765%2043210".parse().unwrap(),
    );
    h.insert("proxy-authorization", "Basic ABCPE1234F".parse().unwrap());
    let mut r = Report::default();
    ins.inspect_head(
        "/users/27AAPFU0939F1ZV",
        Some(&format!("aadhaar={}", aadhaar())),
        &h,
        &mut r,
    );
    let mut names = r.class_names(ins.detector());
    names.dedup();
    assert_eq!(names, ["AADHAAR", "GSTIN", "IN_PHONE", "PAN"]);
    let pan_count: u32 = r
        .counts()
        .iter()
        .filter(|(c, _, _)| *c == ClassId::PAN)
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(pan_count, 1, "proxy-authorization must not be scanned");

    // A host named by an identifier, in the `Host` header or (h2) outside the headers.
    let mut h = HeaderMap::new();
    h.insert("host", "9876543210.tenant.example:8443".parse().unwrap());
    let mut r = Report::default();
    ins.inspect_head("/", None, &h, &mut r);
    assert_eq!(r.class_names(ins.detector()), ["IN_PHONE"]);
    let mut r = Report::default();
    ins.inspect_host("abcpe1234f.kyc.example", &mut r);
    ins.inspect_host("api.partner.example", &mut r);
    assert_eq!(r.class_names(ins.detector()), ["PAN"]);

    // Any other `Proxy-*` header is forwarded like the rest, so it is read like the rest.
    let mut h = HeaderMap::new();
    h.insert("proxy-note", aadhaar().parse().unwrap());
    h.insert("proxy-connection", "keep-alive".parse().unwrap());
    let mut r = Report::default();
    ins.inspect_head("/", None, &h, &mut r);
    assert_eq!(r.class_names(ins.detector()), ["AADHAAR"]);
}

#[test]
fn identifiers_in_a_path_are_found_escaped_or_plain() {
    let ins = inspector();
    for path in [
        "/kyc/ABCPE1234F",
        "/kyc/ABCPE%31234F",
        "/kyc/%41BCPE1234F/x+y",
    ] {
        let mut r = Report::default();
        ins.inspect_head(path, None, &HeaderMap::new(), &mut r);
        assert_eq!(r.class_names(ins.detector()), ["PAN"], "{path}");
    }
    let mut r = Report::default();
    ins.inspect_head("/kyc/ABCPE%3", None, &HeaderMap::new(), &mut r);
    assert!(r.class_names(ins.detector()).is_empty());
}

#[test]
fn masked_aadhaar_and_clean_payloads_find_nothing() {
    let ins = inspector();
    let body = br#"{"aadhaar":"XXXX XXXX 1234","order":1234567,"amount":"12,34,567.00","ts":1732600000000}"#;
    let items = scan_chunked(&ins, &hdrs("application/json", None), body, &[]).unwrap();
    assert!(items.is_empty(), "{items:?}");
}

#[test]
fn gzip_bodies_are_decoded_and_bombs_are_uninspectable() {
    let ins = inspector();
    let body = format!(r#"{{"card":"4111 1111 1111 1111","a":"{}"}}"#, aadhaar());
    let items = scan_chunked(
        &ins,
        &hdrs("application/json", Some("gzip")),
        &gzip(body.as_bytes()),
        &[7, 20],
    )
    .unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    let bomb = gzip(&vec![b'0'; 64 * 1024 * 1024]);
    let err = scan_chunked(&ins, &hdrs("text/plain", Some("gzip")), &bomb, &[]).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::RatioExceeded { .. } | DecodeError::TooLarge { .. }
        ),
        "{err}"
    );
    let truncated = &gzip(body.as_bytes())[..20];
    assert!(scan_chunked(
        &ins,
        &hdrs("application/json", Some("gzip")),
        truncated,
        &[]
    )
    .is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    // Invariant I2: the findings are identical for every chunking and encoding.
    #[test]
    fn findings_do_not_depend_on_chunking_or_encoding(
        filler in proptest::collection::vec("[a-z ,.:]{0,40}", 1..6),
        cuts in proptest::collection::vec(0usize..4000, 0..12),
        kind in 0usize..4,
        gz in any::<bool>(),
    ) {
        let ins = inspector();
        let a = aadhaar();
        let ids = [
            a.clone(),
            "ABCPE1234F".to_owned(),
            "27AAPFU0939F1ZV".to_owned(),
            "4111111111111111".to_owned(),
            // Read folded: a no-break space between groups, Devanagari digits.
            format!("{}\u{a0}{}\u{a0}{}", &a[..4], &a[4..8], &a[8..]),
            devanagari(&a),
        ];
        let mut body = String::new();
        for (i, f) in filler.iter().enumerate() {
            let id = &ids[i % ids.len()];
            match kind {
                0 => body.push_str(&format!("{f} {id} ")),
                1 => body.push_str(&format!("k{i}={}&", id)),
                _ => body.push_str(&format!("{}\"k{i}\":\"{f} {id}\"", if i == 0 { "{" } else { "," })),
            }
        }
        if kind == 2 { body.push('}'); }
        if kind == 3 {
            // An email's quoted-printable part: lines wrapped at 76 with soft breaks,
            // UTF-8 escaped, so identifiers straddle breaks and arrive as `=E0=A5=A8`.
            body = format!(
                "--m\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n--m--\r\n",
                quoted_printable(body.as_bytes())
            );
        }
        let ct = [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json",
            "multipart/mixed; boundary=m",
        ][kind];
        let whole = scan_chunked(&ins, &hdrs(ct, None), body.as_bytes(), &[]).unwrap();
        prop_assert_eq!(whole.len(), filler.len(), "{:?} in {}", whole, body);
        let split = scan_chunked(&ins, &hdrs(ct, None), body.as_bytes(), &cuts).unwrap();
        prop_assert_eq!(&whole, &split);
        if gz {
            let zipped = gzip(body.as_bytes());
            let z = scan_chunked(&ins, &hdrs(ct, Some("gzip")), &zipped, &cuts).unwrap();
            prop_assert_eq!(&whole, &z);
        }
    }
}

/// An email sent through a mail API's JSON `raw` field (Gmail's API takes the whole
/// message base64url-encoded), its text part base64 (Python's `MIMEText(…, "utf-8")`,
/// wrapped at 76) or quoted-printable inside: the message is read by its own headers.
#[test]
fn emails_base64_encoded_in_json_are_read_by_their_own_headers() {
    use base64::Engine as _;
    let ins = inspector();
    let a = aadhaar();
    let grouped = format!("{} {} {}", &a[..4], &a[4..8], &a[8..]);
    let text = format!(
        "Dear Asha, your KYC is complete. Aadhaar {grouped} is verified. Regards, the bank team.\n"
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(&text);
    let wrapped: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    let long = "Statement follows. ".repeat(400);
    for (what, mime) in [
        (
            "base64 part",
            format!(
                "Content-Type: text/plain; charset=\"utf-8\"\r\nMIME-Version: 1.0\r\n\
                 Content-Transfer-Encoding: base64\r\nto: asha\r\nsubject: KYC\r\n\r\n{}\r\n",
                wrapped.join("\r\n")
            ),
        ),
        (
            "quoted-printable part",
            format!(
                "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\
                 Content-Transfer-Encoding: quoted-printable\r\n\r\nDear Asha, your KYC is complete: Aadhaar {}=\r\n{}\r\n",
                &grouped[..7],
                &grouped[7..]
            ),
        ),
        (
            // Past 4,096 base64 characters the run is decoded as it streams.
            "long multipart message",
            format!(
                "MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\"b\"\r\n\r\n\
                 --b\r\nContent-Type: text/plain\r\n\r\n{long}\r\n\
                 --b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                 {long}Aadhaar {}=\r\n{}\r\n--b--\r\n",
                &grouped[..7],
                &grouped[7..]
            ),
        ),
    ] {
        let raw = base64::engine::general_purpose::URL_SAFE.encode(&mime);
        let body = format!(r#"{{"raw":"{raw}"}}"#);
        let whole = scan_chunked(&ins, &hdrs("application/json", None), body.as_bytes(), &[]).unwrap();
        assert_eq!(distinct_classes(&ins, &whole), ["AADHAAR"], "{what}");
        for cuts in [&[5, 9, 4000][..], &[1000, 1001, 1002, 6000, 9000], &[77, 5555]] {
            let split = scan_chunked(&ins, &hdrs("application/json", None), body.as_bytes(), cuts).unwrap();
            assert_eq!(whole, split, "{what} {cuts:?}");
        }
    }
}

/// An identifier three times longer before folding than after (a 251-character address
/// in fullwidth forms, 753 bytes) is found once wherever the scanner's syncs fall in it:
/// the tail carried between scans holds it whole.
#[test]
fn a_long_folded_identifier_is_found_across_scanner_syncs() {
    let ins = inspector();
    let wide = |s: &str| -> String {
        s.chars()
            .map(|c| char::from_u32(c as u32 - 0x21 + 0xff01).unwrap_or(c))
            .collect()
    };
    // A short local part: the address is found only whole (a suffix of it is no address).
    let ascii = format!(
        "asha@{}.{}.{}.{}.in",
        "b".repeat(60),
        "c".repeat(60),
        "d".repeat(60),
        "e".repeat(60)
    );
    let email = wide(&ascii);
    assert_eq!(email.len(), ascii.len() * 3);
    // A text body reaches the scanner in 16 KiB pieces, and the scanner syncs once its
    // buffer passes about 18 KiB: at the second piece, so at 32 KiB, where it keeps a tail.
    for at in (31_300..32_800).step_by(11) {
        let body = format!(
            "{} {email} {}",
            "lorem ipsum ".repeat(at / 12),
            "dolor sit ".repeat(3000)
        );
        for cuts in [
            &[][..],
            &[4096, 8192, 12288, 16384, 20480],
            &[at + 700, at + 701],
        ] {
            let items =
                scan_chunked(&ins, &hdrs("text/plain", None), body.as_bytes(), cuts).unwrap();
            assert_eq!(
                class_names(&ins, &items),
                ["EMAIL"],
                "at {at}, cuts {cuts:?}"
            );
            assert_eq!(items[0].len as usize, email.len(), "at {at}, cuts {cuts:?}");
        }
    }
}

/// An untyped JSON body gets field-name context: a date under `dob` is a date of birth
/// there, and not in the same bytes declared as CSV.
#[test]
fn untyped_json_bodies_give_field_name_context() {
    let ins = inspector();
    let body = br#"{"name":"Asha","dob":"1990-01-31"}"#;
    let mut none = HeaderMap::new();
    none.insert("x-unrelated", "1".parse().unwrap());
    let items = scan_chunked(&ins, &none, body, &[5]).unwrap();
    assert_eq!(distinct_classes(&ins, &items), ["DOB"]);
    let items = scan_chunked(&ins, &hdrs("text/csv", None), body, &[5]).unwrap();
    assert!(items.is_empty(), "{items:?}");
}

/// A compressed log batch or an attachment as one long base64 string (CloudWatch Logs
/// through a delivery stream, a mail API's attachment): gzip of a 400 KiB CSV with the
/// identifier late in it, as raw text and in JSON. It is found before any base64 that
/// decodes to the identifier's first byte leaves the hold-back window.
#[test]
fn identifier_in_gzip_inside_long_base64_found_within_the_hold_back() {
    use base64::Engine as _;
    use flate2::{Decompress, FlushDecompress};
    let ins = inspector();
    let id = format!("aadhaar {}", aadhaar());
    let mut csv = String::from("id,ref\n");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..20_000 {
        if i == 17_000 {
            csv.push_str(&format!("asha,{id}\n"));
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        csv.push_str(&format!("user-{i},x{x:016x}\n"));
    }
    let at = csv.find(&id).unwrap();
    let gz = gzip(csv.as_bytes());
    // The shortest prefix of the gzip file that decodes past the identifier's first byte.
    let mut z = Decompress::new(false);
    let mut out = vec![0u8; 1 << 20];
    let mut prefix = 10;
    while (z.total_out() as usize) <= at {
        z.decompress(&gz[prefix..prefix + 1], &mut out, FlushDecompress::None)
            .unwrap();
        prefix += 1;
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(&gz);
    for (ct, before) in [
        ("text/plain", "batch: "),
        ("application/json", "{\"data\": \""),
    ] {
        let body = format!("{before}{b64}\" }}");
        let first_raw = before.len() + prefix * 4 / 3;
        found_within_hold_back(&ins, ct, &body, first_raw, ct);
    }
}
