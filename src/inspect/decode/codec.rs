//! Content codings: streaming gzip, deflate (zlib or raw), brotli and zstd decoders, each
//! producing bounded pieces so a bomb never allocates.

use std::io::Read as _;

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use flate2::{Crc, Decompress, FlushDecompress, Status};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

use super::*;

pub(super) struct Stage {
    pub(super) codec: Codec,
    pub(super) produced: u64,
}

pub(super) enum Codec {
    Gzip(Box<GzipDec>),
    Deflate(Box<DeflateDec>),
    Br(Box<BrDec>),
    Zstd(Box<ZstdDec>),
    /// Not a content coding: the body's character set, transcoded to UTF-8 after every
    /// content coding is undone.
    Charset(Box<Transcode>),
}

impl Codec {
    pub(super) fn new(coding: Coding, limits: &Limits) -> Option<Codec> {
        Some(match coding {
            Coding::Gzip => Codec::Gzip(Box::new(GzipDec::new())),
            Coding::Deflate => Codec::Deflate(Box::new(DeflateDec::new())),
            Coding::Br => Codec::Br(Box::new(BrDec::new())),
            Coding::Zstd => Codec::Zstd(Box::new(ZstdDec::new(limits))),
            Coding::Identity => return None,
        })
    }

    pub(super) fn push(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
        match self {
            Codec::Gzip(d) => d.push(input, out),
            Codec::Deflate(d) => d.push(input, out),
            Codec::Br(d) => d.push(input, out),
            Codec::Zstd(d) => d.push(input, out),
            Codec::Charset(t) => t.push(input, out),
        }
    }

    pub(super) fn finish(&mut self, out: &mut Out<'_>) -> Result<(), DecodeError> {
        match self {
            Codec::Gzip(d) => d.finish(),
            Codec::Deflate(d) => d.finish(),
            Codec::Br(d) => d.finish(),
            Codec::Zstd(d) => d.finish(out),
            Codec::Charset(t) => t.finish(out),
        }
    }
}

/// Inflates `input` into `buf`-sized pieces handed to `out` until the input is used up or
/// the deflate stream ends. Returns (bytes consumed, stream ended).
pub(super) fn inflate(
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
pub(super) enum GzStep {
    Fixed,
    XLen,
    Extra,
    Name,
    Comment,
    Hcrc,
    Done,
}

/// Streaming parser of one gzip member header (RFC 1952).
pub(super) struct GzHeader {
    pub(super) step: GzStep,
    pub(super) buf: [u8; 10],
    pub(super) n: usize,
    pub(super) flags: u8,
    pub(super) left: usize,
}

impl GzHeader {
    pub(super) fn new() -> Self {
        GzHeader {
            step: GzStep::Fixed,
            buf: [0; 10],
            n: 0,
            flags: 0,
            left: 0,
        }
    }

    pub(super) fn take(&mut self, data: &[u8], i: &mut usize, want: usize) -> bool {
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
    pub(super) fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), DecodeError> {
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
pub(super) enum GzPhase {
    Header,
    Body,
    Trailer,
    Between,
}

/// gzip decoder: header parser, raw inflate with CRC-32, trailer check; multi-member.
pub(super) struct GzipDec {
    pub(super) phase: GzPhase,
    pub(super) hdr: GzHeader,
    pub(super) z: Decompress,
    pub(super) crc: Crc,
    pub(super) trailer: [u8; 8],
    pub(super) tn: usize,
    pub(super) seen: bool,
    pub(super) buf: Vec<u8>,
}

impl GzipDec {
    pub(super) fn new() -> Self {
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

    pub(super) fn push(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
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

    pub(super) fn finish(&mut self) -> Result<(), DecodeError> {
        match self.phase {
            GzPhase::Between => Ok(()),
            GzPhase::Header if !self.seen => Ok(()),
            _ => Err(corrupt("truncated gzip stream")),
        }
    }
}

/// `deflate` decoder: zlib (RFC 1950) or, when the first two bytes are no zlib header, raw
/// deflate (RFC 1951).
pub(super) struct DeflateDec {
    pub(super) z: Option<Decompress>,
    pub(super) head: [u8; 2],
    pub(super) hn: usize,
    pub(super) ended: bool,
    pub(super) buf: Vec<u8>,
}

impl DeflateDec {
    pub(super) fn new() -> Self {
        DeflateDec {
            z: None,
            head: [0; 2],
            hn: 0,
            ended: false,
            buf: vec![0; OUT_CHUNK],
        }
    }

    pub(super) fn push(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
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

    pub(super) fn inflate(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
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

    pub(super) fn finish(&mut self) -> Result<(), DecodeError> {
        if self.ended || self.hn == 0 {
            Ok(())
        } else {
            Err(corrupt("truncated deflate stream"))
        }
    }
}

/// Brotli decoder (standard window, at most 16 MiB of history).
pub(super) struct BrDec {
    pub(super) state: BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
    pub(super) buf: Vec<u8>,
    pub(super) seen: bool,
    pub(super) done: bool,
}

impl BrDec {
    pub(super) fn new() -> Self {
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

    pub(super) fn push(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
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

    pub(super) fn finish(&mut self) -> Result<(), DecodeError> {
        if self.done || !self.seen {
            Ok(())
        } else {
            Err(corrupt("truncated br stream"))
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ZPhase {
    FrameStart,
    Blocks,
    Skip,
}

/// Zstandard decoder. Frames are cut into single blocks here so that the block decoder never
/// sees more than one block (at most 128 KiB of output) at a time; history is bounded by the
/// window cap checked before the frame is set up.
pub(super) struct ZstdDec {
    pub(super) dec: FrameDecoder,
    pub(super) inbuf: Vec<u8>,
    pub(super) phase: ZPhase,
    pub(super) checksum: bool,
    pub(super) skip_left: u64,
    pub(super) window_cap: u64,
    pub(super) seen: bool,
    pub(super) buf: Vec<u8>,
}

pub(super) fn zstd_err<E: std::fmt::Display>(e: E) -> DecodeError {
    DecodeError::Corrupt(format!("zstd: {e}"))
}

pub(super) fn guarded<T, E: std::fmt::Display>(
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, DecodeError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(zstd_err),
        Err(_) => Err(corrupt("zstd: decoder failed on malformed input")),
    }
}

impl ZstdDec {
    pub(super) fn new(limits: &Limits) -> Self {
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

    pub(super) fn push(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
        self.seen |= !input.is_empty();
        self.inbuf.extend_from_slice(input);
        let mut pos = 0;
        let result = self.units(&mut pos, out);
        self.inbuf.drain(..pos.min(self.inbuf.len()));
        result
    }

    /// Consumes every complete unit (frame header, block, skippable frame) from `inbuf`.
    pub(super) fn units(&mut self, pos: &mut usize, out: &mut Out<'_>) -> Result<(), DecodeError> {
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

    pub(super) fn drain(&mut self, out: &mut Out<'_>) -> Result<(), DecodeError> {
        loop {
            let (dec, buf) = (&mut self.dec, &mut self.buf);
            let n = guarded(|| dec.read(buf))?;
            if n == 0 {
                return Ok(());
            }
            out(self.buf.get(..n).unwrap_or(&[]))?;
        }
    }

    pub(super) fn finish(&mut self, out: &mut Out<'_>) -> Result<(), DecodeError> {
        if !self.seen {
            return Ok(());
        }
        if self.phase == ZPhase::FrameStart && self.inbuf.is_empty() {
            return self.drain(out);
        }
        Err(corrupt("truncated zstd stream"))
    }
}
