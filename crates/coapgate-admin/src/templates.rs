//! `/v1/optimize/templates/coap` and the tester `/v1/optimize/messages/test`.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use coapgate_store::{TemplateRecord, TemplateStatus};
use coapgate_translate::Template;
use serde_json::{Value, json};

use crate::body::{Fields, JsonObject};
use crate::{AdminError, AdminState, MAX_NAME_CHARS, blocking};

/// Standard base64 alphabet; padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `GET /v1/optimize/templates/coap`: the stored record, 404 when none.
pub(crate) async fn get(State(state): State<AdminState>) -> Result<Json<Value>, AdminError> {
    state
        .store
        .coap_template()
        .map(|r| Json(describe(&r)))
        .ok_or_else(|| AdminError::NotFound("no CoAP template is stored".into()))
}

/// `PUT /v1/optimize/templates/coap`: 200 with the stored record.
pub(crate) async fn put(
    State(state): State<AdminState>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, AdminError> {
    let mut fields = Fields::new(body, &["name", "template", "status"])?;
    let name = fields.required_string("name")?;
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(AdminError::field(
            "name",
            format!("`name` is 1 to {MAX_NAME_CHARS} characters, none a control character"),
        ));
    }
    let template = fields.required_value("template")?;
    let status = match fields.choice("status", &["ACTIVE", "INACTIVE"], "ACTIVE")? {
        "INACTIVE" => TemplateStatus::Inactive,
        _ => TemplateStatus::Active,
    };
    // Validate before queueing a blocking write; the store checks again.
    Template::parse(&template).map_err(AdminError::InvalidTemplate)?;
    let record = blocking(&state.store, move |s| {
        s.set_coap_template(&name, &template, status)
    })
    .await?;
    Ok(Json(describe(&record)))
}

fn describe(record: &TemplateRecord) -> Value {
    json!({
        "name": record.name,
        "template": record.template,
        "status": record.status.as_str(),
    })
}

/// `POST /v1/optimize/messages/test`: 200 `{"translatedPayload": …}`, 422
/// when the payload does not fit the template.
pub(crate) async fn test(JsonObject(body): JsonObject) -> Result<Json<Value>, AdminError> {
    let mut fields = Fields::new(body, &["template", "payload"])?;
    let template = Template::parse(&fields.required_value("template")?)
        .map_err(AdminError::InvalidTemplate)?;
    let payload = BASE64
        .decode(fields.required_string("payload")?)
        .map_err(|_| AdminError::field("payload", "`payload` is not valid base64"))?;
    let translation = template
        .translate(&payload)
        .map_err(|e| AdminError::Untranslatable(e.to_string()))?;
    Ok(Json(json!({ "translatedPayload": translation.value })))
}
