use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use coapgate_codec::{
    self as codec, CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use coapgate_envelope::{Body, DeviceRef, Meta};
use coapgate_exchange::{
    DedupCache, Lookup, MessageIds, MessageKind, Retransmissions, RetransmitEvent, Ticket,
};
use coapgate_model::{Device, DeviceDirectory, Iccid};
use coapgate_topic::Topic;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::stats::{EndpointStats, RequestKey};
use crate::{
    EndpointConfig, Link, PayloadFormat, Publish, PublishId, PublishResult, SessionId, Transmit,
};

use codec::option_number::{LOCATION_QUERY, PROXY_SCHEME, PROXY_URI, URI_QUERY};

/// Max-Age (seconds) on a 5.03 when too many publishes are pending.
const OVERLOAD_MAX_AGE: u8 = 5;

/// The resources a path can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    /// `/` and `/data`.
    Telemetry,
    /// Anything else.
    Unknown,
}

impl Resource {
    fn from_path(segments: &[&[u8]]) -> Self {
        match segments {
            [] | [b"data"] => Resource::Telemetry,
            _ => Resource::Unknown,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Resource::Telemetry => "telemetry",
            Resource::Unknown => "unknown",
        }
    }
}

/// What the pipeline decided for a request.
enum Outcome {
    /// Answer now with this code (and these extra options).
    Respond(ResponseType, Vec<(CoapOption, Vec<u8>)>),
    /// A publish is out; answer when the broker has spoken.
    Pending,
}

impl Outcome {
    fn code(code: ResponseType) -> Self {
        Outcome::Respond(code, Vec::new())
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

/// A request waiting for the broker.
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
}

/// The sans-IO engine. See the [crate docs](crate) for the contract.
pub struct Endpoint {
    config: EndpointConfig,
    devices: Arc<dyn DeviceDirectory>,
    sessions: HashMap<SessionId, Iccid>,
    broker_connected: bool,
    dedup: DedupCache<Link>,
    retransmissions: Retransmissions<Link>,
    message_ids: MessageIds,
    rng: SmallRng,
    next_publish: PublishId,
    pending: HashMap<PublishId, Pending>,
    /// (instant, publish): when to switch a CON to a separate response.
    /// FIFO because the window is constant and time only moves forward.
    piggyback_timers: VecDeque<(Instant, PublishId)>,
    /// (instant, publish): when to give up on the broker (5.04). FIFO too.
    deadline_timers: VecDeque<(Instant, PublishId)>,
    transmits: VecDeque<Transmit>,
    publishes: VecDeque<Publish>,
    stats: EndpointStats,
}

impl Endpoint {
    /// A new engine reading devices from `devices`. The broker is taken as
    /// down until [`handle_broker_state`](Self::handle_broker_state) says
    /// otherwise.
    pub fn new(config: EndpointConfig, devices: Arc<dyn DeviceDirectory>) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let params = config.transmission;
        Self {
            dedup: DedupCache::new(
                params.exchange_lifetime(),
                params.non_lifetime(),
                config.dedup,
            ),
            retransmissions: Retransmissions::new(params),
            message_ids: MessageIds::new(rng.random()),
            rng,
            devices,
            sessions: HashMap::new(),
            broker_connected: false,
            next_publish: 0,
            pending: HashMap::new(),
            piggyback_timers: VecDeque::new(),
            deadline_timers: VecDeque::new(),
            transmits: VecDeque::new(),
            publishes: VecDeque::new(),
            stats: EndpointStats::default(),
            config,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Counters and gauges for metrics.
    pub fn stats(&self) -> EndpointStats {
        let mut stats = self.stats.clone();
        stats.dedup = self.dedup.stats();
        stats.pending_publishes = self.pending.len();
        stats
    }

    /// The broker connection went up (`true`) or down. While it is down,
    /// telemetry is answered 5.02 at once.
    pub fn handle_broker_state(&mut self, connected: bool) {
        self.broker_connected = connected;
    }

    /// A DTLS session completed its handshake with this PSK identity.
    pub fn handle_session_established(&mut self, session: SessionId, identity: Iccid) {
        self.sessions.insert(session, identity);
    }

    /// A DTLS session ended.
    pub fn handle_session_closed(&mut self, session: SessionId) {
        self.sessions.remove(&session);
    }

    /// A datagram arrived. `wall` is the receive time as published
    /// (`received` in the envelope).
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
            Outcome::Respond(code, options) => self.respond_now(&request, code, options),
            Outcome::Pending => {}
        }
    }

