use std::net::SocketAddr;
use std::time::Instant;

/// Identifies a DTLS session within the driver.
pub type SessionId = u64;

/// Identifies a publish between the engine and the driver.
pub type PublishId = u64;

/// Where a datagram came from, and where its answer goes.
///
/// It is also the peer half of the deduplication key: on plain CoAP the
/// source endpoint, on DTLS the session (RFC 7252 §4.5 with §9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    /// Plain CoAP over UDP from this address.
    Udp(SocketAddr),
    /// CoAP over a DTLS session with a peer at this address.
    Dtls {
        /// The peer's address.
        addr: SocketAddr,
        /// The session, as the driver numbers them.
        session: SessionId,
    },
}

impl Link {
    /// The peer's transport address.
    pub fn addr(&self) -> SocketAddr {
        match *self {
            Link::Udp(addr) | Link::Dtls { addr, .. } => addr,
        }
    }
}

/// A datagram the engine wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to: a UDP address, or into a DTLS session.
    pub to: Link,
    /// The CoAP message.
    pub payload: Vec<u8>,
}

/// A message the engine wants handed to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Report the outcome with this ID in
    /// [`Endpoint::handle_publish_result`](crate::Endpoint::handle_publish_result).
    pub id: PublishId,
    /// The MQTT topic.
    pub topic: String,
    /// The MQTT payload (the JSON envelope, or the raw bytes).
    pub payload: Vec<u8>,
    /// After this instant the engine has answered 5.04 and no longer cares;
    /// the driver should stop trying to deliver it.
    pub deadline: Instant,
}

/// The broker's verdict on a [`Publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishResult {
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) arrived: answer 2.04.
    Confirmed,
    /// The broker connection was down or refused the message: answer 5.02.
    Unavailable,
    /// Sent, but not confirmed by the deadline: answer 5.04.
    TimedOut,
}

/// Where the engine gets the active CoAP template (spec.md §5): `None` when
/// there is none or it is INACTIVE. Called once per telemetry message, so
/// implementations answer from memory.
pub trait TemplateSource: Send + Sync {
    /// The template to translate with now.
    fn active_template(&self) -> Option<std::sync::Arc<coapgate_translate::Template>>;
}

impl<F> TemplateSource for F
where
    F: Fn() -> Option<std::sync::Arc<coapgate_translate::Template>> + Send + Sync,
{
    fn active_template(&self) -> Option<std::sync::Arc<coapgate_translate::Template>> {
        self()
    }
}
