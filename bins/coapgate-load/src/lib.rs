//! The core of `coapgate-load`, a CoAP load generator for coapgate.
//!
//! It plays `devices` cellular modems at once, each from its own loopback
//! address (127.0.0.2, 127.0.0.3, …: one UDP socket per device, bound to
//! `127.0.0.x:0`), so that coapgate identifies every one of them by source
//! IP just as it identifies SIMs. Every device keeps up to `concurrency`
//! requests outstanding (a real modem keeps one) until `requests` have been
//! sent in all, or `duration` has passed.
//!
//! Each request is a `POST /data?t=load` with a message ID unique to its
//! device and a 4-byte token. A confirmable request is retransmitted as
//! RFC 7252 §4.2 says (ACK_TIMEOUT 2 s, ACK_RANDOM_FACTOR 1.5,
//! MAX_RETRANSMIT 4 by default); an empty ACK stops the retransmissions, and
//! the separate response that follows is acknowledged. The [`Report`] gives
//! the responses by code, retransmissions, timeouts and the latency
//! percentiles (from the first transmission to the response).
//!
//! ```no_run
//! # async fn demo() -> Result<(), coapgate_load::LoadError> {
//! let config = coapgate_load::LoadConfig {
//!     target: "127.0.0.1:5683".parse().expect("an address"),
//!     devices: 3,
//!     requests: 300,
//!     ..coapgate_load::LoadConfig::default()
//! };
//! let report = coapgate_load::run(&config).await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```
//!
//! coapgate only answers devices it knows: [`device_config`] prints the
//! `[[device]]` blocks for the same addresses.
//!
//! # CoAPS
//!
//! With [`LoadConfig::dtls`] set, every device is a DTLS 1.2 PSK client
//! (OpenSSL's, with the device's ICCID as PSK identity and
//! [`device_psk`] or one common key; [`dtls_device_config`] prints the
//! `[[device]]` blocks with `psk = "…"`). Two measurements:
//!
//! - [`DtlsOptions::handshakes`] `= Some(n)`: `n` fresh full handshakes over
//!   all devices, each from a new socket (new source port) and closed with
//!   close_notify; the [`Report`] gives handshakes/s and their latency.
//! - otherwise one session per device is established first (at most
//!   [`DtlsOptions::parallel_handshakes`] at once), then the requests run
//!   over those sessions exactly as in plain mode, and the sessions are
//!   closed with close_notify at the end. Throughput and latency count the
//!   request phase only.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coapgate_codec::{self as codec, CoapOption, MessageClass, MessageType, Packet, RequestType};
use tokio::net::UdpSocket;
use tokio::time::Instant;

mod dtls;

pub use dtls::{DEFAULT_CIPHER, DtlsOptions, device_psk};

/// The address of device 0; device `i` is this address plus `i`.
pub const FIRST_DEVICE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The ICCID of device 0; device `i` has this number plus `i`.
pub const FIRST_ICCID: u64 = 8_988_280_666_000_000_000;

/// Message IDs one device socket can use before it would have to reuse one
/// within EXCHANGE_LIFETIME (which coapgate would answer from its cache).
const MESSAGE_IDS: u64 = 1 << 16;

/// The largest datagram the generator reads.
const MAX_DATAGRAM: usize = 2048;

/// Why a load run could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// The configuration is not usable (the text says why).
    Config(String),
    /// A device socket could not be bound.
    Bind {
        /// The address it was to be bound to.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A request could not be encoded (a bug: the generator builds them).
    Encode(codec::EncodeError),
    /// A device task ended abnormally.
    Task(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Config(text) => write!(f, "configuration: {text}"),
            LoadError::Bind { addr, source } => write!(
                f,
                "cannot bind {addr}: {source} (every 127.0.0.0/8 address is loopback on Linux; elsewhere add the aliases)"
            ),
            LoadError::Encode(error) => write!(f, "cannot encode a request: {error}"),
            LoadError::Task(text) => write!(f, "device task failed: {text}"),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Bind { source, .. } => Some(source),
            LoadError::Encode(error) => Some(error),
            LoadError::Config(_) | LoadError::Task(_) => None,
        }
    }
}

/// The source address of device `index` (counting from 0).
pub fn device_ip(index: usize) -> Result<Ipv4Addr, LoadError> {
    u32::try_from(index)
        .ok()
        .and_then(|i| u32::from(FIRST_DEVICE_IP).checked_add(i))
        .map(Ipv4Addr::from)
        .filter(|ip| ip.is_loopback())
        .ok_or_else(|| LoadError::Config(format!("device {index} is beyond 127.255.255.255")))
}

/// The ICCID of device `index` (counting from 0).
pub fn device_iccid(index: usize) -> String {
    (FIRST_ICCID + index as u64).to_string()
}

