//! The hash keys a server's open sessions were placed by, so operators see
//! which rooms live where (admin API, stats page). Its size follows the
//! server's open sessions: a key leaves when its last session ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Open sessions per hash key on one server.
#[derive(Debug, Default)]
pub struct OpenKeys(Mutex<HashMap<Arc<str>, usize>>);

impl OpenKeys {
    fn map(&self) -> MutexGuard<'_, HashMap<Arc<str>, usize>> {
        // Only counts are written under the lock: a poisoned one is intact.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session placed by `key` opened.
    pub fn opened(&self, key: &Arc<str>) {
        *self.map().entry(key.clone()).or_default() += 1;
    }

    /// A session placed by `key` ended.
    pub fn closed(&self, key: &Arc<str>) {
        let mut map = self.map();
        if let Some(n) = map.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                map.remove(key);
            }
        }
    }

    /// Open sessions placed by `key`.
    pub fn count(&self, key: &str) -> usize {
        self.map().get(key).copied().unwrap_or(0)
    }

    /// At most `limit` keys, most sessions first (then by key), and how
    /// many distinct keys there are.
    pub fn top(&self, limit: usize) -> (Vec<(Arc<str>, usize)>, usize) {
        let map = self.map();
        let mut all: Vec<(Arc<str>, usize)> = map.iter().map(|(k, n)| (k.clone(), *n)).collect();
        drop(map);
        let distinct = all.len();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(limit);
        (all, distinct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_leave_with_their_last_session_and_the_busiest_come_first() {
        let keys = OpenKeys::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        keys.opened(&a);
        keys.opened(&b);
        keys.opened(&b);
        assert_eq!(keys.top(1), (vec![(b.clone(), 2)], 2));
        assert_eq!((keys.count("a"), keys.count("b"), keys.count("c")), (1, 2, 0));
        keys.closed(&a);
        keys.closed(&b);
        assert_eq!(keys.top(10), (vec![(b.clone(), 1)], 1));
        keys.closed(&b);
        assert_eq!(keys.top(10), (vec![], 0));
    }
}
