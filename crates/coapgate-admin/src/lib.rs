//! The coapgate admin HTTP API (spec.md §6): devices, PSKs, the Energy
//! Saver template and its tester, operator positions, `/metrics` and
//! `/healthz`, as one [`axum::Router`] over the [`coapgate_store::Store`].
//!
//! The server binds it (default `127.0.0.1:8080`); this crate only builds
//! the router: [`router`] takes an [`AdminState`]. Routes, bodies and field
//! names follow the 1NCE OS management API where it has an equivalent, so
//! existing tooling maps over.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::sync::atomic::AtomicBool;
//! use coapgate_admin::{AdminState, MetricsSource, Token, router};
//!
//! struct NoMetrics;
//! impl MetricsSource for NoMetrics {
//!     fn render(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> {
//!         Box::pin(async { String::new() })
//!     }
//! }
//!
//! let state = AdminState {
//!     store: coapgate_store::open("memory://")?,
//!     token: Some(Token::new("change-me")),
//!     metrics: Arc::new(NoMetrics),
//!     ready: Arc::new(AtomicBool::new(true)),
//!     health: None,
//! };
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, router(state)).await?;
//! # Ok(()) }
//! ```
//!
//! # Authentication
//!
//! With a token configured ([`AdminState::token`]), every `/v1` request
//! needs `Authorization: Bearer TOKEN` (scheme case-insensitive). A missing,
//! malformed or wrong token gets **401** with `WWW-Authenticate: Bearer
//! realm="coapgate"` and the usual error body; authentication is checked
//! before anything else, so an unauthenticated request learns nothing about
//! routes, devices or bodies (an unknown `/v1/...` path is 401 too, not 404).
//! The token is compared in constant time (the work depends only on the
//! length of what was presented, not on the token's content or length) and never
//! appears in a response, an error or a log line. An empty token matches
//! no request. Without a token the `/v1` routes are open: the server
//! refuses to bind a non-loopback address without one (that check is the
//! server's). `/metrics` and `/healthz` never need the token.
//!
//! # Routes
//!
//! | method and path | body | success | refusals |
//! |---|---|---|---|
//! | `GET /v1/devices?page=1&pageSize=50` | — | 200, JSON array of devices ordered by ICCID; a page past the end is `[]` | 400 `page` (not an integer ≥ 1), `pageSize` (not 1–1000), an unknown query parameter (named) |
//! | `GET /v1/devices/{iccid}` | — | 200, the device | 400 `iccid`; 404 |
//! | `PUT /v1/devices/{iccid}` | device | 201 created / 200 replaced, the stored device | 400 `iccid` (path, or a body `iccid` that differs), `imsi`, `ip`, `status`, `name`; 409 `ip` (another device has it) |
//! | `DELETE /v1/devices/{iccid}` | — | 204, empty | 400 `iccid`; 404 |
//! | `POST /v1/integrate/devices/{iccid}/psk` | PSK | 200, the PSK's description | 400 `iccid`, `secretKey`, `format`, `protocol`; 404 unknown device |
//! | `GET /v1/integrate/devices/{iccid}/psk/COAP` | — | 200, the PSK's description | 400 `iccid`, `protocol` (not `COAP`); 404 unknown device, or no PSK |
//! | `GET /v1/optimize/templates/coap` | — | 200, the template record | 404 none stored |
//! | `PUT /v1/optimize/templates/coap` | template record | 200, the stored record | 400 `name`, `status`, `template` (with `path`) |
//! | `POST /v1/optimize/messages/test` | tester | 200 `{"translatedPayload": {…}}` | 400 `template` (with `path`), `payload` (not base64); 422 `payload` (does not fit the template) |
//! | `PUT /v1/locate/devices/{iccid}/position` | position | 200, the stored position | 400 `iccid`, `coordinate`, `source`, `sampleTime`; 404 unknown device |
//! | `GET /v1/locate/devices/{iccid}/positions` | — | 200 `{"coordinates": [position, …], "page": 1, "pageAmount": 1}`, newest first (at most [`coapgate_store::POSITIONS_KEPT`]) | 400 `iccid`; 404 unknown device |
//! | `GET /metrics` | — | 200, the [`MetricsSource`]'s text with its content type (coapgate's server: OpenMetrics 1.0.0) | — |
//! | `GET /healthz` | — | 200 `{"status": "ok", "store": {…}, "broker": {…}}` once [`AdminState::ready`] is true ([`Health`]: which store and broker are in use and whether each answers, when a [`HealthSource`] is given) | 503 `{"error": "not ready", "store": {…}, "broker": {…}}` before |
//!
//! Any other path is 404; a method a path does not support is 405; both
//! with the error body. On every `/v1` route, 401 comes first (see above).
//!
//! ## Bodies
//!
//! Every body is one JSON object sent with `Content-Type: application/json`.
//! An unknown key is refused (400, `field` names it): a typo such as
//! `secretkey` is an error, never silently ignored. A key given as `null`
//! counts as absent.
//!
//! - **device**: `{"iccid": "8988280666000000000", "imsi": "901405100000000",
//!   "ip": "10.0.0.7", "status": "ACTIVE", "name": "pump 7"}`. `ip` is
//!   required (IPv4 or IPv6; an IPv4-mapped IPv6 address is stored and
//!   returned as IPv4). `iccid` is optional and must equal the path's.
//!   `imsi` (6–15 digits) and `name` (at most 256 characters, no control
//!   characters) are optional and left out of responses when absent.
//!   `status` is `ACTIVE` (the default) or `INACTIVE`. PUT replaces the whole
//!   device: an absent `imsi` or `name` removes it.
//! - **PSK** (request): `{"secretKey": "…", "format": "STRING", "protocol":
//!   "COAP"}`. `secretKey` is required: 8–256 characters; STRING: printable
//!   ASCII without space or comma; HEX: an even number of hex digits (the
//!   DTLS key is the decoded bytes). `format` defaults to `STRING`,
//!   `protocol` to `COAP` (the only one). The PSK replaces the device's
//!   current one, is never regenerated by `/bootstrap`, and the next DTLS
//!   handshake uses it.
//! - **PSK description** (response): `{"protocol": "COAP", "format":
//!   "STRING"|"HEX", "origin": "OPERATOR"|"GENERATED", "lastBootstrap":
//!   1700000000|null}` (`lastBootstrap`: epoch seconds of the device's last
//!   `/bootstrap` call). **The PSK itself is never returned**, by the POST
//!   or the GET: 1NCE's public API documentation shows no PSK read-back, an
//!   operator who set a key already has it, and a generated key reaches its
//!   device only through `/bootstrap`. An error about a key names the rule
//!   it broke (`a PSK is 8 to 256 characters, this one has 5`), never the key.
//! - **template record**: `{"name": "sensor v2", "template": {"sense": […]},
//!   "status": "ACTIVE"}`. `name` is required (1–256 characters), `template`
//!   is the template as a JSON object or, as 1NCE sends it, a string holding
//!   that JSON; it is always returned as an object. `status` defaults to
//!   `ACTIVE` (every CoAP message is translated from the next one on);
//!   `INACTIVE` stores it unused. An invalid template is 400 with `"field":
//!   "template"` and `"path"`, its place in the template, e.g.
//!   `{"error": "invalid template: sense[0].value.bytelength: bytelength 3 is
//!   not valid for int (1, 2, 4 or 8)", "field": "template", "path":
//!   "sense[0].value.bytelength"}`.
//! - **tester**: `{"template": {…} or "…", "payload": "ABoANwA="}` — the
//!   payload in standard base64 (padding optional). Nothing is stored. A
//!   payload the template cannot translate is **422** with `"field":
//!   "payload"` and, as `error`, exactly the text the device's error event
//!   would carry: `Asset path:Humidity, Error: can't extract [2:4] from 2
//!   bytes`. (A 4xx, not a 200 with an error inside, so that scripts and
//!   the CLI see the failure in the status.)
//! - **position**: `{"coordinate": [13.404954, 52.520008], "source":
//!   "CellTower", "sampleTime": 1700000000}`. `coordinate` is `[longitude,
//!   latitude]` (−180…180, −90…90), `source` 1–64 characters of `A-Z a-z 0-9
//!   _ -` (default `CellTower`), `sampleTime` epoch seconds (required; 1NCE
//!   uses ISO 8601 text here, coapgate epoch seconds, as in `[[device]]
//!   position`). The position is written at once and is the device's
//!   `/location` answer unless a newer sample time exists.
//!
//! # Errors
//!
//! Every refusal is a 4xx (or 5xx) with the body `{"error": "<what is
//! wrong>", "field": "<name>"}`, `field` left out when no field is to blame
//! (404, 405, 413, 415, 401, malformed JSON). See [`AdminError`] for every
//! status. A refused request changes nothing stored. Specifically:
//!
//! - no or wrong `Content-Type` on a route with a body: 415;
//! - a body over [`MAX_BODY_BYTES`] (256 KiB): 413;
//! - malformed JSON, or JSON that is not an object: 400;
//! - a bad ICCID in the path (not 19–20 digits): 400, `field` `iccid`;
//! - a store failure: 500 `{"error": "internal error; see the server log"}`,
//!   the cause logged at error level.
//!
//! # Behaviour
//!
//! Store calls block (SQLite) and run on `tokio::task::spawn_blocking`.
//! Every write reaches the hot path before the response: a device PUT
//! resolves by IP at once ([`coapgate_store::Store::directory`]), a removed
//! device stops resolving, a PSK POST is the key of the next handshake
//! ([`coapgate_store::Store::psk_keys`]), an ACTIVE template translates the
//! next message. Each request is logged as one `tracing` debug line
//! (`method`, `path`, `status`), never with a body, a header or the query.

