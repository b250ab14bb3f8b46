//! Which browser pages may open a WebSocket here (cross-site WebSocket
//! hijacking protection). Browsers always send `Origin`; non-browser clients
//! usually don't, and are accepted. With no configured list, only a page
//! served by this same host (as the `Host` header names it; the lb keeps
//! `Host`) may connect.

/// An origin reduced to what is compared: scheme and authority without the
/// scheme's default port, lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    scheme: String,
    /// `host` or `host:port` (port omitted when it is the scheme's default).
    authority: String,
}

/// The verdict on a request's `Origin` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No `Origin`, or an allowed one.
    Allowed,
    /// A browser page from elsewhere.
    Refused,
}

fn default_port(scheme: &str) -> Option<&'static str> {
    match scheme {
        "http" | "ws" => Some("80"),
        "https" | "wss" => Some("443"),
        _ => None,
    }
}

/// Splits `host[:port]` (IPv6 hosts in brackets) into host and port.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let port_at = if authority.starts_with('[') {
        authority.find("]:").map(|i| i + 1)
    } else {
        authority.rfind(':')
    };
    match port_at {
        Some(i) => (&authority[..i], Some(&authority[i + 1..])),
        None => (authority, None),
    }
}

/// Lowercases and drops `:port` when it is the scheme's default.
fn normalize_authority(scheme: &str, authority: &str) -> String {
    let authority = authority.to_ascii_lowercase();
    match split_port(&authority) {
        (host, Some(port)) if Some(port) == default_port(scheme) => host.to_string(),
        _ => authority,
    }
}

/// Parses `scheme://authority` (an `Origin` value or a configured entry).
pub fn parse(value: &str) -> Option<Origin> {
    let (scheme, rest) = value.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let valid = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b));
    if default_port(&scheme).is_none() || !valid {
        return None;
    }
    Some(Origin {
        authority: normalize_authority(&scheme, authority),
        scheme,
    })
}

/// Decides on a request given its `Origin` and `Host` headers.
pub fn check(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> Verdict {
    let Some(origin) = origin else {
        return Verdict::Allowed;
    };
    let Some(origin) = parse(origin) else {
        return Verdict::Refused;
    };
    let ok = if allowed.is_empty() {
        host.is_some_and(|h| normalize_authority(&origin.scheme, h.trim()) == origin.authority)
    } else {
        allowed.iter().filter_map(|a| parse(a)).any(|a| a == origin)
    };
    if ok {
        Verdict::Allowed
    } else {
        Verdict::Refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_origin_is_accepted() {
        assert_eq!(check(None, Some("x:1"), &[]), Verdict::Allowed);
    }

    #[test]
    fn same_host_is_accepted_by_default() {
        assert_eq!(
            check(Some("https://127.0.0.1:8443"), Some("127.0.0.1:8443"), &[]),
            Verdict::Allowed
        );
        assert_eq!(
            check(
                Some("https://Chat.Example.org"),
                Some("chat.example.org:443"),
                &[]
            ),
            Verdict::Allowed
        );
        assert_eq!(
            check(Some("http://[::1]:80"), Some("[::1]"), &[]),
            Verdict::Allowed
        );
    }

    #[test]
    fn other_host_or_port_is_refused_by_default() {
        assert_eq!(
            check(Some("https://evil.example"), Some("127.0.0.1:8443"), &[]),
            Verdict::Refused
        );
        assert_eq!(
            check(Some("https://127.0.0.1:9999"), Some("127.0.0.1:8443"), &[]),
            Verdict::Refused
        );
        assert_eq!(check(Some("null"), Some("127.0.0.1:8443"), &[]), Verdict::Refused);
        assert_eq!(check(Some("https://a"), None, &[]), Verdict::Refused);
    }

    #[test]
    fn configured_list_replaces_the_host_rule() {
        let allowed = vec!["https://chat.example.org".to_string()];
        assert_eq!(
            check(
                Some("https://chat.example.org:443"),
                Some("10.0.0.1:9001"),
                &allowed
            ),
            Verdict::Allowed
        );
        assert_eq!(
            check(
                Some("http://chat.example.org"),
                Some("chat.example.org"),
                &allowed
            ),
            Verdict::Refused
        );
        assert_eq!(
            check(Some("https://10.0.0.1:9001"), Some("10.0.0.1:9001"), &allowed),
            Verdict::Refused
        );
    }

    #[test]
    fn parse_rejects_non_origins() {
        assert!(parse("nope").is_none());
        assert!(parse("ftp://x").is_none());
        assert!(parse("https://").is_none());
        assert!(parse("https://a b").is_none());
        assert!(parse("https://a/").is_some());
    }
}
