//! Sans-IO CoAP exchange state (RFC 7252 §4): everything about message IDs
//! that needs remembering over time, and nothing else.
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
//!
//! Nothing here reads a clock, a random source or a socket: every call takes
//! `now: Instant`, random jitter is a parameter, and the caller sends bytes.
//! That is what lets a test step through 247 seconds in microseconds.

#![forbid(unsafe_code)]

mod dedup;
mod mid;
mod params;
mod retransmit;

pub use dedup::{DedupCache, DedupLimits, DedupStats, Lookup, MessageKind, Ticket};
pub use mid::MessageIds;
pub use params::TransmissionParams;
pub use retransmit::{Retransmissions, RetransmitEvent};
