//! CoAPS end to end with clients we did not write (spec.md §2.4, §3): the
//! onboarding flow `/bootstrap` → DTLS with libcoap's OpenSSL and GnuTLS
//! clients, each cipher suite with `openssl s_client`, wrong keys, a key
//! changed while running, the identity check, and `/bootstrap` over DTLS.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use coapgate_bootstrap::{PskFormat, PskRecord};
use coapgate_server::BackgroundServer;
use coapgate_testkit::{coap_client, require, wait_output};
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);

fn coaps_url(server: &BackgroundServer, path: &str) -> String {
    format!("coaps://{}{path}", server.coaps_addr())
}

/// `coap-client-notls -m get /bootstrap` from `from`: (ICCID, PSK).
fn bootstrap(server: &BackgroundServer, from: &str, test: &str) -> Option<(String, String)> {
    let reply = coap_client(
        "coap-client-notls",
        &["-a", from, "-m", "get", &url(server, "/bootstrap")],
        test,
    )?;
    assert_eq!(reply.code.as_deref(), Some("2.05"), "{}", reply.log);
    let fields: Vec<&str> = reply.payload.split(',').collect();
    assert_eq!(fields.len(), 3, "{}", reply.payload);
    assert_eq!(fields[2], "coaps://localhost:5684");
    Some((fields[0].to_owned(), fields[1].to_owned()))
}

/// Who a DTLS client claims to be: its source address, PSK identity, key.
#[derive(Clone, Copy)]
struct As<'a>(&'a str, &'a str, &'a str);

/// A request over DTLS with a libcoap client; the response code, if any
/// (`None` inside when no response came; outer `None` when the client is
/// not installed).
fn coaps(
    client: &str,
    who: As<'_>,
    method: &str,
    url: &str,
    extra: &[&str],
    test: &str,
) -> Option<Option<String>> {
    let As(from, identity, key) = who;
    let mut args = vec!["-a", from, "-u", identity, "-k", key, "-m", method];
    args.extend_from_slice(extra);
    args.push(url);
    coap_client(client, &args, test).map(|r| r.code)
}

fn base64_value(payload: &str) -> Vec<u8> {
    let v: Value = serde_json::from_str(payload).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(v["payload"]["value"].as_str().unwrap())
        .unwrap()
}

#[test]
fn onboarding_bootstrap_then_dtls_with_libcoap_openssl_and_gnutls() {
    let test = "coaps_onboarding";
    let Some(s) = setup(test) else { return };
    let Some((iccid, psk)) = bootstrap(&s.server, "127.0.0.2", test) else {
        return;
    };
    assert_eq!(iccid, ICCID_A);
    let url = coaps_url(&s.server, "/data?t=x");
    for (n, client) in ["coap-client-openssl", "coap-client-gnutls"]
        .into_iter()
        .enumerate()
    {
        let payload = format!("secure {n}");
        let Some(code) = coaps(
            client,
            As("127.0.0.2", &iccid, &psk),
            "post",
            &url,
            &["-e", &payload],
            test,
        ) else {
            return;
        };
        assert_eq!(code.as_deref(), Some("2.04"), "{client}");
        let messages = s.sub.wait_for_telemetry(n + 1, WAIT);
        let m = &messages[n];
        assert_eq!(m.topic, format!("{ICCID_A}/x"));
        let envelope: Value = serde_json::from_str(&m.payload).unwrap();
        assert_eq!(envelope["device"]["iccid"], ICCID_A);
        assert_eq!(envelope["device"]["ip"], "127.0.0.2");
        assert_eq!(envelope["device"]["imsi"], IMSI_A);
        assert_eq!(envelope["type"], "TELEMETRY_DATA");
        assert_eq!(envelope["payload"]["topic"], "x");
        assert_eq!(base64_value(&m.payload), payload.as_bytes());
    }
    // NON over DTLS too.
    let code = coaps(
        "coap-client-openssl",
        As("127.0.0.2", &iccid, &psk),
        "post",
        &url,
        &["-N", "-e", "non"],
        test,
    )
    .unwrap();
    assert_eq!(code.as_deref(), Some("2.04"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.sub.telemetry().len(),
        3,
        "exactly one message per request"
    );
}

#[test]
fn a_wrong_key_or_unknown_identity_gets_no_session_and_nothing_is_published() {
    let test = "coaps_wrong_key";
    let Some(s) = setup(test) else { return };
    let Some((iccid, psk)) = bootstrap(&s.server, "127.0.0.2", test) else {
        return;
    };
    let url = coaps_url(&s.server, "/data");
    let wrong: String = psk.chars().rev().collect();
    let args = ["-B", "3", "-e", "x"];
    let code = coaps(
        "coap-client-openssl",
        As("127.0.0.2", &iccid, &wrong),
        "post",
        &url,
        &args,
        test,
    )
    .unwrap();
    assert_eq!(code, None, "no response without a session");
    let code = coaps(
        "coap-client-openssl",
        As("127.0.0.2", "8988280666000000099", &psk),
        "post",
        &url,
        &args,
        test,
    )
    .unwrap();
    assert_eq!(code, None);
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.sub.telemetry().is_empty());
}

