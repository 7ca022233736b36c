//! Faults of the coapgate process and its disk (issue 12), with the real
//! binary and the SQLite file store:
//!
//! - Crash: `kill -9` under telemetry load while an operator adds devices,
//!   sets PSKs and changes the template through the admin API. After each
//!   crash `PRAGMA integrity_check` says ok, and on restart every change
//!   that got its 2xx is there, no PSK differs from the one set, and every
//!   telemetry 2.04 before the crash is at the broker.
//! - Full disk: the process may not write to any file (`prlimit --fsize=0`
//!   soft limit on the running process, with SIGXFSZ ignored, so every write fails
//!   with EFBIG as on a full file system). Known devices keep getting
//!   2.04, `/bootstrap` gets 5.03 with Max-Age, and once the limit is
//!   lifted `/bootstrap` works again without a restart.
//!
//! Each prints one `FAULT` line for docs/reliability.md;
//! `COAPGATE_LONG_FAULTS=1` runs more crash cycles and a longer outage.

#![allow(clippy::unwrap_used)]

#[path = "../../../crates/coapgate-server/tests/faults_common/mod.rs"]
mod faults_common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coapgate_testkit::{
    CoapDevice, Mosquitto, MosquittoSub, free_tcp_port, free_udp_port, long_faults, require,
    temp_dir, try_http,
};
use faults_common::*;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_coapgate");
const TOKEN: &str = "fault-token";

/// A coapgate process on fixed ports.
struct Coapgate {
    child: Option<Child>,
    config: PathBuf,
    coap: SocketAddr,
    admin: SocketAddr,
}

impl Coapgate {
    fn new(dir: &Path, store: &Path, broker: &Mosquitto) -> Coapgate {
        let coap: SocketAddr = ([127, 0, 0, 1], free_udp_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_tcp_port()).into();
        let config = dir.join("coapgate.toml");
        std::fs::write(
            &config,
            format!(
                "[coap]\nbind = \"{coap}\"\n[coaps]\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"{admin}\"\ntoken = \"{TOKEN}\"\n[store]\nurl = \"sqlite://{}\"\n[mqtt]\nurl = \"{}\"\nconnect_timeout = 5\n",
                store.display(),
                broker.url()
            ),
        )
        .unwrap();
        Coapgate {
            child: None,
            config,
            coap,
            admin,
        }
    }

