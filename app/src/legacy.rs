//! The seed clients' wire formats (docs/protocol.md, "Seed clients"), so the
//! pages this design grew from keep working on the same room (`lobby`) and
//! history:
//! - simple-chat (`/ws` without a subprotocol): `{"name","content"}` in,
//!   `{"time","name","content"}` out, no history;
//! - CloudChat (`/chatsocket`): `{"body"}` in, `{"chats":[{"body"}]}` out,
//!   history on `{"type":"command","command":"requestFirstChat"}`.
//!
//! The originals had no error frames, so refused input is only logged (and
//! counted towards the client's strikes). In jwt mode the token's `name` is
//! the nick of every message, whatever simple-chat's `name` says.

use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use serde::{Deserialize, Serialize};
use wsmesh_common::chat::{Chat, DEFAULT_ROOM};
use wsmesh_common::protocol::close;

use crate::auth::Grant;
use crate::conversation::{self, Dialect, Handled};
use crate::hub::{Outbound, Start};
use crate::limits::{check_nick, check_send, TokenBucket};
use crate::origin::Verdict;
use crate::shared::Shared;
use crate::socket::{self, WriteError, Ws};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Which seed format a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `/ws` without `wsmesh.v1`.
    SimpleChat,
    /// `/chatsocket`.
    CloudChat,
}

/// simple-chat, client → server.
#[derive(Debug, Deserialize)]
struct SimpleIn {
    /// The nick to store the message under; simple-chat sends it with every
    /// message.
    name: String,
    /// Message text, stored as the chat's body.
    content: String,
}

/// simple-chat, server → client.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct SimpleOut<'a> {
    /// `YYYY/MM/DD HH:MM:SS`, UTC.
    time: String,
    /// The chat's nick.
    name: &'a str,
    /// The chat's body.
    content: &'a str,
}

/// CloudChat, client → server: a message or a command.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CloudIn {
    /// `{"type":"command","command":"requestFirstChat"}`.
    Command {
        /// Always `command`.
        #[serde(rename = "type")]
        kind: String,
        /// Only `requestFirstChat` is known; others are logged and ignored.
        command: String,
    },
    /// `{"body":B}`.
    Message {
        /// Message text, stored under the socket's guest nick.
        body: String,
    },
}

/// CloudChat, server → client.
#[derive(Debug, Serialize)]
struct CloudOut<'a> {
    /// Messages, oldest first.
    chats: Vec<CloudChat<'a>>,
}

/// One CloudChat message.
#[derive(Debug, Serialize)]
struct CloudChat<'a> {
    /// The chat's body; CloudChat shows neither nick nor time.
    body: &'a str,
}

/// The nick of a seed-format socket's messages.
#[derive(Debug, Clone)]
enum SeedNick {
    /// No authentication: simple-chat's `name`, and this guest nick for
    /// CloudChat, whose messages carry none.
    Guest(String),
    /// jwt mode: the token's `name` for every message.
    Token(String),
}

impl SeedNick {
    /// The nick of a message that names `name` (simple-chat) or none.
    fn of(&self, name: Option<String>) -> String {
        match (self, name) {
            (SeedNick::Guest(_), Some(name)) => name,
            (SeedNick::Guest(nick) | SeedNick::Token(nick), _) => nick.clone(),
        }
    }
}

/// The `Dialect` state of one seed-format socket.
struct Legacy {
    /// The instance's shared parts: store, limits, metrics.
    shared: Arc<Shared>,
    /// Which seed format this socket speaks: picks the parser and the
    /// renderer.
    format: Format,
    /// Which nick the messages are stored under.
    nick: SeedNick,
    /// This socket's send rate; a message over it is dropped (logged and
    /// counted as `rate_limited`).
    bucket: TokenBucket,
}

/// Serves one upgraded seed-format socket to the end; `grant` is its
/// token's, in jwt mode.
pub async fn run(shared: Arc<Shared>, mut ws: Ws, format: Format, origin: Verdict, grant: Option<Grant>) {
    if origin == Verdict::Refused {
        socket::close(&mut ws, close::POLICY, "origin not allowed").await;
        return;
    }
    let mut membership = shared.hub.join(DEFAULT_ROOM, Start::Live);
    // Nothing of the client is read before the lobby's chats reach this
    // instance live, so its own first message comes back to it, as ever.
    shared.hub.subscribed(DEFAULT_ROOM, membership.id).await;
    let limits = &shared.config.limits;
    let mut legacy = Legacy {
        bucket: TokenBucket::new(limits.rate_burst, limits.rate_per_sec, Instant::now()),
        nick: match &grant {
            Some(g) => SeedNick::Token(g.nick.clone()),
            None => SeedNick::Guest(format!("guest-{:04}", rand::rng().random_range(0..10_000))),
        },
        format,
        shared: shared.clone(),
    };
    let _ = conversation::run(&shared, &mut ws, &mut membership, &mut legacy, grant.as_ref()).await;
}

