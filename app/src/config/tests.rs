use super::*;
use std::io::Write;
use wsmesh_redis_wire::target::Target;

const MINIMAL: &str = "instance = \"app9\"\n[listen]\npublic = \"127.0.0.1:1\"\n\
                       internal = \"127.0.0.1:2\"\n[internal]\ntoken = \"t\"\n";

fn load_text(text: &str) -> Result<(Config, InternalToken), ConfigError> {
    let mut f = tempfile::NamedTempFile::new().expect("tempfile");
    f.write_all(text.as_bytes()).expect("write");
    load(f.path()).map(|l| (l.config, l.token))
}

#[test]
fn minimal_file_gets_every_default() {
    let (c, token) = load_text(MINIMAL).expect("minimal config loads");
    assert_eq!(token, InternalToken("t".into()));
    assert_eq!(c.limits.history_limit, 50);
    assert_eq!(c.limits.threshold(), 8000);
    assert_eq!(c.redis.cid_ttl, Duration::from_secs(600));
    assert_eq!(c.drain.window, Duration::from_secs(3));
    assert_eq!(c.redis.prefix, "wsmesh:");
}

#[test]
fn shipped_local_configs_are_valid() {
    for f in ["app1.toml", "app2.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs/local")
            .join(f);
        let c = load(&path).unwrap_or_else(|e| panic!("{e}")).config;
        assert!(c.instance.starts_with("app"));
    }
}

#[test]
fn unknown_key_is_an_error_with_its_line() {
    let e = load_text(&format!("{MINIMAL}[limits]\nbogus = 1\n")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(8), "{e}");
}

#[test]
fn capacity_threshold_out_of_range_names_the_line() {
    let e = load_text(&format!("{MINIMAL}[limits]\ncapacity_threshold = 1.5\n")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(8), "{e}");
    assert!(e.reason.contains("(0, 1]"), "{e}");
}

#[test]
fn missing_token_source_is_an_error() {
    let text = MINIMAL.replace("[internal]\ntoken = \"t\"\n", "");
    let e = load_text(&text).unwrap_err();
    assert!(e.reason.contains("no internal token"), "{e}");
}

#[test]
fn token_file_is_read_and_trimmed() {
    let mut tf = tempfile::NamedTempFile::new().expect("tempfile");
    tf.write_all(b"secret\n").expect("write");
    let text = MINIMAL.replace(
        "token = \"t\"",
        &format!("token_file = {:?}", tf.path().display().to_string()),
    );
    let (_, token) = load_text(&text).expect("loads");
    assert_eq!(token, InternalToken("secret".into()));
}

#[test]
fn one_address_for_both_listeners_is_an_error() {
    let e = load_text(&MINIMAL.replace("127.0.0.1:2", "127.0.0.1:1")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(4), "{e}");
}

#[test]
fn bad_duration_is_an_error() {
    let e = load_text(&format!("{MINIMAL}[drain]\ngrace = \"soon\"\n")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(8), "{e}");
}

#[test]
fn committed_configs_write_back_to_the_same_value() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    for file in [
        "local/app1.toml",
        "local/app2.toml",
        "vagrant/app1.toml",
        "vagrant/app2.toml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect("committed config");
        let config: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let written = toml::to_string(&config).expect("serializes");
        let again: Config = toml::from_str(&written).unwrap_or_else(|e| panic!("{file}: {e}\n{written}"));
        assert_eq!(again, config, "{file}: {written}");
        assert!(written.contains("session_ttl = \"1day\""), "{file}: {written}");
    }
}

#[test]
fn a_config_built_as_values_loads_once_written() {
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let mut config = Config::new("app7", addr(1), addr(2));
    config.internal.token = Some("t".into());
    config.drain.grace = Duration::from_millis(500);
    let written = toml::to_string(&config).expect("serializes");
    assert!(written.contains("grace = \"500ms\""), "{written}");
    let (loaded, token) = load_text(&written).expect("loads");
    assert_eq!(loaded, config);
    assert_eq!(token, InternalToken("t".into()));
}

