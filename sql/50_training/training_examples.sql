-- Training examples: every decision with the feature vector exactly as it was served, joined with its label.
-- Point-in-time correct by construction: the features are the ones the model saw at decision time, so no
-- later label or transaction can leak into them, and training and serving cannot drift apart.
--   SELECT transaction_id, ts, is_fraud, features FROM training_examples
--   WHERE ts >= '2026-11-10' AND ts < '2026-11-17';
-- `is_fraud` is null while no label has arrived. Whether "no label" means genuine depends on the
-- transaction's age: a fraud report may still come for a recent one. The trainer decides that
-- (models/labels.py: older than STREAMGUARD_LABEL_MATURITY_DAYS before the latest label, no label means
-- genuine; more recent rows are left out), so this view never calls an unreported fraud genuine.
-- `degraded` marks decisions made while the store was behind (terminal features missing): training leaves
-- them out. `fraud_known_ts`: when the first fraud label arrived (the evaluation protocol's known cards).
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
    l.is_fraud,
    l.label_ts,
    d.variant,
    d.degraded,
    l.fraud_known_ts
FROM decisions AS d
LEFT JOIN transaction_labels AS l ON l.transaction_id = d.transaction_id;
