//! The parts of a running instance that both listeners and every socket
//! task use, built once from the config.

use std::sync::Arc;

use crate::auth::Auth;
use crate::config::{Config, InternalToken, Loaded};
use crate::drain::Drain;
use crate::health::{Health, SubscriberClock};
use crate::hub::Hub;
use crate::limits::Slots;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::store::{Store, StoreError};

/// Everything a request handler may need.
#[derive(Debug)]
pub struct Shared {
    /// The config file as loaded at start; handlers read the limits, the
    /// drain window and the instance name from it.
    pub config: Config,
    /// The internal listener's bearer token.
    pub token: InternalToken,
    /// How WebSocket requests are authenticated: `routes` asks it before
    /// every upgrade.
    pub auth: Auth,
    /// Redis access: sessions, history, appends and presence counts.
    pub store: Store,
    /// Local room fan-out: hands the subscriber's batches to this instance's
    /// sockets.
    pub hub: Arc<Hub>,
    /// Cluster-wide online counts.
    pub presence: Presence,
    /// Served on `/metrics`; the store and the hub hold clones and count
    /// into it too.
    pub metrics: Arc<Metrics>,
    /// What `/healthz` checks; holds clones of the store, slots, drain and
    /// subscriber clock.
    pub health: Health,
    /// Where shutdown stands: `routes` refuses new sockets once it is
    /// `Closing`, and each socket watches it for its turn to close.
    pub drain: Drain,
    /// Open-socket counter: each socket task holds a `Slot` for its life, and
    /// `max_connections` caps it.
    pub slots: Arc<Slots>,
    /// When the subscriber last posted: the internal listener sets it,
    /// `/healthz` reads it.
    pub subscriber: Arc<SubscriberClock>,
}

impl Shared {
    /// Wires the parts; does not touch the network yet.
    pub fn new(loaded: Loaded) -> Result<Arc<Shared>, StoreError> {
        let Loaded { config, token, auth } = loaded;
        let metrics = Arc::new(Metrics::new());
        let store = Store::new(&config.redis, metrics.clone())?;
        let hub = Hub::new(config.limits.send_queue, metrics.clone());
        let presence = Presence::new(hub.clone(), store.clone(), config.instance.clone());
        let slots = Slots::new(config.limits.max_connections);
        let subscriber = Arc::new(SubscriberClock::default());
        let drain = Drain::default();
        let health = Health {
            instance: config.instance.clone(),
            store: store.clone(),
            slots: slots.clone(),
            threshold: config.limits.threshold(),
            subscriber: subscriber.clone(),
            subscriber_max_age: config.health.subscriber_max_age,
            redis_timeout: config.health.redis_timeout,
            drain: drain.clone(),
        };
        Ok(Arc::new(Shared {
            config,
            token,
            auth,
            store,
            hub,
            presence,
            metrics,
            health,
            drain,
            slots,
            subscriber,
        }))
    }
}
