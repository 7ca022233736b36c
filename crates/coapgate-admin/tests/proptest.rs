//! Random bodies, random keys, random bytes against every admin route that
//! takes a body (issue 12): the answer is never a 5xx, every refusal has the
//! `{"error", "field"?}` body, and a refusal changes nothing stored (the
//! devices, the PSK, the template and the positions are read back after
//! each request).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use coapgate_admin::{AdminState, MetricsSource, Token, router};
use coapgate_model::{Device, DeviceStatus, Iccid};
use coapgate_store::Store;
use hyper_util::rt::TokioIo;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};

const TOKEN: &str = "adm1n-t0ken-for-proptest";
const ICCID: &str = "8988280666000000000";
const NEW: &str = "8988280666000000001";

struct NoMetrics;

impl MetricsSource for NoMetrics {
    fn render(&self) -> Pin<Box<dyn Future<Output = String> + Send>> {
        Box::pin(async { String::new() })
    }
}

/// Everything a request could change.
#[derive(Debug, PartialEq)]
struct Snapshot {
    devices: Vec<Device>,
    psk: Option<Vec<u8>>,
    template: Option<String>,
    positions: String,
}

fn snapshot(store: &Store) -> Snapshot {
    let iccid: Iccid = ICCID.parse().unwrap();
    Snapshot {
        devices: store.devices(1, 1000).unwrap(),
        psk: store.psk_keys().key(ICCID).map(|k| k.to_vec()),
        template: store
            .coap_template()
            .map(|r| format!("{} {} {}", r.name, r.template, r.status.as_str())),
        positions: format!("{:?}", store.positions(&iccid).unwrap()),
    }
}

/// The keys the routes know, and a few they do not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "iccid", "imsi", "ip", "status", "name", "secretKey", "format", "protocol",
            "template", "payload", "coordinate", "source", "sampleTime",
        ])
        .prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}

/// Strings near the valid ones and far from them.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "10.0.0.7",
            "10.0.0.8",
            "::1",
            "ACTIVE",
            "INACTIVE",
            "STRING",
            "HEX",
            "COAP",
            ICCID,
            NEW,
            "../x",
            "901405100000000",
            "CellTower",
            "AAEC",
            "{\"sense\": []}",
        ])
        .prop_map(str::to_owned),
        "[0-9]{0,25}",
        "[0-9a-fA-F]{0,40}",
        "[ -~]{0,40}",
        ".{0,20}",
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-400.0f64..400.0).prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body: mostly an object with the routes' keys, sometimes any JSON,
/// sometimes any bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => btree_map(key(), json(), 0..7)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()).to_string().into_bytes()),
        2 => json().prop_map(|v| v.to_string().into_bytes()),
        1 => vec(any::<u8>(), 0..300),
    ]
}

/// Each route with a valid body for it.
fn routes() -> Vec<(Method, String, Value)> {
    let template =
        serde_json::json!({"sense": [{"asset": "t", "value": {"byte": 0, "type": "boolean"}}]});
    let device = serde_json::json!({"ip": "10.0.0.9"});
    let psk = serde_json::json!({"secretKey": "l0ng-enough"});
    let position = serde_json::json!({"coordinate": [1, 2], "sampleTime": 1});
    vec![
        (Method::PUT, format!("/v1/devices/{ICCID}"), device.clone()),
        (Method::PUT, format!("/v1/devices/{NEW}"), device),
        (
            Method::POST,
            format!("/v1/integrate/devices/{ICCID}/psk"),
            psk.clone(),
        ),
        (
            Method::POST,
            format!("/v1/integrate/devices/{NEW}/psk"),
            psk,
        ),
        (
            Method::PUT,
            "/v1/optimize/templates/coap".to_owned(),
            serde_json::json!({"name": "t", "template": template}),
        ),
        (
            Method::POST,
            "/v1/optimize/messages/test".to_owned(),
            serde_json::json!({"template": template, "payload": "AQ=="}),
        ),
        (
            Method::PUT,
            format!("/v1/locate/devices/{ICCID}/position"),
            position.clone(),
        ),
        (
            Method::PUT,
            format!("/v1/locate/devices/{NEW}/position"),
            position,
        ),
    ]
}

/// A route and a body for it: a random one, or the route's valid body with
/// one key set to a random value or removed.
fn request() -> impl Strategy<Value = (Method, String, Vec<u8>)> {
    prop::sample::select(routes()).prop_flat_map(|(method, path, valid)| {
        let near_valid = (key(), json(), any::<bool>()).prop_map(move |(key, value, remove)| {
            let mut body = valid.clone();
            let map = body.as_object_mut().unwrap();
            if remove {
                map.remove(&key);
            } else {
                map.insert(key, value);
            }
            body.to_string().into_bytes()
        });
        let body = prop_oneof![1 => body(), 1 => near_valid];
        body.prop_map(move |body| (method.clone(), path.clone(), body))
    })
}

async fn send(addr: SocketAddr, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[test]
fn random_bodies_are_never_5xx_and_refusals_change_nothing() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
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
    let addr = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(AdminState {
            store: store.clone(),
            token: Some(Token::new(TOKEN)),
            metrics: Arc::new(NoMetrics),
            ready: Arc::new(AtomicBool::new(true)),
            health: None,
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    });

    let mut runner = TestRunner::new(Config {
        cases: 768,
        failure_persistence: None,
        ..Config::default()
    });
    let refused = std::cell::Cell::new(0u32);
    let accepted = std::cell::Cell::new(0u32);
    runner
        .run(&request(), |(method, path, body)| {
            let before = snapshot(&store);
            let shown = String::from_utf8_lossy(&body).into_owned();
            let (status, text) = runtime.block_on(send(addr, method.clone(), &path, body));
            prop_assert!(
                !status.is_server_error(),
                "{method} {path} {shown}: {status} {text}"
            );
            if status.is_success() {
                accepted.set(accepted.get() + 1);
                return Ok(());
            }
            refused.set(refused.get() + 1);
            prop_assert!(status.is_client_error(), "{status}");
            let answer: Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{status} not JSON ({e}): {text}")))?;
            prop_assert!(answer["error"].is_string(), "{answer}");
            prop_assert!(answer.get("field").is_none_or(Value::is_string), "{answer}");
            prop_assert_eq!(
                &snapshot(&store),
                &before,
                "{} {} {}: {} changed the store",
                method,
                path,
                shown,
                status
            );
            Ok(())
        })
        .unwrap();
    // The generator reaches the handlers' checks, not only the JSON parser.
    let (refused, accepted) = (refused.get(), accepted.get());
    assert!(refused > 400, "{refused} refused");
    assert!(
        accepted > 20,
        "{accepted} accepted: the generator reaches past the checks"
    );
    eprintln!("{refused} refused, {accepted} accepted");
}
