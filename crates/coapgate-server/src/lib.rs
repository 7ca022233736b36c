//! The coapgate tokio driver: sockets, timers, the MQTT bridge and the store
//! around the sans-IO [`coapgate_endpoint::Endpoint`].
//!
//! Embed the whole server (model: mini-redis):
//!
//! ```no_run
//! # async fn demo() -> Result<(), coapgate_server::ServerError> {
//! let config = coapgate_server::Config::from_toml(
//!     "[store]\nurl = \"sqlite::memory:\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"",
//! )?;
//! coapgate_server::run(config, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! Without `[mqtt] url`, the server starts an embedded broker (rumqttd)
//! when built with the cargo feature `embedded-broker` (the `coapgate`
//! binary is), and refuses to start otherwise. An `mqtts://` url needs
//! the cargo feature `tls` (the binary has it too).
//!
//! Or bind first to learn the addresses (port 0 picks a free one), then serve:
//! [`Server::bind`], [`Server::coap_addr`], [`Server::serve`]; or run it on a
//! thread of its own from code that is not async: [`BackgroundServer`].
//!
//! One task owns each engine. It waits on the UDP sockets, the bridge's
//! events and the engine's next timer; after every event it drains the
//! engine's transmits (to the socket) and publishes (to the bridge), as the
//! engine's contract requires. A publish the bridge cannot take is reported
//! back to the engine at once as unavailable (5.02). With `[coap] threads`
//! above 1 there is one such engine per thread, each with its own sockets
//! on the same ports (`SO_REUSEPORT`); see the `shard` module.

#![forbid(unsafe_code)]

mod background;
mod batch;
mod config;
mod driver;
mod health;
mod metrics;
mod shard;
mod sink;
mod steer;
mod udp;
mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coapgate_dtls::DtlsServer;
use coapgate_gateway::Gateway;
use coapgate_mqtt::Bridge;
#[cfg(feature = "embedded-broker")]
use coapgate_mqtt::EmbeddedBroker;
use coapgate_spool::Spool;
use coapgate_store::{Follower, Store};
use prometheus_client::metrics::histogram::Histogram;
use secrecy::ExposeSecret;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Snapshot;
use crate::shard::{Common, Go, Running, ShardParts, SinkParts};
use crate::sink::{Shard, Sink};

