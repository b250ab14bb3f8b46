use std::net::SocketAddr;

use super::*;
use crate::configs::{committed, configs_dir};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn by_10000() -> Shift<'static> {
    Shift {
        offset: 10000,
        base: Path::new("/cfg"),
    }
}

#[test]
fn every_loopback_port_of_an_app_moves_and_nothing_else_changes() {
    let mut c = AppConfig::new("app1", sa("127.0.0.1:9001"), sa("127.0.0.1:0"));
    c.redis.url = "redis://127.0.0.1:6390/".into();
    c.limits.allowed_origins = vec![
        "http://127.0.0.1:9001".into(),
        "https://127.0.0.1:8443/x?y=1".into(),
        "http://10.0.0.1:9001".into(),
        "http://localhost:9001".into(),
    ];
    let before = c.clone();
    by_10000().app(&mut c).unwrap();
    assert_eq!(c.listen.public, sa("127.0.0.1:19001"));
    assert_eq!(c.listen.internal, sa("127.0.0.1:0"), "port 0 stays");
    assert_eq!(c.redis.url, "redis://127.0.0.1:16390/");
    assert_eq!(
        c.limits.allowed_origins,
        [
            "http://127.0.0.1:19001",
            "https://127.0.0.1:18443/x?y=1",
            "http://10.0.0.1:9001",
            "http://localhost:9001"
        ]
    );
    assert_eq!(c.instance, before.instance);
    assert_eq!(c.limits.max_connections, before.limits.max_connections);
    assert_eq!(c.drain, before.drain);
}

#[test]
fn every_loopback_port_of_a_subscriber_moves() {
    let mut c: SubscriberConfig = committed("subscriber1.toml").unwrap();
    c.app.internal_url = "http://127.0.0.1:9101".into();
    by_10000().subscriber(&mut c).unwrap();
    assert_eq!(c.redis.url, "redis://127.0.0.1:16390/");
    assert_eq!(c.app.internal_url, "http://127.0.0.1:19101", "no slash added");
    assert_eq!(c.listen.health, sa("127.0.0.1:19201"));
}

#[test]
fn relative_cert_and_key_paths_become_absolute_against_the_original_dir() {
    let mut c: LbConfig = committed("lb.toml").unwrap();
    c.frontends[0]
        .certs
        .push(lb::config::CertFiles::new(Path::new("/etc/lb/other.pem"), None));
    c.admin.token = "certs/not-a-path".into();
    let shift = Shift {
        offset: 1,
        base: Path::new("/repo/configs/local"),
    };
    shift.lb(&mut c).unwrap();
    let certs = &c.frontends[0].certs;
    assert_eq!(
        certs[0].cert.get_ref(),
        "/repo/configs/local/../../certs/server.pem"
    );
    assert_eq!(
        certs[0].key.as_ref().map(|k| k.get_ref().as_str()),
        Some("/repo/configs/local/../../certs/server.key")
    );
    assert_eq!(certs[1].cert.get_ref(), "/etc/lb/other.pem");
    assert_eq!(c.admin.token, "certs/not-a-path");
}

#[test]
fn a_port_past_65535_is_an_error_naming_file_key_and_port() {
    let dir = tempfile::tempdir().unwrap();
    let app1 = dir.path().join("app1.toml");
    let c = AppConfig::new("app1", sa("127.0.0.1:9001"), sa("127.0.0.1:1"));
    write(&c, &app1).unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = render_dir(dir.path(), out.path(), 60000).unwrap_err();
    let text = err.to_string();
    for part in ["app1.toml", "listen.public", "9001", "60000", "--port-offset"] {
        assert!(text.contains(part), "{part} missing in {text}");
    }

    let mut lb: LbConfig = committed("lb.toml").unwrap();
    *lb.admin.listen.get_mut() = "127.0.0.1:1".into();
    for f in &mut lb.frontends {
        *f.listen.get_mut() = "127.0.0.1:1".into();
    }
    for s in &mut lb.backends[0].servers {
        *s.addr.get_mut() = "127.0.0.1:1".into();
    }
    let err = Shift {
        offset: 60000,
        base: Path::new("/"),
    }
    .lb(&mut lb);
    assert_eq!(
        err.unwrap_err(),
        TooBig {
            key: "frontend[1].redirect_https_port".into(),
            port: 8443
        }
    );

    let by_one = Shift {
        offset: 1,
        base: Path::new("/"),
    };
    let mut c = AppConfig::new("a", sa("127.0.0.1:65535"), sa("127.0.0.1:1"));
    assert!(by_one.app(&mut c).is_err());
    let mut c = AppConfig::new("a", sa("127.0.0.1:65534"), sa("127.0.0.1:1"));
    by_one.app(&mut c).unwrap();
    assert_eq!(c.listen.public, sa("127.0.0.1:65535"));
}

#[test]
fn committed_configs_move_completely() {
    let out = tempfile::tempdir().unwrap();
    let written = render_dir(&configs_dir(), out.path(), 10000).unwrap();
    let names: Vec<_> = written.iter().filter_map(|p| p.file_name()?.to_str()).collect();
    assert_eq!(
        names,
        [
            "app1.toml",
            "app2.toml",
            "lb.toml",
            "subscriber1.toml",
            "subscriber2.toml"
        ]
    );
    for file in &written {
        let text = std::fs::read_to_string(file).unwrap();
        for port in [6390, 8080, 8404, 8443, 9001, 9002, 9101, 9102, 9201, 9202] {
            assert!(
                !text.contains(&format!("127.0.0.1:{port}\"")),
                "{file:?} keeps {port}"
            );
            assert!(
                !text.contains(&format!("127.0.0.1:{port}/")),
                "{file:?} keeps {port}"
            );
        }
    }
    let lb: LbConfig = load(&out.path().join("lb.toml")).unwrap();
    let cert = lb.frontends[0].certs[0].cert.get_ref();
    assert!(Path::new(cert).is_absolute(), "{cert}");
    assert_eq!(lb.frontends[1].redirect_https_port, Some(18443));
}

#[test]
fn a_directory_without_configs_or_with_an_unknown_one_is_refused() {
    let empty = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = render_dir(empty.path(), out.path(), 1).unwrap_err();
    assert!(matches!(err, ShiftError::NoConfigs(_)), "{err}");
    std::fs::write(empty.path().join("haproxy.toml"), "").unwrap();
    let err = render_dir(empty.path(), out.path(), 1).unwrap_err();
    assert!(matches!(err, ShiftError::Unknown(_)), "{err}");
}
