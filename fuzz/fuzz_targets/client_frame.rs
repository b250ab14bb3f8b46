//! WebSocket text frames as the app reads them (`app::ws::parse_frame`),
//! and server frames as a client reads them.
//!
//! - A frame the app accepts re-serialises and re-parses to itself, and
//!   whatever serde alone accepts the app accepts the same.
//! - A refusal carries `bad_json` or `unknown_type`, the codes the protocol
//!   documents for a bad frame.
//! - The content checks (`check_send`, `check_nick`) answer without panic,
//!   and an accepted body is within the limit.
//! - A server frame that parses re-serialises and re-parses to itself.
#![no_main]

use app::config::Limits;
use app::limits::{check_nick, check_send};
use app::ws::parse_frame;
use libfuzzer_sys::fuzz_target;
use wsmesh_common::protocol::{ClientFrame, ErrorCode, ServerFrame};

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 (tungstenite refuses others before the app sees them).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = Limits::default();
    match parse_frame(text) {
        Ok(frame) => {
            let json = serde_json::to_string(&frame).expect("a frame serialises");
            assert_eq!(parse_frame(&json).as_ref(), Ok(&frame), "{json}");
            match &frame {
                ClientFrame::Send { body, cid } => {
                    if check_send(&limits, body, cid.as_deref()).is_ok() {
                        assert!(body.len() <= limits.max_body_bytes);
                        assert!(!body.trim().is_empty());
                    }
                }
                ClientFrame::Nick { nick } => {
                    if check_nick(&limits, nick).is_ok() {
                        assert!(!nick.chars().any(char::is_control), "{nick:?}");
                    }
                }
            }
        }
        Err(refusal) => {
            assert!(
                matches!(refusal.code, ErrorCode::BadJson | ErrorCode::UnknownType),
                "{refusal:?}"
            );
        }
    }
    if let Ok(frame) = serde_json::from_str::<ClientFrame>(text) {
        assert_eq!(parse_frame(text).ok().as_ref(), Some(&frame), "{text:?}");
    }
    if let Ok(frame) = serde_json::from_str::<ServerFrame>(text) {
        let json = serde_json::to_string(&frame).expect("a frame serialises");
        let again: ServerFrame = serde_json::from_str(&json).expect("its own output parses");
        assert_eq!(again, frame, "{json}");
    }
});
