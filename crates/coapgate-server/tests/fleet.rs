//! Three coapgate instances serving one fleet (issue 11): A, B and C on
//! 127.0.0.2, 127.0.0.3 and 127.0.0.4 share one PostgreSQL database and one
//! Mosquitto. What an operator changes through any instance's admin API is
//! live on every instance within a second; devices may land on any of them.
//! Devices are 127.0.1.x; each instance has its own MQTT client id.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use coapgate_endpoint::codec::{self, CoapOption, MessageClass, MessageType, RequestType};
use coapgate_model::Registrations;
use coapgate_server::{BackgroundServer, Config};
use coapgate_testkit::{Mosquitto, MosquittoSub, Postgres, coap_client, http};
use serde_json::{Value, json};

const SECOND: Duration = Duration::from_secs(1);

/// The three instances.
struct Fleet {
    servers: Vec<BackgroundServer>,
}

impl Fleet {
    fn start(store_url: &str, broker: &Mosquitto) -> Fleet {
        let servers = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(n, name)| {
                let ip = format!("127.0.0.{}", n + 2);
                let config = Config::from_toml(&format!(
                    r#"
[coap]
bind = "{ip}:0"
[coaps]
bind = "{ip}:0"
[admin]
bind = "{ip}:0"
[store]
url = "{store_url}"
[mqtt]
url = "{broker}"
client_id = "coapgate-fleet-{name}"
connect_timeout = 5
"#,
                    broker = broker.url(),
                ))
                .unwrap();
                common::start(config)
            })
            .collect();
        Fleet { servers }
    }

    fn instance(&self, n: usize) -> &BackgroundServer {
        &self.servers[n % self.servers.len()]
    }
}

fn iccid(n: u32) -> String {
    format!("89882806660001{n:05}")
}

/// `PUT /v1/devices/{iccid}` on an instance's admin API.
fn put_device(server: &BackgroundServer, n: u32, ip: &str, status: &str) {
    let body = json!({"ip": ip, "status": status}).to_string();
    let (code, text) = http(
        "PUT",
        server.admin_addr(),
        &format!("/v1/devices/{}", iccid(n)),
        None,
        Some(&body),
    );
    assert!(code == 200 || code == 201, "{code} {text}");
}

/// A device: a UDP socket on its own address.
struct Device {
    socket: UdpSocket,
    mid: u16,
}

