//! An embedded MQTT 3.1.1 broker (rumqttd), for installs without a broker
//! and for tests.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use tracing::{error, info};

use crate::MqttError;

/// Most client connections the embedded broker accepts. rumqttd preallocates
/// router tables per connection slot, so this is kept modest.
pub const EMBEDDED_MAX_CONNECTIONS: usize = 256;

/// Largest MQTT remaining length the embedded broker accepts: room for a
/// 64 KiB bridge packet (the bridge's default `max_packet_size`).
pub const EMBEDDED_MAX_PAYLOAD_SIZE: usize = 64 * 1024;

/// In-memory log per subscribed filter: segments of this many bytes ...
const SEGMENT_SIZE: usize = 1024 * 1024;
/// ... and at most this many of them (older messages are dropped for subscribers that lag).
const SEGMENT_COUNT: usize = 4;

/// How long [`EmbeddedBroker::start`] waits for the listener to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// A running rumqttd broker (MQTT 3.1.1, plain TCP, anonymous, state in memory).
///
/// rumqttd has no shutdown API: the broker's threads (router, listener) run
/// until the process exits, and dropping this value does not stop them. Start
/// one per process (or per test binary) and keep it.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    _thread: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Start rumqttd on its own thread(s), listening on `bind` (v4 MQTT 3.1.1); return once the port accepts TCP connections (retry connect up to a bound, rumqttd has no readiness signal), or an error.
    ///
    /// `bind` needs an explicit port: rumqttd cannot report the port it got
    /// for port 0. The address is test-bound first, so a port already in use
    /// is an [`MqttError::Io`] rather than a silent connection to someone
    /// else's listener. Waits at most 5 s.
    pub fn start(bind: SocketAddr) -> Result<EmbeddedBroker, MqttError> {
        if bind.port() == 0 {
            return Err(MqttError::InvalidConfig {
                field: "bind",
                reason: "the embedded broker needs an explicit port (rumqttd cannot report port 0's choice)",
            });
        }
        // Fail early and clearly when the address is taken.
        drop(TcpListener::bind(bind)?);

        let config = broker_config(bind);
        let thread = std::thread::Builder::new()
            .name("rumqttd-start".to_owned())
            .spawn(move || {
                // Spawns the router thread, then the listener thread, then
                // blocks joining the listener; returns only if it dies.
                let mut broker = Broker::new(config);
                match broker.start() {
                    Ok(()) => error!("embedded MQTT broker stopped"),
                    Err(e) => error!(error = %e, "embedded MQTT broker failed"),
                }
            })?;

        let probe = probe_addr(bind);
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
                break;
            }
            if thread.is_finished() {
                return Err(MqttError::BrokerStart(
                    "rumqttd exited during start-up (see logs)".to_owned(),
                ));
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(MqttError::BrokerStart(format!(
                    "nothing accepts connections on {bind} after {READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        info!(%bind, "embedded MQTT broker listening");
        Ok(EmbeddedBroker {
            addr: bind,
            _thread: thread,
        })
    }

    /// The address the broker listens on (as given to [`start`](Self::start)).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The address to connect to for `bind` (an unspecified IP becomes loopback).
fn probe_addr(bind: SocketAddr) -> SocketAddr {
    match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bind.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bind.port())
        }
        _ => bind,
    }
}

fn broker_config(bind: SocketAddr) -> Config {
    let server = ServerSettings {
        name: "coapgate-v4".to_owned(),
        listen: bind,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: EMBEDDED_MAX_PAYLOAD_SIZE,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: EMBEDDED_MAX_CONNECTIONS,
            max_outgoing_packet_count: 200,
            max_segment_size: SEGMENT_SIZE,
            max_segment_count: SEGMENT_COUNT,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    }
}
