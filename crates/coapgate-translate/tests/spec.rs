//! The template language as spec.md §5 and 1NCE's public Energy Saver
//! documentation describe it, one behaviour per test. Outputs are compared
//! as serialized text, so key order is checked too.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use coapgate_translate::{Coordinates, Template, TranslateError};
use serde_json::{Value, json};

fn bytes(hex: &str) -> Vec<u8> {
    let hex: String = hex.split_whitespace().collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Translates the hex payload with the template text: the output's JSON
/// text, or the error event's text.
fn run(template: &str, payload: &str) -> Result<String, String> {
    let template = Template::parse_str(template).unwrap();
    template
        .translate(&bytes(payload))
        .map(|t| t.value.to_string())
        .map_err(|e| e.to_string())
}

/// A one-statement template reading `selector` into asset `v`.
fn one(selector: Value) -> String {
    json!({"sense": [{"asset": "v", "value": selector}]}).to_string()
}

/// 1NCE's "Features & Limitations" example, as written there (with
/// `"signed": true`, which is accepted and ignored).
const TEMPERATURE_HUMIDITY_SWITCH: &str = r#"{
    "sense": [
        {"asset": "Temperature", "value": {"byte": 0, "bytelength": 2, "type": "int", "signed": true}},
        {"asset": "Humidity", "value": {"byte": 2, "bytelength": 2, "type": "int"}},
        {"asset": "Switch", "value": {"byte": 4, "type": "boolean"}}
    ]
}"#;

#[test]
fn the_1nce_example_translates_in_statement_order() {
    assert_eq!(
        run(TEMPERATURE_HUMIDITY_SWITCH, "00 1A 00 37 00").unwrap(),
        r#"{"Temperature":26,"Humidity":55,"Switch":false}"#
    );
}

#[test]
fn a_payload_too_short_names_the_asset_and_the_range_it_wanted() {
    assert_eq!(
        run(TEMPERATURE_HUMIDITY_SWITCH, "00 1A").unwrap_err(),
        "Asset path:Humidity, Error: can't extract [2:4] from 2 bytes"
    );
    let template = Template::parse_str(TEMPERATURE_HUMIDITY_SWITCH).unwrap();
    assert_eq!(
        template.translate(&[0x00, 0x1A]).unwrap_err(),
        TranslateError::OutOfRange {
            asset: "Humidity".into(),
            start: 2,
            end: 4,
            len: 2
        }
    );
    // The first byte missing for a 1-byte value: [4:5].
    assert_eq!(
        run(TEMPERATURE_HUMIDITY_SWITCH, "00 1A 00 37").unwrap_err(),
        "Asset path:Switch, Error: can't extract [4:5] from 4 bytes"
    );
    // An empty payload.
    assert_eq!(
        run(TEMPERATURE_HUMIDITY_SWITCH, "").unwrap_err(),
        "Asset path:Temperature, Error: can't extract [0:2] from 0 bytes"
    );
}

#[test]
fn extra_payload_bytes_are_ignored() {
    assert_eq!(
        run(TEMPERATURE_HUMIDITY_SWITCH, "00 1A 00 37 01 FF FF").unwrap(),
        r#"{"Temperature":26,"Humidity":55,"Switch":true}"#
    );
}

#[test]
fn the_template_may_come_as_a_string_holding_json_as_1nce_sends_it() {
    let as_string = Value::String(TEMPERATURE_HUMIDITY_SWITCH.to_owned());
    let as_object: Value = serde_json::from_str(TEMPERATURE_HUMIDITY_SWITCH).unwrap();
    let from_string = Template::parse(&as_string).unwrap();
    assert_eq!(from_string, Template::parse(&as_object).unwrap());
    // And as text that is itself a JSON string (double-encoded).
    let double = serde_json::to_string(&as_string).unwrap();
    assert_eq!(Template::parse_str(&double).unwrap(), from_string);
    assert_eq!(
        from_string
            .translate(&bytes("001a003700"))
            .unwrap()
            .value
            .to_string(),
        r#"{"Temperature":26,"Humidity":55,"Switch":false}"#
    );
}

