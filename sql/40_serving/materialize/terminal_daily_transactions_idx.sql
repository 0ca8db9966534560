-- Materialize only; not run by the tests here. Keeps the daily terminal aggregate in the serving cluster's
-- memory for the flow's as-of lookups (flows/terminal_features.py). The key is the lookup's full equality
-- key, terminal_id text, so a lookup by terminal reads one terminal's days instead of scanning
-- (`sql check` verifies it against streamguard/sql/lookup_check.py).
CREATE INDEX IF NOT EXISTS terminal_daily_transactions_idx
    IN CLUSTER streamguard_serving
    ON terminal_daily_transactions (terminal_id);
