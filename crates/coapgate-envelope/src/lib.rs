//! The JSON envelopes coapgate publishes (spec.md §2.3): [`telemetry`] for
//! every device message, and the events [`translation_error`],
//! [`location`] and [`first_time_registered`].
//!
//! ```json
//! {"payload":{"type":"STRING","encoding":"base64","value":"SGVsbG8=","topic":"test"},
//!  "received":"1700000000123","id":"…","source":"COAP","type":"TELEMETRY_DATA",
//!  "version":"1.0.0","device":{"iccid":"8988280666000000000","ip":"10.0.0.7","imsi":"901405100000000"}}
//! ```
//!
//! Field order follows the 1NCE Cloud Integrator so that byte-for-byte
//! comparisons in downstream tooling keep working. The crate is pure: the
//! caller supplies the message ID and the receive time.

#![forbid(unsafe_code)]

use std::net::IpAddr;

use base64::Engine as _;
use serde::Serialize;

/// The envelope format version.
pub const VERSION: &str = "1.0.0";

/// The device a message came from, as published.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DeviceRef<'a> {
    /// The SIM's ICCID.
    pub iccid: &'a str,
    /// The source IP address the message came from.
    pub ip: IpAddr,
    /// The SIM's IMSI, when the store knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imsi: Option<&'a str>,
}

/// What every envelope carries besides its body.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    /// A unique ID for this message.
    pub id: &'a str,
    /// When the message was received, epoch milliseconds.
    pub received_ms: u64,
    /// The sending device.
    pub device: DeviceRef<'a>,
}

/// A message payload as published.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Bytes as the device sent them: `"type":"STRING","encoding":"base64"`.
    Binary(&'a [u8]),
    /// A translated payload: `"type":"JSON"`, the object as `value`.
    Json(&'a serde_json::Value),
}

#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    value: Value<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Value<'a> {
    Text(String),
    Json(&'a serde_json::Value),
}

#[derive(Serialize)]
struct Envelope<'a> {
    payload: Payload<'a>,
    received: String,
    id: &'a str,
    source: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'static str,
    device: DeviceRef<'a>,
}

fn payload<'a>(body: Body<'a>, topic: Option<&'a str>) -> Payload<'a> {
    match body {
        Body::Binary(bytes) => Payload {
            kind: "STRING",
            encoding: Some("base64"),
            value: Value::Text(base64::engine::general_purpose::STANDARD.encode(bytes)),
            topic,
        },
        Body::Json(value) => Payload {
            kind: "JSON",
            encoding: None,
            value: Value::Json(value),
            topic,
        },
    }
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'static str,
    description: &'a str,
}

#[derive(Serialize)]
struct LocationDetail<'a> {
    source: &'a str,
    coordinates: [String; 2],
    #[serde(rename = "sampleTime")]
    sample_time: u64,
}

/// One event's own fields, then the fields every envelope shares.
#[derive(Serialize)]
struct Event<'a, T: Serialize> {
    #[serde(flatten)]
    detail: T,
    received: String,
    id: &'a str,
    source: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'static str,
    device: DeviceRef<'a>,
}

fn event<T: Serialize>(meta: &Meta<'_>, kind: &'static str, detail: T) -> Vec<u8> {
    let envelope = Event {
        detail,
        received: meta.received_ms.to_string(),
        id: meta.id,
        source: "COAP",
        kind,
        version: VERSION,
        device: meta.device,
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// The `ERROR` event for a payload a template could not translate; the raw
/// payload travels inside, so nothing is lost (spec.md §2.3). Published on
/// `{iccid}/error`.
pub fn translation_error(meta: &Meta<'_>, description: &str, raw: &[u8]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Detail<'a> {
        error: ErrorDetail<'a>,
        payload: Payload<'a>,
    }
    event(
        meta,
        "ERROR",
        Detail {
            error: ErrorDetail {
                kind: "DEVICE",
                message: "Translator[UserPayloadError]",
                description,
            },
            payload: payload(Body::Binary(raw), None),
        },
    )
}

/// The `LOCATION` event for a position a template yielded (spec.md §2.3),
/// published on `{iccid}/location`: coordinates longitude first, as exact
/// decimal strings.
pub fn location(meta: &Meta<'_>, position: &coapgate_location::Position) -> Vec<u8> {
    #[derive(Serialize)]
    struct Detail<'a> {
        location: LocationDetail<'a>,
    }
    event(
        meta,
        "LOCATION",
        Detail {
            location: LocationDetail {
                source: position.source(),
                coordinates: [
                    coapgate_location::coordinate(position.longitude()),
                    coapgate_location::coordinate(position.latitude()),
                ],
                sample_time: position.sample_time(),
            },
        },
    )
}

/// The `LIFECYCLE` event `DEVICE_FIRST_TIME_REGISTERED`, once per device
/// ever (spec.md §2.3), published on `{iccid}/lifecycle`.
pub fn first_time_registered(meta: &Meta<'_>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Detail {
        event: &'static str,
    }
    event(
        meta,
        "LIFECYCLE",
        Detail {
            event: "DEVICE_FIRST_TIME_REGISTERED",
        },
    )
}

