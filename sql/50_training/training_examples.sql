-- Training examples: every decision with the feature vector exactly as it was served, joined with its label.
-- Point-in-time correct by construction (the features are the ones the model saw at decision time), so
-- training and serving cannot drift apart. A transaction without a fraud label counts as genuine.
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
    l.label_ts
FROM decisions AS d
LEFT JOIN (
    SELECT transaction_id, bool_or(is_fraud) AS is_fraud, max(ts) AS label_ts
    FROM labels
    GROUP BY transaction_id
) AS l ON l.transaction_id = d.transaction_id;
