//! `coapgate-load`: drives a running coapgate over real UDP from many device
//! source addresses on loopback and prints throughput and latency.
//!
//! ```sh
//! coapgate-load --print-config --devices 50 > devices.toml   # for the server
//! coapgate-load --target 127.0.0.1:5683 --devices 50 --concurrency 4 --requests 20000
//! ```
//!
//! See the library ([`coapgate_load`]) for what a simulated device does.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use coapgate_load::{LoadConfig, Transmission};

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
    /// Print coapgate `[[device]]` blocks for --devices and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_config {
        return match coapgate_load::device_config(cli.devices) {
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
    let (duration, ack_timeout) = match (
        seconds(cli.duration, "--duration"),
        seconds(cli.ack_timeout, "--ack-timeout"),
    ) {
        (Ok(d), Ok(a)) => (d, a),
        (Err(e), _) | (_, Err(e)) => return fail(&e),
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
        transmission: Transmission {
            ack_timeout,
            max_retransmit: cli.max_retransmit,
            ..Transmission::default()
        },
        response_timeout: None,
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
            println!(
                "coapgate-load → {}: {} devices × {} outstanding, {}, {}-byte payloads",
                config.target,
                config.devices,
                config.concurrency,
                if config.non { "NON" } else { "CON" },
                config.payload_size
            );
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("coapgate-load: {error}");
    ExitCode::FAILURE
}
