//! Multipart bodies, whole emails (`message/rfc822`) and quoted-printable parts, and the
//! header parsing they share with `Content-Type`.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum MpPhase {
    Preamble,
    AfterDelim,
    Headers,
    Body,
    Epilogue,
}

pub(super) enum PartBody {
    Text,
    /// An untyped part (no `Content-Type`, `text/plain`, `application/octet-stream`: a
    /// form field) before its first byte past white space; see [`BodyKind::Untyped`].
    Sniff(Vec<u8>),
    Markup(Box<Entities>),
    Json(Box<Json>),
    Form(Box<Form>),
    /// A nested `multipart/*` (an email's `multipart/alternative` inside `mixed`).
    Multipart(Box<Multipart>),
    /// An untyped part that is a gzip or zip file (`curl -F file=@users.csv.gz`, a
    /// spreadsheet uploaded through a form).
    Archive(Box<Archive>),
}

pub(super) struct Part {
    pub(super) body: PartBody,
    /// The part declares `Content-Transfer-Encoding: quoted-printable`.
    pub(super) qp: Option<Box<Qp>>,
    /// The part's text is in the character set its `Content-Type` declares (UTF-16, a
    /// legacy one): transcoded after its transfer encoding is undone.
    pub(super) charset: Option<Box<Transcode>>,
    pub(super) name: Vec<u8>,
    pub(super) named: bool,
    pub(super) limits: Limits,
    /// How many multipart bodies enclose this part's body.
    pub(super) nest: u32,
    /// An untyped part that is a gzip or zip file is opened: not in text decoded from a
    /// base64 run, where a few KiB could otherwise unpack into many MiB per run.
    pub(super) archives: bool,
}

impl Part {
    pub(super) fn new(limits: Limits, nest: u32) -> Self {
        Part {
            body: PartBody::Text,
            qp: None,
            charset: None,
            name: Vec::new(),
            named: false,
            limits,
            nest,
            archives: true,
        }
    }

    pub(super) fn key(&self) -> Option<&[u8]> {
        if self.named {
            Some(&self.name)
        } else {
            None
        }
    }

