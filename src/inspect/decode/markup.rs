//! Character references (`&#64;`, `&#x40;`, `&commat;`, `&nbsp;`) in HTML, XML, JSON
//! string values and form values, read as the characters they stand for.

use super::*;

/// The longest character reference read whole (`&#x0010FFFF;` and the longest name known
/// are shorter): a longer `&…` is text.
pub(super) const MAX_ENTITY: usize = 12;

/// The named character references read (case-sensitive, as HTML has them): XML's five,
/// and HTML's names of characters identifiers are written with, so that
/// `asha&commat;example&period;in` is read as an address.
pub(super) const NAMED_ENTITIES: &[(&[u8], char)] = &[
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
pub(super) enum Entity {
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
pub(super) fn entity(s: &[u8], at_end: bool) -> Entity {
    match entity_char(s, at_end) {
        Entity::Char {
            ch: '\u{a0}' | '\u{2000}'..='\u{200a}' | '\u{202f}',
            len,
        } => Entity::Char { ch: ' ', len },
        e => e,
    }
}

pub(super) fn entity_char(s: &[u8], at_end: bool) -> Entity {
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
pub(super) struct Refs {
    /// A reference begun at the end of the last piece (at most [`MAX_ENTITY`] bytes).
    pub(super) carry: Vec<u8>,
    pub(super) out: Vec<u8>,
}

impl Refs {
    /// Reads the references in `data`, the next piece of a text (`last`: its end); true
    /// when the text to use instead of `data` is in `self.out` (possibly empty, while a
    /// reference is carried), false when `data` holds none and nothing was carried.
    pub(super) fn decode(&mut self, data: &[u8], last: bool) -> bool {
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
    pub(super) fn finish(&mut self) -> bool {
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

/// The longest tag read as one: a longer `<…` is text from its 512th byte on (no tag
/// that only marks up a run of text is that long).
pub(super) const MAX_TAG: usize = 512;
/// The most bytes of inline tags with attributes held for the next tag that breaks the
/// text.
const MAX_HELD_TAGS: usize = 2048;
/// Raw bytes after the first held tag at which held tags are read wherever the text is:
/// what holding them adds to the time an identifier in them takes to be found.
pub(super) const MAX_HOLD_DISTANCE: u64 = 4096;

/// HTML and XML text: tags that only mark up part of a line are read through, so that
/// text a writer split across them is read whole, then references are read (see
/// [`Refs`]), then value text as any other (base64 and percent escapes in it are read as
/// in any text).
///
/// Word splits a run of text wherever an edit began or the spelling checker marked a
/// word, so an identifier typed in two sittings is stored as
/// `<w:t>2345 6789</w:t></w:r><w:r w:rsidR="00A1"><w:t> 0124</w:t>`; an email template
/// bolds part of a number (`<b>2345</b> 6789 0124`). Such inline tags (see [`inline`])
/// are dropped from the text when they have no attributes, and held, when they have,
/// until the next tag that breaks the text (`</w:p>`, `<td>`), which is read after them.
/// So the attributes are still read, but not between the digits. Every other tag is read
/// in place, as before, and keeps the text on either side of it apart.
#[derive(Default)]
pub(super) struct Entities {
    refs: Refs,
    /// The tag being read, from its `<` (at most [`MAX_TAG`] bytes).
    tag: Vec<u8>,
    scan: TagScan,
    /// Inline tags with attributes, held (at most [`MAX_HELD_TAGS`] bytes).
    held: Vec<u8>,
    /// Where holding `held` ends: raw offset of the first held tag's end plus
    /// [`MAX_HOLD_DISTANCE`].
    held_until: u64,
    /// Raw bytes read.
    pos: u64,
    /// Open run-property elements (`<w:rPr>`): every tag in one is inline.
    run_props: u32,
    /// An element only HTML has (`<p>`, `<div>`, `<br>`, …) has been read: HTML's inline
    /// elements are read through from then on. Before, `<code>`, `<data>`, `<time>` or `<b>`
    /// may be some XML vocabulary's fields, whose values are not to be joined.
    html: bool,
    /// What this piece reads as, gathered so that it is read in one call.
    out: Vec<u8>,
    /// How many base64 characters the text read so far ends with, modulo 4: held tags
    /// released inside text go in where a run of them is a whole number of quads.
    quad: u8,
    /// How many hex digits the text read so far still needs to complete a `%XX` escape.
    escape: u8,
    /// The last [`REPLAYED`] bytes of text read while tags are held, in earlier pieces;
    /// this piece's are `out` from `held_from` on. Kept once a piece, not once a push.
    tail: Vec<u8>,
    /// Where in `out` the text read while tags are held begins.
    held_from: usize,
}

/// Bytes of text read again after held tags released inside it, so that an identifier cut
/// there is read whole once (an identifier spelled in up to 64 characters, or 48 bytes of
/// text in base64).
const REPLAYED: usize = 64;

/// Where the reading of a tag is.
#[derive(Default, Clone, Copy, PartialEq)]
enum TagScan {
    /// Not in a tag.
    #[default]
    Text,
    /// After `<`.
    Open,
    /// After `</`.
    Close,
    /// In the element's name.
    Name,
    /// After the name, inside a quoted value when `Some`.
    Attrs(Option<u8>),
}

/// What a tag is, once read.
enum TagKind {
    /// It breaks the text: read in place.
    Break,
    /// It marks up part of the text: dropped, or held when it has attributes.
    Inline,
    /// ODF's `<text:s/>`, which stands for spaces: one space.
    Space,
}

impl Entities {
    pub(super) fn feed(
        &mut self,
        data: &[u8],
        key: Option<&[u8]>,
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) {
        let mut i = 0;
        while i < data.len() {
            if self.scan == TagScan::Text {
                let rest = data.get(i..).unwrap_or(&[]);
                let end = memchr::memchr(b'<', rest).unwrap_or(rest.len());
                self.text(rest.get(..end).unwrap_or(&[]));
                i += end;
                if end < rest.len() {
                    self.tag.clear();
                    self.tag.push(b'<');
                    self.scan = TagScan::Open;
                    self.pos += 1;
                    i += 1;
                }
                continue;
            }
            i += self.in_tag(data.get(i..).unwrap_or(&[]));
        }
        self.flush(key, em, sink);
    }

    /// Reads what this piece gathered.
    fn flush(&mut self, key: Option<&[u8]>, em: &mut Emitter, sink: &mut Sink<'_>) {
        if self.out.is_empty() {
            return;
        }
        if !self.held.is_empty() {
            keep_last(
                &mut self.tail,
                self.out.get(self.held_from..).unwrap_or(&[]),
                REPLAYED,
            );
            self.held_from = 0;
        }
        if self.refs.decode(&self.out, false) {
            em.value(&self.refs.out, key, sink);
        } else {
            em.value(&self.out, key, sink);
        }
        self.out.clear();
    }

    pub(super) fn finish(&mut self, key: Option<&[u8]>, em: &mut Emitter, sink: &mut Sink<'_>) {
        if self.scan != TagScan::Text {
            self.not_a_tag();
        }
        self.release();
        self.flush(key, em, sink);
        if self.refs.finish() {
            em.value(&self.refs.out, key, sink);
        }
        em.end_value(key, sink);
    }

    /// Reads `data`, which goes on the tag being read; returns how much of it was used (all
    /// of it, or up to where the tag ended or turned out to be text).
    fn in_tag(&mut self, data: &[u8]) -> usize {
        let room = MAX_TAG.saturating_sub(self.tag.len());
        let window = data.get(..room).unwrap_or(data);
        // Byte loops, not memchr: a tag's parts are a few bytes long.
        let mut j = 0;
        let ended = loop {
            let Some(&c) = window.get(j) else {
                break false;
            };
            match self.scan {
                TagScan::Open | TagScan::Close => {
                    if c == b'/' && self.scan == TagScan::Open {
                        self.scan = TagScan::Close;
                    } else if c.is_ascii_alphabetic() || c == b'_' {
                        self.scan = TagScan::Name;
                    } else {
                        // `a < b`, `<!--`, `<?xml`: not a tag read here. What was taken for
                        // one is text, and the byte that told is read again as text.
                        return self.not_a_tag_at(window, j);
                    }
                    j += 1;
                }
                TagScan::Name => {
                    while window
                        .get(j)
                        .is_some_and(|&c| c.is_ascii_alphanumeric() || b":_.-".contains(&c))
                    {
                        j += 1;
                    }
                    match window.get(j) {
                        None => {}
                        Some(b'>') => break true,
                        Some(&c) if c.is_ascii_whitespace() || c == b'/' => {
                            self.scan = TagScan::Attrs(None);
                            j += 1;
                        }
                        Some(_) => return self.not_a_tag_at(window, j),
                    }
                }
                TagScan::Attrs(None) => {
                    while window
                        .get(j)
                        .is_some_and(|&c| !matches!(c, b'>' | b'"' | b'\''))
                    {
                        j += 1;
                    }
                    match window.get(j) {
                        None => {}
                        Some(b'>') => break true,
                        Some(&q) => {
                            self.scan = TagScan::Attrs(Some(q));
                            j += 1;
                        }
                    }
                }
                TagScan::Attrs(Some(q)) => {
                    while window.get(j).is_some_and(|&c| c != q) {
                        j += 1;
                    }
                    if j < window.len() {
                        self.scan = TagScan::Attrs(None);
                        j += 1;
                    }
                }
                TagScan::Text => break false,
            }
        };
        if ended {
            self.tag.extend_from_slice(window.get(..=j).unwrap_or(&[]));
            self.pos += j as u64 + 1;
            self.scan = TagScan::Text;
            self.read_tag();
            return j + 1;
        }
        self.tag.extend_from_slice(window);
        self.pos += window.len() as u64;
        if self.tag.len() >= MAX_TAG {
            self.not_a_tag();
        }
        window.len()
    }

    /// The tag being read turned out to be text at `window[j]`.
    fn not_a_tag_at(&mut self, window: &[u8], j: usize) -> usize {
        self.tag.extend_from_slice(window.get(..j).unwrap_or(&[]));
        self.pos += j as u64;
        self.not_a_tag();
        j
    }

    /// The bytes taken for a tag are text after all.
    fn not_a_tag(&mut self) {
        self.scan = TagScan::Text;
        self.release_if_due();
        let tag = std::mem::take(&mut self.tag);
        self.push(&tag);
        self.tag = tag;
        self.tag.clear();
    }

    /// A whole tag has been read into `self.tag`.
    fn read_tag(&mut self) {
        let tag = std::mem::take(&mut self.tag);
        self.release_if_due();
        let closing = tag.get(1) == Some(&b'/');
        let name_from = if closing { 2 } else { 1 };
        let name_len = tag
            .get(name_from..)
            .unwrap_or(&[])
            .iter()
            .position(|&c| c.is_ascii_whitespace() || c == b'/' || c == b'>')
            .unwrap_or(0);
        let name = tag.get(name_from..name_from + name_len).unwrap_or(&[]);
        if !self.html {
            self.html = html_only(name);
        }
        let kind = inline(name, self.run_props > 0, self.html);
        if local_name(name) == b"rPr" && !tag.ends_with(b"/>") {
            self.run_props = if closing {
                self.run_props.saturating_sub(1)
            } else {
                self.run_props.saturating_add(1)
            };
        }
        match kind {
            TagKind::Break => {
                self.release();
                self.push(&tag);
            }
            TagKind::Inline | TagKind::Space => {
                if matches!(kind, TagKind::Space) {
                    self.push(b" ");
                }
                if tag.contains(&b'=') {
                    if self.held.len() + tag.len() > MAX_HELD_TAGS {
                        self.release();
                    }
                    if self.held.is_empty() {
                        self.held_until = self.pos + MAX_HOLD_DISTANCE;
                        self.held_from = self.out.len();
                    }
                    self.held.extend_from_slice(&tag);
                }
            }
        }
        self.tag = tag;
        self.tag.clear();
    }

    /// Text between tags; held tags are read where holding them ends, even mid-text. There
    /// they go in where a base64 run would be cut between quads, and not inside a percent
    /// escape, so that the text on either side still decodes, and the last [`REPLAYED`]
    /// bytes of text before them are read again after them, so that an identifier they cut
    /// is read whole (one wholly in those bytes is counted twice).
    fn text(&mut self, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        let mut text = text;
        if !self.held.is_empty() {
            let due =
                usize::try_from(self.held_until.saturating_sub(self.pos)).unwrap_or(usize::MAX);
            if let Some(before) = text.get(..due) {
                self.push_text(before);
                text = text.get(due..).unwrap_or(&[]);
                let mut k = 0;
                while let Some(&c) = text.get(k) {
                    if self.escape == 0 && (self.quad == 0 || !base64_char(c)) {
                        break;
                    }
                    self.push_text(text.get(k..=k).unwrap_or(&[]));
                    k += 1;
                }
                text = text.get(k..).unwrap_or(&[]);
                if !text.is_empty() {
                    self.release_inside_text();
                }
            }
        }
        self.push_text(text);
    }

    /// Text read as it is.
    fn push_text(&mut self, text: &[u8]) {
        self.pos += text.len() as u64;
        self.push(text);
    }

    /// Bytes read into the text (`pos` counted already), and what they end with.
    fn push(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        self.quad = match bytes.iter().rposition(|&c| !base64_char(c)) {
            Some(k) => ((bytes.len() - 1 - k) % 4) as u8,
            None => ((usize::from(self.quad) + bytes.len()) % 4) as u8,
        };
        // Only an escape begun in the last two bytes can be open.
        let tail = bytes.get(bytes.len().saturating_sub(2)..).unwrap_or(&[]);
        if bytes.len() > 2 {
            self.escape = 0;
        }
        for &c in tail {
            self.escape = if c == b'%' {
                2
            } else {
                self.escape.saturating_sub(1)
            };
        }
    }

    fn release_if_due(&mut self) {
        if !self.held.is_empty() && self.pos >= self.held_until {
            self.release_inside_text();
        }
    }

    /// Reads the held tags where text goes on after them: the last [`REPLAYED`] bytes of
    /// text are read again after them.
    fn release_inside_text(&mut self) {
        let (quad, escape) = (self.quad, self.escape);
        let mut tail = std::mem::take(&mut self.tail);
        keep_last(
            &mut tail,
            self.out.get(self.held_from..).unwrap_or(&[]),
            REPLAYED,
        );
        self.release();
        self.out.extend_from_slice(&tail);
        tail.clear();
        self.tail = tail;
        (self.quad, self.escape) = (quad, escape);
    }

    /// Reads the held tags.
    fn release(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        self.push(&held);
        self.held = held;
        self.held.clear();
        self.tail.clear();
    }
}

/// A character of standard or URL-safe base64.
fn base64_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'-' | b'_')
}

/// The element name without its namespace prefix.
fn local_name(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&c| c == b':') {
        Some(k) => name.get(k + 1..).unwrap_or(&[]),
        None => name,
    }
}

/// Whether `name` is an element only HTML has, which tells an HTML document or fragment
/// from other XML.
fn html_only(name: &[u8]) -> bool {
    let mut lower = [0u8; 8];
    let Some(l) = lower.get_mut(..name.len()) else {
        return false;
    };
    l.copy_from_slice(name);
    l.make_ascii_lowercase();
    matches!(
        &*l,
        b"html"
            | b"head"
            | b"body"
            | b"p"
            | b"div"
            | b"br"
            | b"span"
            | b"font"
            | b"strong"
            | b"em"
            | b"table"
            | b"tr"
            | b"td"
            | b"th"
            | b"ul"
            | b"ol"
            | b"li"
            | b"h1"
            | b"h2"
            | b"h3"
            | b"h4"
            | b"h5"
            | b"h6"
    )
}

/// Whether a tag named `name` only marks up part of the text. `in_run_props`: it is inside
/// a `<w:rPr>`, whose children (bold, size, language) all are. `html`: the document is
/// HTML, whose phrasing elements are read through.
fn inline(name: &[u8], in_run_props: bool, html: bool) -> TagKind {
    let local = local_name(name);
    let prefix = name.get(..name.len() - local.len()).unwrap_or(&[]);
    let yes = in_run_props
        || match prefix {
            // HTML's phrasing elements that style or link part of a line (any case), and a
            // spreadsheet's shared-string runs.
            b"" => {
                let mut lower = [0u8; 8];
                match lower.get_mut(..local.len()).filter(|_| html) {
                    Some(l) => {
                        l.copy_from_slice(local);
                        l.make_ascii_lowercase();
                        matches!(
                            &*l,
                            b"a" | b"abbr"
                                | b"b"
                                | b"bdi"
                                | b"bdo"
                                | b"big"
                                | b"cite"
                                | b"code"
                                | b"data"
                                | b"del"
                                | b"dfn"
                                | b"em"
                                | b"font"
                                | b"i"
                                | b"ins"
                                | b"kbd"
                                | b"mark"
                                | b"nobr"
                                | b"q"
                                | b"s"
                                | b"samp"
                                | b"small"
                                | b"span"
                                | b"strike"
                                | b"strong"
                                | b"sub"
                                | b"sup"
                                | b"time"
                                | b"tt"
                                | b"u"
                                | b"var"
                                | b"wbr"
                        ) || matches!(local, b"r" | b"t" | b"rPr")
                    }
                    None => matches!(local, b"r" | b"t" | b"rPr"),
                }
            }
            // OpenDocument's inline text elements; `<text:s/>` stands for spaces.
            b"text:" => {
                if local == b"s" {
                    return TagKind::Space;
                }
                matches!(
                    local,
                    b"span"
                        | b"a"
                        | b"bookmark"
                        | b"bookmark-start"
                        | b"bookmark-end"
                        | b"soft-page-break"
                )
            }
            // Office Open XML's run-level elements (WordprocessingML `w:`, DrawingML `a:`):
            // a run, its text and properties, and the marks Word puts between runs
            // (proofing, bookmarks, revisions, fields, comments, permissions).
            _ => matches!(
                local,
                b"r" | b"t"
                    | b"rPr"
                    | b"proofErr"
                    | b"bookmarkStart"
                    | b"bookmarkEnd"
                    | b"lastRenderedPageBreak"
                    | b"softHyphen"
                    | b"ins"
                    | b"del"
                    | b"delText"
                    | b"hyperlink"
                    | b"smartTag"
                    | b"smartTagPr"
                    | b"fldSimple"
                    | b"fldChar"
                    | b"instrText"
                    | b"commentRangeStart"
                    | b"commentRangeEnd"
                    | b"permStart"
                    | b"permEnd"
                    | b"noProof"
            ),
        };
    if yes {
        TagKind::Inline
    } else {
        TagKind::Break
    }
}

pub(super) fn push_utf8(out: &mut Vec<u8>, ch: char) {
    let mut tmp = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
}
