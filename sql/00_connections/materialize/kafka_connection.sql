-- Materialize only; not run by the tests here. The Kafka connection every source reads through, filled
-- from settings at apply time: STREAMGUARD_KAFKA_BOOTSTRAP (BROKERS takes one or more), _SECURITY_PROTOCOL
-- and, when a SASL mechanism is set, _SASL_MECHANISM / _SASL_USERNAME with the password as the SECRET
-- created in kafka_sasl_password.sql (Materialize wants passwords as secrets, never inline).
-- Blocks between {{#x}} and {{/x}} are kept only when setting x is present.
CREATE CONNECTION IF NOT EXISTS kafka_connection TO KAFKA (
    BROKERS ({{kafka_brokers}}),
    SECURITY PROTOCOL = '{{kafka_security_protocol}}'
    {{#kafka_sasl}}
    , SASL MECHANISMS = '{{kafka_sasl_mechanism}}'
    , SASL USERNAME = '{{kafka_sasl_username}}'
    {{/kafka_sasl}}
    {{#kafka_sasl_password}}
    , SASL PASSWORD = SECRET kafka_sasl_password
    {{/kafka_sasl_password}}
);
