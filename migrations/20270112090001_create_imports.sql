-- Expand. Imports of subscribers from CSV files (src/imports/).
-- Compatible with: the previous release, which neither reads nor writes the
-- new tables, and leaves the new nullable column of memberships NULL (no
-- default, so adding it rewrites nothing).
--
-- * imports: one per (file, list), keyed by the file's SHA-256, so the same
--   file imported twice onto one list is one import: the second run finds
--   it done and changes nothing. `consent_source` is what the admin attested
--   about where the readers' consent came from; NULL when they did not
--   attest, and the readers were asked to confirm by email instead. `state`
--   moves reading -> merging -> done (or failed, with `failure`); an import
--   left reading or merging by a killed process is run again from the file.
-- * import_refusals: the rows not imported, by the line they start on, and
--   why; bounded per import by the application (the counts stay exact).
-- * memberships.import_id: the import a membership came from, which is
--   where that reader's consent to that list is recorded. No foreign key:
--   imports are never deleted, and a key would be checked on every
--   membership insert of every sign-up.
CREATE TABLE imports (
    id uuid PRIMARY KEY,
    file_sha256 bytea NOT NULL,
    list_id uuid NOT NULL REFERENCES lists (id),
    file_name text NOT NULL,
    consent_source text NULL,
    -- Asked for, not yet sent: welcome emails do not exist yet.
    welcome boolean NOT NULL DEFAULT false,
    state text NOT NULL DEFAULT 'reading',
    failure text NULL,
    rows_read bigint NOT NULL DEFAULT 0,
    rows_staged bigint NOT NULL DEFAULT 0,
    subscribers_added bigint NOT NULL DEFAULT 0,
    memberships_added bigint NOT NULL DEFAULT 0,
    already_on_list bigint NOT NULL DEFAULT 0,
    confirmations_queued bigint NOT NULL DEFAULT 0,
    refused bigint NOT NULL DEFAULT 0,
    started_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz NULL,
    CONSTRAINT imports_state CHECK (state IN ('reading', 'merging', 'done', 'failed')),
    CONSTRAINT imports_consent_source_length CHECK (char_length(consent_source) BETWEEN 1 AND 500)
);

-- A new, empty table: no writer waits for these.
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX imports_file_list_key ON imports (file_sha256, list_id);
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX imports_created_at_idx ON imports (created_at);

CREATE TABLE import_refusals (
    import_id uuid NOT NULL REFERENCES imports (id) ON DELETE CASCADE,
    line bigint NOT NULL,
    reason text NOT NULL,
    PRIMARY KEY (import_id, line)
);

ALTER TABLE memberships ADD COLUMN import_id uuid NULL;

-- Progress for pages watching an import, on any replica, on the channel
-- the issue pages already listen to (ids are UUIDs: an issue's and an
-- import's never meet).
CREATE TRIGGER notify_import_progress
AFTER UPDATE ON imports
FOR EACH ROW EXECUTE FUNCTION notify_newsletter_progress();
