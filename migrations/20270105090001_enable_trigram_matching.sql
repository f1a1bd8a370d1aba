-- Expand. Enables pg_trgm, which the next two migrations index subscribers'
-- addresses and names with, so that the admin's search for any part of
-- either ("lovelace", "example.org") reads an index instead of every row.
-- pg_trgm ships with PostgreSQL and is a trusted extension (PostgreSQL 13
-- on): the database's owner may create it without being a superuser.
-- In a transaction of its own: the index builds that need it run outside
-- one (CONCURRENTLY).
-- Compatible with: every release; nothing reads or writes differently.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
