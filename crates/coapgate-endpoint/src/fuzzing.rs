//! The body of the `endpoint` fuzz target: a script of events driven through
//! one [`Endpoint`], with the invariants every run must keep.
//!
//! Public (but hidden from the docs) so that `cargo test` replays the
//! committed corpus in `fuzz/corpus/endpoint/` through exactly the same
//! checks as `cargo fuzz run endpoint`. A panic here is a finding.
//!
//! # Script format
//!
//! The input is a sequence of steps. Each step starts with one byte whose
//! value modulo 8 picks the action; the bytes the action needs follow. An
//! input that ends inside a step finishes that step with what is there
//! (missing argument bytes read as 0, a datagram is cut short).
//!
//! | `op % 8` | action | argument bytes |
//! |---|---|---|
//! | 0, 1, 2 | deliver a datagram from link `op % 8` (see [`LINKS`]) | length `n`, then `n` bytes |
//! | 3 | report the broker's verdict on a publish | selector `s` (see [`Step::Verdict`]) |
//! | 4 | flip the broker connection (it starts connected) | — |
//! | 5 | advance the clock, firing every timer on the way | `d` (see [`advance_millis`]) |
//! | 6 | deliver the last datagram again, from link `l % 3` | `l` |
//! | 7 | advance the clock to the next timer, if any | — |
//!
//! After every step the harness drains [`Endpoint::poll_output`] until it
//! returns [`Output::Timeout`], as the engine's contract says, and checks:
//!
//! - every datagram sent decodes with [`coapgate_codec::decode`] and goes to
//!   a link that sent something;
//! - a datagram in never yields more than one datagram out, and never both
//!   an answer and a publish (no answer before the broker spoke); only
//!   datagrams yield publishes, at most one each, with fresh IDs and the
//!   deadline `now + publish_timeout`;
//! - a request that was published is not published again from the same
//!   link with the same message ID within its deduplication lifetime (247 s
//!   for CON, 145 s for NON), unless the bounded cache evicted entries
//!   meanwhile (then a duplicate counts as new, by design);
//! - a verdict on a publish still pending gives exactly one response, to
//!   the request's link and token, with the verdict's code (2.04, 5.02,
//!   5.04), piggybacked on the ACK inside the piggyback window and separate
//!   (CON, or NON for a NON request) after it; a verdict on anything else
//!   gives nothing;
//! - a 2.04 is only ever sent as that response to a `Confirmed` verdict, or
//!   as a byte-identical repeat (replay, retransmission) of one sent to the
//!   same link before;
//! - the engine's pending publishes are exactly those without a verdict
//!   whose deadline has not passed, never more than `max_pending`; the
//!   deduplication cache holds at most `max_entries`;
//! - [`Endpoint::poll_timeout`] is never at or before the current instant
//!   once the harness has run the timers, and never later than the earliest
//!   pending deadline.

#![doc(hidden)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use coapgate_codec::{self as codec, MessageClass, MessageType, ResponseType};
use coapgate_exchange::DedupLimits;
use coapgate_exchange::clock::{self, Timers};
use coapgate_model::{Device, DeviceDirectory, DeviceEntry, DeviceStatus};

use crate::{Endpoint, EndpointConfig, Link, Output, PublishId, PublishResult, Transmit};

/// The links a script can deliver from, by index: the known device
/// (127.0.0.2) from port 5000 and from port 5001, and an address no device
/// has (127.0.0.9).
pub const LINKS: [Link; 3] = [
    Link::Udp(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        5000,
    )),
    Link::Udp(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        5001,
    )),
    Link::Udp(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)),
        5000,
    )),
];

/// The ICCID of the one known device.
pub const ICCID: &str = "8988280666000000000";

/// The engine configuration the harness uses: small bounds so that a short
/// script reaches them (8 pending publishes, 64 cache entries, 64-byte
/// payloads), spec.md timings otherwise, a fixed seed.
pub fn config() -> EndpointConfig {
    EndpointConfig {
        max_pending: 8,
        max_payload: 64,
        dedup: DedupLimits {
            max_entries: 64,
            ..DedupLimits::default()
        },
        seed: 0x00c0_a9a7_e000_0001,
        ..EndpointConfig::default()
    }
}