/// coapgate `[[device]]` TOML blocks for devices `0..devices`: ICCID
/// [`FIRST_ICCID`] + i at [`FIRST_DEVICE_IP`] + i.
pub fn device_config(devices: usize) -> Result<String, LoadError> {
    let mut text = String::new();
    for index in 0..devices {
        text.push_str(&format!(
            "[[device]]\niccid = \"{}\"\nip = \"{}\"\n",
            device_iccid(index),
            device_ip(index)?
        ));
    }
    Ok(text)
}

/// Like [`device_config`], each block with the device's PSK for CoAPS:
/// `psk` when given (one key for all), else [`device_psk`]`(i)`.
pub fn dtls_device_config(devices: usize, psk: Option<&str>) -> Result<String, LoadError> {
    let mut text = String::new();
    for index in 0..devices {
        text.push_str(&format!(
            "[[device]]\niccid = \"{}\"\nip = \"{}\"\npsk = {}\n",
            device_iccid(index),
            device_ip(index)?,
            dtls::toml_string(&dtls::key_of(psk, index))
        ));
    }
    Ok(text)
}

/// RFC 7252 §4.8 transmission parameters of the simulated devices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transmission {
    /// ACK_TIMEOUT.
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR (≥ 1).
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT.
    pub max_retransmit: u32,
}

impl Default for Transmission {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
        }
    }
}

impl Transmission {
    /// MAX_TRANSMIT_WAIT (93 s with the defaults): how long a device waits
    /// for a response after the first transmission or after an empty ACK.
    pub fn max_transmit_wait(&self) -> Duration {
        let factor = f64::from((1u32 << (self.max_retransmit + 1).min(31)) - 1);
        self.ack_timeout
            .mul_f64(factor * self.ack_random_factor.max(1.0))
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// coapgate's CoAP address.
    pub target: SocketAddr,
    /// Simulated devices (source addresses from [`FIRST_DEVICE_IP`]).
    pub devices: usize,
    /// Requests to send in all.
    pub requests: u64,
    /// Outstanding requests per device.
    pub concurrency: usize,
    /// Payload bytes per request.
    pub payload_size: usize,
    /// Upper bound of the whole run; what is outstanding then is counted as
    /// unfinished.
    pub duration: Duration,
    /// Send NON requests instead of CON ones.
    pub non: bool,
    /// Requests per second over all devices; `None`: as fast as answers come.
    pub rate: Option<f64>,
    /// The devices' transmission parameters.
    pub transmission: Transmission,
    /// How long to wait for a response after an empty ACK, or after a NON
    /// request; `None`: MAX_TRANSMIT_WAIT.
    pub response_timeout: Option<Duration>,
    /// `Some`: CoAPS, `target` is coapgate's DTLS address.
    pub dtls: Option<DtlsOptions>,
    /// The server's process ID, when it runs on this host: its CPU time and
    /// memory are read from `/proc/PID/{stat,status}` at the start, once
    /// the sessions are established, and at the end ([`Report::server`]).
    pub server_pid: Option<u32>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            target: SocketAddr::from(([127, 0, 0, 1], 5683)),
            devices: 1,
            requests: 1000,
            concurrency: 1,
            payload_size: 100,
            duration: Duration::from_secs(60),
            non: false,
            rate: None,
            transmission: Transmission::default(),
            response_timeout: None,
            dtls: None,
            server_pid: None,
        }
    }
}

