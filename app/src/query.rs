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
    /// What was wrong, for people: the `error` frame's message and the close
    /// reason.
    pub message: String,
}

/// Parses the raw query (without `?`) as `application/x-www-form-urlencoded`
/// (`%XX` and `+` decoded). Unknown keys are ignored; a repeated key takes its
/// last value. A broken escape stays as it is and bytes that are not UTF-8
/// become U+FFFD: neither can appear in a valid room, stream id or session
/// token, so such a value is refused (room, since) or unknown (session).
pub fn parse(query: Option<&str>) -> Result<Connect, BadQuery> {
    let mut room = None;
    let mut since = None;
    let mut session = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "room" => room = Some(value.into_owned()),
            "since" => since = Some(value.into_owned()),
            "session" => session = Some(value.into_owned()),
            _ => {}
        }
    }
    let room = match room {
        None => DEFAULT_ROOM.to_string(),
        Some(r) if is_valid_room(&r) => r,
        Some(_) => {
            return Err(BadQuery {
                code: ErrorCode::BadRoom,
                message: "room must match [A-Za-z0-9_-]{1,64}".into(),
            })
        }
    };
    let since = match since {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => Some(s.parse::<StreamId>().map_err(|_| BadQuery {
            code: ErrorCode::BadSince,
            message: "since must be a stream id like 1700000000000-0".into(),
        })?),
    };
    let session = session.filter(|s| !s.is_empty());
    Ok(Connect { room, since, session })
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

    #[test]
    fn percent_encoded_room_names_decode_before_the_check() {
        assert_eq!(parse(Some("room=dev%2D1")).expect("ok").room, "dev-1");
        assert_eq!(parse(Some("room=%41%62c")).expect("ok").room, "Abc");
        assert_eq!(
            parse(Some("since=17%2D3")).expect("ok").since,
            Some(StreamId { ms: 17, seq: 3 })
        );
        for q in [
            "room=a+b",
            "room=a%2Fb",
            "room=%C3%A9",
            "room=a%26b",
            "room=lobby%00",
        ] {
            assert_eq!(parse(Some(q)).unwrap_err().code, ErrorCode::BadRoom, "{q}");
        }
    }

    #[test]
    fn broken_escapes_are_refused_or_ignored() {
        for q in ["room=%", "room=%4", "room=%G1", "room=%FF"] {
            assert_eq!(parse(Some(q)).unwrap_err().code, ErrorCode::BadRoom, "{q}");
        }
        for q in ["since=%", "since=1-%3", "since=%ZZ", "since=%C3%28"] {
            assert_eq!(parse(Some(q)).unwrap_err().code, ErrorCode::BadSince, "{q}");
        }
        assert_eq!(parse(Some("session=")).expect("ok").session, None);
        assert_eq!(parse(Some("room=x&room=y&since=&&")).expect("ok").room, "y");
    }
}
