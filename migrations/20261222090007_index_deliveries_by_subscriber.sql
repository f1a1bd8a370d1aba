-- no-transaction
-- Expand. A subscriber's page lists the issues sent to them, and their
-- export holds every delivery: both find the ledger's rows by subscriber,
-- which without this index reads every row of every issue's audience (a
-- row per recipient per issue). Erasure leaves those rows in place, so the
-- index does not serve it. Recording an audience pays for the index on
-- every row it writes: scripts/bench_campaign.sh with N=200000 recorded
-- it in 0.78-0.91 s with the index and 0.67-0.68 s without (2 cores);
-- sending, which updates rows without touching subscriber_id, kept its
-- rate (about 21,000 deliveries/s either way). Built
-- CONCURRENTLY, so campaigns keep recording and sending while it builds;
-- alone in its file, because Postgres runs the statements of one file in
-- a single implicit transaction, where CONCURRENTLY is refused.
-- Compatible with: every release; nothing reads or writes differently.
CREATE INDEX CONCURRENTLY IF NOT EXISTS deliveries_subscriber_id_idx
    ON deliveries (subscriber_id);
