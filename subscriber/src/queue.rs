//! The bounded hand-over between the feed (producer) and the forwarder
//! (consumer). Live chats never wait: when the queue is full the queued chats
//! are dropped and a gap fill is requested instead. Dropping only the oldest
//! would be wrong: posting the newer ones first moves the app's cursor past
//! the dropped ones and the fill (which starts at the cursor) would miss
//! them. Everything queued was published, so it is in the streams, and the
//! fill restores it in order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::warn;
use wsmesh_common::chat::Chat;

use crate::metrics::Metrics;

/// Whether the queue takes chats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueState {
    /// Taking chats.
    Open,
    /// Chats were dropped; nothing is taken until the feed starts a gap fill,
    /// so nothing newer can reach the app before the dropped chats do.
    AwaitingFill,
}

/// What became of a live chat handed to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Queued for the forwarder.
    Queued,
    /// Not queued: the feed must run a gap fill (which covers this chat).
    FillNeeded,
}

/// The gap fill was interrupted because chats were dropped meanwhile; it must start over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("chats were dropped during the gap fill")]
pub struct FillInterrupted;

/// Chats waiting to be posted.
#[derive(Debug)]
pub struct Queue {
    /// The chats and whether new ones are taken, changed together.
    inner: Mutex<Inner>,
    /// Most chats held (`queue.capacity`); one more drops them all.
    capacity: usize,
    /// Wakes the forwarder when a chat is queued.
    queued: Notify,
    /// Wakes a waiting gap fill when the forwarder took chats out.
    space: Notify,
    /// Wakes the feed when the forwarder asks for a gap fill.
    fill_wanted: Notify,
    /// Where the depth and the dropped chats are reported for `/metrics`.
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Inner {
    /// Chats in arrival order, the order they are posted in.
    items: VecDeque<Chat>,
    /// Closed after a drop until the gap fill starts, so nothing newer overtakes it.
    state: QueueState,
}

impl Queue {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Queue {
        Queue {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                state: QueueState::Open,
            }),
            capacity: capacity.max(1),
            queued: Notify::new(),
            space: Notify::new(),
            fill_wanted: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn state(&self) -> QueueState {
        self.lock().state
    }

    /// Queues a live chat without waiting. On overflow everything queued is
    /// dropped (counted) and a gap fill is needed.
    pub fn push_live(&self, chat: Chat) -> Admission {
        let mut inner = self.lock();
        if inner.state == QueueState::AwaitingFill {
            return Admission::FillNeeded;
        }
        if inner.items.len() >= self.capacity {
            let dropped = inner.items.len() + 1;
            self.drop_all(&mut inner);
            self.metrics.dropped_overflow.inc_by(dropped as u64);
            warn!(
                dropped,
                capacity = self.capacity,
                "queue overflow: dropped queued chats, will refill"
            );
            return Admission::FillNeeded;
        }
        self.push(&mut inner, chat);
        Admission::Queued
    }

    /// Queues a chat read by a gap fill, waiting for room (the streams keep it meanwhile).
    pub async fn push_fill(&self, chat: Chat) -> Result<(), FillInterrupted> {
        loop {
            {
                let mut inner = self.lock();
                if inner.state == QueueState::AwaitingFill {
                    return Err(FillInterrupted);
                }
                if inner.items.len() < self.capacity {
                    self.push(&mut inner, chat);
                    return Ok(());
                }
            }
            self.space.notified().await;
        }
    }

    fn push(&self, inner: &mut Inner, chat: Chat) {
        inner.items.push_back(chat);
        self.metrics.queue_depth.set(inner.items.len() as i64);
        self.queued.notify_one();
    }

    fn drop_all(&self, inner: &mut Inner) {
        inner.items.clear();
        inner.state = QueueState::AwaitingFill;
        self.metrics.queue_depth.set(0);
        self.fill_wanted.notify_one();
        // A fill blocked in `push_fill` must notice that it is now stale.
        self.space.notify_one();
    }

    /// The forwarder lost chats (e.g. a batch refused with 400): drop what
    /// is queued behind them and have the feed refill from the app's cursors.
    pub fn request_fill(&self) {
        let mut inner = self.lock();
        self.drop_all(&mut inner);
    }

    /// The feed is starting a gap fill: chats are taken again.
    pub fn reopen(&self) {
        self.lock().state = QueueState::Open;
    }

    /// Resolves once a gap fill is needed.
    pub async fn fill_wanted(&self) {
        loop {
            if self.state() == QueueState::AwaitingFill {
                return;
            }
            self.fill_wanted.notified().await;
        }
    }

    /// Takes up to `max` queued chats, oldest first; empty when none is queued.
    pub fn take(&self, max: usize) -> Vec<Chat> {
        let mut inner = self.lock();
        let n = inner.items.len().min(max);
        let batch: Vec<Chat> = inner.items.drain(..n).collect();
        self.metrics.queue_depth.set(inner.items.len() as i64);
        if n > 0 {
            self.space.notify_one();
        }
        batch
    }

