//! Shards (`[coap] threads`): one engine per thread, each with its own
//! `SO_REUSEPORT` sockets, dedup cache, DTLS sessions, broker connection and
//! current-thread runtime, so a datagram is read, answered and published on
//! one core without crossing threads.
//!
//! The kernel hashes each datagram's 4-tuple to one socket of a group, so
//! a device (one address, one port) always meets the same shard: its
//! retransmissions the same dedup cache, its DTLS records the same session,
//! its messages one broker connection in the order they came. What the
//! shards share is read-mostly and already safe across threads: the store's
//! in-memory views (devices, PSKs, templates), which every admin change and
//! every change followed from a shared store updates for all shards at
//! once; the store writer; the spool with `[mqtt] ack = "spool"`; the
//! latency histogram. Shard 0 runs on the caller's runtime, beside the admin
//! API; the others on threads of their own (decision 104).

use std::net::UdpSocket as StdUdpSocket;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use coapgate_dtls::{DtlsConfig, DtlsServer, Key};
use coapgate_endpoint::{Endpoint, EndpointConfig};
use coapgate_exchange::DedupCache;
use coapgate_gateway::Gateway;
use coapgate_mqtt::{Bridge, BridgeConfig, BridgeEvent};
use coapgate_spool::{SpoolEvent, SpoolHandle};
use coapgate_store::Store;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot, watch};

use crate::driver::Driver;
use crate::health::Dependencies;
use crate::metrics::Snapshot;
use crate::sink::{Shard, Sink};
use crate::writer::StoreWriter;
use crate::{ServerError, udp};

/// Each shard's part of an instance-wide bound: an equal share, rounded
/// up, and never below `floor`.
pub(crate) fn share(total: usize, shards: usize, floor: usize) -> usize {
    total.div_ceil(shards.max(1)).max(floor)
}

/// The engine's configuration for one of `shards` shards: the bounds
/// shared out.
pub(crate) fn engine_config(config: &EndpointConfig, shards: usize) -> EndpointConfig {
    let mut config = config.clone();
    config.max_pending = share(config.max_pending, shards, 1);
    config.dedup.max_entries = share(config.dedup.max_entries, shards, 1);
    config.dedup.max_bytes = share(
        config.dedup.max_bytes,
        shards,
        DedupCache::<()>::ENTRY_OVERHEAD,
    );
    config
}

/// The DTLS server's configuration for one of `shards` shards.
pub(crate) fn dtls_config(config: &DtlsConfig, shards: usize) -> DtlsConfig {
    let mut config = config.clone();
    config.max_sessions = share(config.max_sessions, shards, 1);
    config.max_handshakes = share(config.max_handshakes, shards, 1);
    config
}

/// The bridge's configuration for shard `index`: shard 0 keeps the
/// configured client id (an instance with one shard is what it always
/// was), shard `i` appends `-i`; the outbox holds the shard's share of
/// `max_pending`.
pub(crate) fn bridge_config(
    config: &BridgeConfig,
    index: usize,
    max_pending: usize,
) -> BridgeConfig {
    let mut config = config.clone();
    if index > 0 {
        config.client_id = format!("{}-{index}", config.client_id);
    }
    config.outbox_capacity = max_pending;
    config
}

/// The DTLS server of a shard, its keys read from the store's PSK map.
pub(crate) fn dtls_server(store: &Store, config: DtlsConfig) -> Result<DtlsServer, ServerError> {
    let psk_keys = store.psk_keys();
    let lookup = move |identity: &str| psk_keys.key(identity).map(|key| Key::new(key.to_vec()));
    Ok(DtlsServer::new(config, Arc::new(lookup))?)
}

/// The engine of a shard over the store's views, with a seed of its own
/// (message ids, tokens and the dedup hash differ between shards).
pub(crate) fn endpoint(store: &Store, mut config: EndpointConfig) -> Endpoint {
    config.seed = rand::random();
    let templates = store.clone();
    Endpoint::new(config, Arc::new(store.directory()))
        .with_bootstrap()
        .with_positions(Arc::new(store.clone()))
        .with_registrations(Arc::new(store.clone()))
        .with_templates(Arc::new(move || templates.active_template()))
}