impl Device {
    fn at(ip: &str) -> Device {
        let socket = UdpSocket::bind((ip, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Device { socket, mid: 0 }
    }

    /// One request to an instance's CoAP listener; the response.
    fn request(
        &mut self,
        server: &BackgroundServer,
        method: RequestType,
        path: &str,
        payload: &[u8],
    ) -> codec::Packet {
        self.mid = self.mid.wrapping_add(1);
        let mut p = codec::Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        p.header.message_id = self.mid;
        p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
        p.payload = payload.to_vec();
        self.socket
            .send_to(&codec::encode(&p).unwrap(), server.coap_addr())
            .unwrap();
        loop {
            let answer = receive_from(&self.socket);
            if answer.header.message_id == self.mid {
                return answer;
            }
        }
    }

    /// POSTs `payload` to `/data`; the response code, as `2.04`.
    fn post(&mut self, server: &BackgroundServer, payload: &[u8]) -> String {
        let answer = self.request(server, RequestType::Post, "data", payload);
        code(&answer)
    }
}

fn receive_from(socket: &UdpSocket) -> codec::Packet {
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    codec::decode(&buf[..n]).unwrap()
}

fn code(p: &codec::Packet) -> String {
    let raw: u8 = p.header.code.into();
    format!("{}.{:02}", raw >> 5, raw & 0x1f)
}

/// Tries `attempt` every 10 ms until it returns true, for at most `limit`;
/// how long it took.
fn within(limit: Duration, what: &str, mut attempt: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if attempt() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The telemetry value a message carried (default JSON envelope, base64).
fn value(m: &coapgate_testkit::Message) -> String {
    let v: Value = serde_json::from_str(&m.payload).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["payload"]["value"].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

struct Peers {
    pg: Postgres,
    url: String,
    broker: Mosquitto,
    sub: MosquittoSub,
}

fn peers(test: &str) -> Option<Peers> {
    let pg = Postgres::start(test)?;
    let url = pg.create_database("coapgate");
    let broker = Mosquitto::start(test)?;
    let sub = MosquittoSub::start(broker.port, test)?;
    Some(Peers {
        pg,
        url,
        broker,
        sub,
    })
}

#[test]
fn three_instances_on_one_postgresql_serve_one_fleet() {
    let test = "fleet_three_instances";
    let Some(peers) = peers(test) else { return };
    let fleet = Fleet::start(&peers.url, &peers.broker);
    let (a, b, c) = (fleet.instance(0), fleet.instance(1), fleet.instance(2));
    let mut delays = Vec::new();

    // A device added on A is served by B.
    put_device(a, 1, "127.0.1.1", "ACTIVE");
    let mut one = Device::at("127.0.1.1");
    delays.push(within(SECOND, "B serves a device added on A", || {
        one.post(b, b"hello") == "2.04"
    }));

    // A PSK fetched with /bootstrap on A completes a DTLS handshake on C.
    put_device(a, 2, "127.0.1.2", "ACTIVE");
    let Some(reply) = coap_client(
        "coap-client-notls",
        &[
            "-a",
            "127.0.1.2",
            "-m",
            "get",
            &format!("coap://{}/bootstrap", a.coap_addr()),
        ],
        test,
    ) else {
        return;
    };
    assert_eq!(reply.code.as_deref(), Some("2.05"), "{}", reply.log);
    let fields: Vec<&str> = reply.payload.split(',').collect();
    assert_eq!(fields[0], iccid(2), "{}", reply.payload);
    let psk = fields[1].to_owned();
    let coaps = format!("coaps://{}/data", c.coaps_addr());
    let mut handshakes = 0;
    let dtls = within(2 * SECOND, "a DTLS handshake on C with A's PSK", || {
        handshakes += 1;
        let reply = coap_client(
            "coap-client-openssl",
            &[
                "-a",
                "127.0.1.2",
                "-u",
                &iccid(2),
                "-k",
                &psk,
                "-m",
                "post",
                "-e",
                "dtls",
                &coaps,
            ],
            test,
        )
        .unwrap();
        reply.code.as_deref() == Some("2.04")
    });
    eprintln!("{test}: DTLS on C with A's PSK after {dtls:?} ({handshakes} attempts)");

    // INACTIVE on B: A answers 4.01 within a second.
    put_device(b, 1, "127.0.1.1", "INACTIVE");
    delays.push(within(
        SECOND,
        "A refuses a device made INACTIVE on B",
        || one.post(a, b"still there?") == "4.01",
    ));

    // Many devices spread over the three instances, each device on one
    // instance (the load balancer's affinity), then every device moved to
    // the next instance: every request arrives once, and each device's
    // first registration is announced once across the fleet.
    const DEVICES: u32 = 30;
    const ROUND: u32 = 3;
    for n in 0..DEVICES {
        put_device(
            fleet.instance(n as usize),
            100 + n,
            &format!("127.0.2.{}", n + 1),
            "ACTIVE",
        );
    }
    let everyone_knows = |n: u32| {
        let ip = format!("127.0.2.{}", n + 1).parse().unwrap();
        fleet
            .servers
            .iter()
            .all(|s| coapgate_model::DeviceDirectory::by_ip(&s.store().directory(), ip).is_some())
    };
    delays.push(within(SECOND, "every instance knows every device", || {
        (0..DEVICES).all(everyone_knows)
    }));
    let send_round = |round: u32| {
        std::thread::scope(|scope| {
            for n in 0..DEVICES {
                let server = fleet.instance((n + round) as usize);
                scope.spawn(move || {
                    let mut device = Device::at(&format!("127.0.2.{}", n + 1));
                    device.mid = (round * 100) as u16;
                    for k in 0..ROUND {
                        let payload = format!("d{n}-r{round}-m{k}");
                        assert_eq!(device.post(server, payload.as_bytes()), "2.04", "{payload}");
                    }
                });
            }
        });
    };
    send_round(0);
    let registered = |n: u32| {
        let who = iccid(100 + n).parse().unwrap();
        fleet.servers.iter().all(|s| s.store().is_registered(&who))
    };
    within(2 * SECOND, "registrations reach every instance", || {
        (0..DEVICES).all(registered)
    });
    send_round(1);
    let sent = (DEVICES * ROUND * 2) as usize;
    // Telemetry so far: one message from device 1 and one over DTLS.
    peers.sub.wait_for_telemetry(sent + 2, 10 * SECOND);
    // Anything published twice would arrive within moments.
    std::thread::sleep(Duration::from_millis(500));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in peers.sub.telemetry() {
        *seen.entry(value(&m)).or_default() += 1;
    }
    for round in 0..2 {
        for n in 0..DEVICES {
            for k in 0..ROUND {
                let payload = format!("d{n}-r{round}-m{k}");
                assert_eq!(seen.get(&payload), Some(&1), "{payload} published once");
            }
        }
    }
    // Probes A accepted before the INACTIVE status reached it were
    // published, as they should be; nothing else was.
    seen.remove("still there?");
    assert_eq!(seen.len(), sent + 2, "nothing else was published: {seen:?}");
    let lifecycle = peers
        .sub
        .events()
        .into_iter()
        .filter(|m| m.topic.ends_with("/lifecycle"))
        .map(|m| m.topic)
        .collect::<Vec<_>>();
    for n in 0..DEVICES {
        let topic = format!("{}/lifecycle", iccid(100 + n));
        let times = lifecycle.iter().filter(|t| **t == topic).count();
        assert_eq!(times, 1, "{topic}: first registration announced once");
    }

    // A position written behind by B is what /location answers on C.
    let template = json!({"name": "gps", "status": "ACTIVE", "template": {"sense": [
        {"asset": "lon", "value": {"byte": 0, "bytelength": 8, "type": "float", "byteorder": "little"}, "custom_type": "location_long"},
        {"asset": "lat", "value": {"byte": 8, "bytelength": 8, "type": "float", "byteorder": "little"}, "custom_type": "location_lat"}]}});
    let (status, text) = http(
        "PUT",
        a.admin_addr(),
        "/v1/optimize/templates/coap",
        None,
        Some(&template.to_string()),
    );
    assert_eq!(status, 200, "{text}");
    delays.push(within(
        SECOND,
        "the template reaches every instance",
        || {
            fleet
                .servers
                .iter()
                .all(|s| s.store().active_template().is_some())
        },
    ));
    let mut mover = Device::at("127.0.2.1");
    mover.mid = 1000;
    let fix = [13.404954f64.to_le_bytes(), 52.520008f64.to_le_bytes()].concat();
    assert_eq!(mover.post(b, &fix), "2.04");
    let located = within(3 * SECOND, "C's /location has B's position", || {
        let answer = mover.request(c, RequestType::Get, "location", b"");
        code(&answer) == "2.05"
            && String::from_utf8_lossy(&answer.payload).contains("13.404954,52.520008,GPS")
    });
    eprintln!(
        "{test}: position from B on C's /location after {located:?} (written behind once a second)"
    );

    // /healthz names the shared store and the broker, both answering.
    for server in &fleet.servers {
        let (status, text) = http("GET", server.admin_addr(), "/healthz", None, None);
        assert_eq!(status, 200, "{text}");
        let health: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(health["store"]["backend"], "postgres", "{health}");
        assert_eq!(health["store"]["up"], true, "{health}");
        assert_eq!(health["store"]["following"], true, "{health}");
        assert_eq!(health["broker"]["connected"], true, "{health}");
        assert_eq!(
            health["broker"]["url"],
            format!("mqtt://127.0.0.1:{}", peers.broker.port),
            "{health}"
        );
    }
    delays.sort();
    eprintln!(
        "{test}: admin change on one instance to service on another: median {:?}, max {:?} ({} changes)",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        delays.len()
    );
}

#[test]
fn three_instances_keep_serving_while_postgresql_restarts() {
    let test = "fleet_postgresql_restart";
    let Some(mut peers) = peers(test) else { return };
    let fleet = Arc::new(Fleet::start(&peers.url, &peers.broker));
    for n in 0..3 {
        put_device(
            fleet.instance(0),
            n,
            &format!("127.0.1.{}", n + 1),
            "ACTIVE",
        );
    }
    within(SECOND, "every instance knows the devices", || {
        fleet
            .servers
            .iter()
            .all(|s| s.store().directory().len() == 3)
    });

    // Each device keeps sending to its instance while PostgreSQL restarts.
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..3u32)
        .map(|n| {
            let (fleet, stop) = (fleet.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut device = Device::at(&format!("127.0.1.{}", n + 1));
                let (mut sent, mut slowest) = (0u32, Duration::ZERO);
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                    let at = Instant::now();
                    let answer = device.post(fleet.instance(n as usize), b"through the restart");
                    assert_eq!(answer, "2.04", "device {n}, message {sent}");
                    slowest = slowest.max(at.elapsed());
                    sent += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                (sent, slowest)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    peers.pg.restart();
    // An admin change made after the restart reaches every instance (each
    // reconnects its change feed and reloads its views).
    put_device(fleet.instance(0), 9, "127.0.1.9", "ACTIVE");
    let reached = within(
        10 * SECOND,
        "a change after the restart reaches every instance",
        || {
            let ip = "127.0.1.9".parse().unwrap();
            fleet.servers.iter().all(|s| {
                coapgate_model::DeviceDirectory::by_ip(&s.store().directory(), ip).is_some()
            })
        },
    );
    let mut ninth = Device::at("127.0.1.9");
    for server in &fleet.servers {
        assert_eq!(ninth.post(server, b"new after the restart"), "2.04");
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for (n, sender) in senders.into_iter().enumerate() {
        let (sent, slowest) = sender.join().unwrap();
        eprintln!("{test}: device {n}: {sent} POSTs, all 2.04, slowest {slowest:?}");
        assert!(sent > 10, "device {n} sent only {sent}");
    }
    eprintln!(
        "{test}: an admin change made after the restart was on every instance within {reached:?}"
    );
    for server in &fleet.servers {
        let (_, metrics) = http("GET", server.admin_addr(), "/metrics", None, None);
        let resyncs = metrics
            .lines()
            .find_map(|l| l.strip_prefix("coapgate_store_resyncs_total "))
            .map(|v| v.trim().parse::<u64>().unwrap());
        assert!(resyncs.is_some_and(|r| r >= 1), "{metrics}");
    }
}
