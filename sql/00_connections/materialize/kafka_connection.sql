-- Materialize only; not run here (Materialize cannot run on our machines). The Kafka connection the sources
-- read through. `streamguard sql apply --target materialize` fills the double-brace placeholders from
-- settings (STREAMGUARD_KAFKA_BOOTSTRAP, _SECURITY_PROTOCOL, _SASL_*); the password is a SECRET, never inline.
CREATE CONNECTION IF NOT EXISTS kafka_connection TO KAFKA (
    BROKER '{{kafka_bootstrap}}',
    SECURITY PROTOCOL = '{{kafka_security_protocol}}'
);