pub use background::BackgroundServer;
pub use coapgate_endpoint::PayloadFormat;
pub use config::{
    AckMode, AdminConfig, CoapConfig, CoapsConfig, Config, ConfigError, DeviceSeed,
    MQTT_PASSWORD_ENV, MqttConfig, PositionSeed, SecretString, StoreConfig,
};
pub use steer::shard_of;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is not acceptable (the error names the key).
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The store could not be opened or seeded.
    #[error("store: {0}")]
    Store(#[from] coapgate_store::StoreError),
    /// The MQTT link or the embedded broker could not be set up.
    #[error("mqtt: {0}")]
    Mqtt(#[from] coapgate_mqtt::MqttError),
    /// The spool (`[mqtt] ack = "spool"`) could not be opened.
    #[error("spool: {0}")]
    Spool(#[from] coapgate_spool::SpoolError),
    /// The DTLS server could not be set up (OpenSSL refused).
    #[error("dtls: {0}")]
    Dtls(#[from] coapgate_dtls::DtlsError),
    /// The server's thread panicked ([`BackgroundServer`]).
    #[error("the server thread panicked")]
    Panicked,
    /// The server's thread did not bind within this long
    /// ([`BackgroundServer::start`]).
    #[error("the server did not bind within {0:?}")]
    StartTimeout(Duration),
    /// A socket could not be bound or configured.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A server with its sockets bound and its broker link started, not yet
/// serving.
pub struct Server {
    config: Config,
    store: Store,
    /// Shard 0's sockets (the other shards', on the same ports, are theirs).
    coap: std::net::UdpSocket,
    coap_addr: SocketAddr,
    coaps: std::net::UdpSocket,
    /// Shard 0's DTLS server (built here, so that OpenSSL's refusal of the
    /// configuration is an error of `bind`).
    dtls: DtlsServer,
    coaps_addr: SocketAddr,
    /// Shard 0's bridge, alone or behind the spool.
    sink: Sink,
    /// Shard 0's end of the scrape channel.
    scrapes: mpsc::Receiver<oneshot::Sender<Snapshot>>,
    /// What every shard is built from.
    common: Common,
    /// The shards on threads of their own, bound and waiting for `go`.
    others: Vec<Running>,
    go: watch::Sender<Go>,
    metrics: MetricsHandle,
    admin: tokio::net::TcpListener,
    admin_addr: SocketAddr,
    /// `/healthz`: every listener bound, the store open, and the broker
    /// connected at least once — or the spool open (docs/decisions.md).
    ready: Arc<AtomicBool>,
    /// Other instances' changes to a shared store, reaching this one.
    follower: Follower,
    /// The broker in use, for `/healthz` (no password).
    broker_url: String,
    #[cfg(feature = "embedded-broker")]
    _broker: Option<EmbeddedBroker>,
}

/// Asks the running server for its metrics (Prometheus/OpenMetrics text).
/// Cheap to clone; the numbers are taken by each shard's event loop, so
/// each shard's are exact at the instant it answers.
#[derive(Clone)]
pub struct MetricsHandle {
    /// One per shard, shard 0 first.
    scrapes: Vec<mpsc::Sender<oneshot::Sender<Snapshot>>>,
    /// Shared by the shards.
    publish_seconds: Histogram,
}

impl coapgate_admin::MetricsSource for MetricsHandle {
    fn render(&self) -> std::pin::Pin<Box<dyn Future<Output = String> + Send>> {
        let handle = self.clone();
        Box::pin(async move { handle.render().await })
    }

    fn content_type(&self) -> &'static str {
        Self::CONTENT_TYPE
    }
}

impl MetricsHandle {
    /// The exposition text now, every shard's numbers added up; empty if
    /// the server has stopped.
    pub async fn render(&self) -> String {
        let mut answers = Vec::with_capacity(self.scrapes.len());
        for shard in &self.scrapes {
            let (reply, answer) = oneshot::channel();
            if shard.send(reply).await.is_ok() {
                answers.push(answer);
            }
        }
        let mut total: Option<Snapshot> = None;
        for answer in answers {
            let Ok(snapshot) = answer.await else { continue };
            match &mut total {
                Some(total) => total.merge(snapshot),
                None => total = Some(snapshot),
            }
        }
        total.map_or_else(String::new, |total| {
            metrics::render(total, &self.publish_seconds)
        })
    }

    /// The content type of [`render`](Self::render)'s text.
    pub const CONTENT_TYPE: &'static str = metrics::CONTENT_TYPE;
}

impl Server {
    /// Validates the configuration ([`Config::validate`]), opens the store
    /// and seeds the configured devices (on tokio's blocking pool, never on
    /// the caller's runtime thread), starts the embedded broker when no
    /// `[mqtt] url` is given (with the cargo feature `embedded-broker`;
    /// without it, a missing `mqtt.url` is a [`ServerError::Config`] naming
    /// it), starts the bridge and waits (up to `mqtt.connect_timeout`) for
    /// its first connection, and binds the CoAP, CoAPS and admin sockets.
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        config.validate()?;
        let (config, store, follower) = tokio::task::spawn_blocking(move || {
            let store = open_and_seed(&config)?;
            let follower = store.follow()?;
            Ok::<_, ServerError>((config, store, follower))
        })
        .await
        .map_err(|_| ServerError::Panicked)??;

        #[cfg(feature = "embedded-broker")]
        let broker = match config.mqtt.url {
            Some(_) => None,
            // Start-up waits for the listener: blocking, so not on the
            // caller's runtime thread.
            None => {
                let bind = config.mqtt.embedded_bind;
                Some(
                    tokio::task::spawn_blocking(move || EmbeddedBroker::start(bind))
                        .await
                        .map_err(|_| ServerError::Panicked)??,
                )
            }
        };
        #[cfg(feature = "embedded-broker")]
        let embedded = broker.as_ref().map(EmbeddedBroker::addr);
        #[cfg(not(feature = "embedded-broker"))]
        let embedded = match config.mqtt.url {
            Some(_) => None,
            None => {
                return Err(ServerError::Config(ConfigError::new(
                    "mqtt.url",
                    "required: this build has no embedded broker \
                     (cargo feature `embedded-broker` of coapgate-server)",
                )));
            }
        };
        let broker_url = match (&config.mqtt.url, embedded) {
            (Some(url), _) => {
                let scheme = if url.is_tls() { "mqtts" } else { "mqtt" };
                format!("{scheme}://{}", host_port(url.host(), url.port()))
            }
            (None, Some(addr)) => format!("embedded://{addr}"),
            (None, None) => String::new(),
        };
        let shards = config.coap.shards();
        let mut coap = udp::bind_group(
            config.coap.bind,
            shards,
            config.coap.recv_buffer,
            config.coap.send_buffer,
        )?;
        let coap_addr = local_addr(&coap, "coap")?;
        // The DTLS listener shares the buffer sizes of the plain one.
        let mut coaps = udp::bind_group(
            config.coaps.bind,
            shards,
            config.coap.recv_buffer,
            config.coap.send_buffer,
        )?;
        let coaps_addr = local_addr(&coaps, "coaps")?;
        let common = Common {
            store: store.clone(),
            engine: shard::engine_config(&config.coap.engine, shards),
            dtls: shard::dtls_config(&config.coaps.dtls, shards),
            writer: writer::StoreWriter::start(store.clone())?,
            shutdown_grace: config.coap.shutdown_grace,
            publish_seconds: metrics::publish_histogram(),
        };
        let dtls = shard::dtls_server(&store, common.dtls.clone())?;
        let (scrapes_tx, mut scrapes): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| mpsc::channel(16)).unzip();

        let bridge_config = config.mqtt.bridge(embedded);
        let max_pending = common.engine.max_pending;
        let (bridge, events) = Bridge::start(shard::bridge_config(&bridge_config, 0, max_pending))?;
        // Shard 0's sink, and what the other shards send their messages to.
        let (sink, others) = match config.mqtt.spool() {
            // The spool answers devices whether the broker is there or not.
            Some(spool_config) => {
                let path = spool_config.path.display().to_string();
                let (spool, events) = Spool::start(spool_config, bridge, events)?;
                let status = spool.status();
                tracing::info!(
                    %path,
                    messages = status.messages,
                    max_bytes = status.max_bytes,
                    "store-and-forward: devices are answered once their message is in the spool"
                );
                let (events, shared) = sink::share_spool(events, shards);
                let others: Vec<SinkParts> = shared
                    .into_iter()
                    .map(|events| SinkParts::Spool {
                        spool: spool.clone(),
                        events,
                    })
                    .collect();
                let shard = Shard {
                    index: 0,
                    count: shards,
                };
                (
                    Sink::Spool {
                        spool,
                        events,
                        shard,
                    },
                    others,
                )
            }
            None => {
                let others = (1..shards)
                    .map(|index| SinkParts::Bridge {
                        config: shard::bridge_config(&bridge_config, index, max_pending),
                        connect_timeout: config.mqtt.connect_timeout,
                    })
                    .collect();
                (Sink::Broker { bridge, events }, others)
            }
        };
        // The other shards start (and wait for their broker links) beside
        // shard 0's wait for its own.
        let (go, go_rx) = watch::channel(Go::Wait);
        let mut starting = Vec::with_capacity(shards.saturating_sub(1));
        for (index, sink) in others.into_iter().enumerate().rev() {
            let (Some(coap), Some(coaps), Some(scrapes)) = (coap.pop(), coaps.pop(), scrapes.pop())
            else {
                break;
            };
            let parts = ShardParts {
                shard: Shard {
                    index: index + 1,
                    count: shards,
                },
                coap,
                coaps,
                sink,
                scrapes,
                common: common.clone(),
            };
            starting.push(parts.start(go_rx.clone())?);
        }
        let (Some(coap), Some(coaps), Some(scrapes)) = (coap.pop(), coaps.pop(), scrapes.pop())
        else {
            return Err(ServerError::Config(ConfigError::new(
                "coap.threads",
                "no shard to run",
            )));
        };
        let mut sink = sink;
        let ready = match &mut sink {
            Sink::Spool { .. } => true,
            // Wait for the first connection so the first devices do not
            // get 5.02 for a broker that is merely still connecting.
            Sink::Broker { events, .. } => {
                let connected = shard::first_connection(events, config.mqtt.connect_timeout).await;
                if !connected {
                    tracing::warn!(
                        "MQTT broker not reachable yet; telemetry gets 5.02 and /healthz 503 until it is"
                    );
                }
                connected
            }
        };
        let mut running = Vec::with_capacity(starting.len());
        for shard in starting.into_iter().rev() {
            running.push(shard.started().await?);
        }
        tracing::info!(%coap_addr, %coaps_addr, shards, "CoAP and CoAPS listening");
        let admin = tokio::net::TcpListener::bind(config.admin.bind)
            .await
            .map_err(|source| ServerError::Io {
                what: format!("bind the admin API on {}", config.admin.bind),
                source,
            })?;
        let admin_addr = admin.local_addr().map_err(|source| ServerError::Io {
            what: "admin socket address".into(),
            source,
        })?;
        tracing::info!(%admin_addr, "admin API listening");
        Ok(Self {
            admin,
            admin_addr,
            ready: Arc::new(AtomicBool::new(ready)),
            follower,
            broker_url,
            scrapes,
            metrics: MetricsHandle {
                scrapes: scrapes_tx,
                publish_seconds: common.publish_seconds.clone(),
            },
            config,
            store,
            coap,
            coap_addr,
            coaps,
            dtls,
            coaps_addr,
            sink,
            common,
            others: running,
            go,
            #[cfg(feature = "embedded-broker")]
            _broker: broker,
        })
    }

    /// The bound admin API address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// A handle to read the server's metrics while it runs.
    pub fn metrics(&self) -> MetricsHandle {
        self.metrics.clone()
    }

    /// The bound CoAPS (DTLS) address.
    pub fn coaps_addr(&self) -> SocketAddr {
        self.coaps_addr
    }

    /// The bound CoAP address.
    pub fn coap_addr(&self) -> SocketAddr {
        self.coap_addr
    }

    /// The device store (shared with the running server).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` completes, then stops reading datagrams,
    /// answers what the broker confirms within the grace period, and
    /// returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Self {
            config,
            store,
            coap,
            coaps,
            dtls,
            sink,
            scrapes,
            common,
            others,
            go,
            metrics,
            admin,
            ready,
            follower,
            broker_url,
            ..
        } = self;
        // Not ready until the broker has connected once (bind waited for it).
        let broker_ready = (!ready.load(Ordering::Acquire)).then(|| {
            let mut link = sink.bridge().connection();
            let ready = ready.clone();
            tokio::spawn(async move {
                if link.wait_for(|up| *up).await.is_ok() {
                    ready.store(true, Ordering::Release);
                }
            })
        });
        let mut links = vec![sink.bridge().connection()];
        if matches!(sink, Sink::Broker { .. }) {
            links.extend(others.iter().map(|shard| shard.connection.clone()));
        }
        let deps = Arc::new(health::Dependencies {
            store: store.clone(),
            store_url: coapgate_store::redacted_url(&config.store.url),
            // It was open a moment ago; the prober keeps this current.
            store_up: AtomicBool::new(true),
            follower,
            broker_url,
            broker: links,
            spool: match &sink {
                Sink::Spool { spool, .. } => Some(spool.clone()),
                Sink::Broker { .. } => None,
            },
        });
        let gateway = Gateway::new(shard::endpoint(&store, common.engine.clone()), dtls);
        let sockets = (udp::register(coap)?, udp::register(coaps)?);
        let driver = common.driver(0, gateway, sockets, sink, scrapes, Some(deps.clone()));
        go.send_replace(Go::Serve);
        // Positions from templates are written behind, once a second.
        let flusher = tokio::spawn(flush_positions_every(store.clone(), POSITION_FLUSH));
        // Whether the store answers, for /metrics and /healthz.
        let prober = tokio::spawn(health::probe_store_every(deps.clone(), STORE_PROBE));
        // The admin API runs beside the engine until the engine stops.
        let (admin_stop, admin_stopped) = oneshot::channel::<()>();
        let state = coapgate_admin::AdminState {
            store: store.clone(),
            token: config
                .admin
                .token
                .as_ref()
                .map(|token| coapgate_admin::Token::new(token.expose_secret().to_owned())),
            metrics: Arc::new(metrics.clone()),
            ready: ready.clone(),
            health: Some(deps),
        };
        let api = axum::serve(admin, coapgate_admin::router(state)).with_graceful_shutdown(async {
            let _ = admin_stopped.await;
        });
        let api = tokio::spawn(async move {
            if let Err(error) = api.await {
                tracing::error!(%error, "admin API stopped");
            }
        });
        let sink = driver
            .run(async {
                shutdown.await;
                go.send_replace(Go::Stop);
            })
            .await;
        // The other shards finish their pending work within the same grace.
        for shard in others {
            let joined = tokio::task::spawn_blocking(move || shard.thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("a shard's thread panicked");
            }
        }
        // Last: the spool, which the other shards may have used until now.
        sink.shutdown(std::time::Instant::now() + Duration::from_secs(1))
            .await;
        if let Some(task) = broker_ready {
            task.abort();
        }
        ready.store(false, Ordering::Relaxed);
        let _ = admin_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), api).await;
        flusher.abort();
        prober.abort();
        flush_positions(store).await;
        Ok(())
    }
}

