//! The floor: the least a CoAP server can do per request. One `recv_from`,
//! one `send_to`, and between them only what a piggybacked answer needs —
//! an ACK 2.04 with the request's message ID and token, no options, no
//! payload. Nothing is parsed beyond the 4-byte header and the token
//! length, nothing is remembered, nothing is forwarded.
//!
//! The benchmark (`bins/coapgate-load/bench.sh`) measures every server
//! against it in the same run: its CPU per answer is what the kernel's
//! UDP path costs on this machine, the part no CoAP server can save.

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// CoAP version 1, type ACK, token length 0 — the token length is or'ed in.
const ACK: u8 = 0b0110_0000;
/// CoAP version 1, type RST, token length 0.
const RST: u8 = 0b0111_0000;
/// 2.04 Changed.
const CHANGED: u8 = 0x44;

/// The answer to one datagram, written into `out`: `Some(len)` for a CON
/// request with a well-formed header, and a RST for a CoAP ping (an empty
/// CON, which the benchmark uses to see that a server is up); `None` for
/// anything else.
fn answer(datagram: &[u8], out: &mut [u8; 12]) -> Option<usize> {
    let (&first, rest) = datagram.split_first()?;
    let token_len = usize::from(first & 0x0f);
    let is_con_v1 = first >> 4 == 0b0100;
    let code = *rest.first()?;
    if is_con_v1 && code == 0 && datagram.len() == 4 {
        out[0] = RST;
        out[1] = 0;
        out[2..4].copy_from_slice(datagram.get(2..4)?);
        return Some(4);
    }
    let is_request = (1..=31).contains(&code);
    if !is_con_v1 || !is_request || token_len > 8 {
        return None;
    }
    let header = datagram.get(2..4 + token_len)?;
    out[0] = ACK | first & 0x0f;
    out[1] = CHANGED;
    let len = 2 + header.len();
    out[2..len].copy_from_slice(header);
    Some(len)
}

/// Serves the floor on `addr` until the process is killed (or the socket
/// fails), one datagram at a time on the calling thread.
pub fn serve_floor(addr: SocketAddr) -> io::Result<()> {
    let socket = UdpSocket::bind(addr)?;
    let mut buf = [0u8; 1500];
    let mut out = [0u8; 12];
    loop {
        let (n, peer) = socket.recv_from(&mut buf)?;
        if let Some(len) = buf.get(..n).and_then(|d| answer(d, &mut out)) {
            // A full send buffer drops the answer; the client retransmits.
            let _ = socket.send_to(&out[..len], peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_con_post_gets_an_ack_2_04_with_its_mid_and_token() {
        let request = [
            0x42, 0x02, 0x12, 0x34, 0xaa, 0xbb, 0xb4, b'd', b'a', b't', b'a',
        ];
        let mut out = [0u8; 12];
        let len = answer(&request, &mut out).expect("an answer");
        assert_eq!(&out[..len], &[0x62, 0x44, 0x12, 0x34, 0xaa, 0xbb]);
    }

    #[test]
    fn a_ping_gets_a_rst() {
        let mut out = [0u8; 12];
        let len = answer(&[0x40, 0x00, 0xbe, 0xef], &mut out).expect("a RST");
        assert_eq!(&out[..len], &[0x70, 0x00, 0xbe, 0xef]);
    }

    #[test]
    fn anything_else_gets_nothing() {
        let mut out = [0u8; 12];
        for datagram in [
            &[][..],
            &[0x40],
            &[0x40, 0x00, 0, 1, 0xff],       // an empty CON with a payload
            &[0x50, 0x02, 0, 1],             // NON
            &[0x60, 0x44, 0, 1],             // ACK
            &[0x49, 0x02, 0, 1, 1, 2, 3, 4], // token length 9
            &[0x44, 0x02, 0, 1, 1, 2],       // token cut short
            &[0x82, 0x02, 0, 1, 1, 2],       // version 2
        ] {
            assert_eq!(answer(datagram, &mut out), None, "{datagram:02x?}");
        }
    }
}