    /// Starts the binary (SIGXFSZ ignored, so a file size limit makes
    /// writes fail instead of killing it); how long until the admin API
    /// answered.
    fn start(&mut self) -> Duration {
        let started = Instant::now();
        let child = Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; exec \"$0\" serve --config \"$1\"")
            .arg(BIN)
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        while started.elapsed() < Duration::from_secs(20) {
            if try_http("GET", self.admin, "/healthz", None, None).is_some() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("coapgate did not answer on {} within 20 s", self.admin);
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, and reaps it.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn api(&self, method: &str, path: &str, body: serde_json::Value) -> Option<u16> {
        try_http(
            method,
            self.admin,
            path,
            Some(TOKEN),
            Some(&body.to_string()),
        )
        .map(|(status, _)| status)
    }

    fn get(&self, path: &str) -> (u16, String) {
        try_http("GET", self.admin, path, Some(TOKEN), None).unwrap()
    }
}

impl Drop for Coapgate {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn sqlite(sqlite3: &Path, file: &Path, sql: &str) -> String {
    let out = Command::new(sqlite3).arg(file).arg(sql).output().unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A change the admin API acknowledged with 2xx.
#[derive(Debug, Clone)]
enum Change {
    Device(usize),
    Psk(usize),
    Template(usize),
}

fn churn_iccid(k: usize) -> String {
    format!("89882806660003{k:05}")
}

fn churn_ip(k: usize) -> String {
    format!("127.0.{}.{}", 4 + k / 250, k % 250 + 1)
}

fn churn_psk(k: usize) -> String {
    format!("churn-psk-{k:05}-0123456789")
}

const TEMPLATE: &str =
    r#"{"sense":[{"asset":"Temperature","value":{"byte":0,"bytelength":2,"type":"int"}}]}"#;

/// Admin changes one after another from change number `first` until
/// `stop` or the API stops answering; the acknowledged ones.
fn churn(g: &Coapgate, first: usize, stop: &AtomicBool) -> Vec<Change> {
    let mut acked = Vec::new();
    let ok = |s: Option<u16>| s.is_some_and(|s| (200..300).contains(&s));
    for k in first..first + 5000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let status = g.api(
            "PUT",
            &format!("/v1/devices/{}", churn_iccid(k)),
            json!({"ip": churn_ip(k), "status": "ACTIVE"}),
        );
        if status.is_none() {
            break;
        }
        if ok(status) {
            acked.push(Change::Device(k));
        }
        let status = g.api(
            "POST",
            &format!("/v1/integrate/devices/{}/psk", churn_iccid(k)),
            json!({"secretKey": churn_psk(k)}),
        );
        if ok(status) {
            acked.push(Change::Psk(k));
        }
        if k % 5 == 0 {
            let template: serde_json::Value = serde_json::from_str(TEMPLATE).unwrap();
            let status = g.api(
                "PUT",
                "/v1/optimize/templates/coap",
                json!({"name": format!("t{k}"), "template": template, "status": "INACTIVE"}),
            );
            if ok(status) {
                acked.push(Change::Template(k));
            }
        }
    }
    acked
}

#[test]
fn kill_9_under_load_and_admin_changes_loses_no_acknowledged_change() {
    let test = "crash_kill9";
    let Some(sqlite3) = require("sqlite3", test) else {
        return;
    };
    let Some(broker) = Mosquitto::start(test) else {
        return;
    };
    let Some(sub) = MosquittoSub::start(broker.port, test) else {
        return;
    };
    let cycles = if long_faults() { 8 } else { 2 };
    let devices = 8;
    let dir = temp_dir(test);
    let file = dir.join("coapgate.db");
    let mut g = Coapgate::new(&dir, &file, &broker);
    let mut restarts = vec![g.start()];
    for d in 0..devices {
        let put = g.api(
            "PUT",
            &format!("/v1/devices/{}", iccid(d)),
            json!({"ip": device_ip(d), "status": "ACTIVE"}),
        );
        assert!(matches!(put, Some(200 | 201)), "{put:?}");
        let psk_set = g.api(
            "POST",
            &format!("/v1/integrate/devices/{}/psk", iccid(d)),
            json!({"secretKey": psk(d)}),
        );
        assert_eq!(psk_set, Some(200));
    }

    let mut changes: Vec<Change> = Vec::new();
    let mut records: Vec<Record> = Vec::new();
    let mut next = 0;
    let mut integrity = Vec::new();
    for cycle in 0..cycles {
        let shape = LoadShape {
            devices,
            pause: Duration::from_millis(20),
            // Short, so a device waiting on the dead process gives up soon.
            ack_timeout: Duration::from_millis(100),
            max_per_device: 100_000,
        };
        let load = Load::start(g.coap, shape, &format!("{test}-c{cycle}"), cycle as u64);
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let churner = {
            let (admin, stop, acked) = (g.admin, stop.clone(), acked.clone());
            let view = Coapgate {
                child: None,
                config: PathBuf::new(),
                coap: g.coap,
                admin,
            };
            let first = next;
            std::thread::spawn(move || {
                let done = churn(&view, first, &stop);
                *acked.lock().unwrap() = done;
            })
        };
        std::thread::sleep(Duration::from_millis(1500 + 500 * (cycle as u64 % 3)));
        g.kill9();
        stop.store(true, Ordering::Relaxed);
        churner.join().unwrap();
        records.extend(load.stop());
        let done = acked.lock().unwrap().clone();
        next = done
            .iter()
            .map(|c| match c {
                Change::Device(k) | Change::Psk(k) | Change::Template(k) => k + 1,
            })
            .max()
            .unwrap_or(next)
            .max(next)
            + 1;
        changes.extend(done);
        integrity.push(sqlite(&sqlite3, &file, "PRAGMA integrity_check"));
        restarts.push(g.start());
    }

    // Everything acknowledged is there.
    let psks: HashMap<String, String> = sqlite(&sqlite3, &file, "SELECT iccid, secret FROM psks")
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(i, s)| (i.to_owned(), s.to_owned()))
        .collect();
    let mut missing = Vec::new();
    let mut psk_changed = Vec::new();
    let mut last_template = None;
    for change in &changes {
        match change {
            Change::Device(k) => {
                let (status, _) = g.get(&format!("/v1/devices/{}", churn_iccid(*k)));
                if status != 200 {
                    missing.push(format!("device {k}: {status}"));
                }
            }
            Change::Psk(k) => {
                if psks.get(&churn_iccid(*k)) != Some(&churn_psk(*k)) {
                    psk_changed.push(format!("churn {k}"));
                }
            }
            Change::Template(k) => last_template = Some(*k),
        }
    }
    for d in 0..devices {
        if psks.get(&iccid(d)) != Some(&psk(d)) {
            psk_changed.push(format!("device {d}"));
        }
    }
    // Any PSK there at all is the one that was sent for that device.
    for (i, secret) in &psks {
        if let Some(k) = (0..next + 1).find(|k| churn_iccid(*k) == *i) {
            if *secret != churn_psk(k) {
                psk_changed.push(format!("unacknowledged churn {k}"));
            }
        }
    }
    if let Some(k) = last_template {
        let (status, body) = g.get("/v1/optimize/templates/coap");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let stored: usize = v["name"]
            .as_str()
            .and_then(|n| n.strip_prefix('t'))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        // A later change may have committed without its 2xx arriving.
        if status != 200 || stored < k {
            missing.push(format!("template t{k}: {status} {body}"));
        }
    }
    let published = wait_delivered(&records, Duration::from_secs(10), || {
        sub.telemetry().iter().map(value).collect()
    });
    let d = delivery(&records, &published);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &changes {
        *counts
            .entry(match c {
                Change::Device(_) => "devices",
                Change::Psk(_) => "PSKs",
                Change::Template(_) => "templates",
            })
            .or_insert(0) += 1;
    }
    let mut after = CoapDevice::new(&device_ip(0), g.coap, 99).unwrap();
    let after_code = after.post("data", b"after the crashes").code_text();
    eprintln!(
        "FAULT {test}: {cycles} × kill -9 under load ({devices} devices, {} requests) and admin \
         changes ({}); integrity_check [{}]; acknowledged changes missing {}, PSKs changed {}; \
         telemetry acknowledged {}, lost {}, duplicates {}; codes [{}]; restart to admin API \
         answering [{}]; after restart {after_code}",
        records.len(),
        counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        integrity.join(" "),
        missing.len(),
        psk_changed.len(),
        d.acknowledged,
        d.lost.len(),
        d.duplicates,
        show(&codes(&records)),
        restarts
            .iter()
            .map(|r| secs(*r))
            .collect::<Vec<_>>()
            .join(" "),
    );
    assert!(integrity.iter().all(|i| i == "ok"), "{integrity:?}");
    assert!(missing.is_empty(), "{missing:?}");
    assert!(psk_changed.is_empty(), "{psk_changed:?}");
    assert!(d.lost.is_empty(), "{:?}", d.lost);
    assert!(counts.get("devices").copied().unwrap_or(0) > 0);
    assert_eq!(after_code, "2.04");
    let _ = std::fs::remove_dir_all(dir);
}

fn prlimit_fsize(pid: u32, limit: &str) {
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--fsize={limit}")])
        .status()
        .unwrap();
    assert!(status.success(), "prlimit --fsize={limit}");
}

#[test]
fn a_full_disk_keeps_telemetry_and_refuses_bootstrap_with_5_03_until_it_recovers() {
    let test = "full_disk";
    if require("prlimit", test).is_none() {
        return;
    }
    let Some(broker) = Mosquitto::start(test) else {
        return;
    };
    let Some(_sub) = MosquittoSub::start(broker.port, test) else {
        return;
    };
    let dir = temp_dir(test);
    let file = dir.join("coapgate.db");
    let mut g = Coapgate::new(&dir, &file, &broker);
    g.start();
    // Device 0 sends telemetry; devices 1.. onboard with /bootstrap.
    let onboarding = 6;
    for d in 0..=onboarding {
        let put = g.api(
            "PUT",
            &format!("/v1/devices/{}", iccid(d)),
            json!({"ip": device_ip(d), "status": "ACTIVE"}),
        );
        assert!(matches!(put, Some(200 | 201)), "{put:?}");
    }
    let mut known = CoapDevice::new(&device_ip(0), g.coap, 1).unwrap();
    assert_eq!(known.post("data", b"warm-up").code, Some(0x44));
    let mut first = CoapDevice::new(&device_ip(1), g.coap, 2).unwrap();
    let before = first.request(1, "bootstrap", b"");
    assert_eq!(before.code_text(), "2.05", "bootstrap before the fault");

    let full_for = Duration::from_secs(if long_faults() { 60 } else { 6 });
    prlimit_fsize(g.pid(), "0:unlimited");
    let full_at = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let telemetry = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 10_000 {
                outcomes.push(known.post("data", format!("full-{n}").as_bytes()));
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            outcomes
        })
    };
    let mut during = Vec::new();
    let mut d = 2;
    while full_at.elapsed() < full_for && d <= onboarding {
        let mut device = CoapDevice::new(&device_ip(d), g.coap, d as u64).unwrap();
        during.push(device.request(1, "bootstrap", b""));
        d += 1;
    }
    std::thread::sleep(full_for.saturating_sub(full_at.elapsed()));
    prlimit_fsize(g.pid(), "unlimited:unlimited");
    let recovered_at = Instant::now();
    // Bootstrap again until it works, without a restart (bounded).
    let mut device = CoapDevice::new(&device_ip(onboarding), g.coap, 77).unwrap();
    let mut after = Vec::new();
    let recovery = loop {
        let o = device.request(1, "bootstrap", b"");
        let ok = o.code == Some(0x45);
        after.push(o);
        if ok {
            break recovered_at.elapsed();
        }
        assert!(
            recovered_at.elapsed() < Duration::from_secs(60),
            "no recovery: {after:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    stop.store(true, Ordering::Relaxed);
    let outcomes = telemetry.join().unwrap();
    let mut codes_seen: BTreeMap<String, usize> = BTreeMap::new();
    for o in &outcomes {
        *codes_seen.entry(o.code_text()).or_insert(0) += 1;
    }
    let slowest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    let boot: Vec<String> = during
        .iter()
        .map(|o| {
            format!(
                "{} Max-Age {:?} after {}",
                o.code_text(),
                o.max_age,
                secs(o.took)
            )
        })
        .collect();
    eprintln!(
        "FAULT {test}: no file writes for {} (RLIMIT_FSIZE 0); known device's telemetry [{}] \
         slowest {}; /bootstrap during [{}]; after the disk recovered: {} attempt(s), 2.05 \
         after {}",
        secs(full_for),
        show(&codes_seen),
        secs(slowest),
        boot.join(", "),
        after.len(),
        secs(recovery),
    );
    assert_eq!(codes_seen.keys().collect::<Vec<_>>(), ["2.04"]);
    assert!(!during.is_empty());
    for o in &during {
        assert_eq!(o.code_text(), "5.03", "{o:?}");
        assert!(o.max_age.is_some_and(|a| a > 0), "{o:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
