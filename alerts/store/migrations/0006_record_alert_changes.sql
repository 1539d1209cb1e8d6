-- One definition of recording alert changes, whoever changes an alert (ingest, a desk, a citizen report).
-- The rows are the SSE streams' resumable log, and webhooks are queued from them (0003's trigger).
-- The advisory lock (0x70617472, "patr") is held until commit, so changes commit in seq order: a stream
-- that has read up to seq N never misses a change committed later with a smaller seq. NOTIFY wakes the
-- streams at commit. Each alert id goes with the change of the same position; rows are logged in that order.
CREATE FUNCTION record_alert_changes(alert_ids uuid[], changes text[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    recorded integer;
BEGIN
    IF cardinality(alert_ids) IS DISTINCT FROM cardinality(changes) THEN
        RAISE EXCEPTION 'record_alert_changes: % alert ids but % changes', cardinality(alert_ids), cardinality(changes);
    END IF;
    IF cardinality(alert_ids) = 0 THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(1885434994);
    INSERT INTO alert_changes (alert_id, change)
    SELECT c.alert_id, c.change FROM unnest(alert_ids, changes) WITH ORDINALITY AS c (alert_id, change, n)
    ORDER BY c.n;
    GET DIAGNOSTICS recorded = ROW_COUNT;
    NOTIFY alert_changes;
    RETURN recorded;
END $$;
