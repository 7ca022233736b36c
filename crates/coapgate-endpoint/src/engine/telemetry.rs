//! `POST /` and `POST /data`: telemetry to the broker (SPEC §2.2).

use coapgate_codec::{self as codec, CoapOption, ResponseType};
use coapgate_envelope::{Body, DeviceRef, Meta};
use coapgate_exchange::MessageKind;
use coapgate_model::Device;
use coapgate_topic::Topic;
use rand::Rng;
use std::time::UNIX_EPOCH;

use super::{Endpoint, Outcome, Pending, Request};
use crate::response::Response;
use crate::{PayloadFormat, Publish};
use codec::option_number::{LOCATION_QUERY, URI_QUERY};

/// Max-Age (seconds) on a 5.03 when too many publishes are pending.
const OVERLOAD_MAX_AGE: u32 = 5;

impl Endpoint {
    /// Steps 6 and 7 for `POST /` and `POST /data`.
    pub(super) fn telemetry(&mut self, request: &Request<'_>, device: &Device) -> Outcome {
        let packet = request.packet;
        let topic = match coapgate_topic::extract(
            codec::option_values(packet, URI_QUERY),
            codec::option_values(packet, LOCATION_QUERY),
        ) {
            Ok(topic) => topic,
            Err(error) => {
                tracing::debug!(peer = %request.from.addr(), %error, "bad topic");
                return Outcome::code(ResponseType::BadRequest);
            }
        };
        if packet.payload.len() > self.config.max_payload {
            let size1 = u32::try_from(self.config.max_payload).unwrap_or(u32::MAX);
            return Outcome::Respond(
                Response::new(ResponseType::RequestEntityTooLarge)
                    .with_uint_option(CoapOption::Size1, size1),
            );
        }
        if !self.broker_connected {
            return Outcome::code(ResponseType::BadGateway);
        }
        if self.pending.len() >= self.config.max_pending {
            return Outcome::Respond(
                Response::new(ResponseType::ServiceUnavailable)
                    .with_uint_option(CoapOption::MaxAge, OVERLOAD_MAX_AGE),
            );
        }
        self.publish(request, device, topic.as_ref());
        Outcome::Pending
    }

    fn publish(&mut self, request: &Request<'_>, device: &Device, topic: Option<&Topic>) {
        let packet = request.packet;
        let id = self.next_publish;
        self.next_publish += 1;
        let payload = match self.config.payload_format {
            PayloadFormat::Raw => packet.payload.clone(),
            PayloadFormat::Envelope => {
                let message_id = uuid::Builder::from_random_bytes(self.rng.random()).into_uuid();
                let mut id_text = uuid::Uuid::encode_buffer();
                let meta = Meta {
                    id: message_id.hyphenated().encode_lower(&mut id_text),
                    received_ms: request
                        .wall
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    device: DeviceRef {
                        iccid: device.iccid.as_str(),
                        ip: request.from.addr().ip().to_canonical(),
                        imsi: device.imsi.as_ref().map(|i| i.as_str()),
                    },
                };
                coapgate_envelope::telemetry(
                    &meta,
                    topic.map(Topic::as_str),
                    Body::Binary(&packet.payload),
                )
            }
        };
        let deadline = request.now + self.config.publish_timeout;
        self.publishes.push_back(Publish {
            id,
            topic: self.config.topics.render(
                device.iccid.as_str(),
                device.imsi.as_ref().map(|i| i.as_str()),
                topic,
            ),
            payload,
            deadline,
        });
        self.pending.insert(
            id,
            Pending {
                link: request.from,
                message_id: packet.header.message_id,
                ticket: request.ticket,
                token: packet.get_token().to_vec(),
                kind: request.kind,
                resource: request.resource,
                acknowledged: false,
            },
        );
        if request.kind == MessageKind::Confirmable {
            self.piggyback_timers
                .push_back((request.now + self.config.piggyback_window, id));
        }
        self.deadline_timers.push_back((deadline, id));
    }
}
