//! An in-memory network between OpenSSL's own DTLS clients and a
//! `DtlsServer`, with a fake clock (quinn's `Pair`, for DTLS).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coapgate_dtls::{DtlsConfig, DtlsEvent, DtlsServer, Key, PskLookup};
use coapgate_exchange::clock::{self, Timers};
use openssl::ssl::{Ssl, SslContext, SslMethod, SslOptions, SslStream, SslVersion};

pub const ICCID: &str = "8988228066602306711";
pub const PSK: &[u8] = b"Ab3dEf6hIj9kLm2n";
pub const SUITES: [&str; 3] = [
    "PSK-AES128-CCM8",
    "PSK-AES128-CBC-SHA256",
    "PSK-AES128-GCM-SHA256",
];

/// A PSK table the test can change while the server runs.
pub type Entries = Vec<(String, Vec<u8>)>;

/// Shared so the test can change a key while the server holds the table.
#[derive(Default, Clone)]
pub struct Table(pub Arc<Mutex<Entries>>);

impl Table {
    pub fn with(identity: &str, key: &[u8]) -> Self {
        let t = Table::default();
        t.set(identity, key);
        t
    }
    pub fn set(&self, identity: &str, key: &[u8]) {
        let mut t = self.0.lock().unwrap();
        t.retain(|(i, _)| i != identity);
        t.push((identity.to_owned(), key.to_vec()));
    }
}

impl PskLookup for Table {
    fn key(&self, identity: &str) -> Option<Key> {
        let t = self.0.lock().unwrap();
        t.iter()
            .find(|(i, _)| i == identity)
            .map(|(_, k)| Key::new(k.clone()))
    }
}

/// Datagram queues for a client `SslStream`.
#[derive(Default, Debug)]
pub struct TestPipe {
    pub inbox: VecDeque<Vec<u8>>,
    pub outbox: Vec<Vec<u8>>,
}

impl Read for TestPipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inbox.pop_front() {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for TestPipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbox.push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// OpenSSL's DTLS 1.2 PSK client.
pub struct Client {
    pub addr: SocketAddr,
    pub stream: SslStream<TestPipe>,
    pub connected: bool,
    pub failed: bool,
    pub received: Vec<Vec<u8>>,
    /// Every datagram this client sent, in order.
    pub sent: Vec<Vec<u8>>,
    /// Every datagram it got.
    pub got: Vec<Vec<u8>>,
}

impl Client {
    pub fn new(addr: SocketAddr, suite: &str, identity: &str, key: &[u8]) -> Self {
        let mut ctx = SslContext::builder(SslMethod::dtls_client()).unwrap();
        ctx.set_min_proto_version(Some(SslVersion::DTLS1_2))
            .unwrap();
        ctx.set_max_proto_version(Some(SslVersion::DTLS1_2))
            .unwrap();
        ctx.set_cipher_list(suite).unwrap();
        ctx.set_options(SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
        let identity = identity.to_owned();
        let key = key.to_vec();
        ctx.set_psk_client_callback(move |_ssl, _hint, id_out, key_out| {
            id_out[..identity.len()].copy_from_slice(identity.as_bytes());
            id_out[identity.len()] = 0;
            key_out[..key.len()].copy_from_slice(&key);
            Ok(key.len())
        });
        let mut ssl = Ssl::new(&ctx.build()).unwrap();
        ssl.set_mtu(1200).unwrap();
        ssl.set_connect_state();
        Client {
            addr,
            stream: SslStream::new(ssl, TestPipe::default()).unwrap(),
            connected: false,
            failed: false,
            received: Vec::new(),
            sent: Vec::new(),
            got: Vec::new(),
        }
    }

    /// Runs the client's state machine on what it has received; returns
    /// the datagrams it wrote.
    pub fn step(&mut self) -> Vec<Vec<u8>> {
        if !self.connected && !self.failed {
            match self.stream.do_handshake() {
                Ok(()) => self.connected = true,
                Err(e) if e.code() == openssl::ssl::ErrorCode::WANT_READ => {}
                Err(_) => self.failed = true,
            }
        }
        if self.connected {
            let mut buf = [0u8; 4096];
            for _ in 0..64 {
                match self.stream.ssl_read(&mut buf) {
                    Ok(n) => self.received.push(buf[..n].to_vec()),
                    Err(_) => break,
                }
            }
        }
        let out = std::mem::take(&mut self.stream.get_mut().outbox);
        self.sent.extend(out.iter().cloned());
        out
    }

    pub fn write(&mut self, data: &[u8]) {
        self.stream.ssl_write(data).unwrap();
    }

    pub fn cipher(&self) -> &'static str {
        self.stream.ssl().current_cipher().unwrap().name()
    }
}

pub fn addr(n: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40_000 + n))
}

