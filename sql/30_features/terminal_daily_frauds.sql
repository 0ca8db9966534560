-- Per terminal, transaction day and known day: confirmed frauds. "Frauds among a terminal's transactions of
-- days [a, b), as known before day D" is a sum over day in [a, b) and known_day < D, for any D: live or
-- historical, which is what as-of serving and point-in-time backfills both need.
CREATE OR REPLACE VIEW terminal_daily_frauds AS
SELECT
    terminal_id,
    day,
    known_day,
    count(*) AS n_frauds
FROM fraud_first_known
GROUP BY terminal_id, day, known_day;
