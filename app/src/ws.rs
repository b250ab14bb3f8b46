//! The `wsmesh.v1` protocol on `/ws` (docs/protocol.md, "Client protocol"):
//! welcome, history replay merged gap-free with live chats (read once the
//! subscriber confirmed the room), sends with acks, nick changes, presence,
//! and error frames after which the socket stays.
//!
//! If Redis cannot give a session or the history, the client gets
//! `unavailable` and the socket is closed with 1011: a client without its
//! history would silently miss messages, so it must retry (with `since`).

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use wsmesh_common::chat::Chat;
use wsmesh_common::protocol::{close, ClientFrame, ErrorCode, ServerFrame};
use wsmesh_common::stream_id::StreamId;

use crate::auth::Grant;
use crate::conversation::{self, Dialect, Handled};
use crate::hub::{Outbound, Start, Subscription};
use crate::limits::{check_nick, check_send, Refusal, TokenBucket};
use crate::origin::Verdict;
use crate::query::{BadQuery, Connect};
use crate::shared::Shared;
use crate::socket::{self, WriteError, Ws, INTERNAL_ERROR};
use crate::store::{Outcome, Session, StoreError};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// One v1 client after its welcome.
struct V1 {
    /// The instance's shared parts: store, limits, metrics.
    shared: Arc<Shared>,
    /// The room from the query string: sends are appended to it and
    /// presence frames name it.
    room: String,
    /// The client's session (token, nick).
    session: Session,
    /// This socket's send rate; a send without a token gets `rate_limited`.
    bucket: TokenBucket,
    /// Whether a `nick` frame may change the nick.
    nick: NickSource,
}

/// Where a v1 socket's nick comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NickSource {
    /// The session's, changed by `nick` frames (no authentication).
    Session,
    /// The token's `name`, fixed: a `nick` frame gets `forbidden`.
    Token,
}

/// Serves one upgraded v1 socket to the end; `grant` is its token's, in
/// jwt mode.
pub async fn run(
    shared: Arc<Shared>,
    mut ws: Ws,
    query: Result<Connect, BadQuery>,
    origin: Verdict,
    grant: Option<Grant>,
) {
    if origin == Verdict::Refused {
        socket::close(&mut ws, close::POLICY, "origin not allowed").await;
        return;
    }
    let connect = match query {
        Ok(c) => c,
        Err(bad) => {
            shared.metrics.error(bad.code);
            let frame = ServerFrame::Error {
                code: bad.code,
                message: bad.message.clone(),
            };
            if socket::send_json(&mut ws, &frame).await.is_ok() {
                socket::close(&mut ws, close::POLICY, &bad.message).await;
            }
            return;
        }
    };
    let mut session = match shared.store.session(connect.session.as_deref()).await {
        Ok(s) => s,
        Err(e) => return unavailable(&shared, &mut ws, &e.to_string()).await,
    };
    if let Some(grant) = &grant {
        session.nick = grant.nick.clone();
    }
    let mut membership = shared.hub.join(&connect.room, Start::Replaying);
    let welcome = ServerFrame::Welcome {
        session: session.token.clone(),
        nick: session.nick.clone(),
        room: connect.room.clone(),
        instance: shared.config.instance.clone(),
        connected_since: session.connected_since,
    };
    if socket::send_json(&mut ws, &welcome).await.is_err() {
        return;
    }
    // Read only once the room's chats reach this instance live: what is
    // committed before the read is in it, what comes after arrives live.
    if shared.hub.subscribed(&connect.room, membership.id).await == Subscription::Unconfirmed {
        tracing::debug!(room = %connect.room, "reading history before the subscriber confirmed the room; its fill covers the read");
    }
    let (chats, truncated, rest) = match connect.since {
        Some(since) => {
            shared.hub.replayed_to(&connect.room, membership.id, since);
            let first = async {
                let mut replay = shared.store.replay(&connect.room, since).await?;
                let page = shared.store.next_page(&mut replay).await?;
                Ok::<_, StoreError>((page.unwrap_or_default(), replay))
            };
            match first.await {
                Ok((chats, replay)) => (chats, replay.truncated, Some(replay)),
                Err(e) => return unavailable(&shared, &mut ws, &e.to_string()).await,
            }
        }
        None => match shared
            .store
            .last(&connect.room, shared.config.limits.history_limit)
            .await
        {
            Ok(chats) => (chats, false, None),
            Err(e) => return unavailable(&shared, &mut ws, &e.to_string()).await,
        },
    };
    // A replay may start before `since` (a `since` this store never reached).
    let mut covered = chats
        .last()
        .and_then(Chat::stream_id)
        .unwrap_or(rest.as_ref().map_or(StreamId::ZERO, |r| r.from));
    shared.hub.replayed_to(&connect.room, membership.id, covered);
    let replayed = chats.len() as u64;
    let history = ServerFrame::History {
        room: connect.room.clone(),
        chats,
        truncated,
    };
    if socket::send_json(&mut ws, &history).await.is_err() {
        return;
    }
    shared.metrics.messages_out.inc_by(replayed);
    // The rest of a long gap follows page by page as chat batches, in id
    // order and before anything live, so no frame holds the whole stream.
    if let Some(mut replay) = rest {
        loop {
            let page = match shared.store.next_page(&mut replay).await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(e) => return unavailable(&shared, &mut ws, &e.to_string()).await,
            };
            covered = page.last().and_then(Chat::stream_id).unwrap_or(covered);
            shared.hub.replayed_to(&connect.room, membership.id, covered);
            let replayed = page.len() as u64;
            if socket::send_json(&mut ws, &ServerFrame::Chat { chats: page })
                .await
                .is_err()
            {
                return;
            }
            shared.metrics.messages_out.inc_by(replayed);
        }
    }
    shared.hub.go_live(&connect.room, membership.id, covered);
    if let Ok(online) = shared.presence.total(&connect.room).await {
        let frame = ServerFrame::Presence {
            room: connect.room.clone(),
            online,
        };
        if socket::send_json(&mut ws, &frame).await.is_err() {
            return;
        }
    }
    tracing::debug!(room = %connect.room, nick = %session.nick, "v1 client live");
    let mut v1 = V1 {
        bucket: TokenBucket::new(
            shared.config.limits.rate_burst,
            shared.config.limits.rate_per_sec,
            Instant::now(),
        ),
        shared: shared.clone(),
        room: connect.room,
        session,
        nick: match grant {
            Some(_) => NickSource::Token,
            None => NickSource::Session,
        },
    };
    let written = conversation::run(&shared, &mut ws, &mut membership, &mut v1, grant.as_ref()).await;
    tracing::debug!(
        target: "wsmesh_app::socket_end",
        room = %v1.room,
        nick = %v1.session.nick,
        replayed_last = %covered,
        live_chats = written.chats,
        live_last = %written.last.unwrap_or(StreamId::ZERO),
        "socket ended"
    );
}

