//! Handshakes with OpenSSL's own DTLS client over an in-memory network:
//! every suite, data both ways, wrong keys, unknown identities, key changes.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use coapgate_dtls::{DtlsConfig, DtlsEvent};
use support::{Client, ICCID, PSK, Pair, SUITES, Table, addr, server_hello_extensions};

#[test]
fn each_suite_completes_and_data_flows_both_ways() {
    for (n, suite) in SUITES.iter().enumerate() {
        let mut pair = Pair::new(DtlsConfig::default(), Table::with(ICCID, PSK));
        let c = pair.add(Client::new(addr(n as u16), suite, ICCID, PSK));
        pair.pump();
        assert!(pair.clients[c].connected, "{suite}: client not connected");
        assert_eq!(pair.clients[c].cipher(), *suite);
        let established = pair.established();
        assert_eq!(established.len(), 1, "{suite}");
        let (session, at, identity) = established[0].clone();
        assert_eq!((at, identity.as_str()), (addr(n as u16), ICCID));
        assert_eq!(pair.server.session_info(session), Some((at, ICCID)));

        // The client's first ClientHello got a stateless HelloVerifyRequest
        // that is smaller than it.
        let client = &pair.clients[c];
        assert!(client.got[0].len() < client.sent[0].len());
        assert_eq!(client.got[0][13], 3, "HelloVerifyRequest first");

        pair.clients[c].write(b"POST /data");
        pair.pump();
        assert_eq!(
            pair.data(),
            vec![(session, b"POST /data".to_vec())],
            "{suite}"
        );

        pair.server.send(session, b"2.04 Changed").unwrap();
        pair.drain();
        pair.pump();
        assert_eq!(pair.clients[c].received, vec![b"2.04 Changed".to_vec()]);

        // Every datagram either way fits the MTU.
        let client = &pair.clients[c];
        assert!(
            client
                .sent
                .iter()
                .chain(&client.got)
                .all(|d| d.len() <= 1200)
        );
        let stats = pair.server.stats();
        assert_eq!(
            (stats.sessions, stats.handshakes_ok, stats.cookies_sent),
            (1, 1, 1)
        );
    }
}

#[test]
fn cbc_sha256_negotiates_encrypt_then_mac_and_extended_master_secret() {
    let mut pair = Pair::new(DtlsConfig::default(), Table::with(ICCID, PSK));
    let c = pair.add(Client::new(addr(1), "PSK-AES128-CBC-SHA256", ICCID, PSK));
    pair.pump();
    assert!(pair.clients[c].connected);
    // The openssl crate exposes Extended Master Secret, not Encrypt-then-MAC:
    // for that, read the ServerHello's extensions off the wire.
    assert_eq!(pair.clients[c].stream.ssl().extms_support(), Some(true));
    let extensions = pair.clients[c]
        .got
        .iter()
        .find_map(|d| server_hello_extensions(d))
        .expect("a ServerHello");
    assert!(
        extensions.contains(&0x0016),
        "encrypt_then_mac: {extensions:x?}"
    );
    assert!(
        extensions.contains(&0x0017),
        "extended_master_secret: {extensions:x?}"
    );
}

#[test]
fn a_wrong_key_gives_no_session_and_a_failed_handshake() {
    for suite in SUITES {
        let mut pair = Pair::new(DtlsConfig::default(), Table::with(ICCID, PSK));
        let c = pair.add(Client::new(addr(2), suite, ICCID, b"not-the-key"));
        pair.pump();
        assert!(!pair.clients[c].connected, "{suite}");
        assert!(pair.established().is_empty(), "{suite}");
        let stats = pair.server.stats();
        assert_eq!(stats.handshakes_failed, 1, "{suite}: {stats:?}");
        assert_eq!((stats.handshakes_in_progress, stats.sessions), (0, 0));
        assert!(
            pair.events.is_empty(),
            "{suite}: only Transmits: {:?}",
            pair.events
        );
    }
}

#[test]
fn an_unknown_identity_gives_no_session() {
    let mut pair = Pair::new(DtlsConfig::default(), Table::with(ICCID, PSK));
    let c = pair.add(Client::new(addr(3), SUITES[0], "8988228066602306799", PSK));
    pair.pump();
    assert!(!pair.clients[c].connected);
    assert!(
        pair.clients[c].failed,
        "OpenSSL sends the client a fatal alert"
    );
    assert!(pair.events.is_empty(), "{:?}", pair.events);
    let stats = pair.server.stats();
    assert_eq!(
        (stats.handshakes_failed, stats.handshakes_in_progress),
        (1, 0)
    );
}

#[test]
fn a_changed_key_is_used_by_the_next_handshake() {
    let table = Table::with(ICCID, PSK);
    let mut pair = Pair::new(DtlsConfig::default(), table.clone());
    pair.add(Client::new(addr(4), SUITES[1], ICCID, PSK));
    pair.pump();
    assert_eq!(pair.established().len(), 1);

    table.set(ICCID, b"the-new-psk-0001");
    // The old key no longer works; the new one does, with no restart.
    let old = pair.add(Client::new(addr(5), SUITES[1], ICCID, PSK));
    pair.pump();
    assert!(!pair.clients[old].connected);
    let new = pair.add(Client::new(addr(6), SUITES[1], ICCID, b"the-new-psk-0001"));
    pair.pump();
    assert!(pair.clients[new].connected);
    assert_eq!(pair.established().len(), 2);
}

#[test]
fn application_data_from_a_stranger_or_before_the_handshake_is_dropped() {
    let mut pair = Pair::new(DtlsConfig::default(), Table::with(ICCID, PSK));
    // An epoch-0 application-data record from an address with no state.
    let mut record = vec![23, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 3];
    record.extend_from_slice(b"abc");
    pair.inject(addr(7), &record);
    assert!(pair.stray.is_empty() && pair.events.is_empty());
    assert_eq!(pair.server.stats().datagrams_dropped, 1);

    // The same in the middle of a handshake neither ends it nor shows up.
    let c = pair.add(Client::new(addr(8), SUITES[0], ICCID, PSK));
    let first = pair.clients[c].step();
    for d in first {
        pair.inject(addr(8), &d);
    }
    let second = pair.clients[c].step(); // ClientHello with cookie
    for d in second {
        pair.inject(addr(8), &d);
    }
    assert_eq!(pair.server.stats().handshakes_in_progress, 1);
    pair.inject(addr(8), &record);
    assert_eq!(pair.server.stats().handshakes_in_progress, 1);
    pair.pump();
    assert!(pair.clients[c].connected);
    assert!(pair.data().is_empty());
    assert!(matches!(pair.events[0], DtlsEvent::Established { .. }));
}
