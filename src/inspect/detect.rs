//! Detectors per data class with validators; pure, no IO.
//!
//! A [`Detector`] is built once (built-in classes plus optional user-defined
//! regex classes), shared behind an `Arc`, and asked to [`Detector::scan`]
//! already-normalised text segments. Findings carry the class, a confidence,
//! and the byte span in the decoded stream; never the matched value.
//!
//! # How the built-in scan stays fast
//!
//! Every built-in identifier contains an ASCII digit or an `@`. The scan
//! skips 16 bytes per step with a SWAR test for bytes in `[0-9@]`. A digit
//! that starts a short isolated number (counter, price, time part) or a run
//! hyphen-joined to the token before it (date parts, UUID groups) is
//! dismissed after one 8-byte test. Otherwise the hit is expanded (SWAR
//! again) to its alphanumeric run, following digit groups are collected for
//! the grouped forms, the candidate is classified by shape (length and
//! letter/digit layout), and only then are check digits validated and the
//! context window searched. No regex runs over the text for the built-in
//! classes; custom regex classes cost one `RegexSet` pass, only when defined.
//!
//! # Boundaries
//!
//! An identifier is never reported inside a longer alphanumeric run, next to
//! `_` or `@`, hyphen-joined to another alphanumeric token (UUID groups,
//! product codes), or dot-joined to a digit (decimals, version numbers). For
//! space/hyphen grouped forms (`2345 6789 0124`) a neighbouring digit group
//! joined by the *same* separator rejects the match, so the tail of a
//! space-grouped card number is not an Aadhaar.
//!
//! # Confidence
//!
//! Each detection has a base confidence (validated check digit: `High`;
//! format only: `Medium`; context-needing classes: `Low`). Context, meaning a
//! `key` matching one of the class's field names or one of its keywords in the
//! [`CONTEXT_WINDOW`] bytes before the match, raises it one step.
//! Context-needing classes (PASSPORT, VOTER_ID, DRIVING_LICENCE, plain ABHA,
//! BANK_ACCOUNT) are reported only with context, hence always at `Medium`.
//! When one span fits several classes (a 12-digit number that is a valid
//! Aadhaar and starts with `91`), the class named by the key wins, then one
//! named by a nearby keyword, then the first class in the built-in priority
//! (so a Luhn-valid card that is also a valid VID is reported as CARD).
//!
//! # Deliberately not reported
//!
//! Masked Aadhaar (`XXXX XXXX 1234`), masked cards, a PAN embedded in a
//! GSTIN, `+91` numbers whose national part does not start with 6-9, numbers
//! after another country code, colon-grouped digits, and percent-encoded
//! addresses (`a%40ybl`: decode before scanning).

use std::fmt;
use std::str::FromStr;

use regex::bytes::{Regex, RegexSet};

/// Bytes before a match that are searched for context keywords.
pub const CONTEXT_WINDOW: usize = 32;

/// Longest e-mail / VPA local part looked at (RFC 5321 limit).
const LOCAL_MAX: usize = 64;
/// Longest e-mail domain looked at.
const DOMAIN_MAX: usize = 255;
/// Longest built-in match: an e-mail address (local `@` domain).
const BUILTIN_MAX_MATCH: usize = LOCAL_MAX + 1 + DOMAIN_MAX;
/// Letters looked at before the first digit of a run (PAN has five); a
/// longer letter prefix makes the run too long for any identifier.
const MAX_BACK: usize = 8;
/// Length assumed for custom patterns whose longest match is unbounded.
const UNBOUNDED_CUSTOM_LEN: usize = 1024;
/// Longest normalised key used for field-name matching.
const MAX_KEY: usize = 128;

// ---------------------------------------------------------------------------
// Public value types
// ---------------------------------------------------------------------------

/// How sure a detector is that a span holds the class it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Confidence {
    /// The shape matches but nothing corroborates it.
    Low,
    /// The shape matches (no check digit exists), or a weak shape has context.
    Medium,
    /// A check digit validated, or a medium detection has context.
    High,
}

impl Confidence {
    /// Lower-case name: `"low"`, `"medium"` or `"high"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }

    /// One step higher, saturating at [`Confidence::High`].
    pub fn raised(self) -> Confidence {
        match self {
            Confidence::Low => Confidence::Medium,
            Confidence::Medium | Confidence::High => Confidence::High,
        }
    }
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A check-digit algorithm a class can require of its matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Validator {
    /// Verhoeff dihedral check digit (Aadhaar, Aadhaar VID).
    Verhoeff,
    /// Luhn mod 10 (payment cards).
    Luhn,
    /// GSTIN Luhn mod 36 check character over 15 alphanumerics.
    GstinMod36,
    /// No check: the pattern alone decides.
    #[default]
    None,
}

impl Validator {
    /// Checks a matched value.
    ///
    /// `Verhoeff` and `Luhn` use the ASCII digits of `input` in order and
    /// ignore every other byte (separators, prefixes); fewer than two digits
    /// fail. `GstinMod36` ignores spaces and hyphens, then needs exactly 15
    /// ASCII alphanumerics (either case) whose last one is the check
    /// character. `None` accepts everything.
    pub fn check(&self, input: impl AsRef<[u8]>) -> bool {
        let s = input.as_ref();
        let digits = || {
            s.iter()
                .rev()
                .filter(|b| b.is_ascii_digit())
                .map(|b| b - b'0')
        };
        match self {
            Validator::Verhoeff => digits().nth(1).is_some() && verhoeff_valid(digits()),
            Validator::Luhn => digits().nth(1).is_some() && luhn_valid(digits()),
            Validator::GstinMod36 => {
                let mut buf = [0u8; 15];
                let mut n = 0;
                for &b in s {
                    if b == b' ' || b == b'-' {
                        continue;
                    }
                    if n == buf.len() || !b.is_ascii_alphanumeric() {
                        return false;
                    }
                    buf[n] = b;
                    n += 1;
                }
                n == buf.len() && gstin_check_valid(&buf)
            }
            Validator::None => true,
        }
    }

    /// Configuration name: `"verhoeff"`, `"luhn"`, `"gstin_mod36"` or `"none"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Validator::Verhoeff => "verhoeff",
            Validator::Luhn => "luhn",
            Validator::GstinMod36 => "gstin_mod36",
            Validator::None => "none",
        }
    }
}

impl FromStr for Validator {
    type Err = DetectError;

    /// Parses the names produced by [`Validator::as_str`] (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let all = [
            Validator::Verhoeff,
            Validator::Luhn,
            Validator::GstinMod36,
            Validator::None,
        ];
        all.into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| DetectError::UnknownValidator(s.to_string()))
    }
}

/// Definition of a data class, used for user-defined classes and to describe
/// the built-in ones ([`Detector::builtin_specs`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClassSpec {
    /// Class name as reported and used in policies (for example `EMP_ID`).
    pub name: String,
    /// Regex (`regex` crate syntax, matched on bytes) for custom classes.
    /// `None` makes the class a field-name-only hint: a non-empty value under
    /// one of `field_names` is reported whole at `Medium`.
    pub pattern: Option<String>,
    /// Check every match must pass.
    pub validator: Validator,
    /// Words whose presence shortly before a match counts as context.
    pub context_keywords: Vec<String>,
    /// Report only with context (key or keyword), then at `Medium`.
    pub needs_context: bool,
    /// Field names (JSON key, form field, header) that count as context;
    /// compared case-insensitively ignoring `_`, `-`, `.` and spaces.
    pub field_names: Vec<String>,
}

/// Index of a class in a [`Detector`]'s class table. Built-in classes have
/// fixed ids (the associated constants); custom classes follow them in the
/// order given to [`Detector::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClassId(pub u16);

impl ClassId {
    /// Aadhaar number (12 digits, Verhoeff).
    pub const AADHAAR: ClassId = ClassId(0);
    /// Aadhaar virtual ID (16 digits, Verhoeff).
    pub const AADHAAR_VID: ClassId = ClassId(1);
    /// Permanent Account Number.
    pub const PAN: ClassId = ClassId(2);
    /// GST identification number (mod-36 check character).
    pub const GSTIN: ClassId = ClassId(3);
    /// Payment card number (Luhn and network prefix).
    pub const CARD: ClassId = ClassId(4);
    /// Indian mobile number.
    pub const IN_PHONE: ClassId = ClassId(5);
    /// E-mail address.
    pub const EMAIL: ClassId = ClassId(6);
    /// UPI virtual payment address with a known PSP handle.
    pub const UPI_VPA: ClassId = ClassId(7);
    /// Bank branch IFSC code.
    pub const IFSC: ClassId = ClassId(8);
    /// Indian passport number (context needed).
    pub const PASSPORT: ClassId = ClassId(9);
    /// Voter ID / EPIC (context needed).
    pub const VOTER_ID: ClassId = ClassId(10);
    /// Driving licence number (context needed).
    pub const DRIVING_LICENCE: ClassId = ClassId(11);
    /// ABHA health number or address.
    pub const ABHA: ClassId = ClassId(12);
    /// Bank account number (context needed).
    pub const BANK_ACCOUNT: ClassId = ClassId(13);
    /// Date of birth (field-name hint only).
    pub const DOB: ClassId = ClassId(14);
}

