//! Every reason a template is refused, each naming the offending place by
//! its path in the template.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use coapgate_translate::{
    MAX_ASSET_BYTES, MAX_ASSET_SEGMENTS, MAX_CONSTANT_BYTES, MAX_NESTING, MAX_STATEMENTS,
    MAX_TEMPLATE_BYTES, Template, TemplateError,
};
use serde_json::{Value, json};

fn refused(template: &Value) -> TemplateError {
    match Template::parse(template) {
        Ok(parsed) => panic!("accepted {template}: {parsed:?}"),
        Err(error) => {
            assert_eq!(
                error.to_string(),
                format!("{}: {}", error.path(), error.reason())
            );
            error
        }
    }
}

/// The error's `path: reason` text.
fn why(template: Value) -> String {
    refused(&template).to_string()
}

/// A template with one mapping reading `selector`.
fn with_selector(selector: Value) -> Value {
    json!({"sense": [{"asset": "a", "value": selector}]})
}

#[test]
fn the_example_of_the_contract() {
    let template = json!({"sense": [
        {"asset": "a", "value": {"byte": 0, "type": "int"}},
        {"asset": "b", "value": {"byte": 1, "type": "int"}},
        {"asset": "c", "value": {"byte": 2, "bytelength": 3, "type": "int"}}
    ]});
    let error = refused(&template);
    assert!(matches!(error, TemplateError::Selector { .. }));
    assert_eq!(error.path(), "sense[2].value.bytelength");
    assert_eq!(
        error.to_string(),
        "sense[2].value.bytelength: bytelength 3 is not valid for int (1, 2, 4 or 8)"
    );
}

#[test]
fn a_deep_path_names_every_step() {
    let template = json!({"sense": [
        {"asset": "x", "value": "constant"},
        {"asset": "y", "value": "constant"},
        {"switch": {"byte": 0, "type": "uint"}, "on": [
            {"case": 1, "do": [
                {"asset": "ok", "value": {"byte": 1, "type": "uint"}},
                {"asset": "bad", "value": {"byte": 1, "bytelength": 2, "type": "boolean"}}
            ]}
        ]}
    ]});
    assert_eq!(
        why(template),
        "sense[2].on[0].do[1].value.bytelength: bytelength 2 is not valid for boolean (1)"
    );
}

#[test]
fn the_template_must_be_json_holding_an_object() {
    let not_json = Template::parse_str("{\"sense\": [").unwrap_err();
    assert!(matches!(not_json, TemplateError::Syntax { .. }));
    assert_eq!(not_json.path(), "template");
    assert!(not_json.reason().starts_with("not JSON: "), "{not_json}");

    assert_eq!(
        why(json!([1, 2])),
        "template: a template is a JSON object, or a string holding one"
    );
    assert_eq!(
        why(json!("[1, 2]")),
        "template: the string does not hold a JSON object"
    );
    assert!(why(json!("{not json")).starts_with("template: not JSON: "));
}

#[test]
fn the_template_needs_sense_and_nothing_else() {
    assert_eq!(
        why(json!({})),
        "template: missing `sense` (the list of statements)"
    );
    assert_eq!(
        why(json!({"sense": [], "name": "x"})),
        "name: unknown key `name` (a template has sense)"
    );
    assert_eq!(
        why(json!({"sense": {"asset": "a"}})),
        "sense: must be an array of statements"
    );
}

#[test]
fn a_statement_is_a_mapping_or_a_switch() {
    assert_eq!(
        why(json!({"sense": [42]})),
        "sense[0]: a statement is an object: a mapping (`asset`, `value`) or a switch (`switch`, `on`)"
    );
    assert_eq!(
        why(json!({"sense": [{"value": "x"}]})),
        "sense[0]: missing `asset` (a statement is a mapping with `asset` and `value`, or a switch)"
    );
    assert_eq!(
        why(json!({"sense": [{"asset": "a", "switch": {"byte": 0, "type": "int"}, "on": []}]})),
        "sense[0]: a statement is a mapping (`asset`) or a switch (`switch`), not both"
    );
    assert_eq!(
        why(json!({"sense": [{"asset": "a"}]})),
        "sense[0]: missing `value`"
    );
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    assert_eq!(
        why(json!({"sense": [{"asset": "a", "value": "x", "unit": "C"}]})),
        "sense[0].unit: unknown key `unit` (a mapping has asset, value, custom_type)"
    );
    assert_eq!(
        why(with_selector(
            json!({"byte": 0, "type": "int", "length": 2})
        )),
        "sense[0].value.length: unknown key `length` (a selector has byte, bytelength, endbyte, byteorder, type, signed)"
    );
    assert_eq!(
        why(json!({"sense": [{"switch": {"byte": 0, "type": "int"}, "on": [], "else": []}]})),
        "sense[0].else: unknown key `else` (a switch has switch, on)"
    );
    assert_eq!(
        why(
            json!({"sense": [{"switch": {"byte": 0, "type": "int"}, "on": [
                {"case": 1, "do": [], "then": []}
            ]}]})
        ),
        "sense[0].on[0].then: unknown key `then` (a switch entry has case, default, do)"
    );
}

