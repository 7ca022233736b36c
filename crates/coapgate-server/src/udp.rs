//! The UDP socket: bound with large kernel buffers, because a burst of a
//! few hundred datagrams overflows Linux's default 208 KiB receive buffer;
//! dual-stack where the address is `[::]`, so IPv4 and IPv6 SIMs reach the
//! same socket (IPv4 peers then show as `::ffff:a.b.c.d`, which the engine
//! reads as `a.b.c.d`).
//!
//! With several shards (`[coap] threads`), each listener is a group of
//! sockets on one address with `SO_REUSEPORT`, and a device's datagrams
//! reach the shard its source address picks (the `steer` module).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::ServerError;

/// Binds `count` sockets on one address for the shards, with
/// `SO_REUSEPORT` when there is more than one, on the port the first got
/// (so port 0 works). Not yet registered with a runtime: each shard does
/// that on its own ([`register`]).
///
/// `SO_REUSEPORT` lets any socket of the same user join a group. So that a
/// second server started on the same port fails as it would with one shard
/// instead of silently taking a share of the devices, the address is first
/// bound without it, which fails if a group already holds the port.
pub(crate) fn bind_group(
    addr: SocketAddr,
    count: usize,
    recv_buffer: usize,
    send_buffer: usize,
) -> Result<Vec<std::net::UdpSocket>, ServerError> {
    let first = bind_any_family(addr, recv_buffer, send_buffer, count > 1)?;
    let mut group = vec![first];
    if count > 1 {
        let addr = group[0].local_addr().map_err(|source| ServerError::Io {
            what: format!("socket address of {addr}"),
            source,
        })?;
        for _ in 1..count {
            group.push(bind(addr, recv_buffer, send_buffer, true)?);
        }
        if let Err(error) = crate::steer::by_source_ip(&group[0], count) {
            tracing::warn!(
                %addr,
                %error,
                "cannot steer datagrams to shards by source address; the kernel spreads them by address and port"
            );
        }
    }
    Ok(group)
}

/// Registers a socket of [`bind_group`] with the current tokio runtime.
pub(crate) fn register(socket: std::net::UdpSocket) -> Result<UdpSocket, ServerError> {
    UdpSocket::from_std(socket).map_err(|source| ServerError::Io {
        what: "register a UDP socket".into(),
        source,
    })
}

/// [`bind`], except that the unspecified IPv6 address (`[::]`, the default)
/// falls back to `0.0.0.0` on the same port, with a log line, on a host
/// without IPv6.
fn bind_any_family(
    addr: SocketAddr,
    recv_buffer: usize,
    send_buffer: usize,
    shared: bool,
) -> Result<std::net::UdpSocket, ServerError> {
    match bind_first(addr, recv_buffer, send_buffer, shared) {
        Err(ServerError::Io { source, .. })
            if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED && no_ipv6(&source) =>
        {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            tracing::warn!(%addr, fallback = %v4, error = %source, "no IPv6 on this host; listening on IPv4 only");
            bind_first(v4, recv_buffer, send_buffer, shared)
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

/// The first socket of a group: when the group is `shared`, the address is
/// bound once without `SO_REUSEPORT` first (and let go), so that a port
/// another group holds is refused rather than joined.
fn bind_first(
    addr: SocketAddr,
    recv_buffer: usize,
    send_buffer: usize,
    shared: bool,
) -> Result<std::net::UdpSocket, ServerError> {
    if !shared {
        return bind(addr, recv_buffer, send_buffer, false);
    }
    let probe = bind(addr, recv_buffer, send_buffer, false)?;
    let addr = probe.local_addr().map_err(|source| ServerError::Io {
        what: format!("socket address of {addr}"),
        source,
    })?;
    drop(probe);
    bind(addr, recv_buffer, send_buffer, true)
}

/// Binds a non-blocking UDP socket with the requested buffer sizes, with
/// `SO_REUSEPORT` when `shared`. The kernel caps SO_RCVBUF at
/// `net.core.rmem_max` (SO_SNDBUF at `net.core.wmem_max`); a smaller result
/// is logged with the sysctl to raise.
fn bind(
    addr: SocketAddr,
    recv_buffer: usize,
    send_buffer: usize,
    shared: bool,
) -> Result<std::net::UdpSocket, ServerError> {
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
    if shared {
        socket
            .set_reuse_port(true)
            .map_err(io("set SO_REUSEPORT on"))?;
    }
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
    Ok(socket.into())
}
