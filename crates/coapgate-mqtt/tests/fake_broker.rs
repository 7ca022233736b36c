//! The bridge against scripted fake brokers: silence, PUBREC without
//! PUBCOMP, a connection dropped with publishes in flight, out-of-order acks.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{Shutdown, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coapgate_mqtt::{Bridge, BridgeConfig, BridgeEvent, MqttError, Outgoing, Qos};
use common::wire::{accept_mqtt, ack, parse_publish, read_packet};
use common::{collect_events, disconnected, wait_connected};

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

fn config(port: u16) -> BridgeConfig {
    let mut config = BridgeConfig::default();
    config.port = port;
    config.client_id = "fake-test".into();
    config.keep_alive = Duration::from_secs(60);
    config.reconnect_delay_min = Duration::from_millis(50);
    config.reconnect_delay_max = Duration::from_millis(200);
    config
}

fn msg(id: u64, deadline: Instant) -> Outgoing {
    Outgoing {
        id,
        topic: "8988280666000000000/fake".into(),
        payload: Bytes::from(format!("payload-{id}")),
        deadline,
    }
}

/// Accepts one connection, answers CONNACK, then never answers anything;
/// returns every payload published to it (once the connection closes).
fn silent_broker(l: TcpListener) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut s = accept_mqtt(&l);
        let mut got = Vec::new();
        while let Ok(Some((first, body))) = read_packet(&mut s) {
            if first >> 4 == 3 {
                got.push(parse_publish(first, &body).2);
            }
            if first >> 4 == 14 {
                got.push(b"DISCONNECT".to_vec());
            }
        }
        got
    })
}

#[tokio::test]
async fn unconfirmed_publish_expires_at_its_deadline_not_before() {
    let (l, port) = listener();
    let broker = silent_broker(l);
    let (handle, mut rx) = Bridge::start(config(port)).expect("a valid bridge configuration");
    wait_connected(&mut rx).await;

    let deadline = Instant::now() + Duration::from_millis(1500);
    handle.publish(msg(1, deadline)).expect("publish");
    let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5 s");
    let at = Instant::now();
    assert_eq!(ev, Some(BridgeEvent::Expired { id: 1 }));
    assert!(
        at >= deadline,
        "Expired {:?} before the deadline",
        deadline - at
    );
    assert!(
        at - deadline < Duration::from_millis(500),
        "Expired {:?} late",
        at - deadline
    );
    assert_eq!(handle.outbox_depth(), 0);

    handle
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
    let got = broker.join().expect("broker thread");
    assert_eq!(
        got,
        vec![b"payload-1".to_vec(), b"DISCONNECT".to_vec()],
        "sent once, then a clean DISCONNECT"
    );
}

#[tokio::test]
async fn publish_refusals() {
    let (l, port) = listener();
    let broker = silent_broker(l);
    let (handle, mut rx) = Bridge::start({
        let mut config = config(port);
        config.outbox_capacity = 2;
        config.max_packet_size = 1024;
        config
    })
    .expect("a valid bridge configuration");
    let later = Instant::now() + Duration::from_secs(30);
    // Before the CONNACK: nothing is taken.
    assert!(matches!(
        handle.publish(msg(1, later)),
        Err(MqttError::NotConnected)
    ));
    wait_connected(&mut rx).await;

    handle.publish(msg(1, later)).expect("first");
    assert!(matches!(
        handle.publish(msg(1, later)),
        Err(MqttError::DuplicateId(1))
    ));
    handle.publish(msg(2, later)).expect("second");
    assert!(matches!(
        handle.publish(msg(3, later)),
        Err(MqttError::OutboxFull)
    ));
    assert_eq!(handle.outbox_depth(), 2);
    let big = Outgoing {
        payload: Bytes::from(vec![0u8; 1024]),
        ..msg(4, later)
    };
    assert!(matches!(
        handle.publish(big),
        Err(MqttError::PacketTooLarge { max: 1024, .. })
    ));
    let wild = Outgoing {
        topic: "a/+/b".into(),
        ..msg(5, later)
    };
    assert!(matches!(
        handle.publish(wild),
        Err(MqttError::InvalidTopic(_))
    ));

    // Shutdown with a silent broker: the two publishes end Expired at the
    // shutdown deadline, and every clone of the handle is closed.
    let other = handle.clone();
    let started = Instant::now();
    handle
        .shutdown(Instant::now() + Duration::from_millis(300))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(
        other.publish(msg(6, later)),
        Err(MqttError::Closed)
    ));
    let evs = collect_events(&mut rx, Duration::from_secs(2), |e| e.len() >= 3).await;
    assert!(evs.contains(&BridgeEvent::Expired { id: 1 }), "{evs:?}");
    assert!(evs.contains(&BridgeEvent::Expired { id: 2 }), "{evs:?}");
    assert!(disconnected(&evs), "{evs:?}");
    drop(other);
    let got = broker.join().expect("broker thread");
    assert_eq!(got.last().map(Vec::as_slice), Some(&b"DISCONNECT"[..]));
}

