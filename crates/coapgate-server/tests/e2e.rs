//! End to end, from the network side: libcoap's `coap-client-notls` (a
//! client we did not write) sends from device addresses 127.0.0.x to a
//! running coapgate; Mosquitto's `mosquitto_sub` shows what reached the
//! broker. spec.md §2.1–§2.3.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use base64::Engine as _;
use coapgate_server::BackgroundServer;
use coapgate_testkit::{Message, Mosquitto, MosquittoSub, coap_client};
use common::*;
use serde_json::Value;

const CLIENT: &str = "coap-client-notls";
const WAIT: Duration = Duration::from_secs(5);

/// A Mosquitto, a subscriber on it, and coapgate forwarding to it.
fn post(
    s: &BackgroundServer,
    from: &str,
    path: &str,
    extra: &[&str],
    test: &str,
) -> Option<String> {
    let url = url(s, path);
    let mut args = vec!["-a", from, "-m", "post"];
    args.extend_from_slice(extra);
    args.push(&url);
    let reply = coap_client(CLIENT, &args, test)?;
    Some(
        reply
            .code
            .unwrap_or_else(|| panic!("no response; log:\n{}", reply.log)),
    )
}

fn envelope(m: &Message) -> Value {
    serde_json::from_str(&m.payload).unwrap_or_else(|e| panic!("{e}: {m:?}"))
}

fn base64_value(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v["payload"]["value"].as_str().unwrap())
        .unwrap()
}