#[test]
fn a_four_byte_float_prints_in_its_shortest_float32_form() {
    let template = one(json!({"byte": 0, "bytelength": 4, "type": "float"}));
    assert_eq!(run(&template, "424bbcf9").unwrap(), r#"{"v":50.934544}"#);
    let little = one(json!({"byte": 0, "bytelength": 4, "type": "float", "byteorder": "little"}));
    assert_eq!(run(&little, "f9bc4b42").unwrap(), r#"{"v":50.934544}"#);
    assert_eq!(run(&template, "3dcccccd").unwrap(), r#"{"v":0.1}"#);
    assert_eq!(run(&template, "c0490fdb").unwrap(), r#"{"v":-3.1415927}"#);
}

#[test]
fn an_eight_byte_float_prints_exactly() {
    let template = one(json!({"byte": 0, "bytelength": 8, "type": "float"}));
    assert_eq!(
        run(&template, &hex(&13.404954f64.to_be_bytes())).unwrap(),
        r#"{"v":13.404954}"#
    );
    assert_eq!(
        run(&template, &hex(&0.1f64.to_be_bytes())).unwrap(),
        r#"{"v":0.1}"#
    );
}

#[test]
fn nan_and_infinity_become_null() {
    let f32_template = one(json!({"byte": 0, "bytelength": 4, "type": "float"}));
    assert_eq!(run(&f32_template, "7fc00000").unwrap(), r#"{"v":null}"#);
    assert_eq!(run(&f32_template, "ff800000").unwrap(), r#"{"v":null}"#);
    let f64_template = one(json!({"byte": 0, "bytelength": 8, "type": "float"}));
    assert_eq!(
        run(&f64_template, "7ff0000000000000").unwrap(),
        r#"{"v":null}"#
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn integers_are_big_endian_by_default_and_little_endian_on_request() {
    let big = one(json!({"byte": 0, "bytelength": 4, "type": "uint"}));
    let little = one(json!({"byte": 0, "bytelength": 4, "type": "uint", "byteorder": "little"}));
    assert_eq!(run(&big, "01020304").unwrap(), r#"{"v":16909060}"#);
    assert_eq!(run(&little, "01020304").unwrap(), r#"{"v":67305985}"#);
    let little16 = one(json!({"byte": 1, "bytelength": 2, "type": "int", "byteorder": "little"}));
    assert_eq!(run(&little16, "00 1A 00").unwrap(), r#"{"v":26}"#);
    assert_eq!(run(&little16, "00 FE FF").unwrap(), r#"{"v":-2}"#);
}

#[test]
fn int_is_twos_complement_signed_and_uint_is_not() {
    for (bytelength, payload, int, uint) in [
        (1, "ff", "-1", "255"),
        (1, "80", "-128", "128"),
        (2, "fffe", "-2", "65534"),
        (4, "80000000", "-2147483648", "2147483648"),
        (
            8,
            "8000000000000000",
            "-9223372036854775808",
            "9223372036854775808",
        ),
        (
            8,
            "7fffffffffffffff",
            "9223372036854775807",
            "9223372036854775807",
        ),
    ] {
        let signed = one(json!({"byte": 0, "bytelength": bytelength, "type": "int"}));
        let unsigned = one(json!({"byte": 0, "bytelength": bytelength, "type": "uint"}));
        assert_eq!(run(&signed, payload).unwrap(), format!(r#"{{"v":{int}}}"#));
        assert_eq!(
            run(&unsigned, payload).unwrap(),
            format!(r#"{{"v":{uint}}}"#)
        );
    }
    // `signed` is accepted and changes nothing.
    let uint_signed = one(json!({"byte": 0, "type": "uint", "signed": true}));
    assert_eq!(run(&uint_signed, "ff").unwrap(), r#"{"v":255}"#);
    let int_unsigned = one(json!({"byte": 0, "type": "int", "signed": false}));
    assert_eq!(run(&int_unsigned, "ff").unwrap(), r#"{"v":-1}"#);
}

#[test]
fn integers_beyond_2_pow_53_are_printed_exactly() {
    let template = one(json!({"byte": 0, "bytelength": 8, "type": "uint"}));
    // 2^53 + 1 is the first integer an f64 cannot hold.
    assert_eq!(
        run(&template, "0020000000000001").unwrap(),
        r#"{"v":9007199254740993}"#
    );
    assert_eq!(
        run(&template, "ffffffffffffffff").unwrap(),
        r#"{"v":18446744073709551615}"#
    );
    let signed = one(json!({"byte": 0, "bytelength": 8, "type": "int"}));
    assert_eq!(
        run(&signed, "ffdfffffffffffff").unwrap(),
        r#"{"v":-9007199254740993}"#
    );
}

#[test]
fn boolean_is_false_for_zero_and_true_for_anything_else() {
    let template = one(json!({"byte": 0, "type": "boolean"}));
    assert_eq!(run(&template, "00").unwrap(), r#"{"v":false}"#);
    assert_eq!(run(&template, "01").unwrap(), r#"{"v":true}"#);
    assert_eq!(run(&template, "ff").unwrap(), r#"{"v":true}"#);
}

#[test]
fn string_is_utf8_and_invalid_utf8_is_an_error() {
    let template = one(json!({"byte": 1, "bytelength": 5, "type": "string"}));
    assert_eq!(
        run(&template, &format!("00{}", hex("héllo".as_bytes()))).unwrap(),
        r#"{"v":"héll"}"#
    );
    assert_eq!(
        run(&template, "00 68 c3 28 6c 6f").unwrap_err(),
        "Asset path:v, Error: [1:6] is not valid UTF-8"
    );
    // NUL bytes are kept (JSON escapes them).
    let nul = one(json!({"byte": 0, "bytelength": 2, "type": "string"}));
    assert_eq!(run(&nul, "4100").unwrap(), r#"{"v":"A\u0000"}"#);
}

#[test]
fn hex_is_lowercase_without_separators() {
    let template = one(json!({"byte": 1, "bytelength": 3, "type": "hex"}));
    assert_eq!(
        run(&template, "00 AB CD EF 99").unwrap(),
        r#"{"v":"abcdef"}"#
    );
}

#[test]
fn byte_0_endbyte_0_is_the_whole_payload() {
    let template = one(json!({"byte": 0, "endbyte": 0, "type": "hex"}));
    assert_eq!(
        run(&template, "DEADBEEF01").unwrap(),
        r#"{"v":"deadbeef01"}"#
    );
    assert_eq!(run(&template, "").unwrap(), r#"{"v":""}"#);
    let text = one(json!({"byte": 0, "endbyte": 0, "type": "string"}));
    assert_eq!(run(&text, &hex(b"hello")).unwrap(), r#"{"v":"hello"}"#);
}

#[test]
fn endbyte_counts_back_from_the_end() {
    // Skip a 1-byte header and a 2-byte trailer.
    let template = one(json!({"byte": 1, "endbyte": -2, "type": "string"}));
    assert_eq!(
        run(&template, &format!("01{}ffff", hex(b"name"))).unwrap(),
        r#"{"v":"name"}"#
    );
    // A range that ends before it starts, as absolute offsets.
    assert_eq!(
        run(&template, "0102").unwrap_err(),
        "Asset path:v, Error: can't extract [1:0] from 2 bytes"
    );
    assert_eq!(
        run(&template, "01").unwrap_err(),
        "Asset path:v, Error: can't extract [1:-1] from 1 bytes"
    );
    // A number over an endbyte range: the range must have the type's length.
    let int = one(json!({"byte": 1, "endbyte": -1, "type": "int"}));
    assert_eq!(run(&int, "00 FF FE 00").unwrap(), r#"{"v":-2}"#);
    assert_eq!(
        run(&int, "00 FF FE FD 00").unwrap_err(),
        "Asset path:v, Error: [1:4] is 3 bytes, not valid for int (1, 2, 4 or 8)"
    );
    let boolean = one(json!({"byte": 0, "endbyte": 0, "type": "boolean"}));
    assert_eq!(
        run(&boolean, "").unwrap_err(),
        "Asset path:v, Error: [0:0] is 0 bytes, not valid for boolean (1)"
    );
    let float = one(json!({"byte": 0, "endbyte": 0, "type": "float"}));
    assert_eq!(run(&float, "424bbcf9").unwrap(), r#"{"v":50.934544}"#);
}

/// 1NCE's "Deep JSON" template-tester example.
#[test]
fn dots_in_asset_names_build_nested_objects() {
    let template = r#"{"sense": [
        {"asset": "car.running", "value": {"byte": 0, "type": "boolean"}},
        {"asset": "car.fuel", "value": {"byte": 1, "bytelength": 4, "type": "uint"}},
        {"asset": "car.driver", "value": {"byte": 5, "bytelength": 4, "type": "string"}}
    ]}"#;
    assert_eq!(
        run(template, &format!("01 0000002a {}", hex(b"Anna"))).unwrap(),
        r#"{"car":{"running":true,"fuel":42,"driver":"Anna"}}"#
    );
}

#[test]
fn nested_objects_merge_and_keep_first_write_order() {
    let template = r#"{"sense": [
        {"asset": "a.x", "value": {"byte": 0, "type": "uint"}},
        {"asset": "b", "value": {"byte": 1, "type": "uint"}},
        {"asset": "a.y.z", "value": {"byte": 2, "type": "uint"}},
        {"asset": "b", "value": "overwritten"}
    ]}"#;
    assert_eq!(
        run(template, "010203").unwrap(),
        r#"{"a":{"x":1,"y":{"z":3}},"b":"overwritten"}"#
    );
}

#[test]
fn a_constant_writes_its_string() {
    let template = r#"{"sense": [
        {"asset": "model", "value": "sensor-v2"},
        {"asset": "t", "value": {"byte": 0, "type": "int"}}
    ]}"#;
    assert_eq!(
        run(template, "05").unwrap(),
        r#"{"model":"sensor-v2","t":5}"#
    );
    // Constants need no payload.
    let only = r#"{"sense": [{"asset": "k", "value": "v"}]}"#;
    assert_eq!(run(only, "").unwrap(), r#"{"k":"v"}"#);
}

#[test]
fn an_empty_sense_list_gives_an_empty_object() {
    assert_eq!(run(r#"{"sense": []}"#, "0102").unwrap(), "{}");
}

/// A message-type byte picks the layout of the rest, with a default.
const TYPED: &str = r#"{"sense": [
    {"switch": {"byte": 0, "type": "uint"}, "on": [
        {"case": 1, "do": [
            {"asset": "kind", "value": "temperature"},
            {"asset": "celsius", "value": {"byte": 1, "bytelength": 2, "type": "int"}}
        ]},
        {"case": 2, "do": [
            {"asset": "kind", "value": "position"},
            {"asset": "fix", "value": {"byte": 1, "type": "boolean"}}
        ]},
        {"default": true, "do": [
            {"asset": "kind", "value": "unknown"},
            {"asset": "raw", "value": {"byte": 0, "endbyte": 0, "type": "hex"}}
        ]}
    ]},
    {"asset": "battery", "value": {"byte": 0, "endbyte": 0, "type": "hex"}}
]}"#;

#[test]
fn a_switch_runs_the_matching_case() {
    assert_eq!(
        run(TYPED, "01 FFF6").unwrap(),
        r#"{"kind":"temperature","celsius":-10,"battery":"01fff6"}"#
    );
    assert_eq!(
        run(TYPED, "02 01").unwrap(),
        r#"{"kind":"position","fix":true,"battery":"0201"}"#
    );
}

#[test]
fn a_switch_runs_the_default_when_no_case_matches() {
    assert_eq!(
        run(TYPED, "07 AA").unwrap(),
        r#"{"kind":"unknown","raw":"07aa","battery":"07aa"}"#
    );
}

#[test]
fn only_the_branch_that_runs_is_checked_against_the_payload() {
    // Case 1 wants bytes [1:3]; a type-2 message of 2 bytes never reads them.
    assert!(run(TYPED, "02 00").is_ok());
    assert_eq!(
        run(TYPED, "01 00").unwrap_err(),
        "Asset path:celsius, Error: can't extract [1:3] from 2 bytes"
    );
}

#[test]
fn a_switch_that_cannot_read_its_selector_names_its_template_path() {
    assert_eq!(
        run(TYPED, "").unwrap_err(),
        "Asset path:sense[0].switch, Error: can't extract [0:1] from 0 bytes"
    );
}

#[test]
fn the_first_matching_case_wins_and_the_default_may_come_first() {
    let template = r#"{"sense": [{"switch": {"byte": 0, "type": "uint"}, "on": [
        {"default": true, "do": [{"asset": "which", "value": "default"}]},
        {"case": 3, "do": [{"asset": "which", "value": "first"}]},
        {"case": 3, "do": [{"asset": "which", "value": "second"}]}
    ]}]}"#;
    assert_eq!(run(template, "03").unwrap(), r#"{"which":"first"}"#);
    assert_eq!(run(template, "04").unwrap(), r#"{"which":"default"}"#);
}

#[test]
fn a_switch_without_a_match_or_default_writes_nothing() {
    let template = r#"{"sense": [
        {"switch": {"byte": 0, "type": "uint"}, "on": [{"case": 1, "do": [{"asset": "a", "value": "x"}]}]},
        {"asset": "b", "value": "y"}
    ]}"#;
    assert_eq!(run(template, "02").unwrap(), r#"{"b":"y"}"#);
}

#[test]
fn integer_cases_match_int_uint_and_boolean_values() {
    let int = r#"{"sense": [{"switch": {"byte": 0, "bytelength": 2, "type": "int"}, "on": [
        {"case": -2, "do": [{"asset": "m", "value": "minus two"}]},
        {"case": 65534, "do": [{"asset": "m", "value": "never: int reads -2"}]}
    ]}]}"#;
    assert_eq!(run(int, "fffe").unwrap(), r#"{"m":"minus two"}"#);
    let uint = r#"{"sense": [{"switch": {"byte": 0, "bytelength": 8, "type": "uint"}, "on": [
        {"case": 18446744073709551615, "do": [{"asset": "m", "value": "max"}]}
    ]}]}"#;
    assert_eq!(run(uint, "ffffffffffffffff").unwrap(), r#"{"m":"max"}"#);
    let boolean = r#"{"sense": [{"switch": {"byte": 0, "type": "boolean"}, "on": [
        {"case": 1, "do": [{"asset": "m", "value": "on"}]},
        {"case": 0, "do": [{"asset": "m", "value": "off"}]}
    ]}]}"#;
    assert_eq!(run(boolean, "07").unwrap(), r#"{"m":"on"}"#);
    assert_eq!(run(boolean, "00").unwrap(), r#"{"m":"off"}"#);
}

#[test]
fn string_cases_match_string_and_hex_values() {
    let string = r#"{"sense": [{"switch": {"byte": 0, "bytelength": 3, "type": "string"}, "on": [
        {"case": "abc", "do": [{"asset": "m", "value": "letters"}]},
        {"case": "ABC", "do": [{"asset": "m", "value": "capitals"}]}
    ]}]}"#;
    assert_eq!(run(string, &hex(b"abc")).unwrap(), r#"{"m":"letters"}"#);
    assert_eq!(run(string, &hex(b"ABC")).unwrap(), r#"{"m":"capitals"}"#);
    // Hex cases are compared without regard to letter case.
    let hex_switch = r#"{"sense": [{"switch": {"byte": 0, "bytelength": 2, "type": "hex"}, "on": [
        {"case": "CAFE", "do": [{"asset": "m", "value": "cafe"}]}
    ]}]}"#;
    assert_eq!(run(hex_switch, "cafe").unwrap(), r#"{"m":"cafe"}"#);
}

#[test]
fn switches_nest() {
    let template = r#"{"sense": [{"switch": {"byte": 0, "type": "uint"}, "on": [
        {"case": 1, "do": [
            {"switch": {"byte": 1, "type": "uint"}, "on": [
                {"case": 2, "do": [{"asset": "path", "value": "1/2"}]},
                {"default": true, "do": [{"asset": "path", "value": "1/*"}]}
            ]}
        ]}
    ]}]}"#;
    assert_eq!(run(template, "0102").unwrap(), r#"{"path":"1/2"}"#);
    assert_eq!(run(template, "0109").unwrap(), r#"{"path":"1/*"}"#);
    assert_eq!(run(template, "0209").unwrap(), "{}");
}

/// 1NCE's "Location template" template-tester example: little-endian
/// float64 longitude and latitude.
const LOCATION: &str = r#"{"sense": [
    {"asset": "longitude", "custom_type": "location_long",
     "value": {"byte": 0, "bytelength": 8, "type": "float", "byteorder": "little"}},
    {"asset": "latitude", "custom_type": "location_lat",
     "value": {"byte": 8, "bytelength": 8, "type": "float", "byteorder": "little"}}
]}"#;

