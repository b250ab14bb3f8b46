//! `lab up --ha` as a real process, moved by a fixed port offset (its Redis
//! node ports are fixed, not taken from the configs): two clients chat
//! through the lb in one room, the Redis master is killed with `kill -9`
//! halfway, and the Sentinels promote a replica. Then every acked message
//! is in the history (0 lost), every message a client received is in it
//! too (0 seen-then-lost), no client got an id twice, and ids arrived in
//! order.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use wsmesh_client::resilient::{Event, ReceiptLog, ResilientClient, ResilientConfig};
use wsmesh_client::{ConnectOptions, Connection};
use wsmesh_common::stream_id::StreamId;

use crate::lab_up::LabUp;

/// Every fixed port + 2000: clear of the real cluster (6390–9202), of the
/// browser tests' offset 10000, and of the ephemeral range; the Sentinels
/// (28390–28392) sit among the test ports, where a clash is refused at once.
const OFFSET: u16 = 2000;
const LIMIT: Duration = Duration::from_secs(90);
const ROOM: &str = "ha";
/// Sends per client; both clients' together stay within one history frame.
const SENDS: usize = 20;
/// The master is killed after this many rounds of sends.
const KILL_AFTER: usize = 8;

/// The committed `configs/ha` copied into `root/configs/ha`, with dev
/// certificates in `root/certs` where the lb config's `../../certs` finds
/// them; returns the CA to trust.
fn configs_with_certs(root: &Path) -> std::path::PathBuf {
    let configs = root.join("configs/ha");
    std::fs::create_dir_all(&configs).unwrap();
    for entry in std::fs::read_dir(wsmesh_testkit::configs::ha_configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, configs.join(path.file_name().unwrap())).unwrap();
    }
    lab::bench::lbconf::gen_certs(&root.join("certs")).unwrap().ca
}

/// One chatting client and what it was told.
struct Side {
    client: ResilientClient,
    /// Every chat as it arrived, before the client's dedup.
    receipts: ReceiptLog,
    /// cid → id of every ack.
    acks: HashMap<String, StreamId>,
}

impl Side {
    fn spawn(opts: ConnectOptions) -> Side {
        let receipts: ReceiptLog = Arc::new(Mutex::new(Vec::new()));
        let mut config = ResilientConfig::new(opts);
        config.receipts = Some(receipts.clone());
        Side {
            client: ResilientClient::spawn(config),
            receipts,
            acks: HashMap::new(),
        }
    }

    /// Takes events for `span`, recording acks.
    async fn pump(&mut self, span: Duration) {
        let until = Instant::now() + span;
        while let Ok(Some(event)) = tokio::time::timeout_at(until, self.client.next_event()).await {
            if let Event::Acked { cid, id } = event {
                let id: StreamId = id.parse().expect("an ack's id is a stream id");
                if let Some(before) = self.acks.insert(cid.clone(), id) {
                    assert_eq!(before, id, "cid {cid} acked under two ids");
                }
            }
        }
    }

    fn received(&self) -> Vec<StreamId> {
        self.receipts.lock().unwrap().iter().map(|r| r.id).collect()
    }
}

