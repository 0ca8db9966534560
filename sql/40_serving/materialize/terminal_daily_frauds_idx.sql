-- Materialize only; not run by the tests here. Keeps the daily terminal fraud counts in the serving
-- cluster's memory for the flow's as-of lookups, keyed like them on terminal_id text
-- (`sql check` verifies it against streamguard/sql/lookup_check.py).
CREATE INDEX IF NOT EXISTS terminal_daily_frauds_idx
    IN CLUSTER streamguard_serving
    ON terminal_daily_frauds (terminal_id);