/// Tells the client Redis failed and closes with 1011 so it retries.
async fn unavailable(shared: &Shared, ws: &mut Ws, why: &str) {
    tracing::warn!(error = %why, "cannot set up a socket: redis unavailable");
    shared.metrics.error(ErrorCode::Unavailable);
    let frame = ServerFrame::Error {
        code: ErrorCode::Unavailable,
        message: "storage unavailable, reconnect shortly".into(),
    };
    if socket::send_json(ws, &frame).await.is_ok() {
        socket::close(ws, INTERNAL_ERROR, "storage unavailable").await;
    }
}

/// `ServerFrame::Chat` borrowing shared chats, to render a live batch once.
#[derive(Serialize)]
struct ChatFrame<'a> {
    /// Always `chat`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The batch's chats, borrowed from the hub's shared batch, not cloned.
    chats: Vec<&'a Chat>,
}

/// The v1 `chat` frame for a batch; `None` (logged) if it cannot be rendered.
fn render_chat_frame(chats: &[Arc<Chat>]) -> Option<String> {
    let frame = ChatFrame {
        kind: "chat",
        chats: chats.iter().map(|c| &**c).collect(),
    };
    serde_json::to_string(&frame)
        .map_err(|e| tracing::error!(error = %e, "cannot render a chat frame"))
        .ok()
}

