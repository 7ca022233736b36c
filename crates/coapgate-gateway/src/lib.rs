//! The sans-IO coapgate gateway: plain CoAP and CoAPS behind one state
//! machine and one output contract.
//!
//! [`Gateway`] owns the CoAP engine ([`coapgate_endpoint::Endpoint`]) and
//! the DTLS 1.2 PSK server ([`coapgate_dtls::DtlsServer`]) and does
//! everything between them that used to live in async driver code: it
//! feeds decrypted records to the engine, encrypts the engine's answers
//! into their sessions, turns each session's PSK identity into an
//! [`Iccid`] once, when the handshake completes, and decides for every
//! ClientHello with a valid cookie whether the address deserves a
//! handshake at all — before OpenSSL allocates anything for it (model:
//! quinn's `Incoming`). It performs no I/O and reads no clock, so a whole
//! CoAPS exchange runs in memory in tests.
//!
//! **The contract** (the engine's, one layer out): feed events with the
//! `handle_*` methods; after each, call [`Gateway::poll_output`] until it
//! returns [`Output::Timeout`], which names the instant to call
//! [`Gateway::handle_timeout`] next. A driver needs nothing but two UDP
//! sockets ([`Listener`]), a timer, an MQTT link and a store writer.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Instant, SystemTime};
//! use coapgate_dtls::{DtlsConfig, DtlsServer, Key};
//! use coapgate_endpoint::{Endpoint, EndpointConfig, PublishResult};
//! use coapgate_gateway::{Gateway, Listener, Output};
//! use coapgate_model::{Device, DeviceDirectory, DeviceEntry, DeviceStatus};
//!
//! struct OneDevice(Arc<Device>);
//! impl DeviceDirectory for OneDevice {
//!     fn by_ip(&self, ip: std::net::IpAddr) -> Option<DeviceEntry> {
//!         (ip == self.0.ip).then(|| self.0.entry())
//!     }
//! }
//! let device = Device {
//!     iccid: "8988280666000000000".parse().unwrap(),
//!     imsi: None,
//!     ip: "127.0.0.2".parse().unwrap(),
//!     status: DeviceStatus::Active,
//!     name: None,
//! };
//! let mut endpoint = Endpoint::new(EndpointConfig::default(), Arc::new(OneDevice(Arc::new(device))));
//! endpoint.handle_broker_state(true);
//! let psk = |identity: &str| (identity == "8988280666000000000").then(|| Key::new(b"aB3dEf7hIjKlMnOp".to_vec()));
//! let dtls = DtlsServer::new(DtlsConfig::default(), Arc::new(psk)).unwrap();
//! let mut gateway = Gateway::new(endpoint, dtls);
//!
//! // A plain CON POST /data "hi" from the device, message ID 7.
//! let request = [0x40, 0x02, 0x00, 0x07, 0xb4, b'd', b'a', b't', b'a', 0xff, b'h', b'i'];
//! let (now, from) = (Instant::now(), "127.0.0.2:40000".parse().unwrap());
//! gateway.handle_datagram(now, SystemTime::now(), Listener::Coap, from, &request);
//! let Output::Publish(publish) = gateway.poll_output() else { panic!("a publish") };
//! assert!(matches!(gateway.poll_output(), Output::Timeout(Some(_))), "no answer yet");
//!
//! gateway.handle_publish_result(now, publish.id, PublishResult::Confirmed);
//! let Output::Transmit(ack) = gateway.poll_output() else { panic!("the 2.04") };
//! assert_eq!((ack.listener, ack.to), (Listener::Coap, from));
//! assert_eq!(ack.payload, [0x60, 0x44, 0x00, 0x07]);
//! ```
//!
//! # Who gets a handshake
//!
//! A ClientHello without a valid cookie is answered statelessly by the
//! DTLS server. One with a valid cookie proves the source address is
//! return-routable; the gateway then accepts it only if a device with that
//! address is registered and ACTIVE (SIM-as-an-Identity: the PSK identity
//! must match that device on every request anyway). Any other address gets
//! no handshake slot, no `Ssl`, and no answer.
//! An accepted address then passes the DTLS server's per-address handshake
//! rate limit (`DtlsConfig::handshake_limit`), so only addresses of ACTIVE
//! devices ever get a token bucket.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use coapgate_dtls::{DtlsEvent, DtlsServer, DtlsStats};
use coapgate_endpoint::{
    Endpoint, EndpointStats, Link, Publish, PublishId, PublishResult, StoreResult, StoreWrite,
    StoreWriteId,
};
use coapgate_model::Iccid;

