-- Deliberately breaking, for scripts/compat_check.sh --self-test: renaming a
-- column the running release writes breaks it mid-rollout.
ALTER TABLE subscriptions RENAME COLUMN name TO full_name;
