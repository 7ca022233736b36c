-- Energy Saver templates (SPEC §5, §6): one per protocol, CoAP only.
-- `template` is the template's JSON text as the operator gave it.
CREATE TABLE templates (
    protocol   TEXT PRIMARY KEY NOT NULL CHECK (protocol IN ('COAP')),
    name       TEXT NOT NULL,
    template   TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('ACTIVE', 'INACTIVE')),
    updated_ms BIGINT NOT NULL
);
