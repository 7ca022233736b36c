//! The DTLS 1.2 PSK client: OpenSSL's own (`SslMethod::dtls_client()`)
//! over one connected UDP socket per device.
//!
//! OpenSSL never touches the socket. Its `SslStream` runs over a
//! [`Pipe`] of datagram queues, and the device task moves datagrams between
//! the pipe and its tokio socket, so thousands of sessions share the
//! generator's one runtime thread. OpenSSL's handshake retransmission timer
//! reads the real clock: while a handshake waits, the task calls
//! `do_handshake` again every [`HANDSHAKE_POLL`], and OpenSSL resends its
//! last flight once its timer (1 s, doubling) has expired.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslSessionCacheMode, SslStream, SslVersion,
};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::client::MAX_DATAGRAM;
use crate::devices::key_of;
use crate::error::HandshakeError;
use crate::{LoadError, device_iccid, device_ip};
use coapgate_dtls::Pipe;

/// How often a waiting handshake gives OpenSSL a chance to retransmit.
const HANDSHAKE_POLL: Duration = Duration::from_millis(50);

/// The default cipher suite: what Zephyr and most modems offer first.
pub const DEFAULT_CIPHER: &str = "PSK-AES128-CCM8";

/// DTLS settings of a run.
#[derive(Debug, Clone)]
pub struct DtlsOptions {
    /// One key (its text's bytes) for every device, as libcoap's
    /// `coap-server -k KEY` wants; `None`: each device's
    /// [`device_psk`](crate::device_psk). The PSK identity is always the
    /// device's ICCID, which coapgate requires (it answers 4.01 when the
    /// identity is not the ICCID of the device at the source address);
    /// libcoap accepts any identity.
    pub psk: Option<String>,
    /// OpenSSL cipher list the client offers.
    pub cipher: String,
    /// `Some(n)`: the handshake benchmark, `n` fresh full handshakes over
    /// all devices, each on a new socket and closed with close_notify.
    /// `None`: one session per device, then the requests over them.
    pub handshakes: Option<u64>,
    /// A handshake not complete after this long counts as failed.
    pub handshake_timeout: Duration,
    /// Before the requests: at most this many handshakes at once (coapgate
    /// refuses more than `[coaps] max_handshakes`, 256 by default).
    pub parallel_handshakes: usize,
    /// The client's DTLS MTU (`SSL_set_mtu`).
    pub mtu: u32,
}

impl Default for DtlsOptions {
    fn default() -> Self {
        Self {
            psk: None,
            cipher: DEFAULT_CIPHER.to_owned(),
            handshakes: None,
            handshake_timeout: Duration::from_secs(10),
            parallel_handshakes: 64,
            mtu: 1200,
        }
    }
}

/// The identity and key of the device an `Ssl` belongs to.
struct DevicePsk {
    identity: String,
    key: Vec<u8>,
}

/// The DTLS client context shared by all devices.
pub(crate) struct Client {
    context: SslContext,
    psk_index: Index<Ssl, DevicePsk>,
    target: SocketAddr,
    psk: Option<String>,
    timeout: Duration,
    mtu: u32,
}

impl Client {
    pub(crate) fn new(target: SocketAddr, options: &DtlsOptions) -> Result<Self, LoadError> {
        let psk_index = Ssl::new_ex_index::<DevicePsk>().map_err(LoadError::OpenSsl)?;
        let mut builder =
            SslContext::builder(SslMethod::dtls_client()).map_err(LoadError::OpenSsl)?;
        builder
            .set_min_proto_version(Some(SslVersion::DTLS1_2))
            .map_err(LoadError::OpenSsl)?;
        builder
            .set_max_proto_version(Some(SslVersion::DTLS1_2))
            .map_err(LoadError::OpenSsl)?;
        builder
            .set_cipher_list(&options.cipher)
            .map_err(|source| LoadError::Cipher {
                cipher: options.cipher.clone(),
                source,
            })?;
        // No session resumption: every handshake is a full one.
        builder.set_options(SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
        builder.set_session_cache_mode(SslSessionCacheMode::OFF);
        builder.set_psk_client_callback(move |ssl, _hint, identity_out, key_out| {
            let Some(psk) = ssl.ex_data(psk_index) else {
                return Err(ErrorStack::get());
            };
            let identity = psk.identity.as_bytes();
            if identity.len() >= identity_out.len() || psk.key.len() > key_out.len() {
                return Err(ErrorStack::get());
            }
            identity_out[..identity.len()].copy_from_slice(identity);
            identity_out[identity.len()] = 0;
            key_out[..psk.key.len()].copy_from_slice(&psk.key);
            Ok(psk.key.len())
        });
        Ok(Self {
            context: builder.build(),
            psk_index,
            target,
            psk: options.psk.clone(),
            timeout: options.handshake_timeout,
            mtu: options.mtu,
        })
    }

    /// A fresh full handshake from device `index` on a new socket: the
    /// session and the handshake's latency (first ClientHello to Finished,
    /// the cookie round trip included), or why it failed.
    pub(crate) async fn connect(
        &self,
        index: usize,
    ) -> Result<(Session, Duration), HandshakeError> {
        let addr = SocketAddr::new(IpAddr::V4(device_ip(index)?), 0);
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| HandshakeError::Bind { addr, source })?;
        socket
            .connect(self.target)
            .await
            .map_err(HandshakeError::Connect)?;
        let setup = |step| move |source| HandshakeError::Setup { step, source };
        let mut ssl = Ssl::new(&self.context).map_err(setup("Ssl::new"))?;
        ssl.set_mtu(self.mtu).map_err(setup("set_mtu"))?;
        ssl.set_ex_data(
            self.psk_index,
            DevicePsk {
                identity: device_iccid(index),
                key: key_of(self.psk.as_deref(), index).into_bytes(),
            },
        );
        ssl.set_connect_state();
        let stream = SslStream::new(ssl, Pipe::default()).map_err(setup("SslStream"))?;
        let mut session = Session {
            socket,
            stream,
            closed: false,
        };
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match session.stream.do_handshake() {
                Ok(()) => break,
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                Err(e) => {
                    // Send the alert OpenSSL wrote, if any.
                    session.flush_quietly().await;
                    return Err(HandshakeError::Handshake(error_reason(&e)));
                }
            }
            session.flush().await.map_err(HandshakeError::Send)?;
            let now = Instant::now();
            if now >= deadline {
                return Err(HandshakeError::Timeout);
            }
            let wait = (deadline - now).min(HANDSHAKE_POLL);
            match tokio::time::timeout(wait, session.socket.recv(&mut buf)).await {
                Ok(Ok(n)) => session.feed(&buf[..n]),
                // ECONNREFUSED from an ICMP port unreachable: nobody listens.
                Ok(Err(e)) => return Err(HandshakeError::Receive(e)),
                Err(_) => {} // OpenSSL's retransmission timer may have expired
            }
        }
        let latency = start.elapsed();
        session.flush().await.map_err(HandshakeError::Send)?;
        Ok((session, latency))
    }
}

