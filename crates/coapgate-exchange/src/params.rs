use std::fmt;
use std::time::Duration;

/// A transmission parameter or cache bound out of range: which field, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidParam {
    /// The field, as the struct (and its serde form) names it.
    pub field: &'static str,
    /// What is wrong with its value.
    pub reason: &'static str,
}

impl InvalidParam {
    pub(crate) fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }
}

impl fmt::Display for InvalidParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidParam {}

/// RFC 7252 §4.8 transmission parameters; the defaults are the RFC's.
///
/// The derived times of §4.8.2 are methods, so they can never disagree with
/// the parameters they come from.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct TransmissionParams {
    /// ACK_TIMEOUT: the initial wait for an acknowledgement (2 s).
    #[cfg_attr(feature = "serde", serde(with = "crate::secs_f64"))]
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR: the initial timeout is drawn from
    /// `[ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR]` (1.5).
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT: retransmissions after the first transmission (4).
    pub max_retransmit: u32,
    /// MAX_LATENCY: the longest a datagram is expected to travel (100 s).
    #[cfg_attr(feature = "serde", serde(with = "crate::secs_f64"))]
    pub max_latency: Duration,
    /// PROCESSING_DELAY: the time a node takes to acknowledge (ACK_TIMEOUT).
    #[cfg_attr(feature = "serde", serde(with = "crate::secs_f64"))]
    pub processing_delay: Duration,
}

impl Default for TransmissionParams {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            max_latency: Duration::from_secs(100),
            processing_delay: Duration::from_secs(2),
        }
    }
}

impl TransmissionParams {
    /// MAX_TRANSMIT_SPAN = ACK_TIMEOUT × (2^MAX_RETRANSMIT − 1) × ACK_RANDOM_FACTOR (45 s).
    pub fn max_transmit_span(&self) -> Duration {
        let doublings = (1u64 << self.max_retransmit.min(20)) - 1;
        self.ack_timeout
            .mul_f64(doublings as f64 * self.ack_random_factor)
    }

    /// MAX_TRANSMIT_WAIT = ACK_TIMEOUT × (2^(MAX_RETRANSMIT + 1) − 1) × ACK_RANDOM_FACTOR (93 s).
    pub fn max_transmit_wait(&self) -> Duration {
        let doublings = (1u64 << (self.max_retransmit.min(20) + 1)) - 1;
        self.ack_timeout
            .mul_f64(doublings as f64 * self.ack_random_factor)
    }

    /// EXCHANGE_LIFETIME = MAX_TRANSMIT_SPAN + 2 × MAX_LATENCY + PROCESSING_DELAY (247 s).
    pub fn exchange_lifetime(&self) -> Duration {
        self.max_transmit_span() + 2 * self.max_latency + self.processing_delay
    }

    /// NON_LIFETIME = MAX_TRANSMIT_SPAN + MAX_LATENCY (145 s).
    pub fn non_lifetime(&self) -> Duration {
        self.max_transmit_span() + self.max_latency
    }

    /// The first retransmission timeout for a new confirmable message:
    /// ACK_TIMEOUT scaled by a factor in `[1, ACK_RANDOM_FACTOR]`, where
    /// `jitter` in `[0, 1]` picks the point (the caller owns the randomness).
    pub fn initial_timeout(&self, jitter: f64) -> Duration {
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let factor = 1.0 + jitter * (self.ack_random_factor - 1.0).max(0.0);
        self.ack_timeout.mul_f64(factor)
    }

    /// Checks the parameters make sense; names the first field that does not.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        if self.ack_timeout.is_zero() {
            return Err(InvalidParam::new("ack_timeout", "must be positive"));
        }
        if !(self.ack_random_factor.is_finite() && self.ack_random_factor >= 1.0) {
            return Err(InvalidParam::new(
                "ack_random_factor",
                "must be at least 1.0",
            ));
        }
        if self.max_retransmit > 20 {
            return Err(InvalidParam::new("max_retransmit", "must be at most 20"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7252_derived_times() {
        let p = TransmissionParams::default();
        assert_eq!(p.max_transmit_span(), Duration::from_secs(45));
        assert_eq!(p.max_transmit_wait(), Duration::from_secs(93));
        assert_eq!(p.exchange_lifetime(), Duration::from_secs(247));
        assert_eq!(p.non_lifetime(), Duration::from_secs(145));
    }

    #[test]
    fn initial_timeout_spans_ack_timeout_to_its_random_factor() {
        let p = TransmissionParams::default();
        assert_eq!(p.initial_timeout(0.0), Duration::from_secs(2));
        assert_eq!(p.initial_timeout(1.0), Duration::from_secs(3));
        assert_eq!(p.initial_timeout(f64::NAN), Duration::from_secs(2));
        assert_eq!(p.initial_timeout(7.0), Duration::from_secs(3));
    }

    #[test]
    fn validate_names_the_field() {
        assert_eq!(TransmissionParams::default().validate(), Ok(()));
        for (params, field) in [
            (
                TransmissionParams {
                    ack_timeout: Duration::ZERO,
                    ..TransmissionParams::default()
                },
                "ack_timeout",
            ),
            (
                TransmissionParams {
                    ack_random_factor: 0.5,
                    ..TransmissionParams::default()
                },
                "ack_random_factor",
            ),
            (
                TransmissionParams {
                    max_retransmit: 21,
                    ..TransmissionParams::default()
                },
                "max_retransmit",
            ),
        ] {
            assert_eq!(params.validate().map_err(|e| e.field), Err(field));
        }
    }
}
