//! `coapgate-load`: drives a running coapgate over real UDP from many device
//! source addresses on loopback and prints throughput and latency.
//!
//! ```sh
//! coapgate-load --print-config --devices 50 > devices.toml   # for the server
//! coapgate-load --target 127.0.0.1:5683 --devices 50 --concurrency 4 --requests 20000
//!
//! coapgate-load --print-config --dtls --devices 50 > devices.toml  # with psk = "…"
//! coapgate-load --dtls --target 127.0.0.1:5684 --devices 50 --handshakes 5000
//! coapgate-load --dtls --target 127.0.0.1:5684 --devices 50 --concurrency 4 --requests 20000
//!
//! coapgate-load --floor 127.0.0.1:5683   # the benchmark's reference server
//! ```
//!
//! See the library ([`coapgate_load`]) for what a simulated device does.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use coapgate_load::{DtlsOptions, LoadConfig, TransmissionParams};

#[derive(Parser)]
#[command(
    name = "coapgate-load",
    version,
    about = "CoAP load generator for coapgate: many devices on loopback source addresses"
)]
struct Cli {
    /// coapgate's CoAP address.
    #[arg(long, default_value = "127.0.0.1:5683")]
    target: SocketAddr,
    /// Devices to simulate, from 127.0.0.2 upwards (one socket each).
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Requests to send in all.
    #[arg(long, default_value_t = 1000)]
    requests: u64,
    /// Outstanding requests per device (a real modem keeps 1).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Payload bytes per request (at most 1024).
    #[arg(long, default_value_t = 100)]
    payload_size: usize,
    /// Upper bound of the run, seconds.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Send NON requests instead of CON.
    #[arg(long)]
    non: bool,
    /// Target requests per second over all devices (default: as fast as
    /// answers come).
    #[arg(long)]
    rate: Option<f64>,
    /// ACK_TIMEOUT, seconds.
    #[arg(long, default_value_t = 2.0)]
    ack_timeout: f64,
    /// MAX_RETRANSMIT.
    #[arg(long, default_value_t = 4)]
    max_retransmit: u32,
    /// Runtime worker threads (1 leaves the other core to the server on a
    /// 2-core machine).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Print coapgate `[[device]]` blocks for --devices and exit (with
    /// --dtls: each with its `psk`).
    #[arg(long)]
    print_config: bool,
    /// CoAPS: DTLS 1.2 PSK sessions (identity: the device's ICCID) to
    /// --target, coapgate's DTLS address (5684). Without --handshakes: one
    /// session per device, then the requests over them.
    #[arg(long)]
    dtls: bool,
    /// One PSK (text) for every device, e.g. libcoap's `coap-server -k
    /// KEY`; default: each device's own, `coapgate-load-<ICCID>`.
    #[arg(long, requires = "dtls")]
    psk: Option<String>,
    /// OpenSSL cipher list the DTLS client offers.
    #[arg(long, default_value = coapgate_load::DEFAULT_CIPHER, requires = "dtls")]
    cipher: String,
    /// The handshake benchmark: this many fresh full handshakes over all
    /// devices (each on a new source port, closed with close_notify); no
    /// requests.
    #[arg(long, requires = "dtls")]
    handshakes: Option<u64>,
    /// A DTLS handshake not complete after this many seconds fails.
    #[arg(long, default_value_t = 10.0)]
    handshake_timeout: f64,
    /// Before the requests, at most this many handshakes at once.
    #[arg(long, default_value_t = 64)]
    parallel_handshakes: usize,
    /// The server's PID on this host: report its CPU time per handshake and
    /// per request and its memory with the sessions open (from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Serve the floor on this address instead of generating load: an ACK
    /// 2.04 for every CON request, one recv and one send each (the
    /// benchmark's reference; runs until killed).
    #[arg(long, conflicts_with_all = ["print_config", "dtls"])]
    floor: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(addr) = cli.floor {
        return match coapgate_load::serve_floor(addr) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&format!("floor on {addr}: {error}")),
        };
    }
    if cli.print_config {
        let text = if cli.dtls {
            coapgate_load::dtls_device_config(cli.devices, cli.psk.as_deref())
        } else {
            coapgate_load::device_config(cli.devices)
        };
        return match text {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error),
        };
    }
    let seconds = |s: f64, what: &str| {
        Duration::try_from_secs_f64(s).map_err(|_| format!("{what}: {s} is not a duration"))
    };
    let (duration, ack_timeout, handshake_timeout) = match (
        seconds(cli.duration, "--duration"),
        seconds(cli.ack_timeout, "--ack-timeout"),
        seconds(cli.handshake_timeout, "--handshake-timeout"),
    ) {
        (Ok(d), Ok(a), Ok(h)) => (d, a, h),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return fail(&e),
    };
    let config = LoadConfig {
        target: cli.target,
        devices: cli.devices,
        requests: cli.requests,
        concurrency: cli.concurrency,
        payload_size: cli.payload_size,
        duration,
        non: cli.non,
        rate: cli.rate,
        transmission: TransmissionParams {
            ack_timeout,
            max_retransmit: cli.max_retransmit,
            ..TransmissionParams::default()
        },
        response_timeout: None,
        dtls: cli.dtls.then(|| DtlsOptions {
            psk: cli.psk.clone(),
            cipher: cli.cipher.clone(),
            handshakes: cli.handshakes,
            handshake_timeout,
            parallel_handshakes: cli.parallel_handshakes,
            ..DtlsOptions::default()
        }),
        server_pid: cli.server_pid,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    match runtime.block_on(coapgate_load::run(&config)) {
        Ok(report) if cli.json => {
            println!("{}", report.to_json());
            ExitCode::SUCCESS
        }
        Ok(report) => {
            match &config.dtls {
                Some(dtls) if dtls.handshakes.is_some() => println!(
                    "coapgate-load → {}: {} devices, DTLS handshakes ({})",
                    config.target, config.devices, dtls.cipher
                ),
                _ => println!(
                    "coapgate-load → {}: {} devices × {} outstanding, {}{}, {}-byte payloads",
                    config.target,
                    config.devices,
                    config.concurrency,
                    if config.non { "NON" } else { "CON" },
                    config
                        .dtls
                        .as_ref()
                        .map_or_else(String::new, |d| format!(" over DTLS ({})", d.cipher)),
                    config.payload_size
                ),
            }
            println!("{report}");
            if report.server.is_some() {
                println!("server              {}", report.to_json()["server"]);
            }
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("coapgate-load: {error}");
    ExitCode::FAILURE
}
