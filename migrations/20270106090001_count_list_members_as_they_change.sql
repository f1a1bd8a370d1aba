-- Expand. The lists' counts (readers confirmed, pending and unsubscribed on
-- each list), kept as the memberships change instead of counted over every
-- membership at each view of the lists' pages: seconds at a million.
--
-- list_counts is a ledger of deltas, as subscriber_counts is (see the
-- migration that made it): triggers on memberships append one row per
-- (list, status) a statement changed, with how much, and the count is the
-- sum. Appending takes no lock another writer waits for; every 64th row,
-- the statement that wrote it folds the rows of each key into one, taking
-- only rows no other fold holds.
--
-- A subscriber's erasure deletes their memberships by the foreign key's
-- cascade, which fires these triggers like any delete.
-- Compatible with: every release. The triggers count what any release
-- writes; only this one reads the ledger.
CREATE TABLE list_counts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    list_id uuid NOT NULL,
    status text NOT NULL,
    n bigint NOT NULL
);

CREATE FUNCTION fold_list_counts() RETURNS void
LANGUAGE sql AS $$
    WITH picked AS (
        SELECT c.id FROM list_counts c
        WHERE (c.list_id, c.status) IN (
            SELECT list_id, status FROM list_counts
            GROUP BY list_id, status HAVING count(*) > 1
        )
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM list_counts c USING picked WHERE c.id = picked.id
        RETURNING c.list_id, c.status, c.n
    )
    INSERT INTO list_counts (list_id, status, n)
    SELECT list_id, status, sum(n) FROM gone
    GROUP BY list_id, status HAVING sum(n) <> 0;
$$;

-- +1 for every row a statement wrote, -1 for every row it replaced or
-- deleted, by list and status. Each operation has its own branch: each has
-- different transition tables.
CREATE FUNCTION count_membership_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    fold boolean;
BEGIN
    IF TG_OP = 'INSERT' THEN
        WITH counted AS (
            INSERT INTO list_counts (list_id, status, n)
            SELECT list_id, status, count(*) FROM new_rows GROUP BY 1, 2
            RETURNING id
        )
        SELECT bool_or(id % 64 = 0) INTO fold FROM counted;
    ELSIF TG_OP = 'UPDATE' THEN
        WITH changes AS (
            SELECT list_id, status, 1 AS n FROM new_rows
            UNION ALL
            SELECT list_id, status, -1 FROM old_rows
        ), counted AS (
            INSERT INTO list_counts (list_id, status, n)
            SELECT list_id, status, sum(n) FROM changes
            GROUP BY 1, 2 HAVING sum(n) <> 0
            RETURNING id
        )
        SELECT bool_or(id % 64 = 0) INTO fold FROM counted;
    ELSE
        WITH counted AS (
            INSERT INTO list_counts (list_id, status, n)
            SELECT list_id, status, -count(*) FROM old_rows GROUP BY 1, 2
            RETURNING id
        )
        SELECT bool_or(id % 64 = 0) INTO fold FROM counted;
    END IF;
    IF fold THEN
        PERFORM fold_list_counts();
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION forget_list_counts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM list_counts;
    RETURN NULL;
END;
$$;

CREATE TRIGGER count_membership_inserts
AFTER INSERT ON memberships
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION count_membership_changes();

CREATE TRIGGER count_membership_updates
AFTER UPDATE ON memberships
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION count_membership_changes();

CREATE TRIGGER count_membership_deletes
AFTER DELETE ON memberships
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION count_membership_changes();

CREATE TRIGGER forget_list_counts
AFTER TRUNCATE ON memberships
FOR EACH STATEMENT EXECUTE FUNCTION forget_list_counts();

-- The counts so far, taken under the lock the triggers' creation holds.
INSERT INTO list_counts (list_id, status, n)
SELECT list_id, status, count(*) FROM memberships GROUP BY 1, 2;
