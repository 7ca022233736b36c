//! The UDP socket: bound with large kernel buffers, because a burst of a
//! few hundred datagrams overflows Linux's default 208 KiB receive buffer;
//! dual-stack where the address is `[::]`, so IPv4 and IPv6 SIMs reach the
//! same socket (IPv4 peers then show as `::ffff:a.b.c.d`, which the engine
//! reads as `a.b.c.d`).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::ServerError;

/// [`bind`], except that the unspecified IPv6 address (`[::]`, the default)
/// falls back to `0.0.0.0` on the same port, with a log line, on a host
/// without IPv6.
pub(crate) fn bind_any_family(
    addr: SocketAddr,
    recv_buffer: usize,
    send_buffer: usize,
) -> Result<UdpSocket, ServerError> {
    match bind(addr, recv_buffer, send_buffer) {
        Err(ServerError::Io { source, .. })
            if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED && no_ipv6(&source) =>
        {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            tracing::warn!(%addr, fallback = %v4, error = %source, "no IPv6 on this host; listening on IPv4 only");
            bind(v4, recv_buffer, send_buffer)
        }
        other => other,
    }
}

/// Whether a socket error says the host has no IPv6.
fn no_ipv6(error: &std::io::Error) -> bool {
    // EAFNOSUPPORT (IPv6 compiled out or disabled), EADDRNOTAVAIL.
    matches!(error.raw_os_error(), Some(97 | 99))
        || error.kind() == ErrorKind::AddrNotAvailable
        || error.kind() == ErrorKind::Unsupported
}

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
        // Dual-stack: IPv4 peers arrive as IPv4-mapped addresses.
        socket
            .set_only_v6(false)
            .map_err(io("allow IPv4 peers (IPV6_V6ONLY off) on"))?;
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
