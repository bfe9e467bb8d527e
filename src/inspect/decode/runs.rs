//! Runs inside text that hide other text: base64 (and base64 wrapped at 64 or 76
//! characters a line), hex, and percent-escaped URL text, with the tests that tell text
//! from binary.

use super::*;

pub(super) const B64_NONE: u8 = 0;
pub(super) const B64_ALNUM: u8 = 1;
pub(super) const B64_STD: u8 = 2;
pub(super) const B64_URL: u8 = 3;
pub(super) const B64_PAD: u8 = 4;

/// Length of the ASCII-alphanumeric prefix of `bytes`. Tests 16 bytes at a time with
/// range arithmetic the compiler vectorises (a table lookup per byte does not).
pub(super) fn alnum_prefix(bytes: &[u8]) -> usize {
    let is_alnum = |b: u8| b.wrapping_sub(b'0') < 10 || (b | 0x20).wrapping_sub(b'a') < 26;
    let mut chunks = bytes.chunks_exact(16);
    let mut n = 0;
    for chunk in chunks.by_ref() {
        let all = chunk.iter().fold(true, |acc, &b| {
            acc & ((b.wrapping_sub(b'0') < 10) | ((b | 0x20).wrapping_sub(b'a') < 26))
        });
        if !all {
            return n + chunk.iter().position(|&b| !is_alnum(b)).unwrap_or(16);
        }
        n += 16;
    }
    n + chunks
        .remainder()
        .iter()
        .position(|&b| !is_alnum(b))
        .unwrap_or(chunks.remainder().len())
}

pub(super) const B64_CLASS: [u8; 256] = {
    let mut t = [B64_NONE; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = if c.is_ascii_alphanumeric() {
            B64_ALNUM
        } else if c == b'+' || c == b'/' {
            B64_STD
        } else if c == b'-' || c == b'_' {
            B64_URL
        } else if c == b'=' {
            B64_PAD
        } else {
            B64_NONE
        };
        i += 1;
    }
    t
};

pub(super) const B64_ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// [`B64_ENGINE`] for the URL-safe alphabet.
pub(super) const B64_URL_ENGINE: base64::engine::GeneralPurpose =
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );

/// Tracks the current run of base64-alphabet bytes in value text.
#[derive(Default)]
pub(super) struct B64 {
    pub(super) run: Vec<u8>,
    pub(super) len: usize,
    pub(super) pad: usize,
    pub(super) std: bool,
    pub(super) url: bool,
    pub(super) decoded: Vec<u8>,
    /// A long run decoded block by block: its first [`BASE64_MAX_RUN`] characters decoded
    /// to text, so from there on the run's decoded text goes into the stream in place of its
    /// characters, and `run` holds only the characters of the block not yet decoded.
    pub(super) streaming: bool,
    /// The run is read as hex, not base64 (see [`hex_like`]): set by [`B64::decode`], so
    /// a streaming run's later blocks are read as its first was.
    pub(super) hex: bool,
    /// The run encodes a gzip or zip file (an attachment, a compressed log batch), whose
    /// decoded bytes are opened rather than judged as text (see [`B64::opens_archive`]).
    pub(super) archive: bool,
}

impl B64 {
    /// Counts one more run byte of class `cls` (its bytes are kept by [`B64::keep`]).
    pub(super) fn count(&mut self, cls: u8) {
        match cls {
            B64_PAD => self.pad += 1,
            B64_STD => self.std = true,
            B64_URL => self.url = true,
            _ => {}
        }
        self.len += 1;
    }

