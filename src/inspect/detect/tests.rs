use super::*;
use proptest::prelude::*;
use std::sync::OnceLock;

fn det() -> &'static Detector {
    static D: OnceLock<Detector> = OnceLock::new();
    D.get_or_init(Detector::builtin)
}

type Got = Vec<(String, Confidence, u64, u32)>;

fn run_with(d: &Detector, text: &str, key: Option<&str>) -> Got {
    let mut out = Vec::new();
    d.scan(text.as_bytes(), 0, key.map(str::as_bytes), &mut out);
    out.iter()
        .map(|f| {
            (
                d.class_name(f.class).to_string(),
                f.confidence,
                f.offset,
                f.len,
            )
        })
        .collect()
}

fn run(text: &str, key: Option<&str>) -> Got {
    run_with(det(), text, key)
}

/// Exactly one finding: `class` covering `value` (first occurrence) in
/// `text`. Returns its confidence.
fn one(text: &str, value: &str, class: &str, key: Option<&str>) -> Confidence {
    let got = run(text, key);
    let off = text.find(value).expect("value occurs in text") as u64;
    assert_eq!(got.len(), 1, "{text:?} (key {key:?}) -> {got:?}");
    assert_eq!(
        (got[0].0.as_str(), got[0].2, got[0].3),
        (class, off, value.len() as u32),
        "{text:?} (key {key:?})"
    );
    got[0].1
}

fn none(text: &str, key: Option<&str>) {
    let got = run(text, key);
    assert!(got.is_empty(), "{text:?} (key {key:?}) -> {got:?}");
}

// -- check-digit helpers (independent of the validators under test) ---

fn verhoeff_append(body: &str) -> String {
    const INV: [u8; 10] = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9];
    let mut c = 0usize;
    for (i, b) in body.bytes().rev().enumerate() {
        let d = usize::from(b - b'0');
        c = usize::from(VERHOEFF_D[c][usize::from(VERHOEFF_P[(i + 1) % 8][d])]);
    }
    format!("{body}{}", INV[c])
}

