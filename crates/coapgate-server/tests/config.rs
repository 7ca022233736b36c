//! The configuration file: every invalid value is refused with an error
//! that names its key, and an empty file is exactly the crates' own
//! defaults (no second copy of them in the server).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use coapgate_bootstrap::{CoapsUrl, Policy};
use coapgate_dtls::DtlsConfig;
use coapgate_endpoint::EndpointConfig;
use coapgate_mqtt::{BridgeConfig, Qos};
use coapgate_server::Config;

const DEVICE: &str = "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\n";

/// One invalid value a line: `TOML => KEY: A WORD OF THE REASON`. Each TOML
/// is one line (dotted keys, inline tables).
const INVALID: &str = r#"
coaps.public_url = "coaps://a,b:5684"               => coaps.public_url: ','
coaps.public_url = "coaps://a b"                    => coaps.public_url: white space
coaps.public_url = "coaps://a\u0007"                => coaps.public_url: control
coaps.public_url = "coap://a:5684"                  => coaps.public_url: coaps://
coaps.public_url = "coaps://a/path"                 => coaps.public_url: path
coaps.public_url = "coaps://a:0"                    => coaps.public_url: port
mqtt.qos = 0                                        => mqtt.qos: must be 1 or 2
mqtt.qos = 3                                        => mqtt.qos: must be 1 or 2
mqtt.qos = "1"                                      => mqtt.qos: string
coap.max_payload = 100                              => coap.max_payload: at least 1024
coap.max_pending = 0                                => coap.max_pending: at least 1
coap.publish_timeout = -1                           => coap.publish_timeout: negative
coap.publish_timeout = nan                          => coap.publish_timeout: NaN
coap.shutdown_grace = -1                            => coap.shutdown_grace: negative
coap.piggyback_window = 5                           => coap.piggyback_window: ack_timeout
coap.publish_timeout = 0.5                          => coap.publish_timeout: piggyback_window
coap.transmission.ack_timeout = -2                  => coap.transmission.ack_timeout: negative
coap.transmission.ack_timeout = 0                   => coap.transmission.ack_timeout: positive
coap.transmission.ack_random_factor = 0.5           => coap.transmission.ack_random_factor: 1.0
coap.transmission.max_retransmit = 21               => coap.transmission.max_retransmit: 20
coap.dedup.max_entries = 0                          => coap.dedup.max_entries: at least 1
coap.dedup.max_bytes = 10                           => coap.dedup.max_bytes: at least 64
coaps.regenerate_psk_after = -5                     => coaps.regenerate_psk_after: negative
mqtt.connect_timeout = inf                          => mqtt.connect_timeout: too big
mqtt.topic = "a/#"                                  => mqtt.topic: '#'
mqtt.topic = "{iccid}/{x}"                          => mqtt.topic: unknown placeholder
mqtt.topic_without_t = "{iccid}/{t}"                => mqtt.topic_without_t: {t}
mqtt.payload = "xml"                                => mqtt.payload: xml
mqtt.ca_file = "/etc/ssl/ca.pem"                    => mqtt.ca_file: needs an mqtts://
mqtt = { url = "mqtt://h", key_file = "/k.pem" }    => mqtt.key_file: needs an mqtts://
mqtt = { url = "mqtts://h", ca_file = "/no/ca.pem" } => mqtt.ca_file: cannot read /no/ca.pem
mqtt = { url = "mqtts://h", cert_file = "/c.pem" }  => mqtt.key_file: required with cert_file
mqtt = { url = "mqtts://h", key_file = "/k.pem" }   => mqtt.cert_file: required with key_file
mqtt.cert_file = 5                                  => mqtt.cert_file: integer
mqtt.url = "http://u:secret@h"                      => mqtt.url: scheme
mqtt.url = "mqtt://u:secret@h:0"                    => mqtt.url: port
mqtt.embedded_bind = "127.0.0.1:0"                  => mqtt.embedded_bind: explicit port
admin.bind = "0.0.0.0:8080"                         => admin.token: loopback
admin = { bind = "0.0.0.0:8080", token = "" }       => admin.token: loopback
coap.bind = 5                                       => coap.bind: integer
coap = 5                                            => coap: table
cooap = {}                                          => cooap: unknown key
coap.bnd = "0.0.0.0:1"                              => coap.bnd: unknown key
coaps.ciphers = "NULL"                              => coaps.ciphers: unknown key
mqtt.max_inflight = 1                               => mqtt.max_inflight: unknown key
admin.tokn = "x"                                    => admin.tokn: unknown key
coap.transmission.bogus = 1                         => coap.transmission.bogus: unknown field
device = [{ iccid = "8988280666000000000", ip = "127.0.0.2", colour = 1 }] => device[0].colour: unknown field
device = [{ iccid = "123", ip = "127.0.0.2" }]      => device[0].iccid: ICCID
device = [{ iccid = "8988280666000000000", ip = "127.0.0.2", psk = "short" }] => device[0].psk: 8 to 256
coaps.mtu = 255                                     => coaps.mtu: 256..=65507
coaps.mtu = 65508                                   => coaps.mtu: 256..=65507
coaps.max_sessions = 0                              => coaps.max_sessions: at least 1
coaps.max_handshakes = 0                            => coaps.max_handshakes: at least 1
coaps.handshake_timeout = 0                         => coaps.handshake_timeout: above zero
coaps.idle_timeout = 0                              => coaps.idle_timeout: above zero
coaps.idle_timeout = -1                             => coaps.idle_timeout: negative
mqtt.keep_alive = 0.5                               => mqtt.keep_alive: at least 1 s
mqtt.keep_alive = 65536                             => mqtt.keep_alive: at most 65535
mqtt.keep_alive = -1                                => mqtt.keep_alive: negative
mqtt.max_packet_size = 127                          => mqtt.max_packet_size: at least 128
mqtt.client_id = ""                                 => mqtt.client_id: empty
limits.device_rate = -1                             => limits.device_rate: must be 0 (off)
limits.device_rate = nan                            => limits.device_rate: must be 0 (off)
limits.handshake_rate = inf                         => limits.handshake_rate: must be 0 (off)
limits.device_rate = 2000000                        => limits.device_rate: 1000000
limits = { device_rate = 2.0, device_burst = 0 }    => limits.device_burst: from 1
limits = { handshake_rate = 1, handshake_burst = 0 } => limits.handshake_burst: from 1
limits.device_burst = -1                            => limits.device_burst: invalid value
limits.device_rate = "2"                            => limits.device_rate: string
limits.rate = 1                                     => limits.rate: unknown key
limits = 5                                          => limits: table
"#;

