//! `GET /location`: the device's latest position as CSV (spec.md §2.5).

use coapgate_codec::ResponseType;
use coapgate_model::DeviceEntry;
use zeroize::Zeroizing;

use super::{Endpoint, Outcome};
use crate::response::Response;

impl Endpoint {
    /// Step 8 for `GET /location`, over plain CoAP and DTLS: 2.05 text/plain
    /// CSV, or 4.04 when no position is known.
    pub(super) fn location(&mut self, device: &DeviceEntry) -> Outcome {
        let latest = self
            .positions
            .as_ref()
            .and_then(|p| p.latest(&device.iccid));
        match latest {
            Some(position) => {
                let body = coapgate_location::csv(&position).into_bytes();
                Outcome::Respond(
                    Response::new(ResponseType::Content).with_text(Zeroizing::new(body)),
                )
            }
            None => Outcome::code(ResponseType::NotFound),
        }
    }
}
