//! A deterministic world for the engine: a fake clock, an in-memory
//! network, a scripted device and a scripted broker (model: quinn's `Pair`).

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use coapgate_bootstrap::{BootstrapError, Psk, PskGenerator, PskRecord, PskStore};
use coapgate_endpoint::codec::{
    self, CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType,
};
use coapgate_endpoint::{Endpoint, EndpointConfig, Link, Publish, PublishResult, Transmit};
use coapgate_model::{Device, DeviceDirectory, DeviceStatus, Iccid};

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
    fn by_ip(&self, ip: IpAddr) -> Option<Arc<Device>> {
        self.0.read().unwrap().get(&ip).cloned()
    }
}

/// PSK records in memory; `fail` makes every update fail like a broken
/// database.
#[derive(Default, Clone)]
pub struct Psks {
    pub records: Arc<RwLock<HashMap<Iccid, PskRecord>>>,
    pub fail: Arc<std::sync::atomic::AtomicBool>,
}

impl PskStore for Psks {
    fn update_psk(
        &self,
        iccid: &Iccid,
        update: &mut dyn FnMut(Option<&PskRecord>) -> PskRecord,
    ) -> Result<PskRecord, BootstrapError> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(BootstrapError::Store("disk full".into()));
        }
        let mut records = self.records.write().unwrap();
        let next = update(records.get(iccid));
        records.insert(iccid.clone(), next.clone());
        Ok(next)
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
    pub fail: Arc<std::sync::atomic::AtomicBool>,
}

impl coapgate_model::Registrations for Registered {
    fn is_registered(&self, iccid: &Iccid) -> bool {
        self.devices.read().unwrap().contains(iccid)
    }
    fn mark_registered(&self, iccid: &Iccid, _at: SystemTime) -> Result<(), String> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("disk full".into());
        }
        self.devices.write().unwrap().insert(iccid.clone());
        Ok(())
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

/// The engine with a fake clock; every output is collected.
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
            .with_psk_store(Arc::new(psks.clone()))
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
        }
    }

    fn drain(&mut self) {
        while let Some(t) = self.endpoint.poll_transmit() {
            self.sent.push((self.now, t));
        }
        while let Some(p) = self.endpoint.poll_publish() {
            self.published.push(p);
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
        // Bounded: each round either fires a timer or ends.
        for _ in 0..100_000 {
            match self.endpoint.poll_timeout() {
                Some(at) if at <= target => {
                    if at > self.now {
                        self.wall += at - self.now;
                        self.now = at;
                    }
                    self.endpoint.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
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
