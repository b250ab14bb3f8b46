use super::*;

const FULL: &str = include_str!("../../../configs/local/subscriber1.toml");

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_env(text, Env::default())
}

fn parse_env(text: &str, env: Env) -> Result<Config, ConfigError> {
    let source = Source {
        file: PathBuf::from("sub.toml"),
        text: text.into(),
    };
    Config::from_source(&source, &env)
}

fn minimal(extra: &str) -> String {
    format!("[app]\ninternal_url = \"http://127.0.0.1:9101\"\ntoken = \"t\"\n{extra}")
}

#[test]
fn sentinels_replace_the_url_and_are_checked_at_their_key() {
    let redis = "[redis]\nsentinels = [\"127.0.0.1:26379\"]\nmaster_name = \"wsmesh\"\n";
    let c = parse(&minimal(redis)).unwrap();
    assert!(matches!(c.target, Target::Sentinel(_)));
    assert_eq!(c.redis.pubsub_stall, Duration::from_secs(15));
    let e = parse(&minimal(&format!("{redis}url = \"redis://127.0.0.1:1/\"\n"))).unwrap_err();
    assert_eq!(e.position, Some((5, 1)), "{e}");
    let env = Env {
        redis_url: Some("redis://127.0.0.1:2/".into()),
        token: None,
    };
    assert!(parse_env(&minimal(redis), env)
        .unwrap_err()
        .reason
        .contains("set one or the other"));
    let e = parse(&minimal("[redis]\nsentinels = [\"127.0.0.1:26379\"]\n")).unwrap_err();
    assert!(e.reason.starts_with("master_name is required"), "{e}");
    let e = parse(&minimal("[redis]\npubsub_stall = \"0s\"\n")).unwrap_err();
    assert_eq!(e.position, Some((5, 1)), "{e}");
    let file: FileConfig = toml::from_str(&minimal(redis)).unwrap();
    let again: FileConfig = toml::from_str(&toml::to_string(&file).unwrap()).unwrap();
    assert_eq!(again, file);
}

#[test]
fn the_shipped_local_config_is_valid_and_matches_the_defaults() {
    let c = parse(FULL).unwrap();
    let d = parse(&minimal("")).unwrap();
    assert_eq!(c.redis.url, d.redis.url);
    assert_eq!(c.redis.prefix, d.redis.prefix);
    assert_eq!(c.redis.reconnect_base, d.redis.reconnect_base);
    assert_eq!(c.redis.reconnect_cap, d.redis.reconnect_cap);
    assert_eq!(c.redis.unsubscribe_grace, d.redis.unsubscribe_grace);
    assert_eq!(c.app.request_timeout, d.app.request_timeout);
    assert_eq!(c.app.retry_base, d.app.retry_base);
    assert_eq!(c.app.retry_cap, d.app.retry_cap);
    assert_eq!(c.app.heartbeat, d.app.heartbeat);
    assert_eq!(c.queue.capacity, d.queue.capacity);
    assert_eq!(c.queue.batch_max, d.queue.batch_max);
    assert_eq!(c.listen.health, d.listen.health);
    assert_eq!(c.app.endpoint.authority, "127.0.0.1:9101");
    assert_eq!(c.app.token.bearer(), "Bearer local-dev-internal-token");
}

#[test]
fn unknown_key_is_an_error_with_its_line() {
    let e = parse(&minimal("[queue]\ncapacity = 5\nbogus = 1\n")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(6), "{e}");
    assert!(e.to_string().starts_with("sub.toml:6:"), "{e}");
}

#[test]
fn internal_url_must_be_plain_http() {
    let e = parse("[app]\ntoken = \"t\"\ninternal_url = \"https://127.0.0.1:9101\"\n").unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
    assert!(e.reason.contains("http://"), "{e}");
}

#[test]
fn internal_url_is_required() {
    let e = parse("[app]\ntoken = \"t\"\n").unwrap_err();
    assert!(e.reason.contains("internal_url is required"), "{e}");
}

#[test]
fn a_token_is_required_from_somewhere() {
    let e = parse("[app]\ninternal_url = \"http://127.0.0.1:1\"\n").unwrap_err();
    assert!(e.reason.contains("WSMESH_INTERNAL_TOKEN"), "{e}");
    let env = Env {
        token: Some("from-env".into()),
        ..Env::default()
    };
    let c = parse_env("[app]\ninternal_url = \"http://127.0.0.1:1\"\n", env).unwrap();
    assert_eq!(c.app.token.bearer(), "Bearer from-env");
}

#[test]
fn token_and_token_file_together_are_an_error() {
    let e = parse(&minimal("token_file = \"/x\"\n")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(4), "{e}");
}

