//! The device topic `t` and the MQTT topic a message is published on.
//!
//! This crate has one job: turn what a device sends as its topic (the query
//! parameter `t`, spec.md §2.2) into a validated [`Topic`], and name the
//! MQTT topic a message is published on — a [`PublishTopic`]: telemetry's
//! from an ICCID, an optional IMSI and an optional [`Topic`] via
//! operator-configurable [`TopicTemplates`], events' as `{iccid}/error`,
//! `{iccid}/location`, `{iccid}/lifecycle` ([`PublishTopic::event`],
//! spec.md §2.3).
//!
//! ```
//! use coapgate_model::Iccid;
//! use coapgate_topic::{extract, Event, PublishTopic, TopicTemplates};
//!
//! // POST /data?t=sensors/temp
//! let uri_query: [&[u8]; 2] = [b"x=1", b"t=sensors/temp"];
//! let topic = extract(uri_query, []).expect("valid").expect("present");
//! assert_eq!(topic.as_str(), "sensors/temp");
//!
//! let iccid: Iccid = "8988280666000000000".parse().expect("an ICCID");
//! let templates = TopicTemplates::default(); // `{iccid}/{t}` and `{iccid}`
//! assert_eq!(templates.render(&iccid, None, Some(&topic)), "8988280666000000000/sensors/temp");
//! assert_eq!(templates.render(&iccid, None, None), "8988280666000000000");
//! assert_eq!(PublishTopic::event(&iccid, Event::Error), "8988280666000000000/error");
//! ```
#![forbid(unsafe_code)]

use std::ops::Deref;
use std::{fmt, str::FromStr};

use coapgate_model::{Iccid, Imsi};

/// Why a topic or a topic template is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// More than one `t` parameter in the same option kind (Uri-Query or Location-Query).
    #[error("more than one `t` parameter")]
    DuplicateT,
    /// A bare `t` parameter without `=value`.
    #[error("`t` parameter without a value")]
    NoValue,
    /// The topic is empty (`t=`).
    #[error("empty topic")]
    Empty,
    /// The topic is longer than [`Topic::MAX_LEN`] characters.
    #[error("topic of {0} characters is longer than 253")]
    TooLong(usize),
    /// The topic contains a character outside `A-Z a-z 0-9 _ /`.
    #[error("character {0:?} is not allowed in a topic")]
    BadCharacter(char),
    /// The topic contains two slashes in a row.
    #[error("topic contains `//`")]
    DoubleSlash,
    /// The `t` parameter's value is not UTF-8.
    #[error("topic is not UTF-8")]
    NotUtf8,
    /// A publish-topic template is not acceptable.
    #[error("bad topic template {template:?}: {reason}")]
    BadTemplate {
        /// The template as configured.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// An MQTT topic coapgate publishes on: never empty, no wildcard (`+`,
/// `#`), no NUL or control character. Made only by
/// [`TopicTemplates::render`] (telemetry) and [`PublishTopic::event`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublishTopic(String);

/// The events a device's messages cause besides telemetry (spec.md §2.3),
/// each on a topic of its own under the device's ICCID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Event {
    /// `{iccid}/error`: a translation failed; the raw payload travels inside.
    Error,
    /// `{iccid}/location`: a template yielded a position.
    Location,
    /// `{iccid}/lifecycle`: the device's first request ever.
    Lifecycle,
}

impl Event {
    /// The topic level after the ICCID.
    pub fn suffix(self) -> &'static str {
        match self {
            Event::Error => "error",
            Event::Location => "location",
            Event::Lifecycle => "lifecycle",
        }
    }
}

impl PublishTopic {
    /// `{iccid}/error`, `{iccid}/location` or `{iccid}/lifecycle`. These
    /// are fixed, as on 1NCE (a device's own `t=error` lands on the same
    /// topic; consumers tell them apart by the envelope's `type`).
    pub fn event(iccid: &Iccid, event: Event) -> Self {
        let suffix = event.suffix();
        let mut topic = String::with_capacity(iccid.as_str().len() + 1 + suffix.len());
        topic.push_str(iccid.as_str());
        topic.push('/');
        topic.push_str(suffix);
        PublishTopic(topic)
    }

    /// The topic text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for PublishTopic {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PublishTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<PublishTopic> for String {
    fn from(topic: PublishTopic) -> String {
        topic.0
    }
}

impl PartialEq<str> for PublishTopic {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for PublishTopic {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for PublishTopic {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

/// A validated device topic: 1..=253 characters, only `A-Z a-z 0-9 _ /`,
/// no `//`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Topic(String);

impl Topic {
    /// The longest topic: a Uri-Query option is at most 255 bytes, and `t=` takes two.
    pub const MAX_LEN: usize = 253;

    /// Validates `s` as a topic.
    pub fn parse(s: &str) -> Result<Topic, TopicError> {
        validate(s)?;
        Ok(Topic(s.to_owned()))
    }

