//! The sans-IO coapgate engine.
//!
//! [`Endpoint`] is a state machine that performs no I/O, reads no clock and
//! never waits (model: quinn-proto, str0m). The driver feeds it events:
//!
//! - [`Endpoint::handle_datagram`]: a datagram arrived from a [`Link`];
//! - [`Endpoint::handle_publish_result`]: the broker confirmed (or not) a
//!   [`Publish`] the engine asked for;
//! - [`Endpoint::handle_store_result`]: the store wrote (or not) a
//!   [`StoreWrite`] the engine asked for;
//! - [`Endpoint::handle_broker_state`]: the broker connection went up or down;
//! - [`Endpoint::handle_timeout`]: the instant the engine named has come;
//!
//! and drains what it wants done from [`Endpoint::poll_output`]: datagrams
//! to send, messages for the broker, writes for the store — every side
//! effect is an [`Output`], so a slow broker or a locked database delays
//! only the requests that need it, never the event loop.
//!
//! **The contract:** after every `handle_*` call, call
//! [`Endpoint::poll_output`] until it returns [`Output::Timeout`], which
//! names the instant to call [`Endpoint::handle_timeout`] next.
//!
//! Every request runs through one pipeline, in the order spec.md §2.1 gives:
//! decode (drop or RST) → duplicate check (replay) → device by source IP
//! (4.01) → the device's rate limit (4.29 with Max-Age, where
//! [`EndpointConfig::device_limit`] sets one) → critical options (4.02) → path and method (4.04 / 4.05) →
//! resource validation (4.00, 4.13) → work (a publish: 2.04 after the broker
//! confirmed, 5.02 / 5.04 otherwise; a store write for `/bootstrap`: 2.05
//! once it is stored, 5.03 while the store cannot take it). Work that takes
//! longer than the piggyback window is answered separately. Reads on the
//! hot path (devices, registrations, positions, the template) come from
//! in-memory views the caller keeps current. This crate is the only place
//! that maps errors to CoAP response codes.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Instant, SystemTime};
//! use coapgate_endpoint::{Endpoint, EndpointConfig, Link, Output, PublishResult};
//! use coapgate_model::{Device, DeviceDirectory, DeviceEntry, DeviceStatus};
//!
//! struct OneDevice(Arc<Device>);
//! impl DeviceDirectory for OneDevice {
//!     fn by_ip(&self, ip: std::net::IpAddr) -> Option<DeviceEntry> {
//!         (ip == self.0.ip).then(|| self.0.entry())
//!     }
//! }
//! let device = Device {
//!     iccid: "8988280666000000000".parse().unwrap(),
//!     imsi: None,
//!     ip: "127.0.0.2".parse().unwrap(),
//!     status: DeviceStatus::Active,
//!     name: None,
//! };
//! let mut endpoint = Endpoint::new(EndpointConfig::default(), Arc::new(OneDevice(Arc::new(device))));
//! endpoint.handle_broker_state(true);
//!
//! // CON POST /data?t=test "hi", message ID 1, no token.
//! let request = [0x40, 0x02, 0x00, 0x01, 0xb4, b'd', b'a', b't', b'a', 0x46, b't', b'=', b't', b'e', b's', b't', 0xff, b'h', b'i'];
//! let device_addr = Link::Udp("127.0.0.2:40000".parse().unwrap());
//! let now = Instant::now();
//! endpoint.handle_datagram(now, SystemTime::now(), device_addr, &request);
//! let Output::Publish(publish) = endpoint.poll_output() else { panic!("one message for the broker") };
//! assert_eq!(publish.topic, "8988280666000000000/test");
//! // No answer before the broker confirmed; wake up for the piggyback window.
//! assert!(matches!(endpoint.poll_output(), Output::Timeout(Some(_))));
//!
//! endpoint.handle_publish_result(now, publish.id, PublishResult::Confirmed);
//! let Output::Transmit(ack) = endpoint.poll_output() else { panic!("the piggybacked 2.04") };
//! assert_eq!(ack.payload, [0x60, 0x44, 0x00, 0x01]);
//! ```

#![forbid(unsafe_code)]

mod config;
mod engine;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod response;
mod stats;
mod types;

pub use config::{BootstrapConfig, EndpointConfig, InvalidConfig, PayloadFormat};
pub use engine::Endpoint;
pub use stats::{EndpointStats, RequestKey};
pub use types::{
    Link, Output, Publish, PublishId, PublishResult, StoreRequest, StoreResult, StoreWrite,
    StoreWriteId, TemplateSource, Transmit,
};

/// The CoAP codec this engine speaks, re-exported for drivers and tests.
pub use coapgate_codec as codec;
