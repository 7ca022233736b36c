//! spec.md §2.2 (the topic `t`) and §2.3 (publish topics), rule by rule.

use coapgate_topic::{Topic, TopicError, TopicTemplates, extract};

/// `extract` with only Uri-Query options.
fn from_uri_query(options: &[&[u8]]) -> Result<Option<Topic>, TopicError> {
    extract(options.iter().copied(), [])
}

fn topic(s: &str) -> Topic {
    Topic::parse(s).expect("valid topic")
}

// ---- where `t` comes from ---------------------------------------------------

#[test]
fn t_is_taken_from_a_uri_query_option() {
    assert_eq!(from_uri_query(&[b"t=test"]), Ok(Some(topic("test"))));
}

#[test]
fn t_is_taken_from_a_location_query_option_for_firmware_that_sends_it_there() {
    let location: [&[u8]; 1] = [b"t=test"];
    assert_eq!(extract([], location), Ok(Some(topic("test"))));
}

#[test]
fn no_t_anywhere_means_no_topic() {
    assert_eq!(extract([], []), Ok(None));
    let uri: [&[u8]; 2] = [b"x=2", b"tt=1"];
    let location: [&[u8]; 1] = [b"y=3"];
    assert_eq!(extract(uri, location), Ok(None));
}

#[test]
fn t_in_both_uri_query_and_location_query_uri_query_wins() {
    let uri: [&[u8]; 1] = [b"t=from_uri"];
    let location: [&[u8]; 1] = [b"t=from_location"];
    assert_eq!(extract(uri, location), Ok(Some(topic("from_uri"))));
}

#[test]
fn location_query_is_not_consulted_when_uri_query_has_a_t() {
    // Even a broken Location-Query is irrelevant then.
    let uri: [&[u8]; 1] = [b"t=ok"];
    let location: [&[u8]; 2] = [b"t=a", b"t=b//"];
    assert_eq!(extract(uri, location), Ok(Some(topic("ok"))));
}

#[test]
fn a_bad_t_in_uri_query_does_not_fall_back_to_location_query() {
    let uri: [&[u8]; 1] = [b"t=bad-topic"];
    let location: [&[u8]; 1] = [b"t=good"];
    assert_eq!(extract(uri, location), Err(TopicError::BadCharacter('-')));
}

#[test]
fn more_than_one_t_in_uri_query_is_refused() {
    assert_eq!(
        from_uri_query(&[b"t=a", b"t=a"]),
        Err(TopicError::DuplicateT)
    );
    assert_eq!(
        from_uri_query(&[b"t=a", b"x=1", b"t="]),
        Err(TopicError::DuplicateT)
    );
}

#[test]
fn more_than_one_t_in_location_query_is_refused() {
    let location: [&[u8]; 2] = [b"t=a", b"t=b"];
    assert_eq!(extract([], location), Err(TopicError::DuplicateT));
}

#[test]
fn one_t_in_each_option_kind_is_not_a_duplicate() {
    let uri: [&[u8]; 1] = [b"t=a"];
    let location: [&[u8]; 1] = [b"t=b"];
    assert_eq!(extract(uri, location), Ok(Some(topic("a"))));
}

#[test]
fn other_query_parameters_are_ignored() {
    assert_eq!(
        from_uri_query(&[
            b"tt=1",
            b"x=2",
            b"T=upper",
            b"",
            b"=t",
            b"\xff\xfe",
            b"t=ok"
        ]),
        Ok(Some(topic("ok")))
    );
}

// ---- what `t` may contain ---------------------------------------------------

#[test]
fn an_empty_t_is_refused() {
    assert_eq!(from_uri_query(&[b"t="]), Err(TopicError::Empty));
}

#[test]
fn a_bare_t_without_equals_is_refused() {
    assert_eq!(from_uri_query(&[b"t"]), Err(TopicError::NoValue));
}

#[test]
fn letters_digits_underscore_and_slash_are_allowed() {
    let all = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_/";
    assert_eq!(Topic::parse(all).map(String::from), Ok(all.to_owned()));
    assert!(Topic::parse("/leading/and/trailing/").is_ok());
}

#[test]
fn any_other_character_is_refused_and_named() {
    for (text, bad) in [
        ("a b", ' '),
        ("a-b", '-'),
        ("a.b", '.'),
        ("a+b", '+'),
        ("a#", '#'),
        ("a=b", '='),
        ("a\0", '\0'),
        ("grüße", 'ü'),
    ] {
        assert_eq!(
            Topic::parse(text),
            Err(TopicError::BadCharacter(bad)),
            "{text:?}"
        );
    }
}

#[test]
fn two_slashes_in_a_row_are_refused() {
    for text in ["a//b", "//", "a///b", "//a"] {
        assert_eq!(Topic::parse(text), Err(TopicError::DoubleSlash), "{text:?}");
    }
}

#[test]
fn a_topic_is_at_most_253_characters() {
    assert!(Topic::parse(&"a".repeat(253)).is_ok());
    assert_eq!(
        Topic::parse(&"a".repeat(254)),
        Err(TopicError::TooLong(254))
    );
}

