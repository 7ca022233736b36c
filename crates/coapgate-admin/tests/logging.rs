//! One debug line per admin request, and no secret in any log line.
//!
//! In a test binary of its own: `tracing` caches per call site whether any
//! subscriber wants its events, so a call site first reached by another
//! test's thread (no subscriber) could stay silent for this test's scoped
//! one.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use coapgate_admin::{AdminState, MetricsSource, Token, router};
use coapgate_model::{Device, DeviceStatus};
use hyper_util::rt::TokioIo;

const TOKEN: &str = "adm1n-t0ken-for-tests";
const ICCID: &str = "8988280666000000000";

struct NoMetrics;

impl MetricsSource for NoMetrics {
    fn render(&self) -> Pin<Box<dyn Future<Output = String> + Send>> {
        Box::pin(async { String::new() })
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn send(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    token: &str,
    body: &str,
) -> StatusCode {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    sender.send_request(request).await.unwrap().status()
}

#[tokio::test(flavor = "current_thread")]
async fn one_debug_line_per_request_and_no_secret_in_the_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let store = coapgate_store::open("memory://").unwrap();
    store
        .put_device(Device {
            iccid: ICCID.parse().unwrap(),
            imsi: None,
            ip: "10.0.0.7".parse().unwrap(),
            status: DeviceStatus::Active,
            name: None,
        })
        .unwrap();
    let app = router(AdminState {
        store,
        token: Some(Token::new(TOKEN)),
        metrics: Arc::new(NoMetrics),
        ready: Arc::new(AtomicBool::new(true)),
        health: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let psk = format!("/v1/integrate/devices/{ICCID}/psk");
    let set = send(
        addr,
        Method::POST,
        &psk,
        TOKEN,
        r#"{"secretKey":"l0g-secret-PSK"}"#,
    )
    .await;
    assert_eq!(set, StatusCode::OK);
    let refused = send(addr, Method::POST, &psk, TOKEN, r#"{"secretKey":"sh0rt"}"#).await;
    assert_eq!(refused, StatusCode::BAD_REQUEST);
    let wrong_token = format!("{TOKEN}-wrong");
    let unauthorized = send(addr, Method::GET, "/v1/devices", &wrong_token, "").await;
    assert_eq!(unauthorized, StatusCode::UNAUTHORIZED);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("admin request"))
        .collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(lines[0].contains("DEBUG"), "{log}");
    assert!(
        lines[0].contains(&format!("method=POST path={psk} status=200")),
        "{log}"
    );
    assert!(lines[1].contains("status=400"), "{log}");
    assert!(
        lines[2].contains("method=GET path=/v1/devices status=401"),
        "{log}"
    );
    for secret in [TOKEN, "l0g-secret-PSK", "sh0rt"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}
