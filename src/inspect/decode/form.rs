//! Streaming `application/x-www-form-urlencoded` reading.

use super::*;

/// Streaming `application/x-www-form-urlencoded` normaliser. Values are read as their
/// receiver reads them: percent escapes and `+` undone, then character references, since
/// a rich-text field posts HTML (an editor's `2345&nbsp;6789`, sent as `2345%26nbsp%3B6789`).
#[derive(Default)]
pub(super) struct Form {
    pub(super) in_value: bool,
    /// 0: no escape pending; 1: after `%`; 2: after `%` and one hex digit (`hi`).
    pub(super) pct: u8,
    pub(super) hi: u8,
    pub(super) key: Vec<u8>,
    pub(super) scratch: Vec<u8>,
    /// Character references in the current value (a reference cut between pieces is
    /// carried).
    pub(super) refs: Refs,
}

impl Form {
    pub(super) fn out(&mut self, b: u8) {
        self.scratch.push(b);
        if !self.in_value && self.key.len() < MAX_KEY_LEN {
            self.key.push(b);
        }
    }

    pub(super) fn feed(&mut self, data: &[u8], em: &mut Emitter, sink: &mut Sink<'_>) {
        for &c in data {
            match self.pct {
                1 => {
                    self.pct = 0;
                    if hex_val(c).is_some() {
                        self.hi = c;
                        self.pct = 2;
                        continue;
                    }
                    self.out(b'%');
                }
                2 => {
                    self.pct = 0;
                    if let (Some(h), Some(l)) = (hex_val(self.hi), hex_val(c)) {
                        self.out(h << 4 | l);
                        continue;
                    }
                    self.out(b'%');
                    self.out(self.hi);
                }
                _ => {}
            }
            match c {
                b'&' => self.end_field(em, sink),
                b'=' if !self.in_value => {
                    self.flush(em, sink);
                    em.boundary();
                    self.in_value = true;
                }
                b'+' => self.out(b' '),
                b'%' => self.pct = 1,
                _ => self.out(c),
            }
        }
        self.flush(em, sink);
    }

    pub(super) fn flush(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) {
        if self.scratch.is_empty() {
            return;
        }
        if self.in_value {
            // Through the percent layer again: a value that is a URL (an OAuth
            // `redirect_uri`) carries its own escapes, `asha%40example.in`, under the form's.
            if self.refs.decode(&self.scratch, false) {
                em.value(&self.refs.out, Some(&self.key), sink);
            } else {
                em.value(&self.scratch, Some(&self.key), sink);
            }
        } else {
            em.put(&self.scratch, None, sink);
        }
        self.scratch.clear();
    }

    pub(super) fn end_field(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) {
        self.flush(em, sink);
        if self.in_value {
            if self.refs.finish() {
                em.value(&self.refs.out, Some(&self.key), sink);
            }
            em.end_value(Some(&self.key), sink);
        } else {
            em.boundary();
        }
        self.key.clear();
        self.in_value = false;
    }

    pub(super) fn finish(&mut self, em: &mut Emitter, sink: &mut Sink<'_>) {
        match self.pct {
            1 => self.out(b'%'),
            2 => {
                self.out(b'%');
                self.out(self.hi);
            }
            _ => {}
        }
        self.pct = 0;
        self.end_field(em, sink);
    }
}
