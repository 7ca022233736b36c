//! Real peers for coapgate's integration tests, each on loopback only and
//! bounded in time:
//!
//! - [`Mosquitto`]: a broker process on a free port, stoppable and
//!   restartable on the same port, optionally with a TLS listener beside
//!   the plain one ([`Mosquitto::start_tls`], certificates from [`TestPki`]);
//! - [`MosquittoSub`]: Mosquitto's own `mosquitto_sub` on `#`, recording
//!   every message it receives;
//! - [`coap_client`]: libcoap's `coap-client-*` binaries, returning the
//!   response code they got;
//! - [`DelayProxy`]: a TCP proxy that makes a broker slow to answer;
//! - [`LossyLink`]: a UDP proxy that drops, duplicates and reorders;
//! - [`CoapDevice`]: a raw-UDP CoAP device retransmitting as RFC 7252 says;
//! - [`Postgres`]: a throw-away PostgreSQL server on a free port, stoppable
//!   and restartable with its data.
//!
//! A missing program is a failure when `CI=true` and a loud `SKIPPED` line
//! otherwise: see [`require`].

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod device;
mod lossy;
mod postgres;
pub use device::{
    CoapDevice, Outcome, code_text, dtls_client_hello, encode_request, hello_verify_cookie,
    long_faults, rss_kib,
};
pub use lossy::{DirectionStats, Impairment, LossyLink};
pub use postgres::{POSTGRES_PASSWORD, Postgres};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether this run is CI (`CI=true`), where a missing peer is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Finds `program` on `PATH` (or `/usr/sbin`). When it is missing: panics
/// under `CI=true`; otherwise prints a loud SKIPPED line for `test` and
/// returns `None`, and the test should return at once.
pub fn require(program: &str, test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file());
    if found.is_none() {
        if in_ci() {
            panic!("{program} is not installed and CI=true: {test} cannot run (see .ci/run)");
        }
        eprintln!(
            "\n***** SKIPPED {test}: {program} is not installed (CI=true makes this a failure) *****\n"
        );
    }
    found
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_tcp(port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let addr = ([127, 0, 0, 1], port).into();
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits for `child` up to `timeout`, killing it past that.
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                break;
            }
        }
    }
    child.wait_with_output().unwrap()
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh temporary directory, removed by the caller (or left for CI
/// logs); unique per process and call.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "coapgate-{name}-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A throw-away PKI for TLS tests, as PEM files in a fresh directory
/// (removed on drop): a CA, a server certificate for `127.0.0.1`, `::1` and
/// `localhost` and a client certificate, both signed by that CA, and a
/// second CA that signed nothing (the wrong one to trust). ECDSA P-256 keys
/// in PKCS#8.
pub struct TestPki {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// The CA's certificate.
    pub ca: PathBuf,
    /// The server's certificate.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// The client's certificate.
    pub client_cert: PathBuf,
    /// The client's key.
    pub client_key: PathBuf,
    /// A CA certificate unrelated to the others.
    pub other_ca: PathBuf,
}

impl TestPki {
    /// Generates the certificates and writes them.
    pub fn generate(name: &str) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let dir = temp_dir(&format!("pki-{name}"));
        let write = |file: &str, pem: String| {
            let path = dir.join(file);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let ca = |cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = params.self_signed(&key).unwrap();
            (cert.pem(), Issuer::new(params, key))
        };
        let (ca_pem, issuer) = ca("coapgate test CA");
        let (other_pem, _) = ca("coapgate unrelated CA");
        let leaf = |cn: &str, names: &[&str], purpose: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![purpose];
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            "127.0.0.1",
            &["127.0.0.1", "::1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            "coapgate test client",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        TestPki {
            ca: write("ca.pem", ca_pem),
            other_ca: write("other-ca.pem", other_pem),
            server_cert: write("server.pem", server_cert),
            server_key: write("server-key.pem", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client-key.pem", client_key),
            dir,
        }
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Mosquitto broker process on 127.0.0.1, killed on drop.
pub struct Mosquitto {
    binary: PathBuf,
    /// The port it listens on; the same across [`Mosquitto::restart`].
    pub port: u16,
    /// The port of its TLS listener ([`Mosquitto::start_tls`]).
    pub tls_port: Option<u16>,
    /// The TLS listener's files: CA, certificate, key, and whether a
    /// client certificate is required.
    tls: Option<(PathBuf, PathBuf, PathBuf, bool)>,
    dir: PathBuf,
    persistent: bool,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts Mosquitto (anonymous, no persistence) on a free port; `None`
    /// when it is not installed outside CI (see [`require`]).
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with(test, false)
    }

    /// Like [`start`](Self::start), but the broker saves its state
    /// (sessions, queued messages) on a graceful [`stop`](Self::stop) and
    /// restores it on [`restart`](Self::restart).
    pub fn start_persistent(test: &str) -> Option<Self> {
        Self::start_with(test, true)
    }

    /// Like [`start`](Self::start), with a second listener on
    /// [`tls_port`](Self::tls_port) speaking TLS with `pki`'s server
    /// certificate, and trusting `pki`'s CA for client certificates, which
    /// it demands when `require_client_certificate`. The plain listener
    /// stays (for [`MosquittoSub`]).
    pub fn start_tls(test: &str, pki: &TestPki, require_client_certificate: bool) -> Option<Self> {
        let binary = require("mosquitto", test)?;
        let mut m = Mosquitto {
            binary,
            port: free_tcp_port(),
            tls_port: Some(free_tcp_port()),
            tls: Some((
                pki.ca.clone(),
                pki.server_cert.clone(),
                pki.server_key.clone(),
                require_client_certificate,
            )),
            dir: temp_dir("mosquitto"),
            persistent: false,
            child: None,
        };
        m.spawn();
        Some(m)
    }

    fn start_with(test: &str, persistent: bool) -> Option<Self> {
        let binary = require("mosquitto", test)?;
        let mut m = Mosquitto {
            binary,
            port: free_tcp_port(),
            tls_port: None,
            tls: None,
            dir: temp_dir("mosquitto"),
            persistent,
            child: None,
        };
        m.spawn();
        Some(m)
    }

    fn spawn(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        // As root, mosquitto would switch to user "mosquitto" and could not
        // write its log here. No cap on the messages queued for a slow
        // subscriber (0): a spool forwarding a long outage's backlog
        // outruns mosquitto_sub, and a capped queue drops the newest.
        let mut text = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nuser root\nlog_dest file {}\n",
            self.port,
            self.dir.join("mosquitto.log").display()
        );
        if self.persistent {
            text.push_str(&format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                self.dir.display()
            ));
        }
        if let (Some(port), Some((ca, cert, key, require))) = (self.tls_port, &self.tls) {
            text.push_str(&format!(
                "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {require}\n",
                ca.display(),
                cert.display(),
                key.display()
            ));
        }
        std::fs::write(&conf, text).unwrap();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for port in [Some(self.port), self.tls_port].into_iter().flatten() {
            assert!(
                wait_for_tcp(port, Duration::from_secs(5)),
                "mosquitto did not listen on {port} within 5 s: {}",
                self.log()
            );
        }
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `mqtts://127.0.0.1:TLS_PORT`, for a broker from [`start_tls`](Self::start_tls).
    pub fn tls_url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.tls_port.unwrap())
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// Kills the broker at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker gracefully (SIGTERM: a persistent broker saves its
    /// state), waiting up to 5 s before SIGKILL. A no-op when not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        // A paused broker handles the SIGTERM once it runs again.
        let _ = Command::new("kill").args(["-CONT", &pid]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing is read
    /// or acknowledged until [`stop`](Self::stop) or [`resume`](Self::resume).
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-STOP", &child.id().to_string()])
                .status();
        }
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
    }

    /// Starts it again on the same port (stopping it gracefully first if it
    /// still runs).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A message as `mosquitto_sub -v` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic.
    pub topic: String,
    /// The payload (text; coapgate's envelope is JSON).
    pub payload: String,
}

