//! The TOML configuration of spec.md §7 (docs/configuration.md lists every
//! key, its default and its rule).
//!
//! Every key is optional. A section's keys are read into the configuration
//! types of the crates that own them, with their own defaults and their own
//! `validate()`: `[coap]` into the engine's [`EndpointConfig`] (and the
//! listener's own keys), `[coaps]` into [`DtlsConfig`] and the `/bootstrap`
//! settings, `[mqtt]` into [`BridgeConfig`], the [`TopicTemplates`] and the
//! [`PayloadFormat`], `[limits]` into the engine's device limit and the
//! DTLS server's handshake limit. The server restates none of those defaults. Every
//! value is parsed into its type once, at load time; an unknown key, a value
//! of the wrong type or out of range is a [`ConfigError`] that names the
//! key (`mqtt.qos: must be 1 or 2 …`).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use coapgate_bootstrap::{PskFormat, PskRecord};
use coapgate_dtls::{DtlsConfig, DtlsError};
use coapgate_endpoint::{EndpointConfig, PayloadFormat};
use coapgate_exchange::RateLimit;
use coapgate_model::{Device, DeviceStatus, Iccid, Imsi};
use coapgate_mqtt::{BridgeConfig, BrokerUrl, MqttError, Password, TlsConfig};
use coapgate_spool::SpoolConfig;
use coapgate_topic::TopicTemplates;
use secrecy::ExposeSecret;
pub use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::ServerError;

/// A configuration value that is not acceptable: the key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", prefix(.file, .key))]
pub struct ConfigError {
    file: Option<PathBuf>,
    key: String,
    reason: String,
}

impl ConfigError {
    /// `key` (dotted, as in the file: `coaps.public_url`, `device[0].ip`)
    /// is not acceptable because of `reason`.
    pub fn new(key: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self {
            file: None,
            key: key.into(),
            reason: reason.to_string(),
        }
    }

    /// The key, dotted as in the file; empty when the file as a whole is
    /// not TOML.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong with the value. Never the value itself when it is a
    /// secret.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The file the configuration came from, when [`Config::load`] read it.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    fn in_file(mut self, path: &Path) -> Self {
        self.file = Some(path.to_owned());
        self
    }

    /// `device.KEY` becomes `device[INDEX].KEY`, as serde's errors name a
    /// `[[device]]` entry.
    fn in_device(mut self, index: usize) -> Self {
        if let Some(rest) = self.key.strip_prefix("device.") {
            self.key = format!("device[{index}].{rest}");
        }
        self
    }
}

/// `FILE: KEY: ` of [`ConfigError`]'s text, each part only when there is one.
fn prefix(file: &Option<PathBuf>, key: &str) -> String {
    let file = file.as_ref().map(|f| format!("{}: ", f.display()));
    let key = (!key.is_empty()).then(|| format!("{key}: "));
    format!("{}{}", file.unwrap_or_default(), key.unwrap_or_default())
}

/// The whole configuration file. [`Default`] is what an empty file gives.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "toml::Table")]
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
    pub devices: Vec<DeviceSeed>,
}

/// `[coap]`: the listener's own keys, and the engine's.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CoapConfig {
    /// Listen address (`[::]:5683`: dual-stack, IPv4 and IPv6; `0.0.0.0`
    /// on a host without IPv6).
    pub bind: SocketAddr,
    /// SO_RCVBUF of the UDP sockets, bytes (4 MiB; the kernel caps it at
    /// `net.core.rmem_max`).
    pub recv_buffer: usize,
    /// SO_SNDBUF of the UDP sockets, bytes (1 MiB).
    pub send_buffer: usize,
    /// On SIGTERM/SIGINT, how long to wait for pending publishes before
    /// exiting, seconds (5).
    #[serde(with = "coapgate_exchange::secs_f64")]
    pub shutdown_grace: Duration,
    /// Engines (shards), each on a thread of its own with its own
    /// `SO_REUSEPORT` sockets, dedup cache, DTLS sessions and broker
    /// connection; 0 (the default): one per core the process may use.
    /// The instance-wide bounds (`max_pending`, `[coap.dedup]`,
    /// `coaps.max_sessions`, `coaps.max_handshakes`) are shared out
    /// equally between the shards (decision 104).
    pub threads: usize,
    /// The engine's configuration, defaults and rules: `max_payload`,
    /// `piggyback_window`, `publish_timeout`, `max_pending`,
    /// `[coap.transmission]` and `[coap.dedup]` from this section; the
    /// topics and payload format from `[mqtt]`, the `/bootstrap` settings
    /// from `[coaps]`. Its `seed` is filled with fresh randomness when the
    /// server starts.
    #[serde(skip)]
    pub engine: EndpointConfig,
}

