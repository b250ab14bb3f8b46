//! A tiny bounded run of the bench load generator against the fast backend,
//! straight and through the lb: the measurements must be sane (requests
//! counted, no errors, latencies recorded). No speed is asserted.

use std::time::Duration;

use lab::bench::loadgen::{self, Budget, Run};
use lab::bench::net::{Sources, Target};
use lab::bench::{backend, lbconf};
use wsmesh_testkit::cluster::Cluster;

fn budget() -> Budget {
    Budget {
        duration: Duration::from_millis(300),
        max_ops: 2_000,
    }
}

fn assert_sane(what: &str, run: &Run) {
    assert!(run.ok > 0, "{what}: nothing counted: {run:?}");
    assert_eq!(run.errors, 0, "{what}: errors: {:?}", run.first_error);
    assert!(!run.hist.is_empty(), "{what}: empty histogram");
    assert!(run.ok <= budget().max_ops, "{what}: budget exceeded");
    assert!(run.rate() > 0.0 && run.ms(0.99) > 0.0, "{what}: {run:?}");
}

#[tokio::test]
async fn load_generator_measures_the_backend_directly_and_through_the_lb() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = listener.local_addr().unwrap();
    let server = tokio::spawn(backend::serve(listener));
    let sources = Sources::loopback(2);

    let direct = [Target::plain(backend_addr)];
    assert_sane(
        "direct keep-alive",
        &loadgen::http_keepalive(&direct, sources.clone(), 4, "/bench/small", budget()).await,
    );
    assert_sane(
        "direct echo",
        &loadgen::ws_echo(&direct, sources.clone(), 4, budget()).await,
    );

    let dir = tempfile::tempdir().unwrap();
    let certs = lbconf::gen_certs(&dir.path().join("certs")).unwrap();
    let tls = wsmesh_client::tls::client_config(&certs.ca).unwrap();
    let listen = wsmesh_testkit::ports::free_addr().unwrap();
    let admin = wsmesh_testkit::ports::free_addr().unwrap();
    let config = dir.path().join("lb.toml");
    let route = lbconf::Route {
        name: "apps".into(),
        listen,
        servers: vec![("app1".into(), backend_addr)],
    };
    lbconf::render(&[route], &certs, admin, &config).unwrap();
    let mut lb = Cluster::new();
    lb.spawn(lbconf::spec("lb", &config, admin).unwrap()).unwrap();
    lb.wait_healthy(Duration::from_secs(20)).await.unwrap();
    lbconf::wait_all_up(admin, Duration::from_secs(20)).await.unwrap();

    let via_lb = [Target::tls(listen, tls)];
    assert_sane(
        "lb keep-alive",
        &loadgen::http_keepalive(&via_lb, sources.clone(), 4, backend::PAGE_PATH, budget()).await,
    );
    assert_sane(
        "lb handshakes",
        &loadgen::http_new_conns(&via_lb, sources.clone(), 2, budget()).await,
    );
    assert_sane(
        "lb echo",
        &loadgen::ws_echo(&via_lb, sources.clone(), 4, budget()).await,
    );
    let (open, failed) = loadgen::idle_tunnels(&via_lb[0], sources, 20, 8, Duration::from_secs(10)).await;
    assert_eq!((open.len(), failed), (20, 0));
    drop(open);

    lb.shutdown(Duration::from_secs(5)).await.unwrap();
    server.abort();
}
