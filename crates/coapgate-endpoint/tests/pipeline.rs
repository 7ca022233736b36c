//! spec.md §2.1 and §2.2, one rule per test, from the device's side of the
//! engine: what it sends, what it gets back, what reaches the broker.

mod support;

use std::time::Duration;

use coapgate_endpoint::codec::{CoapOption, MessageClass, MessageType, RequestType, ResponseType};
use coapgate_endpoint::{EndpointConfig, PayloadFormat, PublishResult};
use coapgate_model::DeviceStatus;
use serde_json::Value;
use support::*;

fn device() -> coapgate_endpoint::Link {
    device_link(2)
}

#[test]
fn telemetry_is_published_in_the_envelope_and_acknowledged_after_the_broker_confirms() {
    let mut w = World::new();
    let sent = w.deliver(
        device(),
        &Req::con_post(0x1234)
            .path("data")
            .query("t=test")
            .token(b"tok")
            .payload(b"Hello")
            .bytes(),
    );
    assert!(
        sent.is_empty(),
        "nothing is acknowledged before the broker confirms"
    );
    assert_eq!(w.published.len(), 1);
    let publish = &w.published[0];
    assert_eq!(publish.topic, format!("{ICCID}/test"));
    let envelope: Value = serde_json::from_slice(&publish.payload).unwrap();
    assert_eq!(envelope["payload"]["type"], "STRING");
    assert_eq!(envelope["payload"]["encoding"], "base64");
    assert_eq!(envelope["payload"]["value"], "SGVsbG8=");
    assert_eq!(envelope["payload"]["topic"], "test");
    assert_eq!(envelope["received"], "1700000000123");
    assert_eq!(envelope["source"], "COAP");
    assert_eq!(envelope["type"], "TELEMETRY_DATA");
    assert_eq!(envelope["version"], "1.0.0");
    assert_eq!(envelope["device"]["iccid"], ICCID);
    assert_eq!(envelope["device"]["ip"], "127.0.0.2");
    assert_eq!(envelope["device"]["imsi"], IMSI);
    assert_eq!(envelope["id"].as_str().unwrap().len(), 36);

    let ack = one(w.broker(publish.id, PublishResult::Confirmed));
    assert_eq!(ack.kind, MessageType::Acknowledgement);
    assert_eq!(ack.message_id, 0x1234);
    assert_eq!(ack.token, b"tok");
    assert!(ack.is(ResponseType::Changed));
    assert!(ack.packet.payload.is_empty());
}

#[test]
fn post_to_root_without_topic_publishes_on_the_iccid() {
    let mut w = World::new();
    w.deliver(device(), &Req::con_post(1).payload(b"x").bytes());
    assert_eq!(w.published[0].topic, ICCID);
    let envelope: Value = serde_json::from_slice(&w.published[0].payload).unwrap();
    assert!(envelope["payload"].get("topic").is_none());
}

