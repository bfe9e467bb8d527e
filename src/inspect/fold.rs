//! Characters that stand for ASCII in an identifier, read as that ASCII before the
//! detectors see the text: the detectors group digits with an ASCII space or hyphen and know
//! only ASCII digits, while text copied from documents and typed on Indian keyboards
//! carries others.
//!
//! * Spaces: no-break (U+00A0), the typographic ones (U+2000–U+200A), narrow no-break
//!   (U+202F), medium mathematical (U+205F), ideographic (U+3000): a space.
//! * Dashes: hyphen, non-breaking hyphen, figure dash, en dash (U+2010–U+2013), minus
//!   (U+2212): a hyphen.
//! * Invisible: soft hyphen (U+00AD), zero-width space, non-joiner and joiner
//!   (U+200B–U+200D), word joiner (U+2060), zero-width no-break space (U+FEFF): dropped,
//!   so `2345<U+200B>6789` is read as `23456789`.
//! * Digits of the Indian scripts (Devanagari `०`–`९`, Bengali, Gurmukhi, Gujarati, Odia,
//!   Tamil, Telugu, Kannada, Malayalam) and of Urdu (Extended Arabic-Indic `۰`–`۹`, and the
//!   Arabic-Indic `٠`–`٩`): their ASCII.
//! * Of the fullwidth forms (U+FF01–U+FF5E, as East Asian input methods and some PDF
//!   exports write them), digits, letters and the punctuation of an address or a number
//!   (`＠ ． － ＿ ＋`): their ASCII, so `ＡＢＣＰＥ１２３４Ｆ` is a PAN.
//!
//! The scanner scans a folded copy of a run that has any such character and maps what it
//! finds back to the run's own offsets ([`Folded`]), so the stream's offsets, and so its
//! hold-back and carried tails, do not change. Plain ASCII text costs the scanner one pass
//! of [`may_fold`] when it has a trigger, and nothing more than its trigger check when it
//! has none.

/// What the bytes at the start of a slice are to [`Folded::fold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Not the start of a folded character (a character cut by the end of the text is
    /// not one either).
    Keep,
    /// A folded character of `len` bytes, read as `to` (dropped when `None`).
    Fold { len: usize, to: Option<u8> },
}

/// Second byte of the three-byte UTF-8 form of a digit block of an Indian script
/// (U+0966, U+09E6, …, U+0D66: `E0 A5 A6` … `E0 B5 A6`).
fn indic_digit_block(b: u8) -> bool {
    matches!(
        b,
        0xa5 | 0xa7 | 0xa9 | 0xab | 0xad | 0xaf | 0xb1 | 0xb3 | 0xb5
    )
}

fn look(s: &[u8]) -> Look {
    const SPACE: Look = Look::Fold {
        len: 3,
        to: Some(b' '),
    };
    const HYPHEN: Look = Look::Fold {
        len: 3,
        to: Some(b'-'),
    };
    const DROP: Look = Look::Fold { len: 3, to: None };
    match *s {
        [0xc2, 0xa0, ..] => Look::Fold {
            len: 2,
            to: Some(b' '),
        },
        [0xc2, 0xad, ..] => Look::Fold { len: 2, to: None },
        // Arabic-Indic (U+0660–U+0669) and Extended Arabic-Indic (U+06F0–U+06F9, Urdu's)
        // digits.
        [0xd9, b2 @ 0xa0..=0xa9, ..] => Look::Fold {
            len: 2,
            to: Some(b'0' + (b2 - 0xa0)),
        },
        [0xdb, b2 @ 0xb0..=0xb9, ..] => Look::Fold {
            len: 2,
            to: Some(b'0' + (b2 - 0xb0)),
        },
        [0xe0, b1, b2, ..] if indic_digit_block(b1) && (0xa6..=0xaf).contains(&b2) => Look::Fold {
            len: 3,
            to: Some(b'0' + (b2 - 0xa6)),
        },
        [0xe2, 0x80, 0x80..=0x8a | 0xaf, ..] => SPACE,
        [0xe2, 0x80, 0x8b..=0x8d, ..] => DROP,
        [0xe2, 0x80, 0x90..=0x93, ..] => HYPHEN,
        [0xe2, 0x81, 0x9f, ..] => SPACE,
        [0xe2, 0x81, 0xa0, ..] => DROP,
        [0xe2, 0x88, 0x92, ..] => HYPHEN,
        [0xe3, 0x80, 0x80, ..] => SPACE,
        [0xef, 0xbb, 0xbf, ..] => DROP,
        [0xef, 0xbc, b2 @ 0x90..=0x99, ..] => Look::Fold {
            len: 3,
            to: Some(b'0' + (b2 - 0x90)),
        },
        // Fullwidth `＋ － ．`, `＠`, letters and `＿` (U+FF0B, U+FF0D, U+FF0E, U+FF20–U+FF3A,
        // U+FF3F).
        [0xef, 0xbc, b2 @ (0x8b | 0x8d | 0x8e | 0xa0..=0xba | 0xbf), ..] => Look::Fold {
            len: 3,
            to: Some(b2 - 0x60),
        },
        // Fullwidth small letters (U+FF41–U+FF5A).
        [0xef, 0xbd, b2 @ 0x81..=0x9a, ..] => Look::Fold {
            len: 3,
            to: Some(b2 - 0x20),
        },
        _ => Look::Keep,
    }
}

