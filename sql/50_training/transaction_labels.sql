-- One label per transaction: fraud if any label says so (a later chargeback overrides an earlier "genuine"),
-- with when labels first and last arrived. Training and monitoring join decisions to it; a transaction
-- without a row here has no label yet.
-- `fraud_known_ts` is when the first fraud label arrived (null if none says fraud): the evaluation protocol
-- removes a card from the test days after that instant, as the bank would have blocked it (models/protocol.py).
-- Columns added later go at the end: PostgreSQL's CREATE OR REPLACE VIEW may only append columns.
CREATE OR REPLACE VIEW transaction_labels AS
SELECT
    transaction_id,
    bool_or(is_fraud) AS is_fraud,
    min(ts) AS first_label_ts,
    max(ts) AS label_ts,
    min(ts) FILTER (WHERE is_fraud) AS fraud_known_ts
FROM labels
GROUP BY transaction_id;
