//! Shape checks and check digits: Verhoeff (Aadhaar, VID), Luhn and issuer ranges (cards),
//! PAN holder types, GSTIN's mod-36 check character, IFSC, voter ID, driving licence,
//! e-mail domains, UPI and ABHA handles.

use super::*;

pub(super) const VERHOEFF_D: [[u8; 10]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
];

pub(super) const VERHOEFF_P: [[u8; 10]; 8] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
];

/// Verhoeff over digit values (0..=9) given last digit first.
pub(super) fn verhoeff_valid(rev_digits: impl Iterator<Item = u8>) -> bool {
    let mut c = 0usize;
    for (i, d) in rev_digits.enumerate() {
        let d = usize::from(d.min(9));
        c = usize::from(VERHOEFF_D[c][usize::from(VERHOEFF_P[i % 8][d])]);
    }
    c == 0
}

/// Luhn over digit values (0..=9) given last digit first.
pub(super) fn luhn_valid(rev_digits: impl Iterator<Item = u8>) -> bool {
    let mut sum = 0u32;
    for (i, d) in rev_digits.enumerate() {
        let mut v = u32::from(d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// ASCII digits → Verhoeff check (all bytes are digits).
pub(super) fn verhoeff_digits(d: &[u8]) -> bool {
    verhoeff_valid(d.iter().rev().map(|b| b.wrapping_sub(b'0')))
}

/// Aadhaar / VID rules: first digit 2-9, not a palindrome, Verhoeff.
pub(super) fn aadhaar_like_valid(d: &[u8]) -> bool {
    matches!(d.first(), Some(b'2'..=b'9')) && !d.iter().eq(d.iter().rev()) && verhoeff_digits(d)
}

/// Card: known network prefix for this length, then Luhn.
pub(super) fn card_valid(d: &[u8]) -> bool {
    card_prefix_ok(d) && luhn_valid(d.iter().rev().map(|b| b.wrapping_sub(b'0')))
}

/// Leading `k` digits as a number (`d` holds at least `k` digits).
pub(super) fn prefix_num(d: &[u8], k: usize) -> u32 {
    d.iter()
        .take(k)
        .fold(0u32, |acc, &b| acc * 10 + u32::from(b.wrapping_sub(b'0')))
}

/// IIN prefix table: Visa, Mastercard (incl. 2221-2720), Amex, Discover,
/// Diners, JCB, Maestro (5018, 5020, 5038, 5893, 56-58, 6304, 6759,
/// 6761-6763), RuPay (60, 65, 81, 82, 508, 353, 356). Bare `50` is not a
/// prefix: 14-digit account numbers such as HDFC's `50100…` start with it.
pub(super) fn card_prefix_ok(d: &[u8]) -> bool {
    let len = d.len();
    if !(13..=19).contains(&len) {
        return false;
    }
    let p2 = prefix_num(d, 2);
    let p3 = prefix_num(d, 3);
    let p4 = prefix_num(d, 4);
    let p6 = prefix_num(d, 6);
    match p2 {
        40..=49 => matches!(len, 13 | 16 | 19),
        34 | 37 => len == 15,
        51..=55 => len == 16,
        22..=27 => (2221..=2720).contains(&p4) && len == 16,
        36 | 38 | 39 => len >= 14,
        30 => (300..=305).contains(&p3) && len >= 14,
        35 => ((3528..=3589).contains(&p4) || p3 == 353 || p3 == 356) && len >= 16,
        50 => matches!(p4, 5018 | 5020 | 5038) || (p3 == 508 && len == 16),
        58 if p4 == 5893 => true,
        56..=58 => len >= 16,
        60 => len >= 16,
        62 => (622_126..=622_925).contains(&p6) && len >= 16,
        63 => p4 == 6304,
        64 => p3 >= 644 && len >= 16,
        65 => len >= 16,
        67 => matches!(p4, 6759 | 6761..=6763),
        81 | 82 => len == 16,
        _ => false,
    }
}

/// Letters of `r` (where a letter is present) all upper or all lower case.
pub(super) fn one_case(r: &[u8]) -> bool {
    let upper = r.iter().any(|b| b.is_ascii_uppercase());
    let lower = r.iter().any(|b| b.is_ascii_lowercase());
    !(upper && lower)
}

/// PAN: `AAAPA9999A`, holder type in ABCFGHJLPT, serial not 0000, one case.
pub(super) fn pan_valid(r: &[u8]) -> bool {
    r.len() == 10
        && r[..5].iter().all(|&b| is_alpha(b))
        && r[5..9].iter().all(|&b| is_digit(b))
        && is_alpha(r[9])
        && one_case(r)
        && matches!(
            r[3].to_ascii_uppercase(),
            b'A' | b'B' | b'C' | b'F' | b'G' | b'H' | b'J' | b'L' | b'P' | b'T'
        )
        && &r[5..9] != b"0000"
}

/// Voter ID (EPIC): three letters (one case) and seven digits.
pub(super) fn voter_shape(r: &[u8]) -> bool {
    r.len() == 10
        && r[..3].iter().all(|&b| is_alpha(b))
        && r[3..].iter().all(|&b| is_digit(b))
        && one_case(r)
}

/// IFSC: four letters, `0`, six alphanumerics; one case.
pub(super) fn ifsc_valid(r: &[u8]) -> bool {
    r.len() == 11
        && r[..4].iter().all(|&b| is_alpha(b))
        && r[4] == b'0'
        && r[5..].iter().all(|&b| is_alnum(b))
        && one_case(r)
}

/// GSTIN: state code, PAN, entity char, `Z`, mod-36 check; one case.
pub(super) fn gstin_valid(r: &[u8]) -> bool {
    if r.len() != 15 || !is_digit(r[0]) || !is_digit(r[1]) || !one_case(r) {
        return false;
    }
    let state = prefix_num(r, 2);
    let state_ok = matches!(state, 1..=38 | 97 | 99);
    state_ok
        && pan_valid(&r[2..12])
        && (matches!(r[12], b'1'..=b'9') || is_alpha(r[12]))
        && r[13].eq_ignore_ascii_case(&b'Z')
        && is_alnum(r[14])
        && gstin_check_valid(r)
}

pub(super) fn base36(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' => Some(u32::from(b - b'0')),
        b'A'..=b'Z' => Some(u32::from(b - b'A') + 10),
        b'a'..=b'z' => Some(u32::from(b - b'a') + 10),
        _ => None,
    }
}

/// Expected check character (upper case) for a 14-character GSTIN body.
pub(super) fn gstin_check_char(body: &[u8]) -> Option<u8> {
    const ALPH: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut total = 0u32;
    for (i, &b) in body.iter().enumerate() {
        let p = base36(b)? * if i % 2 == 0 { 1 } else { 2 };
        total += p / 36 + p % 36;
    }
    ALPH.get(((36 - total % 36) % 36) as usize).copied()
}

pub(super) fn gstin_check_valid(r: &[u8]) -> bool {
    r.len() == 15 && gstin_check_char(&r[..14]).is_some_and(|c| c.eq_ignore_ascii_case(&r[14]))
}

/// `SS RR YYYY NNNNNNN` (optional single space/hyphen after SS, RR, YYYY)
/// starting at `i`; returns the end. State code from the table, year 19xx
/// or 20xx.
pub(super) fn parse_dl(t: &[u8], i: usize) -> Option<usize> {
    let a = byte_at(t, i);
    let b = byte_at(t, i + 1);
    if !is_alpha(a) || !is_alpha(b) || a.is_ascii_uppercase() != b.is_ascii_uppercase() {
        return None;
    }
    let code = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
    if !DL_STATES.contains(&code) {
        return None;
    }
    let mut j = dl_sep(t, i + 2);
    j = digits_n(t, j, 2)?;
    j = dl_sep(t, j);
    let y = j;
    j = digits_n(t, j, 4)?;
    if !matches!(
        (byte_at(t, y), byte_at(t, y + 1)),
        (b'1', b'9') | (b'2', b'0')
    ) {
        return None;
    }
    j = dl_sep(t, j);
    j = digits_n(t, j, 7)?;
    (!is_alnum(byte_at(t, j))).then_some(j)
}

pub(super) fn dl_sep(t: &[u8], j: usize) -> usize {
    if matches!(byte_at(t, j), b' ' | b'-') && is_digit(byte_at(t, j + 1)) {
        j + 1
    } else {
        j
    }
}

pub(super) fn digits_n(t: &[u8], j: usize, n: usize) -> Option<usize> {
    (0..n).all(|k| is_digit(byte_at(t, j + k))).then_some(j + n)
}

/// Domain with at least two labels, LDH labels of 1..=63, alphabetic (or
/// punycode) TLD of two or more characters.
pub(super) fn email_domain_valid(d: &[u8]) -> bool {
    let mut labels = 0;
    let mut tld: &[u8] = &[];
    for label in d.split(|&b| b == b'.') {
        if label.is_empty()
            || label.len() > 63
            || label.first() == Some(&b'-')
            || label.last() == Some(&b'-')
        {
            return false;
        }
        labels += 1;
        tld = label;
    }
    labels >= 2
        && tld.len() >= 2
        && (tld.iter().all(|&b| is_alpha(b))
            || tld.len() > 4 && tld[..4].eq_ignore_ascii_case(b"xn--"))
}

/// UPI local part: `[A-Za-z0-9._-]`, two or more, alphanumeric at both ends.
pub(super) fn upi_local_valid(l: &[u8]) -> bool {
    l.len() >= 2
        && l.iter()
            .all(|&b| is_alnum(b) || matches!(b, b'.' | b'_' | b'-'))
        && l.first().is_some_and(|&b| is_alnum(b))
        && l.last().is_some_and(|&b| is_alnum(b))
}

/// ABHA address local part: `[A-Za-z0-9._]`, four or more, not starting
/// with a digit or dot and not ending with a dot; or the 14-digit default.
pub(super) fn abha_local_valid(l: &[u8]) -> bool {
    if l.len() == 14 && l.iter().all(|&b| is_digit(b)) {
        return true;
    }
    l.len() >= 4
        && l.iter().all(|&b| is_alnum(b) || matches!(b, b'.' | b'_'))
        && l.first().is_some_and(|&b| is_alpha(b) || b == b'_')
        && l.last() != Some(&b'.')
}

pub(super) fn handle_in(domain: &[u8], list: &[&str]) -> bool {
    list.iter()
        .any(|h| h.as_bytes().eq_ignore_ascii_case(domain))
}
