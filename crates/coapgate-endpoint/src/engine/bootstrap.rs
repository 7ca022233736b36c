//! `GET /bootstrap`: the device's DTLS PSK (spec.md §2.4).

use coapgate_bootstrap::answer;
use coapgate_codec::ResponseType;
use coapgate_model::Device;

use super::{Endpoint, Outcome, Request};
use crate::response::Response;

impl Endpoint {
    /// Step 7 for `GET /bootstrap` over plain CoAP: one atomic
    /// read-decide-write of the device's PSK record, then
    /// `ICCID,PSK,coapsEndpointUrl` as text/plain.
    pub(super) fn bootstrap(&mut self, request: &Request<'_>, device: &Device) -> Outcome {
        let Some(psks) = self.psks.clone() else {
            return Outcome::Respond(Response::new(ResponseType::NotFound));
        };
        let policy = self.config.bootstrap.policy;
        let generator = &mut self.psk_generator;
        let result = psks.update_psk(&device.iccid, &mut |current| {
            policy.bootstrap(request.wall, current, generator.as_mut())
        });
        match result {
            Ok(record) => {
                let body = answer(&device.iccid, &record.psk, &self.config.bootstrap.coaps_url);
                Outcome::Respond(Response::new(ResponseType::Content).with_text(body))
            }
            Err(error) => {
                // The error text never holds a PSK.
                tracing::error!(iccid = %device.iccid, %error, "bootstrap failed");
                Outcome::Respond(Response::new(ResponseType::InternalServerError))
            }
        }
    }
}
