//! Cluster-wide "online" count per room. Each instance writes its own local
//! count into the room's presence hash with an expiry and sums everyone's
//! unexpired counts; a dead instance's share disappears by itself. Local
//! clients hear the total whenever it changes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::hub::{ConnId, Hub};
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
    /// Redis.
    store: Store,
    /// Field name in the presence hashes.
    instance: String,
}

impl Presence {
    pub fn new(hub: Arc<Hub>, store: Store, instance: String) -> Self {
        Presence { hub, store, instance }
    }

    /// Writes the local count of `room`, reads the total and announces it to
    /// the room (except `skip`, which gets it from its caller).
    pub async fn refresh(&self, room: &str, skip: Option<ConnId>) -> Result<u64, StoreError> {
        let local = self.hub.local_count(room);
        let total = self
            .store
            .presence(room, &self.instance, local, VALID_FOR)
            .await?;
        self.hub.announce_presence(room, total, skip);
        Ok(total)
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
                if let Err(e) = self.refresh(room, None).await {
                    tracing::debug!(room = %room, error = %e, "presence refresh failed");
                }
            }
            reported = rooms;
        }
    }
}
