-- Materialize only; not run here. Keeps the daily terminal aggregate in memory for the flow's lookups.
CREATE INDEX IF NOT EXISTS terminal_daily_transactions_idx ON terminal_daily_transactions (terminal_id);