impl Default for CoapConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv6Addr::UNSPECIFIED, 5683)),
            recv_buffer: 4 << 20,
            send_buffer: 1 << 20,
            shutdown_grace: Duration::from_secs(5),
            threads: 0,
            engine: EndpointConfig::default(),
        }
    }
}

impl CoapConfig {
    /// The most shards (`threads`) accepted.
    pub const MAX_THREADS: usize = 1024;

    /// How many shards run: `threads`, or one per core the process may
    /// use when it is 0.
    pub fn shards(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
        .min(Self::MAX_THREADS)
    }
}

/// `[coaps]`: the DTLS listener. Its `public_url` and `regenerate_psk_after`
/// go to [`EndpointConfig::bootstrap`] (`coap.engine.bootstrap`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CoapsConfig {
    /// Listen address (`[::]:5684`, dual-stack like `coap.bind`); uses `coap.recv_buffer` and
    /// `coap.send_buffer` too.
    pub bind: SocketAddr,
    /// The DTLS server's configuration, defaults and rules: `max_sessions`,
    /// `max_handshakes`, `handshake_timeout`, `idle_timeout`, `mtu`.
    #[serde(skip)]
    pub dtls: DtlsConfig,
}

impl Default for CoapsConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv6Addr::UNSPECIFIED, 5684)),
            dtls: DtlsConfig::default(),
        }
    }
}

/// `[mqtt]`: which broker, and the bridge's link settings. Its `topic`,
/// `topic_without_t` and `payload` go to the engine
/// (`coap.engine.topics`, `coap.engine.payload_format`). Its `ca_file`,
/// `cert_file` and `key_file` (for an `mqtts://` url) are read and checked
/// when the configuration is loaded, into `link.tls`; the environment
/// variable [`MQTT_PASSWORD_ENV`] may hold the broker password instead of `url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct MqttConfig {
    /// The broker, `mqtt://[user:pass@]host[:port]` or `mqtts://…` (TLS,
    /// port 8883 by default; with the cargo feature `tls`); absent: start
    /// the embedded broker and use it. `Debug` never shows the password.
    pub url: Option<BrokerUrl>,
    /// Where the embedded broker listens (`127.0.0.1:1883`; an explicit
    /// port).
    pub embedded_bind: SocketAddr,
    /// How long start-up waits for the first broker connection, seconds (10;
    /// not at all with `ack = "spool"`).
    #[serde(with = "coapgate_exchange::secs_f64")]
    pub connect_timeout: Duration,
    /// When a device gets its 2.04: once the broker confirmed the message
    /// (`"broker"`, the default), or once it is durably in the local spool
    /// (`"spool"`; forwarded to the broker when it can be).
    pub ack: AckMode,
    /// The spool file with `ack = "spool"` (`coapgate.spool`, relative to
    /// the working directory; SQLite, with `-wal`/`-shm` files beside it).
    pub spool_path: Option<PathBuf>,
    /// Most bytes of messages the spool holds; beyond it devices get 5.03
    /// with Max-Age (256 MiB).
    pub spool_max_bytes: Option<u64>,
    /// The bridge's configuration, defaults and rules: `client_id`, `qos`,
    /// `keep_alive`, `max_packet_size`; its outbox holds `coap.max_pending`
    /// publishes; its `tls` comes from `ca_file`, `cert_file` and
    /// `key_file`. The broker's address comes from [`bridge`](Self::bridge).
    #[serde(skip)]
    pub link: BridgeConfig,
}

/// `[mqtt] ack`: when a device's message counts as accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AckMode {
    /// 2.04 once the broker confirmed the message (PUBACK/PUBCOMP).
    #[default]
    Broker,
    /// 2.04 once the message is fsync'd in the local spool
    /// ([`coapgate_spool`]); forwarded in order when the broker is there.
    Spool,
}