/// One detection: which class, how sure, and where. Never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Finding {
    /// Class detected.
    pub class: ClassId,
    /// Confidence after context adjustment.
    pub confidence: Confidence,
    /// Offset of the first byte in the decoded stream (`base` + index).
    pub offset: u64,
    /// Length in bytes, including separators and prefixes such as `+91 `.
    pub len: u32,
}

impl Finding {
    /// Offset one past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// Errors from building a [`Detector`].
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A class name is empty or only whitespace.
    #[error("class name is empty")]
    EmptyName,
    /// Two classes (or a custom and a built-in class) share a name.
    #[error("class {0:?} is defined more than once")]
    DuplicateClass(String),
    /// A custom class has neither a pattern nor field names.
    #[error("class {0:?} has neither a pattern nor field names")]
    NothingToMatch(String),
    /// A custom pattern does not compile.
    #[error("class {class:?}: invalid pattern: {source}")]
    InvalidPattern {
        /// Class whose pattern failed.
        class: String,
        /// Compiler error.
        #[source]
        source: regex::Error,
    },
    /// A custom pattern can match the empty string.
    #[error("class {0:?}: pattern can match the empty string")]
    EmptyMatch(String),
    /// More classes than a [`ClassId`] can index.
    #[error("too many classes")]
    TooManyClasses,
    /// A validator name is not known.
    #[error("unknown validator {0:?}")]
    UnknownValidator(String),
}

// ---------------------------------------------------------------------------
// Built-in class table
// ---------------------------------------------------------------------------

struct Builtin {
    name: &'static str,
    validator: Validator,
    needs_context: bool,
    field_only: bool,
    keywords: &'static [&'static str],
    fields: &'static [&'static str],
}

/// Built-in classes, in [`ClassId`] order (which is also the tie priority).
const BUILTINS: [Builtin; 15] = [
    Builtin {
        name: "AADHAAR",
        validator: Validator::Verhoeff,
        needs_context: false,
        field_only: false,
        keywords: &["aadhaar", "aadhar", "adhaar", "uidai", "uid"],
        fields: &[
            "aadhaar",
            "aadhar",
            "adhaar",
            "aadhaar_no",
            "aadhaar_number",
            "aadhar_no",
            "aadhar_number",
            "aadhaar_id",
            "uid",
            "uid_no",
            "uidai",
        ],
    },
    Builtin {
        name: "AADHAAR_VID",
        validator: Validator::Verhoeff,
        needs_context: false,
        field_only: false,
        keywords: &["vid", "virtual id"],
        fields: &["vid", "virtual_id", "aadhaar_vid", "vid_no", "vid_number"],
    },
    Builtin {
        name: "PAN",
        validator: Validator::None,
        needs_context: false,
        field_only: false,
        keywords: &["pan", "permanent account"],
        fields: &[
            "pan",
            "pan_no",
            "pan_number",
            "pan_card",
            "pan_card_no",
            "pan_card_number",
            "pan_id",
        ],
    },
    Builtin {
        name: "GSTIN",
        validator: Validator::GstinMod36,
        needs_context: false,
        field_only: false,
        keywords: &["gst", "goods and services"],
        fields: &[
            "gstin",
            "gst",
            "gst_no",
            "gst_number",
            "gstin_no",
            "gstin_number",
        ],
    },
    Builtin {
        name: "CARD",
        validator: Validator::Luhn,
        needs_context: false,
        field_only: false,
        keywords: &[
            "card",
            "credit",
            "debit",
            "visa",
            "mastercard",
            "rupay",
            "amex",
        ],
        fields: &[
            "card",
            "card_no",
            "card_number",
            "card_num",
            "cc_number",
            "cc_no",
            "credit_card",
            "credit_card_number",
            "debit_card",
            "debit_card_number",
        ],
    },
    Builtin {
        name: "IN_PHONE",
        validator: Validator::None,
        needs_context: false,
        field_only: false,
        keywords: &[
            "phone", "mobile", "mob", "cell", "tel", "call", "whatsapp", "contact", "msisdn",
        ],
        fields: &[
            "mobile",
            "mobile_no",
            "mobile_number",
            "mob",
            "mob_no",
            "phone",
            "phone_no",
            "phone_number",
            "msisdn",
            "contact",
            "contact_no",
            "contact_number",
            "tel",
            "telephone",
            "cell",
            "cellphone",
            "whatsapp",
            "whatsapp_no",
        ],
    },
    Builtin {
        name: "EMAIL",
        validator: Validator::None,
        needs_context: false,
        field_only: false,
        keywords: &["email", "e-mail", "mail"],
        fields: &["email", "email_id", "email_address", "mail", "mail_id"],
    },
    Builtin {
        name: "UPI_VPA",
        validator: Validator::None,
        needs_context: false,
        field_only: false,
        keywords: &["upi", "vpa"],
        fields: &[
            "upi",
            "upi_id",
            "vpa",
            "pa",
            "payee_vpa",
            "payer_vpa",
            "upi_address",
        ],
    },
    Builtin {
        name: "IFSC",
        validator: Validator::None,
        needs_context: false,
        field_only: false,
        keywords: &["ifsc"],
        fields: &["ifsc", "ifsc_code"],
    },
    Builtin {
        name: "PASSPORT",
        validator: Validator::None,
        needs_context: true,
        field_only: false,
        keywords: &["passport"],
        fields: &["passport", "passport_no", "passport_number", "passport_num"],
    },
    Builtin {
        name: "VOTER_ID",
        validator: Validator::None,
        needs_context: true,
        field_only: false,
        keywords: &["voter", "epic", "elector"],
        fields: &[
            "voter_id",
            "voter_id_no",
            "voter",
            "epic",
            "epic_no",
            "epic_number",
        ],
    },
    Builtin {
        name: "DRIVING_LICENCE",
        validator: Validator::None,
        needs_context: true,
        field_only: false,
        keywords: &["driving", "licence", "license", "dl no", "dl number"],
        fields: &[
            "dl",
            "dl_no",
            "dl_number",
            "driving_licence",
            "driving_license",
            "driving_licence_no",
            "driving_license_no",
            "licence_no",
            "license_no",
            "licence_number",
            "license_number",
        ],
    },
    Builtin {
        name: "ABHA",
        validator: Validator::None,
        needs_context: true,
        field_only: false,
        keywords: &["abha", "health id", "healthid", "ayushman", "abdm"],
        fields: &[
            "abha",
            "abha_no",
            "abha_number",
            "abha_id",
            "abha_address",
            "health_id",
            "health_id_number",
            "health_id_no",
        ],
    },
    Builtin {
        name: "BANK_ACCOUNT",
        validator: Validator::None,
        needs_context: true,
        field_only: false,
        keywords: &["a/c", "acct", "account", "acc no", "bank"],
        fields: &[
            "account_no",
            "acc_no",
            "account_number",
            "account_num",
            "acct_no",
            "acct_number",
            "bank_account",
            "bank_account_no",
            "bank_account_number",
            "beneficiary_account",
            "beneficiary_account_no",
        ],
    },
    Builtin {
        name: "DOB",
        validator: Validator::None,
        needs_context: false,
        field_only: true,
        keywords: &[],
        fields: &["dob", "date_of_birth", "birth_date", "birthday"],
    },
];

/// Known UPI PSP handles (lower case). A `local@handle` with one of these and
/// no dot after it is a UPI VPA rather than an e-mail. NPCI adds handles over
/// time; this list is data, not logic.
#[rustfmt::skip]
pub const UPI_HANDLES: &[&str] = &[
    "abfspay", "airtel", "apl", "aubank", "axisb", "axisbank", "axl", "bandhan", "barodampay",
    "boi", "cbin", "cboi", "centralbank", "cmsidfc", "cnrb", "csbpay", "dbs", "dcb", "dlb",
    "equitas", "fam", "fbl", "federal", "freecharge", "hdfcbank", "hdfcbankjd", "hsbc", "ibl",
    "icici", "idbi", "idbibank", "idfc", "idfcbank", "idfcfirst", "ikwik", "indianbank", "indus",
    "iob", "jio", "jupiteraxis", "kbl", "kotak", "kvb", "kvbank", "mahb", "naviaxis", "niyoicici",
    "okaxis", "okhdfcbank", "okicici", "oksbi", "paytm", "pingpay", "pnb", "pockets", "postbank",
    "psb", "pthdfc", "ptaxis", "ptsbi", "ptyes", "rajgovhdfcbank", "rbl", "sbi", "sc", "scb", "sib",
    "slice", "superyes", "tapicici", "timecosmos", "tjsb", "uco", "unionbank", "unionbankofindia",
    "upi", "utbi", "waaxis", "wahdfcbank", "waicici", "wasbi", "yapl", "ybl", "yesbank",
    "yesbankltd", "yespay", "zoicici",
];

/// ABHA address handles (production and sandbox).
const ABHA_HANDLES: &[&str] = &["abdm", "sbx"];

