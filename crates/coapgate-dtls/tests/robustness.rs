//! Half-open peers, floods, deadlines, idle expiry, re-handshakes and caps,
//! on the in-memory network with a fake clock.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::time::Duration;

use coapgate_dtls::{CloseReason, DtlsConfig, DtlsError};
use support::{Client, ICCID, PSK, Pair, SUITES, Table, addr};

fn config() -> DtlsConfig {
    DtlsConfig::default()
}

/// Takes a client through ClientHello → HelloVerifyRequest → ClientHello
/// with cookie, then lets it fall silent (it is removed from the network).
fn half_open(pair: &mut Pair, port: u16) {
    let mut c = Client::new(addr(port), SUITES[0], ICCID, PSK);
    for d in c.step() {
        pair.server.handle_datagram(pair.now, c.addr, &d);
    }
    while let Some(e) = pair.server.poll_event() {
        if let coapgate_dtls::DtlsEvent::Transmit { bytes, .. } = e {
            c.stream.get_mut().inbox.push_back(bytes);
        }
    }
    for d in c.step() {
        pair.server.handle_datagram(pair.now, c.addr, &d);
    }
    pair.drain(); // the ServerHello flight goes nowhere
}

#[test]
fn a_silent_half_open_peer_does_not_delay_another_handshake() {
    let mut pair = Pair::new(config(), Table::with(ICCID, PSK));
    half_open(&mut pair, 1);
    assert_eq!(pair.server.stats().handshakes_in_progress, 1);
    let c = pair.add(Client::new(addr(2), SUITES[1], ICCID, PSK));
    pair.pump(); // no time passes
    assert!(pair.clients[c].connected);
    assert_eq!(pair.established().len(), 1);
    assert_eq!(pair.server.stats().handshakes_in_progress, 1);
}

#[test]
fn a_flood_of_cookieless_client_hellos_creates_no_state() {
    let mut pair = Pair::new(config(), Table::with(ICCID, PSK));
    let mut hello = Client::new(addr(0), SUITES[1], ICCID, PSK).step().remove(0);
    for port in 0..5_000u16 {
        // Vary the random too, as a flood would.
        hello[13 + 12 + 2] = port as u8;
        let from = std::net::SocketAddr::from(([127, 0, 0, 9], 10_000 + port));
        pair.server.handle_datagram(pair.now, from, &hello);
        pair.drain();
        let stats = pair.server.stats();
        assert_eq!((stats.handshakes_in_progress, stats.sessions), (0, 0));
    }
    let stats = pair.server.stats();
    assert_eq!(stats.cookies_sent, 5_000);
    assert_eq!(pair.stray.len(), 5_000);
    assert!(pair.stray.iter().all(|(_, d)| d.len() < hello.len()));
    assert_eq!(pair.server.poll_timeout(), None, "no timers: no state");
}

#[test]
fn handshakes_with_valid_cookies_are_capped() {
    let mut config = config();
    config.max_handshakes = 16;
    let mut pair = Pair::new(config, Table::with(ICCID, PSK));
    for port in 0..100 {
        half_open(&mut pair, port);
        assert!(pair.server.stats().handshakes_in_progress <= 16);
    }
    let stats = pair.server.stats();
    assert_eq!(stats.handshakes_in_progress, 16);
    assert_eq!(stats.handshakes_refused_over_cap, 84);
    // A full server refuses, and recovers once the half-open ones time out.
    let c = pair.add(Client::new(addr(200), SUITES[0], ICCID, PSK));
    pair.pump();
    assert!(!pair.clients[c].connected);
    pair.advance(Duration::from_secs(21));
    assert_eq!(pair.server.stats().handshakes_in_progress, 0);
    assert_eq!(pair.server.stats().handshakes_timed_out, 16);
    let c = pair.add(Client::new(addr(201), SUITES[0], ICCID, PSK));
    pair.pump();
    assert!(pair.clients[c].connected);
}

