//! Template validation: JSON in, [`Statement`]s out, or a [`TemplateError`]
//! naming the offending path.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::selector::{Extent, Kind, Selector};
use crate::{
    MAX_ASSET_BYTES, MAX_ASSET_SEGMENTS, MAX_CONSTANT_BYTES, MAX_NESTING, MAX_STATEMENTS,
    MAX_TEMPLATE_BYTES, TemplateError,
};

/// A validated statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Statement {
    /// A mapping or a constant: writes one value at `asset`.
    Write {
        asset: Asset,
        source: Source,
        location: Option<Axis>,
    },
    /// Reads `selector`, runs the first matching case's statements, else the
    /// default's.
    Switch {
        /// The switch's path in the template (`sense[1].switch`), for errors.
        path: String,
        selector: Selector,
        cases: Vec<Case>,
        default: Option<Vec<Statement>>,
    },
}

/// Where a written value comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Source {
    Constant(Value),
    Read(Selector),
}

/// Which coordinate a `custom_type` mapping carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Axis {
    Longitude,
    Latitude,
}

/// A validated asset name, split at its dots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Asset {
    pub(crate) name: String,
    pub(crate) segments: Box<[String]>,
}

/// One `case` of a switch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Case {
    pub(crate) value: CaseValue,
    pub(crate) body: Vec<Statement>,
}

/// A case value: integers for int/uint/boolean selectors, strings for
/// string/hex selectors (hex ones lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CaseValue {
    Integer(i128),
    Text(String),
}

type Result<T> = std::result::Result<T, TemplateError>;

fn structure(path: impl Into<String>, reason: impl Into<String>) -> TemplateError {
    TemplateError::Structure {
        path: path.into(),
        reason: reason.into(),
    }
}

fn selector_error(path: impl Into<String>, reason: impl Into<String>) -> TemplateError {
    TemplateError::Selector {
        path: path.into(),
        reason: reason.into(),
    }
}

fn switch_error(path: impl Into<String>, reason: impl Into<String>) -> TemplateError {
    TemplateError::Switch {
        path: path.into(),
        reason: reason.into(),
    }
}

fn limit(path: impl Into<String>, reason: impl Into<String>) -> TemplateError {
    TemplateError::Limit {
        path: path.into(),
        reason: reason.into(),
    }
}

/// The path of the template as a whole.
const ROOT: &str = "template";

/// Parses a template given as a JSON object or as a string holding one.
pub(crate) fn template(value: &Value) -> Result<Vec<Statement>> {
    match value {
        Value::Object(root) => Parser::default().root(root),
        Value::String(text) => match text_to_value(text)? {
            Value::Object(root) => Parser::default().root(&root),
            _ => Err(TemplateError::Syntax {
                path: ROOT.into(),
                reason: "the string does not hold a JSON object".into(),
            }),
        },
        _ => Err(TemplateError::Syntax {
            path: ROOT.into(),
            reason: "a template is a JSON object, or a string holding one".into(),
        }),
    }
}

/// Parses template text (at most [`MAX_TEMPLATE_BYTES`]) as JSON.
pub(crate) fn text_to_value(text: &str) -> Result<Value> {
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(limit(
            ROOT,
            format!(
                "{} bytes is larger than {MAX_TEMPLATE_BYTES} bytes",
                text.len()
            ),
        ));
    }
    // serde_json refuses nesting deeper than 128, so hostile text cannot
    // exhaust the stack here.
    serde_json::from_str(text).map_err(|e| TemplateError::Syntax {
        path: ROOT.into(),
        reason: format!("not JSON: {e}"),
    })
}

