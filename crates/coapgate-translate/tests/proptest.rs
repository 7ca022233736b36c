//! Properties over generated templates and payloads:
//!
//! - any JSON value, as a template, is accepted or refused without a panic,
//!   and an accepted one translates any payload without a panic;
//! - every structurally valid template (random selectors, constants, nested
//!   switches) is accepted and translates any payload into an object or an
//!   `Asset path:` error;
//! - values written into a payload at random offsets, with random types and
//!   byte orders, read back exactly.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use coapgate_translate::Template;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Words a template is made of, so random objects often look like one.
const WORDS: &[&str] = &[
    "sense",
    "asset",
    "value",
    "custom_type",
    "switch",
    "on",
    "case",
    "default",
    "do",
    "byte",
    "bytelength",
    "endbyte",
    "byteorder",
    "type",
    "signed",
    "int",
    "uint",
    "float",
    "boolean",
    "string",
    "hex",
    "big",
    "little",
    "location_long",
    "location_lat",
    "a",
    "a.b",
    "",
    ".",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(WORDS).prop_map(str::to_owned),
        1 => ".{0,6}",
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-10i64..20).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(json!(u32::MAX)),
        Just(json!(-i64::from(u32::MAX))),
        any::<f64>().prop_map(Value::from),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((word(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..48)
}

/// Translates with whatever parsed, checking the result's shape.
fn translate_any(template: &Template, payload: &[u8]) {
    match template.translate(payload) {
        Ok(translation) => assert!(translation.value.is_object()),
        Err(error) => assert!(error.to_string().starts_with("Asset path:"), "{error}"),
    }
}

/// A valid selector of a random type, range and byte order.
fn selector(allow_float: bool) -> impl Strategy<Value = Value> {
    let kind = if allow_float {
        proptest::sample::select(&["int", "uint", "float", "boolean", "string", "hex"][..])
    } else {
        proptest::sample::select(&["int", "uint", "boolean", "string", "hex"][..])
    };
    (
        kind,
        0u32..12,
        0usize..4,
        -3i64..=0,
        any::<bool>(),
        any::<Option<bool>>(),
    )
        .prop_map(|(kind, byte, pick, endbyte, use_endbyte, little)| {
            let mut selector = json!({"byte": byte, "type": kind});
            let lengths: &[u32] = match kind {
                "int" | "uint" => &[1, 2, 4, 8],
                "float" => &[4, 8],
                "boolean" => &[1],
                _ => &[1, 2, 3, 5],
            };
            if use_endbyte {
                selector["endbyte"] = json!(endbyte);
            } else if kind != "float" && pick == 0 {
                // the default length of 1
            } else {
                selector["bytelength"] = json!(lengths[pick % lengths.len()]);
            }
            if let Some(little) = little {
                selector["byteorder"] = json!(if little { "little" } else { "big" });
            }
            selector
        })
}

/// Asset names that never conflict (no name is a dotted prefix of another).
const ASSETS: &[&str] = &["a", "b", "c", "g.x", "g.y", "h.i.j", "h.k"];

fn asset() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(ASSETS)
}

/// A case value matching a switch's type.
fn case_value(kind: &str, seed: u64) -> Value {
    match kind {
        "boolean" => json!(seed % 2),
        "int" => json!(seed as i64 % 7 - 3),
        "uint" => json!(seed % 5),
        "hex" => json!(["00", "ff", "0a0B", "", "abcdef"][seed as usize % 5]),
        _ => json!(["", "a", "ab", "\u{e9}"][seed as usize % 4]),
    }
}

