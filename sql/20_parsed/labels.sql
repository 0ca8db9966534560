-- Typed fraud labels. `ts` is when the label became known (usually days after the transaction), which is
-- what the as-of features filter on so that no label from the future leaks into a served feature.
-- The WHERE clause is the event contract (streamguard/core/events.py, limits rendered from it), checked before
-- any cast: a label the mirror or the flow would dead-letter is not a label here either. In particular a
-- label stamped more than STREAMGUARD_MAX_FUTURE_S after its Kafka timestamp is refused, so one label
-- stamped in year 9999 cannot make the store look fresh for every day to come.
CREATE OR REPLACE VIEW labels AS
SELECT
    (data->>'transaction_id')::bigint AS transaction_id,
    data->>'customer_id' AS customer_id,
    data->>'terminal_id' AS terminal_id,
    (data->>'is_fraud')::boolean AS is_fraud,
    (data->>'ts')::timestamptz AS ts,
    "partition",
    "offset"::bigint AS "offset"
FROM labels_src
WHERE jsonb_typeof(data->'transaction_id') = 'number'
  AND jsonb_typeof(data->'customer_id') = 'string'
  AND jsonb_typeof(data->'terminal_id') = 'string'
  AND jsonb_typeof(data->'is_fraud') = 'boolean'
  AND jsonb_typeof(data->'ts') = 'string'
  AND CASE WHEN (data->>'transaction_id') ~ '^[0-9]{1,19}$'
           THEN (data->>'transaction_id')::numeric <= {{max_id}} ELSE false END
  AND length(data->>'customer_id') BETWEEN 1 AND {{max_key_length}}
  AND length(data->>'terminal_id') BETWEEN 1 AND {{max_key_length}}
  AND (data->>'customer_id') !~ '[[:cntrl:]]'
  AND (data->>'terminal_id') !~ '[[:cntrl:]]'
  AND CASE WHEN (data->>'ts') ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:?[0-9]{2})$'
           THEN (data->>'ts')::timestamptz <= "timestamp"::timestamptz + INTERVAL '1 second' * {{max_future_s}}
           ELSE false END;
