//! The event loop never waits for the store (spec.md §2.1 step 8), seen from
//! the network: while another process (the `sqlite3` shell) holds the write
//! lock on the database file, a known device's POSTs keep getting 2.04
//! within milliseconds, and a new device's `/bootstrap` gets 5.03 with
//! Max-Age — or 2.05 once the lock is gone.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use coapgate_endpoint::codec::{self, CoapOption, MessageClass, MessageType, ResponseType};
use coapgate_testkit::require;
use common::*;

/// `sqlite3 FILE` holding `BEGIN EXCLUSIVE` until dropped.
struct Lock {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Lock {
    fn take(sqlite3: &std::path::Path, file: &std::path::Path) -> Self {
        let mut child = Command::new(sqlite3)
            .arg(file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"BEGIN EXCLUSIVE;\nSELECT 'locked';\n")
            .unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked", "sqlite3 took the lock");
        Self {
            child,
            stdin: Some(stdin),
        }
    }

    fn release(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"ROLLBACK;\n.quit\n");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Known-device POSTs for `period`, each timed from send to its 2.04; the
/// slowest round trip.
fn telemetry_for(socket: &UdpSocket, period: Duration, first_mid: u16) -> (usize, Duration) {
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut count = 0;
    // Bounded in time and count.
    while start.elapsed() < period && count < 10_000 {
        let mid = first_mid.wrapping_add(count as u16);
        let sent = Instant::now();
        socket
            .send(&request(
                MessageType::Confirmable,
                codec::RequestType::Post,
                mid,
                "data",
            ))
            .unwrap();
        let answer = receive(socket);
        slowest = slowest.max(sent.elapsed());
        assert_eq!(answer.header.message_id, mid);
        assert_eq!(
            answer.header.code,
            MessageClass::Response(ResponseType::Changed)
        );
        count += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    (count, slowest)
}

#[test]
fn a_locked_database_stalls_only_bootstrap_never_telemetry() {
    let test = "store_lock";
    let Some(sqlite3) = require("sqlite3", test) else {
        return;
    };
    let file = coapgate_testkit::temp_dir(test).join("coapgate.db");
    let Some(s) = setup_with(test, |c| {
        c.store.url = format!("sqlite://{}", file.display());
    }) else {
        return;
    };
    let server = s.server.coap_addr();
    let known = UdpSocket::bind("127.0.0.2:0").unwrap();
    known.connect(server).unwrap();
    known
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let onboarding = UdpSocket::bind("127.0.0.3:0").unwrap();
    onboarding.connect(server).unwrap();
    onboarding
        .set_read_timeout(Some(Duration::from_secs(12)))
        .unwrap();
    // Warm up: the known device is registered (its lifecycle event recorded).
    telemetry_for(&known, Duration::from_millis(300), 1);

    // 1. The lock outlasts the store's busy timeout: 5.03 with Max-Age.
    let lock = Lock::take(&sqlite3, &file);
    let asked = Instant::now();
    onboarding
        .send(&request(
            MessageType::NonConfirmable,
            codec::RequestType::Get,
            0x1234,
            "bootstrap",
        ))
        .unwrap();
    let (count, slowest) = telemetry_for(&known, Duration::from_secs(4), 1000);
    let answer = receive(&onboarding);
    let waited = asked.elapsed();
    assert_eq!(
        answer.header.code,
        MessageClass::Response(ResponseType::ServiceUnavailable)
    );
    assert_eq!(answer.get_first_option(CoapOption::MaxAge), Some(&vec![5]));
    assert!(answer.payload.is_empty());
    eprintln!(
        "{test}: {count} POSTs during the lock, slowest 2.04 after {slowest:?}; 5.03 after {waited:?}"
    );
    assert!(count >= 50, "{count} POSTs in 4 s");
    assert!(
        slowest < Duration::from_millis(250),
        "telemetry waited {slowest:?} while the store was locked"
    );

    // 2. The lock goes away while /bootstrap waits: 2.05 with a PSK.
    let asked = Instant::now();
    onboarding
        .send(&request(
            MessageType::NonConfirmable,
            codec::RequestType::Get,
            0x1235,
            "bootstrap",
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    lock.release();
    let answer = receive(&onboarding);
    assert_eq!(
        answer.header.code,
        MessageClass::Response(ResponseType::Content)
    );
    let body = String::from_utf8(answer.payload.clone()).unwrap();
    assert!(body.starts_with(&format!("{ICCID_B},")), "{body}");
    assert!(asked.elapsed() >= Duration::from_millis(1500));
    eprintln!("{test}: 2.05 {:?} after the request", asked.elapsed());
    // The PSK is the device's DTLS key from now on.
    let psk = body.split(',').nth(1).unwrap().to_owned();
    assert_eq!(
        s.server.store().psk_keys().key(ICCID_B).unwrap().as_slice(),
        psk.as_bytes()
    );
}
