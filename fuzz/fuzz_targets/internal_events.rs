//! The internal API's bodies and queries as the app and the subscriber
//! read them, and the app's fan-out of an events batch.
//!
//! - `POST /internal/events`: a batch that parses re-serialises and
//!   re-parses to itself. Its chats with a valid room and stream id, handed
//!   to a hub with a live socket in each of their rooms, reach each socket
//!   exactly as the model says: the room's chats in batch order, each id
//!   newer than the last one delivered (and than 0-0), nothing of another
//!   room; the count of fresh chats the hub returns is their number. The `chat` frame of a
//!   delivery re-parses to the same chats.
//! - Stream ids that parse print as an id that parses to the same value.
//! - `GET /internal/rooms` and `/internal/cursors`: a query that parses
//!   encodes to a query that parses to the same value; the answers'
//!   bodies re-serialise and re-parse to themselves.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use app::hub::{Hub, Outbound, Start};
use app::metrics::Metrics;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use wsmesh_common::chat::{is_valid_room, Chat};
use wsmesh_common::events::{Cursors, CursorsQuery, EventBatch, Interest, RoomsQuery};
use wsmesh_common::protocol::ServerFrame;
use wsmesh_common::stream_id::StreamId;

/// Most rooms given a socket per input.
const MAX_ROOMS: usize = 16;

fn round_trips<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    let json = serde_json::to_vec(&value).expect("a parsed body serialises");
    let again: T = serde_json::from_slice(&json).expect("its own output parses");
    assert_eq!(again, value);
    Some(value)
}

/// What each room's socket must receive: per room, the chats in batch
/// order whose id is newer than the last one kept.
fn model(valid: &[Chat]) -> BTreeMap<&str, Vec<&Chat>> {
    let mut rooms: BTreeMap<&str, (StreamId, Vec<&Chat>)> = BTreeMap::new();
    for chat in valid {
        let id = chat.stream_id().expect("only valid ids here");
        let (last, kept) = rooms.entry(&chat.room).or_insert((StreamId::ZERO, Vec::new()));
        if kept.is_empty() || id > *last {
            *last = id;
            kept.push(chat);
        }
    }
    rooms.into_iter().map(|(room, (_, kept))| (room, kept)).collect()
}

fn deliver(batch: EventBatch) {
    static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
    let metrics = METRICS.get_or_init(|| Arc::new(Metrics::new())).clone();
    // As `POST /internal/events` sorts them.
    let valid: Vec<Chat> = batch
        .into_iter()
        .filter(|c| is_valid_room(&c.room) && c.stream_id().is_some())
        .collect();
    let expected = model(&valid);
    let hub = Hub::new(1024, metrics);
    let mut members: Vec<_> = expected
        .keys()
        .take(MAX_ROOMS)
        .map(|room| hub.join(room, Start::Live))
        .collect();
    let fresh = hub.deliver(valid.clone());
    let mut total = 0;
    for member in &mut members {
        let mut got: Vec<Chat> = Vec::new();
        while let Ok(out) = member.rx.try_recv() {
            let Outbound::Chats(batch) = out else {
                continue;
            };
            let frame = ServerFrame::Chat {
                chats: batch.chats().iter().map(|c| Chat::clone(c)).collect(),
            };
            let json = serde_json::to_string(&frame).expect("a chat frame serialises");
            assert_eq!(serde_json::from_str::<ServerFrame>(&json).expect("it parses"), frame);
            got.extend(batch.chats().iter().map(|c| Chat::clone(c)));
        }
        let kept = &expected[member.room.as_str()];
        total += kept.len();
        // A socket starts after 0-0, an id Redis never assigns.
        let want: Vec<Chat> = kept
            .iter()
            .filter(|c| c.stream_id() > Some(StreamId::ZERO))
            .map(|c| Chat::clone(c))
            .collect();
        assert_eq!(got, want, "room {}", member.room);
    }
    if members.len() == expected.len() {
        assert_eq!(fresh, total, "fresh chats reported");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(batch) = round_trips::<EventBatch>(data) {
        for chat in &batch {
            if let Some(id) = chat.stream_id() {
                assert_eq!(id.to_string().parse::<StreamId>(), Ok(id), "{:?}", chat.id);
            }
        }
        deliver(batch);
    }
    round_trips::<Interest>(data);
    round_trips::<Cursors>(data);
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = query.parse::<StreamId>() {
        assert_eq!(id.to_string().parse::<StreamId>(), Ok(id), "{query:?}");
    }
    if let Ok(q) = RoomsQuery::parse(Some(query)) {
        assert_eq!(RoomsQuery::parse(Some(&q.encode())), Ok(q), "{query:?}");
    }
    let q = CursorsQuery::parse(Some(query));
    assert_eq!(CursorsQuery::parse(Some(&q.encode())), q, "{query:?}");
});
