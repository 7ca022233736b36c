//! The TOML configuration of spec.md §7. Every key is optional; the defaults
//! are documented in docs/configuration.md and in [`Config::default`]. An
//! unknown key is an error that names it.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use coapgate_bootstrap::{PskFormat, PskRecord};
use coapgate_exchange::{DedupLimits, TransmissionParams};
use coapgate_model::{Device, DeviceStatus, Iccid, Imsi};
use serde::{Deserialize, Deserializer};

use crate::ServerError;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[coap]`: the plain CoAP listener and request handling.
    pub coap: CoapConfig,
    /// `[coaps]`: the DTLS listener.
    pub coaps: CoapsConfig,
    /// `[mqtt]`: the broker link.
    pub mqtt: MqttConfig,
    /// `[store]`: where devices are kept.
    pub store: StoreConfig,
    /// `[admin]`: the admin HTTP API.
    pub admin: AdminConfig,
    /// `[[device]]`: devices seeded into the store at start-up.
    #[serde(rename = "device")]
    pub devices: Vec<DeviceSeed>,
}

/// `[coap]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapConfig {
    /// Listen address (`0.0.0.0:5683`).
    pub bind: SocketAddr,
    /// Largest telemetry payload accepted, bytes (1024; at least 1024).
    pub max_payload: usize,
    /// Wait for the broker before an empty ACK, seconds (1.0).
    #[serde(deserialize_with = "seconds")]
    pub piggyback_window: Duration,
    /// Wait for the broker before 5.04, seconds (10.0).
    #[serde(deserialize_with = "seconds")]
    pub publish_timeout: Duration,
    /// Most publishes awaiting the broker at once (4096); also the MQTT outbox size.
    pub max_pending: usize,
    /// SO_RCVBUF of the UDP socket, bytes (4 MiB; the kernel caps it at
    /// `net.core.rmem_max`).
    pub recv_buffer: usize,
    /// SO_SNDBUF of the UDP socket, bytes (1 MiB).
    pub send_buffer: usize,
    /// On SIGTERM/SIGINT, how long to wait for pending publishes before
    /// exiting, seconds (5).
    #[serde(deserialize_with = "seconds")]
    pub shutdown_grace: Duration,
    /// RFC 7252 transmission parameters (`[coap.transmission]`).
    pub transmission: TransmissionParams,
    /// Deduplication cache bounds (`[coap.dedup]`).
    pub dedup: DedupLimits,
}

impl Default for CoapConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 5683)),
            max_payload: 1024,
            piggyback_window: Duration::from_secs(1),
            publish_timeout: Duration::from_secs(10),
            max_pending: 4096,
            recv_buffer: 4 << 20,
            send_buffer: 1 << 20,
            shutdown_grace: Duration::from_secs(5),
            transmission: TransmissionParams::default(),
            dedup: DedupLimits::default(),
        }
    }
}

/// `[coaps]`: the DTLS listener and the PSKs `/bootstrap` hands out.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapsConfig {
    /// Listen address (`0.0.0.0:5684`).
    pub bind: SocketAddr,
    /// The URL `/bootstrap` hands to devices.
    pub public_url: String,
    /// A generated PSK is replaced when `/bootstrap` is called this many
    /// seconds or more after the device's previous call (300, spec.md §2.4).
    #[serde(deserialize_with = "seconds")]
    pub regenerate_psk_after: Duration,
    /// Most established DTLS sessions (10 000; about 44 KiB each).
    pub max_sessions: usize,
    /// Most handshakes in progress, counted after the cookie round trip
    /// (256; about 47 KiB each).
    pub max_handshakes: usize,
    /// A handshake not complete this many seconds after its ClientHello
    /// with cookie is dropped (20).
    #[serde(deserialize_with = "seconds")]
    pub handshake_timeout: Duration,
    /// A session without an authenticated datagram for this many seconds
    /// is closed (1800).
    #[serde(deserialize_with = "seconds")]
    pub idle_timeout: Duration,
    /// Largest datagram sent, bytes (1200).
    pub mtu: u32,
}

impl Default for CoapsConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 5684)),
            public_url: "coaps://localhost:5684".to_owned(),
            regenerate_psk_after: Duration::from_secs(300),
            max_sessions: 10_000,
            max_handshakes: 256,
            handshake_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(30 * 60),
            mtu: 1200,
        }
    }
}

