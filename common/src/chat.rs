//! One chat message as it travels everywhere: Redis pub/sub payload, the
//! internal event batch, and the client protocol all carry this same shape.

use serde::{Deserialize, Serialize};

use crate::stream_id::StreamId;

/// A stored chat message. `id` is the Redis stream id of the room's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    /// Redis stream id as a string; grows within a room.
    pub id: String,
    /// Room the message belongs to.
    pub room: String,
    /// Sender's nick at the time of sending.
    pub nick: String,
    /// Message text as the sender wrote it (the app refuses bodies over
    /// `limits.max_body_bytes`).
    pub body: String,
    /// Unix milliseconds, taken from the stream id (server time).
    pub ts: u64,
    /// Client-chosen idempotency key, if the sender gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
}

impl Chat {
    /// The parsed stream id, or `None` when a peer sent a malformed one.
    pub fn stream_id(&self) -> Option<StreamId> {
        self.id.parse().ok()
    }
}

/// Longest room name accepted (`[A-Za-z0-9_-]{1,64}`).
pub const ROOM_MAX_LEN: usize = 64;

/// Room used when the client names none.
pub const DEFAULT_ROOM: &str = "lobby";

/// Whether `room` matches `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_room(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= ROOM_MAX_LEN
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(is_valid_room("lobby"));
        assert!(is_valid_room("A_b-9"));
        assert!(is_valid_room(&"x".repeat(64)));
        assert!(!is_valid_room(&"x".repeat(65)));
        assert!(!is_valid_room(""));
        assert!(!is_valid_room("a b"));
        assert!(!is_valid_room("é"));
        assert!(!is_valid_room("../x"));
    }

    #[test]
    fn cid_is_omitted_when_absent() {
        let c = Chat {
            id: "1-0".into(),
            room: "lobby".into(),
            nick: "ana".into(),
            body: "hi".into(),
            ts: 1,
            cid: None,
        };
        let s = serde_json::to_string(&c).unwrap();
        assert!(!s.contains("cid"), "{s}");
        assert_eq!(serde_json::from_str::<Chat>(&s).unwrap(), c);
    }
}
