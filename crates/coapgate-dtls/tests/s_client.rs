//! Against the real `openssl s_client` over loopback UDP, with a tiny
//! blocking loop driving the `DtlsServer`: every suite reaches
//! `Established` and a line typed into s_client arrives as `Data`.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coapgate_dtls::{CloseReason, DtlsConfig, DtlsEvent, DtlsServer};
use support::{ICCID, PSK, SUITES, Table};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn openssl_s_client_connects_with_every_suite_and_sends_a_line() {
    let Some(openssl) = coapgate_testkit::require("openssl", "s_client interop") else {
        return;
    };
    for suite in SUITES {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let mut server =
            DtlsServer::new(DtlsConfig::default(), Arc::new(Table::with(ICCID, PSK))).unwrap();
        let mut child = Command::new(&openssl)
            .args(["s_client", "-dtls1_2", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-psk_identity", ICCID, "-psk", &hex(PSK), "-cipher", suite])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take();
        let line = format!("hello over {suite}\n");
        let mut established = None;
        let mut data = None;
        let mut closed = None;
        let start = Instant::now();
        let mut buf = [0u8; 2048];
        // Bounded: 10 s, 20 ms per turn.
        while start.elapsed() < Duration::from_secs(10) && closed.is_none() {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => server.handle_datagram(Instant::now(), from, &buf[..n]),
                Err(_) => server.handle_timeout(Instant::now()),
            }
            while let Some(event) = server.poll_event() {
                match event {
                    DtlsEvent::Incoming(incoming) => server.accept(Instant::now(), incoming),
                    DtlsEvent::Transmit { to, bytes } => {
                        socket.send_to(&bytes, to).unwrap();
                    }
                    DtlsEvent::Established { identity, .. } => {
                        established = Some(identity);
                        if let Some(stdin) = stdin.as_mut() {
                            stdin.write_all(line.as_bytes()).unwrap();
                            stdin.flush().unwrap();
                        }
                    }
                    DtlsEvent::Data { bytes, .. } => {
                        data = Some(bytes);
                        // EOF on stdin: s_client sends close_notify and exits.
                        stdin = None;
                    }
                    DtlsEvent::Closed { reason, .. } => closed = Some(reason),
                }
            }
        }
        drop(stdin);
        let output = coapgate_testkit::wait_output(child, Duration::from_secs(5));
        let log = format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(established.as_deref(), Some(ICCID), "{suite}: {log}");
        assert_eq!(data.as_deref(), Some(line.as_bytes()), "{suite}: {log}");
        assert_eq!(closed, Some(CloseReason::PeerClosed), "{suite}: {log}");
        assert!(
            log.contains(suite),
            "{suite}: s_client reports the cipher: {log}"
        );
        assert!(
            log.contains("Extended master secret: yes"),
            "{suite}: EMS: {log}"
        );
        let stats = server.stats();
        assert_eq!((stats.handshakes_ok, stats.cookies_sent), (1, 1), "{suite}");
    }
}
