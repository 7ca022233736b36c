//! Fault: broker outages under sustained load (issue 12). Mosquitto with
//! persistence on and a persistent QoS 1 subscriber (clean session off) is
//! stopped — gracefully, then with SIGKILL — and started again on the same
//! port with the same persistence file, several times while devices keep
//! sending CON POSTs with RFC 7252 retransmission. Every request a device
//! saw 2.04 for must be at the subscriber; duplicates (QoS 1 allows them),
//! the codes devices saw and how fast forwarding resumed are printed in one
//! `FAULT` line for docs/reliability.md.
//!
//! `COAPGATE_LONG_FAULTS=1` runs the long variant (more devices, more and
//! longer outages). [`run_outages`] takes a configuration adjustment and
//! what to expect, so the store-and-forward mode can reuse it.

#![allow(clippy::unwrap_used)]

mod faults_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coapgate_server::Config;
use coapgate_testkit::{Mosquitto, MosquittoSub, long_faults};
use faults_common::*;

/// How the broker goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// SIGTERM: Mosquitto saves its state and closes connections.
    Stop,
    /// SIGKILL: connections are reset, state since the last autosave
    /// (1 s) is gone.
    Kill,
}

/// The size of a run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    devices: usize,
    cycles: usize,
    down: Duration,
    up: Duration,
}

fn plan() -> Plan {
    if long_faults() {
        Plan {
            devices: 16,
            cycles: 6,
            down: Duration::from_secs(8),
            up: Duration::from_secs(6),
        }
    } else {
        Plan {
            devices: 8,
            cycles: 3,
            down: Duration::from_secs(2),
            up: Duration::from_secs(3),
        }
    }
}

/// What the devices should see while the broker is down.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// Requests handled while the broker is down are refused (5.02, or
    /// 5.04 for one in flight when it went): the default `ack` mode, where
    /// 2.04 means the broker has the message. At least one refusal per
    /// outage proves the outage happened under load. `false`: none is
    /// (store-and-forward answers 2.04 throughout).
    pub refusals_during_outage: bool,
}

