//! Request inspection: URL, headers and body -> findings (class, confidence, where, offset,
//! length; never the value). Streaming and chunk-proof: text is scanned with a hold-back
//! window so an identifier split across reads is found exactly once, whatever the split.
//! No sockets here; the proxy feeds bytes in and asks for the report.

use std::sync::Arc;

use http::HeaderMap;

pub mod decode;
pub mod detect;
mod fold;

use decode::{DecodeError, Limits, Pipeline, Segment};
use detect::{ClassId, Confidence, Detector, Finding};

/// Bodies up to this size are inspected whole before the first byte goes upstream.
pub const DEFAULT_BUFFER_LIMIT: usize = 64 * 1024;
/// Encoded (gzip, br, …) bodies are inspected whole up to this raw size; beyond it they are
/// uninspectable, because decoded offsets cannot be mapped back to the raw bytes to hold.
pub const DEFAULT_MAX_ENCODED_BODY: usize = 8 * 1024 * 1024;
/// Raw bytes held back while streaming a large identity body: the longest raw spelling of
/// the longest identifier (JSON `\uXXXX` escapes are 6 bytes a character) plus one base64
/// block of 4,096 characters (a run is decoded a block at a time; a percent-escaped run
/// likewise) plus the decoder's own small buffers.
pub const DEFAULT_HOLD_BACK: usize = 16 * 1024;
/// The hold-back for a body whose text may be spelled in escapes (JSON, HTML and XML,
/// multipart): a block of base64 or percent-escaped text is read before it is decoded (at
/// most 5,120 characters, with a percent run's look-back), and spelled in `\uXXXX` escapes
/// (or `&#x41;` references) it spans 30 KiB raw; plus the longest identifier so spelled
/// and the scanner's carry. Markup's held inline tags (at most 4 KiB and one 512-byte tag
/// behind the text) hold no such block, and fit in what is left.
pub const JSON_HOLD_BACK: usize = 40 * 1024;
/// Findings kept per request for explanations (counts are always exact).
pub const MAX_ITEMS: usize = 256;

/// One data class seen in the request, with the highest confidence seen for it: what the
/// policy decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSeen {
    /// Index into the class table the policy was compiled against.
    pub class: u16,
    /// Highest confidence among its findings.
    pub confidence: Confidence,
}

/// Where in the request a finding was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    /// Path or query string.
    Url,
    /// A header (cookies included).
    Header,
    /// The body.
    Body,
}

impl Location {
    /// Label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Location::Url => "url",
            Location::Header => "header",
            Location::Body => "body",
        }
    }
}

/// One finding with its location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// Class.
    pub class: ClassId,
    /// Confidence.
    pub confidence: Confidence,
    /// Where.
    pub location: Location,
    /// Offset in that location's decoded stream.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
}

/// Keyed fingerprints of detected values per class kept in a report: enough to correlate
/// repeats, bounded so a body full of identifiers cannot grow the audit record without end.
pub const MAX_FINGERPRINTS_PER_CLASS: usize = 8;

/// Turns a detected value into a keyed fingerprint (`class`, normalised value). The key
/// stays with the caller; the inspector only ever hands values to this function.
/// `(class name, normalised value) -> fingerprint`.
pub type FingerprintFn = Arc<dyn Fn(&str, &[u8]) -> String + Send + Sync>;

/// A fingerprint function and the detector whose class names it is given.
#[derive(Clone)]
pub struct Fingerprints(pub FingerprintFn, pub Arc<Detector>);

impl std::fmt::Debug for Fingerprints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprints(..)")
    }
}

/// Everything found in one request.
#[derive(Debug, Default, Clone)]
pub struct Report {
    items: Vec<Item>,
    counts: Vec<(ClassId, Location, u32)>,
    seen: Vec<DataSeen>,
    changed: bool,
    fingerprinter: Option<Fingerprints>,
    prints: Vec<(ClassId, String)>,
}

impl Report {
    /// A report that also keeps keyed fingerprints of what it finds.
    pub fn with_fingerprints(f: Fingerprints) -> Report {
        Report {
            fingerprinter: Some(f),
            ..Report::default()
        }
    }

    /// Fingerprints kept for `class` (at most `MAX_FINGERPRINTS_PER_CLASS`, distinct).
    pub fn fingerprints(&self, class: ClassId) -> impl Iterator<Item = &str> {
        self.prints
            .iter()
            .filter(move |(c, _)| *c == class)
            .map(|(_, p)| p.as_str())
    }

    fn add_value(&mut self, f: &Finding, location: Location, text: &[u8], base: u64) {
        let start = usize::try_from(f.offset.saturating_sub(base)).unwrap_or(usize::MAX);
        let value = text.get(start..start.saturating_add(f.len as usize));
        self.add_found(f, location, value);
    }

