//! Byte-level scanning: character classes, the SWAR skip to the next digit or `@`,
//! boundaries around a candidate, candidate shapes, and the field-name index.

use super::*;

/// Open-addressing hash index from normalised field name to classes.
#[derive(Debug, Default)]
pub(super) struct FieldIndex {
    /// Distinct names, their suffix hash, and the classes they name.
    pub(super) names: Vec<(Box<[u8]>, u64, Vec<ClassId>)>,
    /// Bit set of the (hashed) last three bytes of every name of three or more bytes.
    pub(super) tails: Vec<u64>,
    /// `0` = empty, else index into `names` plus one. Power-of-two sized,
    /// at most a quarter full, so probing always ends.
    pub(super) slots: Vec<u32>,
    pub(super) shift: u32,
}

/// Rolling hash fed from the last byte backwards, so one pass over a key
/// yields the hash of every suffix.
#[inline]
pub(super) fn suffix_hash_step(h: u64, b: u8) -> u64 {
    h.rotate_left(5) ^ u64::from(b)
}

/// Size of [`FieldIndex::tails`] in bits.
pub(super) const TAIL_BITS: usize = 1 << 15;

#[inline]
pub(super) fn tail_bit(t: [u8; 3]) -> usize {
    (usize::from(t[0]) * 961 + usize::from(t[1]) * 31 + usize::from(t[2])) % TAIL_BITS
}

#[inline]
pub(super) fn slot_of(h: u64, shift: u32) -> usize {
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
}

impl FieldIndex {
    /// `fields` sorted by name.
    pub(super) fn build(fields: &[(Box<[u8]>, ClassId)]) -> FieldIndex {
        let mut names: Vec<(Box<[u8]>, u64, Vec<ClassId>)> = Vec::new();
        for (n, id) in fields {
            match names.last_mut() {
                Some(last) if last.0 == *n => {
                    if !last.2.contains(id) {
                        last.2.push(*id);
                    }
                }
                _ => {
                    let h = n.iter().rev().fold(0, |h, &b| suffix_hash_step(h, b));
                    names.push((n.clone(), h, vec![*id]));
                }
            }
        }
        let bits = (names.len() * 4)
            .next_power_of_two()
            .trailing_zeros()
            .max(4);
        let mut slots = vec![0u32; 1 << bits];
        let shift = 64 - bits;
        let mask = slots.len() - 1;
        for (i, (_, h, _)) in names.iter().enumerate() {
            let mut s = slot_of(*h, shift);
            while slots[s & mask] != 0 {
                s += 1;
            }
            slots[s & mask] = u32::try_from(i + 1).unwrap_or(0);
        }
        let mut tails = vec![0u64; TAIL_BITS / 64];
        for (n, _, _) in &names {
            if let [.., a, b, c] = **n {
                let t = tail_bit([a, b, c]);
                tails[t / 64] |= 1 << (t % 64);
            }
        }
        FieldIndex {
            names,
            tails,
            slots,
            shift,
        }
    }

    /// Whether some name of three or more bytes ends with `tail` (false positives allowed).
    #[inline]
    pub(super) fn may_end_with(&self, tail: [u8; 3]) -> bool {
        let t = tail_bit(tail);
        self.tails
            .get(t / 64)
            .is_some_and(|w| w & (1 << (t % 64)) != 0)
    }

    /// Classes named exactly `name`, whose suffix hash is `h`.
    #[inline]
    pub(super) fn get(&self, h: u64, name: &[u8]) -> &[ClassId] {
        let mask = self.slots.len().wrapping_sub(1);
        let start = slot_of(h, self.shift);
        for s in start..start + self.slots.len() {
            let v = self.slots[s & mask] as usize;
            let Some((n, nh, ids)) = v.checked_sub(1).and_then(|i| self.names.get(i)) else {
                return &[];
            };
            if *nh == h && **n == *name {
                return ids;
            }
        }
        &[]
    }
}

pub(super) struct Ctx<'a> {
    pub(super) text: &'a [u8],
    pub(super) base: u64,
    pub(super) key: KeyMatch,
}

/// Classes named by the current key (at most 8).
#[derive(Clone, Copy)]
pub(super) struct KeyMatch {
    pub(super) ids: [ClassId; 8],
    pub(super) n: usize,
}

