-- Grid cells as records: each with its place, its addresses or boundary, and its team (members and one
-- leader). A grid is named by (community, grid), as places, duty rotations and alerts name it.
CREATE TABLE grids (
    community text NOT NULL,
    grid text NOT NULL,
    sub_district text NOT NULL,
    name text NOT NULL DEFAULT '',
    addresses text[] NOT NULL DEFAULT '{}',
    boundary jsonb, -- a GeoJSON Polygon, when the district has one
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community, grid)
);

CREATE TABLE grid_members (
    community text NOT NULL,
    grid text NOT NULL,
    person_id uuid NOT NULL REFERENCES people (id),
    leader boolean NOT NULL DEFAULT false,
    PRIMARY KEY (community, grid, person_id),
    FOREIGN KEY (community, grid) REFERENCES grids (community, grid) ON DELETE CASCADE
);
CREATE UNIQUE INDEX grid_members_one_leader ON grid_members (community, grid) WHERE leader;
CREATE INDEX grid_members_person ON grid_members (person_id);
