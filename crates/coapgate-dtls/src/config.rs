//! The server's configuration.

use std::time::Duration;

use crate::DtlsError;

/// How the server behaves. [`Default`] gives the values documented on each
/// field. Build one with `DtlsConfig { max_sessions: 500, ..DtlsConfig::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtlsConfig {
    /// OpenSSL cipher list, in server preference order. Default
    /// `PSK-AES128-CCM8:PSK-AES128-CBC-SHA256:PSK-AES128-GCM-SHA256`
    /// (`TLS_PSK_WITH_AES_128_CCM_8`, `TLS_PSK_WITH_AES_128_CBC_SHA256` —
    /// with Encrypt-then-MAC and Extended Master Secret when the client
    /// offers them — and `TLS_PSK_WITH_AES_128_GCM_SHA256`).
    pub ciphers: String,
    /// Largest datagram the server sends (UDP payload), in bytes. Default
    /// 1200, which fits every IPv6 path; at least 256.
    pub mtu: u32,
    /// Most established sessions at once; a handshake from a new address
    /// beyond it is refused. Default 10 000. Each session holds an OpenSSL
    /// `SSL` of about 44 KiB (measured with OpenSSL 3.0: mostly its 17 KiB
    /// read buffer and the cipher contexts), so 10 000 sessions take about
    /// 430 MiB.
    pub max_sessions: usize,
    /// Most handshakes in progress at once (each holds an OpenSSL `Ssl` of
    /// about 47 KiB, created only after a valid cookie). Default 256
    /// (about 12 MiB).
    pub max_handshakes: usize,
    /// A handshake not complete this long after its ClientHello with
    /// cookie is dropped. Default 20 s (Zephyr clients give up after 15 s).
    pub handshake_timeout: Duration,
    /// A session with no authenticated datagram from its peer for this
    /// long is closed. Default 30 min.
    pub idle_timeout: Duration,
    /// How often the cookie secret rotates; a cookie is valid for one to
    /// two periods. Default 60 s.
    pub cookie_rotation: Duration,
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
        }
    }
}

impl DtlsConfig {
    pub(crate) fn validate(&self) -> Result<(), DtlsError> {
        if !(256..=65_507).contains(&self.mtu) {
            return Err(DtlsError::Config("mtu must be 256..=65507"));
        }
        if self.max_sessions == 0 || self.max_handshakes == 0 {
            return Err(DtlsError::Config(
                "max_sessions and max_handshakes must be at least 1",
            ));
        }
        if self.handshake_timeout.is_zero()
            || self.idle_timeout.is_zero()
            || self.cookie_rotation.is_zero()
        {
            return Err(DtlsError::Config(
                "handshake_timeout, idle_timeout and cookie_rotation must be positive",
            ));
        }
        Ok(())
    }
}
