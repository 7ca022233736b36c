//! A whole CoAPS exchange in memory: OpenSSL's own DTLS client on one
//! side, the gateway on the other, a fake clock, no socket and no tokio —
//! handshake, POST, 2.04 only after the broker confirmed, duplicate replay,
//! idle expiry; and no handshake for an address no device has.

#![allow(clippy::unwrap_used)]

#[path = "../../coapgate-dtls/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use coapgate_dtls::{DtlsConfig, DtlsServer, Key};
use coapgate_endpoint::codec::{self, MessageClass, MessageType, ResponseType};
use coapgate_endpoint::{Endpoint, EndpointConfig, Publish, PublishResult};
use coapgate_exchange::clock::{self, Timers};
use coapgate_gateway::{Datagram, Gateway, Listener, Output};
use coapgate_model::{Device, DeviceDirectory, DeviceEntry, DeviceStatus};
use support::Client;

const ICCID: &str = "8988228066602306711";
const PSK: &[u8] = b"Ab3dEf6hIj9kLm2n";
const SUITE: &str = "PSK-AES128-CBC-SHA256";

struct Devices(HashMap<IpAddr, Arc<Device>>);

impl DeviceDirectory for Devices {
    fn by_ip(&self, ip: IpAddr) -> Option<DeviceEntry> {
        self.0.get(&ip).map(|d| d.entry())
    }
}

/// The gateway, its clients and a fake clock.
struct World {
    gateway: Gateway,
    now: Instant,
    wall: SystemTime,
    clients: Vec<Client>,
    published: Vec<Publish>,
    /// Datagrams for addresses without a client.
    stray: Vec<Datagram>,
    /// Datagrams sent on the plain CoAP socket.
    plain: Vec<Datagram>,
}

impl World {
    fn new(dtls: DtlsConfig) -> Self {
        let device = Device {
            iccid: ICCID.parse().unwrap(),
            imsi: None,
            ip: "127.0.0.2".parse().unwrap(),
            status: DeviceStatus::Active,
            name: None,
        };
        let devices = Devices(HashMap::from([(device.ip, Arc::new(device))]));
        let mut endpoint = Endpoint::new(EndpointConfig::default(), Arc::new(devices));
        endpoint.handle_broker_state(true);
        let psk = |identity: &str| (identity == ICCID).then(|| Key::new(PSK.to_vec()));
        let server = DtlsServer::new(dtls, Arc::new(psk)).unwrap();
        Self {
            gateway: Gateway::new(endpoint, server),
            now: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            clients: Vec::new(),
            published: Vec::new(),
            stray: Vec::new(),
            plain: Vec::new(),
        }
    }

    fn client(&mut self, addr: &str) -> usize {
        let addr: SocketAddr = addr.parse().unwrap();
        self.clients.push(Client::new(addr, SUITE, ICCID, PSK));
        self.clients.len() - 1
    }

    /// The contract: every output until the timer.
    fn drain(&mut self) {
        for _ in 0..10_000 {
            match self.gateway.poll_output() {
                Output::Transmit(d) if d.listener == Listener::Coaps => {
                    match self.clients.iter_mut().find(|c| c.addr == d.to) {
                        Some(c) => {
                            c.got.push(d.payload.clone());
                            c.stream.get_mut().inbox.push_back(d.payload);
                        }
                        None => self.stray.push(d),
                    }
                }
                Output::Transmit(d) => self.plain.push(d),
                Output::Publish(p) => self.published.push(p),
                Output::Store(w) => panic!("no store write expected: {w:?}"),
                Output::Timeout(at) => {
                    assert!(at.is_none_or(|at| at > self.now), "a timer already due");
                    return;
                }
            }
        }
        panic!("the gateway never stopped producing outputs");
    }

