//! Faults: floods (issue 12).
//!
//! - Malformed flood: garbage and half-valid CoAP (bad versions, lying
//!   token and option lengths, truncated options, RSTs and ACKs for
//!   nothing, requests from unknown addresses) at 10× the good devices'
//!   rate from other addresses and ports. Good devices still get their
//!   answers within ACK_TIMEOUT (2 s) for ≥ 95 % of requests, coapgate
//!   keeps serving, and the process's RSS stays bounded.
//! - Handshake flood: DTLS ClientHellos without cookies and with valid
//!   cookies from many addresses and ports, and ClientHellos with cookies
//!   from device addresses that never finish the handshake. A legitimate
//!   device (libcoap's `coap-client-openssl`) still completes a handshake
//!   and gets 2.04, the half-open handshakes never exceed
//!   `max_handshakes`, and RSS stays bounded.
//!
//! The servers run in this process, so RSS is this test process's (devices
//! and flooders included). `COAPGATE_LONG_FAULTS=1` floods longer.

#![allow(clippy::unwrap_used)]

mod faults_common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coapgate_server::BackgroundServer;
use coapgate_testkit::{
    Mosquitto, MosquittoSub, coap_client, dtls_client_hello, encode_request, hello_verify_cookie,
    http, long_faults, rss_kib,
};
use faults_common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn flood_time() -> Duration {
    Duration::from_secs(if long_faults() { 120 } else { 15 })
}

fn my_rss() -> u64 {
    rss_kib(std::process::id()).unwrap()
}

/// A value from `/metrics`: the first line starting with `prefix` (name
/// and labels) followed by a space.
fn metric(server: &BackgroundServer, prefix: &str) -> u64 {
    let (status, text) = http("GET", server.admin_addr(), "/metrics", None, None);
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(prefix)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}")) as u64
}

/// One malformed or half-valid datagram.
fn junk(rng: &mut StdRng) -> Vec<u8> {
    let mid: u16 = rng.random();
    let [m0, m1] = mid.to_be_bytes();
    match rng.random_range(0..12) {
        // Random bytes, 0 to 64 of them.
        0 => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
        // Version 0, 2, 3.
        1 => vec![[0x00, 0x80, 0xc0][rng.random_range(0..3)], 0x02, m0, m1],
        // Token length 9..15 (reserved).
        2 => {
            let mut d = vec![0x40 | rng.random_range(9..16u8), 0x02, m0, m1];
            d.extend_from_slice(&[1; 15]);
            d
        }
        // Token length says 8, 2 bytes follow.
        3 => vec![0x48, 0x02, m0, m1, 1, 2],
        // Truncated option: extended delta announced, missing.
        4 => vec![0x40, 0x02, m0, m1, 0xd0],
        // Option length says 12, 3 bytes follow.
        5 => vec![0x40, 0x02, m0, m1, 0xbc, b'd', b'a', b't'],
        // Reserved option nibble 15 not as payload marker.
        6 => vec![0x40, 0x02, m0, m1, 0xf1, 0x00],
        // Payload marker without payload.
        7 => vec![0x40, 0x02, m0, m1, 0xb4, b'd', b'a', b't', b'a', 0xff],
        // RST for nothing.
        8 => vec![0x70, 0x00, m0, m1],
        // ACK for nothing, empty or with a code.
        9 => vec![0x60, if rng.random() { 0x00 } else { 0x44 }, m0, m1],
        // A valid POST from an address no device has (4.01).
        10 => encode_request(0, 2, mid, &[1, 2, 3, 4], "data?t=x", b"junk"),
        // A request with an unknown critical option and an 8-byte token.
        _ => {
            let mut d = vec![0x48, 0x02, m0, m1];
            d.extend_from_slice(&rng.random::<[u8; 8]>());
            d.extend_from_slice(&[0xe1, 0xfd, 0xe8, 0x00]);
            d
        }
    }
}

/// Sockets on 127.0.2.1..=`addresses`, `ports` each.
fn flood_sockets(addresses: u8, ports: usize) -> Vec<UdpSocket> {
    let mut sockets = Vec::new();
    for a in 1..=addresses {
        for _ in 0..ports {
            let s = UdpSocket::bind(format!("127.0.2.{a}:0")).unwrap();
            s.set_nonblocking(true).unwrap();
            sockets.push(s);
        }
    }
    sockets
}

