//! Issue 4's drills at a small size: each fault on a fresh cluster (Redis,
//! two apps, two subscribers, the TLS lb) with 24 resilient clients in 3
//! rooms sending through `wss://`; the ledger must show nothing lost,
//! duplicated, reordered or unacked, and no client may give up.
//!
//! One test per fault, but they run one after the other (a shared lock):
//! each starts six processes and 24 TLS clients, and two at once on the
//! 2-core CI machine would measure the machine, not failover.

use lab::drill::{self, DrillOptions, Fault};
use tokio::sync::Mutex;

/// Serializes the drills within this test binary.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

async fn drill_is_clean(fault: Fault) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let _ = drill::raise_nofile_limit();
    let report = drill::run_one(fault, &DrillOptions::small())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{}", report.table());
    let t = &report.totals;
    assert!(t.acked > 0 && t.expected > 0, "the load ran: {t:?}");
    assert_eq!(t.lost, 0, "lost\n{}", report.table());
    assert_eq!(t.duplicated, 0, "duplicated\n{}", report.table());
    assert_eq!(t.out_of_order, 0, "out of order\n{}", report.table());
    assert_eq!(t.unacked, 0, "unacked\n{}", report.table());
    assert_eq!(t.ack_conflicts, 0, "ack conflicts\n{}", report.table());
    assert_eq!(t.gave_up, 0, "gave up\n{}", report.table());
    assert!(report.quiesced, "not quiet\n{}", report.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_app_loses_nothing() {
    drill_is_clean(Fault::KillApp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_app_on_sigterm_loses_nothing() {
    drill_is_clean(Fault::DrainApp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_admin_drain_and_ready_loses_nothing() {
    drill_is_clean(Fault::LbDrain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_subscriber_loses_nothing() {
    drill_is_clean(Fault::KillSubscriber).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_redis_loses_nothing() {
    drill_is_clean(Fault::RestartRedis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_app_past_the_health_timeout_loses_nothing() {
    drill_is_clean(Fault::FreezeApp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_lb_loses_nothing() {
    drill_is_clean(Fault::KillLb).await;
}
