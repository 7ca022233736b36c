//! Prometheus metrics (spec.md §6): a snapshot of the engine, the DTLS server
//! and the bridge taken by the driver at scrape time, so the numbers are
//! exact, plus the publish-latency histogram the driver keeps.

use std::fmt;

use coapgate_dtls::DtlsStats;
use coapgate_endpoint::EndpointStats;
use coapgate_spool::SpoolStatus;
use coapgate_store::FollowStatus;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The MQTT publish latency: first send to PUBACK/PUBCOMP, 0.5 ms to ~8 s.
pub(crate) fn publish_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Everything counted, at one instant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub(crate) engine: EndpointStats,
    pub(crate) dtls: DtlsStats,
    pub(crate) outbox_depth: usize,
    pub(crate) broker_connected: bool,
    /// The store-and-forward spool, with `[mqtt] ack = "spool"`.
    pub(crate) spool: Option<SpoolStatus>,
    /// The store answered its last probe.
    pub(crate) store_up: bool,
    /// Following a shared store's changes (`None`: not asked).
    pub(crate) store_follow: Option<FollowStatus>,
    /// Datagrams the kernel dropped for a full receive buffer, per
    /// listener, where the OS reports them.
    pub(crate) receive_drops: Vec<(&'static str, u64)>,
    /// Datagrams received, per shard.
    pub(crate) shard_datagrams: Vec<(usize, u64)>,
}

