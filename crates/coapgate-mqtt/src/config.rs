//! Bridge configuration and `mqtt://` URL parsing.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::{MqttError, TlsConfig};

/// The MQTT quality of service the bridge publishes with.
///
/// QoS 0 is deliberately absent: a device is acknowledged only after the
/// broker confirmed its message, which QoS 0 cannot do.
///
/// With the `serde` feature it deserializes from the number 1 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "u8"))]
pub enum Qos {
    /// QoS 1: a publish is confirmed by its PUBACK (the default).
    #[default]
    AtLeastOnce,
    /// QoS 2: a publish is confirmed by its PUBCOMP.
    ExactlyOnce,
}

impl Qos {
    pub(crate) fn to_rumqttc(self) -> rumqttc::QoS {
        match self {
            Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
            Qos::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
        }
    }
}

impl TryFrom<u8> for Qos {
    type Error = &'static str;

    fn try_from(level: u8) -> Result<Self, Self::Error> {
        match level {
            1 => Ok(Qos::AtLeastOnce),
            2 => Ok(Qos::ExactlyOnce),
            _ => Err(
                "must be 1 or 2 (a device is acknowledged only after the broker \
                 confirmed its message, which QoS 0 cannot do)",
            ),
        }
    }
}

/// Default maximum MQTT packet size, in and out: 64 KiB (rumqttc's own default is 10 KiB).
pub const DEFAULT_MAX_PACKET_SIZE: usize = 64 * 1024;

/// Everything the bridge needs to know about its broker link.
///
/// Build one with [`Default`] (or [`from_url`](Self::from_url)) and assign
/// the fields to change; [`validate`](Self::validate) checks it
/// ([`Bridge::start`](crate::Bridge::start) does too). `Debug` never prints
/// the password.
///
/// With the `serde` feature it deserializes from `client_id`, `qos` (1 or
/// 2), `keep_alive` (seconds) and `max_packet_size`; a missing key keeps
/// its default. The broker's address and credentials come from a
/// [`BrokerUrl`] ([`set_broker`](Self::set_broker)); the other fields are
/// not part of that form.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct BridgeConfig {
    /// Broker host name or IP address. Default `127.0.0.1`.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub host: String,
    /// Broker TCP port. Default 1883.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub port: u16,
    /// TLS to the broker (`mqtts://`); `None` (the default) for plain TCP.
    /// Needs the cargo feature `tls` ([`validate`](Self::validate) answers
    /// [`MqttError::TlsNotBuiltIn`] without it).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub tls: Option<TlsConfig>,
    /// MQTT client id. Default `coapgate-<process id>`; not empty.
    pub client_id: String,
    /// Optional user name for the CONNECT packet.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub username: Option<String>,
    /// Optional password for the CONNECT packet (needs a user name). Never
    /// logged, never printed by `Debug`.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub password: Option<Password>,
    /// Publish QoS. Default [`Qos::AtLeastOnce`].
    pub qos: Qos,
    /// MQTT keep-alive. Zero disables it; otherwise 1 s to 65535 s. Default 30 s.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "seconds"))]
    pub keep_alive: Duration,
    /// Largest MQTT packet accepted or sent, in bytes. Default 64 KiB; at least 128.
    pub max_packet_size: usize,
    /// Unconfirmed publishes on the wire at once (1..=65535). Default 100.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub max_inflight: u16,
    /// Unconfirmed publishes held in the outbox at once (on the wire or
    /// waiting). Default 1024; at least 1.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub outbox_capacity: usize,
    /// First wait after a failed connection attempt. Default 200 ms; above zero.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub reconnect_delay_min: Duration,
    /// Longest wait between connection attempts (the wait doubles up to
    /// this). Default 5 s; not below `reconnect_delay_min`.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub reconnect_delay_max: Duration,
}

/// Seconds (an integer or a decimal; not negative, finite) as a duration.
#[cfg(feature = "serde")]
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = <f64 as serde::Deserialize>::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

/// A broker's address and credentials, parsed from an
/// `mqtt://[user[:pass]@]host[:port]` or `mqtts://…` URL.
///
/// Accepted: `mqtt://host`, `mqtt://host:port`, `mqtt://user:pass@host:port`,
/// `mqtt://[::1]:1883`, optionally with a trailing `/`. The port defaults to
/// 1883, for `mqtts://` to 8883; user and password may be percent-encoded.
/// `mqtts://` (also `ssl://`, `tls://`) needs the cargo feature `tls`, and
/// is [`MqttError::TlsNotBuiltIn`] without it. Error texts never repeat the
/// URL (it may hold a password), and neither does `Debug`. With the `serde`
/// feature it deserializes from the URL text.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "String"))]
pub struct BrokerUrl {
    tls: bool,
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<Password>,
}