    /// The topic as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The topic rules of spec.md §2.2, reporting the first problem found.
fn validate(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '/'))
    {
        return Err(TopicError::BadCharacter(bad));
    }
    // Only ASCII from here on: bytes are characters.
    if s.len() > Topic::MAX_LEN {
        return Err(TopicError::TooLong(s.len()));
    }
    if s.contains("//") {
        return Err(TopicError::DoubleSlash);
    }
    Ok(())
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Topic {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topic::parse(s)
    }
}

impl TryFrom<&str> for Topic {
    type Error = TopicError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Topic::parse(s)
    }
}

impl TryFrom<String> for Topic {
    type Error = TopicError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        validate(&s)?;
        Ok(Topic(s))
    }
}

impl From<Topic> for String {
    fn from(topic: Topic) -> String {
        topic.0
    }
}

/// The value of the single `t` parameter among `options`, `None` if there is
/// no `t`; an error if there is more than one or it has no `=`.
fn find_t<'a>(options: impl IntoIterator<Item = &'a [u8]>) -> Result<Option<&'a [u8]>, TopicError> {
    let mut found = None;
    for option in options {
        let value = match option.strip_prefix(b"t") {
            Some([]) => Err(TopicError::NoValue),
            Some([b'=', value @ ..]) => Ok(value),
            _ => continue, // another parameter, like `tt=1` or `x=2`
        };
        if found.is_some() {
            return Err(TopicError::DuplicateT);
        }
        found = Some(value);
    }
    found.transpose()
}

/// Finds the device topic `t` per spec.md §2.2: in the Uri-Query options
/// (values like `b"t=foo"`), else in the Location-Query options.
///
/// Uri-Query wins when it has a `t`; Location-Query is consulted only when
/// Uri-Query has none. More than one `t` within the same option kind is an
/// error. A `t` with an empty value, a bare `t` without `=`, a value that is
/// not UTF-8, has a character outside `A-Z a-z 0-9 _ /`, contains `//`, or is
/// longer than 253 characters is an error. Other parameters (`tt=1`, `x=2`)
/// are ignored.
pub fn extract<'a>(
    uri_query: impl IntoIterator<Item = &'a [u8]>,
    location_query: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<Topic>, TopicError> {
    let value = match find_t(uri_query)? {
        Some(value) => value,
        None => match find_t(location_query)? {
            Some(value) => value,
            None => return Ok(None),
        },
    };
    let text = std::str::from_utf8(value).map_err(|_| TopicError::NotUtf8)?;
    Topic::parse(text).map(Some)
}

/// One piece of a pre-parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Iccid,
    Imsi,
    Topic,
}

/// A template pre-parsed into segments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    segments: Vec<Segment>,
    literal_len: usize,
}

impl Template {
    /// Parses and validates `text`; `{t}` is allowed only when `allow_topic`.
    fn parse(text: &str, allow_topic: bool) -> Result<Template, TopicError> {
        let bad = |reason: String| TopicError::BadTemplate {
            template: text.to_owned(),
            reason,
        };
        let mut segments = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let literal_end = rest.find(['{', '}']).unwrap_or(rest.len());
            let (literal, after) = rest.split_at(literal_end);
            if !literal.is_empty() {
                if let Some(c) = literal
                    .chars()
                    .find(|c| matches!(c, '+' | '#') || c.is_control())
                {
                    return Err(bad(format!(
                        "{c:?} is not allowed in an MQTT publish topic"
                    )));
                }
                segments.push(Segment::Literal(literal.to_owned()));
            }
            if after.is_empty() {
                break;
            }
            if after.starts_with('}') {
                return Err(bad("`}` without a matching `{`".to_owned()));
            }
            let Some(close) = after.find('}') else {
                return Err(bad("`{` without a matching `}`".to_owned()));
            };
            let segment = match &after[..=close] {
                "{iccid}" => Segment::Iccid,
                "{imsi}" => Segment::Imsi,
                "{t}" if allow_topic => Segment::Topic,
                "{t}" => {
                    return Err(bad(
                        "`{t}` can only be used in the template for messages with a topic"
                            .to_owned(),
                    ));
                }
                other => {
                    return Err(bad(format!(
                        "unknown placeholder {other} (known: {{iccid}}, {{imsi}}, {{t}})"
                    )));
                }
            };
            segments.push(segment);
            rest = &after[close + 1..];
        }
        if text.starts_with('$') {
            return Err(bad(
                "topics starting with `$` are reserved for the broker".to_owned()
            ));
        }
        let never_empty = segments.iter().any(|segment| match segment {
            Segment::Literal(_) | Segment::Iccid | Segment::Topic => true,
            Segment::Imsi => false,
        });
        if !never_empty {
            return Err(bad(
                "the topic would be empty for a device without an IMSI".to_owned()
            ));
        }
        let literal_len = segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(literal) => literal.len(),
                _ => 0,
            })
            .sum();
        Ok(Template {
            segments,
            literal_len,
        })
    }

    fn render(&self, iccid: &str, imsi: &str, topic: &str) -> String {
        let value_len = |segment: &Segment| match segment {
            Segment::Literal(_) => 0,
            Segment::Iccid => iccid.len(),
            Segment::Imsi => imsi.len(),
            Segment::Topic => topic.len(),
        };
        let capacity = self.literal_len + self.segments.iter().map(value_len).sum::<usize>();
        let mut out = String::with_capacity(capacity);
        for segment in &self.segments {
            out.push_str(match segment {
                Segment::Literal(literal) => literal,
                Segment::Iccid => iccid,
                Segment::Imsi => imsi,
                Segment::Topic => topic,
            });
        }
        out
    }
}

