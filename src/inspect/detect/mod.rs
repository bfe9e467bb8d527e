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
//! `@`, hyphen-joined to another alphanumeric token (UUID groups, product
//! codes), or dot-joined to a digit (decimals, version numbers). For
//! space/hyphen grouped forms (`2345 6789 0124`) a neighbouring digit group
//! joined by the *same* separator rejects the match, so the tail of a
//! space-grouped card number is not an Aadhaar. Files are named by
//! identifiers, so a `.` and a letter after one (`ABCPE1234F.pdf`) ends it
//! (not for the context-needing classes), and a checksummed number may end in
//! a float's `.0` (`234123412346.0`; a phone only under a key naming phones).
//! A checksummed number, PAN or GSTIN joined by `_` or `-` to a word of
//! letters (`aadhaar_2345….jpg`, `pan_ABCPE1234F`) is reported only when that
//! word, or the key, names its class: `txn_2345…` and `ref-ABCPE…` are ids.
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

mod classes;
mod lex;
#[cfg(test)]
mod tests;
mod validate;

pub use classes::UPI_HANDLES;
use {classes::*, lex::*, validate::*};

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
                    // Also as a file names one (`2345 6789 0124.pdf`, `aadhaar_2345…`; not
                    // after `word-`, which the shortcut passes over for a short first group).
                    let strict_left = left_ok(t, s, first_sep);
                    let left = strict_left || (before(t, s, 1) == b'_' && word_joined(t, s));
                    let right = right_ok(t, end, first_sep) || ext_after(t, end);
                    if plus || !same || !left || !right {
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
                    if !strict_left {
                        cands.need_context();
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
                    if !right_ok(t, end, last_sep) && !ext_after(t, end) {
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
            return self.loose_digits(cx, s, e, out);
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
        if !left_ok(t, s, 0) {
            return self.loose_digits(cx, s, e, out);
        }
        if foreign_prefix(t, s) {
            return;
        }
        number_cands(d, true, &mut cands);
        if len == 14 {
            cands.push(ClassId::ABHA, Confidence::Low, true);
        }
        if len <= 18 {
            cands.push(ClassId::BANK_ACCOUNT, Confidence::Low, true);
        }
        self.report(cx, out, s, e, cands.as_slice());
    }

    /// [`Detector::plain_digits`] for a run whose boundaries are not both strict. A file
    /// extension after it admits all but the context-needing classes; a float's `.0` (see
    /// [`point_zero`]) the checksummed ones, and a phone under a key that names phones
    /// (`"mobile": 9876543210.0`), since a bare amount may read `7500000000.0`; a word
    /// joined before it (see [`word_joined`]) the checksummed ones, with context.
    #[cold]
    #[inline(never)]
    fn loose_digits(&self, cx: &Ctx<'_>, s: usize, e: usize, out: &mut Vec<Finding>) {
        let t = cx.text;
        let strict_right = right_ok(t, e, 0);
        let ext = !strict_right && ext_after(t, e);
        if !(strict_right || ext || point_zero(t, e)) || before(t, s, 1) == b'+' {
            return;
        }
        let strict_left = left_ok(t, s, 0);
        if !(strict_left || word_joined(t, s)) || foreign_prefix(t, s) {
            return;
        }
        let d = &t[s..e];
        let mut cands = Cands::default();
        let phone = strict_left && (strict_right || ext || cx.key.has(ClassId::IN_PHONE));
        number_cands(d, phone, &mut cands);
        if !strict_left {
            cands.need_context();
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
        if cands.is_empty() {
            return e;
        }
        if left_ok(t, s, 0) && right_ok(t, e, 0) {
            self.report(cx, out, s, e, cands.as_slice());
        } else if matches!(r.len(), 10 | 15) && !cands.as_slice().iter().any(|c| c.needs_ctx) {
            self.loose_mixed(cx, s, e, cands, out);
        }
        e
    }

    /// A PAN or GSTIN whose boundaries are not both strict: also as a file names it
    /// (`ABCPE1234F.pdf`), and with context after a word (`pan_ABCPE1234F`).
    #[cold]
    #[inline(never)]
    fn loose_mixed(
        &self,
        cx: &Ctx<'_>,
        s: usize,
        e: usize,
        mut cands: Cands,
        out: &mut Vec<Finding>,
    ) {
        let t = cx.text;
        let strict_left = left_ok(t, s, 0);
        if !strict_left {
            cands.need_context();
        }
        if (strict_left || word_joined(t, s)) && (right_ok(t, e, 0) || ext_after(t, e)) {
            self.report(cx, out, s, e, cands.as_slice());
        }
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

/// The classes a plain run of digits `d` may be by its length and check digits: a mobile
/// (with `phone`), Aadhaar, card, Virtual ID.
#[inline(always)]
fn number_cands(d: &[u8], phone: bool, cands: &mut Cands) {
    let len = d.len();
    match len {
        10 if phone && matches!(d[0], b'6'..=b'9') => {
            cands.push(ClassId::IN_PHONE, Confidence::Medium, false);
        }
        11 if phone && d[0] == b'0' && matches!(d[1], b'6'..=b'9') => {
            cands.push(ClassId::IN_PHONE, Confidence::Medium, false);
        }
        12 => {
            if aadhaar_like_valid(d) {
                cands.push(ClassId::AADHAAR, Confidence::High, false);
            }
            if phone && d.starts_with(b"91") && matches!(d[2], b'6'..=b'9') {
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
    }
}
