//! One supervised child process of a test, a drill or `lab up`: how to
//! start it, how to tell it is healthy, the signals a test sends it, where
//! its output goes (its log), and a kill on drop so no test, however it ends,
//! leaves a process behind.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use wsmesh_client::http;

/// What a process is, which decides the shutdown order (Redis last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `redis-server`.
    Redis,
    /// The chat server.
    App,
    /// The Redis → app forwarder.
    Subscriber,
    /// The TLS load balancer.
    Lb,
}

/// How to tell a process is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// `PING` answered with `+PONG` (not `-LOADING`).
    RedisPing(SocketAddr),
    /// `GET url` answered 200.
    Http(String),
    /// The lb's admin `GET /api/backends` answered 200 and lists every server as
    /// `up`: the lb is ready when it sees its apps, not merely when it listens.
    LbServersUp(String),
    /// Every address accepts a TCP connection (a process whose health URL
    /// needs more than itself to be up).
    Listening(Vec<SocketAddr>),
}

/// Where a process' stdout and stderr go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Output {
    /// Copied to our stdout line by line as `[name] line` (`lab up`, test clusters).
    #[default]
    Forward,
    /// Kept in memory, read with [`Process::log`]: what a test asserts on.
    Capture,
    /// Appended to a file, so a restart adds to the same log (drills with
    /// many clients, whose output would drown their own report).
    File(PathBuf),
}

/// Everything needed to (re)start a process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Name used in log prefixes and lookups, e.g. `app1`.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Executable.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Environment variables removed (e.g. overrides that would beat the config).
    pub env_remove: Vec<String>,
    /// Readiness check.
    pub health: Health,
    /// Addresses it listens on, with what each is for (for port checks).
    pub listens: Vec<(SocketAddr, String)>,
    /// Where its output goes.
    pub output: Output,
}

impl ProcessSpec {
    /// `program args…` as `name`, healthy by `health`; no environment
    /// changes, no listens, output forwarded.
    pub fn new(
        name: &str,
        kind: Kind,
        program: impl Into<PathBuf>,
        args: Vec<OsString>,
        health: Health,
    ) -> ProcessSpec {
        ProcessSpec {
            name: name.to_string(),
            kind,
            program: program.into(),
            args,
            env: Vec::new(),
            env_remove: Vec::new(),
            health,
            listens: Vec::new(),
            output: Output::Forward,
        }
    }
}

