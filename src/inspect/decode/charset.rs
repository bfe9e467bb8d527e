//! Bodies in a character set other than UTF-8, transcoded to UTF-8 before they are read:
//! one declared in `Content-Type` (`charset=utf-16`, `iso-8859-1`, `windows-1252`,
//! `shift_jis`), or UTF-16 marked by its byte order mark (.NET's `Encoding.Unicode`,
//! Excel's "Unicode Text" export). Decoding is encoding_rs's, as browsers do it.

use encoding_rs::{CoderResult, Decoder, Encoding, REPLACEMENT, UTF_16BE, UTF_16LE, UTF_8};

use super::*;

/// The transcoding stage for a body, if it needs one: `charset` is the `Content-Type`'s
/// parameter; `sniff_bom` asks for a UTF-16 byte order mark to be looked for when none is
/// declared (text kinds; never a multipart body, whose parts may be binary).
pub(super) fn transcoder(charset: Option<&[u8]>, sniff_bom: bool) -> Option<Transcode> {
    let named = charset.and_then(Encoding::for_label);
    // UTF-8 needs nothing; the replacement encoding (labels of encodings browsers refuse)
    // would turn the whole body into one U+FFFD: read such bytes as they are.
    match named.filter(|e| *e != UTF_8 && *e != REPLACEMENT) {
        Some(e) if e.is_ascii_compatible() => Some(Transcode::new(State::Utf8Until(e))),
        Some(e) => Some(Transcode::new(State::Decode(e.new_decoder()))),
        // No charset named (none given, or a label that names none): look for a mark.
        None if sniff_bom && named.is_none() => Some(Transcode::new(State::Bom)),
        None => None,
    }
}

pub(super) enum State {
    /// Before the first two bytes: a UTF-16 byte order mark or not.
    Bom,
    /// UTF-8 (as the bytes are), until the first byte that cannot be UTF-8; from there on
    /// the declared ASCII-compatible charset. Clients label UTF-8 as `ISO-8859-1` often
    /// enough (a framework's default) that trusting the label from the first byte would
    /// turn Devanagari digits into Latin letters; a byte the label's charset needs and
    /// UTF-8 cannot hold shows it was meant.
    Utf8Until(&'static Encoding),
    /// Decoding with this decoder.
    Decode(Decoder),
    /// Passing bytes through as they are.
    Pass,
}

/// One transcoding stage (see [`transcoder`]).
pub(super) struct Transcode {
    state: State,
    /// Bytes held between pieces: a first byte that may begin a byte order mark, or the
    /// start of a UTF-8 sequence cut at a piece's end.
    held: Vec<u8>,
    buf: Vec<u8>,
}

impl Transcode {
    fn new(state: State) -> Self {
        Transcode {
            state,
            held: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Whether the body is being decoded from UTF-16: two or more raw bytes a character.
    pub(super) fn wide(&self) -> bool {
        matches!(&self.state, State::Decode(d) if !d.encoding().is_ascii_compatible())
    }

    pub(super) fn push(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
        if input.is_empty() {
            return Ok(());
        }
        match &mut self.state {
            State::Pass => out(input),
            State::Bom => {
                let held = std::mem::take(&mut self.held);
                let first = held.first().or(input.first()).copied();
                let second = if held.is_empty() {
                    input.get(1)
                } else {
                    input.first()
                };
                let utf16 = match (first, second.copied()) {
                    (Some(0xff), Some(0xfe)) => Some(UTF_16LE),
                    (Some(0xfe), Some(0xff)) => Some(UTF_16BE),
                    (Some(0xff | 0xfe), None) => {
                        self.held = held;
                        self.held.extend_from_slice(input);
                        return Ok(());
                    }
                    _ => None,
                };
                self.state = match utf16 {
                    Some(e) => State::Decode(e.new_decoder()),
                    None => State::Pass,
                };
                self.push(&held, out)?;
                self.push(input, out)
            }
            State::Utf8Until(e) => {
                let e = *e;
                let mut joined;
                let bytes = if self.held.is_empty() {
                    input
                } else {
                    joined = std::mem::take(&mut self.held);
                    joined.extend_from_slice(input);
                    &joined[..]
                };
                match std::str::from_utf8(bytes) {
                    Ok(_) => out(bytes),
                    Err(err) => {
                        let good = err.valid_up_to();
                        if good > 0 {
                            out(bytes.get(..good).unwrap_or(&[]))?;
                        }
                        let rest = bytes.get(good..).unwrap_or(&[]);
                        if err.error_len().is_none() {
                            // A sequence cut by the piece's end: wait for the rest of it.
                            self.held = rest.to_vec();
                            return Ok(());
                        }
                        self.state = State::Decode(e.new_decoder_without_bom_handling());
                        self.push(rest, out)
                    }
                }
            }
            State::Decode(d) => decode(d, &mut self.buf, input, false, out),
        }
    }

    pub(super) fn finish(&mut self, out: &mut Out<'_>) -> Result<(), DecodeError> {
        let held = std::mem::take(&mut self.held);
        match &mut self.state {
            // A lone first byte, or a UTF-8 sequence the body ends inside: as it is.
            State::Bom | State::Pass | State::Utf8Until(_) => {
                if !held.is_empty() {
                    out(&held)?;
                }
                Ok(())
            }
            State::Decode(d) => decode(d, &mut self.buf, &[], true, out),
        }
    }
}

/// Decodes `src` into UTF-8 pieces handed to `out`.
fn decode(
    d: &mut Decoder,
    buf: &mut Vec<u8>,
    mut src: &[u8],
    last: bool,
    out: &mut Out<'_>,
) -> Result<(), DecodeError> {
    if buf.is_empty() {
        buf.resize(OUT_CHUNK, 0);
    }
    loop {
        let (result, read, written, _) = d.decode_to_utf8(src, buf, last);
        if written > 0 {
            out(buf.get(..written).unwrap_or(&[]))?;
        }
        src = src.get(read..).unwrap_or(&[]);
        if result == CoderResult::InputEmpty {
            return Ok(());
        }
    }
}
