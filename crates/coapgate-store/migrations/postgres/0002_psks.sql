-- PSK records for DTLS (SPEC §2.4, §3). One per device; removed with it.
-- `origin` GENERATED (by /bootstrap), STRING or HEX (set by an operator).
-- Times are epoch milliseconds.
CREATE TABLE psks (
    iccid             TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES devices (iccid) ON DELETE CASCADE,
    secret            TEXT NOT NULL,
    origin            TEXT NOT NULL CHECK (origin IN ('GENERATED', 'STRING', 'HEX')),
    last_bootstrap_ms BIGINT,
    updated_ms        BIGINT NOT NULL
);
