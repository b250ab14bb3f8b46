//! The `[redis]` keys that say where the master is, shared by the app's and
//! the subscriber's config: [`redis_table!`](crate::redis_table) declares a
//! config table with them (so both spell and document them alike), and
//! [`TargetKeys::target`] checks them together into a [`Target`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use redis::IntoConnectionInfo;

use crate::target::{ClusterNodes, NodeAddr, Sentinels, Target};

/// The `url` a `[redis]` table means when it names none: the local
/// cluster's Redis.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6390/";

/// Whether `url` is [`DEFAULT_URL`]. A config written out leaves such a url
/// out (serde `skip_serializing_if`): it reads back the same, and a table
/// that locates the master through Sentinels stays valid (a url written
/// beside `sentinels` is refused).
pub fn is_default_url(url: &str) -> bool {
    url == DEFAULT_URL
}

/// Declares a `[redis]` config struct: the fields given, followed by the
/// keys that locate the master (`sentinels`, `master_name`, `cluster` and
/// the passwords), and a `target(url_given)` method that checks them with its
/// `url`. The struct must have a `url: String` field.
#[macro_export]
macro_rules! redis_table {
    ($(#[$meta:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($fields)*
            /// Redis Sentinels (`host:port`) that name the master; when set,
            /// `url` is not used and the master is followed through failovers.
            #[serde(skip_serializing_if = "Vec::is_empty")]
            pub sentinels: Vec<String>,
            /// Nodes of a Redis Cluster (`host:port`, a few are enough: the
            /// rest is discovered); when set, `url` and `sentinels` are not
            /// used, keys are spread over the masters by slot, and chats go
            /// out by sharded pub/sub.
            #[serde(skip_serializing_if = "Vec::is_empty")]
            pub cluster: Vec<String>,
            /// The name the Sentinels monitor the master under (required with them).
            #[serde(skip_serializing_if = "Option::is_none")]
            pub master_name: Option<String>,
            /// Password of the master and replicas.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub password: Option<String>,
            /// A file holding that password, so the config itself can be shared.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub password_file: Option<std::path::PathBuf>,
            /// Password of the Sentinels.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub sentinel_password: Option<String>,
            /// A file holding the Sentinels' password.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub sentinel_password_file: Option<std::path::PathBuf>,
        }

        impl $name {
            /// Where the master is, from `url` or the Sentinel keys.
            /// `url_given`: `url` was set (in the file or the environment),
            /// not left at its default.
            pub fn target(
                &self,
                url_given: bool,
            ) -> Result<$crate::target::Target, $crate::keys::BadKey> {
                $crate::keys::TargetKeys {
                    url: &self.url,
                    url_given,
                    sentinels: &self.sentinels,
                    cluster: &self.cluster,
                    master_name: self.master_name.as_deref(),
                    password: self.password.as_deref(),
                    password_file: self.password_file.as_deref(),
                    sentinel_password: self.sentinel_password.as_deref(),
                    sentinel_password_file: self.sentinel_password_file.as_deref(),
                }
                .target()
            }
        }
    };
}

/// The `[redis]` keys that say where the master is, as the app and the
/// subscriber both spell them (`redis.<key>`).
#[derive(Debug, Clone, Copy)]
pub struct TargetKeys<'a> {
    /// `url`, the one fixed node.
    pub url: &'a str,
    /// Whether the file (or the environment) set `url` itself rather than
    /// leaving its default in force.
    pub url_given: bool,
    /// `sentinels`, `host:port` each; empty means `url` mode.
    pub sentinels: &'a [String],
    /// `cluster`, `host:port` each; empty means `url` or Sentinel mode.
    pub cluster: &'a [String],
    /// `master_name`, the name the Sentinels monitor the master under.
    pub master_name: Option<&'a str>,
    /// `password` of the data nodes (master and replicas).
    pub password: Option<&'a str>,
    /// `password_file`: the same, read from a file.
    pub password_file: Option<&'a Path>,
    /// `sentinel_password` of the Sentinels themselves.
    pub sentinel_password: Option<&'a str>,
    /// `sentinel_password_file`: the same, read from a file.
    pub sentinel_password_file: Option<&'a Path>,
}

/// A `[redis]` key whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct BadKey {
    /// The key under `[redis]`, e.g. `sentinels`.
    pub key: &'static str,
    /// What is wrong, starting with the key's name.
    pub reason: String,
}

