-- What each customer did in the last hour, day, 7 and 30 days, as of now, for people:
--   SELECT * FROM customer_activity_current WHERE customer_id = 'C000042';
-- The same trailing windows (now - length, now] as the flow's rolling customer features (streamguard/core/features.py),
-- as a sliding-window temporal filter: a transaction enters at its ts and leaves at ts + length, so
-- Materialize keeps it incrementally and retracts it on time. Transactions stamped in the future are not
-- counted until their time comes. Customers with nothing in the last 30 days have no row.
-- mz_now() is only compared directly and AND-ed; the windows are a cross join pivoted afterwards because a
-- FILTER clause may not hold a temporal filter.
CREATE OR REPLACE VIEW customer_activity_current AS
WITH windows AS (
    SELECT 1 AS hours UNION ALL SELECT 24 UNION ALL SELECT 168 UNION ALL SELECT 720
),
in_window AS (
    SELECT t.customer_id, w.hours, count(*) AS n, sum(t.amount) AS amount
    FROM transactions AS t
    CROSS JOIN windows AS w
    WHERE mz_now() >= t.ts
      AND mz_now() < t.ts + INTERVAL '1 hour' * w.hours
    GROUP BY t.customer_id, w.hours
)
SELECT
    customer_id,
    coalesce(max(CASE WHEN hours = 1 THEN n END), 0) AS n_1h,
    max(CASE WHEN hours = 1 THEN amount / n END) AS mean_amount_1h,
    coalesce(max(CASE WHEN hours = 24 THEN n END), 0) AS n_1d,
    max(CASE WHEN hours = 24 THEN amount / n END) AS mean_amount_1d,
    coalesce(max(CASE WHEN hours = 168 THEN n END), 0) AS n_7d,
    max(CASE WHEN hours = 168 THEN amount / n END) AS mean_amount_7d,
    coalesce(max(CASE WHEN hours = 720 THEN n END), 0) AS n_30d,
    max(CASE WHEN hours = 720 THEN amount / n END) AS mean_amount_30d
FROM in_window
GROUP BY customer_id;