#[test]
fn each_invalid_value_is_refused_naming_its_key() {
    let cases = INVALID.lines().filter(|line| !line.is_empty());
    let mut count = 0;
    for case in cases {
        let (toml, expected) = case.split_once(" => ").unwrap();
        let (key, why) = expected.split_once(": ").unwrap();
        let err = Config::from_toml(toml).unwrap_err();
        assert_eq!(err.key(), key, "{toml:?} gave {err}");
        assert!(err.reason().contains(why), "{toml:?} gave {err}");
        assert!(err.to_string().starts_with(&format!("{key}: ")), "{err}");
        assert!(!err.to_string().contains("secret"), "no secret: {err}");
        count += 1;
    }
    assert_eq!(count, 72, "every line is a case");
    let twice = format!("{DEVICE}{}", DEVICE.replace("000\"", "001\""));
    assert_eq!(Config::from_toml(&twice).unwrap_err().key(), "device[1].ip");
}

#[test]
fn an_empty_file_is_the_crates_own_defaults() {
    let config = Config::from_toml("").unwrap();
    assert_eq!(config.coap.engine, EndpointConfig::default());
    assert_eq!(config.coaps.dtls, DtlsConfig::default());
    assert_eq!(config.coap.engine.bootstrap.policy, Policy::default());
    assert_eq!(config.coap.engine.bootstrap.coaps_url, CoapsUrl::default());
    let mut link = BridgeConfig::default();
    link.outbox_capacity = EndpointConfig::default().max_pending;
    assert_eq!(config.mqtt.link, link, "the outbox holds coap.max_pending");
    assert_eq!(Config::default().mqtt.link, link);
    assert_eq!(Config::default().coap.engine, config.coap.engine);
}

