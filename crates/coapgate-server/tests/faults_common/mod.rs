//! Shared by the fault tests (`tests/faults_*.rs`, issue 12): a fleet of
//! devices on their own loopback addresses, sustained load from them with
//! RFC 7252 retransmission, and the figures each test prints in one line
//! for docs/reliability.md.
//!
//! Every test takes [`serial`] first: the fault tests of one binary run
//! one after another, so one's load does not skew another's timing or RSS.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use coapgate_server::Config;
use coapgate_testkit::{CoapDevice, Message, code_text};

/// One fault test at a time in this binary.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Device `d`'s ICCID.
pub fn iccid(d: usize) -> String {
    format!("89882806660002{d:05}")
}

/// Device `d`'s address: 127.0.1.(d+1) (so up to 254 devices).
pub fn device_ip(d: usize) -> String {
    assert!(d < 254);
    format!("127.0.1.{}", d + 1)
}

/// Device `d`'s PSK (an operator PSK, STRING format).
pub fn psk(d: usize) -> String {
    format!("fault-psk-{d:04}-0123456789")
}

/// `devices` ACTIVE devices with PSKs, an in-memory store unless `store`
/// says otherwise, every listener on a free 127.0.0.1 port, the broker
/// `mqtt_url`.
pub fn fleet_config(devices: usize, mqtt_url: &str, store: &str) -> Config {
    let mut toml = format!(
        "[coap]\nbind = \"127.0.0.1:0\"\n[coaps]\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"\n[store]\nurl = \"{store}\"\n[mqtt]\nurl = \"{mqtt_url}\"\nconnect_timeout = 5\n"
    );
    for d in 0..devices {
        toml.push_str(&format!(
            "[[device]]\niccid = \"{}\"\nip = \"{}\"\npsk = \"{}\"\n",
            iccid(d),
            device_ip(d),
            psk(d)
        ));
    }
    Config::from_toml(&toml).unwrap()
}

/// One request as a device saw it.
#[derive(Debug, Clone)]
pub struct Record {
    pub device: usize,
    pub payload: String,
    pub code: Option<u8>,
    pub sent: Instant,
    pub answered: Instant,
    pub sends: u32,
}

impl Record {
    pub fn acknowledged(&self) -> bool {
        self.code == Some(0x44)
    }
}

/// Devices sending CON POSTs one after another, each from its own address,
/// until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// How a [`Load`] behaves.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    /// Devices 0..devices.
    pub devices: usize,
    /// Pause after each answer.
    pub pause: Duration,
    /// The devices' ACK_TIMEOUT.
    pub ack_timeout: Duration,
    /// Most requests per device.
    pub max_per_device: usize,
}

impl Load {
    /// Starts `shape.devices` devices sending to `server`; payloads are
    /// `{tag}-d{device}-n{n}`, unique per request.
    pub fn start(server: SocketAddr, shape: LoadShape, tag: &str, seed: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..shape.devices)
            .map(|d| {
                let (stop, records, tag) = (stop.clone(), records.clone(), tag.to_owned());
                std::thread::spawn(move || {
                    let mut device = CoapDevice::new(&device_ip(d), server, seed + d as u64)
                        .expect("bind the device's address");
                    device.ack_timeout = shape.ack_timeout;
                    for n in 0..shape.max_per_device {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let payload = format!("{tag}-d{d}-n{n}");
                        let sent = Instant::now();
                        let outcome = device.post("data?t=fault", payload.as_bytes());
                        records.lock().unwrap().push(Record {
                            device: d,
                            payload,
                            code: outcome.code,
                            sent,
                            answered: Instant::now(),
                            sends: outcome.sends,
                        });
                        std::thread::sleep(shape.pause);
                    }
                })
            })
            .collect();
        Load {
            stop,
            records,
            threads,
        }
    }

    /// The records so far.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    /// Stops the devices (each finishes its current request) and returns
    /// every record.
    pub fn stop(mut self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        self.records()
    }
}

/// Codes with counts, as `2.04×1200 5.02×30 none×0`.
pub fn codes(records: &[Record]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in records {
        let code = r.code.map_or_else(|| "none".to_owned(), code_text);
        *counts.entry(code).or_insert(0) += 1;
    }
    counts
}

/// `2.04×1200 5.02×30`.
pub fn show(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "-".into();
    }
    counts
        .iter()
        .map(|(c, n)| format!("{c}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The telemetry value a message carried (the default JSON envelope).
pub fn value(m: &Message) -> String {
    let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["payload"]["value"].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// What reached the subscriber, against what devices saw acknowledged.
#[derive(Debug)]
pub struct Delivery {
    /// Requests that got 2.04.
    pub acknowledged: usize,
    /// Of those, not at the subscriber.
    pub lost: Vec<String>,
    /// Payloads at the subscriber more than once (extra copies).
    pub duplicates: usize,
    /// Payloads at the subscriber that were not acknowledged (a request
    /// answered 5.04 or given up on may still have been published).
    pub unacknowledged_published: usize,
    /// Payloads at the subscriber that no device sent (must be 0).
    pub unknown: Vec<String>,
}

/// Compares `records` with `messages` (telemetry values).
pub fn delivery(records: &[Record], published: &[String]) -> Delivery {
    let mut at_sub: HashMap<&str, usize> = HashMap::new();
    for v in published {
        *at_sub.entry(v.as_str()).or_insert(0) += 1;
    }
    let sent: HashMap<&str, &Record> = records.iter().map(|r| (r.payload.as_str(), r)).collect();
    let acked: Vec<&Record> = records.iter().filter(|r| r.acknowledged()).collect();
    Delivery {
        acknowledged: acked.len(),
        lost: acked
            .iter()
            .filter(|r| !at_sub.contains_key(r.payload.as_str()))
            .map(|r| r.payload.clone())
            .collect(),
        duplicates: at_sub.values().map(|n| n - 1).sum(),
        unacknowledged_published: at_sub
            .keys()
            .filter(|p| sent.get(*p).is_some_and(|r| !r.acknowledged()))
            .count(),
        unknown: at_sub
            .keys()
            .filter(|p| !sent.contains_key(*p))
            .map(|p| (*p).to_owned())
            .collect(),
    }
}

/// Waits (at most `timeout`) until every acknowledged payload is among
/// `published()`; returns the last list seen.
pub fn wait_delivered(
    records: &[Record],
    timeout: Duration,
    published: impl Fn() -> Vec<String>,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let now = published();
        if delivery(records, &now).lost.is_empty() || start.elapsed() > timeout {
            // Let stragglers (duplicates) arrive too.
            std::thread::sleep(Duration::from_millis(500));
            return published();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Duration in seconds with 2 decimals, for the figure lines.
pub fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}
