//! Unit tests of the hub: fan-out, ordering, cursors and the room set.

use super::*;

fn chat(room: &str, id: &str) -> Chat {
    Chat {
        id: id.into(),
        room: room.into(),
        nick: "n".into(),
        body: format!("m{id}"),
        ts: 1,
        cid: None,
    }
}

fn hub(queue: usize) -> Arc<Hub> {
    Hub::new(queue, Arc::new(Metrics::new()))
}

fn drain_ids(m: &mut Membership) -> Vec<String> {
    let mut ids = vec![];
    while let Ok(out) = m.rx.try_recv() {
        if let Outbound::Chats(b) = out {
            ids.extend(b.chats().iter().map(|c| c.id.clone()));
        }
    }
    ids
}

#[test]
fn live_member_gets_chats_in_order() {
    let h = hub(8);
    let mut m = h.join("r", Start::Live);
    assert_eq!(
        h.deliver(vec![chat("r", "1-0"), chat("r", "2-0"), chat("x", "1-0")]),
        2,
        "a room without local sockets is nobody's"
    );
    assert_eq!(drain_ids(&mut m), vec!["1-0", "2-0"]);
}

#[test]
fn members_share_one_batch_so_it_is_rendered_once() {
    let h = hub(8);
    let mut a = h.join("r", Start::Live);
    let mut b = h.join("r", Start::Live);
    h.deliver(vec![chat("r", "1-0")]);
    let (Ok(Outbound::Chats(x)), Ok(Outbound::Chats(y))) = (a.rx.try_recv(), b.rx.try_recv()) else {
        panic!("both members get the batch");
    };
    assert!(Arc::ptr_eq(&x, &y));
    let mut renders = 0;
    for batch in [&x, &y] {
        batch.v1_frame(|_| {
            renders += 1;
            Some("frame".into())
        });
    }
    assert_eq!(renders, 1);
}

#[test]
fn duplicates_and_older_ids_are_dropped_per_room() {
    let h = hub(8);
    let mut m = h.join("r", Start::Live);
    h.deliver(vec![chat("r", "5-0")]);
    assert_eq!(
        h.deliver(vec![chat("r", "5-0"), chat("r", "4-9"), chat("r", "6-0")]),
        1
    );
    assert_eq!(drain_ids(&mut m), vec!["5-0", "6-0"]);
    assert_eq!(h.metrics.duplicates_dropped.get(), 2);
}

#[test]
fn replay_merge_sends_only_buffered_chats_after_the_replay() {
    let h = hub(8);
    let mut m = h.join("r", Start::Replaying);
    // Arrive while history is being read; 2-0 is also in the replay.
    h.deliver(vec![chat("r", "2-0"), chat("r", "3-0")]);
    assert!(drain_ids(&mut m).is_empty(), "nothing before the replay");
    h.go_live("r", m.id, "2-0".parse().expect("id"));
    h.deliver(vec![chat("r", "4-0")]);
    assert_eq!(drain_ids(&mut m), vec!["3-0", "4-0"]);
}

#[test]
fn refill_below_a_fresh_replay_is_not_repeated() {
    let h = hub(8);
    let mut m = h.join("r", Start::Replaying);
    h.go_live("r", m.id, "9-0".parse().expect("id"));
    // The subscriber refills from the cursor; the socket already has up to 9-0.
    assert_eq!(h.cursors(None).get("r").map(String::as_str), Some("9-0"));
    h.deliver(vec![chat("r", "8-0"), chat("r", "9-0"), chat("r", "10-0")]);
    assert_eq!(drain_ids(&mut m), vec!["10-0"]);
}

#[test]
fn full_queue_kicks_only_the_slow_member() {
    let h = hub(2);
    let mut slow = h.join("r", Start::Live);
    let mut fast = h.join("r", Start::Live);
    for i in 1..=3 {
        h.deliver(vec![chat("r", &format!("{i}-0"))]);
        drain_ids(&mut fast);
    }
    assert_eq!(slow.kicked.try_recv(), Ok(Kick::SlowConsumer));
    assert!(fast.kicked.try_recv().is_err(), "fast member not kicked");
    assert_eq!(h.local_count("r"), 1);
    h.deliver(vec![chat("r", "4-0")]);
    assert_eq!(drain_ids(&mut fast), vec!["4-0"]);
    assert_eq!(h.metrics.queue_drops.get(), 1);
}

#[test]
fn overflowing_replay_buffer_kicks() {
    let h = hub(1);
    let mut m = h.join("r", Start::Replaying);
    h.deliver(vec![chat("r", "1-0"), chat("r", "2-0")]);
    assert_eq!(m.kicked.try_recv(), Ok(Kick::SlowConsumer));
}

