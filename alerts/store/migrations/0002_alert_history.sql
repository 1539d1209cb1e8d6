-- The audit trail of what desks did with an alert: who, when, what, and a note.
CREATE TABLE alert_history (
    id bigserial PRIMARY KEY,
    alert_id uuid NOT NULL REFERENCES alerts (id),
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL,
    from_status text NOT NULL,
    to_status text NOT NULL,
    note text NOT NULL DEFAULT ''
);
CREATE INDEX alert_history_alert ON alert_history (alert_id, at);