#[tokio::test]
async fn qos2_is_confirmed_by_pubcomp_not_pubrec() {
    let (l, port) = listener();
    let pubcomp_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let at = pubcomp_at.clone();
    let _broker = std::thread::spawn(move || {
        let mut s = accept_mqtt(&l);
        while let Ok(Some((first, body))) = read_packet(&mut s) {
            match first >> 4 {
                3 => {
                    let (_, pkid, _) = parse_publish(first, &body);
                    assert_eq!((first >> 1) & 3, 2, "QoS 2 publish");
                    s.write_all(&ack(5, pkid)).expect("PUBREC");
                }
                6 => {
                    let pkid = u16::from_be_bytes([body[0], body[1]]);
                    std::thread::sleep(Duration::from_millis(700));
                    *at.lock().expect("lock") = Some(Instant::now());
                    s.write_all(&ack(7, pkid)).expect("PUBCOMP");
                }
                _ => {}
            }
        }
    });
    let (handle, mut rx) = Bridge::start({
        let mut config = config(port);
        config.qos = Qos::ExactlyOnce;
        config
    })
    .expect("a valid bridge configuration");
    wait_connected(&mut rx).await;
    handle
        .publish(msg(7, Instant::now() + Duration::from_secs(10)))
        .expect("publish");
    let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("event");
    let received = Instant::now();
    let Some(BridgeEvent::Delivered { id: 7, latency }) = ev else {
        panic!("expected Delivered, got {ev:?}");
    };
    let sent = pubcomp_at.lock().expect("lock").expect("PUBCOMP was sent");
    assert!(received >= sent, "Delivered before the PUBCOMP was sent");
    assert!(latency >= Duration::from_millis(700), "latency {latency:?}");
    handle
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
}

