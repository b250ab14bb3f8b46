//! `lab up --apps 4 --redis cluster` as a real process, moved by a fixed
//! port offset (its Redis node ports are a fixed block, not taken from the
//! configs): four apps and subscribers on a 3-master, 3-replica Redis
//! Cluster behind the lb, which balances `/ws` by the room
//! (`balance = "hash"`). With 20 rooms of 3 members, joined one by one:
//! - all members of a room land on one app: bounded load only places a
//!   room's first member, the others join where the room's sessions are
//!   (`hash_stick = "open-sessions"`, the default);
//! - each room's sharded channel has, on the master of its slot, as many
//!   subscribers as apps hold the room (`PUBSUB SHARDNUMSUB`);
//! - each subscriber forwards exactly the chats of its app's rooms
//!   (`wsmesh_subscriber_forwarded_chats_total`);
//! - every member gets every chat of its room through the lb.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;
use wsmesh_client::{http, ConnectOptions, Connection};
use wsmesh_redis_wire::Keys;

use crate::lab_up::LabUp;

/// Every fixed port + 3000: the nodes on 10001-10006 (bus 20001-20006),
/// the apps on 12001-12004…, the lb on 11443/11404; clear of the real
/// cluster, of `up_ha`'s offset 2000 and of the browser tests' 10000.
const OFFSET: u16 = 3000;
const APPS: usize = 4;
const ROOMS: usize = 20;
const MEMBERS: usize = 3;
/// Chats sent into each room.
const CHATS: usize = 3;
const LIMIT: Duration = Duration::from_secs(90);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port + OFFSET))
}

/// The committed `configs/local` copied into `root/configs/local`, with
/// dev certificates in `root/certs` where the lb config's `../../certs`
/// finds them; returns the configs and the CA to trust.
fn configs_with_certs(root: &Path) -> (PathBuf, PathBuf) {
    let configs = root.join("configs/local");
    std::fs::create_dir_all(&configs).unwrap();
    for entry in std::fs::read_dir(wsmesh_testkit::configs::configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, configs.join(path.file_name().unwrap())).unwrap();
    }
    let ca = lab::bench::lbconf::gen_certs(&root.join("certs")).unwrap().ca;
    (configs, ca)
}