/// Waits (up to `timeout`) for a new bridge's first connection, so that a
/// shard's first devices do not get 5.02 for a broker that is merely still
/// connecting. Whether it connected.
pub(crate) async fn first_connection(
    events: &mut mpsc::Receiver<BridgeEvent>,
    timeout: Duration,
) -> bool {
    tokio::time::timeout(timeout, async {
        while let Some(event) = events.recv().await {
            if matches!(event, BridgeEvent::Connected) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

/// What every shard's driver is built from, whichever thread it runs on.
#[derive(Clone)]
pub(crate) struct Common {
    pub(crate) store: Store,
    pub(crate) engine: EndpointConfig,
    pub(crate) dtls: DtlsConfig,
    pub(crate) writer: StoreWriter,
    pub(crate) shutdown_grace: Duration,
    pub(crate) publish_seconds: Histogram,
}

impl Common {
    /// A shard's driver: the engine and DTLS server given, or its own.
    pub(crate) fn driver(
        &self,
        index: usize,
        gateway: Gateway,
        sockets: (tokio::net::UdpSocket, tokio::net::UdpSocket),
        sink: Sink,
        scrapes: mpsc::Receiver<oneshot::Sender<Snapshot>>,
        deps: Option<Arc<Dependencies>>,
    ) -> Driver {
        let (answers, store_results) = mpsc::unbounded_channel();
        let mut gateway = gateway;
        gateway.handle_broker_state(sink.accepting());
        Driver {
            shard: index,
            gateway,
            coap: sockets.0,
            coaps: sockets.1,
            sink,
            writer: self.writer.clone(),
            answers,
            store_results,
            shutdown_grace: self.shutdown_grace,
            scrapes,
            publish_seconds: self.publish_seconds.clone(),
            deps,
            datagrams: 0,
        }
    }
}

/// Where a shard other than 0 sends its messages.
pub(crate) enum SinkParts {
    /// A bridge of its own, to start on its thread.
    Bridge {
        config: BridgeConfig,
        connect_timeout: Duration,
    },
    /// Its share of the instance's spool.
    Spool {
        spool: SpoolHandle,
        events: mpsc::UnboundedReceiver<SpoolEvent>,
    },
}

/// A shard other than 0, before its thread starts.
pub(crate) struct ShardParts {
    pub(crate) shard: Shard,
    pub(crate) coap: StdUdpSocket,
    pub(crate) coaps: StdUdpSocket,
    pub(crate) sink: SinkParts,
    pub(crate) scrapes: mpsc::Receiver<oneshot::Sender<Snapshot>>,
    pub(crate) common: Common,
}

/// What the shards on threads of their own are told by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Go {
    /// Bound, not yet serving ([`Server::bind`](crate::Server::bind)).
    Wait,
    /// Serve ([`Server::serve`](crate::Server::serve)).
    Serve,
    /// Stop reading, finish the pending work, stop.
    Stop,
}

/// A shard whose thread is starting.
pub(crate) struct Starting {
    started: oneshot::Receiver<Result<watch::Receiver<bool>, ServerError>>,
    thread: JoinHandle<()>,
}

/// A shard on its own thread, bound and connected, serving once told to.
pub(crate) struct Running {
    /// Its broker link, for `/healthz`.
    pub(crate) connection: watch::Receiver<bool>,
    pub(crate) thread: JoinHandle<()>,
}

impl Starting {
    /// Waits until the shard is ready to serve (its bridge has connected or
    /// `connect_timeout` passed), or for why it could not start.
    pub(crate) async fn started(self) -> Result<Running, ServerError> {
        match self.started.await {
            Ok(Ok(connection)) => Ok(Running {
                connection,
                thread: self.thread,
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ServerError::Panicked),
        }
    }
}

impl ShardParts {
    /// Starts the shard on a thread of its own: it registers its sockets,
    /// starts its bridge and waits for its first connection, then for
    /// `go`: it serves on [`Go::Serve`], and on [`Go::Stop`] (or once the
    /// sender is gone) finishes its pending work and stops its bridge.
    pub(crate) fn start(self, go: watch::Receiver<Go>) -> Result<Starting, ServerError> {
        let index = self.shard.index;
        let (started, report) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("coapgate-shard-{index}"))
            .spawn(move || self.run(started, go))
            .map_err(|source| ServerError::Io {
                what: format!("spawn shard {index}"),
                source,
            })?;
        Ok(Starting {
            started: report,
            thread,
        })
    }

    /// The shard's thread.
    fn run(
        self,
        started: oneshot::Sender<Result<watch::Receiver<bool>, ServerError>>,
        mut go: watch::Receiver<Go>,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(source) => {
                let _ = started.send(Err(ServerError::Io {
                    what: "start a shard's tokio runtime".into(),
                    source,
                }));
                return;
            }
        };
        runtime.block_on(async move {
            let driver = match self.build().await {
                Ok(driver) => driver,
                Err(error) => {
                    let _ = started.send(Err(error));
                    return;
                }
            };
            let _ = started.send(Ok(driver.sink.bridge().connection()));
            let serve = go
                .wait_for(|go| *go != Go::Wait)
                .await
                .is_ok_and(|go| *go == Go::Serve);
            let sink = if serve {
                driver
                    .run(async move {
                        let _ = go.wait_for(|go| *go == Go::Stop).await;
                    })
                    .await
            } else {
                driver.sink
            };
            sink.shutdown(Instant::now() + Duration::from_secs(1)).await;
        });
    }

    async fn build(self) -> Result<Driver, ServerError> {
        let Self {
            shard,
            coap,
            coaps,
            sink,
            scrapes,
            common,
        } = self;
        let sockets = (udp::register(coap)?, udp::register(coaps)?);
        let sink = match sink {
            SinkParts::Bridge {
                config,
                connect_timeout,
            } => {
                let (bridge, mut events) = Bridge::start(config)?;
                if !first_connection(&mut events, connect_timeout).await {
                    tracing::warn!(
                        shard = shard.index,
                        "MQTT broker not reachable yet; this shard's devices get 5.02 until it is"
                    );
                }
                Sink::Broker { bridge, events }
            }
            SinkParts::Spool { spool, events } => Sink::Spool {
                spool,
                events,
                shard,
            },
        };
        let gateway = Gateway::new(
            endpoint(&common.store, common.engine.clone()),
            dtls_server(&common.store, common.dtls.clone())?,
        );
        Ok(common.driver(shard.index, gateway, sockets, sink, scrapes, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_up_and_keep_their_floor() {
        assert_eq!(share(10, 1, 1), 10);
        assert_eq!(share(10, 4, 1), 3);
        assert_eq!(share(1, 4, 1), 1);
        assert_eq!(share(100, 4, 64), 64);
        assert_eq!(share(500_000, 16, 1), 31_250);
    }

    #[test]
    fn shard_zero_keeps_the_client_id() {
        let config = BridgeConfig::default();
        assert_eq!(bridge_config(&config, 0, 5).client_id, config.client_id);
        assert_eq!(
            bridge_config(&config, 3, 5).client_id,
            format!("{}-3", config.client_id)
        );
        assert_eq!(bridge_config(&config, 3, 5).outbox_capacity, 5);
    }
}