#[test]
fn a_handshake_past_its_deadline_is_dropped() {
    let mut pair = Pair::new(config(), Table::with(ICCID, PSK));
    half_open(&mut pair, 1);
    let deadline = pair.now + Duration::from_secs(20);
    assert!(pair.server.poll_timeout().unwrap() <= deadline);
    pair.advance(Duration::from_secs(19));
    assert_eq!(pair.server.stats().handshakes_in_progress, 1);
    pair.advance(Duration::from_secs(1));
    let stats = pair.server.stats();
    assert_eq!(
        (stats.handshakes_in_progress, stats.handshakes_timed_out),
        (0, 1)
    );
    assert_eq!(pair.server.poll_timeout(), None);
    assert!(pair.events.is_empty());
}

#[test]
fn an_idle_session_is_closed_and_activity_postpones_it() {
    let mut pair = Pair::new(config(), Table::with(ICCID, PSK));
    let c = pair.add(Client::new(addr(1), SUITES[0], ICCID, PSK));
    pair.pump();
    let session = pair.established()[0].0;
    assert_eq!(
        pair.server.poll_timeout(),
        Some(pair.now + Duration::from_secs(1800))
    );
    pair.advance(Duration::from_secs(1000));
    pair.clients[c].write(b"ping");
    pair.pump();
    pair.advance(Duration::from_secs(1000)); // 2000 s after the handshake
    assert!(pair.closed().is_empty(), "activity at 1000 s keeps it open");
    pair.advance(Duration::from_secs(800)); // 1800 s after the data
    assert_eq!(pair.closed(), vec![(session, CloseReason::Idle)]);
    assert_eq!(pair.server.stats().sessions, 0);
    // The close_notify reached the client.
    pair.pump();
    assert!(matches!(
        pair.server.send(session, b"x"),
        Err(DtlsError::UnknownSession(s)) if s == session
    ));
}

#[test]
fn a_device_that_rebooted_handshakes_again_from_the_same_address() {
    let mut pair = Pair::new(config(), Table::with(ICCID, PSK));
    pair.add(Client::new(addr(1), SUITES[1], ICCID, PSK));
    pair.pump();
    let old = pair.established()[0].0;
    // Reboot: the old client state is gone, a new one uses the same address.
    pair.clients.clear();
    let c = pair.add(Client::new(addr(1), SUITES[1], ICCID, PSK));
    pair.pump();
    assert!(pair.clients[c].connected);
    let established = pair.established();
    assert_eq!(established.len(), 2);
    let new = established[1].0;
    assert_ne!(new, old);
    assert_eq!(pair.closed(), vec![(old, CloseReason::Replaced)]);
    assert_eq!(pair.server.stats().sessions, 1);
    pair.clients[c].write(b"after reboot");
    pair.pump();
    assert_eq!(pair.data(), vec![(new, b"after reboot".to_vec())]);
}

#[test]
fn a_spoofed_client_hello_does_not_end_a_live_session() {
    let mut pair = Pair::new(config(), Table::with(ICCID, PSK));
    let c = pair.add(Client::new(addr(1), SUITES[0], ICCID, PSK));
    pair.pump();
    let session = pair.established()[0].0;

    // Off-path: a ClientHello "from" the device's address gets only a
    // HelloVerifyRequest (which the device ignores).
    let mut spoofer = Client::new(addr(1), SUITES[0], ICCID, PSK);
    let hello = spoofer.step().remove(0);
    pair.inject(addr(1), &hello);
    assert_eq!(pair.server.stats().handshakes_in_progress, 0);

    // On-path (it saw the cookie): a half-open handshake next to the session.
    let cookie_hello = {
        let hvr = pair.clients[c].stream.get_mut().inbox.pop_back().unwrap();
        spoofer.stream.get_mut().inbox.push_back(hvr);
        spoofer.step().remove(0)
    };
    pair.inject(addr(1), &cookie_hello);
    assert_eq!(pair.server.stats().handshakes_in_progress, 1);
    pair.clients[c].stream.get_mut().inbox.clear(); // the ServerHello flight

    // The session still works both ways, and outlives the handshake.
    pair.clients[c].write(b"still here");
    pair.pump();
    assert_eq!(pair.data(), vec![(session, b"still here".to_vec())]);
    pair.advance(Duration::from_secs(21));
    let stats = pair.server.stats();
    assert_eq!((stats.sessions, stats.handshakes_timed_out), (1, 1));
    pair.server.send(session, b"ack").unwrap();
    pair.drain();
    pair.pump();
    assert_eq!(pair.clients[c].received, vec![b"ack".to_vec()]);
    assert!(pair.closed().is_empty());
}