    /// Keeps run bytes counted since the last call, up to the first [`BASE64_MAX_RUN`] of
    /// the run (a longer run is never decoded, so the rest is not needed).
    pub(super) fn keep(&mut self, bytes: &[u8]) {
        let room = BASE64_MAX_RUN.saturating_sub(self.run.len());
        self.run
            .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or(&[]));
    }

    pub(super) fn reset(&mut self) {
        self.run.clear();
        self.len = 0;
        self.pad = 0;
        self.std = false;
        self.url = false;
        self.streaming = false;
        self.hex = false;
        self.archive = false;
    }

    /// Whether a byte of class `cls` ends the run instead of going on with it.
    pub(super) fn ended_by(&self, cls: u8) -> bool {
        cls == B64_NONE || (self.pad > 0 && cls != B64_PAD)
    }

    pub(super) fn candidate(&self) -> bool {
        let data = self.len.saturating_sub(self.pad);
        (BASE64_MIN_RUN..=BASE64_MAX_RUN).contains(&self.len)
            && self.pad <= 2
            && !(self.std && self.url)
            && data % 4 != 1
    }

    /// Decodes the current run (or the first block of a long one, a `piece` of text) into
    /// `self.decoded`; true when it is worth emitting.
    ///
    /// With `archives` (see [`Emitter::archives`]), a run that [`B64::opens_archive`]
    /// decodes to the file's bytes as they are, to be opened by the reading of what it
    /// decodes to; otherwise a short run of gzip is decompressed here (up to
    /// [`GUNZIP_MAX`]).
    pub(super) fn decode(&mut self, piece: bool, archives: bool) -> bool {
        // A run of hex digits is not base64 of text (see `hex_like`), but it may be hex of
        // text (`"payload":"7b22656d61696c223a…"`). A UUID (dashes), a hash or a trace id
        // does not decode to text, and is left as it is.
        self.hex = hex_like(&self.run);
        self.archive = archives && self.opens_archive();
        if !self.decode_kept() {
            self.archive = false;
            return false;
        }
        if self.archive {
            true
        } else if piece {
            text_piece(&self.decoded)
        } else if self.decoded.starts_with(GZIP_MAGIC) {
            self.gunzip()
        } else {
            mostly_printable(&self.decoded)
        }
    }

    /// Whether the run's first characters encode gzip's or zip's magic, in base64 (`H4sI`,
    /// `UEsDB`) or hex: a cheap look, before anything is decoded.
    pub(super) fn opens_archive(&self) -> bool {
        let r = &self.run;
        let starts = |p: &[u8]| r.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
        match r.first() {
            Some(b'H') => r.starts_with(b"H4sI"),
            Some(b'U') => r.starts_with(b"UEsDB"),
            Some(b'1') => starts(b"1f8b08"),
            Some(b'5') => starts(b"504b0304"),
            _ => false,
        }
    }

    /// A whole short run that decodes to gzip (a compressed log record in a JSON field, as
    /// CloudWatch Logs subscriptions and telemetry SDKs send it): its text instead, up to
    /// [`GUNZIP_MAX`] bytes of it, when it is text. A run over [`BASE64_MAX_RUN`]
    /// characters, decoded as it streams, is not opened.
    #[cold]
    #[inline(never)]
    pub(super) fn gunzip(&mut self) -> bool {
        use std::io::Read as _;
        let mut out = Vec::new();
        let read = flate2::read::MultiGzDecoder::new(self.decoded.as_slice())
            .take(GUNZIP_MAX)
            .read_to_end(&mut out);
        // A corrupt stream's text before the fault is read all the same.
        if (read.is_err() && out.is_empty()) || !mostly_printable(&out) {
            return false;
        }
        self.decoded = out;
        true
    }

    /// Decodes the characters in `run` (a whole short run, or one block of a long run) into
    /// `self.decoded`; false if they are not base64.
    pub(super) fn decode_kept(&mut self) -> bool {
        if self.hex {
            return hex_decode(&self.run, &mut self.decoded);
        }
        self.decoded.clear();
        let pads = self.run.iter().rev().take_while(|&&c| c == b'=').count();
        let data = self.run.len() - pads;
        if pads > 2 || data % 4 == 1 || (self.std && self.url) {
            return false;
        }
        let run = self.run.get(..data).unwrap_or(&[]);
        self.engine().decode_vec(run, &mut self.decoded).is_ok()
    }

    /// The engine for the run's alphabet (a run of both is never decoded).
    pub(super) fn engine(&self) -> &'static base64::engine::GeneralPurpose {
        if self.url {
            &B64_URL_ENGINE
        } else {
            &B64_ENGINE
        }
    }

    /// Whether the first 64 characters of `run` decode to what looks like text: a cheap
    /// look before decoding a whole block, since most long runs of letters and digits (a
    /// hash, a key, a filler) are not base64 of text.
    pub(super) fn starts_as_text(&self) -> bool {
        let sample = self.run.get(..64).unwrap_or(&self.run);
        if hex_like(sample) {
            let mut out = Vec::with_capacity(32);
            return hex_decode(sample, &mut out) && text_piece(&out);
        }
        let mut out = [0u8; 48];
        let Ok(n) = self.engine().decode_slice(sample, &mut out) else {
            return false;
        };
        text_piece(out.get(..n).unwrap_or(&[]))
    }

    /// Decodes the block in `run` of a streaming run: true when it decoded to text, or is a
    /// final block too short to judge.
    pub(super) fn decode_block(&mut self) -> bool {
        self.decode_kept() && (self.archive || self.decoded.len() < 6 || text_piece(&self.decoded))
    }
}

