//! The operator subcommands of the real binary against the admin API served
//! on a free loopback port: exit codes, output, and the store read back.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::Write as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use coapgate_admin::{AdminState, MetricsSource, Token};
use coapgate_model::{Device, DeviceDirectory, DeviceStatus};
use coapgate_store::Store;
use coapgate_testkit::{free_tcp_port, temp_dir};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_coapgate");
const TOKEN: &str = "cli-adm1n-t0ken";
const ICCID: &str = "8988280666000000000";
const OTHER: &str = "8988280666000000001";
const TEMPLATE: &str = r#"{"sense":[{"asset":"Temperature","value":{"byte":0,"bytelength":2,"type":"int"}},{"asset":"Humidity","value":{"byte":2,"bytelength":2,"type":"int"}},{"asset":"Switch","value":{"byte":4,"type":"boolean"}}]}"#;

struct NoMetrics;

impl MetricsSource for NoMetrics {
    fn render(&self) -> Pin<Box<dyn Future<Output = String> + Send>> {
        Box::pin(async { String::new() })
    }
}

/// The admin API on 127.0.0.1 with a memory store, served by a runtime
/// thread that lives as long as the test process.
struct Server {
    store: Store,
    url: String,
}

fn serve() -> Server {
    let store = coapgate_store::open("memory://").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = coapgate_admin::router(AdminState {
        store: store.clone(),
        token: Some(Token::new(TOKEN)),
        metrics: Arc::new(NoMetrics),
        ready: Arc::new(AtomicBool::new(true)),
        health: None,
    });
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, router).await.unwrap();
        });
    });
    Server { store, url }
}

impl Server {
    /// `coapgate ARGS --url URL --token TOKEN`, no token in the environment.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .args(["--token", TOKEN])
            .output()
            .unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .args(["--url", &self.url])
            .env_remove("COAPGATE_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        command
    }