impl KeyMatch {
    pub(super) const NONE: KeyMatch = KeyMatch {
        ids: [ClassId(0); 8],
        n: 0,
    };

    pub(super) fn ids(&self) -> &[ClassId] {
        &self.ids[..self.n.min(self.ids.len())]
    }

    #[inline]
    pub(super) fn has(&self, id: ClassId) -> bool {
        self.n != 0 && self.ids().contains(&id)
    }

    pub(super) fn push(&mut self, id: ClassId) {
        if self.n < self.ids.len() && !self.has(id) {
            self.ids[self.n] = id;
            self.n += 1;
        }
    }
}

#[derive(Clone, Copy)]
pub(super) struct Cand {
    pub(super) class: ClassId,
    pub(super) base: Confidence,
    pub(super) needs_ctx: bool,
}

/// Candidate classes for one span, in priority order.
pub(super) struct Cands {
    pub(super) a: [Cand; 4],
    pub(super) n: usize,
}

impl Default for Cands {
    fn default() -> Self {
        Cands {
            a: [Cand {
                class: ClassId(0),
                base: Confidence::Low,
                needs_ctx: true,
            }; 4],
            n: 0,
        }
    }
}

impl Cands {
    pub(super) fn push(&mut self, class: ClassId, base: Confidence, needs_ctx: bool) {
        if self.n < self.a.len() {
            self.a[self.n] = Cand {
                class,
                base,
                needs_ctx,
            };
            self.n += 1;
        }
    }

    pub(super) fn as_slice(&self) -> &[Cand] {
        &self.a[..self.n.min(self.a.len())]
    }

    pub(super) fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Every candidate needs context from here on: the span is admitted by a looser
    /// boundary (see [`word_joined`]) only when a key or keyword names its class.
    pub(super) fn need_context(&mut self) {
        for c in self.a.iter_mut() {
            c.needs_ctx = true;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// 15 or 19 digit card.
    Card,
    /// 16 digits: card or Aadhaar VID.
    Card16,
    /// 4-4-4 Aadhaar.
    Aadhaar,
    /// 2-4-4-4 hyphenated ABHA number.
    Abha,
    /// `91` then the national number.
    Phone91,
    /// Trunk `0` then the national number.
    Phone0,
    /// 5-5 national mobile number.
    Phone,
}

/// Grouped shapes, longest first.
pub(super) const SHAPES: &[(&[usize], Shape)] = &[
    (&[4, 4, 4, 4, 3], Shape::Card),
    (&[4, 4, 4, 4], Shape::Card16),
    (&[4, 6, 5], Shape::Card),
    (&[4, 4, 4], Shape::Aadhaar),
    (&[2, 4, 4, 4], Shape::Abha),
    (&[2, 5, 5], Shape::Phone91),
    (&[2, 10], Shape::Phone91),
    (&[1, 5, 5], Shape::Phone0),
    (&[1, 10], Shape::Phone0),
    (&[6, 5], Shape::Phone0),
    (&[5, 5], Shape::Phone),
];

pub(super) fn push(
    out: &mut Vec<Finding>,
    cx: &Ctx<'_>,
    s: usize,
    e: usize,
    class: ClassId,
    confidence: Confidence,
) {
    out.push(Finding {
        class,
        confidence,
        offset: cx.base.saturating_add(s as u64),
        len: u32::try_from(e.saturating_sub(s)).unwrap_or(u32::MAX),
    });
}

pub(super) const C_DIGIT: u8 = 1;
pub(super) const C_UPPER: u8 = 2;
pub(super) const C_LOWER: u8 = 4;
pub(super) const C_ALPHA: u8 = C_UPPER | C_LOWER;
pub(super) const C_ALNUM: u8 = C_DIGIT | C_ALPHA;
/// `[A-Za-z0-9._%+-]`: e-mail local part.
pub(super) const C_LOCAL: u8 = 8;
/// `[A-Za-z0-9.-]`: domain.
pub(super) const C_DOMAIN: u8 = 16;
/// Group separators: space and hyphen.
pub(super) const C_SEP: u8 = 32;

pub(super) static CLASS: [u8; 256] = build_class_table();

pub(super) const fn build_class_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        if b.is_ascii_digit() {
            c |= C_DIGIT | C_LOCAL | C_DOMAIN;
        } else if b.is_ascii_uppercase() {
            c |= C_UPPER | C_LOCAL | C_DOMAIN;
        } else if b.is_ascii_lowercase() {
            c |= C_LOWER | C_LOCAL | C_DOMAIN;
        } else if b == b'.' {
            c |= C_LOCAL | C_DOMAIN;
        } else if b == b'-' {
            c |= C_LOCAL | C_DOMAIN | C_SEP;
        } else if b == b' ' {
            c |= C_SEP;
        } else if b == b'_' || b == b'%' || b == b'+' {
            c |= C_LOCAL;
        }
        t[i] = c;
        i += 1;
    }
    t
}