#[test]
fn values_reach_the_crates_that_own_them() {
    let config = Config::from_toml(
        r#"
[coap]
max_payload = 2048
max_pending = 7
publish_timeout = 3.5
[coap.dedup]
max_entries = 9
[coaps]
public_url = "coaps://[2001:db8::1]:5684"
regenerate_psk_after = 60
mtu = 1400
max_sessions = 5
idle_timeout = 90
[mqtt]
url = "mqtt://user:pw@broker.example:1884"
qos = 2
keep_alive = 0
max_packet_size = 4096
client_id = "gw-1"
topic = "devices/{iccid}/{t}"
topic_without_t = "devices/{imsi}/{iccid}"
payload = "raw"
"#,
    )
    .unwrap();
    let engine = &config.coap.engine;
    assert_eq!((engine.max_payload, engine.max_pending), (2048, 7));
    assert_eq!(engine.publish_timeout, Duration::from_millis(3500));
    assert_eq!(engine.dedup.max_entries, 9);
    assert_eq!(engine.payload_format, coapgate_server::PayloadFormat::Raw);
    assert_eq!(
        engine.topics.render(
            &"8988280666000000000".parse().unwrap(),
            Some(&"901405100000000".parse().unwrap()),
            None
        ),
        "devices/901405100000000/8988280666000000000"
    );
    assert_eq!(
        engine.bootstrap.coaps_url.as_str(),
        "coaps://[2001:db8::1]:5684"
    );
    assert_eq!(
        engine.bootstrap.policy.regenerate_after,
        Duration::from_secs(60)
    );
    let dtls = &config.coaps.dtls;
    assert_eq!((dtls.mtu, dtls.max_sessions), (1400, 5));
    assert_eq!(dtls.idle_timeout, Duration::from_secs(90));
    let bridge = config.mqtt.bridge(None);
    assert_eq!(
        (bridge.host.as_str(), bridge.port),
        ("broker.example", 1884)
    );
    assert_eq!(bridge.username.as_deref(), Some("user"));
    assert_eq!(bridge.qos, Qos::ExactlyOnce);
    assert_eq!(bridge.keep_alive, Duration::ZERO);
    assert_eq!((bridge.max_packet_size, bridge.outbox_capacity), (4096, 7));
    assert_eq!(bridge.client_id, "gw-1");
    assert!(
        !format!("{config:?}").contains("pw@"),
        "no password in Debug"
    );
}

#[test]
fn limits_reach_the_engine_and_the_dtls_server() {
    let config = Config::from_toml(
        "[limits]\ndevice_rate = 2.0\ndevice_burst = 10\nhandshake_rate = 0.5\nhandshake_burst = 3\n",
    )
    .unwrap();
    let device = config.coap.engine.device_limit;
    assert_eq!((device.rate(), device.burst()), (2.0, 10));
    let handshake = config.coaps.dtls.handshake_limit;
    assert_eq!((handshake.rate(), handshake.burst()), (0.5, 3));
    // Off by default, and a burst alone turns nothing on.
    let config = Config::from_toml("[limits]\ndevice_burst = 3\n").unwrap();
    assert!(config.coap.engine.device_limit.is_off());
    assert!(config.coaps.dtls.handshake_limit.is_off());
    // The defaults of the bursts: 10 and 5.
    let config = Config::from_toml("[limits]\ndevice_rate = 1\nhandshake_rate = 1\n").unwrap();
    assert_eq!(config.coap.engine.device_limit.burst(), 10);
    assert_eq!(config.coaps.dtls.handshake_limit.burst(), 5);
}

