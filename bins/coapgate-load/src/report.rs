//! What a run measured: the counters every device and handshake task keeps
//! ([`DeviceStats`], [`HandshakeStats`]), merged into the [`Report`], which
//! prints as the text table of the command line or as its `--json` object.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::dtls::Session;
use crate::error::HandshakeError;
use crate::percentiles::{self, nearest_rank};
use crate::procfs::{self, ProcSample};

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
    /// open), and at the end; with
    /// [`LoadConfig::server_pid`](crate::LoadConfig::server_pid) only.
    pub server: Option<[ProcSample; 3]>,
}

/// One device's counters (responses by the code's byte, for speed).
#[derive(Debug)]
pub(crate) struct DeviceStats {
    pub(crate) sent: u64,
    pub(crate) codes: [u64; 256],
    pub(crate) retransmissions: u64,
    pub(crate) empty_acks: u64,
    pub(crate) separate_responses: u64,
    pub(crate) resets: u64,
    pub(crate) timeouts: u64,
    pub(crate) unfinished: u64,
    pub(crate) duplicates: u64,
    pub(crate) unexpected: u64,
    pub(crate) io_errors: u64,
    pub(crate) sessions_lost: u64,
    pub(crate) latencies: Vec<Duration>,
}

impl Default for DeviceStats {
    fn default() -> Self {
        Self {
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
        }
    }
}

/// Handshakes of one task.
#[derive(Debug, Default)]
pub(crate) struct HandshakeStats {
    ok: u64,
    failures: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
}

impl HandshakeStats {
    /// Counts one handshake; the session if it completed.
    pub(crate) fn record(
        &mut self,
        result: Result<(Session, Duration), HandshakeError>,
    ) -> Option<Session> {
        match result {
            Ok((session, latency)) => {
                self.ok += 1;
                self.latencies.push(latency);
                Some(session)
            }
            Err(reason) => {
                *self.failures.entry(reason.to_string()).or_default() += 1;
                None
            }
        }
    }
}

