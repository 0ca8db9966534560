-- Typed transactions parsed from the raw source: the messages the scoring flow accepts, the first of each
-- transaction id (by Kafka partition, offset) only. The WHERE clause is the event contract of
-- streamguard/core/events.py, with the same limits rendered from it, checked before any cast so
-- that one hostile message cannot make the view fail: a JSON number for the id in 0..2^63-1, ids of 1 to
-- 64 characters without control characters, an amount that is a finite number in
-- [0, 1e9] (0 or at least 1e-6; its text bounded so the cast cannot overflow: at most 250 decimals), and an
-- RFC 3339 time with a zone at most STREAMGUARD_MAX_FUTURE_S ahead of the Kafka timestamp. On PostgreSQL
-- the mirror inserts only messages that pass the flow's decoder, so this is belt and braces; Materialize
-- ingests the topic as it is. `(data->>'x')::type` is the portable cast: PostgreSQL refuses
-- `(data->'x')::numeric` when the JSON value is a string, Materialize accepts both. Materialize's offset is
-- uint8: cast to bigint, as PostgreSQL has it. A time of the right
-- shape but no real date (February 30) still fails the cast; the flow dead-letters such messages.
CREATE OR REPLACE VIEW transactions AS
SELECT DISTINCT ON (transaction_id)
    transaction_id,
    ts,
    customer_id,
    terminal_id,
    amount,
    "partition",
    "offset"
FROM (
    SELECT
        (data->>'transaction_id')::bigint AS transaction_id,
        (data->>'ts')::timestamptz AS ts,
        data->>'customer_id' AS customer_id,
        data->>'terminal_id' AS terminal_id,
        (data->>'amount')::double precision AS amount,
        "partition",
        "offset"::bigint AS "offset"
    FROM transactions_src
    WHERE jsonb_typeof(data->'transaction_id') = 'number'
      AND jsonb_typeof(data->'ts') = 'string'
      AND jsonb_typeof(data->'customer_id') = 'string'
      AND jsonb_typeof(data->'terminal_id') = 'string'
      AND jsonb_typeof(data->'amount') = 'number'
      AND CASE WHEN (data->>'transaction_id') ~ '^[0-9]{1,19}$'
               THEN (data->>'transaction_id')::numeric <= {{max_id}} ELSE false END
      AND length(data->>'customer_id') BETWEEN 1 AND {{max_key_length}}
      AND length(data->>'terminal_id') BETWEEN 1 AND {{max_key_length}}
      AND (data->>'customer_id') !~ '[[:cntrl:]]'
      AND (data->>'terminal_id') !~ '[[:cntrl:]]'
      AND CASE WHEN (data->>'amount') ~ '^-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,250})?([eE][+-]?[0-9]{1,2})?$'
               THEN (data->>'amount')::double precision BETWEEN 0 AND {{max_amount}}
                    AND ((data->>'amount')::double precision = 0
                         OR (data->>'amount')::double precision >= {{min_nonzero_amount}})
               ELSE false END
      AND CASE WHEN (data->>'ts') ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:?[0-9]{2})$'
               THEN (data->>'ts')::timestamptz <= "timestamp"::timestamptz + INTERVAL '1 second' * {{max_future_s}}
               ELSE false END
) AS valid
ORDER BY transaction_id, "partition", "offset";
