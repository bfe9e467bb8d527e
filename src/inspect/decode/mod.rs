//! content-encoding and percent/JSON/multipart normalisation; pure, no IO
//!
//! The inspector feeds raw request-body bytes to a [`Pipeline`] in chunks of any size. The
//! pipeline undoes the `Content-Encoding` stack (gzip, deflate, br, zstd; decoded in reverse
//! order of the header) and normalises the decoded body according to its [`BodyKind`] into
//! the *normalised stream*, which it hands to a sink as [`Segment`]s.
//!
//! # The normalised stream
//!
//! * The stream is the concatenation of `Segment::text` of every segment given to the sink,
//!   in call order, over all `feed` and `finish` calls of one pipeline. `Segment::offset` is
//!   the position of `text[0]` in that stream: the first segment has offset 0 and each
//!   segment starts exactly where the previous one ended (no gaps, no overlap). Every byte
//!   the pipeline inserts (separators, decoded base64) is part of the stream and counted.
//! * However the body is chunked, the stream bytes and the key of every byte are identical;
//!   only the places where the stream is cut into segments differ (a value may arrive in
//!   several segments, and neighbouring bytes with the same key may share one segment).
//! * Neighbouring values (JSON keys, strings and numbers, form names and values, multipart
//!   part headers and bodies, decoded base64) are separated by one [`SEPARATOR`] byte with
//!   key `None`, so identifiers cannot merge across values. Empty values add nothing.
//! * JSON: object keys are emitted as text with key `None`; string values (escapes decoded,
//!   `\uXXXX` and surrogate pairs included, broken ones as U+FFFD) and numbers carry the
//!   nearest object key (inside arrays, the key of the enclosing member). `true`, `false`,
//!   `null` and punctuation are dropped. Once the bytes stop being JSON (bad structure), the
//!   last [`JSON_LOOKBACK`] raw bytes before the fault are emitted again as raw text,
//!   followed by the rest of the body raw, so nothing escapes the detectors.
//! * Untyped (no `Content-Type`, `text/plain`, `application/octet-stream`; also such a
//!   multipart part): as JSON when the first byte past white space is `{` or `[`, as
//!   markup when it is `<`, else as raw text. An untyped body or part that starts with
//!   gzip's or zip's magic bytes is opened as it streams and its content (each zip entry's
//!   after the entry's name) read as untyped, one layer deep (see `archive`).
//! * Form: names are emitted with key `None`, values with key = decoded name.
//! * Multipart: preamble and epilogue are raw text (key `None`); each part's header block is
//!   raw text (key `None`); the part body has key = its `Content-Disposition` name, and is
//!   normalised as JSON or form when the part's own `Content-Type` says so. A part that
//!   declares `Content-Transfer-Encoding: quoted-printable` is decoded first (soft line
//!   breaks removed, `=XX` escapes undone); only the decoded text is in the stream. A part
//!   that declares a `charset` is transcoded to UTF-8 (after quoted-printable). A part
//!   whose type is `multipart/*` with a boundary is parsed as multipart in turn, up to
//!   [`MAX_MULTIPART_NEST`] levels (an email's `mixed` > `alternative` > `related`).
//! * Message (`message/rfc822`, as a body or as a part): its header block is raw text (key
//!   `None`), then its body is read as a multipart part with those headers would be.
//! * Base64 runs (16 characters or more, standard or URL-safe) found in raw text, JSON
//!   string values, form values and multipart text parts are decoded; when the result is
//!   mostly printable it is inserted right after the run, between separators, with the key
//!   of the text it came from. A run longer than 4,096 characters is decoded as it goes, in
//!   blocks of 4,096: if its first block decodes to text, the insert follows that block and
//!   the rest of the run's characters are replaced by their decoded text (one insert, so an
//!   identifier across blocks is whole); a later block that is not text ends the insert, and
//!   it and the rest of the run stay raw characters. There is no cap on inserts per body (a
//!   cap would let a thousand decoys carry the real data past it): decoded text is at most
//!   three quarters of the raw bytes, and the body's size is capped already.
//! * Percent escapes in raw text, JSON string values, multipart text parts, part headers
//!   and form values (once the form's own escapes are undone: a URL in a form field keeps
//!   its own): a run of URL text (no white space, control byte, quote or angle
//!   bracket) holding a `%` is decoded (`%XX` and `+` as a space) from the last URL
//!   delimiter (`& = ? ; , :`) within 1,024 bytes before its first `%`: the pieces between
//!   delimiters that decoding changes are inserted after the run's stop (or at the end of
//!   the value), between separators, with the key of the text it came from, and their
//!   base64 runs are decoded in turn, and so, up to [`PCT_AGAIN`] more times, are the
//!   changed pieces of a decoded piece that still holds escapes (a URL encoded twice). The
//!   raw bytes stay in the stream. A run that reaches
//!   4,096 bytes from there is decoded as it streams: at 4,096 bytes the changed pieces
//!   before its last delimiter are inserted, then the piece in progress decoded (`+` kept,
//!   for the base64 it may hold), and the rest of the run's bytes are replaced by their
//!   decoded text, continuing it (an escape cut between chunks is carried).
//!
//! Bodies are never buffered whole: every stage keeps bounded state across chunk boundaries.
//!
//! # Limits and errors
//!
//! * The normalised stream may grow to [`STREAM_PER_BODY`] times `max_decoded_bytes`
//!   (checked after each piece fed): past it, [`DecodeError::TooLarge`].
//! * Every decoding stage's output is counted before it goes further; passing
//!   `max_decoded_bytes`, or `max_ratio` times the raw bytes fed so far (once past
//!   `ratio_grace_bytes`), stops decoding at once with [`DecodeError::TooLarge`] /
//!   [`DecodeError::RatioExceeded`]. Output is produced in 32 KiB pieces, so a bomb never
//!   allocates. The ratio uses the raw bytes fed *so far*, so whether a borderline body trips
//!   it can depend on chunking; nothing else does.
//! * Truncated or corrupt encoded input, or data after the end of a deflate/br stream, is
//!   [`DecodeError::Corrupt`] (an empty body is accepted for any coding). After any error the
//!   pipeline stays failed; what was produced before the error was handed to the sink.
//! * Malformed structure is never an error (except JSON nesting beyond `max_depth`): it
//!   degrades to raw text. A multipart body whose delimiters are not `CRLF--boundary` is all
//!   preamble, i.e. raw text with key `None`.

