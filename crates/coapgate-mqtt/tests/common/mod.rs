//! Test helpers for the bridge: an in-process subscriber that records what
//! the broker delivered, the few MQTT 3.1.1 packet codecs needed to script a
//! fake broker, and an event collector. The Mosquitto process itself comes
//! from `coapgate-testkit`, shared with every other integration test.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// What a [`Subscriber`] has received, in arrival order.
pub type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

/// An in-process MQTT subscriber (rumqttc) on `#` that records every message
/// and reconnects by itself. With `persistent`, it uses clean_session=false,
/// so a broker with a persistent session keeps queuing for it while it is away.
pub struct Subscriber {
    /// Messages so far.
    pub received: Received,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connects to 127.0.0.1:`port`, subscribes to `#` at `qos`, and returns
    /// once the SUBACK arrived (panics after 10 s).
    pub async fn start(
        port: u16,
        client_id: &str,
        persistent: bool,
        qos: rumqttc::QoS,
    ) -> Subscriber {
        let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_clean_session(!persistent)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
        let received: Received = Arc::default();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let rec = received.clone();
        let task = tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
                        if !ack.session_present {
                            let _ = client.try_subscribe("#", qos);
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        rec.lock()
                            .expect("lock")
                            .push((p.topic.clone(), p.payload.clone()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .expect("subscriber: no SUBACK within 10 s")
            .expect("subscriber task ended");
        Subscriber { received, task }
    }

    /// Number of messages received so far.
    pub fn count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }

    /// Waits until `pred` holds for the received messages or `timeout` passes;
    /// returns a copy of what was received.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&[(String, Bytes)]) -> bool,
    ) -> Vec<(String, Bytes)> {
        let end = Instant::now() + timeout;
        loop {
            let snapshot = self.received.lock().expect("lock").clone();
            if pred(&snapshot) || Instant::now() >= end {
                return snapshot;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Minimal MQTT 3.1.1 codec for scripted fake brokers (blocking std I/O).
pub mod wire {
    use super::*;

    /// CONNACK, session not present, accepted.
    pub const CONNACK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

    /// One packet: first byte (type and flags) and body. `None` at EOF.
    pub fn read_packet(stream: &mut TcpStream) -> std::io::Result<Option<(u8, Vec<u8>)>> {
        let mut first = [0u8; 1];
        if stream.read(&mut first)? == 0 {
            return Ok(None);
        }
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let mut b = [0u8; 1];
            stream.read_exact(&mut b)?;
            len |= usize::from(b[0] & 0x7f) << shift;
            if b[0] & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                return Err(std::io::Error::other("bad remaining length"));
            }
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body)?;
        Ok(Some((first[0], body)))
    }

    /// A PUBLISH's (topic, packet id, payload); packet id 0 for QoS 0.
    pub fn parse_publish(first: u8, body: &[u8]) -> (String, u16, Vec<u8>) {
        assert_eq!(first >> 4, 3, "not a PUBLISH");
        let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8(body[2..2 + tlen].to_vec()).expect("utf-8 topic");
        let mut at = 2 + tlen;
        let pkid = if (first >> 1) & 3 > 0 {
            at += 2;
            u16::from_be_bytes([body[at - 2], body[at - 1]])
        } else {
            0
        };
        (topic, pkid, body[at..].to_vec())
    }

    /// A two-byte-body ack: `kind` 4 PUBACK, 5 PUBREC, 7 PUBCOMP, 13 PINGRESP (no body).
    pub fn ack(kind: u8, pkid: u16) -> Vec<u8> {
        if kind == 13 {
            return vec![0xd0, 0x00];
        }
        let [hi, lo] = pkid.to_be_bytes();
        vec![kind << 4, 0x02, hi, lo]
    }

    /// Accepts one connection, reads its CONNECT and answers CONNACK.
    pub fn accept_mqtt(listener: &TcpListener) -> TcpStream {
        let (mut stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let (first, _) = read_packet(&mut stream)
            .expect("read CONNECT")
            .expect("CONNECT");
        assert_eq!(first >> 4, 1, "expected CONNECT");
        stream.write_all(&CONNACK).expect("write CONNACK");
        stream
    }
}

/// Receives bridge events until `done` says so or `timeout` passes; returns them all.
pub async fn collect_events<E: Clone>(
    rx: &mut tokio::sync::mpsc::Receiver<E>,
    timeout: Duration,
    mut done: impl FnMut(&[E]) -> bool,
) -> Vec<E> {
    let end = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    while !done(&got) {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(ev)) => got.push(ev),
            Ok(None) | Err(_) => break,
        }
    }
    got
}

/// Whether the bridge reported losing its connection among `events`.
pub fn disconnected(events: &[coapgate_mqtt::BridgeEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, coapgate_mqtt::BridgeEvent::Disconnected { .. }))
}

/// Waits (at most 10 s) for the bridge's `Connected` event.
pub async fn wait_connected(rx: &mut tokio::sync::mpsc::Receiver<coapgate_mqtt::BridgeEvent>) {
    let events = collect_events(rx, Duration::from_secs(10), |e| {
        e.contains(&coapgate_mqtt::BridgeEvent::Connected)
    })
    .await;
    assert!(
        events.contains(&coapgate_mqtt::BridgeEvent::Connected),
        "not connected: {events:?}"
    );
}
