-- Materialize only; not run here. The raw `transactions` topic as an append-only JSON source with its Kafka
-- coordinates, the shape that 10_sources/postgres/transactions_src.sql mirrors on PostgreSQL.
CREATE SOURCE IF NOT EXISTS transactions_src
    FROM KAFKA CONNECTION kafka_connection (TOPIC '{{topic_prefix}}transactions')
    FORMAT JSON
    INCLUDE PARTITION, OFFSET, TIMESTAMP
    ENVELOPE NONE;
