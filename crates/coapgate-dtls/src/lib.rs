//! A DTLS 1.2 PSK **server** for CoAPS, on OpenSSL, that performs no I/O
//! and reads no clock (model: quinn-proto, str0m).
//!
//! The caller owns the one UDP socket. It feeds every datagram to
//! [`DtlsServer::handle_datagram`], wakes the server at
//! [`DtlsServer::poll_timeout`] with [`DtlsServer::handle_timeout`], and
//! after **every** `handle_*`, [`send`](DtlsServer::send) or
//! [`close`](DtlsServer::close) drains [`DtlsServer::poll_event`] until it
//! returns `None`:
//!
//! ```no_run
//! # use std::{net::UdpSocket, sync::Arc, time::Instant};
//! # use coapgate_dtls::{DtlsConfig, DtlsEvent, DtlsServer, Key};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let socket = UdpSocket::bind("127.0.0.1:5684")?;
//! let psk = |identity: &str| (identity == "8988228066602306711").then(|| Key::new(b"secret".to_vec()));
//! let mut server = DtlsServer::new(DtlsConfig::default(), Arc::new(psk))?;
//! let mut buf = [0u8; 2048];
//! loop {
//!     let timeout = server.poll_timeout().map(|t| t.saturating_duration_since(Instant::now()));
//!     socket.set_read_timeout(timeout.filter(|d| !d.is_zero()))?;
//!     match socket.recv_from(&mut buf) {
//!         Ok((n, from)) => server.handle_datagram(Instant::now(), from, &buf[..n]),
//!         Err(_) => server.handle_timeout(Instant::now()),
//!     }
//!     while let Some(event) = server.poll_event() {
//!         match event {
//!             DtlsEvent::Incoming(incoming) => server.accept(Instant::now(), incoming),
//!             DtlsEvent::Transmit { to, bytes } => { socket.send_to(&bytes, to)?; }
//!             DtlsEvent::Data { session, bytes, .. } => { /* a CoAP message */ }
//!             _ => {}
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! # What happens to a datagram
//!
//! - A **ClientHello without a valid cookie** is answered statelessly
//!   ("cookie first, state second"): the server writes a HelloVerifyRequest
//!   itself, with `cookie = HMAC-SHA256(secret, address ‖ ClientHello
//!   parameters)` under a secret that rotates every
//!   [`DtlsConfig::cookie_rotation`] (the previous one is still accepted).
//!   No per-peer state is created, and the answer (60 bytes) is always
//!   smaller than the smallest ClientHello (67 bytes), so a spoofed source
//!   gets no amplification.
//! - A **ClientHello with a valid cookie** is handed to the caller as an
//!   [`Incoming`] (quinn's accept/refuse step): nothing exists for the peer
//!   yet. [`DtlsServer::refuse`] drops it; [`DtlsServer::accept`] creates
//!   the peer's OpenSSL `Ssl`, if the address is within
//!   [`DtlsConfig::handshake_limit`] (new handshakes a second per IP) and
//!   [`DtlsConfig::max_handshakes`] and [`DtlsConfig::max_sessions`]
//!   allow. The ClientHello then goes to OpenSSL once: through
//!   `DTLSv1_listen`, whose cookie callback only compares with the cookie
//!   already checked, and which numbers OpenSSL's messages and records to
//!   follow the client's second ClientHello (message_seq 1), as after its
//!   own cookie exchange. A ClientHello with any other message_seq (0, or
//!   2 and up after a refused cookie) is rare and takes the general path:
//!   the server first feeds OpenSSL cookie-less copies of it, discards the
//!   HelloVerifyRequests OpenSSL writes (with the *same* cookie, through
//!   the callbacks), then feeds the real one. Either way the DTLS 1.2
//!   transcript starts at that ClientHello, so the handshake is the one the
//!   client sees.
//! - Anything else goes to the peer's handshake or session, by source
//!   address; datagrams from addresses without either are dropped.
//!
//! A ClientHello from an address that has a session starts a new handshake
//! next to it, and only when that handshake completes does the new session
//! replace the old one (`Closed { reason: Replaced }`): a device that
//! rebooted gets in again, and a spoofed ClientHello cannot end a live
//! session.
//!
//! The PSK is looked up through [`PskLookup`] during every handshake; there
//! is no session cache and no ticket, so a changed key takes effect on the
//! next handshake. Keys are [`Key`]s: redacted in `Debug`, zeroed on drop.
//!
//! # Bounds
//!
//! New handshakes per source IP ≤ `handshake_limit` (a token bucket per
//! address, kept only while not full). Half-open handshakes ≤ `max_handshakes`, each dropped after
//! `handshake_timeout`; sessions ≤ `max_sessions`, each closed after
//! `idle_timeout` without an authenticated datagram from its peer. Queues
//! between the server and OpenSSL hold a few datagrams at most. Cookie-less
//! ClientHellos cost no memory at all.
//!
//! OpenSSL's own retransmission timer reads the real clock; everything else
//! (deadlines, idle expiry, cookie rotation) runs on the `now` passed in.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod cookie;
mod error;
mod ffi;
mod key;
mod pipe;
mod record;
mod server;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

