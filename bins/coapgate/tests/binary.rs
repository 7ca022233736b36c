//! The real `coapgate` binary: configuration errors, and one request end to
//! end through Mosquitto, then SIGTERM.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coapgate_testkit::{
    Mosquitto, MosquittoSub, coap_client, free_udp_port, temp_dir, wait_output,
};

const BIN: &str = env!("CARGO_BIN_EXE_coapgate");

#[test]
fn an_unknown_configuration_key_is_an_error_that_names_it() {
    let dir = temp_dir("binary-config");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[coap]\nbind = \"127.0.0.1:0\"\nmax_paylod = 2048\n").unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_paylod"), "{stderr}");

    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "serve refuses to start");
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_paylod"));

    std::fs::write(&file, "[coap]\nbind = \"127.0.0.1:0\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serves_plain_and_dtls_logs_no_psk_and_exits_0_on_sigterm() {
    let test = "binary_serves";
    let Some(broker) = Mosquitto::start(test) else {
        return;
    };
    let Some(sub) = MosquittoSub::start(broker.port, test) else {
        return;
    };
    if coapgate_testkit::require("coap-client-notls", test).is_none()
        || coapgate_testkit::require("coap-client-openssl", test).is_none()
    {
        return;
    }
    let dir = temp_dir("binary-serve");
    let port = free_udp_port();
    let coaps_port = free_udp_port();
    let config = dir.join("coapgate.toml");
    std::fs::write(
        &config,
        format!(
            "[coap]\nbind = \"127.0.0.1:{port}\"\n[coaps]\nbind = \"127.0.0.1:{coaps_port}\"\n[admin]\nbind = \"127.0.0.1:0\"\n[mqtt]\nurl = \"{}\"\n[store]\nurl = \"sqlite://{}\"\n\
             [[device]]\niccid = \"8988280666000000000\"\nimsi = \"901405100000000\"\nip = \"127.0.0.2\"\n",
            broker.url(),
            dir.join("store.db").display()
        ),
    )
    .unwrap();
    let mut child = KillOnDrop(Some(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            // As chatty as it gets without third-party tracing.
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let pid = child.0.as_ref().unwrap().id();
    let url = format!("coap://127.0.0.1:{port}/data?t=bin");
    // The binary is up once it answers; bounded.
    let start = Instant::now();
    let mut code = None;
    while start.elapsed() < Duration::from_secs(15) {
        let reply = coap_client(
            "coap-client-notls",
            &[
                "-a",
                "127.0.0.2",
                "-m",
                "post",
                "-e",
                "from the binary",
                &url,
            ],
            test,
        )
        .expect("coap-client-notls is installed");
        if reply.code.is_some() {
            code = reply.code;
            break;
        }
    }
    assert_eq!(code.as_deref(), Some("2.04"));
    let messages = sub.wait_for_telemetry(1, Duration::from_secs(5));
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].topic, "8988280666000000000/bin");
    let events = sub.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].topic, "8988280666000000000/lifecycle");

    // Onboarding: /bootstrap, then a request over DTLS with that PSK.
    let bootstrap = coap_client(
        "coap-client-notls",
        &[
            "-a",
            "127.0.0.2",
            "-m",
            "get",
            &format!("coap://127.0.0.1:{port}/bootstrap"),
        ],
        test,
    )
    .expect("installed");
    assert_eq!(bootstrap.code.as_deref(), Some("2.05"), "{}", bootstrap.log);
    let psk = bootstrap
        .payload
        .split(',')
        .nth(1)
        .expect("ICCID,PSK,URL")
        .to_owned();
    assert_eq!(psk.len(), 16);
    let secure = coap_client(
        "coap-client-openssl",
        &[
            "-a",
            "127.0.0.2",
            "-u",
            "8988280666000000000",
            "-k",
            &psk,
            "-m",
            "post",
            "-e",
            "secure",
            &format!("coaps://127.0.0.1:{coaps_port}/data?t=bin"),
        ],
        test,
    )
    .expect("installed");
    assert_eq!(secure.code.as_deref(), Some("2.04"), "{}", secure.log);
    assert_eq!(sub.wait_for_telemetry(2, Duration::from_secs(5)).len(), 2);

    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = wait_output(child.0.take().unwrap(), Duration::from_secs(15));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "exit 0 on SIGTERM; log:\n{stderr}"
    );
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert!(
        stderr.contains("PSK issued by /bootstrap"),
        "the issue is logged: {stderr}"
    );
    assert!(stderr.contains("DTLS session established"), "{stderr}");
    assert!(!stderr.contains(&psk), "a PSK in the log:\n{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Kills the server if the test fails before it is stopped on purpose.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
