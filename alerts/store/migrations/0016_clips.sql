-- Video clips of alerts, uploaded by edge nodes (alerts.api.routes_clips). The bytes live in files under
-- PATROLNET_CLIP_DIR (<id>.part while arriving, <id>.mp4 once whole and checked); a row says what the centre
-- has. kind is the alert's, copied for retention per kind (alerts.store.clips.prune_clips).
CREATE TABLE clips (
    id uuid PRIMARY KEY,
    alert_id uuid NOT NULL REFERENCES alerts (id),
    camera text NOT NULL,
    kind text NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at timestamptz NOT NULL,
    bytes bigint NOT NULL CHECK (bytes > 0),
    sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    received bigint NOT NULL DEFAULT 0,
    complete boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE INDEX clips_alert ON clips (alert_id);
CREATE INDEX clips_age ON clips (kind, created_at);
