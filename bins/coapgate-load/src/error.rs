//! Why a run could not be made ([`LoadError`]), and why one DTLS handshake
//! failed ([`HandshakeError`], whose text is the key of
//! [`Report::handshake_failures`](crate::Report::handshake_failures)).

use std::io;
use std::net::SocketAddr;

use openssl::error::ErrorStack;

/// Why a load run could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The configuration is not usable (the text says why).
    #[error("configuration: {0}")]
    Config(&'static str),
    /// A transmission parameter is out of range.
    #[error("configuration: {0}")]
    Transmission(#[from] coapgate_exchange::InvalidParam),
    /// The device's address would be past the loopback network.
    #[error("configuration: device {index} is beyond 127.255.255.255")]
    DeviceAddress {
        /// The device's number, counting from 0.
        index: usize,
    },
    /// OpenSSL could not set up the DTLS client context.
    #[error("configuration: OpenSSL: {0}")]
    OpenSsl(#[source] ErrorStack),
    /// OpenSSL accepts none of the cipher suites in the list.
    #[error("configuration: --cipher {cipher}: {source}")]
    Cipher {
        /// The cipher list given.
        cipher: String,
        /// OpenSSL's error.
        source: ErrorStack,
    },
    /// A device socket could not be bound.
    #[error(
        "cannot bind {addr}: {source} (every 127.0.0.0/8 address is loopback on Linux; elsewhere add the aliases)"
    )]
    Bind {
        /// The address it was to be bound to.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A request could not be encoded (a bug: the generator builds them).
    #[error("cannot encode a request: {0}")]
    Encode(#[from] coapgate_codec::EncodeError),
    /// A device task ended abnormally.
    #[error("device task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why one DTLS handshake failed. The text is what the report counts
/// failures by, so equal causes must print equal text.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The device has no address (cannot happen after validation).
    #[error(transparent)]
    Config(#[from] LoadError),
    /// The device's socket could not be bound.
    #[error("bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    /// The device's socket could not be connected to the target.
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    /// OpenSSL could not make the session (`step` is the call that failed).
    #[error("{step}: {source}")]
    Setup {
        step: &'static str,
        source: ErrorStack,
    },
    /// The handshake failed; OpenSSL's reason text.
    #[error("handshake: {0}")]
    Handshake(String),
    /// A handshake datagram could not be sent.
    #[error("send: {0}")]
    Send(#[source] io::Error),
    /// Receiving failed (ECONNREFUSED: nobody listens at the target).
    #[error("receive: {0}")]
    Receive(#[source] io::Error),
    /// No Finished within the handshake timeout.
    #[error("handshake timeout")]
    Timeout,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_those_the_command_line_prints() {
        assert_eq!(
            LoadError::Config("at least one device").to_string(),
            "configuration: at least one device"
        );
        assert_eq!(
            LoadError::DeviceAddress { index: 7 }.to_string(),
            "configuration: device 7 is beyond 127.255.255.255"
        );
        assert_eq!(HandshakeError::Timeout.to_string(), "handshake timeout");
        assert_eq!(
            HandshakeError::Handshake("unknown psk identity".to_owned()).to_string(),
            "handshake: unknown psk identity"
        );
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            HandshakeError::Receive(refused).to_string(),
            format!(
                "receive: {}",
                io::Error::from(io::ErrorKind::ConnectionRefused)
            )
        );
    }
}
