//! Shards (`[coap] threads = 4`) from the network side: every datagram of a
//! device — its requests, their retransmissions, and requests from new
//! source ports (a NAT binding that changed, a client run again) — reaches
//! one shard, chosen by its source address, so each retransmission meets
//! the dedup cache that answered the original. Real UDP from 16 device
//! addresses; Mosquitto's `mosquitto_sub` shows what reached the broker;
//! `/metrics` shows which shard counted each datagram.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::UdpSocket;
use std::time::Duration;

use coapgate_endpoint::codec::{self, CoapOption, MessageClass, MessageType, RequestType};
use coapgate_server::{BackgroundServer, Config};
use coapgate_testkit::{Mosquitto, MosquittoSub, http};

const SHARDS: usize = 4;
const DEVICES: u8 = 16;
/// Sockets (source ports) per device, one after the other.
const PORTS: u16 = 3;
/// Requests per socket, each sent three times.
const REQUESTS: u16 = 4;
const SENDS: u16 = 3;

fn iccid(device: u8) -> String {
    format!("89882806660000001{device:02}")
}

fn ip(device: u8) -> String {
    format!("127.0.0.{}", 10 + u16::from(device))
}

fn config(broker: &Mosquitto) -> Config {
    let mut toml = format!(
        "[coap]\nbind = \"127.0.0.1:0\"\nthreads = {SHARDS}\n[coaps]\nbind = \"127.0.0.1:0\"\n\
         [admin]\nbind = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite::memory:\"\n\
         [mqtt]\nurl = \"{}\"\n",
        broker.url()
    );
    for device in 0..DEVICES {
        toml += &format!(
            "[[device]]\niccid = \"{}\"\nip = \"{}\"\n",
            iccid(device),
            ip(device)
        );
    }
    let mut config = Config::from_toml(&toml).unwrap();
    config.mqtt.connect_timeout = Duration::from_secs(5);
    config
}

/// CON POST /data?t=d{device}p{port}m{mid}: a topic of its own per message.
fn post(device: u8, port: u16, mid: u16) -> Vec<u8> {
    let mut p = codec::Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = mid;
    p.set_token(vec![device, 0x5a]);
    p.add_option(CoapOption::UriPath, b"data".to_vec());
    p.add_option(
        CoapOption::UriQuery,
        format!("t=d{device}p{port}m{mid}").into_bytes(),
    );
    p.payload = format!("{device}/{port}/{mid}").into_bytes();
    codec::encode(&p).unwrap()
}

/// `coapgate_shard_datagrams_total` by shard.
fn per_shard(server: &BackgroundServer) -> BTreeMap<String, u64> {
    let (status, text) = http("GET", server.admin_addr(), "/metrics", None, None);
    assert_eq!(status, 200);
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("coapgate_shard_datagrams_total{shard=\"")?;
            let (shard, value) = rest.split_once("\"} ")?;
            Some((shard.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn metric(server: &BackgroundServer, sample: &str) -> u64 {
    let (_, text) = http("GET", server.admin_addr(), "/metrics", None, None);
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_device_always_meets_the_same_shard_and_its_dedup_cache() {
    let test = "shards";
    let Some(broker) = Mosquitto::start(test) else {
        return;
    };
    let Some(sub) = MosquittoSub::start(broker.port, test) else {
        return;
    };
    let server = common::start(config(&broker));
    let shards = per_shard(&server);
    assert_eq!(shards.len(), SHARDS, "{shards:?}");

    let mut shard_of = HashMap::new();
    for device in 0..DEVICES {
        let before = per_shard(&server);
        for port in 0..PORTS {
            let socket = UdpSocket::bind((ip(device).as_str(), 0)).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            socket.connect(server.coap_addr()).unwrap();
            for n in 0..REQUESTS {
                let mid = 0x1000 + port * 0x100 + n;
                let request = post(device, port, mid);
                let mut answers = Vec::new();
                for _ in 0..SENDS {
                    socket.send(&request).unwrap();
                    let mut buf = [0u8; 256];
                    let len = socket.recv(&mut buf).unwrap();
                    answers.push(buf[..len].to_vec());
                }
                let first = codec::decode(&answers[0]).unwrap();
                assert_eq!(first.header.message_id, mid);
                assert_eq!(
                    u8::from(first.header.code),
                    0x44,
                    "2.04 for {device}/{port}/{mid}"
                );
                assert!(
                    answers.iter().all(|a| *a == answers[0]),
                    "each retransmission answered from the cache, byte for byte: {answers:02x?}"
                );
            }
        }
        // Every datagram of the device, from every port, on one shard.
        let after = per_shard(&server);
        let grown: Vec<(&String, u64)> = after
            .iter()
            .map(|(shard, n)| (shard, n - before.get(shard).copied().unwrap_or(0)))
            .filter(|(_, grew)| *grew > 0)
            .collect();
        assert_eq!(grown.len(), 1, "device {device}: {grown:?}");
        assert_eq!(grown[0].1, u64::from(PORTS * REQUESTS * SENDS));
        shard_of.insert(device, grown[0].0.clone());
    }
    // Steered by address, as the documented hash says; more than one
    // shard at work.
    for device in 0..DEVICES {
        let expected = coapgate_server::shard_of(ip(device).parse().unwrap(), SHARDS as u32);
        assert_eq!(shard_of[&device], expected.to_string(), "device {device}");
    }
    let used: std::collections::HashSet<&String> = shard_of.values().collect();
    assert!(used.len() > 1, "{shard_of:?}");

    let total = usize::from(DEVICES) * usize::from(PORTS * REQUESTS);
    let telemetry = sub.wait_for_telemetry(total, Duration::from_secs(10));
    // Anything published twice would arrive by now.
    std::thread::sleep(Duration::from_millis(500));
    let telemetry = sub.telemetry().len().max(telemetry.len());
    assert_eq!(telemetry, total, "each message reached the broker once");
    assert_eq!(
        metric(&server, "coapgate_dedup_hits_total"),
        (total * usize::from(SENDS - 1)) as u64
    );
    assert_eq!(
        metric(
            &server,
            "coapgate_requests_total{resource=\"telemetry\",code=\"2.04\"}"
        ),
        total as u64
    );
}
