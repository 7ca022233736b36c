//! The per-device rate limit from the network side (spec.md §2.1 step 4,
//! RFC 8516): raw UDP and libcoap's `coap-client-notls` from device
//! addresses to a running coapgate with `[limits]` set; Mosquitto's
//! `mosquitto_sub` shows what reached the broker; `/metrics` counts it.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use coapgate_endpoint::codec::{self, CoapOption, MessageClass, MessageType, RequestType};
use coapgate_server::Config;
use coapgate_testkit::{coap_client, http};
use common::*;

const WAIT: Duration = Duration::from_secs(5);

/// `[limits]` as an operator writes it, onto the test configuration.
fn with_limits(toml: &str) -> impl FnOnce(&mut Config) {
    let limits = Config::from_toml(toml).unwrap();
    move |config| {
        config.coap.engine.device_limit = limits.coap.engine.device_limit;
        config.coaps.dtls.handshake_limit = limits.coaps.dtls.handshake_limit;
    }
}

/// A socket at a device's address, connected to coapgate.
fn device(ip: &str, server: &coapgate_server::BackgroundServer) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket.connect(server.coap_addr()).unwrap();
    socket
}

/// Sends `request` and returns the answer's bytes.
fn exchange(socket: &UdpSocket, request: &[u8]) -> Vec<u8> {
    socket.send(request).unwrap();
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).unwrap();
    buf[..n].to_vec()
}

fn code(bytes: &[u8]) -> String {
    let packet = codec::decode(bytes).unwrap();
    let MessageClass::Response(code) = packet.header.code else {
        panic!("not a response: {bytes:02x?}")
    };
    let n = u8::from(MessageClass::Response(code));
    format!("{}.{:02}", n >> 5, n & 0x1f)
}

fn max_age(bytes: &[u8]) -> Option<u32> {
    let packet = codec::decode(bytes).unwrap();
    let value = packet.get_option(CoapOption::MaxAge)?.front()?.clone();
    Some(value.iter().fold(0, |n, &b| (n << 8) | u32::from(b)))
}

/// The value of one sample line of `/metrics`, 0 when absent.
fn metric(server: &coapgate_server::BackgroundServer, sample: &str) -> u64 {
    let (status, text) = http("GET", server.admin_addr(), "/metrics", None, None);
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn over_its_budget_a_device_gets_4_29_with_max_age_and_retransmissions_cost_nothing() {
    let test = "rate_limit_raw_udp";
    // One request every 10 s, bursts of 2.
    let Some(s) = setup_with(
        test,
        with_limits("[limits]\ndevice_rate = 0.1\ndevice_burst = 2\n"),
    ) else {
        return;
    };
    let a = device("127.0.0.2", &s.server);
    let post = |mid| request(MessageType::Confirmable, RequestType::Post, mid, "data");

    let first = exchange(&a, &post(1));
    assert_eq!(code(&first), "2.04");
    // The device did not hear the 2.04 and retransmits, five times: the
    // same bytes from the dedup cache, each free of charge…
    for _ in 0..5 {
        assert_eq!(exchange(&a, &post(1)), first);
    }
    // …so the second token of the burst is still there.
    assert_eq!(code(&exchange(&a, &post(2))), "2.04");

    // The third request is over the budget.
    let refused = exchange(&a, &post(3));
    let packet = codec::decode(&refused).unwrap();
    assert_eq!(code(&refused), "4.29", "{refused:02x?}");
    assert_eq!(packet.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(packet.header.message_id, 3);
    assert!(packet.payload.is_empty(), "empty payload");
    let seconds = max_age(&refused).expect("a Max-Age option");
    assert!(
        (8..=10).contains(&seconds),
        "about 10 s until a token is back: {seconds}"
    );
    // Its retransmission gets the same 4.29, and is not counted again.
    assert_eq!(exchange(&a, &post(3)), refused);

    // Another device is not affected.
    let b = device("127.0.0.3", &s.server);
    assert_eq!(code(&exchange(&b, &post(1))), "2.04");

    // At the broker: A's two requests and B's one, once each; nothing for
    // the 4.29.
    let messages = s.sub.wait_for_telemetry(3, WAIT);
    std::thread::sleep(Duration::from_millis(300)); // anything extra would show up now
    let telemetry = s.sub.telemetry();
    assert_eq!(telemetry.len(), 3, "{telemetry:#?}");
    let from_a = messages
        .iter()
        .filter(|m| m.topic.starts_with(ICCID_A))
        .count();
    assert_eq!(from_a, 2, "{messages:#?}");
    assert_eq!(s.sub.events().len(), 2, "one LIFECYCLE event per device");

    let srv = &s.server;
    assert_eq!(
        metric(
            srv,
            "coapgate_requests_total{resource=\"telemetry\",code=\"4.29\"}"
        ),
        1
    );
    assert_eq!(
        metric(srv, "coapgate_rate_limited_total{kind=\"device\"}"),
        1
    );
    assert_eq!(
        metric(srv, "coapgate_rate_limited_total{kind=\"handshake\"}"),
        0
    );
    assert_eq!(metric(srv, "coapgate_dedup_hits_total"), 6);
}

#[test]
fn libcoap_sees_4_29_and_max_age_and_a_non_gets_a_non_4_29() {
    let test = "rate_limit_coap_client";
    // One request every 5 s, no burst.
    let Some(s) = setup_with(
        test,
        with_limits("[limits]\ndevice_rate = 0.2\ndevice_burst = 1\n"),
    ) else {
        return;
    };
    let url = url(&s.server, "/data?t=limited");
    let post = |extra: &[&str]| {
        let mut args = vec!["-a", "127.0.0.2", "-m", "post", "-e", "21.5"];
        args.extend_from_slice(extra);
        args.push(&url);
        coap_client("coap-client-notls", &args, test)
    };
    let Some(reply) = post(&[]) else { return };
    assert_eq!(reply.code.as_deref(), Some("2.04"), "{}", reply.log);
    let reply = post(&[]).unwrap();
    assert_eq!(reply.code.as_deref(), Some("4.29"), "{}", reply.log);
    let line = reply
        .log
        .lines()
        .find(|l| l.contains("c:4.29"))
        .unwrap_or_else(|| panic!("{}", reply.log));
    assert!(line.contains("t:ACK"), "{line}");
    // libcoap prints the option as `Max-Age:N`.
    let seconds: u32 = line
        .split("Max-Age:")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no Max-Age in {line}"));
    assert!((3..=5).contains(&seconds), "{line}");
    assert!(reply.payload.is_empty(), "{:?}", reply.payload);

    // A NON over budget: a NON 4.29.
    let reply = post(&["-N"]).unwrap();
    assert_eq!(reply.code.as_deref(), Some("4.29"), "{}", reply.log);
    assert!(reply.log.contains("t:NON c:4.29"), "{}", reply.log);

    s.sub.wait_for_telemetry(1, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.sub.telemetry().len(), 1, "only the admitted request");
}
