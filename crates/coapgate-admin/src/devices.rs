//! `/v1/devices`: list, read, create or replace, remove.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use coapgate_model::{Device, DeviceStatus, Iccid, Imsi};
use coapgate_store::Put;
use serde_json::Value;

use crate::body::{Fields, IccidPath, JsonObject};
use crate::{AdminError, AdminState, DEFAULT_PAGE_SIZE, MAX_NAME_CHARS, MAX_PAGE_SIZE, blocking};

/// `GET /v1/devices?page=1&pageSize=50`
pub(crate) async fn list(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<Device>>, AdminError> {
    let (page, page_size) = page_query(query.as_deref())?;
    let devices = blocking(&state.store, move |s| s.devices(page, page_size)).await?;
    Ok(Json(devices))
}

/// Reads `page` (default 1) and `pageSize` (default 50, at most 1000); any
/// other key is refused.
fn page_query(query: Option<&str>) -> Result<(u32, u32), AdminError> {
    let mut page = 1;
    let mut page_size = DEFAULT_PAGE_SIZE;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = |field: &str, min: u32, max: u32| {
            value
                .parse::<u32>()
                .ok()
                .filter(|n| (min..=max).contains(n) && value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    AdminError::field(
                        field,
                        format!("`{field}` is an integer from {min} to {max}"),
                    )
                })
        };
        match key {
            "page" => page = number("page", 1, u32::MAX)?,
            "pageSize" => page_size = number("pageSize", 1, MAX_PAGE_SIZE)?,
            _ => {
                let shown: String = key.chars().take(64).collect();
                return Err(AdminError::field(
                    &shown,
                    format!("unknown query parameter `{shown}`; expected `page`, `pageSize`"),
                ));
            }
        }
    }
    Ok((page, page_size))
}

/// `GET /v1/devices/{iccid}`
pub(crate) async fn get(
    State(state): State<AdminState>,
    IccidPath(iccid): IccidPath,
) -> Result<Json<Device>, AdminError> {
    let wanted = iccid.clone();
    blocking(&state.store, move |s| s.device(&wanted))
        .await?
        .map(Json)
        .ok_or_else(|| no_device(&iccid))
}

/// `PUT /v1/devices/{iccid}`: 201 created, 200 replaced; the stored device.
pub(crate) async fn put(
    State(state): State<AdminState>,
    IccidPath(iccid): IccidPath,
    JsonObject(body): JsonObject,
) -> Result<Response, AdminError> {
    let device = device_from_body(iccid, body)?;
    let (outcome, stored) = blocking(&state.store, move |s| {
        let outcome = s.put_device(device.clone())?;
        // Read back what was stored (the address in canonical form).
        let stored = s.device(&device.iccid)?.unwrap_or(device);
        Ok((outcome, stored))
    })
    .await?;
    let status = match outcome {
        Put::Created => StatusCode::CREATED,
        Put::Replaced => StatusCode::OK,
    };
    Ok((status, Json(stored)).into_response())
}

fn device_from_body(
    iccid: Iccid,
    body: serde_json::Map<String, Value>,
) -> Result<Device, AdminError> {
    let mut fields = Fields::new(body, &["iccid", "imsi", "ip", "status", "name"])?;
    if let Some(given) = fields.string("iccid")? {
        if given != iccid.as_str() {
            return Err(AdminError::field(
                "iccid",
                "`iccid` in the body differs from the ICCID in the path",
            ));
        }
    }
    let imsi = fields
        .string("imsi")?
        .map(|s| s.parse::<Imsi>())
        .transpose()
        .map_err(|e| AdminError::field("imsi", e.to_string()))?;
    let ip: IpAddr = fields
        .required_string("ip")?
        .parse()
        .map_err(|_| AdminError::field("ip", "`ip` is an IPv4 or IPv6 address"))?;
    let status = match fields.choice("status", &["ACTIVE", "INACTIVE"], "ACTIVE")? {
        "INACTIVE" => DeviceStatus::Inactive,
        _ => DeviceStatus::Active,
    };
    let name = fields.string("name")?;
    if let Some(name) = &name {
        if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(AdminError::field(
                "name",
                format!("`name` is at most {MAX_NAME_CHARS} characters, none a control character"),
            ));
        }
    }
    Ok(Device {
        iccid,
        imsi,
        ip,
        status,
        name,
    })
}

/// `DELETE /v1/devices/{iccid}`: 204, or 404 when unknown.
pub(crate) async fn remove(
    State(state): State<AdminState>,
    IccidPath(iccid): IccidPath,
) -> Result<StatusCode, AdminError> {
    let wanted = iccid.clone();
    if blocking(&state.store, move |s| s.remove_device(&wanted)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_device(&iccid))
    }
}

pub(crate) fn no_device(iccid: &Iccid) -> AdminError {
    AdminError::NotFound(format!("no device {iccid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_queries() {
        assert_eq!(page_query(None), Ok((1, 50)));
        assert_eq!(page_query(Some("")), Ok((1, 50)));
        assert_eq!(page_query(Some("page=3&pageSize=1000")), Ok((3, 1000)));
        for (bad, field) in [
            ("page=0", "page"),
            ("page=-1", "page"),
            ("page=+1", "page"),
            ("page=", "page"),
            ("page", "page"),
            ("pageSize=1001", "pageSize"),
            ("pageSize=0", "pageSize"),
            ("pagesize=10", "pagesize"),
        ] {
            let error = page_query(Some(bad)).expect_err(bad);
            assert_eq!(error.field_name(), Some(field), "{bad}");
        }
    }
}
