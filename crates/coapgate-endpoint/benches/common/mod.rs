//! The engine rig shared by the `engine` and `engine_allocs` benches: 10 000
//! devices in a hash map, a telemetry datagram, a clock of its own.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use coapgate_endpoint::{Endpoint, EndpointConfig, Link, Output, Publish, PublishResult};
use coapgate_model::{Device, DeviceDirectory, DeviceEntry, DeviceStatus};

/// Devices in the directory.
pub const DEVICES: usize = 10_000;

/// Time between two requests: 2 000 requests/s, the rate the default dedup
/// bounds hold for the whole 247 s lifetime (docs/configuration.md), so the
/// cache runs full, as in a busy steady state.
const STEP: Duration = Duration::from_micros(500);

/// The device directory as the store keeps it: a hash map by IP.
struct Directory(HashMap<IpAddr, Arc<Device>>);

impl DeviceDirectory for Directory {
    fn by_ip(&self, ip: IpAddr) -> Option<DeviceEntry> {
        self.0.get(&ip).map(|d| d.entry())
    }
}

fn device_ip(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(10, 0, 0, 1)) + index as u32,
    ))
}

fn directory() -> Directory {
    Directory(
        (0..DEVICES)
            .map(|i| {
                let device = Device {
                    iccid: (8_988_280_666_000_000_000u64 + i as u64)
                        .to_string()
                        .parse()
                        .expect("19 digits"),
                    imsi: Some(
                        (901_405_100_000_000u64 + i as u64)
                            .to_string()
                            .parse()
                            .expect("15 digits"),
                    ),
                    ip: device_ip(i),
                    status: DeviceStatus::Active,
                    name: None,
                };
                (device.ip, Arc::new(device))
            })
            .collect(),
    )
}

/// CON POST /data?t=test, token 0xab, a 100-byte payload; the message ID
/// (bytes 2 and 3) is set per request.
fn telemetry() -> Vec<u8> {
    let mut datagram = vec![0x41, 0x02, 0x00, 0x00, 0xab, 0xb4];
    datagram.extend_from_slice(b"data");
    datagram.push(0x46);
    datagram.extend_from_slice(b"t=test");
    datagram.push(0xff);
    datagram.extend_from_slice(br#"{"temperature":21.5,"humidity":40,"battery":3.71,"rssi":-87,"seq":1234567,"ts":1700000000,"ok":true}"#);
    datagram
}

/// An engine with 10 000 devices, the broker up, and a clock of its own.
pub struct Rig {
    endpoint: Endpoint,
    links: Vec<Link>,
    datagram: Vec<u8>,
    now: Instant,
    wall: SystemTime,
    requests: u64,
}

impl Rig {
    pub fn new() -> Self {
        let mut endpoint = Endpoint::new(EndpointConfig::default(), Arc::new(directory()));
        endpoint.handle_broker_state(true);
        Self {
            endpoint,
            links: (0..DEVICES)
                .map(|i| Link::Udp(SocketAddr::new(device_ip(i), 40_000)))
                .collect(),
            datagram: telemetry(),
            now: Instant::now(),
            wall: SystemTime::now(),
            requests: 0,
        }
    }

    /// One new request, as the driver runs it: the datagram, its publish,
    /// the broker's confirmation, the 2.04; and the timer when it is due
    /// (the stale piggyback and deadline entries, dedup expiry).
    pub fn new_request(&mut self) {
        let n = self.requests;
        self.requests += 1;
        let device = (n % DEVICES as u64) as usize;
        let message_id = (n / DEVICES as u64) as u16;
        self.datagram[2..4].copy_from_slice(&message_id.to_be_bytes());
        self.now += STEP;
        self.wall += STEP;
        let endpoint = &mut self.endpoint;
        endpoint.handle_datagram(self.now, self.wall, self.links[device], &self.datagram);
        let mut confirmed = None;
        drain(endpoint, |publish| confirmed = Some(publish.id));
        if let Some(id) = confirmed {
            endpoint.handle_publish_result(self.now, id, PublishResult::Confirmed);
            drain(endpoint, |_| {});
        }
        if endpoint.poll_timeout().is_some_and(|at| at <= self.now) {
            endpoint.handle_timeout(self.now);
            drain(endpoint, |_| {});
        }
    }

    /// A retransmission of request `n` (already answered): replayed from
    /// the deduplication cache.
    pub fn duplicate(&mut self, n: u64) {
        let device = (n % DEVICES as u64) as usize;
        let message_id = (n / DEVICES as u64) as u16;
        self.datagram[2..4].copy_from_slice(&message_id.to_be_bytes());
        let endpoint = &mut self.endpoint;
        endpoint.handle_datagram(self.now, self.wall, self.links[device], &self.datagram);
        drain(endpoint, |_| {});
    }
}

/// The engine's contract: every output until the timer, each one consumed.
fn drain(endpoint: &mut Endpoint, mut on_publish: impl FnMut(&Publish)) {
    loop {
        match endpoint.poll_output() {
            Output::Publish(publish) => {
                on_publish(&publish);
                black_box(publish);
            }
            Output::Timeout(at) => {
                black_box(at);
                return;
            }
            other => {
                black_box(other);
            }
        }
    }
}
