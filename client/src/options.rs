//! `ConnectOptions`: everything that shapes one connection attempt, and the
//! request URL (with its query) built from them.

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::endpoint::Endpoint;
use crate::error::ClientError;

/// Which protocol the client offers in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Offer `wsmesh.v1` (and require the server to select it).
    V1,
    /// Offer no subprotocol: the seed clients' formats.
    Seed,
}

/// Everything that shapes one connection attempt.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Server and path.
    pub endpoint: Endpoint,
    /// `room=` query parameter.
    pub room: Option<String>,
    /// `since=` query parameter (last id seen).
    pub since: Option<String>,
    /// `session=` query parameter (token from a `welcome`).
    pub session: Option<String>,
    /// Subprotocol offered.
    pub protocol: Protocol,
    /// Extra request headers, e.g. `Origin`.
    pub headers: Vec<(String, String)>,
    /// Token for a server in jwt mode, sent as `Authorization: Bearer` (not
    /// in the URL, which proxies may log).
    pub token: Option<String>,
    /// Trust for `wss://`; required there, ignored for `ws://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Limit for TCP connect plus TLS plus upgrade.
    pub connect_timeout: Duration,
}

impl ConnectOptions {
    /// Options for `url` with the v1 protocol and nothing else set.
    pub fn new(url: &str) -> Result<ConnectOptions, ClientError> {
        Ok(ConnectOptions::for_endpoint(url.parse()?))
    }

    /// Options for an already parsed endpoint.
    pub fn for_endpoint(endpoint: Endpoint) -> ConnectOptions {
        ConnectOptions {
            endpoint,
            room: None,
            since: None,
            session: None,
            protocol: Protocol::V1,
            headers: Vec::new(),
            token: None,
            tls: None,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Sets the room.
    pub fn room(mut self, room: impl Into<String>) -> Self {
        self.room = Some(room.into());
        self
    }

    /// Sets `since`.
    pub fn since(mut self, since: impl Into<String>) -> Self {
        self.since = Some(since.into());
        self
    }

    /// Sets the session token.
    pub fn session(mut self, session: impl Into<String>) -> Self {
        self.session = Some(session.into());
        self
    }

    /// Sets the offered protocol.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the token sent as `Authorization: Bearer`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the TLS trust used for `wss://`.
    pub fn tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The request URL with its query, e.g. `ws://h:1/ws?room=lobby&since=1-0`.
    pub fn url(&self) -> String {
        let params = [
            ("room", &self.room),
            ("since", &self.since),
            ("session", &self.session),
        ];
        let query: Vec<String> = params
            .iter()
            .filter_map(|(k, v)| {
                v.as_ref()
                    .map(|v| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
            })
            .collect();
        if query.is_empty() {
            self.endpoint.to_string()
        } else {
            format!("{}?{}", self.endpoint, query.join("&"))
        }
    }
}

/// Everything but the unreserved characters of RFC 3986 is escaped, so tests
/// can send hostile room names and the server sees exactly them.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_carries_the_query_encoded() {
        let o = ConnectOptions::new("ws://h:1/ws")
            .unwrap()
            .room("a b")
            .since("5-0")
            .session("t");
        assert_eq!(o.url(), "ws://h:1/ws?room=a%20b&since=5-0&session=t");
        assert_eq!(ConnectOptions::new("ws://h:1/ws").unwrap().url(), "ws://h:1/ws");
    }

    #[test]
    fn hostile_room_names_are_escaped_byte_for_byte() {
        let url = |room: &str| ConnectOptions::new("ws://h:1/ws").unwrap().room(room).url();
        assert_eq!(url("a&since=1-0"), "ws://h:1/ws?room=a%26since%3D1-0");
        assert_eq!(url("../x"), "ws://h:1/ws?room=..%2Fx");
        assert_eq!(url("100%+é"), "ws://h:1/ws?room=100%25%2B%C3%A9");
        assert_eq!(url("dev-1_a.b~"), "ws://h:1/ws?room=dev-1_a.b~");
    }
}
