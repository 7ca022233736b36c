//! The crate's error type.

use crate::SessionId;

/// What can go wrong in this crate. Errors never carry key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DtlsError {
    /// OpenSSL could not be set up as the configuration needs.
    #[error("invalid DTLS configuration: {0}")]
    Config(&'static str),
    /// A [`DtlsConfig`](crate::DtlsConfig) value is out of range (a zero
    /// cap or period, an MTU out of range).
    #[error("invalid DTLS configuration: {field}: {reason}")]
    InvalidConfig {
        /// The field, as the struct (and its serde form) names it.
        field: &'static str,
        /// What is wrong with its value.
        reason: &'static str,
    },
    /// OpenSSL accepted none of the configured cipher suites.
    #[error("OpenSSL accepts none of the cipher suites {ciphers:?}")]
    Ciphers {
        /// The configured cipher list.
        ciphers: String,
        /// OpenSSL's errors.
        #[source]
        source: openssl::error::ErrorStack,
    },
    /// OpenSSL failed to set up a context or an `Ssl` (out of memory, no randomness).
    #[error("OpenSSL setup failed")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    /// No established session has this ID (it closed, or never completed).
    #[error("no established DTLS session {0}")]
    UnknownSession(SessionId),
    /// The data does not fit in one record within the MTU.
    #[error(
        "{len} bytes do not fit in one DTLS record (at most {max} with this session's cipher and MTU)"
    )]
    TooLarge {
        /// Bytes offered.
        len: usize,
        /// The most that fits.
        max: usize,
    },
    /// OpenSSL refused to encrypt the data; the session has been closed
    /// (a `Closed` event follows).
    #[error("DTLS write on session {session} failed")]
    Write {
        /// The session, now closed.
        session: SessionId,
        /// OpenSSL's error.
        #[source]
        source: openssl::ssl::Error,
    },
}
