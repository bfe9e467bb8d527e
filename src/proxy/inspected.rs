//! Request bodies under inspection. Small bodies (and encoded ones, up to a limit) are read
//! whole and judged before anything is sent; larger identity bodies stream through
//! `InspectedBody`, which holds back a window of raw bytes and, on a finding the policy
//! forbids, fails the body so the upstream request is aborted, never completed.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use super::{Body, BoxError, Snapshot};
use crate::geo::Country;
use crate::inspect::{self, BodyScan, Inspector, Report};
use crate::policy::{self, DataView, Decision, Facts, Outcome, Reason, Verdict};

/// Decides again as data is found: everything `decide` needs, owned.
pub struct Judge {
    /// Snapshot the request started with (invariant I6).
    pub snapshot: Arc<Snapshot>,
    /// Destination host.
    pub host: Arc<str>,
    /// Dialled address.
    pub addr: IpAddr,
    /// Its country.
    pub country: Option<Country>,
    /// Method.
    pub method: http::Method,
    /// Path and query (the policy sees the path).
    pub path: Option<http::uri::PathAndQuery>,
    /// Client groups.
    pub groups: Vec<Arc<str>>,
}

impl Judge {
    /// The decision for what is known about the data.
    pub fn decide(&self, data: DataView<'_>) -> Decision {
        let facts = Facts {
            host: &self.host,
            addr: self.addr,
            country: self.country,
            method: self.method.as_str(),
            path: self.path.as_ref().map_or("", |p| p.path()),
            client_groups: &self.groups,
            data,
        };
        match policy::decide(&self.snapshot.policy, &facts) {
            Outcome::Decided(d) => d,
            // Cannot happen with data known; fail closed if it ever does.
            Outcome::NeedsInspection => Decision {
                verdict: Verdict::Deny,
                reason: Reason::Uninspectable,
                rule: policy::shared_str!("uninspectable"),
                message: policy::shared_str!("the request could not be judged"),
                citation: None,
                audit: false,
            },
        }
    }
}

/// The outcome of a streamed body, read by the request path after the upstream call.
#[derive(Default)]
pub struct Verdicts {
    /// Set when the body was stopped: the decision and the classes found.
    pub blocked: Option<(Decision, Found)>,
    /// Bytes of the body released upstream before it was stopped.
    pub released: u64,
    /// Set when the whole body was judged and the flow passes but must be recorded
    /// (report mode, audited exceptions): the final decision and what was found.
    pub passed: Option<(Decision, Found)>,
}

/// Shared slot between the streaming body and the request path.
pub type VerdictSlot = Arc<Mutex<Verdicts>>;

/// How the body will be sent.
pub enum Prepared {
    /// Read and judged whole: send these bytes.
    Whole(Body, Decision, Found),
    /// Streams through the inspector; the slot tells whether it was stopped, and the
    /// receiver fires once the whole body has been judged and passed.
    Streaming(
        Body,
        Decision,
        VerdictSlot,
        Option<tokio::sync::oneshot::Receiver<()>>,
    ),
    /// Blocked before anything was sent.
    Blocked(Decision, Found),
}

/// Errors reading the client's body.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The client stopped sending.
    #[error("client body read timed out after {0:?}")]
    Timeout(Duration),
    /// The client connection failed.
    #[error("client body: {0}")]
    Client(BoxError),
}

/// Body frames read so far: large frames kept as they came, small ones gathered into one
/// buffer (so a body sent in many tiny chunks holds a few handles, not one per chunk).
#[derive(Default)]
struct Frames {
    parts: Vec<Bytes>,
    small: BytesMut,
    len: usize,
}

impl Frames {
    /// Frames at least this large are kept without copying.
    const KEEP: usize = 4096;

    fn push(&mut self, b: Bytes) {
        self.len += b.len();
        if b.len() < Self::KEEP {
            self.small.extend_from_slice(&b);
            return;
        }
        if !self.small.is_empty() {
            self.parts.push(self.small.split().freeze());
        }
        self.parts.push(b);
    }
    fn len(&self) -> usize {
        self.len
    }
    /// The frames in order, without joining them: what a streamed body holds back.
    fn into_parts(mut self) -> Vec<Bytes> {
        if !self.small.is_empty() {
            self.parts.push(self.small.split().freeze());
        }
        self.parts
    }

    /// The body to send: the frames in order, then the trailers.
    fn into_body(self, trailers: Option<HeaderMap>) -> Held {
        let len = self.len as u64;
        Held {
            parts: self.into_parts().into(),
            len,
            trailers,
        }
    }
}