    /// [`Report::add_value`] with the matched bytes (as the detector read them) at hand.
    fn add_found(&mut self, f: &Finding, location: Location, value: Option<&[u8]>) {
        if let Some(fp) = &self.fingerprinter {
            let kept = self.prints.iter().filter(|(c, _)| *c == f.class).count();
            if let (true, Some(value)) = (kept < MAX_FINGERPRINTS_PER_CLASS, value) {
                // Spelling must not matter: `2345 6789 0124` and `234567890124` correlate.
                let norm: Vec<u8> = value
                    .iter()
                    .filter(|b| b.is_ascii_alphanumeric() || **b == b'@' || **b == b'.')
                    .map(u8::to_ascii_lowercase)
                    .collect();
                let print = (fp.0)(fp.1.class_name(f.class), &norm);
                if !self
                    .prints
                    .iter()
                    .any(|(c, p)| *c == f.class && *p == print)
                {
                    self.prints.push((f.class, print));
                }
            }
        }
        self.add(f, location);
    }

    fn add(&mut self, f: &Finding, location: Location) {
        if self.items.len() < MAX_ITEMS {
            self.items.push(Item {
                class: f.class,
                confidence: f.confidence,
                location,
                offset: f.offset,
                len: f.len,
            });
        }
        match self
            .counts
            .iter_mut()
            .find(|(c, l, _)| *c == f.class && *l == location)
        {
            Some((_, _, n)) => *n += 1,
            None => self.counts.push((f.class, location, 1)),
        }
        let conf = f.confidence;
        match self.seen.iter_mut().find(|s| s.class == f.class.0) {
            Some(s) if s.confidence >= conf => {}
            Some(s) => {
                s.confidence = conf;
                self.changed = true;
            }
            None => {
                self.seen.push(DataSeen {
                    class: f.class.0,
                    confidence: conf,
                });
                self.changed = true;
            }
        }
    }

    /// Classes seen with their best confidence, for `policy::decide`.
    pub fn seen(&self) -> &[DataSeen] {
        &self.seen
    }

    /// Findings kept (at most `MAX_ITEMS`).
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Exact counts per class and location.
    pub fn counts(&self) -> &[(ClassId, Location, u32)] {
        &self.counts
    }

    /// Whether anything new appeared since the last call (then resets).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Names of the classes found, sorted.
    pub fn class_names(&self, detector: &Detector) -> Vec<String> {
        let mut v: Vec<String> = self
            .seen
            .iter()
            .map(|s| detector.class_name(ClassId(s.class)).to_owned())
            .collect();
        v.sort();
        v
    }
}

/// Scans a stream of normalised segments. Text under one key is kept contiguous; matches
/// ending in the last `hold` bytes are left for the next pass (more text may extend or
/// disqualify them), so every chunking yields the same findings.
struct SegmentScanner {
    buf: Vec<u8>,
    base: u64,
    /// Key of the text in `buf` (reused, so a new key costs no allocation).
    key: Vec<u8>,
    keyed: bool,
    finalized: u64,
    hold: usize,
    keep: usize,
    /// `buf` is scanned (then trimmed) once it reaches this length.
    sync_at: usize,
    /// Set when the detector has only the built-in classes (see [`Shortcuts`]).
    shortcuts: Option<Arc<Shortcuts>>,
    /// With `shortcuts`: what each key seen so far means to the detector.
    keys: KeyMemo,
    found: Vec<Finding>,
    /// The text scanned last, folded (see [`fold`]), when folding changed it.
    folded: fold::Folded,
}

impl SegmentScanner {
    fn new(detector: &Detector, shortcuts: Option<Arc<Shortcuts>>) -> SegmentScanner {
        let hold = detector.max_match_len() + 2;
        // A match may be up to three times longer before folding (digits of an Indian
        // script are three bytes each): the tail kept for the next scan holds one whole.
        let keep = hold + 3 * detector.max_match_len() + detect::CONTEXT_WINDOW + 8;
        SegmentScanner {
            buf: Vec::new(),
            base: 0,
            key: Vec::new(),
            keyed: false,
            finalized: 0,
            hold,
            keep,
            sync_at: keep + hold + 16 * 1024,
            shortcuts,
            keys: KeyMemo::default(),
            found: Vec::new(),
            folded: fold::Folded::default(),
        }
    }

    fn key(&self) -> Option<&[u8]> {
        self.keyed.then_some(self.key.as_slice())
    }

    /// Takes the next segment. `run_ends`: the segment is the last of its run of same-key
    /// text (the next one has another key), as the pipeline reports it.
    fn push(
        &mut self,
        det: &Detector,
        seg: &Segment<'_>,
        run_ends: bool,
        report: &mut Report,
        loc: Location,
    ) {
        let contiguous = seg.offset == self.base + self.buf.len() as u64;
        let new_run = !contiguous || seg.key != self.key();
        if run_ends && (new_run || self.buf.is_empty()) && seg.text.len() < self.sync_at {
            // A whole run in one segment: scanning it in place is what copying it into
            // `buf` and flushing at the next key would do (a run this short is never
            // synced). `buf` is left empty with `base == finalized`, where its key does
            // not matter.
            self.flush(det, report, loc);
            let end = seg.offset + seg.text.len() as u64;
            self.finalized = seg.offset;
            self.scan_text(det, seg.text, seg.offset, seg.key, report, loc, end);
            self.base = end;
            self.finalized = end;
            return;
        }
        if new_run {
            self.flush(det, report, loc);
            self.base = seg.offset;
            self.finalized = seg.offset;
            self.keyed = seg.key.is_some();
            self.key.clear();
            self.key.extend_from_slice(seg.key.unwrap_or_default());
        }
        if seg.text.len() >= self.sync_at {
            self.push_in_place(det, seg.text, report, loc);
            return;
        }
        self.buf.extend_from_slice(seg.text);
        if self.buf.len() >= self.sync_at {
            self.sync(det, report, loc);
        }
    }

