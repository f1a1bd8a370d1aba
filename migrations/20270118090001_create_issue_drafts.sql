-- Expand. Issue drafts: an issue's text and choices, stored before it is
-- published (src/campaigns/drafts.rs). A new table: the previous release
-- neither reads nor writes it, and this one works with it empty. A draft
-- is not an issue: senders, the archive and the issue pages never see it,
-- which is why it is not a state of `newsletter_issues`, whose check
-- constraint and readers in the previous release know of no such state.
--
-- * list_ids, segment_id: the audience as asked, by id, checked when the
--   draft is saved and again when it is published (a list may be archived
--   or a segment deleted in between). No lists: as a publish that names
--   none (with one live list, every confirmed subscriber). Each must be a
--   live list when saved, which bounds how many there are.
-- * send_at: when it should go out once published; NULL: at once.
-- * A draft is deleted when it is published, in the same transaction, and
--   the issue takes its id: the draft's address leads to the issue.
-- * created_by / token_id: who saved it first, an admin or an API token.
CREATE TABLE issue_drafts (
    id uuid PRIMARY KEY,
    title text NOT NULL,
    content text NOT NULL,
    list_ids uuid[] NOT NULL DEFAULT '{}',
    segment_id uuid NULL,
    send_at timestamptz NULL,
    public boolean NOT NULL DEFAULT false,
    created_by uuid NULL REFERENCES admins (id) ON DELETE SET NULL,
    token_id uuid NULL REFERENCES api_tokens (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT issue_drafts_title_length CHECK (char_length(title) BETWEEN 1 AND 200),
    CONSTRAINT issue_drafts_content_length CHECK (octet_length(content) <= 200000)
);
-- The list, newest first, a page at a time (keyset on created_at and id,
-- which an edit does not move).
CREATE INDEX issue_drafts_created_at_idx ON issue_drafts (created_at DESC, id DESC);
