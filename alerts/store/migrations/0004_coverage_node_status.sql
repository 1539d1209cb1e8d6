-- Coverage notices, node online status and the node watchdog, ingest liveness.

-- Desks besides the route that get a trouble alert as a coverage notice (alerts.coverage).
ALTER TABLE alerts ADD COLUMN notify text[] NOT NULL DEFAULT '{}';

-- The watchdog looks up each node's open node_offline alert.
CREATE INDEX alerts_node_offline ON alerts (dedup_key) WHERE type = 'node_offline' AND active;

-- Measured between two heartbeats of one node process: the watchdog's clock for that node.
ALTER TABLE nodes ADD COLUMN heartbeat_interval_s double precision;

-- A node's latest online status (retained NodeStatus, or its last will), in order of arrival:
-- a will is made when its connection opens, so its own time says nothing about when it fired.
CREATE TABLE node_status (
    node_id text PRIMARY KEY,
    sub_district text NOT NULL,
    community text NOT NULL,
    grid text NOT NULL,
    site text NOT NULL,
    online boolean NOT NULL,
    status_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Each ingest worker's liveness: when it last committed a batch, and its counters.
CREATE TABLE ingest_workers (
    name text PRIMARY KEY,
    last_batch_at timestamptz,
    seen_at timestamptz NOT NULL DEFAULT now(),
    counters jsonb NOT NULL DEFAULT '{}'
);
