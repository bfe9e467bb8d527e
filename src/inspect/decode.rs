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
//!   markup when it is `<`, else as raw text.
//! * Form: names are emitted with key `None`, values with key = decoded name.
//! * Multipart: preamble and epilogue are raw text (key `None`); each part's header block is
//!   raw text (key `None`); the part body has key = its `Content-Disposition` name, and is
//!   normalised as JSON or form when the part's own `Content-Type` says so. A part that
//!   declares `Content-Transfer-Encoding: quoted-printable` is decoded first (soft line
//!   breaks removed, `=XX` escapes undone); only the decoded text is in the stream. A part
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
//! * Percent escapes in raw text, JSON string values, multipart text parts and part headers
//!   (form values are decoded already): a run of URL text (no white space, control byte, quote or angle
//!   bracket) holding a `%` is decoded (`%XX` and `+` as a space) from the last URL
//!   delimiter (`& = ? ; , :`) within 1,024 bytes before its first `%`: the pieces between
//!   delimiters that decoding changes are inserted after the run's stop (or at the end of
//!   the value), between separators, with the key of the text it came from, and their
//!   base64 runs are decoded in turn. The raw bytes stay in the stream. A run that reaches
//!   4,096 bytes from there is decoded as it streams: at 4,096 bytes the changed pieces
//!   before its last delimiter are inserted, then the piece in progress decoded (`+` kept,
//!   for the base64 it may hold), and the rest of the run's bytes are replaced by their
//!   decoded text, continuing it (an escape cut between chunks is carried).
//!
//! Bodies are never buffered whole: every stage keeps bounded state across chunk boundaries.
//!
//! # Limits and errors
//!
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

use std::io::Read as _;

use base64::Engine as _;
use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use flate2::{Crc, Decompress, FlushDecompress, Status};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// The byte inserted between neighbouring values of the normalised stream.
pub const SEPARATOR: u8 = b'\n';
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
    /// `application/x-www-form-urlencoded`.
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
    /// XML or SOAP document posted the same way), as raw text otherwise.
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
            norm: Normaliser::new(kind, limits.max_depth),
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
            Mode::Json(_) | Mode::Multipart(_) | Mode::Markup(_) | Mode::Sniff { .. }
        )
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
        Pipeline::new(codings, BodyKind::from_content_type(content_type), limits)
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
        self.norm.em.flush(false, sink);
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
            norm.feed(chunk, sink)
        };
        drive(stages, input, finish, &limits, raw_in, &mut last)?;
        if finish {
            norm.finish(sink)?;
        }
        Ok(())
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
// Content decoding
// ---------------------------------------------------------------------------------------

struct Stage {
    codec: Codec,
    produced: u64,
}

enum Codec {
    Gzip(Box<GzipDec>),
    Deflate(Box<DeflateDec>),
    Br(Box<BrDec>),
    Zstd(Box<ZstdDec>),
}

impl Codec {
    fn new(coding: Coding, limits: &Limits) -> Option<Codec> {
        Some(match coding {
            Coding::Gzip => Codec::Gzip(Box::new(GzipDec::new())),
            Coding::Deflate => Codec::Deflate(Box::new(DeflateDec::new())),
            Coding::Br => Codec::Br(Box::new(BrDec::new())),
            Coding::Zstd => Codec::Zstd(Box::new(ZstdDec::new(limits))),
            Coding::Identity => return None,
        })
    }

    fn push(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
        match self {
            Codec::Gzip(d) => d.push(input, out),
            Codec::Deflate(d) => d.push(input, out),
            Codec::Br(d) => d.push(input, out),
            Codec::Zstd(d) => d.push(input, out),
        }
    }

    fn finish(&mut self, out: &mut Out<'_>) -> Result<(), DecodeError> {
        match self {
            Codec::Gzip(d) => d.finish(),
            Codec::Deflate(d) => d.finish(),
            Codec::Br(d) => d.finish(),
            Codec::Zstd(d) => d.finish(out),
        }
    }
}

