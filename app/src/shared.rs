//! The parts of a running instance that both listeners and every socket
//! task use, built once from the config.

use std::sync::Arc;

use crate::config::{Config, InternalToken};
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
    /// The loaded config.
    pub config: Config,
    /// The internal listener's bearer token.
    pub token: InternalToken,
    /// Redis.
    pub store: Store,
    /// Local room fan-out.
    pub hub: Arc<Hub>,
    /// Cluster-wide online counts.
    pub presence: Presence,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// `/healthz` inputs.
    pub health: Health,
    /// Shutdown phase.
    pub drain: Drain,
    /// Open-socket counter.
    pub slots: Arc<Slots>,
    /// When the subscriber last posted.
    pub subscriber: Arc<SubscriberClock>,
}

impl Shared {
    /// Wires the parts; does not touch the network yet.
    pub fn new(config: Config, token: InternalToken) -> Result<Arc<Shared>, StoreError> {
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
            drain: drain.clone(),
        };
        Ok(Arc::new(Shared {
            config,
            token,
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
