-- The escalation runner looked at every escalation row each second in every API process, working out for each
-- whether something was due (its chain looked up row by row): a year of alerts nobody resolved made that pass a
-- tenth of an API process. Each row now says when it next needs a look (look_at; null: only when its alert
-- changes), and the runner reads only the rows whose time has come, by an index. A step sets it to its due time,
-- an acknowledgement to when it times out; a change of an alert's status, activity or severity, and a change of
-- the chains, to now.
ALTER TABLE alert_escalations ADD COLUMN look_at timestamptz;
UPDATE alert_escalations SET look_at = now();
CREATE INDEX alert_escalations_look_at ON alert_escalations (look_at);

CREATE OR REPLACE FUNCTION start_escalation() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    first_delay double precision;
BEGIN
    SELECT (c.steps -> 0 ->> 'delay_s')::double precision INTO first_delay
    FROM escalation_chain(NEW.kind, NEW.route, NEW.severity) c;
    IF FOUND AND NEW.status = 'new' THEN
        INSERT INTO alert_escalations (alert_id, due_at, look_at)
        VALUES (NEW.id, now() + make_interval(secs => first_delay), now() + make_interval(secs => first_delay))
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;

-- Whoever changes the alert (a desk, ingest, the runner) holds the alert's row when this takes the escalation's:
-- the runner takes them in that order too.
CREATE FUNCTION look_at_escalation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE alert_escalations SET look_at = now() WHERE alert_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER alerts_look_at_escalation AFTER UPDATE OF status, active, severity ON alerts FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.active IS DISTINCT FROM NEW.active
      OR OLD.severity IS DISTINCT FROM NEW.severity)
EXECUTE FUNCTION look_at_escalation();