/// Whether a run is all hex digits and dashes: a UUID, a trace id, a hash, the most common
/// candidates in JSON bodies and headers. Base64 of text practically never looks like this
/// (of ASCII text, the first byte of every three would have to be one of `k o s w {`), so
/// such a run is not decoded as base64: it is read as hex (see [`hex_decode`]), which a
/// UUID (dashes) or a hash fails or turns into bytes that are not text.
pub(super) fn hex_like(run: &[u8]) -> bool {
    run.iter().all(|&c| c.is_ascii_hexdigit() || c == b'-')
}

/// Decodes `run`, an even number of hex digits of either case, into `out` (cleared first);
/// false for anything else (a dash, an odd digit out).
pub(super) fn hex_decode(run: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    if !run.len().is_multiple_of(2) {
        return false;
    }
    // By table, without a branch per digit: most hex runs are hashes and ids, whose
    // digits and letters alternate at random (a `match` mispredicted about every other
    // digit, and made hex runs cost a webhook payload with signatures 7%).
    let mut bad = 0u8;
    for pair in run.chunks_exact(2) {
        if let &[hi, lo] = pair {
            let (hi, lo) = (HEX_VALUE[usize::from(hi)], HEX_VALUE[usize::from(lo)]);
            bad |= hi | lo;
            out.push(hi << 4 | (lo & 0x0f));
        }
    }
    if bad & 0xf0 != 0 {
        out.clear();
        return false;
    }
    true
}

/// The value of each hex digit; `0xff` for other bytes.
pub(super) const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => 0xff,
        };
        i += 1;
    }
    t
};

/// Cheap "is this text" check for decoded base64: at least 90% printable ASCII / whitespace,
/// or valid UTF-8 without control characters.
pub(super) fn mostly_printable(d: &[u8]) -> bool {
    if d.len() < 6 {
        return false;
    }
    // Counted without a branch per byte (most candidates are ids and hashes that decode to
    // random bytes, on which a branch is a coin toss), in byte-wide lanes.
    let printable: usize = d
        .chunks(255)
        .map(|c| {
            let n = c.iter().fold(0u8, |n, &b| {
                n + u8::from(
                    (b.wrapping_sub(0x20) < 0x5f) | (b == b'\t') | (b == b'\n') | (b == b'\r'),
                )
            });
            usize::from(n)
        })
        .sum();
    if printable * 10 >= d.len() * 9 {
        return true;
    }
    match std::str::from_utf8(d) {
        Ok(s) => !s
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')),
        Err(_) => false,
    }
}

/// [`mostly_printable`] for a piece cut out of a longer text (a block of a long base64 run):
/// a UTF-8 character cut at either end is not held against it.
pub(super) fn text_piece(d: &[u8]) -> bool {
    if mostly_printable(d) {
        return true;
    }
    let lead = d.iter().take(3).take_while(|&&b| b & 0xc0 == 0x80).count();
    let d = d.get(lead..).unwrap_or(&[]);
    match std::str::from_utf8(d) {
        Err(e) if e.error_len().is_none() => {
            mostly_printable(d.get(..e.valid_up_to()).unwrap_or(&[]))
        }
        Err(_) => false,
        Ok(_) => mostly_printable(d),
    }
}

