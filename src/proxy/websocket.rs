//! WebSocket framing (RFC 6455 §5), read so that each message a client sends is judged
//! before any of it goes upstream. This module knows frames, not policy: [`relay`] hands
//! every whole message (and every control frame) to a [`Gate`], sends on what it passes,
//! and closes both sides with the gate's reason when it refuses one.
//!
//! Messages are held whole until judged, up to a limit; the server's frames pass as they
//! come, followed only so far as to know where one ends, so that a close frame can be put
//! between two of them. Messages compressed with `permessage-deflate` (RFC 7692) are
//! inflated to be judged and sent on as they came; no other extension may be
//! negotiated, since its frames could not be read.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flate2::{Decompress, FlushDecompress, Status};
use http::{HeaderMap, HeaderValue};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::tunnel::{Activity, TunnelEnd};

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// Close codes (RFC 6455 §7.4.1).
pub mod code {
    /// The endpoint is going away.
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A message's data is not what its type says.
    pub const INVALID_DATA: u16 = 1007;
    /// A message violates the endpoint's policy.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message is too big to process.
    pub const TOO_BIG: u16 = 1009;
    /// The endpoint met a condition that kept it from fulfilling the request.
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// Longest frame head: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEAD: usize = 14;

/// A frame head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    fin: bool,
    /// The three reserved bits; set only by a negotiated extension.
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Payload length.
    len: u64,
    /// Bytes of the head itself.
    size: usize,
}

/// Parses the frame head that begins `b`; `None` until all of it is there.
fn head(b: &[u8]) -> Option<Head> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let (len, mut at) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let m: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    Some(Head {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x7,
        opcode: b0 & 0x0f,
        mask,
        len,
        size: at,
    })
}

/// Why the client's frames cannot be relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Not valid WebSocket framing from a client.
    Protocol(&'static str),
    /// Frames transformed by an extension that was not negotiated, or that Sima cannot
    /// read.
    Extension,
    /// A compressed message that does not inflate.
    Corrupt,
    /// A message over the inspection limit.
    TooBig {
        /// The limit, in payload bytes.
        limit: usize,
    },
}

impl Fault {
    /// The close code and reason the client is sent.
    pub fn close(&self) -> (u16, String) {
        match self {
            Fault::Protocol(why) => (code::PROTOCOL_ERROR, format!("Sima: {why}")),
            Fault::Extension => (
                code::POLICY_VIOLATION,
                "Sima: frames of an extension cannot be inspected".to_owned(),
            ),
            Fault::Corrupt => (
                code::INVALID_DATA,
                "Sima: a compressed message does not inflate".to_owned(),
            ),
            Fault::TooBig { limit } => (
                code::TOO_BIG,
                format!("Sima: message over the {limit}-byte inspection limit"),
            ),
        }
    }
}

/// What a client sent: a whole message, or a control frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A text message.
    Text,
    /// A binary message.
    Binary,
    /// A close frame (its payload: a code and a reason).
    Close,
    /// A ping or a pong.
    Ping,
}

/// A message or control frame, ready to be judged.
#[derive(Debug, Default)]
pub struct Ready {
    /// Its frames as the client sent them (masked).
    pub raw: Vec<u8>,
    /// Its payload, unmasked (a message's fragments joined).
    pub payload: Vec<u8>,
    /// What it is.
    pub kind: Option<Kind>,
}

/// Assembles a client's frames into messages. Holds at most one message, up to the
/// limit, plus one read's worth of bytes.
pub struct ClientFrames {
    /// The client's compression context, when `permessage-deflate` was negotiated.
    inflater: Option<Box<Decompress>>,
    /// The message being assembled is compressed.
    compressed: bool,
    pending: Vec<u8>,
    /// Where the next frame starts in `pending`: the frames before it are taken, and
    /// removed all at once on the next push (not one by one, which would move the rest of
    /// a read once per small frame).
    at: usize,
    message: Ready,
    limit: usize,
}

