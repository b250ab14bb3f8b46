use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let source = Source {
        file: PathBuf::from("/etc/lb/lb.toml"),
        text: text.into(),
    };
    let config: Config = source.parse()?;
    config.validate(&source)?;
    Ok(config)
}

const MINIMAL: &str = r#"
[[frontend]]
name = "web"
listen = "127.0.0.1:8080"
backend = "apps"

[[backend]]
name = "apps"
[[backend.server]]
name = "app1"
addr = "127.0.0.1:9001"
"#;

#[test]
fn minimal_config_gets_haproxy_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.backends[0].balance, Balance::LeastConn);
    assert_eq!(c.backends[0].retries, 3);
    assert_eq!(c.frontends[0].deny, ["/internal/", "/metrics"]);
    assert_eq!(c.frontends[0].proxy_protocol, ProxyProtocol::None);
    assert_eq!(c.frontends[0].per_source, None);
    assert_eq!(c.admin.listen.get_ref(), "127.0.0.1:8404");
    let check = Check::default();
    assert_eq!(
        (check.interval, check.rise, check.fall),
        (Duration::from_secs(2), 2, 3)
    );
    assert_eq!(check.fast_interval(), check.interval);
}

#[test]
fn unknown_backend_names_its_line() {
    let text = MINIMAL.replace("backend = \"apps\"", "backend = \"nope\"");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(5), "{e}");
    assert!(e.reason.contains("unknown backend \"nope\""), "{e}");
}

#[test]
fn bad_server_address_names_its_line() {
    let e = parse(&MINIMAL.replace("127.0.0.1:9001", "localhost")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(11), "{e}");
}

#[test]
fn duplicate_server_names_are_refused() {
    let text = format!("{MINIMAL}[[backend.server]]\nname = \"app1\"\naddr = \"127.0.0.1:9002\"\n");
    let e = parse(&text).unwrap_err();
    assert!(e.reason.contains("duplicate server"), "{e}");
    assert_eq!(e.position.map(|p| p.0), Some(13), "{e}");
}

#[test]
fn failover_keys_parse_and_a_zero_error_limit_is_refused() {
    let text = MINIMAL.replace(
        "name = \"apps\"\n",
        "name = \"apps\"\non_marked_down = \"shutdown-sessions\"\non_error = \"mark-down\"\n\
         retry_on = [\"conn-failure\", \"empty-response\", \"503\"]\n",
    );
    let c = parse(&text).unwrap();
    let b = &c.backends[0];
    assert_eq!(b.on_marked_down, OnMarkedDown::ShutdownSessions);
    assert_eq!(b.on_error, OnError::MarkDown);
    assert_eq!(b.error_limit, 1);
    assert_eq!(
        b.retry_on,
        [RetryOn::ConnFailure, RetryOn::EmptyResponse, RetryOn::Status503]
    );
    let unreachable = parse(&text.replace("shutdown-sessions", "shutdown-unreachable")).unwrap();
    assert_eq!(
        unreachable.backends[0].on_marked_down,
        OnMarkedDown::ShutdownUnreachable
    );
    let defaults = parse(MINIMAL).unwrap();
    assert_eq!(defaults.backends[0].on_marked_down, OnMarkedDown::None);
    assert_eq!(defaults.backends[0].on_error, OnError::FailCheck);
    assert_eq!(defaults.backends[0].retry_on, [RetryOn::ConnFailure]);
    let e = parse(&format!("{MINIMAL}error_limit = 0\n")).unwrap_err();
    assert!(e.reason.contains("error_limit"), "{e}");
    let e =
        parse(&MINIMAL.replace("name = \"apps\"\n", "name = \"apps\"\nretry_on = [\"404\"]\n")).unwrap_err();
    assert!(e.reason.contains("404"), "{e}");
}

/// Parses `text`, writes it back and parses that: the same value.
fn round_trip(text: &str) -> String {
    let config: Config = toml::from_str(text).unwrap();
    let written = toml::to_string(&config).unwrap();
    let again: Config = toml::from_str(&written).unwrap_or_else(|e| panic!("{e}\n{written}"));
    assert_eq!(again, config, "{written}");
    written
}

#[test]
fn committed_configs_write_back_to_the_same_value() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs");
    for dir in ["local", "vagrant"] {
        let text = std::fs::read_to_string(format!("{root}/{dir}/lb.toml")).unwrap();
        let written = round_trip(&text);
        assert!(written.contains("tunnel = \"1h\""), "{dir}: {written}");
        assert!(written.contains("interval = \"1s\""), "{dir}: {written}");
        parse(&written).unwrap_or_else(|e| panic!("{dir}: {e}"));
    }
}