impl BrokerUrl {
    /// The broker's host name or IP address (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The broker's TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user name, if the URL has one.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password, if the URL has one (or [`set_password`](Self::set_password) gave one).
    pub fn password(&self) -> Option<&Password> {
        self.password.as_ref()
    }

    /// Replaces the password (one from the environment, say).
    pub fn set_password(&mut self, password: Option<Password>) {
        self.password = password;
    }

    /// Whether the URL asks for TLS (`mqtts://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

impl fmt::Debug for BrokerUrl {
    /// `BrokerUrl(mqtt://user:<redacted>@host:port)` (`mqtts://` for TLS).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "BrokerUrl({scheme}://")?;
        if let Some(user) = &self.username {
            let password = if self.password.is_some() {
                ":<redacted>"
            } else {
                ""
            };
            write!(f, "{user}{password}@")?;
        }
        match self.host.contains(':') {
            true => write!(f, "[{}]:{})", self.host, self.port),
            false => write!(f, "{}:{})", self.host, self.port),
        }
    }
}

impl TryFrom<String> for BrokerUrl {
    type Error = MqttError;

    fn try_from(url: String) -> Result<Self, MqttError> {
        url.parse()
    }
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            host: "127.0.0.1".to_owned(),
            port: 1883,
            tls: None,
            client_id: default_client_id(),
            username: None,
            password: None,
            qos: Qos::AtLeastOnce,
            keep_alive: Duration::from_secs(30),
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            max_inflight: 100,
            outbox_capacity: 1024,
            reconnect_delay_min: Duration::from_millis(200),
            reconnect_delay_max: Duration::from_secs(5),
        }
    }
}

/// `coapgate-<host name>-<process id>`: unique per broker even for
/// containers, where every instance's process id is 1 (`coapgate-<pid>`
/// where the host name cannot be read).
fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()));
    match host {
        Some(host) => format!("coapgate-{host}-{}", std::process::id()),
        None => format!("coapgate-{}", std::process::id()),
    }
}

/// A broker password: `Debug` prints `<redacted>`, and the text is reached
/// only through [`expose`](Self::expose), where the CONNECT packet is built.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// A password with this text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text, for the CONNECT packet.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl BridgeConfig {
    /// Defaults, with host, port and credentials taken from a broker URL
    /// (see [`BrokerUrl`]).
    pub fn from_url(url: &str) -> Result<Self, MqttError> {
        let mut config = BridgeConfig::default();
        config.set_broker(&url.parse()?);
        Ok(config)
    }

    /// Takes host, port and credentials from `url`, and whether to use TLS:
    /// for an `mqtts://` URL, [`tls`](Self::tls) keeps the settings it has,
    /// or becomes the default (the system's roots) when it has none; for
    /// `mqtt://` it becomes `None`.
    pub fn set_broker(&mut self, url: &BrokerUrl) {
        self.host = url.host.clone();
        self.port = url.port;
        if !url.tls {
            self.tls = None;
        } else if self.tls.is_none() {
            self.tls = Some(TlsConfig::default());
        }
        self.username = url.username.clone();
        self.password = url.password.clone();
    }

    /// Checks every value against what the bridge and rumqttc accept; the
    /// error ([`MqttError::InvalidConfig`]) names the first field that is
    /// out of range.
    pub fn validate(&self) -> Result<(), MqttError> {
        let bad = |field, reason| Err(MqttError::InvalidConfig { field, reason });
        if self.host.is_empty() {
            return bad("host", "is empty");
        }
        if self.port == 0 {
            return bad("port", "is 0");
        }
        if cfg!(not(feature = "tls")) && self.tls.is_some() {
            return Err(MqttError::TlsNotBuiltIn);
        }
        if self.client_id.is_empty() {
            return bad("client_id", "is empty");
        }
        if self.password.is_some() && self.username.is_none() {
            return bad("password", "needs a username (MQTT 3.1.1)");
        }
        if !self.keep_alive.is_zero() && self.keep_alive < Duration::from_secs(1) {
            return bad("keep_alive", "must be zero or at least 1 s");
        }
        if self.keep_alive.as_secs() > u64::from(u16::MAX) {
            return bad("keep_alive", "must be at most 65535 s");
        }
        if self.max_packet_size < 128 {
            return bad("max_packet_size", "must be at least 128 bytes");
        }
        if self.max_inflight == 0 {
            return bad("max_inflight", "must be at least 1");
        }
        if self.outbox_capacity == 0 {
            return bad("outbox_capacity", "must be at least 1");
        }
        if self.reconnect_delay_min.is_zero() {
            return bad("reconnect_delay_min", "must be above zero");
        }
        if self.reconnect_delay_max < self.reconnect_delay_min {
            return bad(
                "reconnect_delay_max",
                "must not be below reconnect_delay_min",
            );
        }
        Ok(())
    }
}

