-- Model drift in SQL: per transaction day, model version and variant (champion, canary, shadow), the
-- volume, the score distribution and, once labels arrive, precision and recall at the decision thresholds:
--   SELECT * FROM model_daily_metrics WHERE day >= '2026-11-01' ORDER BY day, model_version, variant;
-- Thresholds are STREAMGUARD_REVIEW_THRESHOLD / _DECLINE_THRESHOLD, filled in at apply time (shown in the
-- review_threshold / decline_threshold columns). "At the review threshold" means score >= review threshold,
-- i.e. review or decline. Precision counts only labelled transactions (unlabelled ones are not known
-- wrong); recall is over the labelled frauds; both are null while their denominator is 0, and the
-- n_labelled column says how complete the labels are. Shadow rows score what the challenger would have
-- decided. Buckets of 0.2 instead of percentiles: Materialize has no percentile_cont.
CREATE OR REPLACE VIEW model_daily_metrics AS
SELECT
    day,
    model_version,
    variant,
    count(*) AS n_decisions,
    count(score) AS n_scored,
    avg(score) AS mean_score,
    count(*) FILTER (WHERE score < 0.2) AS n_score_00_20,
    count(*) FILTER (WHERE score >= 0.2 AND score < 0.4) AS n_score_20_40,
    count(*) FILTER (WHERE score >= 0.4 AND score < 0.6) AS n_score_40_60,
    count(*) FILTER (WHERE score >= 0.6 AND score < 0.8) AS n_score_60_80,
    count(*) FILTER (WHERE score >= 0.8) AS n_score_80_100,
    {{review_threshold}}::double precision AS review_threshold,
    {{decline_threshold}}::double precision AS decline_threshold,
    count(*) FILTER (WHERE score >= {{review_threshold}}) AS n_at_review,
    count(*) FILTER (WHERE score >= {{decline_threshold}}) AS n_at_decline,
    count(*) FILTER (WHERE score IS NOT NULL AND is_fraud IS NOT NULL) AS n_labelled,
    count(*) FILTER (WHERE score IS NOT NULL AND is_fraud) AS n_fraud,
    count(*) FILTER (WHERE score >= {{review_threshold}} AND is_fraud)::double precision
        / nullif(count(*) FILTER (WHERE score >= {{review_threshold}} AND is_fraud IS NOT NULL), 0)
        AS precision_at_review,
    count(*) FILTER (WHERE score >= {{review_threshold}} AND is_fraud)::double precision
        / nullif(count(*) FILTER (WHERE score IS NOT NULL AND is_fraud), 0) AS recall_at_review,
    count(*) FILTER (WHERE score >= {{decline_threshold}} AND is_fraud)::double precision
        / nullif(count(*) FILTER (WHERE score >= {{decline_threshold}} AND is_fraud IS NOT NULL), 0)
        AS precision_at_decline,
    count(*) FILTER (WHERE score >= {{decline_threshold}} AND is_fraud)::double precision
        / nullif(count(*) FILTER (WHERE score IS NOT NULL AND is_fraud), 0) AS recall_at_decline
FROM model_scores
GROUP BY day, model_version, variant;
