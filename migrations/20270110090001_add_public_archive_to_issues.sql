-- Expand. Compatible with the previous release, which neither reads nor
-- writes these columns: an issue it publishes is private (public_at NULL)
-- and has no slug, as every issue was before the archive.
--
-- newsletter_issues.public_at: since when the issue is in the public
-- archive; NULL while it is private.
-- newsletter_issues.slug: its address in the archive (/archive/{slug}),
-- given the first time it is made public and kept from then on, so that
-- a link once shared keeps working after a private spell.
-- newsletter_issues.publicity_changed_at: the last time the issue went in
-- or out of the archive: what the archive's Last-Modified is made of
-- (taking an issue out changes the archive as much as putting one in).
ALTER TABLE newsletter_issues
    ADD COLUMN public_at timestamptz,
    ADD COLUMN slug text,
    ADD COLUMN publicity_changed_at timestamptz;
