//! Which shard a datagram reaches: chosen by its source IP address.
//!
//! A socket group on one port (`SO_REUSEPORT`) spreads datagrams by a hash
//! of the 4-tuple, so a device whose NAT binding changed — a new source
//! port after sleep, or each run of a command-line client — would meet
//! another shard: another dedup cache, another rate-limit bucket, another
//! DTLS session table. coapgate identifies a device by its SIM's address,
//! so it steers by that address instead: a classic BPF program attached to
//! the group (`SO_ATTACH_REUSEPORT_CBPF`, Linux ≥ 4.5) returns the index
//! of the socket to deliver to: [`shard_of`] of the source address — a
//! Fibonacci hash of its 32 bits (IPv4) or of the XOR of its four 32-bit
//! words (IPv6), so that addresses handed out in strides (one per /30, say)
//! still spread over every shard. Where the program cannot be attached (another OS), the
//! kernel's 4-tuple hash stays, which still keeps each exchange (one
//! address, one port) on one shard.

use std::net::{IpAddr, UdpSocket};

/// The multiplier of the Fibonacci hash: 2³² divided by the golden ratio.
const GOLDEN: u32 = 0x9e37_79b9;

/// The shard (of `shards`) a datagram from `source` reaches: what the
/// steering program computes, for tests and tools. An IPv4-mapped IPv6
/// address is its IPv4 address (the packet on the wire is IPv4).
pub fn shard_of(source: IpAddr, shards: u32) -> u32 {
    let word = match source.to_canonical() {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => v6
            .octets()
            .chunks_exact(4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            .fold(0, |acc, w| acc ^ w),
    };
    (word.wrapping_mul(GOLDEN) >> 16) % shards.max(1)
}

/// The program for `shards` sockets, as `(code, jt, jf, k)`.
///
/// The kernel runs it with the packet positioned after the UDP header;
/// `SKF_NET_OFF` addresses the network header instead. Its first nibble is
/// the IP version; an IPv4 source is at offset 12, an IPv6 source at 8–23.
#[cfg(target_os = "linux")]
fn program(shards: u32) -> [(u16, u8, u8, u32); 19] {
    use nix::libc::{
        BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_JA, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_MISC, BPF_MOD,
        BPF_MUL, BPF_RET, BPF_RSH, BPF_TAX, BPF_W, BPF_X, BPF_XOR, SKF_NET_OFF,
    };
    // The offsets are negative numbers in the instruction's unsigned field
    // (two's complement, as the kernel reads them back).
    let net = |offset: i32| u32::from_ne_bytes((SKF_NET_OFF + offset).to_ne_bytes());
    let op = |code: u32| u16::try_from(code).unwrap_or(u16::MAX);
    let load_word = |offset| (op(BPF_LD | BPF_W | BPF_ABS), 0, 0, net(offset));
    let xor_x = (op(BPF_ALU | BPF_XOR | BPF_X), 0, 0, 0);
    let tax = (op(BPF_MISC | BPF_TAX), 0, 0, 0);
    [
        // 0: A = version nibble
        (op(BPF_LD | BPF_B | BPF_ABS), 0, 0, net(0)),
        (op(BPF_ALU | BPF_RSH | BPF_K), 0, 0, 4),
        // 2: IPv4 → 3, else → 5
        (op(BPF_JMP | BPF_JEQ | BPF_K), 0, 2, 4),
        // 3: IPv4: A = source; on to 15
        load_word(12),
        (op(BPF_JMP | BPF_JA), 0, 0, 10),
        // 5: IPv6: A = word 0 ^ word 1 ^ word 2 ^ word 3 of the source
        load_word(8),
        tax,
        load_word(12),
        xor_x,
        tax,
        load_word(16),
        xor_x,
        tax,
        load_word(20),
        xor_x,
        // 15: the socket's index, as `shard_of`
        (op(BPF_ALU | BPF_MUL | BPF_K), 0, 0, GOLDEN),
        (op(BPF_ALU | BPF_RSH | BPF_K), 0, 0, 16),
        (op(BPF_ALU | BPF_MOD | BPF_K), 0, 0, shards.max(1)),
        (op(BPF_RET | BPF_A), 0, 0, 0),
    ]
}

/// Attaches the steering program to `socket`'s group of `shards` sockets
/// (the group's sockets are indexed in the order they were bound).
#[cfg(target_os = "linux")]
pub(crate) fn by_source_ip(socket: &UdpSocket, shards: usize) -> std::io::Result<()> {
    use nix::libc::{sock_filter, sock_fprog};
    use nix::sys::socket::{setsockopt, sockopt};

    let shards = u32::try_from(shards).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut filters: Vec<sock_filter> = program(shards)
        .into_iter()
        .map(|(code, jt, jf, k)| sock_filter { code, jt, jf, k })
        .collect();
    let program = sock_fprog {
        len: u16::try_from(filters.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?,
        // Read by the kernel during the call only; `filters` outlives it.
        filter: filters.as_mut_ptr(),
    };
    setsockopt(socket, sockopt::AttachReusePortCbpf, &program)?;
    Ok(())
}

/// Elsewhere the kernel's own spreading stays.
#[cfg(not(target_os = "linux"))]
pub(crate) fn by_source_ip(_socket: &UdpSocket, _shards: usize) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program() {
        let program = program(4);
        for (at, (code, jt, jf, k)) in program.iter().enumerate() {
            let jump = u32::from(*code) & 0x07 == nix::libc::BPF_JMP;
            if jump {
                let targets = if u32::from(*code) & 0xf0 == nix::libc::BPF_JA {
                    vec![at + 1 + *k as usize]
                } else {
                    vec![at + 1 + usize::from(*jt), at + 1 + usize::from(*jf)]
                };
                for target in targets {
                    assert!(target < program.len(), "jump at {at} to {target}");
                }
            }
        }
        // Both paths meet at the hash, which ends with the shard count.
        assert_eq!(program[15].3, GOLDEN);
        assert_eq!(program[17].3, 4);
        assert_eq!(
            u32::from(program[18].0),
            nix::libc::BPF_RET | nix::libc::BPF_A
        );
    }

    #[test]
    fn addresses_in_strides_still_spread() {
        // One device per /30: every address a multiple of 4.
        let mut seen = [0u32; 4];
        for n in 0..4000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + 4 * n));
            seen[shard_of(ip, 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(
            shard_of(mapped, 4),
            shard_of("10.0.0.7".parse().unwrap(), 4)
        );
    }
}