/// Sends `make()` from the sockets in turn at `rate` datagrams per second
/// until `stop`; returns how many were sent. Answers are read and thrown
/// away so no socket buffer fills.
fn flood(
    sockets: &[UdpSocket],
    to: SocketAddr,
    rate: f64,
    stop: &AtomicBool,
    mut make: impl FnMut(usize) -> Vec<u8>,
) -> u64 {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(900) {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let i = sent as usize % sockets.len();
            let _ = sockets[i].send_to(&make(i), to);
            while sockets[i].recv_from(&mut buf).is_ok() {}
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    sent
}

#[test]
fn a_malformed_flood_at_10x_leaves_good_devices_answered_within_ack_timeout() {
    let _serial = serial();
    let test = "malformed_flood";
    let Some(broker) = Mosquitto::start(test) else {
        return;
    };
    let Some(sub) = MosquittoSub::start(broker.port, test) else {
        return;
    };
    let devices = 8;
    let server =
        BackgroundServer::start(fleet_config(devices, &broker.url(), "sqlite::memory:")).unwrap();
    let coap = server.coap_addr();
    let shape = LoadShape {
        devices,
        pause: Duration::from_millis(100),
        ack_timeout: Duration::from_secs(2),
        max_per_device: 100_000,
    };
    // The good rate first, without the flood.
    let warmup = Load::start(coap, shape, "warmup", 1);
    std::thread::sleep(Duration::from_secs(2));
    let w = warmup.stop();
    let good_rate = w.len() as f64 / 2.0;
    let rss_before = my_rss();

    let stop = Arc::new(AtomicBool::new(false));
    let flood_rate = good_rate * 10.0;
    let flooder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sockets = flood_sockets(50, 4);
            let mut rng = StdRng::seed_from_u64(0xf100d);
            flood(&sockets, coap, flood_rate, &stop, |_| junk(&mut rng))
        })
    };
    let load = Load::start(coap, shape, test, 2);
    let start = Instant::now();
    let mut rss_max = rss_before;
    while start.elapsed() < flood_time() {
        std::thread::sleep(Duration::from_millis(250));
        rss_max = rss_max.max(my_rss());
    }
    let records = load.stop();
    stop.store(true, Ordering::Relaxed);
    let junk_sent = flooder.join().unwrap();
    let took = start.elapsed();

    let within = records
        .iter()
        .filter(|r| r.acknowledged() && r.answered - r.sent < Duration::from_secs(2))
        .count();
    let published = wait_delivered(&records, Duration::from_secs(10), || {
        sub.telemetry().iter().map(value).collect()
    });
    let d = delivery(&records, &published);
    let share = within as f64 / records.len().max(1) as f64;
    let mut latencies: Vec<Duration> = records.iter().map(|r| r.answered - r.sent).collect();
    latencies.sort();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    eprintln!(
        "FAULT {test}: load {devices} devices, {} good requests and {junk_sent} junk datagrams \
         ({:.0}/s vs {:.0}/s good) from 200 sockets in {}; answered within 2 s {:.1} %, p99 {}; \
         acknowledged {}, lost {}, duplicates {}; codes [{}]; RSS {} → max {} KiB",
        records.len(),
        junk_sent as f64 / took.as_secs_f64(),
        records.len() as f64 / took.as_secs_f64(),
        secs(took),
        share * 100.0,
        secs(p99),
        d.acknowledged,
        d.lost.len(),
        d.duplicates,
        show(&codes(&records)),
        rss_before,
        rss_max,
    );
    assert!(
        junk_sent as f64 >= records.len() as f64 * 8.0,
        "the flood was ~10× the good traffic"
    );
    assert!(share >= 0.95, "{:.1} % within ACK_TIMEOUT", share * 100.0);
    assert!(d.lost.is_empty(), "{:?}", d.lost);
    assert_eq!(d.duplicates, 0);
    assert!(
        rss_max < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_max} KiB"
    );
    // Still serving.
    let mut device = coapgate_testkit::CoapDevice::new(&device_ip(0), coap, 9).unwrap();
    assert_eq!(device.post("data", b"after").code, Some(0x44));
}

