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

/// HTML and XML text: its references read (see [`Refs`]), then value text as any other
/// (base64 and percent escapes in it are read as in any text).
#[derive(Default)]
pub(super) struct Entities {
    pub(super) refs: Refs,
}

impl Entities {
    pub(super) fn feed(
        &mut self,
        data: &[u8],
        key: Option<&[u8]>,
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) {
        if self.refs.decode(data, false) {
            em.value(&self.refs.out, key, sink);
        } else {
            em.value(data, key, sink);
        }
    }

    pub(super) fn finish(&mut self, key: Option<&[u8]>, em: &mut Emitter, sink: &mut Sink<'_>) {
        if self.refs.finish() {
            em.value(&self.refs.out, key, sink);
        }
        em.end_value(key, sink);
    }
}

pub(super) fn push_utf8(out: &mut Vec<u8>, ch: char) {
    let mut tmp = [0u8; 4];
    out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
}