/// `mosquitto_sub -v -t '#'` against a broker, recording every message.
pub struct MosquittoSub {
    child: Child,
    received: Arc<Mutex<Vec<Message>>>,
}

/// Topic the readiness probe publishes on; filtered from [`MosquittoSub::messages`].
pub const PROBE_TOPIC: &str = "coapgate-testkit/probe";

impl MosquittoSub {
    /// Subscribes to `#` on 127.0.0.1:`port` with QoS 1 and returns once a
    /// probe published with `mosquitto_pub` came through (at most 10 s).
    pub fn start(port: u16, test: &str) -> Option<Self> {
        Self::start_with(port, None, test)
    }

    /// Like [`start`](Self::start), with a persistent session: client id
    /// `client_id`, clean session off (`-c`). The broker queues messages
    /// for it while it is disconnected; `mosquitto_sub` reconnects by
    /// itself after a broker restart.
    pub fn start_session(port: u16, client_id: &str, test: &str) -> Option<Self> {
        Self::start_with(port, Some(client_id), test)
    }

    fn start_with(port: u16, session: Option<&str>, test: &str) -> Option<Self> {
        let sub = require("mosquitto_sub", test)?;
        let publ = require("mosquitto_pub", test)?;
        let mut child = Command::new(sub)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "#",
                "-v",
                "-q",
                "1",
            ])
            .args(session.map(|id| ["-c", "-i", id]).into_iter().flatten())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let (topic, payload) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                sink.lock().unwrap().push(Message {
                    topic: topic.to_owned(),
                    payload: payload.to_owned(),
                });
            }
        });
        let me = MosquittoSub { child, received };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let _ = Command::new(&publ)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-t",
                    PROBE_TOPIC,
                    "-m",
                    "probe",
                ])
                .status();
            if me.wait_for(
                |m| m.iter().any(|m| m.topic == PROBE_TOPIC),
                Duration::from_millis(200),
            ) {
                return Some(me);
            }
        }
        panic!("mosquitto_sub on port {port} never saw its probe");
    }

    /// Every message so far, probes left out.
    pub fn messages(&self) -> Vec<Message> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic != PROBE_TOPIC)
            .cloned()
            .collect()
    }

    /// Waits until `done` holds for the raw message list (probes included),
    /// at most `timeout`; returns whether it did.
    fn wait_for(&self, done: impl Fn(&[Message]) -> bool, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            if done(&self.received.lock().unwrap()) {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether a topic is one of coapgate's event topics (`{iccid}/lifecycle`,
/// `{iccid}/location`, `{iccid}/error`) rather than telemetry.
pub fn is_event_topic(topic: &str) -> bool {
    ["/lifecycle", "/location", "/error"]
        .iter()
        .any(|suffix| topic.ends_with(suffix))
}

impl MosquittoSub {
    /// The telemetry messages so far: every message but probes and events.
    pub fn telemetry(&self) -> Vec<Message> {
        self.messages()
            .into_iter()
            .filter(|m| !is_event_topic(&m.topic))
            .collect()
    }

    /// The event messages so far (lifecycle, location, error).
    pub fn events(&self) -> Vec<Message> {
        self.messages()
            .into_iter()
            .filter(|m| is_event_topic(&m.topic))
            .collect()
    }

    /// Waits until at least `n` telemetry messages have arrived, at most
    /// `timeout`; returns them.
    pub fn wait_for_telemetry(&self, n: usize, timeout: Duration) -> Vec<Message> {
        self.wait_for(
            |m| {
                m.iter()
                    .filter(|m| m.topic != PROBE_TOPIC && !is_event_topic(&m.topic))
                    .count()
                    >= n
            },
            timeout,
        );
        self.telemetry()
    }
}

impl Drop for MosquittoSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy on 127.0.0.1 in front of a broker that holds back
/// everything the broker sends (CONNACK, PUBACK, …) by an adjustable delay:
/// a slow broker, for testing the piggyback window and publish deadlines.
/// Client-to-broker bytes pass at once.
pub struct DelayProxy {
    /// The port clients connect to.
    pub port: u16,
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl DelayProxy {
    /// Proxies 127.0.0.1:`port` → 127.0.0.1:`upstream`, holding the
    /// upstream's bytes back by `delay`.
    pub fn start(upstream: u16, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let delay_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, st) = (delay_ms.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) {
                            Self::pipe(client, server, d.clone(), st.clone());
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            port,
            delay_ms,
            stop,
        }
    }

    fn pipe(client: TcpStream, server: TcpStream, delay_ms: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
        let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            while let Ok(n) = c_read.read(&mut buf) {
                if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = s_write.shutdown(std::net::Shutdown::Both);
        });
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
        let mut s_read = server;
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            while let Ok(n) = s_read.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let due = Instant::now() + Duration::from_millis(delay_ms.load(Ordering::Relaxed));
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        });
        let mut c_write = client;
        std::thread::spawn(move || {
            for (due, bytes) in rx {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                if c_write.write_all(&bytes).is_err() {
                    break;
                }
            }
            let _ = c_write.shutdown(std::net::Shutdown::Both);
        });
    }

    /// Changes the delay for bytes read from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `fuzz/corpus/<target>/` of this repository.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Checks that the committed seeds of `fuzz/corpus/<target>/` are exactly
