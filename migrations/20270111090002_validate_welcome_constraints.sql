-- Expand. Validates the checks the previous migration added NOT VALID, in
-- a transaction of its own; VALIDATE lets reads and writes go on while it
-- scans the (small) lists table. Compatible with the previous release,
-- which never writes the welcome columns, and with this one.
ALTER TABLE lists VALIDATE CONSTRAINT lists_welcome_whole;
ALTER TABLE lists VALIDATE CONSTRAINT lists_welcome_length;
