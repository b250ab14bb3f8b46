//! The chat check and the app-link-down drill of `lab netns`, from where a
//! user would look: the chat through the VIP over TLS from the client
//! namespace, trusting only the lab CA; then app1's cable is pulled, the lb
//! holding the VIP must mark app1 down, a client that was on app1 must
//! resume on app2 with every message exactly once and in order, and app1
//! must come back `up` once the cable is back.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use wsmesh_common::chat::Chat;

use super::enter::http_get_in;
use super::procs::Procs;
use super::services::{vip_holder, Running};
use super::topology::{LinkSwitch, Role, Topology};
use super::{check_interrupted, in_client, say, Inputs, NetnsError};
use wsmesh_client::resilient::{Event, ResilientClient, ResilientConfig};
use wsmesh_client::ConnectOptions;

/// Server name → state, from the lb's `/api/backends`.
fn server_states(body: &str) -> Result<HashMap<String, String>, NetnsError> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| NetnsError::Check(format!("/api/backends is not JSON: {e}")))?;
    let mut states = HashMap::new();
    for backend in v["backends"].as_array().into_iter().flatten() {
        for server in backend["servers"].as_array().into_iter().flatten() {
            if let (Some(name), Some(state)) = (server["name"].as_str(), server["state"].as_str()) {
                states.insert(name.to_string(), state.to_string());
            }
        }
    }
    if states.is_empty() {
        return Err(NetnsError::Check(format!(
            "/api/backends lists no server: {body}"
        )));
    }
    Ok(states)
}

/// The lb's view of its servers, asked on the lb host's loopback.
pub(crate) fn lb_states(lb_ns: &str, admin: &str) -> Result<HashMap<String, String>, NetnsError> {
    let (status, body) = http_get_in(
        lb_ns,
        &format!("http://{admin}/api/backends"),
        Duration::from_secs(2),
    )?;
    if status != 200 {
        return Err(NetnsError::Check(format!("/api/backends answered {status}")));
    }
    server_states(&body)
}

/// Rooms tried for one that lives on app1 (each does with even odds once
/// app1 has room under its bounded load).
const ROOM_TRIES: usize = 16;

/// Runs the chat check and, when asked, the app-link-down drill; one
/// summary line per check.
pub fn run(
    inputs: &Inputs,
    topo: &Topology,
    procs: &mut Procs,
    running: &Running,
    app_link_down: bool,
) -> Result<Vec<String>, NetnsError> {
    let job = Job {
        url: format!("wss://{}/ws", inputs.hosts.vip),
        ca: running.ca.clone(),
        lb_ns: topo.ns(vip_holder(&topo.names(), inputs.hosts.vip)?),
        admin: running.admin.clone(),
        app1_link: topo.link_switch(Role::App1),
        app_link_down,
    };
    in_client(
        topo,
        procs,
        "the chat check and drill",
        Duration::from_secs(240),
        move || job.run(),
    )
}

/// The part that runs inside the client namespace.
#[derive(Debug)]
struct Job {
    /// `wss://<VIP>/ws`.
    url: String,
    /// CA to trust.
    ca: PathBuf,
    /// Namespace of the lb holding the VIP, for the admin API.
    lb_ns: String,
    /// Admin listener address on the lb host.
    admin: String,
    /// app1's cable.
    app1_link: LinkSwitch,
    /// Whether to run the app-link-down drill after the chat check.
    app_link_down: bool,
}

/// Bounds of the drill.
const STEP: Duration = Duration::from_secs(15);

impl Job {
    fn client(&self, room: &str, nick: &str) -> Result<ResilientClient, NetnsError> {
        let tls =
            wsmesh_client::tls::client_config(&self.ca).map_err(|e| NetnsError::Setup(e.to_string()))?;
        let opts = ConnectOptions::new(&self.url)
            .map_err(|e| NetnsError::Setup(e.to_string()))?
            .room(room)
            .tls(tls);
        let mut config = ResilientConfig::new(opts);
        config.nick = Some(nick.to_string());
        config.backoff_cap = Duration::from_secs(2);
        Ok(ResilientClient::spawn(config))
    }

    async fn states(&self) -> Result<HashMap<String, String>, NetnsError> {
        let (lb_ns, admin) = (self.lb_ns.clone(), self.admin.clone());
        tokio::task::spawn_blocking(move || lb_states(&lb_ns, &admin))
            .await
            .map_err(|e| NetnsError::Check(format!("admin query: {e}")))?
    }

