//! MQTT for coapgate: the bridge that forwards accepted device messages to a
//! broker, and an embedded broker for zero-setup installs and tests.
//!
//! * [`Bridge::start`] spawns the bridge on the current tokio runtime. The
//!   server hands it [`Outgoing`] messages through a [`BridgeHandle`]
//!   (`publish` never blocks) and learns from the [`BridgeEvent`] stream, per
//!   message, when the broker confirmed it (QoS 1 PUBACK or QoS 2 PUBCOMP) or
//!   that its deadline passed. Only then may the device get its 2.04 (or 5.04).
//! * The bridge keeps its own outbox of every unconfirmed publish, because
//!   rumqttc drops in-flight and queued publishes when it reconnects with a
//!   clean session. After a reconnect every outbox entry still within its
//!   deadline is sent again, exactly once. The module docs of the bridge
//!   explain why that is correct given rumqttc's internals.
//! * While the broker is down, `publish` answers [`MqttError::NotConnected`]
//!   at once (the device gets 5.02); the bridge reconnects forever with
//!   exponential back-off between `reconnect_delay_min` and
//!   `reconnect_delay_max`.
//! * `mqtts://` brokers: with the cargo feature `tls`, the bridge speaks TLS
//!   through rustls with the ring crypto provider (chosen explicitly; no
//!   aws-lc-rs). It trusts the system's roots or the CA certificates of a
//!   [`TlsConfig`], and may present a client certificate. A certificate it
//!   does not trust is a connection failure like any other: logged in plain
//!   words with the broker's address, retried with back-off. Without the
//!   feature an `mqtts://` URL is [`MqttError::TlsNotBuiltIn`].
//! * `EmbeddedBroker` runs rumqttd (MQTT 3.1.1) on its own threads; only
//!   with the cargo feature `embedded-broker` (off by default: rumqttd and
//!   its dependencies are big, and a bridge to an external broker needs
//!   none of it).
//!
//! ```no_run
//! # async fn demo() -> Result<(), coapgate_mqtt::MqttError> {
//! use coapgate_mqtt::{Bridge, BridgeConfig, BridgeEvent, Outgoing};
//! use std::time::{Duration, Instant};
//!
//! let (handle, mut events) = Bridge::start(BridgeConfig::from_url("mqtt://127.0.0.1:1883")?)?;
//! while let Some(ev) = events.recv().await {
//!     if ev == BridgeEvent::Connected {
//!         break;
//!     }
//! }
//! handle.publish(Outgoing {
//!     id: 1,
//!     topic: "8988280666000000000/test".into(),
//!     payload: "hello".into(),
//!     deadline: Instant::now() + Duration::from_secs(5),
//! })?;
//! // ... wait for BridgeEvent::Delivered { id: 1, .. } or Expired { id: 1 }
//! handle.shutdown(Instant::now() + Duration::from_secs(2)).await;
//! # Ok(()) }
//! ```
//!
//! Secrets: the broker password is never logged, and `Debug` of
//! [`BridgeConfig`] redacts it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod bridge;
#[cfg(feature = "embedded-broker")]
mod broker;
mod config;
mod error;
mod tls;

pub use bridge::{Bridge, BridgeEvent, BridgeHandle, Outgoing};
#[cfg(feature = "embedded-broker")]
pub use broker::{EMBEDDED_MAX_CONNECTIONS, EMBEDDED_MAX_PAYLOAD_SIZE, EmbeddedBroker};
pub use config::{BridgeConfig, BrokerUrl, DEFAULT_MAX_PACKET_SIZE, Password, Qos};
pub use error::MqttError;
pub use tls::TlsConfig;
