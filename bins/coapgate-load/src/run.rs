//! A run from start to report. Plain CoAP: bind one socket per device, then
//! the request phase. CoAPS: one session per device first (at most
//! `parallel_handshakes` at once), then the same request phase over them;
//! or, with `handshakes`, only fresh handshakes back to back. The server is
//! sampled from `/proc` at the start, after the handshakes and at the end.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{Device, Link};
use crate::dtls::Client;
use crate::report::{DeviceStats, HandshakeStats};
use crate::request::Request;
use crate::schedule::Schedule;
use crate::{DtlsOptions, LoadConfig, LoadError, ProcSample, Report, device_ip};

/// Runs the load described by `config` against a running coapgate and
/// reports what happened. Returns after all requests were answered or
/// given up, or after `config.duration`, whichever comes first.
pub async fn run(config: &LoadConfig) -> Result<Report, LoadError> {
    config.validate()?;
    let sample = || config.server_pid.and_then(ProcSample::read);
    let start = sample();
    let mut report = run_phases(config, sample).await?;
    if let (Some(start), Some(end)) = (start, sample()) {
        report.server = Some([start, report.server.map_or(start, |s| s[1]), end]);
    }
    Ok(report)
}

async fn run_phases(
    config: &LoadConfig,
    sample: impl Fn() -> Option<ProcSample>,
) -> Result<Report, LoadError> {
    match &config.dtls {
        None => {
            let mut links = Vec::with_capacity(config.devices);
            for index in 0..config.devices {
                let addr = SocketAddr::new(IpAddr::V4(device_ip(index)?), 0);
                let socket = UdpSocket::bind(addr)
                    .await
                    .map_err(|source| LoadError::Bind { addr, source })?;
                links.push((index, Link::Plain(socket)));
            }
            run_devices(config, links, Report::default()).await
        }
        Some(dtls) if dtls.handshakes.is_some() => {
            let mut report = run_handshakes(config, dtls).await?;
            // The whole run is the handshake phase.
            report.server = sample().map(|s| [s; 3]);
            Ok(report)
        }
        Some(dtls) => run_sessions(config, dtls, sample).await,
    }
}

/// The requests phase: every device with its link.
async fn run_devices(
    config: &LoadConfig,
    links: Vec<(usize, Link)>,
    mut report: Report,
) -> Result<Report, LoadError> {
    let request = Request::new(config.non, config.payload_size)?;
    let start = Instant::now();
    let schedule = Arc::new(Schedule::new(
        config.requests,
        config.rate,
        start,
        config.duration,
    ));
    let mut tasks = JoinSet::new();
    for (index, link) in links {
        let device = Device::new(index, link, config, request.clone(), schedule.clone());
        tasks.spawn(device.run());
    }
    join_all(tasks, |stats: DeviceStats| report.merge(stats)).await?;
    report.elapsed = start.elapsed();
    report.finish();
    Ok(report)
}

/// Every task's result, in the order they finish.
async fn join_all<T: 'static>(
    mut tasks: JoinSet<T>,
    mut each: impl FnMut(T),
) -> Result<(), LoadError> {
    while let Some(joined) = tasks.join_next().await {
        each(joined?);
    }
    Ok(())
}

/// A report of a CoAPS run with these handshakes, the handshake phase
/// timed from `start`.
fn dtls_report(start: Instant, all: impl IntoIterator<Item = HandshakeStats>) -> Report {
    let mut report = Report {
        dtls: true,
        ..Report::default()
    };
    for stats in all {
        report.merge_handshakes(stats);
    }
    report.handshake_elapsed = start.elapsed();
    report.finish();
    report
}

/// CoAPS requests: one session per device first, then [`run_devices`].
async fn run_sessions(
    config: &LoadConfig,
    options: &DtlsOptions,
    sample: impl Fn() -> Option<ProcSample>,
) -> Result<Report, LoadError> {
    let client = Arc::new(Client::new(config.target, options)?);
    let permits = Arc::new(tokio::sync::Semaphore::new(options.parallel_handshakes));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for index in 0..config.devices {
        let client = client.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (index, client.connect(index).await)
        });
    }
    let mut stats = HandshakeStats::default();
    let mut links = Vec::with_capacity(config.devices);
    join_all(tasks, |(index, result)| {
        if let Some(session) = stats.record(result) {
            links.push((index, Link::Dtls(Box::new(session))));
        }
    })
    .await?;
    let mut report = dtls_report(start, [stats]);
    report.server = sample().map(|s| [s; 3]);
    links.sort_by_key(|(index, _)| *index);
    run_devices(config, links, report).await
}

/// The handshake benchmark: fresh full handshakes, back to back per device.
async fn run_handshakes(config: &LoadConfig, options: &DtlsOptions) -> Result<Report, LoadError> {
    let client = Arc::new(Client::new(config.target, options)?);
    let start = Instant::now();
    let schedule = Arc::new(Schedule::new(
        options.handshakes.unwrap_or(0),
        config.rate,
        start,
        config.duration,
    ));
    let mut tasks = JoinSet::new();
    for index in 0..config.devices {
        let client = client.clone();
        let schedule = schedule.clone();
        tasks.spawn(async move {
            let mut stats = HandshakeStats::default();
            while let Some(at) = schedule.claim() {
                if at >= schedule.end {
                    break;
                }
                tokio::time::sleep_until(at).await;
                if let Some(session) = stats.record(client.connect(index).await) {
                    session.close().await;
                }
                if Instant::now() >= schedule.end {
                    break;
                }
            }
            stats
        });
    }
    let mut all = Vec::with_capacity(config.devices);
    join_all(tasks, |stats| all.push(stats)).await?;
    let mut report = dtls_report(start, all);
    report.elapsed = report.handshake_elapsed;
    Ok(report)
}