#[test]
fn without_a_url_the_bridge_goes_to_the_embedded_broker() {
    let config = Config::from_toml("[mqtt]\nembedded_bind = \"127.0.0.1:18830\"").unwrap();
    let bridge = config.mqtt.bridge(Some(([127, 0, 0, 1], 18830).into()));
    assert_eq!((bridge.host.as_str(), bridge.port), ("127.0.0.1", 18830));
}

#[test]
fn a_configuration_changed_after_loading_is_checked_again() {
    let mut config = Config::from_toml("[admin]\nbind = \"0.0.0.0:8080\"\ntoken = \"t\"").unwrap();
    config.admin.token = None;
    assert_eq!(config.validate().unwrap_err().key(), "admin.token");
    let mut config = Config::default();
    config.coap.engine.max_payload = 10;
    assert_eq!(config.validate().unwrap_err().key(), "coap.max_payload");
}

/// `[mqtt]` for an mqtts:// broker with these files (TOML literal strings).
fn mqtts(files: &[(&str, &std::path::Path)]) -> String {
    let mut toml = "[mqtt]\nurl = \"mqtts://gw@127.0.0.1\"\n".to_owned();
    for (key, path) in files {
        toml.push_str(&format!("{key} = '{}'\n", path.display()));
    }
    toml
}

#[test]
fn tls_files_are_read_and_checked_at_load() {
    let pki = coapgate_testkit::TestPki::generate("server-config");
    let config = Config::from_toml(&mqtts(&[
        ("ca_file", &pki.ca),
        ("cert_file", &pki.client_cert),
        ("key_file", &pki.client_key),
    ]))
    .unwrap();
    let tls = config.mqtt.link.tls.clone().expect("TLS from the files");
    let bridge = config.mqtt.bridge(None);
    assert_eq!(bridge.port, 8883, "the mqtts:// default port");
    assert_eq!(bridge.tls.as_ref(), Some(&tls), "the files' settings, kept");
    let debug = format!("{config:?}");
    assert!(
        debug.contains("ca.pem") && debug.contains("client.pem"),
        "{debug}"
    );
    let key = std::fs::read_to_string(&pki.client_key).unwrap();
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!debug.contains(&body[..16]), "no key in Debug: {debug}");

    // Each broken file is named by its key.
    let not_pem = pki.dir.join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (files, key, why) in [
        (
            vec![("ca_file", &not_pem)],
            "mqtt.ca_file",
            "no PEM CERTIFICATE",
        ),
        (
            vec![
                ("ca_file", &pki.ca),
                ("cert_file", &not_pem),
                ("key_file", &pki.client_key),
            ],
            "mqtt.cert_file",
            "no PEM CERTIFICATE",
        ),
        (
            vec![
                ("ca_file", &pki.ca),
                ("cert_file", &pki.client_cert),
                ("key_file", &not_pem),
            ],
            "mqtt.key_file",
            "no PEM private key",
        ),
        (
            vec![
                ("ca_file", &pki.ca),
                ("cert_file", &pki.client_cert),
                ("key_file", &pki.server_key),
            ],
            "mqtt.key_file",
            "does not belong to the certificate",
        ),
    ] {
        let files: Vec<(&str, &std::path::Path)> =
            files.iter().map(|(k, p)| (*k, p.as_path())).collect();
        let err = Config::from_toml(&mqtts(&files)).unwrap_err();
        assert_eq!(err.key(), key, "{err}");
        assert!(err.reason().contains(why), "{err}");
    }
}

// ------------------------------------------------ bad input (issue 12)