/// Connection 1 receives 20 publishes, acks 5, and drops. Connection 2 must
/// receive each of the other 15 exactly once (no copy from rumqttc's own
/// queue on top of the bridge's re-send), and none of the 5 confirmed.
#[tokio::test]
async fn reconnect_resends_each_unconfirmed_publish_exactly_once() {
    let (l, port) = listener();
    let broker = std::thread::spawn(move || {
        let mut s = accept_mqtt(&l);
        let mut first_conn = Vec::new();
        while first_conn.len() < 20 {
            let (first, body) = read_packet(&mut s).expect("read").expect("open");
            if first >> 4 == 3 {
                first_conn.push(parse_publish(first, &body));
            }
        }
        let acked: Vec<Vec<u8>> = first_conn[..5].iter().map(|(_, _, p)| p.clone()).collect();
        for (_, pkid, _) in &first_conn[..5] {
            s.write_all(&ack(4, *pkid)).expect("PUBACK");
        }
        std::thread::sleep(Duration::from_millis(100));
        let _ = s.shutdown(Shutdown::Both);
        drop(s);

        let mut s = accept_mqtt(&l);
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .expect("timeout");
        let mut second_conn = Vec::new();
        while let Ok(Some((first, body))) = read_packet(&mut s) {
            if first >> 4 == 3 {
                let (_, pkid, payload) = parse_publish(first, &body);
                second_conn.push(payload);
                s.write_all(&ack(4, pkid)).expect("PUBACK");
            }
        }
        (acked, second_conn)
    });
    let (handle, mut rx) = Bridge::start(config(port)).expect("a valid bridge configuration");
    wait_connected(&mut rx).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in 0..20 {
        handle.publish(msg(id, deadline)).expect("publish");
    }
    let events = collect_events(&mut rx, Duration::from_secs(15), |e| {
        e.iter()
            .filter(|e| matches!(e, BridgeEvent::Delivered { .. }))
            .count()
            == 20
    })
    .await;
    let delivered: HashSet<u64> = events
        .iter()
        .filter_map(|e| match e {
            BridgeEvent::Delivered { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(delivered.len(), 20, "{events:?}");
    assert!(disconnected(&events), "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == BridgeEvent::Connected)
            .count(),
        1,
        "{events:?}"
    );

    let (acked, second) = broker.join().expect("broker");
    let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
    for p in &second {
        *counts.entry(p.clone()).or_default() += 1;
    }
    for p in &acked {
        assert!(
            !counts.contains_key(p),
            "confirmed publish {p:?} was sent again"
        );
    }
    assert_eq!(
        second.len(),
        15,
        "re-sent: {:?}",
        second
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect::<Vec<_>>()
    );
    assert!(
        counts.values().all(|&n| n == 1),
        "duplicates after reconnect: {counts:?}"
    );
    handle
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
}

/// The broker withholds the PUBACK of the first publish while acking the
/// others, so rumqttc wraps its packet ids onto the unacknowledged one (a
/// collision). Every Delivered must name a payload the broker had acked
/// before, and each publish is Delivered exactly once.
#[tokio::test]
async fn out_of_order_acks_and_packet_id_reuse_confirm_the_right_message() {
    let (l, port) = listener();
    let acked: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
    let acked_b = acked.clone();
    let _broker = std::thread::spawn(move || {
        let mut s = accept_mqtt(&l);
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut held: Option<(u16, Vec<u8>)> = None;
        let mut first = true;
        loop {
            match read_packet(&mut s) {
                Ok(Some((b0, body))) if b0 >> 4 == 3 => {
                    let (_, pkid, payload) = parse_publish(b0, &body);
                    if first {
                        first = false;
                        held = Some((pkid, payload));
                        continue;
                    }
                    acked_b.lock().expect("lock").insert(payload);
                    s.write_all(&ack(4, pkid)).expect("PUBACK");
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => {
                    // Quiet for 300 ms: now release the held one.
                    if let Some((pkid, payload)) = held.take() {
                        acked_b.lock().expect("lock").insert(payload);
                        s.write_all(&ack(4, pkid)).expect("PUBACK");
                    }
                }
            }
        }
    });
    let (handle, mut rx) = Bridge::start({
        let mut config = config(port);
        config.max_inflight = 4;
        config
    })
    .expect("a valid bridge configuration");
    wait_connected(&mut rx).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in 0..12 {
        handle.publish(msg(id, deadline)).expect("publish");
    }
    let mut delivered = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while delivered.len() < 12 && Instant::now() < end {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(BridgeEvent::Delivered { id, .. })) => {
                let payload = format!("payload-{id}").into_bytes();
                assert!(
                    acked.lock().expect("lock").contains(&payload),
                    "Delivered {id} before the broker acked it"
                );
                delivered.push(id);
            }
            Ok(Some(BridgeEvent::Connected)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    delivered.sort_unstable();
    assert_eq!(delivered, (0..12).collect::<Vec<_>>());
    handle
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
}

/// A broker that counts PINGREQs, answering them when `answer` is set;
/// returns how many arrived (once the connection closes or 6 s passed).
fn pinged_broker(l: TcpListener, answer: bool) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut s = accept_mqtt(&l);
        s.set_read_timeout(Some(Duration::from_secs(6)))
            .expect("timeout");
        let mut pings = 0;
        while let Ok(Some((first, _))) = read_packet(&mut s) {
            if first >> 4 == 12 {
                pings += 1;
                if answer {
                    s.write_all(&ack(13, 0)).expect("PINGRESP");
                }
            }
        }
        pings
    })
}

/// The bridge writes its own packets while connected (decision 105), so it
/// pings on its own: every `keep_alive` while idle, staying connected while
/// the broker answers…
#[tokio::test]
async fn an_idle_bridge_pings_every_keep_alive() {
    let (l, port) = listener();
    let broker = pinged_broker(l, true);
    let mut config = config(port);
    config.keep_alive = Duration::from_secs(1);
    let (handle, mut rx) = Bridge::start(config).expect("valid");
    wait_connected(&mut rx).await;
    let idle = collect_events(&mut rx, Duration::from_millis(3500), |_| false).await;
    assert!(idle.is_empty(), "{idle:?}");
    assert!(handle.is_connected());
    handle.shutdown(Instant::now()).await;
    let pings = broker.join().expect("broker thread");
    assert!((3..=4).contains(&pings), "{pings} PINGREQs in 3.5 s");
}

/// …and dropping the connection when a PINGREQ goes unanswered until the
/// next one is due.
#[tokio::test]
async fn an_unanswered_ping_drops_the_connection() {
    let (l, port) = listener();
    let _broker = pinged_broker(l, false);
    let mut config = config(port);
    config.keep_alive = Duration::from_secs(1);
    let (_handle, mut rx) = Bridge::start(config).expect("valid");
    wait_connected(&mut rx).await;
    let events = collect_events(&mut rx, Duration::from_secs(4), disconnected).await;
    assert!(disconnected(&events), "{events:?}");
}