/// [`MqttConfig::spool_path`] unless set.
pub const DEFAULT_SPOOL_PATH: &str = "coapgate.spool";

/// The environment variable that may hold the broker password (the user
/// name stays in `[mqtt] url`). Empty counts as unset; a password in both
/// places is an error.
pub const MQTT_PASSWORD_ENV: &str = "COAPGATE_MQTT_PASSWORD";

/// `[mqtt] ca_file`, `cert_file`, `key_file`: PEM files for an `mqtts://`
/// broker, read into [`BridgeConfig::tls`] at load.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TlsFiles {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// The first key given, dotted.
    fn first_given(&self) -> Option<&'static str> {
        [
            ("mqtt.ca_file", &self.ca_file),
            ("mqtt.cert_file", &self.cert_file),
            ("mqtt.key_file", &self.key_file),
        ]
        .into_iter()
        .find_map(|(key, value)| value.is_some().then_some(key))
    }

    /// Reads the files for an `mqtts://` url; refuses them for any other.
    fn load(&self, url: Option<&BrokerUrl>) -> Result<Option<TlsConfig>, ConfigError> {
        if !url.is_some_and(BrokerUrl::is_tls) {
            return match self.first_given() {
                Some(key) => Err(ConfigError::new(key, "needs an mqtts:// mqtt.url")),
                None => Ok(None),
            };
        }
        TlsConfig::from_pem_files(
            self.ca_file.as_deref(),
            self.cert_file.as_deref(),
            self.key_file.as_deref(),
        )
        .map(Some)
        .map_err(|e| match e {
            MqttError::Tls { field, reason } => ConfigError::new(format!("mqtt.{field}"), reason),
            other => ConfigError::new("mqtt.url", other),
        })
    }
}

/// The broker password from [`MQTT_PASSWORD_ENV`] (`env`: its value), into
/// `url`. The password must be in one place only, and needs a user name.
fn password_from_env(url: Option<&mut BrokerUrl>, env: Option<String>) -> Result<(), ConfigError> {
    let Some(password) = env.filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let refuse = |why: &str| {
        Err(ConfigError::new(
            "mqtt.url",
            format!("{MQTT_PASSWORD_ENV} is set, but {why}"),
        ))
    };
    let Some(url) = url else {
        return refuse("there is no mqtt.url (the embedded broker takes no password)");
    };
    if url.username().is_none() {
        return refuse("mqtt.url has no user name");
    }
    if url.password().is_some() {
        return refuse("mqtt.url has a password too; give it in one place");
    }
    url.set_password(Some(Password::new(password)));
    Ok(())
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: None,
            embedded_bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            connect_timeout: Duration::from_secs(10),
            ack: AckMode::Broker,
            spool_path: None,
            spool_max_bytes: None,
            link: BridgeConfig::default(),
        }
    }
}

impl MqttConfig {
    /// The spool's configuration with `ack = "spool"`; `None` otherwise.
    pub fn spool(&self) -> Option<SpoolConfig> {
        (self.ack == AckMode::Spool).then(|| {
            let mut spool = SpoolConfig::new(
                self.spool_path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL_PATH)),
            );
            if let Some(max) = self.spool_max_bytes {
                spool.max_bytes = max;
            }
            spool
        })
    }

    fn validate_spool(&self) -> Result<(), ConfigError> {
        if self.ack == AckMode::Broker {
            let given = [
                ("mqtt.spool_path", self.spool_path.is_some()),
                ("mqtt.spool_max_bytes", self.spool_max_bytes.is_some()),
            ];
            if let Some((key, _)) = given.into_iter().find(|(_, given)| *given) {
                return Err(ConfigError::new(key, "needs mqtt.ack = \"spool\""));
            }
        }
        if self.spool_max_bytes == Some(0) {
            return Err(ConfigError::new(
                "mqtt.spool_max_bytes",
                "must be more than 0",
            ));
        }
        if self
            .spool_path
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::new("mqtt.spool_path", "must not be empty"));
        }
        Ok(())
    }

    /// The bridge's configuration: [`link`](Self::link) aimed at `url`, or
    /// at the embedded broker's address when there is no `url`.
    pub fn bridge(&self, embedded_broker: Option<SocketAddr>) -> BridgeConfig {
        let mut bridge = self.link.clone();
        match (&self.url, embedded_broker) {
            (Some(url), _) => bridge.set_broker(url),
            (None, Some(addr)) => {
                bridge.host = addr.ip().to_string();
                bridge.port = addr.port();
            }
            (None, None) => {}
        }
        bridge
    }
}

