//! The load generator against an in-process coapgate with its embedded
//! broker: every request gets 2.04 and (where `mosquitto_sub` is installed
//! to watch the broker) reaches the broker exactly once.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use coapgate_load::{LoadConfig, device_config};
use coapgate_server::{BackgroundServer, Config};

#[test]
fn every_request_gets_2_04_and_reaches_the_broker_once() {
    const TEST: &str = "every_request_gets_2_04_and_reaches_the_broker_once";
    const DEVICES: usize = 3;
    const REQUESTS: u64 = 300;

    let mqtt_port = coapgate_testkit::free_tcp_port();
    let config = Config::from_toml(&format!(
        "[coap]\nbind = \"127.0.0.1:0\"\n[coaps]\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite::memory:\"\n\
         [mqtt]\nembedded_bind = \"127.0.0.1:{mqtt_port}\"\nconnect_timeout = 5\n{}",
        device_config(DEVICES).unwrap()
    ))
    .unwrap();
    let server = BackgroundServer::start(config).unwrap();
    // Without mosquitto_sub only the broker side goes unchecked.
    let sub = coapgate_testkit::MosquittoSub::start(mqtt_port, TEST);

    let load = LoadConfig {
        target: server.coap_addr(),
        devices: DEVICES,
        requests: REQUESTS,
        concurrency: 2,
        payload_size: 100,
        duration: Duration::from_secs(60),
        ..LoadConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(coapgate_load::run(&load)).unwrap();

    assert_eq!(report.sent, REQUESTS, "{report}");
    assert_eq!(report.count("2.04"), REQUESTS, "{report}");
    assert_eq!(report.answered(), REQUESTS, "{report}");
    assert_eq!(report.timeouts + report.unfinished, 0, "{report}");
    assert_eq!(report.latencies.len() as u64, REQUESTS);

    let Some(sub) = sub else {
        return;
    };
    sub.wait_for_telemetry(REQUESTS as usize, Duration::from_secs(10));
    // A duplicate publish would arrive right behind the last one.
    std::thread::sleep(Duration::from_millis(300));
    let messages = sub.telemetry();
    assert_eq!(messages.len() as u64, REQUESTS, "messages at the broker");
    for index in 0..DEVICES {
        let topic = format!("{}/load", coapgate_load::device_iccid(index));
        let count = messages.iter().filter(|m| m.topic == topic).count();
        assert!(count > 0, "no message from device {index} on {topic}");
    }
}
