//! Configuration for the end-to-end tests: two devices, an in-memory store,
//! CoAP on a free loopback port.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::UdpSocket;
use std::time::Duration;

use coapgate_endpoint::codec::{self, CoapOption, MessageClass, MessageType, RequestType};

use coapgate_server::{BackgroundServer, Config};
use coapgate_testkit::{Mosquitto, MosquittoSub};

pub const ICCID_A: &str = "8988280666000000002";
pub const ICCID_B: &str = "8988280666000000003";
pub const IMSI_A: &str = "901405100000002";

/// Two active devices at 127.0.0.2 (with IMSI) and 127.0.0.3 (without), an
/// in-memory store, CoAP on a free loopback port, the given broker.
pub fn config(mqtt_url: Option<String>) -> Config {
    let mut config = Config::from_toml(&format!(
        r#"
[coap]
bind = "127.0.0.1:0"
[coaps]
bind = "127.0.0.1:0"
[admin]
bind = "127.0.0.1:0"
[store]
url = "sqlite::memory:"
[[device]]
iccid = "{ICCID_A}"
imsi = "{IMSI_A}"
ip = "127.0.0.2"
[[device]]
iccid = "{ICCID_B}"
ip = "127.0.0.3"
"#
    ))
    .unwrap();
    config.mqtt.url = mqtt_url.map(|url| url.parse().unwrap());
    config.mqtt.connect_timeout = Duration::from_secs(5);
    config
}

/// Starts a server, panicking with the reason when it cannot.
pub fn start(config: Config) -> BackgroundServer {
    BackgroundServer::start(config).unwrap_or_else(|e| panic!("server did not start: {e}"))
}

/// `coap://ADDR` + `path`.
pub fn url(server: &BackgroundServer, path: &str) -> String {
    format!("coap://{}{path}", server.coap_addr())
}

/// A Mosquitto, a `mosquitto_sub` on it, and coapgate forwarding to it.
pub struct Setup {
    pub server: BackgroundServer,
    pub sub: MosquittoSub,
    pub broker: Mosquitto,
}

/// [`Setup`] with [`config`] as `adjust` leaves it (the broker URL is set
/// afterwards); `None` when a peer program is missing outside CI.
pub fn setup_with(test: &str, adjust: impl FnOnce(&mut Config)) -> Option<Setup> {
    let broker = Mosquitto::start(test)?;
    let sub = MosquittoSub::start(broker.port, test)?;
    let mut config = config(None);
    adjust(&mut config);
    config.mqtt.url = Some(broker.url().parse().unwrap());
    let server = start(config);
    Some(Setup {
        server,
        sub,
        broker,
    })
}

/// [`setup_with`] the default configuration.
pub fn setup(test: &str) -> Option<Setup> {
    setup_with(test, |_| {})
}

/// A request as a device sends it: `kind` `method` `/path`, no token; a POST
/// carries `21.5`.
pub fn request(kind: MessageType, method: RequestType, mid: u16, path: &str) -> Vec<u8> {
    let mut p = codec::Packet::new();
    p.header.set_type(kind);
    p.header.code = MessageClass::Request(method);
    p.header.message_id = mid;
    p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
    if method == RequestType::Post {
        p.payload = b"21.5".to_vec();
    }
    codec::encode(&p).unwrap()
}

/// The next datagram on a connected socket, decoded (the socket's read
/// timeout bounds the wait).
pub fn receive(socket: &UdpSocket) -> codec::Packet {
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).unwrap();
    codec::decode(&buf[..n]).unwrap()
}