#[inline]
pub(super) fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}
#[inline]
pub(super) fn is_alpha(b: u8) -> bool {
    CLASS[usize::from(b)] & C_ALPHA != 0
}
#[inline]
pub(super) fn is_alnum(b: u8) -> bool {
    CLASS[usize::from(b)] & C_ALNUM != 0
}
#[inline]
pub(super) fn is_local(b: u8) -> bool {
    CLASS[usize::from(b)] & C_LOCAL != 0
}
#[inline]
pub(super) fn is_domain(b: u8) -> bool {
    CLASS[usize::from(b)] & C_DOMAIN != 0
}
#[inline]
pub(super) fn is_key_sep(b: u8) -> bool {
    matches!(b, b'_' | b'-' | b'.' | b' ')
}

/// `t[i]`, or 0 (a non-token byte) past the end.
#[inline]
pub(super) fn byte_at(t: &[u8], i: usize) -> u8 {
    t.get(i).copied().unwrap_or(0)
}

/// `t[i - k]`, or 0 before the start.
#[inline]
pub(super) fn before(t: &[u8], i: usize, k: usize) -> u8 {
    match i.checked_sub(k) {
        Some(j) => byte_at(t, j),
        None => 0,
    }
}

/// Can an identifier start at `s` (`t[s]` alphanumeric, `t[s-1]` not)?
/// `sep` is the separator the identifier itself groups with (0 if none).
#[inline]
pub(super) fn left_ok(t: &[u8], s: usize, sep: u8) -> bool {
    let b = before(t, s, 1);
    let bb = before(t, s, 2);
    match b {
        b'_' | b'@' | b'+' => false,
        b'-' => !is_alnum(bb),
        b'.' => !is_digit(bb),
        b' ' => !(sep == b' ' && is_digit(bb)),
        _ => true,
    }
}

/// Is the candidate at `s` joined by `-` or `_` to a word of letters before it
/// (`pan_ABCPE…`, `aadhaar_2345….jpg`)? A file or a key may be named so; so is many an id
/// (`txn_2345…`, `ref-ABCPE…`), which is why such a span is reported only when that word,
/// or a key, names its class (a UUID group, whose head holds a digit, never is).
#[inline(never)]
pub(super) fn word_joined(t: &[u8], s: usize) -> bool {
    if !matches!(before(t, s, 1), b'-' | b'_') {
        return false;
    }
    let mut i = s - 1;
    let mut n = 0;
    while i > 0 && is_alnum(t[i - 1]) {
        if !is_alpha(t[i - 1]) {
            return false;
        }
        i -= 1;
        n += 1;
        if n == 64 {
            break;
        }
    }
    n >= 2
}

/// Is the candidate ending at `e` followed by a file extension (`ABCPE1234F.pdf`,
/// `2345….jpg`): a `.` and a letter?
#[inline]
pub(super) fn ext_after(t: &[u8], e: usize) -> bool {
    byte_at(t, e) == b'.' && is_alpha(byte_at(t, e + 1))
}

/// Is the number ending at `e` written as a float with nothing after the point but one
/// zero (`234567890124.0`: pandas writes an integer column that has gaps so, and
/// `json.dumps` of a float)?
#[inline]
pub(super) fn point_zero(t: &[u8], e: usize) -> bool {
    byte_at(t, e) == b'.'
        && byte_at(t, e + 1) == b'0'
        && !is_alnum(byte_at(t, e + 2))
        && byte_at(t, e + 2) != b'.'
}

