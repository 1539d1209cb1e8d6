-- Reports from a phone: a link that carries a reporter's token (stored only as its SHA-256 hash, revocable
-- apart from the reporter's API key), which reports each reporter made (so the link shows a reporter their own
-- and no one else's), and a report's photos after its first (the first is its event's snapshot).

CREATE TABLE reporter_links (
    id uuid PRIMARY KEY,
    reporter_id uuid NOT NULL REFERENCES reporters (id) ON DELETE CASCADE,
    token_hash text NOT NULL UNIQUE,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX reporter_links_reporter ON reporter_links (reporter_id);

CREATE TABLE reporter_reports (
    alert_id uuid PRIMARY KEY REFERENCES alerts (id),
    reporter_id uuid NOT NULL REFERENCES reporters (id) ON DELETE CASCADE,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reporter_reports_reporter ON reporter_reports (reporter_id, at DESC);

-- No foreign key to events: a hypertable cannot be referenced. Kept with the alert the report raised.
CREATE TABLE report_photos (
    event_id uuid NOT NULL,
    n smallint NOT NULL CHECK (n BETWEEN 2 AND 4),
    alert_id uuid NOT NULL REFERENCES alerts (id),
    photo bytea NOT NULL,
    PRIMARY KEY (event_id, n)
);