    /// What appending `text` to the current run and syncing does, without copying all of
    /// `text` into `buf` (a large body arrives in frames of tens of KiB, and the copy cost
    /// as much as a third of the scan). The run's carried tail is scanned with the first
    /// `keep` bytes of `text`; then `buf` holds exactly those bytes, so it is a prefix of
    /// `text`, and `text` is scanned where it lies. Only the last `keep` bytes are kept.
    fn push_in_place(&mut self, det: &Detector, text: &[u8], report: &mut Report, loc: Location) {
        let start = self.base + self.buf.len() as u64;
        if !self.buf.is_empty() {
            self.buf
                .extend_from_slice(text.get(..self.keep).unwrap_or(text));
            self.sync(det, report, loc);
            // `sync` cut `buf` to its last `keep` bytes: the ones just appended.
            debug_assert_eq!(self.base, start);
        }
        let end = start + text.len() as u64;
        let limit = end.saturating_sub(self.hold as u64).max(self.finalized);
        let key = std::mem::take(&mut self.key);
        let keyed = self.keyed.then_some(key.as_slice());
        self.scan_text(det, text, start, keyed, report, loc, limit);
        self.key = key;
        self.finalized = limit;
        let cut = text.len().saturating_sub(self.keep);
        self.buf.clear();
        self.buf
            .extend_from_slice(text.get(cut..).unwrap_or_default());
        self.base = start + cut as u64;
    }

    /// Finalises everything except the hold window.
    fn sync(&mut self, det: &Detector, report: &mut Report, loc: Location) {
        if self.buf.len() <= self.hold {
            return;
        }
        let limit = self.base + (self.buf.len() - self.hold) as u64;
        self.scan(det, report, loc, limit);
        self.finalized = limit;
        if self.buf.len() > self.keep {
            let cut = self.buf.len() - self.keep;
            self.buf.drain(..cut);
            self.base += cut as u64;
        }
    }

    fn flush(&mut self, det: &Detector, report: &mut Report, loc: Location) {
        if !self.buf.is_empty() {
            let end = self.base + self.buf.len() as u64;
            self.scan(det, report, loc, end);
            self.finalized = end;
            self.base = end;
            self.buf.clear();
        }
    }

    fn scan(&mut self, det: &Detector, report: &mut Report, loc: Location, limit: u64) {
        let buf = std::mem::take(&mut self.buf);
        let key = std::mem::take(&mut self.key);
        let keyed = self.keyed.then_some(key.as_slice());
        self.scan_text(det, &buf, self.base, keyed, report, loc, limit);
        self.buf = buf;
        self.key = key;
    }

    /// Reports the findings in `text` (at stream offset `base`) that end after
    /// `self.finalized` and at or before `limit`.
    #[allow(clippy::too_many_arguments)]
    fn scan_text(
        &mut self,
        det: &Detector,
        text: &[u8],
        base: u64,
        key: Option<&[u8]>,
        report: &mut Report,
        loc: Location,
        limit: u64,
    ) {
        let mut key = key;
        // Whether `text` has a byte that is not ASCII: known from the trigger check with
        // shortcuts, looked for below without.
        let mut may_fold = None;
        // Set when only text with a trigger can hold a match.
        let mut needs_trigger = false;
        let mut trigger = true;
        if self.shortcuts.is_some() {
            let info = key.map(|k| self.key_info(det, k)).unwrap_or_default();
            // Without a digit or `@` only a field-only class, named by the key, can match;
            // text that is not all ASCII may fold to one.
            let wide;
            (trigger, wide) = triggers(text);
            needs_trigger = !info.field_only;
            if needs_trigger && !trigger && !wide {
                return;
            }
            may_fold = Some(wide);
            // A key naming no class is no key at all to the detector, which then need not
            // look it up (per call, the larger part of its cost on short values).
            if !info.named {
                key = None;
            }
        }
        let SegmentScanner {
            found,
            folded,
            finalized,
            ..
        } = self;
        let may_fold = may_fold.unwrap_or_else(|| fold::may_fold(text));
        if !(may_fold && folded.fold(text)) {
            if needs_trigger && !trigger {
                return;
            }
            found.clear();
            det.scan(text, base, key, found);
            for f in found.iter() {
                if f.end() > *finalized && f.end() <= limit {
                    report.add_value(f, loc, text, base);
                }
            }
            return;
        }
        // The folded copy is scanned; each finding is placed where its bytes are in `text`.
        if needs_trigger && !triggers(&folded.text).0 {
            return;
        }
        found.clear();
        det.scan(&folded.text, 0, key, found);
        for f in found.iter() {
            let (start, end) = (f.offset as usize, f.end() as usize);
            let (from, to) = (folded.original(start), folded.original(end));
            let placed = Finding {
                offset: base + from as u64,
                len: u32::try_from(to - from).unwrap_or(u32::MAX),
                ..*f
            };
            if placed.end() > *finalized && placed.end() <= limit {
                report.add_found(&placed, loc, folded.text.get(start..end));
            }
        }
    }
}

