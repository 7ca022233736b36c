//! The server's CPU time and memory from Linux's `/proc/PID/stat` and
//! `/proc/PID/status` ([`ProcSample`]), and what three samples (start,
//! sessions established, end) say per handshake and per request
//! ([`server_json`]).

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
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Self::parse(&stat, &status)
    }

    /// A sample from the text of `/proc/PID/stat` and `/proc/PID/status`.
    fn parse(stat: &str, status: &str) -> Option<Self> {
        // The command name (field 2) is in parentheses and may hold spaces
        // and parentheses itself; after the last `)`: state is field 3,
        // utime 14, stime 15.
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        let mut fields = rest.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
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

/// The report's `server` object from the samples at the start, with the
/// sessions established, and at the end: CPU seconds per phase, CPU µs per
/// handshake and per answered request, and memory. `requests_sent` tells
/// whether the sessions stayed open (RSS per session means something only
/// then).
pub(crate) fn server_json(
    [start, established, end]: [ProcSample; 3],
    handshakes: u64,
    answered: u64,
    requests_sent: u64,
) -> serde_json::Value {
    let cpu =
        |a: ProcSample, b: ProcSample| b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / USER_HZ;
    let per = |seconds: f64, n: u64| (n > 0).then(|| seconds * 1e6 / n as f64);
    let handshake_cpu = cpu(start, established);
    let request_cpu = cpu(established, end);
    serde_json::json!({
        "cpu_s": cpu(start, end),
        "handshake_phase_cpu_s": handshake_cpu,
        "request_phase_cpu_s": request_cpu,
        "cpu_us_per_handshake": per(handshake_cpu, handshakes),
        "cpu_us_per_request": per(request_cpu, answered),
        "rss_kib_start": start.rss_kib,
        "rss_kib_established": established.rss_kib,
        "hwm_kib_end": end.hwm_kib,
        // Sessions stay open only when requests run over them.
        "rss_bytes_per_session": if requests_sent == 0 { None } else { per(
            (established.rss_kib.saturating_sub(start.rss_kib) * 1024) as f64 / 1e6,
            handshakes
        ) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/PID/stat` of a process named `a) (b c`, utime 1234, stime 56.
    const STAT: &str = "4242 (a) (b c) S 1 4242 4242 0 -1 4194560 1029 0 0 0 1234 56 0 0 20 0 3 0 9071 123392000 2900 18446744073709551615 1 1 0 0 0 0 0 4096 17642 0 0 0 17 1 0 0 0 0 0\n";
    const STATUS: &str = "Name:\ta) (b c\nState:\tS (sleeping)\nVmPeak:\t  130000 kB\nVmHWM:\t   12808 kB\nVmRSS:\t   11600 kB\nThreads:\t3\n";

    #[test]
    fn parses_cpu_ticks_and_memory() {
        assert_eq!(
            ProcSample::parse(STAT, STATUS),
            Some(ProcSample {
                cpu_ticks: 1290,
                rss_kib: 11_600,
                hwm_kib: 12_808,
            })
        );
    }

    #[test]
    fn truncated_or_foreign_text_is_no_sample() {
        assert_eq!(ProcSample::parse("4242 (cat) S 1 2 3", STATUS), None);
        assert_eq!(ProcSample::parse("no parenthesis", STATUS), None);
        assert_eq!(ProcSample::parse(STAT, "Name:\tcat\nVmRSS:\t1 kB\n"), None);
        assert_eq!(ProcSample::parse(STAT, ""), None);
    }

    #[test]
    fn reads_this_process() {
        let sample = ProcSample::read(std::process::id()).unwrap();
        assert!(sample.rss_kib > 0, "{sample:?}");
        assert!(sample.hwm_kib >= sample.rss_kib, "{sample:?}");
        assert_eq!(ProcSample::read(u32::MAX), None);
    }

    #[test]
    fn server_usage_per_handshake_and_per_request() {
        let sample = |cpu_ticks, rss_kib, hwm_kib| ProcSample {
            cpu_ticks,
            rss_kib,
            hwm_kib,
        };
        let samples = [
            sample(100, 1000, 1100),
            sample(150, 1300, 1400),
            sample(250, 1350, 1500),
        ];
        assert_eq!(
            server_json(samples, 4, 8, 10).to_string(),
            r#"{"cpu_s":1.5,"handshake_phase_cpu_s":0.5,"request_phase_cpu_s":1.0,"cpu_us_per_handshake":125000.0,"cpu_us_per_request":125000.0,"rss_kib_start":1000,"rss_kib_established":1300,"hwm_kib_end":1500,"rss_bytes_per_session":76800.0}"#
        );
        // The handshake benchmark: no requests, no sessions kept open.
        let json = server_json(samples, 0, 0, 0);
        assert_eq!(json["cpu_us_per_handshake"], serde_json::Value::Null);
        assert_eq!(json["cpu_us_per_request"], serde_json::Value::Null);
        assert_eq!(json["rss_bytes_per_session"], serde_json::Value::Null);
    }
}
