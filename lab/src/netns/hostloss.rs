//! The host-loss drills of `lab netns`: a whole host's cable is pulled under
//! load, as when a VM dies, and put back later.
//!
//! - `lb-host-down`: the lb that holds the VIP loses its link. keepalived on
//!   the other lb stops hearing adverts and takes the VIP; the clients'
//!   tunnels through the lost lb are dead, and they reconnect through the
//!   VIP to the other lb and resume with `since`. When the link returns,
//!   the VIP stays where it is (`nopreempt`).
//! - `redis-host-down`: the host of the Redis master loses its link. The
//!   Sentinels on the two other hosts (a majority of three) promote a
//!   replica; the apps and subscribers follow it; sends that could not be
//!   replicated meanwhile are answered `unavailable` and re-sent under the
//!   same cid. When the link returns, the old master becomes a replica of
//!   the new one.
//!
//! The load is `lab drill`'s (`drill::load`): resilient clients through
//! `wss://<VIP>/ws` in the client namespace, a steady send rate, the same
//! ledger; the final master's streams are then read back (`audit`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use wsmesh_client::ConnectOptions;

use super::drill::lb_states;
use super::procs::Procs;
use super::report::HostLossReport;
use super::services::{vip_holders, Running, LBS, REDIS_HOSTS};
use super::topology::{HostTable, LinkSwitch, Names, Role, Topology};
use super::{check_interrupted, in_client, Inputs, NetnsError};
use crate::drill::faults::Timeline;
use crate::drill::ledger::{self, ClientLedger};
use crate::drill::load::{Ended, Load, LoadPlan};
use crate::drill::report::Latency;
use crate::drill::store;
use crate::drill::DrillOptions;

/// A failover drill of `lab netns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// app1's link down: the lb marks it down, its clients move to app2.
    AppLink,
    /// The link of the lb that holds the VIP down.
    LbHost,
    /// The link of the Redis master's host down.
    RedisHost,
}

impl Fault {
    /// Every fault, in the order `--fault all` runs them.
    pub const ALL: [Fault; 3] = [Fault::AppLink, Fault::LbHost, Fault::RedisHost];

    /// CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::AppLink => "app-link-down",
            Fault::LbHost => "lb-host-down",
            Fault::RedisHost => "redis-host-down",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            format!("unknown fault {s:?}; one of: all, app-link-down, lb-host-down, redis-host-down")
        })
    }
}

/// How long the lost lb's host stays cut off: past the VIP's move (about
/// 3.6 s) and the clients' reconnects.
const LB_DOWN_FOR: Duration = Duration::from_secs(10);

/// How long the master's host stays cut off: past the Sentinels' verdict
/// (3 s down-after), the promotion and the apps following it.
const REDIS_DOWN_FOR: Duration = Duration::from_secs(15);

/// Longest wait for one step of a fault (a move, a promotion, a return).
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// Runs one host-loss drill and returns its report.
pub fn run(
    fault: Fault,
    inputs: &Inputs,
    topo: &Topology,
    procs: &mut Procs,
    running: &Running,
    size: &DrillOptions,
) -> Result<HostLossReport, NetnsError> {
    let drill = Drill {
        fault,
        hosts: inputs.hosts.clone(),
        names: topo.names(),
        running: running.clone(),
        size: size.clone(),
    };
    let limit = size.duration + size.quiesce + Duration::from_secs(300);
    in_client(topo, procs, &format!("drill {fault}"), limit, move || drill.run())
}

/// One drill, as the thread in the client namespace runs it.
#[derive(Debug)]
struct Drill {
    fault: Fault,
    hosts: HostTable,
    names: Names,
    running: Running,
    size: DrillOptions,
}

/// A host's pulled cable: put back when dropped, so a failed step never
/// leaves a host cut off for the next drill or the clean-up.
struct Pulled(LinkSwitch);

impl Pulled {
    async fn pull(link: &LinkSwitch) -> Result<Pulled, NetnsError> {
        set_link(link, false).await?;
        Ok(Pulled(link.clone()))
    }

