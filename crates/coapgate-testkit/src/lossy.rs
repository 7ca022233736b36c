//! A lossy UDP link between devices and a server, for fault tests.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What a [`LossyLink`] does to each datagram, in each direction
/// independently. Decisions come from a seeded RNG per flow and direction,
/// so the same sequence of datagrams is treated the same way every run.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// Probability a datagram is dropped.
    pub drop: f64,
    /// Probability a forwarded datagram is sent twice.
    pub duplicate: f64,
    /// Probability a forwarded datagram is held back and sent after the
    /// next one of its flow and direction (or after [`Self::hold`] when
    /// none comes).
    pub reorder: f64,
    /// The longest a reordered datagram is held.
    pub hold: Duration,
    /// Seed of the RNGs.
    pub seed: u64,
}

impl Impairment {
    /// `drop` lost each way, 3 % duplicated, 3 % reordered (held up to
    /// 150 ms), seeded with `seed`.
    pub fn lossy(drop: f64, seed: u64) -> Self {
        Impairment {
            drop,
            duplicate: 0.03,
            reorder: 0.03,
            hold: Duration::from_millis(150),
            seed,
        }
    }
}

/// What a [`LossyLink`] did so far, in one direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams that arrived at the link.
    pub seen: u64,
    /// Of those, dropped.
    pub dropped: u64,
    /// Of those, sent twice.
    pub duplicated: u64,
    /// Of those, held back behind a later one.
    pub reordered: u64,
}

#[derive(Default)]
struct Counters {
    seen: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            seen: self.seen.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
        }
    }
}

/// One direction of one flow: the RNG and a datagram held back.
struct Shaper {
    rng: StdRng,
    imp: Impairment,
    held: Option<(Instant, Vec<u8>)>,
}

impl Shaper {
    fn new(imp: Impairment, flow: u64, direction: u64) -> Self {
        let seed = imp.seed ^ flow.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ direction;
        Shaper {
            rng: StdRng::seed_from_u64(seed),
            imp,
            held: None,
        }
    }

    /// Treats one datagram; `send` puts a datagram on the wire.
    fn datagram(&mut self, bytes: &[u8], counters: &Counters, send: &mut impl FnMut(&[u8])) {
        counters.seen.fetch_add(1, Ordering::Relaxed);
        // Draw all three every time, so one decision never shifts the others.
        let (d, u, r): (f64, f64, f64) = (self.rng.random(), self.rng.random(), self.rng.random());
        if d < self.imp.drop {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if r < self.imp.reorder && self.held.is_none() {
            counters.reordered.fetch_add(1, Ordering::Relaxed);
            self.held = Some((Instant::now(), bytes.to_vec()));
            return;
        }
        send(bytes);
        if u < self.imp.duplicate {
            counters.duplicated.fetch_add(1, Ordering::Relaxed);
            send(bytes);
        }
        if let Some((_, held)) = self.held.take() {
            send(&held);
        }
    }

    /// Sends a held datagram that waited long enough.
    fn flush(&mut self, send: &mut impl FnMut(&[u8])) {
        if self
            .held
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() >= self.imp.hold)
        {
            if let Some((_, held)) = self.held.take() {
                send(&held);
            }
        }
    }
}

struct Flow {
    upstream: UdpSocket,
    shaper: Shaper,
}

/// A UDP proxy on 127.0.0.1 between devices and a server that drops,
/// duplicates and reorders datagrams each way ([`Impairment`]).
///
/// Each client address gets an upstream socket of its own, bound to the
/// client's IP address (any port), so the server still sees the device's
/// address: coapgate identifies devices by it. Stops on drop.
pub struct LossyLink {
    /// Where devices send to.
    pub addr: SocketAddr,
    up: Arc<Counters>,
    down: Arc<Counters>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LossyLink {
    /// Proxies to `server` with `imp` applied both ways.
    pub fn start(server: SocketAddr, imp: Impairment) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        front
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let addr = front.local_addr().unwrap();
        let up = Arc::new(Counters::default());
        let down = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let flows: Arc<Mutex<HashMap<SocketAddr, Flow>>> = Arc::default();
        let mut threads = Vec::new();

        // Devices → server.
        let (f, fl, u, st) = (
            front.try_clone().unwrap(),
            flows.clone(),
            up.clone(),
            stop.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 65_536];
            let mut next_flow = 0u64;
            while !st.load(Ordering::Relaxed) {
                let received = f.recv_from(&mut buf);
                let mut flows = fl.lock().unwrap();
                if let Ok((n, from)) = received {
                    let flow = match flows.entry(from) {
                        std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            UdpSocket::bind((from.ip(), 0))
                                .ok()
                                .filter(|s| s.connect(server).is_ok())
                                .map(|upstream| {
                                    next_flow += 1;
                                    e.insert(Flow {
                                        upstream,
                                        shaper: Shaper::new(imp, next_flow, 1),
                                    })
                                })
                        }
                    };
                    if let Some(flow) = flow {
                        let socket = &flow.upstream;
                        flow.shaper.datagram(&buf[..n], &u, &mut |b| {
                            let _ = socket.send(b);
                        });
                    }
                }
                for flow in flows.values_mut() {
                    let socket = &flow.upstream;
                    flow.shaper.flush(&mut |b| {
                        let _ = socket.send(b);
                    });
                }
            }
        }));

        // Server → devices: one thread polls every flow's upstream socket.
        let (f, fl, d, st) = (front, flows, down.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 65_536];
            let mut shapers: HashMap<SocketAddr, Shaper> = HashMap::new();
            let mut sockets: Vec<(SocketAddr, UdpSocket)> = Vec::new();
            let mut next_flow = 0u64;
            while !st.load(Ordering::Relaxed) {
                {
                    let flows = fl.lock().unwrap();
                    for (client, flow) in flows.iter() {
                        if !shapers.contains_key(client) {
                            let Ok(socket) = flow.upstream.try_clone() else {
                                continue;
                            };
                            let _ = socket.set_nonblocking(true);
                            next_flow += 1;
                            shapers.insert(*client, Shaper::new(imp, next_flow, 2));
                            sockets.push((*client, socket));
                        }
                    }
                }
                let mut idle = true;
                for (client, socket) in &sockets {
                    let Some(shaper) = shapers.get_mut(client) else {
                        continue;
                    };
                    // Bounded per round, so no flow starves the others.
                    for _ in 0..64 {
                        let Ok(n) = socket.recv(&mut buf) else { break };
                        idle = false;
                        shaper.datagram(&buf[..n], &d, &mut |b| {
                            let _ = f.send_to(b, client);
                        });
                    }
                    shaper.flush(&mut |b| {
                        let _ = f.send_to(b, client);
                    });
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }));
        LossyLink {
            addr,
            up,
            down,
            stop,
            threads,
        }
    }

    /// What was done to datagrams from devices to the server.
    pub fn upstream(&self) -> DirectionStats {
        self.up.snapshot()
    }

    /// What was done to datagrams from the server to devices.
    pub fn downstream(&self) -> DirectionStats {
        self.down.snapshot()
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