use base64::Engine as _;

mod archive;
mod charset;
mod codec;
mod emit;
mod form;
mod json;
mod markup;
mod mime;
mod runs;
#[cfg(test)]
mod tests;

use {archive::*, charset::*, codec::*, emit::*, form::*, json::*, markup::*, mime::*, runs::*};

/// The byte inserted between neighbouring values of the normalised stream.
pub const SEPARATOR: u8 = b'\n';
/// The normalised stream of a body may be this many times `max_decoded_bytes` long: room
/// for a body's own text and what is decoded from it and inserted (base64, percent
/// escapes, nested readings, files), not for a body of small bombs.
pub const STREAM_PER_BODY: u64 = 4;
/// How many raw bytes before the point where JSON parsing failed are emitted again as raw text.
pub const JSON_LOOKBACK: usize = 64;
/// Longest object key / field / part name kept as a segment key (longer names are truncated
/// for key purposes; the full name is still emitted as text).
pub const MAX_KEY_LEN: usize = 256;
/// Shortest base64 run decoded.
const BASE64_MIN_RUN: usize = 16;
/// Longest base64 run decoded whole when it ends, and the block size in which a longer one
/// is decoded as it goes (a multiple of 4, so blocks decode on their own).
const BASE64_MAX_RUN: usize = 4096;
const OUT_CHUNK: usize = 32 * 1024;
const FLUSH_AT: usize = 16 * 1024;
const MAX_PART_HEADER: usize = 8 * 1024;
/// The same for a whole email's header block, which relays and signatures lengthen
/// (`Received:`, `DKIM-Signature:`): its `Content-Type` may come late.
const MAX_MESSAGE_HEADER: usize = 64 * 1024;
const MAX_BOUNDARY: usize = 200;
/// Deepest nesting of multipart bodies parsed as such (an email: `mixed` holding
/// `alternative` holding `related`); deeper ones are read as text.
const MAX_MULTIPART_NEST: u32 = 8;
const ZSTD_MAX_BLOCK: usize = 128 * 1024;
const ZSTD_MIN_WINDOW_CAP: u64 = 8 << 20;
const ZSTD_MAX_WINDOW_CAP: u64 = 128 << 20;

/// A decoded text segment handed to the detectors, with the field name it sits under when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Normalised bytes (not necessarily UTF-8).
    pub text: &'a [u8],
    /// Decoded name of the JSON key, form field or multipart part the text belongs to.
    pub key: Option<&'a [u8]>,
    /// Offset of `text[0]` in this pipeline's normalised stream (see the module docs).
    pub offset: u64,
}

/// How the decoded body is structured, taken from its `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    /// Any `*/json`, `*+json` or other media type whose subtype mentions `json` (NDJSON too).
    Json,
    /// `application/x-www-form-urlencoded`; read as JSON when its first byte past white
    /// space opens an object or an array (`curl -d '{…}'` and PHP's curl send JSON so typed).
    Form,
    /// `multipart/*` with a usable `boundary` parameter.
    Multipart {
        /// The boundary parameter, without the leading `--`.
        boundary: Vec<u8>,
    },
    /// HTML and XML (`text/html`, `*/xml`, `*+xml`: XHTML, SOAP, Atom): text whose
    /// character references (`&#64;`, `&#x40;`, `&commat;`) are read as the characters
    /// they stand for, as the receiver reads them.
    Markup,
    /// A whole email (`message/rfc822`, `message/global`: a mail API's raw upload): its
    /// header block, then its body read by the message's own `Content-Type` and
    /// `Content-Transfer-Encoding`, as a multipart part is.
    Message,
    /// No `Content-Type`, or a generic one (`text/plain`, `application/octet-stream`):
    /// read as JSON when its first byte past white space opens an object or an array
    /// (Python's `requests.post(url, data=json.dumps(…))` sends no type, and escapes every
    /// character outside ASCII as `\uXXXX`), as [`BodyKind::Markup`] when it is `<` (an
    /// XML or SOAP document posted the same way), as raw text otherwise; a body that starts
    /// with gzip's magic bytes is a gzip file, decompressed and read as untyped in turn
    /// (`application/gzip` is untyped too).
    Untyped,
    /// Any other type: scanned as raw text.
    Text,
}

impl BodyKind {
    /// Classifies a `Content-Type` header value; a missing or generic type is
    /// [`BodyKind::Untyped`], other unknown types [`BodyKind::Text`].
    pub fn from_content_type(content_type: Option<&str>) -> BodyKind {
        let Some(ct) = content_type else {
            return BodyKind::Untyped;
        };
        if generic_type(ct.as_bytes()) {
            return BodyKind::Untyped;
        }
        match media_class(ct.as_bytes()) {
            MediaClass::Json => BodyKind::Json,
            MediaClass::Form => BodyKind::Form,
            MediaClass::Multipart => match header_param(ct.as_bytes(), b"boundary") {
                Some(b) if !b.is_empty() && b.len() <= MAX_BOUNDARY => {
                    BodyKind::Multipart { boundary: b }
                }
                _ => BodyKind::Text,
            },
            MediaClass::Markup => BodyKind::Markup,
            MediaClass::Message => BodyKind::Message,
            MediaClass::Other => BodyKind::Text,
        }
    }
}