/// Checks that the keys of `object` (at `path`) are among `allowed`.
fn known_keys(object: &Map<String, Value>, path: &str, allowed: &[&str], what: &str) -> Result<()> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(structure(
            join(path, key),
            format!("unknown key `{key}` ({what} has {})", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

/// `path.key`; a key of the template itself is its own path (`template`
/// for the empty key).
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        if key.is_empty() { ROOT } else { key }.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Walks a template, counting statements and remembering assets.
#[derive(Default)]
struct Parser {
    /// Statements and switch entries seen so far.
    nodes: usize,
    /// Every asset name written so far, with the path of its `asset` key.
    values: HashMap<String, String>,
    /// Every proper dotted prefix of those names (objects), with a path.
    objects: HashMap<String, String>,
    /// The first `location_long` / `location_lat` seen.
    longitude: Option<String>,
    latitude: Option<String>,
}

impl Parser {
    fn root(mut self, root: &Map<String, Value>) -> Result<Vec<Statement>> {
        known_keys(root, "", &["sense"], "a template")?;
        let sense = root
            .get("sense")
            .ok_or_else(|| structure(ROOT, "missing `sense` (the list of statements)"))?;
        let statements = self.list(sense, "sense", 0)?;
        match (&self.longitude, &self.latitude) {
            (Some(path), None) => Err(TemplateError::Location {
                path: path.clone(),
                reason: "location_long without a location_lat statement".into(),
            }),
            (None, Some(path)) => Err(TemplateError::Location {
                path: path.clone(),
                reason: "location_lat without a location_long statement".into(),
            }),
            _ => Ok(statements),
        }
    }

    /// A list of statements at `path`, inside `nesting` switches.
    fn list(&mut self, value: &Value, path: &str, nesting: usize) -> Result<Vec<Statement>> {
        let items = value
            .as_array()
            .ok_or_else(|| structure(path, "must be an array of statements"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.statement(item, &format!("{path}[{i}]"), nesting))
            .collect()
    }

    fn count(&mut self, path: &str) -> Result<()> {
        self.nodes += 1;
        if self.nodes > MAX_STATEMENTS {
            return Err(limit(
                path,
                format!("more than {MAX_STATEMENTS} statements and switch entries"),
            ));
        }
        Ok(())
    }

    fn statement(&mut self, value: &Value, path: &str, nesting: usize) -> Result<Statement> {
        self.count(path)?;
        let object = value.as_object().ok_or_else(|| {
            structure(path, "a statement is an object: a mapping (`asset`, `value`) or a switch (`switch`, `on`)")
        })?;
        match (object.contains_key("asset"), object.contains_key("switch")) {
            (true, true) => Err(structure(
                path,
                "a statement is a mapping (`asset`) or a switch (`switch`), not both",
            )),
            (false, true) => self.switch(object, path, nesting + 1),
            (_, false) => self.mapping(object, path),
        }
    }

    fn mapping(&mut self, object: &Map<String, Value>, path: &str) -> Result<Statement> {
        known_keys(
            object,
            path,
            &["asset", "value", "custom_type"],
            "a mapping",
        )?;
        let asset_path = join(path, "asset");
        let name = object
            .get("asset")
            .ok_or_else(|| {
                structure(
                    path,
                    "missing `asset` (a statement is a mapping with `asset` and `value`, or a switch)",
                )
            })?
            .as_str()
            .ok_or_else(|| structure(&asset_path, "must be a string"))?;
        let asset = self.asset(name, &asset_path)?;
        let value_path = join(path, "value");
        let source = match object.get("value") {
            None => return Err(structure(path, "missing `value`")),
            Some(Value::String(text)) => {
                if text.len() > MAX_CONSTANT_BYTES {
                    return Err(limit(
                        value_path,
                        format!("a constant is at most {MAX_CONSTANT_BYTES} bytes"),
                    ));
                }
                Source::Constant(Value::String(text.clone()))
            }
            Some(Value::Object(selector)) => Source::Read(parse_selector(selector, &value_path)?),
            Some(_) => {
                return Err(structure(
                    value_path,
                    "must be a selector object or a constant string",
                ));
            }
        };
        let location = match object.get("custom_type") {
            None => None,
            Some(custom) => Some(self.custom_type(custom, &source, &join(path, "custom_type"))?),
        };
        Ok(Statement::Write {
            asset,
            source,
            location,
        })
    }

    fn custom_type(&mut self, value: &Value, source: &Source, path: &str) -> Result<Axis> {
        let location = |reason: String| TemplateError::Location {
            path: path.to_owned(),
            reason,
        };
        let name = value
            .as_str()
            .ok_or_else(|| structure(path, "must be a string"))?;
        let axis = match name {
            "location_long" => Axis::Longitude,
            "location_lat" => Axis::Latitude,
            other => {
                return Err(location(format!(
                    "unknown custom_type `{other}` (location_long or location_lat)"
                )));
            }
        };
        let float64 = matches!(
            source,
            Source::Read(Selector {
                kind: Kind::Float,
                extent: Extent::Length(8),
                ..
            })
        );
        if !float64 {
            return Err(location(format!(
                "{name} needs an 8-byte float value (\"type\": \"float\", \"bytelength\": 8)"
            )));
        }
        let first = match axis {
            Axis::Longitude => &mut self.longitude,
            Axis::Latitude => &mut self.latitude,
        };
        first.get_or_insert_with(|| path.to_owned());
        Ok(axis)
    }

    /// Validates an asset name and checks it against the others: `a` and
    /// `a.b` cannot both be written (one is a value, the other needs an
    /// object there).
    fn asset(&mut self, name: &str, path: &str) -> Result<Asset> {
        let asset_error = |reason: String| TemplateError::Asset {
            path: path.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(asset_error("must not be empty".into()));
        }
        if name.len() > MAX_ASSET_BYTES {
            return Err(limit(
                path,
                format!("an asset name is at most {MAX_ASSET_BYTES} bytes"),
            ));
        }
        let segments: Box<[String]> = name.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(asset_error(format!(
                "`{name}` has an empty name between dots"
            )));
        }
        if segments.len() > MAX_ASSET_SEGMENTS {
            return Err(limit(
                path,
                format!("an asset name has at most {MAX_ASSET_SEGMENTS} dotted parts"),
            ));
        }
        if let Some(other) = self.objects.get(name) {
            return Err(asset_error(format!(
                "`{name}` is a value here but an object at {other}"
            )));
        }
        let mut prefix = String::new();
        for segment in &segments[..segments.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('.');
            }
            prefix.push_str(segment);
            if let Some(other) = self.values.get(&prefix) {
                return Err(asset_error(format!(
                    "`{prefix}` is an object here but a value at {other}"
                )));
            }
        }
        let mut prefix = String::new();
        for segment in &segments[..segments.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('.');
            }
            prefix.push_str(segment);
            self.objects
                .entry(prefix.clone())
                .or_insert_with(|| path.to_owned());
        }
        self.values
            .entry(name.to_owned())
            .or_insert_with(|| path.to_owned());
        Ok(Asset {
            name: name.to_owned(),
            segments,
        })
    }

    fn switch(
        &mut self,
        object: &Map<String, Value>,
        path: &str,
        nesting: usize,
    ) -> Result<Statement> {
        let switch_path = join(path, "switch");
        if nesting > MAX_NESTING {
            return Err(limit(
                switch_path,
                format!("switches nest at most {MAX_NESTING} deep"),
            ));
        }
        known_keys(object, path, &["switch", "on"], "a switch")?;
        let selector = match object.get("switch") {
            Some(Value::Object(selector)) => parse_selector(selector, &switch_path)?,
            _ => return Err(structure(&switch_path, "must be a selector object")),
        };
        if selector.kind == Kind::Float {
            return Err(switch_error(
                join(&switch_path, "type"),
                "a switch cannot match a float; use int, uint, boolean, string or hex",
            ));
        }
        let on_path = join(path, "on");
        let entries = object
            .get("on")
            .ok_or_else(|| structure(path, "missing `on` (the list of cases)"))?
            .as_array()
            .ok_or_else(|| structure(&on_path, "must be an array of cases"))?;
        let mut cases = Vec::new();
        let mut default: Option<(String, Vec<Statement>)> = None;
        for (i, entry) in entries.iter().enumerate() {
            let entry_path = format!("{on_path}[{i}]");
            self.count(&entry_path)?;
            let entry = entry.as_object().ok_or_else(|| {
                structure(
                    &entry_path,
                    "must be an object with `case` or `default`, and `do`",
                )
            })?;
            known_keys(
                entry,
                &entry_path,
                &["case", "default", "do"],
                "a switch entry",
            )?;
            let body_value = entry
                .get("do")
                .ok_or_else(|| structure(&entry_path, "missing `do` (the statements to run)"))?;
            match (entry.get("case"), entry.get("default")) {
                (Some(_), Some(_)) => {
                    return Err(switch_error(
                        entry_path,
                        "an entry has `case` or `default`, not both",
                    ));
                }
                (None, None) => {
                    return Err(switch_error(
                        entry_path,
                        "an entry needs `case` or `default`",
                    ));
                }
                (Some(case), None) => {
                    let value = case_value(case, selector.kind, &join(&entry_path, "case"))?;
                    let body = self.list(body_value, &join(&entry_path, "do"), nesting)?;
                    cases.push(Case { value, body });
                }
                (None, Some(flag)) => {
                    if flag != &Value::Bool(true) {
                        return Err(switch_error(join(&entry_path, "default"), "must be true"));
                    }
                    if let Some((first, _)) = &default {
                        return Err(switch_error(
                            entry_path,
                            format!("a second default (the first is {first})"),
                        ));
                    }
                    let body = self.list(body_value, &join(&entry_path, "do"), nesting)?;
                    default = Some((entry_path, body));
                }
            }
        }
        Ok(Statement::Switch {
            path: switch_path,
            selector,
            cases,
            default: default.map(|(_, body)| body),
        })
    }
}

/// A case value, checked against the type of the switch's selector.
fn case_value(value: &Value, kind: Kind, path: &str) -> Result<CaseValue> {
    let integer = value
        .as_i64()
        .map(i128::from)
        .or_else(|| value.as_u64().map(i128::from));
    match (kind, integer, value) {
        (Kind::Boolean, Some(n @ (0 | 1)), _) => Ok(CaseValue::Integer(n)),
        (Kind::Boolean, Some(n), _) => Err(switch_error(
            path,
            format!("case {n} cannot match a boolean (0 is false, 1 is true)"),
        )),
        (Kind::Int | Kind::Uint, Some(n), _) => Ok(CaseValue::Integer(n)),
        (Kind::String, None, Value::String(text)) => Ok(CaseValue::Text(text.clone())),
        (Kind::Hex, None, Value::String(text)) => {
            let lower = text.to_ascii_lowercase();
            if lower.len() % 2 != 0 || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(switch_error(
                    path,
                    format!("case \"{text}\" is not hex (pairs of 0-9, a-f)"),
                ));
            }
            Ok(CaseValue::Text(lower))
        }
        (Kind::Int | Kind::Uint | Kind::Boolean, None, Value::String(text)) => Err(switch_error(
            path,
            format!(
                "case \"{text}\" is a string but the switch's type is {}: use an integer",
                kind.name()
            ),
        )),
        (Kind::String | Kind::Hex, Some(n), _) => Err(switch_error(
            path,
            format!(
                "case {n} is an integer but the switch's type is {}: use a string",
                kind.name()
            ),
        )),
        _ => Err(switch_error(path, "a case is an integer or a string")),
    }
}