/// A valid statement; switches nest up to `depth` levels.
fn statement(depth: u32) -> BoxedStrategy<Value> {
    let mapping = (asset(), selector(true))
        .prop_map(|(asset, selector)| json!({"asset": asset, "value": selector}));
    let constant =
        (asset(), ".{0,8}").prop_map(|(asset, text)| json!({"asset": asset, "value": text}));
    let location = (0u32..8).prop_map(|byte| {
        json!({"switch": {"byte": 0, "type": "boolean"}, "on": [{"default": true, "do": [
            {"asset": "lon", "custom_type": "location_long", "value": {"byte": byte, "bytelength": 8, "type": "float"}},
            {"asset": "lat", "custom_type": "location_lat", "value": {"byte": byte + 8, "bytelength": 8, "type": "float", "byteorder": "little"}}
        ]}]})
    });
    if depth == 0 {
        return prop_oneof![mapping, constant, location].boxed();
    }
    let switch = (
        selector(false),
        proptest::collection::vec(
            (
                any::<u64>(),
                proptest::collection::vec(statement(depth - 1), 0..3),
            ),
            0..4,
        ),
        proptest::option::of(proptest::collection::vec(statement(depth - 1), 0..3)),
    )
        .prop_map(|(selector, cases, default)| {
            let kind = selector["type"].as_str().unwrap().to_owned();
            let mut on: Vec<Value> = cases
                .into_iter()
                .map(|(seed, body)| json!({"case": case_value(&kind, seed), "do": body}))
                .collect();
            if let Some(body) = default {
                on.push(json!({"default": true, "do": body}));
            }
            json!({"switch": selector, "on": on})
        });
    prop_oneof![3 => mapping, 1 => constant, 1 => location, 2 => switch].boxed()
}

fn valid_template() -> impl Strategy<Value = Value> {
    proptest::collection::vec(statement(3), 0..8).prop_map(|sense| json!({"sense": sense}))
}

/// One value to write into a payload and read back.
#[derive(Debug, Clone)]
enum Field {
    Int(i64, usize),
    Uint(u64, usize),
    F32(f32),
    F64(f64),
    Boolean(u8),
    Text(String),
    Hex(Vec<u8>),
}

fn field() -> impl Strategy<Value = Field> {
    let width = proptest::sample::select(&[1usize, 2, 4, 8][..]);
    prop_oneof![
        (any::<i64>(), width.clone()).prop_map(|(v, w)| Field::Int(v, w)),
        (any::<u64>(), width).prop_map(|(v, w)| Field::Uint(v, w)),
        any::<u32>().prop_map(|bits| Field::F32(f32::from_bits(bits))),
        prop_oneof![any::<f64>(), any::<u64>().prop_map(f64::from_bits)].prop_map(Field::F64),
        any::<u8>().prop_map(Field::Boolean),
        "\\PC{0,6}".prop_map(Field::Text),
        proptest::collection::vec(any::<u8>(), 0..6).prop_map(Field::Hex),
    ]
}

/// `bytes` in the chosen order: big-endian takes the low `width` bytes of
/// the big-endian form, little-endian the first `width` of the little.
fn ordered(be: [u8; 8], le: [u8; 8], width: usize, little: bool) -> Vec<u8> {
    if little {
        le[..width].to_vec()
    } else {
        be[8 - width..].to_vec()
    }
}

/// Writes `field` at the end of `payload`; returns its selector (without
/// `byte`) and the JSON value it must read back as (`None`: check a float).
fn write(field: &Field, little: bool, payload: &mut Vec<u8>) -> (Value, Value) {
    let order = if little { "little" } else { "big" };
    match field {
        Field::Int(v, w) => {
            payload.extend(ordered(v.to_be_bytes(), v.to_le_bytes(), *w, little));
            let shift = 64 - 8 * *w as u32;
            let expected = (v << shift) >> shift; // sign-extended low bytes
            (
                json!({"bytelength": w, "type": "int", "byteorder": order}),
                json!(expected),
            )
        }
        Field::Uint(v, w) => {
            payload.extend(ordered(v.to_be_bytes(), v.to_le_bytes(), *w, little));
            let expected = if *w == 8 {
                *v
            } else {
                v & ((1u64 << (8 * w)) - 1)
            };
            (
                json!({"bytelength": w, "type": "uint", "byteorder": order}),
                json!(expected),
            )
        }
        Field::F32(v) => {
            payload.extend(if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            });
            (
                json!({"bytelength": 4, "type": "float", "byteorder": order}),
                Value::Null,
            )
        }
        Field::F64(v) => {
            payload.extend(if little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            });
            (
                json!({"bytelength": 8, "type": "float", "byteorder": order}),
                serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number),
            )
        }
        Field::Boolean(b) => {
            payload.push(*b);
            (json!({"type": "boolean"}), json!(*b != 0))
        }
        Field::Text(text) => {
            payload.extend(text.as_bytes());
            (
                json!({"bytelength": text.len().max(1), "type": "string"}),
                json!(text),
            )
        }
        Field::Hex(bytes) => {
            payload.extend(bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            (
                json!({"bytelength": bytes.len().max(1), "type": "hex"}),
                json!(hex),
            )
        }
    }
}