#[test]
fn an_asset_is_a_non_empty_dotted_name() {
    assert_eq!(
        why(json!({"sense": [{"asset": 7, "value": "x"}]})),
        "sense[0].asset: must be a string"
    );
    let error = refused(&json!({"sense": [{"asset": "", "value": "x"}]}));
    assert!(matches!(error, TemplateError::Asset { .. }));
    assert_eq!(error.to_string(), "sense[0].asset: must not be empty");
    for name in ["a..b", ".a", "a."] {
        assert_eq!(
            why(json!({"sense": [{"asset": name, "value": "x"}]})),
            format!("sense[0].asset: `{name}` has an empty name between dots")
        );
    }
}

#[test]
fn an_asset_cannot_be_both_a_value_and_an_object() {
    assert_eq!(
        why(json!({"sense": [
            {"asset": "a", "value": "x"},
            {"asset": "a.b", "value": "y"}
        ]})),
        "sense[1].asset: `a` is an object here but a value at sense[0].asset"
    );
    assert_eq!(
        why(json!({"sense": [
            {"asset": "a.b.c", "value": "x"},
            {"asset": "a.b", "value": "y"}
        ]})),
        "sense[1].asset: `a.b` is a value here but an object at sense[0].asset"
    );
    // Also across switch branches: the output's shape does not depend on
    // which branch runs.
    assert_eq!(
        why(
            json!({"sense": [{"switch": {"byte": 0, "type": "uint"}, "on": [
                {"case": 1, "do": [{"asset": "status", "value": "ok"}]},
                {"default": true, "do": [{"asset": "status.code", "value": "x"}]}
            ]}]})
        ),
        "sense[0].on[1].do[0].asset: `status` is an object here but a value at sense[0].on[0].do[0].asset"
    );
    // Writing the same asset twice is fine (the last value wins).
    assert!(
        Template::parse(&json!({"sense": [
            {"asset": "a.b", "value": "x"},
            {"asset": "a.b", "value": "y"},
            {"asset": "a.c", "value": "z"}
        ]}))
        .is_ok()
    );
}

#[test]
fn a_value_is_a_selector_or_a_constant_string() {
    assert_eq!(
        why(json!({"sense": [{"asset": "a", "value": 5}]})),
        "sense[0].value: must be a selector object or a constant string"
    );
}

#[test]
fn a_selector_needs_a_known_type() {
    assert_eq!(
        why(with_selector(json!({"byte": 0}))),
        "sense[0].value: missing `type` (int, uint, float, boolean, string or hex)"
    );
    let error = refused(&with_selector(json!({"byte": 0, "type": "double"})));
    assert!(matches!(error, TemplateError::Selector { .. }));
    assert_eq!(
        error.to_string(),
        "sense[0].value.type: unknown type `double` (int, uint, float, boolean, string or hex)"
    );
    assert_eq!(
        why(with_selector(json!({"byte": 0, "type": 1}))),
        "sense[0].value.type: must be a string"
    );
}

#[test]
fn a_selector_needs_a_byte_offset() {
    assert_eq!(
        why(with_selector(json!({"type": "int"}))),
        "sense[0].value: missing `byte` (the offset of the first byte)"
    );
    for byte in [json!(-1), json!(1.5), json!("0"), json!(4_294_967_296u64)] {
        assert_eq!(
            why(with_selector(json!({"byte": byte, "type": "int"}))),
            format!("sense[0].value.byte: byte {byte} is not an integer from 0 to 4294967295")
        );
    }
}

