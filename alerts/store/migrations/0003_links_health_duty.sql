-- Events carry their snapshot; alerts list their events; nodes and devices report their health;
-- grids have a weekly duty rotation and registered citizen reporters; webhooks push alert changes.
-- Everything here works on plain PostgreSQL; alerts.timescale upgrades the time-series tables
-- to hypertables after the migrations when the extension is there.

ALTER TABLE events ADD COLUMN snapshot bytea;

-- Every copy of an alert names its newest event: recording each (alert, event) pair lists an
-- alert's events. No foreign key to events: a hypertable cannot be referenced.
CREATE TABLE alert_events (
    alert_id uuid NOT NULL REFERENCES alerts (id),
    event_id uuid NOT NULL,
    linked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (alert_id, event_id)
);

-- A hypertable's unique keys must hold its time column.
ALTER TABLE alert_changes DROP CONSTRAINT alert_changes_pkey, ADD PRIMARY KEY (seq, at);
ALTER TABLE alert_history DROP CONSTRAINT alert_history_pkey, ADD PRIMARY KEY (id, at);
CREATE INDEX alert_changes_at_brin ON alert_changes USING brin (at);
CREATE INDEX alert_history_at_brin ON alert_history USING brin (at);
CREATE INDEX readings_ts_brin ON readings USING brin (ts);
CREATE INDEX events_place_ts ON events (site, device, ts DESC);

-- The list route's orders: newest first, overall and within a community, site or kind.
DROP INDEX alerts_place;
CREATE INDEX alerts_community_ts ON alerts (community, ts DESC, id DESC);
CREATE INDEX alerts_site_ts ON alerts (site, ts DESC, id DESC);
CREATE INDEX alerts_kind_ts ON alerts (kind, ts DESC, id DESC);
CREATE INDEX alerts_ts_brin ON alerts USING brin (ts);
CREATE INDEX alerts_open ON alerts (kind, status) WHERE active AND status IN ('new', 'acknowledged');

-- Who was on duty for the alert's grid when it was raised, set once by the store.
ALTER TABLE alerts ADD COLUMN on_duty text, ADD COLUMN on_duty_contact text;

CREATE TABLE nodes (
    node_id text PRIMARY KEY,
    sub_district text NOT NULL,
    community text NOT NULL,
    grid text NOT NULL,
    site text NOT NULL,
    started_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    counters jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX nodes_place ON nodes (community, site);

CREATE TABLE devices (
    site text NOT NULL,
    device text NOT NULL,
    node_id text NOT NULL,
    sub_district text NOT NULL,
    community text NOT NULL,
    grid text NOT NULL,
    type text NOT NULL,
    online boolean NOT NULL,
    last_seen timestamptz,
    detail jsonb NOT NULL DEFAULT '{}',
    heartbeat_at timestamptz NOT NULL,
    PRIMARY KEY (site, device)
);
CREATE INDEX devices_place ON devices (community, site);

-- A grid's weekly rotation: weekday (ISO, 1 = Monday) and a local time range; a range whose end
-- is before its start runs past midnight.
CREATE TABLE duty_rotation (
    id uuid PRIMARY KEY,
    sub_district text NOT NULL,
    community text NOT NULL,
    grid text NOT NULL,
    weekday smallint NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    starts time NOT NULL,
    ends time NOT NULL,
    person text NOT NULL,
    contact text NOT NULL DEFAULT '',
    timezone text NOT NULL DEFAULT 'UTC',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX duty_rotation_grid ON duty_rotation (community, grid, weekday);

-- Citizen reporters (shopkeepers on the rotation and the like), each with a reporter API key.
CREATE TABLE reporters (
    id uuid PRIMARY KEY,
    key_id uuid NOT NULL UNIQUE REFERENCES api_keys (id),
    name text NOT NULL,
    contact text NOT NULL DEFAULT '',
    sub_district text NOT NULL,
    community text NOT NULL,
    grid text NOT NULL,
    site text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Token buckets shared by every API replica (the citizen report limit).
CREATE TABLE rate_buckets (
    key text PRIMARY KEY,
    tokens double precision NOT NULL,
    at timestamptz NOT NULL
);

CREATE TABLE webhooks (
    id uuid PRIMARY KEY,
    url text NOT NULL,
    secret text NOT NULL DEFAULT '',
    kinds text[] NOT NULL,
    sub_district text,
    community text,
    grid text,
    site text,
    active boolean NOT NULL DEFAULT true,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per (webhook, alert change): the queue the dispatchers claim with SKIP LOCKED, and the log.
CREATE TABLE webhook_deliveries (
    id bigserial PRIMARY KEY,
    webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    alert_id uuid NOT NULL REFERENCES alerts (id),
    seq bigint NOT NULL,
    change text NOT NULL,
    state text NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    next_at timestamptz NOT NULL DEFAULT now(),
    last_status integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    UNIQUE (webhook_id, seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE state = 'pending';

-- Whoever logs an alert change (ingest, a desk, a citizen report), the matching webhooks get it
-- in the same transaction.
CREATE FUNCTION queue_webhook_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (webhook_id, alert_id, seq, change)
    SELECT w.id, a.id, NEW.seq, NEW.change
    FROM alerts a JOIN webhooks w ON w.active AND a.kind = ANY (w.kinds)
        AND (w.sub_district IS NULL OR w.sub_district = a.sub_district)
        AND (w.community IS NULL OR w.community = a.community)
        AND (w.grid IS NULL OR w.grid = a.grid)
        AND (w.site IS NULL OR w.site = a.site)
    WHERE a.id = NEW.alert_id
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER alert_changes_webhooks AFTER INSERT ON alert_changes
    FOR EACH ROW EXECUTE FUNCTION queue_webhook_deliveries();

-- Hourly counts per place and kind. A plain view here; a continuous aggregate of the same name
-- and columns replaces it where TimescaleDB runs (alerts.timescale).
CREATE VIEW event_counts_hourly AS
SELECT date_bin(INTERVAL '1 hour', ts, TIMESTAMPTZ '2000-01-01') AS bucket,
       sub_district, community, grid, site, kind,
       count(*) AS events,
       count(CASE WHEN state = 'start' THEN 1 END) AS starts
FROM events
GROUP BY 1, 2, 3, 4, 5, 6;
