-- Expand. Compatible with the previous release, which neither reads nor
-- writes these: its inserts leave `attributes` empty.
--
-- attribute_definitions: the schema of the subscribers' custom attributes,
-- edited by an admin: a name and a kind (text, number, date, boolean).
-- subscriptions.attributes: each subscriber's values, as a JSON object
-- keyed by definition name; what a value may be is the application's to
-- check against the definitions (a number as a JSON number, a date as
-- "YYYY-MM-DD", a boolean as true or false, text as a string).
CREATE TABLE attribute_definitions (
    name text PRIMARY KEY,
    kind text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT attribute_definitions_kind CHECK (kind IN ('text', 'number', 'date', 'boolean')),
    -- A name is a key of the JSON object and a CSV column: letters, digits
    -- and underscores, starting with a letter.
    CONSTRAINT attribute_definitions_name CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$')
);

-- A constant default: no rewrite of the table.
ALTER TABLE subscriptions
    ADD COLUMN attributes jsonb NOT NULL DEFAULT '{}';

-- NOT VALID: checked for new writes at once, without scanning the table
-- under a lock now; rows written so far all hold the default.
ALTER TABLE subscriptions
    ADD CONSTRAINT subscriptions_attributes_object
    CHECK (jsonb_typeof(attributes) = 'object') NOT VALID;