/// State/UT codes that start a driving licence number.
const DL_STATES: &[[u8; 2]] = &[
    *b"AN", *b"AP", *b"AR", *b"AS", *b"BR", *b"CG", *b"CH", *b"CT", *b"DD", *b"DL", *b"DN", *b"GA",
    *b"GJ", *b"HP", *b"HR", *b"JH", *b"JK", *b"KA", *b"KL", *b"LA", *b"LD", *b"MH", *b"ML", *b"MN",
    *b"MP", *b"MZ", *b"NL", *b"OD", *b"OR", *b"PB", *b"PY", *b"RJ", *b"SK", *b"TN", *b"TR", *b"TS",
    *b"UA", *b"UK", *b"UP", *b"WB",
];

// ---------------------------------------------------------------------------
// Detector
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Class {
    name: String,
    validator: Validator,
    needs_context: bool,
    field_only: bool,
    /// Lower-cased keywords.
    keywords: Vec<Box<[u8]>>,
    /// Bit set of bytes (both cases) that start a keyword.
    kw_first: [u64; 4],
    /// Every keyword starts with an ASCII letter.
    kw_alpha: bool,
}

impl Class {
    fn new(
        name: &str,
        validator: Validator,
        needs_context: bool,
        field_only: bool,
        keywords: &[&str],
    ) -> Class {
        let mut kw_first = [0u64; 4];
        let mut kws = Vec::new();
        for k in keywords {
            let k = k.trim().to_ascii_lowercase().into_bytes();
            if let Some(&f) = k.first() {
                for b in [f, f.to_ascii_uppercase()] {
                    kw_first[usize::from(b >> 6)] |= 1u64 << (b & 63);
                }
                kws.push(k.into_boxed_slice());
            }
        }
        let kw_alpha = kws
            .iter()
            .all(|k| k.first().is_some_and(u8::is_ascii_alphabetic));
        Class {
            name: name.to_string(),
            validator,
            needs_context,
            field_only,
            keywords: kws,
            kw_first,
            kw_alpha,
        }
    }
}

#[derive(Debug)]
struct Custom {
    set: RegexSet,
    /// Class id and regex, in `set` pattern order.
    regexes: Vec<(ClassId, Regex)>,
}

/// The detector: immutable class table plus compiled custom patterns.
/// Build once, share via `Arc`; `scan` takes `&self` (it is `Send + Sync`).
#[derive(Debug)]
pub struct Detector {
    classes: Vec<Class>,
    /// Normalised field name → class, sorted by name.
    fields: Vec<(Box<[u8]>, ClassId)>,
    /// Hash index over `fields` for per-call key lookups.
    field_index: FieldIndex,
    custom: Option<Custom>,
    max_len: usize,
}

impl Default for Detector {
    fn default() -> Self {
        Detector::builtin()
    }
}

impl Detector {
    /// A detector with all built-in classes and no custom ones.
    pub fn builtin() -> Detector {
        let mut d = Detector {
            classes: Vec::with_capacity(BUILTINS.len()),
            fields: Vec::new(),
            field_index: FieldIndex::default(),
            custom: None,
            max_len: BUILTIN_MAX_MATCH,
        };
        for (i, b) in BUILTINS.iter().enumerate() {
            let id = ClassId(i as u16);
            d.classes.push(Class::new(
                b.name,
                b.validator,
                b.needs_context,
                b.field_only,
                b.keywords,
            ));
            for f in b.fields {
                d.add_field(f, id);
            }
        }
        d.fields.sort();
        d.field_index = FieldIndex::build(&d.fields);
        d
    }

    /// Specs describing the built-in classes (their `pattern` is `None`:
    /// built-ins are matched by code, not by regex).
    pub fn builtin_specs() -> Vec<ClassSpec> {
        BUILTINS
            .iter()
            .map(|b| ClassSpec {
                name: b.name.to_string(),
                pattern: None,
                validator: b.validator,
                context_keywords: b.keywords.iter().map(|s| s.to_string()).collect(),
                needs_context: b.needs_context,
                field_names: b.fields.iter().map(|s| s.to_string()).collect(),
            })
            .collect()
    }

    /// Built-in classes plus `custom` ones (regex or field-name-only).
    ///
    /// Custom class names must be unique (case-insensitively) and must not
    /// reuse a built-in name.
    pub fn new(custom: &[ClassSpec]) -> Result<Detector, DetectError> {
        let mut d = Detector::builtin();
        let mut patterns = Vec::new();
        let mut regexes = Vec::new();
        for spec in custom {
            let name = spec.name.trim();
            if name.is_empty() {
                return Err(DetectError::EmptyName);
            }
            if d.classes.iter().any(|c| c.name.eq_ignore_ascii_case(name)) {
                return Err(DetectError::DuplicateClass(name.to_string()));
            }
            let id =
                ClassId(u16::try_from(d.classes.len()).map_err(|_| DetectError::TooManyClasses)?);
            let field_only = spec.pattern.is_none();
            if field_only && spec.field_names.iter().all(|f| f.trim().is_empty()) {
                return Err(DetectError::NothingToMatch(name.to_string()));
            }
            if let Some(p) = &spec.pattern {
                let re = Regex::new(p).map_err(|source| DetectError::InvalidPattern {
                    class: name.to_string(),
                    source,
                })?;
                let (min, max) = pattern_len_bounds(p);
                if min == Some(0) {
                    return Err(DetectError::EmptyMatch(name.to_string()));
                }
                d.max_len = d.max_len.max(max.unwrap_or(UNBOUNDED_CUSTOM_LEN));
                patterns.push(p.as_str());
                regexes.push((id, re));
            }
            let kws: Vec<&str> = spec.context_keywords.iter().map(String::as_str).collect();
            d.classes.push(Class::new(
                name,
                spec.validator,
                spec.needs_context,
                field_only,
                &kws,
            ));
            for f in &spec.field_names {
                d.add_field(f, id);
            }
        }
        if !patterns.is_empty() {
            let set = RegexSet::new(&patterns).map_err(|source| DetectError::InvalidPattern {
                class: "<custom set>".to_string(),
                source,
            })?;
            d.custom = Some(Custom { set, regexes });
        }
        d.fields.sort();
        d.fields.dedup();
        d.field_index = FieldIndex::build(&d.fields);
        Ok(d)
    }

    fn add_field(&mut self, name: &str, id: ClassId) {
        let mut n = Vec::with_capacity(name.len());
        for b in name.bytes() {
            if !is_key_sep(b) {
                n.push(b.to_ascii_lowercase());
            }
        }
        if !n.is_empty() {
            self.fields.push((n.into_boxed_slice(), id));
        }
    }

    /// Name of a class (`""` for an id this detector does not have).
    pub fn class_name(&self, id: ClassId) -> &str {
        self.classes
            .get(usize::from(id.0))
            .map_or("", |c| c.name.as_str())
    }

    /// Id of the class with exactly this name.
    pub fn class_id(&self, name: &str) -> Option<ClassId> {
        self.classes
            .iter()
            .position(|c| c.name == name)
            .map(|i| ClassId(i as u16))
    }

