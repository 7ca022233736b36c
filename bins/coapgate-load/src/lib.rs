//! The core of `coapgate-load`, a CoAP load generator for coapgate.
//!
//! It plays `devices` cellular modems at once, each from its own loopback
//! address (127.0.0.2, 127.0.0.3, …: one UDP socket per device, bound to
//! `127.0.0.x:0`), so that coapgate identifies every one of them by source
//! IP just as it identifies SIMs. Every device keeps up to `concurrency`
//! requests outstanding (a real modem keeps one) until `requests` have been
//! sent in all, or `duration` has passed.
//!
//! Each request is a `POST /data?t=load` with a message ID unique to its
//! device and a 4-byte token. A confirmable request is retransmitted as
//! RFC 7252 §4.2 says, by `coapgate-exchange`'s retransmission state with
//! its [`TransmissionParams`] (ACK_TIMEOUT 2 s, ACK_RANDOM_FACTOR 1.5,
//! MAX_RETRANSMIT 4 by default); an empty ACK stops the retransmissions, and
//! the separate response that follows is acknowledged. The [`Report`] gives
//! the responses by code, retransmissions, timeouts and the latency
//! percentiles (from the first transmission to the response).
//!
//! ```no_run
//! # async fn demo() -> Result<(), coapgate_load::LoadError> {
//! let config = coapgate_load::LoadConfig {
//!     target: "127.0.0.1:5683".parse().expect("an address"),
//!     devices: 3,
//!     requests: 300,
//!     ..coapgate_load::LoadConfig::default()
//! };
//! let report = coapgate_load::run(&config).await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```
//!
//! coapgate only answers devices it knows: [`device_config`] prints the
//! `[[device]]` blocks for the same addresses.
//!
//! # CoAPS
//!
//! With [`LoadConfig::dtls`] set, every device is a DTLS 1.2 PSK client
//! (OpenSSL's, with the device's ICCID as PSK identity and
//! [`device_psk`] or one common key; [`dtls_device_config`] prints the
//! `[[device]]` blocks with `psk = "…"`). Two measurements:
//!
//! - [`DtlsOptions::handshakes`] `= Some(n)`: `n` fresh full handshakes over
//!   all devices, each from a new socket (new source port) and closed with
//!   close_notify; the [`Report`] gives handshakes/s and their latency.
//! - otherwise one session per device is established first (at most
//!   [`DtlsOptions::parallel_handshakes`] at once), then the requests run
//!   over those sessions exactly as in plain mode, and the sessions are
//!   closed with close_notify at the end. Throughput and latency count the
//!   request phase only.
//!
//! # Modules
//!
//! - `config`: [`LoadConfig`] and its checks; `devices`: the devices'
//!   addresses, ICCIDs, keys and `[[device]]` blocks.
//! - `run`: the phases of a run; `schedule`: the request budget and rate
//!   all devices share.
//! - `client`: one simulated device, a CoAP client; `request`: the request
//!   it sends.
//! - `dtls`: the DTLS PSK client and its sessions, over coapgate-dtls's
//!   datagram [`Pipe`](coapgate_dtls::Pipe).
//! - `report`: the counters and the [`Report`]; `percentiles`: latency
//!   percentiles; `procfs`: the server's CPU and memory from `/proc`.
//! - `error`: [`LoadError`] and why a handshake failed.
//! - `floor`: [`serve_floor`], the least a CoAP server can do per request,
//!   the reference the benchmark measures every server against.

#![forbid(unsafe_code)]

mod client;
mod config;
mod devices;
mod dtls;
mod error;
mod floor;
mod percentiles;
mod procfs;
mod report;
mod request;
mod run;
mod schedule;

pub use coapgate_exchange::TransmissionParams;
pub use config::LoadConfig;
pub use devices::{
    FIRST_DEVICE_IP, FIRST_ICCID, device_config, device_iccid, device_ip, device_psk,
    dtls_device_config,
};
pub use dtls::{DEFAULT_CIPHER, DtlsOptions};
pub use error::LoadError;
pub use floor::serve_floor;
pub use procfs::ProcSample;
pub use report::Report;
pub use run::run;