    async fn put_back(self) -> Result<(), NetnsError> {
        set_link(&self.0, true).await?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for Pulled {
    fn drop(&mut self) {
        let _ = self.0.set(true);
    }
}

async fn set_link(link: &LinkSwitch, up: bool) -> Result<(), NetnsError> {
    let link = link.clone();
    tokio::task::spawn_blocking(move || link.set(up))
        .await
        .map_err(|e| NetnsError::Check(format!("link switch: {e}")))?
}

/// Polls `probe` every 100 ms until it gives a value, within `limit`.
async fn poll<T, Fut>(what: &str, limit: Duration, mut probe: impl FnMut() -> Fut) -> Result<T, NetnsError>
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        check_interrupted()?;
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(NetnsError::Timeout(format!("{what} within {limit:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends a step to the timeline, at its offset from `t0`.
fn note(tl: &mut Timeline, t0: Instant, step: String) {
    tl.steps.push((t0.elapsed().as_secs_f64(), step));
}

impl Drill {
    fn link(&self, role: Role) -> LinkSwitch {
        self.names.link_switch(role)
    }

    /// The lbs holding the VIP now.
    async fn holders(&self) -> Vec<Role> {
        let (names, vip) = (self.names.clone(), self.hosts.vip);
        tokio::task::spawn_blocking(move || vip_holders(&names, vip))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// Whether `role`'s lb sees both apps up.
    async fn lb_sees_apps(&self, role: Role) -> bool {
        let (ns, admin) = (self.names.ns(role), self.running.admin.clone());
        tokio::task::spawn_blocking(move || lb_states(&ns, &admin))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|s| {
                ["app1", "app2"]
                    .iter()
                    .all(|a| s.get(*a).map(String::as_str) == Some("up"))
            })
    }

    async fn lb_host_down(&self, t0: Instant, tl: &mut Timeline) -> Result<(), NetnsError> {
        let [holder] = self.holders().await[..] else {
            return Err(NetnsError::Check("not exactly one lb holds the VIP".into()));
        };
        let other = LBS.into_iter().find(|r| *r != holder).unwrap_or(holder);
        let pulled = Pulled::pull(&self.link(holder)).await?;
        note(tl, t0, format!("{}'s link down (it held the VIP)", holder.name()));
        poll(
            &format!("the VIP to move to {}", other.name()),
            STEP_LIMIT,
            || async { (self.holders().await == [other]).then_some(()) },
        )
        .await?;
        note(tl, t0, format!("the VIP is on {} (keepalived)", other.name()));
        tokio::time::sleep_until(t0 + LB_DOWN_FOR).await;
        pulled.put_back().await?;
        note(tl, t0, format!("{}'s link up", holder.name()));
        poll(
            &format!("{} to see both apps again", holder.name()),
            STEP_LIMIT,
            || async { self.lb_sees_apps(holder).await.then_some(()) },
        )
        .await?;
        // Give keepalived on the returning lb time to hear the adverts and
        // settle as BACKUP before asking who holds the VIP.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let holders = self.holders().await;
        if holders != [other] {
            return Err(NetnsError::Check(format!(
                "after {}'s return the VIP is on {holders:?}, not {} alone (nopreempt)",
                holder.name(),
                other.name()
            )));
        }
        note(
            tl,
            t0,
            format!(
                "{} serves again as backup; the VIP stays on {} (nopreempt)",
                holder.name(),
                other.name()
            ),
        );
        Ok(())
    }

    async fn redis_host_down(&self, t0: Instant, tl: &mut Timeline) -> Result<(), NetnsError> {
        let sentinels = &self.running.sentinels;
        let old = sentinels
            .agreed_master()
            .await
            .ok_or_else(|| NetnsError::Check("the Sentinels name no common master".into()))?;
        let host = REDIS_HOSTS
            .into_iter()
            .find(|r| std::net::IpAddr::V4(self.hosts.addr(*r)) == old.ip())
            .ok_or_else(|| NetnsError::Check(format!("the master {old} is on no lab host")))?;
        let pulled = Pulled::pull(&self.link(host)).await?;
        note(
            tl,
            t0,
            format!("{}'s link down (it held the master {old})", host.name()),
        );
        let new = poll("the Sentinels to promote a replica", STEP_LIMIT, || async {
            sentinels.agreed_master().await.filter(|m| *m != old)
        })
        .await?;
        note(tl, t0, format!("the Sentinels promoted {new}"));
        poll("the lbs to see both apps up again", STEP_LIMIT, || async {
            let mut all = true;
            for lb in LBS {
                all &= self.lb_sees_apps(lb).await;
            }
            all.then_some(())
        })
        .await?;
        note(
            tl,
            t0,
            "both apps healthy on the new master (both lbs see them up)".into(),
        );
        tokio::time::sleep_until(t0 + REDIS_DOWN_FOR).await;
        pulled.put_back().await?;
        note(tl, t0, format!("{}'s link up", host.name()));
        let why = std::cell::RefCell::new(String::new());
        let ready = poll(
            "the old master to rejoin as a replica",
            Duration::from_secs(90),
            || async {
                sentinels
                    .ready(new, 2)
                    .await
                    .map_err(|e| *why.borrow_mut() = e)
                    .ok()
            },
        )
        .await;
        ready.map_err(|e| NetnsError::Timeout(format!("{e}: {}", why.borrow())))?;
        note(
            tl,
            t0,
            format!("{old} is a replica of {new}; the Sentinels are ready for the next failover"),
        );
        Ok(())
    }

    async fn run(self) -> Result<HostLossReport, NetnsError> {
        let opts = &self.size;
        let tls = wsmesh_client::tls::client_config(&self.running.ca)
            .map_err(|e| NetnsError::Setup(e.to_string()))?;
        let connect = ConnectOptions::new(&format!("wss://{}/ws", self.hosts.vip))
            .map_err(|e| NetnsError::Setup(e.to_string()))?
            .tls(tls);
        let plan = LoadPlan {
            clients: opts.clients,
            rooms: opts.rooms,
            rate: opts.rate.total(opts.clients),
            connect,
            tuning: opts.tuning.clone(),
            room_prefix: format!("netns-{}-{}-", self.fault.name(), std::process::id()),
            tokens: None,
        };
        let rooms: Vec<String> = (0..opts.rooms.max(1))
            .map(|i| format!("{}{i}", plan.room_prefix))
            .collect();
        let load = Load::start(&plan).await;
        let limit = Duration::from_secs(30) + Duration::from_millis(20 * opts.clients as u64);
        let connected = load.wait_connected(limit).await;
        if connected < opts.clients {
            load.finish().await;
            return Err(NetnsError::Check(format!(
                "only {connected} of {} clients connected through the VIP within {limit:?}",
                opts.clients
            )));
        }

        let started = Instant::now();
        load.set_sending(true);
        tokio::time::sleep((opts.duration / 4).min(Duration::from_secs(10))).await;
        let t0 = Instant::now();
        let mut timeline = Timeline::default();
        let injected = match self.fault {
            Fault::LbHost => self.lb_host_down(t0, &mut timeline).await,
            Fault::RedisHost => self.redis_host_down(t0, &mut timeline).await,
            Fault::AppLink => Err(NetnsError::Setup("app-link-down is not a host-loss drill".into())),
        };
        if let Err(e) = injected {
            load.finish().await;
            return Err(e);
        }
        let Ended {
            outcomes,
            sending_s,
            quiesced,
            quiesce_s,
        } = load.end(started, started + opts.duration, opts.quiesce).await;

        let ledgers: Vec<ClientLedger> = outcomes.iter().map(|o| o.ledger.clone()).collect();
        let sentinels = &self.running.sentinels;
        let master = poll("the Sentinels to agree on the master", STEP_LIMIT, || {
            sentinels.agreed_master()
        })
        .await?;
        let stored = store::read(master, Some(&sentinels.password), &self.running.prefix, &rooms)
            .await
            .map_err(|e| NetnsError::Check(e.to_string()))?;
        let gaps: Vec<(Duration, Instant)> = outcomes
            .iter()
            .filter_map(|o| fault_gap(&o.received_at, t0))
            .collect();
        let reconnects: Vec<Duration> = outcomes
            .iter()
            .flat_map(|o| o.connections.iter().skip(1).filter_map(|r| r.reconnect_took))
            .collect();
        Ok(HostLossReport {
            fault: self.fault,
            clients: opts.clients,
            rooms: rooms.len(),
            sending_s,
            totals: ledger::reconcile(&ledgers, &stored),
            reconnect: Latency::of(&reconnects),
            stall: Latency::of(&gaps.iter().map(|(gap, _)| *gap).collect::<Vec<_>>()),
            all_back_s: match gaps.len() == outcomes.len() {
                true => gaps
                    .iter()
                    .map(|(_, end)| end.duration_since(t0).as_secs_f64())
                    .reduce(f64::max),
                false => None,
            },
            quiesced,
            quiesce_s,
            timeline,
        })
    }
}

/// A client's stall around a fault at `fault`: the longest gap between two
/// consecutive receipts that ends after the fault, and when it ended. With
/// rooms that carry several messages a second, that gap is the fault's (the
/// last chat before the client lost its path to the first one after); `None`
/// when nothing arrived after the fault.
fn fault_gap(received: &[Instant], fault: Instant) -> Option<(Duration, Instant)> {
    let mut at = received.to_vec();
    at.sort_unstable();
    at.windows(2)
        .filter(|w| w[1] > fault)
        .map(|w| (w[1] - w[0], w[1]))
        .max_by_key(|(gap, _)| *gap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(f.name().parse::<Fault>(), Ok(f));
        }
        assert!("lb-down".parse::<Fault>().is_err());
    }

    #[test]
    fn the_stall_is_the_longest_gap_that_ends_after_the_fault() {
        let base = Instant::now();
        let at = |ms: u64| base + Duration::from_millis(ms);
        // Every 100 ms, then nothing from 1000 to 4500 (the fault at 1050).
        let mut received: Vec<Instant> = (0..=10).map(|i| at(i * 100)).collect();
        received.extend((0..5).map(|i| at(4500 + i * 100)));
        let (gap, end) = fault_gap(&received, at(1050)).unwrap();
        assert_eq!((gap, end), (Duration::from_millis(3500), at(4500)));
        // A long gap that ended before the fault is not the fault's.
        assert_eq!(
            fault_gap(&[at(0), at(5000), at(5100)], at(5050)).map(|g| g.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(fault_gap(&received, at(9000)), None);
    }
}