#[test]
fn a_config_built_as_values_is_valid_once_written() {
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut https = Frontend::new("https", addr(8443), "apps");
    https.certs.push(CertFiles::new(
        Path::new("server.pem"),
        Some(Path::new("server.key")),
    ));
    https.routes.push(Route::new("/api/", "apps"));
    let mut apps = Backend::new("apps", vec![Server::new("app1", addr(9001))]);
    apps.check = Some(Check::default());
    apps.servers.push(Server::new("app2", addr(9002)));
    let config = Config {
        admin: Admin::new(addr(8404)),
        frontends: vec![https, Frontend::redirect("http", addr(8080), 8443)],
        backends: vec![apps],
        ..Config::default()
    };
    let written = toml::to_string(&config).unwrap();
    assert_eq!(parse(&written).unwrap(), config, "{written}");
    assert_eq!(parse(&round_trip(MINIMAL)).unwrap(), parse(MINIMAL).unwrap());
}

/// Two backends and two frontends, so a check that found the first
/// key of a name would point at the wrong table.
const TWO_OF_EACH: &str = r#"[[frontend]]
name = "a"
listen = "127.0.0.1:8080"
backend = "one"
hsts = "max-age=1"

[[frontend]]
name = "b"
listen = "127.0.0.1:8081"
backend = "two"
hsts = "max-age=2"

[[backend]]
name = "one"
error_limit = 1
[backend.check]
interval = "1s"
rise = 2
fall = 3
[[backend.server]]
name = "s1"
addr = "127.0.0.1:9001"

[[backend]]
name = "two"
  error_limit = 1
[backend.check]
  interval = "1s"
  rise = 2
  fall = 3
  path = "/healthz"
[[backend.server]]
name = "s2"
addr = "127.0.0.1:9002"
"#;

#[test]
fn a_bad_key_in_the_second_table_names_that_table_s_line_and_column() {
    parse(TWO_OF_EACH).unwrap();
    let cases = [
        (
            "  rise = 2\n  fall",
            "  rise = 0\n  fall",
            "lb.toml:29:3: rise and fall must be at least 1",
        ),
        (
            "  fall = 3\n  path",
            "  fall = 0\n  path",
            "lb.toml:30:3: rise and fall must be at least 1",
        ),
        (
            "  interval = \"1s\"\n  rise",
            "  interval = \"0s\"\n  rise",
            "lb.toml:28:3: check interval must not be 0",
        ),
        (
            "\"/healthz\"",
            "\"healthz\"",
            "lb.toml:31:3: check path must start with '/'",
        ),
        (
            "  error_limit = 1",
            "  error_limit = 0",
            "lb.toml:26:3: error_limit must be at least 1",
        ),
        (
            "\"max-age=2\"",
            "\"max-age=2\\n\"",
            "lb.toml:11:1: hsts is not a valid header value",
        ),
    ];
    for (from, to, expected) in cases {
        let text = TWO_OF_EACH.replace(from, to);
        assert_ne!(text, TWO_OF_EACH, "{from:?}");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.to_string(), format!("/etc/lb/{expected}"));
    }
    let text = format!(
        "{}[global]\nmaxconn = 0\n",
        TWO_OF_EACH.replace("hsts", "maxconn = 1\nhsts")
    );
    assert_eq!(
        parse(&text).unwrap_err().to_string(),
        "/etc/lb/lb.toml:38:1: global maxconn must be at least 1"
    );
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let source = Source {
        file: PathBuf::from("/etc/lb/lb.toml"),
        text: String::new(),
    };
    assert_eq!(
        resolve_path(&source, "certs/a.pem"),
        PathBuf::from("/etc/lb/certs/a.pem")
    );
    assert_eq!(resolve_path(&source, "/x.pem"), PathBuf::from("/x.pem"));
}

#[test]
fn limits_default_to_16_kib_and_100_fields_and_are_range_checked() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(
        (c.limits.max_header_bytes, c.limits.max_headers),
        (16 * 1024, 100)
    );
    let c = parse(&format!(
        "{MINIMAL}[limits]\nmax_header_bytes = 65536\nmax_headers = 200\n"
    ))
    .unwrap();
    assert_eq!((c.limits.max_header_bytes, c.limits.max_headers), (65536, 200));
    let e = parse(&format!("{MINIMAL}[limits]\nmax_header_bytes = 100\n")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(13), "{e}");
    assert!(e.reason.contains("max_header_bytes must be between"), "{e}");
    let e = parse(&format!("{MINIMAL}[limits]\nmax_headers = 0\n")).unwrap_err();
    assert!(e.reason.contains("max_headers must be between"), "{e}");
}