/// `[store]`.
#[derive(Clone, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StoreConfig {
    /// `sqlite://coapgate.db` (relative to the working directory),
    /// `sqlite:///abs/path.db`, `sqlite::memory:`, or
    /// `postgres://user[:password]@host:port/db` (docs/configuration.md).
    /// `Debug` shows it with any password redacted.
    pub url: String,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = coapgate_store::redacted_url(&self.url);
        f.debug_struct("StoreConfig").field("url", &url).finish()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://coapgate.db".to_owned(),
        }
    }
}

/// `[admin]`: the admin HTTP API (`/v1`, `/metrics`, `/healthz`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct AdminConfig {
    /// Listen address (`127.0.0.1:8080`).
    pub bind: SocketAddr,
    /// Bearer token for `/v1` routes; required when `bind` is not a
    /// loopback address. Redacted in `Debug`, wiped on drop.
    pub token: Option<SecretString>,
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
#[derive(Debug, Clone, Deserialize)]
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
    /// Redacted in `Debug`, wiped on drop.
    #[serde(default)]
    pub psk: Option<SecretString>,
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

impl DeviceSeed {
    /// The operator position this entry asks for, validated.
    pub fn position(&self) -> Result<Option<coapgate_location::Position>, ConfigError> {
        let Some(p) = &self.position else {
            return Ok(None);
        };
        coapgate_location::Position::new(p.coordinate[0], p.coordinate[1], &p.source, p.sample_time)
            .map(Some)
            .map_err(|e| self.error("position", e))
    }

    /// The operator PSK record this entry asks for, validated.
    pub fn psk_record(&self) -> Result<Option<PskRecord>, ConfigError> {
        let Some(secret) = &self.psk else {
            if self.psk_format.is_some() {
                return Err(self.error("psk_format", "no psk given"));
            }
            return Ok(None);
        };
        let format = match self.psk_format.as_deref() {
            None => PskFormat::String,
            Some(text) => text.parse().map_err(|e| self.error("psk_format", e))?,
        };
        // The error names the rule, never the secret.
        PskRecord::operator(secret.expose_secret(), format)
            .map(Some)
            .map_err(|e| self.error("psk", e))
    }

    /// `device.KEY: REASON (device ICCID)`.
    fn error(&self, key: &str, reason: impl fmt::Display) -> ConfigError {
        ConfigError::new(
            format!("device.{key}"),
            format!("{reason} (device {})", self.iccid),
        )
    }
}

/// `[limits]` as written: rates per second (0 = off) and bucket sizes. Read
/// into [`EndpointConfig::device_limit`] (`coap.engine.device_limit`) and
/// [`DtlsConfig::handshake_limit`] (`coaps.dtls.handshake_limit`).
#[derive(Debug, Deserialize)]
#[serde(default)]
struct Limits {
    device_rate: f64,
    device_burst: u32,
    handshake_rate: f64,
    handshake_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            device_rate: 0.0,
            device_burst: 10,
            handshake_rate: 0.0,
            handshake_burst: 5,
        }
    }
}

