use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use coapgate_bootstrap::{PskRecord, PskUpdate};
use coapgate_model::Iccid;
use coapgate_topic::PublishTopic;

/// Identifies a publish between the engine and the driver.
pub type PublishId = u64;

/// Identifies a store write between the engine and the driver.
pub type StoreWriteId = u64;

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
        /// The session: any number the driver gives it, unique while it
        /// lives (the DTLS server's session ID).
        session: u64,
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

/// Everything the engine wants done, one at a time from
/// [`Endpoint::poll_output`](crate::Endpoint::poll_output) (model: str0m's
/// `Output`).
///
/// Deliberately exhaustive: a new kind of output must make every driver's
/// `match` fail to compile until it handles it, because an output dropped
/// on the floor is a device that is never answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a datagram.
    Transmit(Transmit),
    /// Hand a message to the broker; report the outcome with
    /// [`handle_publish_result`](crate::Endpoint::handle_publish_result).
    Publish(Publish),
    /// Write to the store, off the event loop; report the outcome with
    /// [`handle_store_result`](crate::Endpoint::handle_store_result).
    Store(StoreWrite),
    /// Nothing more to do now: call
    /// [`handle_timeout`](crate::Endpoint::handle_timeout) at this instant
    /// (`None`: no timer is set). Always the last output of a drain.
    Timeout(Option<Instant>),
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
    pub topic: PublishTopic,
    /// The MQTT payload (the JSON envelope, or the raw bytes).
    pub payload: Vec<u8>,
    /// After this instant the engine has answered 5.04 and no longer cares;
    /// the driver should stop trying to deliver it.
    pub deadline: Instant,
}

/// The broker's verdict on a [`Publish`]. Drivers construct it; only the
/// engine matches on it, so it may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishResult {
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) arrived: answer 2.04.
    Confirmed,
    /// The broker connection was down or refused the message: answer 5.02.
    Unavailable,
    /// Sent, but not confirmed by the deadline: answer 5.04.
    TimedOut,
    /// Not taken now, and nothing of it kept — a full store-and-forward
    /// spool, or one whose disk failed: answer 5.03 Service Unavailable
    /// with Max-Age (come back later).
    TryLater,
}

/// A write the engine wants made durable, off the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreWrite {
    /// Report the outcome with this ID in
    /// [`Endpoint::handle_store_result`](crate::Endpoint::handle_store_result).
    pub id: StoreWriteId,
    /// What to write.
    pub request: StoreRequest,
    /// After this instant the engine has answered without the result
    /// (5.03 with Max-Age); the driver may drop the write if it has not
    /// started it.
    pub deadline: Instant,
}

/// What a [`StoreWrite`] asks for.
///
/// Exhaustive for the same reason as [`Output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreRequest {
    /// `GET /bootstrap`: in one transaction, read the device's PSK record,
    /// [`apply`](PskUpdate::apply) the update, store the result and make it
    /// the device's DTLS key; answer [`StoreResult::Psk`] with it.
    Bootstrap(PskUpdate),
    /// The broker confirmed the device's one-time
    /// `DEVICE_FIRST_TIME_REGISTERED` event: record it durably, so that no
    /// restart publishes it again, and make
    /// [`Registrations::is_registered`](coapgate_model::Registrations::is_registered)
    /// say so; answer [`StoreResult::Done`].
    MarkRegistered {
        /// The device.
        iccid: Iccid,
        /// When it was first seen.
        at: SystemTime,
    },
}

/// The store's answer to a [`StoreWrite`]. Drivers construct it; only the
/// engine matches on it, so it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreResult {
    /// The write is durable (for [`StoreRequest::MarkRegistered`]).
    Done,
    /// The PSK record as stored (for [`StoreRequest::Bootstrap`]).
    Psk(PskRecord),
    /// The store cannot take the write now — locked, busy, unreachable —
    /// and nothing was written; the device may try again later (5.03 with
    /// Max-Age).
    Unavailable,
    /// The write failed for another reason (5.00); the driver logs why.
    Failed,
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