/// A percent run that reaches this length is decoded as it streams (see [`Emitter::value`]).
pub(super) const PCT_MAX_RUN: usize = 4096;
/// How far before its first `%` a percent run's decoded text begins, at most: room for the
/// longest identifier an escape can cut (an email address, a spaced Aadhaar number).
pub(super) const PCT_LOOKBACK: usize = 1024;

/// Whether `c` ends a run of URL text: a percent run holds no raw white space, control
/// byte, quote or angle bracket (what delimits a URL in text, JSON, HTML).
pub(super) fn pct_stop(c: u8) -> bool {
    c <= b' ' || c == 0x7f || matches!(c, b'"' | b'\'' | b'<' | b'>')
}

/// Whether `c` delimits the parts of a URL or query (`?a=1&b=2`). The decoded text of a
/// run begins after one of these within [`PCT_LOOKBACK`] of its first escape, rather than
/// at an arbitrary byte, so a base64 parameter value keeps its alignment.
pub(super) fn pct_delimiter(c: u8) -> bool {
    matches!(c, b'&' | b'=' | b'?' | b';' | b',' | b':')
}

/// Where base64 in `window` starts in step, when the window may begin inside the value (no
/// delimiter in it): the first of the next four offsets from which 64 characters decode to
/// text, else 0. Without it, URL-escaped base64 whose first escape comes more than
/// [`PCT_LOOKBACK`] bytes into its value would be decoded out of step.
pub(super) fn base64_phase(window: &[u8]) -> usize {
    (0..4)
        .find(|&phase| {
            let Some(sample) = window.get(phase..phase + 64) else {
                return false;
            };
            let engine = if sample.iter().any(|&c| c == b'-' || c == b'_') {
                &B64_URL_ENGINE
            } else {
                &B64_ENGINE
            };
            let mut out = [0u8; 48];
            engine
                .decode_slice(sample, &mut out)
                .is_ok_and(|n| text_piece(out.get(..n).unwrap_or(&[])))
        })
        .unwrap_or(0)
}

/// Appends `bytes` to `buf` and keeps only its last `n` bytes.
pub(super) fn keep_last(buf: &mut Vec<u8>, bytes: &[u8], n: usize) {
    if bytes.len() >= n {
        buf.clear();
        buf.extend_from_slice(bytes.get(bytes.len() - n..).unwrap_or(&[]));
    } else {
        buf.extend_from_slice(bytes);
        let excess = buf.len().saturating_sub(n);
        buf.drain(..excess);
    }
}

/// Length of an escape cut off at the end of `s`: `%` (1) or `%` and a hex digit (2).
pub(super) fn partial_escape(s: &[u8]) -> usize {
    match s {
        [.., b'%'] => 1,
        [.., b'%', h] if h.is_ascii_hexdigit() => 2,
        _ => 0,
    }
}

/// Tracks the current run of URL text holding percent escapes, in value text.
#[derive(Default)]
pub(super) struct Pct {
    /// A `%` was seen in the current run: its bytes are being collected in `run`.
    pub(super) active: bool,
    /// The run is decoded as it streams: its raw bytes are replaced by decoded text.
    pub(super) streaming: bool,
    /// The active run, from where its decoded text begins; while streaming, scratch.
    pub(super) run: Vec<u8>,
    /// No `%` seen yet: the last bytes (up to [`PCT_LOOKBACK`]) of the previous pieces of
    /// the value, where the run open at their end, and its decoded text, may begin.
    pub(super) tail: Vec<u8>,
    /// While streaming: an escape cut at the end of the previous piece.
    pub(super) carry: Vec<u8>,
    pub(super) decoded: Vec<u8>,
}