impl Limits {
    /// (device limit, handshake limit); an error names the key.
    fn parse(&self) -> Result<(RateLimit, RateLimit), ConfigError> {
        let limit = |kind: &str, rate, burst| {
            RateLimit::per_second(rate, burst)
                .map_err(|e| ConfigError::new(format!("limits.{kind}_{}", e.field), e.reason))
        };
        Ok((
            limit("device", self.device_rate, self.device_burst)?,
            limit("handshake", self.handshake_rate, self.handshake_burst)?,
        ))
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

impl Config {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
        Self::try_from(table)
    }

    /// Reads, parses and validates a file; a [`ConfigError`] names the file.
    /// A file that cannot be read (missing, a directory, no permission) is
    /// a [`ServerError::Io`] naming it; one that is not UTF-8 a
    /// [`ConfigError`] giving the line of the first bad byte.
    pub fn load(path: &Path) -> Result<Self, ServerError> {
        let bytes = std::fs::read(path).map_err(|source| ServerError::Io {
            what: format!("read the configuration file {}", path.display()),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            ConfigError::new(
                "",
                format!("line {line}: not UTF-8 text (TOML files are UTF-8)"),
            )
            .in_file(path)
        })?;
        Ok(Self::from_toml(&text).map_err(|e| e.in_file(path))?)
    }

    /// Checks what the types cannot: each crate's `validate()` on its part,
    /// and the rules that span sections. [`Server::bind`](crate::Server::bind)
    /// calls it again, for a configuration changed after loading.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.coap.threads > CoapConfig::MAX_THREADS {
            return Err(ConfigError::new(
                "coap.threads",
                format!(
                    "must be at most {} (0: one per core)",
                    CoapConfig::MAX_THREADS
                ),
            ));
        }
        self.coap
            .engine
            .validate()
            .map_err(|e| ConfigError::new(format!("coap.{}", e.field), e.reason))?;
        self.coaps.dtls.validate().map_err(|e| match e {
            DtlsError::InvalidConfig { field, reason } => {
                ConfigError::new(format!("coaps.{field}"), reason)
            }
            other => ConfigError::new("coaps", other),
        })?;
        self.mqtt.link.validate().map_err(|e| match e {
            MqttError::InvalidConfig { field, reason } => {
                ConfigError::new(format!("mqtt.{field}"), reason)
            }
            other => ConfigError::new("mqtt", other),
        })?;
        self.mqtt.validate_spool()?;
        if self.mqtt.url.is_none() && self.mqtt.embedded_bind.port() == 0 {
            return Err(ConfigError::new(
                "mqtt.embedded_bind",
                "needs an explicit port when mqtt.url is absent (the embedded broker cannot report the port it got)",
            ));
        }
        if !self.admin.bind.ip().is_loopback()
            && self
                .admin
                .token
                .as_ref()
                .is_none_or(|t| t.expose_secret().is_empty())
        {
            return Err(ConfigError::new(
                "admin.token",
                format!(
                    "required when admin.bind ({}) is not a loopback address",
                    self.admin.bind
                ),
            ));
        }
        coapgate_store::check_url(&self.store.url).map_err(|e| match e {
            // The reason only: the key names the value, and the URL may
            // hold a password.
            coapgate_store::StoreError::InvalidUrl { reason, .. } => {
                ConfigError::new("store.url", reason)
            }
            other => ConfigError::new("store.url", other),
        })?;
        let mut iccids = HashMap::new();
        let mut ips = HashMap::new();
        for (index, d) in self.devices.iter().enumerate() {
            if let Some(first) = iccids.insert(d.iccid.clone(), index) {
                return Err(ConfigError::new(
                    format!("device[{index}].iccid"),
                    format!("{} is listed twice (device[{first}] has it too)", d.iccid),
                ));
            }
            if let Some(first) = ips.insert(d.ip.to_canonical(), index) {
                return Err(ConfigError::new(
                    format!("device[{index}].ip"),
                    format!("{} is listed twice (device[{first}] has it too)", d.ip),
                ));
            }
            d.psk_record().map_err(|e| e.in_device(index))?;
            d.position().map_err(|e| e.in_device(index))?;
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::try_from(toml::Table::new()).expect("the defaults are valid")
    }
}

impl TryFrom<toml::Table> for Config {
    type Error = ConfigError;

