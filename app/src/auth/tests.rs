use super::*;
use std::io::Write;

use http::HeaderValue;
use jsonwebtoken::jwk::Jwk;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn claims(ttl: i64) -> Claims {
    Claims {
        sub: "ana".into(),
        exp: now().saturating_add_signed(ttl),
        nbf: None,
        name: Some("Ana".into()),
        rooms: Some(vec!["lobby".into(), "team-*".into()]),
    }
}

fn jwt(config: AuthConfig) -> Auth {
    Auth::load(&AuthConfig {
        mode: AuthMode::Jwt,
        leeway: Duration::ZERO,
        ..config
    })
    .expect("keys load")
}

fn hs256() -> Auth {
    jwt(AuthConfig {
        jwt_hs256_secret: Some(SECRET.into()),
        ..AuthConfig::default()
    })
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("ascii"),
    );
    h
}

fn check(auth: &Auth, token: &str, room: &str) -> Result<Option<Grant>, Denied> {
    auth.check(&bearer(token), None, Some(room), &Limits::default())
}

fn unauthenticated(r: Result<Option<Grant>, Denied>) -> String {
    match r {
        Err(Denied::Unauthenticated(why)) => why,
        other => panic!("expected 401, got {other:?}"),
    }
}

#[test]
fn patterns_match_names_with_star_for_any_run() {
    for (p, n) in [
        ("lobby", "lobby"),
        ("team-*", "team-a"),
        ("team-*", "team-"),
        ("*", "x"),
        ("a*b*c", "axxbyyc"),
        ("*-ops", "db-ops"),
    ] {
        assert!(glob_match(p, n), "{p} {n}");
    }
    for (p, n) in [
        ("lobby", "lobby2"),
        ("team-*", "team"),
        ("a*b", "ab-c"),
        ("*-ops", "ops"),
        ("a*a", "a"),
    ] {
        assert!(!glob_match(p, n), "{p} {n}");
    }
}

#[test]
fn open_mode_grants_nothing_and_refuses_nothing() {
    let open = Auth::load(&AuthConfig::default()).expect("none");
    assert_eq!(
        open.check(&HeaderMap::new(), None, Some("x"), &Limits::default()),
        Ok(None)
    );
}

#[test]
fn a_valid_token_grants_its_name_and_rooms() {
    let auth = hs256();
    let token = claims(60)
        .mint_hs256(SECRET.as_bytes(), None, None)
        .expect("mint");
    let grant = check(&auth, &token, "team-blue")
        .expect("allowed")
        .expect("a grant");
    assert_eq!((grant.sub.as_str(), grant.nick.as_str()), ("ana", "Ana"));
    assert!(grant.remaining() > Duration::from_secs(50));
    assert_eq!(
        check(&auth, &token, "ops"),
        Err(Denied::RoomNotAllowed("ops".into()))
    );
}

#[test]
fn the_token_comes_from_query_header_or_cookie() {
    let auth = hs256();
    let token = claims(60)
        .mint_hs256(SECRET.as_bytes(), None, None)
        .expect("mint");
    let limits = Limits::default();
    let query = format!("room=lobby&token={token}");
    assert!(auth
        .check(&HeaderMap::new(), Some(&query), Some("lobby"), &limits)
        .is_ok());
    let mut cookie = HeaderMap::new();
    cookie.insert(
        COOKIE,
        HeaderValue::from_str(&format!("a=b; {COOKIE_NAME}={token}; c=d")).expect("ascii"),
    );
    assert!(auth.check(&cookie, None, Some("lobby"), &limits).is_ok());
    let why = unauthenticated(auth.check(&HeaderMap::new(), Some("room=lobby"), Some("lobby"), &limits));
    assert!(why.contains("required"), "{why}");
}

#[test]
fn bad_signature_expiry_nbf_and_missing_claims_are_refused() {
    let auth = hs256();
    let other = claims(60)
        .mint_hs256(b"another-secret-another-secret-xx", None, None)
        .expect("mint");
    assert!(unauthenticated(check(&auth, &other, "lobby")).contains("signature"));
    let expired = claims(-5)
        .mint_hs256(SECRET.as_bytes(), None, None)
        .expect("mint");
    assert!(unauthenticated(check(&auth, &expired, "lobby")).contains("Expired"));
    let early = Claims {
        nbf: Some(now() + 600),
        ..claims(900)
    };
    let early = early.mint_hs256(SECRET.as_bytes(), None, None).expect("mint");
    assert!(unauthenticated(check(&auth, &early, "lobby")).contains("Immature"));
    let no_sub = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"exp": now() + 60}),
        &EncodingKey::from_secret(SECRET.as_bytes()).expect("key"),
    )
    .expect("mint");
    assert!(unauthenticated(check(&auth, &no_sub, "lobby")).contains("sub"));
    unauthenticated(check(&auth, "not.a.token", "lobby"));
    let bad_nick = Claims {
        name: Some("x".repeat(100)),
        ..claims(60)
    };
    let bad_nick = bad_nick.mint_hs256(SECRET.as_bytes(), None, None).expect("mint");
    assert!(unauthenticated(check(&auth, &bad_nick, "lobby")).contains("name"));
}