/// One content coding of a `Content-Encoding` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    /// `gzip` / `x-gzip` (multi-member streams accepted).
    Gzip,
    /// `deflate`: zlib-wrapped, or raw deflate as some clients send it (detected).
    Deflate,
    /// `br` (Brotli, standard window).
    Br,
    /// `zstd` (Zstandard, one or more frames).
    Zstd,
    /// `identity`: no transformation.
    Identity,
}

/// Parses a `Content-Encoding` value such as `"gzip, br"` into codings in header order
/// (the order in which they were applied). Empty list elements are skipped; names are
/// case-insensitive. An unknown coding is `Err(Unsupported(name))`.
pub fn parse_content_encoding(value: &str) -> Result<Vec<Coding>, DecodeError> {
    let mut out = Vec::new();
    for token in value.split(',') {
        let t = token.trim_matches(|c| c == ' ' || c == '\t');
        if t.is_empty() {
            continue;
        }
        let coding = if t.eq_ignore_ascii_case("gzip") || t.eq_ignore_ascii_case("x-gzip") {
            Coding::Gzip
        } else if t.eq_ignore_ascii_case("deflate") {
            Coding::Deflate
        } else if t.eq_ignore_ascii_case("br") {
            Coding::Br
        } else if t.eq_ignore_ascii_case("zstd") {
            Coding::Zstd
        } else if t.eq_ignore_ascii_case("identity") {
            Coding::Identity
        } else {
            return Err(DecodeError::Unsupported(t.chars().take(64).collect()));
        };
        out.push(coding);
    }
    Ok(out)
}

/// Resource limits of one [`Pipeline`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes any decoding stage may produce (for an identity body: the body size).
    /// Default 16 MiB.
    pub max_decoded_bytes: u64,
    /// Most bytes any decoding stage may produce per raw body byte fed so far. Default 100.
    pub max_ratio: u32,
    /// Deepest JSON nesting of arrays and objects accepted. Default 512.
    pub max_depth: u32,
    /// Most non-identity content codings. Default 3.
    pub max_encodings: usize,
    /// `max_ratio` is only enforced once a stage has produced more than this many bytes, so
    /// small, very compressible bodies pass. Default 1 MiB.
    pub ratio_grace_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decoded_bytes: 16 << 20,
            max_ratio: 100,
            max_depth: 512,
            max_encodings: 3,
            ratio_grace_bytes: 1 << 20,
        }
    }
}

/// Why a body could not be decoded. After any error the pipeline stays failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A content coding this module does not implement (name as given), or a zstd feature
    /// (dictionary, oversized window) it refuses.
    #[error("unsupported content coding: {0}")]
    Unsupported(String),
    /// The encoded body is malformed or truncated.
    #[error("corrupt encoded body: {0}")]
    Corrupt(String),
    /// A decoding stage produced more than `max_decoded_bytes` (for an identity body: the
    /// body is larger).
    #[error("the body, decoded, exceeds the {limit} bytes inspected (inspect.max_body_bytes)")]
    TooLarge {
        /// The configured `max_decoded_bytes`.
        limit: u64,
    },
    /// A decoding stage produced more than `max_ratio` bytes per raw byte.
    #[error("decompression ratio exceeds {limit}: {decoded} bytes decoded from {encoded}")]
    RatioExceeded {
        /// The configured `max_ratio`.
        limit: u32,
        /// Bytes the stage would have produced.
        decoded: u64,
        /// Raw body bytes fed so far.
        encoded: u64,
    },
    /// JSON nesting went deeper than `max_depth`.
    #[error("json nesting deeper than {limit}")]
    TooDeep {
        /// The configured `max_depth`.
        limit: u32,
    },
    /// More non-identity content codings than `max_encodings`.
    #[error("too many content codings: {count} (limit {limit})")]
    TooManyEncodings {
        /// Non-identity codings in the header.
        count: usize,
        /// The configured `max_encodings`.
        limit: usize,
    },
    /// `feed` or `finish` was called after `finish`.
    #[error("pipeline already finished")]
    Finished,
}

fn corrupt(msg: &str) -> DecodeError {
    DecodeError::Corrupt(msg.to_string())
}

/// Receives each segment and whether it ends its run of same-key text (see [`Pipeline::feed_runs`]).
type Sink<'s> = dyn FnMut(Segment<'_>, bool) + 's;
type Out<'s> = dyn FnMut(&[u8]) -> Result<(), DecodeError> + 's;

/// Streaming pipeline: content decoding (stacked, applied in reverse order of the header) then structure-aware normalisation.
pub struct Pipeline {
    stages: Vec<Stage>,
    norm: Normaliser,
    limits: Limits,
    raw_in: u64,
    decoded: u64,
    failed: Option<DecodeError>,
    finished: bool,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("stages", &self.stages.len())
            .field("raw_in", &self.raw_in)
            .field("decoded", &self.decoded)
            .field("emitted", &self.norm.em.emitted)
            .field("failed", &self.failed)
            .field("finished", &self.finished)
            .finish()
    }
}

