-- Schema version 1: the device registry (SPEC.md §6); PostgreSQL's
-- translation of sqlite/0001_devices.sql (the two stay in step: migration n
-- of one backend is migration n of the other).
--
-- `iccid` sorts byte-wise (COLLATE "C") whatever the database's locale, as
-- on SQLite; `ip` is stored in canonical text form, so the UNIQUE index is
-- the one rule that keeps "one IP belongs to at most one device".
CREATE TABLE devices (
    iccid  TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    imsi   TEXT,
    ip     TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ACTIVE', 'INACTIVE')),
    name   TEXT
);

CREATE UNIQUE INDEX devices_ip ON devices (ip);
