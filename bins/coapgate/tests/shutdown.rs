//! SIGTERM under load: the real binary stops reading, finishes what is
//! pending, exits 0, and every message that got 2.04 is at the broker.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use coapgate_testkit::{Mosquitto, MosquittoSub, free_udp_port, temp_dir, wait_output};
use common::exchange;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_coapgate");
const DEVICES: u8 = 4;
const PER_DEVICE: u16 = 2_000;

#[test]
fn sigterm_under_load_loses_no_acknowledged_message() {
    let test = "sigterm_under_load";
    let Some(broker) = Mosquitto::start(test) else {
        return;
    };
    let Some(sub) = MosquittoSub::start(broker.port, test) else {
        return;
    };
    let dir = temp_dir("shutdown");
    let port = free_udp_port();
    let mut config = format!(
        "[coap]\nbind = \"127.0.0.1:{port}\"\n[coaps]\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"\n[mqtt]\nurl = \"{}\"\n[store]\nurl = \"sqlite::memory:\"\n",
        broker.url()
    );
    for d in 0..DEVICES {
        config.push_str(&format!(
            "[[device]]\niccid = \"89882806660000001{d:02}\"\nip = \"127.0.0.{}\"\n",
            d + 2
        ));
    }
    let file = dir.join("coapgate.toml");
    std::fs::write(&file, config).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();

    // Devices send sequentially, each from its own address.
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..DEVICES)
        .map(|d| {
            let (acknowledged, answered, stop) =
                (acknowledged.clone(), answered.clone(), stop.clone());
            std::thread::spawn(move || {
                let socket =
                    UdpSocket::bind(("127.0.0.".to_owned() + &(d + 2).to_string(), 0)).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                socket.connect(("127.0.0.1", port)).unwrap();
                let mut silent = 0;
                for n in 0..PER_DEVICE {
                    if stop.load(Ordering::Relaxed) || silent >= 2 {
                        break;
                    }
                    let payload = format!("d{d}n{n}");
                    match exchange(&socket, n, payload.as_bytes()) {
                        Some(0x44) => {
                            acknowledged.lock().unwrap().insert(payload);
                            answered.fetch_add(1, Ordering::Relaxed);
                            silent = 0;
                        }
                        Some(_) => silent = 0,
                        // Before the server is up, and after it stopped reading.
                        None => silent += usize::from(answered.load(Ordering::Relaxed) > 0),
                    }
                }
            })
        })
        .collect();

    // Once traffic flows for a while, SIGTERM mid-stream.
    let start = Instant::now();
    while answered.load(Ordering::Relaxed) < 400 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        answered.load(Ordering::Relaxed) >= 400,
        "the server answered too little"
    );
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = wait_output(child, Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "exit 0 on SIGTERM:\n{log}");
    assert!(log.contains("shutting down"), "{log}");

    let acknowledged = acknowledged.lock().unwrap().clone();
    let at_broker: HashSet<String> = sub
        .wait_for_telemetry(acknowledged.len(), Duration::from_secs(10))
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v["payload"]["value"].as_str().unwrap())
                .unwrap();
            String::from_utf8(raw).unwrap()
        })
        .collect();
    let missing: Vec<&String> = acknowledged.difference(&at_broker).collect();
    assert!(
        missing.is_empty(),
        "acknowledged with 2.04 but not at the broker: {missing:?}"
    );
    eprintln!(
        "shutdown: {} acknowledged, {} at the broker (2.04 ⊆ broker)",
        acknowledged.len(),
        at_broker.len()
    );
    let _ = std::fs::remove_dir_all(dir);
}