impl LoadConfig {
    fn validate(&self) -> Result<(), LoadError> {
        let fail = |text: &str| Err(LoadError::Config(text.to_owned()));
        if self.devices == 0 {
            return fail("at least one device");
        }
        if self.concurrency == 0 {
            return fail("concurrency is at least 1");
        }
        if self.payload_size > 1024 {
            return fail("payload size above 1024 bytes (coapgate answers 4.13 by default)");
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return fail("rate must be a positive number of requests per second");
        }
        if self.transmission.ack_timeout.is_zero() || self.transmission.max_retransmit > 20 {
            return fail("ack_timeout above 0 and max_retransmit at most 20");
        }
        if let Some(dtls) = &self.dtls {
            if dtls.parallel_handshakes == 0 || dtls.handshake_timeout.is_zero() {
                return fail("parallel handshakes and the handshake timeout above 0");
            }
            if !(256..=16_384).contains(&dtls.mtu) {
                return fail("DTLS MTU must be 256..=16384");
            }
            if dtls
                .psk
                .as_ref()
                .is_some_and(|k| k.is_empty() || k.len() > 256)
            {
                return fail("a PSK is 1 to 256 bytes");
            }
        }
        device_ip(self.devices - 1).map(|_| ())
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Requests sent (first transmissions).
    pub sent: u64,
    /// Responses by code (`"2.04"` …), piggybacked or separate.
    pub responses: BTreeMap<String, u64>,
    /// Retransmissions of requests.
    pub retransmissions: u64,
    /// Empty ACKs received (the response follows separately).
    pub empty_acks: u64,
    /// Responses that came separately (after an empty ACK, or to NONs).
    pub separate_responses: u64,
    /// Requests answered with RST.
    pub resets: u64,
    /// Requests given up: no ACK after MAX_RETRANSMIT, or no response within
    /// the response timeout.
    pub timeouts: u64,
    /// Requests still outstanding when the duration ran out.
    pub unfinished: u64,
    /// Duplicate responses and ACKs (answered, but already counted).
    pub duplicates: u64,
    /// Datagrams that were no CoAP or matched no request.
    pub unexpected: u64,
    /// Socket errors on send or receive.
    pub io_errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency of every response, first transmission to response, sorted.
    pub latencies: Vec<Duration>,
    /// A CoAPS run: the handshake fields below mean something.
    pub dtls: bool,
    /// DTLS handshakes that completed.
    pub handshakes: u64,
    /// Failed handshakes by reason (OpenSSL's reason text, or `handshake
    /// timeout`).
    pub handshake_failures: BTreeMap<String, u64>,
    /// Wall time of the handshakes (the whole run in the handshake
    /// benchmark; before the requests otherwise).
    pub handshake_elapsed: Duration,
    /// Latency of every completed handshake, sorted.
    pub handshake_latencies: Vec<Duration>,
    /// Sessions the server closed (close_notify or a fatal alert) while
    /// requests were running over them.
    pub sessions_lost: u64,
    /// The server process at the start, after the handshakes (sessions
    /// open), and at the end; with [`LoadConfig::server_pid`] only.
    pub server: Option<[ProcSample; 3]>,
}

/// CPU time and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// utime + stime, in clock ticks (USER_HZ, 100 per second on Linux).
    pub cpu_ticks: u64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS so far), KiB.
    pub hwm_kib: u64,
}

/// USER_HZ: the unit of `/proc/PID/stat` times, fixed at 100 by the Linux
/// ABI.
const USER_HZ: f64 = 100.0;

impl ProcSample {
    /// Reads process `pid`; `None` when it is not there (or not Linux).
    pub fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the parenthesised command name: state is field 3, utime 14,
        // stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        };
        Some(Self {
            cpu_ticks: utime + stime,
            rss_kib: kib("VmRSS:")?,
            hwm_kib: kib("VmHWM:")?,
        })
    }
}

/// The value at percentile `p` (0 to 100, nearest rank) of sorted `values`.
fn nearest_rank(values: &[Duration], p: f64) -> Option<Duration> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    values.get(rank.clamp(1, n) - 1).copied()
}

impl Report {
    /// Responses received, any code.
    pub fn answered(&self) -> u64 {
        self.responses.values().sum()
    }

    /// Responses with this code (`"2.04"`).
    pub fn count(&self, code: &str) -> u64 {
        self.responses.get(code).copied().unwrap_or(0)
    }

