//! The one shape of Assay's background workers (the prober, the alert
//! sender, the drill runner): each round claims what is due and handles it;
//! a round that found work is followed by the next at once, an idle one by a
//! wait of the poll interval. Every wait ends when the shutdown token fires,
//! and then the worker finishes what it has in hand.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A background worker, run by [`run`].
pub trait Worker: Send + Sync {
    /// How long an idle worker waits before it looks for work again.
    fn poll_interval(&self) -> Duration;

    /// Waits until the worker can take on more work (a free slot, say).
    fn ready(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// Claims what is due and handles it (or starts to); returns whether
    /// more may be due at once.
    fn round(&self) -> impl Future<Output = bool> + Send;

    /// What is left to do once shutdown fires: work in flight to finish.
    fn drain(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// Runs `worker` round after round until `shutdown` fires, then drains it.
pub async fn run(worker: impl Worker, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = worker.ready() => {}
        }
        let more = worker.round().await;
        if shutdown.is_cancelled() {
            break;
        }
        if !more {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(worker.poll_interval()) => {}
            }
        }
    }
    worker.drain().await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Has work for its first `busy` rounds, then none; counts its rounds
    /// and drains.
    struct Counting {
        busy: usize,
        rounds: Arc<AtomicUsize>,
        drained: Arc<AtomicUsize>,
        shutdown: CancellationToken,
        stop_after: usize,
    }

    impl Worker for Counting {
        fn poll_interval(&self) -> Duration {
            Duration::from_secs(3600)
        }

        async fn round(&self) -> bool {
            let n = self.rounds.fetch_add(1, Ordering::SeqCst) + 1;
            if n == self.stop_after {
                self.shutdown.cancel();
            }
            n <= self.busy
        }

        async fn drain(&self) {
            self.drained.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_busy_worker_goes_on_at_once_and_stops_with_its_token() {
        let shutdown = CancellationToken::new();
        let rounds = Arc::new(AtomicUsize::new(0));
        let drained = Arc::new(AtomicUsize::new(0));
        let worker = Counting {
            busy: 10,
            rounds: rounds.clone(),
            drained: drained.clone(),
            shutdown: shutdown.clone(),
            stop_after: 5,
        };
        // An hour's poll interval: only rounds that found work follow at once.
        tokio::time::timeout(Duration::from_secs(10), run(worker, shutdown))
            .await
            .expect("the worker stops when its token fires");
        assert_eq!(rounds.load(Ordering::SeqCst), 5);
        assert_eq!(drained.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_idle_worker_waits_until_the_token_fires() {
        let shutdown = CancellationToken::new();
        let rounds = Arc::new(AtomicUsize::new(0));
        let drained = Arc::new(AtomicUsize::new(0));
        let worker = Counting {
            busy: 0,
            rounds: rounds.clone(),
            drained: drained.clone(),
            shutdown: shutdown.clone(),
            stop_after: usize::MAX,
        };
        let task = tokio::spawn(run(worker, shutdown.clone()));
        while rounds.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the wait ends with the token")
            .unwrap();
        assert_eq!(rounds.load(Ordering::SeqCst), 1, "idle: no second round");
        assert_eq!(drained.load(Ordering::SeqCst), 1);
    }
}