/// Is the run at `s` the national part after a non-Indian country code
/// (`+44 `, `+1-`)? Such numbers are not Indian identifiers.
pub(super) fn foreign_prefix(t: &[u8], s: usize) -> bool {
    if !matches!(before(t, s, 1), b' ' | b'-') {
        return false;
    }
    let end = s - 1;
    let mut i = end;
    while i > 0 && is_digit(t[i - 1]) && end - i < 4 {
        i -= 1;
    }
    (1..=3).contains(&(end - i)) && before(t, i, 1) == b'+' && &t[i..end] != b"91"
}

/// Left boundary for a match starting with the `+` at `s - 1`.
#[inline]
pub(super) fn left_ok_plus(t: &[u8], s: usize) -> bool {
    s >= 1 && !is_alnum(before(t, s, 2)) && !matches!(before(t, s, 2), b'_' | b'@' | b'+')
}

/// Can an identifier end at `e` (`t[e-1]` alphanumeric, `t[e]` not)?
#[inline]
pub(super) fn right_ok(t: &[u8], e: usize, sep: u8) -> bool {
    let b = byte_at(t, e);
    let bb = byte_at(t, e + 1);
    match b {
        b'_' | b'@' => false,
        b'-' | b'.' => !is_alnum(bb),
        b' ' => !(sep == b' ' && is_digit(bb)),
        _ => true,
    }
}

/// Position of the next byte in `[0-9@]` at or after `i`.
///
/// SWAR: 16 bytes per step; per-byte exact masks, so no false hits.
#[inline]
pub(super) fn next_trigger(t: &[u8], mut i: usize) -> Option<usize> {
    while i + 16 <= t.len() {
        let (Some(a), Some(b)) = (load8(t, i), load8(t, i + 8)) else {
            break;
        };
        let ma = trigger_mask(a);
        let mb = trigger_mask(b);
        if ma | mb != 0 {
            let off = if ma != 0 {
                ma.trailing_zeros() / 8
            } else {
                8 + mb.trailing_zeros() / 8
            };
            return Some(i + off as usize);
        }
        i += 16;
    }
    while i < t.len() {
        let b = t[i];
        if b.is_ascii_digit() || b == b'@' {
            return Some(i);
        }
        i += 1;
    }
    None
}

pub(super) const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
pub(super) const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `w` that is an ASCII digit.
#[inline]
pub(super) fn digit_mask(w: u64) -> u64 {
    // Digits become 0..=9; (x & 0x7f) + 0x76 sets bit 7 iff x >= 10.
    let d = w ^ 0x3030_3030_3030_3030;
    !(d | ((d & LO7) + 0x7676_7676_7676_7676)) & HI
}

/// High bit set in each byte of `w` that is an ASCII letter.
#[inline]
pub(super) fn letter_mask(w: u64) -> u64 {
    // Fold case, then 'a'..='z' (0x61..=0x7a) becomes 0..=25.
    let l = (w | 0x2020_2020_2020_2020) ^ 0x6060_6060_6060_6060;
    // l in 1..=26 <=> byte was a letter; exclude 0 (the '`' / '@' fold) and
    // high-bit bytes. Work on 7 bits to keep bytes independent.
    let l7 = l & LO7;
    let ge1 = (l7 + LO7) & HI; // l7 >= 1
    let le26 = !((l7 + 0x6565_6565_6565_6565) & HI) & HI; // l7 <= 26
    ge1 & le26 & !w & HI
}

/// High bit set in each byte of `w` that is an ASCII digit or `@`.
#[inline]
pub(super) fn trigger_mask(w: u64) -> u64 {
    // '@' becomes 0; exact zero-byte test.
    let a = w ^ 0x4040_4040_4040_4040;
    let at = !(((a & LO7) + LO7) | a) & HI;
    digit_mask(w) | at
}

#[inline]
pub(super) fn load8(t: &[u8], i: usize) -> Option<u64> {
    let mut a = [0u8; 8];
    a.copy_from_slice(t.get(i..i + 8)?);
    Some(u64::from_le_bytes(a))
}

/// End of the alphanumeric run that continues at `i`, and whether the part
/// from `i` on holds a letter.
#[inline]
pub(super) fn alnum_run_end(t: &[u8], mut i: usize) -> (usize, bool) {
    let mut letters = false;
    while let Some(w) = load8(t, i) {
        let l = letter_mask(w);
        let non = !(digit_mask(w) | l) & HI;
        if non != 0 {
            let k = non.trailing_zeros();
            letters |= l & ((1u64 << k) - 1) != 0;
            return (i + (k / 8) as usize, letters);
        }
        letters |= l != 0;
        i += 8;
    }
    while i < t.len() && is_alnum(t[i]) {
        letters |= is_alpha(t[i]);
        i += 1;
    }
    (i, letters)
}