#![forbid(unsafe_code)]

mod body;
mod devices;
mod error;
mod positions;
mod psk;
mod templates;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use coapgate_store::{Store, StoreError};
use subtle::{Choice, ConstantTimeEq as _};
use zeroize::Zeroizing;

pub use error::AdminError;

/// The largest request body accepted (413 beyond it).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The largest `pageSize` of `GET /v1/devices` (400 beyond it).
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The `pageSize` of `GET /v1/devices` when none is given.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The longest device or template `name`, in characters.
pub const MAX_NAME_CHARS: usize = 256;

/// Where `/metrics` gets its text.
pub trait MetricsSource: Send + Sync {
    /// The exposition of the current metrics.
    fn render(&self) -> Pin<Box<dyn Future<Output = String> + Send>>;

    /// The exposition format's content type: Prometheus text 0.0.4 unless
    /// the source renders OpenMetrics (coapgate's server does).
    fn content_type(&self) -> &'static str {
        "text/plain; version=0.0.4; charset=utf-8"
    }
}

/// What `/healthz` says about the store and the broker besides readiness.
pub trait HealthSource: Send + Sync {
    /// Which store and broker are in use, and whether each answers now.
    fn health(&self) -> Health;
}

/// The store and the broker as `/healthz` reports them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// The store.
    pub store: StoreHealth,
    /// The MQTT broker.
    pub broker: BrokerHealth,
    /// The store-and-forward spool, when devices are answered from it
    /// (`[mqtt] ack = "spool"`); left out of the body otherwise.
    pub spool: Option<SpoolHealth>,
}