    /// Responses per second over the run.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.answered() as f64 / secs
        } else {
            0.0
        }
    }

    /// The latency at percentile `p` (0 to 100, nearest rank); `None`
    /// without responses.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        nearest_rank(&self.latencies, p)
    }

    /// Handshake latency at percentile `p`; `None` without handshakes.
    pub fn handshake_percentile(&self, p: f64) -> Option<Duration> {
        nearest_rank(&self.handshake_latencies, p)
    }

    /// Failed DTLS handshakes, any reason.
    pub fn handshakes_failed(&self) -> u64 {
        self.handshake_failures.values().sum()
    }

    /// Completed handshakes per second of handshaking.
    pub fn handshake_rate(&self) -> f64 {
        let secs = self.handshake_elapsed.as_secs_f64();
        if secs > 0.0 {
            self.handshakes as f64 / secs
        } else {
            0.0
        }
    }

    /// The report as JSON (latencies in microseconds).
    pub fn to_json(&self) -> serde_json::Value {
        let us = |p: f64| self.percentile(p).map(|d| d.as_micros() as u64);
        let hs = |p: f64| self.handshake_percentile(p).map(|d| d.as_micros() as u64);
        let mut json = serde_json::json!({
            "sent": self.sent,
            "answered": self.answered(),
            "responses": self.responses,
            "retransmissions": self.retransmissions,
            "empty_acks": self.empty_acks,
            "separate_responses": self.separate_responses,
            "resets": self.resets,
            "timeouts": self.timeouts,
            "unfinished": self.unfinished,
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
            "io_errors": self.io_errors,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "throughput_per_s": self.throughput(),
            "latency_us": {
                "p50": us(50.0),
                "p90": us(90.0),
                "p99": us(99.0),
                "max": us(100.0),
            },
        });
        if let Some([start, established, end]) = self.server {
            let cpu = |a: ProcSample, b: ProcSample| {
                b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / USER_HZ
            };
            let per = |seconds: f64, n: u64| (n > 0).then(|| seconds * 1e6 / n as f64);
            let handshake_cpu = cpu(start, established);
            let request_cpu = cpu(established, end);
            json["server"] = serde_json::json!({
                "cpu_s": cpu(start, end),
                "handshake_phase_cpu_s": handshake_cpu,
                "request_phase_cpu_s": request_cpu,
                "cpu_us_per_handshake": per(handshake_cpu, self.handshakes),
                "cpu_us_per_request": per(request_cpu, self.answered()),
                "rss_kib_start": start.rss_kib,
                "rss_kib_established": established.rss_kib,
                "hwm_kib_end": end.hwm_kib,
                // Sessions stay open only when requests run over them.
                "rss_bytes_per_session": if self.sent == 0 { None } else { per(
                    (established.rss_kib.saturating_sub(start.rss_kib) * 1024) as f64 / 1e6,
                    self.handshakes
                ) },
            });
        }
        if self.dtls {
            json["dtls"] = serde_json::json!({
                "handshakes": self.handshakes,
                "handshakes_failed": self.handshakes_failed(),
                "handshake_failures": self.handshake_failures,
                "handshake_elapsed_s": self.handshake_elapsed.as_secs_f64(),
                "handshakes_per_s": self.handshake_rate(),
                "handshake_latency_us": {
                    "p50": hs(50.0),
                    "p90": hs(90.0),
                    "p99": hs(99.0),
                    "max": hs(100.0),
                },
                "sessions_lost": self.sessions_lost,
            });
        }
        json
    }

    fn merge(&mut self, other: DeviceStats) {
        self.sent += other.sent;
        for (code, &count) in other.codes.iter().enumerate() {
            if count > 0 {
                let code = code as u8;
                *self
                    .responses
                    .entry(format!("{}.{:02}", code >> 5, code & 0x1f))
                    .or_default() += count;
            }
        }
        self.retransmissions += other.retransmissions;
        self.empty_acks += other.empty_acks;
        self.separate_responses += other.separate_responses;
        self.resets += other.resets;
        self.timeouts += other.timeouts;
        self.unfinished += other.unfinished;
        self.duplicates += other.duplicates;
        self.unexpected += other.unexpected;
        self.io_errors += other.io_errors;
        self.sessions_lost += other.sessions_lost;
        self.latencies.extend(other.latencies);
    }

    fn merge_handshakes(&mut self, other: HandshakeStats) {
        self.handshakes += other.ok;
        for (reason, count) in other.failures {
            *self.handshake_failures.entry(reason).or_default() += count;
        }
        self.handshake_latencies.extend(other.latencies);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codes: Vec<String> = self
            .responses
            .iter()
            .map(|(code, n)| format!("{code}: {n}"))
            .collect();
        let us = |p: f64| {
            self.percentile(p)
                .map_or_else(|| "-".to_owned(), |d| d.as_micros().to_string())
        };
        if self.dtls {
            let hs = |p: f64| {
                self.handshake_percentile(p)
                    .map_or_else(|| "-".to_owned(), |d| d.as_micros().to_string())
            };
            let failures: Vec<String> = self
                .handshake_failures
                .iter()
                .map(|(reason, n)| format!("{reason}: {n}"))
                .collect();
            writeln!(
                f,
                "DTLS handshakes     {} ok, {} failed ({}) in {:.3} s: {:.0}/s",
                self.handshakes,
                self.handshakes_failed(),
                failures.join(", "),
                self.handshake_elapsed.as_secs_f64(),
                self.handshake_rate()
            )?;
            writeln!(
                f,
                "handshake µs        p50 {}  p90 {}  p99 {}  max {}",
                hs(50.0),
                hs(90.0),
                hs(99.0),
                hs(100.0)
            )?;
            writeln!(f, "sessions lost       {}", self.sessions_lost)?;
        }
        writeln!(f, "requests sent       {}", self.sent)?;
        writeln!(
            f,
            "responses           {} ({})",
            self.answered(),
            codes.join(", ")
        )?;
        writeln!(f, "retransmissions     {}", self.retransmissions)?;
        writeln!(
            f,
            "empty ACKs          {} (separate responses {})",
            self.empty_acks, self.separate_responses
        )?;
        writeln!(f, "resets              {}", self.resets)?;
        writeln!(f, "timeouts            {}", self.timeouts)?;
        writeln!(f, "unfinished          {}", self.unfinished)?;
        writeln!(
            f,
            "duplicates          {} (unexpected {}, socket errors {})",
            self.duplicates, self.unexpected, self.io_errors
        )?;
        writeln!(f, "elapsed             {:.3} s", self.elapsed.as_secs_f64())?;
        writeln!(
            f,
            "throughput          {:.0} responses/s",
            self.throughput()
        )?;
        write!(
            f,
            "latency µs          p50 {}  p90 {}  p99 {}  max {}",
            us(50.0),
            us(90.0),
            us(99.0),
            us(100.0)
        )
    }
}