impl FromStr for BrokerUrl {
    type Err = MqttError;

    fn from_str(url: &str) -> Result<Self, MqttError> {
        let bad = |why: &str| MqttError::InvalidUrl(why.to_owned());
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected mqtt://host[:port]"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" | "tls" if cfg!(feature = "tls") => true,
            "mqtts" | "ssl" | "tls" => return Err(MqttError::TlsNotBuiltIn),
            _ => return Err(bad("scheme must be mqtt:// or mqtts://")),
        };
        let authority = match rest.find(['/', '?', '#']) {
            Some(i) if &rest[i..] == "/" => &rest[..i],
            Some(_) => return Err(bad("a path, query or fragment is not allowed")),
            None => rest,
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport, if tls { 8883 } else { 1883 })?;
        let mut broker = BrokerUrl {
            tls,
            host,
            port,
            username: None,
            password: None,
        };
        if let Some(userinfo) = userinfo {
            let (user, pass) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            let user = percent_decode(user).ok_or_else(|| bad("bad percent-encoding in user"))?;
            if user.is_empty() {
                return Err(bad("empty user name"));
            }
            broker.username = Some(user);
            broker.password = match pass {
                Some(p) => Some(Password::new(
                    percent_decode(p).ok_or_else(|| bad("bad percent-encoding in password"))?,
                )),
                None => None,
            };
        }
        Ok(broker)
    }
}

fn split_host_port(hostport: &str, default_port: u16) -> Result<(String, u16), MqttError> {
    let bad = |why: &str| MqttError::InvalidUrl(why.to_owned());
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in IPv6 host"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
        };
        (h, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("host is empty"));
    }
    if host.contains(['/', '@', ' ', '[', ']']) {
        return Err(bad("host contains characters that are not allowed"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(bad("port must be a number from 1 to 65535")),
        },
    };
    Ok((host.to_owned(), port))
}