    /// All classes, built-in first, with their names.
    pub fn classes(&self) -> impl Iterator<Item = (ClassId, &str)> + '_ {
        self.classes
            .iter()
            .enumerate()
            .map(|(i, c)| (ClassId(i as u16), c.name.as_str()))
    }

    /// Longest possible match in bytes, separators and prefixes included (an
    /// e-mail address for the built-ins; custom patterns with an unbounded
    /// length count as 1024). A streaming caller holds back this many bytes
    /// (plus [`CONTEXT_WINDOW`] if keyword context must survive a cut).
    pub fn max_match_len(&self) -> usize {
        self.max_len
    }

    /// Scan one already-normalised text segment. `base` is the offset of
    /// `text[0]` in the decoded stream. `key` is the field name the text sits
    /// under (JSON key, form field, header name) if known: a matching field
    /// name raises confidence and enables the context-needing classes.
    ///
    /// Findings are appended to `out` in ascending offset order. The segment
    /// edges count as boundaries.
    pub fn scan(&self, text: &[u8], base: u64, key: Option<&[u8]>, out: &mut Vec<Finding>) {
        let first = out.len();
        let key = match key {
            Some(k) => self.match_key(k),
            None => KeyMatch::NONE,
        };
        let cx = Ctx { text, base, key };
        self.scan_builtin(&cx, out, true);
        let mut resort = false;
        if let Some(custom) = &self.custom {
            resort |= self.scan_custom(&cx, custom, out);
        }
        for &id in key.ids() {
            if self
                .classes
                .get(usize::from(id.0))
                .is_some_and(|c| c.field_only)
            {
                let (s, e) = trim_ascii(text);
                if s < e {
                    push(out, &cx, s, e, id, Confidence::Medium);
                    resort = true;
                }
            }
        }
        if resort {
            if let Some(tail) = out.get_mut(first..) {
                tail.sort_by_key(|f| (f.offset, f.len, f.class));
            }
        }
    }

    /// The built-in pass. `fast` enables [`skip_plain_token`]; tests turn it
    /// off to check that the shortcut never changes the result.
    #[inline]
    fn scan_builtin(&self, cx: &Ctx<'_>, out: &mut Vec<Finding>, fast: bool) {
        let text = cx.text;
        let mut pos = 0;
        while let Some(p) = next_trigger(text, pos) {
            pos = if text[p] == b'@' {
                self.at_sign(cx, p, out)
            } else if let Some(end) = skip_plain_token(text, p).filter(|_| fast) {
                end
            } else {
                self.digit_token(cx, p, out)
            };
        }
    }

    // -- context -----------------------------------------------------------

    /// Classes whose field names match `key`: the whole normalised key, or a
    /// suffix of it starting at a word boundary (`customer_mobile`,
    /// `payerVpa`) for names of three or more characters.
    fn match_key(&self, key: &[u8]) -> KeyMatch {
        // Every match ends where the key ends, and a key of three or more (normalised)
        // bytes only matches names at least that long: if no name ends with the key's last
        // three bytes, nothing matches. Most header names (`accept`, `traceparent`) stop
        // here, before the suffix hashing below.
        let mut tail = [0u8; 3];
        let mut have = 0;
        for &b in key.iter().rev() {
            if is_key_sep(b) {
                continue;
            }
            have += 1;
            tail[3 - have] = b.to_ascii_lowercase();
            if have == 3 {
                break;
            }
        }
        if have == 3 && !self.field_index.may_end_with(tail) {
            return KeyMatch::NONE;
        }
        let mut km = KeyMatch::NONE;
        let mut buf = [0u8; MAX_KEY];
        let mut len = 0;
        // Bit i: a word starts at normalised index i.
        let mut starts: u128 = 1;
        let mut boundary = false;
        let mut prev_lower = false;
        for &b in key {
            if is_key_sep(b) {
                boundary = true;
                prev_lower = false;
                continue;
            }
            if len == MAX_KEY {
                return KeyMatch::NONE;
            }
            let upper = b.is_ascii_uppercase();
            if len > 0 && (boundary || (upper && prev_lower)) {
                starts |= 1u128 << len;
            }
            boundary = false;
            prev_lower = b.is_ascii_lowercase() || b.is_ascii_digit();
            buf[len] = b.to_ascii_lowercase();
            len += 1;
        }
        // Hash from the end so every suffix's hash falls out of one pass.
        let mut h = 0u64;
        for i in (0..len).rev() {
            h = suffix_hash_step(h, buf[i]);
            let min = if i == 0 { 1 } else { 3 };
            if (starts >> i) & 1 == 1 && len - i >= min {
                for &id in self.field_index.get(h, &buf[i..len]) {
                    km.push(id);
                }
            }
        }
        km
    }

    /// Is one of `class`'s keywords in the window before `start`? A keyword
    /// must begin a word (not preceded by a letter, or a camelCase hump).
    fn keyword_before(&self, text: &[u8], start: usize, class: ClassId) -> bool {
        let Some(c) = self.classes.get(usize::from(class.0)) else {
            return false;
        };
        if c.keywords.is_empty() {
            return false;
        }
        let lo = start.saturating_sub(CONTEXT_WINDOW);
        let Some(win) = text.get(lo..start) else {
            return false;
        };
        let keyword_at = |i: usize| -> bool {
            let b = byte_at(text, i);
            c.kw_first[usize::from(b >> 6)] & (1u64 << (b & 63)) != 0
                && text.get(i..start).is_some_and(|rest| {
                    c.keywords
                        .iter()
                        .any(|k| rest.len() >= k.len() && rest[..k.len()].eq_ignore_ascii_case(k))
                })
        };
        if c.kw_alpha && lo >= 1 && win.len() == CONTEXT_WINDOW {
            // Visit only letters that begin a word: after a non-letter, or
            // an upper-case letter after a lower-case one (camelCase).
            let lower = |x: u64| (x & 0x2020_2020_2020_2020) << 2;
            let mut words = [0u64; CONTEXT_WINDOW / 8];
            let mut any = 0;
            for (j, w) in words.iter_mut().enumerate() {
                *w = load8(text, lo + 8 * j).unwrap_or(0);
                any |= letter_mask(*w);
            }
            if any == 0 {
                return false;
            }
            for (j, &w) in words.iter().enumerate() {
                let at = lo + 8 * j;
                let l = letter_mask(w);
                if l == 0 {
                    continue;
                }
                let wp = load8(text, at - 1).unwrap_or(0);
                let lp = letter_mask(wp);
                let mut m = (l & !lp) | (l & !lower(w) & lp & lower(wp) & HI);
                while m != 0 {
                    if keyword_at(at + (m.trailing_zeros() / 8) as usize) {
                        return true;
                    }
                    m &= m - 1;
                }
            }
            return false;
        }
        for (i, &b) in win.iter().enumerate() {
            let prev = if i > 0 {
                win[i - 1]
            } else {
                before(text, lo, 1)
            };
            let word_start = !prev.is_ascii_alphabetic()
                || (prev.is_ascii_lowercase() && b.is_ascii_uppercase());
            if word_start && keyword_at(lo + i) {
                return true;
            }
        }
        false
    }

    /// Picks the class for a span that fits `cands` (in priority order) and
    /// its confidence: a key-named class first, then a keyword-named one,
    /// then the first candidate that does not need context.
    fn choose(&self, cx: &Ctx<'_>, start: usize, cands: &[Cand]) -> Option<(ClassId, Confidence)> {
        if let Some(c) = cands.iter().find(|c| cx.key.has(c.class)) {
            return Some((c.class, c.base.raised()));
        }
        if let [only] = cands {
            if !only.needs_ctx && only.base == Confidence::High {
                return Some((only.class, only.base));
            }
        }
        if let Some(c) = cands
            .iter()
            .find(|c| self.keyword_before(cx.text, start, c.class))
        {
            return Some((c.class, c.base.raised()));
        }
        cands
            .iter()
            .find(|c| !c.needs_ctx)
            .map(|c| (c.class, c.base))
    }

    fn report(
        &self,
        cx: &Ctx<'_>,
        out: &mut Vec<Finding>,
        s: usize,
        e: usize,
        cands: &[Cand],
    ) -> bool {
        match self.choose(cx, s, cands) {
            Some((class, conf)) => {
                push(out, cx, s, e, class, conf);
                true
            }
            None => false,
        }
    }

    // -- digit-led tokens --------------------------------------------------

    /// `text[p]` is a digit at or after the previous token's end. Returns the
    /// position to resume scanning from (always > `p`).
    #[inline]
    fn digit_token(&self, cx: &Ctx<'_>, p: usize, out: &mut Vec<Finding>) -> usize {
        let t = cx.text;
        let (e, fwd_letters) = alnum_run_end(t, p + 1);
        let Some(s) = run_start(t, p) else {
            // Too many letters before the digit for any identifier.
            return e;
        };
        if fwd_letters || s < p {
            self.mixed_run(cx, s, e, out)
        } else {
            self.digit_run(cx, s, e, out)
        }
    }

    #[inline]
    fn digit_run(&self, cx: &Ctx<'_>, s: usize, e: usize, out: &mut Vec<Finding>) -> usize {
        let t = cx.text;
        let len = e - s;
        let nb = byte_at(t, e);
        // Every grouped shape continues with a group of at least 4 digits.
        if (nb == b' ' || nb == b'-')
            && matches!(len, 1 | 2 | 4 | 5 | 6)
            && (1..=4).all(|k| is_digit(byte_at(t, e + k)))
        {
            if let Some(end) = self.grouped(cx, s, e, out) {
                return end;
            }
        }
        let pb = before(t, s, 1);
        if (pb == b' ' || pb == b'-')
            && s >= 3
            && is_alpha(t[s - 2])
            && is_alpha(t[s - 3])
            && !is_alnum(before(t, s, 4))
        {
            if let Some(end) = self.try_dl(cx, s - 3, out) {
                return end;
            }
        }
        if (9..=19).contains(&len) {
            self.plain_digits(cx, s, e, out);
        }
        e
    }

    /// Space- or hyphen-grouped digit forms starting at the run `s..e0`.
    fn grouped(&self, cx: &Ctx<'_>, s: usize, e0: usize, out: &mut Vec<Finding>) -> Option<usize> {
        let t = cx.text;
        let mut g = [(0usize, 0usize); 5];
        let mut seps = [0u8; 4];
        g[0] = (s, e0);
        let mut k = 1;
        let mut e = e0;
        while k < g.len() {
            let sep = byte_at(t, e);
            if sep != b' ' && sep != b'-' {
                break;
            }
            let gs = e + 1;
            let mut ge = gs;
            while ge < t.len() && is_digit(t[ge]) && ge - gs < 19 {
                ge += 1;
            }
            if ge == gs || is_alnum(byte_at(t, ge)) {
                break;
            }
            g[k] = (gs, ge);
            seps[k - 1] = sep;
            k += 1;
            e = ge;
        }
        if k < 2 || foreign_prefix(t, s) {
            return None;
        }
        let plus = before(t, s, 1) == b'+';
        for &(lens, shape) in SHAPES {
            let m = lens.len();
            if m > k || lens.iter().zip(&g).any(|(&l, &(a, b))| b - a != l) {
                continue;
            }
            let inner = &seps[..m - 1];
            let first_sep = inner[0];
            let last_sep = inner[m - 2];
            let same = inner.iter().all(|&x| x == first_sep);
            let end = g[m - 1].1;
            let mut buf = [0u8; 19];
            let mut nd = 0;
            for &(a, b) in &g[..m] {
                for &c in &t[a..b] {
                    if nd < buf.len() {
                        buf[nd] = c;
                        nd += 1;
                    }
                }
            }
            let d = &buf[..nd];
            let mut cands = Cands::default();
            let mut start = s;
            match shape {
                Shape::Card | Shape::Card16 | Shape::Aadhaar => {
                    if plus || !same || !left_ok(t, s, first_sep) || !right_ok(t, end, first_sep) {
                        continue;
                    }
                    if shape != Shape::Aadhaar && card_valid(d) {
                        cands.push(ClassId::CARD, Confidence::High, false);
                    }
                    if shape != Shape::Card && aadhaar_like_valid(d) {
                        let class = if nd == 12 {
                            ClassId::AADHAAR
                        } else {
                            ClassId::AADHAAR_VID
                        };
                        cands.push(class, Confidence::High, false);
                    }
                }
                Shape::Abha => {
                    if plus
                        || !same
                        || first_sep != b'-'
                        || !left_ok(t, s, b'-')
                        || !right_ok(t, end, b'-')
                    {
                        continue;
                    }
                    cands.push(ClassId::ABHA, Confidence::High, false);
                }
                Shape::Phone91 | Shape::Phone0 | Shape::Phone => {
                    if !right_ok(t, end, last_sep) {
                        continue;
                    }
                    let national = match shape {
                        Shape::Phone91 if d.starts_with(b"91") => &d[2..],
                        Shape::Phone0 if d.starts_with(b"0") => &d[1..],
                        Shape::Phone => d,
                        _ => continue,
                    };
                    if !matches!(national.first(), Some(b'6'..=b'9')) {
                        continue;
                    }
                    let conf = if plus {
                        if shape != Shape::Phone91 || !left_ok_plus(t, s) {
                            continue;
                        }
                        start = s - 1;
                        Confidence::High
                    } else {
                        if !left_ok(t, s, first_sep) {
                            continue;
                        }
                        Confidence::Medium
                    };
                    cands.push(ClassId::IN_PHONE, conf, false);
                }
            }
            if self.report(cx, out, start, end, cands.as_slice()) {
                return Some(end);
            }
        }
        None
    }

    /// A run of 9 to 19 digits with nothing grouped around it.
    fn plain_digits(&self, cx: &Ctx<'_>, s: usize, e: usize, out: &mut Vec<Finding>) {
        let t = cx.text;
        if !right_ok(t, e, 0) {
            return;
        }
        let d = &t[s..e];
        let len = d.len();
        let mut cands = Cands::default();
        if before(t, s, 1) == b'+' {
            // After '+' only an Indian mobile with country code counts.
            if len == 12
                && d.starts_with(b"91")
                && matches!(d[2], b'6'..=b'9')
                && left_ok_plus(t, s)
            {
                cands.push(ClassId::IN_PHONE, Confidence::High, false);
                self.report(cx, out, s - 1, e, cands.as_slice());
            }
            return;
        }
        if !left_ok(t, s, 0) || foreign_prefix(t, s) {
            return;
        }
        match len {
            10 if matches!(d[0], b'6'..=b'9') => {
                cands.push(ClassId::IN_PHONE, Confidence::Medium, false);
            }
            11 if d[0] == b'0' && matches!(d[1], b'6'..=b'9') => {
                cands.push(ClassId::IN_PHONE, Confidence::Medium, false);
            }
            12 => {
                if aadhaar_like_valid(d) {
                    cands.push(ClassId::AADHAAR, Confidence::High, false);
                }
                if d.starts_with(b"91") && matches!(d[2], b'6'..=b'9') {
                    cands.push(ClassId::IN_PHONE, Confidence::Medium, false);
                }
            }
            _ => {}
        }
        if len >= 13 {
            if card_valid(d) {
                cands.push(ClassId::CARD, Confidence::High, false);
            }
            if len == 16 && aadhaar_like_valid(d) {
                cands.push(ClassId::AADHAAR_VID, Confidence::High, false);
            }
            if len == 14 {
                cands.push(ClassId::ABHA, Confidence::Low, true);
            }
        }
        if len <= 18 {
            cands.push(ClassId::BANK_ACCOUNT, Confidence::Low, true);
        }
        self.report(cx, out, s, e, cands.as_slice());
    }

    /// Driving licence starting with the state code at `i`.
    fn try_dl(&self, cx: &Ctx<'_>, i: usize, out: &mut Vec<Finding>) -> Option<usize> {
        let t = cx.text;
        let end = parse_dl(t, i)?;
        if !left_ok(t, i, 0) || !right_ok(t, end, 0) {
            return None;
        }
        let cands = [Cand {
            class: ClassId::DRIVING_LICENCE,
            base: Confidence::Low,
            needs_ctx: true,
        }];
        self.report(cx, out, i, end, &cands).then_some(end)
    }

    // -- letter+digit runs -------------------------------------------------

    fn mixed_run(&self, cx: &Ctx<'_>, s: usize, e: usize, out: &mut Vec<Finding>) -> usize {
        let t = cx.text;
        let r = &t[s..e];
        let mut cands = Cands::default();
        match r.len() {
            4 => {
                if is_alpha(r[0]) && is_alpha(r[1]) && is_digit(r[2]) && is_digit(r[3]) {
                    if let Some(end) = self.try_dl(cx, s, out) {
                        return end;
                    }
                }
                return e;
            }
            8 => {
                if is_alpha(r[0]) && r[1..].iter().all(|&b| is_digit(b)) {
                    cands.push(ClassId::PASSPORT, Confidence::Low, true);
                }
            }
            10 => {
                if pan_valid(r) {
                    cands.push(ClassId::PAN, Confidence::Medium, false);
                } else if voter_shape(r) {
                    cands.push(ClassId::VOTER_ID, Confidence::Low, true);
                }
            }
            11 => {
                if ifsc_valid(r) {
                    cands.push(ClassId::IFSC, Confidence::Medium, false);
                }
            }
            15 => {
                if gstin_valid(r) {
                    cands.push(ClassId::GSTIN, Confidence::High, false);
                } else if parse_dl(t, s) == Some(e) {
                    cands.push(ClassId::DRIVING_LICENCE, Confidence::Low, true);
                }
            }
            _ => return e,
        }
        if !cands.is_empty() && left_ok(t, s, 0) && right_ok(t, e, 0) {
            self.report(cx, out, s, e, cands.as_slice());
        }
        e
    }

    // -- '@' forms ---------------------------------------------------------

    /// E-mail, UPI VPA or ABHA address around the `@` at `p`.
    fn at_sign(&self, cx: &Ctx<'_>, p: usize, out: &mut Vec<Finding>) -> usize {
        let t = cx.text;
        let n = t.len();
        let next = p + 1;
        let mut ls = p;
        while ls > 0 && p - ls <= LOCAL_MAX && is_local(t[ls - 1]) {
            ls -= 1;
        }
        if p - ls > LOCAL_MAX {
            return next;
        }
        while ls < p && !is_alnum(t[ls]) {
            ls += 1;
        }
        if ls == p || t[p - 1] == b'.' {
            return next;
        }
        let mut de = next;
        while de < n && de - next <= DOMAIN_MAX && is_domain(t[de]) {
            de += 1;
        }
        if de - next > DOMAIN_MAX || matches!(byte_at(t, de), b'@' | b'_') {
            return next;
        }
        let mut dend = de;
        while dend > next && matches!(t[dend - 1], b'.' | b'-') {
            dend -= 1;
        }
        if dend == next {
            return next;
        }
        let local = &t[ls..p];
        let domain = &t[next..dend];
        let class = if domain.contains(&b'.') {
            email_domain_valid(domain).then_some(ClassId::EMAIL)
        } else if handle_in(domain, UPI_HANDLES) {
            upi_local_valid(local).then_some(ClassId::UPI_VPA)
        } else if handle_in(domain, ABHA_HANDLES) {
            abha_local_valid(local).then_some(ClassId::ABHA)
        } else {
            None
        };
        match class {
            Some(class) => {
                let cands = [Cand {
                    class,
                    base: Confidence::High,
                    needs_ctx: false,
                }];
                self.report(cx, out, ls, dend, &cands);
                dend
            }
            None => next,
        }
    }

    // -- custom classes ----------------------------------------------------

    fn scan_custom(&self, cx: &Ctx<'_>, custom: &Custom, out: &mut Vec<Finding>) -> bool {
        let hits = custom.set.matches(cx.text);
        if !hits.matched_any() {
            return false;
        }
        let mut any = false;
        for i in hits.iter() {
            let Some((id, re)) = custom.regexes.get(i) else {
                continue;
            };
            let Some(class) = self.classes.get(usize::from(id.0)) else {
                continue;
            };
            let base = if class.needs_context {
                Confidence::Low
            } else if class.validator == Validator::None {
                Confidence::Medium
            } else {
                Confidence::High
            };
            let cands = [Cand {
                class: *id,
                base,
                needs_ctx: class.needs_context,
            }];
            for m in re.find_iter(cx.text) {
                if m.is_empty() || !class.validator.check(m.as_bytes()) {
                    continue;
                }
                any |= self.report(cx, out, m.start(), m.end(), &cands);
            }
        }
        any
    }
}