impl Pipeline {
    /// Builds a pipeline. `codings` is in header order (as from [`parse_content_encoding`]);
    /// identity entries are ignored. More than `limits.max_encodings` others is
    /// `Err(TooManyEncodings)`.
    pub fn new(
        codings: Vec<Coding>,
        kind: BodyKind,
        limits: Limits,
    ) -> Result<Pipeline, DecodeError> {
        let real: Vec<Coding> = codings
            .into_iter()
            .filter(|c| *c != Coding::Identity)
            .collect();
        if real.len() > limits.max_encodings {
            return Err(DecodeError::TooManyEncodings {
                count: real.len(),
                limit: limits.max_encodings,
            });
        }
        let stages = real
            .iter()
            .rev()
            .filter_map(|c| Codec::new(*c, &limits).map(|codec| Stage { codec, produced: 0 }))
            .collect();
        Ok(Pipeline {
            stages,
            norm: Normaliser::new(kind, &limits),
            limits,
            raw_in: 0,
            decoded: 0,
            failed: None,
            finished: false,
        })
    }

    /// Whether the body's text can arrive spelled in escapes of up to six raw bytes a
    /// character (JSON's `\u0041`, markup's `&#x41;`; a multipart body's parts may be
    /// either), so that a block of text read before it is decoded spans up to six times
    /// its length raw.
    pub fn spelled_in_escapes(&self) -> bool {
        matches!(
            self.norm.mode,
            Mode::Json(_)
                | Mode::Multipart(_)
                | Mode::Markup(_)
                | Mode::Sniff { .. }
                | Mode::Archive(_)
        )
    }

    /// Raw bytes a character of the body's text takes at most: 2 for a body decoded from
    /// UTF-16 (declared, or marked by its byte order mark among the bytes fed so far), else 1
    /// (a window that must hold so many characters of text holds this many times the bytes).
    pub fn raw_bytes_per_char(&self) -> usize {
        match self.stages.last().map(|s| &s.codec) {
            Some(Codec::Charset(t)) if t.wide() => 2,
            _ => 1,
        }
    }

    /// Convenience constructor from the raw `Content-Type` and `Content-Encoding` values.
    pub fn from_headers(
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        limits: Limits,
    ) -> Result<Pipeline, DecodeError> {
        let codings = match content_encoding {
            Some(v) => parse_content_encoding(v)?,
            None => Vec::new(),
        };
        let kind = BodyKind::from_content_type(content_type);
        let charset = content_type.and_then(|ct| header_param(ct.as_bytes(), b"charset"));
        let sniff_bom = !matches!(kind, BodyKind::Multipart { .. } | BodyKind::Message);
        let mut p = Pipeline::new(codings, kind, limits)?;
        if let Some(t) = transcoder(charset.as_deref(), sniff_bom) {
            p.stages.push(Stage {
                codec: Codec::Charset(Box::new(t)),
                produced: 0,
            });
        }
        Ok(p)
    }

