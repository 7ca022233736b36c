use std::time::Duration;

use coapgate_bootstrap::Policy;
use coapgate_exchange::{DedupLimits, TransmissionParams};
use coapgate_topic::TopicTemplates;

/// What the engine publishes as the MQTT payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadFormat {
    /// The JSON envelope of spec.md §2.3 (default).
    #[default]
    Envelope,
    /// The device's bytes unchanged.
    Raw,
}

/// Everything the engine can be told; the defaults are spec.md's.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// RFC 7252 transmission parameters (and so the dedup lifetimes).
    pub transmission: TransmissionParams,
    /// Bounds of the deduplication cache.
    pub dedup: DedupLimits,
    /// Largest telemetry payload accepted (1024); larger gets 4.13 with Size1.
    pub max_payload: usize,
    /// How long a CON request waits for the broker before the engine sends
    /// an empty ACK and answers separately later (1 s, below ACK_TIMEOUT).
    pub piggyback_window: Duration,
    /// How long a publish may stay unconfirmed before the device gets 5.04.
    pub publish_timeout: Duration,
    /// Most publishes awaiting confirmation at once; beyond it requests get
    /// 5.03 Service Unavailable with Max-Age.
    pub max_pending: usize,
    /// How long a request waits for a store write (`/bootstrap`) before it
    /// gets 5.03 Service Unavailable with Max-Age.
    pub store_timeout: Duration,
    /// Publish-topic templates.
    pub topics: TopicTemplates,
    /// The MQTT payload format.
    pub payload_format: PayloadFormat,
    /// `/bootstrap`: the regeneration rule and the URL handed out.
    pub bootstrap: BootstrapConfig,
    /// Seed for message IDs, retransmission jitter and envelope IDs; the
    /// driver passes fresh randomness, tests a constant.
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
            topics: TopicTemplates::default(),
            payload_format: PayloadFormat::Envelope,
            bootstrap: BootstrapConfig::default(),
            seed: 0,
        }
    }
}

/// What `/bootstrap` hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapConfig {
    /// When a generated PSK is replaced (5 minutes after the previous call).
    pub policy: Policy,
    /// The `coapsEndpointUrl` of the answer.
    pub coaps_url: String,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            coaps_url: "coaps://localhost:5684".to_owned(),
        }
    }
}
