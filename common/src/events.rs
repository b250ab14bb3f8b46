//! Wire types of the internal subscriber → app HTTP API
//! (`POST /internal/events`, `GET /internal/cursors`, `GET /internal/rooms`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chat::{is_valid_room, Chat};

/// Path the subscriber posts batches (and heartbeats) to.
pub const EVENTS_PATH: &str = "/internal/events";
/// Path the subscriber reads the app's per-room delivery cursors from.
pub const CURSORS_PATH: &str = "/internal/cursors";
/// Path the subscriber long-polls for the rooms the app has sockets in
/// (query: [`RoomsQuery`], answer: [`Interest`]).
pub const ROOMS_PATH: &str = "/internal/rooms";

/// Body of `POST /internal/events`: chats in the order they were published.
/// An empty batch is the subscriber's heartbeat.
pub type EventBatch = Vec<Chat>;

/// Body of `GET /internal/cursors`: room → last stream id the app delivered
/// (or knows it is covered up to). The subscriber refills each room from there.
pub type Cursors = BTreeMap<String, String>;

/// Query of `GET /internal/cursors`: only these rooms (`?rooms=a,b`), or
/// every room the app has a cursor for when `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CursorsQuery {
    /// The rooms asked about; names that are not valid rooms are left out.
    pub rooms: Option<Vec<String>>,
}

impl CursorsQuery {
    /// The query string (without `?`); empty for every room.
    pub fn encode(&self) -> String {
        match &self.rooms {
            Some(rooms) => format!("rooms={}", rooms.join(",")),
            None => String::new(),
        }
    }

    /// Reads a query string; unknown parameters are ignored.
    pub fn parse(query: Option<&str>) -> CursorsQuery {
        let rooms = pairs(query).find(|(k, _)| *k == "rooms").map(|(_, v)| {
            v.split(',')
                .filter(|r| is_valid_room(r))
                .map(str::to_string)
                .collect()
        });
        CursorsQuery { rooms }
    }
}

/// One state of the app's room set. `epoch` is drawn when the app process
/// starts, `version` grows with every change of `rooms`, so a subscriber
/// can tell "the same set" from "a newer one" and from "another process".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InterestVersion {
    /// Random per app process: versions of different processes never compare.
    pub epoch: u64,
    /// Grows by one with every room that gains its first or loses its last socket.
    pub version: u64,
}

/// Body of `GET /internal/rooms`: the rooms the app has local sockets in.
/// The subscriber subscribes to exactly these (plus, for a grace period,
/// those that just left the set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interest {
    /// Which state of the set this is.
    #[serde(flatten)]
    pub at: InterestVersion,
    /// The rooms, sorted.
    pub rooms: Vec<String>,
}

/// Query of `GET /internal/rooms`.
///
/// The subscriber sends the version it knows and the newest version it has
/// confirmed: every room of that version is subscribed (SUBSCRIBE
/// acknowledged by Redis) and a room newly subscribed was gap-filled after
/// its SUBSCRIBE. The app answers at once when its set is not `known`,
/// else when it changes or after `wait`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomsQuery {
    /// The version the subscriber holds; `None` on its first request.
    pub known: Option<InterestVersion>,
    /// The newest version (of `known`'s epoch) the subscriber has confirmed.
    pub confirmed: Option<u64>,
    /// How long the app may hold the answer while nothing changes.
    pub wait: Duration,
}

impl RoomsQuery {
    /// The query string (without `?`).
    pub fn encode(&self) -> String {
        let mut out = format!("wait_ms={}", self.wait.as_millis());
        if let Some(known) = self.known {
            out.push_str(&format!("&epoch={}&version={}", known.epoch, known.version));
            if let Some(confirmed) = self.confirmed {
                out.push_str(&format!("&confirmed={confirmed}"));
            }
        }
        out
    }

    /// Reads a query string; `Err` names the parameter that is not a number.
    pub fn parse(query: Option<&str>) -> Result<RoomsQuery, String> {
        let mut fields: BTreeMap<&str, u64> = BTreeMap::new();
        for (key, value) in pairs(query) {
            if matches!(key, "wait_ms" | "epoch" | "version" | "confirmed") {
                let n = value
                    .parse()
                    .map_err(|_| format!("{key} must be a whole number"))?;
                fields.insert(key, n);
            }
        }
        let known = match (fields.get("epoch"), fields.get("version")) {
            (Some(&epoch), Some(&version)) => Some(InterestVersion { epoch, version }),
            (None, None) => None,
            _ => return Err("epoch and version go together".into()),
        };
        Ok(RoomsQuery {
            known,
            confirmed: known.and(fields.get("confirmed").copied()),
            wait: Duration::from_millis(fields.get("wait_ms").copied().unwrap_or(0)),
        })
    }
}

/// `key=value` pairs of a query string (values are numbers and room names,
/// which need no percent-decoding).
fn pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_query_round_trips() {
        let q = RoomsQuery {
            known: Some(InterestVersion { epoch: 7, version: 3 }),
            confirmed: Some(2),
            wait: Duration::from_secs(10),
        };
        assert_eq!(q.encode(), "wait_ms=10000&epoch=7&version=3&confirmed=2");
        assert_eq!(RoomsQuery::parse(Some(&q.encode())), Ok(q));
        let first = RoomsQuery {
            wait: Duration::ZERO,
            ..RoomsQuery::default()
        };
        assert_eq!(RoomsQuery::parse(Some(&first.encode())), Ok(first));
        assert_eq!(RoomsQuery::parse(None), Ok(RoomsQuery::default()));
    }

    #[test]
    fn a_bad_rooms_query_is_refused() {
        assert!(RoomsQuery::parse(Some("wait_ms=x")).is_err());
        assert!(RoomsQuery::parse(Some("epoch=1")).is_err());
        // A confirmation without the epoch it belongs to means nothing.
        assert_eq!(
            RoomsQuery::parse(Some("confirmed=4")).map(|q| q.confirmed),
            Ok(None)
        );
    }

    #[test]
    fn cursors_query_keeps_only_valid_rooms() {
        let q = CursorsQuery {
            rooms: Some(vec!["a".into(), "b-2".into()]),
        };
        assert_eq!(q.encode(), "rooms=a,b-2");
        assert_eq!(CursorsQuery::parse(Some("rooms=a,b-2")), q);
        assert_eq!(
            CursorsQuery::parse(Some("rooms=a,b%20c,")).rooms,
            Some(vec!["a".to_string()])
        );
        assert_eq!(CursorsQuery::parse(None), CursorsQuery::default());
    }

    #[test]
    fn interest_json_is_flat() {
        let i = Interest {
            at: InterestVersion { epoch: 1, version: 2 },
            rooms: vec!["a".into()],
        };
        let json = serde_json::to_string(&i).unwrap();
        assert_eq!(json, r#"{"epoch":1,"version":2,"rooms":["a"]}"#);
        assert_eq!(serde_json::from_str::<Interest>(&json).unwrap(), i);
    }
}
