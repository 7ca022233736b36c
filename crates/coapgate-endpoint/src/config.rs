use std::fmt;
use std::time::Duration;

use coapgate_bootstrap::{CoapsUrl, Policy};
use coapgate_exchange::{DedupLimits, RateLimit, TransmissionParams};
use coapgate_topic::TopicTemplates;

/// What the engine publishes as the MQTT payload.
///
/// With the `serde` feature it deserializes from `"envelope"` or `"raw"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum PayloadFormat {
    /// The JSON envelope of spec.md §2.3 (default).
    #[default]
    Envelope,
    /// The device's bytes unchanged.
    Raw,
}

/// Everything the engine can be told; the defaults are spec.md's.
///
/// Build one with [`Default`] and assign the fields to change; check it
/// with [`validate`](Self::validate). With the `serde` feature it
/// deserializes from the request-handling knobs (`max_payload`,
/// `piggyback_window`, `publish_timeout`, `max_pending`, `store_timeout`,
/// `transmission`, `dedup`; durations in seconds; a missing key keeps its default). The
/// device rate limit, topics, payload format, `/bootstrap` settings and seed are not part of
/// that form: they are set by whoever assembles the engine's configuration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct EndpointConfig {
    /// RFC 7252 transmission parameters (and so the dedup lifetimes).
    pub transmission: TransmissionParams,
    /// Bounds of the deduplication cache.
    pub dedup: DedupLimits,
    /// Largest telemetry payload accepted (1024; at least 1024, spec.md §2.2);
    /// larger gets 4.13 with Size1.
    pub max_payload: usize,
    /// How long a CON request waits for the broker before the engine sends
    /// an empty ACK and answers separately later (1 s; below ACK_TIMEOUT).
    #[cfg_attr(feature = "serde", serde(with = "coapgate_exchange::secs_f64"))]
    pub piggyback_window: Duration,
    /// How long a publish may stay unconfirmed before the device gets 5.04
    /// (10 s; longer than `piggyback_window`).
    #[cfg_attr(feature = "serde", serde(with = "coapgate_exchange::secs_f64"))]
    pub publish_timeout: Duration,
    /// Most publishes awaiting confirmation at once (4096; at least 1);
    /// beyond it requests get 5.03 Service Unavailable with Max-Age.
    pub max_pending: usize,
    /// How long a request waits for a store write (`/bootstrap`) before it
    /// gets 5.03 Service Unavailable with Max-Age (10 s; more than 0).
    #[cfg_attr(feature = "serde", serde(with = "coapgate_exchange::secs_f64"))]
    pub store_timeout: Duration,
    /// The per-device rate limit of spec.md §2.1 step 4 (off by default):
    /// a request over it gets 4.29 Too Many Requests with Max-Age. Set from
    /// `[limits] device_rate` and `device_burst` by whoever assembles the
    /// configuration.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub device_limit: RateLimit,
    /// Publish-topic templates.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub topics: TopicTemplates,
    /// The MQTT payload format.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub payload_format: PayloadFormat,
    /// `/bootstrap`: the regeneration rule and the URL handed out.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub bootstrap: BootstrapConfig,
    /// Seed for message IDs, retransmission jitter and envelope IDs; the
    /// driver passes fresh randomness, tests a constant.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub seed: u64,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            transmission: TransmissionParams::default(),
            dedup: DedupLimits::default(),
            max_payload: 1024,
            piggyback_window: Duration::from_secs(1),
            publish_timeout: Duration::from_secs(10),
            max_pending: 4096,
            store_timeout: Duration::from_secs(10),
            device_limit: RateLimit::OFF,
            topics: TopicTemplates::default(),
            payload_format: PayloadFormat::Envelope,
            bootstrap: BootstrapConfig::default(),
            seed: 0,
        }
    }
}

impl EndpointConfig {
    /// The smallest `max_payload`: spec.md §2.2 promises 1024 bytes in one
    /// datagram.
    pub const MIN_PAYLOAD: usize = 1024;

    /// Checks the values the types cannot; names the first field that is
    /// wrong (`transmission.ack_timeout` for a nested one).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |field: &str, reason| {
            Err(InvalidConfig {
                field: field.to_owned(),
                reason,
            })
        };
        if let Err(e) = self.transmission.validate() {
            return bad(&format!("transmission.{}", e.field), e.reason);
        }
        if let Err(e) = self.dedup.validate() {
            return bad(&format!("dedup.{}", e.field), e.reason);
        }
        if self.max_payload < Self::MIN_PAYLOAD {
            return bad("max_payload", "must be at least 1024 (spec.md §2.2)");
        }
        if self.max_pending == 0 {
            return bad("max_pending", "must be at least 1");
        }
        if self.piggyback_window >= self.transmission.ack_timeout {
            return bad(
                "piggyback_window",
                "must be shorter than transmission.ack_timeout",
            );
        }
        if self.publish_timeout <= self.piggyback_window {
            return bad("publish_timeout", "must be longer than piggyback_window");
        }
        if self.store_timeout.is_zero() {
            return bad("store_timeout", "must be more than 0");
        }
        Ok(())
    }
}

/// An [`EndpointConfig`] value out of range: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    /// The field, as the struct (and its serde form) names it; nested ones
    /// as `transmission.ack_timeout`.
    pub field: String,
    /// What is wrong with its value.
    pub reason: &'static str,
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidConfig {}

/// What `/bootstrap` hands out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootstrapConfig {
    /// When a generated PSK is replaced (5 minutes after the previous call).
    pub policy: Policy,
    /// The `coapsEndpointUrl` of the answer (`coaps://localhost:5684`).
    pub coaps_url: CoapsUrl,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(EndpointConfig::default().validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_field() {
        type Spoil = fn(&mut EndpointConfig);
        let cases: [(Spoil, &str); 7] = [
            (|c| c.max_payload = 1023, "max_payload"),
            (|c| c.store_timeout = Duration::ZERO, "store_timeout"),
            (|c| c.max_pending = 0, "max_pending"),
            (
                |c| c.piggyback_window = c.transmission.ack_timeout,
                "piggyback_window",
            ),
            (
                |c| c.publish_timeout = c.piggyback_window,
                "publish_timeout",
            ),
            (
                |c| c.transmission.ack_random_factor = 0.9,
                "transmission.ack_random_factor",
            ),
            (|c| c.dedup.max_entries = 0, "dedup.max_entries"),
        ];
        for (spoil, field) in cases {
            let mut config = EndpointConfig::default();
            spoil(&mut config);
            assert_eq!(
                config.validate().map_err(|e| e.field),
                Err(field.to_owned())
            );
        }
    }
}
