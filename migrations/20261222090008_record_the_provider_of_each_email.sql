-- Expand. Each email records which provider took it (postmark, smtp,
-- console), so that an operator sees who sent what when sending fails over
-- from one provider to another. Nullable with no default: adding the
-- columns rewrites nothing and takes its lock for an instant; rows sent
-- before this release keep NULL, and so do rows a previous release marks
-- sent while both run.
-- Compatible with: every release; the previous one neither reads nor
-- writes the columns.
ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS provider text;
ALTER TABLE email_outbox ADD COLUMN IF NOT EXISTS provider text;
