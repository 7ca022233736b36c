-- Device positions (SPEC §2.5): from templates (GPS) and operators; newest
-- kept, older ones trimmed per device. Times: sample_time epoch seconds.
CREATE TABLE positions (
    iccid       TEXT NOT NULL REFERENCES devices (iccid) ON DELETE CASCADE,
    sample_time INTEGER NOT NULL,
    longitude   REAL NOT NULL,
    latitude    REAL NOT NULL,
    source      TEXT NOT NULL
) STRICT;
CREATE INDEX positions_by_device ON positions (iccid, sample_time);

-- Devices whose DEVICE_FIRST_TIME_REGISTERED event was published (SPEC §2.3).
CREATE TABLE registrations (
    iccid         TEXT PRIMARY KEY NOT NULL REFERENCES devices (iccid) ON DELETE CASCADE,
    registered_ms INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
