//! Energy Saver templates, positions and `/location`, and the lifecycle
//! event, end to end with libcoap's client and Mosquitto (spec.md §2.3, §2.5,
//! §5).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use coapgate_server::BackgroundServer;
use coapgate_store::TemplateStatus;
use coapgate_testkit::{Mosquitto, MosquittoSub, coap_client, temp_dir};
use common::*;
use serde_json::{Value, json};

const CLIENT: &str = "coap-client-notls";
const WAIT: Duration = Duration::from_secs(5);

/// POSTs `payload` (binary, from a file) from 127.0.0.2; the response code.
fn post_bytes(server: &BackgroundServer, payload: &[u8], test: &str) -> Option<String> {
    let dir = temp_dir("payload");
    let file = dir.join("payload.bin");
    std::fs::write(&file, payload).unwrap();
    let reply = coap_client(
        CLIENT,
        &[
            "-a",
            "127.0.0.2",
            "-m",
            "post",
            "-f",
            file.to_str().unwrap(),
            &url(server, "/data?t=sensors"),
        ],
        test,
    )?;
    let _ = std::fs::remove_dir_all(dir);
    Some(
        reply
            .code
            .unwrap_or_else(|| panic!("no response: {}", reply.log)),
    )
}

fn get_location(server: &BackgroundServer, test: &str) -> Option<(String, String)> {
    let reply = coap_client(
        CLIENT,
        &["-a", "127.0.0.2", "-m", "get", &url(server, "/location")],
        test,
    )?;
    Some((reply.code.unwrap_or_default(), reply.payload))
}

fn json(payload: &str) -> Value {
    serde_json::from_str(payload).unwrap()
}

#[test]
fn an_active_template_translates_and_a_short_payload_becomes_an_error_event() {
    let test = "template_translation";
    let Some(s) = setup(test) else {
        return;
    };
    let template = json!({"sense":[
        {"asset":"Temperature","value":{"byte":0,"bytelength":2,"type":"int"}},
        {"asset":"Humidity","value":{"byte":2,"bytelength":2,"type":"int"}},
        {"asset":"Switch","value":{"byte":4,"type":"boolean"}}]});
    s.server
        .store()
        .set_coap_template("sensors", &template, TemplateStatus::Active)
        .unwrap();

    let Some(code) = post_bytes(&s.server, &[0x00, 0x1a, 0x00, 0x37, 0x00], test) else {
        return;
    };
    assert_eq!(code, "2.04");
    let telemetry = s.sub.wait_for_telemetry(1, WAIT);
    assert_eq!(telemetry[0].topic, format!("{ICCID_A}/sensors"));
    assert!(
        telemetry[0]
            .payload
            .starts_with(r#"{"payload":{"type":"JSON","value":{"Temperature":26,"Humidity":55,"Switch":false},"topic":"sensors"}"#),
        "{}",
        telemetry[0].payload
    );

    assert_eq!(
        post_bytes(&s.server, &[0x00, 0x1a], test).unwrap(),
        "2.04",
        "accepted, nothing lost"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.sub.telemetry().len(),
        1,
        "no telemetry for the short payload"
    );
    let errors: Vec<_> = s
        .sub
        .events()
        .into_iter()
        .filter(|m| m.topic.ends_with("/error"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].topic, format!("{ICCID_A}/error"));
    let v = json(&errors[0].payload);
    assert_eq!(
        v["error"]["description"],
        "Asset path:Humidity, Error: can't extract [2:4] from 2 bytes"
    );
    assert_eq!(
        v["payload"],
        json!({"type":"STRING","encoding":"base64","value":"ABo="})
    );

    // INACTIVE: back to base64.
    s.server
        .store()
        .set_coap_template("sensors", &template, TemplateStatus::Inactive)
        .unwrap();
    assert_eq!(post_bytes(&s.server, &[0x00, 0x1a], test).unwrap(), "2.04");
    let telemetry = s.sub.wait_for_telemetry(2, WAIT);
    assert_eq!(json(&telemetry[1].payload)["payload"]["value"], "ABo=");
}

#[test]
fn a_location_template_updates_location_and_publishes_a_location_event() {
    let test = "template_location";
    let Some(s) = setup(test) else {
        return;
    };
    let Some((code, body)) = get_location(&s.server, test) else {
        return;
    };
    assert_eq!(code, "4.04", "no position yet");
    assert_eq!(body, "");
    let template = json!({"sense":[
        {"asset":"lon","value":{"byte":0,"bytelength":8,"type":"float","byteorder":"little"},"custom_type":"location_long"},
        {"asset":"lat","value":{"byte":8,"bytelength":8,"type":"float","byteorder":"little"},"custom_type":"location_lat"}]});
    s.server
        .store()
        .set_coap_template("gps", &template, TemplateStatus::Active)
        .unwrap();
    let payload = [13.404954f64.to_le_bytes(), 52.520008f64.to_le_bytes()].concat();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(post_bytes(&s.server, &payload, test).unwrap(), "2.04");

    let (code, body) = get_location(&s.server, test).unwrap();
    assert_eq!(code, "2.05");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "Longitude,Latitude,Source,SampleTime");
    let row: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(&row[..3], ["13.404954", "52.520008", "GPS"]);
    let sample: u64 = row[3].parse().unwrap();
    assert!(
        sample >= before && sample <= before + 60,
        "{sample} vs {before}"
    );
    assert!(body.ends_with('\n'));

    let locations: Vec<_> = s
        .sub
        .events()
        .into_iter()
        .filter(|m| m.topic.ends_with("/location"))
        .collect();
    assert_eq!(locations.len(), 1);
    assert_eq!(
        json(&locations[0].payload)["location"]["coordinates"],
        json!(["13.404954", "52.520008"])
    );
    // The position was written behind, within about a second.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        s.server
            .store()
            .positions(&ICCID_A.parse().unwrap())
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn an_operator_position_from_the_configuration_is_served() {
    let test = "operator_position";
    let Some(s) = setup_with(test, |config| {
        config.devices[0].position = Some(coapgate_server::PositionSeed {
            coordinate: [-0.1275, 51.507222],
            source: "CellTower".into(),
            sample_time: 1_700_000_123,
        });
    }) else {
        return;
    };
    let Some((code, body)) = get_location(&s.server, test) else {
        return;
    };
    assert_eq!(code, "2.05");
    assert_eq!(
        body,
        "Longitude,Latitude,Source,SampleTime\n-0.1275,51.507222,CellTower,1700000123\n"
    );
}

#[test]
fn the_lifecycle_event_is_published_once_even_across_a_restart() {
    let test = "lifecycle_restart";
    let Some(broker) = Mosquitto::start(test) else {
        return;
    };
    let dir = temp_dir("lifecycle");
    let mut config = config(Some(broker.url()));
    config.store.url = format!("sqlite://{}", dir.join("store.db").display());
    for round in 0..2 {
        let Some(sub) = MosquittoSub::start(broker.port, test) else {
            return;
        };
        let server = start(config.clone());
        for n in 0..2 {
            let Some(code) = post_bytes(&server, format!("r{round}m{n}").as_bytes(), test) else {
                return;
            };
            assert_eq!(code, "2.04");
        }
        sub.wait_for_telemetry(2, WAIT);
        std::thread::sleep(Duration::from_millis(300));
        let lifecycle: Vec<_> = sub
            .events()
            .into_iter()
            .filter(|m| m.topic.ends_with("/lifecycle"))
            .collect();
        assert_eq!(
            lifecycle.len(),
            if round == 0 { 1 } else { 0 },
            "round {round}: {lifecycle:?}"
        );
        server.stop().unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
}