impl Pct {
    /// Starts collecting the run around a `%` at `bytes[p]`: from the last stop before it,
    /// looking no further back than `bytes[from]` (just after a stop), or into `tail` when
    /// `from == 0`, and no more than [`PCT_LOOKBACK`] bytes.
    pub(super) fn begin(&mut self, bytes: &[u8], from: usize, p: usize) {
        let lo = p.saturating_sub(PCT_LOOKBACK).max(from);
        self.run.clear();
        if lo == 0 {
            self.run.extend_from_slice(&self.tail);
        }
        self.run.extend_from_slice(bytes.get(lo..p).unwrap_or(&[]));
        if let Some(k) = self.run.iter().rposition(|&c| pct_stop(c)) {
            self.run.drain(..=k);
        }
        let excess = self.run.len().saturating_sub(PCT_LOOKBACK);
        let window = self.run.get(excess..).unwrap_or(&[]);
        let start = match window.iter().rposition(|&c| pct_delimiter(c)) {
            Some(k) => excess + k + 1,
            None => excess + base64_phase(window),
        };
        self.run.drain(..start);
        self.tail.clear();
        self.active = true;
    }

    /// Keeps the last [`PCT_LOOKBACK`] bytes of value text that held no open run (see
    /// `tail`): a copy, not a search for where the trailing run starts, since only the rare
    /// piece followed by a `%` needs that, and [`Pct::begin`] finds it.
    pub(super) fn keep_tail(&mut self, bytes: &[u8]) {
        keep_last(&mut self.tail, bytes, PCT_LOOKBACK);
    }

    /// Decodes `run` of a streaming run into `decoded`, but for an escape cut at the end,
    /// kept in `carry`. `+` stays `+`: the decoded text replaces the raw bytes here, and
    /// base64 in the run (a `+` of its own) must survive; a form's `+` for a space is
    /// lost, as it is in raw text.
    pub(super) fn decode_run(&mut self) {
        let keep = partial_escape(&self.run);
        let body = self.run.get(..self.run.len() - keep).unwrap_or(&[]);
        self.decoded.clear();
        percent_decode(body, &mut self.decoded);
        self.carry.clear();
        self.carry
            .extend_from_slice(self.run.get(self.run.len() - keep..).unwrap_or(&[]));
    }

    /// Decodes the pieces of `run` between URL delimiters that decoding changes into
    /// `decoded`, a separator between them; true when there is any. The other pieces are
    /// in the stream as they are already: inserting them again would count what they hold
    /// twice (`msg=Hi%21&phone=…`). A decoded piece that still holds escapes (a URL
    /// encoded twice) has its own changed pieces decoded in turn (see [`changed_pieces`]).
    pub(super) fn decode_pieces(&mut self) -> bool {
        self.decoded.clear();
        for piece in self.run.split(|&c| pct_delimiter(c)) {
            changed_pieces(piece, &mut self.decoded, PCT_AGAIN);
        }
        !self.decoded.is_empty()
    }

    pub(super) fn reset(&mut self) {
        self.active = false;
        self.streaming = false;
        self.run.clear();
        self.tail.clear();
        self.carry.clear();
    }
}

/// Most text read from gzip inside one short base64 run (a run of 4,096 characters holds
/// 3 KiB of gzip: a log batch of a few dozen KiB; a bomb is read this far).
pub(super) const GUNZIP_MAX: u64 = 256 * 1024;

/// How many more times a decoded piece that still holds escapes is decoded. A URL inside a
/// URL parameter is encoded twice (`redirect_uri=…%3Femail%3Dasha%2540example.in`:
/// `urlencode` of a return URL that carries an address); a third layer is rarer, and each
/// is bounded by the run's length.
pub(super) const PCT_AGAIN: u8 = 2;

/// Appends `piece` percent-decoded (`+` as a space) to `out`, after a separator when `out`
/// holds text, if decoding changes it; then, if the decoded text still holds an escape,
/// its own pieces between URL delimiters that decoding changes, `again` more levels deep.
pub(super) fn changed_pieces(piece: &[u8], out: &mut Vec<u8>, again: u8) {
    if !piece.iter().any(|&c| c == b'%' || c == b'+') {
        return;
    }
    let before = out.len();
    if before > 0 {
        out.push(SEPARATOR);
    }
    let mark = out.len();
    percent_decode_form(piece, out);
    if out.get(mark..) == Some(piece) {
        out.truncate(before);
        return;
    }
    if again > 0 && has_escape(out.get(mark..).unwrap_or(&[])) {
        let decoded = out.get(mark..).unwrap_or(&[]).to_vec();
        for inner in decoded.split(|&c| pct_delimiter(c)) {
            changed_pieces(inner, out, again - 1);
        }
    }
}