impl SegmentScanner {
    /// What `key` means to the detector, remembered per key (bodies repeat a few keys).
    fn key_info(&mut self, det: &Detector, key: &[u8]) -> KeyInfo {
        if let Some(info) = self.keys.get(key) {
            return info;
        }
        let named = self.shortcuts.as_ref().is_none_or(|s| s.may_name(key));
        let field_only = named && {
            // Text without a digit or `@` matches only a field-only class named by the key.
            self.found.clear();
            det.scan(b"x", 0, Some(key), &mut self.found);
            !self.found.is_empty()
        };
        let info = KeyInfo { named, field_only };
        self.keys.put(key, info);
        info
    }
}

/// What a key means to a built-in-only detector.
#[derive(Clone, Copy, Default)]
struct KeyInfo {
    /// The key may name a class (when false, scanning under it is scanning under no key).
    named: bool,
    /// Any non-blank text under the key is a finding of a field-only class.
    field_only: bool,
}

/// Memo of [`KeyInfo`] per key: a small two-way set-associative table (a body repeats a
/// few keys; a body with endless distinct keys just recomputes). It is consulted for
/// every keyed segment, so a lookup must cost less than the detector's own key matching:
/// keys are told apart by length and two words loaded from their ends, which identify a
/// key of up to 16 bytes exactly; only longer keys are compared whole.
#[derive(Default)]
struct KeyMemo {
    slots: Vec<KeySlot>,
}

#[derive(Clone, Default)]
struct KeySlot {
    used: bool,
    len: usize,
    words: (u64, u64),
    /// The whole key, when longer than 16 bytes.
    long: Vec<u8>,
    info: KeyInfo,
}

impl KeyMemo {
    const WAYS: usize = 2;
    const SETS: usize = 128;

    /// Two words that, with the length, identify a key of up to 16 bytes.
    fn words(key: &[u8]) -> (u64, u64) {
        // Fixed-size loads (a variable-length copy would be a `memcpy` call).
        let w8 = |at: usize| {
            key.get(at..at + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_le_bytes)
        };
        let w4 = |at: usize| {
            key.get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map_or(0, |b| u64::from(u32::from_le_bytes(b)))
        };
        let n = key.len();
        match n {
            8.. => (w8(0), w8(n - 8)),
            4..=7 => (w4(0), w4(n - 4)),
            _ => (key.iter().fold(0, |w, &b| w << 8 | u64::from(b)), 0),
        }
    }

    fn set(len: usize, words: (u64, u64)) -> usize {
        let h = (words.0 ^ (len as u64))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(words.1.wrapping_mul(0xc2b2_ae3d_27d4_eb4f));
        (h >> 32) as usize % Self::SETS * Self::WAYS
    }

    fn get(&self, key: &[u8]) -> Option<KeyInfo> {
        let words = Self::words(key);
        let set = Self::set(key.len(), words);
        self.slots
            .get(set..set + Self::WAYS)?
            .iter()
            .find(|s| {
                s.used
                    && s.len == key.len()
                    && s.words == words
                    && (key.len() <= 16 || s.long == key)
            })
            .map(|s| s.info)
    }

    fn put(&mut self, key: &[u8], info: KeyInfo) {
        if self.slots.is_empty() {
            self.slots = vec![KeySlot::default(); Self::SETS * Self::WAYS];
        }
        let words = Self::words(key);
        let set = Self::set(key.len(), words);
        let Some(ways) = self.slots.get_mut(set..set + Self::WAYS) else {
            return;
        };
        // The newest key goes first; the older one moves over (the oldest drops out).
        ways.rotate_right(1);
        if let Some(slot) = ways.first_mut() {
            slot.used = true;
            slot.len = key.len();
            slot.words = words;
            slot.long.clear();
            if key.len() > 16 {
                slot.long.extend_from_slice(key);
            }
            slot.info = info;
        }
    }
}

/// Facts about a detector with only the built-in classes that let the scanner skip work
/// without changing a finding (`detect.rs` documents the first; the second follows from
/// `Detector::scan`, which uses a key only through the classes whose field names it
/// matches):
///
/// * every built-in identifier contains an ASCII digit or an `@`, so text without one
///   can only be a finding of a field-only class named by its key;
/// * a key matches a field name only if, normalised like field names (ASCII lower case,
///   without `_`, `-`, `.` and spaces), it ends with that normalised name; a key ending
///   with none names no class, and scanning under it is scanning under no key.
struct Shortcuts {
    /// Normalised field names of the built-in classes.
    fields: Vec<Vec<u8>>,
}

