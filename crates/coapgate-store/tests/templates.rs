//! The CoAP template: stored, validated, active or not, across a restart.

#![allow(clippy::unwrap_used)]

mod common;

use common::Db;

use coapgate_store::{StoreError, TemplateStatus};
use serde_json::json;

fn sensors() -> serde_json::Value {
    json!({"sense":[{"asset":"Temperature","value":{"byte":0,"bytelength":2,"type":"int"}}]})
}

fn an_active_template_is_used_and_an_inactive_one_is_not(db: &Db) {
    let store = db.open();
    assert!(store.active_template().is_none());
    store
        .set_coap_template("t1", &sensors(), TemplateStatus::Active)
        .unwrap();
    let active = store.active_template().unwrap();
    assert_eq!(
        active.translate(&[0, 26]).unwrap().value,
        json!({"Temperature":26})
    );
    store
        .set_coap_template("t1", &sensors(), TemplateStatus::Inactive)
        .unwrap();
    assert!(store.active_template().is_none());
    assert_eq!(
        store.coap_template().unwrap().status,
        TemplateStatus::Inactive
    );
}

fn a_template_given_as_a_string_is_stored_as_an_object(db: &Db) {
    let store = db.open();
    let record = store
        .set_coap_template("t", &json!(sensors().to_string()), TemplateStatus::Active)
        .unwrap();
    assert_eq!(record.template, sensors());
}

fn an_invalid_template_names_its_path_and_changes_nothing(db: &Db) {
    let store = db.open();
    store
        .set_coap_template("good", &sensors(), TemplateStatus::Active)
        .unwrap();
    let bad = json!({"sense":[{"asset":"x","value":{"byte":0,"bytelength":3,"type":"int"}}]});
    let err = store
        .set_coap_template("bad", &bad, TemplateStatus::Active)
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidTemplate(_)));
    assert!(
        err.to_string().contains("sense[0].value.bytelength"),
        "{err}"
    );
    assert_eq!(store.coap_template().unwrap().name, "good");
}

fn the_template_survives_a_restart(db: &Db) {
    let url = db.url();
    coapgate_store::open(url)
        .unwrap()
        .set_coap_template("kept", &sensors(), TemplateStatus::Active)
        .unwrap();
    let store = coapgate_store::open(url).unwrap();
    assert_eq!(store.coap_template().unwrap().name, "kept");
    assert!(store.active_template().is_some());
}

on_both_backends!(
    an_active_template_is_used_and_an_inactive_one_is_not,
    a_template_given_as_a_string_is_stored_as_an_object,
    an_invalid_template_names_its_path_and_changes_nothing,
    the_template_survives_a_restart,
);