impl ClientFrames {
    /// Messages of up to `limit` payload bytes are assembled; a larger one is a fault.
    pub fn new(limit: usize) -> ClientFrames {
        ClientFrames {
            inflater: None,
            compressed: false,
            pending: Vec::new(),
            at: 0,
            message: Ready::default(),
            limit,
        }
    }

    /// Reads messages compressed with `permessage-deflate`, as the server accepted it.
    pub fn with_deflate(mut self) -> ClientFrames {
        // A 15-bit window inflates what any smaller window the client was held to deflated.
        self.inflater = Some(Box::new(Decompress::new(false)));
        self
    }

    /// Bytes read from the client.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.drain(..self.at);
        self.at = 0;
        self.pending.extend_from_slice(bytes);
    }

    /// Whether part of a frame or of a message is held.
    #[cfg(test)]
    fn mid_message(&self) -> bool {
        self.pending.len() > self.at || self.message.kind.is_some()
    }

    /// The next whole message or control frame; `None` until more bytes come.
    pub fn next_ready(&mut self) -> Result<Option<Ready>, Fault> {
        loop {
            let rest = self.pending.get(self.at..).unwrap_or_default();
            let Some(h) = head(rest) else {
                return Ok(None);
            };
            // RSV1 marks a compressed message on its first frame (RFC 7692 §6); nothing
            // else may set a reserved bit.
            let starts = matches!(h.opcode, TEXT | BINARY);
            let compressed = match h.rsv {
                0 => false,
                0b100 if starts && self.inflater.is_some() => true,
                _ => return Err(Fault::Extension),
            };
            let Some(mask) = h.mask else {
                return Err(Fault::Protocol("client frames must be masked"));
            };
            let control = h.opcode & 0x8 != 0;
            match h.opcode {
                CLOSE | PING | PONG if !h.fin || h.len > 125 => {
                    return Err(Fault::Protocol(
                        "control frame fragmented or over 125 bytes",
                    ))
                }
                CLOSE | PING | PONG => {}
                CONTINUATION if self.message.kind.is_none() => {
                    return Err(Fault::Protocol("continuation frame outside a message"))
                }
                TEXT | BINARY if self.message.kind.is_some() => {
                    return Err(Fault::Protocol("new message before the last one ended"))
                }
                CONTINUATION | TEXT | BINARY => {}
                _ => return Err(Fault::Protocol("unknown opcode")),
            }
            let held = if control {
                0
            } else {
                self.message.payload.len()
            };
            // Checked on the head, before the payload is held.
            if usize::try_from(h.len).map_or(true, |n| held.saturating_add(n) > self.limit) {
                return Err(Fault::TooBig { limit: self.limit });
            }
            let len = usize::try_from(h.len).unwrap_or(usize::MAX);
            let end = h.size + len;
            let Some(frame) = rest.get(..end) else {
                return Ok(None);
            };
            let payload = frame.get(h.size..).unwrap_or_default();
            let out = if control {
                let mut one = Ready {
                    raw: frame.to_vec(),
                    kind: Some(if h.opcode == CLOSE {
                        Kind::Close
                    } else {
                        Kind::Ping
                    }),
                    ..Ready::default()
                };
                unmask_into(&mut one.payload, payload, mask);
                Some(one)
            } else {
                let m = &mut self.message;
                m.raw.extend_from_slice(frame);
                unmask_into(&mut m.payload, payload, mask);
                if starts {
                    self.compressed = compressed;
                    m.kind = Some(if h.opcode == TEXT {
                        Kind::Text
                    } else {
                        Kind::Binary
                    });
                }
                h.fin.then(|| std::mem::take(m))
            };
            self.at += end;
            let Some(mut ready) = out else {
                continue;
            };
            if !control && self.compressed {
                self.compressed = false;
                if let Some(z) = self.inflater.as_deref_mut() {
                    ready.payload = inflate(z, &ready.payload, self.limit)?;
                }
            }
            return Ok(Some(ready));
        }
    }
}

