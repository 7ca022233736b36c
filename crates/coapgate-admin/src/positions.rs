//! `/v1/locate/devices/{iccid}/position(s)`: operator positions.

use axum::Json;
use axum::extract::State;
use coapgate_location::{LocationError, Position};
use serde_json::{Value, json};

use crate::body::{Fields, IccidPath, JsonObject};
use crate::devices::no_device;
use crate::{AdminError, AdminState, blocking};

/// The source when the body names none.
const DEFAULT_SOURCE: &str = "CellTower";

/// `PUT /v1/locate/devices/{iccid}/position`: 200 with the stored position.
pub(crate) async fn put(
    State(state): State<AdminState>,
    IccidPath(iccid): IccidPath,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, AdminError> {
    let mut fields = Fields::new(body, &["coordinate", "source", "sampleTime"])?;
    let (longitude, latitude) = coordinate(fields.required_value("coordinate")?)?;
    let source = fields
        .string("source")?
        .unwrap_or_else(|| DEFAULT_SOURCE.to_owned());
    let sample_time = fields.required_u64("sampleTime")?;
    let position =
        Position::new(longitude, latitude, &source, sample_time).map_err(|e| match e {
            LocationError::Source => AdminError::field("source", e.to_string()),
            other => AdminError::field("coordinate", other.to_string()),
        })?;
    let described = describe(&position);
    blocking(&state.store, move |s| s.put_position(&iccid, &position)).await?;
    Ok(Json(described))
}

/// `[lon, lat]`: exactly two numbers.
fn coordinate(value: Value) -> Result<(f64, f64), AdminError> {
    let pair = value.as_array().and_then(|a| match a.as_slice() {
        [lon, lat] => Some((lon.as_f64()?, lat.as_f64()?)),
        _ => None,
    });
    pair.ok_or_else(|| {
        AdminError::field(
            "coordinate",
            "`coordinate` is [longitude, latitude], two numbers",
        )
    })
}

/// `GET /v1/locate/devices/{iccid}/positions`: newest first, 404 for an
/// unknown device.
pub(crate) async fn list(
    State(state): State<AdminState>,
    IccidPath(iccid): IccidPath,
) -> Result<Json<Value>, AdminError> {
    let wanted = iccid.clone();
    let found = blocking(&state.store, move |s| {
        Ok(match s.device(&wanted)? {
            None => None,
            Some(_) => Some(s.positions(&wanted)?),
        })
    })
    .await?;
    let positions = found.ok_or_else(|| no_device(&iccid))?;
    Ok(Json(json!({
        "coordinates": positions.iter().map(describe).collect::<Vec<_>>(),
        "page": 1,
        "pageAmount": 1,
    })))
}

fn describe(position: &Position) -> Value {
    json!({
        "coordinate": [position.longitude(), position.latitude()],
        "source": position.source(),
        "sampleTime": position.sample_time(),
    })
}
