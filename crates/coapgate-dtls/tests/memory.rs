//! Memory per half-open handshake and per session, by RSS. Ignored by
//! default (it measures, it does not check much); run with
//! `cargo test --release -p coapgate-dtls --test memory -- --ignored --nocapture`.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use coapgate_dtls::{DtlsConfig, DtlsEvent};
use support::{Client, ICCID, PSK, Pair, SUITES, Table};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn at(n: u32) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 1, (n >> 8) as u8, n as u8], 5684))
}

#[test]
#[ignore = "measurement; run by hand"]
fn bytes_per_half_open_handshake_and_per_session() {
    const N: u32 = 2_000;
    let mut config = DtlsConfig::default();
    config.max_handshakes = N as usize;
    config.max_sessions = 2 * N as usize + 1;
    let mut pair = Pair::new(config, Table::with(ICCID, PSK));
    // Warm up allocator and OpenSSL with one of each.
    let mut warm = Client::new(at(60_000), SUITES[1], ICCID, PSK);
    drive(&mut pair, &mut warm, true);

    // Sessions first, from a fresh heap; then half-open handshakes on top
    // (so neither reuses memory the other freed).
    let before = rss_kib();
    for n in 0..N {
        let mut c = Client::new(at(10_000 + n), SUITES[1], ICCID, PSK);
        drive(&mut pair, &mut c, true);
    }
    let sessions = rss_kib();
    assert_eq!(pair.server.stats().sessions, N as usize + 1);
    for n in 0..N {
        let mut c = Client::new(at(n), SUITES[1], ICCID, PSK);
        drive(&mut pair, &mut c, false);
    }
    let half_open = rss_kib();
    assert_eq!(pair.server.stats().handshakes_in_progress, N as usize);
    println!(
        "sessions: {} B each; half-open: {} B each (RSS {before} → {sessions} → {half_open} KiB)",
        (sessions - before) * 1024 / u64::from(N),
        (half_open - sessions) * 1024 / u64::from(N),
    );
}

/// Runs one client against the server until the handshake completes
/// (`finish`) or until the server has sent its first flight.
fn drive(pair: &mut Pair, c: &mut Client, finish: bool) {
    for round in 0..20 {
        let out = c.step();
        if !finish && round == 2 {
            return;
        }
        for d in out {
            pair.server.handle_datagram(pair.now, c.addr, &d);
        }
        while let Some(e) = pair.server.poll_event() {
            if let DtlsEvent::Transmit { bytes, .. } = e {
                c.stream.get_mut().inbox.push_back(bytes);
            }
        }
        if c.connected {
            return;
        }
    }
    panic!(
        "no handshake for {}: {:?} {:?}",
        c.addr,
        pair.server.stats(),
        c.failed
    );
}

#[test]
#[ignore = "measurement; run by hand"]
fn stateless_hello_verify_requests_per_second() {
    let mut pair = Pair::new(DtlsConfig::default(), Table::with(ICCID, PSK));
    let hello = Client::new(at(1), SUITES[1], ICCID, PSK).step().remove(0);
    let n = 200_000u32;
    let start = std::time::Instant::now();
    for i in 0..n {
        pair.server
            .handle_datagram(pair.now, at(i % 50_000), &hello);
        while pair.server.poll_event().is_some() {}
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(pair.server.stats().cookies_sent, u64::from(n));
    println!(
        "{:.0} HelloVerifyRequests/s on one core ({:.2} µs each); ClientHello {} B, answer {} B",
        f64::from(n) / secs,
        secs * 1e6 / f64::from(n),
        hello.len(),
        28 + 32
    );
}
