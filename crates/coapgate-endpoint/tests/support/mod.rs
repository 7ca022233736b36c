//! A deterministic world for the engine: a fake clock, an in-memory
//! network, a scripted device and a scripted broker (model: quinn's `Pair`).

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use std::sync::atomic::{AtomicBool, Ordering};

use coapgate_bootstrap::{Psk, PskGenerator, PskRecord, PskUpdate};
use coapgate_endpoint::codec::{
    self, CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use coapgate_endpoint::{
    Endpoint, EndpointConfig, Link, Output, Publish, PublishResult, StoreRequest, StoreResult,
    StoreWrite, Transmit,
};
use coapgate_exchange::clock::{self, Timers};
use coapgate_model::{Device, DeviceDirectory, DeviceEntry, DeviceStatus, Iccid};

pub const ICCID: &str = "8988280666000000000";
pub const IMSI: &str = "901405100000000";

/// A device directory the test can change while the engine runs.
#[derive(Default, Clone)]
pub struct Devices(Arc<RwLock<HashMap<IpAddr, Arc<Device>>>>);

impl Devices {
    pub fn add(&self, iccid: &str, ip: &str, status: DeviceStatus) {
        let device = Device {
            iccid: iccid.parse().unwrap(),
            imsi: Some(IMSI.parse().unwrap()),
            ip: ip.parse().unwrap(),
            status,
            name: None,
        };
        self.0.write().unwrap().insert(device.ip, Arc::new(device));
    }
}

impl DeviceDirectory for Devices {
    fn by_ip(&self, ip: IpAddr) -> Option<DeviceEntry> {
        self.0.read().unwrap().get(&ip).map(|d| d.entry())
    }
}

/// PSK records in memory; `fail` makes every write fail like a broken
/// database, `unavailable` like a locked one.
#[derive(Default, Clone)]
pub struct Psks {
    pub records: Arc<RwLock<HashMap<Iccid, PskRecord>>>,
    pub fail: Arc<AtomicBool>,
    pub unavailable: Arc<AtomicBool>,
}

impl Psks {
    fn bootstrap(&self, update: &PskUpdate) -> StoreResult {
        if self.fail.load(Ordering::Relaxed) {
            return StoreResult::Failed;
        }
        if self.unavailable.load(Ordering::Relaxed) {
            return StoreResult::Unavailable;
        }
        let mut records = self.records.write().unwrap();
        let next = update.apply(records.get(&update.iccid));
        records.insert(update.iccid.clone(), next.clone());
        StoreResult::Psk(next)
    }
}

/// Positions in memory.
#[derive(Default, Clone)]
pub struct Positions(pub Arc<RwLock<HashMap<Iccid, coapgate_location::Position>>>);

impl coapgate_location::PositionStore for Positions {
    fn latest(&self, iccid: &Iccid) -> Option<coapgate_location::Position> {
        self.0.read().unwrap().get(iccid).cloned()
    }
    fn record(&self, iccid: &Iccid, position: coapgate_location::Position) {
        self.0.write().unwrap().insert(iccid.clone(), position);
    }
}

/// Registrations in memory; `fail` makes recording fail.
#[derive(Default, Clone)]
pub struct Registered {
    pub devices: Arc<RwLock<std::collections::HashSet<Iccid>>>,
    pub fail: Arc<AtomicBool>,
}

impl coapgate_model::Registrations for Registered {
    fn is_registered(&self, iccid: &Iccid) -> bool {
        self.devices.read().unwrap().contains(iccid)
    }
}

impl Registered {
    fn mark(&self, iccid: &Iccid) -> StoreResult {
        if self.fail.load(Ordering::Relaxed) {
            return StoreResult::Failed;
        }
        self.devices.write().unwrap().insert(iccid.clone());
        StoreResult::Done
    }
}

/// The active template, changeable while the engine runs.
pub type ActiveTemplate = Arc<RwLock<Option<Arc<coapgate_translate::Template>>>>;

/// Generates `PSK0000000000001`, `PSK0000000000002`, …
pub struct CountingPsks(pub u32);

impl PskGenerator for CountingPsks {
    fn generate(&mut self) -> Psk {
        self.0 += 1;
        PskRecord::restore(
            &format!("PSK{:013}", self.0),
            coapgate_bootstrap::PskOrigin::Generated,
            None,
        )
        .unwrap()
        .psk
    }
}

/// The engine with a fake clock; every output is collected, and store
/// writes are carried out by an in-memory store that takes
/// `store_latency` per write.
pub struct World {
    pub endpoint: Endpoint,
    pub devices: Devices,
    pub psks: Psks,
    pub positions: Positions,
    pub registered: Registered,
    pub template: ActiveTemplate,
    pub start: Instant,
    pub now: Instant,
    pub wall: SystemTime,
    /// Everything the engine sent, in order, with the time it was sent.
    pub sent: Vec<(Instant, Transmit)>,
    /// Everything the engine asked to publish.
    pub published: Vec<Publish>,
    /// Everything the engine asked the store to write.
    pub store_writes: Vec<StoreWrite>,
    /// How long the store takes per write; zero answers within the same
    /// drain. Writes are carried out one after another, like the server's
    /// writer does.
    pub store_latency: Duration,
    /// Writes in the store's hands: (when it answers, the write).
    store_busy: std::collections::VecDeque<(Instant, StoreWrite)>,
}

pub fn device_link(last_octet: u8) -> Link {
    Link::Udp(SocketAddr::new(
        IpAddr::from([127, 0, 0, last_octet]),
        40000,
    ))
}

impl World {
    /// One active device at 127.0.0.2, the broker connected.
    pub fn new() -> Self {
        Self::with_config(EndpointConfig::default())
    }

    pub fn with_config(config: EndpointConfig) -> Self {
        let devices = Devices::default();
        devices.add(ICCID, "127.0.0.2", DeviceStatus::Active);
        let psks = Psks::default();
        let positions = Positions::default();
        let registered = Registered::default();
        // Existing tests are about other things: the device counts as
        // registered already unless a test says otherwise.
        registered
            .devices
            .write()
            .unwrap()
            .insert(ICCID.parse().unwrap());
        let template: ActiveTemplate = Arc::default();
        let source = template.clone();
        let mut endpoint = Endpoint::new(config, Arc::new(devices.clone()))
            .with_bootstrap()
            .with_psk_generator(Box::new(CountingPsks(0)))
            .with_positions(Arc::new(positions.clone()))
            .with_registrations(Arc::new(registered.clone()))
            .with_templates(Arc::new(move || source.read().unwrap().clone()));
        endpoint.handle_broker_state(true);
        let start = Instant::now();
        Self {
            endpoint,
            devices,
            psks,
            positions,
            registered,
            template,
            start,
            now: start,
            wall: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            sent: Vec::new(),
            published: Vec::new(),
            store_writes: Vec::new(),
            store_latency: Duration::ZERO,
            store_busy: std::collections::VecDeque::new(),
        }
    }

    fn drain(&mut self) {
        // Bounded: a drain yields a handful of outputs.
        for _ in 0..100_000 {
            match self.endpoint.poll_output() {
                Output::Transmit(t) => self.sent.push((self.now, t)),
                Output::Publish(p) => self.published.push(p),
                Output::Store(write) => {
                    self.store_writes.push(write.clone());
                    // One after another: a write starts when the previous ended.
                    let start = self.store_busy.back().map_or(self.now, |&(at, _)| at);
                    self.store_busy
                        .push_back((start.max(self.now) + self.store_latency, write));
                    if self.store_latency.is_zero() {
                        self.store_answers_due();
                    }
                }
                Output::Timeout(_) => return,
            }
        }
        panic!("the engine never stopped producing outputs");
    }

    /// The store answers every write due by now.
    fn store_answers_due(&mut self) {
        while let Some((at, _)) = self.store_busy.front() {
            if *at > self.now {
                break;
            }
            let Some((_, write)) = self.store_busy.pop_front() else {
                break;
            };
            let result = match &write.request {
                StoreRequest::Bootstrap(update) => self.psks.bootstrap(update),
                StoreRequest::MarkRegistered { iccid, .. } => self.registered.mark(iccid),
            };
            self.endpoint
                .handle_store_result(self.now, write.id, result);
        }
    }

    /// Makes `json` the active template.
    pub fn set_template(&self, json: &str) {
        let template = coapgate_translate::Template::parse_str(json).unwrap();
        *self.template.write().unwrap() = Some(Arc::new(template));
    }

    /// Confirms every publish not yet confirmed; returns what the engine sent.
    pub fn confirm_all(&mut self) -> Vec<Vec<u8>> {
        let ids: Vec<u64> = self.published.iter().map(|p| p.id).collect();
        ids.into_iter()
            .flat_map(|id| self.broker(id, PublishResult::Confirmed))
            .collect()
    }

    /// Deliver a datagram to the engine; returns what it sent in reply.
    pub fn deliver(&mut self, from: Link, bytes: &[u8]) -> Vec<Vec<u8>> {
        let before = self.sent.len();
        self.endpoint
            .handle_datagram(self.now, self.wall, from, bytes);
        self.drain();
        self.sent[before..]
            .iter()
            .map(|(_, t)| t.payload.clone())
            .collect()
    }

    /// Report the broker's verdict; returns what the engine sent.
    pub fn broker(&mut self, id: u64, result: PublishResult) -> Vec<Vec<u8>> {
        let before = self.sent.len();
        self.endpoint.handle_publish_result(self.now, id, result);
        self.drain();
        self.sent[before..]
            .iter()
            .map(|(_, t)| t.payload.clone())
            .collect()
    }

    /// Let time pass, firing every timer on the way exactly when due;
    /// returns what the engine sent meanwhile with the time since start.
    pub fn advance(&mut self, by: Duration) -> Vec<(Duration, Vec<u8>)> {
        let target = self.now + by;
        let before = self.sent.len();
        clock::advance(self, self.now, target);
        self.wall += target - self.now;
        self.now = target;
        let start = self.start;
        self.sent[before..]
            .iter()
            .map(|(at, t)| (*at - start, t.payload.clone()))
            .collect()
    }
}

/// A request as a device would send it.
pub struct Req {
    pub packet: Packet,
}

impl Req {
    pub fn new(kind: MessageType, method: RequestType, message_id: u16) -> Self {
        let mut packet = Packet::new();
        packet.header.set_type(kind);
        packet.header.code = MessageClass::Request(method);
        packet.header.message_id = message_id;
        Self { packet }
    }
    pub fn con_post(message_id: u16) -> Self {
        Self::new(MessageType::Confirmable, RequestType::Post, message_id)
    }
    pub fn non_post(message_id: u16) -> Self {
        Self::new(MessageType::NonConfirmable, RequestType::Post, message_id)
    }
    pub fn path(mut self, segment: &str) -> Self {
        self.packet
            .add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
        self
    }
    pub fn query(mut self, q: &str) -> Self {
        self.packet
            .add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        self
    }
    pub fn option(mut self, number: u16, value: &[u8]) -> Self {
        self.packet
            .add_option(CoapOption::from(number), value.to_vec());
        self
    }
    pub fn token(mut self, token: &[u8]) -> Self {
        codec::set_token(&mut self.packet, token).unwrap();
        self
    }
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.packet.payload = payload.to_vec();
        self
    }
    pub fn bytes(&self) -> Vec<u8> {
        codec::encode(&self.packet).unwrap()
    }
}

