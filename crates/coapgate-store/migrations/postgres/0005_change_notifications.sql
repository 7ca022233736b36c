-- Schema version 5: every committed change to what the in-memory views hold
-- is announced on the channel `coapgate_changes` (issue 11), so that each
-- coapgate instance sharing the database brings its views up to date
-- within a second. Triggers rather than NOTIFYs in coapgate's own writes:
-- a change made with psql by an operator is announced too.
--
-- The payload is a JSON object: "t" the table, "k" the device's ICCID (the
-- templates table has none), "at" the time of the change (epoch
-- milliseconds, the database's clock; receivers report their lag from it).
-- A new position carries itself ("lon", "lat", "src", "time"), since
-- positions are many and a receiver needs nothing else. A PSK never
-- leaves in a payload: receivers read it back.
--
-- PostgreSQL delivers a notification only when its transaction commits, in
-- commit order; a rolled-back change announces nothing.
CREATE FUNCTION coapgate_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changed RECORD;
    payload JSONB;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := OLD;
    ELSE
        changed := NEW;
    END IF;
    payload := jsonb_build_object(
        't', TG_TABLE_NAME,
        'at', (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    IF TG_TABLE_NAME <> 'templates' THEN
        payload := payload || jsonb_build_object('k', changed.iccid);
    END IF;
    IF TG_TABLE_NAME = 'positions' THEN
        payload := payload || jsonb_build_object(
            'lon', changed.longitude, 'lat', changed.latitude,
            'src', changed.source, 'time', changed.sample_time);
    END IF;
    PERFORM pg_notify('coapgate_changes', payload::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER devices_changed AFTER INSERT OR UPDATE OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION coapgate_notify_change();
CREATE TRIGGER psks_changed AFTER INSERT OR UPDATE OR DELETE ON psks
    FOR EACH ROW EXECUTE FUNCTION coapgate_notify_change();
CREATE TRIGGER registrations_changed AFTER INSERT OR UPDATE OR DELETE ON registrations
    FOR EACH ROW EXECUTE FUNCTION coapgate_notify_change();
-- Trimming old positions changes no latest position: inserts only.
CREATE TRIGGER positions_added AFTER INSERT ON positions
    FOR EACH ROW EXECUTE FUNCTION coapgate_notify_change();
CREATE TRIGGER templates_changed AFTER INSERT OR UPDATE OR DELETE ON templates
    FOR EACH ROW EXECUTE FUNCTION coapgate_notify_change();
