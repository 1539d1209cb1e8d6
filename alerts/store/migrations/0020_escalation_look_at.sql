-- The escalation runner looked at every escalation row each second in every API process, working out for each
-- whether something was due (its chain looked up row by row): a year of alerts nobody resolved made that pass a
-- tenth of an API process. Each row now says when it next needs a look (look_at; null: only when its alert
-- changes), and the runner reads only the rows whose time has come, by an index. A step sets it to its due time,
-- an acknowledgement to when it times out; a change of an alert's status, activity or severity, and a change of
-- the chains, to now.
-- A new row (and every row there is now) is looked at right away; the runner then sets its first step's time.
ALTER TABLE alert_escalations ADD COLUMN look_at timestamptz DEFAULT now();
CREATE INDEX alert_escalations_look_at ON alert_escalations (look_at);

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
