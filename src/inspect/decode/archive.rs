//! Compressed files carried as a body or a multipart part: gzip files and zip archives
//! (`.zip`, and the office formats built on zip: `.xlsx`, `.docx`, `.odt`), opened as they
//! stream and read as untyped text, so a spreadsheet of customers' identifiers uploaded
//! to a foreign service is read as the receiver will read it.

use flate2::Decompress;

use super::*;

/// Gzip's magic bytes.
pub(super) const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// A zip file's first bytes: the signature of its first local file header.
pub(super) const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// A compressed file, opened one layer deep: what it holds is read as an untyped body in
/// which a gzip or zip file is not opened again. Its text goes into the stream of the
/// emitter it is fed with, under the key of the body or part that carries it (an entry's
/// JSON keys give their own). Decompressed bytes count against the body's limits (all
/// archives of one body together, see [`Emitter::unpacked`]) and against `max_ratio`
/// times this file's own bytes. A truncated or corrupt gzip file, or a zip entry cut
/// short, is an error: the body cannot be inspected.
pub(super) struct Archive {
    kind: ArchiveKind,
    /// The reading of the gzip file's content, or of the current zip entry's.
    inner: Option<Normaliser>,
    limits: Limits,
    /// This file's bytes fed so far.
    raw: u64,
}

enum ArchiveKind {
    Gzip(Box<GzipDec>),
    Zip(Box<ZipReader>),
}

impl Archive {
    pub(super) fn gzip(limits: &Limits) -> Self {
        Archive {
            kind: ArchiveKind::Gzip(Box::new(GzipDec::new())),
            inner: Some(Normaliser::untyped(limits, false)),
            limits: *limits,
            raw: 0,
        }
    }

    pub(super) fn zip(limits: &Limits) -> Self {
        Archive {
            kind: ArchiveKind::Zip(Box::new(ZipReader::new())),
            inner: None,
            limits: *limits,
            raw: 0,
        }
    }

