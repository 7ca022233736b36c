//! The engine: state, the event handlers, the request pipeline. Each
//! resource's work lives in a submodule.

mod bootstrap;
mod location;
mod publish;
mod telemetry;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use coapgate_bootstrap::{OsPskGenerator, PskGenerator};
use coapgate_codec::{self as codec, MessageClass, MessageType, Packet, RequestType, ResponseType};
use coapgate_exchange::{
    DedupCache, Lookup, MessageIds, MessageKind, RateLimiter, Retransmissions, RetransmitEvent,
    Ticket, whole_seconds,
};
use coapgate_location::PositionStore;
use coapgate_model::{DeviceDirectory, DeviceEntry, Iccid, Registrations};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::response::{Response, code_label};
use crate::stats::{EndpointStats, RequestKey};
use crate::{
    EndpointConfig, Link, Output, PublishId, PublishResult, StoreResult, StoreWriteId,
    TemplateSource, Transmit,
};
use publish::{Owner, RequestId, StoreWaiter};

use codec::CoapOption;
use codec::option_number::{PROXY_SCHEME, PROXY_URI};

/// The resources a path can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    /// `/` and `/data`.
    Telemetry,
    /// `/bootstrap`.
    Bootstrap,
    /// `/location`.
    Location,
    /// Anything else.
    Unknown,
}

impl Resource {
    fn from_path(segments: &[&[u8]]) -> Self {
        match segments {
            [] | [b"data"] => Resource::Telemetry,
            [b"bootstrap"] => Resource::Bootstrap,
            [b"location"] => Resource::Location,
            _ => Resource::Unknown,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Resource::Telemetry => "telemetry",
            Resource::Bootstrap => "bootstrap",
            Resource::Location => "location",
            Resource::Unknown => "unknown",
        }
    }
}

/// What the pipeline decided for a request.
enum Outcome {
    /// Answer now.
    Respond(Response),
    /// A publish is out; answer when the broker has spoken.
    Pending,
}

impl Outcome {
    fn code(code: ResponseType) -> Self {
        Outcome::Respond(Response::new(code))
    }
}

/// A request on its way through the pipeline.
struct Request<'a> {
    now: Instant,
    wall: SystemTime,
    from: Link,
    kind: MessageKind,
    /// Its dedup entry.
    ticket: Ticket,
    resource: Resource,
    packet: &'a Packet,
}

/// A request waiting for the broker or the store.
#[derive(Debug)]
struct Pending {
    link: Link,
    message_id: u16,
    /// The request's dedup entry, where its response is recorded.
    ticket: Ticket,
    token: Vec<u8>,
    kind: MessageKind,
    resource: Resource,
    /// The empty ACK went out: the answer goes as a separate response.
    acknowledged: bool,
    /// Publishes not yet confirmed.
    outstanding: usize,
}

/// The sans-IO engine. See the [crate docs](crate) for the contract.
pub struct Endpoint {
    config: EndpointConfig,
    devices: Arc<dyn DeviceDirectory>,
    /// `/bootstrap` is served (the driver executes [`StoreRequest::Bootstrap`]).
    bootstrap: bool,
    psk_generator: Box<dyn PskGenerator>,
    positions: Option<Arc<dyn PositionStore>>,
    registrations: Option<Arc<dyn Registrations>>,
    templates: Option<Arc<dyn TemplateSource>>,
    /// Devices whose registration event is on its way to the broker.
    registering: HashSet<Iccid>,
    /// DTLS sessions and the identity each proved.
    sessions: HashMap<u64, Iccid>,
    broker_connected: bool,
    dedup: DedupCache<Link>,
    /// Each device's token bucket (spec.md §2.1 step 4), by ICCID: a
    /// device keeps its budget whichever port or session it sends from.
    device_limiter: RateLimiter<Iccid>,
    retransmissions: Retransmissions<Link>,
    message_ids: MessageIds,
    rng: SmallRng,
    next_publish: PublishId,
    next_request: RequestId,
    next_store_write: StoreWriteId,
    /// Every publish handed out and not yet resolved, and who waits for it.
    owners: HashMap<PublishId, Owner>,
    /// Requests waiting for the broker.
    pending: HashMap<RequestId, Pending>,
    /// (instant, request): when to switch a CON to a separate response.
    /// FIFO because the window is constant and time only moves forward.
    piggyback_timers: VecDeque<(Instant, RequestId)>,
    /// (instant, publish): when to give up on the broker (5.04). FIFO too.
    deadline_timers: VecDeque<(Instant, PublishId)>,
    /// Every store write handed out and not yet answered, and who waits.
    store_writes: HashMap<StoreWriteId, StoreWaiter>,
    /// (instant, write): when to stop waiting for the store (5.03). FIFO.
    store_timers: VecDeque<(Instant, StoreWriteId)>,
    outputs: VecDeque<Output>,
    stats: EndpointStats,
}

