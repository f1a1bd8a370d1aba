-- Expand. Validates the delivery status check added NOT VALID by the previous
-- migration: a scan that takes only a SHARE UPDATE EXCLUSIVE lock, so
-- deliveries go on being written while it runs.
-- Compatible with: the same releases as the previous migration.
ALTER TABLE deliveries VALIDATE CONSTRAINT deliveries_status_check;
