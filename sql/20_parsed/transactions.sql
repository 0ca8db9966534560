-- Typed transactions parsed from the raw source. `(data->>'x')::type` is the portable cast: PostgreSQL
-- refuses `(data->'x')::numeric` when the JSON value is a string, Materialize accepts both.
CREATE OR REPLACE VIEW transactions AS
SELECT
    (data->>'transaction_id')::bigint AS transaction_id,
    (data->>'ts')::timestamptz AS ts,
    data->>'customer_id' AS customer_id,
    data->>'terminal_id' AS terminal_id,
    (data->>'amount')::double precision AS amount
FROM transactions_src;