/// More invalid files, one a case: `TOML => KEY: A WORD OF THE REASON`, the
/// TOML with `\n` for new lines. Nested sections, `[[device]]` entries
/// (named by their index), wrong types, values out of range, addresses and
/// URLs that do not parse.
const MORE_INVALID: &str = r#"
[coap.dedup]\nbogus = 1                                     => coap.dedup.bogus: unknown field
[coap.transmission]\nack_timeout = "2s"                     => coap.transmission.ack_timeout: string
[coap]\nrecv_buffer = -1                                    => coap.recv_buffer: -1
[coap]\nrecv_buffer = 1.5                                   => coap.recv_buffer: float
[coap]\nmax_payload = 99999999999999999999                  => : line 2
[coap]\nbind = "0.0.0.0"                                    => coap.bind: socket address
[coap]\nbind = "localhost:5683"                             => coap.bind: socket address
[coap]\nbind = "0.0.0.0:99999"                              => coap.bind: socket address
[coaps]\nbind = ["0.0.0.0:5684"]                            => coaps.bind: sequence
[coaps]\npublic_url = "not a url"                           => coaps.public_url: white space
[coaps]\nmax_sessions = -1                                  => coaps.max_sessions: -1
[admin]\nbind = "8080"                                      => admin.bind: socket address
[admin]\nbind = "[::1]"                                     => admin.bind: socket address
[admin]\nbind = 8080                                        => admin.bind: integer
[admin]\ntoken = ["a"]                                      => admin.token: sequence
[admin.tls]\ncert = "x"                                     => admin.tls: unknown key
[mqtt]\nurl = "mqtt://"                                     => mqtt.url: host
[mqtt]\nurl = "mqtt://h:port"                               => mqtt.url: port
[mqtt]\nurl = "mqtt://h:65536"                              => mqtt.url: port
[mqtt]\nurl = 1883                                          => mqtt.url: integer
[mqtt]\nqos = 1.0                                           => mqtt.qos: float
[mqtt]\nembedded_bind = "127.0.0.1"                         => mqtt.embedded_bind: socket address
[store]\nurl = "mysql://u:p@h/db"                           => store.url: sqlite://
[store]\nurl = "sqlite://"                                  => store.url: no database file
[store]\nurl = "sqlite://db?mode=ro"                        => store.url: query
[store]\nurl = 5                                            => store.url: integer
[store]\npath = "x.db"                                      => store.path: unknown key
store = "sqlite://x.db"                                     => store: table
device = { iccid = "8988280666000000000", ip = "127.0.0.2" } => device: sequence
[[device]]\nip = "127.0.0.2"                                => device[0]: iccid
[[device]]\niccid = "8988280666000000000"                   => device[0]: ip
[[device]]\niccid = "../x"\nip = "127.0.0.2"                => device[0].iccid: ICCID
[[device]]\niccid = "898828066600000000000000000000"\nip = "127.0.0.2" => device[0].iccid: ICCID
[[device]]\niccid = 8988280666000000000\nip = "127.0.0.2"   => device[0].iccid: integer
[[device]]\niccid = "8988280666000000000"\nip = "127.0.0.256" => device[0].ip: IP address
[[device]]\niccid = "8988280666000000000"\nip = "h.example" => device[0].ip: IP address
[[device]]\niccid = "8988280666000000000"\nip = "127.0.0.2"\nstatus = "DELETED" => device[0].status: DELETED
[[device]]\niccid = "8988280666000000000"\nip = "127.0.0.2"\nimsi = "12" => device[0].imsi: IMSI
[[device]]\niccid = "8988280666000000000"\nip = "127.0.0.2"\nname = 5 => device[0].name: integer
[[device]]\niccid = "8988280666000000000"\nip = "127.0.0.2"\npsk_format = "BASE64"\npsk = "l0ng-enough" => device[0].psk_format: STRING or HEX
[[device]]\niccid = "8988280666000000000"\nip = "127.0.0.2"\n[device.extra]\nx = 1 => device[0].extra: unknown field
[[device]]\niccid = "8988280666000000000"\nip = "127.0.0.2"\nposition = { coordinate = [1, 2], sample_time = 1, bogus = 1 } => device[0].position.bogus: unknown field
[[device]]\niccid = "8988280666000000000"\nip = "127.0.0.2"\nposition = { coordinate = [1], sample_time = 1 } => device[0].position.coordinate: 2
[[device]]\niccid = "8988280666000000000"\nip = "127.0.0.2"\nposition = { coordinate = [1, nan], sample_time = 1 } => device[0].position: latitude
[[device]]\niccid = "8988280666000000000"\nip = "127.0.0.2"\nposition = { coordinate = [1, 2], sample_time = -1 } => device[0].position.sample_time: -1
[[device]]\niccid = "8988280666000000000"\nip = "127.0.0.2"\n[[device]]\niccid = "8988280666000000001"\nip = "127.0.0.3"\npsk = "short" => device[1].psk: 8 to 256
[[device]]\niccid = "8988280666000000000"\nip = "127.0.0.2"\n[[device]]\niccid = "8988280666000000001"\nip = "::ffff:127.0.0.2" => device[1].ip: listed twice
[[device]]\niccid = "8988280666000000000"\nip = "127.0.0.2"\n[[device]]\niccid = "8988280666000000000"\nip = "127.0.0.3" => device[1].iccid: listed twice
"#;