/// `seeds` (file name, bytes), the scripts a test builds them from. With
/// `COAPGATE_WRITE_SEEDS` set, writes them first.
pub fn check_seeds(target: &str, seeds: impl IntoIterator<Item = (String, Vec<u8>)>) {
    let dir = corpus_dir(target);
    let write = std::env::var_os("COAPGATE_WRITE_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, bytes) in seeds {
        let path = dir.join(&name);
        if write {
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{} missing ({e}); set COAPGATE_WRITE_SEEDS=1",
                path.display()
            )
        });
        assert_eq!(
            committed, bytes,
            "{name} is stale; set COAPGATE_WRITE_SEEDS=1"
        );
    }
}

/// Every file of the committed fuzz corpus `fuzz/corpus/<target>/`, as
/// (file name, bytes), for replaying a fuzz target's body under `cargo
/// test`. Panics when the directory is missing or empty: a replay test that
/// replays nothing must fail.
pub fn fuzz_corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()));
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{} unreadable: {e}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                data,
            )
        })
        .collect();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files.sort();
    files
}

/// One HTTP/1.1 request to a loopback server (the admin API), answered as
/// (status, body). `Connection: close`; bounded by a 10 s timeout. Enough
/// for JSON APIs without chunked encoding.
pub fn http(
    method: &str,
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    try_http(method, addr, path, token, body)
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP response from {addr}"))
}

