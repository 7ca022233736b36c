//! Replays the committed fuzz corpus (`fuzz/corpus/endpoint/`) through the
//! `endpoint` fuzz target's own body, so every `cargo test` re-checks the
//! seeds and any past findings without libFuzzer or nightly.
//!
//! The hand-made seeds are written here, as scripts of steps, together with
//! what each must do (the datagrams the engine sends, the publishes it asks
//! for). The committed files must equal these scripts' bytes; after changing
//! a seed, rewrite the files with
//! `COAPGATE_WRITE_SEEDS=1 cargo test -p coapgate-endpoint --test fuzz_corpus`.
//! Names follow the corpus rule: `ok-*` scripts are traffic the engine
//! serves, `bad-*` scripts are traffic it refuses, `finding-*` are past
//! fuzzing findings.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use coapgate_endpoint::codec::{self, CoapOption, MessageClass, MessageType, Packet, RequestType};
use coapgate_endpoint::fuzzing::{self, Step};

/// A CoAP message as a device sends it.
fn message(kind: MessageType, method: RequestType, message_id: u16) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_type(kind);
    packet.header.code = MessageClass::Request(method);
    packet.header.message_id = message_id;
    packet
}

/// `CON POST /data?t=test` with token `tk` and payload `hi`.
fn con_post(message_id: u16) -> Vec<u8> {
    let mut packet = message(MessageType::Confirmable, RequestType::Post, message_id);
    codec::set_token(&mut packet, b"tk").unwrap();
    packet.add_option(CoapOption::UriPath, b"data".to_vec());
    packet.add_option(CoapOption::UriQuery, b"t=test".to_vec());
    packet.payload = b"hi".to_vec();
    codec::encode(&packet).unwrap()
}

fn deliver(link: u8, datagram: Vec<u8>) -> Step {
    Step::Deliver { link, datagram }
}

/// Verdict selectors: the first publish without a verdict.
const CONFIRM: Step = Step::Verdict(0);
const UNAVAILABLE: Step = Step::Verdict(1);

/// A hand-made seed: its script and what it must do.
struct Seed {
    name: &'static str,
    steps: Vec<Step>,
    sent: &'static [&'static str],
    publishes: usize,
}

