//! Coarse timers for the long timeouts that every request arms and almost none reaches:
//! the read of a request head (hyper's header-read timeout, which also bounds a
//! keep-alive connection's idle time) and the wait for an upstream's response head.
//!
//! A tokio timer costs an insertion into the runtime's timer wheel and a removal, each
//! under the driver's lock, and hyper boxes a new one for every request head: together
//! about 1,200 instructions per proxied request. Here a timer is a slot in a slab that a
//! sweep checks every `granularity`, as nginx checks its timers against a clock it reads
//! once per event-loop turn. The price is precision: a timer fires up to one granularity
//! late, and deadlines taken from `now` (refreshed by the sweep) up to one granularity
//! early. The granularity is a quarter of the shortest timeout served, at most 500 ms.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

/// The coarsest sweep: also what keeps a tokio timer due within 500 ms on the proxy's
/// runtime, so that a new tokio timer is never the earliest one (tokio wakes its event
/// loop, an eventfd write and an extra turn, whenever that happens).
pub const MAX_GRANULARITY: Duration = Duration::from_millis(500);

/// The finest sweep, for timeouts configured in milliseconds (tests).
const MIN_GRANULARITY: Duration = Duration::from_millis(5);

/// A set of coarse timers and their clock. Cheap to clone (shared).
#[derive(Clone)]
pub struct Coarse {
    inner: Arc<Inner>,
}

struct Inner {
    base: Instant,
    /// Nanoseconds from `base` to the last sweep.
    now: AtomicU64,
    granularity: Duration,
    slots: Mutex<Slab<Slot>>,
    sweeping: AtomicBool,
}

struct Slot {
    deadline: u64,
    waker: Waker,
    woken: bool,
}

impl std::fmt::Debug for Coarse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coarse")
            .field("granularity", &self.inner.granularity)
            .finish_non_exhaustive()
    }
}

// === impl Coarse ===

impl Coarse {
    /// Timers for timeouts no shorter than `shortest`.
    pub fn new(shortest: Duration) -> Coarse {
        let granularity = (shortest / 4).clamp(MIN_GRANULARITY, MAX_GRANULARITY);
        Coarse {
            inner: Arc::new(Inner {
                base: Instant::now(),
                now: AtomicU64::new(0),
                granularity,
                slots: Mutex::new(Slab::new()),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// How often the sweep runs.
    pub fn granularity(&self) -> Duration {
        self.inner.granularity
    }

    /// The clock as of the last sweep (at most one granularity old).
    pub fn now(&self) -> Instant {
        self.inner.base + Duration::from_nanos(self.inner.now.load(Ordering::Acquire))
    }

    /// A timer firing at `deadline` (within one granularity after it).
    pub fn sleep_until(&self, deadline: Instant) -> CoarseSleep {
        let nanos = deadline
            .saturating_duration_since(self.inner.base)
            .as_nanos();
        CoarseSleep {
            inner: self.inner.clone(),
            deadline: u64::try_from(nanos).unwrap_or(u64::MAX),
            key: None,
        }
    }

    /// Runs the sweep until the returned guard is dropped. Every timer of this set is only
    /// as good as this task: start it before serving.
    pub fn start(&self) -> SweepGuard {
        if self.inner.sweeping.swap(true, Ordering::AcqRel) {
            return SweepGuard(None);
        }
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(inner.granularity);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                inner.sweep(Instant::now());
            }
        });
        SweepGuard(Some((task, self.inner.clone())))
    }
}

impl Inner {
    /// Advances the clock to `at` and wakes every timer now due.
    fn sweep(&self, at: Instant) {
        let nanos =
            u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        // The clock moves before the wake-ups: a woken timer must see itself due.
        self.now.fetch_max(nanos, Ordering::AcqRel);
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        for (_, slot) in slots.iter_mut() {
            if !slot.woken && slot.deadline <= nanos {
                slot.woken = true;
                slot.waker.wake_by_ref();
            }
        }
    }
}

/// Stops the sweep when dropped.
#[must_use = "the sweep stops when the guard is dropped"]
pub struct SweepGuard(Option<(tokio::task::JoinHandle<()>, Arc<Inner>)>);

impl Drop for SweepGuard {
    fn drop(&mut self) {
        if let Some((task, inner)) = self.0.take() {
            task.abort();
            inner.sweeping.store(false, Ordering::Release);
        }
    }
}

/// A coarse timer; see the module comment.
pub struct CoarseSleep {
    inner: Arc<Inner>,
    deadline: u64,
    key: Option<usize>,
}

impl CoarseSleep {
    fn due(&self) -> bool {
        self.inner.now.load(Ordering::Acquire) >= self.deadline
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.due() {
            return Poll::Ready(());
        }
        // A poisoned lock cannot happen (nothing under it panics); were it to, the timer
        // fires: a timeout that ends a wait early fails closed.
        let Ok(mut slots) = this.inner.slots.lock() else {
            return Poll::Ready(());
        };
        match this.key.and_then(|k| slots.get_mut(k)) {
            Some(slot) => {
                if !slot.waker.will_wake(cx.waker()) {
                    slot.waker = cx.waker().clone();
                }
            }
            None => {
                this.key = Some(slots.insert(Slot {
                    deadline: this.deadline,
                    waker: cx.waker().clone(),
                    woken: false,
                }));
            }
        }
        drop(slots);
        // A sweep between the check above and the registration would have missed us.
        if this.due() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            if let Ok(mut slots) = self.inner.slots.lock() {
                slots.try_remove(k);
            }
        }
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

impl hyper::rt::Timer for Coarse {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.sleep_until(self.now() + duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Coarse::sleep_until(self, deadline))
    }

