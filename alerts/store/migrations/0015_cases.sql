-- Enforcement cases: every enforcement alert (stalls, vendors, illegal parking, illegal building) is worked as a
-- case by a department: assigned to a person with a deadline, rectified (with photos), rechecked, closed or
-- reopened. The case's place is its alert's; who may see a case is who may see its alert.
CREATE TABLE cases (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    alert_id uuid NOT NULL UNIQUE REFERENCES alerts (id),
    type text NOT NULL,
    sub_district text NOT NULL,
    community text NOT NULL,
    grid text NOT NULL,
    site text NOT NULL,
    device text,
    department text NOT NULL CHECK (department IN ('city_management', 'traffic_police', 'market_regulation')),
    assignee text,
    assignee_id uuid REFERENCES people (id),
    deadline timestamptz,
    status text NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'assigned', 'rectified', 'rechecked', 'closed', 'reopened')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    closed_at timestamptz
);
CREATE INDEX cases_created ON cases (created_at DESC, id DESC);
CREATE INDEX cases_community_created ON cases (community, created_at DESC);

-- The case's own trail, step by step (each desk step is also in alert_history, the audit trail of the alert).
CREATE TABLE case_steps (
    id bigserial PRIMARY KEY,
    case_id uuid NOT NULL REFERENCES cases (id),
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    person_id uuid,
    action text NOT NULL,
    from_status text NOT NULL,
    to_status text NOT NULL,
    note text NOT NULL DEFAULT ''
);
CREATE INDEX case_steps_case ON case_steps (case_id, at);

-- Photos of a step: uploaded by the desk (rectification) or the camera's picture taken at a recheck, copied
-- here so that it outlives the retention of events.
CREATE TABLE case_photos (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    case_id uuid NOT NULL REFERENCES cases (id),
    step_id bigint NOT NULL REFERENCES case_steps (id),
    source text NOT NULL CHECK (source IN ('upload', 'camera')),
    event_id uuid, -- the camera event the picture came from
    taken_at timestamptz NOT NULL DEFAULT now(),
    content_type text NOT NULL,
    data bytea NOT NULL
);
CREATE INDEX case_photos_case ON case_photos (case_id);

CREATE TABLE joint_operations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    day date NOT NULL,
    departments text[] NOT NULL,
    team text[] NOT NULL DEFAULT '{}',
    case_ids uuid[] NOT NULL DEFAULT '{}',
    cases_handled integer NOT NULL CHECK (cases_handled >= 0),
    note text NOT NULL DEFAULT '',
    sub_district text,
    community text,
    actor text NOT NULL,
    person_id uuid,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX joint_operations_day ON joint_operations (day DESC);

-- A case is opened in the transaction that stores its alert, by this trigger: no change to the write path, and
-- nothing for other kinds (the trigger's WHEN). Whatever goes wrong here is a warning in the server's log and
-- no case, never a lost alert: the exception block rolls back only the case.
CREATE FUNCTION open_case() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        WITH opened AS (
            INSERT INTO cases (alert_id, type, sub_district, community, grid, site, device, department)
            VALUES (NEW.id, NEW.type, NEW.sub_district, NEW.community, NEW.grid, NEW.site, NEW.device,
                    CASE WHEN NEW.type = 'illegal_parking' THEN 'traffic_police' ELSE 'city_management' END)
            ON CONFLICT (alert_id) DO NOTHING
            RETURNING id)
        INSERT INTO case_steps (case_id, actor, action, from_status, to_status, note)
        SELECT id, 'patrolnet', 'open', 'open', 'open', 'opened for alert ' || NEW.id FROM opened;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'no case opened for enforcement alert %: %', NEW.id, SQLERRM;
    END;
    RETURN NULL;
END $$;
CREATE TRIGGER alerts_open_case AFTER INSERT ON alerts
    FOR EACH ROW WHEN (NEW.kind = 'enforcement') EXECUTE FUNCTION open_case();

-- The enforcement alerts stored before this release were security alerts: they become enforcement alerts,
-- each with its case.
UPDATE alerts SET kind = 'enforcement' WHERE kind = 'security' AND type IN ('illegal_parking', 'zone_occupied');
WITH opened AS (
    INSERT INTO cases (alert_id, type, sub_district, community, grid, site, device, department, created_at)
    SELECT id, type, sub_district, community, grid, site, device,
           CASE WHEN type = 'illegal_parking' THEN 'traffic_police' ELSE 'city_management' END, ts
    FROM alerts WHERE kind = 'enforcement'
    ON CONFLICT (alert_id) DO NOTHING
    RETURNING id, alert_id, created_at)
INSERT INTO case_steps (case_id, at, actor, action, from_status, to_status, note)
SELECT id, created_at, 'patrolnet', 'open', 'open', 'open', 'opened for alert ' || alert_id FROM opened;
