-- PostgreSQL only. The change log of the two daily aggregates the flow's label features are built from
-- (30_features/terminal_daily_transactions and terminal_daily_frauds): each row adds `n_transactions` to
-- the terminal's count of that day, or `n_frauds` frauds of that day first known on `known_day`. It is
-- what Materialize's `SUBSCRIBE ... WITH (PROGRESS)` gives the flow in production: changes as they happen,
-- read by sequence number, so the flow keeps every terminal's features in memory instead of querying per
-- micro-batch. Triggers on the source tables write it in the mirror's transaction, together with the rows
-- and source_progress, so a reader sees changes and progress that agree. Summing it per key equals the
-- views (tests/integration/test_sql_layer.py checks that).
CREATE TABLE IF NOT EXISTS terminal_feature_changes (
    seq bigserial PRIMARY KEY,
    terminal_id text NOT NULL,
    day date NOT NULL,
    known_day date,
    n_transactions bigint NOT NULL DEFAULT 0,
    n_frauds bigint NOT NULL DEFAULT 0
);