/// Parses and validates a selector object at `path`.
fn parse_selector(object: &Map<String, Value>, path: &str) -> Result<Selector> {
    known_keys(
        object,
        path,
        &[
            "byte",
            "bytelength",
            "endbyte",
            "byteorder",
            "type",
            "signed",
        ],
        "a selector",
    )?;
    let type_path = join(path, "type");
    let type_name = object
        .get("type")
        .ok_or_else(|| structure(path, format!("missing `type` ({})", Kind::NAMES)))?
        .as_str()
        .ok_or_else(|| structure(&type_path, "must be a string"))?;
    let kind = Kind::from_name(type_name).ok_or_else(|| {
        selector_error(
            &type_path,
            format!("unknown type `{type_name}` ({})", Kind::NAMES),
        )
    })?;

    let byte_path = join(path, "byte");
    let byte = object
        .get("byte")
        .ok_or_else(|| structure(path, "missing `byte` (the offset of the first byte)"))?;
    let byte = byte
        .as_u64()
        .and_then(|b| u32::try_from(b).ok())
        .ok_or_else(|| {
            selector_error(
                &byte_path,
                format!("byte {byte} is not an integer from 0 to {}", u32::MAX),
            )
        })?;

    let length_path = join(path, "bytelength");
    let end_path = join(path, "endbyte");
    let extent = match (object.get("bytelength"), object.get("endbyte")) {
        (Some(_), Some(_)) => {
            return Err(selector_error(
                end_path,
                "bytelength and endbyte exclude each other",
            ));
        }
        (None, Some(end)) => {
            let negated = end
                .as_i64()
                .filter(|e| *e <= 0)
                .and_then(|e| u32::try_from(e.unsigned_abs()).ok());
            match negated {
                Some(n) => Extent::FromEnd(n),
                None if end.as_i64().is_some_and(|e| e > 0) || end.as_u64().is_some() => {
                    return Err(selector_error(
                        end_path,
                        format!(
                            "endbyte {end} must be 0 or negative: it counts back from the end of the payload"
                        ),
                    ));
                }
                None => {
                    return Err(selector_error(
                        end_path,
                        format!("endbyte {end} is not an integer from -{} to 0", u32::MAX),
                    ));
                }
            }
        }
        (length, None) => {
            let n = match length {
                None => 1,
                Some(length) => length
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        selector_error(
                            &length_path,
                            format!(
                                "bytelength {length} is not an integer from 1 to {}",
                                u32::MAX
                            ),
                        )
                    })?,
            };
            if !kind.allows(u64::from(n)) {
                let default = if length.is_none() {
                    " (the default)"
                } else {
                    ""
                };
                return Err(selector_error(
                    length_path,
                    format!(
                        "bytelength {n}{default} is not valid for {} ({})",
                        kind.name(),
                        kind.allowed()
                    ),
                ));
            }
            Extent::Length(n)
        }
    };

    let little = match object.get("byteorder") {
        None => false,
        Some(order) => match order.as_str() {
            Some("big") => false,
            Some("little") => true,
            _ => {
                return Err(selector_error(
                    join(path, "byteorder"),
                    format!("byteorder {order} is not \"big\" or \"little\""),
                ));
            }
        },
    };
    if let Some(signed) = object.get("signed") {
        if !signed.is_boolean() {
            return Err(structure(
                join(path, "signed"),
                "must be true or false (it is accepted and ignored: int is signed, uint is not)",
            ));
        }
    }
    Ok(Selector {
        byte,
        extent,
        little,
        kind,
    })
}