/// Publish-topic templates: `{iccid}/{t}` when the device gave a topic,
/// `{iccid}` otherwise (spec.md §2.3; configurable).
///
/// Placeholders: `{iccid}`, `{imsi}` (empty when the IMSI is unknown) and, in
/// the with-topic template only, `{t}`. Everything else is literal text,
/// which may not contain `{`, `}`, the MQTT wildcards `+` and `#`, NUL or
/// other control characters; a template may not start with `$` (reserved
/// for broker topics like `$SYS`) and may not render empty.
///
/// With the `serde` feature it deserializes from `{ topic = "…",
/// topic_without_t = "…" }`, parsing each template once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "serde_form::Form"))]
pub struct TopicTemplates {
    with_topic: Template,
    without_topic: Template,
}

impl TopicTemplates {
    /// The 1NCE default template for messages with a topic.
    pub const DEFAULT_WITH_TOPIC: &'static str = "{iccid}/{t}";
    /// The 1NCE default template for messages without a topic.
    pub const DEFAULT_WITHOUT_TOPIC: &'static str = "{iccid}";

    /// Validates both templates: only the placeholders `{iccid}`, `{imsi}`
    /// and (in the with-topic one only) `{t}`; the result must be a valid
    /// MQTT publish topic (no `+`, `#`, NUL; non-empty).
    pub fn new(with_topic: &str, without_topic: &str) -> Result<Self, TopicError> {
        Ok(TopicTemplates {
            with_topic: Template::parse(with_topic, true)?,
            without_topic: Template::parse(without_topic, false)?,
        })
    }

    /// The publish topic for a message from device `iccid` (with `imsi` when
    /// known) that carried `topic`, or none. One allocation.
    pub fn render(
        &self,
        iccid: &Iccid,
        imsi: Option<&Imsi>,
        topic: Option<&Topic>,
    ) -> PublishTopic {
        let (iccid, imsi) = (iccid.as_str(), imsi.map_or("", Imsi::as_str));
        // Valid by construction: the templates' literal text was checked,
        // and ICCIDs, IMSIs and topics hold no MQTT wildcard or control
        // character.
        PublishTopic(match topic {
            Some(topic) => self.with_topic.render(iccid, imsi, topic.as_str()),
            None => self.without_topic.render(iccid, imsi, ""),
        })
    }
}

impl Default for TopicTemplates {
    /// [`DEFAULT_WITH_TOPIC`](Self::DEFAULT_WITH_TOPIC) and
    /// [`DEFAULT_WITHOUT_TOPIC`](Self::DEFAULT_WITHOUT_TOPIC), as the 1NCE
    /// Cloud Integrator publishes.
    fn default() -> Self {
        TopicTemplates::new(Self::DEFAULT_WITH_TOPIC, Self::DEFAULT_WITHOUT_TOPIC)
            .expect("the default templates are valid")
    }
}

/// The serde form of [`TopicTemplates`]: `{ topic = "…", topic_without_t =
/// "…" }` (the keys of the server's `[mqtt]` section), each template parsed
/// and validated as it is read, so an error names its key; a missing key
/// keeps its default.
#[cfg(feature = "serde")]
mod serde_form {
    use serde::{Deserialize, Deserializer};

    use super::{Template, TopicTemplates};

    #[derive(Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub(super) struct Form {
        #[serde(deserialize_with = "with_topic")]
        topic: Template,
        #[serde(deserialize_with = "without_topic")]
        topic_without_t: Template,
    }

    impl Default for Form {
        fn default() -> Self {
            let TopicTemplates {
                with_topic,
                without_topic,
            } = TopicTemplates::default();
            Form {
                topic: with_topic,
                topic_without_t: without_topic,
            }
        }
    }

    impl From<Form> for TopicTemplates {
        fn from(form: Form) -> Self {
            TopicTemplates {
                with_topic: form.topic,
                without_topic: form.topic_without_t,
            }
        }
    }

    fn template<'de, D: Deserializer<'de>>(d: D, allow_topic: bool) -> Result<Template, D::Error> {
        let text = String::deserialize(d)?;
        Template::parse(&text, allow_topic).map_err(serde::de::Error::custom)
    }

    fn with_topic<'de, D: Deserializer<'de>>(d: D) -> Result<Template, D::Error> {
        template(d, true)
    }

    fn without_topic<'de, D: Deserializer<'de>>(d: D) -> Result<Template, D::Error> {
        template(d, false)
    }
}