/// The store-and-forward spool in use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpoolHealth {
    /// The spool file.
    pub path: String,
    /// Messages acknowledged to devices and not yet confirmed by the broker.
    pub messages: u64,
    /// Bytes of them (topic and payload).
    pub bytes: u64,
    /// The bound; beyond it devices get 5.03.
    pub max_bytes: u64,
    /// Whether its last write succeeded.
    pub writable: bool,
}

/// The store in use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoreHealth {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Where it is: a URL with any password removed.
    pub url: String,
    /// Whether it answered its last probe.
    pub up: bool,
    /// Whether this instance receives the changes other instances make
    /// (a shared PostgreSQL store whose change feed is connected); `false`
    /// for SQLite, which one instance owns.
    pub following: bool,
}

/// The MQTT broker in use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BrokerHealth {
    /// `mqtt://host:port`, `mqtts://host:port`, or `embedded://ip:port`
    /// (never a password).
    pub url: String,
    /// Whether the connection is up now.
    pub connected: bool,
}

/// The admin bearer token.
///
/// `Debug` prints `Token(<redacted>)`; the text is zeroized on drop and
/// compared in constant time ([`Token::matches`]: neither its content nor
/// its length shows in the timing).
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// A token. An empty one matches no request.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Zeroizing::new(secret.into()))
    }

    /// Whether `presented` is this token.
    ///
    /// The work done depends only on the length of `presented`, never on
    /// the token: every presented byte is compared (with `subtle`, no
    /// branch on the outcome) against the token's bytes, repeated as often
    /// as needed, and the lengths are compared the same way. A wrong
    /// token, a prefix of the right one or one that is longer take the
    /// same path; neither the token's content nor its length shows in the
    /// timing. (`subtle`'s slice comparison answers a length mismatch at
    /// once, which would tell an attacker the token's length.)
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if expected.is_empty() {
            // The configuration's, not the request's: an empty token
            // matches nothing.
            return false;
        }
        let lengths = (expected.len() as u64).ct_eq(&(presented.len() as u64));
        let bytes = presented
            .iter()
            .zip(expected.iter().cycle())
            .fold(Choice::from(1), |equal, (p, e)| equal & p.ct_eq(e));
        bool::from(lengths & bytes)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What the admin API works on.