/// `count` per second of `elapsed`; 0 when no time passed.
fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// `2.04: 7, 4.01: 1`.
fn counts_text(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(key, n)| format!("{key}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A response code's byte as text: `0x44` is `"2.04"`.
fn code_text(code: u8) -> String {
    format!("{}.{:02}", code >> 5, code & 0x1f)
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
        per_second(self.answered(), self.elapsed)
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
        per_second(self.handshakes, self.handshake_elapsed)
    }

    /// The report as JSON (latencies in microseconds).
    pub fn to_json(&self) -> serde_json::Value {
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
            "latency_us": percentiles::json(&self.latencies),
        });
        if let Some(samples) = self.server {
            json["server"] =
                procfs::server_json(samples, self.handshakes, self.answered(), self.sent);
        }
        if self.dtls {
            json["dtls"] = serde_json::json!({
                "handshakes": self.handshakes,
                "handshakes_failed": self.handshakes_failed(),
                "handshake_failures": self.handshake_failures,
                "handshake_elapsed_s": self.handshake_elapsed.as_secs_f64(),
                "handshakes_per_s": self.handshake_rate(),
                "handshake_latency_us": percentiles::json(&self.handshake_latencies),
                "sessions_lost": self.sessions_lost,
            });
        }
        json
    }

    /// Adds one device's counters; [`Report::finish`] sorts the latencies.
    pub(crate) fn merge(&mut self, other: DeviceStats) {
        self.sent += other.sent;
        for (code, &count) in (0..=u8::MAX).zip(other.codes.iter()) {
            if count > 0 {
                *self.responses.entry(code_text(code)).or_default() += count;
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

    /// Adds one task's handshakes; [`Report::finish`] sorts the latencies.
    pub(crate) fn merge_handshakes(&mut self, other: HandshakeStats) {
        self.handshakes += other.ok;
        for (reason, count) in other.failures {
            *self.handshake_failures.entry(reason).or_default() += count;
        }
        self.handshake_latencies.extend(other.latencies);
    }

    /// Sorts the latencies, once everything is merged.
    pub(crate) fn finish(&mut self) {
        self.latencies.sort_unstable();
        self.handshake_latencies.sort_unstable();
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dtls {
            writeln!(
                f,
                "DTLS handshakes     {} ok, {} failed ({}) in {:.3} s: {:.0}/s",
                self.handshakes,
                self.handshakes_failed(),
                counts_text(&self.handshake_failures),
                self.handshake_elapsed.as_secs_f64(),
                self.handshake_rate()
            )?;
            writeln!(
                f,
                "handshake µs        {}",
                percentiles::text(&self.handshake_latencies)
            )?;
            writeln!(f, "sessions lost       {}", self.sessions_lost)?;
        }
        writeln!(f, "requests sent       {}", self.sent)?;
        writeln!(
            f,
            "responses           {} ({})",
            self.answered(),
            counts_text(&self.responses)
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
            "latency µs          {}",
            percentiles::text(&self.latencies)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CoAPS run with a bit of everything, its latencies sorted.
    fn sample() -> Report {
        let mut report = Report {
            dtls: true,
            handshake_elapsed: Duration::from_millis(1500),
            elapsed: Duration::from_millis(2500),
            sessions_lost: 1,
            server: Some([
                ProcSample {
                    cpu_ticks: 100,
                    rss_kib: 1000,
                    hwm_kib: 1100,
                },
                ProcSample {
                    cpu_ticks: 150,
                    rss_kib: 1300,
                    hwm_kib: 1400,
                },
                ProcSample {
                    cpu_ticks: 250,
                    rss_kib: 1350,
                    hwm_kib: 1500,
                },
            ]),
            ..Report::default()
        };
        let mut device = DeviceStats {
            sent: 10,
            retransmissions: 2,
            empty_acks: 3,
            separate_responses: 4,
            resets: 1,
            timeouts: 1,
            unfinished: 1,
            duplicates: 5,
            unexpected: 6,
            io_errors: 7,
            // Merged unsorted, sorted by `finish`.
            latencies: [800, 100, 700, 200, 600, 300, 500, 400]
                .map(Duration::from_micros)
                .to_vec(),
            ..DeviceStats::default()
        };
        device.codes[0x44] = 7;
        device.codes[0x81] = 1;
        report.merge(device);
        report.merge_handshakes(HandshakeStats {
            ok: 3,
            failures: BTreeMap::from([("handshake timeout".to_owned(), 2)]),
            latencies: [1200, 700, 900].map(Duration::from_micros).to_vec(),
        });
        report.finish();
        report
    }

    #[test]
    fn devices_add_up() {
        let mut report = sample();
        let mut other = DeviceStats {
            sent: 1,
            latencies: vec![Duration::from_micros(50)],
            ..DeviceStats::default()
        };
        other.codes[0x44] = 1;
        report.merge(other);
        report.finish();
        assert_eq!(report.sent, 11);
        assert_eq!(report.count("2.04"), 8);
        assert_eq!(report.count("4.01"), 1);
        assert_eq!(report.answered(), 9);
        assert_eq!(report.percentile(0.0), Some(Duration::from_micros(50)));
        assert_eq!(code_text(0xA3), "5.03");
    }

    #[test]
    fn the_text_table() {
        assert_eq!(
            sample().to_string(),
            "DTLS handshakes     3 ok, 2 failed (handshake timeout: 2) in 1.500 s: 2/s\n\
             handshake µs        p50 900  p90 1200  p99 1200  max 1200\n\
             sessions lost       1\n\
             requests sent       10\n\
             responses           8 (2.04: 7, 4.01: 1)\n\
             retransmissions     2\n\
             empty ACKs          3 (separate responses 4)\n\
             resets              1\n\
             timeouts            1\n\
             unfinished          1\n\
             duplicates          5 (unexpected 6, socket errors 7)\n\
             elapsed             2.500 s\n\
             throughput          3 responses/s\n\
             latency µs          p50 400  p90 800  p99 800  max 800"
        );
        assert_eq!(
            Report::default().to_string(),
            "requests sent       0\n\
             responses           0 ()\n\
             retransmissions     0\n\
             empty ACKs          0 (separate responses 0)\n\
             resets              0\n\
             timeouts            0\n\
             unfinished          0\n\
             duplicates          0 (unexpected 0, socket errors 0)\n\
             elapsed             0.000 s\n\
             throughput          0 responses/s\n\
             latency µs          p50 -  p90 -  p99 -  max -"
        );
    }

    #[test]
    fn the_json_object() {
        assert_eq!(
            sample().to_json().to_string(),
            r#"{"sent":10,"answered":8,"responses":{"2.04":7,"4.01":1},"retransmissions":2,"empty_acks":3,"separate_responses":4,"resets":1,"timeouts":1,"unfinished":1,"duplicates":5,"unexpected":6,"io_errors":7,"elapsed_s":2.5,"throughput_per_s":3.2,"latency_us":{"p50":400,"p90":800,"p99":800,"max":800},"server":{"cpu_s":1.5,"handshake_phase_cpu_s":0.5,"request_phase_cpu_s":1.0,"cpu_us_per_handshake":166666.66666666666,"cpu_us_per_request":125000.0,"rss_kib_start":1000,"rss_kib_established":1300,"hwm_kib_end":1500,"rss_bytes_per_session":102400.0},"dtls":{"handshakes":3,"handshakes_failed":2,"handshake_failures":{"handshake timeout":2},"handshake_elapsed_s":1.5,"handshakes_per_s":2.0,"handshake_latency_us":{"p50":900,"p90":1200,"p99":1200,"max":1200},"sessions_lost":1}}"#
        );
        assert_eq!(
            Report::default().to_json().to_string(),
            r#"{"sent":0,"answered":0,"responses":{},"retransmissions":0,"empty_acks":0,"separate_responses":0,"resets":0,"timeouts":0,"unfinished":0,"duplicates":0,"unexpected":0,"io_errors":0,"elapsed_s":0.0,"throughput_per_s":0.0,"latency_us":{"p50":null,"p90":null,"p99":null,"max":null}}"#
        );
    }
}
