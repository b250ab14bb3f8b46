//! Posting queued chats to the local app: batches of whatever is queued (up
//! to `batch_max`), the SAME batch retried with backoff until the app takes it,
//! a heartbeat (empty batch) when nothing was posted for a while, and per room
//! never an older chat after a newer one (the app would drop it anyway, but
//! order is the contract). On stop, what is queued is flushed for as long as
//! the caller waits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};
use wsmesh_common::backoff::Backoff;
use wsmesh_common::chat::Chat;
use wsmesh_common::stream_id::StreamId;

use crate::app_client::{AppClient, Failure};
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::status::Status;

/// Per room, the newest id the app accepted from this process.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Room → newest id the app accepted; anything not newer is dropped before posting.
    newest: HashMap<String, StreamId>,
}

impl Delivered {
    /// Keeps the chats that are newer than what was delivered in their room
    /// and than the chats of their room earlier in the batch. Duplicates
    /// arise when a gap fill re-reads chats that were still queued.
    pub fn admit(&self, batch: Vec<Chat>) -> Vec<Chat> {
        let mut newest_in_batch: HashMap<&str, StreamId> = HashMap::new();
        let mut keep = Vec::with_capacity(batch.len());
        for chat in &batch {
            let Some(id) = chat.stream_id() else {
                warn!(room = %chat.room, id = %chat.id, "dropping a chat with a malformed id");
                keep.push(false);
                continue;
            };
            let floor = newest_in_batch
                .get(chat.room.as_str())
                .or_else(|| self.newest.get(&chat.room))
                .copied();
            let newer = floor.is_none_or(|floor| id > floor);
            if newer {
                newest_in_batch.insert(&chat.room, id);
            }
            keep.push(newer);
        }
        drop(newest_in_batch);
        batch
            .into_iter()
            .zip(keep)
            .filter_map(|(chat, keep)| keep.then_some(chat))
            .collect()
    }

    /// Remembers a batch the app accepted (admitted chats are in order per room).
    pub fn record(&mut self, batch: &[Chat]) {
        for chat in batch {
            if let Some(id) = chat.stream_id() {
                self.newest.insert(chat.room.clone(), id);
            }
        }
    }
}

/// Posts queued chats to the app; the only user of its connection.
pub struct Forwarder {
    /// Connection to the app's internal API.
    client: AppClient,
    /// Where the feed puts chats.
    queue: Arc<Queue>,
    /// Records when the app last took a POST.
    status: Arc<Status>,
    /// Where batches, retries and rejections are counted for `/metrics`.
    metrics: Arc<Metrics>,
    /// Most chats in one POST (`queue.batch_max`).
    batch_max: usize,
    /// Post an empty batch when nothing was posted for this long.
    heartbeat: Duration,
    /// Delays between retries of one batch.
    retry: Backoff,
    /// The newest id posted per room, so a chat read twice (live and by a
    /// fill) or out of order is never posted after a newer one.
    delivered: Delivered,
}

/// How one POST of a batch ended.
enum Posted {
    /// Accepted, or refused as malformed and dropped (a refill is scheduled).
    Done,
    /// Over the app's size limit (413): to be split.
    TooLarge(Vec<Chat>),
    /// Stop was requested while retrying.
    Stopped(Vec<Chat>),
}

impl Forwarder {
    pub fn new(
        client: AppClient,
        queue: Arc<Queue>,
        status: Arc<Status>,
        metrics: Arc<Metrics>,
        batch_max: usize,
        heartbeat: Duration,
        retry: Backoff,
    ) -> Forwarder {
        Forwarder {
            client,
            queue,
            status,
            metrics,
            batch_max: batch_max.max(1),
            heartbeat,
            retry,
            delivered: Delivered::default(),
        }
    }

