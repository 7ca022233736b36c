//! `POST /` and `POST /data`: telemetry to the broker (spec.md §2.2).

use coapgate_codec::{self as codec, CoapOption, ResponseType};
use coapgate_envelope::Body;
use coapgate_model::DeviceEntry;
use coapgate_topic::{Event, PublishTopic, Topic};

use coapgate_location::{GPS, Position};
use coapgate_translate::Translation;

use super::publish::Owner;
use super::{Endpoint, Outcome, Request};
use crate::PayloadFormat;
use crate::response::Response;
use codec::option_number::{LOCATION_QUERY, URI_QUERY};

impl Endpoint {
    /// Steps 7 and 8 for `POST /` and `POST /data`.
    pub(super) fn telemetry(&mut self, request: &Request<'_>, device: &DeviceEntry) -> Outcome {
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
        // Translate first: it decides how many messages go to the broker.
        let template = match self.config.payload_format {
            PayloadFormat::Envelope => self.templates.as_ref().and_then(|t| t.active_template()),
            // Raw means the device's bytes unchanged (docs/decisions.md).
            PayloadFormat::Raw => None,
        };
        let translated = template.map(|t| t.translate(&packet.payload));
        let position = match &translated {
            Some(Ok(Translation {
                location: Some(c), ..
            })) => {
                let sample_time = coapgate_model::epoch_millis(request.wall) / 1000;
                match Position::new(c.longitude, c.latitude, GPS, sample_time) {
                    Ok(position) => Some(position),
                    Err(error) => {
                        tracing::debug!(iccid = %device.iccid, %error, "template position not recorded");
                        None
                    }
                }
            }
            _ => None,
        };
        let needed = 1 + usize::from(position.is_some());
        if !self.has_room_for(needed) {
            return Outcome::Respond(Response::service_unavailable());
        }
        let request_id = self.next_request_id();
        let owner = || Owner::Request(request_id);
        let t = topic.as_ref().map(Topic::as_str);
        let (topic_name, payload) = match &translated {
            None if self.config.payload_format == PayloadFormat::Raw => (
                self.publish_topic(device, topic.as_ref()),
                packet.payload.clone(),
            ),
            None => {
                let body = Body::Binary(&packet.payload);
                let payload = self.envelope(request, device, |m| {
                    coapgate_envelope::telemetry(m, t, body)
                });
                (self.publish_topic(device, topic.as_ref()), payload)
            }
            Some(Ok(translation)) => {
                let body = Body::Json(&translation.value);
                let payload = self.envelope(request, device, |m| {
                    coapgate_envelope::telemetry(m, t, body)
                });
                (self.publish_topic(device, topic.as_ref()), payload)
            }
            // No telemetry: an ERROR event with the raw payload, and the
            // device still gets 2.04 once it is at the broker.
            Some(Err(error)) => {
                let description = error.to_string();
                let payload = self.envelope(request, device, |m| {
                    coapgate_envelope::translation_error(m, &description, &packet.payload)
                });
                (PublishTopic::event(&device.iccid, Event::Error), payload)
            }
        };
        self.enqueue_publish(request.now, owner(), topic_name, payload);
        if let Some(position) = position {
            let event = self.envelope(request, device, |m| {
                coapgate_envelope::location(m, &position)
            });
            self.enqueue_publish(
                request.now,
                owner(),
                PublishTopic::event(&device.iccid, Event::Location),
                event,
            );
            if let Some(positions) = &self.positions {
                positions.record(&device.iccid, position);
            }
        }
        self.await_work(request_id, request, needed);
        Outcome::Pending
    }

    fn publish_topic(&self, device: &DeviceEntry, topic: Option<&Topic>) -> PublishTopic {
        self.config
            .topics
            .render(&device.iccid, device.imsi.as_ref(), topic)
    }
}