/// A body read whole, sent as its frames came. Joining them into one buffer first copied
/// every inspected body once more (a 64 KiB POST's largest single cost in user space
/// after the scan); hyper writes the frames with one vectored write anyway.
struct Held {
    parts: VecDeque<Bytes>,
    len: u64,
    trailers: Option<HeaderMap>,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(b) = this.parts.pop_front() {
            this.len = this.len.saturating_sub(b.len() as u64);
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Exact, as for any body read whole, unless trailers follow: those need chunked
        // framing, which a known length would rule out.
        match self.trailers {
            None => SizeHint::with_exact(self.len),
            Some(_) => SizeHint::default(),
        }
    }
}

/// The decision for a request with no body: what the head showed is all there is.
pub fn decide_bodiless(judge: &Judge, inspector: &Inspector, report: &Report) -> Prepared {
    let d = judge.decide(DataView::Seen(report.seen()));
    finish_whole(
        d,
        found(report, inspector.detector()),
        Frames::default().into_body(None),
    )
}

/// Reads, inspects and judges the body per the streaming rule (invariant I1).
pub async fn prepare<B>(
    inspector: &Arc<Inspector>,
    judge: Arc<Judge>,
    headers: &HeaderMap,
    mut body: B,
    mut report: Report,
    read_timeout: Duration,
    inspected: prometheus::IntCounter,
) -> Result<Prepared, ReadError>
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let names = |r: &Report| found(r, inspector.detector());
    if body.is_end_stream() {
        return Ok(decide_bodiless(&judge, inspector, &report));
    }
    let encoded = inspect::is_encoded(headers);
    let limit = if encoded {
        inspector.max_encoded_body
    } else {
        inspector.buffer_limit
    };
    // Why the body cannot be inspected, once that is known: shown with the verdict.
    let mut why = None;
    let mut scan = match inspector.body(headers) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!(error = %e, "body cannot be decoded for inspection");
            why = Some(e.to_string());
            None
        }
    };
    // The frames as they came: joined once at the end (no copy for a one-frame body), not
    // grown frame by frame (each growth copied everything read so far).
    let mut buf = Frames::default();
    let mut trailers = None;
    let mut ended = false;
    while buf.len() <= limit {
        let frame = match tokio::time::timeout(read_timeout, body.frame()).await {
            Err(_) => return Err(ReadError::Timeout(read_timeout)),
            Ok(None) => {
                ended = true;
                break;
            }
            Ok(Some(f)) => f.map_err(|e| ReadError::Client(e.into()))?,
        };
        match frame.into_data() {
            Ok(data) => {
                inspected.inc_by(data.len() as u64);
                if let Some(s) = scan.as_mut() {
                    if let Err(e) = s.feed(&data, &mut report) {
                        tracing::debug!(error = %e, "body is uninspectable");
                        why = Some(e.to_string());
                        scan = None;
                    }
                }
                buf.push(data);
            }
            Err(f) => {
                if let Ok(t) = f.into_trailers() {
                    inspector.inspect_trailers(&t, &mut report);
                    trailers = Some(t);
                }
            }
        }
    }
    if ended {
        if let Some(Err(e)) = scan.as_mut().map(|s| s.finish(&mut report)) {
            why = Some(e.to_string());
        }
        let d = match why {
            None => judge.decide(DataView::Seen(report.seen())),
            Some(why) => uninspectable(&judge, &report, &why),
        };
        return Ok(finish_whole(d, names(&report), buf.into_body(trailers)));
    }
    // Larger than the buffer. Encoded bodies cannot be held back by raw offset, and a body
    // that already failed to decode has nothing more to learn from: judge as uninspectable.
    let scan = match (encoded, scan) {
        (false, Some(s)) => s,
        _ => {
            let why = why.unwrap_or_else(|| {
                format!(
                    "a content-encoded body over {} bytes cannot be held back while it is inspected",
                    inspector.max_encoded_body
                )
            });
            let d = uninspectable(&judge, &report, &why);
            if d.verdict == Verdict::Deny {
                return Ok(Prepared::Blocked(d, names(&report)));
            }
            let prefix = buf.into_body(None);
            let rest = body.map_err(Into::into);
            let chained = ChainBody {
                first: Some(prefix),
                second: rest,
            };
            return Ok(Prepared::Streaming(
                chained.boxed_unsync(),
                d,
                VerdictSlot::default(),
                None,
            ));
        }
    };
    let d = judge.decide(DataView::Seen(report.seen()));
    if d.verdict == Verdict::Deny {
        return Ok(Prepared::Blocked(d, names(&report)));
    }
    let slot = VerdictSlot::default();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let held_len = buf.len();
    // As the frames came, not joined: a copy of the whole buffer would be made only to be
    // released in pieces, and the held-back tail would keep all of it resident.
    let held: VecDeque<Bytes> = buf.into_parts().into();
    let hold_back = scan.hold_back(inspector.hold_back);
    let streaming = InspectedBody {
        inner: body,
        scan,
        report,
        judge,
        inspector: inspector.clone(),
        held,
        held_len,
        hold_back,
        ended: false,
        trailers,
        slot: slot.clone(),
        failed: false,
        released: 0,
        inspected,
        done: Some(done_tx),
    };
    Ok(Prepared::Streaming(
        streaming.boxed_unsync(),
        d,
        slot,
        Some(done_rx),
    ))
}