/// The two sockets a gateway speaks on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// Plain CoAP over UDP (5683).
    Coap,
    /// CoAP over DTLS (5684).
    Coaps,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// From which socket.
    pub listener: Listener,
    /// To whom.
    pub to: SocketAddr,
    /// One UDP payload (CoAP, or DTLS records).
    pub payload: Vec<u8>,
}

/// Everything the gateway wants done, one at a time from
/// [`Gateway::poll_output`]. Exhaustive, like the engine's
/// [`coapgate_endpoint::Output`]: an output a driver ignores is a device
/// that is never answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a datagram.
    Transmit(Datagram),
    /// Hand a message to the broker; report with
    /// [`Gateway::handle_publish_result`].
    Publish(Publish),
    /// Write to the store off the event loop; report with
    /// [`Gateway::handle_store_result`].
    Store(StoreWrite),
    /// Nothing more now: call [`Gateway::handle_timeout`] at this instant
    /// (`None`: no timer is set).
    Timeout(Option<Instant>),
}

/// The engine and the DTLS server as one sans-IO state machine. See the
/// [crate docs](crate).
///
/// The engine's outputs flow straight through [`poll_output`](Self::poll_output):
/// a plain datagram costs the gateway nothing but a match. Only what the
/// DTLS server produces (its flights, the records of encrypted answers)
/// waits in a queue of the gateway's own.
pub struct Gateway {
    endpoint: Endpoint,
    dtls: DtlsServer,
    /// DTLS datagrams to send, before the engine's next output.
    outputs: VecDeque<Output>,
    /// The clock of the last event (`None` before the first): a handshake
    /// accepted, or a record decrypted, while draining the DTLS server
    /// happens "now". The gateway reads no clock of its own.
    now: Option<Instant>,
    /// The receive time of the datagram being handled: the wall clock of
    /// the CoAP requests decrypted from it.
    wall: SystemTime,
}

impl Gateway {
    /// A gateway over this engine and this DTLS server.
    pub fn new(endpoint: Endpoint, dtls: DtlsServer) -> Self {
        Self {
            endpoint,
            dtls,
            outputs: VecDeque::new(),
            now: None,
            wall: SystemTime::UNIX_EPOCH,
        }
    }

