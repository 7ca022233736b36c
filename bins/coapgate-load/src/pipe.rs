//! The datagram pipe OpenSSL's DTLS stream runs over: what OpenSSL writes
//! is queued for the device task to send, what the task received is queued
//! for OpenSSL to read. OpenSSL never touches a socket.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// Datagram queues between OpenSSL and the device's socket: a read with
/// nothing queued is `WouldBlock`, which OpenSSL turns into `WANT_READ`.
#[derive(Debug, Default)]
pub(crate) struct Pipe {
    /// Received datagrams, oldest first.
    inbox: VecDeque<Vec<u8>>,
    /// Datagrams OpenSSL wrote, to be sent in order.
    outbox: Vec<Vec<u8>>,
}

impl Pipe {
    /// Queues a received datagram for OpenSSL.
    pub(crate) fn push(&mut self, datagram: &[u8]) {
        self.inbox.push_back(datagram.to_vec());
    }

    /// Takes what OpenSSL wrote, oldest first.
    pub(crate) fn take_outbox(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbox)
    }

    /// Forgets unread datagrams (after the session closed).
    pub(crate) fn clear_inbox(&mut self) {
        self.inbox.clear();
    }
}

impl Read for Pipe {
    /// One whole datagram (truncated to `buf`), as a UDP socket reads.
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
    /// Each write is one datagram.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
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
    fn the_pipe_blocks_when_empty() {
        let mut pipe = Pipe::default();
        let mut buf = [0u8; 8];
        assert_eq!(
            pipe.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        pipe.push(b"abc");
        assert_eq!(pipe.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        pipe.write_all(b"xy").unwrap();
        assert_eq!(pipe.take_outbox(), vec![b"xy".to_vec()]);
        assert!(pipe.take_outbox().is_empty());
        pipe.push(b"unread");
        pipe.clear_inbox();
        assert_eq!(
            pipe.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn datagrams_keep_their_boundaries() {
        let mut pipe = Pipe::default();
        pipe.push(b"first");
        pipe.push(b"second");
        let mut small = [0u8; 3];
        assert_eq!(pipe.read(&mut small).unwrap(), 3);
        assert_eq!(&small, b"fir");
        let mut buf = [0u8; 16];
        assert_eq!(pipe.read(&mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"second");
        pipe.write_all(b"a").unwrap();
        pipe.write_all(b"b").unwrap();
        assert_eq!(pipe.take_outbox(), vec![b"a".to_vec(), b"b".to_vec()]);
    }
}