#[test]
fn a_t_option_longer_than_rfc_7252s_255_bytes_is_refused_as_too_long() {
    let option = [b"t=".as_slice(), &[b'a'; 300]].concat();
    assert_eq!(from_uri_query(&[&option]), Err(TopicError::TooLong(300)));
}

#[test]
fn a_t_that_is_not_utf8_is_refused() {
    assert_eq!(from_uri_query(&[b"t=\xff"]), Err(TopicError::NotUtf8));
}

#[test]
fn a_topic_converts_like_a_string() {
    let parsed: Topic = "a/b".parse().expect("valid");
    assert_eq!(parsed.to_string(), "a/b");
    assert_eq!(parsed.as_ref(), "a/b");
    assert_eq!(Topic::try_from("a/b"), Ok(parsed.clone()));
    assert_eq!(Topic::try_from(String::from("a/b")), Ok(parsed));
    assert_eq!(
        Topic::try_from(String::from("a b")),
        Err(TopicError::BadCharacter(' '))
    );
}

// ---- publish topics (§2.3) ----------------------------------------------------

const ICCID: &str = "8988280666000000000";

fn iccid() -> coapgate_model::Iccid {
    ICCID.parse().expect("an ICCID")
}

fn imsi() -> coapgate_model::Imsi {
    "901405100000000".parse().expect("an IMSI")
}

#[test]
fn events_have_fixed_topics_under_the_iccid() {
    use coapgate_topic::{Event, PublishTopic};
    for (event, topic) in [
        (Event::Error, "8988280666000000000/error"),
        (Event::Location, "8988280666000000000/location"),
        (Event::Lifecycle, "8988280666000000000/lifecycle"),
    ] {
        assert_eq!(PublishTopic::event(&iccid(), event), topic);
    }
}

#[test]
fn by_default_the_topic_is_iccid_slash_t_when_given() {
    let templates = TopicTemplates::default();
    assert_eq!(
        templates.render(&iccid(), Some(&imsi()), Some(&topic("test"))),
        "8988280666000000000/test"
    );
}

#[test]
fn by_default_the_topic_is_the_iccid_when_no_t_was_given() {
    assert_eq!(
        TopicTemplates::default().render(&iccid(), None, None),
        ICCID
    );
}

#[test]
fn the_default_templates_are_the_documented_ones() {
    assert_eq!(
        TopicTemplates::new(
            TopicTemplates::DEFAULT_WITH_TOPIC,
            TopicTemplates::DEFAULT_WITHOUT_TOPIC
        ),
        Ok(TopicTemplates::default())
    );
}

#[test]
fn templates_can_use_iccid_imsi_and_t() {
    let templates =
        TopicTemplates::new("devices/{imsi}/{iccid}/{t}", "devices/{imsi}/{iccid}").expect("valid");
    let t = topic("a/b");
    assert_eq!(
        templates.render(&iccid(), Some(&imsi()), Some(&t)),
        "devices/901405100000000/8988280666000000000/a/b"
    );
    assert_eq!(
        templates.render(&iccid(), None, None),
        "devices//8988280666000000000"
    );
}

fn template_error(with_topic: &str, without_topic: &str) -> String {
    match TopicTemplates::new(with_topic, without_topic) {
        Err(TopicError::BadTemplate { reason, .. }) => reason,
        other => panic!("expected a bad template, got {other:?}"),
    }
}

#[test]
fn t_is_not_allowed_in_the_template_for_messages_without_topic() {
    assert!(template_error("{iccid}/{t}", "{iccid}/{t}").contains("{t}"));
}

#[test]
fn unknown_placeholders_are_refused() {
    assert!(template_error("{iccid}/{topic}", "{iccid}").contains("unknown placeholder {topic}"));
    assert!(template_error("{ICCID}", "{iccid}").contains("unknown placeholder"));
}

#[test]
fn unbalanced_braces_are_refused() {
    assert!(template_error("{iccid", "{iccid}").contains("without a matching `}`"));
    assert!(template_error("iccid}", "{iccid}").contains("without a matching `{`"));
}

#[test]
fn mqtt_wildcards_and_nul_are_refused() {
    for bad in ["+/{iccid}", "{iccid}/#", "{iccid}\0", "{iccid}\n"] {
        assert!(
            template_error(bad, "{iccid}").contains("not allowed"),
            "{bad:?}"
        );
    }
}

#[test]
fn broker_topics_starting_with_dollar_are_refused() {
    assert!(template_error("{iccid}/{t}", "$SYS/{iccid}").contains("reserved"));
}

#[test]
fn a_template_that_can_render_empty_is_refused() {
    assert!(template_error("{iccid}/{t}", "").contains("empty"));
    assert!(template_error("{iccid}/{t}", "{imsi}").contains("empty"));
}

#[test]
fn a_bad_template_error_names_the_template() {
    assert_eq!(
        TopicTemplates::new("{x}", "{iccid}").map_err(|error| error.to_string()),
        Err(
            "bad topic template \"{x}\": unknown placeholder {x} (known: {iccid}, {imsi}, {t})"
                .to_owned()
        )
    );
}
