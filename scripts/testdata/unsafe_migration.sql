-- Deliberately unsafe, for scripts/lint_migrations.sh --self-test: a plain
-- CREATE INDEX blocks every write to the table while it builds.
CREATE INDEX subscriptions_name_idx ON subscriptions (name);