/// How the MQTT payload is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// The JSON envelope (default).
    #[default]
    Envelope,
    /// The device's bytes.
    Raw,
}

/// `[mqtt]`.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// The broker, `mqtt://[user:pass@]host[:port]`; absent: start the
    /// embedded broker and use it.
    pub url: Option<String>,
    /// Where the embedded broker listens (`127.0.0.1:1883`).
    pub embedded_bind: SocketAddr,
    /// MQTT client ID (`coapgate-<pid>`).
    pub client_id: Option<String>,
    /// 1 (PUBACK confirms, default) or 2 (PUBCOMP confirms).
    pub qos: u8,
    /// Topic when the device gave `t` (`{iccid}/{t}`).
    pub topic: String,
    /// Topic when it did not (`{iccid}`).
    pub topic_without_t: String,
    /// `envelope` (default) or `raw`.
    pub payload: PayloadFormat,
    /// MQTT keep-alive, seconds (30).
    #[serde(deserialize_with = "seconds")]
    pub keep_alive: Duration,
    /// Largest MQTT packet, bytes (65536).
    pub max_packet_size: usize,
    /// How long start-up waits for the first broker connection, seconds (10).
    #[serde(deserialize_with = "seconds")]
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("MqttConfig")
            .field("url", &self.url.as_ref().map(|_| "<set>"))
            .field("embedded_bind", &self.embedded_bind)
            .field("client_id", &self.client_id)
            .field("qos", &self.qos)
            .field("topic", &self.topic)
            .field("topic_without_t", &self.topic_without_t)
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: None,
            embedded_bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            client_id: None,
            qos: 1,
            topic: "{iccid}/{t}".to_owned(),
            topic_without_t: "{iccid}".to_owned(),
            payload: PayloadFormat::Envelope,
            keep_alive: Duration::from_secs(30),
            max_packet_size: 64 * 1024,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://coapgate.db` (relative to the working directory),
    /// `sqlite:///abs/path.db`, `sqlite::memory:`; `postgres://` is planned.
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://coapgate.db".to_owned(),
        }
    }
}

/// `[admin]`. Accepted now; the admin API is not built yet.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address (`127.0.0.1:8080`).
    pub bind: SocketAddr,
    /// Bearer token for `/v1` routes.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
        }
    }
}

/// A `[[device]]` entry: `iccid` and `ip` required, `status` defaults to
/// ACTIVE; `psk` (with `psk_format`) sets an operator PSK.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSeed {
    /// 19 or 20 digits.
    pub iccid: Iccid,
    /// The IMSI, if known.
    #[serde(default)]
    pub imsi: Option<Imsi>,
    /// The SIM's address.
    pub ip: IpAddr,
    /// ACTIVE (default) or INACTIVE.
    #[serde(default = "active")]
    pub status: DeviceStatus,
    /// A label.
    #[serde(default)]
    pub name: Option<String>,
    /// An operator PSK (8–256 characters), never regenerated by `/bootstrap`.
    #[serde(default)]
    pub psk: Option<String>,
    /// `STRING` (default: the key is the text's bytes) or `HEX` (the key is
    /// the decoded bytes).
    #[serde(default)]
    pub psk_format: Option<String>,
    /// An operator's position for the device (a cell-tower fix, …).
    #[serde(default)]
    pub position: Option<PositionSeed>,
}

/// `[[device]] position = { coordinate = [lon, lat], source = "CellTower",
/// sample_time = 1700000000 }`, shaped as the admin API's position.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionSeed {
    /// `[longitude, latitude]`.
    pub coordinate: [f64; 2],
    /// Who determined it (default `CellTower`).
    #[serde(default = "cell_tower")]
    pub source: String,
    /// Epoch seconds.
    pub sample_time: u64,
}

fn cell_tower() -> String {
    "CellTower".to_owned()
}

impl std::fmt::Debug for DeviceSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSeed")
            .field("iccid", &self.iccid)
            .field("imsi", &self.imsi)
            .field("ip", &self.ip)
            .field("status", &self.status)
            .field("name", &self.name)
            .field("psk", &self.psk.as_ref().map(|_| "<set>"))
            .field("psk_format", &self.psk_format)
            .field("position", &self.position)
            .finish()
    }
}

