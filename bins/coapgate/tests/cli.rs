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

// ------------------------------------------------ bad input (issue 12)

/// Runs the binary with `args` in a scratch working directory, no token in
/// the environment; bounded by the binary itself (nothing here starts a
/// server that stays up).
fn run_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("COAPGATE_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn bad_arguments_exit_2_naming_the_argument_and_send_nothing() {
    let server = serve();
    let dir = temp_dir("cli-bad-arguments");
    let url = server.url.clone();
    // (arguments, a word of the message)
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["frobnicate"], "frobnicate"),
        (vec!["device", "frobnicate"], "frobnicate"),
        (
            vec![
                "device", "add", "--iccid", ICCID, "--ip", "10.0.0.7", "--colour", "red",
            ],
            "--colour",
        ),
        (vec!["device", "add", "--ip", "10.0.0.7"], "--iccid"),
        (
            vec![
                "device", "add", "--iccid", ICCID, "--ip", "10.0.0.7", "--status", "DELETED",
            ],
            "--status",
        ),
        (vec!["device", "list", "--page", "0"], "--page"),
        (vec!["device", "list", "--page", "-1"], "-1"),
        (vec!["device", "list", "--page", "x"], "--page"),
        (vec!["device", "list", "--page-size", "1001"], "--page-size"),
        (
            vec!["device", "list", "--page-size", "99999999999"],
            "--page-size",
        ),
        (
            vec![
                "psk",
                "set",
                "--iccid",
                ICCID,
                "--key",
                "l0ng-enough",
                "--format",
                "BASE64",
            ],
            "--format",
        ),
        (
            vec!["template", "test", "--file", "t.json"],
            "--payload-hex",
        ),
        (vec!["serve", "--config"], "--config"),
        (vec!["serve", "--bogus"], "--bogus"),
        (vec!["check-config"], "CONFIG"),
        (
            vec!["device", "list", "--url", "127.0.0.1:8080"],
            "--url must be http://HOST[:PORT]",
        ),
        (
            vec!["device", "list", "--url", "https://127.0.0.1:8080"],
            "--url must be http://HOST[:PORT]",
        ),
        (
            vec!["device", "list", "--url", "http://"],
            "--url has no host",
        ),
        (
            vec![
                "device",
                "list",
                "--url",
                "http://admin:s3cret-pw@127.0.0.1:1",
            ],
            "user or password",
        ),
    ];
    for (args, word) in cases {
        let mut args = args;
        if args[0] != "serve"
            && args[0] != "check-config"
            && !args.contains(&"--url")
            && args.len() > 1
        {
            args.extend(["--url", &url]);
        }
        let out = run_in(&dir, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
        let text = stderr(&out);
        assert!(text.contains(word), "{args:?}: {word:?} not in {text}");
        assert!(
            !text.contains("s3cret-pw"),
            "{args:?} echoed a password: {text}"
        );
    }
    assert!(server.store.devices(1, 10).unwrap().is_empty());
    assert!(server.store.psk_keys().key(ICCID).is_none());
}

#[test]
fn bad_configuration_files_exit_nonzero_naming_the_key_and_start_nothing() {
    let dir = temp_dir("cli-bad-config");
    let write = |name: &str, text: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let port = free_tcp_port();
    let cases: Vec<(String, &str)> = vec![
        (
            write("unknown.toml", b"[coap]\nbnd = \"0.0.0.0:1\"\n"),
            "coap.bnd: unknown key",
        ),
        (
            write("nested.toml", b"[coap.dedup]\nmax_entriez = 1\n"),
            "coap.dedup.max_entriez",
        ),
        (
            write("type.toml", b"[mqtt]\nqos = \"1\"\n"),
            "mqtt.qos: invalid type",
        ),
        (write("range.toml", b"[coaps]\nmtu = 70000\n"), "coaps.mtu"),
        (
            write("addr.toml", b"[admin]\nbind = \"localhost:8080\"\n"),
            "admin.bind",
        ),
        (
            write(
                "url.toml",
                b"[mqtt]\nurl = \"mqtt://u:s3cret-pw@h:99999\"\n",
            ),
            "mqtt.url",
        ),
        (
            write(
                "store.toml",
                b"[store]\nurl = \"mysql://u:s3cret-pw@h/db\"\n",
            ),
            "store.url",
        ),
        (
            write("secret.toml", b"[admin]\ntoken = \"s3cret-pw\n"),
            "line 2, column",
        ),
        (
            write("token.toml", b"[admin]\ntoken = 12345\n"),
            "admin.token: invalid type: integer",
        ),
        (
            write(
                "device.toml",
                b"[[device]]\niccid = \"../x\"\nip = \"127.0.0.2\"\n",
            ),
            "device[0].iccid",
        ),
        (
            write(
                "twice.toml",
                b"[[device]]\niccid = \"8988280666000000000\"\nip = \"127.0.0.2\"\n\
                  [[device]]\niccid = \"8988280666000000001\"\nip = \"127.0.0.2\"\n",
            ),
            "device[1].ip: 127.0.0.2 is listed twice",
        ),
        (
            write("latin1.toml", b"# gr\xfc\xdfe\n"),
            "line 1: not UTF-8",
        ),
        (
            dir.join("missing.toml").display().to_string(),
            "No such file",
        ),
        (dir.display().to_string(), "directory"),
    ];
    for (path, word) in &cases {
        // check-config: exit 1 and the message.
        let out = run_in(&dir, &["check-config", path]);
        assert_eq!(out.status.code(), Some(1), "{path}: {}", stderr(&out));
        let text = stderr(&out);
        assert!(
            text.contains(word),
            "check-config {path}: {word:?} not in {text}"
        );
        assert!(text.contains(path.as_str()), "names the file: {text}");
        assert!(
            !text.contains("s3cret-pw") && !text.contains("12345"),
            "{text}"
        );

        // serve: exit 2 at once, nothing bound, no database created.
        let started = std::time::Instant::now();
        let out = run_in(&dir, &["serve", "--config", path]);
        assert_eq!(out.status.code(), Some(2), "serve {path}: {}", stderr(&out));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let text = stderr(&out);
        assert!(text.contains(word), "serve {path}: {word:?} not in {text}");
        assert!(!text.contains("s3cret-pw"), "{text}");
    }
    assert!(!dir.join("coapgate.db").exists(), "a store was created");
    // The admin port of a configuration that names it was never bound.
    let admin = write(
        "admin-bad.toml",
        format!("[admin]\nbind = \"127.0.0.1:{port}\"\n[coap]\nmax_payload = 1\n").as_bytes(),
    );
    let out = run_in(&dir, &["serve", "--config", &admin]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("coap.max_payload"),
        "{}",
        stderr(&out)
    );
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}
