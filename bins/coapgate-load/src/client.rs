//! One simulated modem ([`Device`]): a CoAP client over its own UDP socket
//! or DTLS session ([`Link`]) that keeps up to `concurrency` requests
//! outstanding.
//!
//! A confirmable request is retransmitted by `coapgate-exchange`'s
//! [`Retransmissions`] (RFC 7252 §4.2 back-off from the run's
//! [`TransmissionParams`](coapgate_exchange::TransmissionParams), jitter
//! from a [`SmallRng`]) until an ACK or RST stops it; after an empty ACK the
//! device waits the response timeout for the separate response, which it
//! acknowledges. Message IDs come from [`MessageIds`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coapgate_codec::{self as codec, MessageType};
use coapgate_exchange::{MessageIds, Retransmissions, RetransmitEvent};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::LoadConfig;
use crate::dtls::Session;
use crate::report::DeviceStats;
use crate::request::{Request, token_of};
use crate::schedule::Schedule;

/// The largest datagram the generator reads.
pub(crate) const MAX_DATAGRAM: usize = 2048;

/// Message IDs one device socket can use before it would have to reuse one
/// within EXCHANGE_LIFETIME (which coapgate would answer from its cache).
const MESSAGE_IDS: u64 = 1 << 16;

/// Datagrams read after a wake-up without waiting again.
const READ_BATCH: usize = 64;

/// How a device reaches the server.
pub(crate) enum Link {
    /// Plain CoAP over its own UDP socket.
    Plain(UdpSocket),
    /// CoAP over an established DTLS session (connected socket).
    Dtls(Box<Session>),
}

impl Link {
    fn socket(&self) -> &UdpSocket {
        match self {
            Link::Plain(socket) => socket,
            Link::Dtls(session) => &session.socket,
        }
    }
}

/// A request awaiting its answer.
struct Exchange {
    message_id: u16,
    token: u32,
    first_sent: Instant,
    /// When to give up on the response: `None` while a CON request waits
    /// for its ACK (the retransmissions decide then).
    response_deadline: Option<Instant>,
}

/// One simulated modem.
pub(crate) struct Device {
    link: Link,
    /// Decrypted records (DTLS only).
    plain: Vec<u8>,
    target: SocketAddr,
    schedule: Arc<Schedule>,
    concurrency: usize,
    non: bool,
    response_timeout: Duration,
    request: Request,
    message_ids: MessageIds,
    message_ids_used: u64,
    next_token: u32,
    /// The retransmission jitter.
    rng: SmallRng,
    /// CON requests not yet acknowledged, keyed by message ID.
    retransmissions: Retransmissions<()>,
    outstanding: Vec<Exchange>,
    stats: DeviceStats,
}

impl Device {
    pub(crate) fn new(
        index: usize,
        link: Link,
        config: &LoadConfig,
        request: Request,
        schedule: Arc<Schedule>,
    ) -> Self {
        let plain = match link {
            Link::Plain(_) => Vec::new(),
            Link::Dtls(_) => vec![0u8; MAX_DATAGRAM],
        };
        Self {
            link,
            plain,
            target: config.target,
            schedule,
            concurrency: config.concurrency,
            non: config.non,
            response_timeout: config.response_timeout(),
            request,
            message_ids: MessageIds::new((index as u16).wrapping_mul(7919)),
            message_ids_used: 0,
            next_token: 0,
            rng: SmallRng::seed_from_u64(index as u64),
            retransmissions: Retransmissions::new(config.transmission),
            outstanding: Vec::with_capacity(config.concurrency),
            stats: DeviceStats::default(),
        }
    }