fn luhn_append(body: &str) -> String {
    let mut sum = 0u32;
    for (i, b) in body.bytes().rev().enumerate() {
        let mut v = u32::from(b - b'0');
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    format!("{body}{}", (10 - sum % 10) % 10)
}

fn gstin_append(body: &str) -> String {
    let c = gstin_check_char(body.as_bytes()).expect("alphanumeric body");
    format!("{body}{}", char::from(c))
}

fn group(s: &str, sizes: &[usize], sep: char) -> String {
    let mut out = String::new();
    let mut i = 0;
    for (k, n) in sizes.iter().enumerate() {
        if k > 0 {
            out.push(sep);
        }
        out.push_str(&s[i..i + n]);
        i += n;
    }
    assert_eq!(i, s.len());
    out
}

// -- validators ----------------------------------------------------------

#[test]
fn verhoeff_reference_vectors() {
    for v in [
        "312345678909",
        "399876543211",
        "400123456787",
        "234123412346",
    ] {
        assert!(Validator::Verhoeff.check(v), "{v}");
        assert!(aadhaar_like_valid(v.as_bytes()), "{v}");
    }
    assert!(!Validator::Verhoeff.check("123456789012"));
    assert!(!Validator::Verhoeff.check("234123412345"));
    // The generator used below agrees with the reference vectors.
    assert_eq!(verhoeff_append("23412341234"), "234123412346");
    assert_eq!(verhoeff_append("31234567890"), "312345678909");
    assert_eq!(verhoeff_append("40012345678"), "400123456787");
}

#[test]
fn luhn_reference_vectors() {
    for v in [
        "4111111111111111",
        "4012888888881881",
        "378282246310005",
        "5555555555554444",
    ] {
        assert!(Validator::Luhn.check(v), "{v}");
    }
    assert!(!Validator::Luhn.check("4111111111111112"));
    assert_eq!(luhn_append("411111111111111"), "4111111111111111");
    assert_eq!(luhn_append("401288888888188"), "4012888888881881");
}

#[test]
fn gstin_reference_vector_and_presidio_check_chars() {
    assert!(Validator::GstinMod36.check("27AAPFU0939F1ZV"));
    assert!(Validator::GstinMod36.check("27aapfu0939f1zv"));
    assert!(Validator::GstinMod36.check("27AAPFU0939F1ZV".as_bytes()));
    assert!(!Validator::GstinMod36.check("27AAPFU0939F1ZW"));
    assert!(!Validator::GstinMod36.check("27AAPFU0939F1Z"));
    assert_eq!(gstin_append("27AAPFU0939F1Z"), "27AAPFU0939F1ZV");
    // The reference computed the characters Presidio's test GSTINs would need.
    for (body, want) in [
        ("27ABCDE1234F1Z", '0'),
        ("07PQRST6789K1Z", 'Y'),
        ("01ABCDE1234F1Z", 'E'),
        ("37ABCDE1234F1Z", 'Z'),
    ] {
        assert_eq!(
            gstin_check_char(body.as_bytes()),
            Some(want as u8),
            "{body}"
        );
    }
}

#[test]
fn validator_check_handles_separators_and_names() {
    assert!(Validator::Verhoeff.check("2341 2341 2346"));
    assert!(Validator::Luhn.check("4111-1111-1111-1111"));
    assert!(Validator::GstinMod36.check("27AAPFU0939F 1ZV"));
    assert!(
        !Validator::Luhn.check("0"),
        "one digit is not a number to check"
    );
    assert!(!Validator::Verhoeff.check("no digits"));
    assert!(Validator::None.check("anything"));
    for v in [
        Validator::Verhoeff,
        Validator::Luhn,
        Validator::GstinMod36,
        Validator::None,
    ] {
        assert_eq!(v.as_str().parse::<Validator>().ok(), Some(v));
    }
    assert_eq!("LUHN".parse::<Validator>().ok(), Some(Validator::Luhn));
    assert!("crc32".parse::<Validator>().is_err());
}

#[test]
fn confidence_order_and_names() {
    assert!(Confidence::Low < Confidence::Medium && Confidence::Medium < Confidence::High);
    assert_eq!(Confidence::Low.raised(), Confidence::Medium);
    assert_eq!(Confidence::High.raised(), Confidence::High);
    assert_eq!(Confidence::Medium.as_str(), "medium");
    assert_eq!(Confidence::High.to_string(), "high");
}

// -- AADHAAR ---------------------------------------------------------------

#[test]
fn aadhaar_positives() {
    for (text, value) in [
        ("234123412346", "234123412346"),
        ("Aadhaar: 2341 2341 2346.", "2341 2341 2346"),
        ("uid 2341-2341-2346", "2341-2341-2346"),
        ("{\"aadhaar\":\"399876543211\"}", "399876543211"),
        ("id=312345678909&x=1", "312345678909"),
        ("400123456787", "400123456787"),
        ("(9876 5432 1012)", "9876 5432 1012"),
        ("line\n567812345678\n", "567812345678"),
    ] {
        assert_eq!(
            one(text, value, "AADHAAR", None),
            Confidence::High,
            "{text}"
        );
    }
}

#[test]
fn aadhaar_near_misses() {
    for text in [
        "234123412345",                         // wrong check digit
        "123456789012",                         // starts with 1 (and fails Verhoeff)
        "XXXX XXXX 2346",                       // masked
        "xxxx-xxxx-2346",                       // masked
        "********2346",                         // masked
        "2341 2341-2346",                       // inconsistent separators
        "2341  2341 2346",                      // double space
        "1234123412346",                        // 12 valid digits inside a 13-digit run
        "2341234123461",                        // ditto, at the start
        "A234123412346",                        // inside a letter run
        "234123412346B",                        // ditto
        "id_234123412346",                      // word character before
        "234123412346.50",                      // decimal amount
        "0.234123412346",                       // decimal fraction
        "12 2341 2341 2346",                    // digit group with the same separator before
        "2341 2341 2346 12",                    // and after
        "550e8400-e29b-41d4-a716-234123412346", // UUID tail
        "Rs. 23,41,23,41,23,46",                // lakh grouping
        "234123412346-99",                      // hyphen-joined code
    ] {
        none(text, None);
    }
}

#[test]
fn identifiers_that_name_a_file_or_sit_in_a_float_are_found() {
    // Files named by the identifier (an S3 key, a multipart filename), a float column.
    let a = "234123412346";
    let card = "4111111111111111";
    for (text, value, class, key) in [
        ("kyc/ABCPE1234F.pdf", "ABCPE1234F", "PAN", None),
        ("234123412346.jpg", a, "AADHAAR", None),
        ("scan 2341 2341 2346.png", "2341 2341 2346", "AADHAAR", None),
        ("aadhaar_234123412346.jpg", a, "AADHAAR", None),
        ("uid-234123412346", a, "AADHAAR", None),
        ("pan_ABCPE1234F.pdf", "ABCPE1234F", "PAN", None),
        (
            "GSTIN-27AAPFU0939F1ZV.xml",
            "27AAPFU0939F1ZV",
            "GSTIN",
            None,
        ),
        ("stmt/4111111111111111.txt", card, "CARD", None),
        ("9876543210.pdf", "9876543210", "IN_PHONE", None),
        ("234123412346.0", a, "AADHAAR", None),
        ("9876543210.0", "9876543210", "IN_PHONE", Some("mobile")),
        ("file_234123412346", a, "AADHAAR", Some("aadhaar")),
    ] {
        one(text, value, class, key);
    }
    // The same shapes where they are ids, amounts or versions: not reported.
    for (text, key) in [
        ("txn_234123412346", None),
        ("txn_234123412346.pdf", None),
        ("invoice-ABCPE1234F", None),
        ("550e8400-e29b-41d4-abcd-234123412346", None),
        ("7500000000.0", None),
        ("ORD-9876543210", Some("mobile")),
        ("234123412346.5", None),
        ("234123412346.0.1", None),
        ("v234123412346.pdf", None),
    ] {
        none(text, key);
    }
    // The shortcut past `word-` agrees with the full scan.
    for text in [
        "aadhaar-2341 2341 2346",
        "vid-2341-2341-2341-2346",
        "ORD-2024-123456",
        "uid-234123412346",
        "GSTIN-27AAPFU0939F1ZV",
        "HR-0619850034761",
    ] {
        for key in [None, Some(&b"vid"[..]), Some(b"aadhaar")] {
            let (fast, slow) = scan_both(text.as_bytes(), key);
            assert_eq!(fast, slow, "{text:?} {key:?}");
        }
    }
}

#[test]
fn aadhaar_palindrome_is_rejected_even_when_verhoeff_valid() {
    let pal = (200_000u32..1_000_000)
        .map(|h| {
            let s = h.to_string();
            format!("{s}{}", s.chars().rev().collect::<String>())
        })
        .find(|p| Validator::Verhoeff.check(p))
        .expect("a Verhoeff-valid 12-digit palindrome exists");
    none(&pal, None);
    none(&group(&pal, &[4, 4, 4], ' '), None);
}

#[test]
fn aadhaar_tail_of_space_grouped_card_is_not_aadhaar() {
    // Last 12 digits form a valid Aadhaar; the whole is a Luhn-valid Visa.
    let card = "4009234123412346";
    assert!(card_valid(card.as_bytes()));
    let spaced = group(card, &[4, 4, 4, 4], ' ');
    assert_eq!(one(&spaced, &spaced, "CARD", None), Confidence::High);
    // A 16-digit grouping that is no card or VID still hides no Aadhaar.
    none("1009 2341 2341 2346", None);
}

#[test]
fn aadhaar_or_phone_for_91_prefix_depends_on_context() {
    let v = "918765432103";
    assert!(Validator::Verhoeff.check(v));
    assert_eq!(one(v, v, "AADHAAR", None), Confidence::High);
    assert_eq!(one(v, v, "IN_PHONE", Some("mobile")), Confidence::High);
    assert_eq!(
        one(&format!("call {v}"), v, "IN_PHONE", None),
        Confidence::High
    );
    let plus = format!("+{v}");
    assert_eq!(one(&plus, &plus, "IN_PHONE", None), Confidence::High);
    // Not Verhoeff-valid: only the phone reading is left.
    assert_eq!(
        one("918765432101", "918765432101", "IN_PHONE", None),
        Confidence::Medium
    );
}

// -- AADHAAR_VID ------------------------------------------------------------

#[test]
fn vid_plain_and_grouped() {
    let vid = verhoeff_append("234123412341234");
    assert!(!card_valid(vid.as_bytes()));
    assert_eq!(one(&vid, &vid, "AADHAAR_VID", None), Confidence::High);
    for sep in [' ', '-'] {
        let g = group(&vid, &[4, 4, 4, 4], sep);
        assert_eq!(
            one(&format!("VID {g}"), &g, "AADHAAR_VID", None),
            Confidence::High
        );
    }
    none(&format!("1{vid}"), None);
    let mut bad = vid.clone().into_bytes();
    bad[15] = if bad[15] == b'9' { b'0' } else { bad[15] + 1 };
    none(std::str::from_utf8(&bad).expect("ascii"), None);
}

#[test]
fn vid_that_is_also_a_card_reports_card_unless_key_says_vid() {
    let v = "4012888888881881";
    assert!(Validator::Verhoeff.check(v) && Validator::Luhn.check(v));
    assert_eq!(one(v, v, "CARD", None), Confidence::High);
    assert_eq!(
        one(v, v, "AADHAAR_VID", Some("virtual_id")),
        Confidence::High
    );
    let g = group(v, &[4, 4, 4, 4], ' ');
    assert_eq!(one(&g, &g, "AADHAAR_VID", Some("vid")), Confidence::High);
}

// -- PAN ------------------------------------------------------------------

#[test]
fn pan_positives_and_confidence() {
    assert_eq!(
        one("ABCPE1234F", "ABCPE1234F", "PAN", None),
        Confidence::Medium
    );
    assert_eq!(
        one("pan: abcpe1234f", "abcpe1234f", "PAN", None),
        Confidence::High
    );
    assert_eq!(
        one("AAACB1234C", "AAACB1234C", "PAN", Some("pan_no")),
        Confidence::High
    );
    assert_eq!(
        one("AAACB1234C", "AAACB1234C", "PAN", Some("panNumber")),
        Confidence::High
    );
    for holder in "ABCFGHJLPT".chars() {
        let p = format!("AAA{holder}B1234C");
        assert_eq!(one(&p, &p, "PAN", None), Confidence::Medium, "{p}");
    }
    // "company" ends in "pan" but is not a PAN field name.
    assert_eq!(
        one("ABCPE1234F", "ABCPE1234F", "PAN", Some("company")),
        Confidence::Medium
    );
}

#[test]
fn pan_near_misses() {
    for text in [
        "AbCPE1234F", // mixed case
        "abcPE1234F",
        "AAASA1111R", // holder type S
        "ABCND1234Z", // holder type N
        "ABCKE1234F", // K: python-stdnum only
        "A1111DFSFS", // not PAN-shaped
        "ABCPE0000F", // serial 0000
        "XABCPE1234F",
        "ABCPE1234FG",
        "ABCPE1234F_x",
        "ref-ABCPE1234F",
    ] {
        none(text, None);
    }
}

// -- GSTIN -----------------------------------------------------------------

#[test]
fn gstin_positives() {
    for g in [
        "27AAPFU0939F1ZV".to_string(),
        gstin_append("29ABCPE1234F1Z"),
        gstin_append("29abcpe1234f1z"),
        gstin_append("97AABCT1234L1Z"),
        gstin_append("99AABCG1234H1Z"),
        gstin_append("38AABCG1234H1Z"),
        gstin_append("07AABCG1234HAZ"),
    ] {
        let text = format!("GSTIN {g},");
        // The embedded PAN is not reported separately.
        assert_eq!(one(&text, &g, "GSTIN", None), Confidence::High, "{g}");
    }
}

#[test]
fn gstin_near_misses() {
    for g in [
        // Presidio's "valid" examples: bad check character, bad holder type.
        "27ABCDE1234F1Z5".to_string(),
        "07PQRST6789K1Z2".to_string(),
        "01ABCDE1234F1Z5".to_string(),
        "37ABCDE1234F1Z5".to_string(),
        "27AAPFU0939F1ZW".to_string(),  // wrong check character
        gstin_append("00ABCPE1234F1Z"), // state 00
        gstin_append("40ABCPE1234F1Z"), // state 40
        gstin_append("98ABCPE1234F1Z"), // state 98
        gstin_append("29ABCPE1234F0Z"), // entity 0
        gstin_append("29ABCPE1234F1Y"), // 14th not Z
        gstin_append("29ABCSE1234F1Z"), // holder type S
        "27aapfu0939F1ZV".to_string(),  // mixed case
        "127AAPFU0939F1ZV".to_string(), // longer run
    ] {
        none(&g, None);
    }
}

// -- CARD -------------------------------------------------------------------

#[test]
fn card_networks_and_groupings() {
    for v in [
        "4111111111111111".to_string(),    // Visa 16
        "4222222222222".to_string(),       // Visa 13
        "4111111111111111003".to_string(), // Visa 19
        "5555555555554444".to_string(),    // Mastercard
        "2223003122003222".to_string(),    // Mastercard 2-series
        "378282246310005".to_string(),     // Amex
        "6011111111111117".to_string(),    // Discover
        "30569309025904".to_string(),      // Diners 14
        "3530111333300000".to_string(),    // JCB
        "6759649826438453".to_string(),    // Maestro
        "6080011234567896".to_string(),    // RuPay 60
        "8100123456789017".to_string(),    // RuPay 81
        luhn_append("820012345678901"),    // RuPay 82
        "5085001234567894".to_string(),    // RuPay 508
        luhn_append("652150123456789"),    // RuPay 65
        luhn_append("356012345678901"),    // RuPay/JCB 356
    ] {
        assert!(Validator::Luhn.check(&v), "{v}");
        assert_eq!(
            one(&format!("card {v}."), &v, "CARD", None),
            Confidence::High,
            "{v}"
        );
    }
    for (v, sizes) in [
        ("4111111111111111", &[4usize, 4, 4, 4][..]),
        ("378282246310005", &[4, 6, 5][..]),
        ("4111111111111111003", &[4, 4, 4, 4, 3][..]),
    ] {
        for sep in [' ', '-'] {
            let g = group(v, sizes, sep);
            assert_eq!(
                one(&format!("[{g}]"), &g, "CARD", None),
                Confidence::High,
                "{g}"
            );
        }
    }
}

#[test]
fn card_near_misses() {
    for text in [
        "4111111111111112",     // Luhn fails
        "1111111111111117",     // Luhn ok, no network starts with 1
        "9111111111111110",     // nor 91
        "2720991111111110",     // 2720 is Mastercard ...
        "3782822463100051",     // Amex prefix, 16 digits
        "41111 1111 1111 111",  // unusual grouping
        "4111 1111-1111 1111",  // mixed separators
        "4111 XXXX XXXX 1111",  // masked
        "411111******1111",     // masked
        "24111111111111111111", // 20 digits
    ] {
        let got = run(text, None);
        assert!(got.iter().all(|g| g.0 != "CARD"), "{text:?} -> {got:?}");
    }
    // 2720 itself is a valid 2-series prefix; 2721 is not.
    let ok = luhn_append("272099111111111");
    assert_eq!(one(&ok, &ok, "CARD", None), Confidence::High);
    none(&luhn_append("272199111111111"), None);
}

// -- IN_PHONE ---------------------------------------------------------------

#[test]
fn phone_forms_and_confidence() {
    for (text, value, conf) in [
        ("9876543210", "9876543210", Confidence::Medium),
        ("ph 98765 43210", "98765 43210", Confidence::Medium),
        ("x 98765-43210", "98765-43210", Confidence::Medium),
        ("+91 98765 43210", "+91 98765 43210", Confidence::High),
        ("+91-98765-43210", "+91-98765-43210", Confidence::High),
        ("+91 9876543210", "+91 9876543210", Confidence::High),
        ("+919876543210", "+919876543210", Confidence::High),
        ("91 98765 43210", "91 98765 43210", Confidence::Medium),
        ("09876543210", "09876543210", Confidence::Medium),
        ("0 98765 43210", "0 98765 43210", Confidence::Medium),
        ("0-9876543210", "0-9876543210", Confidence::Medium),
        ("098765 43210", "098765 43210", Confidence::Medium),
        ("to:6123456789;", "6123456789", Confidence::Medium),
    ] {
        assert_eq!(one(text, value, "IN_PHONE", None), conf, "{text}");
    }
    assert_eq!(
        one(
            "9876543210",
            "9876543210",
            "IN_PHONE",
            Some("customerMobile")
        ),
        Confidence::High
    );
    assert_eq!(
        one("Mobile: 9876543210", "9876543210", "IN_PHONE", None),
        Confidence::High
    );
}

#[test]
fn phone_near_misses() {
    for text in [
        "5876543210",        // first digit 5
        "+91 4155550132",    // +91 landline-like, not mobile
        "+1 9876543210",     // another country
        "+44-98765 43210",   // another country, grouped
        "090-1234-5678",     // Japanese mobile
        "19876543210",       // 11 digits not starting 0
        "1712680359",        // epoch seconds
        "98765432101234",    // inside a longer run
        "12345 98765 43210", // group chain
        "9876543210.25",     // amount
        "+9876543210",       // '+' but no 91
        "1 98765 43210",     // digit group before
        "+0 98765 43210",    // '+' then trunk zero
    ] {
        let got = run(text, None);
        assert!(got.iter().all(|g| g.0 != "IN_PHONE"), "{text:?} -> {got:?}");
    }
}

// -- EMAIL / UPI_VPA / ABHA address -------------------------------------

#[test]
fn email_positives_and_negatives() {
    for (text, value) in [
        (
            "mail rahul.sharma@example.co.in now",
            "rahul.sharma@example.co.in",
        ),
        ("<user+tag@mail.example.com>", "user+tag@mail.example.com"),
        (
            "mailto:a.b-c_d@sub-domain.example.org.",
            "a.b-c_d@sub-domain.example.org",
        ),
        ("user@xn--80ak6aa92e.com", "user@xn--80ak6aa92e.com"),
        ("x@ybl.in", "x@ybl.in"),
        ("234123412346@gmail.com", "234123412346@gmail.com"),
    ] {
        assert_eq!(one(text, value, "EMAIL", None), Confidence::High, "{text}");
    }
    for text in [
        "info@presidio.",
        "@type",
        "a@b",
        "user@localhost",
        "user@example.c0m",
        "user@-example.com",
        "user.@example.com",
        "@@",
    ] {
        none(text, None);
    }
}

#[test]
fn upi_vpa_positives_and_negatives() {
    for (text, value) in [
        ("pay 9876543210@ybl", "9876543210@ybl"),
        ("rahul.s@okaxis", "rahul.s@okaxis"),
        ("upi://pay?pa=shop-42@icici&pn=Shop", "shop-42@icici"),
        ("RAHUL@OKSBI", "RAHUL@OKSBI"),
        ("name_1@paytm.", "name_1@paytm"),
    ] {
        assert_eq!(
            one(text, value, "UPI_VPA", None),
            Confidence::High,
            "{text}"
        );
    }
    for text in [
        "pkg@latest",     // not a PSP handle
        "x@ybl",          // local part too short
        "a+b@ybl",        // '+' not allowed in a VPA
        "git@github",     // unknown handle
        "node@ybl_extra", // handle runs on
    ] {
        none(text, None);
    }
}

#[test]
fn upi_handles_are_lowercase_and_unique() {
    let mut seen = std::collections::HashSet::new();
    for h in UPI_HANDLES {
        assert_eq!(*h, h.to_ascii_lowercase(), "{h}");
        assert!(seen.insert(*h), "duplicate handle {h}");
        assert!(!h.contains('.'), "{h}");
    }
    for h in [
        "okaxis",
        "oksbi",
        "okhdfcbank",
        "okicici",
        "ybl",
        "ibl",
        "axl",
        "paytm",
        "upi",
        "apl",
        "yapl",
        "ikwik",
        "freecharge",
        "axisbank",
        "hdfcbank",
        "icici",
        "sbi",
        "kotak",
        "pthdfc",
        "ptsbi",
        "ptyes",
        "ptaxis",
        "waicici",
        "waaxis",
        "wahdfcbank",
        "wasbi",
        "abfspay",
        "jupiteraxis",
        "fam",
        "slice",
    ] {
        assert!(seen.contains(h), "{h} missing");
    }
}

// -- ABHA -------------------------------------------------------------------

#[test]
fn abha_number_and_address() {
    assert_eq!(
        one("ABHA 91-1234-5678-9012", "91-1234-5678-9012", "ABHA", None),
        Confidence::High
    );
    assert_eq!(
        one("43-4221-5105-6749", "43-4221-5105-6749", "ABHA", None),
        Confidence::High
    );
    assert_eq!(
        one("id rahul.s@abdm", "rahul.s@abdm", "ABHA", None),
        Confidence::High
    );
    assert_eq!(
        one("ravi_k@sbx", "ravi_k@sbx", "ABHA", None),
        Confidence::High
    );
    assert_eq!(
        one("91123456789012@abdm", "91123456789012@abdm", "ABHA", None),
        Confidence::High
    );
    // Plain 14 digits need context.
    none("91123456789012", None);
    assert_eq!(
        one(
            "91123456789012",
            "91123456789012",
            "ABHA",
            Some("abhaNumber")
        ),
        Confidence::Medium
    );
    assert_eq!(
        one("health id 91123456789012", "91123456789012", "ABHA", None),
        Confidence::Medium
    );
    for text in [
        "91 1234 5678 9012",
        "91-1234-5678-901",
        "9-1234-5678-9012",
        "ab@abdm",
        "9abc@abdm",
        "x-91-1234-5678-9012",
    ] {
        let got = run(text, None);
        assert!(got.iter().all(|g| g.0 != "ABHA"), "{text:?} -> {got:?}");
    }
}

// -- IFSC -------------------------------------------------------------------

#[test]
fn ifsc_positives_and_negatives() {
    for v in ["SBIN0001234", "HDFC0CAGSBK", "IBKL0070T16", "sbin0001234"] {
        assert_eq!(
            one(&format!("IFSC: {v}"), v, "IFSC", None),
            Confidence::High,
            "{v}"
        );
        assert_eq!(
            one(&format!("branch {v}"), v, "IFSC", None),
            Confidence::Medium,
            "{v}"
        );
    }
    for text in [
        "SBIN1001234",
        "SbIN0001234",
        "DEUTDEFF500",
        "SBI00001234",
        "SBIN000123",
        "XSBIN0001234",
    ] {
        none(text, None);
    }
}

// -- context-needing classes ---------------------------------------------

#[test]
fn passport_voter_dl_need_context() {
    for (value, class, key, kw) in [
        ("J8369854", "PASSPORT", "passport_no", "Passport No: "),
        ("ABC1234567", "VOTER_ID", "epic_no", "EPIC "),
        ("HR-0619850034761", "DRIVING_LICENCE", "dl_no", "DL No: "),
        (
            "HR0619850034761",
            "DRIVING_LICENCE",
            "drivingLicence",
            "licence ",
        ),
        (
            "MH14 20110062821",
            "DRIVING_LICENCE",
            "license_number",
            "driving licence ",
        ),
        ("HR 06 1985 0034761", "DRIVING_LICENCE", "dl", "License: "),
    ] {
        none(&format!("ref {value} ok"), None);
        assert_eq!(
            one(value, value, class, Some(key)),
            Confidence::Medium,
            "{value} key"
        );
        assert_eq!(
            one(&format!("{kw}{value}"), value, class, None),
            Confidence::Medium,
            "{value} kw"
        );
    }
    for (text, key) in [
        ("HR-0618850034761", "dl_no"), // year 1885
        ("XX-0619850034761", "dl_no"), // no such state
        ("HR-061985003476", "dl_no"),  // serial too short
        ("J836985", "passport"),       // 6 digits
        ("AB1234567", "voter_id"),     // 2 letters
        ("aBC1234567", "voter_id"),    // mixed case
    ] {
        none(text, Some(key));
    }
    // A keyword further back than the window is not context.
    let far = format!("passport{}J8369854", " ".repeat(CONTEXT_WINDOW));
    none(&far, None);
    let near = format!(
        "passport{}J8369854",
        " ".repeat(CONTEXT_WINDOW - "passport".len())
    );
    assert_eq!(one(&near, "J8369854", "PASSPORT", None), Confidence::Medium);
}

#[test]
fn bank_account_only_with_context() {
    none("50100123456789", None);
    for key in [
        "account_no",
        "acc_no",
        "accountNumber",
        "bank_account",
        "beneficiary.account-no",
    ] {
        assert_eq!(
            one(
                "50100123456789",
                "50100123456789",
                "BANK_ACCOUNT",
                Some(key)
            ),
            Confidence::Medium,
            "{key}"
        );
    }
    assert_eq!(
        one("A/c 123456789", "123456789", "BANK_ACCOUNT", None),
        Confidence::Medium
    );
    assert_eq!(
        one(
            "acct no. 000123456789012345",
            "000123456789012345",
            "BANK_ACCOUNT",
            None
        ),
        Confidence::Medium
    );
    // The key decides between readings: a valid Aadhaar under account_no is an account.
    assert_eq!(
        one(
            "234123412346",
            "234123412346",
            "BANK_ACCOUNT",
            Some("account_no")
        ),
        Confidence::Medium
    );
    none("12345678", Some("account_no"));
    none("1234567890123456789", Some("account_no"));
}

#[test]
fn dob_is_a_field_name_hint() {
    assert_eq!(
        one("1990-01-31", "1990-01-31", "DOB", Some("date_of_birth")),
        Confidence::Medium
    );
    assert_eq!(
        one("  31/01/1990 ", "31/01/1990", "DOB", Some("DOB")),
        Confidence::Medium
    );
    assert_eq!(
        one("Jan 31", "Jan 31", "DOB", Some("customer.birthDate")),
        Confidence::Medium
    );
    none("   ", Some("dob"));
    none("", Some("dob"));
    none("1990-01-31", Some("dobby"));
    none("1990-01-31", None);
}

// -- keys, keywords, offsets -----------------------------------------------

#[test]
fn the_tail_filter_rejects_no_key_that_matches() {
    let filtered = det();
    let mut open = Detector::builtin();
    open.field_index.tails = vec![u64::MAX; TAIL_BITS / 64];
    let names: Vec<String> = filtered
        .fields
        .iter()
        .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
        .collect();
    let mut runner = proptest::test_runner::TestRunner::default();
    let key = (
        proptest::sample::select(names),
        "[a-zA-Z_.-]{0,8}",
        proptest::bool::ANY,
        "[a-zA-Z_. -]{0,3}",
    )
        .prop_map(|(name, prefix, upper, tail)| {
            let name = if upper { name.to_uppercase() } else { name };
            format!("{prefix}{name}{tail}")
        });
    runner
        .run(&key, |k| {
            let a = filtered.match_key(k.as_bytes());
            let b = open.match_key(k.as_bytes());
            prop_assert_eq!(a.ids(), b.ids(), "{}", k);
            Ok(())
        })
        .unwrap();
    // Names that end nowhere near a field name are turned away by the filter.
    for k in [
        "accept",
        "traceparent",
        "accept-encoding",
        "user-agent",
        "host",
    ] {
        assert!(filtered.match_key(k.as_bytes()).ids().is_empty(), "{k}");
    }
}

#[test]
fn key_normalisation() {
    let d = det();
    let has = |key: &str, class: ClassId| d.match_key(key.as_bytes()).has(class);
    for key in [
        "mobile",
        "MOBILE_NO",
        "mobile-number",
        "customerMobile",
        "billing.mobile",
        "X-Customer-Mobile",
        "phone number",
    ] {
        assert!(has(key, ClassId::IN_PHONE), "{key}");
    }
    for key in [
        "aadhaar",
        "Aadhar",
        "aadhaar_no",
        "uid",
        "customer_aadhaar_number",
    ] {
        assert!(has(key, ClassId::AADHAAR), "{key}");
    }
    for key in [
        "company",
        "mobileVerified",
        "uuid",
        "span",
        "user_id",
        "telephoned",
    ] {
        assert!(d.match_key(key.as_bytes()).ids().is_empty(), "{key}");
    }
    assert!(has("payerVpa", ClassId::UPI_VPA));
    assert!(has("pa", ClassId::UPI_VPA));
    assert!(!has(&"x".repeat(MAX_KEY + 1), ClassId::IN_PHONE));
}

#[test]
fn custom_field_name_shared_with_a_builtin_names_both() {
    let d = Detector::new(&[ClassSpec {
        name: "ALT_CONTACT".into(),
        pattern: Some(r"\bALT[0-9]{4}\b".into()),
        field_names: vec!["Mobile".into(), "alt-contact".into()],
        ..Default::default()
    }])
    .expect("valid");
    let alt = d.class_id("ALT_CONTACT").expect("defined");
    let km = d.match_key(b"customer_mobile");
    assert!(km.has(ClassId::IN_PHONE) && km.has(alt), "{:?}", km.ids());
    assert!(d.match_key(b"altContact").has(alt));
    assert!(!d.match_key(b"contact").has(alt));
    assert_eq!(
        run_with(&d, "ALT1234", Some("mobile")),
        vec![("ALT_CONTACT".to_string(), Confidence::High, 0, 7)]
    );
}

#[test]
fn offsets_include_base_and_findings_are_sorted() {
    let text = "a 9876543210, b ABCPE1234F; c rahul@okaxis, d 2341 2341 2346";
    let mut out = vec![Finding {
        class: ClassId::EMAIL,
        confidence: Confidence::Low,
        offset: 7,
        len: 1,
    }];
    det().scan(text.as_bytes(), 1_000, None, &mut out);
    assert_eq!(out.len(), 5, "{out:?}");
    assert_eq!(out[0].offset, 7, "existing findings are kept");
    let want = [
        (ClassId::IN_PHONE, "9876543210"),
        (ClassId::PAN, "ABCPE1234F"),
        (ClassId::UPI_VPA, "rahul@okaxis"),
        (ClassId::AADHAAR, "2341 2341 2346"),
    ];
    for (f, (class, value)) in out[1..].iter().zip(want) {
        let idx = text.find(value).expect("in text") as u64;
        assert_eq!(
            (f.class, f.offset, f.len),
            (class, 1_000 + idx, value.len() as u32)
        );
        assert_eq!(f.end(), 1_000 + idx + value.len() as u64);
    }
}

#[test]
fn matches_at_segment_start_and_end() {
    let samples = plant_samples();
    for (class, value, key) in &samples {
        for text in [
            value.clone(),
            format!("{value} tail"),
            format!("head {value}"),
            format!("\"{value}\""),
        ] {
            let got = run(&text, *key);
            let off = text.find(value.as_str()).expect("in text") as u64;
            assert!(
                got.iter()
                    .any(|g| g.0 == *class && g.2 == off && g.3 == value.len() as u32),
                "{text:?} -> {got:?}"
            );
        }
    }
}

// -- realistic negatives ----------------------------------------------------

#[test]
fn ordinary_numbers_are_not_identifiers() {
    let text = r#"{"id":48213,"order_id":"ORD-2024-000123","uuid":"550e8400-e29b-41d4-a716-446655440000",
        "created_at":"2024-05-01T12:34:56.789Z","updated_ms":1714567890123,"epoch":1714567890,
        "price":1299.00,"amount":"1,23,45,678.50","qty":3,"pincode":"560001","lat":12.9716,"lon":77.5946,
        "version":"2.14.3","sku":"SKU-10023","ip":"192.168.10.254","phone_ext":"x1234",
        "hash":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","ttl":86400,
        "trace":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","size":"1920x1080"}"#;
    none(text, None);
    // The bench generator's payload shape, with many random ids and UUIDs.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut s = String::new();
    for _ in 0..2_000 {
        let n = next();
        s.push_str(&format!(
            "{{\"id\":{},\"uuid\":\"{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}\",\"ms\":{},\"total\":{}.{:02}}},",
            n % 90_000_000,
            n >> 32,
            n & 0xffff,
            (n >> 16) & 0xfff,
            next() & 0xffff,
            next() & 0xffff_ffff_ffff,
            1_700_000_000_000 + n % 40_000_000_000,
            n % 50_000,
            n % 100
        ));
    }
    none(&s, None);
}

// -- custom classes and the class table ---------------------------------------

#[test]
fn custom_regex_classes() {
    let d = Detector::new(&[
        ClassSpec {
            name: "EMP_ID".into(),
            pattern: Some(r"\bEMP-[0-9]{6}\b".into()),
            field_names: vec!["employee_id".into()],
            ..Default::default()
        },
        ClassSpec {
            name: "LOYALTY".into(),
            pattern: Some(r"\bLY[0-9]{8}\b".into()),
            validator: Validator::Luhn,
            ..Default::default()
        },
        ClassSpec {
            name: "PROJECT".into(),
            pattern: Some(r"\bPRJ[0-9]{4}\b".into()),
            needs_context: true,
            context_keywords: vec!["project".into()],
            ..Default::default()
        },
        ClassSpec {
            name: "SALARY".into(),
            field_names: vec!["salary".into(), "ctc".into()],
            ..Default::default()
        },
    ])
    .expect("valid specs");
    let emp = d.class_id("EMP_ID").expect("defined");
    assert_eq!(emp, ClassId(15));
    assert_eq!(d.class_name(emp), "EMP_ID");
    let ly = luhn_append("1234567");
    let text = format!("EMP-004211 LY{ly} LY12345670 PRJ0042 9876543210");
    let got = run_with(&d, &text, None);
    let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    assert_eq!(names, ["EMP_ID", "LOYALTY", "IN_PHONE"], "{got:?}");
    assert_eq!(got[0].1, Confidence::Medium);
    assert_eq!(got[1].1, Confidence::High);
    assert_eq!(got[1].2, text.find("LY").expect("in text") as u64);
    let got = run_with(&d, "project PRJ0042", None);
    assert_eq!(got, vec![("PROJECT".to_string(), Confidence::Medium, 8, 7)]);
    let got = run_with(&d, "EMP-004211", Some("employeeId"));
    assert_eq!(got, vec![("EMP_ID".to_string(), Confidence::High, 0, 10)]);
    let got = run_with(&d, "12,00,000", Some("ctc"));
    assert_eq!(got, vec![("SALARY".to_string(), Confidence::Medium, 0, 9)]);
    // Built-ins keep working without custom hits.
    assert_eq!(run_with(&d, "ABCPE1234F", None).len(), 1);
}

#[test]
fn custom_class_errors() {
    let spec = |name: &str, pattern: Option<&str>| ClassSpec {
        name: name.into(),
        pattern: pattern.map(Into::into),
        ..Default::default()
    };
    assert!(matches!(
        Detector::new(&[spec("PAN", Some("x"))]),
        Err(DetectError::DuplicateClass(_))
    ));
    assert!(matches!(
        Detector::new(&[spec("email", Some("x"))]),
        Err(DetectError::DuplicateClass(_))
    ));
    assert!(matches!(
        Detector::new(&[spec("A", Some("a")), spec("A", Some("b"))]),
        Err(DetectError::DuplicateClass(_))
    ));
    assert!(matches!(
        Detector::new(&[spec(" ", Some("x"))]),
        Err(DetectError::EmptyName)
    ));
    assert!(matches!(
        Detector::new(&[spec("X", Some("("))]),
        Err(DetectError::InvalidPattern { .. })
    ));
    assert!(matches!(
        Detector::new(&[spec("X", Some("a*"))]),
        Err(DetectError::EmptyMatch(_))
    ));
    assert!(matches!(
        Detector::new(&[spec("X", None)]),
        Err(DetectError::NothingToMatch(_))
    ));
    assert!(Detector::new(&[]).is_ok());
}

#[test]
fn max_match_len_covers_builtin_and_custom() {
    assert_eq!(det().max_match_len(), 320);
    let spec = |p: &str| ClassSpec {
        name: "C".into(),
        pattern: Some(p.into()),
        ..Default::default()
    };
    assert_eq!(
        Detector::new(&[spec("[A-Z]{2}[0-9]{500}")])
            .expect("ok")
            .max_match_len(),
        502
    );
    assert_eq!(
        Detector::new(&[spec("[0-9]{4}")])
            .expect("ok")
            .max_match_len(),
        320
    );
    assert_eq!(
        Detector::new(&[spec("X[0-9]+")])
            .expect("ok")
            .max_match_len(),
        UNBOUNDED_CUSTOM_LEN
    );
}

#[test]
fn class_table() {
    let d = det();
    let names: Vec<&str> = d.classes().map(|(_, n)| n).collect();
    assert_eq!(
        names,
        [
            "AADHAAR",
            "AADHAAR_VID",
            "PAN",
            "GSTIN",
            "CARD",
            "IN_PHONE",
            "EMAIL",
            "UPI_VPA",
            "IFSC",
            "PASSPORT",
            "VOTER_ID",
            "DRIVING_LICENCE",
            "ABHA",
            "BANK_ACCOUNT",
            "DOB"
        ]
    );
    for (id, name) in d.classes() {
        assert_eq!(d.class_id(name), Some(id));
    }
    for (id, name) in [
        (ClassId::AADHAAR, "AADHAAR"),
        (ClassId::CARD, "CARD"),
        (ClassId::ABHA, "ABHA"),
        (ClassId::DOB, "DOB"),
    ] {
        assert_eq!(d.class_name(id), name);
    }
    assert_eq!(d.class_name(ClassId(999)), "");
    assert_eq!(d.class_id("aadhaar"), None);
    let specs = Detector::builtin_specs();
    assert_eq!(
        specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        names
    );
    assert!(specs.iter().filter(|s| s.needs_context).count() == 5);
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Detector>();
}

// -- property tests --------------------------------------------------------------

/// One valid value per class form, with the key it needs (if any).
fn plant_samples() -> Vec<(&'static str, String, Option<&'static str>)> {
    let vid = verhoeff_append("567812345678123");
    vec![
        ("AADHAAR", "234123412346".into(), None),
        ("AADHAAR", "2341 2341 2346".into(), None),
        ("AADHAAR", "9876-5432-1012".into(), None),
        ("AADHAAR_VID", vid.clone(), None),
        ("AADHAAR_VID", group(&vid, &[4, 4, 4, 4], ' '), None),
        ("PAN", "ABCPE1234F".into(), None),
        ("PAN", "aaacb1234c".into(), None),
        ("GSTIN", "27AAPFU0939F1ZV".into(), None),
        ("CARD", "4111111111111111".into(), None),
        ("CARD", "4111 1111 1111 1111".into(), None),
        ("CARD", "3782-822463-10005".into(), None),
        ("IN_PHONE", "9876543210".into(), None),
        ("IN_PHONE", "+91 98765 43210".into(), None),
        ("IN_PHONE", "+919876543210".into(), None),
        ("EMAIL", "rahul.sharma@example.co.in".into(), None),
        ("UPI_VPA", "9876543210@ybl".into(), None),
        ("UPI_VPA", "rahul.s@okaxis".into(), None),
        ("IFSC", "SBIN0001234".into(), None),
        ("ABHA", "91-1234-5678-9012".into(), None),
        ("ABHA", "rahul.s@abdm".into(), None),
        ("ABHA", "91123456789012".into(), Some("abha_number")),
        ("PASSPORT", "J8369854".into(), Some("passport_no")),
        ("VOTER_ID", "ABC1234567".into(), Some("epic")),
        ("DRIVING_LICENCE", "HR-0619850034761".into(), Some("dl_no")),
        ("BANK_ACCOUNT", "50100123456789".into(), Some("account_no")),
    ]
}

const FILLER: &[u8] = b"0123456789 -.,;:|/()[]{}<>=&#!?*\n\t\"'";
const DELIMS: &[u8] = b",;|()[]{}<>=&#!?*:\n\t\"'/";

fn scan_both(text: &[u8], key: Option<&[u8]>) -> (Vec<Finding>, Vec<Finding>) {
    let d = det();
    let km = key.map_or(KeyMatch::NONE, |k| d.match_key(k));
    let cx = Ctx {
        text,
        base: 0,
        key: km,
    };
    let (mut fast, mut slow) = (Vec::new(), Vec::new());
    d.scan_builtin(&cx, &mut fast, true);
    d.scan_builtin(&cx, &mut slow, false);
    (fast, slow)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn planted_identifier_is_found_at_its_offset(
        idx in 0usize..25,
        pre in proptest::collection::vec(proptest::sample::select(FILLER), 0..80),
        post in proptest::collection::vec(proptest::sample::select(FILLER), 0..80),
        l in proptest::sample::select(DELIMS),
        r in proptest::sample::select(DELIMS),
        base in 0u64..(1 << 40),
    ) {
        let samples = plant_samples();
        let (class, value, key) = &samples[idx % samples.len()];
        let mut text = pre.clone();
        text.push(l);
        let at = text.len();
        text.extend_from_slice(value.as_bytes());
        text.push(r);
        text.extend_from_slice(&post);
        let d = det();
        let mut out = Vec::new();
        d.scan(&text, base, key.map(str::as_bytes), &mut out);
        let want = d.class_id(class).expect("builtin");
        prop_assert!(
            out.iter().any(|f| f.class == want && f.offset == base + at as u64 && f.len as usize == value.len()),
            "{:?} -> {:?}", String::from_utf8_lossy(&text), out
        );
    }

    #[test]
    fn planted_unambiguous_identifier_survives_letters_nearby(
        idx in 0usize..6,
        pre in "[ -~]{0,60}",
        post in "[ -~]{0,60}",
        l in proptest::sample::select(DELIMS),
    ) {
        let values = ["27AAPFU0939F1ZV", "rahul.sharma@example.co.in", "rahul.s@okaxis", "3782 822463 10005", "91-1234-5678-9012", "2341 2341 2346"];
        let classes = [ClassId::GSTIN, ClassId::EMAIL, ClassId::UPI_VPA, ClassId::CARD, ClassId::ABHA, ClassId::AADHAAR];
        let mut text = pre.into_bytes();
        text.push(l);
        let at = text.len();
        text.extend_from_slice(values[idx].as_bytes());
        text.push(b'\n');
        text.extend_from_slice(post.as_bytes());
        let mut out = Vec::new();
        det().scan(&text, 0, None, &mut out);
        prop_assert!(
            out.iter().any(|f| f.class == classes[idx] && f.offset == at as u64 && f.len as usize == values[idx].len()),
            "{:?} -> {:?}", String::from_utf8_lossy(&text), out
        );
    }

    #[test]
    fn random_bytes_never_panic_and_spans_are_in_bounds(
        text in proptest::collection::vec(any::<u8>(), 0..1500),
        key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        base in any::<u64>(),
    ) {
        let mut out = Vec::new();
        det().scan(&text, base, key.as_deref(), &mut out);
        for w in out.windows(2) {
            prop_assert!(w[0].offset <= w[1].offset);
        }
        for f in &out {
            prop_assert!(f.len > 0);
            prop_assert!(f.offset >= base);
            prop_assert!(f.offset - base + u64::from(f.len) <= text.len() as u64);
            prop_assert!(usize::from(f.class.0) < det().classes().count());
        }
    }

    #[test]
    fn shortcut_never_changes_the_result(
        text in proptest::collection::vec(proptest::sample::select(b"0123456789012345 -+@._:,xAbHRz\"".as_slice()), 0..400),
        key in proptest::option::of(proptest::sample::select(vec!["mobile", "account_no", "dl", "abha", "vid", "pan"])),
    ) {
        let (fast, slow) = scan_both(&text, key.map(str::as_bytes));
        prop_assert_eq!(fast, slow, "{:?}", String::from_utf8_lossy(&text));
    }

    #[test]
    fn identifier_shaped_noise_never_panics(
        text in proptest::collection::vec(proptest::sample::select(b"0123456789 -+@._%ABCDEFGHJLPTZabcz0".as_slice()), 0..600),
    ) {
        let mut out = Vec::new();
        det().scan(&text, 0, Some(b"account_no"), &mut out);
        for f in &out {
            prop_assert!(f.offset as usize + f.len as usize <= text.len());
        }
    }
}