#[test]
fn more_invalid_files_are_refused_naming_the_key_with_its_section() {
    let mut count = 0;
    let mut wrong = Vec::new();
    for case in MORE_INVALID.lines().filter(|line| !line.is_empty()) {
        let (toml, expected) = case.split_once(" => ").unwrap();
        let toml = toml.trim_end().replace("\\n", "\n");
        let (key, why) = expected.split_once(": ").unwrap();
        match Config::from_toml(&toml) {
            Ok(_) => wrong.push(format!("{toml:?} was accepted")),
            Err(err) if err.key() != key || !err.reason().contains(why) => {
                wrong.push(format!("{toml:?} gave {err}; expected {expected}"));
            }
            Err(_) => {}
        }
        count += 1;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(count, 48, "every line is a case");
}

/// Secrets in the file never reach an error: wrong types, syntax errors on
/// the secret's own line, bad URLs with passwords.
#[test]
fn errors_never_echo_a_secret() {
    let mut echoed = Vec::new();
    for toml in [
        "[admin]\ntoken = 12345678987654321",
        "[admin]\ntoken = 1234.5678987654321",
        "[admin]\ntoken = \"s3cretTOKEN",
        "[admin]\ntoken = \"s3cretTOKEN\" junk",
        "[admin]\ntoken = 's3cretTOKEN\nbind = \"0.0.0.0:1\"",
        "[admin]\ntoken = \"\"\"s3cretTOKEN",
        "[admin]\ntoken = \"s3cretTOKEN\"\ntoken = \"s3cretTOKEN\"",
        "[admin]\ntoken = \"s3cretTOKEN\\q\"",
        "[mqtt]\nurl = \"mqtt://u:s3cretTOKEN@h:99999\"",
        "[mqtt]\nurl = \"mqtt://u:s3cretTOKEN@\"",
        "[mqtt]\nurl = \"http://u:s3cretTOKEN@h\"",
        "[mqtt]\nurl = \"mqtt://u:s3cretTOKEN@h\nqos = 1",
        "[store]\nurl = \"mysql://u:s3cretTOKEN@h/db\"",
        "[store]\nurl = \"postgres://u:s3cretTOKEN@h:notaport/db\"",
        "[store]\nurl = \"postgres://u:s3cretTOKEN@h/db?password=s3cretTOKEN&x=\"",
        "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\npsk = 12345678987654321",
        "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\npsk = \"s3cretTOKEN,\"",
        "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\npsk = \"s3cretTOKEN\"\npsk_format = \"HEX\"",
        "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\npsk = \"s3cretTOKEN",
        "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\npsk = [\"s3cretTOKEN\"]",
    ] {
        let Err(err) = Config::from_toml(toml) else {
            echoed.push(format!("{toml:?} was accepted"));
            continue;
        };
        let err = err.to_string();
        if ["s3cretTOKEN", "12345678987654321", "1234.5678987654321"]
            .iter()
            .any(|secret| err.contains(secret))
        {
            echoed.push(format!("{toml:?} echoed the secret: {err}"));
        }
    }
    assert!(echoed.is_empty(), "{}", echoed.join("\n"));
}

/// A file that cannot be read or is not text: an error naming the file, and
/// for text that is not UTF-8, the line.
#[test]
fn unreadable_files_are_named() {
    let dir = coapgate_testkit::temp_dir("config-unreadable");
    let missing = dir.join("missing.toml");
    let not_utf8 = dir.join("latin1.toml");
    std::fs::write(
        &not_utf8,
        b"[admin]\nbind = \"127.0.0.1:8080\"\n# gr\xfc\xdfe\n",
    )
    .unwrap();
    for (path, why) in [
        (&missing, "No such file"),
        (&dir, "directory"),
        (&not_utf8, "line 3: not UTF-8"),
    ] {
        let err = Config::load(path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(why), "{path:?}: {err}");
    }
}

/// A seeded address that belongs to another device in the store is refused
/// before anything is seeded: the entries before it are not written either.
#[test]
fn a_seed_that_cannot_be_stored_stores_nothing() {
    use coapgate_model::{Device, DeviceStatus};

    let dir = coapgate_testkit::temp_dir("config-seed");
    let url = format!("sqlite://{}", dir.join("store.db").display());
    let store = coapgate_store::open(&url).unwrap();
    let holder = Device {
        iccid: "8988280666000000009".parse().unwrap(),
        imsi: None,
        ip: "127.0.0.9".parse().unwrap(),
        status: DeviceStatus::Active,
        name: None,
    };
    store.put_device(holder.clone()).unwrap();
    drop(store);

    let config = Config::from_toml(&format!(
        "[store]\nurl = '{url}'\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\nconnect_timeout = 1\n\
         [[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\npsk = \"l0ng-enough\"\n\
         [[device]]\niccid = \"8988280666000000001\"\nip = \"::ffff:127.0.0.9\"\n"
    ))
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Err(coapgate_server::ServerError::Config(err)) =
        runtime.block_on(coapgate_server::Server::bind(config))
    else {
        panic!("bound with a seed that cannot be stored");
    };
    assert_eq!(err.key(), "device[1].ip", "{err}");
    assert!(err.reason().contains("8988280666000000009"), "{err}");

    let store = coapgate_store::open(&url).unwrap();
    assert_eq!(store.devices(1, 10).unwrap(), vec![holder]);
    assert!(store.psk_keys().key("8988280666000000000").is_none());
}

/// The example configuration in docs/spec.md §7 is read from the document
/// itself, so the two cannot drift apart.
#[test]
fn the_spec_example_parses() {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/spec.md"))
        .expect("docs/spec.md");
    let examples: Vec<&str> = spec
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block))
        .collect();
    assert_eq!(examples.len(), 1, "docs/spec.md has one TOML example");
    let c = Config::from_toml(examples[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.devices.len(), 1);
    let url = c.mqtt.url.as_ref().unwrap();
    assert_eq!((url.host(), url.port()), ("127.0.0.1", 1883));
    assert_eq!(c.mqtt.ack, coapgate_server::AckMode::Broker);
    assert_eq!(
        c.coap.engine.bootstrap.coaps_url.as_str(),
        "coaps://coap.example.com:5684"
    );
}
