//! The two kinds of subscription the feed runs, behind one face: plain
//! pub/sub on one master (`SUBSCRIBE` on a connection of its own, the
//! master found by `redis.url` or the Sentinels), and sharded pub/sub on a
//! Redis Cluster (`SSUBSCRIBE` through the `redis` crate's cluster client
//! with RESP3 pushes: each room channel is subscribed on the master of its
//! slot).
//!
//! On a cluster a room can be lost without the connection closing: when
//! its slot moves to another master (resharding) the old one ends the
//! subscription with a `sunsubscribe` push, which the crate also takes off
//! its own list; the feed subscribes the room again (on its new master)
//! and gap-fills it from its stream. A node connection that breaks (a
//! master killed, before its replica is promoted) ends the whole session,
//! as a lost connection does with one master: the next one subscribes
//! every room and fills them all.

use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection, PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, PushInfo, PushKind, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc;
use tokio::time::timeout;
use wsmesh_redis_wire::target::{ResolveError, Target};

/// Why no subscription could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("no redis master: {0}")]
    NoMaster(#[from] ResolveError),
    #[error("redis did not accept a connection in time")]
    Timeout,
}

/// A new subscription: where to send (UN)SUBSCRIBEs, what arrives, a
/// connection for the gap fill's reads, and where it goes (for `/healthz`).
pub struct Connected {
    pub sink: Sink,
    pub events: Events,
    pub reads: Reads,
    pub addr: String,
}

/// Connects to wherever `target` points, every step bounded by `connect`;
/// the reads' answers are bounded by `command`.
pub async fn connect(
    target: &Target,
    connect: Duration,
    command: Duration,
) -> Result<Connected, ConnectError> {
    if let Target::Cluster(nodes) = target {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = nodes
            .builder(connect, command)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .build()?;
        let conn = timeout(connect * 2, client.get_async_connection())
            .await
            .map_err(|_| ConnectError::Timeout)??;
        return Ok(Connected {
            sink: Sink::Sharded(conn.clone()),
            events: Events::Sharded(rx),
            reads: Reads::Sharded(conn),
            addr: nodes.describe(),
        });
    }
    let master = target.resolve(connect).await?;
    let pubsub = timeout(connect, master.client.get_async_pubsub())
        .await
        .map_err(|_| ConnectError::Timeout)??;
    let (sink, stream) = pubsub.split();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect))
        .set_response_timeout(Some(command));
    let conn = master
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    Ok(Connected {
        sink: Sink::Plain(sink),
        events: Events::Plain(stream),
        reads: Reads::Plain(conn),
        addr: master.addr,
    })
}

/// Where (UN)SUBSCRIBEs and PINGs go.
pub enum Sink {
    Plain(PubSubSink),
    Sharded(ClusterConnection),
}

impl Sink {
    /// Subscribes `channels`; resolves once Redis confirmed every one.
    pub async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Sink::Plain(sink) => sink.subscribe(channels).await,
            // One command per channel: the channels are in different slots.
            Sink::Sharded(conn) => each_channel(conn, channels, Subscription::Subscribe).await,
        }
    }

    /// Unsubscribes `channels`.
    pub async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Sink::Plain(sink) => sink.unsubscribe(channels).await,
            Sink::Sharded(conn) => each_channel(conn, channels, Subscription::Unsubscribe).await,
        }
    }

    /// A PING through the subscription: on a cluster, to every master
    /// (each holds some of the subscriptions).
    pub async fn ping(&mut self) -> RedisResult<()> {
        match self {
            Sink::Plain(sink) => sink.ping::<Value>().await.map(drop),
            Sink::Sharded(conn) => {
                let routing = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                conn.route_command(redis::cmd("PING"), routing).await.map(drop)
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Subscription {
    Subscribe,
    Unsubscribe,
}

/// `SSUBSCRIBE` / `SUNSUBSCRIBE` of each channel, all at once.
async fn each_channel(conn: &ClusterConnection, channels: &[String], what: Subscription) -> RedisResult<()> {
    let calls = channels.iter().map(|channel| {
        let mut conn = conn.clone();
        async move {
            match what {
                Subscription::Subscribe => conn.ssubscribe(channel).await,
                Subscription::Unsubscribe => conn.sunsubscribe(channel).await,
            }
        }
    });
    futures_util::future::try_join_all(calls).await.map(drop)
}

/// What the subscription hears.
#[derive(Debug)]
pub enum Event {
    /// A published payload.
    Message(Vec<u8>),
    /// The server ended the subscription of this channel by itself (its
    /// slot moved to another master).
    Dropped(String),
    /// A node connection broke; subscriptions on it are gone.
    Broken,
}

/// What arrives on the subscription.
pub enum Events {
    Plain(PubSubStream),
    Sharded(mpsc::UnboundedReceiver<PushInfo>),
}

impl Events {
    /// The next event; `None` when the subscription is closed.
    pub async fn next(&mut self) -> Option<Event> {
        match self {
            Events::Plain(stream) => stream
                .next()
                .await
                .map(|msg| Event::Message(msg.get_payload_bytes().to_vec())),
            Events::Sharded(rx) => loop {
                let push = rx.recv().await?;
                if let Some(event) = sharded_event(push) {
                    return Some(event);
                }
            },
        }
    }
}

/// The event a RESP3 push means; `None` for confirmations of our own commands.
fn sharded_event(push: PushInfo) -> Option<Event> {
    let text = |v: &Value| redis::from_redis_value_ref::<Vec<u8>>(v).ok();
    match push.kind {
        PushKind::SMessage | PushKind::Message => push.data.get(1).and_then(text).map(Event::Message),
        PushKind::SUnsubscribe => push
            .data
            .first()
            .and_then(text)
            .map(|c| Event::Dropped(String::from_utf8_lossy(&c).into_owned())),
        PushKind::Disconnection => Some(Event::Broken),
        _ => None,
    }
}

/// The connection the gap fill reads the streams on.
#[derive(Clone)]
pub enum Reads {
    Plain(MultiplexedConnection),
    Sharded(ClusterConnection),
}

impl ConnectionLike for Reads {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Reads::Plain(c) => c.req_packed_command(cmd),
            Reads::Sharded(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Reads::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            Reads::Sharded(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Reads::Plain(c) => c.get_db(),
            Reads::Sharded(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(kind: PushKind, data: &[&str]) -> PushInfo {
        PushInfo {
            kind,
            data: data
                .iter()
                .map(|s| Value::BulkString(s.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn pushes_become_messages_dropped_channels_or_nothing() {
        let m = sharded_event(push(PushKind::SMessage, &["wsmesh:chat:{a}", "{}"]));
        assert!(matches!(m, Some(Event::Message(p)) if p == b"{}"));
        let d = sharded_event(push(PushKind::SUnsubscribe, &["wsmesh:chat:{a}"]));
        assert!(matches!(d, Some(Event::Dropped(c)) if c == "wsmesh:chat:{a}"));
        assert!(sharded_event(push(PushKind::SSubscribe, &["wsmesh:chat:{a}"])).is_none());
        assert!(matches!(
            sharded_event(push(PushKind::Disconnection, &[])),
            Some(Event::Broken)
        ));
    }
}