impl Shortcuts {
    /// `Some` when `det` has exactly the built-in classes.
    fn new(det: &Detector) -> Option<Shortcuts> {
        let builtin = Detector::builtin_specs();
        let same = det.classes().count() == builtin.len()
            && det
                .classes()
                .zip(&builtin)
                .all(|((_, name), spec)| name == spec.name);
        if !same {
            return None;
        }
        let mut fields: Vec<Vec<u8>> = builtin
            .iter()
            .flat_map(|spec| spec.field_names.iter())
            .map(|f| normalise_key(f.as_bytes()))
            .filter(|f| !f.is_empty())
            .collect();
        fields.sort();
        fields.dedup();
        Some(Shortcuts { fields })
    }

    /// Whether `key` may name a class (over-approximates the detector's own matching).
    fn may_name(&self, key: &[u8]) -> bool {
        let key = normalise_key(key);
        self.fields.iter().any(|f| key.ends_with(f))
    }
}

/// A key or field name as the detector compares them.
fn normalise_key(key: &[u8]) -> Vec<u8> {
    key.iter()
        .filter(|b| !matches!(b, b'_' | b'-' | b'.' | b' '))
        .map(u8::to_ascii_lowercase)
        .collect()
}

/// Whether `text` holds a byte that can start a built-in identifier (every built-in
/// identifier contains an ASCII digit or an `@`, see the [`detect`] module docs), and
/// whether it holds a byte that is not ASCII (so that it may fold to one, see [`fold`]).
fn triggers(text: &[u8]) -> (bool, bool) {
    // Long text: a branch-free OR over 64-byte blocks, which the compiler vectorises (16
    // bytes per SSE2 compare). This runs over every byte of every body, often twice (raw
    // text and decoded base64 runs). Short values (most JSON values): eight bytes per step.
    // Text with a trigger is scanned anyway, and is looked at again for the second answer.
    let hit = |b: u8| (b.wrapping_sub(b'0') < 10) | (b == b'@');
    let mut wide = 0u8;
    let mut blocks = text.chunks_exact(64);
    for block in &mut blocks {
        let (h, w) = block
            .iter()
            .fold((false, 0u8), |(h, w), &b| (h | hit(b), w | b));
        if h {
            return (true, fold::may_fold(text));
        }
        wide |= w;
    }
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Non-zero iff some byte of `x` is below `n` (n <= 128).
    let below = |x: u64, n: u64| x.wrapping_sub(LO * n) & !x & HI;
    let mut words = blocks.remainder().chunks_exact(8);
    for chunk in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let w = u64::from_le_bytes(w);
        // A digit is a byte whose xor with b'0' is below 10; `@` xors with itself to 0.
        if below(w ^ (LO * u64::from(b'0')), 10) | below(w ^ (LO * u64::from(b'@')), 1) != 0 {
            return (true, fold::may_fold(text));
        }
        if w & HI != 0 {
            wide = 0x80;
        }
    }
    let tail = words.remainder();
    if tail.iter().any(|&b| hit(b)) {
        return (true, fold::may_fold(text));
    }
    (false, (wide | tail.iter().fold(0, |a, &b| a | b)) >= 0x80)
}

/// Inspection settings plus the detector: built once, shared by every request.
pub struct Inspector {
    detector: Arc<Detector>,
    limits: Limits,
    /// Bodies up to this size are buffered and inspected whole.
    pub buffer_limit: usize,
    /// Encoded bodies are inspected whole up to this size.
    pub max_encoded_body: usize,
    /// Raw bytes held back while streaming.
    pub hold_back: usize,
    /// See [`Shortcuts`]; worked out once here rather than per body.
    shortcuts: Option<Arc<Shortcuts>>,
}

impl Inspector {
    /// An inspector with the given detector and default limits.
    pub fn new(detector: Arc<Detector>) -> Inspector {
        Inspector {
            shortcuts: Shortcuts::new(&detector).map(Arc::new),
            detector,
            limits: Limits::default(),
            buffer_limit: DEFAULT_BUFFER_LIMIT,
            max_encoded_body: DEFAULT_MAX_ENCODED_BODY,
            hold_back: DEFAULT_HOLD_BACK,
        }
    }

    /// Sets the most bytes of one body inspected: the body's size, or for a content-encoded
    /// body what it decodes to. A larger body is uninspectable.
    pub fn with_max_body_bytes(mut self, n: usize) -> Inspector {
        self.limits.max_decoded_bytes = n as u64;
        self
    }

    /// The detector.
    pub fn detector(&self) -> &Arc<Detector> {
        &self.detector
    }

