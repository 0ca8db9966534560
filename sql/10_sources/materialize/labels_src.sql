-- Materialize only; not run here. The raw `labels` topic as an append-only JSON source with its Kafka
-- coordinates, the shape that 10_sources/postgres/labels_src.sql mirrors on PostgreSQL.
CREATE SOURCE IF NOT EXISTS labels_src
    FROM KAFKA CONNECTION kafka_connection (TOPIC '{{topic_prefix}}labels')
    FORMAT JSON
    INCLUDE PARTITION, OFFSET, TIMESTAMP
    ENVELOPE NONE;