impl DeviceSeed {
    /// The operator position this entry asks for, validated.
    pub fn position(&self) -> Result<Option<coapgate_location::Position>, ServerError> {
        let Some(p) = &self.position else {
            return Ok(None);
        };
        coapgate_location::Position::new(p.coordinate[0], p.coordinate[1], &p.source, p.sample_time)
            .map(Some)
            .map_err(|e| ServerError::Config(format!("device.position of {}: {e}", self.iccid)))
    }

    /// The operator PSK record this entry asks for, validated.
    pub fn psk_record(&self) -> Result<Option<PskRecord>, ServerError> {
        let Some(secret) = &self.psk else {
            if self.psk_format.is_some() {
                return Err(ServerError::Config(format!(
                    "device.psk_format of {}: no psk given",
                    self.iccid
                )));
            }
            return Ok(None);
        };
        let format = match self.psk_format.as_deref() {
            None => PskFormat::String,
            Some(text) => text.parse().map_err(|e| {
                ServerError::Config(format!("device.psk_format of {}: {e}", self.iccid))
            })?,
        };
        // The error names the rule, never the secret.
        PskRecord::operator(secret, format)
            .map(Some)
            .map_err(|e| ServerError::Config(format!("device.psk of {}: {e}", self.iccid)))
    }
}

fn active() -> DeviceStatus {
    DeviceStatus::Active
}

impl From<DeviceSeed> for Device {
    fn from(d: DeviceSeed) -> Self {
        Device {
            iccid: d.iccid,
            imsi: d.imsi,
            ip: d.ip,
            status: d.status,
            name: d.name,
        }
    }
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

impl Config {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ServerError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ServerError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| match e {
            ServerError::Config(msg) => ServerError::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Checks values the types cannot: ranges and cross-field rules.
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |key: &str, why: &str| Err(ServerError::Config(format!("{key}: {why}")));
        if self.coap.max_payload < 1024 {
            return bad("coap.max_payload", "must be at least 1024 (spec.md §2.2)");
        }
        if self.coap.max_pending == 0 {
            return bad("coap.max_pending", "must be at least 1");
        }
        if let Err(why) = self.coap.transmission.validate() {
            return bad("coap.transmission", why);
        }
        if self.coap.piggyback_window >= self.coap.transmission.ack_timeout {
            return bad(
                "coap.piggyback_window",
                "must be shorter than coap.transmission.ack_timeout",
            );
        }
        if self.coap.publish_timeout <= self.coap.piggyback_window {
            return bad(
                "coap.publish_timeout",
                "must be longer than coap.piggyback_window",
            );
        }
        if self.coap.dedup.max_entries == 0 {
            return bad("coap.dedup.max_entries", "must be at least 1");
        }
        if !matches!(self.mqtt.qos, 1 | 2) {
            return bad(
                "mqtt.qos",
                "must be 1 or 2 (a device is acknowledged only after the broker confirmed)",
            );
        }
        if let Err(e) =
            coapgate_topic::TopicTemplates::new(&self.mqtt.topic, &self.mqtt.topic_without_t)
        {
            return bad("mqtt.topic", &e.to_string());
        }
        let mut iccids = std::collections::HashSet::new();
        let mut ips = std::collections::HashSet::new();
        for d in &self.devices {
            if !iccids.insert(d.iccid.clone()) {
                return bad("device.iccid", &format!("{} is listed twice", d.iccid));
            }
            if !ips.insert(d.ip.to_canonical()) {
                return bad("device.ip", &format!("{} is listed twice", d.ip));
            }
            d.psk_record()?;
            d.position()?;
        }
        Ok(())
    }
}

impl CoapsConfig {
    /// The DTLS server's settings.
    pub fn dtls(&self) -> coapgate_dtls::DtlsConfig {
        coapgate_dtls::DtlsConfig {
            max_sessions: self.max_sessions,
            max_handshakes: self.max_handshakes,
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            mtu: self.mtu,
            ..coapgate_dtls::DtlsConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_parses() {
        let c = Config::from_toml(
            r#"
[coap]
bind = "0.0.0.0:5683"
[coaps]
bind = "0.0.0.0:5684"
public_url = "coaps://coap.example.com:5684"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[store]
url = "sqlite://coapgate.db"
[admin]
bind = "127.0.0.1:8080"
token = "change-me"

[[device]]
iccid = "8988280666000000000"
imsi = "901405100000000"
ip = "127.0.0.1"
status = "ACTIVE"
"#,
        )
        .unwrap();
        assert_eq!(c.devices.len(), 1);
        assert_eq!(c.mqtt.url.as_deref(), Some("mqtt://127.0.0.1:1883"));
        assert_eq!(c.coaps.public_url, "coaps://coap.example.com:5684");
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.coap.bind, "0.0.0.0:5683".parse().unwrap());
        assert_eq!(c.coap.max_payload, 1024);
        assert_eq!(
            c.coap.transmission.exchange_lifetime(),
            Duration::from_secs(247)
        );
        assert!(c.mqtt.url.is_none(), "embedded broker by default");
        assert_eq!(c.store.url, "sqlite://coapgate.db");
        assert_eq!(c.admin.bind, "127.0.0.1:8080".parse().unwrap());
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let err = Config::from_toml("[coap]\nbnd = \"0.0.0.0:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bnd"), "{err}");
        let err = Config::from_toml("[cooap]\n").unwrap_err().to_string();
        assert!(err.contains("cooap"), "{err}");
        let err = Config::from_toml(
            "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.1\"\ncolour = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn durations_are_seconds_and_transmission_parameters_are_configurable() {
        let c = Config::from_toml(
            "[coap]\npiggyback_window = 0.25\npublish_timeout = 3\n[coap.transmission]\nack_timeout = 1\nmax_retransmit = 2\n[coap.dedup]\nmax_entries = 10\n",
        )
        .unwrap();
        assert_eq!(c.coap.piggyback_window, Duration::from_millis(250));
        assert_eq!(c.coap.publish_timeout, Duration::from_secs(3));
        assert_eq!(c.coap.transmission.ack_timeout, Duration::from_secs(1));
        assert_eq!(c.coap.transmission.max_retransmit, 2);
        assert_eq!(c.coap.dedup.max_entries, 10);
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        for (toml, key) in [
            ("[coap]\nmax_payload = 100\n", "coap.max_payload"),
            ("[mqtt]\nqos = 0\n", "mqtt.qos"),
            ("[mqtt]\ntopic = \"a/#\"\n", "mqtt.topic"),
            ("[coap]\npiggyback_window = 5\n", "coap.piggyback_window"),
            (
                "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\n[[device]]\niccid = \"8988280666000000001\"\nip = \"127.0.0.2\"\n",
                "device.ip",
            ),
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml:?} gave {err}");
        }
        let err = Config::from_toml("[[device]]\niccid = \"123\"\nip = \"127.0.0.2\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ICCID"), "{err}");
    }

