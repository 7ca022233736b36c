//! `/v1/integrate/devices/{iccid}/psk`: set an operator PSK, read what kind
//! of PSK a device has (never the PSK itself).

use axum::Json;
use axum::extract::{Path, State};
use coapgate_bootstrap::{BootstrapError, PskFormat, PskOrigin, PskRecord};
use coapgate_model::epoch_millis;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::body::{Fields, IccidPath, JsonObject};
use crate::devices::no_device;
use crate::{AdminError, AdminState, blocking};

/// `POST /v1/integrate/devices/{iccid}/psk`: 200 with the PSK's description.
pub(crate) async fn set(
    State(state): State<AdminState>,
    IccidPath(iccid): IccidPath,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, AdminError> {
    let mut fields = Fields::new(body, &["secretKey", "format", "protocol"])?;
    fields.choice("protocol", &["COAP"], "COAP")?;
    let format = match fields.choice("format", &["STRING", "HEX"], "STRING")? {
        "HEX" => PskFormat::Hex,
        _ => PskFormat::String,
    };
    let secret = Zeroizing::new(fields.required_string("secretKey")?);
    let record = PskRecord::operator(&secret, format).map_err(|e| match e {
        BootstrapError::Format => AdminError::field("format", e.to_string()),
        // The text names the rule the key broke, never the key.
        other => AdminError::field("secretKey", other.to_string()),
    })?;
    drop(secret);
    let described = describe(&record);
    blocking(&state.store, move |s| s.set_psk(&iccid, &record)).await?;
    Ok(Json(described))
}

/// `GET /v1/integrate/devices/{iccid}/psk/{protocol}`: the PSK's
/// description, 404 when the device or its PSK does not exist.
pub(crate) async fn get(
    State(state): State<AdminState>,
    IccidPath(iccid): IccidPath,
    Path((_, protocol)): Path<(String, String)>,
) -> Result<Json<Value>, AdminError> {
    if protocol != "COAP" {
        return Err(AdminError::field(
            "protocol",
            "the protocol is `COAP` (the only one with PSKs)",
        ));
    }
    let wanted = iccid.clone();
    let found = blocking(&state.store, move |s| {
        Ok(match s.device(&wanted)? {
            None => None,
            Some(_) => Some(s.psk(&wanted)?),
        })
    })
    .await?;
    match found {
        None => Err(no_device(&iccid)),
        Some(None) => Err(AdminError::NotFound(format!("device {iccid} has no PSK"))),
        Some(Some(record)) => Ok(Json(describe(&record))),
    }
}

/// What the API tells about a PSK: never its text.
fn describe(record: &PskRecord) -> Value {
    let (format, origin) = match record.origin {
        PskOrigin::Generated => ("STRING", "GENERATED"),
        PskOrigin::Operator(PskFormat::String) => ("STRING", "OPERATOR"),
        PskOrigin::Operator(PskFormat::Hex) => ("HEX", "OPERATOR"),
    };
    let last = record.last_bootstrap.map(|t| epoch_millis(t) / 1000);
    json!({
        "protocol": "COAP",
        "format": format,
        "origin": origin,
        "lastBootstrap": last,
    })
}