#[test]
fn each_cipher_suite_completes_a_handshake_with_openssl_s_client() {
    let test = "coaps_s_client";
    let Some(s) = setup(test) else { return };
    let Some(openssl) = require("openssl", test) else {
        return;
    };
    let key = "0123456789abcdef0123456789abcdef";
    s.server
        .store()
        .set_psk(
            &ICCID_A.parse().unwrap(),
            &PskRecord::operator(key, PskFormat::Hex).unwrap(),
        )
        .unwrap();
    for suite in [
        "PSK-AES128-CBC-SHA256",
        "PSK-AES128-CCM8",
        "PSK-AES128-GCM-SHA256",
    ] {
        let connect = s.server.coaps_addr().to_string();
        let mut child = Command::new(&openssl)
            .args([
                "s_client",
                "-dtls1_2",
                "-connect",
                &connect,
                "-bind",
                "127.0.0.2:0",
            ])
            .args(["-psk_identity", ICCID_A, "-psk", key, "-cipher", suite])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Leave stdin open a moment so the handshake finishes, then EOF ends it.
        std::thread::sleep(Duration::from_millis(500));
        let _ = child.stdin.take().map(|mut stdin| stdin.write_all(b""));
        let out = wait_output(child, Duration::from_secs(10));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("Cipher is {suite}")),
            "{suite}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if suite == "PSK-AES128-CBC-SHA256" {
            assert!(stdout.contains("Extended master secret: yes"), "{stdout}");
        }
    }
}

#[test]
fn a_key_changed_while_running_is_used_by_the_next_handshake() {
    let test = "coaps_key_change";
    let Some(s) = setup(test) else { return };
    let iccid = ICCID_A;
    let url = coaps_url(&s.server, "/data");
    s.server
        .store()
        .set_psk(
            &iccid.parse().unwrap(),
            &PskRecord::operator("first-key", PskFormat::String).unwrap(),
        )
        .unwrap();
    let Some(code) = coaps(
        "coap-client-openssl",
        As("127.0.0.2", iccid, "first-key"),
        "post",
        &url,
        &["-e", "1"],
        test,
    ) else {
        return;
    };
    assert_eq!(code.as_deref(), Some("2.04"));
    s.server
        .store()
        .set_psk(
            &iccid.parse().unwrap(),
            &PskRecord::operator("second-key", PskFormat::String).unwrap(),
        )
        .unwrap();
    let old = coaps(
        "coap-client-openssl",
        As("127.0.0.2", iccid, "first-key"),
        "post",
        &url,
        &["-B", "3", "-e", "2"],
        test,
    )
    .unwrap();
    assert_eq!(old, None, "the old key no longer works");
    let new = coaps(
        "coap-client-openssl",
        As("127.0.0.2", iccid, "second-key"),
        "post",
        &url,
        &["-e", "3"],
        test,
    )
    .unwrap();
    assert_eq!(new.as_deref(), Some("2.04"));
}

#[test]
fn the_identity_must_belong_to_the_device_at_the_source_address() {
    let test = "coaps_identity";
    let Some(s) = setup(test) else { return };
    let Some((iccid_a, psk_a)) = bootstrap(&s.server, "127.0.0.2", test) else {
        return;
    };
    // Device A's identity and key, from device B's address: the handshake
    // succeeds (the key is right) but the request is not A's to make.
    let url = coaps_url(&s.server, "/data");
    let code = coaps(
        "coap-client-openssl",
        As("127.0.0.3", &iccid_a, &psk_a),
        "post",
        &url,
        &["-e", "x"],
        test,
    )
    .unwrap();
    assert_eq!(code.as_deref(), Some("4.01"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.sub.telemetry().is_empty());
}

#[test]
fn bootstrap_over_dtls_is_forbidden() {
    let test = "coaps_bootstrap";
    let Some(s) = setup(test) else { return };
    let Some((iccid, psk)) = bootstrap(&s.server, "127.0.0.2", test) else {
        return;
    };
    let code = coaps(
        "coap-client-openssl",
        As("127.0.0.2", &iccid, &psk),
        "get",
        &coaps_url(&s.server, "/bootstrap"),
        &[],
        test,
    )
    .unwrap();
    assert_eq!(code.as_deref(), Some("4.03"));
}