    /// Scans the path, the query (per parameter) and the headers.
    pub fn inspect_head(
        &self,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        report: &mut Report,
    ) {
        let mut decoded = Vec::new();
        let mut norm = Vec::new();
        let raw = path.as_bytes();
        if decode::has_base64_candidate(raw) {
            // Base64 in a path is a segment of it ('/' is in the standard alphabet, so the
            // whole path would look like one run): each segment is normalised alone, and
            // the path scanned once with the decoded text in place.
            let mut joined = Vec::with_capacity(raw.len() * 2);
            for (i, seg) in raw.split(|&b| b == b'/').enumerate() {
                if i > 0 {
                    joined.push(b'/');
                }
                // '+' kept for the base64 (standard base64 has it; in a path it is no
                // space), read as a space otherwise, as in the path without base64.
                decoded.clear();
                decode::percent_decode(seg, &mut decoded);
                if decode::normalise_value(&decoded, &mut norm) {
                    joined.extend_from_slice(&norm);
                } else {
                    if seg.contains(&b'+') {
                        decoded.clear();
                        decode::percent_decode_form(seg, &mut decoded);
                    }
                    joined.extend_from_slice(&decoded);
                }
            }
            self.scan_one(&joined, None, Location::Url, report);
        } else if raw.iter().any(|&b| b == b'%' || b == b'+') {
            // Most paths carry no escapes: scan them in place rather than through a copy.
            decode::percent_decode_form(raw, &mut decoded);
            if decode::escaped_twice(&decoded) {
                decode::normalise_as_body(&decoded, &mut norm);
                self.scan_one(&norm, None, Location::Url, report);
            } else {
                self.scan_one(&decoded, None, Location::Url, report);
            }
        } else {
            self.scan_one(raw, None, Location::Url, report);
        }
        if let Some(q) = query {
            decode::for_each_query_pair(q.as_bytes(), &mut |k, v| {
                self.scan_value(v, Some(k), Location::Url, &mut norm, report);
                self.scan_one(k, None, Location::Url, report);
            });
        }
        self.inspect_fields(headers, &mut decoded, &mut norm, report);
    }

    /// Scans the trailer fields that followed a request body, as header fields are scanned
    /// (found there, they count as found in a header).
    pub fn inspect_trailers(&self, trailers: &HeaderMap, report: &mut Report) {
        self.inspect_fields(trailers, &mut Vec::new(), &mut Vec::new(), report);
    }

    /// Header or trailer fields; `decoded` and `norm` are scratch space.
    fn inspect_fields(
        &self,
        headers: &HeaderMap,
        decoded: &mut Vec<u8>,
        norm: &mut Vec<u8>,
        report: &mut Report,
    ) {
        for (name, value) in headers {
            let n = name.as_str();
            if n.starts_with("proxy-")
                && matches!(
                    n,
                    "proxy-authorization" | "proxy-authenticate" | "proxy-connection"
                )
            {
                // Hop-by-hop, for Sima itself: never forwarded. Any other `Proxy-*` header
                // (`Proxy-Note`) is an end-to-end header like the rest and goes upstream.
                continue;
            }
            let v = value.as_bytes();
            if n == "cookie" {
                for pair in v.split(|b| *b == b';') {
                    let pair = pair.trim_ascii();
                    match pair.iter().position(|b| *b == b'=') {
                        Some(i) => {
                            decoded.clear();
                            decode::percent_decode_form(&pair[i + 1..], decoded);
                            let key = Some(&pair[..i]);
                            self.scan_value(decoded, key, Location::Header, norm, report);
                        }
                        None => self.scan_value(pair, None, Location::Header, norm, report),
                    }
                }
            } else if memchr::memchr(b'%', v).is_some() {
                // Percent-encoded (`asha%40example.in`): read decoded, `+` kept.
                decoded.clear();
                decode::percent_decode(v, decoded);
                let key = Some(n.as_bytes());
                self.scan_value(decoded, key, Location::Header, norm, report);
            } else {
                let key = Some(n.as_bytes());
                self.scan_value(v, key, Location::Header, norm, report);
            }
        }
    }

    /// Scans a destination host name that the request carries outside its headers (an
    /// absolute URI without `Host`): a tenant's subdomain may be named by an identifier.
    pub fn inspect_host(&self, host: &str, report: &mut Report) {
        self.scan_one(host.as_bytes(), None, Location::Url, report);
    }

    /// Scans one value of the head, with the decoded text of the base64 runs in it (see
    /// [`decode::normalise_value`]); `norm` is scratch space.
    fn scan_value(
        &self,
        text: &[u8],
        key: Option<&[u8]>,
        loc: Location,
        norm: &mut Vec<u8>,
        report: &mut Report,
    ) {
        if decode::escaped_twice(text) {
            decode::normalise_as_body(text, norm);
            self.scan_one(norm, key, loc, report);
        } else if decode::normalise_value(text, norm) {
            self.scan_one(norm, key, loc, report);
        } else {
            self.scan_one(text, key, loc, report);
        }
    }

