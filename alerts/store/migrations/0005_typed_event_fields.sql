-- What used to be keys of the attributes become columns of their own: the readings that raised an event or
-- alert, whether a fire alarm is confirmed (null: not verified) and by which devices, and whether an event is
-- a detector test. Rows stored before take theirs out of the attributes.

ALTER TABLE events
    ADD COLUMN test boolean NOT NULL DEFAULT false,
    ADD COLUMN readings jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN confirmed boolean,
    ADD COLUMN confirmed_by text[] NOT NULL DEFAULT '{}';

ALTER TABLE alerts
    ADD COLUMN readings jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN confirmed boolean,
    ADD COLUMN confirmed_by text[] NOT NULL DEFAULT '{}';

UPDATE events SET
    test = coalesce((attributes->>'test')::boolean, false),
    readings = coalesce(attributes->'readings', '{}'),
    confirmed = (attributes->>'confirmed')::boolean,
    confirmed_by = ARRAY(SELECT jsonb_array_elements_text(coalesce(attributes->'confirmed_by', '[]'))),
    attributes = attributes - 'test' - 'readings' - 'confirmed' - 'confirmed_by'
WHERE attributes ?| ARRAY['test', 'readings', 'confirmed', 'confirmed_by'];

UPDATE alerts SET
    readings = coalesce(attributes->'readings', '{}'),
    confirmed = (attributes->>'confirmed')::boolean,
    confirmed_by = ARRAY(SELECT jsonb_array_elements_text(coalesce(attributes->'confirmed_by', '[]'))),
    attributes = attributes - 'test' - 'readings' - 'confirmed' - 'confirmed_by'
WHERE attributes ?| ARRAY['test', 'readings', 'confirmed', 'confirmed_by'];
