//! The real binary's log as an operator's log file or journald gets it:
//! stdout and stderr redirected to a file (not a terminal).
//!
//! - no colour escape codes;
//! - everything written before exit (the log writer's queue is flushed);
//! - an ordinary start on the embedded broker, with a subscriber coming and
//!   going, logs no ERROR line (rumqttd's ordinary-traffic ERRORs count as
//!   debug events).

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coapgate_testkit::{MosquittoSub, free_tcp_port, temp_dir, wait_output};

const BIN: &str = env!("CARGO_BIN_EXE_coapgate");

/// `coapgate serve` on the embedded broker (on `mqtt_port`), ports 0
/// elsewhere, in-memory store; stdout and stderr both to `dir/coapgate.log`.
/// `RUST_LOG` is removed, so the default filter applies.
fn serve(dir: &Path, mqtt_port: u16) -> (KillOnDrop, PathBuf) {
    let config = dir.join("coapgate.toml");
    std::fs::write(
        &config,
        format!(
            "[coap]\nbind = \"127.0.0.1:0\"\n[coaps]\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"\n\
             [mqtt]\nembedded_bind = \"127.0.0.1:{mqtt_port}\"\n[store]\nurl = \"sqlite::memory:\"\n"
        ),
    )
    .unwrap();
    let log = dir.join("coapgate.log");
    let file = File::create(&log).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    (KillOnDrop(Some(child)), log)
}

/// The log once `done` holds for it; panics after `timeout`.
fn wait_for_log(log: &Path, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if done(&text) {
            return text;
        }
        assert!(
            start.elapsed() < timeout,
            "the log never got there in {timeout:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then the exit status (0 expected) and the whole log.
fn stop(mut child: KillOnDrop, log: &Path) -> String {
    let process = child.0.take().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &process.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = wait_output(process, Duration::from_secs(15));
    let text = std::fs::read_to_string(log).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "exit 0 on SIGTERM; log:\n{text}"
    );
    text
}

const READY: &str = "admin API listening";

#[test]
fn a_log_file_gets_plain_text_and_every_line_up_to_the_exit() {
    let dir = temp_dir("logs-plain");
    let (child, log) = serve(&dir, free_tcp_port());
    wait_for_log(&log, Duration::from_secs(20), |t| t.contains(READY));
    let text = stop(child, &log);
    assert!(
        !text.contains("\x1b["),
        "colour codes in a log file:\n{}",
        text.escape_debug()
    );
    // Written up to the last line: the worker's queue is flushed on exit.
    assert!(text.contains(" INFO "), "{text}");
    assert!(text.contains("embedded MQTT broker listening"), "{text}");
    assert!(text.contains("shutting down"), "{text}");
    // The driver's last line is there (the embedded broker's threads may
    // still log after it, so it need not be the file's last line).
    assert!(
        text.lines()
            .any(|l| l.contains("coapgate_server::driver: stopped shard=0")),
        "the driver's last line is missing: {text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_start_on_the_embedded_broker_and_a_subscriber_coming_and_going_log_no_error() {
    let test = "logs_no_error";
    let dir = temp_dir("logs-no-error");
    let mqtt_port = free_tcp_port();
    let (child, log) = serve(&dir, mqtt_port);
    wait_for_log(&log, Duration::from_secs(20), |t| t.contains(READY));
    // mosquitto_sub connects and stays; mosquitto_pub (its readiness probe)
    // connects, publishes and disconnects cleanly; then mosquitto_sub is
    // killed, which closes its connection without a DISCONNECT.
    let Some(sub) = MosquittoSub::start(mqtt_port, test) else {
        return;
    };
    drop(sub);
    // Both clients gone as far as the broker is concerned (the bridge's own
    // connection stays until the stop).
    wait_for_log(&log, Duration::from_secs(10), |t| {
        t.matches("Disconnecting connection").count() >= 2
    });
    let text = stop(child, &log);
    assert!(
        text.contains("incoming_connect"),
        "the clients reached the embedded broker: {text}"
    );
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "ERROR lines:\n{}\n\nlog:\n{text}",
        errors.join("\n")
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Kills the server if the test fails before it is stopped on purpose.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
