//! The admin API over real HTTP: each test serves the router on a free
//! loopback port (as the server does) and talks to it through hyper's
//! HTTP/1.1 client. Every route's success with its exact JSON, and every
//! refusal with its status, its `{"error","field"}` body and the store read
//! back unchanged.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use coapgate_admin::{
    AdminState, BrokerHealth, Health, HealthSource, MetricsSource, StoreHealth, Token, router,
};
use coapgate_location::PositionStore;
use coapgate_model::{Device, DeviceDirectory, DeviceStatus, Iccid};
use coapgate_store::Store;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const TOKEN: &str = "adm1n-t0ken-for-tests";
const ICCID: &str = "8988280666000000000";
const OTHER: &str = "8988280666000000001";

struct FixedMetrics;

impl MetricsSource for FixedMetrics {
    fn render(&self) -> Pin<Box<dyn Future<Output = String> + Send>> {
        Box::pin(async {
            "# TYPE coapgate_dedup_hits_total counter\ncoapgate_dedup_hits_total 3\n".to_owned()
        })
    }
}

struct Api {
    store: Store,
    addr: std::net::SocketAddr,
    ready: Arc<AtomicBool>,
    token: Option<&'static str>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// Asserts a refusal: status and exact error body.
    #[track_caller]
    fn refused(&self, status: StatusCode, body: Value) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.json(), body);
        assert_eq!(
            self.headers
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap()),
            Some("application/json")
        );
    }

    /// Asserts a 400 naming `field`, whatever the message.
    #[track_caller]
    fn bad_field(&self, field: &str) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "{}", self.text);
        let body = self.json();
        assert_eq!(body["field"], json!(field), "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
}

fn api_with(token: Option<&'static str>) -> Api {
    let store = coapgate_store::open("memory://").unwrap();
    let ready = Arc::new(AtomicBool::new(true));
    let router = router(AdminState {
        store: store.clone(),
        token: token.map(Token::new),
        metrics: Arc::new(FixedMetrics),
        ready: ready.clone(),
        health: None,
    });
    let addr = serve(router);
    Api {
        store,
        addr,
        ready,
        token,
    }
}

/// Serves the router on a free loopback port for the rest of the test.
fn serve(router: Router) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

fn api() -> Api {
    api_with(Some(TOKEN))
}

