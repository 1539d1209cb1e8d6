-- The site registry: what the centre knows of each site, and which node ids belong to it (alerts.store.sites).
-- Ingest takes a message's place from here by its topic's site, never from the payload.

CREATE TABLE sites (
    site text PRIMARY KEY,
    name text NOT NULL DEFAULT '',
    sub_district text NOT NULL,
    community text NOT NULL,
    grid text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A node id belongs to one site; removing the site removes its nodes' registrations.
CREATE TABLE site_nodes (
    node_id text PRIMARY KEY,
    site text NOT NULL REFERENCES sites (site) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX site_nodes_site ON site_nodes (site);
