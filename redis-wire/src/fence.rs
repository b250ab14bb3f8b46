//! The check a replicated send passes before it is committed (published and
//! acked): the Sentinels, by a majority, still name the node it was written
//! to as the master, and none of them sees that master down or being
//! replaced.
//!
//! `WAIT 1` alone is not enough. A master frozen (SIGSTOP, a stalled VM)
//! past the Sentinels' `down-after` is replaced while its replicas, which
//! noticed nothing, stay attached to it. When it resumes it still believes
//! it is the master for a moment, runs the commands queued in its sockets,
//! and a replica that is about to be moved to the new master acknowledges
//! them: `WAIT` says 1, and a second later the replica resynchronises from
//! the new master and the writes are gone. Asking the Sentinels after the
//! `WAIT` closes that window: from the moment one of them calls the master
//! down until the failover is over and announced, the one leading it flags
//! the old master `failover_in_progress` or names the new one, so a write
//! to the old master is not committed, the client gets `unavailable`, and
//! its re-send (same cid) is stored on the new master.
//!
//! Every Sentinel must be heard: a majority vouching is not enough while
//! one is silent, since the silent one may be the leader of a failover in
//! progress. Only a Sentinel silent for `ASSUME_GONE_AFTER` (its host is
//! down) is left out, and a majority of the others decides.
//!
//! The Sentinels are asked in parallel over connections kept open, one per
//! Sentinel, so the check costs one loopback or LAN round trip per send.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::Mutex;
use tokio::time::{timeout, Instant};

use crate::target::{NodeAddr, Sentinels};

/// Flags a Sentinel sets on a master it does not vouch for.
const DOUBTS: [&str; 3] = ["s_down", "o_down", "failover_in_progress"];

/// Why the Sentinels did not vouch for a master.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unconfirmed {
    /// A Sentinel names another master, or flags this one.
    #[error("sentinel {sentinel} says {says} (writes went to {addr})")]
    Disputed {
        /// The Sentinel.
        sentinel: String,
        /// Its master and flags, as it answered.
        says: String,
        /// The node the writes went to.
        addr: String,
    },
    /// A Sentinel did not answer, and has not been silent long enough to
    /// be taken for gone.
    #[error("sentinel {sentinel} has not answered for {for_:?}")]
    Silent {
        /// The Sentinel.
        sentinel: String,
        /// Since its first unanswered question.
        for_: Duration,
    },
    /// Fewer than a majority of the Sentinels vouched for it.
    #[error("{answered} of {asked} sentinels vouch for the master; {needed} must")]
    NoMajority {
        /// Sentinels that vouched.
        answered: usize,
        /// Sentinels configured.
        asked: usize,
        /// A majority of them.
        needed: usize,
    },
}

/// How long a Sentinel must have been silent before the check goes on
/// without it. Before that, its silence fails the check: the Sentinel not
/// heard from may be the one leading a failover (the only one that knows,
/// for a moment, that the master is being replaced), so a majority of the
/// others vouching is not enough. A Sentinel silent this long is taken for
/// gone (its host is down), and a majority of the rest decides.
const ASSUME_GONE_AFTER: Duration = Duration::from_secs(3);

/// How often a Sentinel taken for gone is asked again: an unreachable host
/// must not cost every send the full limit.
const PROBE_GONE_EVERY: Duration = Duration::from_secs(1);

/// One Sentinel and the connection to it, opened on first use and dropped
/// on any failure.
struct Voter {
    addr: NodeAddr,
    conn: Mutex<Link>,
}

/// The state of the connection to one Sentinel.
#[derive(Default)]
struct Link {
    /// Open and answering.
    conn: Option<MultiplexedConnection>,
    /// When it stopped answering (the first failure of the current run).
    silent_since: Option<Instant>,
    /// When it was last asked.
    asked_at: Option<Instant>,
}

/// What asking one Sentinel gave.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Heard {
    /// Its view of the master.
    Answer(Answer),
    /// Nothing, for this long now.
    Silent(Duration),
}