#[test]
fn token_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tok");
    std::fs::write(&path, "s3cret\n").unwrap();
    let text = format!(
        "[app]\ninternal_url = \"http://localhost:9101/\"\ntoken_file = \"{}\"\n",
        path.display()
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.app.token.bearer(), "Bearer s3cret");
    assert_eq!(c.app.endpoint.host, "localhost");
    assert_eq!(c.app.endpoint.path("/internal/events"), "/internal/events");
    let e = parse("[app]\ninternal_url = \"http://a:1\"\ntoken_file = \"/nonexistent/tok\"\n").unwrap_err();
    assert!(e.reason.contains("cannot read"), "{e}");
}

#[test]
fn env_redis_url_overrides_and_is_checked() {
    let env = Env {
        redis_url: Some("redis://127.0.0.1:6402/".into()),
        ..Env::default()
    };
    assert_eq!(
        parse_env(&minimal(""), env).unwrap().redis.url,
        "redis://127.0.0.1:6402/"
    );
    let env = Env {
        redis_url: Some("http://nope".into()),
        ..Env::default()
    };
    let e = parse_env(&minimal(""), env).unwrap_err();
    assert!(e.reason.contains(ENV_REDIS_URL), "{e}");
}

#[test]
fn durations_are_humantime_and_checked() {
    let c = parse(&minimal("heartbeat = \"250ms\"\n")).unwrap();
    assert_eq!(c.app.heartbeat, Duration::from_millis(250));
    let e = parse(&minimal("heartbeat = \"soon\"\n")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(4), "{e}");
    let e = parse(&minimal("retry_base = \"5s\"\nretry_cap = \"1s\"\n")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(4), "{e}");
}

#[test]
fn queue_bounds_are_checked() {
    let e = parse(&minimal("[queue]\ncapacity = 10\nbatch_max = 11\n")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(6), "{e}");
    let e = parse(&minimal("[queue]\ncapacity = 0\n")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(5), "{e}");
}

#[test]
fn committed_configs_write_back_to_the_same_value() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    for file in [
        "local/subscriber1.toml",
        "local/subscriber2.toml",
        "vagrant/subscriber1.toml",
        "vagrant/subscriber2.toml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let config: FileConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let written = toml::to_string(&config).unwrap();
        let again: FileConfig = toml::from_str(&written).unwrap_or_else(|e| panic!("{file}: {e}\n{written}"));
        assert_eq!(again, config, "{file}: {written}");
        assert!(
            written.contains("reconnect_base = \"250ms\""),
            "{file}: {written}"
        );
    }
}

#[test]
fn a_config_built_as_values_loads_once_written() {
    let mut file = FileConfig::default();
    file.app.internal_url = "http://127.0.0.1:9101".into();
    file.app.token = Some("t".into());
    file.listen.health = SocketAddr::from(([127, 0, 0, 1], 1));
    let written = toml::to_string(&file).unwrap();
    assert_eq!(toml::from_str::<FileConfig>(&written).unwrap(), file);
    let c = parse(&written).unwrap();
    assert_eq!(c.listen.health, file.listen.health);
    assert_eq!(c.app.token.bearer(), "Bearer t");
}

#[test]
fn checks_name_the_key_in_its_own_table() {
    // `url`, `token` and the backoff bases in the second table, indented.
    let cases = [
        (
            "[redis]\nprefix = \"p\"\n[app]\n  internal_url = \"ftp://x\"\n  token = \"t\"\n",
            (4, 3),
        ),
        (
            "[redis]\nprefix = \"p\"\n[app]\ninternal_url = \"http://a:1\"\n  token = \"a b\"\n",
            (5, 3),
        ),
        (
            "[redis]\nprefix = \"p\"\n[app]\ninternal_url = \"http://a:1\"\ntoken = \"t\"\n  \
             retry_base = \"3s\"\n",
            (6, 3),
        ),
        (
            "[app]\ninternal_url = \"http://a:1\"\ntoken = \"t\"\n[redis]\n  url = \"redis://h/\"\n  \
             reconnect_base = \"0s\"\n",
            (6, 3),
        ),
        (&minimal("[queue]\ncapacity = 10\n  batch_max = 0\n"), (6, 3)),
    ];
    for (text, position) in cases {
        let e = parse(text).unwrap_err();
        assert_eq!(e.position, Some(position), "{e}\n{text}");
    }
}

#[test]
fn the_token_is_never_printed() {
    let c = parse(&minimal("")).unwrap();
    assert!(!format!("{c:?}").contains("\"t\""));
}
