//! The deployment files in `deploy/` (docs/deployment.md) are checked, not
//! just written:
//!
//! - the Prometheus alerting rules pass `promtool check rules`, and their
//!   unit tests (`coapgate.rules.test.yml`, synthetic series) pass
//!   `promtool test rules`;
//! - the rules and the Grafana dashboard name only metrics coapgate
//!   exports (the list below, checked against the server's `metrics.rs`),
//!   and every dashboard query is valid PromQL (promtool checks it as a
//!   recording rule);
//! - the example configuration loads with the server's own parser, and
//!   refuses to start without an admin token;
//! - the systemd unit and the Containerfile agree with it (stop timeout,
//!   ports, paths, a non-root user).
//!
//! promtool comes with Debian's `prometheus` package (scripts/test.sh
//! installs it); without it the promtool checks print a loud SKIPPED line,
//! and fail under `CI=true`.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use coapgate_server::Config;
use coapgate_testkit::{require, temp_dir, wait_output};
use regex::Regex;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

use Kind::{Counter, Gauge, Histogram};

/// Every metric `crates/coapgate-server/src/metrics.rs` exports, without the
/// `coapgate_` prefix (docs/operations.md, "Metrics").
const EXPORTED: &[(&str, Kind)] = &[
    ("requests", Counter),
    ("dedup_hits", Counter),
    ("dedup_entries", Gauge),
    ("dedup_bytes", Gauge),
    ("dedup_evictions", Counter),
    ("malformed", Counter),
    ("pings", Counter),
    ("retransmissions", Counter),
    ("retransmit_give_ups", Counter),
    ("pending_publishes", Gauge),
    ("outbox_depth", Gauge),
    ("broker_connected", Gauge),
    ("dtls_handshakes", Counter),
    ("dtls_sessions", Gauge),
    ("dtls_handshakes_in_progress", Gauge),
    ("dtls_cookies_sent", Counter),
    ("dtls_datagrams_dropped", Counter),
    ("udp_receive_drops", Counter),
    ("shard_datagrams", Counter),
    ("mqtt_publish_seconds", Histogram),
    ("store_up", Gauge),
    ("store_changes", Counter),
    ("store_resyncs", Counter),
    ("store_change_lag_seconds", Gauge),
    ("spool_messages", Gauge),
    ("spool_bytes", Gauge),
    ("spool_max_bytes", Gauge),
    ("spool_writable", Gauge),
    ("rate_limited", Counter),
];

