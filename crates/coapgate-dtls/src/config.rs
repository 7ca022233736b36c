//! The server's configuration.

use std::time::Duration;

use coapgate_exchange::RateLimit;

use crate::DtlsError;

/// How the server behaves. [`Default`] gives the values documented on each
/// field. Build one with `let mut config = DtlsConfig::default();` and
/// assign the fields to change; [`validate`](Self::validate) checks it
/// ([`DtlsServer::new`](crate::DtlsServer::new) does too).
///
/// With the `serde` feature it deserializes from `mtu`, `max_sessions`,
/// `max_handshakes`, `handshake_timeout` and `idle_timeout` (durations in
/// seconds); a missing key keeps its default. The cipher list, the cookie
/// rotation and the handshake rate limit are not part of that form.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct DtlsConfig {
    /// OpenSSL cipher list, in server preference order. Default
    /// `PSK-AES128-CCM8:PSK-AES128-CBC-SHA256:PSK-AES128-GCM-SHA256`
    /// (`TLS_PSK_WITH_AES_128_CCM_8`, `TLS_PSK_WITH_AES_128_CBC_SHA256` —
    /// with Encrypt-then-MAC and Extended Master Secret when the client
    /// offers them — and `TLS_PSK_WITH_AES_128_GCM_SHA256`).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub ciphers: String,
    /// Largest datagram the server sends (UDP payload), in bytes. Default
    /// 1200, which fits every IPv6 path; 256 to 65507.
    pub mtu: u32,
    /// Most established sessions at once; a handshake from a new address
    /// beyond it is refused. Default 10 000; at least 1. Each session holds
    /// an OpenSSL `SSL` of about 44 KiB (measured with OpenSSL 3.0: mostly
    /// its 17 KiB read buffer and the cipher contexts), so 10 000 sessions
    /// take about 430 MiB.
    pub max_sessions: usize,
    /// Most handshakes in progress at once (each holds an OpenSSL `Ssl` of
    /// about 47 KiB, created only after a valid cookie). Default 256
    /// (about 12 MiB); at least 1.
    pub max_handshakes: usize,
    /// A handshake not complete this long after its ClientHello with
    /// cookie is dropped. Default 20 s (Zephyr clients give up after 15 s);
    /// above zero.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "seconds"))]
    pub handshake_timeout: Duration,
    /// A session with no authenticated datagram from its peer for this
    /// long is closed. Default 30 min; above zero.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "seconds"))]
    pub idle_timeout: Duration,
    /// How often the cookie secret rotates; a cookie is valid for one to
    /// two periods. Default 60 s; above zero.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub cookie_rotation: Duration,
    /// New handshakes per source IP address (off by default): a ClientHello
    /// with a valid cookie that would start a handshake takes a token from
    /// its address's bucket in [`DtlsServer::accept`](crate::DtlsServer::accept);
    /// without one it is dropped silently before any state exists for it.
    /// ClientHellos without a cookie are not counted (they cost no state,
    /// and their source address is unproven).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub handshake_limit: RateLimit,
}

impl Default for DtlsConfig {
    fn default() -> Self {
        DtlsConfig {
            ciphers: "PSK-AES128-CCM8:PSK-AES128-CBC-SHA256:PSK-AES128-GCM-SHA256".to_owned(),
            mtu: 1200,
            max_sessions: 10_000,
            max_handshakes: 256,
            handshake_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(30 * 60),
            cookie_rotation: Duration::from_secs(60),
            handshake_limit: RateLimit::OFF,
        }
    }
}

impl DtlsConfig {
    /// Checks every value is in range; the error
    /// ([`DtlsError::InvalidConfig`]) names the first field that is not.
    /// The cipher list is checked by OpenSSL in
    /// [`DtlsServer::new`](crate::DtlsServer::new).
    pub fn validate(&self) -> Result<(), DtlsError> {
        let bad = |field, reason| Err(DtlsError::InvalidConfig { field, reason });
        if !(256..=65_507).contains(&self.mtu) {
            return bad("mtu", "must be 256..=65507");
        }
        if self.max_sessions == 0 {
            return bad("max_sessions", "must be at least 1");
        }
        if self.max_handshakes == 0 {
            return bad("max_handshakes", "must be at least 1");
        }
        for (field, period) in [
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
            ("cookie_rotation", self.cookie_rotation),
        ] {
            if period.is_zero() {
                return bad(field, "must be above zero");
            }
        }
        Ok(())
    }
}

/// Seconds (an integer or a decimal; not negative, finite) as a duration.
#[cfg(feature = "serde")]
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = <f64 as serde::Deserialize>::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_field() {
        assert!(DtlsConfig::default().validate().is_ok());
        type Spoil = fn(&mut DtlsConfig);
        let cases: [(Spoil, &str); 7] = [
            (|c| c.mtu = 255, "mtu"),
            (|c| c.mtu = 65_508, "mtu"),
            (|c| c.max_sessions = 0, "max_sessions"),
            (|c| c.max_handshakes = 0, "max_handshakes"),
            (
                |c| c.handshake_timeout = Duration::ZERO,
                "handshake_timeout",
            ),
            (|c| c.idle_timeout = Duration::ZERO, "idle_timeout"),
            (|c| c.cookie_rotation = Duration::ZERO, "cookie_rotation"),
        ];
        for (spoil, field) in cases {
            let mut config = DtlsConfig::default();
            spoil(&mut config);
            let refused = config.validate();
            assert!(
                matches!(refused, Err(DtlsError::InvalidConfig { field: f, .. }) if f == field),
                "{field}: {refused:?}"
            );
        }
    }
}