#[test]
fn issuer_and_audience_are_required_when_configured() {
    let auth = jwt(AuthConfig {
        jwt_hs256_secret: Some(SECRET.into()),
        issuer: Some("sso".into()),
        audience: Some("wsmesh".into()),
        ..AuthConfig::default()
    });
    let mint = |iss, aud| claims(60).mint_hs256(SECRET.as_bytes(), iss, aud).expect("mint");
    assert!(check(&auth, &mint(Some("sso"), Some("wsmesh")), "lobby").is_ok());
    unauthenticated(check(&auth, &mint(Some("evil"), Some("wsmesh")), "lobby"));
    unauthenticated(check(&auth, &mint(None, Some("wsmesh")), "lobby"));
    unauthenticated(check(&auth, &mint(Some("sso"), Some("other")), "lobby"));
    unauthenticated(check(&auth, &mint(Some("sso"), None), "lobby"));
}

#[test]
fn every_secret_of_the_file_is_accepted_for_a_rotation() {
    let mut f = tempfile::NamedTempFile::new().expect("tempfile");
    let next = "fedcba9876543210fedcba9876543210";
    write!(f, "{next}\n\n{SECRET}\n").expect("write");
    let config = AuthConfig {
        jwt_hs256_secret_file: Some(f.path().to_path_buf()),
        ..AuthConfig::default()
    };
    assert_eq!(
        hs256_secrets(&config).expect("read"),
        vec![next.to_string(), SECRET.to_string()]
    );
    let auth = jwt(config);
    for secret in [next, SECRET] {
        let token = claims(60)
            .mint_hs256(secret.as_bytes(), None, None)
            .expect("mint");
        assert!(check(&auth, &token, "lobby").is_ok());
    }
}

#[test]
fn short_or_missing_secrets_are_config_errors() {
    let load = |c: AuthConfig| {
        Auth::load(&AuthConfig {
            mode: AuthMode::Jwt,
            ..c
        })
    };
    let e = load(AuthConfig::default()).unwrap_err();
    assert_eq!(e.key, "auth.mode");
    let e = load(AuthConfig {
        jwt_hs256_secret: Some("short".into()),
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert!(e.reason.contains("32"), "{}", e.reason);
}

/// An ES256 key pair: the private key PEM (to sign) and the public one.
fn es256_pair() -> (EncodingKey, String) {
    let pair = rcgen::KeyPair::generate().expect("P-256 key");
    let private = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("private key");
    (private, pair.public_key_pem())
}

fn mint_es256(key: &EncodingKey, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims(60), key).expect("mint")
}

#[test]
fn es256_tokens_verify_against_every_key_of_a_pem_file() {
    let (old, old_pub) = es256_pair();
    let (new, new_pub) = es256_pair();
    let (stranger, _) = es256_pair();
    let mut f = tempfile::NamedTempFile::new().expect("tempfile");
    write!(f, "{old_pub}{new_pub}").expect("write");
    let auth = jwt(AuthConfig {
        jwt_public_keys: Some(f.path().to_path_buf()),
        ..AuthConfig::default()
    });
    assert!(check(&auth, &mint_es256(&old, None), "lobby").is_ok());
    assert!(check(&auth, &mint_es256(&new, None), "lobby").is_ok());
    assert!(unauthenticated(check(&auth, &mint_es256(&stranger, None), "lobby")).contains("signature"));
    // An HS256 token signed with the public key as its secret is refused.
    let confused = claims(60)
        .mint_hs256(new_pub.as_bytes(), None, None)
        .expect("mint");
    unauthenticated(check(&auth, &confused, "lobby"));
}

#[test]
fn jwks_keys_are_matched_by_kid() {
    let (key, _) = es256_pair();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("jwk");
    jwk.common.key_id = Some("k1".into());
    let set = serde_json::json!({ "keys": [jwk] });
    let mut f = tempfile::NamedTempFile::new().expect("tempfile");
    write!(f, "{set}").expect("write");
    let auth = jwt(AuthConfig {
        jwt_public_keys: Some(f.path().to_path_buf()),
        ..AuthConfig::default()
    });
    assert!(check(&auth, &mint_es256(&key, Some("k1")), "lobby").is_ok());
    assert!(check(&auth, &mint_es256(&key, None), "lobby").is_ok());
    unauthenticated(check(&auth, &mint_es256(&key, Some("k2")), "lobby"));
}

#[test]
fn a_file_without_keys_is_a_config_error() {
    let mut f = tempfile::NamedTempFile::new().expect("tempfile");
    write!(f, "hello").expect("write");
    let e = Auth::load(&AuthConfig {
        mode: AuthMode::Jwt,
        jwt_public_keys: Some(f.path().to_path_buf()),
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert_eq!(e.key, "auth.jwt_public_keys");
}
