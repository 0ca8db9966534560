-- Typed fraud labels. `ts` is when the label became known (usually days after the transaction), which is
-- what the as-of features filter on so that no label from the future leaks into a served feature.
CREATE OR REPLACE VIEW labels AS
SELECT
    (data->>'transaction_id')::bigint AS transaction_id,
    data->>'customer_id' AS customer_id,
    data->>'terminal_id' AS terminal_id,
    (data->>'is_fraud')::boolean AS is_fraud,
    (data->>'ts')::timestamptz AS ts
FROM labels_src;
