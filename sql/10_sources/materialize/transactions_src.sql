-- Materialize only; not run by the tests here. The raw `transactions` topic as an append-only JSON source
-- (one `data jsonb` column) with its Kafka coordinates: `partition` integer, `offset` uint8 and
-- `timestamp` (the broker's, without zone). 10_sources/postgres/transactions_src.sql has the same shape, so the
-- parsing views in 20_parsed read the same columns on both systems.
-- A message that is not valid JSON becomes a decode error that queries over this source report (there is
-- no dead-letter path in Materialize), so only validated producers may write to the topic.
CREATE SOURCE IF NOT EXISTS transactions_src
    IN CLUSTER streamguard_ingest
    FROM KAFKA CONNECTION kafka_connection (TOPIC '{{topic_prefix}}transactions')
    FORMAT JSON
    INCLUDE PARTITION, OFFSET, TIMESTAMP
    ENVELOPE NONE;
