//! Work for the broker and the store, and who waits for it.
//!
//! A request may need several publishes (telemetry and a LOCATION event);
//! it is answered 2.04 when all are confirmed, or at the first failure. A
//! `/bootstrap` request waits for one store write. A first-time
//! registration event belongs to no request: once the broker confirmed it,
//! the engine asks the store to record it, and until the store answered the
//! device is not offered the event again; a failed publish or write is
//! tried again on the device's next request.

use std::time::{Instant, SystemTime};

use coapgate_envelope::{DeviceRef, Meta};
use coapgate_exchange::MessageKind;
use coapgate_model::{DeviceEntry, Iccid, epoch_millis};
use coapgate_topic::{Event, PublishTopic};
use rand::Rng;

use super::{Endpoint, Pending, Request};
use crate::{Output, Publish, StoreRequest, StoreResult, StoreWrite};

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

/// Who waits for a store write.
#[derive(Debug)]
pub(super) enum StoreWaiter {
    /// A `/bootstrap` request, answered with the stored PSK.
    Bootstrap {
        /// The request.
        request: RequestId,
        /// Its device.
        iccid: Iccid,
    },
    /// A device's confirmed first-time registration.
    Registration {
        /// The device.
        iccid: Iccid,
    },
}

impl Endpoint {
    /// Builds an envelope with a fresh message ID for `device` at `request`.
    pub(super) fn envelope(
        &mut self,
        request: &Request<'_>,
        device: &DeviceEntry,
        build: impl FnOnce(&Meta<'_>) -> Vec<u8>,
    ) -> Vec<u8> {
        let message_id = uuid::Builder::from_random_bytes(self.rng.random()).into_uuid();
        let mut id_text = uuid::Uuid::encode_buffer();
        let meta = Meta {
            id: message_id.hyphenated().encode_lower(&mut id_text),
            received_ms: epoch_millis(request.wall),
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
        topic: PublishTopic,
        payload: Vec<u8>,
    ) {
        let id = self.next_publish;
        self.next_publish += 1;
        let deadline = now + self.config.publish_timeout;
        self.outputs.push_back(Output::Publish(Publish {
            id,
            topic,
            payload,
            deadline,
        }));
        self.owners.insert(id, owner);
        self.deadline_timers.push_back((deadline, id));
    }

    /// Queues a write for the store on behalf of `waiter`; the engine
    /// waits for it until `now + store_timeout`.
    pub(super) fn enqueue_store_write(
        &mut self,
        now: Instant,
        waiter: StoreWaiter,
        request: StoreRequest,
    ) {
        let id = self.next_store_write;
        self.next_store_write += 1;
        let deadline = now + self.config.store_timeout;
        self.outputs.push_back(Output::Store(StoreWrite {
            id,
            request,
            deadline,
        }));
        self.store_writes.insert(id, waiter);
        self.store_timers.push_back((deadline, id));
    }

    /// Registers `request` as waiting: for its `publishes` (already queued
    /// with [`Owner::Request`] and the ID this returns, see
    /// [`next_request_id`](Self::next_request_id)), or, with none, for a
    /// store write queued with that ID.
    pub(super) fn await_work(&mut self, id: RequestId, request: &Request<'_>, publishes: usize) {
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
    pub(super) fn register_if_new(&mut self, request: &Request<'_>, device: &DeviceEntry) {
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
        let topic = PublishTopic::event(&device.iccid, Event::Lifecycle);
        self.registering.insert(device.iccid.clone());
        let owner = Owner::Registration {
            iccid: device.iccid.clone(),
            wall: request.wall,
        };
        self.enqueue_publish(request.now, owner, topic, payload);
    }

    /// The broker confirmed (or not) a registration event: a confirmed
    /// one is recorded by the store; the device stays "registering" until
    /// the store answered.
    pub(super) fn registration_result(
        &mut self,
        now: Instant,
        iccid: Iccid,
        wall: SystemTime,
        confirmed: bool,
    ) {
        if !confirmed {
            self.registering.remove(&iccid);
            return;
        }
        let request = StoreRequest::MarkRegistered {
            iccid: iccid.clone(),
            at: wall,
        };
        self.enqueue_store_write(now, StoreWaiter::Registration { iccid }, request);
    }

    /// The store recorded (or not) a registration.
    pub(super) fn registration_recorded(&mut self, iccid: Iccid, result: &StoreResult) {
        self.registering.remove(&iccid);
        if *result != StoreResult::Done {
            // The event went out; recording it failed, so the device's next
            // request publishes it once more (at least once, never lost).
            tracing::error!(%iccid, ?result, "could not record a registration");
        }
    }
}
