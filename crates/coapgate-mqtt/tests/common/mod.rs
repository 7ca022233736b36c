//! Test helpers for anything that talks MQTT: a real Mosquitto broker
//! started on a free loopback port, an in-process subscriber that records
//! what the broker delivered, and the few MQTT 3.1.1 packet codecs needed to
//! script a fake broker. Self-contained: only std, tokio, bytes and rumqttc.
//!
//! Mosquitto is looked up in `$MOSQUITTO` (only there, when it is set), then
//! `PATH`, then `/usr/sbin/mosquitto`. When it is missing, [`Mosquitto::start`] panics if
//! `CI=true` and otherwise prints a loud `SKIPPED` line and returns `None`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port` (at most `timeout`).
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let addr = ([127, 0, 0, 1], port).into();
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Where the mosquitto binary is, if anywhere.
pub fn mosquitto_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MOSQUITTO") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("mosquitto"))
        .chain(std::iter::once(PathBuf::from("/usr/sbin/mosquitto")))
        .find(|p| p.is_file())
}

/// A Mosquitto process on 127.0.0.1:`port`, killed on drop.
pub struct Mosquitto {
    binary: PathBuf,
    /// The loopback port it listens on (kept across [`Mosquitto::restart`]).
    pub port: u16,
    dir: PathBuf,
    persistent: bool,
    child: Option<Child>,
}

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Mosquitto {
    /// Starts Mosquitto on a free port (anonymous, no persistence).
    /// `None` (after a loud SKIPPED line) when mosquitto is not installed and
    /// `CI` is not `true`; panics under `CI=true`.
    pub fn start(test: &str) -> Option<Mosquitto> {
        Self::start_with(test, free_port(), false)
    }

    /// Like [`start`](Self::start) on a given port; with `persistent`, the
    /// broker saves its state (sessions, queued messages) in its own temp
    /// directory on a clean stop and restores it on [`restart`](Self::restart).
    pub fn start_with(test: &str, port: u16, persistent: bool) -> Option<Mosquitto> {
        let Some(binary) = mosquitto_binary() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("mosquitto is not installed, and CI=true: test {test} cannot run");
            }
            // Straight to stderr, past the test harness' output capture.
            let _ = std::io::stderr().write_all(
                format!("\n***** SKIPPED {test}: mosquitto is not installed (set CI=true to fail instead) *****\n\n")
                    .as_bytes(),
            );
            return None;
        };
        let dir = std::env::temp_dir().join(format!(
            "coapgate-mosquitto-{}-{}-{}",
            std::process::id(),
            port,
            DIR_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create mosquitto temp dir");
        let mut m = Mosquitto {
            binary,
            port,
            dir,
            persistent,
            child: None,
        };
        m.spawn();
        Some(m)
    }

    fn spawn(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        let mut text = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nlog_dest file {}\nlog_type error\nlog_type warning\nlog_type notice\n",
            self.port,
            self.dir.join("mosquitto.log").display()
        );
        // As root, mosquitto would drop to user "mosquitto" and could not write here.
        text.push_str("user root\n");
        if self.persistent {
            text.push_str(&format!(
                "persistence true\npersistence_location {}/\n",
                self.dir.display()
            ));
        }
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(5)),
            "mosquitto did not listen on {} within 5 s; log: {}",
            self.port,
            self.log()
        );
    }

    /// Mosquitto's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// Stops the broker with SIGTERM (it saves persistent state), waits up to
    /// 5 s, then SIGKILLs. A no-op when it is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the broker at once with SIGKILL (no state saved).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port (after [`stop`](Self::stop)).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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