fn location_payload(longitude: f64, latitude: f64) -> Vec<u8> {
    [longitude.to_le_bytes(), latitude.to_le_bytes()].concat()
}

#[test]
fn the_location_pair_yields_a_position() {
    let template = Template::parse_str(LOCATION).unwrap();
    let translation = template
        .translate(&location_payload(13.404954, 52.520008))
        .unwrap();
    assert_eq!(
        translation.value.to_string(),
        r#"{"longitude":13.404954,"latitude":52.520008}"#
    );
    assert_eq!(
        translation.location,
        Some(Coordinates {
            longitude: 13.404954,
            latitude: 52.520008
        })
    );
}

#[test]
fn a_position_out_of_range_or_not_finite_is_no_position() {
    let template = Template::parse_str(LOCATION).unwrap();
    for (longitude, latitude) in [
        (181.0, 0.0),
        (0.0, -90.5),
        (f64::NAN, 0.0),
        (0.0, f64::INFINITY),
    ] {
        let translation = template
            .translate(&location_payload(longitude, latitude))
            .unwrap();
        assert_eq!(translation.location, None, "{longitude} {latitude}");
    }
    let edge = template.translate(&location_payload(-180.0, 90.0)).unwrap();
    assert_eq!(
        edge.location,
        Some(Coordinates {
            longitude: -180.0,
            latitude: 90.0
        })
    );
}

