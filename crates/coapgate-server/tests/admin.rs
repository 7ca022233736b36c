//! The admin API against the running server: every change is live for the
//! devices (spec.md §6), and `/metrics` counts exactly the traffic sent.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use coapgate_testkit::{coap_client, http};
use common::*;
use serde_json::Value;

const TOKEN: &str = "test-token";
const NEW_ICCID: &str = "8988280666000000007";

fn setup(test: &str) -> Option<Setup> {
    setup_with(test, |config| config.admin.token = Some(TOKEN.into()))
}

fn api(s: &Setup, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    http(method, s.server.admin_addr(), path, Some(TOKEN), body)
}

fn post_from(s: &Setup, from: &str, test: &str) -> Option<Option<String>> {
    coap_client(
        "coap-client-notls",
        &[
            "-a",
            from,
            "-m",
            "post",
            "-e",
            "x",
            &url(&s.server, "/data"),
        ],
        test,
    )
    .map(|r| r.code)
}

#[test]
fn a_device_added_over_http_is_served_and_set_inactive_is_refused() {
    let test = "admin_live_devices";
    let Some(s) = setup(test) else { return };
    let Some(code) = post_from(&s, "127.0.0.7", test) else {
        return;
    };
    assert_eq!(code.as_deref(), Some("4.01"), "unknown before");

    let device = format!(r#"{{"iccid":"{NEW_ICCID}","ip":"127.0.0.7","status":"ACTIVE"}}"#);
    let (status, body) = api(
        &s,
        "PUT",
        &format!("/v1/devices/{NEW_ICCID}"),
        Some(&device),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        post_from(&s, "127.0.0.7", test).unwrap().as_deref(),
        Some("2.04"),
        "live at once"
    );

    let inactive = format!(r#"{{"iccid":"{NEW_ICCID}","ip":"127.0.0.7","status":"INACTIVE"}}"#);
    let (status, _) = api(
        &s,
        "PUT",
        &format!("/v1/devices/{NEW_ICCID}"),
        Some(&inactive),
    );
    assert_eq!(status, 200);
    assert_eq!(
        post_from(&s, "127.0.0.7", test).unwrap().as_deref(),
        Some("4.01")
    );

    assert_eq!(s.sub.wait_for_telemetry(1, Duration::from_secs(5)).len(), 1);
}

#[test]
fn a_psk_set_over_http_is_used_by_the_next_handshake_and_the_old_one_fails() {
    let test = "admin_live_psk";
    let Some(s) = setup(test) else { return };
    let url = format!("coaps://{}/data", s.server.coaps_addr());
    let dtls = |key: &str| {
        coap_client(
            "coap-client-openssl",
            &[
                "-a",
                "127.0.0.2",
                "-u",
                ICCID_A,
                "-k",
                key,
                "-B",
                "3",
                "-m",
                "post",
                "-e",
                "s",
                &url,
            ],
            test,
        )
        .map(|r| r.code)
    };
    let set = |key: &str| {
        let body = format!(r#"{{"secretKey":"{key}","format":"STRING","protocol":"COAP"}}"#);
        api(
            &s,
            "POST",
            &format!("/v1/integrate/devices/{ICCID_A}/psk"),
            Some(&body),
        )
        .0
    };
    assert!((200..300).contains(&set("first-key-1")));
    let Some(code) = dtls("first-key-1") else {
        return;
    };
    assert_eq!(code.as_deref(), Some("2.04"));
    assert!((200..300).contains(&set("second-key-2")));
    assert_eq!(dtls("first-key-1").unwrap(), None, "the old key fails");
    assert_eq!(dtls("second-key-2").unwrap().as_deref(), Some("2.04"));
}

#[test]
fn the_api_refuses_without_the_token() {
    let test = "admin_token";
    let Some(s) = setup(test) else { return };
    let addr = s.server.admin_addr();
    assert_eq!(http("GET", addr, "/v1/devices", None, None).0, 401);
    assert_eq!(http("GET", addr, "/v1/devices", Some("wrong"), None).0, 401);
    assert_eq!(http("GET", addr, "/v1/devices", Some(TOKEN), None).0, 200);
    assert_eq!(http("GET", addr, "/healthz", None, None).0, 200);
    assert_eq!(http("GET", addr, "/metrics", None, None).0, 200);
}

/// The value of one sample line of an exposition.
fn sample(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn metrics_count_exactly_the_traffic_sent() {
    let test = "admin_metrics";
    let Some(s) = setup(test) else { return };
    let client = |from: &str, method: &str, path: &str| {
        coap_client(
            "coap-client-notls",
            &["-a", from, "-m", method, "-e", "x", &url(&s.server, path)],
            test,
        )
        .map(|r| r.code)
    };
    // 3 accepted, 2 unknown devices, 1 not found, 1 wrong method.
    for _ in 0..3 {
        let Some(code) = client("127.0.0.2", "post", "/data?t=m") else {
            return;
        };
        assert_eq!(code.as_deref(), Some("2.04"));
    }
    for _ in 0..2 {
        assert_eq!(
            client("127.0.0.9", "post", "/data").unwrap().as_deref(),
            Some("4.01")
        );
    }
    assert_eq!(
        client("127.0.0.2", "post", "/nope").unwrap().as_deref(),
        Some("4.04")
    );
    assert_eq!(
        client("127.0.0.2", "put", "/data").unwrap().as_deref(),
        Some("4.05")
    );
    // A duplicate: the same CON twice from one socket.
    let socket = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    socket.connect(s.server.coap_addr()).unwrap();
    let ping = [
        0x40, 0x02, 0x77, 0x77, 0xb4, b'd', b'a', b't', b'a', 0xff, b'd',
    ];
    let mut buf = [0u8; 64];
    socket.send(&ping).unwrap();
    socket.recv(&mut buf).unwrap();
    socket.send(&ping).unwrap();
    socket.recv(&mut buf).unwrap();

    let (status, text) = http("GET", s.server.admin_addr(), "/metrics", None, None);
    assert_eq!(status, 200);
    assert_eq!(
        sample(
            &text,
            r#"coapgate_requests_total{resource="telemetry",code="2.04"}"#
        ),
        4,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"coapgate_requests_total{resource="telemetry",code="4.01"}"#
        ),
        2
    );
    assert_eq!(
        sample(
            &text,
            r#"coapgate_requests_total{resource="unknown",code="4.04"}"#
        ),
        1
    );
    assert_eq!(
        sample(
            &text,
            r#"coapgate_requests_total{resource="telemetry",code="4.05"}"#
        ),
        1
    );
    assert_eq!(sample(&text, "coapgate_dedup_hits_total"), 1);
    // Every datagram with a new (peer, message ID): 3 + 2 + 1 + 1 + 1.
    assert_eq!(sample(&text, "coapgate_dedup_entries"), 8);
    assert_eq!(sample(&text, "coapgate_broker_connected"), 1);
    assert_eq!(sample(&text, "coapgate_pending_publishes"), 0);
    // Telemetry and the device's one lifecycle event.
    assert_eq!(sample(&text, "coapgate_mqtt_publish_seconds_count"), 5);
    assert_eq!(
        sample(
            &text,
            r#"coapgate_udp_receive_drops_total{listener="coap"}"#
        ),
        0
    );
    let _ = Value::Null;
}