/// The `TELEMETRY_DATA` envelope for a device message; `topic` is the
/// device's `t`, present only when it gave one.
pub fn telemetry(meta: &Meta<'_>, topic: Option<&str>, body: Body<'_>) -> Vec<u8> {
    let envelope = Envelope {
        payload: payload(body, topic),
        received: meta.received_ms.to_string(),
        id: meta.id,
        source: "COAP",
        kind: "TELEMETRY_DATA",
        version: VERSION,
        device: meta.device,
    };
    // Serialising borrowed strings and integers into a Vec cannot fail.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta() -> Meta<'static> {
        Meta {
            id: "0b4f3b1e-7d1c-4c36-9d0e-5a1f0e1b2c3d",
            received_ms: 1_700_000_000_123,
            device: DeviceRef {
                iccid: "8988280666000000000",
                ip: "10.0.0.7".parse().unwrap(),
                imsi: Some("901405100000000"),
            },
        }
    }

    #[test]
    fn telemetry_is_the_spec_example_byte_for_byte() {
        let bytes = telemetry(&meta(), Some("test"), Body::Binary(b"Hello"));
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"payload":{"type":"STRING","encoding":"base64","value":"SGVsbG8=","topic":"test"},"received":"1700000000123","id":"0b4f3b1e-7d1c-4c36-9d0e-5a1f0e1b2c3d","source":"COAP","type":"TELEMETRY_DATA","version":"1.0.0","device":{"iccid":"8988280666000000000","ip":"10.0.0.7","imsi":"901405100000000"}}"#
        );
    }

    #[test]
    fn no_topic_and_no_imsi_are_left_out() {
        let mut m = meta();
        m.device.imsi = None;
        let v: serde_json::Value =
            serde_json::from_slice(&telemetry(&m, None, Body::Binary(&[0, 0xff]))).unwrap();
        assert_eq!(
            v["payload"],
            json!({"type":"STRING","encoding":"base64","value":"AP8="})
        );
        assert_eq!(
            v["device"],
            json!({"iccid":"8988280666000000000","ip":"10.0.0.7"})
        );
    }

    #[test]
    fn translated_payloads_are_json_without_encoding() {
        let value = json!({"Temperature":26});
        let v: serde_json::Value =
            serde_json::from_slice(&telemetry(&meta(), None, Body::Json(&value))).unwrap();
        assert_eq!(
            v["payload"],
            json!({"type":"JSON","value":{"Temperature":26}})
        );
    }

    #[test]
    fn the_error_event_carries_the_error_text_and_the_raw_payload() {
        let bytes = translation_error(
            &meta(),
            "Asset path:Humidity, Error: can't extract [2:4] from 2 bytes",
            &[0x00, 0x1a],
        );
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with(r#"{"error":{"type":"DEVICE","message":"Translator[UserPayloadError]","description":"Asset path:Humidity, Error: can't extract [2:4] from 2 bytes"},"payload":{"type":"STRING","encoding":"base64","value":"ABo="},"received":"1700000000123","#), "{text}");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["type"], "ERROR");
        assert_eq!(v["source"], "COAP");
        assert_eq!(v["device"]["iccid"], "8988280666000000000");
    }

    #[test]
    fn the_location_event_has_string_coordinates_longitude_first() {
        let p =
            coapgate_location::Position::new(13.404954, 52.520008, "GPS", 1_700_000_000).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&location(&meta(), &p)).unwrap();
        assert_eq!(
            v["location"],
            json!({"source":"GPS","coordinates":["13.404954","52.520008"],"sampleTime":1700000000})
        );
        assert_eq!(v["type"], "LOCATION");
        assert_eq!(v["id"], meta().id);
    }

    #[test]
    fn the_lifecycle_event() {
        let v: serde_json::Value = serde_json::from_slice(&first_time_registered(&meta())).unwrap();
        assert_eq!(v["type"], "LIFECYCLE");
        assert_eq!(v["event"], "DEVICE_FIRST_TIME_REGISTERED");
        assert_eq!(v["version"], "1.0.0");
        assert_eq!(v["device"]["imsi"], "901405100000000");
    }

    #[test]
    fn ipv6_sources_print_in_canonical_form() {
        let mut m = meta();
        m.device.ip = "::1".parse().unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&telemetry(&m, None, Body::Binary(b""))).unwrap();
        assert_eq!(v["device"]["ip"], "::1");
    }
}