/// Inflates one compressed message (RFC 7692 §7.2.2): its payload, with the four bytes
/// the sender took off put back, through the connection's inflater, whose window goes on
/// from the client's earlier messages. More than `limit` bytes out is a fault.
fn inflate(z: &mut Decompress, payload: &[u8], limit: usize) -> Result<Vec<u8>, Fault> {
    let mut out: Vec<u8> =
        Vec::with_capacity(payload.len().saturating_mul(4).clamp(256, limit.max(256)));
    for mut input in [payload, &[0, 0, 0xff, 0xff][..]] {
        loop {
            if out.len() == out.capacity() {
                if out.len() >= limit {
                    return Err(Fault::TooBig { limit });
                }
                out.reserve(out.len().clamp(1024, limit - out.len()));
            }
            let (before_in, before_out) = (z.total_in(), z.total_out());
            let status = z
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|_| Fault::Corrupt)?;
            let used = usize::try_from(z.total_in() - before_in).unwrap_or(usize::MAX);
            input = input.get(used..).unwrap_or_default();
            if status == Status::StreamEnd {
                // The client ended its stream (a final block): its next message starts a
                // new one.
                z.reset(false);
                return Ok(out);
            }
            let room = out.len() < out.capacity();
            if input.is_empty() && room {
                break;
            }
            if used == 0 && z.total_out() == before_out && room {
                return Err(Fault::Corrupt);
            }
        }
    }
    Ok(out)
}

/// The client's `Sec-WebSocket-Extensions` offer with only what Sima can read:
/// `permessage-deflate`, with whatever parameters. `None` when nothing is left.
pub fn readable_offer(offer: &HeaderMap) -> Option<HeaderValue> {
    let kept: Vec<&str> = offer
        .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| is_deflate(e))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// Whether the server's `101` accepted `permessage-deflate`.
pub fn deflate_accepted(response: &HeaderMap) -> bool {
    response
        .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| is_deflate(e.trim()))
}

fn is_deflate(extension: &str) -> bool {
    extension
        .split(';')
        .next()
        .is_some_and(|name| name.trim().eq_ignore_ascii_case("permessage-deflate"))
}

/// Appends `payload` unmasked (RFC 6455 §5.3).
fn unmask_into(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

/// A close frame with `code` and `reason` (cut to the 123 bytes that fit, at a character
/// boundary), masked with `mask` when a client sends it.
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.get(..cut).unwrap_or_default().as_bytes());
    let mut frame = vec![0x80 | CLOSE];
    match mask {
        Some(m) => {
            frame.push(0x80 | payload.len() as u8);
            frame.extend_from_slice(&m);
            unmask_into(&mut frame, &payload, m);
        }
        None => {
            frame.push(payload.len() as u8);
            frame.extend_from_slice(&payload);
        }
    }
    frame
}

/// Follows where the frames of a byte stream end, without keeping their payloads.
#[derive(Default)]
pub struct Boundaries {
    head: Vec<u8>,
    left: u64,
}

impl Boundaries {
    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.left > 0 {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(b.len());
                self.left -= n as u64;
                b = b.get(n..).unwrap_or_default();
                continue;
            }
            let had = self.head.len();
            let take = (MAX_HEAD - had).min(b.len());
            self.head
                .extend_from_slice(b.get(..take).unwrap_or_default());
            match head(&self.head) {
                Some(h) => {
                    b = b.get(h.size - had..).unwrap_or_default();
                    self.left = h.len;
                    self.head.clear();
                }
                None => b = b.get(take..).unwrap_or_default(),
            }
        }
    }

    /// Whether the stream so far ends where a frame does.
    pub fn at_boundary(&self) -> bool {
        self.left == 0 && self.head.is_empty()
    }
}