    fn device(&self, iccid: &str) -> Option<Device> {
        self.store.device(&iccid.parse().unwrap()).unwrap()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Exit 0 and the pretty-printed JSON on stdout.
#[track_caller]
fn succeeded(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(out));
    let text = stdout(out);
    assert!(text.contains("\n  "), "pretty-printed: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Exit 1, nothing on stdout, the API's message on stderr.
#[track_caller]
fn failed(out: &Output, message: &str) {
    assert_eq!(out.status.code(), Some(1), "stdout: {}", stdout(out));
    assert_eq!(stdout(out), "");
    let text = stderr(out);
    assert!(text.contains(message), "{message:?} not in {text:?}");
    assert!(!text.contains(TOKEN), "the token leaked: {text}");
}

#[test]
fn devices_are_added_listed_and_removed() {
    let server = serve();
    let view = server.store.directory();

    let out = server.run(&[
        "device",
        "add",
        "--iccid",
        ICCID,
        "--ip",
        "::ffff:10.0.0.7",
        "--imsi",
        "901405100000000",
        "--name",
        "pump 7",
    ]);
    assert_eq!(
        succeeded(&out),
        json!({"iccid": ICCID, "imsi": "901405100000000", "ip": "10.0.0.7",
               "status": "ACTIVE", "name": "pump 7"})
    );
    let ip: IpAddr = "10.0.0.7".parse().unwrap();
    assert_eq!(
        view.by_ip(ip).unwrap().iccid.as_str(),
        ICCID,
        "live at once"
    );

    // Global flags may come first, and the token from the environment.
    let out = Command::new(BIN)
        .args(["device", "--url", &server.url, "add", "--iccid", OTHER])
        .args(["--ip", "10.0.0.8", "--status", "INACTIVE"])
        .env("COAPGATE_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(
        succeeded(&out),
        json!({"iccid": OTHER, "ip": "10.0.0.8", "status": "INACTIVE"})
    );
    assert_eq!(server.device(OTHER).unwrap().status, DeviceStatus::Inactive);

    // The same address for a third device: the API's 409, nothing stored.
    let third = "89882806660000000002";
    let out = server.run(&["device", "add", "--iccid", third, "--ip", "10.0.0.7"]);
    failed(
        &out,
        &format!("coapgate: HTTP 409: the IP address is already used by device {ICCID} (field ip)"),
    );
    assert!(server.device(third).is_none());

    let out = server.run(&["device", "list"]);
    assert_eq!(
        succeeded(&out),
        json!([
            {"iccid": ICCID, "imsi": "901405100000000", "ip": "10.0.0.7", "status": "ACTIVE", "name": "pump 7"},
            {"iccid": OTHER, "ip": "10.0.0.8", "status": "INACTIVE"},
        ])
    );
    let out = server.run(&["device", "list", "--page", "2", "--page-size", "1"]);
    assert_eq!(
        succeeded(&out),
        json!([{"iccid": OTHER, "ip": "10.0.0.8", "status": "INACTIVE"}])
    );
    let out = server.run(&["device", "get", "--iccid", OTHER]);
    assert_eq!(succeeded(&out)["ip"], "10.0.0.8");

    let out = server.run(&["device", "remove", "--iccid", ICCID]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "a removal has no body");
    assert!(server.device(ICCID).is_none());
    assert!(view.by_ip(ip).is_none());
    let out = server.run(&["device", "remove", "--iccid", ICCID]);
    failed(&out, &format!("coapgate: HTTP 404: no device {ICCID}"));

    // A bad ICCID is the API's 400; one that looks like a path stays a
    // path segment.
    let out = server.run(&["device", "get", "--iccid", "123"]);
    failed(
        &out,
        "HTTP 400: an ICCID is 19 or 20 decimal digits (field iccid)",
    );
    let out = server.run(&["device", "get", "--iccid", "../devices"]);
    failed(&out, "(field iccid)");
}

#[test]
fn the_token_is_required_and_never_printed() {
    let server = serve();
    let add = ["device", "add", "--iccid", ICCID, "--ip", "10.0.0.7"];

    let out = server.command(&add).output().unwrap();
    failed(&out, "coapgate: HTTP 401: missing bearer token");
    let wrong = format!("{TOKEN}-wrong");
    let out = server
        .command(&add)
        .args(["--token", &wrong])
        .output()
        .unwrap();
    failed(&out, "coapgate: HTTP 401: invalid bearer token");
    assert!(!stderr(&out).contains(&wrong));
    let out = server
        .command(&add)
        .env("COAPGATE_TOKEN", &wrong)
        .output()
        .unwrap();
    failed(&out, "invalid bearer token");
    assert!(server.device(ICCID).is_none());

    // --help shows that the variable exists, not its value.
    let out = Command::new(BIN)
        .args(["device", "add", "--help"])
        .env("COAPGATE_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("COAPGATE_TOKEN"));
    assert!(!stdout(&out).contains(TOKEN));
}

#[test]
fn an_unreachable_api_is_a_failure() {
    let url = format!("http://127.0.0.1:{}", free_tcp_port());
    let out = Command::new(BIN)
        .args(["device", "list", "--url", &url, "--token", TOKEN])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains(&format!("cannot reach the admin API at {url}")),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
}

#[test]
fn psks_are_set_from_the_command_line_or_stdin() {
    let server = serve();
    server
        .store
        .put_device(Device {
            iccid: ICCID.parse().unwrap(),
            imsi: None,
            ip: "10.0.0.7".parse().unwrap(),
            status: DeviceStatus::Active,
            name: None,
        })
        .unwrap();
    let key = |s: &Server| s.store.psk_keys().key(ICCID).map(|k| k.to_vec());

    let out = server.run(&["psk", "set", "--iccid", ICCID, "--key", "cl1-secret-PSK"]);
    let described = json!({"protocol": "COAP", "format": "STRING", "origin": "OPERATOR", "lastBootstrap": null});
    assert_eq!(succeeded(&out), described);
    assert!(!stdout(&out).contains("cl1-secret-PSK"));
    assert_eq!(key(&server).as_deref(), Some(&b"cl1-secret-PSK"[..]));

    let out = server.run(&["psk", "get", "--iccid", ICCID]);
    assert_eq!(succeeded(&out), described);

    // From stdin, HEX.
    let mut child = server
        .command(&[
            "psk", "set", "--iccid", ICCID, "--format", "HEX", "--key", "-",
        ])
        .args(["--token", TOKEN])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"DEADbeef00112233\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(succeeded(&out)["format"], "HEX");
    assert_eq!(
        key(&server).as_deref(),
        Some(&[0xde, 0xad, 0xbe, 0xef, 0x00, 0x11, 0x22, 0x33][..])
    );

    // A bad key: the rule on stderr, never the key; the old key stays.
    let out = server.run(&["psk", "set", "--iccid", ICCID, "--key", "has,comma"]);
    failed(
        &out,
        "coapgate: HTTP 400: a STRING PSK holds printable ASCII without spaces or commas (field secretKey)",
    );
    assert!(!stderr(&out).contains("has,comma"));
    assert_eq!(key(&server).map(|k| k.len()), Some(8));

    let out = server.run(&["psk", "set", "--iccid", OTHER, "--key", "l0ng-enough"]);
    failed(&out, &format!("HTTP 404: no device {OTHER}"));
}

#[test]
fn templates_are_set_and_tested() {
    let server = serve();
    let dir = temp_dir("cli-template");
    let file = dir.join("template.json");
    std::fs::write(&file, TEMPLATE).unwrap();
    let file = file.to_str().unwrap();
    let template: Value = serde_json::from_str(TEMPLATE).unwrap();

    let out = server.run(&[
        "template",
        "test",
        "--file",
        file,
        "--payload-hex",
        "00 1A 00 37 00",
    ]);
    assert_eq!(
        succeeded(&out),
        json!({"translatedPayload": {"Temperature": 26, "Humidity": 55, "Switch": false}})
    );
    assert!(
        server.store.coap_template().is_none(),
        "testing stores nothing"
    );
    let out = server.run(&[
        "template",
        "test",
        "--file",
        file,
        "--payload-base64",
        "ABo=",
    ]);
    failed(
        &out,
        "coapgate: HTTP 422: Asset path:Humidity, Error: can't extract [2:4] from 2 bytes (field payload)",
    );
    let out = server.run(&["template", "test", "--file", file, "--payload-hex", "0g"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--payload-hex"), "{}", stderr(&out));

    let out = server.run(&["template", "set", "--name", "sensor v2", "--file", file]);
    assert_eq!(
        succeeded(&out),
        json!({"name": "sensor v2", "template": template, "status": "ACTIVE"})
    );
    assert!(server.store.active_template().is_some());
    let out = server.run(&["template", "get"]);
    assert_eq!(succeeded(&out)["name"], "sensor v2");

    // An invalid template: the API names its path; the stored one stays.
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"sense":[{"asset":"t","value":{"byte":0,"bytelength":3,"type":"int"}}]}"#,
    )
    .unwrap();
    let out = server.run(&[
        "template",
        "set",
        "--name",
        "bad",
        "--file",
        bad.to_str().unwrap(),
    ]);
    failed(
        &out,
        "HTTP 400: invalid template: sense[0].value.bytelength: bytelength 3 is not valid for int (1, 2, 4 or 8) (field template)",
    );
    // Not JSON at all: sent as text, refused by the API.
    std::fs::write(&bad, "{sense:").unwrap();
    let out = server.run(&[
        "template",
        "set",
        "--name",
        "bad",
        "--file",
        bad.to_str().unwrap(),
    ]);
    failed(&out, "(field template)");
    assert_eq!(server.store.coap_template().unwrap().name, "sensor v2");

    let out = server.run(&[
        "template",
        "set",
        "--name",
        "x",
        "--file",
        "/nonexistent/t.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read /nonexistent/t.json"));

    let out = server.run(&[
        "template", "set", "--name", "off", "--file", file, "--status", "INACTIVE",
    ]);
    assert_eq!(succeeded(&out)["status"], "INACTIVE");
    assert!(server.store.active_template().is_none());
    std::fs::remove_dir_all(dir).unwrap();
}
