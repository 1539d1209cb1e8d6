-- Escalation (alerts.notify.escalation): chains of timed steps per kind (and route, from a severity up), and each
-- alert's place in its chain. A chain's steps are [{"delay_s": 60, "targets": [{"type": "desk", ...}]}, ...], the
-- delays counted from the start of the alert's unacknowledged time; after the last step the chain runs again
-- "repeat" times, each round as long as its last delay.
CREATE TABLE escalation_chains (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL DEFAULT '',
    kind text NOT NULL,
    route text, -- null: whichever desk the alert is routed to
    min_severity text NOT NULL DEFAULT 'info' CHECK (min_severity IN ('info', 'minor', 'major', 'critical')),
    steps jsonb NOT NULL CHECK (jsonb_typeof(steps) = 'array' AND jsonb_array_length(steps) > 0),
    repeat integer NOT NULL DEFAULT 0 CHECK (repeat >= 0),
    ack_timeout_s double precision CHECK (ack_timeout_s > 0), -- null: an acknowledgement never times out
    stop_when_cleared boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX escalation_chains_match ON escalation_chains (kind, coalesce(route, ''), min_severity);

CREATE FUNCTION severity_rank(severity text) RETURNS integer IMMUTABLE LANGUAGE sql AS $$
    SELECT array_position(ARRAY['info', 'minor', 'major', 'critical'], severity)
$$;

-- The one definition of which chain an alert follows: its kind's, its route's before any route's, the highest
-- minimum severity the alert reaches. The runner asks again at each step, so a replaced chain applies at once.
CREATE FUNCTION escalation_chain(alert_kind text, alert_route text, alert_severity text)
RETURNS SETOF escalation_chains STABLE LANGUAGE sql AS $$
    SELECT * FROM escalation_chains c
    WHERE c.kind = alert_kind AND (c.route IS NULL OR c.route = alert_route)
      AND severity_rank(c.min_severity) <= severity_rank(alert_severity)
    ORDER BY c.route IS NULL, severity_rank(c.min_severity) DESC
    LIMIT 1
$$;

-- started_at: when the chain's clock started (the alert stored, or its acknowledgement timing out, less the
-- first delay); step and round: what comes next, due at due_at (null: the chain ran out). The row goes when
-- the alert is resolved or dismissed.
CREATE TABLE alert_escalations (
    alert_id uuid PRIMARY KEY REFERENCES alerts (id) ON DELETE CASCADE,
    started_at timestamptz NOT NULL DEFAULT now(),
    step integer NOT NULL DEFAULT 0,
    round integer NOT NULL DEFAULT 0,
    due_at timestamptz
);
CREATE INDEX alert_escalations_due ON alert_escalations (due_at);

-- Every alert stored new with a chain to follow starts it, whoever stores it (ingest, a citizen report).
CREATE FUNCTION start_escalation() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    first_delay double precision;
BEGIN
    SELECT (c.steps -> 0 ->> 'delay_s')::double precision INTO first_delay
    FROM escalation_chain(NEW.kind, NEW.route, NEW.severity) c;
    IF FOUND AND NEW.status = 'new' THEN
        INSERT INTO alert_escalations (alert_id, due_at) VALUES (NEW.id, now() + make_interval(secs => first_delay))
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER alerts_start_escalation AFTER INSERT ON alerts FOR EACH ROW EXECUTE FUNCTION start_escalation();

-- People a robot message mentions (by mobile) besides the robot's own: those an escalation step notifies.
ALTER TABLE webhook_deliveries ADD COLUMN mention_mobiles text[] NOT NULL DEFAULT '{}';

-- The issue's defaults: a fire alarm unacknowledged 60 s goes to the community's desk, at 3 minutes to the
-- sub-district's and to the fire brigade's duty officer (on duty, scoped to the whole district); security after
-- 5 minutes and trouble after 30 to the community's desk. Desks are of the alert's route unless a role is named.
INSERT INTO escalation_chains (name, kind, min_severity, steps, repeat, ack_timeout_s, stop_when_cleared) VALUES
    ('fire', 'fire', 'info',
     '[{"delay_s": 60, "targets": [{"type": "desk", "level": "community"}]},
       {"delay_s": 180, "targets": [{"type": "desk", "level": "sub_district"},
                                    {"type": "desk", "level": "district", "role": "fire"}]}]',
     0, 900, false),
    ('security', 'security', 'info', '[{"delay_s": 300, "targets": [{"type": "desk", "level": "community"}]}]',
     0, 1800, false),
    ('trouble', 'trouble', 'info', '[{"delay_s": 1800, "targets": [{"type": "desk", "level": "community"}]}]',
     0, NULL, true);
