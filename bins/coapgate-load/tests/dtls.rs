//! The DTLS mode against an in-process coapgate with its embedded broker
//! and per-device PSKs: every handshake completes and every request over
//! the sessions gets 2.04.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use coapgate_load::{DtlsOptions, LoadConfig, Report, dtls_device_config};
use coapgate_server::{BackgroundServer, Config};

const DEVICES: usize = 3;

fn server() -> BackgroundServer {
    let mqtt_port = coapgate_testkit::free_tcp_port();
    let config = Config::from_toml(&format!(
        "[coap]\nbind = \"127.0.0.1:0\"\n[coaps]\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite::memory:\"\n\
         [mqtt]\nembedded_bind = \"127.0.0.1:{mqtt_port}\"\nconnect_timeout = 5\n{}",
        dtls_device_config(DEVICES, None).unwrap()
    ))
    .unwrap();
    BackgroundServer::start(config).unwrap()
}

fn run(load: &LoadConfig) -> Report {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(coapgate_load::run(load)).unwrap()
}

#[test]
fn handshakes_and_requests_over_sessions_all_succeed() {
    const HANDSHAKES: u64 = 12;
    const REQUESTS: u64 = 300;
    let server = server();
    let pid = Some(std::process::id());

    // Fresh full handshakes, back to back, each closed with close_notify.
    let handshakes = run(&LoadConfig {
        target: server.coaps_addr(),
        devices: DEVICES,
        duration: Duration::from_secs(60),
        dtls: Some(DtlsOptions {
            handshakes: Some(HANDSHAKES),
            ..DtlsOptions::default()
        }),
        server_pid: pid,
        ..LoadConfig::default()
    });
    assert_eq!(handshakes.handshakes, HANDSHAKES, "{handshakes}");
    assert_eq!(handshakes.handshakes_failed(), 0, "{handshakes}");
    assert_eq!(handshakes.handshake_latencies.len() as u64, HANDSHAKES);
    assert_eq!(handshakes.sent, 0);
    assert!(
        handshakes.server.is_some(),
        "our own /proc entry is readable"
    );

    // One session per device, then CON POSTs over them.
    let requests = run(&LoadConfig {
        target: server.coaps_addr(),
        devices: DEVICES,
        requests: REQUESTS,
        concurrency: 2,
        payload_size: 100,
        duration: Duration::from_secs(60),
        dtls: Some(DtlsOptions::default()),
        ..LoadConfig::default()
    });
    assert_eq!(requests.handshakes, DEVICES as u64, "{requests}");
    assert_eq!(requests.handshakes_failed(), 0, "{requests}");
    assert_eq!(requests.sent, REQUESTS, "{requests}");
    assert_eq!(requests.count("2.04"), REQUESTS, "{requests}");
    assert_eq!(requests.answered(), REQUESTS, "{requests}");
    assert_eq!(requests.timeouts + requests.unfinished, 0, "{requests}");
    assert_eq!(requests.sessions_lost, 0, "{requests}");
    assert_eq!(requests.latencies.len() as u64, REQUESTS);
    let json = requests.to_json();
    assert_eq!(json["dtls"]["handshakes"], DEVICES as u64);
}

#[test]
fn a_wrong_key_fails_the_handshake_and_nothing_is_sent() {
    let server = server();
    let report = run(&LoadConfig {
        target: server.coaps_addr(),
        devices: 1,
        requests: 10,
        duration: Duration::from_secs(30),
        dtls: Some(DtlsOptions {
            psk: Some("not-the-device-key".to_owned()),
            handshake_timeout: Duration::from_secs(3),
            ..DtlsOptions::default()
        }),
        ..LoadConfig::default()
    });
    assert_eq!(report.handshakes, 0, "{report}");
    assert_eq!(report.handshakes_failed(), 1, "{report}");
    assert_eq!(report.sent, 0, "{report}");
}
