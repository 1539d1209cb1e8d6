-- A fresh camera picture on demand: a case's recheck records a request here and NOTIFYs snapshot_requests; an
-- ingest worker claims it (FOR UPDATE SKIP LOCKED), finds the node that reports the camera (devices) and publishes
-- a snapshot command to it, again every so often while it is pending (a node offline hears nothing); the node's
-- answer, on its snapshot uplink channel, fulfils the request (or fails it, with the node's reason) and its picture
-- joins the step's photos. A request nobody answers expires, and the step keeps the picture the centre held.
CREATE TABLE snapshot_requests (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    site text NOT NULL,
    device text NOT NULL,
    node_id text, -- the node last found reporting the camera, when the command was published
    case_id uuid NOT NULL REFERENCES cases (id),
    step_id bigint NOT NULL REFERENCES case_steps (id),
    requested_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    published_at timestamptz,
    publishes integer NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'fulfilled', 'failed', 'expired')),
    fulfilled_at timestamptz,
    taken_at timestamptz, -- when the node took the picture
    photo_id uuid REFERENCES case_photos (id),
    reason text NOT NULL DEFAULT ''
);
CREATE INDEX snapshot_requests_pending ON snapshot_requests (requested_at) WHERE status = 'pending';