/// Whether `s` holds a percent escape (`%` and two hex digits).
pub(super) fn has_escape(s: &[u8]) -> bool {
    memchr::memchr_iter(b'%', s).any(|k| {
        s.get(k + 1..k + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    })
}

/// The line widths of wrapped base64: MIME (RFC 2045, Python's `base64.encodebytes`,
/// Java's MIME encoder) and PEM (RFC 7468).
pub(super) const WRAP_WIDTHS: [usize; 2] = [64, 76];

/// Whether `c` can go on a line of wrapped base64 (either alphabet, no padding).
pub(super) fn wrap_char(c: u8) -> bool {
    matches!(B64_CLASS[usize::from(c)], B64_ALNUM | B64_STD | B64_URL)
}

/// Joins the lines of wrapped base64 in value text, so that the block is one run and an
/// identifier whose characters straddle a line break is decoded whole. A line break (`\n`
/// or `\r\n`) is dropped when the base64 characters before it are exactly one line of a
/// [`WRAP_WIDTHS`] width and a base64 character follows it; the receiver's decoder skips
/// it the same way. A line break at the end of a piece waits for the next one.
#[derive(Default)]
pub(super) struct Wrap {
    /// Base64 characters at the end of the text so far (capped past the widest line).
    pub(super) line: usize,
    /// A line break that may join two lines, cut from the end of the last piece.
    pub(super) held: Vec<u8>,
    pub(super) out: Vec<u8>,
}

impl Wrap {
    const CAP: usize = 77;

    /// Joins wrapped lines in `bytes`, the next piece of a value (`last`: its end); true
    /// when the text to use instead is in `self.out`.
    pub(super) fn join(&mut self, bytes: &[u8], last: bool) -> bool {
        if self.held.is_empty()
            && (self.line == 0 && bytes.len() <= WRAP_WIDTHS[0]
                || memchr::memchr(b'\n', bytes).is_none() && !bytes.ends_with(b"\r"))
        {
            // No line break to join here (nearly all text): count the line on, unless the
            // value ends here.
            if last {
                self.line = 0;
            } else {
                self.count(bytes, 0);
            }
            return false;
        }
        self.out.clear();
        let mut changed = false;
        let mut i = 0;
        if !self.held.is_empty() {
            if self.held == b"\r" && bytes.first() == Some(&b'\n') {
                self.held.push(b'\n');
                i = 1;
            }
            match bytes.get(i) {
                None if !last => return true,
                Some(&c) if wrap_char(c) && self.held.ends_with(b"\n") => {}
                _ => self.out.extend_from_slice(&self.held),
            }
            self.held.clear();
            self.line = 0;
            changed = true;
        }
        let mut from = i;
        let mut line_start = i;
        let mut carried = if changed { 0 } else { self.line };
        for p in memchr::memchr_iter(b'\n', bytes).filter(|&p| p >= i) {
            let lb = if p > i && bytes.get(p - 1) == Some(&b'\r') {
                p - 1
            } else {
                p
            };
            // Most lines (of a CSV, a log) are shorter than a wrapped one: no need to count.
            let long = lb - line_start + carried >= WRAP_WIDTHS[0];
            if long && WRAP_WIDTHS.contains(&self.run_before(bytes, line_start, lb, carried)) {
                match bytes.get(p + 1) {
                    Some(&c) if wrap_char(c) => {
                        self.out
                            .extend_from_slice(bytes.get(from..lb).unwrap_or(&[]));
                        from = p + 1;
                        changed = true;
                    }
                    None if !last => {
                        self.out
                            .extend_from_slice(bytes.get(from..lb).unwrap_or(&[]));
                        self.held.extend_from_slice(bytes.get(lb..).unwrap_or(&[]));
                        from = bytes.len();
                        changed = true;
                    }
                    _ => {}
                }
            }
            line_start = p + 1;
            carried = 0;
        }
        // A `\r` ending the piece may begin a line break.
        if from < bytes.len() && !last && bytes.ends_with(b"\r") {
            let lb = bytes.len() - 1;
            if WRAP_WIDTHS.contains(&self.run_before(bytes, line_start, lb, carried)) {
                self.out
                    .extend_from_slice(bytes.get(from..lb).unwrap_or(&[]));
                self.held.push(b'\r');
                from = bytes.len();
                changed = true;
            }
        }
        if !changed {
            if last {
                self.line = 0;
            } else {
                self.count(bytes, 0);
            }
            return false;
        }
        self.out.extend_from_slice(bytes.get(from..).unwrap_or(&[]));
        // The line now open began after the last line break of `bytes` (a joined one too).
        self.line = if self.held.is_empty() && !last {
            self.run_before(bytes, line_start, bytes.len(), carried)
        } else {
            0
        };
        true
    }

    /// Base64 characters right before `bytes[end]`, back to `start` (plus `carried` from
    /// earlier text if they reach it), capped.
    pub(super) fn run_before(
        &self,
        bytes: &[u8],
        start: usize,
        end: usize,
        carried: usize,
    ) -> usize {
        let text = bytes.get(start..end).unwrap_or(&[]);
        let n = text
            .iter()
            .rev()
            .take(Self::CAP)
            .take_while(|&&c| wrap_char(c))
            .count();
        if n == text.len() {
            (n + carried).min(Self::CAP)
        } else {
            n
        }
    }

    /// Carries the count of base64 characters at the end of `bytes` on.
    pub(super) fn count(&mut self, bytes: &[u8], start: usize) {
        self.line = self.run_before(bytes, start, bytes.len(), self.line);
    }

    /// The held line break, at the end of a value (no line follows it).
    pub(super) fn release(&mut self) -> Option<Vec<u8>> {
        self.line = 0;
        (!self.held.is_empty()).then(|| std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod alnum_tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn alnum_prefix_matches_the_plain_definition(v in proptest::collection::vec(any::<u8>(), 0..80), fill in 0usize..80) {
            let mut v = v;
            for b in v.iter_mut().take(fill) {
                *b = b'a' + (*b % 26);
            }
            let want = v.iter().position(|b| !b.is_ascii_alphanumeric()).unwrap_or(v.len());
            prop_assert_eq!(super::alnum_prefix(&v), want);
        }

        #[test]
        fn hex_decode_matches_the_hex_crate(
            v in proptest::collection::vec(
                prop::sample::select(b"0123456789abcdefABCDEF-gG /".to_vec()),
                0..80,
            ),
            clean in any::<bool>(),
        ) {
            // Hex digits of both cases, sometimes with a stray byte among them.
            let v: Vec<u8> = if clean { v.into_iter().filter(u8::is_ascii_hexdigit).collect() } else { v };
            let mut out = vec![7u8];
            let ok = super::hex_decode(&v, &mut out);
            match hex::decode(&v) {
                Ok(want) => prop_assert!(ok && out == want),
                Err(_) => prop_assert!(!ok && out.is_empty()),
            }
        }

        #[test]
        fn printable_count_matches_the_plain_definition(
            v in proptest::collection::vec(any::<u8>(), 0..700),
            text in proptest::collection::vec(0x20u8..0x7f, 0..700),
            mix in 0usize..700,
        ) {
            // Random bytes, printable text, and text with some random bytes in it (so both
            // sides of the 90% line), across the 255-byte lanes.
            let mut d = text.clone();
            for (i, b) in v.iter().take(mix).enumerate() {
                if let Some(slot) = d.get_mut(i * 7 % text.len().max(1)) {
                    *slot = *b;
                }
            }
            for bytes in [&v, &text, &d] {
                let printable = bytes
                    .iter()
                    .filter(|&&b| (0x20..0x7f).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r'))
                    .count();
                let want = bytes.len() >= 6
                    && (printable * 10 >= bytes.len() * 9
                        || std::str::from_utf8(bytes).is_ok_and(|s| {
                            !s.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
                        }));
                prop_assert_eq!(super::mostly_printable(bytes), want);
            }
        }
    }
}