    /// Forwards until `stop` turns true (or its sender goes), then flushes
    /// what is queued; the caller bounds the flush with a timeout.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // The first heartbeat goes out at once, so the app hears of us early.
        let now = Instant::now();
        let mut last_post = now.checked_sub(self.heartbeat).unwrap_or(now);
        let pending = loop {
            let wait = self.heartbeat.saturating_sub(last_post.elapsed());
            let taken = tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => break Vec::new(),
                batch = self.queue.next_batch(self.batch_max, wait) => batch,
            };
            let was_empty = taken.is_empty();
            let batch = self.delivered.admit(taken);
            if batch.is_empty() && !was_empty {
                continue;
            }
            match self.deliver(batch, Some(&mut stop)).await {
                Ok(()) => last_post = Instant::now(),
                Err(left) => break left,
            }
        };
        self.flush(pending).await;
    }

    async fn flush(&mut self, pending: Vec<Chat>) {
        let queued = self.queue.len() + pending.len();
        info!(queued, "flushing the queue to the app");
        let mut batch = self.delivered.admit(pending);
        loop {
            if !batch.is_empty() && self.deliver(batch, None).await.is_err() {
                return;
            }
            let next = self.queue.take(self.batch_max);
            if next.is_empty() {
                info!("queue flushed");
                return;
            }
            batch = self.delivered.admit(next);
        }
    }

    /// Posts `batch` until the app takes it (or refuses it as malformed). A
    /// batch over the app's size limit is split in halves, sent in order.
    /// With `stop`, a stop request during a retry wait ends it, handing back
    /// what is left (`Err`) for the flush.
    async fn deliver(
        &mut self,
        batch: Vec<Chat>,
        mut stop: Option<&mut watch::Receiver<bool>>,
    ) -> Result<(), Vec<Chat>> {
        // Parts still to send; the last one goes first.
        let mut parts = vec![batch];
        while let Some(part) = parts.pop() {
            match self.post(part, stop.as_deref_mut()).await {
                Posted::Done => {}
                Posted::TooLarge(mut part) if part.len() > 1 => {
                    let tail = part.split_off(part.len() / 2);
                    parts.push(tail);
                    parts.push(part);
                }
                Posted::TooLarge(part) => {
                    // Refilling would read the same chat again: it can never be delivered.
                    error!(room = ?part.first().map(|c| &c.room), "a single chat is over the app's size limit; dropped");
                    self.metrics.batches_rejected.inc();
                }
                Posted::Stopped(part) => {
                    let rest = parts.into_iter().rev().flatten();
                    return Err(part.into_iter().chain(rest).collect());
                }
            }
        }
        Ok(())
    }

    /// Posts one batch, retrying what retrying can fix.
    async fn post(&mut self, batch: Vec<Chat>, mut stop: Option<&mut watch::Receiver<bool>>) -> Posted {
        loop {
            let error = match self.client.post_events(&batch).await {
                Ok(()) => {
                    self.accepted(&batch);
                    return Posted::Done;
                }
                Err(error) => error,
            };
            let delay = self.retry.next_delay();
            let attempt = self.retry.attempts();
            match error.failure() {
                Failure::Rejected => {
                    error!(%error, chats = batch.len(), "batch dropped; refilling from the streams");
                    self.metrics.batches_rejected.inc();
                    if !batch.is_empty() {
                        self.queue.request_fill();
                    }
                    // Pause anyway, so an app that refuses everything is not hammered.
                    tokio::time::sleep(delay).await;
                    return Posted::Done;
                }
                Failure::TooLarge => {
                    warn!(%error, chats = batch.len(), "batch over the app's size limit; splitting it");
                    self.retry.reset();
                    return Posted::TooLarge(batch);
                }
                Failure::Unauthorized => {
                    error!(%error, attempt, retry_in = ?delay, "app refuses our token; nothing is delivered")
                }
                Failure::Transient => {
                    warn!(%error, attempt, chats = batch.len(), retry_in = ?delay, "post to the app failed")
                }
            }
            self.metrics.retries.inc();
            match stop.as_deref_mut() {
                Some(stop) => {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|stopped| *stopped) => return Posted::Stopped(batch),
                    }
                }
                None => tokio::time::sleep(delay).await,
            }
        }
    }

    fn accepted(&mut self, batch: &[Chat]) {
        if self.retry.attempts() > 0 {
            info!("the app takes posts again");
        }
        self.retry.reset();
        self.status.app_succeeded();
        if batch.is_empty() {
            self.metrics.heartbeats.inc();
        } else {
            self.metrics.batches.inc();
            self.metrics.forwarded_chats.inc_by(batch.len() as u64);
            self.delivered.record(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::chat;

    fn ids(batch: &[Chat]) -> Vec<String> {
        batch.iter().map(|c| format!("{}:{}", c.room, c.id)).collect()
    }

    #[test]
    fn admit_keeps_new_chats_in_order_across_rooms() {
        let d = Delivered::default();
        let batch = vec![
            chat("a", "1-0"),
            chat("b", "5-0"),
            chat("a", "2-0"),
            chat("b", "6-0"),
        ];
        assert_eq!(ids(&d.admit(batch)), ["a:1-0", "b:5-0", "a:2-0", "b:6-0"]);
    }

    #[test]
    fn admit_drops_what_was_delivered_and_repeats_within_the_batch() {
        let mut d = Delivered::default();
        d.record(&[chat("a", "3-0")]);
        // A refill re-reads 2-0 and 3-0 after they were queued live; only 4-0 is new.
        let batch = vec![
            chat("a", "2-0"),
            chat("a", "3-0"),
            chat("a", "4-0"),
            chat("a", "4-0"),
        ];
        assert_eq!(ids(&d.admit(batch)), ["a:4-0"]);
    }

    #[test]
    fn admit_compares_ids_numerically() {
        let mut d = Delivered::default();
        d.record(&[chat("a", "9-0")]);
        assert_eq!(ids(&d.admit(vec![chat("a", "10-0")])), ["a:10-0"]);
    }

    #[test]
    fn admit_drops_malformed_ids() {
        let d = Delivered::default();
        assert!(d.admit(vec![chat("a", "nope")]).is_empty());
    }
}