#[test]
fn cursors_cover_delivered_rooms_and_fresh_empty_rooms() {
    let h = hub(4);
    let live = h.join("a", Start::Live);
    h.deliver(vec![chat("a", "3-1")]);
    let m = h.join("b", Start::Replaying);
    let reading = h.join("c", Start::Replaying);
    let resuming = h.join("d", Start::Replaying);
    let awaiting = h.join("e", Start::Replaying);
    h.go_live("b", m.id, StreamId::ZERO);
    h.reading("c", reading.id);
    h.replayed_to("d", resuming.id, "5-0".parse().unwrap());
    let c = h.cursors(None);
    assert_eq!(c.get("a").map(String::as_str), Some("3-1"));
    assert_eq!(c.get("b").map(String::as_str), Some("0-0"));
    assert_eq!(
        c.get("c").map(String::as_str),
        Some("0-0"),
        "before the replay knows where it starts, it may need everything"
    );
    assert_eq!(
        c.get("d").map(String::as_str),
        Some("5-0"),
        "a replay in progress has one"
    );
    assert_eq!(
        c.get("e"),
        None,
        "a socket waiting for the subscription reads after it"
    );
    h.replayed_to("d", resuming.id, "7-0".parse().unwrap());
    assert_eq!(h.cursors(None).get("d").map(String::as_str), Some("7-0"));
    let only = h.cursors(Some(&["d".to_string(), "zz".to_string()]));
    assert_eq!(only.keys().collect::<Vec<_>>(), ["d"]);
    drop(live);
    assert_eq!(
        h.cursors(None).get("a"),
        None,
        "a room's cursor goes with its last socket"
    );
    drop((awaiting, reading));
}

#[test]
fn the_room_set_changes_with_first_joins_and_last_leaves() {
    let h = hub(4);
    let v0 = h.rooms_of_interest().at;
    let a1 = h.join("a", Start::Replaying);
    let a2 = h.join("a", Start::Live);
    let b = h.join("b", Start::Live);
    let set = h.rooms_of_interest();
    assert_eq!(set.rooms, ["a", "b"]);
    assert_eq!(set.at.version, v0.version + 2, "one version per room added");
    drop(a1);
    assert_eq!(h.rooms_of_interest().at, set.at, "a still has a socket");
    drop(a2);
    let after = h.rooms_of_interest();
    assert_eq!(
        (after.rooms.as_slice(), after.at.version),
        (&["b".to_string()][..], set.at.version + 1)
    );
    drop(b);
}

#[tokio::test]
async fn a_socket_reads_at_once_when_its_room_is_confirmed_or_no_subscriber_polls() {
    let h = hub(4);
    let first = h.join("r", Start::Replaying);
    // Nobody polls: no wait, and the room's cursor now holds the socket.
    assert_eq!(h.subscribed("r", first.id).await, Subscription::Unconfirmed);
    assert_eq!(h.cursors(None).get("r").map(String::as_str), Some("0-0"));
    let at = h.rooms_of_interest().at;
    h.interest().confirm(at.epoch, at.version);
    let second = h.join("r", Start::Replaying);
    assert_eq!(h.subscribed("r", second.id).await, Subscription::Confirmed);
}

/// A socket without `since` learns where its replay starts only from
/// the read (`last`); until then its room's cursor must not pass over
/// anything it may still need. Here a fill runs while `z` is reading and
/// `y` has placed itself at 4-0; 4-0 had been missed by the subscriber.
#[test]
fn a_replay_not_yet_placed_holds_its_rooms_cursor_at_the_start() {
    let h = hub(8);
    let mut z = h.join("r", Start::Replaying);
    let mut y = h.join("r", Start::Replaying);
    h.reading("r", z.id);
    h.replayed_to("r", y.id, "4-0".parse().expect("id"));
    let cursor = h.cursors(None).get("r").cloned();
    assert_eq!(cursor.as_deref(), Some("0-0"), "z may need anything");
    // The fill re-sends the room from the cursor: everything after 0-0.
    let refill: Vec<Chat> = (1..=5).map(|i| chat("r", &format!("{i}-0"))).collect();
    h.deliver(refill);
    // z's `last()` read ended at 3-0; y's replay at 4-0.
    h.go_live("r", z.id, "3-0".parse().expect("id"));
    h.go_live("r", y.id, "4-0".parse().expect("id"));
    assert_eq!(drain_ids(&mut z), vec!["4-0", "5-0"]);
    assert_eq!(drain_ids(&mut y), vec!["5-0"]);
}

#[test]
fn dropping_membership_leaves_the_room() {
    let h = hub(4);
    let m = h.join("r", Start::Live);
    assert_eq!(h.local_counts(), vec![("r".to_string(), 1)]);
    drop(m);
    assert_eq!(h.local_count("r"), 0);
    assert!(h.local_counts().is_empty());
}

#[test]
fn presence_is_announced_only_on_change() {
    let h = hub(4);
    let mut m = h.join("r", Start::Live);
    h.announce_presence("r", 2);
    h.announce_presence("r", 2);
    h.announce_presence("r", 3);
    let mut seen = vec![];
    while let Ok(Outbound::Presence(n)) = m.rx.try_recv() {
        seen.push(n);
    }
    assert_eq!(seen, vec![2, 3]);
}