impl Endpoint {
    /// A new engine reading devices from `devices`. The broker is taken as
    /// down until [`handle_broker_state`](Self::handle_broker_state) says
    /// otherwise. Without [`with_bootstrap`](Self::with_bootstrap),
    /// `/bootstrap` answers 4.04.
    pub fn new(config: EndpointConfig, devices: Arc<dyn DeviceDirectory>) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let params = config.transmission;
        Self {
            dedup: DedupCache::new(
                params.exchange_lifetime(),
                params.non_lifetime(),
                config.dedup,
            ),
            device_limiter: RateLimiter::new(config.device_limit),
            retransmissions: Retransmissions::new(params),
            message_ids: MessageIds::new(rng.random()),
            rng,
            devices,
            bootstrap: false,
            psk_generator: Box::new(OsPskGenerator),
            positions: None,
            registrations: None,
            templates: None,
            registering: HashSet::new(),
            sessions: HashMap::new(),
            broker_connected: false,
            next_publish: 0,
            next_request: 0,
            next_store_write: 0,
            owners: HashMap::new(),
            pending: HashMap::new(),
            piggyback_timers: VecDeque::new(),
            deadline_timers: VecDeque::new(),
            store_writes: HashMap::new(),
            store_timers: VecDeque::new(),
            outputs: VecDeque::new(),
            stats: EndpointStats::default(),
            config,
        }
    }

    /// Serves `/bootstrap`: each call becomes a [`StoreRequest::Bootstrap`]
    /// output, answered when the driver reports the stored record.
    pub fn with_bootstrap(mut self) -> Self {
        self.bootstrap = true;
        self
    }

    /// Serves `/location` from, and records template positions in, this
    /// store.
    pub fn with_positions(mut self, positions: Arc<dyn PositionStore>) -> Self {
        self.positions = Some(positions);
        self
    }

    /// Publishes each device's `DEVICE_FIRST_TIME_REGISTERED` event once:
    /// `registrations` says which devices had theirs, and a confirmed event
    /// becomes a [`StoreRequest::MarkRegistered`] output.
    pub fn with_registrations(mut self, registrations: Arc<dyn Registrations>) -> Self {
        self.registrations = Some(registrations);
        self
    }

    /// Translates telemetry with the active template from this source.
    pub fn with_templates(mut self, templates: Arc<dyn TemplateSource>) -> Self {
        self.templates = Some(templates);
        self
    }

    /// Generates PSKs with this generator instead of the OS's cryptographic
    /// RNG (for tests that need known PSKs).
    pub fn with_psk_generator(mut self, generator: Box<dyn PskGenerator>) -> Self {
        self.psk_generator = generator;
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Counters and gauges for metrics.
    pub fn stats(&self) -> EndpointStats {
        let mut stats = self.stats.clone();
        stats.dedup = self.dedup.stats();
        stats.pending_publishes = self.owners.len();
        stats.pending_store_writes = self.store_writes.len();
        stats
    }

    /// Publishes and store writes handed out and not yet answered: the
    /// work a graceful shutdown waits for.
    pub fn pending_work(&self) -> usize {
        self.owners.len() + self.store_writes.len()
    }

    /// Whether a device with this address is ACTIVE: the accept step of a
    /// DTLS gateway, before it spends a handshake on the address.
    pub fn serves(&self, ip: IpAddr) -> bool {
        self.devices
            .by_ip(ip.to_canonical())
            .is_some_and(|d| d.is_active())
    }

    /// The broker connection went up (`true`) or down. While it is down,
    /// telemetry is answered 5.02 at once.
    pub fn handle_broker_state(&mut self, connected: bool) {
        self.broker_connected = connected;
    }

    /// A DTLS session completed its handshake with this PSK identity.
    pub fn handle_session_established(&mut self, session: u64, identity: Iccid) {
        self.sessions.insert(session, identity);
    }

    /// A DTLS session ended.
    pub fn handle_session_closed(&mut self, session: u64) {
        self.sessions.remove(&session);
    }

    /// A datagram arrived. `wall` is the receive time: `received` in the
    /// envelope, and the clock of the `/bootstrap` regeneration rule.
    pub fn handle_datagram(&mut self, now: Instant, wall: SystemTime, from: Link, data: &[u8]) {
        let packet = match codec::decode(data) {
            Ok(packet) => packet,
            Err(error) => {
                self.stats.malformed += 1;
                tracing::debug!(peer = %from.addr(), %error, "undecodable datagram");
                if let Some(rst) = error.reset() {
                    self.send(from, rst);
                }
                return;
            }
        };
        let message_id = packet.header.message_id;
        let kind = match packet.header.get_type() {
            MessageType::Acknowledgement | MessageType::Reset => {
                // Only our separate responses expect either.
                self.retransmissions.acknowledge(&from, message_id);
                return;
            }
            MessageType::Confirmable => MessageKind::Confirmable,
            MessageType::NonConfirmable => MessageKind::NonConfirmable,
        };
        let code = u8::from(packet.header.code);
        match (kind, code) {
            // An empty CON is a ping: RST (RFC 7252 §4.3).
            (MessageKind::Confirmable, 0) => {
                self.stats.pings += 1;
                self.send(from, codec::reset(message_id));
            }
            // Requests: class 0, detail 1..=31.
            (_, 1..=0x1f) => self.handle_request(now, wall, from, kind, &packet),
            // A CON response or reserved class: we cannot process it.
            (MessageKind::Confirmable, _) => self.send(from, codec::reset(message_id)),
            (MessageKind::NonConfirmable, _) => {}
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: Link,
        kind: MessageKind,
        packet: &Packet,
    ) {
        let ticket = match self
            .dedup
            .lookup(now, &from, packet.header.message_id, kind)
        {
            Lookup::New(ticket) => ticket,
            Lookup::Replay(bytes) => {
                let bytes = bytes.to_vec();
                self.stats.duplicates += 1;
                self.send(from, bytes);
                return;
            }
            Lookup::InProgress | Lookup::Ignore => {
                self.stats.duplicates += 1;
                return;
            }
        };
        let request = Request {
            now,
            wall,
            from,
            kind,
            ticket,
            resource: Resource::from_path(&codec::uri_path(packet)),
            packet,
        };
        match self.process(&request) {
            Outcome::Respond(response) => self.respond_now(&request, response),
            Outcome::Pending => {}
        }
    }

    /// Steps 3 to 8 of spec.md §2.1.
    fn process(&mut self, request: &Request<'_>) -> Outcome {
        let packet = request.packet;
        // 3. The device, by source IP (and on DTLS, by the session's identity).
        let Some(device) = self.authorised_device(request.from) else {
            return Outcome::code(ResponseType::Unauthorized);
        };
        // 4. The device's rate limit. A duplicate never gets here (step 2),
        // so a retransmission costs no budget. Refused before the LIFECYCLE
        // event: a refused request has no effect but its 4.29.
        if let Err(wait) = self.device_limiter.check(request.now, &device.iccid) {
            self.stats.rate_limited += 1;
            tracing::debug!(iccid = %device.iccid, ?wait, "over the device's rate limit");
            return Outcome::Respond(
                Response::new(ResponseType::TooManyRequests)
                    .with_uint_option(CoapOption::MaxAge, whole_seconds(wait)),
            );
        }
        self.register_if_new(request, &device);
        // 5. Critical options we do not recognise.
        if let Some(number) = codec::unrecognised_critical_option(packet, &[]) {
            tracing::debug!(peer = %request.from.addr(), option = number, "unrecognised critical option");
            return Outcome::code(ResponseType::BadOption);
        }
        // 6. Path and method. Proxy-Uri and Proxy-Scheme are recognised
        // (RFC 7252 §5.10.2) but this is no proxy: 5.05.
        if codec::option_values(packet, PROXY_URI).next().is_some()
            || codec::option_values(packet, PROXY_SCHEME).next().is_some()
        {
            return Outcome::code(ResponseType::ProxyingNotSupported);
        }
        let dtls = matches!(request.from, Link::Dtls { .. });
        match (request.resource, packet.header.code) {
            (Resource::Unknown, _) => Outcome::code(ResponseType::NotFound),
            (Resource::Telemetry, MessageClass::Request(RequestType::Post)) => {
                self.telemetry(request, &device)
            }
            // A PSK is handed out over plain CoAP only: over DTLS the device
            // already has one (docs/decisions.md).
            (Resource::Bootstrap, MessageClass::Request(RequestType::Get)) if dtls => {
                Outcome::code(ResponseType::Forbidden)
            }
            (Resource::Bootstrap, MessageClass::Request(RequestType::Get)) => {
                self.bootstrap(request, &device)
            }
            (Resource::Location, MessageClass::Request(RequestType::Get)) => self.location(&device),
            (Resource::Telemetry | Resource::Bootstrap | Resource::Location, _) => {
                Outcome::code(ResponseType::MethodNotAllowed)
            }
        }
    }

    fn authorised_device(&self, from: Link) -> Option<DeviceEntry> {
        let ip: IpAddr = from.addr().ip().to_canonical();
        let device = self.devices.by_ip(ip).filter(|d| d.is_active())?;
        match from {
            Link::Udp(_) => Some(device),
            Link::Dtls { session, .. } => {
                let identity = self.sessions.get(&session)?;
                (*identity == device.iccid).then_some(device)
            }
        }
    }

    /// The broker's verdict on a publish. Unknown or already resolved IDs
    /// (a confirmation after the deadline) are ignored.
    pub fn handle_publish_result(&mut self, now: Instant, id: PublishId, result: PublishResult) {
        let Some(owner) = self.owners.remove(&id) else {
            return;
        };
        let request_id = match owner {
            Owner::Registration { iccid, wall } => {
                self.registration_result(now, iccid, wall, result == PublishResult::Confirmed);
                return;
            }
            Owner::Request(request_id) => request_id,
        };
        // A request is answered when all its publishes are confirmed, or at
        // its first failure (later results for it find nothing here).
        let Some(waiting) = self.pending.get_mut(&request_id) else {
            return;
        };
        if result == PublishResult::Confirmed {
            waiting.outstanding = waiting.outstanding.saturating_sub(1);
            if waiting.outstanding > 0 {
                return;
            }
        }
        let response = match result {
            PublishResult::Confirmed => Response::new(ResponseType::Changed),
            PublishResult::Unavailable => Response::new(ResponseType::BadGateway),
            PublishResult::TimedOut => Response::new(ResponseType::GatewayTimeout),
            PublishResult::TryLater => Response::service_unavailable(),
        };
        self.finish(now, request_id, response);
    }

    /// The store's answer to a write. Unknown or already resolved IDs (an
    /// answer after the engine stopped waiting) are ignored.
    pub fn handle_store_result(&mut self, now: Instant, id: StoreWriteId, result: StoreResult) {
        match self.store_writes.remove(&id) {
            None => {}
            Some(StoreWaiter::Registration { iccid }) => self.registration_recorded(iccid, &result),
            Some(StoreWaiter::Bootstrap { request, iccid }) => {
                let response = match result {
                    StoreResult::Psk(record) => self.bootstrap_answer(&iccid, &record),
                    StoreResult::Unavailable => Response::service_unavailable(),
                    // `Debug` of a PSK record never shows the PSK.
                    other => {
                        tracing::error!(%iccid, result = ?other, "bootstrap not stored");
                        Response::new(ResponseType::InternalServerError)
                    }
                };
                self.finish(now, request, response);
            }
        }
    }

    /// Answers a request that waited: piggybacked on the ACK while the
    /// piggyback window is open (recorded for duplicates), else as a
    /// separate response (CON after the empty ACK, NON for a NON request).
    fn finish(&mut self, now: Instant, request_id: RequestId, response: Response) {
        let Some(pending) = self.pending.remove(&request_id) else {
            return;
        };
        self.answered(
            pending.link,
            pending.message_id,
            pending.resource,
            response.code,
        );
        if pending.kind == MessageKind::Confirmable && !pending.acknowledged {
            let Some(bytes) = response.encode(
                MessageType::Acknowledgement,
                pending.message_id,
                &pending.token,
            ) else {
                return;
            };
            self.dedup
                .respond(&pending.link, pending.message_id, pending.ticket, &bytes);
            self.send(pending.link, bytes);
            return;
        }
        let message_type = match pending.kind {
            MessageKind::Confirmable => MessageType::Confirmable,
            MessageKind::NonConfirmable => MessageType::NonConfirmable,
        };
        let Some((message_id, bytes)) =
            response.encode_own(message_type, &mut self.message_ids, &pending.token)
        else {
            return;
        };
        if message_type == MessageType::Confirmable {
            let jitter = self.rng.random::<f64>();
            self.retransmissions
                .start(now, pending.link, message_id, &bytes, jitter);
        }
        self.send(pending.link, bytes);
    }

    /// Time has come (see [`poll_timeout`](Self::poll_timeout)).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = due(&mut self.piggyback_timers, now) {
            if let Some(p) = self.pending.get_mut(&id) {
                p.acknowledged = true;
                let (link, message_id, ticket) = (p.link, p.message_id, p.ticket);
                let ack = codec::empty_ack(message_id);
                self.dedup.respond(&link, message_id, ticket, &ack);
                self.send(link, ack);
            }
        }
        while let Some(id) = due(&mut self.deadline_timers, now) {
            if self.owners.contains_key(&id) {
                self.handle_publish_result(now, id, PublishResult::TimedOut);
            }
        }
        while let Some(id) = due(&mut self.store_timers, now) {
            if self.store_writes.contains_key(&id) {
                tracing::warn!(write = id, "the store did not answer in time");
                self.handle_store_result(now, id, StoreResult::Unavailable);
            }
        }
        while let Some(event) = self.retransmissions.poll(now) {
            match event {
                RetransmitEvent::Retransmit { peer, bytes, .. } => {
                    self.stats.retransmissions += 1;
                    self.send(peer, bytes);
                }
                RetransmitEvent::GaveUp { peer, message_id } => {
                    self.stats.retransmit_give_ups += 1;
                    tracing::debug!(peer = %peer.addr(), message_id, "separate response not acknowledged, given up");
                }
            }
        }
        self.dedup.expire(now);
        self.device_limiter.sweep(now);
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.piggyback_timers.front().map(|&(at, _)| at),
            self.deadline_timers.front().map(|&(at, _)| at),
            self.store_timers.front().map(|&(at, _)| at),
            self.retransmissions.next_timeout(),
            self.dedup.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next thing to do; [`Output::Timeout`] once there is nothing
    /// else. Drain after every `handle_*` call until it returns
    /// [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        self.outputs
            .pop_front()
            .unwrap_or_else(|| Output::Timeout(self.poll_timeout()))
    }

    /// Answers at once: piggybacked on the ACK of a CON (recorded for
    /// duplicates), or as a NON with a message ID of ours.
    fn respond_now(&mut self, request: &Request<'_>, response: Response) {
        self.answered(
            request.from,
            request.packet.header.message_id,
            request.resource,
            response.code,
        );
        let request_id = request.packet.header.message_id;
        let token = request.packet.get_token();
        let bytes = match request.kind {
            MessageKind::Confirmable => {
                let Some(bytes) = response.encode(MessageType::Acknowledgement, request_id, token)
                else {
                    return;
                };
                self.dedup
                    .respond(&request.from, request_id, request.ticket, &bytes);
                bytes
            }
            MessageKind::NonConfirmable => {
                let Some((_, bytes)) =
                    response.encode_own(MessageType::NonConfirmable, &mut self.message_ids, token)
                else {
                    return;
                };
                bytes
            }
        };
        self.send(request.from, bytes);
    }

    /// Counts an answered request and logs it: one line per request at
    /// debug level, nothing secret in it.
    fn answered(&mut self, link: Link, message_id: u16, resource: Resource, code: ResponseType) {
        let key = RequestKey {
            resource: resource.label(),
            code: code_label(code),
        };
        tracing::debug!(
            peer = %link.addr(),
            dtls = matches!(link, Link::Dtls { .. }),
            message_id,
            resource = key.resource,
            code = key.code,
            "request"
        );
        *self.stats.requests.entry(key).or_default() += 1;
    }

    fn send(&mut self, to: Link, payload: Vec<u8>) {
        self.outputs
            .push_back(Output::Transmit(Transmit { to, payload }));
    }
}

/// Pops the front of a FIFO timer queue if it is due at `now`.
fn due<T: Copy>(timers: &mut VecDeque<(Instant, T)>, now: Instant) -> Option<T> {
    match timers.front() {
        Some(&(at, id)) if at <= now => {
            timers.pop_front();
            Some(id)
        }
        _ => None,
    }
}