// ---------------------------------------------------------------------------
// Scan helpers
// ---------------------------------------------------------------------------

/// Open-addressing hash index from normalised field name to classes.
#[derive(Debug, Default)]
struct FieldIndex {
    /// Distinct names, their suffix hash, and the classes they name.
    names: Vec<(Box<[u8]>, u64, Vec<ClassId>)>,
    /// Bit set of the (hashed) last three bytes of every name of three or more bytes.
    tails: Vec<u64>,
    /// `0` = empty, else index into `names` plus one. Power-of-two sized,
    /// at most a quarter full, so probing always ends.
    slots: Vec<u32>,
    shift: u32,
}

/// Rolling hash fed from the last byte backwards, so one pass over a key
/// yields the hash of every suffix.
#[inline]
fn suffix_hash_step(h: u64, b: u8) -> u64 {
    h.rotate_left(5) ^ u64::from(b)
}

/// Size of [`FieldIndex::tails`] in bits.
const TAIL_BITS: usize = 1 << 15;

#[inline]
fn tail_bit(t: [u8; 3]) -> usize {
    (usize::from(t[0]) * 961 + usize::from(t[1]) * 31 + usize::from(t[2])) % TAIL_BITS
}

#[inline]
fn slot_of(h: u64, shift: u32) -> usize {
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
}