/// Like [`http`], `None` when the connection fails or no status came (a
/// server being killed, in fault tests).
pub fn try_http(
    method: &str,
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// What a `coap-client` run got.
#[derive(Debug, Clone)]
pub struct CoapReply {
    /// The response code of the last response received, as `2.04`; `None`
    /// when none came.
    pub code: Option<String>,
    /// The payload of the response (written with `-o`).
    pub payload: String,
    /// Its log: PDUs (stdout at `-v 6`) and errors (stderr).
    pub log: String,
}

/// Runs libcoap's `client` (`coap-client-notls`, `coap-client-openssl`,
/// `coap-client-gnutls`) with `args` plus `-v 6 -B 10`, at most 20 s; the
/// response code is read from its PDU log. `None` when the client is not
/// installed outside CI.
pub fn coap_client(client: &str, args: &[&str], test: &str) -> Option<CoapReply> {
    let binary = require(client, test)?;
    Some(run_coap_client(&binary, args, 10))
}

/// Like [`coap_client`], waiting up to `wait_secs` (`-B`) for the response
/// instead of 10 s (a lossy link needs longer).
pub fn coap_client_waiting(
    client: &str,
    args: &[&str],
    wait_secs: u32,
    test: &str,
) -> Option<CoapReply> {
    let binary = require(client, test)?;
    Some(run_coap_client(&binary, args, wait_secs))
}

fn run_coap_client(binary: &Path, args: &[&str], wait_secs: u32) -> CoapReply {
    // libcoap logs PDUs on stdout and errors on stderr; the payload goes to
    // a file of its own so the two never mix.
    let dir = temp_dir("coap-client");
    let payload_file = dir.join("payload");
    let child = Command::new(binary)
        .args(["-v", "6", "-B", &wait_secs.to_string(), "-o"])
        .arg(&payload_file)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(u64::from(wait_secs) + 10));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let payload = std::fs::read(&payload_file).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    CoapReply {
        code: last_response_code(&log),
        payload: String::from_utf8_lossy(&payload).into_owned(),
        log,
    }
}

/// The last response code (class 2 to 5) in a libcoap PDU log, where
/// messages look like `v:1 t:ACK c:2.04 i:44ff {01} [ ]`.
pub fn last_response_code(log: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        let at = line.find(" c:")?;
        let code = line.get(at + 3..at + 7)?;
        matches!(code.as_bytes().first(), Some(b'2'..=b'5')).then(|| code.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_response_code_from_a_libcoap_log() {
        let log = "v:1 t:CON c:POST i:44ff {01} [ Uri-Path:data ] :: 'hello'\n\
                   v:1 t:ACK c:0.00 i:44ff {} [ ]\n\
                   v:1 t:CON c:2.04 i:1234 {01} [ ]\n\
                   v:1 t:ACK c:0.00 i:1234 {} [ ]\n";
        assert_eq!(last_response_code(log).as_deref(), Some("2.04"));
        assert_eq!(
            last_response_code("v:1 t:ACK c:4.01 i:1 {} [ ]").as_deref(),
            Some("4.01")
        );
        assert_eq!(last_response_code("nothing"), None);
    }
}