    /// Runs the clients and the gateway until nothing moves.
    fn pump(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            for i in 0..self.clients.len() {
                let from = self.clients[i].addr;
                for datagram in self.clients[i].step() {
                    moved = true;
                    self.gateway.handle_datagram(
                        self.now,
                        self.wall,
                        Listener::Coaps,
                        from,
                        &datagram,
                    );
                    self.drain();
                }
            }
            if !moved
                && self
                    .clients
                    .iter()
                    .all(|c| c.stream.get_ref().inbox.is_empty())
            {
                return;
            }
        }
        panic!("the network did not settle");
    }

    fn confirm(&mut self, publish: usize) {
        let id = self.published[publish].id;
        self.gateway
            .handle_publish_result(self.now, id, PublishResult::Confirmed);
        self.drain();
        self.pump();
    }

    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        clock::advance(self, self.now, target);
        self.now = target;
    }
}

impl Timers for World {
    fn poll_timeout(&self) -> Option<Instant> {
        self.gateway.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.gateway.handle_timeout(self.now);
        self.drain();
    }
}

/// CON POST /data?t=test with `payload`, message ID `mid`, token 0x42.
fn post(mid: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = codec::Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(codec::RequestType::Post);
    p.header.message_id = mid;
    codec::set_token(&mut p, &[0x42]).unwrap();
    p.add_option(codec::CoapOption::UriPath, b"data".to_vec());
    p.add_option(codec::CoapOption::UriQuery, b"t=test".to_vec());
    p.payload = payload.to_vec();
    codec::encode(&p).unwrap()
}

#[test]
fn a_whole_coaps_exchange_runs_in_memory() {
    let mut config = DtlsConfig::default();
    config.idle_timeout = Duration::from_secs(60);
    let mut w = World::new(config);
    let c = w.client("127.0.0.2:40000");
    w.pump();
    assert!(w.clients[c].connected, "the handshake completed");
    assert_eq!(w.gateway.dtls_stats().sessions, 1);

    // POST: published, but no answer before the broker confirmed.
    let request = post(7, b"21.5");
    w.clients[c].write(&request);
    w.pump();
    assert_eq!(w.published.len(), 1);
    assert_eq!(w.published[0].topic, format!("{ICCID}/test"));
    assert!(
        w.clients[c].received.is_empty(),
        "no 2.04 before the PUBACK"
    );
    w.confirm(0);
    assert_eq!(w.clients[c].received.len(), 1);
    let answer = codec::decode(&w.clients[c].received[0]).unwrap();
    assert_eq!(answer.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(answer.header.message_id, 7);
    assert_eq!(answer.get_token(), [0x42]);
    assert_eq!(
        answer.header.code,
        MessageClass::Response(ResponseType::Changed)
    );

    // The device did not get it (it thinks): the duplicate is replayed
    // byte for byte and not published again.
    w.clients[c].write(&request);
    w.pump();
    assert_eq!(w.clients[c].received.len(), 2);
    assert_eq!(w.clients[c].received[1], w.clients[c].received[0]);
    assert_eq!(w.published.len(), 1);

    // Idle for the idle timeout: the session is gone, the engine forgot
    // it, and a record on it reaches nobody.
    w.advance(Duration::from_secs(61));
    assert_eq!(w.gateway.dtls_stats().sessions, 0);
    w.clients[c].write(&post(8, b"22.0"));
    w.pump();
    assert_eq!(w.published.len(), 1);
    assert_eq!(w.clients[c].received.len(), 2);
    assert!(w.plain.is_empty() && w.stray.is_empty());
}

#[test]
fn a_client_hello_with_a_valid_cookie_from_an_unregistered_address_allocates_no_handshake() {
    let mut w = World::new(DtlsConfig::default());
    let stranger = w.client("127.0.0.9:40000");
    w.pump();
    let stats = w.gateway.dtls_stats();
    assert_eq!(stats.cookies_sent, 1, "the stateless cookie round trip");
    assert_eq!(stats.handshakes_refused, 1, "then refused");
    assert_eq!(stats.handshakes_in_progress, 0, "no Ssl, no slot");
    assert_eq!((stats.handshakes_ok, stats.sessions), (0, 0));
    assert!(!w.clients[stranger].connected);
    // The stranger heard the HelloVerifyRequest and nothing after it.
    assert_eq!(w.clients[stranger].got.len(), 1);
    // A registered device right after still gets in.
    let device = w.client("127.0.0.2:40001");
    w.pump();
    assert!(w.clients[device].connected);
}