    pub(super) fn release(
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
    pub(super) fn transfer_decoded(
        &mut self,
        bytes: &[u8],
        last: bool,
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> Result<(), DecodeError> {
        let Some(decoded) = self.qp.as_mut().map(|qp| qp.feed(bytes, last)) else {
            return self.transcoded(bytes, last, em, sink);
        };
        let r = self.transcoded(&decoded, last, em, sink);
        if let Some(qp) = self.qp.as_mut() {
            qp.out = decoded;
        }
        r
    }

    /// Hands the part's decoded body bytes on, through its charset's transcoder when it
    /// has one (`last` for the end of the part).
    fn transcoded(
        &mut self,
        bytes: &[u8],
        last: bool,
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> Result<(), DecodeError> {
        let Some(mut t) = self.charset.take() else {
            return self.body_bytes(bytes, em, sink);
        };
        let mut r = t.push(bytes, &mut |piece| self.body_bytes(piece, em, sink));
        if last && r.is_ok() {
            r = t.finish(&mut |piece| self.body_bytes(piece, em, sink));
        }
        self.charset = Some(t);
        r
    }

    pub(super) fn body_bytes(
        &mut self,
        bytes: &[u8],
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> Result<(), DecodeError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if let PartBody::Sniff(held) = &mut self.body {
            let Some(sniffed) = sniff(held, bytes, self.archives) else {
                return Ok(());
            };
            let held = std::mem::take(held);
            let limits = &self.limits;
            self.body = match sniffed {
                Sniffed::Json => PartBody::Json(Box::new(Json::new(limits.max_depth, self.key()))),
                Sniffed::Markup => PartBody::Markup(Box::default()),
                Sniffed::Gzip => PartBody::Archive(Box::new(Archive::gzip(limits))),
                Sniffed::Zip => PartBody::Archive(Box::new(Archive::zip(limits))),
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
            PartBody::Archive(a) => a.feed(bytes, key, em, sink)?,
        }
        Ok(())
    }

    pub(super) fn end(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) -> Result<(), DecodeError> {
        if self.qp.is_some() || self.charset.is_some() {
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
            PartBody::Archive(a) => a.finish(key, em, sink)?,
        }
        em.boundary();
        Ok(())
    }

    pub(super) fn begin(&mut self, headers: &[u8]) {
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
        // Declared only: a part may be binary, so no byte order mark is looked for.
        self.charset = transcoder(h.charset.as_deref(), false).map(Box::new);
        self.body = match (h.class, h.boundary) {
            (MediaClass::Json, _) => {
                PartBody::Json(Box::new(Json::new(self.limits.max_depth, self.key())))
            }
            (MediaClass::Form, _) => PartBody::Form(Box::default()),
            (MediaClass::Markup, _) => PartBody::Markup(Box::default()),
            (MediaClass::Multipart, Some(b))
                if !b.is_empty() && b.len() <= MAX_BOUNDARY && self.nest < MAX_MULTIPART_NEST =>
            {
                let mut m = Multipart::new(&b, self.limits, self.nest + 1);
                m.part.archives = self.archives;
                PartBody::Multipart(Box::new(m))
            }
            (MediaClass::Message, _) if self.nest < MAX_MULTIPART_NEST => {
                let mut m = Multipart::message(self.limits, self.nest + 1);
                m.part.archives = self.archives;
                PartBody::Multipart(Box::new(m))
            }
            _ if h.untyped => PartBody::Sniff(Vec::new()),
            _ => PartBody::Text,
        };
    }
}

/// Longest run of spaces and tabs between a quoted-printable `=` and the line break it
/// makes soft (RFC 2045 allows transport padding there); a longer one is text.
pub(super) const QP_MAX_PAD: usize = 76;

/// Streaming quoted-printable decoder (RFC 2045 §6.7) for multipart parts that declare
/// it: `=XX` is the byte (lower-case hex accepted, as decoders do), `=` before a line
/// break (after optional padding) is a soft break and vanishes, so an identifier a mail
/// library wrapped at 76 characters is read whole. Any other `=` is text.
#[derive(Default)]
pub(super) struct Qp {
    /// The undecided tail of the previous piece: an `=` and what followed it.
    pub(super) held: Vec<u8>,
    pub(super) out: Vec<u8>,
}

pub(super) enum QpEscape {
    Byte(u8),
    /// A soft line break: `=` and this many bytes after it vanish.
    Soft(usize),
    Literal,
    NeedMore,
}

impl Qp {
    /// Decodes the next piece of the part (`last` for the end of it); the decoded bytes
    /// are returned in the decoder's own buffer, which the caller hands back (`self.out`).
    pub(super) fn feed(&mut self, data: &[u8], last: bool) -> Vec<u8> {
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
pub(super) fn qp_decode(input: &[u8], last: bool, out: &mut Vec<u8>) -> usize {
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
pub(super) fn qp_escape(rest: &[u8]) -> QpEscape {
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
pub(super) struct Multipart {
    /// `\r\n--boundary`.
    pub(super) delim: Vec<u8>,
    pub(super) fail: Vec<usize>,
    pub(super) matched: usize,
    /// Leading bytes of the current match that were never in the input (the `\r\n` assumed
    /// before the very first delimiter).
    pub(super) virt: usize,
    pub(super) phase: MpPhase,
    pub(super) after: u8,
    pub(super) hdr: Vec<u8>,
    pub(super) hdr_last: u32,
    pub(super) part: Part,
    /// A whole message (`message/rfc822`): one header block and one body, no delimiter.
    pub(super) single: bool,
}

impl Multipart {
    pub(super) fn new(boundary: &[u8], limits: Limits, nest: u32) -> Self {
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
            part: Part::new(limits, nest),
            single: false,
        }
    }

    /// A parser for a whole message: its header block, then its body as one part.
    pub(super) fn message(limits: Limits, nest: u32) -> Self {
        let mut m = Multipart::new(b"", limits, nest);
        m.single = true;
        m.matched = 0;
        m.virt = 0;
        m.start_headers();
        m
    }

    pub(super) fn feed(
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

    pub(super) fn start_headers(&mut self) {
        self.phase = MpPhase::Headers;
        self.hdr.clear();
        self.hdr_last = 0x0d0a;
    }

    pub(super) fn headers(
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

    pub(super) fn scan(
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

    pub(super) fn finish(
        &mut self,
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> Result<(), DecodeError> {
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
pub(super) enum MediaClass {
    Json,
    Form,
    Multipart,
    Markup,
    Message,
    Other,
}

pub(super) fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r' | b'\n', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r' | b'\n'] = s {
        s = rest;
    }
    s
}

/// Whether a `Content-Type` value says nothing of the structure: `text/plain`,
/// `application/octet-stream`, and the types of compressed files, gzip's and zip's (the
/// office formats built on zip among them), of any content.
pub(super) fn generic_type(value: &[u8]) -> bool {
    let mt = trim(value.split(|&b| b == b';').next().unwrap_or(&[]));
    let starts = |prefix: &[u8]| {
        mt.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    [
        &b"text/plain"[..],
        b"application/octet-stream",
        b"application/gzip",
        b"application/x-gzip",
        b"application/zip",
        b"application/x-zip-compressed",
    ]
    .iter()
    .any(|t| mt.eq_ignore_ascii_case(t))
        // `.xlsx`, `.docx`, `.pptx` (and their macro-enabled kinds), `.ods`, `.odt`.
        || starts(b"application/vnd.openxmlformats-officedocument.")
        || starts(b"application/vnd.ms-excel.")
        || starts(b"application/vnd.ms-word.")
        || starts(b"application/vnd.oasis.opendocument.")
}

pub(super) fn media_class(value: &[u8]) -> MediaClass {
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
    // `application/csp-report` is JSON too (browsers' Content Security Policy reports).
    if memchr::memmem::find(subtype, b"json").is_some() || subtype == b"csp-report" {
        return MediaClass::Json;
    }
    if subtype == b"html" || subtype == b"xml" || subtype.ends_with(b"+xml") {
        return MediaClass::Markup;
    }
    MediaClass::Other
}

/// Value of parameter `want` (case-insensitive name) in a header value of the form
/// `token; a=b; c="quoted \" value"`.
pub(super) fn header_param(value: &[u8], want: &[u8]) -> Option<Vec<u8>> {
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
pub(super) struct PartHeaders {
    /// `Content-Disposition` `name`.
    pub(super) name: Option<Vec<u8>>,
    pub(super) class: MediaClass,
    /// `Content-Type` `boundary`, for a nested multipart body.
    pub(super) boundary: Option<Vec<u8>>,
    /// `Content-Transfer-Encoding: quoted-printable`.
    pub(super) quoted_printable: bool,
    /// No `Content-Type`, or a generic one (see [`BodyKind::Untyped`]).
    pub(super) untyped: bool,
    /// `Content-Type` `charset`, of a text, JSON, form or markup part.
    pub(super) charset: Option<Vec<u8>>,
}

/// Reads a part's header block. Folded lines (a line starting with white space continues
/// the previous one, as mail headers wrap a long `Content-Type`) are unfolded first.
pub(super) fn parse_part_headers(block: &[u8]) -> PartHeaders {
    let mut h = PartHeaders {
        name: None,
        class: MediaClass::Other,
        boundary: None,
        quoted_printable: false,
        untyped: true,
        charset: None,
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
            // Text only: a compressed or binary part labelled with a charset is read as
            // its bytes (transcoded, a gzip's magic would no longer open it).
            let text = trim(value)
                .get(..5)
                .is_some_and(|t| t.eq_ignore_ascii_case(b"text/"));
            if text
                || matches!(
                    h.class,
                    MediaClass::Json | MediaClass::Form | MediaClass::Markup
                )
            {
                h.charset = header_param(value, b"charset");
            }
        } else if field.eq_ignore_ascii_case(b"content-transfer-encoding") {
            h.quoted_printable = trim(value).eq_ignore_ascii_case(b"quoted-printable");
        }
    }
    h
}
