-- Training examples: every decision with the feature vector exactly as it was served, joined with its label.
-- Point-in-time correct by construction: the features are the ones the model saw at decision time, so no
-- later label or transaction can leak into them, and training and serving cannot drift apart.
--   SELECT transaction_id, ts, is_fraud, features FROM training_examples
--   WHERE ts >= '2026-11-10' AND ts < '2026-11-17';
-- A transaction without a label counts as genuine (label_ts is null then); `degraded` marks decisions made
-- while the store was behind (terminal features missing), which training may want to drop.
-- Columns added later go at the end: PostgreSQL's CREATE OR REPLACE VIEW may only append columns.
CREATE OR REPLACE VIEW training_examples AS
SELECT
    d.transaction_id,
    d.ts,
    d.customer_id,
    d.terminal_id,
    d.amount,
    d.score,
    d.model_version,
    d.features,
    coalesce(l.is_fraud, false) AS is_fraud,
    l.label_ts,
    d.variant,
    d.degraded
FROM decisions AS d
LEFT JOIN transaction_labels AS l ON l.transaction_id = d.transaction_id;