impl Legacy {
    /// Stores a message in the lobby if it passes the limits.
    async fn store(&mut self, nick: &str, body: &str) -> Handled {
        let limits = &self.shared.config.limits;
        if let Err(r) = check_nick(limits, nick).and_then(|()| check_send(limits, body, None)) {
            tracing::debug!(reason = %r.message, "seed client message refused");
            self.shared.metrics.error(r.code);
            return Handled::Refused;
        }
        if !self.bucket.try_take(Instant::now()) {
            tracing::debug!("seed client rate limited");
            self.shared
                .metrics
                .error(wsmesh_common::protocol::ErrorCode::RateLimited);
            return Handled::Refused;
        }
        match self.shared.store.append(DEFAULT_ROOM, nick, body, None).await {
            Ok(_) => {
                self.shared.metrics.messages_in.inc();
            }
            Err(e) => tracing::warn!(error = %e, "seed client message not stored"),
        }
        Handled::Done
    }

    /// Sends the lobby's recent history as one CloudChat frame.
    async fn first_chats(&self, ws: &mut Ws) -> Result<(), WriteError> {
        let history = self
            .shared
            .store
            .last(DEFAULT_ROOM, self.shared.config.limits.history_limit)
            .await;
        match history {
            Ok(chats) => {
                let out = CloudOut {
                    chats: chats.iter().map(|c| CloudChat { body: &c.body }).collect(),
                };
                socket::send_json(ws, &out).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "seed client history unavailable");
                Ok(())
            }
        }
    }
}

impl Dialect for Legacy {
    fn render(&mut self, out: Outbound, frames: &mut Vec<Utf8Bytes>) {
        let Outbound::Chats(batch) = out else {
            // The seed formats have no presence.
            return;
        };
        let chats = batch.chats();
        self.shared.metrics.messages_out.inc_by(chats.len() as u64);
        let rendered = match self.format {
            Format::SimpleChat => chats
                .iter()
                .map(|c| serde_json::to_string(&simple_out(c)))
                .collect::<Result<Vec<_>, _>>(),
            Format::CloudChat => {
                let out = CloudOut {
                    chats: chats.iter().map(|c| CloudChat { body: &c.body }).collect(),
                };
                serde_json::to_string(&out).map(|t| vec![t])
            }
        };
        match rendered {
            Ok(texts) => frames.extend(texts.into_iter().map(Utf8Bytes::from)),
            Err(e) => tracing::error!(error = %e, "cannot render a seed-format frame"),
        }
    }

    async fn receive(&mut self, ws: &mut Ws, text: String) -> Result<Handled, WriteError> {
        let handled = match self.format {
            Format::SimpleChat => match serde_json::from_str::<SimpleIn>(&text) {
                Ok(m) => {
                    let nick = self.nick.of(Some(m.name));
                    self.store(&nick, &m.content).await
                }
                Err(e) => {
                    tracing::debug!(error = %e, "simple-chat frame ignored");
                    Handled::Refused
                }
            },
            Format::CloudChat => match serde_json::from_str::<CloudIn>(&text) {
                Ok(CloudIn::Command { kind, command })
                    if kind == "command" && command == "requestFirstChat" =>
                {
                    return self.first_chats(ws).await.map(|()| Handled::Done)
                }
                Ok(CloudIn::Message { body }) => {
                    let nick = self.nick.of(None);
                    self.store(&nick, &body).await
                }
                Ok(CloudIn::Command { command, .. }) => {
                    tracing::debug!(%command, "unknown CloudChat command");
                    Handled::Refused
                }
                Err(e) => {
                    tracing::debug!(error = %e, "CloudChat frame ignored");
                    Handled::Refused
                }
            },
        };
        Ok(handled)
    }

    async fn binary(&mut self, _ws: &mut Ws) -> Result<Handled, WriteError> {
        tracing::debug!("seed client binary frame ignored");
        Ok(Handled::Refused)
    }
}

fn simple_out(c: &Chat) -> SimpleOut<'_> {
    SimpleOut {
        time: utc_time(c.ts),
        name: &c.nick,
        content: &c.body,
    }
}

/// `YYYY/MM/DD HH:MM:SS` (UTC) for unix milliseconds.
fn utc_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}/{m:02}/{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_formatted_like_simple_chat() {
        assert_eq!(utc_time(0), "1970/01/01 00:00:00");
        // 2024-02-29 13:05:09 UTC
        assert_eq!(utc_time(1_709_211_909_123), "2024/02/29 13:05:09");
        assert_eq!(utc_time(1_735_689_599_000), "2024/12/31 23:59:59");
    }

    #[test]
    fn simple_out_has_the_seed_shape() {
        let c = Chat {
            id: "1-0".into(),
            room: "lobby".into(),
            nick: "ana".into(),
            body: "hi".into(),
            ts: 0,
            cid: None,
        };
        assert_eq!(
            serde_json::to_string(&simple_out(&c)).expect("json"),
            r#"{"time":"1970/01/01 00:00:00","name":"ana","content":"hi"}"#
        );
    }

    #[test]
    fn cloudchat_input_is_told_apart() {
        let cmd: CloudIn =
            serde_json::from_str(r#"{"type":"command","command":"requestFirstChat"}"#).expect("parses");
        assert!(matches!(cmd, CloudIn::Command { ref command, .. } if command == "requestFirstChat"));
        let msg: CloudIn = serde_json::from_str(r#"{"body":"yo"}"#).expect("parses");
        assert!(matches!(msg, CloudIn::Message { ref body } if body == "yo"));
    }
}