/// Fast exits for the digit at `p` that cannot start or join any
/// identifier; returns where to resume. Covers most numbers in ordinary
/// payloads: short isolated digit runs (counters, prices, time parts) and
/// runs hyphen-joined to a preceding digit or mixed token (date parts, UUID
/// groups), which the full path would reject by the boundary rules anyway.
#[inline]
pub(super) fn skip_plain_token(t: &[u8], p: usize) -> Option<usize> {
    let w = load8(t, p)?;
    let non = !digit_mask(w) & HI;
    // Digits from p on within the word (8 when the word is all digits).
    let k = (non.trailing_zeros() / 8) as usize;
    let pb = before(t, p, 1);
    let prev = CLASS[usize::from(pb)];
    let next = CLASS[usize::from(byte_at(t, p + k))];
    // A pure digit run shorter than 8 with neither a letter nor a group
    // separator on either side: too short for a plain identifier and not
    // part of a grouped one. Evaluated without short-circuit branches.
    let isolated = (prev & (C_ALNUM | C_SEP) == 0) & (k < 8) & (next & (C_ALPHA | C_SEP) == 0);
    // A short run after `<digit><space>`, not continued by a hyphen: every
    // space-grouped shape starting here has a digit group with the same
    // separator before it, and a plain identifier needs 9+ digits.
    let after_group = (pb == b' ')
        & is_digit(before(t, p, 2))
        & (k < 8)
        & (next & C_ALPHA == 0)
        & (byte_at(t, p + k) != b'-');
    if isolated | after_group {
        return Some(p + k);
    }
    if pb == b'-' && is_alnum(before(t, p, 2)) {
        // `x-123…`: no identifier starts after a hyphen-joined token (a date part, a UUID
        // group, `ORD-2024`), except a driving licence after a two-letter state code
        // (`HR-06…`) and a long number after a word of letters (`aadhaar-2345…`, see
        // [`word_joined`]).
        if !(is_alpha(before(t, p, 2)) && is_alpha(before(t, p, 3))) {
            return Some(alnum_run_end(t, p + 1).0);
        }
        // Only a run of 8 digits or more, or one that goes on into letters (a GSTIN), can
        // be one after a longer word.
        let dl_head = !is_alnum(before(t, p, 4));
        if !dl_head && ((k < 8 && next & C_ALPHA == 0) || !word_joined(t, p)) {
            return Some(alnum_run_end(t, p + 1).0);
        }
    }
    None
}

/// Start of the alphanumeric run holding the digit at `p`, or `None` when
/// at least [`MAX_BACK`] alphanumerics precede it. Callers guarantee the
/// bytes between the previous token and `p` hold no digit.
#[inline]
pub(super) fn run_start(t: &[u8], p: usize) -> Option<usize> {
    if let Some(w) = p.checked_sub(MAX_BACK).and_then(|q| load8(t, q)) {
        let non = !(digit_mask(w) | letter_mask(w)) & HI;
        if non == 0 {
            return None;
        }
        let last = (63 - non.leading_zeros()) / 8;
        return Some(p - MAX_BACK + last as usize + 1);
    }
    let mut s = p;
    while s > 0 && is_alnum(t[s - 1]) {
        s -= 1;
    }
    (p - s < MAX_BACK).then_some(s)
}

pub(super) fn trim_ascii(t: &[u8]) -> (usize, usize) {
    let mut s = 0;
    let mut e = t.len();
    while s < e && t[s].is_ascii_whitespace() {
        s += 1;
    }
    while e > s && t[e - 1].is_ascii_whitespace() {
        e -= 1;
    }
    (s, e)
}

/// Longest/shortest match of a custom pattern, if bounded.
pub(super) fn pattern_len_bounds(pattern: &str) -> (Option<usize>, Option<usize>) {
    let config = regex_automata::util::syntax::Config::new().utf8(false);
    match regex_automata::util::syntax::parse_with(pattern, &config) {
        Ok(hir) => (
            hir.properties().minimum_len(),
            hir.properties().maximum_len(),
        ),
        Err(_) => (None, None),
    }
}
