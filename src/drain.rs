//! Graceful drain of client connections and tunnels on shutdown: each connection learns
//! that the proxy is stopping, finishes its in-flight request and closes; a tunnel runs on
//! until either side closes it. The server waits for the last one, and when the drain time
//! is over it cuts whatever is left, so nothing outlives the drain.
//!
//! hyper-util's `GracefulShutdown` does this with a `watch` channel whose `changed()`
//! future is polled on every poll of every connection, and that takes a lock each time
//! (about 250 instructions per proxied request). Here a connection registers its task's
//! waker once; a poll then costs one atomic load and a waker comparison.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use slab::Slab;

/// A connection that can be asked to finish its current request and close.
pub trait Drainable: Future {
    /// Starts the graceful close (hyper's `graceful_shutdown`).
    fn start_drain(self: Pin<&mut Self>);
}

/// Work that cannot be asked to close early, such as a spliced tunnel: the drain waits for
/// it to end on its own, and cuts it when the drain time is over.
pub struct Lasting(pub Pin<Box<dyn Future<Output = ()> + Send>>);

impl Future for Lasting {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl Drainable for Lasting {
    fn start_drain(self: Pin<&mut Self>) {}
}

/// [`Inner::state`]: serving, then draining, then cut.
const RUNNING: u8 = 0;
const STOPPING: u8 = 1;
const CUT: u8 = 2;

/// The set of live connections. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// One word, so that a poll reads both "draining" and "cut" with a single load.
    state: AtomicU8,
    wakers: Mutex<Slab<Waker>>,
    live: AtomicUsize,
    idle: tokio::sync::Notify,
    /// Wakes [`Drain::stopping`].
    stopping: tokio::sync::Notify,
}

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drain")
            .field("live", &self.live())
            .finish_non_exhaustive()
    }
}

// === impl Drain ===

impl Drain {
    /// An empty set.
    pub fn new() -> Drain {
        Drain::default()
    }

    /// Counts `conn` as live until it completes or is dropped, has it close gracefully once
    /// `drain` is called, and ends it (the watched future yields `None`) once `cut` is.
    pub fn watch<C: Drainable>(&self, conn: C) -> Watched<C> {
        self.inner.live.fetch_add(1, Ordering::AcqRel);
        Watched {
            conn: Box::pin(conn),
            inner: self.inner.clone(),
            key: None,
            waker: None,
            draining: false,
        }
    }

    /// Connections not yet closed.
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Asks every connection to close after its current request, and returns when none is
    /// left. Connections watched afterwards close after their first request.
    pub async fn drain(&self) {
        self.move_to(STOPPING);
        // `notify_one` keeps a permit when nobody waits, so the last close is never missed
        // between the check and the wait.
        while self.live() > 0 {
            self.inner.idle.notified().await;
        }
    }

    /// Resolves once the drain has begun (at once if it has): for work that can end itself
    /// gracefully but is no connection hyper serves, such as a WebSocket whose frames Sima
    /// reads and can close between two of them.
    pub async fn stopping(&self) {
        loop {
            // Created before the check: a `notify_waiters` after it still reaches it.
            let notified = self.inner.stopping.notified();
            if self.inner.state.load(Ordering::Acquire) != RUNNING {
                return;
            }
            notified.await;
        }
    }

    /// Ends every watched connection and tunnel still open: the drain time is over. Each
    /// is dropped (its sockets closed) at its task's next poll, which this wakes.
    pub fn cut(&self) {
        self.move_to(CUT);
    }

    fn move_to(&self, state: u8) {
        self.inner.state.fetch_max(state, Ordering::AcqRel);
        self.inner.stopping.notify_waiters();
        if let Ok(wakers) = self.inner.wakers.lock() {
            for (_, w) in wakers.iter() {
                w.wake_by_ref();
            }
        }
    }
}

/// A watched connection (see [`Drain::watch`]).
pub struct Watched<C> {
    conn: Pin<Box<C>>,
    inner: Arc<Inner>,
    key: Option<usize>,
    /// The waker registered for this connection, to compare against without the lock.
    waker: Option<Waker>,
    draining: bool,
}

impl<C: Drainable> Watched<C> {
    /// Starts the graceful close once the drain has begun.
    fn stop_if_stopping(&mut self, state: u8) {
        if state != RUNNING && !self.draining {
            self.draining = true;
            self.conn.as_mut().start_drain();
        }
    }

