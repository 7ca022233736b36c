//! The in-memory "socket" under each OpenSSL `Ssl`: an inbox of datagrams
//! that reads `WouldBlock` when empty, and an outbox of datagrams.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// At most this many datagrams wait in either direction. The server feeds
/// one datagram and drains the outbox right after every call into OpenSSL,
/// so the bound is never reached in practice; it only keeps a bug from
/// turning into unbounded memory.
const MAX_QUEUED: usize = 64;

/// One peer's datagram queues. `read` returns one whole datagram (truncated
/// to the buffer, as a UDP socket would); `write` takes one datagram.
#[derive(Debug, Default)]
pub(crate) struct Pipe {
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
}

impl Pipe {
    /// Queues a received datagram for OpenSSL; dropped when the inbox is full.
    pub(crate) fn push(&mut self, datagram: Vec<u8>) {
        if self.inbox.len() < MAX_QUEUED {
            self.inbox.push_back(datagram);
        }
    }

    /// Takes what OpenSSL wrote.
    pub(crate) fn take_outbox(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbox)
    }

    /// Forgets unread datagrams (after OpenSSL stopped reading).
    pub(crate) fn clear_inbox(&mut self) {
        self.inbox.clear();
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inbox.pop_front() {
            Some(datagram) => {
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.outbox.len() >= MAX_QUEUED {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.outbox.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