    /// Feed raw bytes; calls `sink` with zero or more normalised segments. Segments are contiguous pieces of the normalised stream. Text belonging to one JSON string / form value / multipart part may be split over several calls to sink, but each segment carries its key and offsets are consistent (see the module docs). Everything produced is handed to `sink` before this returns, also when it returns an error.
    pub fn feed(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(Segment<'_>),
    ) -> Result<(), DecodeError> {
        self.feed_runs(input, &mut |seg, _| sink(seg))
    }

    /// [`Pipeline::feed`], also telling the sink whether each segment ends a *run* (a
    /// maximal stretch of the stream with one key): when `true`, the next segment, if any,
    /// has another key. `false` promises nothing. A scanner can then scan a run that
    /// arrives whole in place instead of gathering it first.
    pub fn feed_runs(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(Segment<'_>, bool),
    ) -> Result<(), DecodeError> {
        self.usable()?;
        self.raw_in = self.raw_in.saturating_add(input.len() as u64);
        let result = self.run(input, false, sink);
        self.settle(result, sink)
    }

    /// Ends the body: flushes every stage and the normaliser. A truncated or corrupt encoded
    /// stream is `Err(Corrupt)`; an unterminated JSON value or multipart body is not an error
    /// (its bytes were already emitted).
    pub fn finish(&mut self, sink: &mut dyn FnMut(Segment<'_>)) -> Result<(), DecodeError> {
        self.finish_runs(&mut |seg, _| sink(seg))
    }

    /// [`Pipeline::finish`] with run ends marked as in [`Pipeline::feed_runs`].
    pub fn finish_runs(
        &mut self,
        sink: &mut dyn FnMut(Segment<'_>, bool),
    ) -> Result<(), DecodeError> {
        self.usable()?;
        self.finished = true;
        let result = self.run(&[], true, sink);
        self.settle(result, sink)
    }

    /// Bytes produced by content decoding so far (the size of the decoded body fed to the
    /// normaliser; for an identity body, the raw bytes fed).
    pub fn decoded_bytes(&self) -> u64 {
        self.decoded
    }

    /// Raw (encoded) bytes fed so far.
    pub fn raw_bytes(&self) -> u64 {
        self.raw_in
    }

    /// Length of the normalised stream handed to the sink so far (the next segment's offset).
    pub fn emitted_bytes(&self) -> u64 {
        self.norm.em.emitted
    }

    fn usable(&self) -> Result<(), DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.finished {
            return Err(DecodeError::Finished);
        }
        Ok(())
    }

    fn settle(
        &mut self,
        result: Result<(), DecodeError>,
        sink: &mut Sink<'_>,
    ) -> Result<(), DecodeError> {
        self.norm.flush(sink);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn run(&mut self, input: &[u8], finish: bool, sink: &mut Sink<'_>) -> Result<(), DecodeError> {
        let limits = self.limits;
        let raw_in = self.raw_in;
        let Pipeline {
            stages,
            norm,
            decoded,
            ..
        } = self;
        let mut last = |chunk: &[u8]| -> Result<(), DecodeError> {
            let total = decoded.saturating_add(chunk.len() as u64);
            if total > limits.max_decoded_bytes {
                return Err(DecodeError::TooLarge {
                    limit: limits.max_decoded_bytes,
                });
            }
            *decoded = total;
            norm.feed(chunk, sink)?;
            norm.em.fault.take().map_or(Ok(()), Err)?;
            // Text decoded inside the body (base64, nested readings, files) adds to the
            // stream; a body made of small bombs in readings that have no budget of their
            // own (a short gzip run inside a JSON string) stops here.
            if norm.em.emitted > limits.max_decoded_bytes.saturating_mul(STREAM_PER_BODY) {
                return Err(DecodeError::TooLarge {
                    limit: limits.max_decoded_bytes,
                });
            }
            Ok(())
        };
        drive(stages, input, finish, &limits, raw_in, &mut last)?;
        if finish {
            norm.finish(sink)?;
        }
        norm.em.fault.take().map_or(Ok(()), Err)
    }
}

fn check_limits(limits: &Limits, total: u64, raw_in: u64) -> Result<(), DecodeError> {
    if total > limits.max_decoded_bytes {
        return Err(DecodeError::TooLarge {
            limit: limits.max_decoded_bytes,
        });
    }
    if total > limits.ratio_grace_bytes
        && total > raw_in.saturating_mul(u64::from(limits.max_ratio))
    {
        return Err(DecodeError::RatioExceeded {
            limit: limits.max_ratio,
            decoded: total,
            encoded: raw_in,
        });
    }
    Ok(())
}

/// Pushes `input` through `stages` (first = outermost coding) into `last`; with `finish`,
/// ends every stage in order. Each stage's output is checked against the limits before it
/// goes any further.
fn drive(
    stages: &mut [Stage],
    input: &[u8],
    finish: bool,
    limits: &Limits,
    raw_in: u64,
    last: &mut Out<'_>,
) -> Result<(), DecodeError> {
    let Some((first, rest)) = stages.split_first_mut() else {
        return if input.is_empty() {
            Ok(())
        } else {
            last(input)
        };
    };
    let Stage { codec, produced } = first;
    let mut forward = |chunk: &[u8]| -> Result<(), DecodeError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let total = produced.saturating_add(chunk.len() as u64);
        check_limits(limits, total, raw_in)?;
        *produced = total;
        drive(rest, chunk, false, limits, raw_in, last)
    };
    if !input.is_empty() {
        codec.push(input, &mut forward)?;
    }
    if finish {
        codec.finish(&mut forward)?;
        drive(rest, &[], true, limits, raw_in, last)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------------------

struct Normaliser {
    mode: Mode,
    em: Emitter,
}

enum Mode {
    Text,
    Markup(Box<Entities>),
    Json(Box<Json>),
    Form(Box<Form>),
    Multipart(Box<Multipart>),
    /// An untyped body that is a gzip or zip file.
    Archive(Box<Archive>),
    /// [`BodyKind::Untyped`] or [`BodyKind::Form`] before its first byte past white space
    /// (the white space so far is held, up to [`SNIFF_MAX_BLANK`] bytes).
    Sniff {
        held: Vec<u8>,
        limits: Limits,
        /// Declared a form: read as one unless it opens as JSON.
        form: bool,
        /// May be a gzip or zip file (an untyped body, not already inside one).
        archive: bool,
    },
}

/// Most leading white space an untyped body may have and still be read as JSON.
const SNIFF_MAX_BLANK: usize = 4096;

/// How an untyped body (or one typed as a form) reads, judged by its first byte past
/// white space.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    /// Gzip's magic bytes `1f 8b` first (where archives are opened).
    Gzip,
    /// A zip file's `PK\x03\x04` first (where archives are opened): a `.zip`, `.xlsx`,
    /// `.docx` or `.odt` file.
    Zip,
    /// `{` or `[`: JSON.
    Json,
    /// `<`: HTML or XML (`requests.post(url, data=soap_envelope)` sends no type either),
    /// whose character references are read.
    Markup,
    Text,
}

/// Decides how an untyped text whose leading white space so far is `held` reads, given
/// its next piece: `None` while only white space has come (then `data` joined `held`),
/// else by the first other byte; with `archive`, a body whose first bytes are gzip's or
/// zip's magic is [`Sniffed::Gzip`] or [`Sniffed::Zip`] (a first piece that is a prefix of
/// a magic is held until the next piece tells).
fn sniff(held: &mut Vec<u8>, data: &[u8], archive: bool) -> Option<Sniffed> {
    if archive && !data.is_empty() {
        // A magic opens the body: `held` is empty or a prefix of one.
        let mut head = [0u8; 4];
        let n = held.len().saturating_add(data.len()).min(head.len());
        for (slot, &b) in head.iter_mut().zip(held.iter().chain(data)) {
            *slot = b;
        }
        let head = head.get(..n).unwrap_or(&[]);
        for (magic, kind) in [(GZIP_MAGIC, Sniffed::Gzip), (ZIP_MAGIC, Sniffed::Zip)] {
            if head.starts_with(magic) {
                return Some(kind);
            }
            if magic.starts_with(head) {
                held.extend_from_slice(data);
                return None;
            }
        }
        if matches!(held.first(), Some(0x1f | b'P')) {
            return Some(Sniffed::Text);
        }
    }
    // A UTF-8 byte order mark counts as white space.
    let blank = data
        .iter()
        .take_while(|&&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0xef | 0xbb | 0xbf))
        .count();
    let within = held.len() + blank <= SNIFF_MAX_BLANK;
    match data.get(blank) {
        None if within => {
            held.extend_from_slice(data);
            None
        }
        Some(b'{' | b'[') if within => Some(Sniffed::Json),
        Some(b'<') if within => Some(Sniffed::Markup),
        _ => Some(Sniffed::Text),
    }
}

impl Normaliser {
    /// The reading of a body of `kind`: its own stream, in which base64 runs that encode a
    /// gzip or zip file are opened.
    fn new(kind: BodyKind, limits: &Limits) -> Self {
        let max_depth = limits.max_depth;
        let mode = match kind {
            BodyKind::Json => Mode::Json(Box::new(Json::new(max_depth, None))),
            // `curl -d '{…}'` and PHP's curl send JSON typed as a form.
            BodyKind::Form => Mode::Sniff {
                held: Vec::new(),
                limits: *limits,
                form: true,
                archive: false,
            },
            BodyKind::Multipart { boundary } => {
                Mode::Multipart(Box::new(Multipart::new(&boundary, *limits, 0)))
            }
            BodyKind::Markup => Mode::Markup(Box::default()),
            BodyKind::Message => Mode::Multipart(Box::new(Multipart::message(*limits, 0))),
            BodyKind::Untyped => return Normaliser::untyped(limits, true),
            BodyKind::Text => Mode::Text,
        };
        Normaliser {
            mode,
            em: Emitter {
                archives: true,
                ..Emitter::default()
            },
        }
    }

    /// The reading of an untyped body; with `archive`, one that is a gzip or zip file,
    /// or holds one in a base64 run, is opened (not inside one already: an archive is
    /// opened one layer deep).
    fn untyped(limits: &Limits, archive: bool) -> Self {
        Normaliser {
            mode: Mode::Sniff {
                held: Vec::new(),
                limits: *limits,
                form: false,
                archive,
            },
            em: Emitter {
                archives: archive,
                ..Emitter::default()
            },
        }
    }

    /// The reading of a JSON string value that opens as JSON, as JSON, `nest` levels more.
    fn json_in_string(nest: u8) -> Self {
        let mut json = Json::new(JSON_NESTED_DEPTH, None);
        json.nest = nest;
        Self::reading_decoded(Mode::Json(Box::new(json)))
    }

    /// The reading of a JSON string value that opens with `<` (an email API's `"html"`),
    /// as markup: its references are undone and its inline tags read through.
    fn markup_in_string() -> Self {
        Self::reading_decoded(Mode::Markup(Box::default()))
    }

    /// A reading of text decoded already (see [`Emitter::nested`]).
    fn reading_decoded(mode: Mode) -> Self {
        Normaliser {
            mode,
            em: Emitter {
                nested: true,
                ..Emitter::default()
            },
        }
    }

    /// The reading of text decoded from a base64 or hex run, whose first piece is `first`,
    /// when it starts as a MIME message, or opens as JSON (Kinesis's `Data`, a JWT's
    /// claims, a base64 `state`): read as JSON, its `\u` escapes are undone and its keys
    /// give their values context.
    ///
    /// With `archive` (the run encodes a gzip or zip file, see [`B64::opens_archive`]), the
    /// decoded bytes are that file, opened as a body's would be, under the default limits
    /// and the stream's own budget.
    fn nested(first: &[u8], archive: bool) -> Option<Self> {
        let limits = Limits::default();
        let mode = if archive && first.starts_with(GZIP_MAGIC) {
            Mode::Archive(Box::new(Archive::gzip(&limits)))
        } else if archive && first.starts_with(ZIP_MAGIC) {
            Mode::Archive(Box::new(Archive::zip(&limits)))
        } else if opens_as_json(first) {
            Mode::Json(Box::new(Json::new(JSON_NESTED_DEPTH, None)))
        } else if looks_like_mime(first) {
            // Decoded text: a gzip or zip file in it is not opened (see `Part::archives`).
            let limits = Limits {
                max_depth: JSON_NESTED_DEPTH,
                ..Limits::default()
            };
            let mut m = Multipart::message(limits, 0);
            m.part.archives = false;
            Mode::Multipart(Box::new(m))
        } else {
            return None;
        };
        Some(Self::reading_decoded(mode))
    }

    fn feed(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), DecodeError> {
        if let Mode::Sniff {
            held,
            limits,
            form,
            archive,
        } = &mut self.mode
        {
            let Some(sniffed) = sniff(held, data, *archive) else {
                return Ok(());
            };
            let held = std::mem::take(held);
            self.mode = match sniffed {
                Sniffed::Gzip => Mode::Archive(Box::new(Archive::gzip(limits))),
                Sniffed::Zip => Mode::Archive(Box::new(Archive::zip(limits))),
                Sniffed::Json => Mode::Json(Box::new(Json::new(limits.max_depth, None))),
                _ if *form => Mode::Form(Box::default()),
                Sniffed::Markup => Mode::Markup(Box::default()),
                Sniffed::Text => Mode::Text,
            };
            if !held.is_empty() {
                self.feed(&held, sink)?;
            }
        }
        let em = &mut self.em;
        match &mut self.mode {
            Mode::Text | Mode::Sniff { .. } => {
                em.value(data, None, sink);
                Ok(())
            }
            Mode::Markup(m) => {
                m.feed(data, None, em, sink);
                Ok(())
            }
            Mode::Json(j) => j.feed(data, em, sink),
            Mode::Form(f) => {
                f.feed(data, em, sink);
                Ok(())
            }
            Mode::Multipart(m) => m.feed(data, em, sink),
            Mode::Archive(a) => a.feed(data, None, em, sink),
        }
    }

    /// Hands on what the emitter holds.
    fn flush(&mut self, sink: &mut Sink<'_>) {
        self.em.flush(false, sink);
    }

    fn finish(&mut self, sink: &mut Sink<'_>) -> Result<(), DecodeError> {
        let em = &mut self.em;
        match &mut self.mode {
            Mode::Text => em.end_value(None, sink),
            Mode::Sniff { held, form, .. } => {
                // Nothing but white space: text, or a form's first name.
                if *form {
                    let mut f = Form::default();
                    f.feed(held, em, sink);
                    f.finish(em, sink);
                } else {
                    em.value(held, None, sink);
                    em.end_value(None, sink);
                }
            }
            Mode::Markup(m) => m.finish(None, em, sink),
            Mode::Json(j) => j.finish(em, sink),
            Mode::Form(f) => f.finish(em, sink),
            Mode::Multipart(m) => m.finish(em, sink)?,
            Mode::Archive(a) => a.finish(None, em, sink)?,
        }
        Ok(())
    }
}

/// Whether decoded text opens as a JSON object or array: `{` or `[` first, past white
/// space.
fn opens_as_json(text: &[u8]) -> bool {
    matches!(
        text.iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n')),
        Some(b'{' | b'[')
    )
}

/// JSON nesting limit inside a decoded message (its JSON parts are small documents).
const JSON_NESTED_DEPTH: u32 = 64;

/// Whether decoded text starts as a MIME message: a header block (lines `Name: value`,
/// folded lines allowed) that names a MIME field (`MIME-Version`, `Content-Type`,
/// `Content-Transfer-Encoding`) before its first empty line.
fn looks_like_mime(text: &[u8]) -> bool {
    // Most decoded text (a JWT's JSON, a document) fails on its first byte or first line.
    if !text.first().is_some_and(u8::is_ascii_alphabetic) {
        return false;
    }
    let mut mime = false;
    let mut rest = text;
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = rest.get(..end).unwrap_or(&[]);
        rest = rest.get(end + 1..).unwrap_or(&[]);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return mime;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            continue;
        }
        let name_end = line
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || b == b'-'))
            .unwrap_or(line.len());
        if name_end == 0 || line.get(name_end) != Some(&b':') {
            return false;
        }
        let name = line.get(..name_end).unwrap_or(&[]);
        mime |= name.eq_ignore_ascii_case(b"mime-version")
            || name.eq_ignore_ascii_case(b"content-type")
            || name.eq_ignore_ascii_case(b"content-transfer-encoding");
    }
    // The header block goes on past this piece.
    mime
}