/// How far a clock step with argument `d` moves: `1 + 10·d` ms for `d` below
/// 128 (1 ms to 1.271 s), `2.4·(d − 127)` s above (2.4 s to 307.2 s).
pub fn advance_millis(d: u8) -> u64 {
    let d = u64::from(d);
    if d < 128 {
        1 + 10 * d
    } else {
        (d - 127) * 2_400
    }
}

/// The broker's verdicts a [`Step::Verdict`] selector picks from (`s & 3`).
pub const VERDICTS: [PublishResult; 4] = [
    PublishResult::Confirmed,
    PublishResult::Unavailable,
    PublishResult::TimedOut,
    PublishResult::TryLater,
];

/// One step of a script, as parsed from (or written to) its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Deliver `datagram` from [`LINKS`]`[link]` (`link` < 3, at most 255 bytes).
    Deliver {
        /// Index into [`LINKS`].
        link: u8,
        /// The datagram.
        datagram: Vec<u8>,
    },
    /// Report a verdict. The selector `s`: `s & 3` indexes [`VERDICTS`];
    /// `(s >> 2) & 31` indexes (modulo its length) the publishes without a
    /// verdict yet, in ID order, or, when bit 7 is set, every publish ever
    /// made (so verdicts can repeat). With nothing to pick, an ID the engine
    /// never issued is reported.
    Verdict(u8),
    /// Flip the broker connection.
    FlipBroker,
    /// Advance the clock by [`advance_millis`]`(d)`, firing timers on the way.
    Advance(u8),
    /// Deliver the last delivered datagram again, from [`LINKS`]`[l % 3]`.
    Repeat(u8),
    /// Advance the clock to [`Endpoint::poll_timeout`] (if any) and fire.
    NextTimer,
}

impl Step {
    /// Appends this step's encoding to `out`.
    ///
    /// # Panics
    ///
    /// When a [`Step::Deliver`] has a link index above 2 or a datagram longer
    /// than 255 bytes: the format cannot carry it. (Scripts are written by
    /// people and tests; the fuzzer goes through [`parse`].)
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Step::Deliver { link, datagram } => {
                assert!(*link < 3, "link index {link} is not 0, 1 or 2");
                let len = u8::try_from(datagram.len()).unwrap_or_else(|_| {
                    panic!("a datagram of {} bytes is over 255", datagram.len())
                });
                out.extend([*link, len]);
                out.extend_from_slice(datagram);
            }
            Step::Verdict(s) => out.extend([3, *s]),
            Step::FlipBroker => out.push(4),
            Step::Advance(d) => out.extend([5, *d]),
            Step::Repeat(l) => out.extend([6, *l]),
            Step::NextTimer => out.push(7),
        }
    }
}

/// Encodes a whole script.
pub fn encode(steps: &[Step]) -> Vec<u8> {
    let mut out = Vec::new();
    for step in steps {
        step.encode(&mut out);
    }
    out
}

/// Parses a script; never fails (see the module docs for short inputs).
pub fn parse(data: &[u8]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut rest = data;
    while let [op, tail @ ..] = rest {
        rest = tail;
        let mut arg = || match rest {
            [first, tail @ ..] => {
                rest = tail;
                *first
            }
            [] => 0,
        };
        let step = match op % 8 {
            link @ 0..=2 => {
                let len = usize::from(arg()).min(rest.len());
                let (datagram, tail) = rest.split_at(len);
                rest = tail;
                Step::Deliver {
                    link,
                    datagram: datagram.to_vec(),
                }
            }
            3 => Step::Verdict(arg()),
            4 => Step::FlipBroker,
            5 => Step::Advance(arg()),
            6 => Step::Repeat(arg()),
            _ => Step::NextTimer,
        };
        steps.push(step);
    }
    steps
}

/// What a run did, for tests that check a seed does what its name says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// Every datagram the engine sent, as `"ACK 2.04"`-style text
    /// (type, code), in order.
    pub sent: Vec<String>,
    /// How many publishes the engine asked for.
    pub publishes: usize,
}

