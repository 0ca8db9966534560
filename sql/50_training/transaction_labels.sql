-- One label per transaction: fraud if any label says so (a later chargeback overrides an earlier "genuine"),
-- with when labels first and last arrived. Training and monitoring join decisions to it; a transaction
-- without a row here has no label yet.
CREATE OR REPLACE VIEW transaction_labels AS
SELECT
    transaction_id,
    bool_or(is_fraud) AS is_fraud,
    min(ts) AS first_label_ts,
    max(ts) AS label_ts
FROM labels
GROUP BY transaction_id;