impl Snapshot {
    /// Adds another shard's numbers: counters and gauges summed, the
    /// broker connected only if every shard's link is up; the spool, the
    /// store and its change feed are shared and kept as they are.
    pub(crate) fn merge(&mut self, other: Snapshot) {
        let Snapshot {
            engine,
            dtls,
            outbox_depth,
            broker_connected,
            spool: _,
            store_up: _,
            store_follow: _,
            receive_drops,
            shard_datagrams,
        } = other;
        self.engine += engine;
        self.dtls += dtls;
        self.outbox_depth += outbox_depth;
        self.broker_connected &= broker_connected;
        for (listener, drops) in receive_drops {
            match self.receive_drops.iter_mut().find(|(l, _)| *l == listener) {
                Some((_, total)) => *total += drops,
                None => self.receive_drops.push((listener, drops)),
            }
        }
        self.shard_datagrams.extend(shard_datagrams);
        self.shard_datagrams.sort_unstable();
    }
}

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: i64) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A counter family with one label: one sample per `(label value, count)`.
fn counters<L: AsRef<str>>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let kind = ConstCounter::new(0u64).metric_type();
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (value_of_label, count) in values {
        ConstCounter::new(count)
            .encode(family.encode_family(&[(label, value_of_label.as_ref())])?)?;
    }
    Ok(())
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &self.engine;
        {
            let kind = ConstCounter::new(0u64).metric_type();
            let mut family = encoder.encode_descriptor(
                "requests",
                "Requests answered, by resource and response code.",
                None,
                kind,
            )?;
            for (key, value) in &e.requests {
                let labels = [("resource", key.resource), ("code", key.code)];
                ConstCounter::new(*value).encode(family.encode_family(&labels)?)?;
            }
        }
        counters(
            &mut encoder,
            "rate_limited",
            "Refused for being over a [limits] rate: requests answered 4.29 (device) and DTLS handshakes dropped (handshake).",
            "kind",
            [
                ("device", e.rate_limited),
                ("handshake", self.dtls.handshakes_rate_limited),
            ],
        )?;
        counter(
            &mut encoder,
            "dedup_hits",
            "Duplicates answered from the cache or ignored.",
            e.duplicates,
        )?;
        gauge(
            &mut encoder,
            "dedup_entries",
            "Message IDs remembered now.",
            count(e.dedup.entries),
        )?;
        gauge(
            &mut encoder,
            "dedup_bytes",
            "Bytes the deduplication cache accounts now.",
            count(e.dedup.bytes),
        )?;
        counter(
            &mut encoder,
            "dedup_evictions",
            "Cache entries evicted before their lifetime ended (a bound was hit).",
            e.dedup.evictions,
        )?;
        counter(
            &mut encoder,
            "malformed",
            "Datagrams that were not CoAP (dropped or answered RST).",
            e.malformed,
        )?;
        counter(
            &mut encoder,
            "pings",
            "Empty confirmable messages answered RST.",
            e.pings,
        )?;
        counter(
            &mut encoder,
            "retransmissions",
            "Separate responses retransmitted.",
            e.retransmissions,
        )?;
        counter(
            &mut encoder,
            "retransmit_give_ups",
            "Separate responses given up after MAX_RETRANSMIT.",
            e.retransmit_give_ups,
        )?;
        gauge(
            &mut encoder,
            "pending_publishes",
            "Publishes awaiting the broker.",
            count(e.pending_publishes),
        )?;
        gauge(
            &mut encoder,
            "outbox_depth",
            "Publishes in the MQTT outbox, not yet confirmed.",
            count(self.outbox_depth),
        )?;
        gauge(
            &mut encoder,
            "broker_connected",
            "1 while the MQTT broker connection is up.",
            i64::from(self.broker_connected),
        )?;
        if let Some(spool) = self.spool {
            let size = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            gauge(
                &mut encoder,
                "spool_messages",
                "Messages acknowledged to devices and not yet confirmed by the broker, held in the spool.",
                size(spool.messages),
            )?;
            gauge(
                &mut encoder,
                "spool_bytes",
                "Bytes (topic and payload) the spool holds.",
                size(spool.bytes),
            )?;
            gauge(
                &mut encoder,
                "spool_max_bytes",
                "The spool's bound (mqtt.spool_max_bytes); beyond it devices get 5.03.",
                size(spool.max_bytes),
            )?;
            gauge(
                &mut encoder,
                "spool_writable",
                "1 while the spool's last write succeeded.",
                i64::from(spool.writable),
            )?;
        }
        gauge(
            &mut encoder,
            "store_up",
            "1 while the store (SQLite or PostgreSQL) answers.",
            i64::from(self.store_up),
        )?;
        // Only a store shared by several instances has changes to follow.
        if let Some(follow) = self.store_follow.filter(|f| f.following) {
            counter(
                &mut encoder,
                "store_changes",
                "Changes announced by the shared store (by any instance) and applied to this instance's views.",
                follow.changes,
            )?;
            counter(
                &mut encoder,
                "store_resyncs",
                "Full reloads of the views after the store's change feed was lost.",
                follow.resyncs,
            )?;
            if let Some(lag) = follow.lag {
                let metric = ConstGauge::new(lag.as_secs_f64());
                metric.encode(encoder.encode_descriptor(
                    "store_change_lag_seconds",
                    "From a change's commit (the database's clock) to this instance's views holding it, for the last change applied.",
                    None,
                    metric.metric_type(),
                )?)?;
            }
        }

        let d = &self.dtls;
        counters(
            &mut encoder,
            "dtls_handshakes",
            "DTLS handshakes, by result.",
            "result",
            [
                ("ok", d.handshakes_ok),
                ("failed", d.handshakes_failed),
                ("timed_out", d.handshakes_timed_out),
                ("refused_over_cap", d.handshakes_refused_over_cap),
                ("refused", d.handshakes_refused),
            ],
        )?;
        gauge(
            &mut encoder,
            "dtls_sessions",
            "Established DTLS sessions.",
            count(d.sessions),
        )?;
        gauge(
            &mut encoder,
            "dtls_handshakes_in_progress",
            "DTLS handshakes past the cookie, not yet complete.",
            count(d.handshakes_in_progress),
        )?;
        counter(
            &mut encoder,
            "dtls_cookies_sent",
            "HelloVerifyRequests sent (statelessly).",
            d.cookies_sent,
        )?;
        counter(
            &mut encoder,
            "dtls_datagrams_dropped",
            "DTLS datagrams dropped before OpenSSL.",
            d.datagrams_dropped,
        )?;

        if !self.receive_drops.is_empty() {
            counters(
                &mut encoder,
                "udp_receive_drops",
                "Datagrams the kernel dropped because the socket's receive buffer was full.",
                "listener",
                self.receive_drops.iter().copied(),
            )?;
        }
        if !self.shard_datagrams.is_empty() {
            counters(
                &mut encoder,
                "shard_datagrams",
                "Datagrams received, per shard ([coap] threads): how evenly the devices' addresses spread over the shards.",
                "shard",
                self.shard_datagrams
                    .iter()
                    .map(|(shard, n)| (shard.to_string(), *n)),
            )?;
        }
        Ok(())
    }
}