#[test]
fn bytelength_must_fit_the_type() {
    for (ty, bad, allowed) in [
        ("int", 3, "1, 2, 4 or 8"),
        ("uint", 16, "1, 2, 4 or 8"),
        ("float", 2, "4 or 8"),
        ("boolean", 2, "1"),
    ] {
        assert_eq!(
            why(with_selector(
                json!({"byte": 0, "bytelength": bad, "type": ty})
            )),
            format!(
                "sense[0].value.bytelength: bytelength {bad} is not valid for {ty} ({allowed})"
            )
        );
    }
    // The default length of 1 does not fit a float.
    assert_eq!(
        why(with_selector(json!({"byte": 0, "type": "float"}))),
        "sense[0].value.bytelength: bytelength 1 (the default) is not valid for float (4 or 8)"
    );
    for bad in [json!(0), json!(-1), json!(2.5), json!("2")] {
        assert_eq!(
            why(with_selector(
                json!({"byte": 0, "bytelength": bad, "type": "string"})
            )),
            format!(
                "sense[0].value.bytelength: bytelength {bad} is not an integer from 1 to 4294967295"
            )
        );
    }
}

#[test]
fn endbyte_is_zero_or_negative_and_excludes_bytelength() {
    assert_eq!(
        why(with_selector(
            json!({"byte": 0, "bytelength": 2, "endbyte": 0, "type": "hex"})
        )),
        "sense[0].value.endbyte: bytelength and endbyte exclude each other"
    );
    assert_eq!(
        why(with_selector(
            json!({"byte": 0, "endbyte": 3, "type": "hex"})
        )),
        "sense[0].value.endbyte: endbyte 3 must be 0 or negative: it counts back from the end of the payload"
    );
    for bad in [json!(-1.5), json!("-1"), json!(-4_294_967_296i64)] {
        assert_eq!(
            why(with_selector(
                json!({"byte": 0, "endbyte": bad, "type": "hex"})
            )),
            format!(
                "sense[0].value.endbyte: endbyte {bad} is not an integer from -4294967295 to 0"
            )
        );
    }
}

#[test]
fn byteorder_is_big_or_little() {
    assert_eq!(
        why(with_selector(
            json!({"byte": 0, "bytelength": 2, "type": "int", "byteorder": "LE"})
        )),
        r#"sense[0].value.byteorder: byteorder "LE" is not "big" or "little""#
    );
}

#[test]
fn signed_must_be_a_boolean() {
    assert_eq!(
        why(with_selector(
            json!({"byte": 0, "type": "int", "signed": "yes"})
        )),
        "sense[0].value.signed: must be true or false (it is accepted and ignored: int is signed, uint is not)"
    );
}

#[test]
fn custom_type_is_a_location_axis_on_an_8_byte_float() {
    let float64 = json!({"byte": 0, "bytelength": 8, "type": "float"});
    let error = refused(&json!({"sense": [
        {"asset": "lon", "custom_type": "location_alt", "value": float64}
    ]}));
    assert!(matches!(error, TemplateError::Location { .. }));
    assert_eq!(
        error.to_string(),
        "sense[0].custom_type: unknown custom_type `location_alt` (location_long or location_lat)"
    );
    for value in [
        json!({"byte": 0, "bytelength": 4, "type": "float"}),
        json!({"byte": 0, "endbyte": 0, "type": "float"}),
        json!({"byte": 0, "bytelength": 8, "type": "int"}),
        json!("12.5"),
    ] {
        assert_eq!(
            why(json!({"sense": [
                {"asset": "lon", "custom_type": "location_long", "value": value},
                {"asset": "lat", "custom_type": "location_lat", "value": float64}
            ]})),
            r#"sense[0].custom_type: location_long needs an 8-byte float value ("type": "float", "bytelength": 8)"#
        );
    }
    assert_eq!(
        why(json!({"sense": [{"asset": "lon", "custom_type": 1, "value": float64}]})),
        "sense[0].custom_type: must be a string"
    );
}

#[test]
fn a_location_axis_needs_its_partner() {
    let float64 = json!({"byte": 0, "bytelength": 8, "type": "float"});
    assert_eq!(
        why(json!({"sense": [{"asset": "lon", "custom_type": "location_long", "value": float64}]})),
        "sense[0].custom_type: location_long without a location_lat statement"
    );
    assert_eq!(
        why(json!({"sense": [
            {"asset": "x", "value": "y"},
            {"asset": "lat", "custom_type": "location_lat", "value": float64}
        ]})),
        "sense[1].custom_type: location_lat without a location_long statement"
    );
}

