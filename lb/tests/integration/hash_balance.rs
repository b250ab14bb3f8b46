//! `balance = "hash"` on `url_param:room`: one room's sessions meet on one
//! server, rooms spread by weight, a hot room stays together past the bound
//! while new rooms avoid its server (or spills at the bound with
//! `hash_stick = "off"`), a down,
//! drained or full server's rooms move to other servers and come back, a
//! request without the key is placed by leastconn, and the admin API shows
//! which keys each server holds.

use std::collections::HashMap;

use lb::config::{HashKey, HashStick};

use crate::support::*;

/// Backend options: hash on `url_param:room` with `factor`, then `weights`
/// (by server, in order) and `maxconn` for the first server if not 0.
fn hashed(servers: &[&Backend], certs: &Certs, factor: u32, weights: &[u32], maxconn: usize) -> LbOpts {
    let mut opts = LbOpts::new(servers, certs);
    opts.balance = Balance::Hash;
    let weights = weights.to_vec();
    opts.edit(move |c| {
        let b = &mut c.backends[0];
        b.hash_key = Some(HashKey::UrlParam("room".into()));
        b.hash_balance_factor = factor;
        for (s, w) in b.servers.iter_mut().zip(&weights) {
            s.weight = *w;
        }
        b.servers[0].maxconn = maxconn;
    });
    opts
}

/// The server a plain GET for `room` is sent to.
async fn server_of(certs: &Certs, port: u16, room: &str) -> String {
    let (status, headers, _) = https_get(certs, port, &format!("/?room={room}")).await;
    assert_eq!(status, 200, "{room}");
    headers["x-server"].to_str().unwrap().to_string()
}

/// Where each of `rooms` goes now.
async fn placement(certs: &Certs, port: u16, rooms: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rooms {
        out.push(server_of(certs, port, r).await);
    }
    out
}

/// A WebSocket member of `room`; its greeting names its server.
async fn member(certs: &Certs, port: u16, room: &str) -> (Wss, String) {
    let (ws, _, greeting) = wss_connect_to(certs, port, &format!("/ws?room={room}"), "wsmesh.v1").await;
    (ws, greeting.trim_start_matches("hello from ").to_string())
}

fn rooms(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("room-{i}")).collect()
}

#[tokio::test]
async fn one_room_s_members_meet_on_one_server_and_rooms_spread_by_weight() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let lb = Lb::start(&hashed(&[&a, &b], &certs, 0, &[1, 3], 0)).await;
    let mut members = Vec::new();
    for _ in 0..8 {
        members.push(member(&certs, lb.https, "lobby").await);
    }
    let home = members[0].1.clone();
    assert!(members.iter().all(|(_, s)| *s == home), "lobby split");
    // The admin API lists the key with its sessions on that server only.
    let servers = lb.servers().await;
    assert_eq!(servers[&home]["hash_keys"][0]["key"], "lobby");
    assert_eq!(servers[&home]["hash_keys"][0]["sessions"], 8);
    assert_eq!(servers[&home]["hash_keys_total"], 1);
    let other = if home == "app1" { "app2" } else { "app1" };
    assert_eq!(servers[other]["hash_keys_total"], 0);
    let backends = admin_get(lb.admin, "/api/backends").await.unwrap();
    assert_eq!(backends["backends"][0]["balance"], "hash");
    assert_eq!(backends["backends"][0]["hash_key"], "url_param:room");

    // 100 rooms over weights 1 and 3: app2 takes about three quarters.
    let placed = placement(&certs, lb.https, &rooms(100)).await;
    let on_app2 = placed.iter().filter(|s| *s == "app2").count();
    assert!((55..=95).contains(&on_app2), "app2 got {on_app2} of 100 rooms");
    // And each room keeps its server.
    assert_eq!(placement(&certs, lb.https, &rooms(100)).await, placed);
}

#[tokio::test]
async fn a_hot_room_stays_together_past_the_bound_and_new_rooms_go_elsewhere() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let lb = Lb::start(&hashed(&[&a, &b], &certs, 125, &[1, 1], 0)).await;
    let rooms = rooms(20);
    let homes = placement(&certs, lb.https, &rooms).await;
    let mut held = Vec::new();
    let mut on = Vec::new();
    for _ in 0..8 {
        let (ws, server) = member(&certs, lb.https, "hot").await;
        on.push(server);
        held.push(ws);
    }
    // Without stickiness the third member would spill (see below).
    let hot = on[0].clone();
    assert!(on.iter().all(|s| *s == hot), "{on:?}");
    // 8 of 8 sessions: past its bound, the hot room's server takes no new room.
    let moved: Vec<&String> = rooms
        .iter()
        .zip(&homes)
        .filter(|(_, home)| **home == hot)
        .map(|(r, _)| r)
        .collect();
    assert!(!moved.is_empty(), "{homes:?}");
    for room in moved {
        let (_ws, server) = member(&certs, lb.https, room).await;
        assert_ne!(server, hot, "{room} went to the full server");
    }
    assert_eq!(lb.servers().await[&hot]["hash_keys"][0]["sessions"], 8);
}