/// The exposition text of a snapshot and the latency histogram.
pub(crate) fn render(snapshot: Snapshot, publish_seconds: &Histogram) -> String {
    let mut registry = Registry::with_prefix("coapgate");
    registry.register_collector(Box::new(snapshot));
    registry.register(
        "mqtt_publish_seconds",
        "Time from handing a message to the broker to its PUBACK/PUBCOMP.",
        publish_seconds.clone(),
    );
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
        tracing::error!("could not encode metrics");
    }
    text
}

/// Datagrams dropped for a full receive buffer on the UDP socket with this
/// inode, from `/proc/net/udp` and `/proc/net/udp6` (Linux); `None`
/// elsewhere or when the socket is not listed.
pub(crate) fn receive_drops(inode: u64) -> Option<u64> {
    ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|path| {
        let table = std::fs::read_to_string(path).ok()?;
        drops_in_table(&table, inode)
    })
}

/// The `drops` column of the row with this inode in a `/proc/net/udp` table.
fn drops_in_table(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        let row_inode: u64 = fields.get(9)?.parse().ok()?;
        (row_inode == inode).then(|| fields.get(12)?.parse().ok())?
    })
}

/// The inode of a socket, from `/proc/self/fd` (Linux).
pub(crate) fn socket_inode(socket: &impl std::os::fd::AsRawFd) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
    let text = link.to_str()?;
    text.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_drops_column_of_the_right_socket() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                     1: 0100007F:1633 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
                     2: 0100007F:1634 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 0\n";
        assert_eq!(drops_in_table(table, 4242), Some(17));
        assert_eq!(drops_in_table(table, 4243), Some(0));
        assert_eq!(drops_in_table(table, 1), None);
    }

    #[test]
    fn our_own_socket_is_found() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = socket_inode(&socket).expect("Linux /proc");
        assert_eq!(receive_drops(inode), Some(0));
    }

    #[test]
    fn the_exposition_has_the_spec_names() {
        let mut snapshot = Snapshot::default();
        snapshot.engine.requests.insert(
            coapgate_endpoint::RequestKey {
                resource: "telemetry",
                code: "2.04",
            },
            3,
        );
        snapshot.broker_connected = true;
        snapshot.store_up = true;
        snapshot.engine.rate_limited = 4;
        snapshot.dtls.handshakes_rate_limited = 2;
        let histogram = publish_histogram();
        histogram.observe(0.002);
        let text = render(snapshot, &histogram);
        for line in [
            "coapgate_requests_total{resource=\"telemetry\",code=\"2.04\"} 3",
            "coapgate_broker_connected 1",
            "coapgate_store_up 1",
            "coapgate_dedup_hits_total 0",
            "coapgate_dedup_entries 0",
            "coapgate_outbox_depth 0",
            "coapgate_dtls_sessions 0",
            "coapgate_dtls_handshakes_total{result=\"ok\"} 0",
            "coapgate_rate_limited_total{kind=\"device\"} 4",
            "coapgate_rate_limited_total{kind=\"handshake\"} 2",
            "coapgate_mqtt_publish_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(
            !text.contains("coapgate_store_change"),
            "not following: {text}"
        );
    }

    #[test]
    fn a_followed_store_reports_its_changes_resyncs_and_lag() {
        let mut follow = FollowStatus::default();
        follow.following = true;
        follow.changes = 12;
        follow.resyncs = 1;
        let snapshot = |follow: FollowStatus| Snapshot {
            store_follow: Some(follow),
            ..Snapshot::default()
        };
        let text = render(snapshot(follow), &publish_histogram());
        for line in [
            "coapgate_store_changes_total 12",
            "coapgate_store_resyncs_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("lag"), "no change yet, no lag: {text}");
        follow.lag = Some(std::time::Duration::from_millis(3));
        let text = render(snapshot(follow), &publish_histogram());
        assert!(
            text.lines()
                .any(|l| l == "coapgate_store_change_lag_seconds 0.003"),
            "{text}"
        );
    }
}