impl FieldIndex {
    /// `fields` sorted by name.
    fn build(fields: &[(Box<[u8]>, ClassId)]) -> FieldIndex {
        let mut names: Vec<(Box<[u8]>, u64, Vec<ClassId>)> = Vec::new();
        for (n, id) in fields {
            match names.last_mut() {
                Some(last) if last.0 == *n => {
                    if !last.2.contains(id) {
                        last.2.push(*id);
                    }
                }
                _ => {
                    let h = n.iter().rev().fold(0, |h, &b| suffix_hash_step(h, b));
                    names.push((n.clone(), h, vec![*id]));
                }
            }
        }
        let bits = (names.len() * 4)
            .next_power_of_two()
            .trailing_zeros()
            .max(4);
        let mut slots = vec![0u32; 1 << bits];
        let shift = 64 - bits;
        let mask = slots.len() - 1;
        for (i, (_, h, _)) in names.iter().enumerate() {
            let mut s = slot_of(*h, shift);
            while slots[s & mask] != 0 {
                s += 1;
            }
            slots[s & mask] = u32::try_from(i + 1).unwrap_or(0);
        }
        let mut tails = vec![0u64; TAIL_BITS / 64];
        for (n, _, _) in &names {
            if let [.., a, b, c] = **n {
                let t = tail_bit([a, b, c]);
                tails[t / 64] |= 1 << (t % 64);
            }
        }
        FieldIndex {
            names,
            tails,
            slots,
            shift,
        }
    }

    /// Whether some name of three or more bytes ends with `tail` (false positives allowed).
    #[inline]
    fn may_end_with(&self, tail: [u8; 3]) -> bool {
        let t = tail_bit(tail);
        self.tails
            .get(t / 64)
            .is_some_and(|w| w & (1 << (t % 64)) != 0)
    }

    /// Classes named exactly `name`, whose suffix hash is `h`.
    #[inline]
    fn get(&self, h: u64, name: &[u8]) -> &[ClassId] {
        let mask = self.slots.len().wrapping_sub(1);
        let start = slot_of(h, self.shift);
        for s in start..start + self.slots.len() {
            let v = self.slots[s & mask] as usize;
            let Some((n, nh, ids)) = v.checked_sub(1).and_then(|i| self.names.get(i)) else {
                return &[];
            };
            if *nh == h && **n == *name {
                return ids;
            }
        }
        &[]
    }
}

struct Ctx<'a> {
    text: &'a [u8],
    base: u64,
    key: KeyMatch,
}

/// Classes named by the current key (at most 8).
#[derive(Clone, Copy)]
struct KeyMatch {
    ids: [ClassId; 8],
    n: usize,
}

impl KeyMatch {
    const NONE: KeyMatch = KeyMatch {
        ids: [ClassId(0); 8],
        n: 0,
    };

    fn ids(&self) -> &[ClassId] {
        &self.ids[..self.n.min(self.ids.len())]
    }

    #[inline]
    fn has(&self, id: ClassId) -> bool {
        self.n != 0 && self.ids().contains(&id)
    }

    fn push(&mut self, id: ClassId) {
        if self.n < self.ids.len() && !self.has(id) {
            self.ids[self.n] = id;
            self.n += 1;
        }
    }
}

#[derive(Clone, Copy)]
struct Cand {
    class: ClassId,
    base: Confidence,
    needs_ctx: bool,
}

/// Candidate classes for one span, in priority order.
struct Cands {
    a: [Cand; 4],
    n: usize,
}

impl Default for Cands {
    fn default() -> Self {
        Cands {
            a: [Cand {
                class: ClassId(0),
                base: Confidence::Low,
                needs_ctx: true,
            }; 4],
            n: 0,
        }
    }
}

impl Cands {
    fn push(&mut self, class: ClassId, base: Confidence, needs_ctx: bool) {
        if self.n < self.a.len() {
            self.a[self.n] = Cand {
                class,
                base,
                needs_ctx,
            };
            self.n += 1;
        }
    }

    fn as_slice(&self) -> &[Cand] {
        &self.a[..self.n.min(self.a.len())]
    }

    fn is_empty(&self) -> bool {
        self.n == 0
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// 15 or 19 digit card.
    Card,
    /// 16 digits: card or Aadhaar VID.
    Card16,
    /// 4-4-4 Aadhaar.
    Aadhaar,
    /// 2-4-4-4 hyphenated ABHA number.
    Abha,
    /// `91` then the national number.
    Phone91,
    /// Trunk `0` then the national number.
    Phone0,
    /// 5-5 national mobile number.
    Phone,
}

/// Grouped shapes, longest first.
const SHAPES: &[(&[usize], Shape)] = &[
    (&[4, 4, 4, 4, 3], Shape::Card),
    (&[4, 4, 4, 4], Shape::Card16),
    (&[4, 6, 5], Shape::Card),
    (&[4, 4, 4], Shape::Aadhaar),
    (&[2, 4, 4, 4], Shape::Abha),
    (&[2, 5, 5], Shape::Phone91),
    (&[2, 10], Shape::Phone91),
    (&[1, 5, 5], Shape::Phone0),
    (&[1, 10], Shape::Phone0),
    (&[6, 5], Shape::Phone0),
    (&[5, 5], Shape::Phone),
];

fn push(
    out: &mut Vec<Finding>,
    cx: &Ctx<'_>,
    s: usize,
    e: usize,
    class: ClassId,
    confidence: Confidence,
) {
    out.push(Finding {
        class,
        confidence,
        offset: cx.base.saturating_add(s as u64),
        len: u32::try_from(e.saturating_sub(s)).unwrap_or(u32::MAX),
    });
}

const C_DIGIT: u8 = 1;
const C_UPPER: u8 = 2;
const C_LOWER: u8 = 4;
const C_ALPHA: u8 = C_UPPER | C_LOWER;
const C_ALNUM: u8 = C_DIGIT | C_ALPHA;
/// `[A-Za-z0-9._%+-]`: e-mail local part.
const C_LOCAL: u8 = 8;
/// `[A-Za-z0-9.-]`: domain.
const C_DOMAIN: u8 = 16;
/// Group separators: space and hyphen.
const C_SEP: u8 = 32;

static CLASS: [u8; 256] = build_class_table();

const fn build_class_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        if b.is_ascii_digit() {
            c |= C_DIGIT | C_LOCAL | C_DOMAIN;
        } else if b.is_ascii_uppercase() {
            c |= C_UPPER | C_LOCAL | C_DOMAIN;
        } else if b.is_ascii_lowercase() {
            c |= C_LOWER | C_LOCAL | C_DOMAIN;
        } else if b == b'.' {
            c |= C_LOCAL | C_DOMAIN;
        } else if b == b'-' {
            c |= C_LOCAL | C_DOMAIN | C_SEP;
        } else if b == b' ' {
            c |= C_SEP;
        } else if b == b'_' || b == b'%' || b == b'+' {
            c |= C_LOCAL;
        }
        t[i] = c;
        i += 1;
    }
    t
}

#[inline]
fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}
#[inline]
fn is_alpha(b: u8) -> bool {
    CLASS[usize::from(b)] & C_ALPHA != 0
}
#[inline]
fn is_alnum(b: u8) -> bool {
    CLASS[usize::from(b)] & C_ALNUM != 0
}
#[inline]
fn is_local(b: u8) -> bool {
    CLASS[usize::from(b)] & C_LOCAL != 0
}
#[inline]
fn is_domain(b: u8) -> bool {
    CLASS[usize::from(b)] & C_DOMAIN != 0
}
#[inline]
fn is_key_sep(b: u8) -> bool {
    matches!(b, b'_' | b'-' | b'.' | b' ')
}

/// `t[i]`, or 0 (a non-token byte) past the end.
#[inline]
fn byte_at(t: &[u8], i: usize) -> u8 {
    t.get(i).copied().unwrap_or(0)
}

/// `t[i - k]`, or 0 before the start.
#[inline]
fn before(t: &[u8], i: usize, k: usize) -> u8 {
    match i.checked_sub(k) {
        Some(j) => byte_at(t, j),
        None => 0,
    }
}

