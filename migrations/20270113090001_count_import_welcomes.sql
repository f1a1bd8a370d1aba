-- How many welcome emails an import queued, for its report. A constant
-- default: no rewrite of the table, and the previous release, which never
-- names the column, leaves it at zero.
ALTER TABLE imports ADD COLUMN welcomes_queued bigint NOT NULL DEFAULT 0;