/// The decision for a body that cannot be inspected, `why` (no body content) added to its
/// message for the client and the log.
fn uninspectable(judge: &Judge, report: &Report, why: &str) -> Decision {
    // Identifiers already found in what could be read still count.
    let seen = judge.decide(DataView::Seen(report.seen()));
    if seen.verdict == Verdict::Deny {
        return seen;
    }
    let mut d = judge.decide(DataView::Uninspectable);
    if d.reason == Reason::Uninspectable {
        d.message = format!("{} ({why})", d.message).into();
    }
    d
}

/// What was found, per class: counts and places, for the 451 body, the log and the audit
/// record. Never values.
pub type Found = Vec<crate::audit::DataFinding>;

/// Summarises a report per class.
pub fn found(report: &Report, detector: &crate::inspect::detect::Detector) -> Found {
    use crate::audit::{DataFinding, Location as AL};
    use crate::inspect::Location;
    let mut out: Found = Vec::new();
    for (class, loc, n) in report.counts() {
        let name = detector.class_name(*class);
        let al = match loc {
            Location::Url => AL::Url,
            Location::Header => AL::Header,
            Location::Body => AL::Body,
        };
        match out.iter_mut().find(|f| f.class == name) {
            Some(f) => {
                f.count += u64::from(*n);
                if !f.locations.contains(&al) {
                    f.locations.push(al);
                }
            }
            None => out.push(DataFinding {
                class: name.to_owned(),
                count: u64::from(*n),
                locations: vec![al],
                fingerprints: report.fingerprints(*class).map(str::to_owned).collect(),
            }),
        }
    }
    out.sort_by(|a, b| a.class.cmp(&b.class));
    out
}

fn finish_whole(d: Decision, classes: Found, body: Held) -> Prepared {
    if d.verdict == Verdict::Deny {
        return Prepared::Blocked(d, classes);
    }
    Prepared::Whole(body.boxed_unsync(), d, classes)
}

/// The error a stopped body ends with; hyper aborts the upstream request on it.
#[derive(Debug, thiserror::Error)]
#[error("request body blocked by policy: {0}")]
pub struct BodyBlocked(String);

struct InspectedBody<B> {
    inner: B,
    scan: BodyScan,
    report: Report,
    judge: Arc<Judge>,
    /// Reads the trailer fields, if any come; its detector names the classes found.
    inspector: Arc<Inspector>,
    held: VecDeque<Bytes>,
    held_len: usize,
    hold_back: usize,
    ended: bool,
    trailers: Option<HeaderMap>,
    slot: VerdictSlot,
    failed: bool,
    released: u64,
    inspected: prometheus::IntCounter,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<B> InspectedBody<B> {
    fn block(&mut self, d: Decision) -> BoxError {
        let classes = found(&self.report, self.inspector.detector());
        let msg = d.rule.to_string();
        if let Ok(mut s) = self.slot.lock() {
            s.blocked = Some((d, classes));
            s.released = self.released;
        }
        self.failed = true;
        self.held.clear();
        self.held_len = 0;
        Box::new(BodyBlocked(msg))
    }

    /// Bytes that may go upstream now: everything but the hold-back window, or all at end.
    fn release(&mut self) -> Option<Bytes> {
        let keep = if self.ended { 0 } else { self.hold_back };
        if self.held_len <= keep {
            return None;
        }
        let can = self.held_len - keep;
        let front = self.held.front_mut()?;
        let out = if front.len() <= can {
            self.held.pop_front()?
        } else {
            front.split_to(can)
        };
        self.held_len -= out.len();
        self.released += out.len() as u64;
        Some(out)
    }
}

impl<B> HttpBody for InspectedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.failed {
                return Poll::Ready(None);
            }
            if let Some(b) = this.release() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.ended {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.inspected.inc_by(data.len() as u64);
                        if let Err(e) = this.scan.feed(&data, &mut this.report) {
                            tracing::debug!(error = %e, "streamed body became uninspectable");
                            let d = uninspectable(&this.judge, &this.report, &e.to_string());
                            if d.verdict == Verdict::Deny {
                                return Poll::Ready(Some(Err(this.block(d))));
                            }
                        } else if this.report.take_changed() {
                            let d = this.judge.decide(DataView::Seen(this.report.seen()));
                            if d.verdict == Verdict::Deny {
                                return Poll::Ready(Some(Err(this.block(d))));
                            }
                        }
                        this.held_len += data.len();
                        this.held.push_back(data);
                    }
                    Err(f) => {
                        if let Ok(t) = f.into_trailers() {
                            // Judged with the rest at the end of the body, before they go.
                            this.inspector.inspect_trailers(&t, &mut this.report);
                            this.trailers = Some(t);
                        }
                    }
                },
                Poll::Ready(None) => {
                    // The last bytes go only after the whole body was judged.
                    let d = match this.scan.finish(&mut this.report) {
                        Ok(()) => this.judge.decide(DataView::Seen(this.report.seen())),
                        Err(e) => uninspectable(&this.judge, &this.report, &e.to_string()),
                    };
                    if d.verdict == Verdict::Deny {
                        return Poll::Ready(Some(Err(this.block(d))));
                    }
                    if let Ok(mut s) = this.slot.lock() {
                        s.passed = Some((d, found(&this.report, this.inspector.detector())));
                    }
                    if let Some(done) = this.done.take() {
                        let _ = done.send(());
                    }
                    this.ended = true;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || (self.ended && self.held_len == 0 && self.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        // The length is only known to the client; never promise one upstream.
        SizeHint::default()
    }
}

