//! Replays the committed fuzz corpus (`fuzz/corpus/dtls/`) through the
//! `dtls` fuzz target's own body, so every `cargo test` re-checks the seeds
//! and any past findings without libFuzzer or nightly.
//!
//! The seeds are scripts (see `coapgate_dtls::fuzzing`) around real
//! datagrams captured from OpenSSL's DTLS client; captures carry fresh
//! randoms, so they cannot be compared byte for byte with a new capture.
//! Rewrite them with
//! `COAPGATE_WRITE_SEEDS=1 cargo test -p coapgate-dtls --test fuzz_corpus`.
//! Names follow the corpus rule: `ok-*` scripts are traffic the server
//! answers, `bad-*` scripts traffic it drops or refuses; each also has its
//! own expectation below.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod support;

use coapgate_dtls::fuzzing::{
    self, Outcome, step_datagram, step_real_data, step_real_handshake, step_with_cookie,
};
use coapgate_dtls::{DtlsConfig, DtlsEvent};
use support::{Client, Pair, SUITES, Table};

/// What the named seed must do.
fn expectation(name: &str, o: &Outcome) {
    let s = o.stats;
    match name {
        n if n.starts_with("ok-clienthello-") && !n.contains("cookie") => {
            assert_eq!((s.cookies_sent, o.transmits), (1, 1), "{n}: {o:?}");
            assert_eq!(s.handshakes_in_progress, 0, "{n}: no state");
        }
        "ok-stale-cookie" => assert_eq!(s.cookies_sent, 1, "{o:?}"),
        "ok-with-cookie" => {
            assert_eq!((s.cookies_sent, s.handshakes_in_progress), (0, 1), "{o:?}");
            assert!(o.transmits >= 1, "a ServerHello flight: {o:?}");
        }
        "ok-with-cookie-refused" => {
            assert_eq!(
                (
                    s.cookies_sent,
                    s.handshakes_refused,
                    s.handshakes_in_progress
                ),
                (0, 1, 0),
                "{o:?}"
            );
            assert_eq!(o.transmits, 0, "a refusal sends nothing: {o:?}");
        }
        "ok-with-cookie-then-deadline" => {
            assert_eq!(
                (s.handshakes_in_progress, s.handshakes_timed_out),
                (0, 1),
                "{o:?}"
            );
        }
        "ok-three-peers-over-cap" => {
            assert_eq!(s.handshakes_in_progress, 2, "{o:?}");
            assert_eq!(s.handshakes_refused_over_cap, 1, "{o:?}");
        }
        "ok-real-handshake-then-data" => {
            assert_eq!((o.established, o.data, s.sessions), (1, 1, 1), "{o:?}");
        }
        "ok-real-rehandshake" => {
            assert_eq!(
                (o.established, o.closed, o.data, s.sessions),
                (2, 1, 1, 1),
                "{o:?}"
            );
        }
        "ok-real-handshakes-over-session-cap" => {
            assert_eq!((o.established, s.sessions), (2, 2), "{o:?}");
            assert_eq!(s.handshakes_refused_over_cap, 1, "{o:?}");
        }
        "bad-replayed-client-flight" => {
            assert_eq!((s.handshakes_failed, s.sessions), (1, 0), "{o:?}");
        }
        n if n.starts_with("bad-") => {
            assert_eq!((o.transmits, s.cookies_sent), (0, 0), "{n}: {o:?}");
            assert!(s.datagrams_dropped >= 1, "{n}: {o:?}");
        }
        _ => {}
    }
    if (name.starts_with("bad-") || name.starts_with("ok-")) && !name.starts_with("ok-real-") {
        assert_eq!(
            o.established, 0,
            "{name}: only a real client finishes a handshake"
        );
    }
}

#[test]
fn every_file_in_the_dtls_corpus_passes_the_fuzz_target() {
    if std::env::var_os("COAPGATE_WRITE_SEEDS").is_some() {
        write_seeds();
    }
    let corpus = coapgate_testkit::fuzz_corpus("dtls");
    assert!(corpus.iter().any(|(n, _)| n.starts_with("ok-")));
    for (name, data) in corpus {
        let outcome = fuzzing::run(&data);
        expectation(&name, &outcome);
    }
}

/// Captures real datagrams from OpenSSL's client and writes the seeds.
fn write_seeds() {
    let dir = coapgate_testkit::corpus_dir("dtls");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
    let client =
        |suite: &str| Client::new(support::addr(0), suite, fuzzing::IDENTITY, fuzzing::KEY);
    let hello = |suite: &str| client(suite).step().remove(0);

    for (suite, short) in SUITES.iter().zip(["ccm8", "cbc-sha256", "gcm"]) {
        write(
            &format!("ok-clienthello-{short}"),
            step_datagram(0, &hello(suite)),
        );
    }
    // OpenSSL's client offering all three suites.
    let all = hello(&SUITES.join(":"));
    write("ok-with-cookie", step_with_cookie(0, &all));
    // Peer 128 % 3 = 2, with the harness refusing: no handshake state.
    write("ok-with-cookie-refused", step_with_cookie(128, &all));
    let mut deadline = step_with_cookie(1, &all);
    deadline.extend_from_slice(&[4, 51]); // 5.1 s > the 5 s deadline
    write("ok-with-cookie-then-deadline", deadline);
    let mut three = Vec::new();
    for p in 0..3 {
        three.extend(step_with_cookie(p, &hello(SUITES[1])));
    }
    write("ok-three-peers-over-cap", three);

    // A full handshake against a server of its own yields a second
    // ClientHello (cookie from another secret) and the client's last
    // flight (whose Finished no other server can verify).
    let mut pair = Pair::new(
        DtlsConfig::default(),
        Table::with(fuzzing::IDENTITY, fuzzing::KEY),
    );
    let c = pair.add(client(SUITES[1]));
    pair.pump();
    assert!(pair.clients[c].connected);
    assert!(matches!(pair.events[0], DtlsEvent::Established { .. }));
    let sent = &pair.clients[c].sent;
    write("ok-stale-cookie", step_datagram(0, &sent[1]));
    let mut flight = step_with_cookie(0, &sent[1]);
    for d in &sent[2..] {
        flight.extend(step_datagram(0, d));
    }
    write("bad-replayed-client-flight", flight);

    // Scripts with OpenSSL's own client inside the harness (ops 8 and 9).
    write(
        "ok-real-handshake-then-data",
        [step_real_handshake(0, 1), step_real_data(0, 3)].concat(),
    );
    write(
        "ok-real-rehandshake",
        [
            step_real_handshake(1, 0),
            step_real_handshake(1, 2),
            step_real_data(1, 0),
        ]
        .concat(),
    );
    write(
        "ok-real-handshakes-over-session-cap",
        [
            step_real_handshake(0, 0),
            step_real_handshake(1, 1),
            step_real_handshake(2, 2),
        ]
        .concat(),
    );

    write(
        "bad-garbage",
        step_datagram(1, b"\x16\xfe\xfd garbage, not a record"),
    );
    write("bad-truncated-clienthello", step_datagram(0, &all[..40]));
    let mut fragmented = all.clone();
    fragmented[13 + 8] = 1; // fragment offset 1
    write("bad-fragmented-clienthello", step_datagram(0, &fragmented));
    let mut app = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 4];
    app.extend_from_slice(b"data");
    write(
        "bad-application-data-from-a-stranger",
        step_datagram(2, &app),
    );
}
