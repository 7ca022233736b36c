//! `[mqtt] ack = "spool"` with the real binary: devices keep getting 2.04
//! through a broker outage, a `kill -9` of coapgate in the middle of it,
//! and its restart; afterwards every message that got 2.04 is at a
//! persistent QoS 1 subscriber. Three shards (`[coap] threads = 3`) share
//! the one spool, whatever the machine's cores.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use coapgate_testkit::{
    Mosquitto, MosquittoSub, free_tcp_port, free_udp_port, http, temp_dir, wait_for_tcp,
    wait_output,
};
use common::exchange;

const BIN: &str = env!("CARGO_BIN_EXE_coapgate");
const DEVICES: u8 = 8;

/// `COAPGATE_LONG_FAULTS=1`: forty times the traffic in each phase, and
/// each phase of the outage at least a minute long (docs/reliability.md).
fn long() -> bool {
    std::env::var_os("COAPGATE_LONG_FAULTS").is_some()
}

fn scale() -> usize {
    if long() { 40 } else { 1 }
}

/// How long each phase of the outage lasts at least.
fn phase() -> Duration {
    if long() {
        let seconds = std::env::var("COAPGATE_FAULT_PHASE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60);
        Duration::from_secs(seconds)
    } else {
        Duration::ZERO
    }
}

/// The running binary; killed when the test ends early (a failed
/// assertion), so no server outlives its test.
struct Running(Option<Child>);

impl Running {
    /// SIGKILL, and reap it.
    fn kill9(&mut self) {
        if let Some(mut child) = self.0.take() {
            child.kill().unwrap();
            let _ = child.wait();
        }
    }

    fn into_child(mut self) -> Child {
        self.0.take().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the binary, its log appended to `log`.
fn start(config: &Path, log: &Path) -> Running {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Running(Some(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ))
}

/// What the devices saw, shared with the test.
#[derive(Default)]
struct Seen {
    /// Payloads answered 2.04.
    acknowledged: Mutex<HashSet<String>>,
    /// Final response codes (`None`: no answer within the exchange's 3 s).
    codes: Mutex<BTreeMap<String, usize>>,
    answered: AtomicUsize,
}

fn code_name(code: Option<u8>) -> String {
    code.map_or_else(
        || "none".to_owned(),
        |c| format!("{}.{:02}", c >> 5, c & 0x1f),
    )
}

/// Waits until the devices have had `more` further 2.04s (bounded), and
/// at least [`phase`].
fn wait_answers(seen: &Seen, more: usize, what: &str) {
    let started = Instant::now();
    let target = seen.answered.load(Ordering::Relaxed) + more;
    let start = Instant::now();
    while seen.answered.load(Ordering::Relaxed) < target
        && start.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        seen.answered.load(Ordering::Relaxed) >= target,
        "{what}: the devices got too few 2.04s"
    );
    if let Some(rest) = phase().checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
}

/// `/healthz` of the admin API on `port`, once it listens (bounded).
fn healthz(port: u16) -> serde_json::Value {
    assert!(
        wait_for_tcp(port, Duration::from_secs(20)),
        "the admin API never listened"
    );
    let (status, body) = http("GET", ([127, 0, 0, 1], port).into(), "/healthz", None, None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn spool_mode_loses_no_acknowledged_message_through_a_broker_outage_and_kill_9() {
    let test = "spool_mode_loses_no_acknowledged_message";
    let Some(mut broker) = Mosquitto::start_persistent(test) else {
        return;
    };
    let Some(sub) = MosquittoSub::start_session(broker.port, "spool-kill-sub", test) else {
        return;
    };
    let dir = temp_dir("spool-kill");
    let port = free_udp_port();
    let admin = free_tcp_port();
    let mut config = format!(
        "[coap]\nbind = \"127.0.0.1:{port}\"\nthreads = 3\n[coaps]\nbind = \"127.0.0.1:0\"\n\
         [admin]\nbind = \"127.0.0.1:{admin}\"\n\
         [mqtt]\nurl = \"{}\"\nack = \"spool\"\nspool_path = \"{}\"\n\
         [store]\nurl = \"sqlite::memory:\"\n",
        broker.url(),
        dir.join("coapgate.spool").display()
    );
    for d in 0..DEVICES {
        config.push_str(&format!(
            "[[device]]\niccid = \"89882806660000001{d:02}\"\nip = \"127.0.0.{}\"\n",
            d + 2
        ));
    }
    let file = dir.join("coapgate.toml");
    std::fs::write(&file, config).unwrap();
    let log = dir.join("coapgate.log");
    let mut server = start(&file, &log);
    let health = healthz(admin);
    assert_eq!(health["spool"]["messages"], 0, "{health}");

    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..DEVICES)
        .map(|d| {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let socket = UdpSocket::bind(format!("127.0.0.{}:0", d + 2)).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                socket.connect(("127.0.0.1", port)).unwrap();
                let deadline =
                    Instant::now() + Duration::from_secs(120) * scale() as u32 + 5 * phase();
                let mut n: u16 = 0;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let payload = format!("d{d}n{n}");
                    let code = exchange(&socket, n, payload.as_bytes());
                    *seen
                        .codes
                        .lock()
                        .unwrap()
                        .entry(code_name(code))
                        .or_default() += 1;
                    if code == Some(0x44) {
                        seen.acknowledged.lock().unwrap().insert(payload);
                        seen.answered.fetch_add(1, Ordering::Relaxed);
                    }
                    n = n.wrapping_add(1);
                    // Message IDs must not come round within the 247 s
                    // EXCHANGE_LIFETIME (65 536 of them): at most ~100/s
                    // per device in the long run.
                    if long() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            })
        })
        .collect();

    wait_answers(&seen, 200 * scale(), "broker up");
    broker.stop();
    let outage = Instant::now();
    wait_answers(&seen, 300 * scale(), "broker down");
    let health = healthz(admin);
    assert_eq!(health["broker"]["connected"], false, "{health}");
    assert!(
        health["spool"]["messages"].as_u64().unwrap() > 0,
        "the spool holds what the broker has not: {health}"
    );

    // kill -9 in the middle of the outage, and start again on the same spool.
    server.kill9();
    let server = start(&file, &log);
    wait_answers(&seen, 200 * scale(), "restarted, broker still down");

    let backlog = healthz(admin)["spool"]["messages"].as_u64().unwrap();
    broker.restart();
    let back = Instant::now();
    let outage_seconds = back.duration_since(outage).as_secs_f64();
    wait_answers(&seen, 200 * scale(), "broker back");
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }

    // Everything acknowledged arrives; then the spool is empty.
    let acknowledged = seen.acknowledged.lock().unwrap().clone();
    let start_wait = Instant::now();
    let mut at_broker: HashMap<String, usize> = HashMap::new();
    while start_wait.elapsed() < Duration::from_secs(30) * scale() as u32 {
        at_broker.clear();
        for m in sub.telemetry() {
            let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v["payload"]["value"].as_str().unwrap())
                .unwrap();
            *at_broker
                .entry(String::from_utf8(raw).unwrap())
                .or_default() += 1;
        }
        if acknowledged.iter().all(|p| at_broker.contains_key(p)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|p| !at_broker.contains_key(*p))
        .collect();
    if !missing.is_empty() {
        let mut sorted: Vec<&&String> = missing.iter().collect();
        sorted.sort();
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "{} acknowledged with 2.04 but not at the broker (first {:?}, last {:?}); \
             /healthz now {}; server log (last lines, newest first):\n{}",
            missing.len(),
            sorted.first(),
            sorted.last(),
            healthz(admin),
            tail.join("\n")
        );
    }
    let duplicates: usize = at_broker.values().map(|n| n - 1).sum();
    let start_wait = Instant::now();
    let mut health = healthz(admin);
    while health["spool"]["messages"] != 0 && start_wait.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        health = healthz(admin);
    }
    assert_eq!(health["spool"]["messages"], 0, "spool drained: {health}");
    let recovered = back.elapsed();
    assert_eq!(health["broker"]["connected"], true, "{health}");

    let codes = seen.codes.lock().unwrap().clone();
    for code in codes.keys() {
        assert!(
            code == "2.04" || code == "none",
            "only 2.04, or silence while coapgate was down: {codes:?}"
        );
    }
    eprintln!(
        "spool: lost 0 of {} acknowledged, {} duplicates at the subscriber, codes {codes:?}, \
         broker outage {outage_seconds:.1} s with a kill -9 inside it, \
         {backlog} held when it came back, spool empty at most {:.2} s later (devices sending meanwhile)",
        acknowledged.len(),
        duplicates,
        recovered.as_secs_f64()
    );
    let server = server.into_child();
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let out = wait_output(server, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}
