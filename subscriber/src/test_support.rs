//! Fixtures shared by the unit tests.

use wsmesh_common::chat::Chat;

/// A chat with `id` in `room`; the other fields fixed.
pub fn chat(room: &str, id: &str) -> Chat {
    Chat {
        id: id.into(),
        room: room.into(),
        nick: "n".into(),
        body: "b".into(),
        ts: 0,
        cid: None,
    }
}