    /// Waits up to `wait` for chats and takes up to `max` of them; empty on timeout.
    pub async fn next_batch(&self, max: usize, wait: Duration) -> Vec<Chat> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let batch = self.take(max);
            if !batch.is_empty() {
                return batch;
            }
            if tokio::time::timeout_at(deadline, self.queued.notified())
                .await
                .is_err()
            {
                return Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::chat;

    fn queue(capacity: usize) -> (Queue, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        (Queue::new(capacity, metrics.clone()), metrics)
    }

    #[test]
    fn take_batches_in_arrival_order_up_to_max() {
        let (q, m) = queue(10);
        for i in 1..=5 {
            assert_eq!(q.push_live(chat("r", &format!("{i}-0"))), Admission::Queued);
        }
        assert_eq!(m.queue_depth.get(), 5);
        let ids: Vec<String> = q.take(3).into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["1-0", "2-0", "3-0"]);
        assert_eq!(q.take(3).len(), 2);
        assert!(q.take(3).is_empty());
        assert_eq!(m.queue_depth.get(), 0);
    }

    #[test]
    fn overflow_drops_everything_counts_it_and_marks_refill() {
        let (q, m) = queue(3);
        for i in 1..=3 {
            q.push_live(chat("r", &format!("{i}-0")));
        }
        assert_eq!(q.push_live(chat("r", "4-0")), Admission::FillNeeded);
        assert_eq!(m.dropped_overflow.get(), 4);
        assert_eq!(q.len(), 0);
        assert_eq!(q.state(), QueueState::AwaitingFill);
        // Nothing newer is taken until the fill starts.
        assert_eq!(q.push_live(chat("r", "5-0")), Admission::FillNeeded);
        assert_eq!(q.len(), 0);
        q.reopen();
        assert_eq!(q.push_live(chat("r", "6-0")), Admission::Queued);
    }

    #[tokio::test]
    async fn fill_wanted_resolves_after_request_fill() {
        let (q, _) = queue(3);
        q.push_live(chat("r", "1-0"));
        let q = Arc::new(q);
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.fill_wanted().await }
        });
        q.request_fill();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(q.len(), 0);
    }

    #[tokio::test]
    async fn push_fill_waits_for_room_and_stops_when_chats_are_dropped() {
        let (q, _) = queue(1);
        let q = Arc::new(q);
        q.push_fill(chat("r", "1-0")).await.unwrap();
        let filler = tokio::spawn({
            let q = q.clone();
            async move { q.push_fill(chat("r", "2-0")).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(q.take(10).len(), 1);
        tokio::time::timeout(Duration::from_secs(5), filler)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let blocked = tokio::spawn({
            let q = q.clone();
            async move { q.push_fill(chat("r", "3-0")).await }
        });
        tokio::task::yield_now().await;
        q.request_fill();
        let res = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res, Err(FillInterrupted));
    }

    #[tokio::test]
    async fn next_batch_returns_empty_after_the_wait() {
        let (q, _) = queue(4);
        assert!(q.next_batch(10, Duration::from_millis(10)).await.is_empty());
        q.push_live(chat("r", "1-0"));
        assert_eq!(q.next_batch(10, Duration::from_millis(10)).await.len(), 1);
    }

    /// Model test of the hand-over with the forward filter behind it:
    /// random live pushes in two rooms, takes, refused batches (a refill is
    /// requested) and fill starts (reopen). What the forwarder posts is in
    /// id order per room, and once a chat was dropped nothing newer is
    /// taken until the gap fill starts, so the fill (from the app's cursor)
    /// still finds every dropped chat after that cursor.
    mod model {
        use super::*;
        use crate::forward::Delivered;
        use proptest::prelude::*;

        #[derive(Debug, Clone, Copy)]
        enum Op {
            Push(usize),
            Take(usize),
            Refuse,
            Reopen,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (0usize..2).prop_map(Op::Push),
                3 => (1usize..4).prop_map(Op::Take),
                1 => Just(Op::Refuse),
                1 => Just(Op::Reopen),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

            #[test]
            fn posts_stay_in_order_and_nothing_overtakes_a_drop(ops in prop::collection::vec(op(), 0..200)) {
                let (q, _) = queue(3);
                let mut delivered = Delivered::default();
                let mut next = 1u64;
                // The oldest chat dropped since the last fill start.
                let mut dropped: Option<u64> = None;
                let mut queued: Vec<u64> = Vec::new();
                for op in ops {
                    match op {
                        Op::Push(room) => {
                            let id = next;
                            next += 1;
                            let room = ["a", "b"][room];
                            match q.push_live(chat(room, &format!("{id}-0"))) {
                                Admission::Queued => queued.push(id),
                                Admission::FillNeeded => {
                                    let oldest = queued.first().copied().unwrap_or(id);
                                    dropped = Some(dropped.map_or(oldest, |d| d.min(oldest)));
                                    queued.clear();
                                    prop_assert_eq!(q.state(), QueueState::AwaitingFill);
                                }
                            }
                        }
                        Op::Take(max) => {
                            let taken = q.take(max);
                            for c in &taken {
                                let id = c.id.trim_end_matches("-0").parse::<u64>().expect("id");
                                prop_assert!(dropped.is_none_or(|d| id < d), "{} taken after {:?} was dropped", id, dropped);
                                queued.retain(|q| *q != id);
                            }
                            let batch = delivered.admit(taken.clone());
                            prop_assert_eq!(batch.len(), taken.len(), "live chats are never repeated");
                            delivered.record(&batch);
                        }
                        Op::Refuse => {
                            q.request_fill();
                            if let Some(oldest) = queued.first().copied() {
                                dropped = Some(dropped.map_or(oldest, |d| d.min(oldest)));
                            }
                            queued.clear();
                        }
                        Op::Reopen => {
                            q.reopen();
                            dropped = None;
                        }
                    }
                    prop_assert_eq!(q.len(), queued.len());
                }
            }
        }
    }
}