    /// Steps 3 to 7 of SPEC §2.1.
    fn process(&mut self, request: &Request<'_>) -> Outcome {
        let packet = request.packet;
        // 3. The device, by source IP (and on DTLS, by the session's identity).
        let Some(device) = self.authorised_device(request.from) else {
            return Outcome::code(ResponseType::Unauthorized);
        };
        // 4. Critical options we do not recognise.
        if let Some(number) = codec::unrecognised_critical_option(packet, &[]) {
            tracing::debug!(peer = %request.from.addr(), option = number, "unrecognised critical option");
            return Outcome::code(ResponseType::BadOption);
        }
        // 5. Path and method. Proxy-Uri and Proxy-Scheme are recognised
        // (RFC 7252 §5.10.2) but this is no proxy: 5.05.
        if codec::option_values(packet, PROXY_URI).next().is_some()
            || codec::option_values(packet, PROXY_SCHEME).next().is_some()
        {
            return Outcome::code(ResponseType::ProxyingNotSupported);
        }
        match (request.resource, packet.header.code) {
            (Resource::Unknown, _) => Outcome::code(ResponseType::NotFound),
            (Resource::Telemetry, MessageClass::Request(RequestType::Post)) => {
                self.telemetry(request, &device)
            }
            (Resource::Telemetry, _) => Outcome::code(ResponseType::MethodNotAllowed),
        }
    }