#[test]
fn hash_balance_keys_parse_and_mistakes_name_their_line_and_column() {
    let hashed = MINIMAL.replace(
        "name = \"apps\"\n",
        "name = \"apps\"\nbalance = \"hash\"\nhash_key = \"url_param:room\"\nhash_balance_factor = 150\n",
    );
    let c = parse(&hashed).unwrap();
    let b = &c.backends[0];
    assert_eq!(b.balance, Balance::Hash);
    assert_eq!(b.hash_key, Some(HashKey::UrlParam("room".into())));
    assert_eq!(b.hash_balance_factor, 150);
    assert_eq!(parse(&round_trip(&hashed)).unwrap(), c);
    assert_eq!(parse(MINIMAL).unwrap().backends[0].hash_balance_factor, 125);
    let cases = [
        (
            "\"url_param:room\"",
            "\"room\"",
            "lb.toml:10:12: hash_key \"room\": expected \"url_param:NAME\", \"header:NAME\", \"cookie:NAME\" or \"source\"",
        ),
        (
            "\"url_param:room\"",
            "\"header:x room\"",
            "lb.toml:10:12: hash_key \"header:x room\": not a valid header name",
        ),
        (
            "hash_balance_factor = 150",
            "hash_balance_factor = 50",
            "lb.toml:11:1: hash_balance_factor must be 0 (no bound) or between 100 and 65535",
        ),
        (
            "hash_key = \"url_param:room\"\n",
            "",
            "lb.toml:9:1: balance = \"hash\" needs a hash_key",
        ),
        (
            "balance = \"hash\"",
            "balance = \"leastconn\"",
            "lb.toml:10:1: hash_key is only used with balance = \"hash\"",
        ),
    ];
    for (from, to, expected) in cases {
        let e = parse(&hashed.replace(from, to)).unwrap_err();
        assert_eq!(e.to_string(), format!("/etc/lb/{expected}"), "{from:?} -> {to:?}");
    }
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let text = format!("[admin]\nlisten = \"0.0.0.0:8404\"\n{MINIMAL}");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
    assert!(e.reason.contains("not a loopback address"), "{e}");
    let with_token = text.replace("[admin]\n", "[admin]\ntoken = \"t\"\n");
    assert_eq!(parse(&with_token).unwrap().admin.token, "t");
    let with_file = text.replace("[admin]\n", "[admin]\ntoken_file = \"admin.token\"\n");
    parse(&with_file).unwrap();
    let both = with_token.replace("[admin]\n", "[admin]\ntoken_file = \"admin.token\"\n");
    let e = parse(&both).unwrap_err();
    assert!(e.reason.contains("not both"), "{e}");
    assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
    let e = parse(&format!("[admin]\nhosts = [\"a b\"]\n{MINIMAL}")).unwrap_err();
    assert!(e.reason.contains("admin.hosts[0]"), "{e}");
}

#[test]
fn a_token_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), "s3cret\n").unwrap();
    let source = Source {
        file: dir.path().join("lb.toml"),
        text: String::new(),
    };
    let mut admin = Admin {
        token_file: Some(Spanned::new(0..0, "admin.token".into())),
        ..Admin::default()
    };
    if std::env::var_os(ADMIN_TOKEN_ENV).is_none() {
        assert_eq!(admin.effective_token(&source).unwrap().as_deref(), Some("s3cret"));
        admin.token_file = Some(Spanned::new(0..0, "missing.token".into()));
        assert!(admin.effective_token(&source).is_err());
    }
}

const LIMITED: &str = r#"
[[frontend]]
name = "web"
listen = "127.0.0.1:8080"
backend = "apps"
trusted_proxies = ["10.0.0.0/8", "192.0.2.1"]
proxy_protocol = "v2"
[frontend.per_source]
max_conns = 20
conn_rate = "50/10s"
request_rate = "300/10s"
upgrade_rate = "20/1m"

[[backend]]
name = "apps"
[[backend.server]]
name = "app1"
addr = "127.0.0.1:9001"
"#;

#[test]
fn per_source_limits_parse_and_write_back() {
    let c = parse(LIMITED).unwrap();
    let f = &c.frontends[0];
    assert_eq!(f.proxy_protocol, ProxyProtocol::V2);
    assert_eq!(f.trusted_proxies.len(), 2);
    assert!(f.trusted_proxies[1].contains("192.0.2.1".parse().unwrap()));
    let p = f.per_source.as_ref().unwrap();
    assert_eq!(p.max_conns, 20);
    assert_eq!(p.conn_rate.unwrap().count, 50);
    assert_eq!(p.upgrade_rate.unwrap().period, Duration::from_secs(60));
    assert_eq!(
        (p.max_sources, p.expire, p.ipv6_prefix),
        (100_000, Duration::from_secs(60), 64)
    );
    assert_eq!(parse(&round_trip(LIMITED)).unwrap(), c);
}

#[test]
fn per_source_mistakes_name_their_line() {
    let cases = [
        (
            "proxy_protocol = \"v2\"",
            "proxy_protocol = \"v1\"",
            7,
            "unknown variant",
        ),
        (
            "trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\"]\n",
            "",
            6,
            "needs trusted_proxies",
        ),
        ("\"10.0.0.0/8\"", "\"10.0.0.0/40\"", 6, "prefix length"),
        ("\"50/10s\"", "\"50\"", 10, "expected COUNT/PERIOD"),
        (
            "upgrade_rate = \"20/1m\"",
            "upgrade_rate = \"20/1m\"\nexpire = \"30s\"",
            13,
            "expire must be at least",
        ),
        (
            "max_conns = 20",
            "max_conns = 20\nmax_sources = 2",
            10,
            "max_sources must be between",
        ),
    ];
    for (from, to, line, reason) in cases {
        let text = LIMITED.replace(from, to);
        assert_ne!(text, LIMITED, "{from:?}");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(line), "{from:?}: {e}");
        assert!(e.reason.contains(reason), "{from:?}: {e}");
    }
}