    pub(super) fn feed(
        &mut self,
        data: &[u8],
        key: Option<&[u8]>,
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> Result<(), DecodeError> {
        self.raw = self.raw.saturating_add(data.len() as u64);
        let Archive {
            kind,
            inner,
            limits,
            raw,
        } = self;
        match kind {
            ArchiveKind::Gzip(dec) => dec.push(data, &mut |piece| {
                content(inner, piece, key, limits, *raw, em, sink)
            }),
            ArchiveKind::Zip(zip) => zip.feed(data, &mut |event| {
                zip_event(event, inner, key, limits, *raw, em, sink)
            }),
        }
    }

    pub(super) fn finish(
        &mut self,
        key: Option<&[u8]>,
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> Result<(), DecodeError> {
        let Archive {
            kind,
            inner,
            limits,
            raw,
        } = self;
        match kind {
            ArchiveKind::Gzip(dec) => dec.finish()?,
            ArchiveKind::Zip(zip) => {
                zip.finish(&mut |event| zip_event(event, inner, key, limits, *raw, em, sink))?
            }
        }
        if let Some(mut n) = inner.take() {
            em.through(&mut n, key, sink, |n, out| n.finish(out))?;
        }
        em.end_value(key, sink);
        Ok(())
    }
}

/// Counts a piece of a compressed file's content against the limits, then reads it.
fn content(
    inner: &mut Option<Normaliser>,
    piece: &[u8],
    key: Option<&[u8]>,
    limits: &Limits,
    raw: u64,
    em: &mut Emitter,
    sink: &mut Sink<'_>,
) -> Result<(), DecodeError> {
    let total = em.unpacked.saturating_add(piece.len() as u64);
    check_limits(limits, total, raw)?;
    em.unpacked = total;
    let n = inner.get_or_insert_with(|| Normaliser::untyped(limits, false));
    em.through(n, key, sink, |n, out| n.feed(piece, out))
}

fn zip_event(
    event: ZipEvent<'_>,
    inner: &mut Option<Normaliser>,
    key: Option<&[u8]>,
    limits: &Limits,
    raw: u64,
    em: &mut Emitter,
    sink: &mut Sink<'_>,
) -> Result<(), DecodeError> {
    match event {
        ZipEvent::Name(name) => {
            // The entry's name is text (`kyc/ABCPE1234F.pdf`), apart from what is around it.
            em.end_value(key, sink);
            em.value(name, None, sink);
            em.end_value(None, sink);
        }
        ZipEvent::Content(piece) => content(inner, piece, key, limits, raw, em, sink)?,
        ZipEvent::EndEntry => {
            let mut n = inner
                .take()
                .unwrap_or_else(|| Normaliser::untyped(limits, false));
            em.through(&mut n, key, sink, |n, out| n.finish(out))?;
            em.boundary();
        }
        ZipEvent::Opaque(bytes) => em.value(bytes, key, sink),
    }
    Ok(())
}

/// What a [`ZipReader`] reads out of the bytes fed to it, in order.
pub(super) enum ZipEvent<'a> {
    /// A local file header's file name.
    Name(&'a [u8]),
    /// A piece of the current entry's content, decompressed.
    Content(&'a [u8]),
    /// The current entry's content is complete.
    EndEntry,
    /// Bytes that are no entry's readable content: an encrypted entry, one compressed by a
    /// method other than deflate, the central directory, or whatever follows a header that
    /// does not parse. Read as text, as any other binary bytes are.
    Opaque(&'a [u8]),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ZipPhase {
    /// Collecting a local file header's fixed 30 bytes.
    Header,
    /// Collecting its file name and extra field.
    Names,
    /// A stored entry's bytes, `left` of them to come.
    Stored,
    /// A deflated entry's bytes, up to the end of its deflate stream.
    Deflated,
    /// An entry that cannot be opened, `left` bytes of it to come.
    Skip,
    /// A stored entry, or one that cannot be opened, whose sizes follow its data: its
    /// bytes up to a data descriptor that counts them (`unsized_content` tells which).
    Unsized,
    /// The data descriptor after an entry whose sizes follow its data: `want` bytes.
    Descriptor,
    /// Opaque bytes, up to the next local header's signature.
    Rest,
}

const LOCAL_HEADER_LEN: usize = 30;
const FLAG_ENCRYPTED: u16 = 1;
const FLAG_DESCRIPTOR: u16 = 1 << 3;
const METHOD_STORED: u16 = 0;
const METHOD_DEFLATED: u16 = 8;
const DESCRIPTOR_SIG: &[u8] = b"PK\x07\x08";

/// Streaming reader of a zip file's local entries (APPNOTE 4.3.7), in the order they come,
/// without the central directory at its end (which a stream reaches last): an entry
/// stored or deflated is read, whether its sizes are in its header or in a data
/// descriptor after its data (as streaming writers do), zip64 sizes included. An entry
/// that is neither, or encrypted, is opaque bytes; so are bytes that are no local header
/// where one should be (the central directory), up to the next local header's signature.
pub(super) struct ZipReader {
    phase: ZipPhase,
    /// The header (or descriptor) bytes collected so far.
    head: Vec<u8>,
    want: usize,
    flags: u16,
    zip64: bool,
    left: u64,
    /// The entry in [`ZipPhase::Unsized`] is a stored one, whose bytes are its content.
    unsized_content: bool,
    /// Bytes of the entry in [`ZipPhase::Unsized`] passed on so far.
    count: u64,
    z: Decompress,
    buf: Vec<u8>,
    /// Bytes were fed.
    seen: bool,
}

type ZipOut<'s> = dyn FnMut(ZipEvent<'_>) -> Result<(), DecodeError> + 's;

/// The tail held back from the previous piece joined to the next bytes, copied only when
/// something was held.
fn after_held<'a>(held: &[u8], rest: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
    if held.is_empty() {
        std::borrow::Cow::Borrowed(rest)
    } else {
        std::borrow::Cow::Owned([held, rest].concat())
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([
        b.get(at).copied().unwrap_or(0),
        b.get(at + 1).copied().unwrap_or(0),
    ])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from(le16(b, at)) | u32::from(le16(b, at + 2)) << 16
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | u64::from(le32(b, at + 4)) << 32
}

impl ZipReader {
    pub(super) fn new() -> Self {
        ZipReader {
            phase: ZipPhase::Header,
            head: Vec::with_capacity(LOCAL_HEADER_LEN),
            want: LOCAL_HEADER_LEN,
            flags: 0,
            zip64: false,
            left: 0,
            unsized_content: false,
            count: 0,
            z: Decompress::new(false),
            buf: Vec::new(),
            seen: false,
        }
    }

    /// Takes bytes of `data` from `*i` into `head` until it holds `want`; true once it does.
    fn collect(&mut self, data: &[u8], i: &mut usize) -> bool {
        let need = self.want.saturating_sub(self.head.len());
        let take = need.min(data.len().saturating_sub(*i));
        self.head
            .extend_from_slice(data.get(*i..*i + take).unwrap_or(&[]));
        *i += take;
        self.head.len() >= self.want
    }

    pub(super) fn feed(&mut self, data: &[u8], out: &mut ZipOut<'_>) -> Result<(), DecodeError> {
        self.seen |= !data.is_empty();
        let mut i = 0;
        while i < data.len() {
            let rest = data.get(i..).unwrap_or(&[]);
            match self.phase {
                ZipPhase::Header => {
                    if !self.collect(data, &mut i) {
                        // Any signature but a local header's ends the entries.
                        if !ZIP_MAGIC
                            .starts_with(self.head.get(..4.min(self.head.len())).unwrap_or(&[]))
                        {
                            self.skip_to_next_header();
                        }
                        continue;
                    }
                    if !self.head.starts_with(ZIP_MAGIC) {
                        self.skip_to_next_header();
                        continue;
                    }
                    let h = &self.head;
                    self.want =
                        LOCAL_HEADER_LEN + usize::from(le16(h, 26)) + usize::from(le16(h, 28));
                    self.phase = ZipPhase::Names;
                }
                ZipPhase::Names => {
                    if self.collect(data, &mut i) {
                        self.begin_entry(out)?;
                    }
                }
                ZipPhase::Stored | ZipPhase::Skip => {
                    let n = usize::try_from(self.left)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    let bytes = rest.get(..n).unwrap_or(&[]);
                    i += n;
                    self.left -= n as u64;
                    if self.phase == ZipPhase::Stored {
                        out(ZipEvent::Content(bytes))?;
                    } else {
                        out(ZipEvent::Opaque(bytes))?;
                    }
                    if self.left == 0 {
                        self.end_entry(self.phase == ZipPhase::Stored, out)?;
                    }
                }
                ZipPhase::Deflated => {
                    let mut content = |piece: &[u8]| out(ZipEvent::Content(piece));
                    let (n, ended) =
                        inflate(&mut self.z, rest, &mut self.buf, None, "zip", &mut content)?;
                    i += n;
                    if ended {
                        self.end_entry(true, out)?;
                    }
                }
                ZipPhase::Descriptor => {
                    // Its signature is optional: the length is known once four bytes are in.
                    if self.head.len() < 4 {
                        self.want = 4;
                        if !self.collect(data, &mut i) {
                            continue;
                        }
                        let sizes = if self.zip64 { 16 } else { 8 };
                        let sig = if self.head.starts_with(DESCRIPTOR_SIG) {
                            4
                        } else {
                            0
                        };
                        self.want = sig + 4 + sizes;
                    }
                    if self.collect(data, &mut i) {
                        self.next_header();
                    }
                }
                ZipPhase::Unsized => {
                    // `head` holds the tail of the previous piece that may begin a descriptor.
                    let held = std::mem::take(&mut self.head);
                    let joined = after_held(&held, rest);
                    let buf: &[u8] = &joined;
                    let (at, found) = self.find_descriptor(buf);
                    self.unsized_bytes(buf.get(..at).unwrap_or(&[]), out)?;
                    match found {
                        Some(len) => {
                            i += (at + len).saturating_sub(held.len());
                            if self.unsized_content {
                                out(ZipEvent::EndEntry)?;
                            }
                            self.next_header();
                        }
                        None => {
                            self.head = buf.get(at..).unwrap_or(&[]).to_vec();
                            i = data.len();
                        }
                    }
                }
                ZipPhase::Rest => {
                    // `head` holds the tail of the previous piece that may begin a magic.
                    let held = std::mem::take(&mut self.head);
                    let joined = after_held(&held, rest);
                    let buf: &[u8] = &joined;
                    match memchr::memmem::find(buf, ZIP_MAGIC) {
                        Some(at) => {
                            out(ZipEvent::Opaque(buf.get(..at).unwrap_or(&[])))?;
                            self.next_header();
                            // The magic's bytes that were held go into the header.
                            self.head.extend_from_slice(held.get(at..).unwrap_or(&[]));
                            i += at.saturating_sub(held.len());
                        }
                        None => {
                            let keep = (1..ZIP_MAGIC.len())
                                .rev()
                                .find(|&n| {
                                    buf.len() >= n
                                        && ZIP_MAGIC
                                            .starts_with(buf.get(buf.len() - n..).unwrap_or(&[]))
                                })
                                .unwrap_or(0);
                            let cut = buf.len() - keep;
                            out(ZipEvent::Opaque(buf.get(..cut).unwrap_or(&[])))?;
                            self.head = buf.get(cut..).unwrap_or(&[]).to_vec();
                            i = data.len();
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn unsized_bytes(&mut self, bytes: &[u8], out: &mut ZipOut<'_>) -> Result<(), DecodeError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.count += bytes.len() as u64;
        if self.unsized_content {
            out(ZipEvent::Content(bytes))
        } else {
            out(ZipEvent::Opaque(bytes))
        }
    }

    /// Where in `buf` (the next bytes of an entry in [`ZipPhase::Unsized`]) its data
    /// descriptor starts, with its length; or, with `None`, how many bytes of `buf` are
    /// surely the entry's (what follows may begin a descriptor that is not whole yet). A
    /// descriptor is its signature (which writers of such entries put there) and a
    /// compressed size equal to the entry's bytes before it.
    fn find_descriptor(&self, buf: &[u8]) -> (usize, Option<usize>) {
        let sizes = if self.zip64 { 16 } else { 8 };
        let len = DESCRIPTOR_SIG.len() + 4 + sizes;
        let mut j = 0;
        while let Some(k) = memchr::memchr(b'P', buf.get(j..).unwrap_or(&[])) {
            let at = j + k;
            let cand = buf.get(at..).unwrap_or(&[]);
            if cand.len() < len {
                let n = cand.len().min(DESCRIPTOR_SIG.len());
                if DESCRIPTOR_SIG.starts_with(cand.get(..n).unwrap_or(&[])) {
                    return (at, None);
                }
            } else if cand.starts_with(DESCRIPTOR_SIG) {
                let csize = if self.zip64 {
                    le64(cand, 8)
                } else {
                    u64::from(le32(cand, 8))
                };
                if csize == self.count + at as u64 {
                    return (at, Some(len));
                }
            }
            j = at + 1;
        }
        (buf.len(), None)
    }

    /// The local header is whole: names the entry and decides how its data is read.
    fn begin_entry(&mut self, out: &mut ZipOut<'_>) -> Result<(), DecodeError> {
        let h = &self.head;
        self.flags = le16(h, 6);
        let method = le16(h, 8);
        let mut csize = u64::from(le32(h, 18));
        let wide_size = le32(h, 22) == u32::MAX;
        let name_len = usize::from(le16(h, 26));
        let name = h
            .get(LOCAL_HEADER_LEN..LOCAL_HEADER_LEN + name_len)
            .unwrap_or(&[]);
        // Zip64: the sizes that do not fit 32 bits are in the extra field's 0x0001 block,
        // the uncompressed size first (APPNOTE 4.5.3).
        self.zip64 = false;
        let mut extra = h.get(LOCAL_HEADER_LEN + name_len..).unwrap_or(&[]);
        while extra.len() >= 4 {
            let (id, len) = (le16(extra, 0), usize::from(le16(extra, 2)));
            let body = extra.get(4..4 + len).unwrap_or(&[]);
            if id == 1 {
                self.zip64 = true;
                let at = if wide_size { 8 } else { 0 };
                if csize == u64::from(u32::MAX) {
                    csize = le64(body, at);
                }
            }
            extra = extra.get(4 + len..).unwrap_or(&[]);
        }
        out(ZipEvent::Name(name))?;
        let later = self.flags & FLAG_DESCRIPTOR != 0;
        let readable = self.flags & FLAG_ENCRYPTED == 0;
        self.phase = match method {
            METHOD_DEFLATED if readable => {
                self.z.reset(false);
                if self.buf.is_empty() {
                    self.buf = vec![0; OUT_CHUNK];
                }
                ZipPhase::Deflated
            }
            METHOD_STORED if readable && !later => ZipPhase::Stored,
            _ if !later => ZipPhase::Skip,
            _ => {
                self.unsized_content = method == METHOD_STORED && readable;
                self.count = 0;
                self.head.clear();
                ZipPhase::Unsized
            }
        };
        self.left = csize;
        if self.phase == ZipPhase::Stored && csize == 0 {
            self.end_entry(true, out)?;
        } else if self.phase == ZipPhase::Skip && csize == 0 {
            self.end_entry(false, out)?;
        }
        Ok(())
    }

    fn end_entry(&mut self, content: bool, out: &mut ZipOut<'_>) -> Result<(), DecodeError> {
        if content {
            out(ZipEvent::EndEntry)?;
        }
        if self.flags & FLAG_DESCRIPTOR != 0 {
            self.phase = ZipPhase::Descriptor;
            self.head.clear();
            self.want = 4;
        } else {
            self.next_header();
        }
        Ok(())
    }

    fn next_header(&mut self) {
        self.phase = ZipPhase::Header;
        self.head.clear();
        self.want = LOCAL_HEADER_LEN;
    }

    /// Bytes where a local header should be are no local header: the central directory
    /// (the entries are over), or bytes a reader that follows the central directory would
    /// skip. They are opaque, up to the next local header's signature, which is read (an
    /// entry placed after other bytes is not passed over). What was collected as a header
    /// stays in `head`, to be searched first.
    fn skip_to_next_header(&mut self) {
        self.phase = ZipPhase::Rest;
    }

    /// Ends the file: an entry or header cut short is corrupt.
    pub(super) fn finish(&mut self, out: &mut ZipOut<'_>) -> Result<(), DecodeError> {
        match self.phase {
            ZipPhase::Header if self.head.is_empty() => Ok(()),
            // Opaque bytes cut short are read as they are.
            ZipPhase::Rest => {
                let held = std::mem::take(&mut self.head);
                out(ZipEvent::Opaque(&held))?;
                // What a header that did not parse held may begin another, cut short.
                match memchr::memmem::find(&held, ZIP_MAGIC) {
                    Some(_) => Err(corrupt("truncated zip file")),
                    None => Ok(()),
                }
            }
            ZipPhase::Descriptor | ZipPhase::Skip => Ok(()),
            // A stored entry with no descriptor found: its bytes were all read, as text.
            ZipPhase::Unsized => {
                let held = std::mem::take(&mut self.head);
                self.unsized_bytes(&held, out)?;
                if self.unsized_content {
                    out(ZipEvent::EndEntry)?;
                }
                Ok(())
            }
            _ if !self.seen => Ok(()),
            ZipPhase::Header => {
                let head = std::mem::take(&mut self.head);
                out(ZipEvent::Opaque(&head))?;
                Err(corrupt("truncated zip file"))
            }
            ZipPhase::Names | ZipPhase::Stored | ZipPhase::Deflated => {
                Err(corrupt("truncated zip entry"))
            }
        }
    }
}
