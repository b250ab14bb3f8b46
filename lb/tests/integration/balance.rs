//! Distribution: roundrobin alternates, leastconn sends new sessions to the
//! server with fewer open ones, source keeps a client on one server.

use std::collections::HashMap;

use crate::support::*;

async fn first_server_counts(certs: &Certs, port: u16, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let (_, headers, _) = https_get(certs, port, "/").await;
        let name = headers["x-server"].to_str().unwrap().to_string();
        *seen.entry(name).or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn roundrobin_alternates_between_servers() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let lb = Lb::start(&LbOpts::new(&[&a, &b], &certs)).await;
    let seen = first_server_counts(&certs, lb.ports.https, 10).await;
    assert_eq!(seen["app1"], 5, "{seen:?}");
    assert_eq!(seen["app2"], 5, "{seen:?}");
}

#[tokio::test]
async fn leastconn_sends_new_tunnels_to_the_less_loaded_server() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let mut opts = LbOpts::new(&[&a, &b], &certs);
    opts.balance = Balance::LeastConn;
    let lb = Lb::start(&opts).await;
    let mut held = Vec::new();
    for _ in 0..6 {
        let (ws, _, greeting) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
        held.push((greeting, ws));
    }
    let on = |held: &Vec<(String, Wss)>, name: &str| held.iter().filter(|(g, _)| g.ends_with(name)).count();
    assert_eq!((on(&held, "app1"), on(&held, "app2")), (3, 3));
    // Close two of app1's tunnels: app1 now has 1 session, app2 has 3, so
    // the next two new sessions both go to app1.
    for _ in 0..2 {
        let pos = held.iter().position(|(g, _)| g.ends_with("app1")).unwrap();
        let (_, mut ws) = held.remove(pos);
        ws.close(None).await.unwrap();
    }
    eventually(5, "app1 down to one session", || async {
        lb.servers().await["app1"]["sessions"] == 1
    })
    .await;
    for _ in 0..2 {
        let (ws, _, greeting) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
        assert_eq!(greeting, "hello from app1");
        held.push((greeting, ws));
    }
    assert_eq!(lb.servers().await["app2"]["sessions"], 3);
}

#[tokio::test]
async fn source_keeps_a_client_on_one_server() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let mut opts = LbOpts::new(&[&a, &b], &certs);
    opts.balance = Balance::Source;
    let lb = Lb::start(&opts).await;
    let seen = first_server_counts(&certs, lb.ports.https, 10).await;
    assert_eq!(seen.len(), 1, "one client IP, one server: {seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 10);
}

#[tokio::test]
async fn slowstart_gives_a_returning_server_a_small_share_first_under_leastconn() {
    let certs = Certs::new();
    let (a, b) = (Backend::start("app1").await, Backend::start("app2").await);
    let mut opts = LbOpts::new(&[&a, &b], &certs);
    opts.balance = Balance::LeastConn;
    // Long enough that app1's weight stays at its first step (1/16 of
    // app2's) for the whole test: the order below holds however slow it runs.
    opts.edit(|c| {
        for s in c.backends[0]
            .servers
            .iter_mut()
            .filter(|s| s.name.get_ref() == "app1")
        {
            s.slowstart = Duration::from_secs(3600);
        }
    });
    let lb = Lb::start(&opts).await;
    // No slowstart at start (HAProxy): both share from the first session.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (ws, _, greeting) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
        held.push(greeting);
        drop(ws);
    }
    held.sort();
    assert_eq!(held, ["hello from app1", "hello from app2"]);
    eventually(5, "both tunnels closed", || async {
        let s = lb.servers().await;
        s["app1"]["sessions"] == 0 && s["app2"]["sessions"] == 0
    })
    .await;

    // app1 comes back from maintenance: its weight ramps from 1/16.
    admin_set_state(lb.ports.admin, "app1", "maint").await;
    admin_set_state(lb.ports.admin, "app1", "ready").await;
    let mut order = Vec::new();
    let mut tunnels = Vec::new();
    for _ in 0..17 {
        let (ws, _, greeting) = wss_connect(&certs, lb.ports.https, "wsmesh.v1").await;
        order.push(greeting.trim_start_matches("hello from ").to_string());
        tunnels.push(ws);
    }
    // Loads per weight: app2 (16 steps) takes new sessions until it holds
    // 15, when (15 + 1) / 16 ties app1's (0 + 1) / 1; then app1 gets one.
    assert!(order[..15].iter().all(|s| s == "app2"), "{order:?}");
    assert_eq!(order.iter().filter(|s| *s == "app1").count(), 1, "{order:?}");
}
