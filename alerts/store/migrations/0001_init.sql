-- The schema every later migration builds on. Time-series tables key on (id, ts)
-- so that TimescaleDB can make them hypertables partitioned by ts.

CREATE TABLE events (
    id uuid NOT NULL,
    ts timestamptz NOT NULL,
    kind text NOT NULL,
    type text NOT NULL,
    state text NOT NULL,
    severity text NOT NULL,
    sub_district text NOT NULL,
    community text NOT NULL,
    grid text NOT NULL,
    site text NOT NULL,
    device text,
    source text NOT NULL,
    title text NOT NULL DEFAULT '',
    attributes jsonb NOT NULL DEFAULT '{}',
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, ts)
);
CREATE INDEX events_ts_brin ON events USING brin (ts);

CREATE TABLE alerts (
    id uuid PRIMARY KEY,
    ts timestamptz NOT NULL,
    kind text NOT NULL,
    type text NOT NULL,
    severity text NOT NULL,
    route text NOT NULL,
    sub_district text NOT NULL,
    community text NOT NULL,
    grid text NOT NULL,
    site text NOT NULL,
    device text,
    source text NOT NULL,
    title text NOT NULL DEFAULT '',
    dedup_key text NOT NULL,
    active boolean NOT NULL,
    count integer NOT NULL,
    last_seen timestamptz NOT NULL,
    cleared_at timestamptz,
    revision integer NOT NULL,
    last_event_id uuid,
    attributes jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'new',
    status_by text,
    status_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alerts_ts ON alerts (ts DESC, id DESC);
CREATE INDEX alerts_place ON alerts (community, site, ts DESC);

-- Every change to an alert, in commit order: the SSE stream's resumable log.
CREATE TABLE alert_changes (
    seq bigserial PRIMARY KEY,
    alert_id uuid NOT NULL REFERENCES alerts (id),
    change text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE readings (
    id uuid NOT NULL,
    ts timestamptz NOT NULL,
    sub_district text NOT NULL,
    community text NOT NULL,
    grid text NOT NULL,
    site text NOT NULL,
    device text,
    quantity text NOT NULL,
    value double precision NOT NULL,
    unit text NOT NULL DEFAULT '',
    PRIMARY KEY (id, ts)
);
CREATE INDEX readings_device_ts ON readings (site, device, quantity, ts DESC);

CREATE TABLE dead_letters (
    id uuid PRIMARY KEY,
    ts timestamptz NOT NULL,
    topic text NOT NULL,
    payload bytea NOT NULL,
    reason text NOT NULL,
    source text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    key_hash text NOT NULL UNIQUE,
    role text NOT NULL,
    sub_district text,
    community text,
    grid text,
    site text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