/// Can an identifier start at `s` (`t[s]` alphanumeric, `t[s-1]` not)?
/// `sep` is the separator the identifier itself groups with (0 if none).
#[inline]
fn left_ok(t: &[u8], s: usize, sep: u8) -> bool {
    let b = before(t, s, 1);
    let bb = before(t, s, 2);
    match b {
        b'_' | b'@' | b'+' => false,
        b'-' => !is_alnum(bb),
        b'.' => !is_digit(bb),
        b' ' => !(sep == b' ' && is_digit(bb)),
        _ => true,
    }
}

/// Is the run at `s` the national part after a non-Indian country code
/// (`+44 `, `+1-`)? Such numbers are not Indian identifiers.
fn foreign_prefix(t: &[u8], s: usize) -> bool {
    if !matches!(before(t, s, 1), b' ' | b'-') {
        return false;
    }
    let end = s - 1;
    let mut i = end;
    while i > 0 && is_digit(t[i - 1]) && end - i < 4 {
        i -= 1;
    }
    (1..=3).contains(&(end - i)) && before(t, i, 1) == b'+' && &t[i..end] != b"91"
}

/// Left boundary for a match starting with the `+` at `s - 1`.
#[inline]
fn left_ok_plus(t: &[u8], s: usize) -> bool {
    s >= 1 && !is_alnum(before(t, s, 2)) && !matches!(before(t, s, 2), b'_' | b'@' | b'+')
}

/// Can an identifier end at `e` (`t[e-1]` alphanumeric, `t[e]` not)?
#[inline]
fn right_ok(t: &[u8], e: usize, sep: u8) -> bool {
    let b = byte_at(t, e);
    let bb = byte_at(t, e + 1);
    match b {
        b'_' | b'@' => false,
        b'-' | b'.' => !is_alnum(bb),
        b' ' => !(sep == b' ' && is_digit(bb)),
        _ => true,
    }
}

/// Position of the next byte in `[0-9@]` at or after `i`.
///
/// SWAR: 16 bytes per step; per-byte exact masks, so no false hits.
#[inline]
fn next_trigger(t: &[u8], mut i: usize) -> Option<usize> {
    while i + 16 <= t.len() {
        let (Some(a), Some(b)) = (load8(t, i), load8(t, i + 8)) else {
            break;
        };
        let ma = trigger_mask(a);
        let mb = trigger_mask(b);
        if ma | mb != 0 {
            let off = if ma != 0 {
                ma.trailing_zeros() / 8
            } else {
                8 + mb.trailing_zeros() / 8
            };
            return Some(i + off as usize);
        }
        i += 16;
    }
    while i < t.len() {
        let b = t[i];
        if b.is_ascii_digit() || b == b'@' {
            return Some(i);
        }
        i += 1;
    }
    None
}

const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `w` that is an ASCII digit.
#[inline]
fn digit_mask(w: u64) -> u64 {
    // Digits become 0..=9; (x & 0x7f) + 0x76 sets bit 7 iff x >= 10.
    let d = w ^ 0x3030_3030_3030_3030;
    !(d | ((d & LO7) + 0x7676_7676_7676_7676)) & HI
}

/// High bit set in each byte of `w` that is an ASCII letter.
#[inline]
fn letter_mask(w: u64) -> u64 {
    // Fold case, then 'a'..='z' (0x61..=0x7a) becomes 0..=25.
    let l = (w | 0x2020_2020_2020_2020) ^ 0x6060_6060_6060_6060;
    // l in 1..=26 <=> byte was a letter; exclude 0 (the '`' / '@' fold) and
    // high-bit bytes. Work on 7 bits to keep bytes independent.
    let l7 = l & LO7;
    let ge1 = (l7 + LO7) & HI; // l7 >= 1
    let le26 = !((l7 + 0x6565_6565_6565_6565) & HI) & HI; // l7 <= 26
    ge1 & le26 & !w & HI
}

/// High bit set in each byte of `w` that is an ASCII digit or `@`.
#[inline]
fn trigger_mask(w: u64) -> u64 {
    // '@' becomes 0; exact zero-byte test.
    let a = w ^ 0x4040_4040_4040_4040;
    let at = !(((a & LO7) + LO7) | a) & HI;
    digit_mask(w) | at
}

#[inline]
fn load8(t: &[u8], i: usize) -> Option<u64> {
    let mut a = [0u8; 8];
    a.copy_from_slice(t.get(i..i + 8)?);
    Some(u64::from_le_bytes(a))
}

/// End of the alphanumeric run that continues at `i`, and whether the part
/// from `i` on holds a letter.
#[inline]
fn alnum_run_end(t: &[u8], mut i: usize) -> (usize, bool) {
    let mut letters = false;
    while let Some(w) = load8(t, i) {
        let l = letter_mask(w);
        let non = !(digit_mask(w) | l) & HI;
        if non != 0 {
            let k = non.trailing_zeros();
            letters |= l & ((1u64 << k) - 1) != 0;
            return (i + (k / 8) as usize, letters);
        }
        letters |= l != 0;
        i += 8;
    }
    while i < t.len() && is_alnum(t[i]) {
        letters |= is_alpha(t[i]);
        i += 1;
    }
    (i, letters)
}

/// Fast exits for the digit at `p` that cannot start or join any
/// identifier; returns where to resume. Covers most numbers in ordinary
/// payloads: short isolated digit runs (counters, prices, time parts) and
/// runs hyphen-joined to a preceding digit or mixed token (date parts, UUID
/// groups), which the full path would reject by the boundary rules anyway.
#[inline]
fn skip_plain_token(t: &[u8], p: usize) -> Option<usize> {
    let w = load8(t, p)?;
    let non = !digit_mask(w) & HI;
    // Digits from p on within the word (8 when the word is all digits).
    let k = (non.trailing_zeros() / 8) as usize;
    let pb = before(t, p, 1);
    let prev = CLASS[usize::from(pb)];
    let next = CLASS[usize::from(byte_at(t, p + k))];
    // A pure digit run shorter than 8 with neither a letter nor a group
    // separator on either side: too short for a plain identifier and not
    // part of a grouped one. Evaluated without short-circuit branches.
    let isolated = (prev & (C_ALNUM | C_SEP) == 0) & (k < 8) & (next & (C_ALPHA | C_SEP) == 0);
    // A short run after `<digit><space>`, not continued by a hyphen: every
    // space-grouped shape starting here has a digit group with the same
    // separator before it, and a plain identifier needs 9+ digits.
    let after_group = (pb == b' ')
        & is_digit(before(t, p, 2))
        & (k < 8)
        & (next & C_ALPHA == 0)
        & (byte_at(t, p + k) != b'-');
    if isolated | after_group {
        return Some(p + k);
    }
    if pb == b'-' && is_alnum(before(t, p, 2)) {
        // `x-123…`: no identifier starts after a hyphen-joined token, except
        // a driving licence after a two-letter state code (`HR-06…`).
        let dl_head =
            is_alpha(before(t, p, 2)) && is_alpha(before(t, p, 3)) && !is_alnum(before(t, p, 4));
        if !dl_head {
            return Some(alnum_run_end(t, p + 1).0);
        }
    }
    None
}

/// Start of the alphanumeric run holding the digit at `p`, or `None` when
/// at least [`MAX_BACK`] alphanumerics precede it. Callers guarantee the
/// bytes between the previous token and `p` hold no digit.
#[inline]
fn run_start(t: &[u8], p: usize) -> Option<usize> {
    if let Some(w) = p.checked_sub(MAX_BACK).and_then(|q| load8(t, q)) {
        let non = !(digit_mask(w) | letter_mask(w)) & HI;
        if non == 0 {
            return None;
        }
        let last = (63 - non.leading_zeros()) / 8;
        return Some(p - MAX_BACK + last as usize + 1);
    }
    let mut s = p;
    while s > 0 && is_alnum(t[s - 1]) {
        s -= 1;
    }
    (p - s < MAX_BACK).then_some(s)
}

fn trim_ascii(t: &[u8]) -> (usize, usize) {
    let mut s = 0;
    let mut e = t.len();
    while s < e && t[s].is_ascii_whitespace() {
        s += 1;
    }
    while e > s && t[e - 1].is_ascii_whitespace() {
        e -= 1;
    }
    (s, e)
}

/// Longest/shortest match of a custom pattern, if bounded.
fn pattern_len_bounds(pattern: &str) -> (Option<usize>, Option<usize>) {
    let config = regex_automata::util::syntax::Config::new().utf8(false);
    match regex_automata::util::syntax::parse_with(pattern, &config) {
        Ok(hir) => (
            hir.properties().minimum_len(),
            hir.properties().maximum_len(),
        ),
        Err(_) => (None, None),
    }
}

// ---------------------------------------------------------------------------
// Shape checks and validators
// ---------------------------------------------------------------------------

const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// Verhoeff over digit values (0..=9) given last digit first.
fn verhoeff_valid(rev_digits: impl Iterator<Item = u8>) -> bool {
    let mut c = 0usize;
    for (i, d) in rev_digits.enumerate() {
        let d = usize::from(d.min(9));
        c = usize::from(VERHOEFF_D[c][usize::from(VERHOEFF_P[i % 8][d])]);
    }
    c == 0
}