    fn scan_one(&self, text: &[u8], key: Option<&[u8]>, loc: Location, report: &mut Report) {
        let mut folded = fold::Folded::default();
        let text = if fold::fold_value(text, &mut folded) {
            &folded.text
        } else {
            text
        };
        let mut found = Vec::new();
        self.detector.scan(text, 0, key, &mut found);
        for f in &found {
            report.add_value(f, loc, text, 0);
        }
    }

    /// Starts scanning a body with these headers (`Content-Type`, `Content-Encoding`).
    pub fn body(&self, headers: &HeaderMap) -> Result<BodyScan, DecodeError> {
        let ct = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let ce = headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let pipeline = Pipeline::from_headers(ct, ce, self.limits)?;
        Ok(BodyScan {
            pipeline,
            scanner: SegmentScanner::new(&self.detector, self.shortcuts.clone()),
            detector: self.detector.clone(),
        })
    }
}

/// Whether the body carries a content coding (its decoded offsets can't map to raw bytes).
pub fn is_encoded(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
            v.to_str().map_or(true, |s| {
                s.split(',')
                    .any(|c| !c.trim().eq_ignore_ascii_case("identity") && !c.trim().is_empty())
            })
        })
}

/// A body being scanned.
pub struct BodyScan {
    pipeline: Pipeline,
    scanner: SegmentScanner,
    detector: Arc<Detector>,
}

impl BodyScan {
    /// Raw bytes to hold back while streaming this body, for a configured `hold_back`: more
    /// for a body whose text may be spelled in escapes, JSON or markup (see [`JSON_HOLD_BACK`]).
    pub fn hold_back(&self, hold_back: usize) -> usize {
        let chars = if self.pipeline.spelled_in_escapes() {
            hold_back.max(JSON_HOLD_BACK)
        } else {
            hold_back
        };
        chars.saturating_mul(self.pipeline.raw_bytes_per_char())
    }

    /// Feeds raw body bytes; findings are final up to the hold window.
    pub fn feed(&mut self, bytes: &[u8], report: &mut Report) -> Result<(), DecodeError> {
        let (scanner, det) = (&mut self.scanner, &*self.detector);
        self.pipeline.feed_runs(bytes, &mut |seg, ends| {
            scanner.push(det, &seg, ends, report, Location::Body)
        })?;
        self.scanner.sync(det, report, Location::Body);
        Ok(())
    }