#[test]
fn checks_name_the_key_in_its_own_table() {
    // `[internal] token` and `[listen] internal` share names with other
    // keys and tables; every check points at the key it is about.
    let text = format!("{MINIMAL}[limits]\nmax_frame_bytes = 256\n  max_body_bytes = 256\n");
    let e = load_text(&text).unwrap_err();
    assert_eq!(e.position, Some((9, 3)), "{e}");
    assert!(e.reason.starts_with("max_body_bytes must be smaller"), "{e}");
    let text = format!(
        "{MINIMAL}[health]\nsubscriber_max_age = \"2s\"\n[drain]\ngrace = \"1s\"\n\
                        [redis]\ncommand_timeout = \"0s\"\n"
    );
    let e = load_text(&text).unwrap_err();
    assert_eq!(e.position, Some((12, 1)), "{e}");
    assert_eq!(e.reason, "command_timeout must be more than 0");
    let text = MINIMAL.replace("token = \"t\"", "token = \"t\"\ntoken_file = \"/x\"");
    assert_eq!(load_text(&text).unwrap_err().position, Some((7, 1)));
    let text = MINIMAL.replace("token = \"t\"", "token = \" \"");
    assert_eq!(load_text(&text).unwrap_err().position, Some((6, 1)));
    let text = format!("{MINIMAL}[redis]\nurl = \"nope://\"\n");
    let e = load_text(&text).unwrap_err();
    assert_eq!(e.position, Some((8, 1)), "{e}");
    assert!(e.reason.starts_with("redis url is not usable"), "{e}");
}

#[test]
fn sentinels_replace_the_url_and_are_checked_at_their_key() {
    let text = format!(
        "{MINIMAL}[redis]\nsentinels = [\"127.0.0.1:26379\", \"127.0.0.1:26380\"]\n\
         master_name = \"wsmesh\"\nsentinel_password = \"sp\"\n"
    );
    let (c, _) = load_text(&text).expect("loads");
    assert_eq!(c.redis.sentinels.len(), 2);
    assert!(matches!(c.redis.target(false), Ok(Target::Sentinel(_))));
    let written = toml::to_string(&c).expect("serializes");
    assert_eq!(toml::from_str::<Config>(&written).expect("parses"), c);
    let both = format!("{text}url = \"redis://127.0.0.1:1/\"\n");
    let e = load_text(&both).unwrap_err();
    assert_eq!(e.position, Some((8, 1)), "{e}");
    assert!(e.reason.contains("set one or the other"), "{e}");
    let e = load_text(&text.replace("master_name = \"wsmesh\"\n", "")).unwrap_err();
    assert!(e.reason.starts_with("master_name is required"), "{e}");
    let e = load_text(&format!("{MINIMAL}[redis]\nmaster_name = \"wsmesh\"\n")).unwrap_err();
    assert_eq!(e.position, Some((8, 1)), "{e}");
    let e = load_text(&format!(
        "{MINIMAL}[redis]\nsentinels = [\"x\"]\nmaster_name = \"m\"\n"
    ))
    .unwrap_err();
    assert_eq!(
        (e.position, e.reason.as_str()),
        (Some((8, 1)), "sentinels \"x\" is not host:port")
    );
}

