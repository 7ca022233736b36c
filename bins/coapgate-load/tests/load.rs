//! The load generator against an in-process coapgate with its embedded
//! broker: every request gets 2.04 and reaches the broker exactly once.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use coapgate_load::{LoadConfig, device_config};
use coapgate_server::{Config, Server};

/// A coapgate on its own runtime thread; stopped (gracefully) on drop.
/// The pattern of `crates/coapgate-server/tests/common/mod.rs`.
struct TestServer {
    coap: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(config: Config) -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server = Server::bind(config).await.unwrap();
                ready_tx.send(server.coap_addr()).unwrap();
                server
                    .serve(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let coap = ready_rx
            .recv_timeout(Duration::from_secs(15))
            .expect("server started");
        Self {
            coap,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn every_request_gets_2_04_and_reaches_the_broker_once() {
    const TEST: &str = "every_request_gets_2_04_and_reaches_the_broker_once";
    const DEVICES: usize = 3;
    const REQUESTS: u64 = 300;

    let mqtt_port = coapgate_testkit::free_tcp_port();
    let config = Config::from_toml(&format!(
        "[coap]\nbind = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite::memory:\"\n\
         [mqtt]\nembedded_bind = \"127.0.0.1:{mqtt_port}\"\nconnect_timeout = 5\n{}",
        device_config(DEVICES).unwrap()
    ))
    .unwrap();
    let server = TestServer::start(config);
    let Some(sub) = coapgate_testkit::MosquittoSub::start(mqtt_port, TEST) else {
        return;
    };

    let load = LoadConfig {
        target: server.coap,
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

    sub.wait_for_count(REQUESTS as usize, Duration::from_secs(10));
    // A duplicate publish would arrive right behind the last one.
    std::thread::sleep(Duration::from_millis(300));
    let messages = sub.messages();
    assert_eq!(messages.len() as u64, REQUESTS, "messages at the broker");
    for index in 0..DEVICES {
        let topic = format!("{}/load", coapgate_load::device_iccid(index));
        let count = messages.iter().filter(|m| m.topic == topic).count();
        assert!(count > 0, "no message from device {index} on {topic}");
    }
}
