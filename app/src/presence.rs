//! Cluster-wide "online" count per room. Each instance writes its own local
//! count into the room's presence hash with an expiry and sums everyone's
//! unexpired counts; a dead instance's share disappears by itself. Local
//! clients hear the total whenever it changes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::hub::Hub;
use crate::store::{Store, StoreError};

/// How often every room with local sockets is refreshed.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How long one written count stays valid: a few missed refreshes.
const VALID_FOR: Duration = Duration::from_secs(6);

/// Keeps this instance's counts in Redis and announces totals.
#[derive(Debug, Clone)]
pub struct Presence {
    /// Local sockets per room, and where announcements go.
    hub: Arc<Hub>,
    /// Where each instance's count is written and the total summed.
    store: Store,
    /// This instance's name: its field in each room's presence hash.
    instance: String,
}

impl Presence {
    pub fn new(hub: Arc<Hub>, store: Store, instance: String) -> Self {
        Presence { hub, store, instance }
    }

    /// Writes the local count of `room` and reads the cluster-wide total.
    /// Joining sockets use this for their own first presence frame; the room
    /// hears about changes only from `run`, at most once per `INTERVAL`, so N
    /// joins cost N frames, not N².
    pub async fn total(&self, room: &str) -> Result<u64, StoreError> {
        let local = self.hub.local_count(room);
        self.store.presence(room, &self.instance, local, VALID_FOR).await
    }

    /// Refreshes every room with local sockets every `INTERVAL`, and clears
    /// this instance's count in rooms it left. Runs until the task is dropped.
    pub async fn run(self) {
        let mut reported: HashSet<String> = HashSet::new();
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let rooms: HashSet<String> = self.hub.local_counts().into_iter().map(|(r, _)| r).collect();
            for room in rooms.union(&reported) {
                match self.total(room).await {
                    Ok(online) => self.hub.announce_presence(room, online),
                    Err(e) => tracing::debug!(room = %room, error = %e, "presence refresh failed"),
                }
            }
            reported = rooms;
        }
    }
}
