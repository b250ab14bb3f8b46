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
