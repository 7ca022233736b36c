//! What the server depends on — the store, its change feed, the broker —
//! and whether each answers: for `/healthz` (spec.md §6) and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coapgate_admin::{BrokerHealth, Health, HealthSource, SpoolHealth, StoreHealth};
use coapgate_spool::SpoolHandle;
use coapgate_store::{FollowStatus, Follower, Store};
use tokio::sync::watch;

/// The store and the broker in use, shared by the admin API and the driver.
pub(crate) struct Dependencies {
    pub(crate) store: Store,
    /// The `[store] url`, password removed.
    pub(crate) store_url: String,
    /// The store answered its last probe ([`probe_store_every`]).
    pub(crate) store_up: AtomicBool,
    /// Other instances' changes, reaching this one's views.
    pub(crate) follower: Follower,
    /// `mqtt://host:port`, `mqtts://…` or `embedded://ip:port`.
    pub(crate) broker_url: String,
    /// Each shard's broker link (one, the spool's, with `ack = "spool"`).
    pub(crate) broker: Vec<watch::Receiver<bool>>,
    /// The store-and-forward spool, with `[mqtt] ack = "spool"`.
    pub(crate) spool: Option<SpoolHandle>,
}

impl Dependencies {
    pub(crate) fn follow_status(&self) -> FollowStatus {
        self.follower.status()
    }
}

impl HealthSource for Dependencies {
    fn health(&self) -> Health {
        let follow = self.follower.status();
        Health {
            store: StoreHealth {
                backend: self.store.backend().to_owned(),
                url: self.store_url.clone(),
                up: self.store_up.load(Ordering::Relaxed),
                following: follow.following && follow.connected,
            },
            broker: BrokerHealth {
                url: self.broker_url.clone(),
                connected: self.broker.iter().all(|link| *link.borrow()),
            },
            spool: self.spool.as_ref().map(|spool| {
                let status = spool.status();
                SpoolHealth {
                    path: spool.path().display().to_string(),
                    messages: status.messages,
                    bytes: status.bytes,
                    max_bytes: status.max_bytes,
                    writable: status.writable,
                }
            }),
        }
    }
}

/// Keeps `store_up` saying whether the store answers a trivial query
/// (always, for SQLite; PostgreSQL may be down), off the event loop; a
/// change is logged.
pub(crate) async fn probe_store_every(deps: Arc<Dependencies>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let backend = deps.store.backend();
    loop {
        tick.tick().await;
        let probe = deps.store.clone();
        let was_up = deps.store_up.load(Ordering::Relaxed);
        let answered = match tokio::task::spawn_blocking(move || probe.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                if was_up {
                    tracing::warn!(%error, backend, "store unreachable; known devices are served from memory");
                }
                false
            }
            Err(_) => false,
        };
        if answered && !was_up {
            tracing::info!(backend, "store reachable again");
        }
        deps.store_up.store(answered, Ordering::Relaxed);
    }
}
