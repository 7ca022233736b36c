//! The UDP socket: bound with large kernel buffers, because a burst of a
//! few hundred datagrams overflows Linux's default 208 KiB receive buffer.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::ServerError;

/// Binds a non-blocking UDP socket with the requested buffer sizes. The
/// kernel caps SO_RCVBUF at `net.core.rmem_max` (SO_SNDBUF at
/// `net.core.wmem_max`); a smaller result is logged with the sysctl to raise.
pub(crate) fn bind(
    addr: SocketAddr,
    recv_buffer: usize,
    send_buffer: usize,
) -> Result<UdpSocket, ServerError> {
    let io = |what: &str| {
        let what = format!("{what} {addr}");
        move |source| ServerError::Io { what, source }
    };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(io("create socket for"))?;
    if addr.is_ipv6() {
        // Accept IPv4-mapped peers too where the OS allows it.
        let _ = socket.set_only_v6(false);
    }
    socket
        .set_recv_buffer_size(recv_buffer)
        .map_err(io("set SO_RCVBUF on"))?;
    socket
        .set_send_buffer_size(send_buffer)
        .map_err(io("set SO_SNDBUF on"))?;
    socket
        .set_nonblocking(true)
        .map_err(io("set non-blocking on"))?;
    socket.bind(&addr.into()).map_err(io("bind"))?;
    // Linux reports twice the value it granted (the bookkeeping overhead).
    if let Ok(got) = socket.recv_buffer_size() {
        if got < recv_buffer {
            tracing::warn!(
                requested = recv_buffer,
                granted = got,
                "UDP receive buffer smaller than configured; raise net.core.rmem_max (see docs/configuration.md)"
            );
        }
    }
    UdpSocket::from_std(socket.into()).map_err(io("register socket"))
}