    /// Takes each section apart into the types that own its keys; a key no
    /// type takes is unknown.
    fn try_from(table: toml::Table) -> Result<Self, ConfigError> {
        let mut file = Section {
            path: String::new(),
            table,
        };
        let mut coap = file.section("coap")?;
        let mut coaps = file.section("coaps")?;
        let mut mqtt = file.section("mqtt")?;
        let mut store = file.section("store")?;
        let mut admin = file.section("admin")?;
        let mut limits = file.section("limits")?;
        let devices = file.take_key("device")?.unwrap_or_default();
        file.finish()?;

        let (device_limit, handshake_limit) = limits.take::<Limits>()?.parse()?;
        let mut engine: EndpointConfig = coap.take()?;
        engine.device_limit = device_limit;
        engine.topics = mqtt.take::<TopicTemplates>()?;
        if let Some(format) = mqtt.take_key::<PayloadFormat>("payload")? {
            engine.payload_format = format;
        }
        engine.bootstrap.policy = coaps.take()?;
        if let Some(url) = coaps.take_key("public_url")? {
            engine.bootstrap.coaps_url = url;
        }
        let mut link: BridgeConfig = mqtt.take()?;
        link.outbox_capacity = engine.max_pending;
        let tls_files: TlsFiles = mqtt.take()?;
        let mut mqtt_keys: MqttConfig = mqtt.take()?;
        password_from_env(
            mqtt_keys.url.as_mut(),
            std::env::var(MQTT_PASSWORD_ENV).ok(),
        )?;
        link.tls = tls_files.load(mqtt_keys.url.as_ref())?;
        let mut dtls: DtlsConfig = coaps.take()?;
        dtls.handshake_limit = handshake_limit;

        let config = Config {
            coap: CoapConfig {
                engine,
                ..coap.take()?
            },
            coaps: CoapsConfig {
                dtls,
                ..coaps.take()?
            },
            mqtt: MqttConfig { link, ..mqtt_keys },
            store: store.take()?,
            admin: admin.take()?,
            devices,
        };
        for section in [coap, coaps, mqtt, store, admin, limits] {
            section.finish()?;
        }
        config.validate()?;
        Ok(config)
    }
}

/// A TOML table being taken apart into typed values; every error names the
/// key in full.
struct Section {
    /// The table's own key, dotted (`coap`); empty for the whole file.
    path: String,
    table: toml::Table,
}

impl Section {
    /// `path.key`.
    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Removes the sub-table `key` (empty when absent).
    fn section(&mut self, key: &str) -> Result<Section, ConfigError> {
        let path = self.key(key);
        match self.table.remove(key) {
            None => Ok(Section {
                path,
                table: toml::Table::new(),
            }),
            Some(toml::Value::Table(table)) => Ok(Section { path, table }),
            Some(other) => Err(ConfigError::new(
                path,
                format!("must be a table, not {}", other.type_str()),
            )),
        }
    }

    /// Removes the keys `T` reads and parses them into `T`; the keys that
    /// are absent keep `T`'s defaults.
    fn take<T: DeserializeOwned>(&mut self) -> Result<T, ConfigError> {
        let part = field_names::<T>()
            .iter()
            .filter_map(|name| self.table.remove_entry(*name))
            .collect();
        parse(&self.path, toml::Value::Table(part))
    }

    /// Removes `key` and parses it into `T`; `None` when absent.
    fn take_key<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, ConfigError> {
        let path = self.key(key);
        self.table
            .remove(key)
            .map(|value| parse(&path, value))
            .transpose()
    }

    /// Any key left is one nothing takes.
    fn finish(self) -> Result<(), ConfigError> {
        match self.table.keys().next() {
            Some(key) => Err(ConfigError::new(self.key(key), "unknown key")),
            None => Ok(()),
        }
    }
}

/// Parses `value` into `T`, naming `path` and the key within it on error.
fn parse<T: DeserializeOwned>(path: &str, value: toml::Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = match e.path().to_string() {
            inner if inner == "." => path.to_owned(),
            inner if path.is_empty() || inner.starts_with('[') => format!("{path}{inner}"),
            inner => format!("{path}.{inner}"),
        };
        let message = e.into_inner().message().to_owned();
        let message = if is_secret(&key) {
            without_value(&message)
        } else {
            message
        };
        ConfigError::new(key, message)
    })
}

/// Whether the value of `key` may be a secret (a token, a PSK, a URL that
/// may carry a password): its errors never show the value.
fn is_secret(key: &str) -> bool {
    let last = key.rsplit(['.', ']']).next().unwrap_or(key);
    matches!(last, "token" | "psk" | "url" | "password")
}