/// Why a process could not be started or did not become healthy.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The executable does not exist.
    #[error("{program}: not found{hint}")]
    Missing {
        /// The executable looked for.
        program: String,
        /// How to get it.
        hint: String,
    },
    /// Spawning failed otherwise.
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// Process name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It exited while we waited for it.
    #[error("{name} exited ({status})")]
    Exited {
        /// Process name.
        name: String,
        /// Its exit status.
        status: ExitStatus,
    },
    /// Still not healthy at the deadline.
    #[error("{name} not healthy after {waited:?}: {last}")]
    Unhealthy {
        /// Process name.
        name: String,
        /// How long we waited.
        waited: Duration,
        /// The last check's failure.
        last: String,
    },
    /// A signal could not be delivered.
    #[error("signal to {name}: {source}")]
    Signal {
        /// Process name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Where a process is in its life.
#[derive(Debug)]
enum State {
    /// Running (or at least not yet reaped).
    Running(Child),
    /// Stopped with SIGSTOP; SIGCONT resumes it.
    Paused(Child),
    /// Exited and reaped.
    Exited(ExitStatus),
}

/// A started process and how to restart it.
#[derive(Debug)]
pub struct Process {
    /// How it was started.
    spec: ProcessSpec,
    /// Its life state.
    state: State,
    /// Output so far with [`Output::Capture`], over every (re)start.
    log: Arc<Mutex<String>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let State::Running(child) | State::Paused(child) = &mut self.state {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Process {
    /// Starts `spec`; its stdout and stderr are forwarded line by line as `[name] line`.
    pub fn spawn(spec: ProcessSpec) -> Result<Process, ProcessError> {
        let log = Arc::new(Mutex::new(String::new()));
        let child = launch(&spec, &log)?;
        Ok(Process {
            spec,
            state: State::Running(child),
            log,
        })
    }

    /// Name, e.g. `app1`.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// How it is started.
    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// The health URL, for HTTP-checked processes.
    pub fn health_url(&self) -> Option<&str> {
        match &self.spec.health {
            Health::Http(url) | Health::LbServersUp(url) => Some(url),
            Health::RedisPing(_) | Health::Listening(_) => None,
        }
    }

    /// Process id while not reaped.
    pub fn pid(&self) -> Option<u32> {
        match &self.state {
            State::Running(c) | State::Paused(c) => Some(c.id()),
            State::Exited(_) => None,
        }
    }

    /// Whether it exited; reaps it when it did. Returns the status only the
    /// first time, so a supervisor logs each exit once.
    pub fn reap(&mut self) -> Option<ExitStatus> {
        let (State::Running(child) | State::Paused(child)) = &mut self.state else {
            return None;
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.state = State::Exited(status);
                Some(status)
            }
            Ok(None) | Err(_) => None,
        }
    }

    /// The exit status once it exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.reap();
        match self.state {
            State::Exited(status) => Some(status),
            _ => None,
        }
    }

    /// Its output so far: the captured text, or the log file's content;
    /// empty when it is forwarded.
    pub fn log(&self) -> String {
        match &self.spec.output {
            Output::Forward => String::new(),
            Output::Capture => self.log.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            Output::File(path) => std::fs::read_to_string(path).unwrap_or_default(),
        }
    }

    /// Sends `sig` (e.g. SIGHUP for a reload); nothing once it was reaped.
    pub fn signal(&mut self, sig: libc::c_int) -> Result<(), ProcessError> {
        self.reap();
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let pid = libc::pid_t::try_from(pid).map_err(|_| ProcessError::Signal {
            name: self.spec.name.clone(),
            source: std::io::Error::other("pid out of range"),
        })?;
        // SAFETY: kill(2) has no memory effects; the pid is our unreaped child, so not recycled.
        let rc = unsafe { libc::kill(pid, sig) };
        if rc == 0 {
            Ok(())
        } else {
            Err(ProcessError::Signal {
                name: self.spec.name.clone(),
                source: std::io::Error::last_os_error(),
            })
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) -> Result<(), ProcessError> {
        self.signal(libc::SIGKILL)?;
        if let State::Running(child) | State::Paused(child) = &mut self.state {
            let status = child.wait().map_err(|source| ProcessError::Signal {
                name: self.spec.name.clone(),
                source,
            })?;
            self.state = State::Exited(status);
        }
        Ok(())
    }

    /// SIGTERM (graceful stop); does not wait.
    pub fn term(&mut self) -> Result<(), ProcessError> {
        self.signal(libc::SIGTERM)
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn stop(&mut self) -> Result<(), ProcessError> {
        self.signal(libc::SIGSTOP)?;
        self.state = match std::mem::replace(&mut self.state, State::Exited(ExitStatus::default())) {
            State::Running(child) => State::Paused(child),
            other => other,
        };
        Ok(())
    }

    /// SIGCONT after `stop`.
    pub fn cont(&mut self) -> Result<(), ProcessError> {
        self.signal(libc::SIGCONT)?;
        self.state = match std::mem::replace(&mut self.state, State::Exited(ExitStatus::default())) {
            State::Paused(child) => State::Running(child),
            other => other,
        };
        Ok(())
    }

    /// Waits until it exits, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace`.
    pub async fn shutdown(&mut self, grace: Duration) -> Result<(), ProcessError> {
        if matches!(self.state, State::Paused(_)) {
            self.cont()?;
        }
        self.term()?;
        if self.wait_exit(grace).await.is_none() {
            tracing::warn!(name = %self.spec.name, "still running after SIGTERM; killing");
            self.kill9()?;
        }
        Ok(())
    }

    /// Starts it again with the same command line (after it exited or was killed).
    pub fn start(&mut self) -> Result<(), ProcessError> {
        if self.exit_status().is_none() {
            return Ok(());
        }
        self.state = State::Running(launch(&self.spec, &self.log)?);
        Ok(())
    }

    /// Graceful stop (SIGTERM, SIGKILL after `grace`) and start with the same ports and config.
    pub async fn restart(&mut self, grace: Duration) -> Result<(), ProcessError> {
        self.shutdown(grace).await?;
        self.start()
    }

    /// One readiness check; `Err` says why it is not ready.
    pub async fn check(&self) -> Result<(), String> {
        match &self.spec.health {
            Health::Http(url) => match http::get(url, Duration::from_secs(2)).await {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("{url}: HTTP {} {}", r.status, r.body.trim())),
                Err(e) => Err(format!("{url}: {e}")),
            },
            Health::LbServersUp(url) => match http::get(url, Duration::from_secs(2)).await {
                Ok(r) if r.status == 200 => servers_up(&r.body).map_err(|why| format!("{url}: {why}")),
                Ok(r) => Err(format!("{url}: HTTP {}", r.status)),
                Err(e) => Err(format!("{url}: {e}")),
            },
            Health::RedisPing(addr) => {
                let addr = *addr;
                tokio::task::spawn_blocking(move || redis_ping(addr))
                    .await
                    .map_err(|e| e.to_string())?
            }
            Health::Listening(addrs) => {
                for addr in addrs {
                    tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(|e| format!("{addr}: {e}"))?;
                }
                Ok(())
            }
        }
    }

    /// Polls `check` until it passes; fails at once if the process exits.
    pub async fn wait_healthy(&mut self, limit: Duration) -> Result<(), ProcessError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(ProcessError::Exited {
                    name: self.spec.name.clone(),
                    status,
                });
            }
            let last = match self.check().await {
                Ok(()) => return Ok(()),
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                return Err(ProcessError::Unhealthy {
                    name: self.spec.name.clone(),
                    waited: limit,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether an `/api/backends` body lists at least one server and all of them `up`.
fn servers_up(body: &str) -> Result<(), String> {
    let json: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("bad JSON: {e}"))?;
    let servers: Vec<&serde_json::Value> = json["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| b["servers"].as_array().into_iter().flatten())
        .collect();
    if servers.is_empty() {
        return Err("no servers listed".into());
    }
    let down: Vec<String> = servers
        .iter()
        // Like HAProxy, the lb lists servers `up` before their first check:
        // ready means a check has passed too (when the backend has checks).
        .filter(|s| s["state"] != "up" || (s["check"]["enabled"] == true && s["check"]["status"] != "L7OK"))
        .map(|s| format!("{} {} (check {})", s["name"], s["state"], s["check"]["status"]))
        .collect();
    if down.is_empty() {
        Ok(())
    } else {
        Err(format!("not up: {}", down.join(", ")))
    }
}

/// `PING` over a plain TCP connection; a loading Redis answers `-LOADING`.
fn redis_ping(addr: SocketAddr) -> Result<(), String> {
    let limit = Duration::from_secs(1);
    let mut tcp = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("redis {addr}: {e}"))?;
    tcp.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    tcp.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(tcp)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.starts_with("+PONG") {
        Ok(())
    } else {
        Err(format!("redis {addr}: {}", line.trim()))
    }
}

fn launch(spec: &ProcessSpec, log: &Arc<Mutex<String>>) -> Result<Child, ProcessError> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(&spec.program);
    let (stdout, stderr) = match &spec.output {
        Output::Forward | Output::Capture => (Stdio::piped(), Stdio::piped()),
        Output::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| ProcessError::Spawn {
                    name: format!("{} (log {})", spec.name, path.display()),
                    source,
                })?;
            let copy = file.try_clone().map_err(|source| ProcessError::Spawn {
                name: spec.name.clone(),
                source,
            })?;
            (Stdio::from(file), Stdio::from(copy))
        }
    };
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Own process group: a terminal's Ctrl-C reaches only the launcher, which stops
        // the children in order.
        .process_group(0);
    for var in &spec.env_remove {
        cmd.env_remove(var);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent. It makes
    // the kernel kill the child when the spawning thread dies, so even a launcher killed
    // with SIGKILL leaves nothing behind.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ProcessError::Missing {
            program: spec.program.display().to_string(),
            hint: match spec.kind {
                Kind::Redis => {
                    " — install it with `apt-get install redis-server` (`make up` does this)".into()
                }
                _ => " — build it with `cargo build --workspace --bins`".into(),
            },
        },
        _ => ProcessError::Spawn {
            name: spec.name.clone(),
            source,
        },
    })?;
    let sink = match spec.output {
        Output::Capture => Sink::Capture(log.clone()),
        _ => Sink::Forward(format!("[{}]", spec.name)),
    };
    if let Some(out) = child.stdout.take() {
        drain(sink.clone(), out);
    }
    if let Some(err) = child.stderr.take() {
        drain(sink, err);
    }
    Ok(child)
}

/// Where [`drain`] puts each line of a pipe.
#[derive(Clone)]
enum Sink {
    /// Printed to our stdout after this prefix.
    Forward(String),
    /// Appended to a process' captured log.
    Capture(Arc<Mutex<String>>),
}

/// Copies a child's output, one line at a time, to `sink`. A thread, not a
/// task: it must keep draining even when no runtime is polling.
fn drain(sink: Sink, pipe: impl Read + Send + 'static) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end();
                    match &sink {
                        Sink::Forward(prefix) => println!("{prefix} {text}"),
                        Sink::Capture(log) => {
                            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                            log.push_str(text);
                            log.push('\n');
                        }
                    }
                }
            }
        }
    });
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
