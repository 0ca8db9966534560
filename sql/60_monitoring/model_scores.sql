-- Every score a model gave, one row per (transaction, model): the acting model's (champion or canary) and,
-- where a challenger ran in the shadow, the shadow model's (variant 'shadow'), each with the transaction's
-- UTC day and its label (is_fraud null until a label arrives). The monitoring views aggregate it.
-- Decisions made before any model existed have a null model_version and score: they count as volume only.
CREATE OR REPLACE VIEW model_scores AS
SELECT
    d.transaction_id,
    (d.ts AT TIME ZONE 'UTC'::text)::date AS day,
    d.model_version,
    d.variant,
    d.score,
    l.is_fraud
FROM decisions AS d
LEFT JOIN transaction_labels AS l ON l.transaction_id = d.transaction_id
UNION ALL
SELECT
    d.transaction_id,
    (d.ts AT TIME ZONE 'UTC'::text)::date AS day,
    d.shadow_model_version AS model_version,
    'shadow' AS variant,
    d.shadow_score AS score,
    l.is_fraud
FROM decisions AS d
LEFT JOIN transaction_labels AS l ON l.transaction_id = d.transaction_id
WHERE d.shadow_model_version IS NOT NULL;