    #[test]
    fn devices_may_carry_an_operator_psk() {
        let c = Config::from_toml(
            "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\npsk = \"00112233aabbccdd\"\npsk_format = \"HEX\"\n",
        )
        .unwrap();
        let record = c.devices[0].psk_record().unwrap().unwrap();
        assert_eq!(
            &record.key()[..],
            &[0x00, 0x11, 0x22, 0x33, 0xaa, 0xbb, 0xcc, 0xdd]
        );
        for bad in [
            "psk = \"short\"",
            "psk = \"zz112233aabbccdd\"\npsk_format = \"HEX\"",
            "psk_format = \"HEX\"",
        ] {
            let err = Config::from_toml(&format!(
                "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\n{bad}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains("device.psk"), "{bad}: {err}");
            assert!(!err.contains("zz112233"), "no secret in errors: {err}");
        }
    }

    #[test]
    fn devices_may_carry_an_operator_position() {
        let c = Config::from_toml(
            "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\n\
             position = { coordinate = [13.4, 52.5], sample_time = 1700000000 }\n",
        )
        .unwrap();
        let p = c.devices[0].position().unwrap().unwrap();
        assert_eq!(
            (p.longitude(), p.latitude(), p.source()),
            (13.4, 52.5, "CellTower")
        );
        let err = Config::from_toml(
            "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\n\
             position = { coordinate = [200, 52.5], sample_time = 1 }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("device.position"), "{err}");
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c = Config::from_toml(
            "[mqtt]\nurl = \"mqtt://u:hunter2@h:1\"\n[admin]\ntoken = \"s3cret\"\n\
             [[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\npsk = \"operator-secret\"\n",
        )
        .unwrap();
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("hunter2")
                && !debug.contains("s3cret")
                && !debug.contains("operator-secret"),
            "{debug}"
        );
    }
}
