//! spec.md §2.3, §2.5 and §5 through the engine: telemetry translated by the
//! active template, translation errors as ERROR events, positions from
//! templates as LOCATION events and on `GET /location`, and the one-time
//! LIFECYCLE event.

#![allow(clippy::unwrap_used)]

mod support;

use coapgate_endpoint::codec::{CoapOption, MessageType, RequestType, ResponseType};
use coapgate_endpoint::{Link, PublishResult};
use coapgate_location::Position;
use serde_json::{Value, json};
use support::*;

const SENSORS: &str = r#"{"sense":[{"asset":"Temperature","value":{"byte":0,"bytelength":2,"type":"int"}},
    {"asset":"Humidity","value":{"byte":2,"bytelength":2,"type":"int"}},
    {"asset":"Switch","value":{"byte":4,"type":"boolean"}}]}"#;

const GPS_TEMPLATE: &str = r#"{"sense":[
    {"asset":"gps.lon","value":{"byte":0,"bytelength":8,"type":"float","byteorder":"little"},"custom_type":"location_long"},
    {"asset":"gps.lat","value":{"byte":8,"bytelength":8,"type":"float","byteorder":"little"},"custom_type":"location_lat"}]}"#;

fn gps_payload(lon: f64, lat: f64) -> Vec<u8> {
    [lon.to_le_bytes(), lat.to_le_bytes()].concat()
}

fn post(mid: u16, payload: &[u8]) -> Vec<u8> {
    Req::con_post(mid)
        .path("data")
        .query("t=sensors")
        .payload(payload)
        .bytes()
}

