-- The served values of each UTC day in the acting model's reference bins: per day, model version, feature
-- (or 'score') and bin, how many values fell in it (n, 0 for an empty bin), out of n_total, beside the
-- share the training data had there. drift_daily_psi sums it into one index per feature and day.
CREATE OR REPLACE VIEW drift_daily_bins AS
WITH observed AS (
    SELECT v.day, v.model_version, v.feature, r.bin, count(*) AS n
    FROM served_values AS v
    JOIN drift_reference AS r ON r.model_version = v.model_version AND r.feature = v.feature
    WHERE (r.is_missing AND v.value IS NULL)
        OR (
            NOT r.is_missing AND v.value IS NOT NULL
            AND (r.lower_bound IS NULL OR v.value > r.lower_bound)
            AND (r.upper_bound IS NULL OR v.value <= r.upper_bound)
        )
    GROUP BY v.day, v.model_version, v.feature, r.bin
),
totals AS (
    SELECT day, model_version, feature, sum(n)::bigint AS n_total
    FROM observed
    GROUP BY day, model_version, feature
)
SELECT
    t.day,
    t.model_version,
    t.feature,
    r.bin,
    r.lower_bound,
    r.upper_bound,
    r.is_missing,
    r.expected_share,
    coalesce(o.n, 0) AS n,
    t.n_total,
    coalesce(o.n, 0)::double precision / t.n_total AS observed_share
FROM totals AS t
JOIN drift_reference AS r ON r.model_version = t.model_version AND r.feature = t.feature
LEFT JOIN observed AS o
    ON o.day = t.day AND o.model_version = t.model_version AND o.feature = t.feature AND o.bin = r.bin;