    fn register(&mut self, waker: &Waker) {
        let Ok(mut wakers) = self.inner.wakers.lock() else {
            return;
        };
        match self.key.and_then(|k| wakers.get_mut(k)) {
            Some(w) => w.clone_from(waker),
            None => self.key = Some(wakers.insert(waker.clone())),
        }
        self.waker = Some(waker.clone());
    }
}

impl<C: Drainable> Future for Watched<C> {
    /// `None` when the drain time ran out first.
    type Output = Option<C::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<C::Output>> {
        let this = &mut *self;
        let mut state = this.inner.state.load(Ordering::Acquire);
        // A draining connection stays registered: the cut must still reach it.
        let known = this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if !known {
            this.register(cx.waker());
            // `drain` or `cut` may have woken the registered wakers just before this one
            // joined.
            state = this.inner.state.load(Ordering::Acquire);
        }
        if state == CUT {
            return Poll::Ready(None);
        }
        this.stop_if_stopping(state);
        this.conn.as_mut().poll(cx).map(Some)
    }
}

impl<C> Drop for Watched<C> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            if let Ok(mut wakers) = self.inner.wakers.lock() {
                wakers.try_remove(k);
            }
        }
        if self.inner.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_one();
        }
    }
}

impl<I, S, E, B> Drainable for hyper_util::server::conn::auto::Connection<'_, I, S, E>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn start_drain(self: Pin<&mut Self>) {
        hyper_util::server::conn::auto::Connection::graceful_shutdown(self);
    }
}

impl<I, S, E, B> Drainable for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn start_drain(self: Pin<&mut Self>) {
        hyper_util::server::conn::auto::UpgradeableConnection::graceful_shutdown(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A connection that runs until asked to drain, then closes.
    struct Conn {
        asked: bool,
    }

    impl Future for Conn {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if self.asked {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl Drainable for Conn {
        fn start_drain(mut self: Pin<&mut Self>) {
            self.asked = true;
        }
    }

    #[tokio::test]
    async fn stopping_resolves_once_the_drain_begins() {
        let drain = Drain::new();
        let waiting = tokio::spawn({
            let d = drain.clone();
            async move { d.stopping().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "resolved before the drain");
        drain.drain().await;
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("not woken by the drain")
            .unwrap();
        // Asked after the drain began: at once.
        tokio::time::timeout(Duration::from_secs(5), drain.stopping())
            .await
            .expect("a late caller waited");
    }

    #[tokio::test]
    async fn drain_closes_idle_connections_and_waits_for_them() {
        let drain = Drain::new();
        let tasks: Vec<_> = (0..3)
            .map(|_| tokio::spawn(drain.watch(Conn { asked: false })))
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(drain.live(), 3);
        tokio::time::timeout(Duration::from_secs(5), drain.drain())
            .await
            .expect("drain never finished");
        assert_eq!(drain.live(), 0);
        for t in tasks {
            t.await.unwrap();
        }
        assert!(drain.inner.wakers.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_connection_watched_after_the_drain_began_closes_too() {
        let drain = Drain::new();
        drain.inner.state.store(STOPPING, Ordering::Release);
        let late = tokio::spawn(drain.watch(Conn { asked: false }));
        tokio::time::timeout(Duration::from_secs(5), late)
            .await
            .expect("late connection kept open")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), drain.drain())
            .await
            .expect("drain never finished");
    }

    #[tokio::test]
    async fn lasting_work_holds_the_drain_until_it_ends_or_is_cut() {
        let drain = Drain::new();
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        let finishing = tokio::spawn(drain.watch(Lasting(Box::pin(async move {
            let _ = ended.await;
        }))));
        let endless = tokio::spawn(drain.watch(Lasting(Box::pin(std::future::pending()))));
        tokio::task::yield_now().await;
        let waiting = tokio::spawn({
            let drain = drain.clone();
            async move { drain.drain().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "the drain did not wait for lasting work"
        );
        end.send(()).unwrap();
        let done = tokio::time::timeout(Duration::from_secs(5), finishing).await;
        assert_eq!(done.expect("ended work kept running").unwrap(), Some(()));
        assert_eq!(drain.live(), 1);
        assert!(!waiting.is_finished());

        drain.cut();
        let cut = tokio::time::timeout(Duration::from_secs(5), endless).await;
        assert_eq!(cut.expect("cut work kept running").unwrap(), None);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("drain never finished after the cut")
            .unwrap();
        assert_eq!(drain.live(), 0);
    }

    #[tokio::test]
    async fn drain_with_no_connections_returns_at_once() {
        tokio::time::timeout(Duration::from_secs(5), Drain::new().drain())
            .await
            .expect("drain waited for nothing");
    }
}