fn get_location(mid: u16) -> Vec<u8> {
    Req::new(MessageType::Confirmable, RequestType::Get, mid)
        .path("location")
        .bytes()
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn an_active_template_translates_telemetry_in_statement_order() {
    let mut w = World::new();
    w.set_template(SENSORS);
    w.deliver(device_link(2), &post(1, &[0x00, 0x1a, 0x00, 0x37, 0x00]));
    assert_eq!(w.published.len(), 1);
    let p = &w.published[0];
    assert_eq!(p.topic, format!("{ICCID}/sensors"));
    let text = String::from_utf8(p.payload.clone()).unwrap();
    assert!(
        text.starts_with(r#"{"payload":{"type":"JSON","value":{"Temperature":26,"Humidity":55,"Switch":false},"topic":"sensors"},"#),
        "{text}"
    );
    let ack = one(w.broker(p.id, PublishResult::Confirmed));
    assert!(ack.is(ResponseType::Changed));
}

#[test]
fn a_payload_too_short_gives_an_error_event_with_the_raw_bytes_and_still_2_04() {
    let mut w = World::new();
    w.set_template(SENSORS);
    w.deliver(device_link(2), &post(1, &[0x00, 0x1a]));
    assert_eq!(w.published.len(), 1, "the error event only, no telemetry");
    let p = &w.published[0];
    assert_eq!(p.topic, format!("{ICCID}/error"));
    let v = json_of(&p.payload);
    assert_eq!(v["type"], "ERROR");
    assert_eq!(
        v["error"],
        json!({"type":"DEVICE","message":"Translator[UserPayloadError]",
               "description":"Asset path:Humidity, Error: can't extract [2:4] from 2 bytes"})
    );
    assert_eq!(
        v["payload"],
        json!({"type":"STRING","encoding":"base64","value":"ABo="})
    );
    assert_eq!(v["device"]["iccid"], ICCID);
    let ack = one(w.broker(p.id, PublishResult::Confirmed));
    assert!(ack.is(ResponseType::Changed), "accepted: nothing is lost");
}

#[test]
fn without_an_active_template_payloads_stay_base64() {
    let mut w = World::new();
    w.deliver(device_link(2), &post(1, &[0x00, 0x1a]));
    let v = json_of(&w.published[0].payload);
    assert_eq!(v["payload"]["type"], "STRING");
    assert_eq!(v["payload"]["value"], "ABo=");
}

#[test]
fn a_location_template_records_the_position_publishes_a_location_event_and_serves_it() {
    let mut w = World::new();
    w.set_template(GPS_TEMPLATE);
    let link = device_link(2);
    let r = one(w.deliver(link, &get_location(1)));
    assert!(r.is(ResponseType::NotFound), "no position yet");
    assert!(r.packet.payload.is_empty());

    w.deliver(link, &post(2, &gps_payload(13.404954, 52.520008)));
    assert_eq!(w.published.len(), 2, "telemetry and LOCATION");
    let telemetry = json_of(&w.published[0].payload);
    assert_eq!(
        telemetry["payload"]["value"],
        json!({"gps":{"lon":13.404954,"lat":52.520008}})
    );
    assert_eq!(w.published[1].topic, format!("{ICCID}/location"));
    let event = json_of(&w.published[1].payload);
    assert_eq!(event["type"], "LOCATION");
    assert_eq!(
        event["location"],
        json!({"source":"GPS","coordinates":["13.404954","52.520008"],"sampleTime":1_700_000_000})
    );
    // 2.04 only when both are confirmed.
    assert!(
        w.broker(w.published[0].id, PublishResult::Confirmed)
            .is_empty()
    );
    let ack = one(w.broker(w.published[1].id, PublishResult::Confirmed));
    assert!(ack.is(ResponseType::Changed));

    let r = one(w.deliver(link, &get_location(3)));
    assert!(r.is(ResponseType::Content));
    assert_eq!(
        r.packet.get_first_option(CoapOption::ContentFormat),
        Some(&vec![])
    );
    assert_eq!(
        String::from_utf8(r.packet.payload.clone()).unwrap(),
        "Longitude,Latitude,Source,SampleTime\n13.404954,52.520008,GPS,1700000000\n"
    );
}

#[test]
fn a_failed_location_event_fails_the_request() {
    let mut w = World::new();
    w.set_template(GPS_TEMPLATE);
    w.deliver(device_link(2), &post(1, &gps_payload(1.0, 2.0)));
    let r = one(w.broker(w.published[1].id, PublishResult::Unavailable));
    assert!(
        r.is(ResponseType::BadGateway),
        "answered at the first failure"
    );
    assert!(
        w.broker(w.published[0].id, PublishResult::Confirmed)
            .is_empty(),
        "answered once"
    );
}

#[test]
fn coordinates_out_of_range_are_published_but_not_recorded() {
    let mut w = World::new();
    w.set_template(GPS_TEMPLATE);
    w.deliver(device_link(2), &post(1, &gps_payload(500.0, 2.0)));
    assert_eq!(w.published.len(), 1, "telemetry only, no LOCATION event");
    assert!(w.positions.0.read().unwrap().is_empty());
}

#[test]
fn location_rules() {
    let mut w = World::new();
    w.positions.0.write().unwrap().insert(
        ICCID.parse().unwrap(),
        Position::new(-0.1275, 51.507222, "CellTower", 1_700_000_123).unwrap(),
    );
    let r = one(w.deliver(device_link(9), &get_location(1)));
    assert!(r.is(ResponseType::Unauthorized));
    let r = one(w.deliver(device_link(2), &Req::con_post(2).path("location").bytes()));
    assert!(r.is(ResponseType::MethodNotAllowed));
    // Over DTLS too.
    let link = Link::Dtls {
        addr: "127.0.0.2:40000".parse().unwrap(),
        session: 1,
    };
    w.endpoint
        .handle_session_established(1, ICCID.parse().unwrap());
    let r = one(w.deliver(link, &get_location(3)));
    assert!(r.is(ResponseType::Content));
    assert_eq!(
        String::from_utf8(r.packet.payload.clone()).unwrap(),
        "Longitude,Latitude,Source,SampleTime\n-0.1275,51.507222,CellTower,1700000123\n"
    );
}

#[test]
fn the_first_request_of_a_new_device_publishes_its_lifecycle_event_once() {
    let mut w = World::new();
    w.registered.devices.write().unwrap().clear();
    // Even a request that ends in 4.04 passed the device check.
    let r = one(w.deliver(device_link(2), &Req::con_post(1).path("nope").bytes()));
    assert!(r.is(ResponseType::NotFound));
    assert_eq!(w.published.len(), 1);
    assert_eq!(w.published[0].topic, format!("{ICCID}/lifecycle"));
    let v = json_of(&w.published[0].payload);
    assert_eq!(v["type"], "LIFECYCLE");
    assert_eq!(v["event"], "DEVICE_FIRST_TIME_REGISTERED");
    // While it is on its way, no second one.
    w.deliver(device_link(2), &post(2, b"x"));
    assert_eq!(w.published.len(), 2, "the telemetry only");
    w.confirm_all();
    assert!(
        w.registered
            .devices
            .read()
            .unwrap()
            .contains(&ICCID.parse().unwrap())
    );
    w.deliver(device_link(2), &post(3, b"y"));
    assert_eq!(w.published.len(), 3);
    assert_eq!(w.published[2].topic, format!("{ICCID}/sensors"));
}

#[test]
fn a_lifecycle_event_the_broker_did_not_take_is_tried_again() {
    let mut w = World::new();
    w.registered.devices.write().unwrap().clear();
    w.deliver(device_link(2), &post(1, b"x"));
    let lifecycle = w.published[0].id;
    w.broker(lifecycle, PublishResult::Unavailable);
    assert!(w.registered.devices.read().unwrap().is_empty());
    w.deliver(device_link(2), &post(2, b"y"));
    let topics: Vec<&str> = w.published.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(
        topics.iter().filter(|t| t.ends_with("/lifecycle")).count(),
        2,
        "{topics:?}"
    );
}

#[test]
fn unknown_devices_get_no_lifecycle_event() {
    let mut w = World::new();
    w.registered.devices.write().unwrap().clear();
    w.deliver(device_link(9), &post(1, b"x"));
    assert!(w.published.is_empty());
}