/// Runs the load described by `config` against a running coapgate and
/// reports what happened. Returns after all requests were answered or
/// given up, or after `config.duration`, whichever comes first.
pub async fn run(config: &LoadConfig) -> Result<Report, LoadError> {
    config.validate()?;
    let sample = || config.server_pid.and_then(ProcSample::read);
    let start = sample();
    let mut report = run_phases(config, sample).await?;
    if let (Some(start), Some(end)) = (start, sample()) {
        report.server = Some([start, report.server.map_or(start, |s| s[1]), end]);
    }
    Ok(report)
}

async fn run_phases(
    config: &LoadConfig,
    sample: impl Fn() -> Option<ProcSample>,
) -> Result<Report, LoadError> {
    match &config.dtls {
        None => {
            let mut links = Vec::with_capacity(config.devices);
            for index in 0..config.devices {
                let addr = SocketAddr::new(IpAddr::V4(device_ip(index)?), 0);
                let socket = UdpSocket::bind(addr)
                    .await
                    .map_err(|source| LoadError::Bind { addr, source })?;
                links.push((index, Link::Plain(socket)));
            }
            run_devices(config, links, Report::default()).await
        }
        Some(dtls) if dtls.handshakes.is_some() => {
            let mut report = run_handshakes(config, dtls).await?;
            // The whole run is the handshake phase.
            report.server = sample().map(|s| [s; 3]);
            Ok(report)
        }
        Some(dtls) => run_sessions(config, dtls, sample).await,
    }
}

/// The requests phase: every device with its link.
async fn run_devices(
    config: &LoadConfig,
    links: Vec<(usize, Link)>,
    mut report: Report,
) -> Result<Report, LoadError> {
    let start = Instant::now();
    let shared = Arc::new(Shared {
        next_ticket: AtomicU64::new(0),
        requests: config.requests,
        rate: config.rate,
        start,
        end: start + config.duration,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (index, link) in links {
        let device = Device::new(index, link, config, shared.clone())?;
        tasks.spawn(device.run());
    }
    while let Some(joined) = tasks.join_next().await {
        let stats = joined.map_err(|e| LoadError::Task(e.to_string()))?;
        report.merge(stats);
    }
    report.elapsed = start.elapsed();
    report.latencies.sort_unstable();
    Ok(report)
}

/// CoAPS requests: one session per device first, then [`run_devices`].
async fn run_sessions(
    config: &LoadConfig,
    options: &DtlsOptions,
    sample: impl Fn() -> Option<ProcSample>,
) -> Result<Report, LoadError> {
    let client = Arc::new(dtls::Client::new(config.target, options)?);
    let permits = Arc::new(tokio::sync::Semaphore::new(options.parallel_handshakes));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..config.devices {
        let client = client.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (index, client.connect(index).await)
        });
    }
    let mut report = Report {
        dtls: true,
        ..Report::default()
    };
    let mut stats = HandshakeStats::default();
    let mut links = Vec::with_capacity(config.devices);
    while let Some(joined) = tasks.join_next().await {
        let (index, result) = joined.map_err(|e| LoadError::Task(e.to_string()))?;
        match result {
            Ok((session, latency)) => {
                stats.ok += 1;
                stats.latencies.push(latency);
                links.push((index, Link::Dtls(Box::new(session))));
            }
            Err(reason) => *stats.failures.entry(reason).or_default() += 1,
        }
    }
    report.handshake_elapsed = start.elapsed();
    report.merge_handshakes(stats);
    report.handshake_latencies.sort_unstable();
    report.server = sample().map(|s| [s; 3]);
    links.sort_by_key(|(index, _)| *index);
    run_devices(config, links, report).await
}

