//! Replays the committed fuzz corpus (`fuzz/corpus/translate/`) through the
//! `translate` fuzz target's own body, so every `cargo test` re-checks the
//! seeds and any past findings without libFuzzer or nightly.
//!
//! A seed is a template's text, a NUL byte, and a payload. The hand-made
//! seeds are written here with what each must do; the committed files must
//! equal them. After changing a seed, rewrite the files with
//! `COAPGATE_WRITE_SEEDS=1 cargo test -p coapgate-translate --test fuzz_corpus`.
//! Names follow the corpus rule: `ok-*` translate, `bad-*` are refused (the
//! template, or the payload), `finding-*` are past fuzzing findings.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use coapgate_translate::{Template, fuzzing::template_and_payload};

/// What a seed must do.
enum Expect {
    /// Translates to this JSON text.
    Output(&'static str),
    /// The template is refused with a `path: reason` starting with this.
    BadTemplate(&'static str),
    /// The payload is refused with this error event text.
    BadPayload(&'static str),
}

struct Seed {
    name: &'static str,
    template: String,
    payload: Vec<u8>,
    expect: Expect,
}

fn seed(name: &'static str, template: &str, payload: &[u8], expect: Expect) -> Seed {
    Seed {
        name,
        template: template.to_owned(),
        payload: payload.to_vec(),
        expect,
    }
}

const TEMPERATURE_HUMIDITY_SWITCH: &str = r#"{"sense":[{"asset":"Temperature","value":{"byte":0,"bytelength":2,"type":"int","signed":true}},{"asset":"Humidity","value":{"byte":2,"bytelength":2,"type":"int"}},{"asset":"Switch","value":{"byte":4,"type":"boolean"}}]}"#;

const LOCATION: &str = r#"{"sense":[{"asset":"longitude","custom_type":"location_long","value":{"byte":0,"bytelength":8,"type":"float","byteorder":"little"}},{"asset":"latitude","custom_type":"location_lat","value":{"byte":8,"bytelength":8,"type":"float","byteorder":"little"}}]}"#;

const SWITCH: &str = r#"{"sense":[{"switch":{"byte":0,"type":"uint"},"on":[{"case":1,"do":[{"asset":"kind","value":"temperature"},{"asset":"celsius","value":{"byte":1,"bytelength":2,"type":"int"}}]},{"case":"never","do":[]},{"default":true,"do":[{"asset":"kind","value":"unknown"},{"asset":"raw","value":{"byte":0,"endbyte":0,"type":"hex"}}]}]}]}"#;

fn seeds() -> Vec<Seed> {
    use Expect::*;
    let location = [13.404954f64.to_le_bytes(), 52.520008f64.to_le_bytes()].concat();
    let switch_fixed = SWITCH.replace(r#"{"case":"never","do":[]},"#, "");
    vec![
        seed(
            "ok-1nce-temperature-humidity-switch",
            TEMPERATURE_HUMIDITY_SWITCH,
            &[0x00, 0x1A, 0x00, 0x37, 0x00],
            Output(r#"{"Temperature":26,"Humidity":55,"Switch":false}"#),
        ),
        seed(
            "bad-payload-1nce-humidity-too-short",
            TEMPERATURE_HUMIDITY_SWITCH,
            &[0x00, 0x1A],
            BadPayload("Asset path:Humidity, Error: can't extract [2:4] from 2 bytes"),
        ),
        seed(
            "ok-1nce-template-as-a-json-string",
            &serde_json::to_string(TEMPERATURE_HUMIDITY_SWITCH).unwrap(),
            &[0x00, 0x1A, 0x00, 0x37, 0x01],
            Output(r#"{"Temperature":26,"Humidity":55,"Switch":true}"#),
        ),
        seed(
            "ok-1nce-location-little-endian-float64",
            LOCATION,
            &location,
            Output(r#"{"longitude":13.404954,"latitude":52.520008}"#),
        ),
        seed(
            "ok-1nce-deep-json",
            r#"{"sense":[{"asset":"car.running","value":{"byte":0,"type":"boolean"}},{"asset":"car.fuel","value":{"byte":1,"bytelength":4,"type":"uint"}},{"asset":"car.driver","value":{"byte":5,"bytelength":4,"type":"string"}}]}"#,
            b"\x01\x00\x00\x00\x2aAnna",
            Output(r#"{"car":{"running":true,"fuel":42,"driver":"Anna"}}"#),
        ),
        seed(
            "ok-float32-shortest",
            r#"{"sense":[{"asset":"v","value":{"byte":0,"bytelength":4,"type":"float"}}]}"#,
            &[0x42, 0x4b, 0xbc, 0xf9],
            Output(r#"{"v":50.934544}"#),
        ),
        seed(
            "ok-switch-case",
            &switch_fixed,
            &[0x01, 0xFF, 0xF6],
            Output(r#"{"kind":"temperature","celsius":-10}"#),
        ),
        seed(
            "ok-switch-default",
            &switch_fixed,
            &[0x07, 0xAA],
            Output(r#"{"kind":"unknown","raw":"07aa"}"#),
        ),
        seed(
            "ok-whole-payload-hex",
            r#"{"sense":[{"asset":"raw","value":{"byte":0,"endbyte":0,"type":"hex"}}]}"#,
            &[0xDE, 0xAD, 0xBE, 0xEF],
            Output(r#"{"raw":"deadbeef"}"#),
        ),
        seed(
            "ok-little-endian-and-signed-ints",
            r#"{"sense":[{"asset":"u16le","value":{"byte":0,"bytelength":2,"type":"uint","byteorder":"little"}},{"asset":"i32","value":{"byte":2,"bytelength":4,"type":"int"}},{"asset":"u64","value":{"byte":6,"bytelength":8,"type":"uint"}}]}"#,
            &[
                0x34, 0x12, 0xFF, 0xFF, 0xFF, 0xFE, 0x00, 0x20, 0, 0, 0, 0, 0, 0x01,
            ],
            Output(r#"{"u16le":4660,"i32":-2,"u64":9007199254740993}"#),
        ),
        seed(
            "bad-payload-string-not-utf8",
            r#"{"sense":[{"asset":"name","value":{"byte":0,"endbyte":0,"type":"string"}}]}"#,
            &[0x68, 0xC3, 0x28],
            BadPayload("Asset path:name, Error: [0:3] is not valid UTF-8"),
        ),
        seed(
            "bad-template-bytelength-3-int",
            r#"{"sense":[{"asset":"t","value":{"byte":0,"bytelength":3,"type":"int"}}]}"#,
            &[0, 0, 0],
            BadTemplate(
                "sense[0].value.bytelength: bytelength 3 is not valid for int (1, 2, 4 or 8)",
            ),
        ),
        seed(
            "bad-template-switch-case-type",
            SWITCH,
            &[0x01],
            BadTemplate(
                r#"sense[0].on[1].case: case "never" is a string but the switch's type is uint: use an integer"#,
            ),
        ),
        seed(
            "bad-template-not-json",
            r#"{"sense":["#,
            &[],
            BadTemplate("template: not JSON: "),
        ),
    ]
}

fn file_bytes(seed: &Seed) -> Vec<u8> {
    [seed.template.as_bytes(), &[0], &seed.payload].concat()
}

#[test]
fn the_hand_made_seeds_do_what_their_names_say() {
    for seed in seeds() {
        let parsed = Template::parse_str(&seed.template);
        match seed.expect {
            Expect::Output(json) => {
                assert!(seed.name.starts_with("ok-"), "{}", seed.name);
                let translation = parsed.unwrap().translate(&seed.payload).unwrap();
                assert_eq!(translation.value.to_string(), json, "{}", seed.name);
            }
            Expect::BadTemplate(text) => {
                assert!(seed.name.starts_with("bad-template-"), "{}", seed.name);
                let error = parsed.unwrap_err().to_string();
                assert!(error.starts_with(text), "{}: {error}", seed.name);
            }
            Expect::BadPayload(text) => {
                assert!(seed.name.starts_with("bad-payload-"), "{}", seed.name);
                let error = parsed.unwrap().translate(&seed.payload).unwrap_err();
                assert_eq!(error.to_string(), text, "{}", seed.name);
            }
        }
    }
}

#[test]
fn the_committed_seeds_are_up_to_date() {
    coapgate_testkit::check_seeds(
        "translate",
        seeds()
            .iter()
            .map(|seed| (seed.name.to_owned(), file_bytes(seed))),
    );
}

#[test]
fn every_file_in_the_translate_corpus_passes_the_fuzz_target() {
    let files = coapgate_testkit::fuzz_corpus("translate");
    for (name, data) in &files {
        template_and_payload(data);
        let (text, payload) = match data.iter().position(|b| *b == 0) {
            Some(at) => (&data[..at], &data[at + 1..]),
            None => (&data[..], &[][..]),
        };
        let parsed = Template::parse_str(&String::from_utf8_lossy(text));
        if name.starts_with("ok-") {
            let parsed = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(parsed.translate(payload).is_ok(), "{name} must translate");
        } else if name.starts_with("bad-template-") {
            assert!(parsed.is_err(), "{name} must be refused");
        } else if name.starts_with("bad-payload-") {
            let parsed = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(parsed.translate(payload).is_err(), "{name} must fail");
        }
    }
    assert!(files.len() >= seeds().len());
}