    /// Ends the body; everything is final.
    pub fn finish(&mut self, report: &mut Report) -> Result<(), DecodeError> {
        let (scanner, det) = (&mut self.scanner, &*self.detector);
        self.pipeline
            .finish_runs(&mut |seg, ends| scanner.push(det, &seg, ends, report, Location::Body))?;
        self.scanner.flush(det, report, Location::Body);
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// The scanner's shortcuts (whole runs scanned in place, trigger-free text skipped) against
/// the plain rule: each maximal same-key run of the normalised stream scanned whole.
#[cfg(test)]
mod shortcut_tests {
    use super::*;
    use proptest::prelude::*;

    const JSON: &str = "application/json";

    /// Findings (sorted) through `BodyScan` with the JSON body cut at `cuts`.
    fn via_scanner(ins: &Inspector, body: &[u8], cuts: &[usize]) -> (Vec<Item>, Report) {
        via_scanner_as(ins, JSON, body, cuts)
    }

    /// Findings (sorted) through `BodyScan` with a body of type `ct` cut at `cuts`.
    fn via_scanner_as(
        ins: &Inspector,
        ct: &'static str,
        body: &[u8],
        cuts: &[usize],
    ) -> (Vec<Item>, Report) {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(ct),
        );
        let mut scan = ins.body(&h).unwrap_or_else(|e| panic!("{e}"));
        let mut report = Report::default();
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        for c in cuts {
            let _ = scan.feed(body.get(start..c).unwrap_or_default(), &mut report);
            start = c;
        }
        let _ = scan.feed(body.get(start..).unwrap_or_default(), &mut report);
        let _ = scan.finish(&mut report);
        let mut items = report.items().to_vec();
        items.sort_by_key(|i| (i.offset, i.class, i.len));
        (items, report)
    }

    /// Findings (sorted) of every maximal run scanned whole, no shortcuts.
    fn plain(det: &Detector, body: &[u8]) -> Vec<Item> {
        plain_as(det, JSON, body)
    }

    fn plain_as(det: &Detector, ct: &str, body: &[u8]) -> Vec<Item> {
        let mut p = Pipeline::from_headers(Some(ct), None, Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut runs: Vec<(u64, Option<Vec<u8>>, Vec<u8>)> = Vec::new();
        let mut sink = |s: Segment<'_>| {
            let key = s.key.map(<[u8]>::to_vec);
            match runs.last_mut() {
                Some((_, k, t)) if *k == key => t.extend_from_slice(s.text),
                _ => runs.push((s.offset, key, s.text.to_vec())),
            }
        };
        let _ = p.feed(body, &mut sink);
        let _ = p.finish(&mut sink);
        let mut report = Report::default();
        for (offset, key, text) in &runs {
            let mut found = Vec::new();
            det.scan(text, *offset, key.as_deref(), &mut found);
            for f in &found {
                report.add(f, Location::Body);
            }
        }
        let mut items = report.items().to_vec();
        items.sort_by_key(|i| (i.offset, i.class, i.len));
        items
    }

    fn value() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "\"234567890124\"",
            "\"ABCPE1234F\"",
            "\"J8369854\"",
            "\"asha@okicici\"",
            "\"1990-01-01\"",
            "\"plain words\"",
            "\" \"",
            "\"\"",
            "123456789012",
            "\"passport J8369854\"",
            "\"MjM0NTY3ODkwMTI0IGFhZGhhYXI=\"",
            "[\"x\",\"98765 43210\"]",
        ])
        .prop_map(str::to_owned)
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        let key = prop::sample::select(vec![
            "dob",
            "birth_date",
            "passport_no",
            "mobile",
            "note",
            "x",
            "acct_no",
            "pan",
            "customerMobile",
            "PASSPORT-NO",
            "payer.vpa",
            "Date Of Birth",
            "xdob",
            "mobilex",
            "AccountNo",
            "id",
        ]);
        proptest::collection::vec((key, value()), 1..40).prop_map(|kv| {
            let members: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", members.join(",")).into_bytes()
        })
    }

    #[test]
    fn shortcuts_only_for_builtin_detectors() {
        assert!(Shortcuts::new(&Detector::builtin()).is_some());
        let custom = detect::ClassSpec {
            name: "SECRET".into(),
            pattern: Some("SECRET-[A-Z]{4}".into()),
            ..Default::default()
        };
        let det = Detector::new(&[custom]).unwrap_or_else(|e| panic!("{e}"));
        assert!(Shortcuts::new(&det).is_none());
        // Trigger-free text is still scanned when custom classes exist.
        let ins = Inspector::new(Arc::new(det));
        let (items, _) = via_scanner(&ins, br#"{"a":"SECRET-ABCD","b":"x"}"#, &[]);
        assert_eq!(items.len(), 1, "{items:?}");
    }

    #[test]
    fn field_only_keys_still_fire_without_digits() {
        let ins = Inspector::new(Arc::new(Detector::builtin()));
        let body = br#"{"dob":"first of May","note":"first of May","dob":"  ","birth_date":"x"}"#;
        let (items, _) = via_scanner(&ins, body, &[]);
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(items, plain(ins.detector(), body));
    }

    #[test]
    fn triggers_match_bytewise() {
        // Lengths across the 64-byte block and 8-byte word paths, the byte at every place.
        for n in 0..140 {
            for at in 0..n.max(1) {
                for b in [b'0', b'9', b'@', b'/', b':', b'?', b'A', 0x80 | b'0', 0xc0] {
                    let mut t = vec![b'a'; n];
                    if let Some(x) = t.get_mut(at) {
                        *x = b;
                    }
                    let want = t.iter().any(|&c| c.is_ascii_digit() || c == b'@');
                    let wide = t.iter().any(|&c| c >= 0x80);
                    assert_eq!(triggers(&t), (want, wide), "{t:?}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn shortcuts_change_no_finding(
            body in body(),
            cuts in proptest::collection::vec(0usize..2000, 0..8),
        ) {
            let ins = Inspector::new(Arc::new(Detector::builtin()));
            let want = plain(ins.detector(), &body);
            let (got, _) = via_scanner(&ins, &body, &cuts);
            prop_assert_eq!(got, want);
        }

        // Bodies of tens of KiB arrive in frames larger than the scanner's sync size, which
        // are scanned where they lie rather than copied: the findings must not change,
        // whatever the frame sizes, with identifiers and long digit runs across the places
        // where the scanner resumes.
        #[test]
        fn large_frames_scanned_in_place_change_no_finding(
            parts in proptest::collection::vec((0usize..6, 0usize..9000), 1..12),
            cuts in proptest::collection::vec(0usize..80_000, 0..6),
            ct in prop::sample::select(vec!["text/plain", "application/octet-stream", JSON]),
        ) {
            let ins = Inspector::new(Arc::new(Detector::builtin()));
            let mut text = String::new();
            for (kind, n) in &parts {
                match kind {
                    0 => text.push_str(&"lorem ipsum ".repeat(n / 12 + 1)),
                    1 => text.push_str(&"7".repeat(*n)),
                    2 => text.push_str(&"b".repeat(*n)),
                    3 => text.push_str(" 2345 6789 0124 "),
                    4 => text.push_str("ABCPE1234F "),
                    _ => text.push_str(" 98765 43210 "),
                }
            }
            let body = if ct == JSON {
                format!("{{\"note\":\"{text}\",\"mobile\":\"{text}\"}}").into_bytes()
            } else {
                text.into_bytes()
            };
            let want = plain_as(ins.detector(), ct, &body);
            let (whole, _) = via_scanner_as(&ins, ct, &body, &[]);
            prop_assert_eq!(&whole, &want);
            let (split, _) = via_scanner_as(&ins, ct, &body, &cuts);
            prop_assert_eq!(split, want);
        }
    }
}