#[test]
fn a_switch_needs_a_selector_and_a_list_of_entries() {
    assert_eq!(
        why(json!({"sense": [{"switch": 0, "on": []}]})),
        "sense[0].switch: must be a selector object"
    );
    assert_eq!(
        why(json!({"sense": [{"switch": {"byte": 0, "type": "nibble"}, "on": []}]})),
        "sense[0].switch.type: unknown type `nibble` (int, uint, float, boolean, string or hex)"
    );
    assert_eq!(
        why(json!({"sense": [{"switch": {"byte": 0, "type": "int"}}]})),
        "sense[0]: missing `on` (the list of cases)"
    );
    assert_eq!(
        why(json!({"sense": [{"switch": {"byte": 0, "type": "int"}, "on": {}}]})),
        "sense[0].on: must be an array of cases"
    );
    assert_eq!(
        why(json!({"sense": [{"switch": {"byte": 0, "type": "int"}, "on": [1]}]})),
        "sense[0].on[0]: must be an object with `case` or `default`, and `do`"
    );
}

#[test]
fn a_switch_cannot_match_a_float() {
    let error = refused(&json!({"sense": [
        {"switch": {"byte": 0, "bytelength": 4, "type": "float"}, "on": []}
    ]}));
    assert!(matches!(error, TemplateError::Switch { .. }));
    assert_eq!(
        error.to_string(),
        "sense[0].switch.type: a switch cannot match a float; use int, uint, boolean, string or hex"
    );
}

/// A switch on `selector` with one entry.
fn switch_entry(selector: Value, entry: Value) -> Value {
    json!({"sense": [{"switch": selector, "on": [entry]}]})
}

#[test]
fn a_switch_entry_is_a_case_or_the_default_with_statements() {
    let uint = json!({"byte": 0, "type": "uint"});
    assert_eq!(
        why(switch_entry(
            uint.clone(),
            json!({"case": 1, "default": true, "do": []})
        )),
        "sense[0].on[0]: an entry has `case` or `default`, not both"
    );
    assert_eq!(
        why(switch_entry(uint.clone(), json!({"do": []}))),
        "sense[0].on[0]: an entry needs `case` or `default`"
    );
    assert_eq!(
        why(switch_entry(uint.clone(), json!({"case": 1}))),
        "sense[0].on[0]: missing `do` (the statements to run)"
    );
    assert_eq!(
        why(switch_entry(uint.clone(), json!({"case": 1, "do": {}}))),
        "sense[0].on[0].do: must be an array of statements"
    );
    assert_eq!(
        why(switch_entry(
            uint.clone(),
            json!({"default": false, "do": []})
        )),
        "sense[0].on[0].default: must be true"
    );
    assert_eq!(
        why(json!({"sense": [{"switch": uint, "on": [
            {"default": true, "do": []},
            {"case": 1, "do": []},
            {"default": true, "do": []}
        ]}]})),
        "sense[0].on[2]: a second default (the first is sense[0].on[0])"
    );
}

#[test]
fn case_values_must_be_able_to_match_the_selector_type() {
    let int = json!({"byte": 0, "type": "int"});
    let boolean = json!({"byte": 0, "type": "boolean"});
    let string = json!({"byte": 0, "type": "string"});
    let hex = json!({"byte": 0, "type": "hex"});
    let case = |selector: &Value, case: Value| {
        why(switch_entry(
            selector.clone(),
            json!({"case": case, "do": []}),
        ))
    };
    assert_eq!(
        case(&int, json!("abc")),
        r#"sense[0].on[0].case: case "abc" is a string but the switch's type is int: use an integer"#
    );
    assert_eq!(
        case(&string, json!(1)),
        "sense[0].on[0].case: case 1 is an integer but the switch's type is string: use a string"
    );
    assert_eq!(
        case(&hex, json!(10)),
        "sense[0].on[0].case: case 10 is an integer but the switch's type is hex: use a string"
    );
    assert_eq!(
        case(&boolean, json!(2)),
        "sense[0].on[0].case: case 2 cannot match a boolean (0 is false, 1 is true)"
    );
    assert_eq!(
        case(&hex, json!("abc")),
        r#"sense[0].on[0].case: case "abc" is not hex (pairs of 0-9, a-f)"#
    );
    assert_eq!(
        case(&hex, json!("0x0a")),
        r#"sense[0].on[0].case: case "0x0a" is not hex (pairs of 0-9, a-f)"#
    );
    for bad in [json!(1.5), json!(true), json!(null), json!([1])] {
        assert_eq!(
            case(&int, bad),
            "sense[0].on[0].case: a case is an integer or a string"
        );
    }
}

