-- Expand. Compatible with the previous release, which neither reads nor
-- writes this table.
--
-- segments: saved filters over the subscribers, chosen by an admin as a
-- campaign's audience or counted on their own. `filter` holds the filter
-- as the application writes it (a tree of `all`/`any` groups and
-- conditions); what it may name (lists, attribute definitions) is checked
-- by the application when it is saved and again whenever it is used, since
-- a list or an attribute may be removed after.
CREATE TABLE segments (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    filter jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT segments_name_length CHECK (char_length(name) BETWEEN 1 AND 100),
    CONSTRAINT segments_filter_object CHECK (jsonb_typeof(filter) = 'object')
);

-- A new, empty table: no writer waits for it.
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX segments_name_key ON segments (lower(name));
