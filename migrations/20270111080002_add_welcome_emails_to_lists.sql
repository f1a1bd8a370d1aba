-- Expand. Compatible with the previous release, which neither reads nor
-- writes these columns, and with this one. One table a migration: each
-- takes its table's lock alone, and a wait for one (behind a long read)
-- holds no other table up.
--
-- lists.welcome_subject, lists.welcome_body: the list's welcome email
-- (Markdown), both NULL for none.
ALTER TABLE lists
    ADD COLUMN welcome_subject text,
    ADD COLUMN welcome_body text;
-- Both or neither; the lengths are the form's limits. NOT VALID: checked on
-- every new write at once, and the next migration validates the rows there
-- are (every one NULL) in a transaction of its own.
ALTER TABLE lists
    ADD CONSTRAINT lists_welcome_whole
    CHECK ((welcome_subject IS NULL) = (welcome_body IS NULL)) NOT VALID;
ALTER TABLE lists
    ADD CONSTRAINT lists_welcome_length
    CHECK (char_length(welcome_subject) <= 200 AND octet_length(welcome_body) <= 50000) NOT VALID;

