-- Champion against challenger on the same transactions: per transaction day, acting model and shadow model,
-- over the decisions that carry both scores, the two score means, how often they agree on "review or
-- above", and precision and recall of each at both thresholds once labels arrive:
--   SELECT * FROM shadow_daily_comparison WHERE shadow_model_version = 'v0007' ORDER BY day;
-- Same definitions and thresholds (filled in at apply time) as model_daily_metrics.
CREATE OR REPLACE VIEW shadow_daily_comparison AS
SELECT
    (d.ts AT TIME ZONE 'UTC'::text)::date AS day,
    d.model_version,
    d.variant,
    d.shadow_model_version,
    count(*) AS n_transactions,
    count(l.is_fraud) AS n_labelled,
    count(*) FILTER (WHERE l.is_fraud) AS n_fraud,
    avg(d.score) AS mean_score,
    avg(d.shadow_score) AS mean_shadow_score,
    count(*) FILTER (
        WHERE (d.score >= {{review_threshold}}) = (d.shadow_score >= {{review_threshold}})
    )::double precision / count(*) AS review_agreement,
    count(*) FILTER (WHERE d.score >= {{review_threshold}} AND l.is_fraud)::double precision
        / nullif(count(*) FILTER (WHERE d.score >= {{review_threshold}} AND l.is_fraud IS NOT NULL), 0)
        AS precision_at_review,
    count(*) FILTER (WHERE d.shadow_score >= {{review_threshold}} AND l.is_fraud)::double precision
        / nullif(count(*) FILTER (WHERE d.shadow_score >= {{review_threshold}} AND l.is_fraud IS NOT NULL), 0)
        AS shadow_precision_at_review,
    count(*) FILTER (WHERE d.score >= {{review_threshold}} AND l.is_fraud)::double precision
        / nullif(count(*) FILTER (WHERE l.is_fraud), 0) AS recall_at_review,
    count(*) FILTER (WHERE d.shadow_score >= {{review_threshold}} AND l.is_fraud)::double precision
        / nullif(count(*) FILTER (WHERE l.is_fraud), 0) AS shadow_recall_at_review,
    count(*) FILTER (WHERE d.score >= {{decline_threshold}} AND l.is_fraud)::double precision
        / nullif(count(*) FILTER (WHERE d.score >= {{decline_threshold}} AND l.is_fraud IS NOT NULL), 0)
        AS precision_at_decline,
    count(*) FILTER (WHERE d.shadow_score >= {{decline_threshold}} AND l.is_fraud)::double precision
        / nullif(count(*) FILTER (WHERE d.shadow_score >= {{decline_threshold}} AND l.is_fraud IS NOT NULL), 0)
        AS shadow_precision_at_decline,
    count(*) FILTER (WHERE d.score >= {{decline_threshold}} AND l.is_fraud)::double precision
        / nullif(count(*) FILTER (WHERE l.is_fraud), 0) AS recall_at_decline,
    count(*) FILTER (WHERE d.shadow_score >= {{decline_threshold}} AND l.is_fraud)::double precision
        / nullif(count(*) FILTER (WHERE l.is_fraud), 0) AS shadow_recall_at_decline
FROM decisions AS d
LEFT JOIN transaction_labels AS l ON l.transaction_id = d.transaction_id
WHERE d.score IS NOT NULL AND d.shadow_score IS NOT NULL
GROUP BY (d.ts AT TIME ZONE 'UTC'::text)::date, d.model_version, d.variant, d.shadow_model_version;