impl Trace {
    /// How many sent datagrams read exactly `what` (e.g. `"CON 2.04"`).
    pub fn count(&self, what: &str) -> usize {
        self.sent.iter().filter(|s| *s == what).count()
    }
}

/// The fuzz target: runs `data` as a script (see the module docs) and panics
/// when an invariant breaks.
pub fn endpoint(data: &[u8]) {
    let _ = run(data);
}

/// Runs `data` as a script, checking every invariant; returns what happened.
pub fn run(data: &[u8]) -> Trace {
    let mut harness = Harness::new();
    for step in parse(data) {
        harness.step(step);
    }
    harness.trace
}

/// The one known device, at 127.0.0.2.
struct OneDevice(Arc<Device>);

impl DeviceDirectory for OneDevice {
    fn by_ip(&self, ip: IpAddr) -> Option<DeviceEntry> {
        (ip == self.0.ip).then(|| self.0.entry())
    }
}

/// The request a publish came from, and what the harness knows of it.
struct Origin {
    link: Link,
    message_id: u16,
    token: Vec<u8>,
    confirmable: bool,
    at: Instant,
    deadline: Instant,
    /// A verdict was reported (the engine is done with it either way).
    decided: bool,
}

/// A published request's deduplication entry, as the harness expects it.
struct Remembered {
    until: Instant,
    evictions: u64,
}

struct Harness {
    endpoint: Endpoint,
    config: EndpointConfig,
    now: Instant,
    wall: SystemTime,
    broker_up: bool,
    last_datagram: Option<Vec<u8>>,
    links_seen: HashSet<Link>,
    changed_sent: HashSet<(Link, Vec<u8>)>,
    origins: BTreeMap<PublishId, Origin>,
    remembered: HashMap<(Link, u16), Remembered>,
    trace: Trace,
}

/// Most outputs one step may yield before the drain counts as a hang.
const MAX_OUTPUTS_PER_STEP: usize = 100_000;

