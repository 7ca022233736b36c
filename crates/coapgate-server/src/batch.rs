//! Several datagrams per system call: `recvmmsg` to read what a socket
//! holds, `sendmmsg` to send what one turn of the event loop produced
//! (Linux, through nix's safe wrappers). One datagram per call elsewhere.
//!
//! Both work on a non-blocking tokio socket inside `try_io`, so tokio's
//! readiness is cleared exactly when the kernel says `EAGAIN`.

use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per `recvmmsg`.
pub(crate) const BATCH: usize = 32;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// Receive buffers for one socket: [`BATCH`] datagrams of any size. The
/// memory is reserved, not touched: the kernel writes (and so maps) only
/// the bytes datagrams bring.
pub(crate) struct Receiver {
    buffers: Vec<u8>,
    #[cfg(target_os = "linux")]
    headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
    /// What the last call received: length and sender of each datagram
    /// (`None` for a datagram that was cut short or had no IP sender).
    received: [(usize, Option<SocketAddr>); BATCH],
}

impl Receiver {
    pub(crate) fn new() -> Self {
        Self {
            buffers: vec![0; BATCH * MAX_DATAGRAM],
            #[cfg(target_os = "linux")]
            headers: nix::sys::socket::MultiHeaders::preallocate(BATCH, None),
            received: [(0, None); BATCH],
        }
    }

    /// Reads what `socket` holds now, up to [`BATCH`] datagrams, and hands
    /// each to `each`; returns how many were read (`WouldBlock` when none).
    /// A datagram longer than its buffer cannot happen (each holds the
    /// largest UDP payload); one flagged truncated anyway is skipped.
    pub(crate) fn receive(
        &mut self,
        socket: &UdpSocket,
        mut each: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        let count = socket.try_io(Interest::READABLE, || self.receive_now(socket))?;
        for (index, (len, from)) in self.received[..count].iter().enumerate() {
            if let Some(from) = from {
                let start = index * MAX_DATAGRAM;
                each(*from, &self.buffers[start..start + len]);
            }
        }
        Ok(count)
    }

    #[cfg(target_os = "linux")]
    fn receive_now(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;

        use nix::sys::socket::{MsgFlags, recvmmsg};

        let mut chunks = self.buffers.chunks_mut(MAX_DATAGRAM);
        let mut slices: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        let mut count = 0;
        for (slot, message) in self.received.iter_mut().zip(results) {
            let whole = !message.flags.contains(MsgFlags::MSG_TRUNC);
            *slot = (
                message.bytes,
                message
                    .address
                    .and_then(|a| socket_addr(&a))
                    .filter(|_| whole),
            );
            count += 1;
        }
        Ok(count)
    }

    #[cfg(not(target_os = "linux"))]
    fn receive_now(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let (len, from) = socket.try_recv_from(&mut self.buffers[..MAX_DATAGRAM])?;
        self.received[0] = (len, Some(from));
        Ok(1)
    }
}

#[cfg(target_os = "linux")]
fn socket_addr(address: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::from(std::net::SocketAddrV4::from(*v4)));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
}

/// Datagrams waiting to be sent on one socket, sent together by
/// [`flush`](Self::flush).
pub(crate) struct Sender {
    queue: Vec<(SocketAddr, Vec<u8>)>,
    #[cfg(target_os = "linux")]
    headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
}

impl Sender {
    pub(crate) fn new() -> Self {
        Self {
            queue: Vec::with_capacity(BATCH),
            #[cfg(target_os = "linux")]
            headers: nix::sys::socket::MultiHeaders::preallocate(BATCH, None),
        }
    }

    pub(crate) fn push(&mut self, to: SocketAddr, payload: Vec<u8>) {
        self.queue.push((to, payload));
    }

    /// Sends every queued datagram, [`BATCH`] per system call; waits for
    /// room when the socket's buffer is full. A datagram the kernel refuses
    /// (an unreachable address) is logged and dropped, as a lost datagram
    /// would be.
    pub(crate) async fn flush(&mut self, socket: &UdpSocket) {
        let mut sent = 0;
        while sent < self.queue.len() {
            match socket.try_io(Interest::WRITABLE, || self.send_now(socket, sent)) {
                Ok(n) => sent += n.max(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(error) = socket.writable().await {
                        tracing::debug!(%error, "UDP socket not writable");
                        break;
                    }
                }
                // The first datagram of the batch was refused.
                Err(error) => {
                    let to = self.queue[sent].0;
                    tracing::debug!(%error, %to, "send");
                    sent += 1;
                }
            }
        }
        self.queue.clear();
    }

    #[cfg(target_os = "linux")]
    fn send_now(&mut self, socket: &UdpSocket, from: usize) -> io::Result<usize> {
        use std::io::IoSlice;
        use std::os::fd::AsRawFd;

        use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmmsg};

        let batch = &self.queue[from..self.queue.len().min(from + BATCH)];
        // On the stack: no allocation per call. `sendmmsg` sends as many
        // messages as the shortest of slices, addresses and headers.
        let mut payloads = batch.iter().map(|(_, payload)| payload.as_slice());
        let slices: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSlice::new(payloads.next().unwrap_or_default())]);
        let mut to = batch.iter().map(|(to, _)| SockaddrStorage::from(*to));
        let addresses: [Option<SockaddrStorage>; BATCH] = std::array::from_fn(|_| to.next());
        let results = sendmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter().take(batch.len()),
            &addresses[..batch.len()],
            [] as [ControlMessage<'_>; 0],
            MsgFlags::MSG_DONTWAIT,
        )?;
        Ok(results.count())
    }

    #[cfg(not(target_os = "linux"))]
    fn send_now(&mut self, socket: &UdpSocket, from: usize) -> io::Result<usize> {
        let (to, payload) = &self.queue[from];
        socket.try_send_to(payload, *to).map(|_| 1)
    }
}
