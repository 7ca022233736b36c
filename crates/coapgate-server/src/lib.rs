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
//! One task owns the engine. It waits on the UDP socket, the bridge's events
//! and the engine's next timer; after every event it drains the engine's
//! transmits (to the socket) and publishes (to the bridge), as the engine's
//! contract requires. A publish the bridge cannot take is reported back to
//! the engine at once as unavailable (5.02).

#![forbid(unsafe_code)]

mod background;
mod config;
mod driver;
mod health;
mod metrics;
mod sink;
mod udp;
mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coapgate_dtls::{DtlsServer, Key};
use coapgate_endpoint::Endpoint;
use coapgate_gateway::Gateway;
#[cfg(feature = "embedded-broker")]
use coapgate_mqtt::EmbeddedBroker;
use coapgate_mqtt::{Bridge, BridgeEvent};
use coapgate_spool::Spool;
use coapgate_store::{Follower, Store};
use secrecy::ExposeSecret;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::sink::Sink;

pub use background::BackgroundServer;
pub use coapgate_endpoint::PayloadFormat;
pub use config::{
    AckMode, AdminConfig, CoapConfig, CoapsConfig, Config, ConfigError, DeviceSeed,
    MQTT_PASSWORD_ENV, MqttConfig, PositionSeed, SecretString, StoreConfig,
};

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
    coap: UdpSocket,
    coap_addr: SocketAddr,
    coaps: UdpSocket,
    dtls: DtlsServer,
    coaps_addr: SocketAddr,
    /// The bridge, alone or behind the spool.
    sink: Sink,
    scrapes: mpsc::Receiver<tokio::sync::oneshot::Sender<String>>,
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
/// Cheap to clone; the answer is taken by the event loop, so the numbers
/// are exact at that instant.
#[derive(Clone)]
pub struct MetricsHandle {
    scrapes: mpsc::Sender<tokio::sync::oneshot::Sender<String>>,
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
    /// The exposition text now; empty if the server has stopped.
    pub async fn render(&self) -> String {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.scrapes.send(reply).await.is_err() {
            return String::new();
        }
        answer.await.unwrap_or_default()
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
        let bridge_config = config.mqtt.bridge(embedded);
        let (bridge, mut events) = Bridge::start(bridge_config)?;
        let (sink, ready) = match config.mqtt.spool() {
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
                (Sink::Spool { spool, events }, true)
            }
            None => {
                // Wait for the first connection so the first devices do not
                // get 5.02 for a broker that is merely still connecting.
                let connected = tokio::time::timeout(config.mqtt.connect_timeout, async {
                    while let Some(event) = events.recv().await {
                        if matches!(event, BridgeEvent::Connected) {
                            return true;
                        }
                    }
                    false
                })
                .await
                .unwrap_or(false);
                if !connected {
                    tracing::warn!(
                        "MQTT broker not reachable yet; telemetry gets 5.02 and /healthz 503 until it is"
                    );
                }
                (Sink::Broker { bridge, events }, connected)
            }
        };

        let coap = udp::bind_any_family(
            config.coap.bind,
            config.coap.recv_buffer,
            config.coap.send_buffer,
        )?;
        let coap_addr = local_addr(&coap, "coap")?;
        // The DTLS listener shares the buffer sizes of the plain one.
        let coaps = udp::bind_any_family(
            config.coaps.bind,
            config.coap.recv_buffer,
            config.coap.send_buffer,
        )?;
        let coaps_addr = local_addr(&coaps, "coaps")?;
        let psk_keys = store.psk_keys();
        let lookup = move |identity: &str| psk_keys.key(identity).map(|key| Key::new(key.to_vec()));
        let dtls = DtlsServer::new(config.coaps.dtls.clone(), Arc::new(lookup))?;
        tracing::info!(%coap_addr, %coaps_addr, "CoAP and CoAPS listening");
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
        let (scrapes_tx, scrapes) = mpsc::channel(16);
        Ok(Self {
            admin,
            admin_addr,
            ready: Arc::new(AtomicBool::new(ready)),
            follower,
            broker_url,
            scrapes,
            metrics: MetricsHandle {
                scrapes: scrapes_tx,
            },
            config,
            store,
            coap,
            coap_addr,
            coaps,
            dtls,
            coaps_addr,
            sink,
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
        let mut engine_config = self.config.coap.engine.clone();
        engine_config.seed = rand::random();
        let store = self.store.clone();
        let templates = self.store.clone();
        let mut endpoint = Endpoint::new(engine_config, Arc::new(self.store.directory()))
            .with_bootstrap()
            .with_positions(Arc::new(store.clone()))
            .with_registrations(Arc::new(store.clone()))
            .with_templates(Arc::new(move || templates.active_template()));
        endpoint.handle_broker_state(self.sink.accepting());
        // Not ready until the broker has connected once (bind waited for it).
        let broker_ready = (!self.ready.load(Ordering::Acquire)).then(|| {
            let mut link = self.sink.bridge().connection();
            let ready = self.ready.clone();
            tokio::spawn(async move {
                if link.wait_for(|up| *up).await.is_ok() {
                    ready.store(true, Ordering::Release);
                }
            })
        });
        let (writer, store_results) = writer::StoreWriter::start(store.clone())?;
        let deps = Arc::new(health::Dependencies {
            store: store.clone(),
            store_url: coapgate_store::redacted_url(&self.config.store.url),
            // It was open a moment ago; the prober keeps this current.
            store_up: AtomicBool::new(true),
            follower: self.follower,
            broker_url: self.broker_url,
            broker: self.sink.bridge().connection(),
            spool: match &self.sink {
                Sink::Spool { spool, .. } => Some(spool.clone()),
                Sink::Broker { .. } => None,
            },
        });
        let driver = driver::Driver {
            gateway: Gateway::new(endpoint, self.dtls),
            coap: self.coap,
            coaps: self.coaps,
            sink: self.sink,
            writer,
            store_results,
            shutdown_grace: self.config.coap.shutdown_grace,
            scrapes: self.scrapes,
            publish_seconds: metrics::publish_histogram(),
            deps: deps.clone(),
        };
        // Positions from templates are written behind, once a second.
        let flusher = tokio::spawn(flush_positions_every(store.clone(), POSITION_FLUSH));
        // Whether the store answers, for /metrics and /healthz.
        let prober = tokio::spawn(health::probe_store_every(deps.clone(), STORE_PROBE));
        // The admin API runs beside the engine until the engine stops.
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let state = coapgate_admin::AdminState {
            store: store.clone(),
            token: self
                .config
                .admin
                .token
                .as_ref()
                .map(|token| coapgate_admin::Token::new(token.expose_secret().to_owned())),
            metrics: Arc::new(self.metrics.clone()),
            ready: self.ready.clone(),
            health: Some(deps),
        };
        let api =
            axum::serve(self.admin, coapgate_admin::router(state)).with_graceful_shutdown(async {
                let _ = admin_stopped.await;
            });
        let api = tokio::spawn(async move {
            if let Err(error) = api.await {
                tracing::error!(%error, "admin API stopped");
            }
        });
        driver.run(shutdown).await;
        if let Some(task) = broker_ready {
            task.abort();
        }
        self.ready.store(false, Ordering::Relaxed);
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

fn local_addr(socket: &UdpSocket, what: &str) -> Result<SocketAddr, ServerError> {
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