fn bad(key: &'static str, reason: impl fmt::Display) -> BadKey {
    BadKey {
        key,
        reason: format!("{key} {reason}"),
    }
}

impl TargetKeys<'_> {
    /// Checks the keys together and builds the `Target` (password files are
    /// read here, so an unreadable one fails at start).
    pub fn target(&self) -> Result<Target, BadKey> {
        let password = secret(("password", self.password), ("password_file", self.password_file))?;
        let sentinel_password = secret(
            ("sentinel_password", self.sentinel_password),
            ("sentinel_password_file", self.sentinel_password_file),
        )?;
        if !self.cluster.is_empty() {
            return self.cluster_target(password, sentinel_password.is_some());
        }
        if self.sentinels.is_empty() {
            if self.master_name.is_some() {
                return Err(bad("master_name", "needs sentinels"));
            }
            if sentinel_password.is_some() {
                let key = match self.sentinel_password_file {
                    Some(_) => "sentinel_password_file",
                    None => "sentinel_password",
                };
                return Err(bad(key, "needs sentinels"));
            }
            let mut info = self
                .url
                .into_connection_info()
                .map_err(|e| bad("url", format_args!("is not usable: {e}")))?;
            if let Some(password) = password {
                if info.redis_settings().password().is_some() {
                    return Err(bad("password", "is also given in the url; set it in one place"));
                }
                let settings = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(settings);
            }
            return Ok(Target::Url(Box::new(info)));
        }
        if self.url_given {
            return Err(bad("sentinels", "and url are both set; set one or the other"));
        }
        let master_name = match self.master_name.map(str::trim) {
            Some(name) if !name.is_empty() && !name.contains(char::is_whitespace) => name.to_string(),
            Some(_) => return Err(bad("master_name", "must be one word")),
            None => return Err(bad("master_name", "is required with sentinels")),
        };
        let sentinels = self
            .sentinels
            .iter()
            .map(|s| node("sentinels", s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Target::Sentinel(Arc::new(Sentinels {
            sentinels,
            master_name,
            password,
            sentinel_password,
        })))
    }
}

impl TargetKeys<'_> {
    /// `cluster` mode: the nodes, and none of the keys of the other modes.
    fn cluster_target(&self, password: Option<String>, sentinel_password: bool) -> Result<Target, BadKey> {
        if !self.sentinels.is_empty() {
            return Err(bad("cluster", "and sentinels are both set; set one or the other"));
        }
        if self.url_given {
            return Err(bad("cluster", "and url are both set; set one or the other"));
        }
        if self.master_name.is_some() {
            return Err(bad(
                "master_name",
                "needs sentinels (a cluster has no master name)",
            ));
        }
        if sentinel_password {
            let key = match self.sentinel_password_file {
                Some(_) => "sentinel_password_file",
                None => "sentinel_password",
            };
            return Err(bad(key, "needs sentinels"));
        }
        let nodes = self
            .cluster
            .iter()
            .map(|s| node("cluster", s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Target::Cluster(Arc::new(ClusterNodes { nodes, password })))
    }
}

/// One `host:port` of the list under `key`.
fn node(key: &'static str, s: &str) -> Result<NodeAddr, BadKey> {
    NodeAddr::parse(s).ok_or_else(|| bad(key, format_args!("{s:?} is not host:port")))
}

