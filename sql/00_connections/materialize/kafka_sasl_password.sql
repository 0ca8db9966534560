-- Materialize only; not run by the tests here (Materialize cannot run on our machines).
-- The Kafka SASL password as a Materialize SECRET, so the connection never holds it in plain text.
-- `streamguard sql apply --target materialize` fills the value from STREAMGUARD_KAFKA_SASL_PASSWORD at apply
-- time: it is never written to a file, and a dry run prints '***'. The block is left out when no password
-- is set. IF NOT EXISTS keeps re-applying a no-op; to rotate, run `ALTER SECRET kafka_sasl_password AS '...'`.
{{#kafka_sasl_password}}
CREATE SECRET IF NOT EXISTS kafka_sasl_password AS {{secret:kafka_sasl_password}};
{{/kafka_sasl_password}}