#[test]
fn durability_defaults_to_replicated_only_with_sentinels() {
    let (c, _) = load_text(MINIMAL).expect("loads");
    assert_eq!(c.redis.durability(), Durability::Local);
    assert_eq!(c.redis.replica_ack_timeout, Duration::from_secs(2));
    let sentinels =
        format!("{MINIMAL}[redis]\nsentinels = [\"127.0.0.1:26379\"]\nmaster_name = \"wsmesh\"\n");
    let (c, _) = load_text(&sentinels).expect("loads");
    assert_eq!(c.redis.durability(), Durability::Replicated);
    let (c, _) = load_text(&format!("{sentinels}durability = \"local\"\n")).expect("loads");
    assert_eq!(c.redis.durability(), Durability::Local);
    let text = format!("{MINIMAL}[redis]\ndurability = \"replicated\"\nreplica_ack_timeout = \"500ms\"\n");
    let (c, _) = load_text(&text).expect("loads");
    assert_eq!(c.redis.durability(), Durability::Replicated);
    assert_eq!(c.redis.replica_ack_timeout, Duration::from_millis(500));
    assert!(load_text(&format!("{MINIMAL}[redis]\ndurability = \"maybe\"\n")).is_err());
    let e = load_text(&format!("{MINIMAL}[redis]\nreplica_ack_timeout = \"0s\"\n")).unwrap_err();
    assert_eq!(e.reason, "replica_ack_timeout must be more than 0");
}

#[test]
fn bad_origin_is_an_error() {
    let e = load_text(&format!("{MINIMAL}[limits]\nallowed_origins = [\"nope\"]\n")).unwrap_err();
    assert!(e.reason.contains("nope"), "{e}");
}

#[test]
fn a_sentinel_config_written_out_loads_again() {
    let text = format!("{MINIMAL}[redis]\nsentinels = [\"127.0.0.1:26379\"]\nmaster_name = \"wsmesh\"\n");
    let (c, _) = load_text(&text).expect("loads");
    let written = toml::to_string(&c).expect("serializes");
    assert!(
        !written.contains("url ="),
        "the unused default url is left out:\n{written}"
    );
    let (again, _) = load_text(&written).expect("the written file is valid");
    assert_eq!(again, c);
}

#[test]
fn auth_defaults_to_none_and_jwt_loads_its_keys() {
    let (c, _) = load_text(MINIMAL).expect("loads");
    assert_eq!(c.auth.mode, AuthMode::None);
    assert!(!c.listen.public_metrics);
    assert_eq!(
        (c.limits.max_errors, c.limits.error_window),
        (20, Duration::from_secs(10))
    );
    let text = format!(
        "{MINIMAL}[auth]\nmode = \"jwt\"\njwt_hs256_secret = \"{}\"\nissuer = \"sso\"\n",
        "s".repeat(32)
    );
    let mut f = tempfile::NamedTempFile::new().expect("tempfile");
    f.write_all(text.as_bytes()).expect("write");
    let loaded = load(f.path()).expect("loads");
    assert!(matches!(loaded.auth, Auth::Jwt(_)));
    assert_eq!(loaded.config.auth.issuer.as_deref(), Some("sso"));
}

#[test]
fn auth_errors_name_their_key_and_line() {
    let e = load_text(&format!(
        "{MINIMAL}[auth]\nmode = \"jwt\"\njwt_hs256_secret = \"short\"\n"
    ))
    .unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(9), "{e}");
    assert!(e.reason.contains("32 characters"), "{e}");
    let e = load_text(&format!("{MINIMAL}[auth]\nmode = \"jwt\"\n")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(8), "{e}");
    let e = load_text(&format!(
        "{MINIMAL}[auth]\nmode = \"jwt\"\njwt_public_keys = \"/nonexistent.pem\"\n"
    ))
    .unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(9), "{e}");
    assert!(e.reason.contains("/nonexistent.pem"), "{e}");
    let e = load_text(&format!("{MINIMAL}[auth]\nmode = \"oauth\"\n")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(8), "{e}");
    let e = load_text(&format!(
        "{MINIMAL}[auth]\njwt_hs256_secret = \"{}\"\n",
        "s".repeat(32)
    ))
    .unwrap_err();
    assert!(e.reason.contains("unused"), "{e}");
    let e = load_text(&format!(
        "{MINIMAL}[auth]\nrefresh_url = \"javascript:alert(1)\"\n"
    ))
    .unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(8), "{e}");
    let e = load_text(&format!("{MINIMAL}[limits]\nmax_errors = 0\n")).unwrap_err();
    assert_eq!(e.position.map(|p| p.0), Some(8), "{e}");
}
