//! The `/ws` query string (`room`, `since`, `session`), checked before the
//! socket does anything, so a bad value is refused with its own error code.

use wsmesh_common::chat::{is_valid_room, DEFAULT_ROOM};
use wsmesh_common::protocol::ErrorCode;
use wsmesh_common::stream_id::StreamId;

/// What a client asked for when connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Room to join (`lobby` by default).
    pub room: String,
    /// Resume after this id instead of getting the last N messages.
    pub since: Option<StreamId>,
    /// Session token from an earlier `welcome`.
    pub session: Option<String>,
}

/// A query value that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadQuery {
    /// `bad_room` or `bad_since`.
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
}

/// Parses the raw query (without `?`). Unknown keys are ignored; a repeated key
/// takes its last value.
pub fn parse(query: Option<&str>) -> Result<Connect, BadQuery> {
    let mut room = None;
    let mut since = None;
    let mut session = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "room" => room = Some(value),
            "since" => since = Some(value),
            "session" => session = Some(value),
            _ => {}
        }
    }
    let room = match room {
        None => DEFAULT_ROOM.to_string(),
        Some(Some(r)) if is_valid_room(&r) => r,
        Some(_) => {
            return Err(BadQuery {
                code: ErrorCode::BadRoom,
                message: "room must match [A-Za-z0-9_-]{1,64}".into(),
            })
        }
    };
    let since = match since {
        None => None,
        Some(Some(s)) if s.is_empty() => None,
        Some(s) => Some(
            s.and_then(|s| s.parse::<StreamId>().ok())
                .ok_or_else(|| BadQuery {
                    code: ErrorCode::BadSince,
                    message: "since must be a stream id like 1700000000000-0".into(),
                })?,
        ),
    };
    let session = session.flatten().filter(|s| !s.is_empty());
    Ok(Connect { room, since, session })
}

/// Decodes `%XX` and `+`; `None` when the result is not UTF-8 or an escape is
/// broken.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_lobby_without_since() {
        let c = parse(None).expect("empty query is fine");
        assert_eq!(c.room, "lobby");
        assert_eq!(c.since, None);
        assert_eq!(c.session, None);
    }

    #[test]
    fn reads_all_three_and_ignores_unknown_keys() {
        let c = parse(Some("room=dev-1&since=17-3&session=abc&x=y")).expect("valid");
        assert_eq!(c.room, "dev-1");
        assert_eq!(c.since, Some(StreamId { ms: 17, seq: 3 }));
        assert_eq!(c.session.as_deref(), Some("abc"));
    }

    #[test]
    fn bad_room_is_refused_with_its_code() {
        for q in ["room=a%20b", "room=", "room=%ZZ", "room=../x"] {
            assert_eq!(parse(Some(q)).unwrap_err().code, ErrorCode::BadRoom, "{q}");
        }
        let long = format!("room={}", "r".repeat(65));
        assert_eq!(parse(Some(&long)).unwrap_err().code, ErrorCode::BadRoom);
    }

    #[test]
    fn bad_since_is_refused_with_its_code() {
        for q in ["since=abc", "since=1-2-3", "since=%FF"] {
            assert_eq!(parse(Some(q)).unwrap_err().code, ErrorCode::BadSince, "{q}");
        }
    }

    #[test]
    fn empty_since_means_none_and_percent_escapes_decode() {
        assert_eq!(parse(Some("since=")).expect("ok").since, None);
        assert_eq!(parse(Some("room=a%5Fb")).expect("ok").room, "a_b");
    }
}