#[test]
fn handshakes_over_max_sessions_are_refused() {
    let mut config = config();
    config.max_sessions = 2;
    let mut pair = Pair::new(config, Table::with(ICCID, PSK));
    for port in 0..3 {
        pair.add(Client::new(addr(port), SUITES[2], ICCID, PSK));
    }
    pair.pump();
    assert_eq!(pair.established().len(), 2);
    let stats = pair.server.stats();
    assert_eq!(stats.sessions, 2);
    assert!(stats.handshakes_refused_over_cap >= 1, "{stats:?}");
    // An existing session may still re-handshake (it replaces itself).
    pair.clients.remove(0);
    let c = pair.add(Client::new(addr(0), SUITES[2], ICCID, PSK));
    pair.pump();
    assert!(pair.clients.last().unwrap().connected, "{c}");
    assert_eq!(pair.server.stats().sessions, 2);
}

#[test]
fn close_notify_from_the_peer_closes_the_session() {
    let mut pair = Pair::new(config(), Table::with(ICCID, PSK));
    let c = pair.add(Client::new(addr(1), SUITES[0], ICCID, PSK));
    pair.pump();
    let session = pair.established()[0].0;
    let _ = pair.clients[c].stream.shutdown();
    pair.pump();
    assert_eq!(pair.closed(), vec![(session, CloseReason::PeerClosed)]);
    assert_eq!(pair.server.stats().sessions, 0);
    assert_eq!(pair.server.poll_timeout(), None);
}

#[test]
fn close_sends_close_notify_and_reports_closed() {
    let mut pair = Pair::new(config(), Table::with(ICCID, PSK));
    let c = pair.add(Client::new(addr(1), SUITES[0], ICCID, PSK));
    pair.pump();
    let session = pair.established()[0].0;
    pair.server.close(session);
    pair.drain();
    assert_eq!(pair.closed(), vec![(session, CloseReason::Local)]);
    let mut buf = [0u8; 16];
    let err = pair.clients[c].stream.ssl_read(&mut buf).unwrap_err();
    assert_eq!(err.code(), openssl::ssl::ErrorCode::ZERO_RETURN);
}

#[test]
fn data_larger_than_the_mtu_allows_is_refused() {
    let mut pair = Pair::new(config(), Table::with(ICCID, PSK));
    pair.add(Client::new(addr(1), SUITES[1], ICCID, PSK));
    pair.pump();
    let session = pair.established()[0].0;
    let err = pair.server.send(session, &[0; 1200]).unwrap_err();
    let DtlsError::TooLarge { max, .. } = err else {
        panic!("{err:?}");
    };
    assert!(max > 1024 && max < 1200, "{max}");
    pair.server.send(session, &vec![0; max]).unwrap();
    pair.drain();
    pair.pump();
    assert_eq!(pair.clients[0].received[0].len(), max);
}

#[test]
fn a_lost_server_flight_is_retransmitted_on_openssl_timer() {
    // The one test that waits for real time: OpenSSL's timer (1 s) reads
    // the real clock.
    let mut pair = Pair::new(config(), Table::with(ICCID, PSK));
    let c = pair.add(Client::new(addr(1), SUITES[0], ICCID, PSK));
    let hello = pair.clients[c].step();
    pair.inject(addr(1), &hello[0]);
    let cookie_hello = pair.clients[c].step();
    pair.drop_to_client = 1; // the ServerHello flight
    pair.inject(addr(1), &cookie_hello[0]);
    pair.pump();
    assert!(!pair.clients[c].connected);
    let wake = pair.server.poll_timeout().unwrap();
    assert!(wake <= pair.now + Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(1100));
    pair.advance(Duration::from_millis(1100));
    pair.pump();
    assert!(pair.clients[c].connected);
}

