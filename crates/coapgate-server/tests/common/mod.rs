//! A coapgate server running in-process on its own runtime thread, with
//! helpers to configure it for tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use coapgate_server::{Config, Server};
use coapgate_store::Store;

pub const ICCID_A: &str = "8988280666000000002";
pub const ICCID_B: &str = "8988280666000000003";
pub const IMSI_A: &str = "901405100000002";

/// Two active devices at 127.0.0.2 (with IMSI) and 127.0.0.3 (without), an
/// in-memory store, CoAP on a free loopback port, the given broker.
pub fn config(mqtt_url: Option<String>) -> Config {
    let mut config = Config::from_toml(&format!(
        r#"
[coap]
bind = "127.0.0.1:0"
[store]
url = "sqlite::memory:"
[[device]]
iccid = "{ICCID_A}"
imsi = "{IMSI_A}"
ip = "127.0.0.2"
[[device]]
iccid = "{ICCID_B}"
ip = "127.0.0.3"
"#
    ))
    .unwrap();
    config.mqtt.url = mqtt_url;
    config.mqtt.connect_timeout = Duration::from_secs(5);
    config
}

/// A running server; stopped (gracefully) on drop.
pub struct TestServer {
    pub coap: SocketAddr,
    pub store: Store,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(config: Config) -> Self {
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
                ready_tx
                    .send((server.coap_addr(), server.store().clone()))
                    .unwrap();
                server
                    .serve(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let (coap, store) = ready_rx
            .recv_timeout(Duration::from_secs(15))
            .expect("server started");
        Self {
            coap,
            store,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `coap://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("coap://{}{path}", self.coap)
    }

    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}