/// Why a message does not go on, and what the client is told.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Close code.
    pub code: u16,
    /// Close reason (cut to fit).
    pub reason: String,
}

/// Judges what a client sends over a WebSocket.
pub trait Gate: Send {
    /// Judges one message or control frame: `Ok` sends it on.
    fn judge(&mut self, ready: &Ready) -> impl Future<Output = Result<(), Refusal>> + Send;
    /// A fault in the client's frames ends the WebSocket; the gate hears of it first.
    fn fault(&mut self, fault: &Fault) -> impl Future<Output = ()> + Send;
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed, timed out or failed, as a tunnel does.
    Tunnel(TunnelEnd),
    /// A message was refused (or the client's frames were faulty): both sides were closed.
    Refused,
    /// Sima is shutting down: both sides were sent `1001` and closed.
    Drained,
}

/// The reason the client reads in the close frame sent when Sima shuts down.
pub const SHUTTING_DOWN: &str = "Sima is shutting down; reconnect";

/// How long, after a refusal or the start of the drain, a frame in progress may take to
/// end before its receiver's connection is closed without a close frame.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// Relays a WebSocket: the client's messages, read by `frames`, through `gate`; the
/// server's frames as they come. With no bytes either way for `idle`, it ends. Once
/// `stopping` resolves (the drain has begun), both sides are sent `1001` between two
/// frames and closed, rather than cut without one when the drain time is over. Returns the
/// bytes sent upstream, the bytes sent to the client, and how it ended.
pub async fn relay<C, U, G>(
    client: C,
    upstream: U,
    mut frames: ClientFrames,
    idle: Duration,
    gate: &mut G,
    stopping: impl Future<Output = ()> + Send,
) -> (u64, u64, End)
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
    G: Gate,
{
    let activity = Activity::new();
    let (up_bytes, down_bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let (refused_tx, mut refused_rx) = tokio::sync::oneshot::channel::<(u16, String)>();

    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        tokio::pin!(stopping);
        loop {
            // Between two reads nothing is half-sent upstream: the close can go there now.
            let read = tokio::select! {
                r = cr.read(&mut buf) => r,
                () = &mut stopping => {
                    let _ = uw
                        .write_all(&close_frame(code::GOING_AWAY, "", Some(rand_mask())))
                        .await;
                    let _ = uw.shutdown().await;
                    return Err((code::GOING_AWAY, SHUTTING_DOWN.to_owned()));
                }
            };
            let n = match read {
                Ok(0) => {
                    let _ = uw.shutdown().await;
                    return Ok(());
                }
                Ok(n) => n,
                Err(_) => return Ok(()),
            };
            activity.stamp();
            frames.push(buf.get(..n).unwrap_or_default());
            loop {
                let refusal = match frames.next_ready() {
                    Ok(None) => break,
                    Ok(Some(ready)) => match gate.judge(&ready).await {
                        Ok(()) => {
                            if uw.write_all(&ready.raw).await.is_err() {
                                return Ok(());
                            }
                            up_bytes.fetch_add(ready.raw.len() as u64, Ordering::Relaxed);
                            continue;
                        }
                        Err(r) => (r.code, r.reason),
                    },
                    Err(fault) => {
                        gate.fault(&fault).await;
                        fault.close()
                    }
                };
                // The server hears only that the client is going; the reason is the
                // client's to read.
                let mask: [u8; 4] = rand_mask();
                let _ = uw
                    .write_all(&close_frame(code::GOING_AWAY, "", Some(mask)))
                    .await;
                let _ = uw.shutdown().await;
                return Err(refusal);
            }
        }
    };

    let down = async {
        let mut frames = Boundaries::default();
        let mut buf = vec![0u8; 16 * 1024];
        let mut refusal: Option<(u16, String)> = None;
        let mut listening = true;
        let mut grace = None;
        loop {
            if let Some((code, reason)) = &refusal {
                if frames.at_boundary() {
                    let _ = cw.write_all(&close_frame(*code, reason, None)).await;
                    let _ = cw.shutdown().await;
                    return;
                }
            }
            tokio::select! {
                r = ur.read(&mut buf) => {
                    let n = match r {
                        Ok(n) if n > 0 => n,
                        _ => {
                            let _ = cw.shutdown().await;
                            return;
                        }
                    };
                    activity.stamp();
                    let got = buf.get(..n).unwrap_or_default();
                    frames.feed(got);
                    if cw.write_all(got).await.is_err() {
                        return;
                    }
                    down_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                r = &mut refused_rx, if listening => {
                    listening = false;
                    if let Ok(r) = r {
                        refusal = Some(r);
                        grace = Some(Instant::now() + REFUSAL_GRACE);
                    }
                }
                _ = tokio::time::sleep_until(grace.unwrap_or_else(Instant::now)), if grace.is_some() => {
                    // A server frame in progress never ended: close without a close frame.
                    let _ = cw.shutdown().await;
                    return;
                }
            }
        }
    };

    let both = async {
        let (closed, ()) = tokio::join!(
            async {
                match up.await {
                    Err(close) => {
                        let code = close.0;
                        let _ = refused_tx.send(close);
                        Some(code)
                    }
                    Ok(_) => {
                        drop(refused_tx);
                        None
                    }
                }
            },
            down
        );
        closed
    };
    let end = match activity.until_idle(both, idle).await {
        Some(None) => End::Tunnel(TunnelEnd::Closed),
        Some(Some(code::GOING_AWAY)) => End::Drained,
        Some(Some(_)) => End::Refused,
        None => End::Tunnel(TunnelEnd::Idle),
    };
    (
        up_bytes.load(Ordering::Relaxed),
        down_bytes.load(Ordering::Relaxed),
        end,
    )
}

/// Copies a WebSocket both ways unread (no rule about data applies to it), following
/// only where frames end in each direction, so that once `stopping` resolves (the drain
/// has begun) each side can be sent `1001` between two frames and closed, as [`relay`]
/// does. With no bytes either way for `idle`, it ends. Returns the bytes sent upstream,
/// the bytes sent to the client, and how it ended.
pub async fn splice<C, U, S>(client: C, upstream: U, idle: Duration, stopping: S) -> (u64, u64, End)
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
    S: Future<Output = ()> + Send,
{
    let activity = Activity::new();
    let (up_bytes, down_bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    // One signal for both directions.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let up = pass(
        (&mut cr, &mut uw),
        close_frame(code::GOING_AWAY, "", Some(rand_mask())),
        stop_rx.clone(),
        (&activity, &up_bytes),
    );
    let down = pass(
        (&mut ur, &mut cw),
        close_frame(code::GOING_AWAY, SHUTTING_DOWN, None),
        stop_rx,
        (&activity, &down_bytes),
    );
    let both = async {
        let both = async { tokio::join!(up, down) };
        tokio::pin!(both);
        tokio::select! {
            out = &mut both => out,
            () = stopping => {
                // The directions finish on their own once told.
                let _ = stop_tx.send(true);
                both.await
            }
        }
    };
    let end = match activity.until_idle(both, idle).await {
        Some((false, false)) => End::Tunnel(TunnelEnd::Closed),
        Some(_) => End::Drained,
        None => End::Tunnel(TunnelEnd::Idle),
    };
    (
        up_bytes.load(Ordering::Relaxed),
        down_bytes.load(Ordering::Relaxed),
        end,
    )
}

/// One direction of [`splice`]: copies `r` to `w`, stamping `activity` and counting bytes.
/// Once `stop` turns true, it sends `close` where a frame ends (or closes without it
/// after [`REFUSAL_GRACE`], if a frame never ends) and shuts `w`. True when it stopped so.
async fn pass<R, W>(
    (r, w): (&mut R, &mut W),
    close: Vec<u8>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    (activity, count): (&Activity, &AtomicU64),
) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = Boundaries::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut grace: Option<Instant> = None;
    let mut listening = true;
    loop {
        if grace.is_some() && frames.at_boundary() {
            let _ = w.write_all(&close).await;
            let _ = w.shutdown().await;
            return true;
        }
        tokio::select! {
            read = r.read(&mut buf) => {
                let n = match read {
                    Ok(n) if n > 0 => n,
                    _ => {
                        let _ = w.shutdown().await;
                        return false;
                    }
                };
                activity.stamp();
                let got = buf.get(..n).unwrap_or_default();
                frames.feed(got);
                if w.write_all(got).await.is_err() {
                    return false;
                }
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
            changed = stop.changed(), if listening => {
                match changed {
                    Ok(()) if *stop.borrow() => grace = Some(Instant::now() + REFUSAL_GRACE),
                    Ok(()) => {}
                    Err(_) => {}
                }
                listening = false;
            }
            _ = tokio::time::sleep_until(grace.unwrap_or_else(Instant::now)), if grace.is_some() => {
                let _ = w.shutdown().await;
                return true;
            }
        }
    }
}

/// A masking key for a frame Sima sends as the client (RFC 6455 §5.3: unpredictable).
fn rand_mask() -> [u8; 4] {
    let mut m = [0u8; 4];
    if getrandom::fill(&mut m).is_err() {
        // The key hides nothing from the server; it only must not be predictable to
        // scripts in a browser. A fixed one is still a valid frame.
        m = [0x5a, 0xa5, 0x3c, 0xc3];
    }
    m
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A client frame: `first` byte (FIN, RSV, opcode), masked `payload`.
    fn frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        unmask_into(&mut f, payload, mask);
        f
    }

    const M: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn all(frames: &mut ClientFrames) -> Result<Vec<Ready>, Fault> {
        let mut out = Vec::new();
        while let Some(r) = frames.next_ready()? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn messages_are_unmasked_and_joined_whatever_the_cuts() {
        let long = vec![b'x'; 70_000];
        let mut stream = frame(0x01, b"Hello ", M); // text, not final
        stream.extend(frame(0x89, b"ping", [1, 2, 3, 4])); // a ping between fragments
        stream.extend(frame(0x80, b"world", [9, 8, 7, 6])); // final continuation
        stream.extend(frame(0x82, &[0u8; 300], M)); // binary, 16-bit length
        stream.extend(frame(0x81, &long, M)); // text, 64-bit length
        stream.extend(frame(0x88, b"\x03\xe8bye", M));
        for step in [1, 3, 7, 64, 1000, stream.len()] {
            let mut frames = ClientFrames::new(100_000);
            let mut got = Vec::new();
            for piece in stream.chunks(step) {
                frames.push(piece);
                got.extend(all(&mut frames).unwrap());
            }
            assert!(!frames.mid_message(), "step {step}");
            let kinds: Vec<_> = got.iter().map(|r| r.kind.unwrap()).collect();
            assert_eq!(
                kinds,
                [
                    Kind::Ping,
                    Kind::Text,
                    Kind::Binary,
                    Kind::Text,
                    Kind::Close
                ],
                "step {step}"
            );
            assert_eq!(got[0].payload, b"ping");
            assert_eq!(got[1].payload, b"Hello world");
            assert_eq!(got[2].payload, [0u8; 300]);
            assert_eq!(got[3].payload, long);
            assert_eq!(got[4].payload, b"\x03\xe8bye");
            // What goes upstream is what came, frame for frame (the ping first).
            let raw: Vec<u8> = got.iter().flat_map(|r| r.raw.clone()).collect();
            let mut expected = frame(0x89, b"ping", [1, 2, 3, 4]);
            expected.extend(frame(0x01, b"Hello ", M));
            expected.extend(frame(0x80, b"world", [9, 8, 7, 6]));
            assert_eq!(raw[..expected.len()], expected[..]);
            assert_eq!(raw.len(), stream.len());
        }
    }

    #[test]
    fn faulty_frames_are_refused_with_a_reason() {
        let refused = |bytes: Vec<u8>| {
            let mut f = ClientFrames::new(1000);
            f.push(&bytes);
            all(&mut f).unwrap_err()
        };
        let mut unmasked = frame(0x81, b"hi", M);
        unmasked[1] &= 0x7f;
        unmasked.drain(2..6);
        assert!(matches!(refused(unmasked), Fault::Protocol(_)));
        // permessage-deflate sets RSV1.
        assert_eq!(refused(frame(0xc1, b"hi", M)), Fault::Extension);
        assert!(matches!(refused(frame(0x80, b"x", M)), Fault::Protocol(_)));
        let mut two = frame(0x01, b"a", M);
        two.extend(frame(0x81, b"b", M));
        assert!(matches!(refused(two), Fault::Protocol(_)));
        assert!(matches!(refused(frame(0x09, b"p", M)), Fault::Protocol(_)));
        assert!(matches!(
            refused(frame(0x89, &[0; 126], M)),
            Fault::Protocol(_)
        ));
        assert!(matches!(refused(frame(0x83, b"", M)), Fault::Protocol(_)));
        // Over the limit: refused on the head, before the payload is held; fragments count
        // together.
        let big = frame(0x81, &[b'a'; 1001], M);
        let mut f = ClientFrames::new(1000);
        f.push(&big[..8]);
        assert_eq!(f.next_ready().unwrap_err(), Fault::TooBig { limit: 1000 });
        let mut parts = frame(0x01, &[b'a'; 600], M);
        parts.extend(frame(0x80, &[b'a'; 401], M));
        assert_eq!(refused(parts), Fault::TooBig { limit: 1000 });
        for fault in [Fault::Extension, Fault::TooBig { limit: 9 }] {
            let (code, reason) = fault.close();
            assert!((1000..5000).contains(&code) && reason.starts_with("Sima: "));
        }
    }

    /// Deflates `text` as a permessage-deflate sender does: on the connection's one
    /// compressor, flushed, without the last four bytes.
    fn deflated(z: &mut flate2::Compress, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 64);
        z.compress_vec(text, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn compressed_messages_are_inflated_with_the_window_of_earlier_ones() {
        let mut z = flate2::Compress::new(flate2::Compression::default(), false);
        let one = br#"{"customer":{"aadhaar":"234567890124","city":"Pune"}}"#;
        let first = deflated(&mut z, one);
        // The same text again: mostly a reference into the first message.
        let second = deflated(&mut z, one);
        assert!(second.len() < one.len() / 2, "{second:?}");
        let mut stream = frame(0xc1, &first, M);
        let (a, b) = second.split_at(3);
        stream.extend(frame(0x41, a, M)); // compressed, first fragment
        stream.extend(frame(0x89, b"", M)); // a ping between, never compressed
        stream.extend(frame(0x80, b, [5, 6, 7, 8])); // RSV1 only on the first frame
        stream.extend(frame(0x81, b"plain", M)); // an uncompressed message is allowed
        for step in [1, 5, stream.len()] {
            let mut frames = ClientFrames::new(1000).with_deflate();
            let mut got = Vec::new();
            for piece in stream.chunks(step) {
                frames.push(piece);
                got.extend(all(&mut frames).unwrap());
            }
            let payloads: Vec<&[u8]> = got.iter().map(|r| &r.payload[..]).collect();
            assert_eq!(payloads, [&one[..], b"", &one[..], b"plain"], "step {step}");
            let raw: Vec<u8> = got.iter().flat_map(|r| r.raw.clone()).collect();
            assert_eq!(raw.len(), stream.len(), "sent on as it came");
        }

        // Not negotiated, on a continuation, or on a control frame: refused.
        let mut f = ClientFrames::new(1000);
        f.push(&frame(0xc1, &first, M));
        assert_eq!(f.next_ready().unwrap_err(), Fault::Extension);
        for bad in [frame(0x01, b"x", M), frame(0xc9, b"", M)] {
            let mut f = ClientFrames::new(1000).with_deflate();
            f.push(&bad);
            f.push(&frame(0xc0, b"y", M));
            assert_eq!(all(&mut f).unwrap_err(), Fault::Extension);
        }
        // A bomb stops at the limit; bytes that do not inflate are a fault.
        let mut z = flate2::Compress::new(flate2::Compression::default(), false);
        let bomb = deflated(&mut z, &vec![b'0'; 1 << 20]);
        assert!(bomb.len() < 2000);
        let mut f = ClientFrames::new(4096).with_deflate();
        f.push(&frame(0xc2, &bomb, M));
        assert_eq!(f.next_ready().unwrap_err(), Fault::TooBig { limit: 4096 });
        let mut f = ClientFrames::new(4096).with_deflate();
        f.push(&frame(0xc2, &[0xff; 10], M));
        assert_eq!(f.next_ready().unwrap_err(), Fault::Corrupt);
    }

    #[test]
    fn only_permessage_deflate_is_offered_and_read() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static(
                "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits",
            ),
        );
        h.append(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("Permessage-Deflate;server_no_context_takeover, foo"),
        );
        assert_eq!(
            readable_offer(&h).unwrap(),
            "permessage-deflate; client_max_window_bits, Permessage-Deflate;server_no_context_takeover"
        );
        assert!(deflate_accepted(&h));
        let mut other = HeaderMap::new();
        other.insert(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("permessage-deflate-x, foo; permessage-deflate"),
        );
        assert!(readable_offer(&other).is_none());
        assert!(!deflate_accepted(&other) && !deflate_accepted(&HeaderMap::new()));
    }

    #[test]
    fn close_frames_fit_their_reason_and_mask_it() {
        let long = "é".repeat(100);
        let f = close_frame(code::POLICY_VIOLATION, &long, None);
        let h = head(&f).unwrap();
        assert_eq!((h.fin, h.opcode, h.mask, h.size), (true, CLOSE, None, 2));
        assert!(h.len <= 125);
        let reason = std::str::from_utf8(&f[4..]).expect("cut at a character");
        assert_eq!(&f[2..4], &1008u16.to_be_bytes());
        assert!(long.starts_with(reason) && reason.len() == 122);
        let masked = close_frame(code::GOING_AWAY, "bye", Some(M));
        let mut frames = ClientFrames::new(10);
        frames.push(&masked);
        let got = frames.next_ready().unwrap().unwrap();
        assert_eq!(got.kind, Some(Kind::Close));
        assert_eq!(got.payload, b"\x03\xe9bye");
    }

    #[test]
    fn boundaries_are_followed_through_any_cuts() {
        let mut stream = Vec::new();
        for (first, len) in [(0x81u8, 5usize), (0x82, 300), (0x89, 0), (0x81, 70_000)] {
            let mut f = vec![first];
            match len {
                0..=125 => f.push(len as u8),
                126..=0xffff => {
                    f.push(126);
                    f.extend_from_slice(&(len as u16).to_be_bytes());
                }
                _ => {
                    f.push(127);
                    f.extend_from_slice(&(len as u64).to_be_bytes());
                }
            }
            f.resize(f.len() + len, b'z');
            stream.push(f);
        }
        let ends: Vec<usize> = stream
            .iter()
            .scan(0, |at, f| {
                *at += f.len();
                Some(*at)
            })
            .collect();
        let bytes: Vec<u8> = stream.concat();
        for step in [1, 2, 5, 13, 4096] {
            let mut b = Boundaries::default();
            let mut at = 0;
            for piece in bytes.chunks(step) {
                b.feed(piece);
                at += piece.len();
                assert_eq!(b.at_boundary(), ends.contains(&at), "step {step} at {at}");
            }
        }
    }
}