fn seeds() -> Vec<Seed> {
    let ping = codec::encode(&{
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Empty;
        p.header.message_id = 7;
        p
    })
    .unwrap();
    let non_post = {
        let mut p = message(MessageType::NonConfirmable, RequestType::Post, 8);
        p.payload = b"non".to_vec();
        codec::encode(&p).unwrap()
    };
    let bad_option = {
        let mut p = message(MessageType::Confirmable, RequestType::Post, 9);
        p.add_option(CoapOption::from(9), b"x".to_vec()); // unknown, critical
        p.payload = b"v".to_vec();
        codec::encode(&p).unwrap()
    };
    let get_data = {
        let mut p = message(MessageType::Confirmable, RequestType::Get, 10);
        p.add_option(CoapOption::UriPath, b"data".to_vec());
        codec::encode(&p).unwrap()
    };
    let too_large = {
        let mut p = message(MessageType::Confirmable, RequestType::Post, 11);
        p.payload = vec![b'x'; fuzzing::config().max_payload + 1];
        codec::encode(&p).unwrap()
    };
    // CON POST, header only, then a payload marker and nothing: RFC 7252 §3.
    let marker_without_payload = vec![0x40, 0x02, 0x00, 0x0c, 0xff];
    vec![
        Seed {
            name: "ok-con-post-topic-confirm",
            steps: vec![deliver(0, con_post(1)), CONFIRM],
            sent: &["ACK 2.04"],
            publishes: 1,
        },
        Seed {
            name: "ok-con-duplicate-in-progress-then-replayed",
            steps: vec![
                deliver(0, con_post(2)),
                Step::Repeat(0),
                CONFIRM,
                Step::Repeat(0),
            ],
            sent: &["ACK 2.04", "ACK 2.04"],
            publishes: 1,
        },
        Seed {
            name: "ok-con-same-message-id-other-port",
            steps: vec![deliver(0, con_post(3)), Step::Repeat(1), CONFIRM, CONFIRM],
            sent: &["ACK 2.04", "ACK 2.04"],
            publishes: 2,
        },
        Seed {
            name: "ok-con-duplicate-after-lifetime-is-new",
            // 307.2 s later: past EXCHANGE_LIFETIME (247 s).
            steps: vec![
                deliver(0, con_post(4)),
                CONFIRM,
                Step::Advance(255),
                Step::Repeat(0),
            ],
            sent: &["ACK 2.04"],
            publishes: 2,
        },
        Seed {
            name: "ok-non-post-confirm",
            steps: vec![deliver(0, non_post), CONFIRM, Step::Repeat(0)],
            sent: &["NON 2.04"],
            publishes: 1,
        },
        Seed {
            name: "ok-ping",
            steps: vec![deliver(0, ping)],
            sent: &["RST 0.00"],
            publishes: 0,
        },
        Seed {
            name: "ok-separate-response-after-piggyback-window",
            // 1.001 s: past the 1 s window, so an empty ACK; then the 2.04
            // goes as a separate CON and is retransmitted (no ACK comes).
            steps: vec![
                deliver(0, con_post(5)),
                Step::Advance(100),
                Step::Repeat(0),
                CONFIRM,
                Step::NextTimer,
            ],
            sent: &["ACK 0.00", "ACK 0.00", "CON 2.04", "CON 2.04"],
            publishes: 1,
        },
        Seed {
            name: "ok-broker-never-answers-5-04",
            // 9.6 s + 1.001 s: the 10 s publish timeout passes (before the
            // first retransmission of the 5.04 at 12 to 13 s); a late
            // verdict is ignored.
            steps: vec![
                deliver(0, con_post(6)),
                Step::Advance(131),
                Step::Advance(100),
                Step::Verdict(0x80),
            ],
            sent: &["ACK 0.00", "CON 5.04"],
            publishes: 1,
        },
        Seed {
            name: "bad-broker-unavailable-5-02",
            steps: vec![deliver(0, con_post(13)), UNAVAILABLE],
            sent: &["ACK 5.02"],
            publishes: 1,
        },
        Seed {
            name: "bad-broker-down",
            steps: vec![Step::FlipBroker, deliver(0, con_post(14)), Step::Repeat(0)],
            sent: &["ACK 5.02", "ACK 5.02"],
            publishes: 0,
        },
        Seed {
            name: "bad-critical-option",
            steps: vec![deliver(0, bad_option)],
            sent: &["ACK 4.02"],
            publishes: 0,
        },
        Seed {
            name: "bad-unknown-device",
            steps: vec![deliver(2, con_post(15))],
            sent: &["ACK 4.01"],
            publishes: 0,
        },
        Seed {
            name: "bad-get-data-method-not-allowed",
            steps: vec![deliver(0, get_data)],
            sent: &["ACK 4.05"],
            publishes: 0,
        },
        Seed {
            name: "bad-payload-too-large",
            steps: vec![deliver(1, too_large)],
            sent: &["ACK 4.13"],
            publishes: 0,
        },
        Seed {
            name: "bad-payload-marker-without-payload",
            steps: vec![deliver(0, marker_without_payload)],
            sent: &["RST 0.00"],
            publishes: 0,
        },
        Seed {
            name: "bad-overload-5-03",
            // max_pending is 8: the ninth publish is refused.
            steps: (0..9).map(|mid| deliver(0, con_post(100 + mid))).collect(),
            sent: &["ACK 5.03"],
            publishes: 8,
        },
    ]
}

#[test]
fn every_seed_does_what_its_name_says() {
    for seed in seeds() {
        let trace = fuzzing::run(&fuzzing::encode(&seed.steps));
        assert_eq!(trace.sent, seed.sent, "{}: datagrams sent", seed.name);
        assert_eq!(trace.publishes, seed.publishes, "{}: publishes", seed.name);
    }
}

#[test]
fn scripts_parse_back_to_their_steps() {
    for seed in seeds() {
        assert_eq!(
            fuzzing::parse(&fuzzing::encode(&seed.steps)),
            seed.steps,
            "{}",
            seed.name
        );
    }
    // A script cut short still runs: missing bytes read as 0.
    assert_eq!(fuzzing::parse(&[5]), [Step::Advance(0)]);
    assert_eq!(
        fuzzing::parse(&[8, 3, 0x40]),
        [Step::Deliver {
            link: 0,
            datagram: vec![0x40]
        }]
    );
}

#[test]
fn the_committed_seeds_are_the_scripts_above() {
    coapgate_testkit::check_seeds(
        "endpoint",
        seeds()
            .into_iter()
            .map(|seed| (seed.name.to_owned(), fuzzing::encode(&seed.steps))),
    );
}

#[test]
fn every_file_in_the_endpoint_corpus_passes_the_fuzz_target() {
    for (_, data) in coapgate_testkit::fuzz_corpus("endpoint") {
        fuzzing::endpoint(&data);
    }
}