#[derive(Clone)]
pub struct AdminState {
    /// The device registry, PSKs, template and positions.
    pub store: Store,
    /// The bearer token `/v1` routes require; `None` leaves them open.
    pub token: Option<Token>,
    /// The source of `/metrics`.
    pub metrics: Arc<dyn MetricsSource>,
    /// `/healthz` answers 200 when true, 503 otherwise.
    pub ready: Arc<AtomicBool>,
    /// What `/healthz` adds about the store and the broker; `None` leaves
    /// them out.
    pub health: Option<Arc<dyn HealthSource>>,
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("store", &self.store)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The admin API: `/v1/...`, `/metrics`, `/healthz` (see the [crate
/// documentation](crate#routes)).
pub fn router(state: AdminState) -> Router {
    let v1 = Router::new()
        .route("/devices", get(devices::list))
        .route(
            "/devices/{iccid}",
            get(devices::get).put(devices::put).delete(devices::remove),
        )
        .route("/integrate/devices/{iccid}/psk", post(psk::set))
        .route("/integrate/devices/{iccid}/psk/{protocol}", get(psk::get))
        .route(
            "/optimize/templates/coap",
            get(templates::get).put(templates::put),
        )
        .route("/optimize/messages/test", post(templates::test))
        .route("/locate/devices/{iccid}/position", put(positions::put))
        .route("/locate/devices/{iccid}/positions", get(positions::list))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .nest("/v1", v1)
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Runs a blocking store call off the async threads.
pub(crate) async fn blocking<T, F>(store: &Store, call: F) -> Result<T, AdminError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || call(&store))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "admin API: a store call panicked or was cancelled");
            AdminError::Internal
        })?
        .map_err(AdminError::from)
}

async fn authenticate(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| bearer(value.as_bytes()));
    match presented {
        None => AdminError::Unauthorized("missing bearer token").into_response(),
        Some(None) => AdminError::Unauthorized("the Authorization header must be `Bearer TOKEN`")
            .into_response(),
        Some(Some(presented)) if token.matches(presented) => next.run(req).await,
        Some(Some(_)) => AdminError::Unauthorized("invalid bearer token").into_response(),
    }
}

/// The token of an `Authorization: Bearer TOKEN` value.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    Some(&rest[start..])
}

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    tracing::debug!(%method, %path, status = response.status().as_u16(), "admin request");
    response
}

async fn not_found() -> AdminError {
    AdminError::NotFound("no such route".into())
}

async fn method_not_allowed() -> AdminError {
    AdminError::MethodNotAllowed
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let text = state.metrics.render().await;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(state.metrics.content_type()),
        )],
        text,
    )
        .into_response()
}

async fn healthz(State(state): State<AdminState>) -> Response {
    let ready = state.ready.load(Ordering::Acquire);
    let (status, mut body) = if ready {
        (StatusCode::OK, serde_json::json!({"status": "ok"}))
    } else {
        let error = AdminError::NotReady;
        (
            error.status(),
            serde_json::json!({"error": error.to_string()}),
        )
    };
    if let Some(source) = &state.health {
        let health = source.health();
        body["store"] = serde_json::json!(health.store);
        body["broker"] = serde_json::json!(health.broker);
        if let Some(spool) = health.spool {
            body["spool"] = serde_json::json!(spool);
        }
    }
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_themselves() {
        let token = Token::new("s3cret-token");
        assert!(token.matches(b"s3cret-token"));
        assert!(!token.matches(b"s3cret-tokeN"));
        assert!(!token.matches(b"s3cret-toke"));
        assert!(!token.matches(b""));
        assert!(!Token::new("").matches(b""));
        // Longer, with the token as a prefix; the token repeated (what the
        // cycling comparison would match if the lengths were not checked).
        assert!(!token.matches(b"s3cret-token-and-more"));
        assert!(!token.matches(b"s3cret-tokens3cret-token"));
        assert!(!token.matches(b"s3cret-token\0"));
        assert!(!Token::new("a").matches(b"aa"));
        assert!(Token::new("a").matches(b"a"));
        // Bytes beyond ASCII are compared as bytes.
        assert!(Token::new("t\u{f6}ken").matches("t\u{f6}ken".as_bytes()));
        assert!(!Token::new("t\u{f6}ken").matches(b"t\xf6ken"));
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b""), None);
    }
}
