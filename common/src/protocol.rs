//! The `wsmesh.v1` client protocol: JSON text frames on `/ws`.
//! See docs/protocol.md, "Client protocol". The app serves it, the lab client
//! speaks it, so both use these types.

use serde::{Deserialize, Serialize};

use crate::chat::Chat;

/// WebSocket subprotocol name a v1 client offers and the server selects.
pub const SUBPROTOCOL: &str = "wsmesh.v1";

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    /// First frame on every connection.
    Welcome {
        session: String,
        nick: String,
        room: String,
        instance: String,
        connected_since: u64,
    },
    /// Replay sent right after `welcome`.
    History {
        room: String,
        chats: Vec<Chat>,
        /// Set when `since` is older than what the room still retains.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    /// Live messages, or the rest of a long replay after `history`; in id
    /// order.
    Chat { chats: Vec<Chat> },
    /// A `send` that carried a `cid` is stored under `id`.
    Ack { cid: String, id: String },
    /// Sockets in the room across all instances; sent after joining and
    /// whenever the count changes.
    Presence { room: String, online: u64 },
    /// Something the client sent was refused; the socket stays open.
    Error { code: ErrorCode, message: String },
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientFrame {
    /// Post a message; `cid` (≤ 64 chars) makes it idempotent.
    Send {
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cid: Option<String>,
    },
    /// Change this session's nick, kept for later sends and reconnects.
    Nick { nick: String },
}

/// Longest `cid` accepted, in characters.
pub const CID_MAX_LEN: usize = 64;

/// Error codes of the `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, no string `type`, missing or mistyped fields, an empty body,
    /// a bad `cid` or nick, or a binary frame; the socket stays.
    BadJson,
    /// A `type` other than `send` and `nick`; the socket stays.
    UnknownType,
    /// A `body` over `limits.max_body_bytes`; the socket stays.
    TooLarge,
    /// The connection's send budget is spent; the send is not stored.
    RateLimited,
    /// The `room` query value is not a valid room name; closed with 1008.
    BadRoom,
    /// The `since` query value is not a stream id; closed with 1008.
    BadSince,
    /// Redis failed: on connect the socket is closed with 1011; on `send` or
    /// `nick` it stays and the client should try again.
    Unavailable,
    /// The client's token does not allow it (a `nick` frame when the nick
    /// comes from the token); the socket stays.
    Forbidden,
}

impl ErrorCode {
    /// Every code, for metrics that report zero counts too.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::BadRoom,
        ErrorCode::BadSince,
        ErrorCode::Unavailable,
        ErrorCode::Forbidden,
    ];

    /// The wire name, e.g. `bad_json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::BadRoom => "bad_room",
            ErrorCode::BadSince => "bad_since",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Forbidden => "forbidden",
        }
    }
}

/// WebSocket close codes with a meaning in wsmesh.
pub mod close {
    /// A frame or message over `limits.max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// Policy violation: a refused origin, a bad `room` or `since` after
    /// its `error` frame, or a client that kept earning `error` frames.
    pub const POLICY: u16 = 1008;
    /// Instance draining: reconnect at once (jittered).
    pub const SERVICE_RESTART: u16 = 1012;
    /// Client too slow for the fan-out: reconnect and resume with `since`.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The socket's token expired: get a fresh token and reconnect with
    /// `since` (a private-use code, RFC 6455 7.4.2).
    pub const TOKEN_EXPIRED: u16 = 4001;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_match_the_documented_json() {
        let w = ServerFrame::Welcome {
            session: "s".into(),
            nick: "ana".into(),
            room: "lobby".into(),
            instance: "app1".into(),
            connected_since: 5,
        };
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"type":"welcome","session":"s","nick":"ana","room":"lobby","instance":"app1","connected_since":5}"#
        );
        let e = ServerFrame::Error {
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"error","code":"rate_limited","message":"slow down"}"#
        );
        let h = ServerFrame::History {
            room: "r".into(),
            chats: vec![],
            truncated: false,
        };
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            r#"{"type":"history","room":"r","chats":[]}"#
        );
    }

    #[test]
    fn client_frames_parse() {
        let s: ClientFrame = serde_json::from_str(r#"{"type":"send","body":"hi","cid":"c1"}"#).unwrap();
        assert_eq!(
            s,
            ClientFrame::Send {
                body: "hi".into(),
                cid: Some("c1".into())
            }
        );
        let n: ClientFrame = serde_json::from_str(r#"{"type":"nick","nick":"bo"}"#).unwrap();
        assert_eq!(n, ClientFrame::Nick { nick: "bo".into() });
    }

    #[test]
    fn error_code_names_agree_with_serde() {
        for c in ErrorCode::ALL {
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{}\"", c.as_str()));
        }
    }
}