/// Asks the Sentinels whether a master is still the master; see the module
/// comment. Clones share the connections.
#[derive(Clone)]
pub struct Fence {
    sentinels: Arc<Sentinels>,
    voters: Arc<Vec<Voter>>,
    limit: Duration,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field(
                "sentinels",
                &self.voters.iter().map(|v| v.addr.to_string()).collect::<Vec<_>>(),
            )
            .field("limit", &self.limit)
            .finish()
    }
}

/// What one Sentinel said about the master name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    /// `ip:port` of the master it names.
    master: String,
    /// Its flags for that master (`master`, `s_down`, …).
    flags: String,
}

impl Answer {
    /// Reads the flat field/value list of `SENTINEL MASTER <name>`.
    fn from_fields(fields: &[String]) -> Option<Answer> {
        let map: HashMap<&str, &str> = fields
            .chunks_exact(2)
            .map(|kv| (kv[0].as_str(), kv[1].as_str()))
            .collect();
        let ip = map.get("ip")?;
        let port = map.get("port")?;
        let master = NodeAddr {
            host: (*ip).to_string(),
            port: port.parse().ok()?,
        };
        Some(Answer {
            master: master.to_string(),
            flags: map.get("flags").copied().unwrap_or_default().to_string(),
        })
    }

    fn doubts(&self) -> bool {
        self.flags.split(',').any(|f| DOUBTS.contains(&f))
    }

    /// What this answer says about writes that went to `addr`.
    fn verdict(&self, addr: &str) -> Verdict {
        match (self.master == addr, self.doubts()) {
            (true, false) => Verdict::Vouches,
            (true, true) | (false, false) => Verdict::Disputes,
            (false, true) => Verdict::Replacing,
        }
    }
}

/// One Sentinel's view of a master the writes went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Names it, without doubt.
    Vouches,
    /// Doubts it, or names another master without doubt.
    Disputes,
    /// Names another master that it doubts: a failover away from that one
    /// (to ours) is being finished.
    Replacing,
}

impl Fence {
    /// A fence over the given Sentinels; each question is bounded by `limit`.
    pub(crate) fn new(sentinels: Arc<Sentinels>, limit: Duration) -> Fence {
        let voters = sentinels
            .sentinels
            .iter()
            .map(|addr| Voter {
                addr: addr.clone(),
                conn: Mutex::new(Link::default()),
            })
            .collect();
        Fence {
            sentinels,
            voters: Arc::new(voters),
            limit,
        }
    }

    /// Ok when a majority of the Sentinels name `addr` as the master with
    /// no doubt, and no answering Sentinel either doubts `addr` or names
    /// another master without doubt. A Sentinel that names another master
    /// *with* doubts is the one still finishing the failover *to* `addr`
    /// (it names the old master, flagged `failover_in_progress`, until its
    /// replicas are reconfigured); it does not dispute `addr`.
    pub async fn confirm(&self, addr: &str) -> Result<(), Unconfirmed> {
        let heard = join_all(self.voters.iter().map(|v| self.ask(v))).await;
        let asked = self.voters.len();
        let needed = asked / 2 + 1;
        let mut vouching = 0;
        for (voter, heard) in self.voters.iter().zip(heard) {
            let answer = match heard {
                Heard::Answer(a) => a,
                Heard::Silent(for_) if for_ >= ASSUME_GONE_AFTER => continue,
                Heard::Silent(for_) => {
                    return Err(Unconfirmed::Silent {
                        sentinel: voter.addr.to_string(),
                        for_,
                    })
                }
            };
            match answer.verdict(addr) {
                Verdict::Vouches => vouching += 1,
                Verdict::Replacing => {}
                Verdict::Disputes => {
                    return Err(Unconfirmed::Disputed {
                        sentinel: voter.addr.to_string(),
                        says: format!("master {} flags {}", answer.master, answer.flags),
                        addr: addr.to_string(),
                    })
                }
            }
        }
        if vouching < needed {
            return Err(Unconfirmed::NoMajority {
                answered: vouching,
                asked,
                needed,
            });
        }
        Ok(())
    }

