//! The CoAP Energy Saver template (spec.md §5): stored as the operator wrote
//! it, held parsed in memory for the hot path.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use crate::backend::RawTemplate;
use crate::{Store, StoreError};
use coapgate_translate::Template;

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
    /// The stored record, parsed (at open and resync).
    pub(crate) fn parse(row: Option<RawTemplate>) -> Result<Option<TemplateRecord>, StoreError> {
        Ok(match row {
            None => None,
            Some(RawTemplate { name, text, status }) => {
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
        })
    }

    /// Replaces the record.
    pub(crate) fn replace(&self, record: Option<TemplateRecord>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = record;
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
        let updated_ms = crate::backend::epoch_ms(SystemTime::now());
        let _writing = self.writing();
        self.inner
            .db
            .set_template(name, &record.template.to_string(), status, updated_ms)?;
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
