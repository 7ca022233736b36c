//! `coapgate`: the reference server binary.
//!
//! `coapgate serve [--config FILE]` runs the server; without `--config` it
//! runs on the documented defaults (embedded SQLite store in the working
//! directory, embedded MQTT broker on 127.0.0.1:1883). Logs go to stderr,
//! written by a worker thread, in colour only when stderr is a terminal;
//! `RUST_LOG` filters them (default `info`). See [`logging`].
//!
//! The operator subcommands talk to a running server's admin API
//! (`--url`, default `http://127.0.0.1:8080`; `--token` or the environment
//! variable `COAPGATE_TOKEN`):
//!
//! - `coapgate device add --iccid ICCID --ip IP [--imsi IMSI] [--status
//!   ACTIVE|INACTIVE] [--name NAME]`, `device list [--page N] [--page-size
//!   N]`, `device get --iccid ICCID`, `device remove --iccid ICCID`;
//! - `coapgate psk set --iccid ICCID --key KEY|- [--format STRING|HEX]`,
//!   `psk get --iccid ICCID`;
//! - `coapgate template set --name NAME --file FILE [--status
//!   ACTIVE|INACTIVE]`, `template get`, `template test --file FILE
//!   (--payload-hex HEX | --payload-base64 B64)`.
//!
//! They print the API's JSON answer on success (exit 0), its error message
//! on stderr on failure (exit 1); a bad local input (unreadable file, bad
//! hex) exits 2. See [`cli`].

#![forbid(unsafe_code)]

mod cli;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coapgate_server::Config;

#[derive(Parser)]
#[command(
    name = "coapgate",
    version,
    about = "CoAP/CoAPS ingestion endpoint for cellular IoT, forwarding to MQTT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// The TOML configuration file (spec.md §7); absent: the defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and print what is wrong with it, if anything.
    CheckConfig {
        /// The TOML configuration file.
        config: PathBuf,
    },
    /// Manage devices through a running server's admin API.
    Device {
        #[command(flatten)]
        api: cli::Api,
        #[command(subcommand)]
        command: cli::DeviceCommand,
    },
    /// Manage devices' DTLS pre-shared keys through the admin API.
    Psk {
        #[command(flatten)]
        api: cli::Api,
        #[command(subcommand)]
        command: cli::PskCommand,
    },
    /// Manage and test the CoAP Energy Saver template through the admin API.
    Template {
        #[command(flatten)]
        api: cli::Api,
        #[command(subcommand)]
        command: cli::TemplateCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Lives until `main` returns: dropping it writes out the queued lines.
    let _logs = logging::init();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        },
        Command::Device { api, command } => cli::device(&api, command),
        Command::Psk { api, command } => cli::psk(&api, command),
        Command::Template { api, command } => cli::template(&api, command),
    }
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    let config = match path {
        Some(path) => Config::load(&path),
        None => Ok(Config::default()),
    };
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("coapgate: {error}");
            return ExitCode::from(2);
        }
    };
    // One thread for the event loop, the bridge and the admin API: every
    // datagram would otherwise cross threads on its way through tokio's
    // workers, and those wake-ups cost more CPU than the work itself
    // (docs/performance.md, "Runtime"). SQLite writes run on tokio's
    // blocking pool; the embedded broker has threads of its own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("coapgate: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(coapgate_server::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "coapgate stopped");
            eprintln!("coapgate: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