/// Starts Mosquitto (persistent) with a persistent subscriber and coapgate
/// (its configuration as `adjust` leaves it), runs the outages, checks and
/// prints the figures. `None` when a peer program is missing outside CI.
pub fn run_outages(
    test: &str,
    outage: Outage,
    adjust: impl FnOnce(&mut Config),
    expect: Expect,
) -> Option<()> {
    let plan = plan();
    let mut broker = Mosquitto::start_persistent(test)?;
    let sub = MosquittoSub::start_session(broker.port, &format!("faults-{test}"), test)?;
    let mut config = fleet_config(plan.devices, &broker.url(), "sqlite::memory:");
    adjust(&mut config);
    let server = coapgate_server::BackgroundServer::start(config).unwrap();
    let shape = LoadShape {
        devices: plan.devices,
        pause: Duration::from_millis(50),
        ack_timeout: Duration::from_secs(2),
        max_per_device: 100_000,
    };
    let load = Load::start(server.coap_addr(), shape, test, 0x0b0c);
    std::thread::sleep(Duration::from_secs(1));

    // (went down, came back) per cycle.
    let mut windows = Vec::new();
    for _ in 0..plan.cycles {
        let down = Instant::now();
        match outage {
            Outage::Stop => broker.stop(),
            Outage::Kill => broker.kill(),
        }
        std::thread::sleep(plan.down);
        broker.restart();
        let up = Instant::now();
        windows.push((down, up));
        std::thread::sleep(plan.up);
    }
    let records = load.stop();

    let published = wait_delivered(&records, Duration::from_secs(30), || {
        sub.telemetry().iter().map(value).collect()
    });
    let d = delivery(&records, &published);

    // Per cycle: the codes answered during the outage (from going down to
    // the first 2.04 after coming back) and that recovery time.
    let mut during = BTreeMap::new();
    let mut recoveries = Vec::new();
    for (n, &(down, up)) in windows.iter().enumerate() {
        let first_ok = records
            .iter()
            .filter(|r| r.acknowledged() && r.answered > up)
            .map(|r| r.answered)
            .min();
        let Some(first_ok) = first_ok else {
            panic!("cycle {n}: no 2.04 after the broker came back");
        };
        recoveries.push(first_ok - up);
        let in_window: Vec<Record> = records
            .iter()
            .filter(|r| r.answered >= down && r.answered < first_ok && !r.acknowledged())
            .cloned()
            .collect();
        if expect.refusals_during_outage {
            assert!(
                !in_window.is_empty(),
                "cycle {n}: no request was refused while the broker was down"
            );
        } else {
            assert!(
                in_window.is_empty(),
                "cycle {n}: refused while the broker was down: {:?}",
                codes(&in_window)
            );
        }
        for (code, count) in codes(&in_window) {
            *during.entry(code).or_insert(0) += count;
        }
    }
    let all = codes(&records);
    let worst = recoveries.iter().max().copied().unwrap_or_default();
    eprintln!(
        "FAULT {test}: load {} devices, {} outages ({} down, {} up), {} requests; \
         acknowledged {}, lost {}, duplicates {}, published but not acknowledged {}; \
         codes [{}]; during outages [{}]; recovery after broker up [{}] max {}",
        plan.devices,
        plan.cycles,
        secs(plan.down),
        secs(plan.up),
        records.len(),
        d.acknowledged,
        d.lost.len(),
        d.duplicates,
        d.unacknowledged_published,
        show(&all),
        show(&during),
        recoveries
            .iter()
            .map(|r| secs(*r))
            .collect::<Vec<_>>()
            .join(" "),
        secs(worst),
    );

    assert!(
        d.lost.is_empty(),
        "acknowledged but never at the subscriber: {:?}",
        d.lost
    );
    assert!(
        d.unknown.is_empty(),
        "published, never sent: {:?}",
        d.unknown
    );
    assert!(d.acknowledged > 0);
    // Every request got an answer: the devices never had to give up.
    assert_eq!(all.get("none"), None, "requests without any answer");
    for code in all.keys() {
        assert!(
            ["2.04", "5.02", "5.03", "5.04"].contains(&code.as_str()),
            "unexpected code {code}"
        );
    }
    assert!(
        worst < Duration::from_secs(10),
        "forwarding resumed only {worst:?} after the broker was back"
    );
    Some(())
}

/// The default configuration, but a 5 s publish deadline so requests in
/// flight at an outage end (5.04 or a late 2.04) within the run.
fn default_mode(config: &mut Config) {
    config.coap.engine.publish_timeout = Duration::from_secs(5);
}

#[test]
fn broker_stopped_and_restarted_under_load_loses_no_acknowledged_message() {
    let _serial = serial();
    run_outages(
        "broker_stop",
        Outage::Stop,
        default_mode,
        Expect {
            refusals_during_outage: true,
        },
    );
}

#[test]
fn broker_killed_and_restarted_under_load_loses_no_acknowledged_message() {
    let _serial = serial();
    run_outages(
        "broker_kill",
        Outage::Kill,
        default_mode,
        Expect {
            refusals_during_outage: true,
        },
    );
}

/// Store-and-forward: 2.04 once spooled, so devices see nothing of the
/// outage, and the spool forwards it all afterwards.
fn spool_mode(dir: &std::path::Path) -> impl FnOnce(&mut Config) + use<> {
    let path = dir.join("coapgate.spool");
    move |config: &mut Config| {
        config.mqtt.ack = coapgate_server::AckMode::Spool;
        config.mqtt.spool_path = Some(path);
    }
}

#[test]
fn with_a_spool_a_stopped_broker_costs_devices_nothing_and_loses_nothing() {
    let _serial = serial();
    let dir = coapgate_testkit::temp_dir("faults-spool-stop");
    run_outages(
        "broker_stop_spool",
        Outage::Stop,
        spool_mode(&dir),
        Expect {
            refusals_during_outage: false,
        },
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn with_a_spool_a_killed_broker_costs_devices_nothing_and_loses_nothing() {
    let _serial = serial();
    let dir = coapgate_testkit::temp_dir("faults-spool-kill");
    run_outages(
        "broker_kill_spool",
        Outage::Kill,
        spool_mode(&dir),
        Expect {
            refusals_during_outage: false,
        },
    );
    let _ = std::fs::remove_dir_all(dir);
}