/// Luhn over digit values (0..=9) given last digit first.
fn luhn_valid(rev_digits: impl Iterator<Item = u8>) -> bool {
    let mut sum = 0u32;
    for (i, d) in rev_digits.enumerate() {
        let mut v = u32::from(d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// ASCII digits → Verhoeff check (all bytes are digits).
fn verhoeff_digits(d: &[u8]) -> bool {
    verhoeff_valid(d.iter().rev().map(|b| b.wrapping_sub(b'0')))
}

/// Aadhaar / VID rules: first digit 2-9, not a palindrome, Verhoeff.
fn aadhaar_like_valid(d: &[u8]) -> bool {
    matches!(d.first(), Some(b'2'..=b'9')) && !d.iter().eq(d.iter().rev()) && verhoeff_digits(d)
}

/// Card: known network prefix for this length, then Luhn.
fn card_valid(d: &[u8]) -> bool {
    card_prefix_ok(d) && luhn_valid(d.iter().rev().map(|b| b.wrapping_sub(b'0')))
}

/// Leading `k` digits as a number (`d` holds at least `k` digits).
fn prefix_num(d: &[u8], k: usize) -> u32 {
    d.iter()
        .take(k)
        .fold(0u32, |acc, &b| acc * 10 + u32::from(b.wrapping_sub(b'0')))
}

/// IIN prefix table: Visa, Mastercard (incl. 2221-2720), Amex, Discover,
/// Diners, JCB, Maestro (5018, 5020, 5038, 5893, 56-58, 6304, 6759,
/// 6761-6763), RuPay (60, 65, 81, 82, 508, 353, 356). Bare `50` is not a
/// prefix: 14-digit account numbers such as HDFC's `50100…` start with it.
fn card_prefix_ok(d: &[u8]) -> bool {
    let len = d.len();
    if !(13..=19).contains(&len) {
        return false;
    }
    let p2 = prefix_num(d, 2);
    let p3 = prefix_num(d, 3);
    let p4 = prefix_num(d, 4);
    let p6 = prefix_num(d, 6);
    match p2 {
        40..=49 => matches!(len, 13 | 16 | 19),
        34 | 37 => len == 15,
        51..=55 => len == 16,
        22..=27 => (2221..=2720).contains(&p4) && len == 16,
        36 | 38 | 39 => len >= 14,
        30 => (300..=305).contains(&p3) && len >= 14,
        35 => ((3528..=3589).contains(&p4) || p3 == 353 || p3 == 356) && len >= 16,
        50 => matches!(p4, 5018 | 5020 | 5038) || (p3 == 508 && len == 16),
        58 if p4 == 5893 => true,
        56..=58 => len >= 16,
        60 => len >= 16,
        62 => (622_126..=622_925).contains(&p6) && len >= 16,
        63 => p4 == 6304,
        64 => p3 >= 644 && len >= 16,
        65 => len >= 16,
        67 => matches!(p4, 6759 | 6761..=6763),
        81 | 82 => len == 16,
        _ => false,
    }
}

/// Letters of `r` (where a letter is present) all upper or all lower case.
fn one_case(r: &[u8]) -> bool {
    let upper = r.iter().any(|b| b.is_ascii_uppercase());
    let lower = r.iter().any(|b| b.is_ascii_lowercase());
    !(upper && lower)
}

/// PAN: `AAAPA9999A`, holder type in ABCFGHJLPT, serial not 0000, one case.
fn pan_valid(r: &[u8]) -> bool {
    r.len() == 10
        && r[..5].iter().all(|&b| is_alpha(b))
        && r[5..9].iter().all(|&b| is_digit(b))
        && is_alpha(r[9])
        && one_case(r)
        && matches!(
            r[3].to_ascii_uppercase(),
            b'A' | b'B' | b'C' | b'F' | b'G' | b'H' | b'J' | b'L' | b'P' | b'T'
        )
        && &r[5..9] != b"0000"
}

/// Voter ID (EPIC): three letters (one case) and seven digits.
fn voter_shape(r: &[u8]) -> bool {
    r.len() == 10
        && r[..3].iter().all(|&b| is_alpha(b))
        && r[3..].iter().all(|&b| is_digit(b))
        && one_case(r)
}

/// IFSC: four letters, `0`, six alphanumerics; one case.
fn ifsc_valid(r: &[u8]) -> bool {
    r.len() == 11
        && r[..4].iter().all(|&b| is_alpha(b))
        && r[4] == b'0'
        && r[5..].iter().all(|&b| is_alnum(b))
        && one_case(r)
}

/// GSTIN: state code, PAN, entity char, `Z`, mod-36 check; one case.
fn gstin_valid(r: &[u8]) -> bool {
    if r.len() != 15 || !is_digit(r[0]) || !is_digit(r[1]) || !one_case(r) {
        return false;
    }
    let state = prefix_num(r, 2);
    let state_ok = matches!(state, 1..=38 | 97 | 99);
    state_ok
        && pan_valid(&r[2..12])
        && (matches!(r[12], b'1'..=b'9') || is_alpha(r[12]))
        && r[13].eq_ignore_ascii_case(&b'Z')
        && is_alnum(r[14])
        && gstin_check_valid(r)
}

fn base36(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' => Some(u32::from(b - b'0')),
        b'A'..=b'Z' => Some(u32::from(b - b'A') + 10),
        b'a'..=b'z' => Some(u32::from(b - b'a') + 10),
        _ => None,
    }
}

/// Expected check character (upper case) for a 14-character GSTIN body.
fn gstin_check_char(body: &[u8]) -> Option<u8> {
    const ALPH: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut total = 0u32;
    for (i, &b) in body.iter().enumerate() {
        let p = base36(b)? * if i % 2 == 0 { 1 } else { 2 };
        total += p / 36 + p % 36;
    }
    ALPH.get(((36 - total % 36) % 36) as usize).copied()
}

fn gstin_check_valid(r: &[u8]) -> bool {
    r.len() == 15 && gstin_check_char(&r[..14]).is_some_and(|c| c.eq_ignore_ascii_case(&r[14]))
}

/// `SS RR YYYY NNNNNNN` (optional single space/hyphen after SS, RR, YYYY)
/// starting at `i`; returns the end. State code from the table, year 19xx
/// or 20xx.
fn parse_dl(t: &[u8], i: usize) -> Option<usize> {
    let a = byte_at(t, i);
    let b = byte_at(t, i + 1);
    if !is_alpha(a) || !is_alpha(b) || a.is_ascii_uppercase() != b.is_ascii_uppercase() {
        return None;
    }
    let code = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
    if !DL_STATES.contains(&code) {
        return None;
    }
    let mut j = dl_sep(t, i + 2);
    j = digits_n(t, j, 2)?;
    j = dl_sep(t, j);
    let y = j;
    j = digits_n(t, j, 4)?;
    if !matches!(
        (byte_at(t, y), byte_at(t, y + 1)),
        (b'1', b'9') | (b'2', b'0')
    ) {
        return None;
    }
    j = dl_sep(t, j);
    j = digits_n(t, j, 7)?;
    (!is_alnum(byte_at(t, j))).then_some(j)
}

fn dl_sep(t: &[u8], j: usize) -> usize {
    if matches!(byte_at(t, j), b' ' | b'-') && is_digit(byte_at(t, j + 1)) {
        j + 1
    } else {
        j
    }
}

fn digits_n(t: &[u8], j: usize, n: usize) -> Option<usize> {
    (0..n).all(|k| is_digit(byte_at(t, j + k))).then_some(j + n)
}

/// Domain with at least two labels, LDH labels of 1..=63, alphabetic (or
/// punycode) TLD of two or more characters.
fn email_domain_valid(d: &[u8]) -> bool {
    let mut labels = 0;
    let mut tld: &[u8] = &[];
    for label in d.split(|&b| b == b'.') {
        if label.is_empty()
            || label.len() > 63
            || label.first() == Some(&b'-')
            || label.last() == Some(&b'-')
        {
            return false;
        }
        labels += 1;
        tld = label;
    }
    labels >= 2
        && tld.len() >= 2
        && (tld.iter().all(|&b| is_alpha(b))
            || tld.len() > 4 && tld[..4].eq_ignore_ascii_case(b"xn--"))
}

/// UPI local part: `[A-Za-z0-9._-]`, two or more, alphanumeric at both ends.
fn upi_local_valid(l: &[u8]) -> bool {
    l.len() >= 2
        && l.iter()
            .all(|&b| is_alnum(b) || matches!(b, b'.' | b'_' | b'-'))
        && l.first().is_some_and(|&b| is_alnum(b))
        && l.last().is_some_and(|&b| is_alnum(b))
}

/// ABHA address local part: `[A-Za-z0-9._]`, four or more, not starting
/// with a digit or dot and not ending with a dot; or the 14-digit default.
fn abha_local_valid(l: &[u8]) -> bool {
    if l.len() == 14 && l.iter().all(|&b| is_digit(b)) {
        return true;
    }
    l.len() >= 4
        && l.iter().all(|&b| is_alnum(b) || matches!(b, b'.' | b'_'))
        && l.first().is_some_and(|&b| is_alpha(b) || b == b'_')
        && l.last() != Some(&b'.')
}

fn handle_in(domain: &[u8], list: &[&str]) -> bool {
    list.iter()
        .any(|h| h.as_bytes().eq_ignore_ascii_case(domain))
}

#[cfg(test)]
mod tests {
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
}
