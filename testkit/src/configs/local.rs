//! The test layout of the local cluster: the committed app and subscriber
//! configs on free loopback ports, Redis on a free port, and what a test
//! changes on top, all as values.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use super::{committed, write, AppConfig, ConfigError, SubscriberConfig};
use crate::ports;

/// A change a test makes to a config value.
type Edit<T> = Arc<dyn Fn(&mut T) + Send + Sync>;

/// What a test changes in the written configs.
#[derive(Clone, Default)]
pub struct LocalOptions {
    /// Applied to both app configs.
    app: Vec<Edit<AppConfig>>,
    /// Applied to both subscriber configs.
    subscriber: Vec<Edit<SubscriberConfig>>,
    /// Apps (each with its subscriber) beyond the default two; see `apps`.
    apps: Option<usize>,
}

impl fmt::Debug for LocalOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalOptions")
            .field("app_edits", &self.app.len())
            .field("subscriber_edits", &self.subscriber.len())
            .field("apps", &self.app_count())
            .finish()
    }
}

impl LocalOptions {
    /// Changes both app configs, e.g. `|c| c.limits.max_connections = 4`.
    pub fn app(mut self, edit: impl Fn(&mut AppConfig) + Send + Sync + 'static) -> Self {
        self.app.push(Arc::new(edit));
        self
    }

    /// Changes both subscriber configs.
    pub fn subscriber(mut self, edit: impl Fn(&mut SubscriberConfig) + Send + Sync + 'static) -> Self {
        self.subscriber.push(Arc::new(edit));
        self
    }

    /// Runs `n` apps and subscribers instead of two; those past the
    /// committed two are made from `app1.toml` and `subscriber1.toml`.
    pub fn apps(mut self, n: usize) -> Self {
        self.apps = Some(n.max(1));
        self
    }

    /// How many apps (and subscribers) the layout has.
    pub fn app_count(&self) -> usize {
        self.apps.unwrap_or(2)
    }
}

/// The committed file that config `i` (1-based) of `kind` is made from:
/// its own for the committed two, the first one's beyond.
fn template(kind: &str, i: usize) -> String {
    format!("{kind}{}.toml", if i <= 2 { i } else { 1 })
}

/// Addresses of one app of a local cluster.
#[derive(Debug, Clone)]
pub struct AppInfo {
    /// Instance name, e.g. `app1`.
    pub name: String,
    /// Public listener.
    pub public: SocketAddr,
    /// Internal listener.
    pub internal: SocketAddr,
}

impl AppInfo {
    /// `ws://public/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.public)
    }

    /// `http://public`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.public)
    }

    /// `http://internal`.
    pub fn internal_url(&self) -> String {
        format!("http://{}", self.internal)
    }
}

/// Addresses of a local cluster whose configs were written on free ports.
#[derive(Debug, Clone)]
pub struct LocalLayout {
    /// Redis address (all configs point at it).
    pub redis: SocketAddr,
    /// app1, app2, ….
    pub apps: Vec<AppInfo>,
    /// subscriber1's, subscriber2's, … health listeners.
    pub subscribers: Vec<SocketAddr>,
    /// Internal bearer token (from the committed app1 config).
    pub token: String,
}

/// Writes `app1.toml`, `app2.toml`, `subscriber1.toml` and `subscriber2.toml`
/// (or as many as `opts.apps` asks for) into `dir`: the committed configs with free loopback ports, Redis on a free
/// port, and `opts` applied on top.
pub fn render_local(dir: &Path, opts: &LocalOptions) -> Result<LocalLayout, ConfigError> {
    let io = |e: std::io::Error| ConfigError::new(dir, e);
    let redis = ports::free_addr().map_err(io)?;
    let redis_url = format!("redis://{redis}/");
    let mut apps = Vec::new();
    let mut subscribers = Vec::new();
    let mut token = String::new();
    for i in 1..=opts.app_count() {
        let name = format!("app{i}");
        let info = AppInfo {
            name: name.clone(),
            public: ports::free_addr().map_err(io)?,
            internal: ports::free_addr().map_err(io)?,
        };
        let file = format!("{name}.toml");
        let mut app: AppConfig = committed(&template("app", i))?;
        if i == 1 {
            token = app.internal.token.clone().unwrap_or_default();
        }
        app.instance = name.clone();
        app.listen.public = info.public;
        app.listen.internal = info.internal;
        app.redis.url = redis_url.clone();
        opts.app.iter().for_each(|edit| edit(&mut app));
        write(&app, &dir.join(&file))?;

        let health = ports::free_addr().map_err(io)?;
        let file = format!("subscriber{i}.toml");
        let mut sub: SubscriberConfig = committed(&template("subscriber", i))?;
        sub.redis.url = redis_url.clone();
        sub.app.internal_url = info.internal_url();
        sub.listen.health = health;
        opts.subscriber.iter().for_each(|edit| edit(&mut sub));
        write(&sub, &dir.join(&file))?;
        apps.push(info);
        subscribers.push(health);
    }
    Ok(LocalLayout {
        redis,
        apps,
        subscribers,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configs::load;
    use std::time::Duration;

    #[test]
    fn written_configs_keep_the_committed_values_and_apply_edits() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LocalOptions::default()
            .app(|c| c.health.subscriber_max_age = Duration::from_secs(1))
            .subscriber(|c| c.queue.batch_max = 7);
        let layout = render_local(dir.path(), &opts).unwrap();
        let app: AppConfig = load(&dir.path().join("app2.toml")).unwrap();
        let committed_app: AppConfig = committed("app2.toml").unwrap();
        assert_eq!(app.listen.public, layout.apps[1].public);
        assert_eq!(app.redis.url, format!("redis://{}/", layout.redis));
        assert_eq!(app.health.subscriber_max_age, Duration::from_secs(1));
        assert_eq!(app.instance, committed_app.instance);
        assert_eq!(app.limits, committed_app.limits);
        let sub: SubscriberConfig = load(&dir.path().join("subscriber2.toml")).unwrap();
        assert_eq!(sub.app.internal_url, layout.apps[1].internal_url());
        assert_eq!(sub.listen.health, layout.subscribers[1]);
        assert_eq!(sub.queue.batch_max, 7);
        assert_eq!(layout.token, "local-dev-internal-token");
    }

    #[test]
    fn more_apps_are_made_from_the_first_ones_configs() {
        let dir = tempfile::tempdir().unwrap();
        let layout = render_local(dir.path(), &LocalOptions::default().apps(4)).unwrap();
        assert_eq!(layout.apps.len(), 4);
        assert_eq!(layout.subscribers.len(), 4);
        let app: AppConfig = load(&dir.path().join("app4.toml")).unwrap();
        assert_eq!(app.instance, "app4");
        assert_eq!(app.listen.public, layout.apps[3].public);
        let sub: SubscriberConfig = load(&dir.path().join("subscriber4.toml")).unwrap();
        assert_eq!(sub.app.internal_url, layout.apps[3].internal_url());
    }
}