/// A buffered prefix followed by the rest of the client's body.
struct ChainBody<A, B> {
    first: Option<A>,
    second: B,
}

impl<A, B> HttpBody for ChainBody<A, B>
where
    A: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
    B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.as_mut() {
            match Pin::new(first).poll_frame(cx) {
                Poll::Ready(None) => self.first = None,
                other => return other,
            }
        }
        Pin::new(&mut self.second).poll_frame(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use http_body_util::StreamBody;
    use proptest::prelude::*;

    #[test]
    fn frames_go_out_as_the_body_in_order_whatever_the_frame_sizes() {
        let body: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        for cuts in [
            vec![70_000],
            vec![1, 2, 3, 5000, 9000, 9001, 9002, 60_000],
            vec![4095, 8191],
        ] {
            let fill = || {
                let mut f = Frames::default();
                let mut at = 0;
                for &c in cuts.iter().chain([&body.len()]) {
                    if c > at {
                        f.push(Bytes::copy_from_slice(&body[at..c]));
                        at = c;
                    }
                }
                f
            };
            let f = fill();
            assert_eq!(f.len(), body.len());
            // Sent as held, a body read whole is the whole body, in order, with its exact
            // length (hyper frames the upstream request by it).
            let held = f.into_body(None);
            assert_eq!(held.size_hint().exact(), Some(body.len() as u64));
            let (sent, trailers) = drain(held);
            assert_eq!(sent, body);
            assert!(trailers.is_none());
            // Unjoined, as a streamed body holds them: the same bytes in the same order,
            // and no empty part (an empty data frame could end a chunked body early).
            let parts = fill().into_parts();
            assert!(parts.iter().all(|p| !p.is_empty()));
            assert_eq!(parts.concat(), body);
        }
        // Many tiny frames are gathered, not kept one handle each.
        let mut f = Frames::default();
        for b in &body[..10_000] {
            f.push(Bytes::copy_from_slice(&[*b]));
        }
        assert!(f.parts.is_empty());
        assert_eq!(drain(f.into_body(None)).0, &body[..10_000]);
        // One large frame goes out as the same buffer, uncopied.
        let one = Bytes::from(body.clone());
        let mut f = Frames::default();
        f.push(one.clone());
        let held = f.into_body(None);
        assert_eq!(held.parts.front().map(|p| p.as_ptr()), Some(one.as_ptr()));
        // Trailers follow the data, and rule out a promised length.
        let mut f = Frames::default();
        f.push(Bytes::from_static(b"abc"));
        let mut t = HeaderMap::new();
        t.insert("x-checksum", http::HeaderValue::from_static("1"));
        let held = f.into_body(Some(t));
        assert_eq!(held.size_hint().exact(), None);
        let (sent, trailers) = drain(held);
        assert_eq!(sent, b"abc");
        assert_eq!(trailers.map(|t| t.len()), Some(1));
        // No body: nothing to send, and hyper sees the end at once.
        let empty = Frames::default().into_body(None);
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }

    /// Polls a held body to its end: the bytes sent, then the trailers.
    fn drain(mut held: Held) -> (Vec<u8>, Option<HeaderMap>) {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut sent = Vec::new();
        let mut trailers = None;
        for _ in 0..100_000 {
            match Pin::new(&mut held).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => {
                        assert!(!d.is_empty());
                        sent.extend_from_slice(&d);
                    }
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Poll::Ready(None) => break,
                other => panic!("a held body is always ready: {:?}", other.is_pending()),
            }
        }
        assert!(held.is_end_stream());
        (sent, trailers)
    }

    fn aadhaar() -> String {
        (0..10)
            .map(|d| format!("98765432101{d}"))
            .find(|s| crate::inspect::detect::Validator::Verhoeff.check(s))
            .unwrap_or_default()
    }

    /// Streams `body` in the given pieces through `prepare` for a US destination under the
    /// embedded india-strict policy; returns what would reach the upstream and whether
    /// the body was stopped.
    fn run(body: Vec<u8>, cuts: Vec<usize>, buffer_limit: usize) -> (Vec<u8>, bool) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let snapshot = Arc::new(crate::app::load_snapshot(&Config::default()).unwrap());
            let mut inspector = Inspector::new(snapshot.inspector.detector().clone());
            inspector.buffer_limit = buffer_limit;
            let judge = Arc::new(Judge {
                snapshot,
                host: "api.example.com".into(),
                addr: "203.0.113.9".parse().unwrap(),
                country: crate::geo::Country::parse("US"),
                method: http::Method::POST,
                path: Some(http::uri::PathAndQuery::from_static("/")),
                groups: Vec::new(),
            });
            let mut pieces = Vec::new();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut at = 0;
            for c in cuts.into_iter().chain([body.len()]) {
                if c > at {
                    pieces.push(Ok::<_, std::io::Error>(Frame::data(
                        Bytes::copy_from_slice(&body[at..c]),
                    )));
                    at = c;
                }
            }
            let stream = StreamBody::new(futures_util::stream::iter(pieces));
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            );
            let prepared = prepare(
                &Arc::new(inspector),
                judge,
                &headers,
                stream,
                Report::default(),
                Duration::from_secs(5),
                prometheus::IntCounter::new("t", "t").unwrap(),
            )
            .await
            .unwrap();
            match prepared {
                Prepared::Blocked(..) => (Vec::new(), true),
                Prepared::Whole(b, ..) => (b.collect().await.unwrap().to_bytes().to_vec(), false),
                Prepared::Streaming(mut b, _, slot, _) => {
                    let mut got = Vec::new();
                    let mut stopped = false;
                    while let Some(f) = b.frame().await {
                        match f {
                            Ok(f) => {
                                got.extend_from_slice(f.data_ref().map_or(&[][..], |d| &d[..]))
                            }
                            Err(_) => {
                                stopped = true;
                                break;
                            }
                        }
                    }
                    assert_eq!(stopped, slot.lock().unwrap().blocked.is_some());
                    (got, stopped)
                }
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        // Invariant I1: whatever the chunking and wherever the identifier sits, no byte of
        // it is released upstream, and the body is stopped rather than completed.
        #[test]
        fn no_byte_of_a_planted_identifier_is_released(
            len in 2_000usize..60_000,
            at_frac in 0.0f64..1.0,
            cuts in proptest::collection::vec(0usize..60_000, 0..40),
            buffer in prop_oneof![Just(256usize), Just(4096), Just(65_536)],
        ) {
            let a = aadhaar();
            let mut body = vec![b'a'; len];
            let at = 1 + ((len - a.len() - 2) as f64 * at_frac) as usize;
            body[at - 1] = b' ';
            body[at..at + a.len()].copy_from_slice(a.as_bytes());
            body[at + a.len()] = b' ';
            let (released, stopped) = run(body, cuts, buffer);
            prop_assert!(stopped, "the body must be stopped");
            prop_assert!(released.len() <= at, "released {} bytes, identifier at {}", released.len(), at);
            prop_assert!(!released.iter().any(u8::is_ascii_digit));
        }

        // And a clean body goes through whole and unchanged.
        #[test]
        fn clean_bodies_pass_unchanged(
            len in 0usize..60_000,
            cuts in proptest::collection::vec(0usize..60_000, 0..40),
            buffer in prop_oneof![Just(256usize), Just(65_536)],
        ) {
            let body: Vec<u8> = (0..len).map(|i| b"lorem ipsum dolor "[i % 18]).collect();
            let (released, stopped) = run(body.clone(), cuts, buffer);
            prop_assert!(!stopped);
            prop_assert_eq!(released, body);
        }
    }
}
