//! Graceful drain of client connections on shutdown: each connection learns that the
//! proxy is stopping, finishes its in-flight request and closes; the server waits for
//! the last one.
//!
//! hyper-util's `GracefulShutdown` does this with a `watch` channel whose `changed()`
//! future is polled on every poll of every connection, and that takes a lock each time
//! (about 250 instructions per proxied request). Here a connection registers its task's
//! waker once; a poll then costs one atomic load and a waker comparison.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use slab::Slab;

/// A connection that can be asked to finish its current request and close.
pub trait Drainable: Future {
    /// Starts the graceful close (hyper's `graceful_shutdown`).
    fn start_drain(self: Pin<&mut Self>);
}

/// The set of live connections. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Drain {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    stopping: AtomicBool,
    wakers: Mutex<Slab<Waker>>,
    live: AtomicUsize,
    idle: tokio::sync::Notify,
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

    /// Counts `conn` as live until it completes or is dropped, and has it close
    /// gracefully once `drain` is called.
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
        self.inner.stopping.store(true, Ordering::Release);
        if let Ok(wakers) = self.inner.wakers.lock() {
            for (_, w) in wakers.iter() {
                w.wake_by_ref();
            }
        }
        // `notify_one` keeps a permit when nobody waits, so the last close is never missed
        // between the check and the wait.
        while self.live() > 0 {
            self.inner.idle.notified().await;
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
    fn stop_if_stopping(&mut self) -> bool {
        if self.inner.stopping.load(Ordering::Acquire) {
            self.draining = true;
            self.conn.as_mut().start_drain();
            return true;
        }
        false
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
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        if !this.draining && !this.stop_if_stopping() {
            let known = this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
            if !known {
                this.register(cx.waker());
                // `drain` may have woken the registered wakers just before this one joined.
                this.stop_if_stopping();
            }
        }
        this.conn.as_mut().poll(cx)
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
        drain.inner.stopping.store(true, Ordering::Release);
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
    async fn drain_with_no_connections_returns_at_once() {
        tokio::time::timeout(Duration::from_secs(5), Drain::new().drain())
            .await
            .expect("drain waited for nothing");
    }
}