/// Reads a client frame, telling apart malformed JSON and unknown types.
pub fn parse_frame(text: &str) -> Result<ClientFrame, Refusal> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Refusal::new(ErrorCode::BadJson, format!("not JSON: {e}")))?;
    let kind = value
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .ok_or_else(|| Refusal::new(ErrorCode::BadJson, "expected an object with a string \"type\""))?;
    if !matches!(kind.as_str(), "send" | "nick") {
        return Err(Refusal::new(
            ErrorCode::UnknownType,
            format!("unknown type {:?}", kind.chars().take(32).collect::<String>()),
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| Refusal::new(ErrorCode::BadJson, format!("bad {kind} frame: {e}")))
}

impl V1 {
    async fn refuse(&self, ws: &mut Ws, r: Refusal) -> Result<Handled, WriteError> {
        self.shared.metrics.error(r.code);
        socket::send_json(
            ws,
            &ServerFrame::Error {
                code: r.code,
                message: r.message,
            },
        )
        .await?;
        Ok(Handled::Refused)
    }

    async fn send(&mut self, ws: &mut Ws, body: String, cid: Option<String>) -> Result<Handled, WriteError> {
        let limits = &self.shared.config.limits;
        if let Err(r) = check_send(limits, &body, cid.as_deref()) {
            return self.refuse(ws, r).await;
        }
        if !self.bucket.try_take(Instant::now()) {
            return self
                .refuse(
                    ws,
                    Refusal::new(ErrorCode::RateLimited, "too many messages, slow down"),
                )
                .await;
        }
        let stored = self
            .shared
            .store
            .append(&self.room, &self.session.nick, &body, cid.as_deref())
            .await;
        match stored {
            Ok(appended) => {
                if appended.outcome == Outcome::Stored {
                    self.shared.metrics.messages_in.inc();
                }
                if let Some(cid) = cid {
                    socket::send_json(ws, &ServerFrame::Ack { cid, id: appended.id }).await?;
                }
                Ok(Handled::Done)
            }
            Err(e) => {
                tracing::warn!(error = %e, room = %self.room, "send not stored");
                let r = Refusal::new(ErrorCode::Unavailable, "message not stored, try again");
                self.refuse(ws, r).await
            }
        }
    }

    async fn nick(&mut self, ws: &mut Ws, nick: String) -> Result<Handled, WriteError> {
        if self.nick == NickSource::Token {
            let r = Refusal::new(
                ErrorCode::Forbidden,
                "the nick is the token's name and cannot change",
            );
            return self.refuse(ws, r).await;
        }
        if let Err(r) = check_nick(&self.shared.config.limits, &nick) {
            return self.refuse(ws, r).await;
        }
        match self.shared.store.set_nick(&self.session.token, &nick).await {
            Ok(()) => {
                self.session.nick = nick;
                Ok(Handled::Done)
            }
            Err(e) => {
                tracing::warn!(error = %e, "nick not stored");
                self.refuse(
                    ws,
                    Refusal::new(ErrorCode::Unavailable, "nick not stored, try again"),
                )
                .await
            }
        }
    }
}

impl Dialect for V1 {
    fn render(&mut self, out: Outbound, frames: &mut Vec<Utf8Bytes>) {
        match out {
            Outbound::Chats(batch) => {
                self.shared
                    .metrics
                    .messages_out
                    .inc_by(batch.chats().len() as u64);
                frames.extend(batch.v1_frame(render_chat_frame));
            }
            Outbound::Presence(online) => {
                let frame = ServerFrame::Presence {
                    room: self.room.clone(),
                    online,
                };
                match serde_json::to_string(&frame) {
                    Ok(text) => frames.push(text.into()),
                    Err(e) => tracing::error!(error = %e, "cannot render a presence frame"),
                }
            }
        }
    }

    async fn receive(&mut self, ws: &mut Ws, text: String) -> Result<Handled, WriteError> {
        match parse_frame(&text) {
            Ok(ClientFrame::Send { body, cid }) => self.send(ws, body, cid).await,
            Ok(ClientFrame::Nick { nick }) => self.nick(ws, nick).await,
            Err(r) => self.refuse(ws, r).await,
        }
    }

    async fn binary(&mut self, ws: &mut Ws) -> Result<Handled, WriteError> {
        self.refuse(
            ws,
            Refusal::new(ErrorCode::BadJson, "binary frames are not supported"),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_chat_frame_is_the_protocol_chat_frame() {
        let chat = Chat {
            id: "1-2".into(),
            room: "r".into(),
            nick: "n".into(),
            body: "b\"".into(),
            ts: 1,
            cid: Some("c".into()),
        };
        let rendered = render_chat_frame(&[Arc::new(chat.clone())]).expect("renders");
        let expected = serde_json::to_string(&ServerFrame::Chat { chats: vec![chat] }).expect("json");
        assert_eq!(rendered, expected);
    }

    #[test]
    fn frames_parse_or_get_the_right_code() {
        assert_eq!(
            parse_frame(r#"{"type":"send","body":"hi"}"#),
            Ok(ClientFrame::Send {
                body: "hi".into(),
                cid: None
            })
        );
        assert_eq!(parse_frame("{oops").unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(parse_frame("[1]").unwrap_err().code, ErrorCode::BadJson);
        assert_eq!(
            parse_frame(r#"{"body":"x"}"#).unwrap_err().code,
            ErrorCode::BadJson
        );
        assert_eq!(
            parse_frame(r#"{"type":"dance"}"#).unwrap_err().code,
            ErrorCode::UnknownType
        );
        assert_eq!(
            parse_frame(r#"{"type":"send"}"#).unwrap_err().code,
            ErrorCode::BadJson
        );
        assert_eq!(
            parse_frame(r#"{"type":"send","body":3}"#).unwrap_err().code,
            ErrorCode::BadJson
        );
    }
}
