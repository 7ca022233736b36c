//! The crate's single error type.

/// Everything that can go wrong in this crate.
///
/// No variant ever carries the broker password: URL errors describe the
/// problem, never echo the URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttError {
    /// The broker URL could not be understood (the text says why; the URL itself is not repeated).
    #[error("invalid MQTT broker URL: {0}")]
    InvalidUrl(String),
    /// `mqtts://` (or a TLS setting) was asked for, but this build has no
    /// TLS support for the broker link (coapgate-mqtt's cargo feature `tls`).
    #[error(
        "TLS not built in: mqtts:// URLs are not supported by this build \
         (cargo feature `tls` of coapgate-mqtt), use mqtt://"
    )]
    TlsNotBuiltIn,
    /// A TLS setting of the broker link is not usable: a file that cannot
    /// be read or parsed, a key that does not belong to its certificate, no
    /// system roots. The text names the file, never a key's content.
    #[error("invalid MQTT TLS configuration: {field}: {reason}")]
    Tls {
        /// The setting, as `[mqtt]` names it (`ca_file`, `cert_file`, `key_file`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid MQTT configuration: {field}: {reason}")]
    InvalidConfig {
        /// The field, as [`BridgeConfig`](crate::BridgeConfig) names it
        /// (`bind` for the embedded broker's address).
        field: &'static str,
        /// What is wrong with its value.
        reason: &'static str,
    },
    /// The outbox already holds `outbox_capacity` unconfirmed publishes.
    #[error("MQTT outbox is full")]
    OutboxFull,
    /// The broker connection is down; nothing was queued.
    #[error("MQTT broker not connected")]
    NotConnected,
    /// The bridge is shutting down or gone; nothing was queued.
    #[error("MQTT bridge is closed")]
    Closed,
    /// A publish with this id is still in the outbox.
    #[error("publish id {0} is already in the outbox")]
    DuplicateId(u64),
    /// The topic cannot be published to (empty, wildcard, NUL, or longer than 65535 bytes).
    #[error("invalid MQTT topic: {0}")]
    InvalidTopic(&'static str),
    /// The PUBLISH packet would exceed the configured maximum packet size.
    #[error("MQTT packet of {size} bytes exceeds the maximum of {max} bytes")]
    PacketTooLarge {
        /// Encoded size of the PUBLISH packet.
        size: usize,
        /// The configured `max_packet_size`.
        max: usize,
    },
    /// An I/O error while starting the embedded broker.
    #[error("embedded broker I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The embedded broker did not come up (the text says why).
    #[error("embedded broker failed to start: {0}")]
    BrokerStart(String),
}