#[test]
fn limits_bound_hostile_templates() {
    let big = "x".repeat(MAX_TEMPLATE_BYTES + 1);
    let error = Template::parse_str(&big).unwrap_err();
    assert!(matches!(error, TemplateError::Limit { .. }));
    assert_eq!(
        error.to_string(),
        format!(
            "template: {} bytes is larger than {MAX_TEMPLATE_BYTES} bytes",
            big.len()
        )
    );
    // The same limit for a string holding the template.
    assert!(matches!(
        refused(&Value::String(big)),
        TemplateError::Limit { .. }
    ));

    let statements: Vec<Value> = (0..=MAX_STATEMENTS)
        .map(|_| json!({"asset": "a", "value": "x"}))
        .collect();
    assert_eq!(
        why(json!({"sense": statements})),
        format!(
            "sense[{MAX_STATEMENTS}]: more than {MAX_STATEMENTS} statements and switch entries"
        )
    );
    let entries: Vec<Value> = (0..MAX_STATEMENTS)
        .map(|i| json!({"case": i, "do": []}))
        .collect();
    assert_eq!(
        why(json!({"sense": [{"switch": {"byte": 0, "type": "uint"}, "on": entries}]})),
        format!(
            "sense[0].on[{}]: more than {MAX_STATEMENTS} statements and switch entries",
            MAX_STATEMENTS - 1
        )
    );

    assert_eq!(
        why(json!({"sense": [{"asset": "a".repeat(MAX_ASSET_BYTES + 1), "value": "x"}]})),
        format!("sense[0].asset: an asset name is at most {MAX_ASSET_BYTES} bytes")
    );
    let deep_name = vec!["a"; MAX_ASSET_SEGMENTS + 1].join(".");
    assert_eq!(
        why(json!({"sense": [{"asset": deep_name, "value": "x"}]})),
        format!("sense[0].asset: an asset name has at most {MAX_ASSET_SEGMENTS} dotted parts")
    );
    assert_eq!(
        why(json!({"sense": [{"asset": "a", "value": "x".repeat(MAX_CONSTANT_BYTES + 1)}]})),
        format!("sense[0].value: a constant is at most {MAX_CONSTANT_BYTES} bytes")
    );
}

/// `levels` switches, each inside the previous one's only case.
fn nested(levels: usize) -> Value {
    let mut statement = json!({"asset": "leaf", "value": "x"});
    for _ in 0..levels {
        statement =
            json!({"switch": {"byte": 0, "type": "uint"}, "on": [{"case": 0, "do": [statement]}]});
    }
    json!({"sense": [statement]})
}

#[test]
fn switches_nest_at_most_max_nesting_deep() {
    let deepest = Template::parse(&nested(MAX_NESTING)).unwrap();
    assert_eq!(
        deepest.translate(&[0]).unwrap().value.to_string(),
        r#"{"leaf":"x"}"#
    );
    let too_deep = refused(&nested(MAX_NESTING + 1));
    assert!(matches!(too_deep, TemplateError::Limit { .. }));
    let path = format!("sense[0]{}.switch", ".on[0].do[0]".repeat(MAX_NESTING));
    assert_eq!(
        too_deep.to_string(),
        format!("{path}: switches nest at most {MAX_NESTING} deep")
    );
}

#[test]
fn deeply_nested_json_text_is_refused_without_exhausting_the_stack() {
    let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(
        Template::parse_str(&text[..MAX_TEMPLATE_BYTES]),
        Err(TemplateError::Syntax { .. })
    ));
    // A deep value that is not where a statement goes is never walked.
    let mut deep = json!(0);
    for _ in 0..1_000 {
        deep = json!([deep]);
    }
    assert_eq!(
        why(json!({"sense": [{"asset": "a", "value": {"byte": 0, "type": "int", "x": deep}}]})),
        "sense[0].value.x: unknown key `x` (a selector has byte, bytelength, endbyte, byteorder, type, signed)"
    );
}