#[test]
fn telemetry_reaches_mosquitto_in_the_envelope_exactly_once_per_request() {
    let test = "telemetry_reaches_mosquitto";
    let Some(s) = setup(test) else { return };
    let srv = &s.server;
    // CON POST /data?t=test from a device with an IMSI.
    assert_eq!(
        post(srv, "127.0.0.2", "/data?t=test", &["-e", "hello"], test).unwrap(),
        "2.04"
    );
    // CON POST / without a topic from a device without an IMSI.
    assert_eq!(
        post(srv, "127.0.0.3", "/", &["-e", "plain"], test).unwrap(),
        "2.04"
    );
    // The topic in a Location-Query option, as some firmware sends it.
    assert_eq!(
        post(
            srv,
            "127.0.0.2",
            "/data",
            &["-O", "20,t=via/lq", "-e", "loc"],
            test
        )
        .unwrap(),
        "2.04"
    );
    // NON POST (Zephyr), with an 8-byte token.
    assert_eq!(
        post(
            srv,
            "127.0.0.2",
            "/data?t=zephyr",
            &["-N", "-T", "0102030405060708", "-e", "{\"text\":\"hi\"}"],
            test
        )
        .unwrap(),
        "2.04"
    );

    let messages = s.sub.wait_for_telemetry(4, WAIT);
    std::thread::sleep(Duration::from_millis(300)); // anything extra would show up now
    let messages_after = s.sub.telemetry();
    assert_eq!(
        messages_after.len(),
        4,
        "exactly one message per request: {messages_after:#?}"
    );
    let find = |topic: &str| {
        messages
            .iter()
            .find(|m| m.topic == topic)
            .unwrap_or_else(|| panic!("no {topic} in {messages:#?}"))
    };

    let m = envelope(find(&format!("{ICCID_A}/test")));
    assert_eq!(m["payload"]["type"], "STRING");
    assert_eq!(m["payload"]["encoding"], "base64");
    assert_eq!(base64_value(&m), b"hello");
    assert_eq!(m["payload"]["topic"], "test");
    assert_eq!(m["source"], "COAP");
    assert_eq!(m["type"], "TELEMETRY_DATA");
    assert_eq!(m["version"], "1.0.0");
    assert_eq!(m["device"]["iccid"], ICCID_A);
    assert_eq!(m["device"]["ip"], "127.0.0.2");
    assert_eq!(m["device"]["imsi"], IMSI_A);
    let received: u64 = m["received"].as_str().unwrap().parse().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        received <= now_ms && now_ms - received < 60_000,
        "received {received} vs now {now_ms}"
    );

    let m = envelope(find(ICCID_B));
    assert_eq!(base64_value(&m), b"plain");
    assert!(m["payload"].get("topic").is_none());
    assert!(m["device"].get("imsi").is_none());
    assert_eq!(m["device"]["ip"], "127.0.0.3");

    let m = envelope(find(&format!("{ICCID_A}/via/lq")));
    assert_eq!(base64_value(&m), b"loc");

    let m = envelope(find(&format!("{ICCID_A}/zephyr")));
    assert_eq!(base64_value(&m), b"{\"text\":\"hi\"}");

    // Each device's first request also announced it, once.
    let events = s.sub.events();
    let mut lifecycle: Vec<String> = events
        .iter()
        .map(|m| {
            assert_eq!(envelope(m)["event"], "DEVICE_FIRST_TIME_REGISTERED");
            m.topic.clone()
        })
        .collect();
    lifecycle.sort();
    assert_eq!(
        lifecycle,
        [
            format!("{ICCID_A}/lifecycle"),
            format!("{ICCID_B}/lifecycle")
        ]
    );

    let ids: std::collections::HashSet<String> = messages
        .iter()
        .map(|m| envelope(m)["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 4, "every message has its own id");
}

#[test]
fn every_response_code_from_the_network_side() {
    let test = "every_response_code";
    let Some(s) = setup(test) else { return };
    let srv = &s.server;
    let code = |from: &str, method: &str, path: &str, extra: &[&str]| {
        let url = url(srv, path);
        let mut args = vec!["-a", from, "-m", method];
        args.extend_from_slice(extra);
        args.push(&url);
        coap_client(CLIENT, &args, test)
            .map(|r| r.code.unwrap_or_else(|| panic!("no response: {}", r.log)))
    };
    let Some(unknown) = code("127.0.0.9", "post", "/data", &["-e", "x"]) else {
        return;
    };
    assert_eq!(unknown, "4.01", "unknown device");
    assert_eq!(
        code("127.0.0.2", "post", "/data", &["-O", "65001,x", "-e", "x"]).unwrap(),
        "4.02",
        "unknown critical option"
    );
    assert_eq!(
        code("127.0.0.2", "post", "/nope", &["-e", "x"]).unwrap(),
        "4.04"
    );
    // SIM7000G: GET / with t=1.
    assert_eq!(code("127.0.0.2", "get", "/?t=1", &[]).unwrap(), "4.05");
    assert_eq!(
        code("127.0.0.2", "put", "/data", &["-e", "x"]).unwrap(),
        "4.05"
    );
    assert_eq!(
        code("127.0.0.2", "post", "/data?t=a//b", &["-e", "x"]).unwrap(),
        "4.00"
    );
    assert_eq!(
        code("127.0.0.2", "post", "/data?t=bad-char", &["-e", "x"]).unwrap(),
        "4.00"
    );
    assert_eq!(
        code("127.0.0.2", "post", "/data", &["-O", "20,t=", "-e", "x"]).unwrap(),
        "4.00"
    );

    let dir = coapgate_testkit::temp_dir("payloads");
    let exactly_1024 = dir.join("1024.bin");
    std::fs::write(&exactly_1024, vec![b'a'; 1024]).unwrap();
    let over = dir.join("1025.bin");
    std::fs::write(&over, vec![b'b'; 1025]).unwrap();
    assert_eq!(
        code(
            "127.0.0.2",
            "post",
            "/data?t=big",
            &["-f", exactly_1024.to_str().unwrap()]
        )
        .unwrap(),
        "2.04"
    );
    let reply = coap_client(
        CLIENT,
        &[
            "-a",
            "127.0.0.2",
            "-m",
            "post",
            "-f",
            over.to_str().unwrap(),
            &url(srv, "/data?t=big"),
        ],
        test,
    )
    .unwrap();
    assert_eq!(reply.code.as_deref(), Some("4.13"), "{}", reply.log);
    assert!(
        reply.log.contains("Size1:1024"),
        "4.13 carries Size1: {}",
        reply.log
    );

    // Only the 1024-byte message was published.
    s.sub.wait_for_telemetry(1, WAIT);
    std::thread::sleep(Duration::from_millis(300)); // anything extra would show up now
    let messages = s.sub.telemetry();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert_eq!(base64_value(&envelope(&messages[0])).len(), 1024);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pings_and_malformed_confirmables_get_rst_and_other_junk_nothing() {
    let test = "pings_and_malformed";
    let Some(s) = setup(test) else { return };
    let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket.connect(s.server.coap_addr()).unwrap();
    let mut buf = [0u8; 64];
    // Empty CON: a ping.
    socket.send(&[0x40, 0x00, 0x12, 0x34]).unwrap();
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        &[0x70, 0x00, 0x12, 0x34],
        "RST with the same message ID"
    );
    // Payload marker without payload, CON.
    socket.send(&[0x40, 0x02, 0xab, 0xcd, 0xff]).unwrap();
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &[0x70, 0x00, 0xab, 0xcd]);
    // Version 2: dropped silently. Then a NON with token length 9: dropped.
    socket.send(&[0x80, 0x02, 0x00, 0x01]).unwrap();
    socket
        .send(&[0x59, 0x02, 0x00, 0x02, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        .unwrap();
    assert!(socket.recv(&mut buf).is_err(), "no answer to either");
    // Still serving afterwards.
    socket.send(&[0x40, 0x00, 0x00, 0x03]).unwrap();
    assert_eq!(socket.recv(&mut buf).unwrap(), 4);
}

#[test]
fn a_duplicate_con_from_the_network_gets_the_same_bytes_and_one_publish() {
    let test = "duplicate_con";
    let Some(s) = setup(test) else { return };
    let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    socket.connect(s.server.coap_addr()).unwrap();
    // CON POST /data?t=dup, MID 0x0102, token 0xaa, payload "once".
    let request = [
        0x41, 0x02, 0x01, 0x02, 0xaa, 0xb4, b'd', b'a', b't', b'a', 0x45, b't', b'=', b'd', b'u',
        b'p', 0xff, b'o', b'n', b'c', b'e',
    ];
    let mut first = [0u8; 64];
    socket.send(&request).unwrap();
    let n1 = socket.recv(&mut first).unwrap();
    assert_eq!(
        &first[..n1],
        &[0x61, 0x44, 0x01, 0x02, 0xaa],
        "piggybacked 2.04 with the token"
    );
    let mut again = [0u8; 64];
    socket.send(&request).unwrap();
    let n2 = socket.recv(&mut again).unwrap();
    assert_eq!(&again[..n2], &first[..n1]);
    s.sub.wait_for_telemetry(1, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.sub.telemetry().len(), 1);
}

#[test]
fn the_embedded_broker_works_with_a_real_subscriber() {
    let test = "embedded_broker";
    let port = coapgate_testkit::free_tcp_port();
    let mut config = config(None);
    config.mqtt.embedded_bind = ([127, 0, 0, 1], port).into();
    let server = start(config);
    let Some(sub) = MosquittoSub::start(port, test) else {
        return;
    };
    let code = post(
        &server,
        "127.0.0.2",
        "/data?t=embedded",
        &["-e", "via rumqttd"],
        test,
    )
    .unwrap();
    assert_eq!(code, "2.04");
    let messages = sub.wait_for_telemetry(1, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let messages_after = sub.telemetry();
    assert_eq!(messages_after.len(), 1, "{messages:#?}");
    assert_eq!(messages[0].topic, format!("{ICCID_A}/embedded"));
    assert_eq!(base64_value(&envelope(&messages[0])), b"via rumqttd");
}

#[test]
fn a_broker_outage_gives_5_02_and_every_2_04_is_at_the_broker() {
    let test = "broker_outage";
    let Some(mut broker) = Mosquitto::start(test) else {
        return;
    };
    let mut config = config(Some(broker.url()));
    config.coap.engine.publish_timeout = Duration::from_secs(3);
    let server = start(config);
    let send = |n: usize| {
        post(
            &server,
            "127.0.0.2",
            "/data?t=outage",
            &["-e", &format!("m{n}")],
            test,
        )
        .unwrap()
    };

    let sub = MosquittoSub::start(broker.port, test).unwrap();
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        assert_eq!(send(n), "2.04");
        acknowledged.push(format!("m{n}"));
    }
    let before: Vec<String> = sub
        .wait_for_telemetry(5, WAIT)
        .iter()
        .map(|m| String::from_utf8(base64_value(&envelope(m))).unwrap())
        .collect();
    assert_eq!(before, acknowledged);
    drop(sub);

    broker.kill();
    // The bridge notices at once (the TCP connection is reset).
    std::thread::sleep(Duration::from_millis(300));
    for n in 5..10 {
        assert_eq!(send(n), "5.02", "while the broker is down");
    }

    broker.restart();
    let sub = MosquittoSub::start(broker.port, test).unwrap();
    // Until the bridge has reconnected, 5.02; afterwards 2.04. Bounded.
    let mut after = Vec::new();
    let mut codes = Vec::new();
    for n in 10..60 {
        let code = send(n);
        codes.push(code.clone());
        if code == "2.04" {
            after.push(format!("m{n}"));
            if after.len() == 5 {
                break;
            }
        } else {
            assert!(code == "5.02" || code == "5.04", "{code}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert_eq!(
        after.len(),
        5,
        "the bridge reconnected by itself: {codes:?}"
    );
    let at_broker: Vec<String> = sub
        .wait_for_telemetry(5, WAIT)
        .iter()
        .map(|m| String::from_utf8(base64_value(&envelope(m))).unwrap())
        .collect();
    for m in &after {
        assert_eq!(
            at_broker.iter().filter(|b| *b == m).count(),
            1,
            "{m} acknowledged but at the broker {at_broker:?}"
        );
    }
    for m in &at_broker {
        assert!(
            !(5..10).any(|n| *m == format!("m{n}")),
            "{m} got 5.02 yet was published"
        );
    }
}

#[test]
fn a_slow_broker_gets_an_empty_ack_then_a_separate_response_and_a_silent_one_5_04() {
    let test = "slow_broker";
    let Some(broker) = Mosquitto::start(test) else {
        return;
    };
    let Some(sub) = MosquittoSub::start(broker.port, test) else {
        return;
    };
    // The broker's answers (CONNACK, PUBACK) arrive 1.5 s late: past the
    // 1 s piggyback window, within the publish deadline.
    let proxy = coapgate_testkit::DelayProxy::start(broker.port, Duration::from_millis(1500));
    let mut config = config(Some(proxy.url()));
    config.coap.engine.publish_timeout = Duration::from_secs(3);
    let server = start(config);

    // The exchange byte by byte, from a raw socket at the device's address:
    // CON POST /data?t=slow, MID 0x0a0b, token 0x77, payload "late".
    let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    socket.connect(server.coap_addr()).unwrap();
    let request = [
        0x41, 0x02, 0x0a, 0x0b, 0x77, 0xb4, b'd', b'a', b't', b'a', 0x46, b't', b'=', b's', b'l',
        b'o', b'w', 0xff, b'l', b'a', b't', b'e',
    ];
    let sent = std::time::Instant::now();
    socket.send(&request).unwrap();
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).unwrap();
    let empty_ack_after = sent.elapsed();
    assert_eq!(&buf[..n], &[0x60, 0x00, 0x0a, 0x0b], "an empty ACK first");
    assert!(
        empty_ack_after >= Duration::from_millis(900)
            && empty_ack_after < Duration::from_millis(1400),
        "at the 1 s piggyback window, not {empty_ack_after:?}"
    );
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(
        buf[0],
        0x41,
        "a separate CON response with a 1-byte token: {:02x?}",
        &buf[..n]
    );
    assert_eq!(buf[1], 0x44, "2.04");
    assert_eq!(buf[4], 0x77, "the request's token");
    assert_ne!(
        &buf[2..4],
        &[0x0a, 0x0b],
        "a message ID of the server's own"
    );
    // Acknowledge it, as a device does.
    socket.send(&[0x60, 0x00, buf[2], buf[3]]).unwrap();
    assert_eq!(sub.wait_for_telemetry(1, WAIT).len(), 1);

    let url = url(&server, "/data?t=slow");
    // Now the broker's answers take longer than the 3 s deadline: 5.04, also
    // as a separate response.
    proxy.set_delay(Duration::from_secs(6));
    let reply = coap_client(
        CLIENT,
        &["-a", "127.0.0.2", "-m", "post", "-e", "too late", &url],
        test,
    )
    .unwrap();
    assert_eq!(reply.code.as_deref(), Some("5.04"), "{}", reply.log);
    assert!(reply.log.contains("t:CON c:5.04"), "{}", reply.log);
}