/// The handshake benchmark: fresh full handshakes, back to back per device.
async fn run_handshakes(config: &LoadConfig, options: &DtlsOptions) -> Result<Report, LoadError> {
    let client = Arc::new(dtls::Client::new(config.target, options)?);
    let start = Instant::now();
    let shared = Arc::new(Shared {
        next_ticket: AtomicU64::new(0),
        requests: options.handshakes.unwrap_or(0),
        rate: config.rate,
        start,
        end: start + config.duration,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..config.devices {
        let client = client.clone();
        let shared = shared.clone();
        tasks.spawn(async move {
            let mut stats = HandshakeStats::default();
            while let Some(at) = shared.claim() {
                if at >= shared.end {
                    break;
                }
                tokio::time::sleep_until(at).await;
                match client.connect(index).await {
                    Ok((session, latency)) => {
                        stats.ok += 1;
                        stats.latencies.push(latency);
                        session.close().await;
                    }
                    Err(reason) => *stats.failures.entry(reason).or_default() += 1,
                }
                if Instant::now() >= shared.end {
                    break;
                }
            }
            stats
        });
    }
    let mut report = Report {
        dtls: true,
        ..Report::default()
    };
    while let Some(joined) = tasks.join_next().await {
        report.merge_handshakes(joined.map_err(|e| LoadError::Task(e.to_string()))?);
    }
    report.handshake_elapsed = start.elapsed();
    report.elapsed = report.handshake_elapsed;
    report.handshake_latencies.sort_unstable();
    Ok(report)
}

/// One device's handshakes.
#[derive(Default)]
struct HandshakeStats {
    ok: u64,
    failures: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
}

/// How a device reaches the server.
enum Link {
    /// Plain CoAP over its own UDP socket.
    Plain(UdpSocket),
    /// CoAP over an established DTLS session (connected socket).
    Dtls(Box<dtls::Session>),
}

impl Link {
    fn socket(&self) -> &UdpSocket {
        match self {
            Link::Plain(socket) => socket,
            Link::Dtls(session) => &session.socket,
        }
    }
}

/// What all devices share: the request budget and the schedule.
struct Shared {
    next_ticket: AtomicU64,
    requests: u64,
    rate: Option<f64>,
    start: Instant,
    end: Instant,
}

impl Shared {
    /// Claims the next request; `Some(when it may be sent)`, or `None` when
    /// the budget is spent.
    fn claim(&self) -> Option<Instant> {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        if ticket >= self.requests {
            return None;
        }
        Some(match self.rate {
            Some(rate) => self.start + Duration::from_secs_f64(ticket as f64 / rate),
            None => self.start,
        })
    }
}

/// One device's counters.
struct DeviceStats {
    sent: u64,
    codes: [u64; 256],
    retransmissions: u64,
    empty_acks: u64,
    separate_responses: u64,
    resets: u64,
    timeouts: u64,
    unfinished: u64,
    duplicates: u64,
    unexpected: u64,
    io_errors: u64,
    sessions_lost: u64,
    latencies: Vec<Duration>,
}

/// A request awaiting its answer.
struct Exchange {
    message_id: u16,
    token: u32,
    bytes: Vec<u8>,
    first_sent: Instant,
    retransmits: u32,
    timeout: Duration,
    /// When to retransmit, or to give up.
    next_at: Instant,
    /// An empty ACK came: no more retransmissions, wait for the response.
    acknowledged: bool,
}

/// One simulated modem.
struct Device {
    link: Link,
    /// Decrypted records (DTLS only).
    plain: Vec<u8>,
    target: SocketAddr,
    shared: Arc<Shared>,
    concurrency: usize,
    non: bool,
    transmission: Transmission,
    response_timeout: Duration,
    payload: Vec<u8>,
    next_message_id: u16,
    message_ids_used: u64,
    next_token: u32,
    /// A cheap generator for the retransmission jitter (xorshift).
    jitter_state: u64,
    outstanding: Vec<Exchange>,
    stats: DeviceStats,
}

impl Device {
    fn new(
        index: usize,
        link: Link,
        config: &LoadConfig,
        shared: Arc<Shared>,
    ) -> Result<Self, LoadError> {
        let payload = (0..config.payload_size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let plain = match link {
            Link::Plain(_) => Vec::new(),
            Link::Dtls(_) => vec![0u8; MAX_DATAGRAM],
        };
        let device = Self {
            link,
            plain,
            target: config.target,
            shared,
            concurrency: config.concurrency,
            non: config.non,
            transmission: config.transmission,
            response_timeout: config
                .response_timeout
                .unwrap_or_else(|| config.transmission.max_transmit_wait()),
            payload,
            next_message_id: (index as u16).wrapping_mul(7919),
            message_ids_used: 0,
            next_token: 0,
            jitter_state: 0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1),
            outstanding: Vec::with_capacity(config.concurrency),
            stats: DeviceStats {
                sent: 0,
                codes: [0; 256],
                retransmissions: 0,
                empty_acks: 0,
                separate_responses: 0,
                resets: 0,
                timeouts: 0,
                unfinished: 0,
                duplicates: 0,
                unexpected: 0,
                io_errors: 0,
                sessions_lost: 0,
                latencies: Vec::new(),
            },
        };
        // Fail before the run starts if requests cannot be encoded.
        device.request(0, 0)?;
        Ok(device)
    }

    async fn run(mut self) -> DeviceStats {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut slot: Option<Instant> = None;
        let mut exhausted = false;
        loop {
            let now = Instant::now();
            if now >= self.shared.end || self.session_lost() {
                self.stats.unfinished += self.outstanding.len() as u64;
                break;
            }
            self.on_timers(now).await;
            while self.outstanding.len() < self.concurrency && !exhausted {
                let at = match slot {
                    Some(at) => at,
                    None if self.message_ids_used >= MESSAGE_IDS => {
                        exhausted = true;
                        break;
                    }
                    None => match self.shared.claim() {
                        Some(at) => *slot.insert(at),
                        None => {
                            exhausted = true;
                            break;
                        }
                    },
                };
                if at > now {
                    break;
                }
                slot = None;
                self.send_request(now).await;
            }
            if exhausted && self.outstanding.is_empty() {
                break;
            }
            let mut wake = self.shared.end;
            for exchange in &self.outstanding {
                wake = wake.min(exchange.next_at);
            }
            if let Some(at) = slot
                && self.outstanding.len() < self.concurrency
            {
                wake = wake.min(at);
            }
            tokio::select! {
                received = self.link.socket().recv_from(&mut buf) => match received {
                    Ok((len, from)) => {
                        let now = Instant::now();
                        self.on_wire(now, from, &buf[..len]).await;
                        // Whatever else is queued, without waking up again.
                        for _ in 0..64 {
                            match self.link.socket().try_recv_from(&mut buf) {
                                Ok((len, from)) => self.on_wire(now, from, &buf[..len]).await,
                                Err(_) => break,
                            }
                        }
                    }
                    Err(_) => {
                        self.stats.io_errors += 1;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                },
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        if let Link::Dtls(session) = self.link {
            if session.closed {
                self.stats.sessions_lost += 1;
            }
            session.close().await;
        }
        self.stats
    }

    fn session_lost(&self) -> bool {
        matches!(&self.link, Link::Dtls(session) if session.closed)
    }

    /// A datagram from the socket: CoAP itself, or DTLS records to decrypt.
    async fn on_wire(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if matches!(self.link, Link::Plain(_)) {
            return self.on_datagram(now, from, data).await;
        }
        let mut plain = std::mem::take(&mut self.plain);
        if let Link::Dtls(session) = &mut self.link {
            session.feed(data);
        }
        while let Link::Dtls(session) = &mut self.link {
            let Some(len) = session.read(&mut plain) else {
                session.flush_quietly().await;
                break;
            };
            // A connected socket hears only the target.
            self.on_datagram(now, from, &plain[..len]).await;
        }
        self.plain = plain;
    }

    /// The request with this message ID and token.
    fn request(&self, message_id: u16, token: u32) -> Result<Vec<u8>, LoadError> {
        let mut packet = Packet::new();
        packet.header.set_type(if self.non {
            MessageType::NonConfirmable
        } else {
            MessageType::Confirmable
        });
        packet.header.code = MessageClass::Request(RequestType::Post);
        packet.header.message_id = message_id;
        codec::set_token(&mut packet, &token.to_be_bytes()).map_err(LoadError::Encode)?;
        packet.add_option(CoapOption::UriPath, b"data".to_vec());
        packet.add_option(CoapOption::UriQuery, b"t=load".to_vec());
        packet.payload = self.payload.clone();
        codec::encode(&packet).map_err(LoadError::Encode)
    }

    /// A uniform number in [0, 1).
    fn jitter(&mut self) -> f64 {
        let mut x = self.jitter_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter_state = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    async fn send_request(&mut self, now: Instant) {
        let message_id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1);
        self.message_ids_used += 1;
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        let Ok(bytes) = self.request(message_id, token) else {
            // Checked in `new`: the same packet with other numbers encodes.
            self.stats.unexpected += 1;
            return;
        };
        let t = self.transmission;
        let timeout = t
            .ack_timeout
            .mul_f64(1.0 + (t.ack_random_factor - 1.0).max(0.0) * self.jitter());
        self.transmit(&bytes).await;
        self.stats.sent += 1;
        self.outstanding.push(Exchange {
            message_id,
            token,
            bytes,
            first_sent: now,
            retransmits: 0,
            timeout,
            next_at: now
                + if self.non {
                    self.response_timeout
                } else {
                    timeout
                },
            acknowledged: false,
        });
    }

    async fn transmit(&mut self, bytes: &[u8]) {
        let target = self.target;
        let sent = match &mut self.link {
            Link::Plain(socket) => socket.send_to(bytes, target).await.map(|_| ()),
            Link::Dtls(session) => session.send(bytes).await,
        };
        if sent.is_err() {
            self.stats.io_errors += 1;
        }
    }

    /// Retransmissions and give-ups that are due.
    async fn on_timers(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.outstanding.len() {
            let exchange = &mut self.outstanding[i];
            if exchange.next_at > now {
                i += 1;
                continue;
            }
            let may_retransmit = !self.non
                && !exchange.acknowledged
                && exchange.retransmits < self.transmission.max_retransmit;
            if may_retransmit {
                exchange.retransmits += 1;
                exchange.timeout *= 2;
                exchange.next_at = now + exchange.timeout;
                // The last retransmission waits its timeout for the ACK.
                let bytes = exchange.bytes.clone();
                self.stats.retransmissions += 1;
                self.transmit(&bytes).await;
                i += 1;
            } else {
                self.outstanding.swap_remove(i);
                self.stats.timeouts += 1;
            }
        }
    }

    async fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if from != self.target {
            self.stats.unexpected += 1;
            return;
        }
        let Ok(packet) = codec::decode(data) else {
            self.stats.unexpected += 1;
            return;
        };
        let code = u8::from(packet.header.code);
        let message_id = packet.header.message_id;
        match packet.header.get_type() {
            MessageType::Acknowledgement | MessageType::Reset => {
                let Some(i) = self
                    .outstanding
                    .iter()
                    .position(|e| e.message_id == message_id)
                else {
                    self.stats.duplicates += 1;
                    return;
                };
                if packet.header.get_type() == MessageType::Reset {
                    self.outstanding.swap_remove(i);
                    self.stats.resets += 1;
                } else if code == 0 {
                    let exchange = &mut self.outstanding[i];
                    if !exchange.acknowledged {
                        exchange.acknowledged = true;
                        exchange.next_at = now + self.response_timeout;
                        self.stats.empty_acks += 1;
                    }
                } else if token_of(&packet) == Some(self.outstanding[i].token) {
                    self.complete(i, now, code, false);
                } else {
                    self.stats.unexpected += 1;
                }
            }
            MessageType::Confirmable | MessageType::NonConfirmable => {
                if packet.header.get_type() == MessageType::Confirmable {
                    // ACK every CON, duplicates too (RFC 7252 §4.5).
                    self.transmit(&codec::empty_ack(message_id)).await;
                }
                if !(2..=5).contains(&(code >> 5)) {
                    self.stats.unexpected += 1;
                    return;
                }
                let token = token_of(&packet);
                match self.outstanding.iter().position(|e| Some(e.token) == token) {
                    Some(i) => self.complete(i, now, code, true),
                    None => self.stats.duplicates += 1,
                }
            }
        }
    }

    fn complete(&mut self, i: usize, now: Instant, code: u8, separate: bool) {
        let exchange = self.outstanding.swap_remove(i);
        self.stats.codes[usize::from(code)] += 1;
        if separate {
            self.stats.separate_responses += 1;
        }
        self.stats
            .latencies
            .push(now.saturating_duration_since(exchange.first_sent));
    }
}

/// The token as the generator makes them (4 bytes, big-endian).
fn token_of(packet: &Packet) -> Option<u32> {
    let token: [u8; 4] = packet.get_token().try_into().ok()?;
    Some(u32::from_be_bytes(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_count_up_from_127_0_0_2() {
        assert_eq!(device_ip(0).unwrap(), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(device_ip(254).unwrap(), Ipv4Addr::new(127, 0, 1, 0));
        assert!(device_ip(usize::MAX).is_err());
        assert_eq!(device_iccid(3), "8988280666000000003");
        let toml = device_config(2).unwrap();
        assert_eq!(
            toml,
            "[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\n\
             [[device]]\niccid = \"8988280666000000001\"\nip = \"127.0.0.3\"\n"
        );
    }

    #[test]
    fn max_transmit_wait_is_93_s_by_default() {
        assert_eq!(
            Transmission::default().max_transmit_wait(),
            Duration::from_secs(93)
        );
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let report = Report {
            latencies: (1..=100).map(Duration::from_micros).collect(),
            ..Report::default()
        };
        assert_eq!(report.percentile(50.0), Some(Duration::from_micros(50)));
        assert_eq!(report.percentile(99.0), Some(Duration::from_micros(99)));
        assert_eq!(report.percentile(100.0), Some(Duration::from_micros(100)));
        assert_eq!(report.percentile(0.0), Some(Duration::from_micros(1)));
        assert_eq!(Report::default().percentile(50.0), None);
    }
}
