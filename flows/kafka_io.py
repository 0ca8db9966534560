"""Kafka plumbing shared by the flows: client settings and dead-letter messages."""

from __future__ import annotations

from bytewax.connectors.kafka import KafkaSinkMessage

from streamguard.core.events import DeadLetter, encode
from streamguard.core.settings import Settings

Message = tuple[str, int, int, bytes, int, int]
"""One output message of the idempotent sink: (key = transaction id, content fingerprint, event time in
microseconds, JSON value, and the transaction's own `transactions` partition and offset)."""

_PAD = 5


def partition_name(partition: int) -> str:
    """Return the Bytewax partition name of a Kafka partition: zero-padded, so names sort as numbers."""
    return str(partition).zfill(_PAD)


def kafka_add_config(settings: Settings) -> dict[str, str]:
    """Return librdkafka settings for Bytewax's connectors (brokers are passed separately)."""
    conf = settings.kafka_config()
    conf.pop("bootstrap.servers")
    return conf


def dead_letter_message(letter: DeadLetter) -> KafkaSinkMessage[bytes, bytes]:
    """Encode a dead letter for the dead-letter topic, keyed by its source topic."""
    key = (letter.topic or letter.stage).encode()
    return KafkaSinkMessage(key=key, value=encode(letter))