fn hex_val(c: u8) -> Option<u8> {
    Some(HEX_VALUE[usize::from(c)]).filter(|&v| v < 16)
}

// ---------------------------------------------------------------------------------------
// One-shot helpers
// ---------------------------------------------------------------------------------------

/// Appends the form-decoding of `input` to `out`: `%XX` becomes the byte, `+` a space;
/// invalid or truncated escapes (`%zz`, `%4`) are kept literally.
pub fn percent_decode_form(input: &[u8], out: &mut Vec<u8>) {
    percent_decode_with(input, out, true);
}

/// Appends the percent-decoding of `input` to `out`, `+` kept as it is (a header value, not
/// a form); invalid or truncated escapes are kept literally.
pub fn percent_decode(input: &[u8], out: &mut Vec<u8>) {
    percent_decode_with(input, out, false);
}

fn percent_decode_with(input: &[u8], out: &mut Vec<u8>, plus_is_space: bool) {
    out.reserve(input.len());
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        i += 1;
        match c {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hi = input.get(i).copied().and_then(hex_val);
                let lo = input.get(i + 1).copied().and_then(hex_val);
                if let (Some(h), Some(l)) = (hi, lo) {
                    out.push(h << 4 | l);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            _ => out.push(c),
        }
    }
}

/// Normalises one value of a request head (a path segment, a query parameter, a header, a
/// cookie) as body text is normalised: when it holds base64 runs that decode to text, `out`
/// becomes the value with each decoded text inserted after its run, between separators,
/// and the answer is true. Otherwise false (`out` is then scratch): scan the value as it
/// is. A JWT's claims, a base64 `state` parameter or a base64 user-context header are read
/// this way.
///
/// Runs and candidates are those of the body pipeline (see the module docs), without the
/// block-by-block decoding of long runs: a head is at most a few dozen KiB, all in memory.
pub fn normalise_value(value: &[u8], out: &mut Vec<u8>) -> bool {
    if !has_base64_candidate(value) {
        return false;
    }
    out.clear();
    // `value[..copied]` is in `out`; a separator is owed after a decoded text once anything
    // follows it, as the body pipeline's emitter does.
    let mut copied = 0;
    let mut inserted = false;
    let mut owed = false;
    let mut scratch = Vec::new();
    let raw_to = |out: &mut Vec<u8>, owed: &mut bool, raw: &[u8]| {
        if !raw.is_empty() {
            if std::mem::take(owed) {
                out.push(SEPARATOR);
            }
            out.extend_from_slice(raw);
        }
    };
    let flags = |c: u8| HEAD_CLASS[usize::from(c)];
    let mut i = 0;
    while i < value.len() {
        // A run: characters of the alphabet up to a stop or a pad, then its pads (after
        // which any character ends it).
        while value.get(i).is_some_and(|&c| flags(c) & H_RUN == 0) {
            i += 1;
        }
        let start = i;
        let mut seen = 0;
        while let Some(&c) = value.get(i) {
            let f = flags(c);
            if f & (H_RUN | H_PAD) != H_RUN {
                break;
            }
            seen |= f;
            i += 1;
        }
        let data = i - start;
        while value.get(i) == Some(&b'=') {
            i += 1;
        }
        let (len, pad) = (i - start, i - start - data);
        let (std, url) = (seen & H_STD != 0, seen & H_URL != 0);
        if len < BASE64_MIN_RUN || pad > 2 || (std && url) || data % 4 == 1 {
            continue;
        }
        // `hex_like`: read as hex, as `B64::decode` does (a UUID, a trace id, a hash do not
        // decode to text).
        let hex = pad == 0 && seen & H_NOT_HEX == 0;
        raw_to(out, &mut owed, value.get(copied..i).unwrap_or(&[]));
        copied = i;
        let mark = out.len();
        out.push(SEPARATOR);
        let run = value.get(start..start + data).unwrap_or(&[]);
        let decoded = if hex {
            let ok = hex_decode(run, &mut scratch);
            out.extend_from_slice(&scratch);
            ok
        } else {
            let engine = if url { &B64_URL_ENGINE } else { &B64_ENGINE };
            engine.decode_vec(run, out).is_ok()
        };
        if decoded && mostly_printable(out.get(mark + 1..).unwrap_or(&[])) {
            // Base64 of an email in a header: read it as a body would be. Decoded JSON (a
            // JWT's claims) stays text here, unlike in a body: a head value is scanned
            // under its own name, so its keys could give no context, and tokenising every
            // bearer token cost more than the rest of the head's scan.
            if looks_like_mime(out.get(mark + 1..).unwrap_or(&[])) {
                normalise_as_body(value, out);
                return true;
            }
            inserted = true;
            owed = true;
        } else {
            out.truncate(mark);
        }
    }
    raw_to(out, &mut owed, value.get(copied..).unwrap_or(&[]));
    inserted
}

