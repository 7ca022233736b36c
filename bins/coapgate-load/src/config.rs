//! What to run: [`LoadConfig`] (the command line in `main.rs` fills it in)
//! and its checks.

use std::net::SocketAddr;
use std::time::Duration;

use coapgate_exchange::TransmissionParams;

use crate::{DtlsOptions, LoadError, device_ip};

/// The largest payload coapgate accepts by default (it answers 4.13 above).
const MAX_PAYLOAD: usize = 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// coapgate's CoAP address.
    pub target: SocketAddr,
    /// Simulated devices (source addresses from
    /// [`FIRST_DEVICE_IP`](crate::FIRST_DEVICE_IP)).
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
    /// The devices' RFC 7252 §4.8 transmission parameters (ACK_TIMEOUT,
    /// ACK_RANDOM_FACTOR, MAX_RETRANSMIT; the lifetimes are not used).
    pub transmission: TransmissionParams,
    /// How long to wait for a response after an empty ACK, or after a NON
    /// request; `None`: MAX_TRANSMIT_WAIT.
    pub response_timeout: Option<Duration>,
    /// `Some`: CoAPS, `target` is coapgate's DTLS address.
    pub dtls: Option<DtlsOptions>,
    /// The server's process ID, when it runs on this host: its CPU time and
    /// memory are read from `/proc/PID/{stat,status}` at the start, once
    /// the sessions are established, and at the end
    /// ([`Report::server`](crate::Report::server)).
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
            transmission: TransmissionParams::default(),
            response_timeout: None,
            dtls: None,
            server_pid: None,
        }
    }
}

impl LoadConfig {
    /// How long a device waits for a response after an empty ACK or a NON
    /// request.
    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
            .unwrap_or_else(|| self.transmission.max_transmit_wait())
    }

    /// Whether the run can be made; the first thing wrong if not.
    pub(crate) fn validate(&self) -> Result<(), LoadError> {
        let fail = |text| Err(LoadError::Config(text));
        if self.devices == 0 {
            return fail("at least one device");
        }
        if self.concurrency == 0 {
            return fail("concurrency is at least 1");
        }
        if self.payload_size > MAX_PAYLOAD {
            return fail("payload size above 1024 bytes (coapgate answers 4.13 by default)");
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return fail("rate must be a positive number of requests per second");
        }
        self.transmission.validate()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(config: LoadConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn the_defaults_are_valid_and_wait_93_s_for_a_response() {
        let config = LoadConfig::default();
        config.validate().unwrap();
        assert_eq!(config.response_timeout(), Duration::from_secs(93));
        let short = LoadConfig {
            response_timeout: Some(Duration::from_secs(5)),
            ..LoadConfig::default()
        };
        assert_eq!(short.response_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn unusable_settings_are_refused() {
        let base = LoadConfig::default;
        assert_eq!(
            error_of(LoadConfig {
                devices: 0,
                ..base()
            }),
            "configuration: at least one device"
        );
        assert_eq!(
            error_of(LoadConfig {
                payload_size: 1025,
                ..base()
            }),
            "configuration: payload size above 1024 bytes (coapgate answers 4.13 by default)"
        );
        assert_eq!(
            error_of(LoadConfig {
                rate: Some(f64::NAN),
                ..base()
            }),
            "configuration: rate must be a positive number of requests per second"
        );
        assert_eq!(
            error_of(LoadConfig {
                transmission: TransmissionParams {
                    max_retransmit: 21,
                    ..TransmissionParams::default()
                },
                ..base()
            }),
            "configuration: max_retransmit: must be at most 20"
        );
        assert_eq!(
            error_of(LoadConfig {
                devices: 16_777_215,
                ..base()
            }),
            "configuration: device 16777214 is beyond 127.255.255.255"
        );
        assert_eq!(
            error_of(LoadConfig {
                dtls: Some(DtlsOptions {
                    psk: Some(String::new()),
                    ..DtlsOptions::default()
                }),
                ..base()
            }),
            "configuration: a PSK is 1 to 256 bytes"
        );
    }
}
