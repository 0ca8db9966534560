-- Risk features of every terminal as of today, for people:
--   SELECT * FROM terminal_risk_current WHERE terminal_id = 'T000123';
-- Same numbers as terminal_risk_as_of for as_of_day = today (the tests check it), but written with mz_now()
-- temporal filters so that Materialize maintains it incrementally: a transaction day enters window N at
-- midnight of day + d + 1 and leaves at midnight of day + d + N + 1 (d = the label delay, filled in at apply
-- time); a fraud counts from midnight after its first label became known. On PostgreSQL the mz_now() shim
-- (05_compat) returns now(), so the same text runs unchanged.
-- The known-fraud windows (7, 28 days) end 1 day before today instead of d days: a transaction day enters
-- them at midnight of day + 2, and a fraud counts from midnight after its first label became known.
-- Materialize's rules for temporal filters: mz_now() only in WHERE, compared directly (no arithmetic on
-- it), AND-ed; windows are expanded by a cross join and pivoted afterwards, because a FILTER clause may not
-- hold a temporal filter. Terminals with no transaction in any window have no row (all features 0).
CREATE OR REPLACE VIEW terminal_risk_current AS
WITH windows AS (
    SELECT 'delayed' AS kind, {{label_delay_days}} AS lag, 1 AS days
    UNION ALL SELECT 'delayed', {{label_delay_days}}, 7
    UNION ALL SELECT 'delayed', {{label_delay_days}}, 30
    UNION ALL SELECT 'known', 1, 7
    UNION ALL SELECT 'known', 1, 28
),
in_window AS (
    SELECT t.terminal_id, w.kind, w.days, t.n_transactions, 0::bigint AS n_frauds
    FROM terminal_daily_transactions AS t
    CROSS JOIN windows AS w
    WHERE mz_now() >= (t.day + INTERVAL '1 day' * (w.lag + 1))::timestamptz
      AND mz_now() < (t.day + INTERVAL '1 day' * (w.lag + 1 + w.days))::timestamptz
    UNION ALL
    SELECT f.terminal_id, w.kind, w.days, 0::bigint AS n_transactions, f.n_frauds
    FROM terminal_daily_frauds AS f
    CROSS JOIN windows AS w
    WHERE mz_now() >= (f.day + INTERVAL '1 day' * (w.lag + 1))::timestamptz
      AND mz_now() < (f.day + INTERVAL '1 day' * (w.lag + 1 + w.days))::timestamptz
      AND mz_now() >= (f.known_day + INTERVAL '1 day')::timestamptz
),
per_window AS (
    SELECT terminal_id, kind, days, sum(n_transactions) AS n, sum(n_frauds) AS frauds
    FROM in_window
    GROUP BY terminal_id, kind, days
)
SELECT
    terminal_id,
    coalesce(max(CASE WHEN kind = 'delayed' AND days = 1 THEN n END), 0)::bigint AS term_n_1d,
    coalesce(max(CASE WHEN kind = 'delayed' AND days = 1 AND n > 0 THEN frauds::double precision / n END), 0)
        AS term_fraud_rate_1d,
    coalesce(max(CASE WHEN kind = 'delayed' AND days = 7 THEN n END), 0)::bigint AS term_n_7d,
    coalesce(max(CASE WHEN kind = 'delayed' AND days = 7 AND n > 0 THEN frauds::double precision / n END), 0)
        AS term_fraud_rate_7d,
    coalesce(max(CASE WHEN kind = 'delayed' AND days = 30 THEN n END), 0)::bigint AS term_n_30d,
    coalesce(max(CASE WHEN kind = 'delayed' AND days = 30 AND n > 0 THEN frauds::double precision / n END), 0)
        AS term_fraud_rate_30d,
    coalesce(max(CASE WHEN kind = 'known' AND days = 7 THEN frauds END), 0)::bigint AS term_known_frauds_7d,
    coalesce(max(CASE WHEN kind = 'known' AND days = 7 AND n > 0 THEN frauds::double precision / n END), 0)
        AS term_known_fraud_rate_7d,
    coalesce(max(CASE WHEN kind = 'known' AND days = 28 THEN frauds END), 0)::bigint AS term_known_frauds_28d,
    coalesce(max(CASE WHEN kind = 'known' AND days = 28 AND n > 0 THEN frauds::double precision / n END), 0)
        AS term_known_fraud_rate_28d
FROM per_window
GROUP BY terminal_id;