/// Open sessions per lb server now.
async fn sessions(admin: SocketAddr) -> BTreeMap<String, u64> {
    let resp = http::get(&format!("http://{admin}/api/backends"), Duration::from_secs(5))
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    json["backends"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["sessions"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Room → server → sessions, from the hash keys the lb shows per server.
async fn rooms_by_server(admin: SocketAddr) -> BTreeMap<String, BTreeMap<String, u64>> {
    let resp = http::get(&format!("http://{admin}/api/backends"), Duration::from_secs(5))
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(json["backends"][0]["balance"], "hash");
    assert_eq!(json["backends"][0]["hash_key"], "url_param:room");
    let mut rooms: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for server in json["backends"][0]["servers"].as_array().unwrap() {
        for key in server["hash_keys"].as_array().unwrap() {
            rooms
                .entry(key["key"].as_str().unwrap().to_string())
                .or_default()
                .insert(
                    server["name"].as_str().unwrap().to_string(),
                    key["sessions"].as_u64().unwrap(),
                );
        }
    }
    rooms
}

/// `wsmesh_subscriber_forwarded_chats_total` of subscriber `i` (1-based).
async fn forwarded(i: usize) -> u64 {
    let at = addr(9200 + i as u16);
    let name = "wsmesh_subscriber_forwarded_chats_total";
    let n = wsmesh_testkit::metrics::scrape(at, name, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no {name} at {at}"));
    n as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_up_runs_four_apps_on_a_redis_cluster_and_each_room_meets_on_one_app() {
    let root = tempfile::tempdir().unwrap();
    let (configs, ca) = configs_with_certs(root.path());
    let offset = OFFSET.to_string();
    let mut up = LabUp::start([
        OsStr::new("--apps"),
        OsStr::new("4"),
        OsStr::new("--redis"),
        OsStr::new("cluster"),
        OsStr::new("--port-offset"),
        OsStr::new(&offset),
        OsStr::new("--configs"),
        configs.as_os_str(),
    ]);
    let ready = up.line_matching(LIMIT, |l| l.starts_with("ready: ")).await;
    let nodes: Vec<SocketAddr> = (7001..=7006).map(addr).collect();
    let node_list: Vec<String> = nodes.iter().map(SocketAddr::to_string).collect();
    let apps: Vec<String> = (1..=APPS)
        .map(|i| format!("app{i} http://{}", addr(9000 + i as u16)))
        .collect();
    assert_eq!(
        ready,
        format!(
            "ready: lb https://{}  {}  cluster {}",
            addr(8443),
            apps.join("  "),
            node_list.join(",")
        )
    );
    let admin = addr(8404);

    // Joins, room by room: every member where the room's first one is.
    let tls = wsmesh_client::tls::client_config(&ca).unwrap();
    let ws = ConnectOptions::new(&format!("wss://{}/ws", addr(8443)))
        .unwrap()
        .tls(tls);
    let mut members: Vec<(String, Connection, String)> = Vec::new();
    for r in 0..ROOMS {
        let room = format!("upc{r}");
        let mut first: Option<String> = None;
        for _ in 0..MEMBERS {
            let mut conn = Connection::connect(&ws.clone().room(&room)).await.unwrap();
            let (welcome, _) = conn.join(Duration::from_secs(10)).await.unwrap();
            let home = first.get_or_insert_with(|| welcome.instance.clone());
            assert_eq!(
                *home,
                welcome.instance,
                "room {room}: a member on {} after one on {home} (lb sessions now {:?})",
                welcome.instance,
                sessions(admin).await
            );
            members.push((room.clone(), conn, welcome.instance));
        }
    }

    // The lb shows every session under its room, on the app it joined.
    let shown = rooms_by_server(admin).await;
    let mut hosts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (room, _, app) in &members {
        hosts.entry(room.clone()).or_default().insert(app.clone());
    }
    for (room, apps) in &hosts {
        let on: BTreeSet<String> = shown[room].keys().cloned().collect();
        assert_eq!(&on, apps, "room {room}: lb hash keys vs the apps that welcomed");
        assert_eq!(shown[room].values().sum::<u64>(), MEMBERS as u64);
    }
    let single = hosts.values().filter(|a| a.len() == 1).count();
    assert!(single > 0, "no room met on one app: {hosts:?}");

    // One subscriber per app of the room, on the master of the room's slot.
    let keys = Keys::new("wsmesh:");
    let deadline = Instant::now() + LIMIT;
    for (room, apps) in &hosts {
        let channel = keys.channel(room);
        let master = wsmesh_testkit::redis_cluster::master_of(nodes[0], &channel)
            .await
            .unwrap();
        loop {
            let n = lab::drill::slots::shard_subscribers(master, &channel)
                .await
                .unwrap();
            if n == apps.len() as u64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "room {room}: {n} subscribers on {master}, {} apps hold it",
                apps.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Chats: each subscriber forwards those of its app's rooms, and only those.
    let mut before = Vec::new();
    for i in 1..=APPS {
        before.push(forwarded(i).await);
    }
    for r in 0..ROOMS {
        let room = format!("upc{r}");
        let sender = members.iter_mut().find(|(m, _, _)| *m == room).unwrap();
        for k in 0..CHATS {
            sender
                .1
                .send_chat(&format!("{room} chat {k}"), None)
                .await
                .unwrap();
        }
    }
    for (room, conn, app) in &mut members {
        let last = format!("{room} chat {}", CHATS - 1);
        let got = conn
            .chats_until(Duration::from_secs(20), |c| c.body == last)
            .await
            .unwrap_or_else(|e| panic!("a member of {room} on {app}: {e}"));
        let bodies: Vec<&str> = got.iter().map(|c| c.body.as_str()).collect();
        let want: Vec<String> = (0..CHATS).map(|k| format!("{room} chat {k}")).collect();
        assert_eq!(bodies, want, "room {room} on {app}");
    }
    let expected: Vec<u64> = (1..=APPS)
        .map(|i| {
            let app = format!("app{i}");
            (hosts.values().filter(|a| a.contains(&app)).count() * CHATS) as u64
        })
        .collect();
    let mut delta = Vec::new();
    while Instant::now() < deadline {
        delta.clear();
        for i in 1..=APPS {
            delta.push(forwarded(i).await - before[i - 1]);
        }
        if delta == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        delta, expected,
        "chats forwarded per subscriber vs its app's rooms × {CHATS}"
    );
    assert!(
        expected.iter().sum::<u64>() < (ROOMS * CHATS * APPS) as u64,
        "a subscriber forwarded rooms its app does not hold"
    );

    for (_, conn, _) in members {
        conn.close().await;
    }
    let status = up.terminate(LIMIT).await;
    assert!(status.success(), "lab up --redis cluster exited with {status}");
}
