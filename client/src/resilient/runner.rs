//! The task behind a `ResilientClient`: one connection after another, each
//! resumed where the last ended, with the outbox re-sent until acked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use wsmesh_common::backoff::Backoff;
use wsmesh_common::chat::Chat;
use wsmesh_common::protocol::{close, ClientFrame, ServerFrame};

use super::dedup::{Dedup, Verdict};
use super::{lock, Command, ConnectionRecord, Event, Receipt, ResilientConfig, Stats};
use crate::{ClientError, Connection, Endpoint, Incoming};

/// One queued send.
#[derive(Debug)]
struct Pending {
    /// Idempotency key: a re-send under it is stored at most once.
    cid: String,
    /// The chat message as the caller gave it.
    body: String,
    /// Last time it went out, if it did on this connection.
    sent_at: Option<Instant>,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Closed by the server or the network, with its close code if any.
    Lost(Option<u16>),
    /// The handle dropped: stop.
    Stop,
}

/// The task's state across connections.
pub(super) struct Runner {
    /// Endpoints, backoff and timing, as the caller set them.
    config: ResilientConfig,
    /// To the handle; the handle may stop reading without harm.
    events: mpsc::UnboundedSender<Event>,
    /// Read by the handle's `stats()`.
    stats: Arc<Mutex<Stats>>,
    /// Decides which chats are yielded; its last id is the next `since`.
    dedup: Dedup,
    /// Unacked sends, oldest first.
    outbox: Vec<Pending>,
    /// Session token from the last welcome.
    session: Option<String>,
    /// When the last connection was lost, for reconnect durations.
    lost_at: Option<Instant>,
}

impl Runner {
    pub(super) fn new(
        config: ResilientConfig,
        events: mpsc::UnboundedSender<Event>,
        stats: Arc<Mutex<Stats>>,
    ) -> Runner {
        Runner {
            config,
            events,
            stats,
            dedup: Dedup::default(),
            outbox: Vec::new(),
            session: None,
            lost_at: None,
        }
    }

