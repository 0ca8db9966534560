-- Label-based risk of every customer as of today, for people (e.g. a chargeback history check):
--   SELECT * FROM customer_risk_current WHERE customer_id = 'C000042';
-- The customer twin of terminal_risk_current, same rule: the customer's transactions of the whole days
-- [today - d - N, today - d) for N in (1, 7, 30) and d the label delay (filled in at apply time), and the
-- share of them confirmed fraud by a label known before today. The flow does not serve these (its
-- customer features are exact rolling windows, see customer_activity_current); people and audits read them.
-- Written with mz_now() temporal filters (see terminal_risk_current for why it has this shape).
CREATE OR REPLACE VIEW customer_risk_current AS
WITH windows AS (
    SELECT 1 AS days UNION ALL SELECT 7 UNION ALL SELECT 30
),
in_window AS (
    SELECT t.customer_id, w.days, t.n_transactions, 0::bigint AS n_frauds
    FROM customer_daily_transactions AS t
    CROSS JOIN windows AS w
    WHERE mz_now() >= (t.day + INTERVAL '1 day' * ({{label_delay_days}} + 1))::timestamptz
      AND mz_now() < (t.day + INTERVAL '1 day' * ({{label_delay_days}} + 1 + w.days))::timestamptz
    UNION ALL
    SELECT f.customer_id, w.days, 0::bigint AS n_transactions, f.n_frauds
    FROM customer_daily_frauds AS f
    CROSS JOIN windows AS w
    WHERE mz_now() >= (f.day + INTERVAL '1 day' * ({{label_delay_days}} + 1))::timestamptz
      AND mz_now() < (f.day + INTERVAL '1 day' * ({{label_delay_days}} + 1 + w.days))::timestamptz
      AND mz_now() >= (f.known_day + INTERVAL '1 day')::timestamptz
),
per_window AS (
    SELECT customer_id, days, sum(n_transactions) AS n, sum(n_frauds) AS frauds
    FROM in_window
    GROUP BY customer_id, days
)
SELECT
    customer_id,
    coalesce(max(CASE WHEN days = 1 THEN n END), 0)::bigint AS n_transactions_1d,
    coalesce(max(CASE WHEN days = 1 AND n > 0 THEN frauds::double precision / n END), 0) AS fraud_rate_1d,
    coalesce(max(CASE WHEN days = 7 THEN n END), 0)::bigint AS n_transactions_7d,
    coalesce(max(CASE WHEN days = 7 AND n > 0 THEN frauds::double precision / n END), 0) AS fraud_rate_7d,
    coalesce(max(CASE WHEN days = 30 THEN n END), 0)::bigint AS n_transactions_30d,
    coalesce(max(CASE WHEN days = 30 AND n > 0 THEN frauds::double precision / n END), 0) AS fraud_rate_30d
FROM per_window
GROUP BY customer_id;