proptest! {
    #[test]
    fn any_json_value_is_accepted_or_refused_without_a_panic(
        template in any_json(),
        payload in payload(),
    ) {
        for candidate in [template.clone(), json!({"sense": template.clone()}), json!({"sense": [template.clone()]}), Value::String(template.to_string())] {
            match Template::parse(&candidate) {
                Ok(parsed) => translate_any(&parsed, &payload),
                Err(error) => prop_assert!(!error.path().is_empty()),
            }
        }
    }

    #[test]
    fn any_text_is_accepted_or_refused_without_a_panic(text in "\\PC{0,64}", payload in payload()) {
        if let Ok(parsed) = Template::parse_str(&text) {
            translate_any(&parsed, &payload);
        }
    }

    #[test]
    fn every_valid_template_is_accepted_and_translates_any_payload(
        template in valid_template(),
        payload in payload(),
    ) {
        let parsed = Template::parse(&template);
        prop_assert!(parsed.is_ok(), "{template}: {:?}", parsed);
        let parsed = parsed.unwrap();
        // The same template as text, and as a string holding the text.
        prop_assert_eq!(&Template::parse_str(&template.to_string()).unwrap(), &parsed);
        prop_assert_eq!(&Template::parse(&Value::String(template.to_string())).unwrap(), &parsed);
        translate_any(&parsed, &payload);
    }

    #[test]
    fn values_written_into_a_payload_read_back(
        fields in proptest::collection::vec((field(), any::<bool>(), 0usize..3), 1..10),
        trailer in proptest::collection::vec(any::<u8>(), 0..4),
        tail in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)),
    ) {
        let mut payload = Vec::new();
        let mut sense = Vec::new();
        let mut expected = Vec::new();
        for (i, (field, little, gap)) in fields.iter().enumerate() {
            payload.extend(std::iter::repeat_n(0xA5, *gap));
            let byte = payload.len();
            let (mut selector, value) = write(field, *little, &mut payload);
            // An empty text or hex still needs a byte to satisfy bytelength ≥ 1.
            if matches!(field, Field::Text(t) if t.is_empty()) || matches!(field, Field::Hex(b) if b.is_empty()) {
                payload.push(b'!');
            }
            selector["byte"] = json!(byte);
            sense.push(json!({"asset": format!("f{i}"), "value": selector}));
            expected.push((format!("f{i}"), field.clone(), value));
        }
        // A last hex field over an endbyte range, up to a random trailer.
        if let Some(tail) = &tail {
            let byte = payload.len();
            payload.extend(tail);
            sense.push(json!({"asset": "tail", "value": {"byte": byte, "endbyte": -(trailer.len() as i64), "type": "hex"}}));
            let hex: String = tail.iter().map(|b| format!("{b:02x}")).collect();
            expected.push(("tail".into(), Field::Hex(tail.clone()), json!(hex)));
        }
        payload.extend(&trailer);

        let template = Template::parse(&json!({"sense": sense})).unwrap();
        let translation = template.translate(&payload).unwrap();
        let output = translation.value.as_object().unwrap();
        let names: Vec<&String> = output.keys().collect();
        let wanted: Vec<&String> = expected.iter().map(|(name, _, _)| name).collect();
        prop_assert_eq!(names, wanted, "keys in statement order");
        for (name, field, value) in &expected {
            let got = &output[name];
            match field {
                Field::F32(v) if v.is_finite() => {
                    // The shortest decimal that reads back to the same f32.
                    let back = got.as_f64().unwrap() as f32;
                    prop_assert_eq!(back.to_bits(), v.to_bits(), "{}: {} for {:?}", name, got, v);
                    let text = got.to_string();
                    let mantissa: String = text.chars().take_while(|c| *c != 'e' && *c != 'E').filter(char::is_ascii_digit).collect();
                    let significant = mantissa.trim_start_matches('0').trim_end_matches('0').len();
                    prop_assert!(significant <= 9, "{}: {} has more than 9 significant digits", name, text);
                }
                Field::F32(_) => prop_assert_eq!(got, &Value::Null),
                Field::Text(text) if text.is_empty() => prop_assert_eq!(got, &json!("!")),
                Field::Hex(bytes) if bytes.is_empty() && name != "tail" => prop_assert_eq!(got, &json!("21")),
                _ => prop_assert_eq!(got, value, "{}", name),
            }
        }
    }
}