/// Whether a value of the head still holds a percent escape once its own encoding is
/// undone: a URL or address encoded twice (`redirect_uri=…%3Femail%3Dasha%2540example.in`),
/// to be read with [`normalise_as_body`], which decodes such pieces again.
pub fn escaped_twice(value: &[u8]) -> bool {
    has_escape(value)
}

/// The body pipeline's reading of `value` as one text value, into `out`: base64 and hex
/// runs decoded, and the pieces of percent-escaped runs that decoding changes inserted
/// decoded, as in raw text.
#[cold]
#[inline(never)]
pub fn normalise_as_body(value: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut em = Emitter::default();
    let mut sink = |seg: Segment<'_>, _| out.extend_from_slice(seg.text);
    em.value(value, None, &mut sink);
    em.end_value(None, &mut sink);
    em.flush(false, &mut sink);
}

const H_RUN: u8 = 1;
const H_PAD: u8 = 2;
const H_STD: u8 = 4;
const H_URL: u8 = 8;
const H_NOT_HEX: u8 = 16;

/// What [`normalise_value`] needs of a byte, in one lookup: whether it belongs to a run (the
/// base64 alphabet of either kind, or `=`), is `=`, is of the standard or the URL-safe
/// alphabet only, and whether it keeps a run from being [`hex_like`].
const HEAD_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = match B64_CLASS[i] {
            B64_NONE => 0,
            B64_PAD => H_RUN | H_PAD | H_NOT_HEX,
            B64_STD => H_RUN | H_STD | H_NOT_HEX,
            B64_URL if c == b'-' => H_RUN | H_URL,
            B64_URL => H_RUN | H_URL | H_NOT_HEX,
            _ if c.is_ascii_hexdigit() => H_RUN,
            _ => H_RUN | H_NOT_HEX,
        };
        i += 1;
    }
    t
};

