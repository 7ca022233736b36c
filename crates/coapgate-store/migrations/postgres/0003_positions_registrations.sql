-- Device positions (SPEC §2.5): from templates (GPS) and operators; newest
-- kept, older ones trimmed per device. Times: sample_time epoch seconds.
-- `id` stands in for SQLite's rowid (the tie-break between equal times).
CREATE TABLE positions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    iccid       TEXT COLLATE "C" NOT NULL REFERENCES devices (iccid) ON DELETE CASCADE,
    sample_time BIGINT NOT NULL,
    longitude   DOUBLE PRECISION NOT NULL,
    latitude    DOUBLE PRECISION NOT NULL,
    source      TEXT NOT NULL
);
CREATE INDEX positions_by_device ON positions (iccid, sample_time);

-- Devices whose DEVICE_FIRST_TIME_REGISTERED event was published (SPEC §2.3).
CREATE TABLE registrations (
    iccid         TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES devices (iccid) ON DELETE CASCADE,
    registered_ms BIGINT NOT NULL
);