    fn emit(&self, event: Event) {
        // A handle that stopped reading events is fine; the stats still count.
        let _ = self.events.send(event);
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut backoff = Backoff::new(self.config.backoff_base, self.config.backoff_cap);
        let endpoints: Vec<Endpoint> = std::iter::once(self.config.connect.endpoint.clone())
            .chain(self.config.fallbacks.iter().cloned())
            .collect();
        let mut next = 0usize;
        loop {
            let mut opts = self.config.connect.clone();
            opts.endpoint = endpoints[next % endpoints.len()].clone();
            opts.since = self.dedup.last.map(|id| id.to_string());
            opts.session = self.session.clone();
            if let Some(tokens) = &self.config.tokens {
                opts.token = Some(tokens.mint());
            }
            let delay = match Connection::connect(&opts).await {
                Ok(conn) => match self.serve(conn, &mut commands, &mut backoff).await {
                    Ended::Stop => return,
                    Ended::Lost(code) => {
                        self.lost_at = Some(Instant::now());
                        self.emit(Event::Disconnected(code));
                        // The instance is going away or was lost: the next endpoint first.
                        next += 1;
                        let at_once = [
                            close::SERVICE_RESTART,
                            close::TRY_AGAIN_LATER,
                            close::TOKEN_EXPIRED,
                        ];
                        if code.is_some_and(|c| at_once.contains(&c)) {
                            jitter(self.config.restart_jitter)
                        } else {
                            backoff.next_delay()
                        }
                    }
                },
                Err(e) => {
                    tracing::debug!(endpoint = %opts.endpoint, error = %e, "connect failed");
                    self.lost_at.get_or_insert_with(Instant::now);
                    if self
                        .config
                        .max_attempts
                        .is_some_and(|m| backoff.attempts() + 1 >= m)
                    {
                        lock(&self.stats).gave_up = true;
                        return;
                    }
                    next += 1;
                    backoff.next_delay()
                }
            };
            let wake = Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break,
                    cmd = commands.recv() => match cmd {
                        Some(cmd) => self.accept(cmd),
                        None => return,
                    },
                }
            }
        }
    }

    fn accept(&mut self, cmd: Command) {
        match cmd {
            Command::Send { cid, body } => {
                self.outbox.push(Pending {
                    cid,
                    body,
                    sent_at: None,
                });
                lock(&self.stats).pending = self.outbox.len();
            }
        }
    }

    /// Runs one connection until it ends.
    async fn serve(
        &mut self,
        mut conn: Connection,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        backoff: &mut Backoff,
    ) -> Ended {
        for pending in &mut self.outbox {
            pending.sent_at = None;
        }
        let mut welcomed = false;
        let mut tick = tokio::time::interval(self.config.resend_after.max(Duration::from_millis(10)));
        let pinging = self.config.ping_every.is_some();
        let ping_period = self
            .config
            .ping_every
            .unwrap_or(Duration::from_secs(3600))
            .max(Duration::from_millis(10));
        // The first ping one period in: a fresh connection was just heard from.
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_period, ping_period);
        loop {
            tokio::select! {
                incoming = conn.recv() => {
                    let incoming = match incoming {
                        Ok(i) => i,
                        Err(_) => return Ended::Lost(None),
                    };
                    match incoming {
                        Incoming::Frame(frame) => {
                            if let Err(lost) = self.on_frame(frame, &mut conn, &mut welcomed, backoff).await {
                                return lost;
                            }
                        }
                        Incoming::Closed(info) => return Ended::Lost(info.map(|i| i.code)),
                        Incoming::Text(text) => {
                            tracing::warn!(frame = %text.chars().take(200).collect::<String>(), "skipping a frame that is not a protocol frame");
                            lock(&self.stats).undecodable += 1;
                        }
                        Incoming::Binary(_) => lock(&self.stats).undecodable += 1,
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(cmd) => {
                        self.accept(cmd);
                        if welcomed && self.flush(&mut conn, false).await.is_err() {
                            return Ended::Lost(None);
                        }
                    }
                    None => {
                        conn.close().await;
                        return Ended::Stop;
                    }
                },
                _ = tick.tick() => {
                    if welcomed && self.flush(&mut conn, true).await.is_err() {
                        return Ended::Lost(None);
                    }
                }
                _ = ping.tick(), if pinging => {
                    if conn.last_heard().elapsed() >= self.config.idle_timeout {
                        tracing::debug!("nothing heard for {:?}; reconnecting", self.config.idle_timeout);
                        return Ended::Lost(None);
                    }
                    if conn.ping().await.is_err() {
                        return Ended::Lost(None);
                    }
                }
            }
        }
    }

    async fn on_frame(
        &mut self,
        frame: ServerFrame,
        conn: &mut Connection,
        welcomed: &mut bool,
        backoff: &mut Backoff,
    ) -> Result<(), Ended> {
        let lost = |_| Ended::Lost(None);
        match frame {
            ServerFrame::Welcome {
                session,
                nick,
                instance,
                connected_since,
                ..
            } => {
                *welcomed = true;
                backoff.reset();
                self.session = Some(session);
                if let Some(want) = self.config.nick.clone().filter(|w| *w != nick) {
                    conn.send_frame(&ClientFrame::Nick { nick: want })
                        .await
                        .map_err(lost)?;
                }
                let record = ConnectionRecord {
                    instance,
                    nick,
                    connected_since,
                    reconnect_took: self.lost_at.take().map(|t| t.elapsed()),
                    truncated: false,
                };
                lock(&self.stats).connections.push(record.clone());
                self.emit(Event::Connected(record));
                self.flush(conn, false).await.map_err(lost)?;
            }
            ServerFrame::History { chats, truncated, .. } => {
                if truncated {
                    if let Some(last) = lock(&self.stats).connections.last_mut() {
                        last.truncated = true;
                    }
                }
                self.deliver(chats, true);
            }
            ServerFrame::Chat { chats } => self.deliver(chats, false),
            ServerFrame::Ack { cid, id } => {
                let before = self.outbox.len();
                self.outbox.retain(|p| p.cid != cid);
                {
                    let mut stats = lock(&self.stats);
                    stats.pending = self.outbox.len();
                    if self.outbox.len() < before {
                        stats.acked += 1;
                    }
                }
                self.emit(Event::Acked { cid, id });
            }
            ServerFrame::Error { code, .. } => {
                lock(&self.stats).refused.push(code);
                self.emit(Event::Refused(code));
            }
            ServerFrame::Presence { .. } => {}
        }
        Ok(())
    }

    fn deliver(&mut self, chats: Vec<Chat>, history: bool) {
        let room = self.config.connect.room.clone();
        let connection = lock(&self.stats).connections.len().saturating_sub(1);
        for chat in chats {
            if room.as_ref().is_some_and(|r| *r != chat.room) {
                continue;
            }
            let Some(id) = chat.stream_id() else {
                continue;
            };
            if let Some(log) = &self.config.receipts {
                log.lock().unwrap_or_else(|p| p.into_inner()).push(Receipt {
                    id,
                    room: chat.room.clone(),
                    history,
                    connection,
                    at: Instant::now(),
                });
            }
            let verdict = self.dedup.judge(id);
            let mut stats = lock(&self.stats);
            match verdict {
                Verdict::New => {
                    stats.delivered += 1;
                    stats.last_id = Some(chat.id.clone());
                    drop(stats);
                    self.emit(Event::Chat(chat));
                }
                Verdict::Duplicate => stats.duplicates += 1,
                Verdict::OutOfOrder => stats.out_of_order += 1,
            }
        }
    }

    /// Sends outbox entries not yet sent on this connection, and with `stale`
    /// also those unacked for `resend_after` (lost, refused or unavailable).
    async fn flush(&mut self, conn: &mut Connection, stale: bool) -> Result<(), ClientError> {
        let now = Instant::now();
        let resend_after = self.config.resend_after;
        for pending in &mut self.outbox {
            let due = match pending.sent_at {
                None => true,
                Some(at) => stale && now.duration_since(at) >= resend_after,
            };
            if due {
                conn.send_chat(&pending.body, Some(&pending.cid)).await?;
                pending.sent_at = Some(now);
            }
        }
        Ok(())
    }
}

/// A uniform delay in `[0, window]`.
fn jitter(window: Duration) -> Duration {
    let ms = window.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_jitter_stays_in_its_window() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(50)) <= Duration::from_millis(50));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