/// Can `text` hold the start of a folded character, that is, is any of it not ASCII? This
/// runs on every text the scanner scans with a trigger in it: long text by an OR over
/// 64-byte blocks, which the compiler vectorises; a short value (most of them) in words of
/// eight or four bytes, the last one overlapping the others, not a byte loop.
pub(crate) fn may_fold(text: &[u8]) -> bool {
    let mut blocks = text.chunks_exact(64);
    let mut acc = 0u8;
    for block in &mut blocks {
        acc |= block.iter().fold(0, |a, &b| a | b);
    }
    acc >= 0x80 || short_may_fold(blocks.remainder())
}

fn short_may_fold(text: &[u8]) -> bool {
    let n = text.len();
    let word = |i: usize| {
        text.get(i..i + 8)
            .and_then(|w| w.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let half = |i: usize| {
        text.get(i..i + 4)
            .and_then(|w| w.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    };
    if n >= 8 {
        let mut acc = word(n - 8);
        let mut i = 0;
        while i + 8 < n {
            acc |= word(i);
            i += 8;
        }
        acc & 0x8080_8080_8080_8080 != 0
    } else if n >= 4 {
        (half(0) | half(n - 4)) & 0x8080_8080 != 0
    } else {
        text.iter().any(|&b| b >= 0x80)
    }
}

/// `text` folded, and where its bytes came from.
#[derive(Debug, Default)]
pub(crate) struct Folded {
    /// The folded text.
    pub(crate) text: Vec<u8>,
    /// `(folded, original)` offset pairs after each folded character: between two, both
    /// advance together. Eight bytes a folded character: the scanner folds one run or
    /// segment at a time (at most a body frame as it arrived), so at worst (every character
    /// a three-byte digit) this is under three times that text.
    map: Vec<(u32, u32)>,
}

impl Folded {
    /// Folds `text`; false (and nothing to use) when folding changes nothing.
    pub(crate) fn fold(&mut self, text: &[u8]) -> bool {
        self.text.clear();
        self.map.clear();
        if u32::try_from(text.len()).is_err() {
            return false;
        }
        let mut from = 0;
        let mut i = 0;
        while let Some(k) = text
            .get(i..)
            .and_then(|rest| rest.iter().position(|&b| b >= 0xc2))
        {
            i += k;
            match look(text.get(i..).unwrap_or_default()) {
                Look::Keep => i += 1,
                Look::Fold { len, to } => {
                    self.text
                        .extend_from_slice(text.get(from..i).unwrap_or_default());
                    self.text.extend(to);
                    i += len;
                    from = i;
                    // Both below `text.len()`, which fits in a u32.
                    self.map.push((self.text.len() as u32, i as u32));
                }
            }
        }
        if self.map.is_empty() {
            return false;
        }
        self.text
            .extend_from_slice(text.get(from..).unwrap_or_default());
        true
    }

    /// The offset in the original text of offset `at` of the folded one (for the end of a
    /// match, one past a folded character, the end of that character).
    pub(crate) fn original(&self, at: usize) -> usize {
        let k = self.map.partition_point(|&(f, _)| f as usize <= at);
        match k.checked_sub(1).and_then(|k| self.map.get(k)) {
            Some(&(f, o)) => o as usize + (at - f as usize),
            None => at,
        }
    }
}

/// `text` folded into `out`; false, with `out` unusable, when folding changes nothing. For
/// a whole value (a header, a query parameter).
pub(crate) fn fold_value(text: &[u8], out: &mut Folded) -> bool {
    may_fold(text) && out.fold(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn folded(s: &str) -> String {
        let mut out = Folded::default();
        if !fold_value(s.as_bytes(), &mut out) {
            return s.to_owned();
        }
        String::from_utf8(out.text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn characters_are_read_as_the_ascii_they_stand_for() {
        let cases = [
            ("2345\u{a0}6789\u{a0}0124", "2345 6789 0124"),
            ("+91\u{202f}98765\u{2009}43210", "+91 98765 43210"),
            (
                "98765\u{2013}43210 98765\u{2011}43210 1\u{2212}2",
                "98765-43210 98765-43210 1-2",
            ),
            (
                "2345\u{200b}6789\u{200d}0124\u{ad}\u{feff}\u{2060}",
                "234567890124",
            ),
            ("आधार २३४५ ६७८९ ०१२४", "आधार 2345 6789 0124"),
            ("৯৮৭৬৫ ੪੩ ૨૧ ୦ ௧ ౨ ೩ ൪", "98765 43 21 0 1 2 3 4"),
            ("１２３４＠example.in", "1234@example.in"),
            (
                "ＡＢＣＰＥ１２３４Ｆ ａｓｈａ＿ｖ．ｖ＠ｏｋａｘｉｓ ＋９１－１",
                "ABCPE1234F asha_v.v@okaxis +91-1",
            ),
            ("a\u{3000}b\u{205f}c", "a b c"),
            // Urdu's digits, and the Arabic-Indic ones.
            ("آدھار ۲۳۴۵ ۶۷۸۹ ۰۱۲۴", "آدھار 2345 6789 0124"),
            ("٩٨٧٦٥ ٤٣٢١٠", "98765 43210"),
        ];
        for (text, want) in cases {
            assert_eq!(folded(text), want, "{text:?}");
        }
        // Left as they are: letters of the same scripts, quotes, em dash, other symbols.
        for text in ["नमस्ते “quoted” — é ñ ₹ ॐ（）＄ｿ", "plain ascii 123", ""]
        {
            assert_eq!(folded(text), text);
        }
        // Broken UTF-8 is passed through byte for byte.
        let mut out = Folded::default();
        assert!(!fold_value(b"\xc2 \xe2\x80 \xe0\xa5", &mut out));
    }

    #[test]
    fn may_fold_sees_a_non_ascii_byte_anywhere() {
        for n in 0..140 {
            for at in 0..n.max(1) {
                for b in [b'a', 0x7f, 0x80, 0xc2, 0xff] {
                    let mut t = vec![b'x'; n];
                    if let Some(x) = t.get_mut(at) {
                        *x = b;
                    }
                    assert_eq!(may_fold(&t), t.iter().any(|&c| c >= 0x80), "{t:?}");
                }
            }
        }
    }

    proptest! {
        /// Every byte of the folded text maps back to the bytes it came from: a kept byte
        /// to itself, a folded character to its first byte, and the end of the text to
        /// the end.
        #[test]
        fn offsets_map_back_to_the_original(
            pieces in prop::collection::vec(
                prop::sample::select(vec![
                    "2345", "\u{a0}", "\u{202f}", "\u{2013}", "\u{200b}", "\u{ad}", "२३", "০",
                    "１", "＠", "Ｚ", "ｚ", "．", "（", "x", " ", "-", "é", "“", "—", "न", "۲",
                    "٩", "ھ",
                ]),
                0..30,
            ),
        ) {
            let text = pieces.concat();
            let mut f = Folded::default();
            if !f.fold(text.as_bytes()) {
                prop_assert!(!text.chars().any(|c| folded(&c.to_string()) != c.to_string()));
                return Ok(());
            }
            // Char by char: each original character and what it folds to. A match's
            // start maps to its first byte; its span maps to bytes that fold to it.
            let (mut at, mut o) = (0, 0);
            for c in text.chars() {
                let one = folded(&c.to_string());
                if !one.is_empty() {
                    prop_assert_eq!(f.original(at), o);
                    prop_assert_eq!(&f.text[at..at + one.len()], one.as_bytes());
                    let span = &text[f.original(at)..f.original(at + one.len())];
                    prop_assert_eq!(folded(span), one.clone());
                }
                at += one.len();
                o += c.len_utf8();
            }
            prop_assert_eq!(at, f.text.len());
            prop_assert_eq!(f.original(f.text.len()), text.len());
        }
    }
}