/// A decoded response, for assertions.
#[derive(Debug)]
pub struct Resp {
    pub kind: MessageType,
    pub message_id: u16,
    pub code: MessageClass,
    pub token: Vec<u8>,
    pub packet: Packet,
}

impl Resp {
    pub fn parse(bytes: &[u8]) -> Self {
        let packet = codec::decode(bytes).expect("the engine sends valid CoAP");
        Self {
            kind: packet.header.get_type(),
            message_id: packet.header.message_id,
            code: packet.header.code,
            token: packet.get_token().to_vec(),
            packet,
        }
    }
    pub fn is(&self, code: ResponseType) -> bool {
        self.code == MessageClass::Response(code)
    }
}

/// Exactly one datagram, decoded.
pub fn one(sent: Vec<Vec<u8>>) -> Resp {
    assert_eq!(sent.len(), 1, "expected exactly one datagram, got {sent:?}");
    Resp::parse(&sent[0])
}

/// The world's timers: the engine's, and the in-memory store's answers.
impl Timers for World {
    fn poll_timeout(&self) -> Option<Instant> {
        let store = self.store_busy.front().map(|&(at, _)| at);
        [self.endpoint.poll_timeout(), store]
            .into_iter()
            .flatten()
            .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        if now > self.now {
            self.wall += now - self.now;
            self.now = now;
        }
        self.store_answers_due();
        self.endpoint.handle_timeout(self.now);
        self.drain();
    }
}