    /// `SENTINEL MASTER <name>` on one Sentinel, or how long it has been
    /// silent (no answer in time, or nonsense: its connection is dropped).
    /// One taken for gone is asked at most every `PROBE_GONE_EVERY`.
    async fn ask(&self, voter: &Voter) -> Heard {
        let mut link = voter.conn.lock().await;
        let now = Instant::now();
        if let Some(since) = link.silent_since {
            let gone = now.duration_since(since) >= ASSUME_GONE_AFTER;
            if gone
                && link
                    .asked_at
                    .is_some_and(|t| now.duration_since(t) < PROBE_GONE_EVERY)
            {
                return Heard::Silent(now.duration_since(since));
            }
        }
        link.asked_at = Some(now);
        let work = async {
            let conn = match link.conn.as_mut() {
                Some(c) => c,
                None => {
                    let info = voter
                        .addr
                        .connection_info(self.sentinels.sentinel_password.as_deref());
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.limit))
                        .set_response_timeout(Some(self.limit));
                    let client = Client::open(info).ok()?;
                    let conn = client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .ok()?;
                    link.conn.insert(conn)
                }
            };
            let mut cmd = redis::cmd("SENTINEL");
            cmd.arg("MASTER").arg(&self.sentinels.master_name);
            let fields: Vec<String> = cmd.query_async(conn).await.ok()?;
            Answer::from_fields(&fields)
        };
        match timeout(self.limit, work).await.ok().flatten() {
            Some(answer) => {
                link.silent_since = None;
                Heard::Answer(answer)
            }
            None => {
                link.conn = None;
                let since = *link.silent_since.get_or_insert(now);
                Heard::Silent(Instant::now().duration_since(since))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<String> {
        pairs
            .iter()
            .flat_map(|(k, v)| [k.to_string(), v.to_string()])
            .collect()
    }

    #[test]
    fn an_answer_names_the_master_and_its_doubts() {
        let a = Answer::from_fields(&fields(&[
            ("name", "wsmesh"),
            ("ip", "10.0.0.5"),
            ("port", "6379"),
            ("flags", "master"),
        ]))
        .unwrap();
        assert_eq!(a.master, "10.0.0.5:6379");
        assert!(!a.doubts());
        for flags in [
            "master,s_down",
            "master,s_down,o_down",
            "master,failover_in_progress",
        ] {
            let a = Answer {
                flags: flags.into(),
                ..a.clone()
            };
            assert!(a.doubts(), "{flags}");
        }
        assert_eq!(Answer::from_fields(&fields(&[("ip", "x")])), None);
        assert_eq!(Answer::from_fields(&fields(&[("ip", "x"), ("port", "no")])), None);
    }

    #[test]
    fn a_write_counts_only_where_no_sentinel_doubts_its_master() {
        let says = |master: &str, flags: &str| Answer {
            master: master.into(),
            flags: flags.into(),
        };
        let ours = "10.0.0.2:6379";
        assert_eq!(says(ours, "master").verdict(ours), Verdict::Vouches);
        // The old master resumed and the leader is replacing it: no commit there.
        assert_eq!(
            says(ours, "master,failover_in_progress").verdict(ours),
            Verdict::Disputes
        );
        assert_eq!(says(ours, "master,s_down").verdict(ours), Verdict::Disputes);
        // The Sentinels moved on to another master.
        assert_eq!(says("10.0.0.3:6379", "master").verdict(ours), Verdict::Disputes);
        // The leader still finishing the failover to ours names the old one, doubted.
        assert_eq!(
            says("10.0.0.1:6379", "master,s_down,o_down,failover_in_progress").verdict(ours),
            Verdict::Replacing
        );
    }
}
