//! The scale-out drills at a small size: 4 apps behind the lb (`balance =
//! "hash"` on the room) on a 3-master, 3-replica Redis Cluster, 40
//! resilient clients in 20 rooms. Each drill's ledger must be clean (see
//! `drills::clean_drill`) and its evidence must show the fault happened:
//! a replica promoted, slots moved and subscribed on their new master, a
//! killed app's rooms served by other apps.

use lab::drill::faults::Evidence;
use lab::drill::{DrillOptions, Fault};

use crate::drills::clean_drill;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_cluster_master_promotes_its_replica_and_loses_nothing() {
    let report = clean_drill(Fault::KillClusterMaster, &DrillOptions::small_cluster()).await;
    let promoted: Vec<&Evidence> = report
        .timeline
        .evidence
        .iter()
        .filter(|e| matches!(e, Evidence::Promoted { old, new, rooms } if old != new && *rooms > 0))
        .collect();
    assert_eq!(promoted.len(), 1, "a replica promoted\n{}", report.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_busy_rooms_slots_while_they_chat_loses_nothing() {
    let report = clean_drill(Fault::ReshardDuringChat, &DrillOptions::small_cluster()).await;
    let moved: Vec<&Evidence> = report
        .timeline
        .evidence
        .iter()
        .filter(|e| matches!(e, Evidence::SlotMoved { from, to, subscribers, .. } if from != to && *subscribers >= 1))
        .collect();
    assert!(
        !moved.is_empty(),
        "slots moved and subscribed there\n{}",
        report.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_app_under_hash_balance_moves_its_rooms_and_loses_nothing() {
    let report = clean_drill(Fault::KillApp, &DrillOptions::small_cluster()).await;
    let moved: Vec<&Evidence> = report
        .timeline
        .evidence
        .iter()
        .filter(|e| matches!(e, Evidence::RoomMoved { from, to, .. } if !to.is_empty() && !to.contains(from)))
        .collect();
    assert!(
        !moved.is_empty(),
        "rooms moved to their next apps\n{}",
        report.table()
    );
}
