//! Sans-IO CoAP exchange state (RFC 7252 §4): everything about message IDs
//! and request rates that needs remembering over time, and nothing else.
//!
//! - [`TransmissionParams`]: the RFC 7252 §4.8 transmission parameters and
//!   the lifetimes derived from them (EXCHANGE_LIFETIME 247 s, NON_LIFETIME
//!   145 s with the defaults).
//! - [`DedupCache`]: which (peer, message ID) pairs were seen, and the exact
//!   response bytes to replay for a duplicate. Bounded in entries and bytes.
//! - [`Retransmissions`]: confirmable messages we sent (separate responses),
//!   retransmitted with exponential back-off until acknowledged, reset, or
//!   MAX_RETRANSMIT is reached.
//! - [`MessageIds`]: the message-ID generator for messages we originate.
//! - [`RateLimiter`]: one token bucket per key (a device, an address), for
//!   4.29 Too Many Requests (RFC 8516) and the DTLS handshake limit.
//!
//! Nothing here reads a clock, a random source or a socket: every call takes
//! `now: Instant`, random jitter is a parameter, and the caller sends bytes.
//! That is what lets a test step through 247 seconds in microseconds.
//!
//! A confirmable request, its retransmission, and the same message ID once
//! EXCHANGE_LIFETIME has passed:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//! use coapgate_exchange::{DedupCache, DedupLimits, Lookup, MessageKind, TransmissionParams};
//!
//! let params = TransmissionParams::default();
//! assert_eq!(params.exchange_lifetime(), Duration::from_secs(247));
//! let mut dedup = DedupCache::new(
//!     params.exchange_lifetime(),
//!     params.non_lifetime(),
//!     DedupLimits::default(),
//! );
//! let device: SocketAddr = "10.0.0.7:5683".parse().unwrap();
//! let t0 = Instant::now();
//!
//! // First arrival of CON message 0x1234: process it, then record the ACK.
//! let Lookup::New(ticket) = dedup.lookup(t0, &device, 0x1234, MessageKind::Confirmable) else {
//!     panic!("a new message");
//! };
//! let ack = [0x60, 0x44, 0x12, 0x34]; // ACK 2.04 Changed, message ID 0x1234
//! assert!(dedup.respond(&device, 0x1234, ticket, &ack));
//!
//! // The device did not hear the ACK and retransmits: replay the same bytes.
//! let again = dedup.lookup(t0 + Duration::from_secs(2), &device, 0x1234, MessageKind::Confirmable);
//! assert_eq!(again, Lookup::Replay(&ack));
//!
//! // After EXCHANGE_LIFETIME the message ID may be reused for a new message.
//! let later = t0 + params.exchange_lifetime();
//! dedup.expire(later);
//! assert!(dedup.is_empty());
//! assert!(matches!(
//!     dedup.lookup(later, &device, 0x1234, MessageKind::Confirmable),
//!     Lookup::New(_)
//! ));
//! ```

#![forbid(unsafe_code)]

pub mod clock;
mod dedup;
mod mid;
mod params;
mod ratelimit;
mod retransmit;

#[cfg(feature = "serde")]
/// A [`Duration`](std::time::Duration) as a number of seconds (an integer
/// or a decimal), for `#[serde(with = "coapgate_exchange::secs_f64")]`.
/// Negative, infinite and NaN values are refused.
pub mod secs_f64 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// The duration as fractional seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Fractional seconds as a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

pub use dedup::{DedupCache, DedupLimits, DedupStats, Lookup, MessageKind, Ticket};
pub use mid::MessageIds;
pub use params::{InvalidParam, TransmissionParams};
pub use ratelimit::{DEFAULT_MAX_KEYS, InvalidRateLimit, RateLimit, RateLimiter, whole_seconds};
pub use retransmit::{Retransmissions, RetransmitEvent};
