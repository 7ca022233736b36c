//! Messages for the broker and who waits for them.
//!
//! A request may need several publishes (telemetry and a LOCATION event);
//! it is answered 2.04 when all are confirmed, or at the first failure. A
//! first-time registration event belongs to no request: the device is
//! marked registered only once the broker confirmed it, so a failed one is
//! tried again on the device's next request.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use coapgate_envelope::{DeviceRef, Meta};
use coapgate_exchange::MessageKind;
use coapgate_model::{Device, Iccid};
use rand::Rng;

use super::{Endpoint, Pending, Request};
use crate::Publish;

/// Identifies a request waiting for the broker.
pub(super) type RequestId = u64;

/// Who waits for a publish.
#[derive(Debug)]
pub(super) enum Owner {
    /// A request, answered when all its publishes are confirmed.
    Request(RequestId),
    /// A device's first-time registration event.
    Registration {
        /// The device.
        iccid: Iccid,
        /// When it was first seen.
        wall: SystemTime,
    },
}

/// Epoch milliseconds of a wall-clock time (0 before 1970).
pub(super) fn epoch_ms(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Endpoint {
    /// Builds an envelope with a fresh message ID for `device` at `request`.
    pub(super) fn envelope(
        &mut self,
        request: &Request<'_>,
        device: &Device,
        build: impl FnOnce(&Meta<'_>) -> Vec<u8>,
    ) -> Vec<u8> {
        let message_id = uuid::Builder::from_random_bytes(self.rng.random()).into_uuid();
        let mut id_text = uuid::Uuid::encode_buffer();
        let meta = Meta {
            id: message_id.hyphenated().encode_lower(&mut id_text),
            received_ms: epoch_ms(request.wall),
            device: DeviceRef {
                iccid: device.iccid.as_str(),
                ip: request.from.addr().ip().to_canonical(),
                imsi: device.imsi.as_ref().map(|i| i.as_str()),
            },
        };
        build(&meta)
    }

    /// Whether `count` more publishes fit under `max_pending`.
    pub(super) fn has_room_for(&self, count: usize) -> bool {
        self.owners.len() + count <= self.config.max_pending
    }

    /// Queues a message for the broker on behalf of `owner`; its deadline
    /// is `now + publish_timeout`.
    pub(super) fn enqueue_publish(
        &mut self,
        now: Instant,
        owner: Owner,
        topic: String,
        payload: Vec<u8>,
    ) {
        let id = self.next_publish;
        self.next_publish += 1;
        let deadline = now + self.config.publish_timeout;
        self.publishes.push_back(Publish {
            id,
            topic,
            payload,
            deadline,
        });
        self.owners.insert(id, owner);
        self.deadline_timers.push_back((deadline, id));
    }

    /// Registers `request` as waiting for its `publishes` (already queued
    /// with [`Owner::Request`] and the ID this returns, see
    /// [`next_request_id`](Self::next_request_id)).
    pub(super) fn await_broker(&mut self, id: RequestId, request: &Request<'_>, publishes: usize) {
        self.pending.insert(
            id,
            Pending {
                link: request.from,
                message_id: request.packet.header.message_id,
                ticket: request.ticket,
                token: request.packet.get_token().to_vec(),
                kind: request.kind,
                resource: request.resource,
                acknowledged: false,
                outstanding: publishes,
            },
        );
        if request.kind == MessageKind::Confirmable {
            self.piggyback_timers
                .push_back((request.now + self.config.piggyback_window, id));
        }
    }

    /// A new request ID.
    pub(super) fn next_request_id(&mut self) -> RequestId {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    /// Publishes the device's `DEVICE_FIRST_TIME_REGISTERED` event if it
    /// was never confirmed and is not on its way.
    pub(super) fn register_if_new(&mut self, request: &Request<'_>, device: &Device) {
        let Some(registrations) = self.registrations.clone() else {
            return;
        };
        if !self.broker_connected
            || self.registering.contains(&device.iccid)
            || registrations.is_registered(&device.iccid)
            || !self.has_room_for(1)
        {
            return;
        }
        let payload = self.envelope(request, device, coapgate_envelope::first_time_registered);
        let topic = format!("{}/lifecycle", device.iccid);
        self.registering.insert(device.iccid.clone());
        let owner = Owner::Registration {
            iccid: device.iccid.clone(),
            wall: request.wall,
        };
        self.enqueue_publish(request.now, owner, topic, payload);
    }

    /// The broker confirmed (or not) a registration event.
    pub(super) fn registration_result(&mut self, iccid: Iccid, wall: SystemTime, confirmed: bool) {
        self.registering.remove(&iccid);
        if !confirmed {
            return;
        }
        if let Some(registrations) = &self.registrations {
            if let Err(error) = registrations.mark_registered(&iccid, wall) {
                // The event went out; recording it failed, so it may be
                // published once more after a restart (at least once).
                tracing::error!(%iccid, %error, "could not record a registration");
            }
        }
    }
}
