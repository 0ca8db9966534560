-- Materialize only; not run here. The raw `decisions` topic as an append-only JSON source with its Kafka
-- coordinates, the shape that 10_sources/postgres/decisions_src.sql mirrors on PostgreSQL.
CREATE SOURCE IF NOT EXISTS decisions_src
    FROM KAFKA CONNECTION kafka_connection (TOPIC '{{topic_prefix}}decisions')
    FORMAT JSON
    INCLUDE PARTITION, OFFSET, TIMESTAMP
    ENVELOPE NONE;
