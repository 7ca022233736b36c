//! `Topic::parse` against a regex oracle, and `extract`'s precedence rule.

use coapgate_topic::{Topic, extract};
use proptest::prelude::*;
use regex::Regex;

/// spec.md §8: ≤ 253 chars, `[A-Za-z0-9_/]`, no `//`.
fn oracle(s: &str) -> bool {
    let allowed = Regex::new("^[A-Za-z0-9_/]{1,253}$").expect("valid regex");
    allowed.is_match(s) && !s.contains("//")
}

/// Strings over the allowed alphabet, slashes frequent enough to make `//`.
fn alphabet_string() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_/]{0,260}"
}

/// A Uri-Query or Location-Query option list: maybe a `t`, maybe other parameters.
fn query_options() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let option = prop_oneof![
        "t=[a-z/]{0,5}".prop_map(String::into_bytes),
        "(tt|x|T)=[a-z]{0,3}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..6),
    ];
    proptest::collection::vec(option, 0..4)
}

/// `extract` over one option kind alone.
fn only(options: &[Vec<u8>]) -> Result<Option<Topic>, coapgate_topic::TopicError> {
    extract(options.iter().map(Vec::as_slice), [])
}

fn has_t(options: &[Vec<u8>]) -> bool {
    options
        .iter()
        .any(|option| option == b"t" || option.starts_with(b"t="))
}

proptest! {
    #[test]
    fn parse_agrees_with_the_regex_oracle_on_arbitrary_strings(s in any::<String>()) {
        prop_assert_eq!(Topic::parse(&s).is_ok(), oracle(&s));
    }

    #[test]
    fn parse_agrees_with_the_regex_oracle_on_the_allowed_alphabet(s in alphabet_string()) {
        prop_assert_eq!(Topic::parse(&s).is_ok(), oracle(&s));
        if let Ok(topic) = Topic::parse(&s) {
            prop_assert_eq!(topic.as_str(), s.as_str());
        }
    }

    #[test]
    fn uri_query_wins_and_location_query_counts_only_without_a_uri_query_t(
        uri in query_options(),
        location in query_options(),
    ) {
        let both = extract(
            uri.iter().map(Vec::as_slice),
            location.iter().map(Vec::as_slice),
        );
        if has_t(&uri) {
            prop_assert_eq!(both, only(&uri));
        } else {
            prop_assert_eq!(both, only(&location));
        }
    }
}