    pub(crate) async fn run(mut self) -> DeviceStats {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut slot: Option<Instant> = None;
        let mut exhausted = false;
        loop {
            let now = Instant::now();
            if now >= self.schedule.end || self.session_lost() {
                self.stats.unfinished += self.outstanding.len() as u64;
                break;
            }
            self.on_timers(now).await;
            while self.outstanding.len() < self.concurrency && !exhausted {
                let at = match slot {
                    Some(at) => at,
                    None if self.message_ids_used >= MESSAGE_IDS => {
                        exhausted = true;
                        break;
                    }
                    None => match self.schedule.claim() {
                        Some(at) => *slot.insert(at),
                        None => {
                            exhausted = true;
                            break;
                        }
                    },
                };
                if at > now {
                    break;
                }
                slot = None;
                self.send_request(now).await;
            }
            if exhausted && self.outstanding.is_empty() {
                break;
            }
            let mut wake = self.next_timer();
            if let Some(at) = slot
                && self.outstanding.len() < self.concurrency
            {
                wake = wake.min(at);
            }
            tokio::select! {
                received = self.link.socket().recv_from(&mut buf) => match received {
                    Ok((len, from)) => {
                        let now = Instant::now();
                        self.on_wire(now, from, &buf[..len]).await;
                        // Whatever else is queued, without waking up again.
                        for _ in 0..READ_BATCH {
                            match self.link.socket().try_recv_from(&mut buf) {
                                Ok((len, from)) => self.on_wire(now, from, &buf[..len]).await,
                                Err(_) => break,
                            }
                        }
                    }
                    Err(_) => {
                        self.stats.io_errors += 1;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                },
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        if let Link::Dtls(session) = self.link {
            if session.closed {
                self.stats.sessions_lost += 1;
            }
            session.close().await;
        }
        self.stats
    }

    fn session_lost(&self) -> bool {
        matches!(&self.link, Link::Dtls(session) if session.closed)
    }

    /// The earliest retransmission, give-up or response deadline, or the
    /// end of the run.
    fn next_timer(&self) -> Instant {
        let mut wake = self.schedule.end;
        if let Some(due) = self.retransmissions.next_timeout() {
            wake = wake.min(Instant::from_std(due));
        }
        for exchange in &self.outstanding {
            if let Some(deadline) = exchange.response_deadline {
                wake = wake.min(deadline);
            }
        }
        wake
    }

    /// A datagram from the socket: CoAP itself, or DTLS records to decrypt.
    async fn on_wire(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if matches!(self.link, Link::Plain(_)) {
            return self.on_datagram(now, from, data).await;
        }
        let mut plain = std::mem::take(&mut self.plain);
        if let Link::Dtls(session) = &mut self.link {
            session.feed(data);
        }
        while let Link::Dtls(session) = &mut self.link {
            let Some(len) = session.read(&mut plain) else {
                session.flush_quietly().await;
                break;
            };
            // A connected socket hears only the target.
            self.on_datagram(now, from, &plain[..len]).await;
        }
        self.plain = plain;
    }

    async fn send_request(&mut self, now: Instant) {
        let message_id = self.message_ids.next_id();
        self.message_ids_used += 1;
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        let bytes = self.request.bytes(message_id, token);
        self.transmit(&bytes).await;
        self.stats.sent += 1;
        let response_deadline = if self.non {
            Some(now + self.response_timeout)
        } else {
            let jitter = self.rng.random::<f64>();
            self.retransmissions
                .start(now.into_std(), (), message_id, &bytes, jitter);
            None
        };
        self.outstanding.push(Exchange {
            message_id,
            token,
            first_sent: now,
            response_deadline,
        });
    }

    async fn transmit(&mut self, bytes: &[u8]) {
        let target = self.target;
        let sent = match &mut self.link {
            Link::Plain(socket) => socket.send_to(bytes, target).await.map(|_| ()),
            Link::Dtls(session) => session.send(bytes).await,
        };
        if sent.is_err() {
            self.stats.io_errors += 1;
        }
    }

    /// Retransmissions and give-ups that are due.
    async fn on_timers(&mut self, now: Instant) {
        while let Some(event) = self.retransmissions.poll(now.into_std()) {
            match event {
                RetransmitEvent::Retransmit { bytes, .. } => {
                    self.stats.retransmissions += 1;
                    self.transmit(&bytes).await;
                }
                // MAX_RETRANSMIT retransmissions and no ACK.
                RetransmitEvent::GaveUp { message_id, .. } => {
                    if let Some(i) = self.position(|e| e.message_id == message_id) {
                        self.outstanding.swap_remove(i);
                        self.stats.timeouts += 1;
                    }
                }
            }
        }
        let before = self.outstanding.len();
        self.outstanding
            .retain(|e| e.response_deadline.is_none_or(|deadline| deadline > now));
        self.stats.timeouts += (before - self.outstanding.len()) as u64;
    }

    fn position(&self, matches: impl Fn(&Exchange) -> bool) -> Option<usize> {
        self.outstanding.iter().position(matches)
    }

    async fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if from != self.target {
            self.stats.unexpected += 1;
            return;
        }
        let Ok(packet) = codec::decode(data) else {
            self.stats.unexpected += 1;
            return;
        };
        let code = u8::from(packet.header.code);
        let message_id = packet.header.message_id;
        match packet.header.get_type() {
            MessageType::Acknowledgement | MessageType::Reset => {
                let Some(i) = self.position(|e| e.message_id == message_id) else {
                    self.stats.duplicates += 1;
                    return;
                };
                if packet.header.get_type() == MessageType::Reset {
                    self.retransmissions.acknowledge(&(), message_id);
                    self.outstanding.swap_remove(i);
                    self.stats.resets += 1;
                } else if code == 0 {
                    if self.retransmissions.acknowledge(&(), message_id) {
                        self.outstanding[i].response_deadline = Some(now + self.response_timeout);
                        self.stats.empty_acks += 1;
                    }
                } else if token_of(&packet) == Some(self.outstanding[i].token) {
                    self.complete(i, now, code, false);
                } else {
                    self.stats.unexpected += 1;
                }
            }
            MessageType::Confirmable | MessageType::NonConfirmable => {
                if packet.header.get_type() == MessageType::Confirmable {
                    // ACK every CON, duplicates too (RFC 7252 §4.5).
                    self.transmit(&codec::empty_ack(message_id)).await;
                }
                if !(2..=5).contains(&(code >> 5)) {
                    self.stats.unexpected += 1;
                    return;
                }
                let token = token_of(&packet);
                match self.position(|e| Some(e.token) == token) {
                    Some(i) => self.complete(i, now, code, true),
                    None => self.stats.duplicates += 1,
                }
            }
        }
    }

    /// The response to exchange `i` came: it is done.
    fn complete(&mut self, i: usize, now: Instant, code: u8, separate: bool) {
        let exchange = self.outstanding.swap_remove(i);
        // A response also acknowledges a request whose ACK got lost.
        self.retransmissions.acknowledge(&(), exchange.message_id);
        self.stats.codes[usize::from(code)] += 1;
        if separate {
            self.stats.separate_responses += 1;
        }
        self.stats
            .latencies
            .push(now.saturating_duration_since(exchange.first_sent));
    }
}
