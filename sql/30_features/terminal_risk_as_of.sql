-- Risk features of a terminal as of any day, live or historical: exactly what the flow serves to a
-- transaction of that day at that terminal (flows/label_features.py; the tests compare the two).
--   SELECT * FROM terminal_risk_as_of WHERE terminal_id = 'T000123' AND as_of_day = '2026-11-14';
-- For a transaction on day D, window N in (1, 7, 30) (streamguard/core/features.py TERMINAL_WINDOWS_DAYS) and label
-- delay d (STREAMGUARD_LABEL_DELAY_DAYS, filled in at apply time): n = transactions at the terminal on days
-- [D-d-N, D-d); frauds = those whose first fraud label became known before day D; rate = frauds / n, 0 when
-- n = 0. The known-fraud windows (KNOWN_FRAUD_WINDOWS_DAYS 7, 28) do not wait the label delay: over days
-- [D-1-N, D-1), the frauds known before day D and their share of the terminal's transactions. No label known
-- on day D or later can leak in, whatever the day asked.
-- Rows exist for every day from the terminal's first transaction until its longest window is empty again;
-- outside that range every feature is 0. Filter on terminal_id (and as_of_day): the view is computed for
-- what is asked, PostgreSQL pushing the terminal filter down to an index on the source table.
-- Portable: date arithmetic only as date +/- interval (Materialize has no date - integer), a timestamp
-- generate_series, no window frames.
CREATE OR REPLACE VIEW terminal_risk_as_of AS
SELECT
    c.terminal_id,
    c.as_of_day,
    {{label_delay_days}} AS label_delay_days,
    tx.n_1d AS term_n_1d,
    CASE WHEN tx.n_1d > 0 THEN fr.f_1d::double precision / tx.n_1d ELSE 0 END AS term_fraud_rate_1d,
    tx.n_7d AS term_n_7d,
    CASE WHEN tx.n_7d > 0 THEN fr.f_7d::double precision / tx.n_7d ELSE 0 END AS term_fraud_rate_7d,
    tx.n_30d AS term_n_30d,
    CASE WHEN tx.n_30d > 0 THEN fr.f_30d::double precision / tx.n_30d ELSE 0 END AS term_fraud_rate_30d,
    kf.f_7d AS term_known_frauds_7d,
    CASE WHEN kt.n_7d > 0 THEN kf.f_7d::double precision / kt.n_7d ELSE 0 END AS term_known_fraud_rate_7d,
    kf.f_28d AS term_known_frauds_28d,
    CASE WHEN kt.n_28d > 0 THEN kf.f_28d::double precision / kt.n_28d ELSE 0 END AS term_known_fraud_rate_28d
FROM (
    SELECT s.terminal_id, g.as_of::date AS as_of_day
    FROM (
        SELECT terminal_id, min(day) AS first_day, max(day) AS last_day
        FROM terminal_daily_transactions
        GROUP BY terminal_id
    ) AS s
    CROSS JOIN LATERAL generate_series(
        s.first_day::timestamp,
        s.last_day + INTERVAL '1 day' * greatest({{label_delay_days}} + 30, 1 + 28),
        INTERVAL '1 day'
    ) AS g(as_of)
) AS c
CROSS JOIN LATERAL (
    SELECT
        coalesce(sum(t.n_transactions) FILTER (
            WHERE t.day >= c.as_of_day - INTERVAL '1 day' * ({{label_delay_days}} + 1)), 0)::bigint AS n_1d,
        coalesce(sum(t.n_transactions) FILTER (
            WHERE t.day >= c.as_of_day - INTERVAL '1 day' * ({{label_delay_days}} + 7)), 0)::bigint AS n_7d,
        coalesce(sum(t.n_transactions), 0)::bigint AS n_30d
    FROM terminal_daily_transactions AS t
    WHERE t.terminal_id = c.terminal_id
      AND t.day >= c.as_of_day - INTERVAL '1 day' * ({{label_delay_days}} + 30)
      AND t.day < c.as_of_day - INTERVAL '1 day' * {{label_delay_days}}
) AS tx
CROSS JOIN LATERAL (
    SELECT
        coalesce(sum(f.n_frauds) FILTER (
            WHERE f.day >= c.as_of_day - INTERVAL '1 day' * ({{label_delay_days}} + 1)), 0)::bigint AS f_1d,
        coalesce(sum(f.n_frauds) FILTER (
            WHERE f.day >= c.as_of_day - INTERVAL '1 day' * ({{label_delay_days}} + 7)), 0)::bigint AS f_7d,
        coalesce(sum(f.n_frauds), 0)::bigint AS f_30d
    FROM terminal_daily_frauds AS f
    WHERE f.terminal_id = c.terminal_id
      AND f.day >= c.as_of_day - INTERVAL '1 day' * ({{label_delay_days}} + 30)
      AND f.day < c.as_of_day - INTERVAL '1 day' * {{label_delay_days}}
      AND f.known_day < c.as_of_day
) AS fr
CROSS JOIN LATERAL (
    SELECT
        coalesce(sum(t.n_transactions) FILTER (
            WHERE t.day >= c.as_of_day - INTERVAL '1 day' * (1 + 7)), 0)::bigint AS n_7d,
        coalesce(sum(t.n_transactions), 0)::bigint AS n_28d
    FROM terminal_daily_transactions AS t
    WHERE t.terminal_id = c.terminal_id
      AND t.day >= c.as_of_day - INTERVAL '1 day' * (1 + 28)
      AND t.day < c.as_of_day - INTERVAL '1 day'
) AS kt
CROSS JOIN LATERAL (
    SELECT
        coalesce(sum(f.n_frauds) FILTER (
            WHERE f.day >= c.as_of_day - INTERVAL '1 day' * (1 + 7)), 0)::bigint AS f_7d,
        coalesce(sum(f.n_frauds), 0)::bigint AS f_28d
    FROM terminal_daily_frauds AS f
    WHERE f.terminal_id = c.terminal_id
      AND f.day >= c.as_of_day - INTERVAL '1 day' * (1 + 28)
      AND f.day < c.as_of_day - INTERVAL '1 day'
      AND f.known_day < c.as_of_day
) AS kf;