    fn authorised_device(&self, from: Link) -> Option<Arc<Device>> {
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

    /// Steps 6 and 7 for `POST /` and `POST /data`.
    fn telemetry(&mut self, request: &Request<'_>, device: &Device) -> Outcome {
        let packet = request.packet;
        let topic = match coapgate_topic::extract(
            codec::option_values(packet, URI_QUERY),
            codec::option_values(packet, LOCATION_QUERY),
        ) {
            Ok(topic) => topic,
            Err(error) => {
                tracing::debug!(peer = %request.from.addr(), %error, "bad topic");
                return Outcome::code(ResponseType::BadRequest);
            }
        };
        if packet.payload.len() > self.config.max_payload {
            let size1 = (self.config.max_payload as u32).to_be_bytes();
            let size1 = size1[size1.iter().take_while(|&&b| b == 0).count()..].to_vec();
            return Outcome::Respond(
                ResponseType::RequestEntityTooLarge,
                vec![(CoapOption::Size1, size1)],
            );
        }
        if !self.broker_connected {
            return Outcome::code(ResponseType::BadGateway);
        }
        if self.pending.len() >= self.config.max_pending {
            return Outcome::Respond(
                ResponseType::ServiceUnavailable,
                vec![(CoapOption::MaxAge, vec![OVERLOAD_MAX_AGE])],
            );
        }
        self.publish(request, device, topic.as_ref());
        Outcome::Pending
    }

    fn publish(&mut self, request: &Request<'_>, device: &Device, topic: Option<&Topic>) {
        let packet = request.packet;
        let id = self.next_publish;
        self.next_publish += 1;
        let payload = match self.config.payload_format {
            PayloadFormat::Raw => packet.payload.clone(),
            PayloadFormat::Envelope => {
                let message_id = uuid::Builder::from_random_bytes(self.rng.random()).into_uuid();
                let mut id_text = uuid::Uuid::encode_buffer();
                let meta = Meta {
                    id: message_id.hyphenated().encode_lower(&mut id_text),
                    received_ms: request
                        .wall
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    device: DeviceRef {
                        iccid: device.iccid.as_str(),
                        ip: request.from.addr().ip().to_canonical(),
                        imsi: device.imsi.as_ref().map(|i| i.as_str()),
                    },
                };
                coapgate_envelope::telemetry(
                    &meta,
                    topic.map(Topic::as_str),
                    Body::Binary(&packet.payload),
                )
            }
        };
        let deadline = request.now + self.config.publish_timeout;
        self.publishes.push_back(Publish {
            id,
            topic: self.config.topics.render(
                device.iccid.as_str(),
                device.imsi.as_ref().map(|i| i.as_str()),
                topic,
            ),
            payload,
            deadline,
        });
        self.pending.insert(
            id,
            Pending {
                link: request.from,
                message_id: packet.header.message_id,
                ticket: request.ticket,
                token: packet.get_token().to_vec(),
                kind: request.kind,
                resource: request.resource,
                acknowledged: false,
            },
        );
        if request.kind == MessageKind::Confirmable {
            self.piggyback_timers
                .push_back((request.now + self.config.piggyback_window, id));
        }
        self.deadline_timers.push_back((deadline, id));
    }

    /// The broker's verdict on a publish. Unknown or already answered IDs
    /// (a confirmation after the deadline) are ignored.
    pub fn handle_publish_result(&mut self, now: Instant, id: PublishId, result: PublishResult) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        let code = match result {
            PublishResult::Confirmed => ResponseType::Changed,
            PublishResult::Unavailable => ResponseType::BadGateway,
            PublishResult::TimedOut => ResponseType::GatewayTimeout,
        };
        self.count(pending.resource, code);
        let separate = pending.kind == MessageKind::NonConfirmable || pending.acknowledged;
        if !separate {
            // Piggybacked on the ACK; duplicates get the same bytes.
            let Some(bytes) = self.encode_response(
                MessageType::Acknowledgement,
                pending.message_id,
                &pending.token,
                code,
                Vec::new(),
            ) else {
                return;
            };
            self.dedup
                .respond(&pending.link, pending.message_id, pending.ticket, &bytes);
            self.send(pending.link, bytes);
            return;
        }
        // A separate response: CON after an empty ACK, NON for a NON request.
        let message_type = match pending.kind {
            MessageKind::Confirmable => MessageType::Confirmable,
            MessageKind::NonConfirmable => MessageType::NonConfirmable,
        };
        let message_id = self.message_ids.next_id();
        let Some(bytes) =
            self.encode_response(message_type, message_id, &pending.token, code, Vec::new())
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
        while let Some(&(at, id)) = self.piggyback_timers.front() {
            if at > now {
                break;
            }
            self.piggyback_timers.pop_front();
            if let Some(p) = self.pending.get_mut(&id) {
                p.acknowledged = true;
                let (link, message_id, ticket) = (p.link, p.message_id, p.ticket);
                let ack = codec::empty_ack(message_id);
                self.dedup.respond(&link, message_id, ticket, &ack);
                self.send(link, ack);
            }
        }
        while let Some(&(at, id)) = self.deadline_timers.front() {
            if at > now {
                break;
            }
            self.deadline_timers.pop_front();
            if self.pending.contains_key(&id) {
                self.handle_publish_result(now, id, PublishResult::TimedOut);
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
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.piggyback_timers.front().map(|&(at, _)| at),
            self.deadline_timers.front().map(|&(at, _)| at),
            self.retransmissions.next_timeout(),
            self.dedup.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next message for the broker.
    pub fn poll_publish(&mut self) -> Option<Publish> {
        self.publishes.pop_front()
    }

    fn respond_now(
        &mut self,
        request: &Request<'_>,
        code: ResponseType,
        options: Vec<(CoapOption, Vec<u8>)>,
    ) {
        self.count(request.resource, code);
        let request_id = request.packet.header.message_id;
        let (message_type, message_id) = match request.kind {
            MessageKind::Confirmable => (MessageType::Acknowledgement, request_id),
            MessageKind::NonConfirmable => {
                (MessageType::NonConfirmable, self.message_ids.next_id())
            }
        };
        let token = request.packet.get_token();
        let Some(bytes) = self.encode_response(message_type, message_id, token, code, options)
        else {
            return;
        };
        if request.kind == MessageKind::Confirmable {
            self.dedup
                .respond(&request.from, request_id, request.ticket, &bytes);
        }
        self.send(request.from, bytes);
    }

    fn encode_response(
        &self,
        message_type: MessageType,
        message_id: u16,
        token: &[u8],
        code: ResponseType,
        options: Vec<(CoapOption, Vec<u8>)>,
    ) -> Option<Vec<u8>> {
        let mut packet = Packet::new();
        packet.header.set_type(message_type);
        packet.header.message_id = message_id;
        packet.header.code = MessageClass::Response(code);
        for (option, value) in options {
            packet.add_option(option, value);
        }
        // The token came from a decoded request, so it is at most 8 bytes.
        if codec::set_token(&mut packet, token).is_err() {
            return None;
        }
        match codec::encode(&packet) {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                tracing::error!(%error, "could not encode a response");
                None
            }
        }
    }

    fn count(&mut self, resource: Resource, code: ResponseType) {
        let key = RequestKey {
            resource: resource.label(),
            code: code_label(code),
        };
        *self.stats.requests.entry(key).or_default() += 1;
    }

    fn send(&mut self, to: Link, payload: Vec<u8>) {
        self.transmits.push_back(Transmit { to, payload });
    }
}

/// A response code as `c.dd` text, for metrics.
fn code_label(code: ResponseType) -> &'static str {
    match code {
        ResponseType::Created => "2.01",
        ResponseType::Deleted => "2.02",
        ResponseType::Valid => "2.03",
        ResponseType::Changed => "2.04",
        ResponseType::Content => "2.05",
        ResponseType::Continue => "2.31",
        ResponseType::BadRequest => "4.00",
        ResponseType::Unauthorized => "4.01",
        ResponseType::BadOption => "4.02",
        ResponseType::Forbidden => "4.03",
        ResponseType::NotFound => "4.04",
        ResponseType::MethodNotAllowed => "4.05",
        ResponseType::NotAcceptable => "4.06",
        ResponseType::RequestEntityIncomplete => "4.08",
        ResponseType::Conflict => "4.09",
        ResponseType::PreconditionFailed => "4.12",
        ResponseType::RequestEntityTooLarge => "4.13",
        ResponseType::UnsupportedContentFormat => "4.15",
        ResponseType::UnprocessableEntity => "4.22",
        ResponseType::TooManyRequests => "4.29",
        ResponseType::InternalServerError => "5.00",
        ResponseType::NotImplemented => "5.01",
        ResponseType::BadGateway => "5.02",
        ResponseType::ServiceUnavailable => "5.03",
        ResponseType::GatewayTimeout => "5.04",
        ResponseType::ProxyingNotSupported => "5.05",
        ResponseType::HopLimitReached => "5.08",
        ResponseType::UnKnown => "unknown",
    }
}
