//! The sans-IO engine with a custom sink instead of MQTT: no tokio, no
//! sockets, no broker. A `HashMap` is the device directory, a hand-made
//! `CON POST` datagram is the network, and a `Vec` is the "broker" that
//! confirms every publish it receives. It follows the engine's contract:
//! after every `handle_*` call, drain `poll_output` until `Output::Timeout`.
//!
//! `cargo run -p coapgate-examples --example engine_custom_sink`

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use coapgate_endpoint::{Endpoint, EndpointConfig, Link, Output, Publish, PublishResult, Transmit};
use coapgate_model::{Device, DeviceDirectory, DeviceEntry, DeviceStatus};

/// Devices by IP address, all in memory (a real driver keeps such a view
/// current from its store).
struct Directory(HashMap<IpAddr, Arc<Device>>);

impl DeviceDirectory for Directory {
    fn by_ip(&self, ip: IpAddr) -> Option<DeviceEntry> {
        self.0.get(&ip).map(|d| d.entry())
    }
}

/// Everything the engine wants done, collected in order.
#[derive(Default)]
struct Outputs {
    transmits: Vec<Transmit>,
    publishes: Vec<Publish>,
}

/// The contract: take every output until the engine names its next timer.
/// This sink serves no `/bootstrap` and records no registrations, so the
/// engine never asks for a store write.
fn drain(endpoint: &mut Endpoint, out: &mut Outputs) {
    loop {
        match endpoint.poll_output() {
            Output::Transmit(transmit) => out.transmits.push(transmit),
            Output::Publish(publish) => out.publishes.push(publish),
            Output::Store(write) => unreachable!("no store was configured: {write:?}"),
            Output::Timeout(_) => break,
        }
    }
}

fn main() {
    let device = Device {
        iccid: "8988280666000000000".parse().expect("a valid ICCID"),
        imsi: None,
        ip: "10.0.0.7".parse().expect("an IP address"),
        status: DeviceStatus::Active,
        name: Some("pump-7".to_owned()),
    };
    let directory = Directory(HashMap::from([(device.ip, Arc::new(device))]));
    let mut endpoint = Endpoint::new(EndpointConfig::default(), Arc::new(directory));
    endpoint.handle_broker_state(true); // our sink is always "connected"

    // CON POST /data?t=temp, message ID 0x0042, token 0x7a, payload "21.5".
    let request = [
        0x41, 0x02, 0x00, 0x42, 0x7a, // header, token
        0xb4, b'd', b'a', b't', b'a', // Uri-Path "data"
        0x46, b't', b'=', b't', b'e', b'm', b'p', // Uri-Query "t=temp"
        0xff, b'2', b'1', b'.', b'5', // payload
    ];
    let from = Link::Udp("10.0.0.7:56830".parse().expect("a socket address"));
    let now = Instant::now();
    let mut out = Outputs::default();

    endpoint.handle_datagram(now, SystemTime::now(), from, &request);
    drain(&mut endpoint, &mut out);
    assert!(
        out.transmits.is_empty(),
        "no answer before the sink confirmed"
    );

    // The custom sink: store each publish, then confirm it.
    let mut sink: Vec<Publish> = Vec::new();
    for publish in std::mem::take(&mut out.publishes) {
        let id = publish.id;
        println!(
            "sink <- {} ({} bytes): {}",
            publish.topic,
            publish.payload.len(),
            String::from_utf8_lossy(&publish.payload)
        );
        sink.push(publish);
        endpoint.handle_publish_result(now, id, PublishResult::Confirmed);
        drain(&mut endpoint, &mut out);
    }
    assert_eq!(sink.len(), 1);
    assert_eq!(sink[0].topic, "8988280666000000000/temp");

    let [ack] = out.transmits.as_slice() else {
        panic!("expected exactly one ACK, got {:?}", out.transmits);
    };
    println!("to {:?}: {:02x?}", ack.to, ack.payload);
    // ACK 2.04 Changed, the request's message ID and token, piggybacked.
    assert_eq!(ack.to, from);
    assert_eq!(ack.payload, [0x61, 0x44, 0x00, 0x42, 0x7a]);
    if let Some(at) = endpoint.poll_timeout() {
        println!("next handle_timeout due in {:?}", at - now);
    }
}