/// A server and some clients on an in-memory network.
pub struct Pair {
    pub server: DtlsServer,
    pub now: Instant,
    pub clients: Vec<Client>,
    /// Server events other than `Transmit`, in order.
    pub events: Vec<DtlsEvent>,
    /// Transmits to addresses without a client.
    pub stray: Vec<(SocketAddr, Vec<u8>)>,
    /// Drop the next this-many datagrams from clients to the server.
    pub drop_to_server: usize,
    /// Drop the next this-many datagrams from the server to clients.
    pub drop_to_client: usize,
    /// Handshakes from these addresses are refused (`DtlsServer::refuse`);
    /// all others accepted.
    pub refused: Vec<SocketAddr>,
}

impl Pair {
    pub fn new(config: DtlsConfig, table: Table) -> Self {
        Pair {
            server: DtlsServer::new(config, Arc::new(table)).unwrap(),
            now: Instant::now(),
            clients: Vec::new(),
            events: Vec::new(),
            stray: Vec::new(),
            drop_to_server: 0,
            drop_to_client: 0,
            refused: Vec::new(),
        }
    }

    pub fn add(&mut self, client: Client) -> usize {
        self.clients.push(client);
        self.clients.len() - 1
    }

    /// Delivers a datagram to the server as if from `from` and routes what
    /// comes back.
    pub fn inject(&mut self, from: SocketAddr, datagram: &[u8]) {
        self.server.handle_datagram(self.now, from, datagram);
        self.drain();
    }

    pub fn drain(&mut self) {
        while let Some(event) = self.server.poll_event() {
            match event {
                DtlsEvent::Transmit { to, bytes } => {
                    if self.drop_to_client > 0 {
                        self.drop_to_client -= 1;
                        continue;
                    }
                    match self.clients.iter_mut().find(|c| c.addr == to) {
                        Some(c) => {
                            c.got.push(bytes.clone());
                            c.stream.get_mut().inbox.push_back(bytes)
                        }
                        None => self.stray.push((to, bytes)),
                    }
                }
                DtlsEvent::Incoming(incoming) => {
                    if self.refused.contains(&incoming.addr()) {
                        self.server.refuse(incoming);
                    } else {
                        self.server.accept(self.now, incoming);
                    }
                }
                other => self.events.push(other),
            }
        }
    }

    /// Runs every client and the server until nothing moves (at most 100 rounds).
    pub fn pump(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            for i in 0..self.clients.len() {
                let out = self.clients[i].step();
                let from = self.clients[i].addr;
                for d in out {
                    moved = true;
                    if self.drop_to_server > 0 {
                        self.drop_to_server -= 1;
                        continue;
                    }
                    self.server.handle_datagram(self.now, from, &d);
                }
                self.drain();
            }
            if !moved
                && self
                    .clients
                    .iter()
                    .all(|c| c.stream.get_ref().inbox.is_empty())
            {
                return;
            }
        }
        panic!("the network did not settle in 100 rounds");
    }

    /// Lets time pass, each server timer firing at its own instant.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        clock::advance(self, self.now, target);
        self.now = target;
    }

    pub fn established(&self) -> Vec<(u64, SocketAddr, String)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                DtlsEvent::Established {
                    session,
                    addr,
                    identity,
                } => Some((*session, *addr, identity.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn data(&self) -> Vec<(u64, Vec<u8>)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                DtlsEvent::Data { session, bytes, .. } => Some((*session, bytes.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn closed(&self) -> Vec<(u64, coapgate_dtls::CloseReason)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                DtlsEvent::Closed { session, reason } => Some((*session, *reason)),
                _ => None,
            })
            .collect()
    }
}

impl Timers for Pair {
    fn poll_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.server.handle_timeout(self.now);
        self.drain();
    }
}

/// The extension types in the ServerHello of a server flight, if the
/// datagram carries one.
pub fn server_hello_extensions(datagram: &[u8]) -> Option<Vec<u16>> {
    let mut rest = datagram;
    while rest.len() >= 13 {
        let len = u16::from_be_bytes([rest[11], rest[12]]) as usize;
        let frag = rest.get(13..13 + len)?;
        if rest[0] == 22 && frag.first() == Some(&2) {
            // handshake header 12, version 2, random 32, session id, suite 2, compression 1
            let body = &frag[12..];
            let sid = body[34] as usize;
            let mut p = 35 + sid + 3;
            let ext_len = u16::from_be_bytes([body[p], body[p + 1]]) as usize;
            p += 2;
            let end = p + ext_len;
            let mut types = Vec::new();
            while p + 4 <= end {
                types.push(u16::from_be_bytes([body[p], body[p + 1]]));
                let l = u16::from_be_bytes([body[p + 2], body[p + 3]]) as usize;
                p += 4 + l;
            }
            return Some(types);
        }
        rest = &rest[13 + len..];
    }
    None
}
