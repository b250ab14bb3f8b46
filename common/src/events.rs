//! Wire types of the internal subscriber → app HTTP API
//! (`POST /internal/events`, `GET /internal/cursors`).

use std::collections::BTreeMap;

use crate::chat::Chat;

/// Path the subscriber posts batches (and heartbeats) to.
pub const EVENTS_PATH: &str = "/internal/events";
/// Path the subscriber reads the app's per-room delivery cursors from.
pub const CURSORS_PATH: &str = "/internal/cursors";

/// Body of `POST /internal/events`: chats in the order they were published.
/// An empty batch is the subscriber's heartbeat.
pub type EventBatch = Vec<Chat>;

/// Body of `GET /internal/cursors`: room → last stream id the app delivered
/// (or knows it is covered up to). The subscriber refills each room from there.
pub type Cursors = BTreeMap<String, String>;

/// Redis key and channel names, all under one prefix so a shared Redis stays tidy.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Project prefix, `wsmesh:` by default.
    pub prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }
    /// Stream holding a room's messages.
    pub fn stream(&self, room: &str) -> String {
        format!("{}room:{}", self.prefix, room)
    }
    /// Remembered `cid` → id, with a TTL.
    pub fn cid(&self, room: &str, cid: &str) -> String {
        format!("{}cid:{}:{}", self.prefix, room, cid)
    }
    /// Hash with a session's nick and connected_since, with a TTL.
    pub fn session(&self, token: &str) -> String {
        format!("{}session:{}", self.prefix, token)
    }
    /// Set of every room that ever had a message.
    pub fn rooms(&self) -> String {
        format!("{}rooms", self.prefix)
    }
    /// Hash of a room's online count per instance (field = instance name,
    /// value = `count:expiry_unix_ms`), summed for the cluster-wide presence.
    pub fn presence(&self, room: &str) -> String {
        format!("{}presence:{}", self.prefix, room)
    }
    /// Pub/sub channel every stored chat is published on (JSON `Chat`).
    pub fn channel(&self) -> String {
        format!("{}chat", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_the_prefix() {
        let k = Keys::new("wsmesh:");
        for key in [
            k.stream("lobby"),
            k.cid("lobby", "c"),
            k.session("t"),
            k.rooms(),
            k.presence("lobby"),
            k.channel(),
        ] {
            assert!(key.starts_with("wsmesh:"), "{key}");
        }
    }
}