fn kill9(pid_file: &Path) {
    let pid: libc::pid_t = std::fs::read_to_string(pid_file).unwrap().trim().parse().unwrap();
    // SAFETY: kill(2) on a child of our `lab up`, whose pid file exists only while it runs.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

#[tokio::test]
async fn killing_the_redis_master_under_lab_up_ha_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let ca = configs_with_certs(root.path());
    let pids = root.path().join("pids");
    let offset = OFFSET.to_string();
    let configs = root.path().join("configs/ha");
    let mut up = LabUp::start([
        OsStr::new("--ha"),
        OsStr::new("--port-offset"),
        OsStr::new(&offset),
        OsStr::new("--configs"),
        configs.as_os_str(),
        OsStr::new("--pid-dir"),
        pids.as_os_str(),
    ]);

    let ready = up.line_matching(LIMIT, |l| l.starts_with("ready: ")).await;
    let sentinels: Vec<SocketAddr> = (26390..=26392)
        .map(|p: u16| SocketAddr::from(([127, 0, 0, 1], p + OFFSET)))
        .collect();
    let named = sentinels
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",");
    assert!(ready.ends_with(&format!("  sentinels {named}")), "{ready}");
    let lb = ready
        .split_whitespace()
        .skip_while(|w| *w != "lb")
        .nth(1)
        .expect("the ready line names the lb")
        .to_string();
    assert_eq!(lb, format!("https://127.0.0.1:{}", 8443 + OFFSET));
    let first_master = format!("127.0.0.1:{}", 6390 + OFFSET);
    assert_eq!(
        wsmesh_testkit::sentinel::master_named_at(sentinels[0])
            .await
            .as_deref(),
        Some(first_master.as_str())
    );

    let tls = wsmesh_client::tls::client_config(&ca).unwrap();
    let ws = lb.replacen("https://", "wss://", 1) + "/ws";
    let opts = ConnectOptions::new(&ws).unwrap().room(ROOM).tls(tls);
    let mut sides = [Side::spawn(opts.clone()), Side::spawn(opts.clone())];

    for round in 0..SENDS {
        if round == KILL_AFTER {
            kill9(&pids.join("redis1.pid"));
        }
        for (i, side) in sides.iter_mut().enumerate() {
            side.client.send(format!("client {i} message {round}"));
        }
        for side in &mut sides {
            side.pump(Duration::from_millis(75)).await;
        }
    }

    // Every send is acked (re-sent under its cid through the failover).
    let deadline = Instant::now() + LIMIT;
    for side in &mut sides {
        while side.acks.len() < SENDS {
            assert!(
                Instant::now() < deadline,
                "only {} of {SENDS} sends acked",
                side.acks.len()
            );
            side.pump(Duration::from_millis(200)).await;
        }
    }
    let acked: BTreeSet<StreamId> = sides.iter().flat_map(|s| s.acks.values().copied()).collect();
    assert_eq!(acked.len(), 2 * SENDS, "each send stored once, under its own id");
    let new_master = wsmesh_testkit::sentinel::master_named_at(sentinels[1]).await;
    assert!(
        new_master.is_some() && new_master.as_deref() != Some(first_master.as_str()),
        "the Sentinels promoted a replica: {new_master:?}"
    );

    // Both clients get every acked message, live or replayed.
    for side in &mut sides {
        while !acked.iter().all(|id| side.received().contains(id)) {
            assert!(Instant::now() < deadline, "a client misses acked messages");
            side.pump(Duration::from_millis(200)).await;
        }
    }

    // The store after recovery, as a new client sees it.
    let mut fresh = Connection::connect(&opts).await.unwrap();
    let (_, history) = fresh.join(Duration::from_secs(10)).await.unwrap();
    let stored: Vec<StreamId> = history.iter().map(|c| c.id.parse().unwrap()).collect();
    assert!(
        stored.windows(2).all(|w| w[0] < w[1]),
        "history in id order: {stored:?}"
    );
    let stored: BTreeSet<StreamId> = stored.into_iter().collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "acked but not stored after the failover: {lost:?}"
    );
    for (i, side) in sides.iter().enumerate() {
        let received = side.received();
        let seen_then_lost: Vec<_> = received.iter().filter(|id| !stored.contains(id)).collect();
        assert!(
            seen_then_lost.is_empty(),
            "client {i} received messages the store no longer holds: {seen_then_lost:?}"
        );
        assert!(
            received.windows(2).all(|w| w[0] < w[1]),
            "client {i} got an id twice or out of order: {received:?}"
        );
        let stats = side.client.stats();
        assert!(!stats.gave_up, "client {i} gave up");
    }
    fresh.close().await;

    let status = up.terminate(LIMIT).await;
    assert!(status.success(), "lab up --ha exited with {status}");
}
