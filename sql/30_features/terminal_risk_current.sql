-- Risk features of every terminal as of today (for people: `SELECT * FROM terminal_risk_current WHERE
-- terminal_id = 'T000123'`). Same definition as the flow's as-of features with the default 7-day label
-- delay: transaction counts and known-fraud rates over 1, 7 and 30 whole days ending 7 days before today,
-- frauds counted only if their label was known before today.
-- Written with mz_now() temporal filters (Materialize keeps it incrementally; PostgreSQL uses the shim).
-- Only AND-ed `mz_now() op expression` predicates and no FILTER clauses, which is what Materialize accepts.
CREATE OR REPLACE VIEW terminal_risk_current AS
WITH windows AS (
    SELECT 1 AS days UNION ALL SELECT 7 UNION ALL SELECT 30
),
counts AS (
    SELECT t.terminal_id, w.days, t.n_transactions, 0 AS n_frauds
    FROM terminal_daily_transactions AS t
    CROSS JOIN windows AS w
    WHERE mz_now() >= (t.day + INTERVAL '8 days')::timestamptz
      AND mz_now() < (t.day + INTERVAL '8 days' + w.days * INTERVAL '1 day')::timestamptz
    UNION ALL
    SELECT f.terminal_id, w.days, 0 AS n_transactions, f.n_frauds
    FROM terminal_daily_frauds AS f
    CROSS JOIN windows AS w
    WHERE mz_now() >= (f.day + INTERVAL '8 days')::timestamptz
      AND mz_now() < (f.day + INTERVAL '8 days' + w.days * INTERVAL '1 day')::timestamptz
      AND mz_now() >= (f.known_day + INTERVAL '1 day')::timestamptz
),
per_window AS (
    SELECT terminal_id, days, sum(n_transactions) AS n, sum(n_frauds) AS frauds
    FROM counts
    GROUP BY terminal_id, days
)
SELECT
    terminal_id,
    max(CASE WHEN days = 1 THEN n END) AS term_n_1d,
    max(CASE WHEN days = 1 THEN frauds::double precision / nullif(n, 0) END) AS term_fraud_rate_1d,
    max(CASE WHEN days = 7 THEN n END) AS term_n_7d,
    max(CASE WHEN days = 7 THEN frauds::double precision / nullif(n, 0) END) AS term_fraud_rate_7d,
    max(CASE WHEN days = 30 THEN n END) AS term_n_30d,
    max(CASE WHEN days = 30 THEN frauds::double precision / nullif(n, 0) END) AS term_fraud_rate_30d
FROM per_window
GROUP BY terminal_id;
