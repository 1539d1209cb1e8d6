-- Desks staffed by people: a person signs in to the page with a password (argon2id) and, for an admin, a TOTP
-- code; a signed-in browser holds a session (its token only as a SHA-256 hash here). API keys stay, for machines.
CREATE TABLE people (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    login text NOT NULL UNIQUE CHECK (login ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    phone text NOT NULL DEFAULT '',
    role text NOT NULL,
    sub_district text,
    community text,
    grid text,
    site text,
    on_duty boolean NOT NULL DEFAULT false,
    password_hash text NOT NULL,
    totp_secret text,
    totp_last_step bigint NOT NULL DEFAULT 0, -- the newest TOTP time step used: a code is good once
    created_at timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);

-- A session ends at sign-out, when an admin or its person ends it, when its person is disabled, after
-- idle time without a request, or at its absolute expiry; ended sessions stay a while as a record.
CREATE TABLE sessions (
    id uuid PRIMARY KEY,
    token_hash text NOT NULL UNIQUE,
    person_id uuid NOT NULL REFERENCES people (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    ip text NOT NULL DEFAULT '',
    user_agent text NOT NULL DEFAULT '',
    ended_at timestamptz,
    end_reason text
);
CREATE INDEX sessions_person ON sessions (person_id) WHERE ended_at IS NULL;

-- Failed sign-ins, for throttling: by login and address (backoff), and by address alone (a cap). Never a
-- hard lock on a login, which anyone could use to keep its person out.
CREATE TABLE sign_in_failures (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    login text NOT NULL,
    ip text NOT NULL
);
CREATE INDEX sign_in_failures_login_ip ON sign_in_failures (login, ip, at);
CREATE INDEX sign_in_failures_ip ON sign_in_failures (ip, at);

-- Who acted: a person's id besides the name the trail always kept (null when an API key acted). No foreign
-- key: alert_history may be a compressed TimescaleDB hypertable, and people are disabled, never deleted.
ALTER TABLE alert_history ADD COLUMN person_id uuid;

-- The person an alert is assigned to, by name and id (the trail records each assignment).
ALTER TABLE alerts ADD COLUMN assignee text, ADD COLUMN assignee_id uuid REFERENCES people (id);
