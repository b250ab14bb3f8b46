//! Delivery dedup by stream id: what lets a client that reconnects and
//! replays history yield every chat exactly once, in order.

use std::collections::{HashSet, VecDeque};

use wsmesh_common::stream_id::StreamId;

/// Whether a chat is new, seen, or behind what was yielded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Newer than everything yielded: yield it.
    New,
    /// Already yielded.
    Duplicate,
    /// Older than the last yielded but never yielded: a gap in ordering.
    OutOfOrder,
}

/// Delivery dedup by stream id: yields only increasing ids and remembers a
/// bounded window of recent ones to tell duplicates from reordering.
#[derive(Debug, Default)]
pub(super) struct Dedup {
    /// Highest id yielded.
    pub(super) last: Option<StreamId>,
    /// Recently yielded ids, for classification.
    recent: HashSet<StreamId>,
    /// Insertion order of `recent`, to bound it.
    order: VecDeque<StreamId>,
}

impl Dedup {
    /// Ids remembered for telling duplicates from reordering.
    const WINDOW: usize = 4096;

    pub(super) fn judge(&mut self, id: StreamId) -> Verdict {
        if self.last.is_some_and(|last| id <= last) {
            return if self.recent.contains(&id) || self.order.len() == Self::WINDOW {
                Verdict::Duplicate
            } else {
                Verdict::OutOfOrder
            };
        }
        self.last = Some(id);
        self.recent.insert(id);
        self.order.push_back(id);
        if self.order.len() > Self::WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.recent.remove(&old);
            }
        }
        Verdict::New
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> StreamId {
        s.parse().unwrap()
    }

    #[test]
    fn dedup_yields_increasing_ids_once_and_classifies_the_rest() {
        let mut d = Dedup::default();
        assert_eq!(d.judge(id("5-0")), Verdict::New);
        assert_eq!(d.judge(id("10-0")), Verdict::New);
        assert_eq!(d.judge(id("5-0")), Verdict::Duplicate);
        assert_eq!(d.judge(id("10-0")), Verdict::Duplicate);
        assert_eq!(d.judge(id("7-0")), Verdict::OutOfOrder);
        assert_eq!(d.judge(id("10-1")), Verdict::New);
    }

    #[test]
    fn dedup_memory_stays_bounded() {
        let mut d = Dedup::default();
        for ms in 1..=(Dedup::WINDOW as u64 * 2) {
            assert_eq!(d.judge(StreamId { ms, seq: 0 }), Verdict::New);
        }
        assert_eq!(d.recent.len(), Dedup::WINDOW);
        assert_eq!(d.judge(StreamId { ms: 1, seq: 0 }), Verdict::Duplicate);
    }
}
