//! One server, both address families (spec.md §1): bound to `[::]`, it
//! serves an IPv6 SIM and an IPv4 SIM on the same port, each found by its
//! own address — the IPv4 one arrives IPv4-mapped (`::ffff:127.0.0.2`) and
//! is looked up and published as `127.0.0.2`. The client is libcoap's.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use coapgate_testkit::coap_client;
use common::*;
use serde_json::Value;

const IPV6_ICCID: &str = "8988280666000000066";

#[test]
fn ipv4_and_ipv6_devices_reach_one_dual_stack_listener() {
    let test = "dual_stack";
    let Some(s) = setup_with(test, |config| {
        config.coap.bind = "[::]:0".parse().unwrap();
        config
            .devices
            .push(toml::from_str(&format!("iccid = \"{IPV6_ICCID}\"\nip = \"::1\"")).unwrap());
    }) else {
        return;
    };
    let port = s.server.coap_addr().port();
    assert!(s.server.coap_addr().is_ipv6(), "{}", s.server.coap_addr());
    for (from, url) in [
        ("127.0.0.2", format!("coap://127.0.0.1:{port}/data?t=v4")),
        ("::1", format!("coap://[::1]:{port}/data?t=v6")),
    ] {
        let reply = coap_client(
            "coap-client-notls",
            &["-a", from, "-m", "post", "-e", "hello", &url],
            test,
        );
        let Some(reply) = reply else { return };
        assert_eq!(reply.code.as_deref(), Some("2.04"), "{from}: {}", reply.log);
    }
    let messages = s.sub.wait_for_telemetry(2, Duration::from_secs(5));
    let device = |topic: &str| -> Value {
        let m = messages
            .iter()
            .find(|m| m.topic == topic)
            .unwrap_or_else(|| panic!("nothing on {topic}: {messages:?}"));
        serde_json::from_str::<Value>(&m.payload).unwrap()["device"].clone()
    };
    assert_eq!(device(&format!("{ICCID_A}/v4"))["ip"], "127.0.0.2");
    assert_eq!(device(&format!("{IPV6_ICCID}/v6"))["ip"], "::1");
    let telemetry = messages
        .iter()
        .filter(|m| m.topic.ends_with("/v4") || m.topic.ends_with("/v6"))
        .count();
    assert_eq!(telemetry, 2, "exactly once each: {messages:?}");
}