    async fn wait_state(&self, server: &str, want: &str, limit: Duration) -> Result<Duration, NetnsError> {
        let start = Instant::now();
        let mut last = String::from("?");
        while start.elapsed() < limit {
            check_interrupted()?;
            if let Ok(states) = self.states().await {
                last = states.get(server).cloned().unwrap_or_else(|| "missing".into());
                if last == want {
                    return Ok(start.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(NetnsError::Timeout(format!(
            "lb did not mark {server} {want} within {limit:?} (last: {last})"
        )))
    }

    async fn set_link(&self, up: bool) -> Result<(), NetnsError> {
        let link = self.app1_link.clone();
        tokio::task::spawn_blocking(move || link.set(up))
            .await
            .map_err(|e| NetnsError::Check(format!("link switch: {e}")))?
    }

    async fn run(self) -> Result<Vec<String>, NetnsError> {
        let mut lines = Vec::new();
        let room = format!("netns-{}", std::process::id());

        // Chat check: two clients through the lb, each message to both, once.
        let mut ana = self.client(&room, "ana")?;
        let mut bob = self.client(&room, "bob")?;
        let ana_on = connected(&mut ana, "ana").await?;
        let bob_on = connected(&mut bob, "bob").await?;
        ana.send("hello from ana");
        bob.send("hello from bob");
        let expect = ["hello from ana", "hello from bob"];
        for (name, c) in [("ana", &mut ana), ("bob", &mut bob)] {
            let got = c.chats(2, STEP).await;
            check_bodies(name, &got, &expect)?;
            let extra = c.chats(1, Duration::from_millis(500)).await;
            if !extra.is_empty() || c.stats().duplicates > 0 {
                return Err(NetnsError::Check(format!("{name} received a message twice")));
            }
        }
        say(&mut lines, format!(
            "chat check: ana on {ana_on}, bob on {bob_on} over {} (lab CA); both received both messages exactly once",
            self.url
        ));
        if !self.app_link_down {
            return Ok(lines);
        }

        // The drill needs a client on app1 (the victim). The lb keeps a
        // room's members on one app, so rooms are tried until one lives on
        // app1; its witness joins once app1 is down, on the other app.
        // The tries that landed elsewhere stay open until then: with ana
        // and bob on app1 and nothing on app2, app1 is at its bounded-load
        // share and takes no new room, and the open tries on app2 raise
        // that share. (With ana and bob on app2, the first try is on app1.)
        let mut found = None;
        let mut elsewhere = Vec::new();
        for i in 0..ROOM_TRIES {
            let (victim_room, nick) = (format!("{room}-{i}"), format!("cara{i}"));
            let mut c = self.client(&victim_room, &nick)?;
            if connected(&mut c, &nick).await? == "app1" {
                found = Some((nick, c, victim_room));
                break;
            }
            elsewhere.push(c);
        }
        drop(elsewhere);
        let (victim_nick, mut victim, room) = found
            .ok_or_else(|| NetnsError::Check(format!("no room of {ROOM_TRIES} lived on app1")))?;
        let (victim_nick, witness_nick) = (victim_nick.as_str(), "wes");
        let mut victim_chats: Vec<Chat> = Vec::new();
        let mut witness_chats: Vec<Chat> = Vec::new();

        // Pull app1's cable.
        let t0 = Instant::now();
        self.set_link(false).await?;
        let marked = self.wait_state("app1", "down", Duration::from_secs(20)).await?;
        let mut witness = self.client(&room, witness_nick)?;
        let witness_on = connected(&mut witness, witness_nick).await?;
        if witness_on == "app1" {
            return Err(NetnsError::Check(
                "the lb sent a new session to app1 while it was down".into(),
            ));
        }

        // The witness keeps chatting while the victim's tunnel is dead.
        let mut sent = Vec::new();
        for i in 0..10 {
            check_interrupted()?;
            let body = format!("during failover {i}");
            witness.send(body.clone());
            sent.push(body);
            witness_chats.extend(witness.chats(1, STEP).await);
        }
        // A client whose instance vanished resumes elsewhere: if the lb
        // closes the dead tunnel, the client reconnects by itself with
        // `since`; otherwise the drill reloads it below.
        let reconnected = victim
            .wait_for(Duration::from_secs(5), |e| match e {
                Event::Connected(r) if r.instance != "app1" => Some(r.instance.clone()),
                _ => None,
            })
            .await;
        let how = match reconnected {
            Some(on) => format!("reconnected by itself to {on} (resume with since)"),
            None => {
                // The lb keeps a tunnel open while its server is down and
                // this client has no liveness check of its own: do what a
                // user does, reload. The new connection's history must hold
                // what was missed.
                while let Some(c) = victim.next_chat(Duration::from_millis(100)).await {
                    victim_chats.push(c);
                }
                drop(victim);
                victim = self.client(&room, victim_nick)?;
                let on = connected(&mut victim, victim_nick).await?;
                if on == "app1" {
                    return Err(NetnsError::Check(
                        "the lb sent a new session to app1 while it was down".into(),
                    ));
                }
                format!(
                    "saw no close on its dead tunnel, so the drill reloaded it: it landed on {on} \
                     and its history held what it missed"
                )
            }
        };
        // Everything the witness sent must reach the victim once, in order.
        let until = Instant::now() + STEP;
        while victim_chats
            .iter()
            .filter(|c| c.body.starts_with("during failover"))
            .count()
            < sent.len()
            && Instant::now() < until
        {
            victim_chats.extend(victim.chats(1, Duration::from_millis(500)).await);
        }
        let got: Vec<&str> = victim_chats
            .iter()
            .map(|c| c.body.as_str())
            .filter(|b| b.starts_with("during failover"))
            .collect();
        let want: Vec<&str> = sent.iter().map(String::as_str).collect();
        if got != want {
            return Err(NetnsError::Check(format!(
                "{victim_nick} (was on app1) received {got:?}, expected {want:?}"
            )));
        }
        // A witness that joined after the greetings has them in its history;
        // what counts are the messages sent during the failover.
        let until = Instant::now() + STEP;
        let during = |chats: &[Chat]| {
            chats
                .iter()
                .filter(|c| c.body.starts_with("during failover"))
                .count()
        };
        while during(&witness_chats) < sent.len() && Instant::now() < until {
            witness_chats.extend(witness.chats(1, Duration::from_millis(500)).await);
        }
        witness_chats.retain(|c| c.body.starts_with("during failover"));
        check_bodies(witness_nick, &witness_chats, &want)?;
        say(
            &mut lines,
            format!(
                "app-link-down: app1's link down; lb marked app1 down after {:.1}s; {victim_nick} {how}; \
             {} messages from {witness_nick} arrived exactly once, in order, at both",
                marked.as_secs_f64(),
                sent.len()
            ),
        );

        // Put the cable back: app1 must come back up and serve again.
        self.set_link(true).await?;
        let back = self.wait_state("app1", "up", Duration::from_secs(60)).await?;
        let mut dora = self.client(&room, "dora")?;
        let dora_on = connected(&mut dora, "dora").await?;
        // Her history first (it arrives right after the welcome): it must
        // hold the messages sent during the failover.
        let mut history = Vec::new();
        let until = Instant::now() + STEP;
        let missed = |h: &[Chat]| h.iter().filter(|c| c.body.starts_with("during failover")).count();
        while missed(&history) < sent.len() && Instant::now() < until {
            history.extend(dora.chats(1, Duration::from_millis(500)).await);
        }
        if missed(&history) != sent.len() {
            return Err(NetnsError::Check(format!(
                "dora's history lacks messages sent during the failover: {:?}",
                history.iter().map(|c| c.body.as_str()).collect::<Vec<_>>()
            )));
        }
        witness.send("after recovery");
        let d = dora.chats(1, STEP).await;
        check_bodies("dora", &d, &["after recovery"])?;
        let v = victim.chats(1, STEP).await;
        check_bodies(victim_nick, &v, &["after recovery"])?;
        for (name, c) in [(victim_nick, &victim), (witness_nick, &witness)] {
            let s = c.stats();
            if s.duplicates > 0 || s.out_of_order > 0 {
                return Err(NetnsError::Check(format!(
                    "{name}: {} duplicates, {} out of order",
                    s.duplicates, s.out_of_order
                )));
            }
        }
        say(&mut lines, format!(
            "recovery: link up; lb marked app1 up after {:.1}s; a new client landed on {dora_on} and got the next message; drill took {:.1}s",
            back.as_secs_f64(),
            t0.elapsed().as_secs_f64()
        ));
        Ok(lines)
    }
}

/// Waits for the client's first welcome; the instance it landed on.
async fn connected(c: &mut ResilientClient, name: &str) -> Result<String, NetnsError> {
    c.wait_for(STEP, |e| match e {
        Event::Connected(r) => Some(r.instance.clone()),
        _ => None,
    })
    .await
    .ok_or_else(|| NetnsError::Timeout(format!("{name} was not welcomed through the lb within {STEP:?}")))
}

/// `got` holds exactly the bodies of `want`, in order.
fn check_bodies(name: &str, got: &[Chat], want: &[&str]) -> Result<(), NetnsError> {
    let bodies: Vec<&str> = got.iter().map(|c| c.body.as_str()).collect();
    let mut sorted = bodies.clone();
    sorted.sort_unstable();
    let mut expected = want.to_vec();
    expected.sort_unstable();
    if sorted != expected {
        return Err(NetnsError::Check(format!(
            "{name} received {bodies:?}, expected {want:?}"
        )));
    }
    let ids: Vec<_> = got.iter().filter_map(Chat::stream_id).collect();
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(NetnsError::Check(format!(
            "{name} received out of id order: {bodies:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_states_reads_the_admin_api_shape() {
        let body = r#"{"backends":[{"name":"apps","servers":[
            {"name":"app1","addr":"192.168.56.11:8080","state":"up","weight":1,"sessions":3},
            {"name":"app2","addr":"192.168.56.12:8080","state":"down","weight":1,"sessions":0}]}]}"#;
        let s = server_states(body).unwrap();
        assert_eq!(s["app1"], "up");
        assert_eq!(s["app2"], "down");
        assert!(server_states(r#"{"backends":[]}"#).is_err());
    }
}
