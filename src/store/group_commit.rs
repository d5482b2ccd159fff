//! Group commit for Stripe ingest.
//!
//! Every delivery must be durable before it is acknowledged, and a durable
//! commit costs a disk flush: one transaction per delivery would cap a
//! renewal-day burst at the disk's flush rate, whatever else is fast. So
//! deliveries queue here, and a writer takes every
//! delivery that arrived while it was busy, stores them in one transaction,
//! and answers each after that one commit. An idle writer takes the next
//! delivery at once, so a lone delivery waits for nobody.
//!
//! A batch the database refuses is not failed as a whole: it is rolled back
//! and its deliveries are retried one transaction each, so one bad delivery
//! (or a deadlock between writers' batches) costs its neighbours only time.
//! A database that cannot be reached fails the batch at once (503, and
//! Stripe delivers again), and a panic fails only its own deliveries.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Ingested, StoreError, StoredEvent};
use crate::run::RunSpec;

/// One delivery waiting for its batch's commit.
pub(crate) struct Pending {
    pub event: StoredEvent,
    pub run: Option<RunSpec>,
    pub now: DateTime<Utc>,
    pub reply: oneshot::Sender<Result<Ingested, StoreError>>,
}

/// Stores a batch and answers every delivery in it.
pub(crate) type CommitBatch = Arc<dyn Fn(Vec<Pending>) -> BoxFuture<'static, ()> + Send + Sync>;

/// The most deliveries one transaction takes: enough to amortise the flush,
/// few enough that the first in a batch is not kept waiting long.
pub(crate) const MAX_BATCH: usize = 256;

/// Deliveries queued beyond the batches being written; past this, requests
/// wait to queue (back-pressure) instead of growing memory.
const QUEUE: usize = 4096;

/// The queue in front of the ingest writers. Dropping it stops the writers
/// once they have answered what is queued.
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts `writers` writer tasks (one for SQLite, which has one writer
    /// connection; several for PostgreSQL, where batches commit in parallel).
    pub(crate) fn start(writers: usize, commit: CommitBatch) -> GroupCommit {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..writers.max(1) {
            let (receiver, commit) = (receiver.clone(), commit.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&receiver).await {
                    // `commit` catches its own panics; this is the last
                    // line, so that no panic ever stops ingest for good.
                    // The batch's replies are dropped: nothing acknowledged.
                    if let Err(panic) = AssertUnwindSafe(commit(batch)).catch_unwind().await {
                        tracing::error!(panic = %panic_message(&*panic), "an ingest batch panicked");
                    }
                }
            });
        }
        GroupCommit { queue }
    }

    /// Queues one delivery and waits for the commit of its batch.
    pub(crate) async fn submit(
        &self,
        event: StoredEvent,
        run: Option<RunSpec>,
        now: DateTime<Utc>,
    ) -> Result<Ingested, StoreError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            event,
            run,
            now,
            reply,
        };
        self.queue
            .send(pending)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        // A writer that panicked drops the reply: nothing was acknowledged.
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

/// Waits for a delivery, then takes every other one already queued, up to
/// [`MAX_BATCH`]. `None` once the queue is closed and empty.
async fn next_batch(receiver: &Mutex<mpsc::Receiver<Pending>>) -> Option<Vec<Pending>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = Vec::with_capacity(receiver.len().min(MAX_BATCH - 1) + 1);
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(pending) => batch.push(pending),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// What a caught panic said.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn event(i: usize) -> StoredEvent {
        StoredEvent {
            project: "p".into(),
            event_id: format!("evt_{i}"),
            event_type: "invoice.paid".into(),
            livemode: Some(false),
            created: Some(0),
            payload: "{}".into(),
        }
    }

    /// Deliveries that arrive while the writer is busy share one batch, and
    /// each is answered with its own outcome.
    #[tokio::test]
    async fn deliveries_queued_behind_a_busy_writer_share_a_batch() {
        let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
        let started = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let commit: CommitBatch = {
            let (started, sizes) = (started.clone(), sizes.clone());
            Arc::new(move |batch: Vec<Pending>| {
                let (started, sizes, mut gate) = (started.clone(), sizes.clone(), gate_rx.clone());
                Box::pin(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    // Every batch holds the writer until the gate opens.
                    let _ = gate.wait_for(|open| *open).await;
                    sizes.lock().unwrap().push(batch.len());
                    for p in batch {
                        let outcome = if p.event.event_id == "evt_3" {
                            Ingested::Duplicate { run_id: None }
                        } else {
                            Ingested::Stored { run: None }
                        };
                        let _ = p.reply.send(Ok(outcome));
                    }
                })
            })
        };
        let group = Arc::new(GroupCommit::start(1, commit));
        let submit = |i: usize| {
            let group = group.clone();
            tokio::spawn(async move { group.submit(event(i), None, Utc::now()).await })
        };
        let mut answers = vec![submit(0)];
        // The writer takes the first delivery alone and is then busy...
        while started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // ...while four more queue behind it.
        answers.extend((1..5).map(submit));
        while group.queue.capacity() > QUEUE - 4 {
            tokio::task::yield_now().await;
        }
        gate_tx.send(true).unwrap();
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await.unwrap().unwrap());
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 4]);
        assert_eq!(outcomes[3], Ingested::Duplicate { run_id: None });
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| matches!(o, Ingested::Duplicate { .. }))
                .count(),
            1
        );
    }

    /// A writer that dies without answering fails its deliveries instead of
    /// leaving them waiting forever.
    #[tokio::test]
    async fn a_dropped_batch_is_an_error_not_a_hang() {
        let commit: CommitBatch = Arc::new(|batch: Vec<Pending>| {
            Box::pin(async move {
                drop(batch);
            })
        });
        let group = GroupCommit::start(1, commit);
        let outcome = group.submit(event(1), None, Utc::now()).await;
        assert!(matches!(outcome, Err(StoreError::WriterStopped)));
    }

    /// A batch that panics fails its own deliveries, and the writer goes
    /// on to store the next ones: a bug in one delivery must not turn every
    /// later one away until a restart.
    #[tokio::test]
    async fn a_panicking_batch_does_not_stop_the_writer() {
        let commit: CommitBatch = Arc::new(|batch: Vec<Pending>| {
            Box::pin(async move {
                if batch.iter().any(|p| p.event.event_id == "evt_bad") {
                    panic!("a bug in one delivery");
                }
                for p in batch {
                    let _ = p.reply.send(Ok(Ingested::Stored { run: None }));
                }
            })
        });
        let group = GroupCommit::start(1, commit);
        let mut bad = event(0);
        bad.event_id = "evt_bad".into();
        let outcome = group.submit(bad, None, Utc::now()).await;
        assert!(matches!(outcome, Err(StoreError::WriterStopped)));
        let outcome = group.submit(event(1), None, Utc::now()).await;
        assert_eq!(outcome.unwrap(), Ingested::Stored { run: None });
    }

    #[test]
    fn a_panic_says_what_it_said() {
        let panic = std::panic::catch_unwind(|| panic!("at {}", 3)).unwrap_err();
        assert_eq!(panic_message(&*panic), "at 3");
        let panic = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(&*panic), "plain");
    }
}
