-- Schema version 1: the device registry (SPEC.md §6).
--
-- One row per SIM. `ip` is stored in canonical text form (an IPv4-mapped
-- IPv6 address is stored as the IPv4 address), so the UNIQUE index below is
-- the one rule that keeps "one IP belongs to at most one device".
-- Later versions add PSK records, positions, templates and a first-seen flag
-- as new tables or columns referencing devices(iccid); never edit this file.
CREATE TABLE devices (
    iccid  TEXT PRIMARY KEY NOT NULL,
    imsi   TEXT,
    ip     TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ACTIVE', 'INACTIVE')),
    name   TEXT
) STRICT, WITHOUT ROWID;

CREATE UNIQUE INDEX devices_ip ON devices (ip);
