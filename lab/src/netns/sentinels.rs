//! The lab's three Sentinels, asked the way an operator would with
//! `redis-cli -p 26379`: which node is the master, and whether the set is
//! ready to survive the next host loss. Asked from the client namespace,
//! which reaches every host, with the lab's Redis password (the Sentinels
//! require it, as the data nodes do).

use std::net::SocketAddr;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::FromRedisValue;

/// The name the Sentinels monitor the master under (`configs/vagrant/sentinel.conf`).
pub const MASTER_NAME: &str = "wsmesh";

/// How long one question may take (a Sentinel behind a pulled cable never answers).
const ASK_LIMIT: Duration = Duration::from_secs(1);

/// The Sentinels of the lab and the password they and the data nodes want.
#[derive(Debug, Clone)]
pub struct SentinelSet {
    /// One per host that runs one (redis, app1, app2).
    pub addrs: Vec<SocketAddr>,
    /// `requirepass` of every Sentinel and data node.
    pub password: String,
}

/// A connection to a Redis process of the lab, authenticated.
pub async fn connect(addr: SocketAddr, password: &str) -> Option<MultiplexedConnection> {
    // The password is the hex of random bytes: nothing to escape in a URL.
    let client = redis::Client::open(format!("redis://:{password}@{addr}/")).ok()?;
    tokio::time::timeout(ASK_LIMIT, client.get_multiplexed_async_connection())
        .await
        .ok()?
        .ok()
}

/// `cmd` asked of `addr`; `None` when it does not answer in time or refuses.
async fn ask<T: FromRedisValue>(addr: SocketAddr, password: &str, cmd: &redis::Cmd) -> Option<T> {
    let mut c = connect(addr, password).await?;
    tokio::time::timeout(ASK_LIMIT, cmd.query_async::<T>(&mut c))
        .await
        .ok()?
        .ok()
}

/// A `SENTINEL master` / `SENTINEL replicas` entry: a flat list of names and values.
struct Fields(Vec<String>);

impl Fields {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .chunks_exact(2)
            .find(|kv| kv[0] == key)
            .map(|kv| kv[1].as_str())
    }
}

impl SentinelSet {
    /// The master `sentinel` names now.
    pub async fn master_named_by(&self, sentinel: SocketAddr) -> Option<SocketAddr> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("get-master-addr-by-name").arg(MASTER_NAME);
        let (host, port): (String, u16) = ask(sentinel, &self.password, &cmd).await?;
        format!("{host}:{port}").parse().ok()
    }

    /// The master named by every Sentinel that answers, when at least two
    /// answer (a majority) and all of them agree.
    pub async fn agreed_master(&self) -> Option<SocketAddr> {
        let mut named = Vec::new();
        for s in &self.addrs {
            if let Some(m) = self.master_named_by(*s).await {
                named.push(m);
            }
        }
        let first = *named.first()?;
        (named.len() >= 2 && named.iter().all(|m| *m == first)).then_some(first)
    }

    /// Why the set is not ready for a failover yet, or `Ok` when it is:
    /// every Sentinel answers, names `master`, sees it up, knows `replicas`
    /// replicas, each up with its link to the master up, and knows the
    /// other Sentinels. Only then can any one host be lost.
    pub async fn ready(&self, master: SocketAddr, replicas: usize) -> Result<(), String> {
        for s in &self.addrs {
            let mut cmd = redis::cmd("SENTINEL");
            cmd.arg("master").arg(MASTER_NAME);
            let info = Fields(
                ask(*s, &self.password, &cmd)
                    .await
                    .ok_or_else(|| format!("sentinel {s} does not answer"))?,
            );
            let named = format!(
                "{}:{}",
                info.get("ip").unwrap_or("?"),
                info.get("port").unwrap_or("?")
            );
            if named != master.to_string() {
                return Err(format!("sentinel {s} names {named} as master, not {master}"));
            }
            let others = (self.addrs.len() - 1).to_string();
            let want = [
                ("flags", "master".to_string()),
                ("num-slaves", replicas.to_string()),
                ("num-other-sentinels", others),
            ];
            for (key, value) in want {
                if info.get(key) != Some(value.as_str()) {
                    return Err(format!("sentinel {s}: {key} is {:?}, not {value}", info.get(key)));
                }
            }
            let mut cmd = redis::cmd("SENTINEL");
            cmd.arg("replicas").arg(MASTER_NAME);
            let list: Vec<Vec<String>> = ask(*s, &self.password, &cmd)
                .await
                .ok_or_else(|| format!("sentinel {s} does not list the replicas"))?;
            for replica in list.into_iter().map(Fields) {
                let name = replica.get("name").unwrap_or("?").to_string();
                if replica.get("flags") != Some("slave") || replica.get("master-link-status") != Some("ok") {
                    return Err(format!(
                        "sentinel {s}: replica {name} is {:?} with its master link {:?}",
                        replica.get("flags"),
                        replica.get("master-link-status")
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_a_flat_reply() {
        let f = Fields(
            ["name", "wsmesh", "flags", "master", "num-slaves", "2"]
                .map(String::from)
                .to_vec(),
        );
        assert_eq!(f.get("flags"), Some("master"));
        assert_eq!(f.get("num-slaves"), Some("2"));
        assert_eq!(f.get("wsmesh"), None);
    }
}
