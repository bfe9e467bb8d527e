//! The [`Emitter`]: writes values into the normalised stream with separators, and reads
//! the base64, hex and percent-escaped runs inside them as it goes.

use super::*;

/// Builds the normalised stream: buffers bytes of one key, inserts separators, scans value
/// text for base64 and keeps the stream offset.
#[derive(Default)]
pub(super) struct Emitter {
    pub(super) buf: Vec<u8>,
    pub(super) key: Vec<u8>,
    pub(super) keyed: bool,
    pub(super) emitted: u64,
    pub(super) need_sep: bool,
    pub(super) dirty: bool,
    pub(super) b64: B64,
    pub(super) pct: Pct,
    pub(super) wrap: Wrap,
    /// The reading of the text decoded from the open base64 or hex run (see
    /// [`Emitter::put_decoded`]); always `None` in a nested emitter.
    pub(super) inner: Option<Box<Normaliser>>,
    /// This emitter reads decoded text already: what it decodes goes in as it is.
    pub(super) nested: bool,
    /// Bytes decompressed from the gzip and zip files read into this stream so far (see
    /// [`Archive`]): what the body's limits count for all of them together.
    pub(super) unpacked: u64,
    /// A base64 or hex run that encodes a gzip or zip file is opened (the body's own
    /// stream; not inside an archive, nor in text decoded already).
    pub(super) archives: bool,
    /// Why the body cannot be read, found where no error can be returned (a file in a
    /// base64 run that is corrupt, cut short, or past the limits): the pipeline fails with
    /// it.
    pub(super) fault: Option<DecodeError>,
}

impl Emitter {
    pub(super) fn same_key(&self, key: Option<&[u8]>) -> bool {
        match key {
            None => !self.keyed,
            Some(k) => self.keyed && self.key == k,
        }
    }

    /// Hands the buffered text to the sink; `run_ends` when the next text has another key.
    pub(super) fn flush(&mut self, run_ends: bool, sink: &mut Sink<'_>) {
        if self.buf.is_empty() {
            return;
        }
        sink(
            Segment {
                text: &self.buf,
                key: if self.keyed { Some(&self.key) } else { None },
                offset: self.emitted,
            },
            run_ends,
        );
        self.emitted += self.buf.len() as u64;
        self.buf.clear();
    }

