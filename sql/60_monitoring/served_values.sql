-- Every value a model acted on, one row per (transaction, feature): the served features exactly as the
-- decision carries them, and the model's score as feature 'score'; with the transaction's UTC day and the
-- acting model (champion or canary). Decisions made before any model existed are left out. A missing
-- feature (JSON null) has a NULL value.
CREATE OR REPLACE VIEW served_values AS
SELECT
    d.transaction_id,
    (d.ts AT TIME ZONE 'UTC'::text)::date AS day,
    d.model_version,
    f.key AS feature,
    f.value::double precision AS value
FROM decisions AS d
CROSS JOIN LATERAL jsonb_each_text(d.features) AS f (key, value)
WHERE d.model_version IS NOT NULL
UNION ALL
SELECT
    d.transaction_id,
    (d.ts AT TIME ZONE 'UTC'::text)::date AS day,
    d.model_version,
    'score' AS feature,
    d.score AS value
FROM decisions AS d
WHERE d.model_version IS NOT NULL;