/// serde's `invalid type: integer `5`, expected a string` (and `invalid
/// value`, `invalid length`) without the value: `invalid type: integer,
/// expected a string`. Other messages are the types' own (`BrokerUrl`'s,
/// …), which never quote a value, and are kept.
fn without_value(message: &str) -> String {
    for prefix in ["invalid type", "invalid value", "invalid length"] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let rest = rest.trim_start_matches([':', ' ']);
        let (unexpected, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        // `integer `5``, `string "x"`, `floating point `1.5``: the kind
        // before the quoted value; `3` (a length): nothing.
        let kind = unexpected
            .split(['`', '"', '\''])
            .next()
            .unwrap_or_default()
            .trim();
        let mut out = prefix.to_owned();
        if !kind.is_empty() && !kind.chars().any(|c| c.is_ascii_digit()) {
            out.push_str(": ");
            out.push_str(kind);
        }
        if !expected.is_empty() {
            out.push_str(", expected ");
            out.push_str(expected);
        }
        return out;
    }
    message.to_owned()
}

/// A TOML syntax error as `line L, column C: WHAT`, without toml's excerpt
/// of the file: the excerpt is the offending line, which may hold a token,
/// a PSK or a password.
fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return ConfigError::new("", message);
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or(before).chars().count() + 1;
    ConfigError::new("", format!("line {line}, column {column}: {message}"))
}