impl Api {
    async fn send(&self, request: Request<Body>) -> Reply {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = request;
        request
            .headers_mut()
            .insert(header::HOST, self.addr.to_string().parse().unwrap());
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            text: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    fn request(&self, method: Method, path: &str) -> axum::http::request::Builder {
        let builder = Request::builder().method(method).uri(path);
        match self.token {
            Some(token) => builder.header(header::AUTHORIZATION, format!("Bearer {token}")),
            None => builder,
        }
    }

    async fn call(&self, method: Method, path: &str) -> Reply {
        self.send(self.request(method, path).body(Body::empty()).unwrap())
            .await
    }

    async fn json(&self, method: Method, path: &str, body: Value) -> Reply {
        self.raw(method, path, "application/json", body.to_string())
            .await
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: impl Into<Body>,
    ) -> Reply {
        self.send(
            self.request(method, path)
                .header(header::CONTENT_TYPE, content_type)
                .body(body.into())
                .unwrap(),
        )
        .await
    }

    fn put_device(&self, iccid: &str, ip: &str) {
        self.store
            .put_device(Device {
                iccid: iccid.parse().unwrap(),
                imsi: None,
                ip: ip.parse().unwrap(),
                status: DeviceStatus::Active,
                name: None,
            })
            .unwrap();
    }

    fn device(&self, iccid: &str) -> Option<Device> {
        self.store.device(&iccid.parse().unwrap()).unwrap()
    }

    fn all_devices(&self) -> Vec<Device> {
        self.store.devices(1, 1000).unwrap()
    }

    fn key(&self, iccid: &str) -> Option<Vec<u8>> {
        self.store.psk_keys().key(iccid).map(|k| k.to_vec())
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn iccid(s: &str) -> Iccid {
    s.parse().unwrap()
}

fn devices_path(iccid: &str) -> String {
    format!("/v1/devices/{iccid}")
}

// ---------------------------------------------------------------- devices

#[tokio::test]
async fn a_device_is_created_read_listed_replaced_and_removed() {
    let api = api();
    let view = api.store.directory();

    let created = api
        .json(
            Method::PUT,
            &devices_path(ICCID),
            json!({"iccid": ICCID, "imsi": "901405100000000", "ip": "::ffff:10.0.0.7",
                   "status": "ACTIVE", "name": "pump 7"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let stored = json!({"iccid": ICCID, "imsi": "901405100000000", "ip": "10.0.0.7",
                        "status": "ACTIVE", "name": "pump 7"});
    assert_eq!(
        created.json(),
        stored,
        "the IP is returned in canonical form"
    );
    // Live at once on the hot path, under the IPv4 and the mapped address.
    let found = view.by_ip(ip("10.0.0.7")).expect("resolves after PUT");
    assert_eq!(found.iccid, iccid(ICCID));
    assert!(view.by_ip(ip("::ffff:10.0.0.7")).is_some());

    let read = api.call(Method::GET, &devices_path(ICCID)).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json(), stored);

    // Replace: only the required field; status defaults to ACTIVE, the
    // absent imsi and name are gone, the old address is free.
    let replaced = api
        .json(
            Method::PUT,
            &devices_path(ICCID),
            json!({"ip": "10.0.0.8", "status": "INACTIVE"}),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    assert_eq!(
        replaced.json(),
        json!({"iccid": ICCID, "ip": "10.0.0.8", "status": "INACTIVE"})
    );
    assert!(view.by_ip(ip("10.0.0.7")).is_none());
    assert!(!view.by_ip(ip("10.0.0.8")).unwrap().is_active());

    let second = api
        .json(
            Method::PUT,
            &devices_path(OTHER),
            json!({"ip": "2001:db8::1", "imsi": null}),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);

    let list = api.call(Method::GET, "/v1/devices").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(
        list.json(),
        json!([
            {"iccid": ICCID, "ip": "10.0.0.8", "status": "INACTIVE"},
            {"iccid": OTHER, "ip": "2001:db8::1", "status": "ACTIVE"},
        ])
    );
    let page2 = api.call(Method::GET, "/v1/devices?page=2&pageSize=1").await;
    assert_eq!(
        page2.json(),
        json!([{"iccid": OTHER, "ip": "2001:db8::1", "status": "ACTIVE"}])
    );
    let past_the_end = api.call(Method::GET, "/v1/devices?page=3&pageSize=1").await;
    assert_eq!(past_the_end.status, StatusCode::OK);
    assert_eq!(past_the_end.json(), json!([]));

    let removed = api.call(Method::DELETE, &devices_path(ICCID)).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_eq!(removed.text, "");
    assert!(
        view.by_ip(ip("10.0.0.8")).is_none(),
        "stops resolving at once"
    );
    assert!(api.device(ICCID).is_none());

    api.call(Method::GET, &devices_path(ICCID)).await.refused(
        StatusCode::NOT_FOUND,
        json!({"error": format!("no device {ICCID}")}),
    );
    api.call(Method::DELETE, &devices_path(ICCID))
        .await
        .refused(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no device {ICCID}")}),
        );
}

#[tokio::test]
async fn bad_device_bodies_are_refused_naming_the_field_and_change_nothing() {
    let api = api();
    api.put_device(ICCID, "10.0.0.7");
    let before = api.all_devices();
    let path = devices_path(ICCID);

    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"ip": "10.0.0.9", "iccid": OTHER}),
            "iccid",
            "`iccid` in the body differs from the ICCID in the path",
        ),
        (
            json!({"ip": "10.0.0.9", "iccid": 8988280666000000000u64}),
            "iccid",
            "`iccid` must be a string",
        ),
        (
            json!({"ip": "10.0.0.9", "imsi": "12"}),
            "imsi",
            "an IMSI is 6 to 15 decimal digits",
        ),
        (
            json!({"ip": "10.0.0.9", "imsi": 901405100000000u64}),
            "imsi",
            "`imsi` must be a string",
        ),
        (json!({}), "ip", "`ip` is required"),
        (json!({"ip": null}), "ip", "`ip` is required"),
        (
            json!({"ip": "10.0.0.256"}),
            "ip",
            "`ip` is an IPv4 or IPv6 address",
        ),
        (
            json!({"ip": "10.0.0.9", "status": "active"}),
            "status",
            "`status` is `ACTIVE` or `INACTIVE`",
        ),
        (
            json!({"ip": "10.0.0.9", "status": true}),
            "status",
            "`status` must be a string",
        ),
        (
            json!({"ip": "10.0.0.9", "name": "n".repeat(257)}),
            "name",
            "`name` is at most 256 characters, none a control character",
        ),
        (
            json!({"ip": "10.0.0.9", "name": "a\nb"}),
            "name",
            "`name` is at most 256 characters, none a control character",
        ),
        (
            json!({"ip": "10.0.0.9", "name": 7}),
            "name",
            "`name` must be a string",
        ),
        (
            json!({"ip": "10.0.0.9", "colour": "red"}),
            "colour",
            "unknown field `colour`; expected `iccid`, `imsi`, `ip`, `status`, `name`",
        ),
    ];
    for (body, field, error) in cases {
        let reply = api.json(Method::PUT, &path, body.clone()).await;
        reply.refused(
            StatusCode::BAD_REQUEST,
            json!({"error": error, "field": field}),
        );
        assert_eq!(api.all_devices(), before, "{body} changed the store");
    }
    // A new device with a bad body is not created either.
    let reply = api
        .json(
            Method::PUT,
            &devices_path(OTHER),
            json!({"ip": "10.0.0.9", "status": "ON"}),
        )
        .await;
    reply.bad_field("status");
    assert_eq!(api.all_devices(), before);
    assert!(api.store.directory().by_ip(ip("10.0.0.9")).is_none());
}

#[tokio::test]
async fn malformed_requests_are_refused_and_change_nothing() {
    let api = api();
    let path = devices_path(ICCID);

    api.raw(
        Method::PUT,
        &path,
        "application/json",
        r#"{"ip": "10.0.0.7""#,
    )
    .await
    .refused(
        StatusCode::BAD_REQUEST,
        json!({"error": "malformed JSON: EOF while parsing an object at line 1 column 17"}),
    );
    api.raw(Method::PUT, &path, "application/json", "")
        .await
        .refused(
            StatusCode::BAD_REQUEST,
            json!({"error": "malformed JSON: EOF while parsing a value at line 1 column 0"}),
        );
    api.raw(Method::PUT, &path, "application/json", r#"["10.0.0.7"]"#)
        .await
        .refused(
            StatusCode::BAD_REQUEST,
            json!({"error": "the request body must be a JSON object"}),
        );
    let unsupported =
        json!({"error": "the request body must be JSON (Content-Type: application/json)"});
    api.raw(Method::PUT, &path, "text/plain", r#"{"ip": "10.0.0.7"}"#)
        .await
        .refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, unsupported.clone());
    api.send(
        api.request(Method::PUT, &path)
            .body(Body::from(r#"{"ip": "10.0.0.7"}"#))
            .unwrap(),
    )
    .await
    .refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, unsupported);
    // Parameters after the media type are fine.
    let ok = api
        .raw(
            Method::PUT,
            &path,
            "Application/JSON; charset=utf-8",
            r#"{"ip": "10.0.0.7"}"#,
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
    api.call(Method::DELETE, &path).await;

    // Over the limit: 413, whether or not Content-Length announces it.
    let name = "n".repeat(coapgate_admin::MAX_BODY_BYTES);
    let big = json!({"ip": "10.0.0.7", "name": name}).to_string();
    let too_large = json!({"error": "the request body is larger than 262144 bytes"});
    api.raw(Method::PUT, &path, "application/json", big.clone())
        .await
        .refused(StatusCode::PAYLOAD_TOO_LARGE, too_large.clone());
    let announced = api
        .send(
            api.request(Method::PUT, &path)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, big.len())
                .body(Body::from(big))
                .unwrap(),
        )
        .await;
    announced.refused(StatusCode::PAYLOAD_TOO_LARGE, too_large);

    // A bad ICCID in the path, on every route that takes one.
    for (method, bad) in [
        (Method::GET, "/v1/devices/123"),
        (Method::PUT, "/v1/devices/898828066600000000a"),
        (Method::DELETE, "/v1/devices/89882806660000000000000"),
        (Method::POST, "/v1/integrate/devices/123/psk"),
        (Method::GET, "/v1/integrate/devices/123/psk/COAP"),
        (Method::PUT, "/v1/locate/devices/123/position"),
        (Method::GET, "/v1/locate/devices/%FF%FE/positions"),
    ] {
        let reply = api
            .json(method.clone(), bad, json!({"ip": "10.0.0.7"}))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{method} {bad}: {}",
            reply.text
        );
        assert_eq!(reply.json()["field"], "iccid", "{method} {bad}");
    }
    api.call(Method::GET, "/v1/devices/123").await.refused(
        StatusCode::BAD_REQUEST,
        json!({"error": "an ICCID is 19 or 20 decimal digits", "field": "iccid"}),
    );

    assert!(api.all_devices().is_empty());
}

#[tokio::test]
async fn an_address_held_by_another_device_is_a_conflict() {
    let api = api();
    api.put_device(ICCID, "10.0.0.7");
    api.put_device(OTHER, "10.0.0.8");
    let before = api.all_devices();
    let conflict = json!({"error": format!("the IP address is already used by device {ICCID}"), "field": "ip"});

    // A new device, with the address written as IPv4-mapped IPv6.
    let third = "89882806660000000002";
    api.json(
        Method::PUT,
        &devices_path(third),
        json!({"ip": "::ffff:10.0.0.7"}),
    )
    .await
    .refused(StatusCode::CONFLICT, conflict.clone());
    // An existing device moving onto it.
    api.json(
        Method::PUT,
        &devices_path(OTHER),
        json!({"ip": "10.0.0.7", "name": "moved"}),
    )
    .await
    .refused(StatusCode::CONFLICT, conflict);

    assert_eq!(api.all_devices(), before);
    let view = api.store.directory();
    assert_eq!(view.by_ip(ip("10.0.0.7")).unwrap().iccid, iccid(ICCID));
    assert_eq!(view.by_ip(ip("10.0.0.8")).unwrap().iccid, iccid(OTHER));
}

#[tokio::test]
async fn bad_page_queries_are_refused() {
    let api = api();
    for (query, field) in [
        ("page=0", "page"),
        ("page=x", "page"),
        ("pageSize=0", "pageSize"),
        ("pageSize=1001", "pageSize"),
        ("page_size=10", "page_size"),
    ] {
        api.call(Method::GET, &format!("/v1/devices?{query}"))
            .await
            .bad_field(field);
    }
    api.call(Method::GET, "/v1/devices?pageSize=1001")
        .await
        .refused(
            StatusCode::BAD_REQUEST,
            json!({"error": "`pageSize` is an integer from 1 to 1000", "field": "pageSize"}),
        );
    let max = api.call(Method::GET, "/v1/devices?pageSize=1000").await;
    assert_eq!(max.status, StatusCode::OK);
}

// ----------------------------------------------------------------- auth

#[tokio::test]
async fn v1_routes_need_the_bearer_token() {
    let api = api();
    let routes = [
        (Method::GET, "/v1/devices".to_owned()),
        (Method::PUT, devices_path(ICCID)),
        (Method::DELETE, devices_path(ICCID)),
        (Method::POST, format!("/v1/integrate/devices/{ICCID}/psk")),
        (
            Method::GET,
            format!("/v1/integrate/devices/{ICCID}/psk/COAP"),
        ),
        (Method::PUT, "/v1/optimize/templates/coap".to_owned()),
        (Method::POST, "/v1/optimize/messages/test".to_owned()),
        (Method::PUT, format!("/v1/locate/devices/{ICCID}/position")),
        (Method::GET, "/v1/no/such/route".to_owned()),
        // A bad ICCID is not even looked at.
        (Method::GET, "/v1/devices/123".to_owned()),
    ];
    let wrong_token = format!("{TOKEN}x");
    let short_token = &TOKEN[..TOKEN.len() - 1];
    let headers: [(Option<String>, &str); 6] = [
        (None, "missing bearer token"),
        (
            Some(format!("Bearer {wrong_token}")),
            "invalid bearer token",
        ),
        (
            Some(format!("Bearer {short_token}")),
            "invalid bearer token",
        ),
        (
            Some(format!("Basic {TOKEN}")),
            "the Authorization header must be `Bearer TOKEN`",
        ),
        (
            Some("Bearer".to_owned()),
            "the Authorization header must be `Bearer TOKEN`",
        ),
        (
            Some(TOKEN.to_owned()),
            "the Authorization header must be `Bearer TOKEN`",
        ),
    ];
    for (method, path) in &routes {
        for (authorization, error) in &headers {
            let mut request = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(value) = authorization {
                request = request.header(header::AUTHORIZATION, value);
            }
            let body = json!({"ip": "10.0.0.7", "secretKey": "s3cretkey", "name": "t",
                              "template": {"sense": []}, "coordinate": [1, 2], "sampleTime": 1});
            let reply = api
                .send(request.body(Body::from(body.to_string())).unwrap())
                .await;
            reply.refused(StatusCode::UNAUTHORIZED, json!({"error": error}));
            assert_eq!(
                reply.headers.get(header::WWW_AUTHENTICATE).unwrap(),
                "Bearer realm=\"coapgate\"",
                "{method} {path}"
            );
            assert!(
                !reply.text.contains(TOKEN),
                "{method} {path}: the token leaked"
            );
        }
    }
    assert!(api.all_devices().is_empty());
    assert!(api.store.coap_template().is_none());

    // With the token: the same unknown route is a 404.
    api.call(Method::GET, "/v1/no/such/route")
        .await
        .refused(StatusCode::NOT_FOUND, json!({"error": "no such route"}));
    // The scheme is case-insensitive.
    let reply = api
        .send(
            Request::builder()
                .uri("/v1/devices")
                .header(header::AUTHORIZATION, format!("bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn without_a_configured_token_v1_is_open() {
    let api = api_with(None);
    let reply = api.call(Method::GET, "/v1/devices").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!([]));
}

#[tokio::test]
async fn an_empty_configured_token_matches_nothing() {
    let api = api_with(Some(""));
    let reply = api
        .send(
            Request::builder()
                .uri("/v1/devices")
                .header(header::AUTHORIZATION, "Bearer ")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

// -------------------------------------------------------- metrics, health

#[tokio::test]
async fn metrics_and_healthz_need_no_token() {
    let api = api();
    let metrics = api
        .send(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(
        metrics.headers.get(header::CONTENT_TYPE).unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(
        metrics.text,
        "# TYPE coapgate_dedup_hits_total counter\ncoapgate_dedup_hits_total 3\n"
    );

    let health = || {
        Request::builder()
            .uri("/healthz")
            .body(Body::empty())
            .unwrap()
    };
    let ok = api.send(health()).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json(), json!({"status": "ok"}));
    api.ready.store(false, Ordering::Release);
    api.send(health()).await.refused(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "not ready"}),
    );
}

/// A health source that reports a PostgreSQL store that is down.
struct DownStore;

impl HealthSource for DownStore {
    fn health(&self) -> Health {
        Health {
            store: StoreHealth {
                backend: "postgres".into(),
                url: "postgres://coapgate@db.example:5432/coapgate".into(),
                up: false,
                following: false,
            },
            broker: BrokerHealth {
                url: "mqtts://broker.example:8883".into(),
                connected: true,
            },
            spool: None,
        }
    }
}

#[tokio::test]
async fn healthz_names_the_store_and_the_broker_and_whether_each_answers() {
    let store = coapgate_store::open("memory://").unwrap();
    let ready = Arc::new(AtomicBool::new(true));
    let addr = serve(router(AdminState {
        store: store.clone(),
        token: Some(Token::new("t")),
        metrics: Arc::new(FixedMetrics),
        ready: ready.clone(),
        health: Some(Arc::new(DownStore)),
    }));
    let api = Api {
        store,
        addr,
        ready,
        token: None,
    };
    let parts = json!({
        "store": {
            "backend": "postgres",
            "url": "postgres://coapgate@db.example:5432/coapgate",
            "up": false,
            "following": false
        },
        "broker": {"url": "mqtts://broker.example:8883", "connected": true}
    });
    let ok = api.call(Method::GET, "/healthz").await;
    assert_eq!(ok.status, StatusCode::OK);
    let mut expected = parts.clone();
    expected["status"] = json!("ok");
    assert_eq!(ok.json(), expected);
    api.ready.store(false, Ordering::Release);
    let mut expected = parts;
    expected["error"] = json!("not ready");
    api.call(Method::GET, "/healthz")
        .await
        .refused(StatusCode::SERVICE_UNAVAILABLE, expected);
}

#[tokio::test]
async fn unknown_paths_and_methods_get_the_error_body() {
    let api = api();
    api.call(Method::GET, "/nope")
        .await
        .refused(StatusCode::NOT_FOUND, json!({"error": "no such route"}));
    let not_allowed = json!({"error": "method not allowed on this route"});
    api.call(Method::POST, "/healthz")
        .await
        .refused(StatusCode::METHOD_NOT_ALLOWED, not_allowed.clone());
    api.call(Method::DELETE, "/v1/optimize/templates/coap")
        .await
        .refused(StatusCode::METHOD_NOT_ALLOWED, not_allowed.clone());
    api.call(Method::POST, &devices_path(ICCID))
        .await
        .refused(StatusCode::METHOD_NOT_ALLOWED, not_allowed);
}

// ------------------------------------------------------------------ PSKs

fn psk_path(iccid: &str) -> String {
    format!("/v1/integrate/devices/{iccid}/psk")
}

#[tokio::test]
async fn an_operator_psk_is_set_and_described_never_shown() {
    let api = api();
    api.put_device(ICCID, "10.0.0.7");

    let described = json!({"protocol": "COAP", "format": "STRING", "origin": "OPERATOR", "lastBootstrap": null});
    let set = api
        .json(
            Method::POST,
            &psk_path(ICCID),
            json!({"secretKey": "s3cretPSK!", "format": "STRING", "protocol": "COAP"}),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    assert_eq!(set.json(), described);
    assert!(!set.text.contains("s3cretPSK!"));
    // The next handshake's key.
    assert_eq!(api.key(ICCID).as_deref(), Some(&b"s3cretPSK!"[..]));

    let read = api
        .call(Method::GET, &format!("{}/COAP", psk_path(ICCID)))
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json(), described);
    assert!(!read.text.contains("s3cretPSK!"));

    // HEX, with format and protocol defaulted… format given, protocol not.
    let hex = api
        .json(
            Method::POST,
            &psk_path(ICCID),
            json!({"secretKey": "DEADbeef00112233", "format": "HEX"}),
        )
        .await;
    assert_eq!(hex.status, StatusCode::OK, "{}", hex.text);
    assert_eq!(
        hex.json(),
        json!({"protocol": "COAP", "format": "HEX", "origin": "OPERATOR", "lastBootstrap": null})
    );
    assert_eq!(
        api.key(ICCID).as_deref(),
        Some(&[0xde, 0xad, 0xbe, 0xef, 0x00, 0x11, 0x22, 0x33][..])
    );
}

#[tokio::test]
async fn bad_psk_requests_are_refused_without_echoing_the_key() {
    let api = api();
    api.put_device(ICCID, "10.0.0.7");
    api.put_device(OTHER, "10.0.0.8");
    let ok = api
        .json(
            Method::POST,
            &psk_path(ICCID),
            json!({"secretKey": "original-key"}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);

    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"secretKey": "short", "format": "STRING"}),
            "secretKey",
            "a PSK is 8 to 256 characters, this one has 5",
        ),
        (
            json!({"secretKey": "has,comma1"}),
            "secretKey",
            "a STRING PSK holds printable ASCII without spaces or commas",
        ),
        (
            json!({"secretKey": "has space1"}),
            "secretKey",
            "a STRING PSK holds printable ASCII without spaces or commas",
        ),
        (
            json!({"secretKey": "0123456789abcdeg", "format": "HEX"}),
            "secretKey",
            "a HEX PSK is an even number of hexadecimal digits",
        ),
        (
            json!({"secretKey": "x".repeat(257)}),
            "secretKey",
            "a PSK is 8 to 256 characters, this one has 257",
        ),
        (
            json!({"secretKey": 12345678}),
            "secretKey",
            "`secretKey` must be a string",
        ),
        (
            json!({"format": "STRING"}),
            "secretKey",
            "`secretKey` is required",
        ),
        (
            json!({"secretKey": "l0ng-enough", "format": "BASE64"}),
            "format",
            "`format` is `STRING` or `HEX`",
        ),
        (
            json!({"secretKey": "l0ng-enough", "protocol": "LWM2M"}),
            "protocol",
            "`protocol` is `COAP`",
        ),
        (
            json!({"secretKey": "l0ng-enough", "secretkey": "typo-key1"}),
            "secretkey",
            "unknown field `secretkey`; expected `secretKey`, `format`, `protocol`",
        ),
    ];
    for (body, field, error) in cases {
        let reply = api.json(Method::POST, &psk_path(ICCID), body.clone()).await;
        reply.refused(
            StatusCode::BAD_REQUEST,
            json!({"error": error, "field": field}),
        );
        for secret in [
            "short",
            "has,comma1",
            "has space1",
            "0123456789abcdeg",
            "l0ng-enough",
        ] {
            assert!(!reply.text.contains(secret), "{body}: echoed the key");
        }
        assert_eq!(
            api.key(ICCID).as_deref(),
            Some(&b"original-key"[..]),
            "{body}"
        );
        assert_eq!(api.key(OTHER), None);
    }

    let unknown = "89882806660000000009";
    api.json(
        Method::POST,
        &psk_path(unknown),
        json!({"secretKey": "l0ng-enough"}),
    )
    .await
    .refused(
        StatusCode::NOT_FOUND,
        json!({"error": format!("no device {unknown}")}),
    );
    assert_eq!(api.key(unknown), None);

    api.call(Method::GET, &format!("{}/COAP", psk_path(unknown)))
        .await
        .refused(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no device {unknown}")}),
        );
    api.call(Method::GET, &format!("{}/COAP", psk_path(OTHER)))
        .await
        .refused(
            StatusCode::NOT_FOUND,
            json!({"error": format!("device {OTHER} has no PSK")}),
        );
    api.call(Method::GET, &format!("{}/LWM2M", psk_path(ICCID)))
        .await
        .refused(
            StatusCode::BAD_REQUEST,
            json!({"error": "the protocol is `COAP` (the only one with PSKs)", "field": "protocol"}),
        );
}

// ------------------------------------------------------------- templates

const TEMPLATE: &str = r#"{"sense":[{"asset":"Temperature","value":{"byte":0,"bytelength":2,"type":"int"}},{"asset":"Humidity","value":{"byte":2,"bytelength":2,"type":"int"}},{"asset":"Switch","value":{"byte":4,"type":"boolean"}}]}"#;

fn template() -> Value {
    serde_json::from_str(TEMPLATE).unwrap()
}

const TEMPLATES: &str = "/v1/optimize/templates/coap";

#[tokio::test]
async fn the_template_is_stored_read_and_switched() {
    let api = api();
    api.call(Method::GET, TEMPLATES).await.refused(
        StatusCode::NOT_FOUND,
        json!({"error": "no CoAP template is stored"}),
    );

    let stored = json!({"name": "sensor v2", "template": template(), "status": "ACTIVE"});
    let put = api
        .json(
            Method::PUT,
            TEMPLATES,
            json!({"name": "sensor v2", "template": template()}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert_eq!(put.json(), stored);
    let active = api
        .store
        .active_template()
        .expect("ACTIVE: used for the next message");
    assert_eq!(
        active.translate(&[0, 0x1a, 0, 0x37, 0]).unwrap().value,
        json!({"Temperature": 26, "Humidity": 55, "Switch": false})
    );
    let get = api.call(Method::GET, TEMPLATES).await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.json(), stored);
    // Key order of the template is kept.
    assert!(
        get.text.contains(r#""asset":"Temperature","value""#),
        "{}",
        get.text
    );

    // As 1NCE sends it: the template as a string; stored as an object.
    let put = api
        .json(
            Method::PUT,
            TEMPLATES,
            json!({"name": "off", "template": TEMPLATE, "status": "INACTIVE"}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert_eq!(
        put.json(),
        json!({"name": "off", "template": template(), "status": "INACTIVE"})
    );
    assert!(api.store.active_template().is_none());
}

#[tokio::test]
async fn bad_templates_are_refused_naming_their_path_and_change_nothing() {
    let api = api();
    let put = api
        .json(
            Method::PUT,
            TEMPLATES,
            json!({"name": "good", "template": template()}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);

    let bad_width =
        json!({"sense": [{"asset": "t", "value": {"byte": 0, "bytelength": 3, "type": "int"}}]});
    api.json(Method::PUT, TEMPLATES, json!({"name": "bad", "template": bad_width}))
        .await
        .refused(
            StatusCode::BAD_REQUEST,
            json!({
                "error": "invalid template: sense[0].value.bytelength: bytelength 3 is not valid for int (1, 2, 4 or 8)",
                "field": "template",
                "path": "sense[0].value.bytelength",
            }),
        );
    let reply = api
        .json(
            Method::PUT,
            TEMPLATES,
            json!({"name": "bad", "template": "{not json"}),
        )
        .await;
    reply.bad_field("template");
    assert_eq!(reply.json()["path"], "template");
    let reply = api
        .json(
            Method::PUT,
            TEMPLATES,
            json!({"name": "bad", "template": 42}),
        )
        .await;
    reply.bad_field("template");
    assert_eq!(reply.json()["path"], "template");

    for (body, field) in [
        (json!({"template": template()}), "name"),
        (json!({"name": "", "template": template()}), "name"),
        (json!({"name": "x"}), "template"),
        (
            json!({"name": "x", "template": template(), "status": "ON"}),
            "status",
        ),
        (
            json!({"name": "x", "template": template(), "protocol": "COAP"}),
            "protocol",
        ),
    ] {
        api.json(Method::PUT, TEMPLATES, body)
            .await
            .bad_field(field);
    }
    let record = api
        .store
        .coap_template()
        .expect("the good one is still there");
    assert_eq!(record.name, "good");
    assert_eq!(record.template, template());
    assert!(api.store.active_template().is_some());
}

#[tokio::test]
async fn the_tester_translates_without_storing_anything() {
    let api = api();
    let test = "/v1/optimize/messages/test";

    let reply = api
        .json(
            Method::POST,
            test,
            json!({"template": template(), "payload": "ABoANwA="}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json(),
        json!({"translatedPayload": {"Temperature": 26, "Humidity": 55, "Switch": false}})
    );
    assert_eq!(
        reply.text, r#"{"translatedPayload":{"Temperature":26,"Humidity":55,"Switch":false}}"#,
        "asset order kept"
    );
    // The template as a string, the payload without padding.
    let reply = api
        .json(
            Method::POST,
            test,
            json!({"template": TEMPLATE, "payload": "ABoANwA"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    // Too short: the error event's text, as 422.
    api.json(Method::POST, test, json!({"template": template(), "payload": "ABo="}))
        .await
        .refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": "Asset path:Humidity, Error: can't extract [2:4] from 2 bytes", "field": "payload"}),
        );
    api.json(
        Method::POST,
        test,
        json!({"template": template(), "payload": "not base64!"}),
    )
    .await
    .refused(
        StatusCode::BAD_REQUEST,
        json!({"error": "`payload` is not valid base64", "field": "payload"}),
    );
    api.json(Method::POST, test, json!({"template": template()}))
        .await
        .refused(
            StatusCode::BAD_REQUEST,
            json!({"error": "`payload` is required", "field": "payload"}),
        );
    api.json(Method::POST, test, json!({"payload": "AA=="}))
        .await
        .refused(
            StatusCode::BAD_REQUEST,
            json!({"error": "`template` is required", "field": "template"}),
        );
    let reply = api
        .json(
            Method::POST,
            test,
            json!({"template": {"sense": [{"asset": "a"}]}, "payload": "AA=="}),
        )
        .await;
    reply.bad_field("template");
    assert!(
        reply.json()["path"]
            .as_str()
            .unwrap()
            .starts_with("sense[0]"),
        "{}",
        reply.text
    );
    api.json(
        Method::POST,
        test,
        json!({"template": template(), "payload": "AA==", "name": "x"}),
    )
    .await
    .bad_field("name");

    assert!(
        api.store.coap_template().is_none(),
        "the tester stores nothing"
    );
}

// ------------------------------------------------------------- positions

fn position_path(iccid: &str) -> String {
    format!("/v1/locate/devices/{iccid}/position")
}

fn positions_path(iccid: &str) -> String {
    format!("/v1/locate/devices/{iccid}/positions")
}

#[tokio::test]
async fn operator_positions_are_stored_and_listed_newest_first() {
    let api = api();
    api.put_device(ICCID, "10.0.0.7");

    let empty = api.call(Method::GET, &positions_path(ICCID)).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(
        empty.json(),
        json!({"coordinates": [], "page": 1, "pageAmount": 1})
    );

    let first = json!({"coordinate": [13.404954, 52.520008], "source": "CellTower", "sampleTime": 1_700_000_000u64});
    let put = api
        .json(Method::PUT, &position_path(ICCID), first.clone())
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert_eq!(put.json(), first);

    // Source defaults to CellTower; integers are fine as coordinates.
    let second = api
        .json(
            Method::PUT,
            &position_path(ICCID),
            json!({"coordinate": [-180, 90], "sampleTime": 1_700_000_100u64, "source": null}),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    let second = json!({"coordinate": [-180.0, 90.0], "source": "CellTower", "sampleTime": 1_700_000_100u64});
    assert_eq!(
        api.store.latest(&iccid(ICCID)).unwrap().sample_time(),
        1_700_000_100
    );

    let list = api.call(Method::GET, &positions_path(ICCID)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(
        list.json(),
        json!({"coordinates": [second, first], "page": 1, "pageAmount": 1})
    );
}

#[tokio::test]
async fn bad_positions_are_refused_and_change_nothing() {
    let api = api();
    api.put_device(ICCID, "10.0.0.7");
    let path = position_path(ICCID);
    let coordinate_shape = "`coordinate` is [longitude, latitude], two numbers";
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"coordinate": [180.5, 0], "sampleTime": 1}),
            "coordinate",
            "longitude 180.5 is not within -180..=180",
        ),
        (
            json!({"coordinate": [0, -91], "sampleTime": 1}),
            "coordinate",
            "latitude -91 is not within -90..=90",
        ),
        (
            json!({"coordinate": [1], "sampleTime": 1}),
            "coordinate",
            coordinate_shape,
        ),
        (
            json!({"coordinate": [1, 2, 3], "sampleTime": 1}),
            "coordinate",
            coordinate_shape,
        ),
        (
            json!({"coordinate": ["1", "2"], "sampleTime": 1}),
            "coordinate",
            coordinate_shape,
        ),
        (
            json!({"coordinate": {"lon": 1, "lat": 2}, "sampleTime": 1}),
            "coordinate",
            coordinate_shape,
        ),
        (
            json!({"sampleTime": 1}),
            "coordinate",
            "`coordinate` is required",
        ),
        (
            json!({"coordinate": [1, 2], "source": "Cell Tower", "sampleTime": 1}),
            "source",
            "a position source is 1 to 64 characters of A-Z a-z 0-9 _ -",
        ),
        (
            json!({"coordinate": [1, 2], "source": "", "sampleTime": 1}),
            "source",
            "a position source is 1 to 64 characters of A-Z a-z 0-9 _ -",
        ),
        (
            json!({"coordinate": [1, 2], "source": 5, "sampleTime": 1}),
            "source",
            "`source` must be a string",
        ),
        (
            json!({"coordinate": [1, 2]}),
            "sampleTime",
            "`sampleTime` is required",
        ),
        (
            json!({"coordinate": [1, 2], "sampleTime": -1}),
            "sampleTime",
            "`sampleTime` must be a non-negative integer",
        ),
        (
            json!({"coordinate": [1, 2], "sampleTime": 1.5}),
            "sampleTime",
            "`sampleTime` must be a non-negative integer",
        ),
        (
            json!({"coordinate": [1, 2], "sampleTime": "2024-05-03T11:00:24Z"}),
            "sampleTime",
            "`sampleTime` must be a non-negative integer",
        ),
        (
            json!({"coordinate": [1, 2], "sampleTime": 1, "metadata": {}}),
            "metadata",
            "unknown field `metadata`; expected `coordinate`, `source`, `sampleTime`",
        ),
    ];
    for (body, field, error) in cases {
        api.json(Method::PUT, &path, body.clone()).await.refused(
            StatusCode::BAD_REQUEST,
            json!({"error": error, "field": field}),
        );
        assert!(
            api.store.positions(&iccid(ICCID)).unwrap().is_empty(),
            "{body}"
        );
        assert!(api.store.latest(&iccid(ICCID)).is_none(), "{body}");
    }

    let unknown = "89882806660000000009";
    api.json(
        Method::PUT,
        &position_path(unknown),
        json!({"coordinate": [1, 2], "sampleTime": 1}),
    )
    .await
    .refused(
        StatusCode::NOT_FOUND,
        json!({"error": format!("no device {unknown}")}),
    );
    api.call(Method::GET, &positions_path(unknown))
        .await
        .refused(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no device {unknown}")}),
        );
}

// ------------------------------------------- bad input on the wire (issue 12)

/// Writes `head` and then `body` by hand on a fresh connection (the body
/// from a task of its own, so a server that answers before reading all of
/// it, or never reads it, is fine) and reads one response. Bounded: 10 s.
async fn wire(addr: std::net::SocketAddr, head: String, body: Vec<u8>) -> Reply {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        // Errors are expected: the server may close once it has answered.
        if write.write_all(head.as_bytes()).await.is_ok() {
            let _ = write.write_all(&body).await;
        }
        // Keep the write half open until the test is done with the answer.
        std::future::pending::<()>().await;
    });
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(buf[..end].to_vec()).unwrap();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    return (head, buf[end + 4..end + 4 + length].to_vec());
                }
            }
            let n = read.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before a full answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("an answer within 10 s");
    writer.abort();
    let (head, body) = answer;
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.trim().parse().unwrap(),
        );
    }
    Reply {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        text: String::from_utf8(body).unwrap(),
    }
}

/// `PUT /v1/devices/ICCID` with the token, JSON, and these extra header lines.
fn put_head(extra: &str) -> String {
    format!(
        "PUT /v1/devices/{ICCID} HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n{extra}\r\n"
    )
}

/// `body` as HTTP/1.1 chunks of `size` bytes, and the last chunk.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / size * 8 + 8);
    for chunk in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A device body of exactly `len` bytes (the name fills it up).
fn device_body_of(len: usize) -> Vec<u8> {
    let shell = json!({"ip": "10.0.0.7", "name": ""}).to_string();
    let name = "n".repeat(len - shell.len());
    let body = json!({"ip": "10.0.0.7", "name": name}).to_string();
    assert_eq!(body.len(), len);
    body.into_bytes()
}

#[tokio::test]
async fn oversized_bodies_are_413_with_or_without_content_length() {
    let api = api();
    let limit = coapgate_admin::MAX_BODY_BYTES;
    let too_large = json!({"error": format!("the request body is larger than {limit} bytes")});
    let ten_mb = device_body_of(10 << 20);
    let just_over = device_body_of(limit + 1);

    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "10 MB with Content-Length",
            put_head(&format!("Content-Length: {}\r\n", ten_mb.len())),
            ten_mb.clone(),
        ),
        (
            "10 MB chunked, no Content-Length",
            put_head("Transfer-Encoding: chunked\r\n"),
            chunked(&ten_mb, 64 << 10),
        ),
        (
            "one byte over, chunked",
            put_head("Transfer-Encoding: chunked\r\n"),
            chunked(&just_over, 1000),
        ),
        (
            "one byte over, with Content-Length",
            put_head(&format!("Content-Length: {}\r\n", just_over.len())),
            just_over,
        ),
        (
            // Refused on the announcement, without waiting for the body.
            "10 MB announced, 10 bytes sent",
            put_head(&format!("Content-Length: {}\r\n", 10 << 20)),
            b"{\"ip\": \"1".to_vec(),
        ),
    ];
    for (what, head, body) in cases {
        let reply = wire(api.addr, head, body).await;
        assert_eq!(
            reply.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{what}: {}",
            reply.text
        );
        assert_eq!(reply.json(), too_large, "{what}");
        assert_eq!(
            reply.headers.get(header::CONTENT_TYPE).unwrap(),
            "application/json",
            "{what}"
        );
        assert!(api.all_devices().is_empty(), "{what} stored something");
    }

    // Exactly at the limit, chunked: read and judged (the name is too long),
    // so the limit is the documented one and not lower.
    let at_limit = device_body_of(limit);
    let reply = wire(
        api.addr,
        put_head("Transfer-Encoding: chunked\r\n"),
        chunked(&at_limit, 4096),
    )
    .await;
    reply.bad_field("name");
    assert!(api.all_devices().is_empty());
    // A body that fits, chunked: stored.
    let reply = wire(
        api.addr,
        put_head("Transfer-Encoding: chunked\r\n"),
        chunked(br#"{"ip": "10.0.0.7"}"#, 3),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(api.all_devices().len(), 1);
}

#[tokio::test]
async fn bad_paths_queries_and_bodies_are_4xx_with_the_error_body_and_change_nothing() {
    let api = api();
    api.put_device(ICCID, "10.0.0.7");
    let before = api.all_devices();
    let device = json!({"ip": "10.0.0.9"});
    // (method, path, body, status, field)
    let cases: Vec<(Method, String, Value, StatusCode, Option<&str>)> = vec![
        // ICCIDs that are not ICCIDs, on each route that takes one.
        (
            Method::PUT,
            "/v1/devices/%2E%2E%2Fx".into(),
            device.clone(),
            StatusCode::BAD_REQUEST,
            Some("iccid"),
        ),
        (
            Method::PUT,
            "/v1/devices/..%2Fx".into(),
            device.clone(),
            StatusCode::BAD_REQUEST,
            Some("iccid"),
        ),
        (
            Method::PUT,
            "/v1/devices/..".into(),
            device.clone(),
            StatusCode::BAD_REQUEST,
            Some("iccid"),
        ),
        (
            Method::PUT,
            "/v1/devices/../x".into(),
            device.clone(),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            Method::PUT,
            format!("/v1/devices/{}", "9".repeat(30)),
            device.clone(),
            StatusCode::BAD_REQUEST,
            Some("iccid"),
        ),
        (
            Method::PUT,
            format!("/v1/devices/{}", "9".repeat(10_000)),
            device.clone(),
            StatusCode::BAD_REQUEST,
            Some("iccid"),
        ),
        (
            Method::PUT,
            format!("/v1/devices/%20{ICCID}"),
            device.clone(),
            StatusCode::BAD_REQUEST,
            Some("iccid"),
        ),
        (
            Method::PUT,
            format!("/v1/devices/{ICCID}%00"),
            device.clone(),
            StatusCode::BAD_REQUEST,
            Some("iccid"),
        ),
        (
            Method::PUT,
            "/v1/devices/-898828066600000000".into(),
            device.clone(),
            StatusCode::BAD_REQUEST,
            Some("iccid"),
        ),
        (
            Method::PUT,
            "/v1/devices/%EF%BC%98988280666000000000".into(),
            device.clone(),
            StatusCode::BAD_REQUEST,
            Some("iccid"),
        ),
        (
            Method::DELETE,
            "/v1/devices/%2E%2E".into(),
            Value::Null,
            StatusCode::BAD_REQUEST,
            Some("iccid"),
        ),
        (
            Method::DELETE,
            "/v1/devices/".into(),
            Value::Null,
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            Method::POST,
            format!("/v1/integrate/devices/{}/psk", "1".repeat(30)),
            json!({"secretKey": "l0ng-enough"}),
            StatusCode::BAD_REQUEST,
            Some("iccid"),
        ),
        (
            Method::PUT,
            "/v1/locate/devices/%2E%2E%2Fx/position".into(),
            json!({"coordinate": [1, 2], "sampleTime": 1}),
            StatusCode::BAD_REQUEST,
            Some("iccid"),
        ),
        // A body ICCID that is not the path's.
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "10.0.0.9", "iccid": "../x"}),
            StatusCode::BAD_REQUEST,
            Some("iccid"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "10.0.0.9", "iccid": "9".repeat(30)}),
            StatusCode::BAD_REQUEST,
            Some("iccid"),
        ),
        // Page queries.
        (
            Method::GET,
            "/v1/devices?pageSize=1000000".into(),
            Value::Null,
            StatusCode::BAD_REQUEST,
            Some("pageSize"),
        ),
        (
            Method::GET,
            "/v1/devices?pageSize=99999999999999999999999".into(),
            Value::Null,
            StatusCode::BAD_REQUEST,
            Some("pageSize"),
        ),
        (
            Method::GET,
            "/v1/devices?page=4294967296".into(),
            Value::Null,
            StatusCode::BAD_REQUEST,
            Some("page"),
        ),
        (
            Method::GET,
            "/v1/devices?page=-1".into(),
            Value::Null,
            StatusCode::BAD_REQUEST,
            Some("page"),
        ),
        (
            Method::GET,
            "/v1/devices?page=1.5".into(),
            Value::Null,
            StatusCode::BAD_REQUEST,
            Some("page"),
        ),
        (
            Method::GET,
            "/v1/devices?page=0x10".into(),
            Value::Null,
            StatusCode::BAD_REQUEST,
            Some("page"),
        ),
        (
            Method::GET,
            "/v1/devices?page=%20".into(),
            Value::Null,
            StatusCode::BAD_REQUEST,
            Some("page"),
        ),
        (
            Method::GET,
            "/v1/devices?pageSize=".into(),
            Value::Null,
            StatusCode::BAD_REQUEST,
            Some("pageSize"),
        ),
        // IPs that are not IPs.
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": ""}),
            StatusCode::BAD_REQUEST,
            Some("ip"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "localhost"}),
            StatusCode::BAD_REQUEST,
            Some("ip"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "10.0.0.9:5683"}),
            StatusCode::BAD_REQUEST,
            Some("ip"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "[::1]"}),
            StatusCode::BAD_REQUEST,
            Some("ip"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": " 10.0.0.9"}),
            StatusCode::BAD_REQUEST,
            Some("ip"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "10.0.0.9/24"}),
            StatusCode::BAD_REQUEST,
            Some("ip"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "010.000.000.009"}),
            StatusCode::BAD_REQUEST,
            Some("ip"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "fe80::1%eth0"}),
            StatusCode::BAD_REQUEST,
            Some("ip"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": 167772169}),
            StatusCode::BAD_REQUEST,
            Some("ip"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": ["10.0.0.9"]}),
            StatusCode::BAD_REQUEST,
            Some("ip"),
        ),
        // Statuses outside the enumeration, and wrong types.
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "10.0.0.9", "status": "DELETED"}),
            StatusCode::BAD_REQUEST,
            Some("status"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "10.0.0.9", "status": "ACTIVE "}),
            StatusCode::BAD_REQUEST,
            Some("status"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "10.0.0.9", "status": 1}),
            StatusCode::BAD_REQUEST,
            Some("status"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "10.0.0.9", "status": ["ACTIVE"]}),
            StatusCode::BAD_REQUEST,
            Some("status"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "10.0.0.9", "imsi": "9".repeat(30)}),
            StatusCode::BAD_REQUEST,
            Some("imsi"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "10.0.0.9", "name": {"first": "a"}}),
            StatusCode::BAD_REQUEST,
            Some("name"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "10.0.0.9", "IP": "10.0.0.9"}),
            StatusCode::BAD_REQUEST,
            Some("IP"),
        ),
        (
            Method::PUT,
            devices_path(ICCID),
            json!({"ip": "10.0.0.9", "": 1}),
            StatusCode::BAD_REQUEST,
            Some(""),
        ),
        // Templates that are not valid.
        (
            Method::PUT,
            TEMPLATES.into(),
            json!({"name": "t", "template": {}}),
            StatusCode::BAD_REQUEST,
            Some("template"),
        ),
        (
            Method::PUT,
            TEMPLATES.into(),
            json!({"name": "t", "template": []}),
            StatusCode::BAD_REQUEST,
            Some("template"),
        ),
        (
            Method::PUT,
            TEMPLATES.into(),
            json!({"name": "t", "template": {"sense": [{"asset": "x"}]}}),
            StatusCode::BAD_REQUEST,
            Some("template"),
        ),
        (
            Method::PUT,
            TEMPLATES.into(),
            json!({"name": "t", "template": {"sense": [{"asset": "x", "value": {"byte": -1, "type": "int"}}]}}),
            StatusCode::BAD_REQUEST,
            Some("template"),
        ),
        (
            Method::PUT,
            TEMPLATES.into(),
            json!({"name": "t", "template": {"sense": [{"asset": "x", "value": {"byte": 0, "type": "complex"}}]}}),
            StatusCode::BAD_REQUEST,
            Some("template"),
        ),
        (
            Method::PUT,
            TEMPLATES.into(),
            json!({"name": 5, "template": template()}),
            StatusCode::BAD_REQUEST,
            Some("name"),
        ),
        (
            Method::PUT,
            TEMPLATES.into(),
            json!({"name": "n".repeat(257), "template": template()}),
            StatusCode::BAD_REQUEST,
            Some("name"),
        ),
        // Positions out of range, or numbers that are not numbers.
        (
            Method::PUT,
            position_path(ICCID),
            json!({"coordinate": [1e308, 0], "sampleTime": 1}),
            StatusCode::BAD_REQUEST,
            Some("coordinate"),
        ),
        (
            Method::PUT,
            position_path(ICCID),
            json!({"coordinate": [-180.0001, 0], "sampleTime": 1}),
            StatusCode::BAD_REQUEST,
            Some("coordinate"),
        ),
        (
            Method::PUT,
            position_path(ICCID),
            json!({"coordinate": [0, 90.0001], "sampleTime": 1}),
            StatusCode::BAD_REQUEST,
            Some("coordinate"),
        ),
        (
            Method::PUT,
            position_path(ICCID),
            json!({"coordinate": ["NaN", "NaN"], "sampleTime": 1}),
            StatusCode::BAD_REQUEST,
            Some("coordinate"),
        ),
        (
            Method::PUT,
            position_path(ICCID),
            json!({"coordinate": [null, null], "sampleTime": 1}),
            StatusCode::BAD_REQUEST,
            Some("coordinate"),
        ),
        (
            Method::PUT,
            position_path(ICCID),
            json!({"coordinate": [1, 2], "sampleTime": 18446744073709551616.0}),
            StatusCode::BAD_REQUEST,
            Some("sampleTime"),
        ),
        (
            Method::PUT,
            position_path(ICCID),
            json!({"coordinate": [1, 2], "sampleTime": 1, "source": "s".repeat(65)}),
            StatusCode::BAD_REQUEST,
            Some("source"),
        ),
        // The tester.
        (
            Method::POST,
            "/v1/optimize/messages/test".into(),
            json!({"template": template(), "payload": "not base64!"}),
            StatusCode::BAD_REQUEST,
            Some("payload"),
        ),
        (
            Method::POST,
            "/v1/optimize/messages/test".into(),
            json!({"template": template(), "payload": 5}),
            StatusCode::BAD_REQUEST,
            Some("payload"),
        ),
        (
            Method::POST,
            "/v1/optimize/messages/test".into(),
            json!({"template": template()}),
            StatusCode::BAD_REQUEST,
            Some("payload"),
        ),
        // Methods a route does not have.
        (
            Method::PATCH,
            devices_path(ICCID),
            device.clone(),
            StatusCode::METHOD_NOT_ALLOWED,
            None,
        ),
        (
            Method::POST,
            "/v1/devices".into(),
            device.clone(),
            StatusCode::METHOD_NOT_ALLOWED,
            None,
        ),
        (
            Method::DELETE,
            "/v1/devices".into(),
            Value::Null,
            StatusCode::METHOD_NOT_ALLOWED,
            None,
        ),
        (
            Method::PUT,
            psk_path(ICCID),
            json!({"secretKey": "l0ng-enough"}),
            StatusCode::METHOD_NOT_ALLOWED,
            None,
        ),
        (
            Method::DELETE,
            format!("{}/COAP", psk_path(ICCID)),
            Value::Null,
            StatusCode::METHOD_NOT_ALLOWED,
            None,
        ),
        (
            Method::GET,
            "/v1/optimize/messages/test".into(),
            Value::Null,
            StatusCode::METHOD_NOT_ALLOWED,
            None,
        ),
        (
            Method::DELETE,
            position_path(ICCID),
            Value::Null,
            StatusCode::METHOD_NOT_ALLOWED,
            None,
        ),
        (
            Method::PUT,
            "/metrics".into(),
            Value::Null,
            StatusCode::METHOD_NOT_ALLOWED,
            None,
        ),
    ];
    let count = cases.len();
    for (method, path, body, status, field) in cases {
        let reply = if body.is_null() {
            api.call(method.clone(), &path).await
        } else {
            api.json(method.clone(), &path, body.clone()).await
        };
        let what = format!("{method} {:.80} {:.80}", path, body.to_string());
        assert_eq!(reply.status, status, "{what}: {}", reply.text);
        let json = reply.json();
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {json}"
        );
        assert_eq!(json["field"].as_str(), field, "{what}: {json}");
        assert_eq!(
            reply.headers.get(header::CONTENT_TYPE).unwrap(),
            "application/json",
            "{what}"
        );
        assert_eq!(api.all_devices(), before, "{what} changed the devices");
        assert_eq!(api.key(ICCID), None, "{what} set a PSK");
        assert!(
            api.store.coap_template().is_none(),
            "{what} stored a template"
        );
        assert!(
            api.store.positions(&iccid(ICCID)).unwrap().is_empty(),
            "{what} stored a position"
        );
    }
    assert_eq!(count, 67);
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_400_and_change_nothing() {
    let api = api();
    api.put_device(ICCID, "10.0.0.7");
    let before = api.all_devices();
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}1{}", r#"{"ip":"#.repeat(10_000), "}".repeat(10_000));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", br#"{"ip": "10.0.0.9""#.to_vec()),
        ("trailing garbage", br#"{"ip": "10.0.0.9"} x"#.to_vec()),
        (
            "two objects",
            br#"{"ip": "10.0.0.9"}{"ip": "10.0.0.9"}"#.to_vec(),
        ),
        ("single quotes", b"{'ip': '10.0.0.9'}".to_vec()),
        ("a comment", b"{\"ip\": \"10.0.0.9\" /* c */}".to_vec()),
        ("NaN", br#"{"ip": "10.0.0.9", "name": NaN}"#.to_vec()),
        (
            "a number beyond f64",
            br#"{"ip": "10.0.0.9", "name": 1e400}"#.to_vec(),
        ),
        (
            "invalid UTF-8",
            b"{\"ip\": \"10.0.0.9\", \"name\": \"\xff\xfe\"}".to_vec(),
        ),
        (
            "a lone surrogate",
            br#"{"ip": "10.0.0.9", "name": "\ud800"}"#.to_vec(),
        ),
        (
            "a UTF-16 body",
            "{\"ip\": \"10.0.0.9\"}"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect(),
        ),
        ("a BOM", b"\xef\xbb\xbf{\"ip\": \"10.0.0.9\"}".to_vec()),
        ("nested 100000 deep", deep_array.into_bytes()),
        ("objects nested 10000 deep", deep_object.into_bytes()),
        ("a string", br#""10.0.0.9""#.to_vec()),
        ("null", b"null".to_vec()),
        ("a number", b"42".to_vec()),
        ("an array", br#"[{"ip": "10.0.0.9"}]"#.to_vec()),
        ("whitespace", b"   \r\n ".to_vec()),
    ];
    for (what, body) in bodies {
        for (method, path) in [
            (Method::PUT, devices_path(ICCID)),
            (Method::POST, psk_path(ICCID)),
            (Method::PUT, TEMPLATES.to_owned()),
            (Method::POST, "/v1/optimize/messages/test".to_owned()),
            (Method::PUT, position_path(ICCID)),
        ] {
            let reply = api
                .raw(method.clone(), &path, "application/json", body.clone())
                .await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{what} {method} {path}: {}",
                reply.text
            );
            let json = reply.json();
            assert!(json["error"].is_string(), "{what}: {json}");
            assert!(json.get("field").is_none(), "{what}: {json}");
            assert!(
                reply.text.len() < 200,
                "{what}: the error echoes the input: {json}"
            );
        }
        assert_eq!(api.all_devices(), before, "{what}");
        assert_eq!(api.key(ICCID), None, "{what}");
        assert!(api.store.coap_template().is_none(), "{what}");
        assert!(
            api.store.positions(&iccid(ICCID)).unwrap().is_empty(),
            "{what}"
        );
    }
}

#[tokio::test]
async fn unsupported_content_types_are_415_and_change_nothing() {
    let api = api();
    let body = br#"{"ip": "10.0.0.9"}"#.to_vec();
    let unsupported =
        json!({"error": "the request body must be JSON (Content-Type: application/json)"});
    for content_type in [
        &b"text/plain"[..],
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=x",
        b"application/jsonx",
        b"application/json-patch+json",
        b"application/xml",
        b"json",
        b"",
        b"application/\xffjson",
        b";application/json",
    ] {
        let mut head = format!(
            "PUT /v1/devices/{ICCID} HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nContent-Type: ",
            body.len()
        )
        .into_bytes();
        head.extend_from_slice(content_type);
        head.extend_from_slice(b"\r\n\r\n");
        head.extend_from_slice(&body);
        // `wire` takes the head as text; send it all as the "body".
        let reply = wire(api.addr, String::new(), head).await;
        let shown = String::from_utf8_lossy(content_type);
        reply.refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, unsupported.clone());
        assert!(api.all_devices().is_empty(), "{shown}");
    }
}

