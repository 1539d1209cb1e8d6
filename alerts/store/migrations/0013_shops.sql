-- Shops of a community and their weekly duty rotation (alerts.store.shops): each week one shop is on duty,
-- through the registered list in order, skipping the shops that opted out. Not the grids' weekday duty
-- rotation of 0003 (duty_rotation), which says which officer is on duty when an alert is raised.

-- One rotation per community: the week it last changed (a Monday, Asia/Shanghai) and the position of the shop
-- on duty that week; every later week follows from it (alerts.store.shops.Rotation).
CREATE TABLE shop_rotations (
    community text PRIMARY KEY,
    sub_district text NOT NULL,
    anchor_week date NOT NULL CHECK (extract(isodow FROM anchor_week) = 1),
    anchor_position integer NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);

-- A shop's phone checks in with its own API key (role reporter, scoped to the community): stored only hashed,
-- in api_keys, like a citizen reporter's.
CREATE TABLE shops (
    id uuid PRIMARY KEY,
    community text NOT NULL REFERENCES shop_rotations (community),
    sub_district text NOT NULL,
    name text NOT NULL,
    address text NOT NULL DEFAULT '',
    owner text NOT NULL DEFAULT '',
    phone text NOT NULL DEFAULT '',
    officer_id uuid REFERENCES people (id) ON DELETE SET NULL,
    position integer NOT NULL,
    opted_out boolean NOT NULL DEFAULT false,
    key_id uuid NOT NULL REFERENCES api_keys (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (community, position),
    UNIQUE (community, name)
);
CREATE INDEX shops_key ON shops (key_id);

-- Weeks the community officer gave to another shop than the rotation's (a swap writes two rows).
CREATE TABLE shop_duty_swaps (
    community text NOT NULL REFERENCES shop_rotations (community),
    week date NOT NULL CHECK (extract(isodow FROM week) = 1),
    shop_id uuid NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    set_by text NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community, week)
);

CREATE TABLE shop_checkins (
    id uuid PRIMARY KEY,
    shop_id uuid NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    note text NOT NULL DEFAULT '',
    photo bytea,
    photo_type text,
    key_id uuid NOT NULL
);
CREATE INDEX shop_checkins_shop ON shop_checkins (shop_id, at);

-- Each reminder sent to a community's webhook or robot, and how it went: a week's reminder is sent again
-- (patrolnet shops remind, run by a timer) only to those that have not taken it.
CREATE TABLE shop_reminders (
    id bigserial PRIMARY KEY,
    community text NOT NULL,
    week date NOT NULL,
    shop_id uuid NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    status integer,
    error text,
    sent_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shop_reminders_week ON shop_reminders (community, week);
