//! `DtlsConfig::handshake_limit`: new handshakes per source IP, on the
//! in-memory network with a fake clock. Over the limit a ClientHello with a
//! valid cookie is dropped silently before any state exists; cookie-less
//! ClientHellos and retransmissions cost nothing; other addresses are not
//! affected.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use coapgate_dtls::DtlsConfig;
use coapgate_exchange::RateLimit;
use support::{Client, ICCID, PSK, Pair, SUITES, Table, addr};

/// One new handshake a second per address, bursts of `burst`.
fn limited(burst: u32) -> Pair {
    let mut config = DtlsConfig::default();
    config.handshake_limit = RateLimit::per_second(1.0, burst).unwrap();
    Pair::new(config, Table::with(ICCID, PSK))
}

/// A client at `at` runs a whole handshake; whether it got a session.
fn connect(pair: &mut Pair, at: SocketAddr) -> bool {
    pair.clients.clear();
    let c = pair.add(Client::new(at, SUITES[0], ICCID, PSK));
    pair.pump();
    pair.clients[c].connected
}

/// Adds a client at `at` and takes it as far as its second ClientHello
/// (the one with the cookie), delivered; the server's answers reach the
/// client. Returns the client's index and that ClientHello.
fn second_client_hello(pair: &mut Pair, at: SocketAddr, suite: &str) -> (usize, Vec<u8>) {
    let c = pair.add(Client::new(at, suite, ICCID, PSK));
    for d in pair.clients[c].step() {
        pair.inject(at, &d);
    }
    let hello = pair.clients[c].step().remove(0);
    pair.inject(at, &hello);
    (c, hello)
}

#[test]
fn off_by_default() {
    let mut pair = Pair::new(DtlsConfig::default(), Table::with(ICCID, PSK));
    assert!(pair.server.config().handshake_limit.is_off());
    for port in 0..20 {
        assert!(connect(&mut pair, addr(port)), "handshake {port}");
    }
    assert_eq!(pair.server.stats().handshakes_rate_limited, 0);
}

#[test]
fn over_the_burst_an_address_gets_no_handshake_and_no_answer_until_a_token_is_back() {
    let mut pair = limited(2);
    assert!(connect(&mut pair, addr(1)));
    assert!(connect(&mut pair, addr(2)), "another port of the same IP");
    let before = pair.server.stats();

    // The third: the cookie round trip still happens (stateless), the
    // ClientHello with the cookie is dropped without a word.
    pair.clients.clear();
    let (c, _) = second_client_hello(&mut pair, addr(3), SUITES[0]);
    let stats = pair.server.stats();
    assert_eq!(stats.handshakes_rate_limited, 1);
    assert_eq!(stats.handshakes_in_progress, 0, "no Ssl for it");
    assert_eq!(stats.handshakes_refused_over_cap, 0);
    assert_eq!(stats.cookies_sent, before.cookies_sent + 1);
    assert_eq!(
        pair.clients[c].got.len(),
        1,
        "the HelloVerifyRequest, then nothing"
    );
    assert!(pair.stray.is_empty());
    assert_eq!(stats.sessions, 2, "the sessions already there stay");

    // One second later one token is back: one handshake, not two.
    pair.advance(Duration::from_secs(1));
    assert!(connect(&mut pair, addr(4)));
    assert!(!connect(&mut pair, addr(5)));
    assert_eq!(pair.server.stats().handshakes_rate_limited, 2);
}

#[test]
fn other_addresses_keep_their_own_budget() {
    let mut pair = limited(1);
    assert!(connect(&mut pair, addr(1)));
    assert!(!connect(&mut pair, addr(2)));
    let elsewhere = SocketAddr::from(([127, 0, 0, 2], 40_001));
    assert!(connect(&mut pair, elsewhere));
}

#[test]
fn cookieless_client_hellos_spend_no_budget() {
    let mut pair = limited(1);
    // A flood of first ClientHellos from the device's own address (as a
    // spoofer would send them) is answered statelessly…
    let hello = Client::new(addr(0), SUITES[0], ICCID, PSK).step().remove(0);
    for port in 0..1000 {
        pair.inject(addr(100 + port), &hello);
    }
    assert_eq!(pair.server.stats().cookies_sent, 1000);
    // …and the device still has its handshake.
    assert!(connect(&mut pair, addr(1)));
    assert_eq!(pair.server.stats().handshakes_rate_limited, 0);
}

#[test]
fn a_repeated_second_client_hello_spends_no_budget() {
    let mut pair = limited(1);
    let (c, hello) = second_client_hello(&mut pair, addr(1), SUITES[0]);
    // The client repeats it (its flight was lost): it goes to the handshake
    // in progress, not through the limit.
    for _ in 0..5 {
        pair.inject(addr(1), &hello);
    }
    let stats = pair.server.stats();
    assert_eq!(
        (stats.handshakes_rate_limited, stats.handshakes_in_progress),
        (0, 1)
    );
    pair.pump();
    assert!(pair.clients[c].connected);
}

#[test]
fn a_client_hello_over_the_limit_does_not_abandon_the_half_open_handshake_of_its_address() {
    let mut pair = limited(1);
    let (first, _) = second_client_hello(&mut pair, addr(1), SUITES[0]);
    // The server's flight to it waits; the client steps aside while a
    // second one uses the same address.
    let first = pair.clients.remove(first);
    assert_eq!(pair.server.stats().handshakes_in_progress, 1);
    // A new attempt from the same address, over the limit, changes nothing…
    second_client_hello(&mut pair, addr(1), SUITES[1]);
    pair.clients.clear();
    let stats = pair.server.stats();
    assert_eq!(stats.handshakes_rate_limited, 1);
    assert_eq!(
        (stats.handshakes_in_progress, stats.handshakes_failed),
        (1, 0),
        "the first handshake is still there"
    );
    // …and the first one completes (its flight waited in its inbox).
    let c = pair.add(first);
    pair.pump();
    assert!(pair.clients[c].connected);
}
