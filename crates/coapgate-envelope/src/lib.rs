//! The JSON envelope coapgate publishes for every device message (SPEC §2.3).
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
    fn ipv6_sources_print_in_canonical_form() {
        let mut m = meta();
        m.device.ip = "::1".parse().unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&telemetry(&m, None, Body::Binary(b""))).unwrap();
        assert_eq!(v["device"]["ip"], "::1");
    }
}