/// One secret from an inline key or a file key, at most one of them set.
fn secret(
    (key, inline): (&'static str, Option<&str>),
    (file_key, file): (&'static str, Option<&Path>),
) -> Result<Option<String>, BadKey> {
    let value = match (inline, file) {
        (Some(_), Some(_)) => return Err(bad(file_key, format_args!("and {key} are both set; set one"))),
        (Some(v), None) => (key, v.trim().to_string()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => (file_key, text.trim().to_string()),
            Err(e) => {
                return Err(bad(
                    file_key,
                    format_args!("cannot be read ({}): {e}", path.display()),
                ))
            }
        },
        (None, None) => return Ok(None),
    };
    match value {
        (key, v) if v.is_empty() => Err(bad(key, "is empty")),
        (_, v) => Ok(Some(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(sentinels: &'a [String]) -> TargetKeys<'a> {
        TargetKeys {
            url: "redis://127.0.0.1:6390/",
            url_given: false,
            sentinels,
            cluster: &[],
            master_name: Some("wsmesh"),
            password: None,
            password_file: None,
            sentinel_password: None,
            sentinel_password_file: None,
        }
    }

    #[test]
    fn url_mode_is_the_default_and_takes_a_password() {
        let mut k = keys(&[]);
        k.master_name = None;
        let t = k.target().unwrap();
        assert_eq!(t.fixed_addr().as_deref(), Some("127.0.0.1:6390"));
        k.password = Some("pw");
        let Target::Url(info) = k.target().unwrap() else {
            panic!()
        };
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert!(!format!("{:?}", Target::Url(info)).contains("pw"));
        k.url = "redis://:x@127.0.0.1:1/";
        assert_eq!(k.target().unwrap_err().key, "password");
    }

    #[test]
    fn sentinel_mode_needs_a_master_name_and_no_url() {
        let list = vec!["127.0.0.1:26379".to_string(), "[::1]:26380".to_string()];
        let t = keys(&list).target().unwrap();
        let Target::Sentinel(s) = &t else { panic!() };
        assert_eq!(s.sentinels[1].to_string(), "[::1]:26380");
        assert_eq!(t.fixed_addr(), None);
        let mut k = keys(&list);
        k.master_name = None;
        assert_eq!(k.target().unwrap_err().key, "master_name");
        k.master_name = Some("two words");
        assert_eq!(k.target().unwrap_err().key, "master_name");
        let mut k = keys(&list);
        k.url_given = true;
        assert_eq!(k.target().unwrap_err().key, "sentinels");
        let bad_list = vec!["nope".to_string()];
        let e = keys(&bad_list).target().unwrap_err();
        assert_eq!(
            (e.key, e.reason.as_str()),
            ("sentinels", "sentinels \"nope\" is not host:port")
        );
        let k = keys(&[]);
        assert_eq!(k.target().unwrap_err().key, "master_name");
    }

    #[test]
    fn cluster_mode_takes_nodes_and_a_password_and_excludes_the_other_modes() {
        let nodes = vec!["127.0.0.1:7001".to_string(), "[::1]:7002".to_string()];
        let mut k = keys(&[]);
        k.master_name = None;
        k.cluster = &nodes;
        k.password = Some("pw");
        let t = k.target().unwrap();
        let Target::Cluster(c) = &t else { panic!() };
        assert_eq!(c.nodes[1].to_string(), "[::1]:7002");
        assert_eq!(
            t.fixed_addr().as_deref(),
            Some("cluster 127.0.0.1:7001,[::1]:7002")
        );
        assert!(!format!("{t:?}").contains("pw"));
        let sentinels = vec!["127.0.0.1:26379".to_string()];
        let mut both = k;
        both.sentinels = &sentinels;
        assert_eq!(
            both.target().unwrap_err().reason,
            "cluster and sentinels are both set; set one or the other"
        );
        let mut with_url = k;
        with_url.url_given = true;
        assert_eq!(with_url.target().unwrap_err().key, "cluster");
        let mut named = k;
        named.master_name = Some("wsmesh");
        assert_eq!(named.target().unwrap_err().key, "master_name");
        let bad_nodes = vec!["127.0.0.1".to_string()];
        let mut bad_list = k;
        bad_list.cluster = &bad_nodes;
        assert_eq!(
            bad_list.target().unwrap_err().reason,
            "cluster \"127.0.0.1\" is not host:port"
        );
    }

    #[test]
    fn secrets_come_from_one_place_and_are_never_printed() {
        let list = vec!["127.0.0.1:26379".to_string()];
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, b"s3cret\n").unwrap();
        let mut k = keys(&list);
        k.sentinel_password_file = Some(file.path());
        k.password = Some("data");
        let t = k.target().unwrap();
        let Target::Sentinel(s) = &t else { panic!() };
        assert_eq!(s.sentinel_password.as_deref(), Some("s3cret"));
        assert_eq!(s.password.as_deref(), Some("data"));
        let printed = format!("{t:?}");
        assert!(
            !printed.contains("s3cret") && !printed.contains("data\""),
            "{printed}"
        );
        k.sentinel_password = Some("x");
        assert_eq!(k.target().unwrap_err().key, "sentinel_password_file");
        let mut k = keys(&list);
        k.password = Some(" ");
        assert_eq!(k.target().unwrap_err().key, "password");
        let mut k = keys(&[]);
        k.master_name = None;
        k.sentinel_password = Some("x");
        assert_eq!(k.target().unwrap_err().key, "sentinel_password");
    }
}
