-- Expand. Compatible with the previous release, which neither reads nor
-- writes these columns: an issue it publishes has neither, and goes, as
-- before, to every confirmed subscriber.
--
-- newsletter_issues.list_ids: the lists an issue goes to (their confirmed
-- members, each reader once however many of them they are on); NULL for
-- every confirmed subscriber, as before lists.
-- newsletter_issues.segment: the filter that narrows the audience, as it
-- was when the issue was published (a copy, so that editing the segment
-- later cannot change who an issue in flight goes to); NULL for none.
ALTER TABLE newsletter_issues
    ADD COLUMN list_ids uuid[],
    ADD COLUMN segment jsonb;
