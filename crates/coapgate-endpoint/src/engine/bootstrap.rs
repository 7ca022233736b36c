//! `GET /bootstrap`: the device's DTLS PSK (spec.md §2.4).

use coapgate_bootstrap::{PskRecord, PskUpdate, answer};
use coapgate_codec::ResponseType;
use coapgate_model::{DeviceEntry, Iccid};

use super::publish::StoreWaiter;
use super::{Endpoint, Outcome, Request};
use crate::StoreRequest;
use crate::response::Response;

impl Endpoint {
    /// Step 8 for `GET /bootstrap` over plain CoAP: the read-decide-write of
    /// the device's PSK record goes to the store as an output, and the
    /// request is answered (`ICCID,PSK,coapsEndpointUrl` as text/plain)
    /// when the stored record comes back.
    pub(super) fn bootstrap(&mut self, request: &Request<'_>, device: &DeviceEntry) -> Outcome {
        if !self.bootstrap {
            return Outcome::code(ResponseType::NotFound);
        }
        let update = PskUpdate::new(
            device.iccid.clone(),
            request.wall,
            self.config.bootstrap.policy,
            self.psk_generator.as_mut(),
        );
        let request_id = self.next_request_id();
        let waiter = StoreWaiter::Bootstrap {
            request: request_id,
            iccid: device.iccid.clone(),
        };
        self.enqueue_store_write(request.now, waiter, StoreRequest::Bootstrap(update));
        self.await_work(request_id, request, 0);
        Outcome::Pending
    }

    /// The 2.05 answer for a stored PSK record.
    pub(super) fn bootstrap_answer(&self, iccid: &Iccid, record: &PskRecord) -> Response {
        let body = answer(iccid, &record.psk, &self.config.bootstrap.coaps_url);
        Response::new(ResponseType::Content).with_text(body)
    }
}