/// How often positions recorded from templates are written to the store.
const POSITION_FLUSH: Duration = Duration::from_secs(1);

async fn flush_positions_every(store: Store, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        flush_positions(store.clone()).await;
    }
}

/// How often the store is asked whether it answers.
const STORE_PROBE: Duration = Duration::from_secs(2);

async fn flush_positions(store: Store) {
    match tokio::task::spawn_blocking(move || store.flush_positions()).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::error!(%error, "could not write positions"),
        Err(error) => tracing::error!(%error, "position writer failed"),
    }
}

/// `host:port`, an IPv6 host in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn local_addr(group: &[std::net::UdpSocket], what: &str) -> Result<SocketAddr, ServerError> {
    let Some(socket) = group.first() else {
        return Err(ServerError::Config(ConfigError::new(
            "coap.threads",
            "no shard to run",
        )));
    };
    socket.local_addr().map_err(|source| ServerError::Io {
        what: format!("{what} socket address"),
        source,
    })
}

/// Opens the store and seeds the configured devices. Blocking.
///
/// Before writing anything, checks that no seeded address belongs to a
/// device in the store that the configuration does not list: seeding would
/// otherwise stop half-way at that entry, with the ones before it written.
fn open_and_seed(config: &Config) -> Result<Store, ServerError> {
    use coapgate_model::DeviceDirectory as _;

    let store = coapgate_store::open(&config.store.url)?;
    let view = store.directory();
    for (index, seed) in config.devices.iter().enumerate() {
        let Some(holder) = view.by_ip(seed.ip) else {
            continue;
        };
        let listed = config.devices.iter().any(|d| d.iccid == holder.iccid);
        if holder.iccid != seed.iccid && !listed {
            return Err(ServerError::Config(ConfigError::new(
                format!("device[{index}].ip"),
                format!(
                    "{} belongs to device {} in the store; remove that device or seed another address (nothing was seeded)",
                    seed.ip, holder.iccid
                ),
            )));
        }
    }
    for seed in &config.devices {
        store.put_device(seed.clone().into())?;
        if let Some(record) = seed.psk_record()? {
            store.set_psk(&seed.iccid, &record)?;
        }
        if let Some(position) = seed.position()? {
            store.put_position(&seed.iccid, &position)?;
        }
    }
    if !config.devices.is_empty() {
        tracing::info!(
            count = config.devices.len(),
            "devices from the configuration seeded"
        );
    }
    Ok(store)
}

/// Binds and serves until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    Server::bind(config).await?.serve(shutdown).await
}
