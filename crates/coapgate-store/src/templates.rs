//! The CoAP Energy Saver template (spec.md §5): stored as the operator wrote
//! it, held parsed in memory for the hot path.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use coapgate_model::epoch_millis;
use coapgate_translate::Template;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Context;
use crate::{Store, StoreError};

/// Whether the template translates messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TemplateStatus {
    /// Every CoAP message is translated.
    Active,
    /// Stored, not used.
    Inactive,
}

impl TemplateStatus {
    /// `ACTIVE` or `INACTIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Inactive => "INACTIVE",
        }
    }
}

impl FromStr for TemplateStatus {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ACTIVE" => Ok(Self::Active),
            "INACTIVE" => Ok(Self::Inactive),
            _ => Err(StoreError::InvalidStatus),
        }
    }
}

impl fmt::Display for TemplateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stored CoAP template.
#[derive(Debug, Clone)]
pub struct TemplateRecord {
    /// The operator's name for it.
    pub name: String,
    /// The template as a JSON object.
    pub template: serde_json::Value,
    /// Whether it translates.
    pub status: TemplateStatus,
    /// The template, parsed and validated.
    pub parsed: Arc<Template>,
}

/// The record in memory.
#[derive(Default)]
pub(crate) struct Current(RwLock<Option<TemplateRecord>>);

impl Current {
    pub(crate) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let row = conn
            .query_row(
                "SELECT name, template, status FROM templates WHERE protocol = 'COAP'",
                [],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()
            .context("load the template")?;
        let record = match row {
            None => None,
            Some((name, text, status)) => {
                let corrupt = |why: &dyn fmt::Display| StoreError::Corrupt {
                    key: "template COAP".to_owned(),
                    reason: why.to_string(),
                };
                let template: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| corrupt(&e))?;
                let parsed = Template::parse(&template).map_err(|e| corrupt(&e))?;
                Some(TemplateRecord {
                    name,
                    template,
                    status: status.parse().map_err(|e: StoreError| corrupt(&e))?,
                    parsed: Arc::new(parsed),
                })
            }
        };
        Ok(Self(RwLock::new(record)))
    }
}

impl Store {
    /// Stores the CoAP template, replacing any other, and uses it for the
    /// next message when ACTIVE. `template` is a JSON object or (as 1NCE
    /// sends it) a string holding one; an invalid template is
    /// [`StoreError::InvalidTemplate`], naming its path, and changes nothing.
    pub fn set_coap_template(
        &self,
        name: &str,
        template: &serde_json::Value,
        status: TemplateStatus,
    ) -> Result<TemplateRecord, StoreError> {
        let parsed = Template::parse(template)?;
        // Store the object, whichever way it came.
        let object = match template {
            serde_json::Value::String(text) => {
                serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
                    key: "template".into(),
                    reason: e.to_string(),
                })?
            }
            other => other.clone(),
        };
        let record = TemplateRecord {
            name: name.to_owned(),
            template: object,
            status,
            parsed: Arc::new(parsed),
        };
        let updated_ms = epoch_millis(SystemTime::now());
        let conn = self.conn();
        conn.execute(
            "INSERT INTO templates (protocol, name, template, status, updated_ms) VALUES ('COAP', ?1, ?2, ?3, ?4)
             ON CONFLICT (protocol) DO UPDATE SET name = ?1, template = ?2, status = ?3, updated_ms = ?4",
            params![name, record.template.to_string(), status.as_str(), updated_ms],
        )
        .context("write the template")?;
        *self
            .inner
            .template
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(record.clone());
        tracing::info!(name, %status, "CoAP template stored");
        Ok(record)
    }

    /// The stored CoAP template, whatever its status.
    pub fn coap_template(&self) -> Option<TemplateRecord> {
        self.inner
            .template
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The template to translate with now: the CoAP template if ACTIVE.
    /// From memory; fine on the hot path.
    pub fn active_template(&self) -> Option<Arc<Template>> {
        self.inner
            .template
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|r| r.status == TemplateStatus::Active)
            .map(|r| r.parsed.clone())
    }
}