/// Whether `value` has a run of at least 16 base64-alphabet bytes (the shortest that is
/// decoded): a window of that many bytes with no stop in it. Skips ahead as the body
/// pipeline does, so most values cost a byte read per 16.
pub fn has_base64_candidate(value: &[u8]) -> bool {
    let stop = |c: u8| B64_CLASS[usize::from(c)] == B64_NONE;
    let mut i = 0;
    while let Some(&c) = value.get(i + BASE64_MIN_RUN - 1) {
        if stop(c) {
            i += BASE64_MIN_RUN;
            continue;
        }
        let window = value.get(i..i + BASE64_MIN_RUN - 1).unwrap_or(&[]);
        match window.iter().rposition(|&c| stop(c)) {
            Some(k) => i += k + 1,
            None => return true,
        }
    }
    false
}

/// Calls `f(decoded key, decoded value)` for each `&`-separated pair of a URL query string
/// (pass the part after `?`). Empty pairs are skipped; a pair without `=` has an empty value.
pub fn for_each_query_pair(query: &[u8], f: &mut dyn FnMut(&[u8], &[u8])) {
    let mut key = Vec::new();
    let mut value = Vec::new();
    for pair in query.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match memchr::memchr(b'=', pair) {
            Some(eq) => (
                pair.get(..eq).unwrap_or(&[]),
                pair.get(eq + 1..).unwrap_or(&[]),
            ),
            None => (pair, &[][..]),
        };
        key.clear();
        value.clear();
        percent_decode_form(k, &mut key);
        percent_decode_form(v, &mut value);
        f(&key, &value);
    }
}