#[test]
fn every_message_gets_its_own_envelope_id() {
    let mut w = World::new();
    for mid in 0..50 {
        w.deliver(device(), &Req::con_post(mid).payload(b"x").bytes());
    }
    let ids: std::collections::HashSet<String> = w
        .published
        .iter()
        .map(|p| {
            serde_json::from_slice::<Value>(&p.payload).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 50);
}

#[test]
fn location_query_carries_the_topic_and_uri_query_wins() {
    let mut w = World::new();
    w.deliver(
        device(),
        &Req::con_post(1)
            .option(20, b"t=fromlocation")
            .payload(b"x")
            .bytes(),
    );
    assert_eq!(w.published[0].topic, format!("{ICCID}/fromlocation"));
    w.deliver(
        device(),
        &Req::con_post(2)
            .query("t=fromuri")
            .option(20, b"t=fromlocation")
            .payload(b"x")
            .bytes(),
    );
    assert_eq!(w.published[1].topic, format!("{ICCID}/fromuri"));
}

#[test]
fn raw_payload_format_publishes_the_bytes_unchanged() {
    let mut w = World::with_config({
        let mut config = EndpointConfig::default();
        config.payload_format = PayloadFormat::Raw;
        config
    });
    w.deliver(device(), &Req::con_post(1).payload(&[0, 1, 0xff]).bytes());
    assert_eq!(w.published[0].payload, [0, 1, 0xff]);
}

#[test]
fn a_version_other_than_1_is_dropped_silently() {
    let mut w = World::new();
    let mut bytes = Req::con_post(1).payload(b"x").bytes();
    bytes[0] = (bytes[0] & 0x3f) | 0x80; // version 2
    assert!(w.deliver(device(), &bytes).is_empty());
    assert!(w.published.is_empty());
}

#[test]
fn a_malformed_con_gets_rst_and_a_malformed_non_nothing() {
    let mut w = World::new();
    // Payload marker with no payload.
    let con = [0x40, 0x02, 0xab, 0xcd, 0xff];
    let rst = one(w.deliver(device(), &con));
    assert_eq!(rst.kind, MessageType::Reset);
    assert_eq!(rst.message_id, 0xabcd);
    // Token length 9.
    let non = [0x59, 0x02, 0x00, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    assert!(w.deliver(device(), &non).is_empty());
    // Too short for a header.
    assert!(w.deliver(device(), &[0x40, 0x02]).is_empty());
    assert!(w.published.is_empty());
}

#[test]
fn an_empty_con_is_a_ping_and_gets_rst() {
    let mut w = World::new();
    let rst = one(w.deliver(device(), &[0x40, 0x00, 0x12, 0x34]));
    assert_eq!(rst.kind, MessageType::Reset);
    assert_eq!(rst.message_id, 0x1234);
    assert_eq!(rst.code, MessageClass::Empty);
}

#[test]
fn unknown_and_inactive_devices_get_4_01_and_nothing_is_published() {
    let mut w = World::new();
    let r = one(w.deliver(device_link(9), &Req::con_post(1).payload(b"x").bytes()));
    assert!(r.is(ResponseType::Unauthorized));
    assert!(r.packet.payload.is_empty());
    w.devices
        .add("8988280666000000001", "127.0.0.3", DeviceStatus::Inactive);
    let r = one(w.deliver(device_link(3), &Req::con_post(1).payload(b"x").bytes()));
    assert!(r.is(ResponseType::Unauthorized));
    assert!(w.published.is_empty());
}

#[test]
fn the_device_check_comes_before_options_path_and_method() {
    let mut w = World::new();
    let r = one(w.deliver(
        device_link(9),
        &Req::new(MessageType::Confirmable, RequestType::Get, 1)
            .path("nope")
            .option(9999, b"")
            .bytes(),
    ));
    assert!(r.is(ResponseType::Unauthorized));
}

#[test]
fn an_unrecognised_critical_option_gets_4_02_before_path_checks() {
    let mut w = World::new();
    let r = one(w.deliver(
        device(),
        &Req::con_post(1).path("nope").option(9, b"x").bytes(),
    ));
    assert!(r.is(ResponseType::BadOption));
    // An unknown elective option is ignored.
    w.deliver(
        device(),
        &Req::con_post(2).option(10, b"x").payload(b"x").bytes(),
    );
    assert_eq!(w.published.len(), 1);
}

#[test]
fn uri_host_and_uri_port_are_accepted_and_ignored() {
    let mut w = World::new();
    w.deliver(
        device(),
        &Req::con_post(1)
            .option(3, b"coap.os.1nce.com")
            .option(7, &[0x16, 0x33])
            .path("data")
            .payload(b"x")
            .bytes(),
    );
    assert_eq!(w.published.len(), 1);
}

#[test]
fn unknown_paths_get_4_04_and_wrong_methods_4_05() {
    let mut w = World::new();
    let r = one(w.deliver(
        device(),
        &Req::con_post(1).path("other").payload(b"x").bytes(),
    ));
    assert!(r.is(ResponseType::NotFound));
    let r = one(w.deliver(
        device(),
        &Req::con_post(2)
            .path("data")
            .path("more")
            .payload(b"x")
            .bytes(),
    ));
    assert!(r.is(ResponseType::NotFound));
    // SIM7000G firmware: GET / with t=1.
    let r = one(w.deliver(
        device(),
        &Req::new(MessageType::Confirmable, RequestType::Get, 3)
            .query("t=1")
            .bytes(),
    ));
    assert!(r.is(ResponseType::MethodNotAllowed));
    let r = one(w.deliver(
        device(),
        &Req::new(MessageType::Confirmable, RequestType::Put, 4)
            .path("data")
            .bytes(),
    ));
    assert!(r.is(ResponseType::MethodNotAllowed));
    assert!(w.published.is_empty());
}

#[test]
fn proxy_requests_get_5_05() {
    let mut w = World::new();
    let r = one(w.deliver(
        device(),
        &Req::con_post(1).option(35, b"coap://elsewhere/").bytes(),
    ));
    assert!(r.is(ResponseType::ProxyingNotSupported));
}

#[test]
fn topic_violations_get_4_00() {
    let too_long = format!("t={}", "a".repeat(254));
    for query in ["t=", "t", "t=a b", "t=a//b", "t=ä", too_long.as_str()] {
        let mut w = World::new();
        let r = one(w.deliver(
            device(),
            &Req::con_post(1).query(query).payload(b"x").bytes(),
        ));
        assert!(
            r.is(ResponseType::BadRequest),
            "{query:?} gave {:?}",
            r.code
        );
        assert!(r.packet.payload.is_empty());
        assert!(w.published.is_empty(), "{query:?} was published");
    }
    let mut w = World::new();
    let r = one(w.deliver(
        device(),
        &Req::con_post(1)
            .query("t=a")
            .query("t=b")
            .payload(b"x")
            .bytes(),
    ));
    assert!(r.is(ResponseType::BadRequest), "two t in Uri-Query");
    // 253 characters is the most.
    let mut w = World::new();
    w.deliver(
        device(),
        &Req::con_post(1)
            .query(&format!("t={}", "a".repeat(253)))
            .payload(b"x")
            .bytes(),
    );
    assert_eq!(w.published.len(), 1);
}

#[test]
fn payloads_up_to_the_limit_pass_and_larger_get_4_13_with_size1() {
    let mut w = World::new();
    w.deliver(device(), &Req::con_post(1).payload(&[7; 1024]).bytes());
    assert_eq!(w.published.len(), 1);
    let r = one(w.deliver(device(), &Req::con_post(2).payload(&[7; 1025]).bytes()));
    assert!(r.is(ResponseType::RequestEntityTooLarge));
    let size1 = r.packet.get_first_option(CoapOption::Size1).unwrap();
    assert_eq!(size1, &vec![0x04, 0x00], "Size1 = 1024");
    assert_eq!(w.published.len(), 1);
}

#[test]
fn a_broker_that_is_down_gives_5_02_at_once() {
    let mut w = World::new();
    w.endpoint.handle_broker_state(false);
    let r = one(w.deliver(device(), &Req::con_post(1).payload(b"x").bytes()));
    assert!(r.is(ResponseType::BadGateway));
    assert!(w.published.is_empty());
    w.endpoint.handle_broker_state(true);
    w.deliver(device(), &Req::con_post(2).payload(b"x").bytes());
    assert_eq!(w.published.len(), 1);
}

#[test]
fn a_publish_the_driver_could_not_hand_over_gives_5_02() {
    let mut w = World::new();
    w.deliver(device(), &Req::con_post(1).payload(b"x").bytes());
    let r = one(w.broker(0, PublishResult::Unavailable));
    assert!(r.is(ResponseType::BadGateway));
    assert_eq!(r.kind, MessageType::Acknowledgement);
}

#[test]
fn a_publish_the_spool_could_not_take_gives_5_03_with_max_age_and_no_lifecycle() {
    let mut w = World::new();
    w.deliver(device(), &Req::con_post(1).payload(b"x").bytes());
    let r = one(w.broker(0, PublishResult::TryLater));
    assert!(r.is(ResponseType::ServiceUnavailable));
    assert_eq!(r.kind, MessageType::Acknowledgement);
    assert_eq!(
        r.packet.get_first_option(CoapOption::MaxAge),
        Some(&vec![5]),
        "Max-Age: come back in 5 s"
    );
    assert!(r.packet.payload.is_empty());
}

#[test]
fn an_unconfirmed_publish_gives_5_04_at_the_deadline_and_a_late_puback_changes_nothing() {
    let mut w = World::with_config({
        let mut config = EndpointConfig::default();
        config.publish_timeout = Duration::from_secs(5);
        config
    });
    w.deliver(
        device(),
        &Req::con_post(1).token(b"a").payload(b"x").bytes(),
    );
    let sent = w.advance(Duration::from_millis(4999));
    assert_eq!(sent.len(), 1, "only the empty ACK so far");
    let sent = w.advance(Duration::from_millis(1));
    assert_eq!(sent.len(), 1);
    let r = Resp::parse(&sent[0].1);
    assert!(r.is(ResponseType::GatewayTimeout));
    assert_eq!(r.kind, MessageType::Confirmable);
    assert_eq!(r.token, b"a");
    assert!(w.broker(0, PublishResult::Confirmed).is_empty());
}

#[test]
fn too_many_pending_publishes_give_5_03_with_max_age() {
    let mut w = World::with_config({
        let mut config = EndpointConfig::default();
        config.max_pending = 2;
        config
    });
    w.deliver(device(), &Req::con_post(1).payload(b"x").bytes());
    w.deliver(device(), &Req::con_post(2).payload(b"x").bytes());
    let r = one(w.deliver(device(), &Req::con_post(3).payload(b"x").bytes()));
    assert!(r.is(ResponseType::ServiceUnavailable));
    assert!(r.packet.get_first_option(CoapOption::MaxAge).is_some());
    assert_eq!(w.published.len(), 2);
}

#[test]
fn non_requests_get_non_responses_with_their_token() {
    let mut w = World::new();
    // Zephyr: NON POST with an 8-byte token, Uri-Query only.
    w.deliver(
        device(),
        &Req::non_post(7)
            .query("t=test")
            .token(&[1, 2, 3, 4, 5, 6, 7, 8])
            .payload(b"{\"text\":1}")
            .bytes(),
    );
    let r = one(w.broker(0, PublishResult::Confirmed));
    assert_eq!(r.kind, MessageType::NonConfirmable);
    assert!(r.is(ResponseType::Changed));
    assert_eq!(r.token, [1, 2, 3, 4, 5, 6, 7, 8]);
    // An error for a NON is a NON too.
    let r = one(w.deliver(device(), &Req::non_post(8).path("nope").token(b"z").bytes()));
    assert_eq!(r.kind, MessageType::NonConfirmable);
    assert!(r.is(ResponseType::NotFound));
    assert_eq!(r.token, b"z");
}

#[test]
fn a_con_response_from_a_device_gets_rst_and_a_non_one_is_ignored() {
    let mut w = World::new();
    let mut bytes = Req::con_post(5).bytes();
    bytes[1] = 0x45; // 2.05
    assert_eq!(one(w.deliver(device(), &bytes)).kind, MessageType::Reset);
    bytes[0] = 0x50; // NON
    assert!(w.deliver(device(), &bytes).is_empty());
}

#[test]
fn stats_count_requests_by_resource_and_code() {
    let mut w = World::new();
    w.deliver(device(), &Req::con_post(1).payload(b"x").bytes());
    w.broker(0, PublishResult::Confirmed);
    w.deliver(device(), &Req::con_post(2).path("nope").bytes());
    w.deliver(device(), &Req::con_post(2).path("nope").bytes());
    let stats = w.endpoint.stats();
    let count = |resource, code| {
        stats
            .requests
            .get(&coapgate_endpoint::RequestKey { resource, code })
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(count("telemetry", "2.04"), 1);
    assert_eq!(count("unknown", "4.04"), 1);
    assert_eq!(stats.duplicates, 1);
}