/// The keys `T`'s derived `Deserialize` reads: serde hands them to
/// `deserialize_struct`, which this deserializer answers with an error that
/// carries them. Empty for a `T` that is not a struct.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    #[derive(Debug)]
    struct Fields(&'static [&'static str]);

    impl fmt::Display for Fields {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "fields {:?}", self.0)
        }
    }

    impl std::error::Error for Fields {}

    impl de::Error for Fields {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Fields(&[])
        }
    }

    struct Probe;

    impl<'de> de::Deserializer<'de> for Probe {
        type Error = Fields;

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    match T::deserialize(Probe) {
        Err(Fields(fields)) => fields,
        Ok(_) => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret() {
        let c = Config::from_toml(
            r#"
[mqtt]
url = "mqtt://user:broker-secret@127.0.0.1:1883"
[store]
url = "postgres://coapgate:store-secret@127.0.0.1:5432/coapgate"
[admin]
token = "admin-secret"
[[device]]
iccid = "8988280666000000000"
ip = "127.0.0.2"
psk = "psk-secret-1"
"#,
        )
        .expect("valid");
        let debug = format!("{c:?}");
        for secret in [
            "broker-secret",
            "store-secret",
            "admin-secret",
            "psk-secret-1",
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(debug.contains("8988280666000000000"), "the rest is shown");
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.coap.bind, "[::]:5683".parse().unwrap());
        assert_eq!(c.coap.engine.max_payload, 1024);
        assert_eq!(
            c.coap.engine.transmission.exchange_lifetime(),
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
        let engine = &c.coap.engine;
        assert_eq!(engine.piggyback_window, Duration::from_millis(250));
        assert_eq!(engine.publish_timeout, Duration::from_secs(3));
        assert_eq!(engine.transmission.ack_timeout, Duration::from_secs(1));
        assert_eq!(engine.transmission.max_retransmit, 2);
        assert_eq!(engine.dedup.max_entries, 10);
    }

    #[test]
    fn each_part_reads_the_keys_of_its_section() {
        assert_eq!(
            field_names::<CoapConfig>(),
            [
                "bind",
                "recv_buffer",
                "send_buffer",
                "shutdown_grace",
                "threads"
            ]
        );
        assert_eq!(
            field_names::<EndpointConfig>(),
            [
                "transmission",
                "dedup",
                "max_payload",
                "piggyback_window",
                "publish_timeout",
                "max_pending",
                "store_timeout"
            ]
        );
        assert_eq!(
            field_names::<DtlsConfig>(),
            [
                "mtu",
                "max_sessions",
                "max_handshakes",
                "handshake_timeout",
                "idle_timeout"
            ]
        );
        assert_eq!(
            field_names::<BridgeConfig>(),
            ["client_id", "qos", "keep_alive", "max_packet_size"]
        );
        assert_eq!(
            field_names::<TopicTemplates>(),
            ["topic", "topic_without_t"]
        );
        assert_eq!(
            field_names::<coapgate_bootstrap::Policy>(),
            ["regenerate_psk_after"]
        );
        assert!(field_names::<PayloadFormat>().is_empty(), "not a struct");
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let e = ConfigError::new("coap.max_payload", "must be at least 1024")
            .in_file(Path::new("/etc/coapgate.toml"));
        assert_eq!(
            e.to_string(),
            "/etc/coapgate.toml: coap.max_payload: must be at least 1024"
        );
        let e = Config::from_toml("[coap\n").unwrap_err();
        assert_eq!(e.key(), "");
        assert!(e.reason().contains("line 1"), "{e}");
    }

    #[test]
    fn secret_values_are_left_out_of_serde_messages() {
        for (message, shown) in [
            (
                "invalid type: integer `123456`, expected a string",
                "invalid type: integer, expected a string",
            ),
            (
                "invalid type: string \"s3cret\", expected a sequence",
                "invalid type: string, expected a sequence",
            ),
            (
                "invalid type: floating point `1.5`, expected a string",
                "invalid type: floating point, expected a string",
            ),
            (
                "invalid type: sequence, expected a string",
                "invalid type: sequence, expected a string",
            ),
            (
                "invalid value: character `x`, expected a digit",
                "invalid value: character, expected a digit",
            ),
            ("invalid length 3, expected 2", "invalid length, expected 2"),
            (
                "the URL has no host (mqtt://HOST[:PORT])",
                "the URL has no host (mqtt://HOST[:PORT])",
            ),
        ] {
            assert_eq!(without_value(message), shown);
        }
        for (key, secret) in [
            ("admin.token", true),
            ("device[3].psk", true),
            ("mqtt.url", true),
            ("store.url", true),
            ("device[3].psk_format", false),
            ("admin.bind", false),
        ] {
            assert_eq!(is_secret(key), secret, "{key}");
        }
    }

    #[test]
    fn syntax_errors_give_the_place_not_the_line() {
        let e = Config::from_toml("[admin]\nbind = \"127.0.0.1:1\"\ntoken = \"s3cret").unwrap_err();
        assert_eq!(e.key(), "");
        assert!(e.reason().starts_with("line 3, column "), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
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
            assert!(err.contains("device[0].psk"), "{bad}: {err}");
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
        assert!(err.starts_with("device[0].position: "), "{err}");
        assert!(err.contains("(device 8988280666000000000)"), "{err}");
    }

    #[test]
    fn the_password_may_come_from_the_environment_in_one_place_only() {
        let url = |text: &str| -> BrokerUrl { text.parse().unwrap() };
        let env = |p: &str| Some(p.to_owned());

        let mut u = url("mqtt://alice@h");
        password_from_env(Some(&mut u), env("from-env")).unwrap();
        assert_eq!(u.password().map(Password::expose), Some("from-env"));

        // Unset or empty: the URL as it is.
        for unset in [None, env("")] {
            let mut u = url("mqtt://alice:in-url@h");
            password_from_env(Some(&mut u), unset).unwrap();
            assert_eq!(u.password().map(Password::expose), Some("in-url"));
        }

        for (mut u, why) in [
            (Some(url("mqtt://alice:in-url@h")), "in one place"),
            (Some(url("mqtt://h")), "no user name"),
            (None, "embedded broker"),
        ] {
            let e = password_from_env(u.as_mut(), env("from-env")).unwrap_err();
            assert_eq!(e.key(), "mqtt.url");
            assert!(e.reason().contains(why), "{e}");
            assert!(e.reason().contains(MQTT_PASSWORD_ENV), "{e}");
            assert!(!e.to_string().contains("from-env"), "{e}");
        }
    }

    #[test]
    fn tls_files_need_an_mqtts_url() {
        let files = TlsFiles {
            cert_file: Some("/c.pem".into()),
            ..TlsFiles::default()
        };
        let plain: BrokerUrl = "mqtt://h".parse().unwrap();
        for url in [None, Some(&plain)] {
            let e = files.load(url).unwrap_err();
            assert_eq!(e.key(), "mqtt.cert_file", "{e}");
            assert!(e.reason().contains("mqtts://"), "{e}");
        }
        assert_eq!(TlsFiles::default().load(Some(&plain)), Ok(None));
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
