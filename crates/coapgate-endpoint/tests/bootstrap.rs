//! spec.md §2.4 from the device's side of the engine: `GET /bootstrap` as
//! 1NCE's C SDK sends it, the 5-minute rule on the engine's wall clock,
//! operator PSKs, and the codes around it.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use coapgate_bootstrap::{PskFormat, PskRecord};
use coapgate_endpoint::codec::{CoapOption, MessageType, RequestType, ResponseType};
use coapgate_endpoint::{EndpointConfig, Link};
use support::*;

/// The C SDK's request, byte for byte (COMPATIBILITY.md): NON GET, no token,
/// Uri-Host coap.os.1nce.com, Uri-Path bootstrap, message ID 1001 in host
/// byte order.
const C_SDK_BOOTSTRAP: &str = "5001e9033d03636f61702e6f732e316e63652e636f6d89626f6f747374726170";

fn c_sdk_request(message_id: u16) -> Vec<u8> {
    let mut bytes = hex(C_SDK_BOOTSTRAP);
    bytes[2..4].copy_from_slice(&message_id.to_be_bytes());
    bytes
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn get_bootstrap(message_id: u16) -> Vec<u8> {
    Req::new(MessageType::NonConfirmable, RequestType::Get, message_id)
        .path("bootstrap")
        .bytes()
}

fn body(r: &Resp) -> String {
    String::from_utf8(r.packet.payload.clone()).unwrap()
}

#[test]
fn the_c_sdk_request_gets_a_non_2_05_with_iccid_psk_and_url() {
    let mut w = World::new();
    let r = one(w.deliver(device_link(2), &hex(C_SDK_BOOTSTRAP)));
    assert_eq!(r.kind, MessageType::NonConfirmable);
    assert!(r.is(ResponseType::Content));
    assert!(r.token.is_empty());
    assert_eq!(
        r.packet.get_first_option(CoapOption::ContentFormat),
        Some(&vec![]),
        "text/plain"
    );
    assert_eq!(
        body(&r),
        format!("{ICCID},PSK0000000000001,coaps://localhost:5684")
    );
}

#[test]
fn the_c_sdk_finds_the_payload_by_searching_for_89() {
    // What the SDK does: find the first "89" anywhere in the datagram, split
    // what follows on ','.
    let mut w = World::new();
    let sent = w.deliver(device_link(2), &hex(C_SDK_BOOTSTRAP));
    let datagram = &sent[0];
    let at = datagram.windows(2).position(|w| w == b"89").unwrap();
    let text = std::str::from_utf8(&datagram[at..]).unwrap();
    let fields: Vec<&str> = text.split(',').collect();
    assert_eq!(
        fields,
        [ICCID, "PSK0000000000001", "coaps://localhost:5684"]
    );
}

#[test]
fn the_response_message_id_never_puts_89_before_the_payload() {
    let mut w = World::new();
    // Find the engine's next message ID, then walk it up to 0x3839 ("89")
    // with NON requests that each take one ID for their 4.04.
    let probe = one(w.deliver(device_link(2), &Req::non_post(0).path("nope").bytes()));
    let mut next = probe.message_id.wrapping_add(1);
    let mut request_id = 1u16;
    while next != 0x3839 {
        w.deliver(
            device_link(2),
            &Req::non_post(request_id).path("nope").bytes(),
        );
        request_id = request_id.wrapping_add(1);
        next = next.wrapping_add(1);
    }
    let sent = w.deliver(device_link(2), &c_sdk_request(request_id));
    let r = one(sent.clone());
    assert!(r.is(ResponseType::Content));
    assert_ne!(r.message_id, 0x3839, "that ID would put 89 in the header");
    let head = &sent[0][..sent[0].len() - r.packet.payload.len()];
    assert!(!head.windows(2).any(|w| w == b"89"), "{head:02x?}");
}

#[test]
fn within_5_minutes_the_same_psk_after_5_minutes_a_new_one() {
    let mut w = World::new();
    let first = body(&one(w.deliver(device_link(2), &get_bootstrap(1))));
    w.advance(Duration::from_secs(4 * 60 + 59));
    let same = body(&one(w.deliver(device_link(2), &get_bootstrap(2))));
    assert_eq!(same, first);
    w.advance(Duration::from_secs(5 * 60));
    let new = body(&one(w.deliver(device_link(2), &get_bootstrap(3))));
    assert_ne!(new, first);
    // Every call carries a fresh candidate to the store; the third call's
    // is the one handed out.
    assert!(new.contains("PSK0000000000003"), "{new}");
}

#[test]
fn an_operator_psk_is_returned_as_stored_and_never_regenerated() {
    let mut w = World::new();
    w.psks.records.write().unwrap().insert(
        ICCID.parse().unwrap(),
        PskRecord::operator("00112233AABBCCDD", PskFormat::Hex).unwrap(),
    );
    for (n, wait) in [(1u16, 0u64), (2, 600), (3, 86_400)] {
        w.advance(Duration::from_secs(wait));
        let r = one(w.deliver(device_link(2), &get_bootstrap(n)));
        assert_eq!(
            body(&r),
            format!("{ICCID},00112233AABBCCDD,coaps://localhost:5684")
        );
    }
}

#[test]
fn the_url_comes_from_the_configuration() {
    let mut config = EndpointConfig::default();
    config.bootstrap.coaps_url = "coaps://coap.example.com:5684".parse().unwrap();
    let mut w = World::with_config(config);
    let r = one(w.deliver(device_link(2), &get_bootstrap(1)));
    assert!(body(&r).ends_with(",coaps://coap.example.com:5684"));
}

#[test]
fn a_con_request_gets_the_psk_piggybacked_and_a_duplicate_the_same_bytes() {
    let mut w = World::new();
    let request = Req::new(MessageType::Confirmable, RequestType::Get, 9)
        .path("bootstrap")
        .token(b"t")
        .bytes();
    let first = w.deliver(device_link(2), &request);
    let r = one(first.clone());
    assert_eq!(r.kind, MessageType::Acknowledgement);
    assert_eq!(r.token, b"t");
    assert!(r.is(ResponseType::Content));
    assert_eq!(w.deliver(device_link(2), &request), first);
}

#[test]
fn unknown_devices_get_4_01_other_methods_4_05_and_nothing_is_issued() {
    let mut w = World::new();
    let r = one(w.deliver(device_link(9), &get_bootstrap(1)));
    assert!(r.is(ResponseType::Unauthorized));
    let r = one(w.deliver(
        device_link(2),
        &Req::new(MessageType::NonConfirmable, RequestType::Post, 2)
            .path("bootstrap")
            .bytes(),
    ));
    assert!(r.is(ResponseType::MethodNotAllowed));
    assert!(r.packet.payload.is_empty());
    assert!(w.psks.records.read().unwrap().is_empty());
}

#[test]
fn over_dtls_bootstrap_is_forbidden() {
    let mut w = World::new();
    let link = Link::Dtls {
        addr: "127.0.0.2:40000".parse().unwrap(),
        session: 7,
    };
    w.endpoint
        .handle_session_established(7, ICCID.parse().unwrap());
    let r = one(w.deliver(link, &get_bootstrap(1)));
    assert!(r.is(ResponseType::Forbidden));
    assert!(r.packet.payload.is_empty());
}

#[test]
fn a_store_failure_is_5_00_with_an_empty_payload() {
    let mut w = World::new();
    w.psks
        .fail
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // (A locked store is 5.03 instead: tests/store.rs.)
    let r = one(w.deliver(device_link(2), &get_bootstrap(1)));
    assert!(r.is(ResponseType::InternalServerError));
    assert!(r.packet.payload.is_empty());
}

#[test]
fn the_answer_is_smaller_than_three_times_the_request() {
    // Amplification (docs/security.md): the C SDK's 31-byte request.
    let mut w = World::new();
    let request = hex(C_SDK_BOOTSTRAP);
    let sent = w.deliver(device_link(2), &request);
    assert!(
        sent[0].len() < 3 * request.len(),
        "{} vs {}",
        sent[0].len(),
        request.len()
    );
}
