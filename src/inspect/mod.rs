//! Request inspection: URL, headers and body -> findings (class, confidence, where, offset,
//! length; never the value). Streaming and chunk-proof: text is scanned with a hold-back
//! window so an identifier split across reads is found exactly once, whatever the split.
//! No sockets here; the proxy feeds bytes in and asks for the report.

use std::sync::Arc;

use http::HeaderMap;

use crate::policy::{Confidence as PolicyConfidence, DataSeen};

pub mod decode;
pub mod detect;

use decode::{DecodeError, Limits, Pipeline, Segment};
use detect::{ClassId, Confidence, Detector, Finding};

/// Bodies up to this size are inspected whole before the first byte goes upstream.
pub const DEFAULT_BUFFER_LIMIT: usize = 64 * 1024;
/// Encoded (gzip, br, …) bodies are inspected whole up to this raw size; beyond it they are
/// uninspectable, because decoded offsets cannot be mapped back to the raw bytes to hold.
pub const DEFAULT_MAX_ENCODED_BODY: usize = 8 * 1024 * 1024;
/// Raw bytes held back while streaming a large identity body: the longest raw spelling of
/// the longest identifier (JSON `\uXXXX` escapes are 6 bytes a character) plus a whole
/// base64 run (decoded only when it ends) plus the decoder's own small buffers.
pub const DEFAULT_HOLD_BACK: usize = 16 * 1024;
/// Findings kept per request for explanations (counts are always exact).
pub const MAX_ITEMS: usize = 256;

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

/// Everything found in one request.
#[derive(Debug, Default, Clone)]
pub struct Report {
    items: Vec<Item>,
    counts: Vec<(ClassId, Location, u32)>,
    seen: Vec<DataSeen>,
    changed: bool,
}

impl Report {
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
        let conf = policy_confidence(f.confidence);
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

fn policy_confidence(c: Confidence) -> PolicyConfidence {
    match c {
        Confidence::Low => PolicyConfidence::Low,
        Confidence::Medium => PolicyConfidence::Medium,
        Confidence::High => PolicyConfidence::High,
    }
}

/// Scans a stream of normalised segments. Text under one key is kept contiguous; matches
/// ending in the last `hold` bytes are left for the next pass (more text may extend or
/// disqualify them), so every chunking yields the same findings.
struct SegmentScanner {
    buf: Vec<u8>,
    base: u64,
    key: Option<Vec<u8>>,
    finalized: u64,
    hold: usize,
    keep: usize,
    found: Vec<Finding>,
}

impl SegmentScanner {
    fn new(detector: &Detector) -> SegmentScanner {
        let hold = detector.max_match_len() + 2;
        SegmentScanner {
            buf: Vec::new(),
            base: 0,
            key: None,
            finalized: 0,
            hold,
            keep: hold + detector.max_match_len() + detect::CONTEXT_WINDOW + 8,
            found: Vec::new(),
        }
    }

    fn push(&mut self, det: &Detector, seg: &Segment<'_>, report: &mut Report, loc: Location) {
        let contiguous = seg.offset == self.base + self.buf.len() as u64;
        if !contiguous || seg.key != self.key.as_deref() {
            self.flush(det, report, loc);
            self.base = seg.offset;
            self.finalized = seg.offset;
            self.key = seg.key.map(<[u8]>::to_vec);
        }
        self.buf.extend_from_slice(seg.text);
        if self.buf.len() >= self.keep + self.hold + 16 * 1024 {
            self.sync(det, report, loc);
        }
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
        self.found.clear();
        det.scan(&self.buf, self.base, self.key.as_deref(), &mut self.found);
        for f in &self.found {
            if f.end() > self.finalized && f.end() <= limit {
                report.add(f, loc);
            }
        }
    }
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
}

impl Inspector {
    /// An inspector with the given detector and default limits.
    pub fn new(detector: Arc<Detector>) -> Inspector {
        Inspector {
            detector,
            limits: Limits::default(),
            buffer_limit: DEFAULT_BUFFER_LIMIT,
            max_encoded_body: DEFAULT_MAX_ENCODED_BODY,
            hold_back: DEFAULT_HOLD_BACK,
        }
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
        let det = &*self.detector;
        let mut decoded = Vec::new();
        decode::percent_decode_form(path.as_bytes(), &mut decoded);
        self.scan_one(&decoded, None, Location::Url, report);
        if let Some(q) = query {
            decode::for_each_query_pair(q.as_bytes(), &mut |k, v| {
                self.scan_one(v, Some(k), Location::Url, report);
                self.scan_one(k, None, Location::Url, report);
            });
        }
        for (name, value) in headers {
            let n = name.as_str();
            if n.starts_with("proxy-") {
                // Hop-by-hop credentials for Sima itself: never forwarded.
                continue;
            }
            let v = value.as_bytes();
            if n == "cookie" {
                for pair in v.split(|b| *b == b';') {
                    let pair = pair.trim_ascii();
                    match pair.iter().position(|b| *b == b'=') {
                        Some(i) => {
                            decoded.clear();
                            decode::percent_decode_form(&pair[i + 1..], &mut decoded);
                            self.scan_one(&decoded, Some(&pair[..i]), Location::Header, report);
                        }
                        None => self.scan_one(pair, None, Location::Header, report),
                    }
                }
            } else {
                self.scan_one(v, Some(n.as_bytes()), Location::Header, report);
            }
        }
        let _ = det;
    }

    fn scan_one(&self, text: &[u8], key: Option<&[u8]>, loc: Location, report: &mut Report) {
        let mut found = Vec::new();
        self.detector.scan(text, 0, key, &mut found);
        for f in &found {
            report.add(f, loc);
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
            scanner: SegmentScanner::new(&self.detector),
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
    /// Feeds raw body bytes; findings are final up to the hold window.
    pub fn feed(&mut self, bytes: &[u8], report: &mut Report) -> Result<(), DecodeError> {
        let (scanner, det) = (&mut self.scanner, &*self.detector);
        self.pipeline.feed(bytes, &mut |seg| {
            scanner.push(det, &seg, report, Location::Body)
        })?;
        self.scanner.sync(det, report, Location::Body);
        Ok(())
    }

    /// Ends the body; everything is final.
    pub fn finish(&mut self, report: &mut Report) -> Result<(), DecodeError> {
        let (scanner, det) = (&mut self.scanner, &*self.detector);
        self.pipeline
            .finish(&mut |seg| scanner.push(det, &seg, report, Location::Body))?;
        self.scanner.flush(det, report, Location::Body);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