    pub(super) fn raw(&mut self, bytes: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if bytes.is_empty() {
            return;
        }
        if !self.buf.is_empty() && !self.same_key(key) {
            self.flush(true, sink);
        }
        if self.buf.is_empty() {
            if bytes.len() >= FLUSH_AT {
                sink(
                    Segment {
                        text: bytes,
                        key,
                        offset: self.emitted,
                    },
                    false,
                );
                self.emitted += bytes.len() as u64;
                return;
            }
            self.keyed = key.is_some();
            self.key.clear();
            self.key.extend_from_slice(key.unwrap_or(&[]));
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= FLUSH_AT {
            self.flush(false, sink);
        }
    }

    /// Appends `bytes` verbatim (no base64 scan), after a pending separator.
    pub(super) fn put(&mut self, bytes: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if bytes.is_empty() {
            return;
        }
        if self.need_sep {
            self.need_sep = false;
            self.raw(&[SEPARATOR], None, sink);
        }
        self.raw(bytes, key, sink);
        self.dirty = true;
    }

    /// [`Emitter::put`] for the last bytes of a value, which the caller ends next (with
    /// [`Emitter::end_value`] or [`Emitter::boundary`]): whatever follows starts with a
    /// separator. Under a key, that ends the run, so when nothing of the run is buffered
    /// the bytes go to the sink as they are, as a whole run, without a copy.
    pub(super) fn put_last(&mut self, bytes: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if bytes.is_empty() {
            return;
        }
        if self.need_sep {
            self.need_sep = false;
            self.raw(&[SEPARATOR], None, sink);
        }
        if key.is_some() && (self.buf.is_empty() || !self.same_key(key)) {
            self.flush(true, sink);
            sink(
                Segment {
                    text: bytes,
                    key,
                    offset: self.emitted,
                },
                true,
            );
            self.emitted += bytes.len() as u64;
        } else {
            self.raw(bytes, key, sink);
        }
        self.dirty = true;
    }

    /// Marks the end of a value: the next non-empty output is preceded by a separator.
    pub(super) fn boundary(&mut self) {
        if self.dirty {
            self.dirty = false;
            self.need_sep = true;
        }
    }

    /// [`Emitter::text_to`] of a whole piece, after joining wrapped base64 lines: what the
    /// skipping is tested against [`Emitter::text_bytewise`] through.
    #[cfg(test)]
    pub(super) fn text(&mut self, bytes: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        self.joined(bytes, false, |em, text| em.text_to(text, key, false, sink));
    }

    /// Calls `f` with `bytes`, or with their text once wrapped base64 lines in it are
    /// joined (see [`Wrap`]).
    pub(super) fn joined(&mut self, bytes: &[u8], last: bool, f: impl FnOnce(&mut Self, &[u8])) {
        if self.wrap.join(bytes, last) {
            let joined = std::mem::take(&mut self.wrap.out);
            f(self, &joined);
            self.wrap.out = joined;
        } else {
            f(self, bytes);
        }
    }

    /// Appends value text, scanning it for base64 runs.
    ///
    /// Only runs of at least [`BASE64_MIN_RUN`] bytes can be decoded, and every run ends at
    /// a byte outside the base64 alphabet (a *stop*, after which no run is open). So where
    /// no run is open, a stretch that reaches a stop within `BASE64_MIN_RUN` bytes holds no
    /// candidate and is skipped without looking at each byte: if the byte
    /// `BASE64_MIN_RUN - 1` ahead is a stop, nothing before it can start a long enough run;
    /// otherwise the scan resumes after the last stop before it. Everything else (an open
    /// run, a window without a stop, the tail of `bytes`) goes byte by byte.
    ///
    /// Run bytes are not copied one by one either: the run is tracked by counters and its
    /// start in `bytes` (`run_from`), and copied into `b64.run` only when it may be decoded
    /// (it ends here as a candidate) or when it goes on past the end of `bytes`.
    pub(super) fn text_to(
        &mut self,
        bytes: &[u8],
        key: Option<&[u8]>,
        last: bool,
        sink: &mut Sink<'_>,
    ) {
        if last && self.b64.len == 0 && bytes.len() < BASE64_MIN_RUN {
            // The whole rest of a value, too short to hold a decodable run, with no run
            // open before it: the loop below would pass it to `put_last` unchanged and
            // leave at most a short run for `end_value` to drop. Most JSON values are
            // like this (`"paid"`, `"INR"`, a city).
            self.put_last(bytes, key, sink);
            return;
        }
        let class = |c: u8| B64_CLASS[usize::from(c)];
        let mut start = 0;
        // Where the current run's bytes begin in `bytes` (0 if it began in an earlier call).
        let mut run_from = 0;
        let mut i = 0;
        loop {
            // Byte by byte, up to and including the next stop.
            while let Some(&c) = bytes.get(i) {
                let cls = class(c);
                if self.b64.streaming && !self.b64.ended_by(cls) {
                    // The run's characters become its decoded text, not raw text.
                    i = self.stream_run(bytes, i, key, sink);
                    start = i;
                    run_from = i;
                    continue;
                }
                if cls == B64_ALNUM && self.b64.pad == 0 {
                    // The common case: a run starts or goes on. Take all of its alphanumeric
                    // bytes at once (one tight loop, no per-byte state update), stopping
                    // where the run reaches a block, to start decoding it block by block.
                    if self.b64.len == 0 {
                        run_from = i;
                    }
                    let rest = bytes.get(i..).unwrap_or(&[]);
                    let mut n = alnum_prefix(rest);
                    if self.b64.len < BASE64_MAX_RUN {
                        n = n.min(BASE64_MAX_RUN - self.b64.len);
                    }
                    self.b64.len += n;
                    i += n;
                    if self.b64.len == BASE64_MAX_RUN {
                        let raw = bytes.get(start..i).unwrap_or(&[]);
                        if self.start_stream(raw, bytes.get(run_from..i).unwrap_or(&[]), key, sink)
                        {
                            start = i;
                            run_from = i;
                        }
                    }
                    continue;
                }
                let ends = if cls == B64_NONE {
                    self.b64.len > 0
                } else {
                    cls != B64_PAD && self.b64.pad > 0
                };
                if ends {
                    if self.b64.streaming {
                        // Its characters were all taken by `stream_run`: `start == i`.
                        self.close_run(key, sink);
                    } else if self.b64.candidate() {
                        self.b64.keep(bytes.get(run_from..i).unwrap_or(&[]));
                        self.put(bytes.get(start..i).unwrap_or(&[]), key, sink);
                        start = i;
                        self.close_run(key, sink);
                    }
                    self.b64.reset();
                }
                i += 1;
                if cls == B64_NONE {
                    break;
                }
                if self.b64.len == 0 {
                    run_from = i - 1;
                }
                self.b64.count(cls);
                if self.b64.len == BASE64_MAX_RUN {
                    let raw = bytes.get(start..i).unwrap_or(&[]);
                    if self.start_stream(raw, bytes.get(run_from..i).unwrap_or(&[]), key, sink) {
                        start = i;
                        run_from = i;
                    }
                }
            }
            // Just after a stop (no run open): skip short stretches.
            while let Some(&c) = bytes.get(i + BASE64_MIN_RUN - 1) {
                if class(c) == B64_NONE {
                    i += BASE64_MIN_RUN;
                    continue;
                }
                let window = bytes.get(i..i + BASE64_MIN_RUN - 1).unwrap_or(&[]);
                match window.iter().rposition(|&c| class(c) == B64_NONE) {
                    Some(k) => i += k + 1,
                    None => break,
                }
            }
            if i >= bytes.len() {
                break;
            }
        }
        if self.b64.len > 0 {
            self.b64.keep(bytes.get(run_from..).unwrap_or(&[]));
        }
        let rest = bytes.get(start..).unwrap_or(&[]);
        if last {
            self.put_last(rest, key, sink);
        } else {
            self.put(rest, key, sink);
        }
    }

    /// The plain byte-by-byte form of [`Emitter::text_to`], kept as the reference its
    /// skipping is tested against.
    #[cfg(test)]
    pub(super) fn text_bytewise(&mut self, bytes: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        self.joined(bytes, false, |em, text| {
            em.text_bytewise_joined(text, key, sink);
        });
    }

    #[cfg(test)]
    pub(super) fn text_bytewise_joined(
        &mut self,
        bytes: &[u8],
        key: Option<&[u8]>,
        sink: &mut Sink<'_>,
    ) {
        let mut start = 0;
        for (i, &c) in bytes.iter().enumerate() {
            let cls = B64_CLASS[usize::from(c)];
            if self.b64.streaming && !self.b64.ended_by(cls) {
                self.b64.count(cls);
                self.b64.run.push(c);
                start = i + 1;
                if self.b64.run.len() == BASE64_MAX_RUN {
                    self.stream_block(key, sink);
                }
                continue;
            }
            let ends = if cls == B64_NONE {
                self.b64.len > 0
            } else {
                cls != B64_PAD && self.b64.pad > 0
            };
            if ends {
                if self.b64.streaming {
                    self.close_run(key, sink);
                } else if self.b64.candidate() {
                    self.put(bytes.get(start..i).unwrap_or(&[]), key, sink);
                    start = i;
                    self.close_run(key, sink);
                }
                self.b64.reset();
            }
            if cls != B64_NONE {
                self.b64.count(cls);
                self.b64.keep(&[c]);
                if self.b64.len == BASE64_MAX_RUN {
                    let raw = bytes.get(start..=i).unwrap_or(&[]);
                    if self.start_stream(raw, &[], key, sink) {
                        start = i + 1;
                    }
                }
            }
        }
        self.put(bytes.get(start..).unwrap_or(&[]), key, sink);
    }

    /// A run has just reached [`BASE64_MAX_RUN`] characters (the last of them in `run_part`,
    /// the bytes of this call not yet kept): if they decode to text, emits the text before
    /// them (`raw`, which ends with them), then their decoded text, and goes on decoding the
    /// run block by block. Otherwise the run is too long to be decoded: false, no change.
    ///
    /// Decoding as the run goes, rather than when it ends, keeps the characters that encode
    /// an identifier within a block of where it is found, so inside the hold-back window of
    /// a streamed body however long the run.
    pub(super) fn start_stream(
        &mut self,
        raw: &[u8],
        run_part: &[u8],
        key: Option<&[u8]>,
        sink: &mut Sink<'_>,
    ) -> bool {
        if self.b64.pad > 0 || !self.b64.candidate() {
            return false;
        }
        self.b64.keep(run_part);
        let archive = self.archives && self.b64.opens_archive();
        if !(archive || self.b64.starts_as_text()) || !self.b64.decode(true, self.archives) {
            return false;
        }
        self.put(raw, key, sink);
        let decoded = std::mem::take(&mut self.b64.decoded);
        self.boundary();
        self.put_decoded(&decoded, key, true, false, sink);
        self.b64.decoded = decoded;
        self.b64.run.clear();
        self.b64.streaming = true;
        true
    }

    /// Takes the characters of a streaming run from `bytes[i..]` up to its end or the end of
    /// `bytes`, decoding each block as it fills; returns where it stopped. A block that is
    /// not text ends the streaming there (see [`Emitter::stream_block`]).
    pub(super) fn stream_run(
        &mut self,
        bytes: &[u8],
        mut i: usize,
        key: Option<&[u8]>,
        sink: &mut Sink<'_>,
    ) -> usize {
        while let Some(&c) = bytes.get(i) {
            let cls = B64_CLASS[usize::from(c)];
            if self.b64.ended_by(cls) {
                break;
            }
            let n = if cls == B64_ALNUM {
                let room = BASE64_MAX_RUN - self.b64.run.len();
                let n = alnum_prefix(bytes.get(i..).unwrap_or(&[])).min(room);
                self.b64.len += n;
                n
            } else {
                self.b64.count(cls);
                1
            };
            self.b64
                .run
                .extend_from_slice(bytes.get(i..i + n).unwrap_or(&[]));
            i += n;
            if self.b64.run.len() == BASE64_MAX_RUN && !self.stream_block(key, sink) {
                break;
            }
        }
        i
    }

    /// Emits the decoded text of a streaming run's full block. A block that does not decode
    /// to text is emitted raw, after a separator, and so is the rest of the run (which is
    /// then too long to be decoded): false.
    pub(super) fn stream_block(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) -> bool {
        let ok = self.b64.decode_block();
        let out = std::mem::take(if ok {
            &mut self.b64.decoded
        } else {
            &mut self.b64.run
        });
        if ok {
            self.put_decoded(&out, key, false, false, sink);
        } else {
            self.end_decoded(key, sink);
            self.b64.streaming = false;
            self.boundary();
            self.put(&out, key, sink);
        }
        if ok {
            self.b64.decoded = out;
            self.b64.run.clear();
        } else {
            self.b64.run = out;
        }
        ok
    }

    /// Puts text decoded from a base64 or hex run into the stream; when it is a MIME
    /// message (a mail API's base64url `raw` field), read once more by the message's own
    /// headers, so a text part that is base64 or quoted-printable inside is read whole.
    /// Other decoded text goes in as it is. `first` for the run's first decoded piece,
    /// `last` for its last. The reading goes one level deep: what a nested emitter
    /// decodes goes in as it is.
    #[inline(never)]
    pub(super) fn put_decoded(
        &mut self,
        text: &[u8],
        key: Option<&[u8]>,
        first: bool,
        last: bool,
        sink: &mut Sink<'_>,
    ) {
        if self.nested {
            self.put(text, key, sink);
            return;
        }
        if first {
            self.inner = Normaliser::nested(text, self.b64.archive).map(Box::new);
        }
        let Some(mut inner) = self.inner.take() else {
            self.put(text, key, sink);
            return;
        };
        let mut r = self.unpack_through(&mut inner, key, sink, |n, out| n.feed(text, out));
        if r.is_ok() && last {
            r = self.unpack_through(&mut inner, key, sink, |n, out| n.finish(out));
        }
        match r {
            Err(e) if matches!(inner.mode, Mode::Archive(_)) => {
                self.fault.get_or_insert(e);
            }
            // Only JSON nested past the depth limit fails; the text goes in as it is.
            Err(_) => self.put(text, key, sink),
            Ok(()) if !last => self.inner = Some(inner),
            Ok(()) => {}
        }
    }

    /// [`Emitter::through`], with a file's reading counting its bytes against this
    /// stream's budget (see [`Emitter::unpacked`]).
    fn unpack_through(
        &mut self,
        inner: &mut Normaliser,
        key: Option<&[u8]>,
        sink: &mut Sink<'_>,
        f: impl FnOnce(&mut Normaliser, &mut Sink<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        inner.em.unpacked = self.unpacked;
        let r = self.through(inner, key, sink, f);
        self.unpacked = inner.em.unpacked;
        r
    }

    /// Ends the reading of a streaming run's decoded text.
    #[inline(never)]
    pub(super) fn end_decoded(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if let Some(mut inner) = self.inner.take() {
            let r = self.unpack_through(&mut inner, key, sink, |n, out| n.finish(out));
            // JSON too deep for its reading was put in as text already; a file cut short
            // leaves the body unread.
            if let (Err(e), Mode::Archive(_)) = (r, &inner.mode) {
                self.fault.get_or_insert(e);
            }
        }
    }

    /// Runs `f` on a nested reading, putting what it emits into this stream (under `key`
    /// where it has none of its own), and flushes it, so decoded text is not held longer
    /// than the run that encodes it.
    pub(super) fn through(
        &mut self,
        inner: &mut Normaliser,
        key: Option<&[u8]>,
        sink: &mut Sink<'_>,
        f: impl FnOnce(&mut Normaliser, &mut Sink<'_>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let mut out = |seg: Segment<'_>, _run_ends: bool| {
            self.put(seg.text, seg.key.or(key), sink);
        };
        let r = f(inner, &mut out);
        inner.em.flush(false, &mut out);
        r
    }

    pub(super) fn close_run(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if self.b64.streaming {
            // The last, partial block: decoded, or raw after a separator if it is not base64.
            if !self.b64.run.is_empty() {
                self.stream_block(key, sink);
            }
            self.end_decoded(key, sink);
            self.boundary();
        } else if self.b64.candidate() && self.b64.decode(false, self.archives) {
            let decoded = std::mem::take(&mut self.b64.decoded);
            self.boundary();
            self.put_decoded(&decoded, key, true, true, sink);
            self.boundary();
            self.b64.decoded = decoded;
        }
        self.b64.reset();
    }

    /// Ends a piece of value text: closes its base64 run and its percent run, then a
    /// boundary.
    pub(super) fn end_value(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if let Some(held) = self.wrap.release() {
            self.value_text(&held, key, false, true, sink);
        }
        if self.b64.len > 0 {
            self.close_run(key, sink);
        }
        if self.pct.active {
            if self.pct.streaming {
                self.end_pct_stream(key, sink);
            } else {
                self.insert_pct(key, sink);
            }
            self.pct.reset();
        } else {
            self.pct.tail.clear();
        }
        self.boundary();
    }

    /// Appends value text that may hold percent escapes (JSON strings, text bodies,
    /// multipart text, form values once the form's own escapes are undone):
    /// [`Emitter::text_to`], and for
    /// each run of URL text holding an escape, the decoded text of its pieces (between URL
    /// delimiters) that decoding changes, inserted after the run's stop, between
    /// separators, with the same key. So `asha%40example.in` in a callback
    /// URL is read as `asha@example.in` too, whether or not the receiver decodes it, and
    /// the raw bytes are still scanned as they are.
    ///
    /// The decoded text begins after the last URL delimiter within [`PCT_LOOKBACK`] bytes
    /// before the run's first `%`. A run that reaches [`PCT_MAX_RUN`] from there is decoded
    /// as it streams: the decoded text so far is inserted, and the rest of the run goes
    /// into the stream decoded only, continuing that text (as long base64 runs do), so an
    /// identifier in it is found within a block of its bytes, inside the hold-back window.
    pub(super) fn value(&mut self, bytes: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        self.value_to(bytes, key, false, true, sink);
    }

    /// [`Emitter::value`] for text known to hold no `%` unless `maybe_pct`, and with `last`
    /// for the last text of a value (see [`Emitter::put_last`]).
    #[inline]
    pub(super) fn value_to(
        &mut self,
        bytes: &[u8],
        key: Option<&[u8]>,
        last: bool,
        maybe_pct: bool,
        sink: &mut Sink<'_>,
    ) {
        self.joined(bytes, last, |em, text| {
            em.value_text(text, key, last, maybe_pct, sink);
        });
    }

    /// [`Emitter::value_to`] once wrapped base64 lines are joined.
    #[inline]
    pub(super) fn value_text(
        &mut self,
        bytes: &[u8],
        key: Option<&[u8]>,
        last: bool,
        maybe_pct: bool,
        sink: &mut Sink<'_>,
    ) {
        if self.pct.active || (maybe_pct && memchr::memchr(b'%', bytes).is_some()) {
            self.percent_runs(bytes, key, last, sink);
        } else {
            // Nearly all value text.
            if !last {
                self.pct.keep_tail(bytes);
            }
            self.text_to(bytes, key, last, sink);
        }
    }

    /// [`Emitter::value_to`] for text with a `%` or in an open percent run.
    #[inline(never)]
    pub(super) fn percent_runs(
        &mut self,
        bytes: &[u8],
        key: Option<&[u8]>,
        last: bool,
        sink: &mut Sink<'_>,
    ) {
        // `bytes[..from]` went into the stream (raw) or to the run's decoder; `bytes[..i]`
        // was looked at.
        let mut from = 0;
        let mut i = 0;
        while i < bytes.len() {
            if !self.pct.active {
                let Some(k) = memchr::memchr(b'%', bytes.get(i..).unwrap_or(&[])) else {
                    break;
                };
                self.pct.begin(bytes, i, i + k);
                i += k;
            }
            let rest = bytes.get(i..).unwrap_or(&[]);
            let end = rest
                .iter()
                .position(|&c| pct_stop(c))
                .map_or(bytes.len(), |k| i + k);
            if !self.pct.streaming {
                let take = (end - i).min(PCT_MAX_RUN.saturating_sub(self.pct.run.len()));
                self.pct
                    .run
                    .extend_from_slice(bytes.get(i..i + take).unwrap_or(&[]));
                i += take;
                if self.pct.run.len() >= PCT_MAX_RUN {
                    self.text_to(bytes.get(from..i).unwrap_or(&[]), key, false, sink);
                    from = i;
                    self.start_pct_stream(key, sink);
                }
            }
            if self.pct.streaming {
                self.pct_stream(bytes.get(i..end).unwrap_or(&[]), key, sink);
                from = end;
            }
            if end == bytes.len() {
                break;
            }
            // The run's stop: the stop goes into the stream raw, after the run's text.
            if self.pct.streaming {
                self.end_pct_stream(key, sink);
            } else {
                self.text_to(bytes.get(from..=end).unwrap_or(&[]), key, false, sink);
                from = end + 1;
                self.insert_pct(key, sink);
            }
            self.pct.reset();
            i = end + 1;
        }
        if !self.pct.active && !last {
            self.pct.keep_tail(bytes);
        }
        self.text_to(bytes.get(from..).unwrap_or(&[]), key, last, sink);
    }

    /// Inserts the decoded text of the percent run that just ended, if it held an escape.
    /// Its raw bytes are in the stream, and their base64 run was closed by the run's stop
    /// (or by [`Emitter::end_value`]).
    pub(super) fn insert_pct(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if !self.pct.decode_pieces() {
            return;
        }
        self.boundary();
        self.pct_text(key, sink);
        if self.b64.len > 0 {
            self.close_run(key, sink);
        }
        self.boundary();
    }

    /// A percent run has reached [`PCT_MAX_RUN`]: ends the raw text there (and its base64
    /// run, as the `%` run's stop would), then starts its decoded text.
    pub(super) fn start_pct_stream(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if self.b64.len > 0 {
            self.close_run(key, sink);
        }
        // The pieces before the run's last delimiter are in the stream raw, and whole: as
        // when a run ends, only those that decoding changes are inserted (the others would
        // be counted twice). The piece in progress goes on decoded, into the rest of the run.
        let cut = self
            .pct
            .run
            .iter()
            .rposition(|&c| pct_delimiter(c))
            .map_or(0, |k| k + 1);
        let rest = self.pct.run.split_off(cut);
        if self.pct.decode_pieces() {
            self.boundary();
            self.pct_text(key, sink);
            if self.b64.len > 0 {
                self.close_run(key, sink);
            }
        }
        self.boundary();
        self.pct.run = rest;
        self.pct.decode_run();
        self.pct_text(key, sink);
        self.pct.streaming = true;
    }

    /// Decodes more bytes of a streaming percent run into the stream.
    pub(super) fn pct_stream(&mut self, raw: &[u8], key: Option<&[u8]>, sink: &mut Sink<'_>) {
        if raw.is_empty() {
            return;
        }
        let mut run = std::mem::take(&mut self.pct.run);
        run.clear();
        run.extend_from_slice(&self.pct.carry);
        run.extend_from_slice(raw);
        self.pct.run = run;
        self.pct.decode_run();
        self.pct_text(key, sink);
    }

    /// Ends a streaming percent run: an escape cut by its end is text as it is.
    pub(super) fn end_pct_stream(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) {
        let carry = std::mem::take(&mut self.pct.carry);
        self.text_to(&carry, key, false, sink);
        self.pct.carry = carry;
        if self.b64.len > 0 {
            self.close_run(key, sink);
        }
        self.boundary();
    }

    /// Appends `pct.decoded` as value text (its base64 runs decoded too).
    pub(super) fn pct_text(&mut self, key: Option<&[u8]>, sink: &mut Sink<'_>) {
        let decoded = std::mem::take(&mut self.pct.decoded);
        self.text_to(&decoded, key, false, sink);
        self.pct.decoded = decoded;
    }
}
