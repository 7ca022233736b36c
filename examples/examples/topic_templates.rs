//! Device topics and publish-topic templates with `coapgate_topic`: which
//! `t` values are valid, how `t` is found among query options, and how
//! operator templates turn ICCID, IMSI and topic into the MQTT topic.
//!
//! `cargo run -p coapgate-examples --example topic_templates`

use coapgate_topic::{Topic, TopicError, TopicTemplates, extract};

const ICCID: &str = "8988280666000000000";
const IMSI: &str = "901405100000000";

fn main() {
    // Validation: 1 to 253 characters of A-Z a-z 0-9 _ /, no `//`.
    for text in ["sensors/temp", "a_b/C9", "", "temp-1", "a//b", "x/+/y"] {
        match Topic::parse(text) {
            Ok(topic) => println!("{text:?}: valid ({topic})"),
            Err(error) => println!("{text:?}: {error}"),
        }
    }
    assert!(Topic::parse("sensors/temp").is_ok());
    assert_eq!(Topic::parse("temp-1"), Err(TopicError::BadCharacter('-')));
    assert_eq!(Topic::parse("a//b"), Err(TopicError::DoubleSlash));

    // Extraction: `t` from the Uri-Query options, other parameters ignored;
    // Location-Query only when Uri-Query has no `t`.
    let uri_query: [&[u8]; 2] = [b"unit=c", b"t=sensors/temp"];
    let topic = extract(uri_query, [])
        .expect("a valid `t`")
        .expect("a `t` is present");
    assert_eq!(topic.as_str(), "sensors/temp");
    let location_query: [&[u8]; 1] = [b"t=fallback"];
    let fallback = extract([], location_query).expect("valid");
    assert_eq!(fallback.as_ref().map(Topic::as_str), Some("fallback"));
    assert_eq!(
        extract([b"t=a".as_slice(), b"t=b"], []),
        Err(TopicError::DuplicateT)
    );

    // Templates: the defaults publish like the 1NCE Cloud Integrator ...
    let (iccid, imsi) = (
        ICCID.parse().expect("a valid ICCID"),
        IMSI.parse().expect("a valid IMSI"),
    );
    let default = TopicTemplates::default();
    assert_eq!(
        default.render(&iccid, None, Some(&topic)),
        format!("{ICCID}/sensors/temp")
    );
    assert_eq!(default.render(&iccid, None, None), ICCID);

    // ... and an operator can choose others.
    let custom = TopicTemplates::new("fleet/{imsi}/{iccid}/{t}", "fleet/{imsi}/{iccid}")
        .expect("valid templates");
    let with_topic = custom.render(&iccid, Some(&imsi), Some(&topic));
    let without = custom.render(&iccid, None, None);
    println!("with topic:    {with_topic}");
    println!("without topic: {without}");
    assert_eq!(with_topic, format!("fleet/{IMSI}/{ICCID}/sensors/temp"));
    assert_eq!(
        without,
        format!("fleet//{ICCID}"),
        "{{imsi}} is empty when unknown"
    );

    // Templates that could never be a valid MQTT publish topic are refused.
    for (with_topic, without_topic) in [
        ("fleet/+/{t}", "fleet"),       // MQTT wildcard
        ("$SYS/{iccid}/{t}", "x"),      // reserved for the broker
        ("{iccid}/{t}", "{iccid}/{t}"), // no topic to put there
        ("{iccid}/{topic}", "x"),       // unknown placeholder
        ("{iccid}/{t}", "{imsi}"),      // empty for a device without IMSI
    ] {
        let error =
            TopicTemplates::new(with_topic, without_topic).expect_err("an invalid template pair");
        println!("refused: {error}");
        assert!(matches!(error, TopicError::BadTemplate { .. }));
    }
}