/// Inflates `input` into `buf`-sized pieces handed to `out` until the input is used up or
/// the deflate stream ends. Returns (bytes consumed, stream ended).
fn inflate(
    z: &mut Decompress,
    input: &[u8],
    buf: &mut [u8],
    mut crc: Option<&mut Crc>,
    what: &str,
    out: &mut Out<'_>,
) -> Result<(usize, bool), DecodeError> {
    let mut pos = 0;
    loop {
        let rest = input.get(pos..).unwrap_or(&[]);
        let (in0, out0) = (z.total_in(), z.total_out());
        let status = z
            .decompress(rest, buf, FlushDecompress::None)
            .map_err(|e| DecodeError::Corrupt(format!("{what}: {e}")))?;
        let consumed = (z.total_in() - in0) as usize;
        let produced = (z.total_out() - out0) as usize;
        pos += consumed;
        if produced > 0 {
            let piece = buf.get(..produced).unwrap_or(&[]);
            if let Some(c) = crc.as_mut() {
                c.update(piece);
            }
            out(piece)?;
        }
        if status == Status::StreamEnd {
            return Ok((pos, true));
        }
        if produced < buf.len() && (pos >= input.len() || (consumed == 0 && produced == 0)) {
            if pos < input.len() {
                return Err(DecodeError::Corrupt(format!("{what}: decoder stalled")));
            }
            return Ok((pos, false));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GzStep {
    Fixed,
    XLen,
    Extra,
    Name,
    Comment,
    Hcrc,
    Done,
}

/// Streaming parser of one gzip member header (RFC 1952).
struct GzHeader {
    step: GzStep,
    buf: [u8; 10],
    n: usize,
    flags: u8,
    left: usize,
}

impl GzHeader {
    fn new() -> Self {
        GzHeader {
            step: GzStep::Fixed,
            buf: [0; 10],
            n: 0,
            flags: 0,
            left: 0,
        }
    }

    fn take(&mut self, data: &[u8], i: &mut usize, want: usize) -> bool {
        while self.n < want {
            let Some(&b) = data.get(*i) else {
                return false;
            };
            if let Some(slot) = self.buf.get_mut(self.n) {
                *slot = b;
            }
            self.n += 1;
            *i += 1;
        }
        true
    }

    /// Returns (bytes consumed, header complete).
    fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), DecodeError> {
        let mut i = 0;
        loop {
            match self.step {
                GzStep::Fixed => {
                    if !self.take(data, &mut i, 10) {
                        return Ok((i, false));
                    }
                    if self.buf[0] != 0x1f || self.buf[1] != 0x8b {
                        return Err(corrupt("gzip: bad magic"));
                    }
                    if self.buf[2] != 8 {
                        return Err(corrupt("gzip: unknown compression method"));
                    }
                    self.flags = self.buf[3];
                    if self.flags & 0xe0 != 0 {
                        return Err(corrupt("gzip: reserved flag set"));
                    }
                    self.step = GzStep::XLen;
                    self.n = 0;
                }
                GzStep::XLen => {
                    if self.flags & 0x04 == 0 {
                        self.step = GzStep::Name;
                        continue;
                    }
                    if !self.take(data, &mut i, 2) {
                        return Ok((i, false));
                    }
                    self.left = usize::from(u16::from_le_bytes([self.buf[0], self.buf[1]]));
                    self.n = 0;
                    self.step = GzStep::Extra;
                }
                GzStep::Extra => {
                    let take = self.left.min(data.len().saturating_sub(i));
                    i += take;
                    self.left -= take;
                    if self.left > 0 {
                        return Ok((i, false));
                    }
                    self.step = GzStep::Name;
                }
                GzStep::Name | GzStep::Comment => {
                    let (flag, next) = if self.step == GzStep::Name {
                        (0x08, GzStep::Comment)
                    } else {
                        (0x10, GzStep::Hcrc)
                    };
                    if self.flags & flag != 0 {
                        let rest = data.get(i..).unwrap_or(&[]);
                        match memchr::memchr(0, rest) {
                            Some(k) => i += k + 1,
                            None => return Ok((data.len(), false)),
                        }
                    }
                    self.step = next;
                }
                GzStep::Hcrc => {
                    if self.flags & 0x02 != 0 && !self.take(data, &mut i, 2) {
                        return Ok((i, false));
                    }
                    self.step = GzStep::Done;
                }
                GzStep::Done => return Ok((i, true)),
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GzPhase {
    Header,
    Body,
    Trailer,
    Between,
}

/// gzip decoder: header parser, raw inflate with CRC-32, trailer check; multi-member.
struct GzipDec {
    phase: GzPhase,
    hdr: GzHeader,
    z: Decompress,
    crc: Crc,
    trailer: [u8; 8],
    tn: usize,
    seen: bool,
    buf: Vec<u8>,
}

impl GzipDec {
    fn new() -> Self {
        GzipDec {
            phase: GzPhase::Header,
            hdr: GzHeader::new(),
            z: Decompress::new(false),
            crc: Crc::new(),
            trailer: [0; 8],
            tn: 0,
            seen: false,
            buf: vec![0; OUT_CHUNK],
        }
    }

    fn push(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
        self.seen |= !input.is_empty();
        let mut i = 0;
        while i < input.len() {
            let rest = input.get(i..).unwrap_or(&[]);
            match self.phase {
                GzPhase::Between => {
                    self.hdr = GzHeader::new();
                    self.phase = GzPhase::Header;
                }
                GzPhase::Header => {
                    let (n, done) = self.hdr.feed(rest)?;
                    i += n;
                    if done {
                        self.z.reset(false);
                        self.crc.reset();
                        self.phase = GzPhase::Body;
                    }
                }
                GzPhase::Body => {
                    let (n, ended) = inflate(
                        &mut self.z,
                        rest,
                        &mut self.buf,
                        Some(&mut self.crc),
                        "gzip",
                        out,
                    )?;
                    i += n;
                    if ended {
                        self.tn = 0;
                        self.phase = GzPhase::Trailer;
                    }
                }
                GzPhase::Trailer => {
                    for &b in rest.iter().take(8 - self.tn) {
                        if let Some(slot) = self.trailer.get_mut(self.tn) {
                            *slot = b;
                        }
                        self.tn += 1;
                        i += 1;
                    }
                    if self.tn == 8 {
                        let t = self.trailer;
                        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
                        let size = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
                        if crc != self.crc.sum() {
                            return Err(corrupt("gzip: crc mismatch"));
                        }
                        if size != self.crc.amount() {
                            return Err(corrupt("gzip: length mismatch"));
                        }
                        self.phase = GzPhase::Between;
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), DecodeError> {
        match self.phase {
            GzPhase::Between => Ok(()),
            GzPhase::Header if !self.seen => Ok(()),
            _ => Err(corrupt("truncated gzip stream")),
        }
    }
}

/// `deflate` decoder: zlib (RFC 1950) or, when the first two bytes are no zlib header, raw
/// deflate (RFC 1951).
struct DeflateDec {
    z: Option<Decompress>,
    head: [u8; 2],
    hn: usize,
    ended: bool,
    buf: Vec<u8>,
}

impl DeflateDec {
    fn new() -> Self {
        DeflateDec {
            z: None,
            head: [0; 2],
            hn: 0,
            ended: false,
            buf: vec![0; OUT_CHUNK],
        }
    }

    fn push(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
        let mut input = input;
        if self.z.is_none() {
            while self.hn < 2 {
                let Some((&b, rest)) = input.split_first() else {
                    return Ok(());
                };
                self.head[self.hn] = b;
                self.hn += 1;
                input = rest;
            }
            let [cmf, flg] = self.head;
            let zlib = cmf & 0x0f == 8
                && cmf >> 4 <= 7
                && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0;
            self.z = Some(Decompress::new(zlib));
            let head = self.head;
            self.inflate(&head, out)?;
        }
        self.inflate(input, out)
    }

    fn inflate(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
        if input.is_empty() {
            return Ok(());
        }
        let Some(z) = self.z.as_mut() else {
            return Ok(());
        };
        if self.ended {
            return Err(corrupt("deflate: data after end of stream"));
        }
        let (n, ended) = inflate(z, input, &mut self.buf, None, "deflate", out)?;
        self.ended = ended;
        if n < input.len() {
            return Err(corrupt("deflate: data after end of stream"));
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), DecodeError> {
        if self.ended || self.hn == 0 {
            Ok(())
        } else {
            Err(corrupt("truncated deflate stream"))
        }
    }
}

/// Brotli decoder (standard window, at most 16 MiB of history).
struct BrDec {
    state: BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
    buf: Vec<u8>,
    seen: bool,
    done: bool,
}

impl BrDec {
    fn new() -> Self {
        BrDec {
            state: BrotliState::new_strict(
                StandardAlloc::default(),
                StandardAlloc::default(),
                StandardAlloc::default(),
            ),
            buf: vec![0; OUT_CHUNK],
            seen: false,
            done: false,
        }
    }

    fn push(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
        if input.is_empty() {
            return Ok(());
        }
        self.seen = true;
        if self.done {
            return Err(corrupt("br: data after end of stream"));
        }
        let mut avail_in = input.len();
        let mut in_off = 0;
        loop {
            let mut avail_out = self.buf.len();
            let mut out_off = 0;
            let mut total = 0;
            let res = BrotliDecompressStream(
                &mut avail_in,
                &mut in_off,
                input,
                &mut avail_out,
                &mut out_off,
                &mut self.buf,
                &mut total,
                &mut self.state,
            );
            if out_off > 0 {
                out(self.buf.get(..out_off).unwrap_or(&[]))?;
            }
            match res {
                BrotliResult::ResultSuccess => {
                    self.done = true;
                    if in_off < input.len() {
                        return Err(corrupt("br: data after end of stream"));
                    }
                    return Ok(());
                }
                BrotliResult::NeedsMoreInput => {
                    if in_off < input.len() {
                        return Err(corrupt("br: decoder stalled"));
                    }
                    return Ok(());
                }
                BrotliResult::NeedsMoreOutput => {}
                BrotliResult::ResultFailure => return Err(corrupt("br: invalid stream")),
            }
        }
    }

    fn finish(&mut self) -> Result<(), DecodeError> {
        if self.done || !self.seen {
            Ok(())
        } else {
            Err(corrupt("truncated br stream"))
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ZPhase {
    FrameStart,
    Blocks,
    Skip,
}

/// Zstandard decoder. Frames are cut into single blocks here so that the block decoder never
/// sees more than one block (at most 128 KiB of output) at a time; history is bounded by the
/// window cap checked before the frame is set up.
struct ZstdDec {
    dec: FrameDecoder,
    inbuf: Vec<u8>,
    phase: ZPhase,
    checksum: bool,
    skip_left: u64,
    window_cap: u64,
    seen: bool,
    buf: Vec<u8>,
}

fn zstd_err<E: std::fmt::Display>(e: E) -> DecodeError {
    DecodeError::Corrupt(format!("zstd: {e}"))
}

fn guarded<T, E: std::fmt::Display>(f: impl FnOnce() -> Result<T, E>) -> Result<T, DecodeError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(zstd_err),
        Err(_) => Err(corrupt("zstd: decoder failed on malformed input")),
    }
}

impl ZstdDec {
    fn new(limits: &Limits) -> Self {
        let window_cap = limits
            .max_decoded_bytes
            .clamp(ZSTD_MIN_WINDOW_CAP, ZSTD_MAX_WINDOW_CAP);
        let mut dec = FrameDecoder::new();
        dec.set_max_window_size(window_cap);
        ZstdDec {
            dec,
            inbuf: Vec::new(),
            phase: ZPhase::FrameStart,
            checksum: false,
            skip_left: 0,
            window_cap,
            seen: false,
            buf: vec![0; OUT_CHUNK],
        }
    }

    fn push(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
        self.seen |= !input.is_empty();
        self.inbuf.extend_from_slice(input);
        let mut pos = 0;
        let result = self.units(&mut pos, out);
        self.inbuf.drain(..pos.min(self.inbuf.len()));
        result
    }

    /// Consumes every complete unit (frame header, block, skippable frame) from `inbuf`.
    fn units(&mut self, pos: &mut usize, out: &mut Out<'_>) -> Result<(), DecodeError> {
        loop {
            let avail = self.inbuf.get(*pos..).unwrap_or(&[]);
            match self.phase {
                ZPhase::Skip => {
                    let n = (avail.len() as u64).min(self.skip_left);
                    *pos += n as usize;
                    self.skip_left -= n;
                    if self.skip_left > 0 {
                        return Ok(());
                    }
                    self.phase = ZPhase::FrameStart;
                }
                ZPhase::FrameStart => {
                    let Some(magic) = avail.get(..4) else {
                        return Ok(());
                    };
                    let magic = u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]);
                    if magic & 0xffff_fff0 == 0x184d_2a50 {
                        let Some(len) = avail.get(4..8) else {
                            return Ok(());
                        };
                        self.skip_left =
                            u64::from(u32::from_le_bytes([len[0], len[1], len[2], len[3]]));
                        *pos += 8;
                        self.phase = ZPhase::Skip;
                        continue;
                    }
                    if magic != 0xfd2f_b528 {
                        return Err(corrupt("zstd: bad magic"));
                    }
                    let Some(&fhd) = avail.get(4) else {
                        return Ok(());
                    };
                    let single = fhd & 0x20 != 0;
                    let did = [0usize, 1, 2, 4][usize::from(fhd & 3)];
                    let fcs = match fhd >> 6 {
                        0 => usize::from(single),
                        1 => 2,
                        2 => 4,
                        _ => 8,
                    };
                    let hlen = 5 + usize::from(!single) + did + fcs;
                    let Some(header) = avail.get(..hlen) else {
                        return Ok(());
                    };
                    if fhd & 0x08 != 0 {
                        return Err(corrupt("zstd: reserved frame header bit set"));
                    }
                    if did > 0
                        && header
                            .get(5 + usize::from(!single)..5 + usize::from(!single) + did)
                            .is_some_and(|d| d.iter().any(|&b| b != 0))
                    {
                        return Err(DecodeError::Unsupported("zstd with dictionary".to_string()));
                    }
                    let window = if single {
                        let mut v = [0u8; 8];
                        let start = 5 + did;
                        for (k, b) in header.iter().skip(start).take(fcs).enumerate() {
                            if let Some(slot) = v.get_mut(k) {
                                *slot = *b;
                            }
                        }
                        let raw = u64::from_le_bytes(v);
                        if fcs == 2 {
                            raw + 256
                        } else {
                            raw
                        }
                    } else {
                        let wd = header.get(5).copied().unwrap_or(0);
                        let base = 1u64 << (10 + u32::from(wd >> 3));
                        base + (base / 8) * u64::from(wd & 7)
                    };
                    if window > self.window_cap {
                        return Err(DecodeError::Unsupported(format!(
                            "zstd window of {window} bytes (limit {})",
                            self.window_cap
                        )));
                    }
                    let dec = &mut self.dec;
                    guarded(|| dec.reset(header))?;
                    self.checksum = fhd & 0x04 != 0;
                    *pos += hlen;
                    self.phase = ZPhase::Blocks;
                }
                ZPhase::Blocks => {
                    let Some(h) = avail.get(..3) else {
                        return Ok(());
                    };
                    let h = u32::from(h[0]) | u32::from(h[1]) << 8 | u32::from(h[2]) << 16;
                    let last = h & 1 != 0;
                    let size = (h >> 3) as usize;
                    let body = match (h >> 1) & 3 {
                        0 | 2 => size,
                        1 => 1,
                        _ => return Err(corrupt("zstd: reserved block type")),
                    };
                    if size > ZSTD_MAX_BLOCK {
                        return Err(corrupt("zstd: block too large"));
                    }
                    let unit = 3 + body + if last && self.checksum { 4 } else { 0 };
                    let Some(block) = avail.get(..unit) else {
                        return Ok(());
                    };
                    let dec = &mut self.dec;
                    guarded(|| dec.decode_blocks(block, BlockDecodingStrategy::UptoBlocks(1)))?;
                    *pos += unit;
                    self.drain(out)?;
                    if last {
                        if self.checksum {
                            let dec = &self.dec;
                            if let (Some(want), Some(got)) =
                                (dec.get_checksum_from_data(), dec.get_calculated_checksum())
                            {
                                if want != got {
                                    return Err(corrupt("zstd: checksum mismatch"));
                                }
                            }
                        }
                        self.phase = ZPhase::FrameStart;
                    }
                }
            }
        }
    }

    fn drain(&mut self, out: &mut Out<'_>) -> Result<(), DecodeError> {
        loop {
            let (dec, buf) = (&mut self.dec, &mut self.buf);
            let n = guarded(|| dec.read(buf))?;
            if n == 0 {
                return Ok(());
            }
            out(self.buf.get(..n).unwrap_or(&[]))?;
        }
    }

    fn finish(&mut self, out: &mut Out<'_>) -> Result<(), DecodeError> {
        if !self.seen {
            return Ok(());
        }
        if self.phase == ZPhase::FrameStart && self.inbuf.is_empty() {
            return self.drain(out);
        }
        Err(corrupt("truncated zstd stream"))
    }
}

// ---------------------------------------------------------------------------------------
// Output: segments, separators, base64
// ---------------------------------------------------------------------------------------

const B64_NONE: u8 = 0;
const B64_ALNUM: u8 = 1;
const B64_STD: u8 = 2;
const B64_URL: u8 = 3;
const B64_PAD: u8 = 4;

/// Length of the ASCII-alphanumeric prefix of `bytes`. Tests 16 bytes at a time with
/// range arithmetic the compiler vectorises (a table lookup per byte does not).
fn alnum_prefix(bytes: &[u8]) -> usize {
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

const B64_CLASS: [u8; 256] = {
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

const B64_ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// [`B64_ENGINE`] for the URL-safe alphabet.
const B64_URL_ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Tracks the current run of base64-alphabet bytes in value text.
#[derive(Default)]
struct B64 {
    run: Vec<u8>,
    len: usize,
    pad: usize,
    std: bool,
    url: bool,
    decoded: Vec<u8>,
    /// A long run decoded block by block: its first [`BASE64_MAX_RUN`] characters decoded
    /// to text, so from there on the run's decoded text goes into the stream in place of its
    /// characters, and `run` holds only the characters of the block not yet decoded.
    streaming: bool,
    /// The run is read as hex, not base64 (see [`hex_like`]): set by [`B64::decode`], so
    /// a streaming run's later blocks are read as its first was.
    hex: bool,
}

impl B64 {
    /// Counts one more run byte of class `cls` (its bytes are kept by [`B64::keep`]).
    fn count(&mut self, cls: u8) {
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
    fn keep(&mut self, bytes: &[u8]) {
        let room = BASE64_MAX_RUN.saturating_sub(self.run.len());
        self.run
            .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or(&[]));
    }

    fn reset(&mut self) {
        self.run.clear();
        self.len = 0;
        self.pad = 0;
        self.std = false;
        self.url = false;
        self.streaming = false;
        self.hex = false;
    }

    /// Whether a byte of class `cls` ends the run instead of going on with it.
    fn ended_by(&self, cls: u8) -> bool {
        cls == B64_NONE || (self.pad > 0 && cls != B64_PAD)
    }

    fn candidate(&self) -> bool {
        let data = self.len.saturating_sub(self.pad);
        (BASE64_MIN_RUN..=BASE64_MAX_RUN).contains(&self.len)
            && self.pad <= 2
            && !(self.std && self.url)
            && data % 4 != 1
    }

    /// Decodes the current run (or the first block of a long one, a `piece` of text) into
    /// `self.decoded`; true when it is worth emitting.
    fn decode(&mut self, piece: bool) -> bool {
        // A run of hex digits is not base64 of text (see `hex_like`), but it may be hex of
        // text (`"payload":"7b22656d61696c223a…"`). A UUID (dashes), a hash or a trace id
        // does not decode to text, and is left as it is.
        self.hex = hex_like(&self.run);
        if !self.decode_kept() {
            return false;
        }
        if piece {
            text_piece(&self.decoded)
        } else {
            mostly_printable(&self.decoded)
        }
    }

    /// Decodes the characters in `run` (a whole short run, or one block of a long run) into
    /// `self.decoded`; false if they are not base64.
    fn decode_kept(&mut self) -> bool {
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
    fn engine(&self) -> &'static base64::engine::GeneralPurpose {
        if self.url {
            &B64_URL_ENGINE
        } else {
            &B64_ENGINE
        }
    }

    /// Whether the first 64 characters of `run` decode to what looks like text: a cheap
    /// look before decoding a whole block, since most long runs of letters and digits (a
    /// hash, a key, a filler) are not base64 of text.
    fn starts_as_text(&self) -> bool {
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
    fn decode_block(&mut self) -> bool {
        self.decode_kept() && (self.decoded.len() < 6 || text_piece(&self.decoded))
    }
}

/// Whether a run is all hex digits and dashes: a UUID, a trace id, a hash, the most common
/// candidates in JSON bodies and headers. Base64 of text practically never looks like this
/// (of ASCII text, the first byte of every three would have to be one of `k o s w {`), so
/// such a run is not decoded as base64: it is read as hex (see [`hex_decode`]), which a
/// UUID (dashes) or a hash fails or turns into bytes that are not text.
fn hex_like(run: &[u8]) -> bool {
    run.iter().all(|&c| c.is_ascii_hexdigit() || c == b'-')
}

/// Decodes `run`, an even number of hex digits of either case, into `out` (cleared first);
/// false for anything else (a dash, an odd digit out).
fn hex_decode(run: &[u8], out: &mut Vec<u8>) -> bool {
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
const HEX_VALUE: [u8; 256] = {
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
fn mostly_printable(d: &[u8]) -> bool {
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
fn text_piece(d: &[u8]) -> bool {
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
const PCT_MAX_RUN: usize = 4096;
/// How far before its first `%` a percent run's decoded text begins, at most: room for the
/// longest identifier an escape can cut (an email address, a spaced Aadhaar number).
const PCT_LOOKBACK: usize = 1024;

/// Whether `c` ends a run of URL text: a percent run holds no raw white space, control
/// byte, quote or angle bracket (what delimits a URL in text, JSON, HTML).
fn pct_stop(c: u8) -> bool {
    c <= b' ' || c == 0x7f || matches!(c, b'"' | b'\'' | b'<' | b'>')
}

/// Whether `c` delimits the parts of a URL or query (`?a=1&b=2`). The decoded text of a
/// run begins after one of these within [`PCT_LOOKBACK`] of its first escape, rather than
/// at an arbitrary byte, so a base64 parameter value keeps its alignment.
fn pct_delimiter(c: u8) -> bool {
    matches!(c, b'&' | b'=' | b'?' | b';' | b',' | b':')
}

/// Where base64 in `window` starts in step, when the window may begin inside the value (no
/// delimiter in it): the first of the next four offsets from which 64 characters decode to
/// text, else 0. Without it, URL-escaped base64 whose first escape comes more than
/// [`PCT_LOOKBACK`] bytes into its value would be decoded out of step.
fn base64_phase(window: &[u8]) -> usize {
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
fn keep_last(buf: &mut Vec<u8>, bytes: &[u8], n: usize) {
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
fn partial_escape(s: &[u8]) -> usize {
    match s {
        [.., b'%'] => 1,
        [.., b'%', h] if h.is_ascii_hexdigit() => 2,
        _ => 0,
    }
}

/// Tracks the current run of URL text holding percent escapes, in value text.
#[derive(Default)]
struct Pct {
    /// A `%` was seen in the current run: its bytes are being collected in `run`.
    active: bool,
    /// The run is decoded as it streams: its raw bytes are replaced by decoded text.
    streaming: bool,
    /// The active run, from where its decoded text begins; while streaming, scratch.
    run: Vec<u8>,
    /// No `%` seen yet: the last bytes (up to [`PCT_LOOKBACK`]) of the previous pieces of
    /// the value, where the run open at their end, and its decoded text, may begin.
    tail: Vec<u8>,
    /// While streaming: an escape cut at the end of the previous piece.
    carry: Vec<u8>,
    decoded: Vec<u8>,
}

impl Pct {
    /// Starts collecting the run around a `%` at `bytes[p]`: from the last stop before it,
    /// looking no further back than `bytes[from]` (just after a stop), or into `tail` when
    /// `from == 0`, and no more than [`PCT_LOOKBACK`] bytes.
    fn begin(&mut self, bytes: &[u8], from: usize, p: usize) {
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
    fn keep_tail(&mut self, bytes: &[u8]) {
        keep_last(&mut self.tail, bytes, PCT_LOOKBACK);
    }

    /// Decodes `run` of a streaming run into `decoded`, but for an escape cut at the end,
    /// kept in `carry`. `+` stays `+`: the decoded text replaces the raw bytes here, and
    /// base64 in the run (a `+` of its own) must survive; a form's `+` for a space is
    /// lost, as it is in raw text.
    fn decode_run(&mut self) {
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
    /// twice (`msg=Hi%21&phone=…`).
    fn decode_pieces(&mut self) -> bool {
        self.decoded.clear();
        for piece in self.run.split(|&c| pct_delimiter(c)) {
            if !piece.iter().any(|&c| c == b'%' || c == b'+') {
                continue;
            }
            let before = self.decoded.len();
            if before > 0 {
                self.decoded.push(SEPARATOR);
            }
            let mark = self.decoded.len();
            percent_decode_form(piece, &mut self.decoded);
            if self.decoded.get(mark..) == Some(piece) {
                self.decoded.truncate(before);
            }
        }
        !self.decoded.is_empty()
    }

    fn reset(&mut self) {
        self.active = false;
        self.streaming = false;
        self.run.clear();
        self.tail.clear();
        self.carry.clear();
    }
}

/// The line widths of wrapped base64: MIME (RFC 2045, Python's `base64.encodebytes`,
/// Java's MIME encoder) and PEM (RFC 7468).
const WRAP_WIDTHS: [usize; 2] = [64, 76];

/// Whether `c` can go on a line of wrapped base64 (either alphabet, no padding).
fn wrap_char(c: u8) -> bool {
    matches!(B64_CLASS[usize::from(c)], B64_ALNUM | B64_STD | B64_URL)
}

/// Joins the lines of wrapped base64 in value text, so that the block is one run and an
/// identifier whose characters straddle a line break is decoded whole. A line break (`\n`
/// or `\r\n`) is dropped when the base64 characters before it are exactly one line of a
/// [`WRAP_WIDTHS`] width and a base64 character follows it; the receiver's decoder skips
/// it the same way. A line break at the end of a piece waits for the next one.
#[derive(Default)]
struct Wrap {
    /// Base64 characters at the end of the text so far (capped past the widest line).
    line: usize,
    /// A line break that may join two lines, cut from the end of the last piece.
    held: Vec<u8>,
    out: Vec<u8>,
}

impl Wrap {
    const CAP: usize = 77;

    /// Joins wrapped lines in `bytes`, the next piece of a value (`last`: its end); true
    /// when the text to use instead is in `self.out`.
    fn join(&mut self, bytes: &[u8], last: bool) -> bool {
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
    fn run_before(&self, bytes: &[u8], start: usize, end: usize, carried: usize) -> usize {
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
    fn count(&mut self, bytes: &[u8], start: usize) {
        self.line = self.run_before(bytes, start, bytes.len(), self.line);
    }

    /// The held line break, at the end of a value (no line follows it).
    fn release(&mut self) -> Option<Vec<u8>> {
        self.line = 0;
        (!self.held.is_empty()).then(|| std::mem::take(&mut self.held))
    }
}

/// Builds the normalised stream: buffers bytes of one key, inserts separators, scans value
/// text for base64 and keeps the stream offset.
#[derive(Default)]
struct Emitter {
    buf: Vec<u8>,
    key: Vec<u8>,
    keyed: bool,
    emitted: u64,
    need_sep: bool,
    dirty: bool,
    b64: B64,
    pct: Pct,
    wrap: Wrap,
    /// The reading of the text decoded from the open base64 or hex run (see
    /// [`Emitter::put_decoded`]); always `None` in a nested emitter.
    inner: Option<Box<Normaliser>>,
    /// This emitter reads decoded text already: what it decodes goes in as it is.
    nested: bool,
}

impl Emitter {
    fn same_key(&self, key: Option<&[u8]>) -> bool {
        match key {
            None => !self.keyed,
            Some(k) => self.keyed && self.key == k,
        }
    }

    /// Hands the buffered text to the sink; `run_ends` when the next text has another key.
    fn flush(&mut self, run_ends: bool, sink: &mut Sink<'_>) {
        if self.buf.is_empty() {
            return;
        }
        sink(
            Segment {
                text: &self.buf,
                key: if self.keyed { Some(&self.key) } else { None },
                offset: self.emitted,
            },
            run_ends,
        );
        self.emitted += self.buf.len() as u64;
        self.buf.clear();
    }

    fn raw(&mut self, bytes: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if bytes.is_empty() {
            return;
        }
        if !self.buf.is_empty() && !self.same_key(key) {
            self.flush(true, sink);
        }
        if self.buf.is_empty() {
            if bytes.len() >= FLUSH_AT {
                sink(
                    Segment {
                        text: bytes,
                        key,
                        offset: self.emitted,
                    },
                    false,
                );
                self.emitted += bytes.len() as u64;
                return;
            }
            self.keyed = key.is_some();
            self.key.clear();
            self.key.extend_from_slice(key.unwrap_or(&[]));
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= FLUSH_AT {
            self.flush(false, sink);
        }
    }

    /// Appends `bytes` verbatim (no base64 scan), after a pending separator.
    fn put(&mut self, bytes: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if bytes.is_empty() {
            return;
        }
        if self.need_sep {
            self.need_sep = false;
            self.raw(&[SEPARATOR], None, sink);
        }
        self.raw(bytes, key, sink);
        self.dirty = true;
    }

    /// [`Emitter::put`] for the last bytes of a value, which the caller ends next (with
    /// [`Emitter::end_value`] or [`Emitter::boundary`]): whatever follows starts with a
    /// separator. Under a key, that ends the run, so when nothing of the run is buffered
    /// the bytes go to the sink as they are, as a whole run, without a copy.
    fn put_last(&mut self, bytes: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if bytes.is_empty() {
            return;
        }
        if self.need_sep {
            self.need_sep = false;
            self.raw(&[SEPARATOR], None, sink);
        }
        if key.is_some() && (self.buf.is_empty() || !self.same_key(key)) {
            self.flush(true, sink);
            sink(
                Segment {
                    text: bytes,
                    key,
                    offset: self.emitted,
                },
                true,
            );
            self.emitted += bytes.len() as u64;
        } else {
            self.raw(bytes, key, sink);
        }
        self.dirty = true;
    }

    /// Marks the end of a value: the next non-empty output is preceded by a separator.
    fn boundary(&mut self) {
        if self.dirty {
            self.dirty = false;
            self.need_sep = true;
        }
    }

    /// Appends value text, scanning it for base64 runs.
    ///
    /// Only runs of at least [`BASE64_MIN_RUN`] bytes can be decoded, and every run ends at
    /// a byte outside the base64 alphabet (a *stop*, after which no run is open). So where
    /// no run is open, a stretch that reaches a stop within `BASE64_MIN_RUN` bytes holds no
    /// candidate and is skipped without looking at each byte: if the byte
    /// `BASE64_MIN_RUN - 1` ahead is a stop, nothing before it can start a long enough run;
    /// otherwise the scan resumes after the last stop before it. Everything else (an open
    /// run, a window without a stop, the tail of `bytes`) goes byte by byte.
    ///
    /// Run bytes are not copied one by one either: the run is tracked by counters and its
    /// start in `bytes` (`run_from`), and copied into `b64.run` only when it may be decoded
    /// (it ends here as a candidate) or when it goes on past the end of `bytes`.
    fn text(&mut self, bytes: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        self.joined(bytes, false, |em, text| em.text_to(text, key, false, sink));
    }

    /// Calls `f` with `bytes`, or with their text once wrapped base64 lines in it are
    /// joined (see [`Wrap`]).
    fn joined(&mut self, bytes: &[u8], last: bool, f: impl FnOnce(&mut Self, &[u8])) {
        if self.wrap.join(bytes, last) {
            let joined = std::mem::take(&mut self.wrap.out);
            f(self, &joined);
            self.wrap.out = joined;
        } else {
            f(self, bytes);
        }
    }

    fn text_to(&mut self, bytes: &[u8], key: Option<&[u8]>, last: bool, sink: &mut Sink<'_>) {
        if last && self.b64.len == 0 && bytes.len() < BASE64_MIN_RUN {
            // The whole rest of a value, too short to hold a decodable run, with no run
            // open before it: the loop below would pass it to `put_last` unchanged and
            // leave at most a short run for `end_value` to drop. Most JSON values are
            // like this (`"paid"`, `"INR"`, a city).
            self.put_last(bytes, key, sink);
            return;
        }
        let class = |c: u8| B64_CLASS[usize::from(c)];
        let mut start = 0;
        // Where the current run's bytes begin in `bytes` (0 if it began in an earlier call).
        let mut run_from = 0;
        let mut i = 0;
        loop {
            // Byte by byte, up to and including the next stop.
            while let Some(&c) = bytes.get(i) {
                let cls = class(c);
                if self.b64.streaming && !self.b64.ended_by(cls) {
                    // The run's characters become its decoded text, not raw text.
                    i = self.stream_run(bytes, i, key, sink);
                    start = i;
                    run_from = i;
                    continue;
                }
                if cls == B64_ALNUM && self.b64.pad == 0 {
                    // The common case: a run starts or goes on. Take all of its alphanumeric
                    // bytes at once (one tight loop, no per-byte state update), stopping
                    // where the run reaches a block, to start decoding it block by block.
                    if self.b64.len == 0 {
                        run_from = i;
                    }
                    let rest = bytes.get(i..).unwrap_or(&[]);
                    let mut n = alnum_prefix(rest);
                    if self.b64.len < BASE64_MAX_RUN {
                        n = n.min(BASE64_MAX_RUN - self.b64.len);
                    }
                    self.b64.len += n;
                    i += n;
                    if self.b64.len == BASE64_MAX_RUN {
                        let raw = bytes.get(start..i).unwrap_or(&[]);
                        if self.start_stream(raw, bytes.get(run_from..i).unwrap_or(&[]), key, sink)
                        {
                            start = i;
                            run_from = i;
                        }
                    }
                    continue;
                }
                let ends = if cls == B64_NONE {
                    self.b64.len > 0
                } else {
                    cls != B64_PAD && self.b64.pad > 0
                };
                if ends {
                    if self.b64.streaming {
                        // Its characters were all taken by `stream_run`: `start == i`.
                        self.close_run(key, sink);
                    } else if self.b64.candidate() {
                        self.b64.keep(bytes.get(run_from..i).unwrap_or(&[]));
                        self.put(bytes.get(start..i).unwrap_or(&[]), key, sink);
                        start = i;
                        self.close_run(key, sink);
                    }
                    self.b64.reset();
                }
                i += 1;
                if cls == B64_NONE {
                    break;
                }
                if self.b64.len == 0 {
                    run_from = i - 1;
                }
                self.b64.count(cls);
                if self.b64.len == BASE64_MAX_RUN {
                    let raw = bytes.get(start..i).unwrap_or(&[]);
                    if self.start_stream(raw, bytes.get(run_from..i).unwrap_or(&[]), key, sink) {
                        start = i;
                        run_from = i;
                    }
                }
            }
            // Just after a stop (no run open): skip short stretches.
            while let Some(&c) = bytes.get(i + BASE64_MIN_RUN - 1) {
                if class(c) == B64_NONE {
                    i += BASE64_MIN_RUN;
                    continue;
                }
                let window = bytes.get(i..i + BASE64_MIN_RUN - 1).unwrap_or(&[]);
                match window.iter().rposition(|&c| class(c) == B64_NONE) {
                    Some(k) => i += k + 1,
                    None => break,
                }
            }
            if i >= bytes.len() {
                break;
            }
        }
        if self.b64.len > 0 {
            self.b64.keep(bytes.get(run_from..).unwrap_or(&[]));
        }
        let rest = bytes.get(start..).unwrap_or(&[]);
        if last {
            self.put_last(rest, key, sink);
        } else {
            self.put(rest, key, sink);
        }
    }

    /// The plain byte-by-byte form of [`Emitter::text`], kept as the reference its
    /// skipping is tested against.
    #[cfg(test)]
    fn text_bytewise(&mut self, bytes: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        self.joined(bytes, false, |em, text| {
            em.text_bytewise_joined(text, key, sink);
        });
    }

    #[cfg(test)]
    fn text_bytewise_joined(&mut self, bytes: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        let mut start = 0;
        for (i, &c) in bytes.iter().enumerate() {
            let cls = B64_CLASS[usize::from(c)];
            if self.b64.streaming && !self.b64.ended_by(cls) {
                self.b64.count(cls);
                self.b64.run.push(c);
                start = i + 1;
                if self.b64.run.len() == BASE64_MAX_RUN {
                    self.stream_block(key, sink);
                }
                continue;
            }
            let ends = if cls == B64_NONE {
                self.b64.len > 0
            } else {
                cls != B64_PAD && self.b64.pad > 0
            };
            if ends {
                if self.b64.streaming {
                    self.close_run(key, sink);
                } else if self.b64.candidate() {
                    self.put(bytes.get(start..i).unwrap_or(&[]), key, sink);
                    start = i;
                    self.close_run(key, sink);
                }
                self.b64.reset();
            }
            if cls != B64_NONE {
                self.b64.count(cls);
                self.b64.keep(&[c]);
                if self.b64.len == BASE64_MAX_RUN {
                    let raw = bytes.get(start..=i).unwrap_or(&[]);
                    if self.start_stream(raw, &[], key, sink) {
                        start = i + 1;
                    }
                }
            }
        }
        self.put(bytes.get(start..).unwrap_or(&[]), key, sink);
    }

    /// A run has just reached [`BASE64_MAX_RUN`] characters (the last of them in `run_part`,
    /// the bytes of this call not yet kept): if they decode to text, emits the text before
    /// them (`raw`, which ends with them), then their decoded text, and goes on decoding the
    /// run block by block. Otherwise the run is too long to be decoded: false, no change.
    ///
    /// Decoding as the run goes, rather than when it ends, keeps the characters that encode
    /// an identifier within a block of where it is found, so inside the hold-back window of
    /// a streamed body however long the run.
    fn start_stream(
        &mut self,
        raw: &[u8],
        run_part: &[u8],
        key: Option<&[u8]>,
        sink: &mut Sink<'_>,
    ) -> bool {
        if self.b64.pad > 0 || !self.b64.candidate() {
            return false;
        }
        self.b64.keep(run_part);
        if !self.b64.starts_as_text() || !self.b64.decode(true) {
            return false;
        }
        self.put(raw, key, sink);
        let decoded = std::mem::take(&mut self.b64.decoded);
        self.boundary();
        self.put_decoded(&decoded, key, true, false, sink);
        self.b64.decoded = decoded;
        self.b64.run.clear();
        self.b64.streaming = true;
        true
    }

    /// Takes the characters of a streaming run from `bytes[i..]` up to its end or the end of
    /// `bytes`, decoding each block as it fills; returns where it stopped. A block that is
    /// not text ends the streaming there (see [`Emitter::stream_block`]).
    fn stream_run(
        &mut self,
        bytes: &[u8],
        mut i: usize,
        key: Option<&[u8]>,
        sink: &mut Sink<'_>,
    ) -> usize {
        while let Some(&c) = bytes.get(i) {
            let cls = B64_CLASS[usize::from(c)];
            if self.b64.ended_by(cls) {
                break;
            }
            let n = if cls == B64_ALNUM {
                let room = BASE64_MAX_RUN - self.b64.run.len();
                let n = alnum_prefix(bytes.get(i..).unwrap_or(&[])).min(room);
                self.b64.len += n;
                n
            } else {
                self.b64.count(cls);
                1
            };
            self.b64
                .run
                .extend_from_slice(bytes.get(i..i + n).unwrap_or(&[]));
            i += n;
            if self.b64.run.len() == BASE64_MAX_RUN && !self.stream_block(key, sink) {
                break;
            }
        }
        i
    }

    /// Emits the decoded text of a streaming run's full block. A block that does not decode
    /// to text is emitted raw, after a separator, and so is the rest of the run (which is
    /// then too long to be decoded): false.
    fn stream_block(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) -> bool {
        let ok = self.b64.decode_block();
        let out = std::mem::take(if ok {
            &mut self.b64.decoded
        } else {
            &mut self.b64.run
        });
        if ok {
            self.put_decoded(&out, key, false, false, sink);
        } else {
            self.end_decoded(key, sink);
            self.b64.streaming = false;
            self.boundary();
            self.put(&out, key, sink);
        }
        if ok {
            self.b64.decoded = out;
            self.b64.run.clear();
        } else {
            self.b64.run = out;
        }
        ok
    }

    /// Puts text decoded from a base64 or hex run into the stream; when it is a MIME
    /// message (a mail API's base64url `raw` field), read once more by the message's own
    /// headers, so a text part that is base64 or quoted-printable inside is read whole.
    /// Other decoded text goes in as it is. `first` for the run's first decoded piece,
    /// `last` for its last. The reading goes one level deep: what a nested emitter
    /// decodes goes in as it is.
    #[inline(never)]
    fn put_decoded(
        &mut self,
        text: &[u8],
        key: Option<&[u8]>,
        first: bool,
        last: bool,
        sink: &mut Sink<'_>,
    ) {
        if self.nested {
            self.put(text, key, sink);
            return;
        }
        if first {
            self.inner = Normaliser::nested(text).map(Box::new);
        }
        let Some(mut inner) = self.inner.take() else {
            self.put(text, key, sink);
            return;
        };
        let mut ok = self.through(&mut inner, key, sink, |n, out| n.feed(text, out));
        if ok && last {
            ok = self.through(&mut inner, key, sink, |n, out| n.finish(out));
        }
        if !ok {
            // Only JSON nested past the depth limit fails; the text goes in as it is.
            self.put(text, key, sink);
        } else if !last {
            self.inner = Some(inner);
        }
    }

    /// Ends the reading of a streaming run's decoded text.
    #[inline(never)]
    fn end_decoded(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if let Some(mut inner) = self.inner.take() {
            self.through(&mut inner, key, sink, |n, out| n.finish(out));
        }
    }

    /// Runs `f` on a nested reading, putting what it emits into this stream (under `key`
    /// where it has none of its own), and flushes it, so decoded text is not held longer
    /// than the run that encodes it.
    fn through(
        &mut self,
        inner: &mut Normaliser,
        key: Option<&[u8]>,
        sink: &mut Sink<'_>,
        f: impl FnOnce(&mut Normaliser, &mut Sink<'_>) -> Result<(), DecodeError>,
    ) -> bool {
        let mut out = |seg: Segment<'_>, _run_ends: bool| {
            self.put(seg.text, seg.key.or(key), sink);
        };
        let ok = f(inner, &mut out).is_ok();
        inner.em.flush(false, &mut out);
        ok
    }

    fn close_run(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if self.b64.streaming {
            // The last, partial block: decoded, or raw after a separator if it is not base64.
            if !self.b64.run.is_empty() {
                self.stream_block(key, sink);
            }
            self.end_decoded(key, sink);
            self.boundary();
        } else if self.b64.candidate() && self.b64.decode(false) {
            let decoded = std::mem::take(&mut self.b64.decoded);
            self.boundary();
            self.put_decoded(&decoded, key, true, true, sink);
            self.boundary();
            self.b64.decoded = decoded;
        }
        self.b64.reset();
    }

    /// Ends a piece of value text: closes its base64 run and its percent run, then a
    /// boundary.
    fn end_value(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if let Some(held) = self.wrap.release() {
            self.value_text(&held, key, false, true, sink);
        }
        if self.b64.len > 0 {
            self.close_run(key, sink);
        }
        if self.pct.active {
            if self.pct.streaming {
                self.end_pct_stream(key, sink);
            } else {
                self.insert_pct(key, sink);
            }
            self.pct.reset();
        } else {
            self.pct.tail.clear();
        }
        self.boundary();
    }

    /// Appends value text that may hold percent escapes (JSON strings, text bodies,
    /// multipart text; not form values, which come decoded): [`Emitter::text`], and for
    /// each run of URL text holding an escape, the decoded text of its pieces (between URL
    /// delimiters) that decoding changes, inserted after the run's stop, between
    /// separators, with the same key. So `asha%40example.in` in a callback
    /// URL is read as `asha@example.in` too, whether or not the receiver decodes it, and
    /// the raw bytes are still scanned as they are.
    ///
    /// The decoded text begins after the last URL delimiter within [`PCT_LOOKBACK`] bytes
    /// before the run's first `%`. A run that reaches [`PCT_MAX_RUN`] from there is decoded
    /// as it streams: the decoded text so far is inserted, and the rest of the run goes
    /// into the stream decoded only, continuing that text (as long base64 runs do), so an
    /// identifier in it is found within a block of its bytes, inside the hold-back window.
    fn value(&mut self, bytes: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        self.value_to(bytes, key, false, true, sink);
    }

    /// [`Emitter::value`] for text known to hold no `%` unless `maybe_pct`, and with `last`
    /// for the last text of a value (see [`Emitter::put_last`]).
    #[inline]
    fn value_to(
        &mut self,
        bytes: &[u8],
        key: Option<&[u8]>,
        last: bool,
        maybe_pct: bool,
        sink: &mut Sink<'_>,
    ) {
        self.joined(bytes, last, |em, text| {
            em.value_text(text, key, last, maybe_pct, sink);
        });
    }

    /// [`Emitter::value_to`] once wrapped base64 lines are joined.
    #[inline]
    fn value_text(
        &mut self,
        bytes: &[u8],
        key: Option<&[u8]>,
        last: bool,
        maybe_pct: bool,
        sink: &mut Sink<'_>,
    ) {
        if self.pct.active || (maybe_pct && memchr::memchr(b'%', bytes).is_some()) {
            self.percent_runs(bytes, key, last, sink);
        } else {
            // Nearly all value text.
            if !last {
                self.pct.keep_tail(bytes);
            }
            self.text_to(bytes, key, last, sink);
        }
    }

    /// [`Emitter::value_to`] for text with a `%` or in an open percent run.
    #[inline(never)]
    fn percent_runs(&mut self, bytes: &[u8], key: Option<&[u8]>, last: bool, sink: &mut Sink<'_>) {
        // `bytes[..from]` went into the stream (raw) or to the run's decoder; `bytes[..i]`
        // was looked at.
        let mut from = 0;
        let mut i = 0;
        while i < bytes.len() {
            if !self.pct.active {
                let Some(k) = memchr::memchr(b'%', bytes.get(i..).unwrap_or(&[])) else {
                    break;
                };
                self.pct.begin(bytes, i, i + k);
                i += k;
            }
            let rest = bytes.get(i..).unwrap_or(&[]);
            let end = rest
                .iter()
                .position(|&c| pct_stop(c))
                .map_or(bytes.len(), |k| i + k);
            if !self.pct.streaming {
                let take = (end - i).min(PCT_MAX_RUN.saturating_sub(self.pct.run.len()));
                self.pct
                    .run
                    .extend_from_slice(bytes.get(i..i + take).unwrap_or(&[]));
                i += take;
                if self.pct.run.len() >= PCT_MAX_RUN {
                    self.text_to(bytes.get(from..i).unwrap_or(&[]), key, false, sink);
                    from = i;
                    self.start_pct_stream(key, sink);
                }
            }
            if self.pct.streaming {
                self.pct_stream(bytes.get(i..end).unwrap_or(&[]), key, sink);
                from = end;
            }
            if end == bytes.len() {
                break;
            }
            // The run's stop: the stop goes into the stream raw, after the run's text.
            if self.pct.streaming {
                self.end_pct_stream(key, sink);
            } else {
                self.text_to(bytes.get(from..=end).unwrap_or(&[]), key, false, sink);
                from = end + 1;
                self.insert_pct(key, sink);
            }
            self.pct.reset();
            i = end + 1;
        }
        if !self.pct.active && !last {
            self.pct.keep_tail(bytes);
        }
        self.text_to(bytes.get(from..).unwrap_or(&[]), key, last, sink);
    }

    /// Inserts the decoded text of the percent run that just ended, if it held an escape.
    /// Its raw bytes are in the stream, and their base64 run was closed by the run's stop
    /// (or by [`Emitter::end_value`]).
    fn insert_pct(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if !self.pct.decode_pieces() {
            return;
        }
        self.boundary();
        self.pct_text(key, sink);
        if self.b64.len > 0 {
            self.close_run(key, sink);
        }
        self.boundary();
    }

    /// A percent run has reached [`PCT_MAX_RUN`]: ends the raw text there (and its base64
    /// run, as the `%` run's stop would), then starts its decoded text.
    fn start_pct_stream(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if self.b64.len > 0 {
            self.close_run(key, sink);
        }
        // The pieces before the run's last delimiter are in the stream raw, and whole: as
        // when a run ends, only those that decoding changes are inserted (the others would
        // be counted twice). The piece in progress goes on decoded, into the rest of the run.
        let cut = self
            .pct
            .run
            .iter()
            .rposition(|&c| pct_delimiter(c))
            .map_or(0, |k| k + 1);
        let rest = self.pct.run.split_off(cut);
        if self.pct.decode_pieces() {
            self.boundary();
            self.pct_text(key, sink);
            if self.b64.len > 0 {
                self.close_run(key, sink);
            }
        }
        self.boundary();
        self.pct.run = rest;
        self.pct.decode_run();
        self.pct_text(key, sink);
        self.pct.streaming = true;
    }

    /// Decodes more bytes of a streaming percent run into the stream.
    fn pct_stream(&mut self, raw: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if raw.is_empty() {
            return;
        }
        let mut run = std::mem::take(&mut self.pct.run);
        run.clear();
        run.extend_from_slice(&self.pct.carry);
        run.extend_from_slice(raw);
        self.pct.run = run;
        self.pct.decode_run();
        self.pct_text(key, sink);
    }

    /// Ends a streaming percent run: an escape cut by its end is text as it is.
    fn end_pct_stream(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) {
        let carry = std::mem::take(&mut self.pct.carry);
        self.text_to(&carry, key, false, sink);
        self.pct.carry = carry;
        if self.b64.len > 0 {
            self.close_run(key, sink);
        }
        self.boundary();
    }

    /// Appends `pct.decoded` as value text (its base64 runs decoded too).
    fn pct_text(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) {
        let decoded = std::mem::take(&mut self.pct.decoded);
        self.text_to(&decoded, key, false, sink);
        self.pct.decoded = decoded;
    }
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
    /// [`BodyKind::Untyped`] before its first byte past white space (the white space so
    /// far is held, up to [`SNIFF_MAX_BLANK`] bytes).
    Sniff {
        held: Vec<u8>,
        max_depth: u32,
    },
}

/// Most leading white space an untyped body may have and still be read as JSON.
const SNIFF_MAX_BLANK: usize = 4096;

/// How an untyped body reads, judged by its first byte past white space.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    /// `{` or `[`: JSON.
    Json,
    /// `<`: HTML or XML (`requests.post(url, data=soap_envelope)` sends no type either),
    /// whose character references are read.
    Markup,
    Text,
}

/// Decides how an untyped text whose leading white space so far is `held` reads, given
/// its next piece: `None` while only white space has come (then `data` joined `held`),
/// else by the first other byte.
fn sniff(held: &mut Vec<u8>, data: &[u8]) -> Option<Sniffed> {
    let blank = data
        .iter()
        .take_while(|&&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
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
    fn new(kind: BodyKind, max_depth: u32) -> Self {
        let mode = match kind {
            BodyKind::Json => Mode::Json(Box::new(Json::new(max_depth, None))),
            BodyKind::Form => Mode::Form(Box::default()),
            BodyKind::Multipart { boundary } => {
                Mode::Multipart(Box::new(Multipart::new(&boundary, max_depth, 0)))
            }
            BodyKind::Markup => Mode::Markup(Box::default()),
            BodyKind::Message => Mode::Multipart(Box::new(Multipart::message(max_depth, 0))),
            BodyKind::Untyped => Mode::Sniff {
                held: Vec::new(),
                max_depth,
            },
            BodyKind::Text => Mode::Text,
        };
        Normaliser {
            mode,
            em: Emitter::default(),
        }
    }

    /// The reading of text decoded from a base64 or hex run, whose first piece is `first`,
    /// when it starts as a MIME message.
    fn nested(first: &[u8]) -> Option<Self> {
        looks_like_mime(first).then(|| Normaliser {
            mode: Mode::Multipart(Box::new(Multipart::message(JSON_NESTED_DEPTH, 0))),
            em: Emitter {
                nested: true,
                ..Emitter::default()
            },
        })
    }

    fn feed(&mut self, data: &[u8], sink: &mut Sink<'_>) -> Result<(), DecodeError> {
        if let Mode::Sniff { held, max_depth } = &mut self.mode {
            let Some(sniffed) = sniff(held, data) else {
                return Ok(());
            };
            let held = std::mem::take(held);
            self.mode = match sniffed {
                Sniffed::Json => Mode::Json(Box::new(Json::new(*max_depth, None))),
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
        }
    }

    fn finish(&mut self, sink: &mut Sink<'_>) -> Result<(), DecodeError> {
        let em = &mut self.em;
        match &mut self.mode {
            Mode::Text => em.end_value(None, sink),
            Mode::Sniff { held, .. } => {
                // Nothing but white space: text.
                em.value(held, None, sink);
                em.end_value(None, sink);
            }
            Mode::Markup(m) => m.finish(None, em, sink),
            Mode::Json(j) => j.finish(em, sink),
            Mode::Form(f) => f.finish(em, sink),
            Mode::Multipart(m) => m.finish(em, sink)?,
        }
        Ok(())
    }
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

/// Position of the first `"` or `\\` in `s`, and whether a `%` or `&` may come before it
/// (true whenever one does; the percent layer of [`Emitter::value`] and the reference
/// reader ([`Refs`]) look again). JSON strings
/// are mostly short, where `memchr2`'s set-up costs more than the search: the first 64
/// bytes are tested eight at a time in a register (SWAR), the rest is left to `memchr2`.
fn find_quote_or_backslash(s: &[u8]) -> (Option<usize>, bool) {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = LO * b'"' as u64;
    const BACKSLASHES: u64 = LO * b'\\' as u64;
    const PERCENTS: u64 = LO * b'%' as u64;
    const AMPERSANDS: u64 = LO * b'&' as u64;
    // High bit set in a byte that is zero, and possibly in bytes above a zero byte (a
    // borrow), so the lowest set bit is always a true zero byte.
    let zeros = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let mut i = 0;
    let mut pct = 0;
    while i < 64 {
        let Some(chunk) = s.get(i..i + 8) else {
            let mut seen = pct != 0;
            for (k, &b) in s.get(i..).unwrap_or(&[]).iter().enumerate() {
                if b == b'"' || b == b'\\' {
                    return (Some(i + k), seen);
                }
                seen |= b == b'%' || b == b'&';
            }
            return (None, seen);
        };
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let w = u64::from_le_bytes(w);
        let m = zeros(w ^ QUOTES) | zeros(w ^ BACKSLASHES);
        let p = zeros(w ^ PERCENTS) | zeros(w ^ AMPERSANDS);
        if m != 0 {
            // The bits below the first stop's.
            let before = (m & m.wrapping_neg()) - 1;
            return (
                Some(i + (m.trailing_zeros() / 8) as usize),
                (pct | (p & before)) != 0,
            );
        }
        pct |= p;
        i += 8;
    }
    (
        memchr::memchr2(b'"', b'\\', s.get(i..).unwrap_or(&[])).map(|k| i + k),
        true,
    )
}

fn key_at(arena: &[u8], range: Option<(usize, usize)>) -> Option<&[u8]> {
    range.and_then(|(a, b)| arena.get(a..b))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum JSt {
    /// Expecting a value (document start, after `:`).
    Value,
    /// After `[` or `,` in an array: a value or `]`.
    ArrFirst,
    /// After `{` or `,` in an object: a key or `}`.
    ObjFirst,
    /// After a key: `:`.
    Colon,
    /// After a value: `,` or a closing bracket; at top level, whitespace or another document.
    After,
    Str,
    Num,
    Lit,
    /// Not JSON after all: everything from here on is raw text.
    Raw,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    Backslash,
    Hex { n: u8, acc: u16 },
}

/// What [`Json::structural`] did with a byte.
enum Step {
    Consumed,
    /// The state changed; handle the same byte again.
    Reprocess,
    /// Not JSON.
    Invalid,
}

struct Frame {
    obj: bool,
    base: usize,
    key: Option<(usize, usize)>,
}

/// Streaming JSON tokenizer. Memory: the frame stack (at most `max_depth`), the keys of the
/// open objects (at most [`MAX_KEY_LEN`] each), a [`JSON_LOOKBACK`] tail and one chunk of
/// string scratch.
struct Json {
    st: JSt,
    frames: Vec<Frame>,
    arena: Vec<u8>,
    root: Option<(usize, usize)>,
    max_depth: u32,
    in_key: bool,
    esc: Esc,
    high: Option<u16>,
    lit: &'static [u8],
    lit_pos: usize,
    tail: Vec<u8>,
    scratch: Vec<u8>,
    /// Character references in string values (HTML inside a JSON field).
    refs: Refs,
}

impl Json {
    fn new(max_depth: u32, root_key: Option<&[u8]>) -> Self {
        let mut arena = Vec::new();
        let root = root_key.map(|k| {
            arena.extend(k.iter().take(MAX_KEY_LEN));
            (0, arena.len())
        });
        Json {
            st: JSt::Value,
            frames: Vec::new(),
            arena,
            root,
            max_depth,
            in_key: false,
            esc: Esc::None,
            high: None,
            lit: b"",
            lit_pos: 0,
            tail: Vec::with_capacity(JSON_LOOKBACK),
            scratch: Vec::new(),
            refs: Refs::default(),
        }
    }

    fn cur_key(&self) -> Option<(usize, usize)> {
        match self.frames.last() {
            Some(f) => f.key,
            None => self.root,
        }
    }

    fn feed(
        &mut self,
        data: &[u8],
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> Result<(), DecodeError> {
        let mut i = 0;
        while i < data.len() {
            match self.st {
                JSt::Raw => {
                    em.value(
                        data.get(i..).unwrap_or(&[]),
                        key_at(&self.arena, self.root),
                        sink,
                    );
                    i = data.len();
                }
                JSt::Str => i = self.string(data, i, em, sink),
                JSt::Num => i = self.number(data, i, em, sink),
                JSt::Lit => {
                    let c = data.get(i).copied();
                    if c.is_some() && self.lit.get(self.lit_pos).copied() == c {
                        self.lit_pos += 1;
                        i += 1;
                        if self.lit_pos == self.lit.len() {
                            self.st = JSt::After;
                        }
                    } else {
                        self.fallback(data, i, em, sink);
                    }
                }
                _ => {
                    let c = data.get(i).copied().unwrap_or(b' ');
                    if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                        i += 1;
                        continue;
                    }
                    // A string or number just begun is read on at once, rather than after
                    // another round through the state dispatch (the next iteration would
                    // do the same).
                    match self.structural(c)? {
                        Step::Consumed => {
                            i += 1;
                            if self.st == JSt::Str {
                                i = self.string(data, i, em, sink);
                            }
                        }
                        Step::Reprocess => {
                            if self.st == JSt::Num {
                                i = self.number(data, i, em, sink);
                            }
                        }
                        Step::Invalid => self.fallback(data, i, em, sink),
                    }
                }
            }
        }
        if self.st == JSt::Str {
            self.flush_str(em, sink);
        }
        if self.st != JSt::Raw {
            keep_last(&mut self.tail, data, JSON_LOOKBACK);
        }
        Ok(())
    }

    /// Consumes number bytes from `data[i..]`; returns the new position.
    fn number(
        &mut self,
        data: &[u8],
        mut i: usize,
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> usize {
        let start = i;
        while data
            .get(i)
            .is_some_and(|&c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            i += 1;
        }
        let digits = data.get(start..i).unwrap_or(&[]);
        let key = key_at(&self.arena, self.cur_key());
        if i < data.len() {
            em.put_last(digits, key, sink);
            em.boundary();
            self.st = JSt::After;
        } else {
            em.put(digits, key, sink);
        }
        i
    }

    /// Handles one non-whitespace byte outside strings, numbers and literals.
    fn structural(&mut self, c: u8) -> Result<Step, DecodeError> {
        let value_pos = matches!(self.st, JSt::Value | JSt::ArrFirst);
        let step = match (self.st, c) {
            (_, b'"') if value_pos => {
                self.in_key = false;
                self.start_string();
                Step::Consumed
            }
            (_, b'{') if value_pos => {
                self.push(true)?;
                self.st = JSt::ObjFirst;
                Step::Consumed
            }
            (_, b'[') if value_pos => {
                self.push(false)?;
                self.st = JSt::ArrFirst;
                Step::Consumed
            }
            (_, b'-' | b'0'..=b'9') if value_pos => {
                self.st = JSt::Num;
                Step::Reprocess
            }
            (_, b't' | b'f' | b'n') if value_pos => {
                self.lit = match c {
                    b't' => b"true",
                    b'f' => b"false",
                    _ => b"null",
                };
                self.lit_pos = 0;
                self.st = JSt::Lit;
                Step::Reprocess
            }
            (JSt::ArrFirst, b']') => self.pop(false),
            (JSt::ObjFirst, b'"') => {
                self.in_key = true;
                let base = self.frames.last().map_or(self.arena.len(), |f| f.base);
                self.arena.truncate(base);
                if let Some(f) = self.frames.last_mut() {
                    f.key = None;
                }
                self.start_string();
                Step::Consumed
            }
            (JSt::ObjFirst, b'}') => self.pop(true),
            (JSt::Colon, b':') => {
                self.st = JSt::Value;
                Step::Consumed
            }
            (JSt::After, _) => match self.frames.last().map(|f| f.obj) {
                None if c == b'{' || c == b'[' => {
                    self.st = JSt::Value;
                    Step::Reprocess
                }
                Some(true) if c == b',' => {
                    self.st = JSt::ObjFirst;
                    Step::Consumed
                }
                Some(false) if c == b',' => {
                    self.st = JSt::ArrFirst;
                    Step::Consumed
                }
                Some(true) if c == b'}' => self.pop(true),
                Some(false) if c == b']' => self.pop(false),
                _ => Step::Invalid,
            },
            _ => Step::Invalid,
        };
        Ok(step)
    }

    fn push(&mut self, obj: bool) -> Result<(), DecodeError> {
        if self.frames.len() >= self.max_depth as usize {
            return Err(DecodeError::TooDeep {
                limit: self.max_depth,
            });
        }
        let key = if obj { None } else { self.cur_key() };
        self.frames.push(Frame {
            obj,
            base: self.arena.len(),
            key,
        });
        Ok(())
    }

    fn pop(&mut self, obj: bool) -> Step {
        match self.frames.last() {
            Some(f) if f.obj == obj => {
                let base = f.base;
                self.frames.pop();
                self.arena.truncate(base);
                self.st = JSt::After;
                Step::Consumed
            }
            _ => Step::Invalid,
        }
    }

    fn start_string(&mut self) {
        self.esc = Esc::None;
        self.high = None;
        self.st = JSt::Str;
    }

    /// Switches to raw text for the rest of the body, first re-emitting up to
    /// [`JSON_LOOKBACK`] bytes before `data[i]`.
    fn fallback(&mut self, data: &[u8], i: usize, em: &mut Emitter, sink: &mut Sink<'_>) {
        let root = key_at(&self.arena, self.root).map(<[u8]>::to_vec);
        let root = root.as_deref();
        em.boundary();
        let pre = data.get(..i).unwrap_or(&[]);
        if pre.len() >= JSON_LOOKBACK {
            em.value(
                pre.get(pre.len() - JSON_LOOKBACK..).unwrap_or(&[]),
                root,
                sink,
            );
        } else {
            let need = JSON_LOOKBACK - pre.len();
            let t = self
                .tail
                .get(self.tail.len().saturating_sub(need)..)
                .unwrap_or(&[]);
            em.value(t, root, sink);
            em.value(pre, root, sink);
        }
        self.st = JSt::Raw;
        self.frames = Vec::new();
        self.tail = Vec::new();
        if let Some((_, end)) = self.root {
            self.arena.truncate(end);
        }
    }

    fn push_char(&mut self, cp: u32) {
        push_utf8(&mut self.scratch, char::from_u32(cp).unwrap_or('\u{fffd}'));
    }

    fn flush_high(&mut self) {
        if self.high.take().is_some() {
            self.push_char(0xfffd);
        }
    }

    fn code_unit(&mut self, u: u16) {
        if let Some(h) = self.high.take() {
            if (0xdc00..=0xdfff).contains(&u) {
                let cp = 0x10000 + ((u32::from(h) - 0xd800) << 10) + (u32::from(u) - 0xdc00);
                self.push_char(cp);
                return;
            }
            self.push_char(0xfffd);
        }
        if (0xd800..=0xdbff).contains(&u) {
            self.high = Some(u);
        } else {
            // Lone low surrogates become U+FFFD via char::from_u32.
            self.push_char(u32::from(u));
        }
    }

    /// Consumes string bytes from `data[i..]`; returns the new position.
    fn string(
        &mut self,
        data: &[u8],
        mut i: usize,
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> usize {
        while let Some(&c) = data.get(i) {
            match self.esc {
                Esc::None => {
                    if self.high.is_none() {
                        let rest = data.get(i..).unwrap_or(&[]);
                        let (stop, pct) = find_quote_or_backslash(rest);
                        let n = stop.unwrap_or(rest.len());
                        let run = rest.get(..n).unwrap_or(&[]);
                        if self.scratch.is_empty() {
                            // Unescaped text straight from the input, without a copy
                            // through `scratch` (how string text is cut into emitter calls
                            // does not change the stream). Before the closing quote it is
                            // the whole string.
                            let last = rest.get(n) == Some(&b'"');
                            self.emit_str(run, last, pct, em, sink);
                        } else {
                            self.scratch.extend_from_slice(run);
                            if self.scratch.len() >= FLUSH_AT {
                                self.flush_str(em, sink);
                            }
                        }
                        i += n;
                        if n > 0 {
                            continue;
                        }
                    }
                    i += 1;
                    match c {
                        b'"' => {
                            self.flush_high();
                            self.end_string(em, sink);
                            return i;
                        }
                        b'\\' => self.esc = Esc::Backslash,
                        _ => {
                            self.flush_high();
                            self.scratch.push(c);
                        }
                    }
                }
                Esc::Backslash => {
                    i += 1;
                    if c == b'u' {
                        self.esc = Esc::Hex { n: 0, acc: 0 };
                        continue;
                    }
                    self.flush_high();
                    self.esc = Esc::None;
                    let d = match c {
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'"' | b'\\' | b'/' => c,
                        other => {
                            self.scratch.push(b'\\');
                            other
                        }
                    };
                    self.scratch.push(d);
                }
                Esc::Hex { n, acc } => match hex_val(c) {
                    Some(v) => {
                        i += 1;
                        let acc = acc << 4 | u16::from(v);
                        if n == 3 {
                            self.esc = Esc::None;
                            self.code_unit(acc);
                        } else {
                            self.esc = Esc::Hex { n: n + 1, acc };
                        }
                    }
                    None => {
                        // Broken \u escape: U+FFFD, then the byte is handled as usual.
                        self.flush_high();
                        self.push_char(0xfffd);
                        self.esc = Esc::None;
                    }
                },
            }
        }
        i
    }

    fn flush_str(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) {
        if self.scratch.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.scratch);
        self.emit_str(&text, false, true, em, sink);
        self.scratch = text;
        self.scratch.clear();
    }

    /// Emits decoded text of the current string: key text goes to the arena (truncated)
    /// and out with key `None`, value text out under the current key. `last`: the string
    /// ends right after `text`; `pct`: it may hold a `%`.
    fn emit_str(
        &mut self,
        text: &[u8],
        last: bool,
        pct: bool,
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) {
        if text.is_empty() {
            return;
        }
        if self.in_key {
            let base = self.frames.last().map_or(self.arena.len(), |f| f.base);
            let room = MAX_KEY_LEN.saturating_sub(self.arena.len() - base);
            self.arena
                .extend_from_slice(text.get(..room.min(text.len())).unwrap_or(&[]));
            em.put(text, None, sink);
        } else {
            // HTML in a JSON field (an email API's `"html"`) is read as its receiver reads
            // it, references undone: `asha&#64;example.in` is an address.
            let key = key_at(&self.arena, self.cur_key());
            // `pct`: the quote search saw a `%` or `&` (or could not tell).
            if (pct || !self.refs.carry.is_empty()) && self.refs.decode(text, last) {
                em.value_to(&self.refs.out, key, last, true, sink);
            } else {
                em.value_to(text, key, last, pct, sink);
            }
        }
    }

    fn end_string(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) {
        self.flush_str(em, sink);
        if self.in_key {
            let end = self.arena.len();
            if let Some(f) = self.frames.last_mut() {
                f.key = Some((f.base, end));
            }
            em.boundary();
            self.st = JSt::Colon;
        } else {
            let key = key_at(&self.arena, self.cur_key());
            if self.refs.finish() {
                em.value_to(&self.refs.out, key, true, true, sink);
            }
            em.end_value(key, sink);
            self.st = JSt::After;
        }
        self.in_key = false;
    }

    fn finish(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) {
        match self.st {
            JSt::Str => {
                match self.esc {
                    Esc::Backslash => self.scratch.push(b'\\'),
                    Esc::Hex { .. } => {
                        self.flush_high();
                        self.push_char(0xfffd);
                    }
                    Esc::None => {}
                }
                self.esc = Esc::None;
                self.flush_high();
                self.end_string(em, sink);
            }
            JSt::Num => em.boundary(),
            JSt::Raw => em.end_value(key_at(&self.arena, self.root), sink),
            _ => {}
        }
    }
}

/// The longest character reference read whole (`&#x0010FFFF;` and the longest name known
/// are shorter): a longer `&…` is text.
const MAX_ENTITY: usize = 12;

/// The named character references read (case-sensitive, as HTML has them): XML's five,
/// and HTML's names of characters identifiers are written with, so that
/// `asha&commat;example&period;in` is read as an address.
const NAMED_ENTITIES: &[(&[u8], char)] = &[
    (b"amp", '&'),
    (b"lt", '<'),
    (b"gt", '>'),
    (b"quot", '"'),
    (b"apos", '\''),
    (b"nbsp", '\u{a0}'),
    (b"commat", '@'),
    (b"period", '.'),
    (b"plus", '+'),
    (b"hyphen", '-'),
    (b"dash", '-'),
    (b"lowbar", '_'),
    (b"colon", ':'),
    (b"sol", '/'),
    (b"num", '#'),
    (b"percnt", '%'),
    (b"comma", ','),
    (b"semi", ';'),
    (b"equals", '='),
    (b"quest", '?'),
    (b"excl", '!'),
    (b"lpar", '('),
    (b"rpar", ')'),
    (b"ensp", '\u{2002}'),
    (b"emsp", '\u{2003}'),
    (b"thinsp", '\u{2009}'),
];

/// How much of `s` (which starts with `&`) is a character reference.
#[derive(Debug, PartialEq)]
enum Entity {
    /// `s[..len]` stands for `ch`.
    Char { ch: char, len: usize },
    /// `s` ends before the reference could end: more bytes are needed.
    Incomplete,
    /// The `&` is text.
    Text,
}

/// Reads the character reference at the start of `s` (`&#64;`, `&#x40;`, `&commat;`). A
/// numeric one may lack its `;` (HTML reads it so); one that names no character (zero, a
/// surrogate, past U+10FFFF) is U+FFFD. A space of any width (`&nbsp;`, `&#8201;`) is read
/// as a plain space: templates keep the groups of a number together with `&nbsp;`, and the
/// detectors know groups spaced with ASCII spaces. `at_end`: nothing follows `s`.
fn entity(s: &[u8], at_end: bool) -> Entity {
    match entity_char(s, at_end) {
        Entity::Char {
            ch: '\u{a0}' | '\u{2000}'..='\u{200a}' | '\u{202f}',
            len,
        } => Entity::Char { ch: ' ', len },
        e => e,
    }
}

fn entity_char(s: &[u8], at_end: bool) -> Entity {
    let more = if at_end {
        Entity::Text
    } else {
        Entity::Incomplete
    };
    match s.get(1) {
        None => more,
        Some(b'#') => {
            let hex = matches!(s.get(2), Some(b'x' | b'X'));
            let from = if hex { 3 } else { 2 };
            let mut cp: u32 = 0;
            let mut i = from;
            while let Some(&c) = s.get(i) {
                let d = if hex {
                    hex_val(c).map(u32::from)
                } else {
                    c.is_ascii_digit().then(|| u32::from(c - b'0'))
                };
                let Some(d) = d else { break };
                cp = cp
                    .saturating_mul(if hex { 16 } else { 10 })
                    .saturating_add(d);
                i += 1;
                if i >= MAX_ENTITY {
                    return Entity::Text;
                }
            }
            if i == s.len() && !at_end {
                return Entity::Incomplete;
            }
            if i == from {
                return Entity::Text;
            }
            let len = if s.get(i) == Some(&b';') { i + 1 } else { i };
            let ch = char::from_u32(cp)
                .filter(|&c| c != '\0')
                .unwrap_or('\u{fffd}');
            Entity::Char { ch, len }
        }
        Some(_) => {
            let name_len = s
                .iter()
                .skip(1)
                .take(MAX_ENTITY)
                .position(|c| !c.is_ascii_alphanumeric());
            match name_len {
                None if s.len() <= MAX_ENTITY && !at_end => Entity::Incomplete,
                Some(n) if n > 0 && s.get(n + 1) == Some(&b';') => {
                    let name = s.get(1..n + 1).unwrap_or(&[]);
                    NAMED_ENTITIES
                        .iter()
                        .find(|(known, _)| *known == name)
                        .map_or(Entity::Text, |&(_, ch)| Entity::Char { ch, len: n + 2 })
                }
                _ => Entity::Text,
            }
        }
    }
}

/// Streaming reader of character references: each is replaced by the character it stands
/// for. A reference cut between the pieces of one text is carried to the next.
#[derive(Default)]
struct Refs {
    /// A reference begun at the end of the last piece (at most [`MAX_ENTITY`] bytes).
    carry: Vec<u8>,
    out: Vec<u8>,
}

impl Refs {
    /// Reads the references in `data`, the next piece of a text (`last`: its end); true
    /// when the text to use instead of `data` is in `self.out` (possibly empty, while a
    /// reference is carried), false when `data` holds none and nothing was carried.
    fn decode(&mut self, data: &[u8], last: bool) -> bool {
        // Most text has no `&`, and most `&`s begin no reference (a query string's
        // `&status=`): copy only when one is read or begins at the end.
        if self.carry.is_empty() {
            let Some(first) = memchr::memchr(b'&', data) else {
                return false;
            };
            let rest = data.get(first..).unwrap_or(&[]);
            if memchr::memchr_iter(b'&', rest)
                .all(|k| entity(rest.get(k..).unwrap_or(&[]), last) == Entity::Text)
            {
                return false;
            }
        }
        self.out.clear();
        let mut i = 0;
        if !self.carry.is_empty() {
            let mut joined = std::mem::take(&mut self.carry);
            let had = joined.len();
            joined.extend_from_slice(data.get(..MAX_ENTITY).unwrap_or(data));
            let whole = last && data.len() <= MAX_ENTITY;
            match entity(&joined, whole) {
                Entity::Incomplete => {
                    // Still short (tiny pieces): all of `data` went into `joined`.
                    self.carry = joined;
                    return true;
                }
                Entity::Char { ch, len } => {
                    push_utf8(&mut self.out, ch);
                    i = len.saturating_sub(had);
                }
                Entity::Text => {
                    // A carried reference holds no other `&`: its bytes are text.
                    self.out.extend_from_slice(joined.get(..had).unwrap_or(&[]));
                }
            }
            joined.clear();
            self.carry = joined;
        }
        while let Some(rest) = data.get(i..).filter(|r| !r.is_empty()) {
            let Some(k) = memchr::memchr(b'&', rest) else {
                self.out.extend_from_slice(rest);
                break;
            };
            self.out.extend_from_slice(rest.get(..k).unwrap_or(&[]));
            let at = rest.get(k..).unwrap_or(&[]);
            match entity(at, last) {
                Entity::Char { ch, len } => {
                    push_utf8(&mut self.out, ch);
                    i += k + len;
                }
                Entity::Text => {
                    self.out.push(b'&');
                    i += k + 1;
                }
                Entity::Incomplete => {
                    self.carry.extend_from_slice(at);
                    break;
                }
            }
        }
        true
    }

    /// Reads what is carried as the end of the text; true when there was anything (in
    /// `self.out`).
    fn finish(&mut self) -> bool {
        if self.carry.is_empty() {
            return false;
        }
        let carry = std::mem::take(&mut self.carry);
        self.out.clear();
        match entity(&carry, true) {
            Entity::Char { ch, len } => {
                push_utf8(&mut self.out, ch);
                self.out.extend_from_slice(carry.get(len..).unwrap_or(&[]));
            }
            _ => self.out.extend_from_slice(&carry),
        }
        true
    }
}

/// HTML and XML text: its references read (see [`Refs`]), then value text as any other
/// (base64 and percent escapes in it are read as in any text).
#[derive(Default)]
struct Entities {
    refs: Refs,
}

impl Entities {
    fn feed(&mut self, data: &[u8], key: Option<&[u8]>, em: &mut Emitter, sink: &mut Sink<'_>) {
        if self.refs.decode(data, false) {
            em.value(&self.refs.out, key, sink);
        } else {
            em.value(data, key, sink);
        }
    }

    fn finish(&mut self, key: Option<&[u8]>, em: &mut Emitter, sink: &mut Sink<'_>) {
        if self.refs.finish() {
            em.value(&self.refs.out, key, sink);
        }
        em.end_value(key, sink);
    }
}

fn push_utf8(out: &mut Vec<u8>, ch: char) {
    let mut tmp = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
}

/// Streaming `application/x-www-form-urlencoded` normaliser. Values are read as their
/// receiver reads them: percent escapes and `+` undone, then character references, since
/// a rich-text field posts HTML (an editor's `2345&nbsp;6789`, sent as `2345%26nbsp%3B6789`).
#[derive(Default)]
struct Form {
    in_value: bool,
    /// 0: no escape pending; 1: after `%`; 2: after `%` and one hex digit (`hi`).
    pct: u8,
    hi: u8,
    key: Vec<u8>,
    scratch: Vec<u8>,
    /// Character references in the current value (a reference cut between pieces is
    /// carried).
    refs: Refs,
}

impl Form {
    fn out(&mut self, b: u8) {
        self.scratch.push(b);
        if !self.in_value && self.key.len() < MAX_KEY_LEN {
            self.key.push(b);
        }
    }

    fn feed(&mut self, data: &[u8], em: &mut Emitter, sink: &mut Sink<'_>) {
        for &c in data {
            match self.pct {
                1 => {
                    self.pct = 0;
                    if hex_val(c).is_some() {
                        self.hi = c;
                        self.pct = 2;
                        continue;
                    }
                    self.out(b'%');
                }
                2 => {
                    self.pct = 0;
                    if let (Some(h), Some(l)) = (hex_val(self.hi), hex_val(c)) {
                        self.out(h << 4 | l);
                        continue;
                    }
                    self.out(b'%');
                    self.out(self.hi);
                }
                _ => {}
            }
            match c {
                b'&' => self.end_field(em, sink),
                b'=' if !self.in_value => {
                    self.flush(em, sink);
                    em.boundary();
                    self.in_value = true;
                }
                b'+' => self.out(b' '),
                b'%' => self.pct = 1,
                _ => self.out(c),
            }
        }
        self.flush(em, sink);
    }

    fn flush(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) {
        if self.scratch.is_empty() {
            return;
        }
        if self.in_value {
            if self.refs.decode(&self.scratch, false) {
                em.text(&self.refs.out, Some(&self.key), sink);
            } else {
                em.text(&self.scratch, Some(&self.key), sink);
            }
        } else {
            em.put(&self.scratch, None, sink);
        }
        self.scratch.clear();
    }

    fn end_field(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) {
        self.flush(em, sink);
        if self.in_value {
            if self.refs.finish() {
                em.text(&self.refs.out, Some(&self.key), sink);
            }
            em.end_value(Some(&self.key), sink);
        } else {
            em.boundary();
        }
        self.key.clear();
        self.in_value = false;
    }

    fn finish(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) {
        match self.pct {
            1 => self.out(b'%'),
            2 => {
                self.out(b'%');
                self.out(self.hi);
            }
            _ => {}
        }
        self.pct = 0;
        self.end_field(em, sink);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MpPhase {
    Preamble,
    AfterDelim,
    Headers,
    Body,
    Epilogue,
}

enum PartBody {
    Text,
    /// An untyped part (no `Content-Type`, `text/plain`, `application/octet-stream`: a
    /// form field) before its first byte past white space; see [`BodyKind::Untyped`].
    Sniff(Vec<u8>),
    Markup(Box<Entities>),
    Json(Box<Json>),
    Form(Box<Form>),
    /// A nested `multipart/*` (an email's `multipart/alternative` inside `mixed`).
    Multipart(Box<Multipart>),
}

struct Part {
    body: PartBody,
    /// The part declares `Content-Transfer-Encoding: quoted-printable`.
    qp: Option<Box<Qp>>,
    name: Vec<u8>,
    named: bool,
    max_depth: u32,
    /// How many multipart bodies enclose this part's body.
    nest: u32,
}

impl Part {
    fn new(max_depth: u32, nest: u32) -> Self {
        Part {
            body: PartBody::Text,
            qp: None,
            name: Vec::new(),
            named: false,
            max_depth,
            nest,
        }
    }

    fn key(&self) -> Option<&[u8]> {
        if self.named {
            Some(&self.name)
        } else {
            None
        }
    }

    fn release(
        &mut self,
        in_body: bool,
        bytes: &[u8],
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> Result<(), DecodeError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if !in_body {
            em.value(bytes, None, sink);
            return Ok(());
        }
        self.transfer_decoded(bytes, false, em, sink)
    }

    /// Hands the part's body bytes on, through its quoted-printable decoder when it has
    /// one (`last` for the end of the part, which flushes what the decoder holds).
    fn transfer_decoded(
        &mut self,
        bytes: &[u8],
        last: bool,
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> Result<(), DecodeError> {
        let Some(decoded) = self.qp.as_mut().map(|qp| qp.feed(bytes, last)) else {
            return self.body_bytes(bytes, em, sink);
        };
        let r = self.body_bytes(&decoded, em, sink);
        if let Some(qp) = self.qp.as_mut() {
            qp.out = decoded;
        }
        r
    }

    fn body_bytes(
        &mut self,
        bytes: &[u8],
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> Result<(), DecodeError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if let PartBody::Sniff(held) = &mut self.body {
            let Some(sniffed) = sniff(held, bytes) else {
                return Ok(());
            };
            let held = std::mem::take(held);
            self.body = match sniffed {
                Sniffed::Json => PartBody::Json(Box::new(Json::new(self.max_depth, self.key()))),
                Sniffed::Markup => PartBody::Markup(Box::default()),
                Sniffed::Text => PartBody::Text,
            };
            self.body_bytes(&held, em, sink)?;
        }
        let key = if self.named {
            Some(self.name.as_slice())
        } else {
            None
        };
        match &mut self.body {
            PartBody::Text | PartBody::Sniff(_) => em.value(bytes, key, sink),
            PartBody::Markup(m) => m.feed(bytes, key, em, sink),
            PartBody::Json(j) => j.feed(bytes, em, sink)?,
            PartBody::Form(f) => f.feed(bytes, em, sink),
            PartBody::Multipart(m) => m.feed(bytes, em, sink)?,
        }
        Ok(())
    }

    fn end(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) -> Result<(), DecodeError> {
        if self.qp.is_some() {
            self.transfer_decoded(&[], true, em, sink)?;
        }
        let key = if self.named {
            Some(self.name.as_slice())
        } else {
            None
        };
        match &mut self.body {
            PartBody::Text => em.end_value(key, sink),
            PartBody::Sniff(held) => {
                em.value(held, key, sink);
                em.end_value(key, sink);
            }
            PartBody::Markup(m) => m.finish(key, em, sink),
            PartBody::Json(j) => j.finish(em, sink),
            PartBody::Form(f) => f.finish(em, sink),
            PartBody::Multipart(m) => m.finish(em, sink)?,
        }
        em.boundary();
        Ok(())
    }

    fn begin(&mut self, headers: &[u8]) {
        let h = parse_part_headers(headers);
        self.named = h.name.is_some();
        self.name = h
            .name
            .map(|mut n| {
                n.truncate(MAX_KEY_LEN);
                n
            })
            .unwrap_or_default();
        self.qp = h.quoted_printable.then(Box::default);
        self.body = match (h.class, h.boundary) {
            (MediaClass::Json, _) => {
                PartBody::Json(Box::new(Json::new(self.max_depth, self.key())))
            }
            (MediaClass::Form, _) => PartBody::Form(Box::default()),
            (MediaClass::Markup, _) => PartBody::Markup(Box::default()),
            (MediaClass::Multipart, Some(b))
                if !b.is_empty() && b.len() <= MAX_BOUNDARY && self.nest < MAX_MULTIPART_NEST =>
            {
                PartBody::Multipart(Box::new(Multipart::new(&b, self.max_depth, self.nest + 1)))
            }
            (MediaClass::Message, _) if self.nest < MAX_MULTIPART_NEST => {
                PartBody::Multipart(Box::new(Multipart::message(self.max_depth, self.nest + 1)))
            }
            _ if h.untyped => PartBody::Sniff(Vec::new()),
            _ => PartBody::Text,
        };
    }
}

/// Longest run of spaces and tabs between a quoted-printable `=` and the line break it
/// makes soft (RFC 2045 allows transport padding there); a longer one is text.
const QP_MAX_PAD: usize = 76;

/// Streaming quoted-printable decoder (RFC 2045 §6.7) for multipart parts that declare
/// it: `=XX` is the byte (lower-case hex accepted, as decoders do), `=` before a line
/// break (after optional padding) is a soft break and vanishes, so an identifier a mail
/// library wrapped at 76 characters is read whole. Any other `=` is text.
#[derive(Default)]
struct Qp {
    /// The undecided tail of the previous piece: an `=` and what followed it.
    held: Vec<u8>,
    out: Vec<u8>,
}

enum QpEscape {
    Byte(u8),
    /// A soft line break: `=` and this many bytes after it vanish.
    Soft(usize),
    Literal,
    NeedMore,
}

impl Qp {
    /// Decodes the next piece of the part (`last` for the end of it); the decoded bytes
    /// are returned in the decoder's own buffer, which the caller hands back (`self.out`).
    fn feed(&mut self, data: &[u8], last: bool) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        if self.held.is_empty() {
            let used = qp_decode(data, last, &mut out);
            self.held.extend_from_slice(data.get(used..).unwrap_or(&[]));
        } else {
            // A piece cut inside an escape (at most once per piece): decode it after the
            // held bytes.
            let mut buf = std::mem::take(&mut self.held);
            buf.extend_from_slice(data);
            let used = qp_decode(&buf, last, &mut out);
            self.held.extend_from_slice(buf.get(used..).unwrap_or(&[]));
        }
        out
    }
}

/// Decodes quoted-printable `input` into `out`; returns how many bytes were decoded, which
/// is less than `input.len()` only when `input` ends in an escape that needs more bytes
/// (never when `last`).
fn qp_decode(input: &[u8], last: bool, out: &mut Vec<u8>) -> usize {
    let mut i = 0;
    while let Some(k) = memchr::memchr(b'=', input.get(i..).unwrap_or(&[])) {
        let at = i + k;
        out.extend_from_slice(input.get(i..at).unwrap_or(&[]));
        match qp_escape(input.get(at + 1..).unwrap_or(&[])) {
            QpEscape::Byte(b) => {
                out.push(b);
                i = at + 3;
            }
            QpEscape::Soft(n) => i = at + 1 + n,
            QpEscape::NeedMore if !last => return at,
            QpEscape::Literal | QpEscape::NeedMore => {
                out.push(b'=');
                i = at + 1;
            }
        }
    }
    out.extend_from_slice(input.get(i..).unwrap_or(&[]));
    input.len()
}

/// What the bytes after a quoted-printable `=` make of it.
fn qp_escape(rest: &[u8]) -> QpEscape {
    match rest {
        [a, b, ..] if hex_val(*a).is_some() && hex_val(*b).is_some() => {
            QpEscape::Byte(hex_val(*a).unwrap_or(0) << 4 | hex_val(*b).unwrap_or(0))
        }
        [a] if hex_val(*a).is_some() => QpEscape::NeedMore,
        _ => {
            let pad = rest
                .iter()
                .take(QP_MAX_PAD + 1)
                .take_while(|&&c| c == b' ' || c == b'\t')
                .count();
            if pad > QP_MAX_PAD {
                return QpEscape::Literal;
            }
            match rest.get(pad..).unwrap_or(&[]) {
                [] | [b'\r'] => QpEscape::NeedMore,
                [b'\n', ..] => QpEscape::Soft(pad + 1),
                [b'\r', b'\n', ..] => QpEscape::Soft(pad + 2),
                _ => QpEscape::Literal,
            }
        }
    }
}

/// Streaming multipart parser: delimiter search by KMP across chunks (a partial match is kept
/// as a count, since its bytes are the delimiter's own prefix).
struct Multipart {
    /// `\r\n--boundary`.
    delim: Vec<u8>,
    fail: Vec<usize>,
    matched: usize,
    /// Leading bytes of the current match that were never in the input (the `\r\n` assumed
    /// before the very first delimiter).
    virt: usize,
    phase: MpPhase,
    after: u8,
    hdr: Vec<u8>,
    hdr_last: u32,
    part: Part,
    /// A whole message (`message/rfc822`): one header block and one body, no delimiter.
    single: bool,
}

impl Multipart {
    fn new(boundary: &[u8], max_depth: u32, nest: u32) -> Self {
        let mut delim = b"\r\n--".to_vec();
        delim.extend_from_slice(boundary);
        let mut fail = vec![0usize; delim.len()];
        let mut k = 0;
        for i in 1..delim.len() {
            while k > 0 && delim.get(i) != delim.get(k) {
                k = fail.get(k - 1).copied().unwrap_or(0);
            }
            if delim.get(i) == delim.get(k) {
                k += 1;
            }
            if let Some(slot) = fail.get_mut(i) {
                *slot = k;
            }
        }
        Multipart {
            delim,
            fail,
            matched: 2,
            virt: 2,
            phase: MpPhase::Preamble,
            after: 0,
            hdr: Vec::new(),
            hdr_last: 0x0d0a,
            part: Part::new(max_depth, nest),
            single: false,
        }
    }

    /// A parser for a whole message: its header block, then its body as one part.
    fn message(max_depth: u32, nest: u32) -> Self {
        let mut m = Multipart::new(b"", max_depth, nest);
        m.single = true;
        m.matched = 0;
        m.virt = 0;
        m.start_headers();
        m
    }

    fn feed(
        &mut self,
        data: &[u8],
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> Result<(), DecodeError> {
        let mut i = 0;
        while i < data.len() {
            if self.single && self.phase == MpPhase::Body {
                self.part
                    .release(true, data.get(i..).unwrap_or(&[]), em, sink)?;
                break;
            }
            match self.phase {
                MpPhase::Preamble | MpPhase::Body => i = self.scan(data, i, em, sink)?,
                MpPhase::AfterDelim => {
                    let c = data.get(i).copied().unwrap_or(0);
                    i += 1;
                    match (self.after, c) {
                        (0, b'-') => self.after = 1,
                        (1, b'-') => {
                            self.phase = MpPhase::Epilogue;
                        }
                        (0 | 2, b' ' | b'\t') => {}
                        (0 | 2, b'\r') => self.after = 2,
                        (0 | 2, b'\n') => self.start_headers(),
                        _ => {
                            i -= 1;
                            self.start_headers();
                        }
                    }
                }
                MpPhase::Headers => i = self.headers(data, i, em, sink),
                MpPhase::Epilogue => {
                    em.value(data.get(i..).unwrap_or(&[]), None, sink);
                    i = data.len();
                }
            }
        }
        Ok(())
    }

    fn start_headers(&mut self) {
        self.phase = MpPhase::Headers;
        self.hdr.clear();
        self.hdr_last = 0x0d0a;
    }

    fn headers(
        &mut self,
        data: &[u8],
        mut i: usize,
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> usize {
        let start = i;
        let mut done = false;
        let cap = if self.single {
            MAX_MESSAGE_HEADER
        } else {
            MAX_PART_HEADER
        };
        while let Some(&c) = data.get(i) {
            i += 1;
            if self.hdr.len() < cap {
                self.hdr.push(c);
            }
            self.hdr_last = self.hdr_last << 8 | u32::from(c);
            if self.hdr_last == 0x0d0a_0d0a || self.hdr_last & 0xffff == 0x0a0a {
                done = true;
                break;
            }
        }
        // Read as text: a `filename*=UTF-8''asha%40example.in` is percent-escaped.
        em.value(data.get(start..i).unwrap_or(&[]), None, sink);
        if done {
            em.end_value(None, sink);
            self.part.begin(&self.hdr);
            self.phase = MpPhase::Body;
            self.matched = 0;
            self.virt = 0;
        }
        i
    }

    fn scan(
        &mut self,
        data: &[u8],
        mut i: usize,
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> Result<usize, DecodeError> {
        let in_body = self.phase == MpPhase::Body;
        let Multipart {
            delim,
            fail,
            matched,
            virt,
            part,
            ..
        } = self;
        let mut span = i;
        let mut found = false;
        while i < data.len() {
            if *matched == 0 {
                // delim[0] is always b'\r'
                let rest = data.get(i..).unwrap_or(&[]);
                match memchr::memchr(b'\r', rest) {
                    Some(k) => i += k,
                    None => {
                        i = data.len();
                        break;
                    }
                }
                part.release(in_body, data.get(span..i).unwrap_or(&[]), em, sink)?;
                span = i;
            }
            let c = data.get(i).copied();
            i += 1;
            loop {
                if c.is_some() && delim.get(*matched).copied() == c {
                    *matched += 1;
                    span = i;
                    break;
                }
                if *matched == 0 {
                    break;
                }
                let keep = fail.get(*matched - 1).copied().unwrap_or(0);
                let drop = *matched - keep;
                let skip = drop.min(*virt);
                *virt -= skip;
                part.release(in_body, delim.get(skip..drop).unwrap_or(&[]), em, sink)?;
                *matched = keep;
            }
            if *matched == delim.len() {
                found = true;
                break;
            }
        }
        if !found {
            part.release(in_body, data.get(span..i).unwrap_or(&[]), em, sink)?;
            return Ok(i);
        }
        self.matched = 0;
        self.virt = 0;
        if in_body {
            self.part.end(em, sink)?;
        } else {
            em.end_value(None, sink);
        }
        self.phase = MpPhase::AfterDelim;
        self.after = 0;
        Ok(i)
    }

    fn finish(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) -> Result<(), DecodeError> {
        match self.phase {
            MpPhase::Preamble | MpPhase::Body => {
                let in_body = self.phase == MpPhase::Body;
                let skip = self.virt.min(self.matched);
                let pending = self.delim.get(skip..self.matched).unwrap_or(&[]).to_vec();
                self.matched = 0;
                self.part.release(in_body, &pending, em, sink)?;
                if in_body {
                    self.part.end(em, sink)?;
                } else {
                    em.end_value(None, sink);
                }
            }
            MpPhase::Epilogue => em.end_value(None, sink),
            // Header text may have left a base64 or percent run open: it ends here, and is
            // read, rather than running on into what follows the part.
            MpPhase::AfterDelim | MpPhase::Headers => em.end_value(None, sink),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Header helpers
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum MediaClass {
    Json,
    Form,
    Multipart,
    Markup,
    Message,
    Other,
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r' | b'\n', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r' | b'\n'] = s {
        s = rest;
    }
    s
}

/// Whether a `Content-Type` value says nothing of the structure: `text/plain`,
/// `application/octet-stream`.
fn generic_type(value: &[u8]) -> bool {
    let mt = trim(value.split(|&b| b == b';').next().unwrap_or(&[]));
    mt.eq_ignore_ascii_case(b"text/plain") || mt.eq_ignore_ascii_case(b"application/octet-stream")
}

fn media_class(value: &[u8]) -> MediaClass {
    let mt = trim(value.split(|&b| b == b';').next().unwrap_or(&[]));
    let mt = mt.to_ascii_lowercase();
    if mt == b"application/x-www-form-urlencoded" {
        return MediaClass::Form;
    }
    if mt.starts_with(b"multipart/") {
        return MediaClass::Multipart;
    }
    if mt == b"message/rfc822" || mt == b"message/global" {
        return MediaClass::Message;
    }
    let subtype = mt.splitn(2, |&b| b == b'/').nth(1).unwrap_or(&[]);
    if memchr::memmem::find(subtype, b"json").is_some() {
        return MediaClass::Json;
    }
    if subtype == b"html" || subtype == b"xml" || subtype.ends_with(b"+xml") {
        return MediaClass::Markup;
    }
    MediaClass::Other
}

/// Value of parameter `want` (case-insensitive name) in a header value of the form
/// `token; a=b; c="quoted \" value"`.
fn header_param(value: &[u8], want: &[u8]) -> Option<Vec<u8>> {
    let mut i = memchr::memchr(b';', value)? + 1;
    while i < value.len() {
        while value
            .get(i)
            .is_some_and(|&b| matches!(b, b' ' | b'\t' | b';'))
        {
            i += 1;
        }
        let start = i;
        while value.get(i).is_some_and(|&b| b != b'=' && b != b';') {
            i += 1;
        }
        let name = trim(value.get(start..i).unwrap_or(&[]));
        if value.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        while value.get(i).is_some_and(|&b| matches!(b, b' ' | b'\t')) {
            i += 1;
        }
        let mut v = Vec::new();
        if value.get(i) == Some(&b'"') {
            i += 1;
            while let Some(&b) = value.get(i) {
                i += 1;
                match b {
                    b'"' => break,
                    b'\\' => {
                        if let Some(&n) = value.get(i) {
                            v.push(n);
                            i += 1;
                        }
                    }
                    _ => v.push(b),
                }
            }
            while value.get(i).is_some_and(|&b| b != b';') {
                i += 1;
            }
        } else {
            let vs = i;
            while value.get(i).is_some_and(|&b| b != b';') {
                i += 1;
            }
            v.extend_from_slice(trim(value.get(vs..i).unwrap_or(&[])));
        }
        if name.eq_ignore_ascii_case(want) {
            return Some(v);
        }
    }
    None
}

/// What a multipart part's header block says about its body.
struct PartHeaders {
    /// `Content-Disposition` `name`.
    name: Option<Vec<u8>>,
    class: MediaClass,
    /// `Content-Type` `boundary`, for a nested multipart body.
    boundary: Option<Vec<u8>>,
    /// `Content-Transfer-Encoding: quoted-printable`.
    quoted_printable: bool,
    /// No `Content-Type`, or a generic one (see [`BodyKind::Untyped`]).
    untyped: bool,
}

/// Reads a part's header block. Folded lines (a line starting with white space continues
/// the previous one, as mail headers wrap a long `Content-Type`) are unfolded first.
fn parse_part_headers(block: &[u8]) -> PartHeaders {
    let mut h = PartHeaders {
        name: None,
        class: MediaClass::Other,
        boundary: None,
        quoted_printable: false,
        untyped: true,
    };
    let mut fields: Vec<Vec<u8>> = Vec::new();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match (line.first(), fields.last_mut()) {
            (Some(b' ' | b'\t'), Some(field)) => field.extend_from_slice(line),
            _ => fields.push(line.to_vec()),
        }
    }
    for line in &fields {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let field = trim(line.get(..colon).unwrap_or(&[]));
        let value = trim(line.get(colon + 1..).unwrap_or(&[]));
        if field.eq_ignore_ascii_case(b"content-disposition") {
            h.name = header_param(value, b"name");
        } else if field.eq_ignore_ascii_case(b"content-type") {
            h.class = media_class(value);
            h.boundary = header_param(value, b"boundary");
            h.untyped = generic_type(value);
        } else if field.eq_ignore_ascii_case(b"content-transfer-encoding") {
            h.quoted_printable = trim(value).eq_ignore_ascii_case(b"quoted-printable");
        }
    }
    h
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
            if looks_like_mime(out.get(mark + 1..).unwrap_or(&[])) {
                // Base64 of an email in a header: read it as a body would be.
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

/// The body pipeline's reading of `value` as one text value, into `out`.
#[cold]
#[inline(never)]
fn normalise_as_body(value: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut em = Emitter::default();
    let mut sink = |seg: Segment<'_>, _| out.extend_from_slice(seg.text);
    em.text(value, None, &mut sink);
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

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use proptest::prelude::*;
    use std::io::Write;

    /// The normalised stream as runs of (key, bytes), adjacent runs of one key merged, so two
    /// streams compare equal exactly when their bytes and per-byte keys are equal.
    type Stream = Vec<(Option<Vec<u8>>, Vec<u8>)>;

    #[derive(Default)]
    struct Collect {
        runs: Stream,
        next: u64,
    }

    impl Collect {
        fn push(&mut self, s: Segment<'_>) {
            assert_eq!(s.offset, self.next, "segment offsets must be contiguous");
            assert!(!s.text.is_empty(), "no empty segments");
            self.next += s.text.len() as u64;
            let key = s.key.map(<[u8]>::to_vec);
            match self.runs.last_mut() {
                Some((k, t)) if *k == key => t.extend_from_slice(s.text),
                _ => self.runs.push((key, s.text.to_vec())),
            }
        }
    }

    fn run_with(
        codings: &[Coding],
        kind: BodyKind,
        limits: Limits,
        chunks: &[&[u8]],
    ) -> (Stream, Result<(), DecodeError>) {
        let mut p = Pipeline::new(codings.to_vec(), kind, limits).unwrap();
        let mut c = Collect::default();
        let mut res = Ok(());
        for ch in chunks {
            res = p.feed(ch, &mut |s| c.push(s));
            if res.is_err() {
                break;
            }
        }
        if res.is_ok() {
            res = p.finish(&mut |s| c.push(s));
        }
        assert_eq!(p.emitted_bytes(), c.next);
        (c.runs, res)
    }

    fn run(kind: BodyKind, chunks: &[&[u8]]) -> (Stream, Result<(), DecodeError>) {
        run_with(&[], kind, Limits::default(), chunks)
    }

    fn one_shot(kind: BodyKind, body: &[u8]) -> Stream {
        let (s, r) = run(kind, &[body]);
        assert_eq!(r, Ok(()));
        s
    }

    /// Cuts `body` into pieces whose sizes cycle through `sizes`.
    fn split<'a>(body: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut k = 0;
        while !rest.is_empty() {
            let n = sizes[k % sizes.len()].clamp(1, rest.len());
            out.push(&rest[..n]);
            rest = &rest[n..];
            k += 1;
        }
        out
    }

    /// The stream an emitter makes of `body` as one value text under key `k`, cut at
    /// `sizes`, through the skipping scan or the bytewise reference.
    fn emitted(body: &[u8], sizes: &[usize], bytewise: bool) -> Stream {
        let mut em = Emitter::default();
        let mut c = Collect::default();
        let mut sink = |s: Segment<'_>, _| c.push(s);
        for ch in split(body, sizes) {
            if bytewise {
                em.text_bytewise(ch, Some(b"k"), &mut sink);
            } else {
                em.text(ch, Some(b"k"), &mut sink);
            }
        }
        em.end_value(Some(b"k"), &mut sink);
        em.flush(false, &mut sink);
        c.runs
    }

    fn render(stream: &Stream) -> String {
        let mut s = String::new();
        for (k, t) in stream {
            match k {
                Some(k) => {
                    s.push('{');
                    s.push_str(&String::from_utf8_lossy(k));
                    s.push('=');
                    s.push_str(&String::from_utf8_lossy(t));
                    s.push('}');
                }
                None => s.push_str(&String::from_utf8_lossy(t)),
            }
        }
        s
    }

    fn norm(kind: BodyKind, body: &[u8]) -> String {
        render(&one_shot(kind, body))
    }

    /// The body cut in two at every offset normalises to `want`.
    fn same_at_every_cut(kind: BodyKind, body: &[u8], want: &str) {
        for cut in 0..=body.len() {
            let (s, r) = run(kind.clone(), &[&body[..cut], &body[cut..]]);
            assert_eq!(r, Ok(()));
            assert_eq!(render(&s), want, "cut at {cut}");
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
        match coding {
            Coding::Gzip => gzip(data),
            Coding::Deflate => {
                let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Coding::Br => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    w.write_all(data).unwrap();
                }
                out
            }
            Coding::Zstd => {
                ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
            }
            Coding::Identity => data.to_vec(),
        }
    }

    /// Applies `codings` in header order.
    fn encode_all(codings: &[Coding], data: &[u8]) -> Vec<u8> {
        codings
            .iter()
            .fold(data.to_vec(), |acc, c| encode(*c, &acc))
    }

    fn sample_json(records: usize) -> Vec<u8> {
        let mut s = String::from("[");
        for i in 0..records {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                r#"{{"id":{i},"aadhaar":"{:04} {:04} {:04}","name":"user\u0020{i}","tags":["a{}","b"],"ok":true}}"#,
                i % 10000,
                (i * 7) % 10000,
                (i * 13) % 10000,
                i % 97
            ));
        }
        s.push(']');
        s.into_bytes()
    }

    // ----- headers -------------------------------------------------------------------

    #[test]
    fn content_encoding_parsing() {
        use Coding::*;
        assert_eq!(parse_content_encoding("gzip, br"), Ok(vec![Gzip, Br]));
        assert_eq!(
            parse_content_encoding(" X-GZIP ,identity,,\tZSTD"),
            Ok(vec![Gzip, Identity, Zstd])
        );
        assert_eq!(parse_content_encoding("Deflate"), Ok(vec![Deflate]));
        assert_eq!(parse_content_encoding(""), Ok(vec![]));
        assert_eq!(
            parse_content_encoding("gzip, compress"),
            Err(DecodeError::Unsupported("compress".into()))
        );
        assert_eq!(
            DecodeError::Unsupported("compress".into()).to_string(),
            "unsupported content coding: compress"
        );
    }

    #[test]
    fn body_kind_from_content_type() {
        let cases: &[(Option<&str>, BodyKind)] = &[
            (None, BodyKind::Untyped),
            (Some("application/json"), BodyKind::Json),
            (Some("Application/JSON; charset=utf-8"), BodyKind::Json),
            (Some("application/vnd.api+json"), BodyKind::Json),
            (Some("application/x-ndjson"), BodyKind::Json),
            (
                Some("application/x-www-form-urlencoded; charset=UTF-8"),
                BodyKind::Form,
            ),
            (
                Some("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxk"),
                BodyKind::Multipart {
                    boundary: b"----WebKitFormBoundary7MA4YWxk".to_vec(),
                },
            ),
            (
                Some("multipart/mixed; charset=x; Boundary=\"a b;c\""),
                BodyKind::Multipart {
                    boundary: b"a b;c".to_vec(),
                },
            ),
            (Some("multipart/form-data"), BodyKind::Text),
            (Some("multipart/form-data; boundary="), BodyKind::Text),
            (Some("text/plain"), BodyKind::Untyped),
            (Some("Text/Plain; charset=utf-8"), BodyKind::Untyped),
            (Some("application/octet-stream"), BodyKind::Untyped),
            (Some("text/csv"), BodyKind::Text),
            (Some("json/whatever"), BodyKind::Text),
            (Some("text/html; charset=utf-8"), BodyKind::Markup),
            (Some("application/xml"), BodyKind::Markup),
            (Some("text/xml"), BodyKind::Markup),
            (
                Some("application/soap+xml; charset=utf-8"),
                BodyKind::Markup,
            ),
            (Some("application/xhtml+xml"), BodyKind::Markup),
            (Some("text/htmlx"), BodyKind::Text),
            (Some("application/xml-dtd"), BodyKind::Text),
        ];
        for (ct, want) in cases {
            assert_eq!(&BodyKind::from_content_type(*ct), want, "{ct:?}");
        }
    }

    #[test]
    fn character_references_are_read() {
        use Entity::{Char, Incomplete, Text};
        let cases: &[(&str, bool, Entity)] = &[
            ("&#64;x", false, Char { ch: '@', len: 5 }),
            ("&#x40;", false, Char { ch: '@', len: 6 }),
            ("&#X4A;", false, Char { ch: 'J', len: 6 }),
            ("&#64 x", false, Char { ch: '@', len: 4 }),
            ("&commat;", false, Char { ch: '@', len: 8 }),
            ("&period;in", false, Char { ch: '.', len: 8 }),
            ("&amp;amp;", false, Char { ch: '&', len: 5 }),
            (
                "&#0;",
                false,
                Char {
                    ch: '\u{fffd}',
                    len: 4,
                },
            ),
            (
                "&#xD800;",
                false,
                Char {
                    ch: '\u{fffd}',
                    len: 8,
                },
            ),
            (
                "&#x110000;",
                false,
                Char {
                    ch: '\u{fffd}',
                    len: 10,
                },
            ),
            (
                "&#x10FFFF;",
                false,
                Char {
                    ch: '\u{10ffff}',
                    len: 10,
                },
            ),
            // Spaces of any width are plain spaces.
            ("&nbsp;", false, Char { ch: ' ', len: 6 }),
            ("&#160;", false, Char { ch: ' ', len: 6 }),
            ("&#x2009;", false, Char { ch: ' ', len: 8 }),
            // Cut short: more may follow, unless the body ends there.
            ("&", false, Incomplete),
            ("&#", false, Incomplete),
            ("&#x", false, Incomplete),
            ("&#64", false, Incomplete),
            ("&#64", true, Char { ch: '@', len: 4 }),
            ("&comm", false, Incomplete),
            ("&comm", true, Text),
            // Text: no digits, an unknown or unended name, too long.
            ("&#;", false, Text),
            ("&#xg;", false, Text),
            ("& x", false, Text),
            ("&Commat;", false, Text),
            ("&commat x", false, Text),
            ("&#000000000064;", false, Text),
            ("&averyveryverylongname;", false, Text),
        ];
        for (s, at_end, want) in cases {
            assert_eq!(&entity(s.as_bytes(), *at_end), want, "{s:?}");
        }
    }

    #[test]
    fn markup_bodies_are_read_with_their_references_undone() {
        assert_eq!(
            norm(
                BodyKind::Markup,
                b"<p>Mail asha&#46;verma&#x40;example&period;in &amp; call &#43;91&nbsp;98765&#32;43210</p>"
            ),
            "<p>Mail asha.verma@example.in & call +91 98765 43210</p>"
        );
        // Not a reference: left as it is. A reference cut at the body's end is read.
        assert_eq!(
            norm(BodyKind::Markup, b"AT&T &unknown; &#xZ; a&#64"),
            "AT&T &unknown; &#xZ; a@"
        );
        // In a multipart part of an HTML type, under the part's name.
        let body = b"--bnd\r\nContent-Disposition: form-data; name=\"bio\"\r\nContent-Type: text/html\r\n\r\na&#64;b.in\r\n--bnd--\r\n";
        let got = norm(
            BodyKind::Multipart {
                boundary: b"bnd".to_vec(),
            },
            body,
        );
        assert!(got.contains("{bio=a@b.in}"), "{got}");
    }

    #[test]
    fn too_many_encodings() {
        use Coding::*;
        let err = Pipeline::new(
            vec![Gzip, Br, Zstd, Deflate],
            BodyKind::Text,
            Limits::default(),
        )
        .unwrap_err();
        assert_eq!(err, DecodeError::TooManyEncodings { count: 4, limit: 3 });
        assert_eq!(err.to_string(), "too many content codings: 4 (limit 3)");
        assert!(Pipeline::new(
            vec![Gzip, Identity, Br, Identity, Zstd],
            BodyKind::Text,
            Limits::default()
        )
        .is_ok());
        assert!(
            Pipeline::from_headers(Some("text/plain"), Some("gzip, lzma"), Limits::default())
                .is_err()
        );
    }

    // ----- JSON ----------------------------------------------------------------------

    #[test]
    fn json_values_keys_and_separators() {
        let body = br#"{"aadhaar":"1234 5678 9012","n":-1.5e3,"arr":["a",{"x":"y"},"b",7],"t":true,"z":null,"e":""}"#;
        assert_eq!(
            norm(BodyKind::Json, body),
            "aadhaar\n{aadhaar=1234 5678 9012}\nn\n{n=-1.5e3}\narr\n{arr=a}\nx\n{x=y}\n{arr=b}\n{arr=7}\nt\nz\ne"
        );
        assert_eq!(
            norm(BodyKind::Json, br#"["a", 1, {"k": [["deep"]]}]"#),
            "a\n1\nk\n{k=deep}"
        );
        assert_eq!(norm(BodyKind::Json, b" \"top\" "), "top");
    }

    #[test]
    fn json_strings_are_read_with_their_references_undone() {
        // HTML in a JSON field, as an email API takes it; a reference spelled with a JSON
        // escape; one ending the string.
        let body = br#"{"html":"<p>Write to asha&#64;example&period;in &amp; call</p>","b":"x&#64;y","c":"z&#64"}"#;
        assert_eq!(
            norm(BodyKind::Json, body),
            "html\n{html=<p>Write to asha@example.in & call</p>}\nb\n{b=x@y}\nc\n{c=z@}"
        );
        // Keys are read as written.
        assert_eq!(
            norm(BodyKind::Json, br#"{"a&#64;b":1}"#),
            "a&#64;b\n{a&#64;b=1}"
        );
    }

    #[test]
    fn json_escapes_and_unicode() {
        let body = br#"{"a":"\u0032\u0033\u0034","b":"\ud83d\ude00","c":"x\ud800y","d":"\udc00","e":"\u12G4","f":"\n\t\/\x\"","g":"\uD800\uD800\uDC00"}"#;
        assert_eq!(
            norm(BodyKind::Json, body),
            "a\n{a=234}\nb\n{b=\u{1f600}}\nc\n{c=x\u{fffd}y}\nd\n{d=\u{fffd}}\ne\n{e=\u{fffd}G4}\nf\n{f=\n\t/\\x\"}\ng\n{g=\u{fffd}\u{10000}}"
        );
        // Escaped key decodes too, and digits written as \u escapes become plain digits.
        assert_eq!(
            norm(
                BodyKind::Json,
                br#"{"\u0061adhaar":"\u0031\u0032\u0033\u0034 5678"}"#
            ),
            "aadhaar\n{aadhaar=1234 5678}"
        );
        // Unterminated escapes at end of body.
        assert_eq!(norm(BodyKind::Json, br#"{"a":"x\u00"#), "a\n{a=x\u{fffd}}");
        assert_eq!(norm(BodyKind::Json, br#"{"a":"x\"#), "a\n{a=x\\}");
    }

    #[test]
    fn json_invalid_falls_back_to_raw_with_lookback() {
        assert_eq!(
            norm(BodyKind::Json, br#"{"a": 1234 5678 9012}"#),
            "a\n{a=1234}\n{\"a\": 1234 5678 9012}"
        );
        assert_eq!(
            norm(BodyKind::Json, b"aadhaar=1234 5678 9012"),
            "aadhaar=1234 5678 9012"
        );
        assert_eq!(norm(BodyKind::Json, b"[1,2] x"), "1\n2\n[1,2] x");
        assert_eq!(norm(BodyKind::Json, b"{\"a\":tru 99}"), "a\n{\"a\":tru 99}");
        // Long valid prefix: only the last JSON_LOOKBACK bytes are repeated.
        let mut body = br#"{"pad":""#.to_vec();
        body.extend(std::iter::repeat_n(b'p', 200));
        body.extend_from_slice(br#"", "x": 1 2}"#);
        let out = norm(BodyKind::Json, &body);
        let raw = &body[body.len() - 2 - JSON_LOOKBACK..];
        assert!(
            out.ends_with(&format!("\n{}", String::from_utf8_lossy(raw))),
            "{out}"
        );
    }

    #[test]
    fn json_concatenated_documents() {
        assert_eq!(
            norm(BodyKind::Json, b"{\"a\":1}\n{\"a\":2}\n[3]"),
            "a\n{a=1}\na\n{a=2}\n3"
        );
        // Lenient trailing commas.
        assert_eq!(norm(BodyKind::Json, br#"{"a":[1,],}"#), "a\n{a=1}");
    }

    #[test]
    fn json_invalid_utf8_passes_through() {
        let (s, r) = run(BodyKind::Json, &[b"{\"k\":\"\xff\xfe12\xc3\"}"]);
        assert_eq!(r, Ok(()));
        assert_eq!(s[1], (Some(b"k".to_vec()), b"\xff\xfe12\xc3".to_vec()));
        let (s, r) = run(BodyKind::Text, &[b"\xff\x00abc\x80"]);
        assert_eq!(r, Ok(()));
        assert_eq!(s, vec![(None, b"\xff\x00abc\x80".to_vec())]);
    }

    #[test]
    fn json_depth_limit() {
        let ok = [b"[".repeat(512), b"]".repeat(512)].concat();
        assert_eq!(run(BodyKind::Json, &[&ok]).1, Ok(()));
        let deep = b"[".repeat(513);
        assert_eq!(
            run(BodyKind::Json, &[&deep]).1,
            Err(DecodeError::TooDeep { limit: 512 })
        );
        assert_eq!(
            DecodeError::TooDeep { limit: 512 }.to_string(),
            "json nesting deeper than 512"
        );
    }

    #[test]
    fn json_100k_nesting_is_too_deep_without_recursion() {
        let arrays = b"[".repeat(100_000);
        let objects = br#"{"a":"#.repeat(100_000);
        for body in [&arrays, &objects] {
            assert_eq!(
                run(BodyKind::Json, &[body]).1,
                Err(DecodeError::TooDeep { limit: 512 })
            );
            assert_eq!(
                run(BodyKind::Json, &split(body, &[1, 3])).1,
                Err(DecodeError::TooDeep { limit: 512 })
            );
        }
        // With a limit above the nesting, 100k levels are parsed iteratively (no stack use).
        let limits = Limits {
            max_depth: 200_000,
            ..Limits::default()
        };
        let body = [
            br#"{"a":"#.repeat(100_000),
            b"\"x\"".to_vec(),
            b"}".repeat(100_000),
        ]
        .concat();
        let (s, r) = run_with(&[], BodyKind::Json, limits, &[&body]);
        assert_eq!(r, Ok(()));
        assert_eq!(s.last(), Some(&(Some(b"a".to_vec()), b"x".to_vec())));
    }

    #[test]
    fn json_long_keys_truncated_for_key_only() {
        let key = "k".repeat(1000);
        let body = format!(r#"{{"{key}":"v"}}"#);
        let s = one_shot(BodyKind::Json, body.as_bytes());
        assert_eq!(s[0], (None, format!("{key}\n").into_bytes()));
        assert_eq!(s[1], (Some(vec![b'k'; MAX_KEY_LEN]), b"v".to_vec()));
    }

    // ----- form ----------------------------------------------------------------------

    #[test]
    fn form_fields() {
        assert_eq!(
            norm(BodyKind::Form, b"name=Ravi+Kumar&aadhaar=1234%205678%209012&flag&=v&&bad=%zz%4"),
            "name\n{name=Ravi Kumar}\naadhaar\n{aadhaar=1234 5678 9012}\nflag\n{=v}\nbad\n{bad=%zz%4}"
        );
        assert_eq!(norm(BodyKind::Form, b"a%3D=b=c%3"), "a=\n{a==b=c%3}");
        assert_eq!(norm(BodyKind::Form, b"x=%"), "x\n{x=%}");
    }

    #[test]
    fn form_values_are_read_with_their_references_undone() {
        // A rich-text field: its HTML percent-encoded, as a browser posts it. A reference
        // ending a value is read; one cut by the next field's `&` is not a reference.
        assert_eq!(
            norm(
                BodyKind::Form,
                b"note=%3Cp%3EUID+2345%26nbsp%3B6789%26%23160%3B0124%2C+asha%26%2364%3Bexample.in%3C%2Fp%3E&b=x%26%23x40%3By&c=z%26%2364&d=%26%23&e=1"
            ),
            "note\n{note=<p>UID 2345 6789 0124, asha@example.in</p>}\nb\n{b=x@y}\nc\n{c=z@}\nd\n{d=&#}\ne\n{e=1}"
        );
        // Keys are read as written.
        assert_eq!(
            norm(BodyKind::Form, b"a%26%2364%3B=1"),
            "a&#64;\n{a&#64;=1}"
        );
    }

    #[test]
    fn form_escape_split_anywhere() {
        let body = b"pan=ABCDE%31234F&aad%68aar=%31%32%33%34+5678+9012&z=%4&y=%%41";
        let want = one_shot(BodyKind::Form, body);
        assert_eq!(
            render(&want),
            "pan\n{pan=ABCDE1234F}\naadhaar\n{aadhaar=1234 5678 9012}\nz\n{z=%4}\ny\n{y=%A}"
        );
        for cut in 0..=body.len() {
            let (s, r) = run(BodyKind::Form, &[&body[..cut], &body[cut..]]);
            assert_eq!(r, Ok(()));
            assert_eq!(s, want, "cut at {cut}");
        }
        assert_eq!(run(BodyKind::Form, &split(body, &[1])).0, want);
    }

    #[test]
    fn one_shot_percent_helpers() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"a+b%20c", b"a b c"),
            (b"%zz%4", b"%zz%4"),
            (b"%", b"%"),
            (b"%4a%4A", b"JJ"),
            (b"%%41", b"%A"),
            (b"\xff%ff", b"\xff\xff"),
        ];
        for (input, want) in cases {
            let mut out = b"pre:".to_vec();
            percent_decode_form(input, &mut out);
            assert_eq!(&out[4..], *want);
            assert_eq!(&out[..4], b"pre:");
        }
        let mut pairs = Vec::new();
        for_each_query_pair(b"q=1234+5678&&aad%68aar=9012&flag&=x&k=a=b", &mut |k, v| {
            pairs.push((k.to_vec(), v.to_vec()))
        });
        let want: Vec<(Vec<u8>, Vec<u8>)> = [
            ("q", "1234 5678"),
            ("aadhaar", "9012"),
            ("flag", ""),
            ("", "x"),
            ("k", "a=b"),
        ]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
        assert_eq!(pairs, want);
    }

    // ----- multipart -----------------------------------------------------------------

    const MP_BODY: &[u8] = b"preamble text\r\n--XyZ\r\nContent-Disposition: form-data; name=\"pan\"\r\n\r\nABCDE1234F\r\n--XyZ\r\nContent-Disposition: form-data; name=\"doc\"\r\nContent-Type: application/json\r\n\r\n{\"aadhaar\":\"1234 5678 9012\",\"x\":[1]}\r\n--XyZ  \r\nContent-Disposition: form-data; name=\"f\"\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\na=1&b=2\r\n--XyZ\r\nContent-Type: text/plain\r\n\r\nanon\r\n--X\r\n--Xy\r\n--XyZ--\r\nepilogue";

    fn mp_kind() -> BodyKind {
        BodyKind::Multipart {
            boundary: b"XyZ".to_vec(),
        }
    }

    #[test]
    fn multipart_parts() {
        assert_eq!(
            norm(mp_kind(), MP_BODY),
            "preamble text\nContent-Disposition: form-data; name=\"pan\"\r\n\r\n\n{pan=ABCDE1234F}\n\
             Content-Disposition: form-data; name=\"doc\"\r\nContent-Type: application/json\r\n\r\n\n\
             aadhaar\n{aadhaar=1234 5678 9012}\nx\n{x=1}\n\
             Content-Disposition: form-data; name=\"f\"\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n\n\
             a\n{a=1}\nb\n{b=2}\nContent-Type: text/plain\r\n\r\n\nanon\r\n--X\r\n--Xy\n\r\nepilogue"
        );
        // A part header's percent escapes are undone too (RFC 8187 `filename*`).
        let body = b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename*=UTF-8''asha%40example.in\r\n\r\nx\r\n--b--";
        assert!(norm(
            BodyKind::Multipart {
                boundary: b"b".to_vec()
            },
            body
        )
        .contains("\nasha@example.in\n"));
        // Body starting with the delimiter (no preamble) and a JSON part without an object key.
        let body = b"--b\r\nContent-Disposition: form-data; name=\"ids\"\r\nContent-Type: application/json\r\n\r\n[\"1234\"]\r\n--b--";
        assert_eq!(
            norm(BodyKind::Multipart { boundary: b"b".to_vec() }, body),
            "Content-Disposition: form-data; name=\"ids\"\r\nContent-Type: application/json\r\n\r\n\n{ids=1234}"
        );
    }

    #[test]
    fn multipart_boundary_split_anywhere() {
        let want = one_shot(mp_kind(), MP_BODY);
        for cut in 0..=MP_BODY.len() {
            let (s, r) = run(mp_kind(), &[&MP_BODY[..cut], &MP_BODY[cut..]]);
            assert_eq!(r, Ok(()));
            assert_eq!(s, want, "cut at {cut}");
        }
        assert_eq!(run(mp_kind(), &split(MP_BODY, &[1])).0, want);
        assert_eq!(run(mp_kind(), &split(MP_BODY, &[2, 5, 3])).0, want);
    }

    #[test]
    fn multipart_unterminated_and_self_overlapping_boundary() {
        // Boundary "aab": KMP must handle "\r\n--aaab" (partial match restarting mid-way).
        let kind = BodyKind::Multipart {
            boundary: b"aab".to_vec(),
        };
        let body = b"--aab\r\nContent-Disposition: form-data; name=\"n\"\r\n\r\nx\r\n--aaab\r\n--aab\r\n\r\nlast 1234\r\n--aa";
        let want = one_shot(kind.clone(), body);
        assert_eq!(
            render(&want),
            "Content-Disposition: form-data; name=\"n\"\r\n\r\n\n{n=x\r\n--aaab}\n\r\n\nlast 1234\r\n--aa"
        );
        for cut in 0..=body.len() {
            assert_eq!(
                run(kind.clone(), &[&body[..cut], &body[cut..]]).0,
                want,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn quoted_printable_decoding() {
        let qp = |input: &[u8]| {
            let mut out = Vec::new();
            assert_eq!(qp_decode(input, true, &mut out), input.len());
            String::from_utf8_lossy(&out).into_owned()
        };
        assert_eq!(qp(b"2345 6789 01=\r\n24"), "2345 6789 0124");
        assert_eq!(qp(b"asha=40example.in =3D x=\n"), "asha@example.in = x");
        assert_eq!(qp(b"=E0=A5=A8=e0=a5=a9"), "\u{968}\u{969}");
        assert_eq!(qp(b"pad= \t \r\nded"), "padded");
        // Not escapes: kept as written.
        assert_eq!(qp(b"a=b =4 =\rx =G1 ="), "a=b =4 =\rx =G1 =");
        let mut out = Vec::new();
        assert_eq!(
            qp_decode(b"abc=4", false, &mut out),
            3,
            "an escape cut short waits"
        );
        assert_eq!(qp_decode(b"abc= \r", false, &mut out), 3);
        // Padding longer than a line is text, not a soft break.
        let long = format!("a={}\r\nb", " ".repeat(QP_MAX_PAD + 1));
        assert_eq!(qp(long.as_bytes()), long);
    }

    #[test]
    fn untyped_bodies_that_open_as_json_are_read_as_json() {
        // `requests.post(url, data=json.dumps(…))`: no type, and Devanagari digits as
        // `\u` escapes (json.dumps's ensure_ascii).
        let body = "\n {\"uid\": \"\\u0968\\u0969\\u096a\\u096b\", \"n\": 1}";
        let want = "uid\n{uid=\u{968}\u{969}\u{96a}\u{96b}}\nn\n{n=1}";
        assert_eq!(norm(BodyKind::Untyped, body.as_bytes()), want);
        same_at_every_cut(BodyKind::Untyped, body.as_bytes(), want);
        // A document that opens with `<` is markup (an XML envelope posted with no type):
        // its character references are read.
        let xml = "\r\n<?xml version=\"1.0\"?><uid>&#50;345&#x20;6789&nbsp;0124</uid>";
        let want = norm(BodyKind::Markup, xml.as_bytes());
        assert!(want.contains("<uid>2345 6789 0124</uid>"), "{want:?}");
        assert_eq!(norm(BodyKind::Untyped, xml.as_bytes()), want);
        same_at_every_cut(BodyKind::Untyped, xml.as_bytes(), &want);
        // Anything else is text, as it was; so is white space alone, and JSON or markup
        // after more white space than a body starts with.
        for text in [
            "plain text {x} <b>&#50;</b>",
            "  \r\n",
            "",
            "2345 6789 0124",
        ] {
            assert_eq!(
                norm(BodyKind::Untyped, text.as_bytes()),
                norm(BodyKind::Text, text.as_bytes())
            );
        }
        for doc in ["{\"a\":\"b\"}", "<a>&#50;</a>"] {
            let late = format!("{}{doc}", " ".repeat(SNIFF_MAX_BLANK + 1));
            assert_eq!(
                norm(BodyKind::Untyped, late.as_bytes()),
                norm(BodyKind::Text, late.as_bytes())
            );
        }
        let p = Pipeline::from_headers(None, None, Limits::default()).unwrap();
        assert!(
            p.spelled_in_escapes(),
            "undecided: held back as JSON may need"
        );
        // A form field holding JSON, as multipart forms send it (no type of its own).
        let form = format!(
            "--f\r\nContent-Disposition: form-data; name=\"meta\"\r\n\r\n{body}\r\n\
             --f\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n[x\r\n\
             --f\r\nContent-Disposition: form-data; name=\"doc\"\r\n\r\n<p>&#64;</p>\r\n--f--"
        );
        let got = norm(
            BodyKind::Multipart {
                boundary: b"f".to_vec(),
            },
            form.as_bytes(),
        );
        assert!(
            got.contains("\nuid\n{uid=\u{968}\u{969}\u{96a}\u{96b}}\nn\n{n=1}"),
            "{got:?}"
        );
        assert!(got.contains("{note=[x}"), "{got:?}");
        assert!(got.contains("{doc=<p>@</p>}"), "{got:?}");
    }

    #[test]
    fn base64_emails_in_a_head_value_read_as_in_a_body() {
        let msg = "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nUID 2345 67=\r\n89 0124";
        let value = format!("raw={}", B64_ENGINE.encode(msg));
        let mut out = Vec::new();
        assert!(normalise_value(value.as_bytes(), &mut out));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("UID 2345 6789 0124"), "{text:?}");
        assert_eq!(text, norm(BodyKind::Text, value.as_bytes()));
    }

    #[test]
    fn whole_messages_are_read_by_their_own_headers() {
        // A raw email uploaded to a mail API (`message/rfc822`): its headers as text, its
        // body by its own type and transfer encoding, here multipart with a
        // quoted-printable part whose soft break falls inside the number.
        let body = "From: a@b.example\r\nSubject: KYC\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed;\r\n boundary=\"m1\"\r\n\r\n\
             --m1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
             PAN ABCPE=\r\n1234F, UID 2345 =\r\n6789 0124\r\n--m1--\r\n";
        let got = norm(BodyKind::Message, body.as_bytes());
        assert!(
            got.contains("PAN ABCPE1234F, UID 2345 6789 0124"),
            "{got:?}"
        );
        assert!(got.contains("Subject: KYC"), "{got:?}");
        same_at_every_cut(BodyKind::Message, body.as_bytes(), &got);
        // A single-part message, and one inside a multipart upload (a mail API's `message`
        // field of type message/rfc822).
        let single = "Subject: x\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nUID 2345 67=\n89 0124";
        assert!(norm(BodyKind::Message, single.as_bytes()).contains("UID 2345 6789 0124"));
        let upload = format!(
            "--u\r\nContent-Disposition: form-data; name=\"message\"; filename=\"m.eml\"\r\n\
             Content-Type: message/rfc822\r\n\r\n{single}\r\n--u--\r\n"
        );
        let got = norm(
            BodyKind::Multipart {
                boundary: b"u".to_vec(),
            },
            upload.as_bytes(),
        );
        assert!(got.contains("UID 2345 6789 0124"), "{got:?}");
        assert_eq!(
            BodyKind::from_content_type(Some("message/rfc822")),
            BodyKind::Message
        );
        // A message that never ends its header block is all header text.
        assert_eq!(norm(BodyKind::Message, b"Subject: 2345"), "Subject: 2345");
        // Its Content-Type may come after 20 KiB of relay headers.
        let relayed = format!(
            "{}Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\nUID 2345 67=\r\n89 0124\r\n--m--",
            "Received: from relay.example by mx.example; Fri, 27 Nov 2026 10:00:00 +0530\r\n"
                .repeat(300)
        );
        assert!(norm(BodyKind::Message, relayed.as_bytes()).contains("UID 2345 6789 0124"));
    }

    #[test]
    fn a_header_block_cut_short_is_read_to_its_end() {
        // A message, or a nested part, that ends inside its header block: what the header
        // text left open (a base64 run, a percent run) is closed and read, not carried
        // into the next part's bytes or dropped.
        let pan = B64_ENGINE.encode("ABCPE1234F 2");
        let got = norm(BodyKind::Message, format!("X-Ref: {pan}").as_bytes());
        assert!(got.contains("ABCPE1234F 2"), "{got:?}");
        let body = format!(
            "--o\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\nX: {}\r\n\
             --o\r\nContent-Disposition: form-data; name=z\r\n\r\nz\r\n--o--",
            pan.trim_end_matches('=')
        );
        let got = norm(
            BodyKind::Multipart {
                boundary: b"o".to_vec(),
            },
            body.as_bytes(),
        );
        assert!(got.contains("ABCPE1234F 2"), "{got:?}");
    }

    #[test]
    fn quoted_printable_parts_and_nested_multipart() {
        // An email as a mail API receives it: `mixed` holding `alternative` (its boundary on
        // a folded header line) holding a quoted-printable text part, where the mail
        // library wrapped the Aadhaar number at 76 characters and wrote the Devanagari
        // digits of a second one as escaped UTF-8.
        let uid = "2345 6789 0124";
        let dev: String = "२३४५६७८९०१२४".to_string();
        let dev_qp: String = dev.bytes().map(|b| format!("={b:02X}")).collect();
        let line = format!(
            "Dear customer, your Aadhaar number on record is {}",
            &uid[..9]
        );
        let text = format!("{line}=\r\n{} and {dev_qp}.\r\n", &uid[9..]);
        let body = format!(
            "--outer\r\nContent-Type: multipart/alternative;\r\n\tboundary=\"inner\"\r\n\r\n\
             --inner\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\n{text}\
             --inner--\r\n\r\n--outer--\r\n"
        );
        let kind = BodyKind::Multipart {
            boundary: b"outer".to_vec(),
        };
        let got = norm(kind.clone(), body.as_bytes());
        assert!(got.contains(&format!("is {uid} and {dev}.")), "{got:?}");
        assert!(!got.contains("=\r\n"), "{got:?}");
        same_at_every_cut(kind.clone(), body.as_bytes(), &got);
        // Without the declaration the part is read as written.
        let plain = body.replace("Content-Transfer-Encoding: quoted-printable\r\n", "");
        let got = norm(kind.clone(), plain.as_bytes());
        assert!(!got.contains(uid), "{got:?}");
        // Nesting deeper than MAX_MULTIPART_NEST is read as text.
        let mut deep = String::from("x");
        for level in (0..=MAX_MULTIPART_NEST + 1).rev() {
            deep = format!(
                "--b{level}\r\nContent-Type: multipart/mixed; boundary=b{}\r\n\r\n{deep}\r\n--b{level}--",
                level + 1
            );
        }
        let got = norm(
            BodyKind::Multipart {
                boundary: b"b0".to_vec(),
            },
            deep.as_bytes(),
        );
        assert!(got.contains("--b9\r\n"), "{got:?}");
        assert!(!got.contains("--b7\r\n"), "{got:?}");
    }

    // ----- text and base64 -----------------------------------------------------------

    #[test]
    fn text_base64_runs_decoded() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let secret = "Hello World 1234 5678 9012";
        let b = STANDARD.encode(secret);
        let body = format!("id: {b} end");
        assert_eq!(
            norm(BodyKind::Text, body.as_bytes()),
            format!("id: {b}\n{secret}\n end")
        );
        // At the very end of the body.
        assert_eq!(norm(BodyKind::Text, b.as_bytes()), format!("{b}\n{secret}"));
        // URL-safe alphabet.
        let url_secret = "subjects?>>~~~ aadhaar 1234 5678 9012";
        let u = URL_SAFE_NO_PAD.encode(url_secret);
        assert!(u.contains('_') || u.contains('-'), "{u}");
        assert_eq!(
            norm(BodyKind::Text, format!("t={u}&x").as_bytes()),
            format!("t={u}\n{url_secret}\n&x")
        );
        // JSON string value: decoded text keeps the key.
        let s = one_shot(BodyKind::Json, format!(r#"{{"doc":"{b}"}}"#).as_bytes());
        assert_eq!(render(&s), format!("doc\n{{doc={b}}}\n{{doc={secret}}}"));
        // Form value and multipart text part.
        assert_eq!(
            norm(BodyKind::Form, format!("d={b}").as_bytes()),
            format!("d\n{{d={b}}}\n{{d={secret}}}")
        );
    }

    #[test]
    fn percent_escapes_in_text_and_json_decoded_after_their_run() {
        // Text: the run's decoded text follows its stop, from the last delimiter before the
        // first escape; the raw bytes stay.
        let body = "see https://x.example/cb?ref=7&email=asha%40example.in&ph=%2B91+98765+43210 ok";
        assert_eq!(
            norm(BodyKind::Text, body.as_bytes()),
            "see https://x.example/cb?ref=7&email=asha%40example.in&ph=%2B91+98765+43210 \n\
             asha@example.in\n+91 98765 43210\nok"
        );
        // JSON string value: under its key, after the value.
        let s = one_shot(
            BodyKind::Json,
            br#"{"cb":"id%3D1234%205678%209012","n":"50% off"}"#,
        );
        assert_eq!(
            render(&s),
            "cb\n{cb=id%3D1234%205678%209012}\n{cb=id=1234 5678 9012}\nn\n{n=50% off}"
        );
        // Only the pieces that decoding changes are inserted: the phone number, in the
        // stream raw already, is not inserted (and counted) again.
        assert_eq!(
            norm(BodyKind::Text, b"?msg=Hi%21+there&phone=9876543210&x=1 "),
            "?msg=Hi%21+there&phone=9876543210&x=1 \nHi! there"
        );
        // A run without a valid escape adds nothing; nor do form values (decoded already).
        assert_eq!(norm(BodyKind::Text, b"100%zz a%"), "100%zz a%");
        assert_eq!(
            norm(BodyKind::Form, b"e=asha%2540example.in"),
            "e\n{e=asha%40example.in}"
        );
        // Base64 inside the decoded text is decoded too.
        use base64::engine::general_purpose::STANDARD;
        let secret = "Hello World 1234 5678 9012";
        let b = STANDARD.encode(secret);
        let escaped = b.replace('=', "%3D");
        assert!(
            norm(BodyKind::Text, format!("state={escaped} x").as_bytes())
                .ends_with(&format!("%3D \n{b}\n{secret}\nx"))
        );
        // The run's start may lie in an earlier piece of the value (a JSON string cut
        // across chunks).
        let body = br#"{"k":"asha.verma%40example.in"}"#;
        for sizes in [&[9, 3, 20][..], &[1], &[17, 1]] {
            let (s, r) = run(BodyKind::Json, &split(body, sizes));
            assert!(r.is_ok());
            assert_eq!(
                render(&s),
                "k\n{k=asha.verma%40example.in}\n{k=asha.verma@example.in}",
                "{sizes:?}"
            );
        }
    }

    #[test]
    fn url_escaped_base64_with_a_late_first_escape_is_decoded_in_step() {
        // The first escape comes 1,067 characters into the value, past the look-back: the
        // decoded text starts inside the value, at a character in step with the base64.
        use base64::engine::general_purpose::STANDARD;
        let secret = "??? MARKER asha.verma@example.in END";
        let b = STANDARD.encode(format!("{}{secret}", "A".repeat(800)));
        let escaped = b
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert!(escaped.find('%').unwrap() > PCT_LOOKBACK, "{escaped}");
        let stream = norm(BodyKind::Text, format!("q=1&d={escaped} x").as_bytes());
        assert!(stream.contains(secret), "{stream}");
    }

    #[test]
    fn long_percent_runs_decoded_as_they_stream() {
        // A form-encoded record list sent as text: one run of URL text, far longer than
        // PCT_MAX_RUN, with a plain phone number in its first block.
        let mut body = String::from("a=1&mail=asha%40example.in&phone=9876543210");
        while body.len() < 3 * PCT_MAX_RUN {
            body.push_str("&name=Asha+Verma&mail=asha%40example.in");
        }
        body.push_str("&id=1234%205678%209012 tail");
        let stream = render(&one_shot(BodyKind::Text, body.as_bytes()));
        // Raw up to PCT_MAX_RUN bytes from where the decoded text begins (after the last
        // delimiter before the first escape), then the pieces decoding changes, then the
        // rest of the run decoded only (`+` kept), continuing the piece in progress.
        let from = body.find('%').unwrap() - "asha".len();
        let raw = &body[..from + PCT_MAX_RUN];
        assert!(stream.starts_with(&format!("{raw}\nasha@example.in\nAsha Verma\n")));
        assert!(stream.ends_with("&id=1234 5678 9012\n tail"), "{stream}");
        assert!(stream.contains("&name=Asha+Verma&mail=asha@example.in&"));
        // Every escaped address is read decoded once, and nothing is read twice.
        assert_eq!(
            stream.matches("asha@example.in").count(),
            body.matches("asha%40example.in").count()
        );
        assert_eq!(stream.matches("9876543210").count(), 1);
        // However it is cut.
        for sizes in [&[1][..], &[7, 4096, 13], &[4095, 1, 2]] {
            let (got, r) = run(BodyKind::Text, &split(body.as_bytes(), sizes));
            assert!(r.is_ok());
            assert_eq!(render(&got), stream, "{sizes:?}");
        }
    }

    #[test]
    fn text_base64_rejections() {
        use base64::engine::general_purpose::STANDARD;
        let cases = [
            // Binary content is not inserted.
            STANDARD.encode([
                0u8, 1, 2, 3, 200, 201, 202, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
            ]),
            // Too short (15 characters).
            STANDARD.encode("short text1")[..15].to_string(),
            // Long, and its first block is not text.
            STANDARD.encode(
                (0..6000u32)
                    .map(|i| (i * 7 % 256) as u8)
                    .collect::<Vec<u8>>(),
            ),
            // Mixed alphabets.
            "QUJDREVGR0hJSktMTU5P+/-_UFFSU1RV".to_string(),
        ];
        for c in cases {
            assert_eq!(norm(BodyKind::Text, c.as_bytes()), c, "{c}");
        }
        // Plain words of base64 alphabet decode to junk and are not inserted.
        assert_eq!(
            norm(BodyKind::Text, b"ThisIsAnOrdinaryCamelCaseIdentifier"),
            "ThisIsAnOrdinaryCamelCaseIdentifier"
        );
    }

    /// Printable text of `len` bytes with `needle` at each of `at`.
    fn text_with(len: usize, needle: &str, at: &[usize]) -> String {
        let mut t: Vec<u8> = (0..len).map(|i| b"lorem ipsum dolor "[i % 18]).collect();
        for &p in at {
            t[p..p + needle.len()].copy_from_slice(needle.as_bytes());
        }
        String::from_utf8(t).unwrap()
    }

    #[test]
    fn hex_like_runs_are_not_decoded() {
        // All hex digits, and base64 of printable text ("kG8" five times): not decoded, in
        // a body or in a head value. One character more of the alphabet, and it is.
        let hex = "a0c4a0c4a0c4a0c4a0c4";
        assert_eq!(B64_ENGINE.decode(hex).unwrap(), b"kG8kG8kG8kG8kG8");
        assert_eq!(
            norm(BodyKind::Text, format!("id {hex} end").as_bytes()),
            format!("id {hex} end")
        );
        let mut out = Vec::new();
        assert!(!normalise_value(
            format!("id {hex} end").as_bytes(),
            &mut out
        ));
        let not_hex = "a0c4a0c4a0c4a0c4a0cz";
        assert_eq!(
            norm(BodyKind::Text, format!("id {not_hex} end").as_bytes()),
            format!("id {not_hex}\nkG8kG8kG8kG8kG3\n end")
        );
        assert!(normalise_value(
            format!("id {not_hex} end").as_bytes(),
            &mut out
        ));
    }

    #[test]
    fn hex_encoded_text_is_read_decoded() {
        // An app that hex-encodes a payload: its text is scanned too, in a body and in a
        // head value, upper or lower case. The raw digits stay in the stream.
        let text = r#"{"email":"asha@example.in"}"#;
        let lower = hex::encode(text);
        let upper = lower.to_ascii_uppercase();
        for h in [&lower, &upper] {
            assert_eq!(
                norm(BodyKind::Text, format!("p {h} q").as_bytes()),
                format!("p {h}\n{text}\n q")
            );
            let mut out = Vec::new();
            assert!(normalise_value(format!("p {h} q").as_bytes(), &mut out));
            assert_eq!(String::from_utf8_lossy(&out), format!("p {h}\n{text}\n q"));
        }
        let s = norm(
            BodyKind::Json,
            format!(r#"{{"payload":"{lower}"}}"#).as_bytes(),
        );
        assert!(s.contains(text), "{s}");
        // Hex that is not text stays as it is: a SHA-256, a UUID (dashes), a trace id, an
        // odd digit out.
        let not_text = [
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "3f6c1d2e-8b4a-4c2f-9e1d-7a5b6c4d3e2f",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            &lower[1..],
        ];
        for h in not_text {
            let v = format!("p {h} q");
            assert_eq!(norm(BodyKind::Text, v.as_bytes()), v);
            assert!(!normalise_value(v.as_bytes(), &mut Vec::new()), "{h}");
        }
    }

    /// `data` as base64 wrapped at `width` characters a line, each line ended by `eol`.
    fn wrapped(data: &[u8], width: usize, eol: &str) -> String {
        let b = B64_ENGINE.encode(data);
        let lines: Vec<&str> = b
            .as_bytes()
            .chunks(width)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        lines.join(eol) + eol
    }

    #[test]
    fn wrapped_base64_lines_are_joined() {
        // Python's `base64.encodebytes`, a MIME part, PEM: an identifier straddling a line
        // break is decoded whole, as the receiver's decoder reads it.
        let text =
            "Customer KYC record for the branch, Aadhaar no. 2345 6789 0124 verified in Pune.";
        for (width, eol) in [(76, "\n"), (76, "\r\n"), (64, "\n")] {
            let w = wrapped(text.as_bytes(), width, eol);
            let got = norm(BodyKind::Text, w.as_bytes());
            assert!(got.contains(text), "{width} {eol:?}: {got:?}");
            let json = format!(
                r#"{{"file":"{}"}}"#,
                w.replace('\r', "\\r").replace('\n', "\\n")
            );
            let got = norm(BodyKind::Json, json.as_bytes());
            assert!(got.contains(text), "json {width} {eol:?}: {got:?}");
        }
        // A base64 part of a MIME message.
        let body = format!(
            "--bnd\r\nContent-Disposition: form-data; name=\"doc\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}--bnd--\r\n",
            wrapped(text.as_bytes(), 76, "\r\n")
        );
        let got = norm(
            BodyKind::Multipart {
                boundary: b"bnd".to_vec(),
            },
            body.as_bytes(),
        );
        assert!(got.contains(text), "{got:?}");
        // Lines are joined only at a wrapping width, and before more base64: text
        // that happens to hold a long word is left as it was.
        for t in [
            format!("{}\nnext line", "a".repeat(75)),
            format!("{}\n next line", "a".repeat(76)),
            format!("{}\n\nnext", "a".repeat(76)),
            format!("{}=\nnext", "a".repeat(75)),
        ] {
            assert_eq!(norm(BodyKind::Text, t.as_bytes()), t, "{t:?}");
        }
    }

    #[test]
    fn long_hex_runs_decoded_block_by_block() {
        // 12,000 bytes of text as 24,000 hex digits: past the first block, the run's decoded
        // text replaces its digits, block by block, and an identifier across a block's edge
        // is whole in the stream.
        let needle = "aadhaar 2345 6789 0124";
        let secret = text_with(12_000, needle, &[0, 2_040, 6_135, 12_000 - needle.len()]);
        let h = hex::encode(&secret);
        let first = &h[..BASE64_MAX_RUN];
        assert_eq!(
            norm(BodyKind::Text, format!("x {h} y").as_bytes()),
            format!("x {first}\n{secret}\n y")
        );
        // A stray non-hex character ends the decoding there: the rest of the run is raw.
        let mut broken = h.clone();
        broken.replace_range(10_000..10_001, "z");
        let got = norm(BodyKind::Text, format!("x {broken} y").as_bytes());
        assert!(got.contains(&secret[..BASE64_MAX_RUN / 2]), "{got:.200}");
        assert!(got.contains(&broken[BASE64_MAX_RUN * 2..]), "{got:.200}");
    }

    #[test]
    fn long_base64_runs_decoded_block_by_block() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        // 20,000 bytes (27 KiB of base64, padded): the needle at the start, across the
        // boundaries of the first and second 3,072-byte decoded blocks, and at the end.
        let needle = "aadhaar 2345 6789 0124";
        let secret = text_with(20_000, needle, &[0, 3_060, 6_135, 20_000 - needle.len()]);
        let b = STANDARD.encode(&secret);
        assert!(b.ends_with('=') && b.len() > 6 * BASE64_MAX_RUN);
        let first = &b[..BASE64_MAX_RUN];
        // The first block's characters stay in the stream (the run might not have been
        // base64); the rest are replaced by their decoded text, one value with the first
        // block's.
        assert_eq!(
            norm(BodyKind::Text, format!("x {b} y").as_bytes()),
            format!("x {first}\n{secret}\n y")
        );
        let s = one_shot(
            BodyKind::Json,
            format!(r#"{{"doc":"{b}","n":1}}"#).as_bytes(),
        );
        assert_eq!(
            render(&s),
            format!("doc\n{{doc={first}}}\n{{doc={secret}}}\nn\n{{n=1}}")
        );
        let u = URL_SAFE_NO_PAD.encode(&secret);
        assert_eq!(
            norm(BodyKind::Form, format!("d={u}").as_bytes()),
            format!("d\n{{d={}}}\n{{d={secret}}}", &u[..BASE64_MAX_RUN])
        );
        // Text in another script: the blocks cut its UTF-8 characters (three bytes each),
        // which does not stop the decoding.
        let hindi = format!(
            "{}{needle}{}",
            "नाम: आशा वर्मा, पता: मुंबई; ".repeat(150),
            "पता; ".repeat(700)
        );
        let h = STANDARD.encode(&hindi);
        assert!(h.len() > 3 * BASE64_MAX_RUN);
        assert_eq!(
            norm(BodyKind::Text, format!("{h} ").as_bytes()),
            format!("{}\n{hindi}\n ", &h[..BASE64_MAX_RUN])
        );
        // Exactly one block: the same as a run decoded whole when it ends.
        let one = text_with(3_072, needle, &[100]);
        let b1 = STANDARD.encode(&one);
        assert_eq!(b1.len(), BASE64_MAX_RUN);
        assert_eq!(
            norm(BodyKind::Text, format!("{b1} ").as_bytes()),
            format!("{b1}\n{one}\n ")
        );
    }

    #[test]
    fn long_base64_run_turning_binary_goes_on_raw() {
        use base64::engine::general_purpose::STANDARD;
        // Text for the first block and a half, then binary: the first block is decoded, the
        // block where the binary starts and everything after it stay raw characters.
        let mut data = text_with(4_600, "x", &[]).into_bytes();
        data.extend((0..6_000u32).map(|i| (i * 13 % 251) as u8));
        let b = STANDARD.encode(&data);
        let (first, rest) = b.split_at(BASE64_MAX_RUN);
        assert_eq!(
            norm(BodyKind::Text, format!("{b};").as_bytes()),
            format!("{first}\n{}\n{rest};", &text_with(3_072, "x", &[]))
        );
        // A final partial block that is not base64 (one character too many) is raw too.
        let mut odd = STANDARD.encode(text_with(3_072 * 2, "x", &[]));
        odd.push('Q');
        let (first, rest) = odd.split_at(BASE64_MAX_RUN);
        let (second, last) = rest.split_at(BASE64_MAX_RUN);
        let decoded = |s: &str| String::from_utf8(STANDARD.decode(s).unwrap()).unwrap();
        assert_eq!(
            norm(BodyKind::Text, odd.as_bytes()),
            format!("{first}\n{}{}\n{last}", decoded(first), decoded(second))
        );
    }

    #[test]
    fn base64_inserts_are_not_capped_per_body() {
        // Two thousand decoys do not carry the last run past the decoder.
        use base64::engine::general_purpose::STANDARD;
        let run_text = STANDARD.encode("printable payload 1234");
        let mut body = format!("{run_text} ").repeat(2000);
        body.push_str(&STANDARD.encode("aadhaar 2345 6789 0124"));
        let s = one_shot(BodyKind::Text, body.as_bytes());
        let text = render(&s);
        assert_eq!(text.matches("printable payload 1234").count(), 2000);
        assert!(
            text.ends_with("\naadhaar 2345 6789 0124"),
            "{}",
            &text[text.len() - 80..]
        );
    }

    // ----- content decoding ----------------------------------------------------------

    fn identity_stream(kind: BodyKind, body: &[u8]) -> Stream {
        one_shot(kind, body)
    }

    #[test]
    fn content_codings_round_trip_with_chunking() {
        use Coding::*;
        let body = sample_json(3000);
        let want = identity_stream(BodyKind::Json, &body);
        let stacks: &[&[Coding]] = &[
            &[Gzip],
            &[Deflate],
            &[Br],
            &[Zstd],
            &[Gzip, Br],
            &[Zstd, Gzip],
            &[Br, Deflate, Zstd],
        ];
        for stack in stacks {
            let enc = encode_all(stack, &body);
            for sizes in [&[65536][..], &[1000], &[7, 1, 300, 4096]] {
                let (s, r) = run_with(
                    stack,
                    BodyKind::Json,
                    Limits::default(),
                    &split(&enc, sizes),
                );
                assert_eq!(r, Ok(()), "{stack:?} {sizes:?}");
                assert!(s == want, "{stack:?} {sizes:?}");
            }
        }
        // Byte-at-a-time on a smaller body.
        let small = sample_json(100);
        let want = identity_stream(BodyKind::Json, &small);
        for stack in stacks {
            let enc = encode_all(stack, &small);
            let (s, r) = run_with(stack, BodyKind::Json, Limits::default(), &split(&enc, &[1]));
            assert_eq!(r, Ok(()), "{stack:?}");
            assert!(s == want, "{stack:?}");
        }
    }

    #[test]
    fn raw_deflate_and_multi_member_gzip() {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(b"aadhaar 1234 5678 9012").unwrap();
        let raw = e.finish().unwrap();
        let (s, r) = run_with(
            &[Coding::Deflate],
            BodyKind::Text,
            Limits::default(),
            &split(&raw, &[1]),
        );
        assert_eq!(r, Ok(()));
        assert_eq!(render(&s), "aadhaar 1234 5678 9012");

        let two = [gzip(b"first 1234 "), gzip(b"second 5678")].concat();
        let (s, r) = run_with(
            &[Coding::Gzip],
            BodyKind::Text,
            Limits::default(),
            &split(&two, &[3]),
        );
        assert_eq!(r, Ok(()));
        assert_eq!(render(&s), "first 1234 second 5678");
    }

    #[test]
    fn gzip_header_fields_are_skipped() {
        let mut e = flate2::GzBuilder::new()
            .filename("x.json")
            .comment("a comment")
            .extra(vec![1, 2, 3, 4])
            .write(Vec::new(), Compression::fast());
        e.write_all(b"{\"k\":\"v 1234\"}").unwrap();
        let enc = e.finish().unwrap();
        for sizes in [&[1usize][..], &[4096]] {
            let (s, r) = run_with(
                &[Coding::Gzip],
                BodyKind::Json,
                Limits::default(),
                &split(&enc, sizes),
            );
            assert_eq!(r, Ok(()));
            assert_eq!(render(&s), "k\n{k=v 1234}");
        }
    }

    #[test]
    fn zstd_skippable_frames_and_multiple_frames() {
        let mut body = vec![0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9];
        body.extend(encode(Coding::Zstd, b"one 1234 "));
        body.extend(encode(Coding::Zstd, b"two 5678"));
        let (s, r) = run_with(
            &[Coding::Zstd],
            BodyKind::Text,
            Limits::default(),
            &split(&body, &[1]),
        );
        assert_eq!(r, Ok(()));
        assert_eq!(render(&s), "one 1234 two 5678");
    }

    #[test]
    fn zstd_oversized_window_refused() {
        // Frame header: magic, FHD 0 (window descriptor present), window 2^30.
        let body = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 20 << 3, 0x01, 0x00, 0x00];
        let (_, r) = run_with(&[Coding::Zstd], BodyKind::Text, Limits::default(), &[&body]);
        assert!(
            matches!(r, Err(DecodeError::Unsupported(ref m)) if m.contains("window")),
            "{r:?}"
        );
    }

    #[test]
    fn truncated_or_corrupt_streams_are_errors() {
        use Coding::*;
        let body = sample_json(200);
        for coding in [Gzip, Deflate, Br, Zstd] {
            let enc = encode(coding, &body);
            for cut in [1, 2, 5, 11, enc.len() / 2, enc.len() - 4, enc.len() - 1] {
                let (_, r) = run_with(&[coding], BodyKind::Json, Limits::default(), &[&enc[..cut]]);
                assert!(
                    matches!(r, Err(DecodeError::Corrupt(_))),
                    "{coding:?} cut {cut}: {r:?}"
                );
            }
            // Trailing garbage after the end of the stream.
            let mut extra = enc.clone();
            extra.extend_from_slice(b"junk");
            let (_, r) = run_with(&[coding], BodyKind::Json, Limits::default(), &[&extra]);
            assert!(
                matches!(r, Err(DecodeError::Corrupt(_))),
                "{coding:?} trailing: {r:?}"
            );
            // Garbage from the start.
            let (_, r) = run_with(
                &[coding],
                BodyKind::Json,
                Limits::default(),
                &[b"this is not compressed at all"],
            );
            assert!(
                matches!(r, Err(DecodeError::Corrupt(_))),
                "{coding:?} garbage: {r:?}"
            );
        }
        let mut bad_crc = gzip(b"hello");
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        let (_, r) = run_with(&[Gzip], BodyKind::Text, Limits::default(), &[&bad_crc]);
        assert_eq!(r, Err(DecodeError::Corrupt("gzip: crc mismatch".into())));
        // An empty body is fine whatever the coding.
        for coding in [Gzip, Deflate, Br, Zstd] {
            assert_eq!(
                run_with(&[coding], BodyKind::Text, Limits::default(), &[]).1,
                Ok(())
            );
        }
    }

    #[test]
    fn truncated_gzip_fails_on_finish_after_output() {
        let enc = gzip(b"partial output 1234 5678 9012 that was emitted");
        let mut p = Pipeline::new(vec![Coding::Gzip], BodyKind::Text, Limits::default()).unwrap();
        let mut c = Collect::default();
        assert_eq!(p.feed(&enc[..enc.len() - 3], &mut |s| c.push(s)), Ok(()));
        let err = p.finish(&mut |s| c.push(s)).unwrap_err();
        assert_eq!(err, DecodeError::Corrupt("truncated gzip stream".into()));
        assert_eq!(
            err.to_string(),
            "corrupt encoded body: truncated gzip stream"
        );
        assert_eq!(
            render(&c.runs),
            "partial output 1234 5678 9012 that was emitted"
        );
        // The pipeline stays failed.
        assert_eq!(p.feed(b"x", &mut |s| c.push(s)), Err(err));
    }

    /// Streams 1 GiB of zeros through a gzip encoder, feeding its output as it appears; the
    /// pipeline must stop long before the encoder is done.
    fn streamed_gzip_bomb(limits: Limits) -> (Result<(), DecodeError>, u64, u64) {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        let zeros = vec![0u8; 64 * 1024];
        let mut p = Pipeline::new(vec![Coding::Gzip], BodyKind::Text, limits).unwrap();
        let mut sunk = 0u64;
        for _ in 0..(1 << 30) / zeros.len() {
            enc.write_all(&zeros).unwrap();
            let chunk = std::mem::take(enc.get_mut());
            if let Err(e) = p.feed(&chunk, &mut |s| sunk += s.text.len() as u64) {
                return (Err(e), p.decoded_bytes(), sunk);
            }
        }
        (Ok(()), p.decoded_bytes(), sunk)
    }

    #[test]
    fn gzip_bomb_hits_ratio_limit() {
        let limits = Limits::default();
        let (r, decoded, sunk) = streamed_gzip_bomb(limits);
        assert!(
            matches!(r, Err(DecodeError::RatioExceeded { limit: 100, .. })),
            "{r:?}"
        );
        assert!(
            decoded <= limits.ratio_grace_bytes + OUT_CHUNK as u64,
            "{decoded}"
        );
        assert!(sunk <= decoded);
    }

    #[test]
    fn gzip_bomb_hits_size_limit() {
        let limits = Limits {
            max_ratio: u32::MAX,
            max_decoded_bytes: 4 << 20,
            ..Limits::default()
        };
        let (r, decoded, sunk) = streamed_gzip_bomb(limits);
        assert_eq!(r, Err(DecodeError::TooLarge { limit: 4 << 20 }));
        assert!(decoded <= 4 << 20);
        assert!(sunk <= decoded);
    }

    #[test]
    fn whole_body_bombs_fed_at_once() {
        // 1024 gzip members of 1 MiB of zeros each: a valid 1 GiB gzip body of ~1 MiB.
        let member = gzip(&vec![0u8; 1 << 20]);
        let body = member.repeat(1024);
        let (_, r) = run_with(&[Coding::Gzip], BodyKind::Text, Limits::default(), &[&body]);
        assert_eq!(r, Err(DecodeError::TooLarge { limit: 16 << 20 }));
        // Stacked: gzip of that body.
        let stacked = gzip(&body);
        let (_, r) = run_with(
            &[Coding::Gzip, Coding::Gzip],
            BodyKind::Text,
            Limits::default(),
            &[&stacked],
        );
        assert!(
            matches!(
                r,
                Err(DecodeError::RatioExceeded { .. } | DecodeError::TooLarge { .. })
            ),
            "{r:?}"
        );
        // Hand-made zstd frame: 8192 RLE blocks of 128 KiB (1 GiB) in 32 KiB of input.
        let mut z = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, 13 << 3];
        for i in 0..8192u32 {
            let last = u32::from(i == 8191);
            let h = last | (1 << 1) | ((128 * 1024) << 3);
            z.extend_from_slice(&h.to_le_bytes()[..3]);
            z.push(b'A');
        }
        let limits = Limits {
            max_ratio: u32::MAX,
            ..Limits::default()
        };
        let (_, r) = run_with(&[Coding::Zstd], BodyKind::Text, limits, &[&z]);
        assert_eq!(r, Err(DecodeError::TooLarge { limit: 16 << 20 }));
        let (_, r) = run_with(
            &[Coding::Zstd],
            BodyKind::Text,
            Limits::default(),
            &split(&z, &[4096]),
        );
        assert!(matches!(r, Err(DecodeError::RatioExceeded { .. })), "{r:?}");
        // Brotli of 64 MiB of zeros.
        let br = encode(Coding::Br, &vec![0u8; 64 << 20]);
        let (_, r) = run_with(&[Coding::Br], BodyKind::Text, Limits::default(), &[&br]);
        assert!(
            matches!(
                r,
                Err(DecodeError::TooLarge { .. } | DecodeError::RatioExceeded { .. })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn small_compressible_bodies_pass_the_ratio_check() {
        let body = vec![b'a'; 512 * 1024];
        let enc = gzip(&body);
        assert!(body.len() as u64 > 100 * enc.len() as u64);
        let (s, r) = run_with(&[Coding::Gzip], BodyKind::Text, Limits::default(), &[&enc]);
        assert_eq!(r, Ok(()));
        assert_eq!(s, vec![(None, body)]);
    }

    #[test]
    fn identity_body_size_limit_and_counters() {
        let limits = Limits {
            max_decoded_bytes: 1000,
            ..Limits::default()
        };
        let mut p = Pipeline::new(vec![Coding::Identity], BodyKind::Text, limits).unwrap();
        let mut n = 0;
        assert_eq!(p.feed(&[b'x'; 600], &mut |s| n += s.text.len()), Ok(()));
        assert_eq!(
            (p.decoded_bytes(), p.raw_bytes(), p.emitted_bytes()),
            (600, 600, 600)
        );
        assert_eq!(
            p.feed(&[b'x'; 600], &mut |s| n += s.text.len()),
            Err(DecodeError::TooLarge { limit: 1000 })
        );
        assert_eq!(n, 600);
        let mut q = Pipeline::new(vec![], BodyKind::Text, Limits::default()).unwrap();
        assert_eq!(q.finish(&mut |_| {}), Ok(()));
        assert_eq!(q.finish(&mut |_| {}), Err(DecodeError::Finished));
        assert_eq!(q.feed(b"x", &mut |_| {}), Err(DecodeError::Finished));
    }

    #[test]
    fn pipeline_is_send() {
        fn is_send<T: Send>() {}
        is_send::<Pipeline>();
        is_send::<DecodeError>();
    }

    // ----- chunking invariance -------------------------------------------------------

    fn json_string() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                "[a-zA-Z0-9 +/=.:-]{1,8}",
                Just("\\n".to_string()),
                Just("\\\"".to_string()),
                Just("\\\\".to_string()),
                Just("\\/".to_string()),
                (0u32..=0xffff).prop_map(|u| format!("\\u{u:04x}")),
                Just("\\ud83d\\ude00".to_string()),
                Just("é\u{0915}".to_string()),
                "[A-Za-z0-9+/]{16,40}={0,2}",
                Just("SGVsbG8gV29ybGQgMTIzNCA1Njc4IDkwMTI=".to_string()),
                "[a-z&=?]{0,4}%[0-9a-fA-Fg]{0,2}[a-z+]{0,4}",
                // Character references, whole, cut short, and escaped themselves.
                prop::sample::select(vec![
                    "&#64;",
                    "&#x40;",
                    "&commat;",
                    "&amp;",
                    "&#64",
                    "&#",
                    "&comm",
                    "\\u0026#64;"
                ])
                .prop_map(String::from),
            ],
            0..6,
        )
        .prop_map(|parts| format!("\"{}\"", parts.concat()))
    }

    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("true".to_string()),
            Just("false".to_string()),
            Just("null".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            json_string(),
        ];
        leaf.prop_recursive(6, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((json_string(), inner), 0..6).prop_map(|v| {
                    let members: Vec<String> = v.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    format!("{{{}}}", members.join(" ,"))
                }),
            ]
        })
    }

    /// Valid JSON, JSON with a random byte sequence spliced in, or random bytes.
    fn json_body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => json_value().prop_map(String::into_bytes),
            2 => (json_value(), any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..4)).prop_map(|(v, at, junk)| {
                let mut b = v.into_bytes();
                let i = at.index(b.len() + 1);
                b.splice(i..i, junk);
                b
            }),
            1 => prop::collection::vec(any::<u8>(), 0..200),
        ]
    }

    fn form_body() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                "[a-z0-9]{1,6}",
                Just("=".to_string()),
                Just("&".to_string()),
                Just("+".to_string()),
                Just("%".to_string()),
                "%[0-9a-fA-Fg]{0,2}",
                "[A-Za-z0-9%]{16,30}",
                // Character references, percent-encoded as a browser posts them, some cut.
                prop::sample::select(vec![
                    "%26%2364%3B",
                    "%26%23x40%3B",
                    "%26commat%3B",
                    "%26nbsp%3B",
                    "%26%2364",
                    "%26%23",
                    "%26",
                ])
                .prop_map(String::from),
            ],
            0..40,
        )
        .prop_map(|v| v.concat().into_bytes())
    }

    fn text_body() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..20),
                "[A-Za-z0-9+/_-]{10,60}={0,2}".prop_map(String::into_bytes),
                Just(b"U0dWc2JHOGdWMjl5YkdRZ01USXpOQ0ExTmpjNElEa3dNVEk9 ".to_vec()),
                Just(b"SGVsbG8gV29ybGQgMTIzNCA1Njc4IDkwMTI=".to_vec()),
                "[a-z&=?]{0,4}%[0-9a-fA-Fg]{0,2}[a-z+]{0,4}".prop_map(String::into_bytes),
                Just(b"cb?e=asha%40example.in&p=%2B91+98765+43210".to_vec()),
                // Hex of text, and hex that is not text (a hash, a trace id).
                Just(b"617368614065786d706c652e696e20393837363534333231302e ".to_vec()),
                "[0-9a-fA-F]{14,70}".prop_map(String::into_bytes),
            ],
            0..12,
        )
        .prop_map(|v| v.concat())
    }

    /// Up to 30 pieces, each text matching `text` or one of `spellings`, concatenated.
    fn spelled(
        text: &'static str,
        spellings: Vec<&'static str>,
        more: impl Strategy<Value = Vec<u8>> + Clone + 'static,
    ) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                text.prop_map(String::into_bytes),
                prop::sample::select(spellings).prop_map(|s| s.as_bytes().to_vec()),
                more,
            ],
            0..30,
        )
        .prop_map(|v| v.concat())
    }

    /// Quoted-printable text: escapes, soft breaks (with padding), and broken escapes.
    fn qp_body() -> impl Strategy<Value = Vec<u8>> {
        let spellings = vec![
            "=\r\n",
            "=\n",
            "= \t\r\n",
            "=3D",
            "=40",
            "=e0=a5=a8",
            "=A",
            "=",
            "=4",
            "=\r",
            "=\rx",
            "=  x",
            "\r\n",
            "=\r\n--in\r\n",
        ];
        spelled("[a-z0-9 .@]{0,20}", spellings, Just(Vec::new()))
    }

    fn multipart_body() -> impl Strategy<Value = Vec<u8>> {
        let part = (
            prop::option::of("[a-z]{1,5}"),
            0..4usize,
            any::<bool>(),
            prop_oneof![
                json_value().prop_map(String::into_bytes),
                form_body(),
                text_body(),
                qp_body(),
                Just(b"\r\n--bnd\r\n-".to_vec()),
                // A nested body, for the `multipart/alternative` type.
                (qp_body(), text_body()).prop_map(|(a, b)| [
                    &b"--in\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"[..],
                    &a,
                    b"\r\n--in\r\n\r\n",
                    &b,
                    b"\r\n--in--\r\n",
                ]
                .concat()),
            ],
        );
        (
            text_body(),
            prop::collection::vec(part, 0..4),
            any::<bool>(),
            text_body(),
        )
            .prop_map(|(pre, parts, close, epi)| {
                let mut b = pre;
                for (name, ct, qp, body) in parts {
                    b.extend_from_slice(b"\r\n--bnd\r\n");
                    if let Some(n) = name {
                        b.extend_from_slice(
                            format!("Content-Disposition: form-data; name=\"{n}\"\r\n").as_bytes(),
                        );
                    }
                    let ct = [
                        "text/plain",
                        "application/json",
                        "application/x-www-form-urlencoded",
                        "multipart/alternative;\r\n\tboundary=\"in\"",
                    ][ct];
                    b.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
                    if qp {
                        b.extend_from_slice(b"Content-Transfer-Encoding: Quoted-Printable\r\n");
                    }
                    b.extend_from_slice(b"\r\n");
                    b.extend_from_slice(&body);
                }
                if close {
                    b.extend_from_slice(b"\r\n--bnd--\r\n");
                    b.extend_from_slice(&epi);
                }
                b
            })
    }

    fn markup_body() -> impl Strategy<Value = Vec<u8>> {
        let spellings = vec![
            "&#64;",
            "&#x40;",
            "&#X2E;",
            "&commat;",
            "&amp;",
            "&#64",
            "&#",
            "&#x",
            "&",
            "&comm",
            "&#1114112;",
            "&#00000000000064;",
            "&nbsp;",
        ];
        let more = prop_oneof![
            "[0-9]{1,6}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..8),
        ];
        spelled("[<>/a-z =\"]{0,20}", spellings, more)
    }

    fn any_body() -> impl Strategy<Value = (BodyKind, Vec<u8>)> {
        prop_oneof![
            markup_body().prop_map(|b| (BodyKind::Markup, b)),
            json_body().prop_map(|b| (BodyKind::Json, b)),
            form_body().prop_map(|b| (BodyKind::Form, b)),
            text_body().prop_map(|b| (BodyKind::Text, b)),
            (
                " {0,3}",
                prop_oneof![json_body(), markup_body(), text_body()]
            )
                .prop_map(|(blank, b)| (BodyKind::Untyped, [blank.as_bytes(), &b].concat())),
            // A base64 email in text (a mail API's `raw`), long enough to stream or not.
            (qp_body(), 0usize..3000, text_body(), any::<bool>()).prop_map(
                |(qp, fill, after, mime)| {
                    let mut msg = if mime {
                        b"MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                            .to_vec()
                    } else {
                        b"Subject: not mime\r\n\r\n".to_vec()
                    };
                    msg.extend_from_slice("x".repeat(fill).as_bytes());
                    msg.extend_from_slice(&qp);
                    let mut body = b"raw ".to_vec();
                    body.extend_from_slice(B64_ENGINE.encode(&msg).as_bytes());
                    body.push(b' ');
                    body.extend_from_slice(&after);
                    (BodyKind::Text, body)
                }
            ),
            (any::<bool>(), qp_body(), multipart_body()).prop_map(|(qp, text, mp)| {
                let body = if qp {
                    [
                        &b"Subject: s\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"[..],
                        &text,
                    ]
                    .concat()
                } else {
                    [
                        &b"Content-Type: multipart/mixed; boundary=bnd\r\n\r\n"[..],
                        &mp,
                    ]
                    .concat()
                };
                (BodyKind::Message, body)
            }),
            multipart_body().prop_map(|b| (
                BodyKind::Multipart {
                    boundary: b"bnd".to_vec()
                },
                b
            )),
        ]
    }

    /// Pieces of URL text with escapes, a stop (white space) among every `1 + 370 /
    /// stop_weight` of them on average: runs mostly long enough to stream, or mostly short.
    fn url_text(stop_weight: u32) -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(
            prop_oneof![
                200 => "[a-z0-9.]{1,24}",
                100 => "%[0-9A-Fa-fg]{0,2}",
                60 => prop::sample::select(vec!["&", "=", "+", "?", ":"]).prop_map(String::from),
                10 => Just("U0dWc2JHOGdWMjl5YkdRZ01USXpOQ0ExTmpjNElEa3dNVEk%3D".to_string()),
                stop_weight => prop::sample::select(vec![" ", "\n"]).prop_map(String::from),
            ],
            0..3000,
        )
    }

    fn sizes() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(1usize..40, 1..12)
    }

    proptest! {
        // Bodies of up to ~25 KB: fewer cases.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn percent_runs_do_not_depend_on_chunking(
            pieces in prop_oneof![url_text(1), url_text(40)],
            sizes in prop_oneof![
                proptest::collection::vec(1usize..6000, 1..6),
                proptest::collection::vec(1usize..40, 1..6),
            ],
            json in any::<bool>(),
        ) {
            // Runs of URL text long and short, escapes cut anywhere, as a text body or
            // one JSON string; some runs pass PCT_MAX_RUN and stream.
            let text = pieces.concat();
            let (kind, body) = if json {
                (BodyKind::Json, format!("{{\"k\":\"{}\"}}", text.replace('\n', "\\n")))
            } else {
                (BodyKind::Text, text)
            };
            let (want, want_r) = run(kind.clone(), &[body.as_bytes()]);
            let (got, got_r) = run(kind, &split(body.as_bytes(), &sizes));
            prop_assert!(want_r.is_ok() && got_r.is_ok());
            prop_assert_eq!(got, want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn chunking_does_not_change_the_stream((kind, body) in any_body(), sizes in sizes()) {
            let (want, want_r) = run(kind.clone(), &[&body]);
            let (got, got_r) = run(kind.clone(), &split(&body, &sizes));
            prop_assert_eq!(&got_r, &want_r);
            prop_assert_eq!(&got, &want);
            let (bytes, bytes_r) = run(kind, &split(&body, &[1]));
            prop_assert_eq!(bytes_r, want_r);
            prop_assert_eq!(bytes, want);
        }

        #[test]
        fn quote_search_matches_memchr2(
            bytes in proptest::collection::vec(
                prop::sample::select(vec![b'a', b'"', b'\\', 0u8, 0x22 ^ 0x80, 0xff, b'!', b'#', b'[', b']', b'%', b'%' ^ 0x80, b'&', b'&' ^ 0x80]),
                0..200,
            ),
        ) {
            let (stop, pct) = find_quote_or_backslash(&bytes);
            prop_assert_eq!(stop, memchr::memchr2(b'"', b'\\', &bytes));
            let before = bytes.get(..stop.unwrap_or(bytes.len())).unwrap();
            prop_assert!(pct || !before.iter().any(|&b| b == b'%' || b == b'&'));
        }

        #[test]
        fn skipping_text_scan_matches_bytewise(
            body in proptest::collection::vec(
                prop::sample::select(b"aZ09+/-_=Q ,.\n\xc3".to_vec()),
                0..600,
            ),
            runs in proptest::collection::vec("[A-Za-z0-9+/]{14,40}={0,3}", 0..4),
            sizes in sizes(),
        ) {
            // Real base64 runs (some decodable text) spliced into noise.
            let mut body = body;
            for (i, r) in runs.iter().enumerate() {
                let at = (i * 97) % (body.len() + 1);
                body.splice(at..at, r.bytes());
            }
            let b64 = B64_ENGINE.encode(b"aadhaar 234567890124 here");
            body.extend_from_slice(b" ");
            body.extend_from_slice(b64.as_bytes());
            prop_assert_eq!(emitted(&body, &sizes, false), emitted(&body, &sizes, true));
        }

        #[test]
        fn head_values_normalise_as_body_text(
            noise in proptest::collection::vec(
                prop::sample::select(b"aZ09+/-_=Q ,.;\xc3".to_vec()),
                0..300,
            ),
            runs in proptest::collection::vec("[ -~]{10,60}", 0..4),
            encoding in 0usize..3,
        ) {
            // Noise with base64 of text spliced in: the head's normalisation gives the
            // stream the body pipeline gives for the same text, or says there is nothing
            // to decode when that stream is the text itself.
            let mut v = noise;
            for (i, r) in runs.iter().enumerate() {
                let enc = match encoding {
                    0 => B64_ENGINE.encode(r),
                    1 => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r),
                    _ => hex::encode(r),
                };
                let at = (i * 61) % (v.len() + 1);
                v.splice(at..at, enc.bytes());
            }
            let mut em = Emitter::default();
            let mut body = Vec::new();
            {
                let mut sink = |seg: Segment<'_>, _| body.extend_from_slice(seg.text);
                em.text(&v, None, &mut sink);
                em.end_value(None, &mut sink);
                em.flush(false, &mut sink);
            }
            let mut out = Vec::new();
            if normalise_value(&v, &mut out) {
                prop_assert_eq!(&out, &body);
                prop_assert_ne!(&body, &v);
            } else {
                prop_assert_eq!(&body, &v);
            }
        }

        #[test]
        fn long_base64_runs_are_chunk_proof(
            text_len in 3_000usize..10_000,
            binary_at in proptest::option::of(0usize..10_000),
            encoding in 0usize..3,
            extra in "[A-Za-z0-9+/=_-]{0,3}",
            sizes in prop::collection::vec(1usize..3_000, 1..6),
        ) {
            // A long run of base64 or hex text (in places turning binary, or with a stray tail),
            // in raw text and in a JSON string: the skipping scan gives what the bytewise one
            // does, and the stream does not depend on where the body is cut.
            let mut data: Vec<u8> = (0..text_len).map(|i| b"aadhaar 2345 6789 0124, "[i % 24]).collect();
            if let Some(at) = binary_at {
                let at = at.min(data.len());
                data.splice(at..at, (0..500u32).map(|i| (i * 13 % 251) as u8));
            }
            let mut b64 = match encoding {
                0 => B64_ENGINE.encode(&data),
                1 => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&data),
                _ => hex::encode(&data),
            };
            b64.push_str(&extra);
            let body = format!("pre {b64} post");
            let raw = body.as_bytes();
            prop_assert_eq!(emitted(raw, &sizes, false), emitted(raw, &sizes, true));
            let json = format!(r#"{{"doc":"{b64}","n":1}}"#);
            for (kind, body) in [(BodyKind::Text, body.as_bytes()), (BodyKind::Json, json.as_bytes())] {
                let (want, want_r) = run(kind.clone(), &[body]);
                let (got, got_r) = run(kind.clone(), &split(body, &sizes));
                prop_assert_eq!(&got_r, &want_r);
                prop_assert_eq!(&got, &want);
                let (bytes, bytes_r) = run(kind, &split(body, &[1]));
                prop_assert_eq!(bytes_r, want_r);
                prop_assert_eq!(bytes, want);
            }
        }

        #[test]
        fn wrapped_base64_is_chunk_proof(
            text_len in 40usize..6_000,
            width in prop::sample::select(vec![64usize, 76, 75]),
            crlf in any::<bool>(),
            tail in "[A-Za-z0-9 \n]{0,3}",
            sizes in prop::collection::vec(1usize..200, 1..6),
        ) {
            // Wrapped base64 (and, at width 75, lines that are not joined), ended by more
            // text, in a text body and in a JSON string, cut anywhere, a byte at a time too:
            // the same stream, and the skipping scan agrees with the bytewise one.
            let data: Vec<u8> = (0..text_len).map(|i| b"aadhaar 2345 6789 0124, "[i % 24]).collect();
            let w = wrapped(&data, width, if crlf { "\r\n" } else { "\n" }) + &tail;
            prop_assert_eq!(emitted(w.as_bytes(), &sizes, false), emitted(w.as_bytes(), &sizes, true));
            let json = format!(r#"{{"doc":"{}","n":1}}"#, w.replace('\r', "\\r").replace('\n', "\\n"));
            for (kind, body) in [(BodyKind::Text, w.as_bytes()), (BodyKind::Json, json.as_bytes())] {
                let (want, want_r) = run(kind.clone(), &[body]);
                let (got, got_r) = run(kind.clone(), &split(body, &sizes));
                prop_assert_eq!(&got_r, &want_r);
                prop_assert_eq!(&got, &want);
                let (bytes, bytes_r) = run(kind, &split(body, &[1]));
                prop_assert_eq!(bytes_r, want_r);
                prop_assert_eq!(bytes, want);
            }
        }

        #[test]
        fn run_end_marks_are_true((kind, body) in any_body(), sizes in sizes()) {
            // A segment marked as ending its run is followed by one with another key, if any.
            let mut p = Pipeline::new(Vec::new(), kind, Limits::default()).unwrap();
            let mut segs: Vec<(Option<Vec<u8>>, bool)> = Vec::new();
            let mut sink = |s: Segment<'_>, ends: bool| segs.push((s.key.map(<[u8]>::to_vec), ends));
            for ch in split(&body, &sizes) {
                if p.feed_runs(ch, &mut sink).is_err() {
                    break;
                }
            }
            let _ = p.finish_runs(&mut sink);
            for w in segs.windows(2) {
                if w[0].1 {
                    prop_assert_ne!(&w[0].0, &w[1].0);
                }
            }
        }

        #[test]
        fn compressed_chunking_matches_identity(
            (kind, body) in any_body(),
            stack in prop::sample::select(vec![
                vec![Coding::Gzip], vec![Coding::Deflate], vec![Coding::Br], vec![Coding::Zstd],
                vec![Coding::Gzip, Coding::Br], vec![Coding::Zstd, Coding::Deflate, Coding::Gzip],
            ]),
            sizes in sizes(),
        ) {
            let (want, want_r) = run(kind.clone(), &[&body]);
            let enc = encode_all(&stack, &body);
            let (got, got_r) = run_with(&stack, kind, Limits::default(), &split(&enc, &sizes));
            prop_assert_eq!(got_r, want_r);
            prop_assert_eq!(got, want);
        }
    }
}
