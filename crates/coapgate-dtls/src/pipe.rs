//! The in-memory "socket" under each OpenSSL `Ssl`: an inbox of datagrams
//! that reads `WouldBlock` when empty, and an outbox of datagrams. Public
//! for clients too (the load generator runs OpenSSL's DTLS client over it).

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// At most this many datagrams wait in either direction. The server feeds
/// one datagram and drains the outbox right after every call into OpenSSL,
/// so the bound is never reached in practice; it only keeps a bug from
/// turning into unbounded memory.
const MAX_QUEUED: usize = 64;

/// One peer's datagram queues, for an `openssl::ssl::SslStream` that never
/// touches a socket: `read` returns one whole datagram (truncated to the
/// buffer, as a UDP socket would) or `WouldBlock`, which OpenSSL turns into
/// `WANT_READ`; `write` takes one datagram. At most 64 datagrams wait in
/// either direction.
#[derive(Debug, Default)]
pub struct Pipe {
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
}

impl Pipe {
    /// Queues a received datagram for OpenSSL; dropped when the inbox is full.
    pub fn push(&mut self, datagram: Vec<u8>) {
        if self.inbox.len() < MAX_QUEUED {
            self.inbox.push_back(datagram);
        }
    }

    /// Takes what OpenSSL wrote.
    pub fn take_outbox(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbox)
    }

    /// Forgets unread datagrams (after OpenSSL stopped reading).
    pub fn clear_inbox(&mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_datagram_per_read_and_write_and_would_block_when_empty() {
        let mut pipe = Pipe::default();
        let mut buf = [0u8; 8];
        let empty = pipe.read(&mut buf).map_err(|e| e.kind());
        assert_eq!(empty, Err(io::ErrorKind::WouldBlock));
        pipe.push(b"abc".to_vec());
        pipe.push(b"0123456789".to_vec());
        assert_eq!(pipe.read(&mut buf).ok(), Some(3));
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(pipe.read(&mut buf).ok(), Some(8), "truncated like UDP");
        assert!(pipe.write_all(b"xy").is_ok());
        assert_eq!(pipe.take_outbox(), vec![b"xy".to_vec()]);
        assert!(pipe.take_outbox().is_empty());
        pipe.push(b"unread".to_vec());
        pipe.clear_inbox();
        let cleared = pipe.read(&mut buf).map_err(|e| e.kind());
        assert_eq!(cleared, Err(io::ErrorKind::WouldBlock));
    }

    #[test]
    fn the_queues_are_bounded() {
        let mut pipe = Pipe::default();
        for _ in 0..MAX_QUEUED + 10 {
            pipe.push(vec![1]);
        }
        assert_eq!(pipe.inbox.len(), MAX_QUEUED);
        for _ in 0..MAX_QUEUED {
            assert!(pipe.write(&[2]).is_ok());
        }
        let full = pipe.write(&[2]).map_err(|e| e.kind());
        assert_eq!(full, Err(io::ErrorKind::WouldBlock));
    }
}
