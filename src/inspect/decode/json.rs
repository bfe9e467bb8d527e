//! Streaming JSON tokenizer: string escapes undone, keys carried as context, and raw text
//! from the first byte that is not JSON.

use super::*;

/// Position of the first `"` or `\\` in `s`, and whether a `%` or `&` may come before it
/// (true whenever one does; the percent layer of [`Emitter::value`] and the reference
/// reader ([`Refs`]) look again). JSON strings
/// are mostly short, where `memchr2`'s set-up costs more than the search: the first 64
/// bytes are tested eight at a time in a register (SWAR), the rest is left to `memchr2`.
pub(super) fn find_quote_or_backslash(s: &[u8]) -> (Option<usize>, bool) {
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

pub(super) fn key_at(arena: &[u8], range: Option<(usize, usize)>) -> Option<&[u8]> {
    range.and_then(|(a, b)| arena.get(a..b))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum JSt {
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
pub(super) enum Esc {
    None,
    Backslash,
    Hex { n: u8, acc: u16 },
}

/// What [`Json::structural`] did with a byte.
pub(super) enum Step {
    Consumed,
    /// The state changed; handle the same byte again.
    Reprocess,
    /// Not JSON.
    Invalid,
}

pub(super) struct Frame {
    pub(super) obj: bool,
    pub(super) base: usize,
    pub(super) key: Option<(usize, usize)>,
}

/// Streaming JSON tokenizer. Memory: the frame stack (at most `max_depth`), the keys of the
/// open objects (at most [`MAX_KEY_LEN`] each), a [`JSON_LOOKBACK`] tail and one chunk of
/// string scratch.
pub(super) struct Json {
    pub(super) st: JSt,
    pub(super) frames: Vec<Frame>,
    pub(super) arena: Vec<u8>,
    pub(super) root: Option<(usize, usize)>,
    pub(super) max_depth: u32,
    pub(super) in_key: bool,
    pub(super) esc: Esc,
    pub(super) high: Option<u16>,
    pub(super) lit: &'static [u8],
    pub(super) lit_pos: usize,
    pub(super) tail: Vec<u8>,
    pub(super) scratch: Vec<u8>,
    /// Character references in string values (HTML inside a JSON field).
    pub(super) refs: Refs,
    /// How many more levels of JSON inside a string value are read as JSON.
    pub(super) nest: u8,
    /// The current string value's first text has been seen (and `inner` set or not).
    pub(super) decided: bool,
    /// The reading of the current string value as JSON, when it opens as JSON: a queue
    /// message's body (`"MessageBody":"{\"uid\":\"\\u0968…\"}"`), an event's payload; or as
    /// markup, when it opens with `<`: an email API's `"html"`.
    pub(super) inner: Option<Box<Normaliser>>,
}

/// Levels of JSON inside JSON string values read as JSON (an SNS notification's `Message`
/// holding an SQS body holding an event is two).
pub(super) const JSON_IN_STRING: u8 = 2;

impl Json {
    pub(super) fn new(max_depth: u32, root_key: Option<&[u8]>) -> Self {
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
            nest: JSON_IN_STRING,
            decided: false,
            inner: None,
        }
    }

    pub(super) fn cur_key(&self) -> Option<(usize, usize)> {
        match self.frames.last() {
            Some(f) => f.key,
            None => self.root,
        }
    }

    pub(super) fn feed(
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
                        Step::Invalid
                            if matches!(c, 0xef | 0xbb | 0xbf)
                                && self.st == JSt::Value
                                && self.frames.is_empty() =>
                        {
                            // A UTF-8 byte order mark before the document (Windows tools,
                            // .NET's `Encoding.UTF8`): white space to the parsers that
                            // accept it.
                            i += 1;
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
    pub(super) fn number(
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
    pub(super) fn structural(&mut self, c: u8) -> Result<Step, DecodeError> {
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

    pub(super) fn push(&mut self, obj: bool) -> Result<(), DecodeError> {
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

    pub(super) fn pop(&mut self, obj: bool) -> Step {
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

    pub(super) fn start_string(&mut self) {
        self.esc = Esc::None;
        self.high = None;
        self.st = JSt::Str;
        self.decided = false;
    }

    /// Switches to raw text for the rest of the body, first re-emitting up to
    /// [`JSON_LOOKBACK`] bytes before `data[i]`.
    pub(super) fn fallback(
        &mut self,
        data: &[u8],
        i: usize,
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) {
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

    pub(super) fn push_char(&mut self, cp: u32) {
        push_utf8(&mut self.scratch, char::from_u32(cp).unwrap_or('\u{fffd}'));
    }

    pub(super) fn flush_high(&mut self) {
        if self.high.take().is_some() {
            self.push_char(0xfffd);
        }
    }

    pub(super) fn code_unit(&mut self, u: u16) {
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
    pub(super) fn string(
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

    pub(super) fn flush_str(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) {
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
    pub(super) fn emit_str(
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
            if !self.decided {
                self.decided = true;
                if self.nest > 0 && matches!(text.first(), Some(b'{' | b'[')) {
                    self.inner = Some(Box::new(Normaliser::json_in_string(self.nest - 1)));
                } else if text.first() == Some(&b'<') {
                    self.inner = Some(Box::new(Normaliser::markup_in_string()));
                }
            }
            if self.inner.is_some() && self.feed_inner(text, em, sink) {
                return;
            }
            let key = key_at(&self.arena, self.cur_key());
            // HTML in a JSON field that does not open with a tag is read with its
            // references undone, as its receiver reads it: `asha&#64;example.in` is an
            // address. One that does is read as markup (above).
            // `pct`: the quote search saw a `%` or `&` (or could not tell).
            if (pct || !self.refs.carry.is_empty()) && self.refs.decode(text, last) {
                em.value_to(&self.refs.out, key, last, true, sink);
            } else {
                em.value_to(text, key, last, pct, sink);
            }
        }
    }

    /// Feeds text of the current string value to its reading as JSON (its keys give
    /// context, its own escapes are undone, and text that turns out not to be JSON is read
    /// raw by the inner tokenizer) or as markup. False when that reading fails (nested past
    /// the depth limit): the rest of the string is then read as it is.
    #[cold]
    #[inline(never)]
    pub(super) fn feed_inner(
        &mut self,
        text: &[u8],
        em: &mut Emitter,
        sink: &mut Sink<'_>,
    ) -> bool {
        let key = key_at(&self.arena, self.cur_key());
        let Some(inner) = self.inner.as_deref_mut() else {
            return false;
        };
        if em
            .through(inner, key, sink, |n, out| n.feed(text, out))
            .is_ok()
        {
            return true;
        }
        self.inner = None;
        false
    }

    pub(super) fn end_string(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) {
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
            if let Some(mut inner) = self.inner.take() {
                // Only nesting past its reading's depth fails, and its text is in already.
                let _ = em.through(&mut inner, key, sink, |n, out| n.finish(out));
            } else if self.refs.finish() {
                em.value_to(&self.refs.out, key, true, true, sink);
            }
            em.end_value(key, sink);
            self.st = JSt::After;
        }
        self.in_key = false;
    }

    pub(super) fn finish(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) {
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
