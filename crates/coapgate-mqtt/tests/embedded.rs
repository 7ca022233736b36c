//! The embedded rumqttd broker, with the bridge and a rumqttc subscriber.
//!
//! Needs the `embedded-broker` feature (`required-features` in Cargo.toml):
//! `cargo test -p coapgate-mqtt --features embedded-broker`; the workspace
//! run of scripts/test.sh has it through the `coapgate` binary.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coapgate_mqtt::{Bridge, BridgeConfig, BridgeEvent, EmbeddedBroker, MqttError, Outgoing};
use common::{Subscriber, collect_events};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_publishes_reach_a_subscriber_of_the_embedded_broker() {
    let rss_before = rss_kib();
    let addr: SocketAddr = ([127, 0, 0, 1], coapgate_testkit::free_tcp_port()).into();
    let broker = EmbeddedBroker::start(addr).expect("embedded broker");
    assert_eq!(broker.addr(), addr);
    let rss_started = rss_kib();

    let sub = Subscriber::start(
        addr.port(),
        "embedded-sub",
        false,
        rumqttc::QoS::AtLeastOnce,
    )
    .await;
    let (handle, mut rx) = Bridge::start({
        let mut config = BridgeConfig::default();
        config.port = addr.port();
        config.client_id = "embedded-bridge".into();
        config
    })
    .expect("a valid bridge configuration");
    let evs = collect_events(&mut rx, Duration::from_secs(10), |e| {
        e.contains(&BridgeEvent::Connected)
    })
    .await;
    assert!(evs.contains(&BridgeEvent::Connected), "{evs:?}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut expected = Vec::new();
    for id in 0..50u64 {
        // Include one near-64 KiB message: the broker must accept it.
        let payload = if id == 49 {
            Bytes::from(vec![b'z'; 60 * 1024])
        } else {
            Bytes::from(format!("embedded-{id}"))
        };
        let topic = format!("8988280666000000000/e{}", id % 3);
        expected.push((topic.clone(), payload.clone()));
        handle
            .publish(Outgoing {
                id,
                topic,
                payload,
                deadline,
            })
            .expect("publish");
    }
    let events = collect_events(&mut rx, Duration::from_secs(10), |e| {
        e.iter()
            .filter(|e| matches!(e, BridgeEvent::Delivered { .. }))
            .count()
            == 50
    })
    .await;
    let delivered = events
        .iter()
        .filter(|e| matches!(e, BridgeEvent::Delivered { .. }))
        .count();
    assert_eq!(delivered, 50, "{events:?}");

    let mut got = sub
        .wait_until(Duration::from_secs(10), |r| r.len() >= 50)
        .await;
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    eprintln!(
        "EMBEDDED RSS: process {rss_before} KiB before, {rss_started} KiB after start (+{} KiB), {} KiB after 50 messages",
        rss_started.saturating_sub(rss_before),
        rss_kib()
    );
    handle
        .shutdown(Instant::now() + Duration::from_secs(2))
        .await;
}

#[test]
fn start_refuses_port_zero_and_a_taken_port() {
    let zero: SocketAddr = ([127, 0, 0, 1], 0).into();
    assert!(matches!(
        EmbeddedBroker::start(zero),
        Err(MqttError::InvalidConfig { field: "bind", .. })
    ));
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    assert!(matches!(EmbeddedBroker::start(addr), Err(MqttError::Io(_))));
}