#[tokio::test]
async fn without_stickiness_a_hot_room_spills_to_its_next_server_at_the_bound() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let mut opts = hashed(&[&a, &b], &certs, 125, &[1, 1], 0);
    opts.edit(|c| c.backends[0].hash_stick = HashStick::Off);
    let lb = Lb::start(&opts).await;
    let mut on = HashMap::<String, usize>::new();
    let mut held = Vec::new();
    let mut first = None;
    for _ in 0..8 {
        let (ws, server) = member(&certs, lb.https, "hot").await;
        first.get_or_insert(server.clone());
        *on.entry(server).or_default() += 1;
        held.push(ws);
    }
    // The n-th session may go home while home holds fewer than
    // ceil(1.25 × n / 2): home ends with 5, the next server with 3.
    let home = first.unwrap();
    assert_eq!(on[&home], 5, "{on:?}");
    assert_eq!(on.values().sum::<usize>(), 8);
    let servers = lb.servers().await;
    for (name, n) in &on {
        assert_eq!(servers[name]["hash_keys"][0]["sessions"], *n as u64, "{name}");
    }
}

#[tokio::test]
async fn a_drained_or_down_server_s_rooms_move_and_come_back() {
    let certs = Certs::new();
    let apps = [
        Backend::start("app1").await,
        Backend::start("app2").await,
        Backend::start("app3").await,
    ];
    let mut opts = hashed(&[&apps[0], &apps[1], &apps[2]], &certs, 0, &[1, 1, 1], 0);
    opts.check = true;
    let lb = Lb::start(&opts).await;
    let rooms = rooms(30);
    let before = placement(&certs, lb.https, &rooms).await;
    assert!(before.iter().any(|s| s == "app2"), "{before:?}");

    for leave in ["drain", "down"] {
        match leave {
            "drain" => assert_eq!(admin_set_state(lb.admin, "app2", "drain").await, 200),
            _ => {
                apps[1].set_healthy(false);
                lb.wait_state("app2", "down").await;
            }
        }
        let during = placement(&certs, lb.https, &rooms).await;
        for (i, (was, now)) in before.iter().zip(&during).enumerate() {
            if was == "app2" {
                assert_ne!(now, "app2", "{leave}: room-{i} stayed");
                // The moved room's members still meet on one server.
                let (_m1, s1) = member(&certs, lb.https, &rooms[i]).await;
                let (_m2, s2) = member(&certs, lb.https, &rooms[i]).await;
                assert_eq!((&s1, &s2), (now, now), "{leave}: room-{i}");
            } else {
                assert_eq!(was, now, "{leave}: room-{i} moved though its server stayed");
            }
        }
        match leave {
            "drain" => assert_eq!(admin_set_state(lb.admin, "app2", "ready").await, 200),
            _ => {
                apps[1].set_healthy(true);
                lb.wait_state("app2", "up").await;
            }
        }
        assert_eq!(placement(&certs, lb.https, &rooms).await, before, "{leave}: back");
    }
}

#[tokio::test]
async fn a_full_server_s_room_goes_to_its_next_server_and_home_once_it_is_empty() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let lb = Lb::start(&hashed(&[&a, &b], &certs, 0, &[1, 1], 1)).await;
    // A room whose home is app1, the server with maxconn = 1.
    let mut room = None;
    for r in rooms(50) {
        if server_of(&certs, lb.https, &r).await == "app1" {
            room = Some(r);
            break;
        }
    }
    let room = room.expect("a room on app1 among 50");
    let (first, s1) = member(&certs, lb.https, &room).await;
    assert_eq!(s1, "app1");
    let (second, s2) = member(&certs, lb.https, &room).await;
    assert_eq!(s2, "app2", "app1 is full");
    drop(first);
    eventually(5, "app1's slot frees", || async {
        lb.servers().await["app1"]["sessions"] == 0
    })
    .await;
    // The room's open session is on app2: its next member joins it there.
    let (third, s3) = member(&certs, lb.https, &room).await;
    assert_eq!(s3, "app2");
    drop((second, third));
    eventually(5, "the room's sessions end", || async {
        lb.servers().await["app2"]["sessions"] == 0
    })
    .await;
    assert_eq!(member(&certs, lb.https, &room).await.1, "app1");
}

#[tokio::test]
async fn a_request_without_the_key_is_placed_by_leastconn() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let lb = Lb::start(&hashed(&[&a, &b], &certs, 0, &[1, 1], 0)).await;
    let mut held = Vec::new();
    let (ws, home) = member(&certs, lb.https, "busy").await;
    held.push(ws);
    let (ws, home_again) = member(&certs, lb.https, "busy").await;
    held.push(ws);
    assert_eq!(home, home_again);
    // Two sessions on the room's server, none on the other: leastconn
    // sends keyless sessions to the other one.
    for _ in 0..2 {
        let (ws, _, greeting) = wss_connect(&certs, lb.https, "wsmesh.v1").await;
        assert!(!greeting.ends_with(&home), "{greeting}");
        held.push(ws);
    }
    let servers = lb.servers().await;
    let other = if home == "app1" { "app2" } else { "app1" };
    assert_eq!(servers[other]["sessions"], 2);
    assert_eq!(
        servers[other]["hash_keys_total"], 0,
        "keyless sessions list no key"
    );
}
