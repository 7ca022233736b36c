//! The bridge over TLS (`mqtts://`) against a real Mosquitto with a TLS
//! listener and a CA made for the test (`coapgate_testkit::TestPki`).
//! Needs the cargo feature `tls`.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coapgate_mqtt::{Bridge, BridgeConfig, BridgeEvent, MqttError, Outgoing, TlsConfig};
use coapgate_testkit::{Mosquitto, MosquittoSub, TestPki};
use common::{collect_events, wait_connected};

fn config(mosq: &Mosquitto, name: &str, tls: TlsConfig) -> BridgeConfig {
    let mut config = BridgeConfig::from_url(&mosq.tls_url()).expect("an mqtts:// URL");
    config.tls = Some(tls);
    config.client_id = format!("bridge-tls-{name}-{}", std::process::id());
    config.reconnect_delay_min = Duration::from_millis(100);
    config.reconnect_delay_max = Duration::from_millis(500);
    config
}

/// Every log line of the current thread's tasks, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Captures the logs of everything on this thread until the guard drops
    /// (a current-thread runtime runs the bridge's tasks here too).
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Events for `wait`, asserting that none of them is `Connected`.
async fn never_connects(rx: &mut tokio::sync::mpsc::Receiver<BridgeEvent>, wait: Duration) {
    let events = collect_events(rx, wait, |_| false).await;
    assert!(
        !events.contains(&BridgeEvent::Connected),
        "connected: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_over_tls_with_a_client_certificate() {
    let test = "publishes_over_tls_with_a_client_certificate";
    let pki = TestPki::generate("bridge-ok");
    let Some(mosq) = Mosquitto::start_tls(test, &pki, true) else {
        return;
    };
    let port = mosq.port;
    let Some(sub) = tokio::task::spawn_blocking(move || MosquittoSub::start(port, test))
        .await
        .expect("mosquitto_sub")
    else {
        return;
    };
    let tls =
        TlsConfig::from_pem_files(Some(&pki.ca), Some(&pki.client_cert), Some(&pki.client_key))
            .expect("the test PKI loads");
    let (handle, mut rx) = Bridge::start(config(&mosq, "ok", tls)).expect("valid");
    wait_connected(&mut rx).await;
    assert!(handle.is_connected());
    assert!(*handle.connection().borrow());

    handle
        .publish(Outgoing {
            id: 7,
            topic: "8988280666000000000/tls".into(),
            payload: Bytes::from_static(b"{\"over\":\"tls\"}"),
            deadline: Instant::now() + Duration::from_secs(10),
        })
        .expect("publish");
    let events = collect_events(&mut rx, Duration::from_secs(10), |e| {
        e.iter()
            .any(|e| matches!(e, BridgeEvent::Delivered { id: 7, .. }))
    })
    .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, BridgeEvent::Delivered { id: 7, .. })),
        "no PUBACK counted: {events:?}\n{}",
        mosq.log()
    );
    let got = sub.wait_for_telemetry(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].topic, "8988280666000000000/tls");
    assert_eq!(got[0].payload, "{\"over\":\"tls\"}");
    handle
        .shutdown(Instant::now() + Duration::from_secs(1))
        .await;
}

#[tokio::test]
async fn a_wrong_ca_never_connects_and_the_log_says_why() {
    let test = "a_wrong_ca_never_connects_and_the_log_says_why";
    let pki = TestPki::generate("bridge-wrong-ca");
    let Some(mosq) = Mosquitto::start_tls(test, &pki, false) else {
        return;
    };
    let logs = Logs::default();
    let _guard = logs.capture();
    let tls = TlsConfig::from_pem_files(Some(&pki.other_ca), None, None).expect("loads");
    let (handle, mut rx) = Bridge::start(config(&mosq, "wrong-ca", tls)).expect("valid");
    never_connects(&mut rx, Duration::from_secs(3)).await;
    assert!(!handle.is_connected());
    let refused = handle.publish(Outgoing {
        id: 1,
        topic: "t".into(),
        payload: Bytes::new(),
        deadline: Instant::now() + Duration::from_secs(1),
    });
    assert!(
        matches!(refused, Err(MqttError::NotConnected)),
        "{refused:?}"
    );

    let text = logs.text();
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("MQTT broker connection failed"))
        .collect();
    assert!(
        failures.len() >= 2,
        "retries with back-off, each logged:\n{text}"
    );
    let broker = format!("broker=127.0.0.1:{}", mosq.tls_port.expect("tls"));
    for line in &failures {
        assert!(
            line.contains("certificate verification failed: unknown issuer"),
            "{line}"
        );
        assert!(line.contains(&broker), "{line}");
    }
    handle
        .shutdown(Instant::now() + Duration::from_millis(100))
        .await;
}

#[tokio::test]
async fn a_broker_that_wants_a_client_certificate_refuses_us_without_one() {
    let test = "a_broker_that_wants_a_client_certificate_refuses_us_without_one";
    let pki = TestPki::generate("bridge-no-client-cert");
    let Some(mosq) = Mosquitto::start_tls(test, &pki, true) else {
        return;
    };
    let logs = Logs::default();
    let _guard = logs.capture();
    let tls = TlsConfig::from_pem_files(Some(&pki.ca), None, None).expect("loads");
    let (handle, mut rx) = Bridge::start(config(&mosq, "no-client-cert", tls)).expect("valid");
    never_connects(&mut rx, Duration::from_secs(2)).await;
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("MQTT broker connection failed")
                && l.contains("TLS handshake refused by the broker")),
        "{text}"
    );
    handle
        .shutdown(Instant::now() + Duration::from_millis(100))
        .await;
}

#[test]
fn a_key_of_another_certificate_is_refused_at_load() {
    let pki = TestPki::generate("bridge-key-mismatch");
    let e = TlsConfig::from_pem_files(Some(&pki.ca), Some(&pki.client_cert), Some(&pki.server_key))
        .expect_err("the server's key is not the client certificate's");
    let text = e.to_string();
    assert!(
        matches!(
            e,
            MqttError::Tls {
                field: "key_file",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        text.contains("does not belong to the certificate"),
        "{text}"
    );
    // Nothing of the key in the error or in Debug of a loaded config.
    let key = std::fs::read_to_string(&pki.client_key).expect("key");
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!text.contains(&body[..16]), "{text}");
    let ok =
        TlsConfig::from_pem_files(Some(&pki.ca), Some(&pki.client_cert), Some(&pki.client_key))
            .expect("loads");
    let debug = format!("{ok:?}");
    assert!(!debug.contains(&body[..16]), "{debug}");
    assert!(debug.contains("client.pem"), "{debug}");
    assert_eq!(ok, ok.clone());
}