#[test]
fn a_handshake_flood_leaves_a_device_its_handshake_and_keeps_half_open_state_capped() {
    let _serial = serial();
    let test = "handshake_flood";
    let Some(broker) = Mosquitto::start(test) else {
        return;
    };
    let Some(_sub) = MosquittoSub::start(broker.port, test) else {
        return;
    };
    // Device 0 is the legitimate one; devices 1..=16 are addresses whose
    // owners (or someone on their path) start handshakes and walk away.
    let devices = 17;
    let cap = 32;
    let mut config = fleet_config(devices, &broker.url(), "sqlite::memory:");
    config.coaps.dtls.max_handshakes = cap;
    config.coaps.dtls.handshake_timeout = Duration::from_secs(5);
    let server = BackgroundServer::start(config).unwrap();
    let coaps = server.coaps_addr();
    let rss_before = my_rss();
    let stop = Arc::new(AtomicBool::new(false));
    let half_open_sent = Arc::new(AtomicU64::new(0));

    // Stateless traffic: ClientHellos without cookie, and with the cookie
    // the server gave, from 50 addresses × 4 ports no device has.
    let stateless = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sockets = flood_sockets(50, 4);
            let mut rng = StdRng::seed_from_u64(0xdead);
            // Per socket: the random of the last cookieless hello, and the
            // cookie the server answered it with (it binds that hello).
            let mut randoms: Vec<[u8; 32]> = vec![[0; 32]; sockets.len()];
            let mut cookies: Vec<Option<Vec<u8>>> = vec![None; sockets.len()];
            let mut buf = [0u8; 1500];
            let mut sent = 0u64;
            let start = Instant::now();
            let rate = 2000.0;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(900) {
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                while sent < due {
                    let i = sent as usize % sockets.len();
                    if let Ok((n, _)) = sockets[i].recv_from(&mut buf) {
                        cookies[i] = hello_verify_cookie(&buf[..n]);
                    }
                    let hello = match cookies[i].take() {
                        Some(cookie) => dtls_client_hello(&randoms[i], &cookie, 1, 1),
                        None => {
                            randoms[i] = rng.random();
                            dtls_client_hello(&randoms[i], &[], 0, 0)
                        }
                    };
                    let _ = sockets[i].send_to(&hello, coaps);
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            sent
        })
    };
    // Meanwhile: the legitimate device, again and again, and samples of
    // the half-open count and RSS. Phase 1: stateless traffic only;
    // phase 2: the abandoned handshakes from device addresses join in.
    let url = format!("coaps://{coaps}/data?t=fault");
    let mut half_open_max = 0;
    let mut rss_max = rss_before;
    let mut legit = |phase_time: Duration, attempts: &mut Vec<(Option<String>, Duration)>| {
        let start = Instant::now();
        while start.elapsed() < phase_time {
            let began = Instant::now();
            let reply = coap_client(
                "coap-client-openssl",
                &[
                    "-a",
                    &device_ip(0),
                    "-u",
                    &iccid(0),
                    "-k",
                    &psk(0),
                    "-m",
                    "post",
                    "-e",
                    "legit",
                    &url,
                ],
                test,
            )?;
            attempts.push((reply.code, began.elapsed()));
            half_open_max =
                half_open_max.max(metric(&server, "coapgate_dtls_handshakes_in_progress"));
            rss_max = rss_max.max(my_rss());
            std::thread::sleep(Duration::from_millis(300));
        }
        Some(())
    };
    let start = Instant::now();
    let mut phase1 = Vec::new();
    let mut phase2 = Vec::new();
    if legit(flood_time() / 2, &mut phase1).is_none() {
        stop.store(true, Ordering::Relaxed);
        return;
    }
    // Half-open handshakes: from device addresses, 32 ports each, the
    // cookie exchange done, then silence.
    let half_open = {
        let (stop, counter) = (stop.clone(), half_open_sent.clone());
        std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(0xbeef);
            let mut buf = [0u8; 1500];
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(900) {
                for d in 1..devices {
                    for _ in 0..4 {
                        let Ok(s) = UdpSocket::bind((device_ip(d).as_str(), 0)) else {
                            continue;
                        };
                        s.set_read_timeout(Some(Duration::from_millis(200)))
                            .unwrap();
                        let random: [u8; 32] = rng.random();
                        let _ = s.send_to(&dtls_client_hello(&random, &[], 0, 0), coaps);
                        let Ok((n, _)) = s.recv_from(&mut buf) else {
                            continue;
                        };
                        if let Some(cookie) = hello_verify_cookie(&buf[..n]) {
                            let _ = s.send_to(&dtls_client_hello(&random, &cookie, 1, 1), coaps);
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let _ = legit(flood_time() / 2, &mut phase2);
    stop.store(true, Ordering::Relaxed);
    let stateless_sent = stateless.join().unwrap();
    half_open.join().unwrap();
    let took = start.elapsed();
    let ok = |attempts: &[(Option<String>, Duration)]| {
        attempts
            .iter()
            .filter(|(c, _)| c.as_deref() == Some("2.04"))
            .count()
    };
    let slowest = |attempts: &[(Option<String>, Duration)]| {
        secs(attempts.iter().map(|(_, t)| *t).max().unwrap_or_default())
    };
    let over_cap = metric(
        &server,
        "coapgate_dtls_handshakes_total{result=\"refused_over_cap\"}",
    );
    let refused = metric(
        &server,
        "coapgate_dtls_handshakes_total{result=\"refused\"}",
    );
    let cookies = metric(&server, "coapgate_dtls_cookies_sent_total");
    eprintln!(
        "FAULT {test}: {stateless_sent} ClientHellos from 200 sockets of non-device addresses \
         in {}, then also {} abandoned handshakes from 16 device addresses; legitimate device \
         2.04 in {} of {} attempts (slowest {}) during the first, {} of {} (slowest {}) during \
         both; half-open max {half_open_max} (cap {cap}), refused over cap {over_cap}, refused \
         (no device) {refused}, cookies sent {cookies}; RSS {rss_before} → max {rss_max} KiB",
        secs(took),
        half_open_sent.load(Ordering::Relaxed),
        ok(&phase1),
        phase1.len(),
        slowest(&phase1),
        ok(&phase2),
        phase2.len(),
        slowest(&phase2),
    );
    assert!(half_open_max <= cap as u64, "{half_open_max} half-open");
    assert!(
        refused > 0,
        "cookie-bearing hellos from no device's address"
    );
    assert!(over_cap > 0, "the abandoned handshakes reached the cap");
    // Flooders at addresses no device has cost nothing: every attempt of
    // the legitimate device succeeds.
    assert_eq!(ok(&phase1), phase1.len(), "{phase1:?}");
    assert!(!phase1.is_empty());
    assert!(
        rss_max < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_max} KiB"
    );
}