#[test]
fn a_position_needs_both_coordinates_to_run() {
    // The latitude sits in a branch that does not always run.
    let template = Template::parse_str(
        r#"{"sense": [
        {"asset": "lon", "custom_type": "location_long", "value": {"byte": 1, "bytelength": 8, "type": "float"}},
        {"switch": {"byte": 0, "type": "boolean"}, "on": [
            {"case": 1, "do": [{"asset": "lat", "custom_type": "location_lat",
                                "value": {"byte": 9, "bytelength": 8, "type": "float"}}]}
        ]}
    ]}"#,
    )
    .unwrap();
    let payload = |fix: u8| [&[fix][..], &1.5f64.to_be_bytes(), &2.5f64.to_be_bytes()].concat();
    assert_eq!(
        template.translate(&payload(1)).unwrap().location,
        Some(Coordinates {
            longitude: 1.5,
            latitude: 2.5
        })
    );
    let without = template.translate(&payload(0)).unwrap();
    assert_eq!(without.location, None);
    assert_eq!(without.value.to_string(), r#"{"lon":1.5}"#);
}

#[test]
fn a_template_without_location_gives_no_position() {
    let template = Template::parse_str(TEMPERATURE_HUMIDITY_SWITCH).unwrap();
    assert_eq!(
        template.translate(&bytes("001a003700")).unwrap().location,
        None
    );
}

#[test]
fn template_parses_from_str_and_try_from() {
    let parsed: Template = TEMPERATURE_HUMIDITY_SWITCH.parse().unwrap();
    let value: Value = serde_json::from_str(TEMPERATURE_HUMIDITY_SWITCH).unwrap();
    assert_eq!(Template::try_from(&value).unwrap(), parsed);
}