    fn now(&self) -> Instant {
        Coarse::now(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granularity_is_a_quarter_of_the_shortest_timeout_within_bounds() {
        assert_eq!(
            Coarse::new(Duration::from_secs(10)).granularity(),
            MAX_GRANULARITY
        );
        assert_eq!(
            Coarse::new(Duration::from_millis(300)).granularity(),
            Duration::from_millis(75)
        );
        assert_eq!(
            Coarse::new(Duration::from_millis(1)).granularity(),
            MIN_GRANULARITY
        );
    }

    #[tokio::test]
    async fn a_timer_fires_within_one_granularity_of_its_deadline() {
        let timers = Coarse::new(Duration::from_millis(200));
        let _sweep = timers.start();
        let g = timers.granularity();
        let start = Instant::now();
        let deadline = timers.now() + Duration::from_millis(200);
        tokio::time::timeout(Duration::from_secs(5), timers.sleep_until(deadline))
            .await
            .expect("timer never fired");
        let took = start.elapsed();
        // `now` is at most one granularity old, so never earlier than that; the sweep is
        // at most one late, bounded loosely here because a loaded machine delays tasks.
        assert!(took + g >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert!(timers.inner.slots.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_dropped_timer_leaves_no_slot_and_others_still_fire() {
        let timers = Coarse::new(Duration::from_millis(100));
        let _sweep = timers.start();
        let far = timers.now() + Duration::from_secs(3600);
        let near = timers.now() + Duration::from_millis(100);
        let mut pending = Box::pin(timers.sleep_until(far));
        // Registered by a first poll, then dropped.
        assert!(futures_poll_once(pending.as_mut()).is_pending());
        assert_eq!(timers.inner.slots.lock().unwrap().len(), 1);
        drop(pending);
        assert!(timers.inner.slots.lock().unwrap().is_empty());
        tokio::time::timeout(Duration::from_secs(5), timers.sleep_until(near))
            .await
            .expect("timer never fired");
    }

    #[tokio::test]
    async fn one_sweep_runs_at_a_time() {
        let timers = Coarse::new(Duration::from_millis(100));
        let first = timers.start();
        assert!(timers.start().0.is_none());
        drop(first);
        let again = timers.start();
        assert!(again.0.is_some());
    }

    fn futures_poll_once<F: Future + ?Sized>(f: Pin<&mut F>) -> Poll<F::Output> {
        let waker = Waker::noop();
        f.poll(&mut Context::from_waker(waker))
    }
}