/// The text a percent-encoded URL part stands for; `None` when a `%` is
/// not followed by two hex digits or the bytes are not UTF-8 (the
/// `percent-encoding` crate decodes a stray `%` as itself; a broker URL
/// with one is a typo worth naming).
fn percent_decode(s: &str) -> Option<String> {
    let well_formed = s.split('%').skip(1).all(|rest| {
        rest.as_bytes()
            .get(..2)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_client_id_names_host_and_process() {
        let id = BridgeConfig::default().client_id;
        let pid = std::process::id().to_string();
        assert!(id.starts_with("coapgate-") && id.ends_with(&pid), "{id}");
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            assert!(id.contains(host.trim()), "{id}");
        }
    }

    #[test]
    fn user_and_password_are_percent_decoded_strictly() {
        assert_eq!(percent_decode("p%40ss%3Aw").as_deref(), Some("p@ss:w"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("100%"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
    }

    #[test]
    fn plain_url_defaults_port() {
        let c = BridgeConfig::from_url("mqtt://broker.example").expect("valid");
        assert_eq!((c.host.as_str(), c.port), ("broker.example", 1883));
        assert_eq!(c.username, None);
        assert_eq!(c.max_packet_size, 64 * 1024);
        assert_eq!(c.qos, Qos::AtLeastOnce);
    }

    #[test]
    fn url_with_port_credentials_and_slash() {
        let c = BridgeConfig::from_url("mqtt://user:p%40ss:w@10.0.0.1:1884/").expect("valid");
        assert_eq!((c.host.as_str(), c.port), ("10.0.0.1", 1884));
        assert_eq!(c.username.as_deref(), Some("user"));
        assert_eq!(c.password.as_ref().map(Password::expose), Some("p@ss:w"));
    }

    #[test]
    fn ipv6_url() {
        let c = BridgeConfig::from_url("mqtt://[::1]:2000").expect("valid");
        assert_eq!((c.host.as_str(), c.port), ("::1", 2000));
        let c = BridgeConfig::from_url("mqtt://[::1]").expect("valid");
        assert_eq!(c.port, 1883);
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_the_feature_tls_is_a_clear_error() {
        for url in ["mqtts://broker:8883", "ssl://broker", "TLS://broker"] {
            let e = BridgeConfig::from_url(url).expect_err("no tls");
            assert!(matches!(e, MqttError::TlsNotBuiltIn), "{url}: {e:?}");
            assert!(e.to_string().contains("TLS not built in"));
        }
        let c = BridgeConfig {
            tls: Some(TlsConfig::default()),
            ..BridgeConfig::default()
        };
        assert!(matches!(c.validate(), Err(MqttError::TlsNotBuiltIn)));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn mqtts_defaults_to_port_8883_and_the_system_roots() {
        let url: BrokerUrl = "mqtts://alice:pw@broker.example".parse().expect("valid");
        assert!(url.is_tls());
        assert_eq!(url.port(), 8883);
        assert_eq!(
            format!("{url:?}"),
            "BrokerUrl(mqtts://alice:<redacted>@broker.example:8883)"
        );
        let c = BridgeConfig::from_url("mqtts://broker.example:9999").expect("valid");
        assert_eq!(c.port, 9999);
        assert_eq!(c.tls, Some(TlsConfig::default()));
        assert!(c.validate().is_ok());
        assert_eq!(
            BridgeConfig::from_url("ssl://[::1]").expect("valid").port,
            8883
        );
    }

    #[test]
    fn set_broker_turns_tls_on_and_off_with_the_scheme() {
        let mut c = BridgeConfig::default();
        c.set_broker(&"mqtt://h".parse().expect("valid"));
        assert_eq!(c.tls, None);
        if cfg!(feature = "tls") {
            c.set_broker(&"mqtts://h".parse().expect("valid"));
            assert_eq!(c.tls, Some(TlsConfig::default()));
            c.set_broker(&"mqtt://h".parse().expect("valid"));
            assert_eq!(c.tls, None, "plain again");
        }
    }

    #[test]
    fn a_password_can_be_set_afterwards() {
        let mut url: BrokerUrl = "mqtt://alice@h".parse().expect("valid");
        assert_eq!(url.password(), None);
        url.set_password(Some(Password::new("from-env")));
        assert_eq!(url.password().map(Password::expose), Some("from-env"));
        let c = {
            let mut c = BridgeConfig::default();
            c.set_broker(&url);
            c
        };
        assert_eq!(c.password.as_ref().map(Password::expose), Some("from-env"));
        assert!(!format!("{url:?}{c:?}").contains("from-env"));
    }

    #[test]
    fn bad_urls_never_echo_the_password() {
        for url in [
            "http://u:secret@h",
            "mqtt://u:secret@h:99999",
            "mqtt://u:secret@h:0",
            "mqtt://u:secret@",
            "mqtt://u:secret@h/path",
            "mqtt://u:sec%zzret@h",
            "broker:1883",
            "mqtt://[::1:1883",
        ] {
            let e = BridgeConfig::from_url(url).expect_err(url);
            assert!(matches!(e, MqttError::InvalidUrl(_)), "{url}: {e:?}");
            assert!(!e.to_string().contains("secret"), "{url}: {e}");
        }
    }

    #[test]
    fn debug_redacts_password() {
        let c = BridgeConfig::from_url("mqtt://alice:hunter2@h").expect("valid");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("<redacted>") && dbg.contains("alice"), "{dbg}");
    }

    #[test]
    fn validate_names_the_field() {
        assert!(BridgeConfig::default().validate().is_ok());
        type Spoil = fn(&mut BridgeConfig);
        let cases: [(Spoil, &str); 11] = [
            (|c| c.host.clear(), "host"),
            (|c| c.port = 0, "port"),
            (|c| c.client_id.clear(), "client_id"),
            (|c| c.password = Some(Password::new("p")), "password"),
            (|c| c.keep_alive = Duration::from_millis(10), "keep_alive"),
            (|c| c.keep_alive = Duration::from_secs(65_536), "keep_alive"),
            (|c| c.max_packet_size = 127, "max_packet_size"),
            (|c| c.max_inflight = 0, "max_inflight"),
            (|c| c.outbox_capacity = 0, "outbox_capacity"),
            (
                |c| c.reconnect_delay_min = Duration::ZERO,
                "reconnect_delay_min",
            ),
            (
                |c| c.reconnect_delay_max = Duration::from_millis(100),
                "reconnect_delay_max",
            ),
        ];
        for (spoil, field) in cases {
            let mut config = BridgeConfig::default();
            spoil(&mut config);
            let named = match config.validate() {
                Err(MqttError::InvalidConfig { field, .. }) => field,
                other => panic!("{other:?}"),
            };
            assert_eq!(named, field);
        }
    }

    #[test]
    fn qos_is_1_or_2() {
        assert_eq!(Qos::try_from(1), Ok(Qos::AtLeastOnce));
        assert_eq!(Qos::try_from(2), Ok(Qos::ExactlyOnce));
        for level in [0, 3] {
            assert!(Qos::try_from(level).unwrap_err().contains("must be 1 or 2"));
        }
    }

    #[test]
    fn broker_url_debug_redacts_the_password() {
        let url: BrokerUrl = "mqtt://alice:hunter2@h:1884".parse().expect("valid");
        assert_eq!(
            (url.host(), url.port(), url.username()),
            ("h", 1884, Some("alice"))
        );
        assert_eq!(
            format!("{url:?}"),
            "BrokerUrl(mqtt://alice:<redacted>@h:1884)"
        );
    }
}
