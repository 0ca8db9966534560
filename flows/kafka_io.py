"""Kafka plumbing shared by the flows: client settings and dead-letter messages."""

from __future__ import annotations

from bytewax.connectors.kafka import KafkaError, KafkaSinkMessage

from streamguard.events import DeadLetter, dead_letter, encode
from streamguard.settings import Settings


def kafka_add_config(settings: Settings) -> dict[str, str]:
    """Return librdkafka settings for Bytewax's connectors (brokers are passed separately)."""
    conf = settings.kafka_config()
    conf.pop("bootstrap.servers")
    return conf


def kafka_error_dead_letter(err: KafkaError) -> DeadLetter:
    """Describe a consumer or deserialisation error from Bytewax's Kafka source as a dead letter.

    Bytewax drops these silently unless the `errs` stream is connected, so every flow routes it here.
    """
    msg = err.msg
    return dead_letter(
        f"kafka error: {err.err}",
        "read",
        value=msg.value if isinstance(msg.value, bytes) else None,
        key=msg.key if isinstance(msg.key, bytes) else None,
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
    )


def dead_letter_message(letter: DeadLetter) -> KafkaSinkMessage[bytes, bytes]:
    """Encode a dead letter for the dead-letter topic, keyed by its source topic."""
    key = (letter.topic or letter.stage).encode()
    return KafkaSinkMessage(key=key, value=encode(letter))
