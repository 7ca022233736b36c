//! Request bodies and path parameters, checked by hand so that every
//! refusal names its field and none echoes a value.
//!
//! serde's derived errors quote the offending value (`unknown variant
//! "hunter2"`), which must never happen for a PSK; reading the JSON as a
//! [`Value`] and each field by hand keeps the messages ours.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header;
use axum::http::request::Parts;
use coapgate_model::Iccid;
use serde_json::{Map, Value};

use crate::AdminError;

/// The ICCID in a route's path, validated (400, field `iccid`).
pub(crate) struct IccidPath(pub(crate) Iccid);

impl<S: Send + Sync> FromRequestParts<S> for IccidPath {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| AdminError::field("iccid", "the path is not valid UTF-8"))?;
        let raw = params
            .iter()
            .find(|(name, _)| name == "iccid")
            .map(|(_, value)| value.as_str())
            .ok_or(AdminError::Internal)?;
        raw.parse()
            .map(IccidPath)
            .map_err(|e| AdminError::field("iccid", e.to_string()))
    }
}

/// A JSON object body: `Content-Type: application/json` (415 otherwise), at
/// most [`crate::MAX_BODY_BYTES`] (413), valid JSON (400), an object (400).
pub(crate) struct JsonObject(pub(crate) Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(AdminError::UnsupportedMediaType);
        }
        // A body announced too large is refused at once, without waiting
        // for it (the limit below only counts what has arrived).
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|length| length > crate::MAX_BODY_BYTES as u64) {
            return Err(AdminError::TooLarge(crate::MAX_BODY_BYTES));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                AdminError::TooLarge(crate::MAX_BODY_BYTES)
            } else {
                AdminError::bad("the request body could not be read")
            }
        })?;
        // serde_json's syntax errors give a position, never the input.
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| AdminError::bad(format!("malformed JSON: {e}")))?;
        match value {
            Value::Object(map) => Ok(JsonObject(map)),
            _ => Err(AdminError::bad("the request body must be a JSON object")),
        }
    }
}

/// The fields of a body, read one by one. Construction refuses any key not
/// in the allowed list, naming it.
pub(crate) struct Fields(Map<String, Value>);

/// Unknown keys are echoed in errors, cut to this many characters.
const MAX_ECHOED_KEY: usize = 64;

impl Fields {
    pub(crate) fn new(map: Map<String, Value>, allowed: &[&str]) -> Result<Self, AdminError> {
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            let shown: String = unknown.chars().take(MAX_ECHOED_KEY).collect();
            return Err(AdminError::field(
                &shown,
                format!(
                    "unknown field `{shown}`; expected {}",
                    allowed
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(Self(map))
    }

    /// The value of a field; absent and `null` are both `None`.
    pub(crate) fn value(&mut self, key: &str) -> Option<Value> {
        self.0.remove(key).filter(|v| !v.is_null())
    }

    pub(crate) fn required_value(&mut self, key: &str) -> Result<Value, AdminError> {
        self.value(key)
            .ok_or_else(|| AdminError::field(key, format!("`{key}` is required")))
    }

    pub(crate) fn string(&mut self, key: &str) -> Result<Option<String>, AdminError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(AdminError::field(key, format!("`{key}` must be a string"))),
        }
    }

    pub(crate) fn required_string(&mut self, key: &str) -> Result<String, AdminError> {
        self.string(key)?
            .ok_or_else(|| AdminError::field(key, format!("`{key}` is required")))
    }

    /// One of a fixed set of strings (`ACTIVE`/`INACTIVE`, …), or the default.
    pub(crate) fn choice(
        &mut self,
        key: &str,
        choices: &[&'static str],
        default: &'static str,
    ) -> Result<&'static str, AdminError> {
        let Some(given) = self.string(key)? else {
            return Ok(default);
        };
        choices
            .iter()
            .find(|c| **c == given)
            .copied()
            .ok_or_else(|| AdminError::field(key, format!("`{key}` is {}", one_of(choices))))
    }

    pub(crate) fn required_u64(&mut self, key: &str) -> Result<u64, AdminError> {
        let value = self.required_value(key)?;
        value.as_u64().ok_or_else(|| {
            AdminError::field(key, format!("`{key}` must be a non-negative integer"))
        })
    }
}

/// `A or B`, `A, B or C`, quoted.
fn one_of(choices: &[&str]) -> String {
    let quoted: Vec<String> = choices.iter().map(|c| format!("`{c}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_read_naturally() {
        assert_eq!(one_of(&["COAP"]), "`COAP`");
        assert_eq!(one_of(&["ACTIVE", "INACTIVE"]), "`ACTIVE` or `INACTIVE`");
        assert_eq!(one_of(&["A", "B", "C"]), "`A`, `B` or `C`");
    }

    #[test]
    fn unknown_keys_are_named_and_cut() {
        let mut map = Map::new();
        map.insert("k".repeat(100), Value::Null);
        let Err(error) = Fields::new(map, &["a"]) else {
            panic!("accepted an unknown key");
        };
        assert_eq!(error.field_name(), Some("k".repeat(64).as_str()));
    }
}
