//! `GET /bootstrap` over plain CoAP from libcoap's client (spec.md §2.4): the
//! CSV answer, the regeneration rule on the real clock with the interval
//! shortened by configuration, operator PSKs from the configuration.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use coapgate_server::BackgroundServer;
use coapgate_testkit::coap_client;
use common::*;

const CLIENT: &str = "coap-client-notls";

/// `ICCID,PSK,URL` as a device reads it; `None` when the client is missing.
fn bootstrap(server: &BackgroundServer, from: &str, test: &str) -> Option<(String, Vec<String>)> {
    let reply = coap_client(
        CLIENT,
        &["-a", from, "-m", "get", &url(server, "/bootstrap")],
        test,
    )?;
    let code = reply
        .code
        .clone()
        .unwrap_or_else(|| panic!("no response: {}", reply.log));
    Some((code, reply.payload.split(',').map(str::to_owned).collect()))
}

#[test]
fn a_device_gets_its_iccid_a_psk_and_the_coaps_url() {
    let test = "bootstrap_answer";
    let mut config = config(None);
    config.mqtt.embedded_bind = ([127, 0, 0, 1], coapgate_testkit::free_tcp_port()).into();
    config.coap.engine.bootstrap.coaps_url = "coaps://coap.example.com:5684".parse().unwrap();
    let server = start(config);
    let Some((code, fields)) = bootstrap(&server, "127.0.0.2", test) else {
        return;
    };
    assert_eq!(code, "2.05");
    assert_eq!(fields.len(), 3, "{fields:?}");
    assert_eq!(fields[0], ICCID_A);
    assert_eq!(fields[1].len(), 16);
    assert!(
        fields[1].bytes().all(|b| b.is_ascii_alphanumeric()),
        "{}",
        fields[1]
    );
    assert_eq!(fields[2], "coaps://coap.example.com:5684");
    // The PSK is in the store, for the next handshake.
    let key = server.store().psk_keys().key(ICCID_A).unwrap();
    assert_eq!(key.as_slice(), fields[1].as_bytes());
    // Again at once: the same PSK.
    let (_, again) = bootstrap(&server, "127.0.0.2", test).unwrap();
    assert_eq!(again[1], fields[1]);
    // An unknown address gets 4.01 and nothing else.
    let (code, fields) = bootstrap(&server, "127.0.0.9", test).unwrap();
    assert_eq!(code, "4.01");
    assert_eq!(fields, [""]);
}

#[test]
fn a_shortened_interval_regenerates_on_the_real_clock() {
    let test = "bootstrap_regeneration";
    let mut config = config(None);
    config.mqtt.embedded_bind = ([127, 0, 0, 1], coapgate_testkit::free_tcp_port()).into();
    config.coap.engine.bootstrap.policy.regenerate_after = Duration::from_secs(2);
    let server = start(config);
    let Some((_, first)) = bootstrap(&server, "127.0.0.2", test) else {
        return;
    };
    let (_, same) = bootstrap(&server, "127.0.0.2", test).unwrap();
    assert_eq!(same[1], first[1], "within the interval");
    std::thread::sleep(Duration::from_millis(2100));
    let (_, new) = bootstrap(&server, "127.0.0.2", test).unwrap();
    assert_ne!(new[1], first[1], "2 s after the previous call");
    assert_eq!(
        server.store().psk_keys().key(ICCID_A).unwrap().as_slice(),
        new[1].as_bytes()
    );
}

#[test]
fn an_operator_psk_from_the_configuration_is_returned_as_written() {
    let test = "bootstrap_operator_psk";
    let mut config = config(None);
    config.mqtt.embedded_bind = ([127, 0, 0, 1], coapgate_testkit::free_tcp_port()).into();
    config.coap.engine.bootstrap.policy.regenerate_after = Duration::from_secs(1);
    config.devices[0].psk = Some("DEADBEEF00112233".into());
    config.devices[0].psk_format = Some("HEX".into());
    let server = start(config);
    let Some((code, fields)) = bootstrap(&server, "127.0.0.2", test) else {
        return;
    };
    assert_eq!(code, "2.05");
    assert_eq!(fields[1], "DEADBEEF00112233");
    std::thread::sleep(Duration::from_millis(1100));
    let (_, later) = bootstrap(&server, "127.0.0.2", test).unwrap();
    assert_eq!(later[1], "DEADBEEF00112233", "never regenerated");
    assert_eq!(
        server.store().psk_keys().key(ICCID_A).unwrap().as_slice(),
        &[0xde, 0xad, 0xbe, 0xef, 0x00, 0x11, 0x22, 0x33]
    );
}