#[tokio::test]
async fn every_bad_authorization_is_401_with_the_error_body_and_changes_nothing() {
    let api = api();
    let prefix = &TOKEN[..5];
    let cases: Vec<(Option<Vec<u8>>, &str)> = vec![
        (None, "missing bearer token"),
        (
            Some(b"".to_vec()),
            "the Authorization header must be `Bearer TOKEN`",
        ),
        (
            Some(b"Bearer".to_vec()),
            "the Authorization header must be `Bearer TOKEN`",
        ),
        (
            Some(b"Bearer    ".to_vec()),
            "the Authorization header must be `Bearer TOKEN`",
        ),
        (
            Some(format!("Basic {TOKEN}").into_bytes()),
            "the Authorization header must be `Bearer TOKEN`",
        ),
        (
            Some(format!("Token {TOKEN}").into_bytes()),
            "the Authorization header must be `Bearer TOKEN`",
        ),
        (
            Some(format!("Bearer:{TOKEN}").into_bytes()),
            "the Authorization header must be `Bearer TOKEN`",
        ),
        (
            Some(format!("Bearer\t{TOKEN}").into_bytes()),
            "the Authorization header must be `Bearer TOKEN`",
        ),
        (
            Some(TOKEN.as_bytes().to_vec()),
            "the Authorization header must be `Bearer TOKEN`",
        ),
        (
            Some(format!("Bearer {prefix}").into_bytes()),
            "invalid bearer token",
        ),
        (
            Some(format!("Bearer {TOKEN}{TOKEN}").into_bytes()),
            "invalid bearer token",
        ),
        (
            Some(format!("Bearer {}", TOKEN.to_uppercase()).into_bytes()),
            "invalid bearer token",
        ),
        (
            Some(format!("Bearer \"{TOKEN}\"").into_bytes()),
            "invalid bearer token",
        ),
        (
            Some(format!("Bearer {TOKEN}, Bearer {TOKEN}").into_bytes()),
            "invalid bearer token",
        ),
        (Some(b"Bearer t\xf6ken".to_vec()), "invalid bearer token"),
        (
            Some(format!("Bearer {}", "x".repeat(8000)).into_bytes()),
            "invalid bearer token",
        ),
    ];
    let body = br#"{"ip": "10.0.0.9"}"#;
    for (authorization, error) in cases {
        let mut request = format!(
            "PUT /v1/devices/{ICCID} HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
        .into_bytes();
        if let Some(value) = &authorization {
            request.extend_from_slice(b"Authorization: ");
            request.extend_from_slice(value);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        let reply = wire(api.addr, String::new(), request).await;
        let shown = authorization.as_deref().map(String::from_utf8_lossy);
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{shown:?}: {}",
            reply.text
        );
        assert_eq!(reply.json(), json!({"error": error}), "{shown:?}");
        assert_eq!(
            reply.headers.get(header::WWW_AUTHENTICATE).unwrap(),
            "Bearer realm=\"coapgate\"",
        );
        assert!(!reply.text.contains(prefix), "{shown:?}: echoed the token");
        assert!(api.all_devices().is_empty(), "{shown:?}");
    }
    // A wrong token first and the right one second: the first counts.
    let request = format!(
        "GET /v1/devices HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer wrong\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    let reply = wire(api.addr, request, Vec::new()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    // And the right one alone, written by hand the same way, is let in.
    let request = format!(
        "GET /v1/devices HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    let reply = wire(api.addr, request, Vec::new()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}
