//! coapgate on a shared PostgreSQL store (issue 11), from the network side:
//! known devices keep getting 2.04 while PostgreSQL is down and
//! `coapgate_store_up` says so; `/bootstrap` gets 5.03 meanwhile and its
//! PSK once PostgreSQL is back.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use coapgate_endpoint::codec::{self, CoapOption, MessageClass, MessageType, ResponseType};
use coapgate_testkit::{Postgres, http};
use common::*;

fn exchange(socket: &UdpSocket, bytes: &[u8]) -> (codec::Packet, Duration) {
    let sent = Instant::now();
    socket.send(bytes).unwrap();
    (receive(socket), sent.elapsed())
}

fn store_up(s: &Setup) -> Option<bool> {
    let (status, text) = http("GET", s.server.admin_addr(), "/metrics", None, None);
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix("coapgate_store_up "))
        .map(|v| v.trim() == "1")
}

/// Waits (at most 10 s) until `/metrics` reports the store as `up`.
fn wait_store_up(s: &Setup, up: bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if store_up(s) == Some(up) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("coapgate_store_up never became {up}");
}

#[test]
fn known_devices_are_served_while_postgresql_is_down() {
    let test = "server_postgres_down";
    let Some(mut pg) = Postgres::start(test) else {
        return;
    };
    let url = pg.create_database("coapgate");
    let Some(s) = setup_with(test, |c| c.store.url = url.clone()) else {
        return;
    };
    let server = s.server.coap_addr();
    let known = UdpSocket::bind("127.0.0.2:0").unwrap();
    known.connect(server).unwrap();
    known
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let onboarding = UdpSocket::bind("127.0.0.3:0").unwrap();
    onboarding.connect(server).unwrap();
    onboarding
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let post = |mid| {
        request(
            MessageType::Confirmable,
            codec::RequestType::Post,
            mid,
            "data",
        )
    };
    let bootstrap = |mid| {
        request(
            MessageType::NonConfirmable,
            codec::RequestType::Get,
            mid,
            "bootstrap",
        )
    };
    let changed = MessageClass::Response(ResponseType::Changed);
    // Up: telemetry and the lifecycle record.
    let (answer, _) = exchange(&known, &post(1));
    assert_eq!(answer.header.code, changed);
    wait_store_up(&s, true);

    pg.stop();
    wait_store_up(&s, false);
    let mut slowest = Duration::ZERO;
    for mid in 2..=40 {
        let (answer, took) = exchange(&known, &post(mid));
        assert_eq!(answer.header.code, changed, "message {mid}");
        slowest = slowest.max(took);
    }
    eprintln!("{test}: 39 POSTs while PostgreSQL was down, slowest 2.04 after {slowest:?}");
    assert!(slowest < Duration::from_millis(250), "{slowest:?}");
    let (answer, _) = exchange(&onboarding, &bootstrap(0x4242));
    assert_eq!(
        answer.header.code,
        MessageClass::Response(ResponseType::ServiceUnavailable)
    );
    assert_eq!(answer.get_first_option(CoapOption::MaxAge), Some(&vec![5]));

    pg.restart();
    wait_store_up(&s, true);
    let (answer, _) = exchange(&onboarding, &bootstrap(0x4243));
    assert_eq!(
        answer.header.code,
        MessageClass::Response(ResponseType::Content)
    );
    let body = String::from_utf8(answer.payload.clone()).unwrap();
    assert!(body.starts_with(&format!("{ICCID_B},")), "{body}");
}

/// (median, slowest) of some latencies.
fn spread(mut took: Vec<Duration>) -> (Duration, Duration) {
    took.sort();
    (took[took.len() / 2], took[took.len() - 1])
}

#[test]
fn a_database_answering_500_ms_late_leaves_telemetry_latency_unchanged() {
    let test = "server_postgres_500ms_late";
    let Some(pg) = Postgres::start(test) else {
        return;
    };
    pg.create_database("coapgate");
    // Every byte PostgreSQL sends reaches coapgate through this proxy.
    let proxy = coapgate_testkit::DelayProxy::start(pg.port, Duration::ZERO);
    let url = pg
        .url("coapgate")
        .replace(&format!(":{}/", pg.port), &format!(":{}/", proxy.port));
    let Some(s) = setup_with(test, |c| c.store.url = url.clone()) else {
        return;
    };
    let server = s.server.coap_addr();
    let known = UdpSocket::bind("127.0.0.2:0").unwrap();
    known.connect(server).unwrap();
    known
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let changed = MessageClass::Response(ResponseType::Changed);
    let mut mid = 0u16;
    let mut measure = |rounds: usize| {
        let mut took = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            mid += 1;
            let post = request(
                MessageType::Confirmable,
                codec::RequestType::Post,
                mid,
                "data",
            );
            let (answer, latency) = exchange(&known, &post);
            assert_eq!(answer.header.code, changed, "message {mid}");
            took.push(latency);
            std::thread::sleep(Duration::from_millis(10));
        }
        spread(took)
    };
    // The first message also records the device's registration.
    measure(5);
    let (base_median, base_slowest) = measure(60);

    proxy.set_delay(Duration::from_millis(500));
    // Keep the database busy meanwhile: /bootstrap calls (the store
    // writer), position flushes and probes all wait 500 ms per round trip.
    let onboarding = UdpSocket::bind("127.0.0.3:0").unwrap();
    onboarding.connect(server).unwrap();
    onboarding
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let bootstrapper = std::thread::spawn(move || {
        let mut slowest = Duration::ZERO;
        for mid in 0..3u16 {
            let get = request(
                MessageType::NonConfirmable,
                codec::RequestType::Get,
                0x5000 + mid,
                "bootstrap",
            );
            let (answer, took) = exchange(&onboarding, &get);
            assert_eq!(
                answer.header.code,
                MessageClass::Response(ResponseType::Content)
            );
            slowest = slowest.max(took);
        }
        slowest
    });
    let (slow_median, slow_slowest) = measure(60);
    let bootstrap_slowest = bootstrapper.join().unwrap();
    eprintln!(
        "{test}: telemetry 2.04 median/slowest {base_median:?}/{base_slowest:?} with a prompt \
         database, {slow_median:?}/{slow_slowest:?} with one 500 ms late; /bootstrap meanwhile \
         took up to {bootstrap_slowest:?}"
    );
    assert!(
        bootstrap_slowest >= Duration::from_millis(500),
        "the database was really late: {bootstrap_slowest:?}"
    );
    // Any wait for the database would cost at least 500 ms.
    assert!(
        slow_slowest < Duration::from_millis(250),
        "{slow_slowest:?}"
    );
    assert!(
        slow_median < base_median * 3 + Duration::from_millis(5),
        "median {slow_median:?} vs {base_median:?}"
    );
}