/// What the dashboard must show (the operator's questions, docs/deployment.md).
const DASHBOARD_MUST_SHOW: &[&str] = &[
    "coapgate_requests_total",
    "coapgate_mqtt_publish_seconds_bucket",
    "coapgate_broker_connected",
    "coapgate_store_up",
    "coapgate_outbox_depth",
    "coapgate_dedup_entries",
    "coapgate_dedup_hits_total",
    "coapgate_dtls_sessions",
    "coapgate_dtls_handshakes_total",
    "coapgate_udp_receive_drops_total",
    "coapgate_store_change_lag_seconds",
    "up",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// Every series name Prometheus sees for the known metrics, plus `up`.
fn series_names() -> BTreeSet<String> {
    let mut names = BTreeSet::from(["up".to_owned()]);
    for (name, kind) in EXPORTED.iter() {
        let name = format!("coapgate_{name}");
        match kind {
            Counter => {
                names.insert(format!("{name}_total"));
            }
            Gauge => {
                names.insert(name);
            }
            Histogram => {
                for suffix in ["bucket", "sum", "count"] {
                    names.insert(format!("{name}_{suffix}"));
                }
            }
        }
    }
    names
}

/// Runs a program to completion (at most a minute), capturing its output.
fn run(mut command: Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    wait_output(child, Duration::from_secs(60))
}

fn assert_ran(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_known_metrics_are_those_metrics_rs_exports() {
    let source = read("crates/coapgate-server/src/metrics.rs");
    // The three ways metrics.rs names a metric: the counter()/counters()/
    // gauge() helpers, a labelled family's descriptor, a registered
    // histogram.
    let patterns = [
        r#"\b(?:counters?|gauge)\(\s*&mut encoder,\s*"([a-z0-9_]+)""#,
        r#"encode_descriptor\(\s*"([a-z0-9_]+)""#,
        r#"\.register(?:_with_unit)?\(\s*"([a-z0-9_]+)""#,
    ];
    let mut found = BTreeSet::new();
    for pattern in patterns {
        let re = Regex::new(pattern).unwrap();
        found.extend(re.captures_iter(&source).map(|c| c[1].to_owned()));
    }
    let known: BTreeMap<&str, Kind> = EXPORTED.iter().copied().collect();
    for name in &found {
        assert!(
            known.contains_key(name.as_str()),
            "metrics.rs exports coapgate_{name}, which deploy/ does not know: add it to \
             EXPORTED in crates/coapgate-testkit/tests/deploy.rs, and to \
             deploy/grafana/coapgate.json and deploy/prometheus/coapgate.rules.yml if an \
             operator should see it"
        );
    }
    for (name, _) in EXPORTED {
        assert!(
            found.contains(*name),
            "coapgate_{name} is no longer in metrics.rs, but deploy/ uses it: \
             update EXPORTED, the rules and the dashboard"
        );
    }
}

#[test]
fn the_alerting_rules_pass_promtool_check() {
    let Some(promtool) = require("promtool", "deploy::the_alerting_rules_pass_promtool_check")
    else {
        return;
    };
    let mut command = Command::new(promtool);
    command
        .args(["check", "rules"])
        .arg(repo().join("deploy/prometheus/coapgate.rules.yml"));
    let output = run(command);
    assert_ran("promtool check rules", &output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn the_alerting_rules_pass_their_unit_tests() {
    let Some(promtool) = require(
        "promtool",
        "deploy::the_alerting_rules_pass_their_unit_tests",
    ) else {
        return;
    };
    let mut command = Command::new(promtool);
    command
        .args(["test", "rules", "coapgate.rules.test.yml"])
        .current_dir(repo().join("deploy/prometheus"));
    let output = run(command);
    assert_ran("promtool test rules", &output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn the_rules_name_known_metrics_and_every_alert_is_documented() {
    let rules = read("deploy/prometheus/coapgate.rules.yml");
    let known = series_names();
    let metric = Regex::new(r"\bcoapgate_[a-z0-9_]+\b").unwrap();
    let mut used = 0;
    for m in metric.find_iter(&rules) {
        assert!(
            known.contains(m.as_str()),
            "coapgate.rules.yml names {}, which coapgate does not export",
            m.as_str()
        );
        used += 1;
    }
    assert!(
        used >= 15,
        "only {used} metric names found: is the file empty?"
    );

    let deployment = read("docs/deployment.md");
    let alert = Regex::new(r"(?m)^\s*- alert: (\w+)\s*$").unwrap();
    let alerts: Vec<&str> = alert
        .captures_iter(&rules)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert!(alerts.len() >= 10, "only {} alerts found", alerts.len());
    for name in alerts {
        assert!(
            deployment.contains(&format!("`{name}`")),
            "alert {name} is not explained in docs/deployment.md"
        );
    }
}

/// Every panel of the dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

/// The PromQL of every query of the dashboard.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target without expr");
            queries.push((title.clone(), expr.to_owned()));
        }
    }
    queries
}

#[test]
fn the_dashboard_queries_known_metrics_of_the_chosen_instances() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/coapgate.json"))
        .expect("deploy/grafana/coapgate.json is not JSON");
    assert_eq!(dashboard["uid"], "coapgate");

    // A data source variable, so the dashboard imports into any Grafana.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let by_name = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    let datasource = by_name("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    assert_eq!(by_name("instance")["multi"], true);
    by_name("job");

    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} ({title}) twice");
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{title}: not on the data source variable"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }

    let known = series_names();
    let selector = Regex::new(r"\b(coapgate_[a-z0-9_]+|up)\{([^}]*)\}").unwrap();
    let bare = Regex::new(r"\bcoapgate_[a-z0-9_]+\b").unwrap();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 15, "only {} queries", queries.len());
    let mut shown = BTreeSet::new();
    for (title, expr) in &queries {
        let mut selected = 0;
        let mut selected_coapgate = 0;
        for c in selector.captures_iter(expr) {
            let name = &c[1];
            assert!(known.contains(name), "{title}: {name} is not exported");
            assert!(
                c[2].contains(r#"instance=~"$instance""#) && c[2].contains(r#"job=~"$job""#),
                "{title}: {name} ignores the $job/$instance variables in {expr}"
            );
            shown.insert(name.to_owned());
            selected += 1;
            selected_coapgate += usize::from(name != "up");
        }
        assert!(selected > 0, "{title}: no metric in {expr}");
        assert_eq!(
            bare.find_iter(expr).count(),
            selected_coapgate,
            "{title}: a metric without a selector in {expr}"
        );
    }
    for name in DASHBOARD_MUST_SHOW {
        assert!(shown.contains(*name), "the dashboard does not show {name}");
    }
}

#[test]
fn the_dashboard_queries_are_valid_promql() {
    let Some(promtool) = require("promtool", "deploy::the_dashboard_queries_are_valid_promql")
    else {
        return;
    };
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/coapgate.json")).unwrap();
    // Each query becomes a recording rule, with Grafana's variables replaced
    // by what they stand for; a JSON string is a YAML double-quoted scalar.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in dashboard_queries(&dashboard).iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$job", "coapgate");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = temp_dir("deploy-dashboard");
    let file = dir.join("dashboard.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let mut command = Command::new(promtool);
    command.args(["check", "rules"]).arg(&file);
    let output = run(command);
    assert_ran(&format!("promtool check rules on\n{rules}\n"), &output);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The example configuration with a token set, as an operator would.
fn example_config_text() -> (String, String) {
    let shipped = read("deploy/coapgate.toml");
    let with_token = shipped.replace(
        "# token = \"\"",
        "token = \"0f6c1d2e3a4b5c6d7e8f90a1b2c3d4e5\"",
    );
    assert_ne!(shipped, with_token, "no `# token = \"\"` line to fill in");
    (shipped, with_token)
}

#[test]
fn the_example_configuration_loads_and_refuses_to_start_without_a_token() {
    let (shipped, with_token) = example_config_text();
    let error = Config::from_toml(&shipped).unwrap_err();
    assert_eq!(error.key(), "admin.token", "{error}");

    let config = Config::from_toml(&with_token).unwrap();
    assert_eq!(config.coap.bind.port(), 5683);
    assert_eq!(config.coaps.bind.port(), 5684);
    assert_eq!(config.admin.bind.port(), 8080);
    assert!(!config.admin.bind.ip().is_loopback());
    assert!(
        config.store.url.starts_with("sqlite:///var/lib/coapgate/"),
        "the store is not in the state directory: {}",
        config.store.url
    );
    // Set explicitly: the default (coapgate-<pid>) is the same in every
    // container.
    assert!(
        Regex::new(r#"(?m)^client_id = "coapgate-\w+"$"#)
            .unwrap()
            .is_match(&with_token)
    );
    assert!(!config.mqtt.link.client_id.is_empty());

    // Rate limits on, with the values docs/operations.md recommends.
    let operations = read("docs/operations.md");
    let recommended = operations
        .split("```toml\n")
        .find(|block| block.starts_with("[limits]"))
        .and_then(|block| block.split("```").next())
        .expect("a [limits] block in docs/operations.md");
    let recommended = Config::from_toml(recommended).unwrap();
    assert!(!config.coap.engine.device_limit.is_off());
    assert!(!config.coaps.dtls.handshake_limit.is_off());
    assert_eq!(
        (
            config.coap.engine.device_limit,
            config.coaps.dtls.handshake_limit
        ),
        (
            recommended.coap.engine.device_limit,
            recommended.coaps.dtls.handshake_limit
        ),
        "deploy/coapgate.toml and docs/operations.md disagree"
    );

    // The commented PostgreSQL line is a URL the parser accepts.
    let postgres = Regex::new(r#"(?m)^# (url = "postgres://[^"]+")$"#)
        .unwrap()
        .captures(&with_token)
        .expect("a commented postgres:// url")[1]
        .to_owned();
    let with_postgres = with_token.replace(
        r#"url = "sqlite:///var/lib/coapgate/coapgate.db""#,
        &postgres,
    );
    let config = Config::from_toml(&with_postgres).unwrap();
    assert!(config.store.url.starts_with("postgres://"));
}

#[test]
fn the_unit_and_the_container_agree_with_the_configuration() {
    let (_, with_token) = example_config_text();
    let config = Config::from_toml(&with_token).unwrap();
    let config_path = "/etc/coapgate/coapgate.toml";

    let unit = read("deploy/coapgate.service");
    let setting = |key: &str| -> Vec<String> {
        let re = Regex::new(&format!(r"(?m)^{key}=(.*)$")).unwrap();
        re.captures_iter(&unit).map(|c| c[1].to_owned()).collect()
    };
    let timeout: u64 = setting("TimeoutStopSec")[0].parse().unwrap();
    assert!(
        Duration::from_secs(timeout) > config.coap.shutdown_grace + Duration::from_secs(5),
        "TimeoutStopSec={timeout} leaves no room after coap.shutdown_grace"
    );
    assert_eq!(setting("KillSignal"), ["SIGTERM"]);
    assert_eq!(
        setting("ExecStart"),
        [format!(
            "/usr/local/bin/coapgate serve --config {config_path}"
        )]
    );
    assert_eq!(setting("User"), ["coapgate"]);
    assert_eq!(setting("StateDirectory"), ["coapgate"]);
    assert_eq!(setting("ConfigurationDirectory"), ["coapgate"]);
    assert_eq!(setting("NoNewPrivileges"), ["yes"]);
    assert_eq!(setting("ProtectSystem"), ["strict"]);
    assert_eq!(setting("Restart"), ["on-failure"]);
    assert_eq!(setting("LimitNOFILE").len(), 1);
    // The ports are above 1024: no capability at all.
    assert_eq!(setting("AmbientCapabilities"), [""]);
    assert_eq!(setting("CapabilityBoundingSet"), [""]);
    // The receive-drop counter reads /proc/net/udp.
    assert!(setting("ProcSubset").is_empty());

    let containerfile = read("deploy/Containerfile");
    let instruction = |name: &str| -> Vec<String> {
        let re = Regex::new(&format!(r"(?m)^{name} (.*)$")).unwrap();
        re.captures_iter(&containerfile)
            .map(|c| c[1].to_owned())
            .collect()
    };
    let user = instruction("USER");
    assert_eq!(user.len(), 1);
    let uid = user[0].split(':').next().unwrap();
    assert!(!["root", "0"].contains(&uid), "the image runs as root");
    let exposed: BTreeSet<String> = instruction("EXPOSE")
        .iter()
        .flat_map(|line| line.split_whitespace().map(str::to_owned))
        .collect();
    for port in [
        format!("{}/udp", config.coap.bind.port()),
        format!("{}/udp", config.coaps.bind.port()),
        format!("{}/tcp", config.admin.bind.port()),
    ] {
        assert!(exposed.contains(&port), "EXPOSE lacks {port}");
    }
    assert_eq!(instruction("STOPSIGNAL"), ["SIGTERM"]);
    assert_eq!(
        instruction("CMD"),
        [format!(r#"["serve", "--config", "{config_path}"]"#)]
    );
    assert!(containerfile.contains("cargo build --release --locked -p coapgate"));
    let stages = instruction("FROM");
    assert_eq!(stages[0], "rust:1-bookworm AS build");
    assert_eq!(stages[1], "debian:bookworm-slim");

    // The build context keeps what `cargo build` reads.
    let ignored = read(".dockerignore");
    for line in ignored.lines().filter(|l| !l.starts_with('#')) {
        for needed in ["Cargo.toml", "Cargo.lock", "crates", "bins", "examples"] {
            assert_ne!(line.trim(), needed, ".dockerignore leaves out {needed}");
        }
    }
}

/// `systemd-analyze verify` on the unit, where systemd is installed (not a
/// failure elsewhere: CI's container has it, a developer's Mac does not).
/// The binary is not installed here, so ExecStart points at an executable
/// that exists; everything else is the unit as shipped.
#[test]
fn systemd_accepts_the_unit() {
    let Some(analyze) = which("systemd-analyze") else {
        eprintln!("note: systemd-analyze is not installed; deploy/coapgate.service not verified");
        return;
    };
    let unit = read("deploy/coapgate.service");
    let me = std::env::current_exe().unwrap();
    let unit = unit.replace("/usr/local/bin/coapgate", &me.display().to_string());
    let dir = temp_dir("deploy-unit");
    let file = dir.join("coapgate.service");
    std::fs::write(&file, unit).unwrap();
    let mut command = Command::new(analyze);
    command.arg("verify").arg(&file);
    let output = run(command);
    assert_ran("systemd-analyze verify", &output);
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(
        !complaints.contains("coapgate.service"),
        "systemd-analyze complains about the unit:\n{complaints}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