/// The most telling text of an OpenSSL error.
fn error_reason(e: &openssl::ssl::Error) -> String {
    if let Some(reason) = e
        .ssl_error()
        .and_then(|stack| stack.errors().first())
        .and_then(openssl::error::Error::reason)
    {
        return reason.to_owned();
    }
    if let Some(io) = e.io_error() {
        return io.to_string();
    }
    format!("{:?}", e.code())
}

/// An established DTLS session over a connected socket.
pub(crate) struct Session {
    pub(crate) socket: UdpSocket,
    stream: SslStream<Pipe>,
    /// The peer sent close_notify or a fatal alert.
    pub(crate) closed: bool,
}

impl Session {
    /// Sends what OpenSSL wrote.
    async fn flush(&mut self) -> io::Result<()> {
        let outbox = self.stream.get_mut().take_outbox();
        for datagram in outbox {
            self.socket.send(&datagram).await?;
        }
        Ok(())
    }

    /// Queues a received datagram for OpenSSL.
    pub(crate) fn feed(&mut self, datagram: &[u8]) {
        self.stream.get_mut().push(datagram.to_vec());
    }

    /// Encrypts one application-data record and sends it.
    pub(crate) async fn send(&mut self, plaintext: &[u8]) -> io::Result<()> {
        if self.closed {
            return Err(io::ErrorKind::NotConnected.into());
        }
        self.stream
            .ssl_write(plaintext)
            .map_err(|e| io::Error::other(error_reason(&e)))?;
        self.flush().await
    }

    /// The next decrypted record of what was fed, into `buf`: `Some(n)`, or
    /// `None` when nothing (more) is readable. Records that fail to
    /// authenticate are dropped by OpenSSL, as DTLS says.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.closed {
            self.stream.get_mut().clear_inbox();
            return None;
        }
        match self.stream.ssl_read(buf) {
            Ok(n) => Some(n),
            Err(e) if e.code() == ErrorCode::WANT_READ => None,
            Err(_) => {
                // ZERO_RETURN (close_notify) or a fatal error.
                self.closed = true;
                None
            }
        }
    }

    /// Sends what OpenSSL has queued (an ACK it owes, an alert).
    pub(crate) async fn flush_quietly(&mut self) {
        let _ = self.flush().await;
    }

    /// close_notify, then drop the socket.
    pub(crate) async fn close(mut self) {
        if !self.closed {
            let _ = self.stream.shutdown();
            self.flush_quietly().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_cipher_is_a_configuration_error() {
        let options = DtlsOptions {
            cipher: "NO-SUCH-CIPHER".to_owned(),
            ..DtlsOptions::default()
        };
        let Err(error) = Client::new(SocketAddr::from(([127, 0, 0, 1], 9)), &options) else {
            panic!("OpenSSL took an unknown cipher list");
        };
        assert!(
            error
                .to_string()
                .starts_with("configuration: --cipher NO-SUCH-CIPHER: "),
            "{error}"
        );
        Client::new(
            SocketAddr::from(([127, 0, 0, 1], 9)),
            &DtlsOptions::default(),
        )
        .unwrap();
    }
}