#[test]
fn a_client_hello_retransmitted_before_the_cookie_still_gets_in() {
    // The first HelloVerifyRequest is lost; the client repeats its
    // ClientHello (record number 1) on its own timer, which reads the real
    // clock. The HelloVerifyRequest echoes record number 1 (RFC 6347
    // §4.2.1); the server's flight must then continue above it, or OpenSSL's
    // client drops the ServerHello as a replay and the handshake stalls for
    // a server retransmission.
    let mut pair = Pair::new(config(), Table::with(ICCID, PSK));
    let c = pair.add(Client::new(addr(1), SUITES[1], ICCID, PSK));
    pair.drop_to_client = 1;
    pair.pump();
    assert!(pair.clients[c].got.is_empty());
    std::thread::sleep(Duration::from_millis(1100));
    let again = pair.clients[c].step();
    assert_eq!(
        again[0][10], 1,
        "the repeated ClientHello has record number 1"
    );
    pair.inject(addr(1), &again[0]);
    assert_eq!(pair.clients[c].got[0][10], 1, "echoed record number");
    pair.pump(); // no more time passes
    assert!(pair.clients[c].connected);
    // The ServerHello continued from the second ClientHello's number (2).
    assert_eq!(pair.clients[c].got[1][10], 2);
}

#[test]
fn a_lost_final_flight_is_resent_when_the_client_repeats_its_own() {
    // The server's ChangeCipherSpec + Finished is lost: the server already
    // has a session, the client does not. The client repeats its last
    // flight on its timer (real clock); the session answers it.
    let mut pair = Pair::new(config(), Table::with(ICCID, PSK));
    let c = pair.add(Client::new(addr(1), SUITES[0], ICCID, PSK));
    for _ in 0..3 {
        let out = pair.clients[c].step();
        for d in out {
            pair.inject(addr(1), &d);
        }
    }
    assert_eq!(pair.established().len(), 1);
    pair.clients[c].stream.get_mut().inbox.clear(); // the final flight, lost
    pair.pump();
    assert!(!pair.clients[c].connected);
    std::thread::sleep(Duration::from_millis(1100));
    pair.pump();
    assert!(pair.clients[c].connected);
    assert_eq!(pair.established().len(), 1);
    assert!(pair.closed().is_empty());
    pair.clients[c].write(b"late but fine");
    pair.pump();
    assert_eq!(pair.data().len(), 1);
}

#[test]
fn a_client_whose_cookie_went_stale_gets_a_new_one_and_then_in() {
    // Two cookie rotations pass between the client's first and second
    // ClientHello, so its cookie is refused with a new HelloVerifyRequest
    // and its third ClientHello carries message_seq 2: the general path
    // (OpenSSL walked through the earlier exchanges), not DTLSv1_listen's.
    let mut pair = Pair::new(config(), Table::with(ICCID, PSK));
    let c = pair.add(Client::new(addr(1), SUITES[0], ICCID, PSK));
    for d in pair.clients[c].step() {
        pair.inject(addr(1), &d);
    }
    pair.advance(config().cookie_rotation * 2 + Duration::from_secs(1));
    pair.pump();
    assert!(pair.clients[c].connected);
    assert_eq!(pair.established().len(), 1);
    assert_eq!(pair.server.stats().cookies_sent, 2);
    let hellos: Vec<u16> = pair.clients[c]
        .sent
        .iter()
        .filter(|d| d[0] == 22 && d[13] == 1)
        .map(|d| u16::from_be_bytes([d[17], d[18]]))
        .collect();
    assert_eq!(hellos, vec![0, 1, 2], "ClientHello message_seqs");
    pair.clients[c].write(b"after two cookies");
    pair.pump();
    assert_eq!(pair.data().len(), 1);
}