use std::net::SocketAddr;

pub use config::DtlsConfig;
pub use error::DtlsError;
pub use key::{Key, PskLookup};
pub use pipe::Pipe;
pub use server::DtlsServer;

/// Identifies one DTLS session (and, before it completes, its handshake).
/// Numbered by each [`DtlsServer`] from 1; never reused by that server.
pub type SessionId = u64;

/// A ClientHello with a valid cookie from `addr`: a return-routable peer
/// that wants a handshake (model: quinn's `Incoming`). Nothing has been
/// allocated for it yet. Pass it to [`DtlsServer::accept`] to start the
/// handshake (the caps still apply), or to [`DtlsServer::refuse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    addr: SocketAddr,
    datagram: Vec<u8>,
    cookie: cookie::Cookie,
}

impl Incoming {
    /// The peer's address, proven by the cookie round trip.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// What the server wants done, or tells about. Drain with
/// [`DtlsServer::poll_event`] after every call that changes its state.
///
/// Deliberately exhaustive: a new kind of event should make every driver's
/// `match` fail to compile until it handles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtlsEvent {
    /// A peer proved its address and wants a handshake: decide with
    /// [`DtlsServer::accept`] or [`DtlsServer::refuse`].
    Incoming(Incoming),
    /// Send these bytes to this address (handshake flights,
    /// HelloVerifyRequest, alerts, encrypted application data).
    Transmit {
        /// Destination.
        to: SocketAddr,
        /// One UDP payload.
        bytes: Vec<u8>,
    },
    /// A handshake completed; the PSK identity (ICCID text) the client used.
    Established {
        /// The new session.
        session: SessionId,
        /// The peer's address.
        addr: SocketAddr,
        /// The PSK identity the client presented and the lookup accepted.
        identity: String,
    },
    /// Decrypted application data (one CoAP message) from a session.
    Data {
        /// The session it came through.
        session: SessionId,
        /// The peer's address.
        addr: SocketAddr,
        /// The plaintext of one record.
        bytes: Vec<u8>,
    },
    /// A session ended. Every `Established` is followed by exactly one
    /// `Closed` for the same session.
    Closed {
        /// The session that ended.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer sent close_notify.
    PeerClosed,
    /// No authenticated datagram from the peer for `idle_timeout`.
    Idle,
    /// The same address completed a new handshake (the device rebooted).
    Replaced,
    /// A fatal alert or protocol error.
    Error,
    /// The caller closed it with [`DtlsServer::close`].
    Local,
}

/// Counters and gauges, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DtlsStats {
    /// Established sessions now.
    pub sessions: usize,
    /// Handshakes in progress now (each holds an OpenSSL `Ssl`).
    pub handshakes_in_progress: usize,
    /// Handshakes that completed.
    pub handshakes_ok: u64,
    /// Handshakes that failed: unknown identity, wrong key, fatal alert,
    /// protocol error, or abandoned for a newer ClientHello from the same
    /// address.
    pub handshakes_failed: u64,
    /// Handshakes dropped at `handshake_timeout` or after OpenSSL gave up
    /// retransmitting.
    pub handshakes_timed_out: u64,
    /// ClientHellos with a valid cookie refused because `max_handshakes`
    /// or `max_sessions` was reached.
    pub handshakes_refused_over_cap: u64,
    /// ClientHellos with a valid cookie the caller refused
    /// ([`DtlsServer::refuse`]), e.g. from an address no device has.
    pub handshakes_refused: u64,
    /// ClientHellos with a valid cookie dropped because their address was
    /// over [`DtlsConfig::handshake_limit`].
    pub handshakes_rate_limited: u64,
    /// HelloVerifyRequests sent (statelessly).
    pub cookies_sent: u64,
    /// Datagrams dropped before reaching OpenSSL: malformed, from an
    /// address without handshake or session, or only application data for
    /// a handshake.
    pub datagrams_dropped: u64,
}

/// Adds another server's counters and gauges (the DTLS servers of several
/// shards reported as one).
impl std::ops::AddAssign for DtlsStats {
    fn add_assign(&mut self, other: Self) {
        let Self {
            sessions,
            handshakes_in_progress,
            handshakes_ok,
            handshakes_failed,
            handshakes_timed_out,
            handshakes_refused_over_cap,
            handshakes_refused,
            handshakes_rate_limited,
            cookies_sent,
            datagrams_dropped,
        } = other;
        self.sessions += sessions;
        self.handshakes_in_progress += handshakes_in_progress;
        self.handshakes_ok += handshakes_ok;
        self.handshakes_failed += handshakes_failed;
        self.handshakes_timed_out += handshakes_timed_out;
        self.handshakes_refused_over_cap += handshakes_refused_over_cap;
        self.handshakes_refused += handshakes_refused;
        self.handshakes_rate_limited += handshakes_rate_limited;
        self.cookies_sent += cookies_sent;
        self.datagrams_dropped += datagrams_dropped;
    }
}
