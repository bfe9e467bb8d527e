//! Deterministic benchmark payloads for the scanner bench (`benches/scan.rs`).

/// Deterministic xorshift64* generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn hex(&mut self, n: usize, out: &mut String) {
        for _ in 0..n {
            out.push(char::from(b"0123456789abcdef"[self.below(16) as usize]));
        }
    }
}

pub const TARGET: usize = 1 << 20;

/// A JSON API response (orders with line items): ids, prices, timestamps,
/// epoch milliseconds, UUIDs, SKUs, coordinates; no personal identifiers.
pub fn clean_json() -> Vec<u8> {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let names = [
        "Stainless steel water bottle 1L",
        "Cotton kurta, indigo",
        "Wireless earbuds with charging case",
        "Basmati rice 5kg",
        "LED bulb 9W pack of 4",
        "Running shoes size 9",
    ];
    let statuses = [
        "created",
        "paid",
        "packed",
        "shipped",
        "delivered",
        "returned",
    ];
    let cities = [
        "Bengaluru",
        "Mumbai",
        "Pune",
        "Chennai",
        "Hyderabad",
        "Kolkata",
    ];
    let mut s = String::with_capacity(TARGET + 4096);
    s.push_str("{\"page\":1,\"per_page\":500,\"orders\":[");
    let mut first = true;
    while s.len() < TARGET - 2048 {
        if !first {
            s.push(',');
        }
        first = false;
        let id = 1_000 + r.below(90_000_000);
        s.push_str(&format!("{{\"id\":{id},\"uuid\":\""));
        r.hex(8, &mut s);
        s.push('-');
        r.hex(4, &mut s);
        s.push_str("-4");
        r.hex(3, &mut s);
        s.push('-');
        r.hex(4, &mut s);
        s.push('-');
        r.hex(12, &mut s);
        let ms = 1_700_000_000_000u64 + r.below(40_000_000_000);
        s.push_str(&format!(
            "\",\"status\":\"{}\",\"created_at\":\"2024-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\",\"updated_ms\":{ms},",
            r.pick(&statuses),
            1 + r.below(12),
            1 + r.below(28),
            r.below(24),
            r.below(60),
            r.below(60),
            r.below(1000)
        ));
        s.push_str(&format!(
            "\"currency\":\"INR\",\"total\":{}.{:02},\"tax\":{}.{:02},\"shipping\":{{\"city\":\"{}\",\"pincode\":\"{}\",\"lat\":{}.{:04},\"lon\":{}.{:04}}},\"items\":[",
            r.below(50_000),
            r.below(100),
            r.below(5_000),
            r.below(100),
            r.pick(&cities),
            110_000 + r.below(800_000),
            8 + r.below(25),
            r.below(10_000),
            68 + r.below(29),
            r.below(10_000)
        ));
        for k in 0..1 + r.below(3) {
            if k > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"sku\":\"SKU-{}\",\"name\":\"{}\",\"qty\":{},\"unit_price\":{}.{:02},\"weight_g\":{}}}",
                10_000 + r.below(90_000),
                r.pick(&names),
                1 + r.below(5),
                r.below(10_000),
                r.below(100),
                r.below(5_000)
            ));
        }
        s.push_str(&format!(
            "],\"version\":\"2.{}.{}\"}}",
            r.below(20),
            r.below(10)
        ));
    }
    s.push_str("]}");
    s.into_bytes()
}

/// A digit-dense CSV export: every field a number, many of them long
/// (account-like references, epoch milliseconds, 12-16 digit ids).
pub fn digit_csv() -> Vec<u8> {
    let mut r = Rng(0x1234_5678_9abc_def1);
    let mut s = String::with_capacity(TARGET + 256);
    s.push_str("txn,ref,amount,epoch_ms,qty,pincode,lat,lon,ledger,batch\n");
    while s.len() < TARGET - 256 {
        let len = 9 + r.below(10) as usize;
        let mut refno = String::new();
        refno.push(char::from(b'1' + r.below(9) as u8));
        for _ in 1..len {
            refno.push(char::from(b'0' + r.below(10) as u8));
        }
        s.push_str(&format!(
            "{},{},{}.{:02},{},{},{},{}.{:06},{}.{:06},{},{}\n",
            100_000 + r.below(900_000_000),
            refno,
            r.below(1_000_000),
            r.below(100),
            1_700_000_000_000u64 + r.below(40_000_000_000),
            r.below(100),
            110_000 + r.below(800_000),
            8 + r.below(25),
            r.below(1_000_000),
            68 + r.below(29),
            r.below(1_000_000),
            1_000_000_000_000u64 + r.below(8_999_999_999_999),
            r.below(10_000),
        ));
    }
    s.into_bytes()
}

/// Short JSON string values with their keys, as a proxy walking a JSON body
/// would pass them one by one (no identifiers).
pub fn small_values() -> Vec<(&'static str, String)> {
    let mut r = Rng(0x0bad_cafe_dead_beef);
    let mut v = Vec::new();
    for _ in 0..1_000 {
        v.push(("order_id", format!("ORD-2024-{:06}", r.below(1_000_000))));
        v.push(("status", "shipped".to_string()));
        v.push((
            "created_at",
            format!("2024-05-{:02}T10:{:02}:00Z", 1 + r.below(28), r.below(60)),
        ));
        v.push((
            "amount",
            format!("{}.{:02}", r.below(100_000), r.below(100)),
        ));
        v.push(("currency", "INR".to_string()));
        v.push(("customer_name", "Asha Verma".to_string()));
        v.push(("city", "Bengaluru".to_string()));
        v.push(("pincode", format!("{}", 110_000 + r.below(800_000))));
        v.push((
            "note",
            "Leave the parcel with the security guard at gate 2".to_string(),
        ));
        let mut u = String::new();
        r.hex(32, &mut u);
        v.push(("request_id", u));
    }
    v
}

