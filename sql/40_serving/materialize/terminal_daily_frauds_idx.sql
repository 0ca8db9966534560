-- Materialize only; not run here. Keeps the daily terminal fraud counts in memory for the flow's lookups.
CREATE INDEX IF NOT EXISTS terminal_daily_frauds_idx ON terminal_daily_frauds (terminal_id);
