-- Typed decisions, one row per transaction. The Kafka sink is at-least-once (Bytewax re-emits the last
-- epoch after a restart), so duplicates are collapsed here, keeping the first one written.
-- Columns added later go at the end: PostgreSQL's CREATE OR REPLACE VIEW may only append columns.
-- Decisions written before variants existed carry no `variant`; they came from the champion.
CREATE OR REPLACE VIEW decisions AS
SELECT DISTINCT ON (transaction_id)
    (data->>'transaction_id')::bigint AS transaction_id,
    (data->>'ts')::timestamptz AS ts,
    data->>'customer_id' AS customer_id,
    data->>'terminal_id' AS terminal_id,
    (data->>'amount')::double precision AS amount,
    (data->>'score')::double precision AS score,
    data->>'decision' AS decision,
    data->>'model_version' AS model_version,
    (data->>'degraded')::boolean AS degraded,
    data->'features' AS features,
    data->'stages' AS stages,
    coalesce(data->>'variant', 'champion') AS variant,
    data->>'shadow_model_version' AS shadow_model_version,
    (data->>'shadow_score')::double precision AS shadow_score,
    data->'explanation' AS explanation
FROM decisions_src
ORDER BY transaction_id, "partition", "offset";
