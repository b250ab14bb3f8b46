//! `maxconn`: at the frontend's limit the lb stops accepting; the next
//! client is served as soon as a slot frees (HAProxy's behaviour: the
//! kernel queues, nobody is refused).

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn connection_over_frontend_maxconn_waits_for_a_free_slot() {
    let certs = Certs::new();
    let app = Backend::start("app1").await;
    let mut opts = LbOpts::new(&[&app], &certs);
    opts.edit(|c| c.frontends[0].maxconn = 1);
    let lb = Lb::start(&opts).await;
    let first = tls_connect(&certs, lb.ports.https, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let port = lb.ports.https;
    let certs = std::sync::Arc::new(certs);
    let c = certs.clone();
    let mut second =
        tokio::spawn(async move { tls_connect(&c, port, "localhost", &[b"http/1.1"]).await.is_ok() });
    // While the only slot is taken the second handshake cannot complete.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut second)
            .await
            .is_err(),
        "second connection served while the first holds the only slot"
    );
    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("second connection served after the first closed")
        .unwrap();
    assert!(served);
}