    /// A datagram arrived on `listener` from `from`; `wall` is its receive
    /// time (the envelope's `received`, the `/bootstrap` clock).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        wall: SystemTime,
        listener: Listener,
        from: SocketAddr,
        data: &[u8],
    ) {
        self.now = Some(now);
        self.wall = wall;
        match listener {
            Listener::Coap => self
                .endpoint
                .handle_datagram(now, wall, Link::Udp(from), data),
            Listener::Coaps => {
                self.dtls.handle_datagram(now, from, data);
                self.drain_dtls();
            }
        }
    }

    /// The broker's verdict on a publish.
    pub fn handle_publish_result(&mut self, now: Instant, id: PublishId, result: PublishResult) {
        self.now = Some(now);
        self.endpoint.handle_publish_result(now, id, result);
    }

    /// The store's answer to a write.
    pub fn handle_store_result(&mut self, now: Instant, id: StoreWriteId, result: StoreResult) {
        self.now = Some(now);
        self.endpoint.handle_store_result(now, id, result);
    }

    /// The broker connection went up or down.
    pub fn handle_broker_state(&mut self, connected: bool) {
        self.endpoint.handle_broker_state(connected);
    }

    /// Time has come: the engine's and the DTLS server's timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        self.endpoint.handle_timeout(now);
        self.dtls.handle_timeout(now);
        self.drain_dtls();
    }

    /// The next thing to do; [`Output::Timeout`] once there is nothing else.
    pub fn poll_output(&mut self) -> Output {
        // Bounded: every round either returns or moves one engine output
        // into the DTLS server, and the engine's outputs are finite.
        loop {
            if let Some(output) = self.outputs.pop_front() {
                return output;
            }
            match self.endpoint.poll_output() {
                coapgate_endpoint::Output::Transmit(transmit) => match transmit.to {
                    Link::Udp(to) => {
                        return Output::Transmit(Datagram {
                            listener: Listener::Coap,
                            to,
                            payload: transmit.payload,
                        });
                    }
                    Link::Dtls { session, .. } => {
                        if let Err(error) = self.dtls.send(session, &transmit.payload) {
                            tracing::debug!(session, %error, "answer for a closed DTLS session dropped");
                        }
                        self.drain_dtls();
                    }
                },
                coapgate_endpoint::Output::Publish(publish) => return Output::Publish(publish),
                coapgate_endpoint::Output::Store(write) => return Output::Store(write),
                coapgate_endpoint::Output::Timeout(engine) => {
                    let next = [engine, self.dtls.poll_timeout()]
                        .into_iter()
                        .flatten()
                        .min();
                    return Output::Timeout(next);
                }
            }
        }
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.endpoint.poll_timeout(), self.dtls.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The engine's counters and gauges.
    pub fn endpoint_stats(&self) -> EndpointStats {
        self.endpoint.stats()
    }

    /// The DTLS server's counters and gauges.
    pub fn dtls_stats(&self) -> DtlsStats {
        self.dtls.stats()
    }

    /// Publishes and store writes not yet answered (what a graceful
    /// shutdown waits for).
    pub fn pending_work(&self) -> usize {
        self.endpoint.pending_work()
    }

    /// Takes everything the DTLS server has to say: its datagrams wait in
    /// `outputs`, decrypted records go into the engine (whose answers come
    /// out of [`poll_output`](Self::poll_output)).
    fn drain_dtls(&mut self) {
        while let Some(event) = self.dtls.poll_event() {
            self.on_dtls_event(event);
        }
    }

    fn on_dtls_event(&mut self, event: DtlsEvent) {
        match event {
            DtlsEvent::Incoming(incoming) => {
                let addr = incoming.addr();
                match self.now {
                    Some(now) if self.endpoint.serves(addr.ip()) => self.dtls.accept(now, incoming),
                    _ => {
                        tracing::debug!(%addr, "DTLS: no ACTIVE device has this address; no handshake");
                        self.dtls.refuse(incoming);
                    }
                }
            }
            DtlsEvent::Transmit { to, bytes } => {
                self.outputs.push_back(Output::Transmit(Datagram {
                    listener: Listener::Coaps,
                    to,
                    payload: bytes,
                }));
            }
            DtlsEvent::Established {
                session,
                addr,
                identity,
            } => match identity.parse::<Iccid>() {
                Ok(iccid) => {
                    tracing::debug!(session, %addr, %iccid, "DTLS session established");
                    self.endpoint.handle_session_established(session, iccid);
                }
                // A PSK lookup that knows only ICCIDs cannot let this
                // happen; never serve a session without one.
                Err(_) => {
                    tracing::debug!(session, %addr, "DTLS identity is no ICCID; session closed");
                    self.dtls.close(session);
                }
            },
            DtlsEvent::Data {
                session,
                addr,
                bytes,
            } => {
                // Records are decrypted only while a datagram is handled,
                // so `now` is that datagram's.
                if let Some(now) = self.now {
                    let link = Link::Dtls { addr, session };
                    self.endpoint.handle_datagram(now, self.wall, link, &bytes);
                }
            }
            DtlsEvent::Closed { session, reason } => {
                tracing::debug!(session, ?reason, "DTLS session closed");
                self.endpoint.handle_session_closed(session);
            }
        }
    }
}