/// The clean JSON with about 1% of its string values replaced by identifiers
/// (Aadhaar, PAN, GSTIN, card, mobile, e-mail), each at its usual field name.
pub fn json_one_percent() -> Vec<u8> {
    let clean = String::from_utf8(clean_json()).unwrap_or_default();
    let ids = [
        ("aadhaar", "234567890124"),
        ("pan", "ABCPE1234F"),
        ("gstin", "27AAPFU0939F1ZV"),
        ("card", "4111 1111 1111 1111"),
        ("mobile", "+91 98765 43210"),
        ("email", "asha.verma@example.in"),
    ];
    let mut out = String::with_capacity(clean.len() + 4096);
    let mut n = 0usize;
    for piece in clean.split_inclusive(",\"status\":") {
        out.push_str(piece);
        n += 1;
        if n.is_multiple_of(8) {
            let (k, v) = ids[(n / 8) % ids.len()];
            out.push_str(&format!("\"x\",\"{k}\":\"{v}\",\"was\":"));
        }
    }
    out.into_bytes()
}

/// A CSV export uploaded as base64 in a JSON document (`{"name":…,"content":"…"}`), about
/// [`TARGET`] bytes: one long base64 run, decoded by the pipeline as it goes.
pub fn base64_document() -> Vec<u8> {
    use base64::Engine as _;
    let csv = digit_csv();
    let raw = csv.get(..TARGET / 4 * 3 - 64).unwrap_or(&csv);
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
    format!(r#"{{"name":"export.csv","content":"{b64}"}}"#).into_bytes()
}

/// Payment webhooks as JSON, about [`TARGET`] bytes, each with a return URL whose query
/// string holds percent escapes (`msg=Payment%20received%2C%20thank%20you`), no personal
/// identifiers: what the percent layer costs where every value has an escape in it.
pub fn escaped_urls() -> Vec<u8> {
    let mut rng = Rng(0x5eed_2026_0f0f);
    let statuses = ["paid", "failed", "pending", "refunded"];
    let msgs = [
        "Payment%20received%2C%20thank%20you",
        "Card%20declined%20by%20issuer",
        "Awaiting%20bank%20confirmation",
        "Refund%20of%20%E2%82%B9499%20initiated",
    ];
    let mut out = String::from("[");
    let mut n = 0u64;
    while out.len() < TARGET - 512 {
        if n > 0 {
            out.push(',');
        }
        let mut sig = String::new();
        rng.hex(32, &mut sig);
        out.push_str(&format!(
            r#"{{"id":"evt_{n:08}","status":"{}","amount":{},"return_url":"https://shop.example/checkout/return?order=ORD{:07}&status={}&msg={}&sig={sig}"}}"#,
            rng.pick(&statuses),
            rng.below(100_000),
            rng.below(10_000_000),
            rng.pick(&statuses),
            rng.pick(&msgs),
        ));
        n += 1;
    }
    out.push(']');
    out.into_bytes()
}

/// A word-processing document's body as Word writes it (`word/document.xml`), about
/// [`TARGET`] bytes: paragraphs of runs with run properties and revision ids, split at
/// edits, with amounts, dates and order numbers in them; no personal identifiers. What
/// the markup reader costs on the document text of a `.docx`.
pub fn document_xml() -> Vec<u8> {
    let mut r = Rng(0x0d0c_2026_1127_0001);
    let words = [
        "invoice",
        "the",
        "order",
        "was",
        "shipped",
        "on",
        "amount",
        "due",
        "Rs.",
        "for",
        "delivery",
        "to",
        "warehouse",
        "and",
        "returned",
        "by",
        "partner",
        "quarter",
    ];
    let mut s = String::with_capacity(TARGET + 1024);
    s.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<w:document \
         xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"><w:body>",
    );
    while s.len() < TARGET - 2048 {
        let mut rsid = String::new();
        r.hex(8, &mut rsid);
        s.push_str(&format!(
            "<w:p w:rsidR=\"{rsid}\" w:rsidRDefault=\"{rsid}\"><w:pPr><w:pStyle w:val=\"Body\"/></w:pPr>"
        ));
        for _ in 0..1 + r.below(6) {
            let mut run_rsid = String::new();
            r.hex(8, &mut run_rsid);
            s.push_str(&format!("<w:r w:rsidRPr=\"{run_rsid}\">"));
            if r.below(3) == 0 {
                s.push_str("<w:rPr><w:b/><w:sz w:val=\"22\"/><w:lang w:val=\"en-IN\"/></w:rPr>");
            }
            s.push_str("<w:t xml:space=\"preserve\">");
            for _ in 0..3 + r.below(12) {
                s.push_str(r.pick(&words));
                s.push(' ');
            }
            match r.below(3) {
                0 => s.push_str(&format!("{}.{:02} ", r.below(100_000), r.below(100))),
                1 => s.push_str(&format!(
                    "2026-{:02}-{:02} ",
                    1 + r.below(12),
                    1 + r.below(28)
                )),
                _ => s.push_str(&format!("ORD{:07} ", r.below(10_000_000))),
            }
            s.push_str("</w:t></w:r>");
            if r.below(8) == 0 {
                s.push_str("<w:proofErr w:type=\"spellStart\"/>");
            }
        }
        s.push_str("</w:p>");
    }
    s.push_str("</w:body></w:document>");
    s.into_bytes()
}