impl Harness {
    fn new() -> Self {
        let device = Device {
            iccid: match ICCID.parse() {
                Ok(iccid) => iccid,
                Err(error) => panic!("the harness ICCID is invalid: {error}"),
            },
            imsi: None,
            ip: LINKS[0].addr().ip(),
            status: DeviceStatus::Active,
            name: None,
        };
        let config = config();
        let mut endpoint = Endpoint::new(config.clone(), Arc::new(OneDevice(Arc::new(device))));
        endpoint.handle_broker_state(true);
        Self {
            endpoint,
            config,
            now: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            broker_up: true,
            last_datagram: None,
            links_seen: HashSet::new(),
            changed_sent: HashSet::new(),
            origins: BTreeMap::new(),
            remembered: HashMap::new(),
            trace: Trace::default(),
        }
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Deliver { link, datagram } => self.deliver(link, datagram),
            Step::Repeat(l) => {
                if let Some(datagram) = self.last_datagram.clone() {
                    self.deliver(l % 3, datagram);
                }
            }
            Step::Verdict(s) => self.verdict(s),
            Step::FlipBroker => {
                self.broker_up = !self.broker_up;
                self.endpoint.handle_broker_state(self.broker_up);
                let (sent, published) = self.drain();
                assert!(
                    sent.is_empty() && published.is_empty(),
                    "a broker state change alone made the engine act: {sent:?}"
                );
            }
            Step::Advance(d) => {
                let target = self.now + Duration::from_millis(advance_millis(d));
                self.advance_to(target);
            }
            Step::NextTimer => {
                if let Some(at) = self.endpoint.poll_timeout() {
                    self.advance_to(at.max(self.now));
                }
            }
        }
        self.check_state();
    }

    fn drain(&mut self) -> (Vec<Transmit>, Vec<crate::Publish>) {
        let mut sent = Vec::new();
        let mut published = Vec::new();
        // Bounded: one step yields a handful of outputs.
        for _ in 0..MAX_OUTPUTS_PER_STEP {
            match self.endpoint.poll_output() {
                Output::Transmit(transmit) => sent.push(transmit),
                Output::Publish(publish) => published.push(publish),
                Output::Store(write) => {
                    panic!("a harness without store asked for a store write: {write:?}")
                }
                Output::Timeout(at) => {
                    assert_eq!(
                        at,
                        self.endpoint.poll_timeout(),
                        "the drain's last word is the timer"
                    );
                    break;
                }
            }
        }
        for transmit in &sent {
            self.check_transmit(transmit);
        }
        (sent, published)
    }

    /// Decodes, labels and vets one datagram the engine sent.
    fn check_transmit(&mut self, transmit: &Transmit) {
        let packet = match codec::decode(&transmit.payload) {
            Ok(packet) => packet,
            Err(error) => panic!(
                "the engine sent invalid CoAP to {:?}: {error} ({:02x?})",
                transmit.to, transmit.payload
            ),
        };
        assert!(
            self.links_seen.contains(&transmit.to),
            "the engine sent to {:?}, which never sent anything",
            transmit.to
        );
        let code = u8::from(packet.header.code);
        let kind = match packet.header.get_type() {
            MessageType::Confirmable => "CON",
            MessageType::NonConfirmable => "NON",
            MessageType::Acknowledgement => "ACK",
            MessageType::Reset => "RST",
        };
        self.trace
            .sent
            .push(format!("{kind} {}.{:02}", code >> 5, code & 0x1f));
    }

    fn deliver(&mut self, link: u8, datagram: Vec<u8>) {
        let from = LINKS[usize::from(link % 3)];
        self.links_seen.insert(from);
        let evictions = self.endpoint.stats().dedup.evictions;
        self.endpoint
            .handle_datagram(self.now, self.wall, from, &datagram);
        let (sent, published) = self.drain();
        assert!(
            sent.len() + published.len() <= 1,
            "one datagram in gave {} out and {} publishes",
            sent.len(),
            published.len()
        );
        for transmit in &sent {
            self.check_not_a_fresh_changed(transmit);
        }
        if let Some(publish) = published.first() {
            self.trace.publishes += 1;
            let request = match codec::decode(&datagram) {
                Ok(request) => request,
                Err(error) => panic!("an undecodable datagram was published: {error}"),
            };
            let message_id = request.header.message_id;
            let confirmable = request.header.get_type() == MessageType::Confirmable;
            if let Some(before) = self.remembered.get(&(from, message_id)) {
                assert!(
                    self.now >= before.until || evictions > before.evictions,
                    "message ID {message_id} from {from:?} published twice within its lifetime \
                     ({:?} left, no eviction)",
                    before.until - self.now
                );
            }
            let params = self.config.transmission;
            let lifetime = if confirmable {
                params.exchange_lifetime()
            } else {
                params.non_lifetime()
            };
            self.remembered.insert(
                (from, message_id),
                Remembered {
                    until: self.now + lifetime,
                    evictions: self.endpoint.stats().dedup.evictions,
                },
            );
            assert!(
                !self.origins.contains_key(&publish.id),
                "publish ID {} issued twice",
                publish.id
            );
            assert_eq!(
                publish.deadline,
                self.now + self.config.publish_timeout,
                "publish deadline"
            );
            assert!(!publish.topic.is_empty(), "empty publish topic");
            self.origins.insert(
                publish.id,
                Origin {
                    link: from,
                    message_id,
                    token: request.get_token().to_vec(),
                    confirmable,
                    at: self.now,
                    deadline: publish.deadline,
                    decided: false,
                },
            );
        }
        self.last_datagram = Some(datagram);
    }

    fn verdict(&mut self, s: u8) {
        let result = VERDICTS[usize::from(s & 3)];
        let pick = usize::from((s >> 2) & 31);
        let pool: Vec<PublishId> = self
            .origins
            .iter()
            .filter(|(_, origin)| s & 0x80 != 0 || !origin.decided)
            .map(|(&id, _)| id)
            .collect();
        let id = match pool.len() {
            0 => 1_000_000 + u64::from(s),
            len => pool[pick % len],
        };
        self.endpoint.handle_publish_result(self.now, id, result);
        let (sent, published) = self.drain();
        assert!(published.is_empty(), "a verdict made a publish");
        let now = self.now;
        let window = self.config.piggyback_window;
        let Some(origin) = self
            .origins
            .get_mut(&id)
            .filter(|origin| !origin.decided && now < origin.deadline)
        else {
            assert!(
                sent.is_empty(),
                "a verdict on publish {id}, not pending, was answered: {sent:?}"
            );
            return;
        };
        origin.decided = true;
        let [response] = sent.as_slice() else {
            panic!("a verdict on pending publish {id} gave {sent:?}, not one response");
        };
        assert_eq!(response.to, origin.link, "response to the wrong link");
        let packet = match codec::decode(&response.payload) {
            Ok(packet) => packet,
            Err(error) => panic!("invalid response: {error}"),
        };
        let code = match result {
            PublishResult::Confirmed => ResponseType::Changed,
            PublishResult::Unavailable => ResponseType::BadGateway,
            PublishResult::TimedOut => ResponseType::GatewayTimeout,
            PublishResult::TryLater => ResponseType::ServiceUnavailable,
        };
        assert_eq!(packet.header.code, MessageClass::Response(code));
        assert_eq!(packet.get_token(), origin.token, "response token");
        let piggybacked = origin.confirmable && now < origin.at + window;
        let expected_type = match (origin.confirmable, piggybacked) {
            (true, true) => MessageType::Acknowledgement,
            (true, false) => MessageType::Confirmable,
            (false, _) => MessageType::NonConfirmable,
        };
        assert_eq!(packet.header.get_type(), expected_type, "response type");
        if piggybacked {
            assert_eq!(
                packet.header.message_id, origin.message_id,
                "ACK message ID"
            );
        }
        if code == ResponseType::Changed {
            self.changed_sent
                .insert((response.to, response.payload.clone()));
        }
    }

    /// A 2.04 outside a `Confirmed` verdict must repeat one sent before.
    fn check_not_a_fresh_changed(&self, transmit: &Transmit) {
        let is_changed = codec::decode(&transmit.payload)
            .is_ok_and(|p| p.header.code == MessageClass::Response(ResponseType::Changed));
        assert!(
            !is_changed
                || self
                    .changed_sent
                    .contains(&(transmit.to, transmit.payload.clone())),
            "a 2.04 to {:?} that no Confirmed verdict produced: {:02x?}",
            transmit.to,
            transmit.payload
        );
    }

    /// Lets time pass to `target`, each timer firing at its own instant
    /// (the loop every harness shares: [`clock::advance`]).
    fn advance_to(&mut self, target: Instant) {
        clock::advance(self, self.now, target);
        if target > self.now {
            self.wall += target - self.now;
            self.now = target;
        }
    }

    /// Invariants between steps.
    fn check_state(&self) {
        let stats = self.endpoint.stats();
        assert!(
            stats.pending_publishes <= self.config.max_pending,
            "{} publishes pending, max_pending is {}",
            stats.pending_publishes,
            self.config.max_pending
        );
        let pending: Vec<&Origin> = self
            .origins
            .values()
            .filter(|origin| !origin.decided && self.now < origin.deadline)
            .collect();
        assert_eq!(
            stats.pending_publishes,
            pending.len(),
            "the engine's pending publishes disagree with the verdicts and deadlines"
        );
        assert!(
            stats.dedup.entries <= self.config.dedup.max_entries,
            "{} dedup entries",
            stats.dedup.entries
        );
        let next = self.endpoint.poll_timeout();
        if let Some(at) = next {
            assert!(at > self.now, "poll_timeout is not in the future");
        }
        if let Some(deadline) = pending.iter().map(|origin| origin.deadline).min() {
            assert!(
                next.is_some_and(|at| at <= deadline),
                "poll_timeout {next:?} misses a pending deadline"
            );
        }
    }
}

impl Timers for Harness {
    fn poll_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        if now > self.now {
            self.wall += now - self.now;
            self.now = now;
        }
        self.endpoint.handle_timeout(self.now);
        let (sent, published) = self.drain();
        assert!(published.is_empty(), "a timer made a publish");
        for transmit in &sent {
            self.check_not_a_fresh_changed(transmit);
        }
        if let Some(next) = self.endpoint.poll_timeout() {
            assert!(
                next > self.now,
                "poll_timeout is {:?} before now right after handle_timeout",
                self.now - next
            );
        }
    }
}
